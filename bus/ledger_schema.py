"""The ledger's database schema and the Python shapes of its rows (SQLAlchemy Core).

The tables (documents, deliveries, the counters of envelope serials and reply files, the
messages endpoints send back, the classifications of each SIREN, and leases on things that
have no row of their own) live in the journal's :data:`bus.journal.metadata`; timestamps go
through :class:`UTCDateTime` (aware UTC in Python, naive UTC in the database).  Rows come back
as the frozen dataclasses :class:`DocumentRow` and :class:`DeliveryRow`, and the statements of
the hot path are built once here, so that :class:`bus.ledger.Ledger` only binds their parameters.
"""

from __future__ import annotations

__all__ = [
    "UTCDateTime",
    "DocumentRow",
    "NewDocument",
    "DeliveryRow",
    "documents_table",
    "deliveries_table",
    "envelope_serials_table",
    "replies_table",
    "messages_table",
    "classifications_table",
    "leases_table",
    "circuits_table",
]

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    or_,
    select,
    update,
)

from bus.journal import metadata
from bus.ledger_sql import Prepared
from bus.ledger_states import DeliveryState, DocumentState

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

responses_table = Table(  # the collectivité's answer to a letter of the préfecture (2-2, 3-2/3/4, 4-2/3/4)
    "responses",
    metadata,
    Column("delivery_id", String(32), primary_key=True),  # the act's delivery the letter came for
    Column("message_id", String(200), primary_key=True),  # the letter (messages.message_id)
    Column("document_id", String(32), ForeignKey("documents.id"), primary_key=True),  # the response bundle
    Column("code", String(16), nullable=False),  # 2-2, 3-4, 4-4...
    Column("created_at", UTCDateTime, nullable=False),
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

circuits_table = Table(  # each endpoint's circuit breaker as the last worker saw it (status, /readyz)
    "circuits",
    metadata,
    Column("endpoint", String(200), primary_key=True),
    Column("state", String(16), nullable=False),  # closed, open, half-open
    Column("failures", Integer, nullable=False),  # consecutive transient failures
    Column("actor", String(200), nullable=False),  # the worker that saw it
    Column("updated_at", UTCDateTime, nullable=False),
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
class NewDocument:
    """A document to record (:meth:`bus.ledger.Ledger.add_documents`)."""

    source: str
    bundle: str
    idempotency_key: str  #: the same key is the same document: recorded once
    sidecar_sha256: str
    files: dict[str, str]  #: file name → sha256 in the spool
    received_at: datetime | None = None  #: now when not given


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
    values = dict(row if isinstance(row, dict) else row._mapping)
    values["state"] = DeliveryState(values["state"])
    return DeliveryRow(**values)


def _event(actor: str, entity: str, entity_id: str, from_state: Any, to_state: Any, at: datetime,
           reason: str = "", payload_sha256: str | None = None) -> dict[str, Any]:
    return {"actor": actor, "entity": entity, "entity_id": entity_id, "from_state": from_state,
            "to_state": to_state, "reason": reason, "payload_sha256": payload_sha256, "at": at}


# statements of the hot path, built once and run on the DBAPI cursor (bus/ledger_sql.py)
_DOCUMENT_FOR_UPDATE = Prepared(
    select(documents_table).where(documents_table.c.id == bindparam("document_id")).with_for_update()
)
_SAME_ACT = Prepared(
    select(documents_table.c.id, documents_table.c.state)
    .where(documents_table.c.id_acte == bindparam("id_acte"), documents_table.c.id != bindparam("document_id"),
           documents_table.c.state != "FAILED")
    .order_by(documents_table.c.created_at)
)
def _take_lease(table: Table) -> Prepared:
    """UPDATE ... RETURNING the row whose lease is free, expired or already ``owner``'s (parameters
    ``key``, ``owner``, ``now``, ``until``): the lease taken and the row read in one statement."""
    return Prepared(
        update(table)
        .where(table.c.id == bindparam("key"),
               or_(table.c.lease_owner.is_(None), table.c.lease_until.is_(None),
                   table.c.lease_until < bindparam("now"), table.c.lease_owner == bindparam("owner")))
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(*table.c)
    )


_TAKE_DOCUMENT_LEASE = _take_lease(documents_table)
_TAKE_DELIVERY_LEASE = _take_lease(deliveries_table)
_ROW_FOR_UPDATE = {table.name: Prepared(select(table).where(table.c.id == bindparam("key")).with_for_update())
                   for table in (documents_table, deliveries_table)}
_INSERT_DELIVERIES = Prepared.insert(deliveries_table)
_UPDATES: dict[tuple[str, tuple[str, ...], bool, bool], Prepared] = {}


def _row_update(table: Table, names: Iterable[str], *, guard_state: bool, returning: bool = True) -> Prepared:
    """``UPDATE table SET <names> WHERE id = :w_id [AND state = :w_state] [RETURNING *]``, built once
    per shape; the new values are the parameters ``v_<name>`` (:func:`_row_update_params`)."""
    shape = (table.name, tuple(sorted(names)), guard_state, returning)
    statement = _UPDATES.get(shape)
    if statement is None:
        where = [table.c.id == bindparam("w_id")]
        if guard_state:
            where.append(table.c.state == bindparam("w_state"))
        built = (update(table).where(*where)
                 .values({name: bindparam(f"v_{name}", type_=table.c[name].type) for name in shape[1]}))
        if returning:
            built = built.returning(*table.c)
        statement = _UPDATES[shape] = Prepared(built)  # a race builds it twice, to the same effect
    return statement


def _row_update_params(key: str, values: dict[str, Any], state: str | None = None) -> dict[str, Any]:
    params = {f"v_{name}": value for name, value in values.items()}
    params["w_id"] = key
    if state is not None:
        params["w_state"] = state
    return params
_NEW_DELIVERY: dict[str, Any] = {
    "remote_id": None, "reason": None, "lease_owner": None, "lease_until": None, "final_at": None,
}
_DELIVERY_PLAN_FIELDS = frozenset({
    "route", "endpoint", "artifact_name", "artifact_sha256", "artifact_kind", "client_key", "id_acte", "envelope_name",
})


_COUNTERS: dict[str, tuple[Prepared, Prepared, Prepared]] = {}


def _counter_statements(table: Table) -> tuple[Prepared, Prepared, Prepared]:
    """The bump (UPDATE ... RETURNING, SQLite 3.35+ and PostgreSQL), the read and the creation at 1
    (nothing inserted when another worker created the row) of a counter, built once; parameters
    ``k_<key column>`` and ``maximum``."""
    if table.name not in _COUNTERS:
        keys = list(table.primary_key.columns)
        where = [column == bindparam(f"k_{column.name}") for column in keys]
        bump = (update(table).where(*where, table.c.last < bindparam("maximum"))
                .values(last=table.c.last + 1).returning(table.c.last))
        values = {column.name: bindparam(f"k_{column.name}", type_=column.type) for column in keys}
        create = Prepared.with_dialect_insert(
            lambda insert_of: insert_of(table).values({**values, "last": 1}).on_conflict_do_nothing())
        _COUNTERS[table.name] = (Prepared(bump), Prepared(select(table.c.last).where(*where)), create)
    return _COUNTERS[table.name]
