"""ACTES throughput: acts/s through Hent's runtime beside a bare lxml + tarfile loop, and the ratio.

For each deliberation bundle (a JSON sidecar, a 200 KB signed PDF, one 50 KB annex):

runtime side
    a real :class:`bus.runtime.Runtime` built from a generated configuration (folder source,
    folder endpoint, metrics off, connectors found through the registry) and driven the way
    its consumer thread drives it, minus the broker and the network: ``Runtime._take_in``
    (every file into the spool, fsynced; the ledger rows RECEIVED, in batches as a poll records
    them), then ``Runtime.handle_document`` with each id ``_take_in`` published (lease, mapping with the
    route's vendor mapping, envelope serial from the ledger, ``build_archive`` with the
    project's validator straight into the spool, PREPARED, the delivery row, ROUTED, and the
    bundle committed at the source).  What ``_publish_many`` would hand to kombu is kept in a list.
bare side
    what a hand-written script does and nothing more: ``json.loads`` the sidecar, build the
    Acte and the EnveloppeCLMISILL with lxml (same content, ISO-8859-1), validate both
    against ``schemas/actes/actes.xsd`` (compiled once), write a flat tar.gz with tarfile's
    gzip -9 (the issue's reference job: S2LOW's ``gzip -9``; the product deflates what
    compresses and stores what does not, see ``transformers.actes_out._GzipWriter``) into a
    folder.  No spool, no ledger, no fsync.

Both sides read the same bytes (the PDFs are random-sample images, incompressible like
real signed PDFs), run in the same process, alternate in rounds after a warm-up; each round's
ratio runtime / bare is paired (its two sides one after the other), and the round of the median
ratio gives the figures (target: 0.8).  Archives of
both sides are checked with ``transformers.actes_validate`` and compared member by member.
An extra instrumented round says where the runtime's time goes; ``--profile`` adds a
cProfile round.  Exit 0 whatever the ratio (it is a report); 1 if anything failed.

    python -m bench.actes_throughput [--acts 200] [--rounds 3] [--json] [--profile]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/actes_throughput.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from typing import Any, cast  # noqa: E402

from lxml import etree  # noqa: E402

import bus.journal  # noqa: E402
import bus.spool  # noqa: E402
import routes.pipeline  # noqa: E402
import transformers.actes_out  # noqa: E402
from bench._common import Figure, measure_in_workdir, summary  # noqa: E402
from bus.backbone import DELIVERIES, DOCUMENTS  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.connector import Claimed  # noqa: E402
from bus.ledger import DeliveryState, DocumentState  # noqa: E402
from bus.runtime import Runtime  # noqa: E402
from connectors.folder_inbound import MANIFEST, FolderInbound  # noqa: E402
from routes.pipeline import Pipeline  # noqa: E402
from simulators.backoffice import SIREN, write_bundle  # noqa: E402
from transformers.actes_validate import ENVELOPE_NAME, SCHEMA_DIR, default_validator  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAPPING = REPO / "config" / "mappings" / "deliberations-json.yaml"
CLASSIFICATION = REPO / "config" / "classifications" / "demo-classification-7-2.xml"
CLASSIFICATION_DATE = "2025-01-15"  # the DateClassification of CLASSIFICATION
SCHEMA = SCHEMA_DIR / "actes.xsd"
TARGET = 0.8
GZIP_LEVEL = 9  # the bare loop's tarfile gzip: -9, as S2LOW's `gzip -9` (the product stores what does not compress)
MAX_SERIALS = 9999  # envelope serials per SIREN per day (bus.ledger.MAX_ENVELOPE_SERIAL)

SOURCE = "deliberations"
ENDPOINT = "prefecture"
DEPARTEMENT, ARRONDISSEMENT, COLLECTIVITE_NATURE = "044", 1, "31"
RETURN_EMAIL = "actes@saint-herblain.fr"
TRIGRAM, QUADRIGRAM = "HNT", "TACT"
OBJET = "Cession de la parcelle cadastrée BK 112, rue de la Solidarité"
REFERENT = ("Maëlle Le Goff", "02 28 25 20 00", "m.legoff@saint-herblain.fr")

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
INSEE = "http://xml.insee.fr/schema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NSMAP = {"actes": NS, "insee": INSEE, "xsi": XSI}
DECLARATION = b'<?xml version="1.0" encoding="ISO-8859-1"?>\n'


class BenchError(Exception):
    """The bench could not do what it measures: a document failed, an archive is invalid."""


# -- the bundles ---------------------------------------------------------------------------


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(lines: list[str], size: int, rng: random.Random) -> bytes:
    """A valid one-page PDF 1.4 of ``size`` bytes, mostly an image of random grey samples.

    Real signed PDFs are mostly compressed streams, which gzip cannot shrink: the samples
    are random (seeded) and stored in a FlateDecode stream, so the archive's gzip works on
    incompressible bytes as it does in production.
    """
    text = ["BT", "/F1 11 Tf", "56 780 Td", "14 TL", *(f"({_pdf_escape(line)}) '" for line in lines), "ET"]
    content = ("\n".join(text) + "\nq 480 0 0 120 56 560 cm /Im1 Do Q").encode("cp1252", errors="replace")
    samples = rng.randbytes(max(size, 64))

    def assemble(count: int) -> bytes:
        image = zlib.compress(samples[:count], 0)  # stored deflate blocks: valid, and as dense as the samples
        objects = [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
            b"/Resources << /Font << /F1 4 0 R >> /XObject << /Im1 6 0 R >> >> /Contents 5 0 R >>",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /XObject /Subtype /Image /Width %d /Height 1 /ColorSpace /DeviceGray "
            b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n" % (count, len(image))
            + image
            + b"\nendstream",
        ]
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offsets = []
        for number, body in enumerate(objects, start=1):
            offsets.append(len(out))
            out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
        for offset in offsets:
            out += b"%010d 00000 n \n" % offset
        out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
        return bytes(out)

    count = max(size - 1200, 1)
    pdf = assemble(count)
    for _ in range(8):  # the lengths written in the file move with the count: converge on ``size``
        if len(pdf) == size or count + size - len(pdf) < 1:
            break
        count += size - len(pdf)
        pdf = assemble(min(count, len(samples)))
    return pdf


@dataclass(frozen=True)
class Bundle:
    """One deliberation as the séance software drops it: a JSON sidecar and its two PDFs."""

    numero: str
    folder: Path
    sidecar: str
    names: tuple[str, ...]  #: the sidecar first, then the main PDF and the annex


def write_bundles(
    root: Path, tag: str, count: int, *, decision: date, pdf_size: int, annex_size: int, seed: int
) -> list[Bundle]:
    """``count`` bundles under ``root/tag``, each in its folder, with PDFs unique to (seed, tag, n).

    Unique bytes matter: the spool is content-addressed and keeps a blob it already has,
    so repeated PDFs would make later rounds cheaper than production.
    """
    bundles = []
    for n in range(count):
        numero = f"B{tag}_{n:05d}"
        rng = random.Random(f"{seed}:{numero}")
        main, annex = f"{numero}.pdf", f"{numero}_annexe1.pdf"
        files = {
            main: make_pdf([f"Délibération {numero}", OBJET, f"Séance du {decision:%d/%m/%Y}"], pdf_size, rng),
            annex: make_pdf([f"Annexe 1 à la délibération {numero}", "Plan de situation"], annex_size, rng),
        }
        sidecar = {  # the shape of simulators.backoffice.drop_deliberation's sidecar
            "collectivite": {"siren": SIREN, "nom": "Commune de Saint-Herblain"},
            "seance": {"id": f"CM-{decision:%Y-%m}", "date": decision.isoformat()},
            "numero": numero,
            "objet": OBJET,
            "classification": "3.2",
            "type": "DELIBERATION",
            "envoi_papier": False,
            "redacteur": {"nom": REFERENT[0], "telephone": REFERENT[1], "email": REFERENT[2]},
            "fichier": main,
            "annexes": [{"fichier": annex, "type": "21_RP"}],
        }
        folder = root / tag / numero
        data = json.dumps(sidecar, ensure_ascii=False, indent=2).encode()
        write_bundle(folder, f"{numero}.json", data, files)
        bundles.append(Bundle(numero, folder, f"{numero}.json", (f"{numero}.json", main, annex)))
    return bundles


# -- the bare loop -------------------------------------------------------------------------

BARE_PHASES = ("parse the sidecar (json)", "build both XML (lxml)", "XSD validation", "tar.gz (gzip -9)")


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _actes_root(tag: str) -> etree._Element:
    root = etree.Element(_q(tag), nsmap=NSMAP)
    root.set(f"{{{XSI}}}schemaLocation", f"{NS} actesv1_1.xsd")
    return root


def _nom_fichier(parent: etree._Element, tag: str, name: str) -> None:
    etree.SubElement(etree.SubElement(parent, _q(tag)), _q("NomFichier")).text = name


def _serialize(root: etree._Element) -> bytes:
    return DECLARATION + etree.tostring(root, encoding="ISO-8859-1", xml_declaration=False, pretty_print=True)


class BareLoop:
    """The same work with lxml and tarfile alone; the schema compiled once; no fsync."""

    def __init__(self, today: date) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        self.schema = etree.XMLSchema(etree.parse(str(SCHEMA), parser))
        self.today = today
        self.serial = 0
        self.mtime = int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp())
        self.phases: dict[str, float] = dict.fromkeys(BARE_PHASES, 0.0)

    def process(self, bundle: Bundle, out_dir: Path) -> Path:
        """Build, validate and pack one bundle's archive into ``out_dir``; return its path."""
        started = time.perf_counter()
        data = json.loads((bundle.folder / bundle.sidecar).read_bytes())
        siren, numero = data["collectivite"]["siren"], data["numero"]
        base = f"{DEPARTEMENT}-{siren}-{data['seance']['date'].replace('-', '')}-{numero}-DE-1-1"
        message = f"{base}_0.xml"
        names = {data["fichier"]: f"99_DE-{base}_1.pdf"}
        for index, annex in enumerate(data["annexes"], start=2):
            names[annex["fichier"]] = f"{annex.get('type') or '99_DE'}-{base}_{index}.pdf"
        self.serial += 1
        envelope = f"{QUADRIGRAM}--{siren}--{self.today:%Y%m%d}-{self.serial}.xml"
        parsed = time.perf_counter()

        acte = _actes_root("Acte")
        acte.set(_q("Date"), data["seance"]["date"])
        acte.set(_q("NumeroInterne"), numero)
        acte.set(_q("CodeNatureActe"), "1")
        for level, code in enumerate(data["classification"].split("."), start=1):
            etree.SubElement(acte, _q(f"CodeMatiere{level}")).set(_q("CodeMatiere"), str(int(code)))
        etree.SubElement(acte, _q("Objet")).text = data["objet"]
        etree.SubElement(acte, _q("ClassificationDateVersion")).text = CLASSIFICATION_DATE
        _nom_fichier(acte, "Document", names[data["fichier"]])
        annexes = etree.SubElement(acte, _q("Annexes"))
        annexes.set(_q("Nombre"), str(len(data["annexes"])))
        for annex in data["annexes"]:
            _nom_fichier(annexes, "Annexe", names[annex["fichier"]])
        etree.SubElement(acte, _q("DocumentPapier")).text = "O" if data["envoi_papier"] else "N"

        enveloppe = _actes_root("EnveloppeCLMISILL")
        emetteur = etree.SubElement(enveloppe, _q("Emetteur"))
        idcl = etree.SubElement(emetteur, _q("IDCL"))
        idcl.set(f"{{{INSEE}}}SIREN", siren)
        idcl.set(_q("Departement"), DEPARTEMENT)
        idcl.set(_q("Arrondissement"), str(ARRONDISSEMENT))
        idcl.set(_q("Nature"), COLLECTIVITE_NATURE)
        referent = etree.SubElement(emetteur, _q("Referent"))
        redacteur = data["redacteur"]
        for tag, key in (("Nom", "nom"), ("Telephone", "telephone"), ("Email", "email")):
            etree.SubElement(referent, _q(tag)).text = redacteur[key]
        etree.SubElement(etree.SubElement(enveloppe, _q("AdressesRetour")), _q("Email")).text = RETURN_EMAIL
        _nom_fichier(etree.SubElement(enveloppe, _q("FormulairesEnvoyes")), "Formulaire", message)
        acte_xml, envelope_xml = _serialize(acte), _serialize(enveloppe)
        built = time.perf_counter()

        self.schema.assertValid(enveloppe)
        self.schema.assertValid(acte)
        validated = time.perf_counter()

        archive = out_dir / f"{TRIGRAM}-{envelope.removesuffix('.xml')}.tar.gz"
        with tarfile.open(archive, "w:gz", format=tarfile.USTAR_FORMAT, compresslevel=GZIP_LEVEL) as tar:
            for name, payload in ((envelope, envelope_xml), (message, acte_xml)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(payload), self.mtime
                tar.addfile(info, io.BytesIO(payload))
            for source, name in names.items():
                with (bundle.folder / source).open("rb") as stream:
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = os.fstat(stream.fileno()).st_size, self.mtime
                    tar.addfile(info, stream)
        packed = time.perf_counter()
        for phase, seconds in zip(
            BARE_PHASES, (parsed - started, built - parsed, validated - built, packed - validated), strict=True
        ):
            self.phases[phase] += seconds
        return archive


# -- the runtime side ----------------------------------------------------------------------


def _config_text(root: Path) -> str:
    q = json.dumps  # JSON strings are YAML strings
    return f"""# generated by bench/actes_throughput.py
bus:
  state_dir: {q(str(root / "state"))}
  broker: "memory://"          # never used: the bench stands in for the broker (see _publish_many)
  text_policy: transliterate
  metrics: {{enabled: false}}
  lease: 60s
collectivites:
  - siren: {q(SIREN)}
    departement: {q(DEPARTEMENT)}
    arrondissement: {ARRONDISSEMENT}
    nature: {q(COLLECTIVITE_NATURE)}
    return_emails: [{RETURN_EMAIL}]
    classification: {q(str(CLASSIFICATION))}
    classification_date: {CLASSIFICATION_DATE}
connectors:
  {SOURCE}:
    type: folder
    path: {q(str(root / "inbox"))}
    pattern: "*.json"
    poll: 30s
    ready: {{min_age: 0s, stable: false}}
  {ENDPOINT}:
    type: folder
    path: {q(str(root / "out"))}
    create: true
    trigram: {TRIGRAM}
    quadrigram: {QUADRIGRAM}
routes:
  - name: deliberations
    from: {SOURCE}
    map: {q(str(MAPPING))}
    to: {ENDPOINT}
"""


@dataclass(frozen=True)
class Routed:
    """What the runtime recorded for one bundle: its archive in the spool."""

    numero: str
    document_id: str
    archive_name: str
    archive_path: Path


class RuntimeSide:
    """A real Runtime from a generated configuration, driven without its consumer thread."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "inbox").mkdir(exist_ok=True)
        config_path = root / "hent.yaml"
        config_path.write_text(_config_text(root), encoding="utf-8")
        self.runtime = Runtime(load_config(config_path), Pipeline.for_runtime, serve_http=False)
        self.published: list[tuple[str, str]] = []
        # minus the broker: what would go to kombu is kept; the consumer's call is made directly;
        # and minus the send: the delivery a worker sends at once once it routed a document is kept
        self.runtime._publish_many = self._keep  # type: ignore[method-assign]
        self.runtime.handle_delivery = lambda delivery_id, document=None, leased=None: self._keep(  # type: ignore[method-assign]
            DELIVERIES, [delivery_id])
        self.errors: list[str] = []  # an error the runtime logs spoils the figure: the round fails
        errors = logging.Handler(logging.ERROR)
        errors.emit = lambda record: self.errors.append(record.getMessage())  # type: ignore[method-assign]
        logging.getLogger("bus").addHandler(errors)
        self.connector = self.runtime.sources[SOURCE]
        self.connector.list_ready()  # the first poll: the connector makes its work, done and error folders
        self.pipeline = cast(Pipeline, self.runtime.processor)
        self.inbox = root / "inbox"

    def _keep(self, queue: str, entity_ids: list[str]) -> None:
        self.published.extend((queue, entity_id) for entity_id in entity_ids)

    def stage(self, bundle: Bundle) -> Claimed:
        """The bundle as ``FolderInbound.claim`` leaves it (claim folder, manifest); not timed."""
        claim_dir = cast(FolderInbound, self.connector).work_dir / f"{time.time_ns()}-{bundle.numero}"
        claim_dir.mkdir(parents=True)
        manifest = {"key": bundle.sidecar, "members": list(bundle.names[1:]), "origin": str(self.inbox)}
        (claim_dir / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
        files: dict[str, Path] = {}
        for name in bundle.names:
            os.link(bundle.folder / name, claim_dir / name)  # the same bytes as the bare side reads
            files[name] = claim_dir / name
        return Claimed(bundle.sidecar, files, origin=str(self.inbox))

    def ingest(self, claims: list[Claimed]) -> list[str]:
        """Pickup: ``Runtime._take_in`` the claims (as one poll does: each copied into the spool, then
        recorded in batches); the document ids published."""
        before = len(self.published)
        runtime = self.runtime
        runtime._take_in(SOURCE, claims, functools.partial(runtime._spool_claim, SOURCE, recovered=False))
        documents = [entity for queue, entity in self.published[before:] if queue == DOCUMENTS]
        if len(documents) != len(claims):
            raise BenchError(f"_ingest published {len(documents)} document(s) for {len(claims)} bundle(s)")
        return documents

    def handle(self, documents: list[str], workers: int = 1) -> None:
        """The consumer's stage: ``handle_document`` for each id (map, build, validate, pack, route)."""
        if workers <= 1:
            for document_id in documents:
                self.runtime.handle_document(document_id)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.runtime.handle_document, documents))

    def settle(self) -> None:
        """What the source's poller does next: commit the bundles whose document is final."""
        self.runtime._settle(SOURCE)

    def routed(self, numero: str, document_id: str) -> Routed:
        """The archive the runtime built; BenchError unless the document is ROUTED, delivery PENDING."""
        ledger = self.runtime.ledger
        document = ledger.get_document(document_id)
        if document.state != DocumentState.ROUTED:
            raise BenchError(f"runtime: {numero} ended {document.state}: {document.reason}")
        deliveries = ledger.deliveries_of(document_id)
        if len(deliveries) != 1 or deliveries[0].state != DeliveryState.PENDING:
            raise BenchError(f"runtime: {numero} has deliveries {[(d.endpoint, d.state) for d in deliveries]}")
        delivery = deliveries[0]
        if not delivery.artifact_name or not delivery.artifact_sha256:
            raise BenchError(f"runtime: {numero}: the delivery names no archive")
        return Routed(numero, document_id, delivery.artifact_name, self.runtime.spool.path(delivery.artifact_sha256))

    def close(self) -> None:
        self.runtime.shutdown()


# -- instrumentation -----------------------------------------------------------------------


@dataclass
class Stopwatch:
    """Exclusive time per name (a wrapped call's time minus the wrapped calls it makes) and counts."""

    seconds: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    detail: dict[str, float] = field(default_factory=dict)  #: by wrapped function, e.g. "ledger.documents"
    detail_calls: Counter[str] = field(default_factory=Counter)
    _children: list[float] = field(default_factory=list)

    def timed(self, name: str, fn: Callable[..., Any], label: str = "") -> Callable[..., Any]:
        label = label or name
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._children.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                inner = self._children.pop()
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
                self.calls[name] += 1
                self.detail[label] = self.detail.get(label, 0.0) + elapsed - inner
                self.detail_calls[label] += 1
                if self._children:
                    self._children[-1] += elapsed

        return wrapper

    def counted(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper


Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]
Patch = tuple[object, str, Wrap]


@contextmanager
def patched(patches: list[Patch]) -> Iterator[None]:
    """Replace each ``target.attr`` by ``wrap(original)``; put everything back afterwards."""
    undo: list[tuple[object, str, bool, Any]] = []
    try:
        for target, attr, wrap in patches:
            own = attr in vars(target)
            original = vars(target)[attr] if own else getattr(target, attr)
            undo.append((target, attr, own, original))
            setattr(target, attr, wrap(getattr(target, attr)))
        yield
    finally:
        for target, attr, own, original in reversed(undo):
            if own:
                setattr(target, attr, original)
            else:
                delattr(target, attr)


#: runtime breakdown rows, in the order they happen
RUNTIME_ROWS = (
    "spool: store the bundle's 3 files (put_stream)",
    "ledger: add_documents (a poll's batch)",
    "ledger: claim (lease + read), release",
    "ledger: reads (get_document)",
    "mapping (sidecar -> canonical act)",
    "ledger: envelope serial",
    "act rules (check_act)",
    "XSD validation",
    "XML build + tar.gz into the spool",
    "spool: hash + fsync + install the archive",
    "ledger: route (PREPARED, delivery, ROUTED: one transaction)",
    "ledger: sync (WAL fsync before the source changes)",
    "source: commit (bundle to done/)",
    "runtime glue (the rest)",
)


def runtime_patches(side: RuntimeSide, watch: Stopwatch) -> list[Patch]:
    r = RUNTIME_ROWS
    ledger, pipeline = side.runtime.ledger, side.pipeline

    def t(name: str, label: str) -> Wrap:
        return lambda fn: watch.timed(name, fn, label)

    def c(name: str) -> Wrap:
        return lambda fn: watch.counted(name, fn)

    return [
        (side.runtime.spool, "put_stream", t(r[0], "Spool.put_stream")),
        (ledger, "add_documents", t(r[1], "Ledger.add_documents")),
        (ledger, "claim_document", t(r[2], "Ledger.claim_document")),
        (ledger, "release_lease", t(r[2], "Ledger.release_lease")),
        (ledger, "get_document", t(r[3], "Ledger.get_document")),
        (pipeline, "map", t(r[4], "Pipeline.map")),
        (pipeline, "serials", t(r[5], "Ledger.next_envelope_serial")),  # bound at start-up
        (transformers.actes_out, "check_act", t(r[6], "check_act")),
        (pipeline.validator, "validate_xml", t(r[7], "ActesValidator.validate_xml")),
        (routes.pipeline, "build_archive", t(r[8], "build_archive")),
        (bus.spool.SpoolWriter, "_commit", t(r[9], "SpoolWriter._commit")),
        (ledger, "route_document", t(r[10], "Ledger.route_document")),
        (ledger, "sync", t(r[11], "Ledger.sync")),
        (side.connector, "commit", t(r[12], "FolderInbound.commit")),
        (ledger, "_write", c("ledger write transactions")),
        (ledger, "_read", c("ledger read transactions")),
        (bus.journal, "append_many", c("journal appends")),
        (os, "fsync", c("os.fsync calls (spool, folders; SQLite's own are not counted)")),
    ]


# -- checking the archives -----------------------------------------------------------------


def _members(path: Path) -> dict[str, str]:
    """Member name (the envelope's, whose serial differs, as ``<envelope>``) → sha256 of its bytes."""
    found: dict[str, str] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            stream = tar.extractfile(member)
            data = stream.read() if stream is not None else b""
            name = "<envelope>" if ENVELOPE_NAME.fullmatch(member.name) else member.name
            found[name] = hashlib.sha256(data).hexdigest()
    return found


@dataclass
class ArchiveCheck:
    runtime_checked: int = 0
    bare_checked: int = 0
    problems: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    def check(self, pairs: list[tuple[Routed, Path]], check_dir: Path, sample: int) -> None:
        """Validate a sample of both sides' archives and compare each pair member by member."""
        validator = default_validator()
        check_dir.mkdir(parents=True, exist_ok=True)
        step = max(len(pairs) // max(sample, 1), 1)
        for routed, bare in pairs[::step][:sample]:
            named = check_dir / routed.archive_name  # the validator reads the name: link the blob under it
            if not named.exists():
                os.link(routed.archive_path, named)
            for side, path in (("runtime", named), ("bare", bare)):
                self.problems += [f"{side} {path.name}: {p}" for p in validator.validate_archive(path)]
            self.runtime_checked += 1
            self.bare_checked += 1
            if _members(named) != _members(bare):
                self.differing.append(f"{routed.numero}: {named.name} and {bare.name} differ")


# -- the run -------------------------------------------------------------------------------


@dataclass
class Sides:
    runtime: RuntimeSide
    bare: BareLoop
    root: Path
    args: argparse.Namespace
    today: date
    check: ArchiveCheck = field(default_factory=ArchiveCheck)
    stages: dict[str, float] = field(default_factory=dict)

    def bundles(self, tag: str, count: int) -> list[Bundle]:
        return write_bundles(
            self.root / "bundles", tag, count, decision=self.today - timedelta(days=3),
            pdf_size=self.args.pdf_size, annex_size=self.args.annex_size, seed=self.args.seed,
        )

    def run_runtime(self, bundles: list[Bundle], watch: Stopwatch | None = None) -> tuple[float, list[str]]:
        """The runtime on ``bundles``: the consumer stage's seconds (what the ratio compares) and the
        ids; pickup and settling, done by the source's poller, are timed apart in ``self.stages``."""
        claims = [self.runtime.stage(b) for b in bundles]
        gc.collect()
        batch = self.args.batch
        stages = {"pickup": 0.0, "consumer": 0.0, "settle": 0.0}
        # the poller ingests a poll's bundles at a time; the consumer's threads take the documents as
        # they come, without waiting for one another at the end of each poll (Runtime.consume): they
        # run over the whole round at once here (one pool: no barrier every poll, which the bare
        # single thread never pays); then the poller settles what is final, in one call
        with patched(runtime_patches(self.runtime, watch) if watch else []):
            polls = []
            for start in range(0, len(claims), batch):
                t0 = time.perf_counter()
                polls.append(self.runtime.ingest(claims[start:start + batch]))
                stages["pickup"] += time.perf_counter() - t0
            ids = [document for poll in polls for document in poll]
            t1 = time.perf_counter()
            self.runtime.handle(ids, self.args.workers)
            stages["consumer"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            self.runtime.settle()
            stages["settle"] += time.perf_counter() - t2
        self.stages = stages
        return stages["consumer"], ids

    def process(self, claims: list[Claimed]) -> list[str]:
        """Every stage on ``claims`` (for the profile)."""
        ids = self.runtime.ingest(claims)
        self.runtime.handle(ids, self.args.workers)
        self.runtime.settle()
        return ids

    def run_bare(self, bundles: list[Bundle], out_dir: Path) -> tuple[float, list[Path]]:
        out_dir.mkdir(parents=True, exist_ok=True)
        gc.collect()
        start = time.perf_counter()
        archives = [self.bare.process(b, out_dir) for b in bundles]
        return time.perf_counter() - start, archives

    def round(self, tag: str, *, runtime_first: bool, watch: Stopwatch | None = None) -> tuple[float, float]:
        """One round of both sides on the same bundles; (runtime seconds, bare seconds).

        With ``watch``, the runtime's calls are timed one by one (the breakdown round).
        """
        bundles = self.bundles(tag, self.args.acts)
        out_dir = self.root / "bare" / tag
        if runtime_first:
            runtime_s, ids = self.run_runtime(bundles, watch)
            bare_s, archives = self.run_bare(bundles, out_dir)
        else:
            bare_s, archives = self.run_bare(bundles, out_dir)
            runtime_s, ids = self.run_runtime(bundles, watch)
        if self.runtime.errors:
            raise BenchError(f"the runtime logged {len(self.runtime.errors)} error(s): {self.runtime.errors[0]}")
        routed = [self.runtime.routed(b.numero, i) for b, i in zip(bundles, ids, strict=True)]
        self.check.check(list(zip(routed, archives, strict=True)), self.root / "check" / tag, self.args.check)
        # a round's files stay until the work folder goes at the end: deleting them here (and the
        # discards that follow) would slow the next round's file creations, not this round's
        return runtime_s, bare_s


def _filesystem(path: Path) -> str:
    """``ext4 on /dev/vda`` for the mount holding ``path`` (best effort, Linux)."""
    best, found = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, found = mount, f"{kind} on {device}"
    except OSError:
        pass
    return found


def _profile(fn: Callable[[], object], top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    today = date.today()
    sides = Sides(RuntimeSide(root / "runtime"), BareLoop(today), root, args, today)
    try:
        if args.warmup:  # imports, caches, the first spool folders, the ledger's first pages
            warm = sides.bundles("W", args.warmup)
            sides.run_bare(warm, root / "bare" / "W")
            sides.run_runtime(warm)
        one_worker: list[float] = []
        if args.workers > 1:  # the same rounds with one consumer thread, for the record
            configured, args.workers = args.workers, 1
            for number in range(1, args.rounds + 1):
                runtime_s, bare_s = sides.round(f"S{number}", runtime_first=number % 2 == 0)
                one_worker.append(bare_s / runtime_s)
            args.workers = configured
        rounds = []
        for number in range(1, args.rounds + 1):
            runtime_s, bare_s = sides.round(f"R{number}", runtime_first=number % 2 == 0)
            whole = sum(sides.stages.values())
            rounds.append({"round": number, "runtime_acts_per_s": args.acts / runtime_s,
                           "bare_acts_per_s": args.acts / bare_s, "ratio": bare_s / runtime_s,
                           "pickup_acts_per_s": args.acts / sides.stages["pickup"],
                           "settle_acts_per_s": args.acts / sides.stages["settle"],
                           "whole_acts_per_s": args.acts / whole, "whole_ratio": bare_s / whole})

        watch = Stopwatch()
        sides.bare.phases = dict.fromkeys(BARE_PHASES, 0.0)
        configured, args.workers = args.workers, 1  # exclusive timings need one thread
        _, bare_s = sides.round("X", runtime_first=True, watch=watch)
        args.workers = configured
        # the rows cover all three stages: the rest is measured against their sum
        breakdown = _breakdown(watch, sum(sides.stages.values()), bare_s, sides.bare.phases, args.acts)

        profiles: dict[str, str] = {}
        if args.profile:
            bundles = sides.bundles("P", args.acts)
            claims = [sides.runtime.stage(b) for b in bundles]
            out_dir = root / "bare" / "P"
            out_dir.mkdir(parents=True, exist_ok=True)
            profiles["runtime"] = _profile(lambda: sides.process(claims), 25)
            profiles["bare"] = _profile(lambda: [sides.bare.process(b, out_dir) for b in bundles], 25)
    finally:
        sides.runtime.close()

    stage_rates = {key: statistics.median(r[key] for r in rounds)
                   for key in ("pickup_acts_per_s", "settle_acts_per_s", "whole_acts_per_s", "whole_ratio")}
    # the two sides of a round run one after the other on the same acts: their ratio is paired (the
    # machine's drift between rounds cancels out); the figure is the round of the median ratio
    middle = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    runtime_rate, bare_rate = middle["runtime_acts_per_s"], middle["bare_acts_per_s"]
    ratio = runtime_rate / bare_rate
    check = sides.check
    return {
        "bench": "actes_throughput",
        "acts": args.acts,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "batch": args.batch,
        "runtime_acts_per_s": runtime_rate,
        "bare_acts_per_s": bare_rate,
        "ratio": ratio,
        "target": TARGET,
        "target_met": ratio >= TARGET,
        "workers": args.workers,
        "ratio_one_worker": statistics.median(one_worker) if one_worker else ratio,
        "stages": stage_rates,
        "rounds_detail": rounds,
        "breakdown": breakdown,
        "archives": {
            "runtime_checked": check.runtime_checked,
            "bare_checked": check.bare_checked,
            "valid": not check.problems,
            "problems": check.problems[:20],
            "same_content": not check.differing,
            "differing": check.differing[:20],
        },
        "pdf_size": args.pdf_size,
        "annex_size": args.annex_size,
        "gzip_level": GZIP_LEVEL,
        "workdir": str(root),
        "filesystem": _filesystem(root),
        "python": platform.python_version(),
        "lxml": ".".join(map(str, etree.LXML_VERSION)),
        "profiles": profiles,
    }


def _breakdown(
    watch: Stopwatch, runtime_s: float, bare_s: float, phases: dict[str, float], acts: int
) -> dict[str, Any]:
    """Milliseconds per act of each part, from the instrumented round, and counts per act."""
    ms = 1000.0 / acts
    runtime = {row: watch.seconds.get(row, 0.0) * ms for row in RUNTIME_ROWS[:-1]}
    runtime[RUNTIME_ROWS[-1]] = runtime_s * ms - sum(runtime.values())
    bare = {phase: seconds * ms for phase, seconds in phases.items()}
    bare["loop and file opening (the rest)"] = bare_s * ms - sum(bare.values())
    counted = [name for name in watch.calls if name not in watch.seconds]
    return {
        "round_acts_per_s": {"runtime": acts / runtime_s, "bare": acts / bare_s},
        "runtime_ms_per_act": runtime,
        "bare_ms_per_act": bare,
        "runtime_total_ms_per_act": runtime_s * ms,
        "bare_total_ms_per_act": bare_s * ms,
        "per_act": {name: watch.calls[name] / acts for name in counted},
        "runtime_detail": {
            label: {"ms_per_act": seconds * ms, "calls_per_act": watch.detail_calls[label] / acts}
            for label, seconds in watch.detail.items()
        },
    }


# -- output --------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    runtime, bare, ratio = result["runtime_acts_per_s"], result["bare_acts_per_s"], result["ratio"]
    b = result["breakdown"]
    lines = [
        f"ACTES throughput: {result['acts']} acts x {result['rounds']} round(s), the median paired ratio's, "
        f"{result['batch']} ingested per poll; "
        f"PDF {result['pdf_size']} B + 1 annex {result['annex_size']} B, gzip level {result['gzip_level']}",
        f"workdir {result['workdir']} ({result['filesystem']}), Python {result['python']}, lxml {result['lxml']}",
        "",
        f"  {'runtime acts/s':<16}{runtime:>9.1f}   ({1000 / runtime:.2f} ms/act)",
        f"  {'bare acts/s':<16}{bare:>9.1f}   ({1000 / bare:.2f} ms/act)",
        f"  {'ratio':<16}{ratio:>9.2f}",
        f"  {'target 0.8':<16}{'met' if result['target_met'] else 'not met':>9}",
        "",
        f"(runtime = the consumer stage, {result['workers']} worker thread(s) as bus.workers: claim, map, build, "
        "validate, pack into the spool, route in the ledger; the bare loop is one thread)",
        f"with one worker thread the ratio is {result['ratio_one_worker']:.2f}",
        f"pickup by the poller (files into the spool, fsynced; ledger row): "
        f"{result['stages']['pickup_acts_per_s']:.1f} acts/s; settling at the source (bundle to done/): "
        f"{result['stages']['settle_acts_per_s']:.1f} acts/s",
        f"pickup, consumer stage and settling one after the other: {result['stages']['whole_acts_per_s']:.1f} acts/s, "
        f"ratio {result['stages']['whole_ratio']:.2f}",
        "",
        "rounds (runtime / bare acts/s): "
        + ", ".join(f"{r['runtime_acts_per_s']:.1f} / {r['bare_acts_per_s']:.1f}" for r in result["rounds_detail"]),
        "",
        "where the time goes, ms per act (instrumented round, one worker thread: runtime, all stages "
        f"{b['runtime_total_ms_per_act']:.2f}, "
        f"bare {b['bare_total_ms_per_act']:.2f}; exclusive times):",
    ]
    lines += [f"  runtime  {name:<56}{value:>8.2f}" for name, value in b["runtime_ms_per_act"].items()]
    lines += [f"  bare     {name:<56}{value:>8.2f}" for name, value in b["bare_ms_per_act"].items()]
    lines.append("per act (runtime): " + ", ".join(f"{v:g} {k}" for k, v in b["per_act"].items()))
    archives = result["archives"]
    lines.append(
        f"archives: {archives['runtime_checked']} runtime + {archives['bare_checked']} bare checked with "
        f"actes_validate: {'all valid' if archives['valid'] else 'INVALID'}; same members and bytes "
        f"(envelope serial aside): {'yes' if archives['same_content'] else 'NO'}"
    )
    lines += [f"  ! {p}" for p in archives["problems"] + archives["differing"]]
    return "\n".join(lines)


def figures(result: dict[str, Any]) -> list[Figure]:
    """The suite's lines (``bench/run.py``): the consumer stage against the bare loop (the target),
    and the three stages one after the other (informative)."""
    bare = result["bare_acts_per_s"]
    what = "bare lxml + tarfile, the same acts"
    return [
        Figure("actes_throughput", result["runtime_acts_per_s"], "acts/s", bare, what, f"ratio >= {TARGET}",
               result["target_met"]),
        Figure("actes_pickup_to_routed", result["stages"]["whole_acts_per_s"], "acts/s", bare, what,
               note="report: pickup + consumer stage + settling, one after the other"),
    ]


def notes(result: dict[str, Any]) -> list[str]:
    archives = result["archives"]
    return [f"# actes_throughput: {result['acts']} acts x {result['rounds']} round(s), the round of the median "
            f"paired ratio; consumer stage with "
            f"{result['workers']} worker threads (map, build, validate, pack, route; no broker, no network); "
            f"one worker: ratio {result['ratio_one_worker']:.2f}; archives valid and the same as the bare loop's: "
            f"{'yes' if archives['valid'] and archives['same_content'] else 'NO'}"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.actes_throughput",
        description="acts/s through Hent's runtime beside a bare lxml + tarfile loop, and the ratio (target 0.8)",
    )
    parser.add_argument("--acts", type=int, default=200, help="bundles per round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side; the round of the median "
                        "ratio reported (default 3)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed acts of each side first (default 20)")
    parser.add_argument("--pdf-size", type=int, default=200 * 1024, help="main PDF bytes (default 204800)")
    parser.add_argument("--annex-size", type=int, default=50 * 1024, help="annex PDF bytes (default 51200)")
    parser.add_argument("--check", type=int, default=20, help="archive pairs validated and compared per round")
    parser.add_argument(
        "--batch", type=int, default=20,
        help="bundles picked up per poll before they are handled and settled (default 20)",
    )
    parser.add_argument(
        "--workers", type=int, default=2,
        help="consumer threads handling documents at once, as bus.workers (default 2, the product's default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the PDFs' random samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--figures", action="store_true",
                        help="print the suite's figure lines (bench/run.py) instead of the table")
    parser.add_argument("--quick", action="store_true", help="20 acts, 1 round: checks that it runs (CI)")
    parser.add_argument("--profile", action="store_true", help="add a cProfile round: top 25 cumulative entries")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (spool, ledger, archives)")
    args = parser.parse_args(argv)
    if args.quick:
        args.acts, args.rounds, args.warmup, args.check = 20, 1, 5, 5
    if min(args.acts, args.rounds, args.check, args.batch) < 1 or args.warmup < 0:
        parser.error("--acts, --rounds, --check and --batch must be at least 1, --warmup at least 0")
    if args.pdf_size < 2048 or args.annex_size < 2048:
        parser.error("--pdf-size and --annex-size must be at least 2048 bytes")
    serials = args.warmup + args.acts * (args.rounds + 1 + int(args.profile))
    if serials > MAX_SERIALS:
        parser.error(
            f"this run needs {serials} envelope serials, ACTES allows {MAX_SERIALS} per SIREN and day: "
            "lower --acts or --rounds"
        )
    if args.acts > 99999:
        parser.error("--acts is at most 99999 (NumeroInterne has 15 characters)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("actes_throughput", args, measure)
    if result is None:
        return 1
    profiles = result.pop("profiles")
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    elif args.figures:
        found = figures(result)
        print("\n".join([*notes(result), *(f.line() for f in found), summary(found)]))
    else:
        print(render(result))
    for side, text in profiles.items():
        print(f"\ncProfile, {side} side, {args.acts} acts, top 25 by cumulative time:\n{text}",
              file=sys.stderr if args.json else sys.stdout)
    archives = result["archives"]
    return 0 if archives["valid"] and archives["same_content"] else 1


if __name__ == "__main__":
    sys.exit(main())
