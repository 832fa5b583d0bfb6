"""The ledger: the truth about every document and every delivery (SQLAlchemy Core).

One row per document from the moment a source connector hands it over, one row per
(document, endpoint) delivery, and a journal event (:mod:`bus.journal`) for every row created
and every state change, written in the same transaction.  SQLite by default (WAL,
``synchronous=FULL``, ``BEGIN IMMEDIATE`` for writes), PostgreSQL for several machines: the
SQL is portable, uniqueness races are resolved by try-insert / catch ``IntegrityError`` in a
savepoint, and rows to change are read ``FOR UPDATE``.

::

    document:  RECEIVED → PREPARED → ROUTED        RECEIVED/PREPARED → FAILED → RECEIVED (replay)
    delivery:  PENDING → SENT → ACKNOWLEDGED | REJECTED | DELIVERED     PENDING → DELIVERED
               PENDING/SENT → FAILED → PENDING (replay)

Timestamps are timezone-aware UTC ``datetime`` objects in Python and naive UTC in the
database (``TIMESTAMP WITHOUT TIME ZONE``), which compares the same way on both engines.
"""

from __future__ import annotations

__all__ = [
    "Ledger",
    "DocumentRow",
    "DeliveryRow",
    "DocumentState",
    "DeliveryState",
    "DOCUMENT_TRANSITIONS",
    "DELIVERY_TRANSITIONS",
    "FINAL_DOCUMENT_STATES",
    "FINAL_DELIVERY_STATES",
    "LedgerError",
    "UnknownEntity",
    "IllegalTransition",
    "StaleState",
    "make_engine",
    "MAX_ENVELOPE_SERIAL",
]

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)

from bus import journal
from bus.errors import ConfigError, DocumentError, HentError, TransientError
from bus.journal import READ_ONLY_OPTION, JournalEntry, metadata

MAX_ENVELOPE_SERIAL = 9999  #: the envelope serial has four digits; the 10000th of a day is refused
BUSY_TIMEOUT_MS = 30_000


# -- states -------------------------------------------------------------------------------


class DocumentState(StrEnum):
    RECEIVED = "RECEIVED"
    PREPARED = "PREPARED"
    ROUTED = "ROUTED"
    FAILED = "FAILED"


class DeliveryState(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    REJECTED = "REJECTED"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


_D, _V = DocumentState, DeliveryState
DOCUMENT_TRANSITIONS: dict[DocumentState, frozenset[DocumentState]] = {
    _D.RECEIVED: frozenset({_D.PREPARED, _D.FAILED}),
    _D.PREPARED: frozenset({_D.ROUTED, _D.FAILED}),
    _D.ROUTED: frozenset(),
    _D.FAILED: frozenset({_D.RECEIVED}),  # replay
}
DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    _V.PENDING: frozenset({_V.SENT, _V.DELIVERED, _V.FAILED}),
    _V.SENT: frozenset({_V.ACKNOWLEDGED, _V.REJECTED, _V.DELIVERED, _V.FAILED}),
    _V.ACKNOWLEDGED: frozenset(),
    _V.REJECTED: frozenset(),
    _V.DELIVERED: frozenset(),
    _V.FAILED: frozenset({_V.PENDING}),  # replay
}
FINAL_DOCUMENT_STATES = frozenset({_D.ROUTED, _D.FAILED})
FINAL_DELIVERY_STATES = frozenset({_V.ACKNOWLEDGED, _V.REJECTED, _V.DELIVERED, _V.FAILED})

#: columns a transition (or :meth:`Ledger.record`) may set besides state and reason
_DOCUMENT_FIELDS = frozenset({"route", "siren", "id_acte", "canonical"})
_DELIVERY_FIELDS = frozenset({"id_acte", "remote_id", "attempts", "client_key", "envelope_name"})


# -- errors -------------------------------------------------------------------------------


class LedgerError(HentError):
    """A ledger operation refused; ``entity`` and ``entity_id`` say on what."""

    def __init__(self, message: str, *, entity: str, entity_id: str) -> None:
        super().__init__(message)
        self.entity = entity
        self.entity_id = entity_id


class UnknownEntity(LedgerError, KeyError):
    """No document or delivery with this id (also a ``KeyError``)."""


class IllegalTransition(LedgerError):
    """The state machine does not allow this change: a bug in the caller, not in the document."""

    def __init__(self, entity: str, entity_id: str, from_state: str, to_state: str) -> None:
        allowed = _allowed(entity, from_state)
        super().__init__(
            f"{entity} {entity_id}: illegal transition {from_state} → {to_state} "
            f"(from {from_state} only {allowed} is allowed)",
            entity=entity,
            entity_id=entity_id,
        )
        self.from_state = from_state
        self.to_state = to_state


class StaleState(LedgerError):
    """Compare-and-set lost: the row is no longer in the state the caller expected.

    Someone else (another worker, the sweeper, a replay) moved it; drop the work, do not retry.
    """

    def __init__(self, entity: str, entity_id: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{entity} {entity_id}: expected state {expected} but it is {actual} "
            "(another worker moved it; this work is stale)",
            entity=entity,
            entity_id=entity_id,
        )
        self.expected = expected
        self.actual = actual


def _allowed(entity: str, state: str) -> str:
    table: dict[Any, frozenset[Any]] = DOCUMENT_TRANSITIONS if entity == "document" else DELIVERY_TRANSITIONS
    targets = sorted(str(s) for s in table.get(state, frozenset()))
    return " or ".join(targets) if targets else "nothing (final state)"


# -- schema -------------------------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database (portable comparisons)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"the ledger stores timezone-aware datetimes only, got naive {value}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _lease_columns() -> list[Column[Any]]:
    return [
        Column("lease_owner", String(200), nullable=True),
        Column("lease_until", UTCDateTime, nullable=True),
    ]


documents_table = Table(
    "documents",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("source", String(200), nullable=False),
    Column("bundle", String(1024), nullable=False),
    Column("idempotency_key", String(1024), nullable=False, unique=True),
    Column("state", String(32), nullable=False),
    Column("route", String(200), nullable=True),
    Column("siren", String(9), nullable=True),
    Column("id_acte", String(64), nullable=True),
    Column("sidecar_sha256", String(64), nullable=False),
    Column("files", JSON(none_as_null=True), nullable=False),
    Column("canonical", JSON(none_as_null=True), nullable=True),
    Column("reason", Text, nullable=True),
    *_lease_columns(),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_documents_state", "state", "updated_at"),
    Index("ix_documents_id_acte", "id_acte"),
)

deliveries_table = Table(
    "deliveries",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("document_id", String(32), ForeignKey("documents.id"), nullable=False),
    Column("route", String(200), nullable=False),
    Column("endpoint", String(200), nullable=False),
    Column("state", String(32), nullable=False),
    Column("artifact_name", String(1024), nullable=True),
    Column("artifact_sha256", String(64), nullable=True),
    Column("artifact_kind", String(64), nullable=True),
    Column("client_key", String(200), nullable=True),
    Column("id_acte", String(64), nullable=True),
    Column("envelope_name", String(200), nullable=True),
    Column("remote_id", String(200), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=True),
    *_lease_columns(),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("final_at", UTCDateTime, nullable=True),
    UniqueConstraint("document_id", "endpoint", name="uq_deliveries_document_endpoint"),
    Index("ix_deliveries_state", "state", "updated_at"),
    Index("ix_deliveries_id_acte", "id_acte"),
    Index("ix_deliveries_client_key", "client_key"),
    Index("ix_deliveries_envelope_name", "envelope_name"),
)

envelope_serials_table = Table(
    "envelope_serials",
    metadata,
    Column("siren", String(9), primary_key=True),
    Column("day", String(10), primary_key=True),  # ISO date, YYYY-MM-DD
    Column("last", Integer, nullable=False),
)

replies_table = Table(
    "replies",
    metadata,
    Column("source", String(200), primary_key=True),
    Column("bundle", String(512), primary_key=True),
    Column("last", Integer, nullable=False),
)

messages_table = Table(  # what an endpoint sent back about a delivery, once each (follow-ups)
    "messages",
    metadata,
    Column("delivery_id", String(32), ForeignKey("deliveries.id"), primary_key=True),
    Column("message_id", String(200), primary_key=True),  # the endpoint's id for it
    Column("code", String(16), nullable=True),
    Column("name", String(512), nullable=False),
    Column("sha256", String(64), nullable=False),  # its bytes, in the spool
    Column("received_at", UTCDateTime, nullable=False),
)

classifications_table = Table(  # the préfecture's classification (7-2) of each SIREN, every version
    "classifications",
    metadata,
    Column("siren", String(9), primary_key=True),
    Column("date", String(10), primary_key=True),  # DateClassification, YYYY-MM-DD
    Column("name", String(512), nullable=False),
    Column("sha256", String(64), nullable=False),  # the 7-2 message, in the spool
    Column("received_at", UTCDateTime, nullable=False),
)

leases_table = Table(  # leases on things that have no row of their own: a source being polled
    "leases",
    metadata,
    Column("entity", String(32), primary_key=True),
    Column("key", String(200), primary_key=True),
    *_lease_columns(),
)


# -- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRow:
    id: str
    source: str
    bundle: str
    idempotency_key: str
    state: DocumentState
    route: str | None
    siren: str | None
    id_acte: str | None  #: the expected IDActe, once known
    sidecar_sha256: str
    files: dict[str, str]  #: file name → sha256 in the spool
    canonical: Any
    reason: str | None  #: why the row is in its current state (a FAILED document: what to fix)
    lease_owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    received_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    document_id: str
    route: str
    endpoint: str
    state: DeliveryState
    artifact_name: str | None
    artifact_sha256: str | None
    artifact_kind: str | None
    client_key: str | None
    id_acte: str | None  #: expected IDActe, replaced by the official one from the ARActe
    envelope_name: str | None
    remote_id: str | None
    attempts: int
    reason: str | None
    lease_owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime
    final_at: datetime | None


def _document(row: Any) -> DocumentRow:
    values = dict(row if isinstance(row, dict) else row._mapping)
    values["state"] = DocumentState(values["state"])
    return DocumentRow(**values)


def _delivery(row: Any) -> DeliveryRow:
    values = dict(row._mapping)
    values["state"] = DeliveryState(values["state"])
    return DeliveryRow(**values)


def _event(actor: str, entity: str, entity_id: str, from_state: Any, to_state: Any, at: datetime,
           reason: str = "", payload_sha256: str | None = None) -> dict[str, Any]:
    return {"actor": actor, "entity": entity, "entity_id": entity_id, "from_state": from_state,
            "to_state": to_state, "reason": reason, "payload_sha256": payload_sha256, "at": at}


# statements of the hot path, built once (SQLAlchemy then only binds their parameters)
_DOCUMENT_BY_ID = select(documents_table).where(documents_table.c.id == bindparam("document_id"))
_DOCUMENT_FOR_UPDATE = _DOCUMENT_BY_ID.with_for_update()
_SAME_ACT = (
    select(documents_table.c.id, documents_table.c.state)
    .where(documents_table.c.id_acte == bindparam("id_acte"), documents_table.c.id != bindparam("document_id"),
           documents_table.c.state != "FAILED")
    .limit(1)
)
_TAKE_DOCUMENT_LEASE = (
    update(documents_table)
    .where(documents_table.c.id == bindparam("document_id"),
           or_(documents_table.c.lease_owner.is_(None), documents_table.c.lease_until.is_(None),
               documents_table.c.lease_until < bindparam("now"), documents_table.c.lease_owner == bindparam("owner")))
    .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
    .returning(*documents_table.c)
)
_NEW_DELIVERY: dict[str, Any] = {
    "remote_id": None, "reason": None, "lease_owner": None, "lease_until": None, "final_at": None,
}
_DELIVERY_PLAN_FIELDS = frozenset({
    "route", "endpoint", "artifact_name", "artifact_sha256", "artifact_kind", "client_key", "id_acte", "envelope_name",
})


_COUNTERS: dict[str, tuple[Any, Any]] = {}


def _counter_statements(table: Table) -> tuple[Any, Any]:
    """The bump (UPDATE ... RETURNING, SQLite 3.35+ and PostgreSQL) and read of a counter table,
    built once; parameters ``k_<key column>`` and ``maximum``."""
    if table.name not in _COUNTERS:
        where = [column == bindparam(f"k_{column.name}") for column in table.primary_key.columns]
        bump = (update(table).where(*where, table.c.last < bindparam("maximum"))
                .values(last=table.c.last + 1).returning(table.c.last))
        _COUNTERS[table.name] = (bump, select(table.c.last).where(*where))
    return _COUNTERS[table.name]


# -- engine -------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite: WAL, synchronous=FULL, busy timeout, BEGIN IMMEDIATE."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        shown = url.split("@")[-1] if "@" in url else url
        raise ConfigError(
            f"ledger: cannot use URL …{shown}: {exc} (expected sqlite:///path or postgresql://...; "
            "for PostgreSQL install a driver such as psycopg)",
            field="bus.ledger",
        ) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # commits survive a crash of the process at once; they survive a power loss once
        # Ledger.sync() has run, which the runtime does before any effect outside the bus
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


# -- the ledger ---------------------------------------------------------------------------


class Ledger:
    """Documents, deliveries, counters, leases and the journal, in one database."""

    def __init__(
        self, url: str, *, actor: str = "hent", clock: Callable[[], datetime] | None = None
    ) -> None:
        self.url = url
        self.actor = actor
        self._clock = clock or (lambda: datetime.now(UTC))
        self.engine = make_engine(url)
        self._writer_lock: Any = threading.Lock() if self.engine.dialect.name == "sqlite" else nullcontext()
        self.create_schema()

    def __repr__(self) -> str:
        return f"Ledger({self.engine.url.render_as_string(hide_password=True)!r})"

    def now(self) -> datetime:
        return self._clock()

    def create_schema(self) -> None:
        """Create missing tables and the journal head; safe when several workers start at once."""
        for attempt in range(3):
            try:
                with self._write() as conn:
                    metadata.create_all(conn)
                    journal.ensure_head(conn)
                return
            except (IntegrityError, ProgrammingError):  # PostgreSQL: another worker created it meanwhile
                if attempt == 2:
                    raise

    def ping(self) -> bool:
        """True when the database answers (for ``/readyz``)."""
        try:
            with self._read() as conn:
                conn.execute(select(1)).scalar()
            return True
        except Exception:  # noqa: BLE001 - readiness says no, it does not raise
            return False

    def close(self) -> None:
        self.engine.dispose()

    def sync(self) -> None:
        """Make every committed transaction durable (power loss included).

        Called before the bus acts outside itself (sends a delivery, moves a source file).
        PostgreSQL commits are durable already; SQLite in WAL mode with synchronous=NORMAL
        is made durable by an fsync of its write-ahead log, one for many commits.
        """
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return
        wal = Path(f"{self.engine.url.database}-wal")
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:  # checkpointed and removed: the database file is synced
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            # SQLite takes one writer at a time and makes the others sleep and retry: the
            # threads of this process queue on a lock instead, and wake as soon as it is free
            with self._writer_lock, self.engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(f"ledger unavailable or busy: {exc.orig or exc}; retry later") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(f"ledger unavailable or busy: {exc.orig or exc}; retry later") from exc

    # -- documents -------------------------------------------------------------------------

    def add_document(
        self,
        *,
        source: str,
        bundle: str,
        idempotency_key: str,
        sidecar_sha256: str,
        files: dict[str, str],
        actor: str | None = None,
        received_at: datetime | None = None,
    ) -> tuple[DocumentRow, bool]:
        """Record a new document in RECEIVED; ``(existing, False)`` if the key is known."""
        query = select(documents_table).where(documents_table.c.idempotency_key == idempotency_key)
        with self._write() as conn:
            existing = conn.execute(query).first()
            if existing is not None:
                return _document(existing), False
            now = self.now()
            document_id = uuid.uuid4().hex
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(documents_table).values(
                            id=document_id, source=source, bundle=bundle, idempotency_key=idempotency_key,
                            state=DocumentState.RECEIVED.value, sidecar_sha256=sidecar_sha256,
                            files=dict(files), created_at=now, updated_at=now, received_at=received_at or now,
                        )
                    )
            except IntegrityError:  # PostgreSQL: another worker inserted the same key meanwhile
                return _document(conn.execute(query).one()), False
            journal.append(
                conn, actor=actor or self.actor, entity="document", entity_id=document_id,
                from_state=None, to_state=DocumentState.RECEIVED, reason=f"received {source}:{bundle}",
                payload_sha256=sidecar_sha256, at=now,
            )
            row = conn.execute(select(documents_table).where(documents_table.c.id == document_id)).one()
            return _document(row), True

    def get_document(self, document_id: str) -> DocumentRow:
        with self._read() as conn:
            row = conn.execute(select(documents_table).where(documents_table.c.id == document_id)).first()
        if row is None:
            raise UnknownEntity(f"document {document_id}: not in the ledger", entity="document",
                                entity_id=document_id)
        return _document(row)

    def find_document(self, idempotency_key: str) -> DocumentRow | None:
        query = select(documents_table).where(documents_table.c.idempotency_key == idempotency_key)
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _document(row)

    def transition_document(
        self, document_id: str, to_state: DocumentState | str, *, actor: str | None = None,
        reason: str = "", payload_sha256: str | None = None, expect: DocumentState | str | None = None,
        **fields: Any,
    ) -> DocumentRow:
        """Move a document to ``to_state``, setting ``fields`` (route, siren, id_acte, canonical).

        ``reason`` goes to the journal and to the row's ``reason`` column; ``expect`` is the
        state the caller read (compare-and-set): if the row moved meanwhile, :class:`StaleState`.
        """
        row, _ = self._change("document", document_id, DocumentState(to_state), actor=actor, reason=reason,
                              payload_sha256=payload_sha256, expect=expect, fields=fields)
        return _document(row)

    def documents(
        self, *, state: str | None = None, route: str | None = None, siren: str | None = None,
        source: str | None = None, id_acte: str | None = None, limit: int | None = None,
    ) -> list[DocumentRow]:
        table = documents_table
        query = select(table).order_by(table.c.created_at, table.c.id)
        filters = (("state", state), ("route", route), ("siren", siren), ("source", source), ("id_acte", id_acte))
        for column, value in filters:
            if value is not None:
                query = query.where(table.c[column] == str(value))
        with self._read() as conn:
            return [_document(row) for row in conn.execute(query.limit(limit))]

    # -- deliveries ------------------------------------------------------------------------

    def add_delivery(
        self, document_id: str, *, route: str, endpoint: str, artifact_name: str | None,
        artifact_sha256: str | None, artifact_kind: str | None, client_key: str | None,
        id_acte: str | None, envelope_name: str | None, actor: str | None = None,
    ) -> DeliveryRow:
        """Record a delivery in PENDING; if (document, endpoint) has one already, return it as is."""
        with self._write() as conn:
            return self._add_delivery_in(
                conn, document_id, route=route, endpoint=endpoint, artifact_name=artifact_name,
                artifact_sha256=artifact_sha256, artifact_kind=artifact_kind, client_key=client_key,
                id_acte=id_acte, envelope_name=envelope_name, actor=actor,
            )

    def _add_delivery_in(
        self, conn: Connection, document_id: str, *, route: str, endpoint: str, artifact_name: str | None,
        artifact_sha256: str | None, artifact_kind: str | None, client_key: str | None,
        id_acte: str | None, envelope_name: str | None, actor: str | None = None,
    ) -> DeliveryRow:
        table = deliveries_table
        query = select(table).where(table.c.document_id == document_id, table.c.endpoint == endpoint)
        existing = conn.execute(query).first()
        if existing is not None:
            return _delivery(existing)
        parent = select(documents_table.c.id).where(documents_table.c.id == document_id)
        if conn.execute(parent).first() is None:
            raise UnknownEntity(f"document {document_id}: not in the ledger, cannot add a delivery to it",
                                entity="document", entity_id=document_id)
        now = self.now()
        delivery_id = uuid.uuid4().hex
        try:
            with conn.begin_nested():
                conn.execute(insert(table).values(
                    id=delivery_id, document_id=document_id, route=route, endpoint=endpoint,
                    state=DeliveryState.PENDING.value, artifact_name=artifact_name,
                    artifact_sha256=artifact_sha256, artifact_kind=artifact_kind, client_key=client_key,
                    id_acte=id_acte, envelope_name=envelope_name, attempts=0,
                    created_at=now, updated_at=now,
                ))
        except IntegrityError:
            return _delivery(conn.execute(query).one())
        journal.append(
            conn, actor=actor or self.actor, entity="delivery", entity_id=delivery_id, from_state=None,
            to_state=DeliveryState.PENDING,
            reason=f"document {document_id} to {endpoint} by route {route}",
            payload_sha256=artifact_sha256, at=now,
        )
        return _delivery(conn.execute(select(table).where(table.c.id == delivery_id)).one())

    def route_document(
        self, document_id: str, *, deliveries: list[dict[str, Any]], prepared: dict[str, Any] | None = None,
        actor: str | None = None, release_owner: str | None = None, payload_sha256: str | None = None,
        unique_id_acte: bool = False,
    ) -> tuple[DocumentRow, list[DeliveryRow]]:
        """In ONE transaction: RECEIVED → PREPARED setting ``prepared`` (route, siren, id_acte,
        canonical) when given, a PENDING delivery per entry of ``deliveries`` (the keyword
        arguments of :meth:`add_delivery`), → ROUTED, and the lease of ``release_owner`` given back.

        With ``unique_id_acte``, another document with the same IDActe that did not fail
        makes it raise DocumentError (rule ``act-unique``): an act is never sent twice.
        A crash or an error leaves the document as it was before, never half routed.
        """
        unknown = sorted(set(prepared or {}) - _DOCUMENT_FIELDS)
        if unknown:
            raise TypeError(f"document {document_id}: cannot set {', '.join(unknown)}")
        actor = actor or self.actor
        documents, table = documents_table, deliveries_table
        with self._write() as conn:
            row = conn.execute(_DOCUMENT_FOR_UPDATE, {"document_id": document_id}).first()
            if row is None:
                raise UnknownEntity(f"document {document_id}: not in the ledger", entity="document",
                                    entity_id=document_id)
            expected = _D.RECEIVED if prepared is not None else _D.PREPARED
            if row.state != expected:
                raise StaleState("document", document_id, expected, row.state)
            id_acte = (prepared or {}).get("id_acte", row.id_acte)
            if unique_id_acte and id_acte:
                other = conn.execute(_SAME_ACT, {"id_acte": id_acte, "document_id": document_id}).first()
                if other is not None:
                    raise DocumentError(
                        f"act {id_acte} was already received as document {other.id} (state {other.state}); "
                        "it is not sent twice: to send a corrected act, give it a new NumeroInterne",
                        path=row.bundle, field="numero_interne", rule="act-unique",
                    )
            now = self.now()
            events: list[dict[str, Any]] = []
            if prepared is not None:
                events.append(_event(actor, "document", document_id, _D.RECEIVED, _D.PREPARED, now,
                                     payload_sha256=payload_sha256))
            existing = set() if prepared is not None else {
                r.endpoint for r in conn.execute(select(table.c.endpoint).where(table.c.document_id == document_id))
            }
            rows = []
            for plan in deliveries:
                unknown = sorted(set(plan) - _DELIVERY_PLAN_FIELDS)
                if unknown:
                    raise TypeError(f"delivery of document {document_id}: unknown {', '.join(unknown)}")
                if plan["endpoint"] in existing:
                    continue
                existing.add(plan["endpoint"])
                delivery_id = uuid.uuid4().hex
                values = {name: plan.get(name) for name in _DELIVERY_PLAN_FIELDS}
                values.update(id=delivery_id, document_id=document_id, state=_V.PENDING.value, attempts=0,
                              created_at=now, updated_at=now)
                rows.append(values)
                events.append(_event(actor, "delivery", delivery_id, None, _V.PENDING, now,
                                     reason=f"document {document_id} to {plan['endpoint']} by route {plan['route']}",
                                     payload_sha256=plan.get("artifact_sha256")))
            events.append(_event(actor, "document", document_id, _D.PREPARED, _D.ROUTED, now,
                                 reason=f"{len(deliveries)} deliver{'y' if len(deliveries) == 1 else 'ies'}"))
            if rows:
                conn.execute(insert(table), rows)
            values = {**(prepared or {}), "state": _D.ROUTED.value, "reason": None, "updated_at": now}
            if release_owner is not None and row.lease_owner == release_owner:
                values.update(lease_owner=None, lease_until=None)
            conn.execute(update(documents).where(documents.c.id == document_id).values(**values))
            journal.append_many(conn, events)
            if prepared is None:  # deliveries may predate this call: read them all
                created = [_delivery(r) for r in conn.execute(
                    select(table).where(table.c.document_id == document_id).order_by(table.c.created_at, table.c.id))]
            else:  # the rows are what was just inserted: no need to read them back
                created = [DeliveryRow(**{**_NEW_DELIVERY, **r, "state": _V.PENDING}) for r in rows]
        return _document({**row._mapping, **values}), created

    def claim_document(self, document_id: str, owner: str, seconds: float) -> DocumentRow | None:
        """Take the document's lease (free, expired or already ``owner``'s) and read it, in one
        transaction; None when someone else holds it."""
        now = self.now()
        with self._write() as conn:
            row = conn.execute(_TAKE_DOCUMENT_LEASE, {
                "document_id": document_id, "owner": owner, "now": now,
                "until": now + timedelta(seconds=seconds),
            }).first()
        return None if row is None else _document(row)

    def get_delivery(self, delivery_id: str) -> DeliveryRow:
        with self._read() as conn:
            row = conn.execute(select(deliveries_table).where(deliveries_table.c.id == delivery_id)).first()
        if row is None:
            raise UnknownEntity(f"delivery {delivery_id}: not in the ledger", entity="delivery",
                                entity_id=delivery_id)
        return _delivery(row)

    def deliveries_of(self, document_id: str) -> list[DeliveryRow]:
        return self.deliveries(document_id=document_id)

    def transition_delivery(
        self, delivery_id: str, to_state: DeliveryState | str, *, actor: str | None = None,
        reason: str = "", payload_sha256: str | None = None, expect: DeliveryState | str | None = None,
        **fields: Any,
    ) -> DeliveryRow:
        """Move a delivery to ``to_state``, setting ``fields`` (id_acte, remote_id, attempts,
        client_key, envelope_name); ``final_at`` is set on entering a final state, cleared on replay."""
        row, _ = self._change("delivery", delivery_id, DeliveryState(to_state), actor=actor, reason=reason,
                              payload_sha256=payload_sha256, expect=expect, fields=fields)
        return _delivery(row)

    def find_delivery(
        self, *, id_acte: str | None = None, client_key: str | None = None, envelope_name: str | None = None
    ) -> DeliveryRow | None:
        """The delivery matching every given key (the most recent if several), or None."""
        table = deliveries_table
        criteria = [table.c[name] == value for name, value in
                    (("id_acte", id_acte), ("client_key", client_key), ("envelope_name", envelope_name))
                    if value is not None]
        if not criteria:
            raise ValueError("find_delivery needs id_acte, client_key or envelope_name")
        query = select(table).where(*criteria).order_by(table.c.created_at.desc(), table.c.id).limit(1)
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else _delivery(row)

    def deliveries(
        self, *, state: str | None = None, route: str | None = None, endpoint: str | None = None,
        document_id: str | None = None, limit: int | None = None,
    ) -> list[DeliveryRow]:
        table = deliveries_table
        query = select(table).order_by(table.c.created_at, table.c.id)
        for column, value in (("state", state), ("route", route), ("endpoint", endpoint),
                              ("document_id", document_id)):
            if value is not None:
                query = query.where(table.c[column] == str(value))
        with self._read() as conn:
            return [_delivery(row) for row in conn.execute(query.limit(limit))]

    def bump_attempts(self, delivery_id: str) -> int:
        """Count one more send attempt (not journaled); return the new count."""
        table = deliveries_table
        with self._write() as conn:
            result = conn.execute(update(table).where(table.c.id == delivery_id)
                                  .values(attempts=table.c.attempts + 1, updated_at=self.now()))
            if result.rowcount != 1:
                raise UnknownEntity(f"delivery {delivery_id}: not in the ledger", entity="delivery",
                                    entity_id=delivery_id)
            return int(conn.execute(select(table.c.attempts).where(table.c.id == delivery_id)).scalar_one())

    # -- both ------------------------------------------------------------------------------

    def record(
        self, entity: str, entity_id: str, *, actor: str | None = None, reason: str,
        payload_sha256: str | None = None, **fields: Any,
    ) -> JournalEntry:
        """Journal an event that changes no state (a letter after ACKNOWLEDGED, an observation),
        optionally setting ``fields``; the event's from_state and to_state are the current state."""
        _, entry = self._change(entity, entity_id, None, actor=actor, reason=reason,
                                payload_sha256=payload_sha256, expect=None, fields=fields)
        return entry

    def _change(
        self, entity: str, entity_id: str, to_state: str | None, *, actor: str | None, reason: str,
        payload_sha256: str | None, expect: str | None, fields: dict[str, Any],
    ) -> tuple[Any, JournalEntry]:
        table, allowed_fields, transitions, final = (
            (documents_table, _DOCUMENT_FIELDS, DOCUMENT_TRANSITIONS, FINAL_DOCUMENT_STATES)
            if entity == "document" else
            (deliveries_table, _DELIVERY_FIELDS, DELIVERY_TRANSITIONS, FINAL_DELIVERY_STATES)
            if entity == "delivery" else (None, None, None, None)
        )
        if table is None or allowed_fields is None or transitions is None or final is None:
            raise ValueError(f"entity must be 'document' or 'delivery', not {entity!r}")
        unknown = sorted(set(fields) - allowed_fields)
        if unknown:
            raise TypeError(f"{entity} {entity_id}: cannot set {', '.join(unknown)} "
                            f"(settable: {', '.join(sorted(allowed_fields))})")
        with self._write() as conn:
            return self._change_in(conn, entity, entity_id, to_state, actor=actor, reason=reason,
                                   payload_sha256=payload_sha256, expect=expect, fields=fields,
                                   table=table, transitions=transitions, final=final)

    def _change_in(
        self, conn: Connection, entity: str, entity_id: str, to_state: str | None, *, actor: str | None,
        reason: str, payload_sha256: str | None, expect: str | None, fields: dict[str, Any],
        table: Table, transitions: Any, final: Any,
    ) -> tuple[Any, JournalEntry]:
        row = conn.execute(select(table).where(table.c.id == entity_id).with_for_update()).first()
        if row is None:
            raise UnknownEntity(f"{entity} {entity_id}: not in the ledger",
                                entity=entity, entity_id=entity_id)
        current = row.state
        if expect is not None and current != str(expect):
            raise StaleState(entity, entity_id, str(expect), current)
        now = self.now()
        values: dict[str, Any] = {**fields, "updated_at": now}
        if to_state is None:  # an event, no transition: the row's reason column is left alone
            to_state = current
        else:
            if to_state not in transitions[current]:  # type: ignore[index]
                raise IllegalTransition(entity, entity_id, current, to_state)
            values.update(state=str(to_state), reason=reason or None)
            if entity == "delivery":
                values["final_at"] = now if to_state in final else None
        result = conn.execute(update(table).where(table.c.id == entity_id, table.c.state == current)
                              .values(**values))
        if result.rowcount != 1:  # cannot happen under the row lock; kept as the CAS guard
            raise StaleState(entity, entity_id, current, "changed meanwhile")
        entry = journal.append(conn, actor=actor or self.actor, entity=entity, entity_id=entity_id,
                               from_state=current, to_state=to_state, reason=reason,
                               payload_sha256=payload_sha256, at=now)
        return conn.execute(select(table).where(table.c.id == entity_id)).one(), entry

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

    def release_lease(self, entity: str, key: str, owner: str) -> bool:
        """Give the lease back if ``owner`` holds it; True if released."""
        table, where = self._lease_target(entity, key)
        with self._write() as conn:
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
        """Atomic counter: UPDATE last = last + 1 RETURNING last, or INSERT 1, retrying if an
        insert races; None when ``maximum`` is reached."""
        bump, read = _counter_statements(table)
        params: dict[str, Any] = {f"k_{name}": value for name, value in key.items()}
        params["maximum"] = maximum if maximum is not None else 2**31 - 1  # the column is an INTEGER
        with self._write() as conn:
            for _ in range(3):
                bumped = conn.execute(bump, params).first()
                if bumped is not None:
                    return int(bumped[0])
                if conn.execute(read, params).first() is not None:
                    return None  # at the maximum
                try:
                    with conn.begin_nested():
                        conn.execute(insert(table).values(**key, last=1))
                    return 1
                except IntegrityError:
                    continue  # another worker created the row: bump it instead
        raise TransientError(f"ledger: counter {table.name} {key} kept racing; retry later")

    # -- reporting -------------------------------------------------------------------------

    def counts_by_state(self) -> dict[str, dict[str, int]]:
        """``{"document": {state: n}, "delivery": {state: n}}``, every state present (0 if none)."""
        counts: dict[str, dict[str, int]] = {
            "document": {s.value: 0 for s in DocumentState},
            "delivery": {s.value: 0 for s in DeliveryState},
        }
        with self._read() as conn:
            for entity, table in (("document", documents_table), ("delivery", deliveries_table)):
                query = select(table.c.state, func.count()).group_by(table.c.state)
                for state, number in conn.execute(query):
                    counts[entity][state] = int(number)
        return counts

    def entries(self, entity_id: str) -> list[JournalEntry]:
        """The journal events of one document or delivery, oldest first."""
        with self._read() as conn:
            return journal.entries(conn, entity_id)

    def history(self, document_id: str) -> list[JournalEntry]:
        """The journal events of a document and of all its deliveries, oldest first."""
        ids = [document_id, *(d.id for d in self.deliveries_of(document_id))]
        with self._read() as conn:
            return journal.entries(conn, ids)

    def verify_journal(self) -> list[str]:
        """Problems found in the journal (``[]`` when intact): the chain and its head (see
        :func:`bus.journal.verify`), then each row's state against its last journal event."""
        with self._read() as conn:
            return journal.verify(conn) + self._verify_states(conn)

    def _verify_states(self, conn: Connection) -> list[str]:
        events = journal.journal_table
        last = (select(events.c.entity_id, func.max(events.c.seq).label("seq"))
                .group_by(events.c.entity_id).subquery())
        journaled: dict[str, str] = {
            entity_id: to_state for entity_id, to_state in
            conn.execute(select(events.c.entity_id, events.c.to_state).join(last, events.c.seq == last.c.seq))
        }
        problems: list[str] = []
        for entity, table in (("document", documents_table), ("delivery", deliveries_table)):
            for entity_id, state in conn.execute(select(table.c.id, table.c.state).order_by(table.c.id)):
                said = journaled.get(entity_id)
                if said is None:
                    problems.append(f"{entity} {entity_id}: no journal event "
                                    "(row written behind the bus's back)")
                elif said != state:
                    problems.append(f"{entity} {entity_id}: state is {state} but its last journal event says "
                                    f"{said} (state edited behind the bus's back)")
        return problems
