"""DECP text fields: what no document carries (controls, lone surrogates, U+FFFD, bidi, zero-width)
is refused in every text of a contract, naming the field and the rule; printable Unicode is kept."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bus.errors import ValidationFailed
from tests.unit.test_decp import concession, marche
from transformers.decp import build_json, build_xml, check_contract, contract_problems, file_name
from transformers.decp_model import LieuExecution, Titulaire

BAD_TEXTS = {
    "nul": ("a\x00b", "xml-char"),
    "vertical-tab": ("a\x0bb", "xml-char"),
    "del": ("a\x7fb", "control-char"),
    "c1-nel": ("a\x85b", "control-char"),
    "c1-cp1252-quote": ("l\x92acte", "control-char"),
    "lone-surrogate": ("a\ud800b", "lone-surrogate"),
    "replacement": ("D\ufffdlib\u00e9ration", "replacement-char"),
    "rlo": ("abc\u202edcba", "bidi-control"),
    "isolate": ("a\u2067b", "bidi-control"),
    "zero-width-space": ("a\u200bb", "zero-width"),
    "bom-inside": ("a\ufeffb", "zero-width"),
    "non-character": ("a\uffffb", "xml-char"),
}
CASES = [(name, text, rule) for name, (text, rule) in BAD_TEXTS.items()]


def _in_field(field: str, text: str) -> dict[str, Any]:
    """The change putting ``text`` in the marché's ``field`` (a DECP path)."""
    changes: dict[str, dict[str, Any]] = {
        "objet": {"objet": f"Travaux {text}"},
        "id": {"id": text[:16]},
        "titulaires[0].id": {"titulaires": (Titulaire("TVA", f"FR{text}"),)},
        "lieuExecution.code": {"lieuExecution": LieuExecution(f"44{text}", "Code commune")},
        "idAccordCadre": {"idAccordCadre": text[:16], "techniques": ("Accord-cadre",)},
    }
    return changes[field]


FIELDS = ["objet", "id", "titulaires[0].id", "lieuExecution.code", "idAccordCadre"]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(("name", "text", "rule"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_character_in_a_text_field_is_refused_naming_field_and_rule(
    field: str, name: str, text: str, rule: str
) -> None:
    # Given a marché whose text field holds the character
    contract = marche(**_in_field(field, text))
    # When it is checked
    problems = [p for p in contract_problems(contract) if p.rule == rule]
    # Then that field is named with the rule, the sidecar with it, and the character as U+XXXX
    assert [(p.field, p.file) for p in problems] == [(field, "contrat-12.json")]
    assert "U+" in problems[0].message and "position" in problems[0].message


@pytest.mark.parametrize(("name", "text", "rule"), CASES, ids=[c[0] for c in CASES])
def test_neither_xml_nor_json_is_built_with_the_character(name: str, text: str, rule: str) -> None:
    contract = marche(objet=f"Travaux {text}")
    for build in (build_xml, build_json):
        with pytest.raises(ValidationFailed) as caught:
            build(contract)
        assert (caught.value.field, caught.value.rule) == ("objet", rule)
        assert caught.value.path == "contrat-12.json"


def test_a_list_item_and_a_concession_holder_are_checked_too() -> None:
    problems = contract_problems(concession(concessionnaires=(Titulaire("TVA", "FR\u202e1"),)))
    assert [(p.field, p.rule) for p in problems] == [("concessionnaires[0].id", "bidi-control")]
    contract = marche(considerationsSociales=("Clause sociale\u200b",))
    assert {(p.field, p.rule) for p in contract_problems(contract)} >= {("considerationsSociales[0]", "zero-width")}


def test_a_replacement_character_says_the_source_encoding_was_wrong() -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_contract(marche(objet="R\ufffdfection"))
    assert "decoded with the wrong encoding" in caught.value.problems[0].message


def test_printable_unicode_and_newlines_are_kept_in_utf8() -> None:
    # Given an objet outside latin-1 (latin-1 does not apply to DECP) and on two lines
    objet = "Réfection — cœur de ville ’Œuvre’ 漢\nlot 2\ttranche ferme"
    contract = marche(objet=objet)
    # Then it is built, and written as it is
    assert objet.encode("utf-8") in build_xml(contract).replace(b"&#10;", b"\n")
    assert contract_problems(contract) == []


def test_a_file_name_from_an_id_with_a_lone_surrogate_does_not_crash() -> None:
    assert file_name(replace(marche(), id="A\ud800B"), "xml").startswith("DECP_21440015200013_A-B-")
