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

__all__ = ["AnswerPoller", "BATCH", "FOLLOW_UP_DAYS"]

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from bus import metrics
from bus.connector import AnsweringEndpoint, OutboundConnector, RemoteMessage, RemoteStatus
from bus.errors import DocumentError, HentError
from bus.ledger import DeliveryState
from bus.secrets import redact

log = logging.getLogger(__name__)

BATCH = 50  #: submissions asked about in one status call
FOLLOW_UP_DAYS = 75  #: the préfet has two months to act on an act; a margin for the post


class AnswerPoller:
    """Runs in the runtime's scheduler, one job per answering endpoint."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def poll(self, endpoint: str) -> int:
        """Ask ``endpoint`` about its SENT deliveries; the number of answers acted upon."""
        return self._round(endpoint, self._statuses)

    def poll_follow_ups(self, endpoint: str) -> int:
        """Ask ``endpoint`` for the later messages of its recently acknowledged deliveries (one
        call each: less often than :meth:`poll`); the number of new messages."""
        return self._round(endpoint, self._follow_ups)

    def _round(self, endpoint: str, step: Any) -> int:
        connector = self.runtime.endpoints[endpoint]
        if not isinstance(connector, AnsweringEndpoint):
            return 0
        assert isinstance(connector, OutboundConnector)
        done = 0
        try:
            connector.connect()
            done += step(endpoint, connector)
        except HentError as exc:
            metrics.POLL_FAILURES.labels(connector=endpoint).inc()
            log.error("asking %s for answers failed: %s", endpoint, redact(str(exc)))
        finally:
            connector.close()
        return done

    def _statuses(self, endpoint: str, connector: AnsweringEndpoint) -> int:
        ledger = self.runtime.ledger
        waiting = {d.remote_id: d for d in ledger.deliveries(state=DeliveryState.SENT, endpoint=endpoint)
                   if d.remote_id}
        done = 0
        ids = list(waiting)
        for start in range(0, len(ids), BATCH):
            for status in connector.statuses(ids[start:start + BATCH]):
                delivery = waiting.get(status.remote_id)
                if delivery is not None and self._on_status(delivery, status):
                    done += 1
        return done

    def _on_status(self, delivery: Any, status: RemoteStatus) -> bool:
        if status.state not in ("ACKNOWLEDGED", "REJECTED"):
            return False
        runtime = self.runtime
        data = status.message or b""
        answer = runtime.processor.read_answer(data, status.message_name) if data else None
        sha = runtime.spool.put_bytes(data) if data else None
        if status.state == "ACKNOWLEDGED":
            id_acte = (answer.id_acte if answer else None) or delivery.id_acte
            reason = f"{answer.kind if answer else 'acknowledgment'} {id_acte}"
            if answer and answer.received_on:
                reason += f" received on {answer.received_on}"
            fields = {"id_acte": id_acte}
        else:
            kind = answer.kind if answer else "anomaly"
            nature = f" (nature {answer.anomaly})" if answer and answer.anomaly else ""
            detail = (answer.detail if answer else None) or status.detail or "no detail given"
            reason = f"{kind}{nature}: {detail}"
            fields = {}
        updated = runtime.ledger.transition_delivery(
            delivery.id, status.state, actor=delivery.endpoint, expect=DeliveryState.SENT, reason=reason,
            payload_sha256=sha, **fields,
        )
        sent_at = delivery.updated_at
        metrics.ACKNOWLEDGMENT_SECONDS.labels(route=delivery.route, outcome=status.state.lower()).observe(
            max((datetime.now(UTC) - sent_at).total_seconds(), 0.0)
        )
        runtime.delivery_answered(updated, final=True, code=answer.code if answer else None, payload=data or None,
                                  answer=answer.summary if answer else None)
        return True

    def _follow_ups(self, endpoint: str, connector: AnsweringEndpoint) -> int:
        ledger = self.runtime.ledger
        since = datetime.now(UTC) - timedelta(days=FOLLOW_UP_DAYS)
        done = 0
        for delivery in ledger.deliveries(state=DeliveryState.ACKNOWLEDGED, endpoint=endpoint):
            if not delivery.remote_id or (delivery.final_at and delivery.final_at < since):
                continue
            known = {m["message_id"] for m in ledger.messages_of(delivery.id)}
            try:
                messages = connector.messages(delivery.remote_id, known)
            except DocumentError as exc:  # this submission is unknown to the platform: the others go on
                log.error("follow-up messages of delivery %s: %s", delivery.id, redact(str(exc)))
                continue
            for message in messages:
                if self._on_follow_up(delivery, message):
                    done += 1
        return done

    def _on_follow_up(self, delivery: Any, message: RemoteMessage) -> bool:
        runtime = self.runtime
        answer = runtime.processor.read_answer(message.data, message.name)
        sha = runtime.spool.put_bytes(message.data)
        for data in message.attachments.values():
            runtime.spool.put_bytes(data)
        if not runtime.ledger.add_message(delivery.id, message_id=message.message_id, code=answer.code,
                                          name=message.name, sha256=sha, actor=delivery.endpoint):
            return False
        runtime.delivery_answered(delivery, final=False, code=answer.code, payload=message.data, answer=answer.summary,
                                  attachments=message.attachments)
        return True

    def refresh_classifications(self, endpoint: str) -> int:
        """Ask ``endpoint`` for the classification (7-1) of every configured SIREN; keep each new
        one (7-2) in the ledger; a 7-3 says the one kept is current.  The number of new ones."""
        runtime = self.runtime
        connector = runtime.endpoints[endpoint]
        if not isinstance(connector, AnsweringEndpoint):
            return 0
        assert isinstance(connector, OutboundConnector)
        fresh = 0
        try:
            connector.connect()
            for entry in runtime.config.collectivites:
                fresh += self._classification_of(connector, entry)
        except HentError as exc:
            metrics.POLL_FAILURES.labels(connector=endpoint).inc()
            log.error("asking %s for classifications failed: %s", endpoint, redact(str(exc)))
        finally:
            connector.close()
        return fresh

    def _classification_of(self, connector: AnsweringEndpoint, entry: Any) -> int:
        runtime = self.runtime
        kept = runtime.ledger.classification(entry.siren)
        current = kept["date"] if kept else (entry.classification_date.isoformat() if entry.classification_date
                                             else None)
        name, data = connector.classification(entry.siren, current)
        answer = runtime.processor.read_answer(data, name)
        if answer.code != "7-2":
            return 0  # 7-3: what is kept is current
        dated = (answer.summary.get("dates") or {}).get("DateClassification")
        if not dated:
            log.error("classification of %s from the platform has no DateClassification: ignored", entry.siren)
            return 0
        sha = runtime.spool.put_bytes(data)
        if runtime.ledger.add_classification(entry.siren, date_text=str(dated), name=name, sha256=sha):
            log.info("classification of %s dated %s received", entry.siren, dated)
            return 1
        return 0
