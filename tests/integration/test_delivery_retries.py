"""Sending: transient failures are retried with back-off, then dead-lettered; a refusal fails
the delivery at once; a connector's bug is retried like a transient failure; the circuit opens."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from connectors.memory_outbound import MemoryOutbound
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from tests.harness import run_cli, write_config

FAST = RetryPolicy(max_attempts=3, first_delay=0.05, max_delay=0.2)


@pytest.fixture(autouse=True)
def _fresh_memory() -> None:
    MemoryOutbound.reset()


def run_with_endpoint(tmp_path: Path, endpoint: dict[str, Any], acts: int = 1) -> tuple[list[Any], Path]:
    config_path = write_config(tmp_path, sweep="0.1s", lease="1s")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {"type": "memory", **endpoint}
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    for n in range(acts):
        drop_deliberation(tmp_path / "drop" / "deliberations", f"DEL2026_{n:03d}", decision=date.today())
    loaded = load_config(config_path)
    runtime = Runtime(loaded, Pipeline.for_runtime, retry=FAST, serve_http=False)
    assert runtime.run_until_idle(timeout=60)
    ledger = Ledger(loaded.bus.ledger)
    try:
        return ledger.deliveries(), tmp_path / "drop" / "deliberations" / "replies"
    finally:
        ledger.close()


def test_a_transient_failure_is_retried_until_it_goes_through(tmp_path: Path) -> None:
    [delivery], _ = run_with_endpoint(tmp_path, {"fail": ["transient", "transient"]})
    assert delivery.state == "DELIVERED" and delivery.attempts == 3
    assert len(MemoryOutbound.sent["prefecture"]) == 1


def test_repeated_transient_failures_end_in_the_dead_letter_state_with_the_reason(tmp_path: Path) -> None:
    [delivery], replies = run_with_endpoint(tmp_path, {"fail": ["transient"] * 5})
    assert delivery.state == "FAILED" and delivery.attempts == 3
    assert delivery.reason.startswith("gave up after 3 attempts: connector 'prefecture': endpoint unavailable")
    reply = json.loads((replies / "DEL2026_000.1.json").read_text())
    assert reply["state"] == "FAILED" and reply["reason"] == delivery.reason
    assert MemoryOutbound.sent == {}


def test_a_refusal_fails_the_delivery_at_once(tmp_path: Path) -> None:
    [delivery], _ = run_with_endpoint(tmp_path, {"fail": ["document"]})
    assert delivery.state == "FAILED" and delivery.attempts == 1
    assert "refused" in delivery.reason


def test_a_connector_bug_is_retried_like_a_transient_failure(tmp_path: Path) -> None:
    [delivery], _ = run_with_endpoint(tmp_path, {"fail": ["unexpected"]})
    assert delivery.state == "DELIVERED" and delivery.attempts == 2


def test_an_endpoint_that_answers_later_leaves_the_delivery_sent(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {"type": "memory", "answer": "SENT"}
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_001", decision=date.today())
    loaded = load_config(config_path)
    runtime = Runtime(loaded, Pipeline.for_runtime, retry=FAST, serve_http=False)
    runtime.run_until_idle(timeout=5)  # never idle: a SENT delivery waits for its answer
    ledger = Ledger(loaded.bus.ledger)
    try:
        [delivery] = ledger.deliveries()
    finally:
        ledger.close()
    assert delivery.state == "SENT" and len(MemoryOutbound.sent["prefecture"]) == 1


def test_an_endpoint_that_asks_to_wait_is_not_tried_again_before_it_said(tmp_path: Path) -> None:
    import time

    from bus import registry
    from bus.errors import TransientError

    class Busy(TransientError):
        retry_after = 1.5

    class PoliteMemory(MemoryOutbound):
        """Answers "come back in 1.5 s" once (as a 429 with Retry-After), then takes the act."""

        tries: list[float] = []

        def send(self, artifact: Any) -> Any:
            self.tries.append(time.monotonic())
            if len(self.tries) == 1:
                raise Busy("busy: retry after 1.5 s", connector=self.name)
            return super().send(artifact)

    registry.register("memory", "outbound", PoliteMemory)
    try:
        deliveries, _ = run_with_endpoint(tmp_path, {})
    finally:
        registry.unregister("memory", "outbound")
    assert [d.state for d in deliveries] == ["DELIVERED"]
    # the runtime's own back-off (0.05 s) gave way to what the endpoint asked
    assert len(PoliteMemory.tries) == 2 and PoliteMemory.tries[1] - PoliteMemory.tries[0] >= 1.4


def run_config(tmp_path: Path, change: Any, acts: int, *, timeout: float = 30, idle: bool = True) -> Any:
    """The harness's bus changed by ``change(config)``, ``acts`` deliberations dropped, run with the
    configuration's own retry policies (no test override)."""
    config_path = write_config(tmp_path, sweep="0.1s", lease="1s")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    change(config)
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    for n in range(acts):
        drop_deliberation(tmp_path / "drop" / "deliberations", f"DEL2026_{n:03d}", decision=date.today())
    loaded = load_config(config_path)
    runtime = Runtime(loaded, Pipeline.for_runtime, serve_http=False)
    finished = runtime.run_until_idle(timeout=timeout)
    assert finished or not idle, "the bus did not finish"
    return loaded, runtime


def test_each_endpoint_has_its_own_retry_policy_and_circuit_from_the_yaml(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["bus"]["retry"] = {"max_attempts": 5, "first_delay": "0.05s", "max_delay": "0.1s"}
        config["connectors"]["prefecture"] = {
            "type": "memory", "fail": ["transient"] * 10,
            "retry": {"max_attempts": 2, "first_delay": "0.05s", "jitter": 0.5},
            "circuit": {"threshold": 2, "cooldown": "0.2s"},
        }
        config["connectors"]["archives"] = {"type": "memory", "fail": ["transient"] * 3}
        config["routes"][0]["to"] = ["prefecture", "archives"]

    loaded, _ = run_config(tmp_path, change, acts=1)
    ledger = Ledger(loaded.bus.ledger)
    try:
        by_endpoint = {d.endpoint: d for d in ledger.deliveries()}
        circuits = {c["endpoint"]: c for c in ledger.circuits()}
    finally:
        ledger.close()
    # the préfecture's own policy gave up after 2 attempts; the archives took bus.retry's 5 and got through
    assert (by_endpoint["prefecture"].state, by_endpoint["prefecture"].attempts) == ("FAILED", 2)
    assert by_endpoint["prefecture"].reason.startswith("gave up after 2 attempts")
    assert (by_endpoint["archives"].state, by_endpoint["archives"].attempts) == ("DELIVERED", 4)
    # the préfecture's circuit opened after its 2 failures in a row, and the ledger says so for `status`
    assert circuits["prefecture"]["state"] == "open" and circuits["prefecture"]["failures"] == 2
    result = run_cli("status", "--endpoints", "--json", "-c", str(tmp_path / "hent.yaml"))
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["endpoint"]: json.loads(line)["state"] for line in result.stdout.splitlines()} == {
        "prefecture": "open", "archives": "closed"}


def test_a_delivery_older_than_max_age_is_given_up_whatever_its_attempts(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:
        config["connectors"]["prefecture"] = {
            "type": "memory", "fail": ["transient"] * 50,
            "retry": {"max_attempts": 100, "first_delay": "0.1s", "max_delay": "0.1s", "max_age": "1s"},
            "circuit": {"threshold": 100},
        }

    loaded, _ = run_config(tmp_path, change, acts=1)
    ledger = Ledger(loaded.bus.ledger)
    try:
        [delivery] = ledger.deliveries()
    finally:
        ledger.close()
    assert delivery.state == "FAILED" and "retry.max_age" in delivery.reason
    assert 3 <= delivery.attempts < 30


def test_a_source_stops_taking_documents_while_its_routes_backlog_is_full(tmp_path: Path) -> None:
    from bus import metrics

    def change(config: dict[str, Any]) -> None:
        # the endpoint is down: nothing leaves, every delivery stays PENDING
        config["connectors"]["prefecture"] = {"type": "memory", "fail": ["transient"] * 100,
                                              "retry": {"max_attempts": 100, "first_delay": "5s"}}
        config["routes"][0]["max_backlog"] = 3

    loaded, _ = run_config(tmp_path, change, acts=6, timeout=3, idle=False)
    ledger = Ledger(loaded.bus.ledger)
    try:
        documents = ledger.documents()
    finally:
        ledger.close()
    # Then three were taken, three wait in the drop folder, untouched
    assert len(documents) == 3
    left = sorted(p.name for p in (tmp_path / "drop" / "deliberations").glob("DEL2026_*.json"))
    assert len(left) == 3
    assert metrics.REGISTRY.get_sample_value("hent_source_paused", {"connector": "deliberations"}) == 1.0


def test_at_start_a_delivery_whose_artifact_left_the_spool_is_failed_naming_it(tmp_path: Path) -> None:
    def change(config: dict[str, Any]) -> None:  # the endpoint is down: the delivery waits, PENDING
        config["connectors"]["prefecture"] = {"type": "memory", "fail": ["transient"] * 100,
                                              "retry": {"max_attempts": 100, "first_delay": "60s"}}

    loaded, runtime = run_config(tmp_path, change, acts=1, timeout=2, idle=False)
    ledger = Ledger(loaded.bus.ledger)
    try:
        [waiting] = ledger.deliveries()
        assert waiting.state == "PENDING"
    finally:
        ledger.close()
    # When the spool loses the archive (restored from an old backup) and the bus starts again
    runtime.spool.path(waiting.artifact_sha256).unlink()
    again = Runtime(loaded, Pipeline.for_runtime, serve_http=False)
    try:
        again.start()
        # Then the delivery is failed at once, naming what is missing and what to do
        [failed] = again.ledger.deliveries()
    finally:
        again.stop_event.set()
        again.shutdown()
    assert failed.state == "FAILED" and waiting.artifact_name in failed.reason and "restore the spool" in failed.reason


def test_a_restarted_bus_takes_at_once_the_polls_its_dead_predecessor_on_this_machine_held(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    config_path = write_config(tmp_path, lease="60s")
    loaded = load_config(config_path)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead, alive = f"{socket.gethostname()}-{finished.pid}", "another-machine-4242"
    ledger = Ledger(loaded.bus.ledger)
    try:
        assert ledger.acquire_lease("poll", "source:deliberations", dead, 60)
        assert ledger.acquire_lease("poll", "source:rh", alive, 60)
    finally:
        ledger.close()
    runtime = Runtime(loaded, Pipeline.for_runtime, serve_http=False)
    try:
        # the lease of a process of this machine that is gone is taken at once, not after bus.lease
        assert runtime._hold("source:deliberations")
        assert runtime.ledger.lease_owner("poll", "source:deliberations") == runtime.actor
        # one held by another machine's node is left to it until it expires
        assert not runtime._hold("source:rh")
    finally:
        runtime.shutdown()
