"""The procurement simulator: Hent's procurement contract over SOAP on 127.0.0.1, and as an SFTP desk.

The DECP files are written here by hand after the official example
(``shared/reference/decp/v2.0.2/exemple-Marche.xml``, its first ``<marche>``), and broken on
purpose.  Every Receipt and Rejection is checked against ``schemas/procurement/procurement.xsd``
and read back by ``read_procurement_answer``, the bus's reading side.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
from lxml import etree
from zeep.exceptions import Fault as ZeepFault

from simulators.procurement import WSDL_PATH, XSD_PATH, ProcurementSimulator
from simulators.procurement_platform import ProcurementPlatform
from simulators.procurement_sftp import ProcurementDesk
from transformers.procurement_receipt import ProcurementAnswer, read_procurement_answer

pytestmark = pytest.mark.integration

BUYER = "21750001630040"
NS = "{urn:hent:procurement:1}"


def decp(decp_id: str = "2025-0042", *, modifications: int = 0, montant: str = "575000", extra: str = "",
         contracts: int = 1) -> bytes:
    """One ``<marches>`` holding ``contracts`` copies of a valid marché (DECP 2.0.2), with
    ``modifications`` modifications, the ``montant`` given and ``extra`` elements in it."""
    changes = "".join(
        f"<modification><id>{n}</id><dateNotificationModification>2025-0{n}-10</dateNotificationModification>"
        f"<datePublicationDonneesModification>2025-0{n}-12</datePublicationDonneesModification>"
        f"<montant>600000</montant></modification>" for n in range(1, modifications + 1))
    marche = f"""
  <marche>
    <id>{decp_id}</id>
    <acheteur><id>{BUYER}</id></acheteur>
    <nature>Marché</nature>
    <objet>Réfection de la toiture de l'école Jules-Ferry</objet>
    <codeCPV>45000000-7</codeCPV>
    <techniques><technique>Sans objet</technique></techniques>
    <modalitesExecution><modaliteExecution>Tranches</modaliteExecution></modalitesExecution>
    <marcheInnovant>non</marcheInnovant>
    <ccag>Travaux</ccag>
    <offresRecues>4</offresRecues>
    <formePrix>Forfaitaire</formePrix>
    <typesPrix><typePrix>Définitif ferme</typePrix></typesPrix>
    <considerationsEnvironnementales>
      <considerationEnvironnementale>Clause environnementale</considerationEnvironnementale>
    </considerationsEnvironnementales>
    <considerationsSociales><considerationSociale>Clause sociale</considerationSociale></considerationsSociales>
    <attributionAvance>oui</attributionAvance>
    <tauxAvance>0.05</tauxAvance>
    <titulaires><titulaire><id>55204599900869</id><typeIdentifiant>SIRET</typeIdentifiant></titulaire></titulaires>
    <typeGroupementOperateurs>Pas de groupement</typeGroupementOperateurs>
    <sousTraitanceDeclaree>non</sousTraitanceDeclaree>
    <procedure>Appel d'offres ouvert</procedure>
    <lieuExecution><code>44000</code><typeCode>Code postal</typeCode></lieuExecution>
    <dureeMois>48</dureeMois>
    <dateNotification>2025-01-15</dateNotification>
    <datePublicationDonnees>2025-01-20</datePublicationDonnees>
    <montant>{montant}</montant>{f"<modifications>{changes}</modifications>" if changes else ""}{extra}
  </marche>"""
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<marches>{marche * contracts}\n</marches>\n'.encode()


@pytest.fixture(scope="module")
def procurement_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


def assert_valid(schema: etree.XMLSchema, data: bytes) -> None:
    document = etree.fromstring(data)
    assert schema.validate(document), schema.error_log


def assert_read(schema: etree.XMLSchema, data: bytes, name: str) -> ProcurementAnswer:
    assert_valid(schema, data)
    return read_procurement_answer(data, name)


@pytest.fixture
def simulator() -> Iterator[ProcurementSimulator]:
    with ProcurementSimulator(publish_delay=0.0) as running:
        yield running


@pytest.fixture
def service(simulator: ProcurementSimulator) -> Any:
    client = zeep.Client(str(WSDL_PATH))
    return client.create_service("{urn:hent:procurement:1}ProcurementBinding", simulator.url)


def fault_code(fault: ZeepFault) -> tuple[str | None, str | None]:
    detail = fault.detail
    return detail.findtext(f".//{NS}Code"), detail.findtext(f".//{NS}TransactionId")


# ---------------------------------------------------------------- SOAP


def test_a_valid_decp_is_received_then_published_with_a_receipt(
    simulator: ProcurementSimulator, service: Any, procurement_schema: etree.XMLSchema
) -> None:
    data = decp()
    submitted = service.SubmitDecp(FileName="decp-2025-0042.xml", Content=data, ClientKey="decp:2025-0042:0")
    assert submitted.Status == "RECEIVED"
    [status] = service.GetStatus(TransactionId=[submitted.TransactionId])
    assert (status.Status, status.DocumentName) == ("PUBLISHED", "decp-2025-0042.xml.receipt.xml")
    receipt = assert_read(procurement_schema, status.Document, status.DocumentName)
    assert (receipt.kind, receipt.decp_id, receipt.modification_id, receipt.buyer_id) == (
        "receipt", "2025-0042", 0, BUYER)
    assert receipt.file_name == "decp-2025-0042.xml" and receipt.errors == ()
    assert receipt.publication_id and receipt.publication_id in status.Detail
    assert receipt.published_at is not None and receipt.published_at >= receipt.received_at
    assert receipt.received_at.tzinfo is not None
    assert receipt.sha256 == simulator.received()["files"]["decp-2025-0042.xml"][0]
    assert simulator.received()["published"] == {f"{BUYER}:2025-0042:0": 1}
    found = service.FindSubmission(ClientKey="decp:2025-0042:0")
    assert (found.TransactionId, found.Status) == (submitted.TransactionId, "PUBLISHED")
    assert service.FindSubmission(ClientKey="never-sent").TransactionId is None
    assert service.Ping().Status == "OK"


def test_the_outcome_shows_after_the_publish_delay() -> None:
    with ProcurementSimulator(publish_delay=0.5) as simulator:
        service = zeep.Client(str(WSDL_PATH)).create_service(
            "{urn:hent:procurement:1}ProcurementBinding", simulator.url)
        transaction_id = service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="a").TransactionId
        [early] = service.GetStatus(TransactionId=[transaction_id])
        assert (early.Status, early.Document) == ("RECEIVED", None)
        time.sleep(0.6)
        [late] = service.GetStatus(TransactionId=[transaction_id])
        assert late.Status == "PUBLISHED"
        receipt = read_procurement_answer(late.Document, late.DocumentName)
        assert receipt.published_at is not None and (receipt.published_at - receipt.received_at).total_seconds() <= 1


def test_an_invalid_decp_is_rejected_naming_the_element_and_the_rule(
    service: Any, procurement_schema: etree.XMLSchema
) -> None:
    transaction_id = service.SubmitDecp(FileName="bad.xml", Content=decp(montant="0"), ClientKey="bad").TransactionId
    [status] = service.GetStatus(TransactionId=[transaction_id])
    assert (status.Status, status.DocumentName) == ("REJECTED", "bad.xml.rejection.xml")
    rejection = assert_read(procurement_schema, status.Document, status.DocumentName)
    assert (rejection.kind, rejection.decp_id, rejection.modification_id) == ("rejection", "2025-0042", 0)
    [problem] = rejection.problems
    assert (problem.field, problem.rule) == ("/marches/marche/montant", "xsd")
    assert "minInclusive" in problem.message
    assert rejection.errors[0].startswith("/marches/marche/montant: ") and rejection.errors[0].endswith("[xsd]")
    assert rejection.publication_id is None and rejection.published_at is None and not rejection.duplicate
    assert "/marches/marche/montant" in status.Detail


@pytest.mark.parametrize(("data", "rule", "field", "decp_id"), [
    (b"{\"marches\": []}", "xml-well-formed", None, None),
    (b'<?xml version="1.0"?><!DOCTYPE marches [<!ENTITY x "y">]><marches/>', "xml-doctype", None, None),
    (decp(contracts=2), "decp-document", "/marches", "2025-0042"),
    (decp(extra="<couleur>bleu</couleur>"), "xsd", "/marches/marche/couleur", "2025-0042"),
    (decp("an-id-much-too-long-for-decp"), "xsd", "/marches/marche/id", None),
])
def test_what_the_platform_refuses(
    service: Any, procurement_schema: etree.XMLSchema, data: bytes, rule: str, field: str | None,
    decp_id: str | None
) -> None:
    transaction_id = service.SubmitDecp(FileName="x.xml", Content=data, ClientKey=rule + (field or "")).TransactionId
    [status] = service.GetStatus(TransactionId=[transaction_id])
    rejection = assert_read(procurement_schema, status.Document, status.DocumentName)
    assert status.Status == "REJECTED" and rejection.decp_id == decp_id
    assert [(p.rule, p.field) for p in rejection.problems] == [(rule, field)]


def test_the_same_contract_and_modification_is_a_duplicate_naming_the_first_transaction(
    simulator: ProcurementSimulator, service: Any
) -> None:
    first = service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="key-a").TransactionId
    with pytest.raises(ZeepFault) as same_key:
        service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="key-a")
    with pytest.raises(ZeepFault) as same_contract:
        service.SubmitDecp(FileName="b.xml", Content=decp(), ClientKey="key-b")
    assert fault_code(same_key.value) == ("DUPLICATE", first) and same_key.value.code.endswith("Client")
    assert fault_code(same_contract.value) == ("DUPLICATE", first)
    assert "already published as PUB-" in same_contract.value.message
    modified = service.SubmitDecp(FileName="a-1.xml", Content=decp(modifications=1), ClientKey="key-a1")
    [status] = service.GetStatus(TransactionId=[modified.TransactionId])
    assert read_procurement_answer(status.Document, status.DocumentName).modification_id == 1
    received = simulator.received()
    assert received["by_contract"] == {f"{BUYER}:2025-0042:0": 3, f"{BUYER}:2025-0042:1": 1}
    assert received["published"] == {f"{BUYER}:2025-0042:0": 1, f"{BUYER}:2025-0042:1": 1}


def test_a_rejected_file_may_be_sent_again_under_the_same_client_key(service: Any) -> None:
    rejected = service.SubmitDecp(FileName="a.xml", Content=decp(montant="0"), ClientKey="key").TransactionId
    fixed = service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="key").TransactionId
    assert fixed != rejected
    assert [s.Status for s in service.GetStatus(TransactionId=[rejected, fixed, "nope"])] == [
        "REJECTED", "PUBLISHED", "UNKNOWN"]
    assert service.FindSubmission(ClientKey="key").TransactionId == fixed


def test_injected_faults(simulator: ProcurementSimulator, service: Any) -> None:
    simulator.inject("http500", operation="SubmitDecp")
    with pytest.raises(zeep.exceptions.TransportError) as http500:
        service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="a")
    assert http500.value.status_code == 500
    simulator.inject("soapfault", operation="GetStatus")
    with pytest.raises(ZeepFault) as internal:
        service.GetStatus(TransactionId=["x"])
    assert fault_code(internal.value) == ("INTERNAL", None) and internal.value.code.endswith("Server")
    assert simulator.received()["by_contract"] == {}  # the 500 came before the platform saw it

    simulator.inject("lost_reply", operation="SubmitDecp")
    with pytest.raises(requests.exceptions.ConnectionError):
        service.SubmitDecp(FileName="a.xml", Content=decp(), ClientKey="a")
    assert simulator.received()["published"] == {f"{BUYER}:2025-0042:0": 1}  # recorded though unanswered
    assert service.FindSubmission(ClientKey="a").Status == "PUBLISHED"

    simulator.inject("timeout", operation="Ping", seconds=2)
    client = zeep.Client(str(WSDL_PATH), transport=zeep.Transport(operation_timeout=0.5))
    with pytest.raises(requests.exceptions.Timeout):
        client.create_service("{urn:hent:procurement:1}ProcurementBinding", simulator.url).Ping()
    assert simulator.received()["calls"] == {"SubmitDecp": 2, "GetStatus": 1, "FindSubmission": 1, "Ping": 1}


def test_credentials_wsdl_and_control_routes() -> None:
    with ProcurementSimulator(username="hent", password="pw-of-the-buyer") as simulator:
        anonymous = zeep.Client(str(WSDL_PATH)).create_service(
            "{urn:hent:procurement:1}ProcurementBinding", simulator.url)
        with pytest.raises(ZeepFault) as denied:
            anonymous.Ping()
        assert fault_code(denied.value) == ("AUTH", None)
        base = simulator.url.removesuffix("/soap")
        wsdl = requests.get(f"{simulator.url}?wsdl", timeout=5).text
        assert f'location="{simulator.url}"' in wsdl
        assert requests.get(f"{base}/procurement.xsd", timeout=5).content == XSD_PATH.read_bytes()
        injected = requests.post(f"{base}/control/faults", json={"kind": "http500"}, timeout=5)
        assert injected.json() == {"faults": 1}
        assert requests.delete(f"{base}/control/faults", timeout=5).json() == {"faults": 0}
        assert requests.post(f"{base}/control/followup", json={"id_acte": "x", "code": "2-1"}, timeout=5).status_code \
            == 400
        assert requests.get(f"{base}/control/received", timeout=5).json()["calls"] == {"Ping": 1}
        garbage = requests.post(simulator.url, data=b"not soap", timeout=5)
        assert garbage.status_code == 500 and b"malformed request" in garbage.content


# ---------------------------------------------------------------- the SFTP desk


@pytest.fixture
def desk(tmp_path: Path) -> ProcurementDesk:
    """A desk that is not running: the tests call process_once() themselves."""
    return ProcurementDesk(tmp_path / "desk", ProcurementPlatform())


def drop(desk: ProcurementDesk, name: str, data: bytes) -> None:
    """Upload as the bus does: ``<name>.part``, then renamed."""
    part = desk.inbox_dir / f"{name}.part"
    part.write_bytes(data)
    part.rename(desk.inbox_dir / name)


def outbox(desk: ProcurementDesk) -> list[str]:
    return sorted(path.name for path in desk.outbox_dir.iterdir())


def test_the_desk_answers_a_receipt_and_a_rejection_and_keeps_the_files(
    desk: ProcurementDesk, procurement_schema: etree.XMLSchema
) -> None:
    (desk.inbox_dir / "half.xml.part").write_bytes(decp()[:50])  # an upload under way: not taken
    drop(desk, "decp-2025-0042.xml", decp())
    drop(desk, "decp-2025-0043.xml", decp("2025-0043", montant="beaucoup"))
    assert desk.process_once() == 2
    assert outbox(desk) == ["decp-2025-0042.xml.receipt.xml", "decp-2025-0043.xml.rejection.xml"]
    receipt = assert_read(procurement_schema, (desk.outbox_dir / "decp-2025-0042.xml.receipt.xml").read_bytes(),
                          "decp-2025-0042.xml.receipt.xml")
    assert (receipt.kind, receipt.decp_id, receipt.file_name) == ("receipt", "2025-0042", "decp-2025-0042.xml")
    rejection = assert_read(procurement_schema, (desk.outbox_dir / "decp-2025-0043.xml.rejection.xml").read_bytes(),
                            "decp-2025-0043.xml.rejection.xml")
    assert (rejection.decp_id, [p.field for p in rejection.problems]) == ("2025-0043", ["/marches/marche/montant"])
    assert sorted(p.name for p in desk.inbox_dir.iterdir() if p.is_file()) == ["half.xml.part"]
    assert (desk.processed_dir / "decp-2025-0042.xml").read_bytes() == decp()
    assert desk.received()["handled"] == ["decp-2025-0042.xml", "decp-2025-0043.xml"]
    assert desk.process_once() == 0


def test_the_desk_rejects_a_duplicate_naming_the_existing_publication(
    desk: ProcurementDesk, procurement_schema: etree.XMLSchema
) -> None:
    drop(desk, "first.xml", decp())
    desk.process_once()
    drop(desk, "again.xml", decp())
    drop(desk, "first.xml", decp())  # the same file uploaded again: kept as processed/first.2.xml
    desk.process_once()
    assert outbox(desk) == ["again.xml.rejection.xml", "first.xml.receipt.xml", "first.xml.rejection.xml"]
    receipt = read_procurement_answer((desk.outbox_dir / "first.xml.receipt.xml").read_bytes(), "r")
    for name in ("again.xml.rejection.xml", "first.xml.rejection.xml"):
        rejection = assert_read(procurement_schema, (desk.outbox_dir / name).read_bytes(), name)
        assert rejection.duplicate and rejection.publication_id == receipt.publication_id
        assert [(p.rule, p.field) for p in rejection.problems] == [("duplicate", "/marches/marche/id")]
    assert sorted(p.name for p in desk.processed_dir.iterdir()) == ["again.xml", "first.2.xml", "first.xml"]
    assert desk.received()["published"] == {f"{BUYER}:2025-0042:0": 1}
    drop(desk, "first.xml", decp())
    desk.process_once()
    assert "first.xml.rejection.2.xml" in outbox(desk)  # the earlier answer is still there: not overwritten


def test_the_desk_writes_a_receipt_once_published(tmp_path: Path) -> None:
    with ProcurementDesk(tmp_path, ProcurementPlatform(publish_delay=0.3), interval=0.05) as desk:
        drop(desk, "late.xml", decp())
        deadline = time.monotonic() + 5
        while not (desk.outbox_dir / "late.xml.receipt.xml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        receipt = read_procurement_answer((desk.outbox_dir / "late.xml.receipt.xml").read_bytes(), "late")
    assert datetime.now(receipt.received_at.tzinfo) >= receipt.received_at
    assert [p.name for p in tmp_path.joinpath("outbox").iterdir()] == ["late.xml.receipt.xml"]  # no .tmp left


def test_the_command_line_runs_a_desk(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "simulators.procurement", "--desk", str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"procurement desk on {tmp_path}")
        (tmp_path / "inbox" / "cli.xml").write_bytes(decp())
        deadline = time.monotonic() + 10
        while not (tmp_path / "outbox" / "cli.xml.receipt.xml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "outbox" / "cli.xml.receipt.xml").exists()
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close() if process.stdout else None
        process.stderr.close() if process.stderr else None
    bad = subprocess.run([sys.executable, "-m", "simulators.procurement", "--desk", str(tmp_path), "--latency", "1"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=False)
    assert bad.returncode == 2 and "--desk takes no SOAP server options (--latency)" in bad.stderr
