"""A legality-check platform over SOAP 1.1, for the demo and the integration tests.

It implements ``schemas/legality/legality.wsdl`` on a real HTTP server (the standard
library's ThreadingHTTPServer and lxml) and is strict like the real chain: each archive is
opened and validated, and the ministry's answer (ARActe, AnomalieActe, AnomalieEnveloppe)
follows ``ack_delay`` seconds later — see :mod:`simulators.legality_platform` for what is
refused and how.  Run it with ``python -m simulators.legality --port 8088``, or in a test::

    with LegalitySimulator(ack_delay=0.0) as simulator:
        client = zeep.Client(str(WSDL_PATH))
        service = client.create_service("{urn:hent:legality:1}LegalityBinding", simulator.url)

HTTP routes, on one port:

- ``POST /soap``: the service; ``GET /soap?wsdl`` the WSDL (its address is this server),
  ``GET /legality.xsd`` the schema it imports.
- ``POST /control/faults`` ``{"operation": "SubmitArchive"|"*", "kind": ..., "count": N,
  "seconds": s}``: inject a fault (:data:`FAULT_KINDS`) in the next N calls (count null:
  every call); ``DELETE /control/faults`` clears them.
- ``POST /control/followup`` ``{"id_acte": ..., "code": "2-1"}``: the préfecture writes.
- ``POST /control/classification`` ``{"date": "2026-12-01"}``: publish a classification.
- ``GET /control/received``: ``{"by_act": {"SIREN:NUMERO:DATE": n}, "recorded": {...},
  "archives": {...}, "calls": {"SubmitArchive": n, ...}}``.  ``by_act`` counts the
  SubmitArchive calls that reached the platform with that act (duplicates refused
  included; calls cut short by an injected fault or refused for AUTH are not),
  ``recorded`` the transactions recorded for it, ``archives`` the sha256 of each archive
  received for it, in order, ``calls`` every SOAP request received, per operation
  (malformed ones under ``"?"``).

Over TLS: give ``tls`` an :class:`ssl.SSLContext` (:func:`server_context` builds one from a
certificate, its key and, for mutual TLS, the CA that client certificates must chain to);
``url`` then starts with ``https://``.  From the command line: ``--certfile``, ``--keyfile``,
``--client-ca``.  The handshake runs in the connection's own thread, so a client that never
completes it holds neither the server nor ``stop()``.

With ``--desk DIR`` (and ``--desk-format archive|xml``) the command runs the same platform as
a file desk on DIR instead (:mod:`simulators.legality_sftp`): archives dropped into
``DIR/inbox``, answers written to ``DIR/outbox``, for an SFTP server pointed at DIR.
"""

from __future__ import annotations

__all__ = ["FAULT_KINDS", "WSDL_PATH", "XSD_PATH", "DEFAULT_CLASSIFICATION", "Fault", "LegalitySimulator", "main",
           "server_context"]

import argparse
import hmac
import logging
import signal
import ssl
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from simulators.legality_http import LegalityHandler, LegalityServer
from simulators.legality_platform import Platform
from simulators.legality_sftp import ANSWER_FORMATS, LegalityDesk
from simulators.legality_soap import LegalityFault, MalformedRequest, SoapRequest, Value

ROOT = Path(__file__).resolve().parent.parent
WSDL_PATH = ROOT / "schemas" / "legality" / "legality.wsdl"
XSD_PATH = ROOT / "schemas" / "legality" / "legality.xsd"
DEFAULT_CLASSIFICATION = ROOT / "config" / "classifications" / "demo-classification-7-2.xml"
#: latency: wait; http500: HTTP 500, no SOAP; soapfault: fault INTERNAL; drop: close without
#: answering; hang: answer nothing until ``seconds`` (default an hour) or stop(); lost_reply:
#: do the call (record the submission), then close without answering
FAULT_KINDS = ("latency", "http500", "soapfault", "drop", "hang", "lost_reply")
log = logging.getLogger(__name__)


@dataclass
class Fault:
    """An injected fault: ``kind`` for ``operation`` (or "*"), ``count`` times (None: always)."""

    kind: str
    operation: str = "*"
    count: int | None = 1
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or None for every call)")


class LegalitySimulator:
    """The platform behind a loopback HTTP server: start(), url, stop(); a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ack_delay: float = 0.0,
        classification: Path | None = None,
        departement: str = "044",
        username: str | None = None,
        password: str | None = None,
        faults: list[Fault] | tuple[Fault, ...] = (),
        latency: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.tls = tls
        self.platform = Platform(classification or DEFAULT_CLASSIFICATION, ack_delay=ack_delay, departement=departement)
        self.username, self.password = username, password
        self._faults = list(faults) + ([Fault("latency", count=None, seconds=latency)] if latency else [])
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: LegalityServer | None = None
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------

    def start(self) -> LegalitySimulator:
        self._stopping.clear()
        server = LegalityServer((self.host, self.port), LegalityHandler)
        server.simulator = self
        if self.tls is not None:  # accepted sockets are TLS ones; each handshakes in its own thread
            server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server, self.port = server, server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"legality-simulator-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a hung call is released at once (its connection closed unanswered)."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wsdl_text(self) -> str:
        """The WSDL, with this server as the service's address."""
        return WSDL_PATH.read_text(encoding="utf-8").replace("http://127.0.0.1:8088/soap", self.url)

    def xsd_bytes(self) -> bytes:
        return XSD_PATH.read_bytes()

    @property
    def url(self) -> str:
        """The SOAP endpoint, e.g. ``http://127.0.0.1:8088/soap`` (``https://`` with ``tls``)."""
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}/soap"

    def __enter__(self) -> LegalitySimulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- control ------------------------------------------------------------------------

    def inject(self, kind: str, operation: str = "*", count: int | None = 1, seconds: float = 0.0) -> None:
        """Inject a fault in the next ``count`` calls of ``operation`` ("*": every operation)."""
        with self._lock:
            self._faults.append(Fault(kind, operation, count, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture sends ``code`` (2-1, 3-1, 3-5, 4-1, 4-5, 5-1, 6-2) about an acknowledged act."""
        message = self.platform.followup(id_acte, code)
        return {"message_id": message.message_id, "code": message.code, "name": message.name}

    def publish_classification(self, day: date | str) -> None:
        """A new classification date: acts stamped with an older one get ODT-VERIF-01."""
        self.platform.publish_classification(date.fromisoformat(day) if isinstance(day, str) else day)

    def received(self) -> dict[str, Any]:
        """``{"by_act": {...}, "recorded": {...}, "calls": {...}}`` (see the module's docstring)."""
        with self._lock:
            calls = dict(self._calls)
        return {**self.platform.counts(), "calls": calls}

    # -- what the handler asks ----------------------------------------------------------

    def _count_call(self, operation: str) -> None:
        with self._lock:
            self._calls[operation] += 1

    def _take_faults(self, operation: str) -> tuple[float, Fault | None]:
        """Count the call; the latency to add and the first other fault that applies (consumed)."""
        self._count_call(operation)
        latency, chosen = 0.0, None
        with self._lock:
            for fault in list(self._faults):
                if fault.operation not in ("*", operation) or (chosen and fault.kind != "latency"):
                    continue
                if fault.kind == "latency":
                    latency += fault.seconds
                else:
                    chosen = fault
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return latency, chosen

    def _authorised(self, request: SoapRequest) -> bool:
        if self.username is None:
            return True
        return (
            request.password_type_ok
            and hmac.compare_digest((request.username or "").encode(), self.username.encode())
            and hmac.compare_digest((request.password or "").encode(), (self.password or "").encode())
        )

    def _wait(self, seconds: float) -> bool:
        """Sleep, but not past stop(); True when stopped meanwhile."""
        return self._stopping.wait(seconds)

    def _dispatch(self, request: SoapRequest) -> list[tuple[str, Value]]:
        platform = self.platform
        match request.operation:
            case "SubmitArchive":
                try:
                    archive = request.binary("Archive")
                except MalformedRequest as exc:
                    raise LegalityFault("INVALID_ARCHIVE", str(exc)) from exc
                transaction = platform.submit(
                    request.required("ArchiveName"), request.required("ClientKey"),
                    request.text("ExpectedIDActe") or "", archive,
                )
                return [("TransactionId", transaction.transaction_id), ("Status", "TRANSMITTED")]
            case "FindSubmission":
                found = platform.find(request.required("ClientKey"))
                return [("TransactionId", found[0]), ("Status", found[1])] if found else []
            case "GetStatus":
                return [("Transaction", self._status_fields(i)) for i in request.texts("TransactionId")]
            case "ListMessages":
                return [
                    ("Message", [("MessageId", m.message_id), ("Code", m.code), ("Name", m.name), ("Date", m.day)])
                    for m in platform.followups(request.required("TransactionId"))
                ]
            case "GetMessage":
                message = platform.message(request.required("MessageId"))
                fields: list[tuple[str, Value]] = [
                    ("MessageId", message.message_id), ("Code", message.code), ("Name", message.name),
                    ("Content", message.content),
                ]
                for name, data in message.attachments.items():
                    fields.append(("Attachment", [("Name", name), ("Content", data)]))
                return fields
            case "CancelAct":
                transaction_id = request.required("TransactionId")
                return [("TransactionId", transaction_id),
                        ("Status", platform.cancel(transaction_id, request.required("IDActe")))]
            case "RequestClassification":
                siren = request.required("SIREN")
                if not (len(siren) == 9 and siren.isdigit()):
                    raise MalformedRequest(f"SIREN {siren!r} is not 9 digits")
                current = request.text("CurrentDate")
                try:
                    day = date.fromisoformat(current) if current else None
                except ValueError as exc:
                    raise MalformedRequest(f"CurrentDate {current!r} is not a date") from exc
                code, name, content = platform.request_classification(siren, day)
                return [("Code", code), ("Name", name), ("Content", content)]
        raise MalformedRequest(f"unknown operation {request.operation}")

    def _status_fields(self, transaction_id: str) -> list[tuple[str, Value]]:
        transaction = self.platform.transaction(transaction_id)
        status = self.platform.status(transaction_id)
        if transaction is None or status == "TRANSMITTED":
            return [("TransactionId", transaction_id), ("Status", status)]
        return [
            ("TransactionId", transaction_id), ("Status", status), ("IDActe", transaction.id_acte),
            ("DateReception", transaction.date_reception if transaction.id_acte else None),
            ("MessageName", transaction.message_name), ("Message", transaction.message),
            ("Detail", "cancelled (6-2 ARAnnulation in ListMessages)" if status == "CANCELLED" else transaction.detail),
        ]

    def _control(self, method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        try:
            if method == "GET" and path == "/control/received":
                return 200, self.received()
            if method == "DELETE" and path == "/control/faults":
                self.clear_faults()
                return 200, {"faults": 0}
            if method == "POST" and path == "/control/faults":
                self.inject(str(payload["kind"]), str(payload.get("operation", "*")),
                            payload.get("count", 1), float(payload.get("seconds", 0.0)))
                return 200, {"faults": len(self._faults)}
            if method == "POST" and path == "/control/followup":
                id_acte, code = str(payload["id_acte"]), str(payload["code"])
                try:
                    return 200, self.followup(id_acte, code)
                except KeyError as exc:  # no such act
                    return 404, {"error": str(exc.args[0])}
                except ValueError as exc:  # not acknowledged, or an unknown code
                    return 409, {"error": str(exc)}
            if method == "POST" and path == "/control/classification":
                self.publish_classification(str(payload["date"]))
                return 200, {"date": self.platform.classification_date.isoformat()}
        except KeyError as exc:
            return 400, {"error": f"missing field {exc}"}
        except (ValueError, TypeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route {method} {path}"}


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


def _fault_option(text: str) -> Fault:
    """``KIND[:OPERATION[:COUNT[:SECONDS]]]``; COUNT ``*`` or empty: every call."""
    parts = text.split(":")
    count = parts[2] if len(parts) > 2 else "1"
    return Fault(
        parts[0],
        parts[1] if len(parts) > 1 and parts[1] else "*",
        None if count in ("", "*") else int(count),
        float(parts[3]) if len(parts) > 3 and parts[3] else 0.0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.legality", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--ack-delay", type=float, default=0.0, help="seconds before the ministry's answer shows")
    parser.add_argument("--classification", type=Path, help="RetourClassification file (7-2) served and checked")
    parser.add_argument("--departement", default="044", help="département for 7-2/7-3 names of unknown SIRENs")
    parser.add_argument("--username", help="require a WS-Security UsernameToken with this user")
    parser.add_argument("--password", help="... and this password (PasswordText)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument("--fault", action="append", default=[], type=_fault_option,
                        metavar="KIND[:OPERATION[:COUNT[:SECONDS]]]", help=f"inject a fault; KIND in {FAULT_KINDS}")
    parser.add_argument("--certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, help="private key (PEM) of --certfile, if not in it")
    parser.add_argument("--client-ca", type=Path, help="require client certificates issued by this CA (PEM)")
    parser.add_argument("--desk", type=Path, metavar="DIR",
                        help="no SOAP server: answer the archives dropped in DIR/inbox into DIR/outbox")
    parser.add_argument("--desk-format", choices=ANSWER_FORMATS, default="archive",
                        help="--desk answers: the ministry's tar.gz (default) or bare XML files")
    args = parser.parse_args(argv)
    if (args.keyfile or args.client_ca) and not args.certfile:
        parser.error("--keyfile and --client-ca need --certfile")
    if args.desk is not None:
        soap_only = [name for name in ("certfile", "username", "fault", "latency") if getattr(args, name)]
        if soap_only:
            parser.error(f"--desk takes no SOAP server options ({', '.join(f'--{name}' for name in soap_only)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    running: LegalitySimulator | LegalityDesk
    if args.desk is not None:
        running = LegalityDesk.for_root(
            args.desk, classification=args.classification, departement=args.departement,
            answer_format=args.desk_format,
        ).start()
        banner = f"legality desk on {args.desk} (archives into {running.inbox_dir}, answers in {running.outbox_dir})"
    else:
        tls = server_context(args.certfile, args.keyfile, args.client_ca) if args.certfile else None
        running = LegalitySimulator(
            args.host, args.port, ack_delay=args.ack_delay, classification=args.classification,
            departement=args.departement, username=args.username, password=args.password,
            faults=args.fault, latency=args.latency, tls=tls,
        ).start()
        banner = f"legality simulator on {running.url} (WSDL at {running.url}?wsdl)"
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(banner, flush=True)
    done.wait()
    running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
