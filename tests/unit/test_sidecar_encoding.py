"""A sidecar's bytes are read strictly in the encoding the mapping (or the XML) gives: each way of
getting it wrong is an ``encoding`` problem naming the file and the byte offset, never a text read
another way; a lone surrogate in a JSON text is refused as ``lone-surrogate``."""

from __future__ import annotations

import codecs

import pytest

from bus.errors import Problem
from transformers.actes_in import parse_message
from transformers.sidecar import Rule, Sidecar

JSON = '{"objet": "Délibération l’acte"}'


def read(data: bytes, fmt: str = "json", encoding: str | None = "utf-8") -> Sidecar:
    return Sidecar(f"export.{fmt}", data, fmt, encoding=encoding, delimiter=";")


@pytest.mark.parametrize(
    ("case", "data", "encoding", "offset", "says"),
    [
        ("latin-1 bytes, utf-8 said", JSON.replace("’", "'").encode("latin-1"), "utf-8", 12, "byte 0xe9"),
        ("cp1252 smart quote, utf-8 said", JSON.replace("é", "e").encode("cp1252"), "utf-8", 25, "byte 0x92"),
        ("overlong /", b'{"objet": "a\xc0\xafb"}', "utf-8", 12, "byte 0xc0"),
        ("encoded surrogate", b'{"objet": "a\xed\xa0\x80b"}', "utf-8", 12, "byte 0xed"),
        ("truncated sequence", b'{"objet": "D\xc3"}', "utf-8", 12, "byte 0xc3"),
        ("utf-16 with bom", codecs.BOM_UTF16_LE + JSON.encode("utf-16-le"), "utf-8", 0, "UTF-16 byte order mark"),
        ("utf-32 with bom", JSON.encode("utf-32"), "utf-8", 0, "UTF-32 byte order mark"),
        ("utf-16 without bom", JSON.encode("utf-16-be"), "utf-8", 0, "probably UTF-16 or UTF-32"),
        ("utf-8 read as latin-1", JSON.encode("utf-8"), "latin-1", 12, "it is UTF-8, bytes c3 a9"),
        ("utf-8 read as cp1252", JSON.encode("utf-8"), "cp1252", 12, "'Ã©'"),
        ("utf-8 bom read as latin-1", codecs.BOM_UTF8 + b'{"objet": "x"}', "latin-1", 0, "UTF-8 byte order mark"),
        ("a nul byte", b'{"objet": "a\x00b"}', "latin-1", 12, "remove it from the export"),
    ],
)
def test_bytes_not_in_the_encoding_are_refused_with_the_byte_offset(
    case: str, data: bytes, encoding: str, offset: int, says: str
) -> None:
    # Given a JSON sidecar whose bytes are not what the mapping's encoding says, When it is read
    sidecar = read(data, encoding=encoding)
    # Then nothing is read, and one encoding problem names the file and the byte offset
    assert sidecar.context is None
    [problem] = sidecar.problems
    assert (problem.file, problem.rule, problem.field) == ("export.json", "encoding", None)
    assert f"at byte offset {offset} (line 1)" in problem.message
    assert says in problem.message


def test_a_csv_in_utf_8_under_a_latin_1_mapping_is_refused_not_read_as_mojibake() -> None:
    data = "objet;numero\nRéfection;A1\n".encode()
    [problem] = read(data, "csv", "latin-1").problems
    assert problem.message == (
        "cannot be read as latin-1: it is UTF-8, bytes c3 a9 at byte offset 14 (line 2); they are 'é' in UTF-8 "
        "and would be read as 'Ã©'; set encoding: utf-8 in the mapping"
    )
    assert problem.line == 2


def test_latin_1_and_utf_16_read_as_they_are_declared() -> None:
    assert read("objet;n\nRéfection;1\n".encode("latin-1"), "csv", "latin-1").problems == []
    assert read(JSON.encode("utf-16"), encoding="utf-16").context == {"objet": "Délibération l’acte"}
    assert read(codecs.BOM_UTF8 + JSON.encode()).context == {"objet": "Délibération l’acte"}


def test_an_xml_declaring_latin_1_but_holding_utf_8_is_refused() -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><a>Réfection</a>'.encode()
    [problem] = read(data, "xml", None).problems
    assert problem.rule == "encoding" and "cannot be read as ISO-8859-1: it is UTF-8" in problem.message


def test_an_xml_in_utf_16_without_byte_order_mark_is_refused_and_with_one_read() -> None:
    text = '<?xml version="1.0" encoding="UTF-16"?><a>Réfection</a>'
    [problem] = read(text.encode("utf-16-le"), "xml", None).problems
    assert problem.rule == "encoding" and "without a byte order mark" in problem.message
    assert read(text.encode("utf-16"), "xml", None).context.text == "Réfection"


def test_a_lone_surrogate_in_a_json_text_is_refused_naming_the_field() -> None:
    sidecar = read(b'{"objet": "a\\ud800b", "emails": ["x@y.fr", "\\udc80"]}')
    assert sidecar.value(Rule(path="objet"), "text", "objet") is None
    assert sidecar.value(Rule(path="emails"), "texts", "return_emails") is None
    assert [(p.file, p.field, p.rule) for p in sidecar.problems] == [
        ("export.json", "objet", "lone-surrogate"),
        ("export.json", "return_emails", "lone-surrogate"),
    ]


def test_a_full_surrogate_pair_is_one_character_and_kept() -> None:
    sidecar = read(b'{"objet": "a\\ud83d\\ude00b"}')
    assert sidecar.value(Rule(path="objet"), "text", "objet") == "a\U0001f600b"
    assert sidecar.problems == []


def test_a_ministry_message_in_the_wrong_encoding_is_read_as_latin_1_and_says_where() -> None:
    # lenient in (DESIGN.md): read anyway, the fact in errors, which the reply's summary carries
    raw = '<?xml version="1.0" encoding="UTF-8"?><ARActe><Detail>Délibé</Detail></ARActe>'.encode("latin-1")
    message = parse_message(raw, "m.xml")
    assert message.errors[0].startswith("wrong encoding: byte 0xe9 at byte offset 55 is not UTF-8 (")
    assert message.errors[0].endswith("; read as ISO-8859-1")
    assert message.to_dict()["errors"][0] == message.errors[0]
    assert "\ufffd" not in (message.detail or "")


def test_problem_equality_is_what_the_mapping_reports() -> None:
    sidecar = read(b'{"objet": "\xe9"}')
    assert sidecar.problems == [
        Problem(
            "cannot be read as utf-8: byte 0xe9 at byte offset 11 (line 1); set encoding: in the mapping to the "
            "export's encoding",
            file="export.json",
            line=1,
            rule="encoding",
        )
    ]
