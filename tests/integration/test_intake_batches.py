"""How a poll records the bundles it takes in: in batches (one ledger transaction for up to
``INTAKE_BATCH`` bundles), a batch never held back long (``INTAKE_BATCH_SECONDS``), every bundle
recorded and published once; a batch the ledger cannot take goes back to the drop folder whole, and
what was copied before the poll stopped is recorded all the same."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from bus import runtime as runtime_module
from bus.config import load_config
from bus.connector import Candidate, Claimed
from bus.errors import ConfigError, TransientError
from bus.ledger import Ledger, NewDocument
from bus.runtime import INTAKE_BATCH, Runtime
from bus.spool import Spool
from connectors.folder_inbound import FolderInbound
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from tests.harness import write_config

pytestmark = pytest.mark.integration

SOURCE = "deliberations"


def _drop(workspace: Path, count: int) -> list[str]:
    drop = workspace / "drop" / SOURCE
    for n in range(count):
        drop_deliberation(drop, f"DEL2026_{n:03d}", decision=date.today() - timedelta(days=1), annexes=0)
    return [f"DEL2026_{n:03d}.json" for n in range(count)]


class Watch:
    """The ledger's batches (their sizes, when each was recorded), what was published and when, and
    when each claim began."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        self.recorded_at: list[float] = []
        self.published: list[tuple[str, str, float]] = []
        self.claims: list[float] = []
        add_documents, publish, claim = Ledger.add_documents, Runtime._publish_many, FolderInbound.claim

        def watched_add(ledger: Ledger, documents: list[NewDocument], **kwargs: Any) -> Any:
            added = add_documents(ledger, documents, **kwargs)
            self.batches.append(len(documents))
            self.recorded_at.append(time.monotonic())
            return added

        def watched_publish(runtime: Runtime, queue: str, entity_ids: list[str]) -> None:
            publish(runtime, queue, entity_ids)
            self.published.extend((queue, entity_id, time.monotonic()) for entity_id in entity_ids)

        def watched_claim(connector: FolderInbound, candidate: Candidate) -> Claimed | None:
            self.claims.append(time.monotonic())
            return claim(connector, candidate)

        monkeypatch.setattr(Ledger, "add_documents", watched_add)
        monkeypatch.setattr(Runtime, "_publish_many", watched_publish)
        monkeypatch.setattr(FolderInbound, "claim", watched_claim)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    bus = Runtime(load_config(write_config(tmp_path)), Pipeline.for_runtime, serve_http=False)
    try:
        yield bus
    finally:
        bus.shutdown()


def _work_folder_empty(workspace: Path) -> bool:
    work = workspace / "drop" / SOURCE / ".hent-work"
    return not work.exists() or not any(work.iterdir())


def test_a_poll_records_its_bundles_in_batches_each_once(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a burst: more bundles in the drop folder than the batches up to a full one hold (each batch
    # cut by its size alone here, however slow the machine)
    sizes = [1]  # 1, 2, 4... up to INTAKE_BATCH
    while sizes[-1] < INTAKE_BATCH:
        sizes.append(min(2 * sizes[-1], INTAKE_BATCH))
    bundles = _drop(tmp_path, sum(sizes) + 4)
    watch = Watch(monkeypatch)
    monkeypatch.setattr(runtime_module, "INTAKE_BATCH_SECONDS", 60.0)

    # When the bus polls the folder once
    taken = runtime.poll(SOURCE)

    # Then it took them all, recorded in few ledger transactions: the first bundle alone (the workers
    # start at once), each next batch twice as big up to a full one, then the rest
    assert taken == len(bundles)
    assert watch.batches == [*sizes, 4]
    documents = runtime.ledger.documents()
    assert sorted(d.bundle for d in documents) == bundles
    assert {d.state.value for d in documents} == {"RECEIVED"}
    # and published each document once, for the workers
    assert sorted(entity for _, entity, _ in watch.published) == sorted(d.id for d in documents)
    assert {queue for queue, _, _ in watch.published} == {runtime_module.DOCUMENTS}
    # and each batch was published before the next was recorded
    ids = {d.bundle: d.id for d in documents}
    published_at = {entity: at for _, entity, at in watch.published}
    end = 0
    for size, next_recorded in zip(sizes, watch.recorded_at[1:], strict=True):
        batch, end = bundles[end:end + size], end + size
        assert max(published_at[ids[bundle]] for bundle in batch) < next_recorded


def test_a_batch_is_not_held_back_waiting_for_a_slow_source(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given four bundles whose claims each take longer than a batch may wait (a slow disk, say)
    _drop(tmp_path, 4)
    watch = Watch(monkeypatch)
    claim = FolderInbound.claim

    def slow(connector: FolderInbound, candidate: Candidate) -> Claimed | None:
        time.sleep(runtime_module.INTAKE_BATCH_SECONDS * 1.5)
        return claim(connector, candidate)

    monkeypatch.setattr(FolderInbound, "claim", slow)

    # When the bus polls the folder once
    assert runtime.poll(SOURCE) == 4

    # Then the bundles were recorded in several batches, not all at the end: the first was published
    # before the third one's claim began
    assert len(watch.batches) >= 2 and sum(watch.batches) == 4
    [first] = [d for d in runtime.ledger.documents() if d.bundle == "DEL2026_000.json"]
    published_first = next(at for _, entity, at in watch.published if entity == first.id)
    assert published_first < watch.claims[2]


def test_a_batch_the_ledger_cannot_take_goes_back_to_the_drop_folder_and_is_taken_later(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five bundles, and a ledger that cannot take their batch now
    bundles = _drop(tmp_path, 5)
    add_documents = Ledger.add_documents

    def unavailable(*_: Any, **__: Any) -> Any:
        raise TransientError("ledger unavailable or busy: connection refused; retry later")

    monkeypatch.setattr(Ledger, "add_documents", unavailable)

    # When the bus polls the folder
    assert runtime.poll(SOURCE) == 0

    # Then nothing is recorded, and every bundle is back where it was dropped, whole, nothing left claimed
    assert runtime.ledger.documents() == []
    drop = tmp_path / "drop" / SOURCE
    assert sorted(p.name for p in drop.glob("*.json")) == bundles
    assert all((drop / name.replace(".json", ".pdf")).is_file() for name in bundles)
    assert _work_folder_empty(tmp_path)

    # And once the ledger is back, the next poll takes them all, each once
    monkeypatch.setattr(Ledger, "add_documents", add_documents)
    assert runtime.poll(SOURCE) == 5
    assert sorted(d.bundle for d in runtime.ledger.documents()) == bundles


def test_what_was_copied_before_a_poll_stopped_is_recorded(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given five bundles, the third of which breaks the claim with an error nobody expected
    bundles = _drop(tmp_path, 5)
    watch = Watch(monkeypatch)
    claim = FolderInbound.claim

    def breaking(connector: FolderInbound, candidate: Candidate) -> Claimed | None:
        if candidate.key == bundles[2]:
            raise RuntimeError("a bug in a claim")
        return claim(connector, candidate)

    monkeypatch.setattr(FolderInbound, "claim", breaking)

    # When the bus polls the folder, and the poll stops on that error
    with pytest.raises(RuntimeError, match="a bug in a claim"):
        runtime.poll(SOURCE)

    # Then the two bundles copied before it are recorded and published all the same, not left claimed
    documents = runtime.ledger.documents()
    assert sorted(d.bundle for d in documents) == bundles[:2]
    assert sorted(entity for _, entity, _ in watch.published) == sorted(d.id for d in documents)
    # and the others are still where they were dropped
    drop = tmp_path / "drop" / SOURCE
    assert sorted(p.name for p in drop.glob("*.json")) == bundles[2:]


def test_a_bundle_whose_tag_fails_does_not_hold_back_the_others_of_its_batch(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three bundles, the second of which cannot be tagged once recorded (its work folder moved to
    # another file system, say)
    bundles = _drop(tmp_path, 3)
    watch = Watch(monkeypatch)
    tag = FolderInbound.tag

    def failing(connector: FolderInbound, claimed: Claimed, ref: str) -> Claimed:
        if claimed.key == bundles[1]:
            raise ConfigError("connector 'deliberations': the work folder must be on one file system")
        return tag(connector, claimed, ref)

    monkeypatch.setattr(FolderInbound, "tag", failing)

    # When the bus polls the folder once
    with caplog.at_level(logging.ERROR, logger="bus.runtime"):
        taken = runtime.poll(SOURCE)

    # Then the two others are taken in and published, the third in the same batch as the second
    assert taken == 2 and watch.batches == [1, 2]
    documents = {d.bundle: d for d in runtime.ledger.documents()}
    assert sorted(entity for _, entity, _ in watch.published) == sorted(
        documents[name].id for name in (bundles[0], bundles[2]))
    # and the error names the bundle left claimed, and its document
    [error] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith(f"{bundles[1]} from {SOURCE} recorded as document {documents[bundles[1]].id}, "
                            "not taken in further: ")
    assert "taken again when the bus starts next" in error


def test_a_batch_is_made_durable_in_the_spool_at_once_before_the_ledger_names_it(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three bundles (a sidecar and a PDF each), and the order of the spool's syncs and the ledger's records
    _drop(tmp_path, 3)
    events: list[tuple[str, Any]] = []
    sync_many, add_documents = Spool.sync_many, Ledger.add_documents

    def watched_sync(spool: Spool, sha256s: Any) -> None:
        blobs = list(sha256s)
        sync_many(spool, blobs)
        events.append(("durable", blobs))

    def watched_add(ledger: Ledger, documents: list[NewDocument], **kwargs: Any) -> Any:
        events.append(("recorded", [sha for document in documents for sha in document.files.values()]))
        return add_documents(ledger, documents, **kwargs)

    monkeypatch.setattr(Spool, "sync_many", watched_sync)
    monkeypatch.setattr(Ledger, "add_documents", watched_add)
    monkeypatch.setattr(runtime_module, "INTAKE_BATCH_SECONDS", 60.0)

    # When the bus polls the folder once
    assert runtime.poll(SOURCE) == 3

    # Then each batch's blobs (1 bundle, then 2) were made durable in one call, right before the ledger
    # recorded the documents naming them
    assert [kind for kind, _ in events] == ["durable", "recorded", "durable", "recorded"]
    for (_, durable), (_, recorded) in zip(events[::2], events[1::2], strict=True):
        assert sorted(set(durable)) == sorted(set(recorded))
    assert [len(blobs) for kind, blobs in events if kind == "durable"] == [2, 4]


def test_a_batch_the_spool_cannot_make_durable_goes_back_to_the_drop_folder(
    tmp_path: Path, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two bundles, and a spool whose file system reports a write error when the batch is synced
    bundles = _drop(tmp_path, 2)

    def failing(spool: Spool, _sha256s: Any) -> None:
        raise TransientError("the spool cannot store 2 blob(s) being made durable (Input/output error)",
                             path=str(spool.root), rule="spool-write")

    monkeypatch.setattr(Spool, "sync_many", failing)
    monkeypatch.setattr(runtime_module, "INTAKE_BATCH_SECONDS", 60.0)

    # When the bus polls the folder
    assert runtime.poll(SOURCE) == 0

    # Then nothing is recorded, and the bundles are back where they were dropped, to be taken later
    assert runtime.ledger.documents() == []
    drop = tmp_path / "drop" / SOURCE
    assert sorted(p.name for p in drop.glob("*.json")) == bundles
    assert _work_folder_empty(tmp_path)
