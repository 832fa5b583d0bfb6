"""Stop the bus mid-flight — politely (SIGTERM) or not (SIGKILL) — and restart it.

Every document must end processed exactly once: one archive per act at the endpoint,
one ledger row per bundle, every bundle moved to done/, the journal intact.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from bus.config import load_config
from bus.ledger import Ledger
from simulators.backoffice import drop_deliberation
from tests.harness import ROOT, archive_members, write_config

pytestmark = pytest.mark.chaos
ACTS = 40


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "run_bus.py", "--log-level", "INFO", "run", "-c", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )


def archives(workspace: Path) -> list[Path]:
    return sorted(p for p in (workspace / "out").glob("*.tar.gz") if not p.name.startswith("."))


def drop_acts(workspace: Path) -> set[str]:
    folder = workspace / "drop" / "deliberations"
    decision = date.today() - timedelta(days=1)
    for n in range(ACTS):
        drop_deliberation(folder, f"DEL2026_{n:03d}", decision=decision, annexes=1)
    return {f"044-214400152-{decision:%Y%m%d}-DEL2026_{n:03d}-DE" for n in range(ACTS)}


def wait_until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def all_done(config: Path) -> bool:
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        documents = ledger.documents()
        deliveries = ledger.deliveries()
    finally:
        ledger.close()
    return (
        len(documents) == ACTS
        and all(d.state == "ROUTED" for d in documents)
        and len(deliveries) == ACTS
        and all(d.state == "DELIVERED" for d in deliveries)
    )


def settled(workspace: Path) -> bool:
    folder = workspace / "drop" / "deliberations"
    return len(list((folder / "done").glob("*.json"))) == ACTS and not list((folder / ".hent-work").iterdir())


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> float:
    began = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=30)
    return time.monotonic() - began


def assert_exactly_once(workspace: Path, config: Path, expected: set[str], log: Path) -> None:
    produced = archives(workspace)
    ids = []
    for archive in produced:
        [message] = [name for name in archive_members(archive) if name.endswith("-1-1_0.xml")]
        ids.append(message.removesuffix("-1-1_0.xml"))
    assert sorted(ids) == sorted(expected), log.read_text()[-3000:]
    assert len(produced) == ACTS
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        assert len(ledger.documents()) == ACTS
        assert ledger.verify_journal() == []
    finally:
        ledger.close()
    folder = workspace / "drop" / "deliberations"
    assert not list(folder.glob("*.json")) and not list((folder / "error").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_midway_then_restart_processes_every_document_once(tmp_path: Path, sig: signal.Signals) -> None:
    config = write_config(tmp_path, poll="0.2s", lease="2s", sweep="0.5s")
    expected = drop_acts(tmp_path)
    log = tmp_path / "bus.log"
    # Given the bus running on 40 dropped acts
    bus = start(config, log)
    wait_until(lambda: len(archives(tmp_path)) >= 3, 60, "the first archives")
    # When it receives SIGTERM (or SIGINT) midway, Then it finishes in-flight work and exits 0 within 10 s
    elapsed = stop(bus, sig)
    assert bus.returncode == 0, log.read_text()[-3000:]
    assert elapsed < 10
    assert len(archives(tmp_path)) < ACTS, "the test stopped the bus too late to mean anything"
    # When it is started again, Then everything is processed, once
    bus = start(config, log)
    try:
        wait_until(lambda: all_done(config) and settled(tmp_path), 90, "every act delivered")
    finally:
        stop(bus, signal.SIGTERM)
    assert bus.returncode == 0
    assert_exactly_once(tmp_path, config, expected, log)


def test_sigkill_at_any_moment_then_restart_processes_every_document_once(tmp_path: Path) -> None:
    config = write_config(tmp_path, poll="0.2s", lease="2s", sweep="0.5s")
    expected = drop_acts(tmp_path)
    log = tmp_path / "bus.log"
    # Given the bus killed with SIGKILL three times while it works, at different stages
    for progress in (3, 12, 24):
        bus = start(config, log)
        wait_until(lambda n=progress: len(archives(tmp_path)) >= n, 60, f"{progress} archives")
        stop(bus, signal.SIGKILL)
        assert bus.returncode == -signal.SIGKILL
    assert len(archives(tmp_path)) < ACTS, "the bus was killed too late to mean anything"
    # When started once more, Then every act is delivered exactly once
    bus = start(config, log)
    try:
        wait_until(lambda: all_done(config) and settled(tmp_path), 120, "every act delivered")
    finally:
        stop(bus, signal.SIGTERM)
    assert_exactly_once(tmp_path, config, expected, log)


def test_a_commit_interrupted_midway_is_finished_after_a_restart_without_a_new_document(tmp_path: Path) -> None:
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    config = load_config(write_config(tmp_path))
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_500", decision=date.today(), annexes=1)
    # Given a bundle claimed, recorded and routed by a first process
    first = Runtime(config, Pipeline.for_runtime, serve_http=False)
    first.poll("deliberations")
    [doc_id] = list(first._claims["deliberations"])
    first.handle_document(doc_id)
    claimed = first._claims["deliberations"][doc_id]
    first.shutdown()
    # and killed while it moved the bundle to done/: the PDF went, the rest did not
    (folder / "done").mkdir(exist_ok=True)
    claimed.files["DEL2026_500.pdf"].rename(folder / "done" / "DEL2026_500.pdf")
    # When a new process starts, Then it finishes the commit and records nothing new
    second = Runtime(config, Pipeline.for_runtime, serve_http=False)
    assert second.run_until_idle(timeout=30)
    ledger = Ledger(config.bus.ledger)
    try:
        [document] = ledger.documents()
    finally:
        ledger.close()
    assert document.id == doc_id and document.state == "ROUTED"
    assert sorted(p.name for p in (folder / "done").iterdir()) == [
        "DEL2026_500.json", "DEL2026_500.pdf", "DEL2026_500_annexe1.pdf",
    ]
    assert not list((folder / "error").iterdir())
