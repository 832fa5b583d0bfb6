"""Validate ACTES messages and archives against Hent's own schema (``schemas/actes/``).

The schema is compiled once per :class:`ActesValidator` (:func:`default_validator` keeps
one).  Nothing raises on bad input: every finding is a :class:`~bus.errors.Problem` with
the file, the line, an element path such as ``/actes:Acte/actes:Objet`` and the rule.
XML is parsed with no entity expansion and no network.
"""

from __future__ import annotations

__all__ = [
    "ARCHIVE_NAME",
    "DOCUMENT_NAME",
    "ENVELOPE_NAME",
    "MESSAGE_NAME",
    "SCHEMA_DIR",
    "ActesValidator",
    "default_validator",
    "extension_kind",
    "sniff_kind",
]

import re
import tarfile
import threading
from functools import lru_cache
from pathlib import Path

from lxml import etree

from bus.errors import ConfigError, Problem

from . import safe_xml
from .actes_model import NATURES
from .safe_xml import XmlRefused

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "actes"
NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
_MAX_XML = 10 * 1024 * 1024

#: TRIGRAM-QUAD--SIREN--YYYYMMDD-N.tar.gz (standards.md §1.8)
ARCHIVE_NAME = re.compile(
    r"(?P<trigram>[A-Za-z0-9]{3})-(?P<envelope>[A-Za-z0-9]{4}--(?P<siren>[0-9]{9})--[0-9]{8}-[1-9][0-9]{0,3})"
    r"\.tar\.gz"
)
#: QUAD--SIREN--YYYYMMDD-N.xml
ENVELOPE_NAME = re.compile(r"[A-Za-z0-9]{4}--(?P<siren>[0-9]{9})--[0-9]{8}-[1-9][0-9]{0,3}\.xml")
#: DDD-SIREN-YYYYMMDD-NUMERO-NN-T-S_0.xml (business message)
MESSAGE_NAME = re.compile(
    r"(?P<base>[09][0-9][AB0-9]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2}-[1-7]-[1-9])_0\.xml"
)
#: CODE-DDD-SIREN-YYYYMMDD-NUMERO-NN-T-S_n.ext (document or annex)
DOCUMENT_NAME = re.compile(
    r"(?P<code>[A-Z0-9_]{5})-(?P<base>[09][0-9][AB0-9]-[0-9]{9}-[0-9]{8}-[A-Za-z0-9_]{1,15}-[A-Z]{2}-[1-7]-[1-9])"
    r"_(?P<n>[1-9][0-9]*)\.(?P<ext>pdf|xml|png|jpg|jpeg)"
)

_EXTENSIONS = {"pdf": "pdf", "xml": "xml", "png": "png", "jpg": "jpeg", "jpeg": "jpeg"}


def extension_kind(name: str) -> str | None:
    """pdf, xml, png or jpeg from a file name's extension (any case); None otherwise."""
    return _EXTENSIONS.get(name.rsplit(".", 1)[-1].lower()) if "." in name else None


def sniff_kind(head: bytes) -> str | None:
    """pdf, xml, png or jpeg from a file's first bytes (its magic number); None otherwise."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if text.startswith(b"<"):
        return "xml"
    return None


class ActesValidator:
    """Hent's ACTES schema, compiled once; checks XML messages and whole archives."""

    def __init__(self, schema_dir: Path | None = None) -> None:
        self.schema_path = (schema_dir or SCHEMA_DIR) / "actes.xsd"
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        try:
            self._schema = etree.XMLSchema(etree.parse(str(self.schema_path), parser))
        except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
            raise ConfigError(
                f"cannot compile the ACTES schema: {exc}", path=str(self.schema_path), rule="schema-compiles"
            ) from exc
        self._lock = threading.Lock()

    def validate_xml(self, data: bytes, name: str) -> list[Problem]:
        """Problems of one XML message: malformed XML, a DOCTYPE, or each schema error."""
        try:
            document = safe_xml.parse(data, name=name).getroottree()
        except XmlRefused as exc:
            return list(exc.problems)
        if document.docinfo.doctype:
            return [
                Problem("a DOCTYPE is not allowed in an ACTES message", file=name, line=1, rule="xml-doctype")
            ]
        with self._lock:
            self._schema.validate(document)
            errors = list(self._schema.error_log)
        return [
            Problem(_readable(e.message), file=name, line=e.line, field=e.path or None, rule="xsd")
            for e in errors
        ]

    def validate_file(self, path: str | Path) -> list[Problem]:
        """Validate a ``.xml`` message or a ``.tar.gz`` archive."""
        path = Path(path)
        if path.name.endswith(".tar.gz"):
            return self.validate_archive(path)
        if path.suffix.lower() == ".xml":
            try:
                return self.validate_xml(path.read_bytes(), path.name)
            except OSError as exc:
                return [Problem(f"cannot read: {exc.strerror}", file=path.name, rule="file-readable")]
        return [Problem("expected a .xml message or a .tar.gz archive", file=path.name, rule="file-kind")]

    def validate_archive(self, path: str | Path) -> list[Problem]:
        """Check an ACTES archive: flat, named per §1.8, consistent, every XML valid."""
        path = Path(path)
        archive = path.name
        problems: list[Problem] = []
        match = ARCHIVE_NAME.fullmatch(archive)
        if not match:
            problems.append(
                Problem(
                    "archive name is not TRIGRAM-QUAD--SIREN--YYYYMMDD-N.tar.gz",
                    file=archive,
                    rule="archive-name",
                )
            )
        xml: dict[str, bytes] = {}
        heads: dict[str, bytes] = {}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if not member.isfile() or "/" in member.name or member.name in (".", ".."):
                        problems.append(
                            Problem(
                                "archive must hold plain files only, no folders or links",
                                file=archive,
                                field=member.name,
                                rule="archive-flat",
                            )
                        )
                        continue
                    if member.name in heads:
                        problems.append(
                            Problem(
                                "file present twice",
                                file=archive,
                                field=member.name,
                                rule="archive-duplicate",
                            )
                        )
                    stream = tar.extractfile(member)
                    assert stream is not None
                    if member.name.lower().endswith(".xml") and member.size <= _MAX_XML:
                        xml[member.name] = stream.read()
                        heads[member.name] = xml[member.name][:1024]
                    else:
                        heads[member.name] = stream.read(1024)
        except (OSError, EOFError, tarfile.TarError) as exc:
            return [
                *problems,
                Problem(f"cannot read the archive as tar.gz: {exc}", file=archive, rule="archive-readable"),
            ]
        envelope = (
            f"{match.group('envelope')}.xml"
            if match
            else next((name for name in heads if ENVELOPE_NAME.fullmatch(name)), None)
        )
        if envelope is None or envelope not in xml:
            problems.append(
                Problem(
                    f"envelope {envelope or 'QUAD--SIREN--YYYYMMDD-N.xml'} is missing",
                    file=archive,
                    rule="archive-envelope",
                )
            )
            return problems
        problems += self._check_contents(
            archive, envelope, xml, heads, match.group("siren") if match else None
        )
        return problems

    def _check_contents(
        self, archive: str, envelope: str, xml: dict[str, bytes], heads: dict[str, bytes], siren: str | None
    ) -> list[Problem]:
        problems = self.validate_xml(xml[envelope], envelope)
        root = _root(xml[envelope])
        if root is None or problems:
            return problems
        idcl = root.find(f"{{{NS}}}Emetteur/{{{NS}}}IDCL")
        departement = idcl.get(f"{{{NS}}}Departement") if idcl is not None else None
        if idcl is not None and siren and idcl.get("{http://xml.insee.fr/schema}SIREN") != siren:
            problems.append(
                Problem(
                    "IDCL SIREN differs from the SIREN in the archive name",
                    file=envelope,
                    field="/actes:EnveloppeCLMISILL/actes:Emetteur/actes:IDCL",
                    rule="envelope-siren",
                )
            )
        listed = [(e.text or "").strip() for e in root.iter(f"{{{NS}}}NomFichier")]
        used = {envelope, *listed}
        for name in listed:
            if name not in xml:
                problems.append(
                    Problem(
                        f"message {name} listed in the envelope is not in the archive",
                        file=archive,
                        field=name,
                        rule="archive-message-missing",
                    )
                )
                continue
            message_problems = self.validate_xml(xml[name], name)
            problems += message_problems
            message = _root(xml[name])
            if message is None or etree.QName(message).localname != "Acte":
                continue
            document, annexes = _acte_files(message)
            used.update([document, *annexes])  # even when the Acte breaks the schema: its files are not strays
            if not message_problems:
                problems += _check_acte(name, message, departement, siren, heads)
        for name in heads:
            if name not in used:
                rule = (
                    "archive-message-unlisted" if MESSAGE_NAME.fullmatch(name) else "archive-unexpected-file"
                )
                problems.append(
                    Problem(
                        "file in the archive is not referenced by the envelope or a message",
                        file=archive,
                        field=name,
                        rule=rule,
                    )
                )
        return problems


def _readable(message: str) -> str:
    """A libxml2 message with ``actes:``/``insee:`` prefixes instead of ``{namespace}``."""
    return message.replace(f"{{{NS}}}", "actes:").replace("{http://xml.insee.fr/schema}", "insee:")


def _root(data: bytes) -> etree._Element | None:
    try:
        return safe_xml.parse(data, name=None)
    except XmlRefused:
        return None


def _acte_files(acte: etree._Element) -> tuple[str, list[str]]:
    """The NomFichier of an Acte's main document and of each of its annexes, in order."""
    document = acte.findtext(f"{{{NS}}}Document/{{{NS}}}NomFichier", "").strip()
    annexes = [
        (e.text or "").strip() for e in acte.iterfind(f"{{{NS}}}Annexes/{{{NS}}}Annexe/{{{NS}}}NomFichier")
    ]
    return document, annexes


def _check_acte(
    name: str, acte: etree._Element, departement: str | None, siren: str | None, heads: dict[str, bytes]
) -> list[Problem]:
    """Problems with a schema-valid Acte's name and the files it references."""
    problems: list[Problem] = []
    nature = NATURES.get(int(acte.get(f"{{{NS}}}CodeNatureActe", "0")), "??")
    day = acte.get(f"{{{NS}}}Date", "").replace("-", "")
    base = f"{departement}-{siren}-{day}-{acte.get(f'{{{NS}}}NumeroInterne')}-{nature}-1-1"
    if siren and name != f"{base}_0.xml":
        problems.append(Problem(f"message name should be {base}_0.xml", file=name, rule="message-name"))
    document, annexes = _acte_files(acte)
    declared = acte.find(f"{{{NS}}}Annexes")
    if declared is not None and declared.get(f"{{{NS}}}Nombre") != str(len(annexes)):
        problems.append(
            Problem(
                f"Annexes Nombre is {declared.get(f'{{{NS}}}Nombre')} but {len(annexes)} listed",
                file=name,
                field="/actes:Acte/actes:Annexes",
                rule="annexes-count",
            )
        )
    for index, file_name in enumerate([document, *annexes], start=1):
        found = DOCUMENT_NAME.fullmatch(file_name)
        if not found or found.group("base") != name[: -len("_0.xml")] or found.group("n") != str(index):
            problems.append(
                Problem(
                    f"expected CODE-{name[: -len('_0.xml')]}_{index}.ext",
                    file=name,
                    field=file_name,
                    rule="document-name",
                )
            )
        if file_name not in heads:
            problems.append(
                Problem(
                    "file named in the act is not in the archive",
                    file=name,
                    field=file_name,
                    rule="archive-document-missing",
                )
            )
        elif sniff_kind(heads[file_name]) != extension_kind(file_name):
            problems.append(
                Problem(
                    f"content is {sniff_kind(heads[file_name]) or 'unknown'}, name says "
                    f"{extension_kind(file_name)}",
                    file=name,
                    field=file_name,
                    rule="file-type-mismatch",
                )
            )
    return problems


@lru_cache(maxsize=1)
def default_validator() -> ActesValidator:
    """One shared validator with the project's schema."""
    return ActesValidator()
