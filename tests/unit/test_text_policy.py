"""The ISO-8859-1 policy: transliterate or fail, never drop a character silently."""

from __future__ import annotations

import pytest

from bus.errors import DocumentError
from transformers.text_policy import TextPolicy, check_latin1, check_text, classify, to_latin1

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


# -- characters no document carries, whatever its encoding ---------------------------------

REFUSED = [
    # (text, character shown, rule, what it is)
    ("a\x01b", "U+0001", "xml-char", "control character"),
    ("a\x7fb", "U+007F", "control-char", "control character"),
    ("a\ud800b", "U+D800", "lone-surrogate", "lone surrogate"),
    ("a\udc80b", "U+DC80", "lone-surrogate", "lone surrogate"),
    ("a\ufffdb", "U+FFFD (REPLACEMENT CHARACTER)", "replacement-char", "the source's encoding was wrong"),
    ("a\u202eb", "U+202E (RIGHT-TO-LEFT OVERRIDE)", "bidi-control", "bidirectional override"),
    ("a\u202ab", "U+202A (LEFT-TO-RIGHT EMBEDDING)", "bidi-control", "bidirectional override"),
    ("a\u2066b", "U+2066 (LEFT-TO-RIGHT ISOLATE)", "bidi-control", "bidirectional override"),
    ("a\u2069b", "U+2069 (POP DIRECTIONAL ISOLATE)", "bidi-control", "bidirectional override"),
    ("a\u200bb", "U+200B (ZERO WIDTH SPACE)", "zero-width", "zero-width character"),
    ("a\u200db", "U+200D (ZERO WIDTH JOINER)", "zero-width", "zero-width character"),
    ("a\u200fb", "U+200F (RIGHT-TO-LEFT MARK)", "zero-width", "zero-width character"),
    ("a\ufeffb", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)", "zero-width", "zero-width character"),
    ("a\uffffb", "U+FFFF", "xml-char", "non-character"),
]


@pytest.mark.parametrize("policy", [T, F])
@pytest.mark.parametrize(("text", "shown", "rule", "what"), REFUSED, ids=[r[2] + "-" + r[1][:6] for r in REFUSED])
def test_characters_no_document_carries_are_refused_under_both_policies(
    policy: TextPolicy, text: str, shown: str, rule: str, what: str
) -> None:
    # Given a field holding an invisible, broken or control character, When it is made latin-1
    with pytest.raises(DocumentError) as caught:
        to_latin1(text, policy=policy, field="objet", file="acte.json")
    # Then it is refused, naming the file, the field, the character, what it is and where
    [problem] = caught.value.problems
    assert (problem.file, problem.field, problem.rule) == ("acte.json", "objet", rule)
    assert f"character {shown} at position 2 is a" in problem.message
    assert what in problem.message
    assert caught.value.rule == rule and caught.value.path == "acte.json"


def test_a_replacement_character_says_the_source_encoding_is_wrong() -> None:
    [problem] = check_latin1("D\ufffdlib\u00e9ration", policy=T, field="objet")
    assert "decoded with the wrong encoding" in problem.message


def test_fail_refuses_c1_controls_although_latin1_encodes_them() -> None:
    # Given a Windows-1252 apostrophe read as latin-1 (U+0092), When the policy is FAIL
    problems = check_latin1("l\x92acte \x80", policy=F, field="objet", file="a.csv")
    # Then each C1 control is refused as a control character, with the way out
    assert [(p.rule, p.message[:46]) for p in problems] == [
        ("control-char", "character U+0092 at position 2 is a control ch"),
        ("control-char", "character U+0080 at position 8 is a control ch"),
    ]
    assert "transliterate to read it as Windows-1252" in problems[0].message


@pytest.mark.parametrize("byte", [0x81, 0x8D, 0x8F, 0x90, 0x9D])
def test_transliterate_refuses_c1_bytes_windows_1252_leaves_undefined(byte: int) -> None:
    [problem] = check_latin1(f"a{chr(byte)}b", policy=T, field="objet")
    assert problem.rule == "control-char"
    assert f"byte 0x{byte:02X} is not a Windows-1252 character either" in problem.message


def test_transliterate_still_reads_the_defined_c1_bytes_as_windows_1252() -> None:
    # Given every C1 byte Windows-1252 defines but † ‡ ‰, which have no latin-1 transliteration
    defined = [b for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D, 0x86, 0x87, 0x89)]
    result = to_latin1("".join(map(chr, defined)), policy=T, field="objet")
    result.encode("iso-8859-1")
    assert not any(0x7F <= ord(ch) <= 0x9F for ch in result)
    assert result == "EUR'f\"...^S<OEZ''\"\"---~TMs>oezY"


def test_a_c1_byte_read_as_windows_1252_without_transliteration_says_what_it_reads() -> None:
    [problem] = check_latin1("5 \x89", policy=T, field="objet")
    assert problem.rule == "control-char"
    assert "read as Windows-1252 it is U+2030 ‰, which has no transliteration" in problem.message


def test_del_is_refused_under_both_policies() -> None:
    assert [p.rule for p in check_latin1("a\x7f", policy=T, field="objet")] == ["control-char"]
    assert [p.rule for p in check_latin1("a\x7f", policy=F, field="objet")] == ["control-char"]


def test_a_lone_surrogate_never_crashes_and_is_named_without_being_copied() -> None:
    # Given a JSON sidecar's "\ud800" in a referent's name
    problems = check_latin1("Jean \ud800 Dupont", policy=T, field="referent_name", file="d.json")
    # Then it is a problem whose message can itself be written in UTF-8
    [problem] = problems
    assert problem.rule == "lone-surrogate" and "position 6" in problem.message
    problem.message.encode("utf-8")


def test_every_refused_character_is_listed_none_dropped() -> None:
    problems = check_latin1("\u200ba\u202eb\x7fc\ufffd", policy=T, field="objet")
    assert [p.rule for p in problems] == ["zero-width", "bidi-control", "control-char", "replacement-char"]
    assert ["position 1" in problems[0].message, "position 7" in problems[3].message] == [True, True]


def test_messages_never_carry_the_refused_character_itself() -> None:
    for text, _, _, _ in REFUSED:
        for problem in check_latin1(text, policy=T, field="objet"):
            assert text[1] not in problem.message


def test_carriage_return_is_kept_by_the_policy_the_field_decides() -> None:
    # newlines are the field's rule (objet-newline in actes_rules), not the encoding's
    assert to_latin1("a\r\nb\tc", policy=F, field="objet") == "a\r\nb\tc"


# -- check_text: the same classification for UTF-8 formats (DECP) ------------------------------


def test_check_text_accepts_any_printable_unicode() -> None:
    assert check_text("Réfection — cœur 漢 😀 €\t\n", field="objet") == []


@pytest.mark.parametrize(("text", "shown", "rule", "what"), REFUSED, ids=[r[2] + "-" + r[1][:6] for r in REFUSED])
def test_check_text_refuses_what_classify_names(text: str, shown: str, rule: str, what: str) -> None:
    [problem] = check_text(text, field="titulaires[0].id", file="contrat.json")
    assert (problem.file, problem.field, problem.rule) == ("contrat.json", "titulaires[0].id", rule)
    assert f"{shown} at position 2" in problem.message


def test_check_text_refuses_every_c1_control_even_those_windows_1252_defines() -> None:
    assert [p.rule for p in check_text("l\x92acte", field="objet")] == ["control-char"]


def test_classify_is_the_one_list() -> None:
    assert classify("a") is None and classify("\t") is None and classify("\u00a0") is None
    assert classify("\x00") == ("xml-char", "control character")
    assert classify("\x9f") == ("control-char", "control character")
    assert classify("\u2028") is None  # not latin-1 (the latin-1 rule), legal in UTF-8 XML
