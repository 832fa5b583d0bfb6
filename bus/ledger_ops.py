"""Dead letters, replay and purge: what an operator does with the ledger (``run_bus.py failed``,
``replay``, ``purge``).

A *dead letter* is a document that FAILED (its preparation failed: the mapping, a rule, a file)
or a delivery that FAILED (the endpoint refused it, or the bus gave up after its retries).

*Replay* puts one back into the flow, through the ledger's journaled transitions (compare-and-set
on FAILED, so two operators cannot replay the same row twice):

- a FAILED document goes back to RECEIVED, the same row with the same idempotency key: its
  sidecar and files are still in the spool, and the bus prepares them again with the mappings
  and configuration it read at its start (restart it after correcting a mapping);
- a FAILED delivery goes back to PENDING with its attempts reset: the same artifact, byte for
  byte (nothing is rebuilt: the archive, its envelope, the expected IDActe and the client key
  stay), sent by the runtime's ordinary send path, which does not send an act twice to an
  endpoint that may hold it already: the SOAP legality and procurement endpoints find a
  submission by its client key after a "duplicate" or an unknown outcome and follow it; S2LOW
  refuses a number it holds and the act is looked up and followed; Pastell looks the act up
  before creating anything and resumes a draft; an SFTP or folder endpoint counts a file already
  there with the same size (SFTP) or the same bytes (folder) as sent, and never overwrites
  another.  Only the ``memory`` test double sends again.

Neither a document still in the flow nor a delivery the platform REJECTED is replayed: a
rejection is the platform's answer, not a dead letter (the act is corrected and dropped again,
and goes as a new attempt of the same act).  A dead letter whose bytes were purged from the
spool is refused too: its bundle is dropped again instead.  Nothing is published on the
backbone: a row put back with no lease is re-published by the sweeper of a running bus (once
``bus.lease`` has passed) or at the next start — a message published here as well would meet
that re-publication, and two messages for one delivery in one worker may both send it.

*Purge* removes spool blobs that only documents done with for longer than a duration reference
— ROUTED with every delivery ACKNOWLEDGED, REJECTED or DELIVERED, or FAILED (a FAILED document's
bundle can be dropped again) — never one that another row still names: a document not final, a
delivery PENDING, SENT or FAILED (a dead letter waits for its replay), a letter of the préfecture
not answered yet (its answer reads it), a classification, or a journal event of anything else.
Every column that holds a sha256 is read: ``documents.sidecar_sha256``, ``documents.files``,
``documents.canonical`` (planned artifacts, files by sha256), ``deliveries.artifact_sha256``,
``messages.sha256``, ``classifications.sha256``, ``journal.payload_sha256``.  Blobs are moved
aside, the references read again (a running bus may have taken the same bytes meanwhile: the
spool is content-addressed; storing the same bytes again also refreshes a blob's modification
time, and a blob stored again since the plan read it is kept), and only then deleted.  Blobs the ledger
does not name at all — a bundle refused while it was copied, or a bus stopped between the copy and
the record, leaves its files' blobs behind — go too once stored before the cutoff and at least
``ORPHAN_MIN_AGE`` ago, whatever the cutoff (a running bus records what it copies within moments; a
bus restarted takes a bundle it had claimed in again, and stores its files anew).  Ledger rows and
the journal are never touched.
"""

from __future__ import annotations

__all__ = [
    "DeadLetter",
    "Replay",
    "ReplayRefused",
    "PurgePlan",
    "PurgedBlobs",
    "PURGEABLE_DELIVERY_STATES",
    "KEPT_NOT_FINAL",
    "KEPT_DEAD_LETTER",
    "KEPT_RECENT",
    "KEPT_LETTER",
    "KEPT_REASONS",
    "ORPHAN_MIN_AGE",
    "dead_letters",
    "find_replays",
    "replays_of",
    "apply_replay",
    "plan_purge",
    "purge_spool",
    "purge_folder",
]

import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select

from bus.answers import open_letters
from bus.connector import CANONICAL, CANONICAL_RESPONSE
from bus.journal import journal_table
from bus.ledger import (
    DeliveryRow,
    DeliveryState,
    DocumentRow,
    DocumentState,
    Ledger,
    LedgerError,
    UnknownEntity,
)
from bus.ledger_schema import (
    _delivery,
    _document,
    classifications_table,
    deliveries_table,
    documents_table,
    messages_table,
    responses_table,
)
from bus.spool import Spool

_D, _V = DocumentState, DeliveryState
#: a ROUTED document whose deliveries are all in these states is done with (FAILED is not: a dead letter)
PURGEABLE_DELIVERY_STATES = frozenset({_V.ACKNOWLEDGED, _V.REJECTED, _V.DELIVERED})
_SHA256 = re.compile(r"\b[0-9a-f]{64}\b")
_BATCH = 500  #: ids per IN (...) list


# -- dead letters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A FAILED document (``delivery`` None) or a FAILED delivery of a routed document."""

    document: DocumentRow
    delivery: DeliveryRow | None = None
    failures: int = 1  #: a document: how many times it failed (journal); a delivery: its attempts

    @property
    def kind(self) -> str:
        return "document" if self.delivery is None else "delivery"

    @property
    def id(self) -> str:
        """What ``replay`` takes."""
        return self.document.id if self.delivery is None else self.delivery.id

    @property
    def route(self) -> str | None:
        return self.document.route if self.delivery is None else self.delivery.route

    @property
    def endpoint(self) -> str | None:
        return None if self.delivery is None else self.delivery.endpoint

    @property
    def when(self) -> datetime:
        """When it failed."""
        if self.delivery is None:
            return self.document.updated_at
        return self.delivery.final_at or self.delivery.updated_at

    @property
    def reason(self) -> str:
        return (self.document.reason if self.delivery is None else self.delivery.reason) or ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "document": self.document.id,
            "delivery": None if self.delivery is None else self.delivery.id, "source": self.document.source,
            "bundle": self.document.bundle, "route": self.route, "endpoint": self.endpoint, "state": "FAILED",
            "when": self.when.isoformat(), "attempts": self.failures, "reason": self.reason,
        }


def dead_letters(
    ledger: Ledger, *, route: str | None = None, route_sources: Collection[str] = (), source: str | None = None,
    since: datetime | None = None,
) -> list[DeadLetter]:
    """FAILED documents and FAILED deliveries, oldest failure first.

    ``route``: a document that failed before it was routed has no route yet: it is of ``route``
    when its source is one of ``route_sources`` (the sources the route takes from).
    """
    documents, deliveries = documents_table, deliveries_table
    doc_query = select(documents).where(documents.c.state == _D.FAILED.value)
    delivery_query = (select(deliveries).join(documents, documents.c.id == deliveries.c.document_id)
                      .where(deliveries.c.state == _V.FAILED.value))
    if route is not None:
        doc_query = doc_query.where(or_(documents.c.route == route,
                                        and_(documents.c.route.is_(None), documents.c.source.in_(route_sources))))
        delivery_query = delivery_query.where(deliveries.c.route == route)
    if source is not None:
        doc_query = doc_query.where(documents.c.source == source)
        delivery_query = delivery_query.where(documents.c.source == source)
    if since is not None:
        doc_query = doc_query.where(documents.c.updated_at >= since)
        delivery_query = delivery_query.where(deliveries.c.updated_at >= since)
    with ledger._read() as conn:
        failed_documents = [_document(row) for row in conn.execute(doc_query)]
        failures = _failures(conn, [d.id for d in failed_documents])
        failed_deliveries = [_delivery(row) for row in conn.execute(delivery_query)]
        parents = _documents_by_id(conn, [d.document_id for d in failed_deliveries])
    found = [DeadLetter(d, None, failures.get(d.id, 1)) for d in failed_documents]
    found += [DeadLetter(parents[d.document_id], d, d.attempts) for d in failed_deliveries]
    return sorted(found, key=lambda letter: (letter.when, letter.id))


def _documents_by_id(conn: Any, document_ids: list[str]) -> dict[str, DocumentRow]:
    ids = sorted(set(document_ids))
    found: dict[str, DocumentRow] = {}
    for start in range(0, len(ids), _BATCH):
        query = select(documents_table).where(documents_table.c.id.in_(ids[start:start + _BATCH]))
        found.update({row.id: _document(row) for row in conn.execute(query)})
    return found


def _failures(conn: Any, document_ids: list[str]) -> dict[str, int]:
    """How many times each document went to FAILED, by its journal."""
    counts: dict[str, int] = {}
    for start in range(0, len(document_ids), _BATCH):
        query = (select(journal_table.c.entity_id, func.count())
                 .where(journal_table.c.entity_id.in_(document_ids[start:start + _BATCH]),
                        journal_table.c.entity == "document", journal_table.c.to_state == _D.FAILED.value)
                 .group_by(journal_table.c.entity_id))
        counts.update({entity_id: int(n) for entity_id, n in conn.execute(query)})
    return counts


# -- replay ---------------------------------------------------------------------------------


class ReplayRefused(LedgerError):
    """This id is not a dead letter that can go back into the flow; the message says why and what to do."""


@dataclass(frozen=True)
class Replay:
    """A dead letter to put back: a FAILED document (→ RECEIVED) or a FAILED delivery (→ PENDING)."""

    document: DocumentRow
    delivery: DeliveryRow | None = None

    @property
    def kind(self) -> str:
        return "document" if self.delivery is None else "delivery"

    @property
    def id(self) -> str:
        return self.document.id if self.delivery is None else self.delivery.id

    def describe(self) -> str:
        """One line: what goes back and what happens to it next."""
        document = self.document
        where = f"{document.source}/{document.bundle}"
        if self.delivery is None:
            return (f"document {document.id} ({where}): FAILED → RECEIVED; prepared again by the bus with the "
                    "mappings and configuration it read at its start")
        delivery = self.delivery
        reached = f"; it reached the endpoint before (remote id {delivery.remote_id})" if delivery.remote_id else ""
        return (f"delivery {delivery.id} ({where} to {delivery.endpoint}): FAILED → PENDING, attempts reset; the same "
                f"{delivery.artifact_name or 'artifact'} (IDActe {delivery.id_acte or '-'}, client key "
                f"{delivery.client_key or '-'}){reached}; the endpoint is asked before anything is sent twice")


def find_replays(ledger: Ledger, ids: Iterable[str], *, spool: Spool | None = None,
                 ) -> tuple[list[Replay], list[ReplayRefused]]:
    """What replaying each id (a document's or a delivery's) would put back, and what is refused.

    A ROUTED document's id stands for its FAILED deliveries.  With ``spool``, a dead letter
    whose bytes are no longer there is refused.
    """
    replays: list[Replay] = []
    refused: list[ReplayRefused] = []
    for entity_id in dict.fromkeys(ids):
        try:
            found = _replays_for(ledger, entity_id)
        except ReplayRefused as problem:
            refused.append(problem)
            continue
        for replay in found:
            try:
                _check_blobs(replay, spool)
            except ReplayRefused as problem:
                refused.append(problem)
            else:
                replays.append(replay)
    return replays, refused


def replays_of(letters: Iterable[DeadLetter], *, spool: Spool | None = None,
               ) -> tuple[list[Replay], list[ReplayRefused]]:
    """The replays of dead letters listed by :func:`dead_letters` (``--route``, ``--all-failed``)."""
    replays: list[Replay] = []
    refused: list[ReplayRefused] = []
    for letter in letters:
        replay = Replay(letter.document, letter.delivery)
        try:
            _check_blobs(replay, spool)
        except ReplayRefused as problem:
            refused.append(problem)
        else:
            replays.append(replay)
    return replays, refused


def _replays_for(ledger: Ledger, entity_id: str) -> list[Replay]:
    try:
        document = ledger.get_document(entity_id)
    except UnknownEntity:
        try:
            delivery = ledger.get_delivery(entity_id)
        except UnknownEntity:
            raise ReplayRefused(f"{entity_id}: no document or delivery has this id (run_bus.py failed lists the "
                                "dead letters)", entity="document", entity_id=entity_id) from None
        return [_delivery_replay(ledger.get_document(delivery.document_id), delivery)]
    if document.state == _D.FAILED:
        return [Replay(document)]
    where = f"document {document.id} ({document.source}/{document.bundle})"
    if document.state != _D.ROUTED:
        raise ReplayRefused(f"{where} is {document.state}, not FAILED: it is still in the flow, nothing to replay",
                            entity="document", entity_id=document.id)
    deliveries = ledger.deliveries_of(document.id)
    failed = [d for d in deliveries if d.state == _V.FAILED]
    if failed:
        return [Replay(document, d) for d in failed]
    rejected = [d for d in deliveries if d.state == _V.REJECTED]
    if rejected:
        raise _rejected(document, rejected[0])
    states = ", ".join(f"{d.endpoint} {d.state}" for d in deliveries) or "no delivery"
    raise ReplayRefused(f"{where} is ROUTED, not FAILED, and none of its deliveries failed ({states}): "
                        "nothing to replay", entity="document", entity_id=document.id)


def _delivery_replay(document: DocumentRow, delivery: DeliveryRow) -> Replay:
    if delivery.state == _V.FAILED:
        return Replay(document, delivery)
    if delivery.state == _V.REJECTED:
        raise _rejected(document, delivery)
    raise ReplayRefused(
        f"delivery {delivery.id} ({document.source}/{document.bundle} to {delivery.endpoint}) is {delivery.state}, "
        "not FAILED: only a dead letter is replayed", entity="delivery", entity_id=delivery.id)


def _rejected(document: DocumentRow, delivery: DeliveryRow) -> ReplayRefused:
    return ReplayRefused(
        f"delivery {delivery.id} ({document.source}/{document.bundle} to {delivery.endpoint}) was REJECTED by the "
        f"platform ({delivery.reason or 'no reason given'}): that is the platform's answer, not a dead letter, and "
        "it is not replayed: correct the act and drop it again (it goes as a new attempt of the same act)",
        entity="delivery", entity_id=delivery.id)


def _check_blobs(replay: Replay, spool: Spool | None) -> None:
    """Refuse a replay whose bytes the spool no longer holds (purged)."""
    if spool is None:
        return
    document, delivery = replay.document, replay.delivery
    needed = [document.sidecar_sha256, *document.files.values()]
    if delivery is not None:
        needed = [delivery.artifact_sha256 or ""]
        if delivery.artifact_kind in (CANONICAL, CANONICAL_RESPONSE):  # it names the document's files
            needed += list(document.files.values())
    missing = [sha for sha in needed if sha not in spool]
    if not missing:
        return
    where = f"{document.source}/{document.bundle}"
    if delivery is None:
        raise ReplayRefused(
            f"document {document.id} ({where}): {len(missing)} of its files are no longer in the spool (purged): "
            "it cannot be prepared again; drop the bundle again instead (the software's copy, or the one in the "
            "source's error folder)", entity="document", entity_id=document.id)
    raise ReplayRefused(
        f"delivery {delivery.id} ({where} to {delivery.endpoint}): its {delivery.artifact_name or 'artifact'} is "
        "no longer in the spool (purged): it cannot be sent again as it was", entity="delivery",
        entity_id=delivery.id)


def apply_replay(ledger: Ledger, replay: Replay, *, actor: str = "replay", note: str | None = None) -> Replay:
    """Put ``replay`` back into the flow, journaled as ``actor`` with the reason; the rows as they are now.

    Raises :class:`bus.ledger.StaleState` when the row is no longer FAILED (replayed meanwhile).
    """
    document, delivery = replay.document, replay.delivery
    before = (document.reason if delivery is None else delivery.reason) or "no reason recorded"
    reason = f"replayed by {actor}" + (f": {note}" if note else "") + f" (it had failed: {before.splitlines()[0]})"
    if delivery is None:
        document = ledger.transition_document(document.id, _D.RECEIVED, actor=actor, reason=reason, expect=_D.FAILED)
        if document.lease_owner:  # left by a worker that died: nobody works on a FAILED row
            ledger.release_lease("document", document.id, document.lease_owner)
        return Replay(document)
    delivery = ledger.transition_delivery(delivery.id, _V.PENDING, actor=actor, reason=reason, expect=_V.FAILED,
                                          attempts=0)
    if delivery.lease_owner:
        ledger.release_lease("delivery", delivery.id, delivery.lease_owner)
    return Replay(document, delivery)


# -- purge ----------------------------------------------------------------------------------


@dataclass
class PurgePlan:
    """What a purge at ``cutoff`` removes from the spool, and what it keeps and why."""

    cutoff: datetime
    documents: list[str] = field(default_factory=list)  #: documents done with before the cutoff
    kept: dict[str, int] = field(default_factory=dict)  #: why → number of documents kept
    blobs: dict[str, set[str]] = field(default_factory=dict)  #: sha256 to remove → the documents naming it
    shared: dict[str, set[str]] = field(default_factory=dict)  #: sha256 kept though purged documents name it
    #: blobs in the spool that nothing in the ledger names, stored before the cutoff (when a spool was given)
    orphans: set[str] = field(default_factory=set)
    named: set[str] = field(default_factory=set)  #: every sha256 the ledger names
    #: sha256 → modification time (ns) of each blob when the plan read the spool: one stored again since is kept
    stored: dict[str, int] = field(default_factory=dict)


#: why a document is kept (the keys of :attr:`PurgePlan.kept`), in the order the command line prints them
KEPT_NOT_FINAL = "not final (RECEIVED, PREPARED, or a delivery PENDING or SENT)"
KEPT_DEAD_LETTER = "with a FAILED delivery (a dead letter: replay it)"
KEPT_RECENT = "done with more recently than the cutoff"
KEPT_LETTER = "with a letter of the préfecture not answered yet"
KEPT_REASONS = (KEPT_NOT_FINAL, KEPT_DEAD_LETTER, KEPT_RECENT, KEPT_LETTER)


#: seconds a blob nothing names must have been stored for before a purge removes it, whatever its cutoff
ORPHAN_MIN_AGE = 3600.0


def plan_purge(ledger: Ledger, cutoff: datetime, spool: Spool | None = None) -> PurgePlan:
    """The blobs that only documents done with before ``cutoff`` reference (see the module's docstring);
    with ``spool``, also its blobs that nothing names, stored before ``cutoff``."""
    plan = PurgePlan(cutoff)
    seen = _References.read(ledger)
    awaiting = {letter["document_id"] for letter in open_letters(ledger)}
    plan.named = set(seen.unowned).union(*seen.refs.values())
    keep = set(seen.unowned)
    for document_id, state in seen.states.items():
        why = _kept_because(state, seen.delivery_states.get(document_id, set()), seen.last[document_id] >= cutoff,
                            document_id in awaiting)
        if why is None:
            plan.documents.append(document_id)
        else:
            plan.kept[why] = plan.kept.get(why, 0) + 1
            keep |= seen.refs[document_id]
    for document_id in plan.documents:
        for sha256 in seen.refs[document_id]:
            if _SHA256.fullmatch(sha256 or ""):
                (plan.shared if sha256 in keep else plan.blobs).setdefault(sha256, set()).add(document_id)
    if spool is not None:
        before = int(min(cutoff.timestamp(), time.time() - ORPHAN_MIN_AGE) * 1e9)
        for sha256, stored in spool.blobs():
            if sha256 not in plan.named and stored < before:
                plan.orphans.add(sha256)
            if sha256 in plan.blobs or sha256 in plan.orphans:
                plan.stored[sha256] = stored
    return plan


@dataclass
class _References:
    """Every sha256 the ledger holds, by the document it belongs to, read in one transaction."""

    states: dict[str, str] = field(default_factory=dict)  #: document id → state
    delivery_states: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    last: dict[str, datetime] = field(default_factory=dict)  #: document id → its last activity
    refs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  #: document id → sha256s
    unowned: set[str] = field(default_factory=set)  #: named by what belongs to no document (classifications)

    @classmethod
    def read(cls, ledger: Ledger) -> _References:
        seen = cls()
        documents, deliveries, messages = documents_table, deliveries_table, messages_table
        owner: dict[str, str] = {}  # delivery id → document id
        with ledger._read() as conn:
            for doc in conn.execute(select(documents.c.id, documents.c.state, documents.c.updated_at,
                                           documents.c.sidecar_sha256, documents.c.files, documents.c.canonical)):
                seen.states[doc.id] = doc.state
                seen.last[doc.id] = doc.updated_at
                seen.refs[doc.id].update([doc.sidecar_sha256, *(doc.files or {}).values(), *_shas_in(doc.canonical)])
            for sent in conn.execute(select(deliveries.c.id, deliveries.c.document_id, deliveries.c.state,
                                            deliveries.c.updated_at, deliveries.c.artifact_sha256)):
                owner[sent.id] = sent.document_id
                seen.delivery_states[sent.document_id].add(sent.state)
                seen.touch(sent.document_id, sent.updated_at, sent.artifact_sha256)
            for message in conn.execute(select(messages.c.delivery_id, messages.c.sha256, messages.c.received_at)):
                seen.touch(owner.get(message.delivery_id), message.received_at, message.sha256)
            answered = (select(responses_table.c.document_id, messages.c.sha256)
                        .join(messages, and_(messages.c.delivery_id == responses_table.c.delivery_id,
                                             messages.c.message_id == responses_table.c.message_id)))
            for answer in conn.execute(answered):  # the letter an answer answers is read when it is prepared
                seen.touch(answer.document_id, None, answer.sha256)
            seen.unowned.update(conn.execute(select(classifications_table.c.sha256)).scalars())
            events = select(journal_table.c.entity_id, journal_table.c.payload_sha256).where(
                journal_table.c.payload_sha256.is_not(None))
            for entity_id, sha256 in conn.execute(events):
                seen.touch(entity_id if entity_id in seen.states else owner.get(entity_id), None, sha256)
        return seen

    def touch(self, document_id: str | None, at: datetime | None, sha256: str | None) -> None:
        """``sha256`` is named by ``document_id`` (by nothing known: kept), which was active ``at``."""
        if document_id is None or document_id not in self.states:
            if sha256:
                self.unowned.add(sha256)
            return
        if sha256:
            self.refs[document_id].add(sha256)
        if at is not None:
            self.last[document_id] = max(self.last[document_id], at)


def _kept_because(state: str, deliveries: set[str], recent: bool, awaiting: bool) -> str | None:
    if state in (_D.RECEIVED.value, _D.PREPARED.value):
        return KEPT_NOT_FINAL
    if state == _D.ROUTED.value and deliveries - PURGEABLE_DELIVERY_STATES:
        return KEPT_NOT_FINAL if deliveries & {_V.PENDING.value, _V.SENT.value} else KEPT_DEAD_LETTER
    if recent:
        return KEPT_RECENT
    return KEPT_LETTER if awaiting else None


def _shas_in(value: Any) -> list[str]:
    """Every sha256 written anywhere in a JSON value (the canonical column's plans and file lists)."""
    if value is None:
        return []
    if isinstance(value, str):
        return _SHA256.findall(value)
    if isinstance(value, dict):
        return [sha for item in value.values() for sha in _shas_in(item)]
    if isinstance(value, list | tuple):
        return [sha for item in value for sha in _shas_in(item)]
    return []


@dataclass
class PurgedBlobs:
    """What :func:`purge_spool` removed (or would remove), in blobs and bytes."""

    removed: dict[str, int] = field(default_factory=dict)  #: sha256 → size
    restored: list[str] = field(default_factory=list)  #: taken again by a running bus meanwhile: kept
    absent: list[str] = field(default_factory=list)  #: already gone from the spool

    @property
    def size(self) -> int:
        return sum(self.removed.values())


def purge_spool(ledger: Ledger, spool: Spool, plan: PurgePlan, *, dry_run: bool = False,
                progress: Callable[[int, int], None] | None = None) -> PurgedBlobs:
    """Remove the blobs of ``plan`` (those of documents done with, and those nothing names) from
    ``spool``; with ``dry_run``, only say which.

    Each blob is first moved aside (same file system); the ledger is then read again, and a blob
    something started to name meanwhile, or stored again since the plan was made, goes back into
    the spool; the others are deleted.  ``progress(done, total)`` is told as each blob is settled.
    """
    result = PurgedBlobs()
    present: dict[str, Path] = {}
    for sha256 in sorted(plan.blobs.keys() | plan.orphans):
        if sha256 in spool:
            present[sha256] = spool.path(sha256)
        else:
            result.absent.append(sha256)
    if dry_run:
        result.removed = {sha: path.stat().st_size for sha, path in present.items()}
        return result
    aside = spool.root / "tmp" / f"purge-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    aside.mkdir(parents=True)
    moved: dict[str, int] = {}
    for sha256, path in present.items():
        with suppress(FileNotFoundError):  # removed by another purge meanwhile
            size = path.stat().st_size
            os.replace(path, aside / sha256)
            moved[sha256] = size
    again = plan_purge(ledger, plan.cutoff)
    for done, (sha256, size) in enumerate(moved.items(), 1):
        if progress is not None:
            progress(done, len(moved))
        unnamed = sha256 in again.blobs or (sha256 in plan.orphans and sha256 not in again.named)
        stored_again = sha256 in plan.stored and (aside / sha256).stat().st_mtime_ns != plan.stored[sha256]
        if unnamed and not stored_again:
            result.removed[sha256] = size
        else:  # named or stored again meanwhile: back where it was (content-addressed: a copy is the same blob)
            if sha256 not in spool:
                spool.put_file(aside / sha256)
            result.restored.append(sha256)
        (aside / sha256).unlink()
    aside.rmdir()
    return result


def purge_folder(folder: Path, cutoff: float, *, dry_run: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> dict[Path, int]:
    """The files directly in ``folder`` that have not changed since ``cutoff`` (a POSIX time; the
    latest of their modification and status change, which a move into the folder sets), removed
    unless ``dry_run``: path → size.  Hidden files and sub-folders are left alone.
    ``progress(done, total)`` is told as each entry of the folder is looked at."""
    removed: dict[Path, int] = {}
    if not folder.is_dir():
        return removed
    entries = sorted(folder.iterdir())
    for done, path in enumerate(entries, 1):
        if progress is not None:
            progress(done, len(entries))
        if path.name.startswith(".") or not path.is_file() or path.is_symlink():
            continue
        status = path.stat()
        if max(status.st_mtime, status.st_ctime) >= cutoff:
            continue
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
        removed[path] = status.st_size
    return removed
