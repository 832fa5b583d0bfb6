"""``/metrics``, ``/healthz`` and ``/readyz`` on a loopback address by default."""

from __future__ import annotations

__all__ = ["HealthServer", "parse_listen"]

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus.errors import ConfigError
from bus.metrics import REGISTRY

log = logging.getLogger(__name__)

#: a readiness check answers (ok, detail)
Check = Callable[[], tuple[bool, str]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` → (host, port); ``"[::1]:9464"`` for IPv6."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"metrics listen address {listen!r} is not host:port", field="bus.metrics.listen")
    return host.strip("[]") or "127.0.0.1", int(port)


class HealthServer:
    """A small HTTP server in a daemon thread; stops with :meth:`stop`."""

    def __init__(self, listen: str, checks: dict[str, Check]) -> None:
        host, port = parse_listen(listen)
        checks_ = checks

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n", "text/plain; charset=utf-8")
                elif path == "/readyz":
                    results = {}
                    for name, check in checks_.items():
                        try:
                            ok, detail = check()
                        except Exception as exc:  # noqa: BLE001 - a failing check is a "not ready"
                            ok, detail = False, str(exc)
                        results[name] = {"ok": ok, "detail": detail}
                    ready = all(item["ok"] for item in results.values())
                    body = json.dumps({"ready": ready, "checks": results}, indent=1).encode()
                    self._send(200 if ready else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("http %s", format % args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="hent-http", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
