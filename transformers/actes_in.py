"""ACTES in: read every message the ministry sends back, leniently (standards.md §1.9).

``parse_message(raw, filename)`` turns the bytes of one message into a `MinistryMessage`
and never raises: malformed XML, a wrong encoding, a bad date or a value outside the
schema's enumerations is written into ``errors`` and the rest is read anyway; ``raw``
keeps the bytes verbatim (strict out, lenient in).

=========================================  ======  ===========================================
kind (root element)                        code    what it says
=========================================  ======  ===========================================
ARActe                                     1-2     the act is received; carries its IDActe
AnomalieActe                               1-3     the act is refused (Nature, Detail)
CourrierSimple                             2-1     a letter from the préfecture
DemandePieceComplementaire                 3-1     a request for documents (DescriptionPieces)
ARPieceComplementaire                      3-5     the documents sent are received
LettreObservations                         4-1     observations (Motif)
ARReponseRejetLettreObservations           4-5     the answer to the observations is received
DefereTA                                   5-1     referred to the administrative court
ARAnnulation                               6-2     the cancellation is received
RetourClassification                       7-2     the classification file (matières)
ReponseClassificationSansChangement        7-3     the classification is already up to date
AnomalieEnveloppe                          ANO     the whole archive is refused (not numbered
                                                   by the ministry: Hent's code, after the
                                                   file name ``ANO_<envelope>.xml``)
EnveloppeMISILLCL                          ENV     the ministry's envelope (Hent's code)
MultiCanal                                 MC      the plain-HTML "multi canal" notice
Unknown                                    None    anything else, garbage bytes included
=========================================  ======  ===========================================

Where the act's key comes from, first source first, field by field: the ``ActeRecu``
echo (NumeroInterne, Date, CodeNatureActe), the IDActe (``DDD-SIREN-YYYYMMDD-NUMERO-NN``:
the only place an ARActe names the SIREN), the message's file name
(``[PJ-]DDD-SIREN-YYYYMMDD-NUMERO-NN-T-S_n.xml``, empty fields allowed as in
``044-214400152----1-3_1.xml``), for an AnomalieEnveloppe the single form its
``EnveloppeRecue`` lists and its ``IDCL`` SIREN, and last the envelope's ``Destinataire``
(SIREN only).

``envelope_name`` is set for an AnomalieEnveloppe only: the envelope's stem, without
``ANO_`` and without ``.xml`` (``ANO_EACT--210703385--20170612-2.xml`` →
``EACT--210703385--20170612-2``), taken from the file name, else from the archive name
that the ``Detail`` text quotes (``SLO-EACT--210703385--20170612-2.tar.gz -> ...``).
The ministry's own envelope (EnveloppeMISILLCL) is not one of ours and gets none.

XML is parsed with no entity expansion, no network, no DTD and lxml's size limits; an
entity reference is left out of the text it appears in and noted in ``errors``.  A message
whose bytes are not in its declared encoding (real ones say UTF-8 and hold ISO-8859-1) is read
as ISO-8859-1, which maps every byte (no U+FFFD), and ``errors`` names the first byte and its
offset: the reply's summary carries it.  What is read here is recorded and answered, never put
into an envelope.
"""

from __future__ import annotations

__all__ = [
    "ACTES_NS",
    "MATCHING_RULE",
    "MESSAGE_CODES",
    "ActKey",
    "MinistryMessage",
    "key_from_file_name",
    "parse_id_acte",
    "parse_message",
]

import hashlib
import html
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import PureWindowsPath
from typing import Any

from lxml import etree

from transformers import safe_xml
from transformers.actes_model import NATURES
from transformers.safe_xml import XmlRefused

ACTES_NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"

#: root element → message code (numbered by the ministry, or Hent's own for the others)
MESSAGE_CODES: dict[str, str] = {
    "ARActe": "1-2",
    "AnomalieActe": "1-3",
    "CourrierSimple": "2-1",
    "DemandePieceComplementaire": "3-1",
    "ARPieceComplementaire": "3-5",
    "LettreObservations": "4-1",
    "ARReponseRejetLettreObservations": "4-5",
    "DefereTA": "5-1",
    "ARAnnulation": "6-2",
    "RetourClassification": "7-2",
    "ReponseClassificationSansChangement": "7-3",
    "AnomalieEnveloppe": "ANO",
    "EnveloppeMISILLCL": "ENV",
    "MultiCanal": "MC",
}

MATCHING_RULE = """\
Matching rule (a message → the delivery it answers), first rule that applies wins:
 1. by IDActe: the message's IDActe equals the delivery's expected IDActe
    (DDD-SIREN-YYYYMMDD-NUMERO-NN, compared exactly);
 2. else by the act's key: SIREN + NumeroInterne + decision date are all known and equal
    to the delivery's act, and the nature too when both sides know it (ActKey);
 3. else by envelope name: an AnomalieEnveloppe's envelope_name equals the stem (no .xml)
    of the envelope name stored with the delivery.
A message matching no delivery (a classification file, the ministry's envelope, a
multi-canal notice without IDActe, an unknown message) is kept verbatim, attached to none.
"""

if __doc__ is not None:  # python -OO drops docstrings
    __doc__ += "\n" + MATCHING_RULE

_NATURE_BY_ABBREV = {abbrev: code for code, abbrev in NATURES.items()}
_ENVELOPE_ANOMALY_NATURES = ("001", "002", "003", "004", "005", "100")
_DETAIL_ELEMENTS = ("Detail", "Motif", "DescriptionPieces", "NatureIllegalite")
_ROOT_DATE_ELEMENTS = ("Date", "DateDepot", "DateClassification", "ClassificationDateVersionEnCours")
_FILE_NAME = re.compile(
    r"^(?:[0-9A-Za-z]{2}_[0-9A-Za-z]{2}-)?(?P<dep>[0-9]{2}[0-9AB])-(?P<siren>[0-9]*)-(?P<date>[0-9]*)"
    r"-(?P<numero>[A-Za-z0-9_]*)-(?P<nn>[A-Z]*)-(?P<t>[0-9]+)-(?P<s>[0-9]+)(?:_[0-9]+)?(?:\.[A-Za-z0-9]+)?$"
)
_ID_ACTE_IN_TEXT = re.compile(r"\b[0-9]{2}[0-9AB]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2}\b")
_ARCHIVE_IN_TEXT = re.compile(r"\b[A-Za-z0-9]+-([A-Z]{4}--[0-9]+--[0-9]{8}-[0-9]+)\.tar\.gz\b")
_MULTICANAL = re.compile(r"il s'agit d'un acte dont la transmission est effectu[ée]e en multi[- ]?canal")


@dataclass(frozen=True)
class ActKey:
    """What identifies an act without its IDActe; any part may be unknown (None)."""

    siren: str | None
    numero_interne: str | None
    decision_date: date | None
    nature: int | None

    @property
    def is_complete(self) -> bool:
        """SIREN, NumeroInterne and decision date known: enough to match by rule 2."""
        return None not in (self.siren, self.numero_interne, self.decision_date)

    def to_dict(self) -> dict[str, Any]:
        return {
            "siren": self.siren,
            "numero_interne": self.numero_interne,
            "decision_date": self.decision_date.isoformat() if self.decision_date else None,
            "nature": self.nature,
        }


@dataclass(frozen=True)
class MinistryMessage:
    """One message from the ministry, as far as it could be read."""

    kind: str
    code: str | None
    id_acte: str | None
    act_key: ActKey | None
    envelope_name: str | None
    dates: dict[str, date]
    anomaly_nature: str | None
    detail: str | None
    file_names: tuple[str, ...]
    filename: str | None
    raw: bytes = field(repr=False)
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: dates in ISO form, the raw bytes as their sha256 and size."""
        return {
            "kind": self.kind,
            "code": self.code,
            "id_acte": self.id_acte,
            "act_key": self.act_key.to_dict() if self.act_key else None,
            "envelope_name": self.envelope_name,
            "dates": {name: value.isoformat() for name, value in self.dates.items()},
            "anomaly_nature": self.anomaly_nature,
            "detail": self.detail,
            "file_names": list(self.file_names),
            "filename": self.filename,
            "raw": {"sha256": hashlib.sha256(self.raw).hexdigest(), "size": len(self.raw)},
            "errors": list(self.errors),
        }


def parse_message(raw: bytes, filename: str | None = None) -> MinistryMessage:
    """Read one message; never raises (what could not be read is in ``errors``)."""
    raw = bytes(raw)
    try:
        return _Reader(raw, filename).read()
    except Exception as exc:  # the poller must go on whatever the bytes hold
        return MinistryMessage(
            "Unknown", None, None, None, None, {}, None, None, (), filename, raw,
            (f"internal error while reading the message: {exc!r}",),
        )


def parse_id_acte(id_acte: str, errors: list[str] | None = None) -> ActKey | None:
    """The act's key inside an IDActe ``DDD-SIREN-YYYYMMDD-NUMERO-NN``; None if unreadable."""
    parts = id_acte.strip().split("-")
    if len(parts) < 5 or not parts[1].isdigit():
        _note(errors, f"IDActe {id_acte!r} does not follow DDD-SIREN-YYYYMMDD-NUMERO-NN")
        return None
    decision = _to_date(parts[2], f"IDActe {id_acte!r} date", errors)
    nature = _NATURE_BY_ABBREV.get(parts[-1])
    if nature is None:
        _note(errors, f"IDActe {id_acte!r} ends with an unknown nature {parts[-1]!r}")
    return ActKey(parts[1], "-".join(parts[3:-1]) or None, decision, nature)


def key_from_file_name(
    filename: str, errors: list[str] | None = None
) -> tuple[ActKey | None, str | None]:
    """The act's key and the message code (``T-S``) in an ACTES file name, or (None, None)."""
    match = _FILE_NAME.match(PureWindowsPath(filename).name)
    if match is None:
        return None, None
    parts = match.groupdict()
    decision = _to_date(parts["date"], f"file name {filename!r} date", errors) if parts["date"] else None
    nature = _NATURE_BY_ABBREV.get(parts["nn"]) if parts["nn"] else None
    if parts["nn"] and nature is None:
        _note(errors, f"file name {filename!r} has an unknown nature {parts['nn']!r}")
    key = ActKey(parts["siren"] or None, parts["numero"] or None, decision, nature)
    return _none_if_empty(key), f"{parts['t']}-{parts['s']}"


class _Reader:
    """One pass over one message; collects what it finds and what it could not read."""

    def __init__(self, raw: bytes, filename: str | None) -> None:
        self.raw = raw
        self.filename = filename
        self.errors: list[str] = []
        self.dates: dict[str, date] = {}

    def read(self) -> MinistryMessage:
        root = self._parse_xml()
        kind = _local(root.tag) if root is not None else None
        if kind not in MESSAGE_CODES or kind == "MultiCanal":
            if _is_multicanal(self.raw):
                return self._multicanal()
            what = f"root element {kind!r}" if kind else "the message"
            self.errors.append(f"{what} is not a message the ministry sends")
            kind = "Unknown"
        elif root is not None and _namespace(root.tag) != ACTES_NS:
            self.errors.append(f"{kind} is not in the ACTES namespace {ACTES_NS!r}; read anyway")
        return self._xml_message(kind, root)

    def _parse_xml(self) -> Any:
        if not self.raw.strip():
            self.errors.append("the message is empty")
            return None
        try:
            root = _parse(self.raw, self.filename)
        except XmlRefused as exc:
            root = self._recover(exc)
        if root is not None:
            dtd = root.getroottree().docinfo.internalDTD
            if dtd is not None and list(dtd.entities()):
                self.errors.append("the message declares entities (DOCTYPE): they were not expanded")
        return root

    def _recover(self, exc: XmlRefused) -> Any:
        if exc.rule != "xml-well-formed":  # too large or too deep: nothing more is tried
            self.errors.append(f"not XML: {exc.message} [{exc.rule}]")
            return None
        exc_text = exc.detail
        if "encoding" in exc_text.lower() or "utf-8" in exc_text.lower():
            try:
                root = _parse(self.raw, self.filename, encoding="iso-8859-1")
                self.errors.append(f"wrong encoding{_bad_byte(self.raw)} ({exc_text}); read as ISO-8859-1")
                return root
            except XmlRefused:
                pass
        try:
            root = _parse(self.raw, self.filename, recover=True)
        except XmlRefused:
            root = None
        if root is None:
            self.errors.append(f"not XML: {exc_text}")
        else:
            self.errors.append(f"malformed XML: {exc_text}; read what could be recovered")
        return root

    def _xml_message(self, kind: str, root: Any) -> MinistryMessage:
        id_acte = infos = acte_recu = None
        anomaly_nature = detail = envelope_name = None
        file_names: tuple[str, ...] = ()
        if root is not None:
            infos = _child(root, "InfosCourrierPref")
            acte_recu = _child(root, "ActeRecu")
            id_acte = _attr(root, "IDActe") or (_attr(infos, "IDActe") if infos is not None else None)
            for owner in (root, infos):
                for name in ("DateReception", "DateCourrierPref"):
                    self._date(name, _attr(owner, name) if owner is not None else None)
            for name in _ROOT_DATE_ELEMENTS:
                self._date(name, self._text(_child(root, name)))
            if acte_recu is not None:
                sent = self._text(_child(acte_recu, "ClassificationDateVersion"))
                self._date("ClassificationDateVersion", sent)
            file_names = tuple(
                text for el in root.iter() if _local(el.tag) == "NomFichier" and (text := self._text(el))
            )
            detail = next(filter(None, (self._text(_child(root, n)) for n in _DETAIL_ELEMENTS)), None)
            if kind in ("AnomalieActe", "AnomalieEnveloppe"):
                anomaly_nature = self._anomaly_nature(kind, self._text(_child(root, "Nature")))
            if kind == "AnomalieEnveloppe":
                envelope_name = self._envelope_name(detail)
        key = self._act_key(kind, root, acte_recu, id_acte)
        code = MESSAGE_CODES.get(kind)
        if self.filename and code and code[0].isdigit():
            named_code = key_from_file_name(self.filename)[1]
            if named_code and named_code != code:
                self.errors.append(f"file name says {named_code} but the root element is {kind} ({code})")
        return MinistryMessage(
            kind, code, id_acte, key, envelope_name, self.dates, anomaly_nature, detail,
            file_names, self.filename, self.raw, tuple(self.errors),
        )

    def _act_key(self, kind: str, root: Any, acte_recu: Any, id_acte: str | None) -> ActKey | None:
        sources: list[ActKey | None] = []
        if acte_recu is not None:
            nature_text = _attr(acte_recu, "CodeNatureActe")
            nature = int(nature_text) if nature_text and nature_text.strip().isdigit() else None
            if nature_text and nature is None:
                self.errors.append(f"ActeRecu CodeNatureActe {nature_text!r} is not an integer")
            decision = _to_date(_attr(acte_recu, "Date"), "ActeRecu Date", self.errors)
            sources.append(ActKey(None, _attr(acte_recu, "NumeroInterne") or None, decision, nature))
        if id_acte:
            from_id = parse_id_acte(id_acte, self.errors)
            if sources and from_id and sources[0] is not None:
                self._compare(sources[0], from_id)
            sources.append(from_id)
        if self.filename:
            sources.append(key_from_file_name(self.filename, self.errors)[0])
        if root is not None and kind == "AnomalieEnveloppe":
            forms = [el for el in root.iter() if _local(el.tag) == "NomFichier"]
            if len(forms) == 1 and (name := self._text(forms[0])):
                sources.append(key_from_file_name(name)[0])
            idcl = next((el for el in root.iter() if _local(el.tag) == "IDCL"), None)
            sources.append(ActKey(_attr(idcl, "SIREN"), None, None, None) if idcl is not None else None)
        destinataire = _child(root, "Destinataire") if root is not None else None
        if destinataire is not None:
            sources.append(ActKey(_attr(destinataire, "SIREN"), None, None, None))
        return _none_if_empty(_merge([s for s in sources if s is not None]))

    def _compare(self, echoed: ActKey, from_id: ActKey) -> None:
        for name in ("numero_interne", "decision_date", "nature"):
            mine, theirs = getattr(echoed, name), getattr(from_id, name)
            if mine is not None and theirs is not None and mine != theirs:
                self.errors.append(f"ActeRecu {name} {mine!s} differs from the IDActe's {theirs!s}")

    def _anomaly_nature(self, kind: str, text: str | None) -> str | None:
        if text is None:
            self.errors.append(f"{kind} has no Nature")
        elif kind == "AnomalieEnveloppe" and text not in _ENVELOPE_ANOMALY_NATURES:
            self.errors.append(f"AnomalieEnveloppe Nature {text!r} is not in the schema's list; kept")
        elif kind == "AnomalieActe" and not re.fullmatch(r"[0-9]{3}", text):
            self.errors.append(f"AnomalieActe Nature {text!r} is not three digits; kept as received")
        return text

    def _envelope_name(self, detail: str | None) -> str | None:
        if self.filename:
            name = PureWindowsPath(self.filename).name
            if name.startswith("ANO_"):
                return name[4:].removesuffix(".xml")
        match = _ARCHIVE_IN_TEXT.search(detail or "")
        if match:
            return match.group(1)
        self.errors.append("envelope name unknown: neither an ANO_ file name nor an archive name in Detail")
        return None

    def _multicanal(self) -> MinistryMessage:
        text = _plain_text(self.raw)
        match = _ID_ACTE_IN_TEXT.search(text)
        id_acte = match.group(0) if match else None
        sources = [parse_id_acte(id_acte) if id_acte else None]
        if self.filename:
            sources.append(key_from_file_name(self.filename)[0])
        key = _none_if_empty(_merge([s for s in sources if s is not None]))
        self.errors = []  # the HTML is not expected to be XML: its parse errors are noise
        return MinistryMessage(
            "MultiCanal", "MC", id_acte, key, None, {}, None, text[:2000] or None, (),
            self.filename, self.raw, (),
        )

    def _date(self, name: str, value: str | None) -> None:
        parsed = _to_date(value, name, self.errors)
        if parsed is not None and name not in self.dates:
            self.dates[name] = parsed

    def _text(self, el: Any) -> str | None:
        """The element's text, entity references left out (never expanded)."""
        if el is None:
            return None
        parts = [el.text or ""]
        for child in el:
            if isinstance(child, etree._Entity):
                self.errors.append(f"entity reference {child.text} in {_local(el.tag)} was not expanded")
            elif isinstance(child.tag, str):
                parts.append(self._text(child) or "")
            parts.append(child.tail or "")
        return "".join(parts).strip() or None


_DECLARED = re.compile(rb"\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']")


def _bad_byte(raw: bytes) -> str:
    """`` (byte 0xe9 at byte offset 185 is not UTF-8)``: where the bytes leave the declared encoding."""
    declared = _DECLARED.match(raw)
    encoding = declared.group(1).decode() if declared else "UTF-8"
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        return f": byte 0x{raw[exc.start]:02x} at byte offset {exc.start} is not {encoding}"
    except LookupError:
        return f": {encoding!r} is not an encoding"
    return ""


def _parse(raw: bytes, filename: str | None, **options: Any) -> Any:
    """The message's root, read by the hardened parser; declared entities are noted, never expanded."""
    return safe_xml.parse(raw, name=filename, entities="keep", **options)


def _local(tag: Any) -> str:
    """``{ns}Name`` or ``prefix:Name`` (an undeclared prefix, recovered) → ``Name``."""
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2].rpartition(":")[2]


def _namespace(tag: str) -> str | None:
    return tag[1:].partition("}")[0] if tag.startswith("{") else None


def _attr(el: Any, name: str) -> str | None:
    """An attribute by local name, qualified (``actes:IDActe``) or not."""
    for key, value in el.attrib.items():
        if _local(key) == name:
            return str(value).strip()
    return None


def _child(el: Any, name: str) -> Any:
    return next((c for c in el if _local(c.tag) == name), None)


def _to_date(value: str | None, what: str, errors: list[str] | None) -> date | None:
    if not value:
        return None
    text = value.strip()
    match = re.fullmatch(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?", text)
    if match is None and re.fullmatch(r"[0-9]{8}", text):
        match = re.fullmatch(r"([0-9]{8})", text)
    try:
        if match is None:
            raise ValueError(text)
        return date.fromisoformat(match.group(1))
    except ValueError:
        _note(errors, f"{what}: {value!r} is not a date")
        return None


def _merge(keys: list[ActKey]) -> ActKey:
    def first(name: str) -> Any:
        return next((getattr(k, name) for k in keys if getattr(k, name) is not None), None)

    return ActKey(first("siren"), first("numero_interne"), first("decision_date"), first("nature"))


def _none_if_empty(key: ActKey | None) -> ActKey | None:
    if key is None or (key.siren, key.numero_interne, key.decision_date, key.nature) == (None,) * 4:
        return None
    return key


def _note(errors: list[str] | None, message: str) -> None:
    if errors is not None:
        errors.append(message)


def _plain_text(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("iso-8859-1")
    text = re.sub(r"<[^>]*>", " ", text)
    text = html.unescape(text).replace("\u2019", "'").replace("\xa0", " ")
    return re.sub(r"\s+", " ", text).strip()


def _is_multicanal(raw: bytes) -> bool:
    return _MULTICANAL.search(_plain_text(raw).lower()) is not None
