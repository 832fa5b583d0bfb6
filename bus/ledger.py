"""The ledger: the truth about every document and every delivery (SQLAlchemy Core).

One row per document from the moment a source connector hands it over, one row per
(document, endpoint) delivery, and a journal event (:mod:`bus.journal`) for every row created
and every state change, written in the same transaction.  SQLite by default (WAL,
``synchronous=NORMAL`` and the WAL fsynced by :meth:`Ledger.sync` before any effect outside,
``BEGIN IMMEDIATE`` for writes), PostgreSQL for several machines: the
SQL is portable, uniqueness races are resolved by the unique keys themselves (a document's
idempotency key: ``INSERT ... ON CONFLICT DO NOTHING``; elsewhere try-insert / catch
``IntegrityError`` in a savepoint), and rows to change are read ``FOR UPDATE``.

::

    document:  RECEIVED → PREPARED → ROUTED        RECEIVED/PREPARED → FAILED → RECEIVED (replay)
    delivery:  PENDING → SENT → ACKNOWLEDGED | REJECTED | DELIVERED     PENDING → DELIVERED
               PENDING/SENT → FAILED → PENDING (replay)

Timestamps are timezone-aware UTC ``datetime`` objects in Python and naive UTC in the
database (``TIMESTAMP WITHOUT TIME ZONE``), which compares the same way on both engines.

This module holds :class:`Ledger` and the engine it opens; the states and errors are in
:mod:`bus.ledger_states`, the tables and row types in :mod:`bus.ledger_schema`, leases,
messages and counters in the mixin :mod:`bus.ledger_extras`.  Import them all from here.
"""

from __future__ import annotations

__all__ = [
    "Ledger",
    "DocumentRow",
    "NewDocument",
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
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
from bus.errors import ConfigError, DocumentError, TransientError
from bus.journal import READ_ONLY_OPTION, JournalEntry, metadata
from bus.ledger_extras import MAX_ENVELOPE_SERIAL, LedgerExtras
from bus.ledger_schema import (  # the names marked F401 are only re-exported: importable here as before
    _DELIVERY_PLAN_FIELDS,
    _DOCUMENT_FOR_UPDATE,
    _INSERT_DELIVERIES,
    _NEW_DELIVERY,
    _ROW_FOR_UPDATE,
    _SAME_ACT,
    _TAKE_DELIVERY_LEASE,
    _TAKE_DOCUMENT_LEASE,
    DeliveryRow,
    DocumentRow,
    NewDocument,
    UTCDateTime,  # noqa: F401
    _delivery,
    _document,
    _event,
    _row_update,
    _row_update_params,
    classifications_table,  # noqa: F401
    deliveries_table,
    documents_table,
    envelope_serials_table,  # noqa: F401
    leases_table,
    messages_table,  # noqa: F401
    replies_table,  # noqa: F401
)
from bus.ledger_sql import Pending, Prepared, every_column, pipelined_transaction, sync_pipelines
from bus.ledger_states import (
    _DELIVERY_FIELDS,
    _DOCUMENT_FIELDS,
    DELIVERY_TRANSITIONS,
    DOCUMENT_TRANSITIONS,
    FINAL_DELIVERY_STATES,
    FINAL_DOCUMENT_STATES,
    DeliveryState,
    DocumentState,
    IllegalTransition,
    LedgerError,
    StaleState,
    UnknownEntity,
)
from bus.writer_lock import WriterLock

BUSY_TIMEOUT_MS = 30_000  #: read each time SQLite opens a connection (tests lower it here)
_REPLY = "reply"  #: the lease entity of a reply owed to a source (see Ledger.owed_replies)

# The statements of every act, built once and run on the DBAPI cursor (bus/ledger_sql.py)
_DOCUMENT_BY_ID = Prepared(select(documents_table).where(documents_table.c.id == bindparam("key")))
_DOCUMENT_BY_KEY = Prepared(select(documents_table).where(documents_table.c.idempotency_key == bindparam("key")))
_DELIVERY_BY_ID = Prepared(select(deliveries_table).where(deliveries_table.c.id == bindparam("key")))
_COUNT_ATTEMPT = Prepared(update(deliveries_table).where(deliveries_table.c.id == bindparam("key"))
                          .values(attempts=deliveries_table.c.attempts + 1, updated_at=bindparam("now"))
                          .returning(deliveries_table.c.attempts))
_LATEST_DELIVERY_OF_ACT = Prepared(
    select(deliveries_table).where(deliveries_table.c.id_acte == bindparam("id_acte"))
    .order_by(deliveries_table.c.created_at.desc(), deliveries_table.c.id).limit(1)
)
_REPLY_WRITTEN = Prepared(
    delete(leases_table).where(leases_table.c.entity == _REPLY, leases_table.c.key == bindparam("key"))
)


_BEGIN, _BEGIN_IMMEDIATE = Prepared(text("BEGIN")), Prepared(text("BEGIN IMMEDIATE"))  # SQLite's, below


def _owe_reply_upsert(insert_of: Any) -> Any:
    upsert = insert_of(leases_table).values(entity=_REPLY, key=bindparam("o_key"), lease_owner=bindparam("o_owner"),
                                             lease_until=bindparam("o_until"))
    return upsert.on_conflict_do_update(index_elements=[leases_table.c.entity, leases_table.c.key],
                                        set_={"lease_owner": upsert.excluded.lease_owner,
                                              "lease_until": upsert.excluded.lease_until})


_OWE_REPLY = Prepared.with_dialect_insert(_owe_reply_upsert)


def _add_document_insert(insert_of: Any) -> Any:
    """Every column bound by its name; nothing inserted (no row returned) when the idempotency key
    is known."""
    return insert_of(documents_table).values(every_column(documents_table)).on_conflict_do_nothing(
        index_elements=[documents_table.c.idempotency_key]).returning(documents_table.c.id)


_ADD_DOCUMENT = Prepared.with_dialect_insert(_add_document_insert)

_D, _V = DocumentState, DeliveryState


# -- engine -------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    """An engine for ``url``; on SQLite: WAL, synchronous=NORMAL, busy timeout, BEGIN IMMEDIATE."""
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # SQLite: transactions are begun and ended explicitly (below), so a connection given back to
        # the pool has nothing to roll back: skip the reset's round trip
        sqlite = parsed.get_backend_name() == "sqlite"
        engine = create_engine(parsed, **({"pool_reset_on_return": None} if sqlite else {}))
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        shown = url.split("@")[-1] if "@" in url else url
        raise ConfigError(
            f"ledger: cannot use URL …{shown}: {exc} (expected sqlite:///path or postgresql://...; "
            "for PostgreSQL install a driver such as psycopg)",
            field="bus.ledger",
        ) from exc
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    else:  # a statement Connection.execute runs in a pipelined transaction waits for its result
        sync_pipelines(engine)
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
        (_BEGIN if read_only else _BEGIN_IMMEDIATE).run(conn)


def _writer_lock(engine: Engine) -> Any:
    """What a write transaction holds first: on a SQLite file, the writers of every process queue
    on a :class:`WriterLock` beside it; in memory, the threads on a lock; PostgreSQL, nothing."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    database = engine.url.database
    if database in (None, "", ":memory:") or str(database).startswith("file:"):
        return threading.Lock()
    return WriterLock(f"{database}-writer.lock", timeout=BUSY_TIMEOUT_MS / 1000)


@contextmanager
def _unavailable_is_transient() -> Iterator[None]:
    """A database unreachable or busy is a :class:`TransientError`: the caller retries later."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise TransientError(f"ledger unavailable or busy: {exc.orig or exc}; retry later") from exc
    except TimeoutError as exc:
        raise TransientError(f"ledger busy: {exc}; retry later") from exc


# -- the ledger ---------------------------------------------------------------------------


class Ledger(LedgerExtras):
    """Documents, deliveries, counters, leases and the journal, in one database."""

    reply_lease = 60.0  #: seconds a worker has to write the reply of a delivery it made final

    def __init__(
        self, url: str, *, actor: str = "hent", clock: Callable[[], datetime] | None = None
    ) -> None:
        self.url = url
        self.actor = actor
        self._clock = clock or (lambda: datetime.now(UTC))
        self.engine = make_engine(url)
        self._writer_lock: Any = _writer_lock(self.engine)
        # PostgreSQL: what is one statement (or statements each complete in itself) runs without
        # BEGIN and COMMIT, two round trips fewer; each statement is then its own transaction
        sqlite = self.engine.dialect.name == "sqlite"
        self._autocommit: Engine | None = (None if sqlite else
                                           self.engine.execution_options(isolation_level="AUTOCOMMIT"))
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
        if isinstance(self._writer_lock, WriterLock):
            self._writer_lock.close()

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
    def _write(self, *, pipeline: bool = False) -> Iterator[Connection]:
        """A write transaction; ``pipeline``: on PostgreSQL, in psycopg's pipeline mode, so that
        the statements queued (``Prepared.queue``) go with the next round trip (bus/ledger_sql.py;
        a plain transaction elsewhere)."""
        with _unavailable_is_transient():
            # SQLite takes one writer at a time and makes the others sleep and retry: the
            # writers queue on a lock instead, and wake as soon as it is free (bus/writer_lock.py)
            with self._writer_lock, self.engine.connect() as conn, \
                    (pipelined_transaction(conn) if pipeline else conn.begin()):
                yield conn

    def _write_one(self) -> AbstractContextManager[Connection]:
        """A write of one statement, or of statements each complete in itself (a counter's bump, then
        its insert when missing): on PostgreSQL each is its own transaction; on SQLite as ``_write``."""
        return self._autocommitted(self._write)

    def _read(self) -> AbstractContextManager[Connection]:
        """Reads.  On PostgreSQL each SELECT sees what was committed before it began, as it would
        in a READ COMMITTED transaction, without the BEGIN and COMMIT around them."""
        return self._autocommitted(self._read_transaction)

    @contextmanager
    def _autocommitted(self, otherwise: Callable[[], AbstractContextManager[Connection]]) -> Iterator[Connection]:
        """A connection in autocommit on PostgreSQL; ``otherwise()`` on SQLite."""
        if self._autocommit is None:
            with otherwise() as conn:
                yield conn
            return
        with _unavailable_is_transient(), self._autocommit.connect() as conn:
            yield conn

    @contextmanager
    def _read_transaction(self) -> Iterator[Connection]:
        """Reads in one transaction (a server-side cursor needs one on PostgreSQL)."""
        with _unavailable_is_transient(), \
                self.engine.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
            yield conn

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
        new = NewDocument(source=source, bundle=bundle, idempotency_key=idempotency_key,
                          sidecar_sha256=sidecar_sha256, files=files, received_at=received_at)
        return self.add_documents([new], actor=actor)[0]

    def add_documents(self, documents: Sequence[NewDocument], *, actor: str | None = None
                      ) -> list[tuple[DocumentRow, bool]]:
        """Record new documents in RECEIVED, in one transaction (a source's bundles taken in together:
        one commit, one move of the journal's head); for each, in order, ``(row, True)``, or
        ``(existing, False)`` when its key is known.  All or none: an error records none."""
        now = self.now()
        rows = [{
            "id": uuid.uuid4().hex, "source": new.source, "bundle": new.bundle,
            "idempotency_key": new.idempotency_key, "state": DocumentState.RECEIVED.value, "route": None,
            "siren": None, "id_acte": None, "sidecar_sha256": new.sidecar_sha256, "files": dict(new.files),
            "canonical": None, "reason": None, "lease_owner": None, "lease_until": None, "created_at": now,
            "updated_at": now, "received_at": new.received_at or now,
        } for new in documents]
        if not rows:
            return []
        with self._write(pipeline=True) as conn:
            # insert first, the key's uniqueness deciding: nothing inserted when the key is known, even
            # when another worker's transaction inserted it a moment ago (PostgreSQL waits for its end)
            inserted = [_ADD_DOCUMENT.send(conn, row) for row in rows]
            head = journal.lock_head(conn)  # sent with the inserts, after them: one round trip
            added: list[tuple[DocumentRow, bool]] = []
            events: list[dict[str, Any]] = []
            for row, answer in zip(rows, inserted, strict=True):
                if not answer.rows():
                    found = _DOCUMENT_BY_KEY.first(conn, {"key": row["idempotency_key"]})
                    assert found is not None  # documents are never deleted
                    added.append((_document(found), False))
                    continue
                added.append((_document(row), True))  # the row is what was inserted: not read back
                events.append({
                    "actor": actor or self.actor, "entity": "document", "entity_id": row["id"], "from_state": None,
                    "to_state": DocumentState.RECEIVED, "reason": f"received {row['source']}:{row['bundle']}",
                    "payload_sha256": row["sidecar_sha256"], "at": now,
                })
            if events:
                journal.append_many(conn, events, head=head)
            else:
                head.first()  # read, so that the pipeline's answers are all taken before the commit
            return added

    def get_document(self, document_id: str) -> DocumentRow:
        with self._read() as conn:
            row = _DOCUMENT_BY_ID.first(conn, {"key": document_id})
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
        unique_id_acte: bool = False, lease_first: tuple[str, float] | None = None,
    ) -> tuple[DocumentRow, list[DeliveryRow]]:
        """In ONE transaction: RECEIVED → PREPARED setting ``prepared`` (route, siren, id_acte,
        canonical) when given, a PENDING delivery per entry of ``deliveries`` (the keyword
        arguments of :meth:`add_delivery`), → ROUTED, and the lease of ``release_owner`` given back.
        ``lease_first`` (owner, seconds): the first delivery inserted is leased to that owner (a
        worker that sends it at once, as if it had claimed it).

        With ``unique_id_acte``, another document with the same IDActe that did not fail
        makes it raise DocumentError (rule ``act-unique``): an act is never sent twice.
        A crash or an error leaves the document as it was before, never half routed.
        """
        unknown = sorted(set(prepared or {}) - _DOCUMENT_FIELDS)
        if unknown:
            raise TypeError(f"document {document_id}: cannot set {', '.join(unknown)}")
        actor = actor or self.actor
        documents, table = documents_table, deliveries_table
        with self._write(pipeline=True) as conn:
            locked = _DOCUMENT_FOR_UPDATE.send(conn, {"document_id": document_id})
            # the act's other documents, read in the same round trip when the IDActe is known already
            same_act = (_SAME_ACT.send(conn, {"id_acte": prepared["id_acte"], "document_id": document_id})
                        if unique_id_acte and prepared is not None and prepared.get("id_acte") else None)
            # the journal's head, the last lock taken, in the same round trip: the writes then go with the COMMIT
            head = journal.lock_head(conn)
            row = locked.first()
            if row is None:
                raise UnknownEntity(f"document {document_id}: not in the ledger", entity="document",
                                    entity_id=document_id)
            expected = _D.RECEIVED if prepared is not None else _D.PREPARED
            if row["state"] != expected:
                raise StaleState("document", document_id, expected, row["state"])
            id_acte = (prepared or {}).get("id_acte", row["id_acte"])
            resubmits: list[str] = []
            if unique_id_acte and id_acte:
                resubmits = self._earlier_attempts(conn, id_acte, document_id, row["bundle"], same_act)
            now = self.now()
            events: list[dict[str, Any]] = []
            for earlier in resubmits:  # the same act, sent again after the ministry refused it
                events.append(_event(actor, "document", earlier, _D.ROUTED, _D.ROUTED, now,
                                     reason=f"corrected and sent again as document {document_id}"))
            if resubmits and prepared is not None:
                prepared = {**prepared, "canonical": {**(prepared.get("canonical") or {}), "resubmits": resubmits}}
            if prepared is not None:
                events.append(_event(actor, "document", document_id, _D.RECEIVED, _D.PREPARED, now,
                                     payload_sha256=payload_sha256,
                                     reason=f"resubmission of document {', '.join(resubmits)}" if resubmits else ""))
            existing = set() if prepared is not None else {
                r.endpoint for r in conn.execute(select(table.c.endpoint).where(table.c.document_id == document_id))
            }
            rows: list[dict[str, Any]] = []
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
                if lease_first is not None:  # every row the same keys: one executemany
                    first = not rows
                    values.update(lease_owner=lease_first[0] if first else None,
                                  lease_until=now + timedelta(seconds=lease_first[1]) if first else None)
                rows.append({**_NEW_DELIVERY, **values})
                events.append(_event(actor, "delivery", delivery_id, None, _V.PENDING, now,
                                     reason=f"document {document_id} to {plan['endpoint']} by route {plan['route']}",
                                     payload_sha256=plan.get("artifact_sha256")))
            events.append(_event(actor, "document", document_id, _D.PREPARED, _D.ROUTED, now,
                                 reason=f"{len(deliveries)} deliver{'y' if len(deliveries) == 1 else 'ies'}"))
            if rows:
                _INSERT_DELIVERIES.queue(conn, rows)
            values = {**(prepared or {}), "state": _D.ROUTED.value, "reason": None, "updated_at": now}
            if release_owner is not None and row["lease_owner"] == release_owner:
                values.update(lease_owner=None, lease_until=None)
            _row_update(documents, values, guard_state=False, returning=False).queue(
                conn, _row_update_params(document_id, values))
            journal.append_many(conn, events, head=head)
            if prepared is None:  # deliveries may predate this call: read them all
                created = [_delivery(r) for r in conn.execute(
                    select(table).where(table.c.document_id == document_id).order_by(table.c.created_at, table.c.id))]
            else:  # the rows are what was just inserted: no need to read them back
                created = [DeliveryRow(**{**r, "state": _V.PENDING}) for r in rows]
        return _document({**row, **values}), created

    @staticmethod
    def _earlier_attempts(conn: Connection, id_acte: str, document_id: str, bundle: str,
                          same_act: Pending | None = None) -> list[str]:
        """The documents that sent this act before and were refused by the ministry (every
        delivery REJECTED or FAILED, copies to folders aside): this one is their resubmission.
        DocumentError (``act-unique``) when an earlier one is acknowledged or still in flight.
        ``same_act``: ``_SAME_ACT`` already sent for this IDActe."""
        earlier: list[str] = []
        others = (same_act or _SAME_ACT.send(conn, {"id_acte": id_acte, "document_id": document_id})).rows()
        for other in others:
            states = {r.state for r in conn.execute(
                select(deliveries_table.c.state).where(deliveries_table.c.document_id == other["id"]))}
            busy = states & _BUSY
            if other["state"] != _D.ROUTED.value or not _refused(states):
                why = f"state {other['state']}" + (f", a delivery {sorted(busy)[0]}" if busy else "")
                raise DocumentError(
                    f"act {id_acte} was already received as document {other['id']} ({why}); it is not sent twice: "
                    "an act the ministry refused can be corrected and dropped again; to send another act, give it "
                    "a new NumeroInterne (and PrecedentIdentifiantActe if it replaces an acknowledged one)",
                    path=bundle, field="numero_interne", rule="act-unique",
                )
            earlier.append(other["id"])
        return earlier

    def sirens_of(self, document_ids: list[str]) -> dict[str, str | None]:
        """The SIREN of each document (for an endpoint that logs in per collectivité)."""
        return self._column_of(document_ids, "siren")

    def acts_of(self, document_ids: list[str]) -> dict[str, str | None]:
        """The IDActe of each document (None: an answer to a letter, a file relayed)."""
        return self._column_of(document_ids, "id_acte")

    def final_documents(self, document_ids: list[str]) -> list[DocumentRow]:
        """Those of ``document_ids`` in a final state, read in one query per 500 (a poll settling what
        it claimed)."""
        table, found = documents_table, []
        ids = sorted(set(document_ids))
        final = [state.value for state in FINAL_DOCUMENT_STATES]
        with self._read() as conn:
            for start in range(0, len(ids), 500):  # bounded IN lists
                query = select(table).where(table.c.id.in_(ids[start:start + 500]), table.c.state.in_(final))
                found += [_document(row) for row in conn.execute(query)]
        return found

    def _column_of(self, document_ids: list[str], column: str) -> dict[str, str | None]:
        table, found = documents_table, {}
        ids = sorted(set(document_ids))
        with self._read() as conn:
            for start in range(0, len(ids), 500):  # bounded IN lists
                query = select(table.c.id, table.c[column]).where(table.c.id.in_(ids[start:start + 500]))
                found.update({row[0]: row[1] for row in conn.execute(query)})
        return found

    def refused(self, document_id: str) -> bool:
        """Whether the ministry refused the document (a delivery REJECTED, none acknowledged or
        in flight): it may then be corrected and sent again as a new attempt."""
        with self._read() as conn:
            document = conn.execute(select(documents_table.c.state).where(documents_table.c.id == document_id)).scalar()
            states = {r.state for r in conn.execute(
                select(deliveries_table.c.state).where(deliveries_table.c.document_id == document_id))}
        return document == _D.ROUTED.value and _refused(states)

    def claim_document(self, document_id: str, owner: str, seconds: float) -> DocumentRow | None:
        """Take the document's lease (free, expired or already ``owner``'s) and read it, in one
        statement; None when someone else holds it."""
        row = self._take_lease(_TAKE_DOCUMENT_LEASE, document_id, owner, seconds)
        return None if row is None else _document(row)

    def claim_delivery(self, delivery_id: str, owner: str, seconds: float) -> DeliveryRow | None:
        """As :meth:`claim_document`, for a delivery (None also when there is no such delivery)."""
        row = self._take_lease(_TAKE_DELIVERY_LEASE, delivery_id, owner, seconds)
        return None if row is None else _delivery(row)

    def _take_lease(self, statement: Prepared, key: str, owner: str, seconds: float) -> Any:
        now = self.now()
        with self._write_one() as conn:
            return statement.first(conn, {"key": key, "owner": owner, "now": now,
                                          "until": now + timedelta(seconds=seconds)})

    def get_delivery(self, delivery_id: str) -> DeliveryRow:
        with self._read() as conn:
            row = _DELIVERY_BY_ID.first(conn, {"key": delivery_id})
        if row is None:
            raise UnknownEntity(f"delivery {delivery_id}: not in the ledger", entity="delivery",
                                entity_id=delivery_id)
        return _delivery(row)

    def deliveries_of(self, document_id: str) -> list[DeliveryRow]:
        return self.deliveries(document_id=document_id)

    def transition_delivery(
        self, delivery_id: str, to_state: DeliveryState | str, *, actor: str | None = None,
        reason: str = "", payload_sha256: str | None = None, expect: DeliveryState | str | None = None,
        release_owner: str | None = None, **fields: Any,
    ) -> DeliveryRow:
        """Move a delivery to ``to_state``, setting ``fields`` (id_acte, remote_id, attempts,
        client_key, envelope_name); ``final_at`` is set on entering a final state, cleared on replay;
        the lease given back in the same transaction when ``release_owner`` holds it."""
        row, _ = self._change("delivery", delivery_id, DeliveryState(to_state), actor=actor, reason=reason,
                              payload_sha256=payload_sha256, expect=expect, fields=fields,
                              release_owner=release_owner)
        return _delivery(row)

    def find_delivery(
        self, *, id_acte: str | None = None, client_key: str | None = None, envelope_name: str | None = None,
        act: tuple[str, str, str] | None = None, endpoint: str | None = None,
    ) -> DeliveryRow | None:
        """The delivery matching every given key (the most recent if several), or None.

        ``act`` is (SIREN, decision date YYYYMMDD, NumeroInterne): the IDActe's middle part,
        whatever its département and nature; ``endpoint`` narrows to one endpoint's deliveries.
        """
        table = deliveries_table
        if id_acte is not None and all(v is None for v in (client_key, envelope_name, act, endpoint)):  # every act asks
            with self._read() as conn:
                row = _LATEST_DELIVERY_OF_ACT.first(conn, {"id_acte": id_acte})
            return None if row is None else _delivery(row)
        criteria = [table.c[name] == value for name, value in
                    (("id_acte", id_acte), ("client_key", client_key), ("envelope_name", envelope_name))
                    if value is not None]
        if act is not None:
            middle = "-".join(act).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            criteria.append(table.c.id_acte.like(f"%-{middle}-%", escape="\\"))
        if not criteria:
            raise ValueError("find_delivery needs id_acte, client_key, envelope_name or act")
        if endpoint is not None:
            criteria.append(table.c.endpoint == endpoint)
        query = select(table).where(*criteria).order_by(table.c.created_at.desc(), table.c.id).limit(1)
        with self._read() as conn:
            found = conn.execute(query).first()
        return None if found is None else _delivery(found)

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
        with self._write_one() as conn:
            counted = _COUNT_ATTEMPT.first(conn, {"key": delivery_id, "now": self.now()})
        if counted is None:
            raise UnknownEntity(f"delivery {delivery_id}: not in the ledger", entity="delivery", entity_id=delivery_id)
        return int(counted["attempts"])

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
        payload_sha256: str | None, expect: str | None, fields: dict[str, Any], release_owner: str | None = None,
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
        with self._write(pipeline=True) as conn:
            return self._change_in(conn, entity, entity_id, to_state, actor=actor, reason=reason,
                                   payload_sha256=payload_sha256, expect=expect, fields=fields,
                                   table=table, transitions=transitions, final=final, release_owner=release_owner)

    def _change_in(
        self, conn: Connection, entity: str, entity_id: str, to_state: str | None, *, actor: str | None,
        reason: str, payload_sha256: str | None, expect: str | None, fields: dict[str, Any],
        table: Table, transitions: Any, final: Any, release_owner: str | None = None,
    ) -> tuple[Any, JournalEntry]:
        locked = _ROW_FOR_UPDATE[table.name].send(conn, {"key": entity_id})
        # the journal's head, the last lock taken, in the same round trip: the writes then go with the COMMIT
        head = journal.lock_head(conn)
        row = locked.first()
        if row is None:
            raise UnknownEntity(f"{entity} {entity_id}: not in the ledger",
                                entity=entity, entity_id=entity_id)
        current = row["state"]
        if expect is not None and current != str(expect):
            raise StaleState(entity, entity_id, str(expect), current)
        now = self.now()
        values: dict[str, Any] = {**fields, "updated_at": now}
        if release_owner is not None and row["lease_owner"] == release_owner:
            values.update(lease_owner=None, lease_until=None)
        if to_state is None:  # an event, no transition: the row's reason column is left alone
            to_state = current
        else:
            if to_state not in transitions[current]:  # type: ignore[index]
                raise IllegalTransition(entity, entity_id, current, to_state)
            values.update(state=str(to_state), reason=reason or None)
            if entity == "delivery":
                values["final_at"] = now if to_state in final else None
                if to_state in final:  # the source is owed a reply: kept until the runtime wrote it
                    # (its lease row taken after the head: whoever else writes that row — the lease's
                    # take and release, the reply's record — touches neither the head nor the delivery
                    # row this holds, so waits for nothing of this transaction's: no deadlock)
                    self._owe_reply(conn, entity_id, now)
        # the row is locked (PostgreSQL: FOR UPDATE; SQLite: the writer holds the database): its state is
        # the one read, and the row after the update is the one read with the new values
        _row_update(table, values, guard_state=False, returning=False).queue(
            conn, _row_update_params(entity_id, values))
        entry = journal.append(conn, actor=actor or self.actor, entity=entity, entity_id=entity_id,
                               from_state=current, to_state=to_state, reason=reason,
                               payload_sha256=payload_sha256, at=now, head=head)
        return {**row, **values}, entry

    # -- replies owed ----------------------------------------------------------------------
    # A delivery entering a final state owes its source a reply (a file, a row's columns).  The
    # debt is a lease ("reply", delivery id) written in the same transaction, held by this worker
    # for ``reply_lease`` seconds and deleted once the reply is written: one left behind by a
    # process killed in between, or by a failed write, expires, and the sweeper writes the reply.

    def _owe_reply(self, conn: Connection, delivery_id: str, now: datetime) -> None:
        until = now + timedelta(seconds=self.reply_lease)
        # one statement: owed now, or owed again (a replay, an answer after DELIVERED) and renewed
        _OWE_REPLY.queue(conn, {"o_key": delivery_id, "o_owner": self.actor, "o_until": until})

    def owed_replies(self, limit: int | None = 100) -> list[str]:
        """The deliveries whose reply is owed and nobody writes (its lease expired), oldest first."""
        query = (select(leases_table.c.key)
                 .where(leases_table.c.entity == _REPLY, leases_table.c.lease_until < self.now())
                 .order_by(leases_table.c.lease_until).limit(limit))
        with self._read() as conn:
            return [row.key for row in conn.execute(query)]

    def reply_written(self, delivery_id: str) -> None:
        """The reply of ``delivery_id`` is written: nothing is owed any more."""
        with self._write_one() as conn:
            _REPLY_WRITTEN.run(conn, {"key": delivery_id})

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
        with self._read_transaction() as conn:
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


#: delivery states that mean the act is, or may be, at the ministry
_BUSY = frozenset({_V.PENDING.value, _V.SENT.value, _V.ACKNOWLEDGED.value})


def _refused(states: set[str]) -> bool:
    """Deliveries in these states: the ministry refused the act, and nothing else holds it."""
    return _V.REJECTED.value in states and not states & _BUSY
