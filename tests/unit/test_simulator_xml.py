"""The simulators parse what they receive through transformers.safe_xml: entity attacks, deep and
malformed XML are refused with a named rule; a SOAP request's archive may still be one huge text node."""

from __future__ import annotations

import base64

import pytest

from simulators import legality_soap, procurement_soap
from simulators._xml import XmlRefused, parse_soap
from simulators.legality_archive import _parse as parse_archive_member
from simulators.procurement_platform import _inspect
from tests.hostile._corpus import ENTITY_ATTACKS, ENTITY_REFERENCES, deep_xml

SOAP = (
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:lg="urn:hent:legality:1">'
    "<soap:Body><lg:submitArchive><lg:archive>{}</lg:archive></lg:submitArchive></soap:Body></soap:Envelope>"
)


def _attack(name: str, body: str) -> bytes:
    return (ENTITY_ATTACKS[name] + body.replace("{}", ENTITY_REFERENCES.get(name, "x"))).encode()


@pytest.mark.parametrize("name", list(ENTITY_ATTACKS))
def test_a_soap_request_with_a_doctype_is_malformed_for_both_simulators(name: str) -> None:
    data = _attack(name, SOAP)
    with pytest.raises(legality_soap.MalformedRequest, match="not XML"):
        legality_soap.parse_request(data)
    with pytest.raises(procurement_soap.MalformedRequest, match="not XML"):
        procurement_soap.parse_request(data.replace(b"urn:hent:legality:1", procurement_soap.PR_NS.encode()))


def test_a_soap_request_nested_too_deep_is_refused() -> None:
    with pytest.raises(XmlRefused) as caught:
        parse_soap(SOAP.format(deep_xml(5000).decode()).encode())
    assert caught.value.rule == "xml-too-deep"


def test_a_soap_request_holding_an_archive_over_libxml2s_text_limit_is_read() -> None:
    # Given an archive of 12 MiB, base64: one text node past libxml2's 10 MB limit
    archive = bytes(range(256)) * (12 * 4096)
    root = parse_soap(SOAP.format(base64.b64encode(archive).decode()).encode())
    # Then the request is read whole
    text = root.findtext(".//{urn:hent:legality:1}archive")
    assert text is not None and base64.b64decode(text) == archive


def test_the_legality_archive_reader_skips_what_safe_xml_refuses() -> None:
    assert parse_archive_member(_attack("billion-laughs", "<a>{}</a>")) is None
    assert parse_archive_member(deep_xml(5000)) is None
    assert parse_archive_member(b"<a>ok</a>") is not None


@pytest.mark.parametrize(
    ("data", "rule"),
    [
        (deep_xml(5000), "xml-well-formed"),
        (b"<marches><marche>", "xml-well-formed"),
        (_attack("billion-laughs", "<marches>{}</marches>"), "xml-well-formed"),  # libxml2: amplification
        (_attack("xxe-file", "<marches>{}</marches>"), "xml-doctype"),
    ],
    ids=["deep", "truncated", "billion-laughs", "xxe-file"],
)
def test_the_procurement_platform_rejects_unreadable_decp_by_its_rules(data: bytes, rule: str) -> None:
    _, findings = _inspect(data)
    assert [f.rule for f in findings] == [rule]
