"""The whole loop through Pastell, on 127.0.0.1: a dropped act is filled into an actes-generique
document of the Pastell simulator over real HTTP, handed to its TdT, and the ministry's answer
comes back to the software; every answer of the simulator conforms to Pastell's OpenAPI description."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import requests
import yaml
from lxml import etree

from bus.circuit import OPEN, Circuit
from bus.config import load_config
from bus.errors import DocumentError
from bus.runtime import RetryPolicy, Runtime
from routes.check import probe_connectors
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from simulators.pastell import PastellSimulator
from simulators.pdf import make_pdf
from tests.harness import REFERENCE, ledger_outcome, reference_or_skip, run_cli, run_until_idle, write_config
from tests.integration.test_responses_loop import awaiting, drop_response

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
TODAY = date.today()
TOKEN = "pastell-test-token-7f3a9c"
BUNDLE = Path("drop") / "deliberations"


@pytest.fixture
def pastell() -> Iterator[PastellSimulator]:
    with PastellSimulator(token=TOKEN, ack_delay=0.1) as running:
        yield running


def secret_file(workspace: Path, name: str, value: str) -> str:
    """A secret as the YAML must name it: ``${file:...}``."""
    path = workspace / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n", encoding="utf-8")
    return f"${{file:{path}}}"


def pastell_config(workspace: Path, simulator: PastellSimulator, **options: Any) -> Path:
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.1s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for secret in ("token", "password"):
        if secret in options:
            options[secret] = secret_file(workspace, f"given-{secret}", options[secret])
    config["connectors"]["prefecture"] = {
        "type": "pastell", "url": simulator.url, "entity": "1", "token": secret_file(workspace, "token", TOKEN),
        "read_timeout": "1s", "connect_timeout": "1s", "max_retry_after": "2s", **options,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def run(config_path: Path, timeout: float = 30, retry: RetryPolicy = FAST) -> dict[str, Any]:
    return run_until_idle(config_path, timeout=timeout, retry=retry)


def replies(workspace: Path) -> dict[str, bytes]:
    folder = workspace / BUNDLE / "replies"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def act_key(numero: str, day: date = TODAY) -> str:
    return f"214400152:{numero}:{day.isoformat()}"


def test_a_dropped_act_is_acknowledged_and_the_aractes_goes_back_to_the_software(
    tmp_path: Path, pastell: PastellSimulator
) -> None:
    yesterday = TODAY - timedelta(days=1)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_400", decision=yesterday, annexes=2)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_400.json"]["deliveries"]
    expected = f"044-214400152-{yesterday:%Y%m%d}-DEL2026_400-DE"
    assert (delivery.state, delivery.id_acte) == ("ACKNOWLEDGED", expected)
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_400.1.")] == ["DEL2026_400.1.1-2.xml",
                                                                              "DEL2026_400.1.json"]
    assert b"ARActe" in files["DEL2026_400.1.1-2.xml"] and expected.encode() in files["DEL2026_400.1.1-2.xml"]
    summary = json.loads(files["DEL2026_400.1.json"])
    assert summary["state"] == "ACKNOWLEDGED" and summary["id_acte"] == expected
    # Pastell's document holds the act as the vendor exported it, typed, and it reached the ministry once
    document = pastell.document(delivery.remote_id)
    assert document["last_action"]["action"] == "acquiter-tdt"
    data = document["data"]
    assert (data["numero_de_lacte"], data["date_de_lacte"], data["acte_nature"], data["classification"]) == (
        "DEL2026_400", yesterday.isoformat(), "1", "3.2")
    assert data["arrete"] == "DEL2026_400.pdf"
    assert data["autre_document_attache"].split("\n") == ["DEL2026_400_annexe1.pdf", "DEL2026_400_annexe2.pdf"]
    assert (data["type_acte"], json.loads(data["type_pj"])) == ("99_DE", ["21_RP", "99_DE"])
    assert pastell.received()["by_act"] == {act_key("DEL2026_400", yesterday): 1}
    assert pastell.received()["documents"] == {act_key("DEL2026_400", yesterday): 1}


def test_an_anomaly_rejects_the_delivery_with_the_ministrys_words(tmp_path: Path, pastell: PastellSimulator) -> None:
    # Given a classification the préfecture published, which Pastell's TdT has not fetched yet
    pastell.publish_classification(TODAY)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_401", decision=TODAY)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_401.json"]["deliveries"]
    assert delivery.state == "REJECTED"
    assert delivery.reason.startswith("anomaly: erreur-verif-tdt: Transaction en erreur sur le TdT : ODT-VERIF-01")
    summary = json.loads(replies(tmp_path)["DEL2026_401.1.json"])
    assert summary["state"] == "REJECTED" and "ODT-VERIF-01" in summary["reason"]
    assert pastell.document(delivery.remote_id)["last_action"]["action"] == "erreur-verif-tdt"
    # and once the TdT has fetched the new classification, the next act goes through
    pastell.tdt_fetches_classification()
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_411", decision=TODAY)
    assert run(tmp_path / "hent.yaml")["DEL2026_411.json"]["deliveries"][0].state == "ACKNOWLEDGED"


def test_server_errors_and_timeouts_are_retried_and_the_act_is_received_once(
    tmp_path: Path, pastell: PastellSimulator
) -> None:
    pastell.inject("http500", operation="createDocument", count=2)
    pastell.inject("timeout", operation="postDocumentFile", count=1, seconds=3)
    pastell.inject("http500", operation="action:send-tdt", count=1)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_402", decision=TODAY)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_402.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED" and delivery.attempts == 5
    received = pastell.received()
    assert received["by_act"] == {act_key("DEL2026_402"): 1}
    assert received["documents"] == {act_key("DEL2026_402"): 1}  # the draft was resumed, not created again
    assert received["calls"]["createDocument"] == 3


@pytest.mark.parametrize("operation", ["action:send-tdt", "modifyDocument", "postDocumentFile"])
def test_a_reply_lost_after_pastell_did_the_work_is_found_or_resumed_not_duplicated(
    tmp_path: Path, pastell: PastellSimulator, operation: str
) -> None:
    pastell.inject("lost_reply", operation=operation, count=1)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_403", decision=TODAY)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_403.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    received = pastell.received()
    assert received["by_act"] == {act_key("DEL2026_403"): 1}
    assert received["documents"] == {act_key("DEL2026_403"): 1}
    assert received["calls"]["action:send-tdt"] == 1


def test_a_rate_limit_is_waited_out_as_pastell_asks(tmp_path: Path, pastell: PastellSimulator) -> None:
    pastell.inject("rate_limit", operation="modifyDocument", count=1, seconds=1)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_404", decision=TODAY)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_404.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED" and delivery.attempts == 1  # waited, not failed
    received = pastell.received()
    assert received["statuses"][429] == 1 and received["calls"]["modifyDocument"] == 2


def test_refused_credentials_hold_the_delivery_with_the_circuit_open_until_they_are_accepted(
    tmp_path: Path, pastell: PastellSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # Given Pastell refusing the connector's token
    pastell.inject("refuse_credentials", count=None)
    config_path = pastell_config(tmp_path, pastell)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_405", decision=TODAY)
    patient = RetryPolicy(max_attempts=20, first_delay=0.05, max_delay=0.1)
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=patient, serve_http=False)
    runtime.circuits["prefecture"] = Circuit("prefecture", cooldown=3)  # opened after 5 failures in a row
    assert not runtime.run_until_idle(timeout=2.5)
    # Then the delivery waits, the circuit is open, a person is alerted, and Pastell has nothing
    [delivery] = ledger_outcome(config_path)["DEL2026_405.json"]["deliveries"]
    assert delivery.state == "PENDING" and runtime.circuits["prefecture"].state == OPEN
    assert "ALERT connector prefecture" in caplog.text and "HTTP 401" in caplog.text
    assert TOKEN not in caplog.text
    assert pastell.received()["documents"] == {}
    # When the credentials are accepted again, Then it goes through, once
    pastell.clear_faults()
    [delivery] = run(config_path, retry=patient)["DEL2026_405.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    assert pastell.received()["by_act"] == {act_key("DEL2026_405"): 1}


def test_basic_authentication_is_accepted(tmp_path: Path) -> None:
    with PastellSimulator(login="hent", password="s3cret-pastell", ack_delay=0.1) as basic:
        config_path = pastell_config(tmp_path, basic, auth="basic", login="hent", password="s3cret-pastell")
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        del config["connectors"]["prefecture"]["token"]
        config_path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        drop_deliberation(tmp_path / BUNDLE, "DEL2026_406", decision=TODAY)
        [delivery] = run(config_path)["DEL2026_406.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"


def test_a_later_letter_of_the_prefecture_reaches_the_software_once(tmp_path: Path, pastell: PastellSimulator) -> None:
    config_path = pastell_config(tmp_path, pastell)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_407", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_407.json"]["deliveries"]
    pastell.followup(delivery.id_acte, "2-1")
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        assert runtime.answers.poll_follow_ups("prefecture") == 0  # recorded once
        [message] = [m for m in runtime.ledger.messages_of(delivery.id) if m["code"] != "receipts"]
    finally:
        runtime.shutdown()
    assert message["code"] == "2-1"
    files = replies(tmp_path)
    letters = [name for name in files if name.startswith("DEL2026_407.3.")]
    assert "DEL2026_407.3.2-1.xml" in letters and any(name.endswith(".pdf") for name in letters)
    assert b"CourrierSimple" in files["DEL2026_407.3.2-1.xml"]


def test_the_stamped_act_and_annexes_and_the_bordereau_reach_the_software_once(
    tmp_path: Path, pastell: PastellSimulator
) -> None:
    # Given an act with two annexes, acknowledged: Pastell's TdT fetched the stamped files and the bordereau
    config_path = pastell_config(tmp_path, pastell)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_412", decision=TODAY, annexes=2)
    [delivery] = run(config_path)["DEL2026_412.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    data = pastell.document(delivery.remote_id)["data"]
    assert (data["acte_tamponne"], data["annexes_tamponnees"].split("\n"), data["bordereau"]) == (
        "DEL2026_412-tampon.pdf", ["DEL2026_412_annexe1-tampon.pdf", "DEL2026_412_annexe2-tampon.pdf"],
        "DEL2026_412-bordereau-tdt.pdf")
    # Then they came back to the software right after the acknowledgment, under Pastell's names
    stamped = ["DEL2026_412-bordereau-tdt.pdf", "DEL2026_412-tampon.pdf", "DEL2026_412_annexe1-tampon.pdf",
               "DEL2026_412_annexe2-tampon.pdf"]
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_412.2.")] == [
        "DEL2026_412.2.json", *(f"DEL2026_412.2.receipts.{name}" for name in stamped)]
    assert all(files[f"DEL2026_412.2.receipts.{name}"].startswith(b"%PDF-") for name in stamped)
    assert delivery.id_acte.encode() in files["DEL2026_412.2.receipts.DEL2026_412-tampon.pdf"]
    assert json.loads(files["DEL2026_412.2.json"])["message"] == {"kind": "receipts", "files": stamped}
    # When the follow-up poll asks again, Then nothing new is fetched nor returned
    fetched = pastell.received()["calls"]["getDocumentFile"]
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 0
    finally:
        runtime.shutdown()
    assert replies(tmp_path) == files
    assert pastell.received()["calls"]["getDocumentFile"] == fetched


def test_an_acknowledged_act_is_cancelled_through_pastell(tmp_path: Path, pastell: PastellSimulator) -> None:
    config_path = pastell_config(tmp_path, pastell)
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_408", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_408.json"]["deliveries"]
    # When the act is cancelled from the command line
    result = run_cli("cancel", delivery.id_acte, "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{delivery.id_acte}: cancellation sent (")
    # Then the ministry acknowledged it (6-2) to Pastell's TdT, and Pastell says the act is cancelled
    transaction = pastell.platform.transaction(pastell.document(delivery.remote_id)["data"]["tedetis_transaction_id"])
    assert transaction is not None and [f.code for f in transaction.followups] == ["6-2"]
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    endpoint = runtime.endpoints["prefecture"]
    try:
        time.sleep(0.2)  # the simulated verif-annulation-tdt
        [status] = endpoint.statuses([delivery.remote_id])  # type: ignore[attr-defined]
        again = endpoint.cancel(delivery.remote_id, delivery.id_acte)  # type: ignore[attr-defined]
        with pytest.raises(DocumentError, match="is the act .* not 044-214400152-20200101-NOPE-DE: nothing"):
            endpoint.cancel(delivery.remote_id, "044-214400152-20200101-NOPE-DE")  # type: ignore[attr-defined]
    finally:
        runtime.shutdown()
    assert (status.state, status.detail) == ("CANCELLED", "annuler-tdt: Transaction annulée")
    assert again.state == "CANCELLED"  # asked again: nothing sent twice
    assert pastell.received()["calls"]["action:annulation-tdt"] == 1


def test_the_connection_test_names_pastell_and_the_entity(tmp_path: Path, pastell: PastellSimulator) -> None:
    probes = {name: (ok, detail) for name, ok, detail in probe_connectors(pastell_config(tmp_path, pastell))}
    assert probes["prefecture"] == (
        True, f"Pastell 4.1.18 at {pastell.url}, entity 1 (Commune de Saint-Herblain, SIREN 214400152)")
    wrong = {name: (ok, detail) for name, ok, detail in
             probe_connectors(pastell_config(tmp_path, pastell, token="not-the-token"))}
    ok, detail = wrong["prefecture"]
    assert not ok and detail.startswith("connector 'prefecture': getVersion answered HTTP 401 (Authentification")
    gone = {name: ok for name, ok, _ in probe_connectors(pastell_config(tmp_path, pastell, entity="99"))}
    assert gone["prefecture"] is False


def test_the_classification_kept_by_the_tdt_connector_is_read(tmp_path: Path, pastell: PastellSimulator) -> None:
    pastell.publish_classification(TODAY)
    pastell.tdt_fetches_classification()
    config_path = pastell_config(tmp_path, pastell, classification_connector="101")
    result = run_cli("classification", "214400152", "-c", str(config_path), "--refresh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"214400152: classification of {TODAY}, received from the")


# -- answering the préfecture's letters ----------------------------------------------------------

def assert_ministry_valid(message: bytes) -> None:
    """A message of the ministry passes its actesv1_1.xsd (Hent's own schema covers what a collectivité
    sends, not the ministry's receipts), when the reference is at hand."""
    xsd = REFERENCE / "actes" / "xsd" / "actesv1_1.xsd"
    if not xsd.is_file():
        return
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    schema = etree.XMLSchema(etree.parse(str(xsd), parser))
    assert schema.validate(etree.fromstring(message, parser)), schema.error_log


def pastell_answers_config(workspace: Path, simulator: PastellSimulator) -> Path:
    """Pastell as the préfecture's endpoint, and a source of response bundles routed to it."""
    path = pastell_config(workspace, simulator)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["bus"]["follow_ups"] = "0.2s"
    config["connectors"]["reponses"] = {"type": "folder", "path": str(workspace / "drop" / "reponses"),
                                        "pattern": "*.json", "poll": "0.2s",
                                        "ready": {"min_age": "0s", "stable": False}}
    config["routes"].append({"name": "reponses", "from": "reponses", "transform": "response", "to": "prefecture"})
    (workspace / "drop" / "reponses").mkdir(parents=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def letter_received(workspace: Path, pastell: PastellSimulator, config_path: Path, numero: str, letter: str
                    ) -> tuple[str, str]:
    """An act acknowledged through Pastell and a letter of the préfecture about it, received by the bus:
    (IDActe, the letter's actes-reponse-prefecture document)."""
    drop_deliberation(workspace / BUNDLE, numero, decision=TODAY)
    [delivery] = run(config_path)[f"{numero}.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    id_acte = str(delivery.id_acte)
    letter_id = pastell.followup(id_acte, letter)["id_d"]
    run(config_path)
    assert any(name.startswith(f"{numero}.") and name.endswith(f".{letter}.xml") for name in replies(workspace))
    assert [(a["id_acte"], a["code"]) for a in awaiting(config_path)] == [(id_acte, letter)]
    return id_acte, letter_id


@pytest.mark.parametrize(("letter", "answer", "receipt", "documents", "last"), [
    ("3-1", "3-4", "3-5", 2, "verif-reponse-tdt"),
    ("4-1", "4-3", "4-5", 1, "verif-reponse-tdt"),
    ("2-1", "2-2", None, 1, "termine"),
])
def test_a_letter_answered_through_pastell_is_acknowledged_by_the_ministrys_receipt(
    tmp_path: Path, pastell: PastellSimulator, letter: str, answer: str, receipt: str | None, documents: int,
    last: str,
) -> None:
    # Given an act acknowledged through Pastell and a letter of the préfecture about it, received by the bus
    config_path = pastell_answers_config(tmp_path, pastell)
    id_acte, letter_id = letter_received(tmp_path, pastell, config_path, "DEL2026_420", letter)
    # When the software drops its answer
    drop_response(tmp_path, "REP_420", id_acte, answer, documents=documents)
    outcome = run(config_path)["REP_420.json"]
    # Then Pastell took it on the letter's document, and the ministry's receipt (if it sends one) came back
    assert outcome["doc"].state == "ROUTED", outcome["doc"].reason
    [sent] = outcome["deliveries"]
    assert (sent.state, sent.id_acte, sent.remote_id) == ("ACKNOWLEDGED", id_acte, letter_id)
    document = pastell.document(letter_id)
    assert (document["info"]["type"], document["last_action"]["action"]) == ("actes-reponse-prefecture", last)
    data = document["data"]
    assert data["reponse"] == "REP_420_1.pdf" and data["repondre"] == "1"
    if answer != "2-2":
        assert data["refus_reponse"] == ("1" if answer == "4-3" else "0")
    if documents > 1:
        assert data["reponse_pj_demande_piece_complementaire"] == "REP_420_2.pdf"
    folder = tmp_path / "drop" / "reponses" / "replies"
    names = sorted(p.name for p in folder.iterdir())
    summary = json.loads((folder / "REP_420.1.json").read_text())
    assert summary["state"] == "ACKNOWLEDGED"
    if receipt is None:  # the ministry acknowledges no 2-2
        assert [n for n in names if n.endswith(".xml")] == [] and "has_acquittement" not in data
    else:
        assert f"REP_420.1.{receipt}.xml" in names, names
        assert summary["message"]["code"] == receipt
        message = (folder / f"REP_420.1.{receipt}.xml").read_bytes()
        assert id_acte.encode() in message and data["has_acquittement"] == "1"
        assert_ministry_valid(message)
    # and the letter no longer awaits an answer; Pastell received the answer once
    assert awaiting(config_path) == []
    assert pastell.received()["answers"] == {f"{id_acte}:{answer}": 1}
    run(config_path)  # the polls that follow bring nothing new
    assert sorted(p.name for p in folder.iterdir()) == names
    assert_conforms(pastell)


def test_a_reply_lost_after_pastell_sent_the_answer_is_followed_not_sent_twice(
    tmp_path: Path, pastell: PastellSimulator
) -> None:
    config_path = pastell_answers_config(tmp_path, pastell)
    id_acte, letter_id = letter_received(tmp_path, pastell, config_path, "DEL2026_421", "3-1")
    pastell.inject("lost_reply", operation="action:send-reponse-prefecture", count=1)
    drop_response(tmp_path, "REP_421", id_acte, "3-4", documents=1)
    [sent] = run(config_path)["REP_421.json"]["deliveries"]
    assert (sent.state, sent.remote_id) == ("ACKNOWLEDGED", letter_id)
    received = pastell.received()
    assert received["answers"] == {f"{id_acte}:3-4": 1}
    assert received["calls"]["action:send-reponse-prefecture"] == 1 and received["calls"]["action:repondre"] == 1
    assert "REP_421.1.3-5.xml" in [p.name for p in (tmp_path / "drop" / "reponses" / "replies").iterdir()]


def test_pastell_refuses_an_answer_its_tdt_could_not_send(tmp_path: Path, pastell: PastellSimulator) -> None:
    # Given an acknowledged act with a courrier simple and a lettre d'observations about it
    drop_deliberation(tmp_path / BUNDLE, "DEL2026_422", decision=TODAY)
    [delivery] = run(pastell_config(tmp_path, pastell))["DEL2026_422.json"]["deliveries"]
    courrier = pastell.followup(str(delivery.id_acte), "2-1")["id_d"]
    lettre = pastell.followup(str(delivery.id_acte), "4-1")["id_d"]
    base, good = f"{pastell.url}/api/v2/entite/1/document", {"Authorization": f"Bearer {TOKEN}"}

    def call(method: str, path: str, **options: Any) -> requests.Response:
        return requests.request(method, f"{base}/{path}", headers=good, timeout=5, **options)

    def upload(id_d: str, field: str, content: bytes, num: int = 0) -> None:
        call("POST", f"{id_d}/file/{field}/{num}", files={"file_content": ("reponse.pdf", content)},
             data={"file_name": "reponse.pdf"}).raise_for_status()

    def send(id_d: str) -> str:
        answer = call("POST", f"{id_d}/action/send-reponse-prefecture")
        return "sent" if answer.status_code == 201 else answer.json()["error-message"]

    links = json.loads(call("GET", f"{delivery.remote_id}/file/reponse_prefecture_file/0").content)
    assert links == {"2": f"/Document/detail?id_d={courrier}&id_e=1", "4": f"/Document/detail?id_d={lettre}&id_e=1"}
    # an answer not opened (repondre), a reponse that is not a PDF, a refusal of a courrier simple: refused
    assert send(courrier).endswith("n'est pas permise : content (repondre)")
    assert call("POST", f"{courrier}/action/repondre").status_code == 201
    assert call("POST", f"{courrier}/action/repondre").status_code == 400  # once
    upload(courrier, "reponse", b"not a PDF")
    call("PATCH", f"{courrier}/externalData/type_piece_courrier_simple", data={"type_pj[]": ["99_DE"]})
    assert send(courrier).endswith("KO reponse.pdf n'est pas un fichier PDF")
    upload(courrier, "reponse", make_pdf(["Réponse"]))
    call("PATCH", courrier, data={"refus_reponse": "1"}).raise_for_status()
    assert send(courrier).endswith("KO un refus ne répond qu'à une demande de pièces complémentaires ou à une "
                                   "lettre d'observations")
    call("PATCH", courrier, data={"refus_reponse": "0"}).raise_for_status()
    assert send(courrier) == "sent"
    assert send(courrier).endswith("n'est pas permise : last-action")  # once
    # further documents with an answer to a lettre d'observations, a typology of another nature: refused
    call("POST", f"{lettre}/action/repondre").raise_for_status()
    upload(lettre, "reponse", make_pdf(["Réponse"]))
    upload(lettre, "reponse_pj_demande_piece_complementaire", make_pdf(["Annexe"]))
    typology = f"{lettre}/externalData/type_piece_lettre_observation"
    assert call("PATCH", typology, data={"type_pj[]": ["99_DE", "99_DE"]}).json()["error-message"] == (
        "2 type(s) de pièce pour 1 pièce(s)")
    assert call("PATCH", typology, data={"type_pj[]": ["99_AI"]}).json()["error-message"] == (
        "Le type de pièce 99_AI n'existe pas pour la nature 1")
    assert call("PATCH", typology, data={"type_pj[]": ["99_DE"]}).json()["formulaire_ok"] == 1
    assert send(lettre).endswith("KO des pièces complémentaires ne se joignent qu'à la réponse à une demande de "
                                 "pièces complémentaires")
    assert pastell.received()["answers"] == {f"{delivery.id_acte}:2-2": 1}
    assert_conforms(pastell)


# -- the contract ----------------------------------------------------------------------------

def _openapi() -> dict[str, Any]:
    reference_or_skip()
    path = REFERENCE / "pastell" / "pastell_4.1.18_openapi.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


_PATHS = {
    "getVersion": "/v2/version", "listEntite": "/v2/entite", "listDocuments": "/v2/entite/{id_e}/document",
    "createDocument": "/v2/entite/{id_e}/document", "getDocument": "/v2/entite/{id_e}/document/{id_d}",
    "modifyDocument": "/v2/entite/{id_e}/document/{id_d}", "postDocumentFile": "/v2/entite/{id_e}/document/{id_d}",
    "getDocumentFile": "/v2/entite/{id_e}/document/{id_d}/file/{field}/{num}",
    "getDocumentExternalData": "/v2/entite/{id_e}/document/{id_d}/externalData/{field}",
    "patchDocumentExternalData": "/v2/entite/{id_e}/document/{id_d}/externalData/{field}",
    "postDocumentAction": "/v2/entite/{id_e}/document/{id_d}/action/{action_name}",
    "listConnecteur": "/v2/entite/{id_e}/connecteur",
    "getConnecteurFile": "/v2/entite/{id_e}/connecteur/{id_ce}/file/{field}/{num}",
}
_METHODS = {"postDocumentFile": "post", "createDocument": "post", "postDocumentAction": "post",
            "modifyDocument": "patch", "patchDocumentExternalData": "patch"}


def check_against_openapi(document: dict[str, Any], exchange: Any) -> list[str]:
    """What an answer of the simulator breaks in the OpenAPI description of its operation."""
    path = _PATHS[exchange.operation]
    method = _METHODS.get(exchange.operation, "get")
    operation = document["paths"][path][method]
    assert operation["operationId"] == exchange.operation
    declared = operation["responses"].get(str(exchange.status))
    if declared is None:
        return [f"{exchange.operation}: HTTP {exchange.status} is not a declared response"]
    if "$ref" in declared:
        declared = document["components"]["responses"][declared["$ref"].rsplit("/", 1)[1]]
    problems = [f"{exchange.operation}: header {name} missing" for name in declared.get("headers", {})
                if name not in exchange.headers]
    content = declared.get("content")
    if not content:
        return problems
    media = exchange.content_type.partition(";")[0].strip()
    if media not in content:
        return [*problems, f"{exchange.operation}: {media} answered, {sorted(content)} declared"]
    if media != "application/json":
        return problems
    reference = operation["responses"][str(exchange.status)].get("$ref")
    where = reference or "/".join(["#", "paths", path.replace("/", "~1"), method, "responses", str(exchange.status)])
    schema = {**document, "$ref": quote(f"{where}/content/application~1json/schema", safe="#/~")}
    validator = jsonschema.Draft4Validator(schema)  # the whole description is the root: its $refs resolve
    return [*problems, *(f"{exchange.operation} HTTP {exchange.status}: {error.message}"
                         for error in validator.iter_errors(json.loads(exchange.body)))]


def assert_conforms(pastell: PastellSimulator) -> None:
    """Every answer the simulator gave so far conforms to the OpenAPI description (when it is at hand)."""
    if REFERENCE.is_dir():
        document = _openapi()
        assert [problem for exchange in pastell.exchanges() for problem in check_against_openapi(document, exchange)
                ] == []


def test_every_answer_of_the_simulator_conforms_to_the_openapi_description(tmp_path: Path) -> None:
    document = _openapi()
    with PastellSimulator(token=TOKEN, ack_delay=0.1) as pastell:
        # Given the traffic of a whole loop: an act acknowledged, a letter, a cancellation, a classification...
        pastell.inject("http500", operation="createDocument", count=1)
        pastell.inject("rate_limit", operation="modifyDocument", count=1, seconds=1)
        config_path = pastell_config(tmp_path, pastell, classification_connector="101")
        drop_deliberation(tmp_path / BUNDLE, "DEL2026_409", decision=TODAY)
        [delivery] = run(config_path)["DEL2026_409.json"]["deliveries"]
        letter = pastell.followup(delivery.id_acte, "4-1")["id_d"]
        runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
        try:
            assert runtime.answers.poll_follow_ups("prefecture") == 1
            assert runtime.answers.refresh_classifications("prefecture") == 0
        finally:
            runtime.shutdown()
        assert run_cli("cancel", delivery.id_acte, "-c", str(config_path)).returncode == 0
        # and the refusals: wrong token, unknown document, a refused action, an unknown external field
        base, good = f"{pastell.url}/api/v2/entite/1/document", {"Authorization": f"Bearer {TOKEN}"}
        requests.get(f"{pastell.url}/api/v2/version", headers={"Authorization": "Bearer nope"}, timeout=5)
        requests.get(f"{base}/nope", headers=good, timeout=5)
        requests.post(f"{base}/{delivery.remote_id}/action/send-tdt", headers=good, timeout=5)
        requests.get(f"{base}/{delivery.remote_id}/externalData/type_piece", headers=good, timeout=5)
        requests.get(f"{base}/{delivery.remote_id}/externalData/nope", headers=good, timeout=5)
        requests.get(f"{base}/{delivery.remote_id}/file/arrete/9", headers=good, timeout=5)
        requests.get(f"{pastell.url}/api/v2/entite/1/connecteur", headers=good, timeout=5)
        # and on the letter's document: an answer sent before it is written, a typology with no piece
        requests.post(f"{base}/{letter}/action/send-reponse-prefecture", headers=good, timeout=5)
        requests.get(f"{base}/{letter}/externalData/type_piece_lettre_observation", headers=good, timeout=5)
        requests.post(f"{base}/{letter}/action/repondre", headers=good, timeout=5)
        requests.get(f"{base}/{letter}", headers=good, timeout=5)
        exchanges = pastell.exchanges()
    operations = {e.operation for e in exchanges}
    assert operations == set(_PATHS), set(_PATHS) - operations
    assert {e.status for e in exchanges} >= {200, 201, 400, 401, 404, 429, 500}
    problems = [problem for exchange in exchanges for problem in check_against_openapi(document, exchange)]
    assert problems == []
