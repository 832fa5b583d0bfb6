"""Hostile sidecars through the three example mappings (JSON, CSV, XML): each one maps or is refused
with the sidecar, the field and the rule named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.hostile._corpus import (
    CONTROL_VALUES,
    ENTITY_ATTACKS,
    ENTITY_REFERENCES,
    HUGE,
    WRONG_TYPES,
    attempt,
    deep_json,
    deep_xml,
    encodings,
    truncations,
)
from transformers.actes_model import Collectivite
from transformers.mapping import Mapping

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "config" / "mappings"
SIDECARS = ROOT / "tests" / "fixtures" / "sidecars"
COLLECTIVITES = {"214400152": Collectivite("214400152", "044", 1, "31", ("actes@mairie.example",),
                                           classification_date=date(2025, 3, 1))}
HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "C:\\Windows\\win.ini", "CON.pdf", "nul", "a\x00b.pdf",
                 "a\nb.pdf", "x" * 300 + ".pdf", "..", "\\\\server\\share\\a.pdf"]

JSON_TEXT = (SIDECARS / "deliberation.json").read_text(encoding="utf-8")
CSV_BYTES = (SIDECARS / "arrete-rh.csv").read_bytes()
XML_TEXT = (SIDECARS / "contrat.xml").read_text(encoding="utf-8")
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


def _json_with(field: str, value: Any) -> bytes:
    record = json.loads(JSON_TEXT)
    record[field] = value
    return json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")


def json_cases() -> Iterator[tuple[str, bytes]]:
    yield from truncations(JSON_TEXT.encode(), 6)
    yield from encodings(JSON_TEXT)
    for field in ("objet", "numero", "classification"):
        for name, value in {**CONTROL_VALUES, **HUGE, **WRONG_TYPES}.items():
            yield f"{field}={name}", _json_with(field, value)
    for name, value in WRONG_TYPES.items():
        yield f"annexes={name}", _json_with("annexes", value)
        yield f"seance={name}", _json_with("seance", value)
    for index, name in enumerate(HOSTILE_NAMES):
        yield f"fichier=hostile-{index}", _json_with("fichier", name)
        yield f"annex=hostile-{index}", _json_with("annexes", [{"fichier": name}])
    yield "deep-nesting", deep_json(100_000)
    yield "deep-object", b'{"a":' * 5000 + b"1" + b"}" * 5000
    yield "not-an-object", b'"just a string"'
    yield "many-annexes", _json_with("annexes", [{"fichier": f"a{n}.pdf"} for n in range(10_000)])
    yield "huge-number", JSON_TEXT.replace('"3.2"', "1" + "0" * 5000).encode()
    yield "duplicate-keys", JSON_TEXT.replace('"numero": "DEL2026_042"', '"numero": "A", "numero": "B"').encode()


def csv_cases() -> Iterator[tuple[str, bytes]]:
    header, _, row = CSV_BYTES.partition(b"\n")
    yield from truncations(CSV_BYTES, 6)
    yield from encodings(CSV_BYTES.decode("latin-1"))
    for name, value in {**CONTROL_VALUES, **HUGE}.items():
        cell = value.encode("latin-1", "replace")
        yield f"objet={name}", CSV_BYTES.replace(b"Nomination de Mme", cell)
    for index, name in enumerate(HOSTILE_NAMES):
        yield f"fichier=hostile-{index}", CSV_BYTES.replace(b";AR2026_0187.pdf;", f";{name};".encode("latin-1",
                                                                                                     "replace"))
    yield "unbalanced-quote", CSV_BYTES.replace(b";Nomination", b';"Nomination')
    yield "huge-quoted-cell", header + b"\n" + b'"' + b"x" * 300_000 + b'"' + row
    yield "many-rows", CSV_BYTES + row * 1000
    yield "only-header", header
    yield "many-columns", header + b";x" * 10_000 + b"\n" + row
    yield "binary", bytes(range(256)) * 4


def _xml(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def xml_cases() -> Iterator[tuple[str, bytes]]:
    yield from truncations(XML_TEXT.encode(), 6)
    yield from encodings(XML_TEXT.replace('encoding="UTF-8"', ""))
    for name, doctype in ENTITY_ATTACKS.items():
        text = XML_TEXT.replace(XML_HEAD, XML_HEAD + doctype)
        text = text.replace("<fin:objet>", "<fin:objet>" + ENTITY_REFERENCES.get(name, ""))
        yield f"entities-{name}", _xml(text)
    for name, value in {**CONTROL_VALUES, **HUGE}.items():
        escaped = value.replace("&", "&amp;").replace("<", "&lt;")
        yield f"objet={name}", _xml(XML_TEXT.replace("Marché de travaux", escaped))
        yield f"objet-charref={name}", _xml(XML_TEXT.replace("Marché", "".join(f"&#{ord(c)};" for c in value[:50])))
    for index, name in enumerate(HOSTILE_NAMES):
        attribute = name.replace("&", "&amp;").replace('"', "&quot;").replace("\x00", "&#0;").replace("\n", "&#10;")
        yield f"fichier=hostile-{index}", _xml(XML_TEXT.replace('"MAR2026_0031_acte_engagement.pdf"', f'"{attribute}"'))
    yield "deep-nesting", XML_TEXT.replace("<fin:objet>", "<fin:objet>" + deep_xml(5000).decode()).encode()
    yield "deep-just-enough", XML_TEXT.replace("<fin:objet>", "<fin:objet>" + deep_xml(40).decode()).encode()
    yield "many-attributes", XML_TEXT.replace("<fin:contrat>", "<fin:contrat " + " ".join(
        f'a{n}="1"' for n in range(20_000)) + ">").encode()
    yield "undeclared-prefix", XML_TEXT.replace("<fin:objet>", "<zz:x/><fin:objet>").encode()
    yield "cdata-bomb", XML_TEXT.replace("<fin:objet>", "<fin:objet><![CDATA[" + "]]" * 100_000 + "]]>").encode()
    yield "processing-instruction", XML_TEXT.replace(XML_HEAD, XML_HEAD + '<?xml-stylesheet href="http://x/"?>').encode()
    yield "two-roots", (XML_TEXT + "<fin:export/>").encode()


FORMATS = {
    "json": ("deliberations-json.yaml", "d.json", json_cases,
             ["DEL2026_042.pdf", "DEL2026_042_plan_cadastral.pdf", "DEL2026_042_avis_domaines.pdf"]),
    "csv": ("rh-csv.yaml", "a.csv", csv_cases,
            ["AR2026_0187.pdf", "AR2026_0187_avis_CAP.pdf", "AR2026_0187_fiche_poste.pdf"]),
    "xml": ("contrats-xml.yaml", "c.xml", xml_cases,
            ["MAR2026_0031_acte_engagement.pdf", "MAR2026_0031_CCAP.pdf", "MAR2026_0031_rapport_presentation.pdf"]),
}
CASES = [(kind, case, data) for kind, (_, _, cases, _) in FORMATS.items() for case, data in cases()]


@pytest.fixture(scope="module")
def mappings() -> dict[str, Mapping]:
    return {kind: Mapping.load(MAPPINGS / spec[0]) for kind, spec in FORMATS.items()}


@pytest.mark.parametrize(("kind", "case", "data"), CASES, ids=[f"{k}-{c}" for k, c, _ in CASES])
def test_a_hostile_sidecar_maps_or_is_refused_by_name(mappings: dict[str, Mapping], tmp_path: Path, kind: str,
                                                       case: str, data: bytes) -> None:
    _, sidecar_name, _, names = FORMATS[kind]
    files = {}
    for name in names:
        (tmp_path / name).write_bytes(b"%PDF-1.4\n%%EOF\n")
        files[name] = tmp_path / name
    mapping = mappings[kind]
    attempt(f"sidecar-{kind}", f"{case}:referenced", lambda: mapping.referenced_files(sidecar_name, data))
    attempt(f"sidecar-{kind}", case, lambda: mapping.map(sidecar_name, data, files, COLLECTIVITES),
            shown=lambda act: f"mapped: {act.numero_interne!r:.60}")
