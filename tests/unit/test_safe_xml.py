"""The hardened XML parser: every attack refused with a named rule, ordinary XML read."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import DocumentError
from transformers import safe_xml
from transformers.safe_xml import XmlRefused

LAUGHS = '<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
)


def refusal(data: bytes, **options: object) -> XmlRefused:
    with pytest.raises(XmlRefused) as caught:
        safe_xml.parse(data, name="in.xml", **options)  # type: ignore[arg-type]
    assert isinstance(caught.value, DocumentError)
    assert caught.value.path == "in.xml"
    assert caught.value.problems[0].file == "in.xml"
    return caught.value


def test_ordinary_xml_is_read() -> None:
    root = safe_xml.parse('<a><b>é</b></a>'.encode("utf-16"), name="in.xml")
    assert root.findtext("b") == "é"


@pytest.mark.parametrize("doctype", [
    f"<!DOCTYPE l [{LAUGHS}]><a>&lol9;</a>",
    f"<!DOCTYPE l [{LAUGHS}]><a>nothing referenced</a>",
    '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><a>&xxe;</a>',
    '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]><a/>',
    '<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd"><a/>',
    '<!DOCTYPE x [<!ENTITY big "' + "x" * 100_000 + '">]><a>' + "&big;" * 1000 + "</a>",
])
def test_entities_and_external_dtds_are_refused(doctype: str) -> None:
    error = refusal(doctype.encode())
    assert error.rule == "xml-entities-forbidden"
    assert str(error).startswith("in.xml: the document declares XML entities")


def test_entities_kept_unexpanded_when_the_caller_asks() -> None:
    root = safe_xml.parse(b'<!DOCTYPE x [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', name="in.xml",
                          entities="keep")
    assert "root:" not in (root.text or "")
    assert safe_xml.declares_entities(root)


def test_an_empty_internal_subset_is_no_entity() -> None:
    assert safe_xml.parse(b"<!DOCTYPE a []><a/>", name="in.xml").tag == "a"


def test_size_is_bounded_before_parsing() -> None:
    error = refusal(b"<a>" + b"x" * 2000 + b"</a>", max_bytes=1000)
    assert (error.rule, error.detail) == ("xml-too-large", "2007 bytes")


def test_a_huge_text_node_is_too_large() -> None:
    assert refusal(b"<a>" + b"x" * (11 << 20) + b"</a>").rule == "xml-too-large"


@pytest.mark.parametrize(("depth", "limit"), [(11, 10), (300, 100), (5000, 100)])
def test_depth_is_bounded(depth: int, limit: int) -> None:
    error = refusal(b"<a>" * depth + b"</a>" * depth, max_depth=limit)
    assert error.rule == "xml-too-deep"


def test_depth_at_the_limit_is_read() -> None:
    assert safe_xml.parse(b"<a>" * 10 + b"</a>" * 10, name="in.xml", max_depth=10).tag == "a"


@pytest.mark.parametrize("data", [b"", b"<a>", b"<a></b>", b"\xff\xfe\x00", b"<a>&undefined;</a>", b"not xml"])
def test_malformed_xml_is_not_well_formed(data: bytes) -> None:
    error = refusal(data)
    assert error.rule == "xml-well-formed"
    assert error.message.startswith("not well-formed XML: ")


def test_recover_reads_what_it_can() -> None:
    assert safe_xml.parse(b"<a><b>x</b>", name="in.xml", recover=True).findtext("b") == "x"


def test_an_unknown_encoding_is_not_well_formed() -> None:
    assert refusal(b"<a/>", encoding="no-such-codec").rule == "xml-well-formed"


def test_no_file_is_read_through_an_external_entity(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    data = f'<!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]><a>&s;</a>'.encode()
    root = safe_xml.parse(data, name="in.xml", entities="keep")
    assert "TOP-SECRET" not in "".join(root.itertext())
