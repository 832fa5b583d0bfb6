"""A procurement platform over SOAP 1.1 or as an SFTP desk, for the demo and the integration tests.

It implements Hent's own contract, ``schemas/procurement/`` (README.md there), on a real HTTP
server, and is strict: each DECP file is validated against the official XSD and a contract is
published once per modification — see :mod:`simulators.procurement_platform` for what is
refused and how.  Run it with ``python -m simulators.procurement --port 8090``, or in a test::

    with ProcurementSimulator(publish_delay=0.0) as simulator:
        client = zeep.Client(str(WSDL_PATH))
        service = client.create_service("{urn:hent:procurement:1}ProcurementBinding", simulator.url)

HTTP routes, on one port:

- ``POST /soap``: the service; ``GET /soap?wsdl`` the WSDL (its address is this server),
  ``GET /procurement.xsd`` the schema it imports.
- ``POST /control/faults`` ``{"operation": "SubmitDecp"|"*", "kind": ..., "count": N,
  "seconds": s}``: inject a fault (:data:`FAULT_KINDS`) in the next N calls (count null: every
  call); ``DELETE /control/faults`` clears them.
- ``GET /control/received``: ``{"by_contract": {"BUYER:ID:MODIFICATION": n}, "published":
  {...}, "rejected": n, "files": {name: [sha256...]}, "calls": {"SubmitDecp": n, ...}}``.
  ``by_contract`` counts the SubmitDecp calls that reached the platform with that contract
  (duplicates refused included; calls cut short by an injected fault or refused for AUTH are
  not), ``published`` the publications of each contract, ``calls`` every SOAP request received,
  per operation (malformed ones under ``"?"``).

Over TLS: give ``tls`` an :class:`ssl.SSLContext` (:func:`simulators._http_sim.server_context`);
from the command line ``--certfile``, ``--keyfile``, ``--client-ca``.

With ``--desk DIR`` the command runs the same platform as a file desk on DIR instead
(:mod:`simulators.procurement_sftp`): DECP files dropped into ``DIR/inbox``, receipts and
rejections written to ``DIR/outbox``, for an SFTP server pointed at DIR.
"""

from __future__ import annotations

__all__ = ["FAULT_KINDS", "WSDL_PATH", "XSD_PATH", "Fault", "ProcurementCommand", "ProcurementSimulator", "main"]

import argparse
import hmac
import logging
import ssl
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from simulators._http_sim import HttpSimulator, InjectedFault, SimulatorCommand
from simulators.procurement_platform import ProcurementPlatform
from simulators.procurement_sftp import ProcurementDesk
from simulators.procurement_soap import ProcurementFault, ProcurementHandler, ProcurementServer, SoapRequest, Value

ROOT = Path(__file__).resolve().parent.parent
WSDL_PATH = ROOT / "schemas" / "procurement" / "procurement.wsdl"
XSD_PATH = ROOT / "schemas" / "procurement" / "procurement.xsd"
#: latency: wait; http500: HTTP 500, no SOAP; soapfault: fault INTERNAL; drop: close without
#: answering; hang / timeout: answer nothing until ``seconds`` (default an hour) or stop();
#: lost_reply: do the call (record the submission), then close without answering
FAULT_KINDS = ("latency", "http500", "soapfault", "drop", "hang", "timeout", "lost_reply")
_PLACEHOLDER = "http://127.0.0.1:8090/soap"


class Fault(InjectedFault):
    """An injected fault: ``kind`` for ``operation`` (or "*"), ``count`` times (None: always)."""

    kinds = FAULT_KINDS


class ProcurementSimulator(HttpSimulator[Fault]):
    """The platform behind a loopback HTTP server: start(), url, stop(); a context manager.

    The platform itself is :attr:`procurement`.  (The ``platform`` that :class:`HttpSimulator`
    builds for the legality simulators is not used here.)
    """

    fault_type = Fault
    server_class = ProcurementServer
    handler_class = ProcurementHandler
    name = "procurement"
    url_path = "/soap"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, publish_delay: float = 0.0, username: str | None = None,
        password: str | None = None, faults: list[Fault] | tuple[Fault, ...] = (), latency: float = 0.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, faults=faults, latency=latency, tls=tls)
        self.procurement = ProcurementPlatform(publish_delay=publish_delay)
        self.username, self.password = username, password

    def wsdl_text(self) -> str:
        """The WSDL, with this server as the service's address."""
        return WSDL_PATH.read_text(encoding="utf-8").replace(_PLACEHOLDER, self.url)

    def xsd_bytes(self) -> bytes:
        return XSD_PATH.read_bytes()

    # -- control ------------------------------------------------------------------------

    def received(self) -> dict[str, Any]:
        """``{"by_contract", "published", "rejected", "files", "calls"}`` (see the module's docstring)."""
        with self._lock:
            calls = dict(self._calls)
        return {**self.procurement.counts(), "calls": calls}

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        raise ValueError("a procurement platform sends no follow-up message")

    def publish_classification(self, day: date | str) -> None:
        raise ValueError("a procurement platform has no classification")

    # -- what the handler asks ----------------------------------------------------------

    def _authorised(self, request: SoapRequest) -> bool:
        if self.username is None:
            return True
        return hmac.compare_digest((request.username or "").encode(), self.username.encode()) \
            and hmac.compare_digest((request.password or "").encode(), (self.password or "").encode())

    def _dispatch(self, request: SoapRequest) -> list[tuple[str, Value]]:
        platform = self.procurement
        match request.operation:
            case "SubmitDecp":
                file_name = request.required("FileName")
                if "/" in file_name or "\\" in file_name or file_name in (".", ".."):
                    raise ProcurementFault("INVALID_REQUEST", f"FileName {file_name!r} is not a plain file name")
                submission = platform.submit(file_name, request.binary("Content"), request.required("ClientKey"))
                return [("TransactionId", submission.transaction_id), ("Status", "RECEIVED")]
            case "FindSubmission":
                found = platform.find(request.text("ClientKey") or "")
                return [("TransactionId", found[0]), ("Status", found[1])] if found else []
            case "GetStatus":
                return [("Transaction", self._status_fields(i)) for i in request.texts("TransactionId")]
            case "Ping":
                return [("Status", "OK"), ("Time", datetime.now(UTC).replace(microsecond=0))]
        raise ProcurementFault("INVALID_REQUEST", f"unknown operation {request.operation}")

    def _status_fields(self, transaction_id: str) -> list[tuple[str, Value]]:
        status = self.procurement.status(transaction_id)
        submission = self.procurement.submission(transaction_id)
        if submission is None or status not in ("PUBLISHED", "REJECTED"):
            return [("TransactionId", transaction_id), ("Status", status)]
        return [("TransactionId", transaction_id), ("Status", status), ("DocumentName", submission.document_name),
                ("Document", submission.document), ("Detail", submission.detail)]


class ProcurementCommand(SimulatorCommand):
    """``python -m simulators.procurement``: ``--host``, ``--port``, ``--publish-delay``, the fault
    and TLS options of :class:`SimulatorCommand`, and ``--desk``."""

    def __init__(self, doc: str | None) -> None:  # not super(): no ministry, no classification here
        self.parser = argparse.ArgumentParser(prog="python -m simulators.procurement",
                                              description=(doc or "").split("\n")[0])
        self.parser.add_argument("--host", default="127.0.0.1")
        self.parser.add_argument("--port", type=int, default=8090)
        self.parser.add_argument("--publish-delay", type=float, default=0.0,
                                 help="seconds before a submission shows PUBLISHED or REJECTED")


def main(argv: list[str] | None = None) -> int:
    command = ProcurementCommand(__doc__)
    parser = command.parser
    parser.add_argument("--username", help="require a WS-Security UsernameToken with this user")
    parser.add_argument("--password", help="... and this password")
    command.add_fault_and_tls_options(Fault)
    parser.add_argument("--desk", type=Path, metavar="DIR",
                        help="no SOAP server: answer the DECP files dropped in DIR/inbox into DIR/outbox")
    args = command.parse(argv)
    if args.desk is not None:
        soap_only = [name for name in ("certfile", "username", "fault", "latency") if getattr(args, name)]
        if soap_only:
            parser.error(f"--desk takes no SOAP server options ({', '.join(f'--{name}' for name in soap_only)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    running: ProcurementSimulator | ProcurementDesk
    if args.desk is not None:
        running = ProcurementDesk(args.desk, ProcurementPlatform(publish_delay=args.publish_delay)).start()
        banner = f"procurement desk on {args.desk} (DECP files into {running.inbox_dir}, answers in " \
                 f"{running.outbox_dir})"
    else:
        running = ProcurementSimulator(
            args.host, args.port, publish_delay=args.publish_delay, username=args.username, password=args.password,
            faults=args.fault, latency=args.latency, tls=command.tls(args),
        ).start()
        banner = f"procurement simulator on {running.url} (WSDL at {running.url}?wsdl)"
    return command.serve(running, banner)


if __name__ == "__main__":
    raise SystemExit(main())
