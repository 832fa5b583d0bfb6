"""The acknowledgment loop: ask answering endpoints about SENT deliveries and act on the answers.

For each endpoint that answers later (a tiers de télétransmission), a scheduled poll asks
the status of its SENT deliveries in batches: an ARActe moves the delivery to ACKNOWLEDGED
with the act's official IDActe; an anomaly (AnomalieActe, AnomalieEnveloppe) to REJECTED with
the ministry's nature code and detail.  The acknowledged ones are then asked for their
follow-up messages (letters, requests for documents, déféré, cancellation), each recorded
once.  Every message is kept verbatim in the spool, journaled, and returned to the software
that sent the act (``<bundle>.<n>.<code>.xml`` beside a summary).
"""

from __future__ import annotations

__all__ = ["AnswerPoller", "ANSWERS", "BATCH", "FOLLOW_UP_DAYS", "HELD_REASONS", "LETTERS", "RECEIPTS",
           "UNACKNOWLEDGED", "ANSWER_AGES", "LETTER_AGES", "awaiting_answer_metric", "letters_metric",
           "open_letters"]

import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from bus import metrics
from bus.connector import (
    ARCHIVE,
    CANONICAL,
    AnsweringEndpoint,
    InboxEndpoint,
    InboxItem,
    OutboundConnector,
    RemoteMessage,
    RemoteStatus,
)
from bus.crash import crash_point
from bus.document import Answer
from bus.errors import DocumentError, HentError
from bus.ledger import DeliveryState
from bus.logging_setup import fields_of
from bus.repeats import RepeatedFailures
from bus.secrets import redact

log = logging.getLogger(__name__)

BATCH = 50  #: submissions asked about in one status call
FOLLOW_UP_DAYS = 75  #: the préfet has two months to act on an act; a margin for the post
#: the messages that end a delivery, and the state they end it in
_FINAL = {"ARActe": "ACKNOWLEDGED", "AnomalieActe": "REJECTED", "AnomalieEnveloppe": "REJECTED",
          "DecpReceipt": "ACKNOWLEDGED", "DecpRejection": "REJECTED"}
_WAIT = object()  #: a message to read again at the next poll
#: the ministry's receipts of the collectivité's answers (3-5, 4-5): they end the answer's delivery
_RESPONSE_RECEIVED = ("ARPieceComplementaire", "ARReponseRejetLettreObservations")
#: the letters of the préfecture the collectivité answers through ACTES, and the answers that close
#: them (3-2 and 4-2 only say the letter was received)
LETTERS = {"2-1": ("2-2",), "3-1": ("3-3", "3-4"), "4-1": ("4-3", "4-4")}
#: every answer the collectivité may send to each letter
ANSWERS = {"2-1": ("2-2",), "3-1": ("3-2", "3-3", "3-4"), "4-1": ("4-2", "4-3", "4-4")}
#: the answers the ministry acknowledges with no message at all (3-3/3-4 get a 3-5, 4-3/4-4 a 4-5): an
#: endpoint that answers only by files (an SFTP answer folder) never brings anything back for them
UNACKNOWLEDGED = ("2-2", "3-2", "4-2")
#: age buckets of the open letters metric, in days
LETTER_AGES = ((7, "0-7d"), (30, "7-30d"), (None, "30d+"))
#: age buckets of the awaiting-answer metric, in hours
ANSWER_AGES = ((1, "0-1h"), (4, "1-4h"), (24, "4-24h"), (7 * 24, "1-7d"), (None, "7d+"))
#: the ledger message that records the stamped act and the bordereau of an acknowledged act
RECEIPTS = "receipts"
#: names of the packages (the ministry's .tar.gz) a platform may hand a follow-up in
_PACKAGES = (".tar.gz", ".tgz")
#: why a platform may hold an act (RemoteStatus.waiting): S2LOW's statuses 17 and 18
HELD_REASONS = ("to-be-posted", "to-be-signed")


class AnswerPoller:
    """Runs in the runtime's scheduler, one job per answering endpoint."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self._held: dict[str, str] = {}  #: delivery id → why its platform holds it, as last journaled
        self._receipts_lock = threading.Lock()
        self._failures = RepeatedFailures()

    def poll(self, endpoint: str) -> int:
        """Ask ``endpoint`` about its SENT deliveries; the number of answers acted upon."""
        return self._round(endpoint, self._statuses)

    def poll_follow_ups(self, endpoint: str) -> int:
        """Ask ``endpoint`` for the later messages of its recently acknowledged deliveries (one
        call each: less often than :meth:`poll`); the number of new messages."""
        return self._round(endpoint, self._follow_ups)

    def _round(self, endpoint: str, step: Any, *, inbox: bool = False) -> int:
        """``step(endpoint, connector)`` between connect and close, its failure logged and counted."""
        connector = self.runtime.endpoints[endpoint]
        if not (isinstance(connector, InboxEndpoint) and connector.has_inbox if inbox
                else isinstance(connector, AnsweringEndpoint)):
            return 0
        done = 0
        what = "the files of its answer folder" if inbox else "answers"
        key = f"{endpoint} {getattr(step, '__name__', what)}"  # each kind of poll of an endpoint apart
        try:
            connector.connect()
            done += step(endpoint, connector)
        except HentError as exc:
            metrics.POLL_FAILURES.labels(connector=endpoint).inc()
            # a platform down fails every poll: said once, then every 10 minutes while it lasts
            self._failures.log_failed(log, key, f"asking {endpoint} for {what}", redact(str(exc)),
                                      extra={"connector": endpoint})
        else:
            self._failures.log_succeeded(log, key, f"asking {endpoint} for {what}", extra={"connector": endpoint})
        finally:
            connector.close()
        return done

    def _statuses(self, endpoint: str, connector: AnsweringEndpoint) -> int:
        ledger = self.runtime.ledger
        waiting = {d.remote_id: d for d in ledger.deliveries(state=DeliveryState.SENT, endpoint=endpoint)
                   if d.remote_id}
        done = 0
        held: Counter[str] = Counter()
        acts = ledger.acts_of([d.document_id for d in waiting.values()])
        for scoped, group in self._by_collectivite(connector, list(waiting.values())):
            ids = [d.remote_id for d in group]
            for start in range(0, len(ids), BATCH):
                for status in scoped.statuses(ids[start:start + BATCH]):
                    delivery = waiting.get(status.remote_id)
                    if delivery is None:
                        continue
                    if status.state == "IN_TRANSIT" and status.waiting:
                        held[status.waiting] += 1
                        self._on_hold(delivery, status)
                        continue
                    self._held.pop(delivery.id, None)
                    concluded = self._on_status(delivery, status)
                    if concluded is not None:
                        done += 1
                        if concluded.state == DeliveryState.ACKNOWLEDGED and acts.get(delivery.document_id):
                            self._receipts_now(scoped, concluded)  # an answer to a letter has none
        for reason in {*held, *HELD_REASONS}:
            metrics.PLATFORM_WAITING.labels(connector=endpoint, waiting=reason).set(held[reason])
        return done

    def _on_hold(self, delivery: Any, status: RemoteStatus) -> None:
        """The platform holds the act until a person acts (posts it, signs it): journaled once
        each time it starts waiting for another reason."""
        reason = f"waiting at the platform: {status.waiting}" + (f" ({status.detail})" if status.detail else "")
        if self._held.get(delivery.id) == reason:
            return
        entries = self.runtime.ledger.entries(delivery.id)
        if not entries or entries[-1].reason != reason:
            self.runtime.ledger.record("delivery", delivery.id, actor=delivery.endpoint, reason=reason)
            log.warning("delivery %s to %s is %s", delivery.id, delivery.endpoint, reason,
                        extra=fields_of(delivery=delivery))
        self._held[delivery.id] = reason

    def _on_status(self, delivery: Any, status: RemoteStatus) -> Any:
        """The delivery as the answer left it (ACKNOWLEDGED, REJECTED), or None when it says nothing final."""
        if status.state not in ("ACKNOWLEDGED", "REJECTED"):
            return None
        data = status.message or b""
        answer = self.runtime.processor.read_answer(data, status.message_name) if data else None
        return self._conclude(delivery, status.state, data, answer, status.detail)

    def _conclude(self, delivery: Any, state: str, data: bytes, answer: Answer | None, detail: str = "") -> Any:
        """SENT → ``state`` (ACKNOWLEDGED or REJECTED) with the message that says so, returned to the source."""
        runtime = self.runtime
        sha = runtime.spool.put_bytes(data) if data else None
        if state == "ACKNOWLEDGED":
            id_acte = (answer.id_acte if answer else None) or delivery.id_acte
            reason = f"{answer.kind if answer else 'acknowledgment'} {id_acte or (answer and answer.detail) or ''}"
            if answer and answer.received_on:
                reason += f" received on {answer.received_on}"
            fields = {"id_acte": id_acte}
        else:
            kind = answer.kind if answer else "anomaly"
            nature = f" (nature {answer.anomaly})" if answer and answer.anomaly else ""
            detail = (answer.detail if answer else None) or detail or "no detail given"
            reason = f"{kind}{nature}: {detail}"
            fields = {}
        updated = runtime.ledger.transition_delivery(
            delivery.id, state, actor=delivery.endpoint, expect=DeliveryState.SENT, reason=reason,
            payload_sha256=sha, **fields,
        )
        crash_point("answer.after-ledger")
        log.info("delivery %s to %s: %s", delivery.id, delivery.endpoint, state, extra=fields_of(delivery=updated))
        sent_at = delivery.updated_at
        metrics.ACKNOWLEDGMENT_SECONDS.labels(route=delivery.route, outcome=state.lower()).observe(
            max((datetime.now(UTC) - sent_at).total_seconds(), 0.0)
        )
        runtime.delivery_answered(updated, final=True, code=answer.code if answer else None, payload=data or None,
                                  answer=answer.summary if answer else None)
        return updated

    def _follow_ups(self, endpoint: str, connector: AnsweringEndpoint) -> int:
        ledger = self.runtime.ledger
        since = datetime.now(UTC) - timedelta(days=FOLLOW_UP_DAYS)
        done = 0
        recent = [d for d in ledger.deliveries(state=DeliveryState.ACKNOWLEDGED, endpoint=endpoint)
                  if d.remote_id and not (d.final_at and d.final_at < since)]
        acts = ledger.acts_of([d.document_id for d in recent])
        recent = [d for d in recent if acts.get(d.document_id)]  # an answer to a letter has no follow-ups
        for scoped, group in self._by_collectivite(connector, recent):
            for delivery in group:
                known = {m["message_id"] for m in ledger.messages_of(delivery.id)}
                if RECEIPTS not in known:
                    done += self._receipts_now(scoped, delivery)
                try:
                    messages = scoped.messages(delivery.remote_id, known)
                except DocumentError as exc:  # this submission is unknown to the platform: the others go on
                    log.error("follow-up messages of delivery %s: %s", delivery.id, redact(str(exc)),
                              extra=fields_of(delivery=delivery))
                    continue
                for message in messages:
                    if self._on_follow_up(delivery, message):
                        done += 1
        return done

    def _by_collectivite(self, connector: Any, deliveries: list[Any]) -> Iterator[tuple[Any, list[Any]]]:
        """The deliveries grouped by the connector acting for their collectivité (its own
        credentials, ``credentials:``), each connected while its group is handled."""
        if not getattr(connector.config, "credentials", None):
            yield connector, deliveries
            return
        sirens = self.runtime.ledger.sirens_of([d.document_id for d in deliveries])
        groups: dict[int, tuple[Any, list[Any]]] = {}
        for delivery in deliveries:
            scoped = connector.scoped(sirens.get(delivery.document_id))
            groups.setdefault(id(scoped), (scoped, []))[1].append(delivery)
        for scoped, group in groups.values():
            if scoped is connector:
                yield scoped, group
                continue
            scoped.connect()
            try:
                yield scoped, group
            finally:
                scoped.close()

    def _receipts_now(self, connector: Any, delivery: Any) -> int:
        """Ask for them; a failure is only logged: the next follow-up poll asks again."""
        try:
            return self._receipts(connector, delivery)
        except HentError as exc:
            log.warning("stamped act of delivery %s not fetched yet: %s", delivery.id, redact(str(exc)))
            return 0

    def _receipts(self, connector: Any, delivery: Any) -> int:
        """The stamped act and the acknowledgment receipt (bordereau), where the endpoint offers
        them, for an act (its callers leave answers to letters out): kept once (ledger message
        ``receipts``) and returned to the source; 1 when new."""
        fetch = getattr(connector, "receipts", None)
        if fetch is None or not delivery.remote_id:
            return 0
        runtime = self.runtime
        with self._receipts_lock:  # the answers poll and the follow-ups poll both ask: one at a time
            if any(m["message_id"] == RECEIPTS for m in runtime.ledger.messages_of(delivery.id)):
                return 0
            files: dict[str, bytes] = fetch(delivery.remote_id)
            if not files:
                return 0  # not ready yet at the platform: asked again at the next follow-up poll
            kept = {name: runtime.spool.put_bytes(data) for name, data in sorted(files.items())}
            manifest = runtime.spool.put_bytes(json.dumps(kept, sort_keys=True).encode())
            # returned, then kept: killed in between, the bus asks again and the reply's id keeps
            # the source from getting them twice; a reply that failed is asked again too
            if not runtime.delivery_answered(delivery, final=False, code=RECEIPTS, payload=None,
                                             answer={"kind": "receipts", "files": sorted(files)}, attachments=files,
                                             reply_id=f"{delivery.id}:{RECEIPTS}"):
                return 0
            return int(runtime.ledger.add_message(delivery.id, message_id=RECEIPTS, code=RECEIPTS,
                                                  name=", ".join(kept), sha256=manifest, actor=delivery.endpoint))

    def _on_follow_up(self, delivery: Any, message: RemoteMessage, answer: Answer | None = None) -> bool:
        """Keep a later message of an act once (by its id) and return it to the source; a package
        (the ministry's ``.tar.gz``) is opened and each message in it kept (``<id>/<name>`` when
        it holds several), its envelope left aside."""
        runtime = self.runtime
        if answer is None and message.name.lower().endswith(_PACKAGES):
            try:
                parts = runtime.processor.read_inbox(message.name, message.data, message.attachments)
            except DocumentError as exc:
                log.error("follow-up %s of delivery %s: %s", message.message_id, delivery.id, redact(str(exc)))
                return False
            read = [(name, data, files, runtime.processor.read_answer(data, name)) for name, data, files in parts]
            read = [part for part in read if part[3].code != "ENV"]
            kept = False
            for name, data, files, inner in read:
                message_id = message.message_id if len(read) == 1 else f"{message.message_id}/{name}"
                kept |= self._on_follow_up(delivery, RemoteMessage(message.remote_id, message_id, name, data, files),
                                           inner)
            return kept
        answer = answer or runtime.processor.read_answer(message.data, message.name)
        if any(m["message_id"] == message.message_id for m in runtime.ledger.messages_of(delivery.id)):
            return False  # kept and returned before
        sha = runtime.spool.put_bytes(message.data)
        for data in message.attachments.values():
            runtime.spool.put_bytes(data)
        # returned, then kept: killed in between, the message is read again and the reply's id keeps
        # the source from getting it twice
        if not runtime.delivery_answered(delivery, final=False, code=answer.code, payload=message.data,
                                         answer=answer.summary, attachments=message.attachments,
                                         reply_id=f"{delivery.id}:{message.message_id}"):
            return False
        return runtime.ledger.add_message(delivery.id, message_id=message.message_id, code=answer.code,
                                          name=message.name, sha256=sha, actor=delivery.endpoint)

    def refresh_classifications(self, endpoint: str) -> int:
        """Ask ``endpoint`` for the classification (7-1) of every configured SIREN; keep each new
        one (7-2) in the ledger; a 7-3 says the one kept is current.  The number of new ones."""
        runtime = self.runtime
        connector = runtime.endpoints[endpoint]
        if not isinstance(connector, AnsweringEndpoint) or not _carries_acts(connector):
            return 0
        assert isinstance(connector, OutboundConnector)
        fresh = 0
        try:
            connector.connect()
            for entry in runtime.config.collectivites:
                try:
                    fresh += self._classification_of(connector, entry)
                except DocumentError as exc:  # this SIREN (or this platform) has none to give: the others go on
                    log.warning("classification of %s from %s: %s", entry.siren, endpoint, redact(str(exc)))
        except HentError as exc:
            metrics.POLL_FAILURES.labels(connector=endpoint).inc()
            log.error("asking %s for classifications failed: %s", endpoint, redact(str(exc)))
        finally:
            connector.close()
        return fresh

    def refresh_classification(self, endpoint: str, siren: str) -> int:
        """Ask ``endpoint`` for the classification of one SIREN now (before a resubmission after
        ODT-VERIF-01); 1 when a new one was kept.  Errors are the caller's to handle."""
        connector = self.runtime.endpoints.get(endpoint)
        entry = self.runtime.config.collectivite(siren)
        if not isinstance(connector, AnsweringEndpoint) or entry is None:
            return 0
        assert isinstance(connector, OutboundConnector)
        connector.connect()
        try:
            return self._classification_of(connector, entry)
        finally:
            connector.close()

    def _classification_of(self, connector: AnsweringEndpoint, entry: Any) -> int:
        runtime = self.runtime
        kept = runtime.ledger.classification(entry.siren)
        current = kept["date"] if kept else (entry.classification_date.isoformat() if entry.classification_date
                                             else None)
        assert isinstance(connector, OutboundConnector)
        scoped: Any = connector.scoped(entry.siren)
        if scoped is not connector:  # the collectivité logs in with its own credentials
            scoped.connect()
            try:
                name, data = scoped.classification(entry.siren, current)
            finally:
                scoped.close()
        else:
            name, data = connector.classification(entry.siren, current)
        return self._keep_classification(entry.siren, name, data, runtime.processor.read_answer(data, name))

    def _keep_classification(self, siren: str, name: str, data: bytes, answer: Answer) -> int:
        """Keep a 7-2 (1 when it is new); a 7-3 says the one kept is current (0)."""
        if answer.code != "7-2":
            return 0
        dated = (answer.summary.get("dates") or {}).get("DateClassification")
        if not dated:
            log.error("classification of %s from the platform has no DateClassification: ignored", siren)
            return 0
        sha = self.runtime.spool.put_bytes(data)
        if self.runtime.ledger.add_classification(siren, date_text=str(dated), name=name, sha256=sha):
            log.info("classification of %s dated %s received", siren, dated)
            return 1
        return 0

    # -- answer folders ---------------------------------------------------------------
    def poll_inbox(self, endpoint: str) -> int:
        """Read the files ``endpoint`` left in its answer folder; the number of messages acted upon.

        Each file is read, matched, recorded in the ledger and returned to the source before it
        is settled (deleted or moved to done/); one that matches nothing goes to error/ with a
        note and an alert in the log; one whose delivery is not yet recorded as SENT waits.
        """
        return self._round(endpoint, self._inbox, inbox=True)

    def _inbox(self, endpoint: str, connector: Any) -> int:
        done = 0
        for item in connector.inbox():
            if self.runtime.stop_event.is_set():
                break
            done += self._inbox_item(endpoint, connector, item)
        return done

    def _inbox_item(self, endpoint: str, connector: InboxEndpoint, item: InboxItem) -> int:
        try:
            data, attachments = connector.fetch(item)
            messages = self.runtime.processor.read_inbox(item.name, data, attachments)
        except DocumentError as exc:
            self._set_aside(endpoint, connector, item, str(exc))
            return 0
        done, problems, waiting = 0, [], False
        for name, content, files in messages:
            outcome = self._inbox_message(endpoint, name, content, files)
            if outcome is _WAIT:
                waiting = True
            elif isinstance(outcome, str):
                problems.append(outcome)
            else:
                done += outcome
        if waiting:  # read again at the next poll: what was recorded is not recorded twice
            return done
        if problems:
            self._set_aside(endpoint, connector, item, "\n".join(problems))
        else:
            connector.settle(item, None)
        return done

    def _set_aside(self, endpoint: str, connector: InboxEndpoint, item: InboxItem, problem: str) -> None:
        metrics.UNMATCHED_ANSWERS.labels(connector=endpoint).inc()
        log.error("ALERT answer %s from %s set aside: %s", item.name, endpoint, redact(problem),
                  extra={"connector": endpoint})
        connector.settle(item, problem)

    def _inbox_message(self, endpoint: str, name: str, data: bytes, attachments: dict[str, bytes]) -> Any:
        """1 or 0 (acted upon or already known), _WAIT, or a problem (a str)."""
        answer = self.runtime.processor.read_answer(data, name)
        if answer.code == "ENV":  # the ministry's envelope: its message is beside it
            return 0
        if answer.code in ("7-2", "7-3"):
            siren = answer.act[0] if answer.act else (answer.summary.get("act_key") or {}).get("siren")
            if not siren:
                return f"{name}: a classification that names no SIREN"
            return self._keep_classification(siren, name, data, answer)
        delivery = self._match(endpoint, answer)
        if delivery is None:
            what = answer.id_acte or (answer.act and "-".join(answer.act)) or answer.envelope_name or "no act"
            errors = "; ".join(answer.summary.get("errors") or [])
            return (f"{name}: {answer.kind} about {what} matches no delivery to {endpoint}"
                    + (f" ({errors})" if errors else ""))
        if answer.kind in _RESPONSE_RECEIVED and delivery.state in (DeliveryState.PENDING, DeliveryState.SENT):
            # the ministry received the collectivité's answer to a letter (3-5, 4-5): it ends that delivery
            if delivery.state == DeliveryState.PENDING:
                return _WAIT
            self._conclude(delivery, "ACKNOWLEDGED", data, answer)
            return 1
        if answer.kind in _FINAL:
            state = _FINAL[answer.kind]
            if delivery.state == DeliveryState.SENT:
                self._conclude(delivery, state, data, answer)
                return 1
            if delivery.state == DeliveryState.PENDING:  # sent, but not recorded as such yet
                return _WAIT
            if delivery.state == state:  # read again after a crash before the file was settled
                return 0
            return f"{name}: {answer.kind} for delivery {delivery.id}, which is {delivery.state}"
        if delivery.state in (DeliveryState.PENDING, DeliveryState.SENT):
            return _WAIT  # its acknowledgment first
        message = RemoteMessage(delivery.remote_id or "", f"file:{name}", name, data, attachments)
        return 1 if self._on_follow_up(delivery, message, answer) else 0

    def _match(self, endpoint: str, answer: Answer) -> Any:
        """The delivery a message answers, by ``transformers.actes_in.MATCHING_RULE``."""
        ledger = self.runtime.ledger
        for keys in ({"id_acte": answer.id_acte}, {"act": answer.act}, {"envelope_name": answer.envelope_name},
                     {"client_key": answer.client_key}):
            if all(value is not None for value in keys.values()):
                found = ledger.find_delivery(endpoint=endpoint, **keys)
                if found is not None:
                    return found
        return None


def _carries_acts(connector: Any) -> bool:
    """Whether the endpoint speaks ACTES (a procurement platform answers, but has no classification)."""
    return bool(set(connector.consumes) & {ARCHIVE, CANONICAL})


def open_letters(ledger: Any) -> list[dict[str, Any]]:
    """The préfecture's letters still waiting for the collectivité's answer, oldest first."""
    closing = tuple(code for codes in LETTERS.values() for code in codes)
    return ledger.open_letters(tuple(LETTERS), closing)


def _age(ages: tuple[tuple[int | None, str], ...], value: float) -> str:
    """The label of the first bucket of ``ages`` whose limit ``value`` is under."""
    return next(label for limit, label in ages if limit is None or value < limit)


def letters_metric(ledger: Any, now: datetime | None = None) -> None:
    """``hent_prefecture_letters_open{code,age}`` from the ledger."""
    now = now or datetime.now(UTC)
    counts: Counter[tuple[str, str]] = Counter()
    for letter in open_letters(ledger):
        counts[(letter["code"], _age(LETTER_AGES, (now - letter["received_at"]).total_seconds() / 86400))] += 1
    for code in LETTERS:
        for _, label in LETTER_AGES:
            metrics.LETTERS_OPEN.labels(code=code, age=label).set(counts[(code, label)])


def awaiting_answer_metric(ledger: Any, endpoints: dict[str, OutboundConnector], now: datetime | None = None) -> None:
    """``hent_deliveries_awaiting_answer{connector,age}`` from the ledger: the SENT deliveries by
    endpoint and hours since they were sent (or since the last event journaled about them: the
    platform starting to hold one), every bucket of every endpoint that answers later present."""
    now = now or datetime.now(UTC)
    counts: Counter[tuple[str, str]] = Counter()
    for delivery in ledger.deliveries(state=DeliveryState.SENT):
        hours = (now - delivery.updated_at).total_seconds() / 3600
        counts[(delivery.endpoint, _age(ANSWER_AGES, hours))] += 1
    answering = {name for name, connector in endpoints.items()
                 if isinstance(connector, AnsweringEndpoint)
                 or (isinstance(connector, InboxEndpoint) and connector.has_inbox)}
    for endpoint in sorted(answering | {endpoint for endpoint, _ in counts}):
        for _, label in ANSWER_AGES:
            metrics.DELIVERIES_AWAITING_ANSWER.labels(connector=endpoint, age=label).set(counts[(endpoint, label)])
