"""Answering the préfecture, over SOAP on 127.0.0.1: a letter reaches the software; the software
drops its answer (Hent's response bundle); the bus builds it, sends it, and the ministry's receipt
(3-5, 4-5) comes back; the letter is then no longer awaiting an answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy
from simulators.backoffice import drop_deliberation
from simulators.legality import LegalitySimulator
from simulators.pdf import make_pdf
from tests.harness import run_cli, run_until_idle, write_config

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
DECISION = date.today() - timedelta(days=2)


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator() as running:
        yield running


def config_with_answers(workspace: Path, simulator: LegalitySimulator) -> Path:
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s", "follow_ups": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {"type": "soap", "endpoint": simulator.url, "read_timeout": "2s",
                                          "connect_timeout": "1s", "trigram": "HNT", "quadrigram": "TACT"}
    config["connectors"]["reponses"] = {"type": "folder", "path": str(workspace / "drop" / "reponses"),
                                        "pattern": "*.json", "poll": "0.2s",
                                        "ready": {"min_age": "0s", "stable": False}}
    config["routes"].append({"name": "reponses", "from": "reponses", "transform": "response", "to": "prefecture"})
    (workspace / "drop" / "reponses").mkdir(parents=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def drop_response(workspace: Path, name: str, id_acte: str, code: str, documents: int = 1) -> None:
    folder = workspace / "drop" / "reponses"
    files = [f"{name}_{n}.pdf" for n in range(1, documents + 1)]
    for file in files:
        (folder / file).write_bytes(make_pdf([f"Réponse {code} à la préfecture", f"Acte {id_acte}", file]))
    sidecar = {"reponse": {"acte": id_acte, "type": code, "documents": [{"fichier": f} for f in files]}}
    (folder / f"{name}.json").write_text(json.dumps(sidecar), encoding="utf-8")


def acknowledged_act(workspace: Path, config: Path, numero: str) -> str:
    drop_deliberation(workspace / "drop" / "deliberations", numero, decision=DECISION)
    [delivery] = run_until_idle(config, retry=FAST)[f"{numero}.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    return str(delivery.id_acte)


def awaiting(config: Path) -> list[dict[str, object]]:
    result = run_cli("status", "--awaiting-answer", "--json", "-c", str(config))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize(("letter", "answer", "receipt", "documents"), [
    ("3-1", "3-4", "3-5", 2),
    ("4-1", "4-4", "4-5", 1),
])
def test_a_letter_answered_by_the_software_is_sent_and_the_ministrys_receipt_comes_back(
    tmp_path: Path, simulator: LegalitySimulator, letter: str, answer: str, receipt: str, documents: int,
) -> None:
    # Given an acknowledged act and a letter of the préfecture about it, received by the bus
    config = config_with_answers(tmp_path, simulator)
    id_acte = acknowledged_act(tmp_path, config, "DEL2026_401")
    simulator.followup(id_acte, letter)
    run_until_idle(config, retry=FAST)
    act_replies = sorted(p.name for p in (tmp_path / "drop" / "deliberations" / "replies").iterdir())
    assert any(name.endswith(f".{letter}.xml") for name in act_replies), act_replies
    assert [(a["id_acte"], a["code"]) for a in awaiting(config)] == [(id_acte, letter)]
    # When the software drops its answer
    drop_response(tmp_path, "REP_401", id_acte, answer, documents=documents)
    outcome = run_until_idle(config, retry=FAST)["REP_401.json"]
    # Then it was built, sent and acknowledged by the ministry's receipt
    assert outcome["doc"].state == "ROUTED", outcome["doc"].reason
    [delivery] = outcome["deliveries"]
    assert delivery.state == "ACKNOWLEDGED" and delivery.id_acte == id_acte
    replies = sorted(p.name for p in (tmp_path / "drop" / "reponses" / "replies").iterdir())
    assert f"REP_401.1.{receipt}.xml" in replies, replies
    summary = json.loads((tmp_path / "drop" / "reponses" / "replies" / "REP_401.1.json").read_text())
    assert summary["state"] == "ACKNOWLEDGED" and summary["message"]["code"] == receipt
    # and the letter no longer awaits an answer; the platform received the answer once
    assert awaiting(config) == []
    assert sum(simulator.received()["responses"].values()) == 1
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        assert ledger.verify_journal() == []
    finally:
        ledger.close()


def test_an_answer_to_a_letter_never_received_fails_with_its_reason(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    config = config_with_answers(tmp_path, simulator)
    id_acte = acknowledged_act(tmp_path, config, "DEL2026_402")
    drop_response(tmp_path, "REP_402", id_acte, "3-4")
    outcome = run_until_idle(config, retry=FAST)["REP_402.json"]
    assert outcome["doc"].state == "FAILED" and "[response-letter]" in (outcome["doc"].reason or "")
    assert "no letter 3-1" in (outcome["doc"].reason or "")
    note = (tmp_path / "drop" / "reponses" / "error" / "REP_402.json.error.txt").read_text(encoding="utf-8")
    assert "no letter 3-1" in note
