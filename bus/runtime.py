"""The runtime: wires ledger, spool, backbone, scheduler, connectors and metrics, and owns policy.

Flow of one document::

    poll (scheduler thread)     list → claim → spool → sync → ledger RECEIVED → publish id
                                (the bundles of a poll claimed and spooled one after the other in this
                                thread, or side by side on the source's ``intake_threads`` for a source
                                that waits for a server; made durable and recorded up to INTAKE_BATCH
                                at a time: one ``syncfs`` of the spool, one ledger transaction)
    documents queue (consumer)  lease → processor.prepare → PREPARED → deliveries PENDING → ROUTED
                                → the first delivery sent by this thread at once, the others published
    deliveries queue (consumer) lease → circuit → connector.send → DELIVERED | SENT  (retry: back-off)
    settle (poll thread)        ROUTED → commit at the source; FAILED → negative reply + rollback

An endpoint's connection stays open from one send to the next; it is closed on a failure and,
by the sweeper, once nothing was sent to it for ``IDLE_CLOSE`` seconds.

The ledger is the truth: a crash at any point leaves rows that the sweeper re-publishes
(leases expire) and claims that ``recover`` finds again.  A SENT delivery is never re-sent.
"""

from __future__ import annotations

__all__ = ["Runtime", "RetryPolicy"]

import functools
import hashlib
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus import metrics, registry
from bus.answers import UNACKNOWLEDGED, AnswerPoller, awaiting_answer_metric, letters_metric
from bus.backbone import DELIVERIES, DOCUMENTS, Backbone
from bus.certs import certificate_expiry
from bus.circuit import Circuit
from bus.connector import (
    AnsweringEndpoint,
    Artifact,
    Candidate,
    Claimed,
    InboundConnector,
    InboundContext,
    InboxEndpoint,
    OutboundConnector,
    SendResult,
)
from bus.crash import crash_point
from bus.document import PreparedDocument, Processor
from bus.errors import DocumentError, HentError, TransientError
from bus.health import HealthServer
from bus.ledger import DeliveryState, DocumentState, Ledger, NewDocument, StaleState
from bus.logging_setup import add_log_context, fields_of, with_log_context
from bus.repeats import RepeatedFailures
from bus.scheduler import Scheduler
from bus.secrets import redact, redact_url
from bus.spool import Spool

log = logging.getLogger(__name__)

FINAL_DOCUMENT = {DocumentState.ROUTED, DocumentState.FAILED}
FINAL_DELIVERY = {
    DeliveryState.DELIVERED,
    DeliveryState.ACKNOWLEDGED,
    DeliveryState.REJECTED,
    DeliveryState.FAILED,
}


#: bundles of a poll recorded in one ledger transaction, at most; and how long the first of them may
#: wait for the others (the intake of a burst is not held back: workers start on the first batch)
INTAKE_BATCH = 16
INTAKE_BATCH_SECONDS = 0.1


@dataclass(frozen=True)
class _Spooled:
    """A claimed bundle copied into the spool, to record (:meth:`Runtime._record`)."""

    claimed: Claimed
    files: dict[str, str]  #: name → sha256 in the spool
    key: str  #: its idempotency key
    recovered: bool  #: claimed before a restart
    began: float  #: when its copy began (``time.perf_counter``): the ingest stage's time


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for transient send failures, then the dead letter (FAILED)."""

    max_attempts: int = 8
    first_delay: float = 2.0
    max_delay: float = 300.0
    max_age: float | None = None  #: seconds since the delivery was created after which it is given up
    jitter: float = 0.0  #: each wait drawn in ±jitter of it

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        """From a ``retry:`` section (:class:`bus.config.RetrySettings`)."""
        return cls(max_attempts=settings.max_attempts, first_delay=float(settings.first_delay),
                   max_delay=float(settings.max_delay),
                   max_age=None if settings.max_age is None else float(settings.max_age), jitter=settings.jitter)

    def delay(self, attempt: int) -> float:
        base = min(self.first_delay * 2 ** max(attempt - 1, 0), self.max_delay)
        return base * random.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else base

    def exhausted(self, attempts: int, age: float) -> str | None:
        """Why no further try is made after ``attempts`` tries of a delivery ``age`` seconds old, or None."""
        if attempts >= self.max_attempts:
            return f"gave up after {attempts} attempts"
        if self.max_age is not None and age >= self.max_age:
            return f"gave up after {attempts} attempts in {age:.0f} s (retry.max_age {self.max_age:.0f} s)"
        return None


#: what a node does: poll (sources, the platforms' answers), work (prepare, send) or both
ROLES = ("all", "poller", "worker")
BROKER_START_WAIT = 60.0  #: seconds a starting node waits for a broker it cannot reach (a restart)
IDLE_CLOSE = 60.0  #: seconds after its last send an endpoint's connections are closed (by the sweeper)


def _now() -> datetime:
    return datetime.now(UTC)


class Runtime:
    """One worker of the bus; ``run()`` until SIGTERM/SIGINT, or ``run_until_idle()``."""

    def __init__(
        self,
        config: Any,
        processor_factory: Callable[[Runtime], Processor],
        *,
        retry: RetryPolicy | None = None,
        serve_http: bool = True,
        role: str = "all",
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        self.role = role  # poller: sources and platforms' answers; worker: prepare and send; all: both
        settings = config.bus
        self.config = config
        self.actor = settings.worker_id
        self.lease_seconds = float(settings.lease)
        self.workers = int(settings.workers)
        self.shutdown_timeout = float(settings.shutdown_timeout)
        self._retry_override = retry  # the tests' fast policy for every endpoint
        self.retry = retry or RetryPolicy.from_settings(settings.retry)
        self.retries: dict[str, RetryPolicy] = {}  # endpoint → its policy
        Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(settings.ledger, actor=self.actor)
        self.ledger.reply_lease = self.lease_seconds
        self.spool = Spool(Path(settings.spool))
        self.backbone = Backbone(settings.broker, display_url=redact_url(settings.broker),
                                 prefetch=int(settings.prefetch), start_wait=BROKER_START_WAIT)
        self.processor = processor_factory(self)
        self.stop_event = threading.Event()
        self.scheduler = Scheduler()
        self._http: HealthServer | None = None
        self._serve_http = serve_http and settings.metrics.enabled
        self.sources: dict[str, InboundConnector] = {}
        self.endpoints: dict[str, OutboundConnector] = {}
        self.circuits: dict[str, Circuit] = {}
        self._claims: dict[str, dict[str, Claimed]] = {}
        self._source_locks: dict[str, threading.Lock] = {}
        self._quiet: dict[str, bool] = {}
        self._poll_failures = RepeatedFailures()  # a source down fails every poll: said once, then every 10 min
        self._paused: dict[str, bool] = {}  # sources held back by their routes' max_backlog
        self._held: dict[str, bool] = {}  # the polls (sources, answers) this node holds the lease of
        self._last_send: dict[str, float] = {}  # endpoint → when a send last began (monotonic)
        self._build_connectors()
        # the sources whose bundles are taken in side by side (a remote server's round trips), each on its own
        # threads; the others' bundles one after the other in the poll's thread
        self._ingesting = {
            name: ThreadPoolExecutor(max_workers=source.intake_threads, thread_name_prefix=f"ingest-{name}")
            for name, source in self.sources.items() if source.intake_threads > 1
        }
        self.answers = AnswerPoller(self)

    # -- wiring ----------------------------------------------------------------------
    def _build_connectors(self) -> None:
        used_from = {name for route in self.config.routes for name in route.from_}
        used_to = {name for route in self.config.routes for name in route.to}
        for name in sorted(used_from):
            cfg = self.config.connector_config(name, "inbound")
            cls = registry.connector_class(cfg.type, "inbound")
            context = InboundContext(bundle_members=self.processor.bundle_members(name), spool=self.spool.root)
            self.sources[name] = cls(name, cfg, context)
            self._claims[name] = {}
            self._source_locks[name] = threading.Lock()
            self._quiet[name] = False
        for name in sorted(used_to):
            cfg = self.config.connector_config(name, "outbound")
            cls = registry.connector_class(cfg.type, "outbound")
            self.endpoints[name] = cls(name, cfg)
            self.endpoints[name].check()  # a broken WSDL or key file refuses the start
            circuit = getattr(cfg, "circuit", None) or self.config.bus.circuit
            self.circuits[name] = Circuit(
                name, threshold=circuit.threshold, cooldown=float(circuit.cooldown),
                on_change=functools.partial(self._circuit_changed, name))
            self.retries[name] = self._retry_override or (
                RetryPolicy.from_settings(cfg.retry) if getattr(cfg, "retry", None) is not None else self.retry)
            for sirens, path in self.endpoints[name].certificates():
                expiry = certificate_expiry(path)
                if expiry is not None:
                    metrics.CERTIFICATE_EXPIRY.labels(connector=name, sirens=sirens).set(expiry.timestamp())

    def _owner(self) -> str:
        """Who holds a lease: this worker's thread.  Two threads of one worker handed the same id (a
        message published twice: the sweeper's and the first) must not both take the work, which a
        lease held in the worker's name alone would let them."""
        return f"{self.actor}/{threading.current_thread().name}"

    def _circuit_changed(self, endpoint: str, state: str, failures: int) -> None:
        """Keep the circuit's state in the ledger (``status``) and say it in the log."""
        (log.warning if state == "open" else log.info)("endpoint %s: circuit %s (%d failures in a row)",
                                                        endpoint, state, failures, extra={"connector": endpoint})
        try:
            self.ledger.set_circuit(endpoint, state, failures)
        except HentError as exc:
            log.warning("endpoint %s: circuit state not recorded: %s", endpoint, redact(str(exc)))

    def acting_for(self, delivery: Any) -> OutboundConnector:
        """The endpoint of ``delivery`` with the credentials of the act's collectivité (``credentials:``)."""
        connector = self.endpoints[delivery.endpoint]
        if not getattr(connector.config, "credentials", None):
            return connector
        return connector.scoped(self.ledger.sirens_of([delivery.document_id]).get(delivery.document_id))

    def endpoint_consumes(self, name: str) -> tuple[str, ...]:
        return self.endpoints[name].consumes

    def endpoint_config(self, name: str) -> Any:
        return self.endpoints[name].config

    # -- ingestion -------------------------------------------------------------------
    def poll(self, source: str) -> int:
        """One poll of a source: claim what is ready, record it, settle finished bundles.  Held by
        one node at a time (a lease in the ledger); a node taking a source over first recovers
        what the node before it had claimed."""
        connector = self.sources[source]
        taken = 0
        with self._source_locks[source]:
            try:
                fresh = not self._held.get(f"source:{source}", False)
                if not self._hold(f"source:{source}"):
                    self._quiet[source] = True  # another node reads it
                    return 0
                if fresh:  # the clock of hent_source_last_success_timestamp_seconds starts now
                    metrics.SOURCE_LAST_SUCCESS.labels(connector=source).set_to_current_time()
                    self._take_in(source, connector.recover(), functools.partial(self._spool_claim, source,
                                                                                  recovered=True))
                room = self._room(source)
                candidates = connector.list_ready() if room != 0 else []
                chosen = candidates if room is None else candidates[:room]
                outcomes = self._take_in(source, chosen, functools.partial(self._claim_and_spool, source))
                taken = sum(outcome is True for outcome in outcomes)
                failed = [(c.key, o) for c, o in zip(chosen, outcomes, strict=True) if isinstance(o, HentError)]
                if failed:  # said once per poll (a server down fails every claim alike), naming each bundle
                    metrics.POLL_FAILURES.labels(connector=source).inc()
                    others = [key for key, _ in failed[1:]]
                    more = (f" (the same for {len(others)} more: {', '.join(others[:10])}"
                            f"{', ...' if len(others) > 10 else ''})" if others else "")
                    self._poll_failed(source, redact(str(failed[0][1])), more)
                self._quiet[source] = not candidates
                self._settle(source)
                if not failed:
                    metrics.SOURCE_LAST_SUCCESS.labels(connector=source).set_to_current_time()
                    self._poll_failures.log_succeeded(log, source, f"poll of {source}", extra={"connector": source})
            except HentError as exc:
                metrics.POLL_FAILURES.labels(connector=source).inc()
                self._quiet[source] = False
                self._poll_failed(source, redact(str(exc)))
        return taken

    def _poll_failed(self, source: str, message: str, detail: str = "") -> None:
        """Say that a poll of ``source`` failed: at once, then again every few minutes while the same
        failure lasts (:mod:`bus.repeats`; the metrics count every one)."""
        self._poll_failures.log_failed(log, source, f"poll of {source}", message, detail, extra={"connector": source})

    def _take_in(self, source: str, items: Sequence[Any], spool: Callable[[Any], _Spooled | bool | HentError]
                 ) -> list[bool | HentError]:
        """Take ``items`` in (candidates of a poll to claim, or claims to finish): each one claimed and
        copied into the spool by ``spool``, side by side on the source's intake threads or one after
        the other here; the spooled ones recorded in the ledger together, up to ``INTAKE_BATCH`` at a
        time (one transaction), a batch recorded as soon as ``INTAKE_BATCH_SECONDS`` have passed since
        its first bundle's copy began (checked as each bundle comes), and a batch's documents published
        together.  The first batch holds one bundle and each next one twice as many, up to
        ``INTAKE_BATCH``: the workers start on a burst at once, and its bulk goes in few transactions.
        For each item, in order: True once recorded, False when not taken (refused, left claimed or
        given back), or the error that stopped its claim."""
        pool = self._ingesting.get(source)
        spooled = pool.map(spool, items) if pool is not None and len(items) > 1 else map(spool, items)
        outcomes: list[bool | HentError] = []
        batch: list[tuple[int, _Spooled]] = []
        size = 1
        try:
            for index, got in enumerate(spooled):
                outcomes.append(False if isinstance(got, _Spooled) else got)  # a spooled one's once recorded
                if not isinstance(got, _Spooled):
                    continue
                batch.append((index, got))
                if len(batch) >= size or time.perf_counter() - batch[0][1].began >= INTAKE_BATCH_SECONDS:
                    chunk, batch, size = batch, [], min(2 * size, INTAKE_BATCH)
                    self._record_into(outcomes, source, chunk)
        finally:  # what was spooled is recorded, whatever stopped the poll (else it waits for a restart)
            if batch:
                self._record_into(outcomes, source, batch)
        return outcomes

    def _record_into(self, outcomes: list[bool | HentError], source: str, batch: list[tuple[int, _Spooled]]) -> None:
        for (index, _), recorded in zip(batch, self._record(source, [s for _, s in batch]), strict=True):
            outcomes[index] = recorded

    def _claim_and_spool(self, source: str, candidate: Candidate) -> _Spooled | bool | HentError:
        """Claim one candidate and copy it into the spool (:meth:`_spool_claim`); the error that
        stopped its claim (the other candidates of the poll go on)."""
        if self.stop_event.is_set():
            return False
        try:
            claimed = self.sources[source].claim(candidate)
        except HentError as exc:
            return exc
        return claimed is not None and self._spool_claim(source, claimed, recovered=False)

    def _not_taken(self, source: str, claimed: Claimed, exc: TransientError) -> None:
        """A claimed bundle that cannot be recorded now (a TransientError: the spool's disk full, the
        ledger unreachable) goes back to the source as it was, or, from a source that cannot take it
        back, stays claimed for ``recover`` at the next start."""
        metrics.POLL_FAILURES.labels(connector=source).inc()
        fate = "it stays claimed and is taken again when the bus starts next"
        unclaim = getattr(self.sources[source], "unclaim", None)
        if unclaim is not None:
            try:
                unclaim(claimed)
                fate = "it is back in the source as it was, taken again at the next poll"
            except HentError as stuck:
                fate = redact(str(stuck))
        log.error("%s from %s not taken in: %s; %s", claimed.key, source, redact(str(exc)), fate,
                  extra={"connector": source})

    def _room(self, source: str) -> int | None:
        """Back-pressure: how many more documents ``source`` may bring now (None: no bound), from the
        ``max_backlog`` of its routes and what waits on them."""
        routes = [r for r in self.config.routes if source in r.from_]
        bounds = [r.max_backlog for r in routes if r.max_backlog is not None]
        if not bounds:
            return None
        waiting = self.ledger.backlog(source, [r.name for r in routes])
        room = max(min(bounds) - waiting, 0)
        paused = room == 0
        if paused != self._paused.get(source, False):
            (log.warning if paused else log.info)(
                "source %s: %s (%d documents and deliveries wait on its routes, max_backlog %d)", source,
                "paused" if paused else "taking documents again", waiting, min(bounds), extra={"connector": source})
        self._paused[source] = paused
        metrics.SOURCE_PAUSED.labels(connector=source).set(1 if paused else 0)
        return room

    def _spool_claim(self, source: str, claimed: Claimed, *, recovered: bool) -> _Spooled | bool:
        """Copy a claimed bundle into the spool: what :meth:`_record` records; True for a bundle
        recorded before a restart (its document, when not final, published again); False for one
        refused (a file passed a limit of its source while it was copied: a writer still adding to it)
        or not taken (:meth:`_not_taken`)."""
        try:
            if claimed.ref is not None and self._known(source, claimed):
                return True
            began = time.perf_counter()
            try:
                files = self._spool_files(source, claimed)
            except DocumentError as exc:
                self.sources[source].refuse(claimed, exc)
                return False
        except TransientError as exc:
            self._not_taken(source, claimed, exc)
            return False
        crash_point("ingest.after-spool")
        # the same bundle is the same sidecar with the same files: a bundle dropped again with a file
        # that was missing is another document
        content = hashlib.sha256(json.dumps(sorted(files.items())).encode()).hexdigest()
        return _Spooled(claimed, files, f"bundle:{source}:{claimed.key}:{content}", recovered, began)

    def _known(self, source: str, claimed: Claimed) -> bool:
        """A claim tagged before a restart whose document the ledger has (True): it says what is left."""
        try:
            document = self.ledger.get_document(claimed.ref or "")
        except KeyError:
            return False
        self._claims[source][document.id] = claimed
        if document.state not in FINAL_DOCUMENT:
            self._publish(DOCUMENTS, document.id)
        return True

    def _record(self, source: str, batch: list[_Spooled]) -> list[bool]:
        """Record spooled bundles in one transaction, then tag and publish each (True); a batch the
        ledger cannot take now is not taken (:meth:`_not_taken`), nor is a bundle whose next step
        cannot be done now."""
        new = [NewDocument(source=source, bundle=s.claimed.key, idempotency_key=s.key,
                           sidecar_sha256=s.files[s.claimed.key], files=s.files) for s in batch]
        try:  # the batch's bytes durable, together, before the ledger names them
            self.spool.sync_many(sha256 for spooled in batch for sha256 in spooled.files.values())
            added = self.ledger.add_documents(new, actor=source)
        except TransientError as exc:
            for spooled in batch:
                self._not_taken(source, spooled.claimed, exc)
            return [False] * len(batch)
        recorded: list[bool] = []
        publish: list[str] = []
        try:
            for spooled, (document, created) in zip(batch, added, strict=True):
                try:
                    to_publish = self._recorded(source, spooled, document, created)
                except TransientError as exc:
                    self._not_taken(source, spooled.claimed, exc)
                    recorded.append(False)
                    continue
                except HentError as exc:  # this bundle's alone (its work folder elsewhere...): the others go on
                    log.error("%s from %s recorded as document %s, not taken in further: %s; it stays claimed "
                              "and is taken again when the bus starts next", spooled.claimed.key, source,
                              document.id, redact(str(exc)), extra=fields_of(document=document))
                    recorded.append(False)
                    continue
                recorded.append(True)
                if to_publish is not None:
                    publish.append(to_publish)
        finally:  # the batch's documents recorded so far, whatever stopped it
            self._publish_many(DOCUMENTS, publish)  # the broker's confirms awaited once for the batch
        return recorded

    def _recorded(self, source: str, spooled: _Spooled, document: Any, created: bool) -> str | None:
        """What follows a bundle's record: its claim tagged with its document; the document's id to
        publish, unless it is final (a bundle already processed is answered so)."""
        claimed, recovered = spooled.claimed, spooled.recovered
        key = spooled.key
        while not (created or recovered or not self.ledger.refused(document.id)):
            # the same bundle dropped again after the ministry refused it (the cause was not in the
            # bundle: a classification since refreshed): a new attempt of the same act
            key = f"{spooled.key}:after:{document.id}"
            document, created = self.ledger.add_document(
                source=source, bundle=claimed.key, idempotency_key=key, sidecar_sha256=spooled.files[claimed.key],
                files=spooled.files, actor=source,
            )
        metrics.STAGE_SECONDS.labels(stage="ingest").observe(time.perf_counter() - spooled.began)
        crash_point("ingest.before-source-commit")
        # from now on the claim knows its document, even if a crash interrupts its commit
        claimed = self.sources[source].tag(claimed, document.id)
        self._claims[source][document.id] = claimed
        if document.state == DocumentState.FAILED and not created and not recovered:
            # the same bytes dropped again after a failure: the fix was elsewhere (the
            # configuration, a mapping, a missing file now present): try again
            document = self.ledger.transition_document(
                document.id, DocumentState.RECEIVED, actor=source, expect=DocumentState.FAILED,
                reason="dropped again after its failure: processed anew",
            )
        if document.state == DocumentState.ROUTED and not created and not recovered:
            log.warning("%s from %s was already processed as document %s", claimed.key, source, document.id,
                        extra=fields_of(document=document))
            self._reply(document, None, note=f"already processed as document {document.id}: not sent again")
        return None if document.state in FINAL_DOCUMENT else document.id

    def _spool_files(self, source: str, claimed: Claimed) -> dict[str, str]:
        """Copy the claimed files into the spool as the source has them read (counted against its
        limits); name → sha256.  Not fsynced yet: :meth:`_record` makes a batch durable at once."""
        open_file = self.sources[source].reading(claimed)
        files: dict[str, str] = {}
        for name, path in claimed.files.items():
            fileobj = open_file(name)
            try:
                files[name] = self.spool.put_stream(fileobj, what=str(path), sync=False)
            finally:
                fileobj.close()
        return files

    def _settle(self, source: str) -> None:
        """Commit or roll back, at the source, the bundles whose document is final; then let the
        source make them durable at once (:meth:`InboundConnector.settled`)."""
        final = self.ledger.final_documents(list(self._claims[source]))
        if not final:
            return
        self.ledger.sync()  # what the ledger says is durable before the source changes
        for document in final:
            self._settle_one(source, document)
        try:
            self.sources[source].settled()
        except HentError as exc:
            log.error("settling bundles of %s failed: %s", source, redact(str(exc)), extra={"connector": source})

    def _settle_one(self, source: str, document: Any) -> None:
        claimed = self._claims[source].get(document.id)
        if claimed is None or document.state not in FINAL_DOCUMENT:
            return
        connector = self.sources[source]
        try:
            if document.state == DocumentState.ROUTED:
                crash_point("settle.before-commit")
                connector.commit(claimed)
            else:
                self._reply(document, None, reply_id=_reply_id(document))
                connector.rollback(claimed, _error_note(document))
        except HentError as exc:  # this bundle waits for the next poll; the others go on
            log.error("settling %s from %s failed: %s", document.bundle, source, redact(str(exc)),
                      extra=fields_of(document=document))
            return
        del self._claims[source][document.id]

    # -- documents -------------------------------------------------------------------
    @with_log_context("document_id")
    def handle_document(self, doc_id: str) -> None:
        """Map, route, build: RECEIVED → ROUTED (or FAILED).  The source's poller settles it."""
        document = self.ledger.claim_document(doc_id, self._owner(), self.lease_seconds)
        if document is None:  # another worker holds it
            return
        add_log_context(route=document.route, connector=document.source)
        try:
            if document.state == DocumentState.RECEIVED:
                self._prepare(document)
            elif document.state == DocumentState.PREPARED:  # left so by an older worker
                self._route(document, None)
            else:
                self.ledger.release_lease("document", doc_id, self._owner())
        except TransientError as exc:
            log.warning("document %s will be retried: %s", doc_id, redact(str(exc)))
            # the lease expires and the sweeper re-publishes it
        except StaleState:
            log.info("document %s moved on meanwhile", doc_id)
            self.ledger.release_lease("document", doc_id, self._owner())

    def _prepare(self, document: Any) -> Any:
        try:
            with metrics.stage_timer("prepare"):
                prepared = self.processor.prepare(document)
            crash_point("prepare.after-build")
            return self._route(document, prepared)
        except DocumentError as exc:
            return self._fail_document(document, str(exc))
        except (TransientError, StaleState):
            raise
        except Exception as exc:  # a bug must not loop forever: fail it visibly, replay later
            log.exception("document %s: internal error", document.id)
            return self._fail_document(document, f"internal error while preparing: {exc!r}; report it, then replay")

    def _fail_document(self, document: Any, reason: str) -> Any:
        failed = self.ledger.transition_document(
            document.id, DocumentState.FAILED, actor=self.actor, reason=reason, expect=document.state
        )
        self.ledger.release_lease("document", document.id, self._owner())
        metrics.DOCUMENTS.labels(route=document.route or "none", outcome="failed").inc()
        metrics.DEAD_LETTERS.labels(route=document.route or "none", connector=document.source).inc()
        log.error("document %s (%s from %s) FAILED: %s", document.id, document.bundle, document.source, reason,
                  extra=fields_of(document=failed))
        return failed

    def _route(self, document: Any, prepared: PreparedDocument | None) -> Any:
        """PREPARED (when ``prepared`` is given), deliveries, ROUTED: one ledger transaction."""
        if prepared is not None:
            planned = list(prepared.deliveries)
            fields: dict[str, Any] | None = {
                "route": prepared.route, "siren": prepared.siren, "id_acte": prepared.id_acte,
                "canonical": prepared.ledger_payload(),
            }
        else:
            planned, fields = PreparedDocument.planned_from_ledger(document.canonical), None
        routed, deliveries = self.ledger.route_document(
            document.id,
            prepared=fields,
            deliveries=[plan.ledger_fields() for plan in planned],
            actor=self.actor,
            release_owner=self._owner(),
            payload_sha256=document.sidecar_sha256,
            unique_id_acte=True,
            lease_first=(self._owner(), self.lease_seconds) if prepared is not None else None,
        )
        metrics.DOCUMENTS.labels(route=routed.route or "none", outcome="routed").inc()
        log.info("document %s (%s from %s) %s to %s", routed.id, routed.bundle, routed.source, routed.state,
                 ", ".join(d.endpoint for d in deliveries) or "no endpoint", extra=fields_of(document=routed))
        # the delivery leased to this worker is sent by this thread at once, with no round trip through
        # the broker (the ledger holds it: a crash leaves it to the sweeper, as a lost message would)
        pending = [delivery for delivery in deliveries if delivery.state == DeliveryState.PENDING]
        for delivery in pending[1:]:  # the others to whichever worker is free
            self._publish(DELIVERIES, delivery.id)
        if pending:  # leased to this thread when just inserted (lease_first); else claimed as any other
            leased = pending[0] if prepared is not None and pending[0].lease_owner == self._owner() else None
            self.handle_delivery(pending[0].id, routed, leased=leased)
        return routed

    # -- deliveries ------------------------------------------------------------------
    @with_log_context("delivery_id")
    def handle_delivery(self, delivery_id: str, document: Any = None, leased: Any = None) -> None:
        """Send one delivery; ``document``: its document's row when the caller has it (for the reply);
        ``leased``: the delivery's row when the caller has it leased to this worker already."""
        delivery = leased or self.ledger.claim_delivery(delivery_id, self._owner(), self.lease_seconds)
        if delivery is None:  # another worker holds it
            return
        add_log_context(document_id=delivery.document_id, route=delivery.route, connector=delivery.endpoint)
        if delivery.state != DeliveryState.PENDING:
            self.ledger.release_lease("delivery", delivery_id, self._owner())
            return
        circuit = self.circuits[delivery.endpoint]
        if not circuit.allow():
            # keep the lease as the timer: the sweeper re-publishes it once it expires
            self.ledger.acquire_lease("delivery", delivery_id, self._owner(), circuit.retry_in())
            return
        connector = self.acting_for(delivery)
        name, sha256, kind = delivery.artifact_name, delivery.artifact_sha256, delivery.artifact_kind
        if not (name and sha256 and kind):
            self._fail_delivery(delivery, "the delivery names no artifact to send; replay its document")
            return
        try:  # nothing leaves the bus before the ledger and the artifact are durable
            self.ledger.bump_attempts(delivery.id)  # a crash from here on: the next try asks the endpoint first
            self.ledger.sync()
            self.spool.sync(sha256)
        except (OSError, HentError) as exc:
            self._retry_later(delivery, f"spool or ledger not durable: {exc}")
            return
        artifact = Artifact(
            name=name,
            path=self.spool.path(sha256),
            sha256=sha256,
            kind=kind,
            client_key=delivery.client_key,
            meta={"id_acte": delivery.id_acte, "envelope_name": delivery.envelope_name,
                  "attempted": delivery.attempts > 0},  # an earlier try may have reached the endpoint
            blob=self.spool.path,
        )
        self._last_send[delivery.endpoint] = time.monotonic()
        try:  # the connection stays open for the next send (closed once idle, or on a failure)
            with metrics.stage_timer("send"):
                connector.connect()
                result = connector.send(artifact)
                crash_point("send.after-send")
        except TransientError as exc:
            connector.close()  # a connection that failed is not reused
            circuit.failure()
            metrics.SEND_FAILURES.labels(connector=delivery.endpoint, kind="transient").inc()
            if getattr(exc, "alert", False):  # credentials or a certificate refused: a person must act
                log.error("ALERT connector %s: %s", delivery.endpoint, redact(str(exc)))
            self._retry_later(delivery, str(exc), at_least=float(getattr(exc, "retry_after", 0.0) or 0.0))
            return
        except DocumentError as exc:
            circuit.success()
            metrics.SEND_FAILURES.labels(connector=delivery.endpoint, kind="document").inc()
            self._fail_delivery(delivery, str(exc))
            return
        except Exception as exc:  # a connector's bug: retried like a transient failure, then dead letter
            log.exception("delivery %s to %s: unexpected error", delivery.id, delivery.endpoint)
            connector.close()
            circuit.failure()
            metrics.SEND_FAILURES.labels(connector=delivery.endpoint, kind="unexpected").inc()
            self._retry_later(delivery, f"unexpected error in connector {delivery.endpoint!r}: {exc!r}")
            return
        circuit.success()
        if result.state == DeliveryState.SENT and not isinstance(connector, AnsweringEndpoint):
            result = self._answered_by_files(delivery, result)
        delivery = self.ledger.transition_delivery(
            delivery.id,
            result.state,
            actor=delivery.endpoint,
            expect=DeliveryState.PENDING,
            remote_id=result.remote_id,
            attempts=delivery.attempts + 1,
            reason=result.detail,
            release_owner=self._owner(),
        )
        log.info("delivery %s to %s: %s", delivery.id, delivery.endpoint, delivery.state,
                 extra=fields_of(delivery=delivery))
        if delivery.state in FINAL_DELIVERY:
            self._delivery_final(delivery, document=document)

    def _answered_by_files(self, delivery: Any, result: SendResult) -> SendResult:
        """An endpoint that answers only by files (an answer folder) will bring nothing back for an
        answer the ministry acknowledges with no message (2-2, 3-2, 4-2): delivered once it is there."""
        code = self.ledger.response_code(delivery.document_id)
        if code not in UNACKNOWLEDGED:
            return result
        return SendResult("DELIVERED", remote_id=result.remote_id, detail=(
            f"the answer {code} is in the platform's folder; the ministry acknowledges a {code} with no message"))

    def _retry_later(self, delivery: Any, reason: str, *, at_least: float = 0.0) -> None:
        """Another try after the back-off, or ``at_least`` seconds when the endpoint asked to wait."""
        attempts = delivery.attempts + 1
        policy = self.retries.get(delivery.endpoint, self.retry)
        given_up = policy.exhausted(attempts, (_now() - delivery.created_at).total_seconds())
        if given_up is not None:
            self._fail_delivery(delivery, f"{given_up}: {reason}", attempts=attempts)
            return
        wait = max(policy.delay(attempts), at_least)
        self.ledger.record(
            "delivery", delivery.id, actor=delivery.endpoint, reason=f"attempt {attempts}: {redact(reason)}",
            attempts=attempts,
        )
        self.ledger.acquire_lease("delivery", delivery.id, self._owner(), wait)
        log.warning(
            "delivery %s to %s: attempt %d failed (%s); next try in %.0f s",
            delivery.id, delivery.endpoint, attempts, redact(reason), wait, extra=fields_of(delivery=delivery),
        )

    def _fail_delivery(self, delivery: Any, reason: str, attempts: int | None = None) -> None:
        failed = self.ledger.transition_delivery(
            delivery.id,
            DeliveryState.FAILED,
            actor=delivery.endpoint,
            expect=DeliveryState.PENDING,
            reason=redact(reason),
            attempts=attempts if attempts is not None else delivery.attempts + 1,
        )
        self.ledger.release_lease("delivery", delivery.id, self._owner())
        metrics.DEAD_LETTERS.labels(route=delivery.route, connector=delivery.endpoint).inc()
        log.error("delivery %s to %s FAILED: %s", delivery.id, delivery.endpoint, redact(reason),
                  extra=fields_of(delivery=failed))
        self._delivery_final(failed)

    def _delivery_final(self, delivery: Any, *, document: Any = None, **message: Any) -> None:
        if document is None or document.id != delivery.document_id:
            document = self.ledger.get_document(delivery.document_id)
        started = document.received_at or document.created_at
        metrics.END_TO_END_SECONDS.labels(route=delivery.route, outcome=str(delivery.state).lower()).observe(
            max((_now() - started).total_seconds(), 0.0)
        )
        if self._reply(document, delivery, reply_id=_reply_id(delivery), **message):
            crash_point("reply.after-write")
            self.ledger.reply_written(delivery.id)

    def _replies_owed(self) -> None:
        """Write the replies of final deliveries that a crash or a failed write left owed (the
        ledger keeps each debt, with the state change, until the reply is written): once each,
        the reply's id lets the source connector finish one cut short instead of writing it twice."""
        for delivery_id in self.ledger.owed_replies():
            if self.stop_event.is_set() or not self.ledger.acquire_lease("reply", delivery_id, self._owner(),
                                                                         self.lease_seconds):
                continue
            delivery = self.ledger.get_delivery(delivery_id)
            if delivery.state in FINAL_DELIVERY:  # else replayed since: a new reply will come with its end
                message: dict[str, Any] = {}
                ended = [e for e in self.ledger.entries(delivery_id) if e.from_state != e.to_state][-1:]
                if ended and ended[0].payload_sha256 and self.spool.exists(ended[0].payload_sha256):
                    data = self.spool.path(ended[0].payload_sha256).read_bytes()  # the platform's answer
                    answer = self.processor.read_answer(data, None)
                    message = {"code": answer.code, "payload": data, "answer": answer.summary}
                log.warning("delivery %s is %s but its reply is still owed: writing it now (once)", delivery_id,
                            delivery.state, extra=fields_of(delivery=delivery))
                if not self._reply(self.ledger.get_document(delivery.document_id), delivery,
                                   reply_id=_reply_id(delivery), **message):
                    continue
            self.ledger.reply_written(delivery_id)

    def delivery_answered(self, delivery: Any, *, final: bool, code: str | None, payload: bytes | None,
                          answer: dict[str, Any] | None, attachments: dict[str, bytes] | None = None,
                          reply_id: str | None = None) -> bool:
        """An endpoint answered: the acknowledgment or anomaly that ends the delivery (``final``),
        or a later message about the act (``reply_id``: the same each time it is returned, so that
        the source gets it once).  Either way the source gets it; False if a later one could not be."""
        message: dict[str, Any] = {"code": code, "payload": payload, "answer": answer, "attachments": attachments}
        if final:
            self._delivery_final(delivery, **message)
            return True
        return self._reply(self.ledger.get_document(delivery.document_id), delivery, reply_id=reply_id, **message)

    # -- replies to the source ---------------------------------------------------------
    def _reply(self, document: Any, delivery: Any | None, *, note: str | None = None,
               code: str | None = None, payload: bytes | None = None, answer: dict[str, Any] | None = None,
               attachments: dict[str, bytes] | None = None, reply_id: str | None = None) -> bool:
        """Reply to the source (``reply_id``: written once, even if asked again after a crash);
        False if the reply could not be written."""
        connector = self.sources.get(document.source)
        if connector is None:
            return True
        summary = reply_summary(document, delivery, note=note)
        if answer is not None:
            summary["message"] = answer
        if reply_id is not None:
            summary["reply_id"] = reply_id
        try:
            with metrics.stage_timer("reply"):
                connector.reply(document.bundle, code, payload, summary, attachments)
        except HentError as exc:
            log.error("reply to %s for %s failed: %s", document.source, document.bundle, redact(str(exc)),
                      extra={"document_id": document.id, "connector": document.source})
            return False
        return True

    # -- sweeping, publishing ----------------------------------------------------------
    def _publish(self, queue: str, entity_id: str) -> None:
        self._publish_many(queue, [entity_id])

    def _publish_many(self, queue: str, entity_ids: list[str]) -> None:
        try:
            self.backbone.publish_many(queue, entity_ids)
        except TransientError as exc:  # the sweeper publishes them again later
            log.warning("could not publish %s %s: %s", queue, ", ".join(entity_ids), redact(str(exc)))

    def sweep(self) -> None:
        """Re-publish work whose lease expired; refresh the gauges."""
        try:
            self._republish(grace=self.lease_seconds)
            self._replies_owed()
            self._close_idle_endpoints()
            counts = self.ledger.counts_by_state()
            for state, count in counts.get("document", {}).items():
                metrics.LEDGER_DOCUMENTS.labels(state=state).set(count)
            for state, count in counts.get("delivery", {}).items():
                metrics.LEDGER_DELIVERIES.labels(state=state).set(count)
            letters_metric(self.ledger)
            awaiting_answer_metric(self.ledger, self.endpoints)
            self.backbone.housekeeping()
            for queue in Backbone.QUEUES:
                depth = self.backbone.depth(queue)
                if depth is not None:
                    metrics.QUEUE_DEPTH.labels(queue=queue).set(depth)
        except HentError as exc:
            log.error("sweep failed: %s", redact(str(exc)))

    def _close_idle_endpoints(self) -> None:
        """Close the connections of endpoints nothing was sent to for ``IDLE_CLOSE`` seconds."""
        now = time.monotonic()
        for name, began in list(self._last_send.items()):
            if now - began < IDLE_CLOSE:
                continue
            self._last_send.pop(name, None)
            connector = self.endpoints[name]
            try:
                connector.close_scopes()
                connector.close()
            except Exception:  # noqa: BLE001 - a failed close must not stop the sweep
                log.exception("closing idle endpoint %s", name)

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> None:
        """Recover claims left by a previous run, sweep once, start polling and serving."""
        self.spool.clean_temp()
        self._reconcile_spool()
        self._republish(grace=0.0)  # what a previous run left unfinished, at once
        self.scheduler.add("sweep", self.sweep, float(self.config.bus.sweep), now=False)
        if self.role != "worker":  # the sources (each recovered by the node that takes it) and the answers
            for name, connector in self.sources.items():
                self.scheduler.add(f"poll:{name}", functools.partial(self.poll, name), connector.config.poll)
            bus = self.config.bus
            for name, endpoint in self.endpoints.items():
                jobs: list[tuple[str, Callable[[str], Any], Any]] = []
                if isinstance(endpoint, AnsweringEndpoint):
                    jobs += [("answers", self.answers.poll, float(bus.answers)),
                             ("follow-ups", self.answers.poll_follow_ups, float(bus.follow_ups)),
                             ("classification", self.answers.refresh_classifications, bus.classification)]
                if isinstance(endpoint, InboxEndpoint) and endpoint.has_inbox:
                    jobs.append(("inbox", self.answers.poll_inbox, float(bus.answers)))
                for kind, job, every in jobs:
                    self.scheduler.add(f"{kind}:{name}", functools.partial(self._held_job, f"{kind}:{name}", job,
                                                                           name), every)
        self.scheduler.start()
        if self._serve_http:
            self._http = HealthServer(self.config.bus.metrics.listen, self.readiness_checks()).start()

    def _hold(self, job: str) -> bool:
        """Take or renew this node's lease on ``job`` (a source's poll, an endpoint's answers):
        one node at a time does it; another takes it over once the lease expired (its node died)."""
        held = self.ledger.acquire_lease("poll", job, self.actor, self.lease_seconds)
        if not held:  # held by a process of this machine that is gone (a restart): taken at once
            owner = self.ledger.lease_owner("poll", job)
            if owner is not None and _dead_here(owner):
                held = self.ledger.take_over_lease("poll", job, owner, self.actor, self.lease_seconds)
                if held:
                    log.info("%s: its holder %s is no longer running on this machine", job, owner)
        if held != self._held.get(job, False):
            log.info("%s %s on this node (%s)", job, "taken" if held else "held by another node", self.actor)
        self._held[job] = held
        return held

    def _held_job(self, job: str, run: Callable[[str], Any], endpoint: str) -> Any:
        """``run(endpoint)`` if this node holds ``job``, else nothing (another node does it)."""
        return run(endpoint) if self._hold(job) else 0

    def _republish(self, *, grace: float) -> None:
        """Publish again the unfinished work nobody holds (see ``Ledger.expired_work``)."""
        documents, deliveries = self.ledger.expired_work(grace=grace)
        for doc_id in documents:
            self._publish(DOCUMENTS, doc_id)
        for delivery_id in deliveries:
            self._publish(DELIVERIES, delivery_id)

    def readiness_checks(self) -> dict[str, Callable[[], tuple[bool, str]]]:
        checks: dict[str, Callable[[], tuple[bool, str]]] = {
            "ledger": lambda: (self.ledger.ping(), "ledger"),
            "broker": lambda: (self.backbone.ping(), self.backbone.display_url),
        }
        for name, connector in {**self.sources, **self.endpoints}.items():
            reachable = getattr(connector, "reachable", None)
            if reachable is not None:
                checks[f"connector:{name}"] = reachable
        for name, circuit in self.circuits.items():
            checks[f"circuit:{name}"] = circuit.describe
        return checks

    def consume(self) -> None:
        """Handle messages with ``bus.workers`` threads (this one among them) until stopped.

        Building an archive is mostly compression, which runs outside Python's lock: a
        second thread keeps the second core busy.
        """
        handlers: dict[str, Callable[[str], None]] = {DOCUMENTS: self.handle_document, DELIVERIES: self.handle_delivery}
        others = [
            threading.Thread(target=self.backbone.consume, args=(handlers, self.stop_event),
                             name=f"hent-consumer-{n}", daemon=True)
            for n in range(1, self.workers)
        ]
        for thread in others:
            thread.start()
        try:
            self.backbone.consume(handlers, self.stop_event)
        finally:
            self.stop_event.set()
            for thread in others:
                thread.join(timeout=self.shutdown_timeout)

    def _reconcile_spool(self) -> None:
        """Start-up: the work the ledger says is unfinished must still have its bytes in the spool.
        A document or a delivery whose blob is gone (a spool restored from an old backup, a disk
        replaced) cannot go on: it is failed with the missing blob named, for a person to restore it
        and replay, rather than retried blindly for hours."""
        for document in [*self.ledger.documents(state=DocumentState.RECEIVED),
                         *self.ledger.documents(state=DocumentState.PREPARED)]:
            missing = [sha for sha in (document.sidecar_sha256, *document.files.values()) if not self.spool.exists(sha)]
            if missing:
                reason = (f"the spool lost {len(missing)} of its files ({', '.join(m[:12] for m in missing)}...): "
                          "restore the spool, or drop the bundle again, then replay it")
                log.error("ALERT document %s (%s): %s", document.id, document.bundle, reason,
                          extra=fields_of(document=document))
                self.ledger.transition_document(document.id, DocumentState.FAILED, actor=self.actor,
                                                expect=document.state, reason=reason)
        for delivery in self.ledger.deliveries(state=DeliveryState.PENDING):
            if delivery.artifact_sha256 and not self.spool.exists(delivery.artifact_sha256):
                reason = (f"its artifact {delivery.artifact_name} ({delivery.artifact_sha256[:12]}...) is no longer in "
                          "the spool: restore the spool, then replay it")
                log.error("ALERT delivery %s to %s: %s", delivery.id, delivery.endpoint, reason,
                          extra=fields_of(delivery=delivery))
                self._fail_delivery(delivery, reason, attempts=delivery.attempts)

    def run(self, *, install_signals: bool = True) -> None:
        """Serve until SIGTERM or SIGINT: stop polling, finish in-flight work, return."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: self.request_stop(signal.Signals(signum).name))
        self.start()
        log.info("hent %s %s running: %d source(s), %d endpoint(s)", self.role, self.actor,
                 len(self.sources), len(self.endpoints))
        try:
            if self.role == "poller":  # no consumer: the workers prepare and send
                self.stop_event.wait()
            else:
                self.consume()
        finally:
            self.release_polls()
            self.shutdown()

    def release_polls(self) -> None:
        """Give back the polls this node holds, so that another node takes them at once (a clean stop)."""
        for job, held in list(self._held.items()):
            if held:
                try:
                    self.ledger.release_lease("poll", job, self.actor)
                except HentError as exc:
                    log.warning("could not give back %s: %s", job, redact(str(exc)))
                self._held[job] = False

    def request_stop(self, why: str = "stop requested") -> None:
        log.info("%s: finishing in-flight work", why)
        self.stop_event.set()

    def shutdown(self) -> None:
        self.stop_event.set()
        self.scheduler.shutdown(wait=True)
        for pool in self._ingesting.values():
            pool.shutdown(wait=True)
        if self._http is not None:
            self._http.stop()
            self._http = None
        connectors: list[InboundConnector | OutboundConnector] = [*self.sources.values(), *self.endpoints.values()]
        for connector in connectors:
            try:
                if isinstance(connector, OutboundConnector):
                    connector.close_scopes()
                connector.close()
            except Exception:  # noqa: BLE001 - closing must not hide the real outcome
                log.exception("closing %s", connector.name)
        self.backbone.close()
        self.ledger.close()

    def is_idle(self) -> bool:
        """Nothing left to take, to process or to settle (used by the demo and the tests)."""
        if not all(self._quiet.values()) or any(self._claims.values()):
            return False
        counts = self.ledger.counts_by_state()
        busy_docs = {DocumentState.RECEIVED, DocumentState.PREPARED}
        busy_deliveries = {DeliveryState.PENDING, DeliveryState.SENT}
        return not any(counts.get("document", {}).get(s, 0) for s in busy_docs) and not any(
            counts.get("delivery", {}).get(s, 0) for s in busy_deliveries
        )

    def run_until_idle(self, timeout: float = 60.0) -> bool:
        """Run until :meth:`is_idle` holds twice in a row (or ``timeout``); True if idle."""
        self.start()
        consumer = threading.Thread(target=self.consume, name="hent-consumer", daemon=True)
        consumer.start()
        deadline = time.monotonic() + timeout
        idle_once = False
        try:
            while time.monotonic() < deadline:
                time.sleep(0.2)
                if self.is_idle():
                    if idle_once:
                        return True
                    idle_once = True
                else:
                    idle_once = False
            return False
        finally:
            self.stop_event.set()
            consumer.join(timeout=10)
            self.shutdown()


def _error_note(document: Any) -> str:
    return (
        f"Hent could not process {document.bundle} (document {document.id}, from {document.source}).\n"
        f"{document.reason}\n"
        "Fix what is named above, then drop the corrected bundle again.\n"
    )



def _dead_here(owner: str) -> bool:
    """Whether ``owner`` is a default worker id (``<host>-<pid>``) of this machine whose process is gone."""
    host, _, pid = owner.rpartition("-")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _reply_id(row: Any) -> str:
    """The id of the reply saying that ``row`` (a delivery, a document) reached its state: the same
    when it is asked again after a crash, another after a replay."""
    moment = getattr(row, "final_at", None) or row.updated_at
    return f"{row.id}:{row.state}:{moment.isoformat()}"


def reply_summary(document: Any, delivery: Any | None, *, note: str | None = None) -> dict[str, Any]:
    """The JSON summary written back to the source for a document or one of its deliveries."""
    summary: dict[str, Any] = {
        "document": document.id,
        "bundle": document.bundle,
        "source": document.source,
        "document_state": str(document.state),
        "received_at": document.received_at.isoformat() if document.received_at else None,
        "at": _now().isoformat(),
    }
    if delivery is None:
        summary["state"] = str(document.state)
        if document.state == DocumentState.FAILED:
            summary["reason"] = document.reason
            summary["problems"] = (document.reason or "").splitlines()
    else:
        summary.update(
            state=str(delivery.state),
            delivery=delivery.id,
            route=delivery.route,
            endpoint=delivery.endpoint,
            archive=delivery.artifact_name,
            envelope=delivery.envelope_name,
            id_acte=delivery.id_acte,
            remote_id=delivery.remote_id,
            reason=delivery.reason,
        )
    if note:
        summary["note"] = note
    return summary
