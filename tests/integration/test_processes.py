"""``bus.processes``: ``run`` starts worker processes beside itself on the embedded default, they
share the work, a worker that dies is started again, and none outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.config import load_config
from bus.ledger import Ledger
from bus.processes import Supervisor
from tests.chaos.test_restart import ACTS, all_done, assert_exactly_once, drop_acts, settled, wait_until
from tests.harness import ROOT, write_config


def _children(parent: int) -> list[int]:
    """PIDs of the worker processes of ``parent`` (``--process`` in their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == parent and b"--process" in command:
            found.append(int(entry.name))
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "run_bus.py", "--log-level", "INFO", "run", "-c", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_worker_processes_share_the_work_are_restarted_and_stop_with_the_bus(tmp_path: Path) -> None:
    config = write_config(tmp_path, poll="0.2s", lease="5s", sweep="0.5s", extra_bus={"processes": 3})
    log = tmp_path / "bus.log"
    bus = _start(config, log)
    try:
        # Given the bus with bus.processes: 3, Then it runs two worker processes beside itself
        wait_until(lambda: len(_children(bus.pid)) == 2 and log.read_text().count("hent worker ") == 2, 60,
                   "two worker processes running")
        first = _children(bus.pid)
        # When acts are dropped and a worker is killed midway
        expected = drop_acts(tmp_path)
        wait_until(lambda: len(list((tmp_path / "out").glob("*.tar.gz"))) >= 5, 60, "the first archives")
        os.kill(first[0], signal.SIGKILL)
        # Then it is started again, and every act is delivered once
        wait_until(lambda: len(_children(bus.pid)) == 2 and first[0] not in _children(bus.pid), 30,
                   "the killed worker started again")
        wait_until(lambda: all_done(config) and settled(tmp_path), 120, "every act delivered")
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(timeout=60)
    text = log.read_text()
    assert bus.returncode == 0, text[-3000:]
    assert "worker process 1" in text and "ended with signal SIGKILL" in text, text[-3000:]
    assert_exactly_once(tmp_path, config, expected, log)
    # the work was shared: documents prepared by more than one process
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        actors = {event.actor for document in ledger.documents() for event in ledger.history(document.id)
                  if event.entity == "document" and event.to_state == "ROUTED"}  # who prepared it
    finally:
        ledger.close()
    assert len(actors) >= 2, actors
    # and a stop (SIGTERM) stopped every worker
    assert not [pid for pid in first[1:] if _alive(pid)]
    assert not _children(bus.pid)


def test_workers_end_with_their_parent_even_when_it_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, poll="0.2s", extra_bus={"processes": 2})
    bus = _start(config, tmp_path / "bus.log")
    try:
        wait_until(lambda: len(_children(bus.pid)) == 1, 30, "a worker process")
        [worker] = _children(bus.pid)
    finally:
        bus.kill()
        bus.wait(timeout=30)
    wait_until(lambda: not _alive(worker), 15, "the worker ending with its parent")


def test_the_supervisor_restarts_with_a_growing_pause_and_stops_what_it_started() -> None:
    # a worker that dies at once: started again after 1 s, then 2 s...
    supervisor = Supervisor(1, lambda index: [sys.executable, "-c", "raise SystemExit(3)"], shutdown_timeout=1,
                            every=0.05)
    supervisor.start()
    time.sleep(2.5)
    supervisor.stop()
    worker = supervisor.workers[0]
    assert worker.pause == 4.0  # died twice: 1 s waited, then 2 s; 4 s would be next
    # a worker that ignores SIGTERM is killed after shutdown_timeout
    stubborn = Supervisor(1, lambda index: [sys.executable, "-c",
                                            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                            "time.sleep(60)"], shutdown_timeout=0.5)
    stubborn.start()
    time.sleep(1.0)
    [pid] = stubborn.pids()
    began = time.monotonic()
    stubborn.stop()
    assert not _alive(pid) and time.monotonic() - began < 10


@pytest.fixture(autouse=True)
def _no_strays() -> Iterator[None]:
    yield
    assert not [p for p in _children(os.getpid()) if _alive(p)]


assert ACTS >= 20  # enough for two processes to share
