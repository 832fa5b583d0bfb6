"""Open an ACTES archive received by the legality simulator and say what is wrong with it.

The archive is read in memory (XML members only), its envelope found — the one the archive
name announces, else any ``QUAD--SIREN--YYYYMMDD-N.xml``, else any EnveloppeCLMISILL — and
the whole archive checked by :meth:`transformers.actes_validate.ActesValidator.validate_archive`
(on a temporary file named as received).  An archive with no readable, schema-valid envelope
cannot be answered by an AnomalieEnveloppe (which echoes the envelope): it is refused at once
with the fault ``INVALID_ARCHIVE``.

The envelope lists exactly one message: an Acte (1-1), or the collectivité's answer to a letter
of the préfecture (2-2, 3-2, 3-3, 3-4, 4-2, 4-3, 4-4, :data:`transformers.actes_responses.RESPONSE_ROOTS`).
An answer's documents are checked like an act's: named ``<IDActe>-<code>_<n>.<ext>`` from 1 in
the order of its message, present, their content what their extension says, and its IDActe of
the collectivité the envelope's IDCL names.
"""

from __future__ import annotations

__all__ = ["Inspection", "inspect_archive"]

import tarfile
import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from lxml import etree

from bus.errors import Problem
from simulators._xml import XmlRefused, parse
from simulators.legality_messages import ACTES_NS, INSEE_NS
from simulators.legality_soap import LegalityFault
from transformers.actes_model import NATURES
from transformers.actes_responses import RESPONSE_ROOTS
from transformers.actes_validate import ARCHIVE_NAME, ENVELOPE_NAME, ActesValidator, extension_kind, sniff_kind

NS = ACTES_NS
_MAX_XML = 10 * 1024 * 1024
#: root element (qualified) of an answer to a letter → its code
_RESPONSE_CODES = {f"{{{NS}}}{root}": code for code, root in RESPONSE_ROOTS.items()}


@dataclass
class Inspection:
    """What an archive holds, as far as it could be read."""

    envelope_name: str
    envelope: etree._Element
    siren: str
    departement: str
    acte: etree._Element | None
    problems: list[Problem]
    response: etree._Element | None = None  #: the answer to a letter (2-2...4-4) the archive carries

    @property
    def response_code(self) -> str | None:
        """2-2, 3-2, 3-3, 3-4, 4-2, 4-3 or 4-4 for an answer; None for an act."""
        return None if self.response is None else _RESPONSE_CODES[self.response.tag]

    @property
    def response_id_acte(self) -> str | None:
        return None if self.response is None else self.response.get(f"{{{NS}}}IDActe")

    @property
    def response_letter_date(self) -> str | None:
        """The answer's DateCourrierPref, as written."""
        return None if self.response is None else self.response.get(f"{{{NS}}}DateCourrierPref")

    @property
    def response_key(self) -> str | None:
        """IDActe:code:DateCourrierPref: the same answer to the same letter is sent once."""
        parts = (self.response_id_acte, self.response_code, self.response_letter_date)
        return ":".join(part for part in parts if part) if None not in parts else None

    @property
    def act_key(self) -> str | None:
        if self.acte is None:
            return None
        numero, day = self.acte.get(f"{{{NS}}}NumeroInterne"), self.acte.get(f"{{{NS}}}Date")
        return f"{self.siren}:{numero}:{day}" if numero and day else None

    @property
    def id_acte(self) -> str | None:
        if self.acte is None or self.acte.get(f"{{{NS}}}Date") is None:
            return None
        nature = NATURES.get(int(self.acte.get(f"{{{NS}}}CodeNatureActe", "0") or "0"), "??")
        day = self.acte.get(f"{{{NS}}}Date", "").replace("-", "")
        return f"{self.departement}-{self.siren}-{day}-{self.acte.get(f'{{{NS}}}NumeroInterne')}-{nature}"


def _parse(data: bytes) -> etree._Element | None:
    try:
        return parse(data, name=None)
    except XmlRefused:
        return None


def inspect_archive(name: str, data: bytes, validator: ActesValidator) -> Inspection:
    """Open and validate the archive; LegalityFault INVALID_ARCHIVE when no anomaly could answer it."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise LegalityFault("INVALID_ARCHIVE", f"ArchiveName {name!r} is not a file name")
    xml: dict[str, bytes] = {}
    heads: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                stream = tar.extractfile(member) if member.isfile() else None
                if stream is None:
                    continue
                if member.name.lower().endswith(".xml") and member.size <= _MAX_XML:
                    xml[member.name] = stream.read()
                    heads[member.name] = xml[member.name][:1024]
                else:
                    heads[member.name] = stream.read(1024)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise LegalityFault("INVALID_ARCHIVE", f"{name}: cannot read the archive as tar.gz: {exc}") from exc
    match = ARCHIVE_NAME.fullmatch(name)
    candidates = [f"{match.group('envelope')}.xml"] if match else []
    candidates += [n for n in xml if ENVELOPE_NAME.fullmatch(n)]
    candidates += [n for n in xml if (root := _parse(xml[n])) is not None and root.tag == f"{{{NS}}}EnveloppeCLMISILL"]
    envelope_name = next((n for n in candidates if n in xml), None)
    if envelope_name is None:
        raise LegalityFault("INVALID_ARCHIVE", f"{name}: no envelope (EnveloppeCLMISILL) in the archive")
    envelope_problems = validator.validate_xml(xml[envelope_name], envelope_name)
    envelope = _parse(xml[envelope_name])
    if envelope_problems or envelope is None or envelope.tag != f"{{{NS}}}EnveloppeCLMISILL":
        why = "; ".join(str(p) for p in envelope_problems) or "root is not actes:EnveloppeCLMISILL"
        raise LegalityFault("INVALID_ARCHIVE", f"{name}: the envelope {envelope_name} is not valid: {why}")
    idcl = envelope.find(f"{{{NS}}}Emetteur/{{{NS}}}IDCL")
    assert idcl is not None  # the schema requires it
    siren = idcl.get(f"{{{INSEE_NS}}}SIREN", "")
    departement = idcl.get(f"{{{NS}}}Departement", "")
    listed = [(e.text or "").strip() for e in envelope.iter(f"{{{NS}}}NomFichier")]
    acte = response = None
    for message_name in listed:
        root = _parse(xml.get(message_name, b""))
        if root is not None and root.tag == f"{{{NS}}}Acte":
            acte, response = root, None
            break
        if response is None and root is not None and root.tag in _RESPONSE_CODES:
            response = root
    with tempfile.TemporaryDirectory(prefix="hent-legality-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        problems = validator.validate_archive(path)
    if len(listed) != 1 or (acte is None and response is None):
        problems.append(Problem("an archive must carry exactly one message: an Acte (1-1) or an answer to a "
                                f"letter ({', '.join(RESPONSE_ROOTS)})", file=envelope_name,
                                rule="archive-one-message"))
    if response is not None and len(listed) == 1:
        documents = _response_documents(response)
        problems = [p for p in problems if not (p.rule == "archive-unexpected-file" and p.field in documents)]
        if not problems:
            problems = _response_problems(listed[0], response, documents, heads, siren, departement)
    return Inspection(envelope_name, envelope, siren, departement, acte, problems, response)


def _response_documents(response: etree._Element) -> list[str]:
    """The NomFichier of each Document of an answer, in order."""
    return [(e.text or "").strip() for e in response.iter(f"{{{NS}}}NomFichier")]


def _response_problems(
    name: str, response: etree._Element, documents: list[str], heads: dict[str, bytes], siren: str,
    departement: str,
) -> list[Problem]:
    """Problems with a schema-valid answer's name, its IDActe and the documents it names."""
    problems: list[Problem] = []
    id_acte = response.get(f"{{{NS}}}IDActe", "")
    base = f"{id_acte}-{_RESPONSE_CODES[response.tag]}"
    if name != f"{base}_0.xml":
        problems.append(Problem(f"message name should be {base}_0.xml", file=name, rule="message-name"))
    if not id_acte.startswith(f"{departement}-{siren}-"):
        problems.append(Problem(f"IDActe {id_acte} is not an act of the collectivité {departement}-{siren} of "
                                "the envelope", file=name, field=id_acte, rule="response-collectivite"))
    for index, document in enumerate(documents, start=1):
        kind = extension_kind(document)
        if kind is None or not document.startswith(f"{base}_{index}."):
            problems.append(Problem(f"expected {base}_{index}.ext (pdf, xml, png, jpg, jpeg)", file=name,
                                    field=document, rule="document-name"))
        if document not in heads:
            problems.append(Problem("file named in the answer is not in the archive", file=name, field=document,
                                    rule="archive-document-missing"))
        elif kind is not None and sniff_kind(heads[document]) != kind:
            problems.append(Problem(f"content is {sniff_kind(heads[document]) or 'unknown'}, name says {kind}",
                                    file=name, field=document, rule="file-type-mismatch"))
    return problems
