"""Hostile text: control characters, invisible and broken characters, and wrong encodings in the fields
of JSON, CSV and XML sidecars and of database rows, through the example mappings to the built ACTES
archive (under both text policies) and DECP XML and JSON.

Each case ends in a named document error (the file, and for a character the field and the rule) or a
clean conversion; never an exception escaping, and never U+FFFD, a control, a bidi or zero-width
character (nor a character reference standing for one) in the bytes that would be sent.
"""

from __future__ import annotations

import codecs
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from bus.errors import DocumentError
from tests.hostile._corpus import attempt
from tests.hostile.test_rows_and_files import ROW
from tests.hostile.test_sidecars import COLLECTIVITES, CSV_BYTES, FORMATS, JSON_TEXT, MAPPINGS, XML_TEXT
from transformers.actes_out import build_archive
from transformers.decp import build_json, build_xml
from transformers.decp_mapping import ContractMapping
from transformers.mapping import Mapping
from transformers.text_policy import TextPolicy

TODAY = date(2027, 1, 4)
#: the fixtures, their e-mails in a domain ACTES takes (its pattern allows a top-level domain of 2 to 6 letters)
JSON_TEXT = JSON_TEXT.replace("mairie.example", "mairie.fr")
CSV_BYTES = CSV_BYTES.replace(b"mairie.example", b"mairie.fr")
XML_TEXT = XML_TEXT.replace("mairie.example", "mairie.fr").replace(" — lot 2", ", lot 2")  # latin-1 for FAIL
COLLECTIVITES = {siren: replace(c, return_emails=("actes@mairie.fr",)) for siren, c in COLLECTIVITES.items()}
#: what no sent byte may stand for (independent of the code under test): C0 but tab/LF/CR, DEL, C1,
#: surrogates, U+FFFD, bidi embeddings/overrides/isolates, zero-width characters, U+FEFF, U+FFFE/U+FFFF
FORBIDDEN = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffd\u202a-\u202e\u2066-\u2069"
    "\u200b-\u200f\u2060\ufeff\ufffe\uffff]"
)
MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€")

T, F = TextPolicy.TRANSLITERATE, TextPolicy.FAIL
REFUSED = object()  #: any named refusal will do


@dataclass(frozen=True)
class Case:
    """A hostile sidecar and what must come of it under each policy: a rule it is refused with, the
    text the Objet must hold once built, or REFUSED (some named error)."""

    kind: str  #: json, csv, xml (ACTES) or row (DECP)
    name: str
    data: bytes
    transliterate: str | object  #: rule, REFUSED, or "=text" for the built Objet
    fail: str | object | None = None  #: the same under FAIL (default: as transliterate)
    field: str | None = "objet"  #: the field a character refusal names


# -- the cases -----------------------------------------------------------------------------

#: (name, character(s), transliterate, fail) put into an Objet in the middle of a word
CHARACTERS: list[tuple[str, str, str | object, str | object]] = [
    ("nul", "\x00", "xml-char", "xml-char"),
    ("bell", "\x07", "xml-char", "xml-char"),
    ("escape", "\x1b", "xml-char", "xml-char"),
    ("vertical-tab", "\x0b", "xml-char", "xml-char"),
    ("del", "\x7f", "control-char", "control-char"),
    ("c1-cp1252-quote", "\x92", "=l'acte", "control-char"),
    ("c1-nel", "\x85", "=l...acte", "control-char"),
    ("c1-undefined-81", "\x81", "control-char", "control-char"),
    ("c1-undefined-9d", "\x9d", "control-char", "control-char"),
    ("lone-high-surrogate", "\ud800", "lone-surrogate", "lone-surrogate"),
    ("lone-low-surrogate", "\udc80", "lone-surrogate", "lone-surrogate"),
    ("replacement", "\ufffd", "replacement-char", "replacement-char"),
    ("rlo", "\u202e", "bidi-control", "bidi-control"),
    ("lre", "\u202a", "bidi-control", "bidi-control"),
    ("rli", "\u2067", "bidi-control", "bidi-control"),
    ("zero-width-space", "\u200b", "zero-width", "zero-width"),
    ("zero-width-joiner", "\u200d", "zero-width", "zero-width"),
    ("rlm", "\u200f", "zero-width", "zero-width"),
    ("bom-inside", "\ufeff", "zero-width", "zero-width"),
    ("non-character", "\uffff", "xml-char", "xml-char"),
    ("newline", "\n", "objet-newline", "objet-newline"),
    ("carriage-return", "\r", "objet-newline", "objet-newline"),
    ("tab", "\t", "=l\tacte", "=l\tacte"),
    ("no-break-space", "\u00a0", "=l acte", "=l\u00a0acte"),
    ("typographic", "’", "=l'acte", "latin-1"),
]


def _json(change: Callable[[dict[str, Any]], None]) -> bytes:
    record = json.loads(JSON_TEXT)
    change(record)
    try:
        return json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: written as the exporter would, a JSON escape
        return json.dumps(record).encode("ascii")


def _json_objet(text: str) -> bytes:
    def change(record: dict[str, Any]) -> None:
        record["objet"] = text

    return _json(change)


def json_cases() -> Iterator[Case]:
    for name, char, translit, fail in CHARACTERS:
        yield Case("json", f"objet={name}", _json_objet(f"l{char}acte"), translit, fail)
    # a JSON escape, not a byte: "\ud800" written by the exporter
    yield Case(
        "json",
        "objet=escaped-lone-surrogate",
        JSON_TEXT.replace("Cession", "Ces\\ud800sion").encode(),
        "lone-surrogate",
        "lone-surrogate",
    )
    yield Case("json", "objet=escaped-nul", JSON_TEXT.replace("Cession", "Ces\\u0000sion").encode(), "xml-char")
    for name, char, rule in (
        ("rlo", "\u202e", "bidi-control"),
        ("c1", "\x9d", "control-char"),
        ("newline", "\n", "referent-newline"),
        ("zero-width", "\u200b", "zero-width"),
    ):

        def referent(record: dict[str, Any], char: str = char) -> None:
            record["redacteur"]["nom"] = f"Maëlle{char}Le Goff"

        yield Case("json", f"referent_name={name}", _json(referent), rule, field="referent_name")
    yield Case(
        "json",
        "referent_phone=bell",
        JSON_TEXT.replace("02 28 25", "02\x07 28 25").replace("\x07", "\\u0007").encode(),
        "xml-char",
        field="referent_phone",
    )
    yield Case(
        "json",
        "numero=bidi",
        JSON_TEXT.replace('"DEL2026_042"', '"DEL2026\\u202e_042"').encode(),
        "numero-interne-pattern",
        field="numero_interne",
    )
    yield Case(
        "json",
        "referent_email=zero-width",
        JSON_TEXT.replace("m.legoff@", "m.legoff\\u200b@").encode(),
        "email-pattern",
        field="referent_email",
    )
    for name, char in (("rlo", "\u202e"), ("zero-width", "\u200b"), ("replacement", "\ufffd"), ("c1", "\x85")):
        file_name = f"DEL2026_042{char}fdp.pdf"
        yield Case(
            "json",
            f"fichier={name}",
            JSON_TEXT.replace('"DEL2026_042.pdf"', json.dumps(file_name)).encode(),
            "file-name",
            field="main_document.file",
        )
    # wrong encodings
    text = JSON_TEXT.replace("Cession", "Délibération l’acte, cession")
    yield Case("json", "latin-1-bytes-utf-8-declared", text.replace("’", "'").encode("latin-1"), "encoding", field=None)
    yield Case("json", "cp1252-smart-quote-utf-8-declared", text.encode("cp1252"), "encoding", field=None)
    yield Case("json", "utf-16-le-bom", codecs.BOM_UTF16_LE + text.encode("utf-16-le"), "encoding", field=None)
    yield Case("json", "utf-16-be-no-bom", text.encode("utf-16-be"), "encoding", field=None)
    yield Case("json", "utf-32", text.encode("utf-32"), "encoding", field=None)
    yield Case("json", "overlong-utf-8", text.encode().replace(b"cession", b"ces\xc0\xafsion"), "encoding", field=None)
    yield Case("json", "overlong-nul", text.encode().replace(b"cession", b"ces\xc0\x80sion"), "encoding", field=None)
    yield Case("json", "truncated-multibyte", text.encode().replace("é".encode(), b"\xc3", 1), "encoding", field=None)
    yield Case("json", "truncated-at-end", text.encode()[:-1] + b"\xe2\x80", "encoding", field=None)
    yield Case(
        "json", "encoded-surrogate", text.encode().replace(b"cession", b"ces\xed\xa0\x80sion"), "encoding", field=None
    )
    yield Case("json", "utf-8-bom", codecs.BOM_UTF8 + text.encode(), "=Délibération l'acte", "latin-1")
    yield Case("json", "decoded-wrong-upstream", text.replace("é", "\ufffd").encode(), "replacement-char")


def _csv_objet(cell: bytes) -> bytes:
    return CSV_BYTES.replace(b"Nomination de Mme", cell)


def csv_cases() -> Iterator[Case]:
    for name, char, translit, fail in CHARACTERS:
        if char in "\n\r" or ord(char) > 0xFF:  # a line break splits the row; the CSV is latin-1
            continue
        if char == "\x00":  # no text holds a NUL byte: the sidecar is not read at all
            yield Case("csv", f"objet={name}", _csv_objet(b"l\x00acte"), "encoding", field=None)
            continue
        yield Case("csv", f"objet={name}", _csv_objet(f"l{char}acte".encode("latin-1")), translit, fail)
    yield Case("csv", "objet=quoted-newline", _csv_objet(b'"l\nacte"'), "objet-newline")
    yield Case(
        "csv", "gestionnaire=c1", CSV_BYTES.replace(b"Ga\xeblle", b"Ga\x8dlle"), "control-char", field="referent_name"
    )
    yield Case(
        "csv",
        "gestionnaire=cp1252-apostrophe",
        CSV_BYTES.replace(b"Ga\xebl", b"Ga\x92l"),
        "=Nomination de Mme",
        "control-char",
        field="referent_name",
    )
    text = CSV_BYTES.decode("latin-1")
    yield Case("csv", "utf-8-bytes-latin-1-said", text.encode("utf-8"), "encoding", field=None)
    yield Case("csv", "utf-8-bom", codecs.BOM_UTF8 + CSV_BYTES, "encoding", field=None)
    yield Case("csv", "utf-16-bom", text.encode("utf-16"), "encoding", field=None)
    yield Case("csv", "utf-16-be-no-bom", text.encode("utf-16-be"), "encoding", field=None)


XML_OBJET = "Marché de travaux"


def _xml(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def xml_cases() -> Iterator[Case]:
    for name, char, translit, fail in CHARACTERS:
        if name == "nul":  # no text holds a NUL byte: the sidecar is not read at all
            yield Case("xml", f"objet={name}", _xml(XML_TEXT.replace(XML_OBJET, "l\x00acte")), "encoding", field=None)
            continue
        if name in ("bell", "escape", "vertical-tab", "non-character"):  # not even XML: refused as such
            yield Case(
                "xml", f"objet={name}", _xml(XML_TEXT.replace(XML_OBJET, f"l{char}acte")), "xml-syntax", field=None
            )
            continue
        if "surrogate" in name:  # no encoding writes one: the bytes are invalid UTF-8
            yield Case(
                "xml", f"objet={name}", _xml(XML_TEXT.replace(XML_OBJET, f"l{char}acte")), "encoding", field=None
            )
            continue
        reference = "".join(f"&#x{ord(c):X};" for c in char)
        yield Case(
            "xml", f"objet-charref={name}", _xml(XML_TEXT.replace(XML_OBJET, f"l{reference}acte")), translit, fail
        )
    yield Case("xml", "objet-literal-rlo", _xml(XML_TEXT.replace(XML_OBJET, "l\u202eacte")), "bidi-control")
    yield Case("xml", "objet-literal-c1", _xml(XML_TEXT.replace(XML_OBJET, "l\x85acte")), "=l...acte", "control-char")
    yield Case("xml", "latin-1-bytes-utf-8-declared", XML_TEXT.encode("latin-1", "replace"), "encoding", field=None)
    yield Case(
        "xml",
        "utf-8-bytes-latin-1-declared",
        XML_TEXT.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode(),
        "encoding",
        field=None,
    )
    bare = XML_TEXT.replace('encoding="UTF-8"', 'encoding="UTF-16"')
    yield Case("xml", "utf-16-bom", bare.encode("utf-16"), f"={XML_OBJET}", field=None)
    yield Case("xml", "utf-16-no-bom", bare.encode("utf-16-le"), "encoding", field=None)
    yield Case(
        "xml",
        "cp1252-declared-smart-quote",
        XML_TEXT.replace('encoding="UTF-8"', 'encoding="windows-1252"').replace(XML_OBJET, "l’acte").encode("cp1252"),
        "=l'acte",
        "latin-1",
    )


def _row(**changes: Any) -> bytes:
    try:
        return json.dumps({**ROW, **changes}, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: a JSON escape, as a database driver writes it
        return json.dumps({**ROW, **changes}).encode("ascii")


def row_cases() -> Iterator[Case]:
    # DECP is UTF-8: latin-1 does not apply; every character class above is refused, printable Unicode kept
    for name, char, _, _ in CHARACTERS:
        kept = name in ("tab", "no-break-space", "typographic", "newline", "carriage-return")
        for field, column in (("objet", "objet"), ("id", "numero_marche"), ("lieuExecution.code", "lieu_code")):
            if field != "objet" and kept:
                continue
            rule = (
                f"=Réfection l{char}acte"
                if kept
                else (
                    "xml-char"
                    if name in ("nul", "bell", "escape", "vertical-tab", "non-character")
                    else CHARACTERS[[c[0] for c in CHARACTERS].index(name)][3]
                )
            )
            rule = "control-char" if name.startswith("c1-") and not kept else rule
            value = f"Réfection l{char}acte" if field == "objet" else f"4{char}2"
            yield Case("row", f"{field}={name}", _row(**{column: value}), rule, field=field)
    yield Case("row", "objet=cjk-and-emoji", _row(objet="Réfection 漢 😀 — œuvre €"), "=Réfection 漢 😀 — œuvre €")
    yield Case("row", "utf-16-bom", codecs.BOM_UTF16_LE + json.dumps(ROW).encode("utf-16-le"), "encoding", field=None)
    yield Case(
        "row",
        "latin-1-bytes",
        _row().replace("Réfection".encode(), "Réfection".encode("latin-1")),
        "encoding",
        field=None,
    )
    yield Case("row", "overlong", _row().replace("Réfection".encode(), b"R\xc0\xa9fection"), "encoding", field=None)


CASES = [*json_cases(), *csv_cases(), *xml_cases(), *row_cases()]


# -- the checks ----------------------------------------------------------------------------


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(".xml")}  # type: ignore[union-attr]


def assert_clean(name: str, data: bytes, encoding: str) -> str:
    """The built document holds no forbidden character, escaped or not, and no mojibake."""
    text = data.decode(encoding)
    assert not FORBIDDEN.search(text), f"{name}: {FORBIDDEN.search(text)!r} in the built bytes"
    for found in re.finditer(r"&#(x[0-9A-Fa-f]+|[0-9]+);", text):
        code = int(found.group(1)[1:], 16) if found.group(1)[0] == "x" else int(found.group(1))
        assert not FORBIDDEN.match(chr(code)), f"{name}: {found.group()} in the built bytes"
    assert not MOJIBAKE.search(text), f"{name}: mojibake {MOJIBAKE.search(text)!r}"
    return text


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.fixture(scope="module")
def mappings() -> dict[str, Mapping]:
    return {kind: Mapping.load(MAPPINGS / spec[0]) for kind, spec in FORMATS.items()}


@pytest.fixture(scope="module")
def contracts() -> ContractMapping:
    return ContractMapping.load(MAPPINGS / "contrats-decp.yaml")


def _build_act(mapping: Mapping, kind: str, data: bytes, files: dict[str, Path], policy: TextPolicy) -> Any:
    sidecar_name = FORMATS[kind][1]
    act = mapping.map(sidecar_name, data, files, COLLECTIVITES)
    out = io.BytesIO()
    build_archive(
        act, out, quadrigram="EACT", trigram="SLO", serial=1, generation_date=TODAY, today=TODAY, text_policy=policy
    )
    return act, _members(out.getvalue())


def _check_outcome(case: Case, outcome: Any, expected: str | object, sidecar: str) -> str | None:
    """The built text, or None when refused as expected."""
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, DocumentError), outcome
        assert outcome.problems, f"{case.name}: refused without a problem listed"
        rules = [p.rule for p in outcome.problems]
        assert all(p.file == sidecar for p in outcome.problems), [p.file for p in outcome.problems]
        assert expected is REFUSED or (isinstance(expected, str) and not expected.startswith("=")), (
            f"{case.name}: refused ({rules}) but expected {expected!r}: {outcome}"
        )
        if expected is not REFUSED:
            named = [p for p in outcome.problems if p.rule == expected]
            assert named, f"{case.name}: expected rule {expected}, got {rules}: {outcome}"
            assert all(p.field == case.field for p in named), [p.field for p in named]
        return None
    assert isinstance(expected, str) and expected.startswith("="), f"{case.name}: built, but expected {expected!r}"
    return expected[1:]


ACTES = [(case, policy) for case in CASES if case.kind != "row" for policy in (T, F)]


@pytest.mark.parametrize(("case", "policy"), ACTES, ids=[f"{c.kind}-{c.name}-{p}" for c, p in ACTES])
def test_hostile_text_in_an_act_is_refused_by_name_or_built_clean(
    mappings: dict[str, Mapping], tmp_path: Path, case: Case, policy: TextPolicy
) -> None:
    # Given the act's files and a sidecar holding the hostile text
    _, sidecar_name, _, names = FORMATS[case.kind]
    files = {}
    for name in names:
        (tmp_path / name).write_bytes(b"%PDF-1.4\n%%EOF\n")
        files[name] = tmp_path / name
    # When it is mapped and its archive built under the policy
    outcome = attempt(
        f"text-{case.kind}",
        f"{case.name}:{policy}",
        lambda: _build_act(mappings[case.kind], case.kind, case.data, files, policy),
        lost=lambda built: not built[1],
        shown=lambda built: f"built: {built[0].objet!r:.60}",
    )
    expected = case.transliterate if policy is T or case.fail is None else case.fail
    objet = _check_outcome(case, outcome, expected, sidecar_name)
    if objet is None:
        return
    # Then the envelope and the message are ISO-8859-1 without one forbidden character, the Objet as expected
    act, members = outcome
    assert len(members) == 2
    for name, data in members.items():
        text = assert_clean(name, data, "iso-8859-1")
        if name.endswith("_0.xml") and case.field == "objet":
            found = re.search(r"<actes:Objet>(.*)</actes:Objet>", text, re.DOTALL)
            assert found and objet in found.group(1), (found and found.group(1), objet)


ROWS = [case for case in CASES if case.kind == "row"]


@pytest.mark.parametrize("case", ROWS, ids=[c.name for c in ROWS])
def test_hostile_text_in_a_contract_row_is_refused_by_name_or_built_clean(
    contracts: ContractMapping, case: Case
) -> None:
    def build() -> tuple[bytes, bytes]:
        contract = contracts.map("contrats#12.json", case.data)
        return build_xml(contract), build_json(contract)

    outcome = attempt(
        "text-decp-row",
        case.name,
        build,
        lost=lambda built: not all(built),
        shown=lambda built: f"built: {len(built[0])} + {len(built[1])} bytes",
    )
    objet = _check_outcome(case, outcome, case.transliterate, "contrats#12.json")
    if objet is None:
        return
    xml, data = outcome
    assert objet.replace("\n", "&#10;").replace("\r", "&#13;") in assert_clean("decp.xml", xml, "utf-8") or (
        objet in assert_clean("decp.xml", xml, "utf-8")
    )
    assert_clean("decp.json", data, "utf-8")
    strings = list(_strings(json.loads(data)))
    assert not [s for s in strings if FORBIDDEN.search(s)]
    assert objet in strings


def test_the_corpus_has_enough_cases() -> None:
    assert len(CASES) >= 40 and len(ACTES) + len(ROWS) >= 200
