"""What the HTTP simulators of remote platforms share (:mod:`simulators.legality`,
:mod:`simulators.s2low`, :mod:`simulators.pastell`).

- :class:`HttpSimulator`: the life of a simulator (``start()`` serves in a thread on a loopback
  port, ``url``, ``stop()`` releases a held call at once; a context manager), TLS with
  :func:`server_context`, and the faults injected per operation (:class:`InjectedFault`, ``inject``,
  ``clear_faults``), the calls counted, and the common control routes (``/control/received``,
  ``/control/faults``, ``/control/chaos``, ``/control/down``, ``/control/followup``,
  ``/control/classification``).
- Faults for chaos tests: ``inject(..., probability=p, seed=n)`` applies a fault to each matching
  call with probability ``p`` (its ``count`` counts the calls it hit); ``chaos(p, kinds, seed=n)``
  makes each call fail with probability ``p``, in one of ``kinds`` drawn at random; both draw
  from a ``random.Random(seed)`` of their own, so a run is reproducible from its seed (up to the
  order in which concurrent calls arrive).  ``down(seconds)`` takes the platform fully down:
  ``how="refuse"`` closes the listening socket (connection refused) and opens it again on the same
  port after ``seconds``; ``how="503"`` answers every service call HTTP 503 meanwhile (control
  routes still answer); ``up()`` ends an outage early.
- :class:`QuietHTTPServer`: a ThreadingHTTPServer that makes the TLS handshake in the
  connection's thread (so a client that never completes it holds neither the server nor
  ``stop()``) and logs a dropped connection at DEBUG, not as a traceback.
- :class:`BaseSimHandler`: HTTP/1.0, one request per connection (a dropped or hung call holds no
  kept-alive socket), with the helpers to answer (``_send``, ``_json``), read a body, hand a
  ``/control/`` request to the simulator, close without answering (``_drop``) and apply the
  injected latency and the faults that leave a call unanswered (``_apply_faults``).
- :class:`SimulatorCommand`: the command lines' options (host, port, the ministry's delay and
  classification, faults, TLS) and the serving until SIGTERM or SIGINT.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_CLASSIFICATION", "DOWN_MODES", "HANDSHAKE_TIMEOUT", "MAX_BODY", "BaseSimHandler", "Chaos", "HttpSimulator",
    "InjectedFault", "QuietHTTPServer", "SimulatorCommand", "server_context",
]

import argparse
import json
import logging
import random
import signal
import socket
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from simulators.legality_platform import Platform

_ROOT = Path(__file__).resolve().parent.parent
#: the 7-2 the simulated ministry serves and checks unless a simulator is given another
DEFAULT_CLASSIFICATION = _ROOT / "config" / "classifications" / "demo-classification-7-2.xml"
#: the largest request body read (larger: 413)
MAX_BODY = 200 * 1024 * 1024
#: seconds a client has to complete the TLS handshake
HANDSHAKE_TIMEOUT = 10.0
#: how :meth:`HttpSimulator.down` makes the platform unreachable
DOWN_MODES = ("refuse", "503")


@dataclass
class InjectedFault:
    """``kind`` (one of the simulator's :attr:`kinds`) for ``operation`` (or "*"), ``count`` times
    (None: always); ``seconds`` of latency or of a held call.  With ``probability`` below 1, each
    matching call is hit with that probability only (drawn from ``random.Random(seed)``), and
    ``count`` counts the calls hit."""

    kinds: ClassVar[tuple[str, ...]] = ()

    kind: str
    operation: str = "*"
    count: int | None = 1
    seconds: float = 0.0
    probability: float = 1.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in self.kinds:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(self.kinds)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for every call)")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"probability must be in ]0, 1], not {self.probability}")
        self._random = random.Random(self.seed)

    def hits(self) -> bool:
        """Whether this call is hit (always, unless ``probability`` is below 1)."""
        return self.probability >= 1.0 or self._random.random() < self.probability


@dataclass
class Chaos:
    """Each call of ``operation`` (or "*") fails with ``probability``, in one of ``kinds`` drawn at
    random (``seconds``: the latency, or how long a hang holds the call); seeded by ``seed``."""

    probability: float
    kinds: tuple[str, ...]
    operation: str = "*"
    seconds: float = 0.0
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"probability must be in ]0, 1], not {self.probability}")
        if not self.kinds:
            raise ValueError("chaos needs at least one fault kind")
        self._random = random.Random(self.seed)

    def draw(self) -> str | None:
        """The kind of fault this call gets, or None (it goes through)."""
        if self._random.random() >= self.probability:
            return None
        return self._random.choice(self.kinds)


FaultT = TypeVar("FaultT", bound=InjectedFault)


class QuietHTTPServer(ThreadingHTTPServer):
    """A simulator's server: TLS handshake in the connection's thread, failed requests logged at
    DEBUG on the simulator's logger.  A subclass narrows the type of ``simulator``."""

    daemon_threads = True
    simulator: HttpSimulator[Any]

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):  # accepted without a handshake: make it here, not in accept()
            request.settimeout(HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.simulator.log.debug("request from %s failed", client_address, exc_info=True)


class BaseSimHandler(BaseHTTPRequestHandler):
    """A simulator's request handler: the helpers to read a request and answer it, or not.
    ``do_GET``, ``do_POST`` and ``do_DELETE`` call :meth:`_handle`.  A subclass narrows the type
    of ``server`` (and so of ``server.simulator``)."""

    server: QuietHTTPServer
    #: body and content type of the 413 answer to a body over :data:`MAX_BODY`
    too_large: ClassVar[tuple[bytes, str]] = (b"request too large", "text/plain")
    #: whether :meth:`_json` escapes non-ASCII characters
    ascii_json: ClassVar[bool] = True

    @property
    def simulator(self) -> HttpSimulator[Any]:
        """The simulator served (``server.simulator``, which a subclass types)."""
        return self.server.simulator

    def log_message(self, format: str, *args: Any) -> None:
        self.server.simulator.log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        """Answer the request (``method`` is GET, POST, DELETE, or another the subclass serves)."""
        self.send_error(501, f"Unsupported method ({method!r})")

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=self.ascii_json).encode(), "application/json")

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes | None:
        """The body (``Content-Length`` bytes), or None when it is too large (413 answered)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, *self.too_large)
            return None
        return self.rfile.read(length)

    def _control(self, method: str, path: str, body: bytes) -> None:
        """A ``/control/`` request: its JSON body to the simulator, the simulator's answer as JSON."""
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            self._json(400, {"error": f"not JSON: {exc}"})
            return
        self._json(*self.server.simulator._control(method, path, payload if isinstance(payload, dict) else {}))

    def _apply_faults(self, operation: str, key: str | None = None) -> tuple[bool, Any]:
        """Count the call, wait its injected latency and apply a fault that leaves it unanswered
        (``drop``: closed at once; ``hang`` or ``timeout``: closed after the fault's ``seconds``, an
        hour if 0, or at stop()).  (False, None) when the call is left so, else (True, the other
        fault to apply or None).  While the platform is down (``down(how="503")``) every call is
        answered 503 and left so."""
        simulator = self.server.simulator
        if simulator._unavailable():
            simulator._count_call(key or operation)
            self._send(503, b"Service Unavailable (down)", "text/plain")
            return False, None
        latency, fault = simulator._take_faults(operation, key)
        if latency and simulator._wait(latency):
            self._drop()
            return False, None
        if fault is not None and fault.kind in ("hang", "timeout"):
            simulator._wait(fault.seconds or 3600.0)
        if fault is not None and fault.kind in ("drop", "hang", "timeout"):
            self._drop()
            return False, None
        return True, fault


class HttpSimulator(ABC, Generic[FaultT]):
    """A platform behind a loopback HTTP server: start(), url, stop(); a context manager.

    Behind it, ``platform``: the ministry (:class:`~simulators.legality_platform.Platform`, its
    answers ``ack_delay`` seconds later).  A subclass names its :attr:`fault_type`,
    :attr:`server_class`, :attr:`handler_class`, its :attr:`name` and the :attr:`url_path` of its
    endpoint, and answers :meth:`received`, :meth:`followup` and :meth:`publish_classification`.
    """

    fault_type: type[FaultT]
    server_class: ClassVar[type[QuietHTTPServer]]
    handler_class: ClassVar[type[BaseSimHandler]]
    #: its thread is ``<name>-simulator-<port>``, its logger ``simulators.<name>``
    name: ClassVar[str]
    url_path: ClassVar[str] = ""

    def __init__(self, host: str, port: int, *, ack_delay: float = 0.0, classification: Path | None = None,
                 departement: str = "044", faults: Sequence[FaultT] = (), latency: float = 0.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.platform = Platform(classification or DEFAULT_CLASSIFICATION, ack_delay=ack_delay, departement=departement)
        self._faults = list(faults) + ([self.fault_type("latency", count=None, seconds=latency)] if latency else [])
        self._chaos: list[Chaos] = []
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._life = threading.RLock()  # start, stop, down and up, one at a time
        self._stopping = threading.Event()
        self._server: QuietHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._down_until = 0.0  # time.monotonic() at which an outage ends (0: none)
        self._down_how = "refuse"
        self._down_timer: threading.Timer | None = None
        self._refusing = False  # the listening socket is closed by down()

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Self:
        with self._life:
            self._stopping.clear()
            self._listen()
        return self

    def stop(self) -> None:
        """Stop serving; a held call is released at once (its connection closed unanswered)."""
        self._stopping.set()
        with self._life:
            self._end_outage()
            self._unlisten()

    def _listen(self) -> None:
        server = self.server_class((self.host, self.port), self.handler_class)
        server.simulator = self
        if self.tls is not None:  # accepted sockets are TLS ones; each handshakes in its own thread
            server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self.name}-simulator-{self.port}", daemon=True)
        self._thread.start()

    def _unlisten(self) -> None:
        """Close the listening socket (calls in progress go on in their threads)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def down(self, seconds: float, how: str = "refuse") -> None:
        """The platform is fully down for ``seconds`` from now: every call refused (``how="refuse"``:
        connection refused; ``"503"``: HTTP 503 Service Unavailable), then it serves again."""
        if how not in DOWN_MODES:
            raise ValueError(f"unknown way down {how!r}; one of {', '.join(DOWN_MODES)}")
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        with self._life:
            if self._server is None and not self._refusing:
                raise RuntimeError(f"the {self.name} simulator is not running")
            self._end_outage()
            self._down_how, self._down_until = how, time.monotonic() + seconds
            if how == "refuse":
                self._unlisten()
                self._refusing = True
            self._down_timer = threading.Timer(seconds, self.up)
            self._down_timer.daemon = True
            self._down_timer.start()
        self.log.info("%s simulator down for %.1f s (%s)", self.name, seconds, how)

    def up(self) -> None:
        """End an outage (at once, or when its time is over): the platform serves again, same port."""
        with self._life:
            refusing = self._refusing
            self._end_outage()
            if refusing and not self._stopping.is_set():
                self._listen()
        self.log.info("%s simulator up again", self.name)

    @property
    def is_down(self) -> bool:
        """Whether an outage (:meth:`down`) is under way."""
        return self._refusing or time.monotonic() < self._down_until

    def _end_outage(self) -> None:
        if self._down_timer is not None and self._down_timer is not threading.current_thread():
            self._down_timer.cancel()
        self._down_timer, self._down_until, self._refusing = None, 0.0, False

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger(f"simulators.{self.name}")

    @property
    def url(self) -> str:
        """The address served, e.g. ``http://127.0.0.1:8089`` then :attr:`url_path` (``https://`` with ``tls``)."""
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}{self.url_path}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- control ------------------------------------------------------------------------

    def inject(self, kind: str, operation: str = "*", count: int | None = 1, seconds: float = 0.0, *,
               probability: float = 1.0, seed: int | None = None) -> None:
        """Inject a fault in the next ``count`` calls of ``operation`` ("*": every operation); with
        ``probability`` below 1, in each such call with that probability (``count``: calls hit)."""
        with self._lock:
            self._faults.append(self.fault_type(kind, operation, count, seconds, probability, seed))

    def chaos(self, probability: float, kinds: Sequence[str], operation: str = "*", seconds: float = 0.0,
              seed: int | None = None) -> int:
        """From now on, each call of ``operation`` ("*": every one) fails with ``probability``, in one
        of ``kinds`` drawn at random (``seconds``: a latency's, or how long a hang holds the call),
        until :meth:`clear_faults`.  Returns the seed (drawn when not given), to replay the run."""
        for kind in kinds:
            self.fault_type(kind)  # a kind this simulator knows
        seed = random.randrange(2**32) if seed is None else seed
        with self._lock:
            self._chaos.append(Chaos(probability, tuple(kinds), operation, seconds, seed))
        return seed

    def clear_faults(self) -> None:
        """Remove the injected faults and the chaos (not an outage: :meth:`up`)."""
        with self._lock:
            self._faults.clear()
            self._chaos.clear()

    @abstractmethod
    def received(self) -> dict[str, Any]:
        """What reached the platform, for ``GET /control/received``."""

    @abstractmethod
    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture sends ``code`` about the acknowledged act ``id_acte``."""

    @abstractmethod
    def publish_classification(self, day: date | str) -> None:
        """The préfecture publishes a classification dated ``day``."""

    # -- what the handler asks ----------------------------------------------------------

    def _count_call(self, key: str) -> None:
        with self._lock:
            self._calls[key] += 1

    def _take_faults(self, operation: str, key: str | None = None) -> tuple[float, FaultT | None]:
        """Count the call (under ``key``, by default ``operation``); the latency to add and the first
        other fault that applies to ``operation`` or ``key`` (consumed)."""
        key = key or operation
        self._count_call(key)
        latency, chosen = 0.0, None
        with self._lock:
            for fault in list(self._faults):
                if fault.operation not in ("*", operation, key) or (chosen and fault.kind != "latency"):
                    continue
                if not fault.hits():
                    continue
                if fault.kind == "latency":
                    latency += fault.seconds
                else:
                    chosen = fault
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
            for chaos in self._chaos:
                if chaos.operation not in ("*", operation, key):
                    continue
                kind = chaos.draw()
                if kind == "latency":
                    latency += chaos.seconds
                elif kind is not None and chosen is None:
                    chosen = self.fault_type(kind, operation, None, chaos.seconds)
        return latency, chosen

    def _unavailable(self) -> bool:
        """Whether service calls are answered 503 now (``down(how="503")``)."""
        return self._down_how == "503" and time.monotonic() < self._down_until

    def _wait(self, seconds: float) -> bool:
        """Sleep, but not past stop(); True when stopped meanwhile."""
        return self._stopping.wait(seconds)

    def _control(self, method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """(HTTP status, JSON answer) of a ``/control/`` request; :meth:`_control_route` for more routes."""
        try:
            if method == "GET" and path == "/control/received":
                return 200, self.received()
            if method == "DELETE" and path == "/control/faults":
                self.clear_faults()
                return 200, {"faults": 0}
            if method == "POST" and path == "/control/faults":
                seed = payload.get("seed")
                self.inject(str(payload["kind"]), str(payload.get("operation", "*")), payload.get("count", 1),
                            float(payload.get("seconds", 0.0)), probability=float(payload.get("probability", 1.0)),
                            seed=None if seed is None else int(seed))
                return 200, {"faults": len(self._faults)}
            if method == "POST" and path == "/control/chaos":
                seed = payload.get("seed")
                used = self.chaos(float(payload["probability"]), [str(k) for k in payload["kinds"]],
                                  str(payload.get("operation", "*")), float(payload.get("seconds", 0.0)),
                                  None if seed is None else int(seed))
                return 200, {"seed": used}
            if method == "POST" and path == "/control/down":
                self.down(float(payload["seconds"]), str(payload.get("how", "503")))
                return 200, {"down": True}
            if method == "POST" and path == "/control/followup":
                return self._control_followup(payload)
            if method == "POST" and path == "/control/classification":
                self.publish_classification(str(payload["date"]))
                return 200, {"date": self.platform.classification_date.isoformat()}
            answer = self._control_route(method, path, payload)
            if answer is not None:
                return answer
        except KeyError as exc:
            return 400, {"error": f"missing field {exc}"}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route {method} {path}"}

    def _control_followup(self, payload: dict[str, Any]) -> tuple[int, Any]:
        """``POST /control/followup``: 404 for an act the platform does not know."""
        id_acte, code = str(payload["id_acte"]), str(payload["code"])
        try:
            return 200, self.followup(id_acte, code)
        except KeyError as exc:  # no such act
            return 404, {"error": str(exc.args[0])}

    def _control_route(self, method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any] | None:
        """A control route of this simulator only, or None."""
        return None


def server_context(certfile: Path | str, keyfile: Path | str | None = None,
                   client_ca: Path | str | None = None) -> ssl.SSLContext:
    """A server-side TLS context: ``certfile`` (PEM, with its key unless ``keyfile``); with
    ``client_ca``, clients must present a certificate that chains to it (mutual TLS)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# -- the command lines ------------------------------------------------------------------


class _Stoppable(Protocol):
    def stop(self) -> None: ...


class SimulatorCommand:
    """``python -m <module>``: ``--host``, ``--port``, ``--ack-delay`` and ``--classification``, the
    module's own options (on :attr:`parser`), then :meth:`add_fault_and_tls_options`; :meth:`parse`
    and :meth:`serve`."""

    def __init__(self, module: str, doc: str | None, port: int,
                 classification_help: str = "RetourClassification file (7-2) served and checked") -> None:
        self.parser = argparse.ArgumentParser(prog=f"python -m {module}", description=(doc or "").split("\n")[0])
        self.parser.add_argument("--host", default="127.0.0.1")
        self.parser.add_argument("--port", type=int, default=port)
        self.parser.add_argument("--ack-delay", type=float, default=0.0,
                                 help="seconds before the ministry's answer shows")
        self.parser.add_argument("--classification", type=Path, help=classification_help)

    def add_fault_and_tls_options(self, fault_type: type[InjectedFault], target: str = "OPERATION", *,
                                  latency: bool = True) -> None:
        """``--latency`` (unless ``latency`` is False), ``--fault KIND[:TARGET[:COUNT[:SECONDS]]]``,
        ``--certfile``, ``--keyfile`` and ``--client-ca``."""

        def _fault_option(text: str) -> InjectedFault:
            """``KIND[:TARGET[:COUNT[:SECONDS]]]``; COUNT ``*`` or empty: every call."""
            parts = text.split(":")
            count = parts[2] if len(parts) > 2 else "1"
            return fault_type(
                parts[0],
                parts[1] if len(parts) > 1 and parts[1] else "*",
                None if count in ("", "*") else int(count),
                float(parts[3]) if len(parts) > 3 and parts[3] else 0.0,
            )

        add = self.parser.add_argument
        if latency:
            add("--latency", type=float, default=0.0, help="seconds added to every call")
        add("--fault", action="append", default=[], type=_fault_option, metavar=f"KIND[:{target}[:COUNT[:SECONDS]]]",
            help=f"inject a fault; KIND in {fault_type.kinds}")
        add("--certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
        add("--keyfile", type=Path, help="private key (PEM) of --certfile, if not in it")
        add("--client-ca", type=Path, help="require client certificates issued by this CA (PEM)")

    def parse(self, argv: list[str] | None) -> argparse.Namespace:
        """The options, the TLS ones checked (``--keyfile`` and ``--client-ca`` need ``--certfile``)."""
        args = self.parser.parse_args(argv)
        if (args.keyfile or args.client_ca) and not args.certfile:
            self.parser.error("--keyfile and --client-ca need --certfile")
        return args

    @staticmethod
    def tls(args: argparse.Namespace) -> ssl.SSLContext | None:
        """The server's TLS context with ``--certfile``, else None (plain HTTP)."""
        return server_context(args.certfile, args.keyfile, args.client_ca) if args.certfile else None

    @staticmethod
    def serve(running: _Stoppable, banner: str) -> int:
        """Print ``banner``, wait for SIGTERM or SIGINT, stop ``running``; the exit status."""
        done = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        print(banner, flush=True)
        done.wait()
        running.stop()
        return 0
