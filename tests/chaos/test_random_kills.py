"""300 acts through the legality simulator over SOAP while the bus is SIGKILLed at 10 random
instants and started again each time; reduced on RabbitMQ + PostgreSQL to 60 acts and 4 kills.

The instants are seeded (``HENT_CHAOS_SEED``, else drawn and printed): each is a point along the
run's progress (a number of journal events) plus a fraction of a second, so the kills fall in
every stage, from the first claims to the last acknowledgments.  At the end, what the run
measures, not what it assumes: every act ACKNOWLEDGED in the ledger, each received once by the
simulator (its count of SubmitArchive calls, duplicates included, against the ledger's acts),
each reply file present once, the journal verified.  The run prints::

    documents: 300 | kills: 10 | lost: 0 | duplicate transmissions: 0 | time to recover: p50 X s, max Y s

(time to recover: from a restart to the first journal event after it).  The journal's progress is
read through the ledger's SQLAlchemy engine, whichever the database.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from sqlalchemy import select

from bus.journal import READ_ONLY_OPTION, journal_head_table
from bus.ledger import Ledger
from simulators.legality import LegalitySimulator
from tests.chaos._helpers import EMBEDDED, SCALE_OUT, Backend
from tests.chaos.test_crash_points import (
    act_key,
    all_done,
    drop_acts,
    ledger_of,
    leftover_debts,
    reply_kinds,
    soap_bus,
    start,
    stop,
    wait_until,
)

pytestmark = pytest.mark.chaos


class Run(NamedTuple):
    documents: int
    kills: int
    budget: float  #: seconds for the whole run, on 2 cores


RUNS = {EMBEDDED: Run(300, 10, 180.0), SCALE_OUT: Run(60, 4, 120.0)}
EVENTS_PER_ACT = 7  #: journal events of an act acknowledged with its receipts, without retries


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.2) as running:
        yield running


def journal_count(ledger: Ledger) -> int:
    """The number of journal events, from the journal's head row (a read-only query)."""
    with ledger.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        return int(conn.execute(select(journal_head_table.c.count)).scalar_one())


@pytest.mark.parametrize("backend", [EMBEDDED, pytest.param(SCALE_OUT, marks=pytest.mark.integration)],
                         indirect=True)
def test_acts_with_random_kills_end_acknowledged_each_received_and_answered_once(
    tmp_path: Path, simulator: LegalitySimulator, backend: Backend
) -> None:
    began = time.monotonic()
    run = RUNS[backend.name]
    seed = int(os.environ.get("HENT_CHAOS_SEED") or random.randrange(1, 10**6))
    print(f"\nrandom kills on {backend.name}: seed {seed} (HENT_CHAOS_SEED={seed} to draw the same instants)")
    rng = random.Random(seed)
    config = backend.apply(soap_bus(tmp_path, simulator, follow_ups="3s"))
    numbers = drop_acts(tmp_path, run.documents)
    log = tmp_path / "bus.log"
    total = run.documents * EVENTS_PER_ACT
    instants = sorted(rng.sample(range(total // 50, total * 9 // 10), run.kills))
    recoveries: list[float] = []
    deadline = began + run.budget
    replies = tmp_path / "drop" / "deliberations" / "replies"
    expected = Counter({"ACKNOWLEDGED": 1, "receipts": 1})
    ledger = ledger_of(config)  # the journal's progress read through it, whichever the database
    try:
        # Given the bus killed with SIGKILL at random instants, started again after each
        for n, instant in enumerate(instants):
            before = journal_count(ledger)
            bus = start(config, log)
            restarted = time.monotonic()
            try:
                if n:  # time to recover: from the restart to its first progress
                    wait_until(lambda b=before: journal_count(ledger) > b, deadline, f"progress after restart {n}",
                               log)
                    recoveries.append(time.monotonic() - restarted)
                wait_until(lambda i=instant: journal_count(ledger) >= i, deadline, f"journal event {instant}", log)
                time.sleep(rng.uniform(0.0, 0.3))
            finally:
                bus.send_signal(signal.SIGKILL)
                bus.wait(timeout=10)
            assert bus.returncode == -signal.SIGKILL

        # When it is started once more
        before = journal_count(ledger)
        bus = start(config, log)
        restarted = time.monotonic()
        try:
            wait_until(lambda: journal_count(ledger) > before, deadline, "progress after the last restart", log)
            recoveries.append(time.monotonic() - restarted)
            wait_until(lambda: all_done(ledger, tmp_path, numbers, "ACKNOWLEDGED", expected), deadline,
                       "every act acknowledged, no reply owed", log)
        finally:
            stop(bus)

        # Then the simulator's counts against the ledger: nothing lost, nothing sent twice
        acts = {act_key(d.bundle.removesuffix(".json")): d for d in ledger.documents()}
        acknowledged = {d.document_id for d in ledger.deliveries() if d.state == "ACKNOWLEDGED"}
        journal_problems = ledger.verify_journal()
        debts = leftover_debts(ledger)
    finally:
        ledger.close()
    received = simulator.received()["by_act"]
    lost = sum(1 for n in numbers if act_key(n) not in received or acts[act_key(n)].id not in acknowledged)
    duplicates = sum(count - 1 for count in received.values() if count > 1)
    print(f"documents: {run.documents} | kills: {run.kills} | lost: {lost} | duplicate transmissions: {duplicates} | "
          f"time to recover: p50 {statistics.median(recoveries):.1f} s, max {max(recoveries):.1f} s "
          f"[{backend.name}, {time.monotonic() - began:.0f} s]")
    assert (lost, duplicates) == (0, 0)
    assert sorted(received) == sorted(act_key(n) for n in numbers) and set(acts) == set(received)
    kinds = reply_kinds(replies)
    assert {n: kinds.get(n) for n in numbers if kinds.get(n) != expected} == {}
    assert journal_problems == [] and debts == []
    assert bus.returncode == 0
    assert time.monotonic() - began < run.budget
