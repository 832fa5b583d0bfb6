"""Reading the procurement platform's Receipt and Rejection (schemas/procurement/procurement.xsd)."""

# ruff: noqa: E501  (the exact error texts are asserted whole)

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bus.errors import DocumentError, Problem
from transformers.procurement_receipt import ProcurementAnswer, read_procurement_answer

NS = "urn:hent:procurement:1"
SHA = "ab" * 32


def receipt(**changes: str) -> bytes:
    fields = {"DecpId": "2025-0042", "BuyerId": "21750001630040", "ModificationId": "2",
              "FileName": "decp-2025-0042.xml", "Sha256": SHA, "ReceivedAt": "2026-01-13T10:15:00+01:00",
              "PublishedAt": "2026-01-13T09:20:00Z", "PublicationId": "PUB-77", **changes}
    inner = "".join(f"<{name}>{value}</{name}>" for name, value in fields.items() if value != "-")
    return f'<?xml version="1.0" encoding="UTF-8"?><Receipt xmlns="{NS}">{inner}</Receipt>'.encode()


def rejection(errors: str, head: str = "", publication: str = "") -> bytes:
    tail = f"<PublicationId>{publication}</PublicationId>" if publication else ""
    return (f'<Rejection xmlns="{NS}"><FileName>bad.xml</FileName><Sha256>{SHA}</Sha256>{head}'
            f"<ReceivedAt>2026-01-13T10:15:00+00:00</ReceivedAt>{tail}{errors}</Rejection>").encode()


def error(field: str, rule: str, message: str) -> str:
    return f"<Error><Field>{field}</Field><Rule>{rule}</Rule><Message>{message}</Message></Error>"


def test_a_receipt() -> None:
    answer = read_procurement_answer(receipt(), "decp-2025-0042.xml.receipt.xml")
    assert answer == ProcurementAnswer(
        kind="receipt", decp_id="2025-0042", modification_id=2, file_name="decp-2025-0042.xml",
        publication_id="PUB-77", errors=(), received_at=datetime(2026, 1, 13, 10, 15, tzinfo=timezone(timedelta(hours=1))),
        published_at=datetime(2026, 1, 13, 9, 20, tzinfo=UTC), sha256=SHA, buyer_id="21750001630040",
    )
    assert answer.received_at < answer.published_at  # type: ignore[operator]
    assert not answer.duplicate


def test_a_rejection_with_errors_and_what_could_be_read() -> None:
    data = rejection(error("/marches/marche/montant", "xsd", "trop petit") + error("", "decp-document", "deux marchés"),
                     head="<DecpId>2025-0043</DecpId><ModificationId>0</ModificationId>")
    answer = read_procurement_answer(data, "bad.xml.rejection.xml")
    assert (answer.kind, answer.decp_id, answer.modification_id, answer.file_name) == ("rejection", "2025-0043", 0, "bad.xml")
    assert answer.errors == ("/marches/marche/montant: trop petit [xsd]", "deux marchés [decp-document]")
    assert answer.problems == (Problem("trop petit", field="/marches/marche/montant", rule="xsd"),
                               Problem("deux marchés", field=None, rule="decp-document"))
    assert (answer.publication_id, answer.published_at, answer.buyer_id) == (None, None, None)
    assert not answer.duplicate


def test_a_rejection_of_an_unreadable_file_and_a_duplicate() -> None:
    unreadable = read_procurement_answer(rejection(error("", "xml-well-formed", "not XML")), "x")
    assert (unreadable.decp_id, unreadable.modification_id) == (None, None)
    duplicate = read_procurement_answer(
        rejection(error("/marches/marche/id", "duplicate", "already published"),
                  head="<DecpId>2025-0042</DecpId><ModificationId>0</ModificationId>", publication="PUB-1"), "x")
    assert duplicate.duplicate and duplicate.publication_id == "PUB-1"
    assert (duplicate.decp_id, duplicate.modification_id) == ("2025-0042", 0)


def test_what_the_simulated_platform_writes_is_read() -> None:
    from simulators.procurement_platform import Contract, Finding, receipt_xml, rejection_xml

    when = datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
    contract = Contract("2025-0042", "21750001630040", 0)
    written = read_procurement_answer(receipt_xml(contract, "a.xml", SHA, when, when, "PUB-9"), "a")
    assert (written.kind, written.publication_id, written.received_at) == ("receipt", "PUB-9", when)
    garbled = Contract("an-id-far-too-long-for-a-decp", "123", None)  # what an invalid DECP may hold
    refused = read_procurement_answer(rejection_xml(garbled, "b.xml", SHA, when, [Finding("/marches", "xsd", "no")]), "b")
    assert (refused.decp_id, refused.buyer_id, refused.errors) == (None, None, ("/marches: no [xsd]",))


@pytest.mark.parametrize(("data", "text", "line"), [
    (b"PK\x03\x04 not xml", "x.receipt.xml:1: x.receipt.xml is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): not well-formed XML (Start tag expected, '<' not found, line 1, column 1); it is kept as received: ask the platform what it sent [procurement-answer]", 1),
    (b'<!DOCTYPE Receipt [<!ENTITY x "y">]><Receipt xmlns="urn:hent:procurement:1"/>', "x.receipt.xml:1: x.receipt.xml is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): it holds a DOCTYPE; it is kept as received: ask the platform what it sent [procurement-answer]", 1),
    (b"<ARActe/>", "x.receipt.xml: x.receipt.xml is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): its root element is ARActe, not Receipt or Rejection in urn:hent:procurement:1; it is kept as received: ask the platform what it sent [procurement-answer]", None),
    (receipt(ModificationId="-1"), "x.receipt.xml:1: /Receipt/ModificationId: x.receipt.xml is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): Element '{urn:hent:procurement:1}ModificationId': '-1' is not a valid value of the atomic type 'xs:nonNegativeInteger'.; it is kept as received: ask the platform what it sent [procurement-answer]", 1),
    (receipt(ReceivedAt="2026-01-13T10:15:00"), None, 1),
    (receipt(PublicationId="-"), None, 1),
    (receipt(PublishedAt="2026-01-13T24:00:00Z"), "x.receipt.xml: x.receipt.xml is not a procurement platform's Receipt or Rejection (schemas/procurement/procurement.xsd): PublishedAt '2026-01-13T24:00:00Z' is not a date and time Hent can read; it is kept as received: ask the platform what it sent [procurement-answer]", None),
    (rejection(""), None, 1),
])
def test_anything_else_is_a_document_error(data: bytes, text: str | None, line: int | None) -> None:
    with pytest.raises(DocumentError) as caught:
        read_procurement_answer(data, "x.receipt.xml")
    assert caught.value.rule == "procurement-answer" and caught.value.path == "x.receipt.xml"
    assert caught.value.line == line
    if text is not None:
        assert str(caught.value) == text
