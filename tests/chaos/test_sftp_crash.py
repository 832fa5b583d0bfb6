"""SIGKILL of the bus between the download of an SFTP bundle and its remote commit.

The window is held open without test hooks: the remote ``done/`` is a file, so every commit
fails after the ledger said ROUTED, the archives reached the endpoint and consumed.jsonl
remembered the files.  The bus is killed there, ``done/`` repaired, the bus started again:
every bundle must end in ``done/`` processed exactly once — or, when the vendor's file is
back in the outbox unchanged, be left alone.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from simulators.backoffice import drop_deliberation
from tests.harness import ROOT, archive_members, write_config
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.chaos
ACTS = 4


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "run_bus.py", "--log-level", "INFO", "run", "-c", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text(errors='replace')[-3000:]}")


def sftp_bus(workspace: Path, sshd: SshServer) -> tuple[Path, Path]:
    """The harness's bus with the deliberations read from an SFTP outbox; (config, outbox)."""
    config_path = write_config(workspace, poll="0.2s", lease="2s", sweep="0.5s")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    outbox = sshd.root / workspace.name
    outbox.mkdir()
    config["connectors"]["deliberations"] = {
        "type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user,
        "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), "path": str(outbox),
        "pattern": "*.json", "poll": "0.2s", "ready": {"min_age": "0s", "stable": False},
        "local_work_dir": str(workspace / "sftp-local"), "connect_timeout": "5s", "timeout": "5s",
    }
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config_path, outbox


def drop_acts(outbox: Path) -> set[str]:
    decision = date.today() - timedelta(days=1)
    for n in range(ACTS):
        drop_deliberation(outbox, f"DEL2026_{n:03d}", decision=decision, annexes=1)
    return {f"044-214400152-{decision:%Y%m%d}-DEL2026_{n:03d}-DE" for n in range(ACTS)}


def archives(workspace: Path) -> list[Path]:
    return sorted(p for p in (workspace / "out").glob("*.tar.gz") if not p.name.startswith("."))


def consumed(workspace: Path) -> list[dict[str, object]]:
    path = workspace / "sftp-local" / "consumed.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def ledger_says(config: Path, check: Callable[[Ledger], bool]) -> bool:
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        return check(ledger)
    finally:
        ledger.close()


def routed_and_delivered(ledger: Ledger) -> bool:
    documents, deliveries = ledger.documents(), ledger.deliveries()
    return (len(documents) == ACTS and all(d.state == "ROUTED" for d in documents)
            and len(deliveries) == ACTS and all(d.state == "DELIVERED" for d in deliveries))


def in_the_window(workspace: Path, config: Path, outbox: Path) -> bool:
    """Routed, delivered, remembered as consumed — and still in .hent-work, since done/ is a file."""
    sidecars = {str(outbox / f"DEL2026_{n:03d}.json") for n in range(ACTS)}
    return (len(archives(workspace)) == ACTS and sidecars <= {str(r["path"]) for r in consumed(workspace)}
            and ledger_says(config, routed_and_delivered))


def kill_in_the_window(workspace: Path, config: Path, outbox: Path, log: Path) -> None:
    """Start the bus on the dropped acts with done/ a file, SIGKILL it once every bundle waits for its commit."""
    (outbox / "done").write_text("a file where the done folder should be\n")
    bus = start(config, log)
    try:
        wait_until(lambda: in_the_window(workspace, config, outbox), 30, "every act routed and delivered", log)
        assert "settling DEL2026_" in log.read_text(), "no commit was tried: the window was not reached"
    finally:
        bus.send_signal(signal.SIGKILL)
        bus.wait(timeout=10)
    assert len(list((outbox / ".hent-work").iterdir())) == ACTS
    (outbox / "done").unlink()
    (outbox / "done").mkdir()


def assert_processed_once(workspace: Path, config: Path, expected: set[str], log: Path) -> None:
    ids = []
    for archive in archives(workspace):
        [message] = [name for name in archive_members(archive) if name.endswith("-1-1_0.xml")]
        ids.append(message.removesuffix("-1-1_0.xml"))
    assert sorted(ids) == sorted(expected), log.read_text()[-3000:]
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        documents = ledger.documents()
        assert sorted(d.bundle for d in documents) == [f"DEL2026_{n:03d}.json" for n in range(ACTS)]
        assert ledger.verify_journal() == []
    finally:
        ledger.close()
    remembered = [str(r["path"]) for r in consumed(workspace)]
    assert len(remembered) == len(set(remembered)) == 3 * ACTS  # sidecar, deliberation, annex: once each


def test_sigkill_between_download_and_remote_commit_then_restart_processes_each_bundle_once(
    sshd: SshServer, tmp_path: Path
) -> None:
    config, outbox = sftp_bus(tmp_path, sshd)
    expected = drop_acts(outbox)
    log = tmp_path / "bus.log"
    # Given the bus killed while every bundle was routed, delivered and remembered, but not moved to done/
    kill_in_the_window(tmp_path, config, outbox, log)
    # When it is started again with done/ repaired
    bus = start(config, log)
    try:
        wait_until(lambda: len(list((outbox / "done").glob("*.json"))) == ACTS
                   and not list((outbox / ".hent-work").iterdir()), 30, "every bundle in done/", log)
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(timeout=15)
    # Then each bundle was processed exactly once, and nothing is left behind
    assert bus.returncode == 0, log.read_text()[-3000:]
    assert_processed_once(tmp_path, config, expected, log)
    assert sorted(p.name for p in (outbox / "done").iterdir()) == sorted(
        f"DEL2026_{n:03d}{suffix}" for n in range(ACTS) for suffix in (".json", ".pdf", "_annexe1.pdf"))
    assert not [p for p in outbox.iterdir() if p.is_file()] and not list((outbox / "error").iterdir())
    assert not list((tmp_path / "sftp-local" / "claims").iterdir())


def test_a_bundle_back_in_the_outbox_unchanged_after_its_download_is_not_processed_again(
    sshd: SshServer, tmp_path: Path
) -> None:
    config, outbox = sftp_bus(tmp_path, sshd)
    expected = drop_acts(outbox)
    log = tmp_path / "bus.log"
    # Given the bus killed in the window, and every bundle back in the outbox as the vendor left it
    # (the remote move did not happen: same names, sizes and mtimes)
    kill_in_the_window(tmp_path, config, outbox, log)
    for claim in (outbox / ".hent-work").iterdir():
        for file in claim.iterdir():
            shutil.move(file, outbox / file.name)  # a rename: the mtime stays
    # When the bus is started again
    bus = start(config, log)
    try:
        wait_until(lambda: log.read_text().count("was already consumed (same size and mtime)") >= ACTS
                   and not list((outbox / ".hent-work").iterdir()), 30, "a poll leaving them alone", log)
        time.sleep(1.5)  # several more polls (every 0.2 s)
        # (warned about once each, not at every poll)
        assert log.read_text().count("was already consumed (same size and mtime)") == ACTS
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(timeout=15)
    # Then nothing was claimed or processed again: the bundles stay in the outbox, left alone
    assert bus.returncode == 0, log.read_text()[-3000:]
    assert_processed_once(tmp_path, config, expected, log)
    assert len(list(outbox.glob("DEL2026_*"))) == 3 * ACTS and not list((outbox / "done").iterdir())
    assert not list((tmp_path / "sftp-local" / "claims").iterdir())
