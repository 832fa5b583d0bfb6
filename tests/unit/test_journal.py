"""Journal tests: the chain, tampering as an attacker would do it (sqlite3 on the file), and
several writers at once.  The same tests run on PostgreSQL when HENT_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import bus.journal
from bus.journal import GENESIS_HASH, event_hash, metadata, verify
from bus.ledger import Ledger

POSTGRES_URL = os.environ.get("HENT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason="HENT_TEST_POSTGRES_URL unset")
    ),
]
SHA = "c" * 64


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    assert POSTGRES_URL
    engine = create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def ledger(url: str) -> Iterator[Ledger]:
    ledger = Ledger(url, actor="test")
    yield ledger
    ledger.close()


def tamper(url: str, sql: str, **params: Any) -> None:
    """Change the database behind the ledger's back: sqlite3 straight on the file, or raw SQL."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        assert database
        with sqlite3.connect(database) as conn:
            conn.execute(sql, params)
        conn.close()
        return
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(sql), params)
    engine.dispose()


def five_events(ledger: Ledger) -> str:
    """seq 1..5: a document received, prepared, routed; a delivery pending, sent."""
    document, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="rh:a",
                                      sidecar_sha256=SHA, files={})
    ledger.transition_document(document.id, "PREPARED", route="r")
    delivery = ledger.add_delivery(document.id, route="r", endpoint="prefecture", artifact_name="x.tar.gz",
                                   artifact_sha256=SHA, artifact_kind="actes-archive", client_key="k",
                                   id_acte=None, envelope_name=None)
    ledger.transition_document(document.id, "ROUTED")
    ledger.transition_delivery(delivery.id, "SENT", payload_sha256=SHA)
    return document.id


def test_events_are_chained_from_the_genesis_hash(ledger: Ledger) -> None:
    document_id = five_events(ledger)
    with ledger.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM journal ORDER BY seq"))]
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(rows, rows[1:], strict=False):
        assert after["prev_hash"] == before["hash"]
    for row in rows:
        assert row["hash"] == event_hash(row)
        assert row["at"].endswith("+00:00") and len(row["at"]) == len("2024-05-02T09:00:00.000000+00:00")
    assert [e.to_state for e in ledger.entries(document_id)] == ["RECEIVED", "PREPARED", "ROUTED"]
    assert verify(ledger.engine) == []
    assert ledger.verify_journal() == []


def test_the_hash_covers_every_field() -> None:
    event = {"seq": 1, "at": "2024-05-02T09:00:00.000000+00:00", "actor": "a", "entity": "document",
             "entity_id": "d", "from_state": None, "to_state": "RECEIVED", "reason": "",
             "payload_sha256": None, "prev_hash": GENESIS_HASH}
    base = event_hash(event)
    for name, other in [("seq", 2), ("at", "x"), ("actor", "b"), ("entity", "delivery"), ("entity_id", "e"),
                        ("from_state", "FAILED"), ("to_state", "FAILED"), ("reason", "r"),
                        ("payload_sha256", SHA), ("prev_hash", SHA)]:
        assert event_hash({**event, name: other}) != base, name


def test_an_edited_event_is_detected(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    # When an attacker rewrites the reason of seq 3
    tamper(url, "UPDATE journal SET reason = 'nothing to see' WHERE seq = 3")
    # Then
    assert verify(ledger.engine) == ["seq 3: its hash does not match its content (event edited)"]


def test_an_edited_event_whose_hash_was_recomputed_is_detected_by_the_next(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    with ledger.engine.connect() as conn:
        row = dict(conn.execute(text("SELECT * FROM journal WHERE seq = 3")).one()._mapping)
    forged = {**row, "actor": "someone else"}
    tamper(url, "UPDATE journal SET actor = :actor, hash = :hash WHERE seq = 3",
           actor="someone else", hash=event_hash(forged))
    problems = verify(ledger.engine)
    assert problems == ["seq 4: prev_hash does not match the hash of seq 3 "
                        "(an event was inserted, deleted or rewritten before it)"]


def test_an_inserted_event_is_detected(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    with ledger.engine.connect() as conn:
        last = dict(conn.execute(text("SELECT * FROM journal WHERE seq = 5")).one()._mapping)
    # When an attacker appends a well-formed event, hash and all, without moving the head
    forged = {**last, "seq": 6, "to_state": "ACKNOWLEDGED", "from_state": "SENT", "prev_hash": last["hash"]}
    forged["hash"] = event_hash(forged)
    columns = ", ".join(forged)
    tamper(url, f"INSERT INTO journal ({columns}) VALUES ({', '.join(':' + c for c in forged)})", **forged)
    # Then the head gives it away
    assert verify(ledger.engine) == [
        "journal_head: counts 5 events but the journal holds 6 (events deleted or inserted)",
        "journal_head: last seq is 5 but the journal ends at seq 6 "
        "(last events deleted, or events appended behind the bus's back)",
        "journal_head: last hash does not match the hash of seq 6 "
        "(last event deleted, rewritten or appended behind the bus's back)",
    ]


def test_an_event_inserted_before_the_first_is_detected(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    forged = {"seq": 0, "at": "2024-01-01T00:00:00.000000+00:00", "actor": "x", "entity": "document",
              "entity_id": "d", "from_state": None, "to_state": "RECEIVED", "reason": "",
              "payload_sha256": None, "prev_hash": GENESIS_HASH}
    forged["hash"] = event_hash(forged)
    columns = ", ".join(forged)
    tamper(url, f"INSERT INTO journal ({columns}) VALUES ({', '.join(':' + c for c in forged)})", **forged)
    problems = verify(ledger.engine)
    assert problems[:2] == [
        "seq 0: the journal starts at seq 1 (event inserted before it)",
        "seq 1: prev_hash does not match the hash of seq 0 "
        "(an event was inserted, deleted or rewritten before it)",
    ]
    assert problems[2].startswith("journal_head: counts 5 events but the journal holds 6")


def test_a_deleted_middle_event_is_detected(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    tamper(url, "DELETE FROM journal WHERE seq = 3")
    assert verify(ledger.engine) == [
        "seq 4: seq 3 missing (events deleted or seq edited)",
        "seq 4: prev_hash does not match the hash of seq 2 "
        "(an event was inserted, deleted or rewritten before it)",
        "journal_head: counts 5 events but the journal holds 4 (events deleted or inserted)",
    ]


def test_a_deleted_last_event_is_detected(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    tamper(url, "DELETE FROM journal WHERE seq = 5")
    assert verify(ledger.engine) == [
        "journal_head: counts 5 events but the journal holds 4 (events deleted or inserted)",
        "journal_head: last seq is 5 but the journal ends at seq 4 "
        "(last events deleted, or events appended behind the bus's back)",
        "journal_head: last hash does not match the hash of seq 4 "
        "(last event deleted, rewritten or appended behind the bus's back)",
    ]


def test_a_deleted_head_is_detected_and_stops_appends(ledger: Ledger, url: str) -> None:
    five_events(ledger)
    tamper(url, "DELETE FROM journal_head")
    assert verify(ledger.engine) == ["journal_head: the row is missing (deleted)"]
    with pytest.raises(bus.journal.HentError, match="journal_head row is missing"):
        ledger.add_document(source="rh", bundle="b", idempotency_key="rh:b", sidecar_sha256=SHA, files={})
    assert ledger.find_document("rh:b") is None  # the whole transaction rolled back


def test_a_state_edited_behind_the_ledgers_back_is_detected(ledger: Ledger, url: str) -> None:
    document_id = five_events(ledger)
    tamper(url, "UPDATE documents SET state = 'FAILED' WHERE id = :id", id=document_id)
    assert verify(ledger.engine) == []  # the chain itself is intact...
    assert ledger.verify_journal() == [  # ...but the ledger disagrees with it
        f"document {document_id}: state is FAILED but its last journal event says ROUTED "
        "(state edited behind the bus's back)"
    ]


# -- several writers ----------------------------------------------------------------------


def append_events(ledger: Ledger, actor: str, documents: int) -> None:
    """Two journal events per document: RECEIVED, then PREPARED."""
    for n in range(documents):
        document, _ = ledger.add_document(
            source=actor, bundle=f"{n}.json", idempotency_key=f"{actor}:{n}", sidecar_sha256=SHA, files={},
            actor=actor,
        )
        ledger.transition_document(document.id, "PREPARED", expect="RECEIVED", actor=actor)


def write_events(url: str, actor: str, documents: int) -> None:
    """A process of its own: its own engine on the same database."""
    ledger = Ledger(url, actor=actor)
    try:
        append_events(ledger, actor, documents)
    finally:
        ledger.close()


def count_events(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one())
    engine.dispose()
    return count


def test_two_processes_append_to_one_chain(url: str) -> None:
    Ledger(url).close()  # schema first, so that the workers only race on appends
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_events, args=(url, f"worker-{i}", 100)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    # Then
    ledger = Ledger(url)
    assert ledger.verify_journal() == []
    assert count_events(url) == 400
    assert ledger.counts_by_state()["document"]["PREPARED"] == 200
    ledger.close()


def test_two_threads_sharing_one_ledger_append_to_one_chain(ledger: Ledger, url: str) -> None:
    errors: list[BaseException] = []

    def run(actor: str) -> None:
        try:
            append_events(ledger, actor, 100)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"thread-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert ledger.verify_journal() == []
    assert count_events(url) == 400


@pytest.mark.parametrize("count", [1, 3, 40])
def test_events_appended_together_are_chained_and_counted(ledger: Ledger, url: str, count: int) -> None:
    # Given one event, then ``count`` in one append (one executemany of them, then the head moved)
    with ledger._write() as conn:
        bus.journal.append(conn, actor="a", entity="document", entity_id="d0", from_state=None, to_state="RECEIVED")
    events = [{"actor": "a", "entity": "delivery", "entity_id": f"v{n}", "from_state": None, "to_state": "PENDING",
               "reason": f"é {n}"} for n in range(count)]
    # When
    with ledger._write() as conn:
        appended = bus.journal.append_many(conn, events)
    # Then
    assert [e.seq for e in appended] == list(range(2, count + 2))
    assert ledger.verify_journal() == []
    assert count_events(url) == count + 1
    assert [e.reason for e in ledger.entries("v0")] == ["é 0"]


def test_public_names() -> None:
    for name in bus.journal.__all__:
        assert hasattr(bus.journal, name)
