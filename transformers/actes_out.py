"""ACTES out: a canonical act → Acte message (1-1), EnveloppeCLMISILL and the ``.tar.gz``.

:func:`check_act` lists every rule the act breaks (standards.md §1.3-1.8 and S2LOW's
checks); :func:`build_archive` runs it, builds and validates both XML files and writes a
flat, deterministic tar.gz.  Names follow standards.md §1.8; text goes through the
ISO-8859-1 policy of :mod:`transformers.text_policy`.
"""

from __future__ import annotations

__all__ = [
    "Transmission",
    "archive_name",
    "build_acte_xml",
    "build_archive",
    "build_envelope_xml",
    "check_act",
    "envelope_name",
    "file_names_for",
    "message_name",
]

import gzip
import re
import tarfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from io import BytesIO
from typing import BinaryIO, Protocol

from lxml import etree

from bus.errors import DocumentError, Problem, ValidationFailed

from .actes_model import NATURE_DEFAULT_TYPE, NATURES, ActFile, CanonicalAct
from .actes_validate import ActesValidator, default_validator, extension_kind, sniff_kind
from .classification import Classification
from .text_policy import TextPolicy, check_latin1, to_latin1

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
INSEE = "http://xml.insee.fr/schema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"actes": NS, "insee": INSEE, "xsi": XSI}
SCHEMA_LOCATION = f"{NS} actesv1_1.xsd"
DECLARATION = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n'


@dataclass(frozen=True)
class Transmission:
    """What :func:`build_archive` wrote: names, the expected IDActe and the size."""

    archive_name: str  #: TRIGRAM-QUAD--SIREN--YYYYMMDD-N.tar.gz
    envelope_name: str  #: QUAD--SIREN--YYYYMMDD-N.xml
    message_name: str  #: DDD-SIREN-YYYYMMDD-NUMERO-NN-1-1_0.xml
    id_acte: str  #: expected IDActe DDD-SIREN-YYYYMMDD-NUMERO-NN
    file_names: dict[str, str]  #: ActFile.source_name -> name inside the archive
    size: int  #: bytes of the archive


class _Bad(Protocol):
    def __call__(self, ok: bool, field: str, rule: str, message: str, file: str = ...) -> None: ...


def _base(act: CanonicalAct) -> str:
    return f"{act.id_acte}-1-1"


def message_name(act: CanonicalAct) -> str:
    """``DDD-SIREN-YYYYMMDD-NUMERO-NN-1-1_0.xml`` (decision date)."""
    return f"{_base(act)}_0.xml"


def _file_name(act: CanonicalAct, file: ActFile, index: int) -> str:
    code = file.type_code or NATURE_DEFAULT_TYPE[act.nature]
    extension = file.source_name.rsplit(".", 1)[-1].lower()
    return f"{code}-{_base(act)}_{index}.{extension}"


def file_names_for(act: CanonicalAct) -> dict[str, str]:
    """Source name → archive name: main document ``CODE-..._1.ext``, annexes ``_2``, ``_3``..."""
    names = {act.main_document.source_name: _file_name(act, act.main_document, 1)}
    for index, annex in enumerate(act.annexes, start=2):
        names[annex.source_name] = _file_name(act, annex, index)
    return names


def envelope_name(quadrigram: str, siren: str, day: date, serial: int) -> str:
    """``QUAD--SIREN--YYYYMMDD-N.xml``; serial 1..9999."""
    if not 1 <= serial <= 9999:
        raise DocumentError(
            f"envelope serial {serial} is outside 1..9999", field="serial", rule="envelope-serial"
        )
    return f"{quadrigram}--{siren}--{day:%Y%m%d}-{serial}.xml"


def archive_name(trigram: str, envelope: str) -> str:
    """``TRIGRAM-<envelope without .xml>.tar.gz``."""
    return f"{trigram}-{envelope.removesuffix('.xml')}.tar.gz"


NUMERO_INTERNE = re.compile(r"[A-Z0-9][A-Z0-9_]{0,13}[A-Z0-9]")
SIREN = re.compile(r"[0-9]{9}")
DEPARTEMENT = re.compile(r"[09][0-9][AB0-9]")
COLLECTIVITE_NATURE = re.compile(r"[0-9]{2}")
TYPE_CODE = re.compile(r"[A-Z0-9_]{5}")
ID_ACTE = re.compile(r"[09][0-9][AB0-9]-[0-9]{9}-[0-9]{8}-[a-zA-Z0-9_]{1,15}-(DE|AR|AI|CC|BF|AU)")
EMAIL = re.compile(r"[_a-zA-Z0-9\-]+(\.[_a-zA-Z0-9\-]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*\.[a-zA-Z]{2,6}")


def check_act(
    act: CanonicalAct,
    *,
    today: date,
    classification: Classification | None = None,
    text_policy: TextPolicy = TextPolicy.TRANSLITERATE,
) -> list[Problem]:
    """Every rule ``act`` breaks, each a Problem naming the file, the field and the rule.

    Rules (field): siren-pattern, departement-pattern, arrondissement-range,
    collectivite-nature-pattern, decision-date-future, numero-interne-pattern, nature-range,
    matieres-count, matiere-range (matieres[i]), matieres-unknown, objet-length, objet-newline,
    latin-1 / xml-char (objet, referent_*), idacte-pattern, classification-date-outdated,
    return-emails-required, email-pattern; per file (main_document, annexes[i]): file-missing,
    file-extension, file-empty, file-type-mismatch, file-name-duplicate, main-document-type,
    annex-type, type-code-pattern / type-code-unknown (<field>.type_code).
    """
    src = act.sidecar or act.main_document.source_name
    problems: list[Problem] = []

    def bad(ok: bool, field: str, rule: str, message: str, file: str = src) -> None:
        if not ok:
            problems.append(Problem(message, file=file, field=field, rule=rule))

    bad(bool(SIREN.fullmatch(act.siren)), "siren", "siren-pattern", f"SIREN {act.siren!r} must be 9 digits")
    bad(
        bool(DEPARTEMENT.fullmatch(act.departement)),
        "departement",
        "departement-pattern",
        f"Departement {act.departement!r} must be 3 characters such as 034, 02A, 974",
    )
    bad(
        type(act.arrondissement) is int and 0 <= act.arrondissement <= 9,
        "arrondissement",
        "arrondissement-range",
        f"Arrondissement {act.arrondissement!r} must be one digit 0-9",
    )
    bad(
        bool(COLLECTIVITE_NATURE.fullmatch(act.collectivite_nature)),
        "collectivite_nature",
        "collectivite-nature-pattern",
        f"IDCL Nature {act.collectivite_nature!r} must be 2 digits",
    )
    bad(
        act.decision_date <= today,
        "decision_date",
        "decision-date-future",
        f"decision date {act.decision_date} is in the future (today is {today})",
    )
    bad(
        bool(NUMERO_INTERNE.fullmatch(act.numero_interne)),
        "numero_interne",
        "numero-interne-pattern",
        f"NumeroInterne {act.numero_interne!r} must be 2-15 of A-Z, 0-9, _ without a leading or trailing _",
    )
    nature_ok = act.nature in NATURES
    bad(nature_ok, "nature", "nature-range", f"CodeNatureActe {act.nature!r} must be 1 to 6")
    _check_matieres(act, classification, bad)
    _check_text(act, text_policy, src, problems, bad)
    if act.precedent_id_acte is not None:
        bad(
            bool(ID_ACTE.fullmatch(act.precedent_id_acte)),
            "precedent_id_acte",
            "idacte-pattern",
            f"PrecedentIdentifiantActe {act.precedent_id_acte!r} is not an IDActe "
            "DDD-SIREN-YYYYMMDD-NUMERO-NN",
        )
    if classification is not None and classification.date is not None:
        bad(
            act.classification_date == classification.date,
            "classification_date",
            "classification-date-outdated",
            f"ClassificationDateVersion {act.classification_date} differs from the classification "
            f"in force ({classification.date}); the préfecture would refuse it",
        )
    bad(
        bool(act.return_emails),
        "return_emails",
        "return-emails-required",
        "at least one return e-mail address (AdressesRetour) is required",
    )
    for index, email in enumerate(act.return_emails):
        bad(
            bool(EMAIL.fullmatch(email)),
            f"return_emails[{index}]",
            "email-pattern",
            f"{email!r} is not an e-mail",
        )
    if act.referent_email:
        bad(
            bool(EMAIL.fullmatch(act.referent_email)),
            "referent_email",
            "email-pattern",
            f"{act.referent_email!r} is not an e-mail",
        )
    _check_files(act, classification if nature_ok else None, nature_ok, problems, bad)
    return problems


def _check_matieres(act: CanonicalAct, classification: Classification | None, bad: _Bad) -> None:
    codes = act.matieres
    bad(
        2 <= len(codes) <= 5, "matieres", "matieres-count", f"{len(codes)} matière code(s); 2 to 5 are needed"
    )
    valid = True
    for index, code in enumerate(codes):
        ok = type(code) is int and code >= 0
        valid = valid and ok
        bad(
            ok,
            f"matieres[{index}]",
            "matiere-range",
            f"CodeMatiere{index + 1} {code!r} must be an integer >= 0",
        )
    if classification is not None and valid and codes:
        bad(
            classification.has_matieres(tuple(codes)),
            "matieres",
            "matieres-unknown",
            f"matière {'.'.join(map(str, codes))} is not in the classification of {classification.date}",
        )


def _check_text(act: CanonicalAct, policy: TextPolicy, src: str, problems: list[Problem], bad: _Bad) -> None:
    for field in ("objet", "referent_name", "referent_phone"):
        value = getattr(act, field)
        if value:
            problems.extend(check_latin1(value, policy=policy, field=field, file=src))
    try:
        objet = to_latin1(act.objet, policy=policy, field="objet")
    except DocumentError:
        objet = act.objet
    bad(
        1 <= len(objet) <= 499,
        "objet",
        "objet-length",
        f"Objet has {len(objet)} characters; 1 to 499 are allowed",
    )
    bad("\n" not in objet and "\r" not in objet, "objet", "objet-newline", "Objet must be on one line")


def _check_files(
    act: CanonicalAct,
    classification: Classification | None,
    nature_ok: bool,
    problems: list[Problem],
    bad: _Bad,
) -> None:
    allowed_codes = classification.type_codes_for(act.nature) if classification else None
    main_kind = None
    entries = [
        ("main_document", act.main_document),
        *((f"annexes[{i}]", a) for i, a in enumerate(act.annexes)),
    ]
    seen: set[str] = set()
    for field, file in entries:
        name = file.source_name
        bad(name not in seen, field, "file-name-duplicate", "another file of the act has the same name", name)
        seen.add(name)
        kind = _file_kind(file, field, bad)
        if field == "main_document":
            main_kind = kind
            budget = act.nature == 5 and tuple(act.matieres[:2]) == (7, 1)
            allowed = " or XML" if budget else " (XML only for nature 5, matière 7.1)"
            bad(
                kind in (None, "pdf") or (kind == "xml" and budget),
                field,
                "main-document-type",
                f"the act document must be PDF{allowed}, not {kind}",
                name,
            )
        elif main_kind == "xml":
            bad(
                kind in (None, "pdf"),
                field,
                "annex-type",
                f"with an XML act, annexes must be PDF, not {kind}",
                name,
            )
        if file.type_code is not None:
            bad(
                bool(TYPE_CODE.fullmatch(file.type_code)),
                f"{field}.type_code",
                "type-code-pattern",
                f"piece type {file.type_code!r} must be 5 of A-Z, 0-9, _ (such as 99_DE)",
                name,
            )
        code = file.type_code or (NATURE_DEFAULT_TYPE[act.nature] if nature_ok else None)
        if allowed_codes is not None and code is not None:
            bad(
                code in allowed_codes,
                f"{field}.type_code",
                "type-code-unknown",
                f"piece type {code} is not allowed for nature {act.nature} by the classification",
                name,
            )


def _file_kind(file: ActFile, field: str, bad: _Bad) -> str | None:
    """The file's kind (pdf, xml, png, jpeg) when extension and content agree, else None and a problem."""
    name = file.source_name
    try:
        with file.path.open("rb") as stream:
            head = stream.read(1024)
    except OSError as exc:
        bad(False, field, "file-missing", f"cannot read {file.path}: {exc.strerror}", name)
        return None
    by_name, by_content = extension_kind(name), sniff_kind(head)
    bad(
        by_name is not None,
        field,
        "file-extension",
        "extension must be .pdf, .xml, .png, .jpg or .jpeg",
        name,
    )
    bad(bool(head), field, "file-empty", "the file is empty", name)
    if by_name is None or not head:
        return None
    bad(
        by_content == by_name,
        field,
        "file-type-mismatch",
        f"the name says {by_name} but the content is {by_content or 'not PDF, XML, PNG or JPEG'}",
        name,
    )
    return by_name if by_content == by_name else None


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _root(tag: str) -> etree._Element:
    root = etree.Element(_q(tag), nsmap=NSMAP)
    root.set(f"{{{XSI}}}schemaLocation", SCHEMA_LOCATION)
    return root


def _serialize(root: etree._Element) -> bytes:
    body: bytes = etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False, pretty_print=True)
    return DECLARATION + body


def _fichier(parent: etree._Element, tag: str, name: str) -> None:
    etree.SubElement(etree.SubElement(parent, _q(tag)), _q("NomFichier")).text = name


def build_acte_xml(act: CanonicalAct, file_names: dict[str, str], *, text_policy: TextPolicy) -> bytes:
    """The Acte message (1-1), ISO-8859-1, children in the order of standards.md §1.7."""
    root = _root("Acte")
    root.set(_q("Date"), act.decision_date.isoformat())
    root.set(_q("NumeroInterne"), to_latin1(act.numero_interne, policy=text_policy, field="numero_interne"))
    root.set(_q("CodeNatureActe"), str(act.nature))
    for level, code in enumerate(act.matieres, start=1):
        etree.SubElement(root, _q(f"CodeMatiere{level}")).set(_q("CodeMatiere"), str(code))
    etree.SubElement(root, _q("Objet")).text = to_latin1(act.objet, policy=text_policy, field="objet")
    if act.precedent_id_acte:
        etree.SubElement(root, _q("PrecedentIdentifiantActe")).set(_q("IDActe"), act.precedent_id_acte)
    etree.SubElement(root, _q("ClassificationDateVersion")).text = act.classification_date.isoformat()
    _fichier(root, "Document", file_names[act.main_document.source_name])
    annexes = etree.SubElement(root, _q("Annexes"))
    annexes.set(_q("Nombre"), str(len(act.annexes)))
    for annex in act.annexes:
        _fichier(annexes, "Annexe", file_names[annex.source_name])
    etree.SubElement(root, _q("DocumentPapier")).text = "O" if act.document_papier else "N"
    return _serialize(root)


def build_envelope_xml(act: CanonicalAct, message_names: list[str], *, text_policy: TextPolicy) -> bytes:
    """The EnveloppeCLMISILL listing ``message_names``; DocumentError without a return address."""
    if not act.return_emails:
        raise DocumentError(
            "the envelope needs at least one return e-mail address (AdressesRetour/Email)",
            field="return_emails",
            rule="return-emails-required",
        )
    if not message_names:
        raise DocumentError(
            "the envelope must list at least one message", field="message_names", rule="envelope-messages"
        )
    root = _root("EnveloppeCLMISILL")
    emetteur = etree.SubElement(root, _q("Emetteur"))
    idcl = etree.SubElement(emetteur, _q("IDCL"))
    idcl.set(f"{{{INSEE}}}SIREN", act.siren)
    idcl.set(_q("Departement"), act.departement)
    idcl.set(_q("Arrondissement"), str(act.arrondissement))
    idcl.set(_q("Nature"), act.collectivite_nature)
    referent = [
        ("Nom", act.referent_name, "referent_name"),
        ("Telephone", act.referent_phone, "referent_phone"),
        ("Email", act.referent_email, "referent_email"),
    ]
    if any(value for _, value, _ in referent):
        element = etree.SubElement(emetteur, _q("Referent"))
        for tag, value, field in referent:
            if value:
                etree.SubElement(element, _q(tag)).text = to_latin1(value, policy=text_policy, field=field)
    adresses = etree.SubElement(root, _q("AdressesRetour"))
    for index, email in enumerate(act.return_emails):
        etree.SubElement(adresses, _q("Email")).text = to_latin1(
            email, policy=text_policy, field=f"return_emails[{index}]"
        )
    formulaires = etree.SubElement(root, _q("FormulairesEnvoyes"))
    for name in message_names:
        _fichier(formulaires, "Formulaire", name)
    return _serialize(root)


class _CountingWriter:
    """Writes through to ``out`` and refuses to go past ``limit`` bytes."""

    def __init__(self, out: BinaryIO, limit: int, name: str) -> None:
        self.out, self.limit, self.name, self.size = out, limit, name, 0

    def write(self, data: bytes) -> int:
        if self.size > self.limit:  # already failed: let the first error propagate
            return len(data)
        self.size += len(data)
        if self.size > self.limit:
            raise DocumentError(
                f"archive exceeds the size limit of {self.limit} bytes; send fewer or smaller annexes",
                path=self.name,
                field="size",
                rule="archive-max-size",
            )
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_NAME_PART = re.compile(r"[A-Za-z0-9]+")


def build_archive(
    act: CanonicalAct,
    out: BinaryIO,
    *,
    quadrigram: str,
    trigram: str,
    serial: int,
    generation_date: date,
    today: date | None = None,
    text_policy: TextPolicy = TextPolicy.TRANSLITERATE,
    max_size: int = 150 * 1024 * 1024,
    classification: Classification | None = None,
    validator: ActesValidator | None = None,
) -> Transmission:
    """Check, build, validate and write the act's archive to ``out``.

    Raises ValidationFailed listing every problem, or DocumentError for the size limit
    (``out`` then holds a partial archive: discard it).
    """
    for label, value, length in (("quadrigram", quadrigram, 4), ("trigram", trigram, 3)):
        if len(value) != length or not _NAME_PART.fullmatch(value):
            raise DocumentError(
                f"{label} {value!r} must be {length} letters or digits", field=label, rule=f"{label}-pattern"
            )
    envelope = envelope_name(quadrigram, act.siren, generation_date, serial)
    archive = archive_name(trigram, envelope)
    problems = check_act(
        act, today=today or date.today(), classification=classification, text_policy=text_policy
    )
    if problems:
        raise ValidationFailed(
            f"{len(problems)} problem(s) in act {act.numero_interne}",
            problems=problems,
            path=archive,
            field=problems[0].field,
            rule=problems[0].rule,
        )
    names = file_names_for(act)
    message = message_name(act)
    acte_xml = build_acte_xml(act, names, text_policy=text_policy)
    envelope_xml = build_envelope_xml(act, [message], text_policy=text_policy)
    validator = validator or default_validator()
    problems = validator.validate_xml(envelope_xml, envelope) + validator.validate_xml(acte_xml, message)
    if problems:
        raise ValidationFailed(
            f"{len(problems)} schema problem(s) in the ACTES messages",
            problems=problems,
            path=archive,
            field=problems[0].field,
            rule=problems[0].rule,
        )
    mtime = int(
        datetime(generation_date.year, generation_date.month, generation_date.day, tzinfo=UTC).timestamp()
    )
    writer = _CountingWriter(out, max_size, archive)
    with gzip.GzipFile(filename="", mode="wb", fileobj=writer, mtime=mtime) as gz:  # type: ignore[arg-type]
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in ((envelope, envelope_xml), (message, acte_xml)):
                tar.addfile(_tarinfo(name, len(data), mtime), BytesIO(data))
            for file in (act.main_document, *act.annexes):
                _add_file(tar, file, names[file.source_name], mtime)
    return Transmission(
        archive_name=archive,
        envelope_name=envelope,
        message_name=message,
        id_acte=act.id_acte,
        file_names=names,
        size=writer.size,
    )


def _add_file(tar: tarfile.TarFile, file: ActFile, name: str, mtime: int) -> None:
    """Stream one document into the archive (never all of it in memory)."""
    try:
        with file.path.open("rb") as stream:
            size = file.path.stat().st_size
            tar.addfile(_tarinfo(name, size, mtime), stream)
    except OSError as exc:
        raise DocumentError(
            f"cannot read {file.source_name}: {exc}", path=file.source_name, rule="file-readable"
        ) from exc
