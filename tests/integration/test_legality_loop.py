"""The whole loop over SOAP, on 127.0.0.1: a dropped act reaches the legality platform (the
simulator) through the zeep endpoint, and the ministry's answer comes back to the software."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from simulators.legality import LegalitySimulator
from tests.harness import run_cli, run_until_idle, write_config

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
TODAY = date.today()


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.2) as running:
        yield running


def soap_config(workspace: Path, simulator: LegalitySimulator) -> Path:
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {
        "type": "soap", "endpoint": simulator.url, "read_timeout": "2s", "connect_timeout": "1s",
        "trigram": "HNT", "quadrigram": "TACT",
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def run(config_path: Path, timeout: float = 60) -> dict[str, Any]:
    return run_until_idle(config_path, timeout=timeout, retry=FAST)


def replies(workspace: Path) -> dict[str, bytes]:
    folder = workspace / "drop" / "deliberations" / "replies"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_dropped_act_is_acknowledged_and_the_araacte_goes_back_to_the_software(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_300", decision=TODAY - timedelta(days=1))
    outcome = run(soap_config(tmp_path, simulator))["DEL2026_300.json"]
    [delivery] = outcome["deliveries"]
    expected = f"044-214400152-{TODAY - timedelta(days=1):%Y%m%d}-DEL2026_300-DE"
    assert delivery.state == "ACKNOWLEDGED" and delivery.id_acte == expected
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_300.1.")] == ["DEL2026_300.1.1-2.xml",
                                                                              "DEL2026_300.1.json"]
    assert b"ARActe" in files["DEL2026_300.1.1-2.xml"] and expected.encode() in files["DEL2026_300.1.1-2.xml"]
    summary = json.loads(files["DEL2026_300.1.json"])
    assert summary["state"] == "ACKNOWLEDGED" and summary["id_acte"] == expected
    assert summary["message"]["kind"] == "ARActe"
    assert simulator.received()["by_act"] == {f"214400152:DEL2026_300:{TODAY - timedelta(days=1)}": 1}


def test_an_anomaly_rejects_the_delivery_with_the_ministrys_words(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    # Given a classification published by the préfecture that the bus could not fetch yet
    simulator.publish_classification(TODAY)
    simulator.inject("soapfault", operation="RequestClassification", count=None)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_301", decision=TODAY)
    outcome = run(soap_config(tmp_path, simulator))["DEL2026_301.json"]
    [delivery] = outcome["deliveries"]
    assert delivery.state == "REJECTED"
    assert "ODT-VERIF-01" in delivery.reason and "nature 002" in delivery.reason
    files = replies(tmp_path)
    assert "DEL2026_301.1.1-3.xml" in files and b"AnomalieActe" in files["DEL2026_301.1.1-3.xml"]


def test_server_errors_are_retried_and_the_act_is_received_once(tmp_path: Path, simulator: LegalitySimulator) -> None:
    simulator.inject("http500", operation="SubmitArchive", count=2)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_302", decision=TODAY)
    [delivery] = run(soap_config(tmp_path, simulator))["DEL2026_302.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    assert list(simulator.received()["by_act"].values()) == [1]


def test_a_reply_lost_after_the_platform_recorded_the_act_is_looked_up_not_resent(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    simulator.inject("lost_reply", operation="SubmitArchive", count=1)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_303", decision=TODAY)
    [delivery] = run(soap_config(tmp_path, simulator))["DEL2026_303.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    assert list(simulator.received()["by_act"].values()) == [1]


def test_a_hung_platform_does_not_hang_the_bus(tmp_path: Path, simulator: LegalitySimulator) -> None:
    simulator.inject("hang", operation="SubmitArchive", count=1, seconds=30)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_304", decision=TODAY)
    [delivery] = run(soap_config(tmp_path, simulator), timeout=40)["DEL2026_304.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"


@pytest.mark.parametrize("corrected", [False, True], ids=["dropped-again-as-is", "corrected"])
def test_an_act_refused_by_the_ministry_is_sent_again_as_a_new_attempt_of_the_same_act(
    tmp_path: Path, simulator: LegalitySimulator, corrected: bool
) -> None:
    # Given an act the ministry refused: a classification published that the bus could not fetch yet
    simulator.publish_classification(TODAY)
    simulator.inject("soapfault", operation="RequestClassification", count=None)
    config = soap_config(tmp_path, simulator)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_309", decision=TODAY - timedelta(days=1))
    [first] = run(config)["DEL2026_309.json"]["deliveries"]
    assert first.state == "REJECTED" and "ODT-VERIF-01" in first.reason
    # When the platform answers again and the software drops the act again (as it was, or corrected)
    simulator.clear_faults()
    drop_deliberation(folder, "DEL2026_309", decision=TODAY - timedelta(days=1),
                      objet="Objet corrigé après le refus" if corrected else
                      "Cession de la parcelle cadastrée BK 112, rue de la Solidarité")
    run(config)
    # Then the classification was asked first, and the new attempt is acknowledged
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        documents = sorted(ledger.documents(), key=lambda d: d.created_at)
        assert [str(d.state) for d in documents] == ["ROUTED", "ROUTED"]
        [second] = ledger.deliveries_of(documents[1].id)
        assert second.state == "ACKNOWLEDGED" and second.id_acte == first.id_acte
        assert ledger.classification("214400152") is not None
        # and both attempts are in the journal, linked
        assert documents[1].canonical["resubmits"] == [documents[0].id]
        assert any(f"sent again as document {documents[1].id}" in e.reason for e in ledger.history(documents[0].id))
        assert ledger.verify_journal() == []
    finally:
        ledger.close()
    assert list(simulator.received()["by_act"].values()) == [2]


def test_an_act_that_replaces_an_acknowledged_one_names_it_and_one_that_names_a_refused_act_fails(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    import tarfile

    from bus.spool import Spool

    config = soap_config(tmp_path, simulator)
    folder = tmp_path / "drop" / "deliberations"
    # Given an acknowledged act, and another the ministry refused
    drop_deliberation(folder, "DEL2026_311", decision=TODAY - timedelta(days=3))
    [acknowledged] = run(config)["DEL2026_311.json"]["deliveries"]
    simulator.publish_classification(TODAY)
    simulator.inject("soapfault", operation="RequestClassification", count=None)
    drop_deliberation(folder, "DEL2026_312", decision=TODAY - timedelta(days=3))
    [refused] = run(config)["DEL2026_312.json"]["deliveries"]
    assert (acknowledged.state, refused.state) == ("ACKNOWLEDGED", "REJECTED")
    simulator.clear_faults()
    # When two new acts name them as the act they replace (acte_precedent in the vendor's JSON)
    for numero, precedent in (("DEL2026_313", acknowledged.id_acte), ("DEL2026_314", refused.id_acte)):
        sidecar = drop_deliberation(folder, numero, decision=TODAY - timedelta(days=1))
        data = json.loads(sidecar.read_text(encoding="utf-8"))
        sidecar.write_text(json.dumps({**data, "acte_precedent": precedent}), encoding="utf-8")
    outcome = run(config)
    # Then the first goes with its PrecedentIdentifiantActe, the second fails with its reason
    [replacing] = outcome["DEL2026_313.json"]["deliveries"]
    assert replacing.state == "ACKNOWLEDGED"
    spool = Spool(Path(load_config(config).bus.spool))
    with tarfile.open(spool.path(replacing.artifact_sha256), "r:gz") as archive:
        acte = next(m for m in archive.getmembers() if m.name.endswith("-1-1_0.xml"))
        stream = archive.extractfile(acte)
        assert stream is not None
        assert f'IDActe="{acknowledged.id_acte}"'.encode() in stream.read()
    failed = outcome["DEL2026_314.json"]["doc"]
    assert failed.state == "FAILED" and "[precedent-acknowledged]" in (failed.reason or "")


def test_the_same_act_dropped_twice_is_transmitted_once(tmp_path: Path, simulator: LegalitySimulator) -> None:
    config = soap_config(tmp_path, simulator)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_305", decision=TODAY)
    run(config)
    drop_deliberation(folder, "DEL2026_305", decision=TODAY, objet="Le même acte, exporté à nouveau")
    run(config)
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        documents = sorted(ledger.documents(), key=lambda d: str(d.state))
    finally:
        ledger.close()
    assert [str(d.state) for d in documents] == ["FAILED", "ROUTED"]
    assert documents[0].reason.startswith("DEL2026_305.json: numero_interne: act ")
    assert documents[0].reason.endswith("[act-unique]")
    assert list(simulator.received()["by_act"].values()) == [1]


def test_a_later_letter_of_the_prefecture_reaches_the_software_once(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    config_path = soap_config(tmp_path, simulator)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_306", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_306.json"]["deliveries"]
    simulator.followup(delivery.id_acte, "2-1")
    config = load_config(config_path)
    runtime = Runtime(config, Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        assert runtime.answers.poll_follow_ups("prefecture") == 0  # recorded once
    finally:
        runtime.shutdown()
    files = replies(tmp_path)
    letters = [name for name in files if ".3.2-1." in name]
    assert "DEL2026_306.3.2-1.xml" in letters and any(name.endswith(".pdf") for name in letters)
    assert b"CourrierSimple" in files["DEL2026_306.3.2-1.xml"]


def test_the_stamped_act_and_the_bordereau_reach_the_software_once(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    # Given an act with two annexes, acknowledged by the ministry
    config_path = soap_config(tmp_path, simulator)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_311", decision=TODAY, annexes=2)
    [delivery] = run(config_path)["DEL2026_311.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    # Then right after the acknowledgment the platform's stamped files and its bordereau came back, once
    id_acte, stem = delivery.id_acte, f"044-214400152-{TODAY:%Y%m%d}-DEL2026_311-DE-1-1"
    stamped = [f"{id_acte}-bordereau.pdf", f"{id_acte}-tampon.pdf", f"21_RP-{stem}_2-tampon.pdf",
               f"99_DE-{stem}_3-tampon.pdf"]
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_311.2.")] == [
        "DEL2026_311.2.json", *(f"DEL2026_311.2.receipts.{name}" for name in stamped)]
    assert all(files[f"DEL2026_311.2.receipts.{name}"].startswith(b"%PDF-") for name in stamped)
    summary = json.loads(files["DEL2026_311.2.json"])
    assert (summary["state"], summary["message"]) == ("ACKNOWLEDGED", {"kind": "receipts", "files": stamped})
    # When the follow-up poll asks again, Then nothing new is fetched nor returned
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 0
        assert [m["code"] for m in runtime.ledger.messages_of(delivery.id)] == ["receipts"]
    finally:
        runtime.shutdown()
    assert replies(tmp_path) == files
    assert simulator.received()["calls"]["GetReceipts"] == 1


def test_a_request_for_documents_not_answered_yet_is_listed_and_counted(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    from bus import metrics
    from bus.answers import letters_metric

    # Given an acknowledged act, then a request for documents (3-1) of the préfecture
    config_path = soap_config(tmp_path, simulator)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_307", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_307.json"]["deliveries"]
    simulator.followup(delivery.id_acte, "3-1")
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        letters_metric(runtime.ledger)
    finally:
        runtime.shutdown()
    # Then status --awaiting-answer lists it, with what may answer it
    result = run_cli("status", "--awaiting-answer", "--json", "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    [letter] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (letter["id_acte"], letter["code"], letter["days"], letter["answers"]) == (
        delivery.id_acte, "3-1", 0, ["3-2", "3-3", "3-4"])
    # and the metric counts it among the letters open for less than a week
    assert metrics.LETTERS_OPEN.labels(code="3-1", age="0-7d")._value.get() == 1
    assert metrics.LETTERS_OPEN.labels(code="4-1", age="0-7d")._value.get() == 0


def test_soap_faults_of_the_platform_are_retried_until_the_act_goes_through(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    simulator.inject("soapfault", operation="SubmitArchive", count=2)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_307", decision=TODAY)
    [delivery] = run(soap_config(tmp_path, simulator))["DEL2026_307.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED" and delivery.attempts == 3
    assert list(simulator.received()["by_act"].values()) == [1]


def test_the_classification_is_fetched_kept_and_shown(tmp_path: Path, simulator: LegalitySimulator) -> None:
    config_path = soap_config(tmp_path, simulator)
    simulator.publish_classification(TODAY)
    # When the IT department asks for it
    result = run_cli("classification", "214400152", "-c", str(config_path), "--refresh")
    # Then the platform's 7-2 is kept and shown, and new acts are dated by it
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"214400152: classification of {TODAY}, received from the platform as ")
    assert "  nature 1 DE Délibérations: 21_RP, 32_DP, 41_NC, 99_DE, 99_SE" in result.stdout.splitlines()
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_308", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_308.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"  # dated with the new classification: no ODT-VERIF-01


def test_an_acknowledged_act_is_cancelled_and_the_6_2_comes_back(tmp_path: Path, simulator: LegalitySimulator) -> None:
    config_path = soap_config(tmp_path, simulator)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_309", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_309.json"]["deliveries"]
    # When the act is cancelled from the command line
    result = run_cli("cancel", delivery.id_acte, "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{delivery.id_acte}: cancellation sent (CANCELLED)")
    # Then the ARAnnulation (6-2) is recorded once and returned to the software
    config = load_config(config_path)
    runtime = Runtime(config, Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        [message] = [m for m in runtime.ledger.messages_of(delivery.id) if m["code"] != "receipts"]
    finally:
        runtime.shutdown()
    assert message["code"] == "6-2"
    assert "DEL2026_309.3.6-2.xml" in replies(tmp_path)
    # and cancelling what is not acknowledged is refused with the reason
    again = run_cli("cancel", "044-214400152-20200101-NOPE-DE", "-c", str(config_path))
    assert again.returncode == 1 and "no delivery has that IDActe" in again.stderr


def test_an_absent_platform_leaves_sent_deliveries_waiting_and_the_poller_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an act submitted to a platform that then disappears
    with LegalitySimulator(ack_delay=30) as gone:
        config_path = soap_config(tmp_path, gone)
        drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_310", decision=TODAY)
        config = load_config(config_path)
        runtime = Runtime(config, Pipeline.for_runtime, retry=FAST, serve_http=False)
        runtime.run_until_idle(timeout=3)  # never idle: the answer is 30 s away
    runtime = Runtime(config, Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        [delivery] = runtime.ledger.deliveries()
        assert delivery.state == "SENT"
        # When the poller asks the absent platform, Then it says so and goes on
        assert runtime.answers.poll("prefecture") == 0
        assert runtime.answers.poll_follow_ups("prefecture") == 0
        assert runtime.ledger.get_delivery(delivery.id).state == "SENT"
        assert "asking prefecture for answers failed: connector 'prefecture'" in caplog.text
        # And asking again while it is still absent says nothing more: said once
        assert runtime.answers.poll("prefecture") == 0
        assert caplog.text.count("asking prefecture for answers failed") == 1, caplog.text
    finally:
        runtime.shutdown()
