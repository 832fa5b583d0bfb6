"""The journal: every state change of the ledger, append-only and hash-chained.

Each event's ``hash`` is the sha256 of a canonical JSON serialisation (sorted keys, no
spaces, UTF-8) of all its fields, ``seq``, ``at`` and ``prev_hash`` included; ``prev_hash``
is the previous event's hash (64 zeros for the first).  A single ``journal_head`` row, updated
in the same transaction as each append, holds the last seq, the last hash and the count, so
that deleting the last events is detected too.

:func:`append` runs inside the caller's transaction (the ledger's): it reads the head with
``SELECT ... FOR UPDATE`` (PostgreSQL serialises appenders on that row lock; on SQLite the
ledger begins every write transaction with ``BEGIN IMMEDIATE``, so read-then-write cannot
interleave), then inserts the event and moves the head.

The chain is unkeyed: it detects edits, insertions and deletions made behind the bus's back
with ordinary tools; someone able to recompute every hash *and* the head could still forge a
consistent journal.  Ship the head's hash elsewhere (a log line, a backup) to anchor it.
"""

from __future__ import annotations

__all__ = [
    "metadata",
    "journal_table",
    "journal_head_table",
    "JournalEntry",
    "GENESIS_HASH",
    "READ_ONLY_OPTION",
    "ensure_head",
    "append",
    "append_many",
    "verify",
    "entries",
    "event_hash",
    "utc_timestamp",
]

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from bus.crash import crash_point
from bus.errors import HentError
from bus.ledger_sql import Pending, Prepared

GENESIS_HASH = "0" * 64
#: execution option the ledger sets on read-only connections (SQLite then uses a plain BEGIN)
READ_ONLY_OPTION = "hent_read_only"

metadata = MetaData()  #: shared with :mod:`bus.ledger`, which adds its tables to it

journal_table = Table(
    "journal",
    metadata,
    # seq is assigned by append() under the head's lock, never by the database
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("entity", String(32), nullable=False),
    Column("entity_id", String(64), nullable=False),
    Column("from_state", String(32), nullable=True),
    Column("to_state", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload_sha256", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_journal_entity_id", "entity_id"),
)

journal_head_table = Table(
    "journal_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("last_seq", BigInteger, nullable=False),
    Column("last_hash", String(64), nullable=False),
    Column("count", BigInteger, nullable=False),
)

_HEAD_ID = 1
_HASHED_FIELDS = (
    "seq", "at", "actor", "entity", "entity_id", "from_state", "to_state", "reason",
    "payload_sha256", "prev_hash",
)


@dataclass(frozen=True)
class JournalEntry:
    """One event of the journal."""

    seq: int
    at: str  #: ISO 8601, UTC, with microseconds: ``2024-05-02T09:15:03.123456+00:00``
    actor: str
    entity: str  #: ``document`` or ``delivery``
    entity_id: str
    from_state: str | None  #: None when the entity is created
    to_state: str
    reason: str
    payload_sha256: str | None
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_timestamp(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as the journal writes it: ISO 8601 UTC with microseconds."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("journal timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(fields: dict[str, Any]) -> str:
    """The sha256 of the canonical serialisation of an event's fields (``hash`` excluded)."""
    body = {name: fields[name] for name in _HASHED_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_head(conn: Connection) -> None:
    """Create the head row if missing (safe when several processes start at once)."""
    if conn.execute(select(journal_head_table.c.id)).first() is not None:
        return
    try:
        with conn.begin_nested():
            conn.execute(
                insert(journal_head_table).values(
                    id=_HEAD_ID, last_seq=0, last_hash=GENESIS_HASH, count=0
                )
            )
    except IntegrityError:
        pass  # another process created it first


# run on the DBAPI cursor: every state change appends (bus/ledger_sql.py)
_HEAD_FOR_UPDATE = Prepared(
    select(journal_head_table).where(journal_head_table.c.id == _HEAD_ID).with_for_update()
)
_HEAD_MOVE = Prepared(
    update(journal_head_table)
    .where(journal_head_table.c.id == _HEAD_ID)
    .values(last_seq=bindparam("new_seq"), last_hash=bindparam("new_hash"), count=bindparam("new_count"))
)
_INSERT_EVENT = Prepared.insert(journal_table)


def append(
    conn: Connection,
    *,
    actor: str,
    entity: str,
    entity_id: str,
    from_state: str | None,
    to_state: str,
    reason: str = "",
    payload_sha256: str | None = None,
    at: datetime | None = None,
    head: Pending | None = None,
) -> JournalEntry:
    """Append one event inside the caller's transaction and move the head; return the event."""
    return append_many(conn, [{
        "actor": actor, "entity": entity, "entity_id": entity_id, "from_state": from_state,
        "to_state": to_state, "reason": reason, "payload_sha256": payload_sha256, "at": at,
    }], head=head)[0]


def lock_head(conn: Connection) -> Pending:
    """Send the read of the head (locking it to the end of the transaction), for
    :func:`append_many` to use: in a pipelined transaction, with the caller's statements before
    it, in one round trip.  Send it once every existing row the transaction changes is locked
    (read ``FOR UPDATE``, or updated): the head is the last lock a writer takes, but for rows
    whose other writers never wait for the head (the rows the transaction inserts afterwards, a
    reply's lease)."""
    return _HEAD_FOR_UPDATE.send(conn)


def append_many(conn: Connection, events: list[dict[str, Any]], *, head: Pending | None = None) -> list[JournalEntry]:
    """Append several events (keyword arguments of :func:`append`) in order, chained, with one
    read of the head (``head``: already sent by :func:`lock_head`), one insert and one move of the
    head; inside the caller's transaction."""
    crash_point("journal.mid-append")  # the caller's rows are changed: a crash must undo them too
    head_row = (head or lock_head(conn)).first()
    if head_row is None:
        raise HentError(
            "journal: the journal_head row is missing; the journal was tampered with or its "
            "schema never created (run `run_bus.py journal verify`)"
        )
    seq, prev_hash = head_row["last_seq"], head_row["last_hash"]
    rows: list[dict[str, Any]] = []
    for event in events:
        seq += 1
        from_state = event.get("from_state")
        fields: dict[str, Any] = {
            "seq": seq,
            "at": utc_timestamp(event.get("at")),
            "actor": event["actor"],
            "entity": event["entity"],
            "entity_id": event["entity_id"],
            "from_state": None if from_state is None else str(from_state),
            "to_state": str(event["to_state"]),
            "reason": event.get("reason") or "",
            "payload_sha256": event.get("payload_sha256"),
            "prev_hash": prev_hash,
        }
        fields["hash"] = prev_hash = event_hash(fields)
        rows.append(fields)
    if rows:
        _INSERT_EVENT.queue(conn, rows)
        _HEAD_MOVE.queue(conn, {"new_seq": seq, "new_hash": prev_hash, "new_count": head_row["count"] + len(rows)})
    return [JournalEntry(**fields) for fields in rows]


def _entry(row: Any) -> JournalEntry:
    return JournalEntry(**{name: getattr(row, name) for name in JournalEntry.__dataclass_fields__})


def entries(bind: Engine | Connection, entity_ids: str | Iterable[str]) -> list[JournalEntry]:
    """The events of one entity (or of several), oldest first."""
    ids = [entity_ids] if isinstance(entity_ids, str) else list(entity_ids)
    query = select(journal_table).where(journal_table.c.entity_id.in_(ids)).order_by(journal_table.c.seq)
    if isinstance(bind, Connection):
        return [_entry(row) for row in bind.execute(query)]
    with bind.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        return [_entry(row) for row in conn.execute(query)]


def verify(bind: Engine | Connection) -> list[str]:
    """Walk the chain and the head; return one line per problem (``[]`` when intact)."""
    if isinstance(bind, Connection):
        return _verify(bind)
    with bind.connect().execution_options(**{READ_ONLY_OPTION: True}) as conn, conn.begin():
        return _verify(conn)


def _verify(conn: Connection) -> list[str]:
    problems: list[str] = []
    prev_seq, prev_hash, count = 0, GENESIS_HASH, 0
    rows = conn.execution_options(yield_per=1000).execute(
        select(journal_table).order_by(journal_table.c.seq)
    )
    for row in rows:
        entry = _entry(row)
        count += 1
        if event_hash(entry.as_dict()) != entry.hash:
            problems.append(f"seq {entry.seq}: its hash does not match its content (event edited)")
        if entry.seq < prev_seq + 1:  # only possible before seq 1: seqs are unique
            problems.append(f"seq {entry.seq}: the journal starts at seq 1 (event inserted before it)")
        elif entry.seq > prev_seq + 1:
            missing = f"seq {prev_seq + 1}" if entry.seq == prev_seq + 2 else (
                f"seqs {prev_seq + 1}..{entry.seq - 1}"
            )
            problems.append(f"seq {entry.seq}: {missing} missing (events deleted or seq edited)")
        if entry.prev_hash != prev_hash:
            before = f"seq {prev_seq}" if count > 1 else "the start of the journal"
            problems.append(
                f"seq {entry.seq}: prev_hash does not match the hash of {before} "
                "(an event was inserted, deleted or rewritten before it)"
            )
        prev_seq, prev_hash = entry.seq, entry.hash
    head = conn.execute(
        select(journal_head_table).where(journal_head_table.c.id == _HEAD_ID)
    ).mappings().first()
    if head is None:
        problems.append("journal_head: the row is missing (deleted)")
        return problems
    if head["count"] != count:
        problems.append(
            f"journal_head: counts {head['count']} events but the journal holds {count} "
            "(events deleted or inserted)"
        )
    if head["last_seq"] != prev_seq:
        problems.append(
            f"journal_head: last seq is {head['last_seq']} but the journal ends at seq {prev_seq} "
            "(last events deleted, or events appended behind the bus's back)"
        )
    if head["last_hash"] != prev_hash:
        problems.append(
            f"journal_head: last hash does not match the hash of seq {prev_seq} "
            "(last event deleted, rewritten or appended behind the bus's back)"
        )
    return problems
