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
  (malformed ones under ``"?"``), ``clients`` the subject of the TLS client certificate each
  act's SubmitArchive came with (over mutual TLS).

Once an act is acknowledged, ``GetReceipts`` gives its stamped act (``<IDActe>-tampon.pdf``),
its stamped annexes (``<annex>-tampon.pdf``) and the bordereau d'acquittement
(``<IDActe>-bordereau.pdf``).  The platform does not keep the documents it received, only the
names read from the Acte when SubmitArchive took it: each stamped file is therefore a new PDF
(:func:`simulators.pdf.make_pdf`) showing "Acte reçu en préfecture le <date> — <IDActe>" and the
name of the document it stands for, not the document itself with a stamp on it.  Nothing is
given before the acknowledgment, nor for an answer to a letter (the ministry stamps no answer).

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

import hmac
import logging
import ssl
import tarfile
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

from simulators._http_sim import DEFAULT_CLASSIFICATION, HttpSimulator, InjectedFault, SimulatorCommand, server_context
from simulators._xml import XmlRefused, parse
from simulators.legality_http import LegalityHandler, LegalityServer
from simulators.legality_messages import ACTES_NS
from simulators.legality_sftp import ANSWER_FORMATS, LegalityDesk
from simulators.legality_soap import LegalityFault, MalformedRequest, SoapRequest, Value
from simulators.pdf import make_pdf

ROOT = Path(__file__).resolve().parent.parent
WSDL_PATH = ROOT / "schemas" / "legality" / "legality.wsdl"
XSD_PATH = ROOT / "schemas" / "legality" / "legality.xsd"
#: latency: wait; http500: HTTP 500, no SOAP; soapfault: fault INTERNAL; drop: close without
#: answering; hang: answer nothing until ``seconds`` (default an hour) or stop(); lost_reply:
#: do the call (record the submission), then close without answering
FAULT_KINDS = ("latency", "http500", "soapfault", "drop", "hang", "lost_reply")
_MAX_XML = 10 * 1024 * 1024
log = logging.getLogger(__name__)


class Fault(InjectedFault):
    """An injected fault: ``kind`` for ``operation`` (or "*"), ``count`` times (None: always)."""

    kinds = FAULT_KINDS


class LegalitySimulator(HttpSimulator[Fault]):
    """The platform behind a loopback HTTP server: start(), url, stop(); a context manager."""

    fault_type = Fault
    server_class = LegalityServer
    handler_class = LegalityHandler
    name = "legality"
    url_path = "/soap"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ack_delay: float = 0.0, classification: Path | None = None,
        departement: str = "044", username: str | None = None, password: str | None = None,
        faults: list[Fault] | tuple[Fault, ...] = (), latency: float = 0.0, tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, port, ack_delay=ack_delay, classification=classification, departement=departement,
                         faults=faults, latency=latency, tls=tls)
        self.username, self.password = username, password
        #: transaction id → the NomFichier of its act's document and annexes, as SubmitArchive took them
        self._documents: dict[str, list[str]] = {}
        self._clients: dict[str, list[str]] = {}  #: act key → subject of the TLS client certificate of each submission

    def wsdl_text(self) -> str:
        """The WSDL, with this server as the service's address."""
        return WSDL_PATH.read_text(encoding="utf-8").replace("http://127.0.0.1:8088/soap", self.url)

    def xsd_bytes(self) -> bytes:
        return XSD_PATH.read_bytes()

    # -- control ------------------------------------------------------------------------

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
            clients = {key: list(names) for key, names in self._clients.items()}
        return {**self.platform.counts(), "calls": calls, "clients": clients}

    # -- what the handler asks ----------------------------------------------------------

    def _authorised(self, request: SoapRequest) -> bool:
        if self.username is None:
            return True
        return (
            request.password_type_ok
            and hmac.compare_digest((request.username or "").encode(), self.username.encode())
            and hmac.compare_digest((request.password or "").encode(), (self.password or "").encode())
        )

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
                documents = _act_documents(archive)
                with self._lock:
                    self._documents[transaction.transaction_id] = documents
                    if request.client is not None and transaction.act_key:
                        self._clients.setdefault(transaction.act_key, []).append(request.client)
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
            case "GetReceipts":
                return [("Receipt", [("Name", name), ("Kind", kind), ("Content", data)])
                        for name, kind, data in self.receipts(request.required("TransactionId"))]
        raise MalformedRequest(f"unknown operation {request.operation}")

    def receipts(self, transaction_id: str) -> list[tuple[str, str, bytes]]:
        """(name, kind, PDF) of the stamped act, its stamped annexes and the bordereau of an
        acknowledged act (see the module's docstring); [] before; UNKNOWN_TRANSACTION fault."""
        transaction = self.platform.transaction(transaction_id)
        if transaction is None:
            raise LegalityFault("UNKNOWN_TRANSACTION", f"no transaction {transaction_id}", transaction_id)
        id_acte = transaction.id_acte
        if id_acte is None or transaction.response_key is not None \
                or self.platform.status(transaction_id) not in ("ACKNOWLEDGED", "CANCELLED"):
            return []
        with self._lock:
            documents = list(self._documents.get(transaction_id, []))
        stamp = f"Acte reçu en préfecture le {transaction.date_reception:%d/%m/%Y} — {id_acte}"
        note = "(simulateur Hent : un PDF nouveau qui tient lieu du document tamponné)"
        main, annexes = (documents[0], documents[1:]) if documents else ("", [])
        receipts = [(f"{id_acte}-tampon.pdf", "stamped-act", make_pdf([stamp, f"Document : {main}", note]))]
        receipts += [(f"{Path(annex).stem}-tampon.pdf", "stamped-annex", make_pdf([stamp, f"Annexe : {annex}", note]))
                     for annex in annexes]
        bordereau = make_pdf([
            "Bordereau d'acquittement de transmission (simulateur Hent)", f"Identifiant de l'acte : {id_acte}",
            f"Transaction : {transaction_id}", f"Date de réception : {transaction.date_reception:%d/%m/%Y}",
            f"Archive : {transaction.archive_name}", "Documents :", *documents,
        ])
        return [*receipts, (f"{id_acte}-bordereau.pdf", "bordereau", bordereau)]

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

    def _control_followup(self, payload: dict[str, Any]) -> tuple[int, Any]:
        try:
            return super()._control_followup(payload)
        except ValueError as exc:  # not acknowledged, or an unknown code
            return 409, {"error": str(exc)}


def _act_documents(archive: bytes) -> list[str]:
    """The NomFichier of the Acte's document, then of its annexes, in an archive ([] when it holds no Acte)."""
    ns = f"{{{ACTES_NS}}}"
    try:
        with tarfile.open(fileobj=BytesIO(archive), mode="r:gz") as tar:
            for member in tar:
                stream = tar.extractfile(member) if member.isfile() and member.size <= _MAX_XML else None
                if stream is None or not member.name.lower().endswith(".xml"):
                    continue
                try:
                    root = parse(stream.read(), name=member.name, max_bytes=_MAX_XML)
                except XmlRefused:
                    continue
                if root.tag == f"{ns}Acte":
                    paths = (f"{ns}Document/{ns}NomFichier", f"{ns}Annexes/{ns}Annexe/{ns}NomFichier")
                    return [(e.text or "").strip() for path in paths for e in root.iterfind(path)]
    except (OSError, EOFError, tarfile.TarError):
        pass
    return []


def main(argv: list[str] | None = None) -> int:
    command = SimulatorCommand("simulators.legality", __doc__, 8088)
    parser = command.parser
    parser.add_argument("--departement", default="044", help="département for 7-2/7-3 names of unknown SIRENs")
    parser.add_argument("--username", help="require a WS-Security UsernameToken with this user")
    parser.add_argument("--password", help="... and this password (PasswordText)")
    command.add_fault_and_tls_options(Fault)
    parser.add_argument("--desk", type=Path, metavar="DIR",
                        help="no SOAP server: answer the archives dropped in DIR/inbox into DIR/outbox")
    parser.add_argument("--desk-format", choices=ANSWER_FORMATS, default="archive",
                        help="--desk answers: the ministry's tar.gz (default) or bare XML files")
    args = command.parse(argv)
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
        running = LegalitySimulator(
            args.host, args.port, ack_delay=args.ack_delay, classification=args.classification,
            departement=args.departement, username=args.username, password=args.password,
            faults=args.fault, latency=args.latency, tls=command.tls(args),
        ).start()
        banner = f"legality simulator on {running.url} (WSDL at {running.url}?wsdl)"
    return command.serve(running, banner)


if __name__ == "__main__":
    raise SystemExit(main())
