"""Ledger tests, on SQLite (tmp_path) and, when HENT_TEST_POSTGRES_URL is set, on PostgreSQL."""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import bus.ledger
from bus import journal
from bus.errors import ConfigError, DocumentError, TransientError
from bus.journal import metadata
from bus.ledger import (
    DELIVERY_TRANSITIONS,
    DOCUMENT_TRANSITIONS,
    FINAL_DELIVERY_STATES,
    FINAL_DOCUMENT_STATES,
    DeliveryRow,
    DeliveryState,
    DocumentRow,
    DocumentState,
    IllegalTransition,
    Ledger,
    NewDocument,
    StaleState,
    UnknownEntity,
    make_engine,
)

POSTGRES_URL = os.environ.get("HENT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason="HENT_TEST_POSTGRES_URL unset")
    ),
]
SHA_A, SHA_B = "a" * 64, "b" * 64
T0 = datetime(2024, 5, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    assert POSTGRES_URL
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url, actor="test", clock=clock)
    yield ledger
    ledger.close()


def add(ledger: Ledger, key: str = "rh_outbox:arrete-12.json") -> DocumentRow:
    row, created = ledger.add_document(
        source="rh_outbox", bundle=key.split(":")[-1], idempotency_key=key, sidecar_sha256=SHA_A,
        files={"arrete-12.pdf": SHA_B},
    )
    assert created
    return row


def deliver(ledger: Ledger, document: DocumentRow, endpoint: str = "prefecture", n: int = 1) -> DeliveryRow:
    return ledger.add_delivery(
        document.id, route="actes-to-legality", endpoint=endpoint, artifact_name=f"EACT-{n}.tar.gz",
        artifact_sha256=SHA_B, artifact_kind="actes-archive", client_key=f"client-{n}",
        id_acte=f"044-214400152-20240502-A{n}-AI", envelope_name=f"EACT--214400152--20240502-{n}.xml",
        actor="router",
    )


# -- documents ----------------------------------------------------------------------------


def test_add_document_records_received_and_journals_it(ledger: Ledger) -> None:
    # When
    row = add(ledger)
    # Then
    assert row.state is DocumentState.RECEIVED
    assert (row.source, row.bundle, row.files) == ("rh_outbox", "arrete-12.json", {"arrete-12.pdf": SHA_B})
    assert row.created_at == row.updated_at == row.received_at == T0
    assert row.created_at.tzinfo is not None
    assert ledger.get_document(row.id) == row
    assert ledger.find_document("rh_outbox:arrete-12.json") == row
    [event] = ledger.entries(row.id)
    assert (event.entity, event.from_state, event.to_state) == ("document", None, "RECEIVED")
    assert event.actor == "test"
    assert event.payload_sha256 == SHA_A


def test_add_document_with_a_known_key_returns_the_existing_row_and_writes_nothing(ledger: Ledger) -> None:
    first = add(ledger)
    # When
    again, created = ledger.add_document(
        source="rh_outbox", bundle="other", idempotency_key="rh_outbox:arrete-12.json",
        sidecar_sha256=SHA_B, files={},
    )
    # Then
    assert (again, created) == (first, False)
    assert len(ledger.documents()) == 1
    assert len(ledger.entries(first.id)) == 1


def test_add_documents_records_a_batch_in_order_each_known_key_given_back_as_it_is(ledger: Ledger) -> None:
    known = add(ledger, "rh_outbox:arrete-11.json")
    batch = [NewDocument(source="rh_outbox", bundle=f"arrete-{n}.json", idempotency_key=f"rh_outbox:arrete-{n}.json",
                         sidecar_sha256=SHA_A, files={f"arrete-{n}.pdf": SHA_B}) for n in (10, 11, 12)]
    # When a poll's three bundles are recorded together, the second one's key known already
    added = ledger.add_documents(batch, actor="rh_outbox")
    # Then each comes back in its place: two new documents, the known one as it was
    assert [(row.bundle, created) for row, created in added] == [
        ("arrete-10.json", True), ("arrete-11.json", False), ("arrete-12.json", True)]
    assert added[1][0] == known
    for row, _ in added:
        assert ledger.get_document(row.id) == row
    # and the journal has one RECEIVED event for each new one, chained after the earlier one, intact
    events = [ledger.entries(row.id) for row in (known, added[0][0], added[2][0])]
    assert [[(e.seq, e.to_state, e.actor) for e in of_one] for of_one in events] == [
        [(1, "RECEIVED", "test")], [(2, "RECEIVED", "rh_outbox")], [(3, "RECEIVED", "rh_outbox")]]
    assert journal.verify(ledger.engine) == []
    assert ledger.add_documents([]) == []


def test_add_documents_is_all_or_nothing(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = [NewDocument(source="rh_outbox", bundle=f"arrete-{n}.json", idempotency_key=f"rh_outbox:arrete-{n}.json",
                         sidecar_sha256=SHA_A, files={}) for n in range(3)]

    def broken(*_: Any, **__: Any) -> Any:
        raise TransientError("ledger unavailable or busy: the connection dropped; retry later")

    # When the journal cannot be appended after the rows were inserted
    monkeypatch.setattr(journal, "append_many", broken)
    with pytest.raises(TransientError):
        ledger.add_documents(batch)
    # Then no document of the batch is recorded, and the same batch goes in whole later
    assert ledger.documents() == []
    monkeypatch.undo()
    assert [created for _, created in ledger.add_documents(batch)] == [True] * 3
    assert journal.verify(ledger.engine) == []


def at_once(ledgers: list[Ledger], work: Callable[[Ledger], Any]) -> tuple[list[Any], list[Exception]]:
    """``work(ledger)`` for every ledger, each in its thread, released together: (results, errors)."""
    import threading

    barrier, results, errors = threading.Barrier(len(ledgers)), [], []

    def run(ledger: Ledger) -> None:
        barrier.wait()
        try:
            results.append(work(ledger))
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on them
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_workers_adding_the_same_bundle_at_once_record_one_document(ledger_url: str, clock: Clock) -> None:
    """Eight ledgers (as eight pollers after a lease changed hands) add the same key at once: one
    document, one journal event, and every caller gets that document."""
    ledgers = [Ledger(ledger_url, actor=f"p{n}", clock=clock) for n in range(8)]
    try:
        added, errors = at_once(ledgers, lambda poller: poller.add_document(
            source="rh_outbox", bundle="arrete-12.json", idempotency_key="rh_outbox:arrete-12.json",
            sidecar_sha256=SHA_A, files={"arrete-12.pdf": SHA_B}))
        assert errors == []
        assert sorted(created for _, created in added) == [False] * 7 + [True]
        assert len({row.id for row, _ in added}) == 1
        [document] = ledgers[0].documents()
        assert len(ledgers[0].entries(document.id)) == 1
    finally:
        for poller in ledgers:
            poller.close()


def test_an_unknown_document_is_a_clear_key_error(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntity, match="document nope: not in the ledger") as caught:
        ledger.get_document("nope")
    assert isinstance(caught.value, KeyError)
    assert ledger.find_document("nope") is None
    with pytest.raises(UnknownEntity):
        ledger.transition_document("nope", "PREPARED")


DOCUMENT_PATHS: dict[DocumentState, list[DocumentState]] = {
    DocumentState.RECEIVED: [],
    DocumentState.PREPARED: [DocumentState.PREPARED],
    DocumentState.ROUTED: [DocumentState.PREPARED, DocumentState.ROUTED],
    DocumentState.FAILED: [DocumentState.FAILED],
}


@pytest.mark.parametrize("from_state,to_state", list(itertools.product(DocumentState, DocumentState)))
def test_document_transitions(ledger: Ledger, from_state: DocumentState, to_state: DocumentState) -> None:
    # Given a document in from_state
    document = add(ledger)
    for step in DOCUMENT_PATHS[from_state]:
        ledger.transition_document(document.id, step)
    allowed = {
        (DocumentState.RECEIVED, DocumentState.PREPARED), (DocumentState.PREPARED, DocumentState.ROUTED),
        (DocumentState.RECEIVED, DocumentState.FAILED), (DocumentState.PREPARED, DocumentState.FAILED),
        (DocumentState.FAILED, DocumentState.RECEIVED),
    }
    if (from_state, to_state) in allowed:
        # When / Then
        row = ledger.transition_document(document.id, to_state, actor="worker-1", reason="because")
        assert row.state is to_state
        assert row.reason == "because"
        last = ledger.entries(document.id)[-1]
        assert (last.from_state, last.to_state, last.actor, last.reason) == (
            from_state, to_state, "worker-1", "because")
    else:
        with pytest.raises(IllegalTransition) as caught:
            ledger.transition_document(document.id, to_state)
        assert f"document {document.id}: illegal transition {from_state} → {to_state}" in str(caught.value)
        assert ledger.get_document(document.id).state is from_state
        assert len(ledger.entries(document.id)) == 1 + len(DOCUMENT_PATHS[from_state])


def test_the_transition_tables_match_the_design() -> None:
    assert DOCUMENT_TRANSITIONS[DocumentState.ROUTED] == frozenset()
    assert FINAL_DOCUMENT_STATES == {DocumentState.ROUTED, DocumentState.FAILED}
    assert FINAL_DELIVERY_STATES == {DeliveryState.ACKNOWLEDGED, DeliveryState.REJECTED,
                                     DeliveryState.DELIVERED, DeliveryState.FAILED}
    assert DELIVERY_TRANSITIONS[DeliveryState.FAILED] == {DeliveryState.PENDING}


def test_a_transition_sets_the_given_columns(ledger: Ledger, clock: Clock) -> None:
    document = add(ledger)
    clock.advance(5)
    # When
    row = ledger.transition_document(
        document.id, "PREPARED", actor="worker-1", payload_sha256=SHA_B, route="actes-to-legality",
        siren="214400152", id_acte="044-214400152-20240502-A12-AI",
        canonical={"nature": 3, "objet": "Arrêté"},
    )
    # Then
    assert (row.route, row.siren) == ("actes-to-legality", "214400152")
    assert row.id_acte == "044-214400152-20240502-A12-AI"
    assert row.canonical == {"nature": 3, "objet": "Arrêté"}
    assert row.reason is None
    assert row.updated_at == T0 + timedelta(seconds=5) and row.created_at == T0
    assert ledger.entries(document.id)[-1].payload_sha256 == SHA_B


def test_a_transition_refuses_columns_it_may_not_set(ledger: Ledger) -> None:
    document = add(ledger)
    with pytest.raises(TypeError, match="cannot set idempotency_key, state"):
        ledger.transition_document(document.id, "PREPARED", state="ROUTED", idempotency_key="x")


def test_failed_keeps_the_reason_and_replay_clears_it(ledger: Ledger) -> None:
    document = add(ledger)
    failed = ledger.transition_document(document.id, "FAILED", reason="sidecar: field 'date' is missing")
    assert failed.reason == "sidecar: field 'date' is missing"
    replayed = ledger.transition_document(document.id, "RECEIVED", actor="cli", expect="FAILED")
    assert (replayed.state, replayed.reason) == (DocumentState.RECEIVED, None)


def test_expect_is_a_compare_and_set(ledger: Ledger) -> None:
    document = add(ledger)
    ledger.transition_document(document.id, "PREPARED", expect="RECEIVED")
    # When another worker still believes it is RECEIVED
    expected = f"document {document.id}: expected state RECEIVED but it is PREPARED"
    with pytest.raises(StaleState, match=expected):
        ledger.transition_document(document.id, "FAILED", expect=DocumentState.RECEIVED)
    # Then nothing changed
    assert ledger.get_document(document.id).state is DocumentState.PREPARED
    assert len(ledger.entries(document.id)) == 2


def test_documents_lists_with_filters(ledger: Ledger, clock: Clock) -> None:
    a = add(ledger, "k1")
    clock.advance(1)
    b = add(ledger, "k2")
    ledger.transition_document(b.id, "PREPARED", route="r", siren="214400152")
    assert [d.id for d in ledger.documents()] == [a.id, b.id]
    assert [d.id for d in ledger.documents(state="PREPARED")] == [b.id]
    assert [d.id for d in ledger.documents(route="r", siren="214400152", source="rh_outbox")] == [b.id]
    assert ledger.documents(source="elsewhere") == []
    assert len(ledger.documents(limit=1)) == 1


# -- deliveries ---------------------------------------------------------------------------


def test_add_delivery_is_pending_journaled_and_once_per_endpoint(ledger: Ledger) -> None:
    document = add(ledger)
    # When
    delivery = deliver(ledger, document)
    again = deliver(ledger, document, n=2)
    other = deliver(ledger, document, endpoint="procurement", n=3)
    # Then
    assert delivery.state is DeliveryState.PENDING and delivery.attempts == 0 and delivery.final_at is None
    assert again == delivery
    assert {d.id for d in ledger.deliveries_of(document.id)} == {delivery.id, other.id}
    [event] = ledger.entries(delivery.id)
    assert (event.entity, event.to_state, event.actor) == ("delivery", "PENDING", "router")
    assert ledger.get_delivery(delivery.id) == delivery


def test_add_delivery_to_an_unknown_document_is_refused(ledger: Ledger) -> None:
    with pytest.raises(UnknownEntity, match="document nope: not in the ledger"):
        ledger.add_delivery("nope", route="r", endpoint="e", artifact_name=None, artifact_sha256=None,
                            artifact_kind=None, client_key=None, id_acte=None, envelope_name=None)


DELIVERY_PATHS: dict[DeliveryState, list[DeliveryState]] = {
    DeliveryState.PENDING: [],
    DeliveryState.SENT: [DeliveryState.SENT],
    DeliveryState.ACKNOWLEDGED: [DeliveryState.SENT, DeliveryState.ACKNOWLEDGED],
    DeliveryState.REJECTED: [DeliveryState.SENT, DeliveryState.REJECTED],
    DeliveryState.DELIVERED: [DeliveryState.DELIVERED],
    DeliveryState.FAILED: [DeliveryState.FAILED],
}
V = DeliveryState
DELIVERY_ALLOWED = {
    (V.PENDING, V.SENT), (V.PENDING, V.DELIVERED), (V.PENDING, V.FAILED),
    (V.SENT, V.ACKNOWLEDGED), (V.SENT, V.REJECTED), (V.SENT, V.DELIVERED), (V.SENT, V.FAILED),
    (V.FAILED, V.PENDING),
}


@pytest.mark.parametrize("from_state,to_state", list(itertools.product(DeliveryState, DeliveryState)))
def test_delivery_transitions(ledger: Ledger, from_state: DeliveryState, to_state: DeliveryState) -> None:
    delivery = deliver(ledger, add(ledger))
    for step in DELIVERY_PATHS[from_state]:
        ledger.transition_delivery(delivery.id, step)
    if (from_state, to_state) in DELIVERY_ALLOWED:
        row = ledger.transition_delivery(delivery.id, to_state, actor="sender", reason="r")
        assert row.state is to_state
        assert (row.final_at is not None) == (to_state in FINAL_DELIVERY_STATES)
        assert ledger.entries(delivery.id)[-1].to_state == to_state
    else:
        with pytest.raises(IllegalTransition) as caught:
            ledger.transition_delivery(delivery.id, to_state)
        assert f"delivery {delivery.id}: illegal transition {from_state} → {to_state}" in str(caught.value)
        assert ledger.get_delivery(delivery.id).state is from_state


def test_acknowledgment_replaces_the_expected_id_acte(ledger: Ledger) -> None:
    delivery = deliver(ledger, add(ledger))
    ledger.transition_delivery(delivery.id, "SENT", remote_id="s2low-4521", expect="PENDING")
    # When
    acked = ledger.transition_delivery(
        delivery.id, "ACKNOWLEDGED", expect="SENT", id_acte="044-214400152-20240502-A1-AI-OFFICIAL",
        payload_sha256=SHA_A, reason="ARActe 1-2",
    )
    # Then
    assert acked.remote_id == "s2low-4521" and acked.id_acte.endswith("OFFICIAL")  # type: ignore[union-attr]
    assert acked.final_at == T0
    assert ledger.find_delivery(id_acte="044-214400152-20240502-A1-AI-OFFICIAL") == acked


def test_find_delivery_by_any_key(ledger: Ledger) -> None:
    document = add(ledger)
    one = deliver(ledger, document)
    two = deliver(ledger, document, endpoint="procurement", n=2)
    assert ledger.find_delivery(client_key="client-1") == one
    assert ledger.find_delivery(envelope_name="EACT--214400152--20240502-2.xml") == two
    assert ledger.find_delivery(id_acte="044-214400152-20240502-A2-AI", client_key="client-2") == two
    assert ledger.find_delivery(id_acte="044-214400152-20240502-A2-AI", client_key="client-1") is None
    with pytest.raises(ValueError, match="needs id_acte, client_key, envelope_name or act"):
        ledger.find_delivery()
    # by the act's key (SIREN, decision date, NumeroInterne), on one endpoint; _ and % are literal
    assert ledger.find_delivery(act=("214400152", "20240502", "A2")) == two
    assert ledger.find_delivery(act=("214400152", "20240502", "A2"), endpoint="prefecture") is None
    assert ledger.find_delivery(act=("214400152", "20240502", "A1"), endpoint="prefecture") == one
    assert ledger.find_delivery(act=("214400152", "20240502", "A_")) is None
    assert ledger.find_delivery(act=("214400152", "2024050%", "A1")) is None


def test_replay_of_a_failed_delivery_clears_final_at(ledger: Ledger) -> None:
    delivery = deliver(ledger, add(ledger))
    failed = ledger.transition_delivery(delivery.id, "FAILED", reason="endpoint refused the certificate")
    assert failed.final_at is not None and failed.reason == "endpoint refused the certificate"
    replayed = ledger.transition_delivery(delivery.id, "PENDING", actor="cli", expect="FAILED")
    assert replayed.final_at is None and replayed.reason is None


def test_bump_attempts_and_deliveries_filters(ledger: Ledger) -> None:
    delivery = deliver(ledger, add(ledger))
    assert ledger.bump_attempts(delivery.id) == 1
    assert ledger.bump_attempts(delivery.id) == 2
    assert ledger.get_delivery(delivery.id).attempts == 2
    assert [d.id for d in ledger.deliveries(state="PENDING", endpoint="prefecture")] == [delivery.id]
    assert ledger.deliveries(route="other") == []
    with pytest.raises(UnknownEntity):
        ledger.bump_attempts("nope")


def test_record_journals_an_event_without_changing_state(ledger: Ledger) -> None:
    document = add(ledger)
    delivery = deliver(ledger, document)
    ledger.transition_delivery(delivery.id, "SENT")
    ledger.transition_delivery(delivery.id, "ACKNOWLEDGED")
    # When a letter arrives after the acknowledgment
    event = ledger.record("delivery", delivery.id, actor="poller", reason="courrier simple 2-1",
                          payload_sha256=SHA_A)
    # Then
    assert (event.from_state, event.to_state) == ("ACKNOWLEDGED", "ACKNOWLEDGED")
    assert event.reason == "courrier simple 2-1"
    assert ledger.get_delivery(delivery.id).state is DeliveryState.ACKNOWLEDGED
    history = ledger.history(document.id)
    assert [(e.entity, e.to_state) for e in history] == [
        ("document", "RECEIVED"), ("delivery", "PENDING"), ("delivery", "SENT"),
        ("delivery", "ACKNOWLEDGED"), ("delivery", "ACKNOWLEDGED"),
    ]
    assert ledger.verify_journal() == []


# -- leases and the sweeper ---------------------------------------------------------------


def test_a_lease_is_held_by_one_owner_until_it_expires(ledger: Ledger, clock: Clock) -> None:
    document = add(ledger)
    assert ledger.acquire_lease("document", document.id, "worker-a", 30)
    assert not ledger.acquire_lease("document", document.id, "worker-b", 30)
    assert ledger.acquire_lease("document", document.id, "worker-a", 30)  # extend
    row = ledger.get_document(document.id)
    assert (row.lease_owner, row.lease_until) == ("worker-a", T0 + timedelta(seconds=30))
    # When the lease expires
    clock.advance(31)
    # Then someone else may take it, and only the holder may release it
    assert ledger.acquire_lease("document", document.id, "worker-b", 30)
    assert not ledger.release_lease("document", document.id, "worker-a")
    assert ledger.release_lease("document", document.id, "worker-b")
    assert ledger.acquire_lease("document", document.id, "worker-a", 30)


def test_leases_on_deliveries_and_on_sources(ledger: Ledger, clock: Clock) -> None:
    delivery = deliver(ledger, add(ledger))
    assert ledger.acquire_lease("delivery", delivery.id, "a", 10)
    assert not ledger.acquire_lease("delivery", delivery.id, "b", 10)
    assert not ledger.acquire_lease("delivery", "nope", "a", 10)
    # a source has no row: the lease table holds it
    assert ledger.acquire_lease("source", "rh_outbox", "a", 10)
    assert not ledger.acquire_lease("source", "rh_outbox", "b", 10)
    assert ledger.acquire_lease("source", "finance_sftp", "b", 10)
    clock.advance(11)
    assert ledger.acquire_lease("source", "rh_outbox", "b", 10)
    assert ledger.release_lease("source", "rh_outbox", "b")
    assert ledger.acquire_lease("source", "rh_outbox", "a", 10)


def test_expired_work_lists_unleased_stale_documents_and_pending_deliveries(
    ledger: Ledger, clock: Clock
) -> None:
    received = add(ledger, "k1")
    prepared = add(ledger, "k2")
    ledger.transition_document(prepared.id, "PREPARED")
    routed = add(ledger, "k3")
    ledger.transition_document(routed.id, "PREPARED")
    ledger.transition_document(routed.id, "ROUTED")
    leased = add(ledger, "k4")
    pending = deliver(ledger, routed)
    sent = deliver(ledger, routed, endpoint="procurement", n=2)
    ledger.transition_delivery(sent.id, "SENT")
    # Fresh work is left alone during the grace period
    assert ledger.expired_work(grace=60) == ([], [])
    # When a minute passes and one document is leased for longer
    ledger.acquire_lease("document", leased.id, "worker-a", 300)
    clock.advance(61)
    documents, deliveries = ledger.expired_work(grace=60)
    # Then
    assert set(documents) == {received.id, prepared.id}
    assert deliveries == [pending.id]
    # and when that lease expires too
    assert leased.id in ledger.expired_work(clock.now + timedelta(seconds=300), grace=60)[0]


# -- counters -----------------------------------------------------------------------------


def test_envelope_serials_count_per_siren_per_day(ledger: Ledger) -> None:
    day = date(2024, 5, 2)
    assert [ledger.next_envelope_serial("214400152", day) for _ in range(3)] == [1, 2, 3]
    assert ledger.next_envelope_serial("200000001", day) == 1
    assert ledger.next_envelope_serial("214400152", day + timedelta(days=1)) == 1
    assert ledger.next_envelope_serial("214400152", "2024-05-02") == 4


def test_workers_racing_for_the_first_serials_of_a_day_each_get_their_own(ledger_url: str, clock: Clock) -> None:
    """Eight ledgers (as eight workers) draw at once for a SIREN and day no one has drawn for yet:
    the row is created by one; the others, which looked before it was committed, bump it."""
    ledgers = [Ledger(ledger_url, actor=f"w{n}", clock=clock) for n in range(8)]
    try:
        drawn, errors = at_once(ledgers, lambda worker: [worker.next_envelope_serial("214400152", "2024-06-03")
                                                         for _ in range(5)])
    finally:
        for worker in ledgers:
            worker.close()
    assert errors == [] and sorted(serial for serials in drawn for serial in serials) == list(range(1, 41))


def test_the_10000th_envelope_of_a_day_is_refused(ledger: Ledger) -> None:
    ledger.next_envelope_serial("214400152", "2024-05-02")
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE envelope_serials SET last = 9998"))
    assert ledger.next_envelope_serial("214400152", "2024-05-02") == 9999
    used_up = "SIREN 214400152: the 9999 envelope serials of 2024-05-02 are used up"
    with pytest.raises(DocumentError, match=used_up):
        ledger.next_envelope_serial("214400152", "2024-05-02")
    assert ledger.next_envelope_serial("214400152", "2024-05-03") == 1


def test_reply_sequence_per_bundle(ledger: Ledger) -> None:
    assert [ledger.next_reply_seq("rh_outbox", "arrete-12.json") for _ in range(3)] == [1, 2, 3]
    assert ledger.next_reply_seq("rh_outbox", "arrete-13.json") == 1
    assert ledger.next_reply_seq("finance_sftp", "arrete-12.json") == 1


def test_counts_by_state_lists_every_state(ledger: Ledger) -> None:
    document = add(ledger, "k1")
    add(ledger, "k2")
    ledger.transition_document(document.id, "PREPARED")
    deliver(ledger, document)
    counts = ledger.counts_by_state()
    assert counts["document"] == {"RECEIVED": 1, "PREPARED": 1, "ROUTED": 0, "FAILED": 0}
    assert counts["delivery"] == {"PENDING": 1, "SENT": 0, "ACKNOWLEDGED": 0, "REJECTED": 0,
                                  "DELIVERED": 0, "FAILED": 0}


# -- engine -------------------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_normal_sync_and_sync_makes_it_durable(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'sub' / 'ledger.db'}")
    ledger.add_document(source="rh", bundle="a.json", idempotency_key="k", sidecar_sha256="0" * 64, files={})
    fsynced: list[int] = []
    real_fsync = os.fsync
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
        ledger.sync()
    assert len(fsynced) == 1  # the write-ahead log, once for every commit before it
    with ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, made durable by sync()
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    ledger.close()


def test_a_locked_database_is_a_transient_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus.ledger, "BUSY_TIMEOUT_MS", 50)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        busy = "ledger unavailable or busy: database is locked; retry later"
        with pytest.raises(TransientError, match=busy):
            ledger.add_document(source="s", bundle="b", idempotency_key="k", sidecar_sha256=SHA_A, files={})
    finally:
        other.execute("ROLLBACK")
        other.close()
        ledger.close()


def test_a_bad_ledger_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="ledger: cannot use URL"):
        make_engine("nosuchdb://user:secret@host/db")
    with pytest.raises(ConfigError) as caught:
        make_engine("nosuchdb://user:secret@host/db")
    assert "secret" not in str(caught.value)


def test_naive_datetimes_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.expired_work(datetime(2024, 5, 2, 9, 0))


def test_public_names() -> None:
    for name in bus.ledger.__all__:
        assert hasattr(bus.ledger, name)


def test_route_document_prepares_adds_deliveries_routes_and_releases_in_one_transaction(ledger: Ledger) -> None:
    document, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="k",
                                      sidecar_sha256="0" * 64, files={})
    assert ledger.acquire_lease("document", document.id, "w1", 60)
    plan = {"route": "r", "endpoint": "prefecture", "artifact_name": "HNT-x.tar.gz", "artifact_sha256": "1" * 64,
            "artifact_kind": "actes-archive", "client_key": "EACT--x", "id_acte": "034-x", "envelope_name": "E"}
    routed, deliveries = ledger.route_document(
        document.id, prepared={"route": "r", "siren": "214400152", "id_acte": "034-x", "canonical": {"a": 1}},
        deliveries=[plan], actor="w1", release_owner="w1",
    )
    assert routed.state == "ROUTED" and routed.siren == "214400152" and routed.lease_owner is None
    assert [d.state for d in deliveries] == ["PENDING"] and deliveries[0].endpoint == "prefecture"
    assert [(e.entity, e.to_state) for e in ledger.history(document.id)] == [
        ("document", "RECEIVED"), ("document", "PREPARED"), ("delivery", "PENDING"), ("document", "ROUTED"),
    ]
    assert ledger.verify_journal() == []


def test_route_document_leases_its_first_delivery_to_the_worker_that_sends_it_at_once(ledger: Ledger) -> None:
    document, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="k",
                                      sidecar_sha256="0" * 64, files={})
    plans = [{"route": "r", "endpoint": name, "artifact_name": f"{name}.tar.gz", "artifact_sha256": "1" * 64,
              "artifact_kind": "actes-archive"} for name in ("prefecture", "archive")]
    _, deliveries = ledger.route_document(document.id, prepared={"route": "r"}, deliveries=plans, actor="w1",
                                          lease_first=("w1/t", 60))
    first, second = deliveries
    assert first.lease_owner == "w1/t" and first.lease_until is not None and second.lease_owner is None
    stored = {d.endpoint: d for d in ledger.deliveries_of(document.id)}
    assert stored["prefecture"].lease_owner == "w1/t" and stored["archive"].lease_owner is None
    assert ledger.claim_delivery(first.id, "w2/t", 60) is None  # held: another worker cannot take it
    assert ledger.claim_delivery(second.id, "w2/t", 60) is not None  # published to whoever is free


def test_route_document_that_fails_midway_leaves_the_document_untouched(ledger: Ledger) -> None:
    document, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="k",
                                      sidecar_sha256="0" * 64, files={})
    with pytest.raises(TypeError):  # a bad delivery plan, after PREPARED was written in the transaction
        ledger.route_document(document.id, prepared={"route": "r"}, deliveries=[{"nonsense": 1}])
    assert ledger.get_document(document.id).state == "RECEIVED"
    assert ledger.deliveries_of(document.id) == []
    assert ledger.verify_journal() == []


def test_route_document_refuses_an_act_already_received(ledger: Ledger) -> None:
    first, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="a", sidecar_sha256="0" * 64, files={})
    second, _ = ledger.add_document(source="rh", bundle="b.json", idempotency_key="b", sidecar_sha256="1" * 64,
                                    files={})
    ledger.route_document(first.id, prepared={"id_acte": "044-214400152-20261120-DEL1-DE"}, deliveries=[],
                          unique_id_acte=True)
    with pytest.raises(DocumentError, match="already received as document") as raised:
        ledger.route_document(second.id, prepared={"id_acte": "044-214400152-20261120-DEL1-DE"}, deliveries=[],
                              unique_id_acte=True)
    assert raised.value.rule == "act-unique"
    assert ledger.get_document(second.id).state == "RECEIVED"


def test_claim_document_takes_the_lease_and_reads_the_row_at_once(ledger: Ledger) -> None:
    document, _ = ledger.add_document(source="rh", bundle="a.json", idempotency_key="a", sidecar_sha256="0" * 64,
                                      files={})
    claimed = ledger.claim_document(document.id, "w1", 60)
    assert claimed is not None and claimed.lease_owner == "w1" and claimed.id == document.id
    assert ledger.claim_document(document.id, "w2", 60) is None
    assert ledger.claim_document(document.id, "w1", 60) is not None  # its own lease, extended
