"""The legality simulator over real HTTP on 127.0.0.1, with zeep as the client.

Each rejection the simulator makes, its acceptance of valid archives (one built by Hent,
one around the real Pastell 1-1 message), the ministry's messages checked against the
ministry's own schema and read back by ``parse_message``, follow-ups, cancellation,
classification, authentication and every injected fault as a client sees it.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from simulators.legality import WSDL_PATH, Fault, LegalitySimulator
from simulators.legality_platform import ODT_VERIF_01
from simulators.pdf import make_pdf
from tests.harness import CLASSIFICATION
from transformers.actes_in import MinistryMessage, parse_message
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import Transmission, build_archive, build_envelope_xml
from transformers.classification import Classification
from transformers.text_policy import TextPolicy

pytestmark = pytest.mark.integration

BINDING = "{urn:hent:legality:1}LegalityBinding"
LG = "{urn:hent:legality:1}"
TODAY = date.today()
CLASSIFICATION_DATE = date(2025, 1, 15)  # the demo classification's DateClassification
PASTELL_MESSAGE = "pastell__034-491011698-20171207-CL20171227_06-DE-1-1_0.xml"
PASTELL_ACK = "pastell__034-491011698-20171207-CL20171227_06-DE-1-2.xml"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ministry_schema(reference_dir: Path) -> etree.XMLSchema:
    """The ministry's actesv1_1.xsd: every message the simulator writes must pass it."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(reference_dir / "actes" / "xsd" / "actesv1_1.xsd"), parser))


def assert_ministry_valid(schema: etree.XMLSchema, data: bytes) -> None:
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    assert schema.validate(document), schema.error_log


class Clients:
    """zeep clients on the local WSDL; their HTTP sessions are closed at the end of the test."""

    def __init__(self) -> None:
        self.sessions: list[requests.Session] = []

    def service(self, url: str, *, timeout: float = 5.0, wsse: Any = None) -> Any:
        session = requests.Session()
        self.sessions.append(session)
        client = zeep.Client(str(WSDL_PATH), transport=Transport(session=session, operation_timeout=timeout),
                             wsse=wsse)
        return client.create_service(BINDING, url)

    def close(self) -> None:
        for session in self.sessions:
            session.close()


@pytest.fixture
def clients() -> Iterator[Clients]:
    holder = Clients()
    yield holder
    holder.close()


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator() as running:
        yield running


@pytest.fixture
def service(simulator: LegalitySimulator, clients: Clients) -> Any:
    return clients.service(simulator.url)


@pytest.fixture
def make_act(tmp_path: Path) -> Callable[..., CanonicalAct]:
    main = tmp_path / "deliberation.pdf"
    main.write_bytes(make_pdf(["Délibération DEL2026_042"]))
    annex = tmp_path / "annexe.pdf"
    annex.write_bytes(make_pdf(["Plan de situation"]))

    def make(**changes: Any) -> CanonicalAct:
        act = CanonicalAct(
            siren="214400152", departement="044", arrondissement=1, collectivite_nature="31",
            decision_date=date(2026, 1, 12), numero_interne="DEL2026_042", nature=1, matieres=(3, 2),
            objet="Cession de la parcelle BK 112, rue de la Solidarité",
            classification_date=CLASSIFICATION_DATE, main_document=ActFile("deliberation.pdf", main),
            annexes=(ActFile("annexe.pdf", annex, "21_RP"),), return_emails=("actes@saint-herblain.fr",),
        )
        return dataclasses.replace(act, **changes)

    return make


def archive_of(act: CanonicalAct, serial: int = 1) -> tuple[Transmission, bytes]:
    out = io.BytesIO()
    transmission = build_archive(act, out, quadrigram="EACT", trigram="SLO", serial=serial,
                                 generation_date=date(2026, 1, 13), today=date(2026, 1, 13))
    return transmission, out.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def pack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def submit(service: Any, transmission: Transmission, data: bytes, *, name: str | None = None,
           key: str | None = None) -> str:
    reply = service.SubmitArchive(ArchiveName=name or transmission.archive_name,
                                  ClientKey=key or transmission.envelope_name,
                                  ExpectedIDActe=transmission.id_acte, Archive=data)
    assert reply.Status == "TRANSMITTED"
    return str(reply.TransactionId)


def final_status(service: Any, transaction_id: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = service.GetStatus(TransactionId=[transaction_id])[0]
        if status.Status != "TRANSMITTED" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def rejected(service: Any, transaction_id: str, schema: etree.XMLSchema, kind: str) -> MinistryMessage:
    status = final_status(service, transaction_id)
    assert status.Status == "REJECTED"
    assert status.IDActe is None
    assert_ministry_valid(schema, status.Message)
    message = parse_message(status.Message, status.MessageName)
    assert message.kind == kind
    assert message.errors == ()
    assert status.Detail == message.detail
    return message


def fault_detail(fault: zeep.exceptions.Fault) -> dict[str, str | None]:
    holder = fault.detail.find(f"{LG}LegalityFault")
    return {name: holder.findtext(f"{LG}{name}") for name in ("Code", "Message", "TransactionId")}


def control(simulator: LegalitySimulator, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{simulator.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


# ---------------------------------------------------------------- the contract


def test_the_wsdl_loads_offline_with_every_operation(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any) -> None:
        raise AssertionError("zeep tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    client = zeep.Client(str(WSDL_PATH))
    signatures = {name: (op.input.signature(), op.output.signature())
                  for name, op in client.service._binding._operations.items()}
    assert signatures["SubmitArchive"][0] == (
        "ArchiveName: xsd:string, ClientKey: xsd:string, ExpectedIDActe: xsd:string, Archive: xsd:base64Binary")
    assert signatures["GetStatus"] == ("TransactionId: xsd:string[]", "Transaction: ns0:TransactionInfo[]")
    assert signatures["GetReceipts"] == ("TransactionId: xsd:string", "Receipt: ns0:ReceiptFile[]")
    assert sorted(signatures) == ["CancelAct", "FindSubmission", "GetMessage", "GetReceipts", "GetStatus",
                                  "ListMessages", "RequestClassification", "SubmitArchive"]


def test_the_wsdl_is_served_with_this_server_as_address(simulator: LegalitySimulator) -> None:
    with requests.Session() as session:
        client = zeep.Client(f"{simulator.url}?wsdl", transport=Transport(session=session, operation_timeout=5))
        assert client.service._binding_options["address"] == simulator.url
        assert client.service.FindSubmission(ClientKey="nothing").TransactionId is None


# ---------------------------------------------------------------- acceptance


def test_a_valid_archive_is_transmitted_then_acknowledged(
    make_act: Callable[..., CanonicalAct], clients: Clients, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    with LegalitySimulator(ack_delay=0.3) as simulator:
        service = clients.service(simulator.url)
        transaction_id = submit(service, transmission, data)
        assert service.GetStatus(TransactionId=[transaction_id])[0].Status == "TRANSMITTED"
        assert service.FindSubmission(ClientKey=transmission.envelope_name).Status == "TRANSMITTED"
        status = final_status(service, transaction_id)
    assert status.Status == "ACKNOWLEDGED"
    assert status.IDActe == transmission.id_acte == "044-214400152-20260112-DEL2026_042-DE"
    assert status.DateReception == TODAY
    assert status.MessageName.startswith(f"{transmission.id_acte}-1-2_") and status.MessageName.endswith(".xml")
    assert_ministry_valid(ministry_schema, status.Message)
    message = parse_message(status.Message, status.MessageName)
    assert (message.kind, message.code, message.id_acte, message.errors) == ("ARActe", "1-2", status.IDActe, ())
    assert message.dates["DateReception"] == TODAY
    assert message.dates["ClassificationDateVersionEnCours"] == CLASSIFICATION_DATE
    assert message.act_key is not None and message.act_key.numero_interne == "DEL2026_042"
    assert "Solidarité".encode("iso-8859-1") in status.Message


def test_an_archive_around_the_real_pastell_act_is_acknowledged(
    reference_dir: Path, tmp_path: Path, clients: Clients, ministry_schema: etree.XMLSchema
) -> None:
    samples = reference_dir / "actes" / "samples"
    acte_xml = (samples / PASTELL_MESSAGE).read_bytes()
    message_name = PASTELL_MESSAGE.removeprefix("pastell__")
    pdf_name = "32_DP-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf"
    assert pdf_name.encode() in acte_xml
    pdf = tmp_path / "acte.pdf"
    pdf.write_bytes(make_pdf(["Fichier signé parapheur"]))
    act = CanonicalAct(
        siren="491011698", departement="034", arrondissement=1, collectivite_nature="31",
        decision_date=date(2017, 12, 7), numero_interne="CL20171227_06", nature=1, matieres=(3, 2),
        objet="Fichier signé parapheur", classification_date=date(2017, 11, 13),
        main_document=ActFile("acte.pdf", pdf), return_emails=("actes@example.fr",),
    )
    envelope_name = "EACT--491011698--20171227-1.xml"
    data = pack({
        envelope_name: build_envelope_xml(act, [message_name], text_policy=TextPolicy.TRANSLITERATE),
        message_name: acte_xml,
        pdf_name: pdf.read_bytes(),
    })
    classification = tmp_path / "classification.xml"
    classification.write_bytes(
        CLASSIFICATION.read_bytes()
         .replace(b"<actes:DateClassification>2025-01-15<", b"<actes:DateClassification>2017-11-13<"))
    with LegalitySimulator(classification=classification) as simulator:
        service = clients.service(simulator.url)
        reply = service.SubmitArchive(ArchiveName="SLO-EACT--491011698--20171227-1.tar.gz",
                                      ClientKey=envelope_name, ExpectedIDActe=act.id_acte, Archive=data)
        status = final_status(service, reply.TransactionId)
    assert status.Status == "ACKNOWLEDGED", status.Detail
    assert_ministry_valid(ministry_schema, status.Message)
    ours = parse_message(status.Message, status.MessageName)
    ministry = parse_message((samples / PASTELL_ACK).read_bytes(), PASTELL_ACK.removeprefix("pastell__"))
    assert ours.id_acte == ministry.id_acte == "034-491011698-20171207-CL20171227_06-DE"
    assert ours.act_key == ministry.act_key
    assert ours.file_names == ministry.file_names == (pdf_name,)
    assert ours.dates["ClassificationDateVersionEnCours"] == date(2017, 11, 13)


# ---------------------------------------------------------------- rejections


def test_an_unreadable_archive_is_refused_at_once(service: Any, simulator: LegalitySimulator) -> None:
    with pytest.raises(zeep.exceptions.Fault) as caught:
        service.SubmitArchive(ArchiveName="SLO-EACT--214400152--20260113-1.tar.gz", ClientKey="k1",
                              ExpectedIDActe="044-214400152-20260112-X-DE", Archive=b"%PDF-1.4 not an archive")
    assert caught.value.code == "soap:Client"
    detail = fault_detail(caught.value)
    assert detail["Code"] == "INVALID_ARCHIVE"
    assert "cannot read the archive as tar.gz" in str(detail["Message"])
    assert service.FindSubmission(ClientKey="k1").TransactionId is None
    assert simulator.received()["recorded"] == {}


def test_a_wrong_archive_name_gets_an_envelope_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    transaction_id = submit(service, transmission, data, name="deliberation.tar.gz")
    message = rejected(service, transaction_id, ministry_schema, "AnomalieEnveloppe")
    status = service.GetStatus(TransactionId=[transaction_id])[0]
    assert status.MessageName == f"ANO_{transmission.envelope_name}"
    assert message.anomaly_nature == "001"
    assert message.envelope_name == transmission.envelope_name.removesuffix(".xml")
    assert message.detail is not None
    assert message.detail.startswith("deliberation.tar.gz -> archive-name : archive name is not TRIGRAM-QUAD")


def test_a_wrong_document_name_gets_an_act_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    files = members(data)
    good = transmission.file_names["deliberation.pdf"]
    wrong = good.replace("-1-1_1.pdf", "-1-1_3.pdf")  # the schema's pattern holds, the index does not
    files[wrong] = files.pop(good)
    files[transmission.message_name] = files[transmission.message_name].replace(good.encode(), wrong.encode())
    message = rejected(service, submit(service, transmission, pack(files)), ministry_schema, "AnomalieActe")
    assert message.anomaly_nature == "001"
    assert message.id_acte is None
    assert message.act_key is not None and message.act_key.numero_interne == "DEL2026_042"
    assert message.detail == f"document-name : expected CODE-{transmission.id_acte}-1-1_1.ext [{wrong}]"


def test_a_free_form_document_name_breaks_the_schema_and_gets_an_envelope_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    files = members(data)
    good = transmission.file_names["deliberation.pdf"]
    files["deliberation.pdf"] = files.pop(good)
    files[transmission.message_name] = files[transmission.message_name].replace(good.encode(), b"deliberation.pdf")
    message = rejected(service, submit(service, transmission, pack(files)), ministry_schema, "AnomalieEnveloppe")
    assert message.anomaly_nature == "005"
    assert message.detail is not None
    assert message.detail.startswith(f"{transmission.archive_name} -> xsd : Element 'actes:NomFichier'")


def test_a_type_code_outside_the_classification_gets_an_act_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    act = make_act()
    transmission, data = archive_of(dataclasses.replace(
        act, main_document=dataclasses.replace(act.main_document, type_code="99_ZZ")))
    transaction_id = submit(service, transmission, data)
    message = rejected(service, transaction_id, ministry_schema, "AnomalieActe")
    assert message.anomaly_nature == "001"
    assert message.detail is not None
    assert message.detail.startswith("type-code-unknown : piece type 99_ZZ is not in the classification for nature 1")
    status = service.GetStatus(TransactionId=[transaction_id])[0]
    assert status.MessageName.startswith(f"{transmission.id_acte}-1-3_")


def test_an_envelope_listing_a_missing_file_gets_an_envelope_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    files = members(data)
    del files[transmission.message_name]
    message = rejected(service, submit(service, transmission, pack(files)), ministry_schema, "AnomalieEnveloppe")
    assert message.anomaly_nature == "002"
    assert message.detail is not None
    assert message.detail.startswith(
        f"{transmission.archive_name} -> archive-message-missing : message {transmission.message_name} "
        "listed in the envelope is not in the archive")


def test_an_act_invalid_against_the_schema_gets_an_envelope_anomaly(
    make_act: Callable[..., CanonicalAct], service: Any, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    files = members(data)
    acte = files[transmission.message_name]
    files[transmission.message_name] = acte.replace(b"<actes:Objet>", b"<actes:Sujet>x</actes:Sujet><actes:Objet>")
    message = rejected(service, submit(service, transmission, pack(files)), ministry_schema, "AnomalieEnveloppe")
    assert message.anomaly_nature == "005"
    assert message.detail is not None and " -> xsd : " in message.detail and "actes:Sujet" in message.detail


def test_an_act_received_twice_is_a_duplicate_found_by_the_first_client_key(
    make_act: Callable[..., CanonicalAct], service: Any, simulator: LegalitySimulator
) -> None:
    transmission, data = archive_of(make_act())
    original = submit(service, transmission, data)
    again, again_data = archive_of(make_act(), serial=2)  # the same act in a new envelope
    with pytest.raises(zeep.exceptions.Fault) as caught:
        submit(service, again, again_data)
    assert caught.value.code == "soap:Client"
    detail = fault_detail(caught.value)
    assert (detail["Code"], detail["TransactionId"]) == ("DUPLICATE", original)
    assert detail["Message"] == (f"act 214400152:DEL2026_042:2026-01-12 already received (transaction {original}, "
                                 f"archive {transmission.archive_name})")
    assert service.FindSubmission(ClientKey=again.envelope_name).TransactionId is None
    found = service.FindSubmission(ClientKey=transmission.envelope_name)
    assert (found.TransactionId, found.Status) == (original, "ACKNOWLEDGED")
    with pytest.raises(zeep.exceptions.Fault) as same_key:  # the same bytes again, e.g. after a timeout
        submit(service, transmission, data)
    assert fault_detail(same_key.value)["TransactionId"] == original
    counts = simulator.received()
    assert counts["by_act"] == {"214400152:DEL2026_042:2026-01-12": 3}
    assert counts["recorded"] == {"214400152:DEL2026_042:2026-01-12": 1}
    assert counts["calls"] == {"SubmitArchive": 3, "FindSubmission": 2}
    assert counts["archives"]["214400152:DEL2026_042:2026-01-12"] == [
        hashlib.sha256(data).hexdigest(), hashlib.sha256(again_data).hexdigest(), hashlib.sha256(data).hexdigest()]


def test_an_old_classification_date_gets_odt_verif_01_and_the_corrected_act_passes(
    make_act: Callable[..., CanonicalAct], clients: Clients, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    with LegalitySimulator(ack_delay=0.2) as simulator:
        service = clients.service(simulator.url)
        status, published = control(simulator, "POST", "/control/classification", {"date": "2025-06-01"})
        assert (status, published) == (200, {"date": "2025-06-01"})
        transaction_id = submit(service, transmission, data)
        assert service.GetStatus(TransactionId=[transaction_id])[0].Status == "TRANSMITTED"
        message = rejected(service, transaction_id, ministry_schema, "AnomalieActe")
        assert (message.anomaly_nature, message.detail) == ("002", ODT_VERIF_01)
        assert message.dates["ClassificationDateVersion"] == CLASSIFICATION_DATE
        assert message.dates["ClassificationDateVersionEnCours"] == date(2025, 6, 1)
        assert message.act_key is not None and message.act_key.numero_interne == "DEL2026_042"
        # a rejected act is not "already received": stamped with the new date, it goes through
        fixed, fixed_data = archive_of(make_act(classification_date=date(2025, 6, 1)), serial=2)
        assert final_status(service, submit(service, fixed, fixed_data)).Status == "ACKNOWLEDGED"
        assert simulator.received()["recorded"] == {"214400152:DEL2026_042:2026-01-12": 2}


# ---------------------------------------------------------------- after the acknowledgment


def acknowledged(service: Any, make_act: Callable[..., CanonicalAct]) -> tuple[str, str]:
    transmission, data = archive_of(make_act())
    transaction_id = submit(service, transmission, data)
    assert final_status(service, transaction_id).Status == "ACKNOWLEDGED"
    return transaction_id, transmission.id_acte


FOLLOWUPS = {"2-1": "CourrierSimple", "3-1": "DemandePieceComplementaire", "3-5": "ARPieceComplementaire",
             "4-1": "LettreObservations", "4-5": "ARReponseRejetLettreObservations", "5-1": "DefereTA"}


def test_follow_ups_are_listed_and_fetched_with_their_letters(
    make_act: Callable[..., CanonicalAct], service: Any, simulator: LegalitySimulator,
    ministry_schema: etree.XMLSchema,
) -> None:
    transaction_id, id_acte = acknowledged(service, make_act)
    assert service.ListMessages(TransactionId=transaction_id) == []
    for code in FOLLOWUPS:
        if code == "2-1":
            assert control(simulator, "POST", "/control/followup", {"id_acte": id_acte, "code": code})[0] == 200
        else:
            simulator.followup(id_acte, code)
    listed = service.ListMessages(TransactionId=transaction_id)
    assert [m.Code for m in listed] == list(FOLLOWUPS)
    for summary in listed:
        assert summary.Date == TODAY
        assert summary.Name.startswith(f"{id_acte}-{summary.Code}_")
        message = service.GetMessage(MessageId=summary.MessageId)
        assert (message.Code, message.Name) == (summary.Code, summary.Name)
        assert_ministry_valid(ministry_schema, message.Content)
        parsed = parse_message(message.Content, message.Name)
        assert (parsed.kind, parsed.code, parsed.id_acte, parsed.errors) == (
            FOLLOWUPS[summary.Code], summary.Code, id_acte, ())
        letters = {a.Name: a.Content for a in message.Attachment}
        if summary.Code in ("3-5", "4-5"):
            assert letters == {}
        else:
            assert list(letters) == list(parsed.file_names)
            assert all(content.startswith(b"%PDF-") for content in letters.values())


def test_follow_ups_need_an_acknowledged_act(simulator: LegalitySimulator) -> None:
    status, body = control(simulator, "POST", "/control/followup",
                           {"id_acte": "044-214400152-20260112-NOPE-DE", "code": "2-1"})
    assert (status, body) == (404, {"error": "no transaction with IDActe 044-214400152-20260112-NOPE-DE"})
    assert control(simulator, "POST", "/control/followup", {"code": "2-1"}) == (
        400, {"error": "missing field 'id_acte'"})
    with pytest.raises(ValueError, match="unknown follow-up code '9-9'"):
        simulator.followup("044-214400152-20260112-NOPE-DE", "9-9")


def test_cancelling_an_acknowledged_act_gives_a_6_2(
    make_act: Callable[..., CanonicalAct], clients: Clients, ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    with LegalitySimulator(ack_delay=0.2) as simulator:
        service = clients.service(simulator.url)
        transaction_id = submit(service, transmission, data)
        with pytest.raises(zeep.exceptions.Fault) as early:
            service.CancelAct(TransactionId=transaction_id, IDActe=transmission.id_acte)
        assert fault_detail(early.value)["Code"] == "NOT_CANCELLABLE"
        assert final_status(service, transaction_id).Status == "ACKNOWLEDGED"
        with pytest.raises(zeep.exceptions.Fault) as wrong:
            service.CancelAct(TransactionId=transaction_id, IDActe="044-214400152-20260112-OTHER-DE")
        assert fault_detail(wrong.value)["Code"] == "NOT_CANCELLABLE"
        reply = service.CancelAct(TransactionId=transaction_id, IDActe=transmission.id_acte)
        assert (reply.TransactionId, reply.Status) == (transaction_id, "CANCELLED")
        again = service.CancelAct(TransactionId=transaction_id, IDActe=transmission.id_acte)  # idempotent
        assert again.Status == "CANCELLED"
        status = service.GetStatus(TransactionId=[transaction_id])[0]
        assert (status.Status, status.IDActe) == ("CANCELLED", transmission.id_acte)
        [summary] = service.ListMessages(TransactionId=transaction_id)
        content = service.GetMessage(MessageId=summary.MessageId).Content
        with pytest.raises(zeep.exceptions.Fault) as unknown:
            service.CancelAct(TransactionId="nope", IDActe=transmission.id_acte)
    assert fault_detail(unknown.value) == {"Code": "UNKNOWN_TRANSACTION", "Message": "no transaction nope",
                                           "TransactionId": "nope"}
    assert summary.Code == "6-2"
    assert_ministry_valid(ministry_schema, content)
    parsed = parse_message(content, summary.Name)
    assert (parsed.kind, parsed.id_acte, parsed.dates["DateReception"]) == ("ARAnnulation", transmission.id_acte,
                                                                          TODAY)


def test_classification_is_sent_unless_up_to_date(
    service: Any, simulator: LegalitySimulator, ministry_schema: etree.XMLSchema
) -> None:
    up_to_date = service.RequestClassification(SIREN="214400152", CurrentDate=CLASSIFICATION_DATE)
    assert up_to_date.Code == "7-3" and up_to_date.Name.startswith("044-214400152----7-3_")
    assert_ministry_valid(ministry_schema, up_to_date.Content)
    parsed = parse_message(up_to_date.Content, up_to_date.Name)
    assert (parsed.kind, parsed.dates["DateClassification"]) == ("ReponseClassificationSansChangement",
                                                                 CLASSIFICATION_DATE)
    full = service.RequestClassification(SIREN="214400152", CurrentDate=date(2024, 1, 1))
    assert full.Code == "7-2" and full.Name.startswith("044-214400152----7-2_")
    assert full.Content == CLASSIFICATION.read_bytes()
    assert parse_message(full.Content, full.Name).kind == "RetourClassification"
    simulator.publish_classification(date(2025, 6, 1))
    assert service.RequestClassification(SIREN="214400152", CurrentDate=CLASSIFICATION_DATE).Code == "7-2"
    newer = service.RequestClassification(SIREN="214400152")
    assert newer.Code == "7-2"
    assert_ministry_valid(ministry_schema, newer.Content)
    assert Classification.from_bytes(newer.Content).date == date(2025, 6, 1)
    with pytest.raises(zeep.exceptions.Fault) as caught:
        service.RequestClassification(SIREN="12")
    assert caught.value.code == "soap:Client" and caught.value.detail is None


# ---------------------------------------------------------------- authentication


def test_ws_security_username_token_is_required_when_configured(clients: Clients) -> None:
    with LegalitySimulator(username="hent", password="s3crét") as simulator:
        allowed = clients.service(simulator.url, wsse=UsernameToken("hent", "s3crét"))
        assert allowed.FindSubmission(ClientKey="x").TransactionId is None
        for wsse in (None, UsernameToken("hent", "wrong")):
            with pytest.raises(zeep.exceptions.Fault) as caught:
                clients.service(simulator.url, wsse=wsse).FindSubmission(ClientKey="x")
            assert caught.value.code == "soap:Client"
            assert fault_detail(caught.value)["Code"] == "AUTH"


# ---------------------------------------------------------------- injected faults


def test_latency_slows_the_scoped_operation_past_a_client_timeout(simulator: LegalitySimulator,
                                                                  clients: Clients) -> None:
    impatient = clients.service(simulator.url, timeout=0.2)
    simulator.inject("latency", "GetStatus", count=2, seconds=0.5)
    assert impatient.FindSubmission(ClientKey="x").TransactionId is None  # another operation: not slowed
    with pytest.raises(requests.exceptions.ReadTimeout):
        impatient.GetStatus(TransactionId=["x"])
    started = time.monotonic()
    assert clients.service(simulator.url).GetStatus(TransactionId=["x"])[0].Status == "UNKNOWN"
    assert time.monotonic() - started >= 0.45
    assert impatient.GetStatus(TransactionId=["x"])[0].Status == "UNKNOWN"  # count used up


def test_http_500_then_success(simulator: LegalitySimulator, service: Any) -> None:
    assert control(simulator, "POST", "/control/faults", {"operation": "*", "kind": "http500", "count": 2}) == (
        200, {"faults": 1})
    for _ in range(2):
        with pytest.raises(zeep.exceptions.TransportError) as caught:
            service.FindSubmission(ClientKey="x")
        assert caught.value.status_code == 500
    assert service.FindSubmission(ClientKey="x").TransactionId is None
    assert control(simulator, "GET", "/control/received")[1]["calls"] == {"FindSubmission": 3}


def test_an_injected_soap_fault_is_internal_on_the_server_side(simulator: LegalitySimulator, service: Any) -> None:
    simulator.inject("soapfault", "FindSubmission")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        service.FindSubmission(ClientKey="x")
    assert caught.value.code == "soap:Server"
    assert fault_detail(caught.value)["Code"] == "INTERNAL"
    assert service.FindSubmission(ClientKey="x").TransactionId is None


def test_a_dropped_connection_is_a_connection_error(simulator: LegalitySimulator, service: Any) -> None:
    simulator.inject("drop", "ListMessages")
    with pytest.raises(requests.exceptions.ConnectionError):
        service.ListMessages(TransactionId="x")
    with pytest.raises(zeep.exceptions.Fault) as caught:
        service.ListMessages(TransactionId="x")
    assert fault_detail(caught.value)["Code"] == "UNKNOWN_TRANSACTION"


def test_a_lost_reply_leaves_the_submission_recorded_and_findable(
    make_act: Callable[..., CanonicalAct], simulator: LegalitySimulator, service: Any
) -> None:
    transmission, data = archive_of(make_act())
    simulator.inject("lost_reply", "SubmitArchive")
    with pytest.raises(requests.exceptions.ConnectionError):
        submit(service, transmission, data)
    found = service.FindSubmission(ClientKey=transmission.envelope_name)
    assert found.Status == "ACKNOWLEDGED"
    assert simulator.received()["by_act"] == {"214400152:DEL2026_042:2026-01-12": 1}


def test_a_hang_outlasts_the_client_timeout_and_stop_releases_it(clients: Clients) -> None:
    simulator = LegalitySimulator(faults=[Fault("hang", "GetStatus", count=None)]).start()
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            clients.service(simulator.url, timeout=0.3).GetStatus(TransactionId=["x"])
        outcome: list[BaseException] = []

        def patient() -> None:
            try:
                clients.service(simulator.url, timeout=30).GetStatus(TransactionId=["x"])
            except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
                outcome.append(exc)

        caller = threading.Thread(target=patient)
        caller.start()
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        simulator.stop()
    assert time.monotonic() - started < 2
    caller.join(timeout=5)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], requests.exceptions.ConnectionError)


def test_per_run_faults_and_latency_from_the_constructor(clients: Clients) -> None:
    with LegalitySimulator(faults=[Fault("http500", "FindSubmission", count=1)], latency=0.1) as simulator:
        service = clients.service(simulator.url)
        started = time.monotonic()
        with pytest.raises(zeep.exceptions.TransportError):
            service.FindSubmission(ClientKey="x")
        assert service.FindSubmission(ClientKey="x").TransactionId is None
        assert time.monotonic() - started >= 0.2
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        Fault("boom")


def test_the_command_line_serves_until_terminated(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.legality", "--port", "0", "--ack-delay", "0.5",
         "--fault", "http500:GetStatus:2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        with urllib.request.urlopen(f"{url}?wsdl", timeout=5) as response:
            assert f'location="{url}"'.encode() in response.read()
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 0, errors
