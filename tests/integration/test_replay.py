"""Dead letters, as an operator meets them: ``failed`` lists them, ``replay`` puts them back after a fix,
``purge`` clears what is done with; each through ``run_bus.py`` on a bus's own ledger and spool."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy
from bus.spool import Spool
from connectors.memory_outbound import MemoryOutbound
from simulators.backoffice import drop_deliberation
from tests.harness import MAPPINGS, run_cli, run_until_idle, write_config

FAST = RetryPolicy(max_attempts=3, first_delay=0.05, max_delay=0.2)
GOOD_DATE = 'decision_date: {path: seance.date, format: "%Y-%m-%d"}'
BROKEN_DATE = 'decision_date: {path: seance.date, format: "%d/%m/%Y"}'


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    MemoryOutbound.reset()


def bus_config(workspace: Path, change: Any = None) -> Path:
    """The harness's bus (deliberations → a folder endpoint), changed by ``change(config)``."""
    path = write_config(workspace, sweep="0.1s", lease="1s")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if change is not None:
        change(config)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def ledger_of(config_path: Path) -> Ledger:
    return Ledger(load_config(config_path).bus.ledger)


def cli(*args: str) -> Any:
    return run_cli(*args)


def replies(workspace: Path) -> list[dict[str, Any]]:
    folder = workspace / "drop" / "deliberations" / "replies"
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


# -- a document failed by a broken mapping ------------------------------------------------------


def test_a_document_failed_by_a_broken_mapping_is_listed_then_replayed_after_the_fix(tmp_path: Path) -> None:
    # Given a route whose mapping reads the séance date with the wrong format
    mapping = tmp_path / "deliberations.yaml"
    mapping.write_text((MAPPINGS / "deliberations-json.yaml").read_text(encoding="utf-8").replace(
        GOOD_DATE, BROKEN_DATE), encoding="utf-8")
    assert BROKEN_DATE in mapping.read_text(encoding="utf-8")

    def change(config: dict[str, Any]) -> None:
        config["routes"][0]["map"] = str(mapping)

    config_path = bus_config(tmp_path, change)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_001", decision=date.today())
    [outcome] = run_until_idle(config_path).values()
    document = outcome["doc"]
    assert document.state == "FAILED" and "decision_date" in document.reason
    # When the operator asks for the dead letters
    listed = cli("failed", "-c", str(config_path))
    as_json = cli("failed", "--json", "--route", "deliberations", "-c", str(config_path))
    # Then the document is there with the reason, in text and as JSON
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{document.id}  document deliberations/DEL2026_001.json  route -  ")
    assert lines[0].endswith(" UTC  1 attempt")
    assert f"    ! {document.reason.splitlines()[0]}" in lines
    assert lines[-1] == "1 dead letter(s); after the fix: run_bus.py replay ID -c FILE"
    [row] = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {k: row[k] for k in ("id", "kind", "document", "delivery", "source", "bundle", "route", "endpoint",
                                "state", "attempts", "reason")} == {
        "id": document.id, "kind": "document", "document": document.id, "delivery": None,
        "source": "deliberations", "bundle": "DEL2026_001.json", "route": None, "endpoint": None,
        "state": "FAILED", "attempts": 1, "reason": document.reason}
    assert cli("failed", "--json", "--source", "rh", "-c", str(config_path)).stdout == ""
    assert cli("failed", "--json", "--since", "1h", "-c", str(config_path)).stdout.count("\n") == 1

    # When the mapping is corrected and the document replayed
    mapping.write_text((MAPPINGS / "deliberations-json.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    replayed = cli("replay", document.id, "--reason", "date format corrected", "-c", str(config_path))
    # Then it is back in RECEIVED, journaled as the replay, and the software is told
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed document {document.id} (deliberations/DEL2026_001.json): FAILED → RECEIVED" in replayed.stdout
    assert "1 replayed, journaled as replay" in replayed.stdout
    ledger = ledger_of(config_path)
    try:
        again = ledger.get_document(document.id)
    finally:
        ledger.close()
    assert again.state == "RECEIVED" and again.idempotency_key == document.idempotency_key
    failed_reply, put_back = replies(tmp_path)
    assert failed_reply["state"] == "FAILED"
    assert (put_back["document"], put_back["state"]) == (document.id, "RECEIVED")
    assert put_back["note"] == "put back into the flow by replay after its failure: it will be prepared again"

    # When the bus runs again
    [outcome] = run_until_idle(config_path).values()
    # Then it is routed and delivered, with the corrected mapping, and every step is in the journal
    assert outcome["doc"].state == "ROUTED" and outcome["doc"].id == document.id
    [delivery] = outcome["deliveries"]
    assert delivery.state == "DELIVERED" and (tmp_path / "out" / delivery.artifact_name).is_file()
    ledger = ledger_of(config_path)
    try:
        steps = [(e.actor, e.from_state, e.to_state) for e in ledger.entries(document.id)]
        replay_event = [e for e in ledger.entries(document.id) if e.actor == "replay"][0]
    finally:
        ledger.close()
    assert [s[1:] for s in steps] == [(None, "RECEIVED"), ("RECEIVED", "FAILED"), ("FAILED", "RECEIVED"),
                                      ("RECEIVED", "PREPARED"), ("PREPARED", "ROUTED")]
    assert steps[2][0] == "replay"
    assert replay_event.reason.startswith("replayed by replay: date format corrected (it had failed: ")
    assert replies(tmp_path)[-1]["state"] == "DELIVERED"
    verified = cli("journal", "verify", "-c", str(config_path))
    assert (verified.returncode, verified.stdout.strip()) == (0, "journal: intact")
    assert cli("failed", "-c", str(config_path)).stdout.strip() == "0 dead letter(s)"


# -- a delivery failed after its retries ----------------------------------------------------------


def test_a_delivery_given_up_after_its_retries_is_replayed_and_delivered_once_as_it_was(tmp_path: Path) -> None:
    # Given an endpoint down for the 3 attempts the bus makes
    def change(config: dict[str, Any]) -> None:
        config["connectors"]["prefecture"] = {"type": "memory", "fail": ["transient"] * 3}

    config_path = bus_config(tmp_path, change)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_002", decision=date.today())
    [outcome] = run_until_idle(config_path, retry=FAST).values()
    [delivery] = outcome["deliveries"]
    assert (delivery.state, delivery.attempts) == ("FAILED", 3) and MemoryOutbound.sent == {}
    [row] = [json.loads(line) for line in cli("failed", "--json", "-c", str(config_path)).stdout.splitlines()]
    assert (row["id"], row["kind"], row["document"], row["route"], row["endpoint"], row["attempts"]) == (
        delivery.id, "delivery", outcome["doc"].id, "deliberations", "prefecture", 3)
    assert row["reason"].startswith("gave up after 3 attempts: ")
    # When the endpoint is back and every dead letter is replayed, first as a dry run
    dry = cli("replay", "--all-failed", "--dry-run", "-c", str(config_path))
    assert dry.returncode == 0 and dry.stdout.startswith(f"would replay delivery {delivery.id} ")
    assert ledger_of_state(config_path, delivery.id) == "FAILED"
    replayed = cli("replay", "--all-failed", "--by", "alice", "--reason", "endpoint back", "-c", str(config_path))
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed delivery {delivery.id} (deliberations/DEL2026_002.json to prefecture): FAILED → PENDING, " \
           f"attempts reset; the same {delivery.artifact_name}" in replayed.stdout
    assert ledger_of_state(config_path, delivery.id) == "PENDING"
    [outcome] = run_until_idle(config_path, retry=FAST).values()
    # Then it is delivered once, the very bytes built before, attempts counted afresh
    [after] = outcome["deliveries"]
    assert (after.state, after.attempts) == ("DELIVERED", 1)
    [sent] = MemoryOutbound.sent["prefecture"]
    assert (sent.name, sent.sha256, sent.client_key) == (delivery.artifact_name, delivery.artifact_sha256,
                                                          delivery.client_key)
    assert (after.id_acte, after.envelope_name) == (delivery.id_acte, delivery.envelope_name)
    ledger = ledger_of(config_path)
    try:
        [event] = [e for e in ledger.entries(delivery.id) if e.from_state == "FAILED"]
    finally:
        ledger.close()
    assert (event.actor, event.to_state) == ("alice", "PENDING")
    assert event.reason.startswith("replayed by alice: endpoint back (it had failed: gave up after 3 attempts")
    assert cli("journal", "verify", "-c", str(config_path)).returncode == 0
    # And a document that is not a dead letter is not replayed
    refused = cli("replay", outcome["doc"].id, "-c", str(config_path))
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        f"not replayed: document {outcome['doc'].id} (deliberations/DEL2026_002.json) is ROUTED, not FAILED, and "
        "none of its deliveries failed (prefecture DELIVERED): nothing to replay")


def ledger_of_state(config_path: Path, delivery_id: str) -> str:
    ledger = ledger_of(config_path)
    try:
        return str(ledger.get_delivery(delivery_id).state)
    finally:
        ledger.close()


# -- what is refused --------------------------------------------------------------------------------


def test_replay_refuses_a_rejection_a_document_in_flight_and_an_unknown_id(tmp_path: Path) -> None:
    # Given an act the ministry refused, and a document still in the flow
    config_path = bus_config(tmp_path)
    ledger = ledger_of(config_path)
    try:
        refused_act, rejected = _routed(ledger, "DEL2026_003.json")
        ledger.transition_delivery(rejected.id, "SENT", actor="prefecture", remote_id="T-3")
        ledger.transition_delivery(rejected.id, "REJECTED", actor="prefecture",
                                   reason="AnomalieActe (nature 2): la classification 9.9 n'existe pas")
        in_flight, _ = ledger.add_document(source="deliberations", bundle="DEL2026_004.json", idempotency_key="k4",
                                           sidecar_sha256="4" * 64, files={})
    finally:
        ledger.close()
    # When each is replayed
    by_delivery = cli("replay", rejected.id, "-c", str(config_path))
    by_document = cli("replay", refused_act.id, "-c", str(config_path))
    received = cli("replay", in_flight.id, "nope", "-c", str(config_path))
    neither = cli("replay", "-c", str(config_path))
    # Then each is refused with what to do instead, and nothing changed
    rejection = (f"delivery {rejected.id} (deliberations/DEL2026_003.json to prefecture) was REJECTED by the "
                 "platform (AnomalieActe (nature 2): la classification 9.9 n'existe pas): that is the platform's "
                 "answer, not a dead letter, and it is not replayed: correct the act and drop it again (it goes as a "
                 "new attempt of the same act)")
    assert (by_delivery.returncode, by_delivery.stderr.strip().splitlines()[-1]) == (1, f"not replayed: {rejection}")
    assert (by_document.returncode, by_document.stderr.strip().splitlines()[-1]) == (1, f"not replayed: {rejection}")
    assert received.returncode == 1
    assert received.stderr.strip().splitlines()[-2:] == [
        f"not replayed: document {in_flight.id} (deliberations/DEL2026_004.json) is RECEIVED, not FAILED: it is "
        "still in the flow, nothing to replay",
        "not replayed: nope: no document or delivery has this id (run_bus.py failed lists the dead letters)",
    ]
    assert (neither.returncode, neither.stderr.strip()) == (
        2, "replay: give the IDs to replay, or --route R, or --all-failed (one of them)")
    assert ledger_of_state(config_path, rejected.id) == "REJECTED"
    assert "nothing to replay: no dead letter" in cli("replay", "--all-failed", "-c", str(config_path)).stdout


def _routed(ledger: Ledger, bundle: str, *, artifact: str = "a" * 64, state: str = "ROUTED") -> tuple[Any, Any]:
    document, _ = ledger.add_document(source="deliberations", bundle=bundle, idempotency_key=f"key:{bundle}",
                                      sidecar_sha256="5" * 64, files={})
    _, [delivery] = ledger.route_document(document.id, prepared={"route": "deliberations"}, deliveries=[{
        "route": "deliberations", "endpoint": "prefecture", "artifact_name": f"{bundle}.tar.gz",
        "artifact_sha256": artifact, "artifact_kind": "actes-archive", "client_key": f"client:{bundle}"}])
    return document, delivery


# -- purge --------------------------------------------------------------------------------------------


def test_purge_removes_what_is_done_with_and_keeps_what_a_pending_delivery_needs(tmp_path: Path) -> None:
    # Given two acts delivered, their bundles in done/, and another document whose delivery, still
    # PENDING, sends the same archive as the first (the spool is content-addressed: one blob)
    config_path = bus_config(tmp_path)
    for numero in ("DEL2026_010", "DEL2026_011"):
        drop_deliberation(tmp_path / "drop" / "deliberations", numero, decision=date.today())
    outcomes = run_until_idle(config_path)
    assert {o["deliveries"][0].state for o in outcomes.values()} == {"DELIVERED"}
    first, second = outcomes["DEL2026_010.json"], outcomes["DEL2026_011.json"]
    shared = first["deliveries"][0].artifact_sha256
    spool = Spool(load_config(config_path).bus.spool)
    ledger = ledger_of(config_path)
    try:
        pending_doc, pending = _routed(ledger, "DEL2026_012.json", artifact=shared)
    finally:
        ledger.close()
    unnamed = spool.put_bytes(b'{"numero": "DEL2026_013"}')  # no row names it (yet: a bus may be writing it)
    done = tmp_path / "drop" / "deliberations" / "done"
    assert len(list(done.iterdir())) == 6
    blobs = {sha for o in (first, second) for sha in [o["doc"].sidecar_sha256, *o["doc"].files.values(),
                                                      o["deliveries"][0].artifact_sha256]}
    assert all(sha in spool for sha in blobs)

    # When the purge keeps 1 hour: everything is younger
    young = cli("purge", "--older-than", "1h", "-c", str(config_path))
    # Then nothing is removed, and it says why
    assert young.returncode == 0, young.stderr
    assert young.stdout.splitlines()[0].startswith("spool: removed 0 blob(s), 0 bytes, of 0 document(s) done with")
    assert "kept: 2 document(s) done with more recently than the cutoff" in young.stdout
    assert "kept: 1 document(s) not final (RECEIVED, PREPARED, or a delivery PENDING or SENT)" in young.stdout
    assert "source deliberations: removed 0 file(s), 0 bytes, from " in young.stdout

    # When a dry run purges everything done with, a blob nothing names stored two hours ago in the spool
    left = spool.put_bytes(b"%PDF of a bundle refused while it was copied, two hours ago")  # no row will name it
    two_hours_ago = time.time() - 7200
    os.utime(spool.path(left), (two_hours_ago, two_hours_ago))
    dry = cli("purge", "--older-than", "0s", "--dry-run", "-c", str(config_path))
    assert dry.returncode == 0, dry.stderr
    assert f"spool: would remove {len(blobs) - 1} blob(s)" in dry.stdout
    assert "spool: would remove 1 blob(s), 59 bytes, that nothing in the ledger names" in dry.stdout
    assert "source deliberations: would remove 6 file(s)" in dry.stdout
    assert dry.stdout.rstrip().endswith("nothing was removed (--dry-run)")
    # Then nothing is removed
    assert all(sha in spool for sha in blobs) and len(list(done.iterdir())) == 6

    # When it is done for real
    purged = cli("purge", "--older-than", "0s", "-c", str(config_path))
    # Then the blobs of the two delivered acts are gone but the archive the pending delivery sends
    assert purged.returncode == 0, purged.stderr
    assert f"spool: removed {len(blobs) - 1} blob(s)" in purged.stdout
    assert "spool: kept 1 blob(s) these documents share with others still in use" in purged.stdout
    assert [sha for sha in blobs if sha in spool] == [shared]
    # and the blob nothing names, stored two hours ago, but not the one stored a moment ago
    assert "spool: removed 1 blob(s), 59 bytes, that nothing in the ledger names" in purged.stdout
    assert left not in spool and unnamed in spool
    # the done/ folder is emptied, the replies stay, the ledger and its journal too
    assert list(done.iterdir()) == []
    assert len(replies(tmp_path)) == 2
    ledger = ledger_of(config_path)
    try:
        assert len(ledger.documents()) == 3 and ledger.get_delivery(pending.id).state == "PENDING"
        assert ledger.get_document(pending_doc.id).state == "ROUTED"
    finally:
        ledger.close()
    assert cli("journal", "verify", "-c", str(config_path)).returncode == 0
