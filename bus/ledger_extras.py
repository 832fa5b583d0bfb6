"""What the ledger keeps besides documents and deliveries, as a mixin of :class:`bus.ledger.Ledger`.

Leases (on a document, a delivery, or anything named, such as a source being polled) and
the sweeper's query for work whose lease expired; the follow-up messages endpoints send
back about a delivery and the classification (7-2) of each SIREN; and the atomic counters
of envelope serials and reply files.  The mixin uses only the ledger's clock, its actor and
its read and write transactions, declared below for the type checker.
"""

from __future__ import annotations

__all__ = ["LedgerExtras", "MAX_ENVELOPE_SERIAL"]

from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bus import journal
from bus.errors import DocumentError, TransientError
from bus.ledger_schema import (
    _counter_statements,
    circuits_table,
    classifications_table,
    deliveries_table,
    documents_table,
    envelope_serials_table,
    leases_table,
    messages_table,
    replies_table,
    responses_table,
)
from bus.ledger_states import DeliveryState, DocumentState, UnknownEntity

MAX_ENVELOPE_SERIAL = 9999  #: the envelope serial has four digits; the 10000th of a day is refused

_D, _V = DocumentState, DeliveryState


class LedgerExtras:
    """Leases, messages, classifications and counters of :class:`bus.ledger.Ledger`."""

    if TYPE_CHECKING:  # provided by Ledger
        actor: str

        def now(self) -> datetime: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

        def _write_one(self) -> AbstractContextManager[Connection]: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

    # -- leases ----------------------------------------------------------------------------

    def _lease_target(self, entity: str, key: str) -> tuple[Table, list[Any]]:
        if entity == "document":
            return documents_table, [documents_table.c.id == key]
        if entity == "delivery":
            return deliveries_table, [deliveries_table.c.id == key]
        return leases_table, [leases_table.c.entity == entity, leases_table.c.key == key]

    def acquire_lease(self, entity: str, key: str, owner: str, seconds: float) -> bool:
        """Take or extend the lease on a document, a delivery, or anything named (a source):
        True if it is free, expired or already ``owner``'s; False if someone else holds it."""
        table, where = self._lease_target(entity, key)
        now = self.now()
        free = or_(table.c.lease_owner.is_(None), table.c.lease_until.is_(None),
                   table.c.lease_until < now, table.c.lease_owner == owner)
        statement = update(table).where(*where, free).values(
            lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
        with self._write() as conn:
            if conn.execute(statement).rowcount == 1:
                return True
            if table is not leases_table or conn.execute(select(table).where(*where)).first() is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(insert(table).values(entity=entity, key=key, lease_owner=owner,
                                                      lease_until=now + timedelta(seconds=seconds)))
                return True
            except IntegrityError:
                return False  # another worker took it first

    def lease_owner(self, entity: str, key: str) -> str | None:
        """Who holds the lease on ``key`` now (expired or not), or None."""
        table, where = self._lease_target(entity, key)
        with self._read() as conn:
            row = conn.execute(select(table.c.lease_owner).where(*where)).first()
        return None if row is None else row.lease_owner

    def take_over_lease(self, entity: str, key: str, dead: str, owner: str, seconds: float) -> bool:
        """Take the lease ``dead`` still holds (its process is known gone): True if it was still its."""
        table, where = self._lease_target(entity, key)
        statement = update(table).where(*where, table.c.lease_owner == dead).values(
            lease_owner=owner, lease_until=self.now() + timedelta(seconds=seconds))
        with self._write_one() as conn:
            return conn.execute(statement).rowcount == 1

    def release_lease(self, entity: str, key: str, owner: str) -> bool:
        """Give the lease back if ``owner`` holds it; True if released."""
        table, where = self._lease_target(entity, key)
        with self._write_one() as conn:
            result = conn.execute(update(table).where(*where, table.c.lease_owner == owner)
                                  .values(lease_owner=None, lease_until=None))
            return result.rowcount == 1

    def expired_work(
        self, now: datetime | None = None, *, grace: float = 60.0, limit: int | None = None
    ) -> tuple[list[str], list[str]]:
        """For the sweeper: documents in RECEIVED/PREPARED and deliveries in PENDING whose lease
        expired (a worker died, or a back-off ended), or that nobody ever took and that have not
        moved for ``grace`` seconds (their message was lost)."""
        now = now or self.now()
        if now.tzinfo is None:
            raise ValueError(f"expired_work needs a timezone-aware datetime, got naive {now}")
        cutoff = now - timedelta(seconds=grace)
        found: list[list[str]] = []
        with self._read() as conn:
            for table, states in ((documents_table, [_D.RECEIVED.value, _D.PREPARED.value]),
                                  (deliveries_table, [_V.PENDING.value])):
                query = (select(table.c.id)
                         .where(table.c.state.in_(states),
                                or_(table.c.lease_until < now,
                                    and_(table.c.lease_until.is_(None), table.c.updated_at < cutoff)))
                         .order_by(table.c.updated_at, table.c.id).limit(limit))
                found.append([row.id for row in conn.execute(query)])
        return found[0], found[1]

    # -- what endpoints send back ------------------------------------------------------------

    def add_message(
        self, delivery_id: str, *, message_id: str, code: str | None, name: str, sha256: str,
        actor: str | None = None,
    ) -> bool:
        """Record a follow-up message of a delivery, journaled; False if it was recorded already."""
        now = self.now()
        with self._write() as conn:
            known = select(messages_table.c.message_id).where(
                messages_table.c.delivery_id == delivery_id, messages_table.c.message_id == message_id)
            if conn.execute(known).first() is not None:
                return False
            state = conn.execute(select(deliveries_table.c.state).where(deliveries_table.c.id == delivery_id)).scalar()
            if state is None:
                raise UnknownEntity(f"delivery {delivery_id}: not in the ledger", entity="delivery",
                                    entity_id=delivery_id)
            conn.execute(insert(messages_table).values(delivery_id=delivery_id, message_id=message_id, code=code,
                                                       name=name, sha256=sha256, received_at=now))
            journal.append(conn, actor=actor or self.actor, entity="delivery", entity_id=delivery_id,
                           from_state=state, to_state=state, reason=f"message {code or '?'} received: {name}",
                           payload_sha256=sha256, at=now)
        return True

    def messages_of(self, delivery_id: str) -> list[dict[str, Any]]:
        """The follow-up messages recorded for a delivery, oldest first."""
        query = (select(messages_table).where(messages_table.c.delivery_id == delivery_id)
                 .order_by(messages_table.c.received_at))
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def add_response(self, delivery_id: str, message_id: str, document_id: str, code: str) -> bool:
        """Record that ``document_id`` answers the letter ``message_id`` of ``delivery_id``; False if known."""
        with self._write() as conn:
            known = select(responses_table.c.code).where(
                responses_table.c.delivery_id == delivery_id, responses_table.c.message_id == message_id,
                responses_table.c.document_id == document_id)
            if conn.execute(known).first() is not None:
                return False
            conn.execute(insert(responses_table).values(delivery_id=delivery_id, message_id=message_id,
                                                        document_id=document_id, code=code, created_at=self.now()))
        return True

    def response_code(self, document_id: str) -> str | None:
        """The code (2-2, 3-4...) of the answer to a letter that ``document_id`` carries, if it is one."""
        query = select(responses_table.c.code).where(responses_table.c.document_id == document_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else str(row.code)

    def letters_of(self, id_acte: str, code: str) -> list[dict[str, Any]]:
        """The letters ``code`` (2-1, 3-1, 4-1) received about the act ``id_acte``, oldest first."""
        query = (select(messages_table, deliveries_table.c.endpoint, deliveries_table.c.document_id,
                        deliveries_table.c.remote_id)
                 .join(deliveries_table, deliveries_table.c.id == messages_table.c.delivery_id)
                 .where(deliveries_table.c.id_acte == id_acte, messages_table.c.code == code)
                 .order_by(messages_table.c.received_at))
        return [dict(row._mapping) for row in self._read_all(query)]

    def responses_to(self, delivery_id: str, message_id: str) -> list[dict[str, Any]]:
        """The responses recorded for a letter, oldest first."""
        query = (select(responses_table).where(responses_table.c.delivery_id == delivery_id,
                                               responses_table.c.message_id == message_id)
                 .order_by(responses_table.c.created_at))
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def open_letters(self, codes: tuple[str, ...], closing: tuple[str, ...]) -> list[dict[str, Any]]:
        """The letters of ``codes`` received and not answered yet (no response of a ``closing`` code
        recorded, or only ones whose document FAILED), oldest first, with their act's delivery."""
        answered = (select(responses_table.c.delivery_id, responses_table.c.message_id)
                    .join(documents_table, documents_table.c.id == responses_table.c.document_id)
                    .where(documents_table.c.state != "FAILED", responses_table.c.code.in_(closing)))
        answered_keys = {(r.delivery_id, r.message_id) for r in self._read_all(answered)}
        query = (select(messages_table, deliveries_table.c.id_acte, deliveries_table.c.endpoint,
                        deliveries_table.c.document_id, documents_table.c.siren, documents_table.c.source,
                        documents_table.c.bundle)
                 .join(deliveries_table, deliveries_table.c.id == messages_table.c.delivery_id)
                 .join(documents_table, documents_table.c.id == deliveries_table.c.document_id)
                 .where(messages_table.c.code.in_(codes))
                 .order_by(messages_table.c.received_at))
        return [dict(row._mapping) for row in self._read_all(query)
                if (row.delivery_id, row.message_id) not in answered_keys]

    def _read_all(self, query: Any) -> list[Any]:
        with self._read() as conn:
            return list(conn.execute(query))

    def add_classification(self, siren: str, *, date_text: str, name: str, sha256: str) -> bool:
        """Keep a classification (7-2) of a SIREN; False if that version was kept already."""
        with self._write() as conn:
            known = select(classifications_table.c.siren).where(
                classifications_table.c.siren == siren, classifications_table.c.date == date_text)
            if conn.execute(known).first() is not None:
                return False
            conn.execute(insert(classifications_table).values(siren=siren, date=date_text, name=name, sha256=sha256,
                                                              received_at=self.now()))
        return True

    def classification(self, siren: str) -> dict[str, Any] | None:
        """The newest classification kept for a SIREN (siren, date, name, sha256, received_at)."""
        query = (select(classifications_table).where(classifications_table.c.siren == siren)
                 .order_by(classifications_table.c.date.desc()).limit(1))
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else dict(row._mapping)

    def set_circuit(self, endpoint: str, state: str, failures: int) -> None:
        """Record the circuit breaker of ``endpoint`` as this worker sees it now."""
        values = {"state": state, "failures": failures, "actor": self.actor, "updated_at": self.now()}
        with self._write() as conn:
            if conn.execute(update(circuits_table).where(circuits_table.c.endpoint == endpoint)
                            .values(**values)).rowcount == 0:
                conn.execute(insert(circuits_table).values(endpoint=endpoint, **values))

    def circuits(self) -> list[dict[str, Any]]:
        """Every endpoint's circuit as last recorded, by name."""
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(select(circuits_table).order_by(circuits_table.c.endpoint))]

    def backlog(self, source: str, routes: list[str]) -> int:
        """Documents of ``source`` not routed yet, and deliveries of ``routes`` not sent yet."""
        waiting = (select(func.count()).select_from(documents_table)
                   .where(documents_table.c.source == source,
                          documents_table.c.state.in_([_D.RECEIVED.value, _D.PREPARED.value])))
        pending = (select(func.count()).select_from(deliveries_table)
                   .where(deliveries_table.c.route.in_(routes), deliveries_table.c.state == _V.PENDING.value))
        with self._read() as conn:
            return int(conn.execute(waiting).scalar_one()) + int(conn.execute(pending).scalar_one())

    # -- counters --------------------------------------------------------------------------

    def next_envelope_serial(self, siren: str, day: date | str) -> int:
        """The next envelope serial (1, 2, 3...) for this SIREN on this day; at most 9999."""
        day_text = day.isoformat() if isinstance(day, date) else str(day)
        table = envelope_serials_table
        value = self._next(table, {"siren": siren, "day": day_text}, maximum=MAX_ENVELOPE_SERIAL)
        if value is None:
            raise DocumentError(
                f"SIREN {siren}: the {MAX_ENVELOPE_SERIAL} envelope serials of {day_text} are used up; "
                "ACTES allows no more envelopes for this collectivité today, send again tomorrow",
                field="envelope serial",
            )
        return value

    def next_reply_seq(self, source: str, bundle: str) -> int:
        """The next sequence number (1, 2, 3...) of the reply files for ``bundle`` at ``source``."""
        table = replies_table
        value = self._next(table, {"source": source, "bundle": bundle}, maximum=None)
        assert value is not None
        return value

    def _next(self, table: Table, key: dict[str, str], *, maximum: int | None) -> int | None:
        """Atomic counter: UPDATE last = last + 1 RETURNING last, or INSERT 1 when the row is missing,
        each statement complete in itself; None when ``maximum`` is reached."""
        bump, read, create = _counter_statements(table)
        params: dict[str, Any] = {f"k_{name}": value for name, value in key.items()}
        params["maximum"] = maximum if maximum is not None else 2**31 - 1  # the column is an INTEGER
        with self._write_one() as conn:
            for _ in range(3):
                bumped = bump.first(conn, params)
                if bumped is not None:
                    return int(bumped["last"])
                current = read.first(conn, params)
                if current is not None:
                    if maximum is not None and int(current["last"]) >= maximum:
                        return None  # at the maximum
                    continue  # created by another worker after this bump looked (READ COMMITTED): bump again
                if create.run(conn, params):
                    return 1
                # another worker created the row since the read (its key conflicted): bump it instead
        raise TransientError(f"ledger: counter {table.name} {key} kept racing; retry later")
