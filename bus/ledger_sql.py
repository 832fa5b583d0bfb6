"""The ledger's hottest statements, compiled once per dialect and run on the DBAPI cursor.

Every act runs a dozen statements through the ledger.  SQLAlchemy's execution layer costs
about 60 us of Python per statement here (an execution context, the parameters built and
processed, a result object), against under 10 us for the database's own work on SQLite: close
to half of the ledger's CPU per act (1.64 → 0.92 ms once these statements ran here), all of it
holding Python's lock, which the workers building archives beside it wait for.

A :class:`Prepared` keeps a Core statement (built with SQLAlchemy as any other) and, per
dialect, what SQLAlchemy compiled from it: the SQL text, the order of its parameters, and the
conversion of each parameter and each result column, taken from the column types themselves
(``TypeEngine.bind_processor`` / ``result_processor``), so a value is stored and read back
exactly as through ``Connection.execute``.  It runs inside the SQLAlchemy connection's
transaction, on a cursor of the same DBAPI connection; errors come back as SQLAlchemy's
(``IntegrityError``, ``OperationalError``...), and a connection the database dropped is
invalidated as SQLAlchemy would, so that the pool does not hand it out again.

Only plain statements qualify: no ``IN`` lists expanded at run time, no literal rendering
(both are refused when compiled).  Anything else goes through ``Connection.execute``.

On PostgreSQL (psycopg 3), a write transaction of the hot path runs in psycopg's pipeline mode
(:func:`pipelined_transaction`): a statement whose result nobody reads (:meth:`Prepared.queue`)
is sent without waiting for its answer, which comes back with the next one read, or with the
COMMIT; one read later (:meth:`Prepared.send`) lets the statements after it go in the same round
trip; the BEGIN goes with the first statements and the COMMIT with the last.  A transition is
then two round trips instead of eight: its reads (the row, the journal's head), then its writes
and COMMIT.  Whatever reads a result waits for it as before: :meth:`Prepared.first` and
:meth:`Prepared.rows` fetch, :meth:`Prepared.run` syncs for its row count, and a statement run
through ``Connection.execute`` inside such a transaction is synced at once
(:func:`sync_pipelines`), so that SQLAlchemy finds its result where it looks.
"""

from __future__ import annotations

__all__ = ["Pending", "Prepared", "every_column", "pipelined_transaction", "sync_pipelines"]

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Connection, Dialect, Engine, Select, Table, bindparam, event, insert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

_Processor = Callable[[Any], Any] | None


#: each dialect's own ``INSERT`` (``ON CONFLICT ...`` is written with it)
_DIALECT_INSERTS: dict[str, Callable[[Table], Any]] = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}


#: where a connection (its ``info``, shared by every SQLAlchemy ``Connection`` on the same DBAPI
#: connection) keeps the pipeline its transaction runs in, while it does
_PIPELINE = "hent.pipeline"


@contextmanager
def pipelined_transaction(conn: Connection) -> Iterator[None]:
    """A transaction of ``conn`` whose statements run in psycopg's pipeline mode: its BEGIN goes
    with the first statements, its COMMIT with the last ones, in the round trip that ends the
    pipeline; on an error, the pipeline's answers are read (the failure that aborted it, the
    statements it skipped) and the transaction is rolled back.  A plain transaction on a driver
    without pipelines (SQLite, psycopg2, a libpq older than 14).

    psycopg, left to begin the transaction itself, would wait for the BEGIN's answer (a round trip
    of its own) and, after the COMMIT's, for the Sync that ends the pipeline (another): the
    connection is put in autocommit for the while, so that the BEGIN and COMMIT sent are these."""
    dbapi_connection: Any = conn.connection.dbapi_connection  # psycopg's, when it has pipelines
    enter = getattr(dbapi_connection, "pipeline", None)
    if dbapi_connection is None or enter is None or not _pipelines_supported():
        with conn.begin():
            yield
        return
    from psycopg.pq import TransactionStatus

    error = conn.dialect.loaded_dbapi.Error
    begin = _begin_command(dbapi_connection)
    committing = False
    dbapi_connection.autocommit = True
    try:
        try:
            with enter() as pipeline:
                conn.info[_PIPELINE] = pipeline
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute(begin, prepare=False)
                    yield
                    cursor.execute(b"COMMIT", prepare=False)
                    committing = True
                except BaseException:
                    _drain(pipeline, error)
                    with suppress(error):  # answered when the pipeline ends
                        cursor.execute(b"ROLLBACK", prepare=False)
                    raise
                finally:
                    conn.info.pop(_PIPELINE, None)
            # (the pipeline's end: the COMMIT's round trip; a statement queued before it that failed raises here)
        except error as exc:  # as SQLAlchemy's error, whatever raised it
            if not committing:  # the block's own (rolled back above)
                raise _wrapped(conn, exc, "(a statement of the transaction)") from exc
            with suppress(error):  # the COMMIT failed: the database's side still holds the aborted transaction
                dbapi_connection.rollback()
            raise _wrapped(conn, exc, "COMMIT") from exc
    finally:
        if dbapi_connection.info.transaction_status == TransactionStatus.IDLE:
            dbapi_connection.autocommit = False
        else:  # broken (or mid-transaction): neither given back in autocommit nor reused, a new one replaces it
            conn.invalidate()


def _drain(pipeline: Any, error: type[Exception]) -> None:
    """Read what the pipeline still owes (each skipped statement answers "aborted"), so that the
    rollback after it starts clean."""
    for _ in range(3):
        try:
            pipeline.sync()
            return
        except error:
            continue


def _begin_command(dbapi_connection: Any) -> bytes:
    """The BEGIN psycopg would send: with the connection's isolation level (the one SQLAlchemy set),
    read-only and deferrable settings, when it has them."""
    parts = [b"BEGIN"]
    level, read_only, deferrable = (dbapi_connection.isolation_level, dbapi_connection.read_only,
                                    dbapi_connection.deferrable)
    if level is not None:
        parts.append(b"ISOLATION LEVEL " + level.name.replace("_", " ").encode())
    if read_only is not None:
        parts.append(b"READ ONLY" if read_only else b"READ WRITE")
    if deferrable is not None:
        parts.append(b"DEFERRABLE" if deferrable else b"NOT DEFERRABLE")
    return b" ".join(parts)


def _wrapped(conn: Connection, exc: Any, sql: str, bound: Any = None) -> Exception:
    """SQLAlchemy's exception for a DBAPI error (the same class ``Connection.execute`` raises);
    a connection the database dropped is invalidated first, as SQLAlchemy does."""
    dialect = conn.dialect
    try:
        dropped = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, None))
    except Exception:  # noqa: BLE001 - telling a dropped connection is best effort
        dropped = False
    if dropped:
        conn.invalidate(exc)
    return DBAPIError.instance(sql, bound, exc, dialect.loaded_dbapi.Error, connection_invalidated=dropped,
                               dialect=dialect)


@functools.cache
def _pipelines_supported() -> bool:
    import psycopg  # the driver whose connections have a pipeline(): psycopg 3

    return bool(psycopg.Pipeline.is_supported())  # libpq 14 or later


def sync_pipelines(engine: Engine) -> None:
    """Make a statement ``Connection.execute`` runs inside :func:`pipelined_transaction` wait for
    its result (SQLAlchemy reads the cursor's description and row count right after executing)."""
    event.listen(engine, "after_cursor_execute", _synced)


def _synced(conn: Connection, _cursor: Any, _statement: Any, _parameters: Any, _context: Any,
            _executemany: bool) -> None:
    pipeline = conn.info.get(_PIPELINE)
    if pipeline is not None:
        pipeline.sync()


def every_column(table: Table) -> dict[str, Any]:
    """The values of an insert binding every column of ``table`` by its name."""
    return {column.name: bindparam(column.name, type_=column.type) for column in table.c}


class Prepared:
    """A Core statement run straight on the DBAPI cursor of a SQLAlchemy :class:`Connection`."""

    __slots__ = ("statement", "_build", "_forms", "_lock")

    def __init__(self, statement: Any, *, build: Callable[[Callable[[Table], Any]], Any] | None = None) -> None:
        self.statement = statement
        self._build = build
        self._forms: dict[tuple[str, str], _Form] = {}
        self._lock = threading.Lock()

    @classmethod
    def insert(cls, table: Table) -> Prepared:
        """``INSERT INTO table`` binding every column by its name: each parameter set gives them all."""
        return cls(insert(table).values(every_column(table)))

    @classmethod
    def with_dialect_insert(cls, build: Callable[[Callable[[Table], Any]], Any]) -> Prepared:
        """A statement ``build(insert_of)`` makes with the dialect's own ``insert`` (SQLite's or
        PostgreSQL's, for ``ON CONFLICT``), built when a connection of that dialect first runs it."""
        return cls(build(sqlite_insert), build=build)  # (SQLite's form to show in its repr)

    def __repr__(self) -> str:
        return f"Prepared({str(self.statement)!r})"

    def _form(self, conn: Connection) -> _Form:
        dialect = conn.dialect
        key = (dialect.name, dialect.driver)
        form = self._forms.get(key)
        if form is None:
            with self._lock:
                form = self._forms.get(key) or _Form(self._statement_for(dialect), dialect)
                self._forms[key] = form
        return form

    def _statement_for(self, dialect: Dialect) -> Any:
        if self._build is None:
            return self.statement
        insert_of = _DIALECT_INSERTS.get(dialect.name)
        if insert_of is None:
            raise ValueError(f"no INSERT ... ON CONFLICT for {dialect.name}: {self.statement}")
        return self._build(insert_of)

    def rows(self, conn: Connection, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row the statement returns, as dicts keyed by column name."""
        return self._form(conn).execute(conn, params or {})

    def first(self, conn: Connection, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The first row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def run(self, conn: Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> int:
        """Execute (a list of parameter sets: once per set, in one ``executemany``); the row count."""
        return self._form(conn).execute_count(conn, params)

    def send(self, conn: Connection, params: dict[str, Any] | None = None) -> Pending:
        """Execute, the answer read when asked (``.rows()``, ``.first()``, ``.count()``): inside
        :func:`pipelined_transaction`, the statements sent or queued before the answer is read all
        go in the same round trip; elsewhere, the answer is read at once."""
        return self._form(conn).send(conn, params or {})

    def queue(self, conn: Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None = None) -> None:
        """Execute as :meth:`run`, its row count unwanted: inside :func:`pipelined_transaction`,
        sent without waiting for the answer (an error then comes back with the next result read,
        or the COMMIT)."""
        self._form(conn).execute_count(conn, params, count=False)


class Pending:
    """A statement sent whose answer is read later (:meth:`Prepared.send`): inside
    :func:`pipelined_transaction`, the statements sent after it go in the same round trip; read
    once."""

    __slots__ = ("_answer", "_got")

    def __init__(self, answer: Callable[[], tuple[list[dict[str, Any]], int]]) -> None:
        self._answer = answer
        self._got: tuple[list[dict[str, Any]], int] | None = None

    def _read(self) -> tuple[list[dict[str, Any]], int]:
        if self._got is None:
            self._got = self._answer()
        return self._got

    def rows(self) -> list[dict[str, Any]]:
        return self._read()[0]

    def first(self) -> dict[str, Any] | None:
        rows = self._read()[0]
        return rows[0] if rows else None

    def count(self) -> int:
        """The rows the statement changed."""
        return self._read()[1]


class _Form:
    """What one dialect compiled from a statement, and how to bind and read its values."""

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        if "POSTCOMPILE" in self.sql or getattr(compiled, "literal_execute_params", None):
            raise ValueError(f"cannot prepare a statement with parameters rendered at run time: {self.sql}")
        self.dialect = dialect
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        binds = {name: bind for bind, name in compiled.bind_names.items()}  # as the SQL names them
        self.positional = bool(dialect.positional)
        names: list[str] = list(compiled.positiontup or []) if self.positional else list(binds)
        # (name, required, constant value, conversion) for each parameter, in the order the SQL wants
        self.binds: list[tuple[str, bool, Any, _Processor]] = []
        for name in names:
            bind = binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.binds.append((name, bool(bind.required), None if bind.required else bind.effective_value, processor))
        self.escaped = dict(getattr(compiled, "escaped_bind_names", None) or {})
        columns = _result_columns(statement)
        self.names = [name for name, _ in columns]
        self.results: list[_Processor] = [
            type_.dialect_impl(dialect).result_processor(dialect, None) for _, type_ in columns
        ]
        self.converts = any(p is not None for p in self.results)

    def _params(self, params: dict[str, Any]) -> Any:
        values: list[Any] = []
        for name, required, constant, processor in self.binds:
            if name in params:
                value = params[name]
            elif required:
                raise KeyError(f"parameter {name!r} missing for: {self.sql}")
            else:
                value = constant
            values.append(value if processor is None else processor(value))
        if self.positional:
            return tuple(values)
        return {self.escaped.get(name, name): value for (name, *_), value in zip(self.binds, values, strict=True)}

    def _run(
        self, conn: Connection, bound: Any, *, many: bool = False, fetch: bool = False, count: bool = True
    ) -> tuple[Sequence[Any], int]:
        """Execute on a cursor of the connection's DBAPI connection: (the rows fetched, the row count;
        -1 unless ``count`` when pipelined)."""
        return self._answer(conn, self._sent(conn, bound, many=many), bound, fetch=fetch, count=count)

    def _sent(self, conn: Connection, bound: Any, *, many: bool = False) -> Any:
        """A cursor of the connection's DBAPI connection on which the statement was sent."""
        cursor = conn.connection.cursor()
        try:
            (cursor.executemany if many else cursor.execute)(self.sql, bound)
        except self.dbapi_error as exc:
            cursor.close()
            raise self._error(conn, exc, bound) from exc
        return cursor

    def _answer(self, conn: Connection, cursor: Any, bound: Any, *, fetch: bool,
                count: bool = True) -> tuple[Sequence[Any], int]:
        """The answer on ``cursor`` (then closed): the rows fetched, the row count; with no rows to fetch
        in a pipelined transaction, the count comes with the answer (a sync), unless not ``count``."""
        try:
            if fetch:
                return cursor.fetchall(), int(cursor.rowcount)
            pipeline = conn.info.get(_PIPELINE) if count else None
            if pipeline is not None:
                pipeline.sync()
            return [], int(cursor.rowcount)
        except self.dbapi_error as exc:
            raise self._error(conn, exc, bound) from exc
        finally:
            cursor.close()

    def execute(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        fetched, _ = self._run(conn, self._params(params), fetch=True)
        return self._converted(fetched)

    def _converted(self, fetched: Sequence[Any]) -> list[dict[str, Any]]:
        if not fetched:
            return []
        if len(fetched[0]) != len(self.names):
            raise RuntimeError(f"{len(fetched[0])} columns came back, {len(self.names)} expected: {self.sql}")
        names, processors = self.names, self.results
        if not self.converts:
            return [dict(zip(names, row, strict=True)) for row in fetched]
        return [
            {name: value if p is None else p(value) for name, p, value in zip(names, processors, row, strict=True)}
            for row in fetched
        ]

    def send(self, conn: Connection, params: dict[str, Any]) -> Pending:
        """Execute; its answer read when :class:`Pending` is asked (at once outside a pipeline)."""
        bound = self._params(params)
        cursor = self._sent(conn, bound)

        def answer() -> tuple[list[dict[str, Any]], int]:
            fetched, count = self._answer(conn, cursor, bound, fetch=bool(self.names))
            return self._converted(fetched), count

        pending = Pending(answer)
        if conn.info.get(_PIPELINE) is None:
            pending.rows()  # nothing to gain by waiting: read now, as before
        return pending

    def execute_count(self, conn: Connection, params: dict[str, Any] | Sequence[dict[str, Any]] | None, *,
                      count: bool = True) -> int:
        """Execute once (a dict), or once per parameter set in one ``executemany``; the row count
        (-1 unless ``count`` when pipelined)."""
        if isinstance(params, dict) or params is None:
            return self._run(conn, self._params(params or {}), count=count)[1]
        if not params:
            return 0
        return self._run(conn, [self._params(p) for p in params], many=True, count=count)[1]

    def _error(self, conn: Connection, exc: Any, bound: Any) -> Exception:
        return _wrapped(conn, exc, self.sql, bound)


def _result_columns(statement: Any) -> list[tuple[str, Any]]:
    """(name, type) of each column the statement returns, in order ([] for none)."""
    if isinstance(statement, Select):
        return [(column.name, column.type) for column in statement.selected_columns]
    described = getattr(statement, "returning_column_descriptions", None) or []
    return [(d["name"], d["type"]) for d in described]
