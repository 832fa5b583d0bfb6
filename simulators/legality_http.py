"""The legality simulator's HTTP side: one handler for the SOAP service, its WSDL and the
control API (see :mod:`simulators.legality` for the routes).  HTTP/1.0: one request per
connection, so that a dropped or hung call never holds a kept-alive socket.  Over TLS, the
handshake is made in the connection's thread (a failed one is logged at DEBUG and closed).
"""

from __future__ import annotations

__all__ = ["LegalityHandler", "LegalityServer"]

import json
import logging
import socket
import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from simulators.legality_soap import LegalityFault, MalformedRequest, fault_xml, parse_request, reply_xml

if TYPE_CHECKING:
    from simulators.legality import LegalitySimulator

_MAX_BODY = 200 * 1024 * 1024
#: seconds a client has to complete the TLS handshake
_HANDSHAKE_TIMEOUT = 10.0
log = logging.getLogger("simulators.legality")


class LegalityServer(ThreadingHTTPServer):
    daemon_threads = True
    simulator: LegalitySimulator

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):  # accepted without a handshake: make it here, not in accept()
            request.settimeout(_HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


class LegalityHandler(BaseHTTPRequestHandler):
    server: LegalityServer

    server_version = "HentLegalitySimulator/1"

    @property
    def simulator(self) -> LegalitySimulator:
        return self.server.simulator

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._send(413, b"request too large", "text/plain")
            return None
        return self.rfile.read(length)

    def do_GET(self) -> None:
        if self.path in ("/soap?wsdl", "/soap?WSDL"):
            text = self.simulator.wsdl_text()
            self._send(200, text.encode("utf-8"), "text/xml; charset=utf-8")
        elif self.path == "/legality.xsd":
            self._send(200, self.simulator.xsd_bytes(), "text/xml; charset=utf-8")
        elif self.path.startswith("/control/"):
            self._json(*self.simulator._control("GET", self.path, {}))
        else:
            self._send(404, b"not found", "text/plain")

    def do_DELETE(self) -> None:
        self._json(*self.simulator._control("DELETE", self.path, {}))

    def do_POST(self) -> None:
        body = self._body()
        if body is None:
            return
        if self.path.startswith("/control/"):
            try:
                payload = json.loads(body or b"{}")
            except ValueError as exc:
                self._json(400, {"error": f"not JSON: {exc}"})
                return
            self._json(*self.simulator._control("POST", self.path, payload if isinstance(payload, dict) else {}))
        elif self.path == "/soap":
            self._soap(body)
        else:
            self._send(404, b"not found", "text/plain")

    def _fault(self, faultcode: str, faultstring: str, detail: LegalityFault | None = None) -> None:
        self._send(500, fault_xml(faultcode, faultstring, detail), "text/xml; charset=utf-8")

    def _soap(self, body: bytes) -> None:
        simulator = self.simulator
        try:
            request = parse_request(body)
        except MalformedRequest as exc:
            simulator._count_call("?")
            self._fault("soap:Client", f"malformed request: {exc}")
            return
        latency, fault = simulator._take_faults(request.operation)
        if latency and simulator._wait(latency):
            self._drop()
            return
        kind = fault.kind if fault else None
        if kind == "http500":
            self._send(500, b"Internal Server Error (injected)", "text/plain")
            return
        if kind == "soapfault":
            injected = LegalityFault("INTERNAL", "internal error (injected)")
            self._fault(injected.faultcode, injected.message, injected)
            return
        if kind == "hang":
            simulator._wait((fault.seconds if fault else 0.0) or 3600.0)
        if kind in ("drop", "hang"):
            self._drop()
            return
        if not simulator._authorised(request):
            denied = LegalityFault("AUTH", "a valid WS-Security UsernameToken (PasswordText) is required")
            self._fault(denied.faultcode, denied.message, denied)
            return
        try:
            reply = reply_xml(request.operation, simulator._dispatch(request))
        except LegalityFault as refused:
            reply, status = fault_xml(refused.faultcode, refused.message, refused), 500
        except MalformedRequest as exc:
            reply, status = fault_xml("soap:Client", f"malformed request: {exc}"), 500
        except Exception as exc:  # the simulator answers like a server, it does not die
            log.exception("%s failed", request.operation)
            internal = LegalityFault("INTERNAL", f"{type(exc).__name__}: {exc}")
            reply, status = fault_xml(internal.faultcode, internal.message, internal), 500
        else:
            status = 200
        if kind == "lost_reply":
            self._drop()
            return
        self._send(status, reply, "text/xml; charset=utf-8")
