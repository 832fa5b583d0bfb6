"""Read the procurement platform's answer to a DECP file: a Receipt or a Rejection.

Both documents are Hent's own contract (``schemas/procurement/procurement.xsd``, README.md
there), the same over SOAP (GetStatus gives them) and over SFTP (``<file>.receipt.xml``,
``<file>.rejection.xml``).  :func:`read_procurement_answer` validates one against the schema
and gives a :class:`ProcurementAnswer`; the bus matches it to its delivery by ``file_name``
(and ``sha256``), or by ``decp_id`` + ``modification_id``.  Anything else — not XML, a DOCTYPE,
another document, a schema error — is a :class:`~bus.errors.DocumentError` with rule
``procurement-answer`` naming the file and what is wrong.  XML is parsed with no entity
expansion and no network; the schema is compiled once.
"""

from __future__ import annotations

__all__ = ["PROCUREMENT_NS", "PROCUREMENT_XSD", "ProcurementAnswer", "read_procurement_answer"]

import threading
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Literal

from lxml import etree

from bus.errors import ConfigError, DocumentError, Problem
from transformers import safe_xml
from transformers.safe_xml import XmlRefused

PROCUREMENT_NS = "urn:hent:procurement:1"
PROCUREMENT_XSD = Path(__file__).resolve().parent.parent / "schemas" / "procurement" / "procurement.xsd"
_RULE = "procurement-answer"
_MAX_ANSWER = 5 * 1024 * 1024
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProcurementAnswer:
    """A Receipt (the contract is published) or a Rejection (the file is refused)."""

    kind: Literal["receipt", "rejection"]
    decp_id: str | None  #: the contract's ``id``; None in a rejection of an unreadable file
    modification_id: int | None  #: 0 for the initial publication; None when unreadable
    file_name: str  #: the DECP file the platform received
    publication_id: str | None  #: a receipt's; in a rejection only for a duplicate (the existing one)
    errors: tuple[str, ...]  #: a rejection's errors, each ``field: message [rule]``; () for a receipt
    received_at: datetime
    published_at: datetime | None  #: a receipt's
    sha256: str = ""  #: of the file received
    buyer_id: str | None = None  #: SIRET of the buyer (acheteur or autorité concédante)
    problems: tuple[Problem, ...] = ()  #: the errors, with field and rule apart

    @property
    def duplicate(self) -> bool:
        """A rejection only because the platform already published this contract and modification
        (``publication_id`` is then the existing publication)."""
        return self.kind == "rejection" and bool(self.problems) and all(p.rule == "duplicate" for p in self.problems)


@lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        return etree.XMLSchema(etree.parse(str(PROCUREMENT_XSD), parser))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigError(f"cannot compile the procurement schema: {exc}", path=str(PROCUREMENT_XSD),
                          rule="schema-compiles") from exc


def _refuse(name: str, message: str, line: int | None = None, field: str | None = None) -> DocumentError:
    return DocumentError(
        f"{name} is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): "
        f"{message}; it is kept as received: ask the platform what it sent",
        path=name, line=line, field=field, rule=_RULE)


def _readable_path(tree: etree._ElementTree, path: str | None) -> str | None:
    """``/Receipt/ModificationId`` for lxml's ``/*/*[3]`` (None when it finds nothing)."""
    found = tree.xpath(path) if path else []
    if not found or not isinstance(found[0], etree._Element):
        return None
    names = [etree.QName(element).localname for element in (*reversed(list(found[0].iterancestors())), found[0])]
    return "/" + "/".join(names)


def read_procurement_answer(data: bytes, name: str) -> ProcurementAnswer:
    """The answer in ``data`` (a file named ``name``), validated; DocumentError otherwise."""
    if len(data) > _MAX_ANSWER:
        raise _refuse(name, f"{len(data)} bytes, more than {_MAX_ANSWER}")
    try:
        tree = safe_xml.parse(data, name=name, max_bytes=_MAX_ANSWER, entities="keep").getroottree()
    except XmlRefused as exc:
        what = "not well-formed XML" if exc.rule == "xml-well-formed" else exc.rule
        raise _refuse(name, f"{what} ({exc.detail})", line=exc.line) from exc
    if tree.docinfo.doctype:
        raise _refuse(name, "it holds a DOCTYPE", line=1)
    root = tree.getroot()
    if root.tag not in (f"{{{PROCUREMENT_NS}}}Receipt", f"{{{PROCUREMENT_NS}}}Rejection"):
        raise _refuse(name, f"its root element is {root.tag}, not Receipt or Rejection in {PROCUREMENT_NS}")
    schema = _schema()
    with _LOCK:
        valid = schema.validate(tree)
        errors = list(schema.error_log)
    if not valid:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _refuse(name, f"{first.message}{more}", line=first.line, field=_readable_path(tree, first.path))

    def value(child: str) -> str | None:
        found = root.findtext(f"{{{PROCUREMENT_NS}}}{child}")
        return found.strip() if found is not None else None

    def moment(child: str) -> datetime | None:
        text = value(child)
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
        except ValueError as exc:  # valid for XSD, out of Python's reach (year 10000, 24:00:00...)
            raise _refuse(name, f"{child} {text!r} is not a date and time Hent can read") from exc

    modification = value("ModificationId")
    problems = tuple(
        Problem(
            error.findtext(f"{{{PROCUREMENT_NS}}}Message", "").strip(),
            field=error.findtext(f"{{{PROCUREMENT_NS}}}Field", "").strip() or None,
            rule=error.findtext(f"{{{PROCUREMENT_NS}}}Rule", "").strip(),
        )
        for error in root.iterfind(f"{{{PROCUREMENT_NS}}}Error")
    )
    received_at = moment("ReceivedAt")
    assert received_at is not None  # required by the schema
    return ProcurementAnswer(
        kind="receipt" if etree.QName(root).localname == "Receipt" else "rejection",
        decp_id=value("DecpId"),
        modification_id=int(modification) if modification is not None else None,
        file_name=value("FileName") or "",
        publication_id=value("PublicationId"),
        errors=tuple(str(p) for p in problems),
        received_at=received_at,
        published_at=moment("PublishedAt"),
        sha256=value("Sha256") or "",
        buyer_id=value("BuyerId"),
        problems=problems,
    )
