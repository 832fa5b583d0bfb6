"""Dead letters, replay and purge over the ledger (bus/ledger_ops.py), on SQLite and, when
HENT_TEST_POSTGRES_URL is set, on PostgreSQL."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from bus.journal import metadata
from bus.ledger import DeliveryRow, DocumentRow, Ledger, StaleState
from bus.ledger_ops import (
    KEPT_DEAD_LETTER,
    KEPT_LETTER,
    KEPT_NOT_FINAL,
    KEPT_RECENT,
    ORPHAN_MIN_AGE,
    apply_replay,
    dead_letters,
    find_replays,
    plan_purge,
    purge_folder,
    purge_spool,
    replays_of,
)
from bus.spool import Spool

POSTGRES_URL = os.environ.get("HENT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason="HENT_TEST_POSTGRES_URL unset")),
]
T0 = datetime(2024, 5, 2, 9, 0, tzinfo=UTC)
DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    assert POSTGRES_URL
    engine = create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(ledger_url: str, clock: Clock) -> Iterator[Ledger]:
    ledger = Ledger(ledger_url, actor="worker", clock=clock)
    yield ledger
    ledger.close()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


class Bundles:
    """Documents as the runtime leaves them, their bytes in the spool."""

    def __init__(self, ledger: Ledger, spool: Spool) -> None:
        self.ledger, self.spool = ledger, spool

    def received(self, name: str, *, source: str = "deliberations", pdf: bytes | None = None) -> DocumentRow:
        sidecar = self.spool.put_bytes(f'{{"numero": "{name}"}}'.encode())
        files = {f"{name}.pdf": self.spool.put_bytes(pdf or f"%PDF {name}".encode())}
        document, created = self.ledger.add_document(source=source, bundle=f"{name}.json",
                                                     idempotency_key=f"{source}:{name}",
                                                     sidecar_sha256=sidecar, files={f"{name}.json": sidecar, **files})
        assert created
        return document

    def failed(self, name: str, reason: str = "decision_date: '2024-05-02' does not match %d/%m/%Y", **kw: Any,
               ) -> DocumentRow:
        document = self.received(name, **kw)
        return self.ledger.transition_document(document.id, "FAILED", reason=reason)

    def routed(self, name: str, *, endpoints: tuple[str, ...] = ("prefecture",), archive: bytes | None = None,
               **kw: Any) -> tuple[DocumentRow, list[DeliveryRow]]:
        document = self.received(name, **kw)
        sha = self.spool.put_bytes(archive or f"archive of {name}".encode())
        return self.ledger.route_document(document.id, prepared={"route": "deliberations", "id_acte": f"ID-{name}"},
                                          deliveries=[{
                                              "route": "deliberations", "endpoint": endpoint,
                                              "artifact_name": f"{name}.tar.gz", "artifact_sha256": sha,
                                              "artifact_kind": "actes-archive", "client_key": f"client-{name}",
                                              "id_acte": f"ID-{name}", "envelope_name": f"ENV-{name}.xml",
                                          } for endpoint in endpoints])

    def delivered(self, name: str, **kw: Any) -> tuple[DocumentRow, list[DeliveryRow]]:
        document, deliveries = self.routed(name, **kw)
        return document, [self.ledger.transition_delivery(d.id, "DELIVERED", actor=d.endpoint) for d in deliveries]

    def dead_letter(self, name: str, **kw: Any) -> tuple[DocumentRow, DeliveryRow]:
        document, [delivery] = self.routed(name, **kw)
        self.ledger.bump_attempts(delivery.id)
        self.ledger.bump_attempts(delivery.id)
        failed = self.ledger.transition_delivery(delivery.id, "FAILED", actor="prefecture", attempts=3,
                                                 reason="gave up after 3 attempts: endpoint unavailable")
        return document, failed


@pytest.fixture
def bundles(ledger: Ledger, spool: Spool) -> Bundles:
    return Bundles(ledger, spool)


# -- dead letters -------------------------------------------------------------------------


def test_dead_letters_are_failed_documents_and_failed_deliveries_oldest_first(
        bundles: Bundles, ledger: Ledger, clock: Clock) -> None:
    # Given a document failed twice (dropped again after the first), a delivery given up, and others fine
    failed = bundles.failed("DEL_1")
    ledger.transition_document(failed.id, "RECEIVED", reason="dropped again")
    clock.advance(60)
    failed = ledger.transition_document(failed.id, "FAILED", reason="still wrong")
    clock.advance(60)
    document, delivery = bundles.dead_letter("DEL_2")
    bundles.delivered("DEL_3")
    bundles.received("DEL_4")
    # When
    letters = dead_letters(ledger)
    # Then
    assert [(d.kind, d.id, d.failures, d.reason) for d in letters] == [
        ("document", failed.id, 2, "still wrong"),
        ("delivery", delivery.id, 3, "gave up after 3 attempts: endpoint unavailable"),
    ]
    assert letters[1].to_dict() == {
        "id": delivery.id, "kind": "delivery", "document": document.id, "delivery": delivery.id,
        "source": "deliberations", "bundle": "DEL_2.json", "route": "deliberations", "endpoint": "prefecture",
        "state": "FAILED", "when": (T0 + timedelta(seconds=120)).isoformat(), "attempts": 3,
        "reason": "gave up after 3 attempts: endpoint unavailable",
    }
    assert letters[0].to_dict()["route"] is None and letters[0].when == T0 + timedelta(seconds=60)


def test_dead_letters_by_route_source_and_date(bundles: Bundles, ledger: Ledger, clock: Clock) -> None:
    unrouted = bundles.failed("DEL_1")
    other_source = bundles.failed("AR_1", source="rh")
    clock.advance(DAY)
    _, delivery = bundles.dead_letter("DEL_2")
    # a document not routed yet is of the routes that take from its source
    assert {d.id for d in dead_letters(ledger, route="deliberations", route_sources=["deliberations"])} == {
        unrouted.id, delivery.id}
    assert {d.id for d in dead_letters(ledger, route="deliberations")} == {delivery.id}
    assert {d.id for d in dead_letters(ledger, route="arretes", route_sources=["rh"])} == {other_source.id}
    assert {d.id for d in dead_letters(ledger, source="rh")} == {other_source.id}
    assert {d.id for d in dead_letters(ledger, since=T0 + timedelta(hours=1))} == {delivery.id}


# -- replay -------------------------------------------------------------------------------


def test_a_failed_document_goes_back_to_received_journaled_with_its_key(
        bundles: Bundles, ledger: Ledger, spool: Spool, clock: Clock) -> None:
    failed = bundles.failed("DEL_1")
    clock.advance(10)
    # When
    [replay], refused = find_replays(ledger, [failed.id, failed.id], spool=spool)
    done = apply_replay(ledger, replay, actor="alice", note="mapping corrected")
    # Then
    assert refused == [] and done.delivery is None
    row = ledger.get_document(failed.id)
    assert (row.state, row.idempotency_key, row.files) == ("RECEIVED", failed.idempotency_key, failed.files)
    assert (row.lease_owner, row.lease_until) == (None, None)
    last = ledger.entries(failed.id)[-1]
    assert (last.actor, last.from_state, last.to_state) == ("alice", "FAILED", "RECEIVED")
    assert last.reason == ("replayed by alice: mapping corrected (it had failed: decision_date: '2024-05-02' does "
                           "not match %d/%m/%Y)")
    # the sweeper of a running bus finds it once it has waited its grace
    assert ledger.expired_work(T0 + timedelta(seconds=100), grace=60) == ([failed.id], [])
    # and it cannot be replayed twice
    with pytest.raises(StaleState):
        apply_replay(ledger, replay)
    assert ledger.verify_journal() == []


def test_a_failed_delivery_goes_back_to_pending_with_its_attempts_reset_and_nothing_rebuilt(
        bundles: Bundles, ledger: Ledger, spool: Spool) -> None:
    document, failed = bundles.dead_letter("DEL_1")
    # When, by the delivery's id or by its document's
    by_document, _ = find_replays(ledger, [document.id], spool=spool)
    [replay], refused = find_replays(ledger, [failed.id], spool=spool)
    assert refused == [] and by_document == [replay]
    assert replay.describe() == (
        f"delivery {failed.id} (deliberations/DEL_1.json to prefecture): FAILED → PENDING, attempts reset; the same "
        "DEL_1.tar.gz (IDActe ID-DEL_1, client key client-DEL_1); the endpoint is asked before anything is sent twice")
    apply_replay(ledger, replay)
    # Then
    row = ledger.get_delivery(failed.id)
    assert (row.state, row.attempts, row.final_at, row.lease_owner) == ("PENDING", 0, None, None)
    assert (row.artifact_sha256, row.artifact_name, row.client_key, row.id_acte, row.envelope_name) == (
        failed.artifact_sha256, failed.artifact_name, failed.client_key, failed.id_acte, failed.envelope_name)
    last = ledger.entries(failed.id)[-1]
    assert (last.actor, last.from_state, last.to_state) == ("replay", "FAILED", "PENDING")
    assert ledger.get_document(document.id).state == "ROUTED"
    assert ledger.verify_journal() == []


def test_replay_refuses_what_is_no_dead_letter(bundles: Bundles, ledger: Ledger, spool: Spool) -> None:
    in_flight = bundles.received("DEL_1")
    delivered, [sent] = bundles.delivered("DEL_2")
    refused_act, [delivery] = bundles.routed("DEL_3")
    ledger.transition_delivery(delivery.id, "SENT", remote_id="T-3")
    rejected = ledger.transition_delivery(delivery.id, "REJECTED", reason="AnomalieActe: classification inconnue")
    # When
    replays, refused = find_replays(ledger, ["nope", in_flight.id, delivered.id, sent.id, refused_act.id,
                                             rejected.id], spool=spool)
    # Then
    assert replays == []
    rejection = (f"delivery {rejected.id} (deliberations/DEL_3.json to prefecture) was REJECTED by the platform "
                 "(AnomalieActe: classification inconnue): that is the platform's answer, not a dead letter, and it is "
                 "not replayed: correct the act and drop it again (it goes as a new attempt of the same act)")
    assert [str(problem) for problem in refused] == [
        "nope: no document or delivery has this id (run_bus.py failed lists the dead letters)",
        f"document {in_flight.id} (deliberations/DEL_1.json) is RECEIVED, not FAILED: it is still in the flow, "
        "nothing to replay",
        f"document {delivered.id} (deliberations/DEL_2.json) is ROUTED, not FAILED, and none of its deliveries "
        "failed (prefecture DELIVERED): nothing to replay",
        f"delivery {sent.id} (deliberations/DEL_2.json to prefecture) is DELIVERED, not FAILED: only a dead letter "
        "is replayed",
        rejection,
        rejection,
    ]
    assert [problem.entity for problem in refused] == ["document", "document", "document", "delivery", "delivery",
                                                       "delivery"]


def test_replay_refuses_a_dead_letter_whose_bytes_were_purged(bundles: Bundles, ledger: Ledger, spool: Spool,
                                                              clock: Clock) -> None:
    failed = bundles.failed("DEL_1")
    clock.advance(1)
    _, delivery = bundles.dead_letter("DEL_2")
    for sha in (failed.files["DEL_1.pdf"], delivery.artifact_sha256):
        assert sha is not None
        spool.path(sha).unlink()
    # When
    replays, refused = replays_of(dead_letters(ledger), spool=spool)
    # Then
    assert replays == []
    assert [str(problem) for problem in refused] == [
        f"document {failed.id} (deliberations/DEL_1.json): 1 of its files are no longer in the spool (purged): it "
        "cannot be prepared again; drop the bundle again instead (the software's copy, or the one in the source's "
        "error folder)",
        f"delivery {delivery.id} (deliberations/DEL_2.json to prefecture): its DEL_2.tar.gz is no longer in the spool "
        "(purged): it cannot be sent again as it was",
    ]
    # without a spool to look at, the ledger alone says they are dead letters
    assert len(replays_of(dead_letters(ledger))[0]) == 2


# -- purge --------------------------------------------------------------------------------


def test_purge_plans_the_blobs_of_documents_done_with_before_the_cutoff(
        bundles: Bundles, ledger: Ledger, clock: Clock) -> None:
    # Given, 30 days ago: an act delivered, one acknowledged then refused elsewhere, a failed document,
    # a document still in flight, a dead-letter delivery, an act whose archive a pending delivery shares
    delivered, [d1] = bundles.delivered("OLD_1")
    both, [ack, rej] = bundles.routed("OLD_2", endpoints=("prefecture", "archives"))
    for delivery, state in ((ack, "ACKNOWLEDGED"), (rej, "REJECTED")):
        ledger.transition_delivery(delivery.id, "SENT")
        ledger.transition_delivery(delivery.id, state)
    failed = bundles.failed("OLD_3")
    in_flight = bundles.received("OLD_4")
    dead, _ = bundles.dead_letter("OLD_5")
    shares, [shared] = bundles.delivered("OLD_6", archive=b"the same archive")
    pending, _ = bundles.routed("OLD_7", archive=b"the same archive", pdf=b"%PDF OLD_7")
    clock.advance(30 * DAY)
    recent, _ = bundles.delivered("NEW_1")
    # When
    plan = plan_purge(ledger, clock.now - timedelta(days=7))
    # Then
    assert sorted(plan.documents) == sorted([delivered.id, both.id, failed.id, shares.id])
    assert plan.kept == {KEPT_NOT_FINAL: 2, KEPT_DEAD_LETTER: 1, KEPT_RECENT: 1}
    names = {delivered.sidecar_sha256, *delivered.files.values(), d1.artifact_sha256,
             both.sidecar_sha256, *both.files.values(), ack.artifact_sha256,
             failed.sidecar_sha256, *failed.files.values(),
             shares.sidecar_sha256, *shares.files.values()}
    assert set(plan.blobs) == names
    assert plan.shared == {shared.artifact_sha256: {shares.id}}
    assert not {in_flight.sidecar_sha256, dead.sidecar_sha256, pending.sidecar_sha256} & set(plan.blobs)
    assert set(plan_purge(ledger, clock.now - timedelta(days=60)).blobs) == set()


def test_purge_keeps_what_a_letter_an_answer_or_a_plan_still_reads(
        bundles: Bundles, ledger: Ledger, spool: Spool, clock: Clock) -> None:
    # Given an acknowledged act with a letter of the préfecture nobody answered
    act, [delivery] = bundles.routed("ACT_1")
    ledger.transition_delivery(delivery.id, "SENT")
    ledger.transition_delivery(delivery.id, "ACKNOWLEDGED")
    letter = spool.put_bytes(b"<CourrierSimple/> 2-1")
    ledger.add_message(delivery.id, message_id="m-1", code="2-1", name="letter-2-1.xml", sha256=letter)
    # and an act whose letter was answered (the answer reads the letter when it is prepared)
    answered, [other] = bundles.routed("ACT_2")
    ledger.transition_delivery(other.id, "SENT")
    ledger.transition_delivery(other.id, "ACKNOWLEDGED")
    other_letter = spool.put_bytes(b"<LettreObservations/> 3-1")
    ledger.add_message(other.id, message_id="m-2", code="3-1", name="letter-3-1.xml", sha256=other_letter)
    # and a document prepared by an older worker: its planned archive is named only in the canonical column
    planned = bundles.received("PLAN_1")
    archive = spool.put_bytes(b"planned archive")
    ledger.transition_document(planned.id, "PREPARED", canonical={"deliveries": [{"artifact_sha256": archive}]})
    # and a classification received from the platform
    classification = spool.put_bytes(b"<RetourClassification/>")
    ledger.add_classification("214400152", date_text="2024-01-15", name="7-2.xml", sha256=classification)
    clock.advance(30 * DAY)
    answer, _ = bundles.delivered("REP_1")
    ledger.add_response(other.id, "m-2", answer.id, "3-4")
    # When
    plan = plan_purge(ledger, clock.now - timedelta(days=7))
    # Then the act with an open letter is kept, the answered one goes but not the letter its answer reads
    assert plan.documents == [answered.id]
    assert plan.kept == {KEPT_LETTER: 1, KEPT_NOT_FINAL: 1, KEPT_RECENT: 1}
    assert plan.shared == {other_letter: {answered.id}}
    assert not {letter, archive, classification} & set(plan.blobs)


def test_purge_spool_removes_the_plan_and_a_dry_run_nothing(bundles: Bundles, ledger: Ledger, spool: Spool,
                                                            clock: Clock) -> None:
    document, [delivery] = bundles.delivered("OLD_1")
    unnamed = spool.put_bytes(b"written by a bus, not recorded yet")
    clock.advance(30 * DAY)
    plan = plan_purge(ledger, clock.now - timedelta(days=7))
    names = set(plan.blobs)
    assert len(names) == 3
    # When, as a dry run
    dry = purge_spool(ledger, spool, plan, dry_run=True)
    # Then nothing is removed, but the sizes are told
    assert set(dry.removed) == names and dry.size == sum(spool.path(sha).stat().st_size for sha in names)
    assert all(sha in spool for sha in names)
    # When for real
    result = purge_spool(ledger, spool, plan)
    assert set(result.removed) == names and result.size == dry.size and result.restored == []
    assert not any(sha in spool for sha in names)
    assert unnamed in spool and list((spool.root / "tmp").iterdir()) == []
    # the rows and the journal are untouched
    assert ledger.get_delivery(delivery.id).state == "DELIVERED" and ledger.verify_journal() == []
    # and again: the blobs are gone already
    assert purge_spool(ledger, spool, plan).absent == sorted(names)


def test_purge_spool_puts_back_a_blob_a_new_document_took_meanwhile(bundles: Bundles, ledger: Ledger,
                                                                   spool: Spool, clock: Clock) -> None:
    old = bundles.failed("OLD_1", pdf=b"%PDF the same annex")
    clock.advance(30 * DAY)
    plan = plan_purge(ledger, clock.now - timedelta(days=7))
    shared = old.files["OLD_1.pdf"]
    assert shared in plan.blobs
    # When, between the plan and the purge, a new bundle brings the same bytes (content-addressed: one blob)
    bundles.received("NEW_1", pdf=b"%PDF the same annex")
    result = purge_spool(ledger, spool, plan)
    # Then that blob is kept, the others go
    assert result.restored == [shared] and shared not in result.removed
    assert spool.verify(shared)
    assert old.sidecar_sha256 in result.removed and old.sidecar_sha256 not in spool


def _stored_at(spool: Spool, sha256: str, when: datetime) -> None:
    os.utime(spool.path(sha256), (when.timestamp(), when.timestamp()))


def test_purge_removes_the_blobs_nothing_names_stored_before_the_cutoff(
        bundles: Bundles, ledger: Ledger, spool: Spool, clock: Clock) -> None:
    # Given, 30 days ago, the blobs of a bundle refused while it was copied (named by no document)
    left = [spool.put_bytes(b"%PDF refused"), spool.put_bytes(b'{"numero": "REFUSED"}')]
    # and a document still in flight whose blobs were stored as long ago
    in_flight = bundles.received("OLD_1")
    for sha256 in (*left, *in_flight.files.values()):
        _stored_at(spool, sha256, clock.now)
    clock.advance(30 * DAY)
    # and a blob a running bus has just stored, not recorded yet
    fresh = spool.put_bytes(b"copied a moment ago")
    _stored_at(spool, fresh, clock.now)
    cutoff = clock.now - timedelta(days=7)
    # When the purge plans with the spool
    plan = plan_purge(ledger, cutoff, spool)
    # Then only the old blobs nothing names are planned, apart from the documents' blobs
    assert plan.orphans == set(left) and plan.blobs == {}
    assert plan_purge(ledger, cutoff).orphans == set()  # without the spool: only what the ledger names
    # (one stored less than ORPHAN_MIN_AGE ago is never planned, whatever the cutoff)
    everything = datetime.now(UTC) + timedelta(days=1)
    assert plan_purge(ledger, everything, spool).orphans == {*left, fresh}
    stored = spool.path(left[0]).stat().st_mtime_ns
    _stored_at(spool, left[0], datetime.now(UTC) - timedelta(seconds=ORPHAN_MIN_AGE - 60))
    assert plan_purge(ledger, everything, spool).orphans == {left[1], fresh}
    os.utime(spool.path(left[0]), ns=(stored, stored))  # as the plan saw it
    # and the purge removes them, nothing else
    assert purge_spool(ledger, spool, plan, dry_run=True).removed.keys() == set(left)
    result = purge_spool(ledger, spool, plan)
    assert result.removed.keys() == set(left) and result.restored == []
    assert not any(sha in spool for sha in left)
    assert fresh in spool and all(sha in spool for sha in in_flight.files.values())
    assert list((spool.root / "tmp").iterdir()) == []


def test_purge_keeps_a_blob_nothing_named_that_is_stored_or_named_again_meanwhile(
        bundles: Bundles, ledger: Ledger, spool: Spool, clock: Clock) -> None:
    # Given two old blobs nothing names, planned for removal
    again, named = spool.put_bytes(b"%PDF stored again"), spool.put_bytes(b"%PDF named again")
    for sha256 in (again, named):
        _stored_at(spool, sha256, clock.now)
    clock.advance(30 * DAY)
    plan = plan_purge(ledger, clock.now - timedelta(days=7), spool)
    assert plan.orphans == {again, named}
    # When, before the purge, a running bus stores the same bytes as one (its record still to come)
    assert spool.put_bytes(b"%PDF stored again") == again
    # and records a document with the other's bytes
    bundles.received("NEW_1", pdf=b"%PDF named again")
    result = purge_spool(ledger, spool, plan)
    # Then both are kept
    assert result.removed == {} and sorted(result.restored) == sorted([again, named])
    assert spool.verify(again) and spool.verify(named)


def test_purge_folder_removes_the_files_unchanged_since_the_cutoff(tmp_path: Path) -> None:
    done = tmp_path / "done"
    (done / "sub").mkdir(parents=True)
    for name in ("a.json", "a.pdf", ".hidden", "sub/b.json"):
        (done / name).write_bytes(b"x" * 10)
    now = time.time()
    # a cutoff before the files changed keeps them all
    assert purge_folder(done, now - 3600) == {}
    # a dry run says what would go
    assert purge_folder(done, now + 60, dry_run=True) == {done / "a.json": 10, done / "a.pdf": 10}
    assert (done / "a.json").exists()
    # the purge removes the plain files only
    assert purge_folder(done, now + 60) == {done / "a.json": 10, done / "a.pdf": 10}
    assert sorted(p.name for p in done.iterdir()) == [".hidden", "sub"] and (done / "sub" / "b.json").exists()
    assert purge_folder(tmp_path / "absent", now) == {}
