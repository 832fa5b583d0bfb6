"""300 acts through the legality simulator over SOAP while the bus is SIGKILLed at 10 random
instants and started again each time.

The instants are seeded (``HENT_CHAOS_SEED``, else drawn and printed): each is a point along the
run's progress (a number of journal events) plus a fraction of a second, so the kills fall in
every stage, from the first claims to the last acknowledgments.  At the end, what the run
measures, not what it assumes: every act ACKNOWLEDGED in the ledger, each received once by the
simulator (its count of SubmitArchive calls, duplicates included, against the ledger's acts),
each reply file present once, the journal verified.  The run prints::

    documents: 300 | kills: 10 | lost: 0 | duplicate transmissions: 0 | time to recover: p50 X s, max Y s

(time to recover: from a restart to the first journal event after it).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bus.config import load_config
from simulators.legality import LegalitySimulator
from tests.chaos.test_crash_points import (
    act_key,
    drop_acts,
    finished,
    ledger_of,
    leftover_debts,
    replies_whole,
    reply_kinds,
    settled,
    soap_bus,
    start,
    stop,
    wait_until,
)

pytestmark = pytest.mark.chaos
DOCUMENTS = 300
KILLS = 10
BUDGET = 180.0  #: seconds for the whole run, on 2 cores
EVENTS_PER_ACT = 7  #: journal events of an act acknowledged with its receipts, without retries


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.2) as running:
        yield running


class Journal:
    """The number of journal events, read straight from the ledger's SQLite file (read-only queries)."""

    def __init__(self, config: Path) -> None:
        database = make_url(load_config(config).bus.ledger).database
        assert database, "the embedded default (SQLite) is expected here"
        self.path = database

    def count(self) -> int:
        if not Path(self.path).exists():
            return 0
        try:
            with sqlite3.connect(self.path, timeout=5) as conn:
                row = conn.execute("SELECT count FROM journal_head").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
        return int(row[0]) if row else 0


def test_300_acts_with_10_random_kills_end_acknowledged_each_received_and_answered_once(
    tmp_path: Path, simulator: LegalitySimulator
) -> None:
    began = time.monotonic()
    seed = int(os.environ.get("HENT_CHAOS_SEED") or random.randrange(1, 10**6))
    print(f"\nrandom kills: seed {seed} (HENT_CHAOS_SEED={seed} to draw the same instants)")
    rng = random.Random(seed)
    config = soap_bus(tmp_path, simulator, follow_ups="3s")
    numbers = drop_acts(tmp_path, DOCUMENTS)
    log = tmp_path / "bus.log"
    journal = Journal(config)
    total = DOCUMENTS * EVENTS_PER_ACT
    instants = sorted(rng.sample(range(total // 50, total * 9 // 10), KILLS))
    recoveries: list[float] = []
    deadline = began + BUDGET

    # Given the bus killed with SIGKILL at 10 random instants, started again after each
    for n, instant in enumerate(instants):
        before = journal.count()
        bus = start(config, log)
        restarted = time.monotonic()
        try:
            if n:  # time to recover: from the restart to its first progress
                wait_until(lambda b=before: journal.count() > b, deadline, f"progress after restart {n}", log)
                recoveries.append(time.monotonic() - restarted)
            wait_until(lambda i=instant: journal.count() >= i, deadline, f"journal event {instant}", log)
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            bus.send_signal(signal.SIGKILL)
            bus.wait(timeout=10)
        assert bus.returncode == -signal.SIGKILL

    # When it is started once more
    ledger = ledger_of(config)
    replies = tmp_path / "drop" / "deliberations" / "replies"
    expected = Counter({"ACKNOWLEDGED": 1, "receipts": 1})
    before = journal.count()
    bus = start(config, log)
    restarted = time.monotonic()
    try:
        wait_until(lambda: journal.count() > before, deadline, "progress after the last restart", log)
        recoveries.append(time.monotonic() - restarted)
        wait_until(lambda: finished(ledger, DOCUMENTS, "ACKNOWLEDGED") and settled(tmp_path, DOCUMENTS)
                   and replies_whole(replies, numbers, expected), deadline, "every act acknowledged", log)
    finally:
        stop(bus)

    # Then the simulator's counts against the ledger: nothing lost, nothing sent twice
    try:
        acts = {act_key(d.bundle.removesuffix(".json")): d for d in ledger.documents()}
        acknowledged = {d.document_id for d in ledger.deliveries() if d.state == "ACKNOWLEDGED"}
        journal_problems = ledger.verify_journal()
        debts = leftover_debts(ledger)
    finally:
        ledger.close()
    received = simulator.received()["by_act"]
    lost = sum(1 for n in numbers if act_key(n) not in received or acts[act_key(n)].id not in acknowledged)
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    print(f"documents: {DOCUMENTS} | kills: {KILLS} | lost: {lost} | duplicate transmissions: {duplicates} | "
          f"time to recover: p50 {statistics.median(recoveries):.1f} s, max {max(recoveries):.1f} s")
    assert (lost, duplicates) == (0, 0)
    assert sorted(received) == sorted(act_key(n) for n in numbers) and set(acts) == set(received)
    kinds = reply_kinds(replies)
    assert {n: kinds.get(n) for n in numbers if kinds.get(n) != expected} == {}
    assert journal_problems == [] and debts == []
    assert bus.returncode == 0
    assert time.monotonic() - began < BUDGET
