"""What the procurement simulator remembers and decides: submissions, receipts, rejections.

A submitted DECP file (``schemas/procurement/README.md``) is judged at once, in this order:

1. larger than :data:`MAX_DECP` → rejected (rule ``max-size``);
2. not well-formed XML (read by :mod:`transformers.safe_xml`: nested too deep counts), or holding a
   DOCTYPE → rejected (``xml-well-formed``, ``xml-doctype``);
3. each error of the official XSD (``schemas/decp/schema_decp_v2.0.2.xsd``) → rule ``xsd``, its
   field the element path lxml gives (``/marches/marche/montant``); a document that is not one
   ``<marches>`` holding exactly one ``<marche>`` or ``<contrat-concession>`` → ``decp-document``;
   any of them → rejected, with every finding;
4. the same client key, or the same contract (buyer SIRET + ``id`` + modification id), in a
   submission that is not rejected → a duplicate: over SOAP the ``DUPLICATE`` fault naming that
   transaction, nothing recorded (``duplicates="fault"``); over SFTP a rejection with rule
   ``duplicate`` whose ``PublicationId`` is the existing publication (``duplicates="reject"``);
5. else published: a Receipt with a new publication id.

The modification id is 0 for the initial publication, else the highest
``modifications/modification/id`` of the document.  The decision is taken at once and shown
``publish_delay`` seconds later: until then the status is RECEIVED.  A rejected file may be
submitted again (fixed, or not).
"""

from __future__ import annotations

__all__ = ["DECP_XSD", "MAX_DECP", "PR_NS", "Contract", "Finding", "ProcurementPlatform", "Submission",
           "read_contract", "receipt_xml", "rejection_xml"]

import hashlib
import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from lxml import etree

from simulators._xml import XmlRefused, parse
from simulators.procurement_soap import PR_NS, ProcurementFault

DECP_XSD = Path(__file__).resolve().parent.parent / "schemas" / "decp" / "schema_decp_v2.0.2.xsd"
#: the largest DECP file taken (one contract: a few kilobytes)
MAX_DECP = 5 * 1024 * 1024
_CONTRACTS = ("marche", "contrat-concession")
_BUYERS = {"marche": "acheteur", "contrat-concession": "autoriteConcedante"}
_SCHEMA_LOCK = threading.Lock()


@dataclass(frozen=True)
class Finding:
    """One error of a Rejection: the element path (or ""), the rule, the message."""

    field: str
    rule: str
    message: str


@dataclass(frozen=True)
class Contract:
    """What identifies the contract of a DECP document, as far as it could be read."""

    decp_id: str | None
    buyer_id: str | None
    modification_id: int | None
    element: str = "marche"  #: marche or contrat-concession

    @property
    def key(self) -> str | None:
        """``BUYER:ID:MODIFICATION``, when all three were read."""
        if self.decp_id is None or self.buyer_id is None or self.modification_id is None:
            return None
        return f"{self.buyer_id}:{self.decp_id}:{self.modification_id}"


@dataclass
class Submission:
    """One recorded submission and the platform's answer to it."""

    transaction_id: str
    client_key: str
    file_name: str
    sha256: str
    received_at: datetime
    due: float  #: time.monotonic() from which the outcome shows
    outcome: Literal["PUBLISHED", "REJECTED"]
    contract: Contract
    document_name: str  #: ``<file>.receipt.xml`` or ``<file>.rejection.xml``
    document: bytes  #: the Receipt or the Rejection
    detail: str
    publication_id: str | None = None

    def status(self, now: float) -> str:
        return self.outcome if now >= self.due else "RECEIVED"


@lru_cache(maxsize=1)
def _decp_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(DECP_XSD), etree.XMLParser(resolve_entities=False, no_network=True)))


def read_contract(root: etree._Element) -> Contract:
    """The contract's id, buyer and modification id, leniently (None for what is not there)."""
    contract = next((e for e in root if e.tag in _CONTRACTS), None) if root.tag == "marches" else None
    if contract is None and root.tag in _CONTRACTS:
        contract = root
    if contract is None:
        return Contract(None, None, None)
    decp_id = (contract.findtext("id") or "").strip() or None
    buyer_id = (contract.findtext(f"{_BUYERS[contract.tag]}/id") or "").strip() or None
    numbers = [(e.text or "").strip() for e in contract.iterfind("modifications/modification/id")]
    try:
        modification_id: int | None = max((int(n) for n in numbers), default=0)
    except ValueError:
        modification_id = None
    return Contract(decp_id, buyer_id, modification_id, contract.tag)


def _inspect(data: bytes) -> tuple[Contract, list[Finding]]:
    """The contract and the findings of steps 1-3 (see the module's docstring)."""
    if len(data) > MAX_DECP:
        return Contract(None, None, None), [Finding("", "max-size", f"{len(data)} bytes, more than {MAX_DECP}")]
    try:
        # entities kept (never expanded) so that any DOCTYPE gets the one answer below
        tree = parse(data, name="DECP", max_bytes=MAX_DECP, entities="keep").getroottree()
    except XmlRefused as exc:  # malformed, or too deep: the platform's one rule for unreadable XML
        return Contract(None, None, None), [Finding("", "xml-well-formed", exc.message)]
    if tree.docinfo.doctype:
        return Contract(None, None, None), [Finding("", "xml-doctype", "a DOCTYPE is not allowed")]
    root = tree.getroot()
    schema = _decp_schema()
    with _SCHEMA_LOCK:
        schema.validate(tree)
        errors = list(schema.error_log)
    findings = [Finding(e.path or "", "xsd", f"line {e.line}: {e.message}") for e in errors]
    contracts = [e for e in root if e.tag in _CONTRACTS] if root.tag == "marches" else []
    if len(contracts) != 1:
        held = f"<{root.tag}> holding {len(contracts)}" if root.tag == "marches" else f"<{root.tag}>"
        findings.append(Finding(
            f"/{root.tag}", "decp-document",
            f"a DECP file is one <marches> holding exactly one <marche> or <contrat-concession>, not {held}"))
    return read_contract(root), findings


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _document(root_name: str, fields: list[tuple[str, str | None]], errors: Sequence[Finding] = ()) -> bytes:
    root = etree.Element(f"{{{PR_NS}}}{root_name}", nsmap={None: PR_NS})
    for name, value in fields:
        if value is not None:
            etree.SubElement(root, f"{{{PR_NS}}}{name}").text = value
    for finding in errors:
        error = etree.SubElement(root, f"{{{PR_NS}}}Error")
        for name, value in (("Field", finding.field), ("Rule", finding.rule), ("Message", finding.message)):
            etree.SubElement(error, f"{{{PR_NS}}}{name}").text = value
    data: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=True, pretty_print=True)
    return data


def receipt_xml(contract: Contract, file_name: str, sha256: str, received_at: datetime, published_at: datetime,
                publication_id: str) -> bytes:
    """The ``<Receipt>`` of a published contract (procurement.xsd)."""
    return _document("Receipt", [
        ("DecpId", contract.decp_id), ("BuyerId", contract.buyer_id), ("ModificationId", str(contract.modification_id)),
        ("FileName", file_name), ("Sha256", sha256), ("ReceivedAt", _when(received_at)),
        ("PublishedAt", _when(published_at)), ("PublicationId", publication_id),
    ])


def rejection_xml(contract: Contract, file_name: str, sha256: str, received_at: datetime, errors: list[Finding],
                  publication_id: str | None = None) -> bytes:
    """The ``<Rejection>`` of a refused file (procurement.xsd); what could not be read is left out."""
    modification = None if contract.modification_id is None else str(contract.modification_id)
    decp_id = contract.decp_id if contract.decp_id and len(contract.decp_id) <= 16 else None
    buyer_id = contract.buyer_id if contract.buyer_id and len(contract.buyer_id) == 14 \
        and contract.buyer_id.isdigit() else None
    return _document("Rejection", [
        ("FileName", file_name), ("Sha256", sha256), ("DecpId", decp_id), ("BuyerId", buyer_id),
        ("ModificationId", modification), ("ReceivedAt", _when(received_at)), ("PublicationId", publication_id),
    ], errors)


class ProcurementPlatform:
    """The buyer's procurement platform, in memory, thread-safe (see the module's docstring)."""

    def __init__(self, *, publish_delay: float = 0.0) -> None:
        self.publish_delay = publish_delay
        self._lock = threading.Lock()
        self._run = secrets.token_hex(2)
        self._submissions: dict[str, Submission] = {}
        self._by_client_key: dict[str, list[str]] = {}
        self._counter = itertools.count(1)
        self._publications = itertools.count(1)
        self._by_contract: Counter[str] = Counter()
        self._files: dict[str, list[str]] = {}
        _decp_schema()  # compiled now, not during the first submission

    # -- submission ---------------------------------------------------------------------

    def submit(self, file_name: str, data: bytes, client_key: str, *,
               duplicates: Literal["fault", "reject"] = "fault") -> Submission:
        """Record and judge a DECP file; ProcurementFault DUPLICATE with ``duplicates="fault"``."""
        contract, findings = _inspect(data)
        sha256 = hashlib.sha256(data).hexdigest()
        received_at = datetime.now(UTC).replace(microsecond=0)
        with self._lock:
            if contract.key:
                self._by_contract[contract.key] += 1
            self._files.setdefault(file_name, []).append(sha256)
            publication_id = None
            if not findings:
                existing = self._existing(client_key, contract)
                if existing is not None and duplicates == "fault":
                    raise ProcurementFault("DUPLICATE", existing[1], existing[0].transaction_id)
                if existing is not None:
                    publication_id = existing[0].publication_id
                    findings = [Finding(f"/marches/{contract.element}/id", "duplicate", existing[1])]
            transaction_id = f"{self._run}-{next(self._counter):06d}"
            due = time.monotonic() + self.publish_delay
            if findings:
                submission = Submission(
                    transaction_id, client_key, file_name, sha256, received_at, due, "REJECTED", contract,
                    f"{file_name}.rejection.xml",
                    rejection_xml(contract, file_name, sha256, received_at, findings, publication_id),
                    " ; ".join(f"{f.field or file_name}: {f.message} [{f.rule}]" for f in findings),
                )
            else:
                publication_id = f"PUB-{self._run}-{next(self._publications):06d}"
                published_at = received_at + timedelta(seconds=round(self.publish_delay))
                submission = Submission(
                    transaction_id, client_key, file_name, sha256, received_at, due, "PUBLISHED", contract,
                    f"{file_name}.receipt.xml",
                    receipt_xml(contract, file_name, sha256, received_at, published_at, publication_id),
                    f"published as {publication_id}", publication_id,
                )
            self._submissions[transaction_id] = submission
            self._by_client_key.setdefault(client_key, []).append(transaction_id)
            return submission

    def _existing(self, client_key: str, contract: Contract) -> tuple[Submission, str] | None:
        """The submission not rejected that holds this client key or this contract, and why."""
        for transaction_id in self._by_client_key.get(client_key, []):
            found = self._submissions[transaction_id]
            if found.outcome != "REJECTED":
                return found, f"client key {client_key} was already submitted (transaction {transaction_id})"
        for found in self._submissions.values():
            if found.outcome != "REJECTED" and found.contract.key == contract.key:
                return found, (
                    f"contract {contract.decp_id} of buyer {contract.buyer_id}, modification "
                    f"{contract.modification_id}, is already published as {found.publication_id} "
                    f"(file {found.file_name}, transaction {found.transaction_id})")
        return None

    # -- questions ----------------------------------------------------------------------

    def submission(self, transaction_id: str) -> Submission | None:
        with self._lock:
            return self._submissions.get(transaction_id)

    def status(self, transaction_id: str) -> str:
        """RECEIVED, PUBLISHED, REJECTED, or UNKNOWN for an id it never gave."""
        found = self.submission(transaction_id)
        return "UNKNOWN" if found is None else found.status(time.monotonic())

    def find(self, client_key: str) -> tuple[str, str] | None:
        """(transaction id, status) of the latest submission with this client key, or None."""
        with self._lock:
            ids = self._by_client_key.get(client_key)
        return (ids[-1], self.status(ids[-1])) if ids else None

    def counts(self) -> dict[str, Any]:
        """``by_contract``: submissions that reached the platform per ``BUYER:ID:MODIFICATION``
        (duplicates refused included); ``published``: publications per contract; ``rejected``: how
        many submissions were rejected; ``files``: the sha256 of each file received, by name."""
        with self._lock:
            published = Counter(s.contract.key or "?" for s in self._submissions.values()
                                if s.outcome == "PUBLISHED")
            return {
                "by_contract": dict(self._by_contract),
                "published": dict(published),
                "rejected": sum(1 for s in self._submissions.values() if s.outcome == "REJECTED"),
                "files": {name: list(hashes) for name, hashes in self._files.items()},
            }
