"""bus/ledger_sql.py: statements run on the DBAPI cursor give what ``Connection.execute`` gives.

On SQLite (tmp_path) and, when HENT_TEST_POSTGRES_URL is set, on PostgreSQL (a table of the
test's own, dropped afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from bus.errors import TransientError
from bus.journal import metadata
from bus.ledger import Ledger, make_engine
from bus.ledger_schema import UTCDateTime
from bus.ledger_sql import Prepared, pipelined_transaction

POSTGRES_URL = os.environ.get("HENT_TEST_POSTGRES_URL")
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.skipif(not POSTGRES_URL, reason="HENT_TEST_POSTGRES_URL unset")),
]
T0 = datetime(2026, 11, 30, 9, 15, 3, 123456, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    else:
        assert POSTGRES_URL
        engine = make_engine(POSTGRES_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def table(engine: Engine) -> Iterator[Table]:
    metadata = MetaData()
    table = Table(
        f"t_{uuid.uuid4().hex[:12]}", metadata,
        Column("id", String(32), primary_key=True),
        Column("state", String(32), nullable=False),
        Column("payload", JSON(none_as_null=True), nullable=True),
        Column("at", UTCDateTime, nullable=True),
        Column("n", Integer, nullable=False),
    )
    metadata.create_all(engine)
    yield table
    metadata.drop_all(engine)


def _insert(table: Table) -> Prepared:
    return Prepared(insert(table).values({c.name: bindparam(c.name, type_=c.type) for c in table.c}))


ROWS = [
    {"id": "a", "state": "PENDING", "payload": {"files": {"acte.pdf": "ab" * 32}, "é": [1, 2]}, "at": T0, "n": 1},
    {"id": "b", "state": "FAILED", "payload": None, "at": None, "n": 2},
]


def test_rows_read_back_as_connection_execute_reads_them(engine: Engine, table: Table) -> None:
    # Given two rows written through the DBAPI cursor (one executemany), one of them all NULLs
    with engine.begin() as conn:
        assert _insert(table).run(conn, ROWS) == 2
    everything = select(table).order_by(table.c.id)
    # When
    with engine.begin() as conn:
        prepared = Prepared(everything).rows(conn)
        executed = [dict(row._mapping) for row in conn.execute(everything)]
    # Then: the same values, of the same types (aware datetimes, JSON decoded, NULLs as None)
    assert prepared == executed == ROWS
    assert prepared[0]["at"].tzinfo is UTC


def test_constants_and_returning(engine: Engine, table: Table) -> None:
    # Given
    with engine.begin() as conn:
        _insert(table).run(conn, ROWS)
    # a constant written in the statement ("FAILED", LIMIT 1) and a RETURNING clause
    not_failed = Prepared(select(table.c.id).where(table.c.state != "FAILED", table.c.n >= bindparam("n")).limit(1))
    bump = Prepared(update(table).where(table.c.id == bindparam("key"))
                    .values(n=table.c.n + 1, at=bindparam("at")).returning(table.c.n, table.c.at))
    # When
    with engine.begin() as conn:
        first = not_failed.first(conn, {"n": 0})
        bumped = bump.first(conn, {"key": "b", "at": T0 + timedelta(seconds=1)})
        missing = bump.first(conn, {"key": "zz", "at": T0})
    # Then
    assert first == {"id": "a"}
    assert bumped == {"n": 3, "at": T0 + timedelta(seconds=1)}
    assert missing is None


def test_a_constraint_broken_raises_sqlalchemy_s_integrity_error(engine: Engine, table: Table) -> None:
    with engine.begin() as conn:
        _insert(table).run(conn, ROWS[0])
    # When / Then: the class Connection.execute would raise (callers catch it to retry a race)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _insert(table).run(conn, ROWS[0])
    with engine.begin() as conn:
        assert len(Prepared(select(table)).rows(conn)) == 1


def test_a_missing_parameter_is_named(engine: Engine, table: Table) -> None:
    statement = Prepared(select(table).where(table.c.id == bindparam("key")))
    with pytest.raises(KeyError, match="'key'"), engine.begin() as conn:
        statement.rows(conn, {"other": 1})


def test_statements_rendered_at_run_time_are_refused(engine: Engine, table: Table) -> None:
    statement = Prepared(select(table).where(table.c.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(ValueError, match="rendered at run time"), engine.begin() as conn:
        statement.rows(conn, {"ids": ["a"]})


def _pipeline_on(conn: Connection) -> bool:
    pgconn = getattr(conn.connection.dbapi_connection, "pgconn", None)
    return pgconn is not None and pgconn.pipeline_status != 0


def test_in_a_pipelined_transaction_what_is_queued_goes_with_the_next_read(engine: Engine, table: Table) -> None:
    # Given a transaction in pipeline mode (PostgreSQL; SQLite runs it as is)
    count_a = Prepared(update(table).where(table.c.id == bindparam("key")).values(n=table.c.n + 10))
    with engine.connect() as conn, pipelined_transaction(conn):
        assert _pipeline_on(conn) == (engine.dialect.name == "postgresql")
        # When two inserts and an update are queued, their answers not waited for
        _insert(table).queue(conn, ROWS)
        count_a.queue(conn, {"key": "a"})
        # Then a read sees them (through the DBAPI cursor and through Connection.execute alike),
        read = Prepared(select(table.c.id, table.c.n).order_by(table.c.id)).rows(conn)
        executed = [tuple(row) for row in conn.execute(select(table.c.id, table.c.n).order_by(table.c.id))]
        assert read == [{"id": "a", "n": 11}, {"id": "b", "n": 2}] and executed == [("a", 11), ("b", 2)]
        # and run() still says how many rows it changed
        assert count_a.run(conn, {"key": "b"}) == 1 and count_a.run(conn, {"key": "zz"}) == 0
    # and the COMMIT made all of it durable
    with engine.begin() as conn:
        assert [tuple(row) for row in conn.execute(select(table.c.id, table.c.n).order_by(table.c.id))] == [
            ("a", 11), ("b", 12)]
        assert not _pipeline_on(conn)  # the connection given back to the pool left pipeline mode


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_statement_sent_is_answered_when_asked_and_the_next_ones_go_with_it(engine: Engine, table: Table,
                                                                            pipeline: bool) -> None:
    with engine.begin() as conn:
        _insert(table).run(conn, ROWS)
    read_a = Prepared(select(table.c.n).where(table.c.id == bindparam("key")).with_for_update())
    bump = Prepared(update(table).where(table.c.id == bindparam("key")).values(n=table.c.n + 1))
    # Given statements sent one after the other, none of their answers read yet
    with engine.connect() as conn, (pipelined_transaction(conn) if pipeline else conn.begin()):
        locked, bumped, missing = (read_a.send(conn, {"key": "a"}), bump.send(conn, {"key": "b"}),
                                   bump.send(conn, {"key": "zz"}))
        after = read_a.send(conn, {"key": "b"})
        # When read, in any order, each gives its own answer: rows, or the rows it changed
        assert after.first() == {"n": 3}
        assert (missing.count(), bumped.count(), locked.rows(), locked.first()) == (0, 1, [{"n": 1}], {"n": 1})
    with engine.begin() as conn:
        assert Prepared(select(table.c.n).order_by(table.c.id)).rows(conn) == [{"n": 1}, {"n": 3}]


def test_in_a_pipelined_transaction_a_queued_statement_that_fails_rolls_it_all_back(engine: Engine,
                                                                                    table: Table) -> None:
    with engine.begin() as conn:
        _insert(table).run(conn, ROWS[0])
    pipelined = engine.dialect.name == "postgresql"
    # When a queued insert breaks the primary key, another queued before it
    with pytest.raises(IntegrityError) as raised:
        with engine.connect() as conn, pipelined_transaction(conn):
            _insert(table).queue(conn, ROWS[1])
            _insert(table).queue(conn, ROWS[0])
    # (in a pipeline its answer comes with the COMMIT's, and the error says so)
    if pipelined:
        assert raised.value.statement == "COMMIT"
    else:
        assert raised.value.statement.startswith("INSERT")
    # Then SQLAlchemy's error (raised when its answer came, at the latest with the COMMIT), nothing of
    # the transaction kept, and the pool's connections work on
    with engine.begin() as conn:
        assert [row["id"] for row in Prepared(select(table.c.id)).rows(conn)] == ["a"]
        _insert(table).run(conn, ROWS[1])
    with engine.begin() as conn:
        assert len(Prepared(select(table)).rows(conn)) == 2
    # and the same when the failure comes back with a read sent after it (named by that read's answer)
    with pytest.raises(IntegrityError) as raised:
        with engine.connect() as conn, pipelined_transaction(conn):
            _insert(table).queue(conn, {**ROWS[1], "id": "c"})
            _insert(table).queue(conn, ROWS[0])
            Prepared(select(table.c.id)).rows(conn)
    assert raised.value.statement.startswith("SELECT" if pipelined else "INSERT")
    with engine.begin() as conn:
        assert sorted(row["id"] for row in Prepared(select(table.c.id)).rows(conn)) == ["a", "b"]
    # and the same when the caller's own code raises after statements were queued and read
    with pytest.raises(RuntimeError, match="the caller's"):
        with engine.connect() as conn, pipelined_transaction(conn):
            _insert(table).queue(conn, {**ROWS[1], "id": "d"})
            assert len(Prepared(select(table.c.id)).rows(conn)) == 3
            _insert(table).queue(conn, {**ROWS[1], "id": "e"})
            raise RuntimeError("the caller's own error")
    with engine.connect() as conn:
        assert sorted(row["id"] for row in Prepared(select(table.c.id)).rows(conn)) == ["a", "b"]
        if engine.dialect.name == "postgresql":  # given back to the pool as it was taken: not in autocommit
            assert conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


def test_a_dbapi_error_raised_in_a_pipelined_transaction_is_sqlalchemys_and_named_as_the_blocks(
    engine: Engine, table: Table
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("pipelines are PostgreSQL's")
    # Given a transaction whose block reads on the DBAPI cursor itself, a statement that fails
    with pytest.raises(DBAPIError) as raised:
        with engine.connect() as conn, pipelined_transaction(conn):
            _insert(table).queue(conn, ROWS[0])
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("SELECT 1 / 0")
            cursor.fetchall()
    # Then SQLAlchemy's class for psycopg's error, named as the block's (not the COMMIT's), nothing
    # kept, and the connection given back out of autocommit
    assert "division by zero" in str(raised.value.orig)
    assert raised.value.statement == "(a statement of the transaction)"
    with engine.connect() as conn:
        assert Prepared(select(table.c.id)).rows(conn) == []
        assert conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


def _round_trips(trace: str) -> int:
    """How many times the client waited for the server in a libpq trace: its turns to answer."""
    turns, last = 0, "F"
    for line in trace.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:  # a message's continuation
            continue
        side = fields[1]
        turns += side == "B" and last == "F"
        last = side
    return turns


@contextmanager
def _traced(engine: Engine, into: Path) -> Iterator[list[str]]:
    """libpq's trace of every connection ``engine`` hands out in the block, read into the list
    yielded once the block ends."""
    sent: list[str] = []
    with open(into, "w+b") as trace:
        def traced(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            dbapi_connection.pgconn.trace(trace.fileno())

        def untraced(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.pgconn.untrace()

        event.listen(engine, "checkout", traced)
        event.listen(engine, "checkin", untraced)
        try:
            yield sent
        finally:
            event.remove(engine, "checkout", traced)
            event.remove(engine, "checkin", untraced)
        trace.seek(0)
        sent.append(trace.read().decode())


def test_a_pipelined_transaction_waits_once_per_read_and_once_for_its_commit(engine: Engine, table: Table,
                                                                            tmp_path: Path) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("pipelines are PostgreSQL's")
    # Given a transaction that queues a write, reads, queues another write (the shape of a transition)
    with _traced(engine, tmp_path / "trace") as trace:
        with engine.connect() as conn, pipelined_transaction(conn):
            _insert(table).queue(conn, ROWS[0])
            read = Prepared(select(table.c.n).where(table.c.id == "a").with_for_update()).rows(conn)
            Prepared(update(table).values(n=table.c.n + 1)).queue(conn)
    [sent] = trace
    # Then its BEGIN went with the first statements, its COMMIT with the last: two round trips
    assert read == [{"n": 1}]
    assert _round_trips(sent) == 2, sent
    assert sent.count('Parse\t "" "BEGIN') == 1 and sent.count('"COMMIT"') == 2  # (sent, then answered)
    with engine.connect() as conn:  # committed, and the connection given back out of autocommit
        assert Prepared(select(table.c.n)).rows(conn) == [{"n": 2}]
        assert conn.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]


@pytest.fixture
def pg_ledger() -> Iterator[tuple[Ledger, Engine, Any]]:
    """A ledger on PostgreSQL (its tables made anew) holding one RECEIVED document; an engine of
    its own on the same database, for what the test does behind the ledger's back."""
    if not POSTGRES_URL:
        pytest.skip("HENT_TEST_POSTGRES_URL unset")
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        metadata.drop_all(conn)
    ledger = Ledger(POSTGRES_URL, actor="test")
    try:
        document, _ = ledger.add_document(source="s", bundle="b.json", idempotency_key="k", sidecar_sha256="0" * 64,
                                          files={"b.json": "0" * 64})
        yield ledger, admin, document
    finally:
        ledger.close()
        admin.dispose()


def test_a_ledger_transition_on_postgresql_is_two_round_trips(
    tmp_path: Path, pg_ledger: tuple[Ledger, Engine, Any]
) -> None:
    # Given a ledger on PostgreSQL whose connections are traced while the ledger holds them
    ledger, _, document = pg_ledger
    with _traced(ledger.engine, tmp_path / "trace") as trace:
        # When a document moves on (its row and the journal's head locked and read, the row
        # updated, an event appended, the head moved)
        moved = ledger.transition_document(document.id, "FAILED", reason="test", expect="RECEIVED")
    [sent] = trace
    # Then two round trips: the reads, then the writes with the COMMIT; the row given back is the stored one
    assert _round_trips(sent) == 2, sent
    assert moved == ledger.get_document(document.id) and moved.state == "FAILED" and moved.reason == "test"
    assert ledger.verify_journal() == []


@pytest.mark.skipif(not POSTGRES_URL, reason="HENT_TEST_POSTGRES_URL unset")
def test_a_connection_postgresql_dropped_is_invalidated_and_not_handed_out_again() -> None:
    assert POSTGRES_URL
    engine, admin = make_engine(POSTGRES_URL), create_engine(POSTGRES_URL)
    metadata = MetaData()
    table = Table(f"t_{uuid.uuid4().hex[:12]}", metadata, Column("id", String(32), primary_key=True))
    metadata.create_all(engine)
    read = Prepared(select(table))
    try:
        with engine.begin() as conn:  # the pool's connection, known to work
            read.rows(conn)
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.begin() as other:  # the server ends it, as a restart or an administrator would
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # When
        with engine.connect() as conn:
            conn.begin()
            with pytest.raises(OperationalError) as raised:
                read.rows(conn)
            # Then: SQLAlchemy's error, the connection invalidated at once (not at the rollback)
            assert raised.value.connection_invalidated
            assert conn.invalidated
        with engine.begin() as conn:  # and the next transaction gets a new one
            assert read.rows(conn) == []
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        metadata.drop_all(engine)
        engine.dispose()
        admin.dispose()


@pytest.mark.parametrize("call", ["read", "one statement", "transaction"])
def test_the_ledger_says_a_dropped_postgresql_connection_is_transient_and_goes_on(
    call: str, pg_ledger: tuple[Ledger, Engine, Any]
) -> None:
    # Given a ledger on PostgreSQL whose pooled connection the server ends (a restart, an administrator)
    ledger, admin, document = pg_ledger
    # each way the ledger runs statements: a read and a single write in autocommit, a transaction
    attempt = {
        "read": lambda: ledger.get_document(document.id).state,
        "one statement": lambda: ledger.claim_document(document.id, "w", 60).state,  # type: ignore[union-attr]
        "transaction": lambda: ledger.transition_document(document.id, "FAILED", reason="test").state,
    }[call]
    with ledger.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    with admin.begin() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # When / Then: the call in flight fails as a transient error (retried by the runtime), nothing changed
    with pytest.raises(TransientError, match="ledger unavailable or busy"):
        attempt()
    assert ledger.get_document(document.id).state == "RECEIVED"
    # and the next call gets a new connection and works
    assert attempt() == ("FAILED" if call == "transaction" else "RECEIVED")
