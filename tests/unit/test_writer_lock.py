"""bus/writer_lock.py: one SQLite writer at a time, across threads and processes, waking at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kombu import Connection

import bus.sqlite_broker
from bus.backbone import DOCUMENTS, Backbone
from bus.errors import TransientError
from bus.ledger import Ledger
from bus.sqlite_broker import SqliteTransport
from bus.writer_lock import WriterLock

_HOLDER = """
import sys, time
from bus.writer_lock import WriterLock
with WriterLock(sys.argv[1], timeout=5):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""


def _holder(path: Path) -> subprocess.Popen[str]:
    """A process holding the lock at ``path`` until its stdin is closed (end it with :func:`_end`)."""
    process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


def _end(process: subprocess.Popen[str], *, kill: bool = True) -> None:
    if kill:
        process.kill()
    process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None and not pipe.closed:
            pipe.close()


def test_threads_of_a_process_take_turns(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "db-writer.lock", timeout=5)
    inside, overlaps, turns = [0], [0], []

    def work(n: int) -> None:
        for _ in range(20):
            with lock:
                inside[0] += 1
                if inside[0] > 1:
                    overlaps[0] += 1
                time.sleep(0.0005)
                turns.append(n)
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps[0] == 0
    assert sorted(turns) == sorted([n for n in range(4) for _ in range(20)])


def test_another_process_holding_it_makes_a_writer_wait_then_time_out(tmp_path: Path) -> None:
    path = tmp_path / "db-writer.lock"
    holder = _holder(path)
    try:
        lock = WriterLock(path, timeout=0.3)
        began = time.monotonic()
        with pytest.raises(TimeoutError, match="another process kept the writer turn"):
            lock.__enter__()
        assert time.monotonic() - began >= 0.3
        # the thread lock was given back with the failure: the next try is not stuck on it
        assert lock._threads.acquire(blocking=False)
        lock._threads.release()
    finally:
        _end(holder)


def test_the_turn_passes_as_soon_as_the_other_process_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "db-writer.lock"
    holder = _holder(path)
    lock = WriterLock(path, timeout=10)
    released = []

    def let_go() -> None:
        time.sleep(0.2)
        released.append(time.monotonic())
        assert holder.stdin is not None
        holder.stdin.close()  # the holder leaves its with block and exits

    threading.Thread(target=let_go).start()
    with lock:
        waited = time.monotonic() - released[0]
    _end(holder, kill=False)
    assert waited < 1.0  # the pause between tries is at most a few ms (plus the holder's exit)


def test_a_holder_killed_blocks_nobody(tmp_path: Path) -> None:
    path = tmp_path / "db-writer.lock"
    holder = _holder(path)
    _end(holder)
    with WriterLock(path, timeout=1):
        pass


def test_the_ledger_on_a_sqlite_file_queues_its_writers_there(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        lock = ledger._writer_lock
        assert isinstance(lock, WriterLock)
        assert lock.path == tmp_path / "ledger.db-writer.lock"
        lock.timeout = 0.2
        holder = _holder(lock.path)
        try:
            with pytest.raises(TransientError, match="ledger busy: .*another process kept the writer turn"):
                ledger.add_document(source="s", bundle="b.json", idempotency_key="k", sidecar_sha256="0" * 64,
                                    files={"b.json": "0" * 64})
        finally:
            _end(holder)
        document, created = ledger.add_document(source="s", bundle="b.json", idempotency_key="k",
                                                sidecar_sha256="0" * 64, files={"b.json": "0" * 64})
        assert created and document.bundle == "b.json"
    finally:
        ledger.close()


def test_a_ledger_in_memory_needs_no_file(tmp_path: Path) -> None:
    ledger = Ledger("sqlite://")
    try:
        assert not isinstance(ledger._writer_lock, WriterLock)
    finally:
        ledger.close()


def test_a_lock_file_it_cannot_open_leaves_the_queueing_to_sqlite(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    lock = WriterLock(tmp_path / "no-such-folder" / "db-writer.lock", timeout=1)  # cannot be created
    with lock:
        pass
    with lock:  # said once
        pass
    said = [m for m in caplog.messages if "SQLite's busy handler makes them wait instead" in m]
    assert len(said) == 1 and "No such file or directory" in said[0]


def test_the_embedded_broker_kept_waiting_says_so_and_takes_the_message_afterwards(tmp_path: Path) -> None:
    # Given the embedded broker's file, its writer turn held by another process
    broker_file = tmp_path / "broker.db"
    url = f"sqla+sqlite:///{broker_file}"
    backbone = Backbone(url)
    try:
        backbone.publish(DOCUMENTS, "d0")  # the channel and its lock exist
        lock = bus.sqlite_broker._writer(broker_file)
        assert lock.path == tmp_path / "broker.db-writer.lock"
        timeout, lock.timeout = lock.timeout, 0.2
        holder = _holder(lock.path)
        try:
            # When a message is published meanwhile / Then: the transport says it as a broker error kombu
            # retries (sqlite3.OperationalError), and the backbone, once kombu gave up, as a transient one
            with Connection(transport=SqliteTransport, transport_options={"path": str(broker_file)}) as conn:
                channel = conn.default_channel
                with pytest.raises(sqlite3.OperationalError, match="broker busy: .*kept the writer turn"):
                    channel._put(DOCUMENTS, {"body": "d1"})
            with pytest.raises(TransientError, match="another process kept the writer turn"):
                backbone.publish(DOCUMENTS, "d1")
        finally:
            _end(holder)
            lock.timeout = timeout
        # and, the turn given back, the broker takes it; nothing was half written
        backbone.publish(DOCUMENTS, "d1")
        assert backbone.depth(DOCUMENTS) == 2
    finally:
        backbone.close()
