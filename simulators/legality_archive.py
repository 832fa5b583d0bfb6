"""Open an ACTES archive received by the legality simulator and say what is wrong with it.

The archive is read in memory (XML members only), its envelope found — the one the archive
name announces, else any ``QUAD--SIREN--YYYYMMDD-N.xml``, else any EnveloppeCLMISILL — and
the whole archive checked by :meth:`transformers.actes_validate.ActesValidator.validate_archive`
(on a temporary file named as received).  An archive with no readable, schema-valid envelope
cannot be answered by an AnomalieEnveloppe (which echoes the envelope): it is refused at once
with the fault ``INVALID_ARCHIVE``.
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
from simulators.legality_messages import ACTES_NS, INSEE_NS
from simulators.legality_soap import LegalityFault
from transformers.actes_model import NATURES
from transformers.actes_validate import ARCHIVE_NAME, ENVELOPE_NAME, ActesValidator

NS = ACTES_NS
_MAX_XML = 10 * 1024 * 1024


@dataclass
class Inspection:
    """What an archive holds, as far as it could be read."""

    envelope_name: str
    envelope: etree._Element
    siren: str
    departement: str
    acte: etree._Element | None
    problems: list[Problem]

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
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        return None


def inspect_archive(name: str, data: bytes, validator: ActesValidator) -> Inspection:
    """Open and validate the archive; LegalityFault INVALID_ARCHIVE when no anomaly could answer it."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise LegalityFault("INVALID_ARCHIVE", f"ArchiveName {name!r} is not a file name")
    xml: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.lower().endswith(".xml") and member.size <= _MAX_XML:
                    stream = tar.extractfile(member)
                    xml[member.name] = stream.read() if stream else b""
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
    acte = None
    for message_name in listed:
        root = _parse(xml.get(message_name, b""))
        if root is not None and root.tag == f"{{{NS}}}Acte":
            acte = root
            break
    with tempfile.TemporaryDirectory(prefix="hent-legality-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        problems = validator.validate_archive(path)
    if len(listed) != 1 or acte is None:
        problems.append(Problem("an archive must carry exactly one Acte (1-1) message", file=envelope_name,
                                rule="archive-one-acte"))
    return Inspection(envelope_name, envelope, siren, departement, acte, problems)
