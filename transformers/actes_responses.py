"""The collectivité's answers to the préfecture's letters, as ACTES archives (standards.md §1.9).

The préfecture writes about an acknowledged act: a courrier simple (2-1), a request for
documents (3-1), a letter of observations (4-1), each carrying the act's ``IDActe`` and the
letter's date (``DateCourrierPref``).  The collectivité answers with a *response bundle*:
a sidecar in Hent's own JSON format and the documents it names, dropped in a folder::

    {"reponse": {
        "acte": "044-214400152-20260112-DEL2026_042-DE",
        "type": "3-4",
        "date_courrier": "2026-11-25",
        "documents": [{"fichier": "rapport.pdf"}, {"fichier": "avis.pdf"}]
    }}

``acte`` (required)
    the IDActe of the act answered for, ``DDD-SIREN-YYYYMMDD-NUMERO-NN``.
``type`` (required)
    the answer's code (root element in actesv1_1.xsd):

    ====  ===============================  ====  ===============================
    code  root element                     of    documents
    ====  ===============================  ====  ===============================
    2-2   ReponseCourrierSimple            2-1   exactly one (``Document``)
    3-2   ARDemandePieceComplementaire     3-1   none (attributes only)
    3-3   RefusPieceComplementaire         3-1   exactly one (``Document``)
    3-4   PieceComplementaire              3-1   one or more (``Documents/Document``)
    4-2   ARLettreObservations             4-1   none (attributes only)
    4-3   RejetLettreObservations          4-1   exactly one (``Document``)
    4-4   ReponseLettreObservations        4-1   exactly one (``Document``)
    ====  ===============================  ====  ===============================
``date_courrier`` (optional)
    the DateCourrierPref of the letter answered, ``YYYY-MM-DD``; without it, the route
    answers the latest letter of that kind received for the act.
``documents``
    the documents in order, each ``{"fichier": "<file name in the bundle>"}``: a plain
    file name (no folder), ``.pdf``, ``.xml``, ``.png``, ``.jpg`` or ``.jpeg``, whose
    content agrees with its extension (the file checks of :mod:`transformers.actes_rules`).

The sidecar is UTF-8.  Any other key is refused.  :func:`read_response` reports every
problem at once in a `DocumentError` naming the sidecar, the field (``reponse.type``,
``reponse.documents[1].fichier``...) and the rule: encoding, json-syntax, type, required,
unknown-key, text, single-value, response-type, idacte-pattern, date-format,
document-count, file-name, file-present, file-name-duplicate, file-missing,
file-extension, file-empty, file-type-mismatch.  :func:`response_members` gives the
document names to claim with the sidecar (plain names only; never raises).

:func:`build_response_archive` writes the archive like an act's (standards.md §1.8, §1.11):
a flat tar.gz ``TRIGRAM-QUAD--SIREN--YYYYMMDD-N.tar.gz`` holding the collectivité's
EnveloppeCLMISILL listing the message, the message ``<IDActe>-<code>_0.xml`` (attributes
IDActe and DateCourrierPref) and the documents ``<IDActe>-<code>_<n>.<ext>``, n from 1.
Both XML files are validated against Hent's ACTES schema before anything is written.
"""

from __future__ import annotations

__all__ = [
    "CANONICAL_RESPONSE_FORMAT",
    "DOCUMENT_COUNTS",
    "LETTER_OF",
    "RESPONSE_ROOTS",
    "ResponseRequest",
    "build_canonical_response",
    "build_response_archive",
    "build_response_xml",
    "check_response",
    "read_response",
    "response_members",
]

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

from bus.errors import DocumentError, Problem, ValidationFailed
from bus.names import is_safe_name
from bus.registry import suggest

from .actes_model import ActFile
from .actes_out import (
    DECLARATION,
    NS,
    NSMAP,
    SCHEMA_LOCATION,
    XSI,
    Transmission,
    archive_name,
    build_collectivite_envelope_xml,
    check_application_names,
    envelope_name,
    write_archive,
)
from .actes_rules import ID_ACTE, _file_kind
from .actes_validate import ActesValidator, default_validator
from .sidecar import Sidecar
from .sidecar_values import convert
from .text_policy import TextPolicy

#: answer code → root element of its message (actesv1_1.xsd)
RESPONSE_ROOTS: dict[str, str] = {
    "2-2": "ReponseCourrierSimple",
    "3-2": "ARDemandePieceComplementaire",
    "3-3": "RefusPieceComplementaire",
    "3-4": "PieceComplementaire",
    "4-2": "ARLettreObservations",
    "4-3": "RejetLettreObservations",
    "4-4": "ReponseLettreObservations",
}
#: answer code → code of the préfecture's letter it answers
LETTER_OF: dict[str, str] = {
    "2-2": "2-1", "3-2": "3-1", "3-3": "3-1", "3-4": "3-1", "4-2": "4-1", "4-3": "4-1", "4-4": "4-1",
}
#: answer code → (fewest, most) documents; most None: no limit
DOCUMENT_COUNTS: dict[str, tuple[int, int | None]] = {
    "2-2": (1, 1), "3-2": (0, 0), "3-3": (1, 1), "3-4": (1, None), "4-2": (0, 0), "4-3": (1, 1), "4-4": (1, 1),
}
#: the format of the answer sent to a platform that builds the archive itself
CANONICAL_RESPONSE_FORMAT = "hent-canonical-response/1"
_KEYS = ("reponse",)
_RESPONSE_KEYS = ("acte", "type", "date_courrier", "documents")
_DOCUMENT_KEYS = ("fichier",)


@dataclass(frozen=True)
class ResponseRequest:
    """A response bundle, read: the answer ``code`` for act ``id_acte`` and its documents."""

    id_acte: str  #: the act answered for, DDD-SIREN-YYYYMMDD-NUMERO-NN (actes:IDActe)
    code: str  #: 2-2, 3-2, 3-3, 3-4, 4-2, 4-3 or 4-4
    letter_date: date | None  #: DateCourrierPref of the letter answered, when the bundle gives it
    documents: tuple[ActFile, ...]  #: in order: ``_1``, ``_2``... in the archive
    sidecar: str  #: the sidecar's name, for error messages

    @property
    def letter_code(self) -> str:
        """The code of the préfecture's letter this answers (2-1, 3-1 or 4-1)."""
        return LETTER_OF[self.code]

    @property
    def siren(self) -> str:
        """The collectivité's SIREN, from the IDActe."""
        return self.id_acte.split("-")[1]

    @property
    def root(self) -> str:
        """The message's root element (ReponseCourrierSimple...)."""
        return RESPONSE_ROOTS[self.code]


def _plain_name(name: str) -> bool:
    """A plain file name (:func:`bus.names.is_safe_name`) with no surrounding blanks."""
    return is_safe_name(name) and name == name.strip()


def response_members(sidecar: str, data: bytes) -> list[str]:
    """The documents' file names the sidecar lists (plain names only); [] when it cannot be read."""
    try:
        reponse = Sidecar(sidecar, data, "json").context.get("reponse")
        names = [item.get("fichier") for item in reponse.get("documents") or [] if isinstance(item, dict)]
    except (AttributeError, TypeError):
        return []
    return [name for name in dict.fromkeys(names) if isinstance(name, str) and _plain_name(name)]


class _Reading:
    """Problems found so far in one sidecar; every one names the sidecar, a field and a rule."""

    def __init__(self, sidecar: str) -> None:
        self.sidecar = sidecar
        self.problems: list[Problem] = []

    def bad(self, ok: bool, field: str, rule: str, message: str, file: str | None = None) -> None:
        if not ok:
            where = f"{file}: " if file else ""
            self.problems.append(Problem(f"{where}{message}", file=self.sidecar, field=field, rule=rule))

    def keys(self, value: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in value:
            self.bad(key in allowed, f"{where}{key}", "unknown-key",
                     f"unknown key {key!r}; known: {', '.join(allowed)}{suggest(key, allowed)}")

    def text(self, value: Any, field: str, *, required: bool) -> str | None:
        if value is None or value == "":
            self.bad(not required, field, "required", f"{field} is required")
            return None
        converted, problems = convert(value, "text", None, ())
        for rule, message in problems:
            self.bad(False, field, rule, message)
        return converted if isinstance(converted, str) else None

    def fail(self) -> DocumentError:
        first = self.problems[0]
        return DocumentError(
            f"{self.sidecar}: {len(self.problems)} problem(s) in the response sidecar",
            problems=self.problems, path=self.sidecar, field=first.field, rule=first.rule,
        )


def read_response(sidecar: str, data: bytes, files: dict[str, Path]) -> ResponseRequest:
    """The response the sidecar describes, its documents taken from ``files`` (name → path in the
    bundle); a `DocumentError` lists every problem (see the module's docstring)."""
    parsed = Sidecar(sidecar, data, "json")
    if parsed.problems:
        raise DocumentError(f"{sidecar}: the response sidecar cannot be read", problems=parsed.problems,
                            path=sidecar, field=parsed.problems[0].field, rule=parsed.problems[0].rule)
    reading = _Reading(sidecar)
    top = parsed.context
    if not isinstance(top, dict):
        reading.bad(False, "reponse", "type", 'the sidecar must be a JSON object {"reponse": {...}}')
        raise reading.fail()
    reading.keys(top, _KEYS, "")
    reponse = top.get("reponse")
    if not isinstance(reponse, dict):
        rule = "required" if reponse is None else "type"
        reading.bad(False, "reponse", rule, '"reponse" must be an object with acte, type and documents')
        raise reading.fail()
    reading.keys(reponse, _RESPONSE_KEYS, "reponse.")
    id_acte = reading.text(reponse.get("acte"), "reponse.acte", required=True)
    code = reading.text(reponse.get("type"), "reponse.type", required=True)
    letter_date = None
    if reponse.get("date_courrier") is not None:
        letter_date, problems = convert(reponse["date_courrier"], "date", None, ("%Y-%m-%d",))
        for rule, message in problems:
            reading.bad(False, "reponse.date_courrier", rule, message)
    listed = reponse.get("documents")
    if id_acte is not None and code is not None:
        _check_identity(reading, id_acte, code, len(_items(listed)))
    documents = _documents(reading, listed, files)
    if id_acte is not None and code is not None and not reading.problems:
        return ResponseRequest(id_acte, code, letter_date, tuple(documents), sidecar)
    raise reading.fail()


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _documents(reading: _Reading, value: Any, files: dict[str, Path]) -> list[ActFile]:
    """The documents listed, each found in the bundle; problems recorded."""
    if value is not None and not isinstance(value, list):
        reading.bad(False, "reponse.documents", "type", 'documents must be a list of {"fichier": "<name>"}')
        return []
    documents: list[ActFile] = []
    seen: set[str] = set()
    for index, item in enumerate(_items(value)):
        where = f"reponse.documents[{index}]"
        if not isinstance(item, dict):
            reading.bad(False, where, "type", f'each document is an object {{"fichier": "<name>"}}, not {item!r}')
            continue
        reading.keys(item, _DOCUMENT_KEYS, f"{where}.")
        name = reading.text(item.get("fichier"), f"{where}.fichier", required=True)
        if name is None:
            continue
        if not _plain_name(name):
            reading.bad(False, f"{where}.fichier", "file-name",
                        f"{name!r} must be a plain file name of the bundle, without a folder")
            continue
        reading.bad(name not in seen, f"{where}.fichier", "file-name-duplicate",
                    f"{name!r} is listed twice")
        seen.add(name)
        path = files.get(name)
        if path is None:
            known = ", ".join(sorted(files)) or "none"
            reading.bad(False, f"{where}.fichier", "file-present",
                        f"{name!r} is named by the sidecar but is not in the bundle (files: {known})")
            continue
        document = ActFile(source_name=name, path=path)
        _file_kind(document, f"{where}.fichier", reading.bad)
        documents.append(document)
    return documents


def check_response(request: ResponseRequest) -> list[Problem]:
    """Every rule ``request`` breaks: response-type, idacte-pattern, document-count and, per document,
    the file checks of :mod:`transformers.actes_rules` (file-missing, file-extension, file-empty,
    file-type-mismatch)."""
    reading = _Reading(request.sidecar)
    _check_identity(reading, request.id_acte, request.code, len(request.documents))
    for index, document in enumerate(request.documents):
        _file_kind(document, f"reponse.documents[{index}].fichier", reading.bad)
    return reading.problems


def _check_identity(reading: _Reading, id_acte: str, code: str, count: int) -> None:
    """The answer's code, its IDActe, and the number of documents its code takes."""
    if code not in RESPONSE_ROOTS:
        answers = [answer for answer, letter in LETTER_OF.items() if letter == code]
        hint = f"; {code} is the préfecture's letter: answer it with {', '.join(answers)}" if answers else ""
        reading.bad(False, "reponse.type", "response-type",
                    f"type {code!r} is not an answer code ({', '.join(RESPONSE_ROOTS)}){hint}")
    reading.bad(bool(ID_ACTE.fullmatch(id_acte)), "reponse.acte", "idacte-pattern",
                f"{id_acte!r} is not an IDActe DDD-SIREN-YYYYMMDD-NUMERO-NN (such as "
                "044-214400152-20260112-DEL2026_042-DE)")
    if code in DOCUMENT_COUNTS:
        fewest, most = DOCUMENT_COUNTS[code]
        if most == 0:
            expected = "no document (its message carries only IDActe and DateCourrierPref)"
        elif most is None:
            expected = f"at least {fewest} document"
        else:
            expected = "exactly one document"
        reading.bad(fewest <= count and (most is None or count <= most), "reponse.documents", "document-count",
                    f"{code} ({RESPONSE_ROOTS[code]}) takes {expected}; {count} given")


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def build_response_xml(request: ResponseRequest, letter_date: date, file_names: list[str]) -> bytes:
    """The answer's message: attributes IDActe and DateCourrierPref, then its Document(s)."""
    root = etree.Element(_q(request.root), nsmap=NSMAP)
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA_LOCATION)
    root.set(_q("IDActe"), request.id_acte)
    root.set(_q("DateCourrierPref"), letter_date.isoformat())
    parent = etree.SubElement(root, _q("Documents")) if request.code == "3-4" else root
    for name in file_names:
        etree.SubElement(etree.SubElement(parent, _q("Document")), _q("NomFichier")).text = name
    body: bytes = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False, pretty_print=True)
    return DECLARATION + body


def build_response_archive(
    request: ResponseRequest,
    out: BinaryIO,
    *,
    letter_date: date,
    departement: str,
    return_emails: tuple[str, ...],
    nature_collectivite: str,
    arrondissement: int,
    quadrigram: str,
    trigram: str,
    serial: int,
    generation_date: date,
    validator: ActesValidator | None = None,
    max_size: int = 150 * 1024 * 1024,
) -> Transmission:
    """Check, build, validate and write the answer's archive to ``out``.

    ``letter_date`` is the DateCourrierPref of the letter answered (it must equal the bundle's
    ``date_courrier`` when it gives one); ``departement``, ``arrondissement``,
    ``nature_collectivite`` and ``return_emails`` are the collectivité's (its IDCL and
    AdressesRetour).  Raises ValidationFailed listing every problem (the rules of
    :func:`check_response`, letter-date, idacte-departement: the IDActe is of another
    département, xsd), or DocumentError for the names (quadrigram-pattern, trigram-pattern,
    envelope-serial), the envelope (return-emails-required) and the size limit
    (archive-max-size; ``out`` then holds a partial archive: discard it).
    """
    check_application_names(quadrigram, trigram)
    _check_all(request, letter_date, departement)
    envelope = envelope_name(quadrigram, request.siren, generation_date, serial)
    archive = archive_name(trigram, envelope)
    message = f"{request.id_acte}-{request.code}_0.xml"
    names = _document_names(request)
    message_xml = build_response_xml(request, letter_date, list(names.values()))
    envelope_xml = build_collectivite_envelope_xml(
        siren=request.siren, departement=departement, arrondissement=arrondissement, nature=nature_collectivite,
        return_emails=return_emails, message_names=[message], text_policy=TextPolicy.FAIL,
    )
    validator = validator or default_validator()
    problems = validator.validate_xml(envelope_xml, envelope) + validator.validate_xml(message_xml, message)
    if problems:
        raise ValidationFailed(f"{len(problems)} schema problem(s) in the ACTES messages", problems=problems,
                               path=archive, field=problems[0].field, rule=problems[0].rule)
    size = write_archive(
        out, archive, [(envelope, envelope_xml), (message, message_xml)],
        [(document, names[document.source_name]) for document in request.documents],
        generation_date=generation_date, max_size=max_size,
    )
    return Transmission(archive_name=archive, envelope_name=envelope, message_name=message,
                        id_acte=request.id_acte, file_names=names, size=size)


def _check_all(request: ResponseRequest, letter_date: date, departement: str) -> None:
    """The rules of :func:`check_response`, the letter's date and the département: ValidationFailed."""
    problems = check_response(request)
    reading = _Reading(request.sidecar)
    if request.letter_date is not None:
        reading.bad(request.letter_date == letter_date, "reponse.date_courrier", "letter-date",
                    f"the bundle answers the letter of {request.letter_date}, not the one of {letter_date}")
    reading.bad(request.id_acte.startswith(f"{departement}-"), "reponse.acte", "idacte-departement",
                f"IDActe {request.id_acte} is not of département {departement} (the collectivité's)")
    problems += reading.problems
    if problems:
        raise ValidationFailed(f"{len(problems)} problem(s) in the answer {request.code} for {request.id_acte}",
                               problems=problems, path=request.sidecar, field=problems[0].field,
                               rule=problems[0].rule)


def _document_names(request: ResponseRequest) -> dict[str, str]:
    """Source name → ACTES name of each document: ``<IDActe>-<code>_<n>.<ext>`` from 1."""
    base = f"{request.id_acte}-{request.code}"
    return {document.source_name: f"{base}_{index}.{document.source_name.rsplit('.', 1)[-1].lower()}"
            for index, document in enumerate(request.documents, start=1)}


def build_canonical_response(
    request: ResponseRequest,
    out: BinaryIO,
    *,
    letter_date: date,
    letter_id: str,
    departement: str,
    shas: dict[str, str],
    validator: ActesValidator | None = None,
) -> str:
    """For a platform that builds the archive itself (S2LOW, Pastell): the checked answer as JSON
    (``hent-canonical-response/1``: ``id_acte``, ``siren``, ``code``, ``letter_code``, ``letter_date``,
    ``letter_id`` — the platform's id of the letter answered —, ``documents``: ``{name, source_name,
    sha256, size}``), its message built and validated like the archive's.  Returns the artifact's name."""
    _check_all(request, letter_date, departement)
    names = _document_names(request)
    message = f"{request.id_acte}-{request.code}_0.xml"
    problems = (validator or default_validator()).validate_xml(
        build_response_xml(request, letter_date, list(names.values())), message)
    if problems:
        raise ValidationFailed(f"{len(problems)} schema problem(s) in the answer", problems=problems, path=message,
                               field=problems[0].field, rule=problems[0].rule)
    documents = []
    for document in request.documents:
        sha = document.sha256 or shas.get(document.source_name)
        if sha is None:
            raise DocumentError(f"{document.source_name} is not in the spool", path=document.source_name,
                                rule="file-missing")
        documents.append({"name": names[document.source_name], "source_name": document.source_name,
                          "sha256": sha, "size": document.path.stat().st_size})
    out.write(json.dumps({
        "format": CANONICAL_RESPONSE_FORMAT, "id_acte": request.id_acte, "siren": request.siren,
        "code": request.code, "letter_code": request.letter_code, "letter_date": letter_date.isoformat(),
        "letter_id": letter_id, "documents": documents,
    }, ensure_ascii=False, indent=1).encode("utf-8"))
    return f"{request.id_acte}-{request.code}.json"
