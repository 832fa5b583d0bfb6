"""ACTES out: a canonical act → Acte message (1-1), EnveloppeCLMISILL and the ``.tar.gz``.

:func:`check_act` (from :mod:`transformers.actes_rules`) lists every rule the act breaks
(standards.md §1.3-1.8 and S2LOW's checks); :func:`build_archive` runs it, builds and
validates both XML files and writes a flat, deterministic tar.gz.  Names follow standards.md §1.8; text goes through the
ISO-8859-1 policy of :mod:`transformers.text_policy`.
"""

from __future__ import annotations

__all__ = [
    "Transmission",
    "archive_name",
    "build_acte_xml",
    "build_archive",
    "build_collectivite_envelope_xml",
    "build_envelope_xml",
    "check_act",
    "check_application_names",
    "envelope_name",
    "file_names_for",
    "message_name",
    "write_archive",
]

import re
import struct
import tarfile
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from io import BytesIO
from typing import BinaryIO

from lxml import etree

from bus.errors import DocumentError, ValidationFailed

from .actes_model import NATURE_DEFAULT_TYPE, ActFile, CanonicalAct
from .actes_rules import check_act
from .actes_validate import ActesValidator, default_validator
from .classification import Classification
from .text_policy import TextPolicy, to_latin1

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
    """The EnveloppeCLMISILL of ``act`` listing ``message_names``; DocumentError without a return address."""
    return build_collectivite_envelope_xml(
        siren=act.siren,
        departement=act.departement,
        arrondissement=act.arrondissement,
        nature=act.collectivite_nature,
        return_emails=act.return_emails,
        message_names=message_names,
        referent=(act.referent_name, act.referent_phone, act.referent_email),
        text_policy=text_policy,
    )


def build_collectivite_envelope_xml(
    *,
    siren: str,
    departement: str,
    arrondissement: int,
    nature: str,
    return_emails: tuple[str, ...],
    message_names: list[str],
    referent: tuple[str | None, str | None, str | None] = (None, None, None),
    text_policy: TextPolicy,
) -> bytes:
    """The EnveloppeCLMISILL of the collectivité IDCL (``siren``, ``departement``, ``arrondissement``,
    ``nature``) listing ``message_names``; ``referent`` is (Nom, Telephone, Email).

    DocumentError without a return address or a message.
    """
    if not return_emails:
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
    idcl.set(f"{{{INSEE}}}SIREN", siren)
    idcl.set(_q("Departement"), departement)
    idcl.set(_q("Arrondissement"), str(arrondissement))
    idcl.set(_q("Nature"), nature)
    fields = zip(("Nom", "Telephone", "Email"), referent, ("referent_name", "referent_phone", "referent_email"),
                 strict=True)
    present = [(tag, value, field) for tag, value, field in fields if value]
    if present:
        element = etree.SubElement(emetteur, _q("Referent"))
        for tag, value, field in present:
            etree.SubElement(element, _q(tag)).text = to_latin1(value, policy=text_policy, field=field)
    adresses = etree.SubElement(root, _q("AdressesRetour"))
    for index, email in enumerate(return_emails):
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


def _tarinfo(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_NAME_PART = re.compile(r"[A-Za-z0-9]+")


def check_application_names(quadrigram: str, trigram: str) -> None:
    """DocumentError unless the quadrigram is 4 and the trigram 3 letters or digits (standards.md §1.8)."""
    for label, value, length in (("quadrigram", quadrigram, 4), ("trigram", trigram, 3)):
        if len(value) != length or not _NAME_PART.fullmatch(value):
            raise DocumentError(
                f"{label} {value!r} must be {length} letters or digits", field=label, rule=f"{label}-pattern"
            )


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
    check_application_names(quadrigram, trigram)
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
    size = write_archive(
        out,
        archive,
        [(envelope, envelope_xml), (message, acte_xml)],
        [(file, names[file.source_name]) for file in (act.main_document, *act.annexes)],
        generation_date=generation_date,
        max_size=max_size,
    )
    return Transmission(
        archive_name=archive,
        envelope_name=envelope,
        message_name=message,
        id_acte=act.id_acte,
        file_names=names,
        size=size,
    )


def write_archive(
    out: BinaryIO,
    archive: str,
    xml: list[tuple[str, bytes]],
    files: list[tuple[ActFile, str]],
    *,
    generation_date: date,
    max_size: int,
) -> int:
    """Write the flat, deterministic tar.gz: the ``xml`` (name, bytes) first, then each file under its
    archive name, streamed; return its size.  DocumentError past ``max_size`` (discard ``out`` then)."""
    mtime = int(
        datetime(generation_date.year, generation_date.month, generation_date.day, tzinfo=UTC).timestamp()
    )
    writer = _CountingWriter(out, max_size, archive)
    gz = _GzipWriter(writer, mtime)
    with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:  # type: ignore[call-overload]
        tar.copybufsize = _COPY_CHUNK  # large chunks: zlib runs without the GIL
        for name, data in xml:
            tar.addfile(_tarinfo(name, len(data), mtime), BytesIO(data))
        for file, name in files:
            _add_file(tar, file, name, mtime)
    gz.close()
    return writer.size


_COPY_CHUNK = 1 << 20
_LEVEL = 9  #: what compresses is deflated at gzip's best level, as ``gzip -9`` (S2LOW) does
_STORED = 0  #: deflate's stored blocks: the bytes as they are
_PROBE_FROM = 16 * 1024  #: a write this long is probed; shorter ones (headers, the XML) are deflated
_PIECE = 128 * 1024  #: what one probe decides for
_PROBE_SLICES, _PROBE_SLICE = 2, 2048  #: 4 KiB sampled from across a piece
_WORTH_IT = 0.95  #: deflated when the sample shrinks below 95% of its size


class _GzipWriter:
    """One gzip member (RFC 1952) written as tarfile writes the archive into it.

    A signed PDF is mostly compressed streams that deflate cannot shrink: ``gzip -9`` spends
    about 30 ms per MiB on them to gain nothing.  So a large write (tarfile copies a file a MiB
    at a time) is probed 128 KiB at a time: a piece whose sample, deflated at level 1, does not
    shrink below ``_WORTH_IT`` of its size goes into deflate's *stored* blocks (the cost of a
    checksum); everything else — tar headers, the XML, what compresses — is deflated at level 9.
    Each change of level ends the current deflate stream with a sync flush (byte-aligned, not
    final) and starts another: the member holds one ordinary deflate stream (stored blocks are
    part of deflate, RFC 1951 §3.2.4), which ``gzip -t`` and ``tar tzf`` read.  The header is
    :class:`gzip.GzipFile`'s (no name, ``mtime``, best compression, OS unknown); the choice
    depends on the bytes alone, so the archive stays deterministic.
    """

    def __init__(self, out: _CountingWriter, mtime: int) -> None:
        self._out = out
        self._crc = 0
        self._size = 0
        self._level = _LEVEL
        self._deflate = _raw_deflate(_LEVEL)
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", mtime) + b"\x02\xff")

    def write(self, data: bytes) -> int:
        if len(data) < _PROBE_FROM:
            self._deflated(_LEVEL, data)
        else:  # probed a piece at a time: a file that is partly text and partly images gets both
            view = memoryview(data)
            for start in range(0, len(data), _PIECE):
                piece = view[start:start + _PIECE]
                self._deflated(_LEVEL if _shrinks(piece) else _STORED, piece)
        return len(data)

    def _deflated(self, level: int, data: bytes | memoryview) -> None:
        if level != self._level:
            self._out.write(self._deflate.flush(zlib.Z_SYNC_FLUSH))
            self._deflate, self._level = _raw_deflate(level), level
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._out.write(self._deflate.compress(data))

    def tell(self) -> int:  # tarfile asks where it starts
        return self._size

    def close(self) -> None:
        self._out.write(self._deflate.flush(zlib.Z_FINISH))
        self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))


def _raw_deflate(level: int) -> zlib._Compress:
    return zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL, 0)


def _shrinks(piece: memoryview) -> bool:
    """Whether deflate would shrink ``piece`` by more than 5%, from slices taken across it."""
    step = len(piece) // _PROBE_SLICES
    sample = b"".join(piece[i * step:i * step + _PROBE_SLICE] for i in range(_PROBE_SLICES))
    return len(zlib.compress(sample, 1)) < _WORTH_IT * len(sample)


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
