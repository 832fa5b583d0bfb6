"""The ISO-8859-1 policy: transliterate or fail, never drop a character silently."""

from __future__ import annotations

import pytest

from bus.errors import DocumentError
from transformers.text_policy import TextPolicy, check_latin1, to_latin1

T = TextPolicy.TRANSLITERATE
F = TextPolicy.FAIL


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("cœur", "coeur"),
        ("ŒUVRE", "OEUVRE"),
        ("l’acte ‘cité’", "l'acte 'cité'"),
        ("“Objet”", '"Objet"'),
        ("40 000 €", "40 000 EUR"),
        ("a — b – c", "a - b - c"),
        ("et…", "et..."),
        ("article\u00a0L.\u202f2131-1", "article L. 2131-1"),
        ("Délibération à l'ordre du jour", "Délibération à l'ordre du jour"),
        ("ﬁnances", "finances"),  # NFKC ligature
        ("Łódź ŝ", "Lódz s"),  # NFKD: base letter; ó is latin-1
    ],
)
def test_transliterate_replaces_what_latin1_lacks(given: str, expected: str) -> None:
    # Given French text with typographic characters, When transliterated
    result = to_latin1(given, policy=T, field="objet")
    # Then it is the expected latin-1 text
    assert result == expected
    result.encode("iso-8859-1")


def test_transliterate_reads_c1_controls_as_windows_1252() -> None:
    assert to_latin1("l\x92acte \x80", policy=T, field="objet") == "l'acte EUR"


def test_latin1_text_passes_unchanged_under_fail() -> None:
    assert to_latin1("Fichier signé parapheur", policy=F, field="objet") == "Fichier signé parapheur"


def test_fail_names_field_character_position_and_rule() -> None:
    with pytest.raises(DocumentError) as caught:
        to_latin1("Le cœur", policy=F, field="objet", file="acte.pdf")
    error = caught.value
    assert error.field == "objet"
    assert error.rule == "latin-1"
    assert error.path == "acte.pdf"
    assert "U+0153 œ" in error.message
    assert "position 5" in error.message
    [problem] = error.problems
    assert (problem.file, problem.field, problem.rule) == ("acte.pdf", "objet", "latin-1")


def test_fail_lists_every_refused_character() -> None:
    problems = check_latin1("l’œuvre €", policy=F, field="objet")
    assert [p.rule for p in problems] == ["latin-1", "latin-1", "latin-1"]
    assert ["U+2019 ’" in problems[0].message, "U+0153 œ" in problems[1].message] == [True, True]
    assert "U+20AC €" in problems[2].message


def test_transliterate_fails_on_what_has_no_equivalent() -> None:
    # Given characters with no latin-1 transliteration (CJK, emoji)
    with pytest.raises(DocumentError) as caught:
        to_latin1("ok 漢 😀", policy=T, field="referent_name")
    # Then each is reported, none dropped
    assert [p.rule for p in caught.value.problems] == ["latin-1", "latin-1"]
    assert "U+6F22" in caught.value.problems[0].message
    assert "position 4" in caught.value.problems[0].message
    assert "U+1F600" in caught.value.problems[1].message


@pytest.mark.parametrize("policy", [T, F])
def test_xml_forbidden_controls_are_refused(policy: TextPolicy) -> None:
    problems = check_latin1("a\x01b", policy=policy, field="objet")
    assert [(p.field, p.rule) for p in problems] == [("objet", "xml-char")]


def test_tab_and_newline_are_kept() -> None:
    assert to_latin1("a\tb\nc", policy=F, field="objet") == "a\tb\nc"


def test_policy_is_a_string_enum() -> None:
    assert TextPolicy("fail") is F
    assert T == "transliterate"
