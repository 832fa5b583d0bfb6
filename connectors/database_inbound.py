"""Database, inbound: rows of a vendor's table or view (SQLite file, PostgreSQL), through SQLAlchemy Core.

Which rows are ready, by ``select``:

* ``state: {column, ready}``: rows whose state column holds one of ``ready`` (``null`` for an
  empty one).  A row is claimed by ``UPDATE <table> SET <column> = <states.claimed> WHERE <key>
  AND <column> IN <ready>``: one statement, so of several pollers (threads, processes, machines)
  exactly one sees it change a row.  ``commit`` sets ``states.taken`` (only over
  ``states.claimed``: a reply already written there stands), ``rollback`` ``states.error``.
* ``watermark: {column, start}``: rows of the table or view not yet in the outcome table,
  taken in watermark order.  A row is claimed by inserting its claim (``seq`` 0) into the
  outcome table, whose primary key ``(<key>, seq)`` lets only one insert in; ``commit`` and
  ``rollback`` insert a row ``states.taken`` / ``states.error``.  The watermark only narrows
  the query: Hent remembers (``<work_dir>/watermark.json``) the highest value it claimed and
  reads from there on (``>=``), never below ``start``; rows whose watermark is null are not
  taken.  It suits a column that grows with new rows (an identity column, an export time).

``query`` (a SELECT, no bound parameter) may choose the rows and columns read from ``table``
(or from anything: joins, views); Hent wraps it, adding the state or watermark condition,
the order and ``batch``.  It must not filter on the state column itself.

Each row becomes a bundle named ``<connector>-<key>.json`` (see
:func:`connectors._database_common.encode_key`): the row as a JSON object (Hent's own state
and outcome columns left out, so the same row gives the same bytes), and the files it names —
in ``files`` columns (a text, or a JSON list of texts) and in what the mapping reads from
the sidecar — copied from ``files_dir`` into ``<work_dir>/claims/<bundle>/``.  A ``files``
column naming a missing file, an absolute path or ``..`` rolls the row back at once, the
error naming the column and the path.  So does a row over a ``limits`` (:mod:`connectors._limits`):
its files' sizes are checked before they are copied (``max_file_bytes``, ``max_document_bytes``,
``max_files``), then counted as they are (a file that grows is cut off at the limit, its partial
copy removed).  Before a row is claimed, the files its ``files`` columns name must leave
``min_free_bytes`` free in ``work_dir`` (and the spool, when the runtime says where it is): else a
TransientError (``spool-full``), and the row is left as it is for a later poll.

Where outcomes go, by ``outcome``:

* ``columns``: in the vendor's table, ``UPDATE ... WHERE <key>``: ``state``, ``error`` and
  optionally ``identifier``, ``at``, ``code``; ``routes: {<route>: {...}}`` gives a route
  columns of its own (a contract goes to the legality platform, IDActe, and to the
  procurement platform, DECP id): a route listed there writes only the columns it names.
* ``table``: one row per event, never updated (the user needs SELECT and INSERT on it)::

      CREATE TABLE hent_outcome (
          <the key columns, same names and types as the vendor's>,
          seq        INTEGER NOT NULL,   -- 0: the claim, then 1, 2, ... in order
          route      VARCHAR(200),       -- the route of a reply (null: the document itself)
          state      VARCHAR(40) NOT NULL,
          identifier VARCHAR(200),       -- IDActe, DECP id
          error      TEXT,
          at         TIMESTAMP WITH TIME ZONE NOT NULL,  -- TEXT on SQLite (ISO 8601, UTC)
          code       VARCHAR(40),        -- the platform's message code (1-2, 1-3, 2-1...)
          PRIMARY KEY (<the key columns>, seq))

A reply writes ``summary["state"]``, the time, the error (``summary["reason"]``, only for the
states REJECTED, FAILED and ERROR; null otherwise) and the identifier: the first of
``message.decp_id``, ``message.id_acte``, ``id_acte``, ``message.id`` that is set (nothing
written when none is).  With ``replies_dir``, the message and summary are also written there
as files, as the folder source writes them.

Crash safety: ``tag`` records the document id in the claim's local manifest (fsync).
``recover`` asks the database which rows are claimed and not ended (state ``claimed``; a
claim row with no ``taken``/``error`` row after it) and gives each back from its local
snapshot when there is one (with its tag), else rebuilt from the database (same bytes, so
the ledger's idempotency key finds its document).  A row claimed whose copy then failed (a
file unreadable, a disk full) waits for that ``recover``, at the next start.  Transactions
are short and never span a file copy.  The user needs SELECT on what is read, UPDATE on the
state and outcome columns (or INSERT on the outcome table), nothing else.

A key is one or more columns holding integers or texts.  For example::

    deliberations_db:
      type: database
      url: postgresql+psycopg://hent@db.mairie.local/seances
      password: ${SEANCES_DB_PASSWORD}
      table: export_actes
      key: id
      select: {state: {column: statut, ready: [NOUVEAU, null]}}
      files: [fichier_acte]
      files_dir: /srv/seances/pdf
      outcome:
        columns:
          state: statut_hent
          identifier: id_acte
          error: erreur
          at: date_retour
          routes: {contracts-to-procurement: {state: statut_decp, identifier: id_decp, error: erreur_decp}}
    finance_db:
      type: database
      url: sqlite:///srv/finances/export.db
      query: SELECT * FROM v_marches WHERE montant_ht >= 40000
      key: numero
      select: {watermark: {column: exporte_le, start: 2025-01-01}}
      outcome: {table: hent_outcome}
"""

from __future__ import annotations

__all__ = ["Connector", "DatabaseInbound", "DatabaseInboundConfig"]

import json
import logging
import re
import shutil
import threading
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import (
    and_,
    column,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError
from sqlalchemy.sql import ColumnElement, FromClause, Select

from bus.config import ConfigPath, ConnectorConfig, Duration, Schedule
from bus.config_types import _resolve_url
from bus.connector import Candidate, Claimed, InboundConnector
from bus.errors import ConfigError, DocumentError, HentError, TransientAlert
from bus.secrets import Secret
from connectors._database_common import (
    READ,
    KeyValue,
    Watermark,
    as_value,
    database_errors,
    decode_key,
    encode_key,
    file_names,
    inside,
    open_engine,
    relative_file,
    row_json,
    sql_table,
)
from connectors._folder_common import (
    atomic_write,
    exclusive_write,
    folder_errors,
    move,
    owner_suffix,
    write_local_reply,
)
from connectors._limits import Budget, SourceLimits, count_refusal, room_folders, room_for
from connectors._pickup_options import INTAKE_THREADS_HELP, IntakeThreads

log = logging.getLogger(__name__)

MANIFEST = ".claim.json"
MARK = "watermark.json"
FAILURE_STATES = frozenset({"REJECTED", "FAILED", "ERROR"})
OUTCOME_COLUMNS = ("seq", "route", "state", "identifier", "error", "at", "code")
MAX_NAME = 200  #: a bundle's name longer than this (a very long key) is not taken


def _plain_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", value):
        raise PydanticCustomError("database-name", "{got} is not a plain SQL name (letters, digits and _, "
                                  "a table may be schema.table)", {"got": repr(value)})
    return value


def _column_name(value: Any) -> str:
    if "." in _plain_name(value):
        raise PydanticCustomError("database-name", "{got} is a column: no schema or table in front",
                                  {"got": repr(value)})
    return str(value)


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _scalar_start(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value  # YAML reads 2024-01-01 as a date


Name = Annotated[str, BeforeValidator(_column_name)]
TableName = Annotated[str, BeforeValidator(_plain_name)]
Value = str | int


class StateSelect(BaseModel):
    """Rows are ready by the value of a state column, which Hent then sets."""

    model_config = ConfigDict(extra="forbid")

    column: Name = Field(..., description="The state column (Hent sets it to states.claimed, .taken, .error).")
    ready: Annotated[list[Value | None], BeforeValidator(lambda v: [v] if not isinstance(v, list) else v)] = Field(
        ..., min_length=1, description="The values of a row ready to be taken (null: an empty column).")


class WatermarkSelect(BaseModel):
    """Rows are new by a growing column; the outcome table says which were taken."""

    model_config = ConfigDict(extra="forbid")

    column: Name = Field(..., description="A column that grows with new rows (an identity, an export time).")
    start: Annotated[Value | float | None, BeforeValidator(_scalar_start)] = Field(
        None, description="Rows whose watermark is below this are never taken (the history before Hent).")


class SelectConfig(BaseModel):
    """``state`` or ``watermark``."""

    model_config = ConfigDict(extra="forbid")

    state: StateSelect | None = Field(None, description="Ready by a state column (claims update it).")
    watermark: WatermarkSelect | None = Field(None, description="New by a watermark (claims go to outcome.table).")

    @model_validator(mode="after")
    def _one(self) -> SelectConfig:
        if (self.state is None) == (self.watermark is None):
            raise PydanticCustomError("database-select", "set either state: {column, ready} or "
                                      "watermark: {column}, not both nor neither", {})
        return self


class RouteColumns(BaseModel):
    """The vendor's columns one route's replies write; a column left out is not written."""

    model_config = ConfigDict(extra="forbid")

    state: Name | None = Field(None, description="Column for the state (SENT, ACKNOWLEDGED, REJECTED...).")
    identifier: Name | None = Field(None, description="Column for the official identifier (IDActe, DECP id).")
    error: Name | None = Field(None, description="Column for the reason of a failure or a rejection.")
    at: Name | None = Field(None, description="Column for the time of the outcome (UTC).")
    code: Name | None = Field(None, description="Column for the platform's message code (1-2, 1-3...).")

    def names(self) -> list[str]:
        return [name for name in (self.state, self.identifier, self.error, self.at, self.code) if name]


class OutcomeColumns(RouteColumns):
    """Outcome columns in the vendor's table: the default ones, and per route."""

    state: Name = Field(..., description="Column for the state (may be select.state.column itself).")
    error: Name = Field(..., description="Column for the error text.")
    routes: dict[str, RouteColumns] = Field(
        default_factory=dict, description="Columns of their own for some routes (by route name).")


class OutcomeConfig(BaseModel):
    """Where outcomes are written: ``columns`` of the vendor's table, or an outcome ``table``."""

    model_config = ConfigDict(extra="forbid")

    columns: OutcomeColumns | None = Field(None, description="Columns of the vendor's table, updated.")
    table: TableName | None = Field(None, description="A table Hent inserts into (key columns, seq, route, state, "
                                    "identifier, error, at, code).")

    @model_validator(mode="after")
    def _one(self) -> OutcomeConfig:
        if (self.columns is None) == (self.table is None):
            raise PydanticCustomError("database-outcome", "set either columns: {state, error, ...} or "
                                      "table: <name>, not both nor neither", {})
        return self


class States(BaseModel):
    """The values Hent writes for its own steps."""

    model_config = ConfigDict(extra="forbid")

    claimed: Value = Field("CLAIMED", description="A row Hent took and is processing.")
    taken: Value = Field("TAKEN", description="A row Hent processed (its document is routed).")
    error: Value = Field("ERROR", description="A row Hent could not process (the error column says why).")

    @model_validator(mode="after")
    def _distinct(self) -> States:
        if len({self.claimed, self.taken, self.error}) != 3:
            raise PydanticCustomError("database-states", "claimed, taken and error must differ", {})
        return self


class DatabaseInboundConfig(ConnectorConfig):
    """``type: database`` used in a route's ``from``.

    Each check sits on the field it is about, so that every mistake is reported at once, at
    its line (a field's checks see the fields above it).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True, hide_input_in_errors=True)

    type: Literal["database"] = Field("database", description="The protocol: a database, through SQLAlchemy.")
    url: str = Field(..., description="SQLAlchemy URL with no password: sqlite:///path/to.db, "
                     "postgresql+psycopg://user@host:5432/db.")
    password: Secret | None = Field(None, description="The database user's password (${ENV} or ${file:...}).",
                                    json_schema_extra={"secret": True})
    table: TableName | None = Field(None, description="The table or view read (and updated, with select.state "
                                    "or outcome.columns); schema.table allowed.")
    query: str | None = Field(None, description="A SELECT choosing the rows and columns read, instead of the "
                              "whole table; Hent adds the state or watermark condition around it.")
    key: Annotated[list[Name], BeforeValidator(_listed)] = Field(
        ..., min_length=1, description="The column(s) identifying a row (integers or texts).")
    select: SelectConfig = Field(..., description="Which rows are ready: state or watermark.")
    states: States = Field(default_factory=lambda: States(), description="The values of Hent's own steps.")
    files_dir: ConfigPath | None = Field(None, description="The local folder the rows' file names are relative to.")
    files: Annotated[list[Name], BeforeValidator(_listed)] = Field(
        default_factory=list, description="Columns naming a file (or a JSON list of files) under files_dir.")
    json_columns: Annotated[list[Name], BeforeValidator(_listed)] = Field(
        default_factory=list, description="Columns holding JSON as text, read as JSON into the sidecar.")
    outcome: OutcomeConfig = Field(..., description="Where outcomes go: columns or table.")
    batch: int = Field(100, gt=0, le=10_000, description="At most this many rows are taken per poll.")
    intake_threads: IntakeThreads = Field(None, description=INTAKE_THREADS_HELP)
    poll: Schedule = Field("30s", description="How often to look: a duration ('30s') or a cron line.")
    replies_dir: ConfigPath | None = Field(None, description="Also write replies there as files (messages, summary).")
    work_dir: ConfigPath | None = Field(
        None, description="Local folder of the claimed rows' snapshots (default ~/.cache/hent/database/<connector>).")
    limits: SourceLimits = Field(
        default_factory=SourceLimits, description="Size limits of a row's files, and the room they must leave.")
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to connect.")
    timeout: Duration = Field(30.0, gt=0, description="Longest statement (PostgreSQL); wait for a lock (SQLite).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        value = _resolve_url(value.strip(), (info.context or {}).get("base_dir"))
        try:
            parsed = make_url(value)
        except ArgumentError:
            raise PydanticCustomError("database-url", "not a database URL: write sqlite:///path/to.db or "
                                      "postgresql+psycopg://user@host/db", {}) from None
        if parsed.password is not None:
            raise PydanticCustomError("database-url", "the URL must not hold the password: write it in password: "
                                      "as ${ENV_VAR} or ${file:/path}", {})
        if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
            raise PydanticCustomError("database-url", "a SQLite URL names a file: sqlite:///path/to.db", {})
        try:
            parsed.get_dialect().import_dbapi()
        except NoSuchModuleError:
            raise PydanticCustomError("database-url", "SQLAlchemy knows no database {scheme!r}",
                                      {"scheme": parsed.drivername}) from None
        except ImportError as exc:
            raise PydanticCustomError("database-url", "{scheme} needs the Python package {package!r}: "
                                      "pip install {package}", {"scheme": parsed.drivername,
                                                                "package": exc.name or str(exc)}) from None
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: Secret | None, info: ValidationInfo) -> Secret | None:
        url = info.data.get("url")
        if value is not None and not value.reveal():  # ${DB_PASSWORD:-} left empty: no password
            return None
        if value is not None and url is not None and make_url(url).get_backend_name() == "sqlite":
            raise PydanticCustomError("database-url", "a SQLite database has no password", {})
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            if "table" in info.data and info.data["table"] is None:
                raise PydanticCustomError("database-source", "set table (the table or view read) or query "
                                          "(a SELECT)", {})
            return None
        query = value.strip().rstrip(";").strip()
        if not re.match(r"(?is)^(select|with)\b", query) or ";" in query:
            raise PydanticCustomError("database-query", "expected one SELECT (or WITH ... SELECT) statement", {})
        params = sorted(text(query).compile().params)
        if params:
            raise PydanticCustomError("database-query", "no bound parameter ({names}) is needed: Hent adds the "
                                      "state or watermark condition around the query", {"names": ", ".join(params)})
        return query

    @field_validator("select")
    @classmethod
    def _select(cls, value: SelectConfig, info: ValidationInfo) -> SelectConfig:
        if value.state is not None and "table" in info.data and info.data["table"] is None:
            raise PydanticCustomError("database-select", "state: claims update the state column of table: set "
                                      "table (query may still choose the rows and columns read)", {})
        if value.state is not None and value.state.column in info.data.get("key", []):
            raise PydanticCustomError("database-key", "state: the state column cannot be a key column", {})
        return value

    @field_validator("states")
    @classmethod
    def _states(cls, value: States, info: ValidationInfo) -> States:
        select_ = info.data.get("select")
        ready = select_.state.ready if select_ is not None and select_.state is not None else []
        if {value.claimed, value.taken, value.error} & set(ready):
            raise PydanticCustomError("database-states", "claimed, taken and error must not be values of "
                                      "select.state.ready: a row would be taken again", {})
        return value

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and "files_dir" in info.data and info.data["files_dir"] is None:
            raise PydanticCustomError("database-files", "set files_dir, the folder these columns' file names are "
                                      "relative to", {})
        return value

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, value: OutcomeConfig, info: ValidationInfo) -> OutcomeConfig:
        select_ = info.data.get("select")
        if value.columns is not None and "table" in info.data and info.data["table"] is None:
            raise PydanticCustomError("database-outcome", "columns are updated in table: set table", {})
        if select_ is not None and select_.watermark is not None and value.table is None:
            raise PydanticCustomError("database-outcome", "with select.watermark, rows are claimed by inserting "
                                      "into an outcome table: set table", {})
        clash = sorted(set(info.data.get("key", [])) & _written(value))
        if clash:
            raise PydanticCustomError("database-key", "{names}: a key column cannot be written by Hent",
                                      {"names": ", ".join(clash)})
        return value

    def hent_columns(self) -> set[str]:
        """The vendor's columns Hent writes (left out of the sidecar)."""
        return _written(self.outcome) | ({self.select.state.column} if self.select.state is not None else set())


def _written(outcome: OutcomeConfig) -> set[str]:
    if outcome.columns is None:
        return set()
    return {*outcome.columns.names(), *(name for route in outcome.columns.routes.values() for name in route.names())}


Row = dict[str, Any]
Key = tuple[KeyValue, ...]


class DatabaseInbound(InboundConnector):
    Config = DatabaseInboundConfig
    config: DatabaseInboundConfig
    intake_threads_default = 4  # each claim and read waits for the database server

    def __init__(self, name: str, config: DatabaseInboundConfig, context: Any = None) -> None:
        super().__init__(name, config, context)
        self.work_dir = config.work_dir or Path.home() / ".cache" / "hent" / "database" / name
        self.claims_dir = self.work_dir / "claims"
        self.url: URL = make_url(config.url)
        self.where = f"{self.url.render_as_string(hide_password=True)} ({config.table or 'query'})"
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()  # replies come from other threads than the poll's
        self._skip = frozenset(config.hent_columns())
        self._warned: set[str] = set()
        state, mark = config.select.state, config.select.watermark
        read = [*config.key, *([state.column] if state else []), *([mark.column] if mark else [])]
        if config.query is not None:
            self.source: FromClause = text(config.query).columns(*map(column, dict.fromkeys(read))).subquery("hent_src")
        else:
            self.source = sql_table(config.table or "", read)
        self.vendor = sql_table(config.table or "", [*config.key, *self._skip])
        outcome = config.outcome.table
        self.outcome = sql_table(outcome, [*config.key, *OUTCOME_COLUMNS]) if outcome else None
        self.watermark = Watermark(self.work_dir / MARK, mark.column, mark.start) if mark is not None else None

    # -- the database ------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        with self._engine_lock:
            if self._engine is None:
                with database_errors(self.name, self.where):
                    self._engine = open_engine(self.name, self.url, self.config.password,
                                               connect_timeout=self.config.connect_timeout,
                                               timeout=self.config.timeout)
            return self._engine

    def _read(self, statement: Any) -> list[Row]:
        with database_errors(self.name, self.where), self.engine.connect() as conn:
            conn = conn.execution_options(**{READ: True})
            return [dict(row._mapping) for row in conn.execute(statement)]

    def close(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def reachable(self) -> tuple[bool, str]:
        try:
            self._read(select(literal_column("1")))
            self._read(select(literal_column("*")).select_from(self.source).limit(0))
            if self.outcome is not None:
                self._read(select(self.outcome.c.seq).limit(0))
        except HentError as exc:
            return False, exc.message
        return True, self.where

    # -- rows and keys ------------------------------------------------------------------
    def _match(self, clause: FromClause, key: Key) -> ColumnElement[bool]:
        return and_(*(clause.c[name] == as_value(value) for name, value in zip(self.config.key, key, strict=True)))

    def _same_key(self, one: FromClause, other: FromClause) -> ColumnElement[bool]:
        return and_(*(one.c[name] == other.c[name] for name in self.config.key))

    def _ready(self, clause: FromClause) -> ColumnElement[bool]:
        state = self.config.select.state
        assert state is not None
        column_ = clause.c[state.column]
        return or_(*(column_.is_(None) if value is None else column_ == as_value(value) for value in state.ready))

    def bundle_of(self, key: Key) -> str:
        return f"{self.name}-{encode_key(key)}.json"

    def key_of(self, bundle: str) -> Key:
        prefix = f"{self.name}-"
        if not bundle.startswith(prefix) or not bundle.endswith(".json"):
            raise DocumentError(f"connector {self.name!r}: {bundle!r} is not one of its rows ({prefix}<key>.json)",
                                connector=self.name, path=bundle, rule="database-bundle")
        return decode_key(bundle[len(prefix):-len(".json")])

    def _row_key(self, row: Row) -> Key | None:
        values: list[KeyValue] = []
        for name in self.config.key:
            value = row[name]
            if isinstance(value, Decimal) and value == value.to_integral_value():
                value = int(value)
            if value is None or isinstance(value, bool) or not isinstance(value, int | str):
                if value is not None and f"type:{name}" not in self._warned:
                    self._warned.add(f"type:{name}")
                    log.error("%s: key column %r holds a %s: only integer and text keys are supported",
                              self.name, name, type(value).__name__)
                return None
            values.append(value)
        return tuple(values)

    def _check_columns(self, row: Row) -> None:
        wanted = [*self.config.key, *self.config.files, *self.config.json_columns]
        if self.config.select.watermark is not None:
            wanted.append(self.config.select.watermark.column)
        missing = [name for name in dict.fromkeys(wanted) if name not in row]
        if missing:
            raise ConfigError(
                f"connector {self.name!r}: {self.where} gives no column {', '.join(map(repr, missing))} "
                f"(it gives {', '.join(row)}): check key, files, json_columns and the watermark",
                connector=self.name, field="query", rule="database-column")

    # -- readiness ----------------------------------------------------------------------
    def list_ready(self) -> list[Candidate]:
        if self.config.files_dir is not None and not self.config.files_dir.is_dir():
            raise TransientAlert(f"connector {self.name!r}: files_dir {self.config.files_dir} is not a folder: "
                                 "mount it or fix files_dir; nothing is taken meanwhile",
                                 connector=self.name, path=str(self.config.files_dir), rule="database-files")
        src = self.source
        query: Select[Any] = select(literal_column("*")).select_from(src)
        if self.config.select.state is not None:
            query = query.where(self._ready(src)).order_by(*(src.c[k] for k in self.config.key))
        else:
            mark_column = src.c[self._mark_column]
            assert self.outcome is not None
            taken = exists().where(self._same_key(self.outcome, src))
            query = query.where(mark_column.is_not(None), ~taken).order_by(mark_column, *(src.c[k] for k in
                                                                                          self.config.key))
            mark = self.watermark.value() if self.watermark is not None else None
            if mark is not None:
                query = query.where(mark_column >= as_value(mark))
        found = []
        for row in self._read(query.limit(self.config.batch)):
            self._check_columns(row)
            row_json(self.name, self._sidecar_row(row), frozenset(self.config.json_columns))  # refuses binary columns
            key = self._row_key(row)
            if key is None:
                continue
            bundle = self.bundle_of(key)
            if len(bundle) > MAX_NAME:
                if bundle not in self._warned:
                    self._warned.add(bundle)
                    log.error("%s: a row's key is too long for a file name (%d characters): not taken",
                              self.name, len(bundle))
                continue
            members = [v for c in self.config.files for v in file_names(row.get(c)) if isinstance(v, str)]
            found.append(Candidate(bundle, tuple(members)))
        return found

    def _sidecar_row(self, row: Row) -> Row:
        return {name: value for name, value in row.items() if name not in self._skip}

    # -- claim ----------------------------------------------------------------------------
    def claim(self, candidate: Candidate) -> Claimed | None:
        key = self.key_of(candidate.key)
        self._room(candidate)
        if self.config.select.state is not None:
            statement = (update(self.vendor).where(self._match(self.vendor, key), self._ready(self.vendor))
                         .values({self.config.select.state.column: as_value(self.config.states.claimed)}))
            with database_errors(self.name, self.where), self.engine.begin() as conn:
                if conn.execute(statement).rowcount != 1:
                    return None  # another poller took it, or the vendor changed it meanwhile
        elif not self._insert_claim(key):
            return None
        row = self._fetch(key)
        if row is None:
            self._fail(key, f"the row left {self.where} right after it was claimed: query must not filter on the "
                       "state column")
            return None
        if self.watermark is not None:
            with folder_errors(self.name, self.work_dir):
                self.watermark.advance(row[self._mark_column])
        return self._snapshot(key, row)

    def _room(self, candidate: Candidate) -> None:
        """TransientError (``spool-full``) when the files the row's ``files`` columns name would leave
        less than ``limits.min_free_bytes`` where they are copied; the row is not claimed yet.  A row
        over a limit is not held back: it is claimed, then rolled back with the reason."""
        folder = self.config.files_dir
        sizes: dict[str, int] = {}
        for value in candidate.members:
            relative = relative_file(value) if folder is not None else None
            path = inside(folder, relative) if folder is not None and relative else None
            try:
                sizes[value] = path.stat().st_size if path is not None else 0
            except OSError:
                continue  # missing: the claim rolls the row back, naming it
        try:
            Budget(self.config.limits, self.name, candidate.key).declare(sizes)
        except DocumentError:
            return
        room_for(self.config.limits, self.name, candidate.key, sum(sizes.values()),
                 room_folders(self.context, self.work_dir))

    def _insert_claim(self, key: Key) -> bool:
        """Insert the row's claim (seq 0); False when another poller's is there."""
        assert self.outcome is not None
        values = {"seq": as_value(0), "state": as_value(self.config.states.claimed), "at": as_value(self._now())}
        with database_errors(self.name, self.where):
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(self.outcome).values({**self._key_values(key), **values}))
                return True
            except IntegrityError:
                first = select(self.outcome.c.seq).where(self._match(self.outcome, key), self.outcome.c.seq == 0)
                with self.engine.connect() as conn:
                    if conn.execution_options(**{READ: True}).execute(first).first() is not None:
                        return False
                raise  # not a claim of the same row: the outcome table is wrong (a column NOT NULL...)

    def _key_values(self, key: Key) -> dict[str, Any]:
        return {name: as_value(value) for name, value in zip(self.config.key, key, strict=True)}

    def _fetch(self, key: Key) -> Row | None:
        rows = self._read(select(literal_column("*")).select_from(self.source).where(self._match(self.source, key)))
        return rows[0] if rows else None

    def _snapshot(self, key: Key, row: Row) -> Claimed | None:
        """The row's sidecar and files in a claim folder of their own; None when it was rolled back."""
        bundle = self.bundle_of(key)
        data, problem = row_json(self.name, self._sidecar_row(row), frozenset(self.config.json_columns))
        sources: dict[str, Path] = {}
        if problem is None:
            sources, problem = self._files(bundle, row, data)
        if problem is not None:
            self._fail(key, problem)
            return None
        stem = bundle.removesuffix(".json")
        target = self.claims_dir / stem
        budget = Budget(self.config.limits, self.name, bundle)
        with folder_errors(self.name, self.claims_dir):
            preparing = self.claims_dir / f".{stem}.{owner_suffix()}"
            shutil.rmtree(preparing, ignore_errors=True)
            try:
                budget.declare({bundle: len(data), **{name: path.stat().st_size for name, path in sources.items()}})
                (preparing / "files").mkdir(parents=True)
                local: dict[str, str] = {}
                budget.start(bundle)
                budget.count(len(data))
                for index, (name, path) in enumerate(sources.items()):
                    local[name] = f"files/{index}.{Path(name).name}"
                    budget.start(name)
                    atomic_write(preparing / local[name], source=path, count=budget.count)
            except DocumentError as error:
                shutil.rmtree(preparing, ignore_errors=True)
                count_refusal(self.name, error)
                self._fail(key, str(error))
                return None
            atomic_write(preparing / bundle, data)
            exclusive_write(preparing / MANIFEST, json.dumps({"key": list(key), "files": local, "ref": None}).encode())
            shutil.rmtree(target, ignore_errors=True)  # a snapshot of an earlier claim of the same row
            move(preparing, target)
        return self._claimed(target, bundle)

    def _files(self, bundle: str, row: Row, data: bytes) -> tuple[dict[str, Path], str | None]:
        """The files the row names (``files`` columns, then the mapping's): where they are, or the problem."""
        found: dict[str, Path] = {}
        folder = self.config.files_dir
        for name in self.config.files:
            for value in file_names(row.get(name)):
                relative = relative_file(value) if isinstance(value, str) else None
                if relative is None or folder is None:
                    return {}, f"column {name!r} names {value!r}: a file name relative to files_dir is expected"
                path = inside(folder, relative)
                if path is None or not path.is_file():
                    return {}, f"column {name!r} names {value!r}: {folder / relative} not found"
                found[value] = path
        if folder is not None:
            try:
                referenced = self.context.bundle_members(bundle, data)
            except Exception as exc:  # noqa: BLE001 - the mapping reports it when the document is mapped
                log.debug("bundle members of %s unknown: %s", bundle, exc)
                referenced = []
            for value in referenced:
                relative = relative_file(value) if isinstance(value, str) else None
                path = inside(folder, relative) if relative else None
                if value not in found and path is not None and path.is_file():
                    found[value] = path  # one missing is reported by the mapping, naming its field
        return found, None

    def _claimed(self, folder: Path, bundle: str) -> Claimed:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = {bundle: folder / bundle, **{name: folder / local for name, local in manifest["files"].items()}}
        return Claimed(bundle, files, origin=self.where, ref=manifest.get("ref"))

    def tag(self, claimed: Claimed, ref: str) -> Claimed:
        folder = claimed.sidecar.parent
        with folder_errors(self.name, folder):
            manifest = json.loads((folder / MANIFEST).read_text())
            manifest["ref"] = ref
            atomic_write(folder / MANIFEST, json.dumps(manifest).encode())
        return replace(claimed, ref=ref)

    # -- commit / rollback / recover -------------------------------------------------------
    def commit(self, claimed: Claimed) -> None:
        key = self.key_of(claimed.key)
        state, states = self.config.select.state, self.config.states
        if state is not None:
            statement = (update(self.vendor).where(self._match(self.vendor, key),
                                                   self.vendor.c[state.column] == as_value(states.claimed))
                         .values({state.column: as_value(states.taken)}))
            with database_errors(self.name, self.where), self.engine.begin() as conn:
                conn.execute(statement)
        else:
            self._insert_outcome(key, {"state": states.taken}, unless_ended=True)
        self._release(claimed.key)

    def rollback(self, claimed: Claimed, reason: str) -> None:
        self._fail(self.key_of(claimed.key), reason.strip())
        self._release(claimed.key)

    def _fail(self, key: Key, reason: str) -> None:
        """The row ends in error: ``states.error`` and ``reason`` written where its outcome goes."""
        log.warning("%s: row %s rolled back: %s", self.name, encode_key(key), reason)
        state, columns, error = self.config.select.state, self.config.outcome.columns, self.config.states.error
        if state is not None:
            values = {state.column: error}
            if columns is not None:
                values.update({columns.state: error, columns.error: reason})
                if columns.at:
                    values[columns.at] = self._now()
            statement = (update(self.vendor).where(self._match(self.vendor, key), ~self._ready(self.vendor))
                         .values({name: as_value(value) for name, value in values.items()}))
            with database_errors(self.name, self.where), self.engine.begin() as conn:
                conn.execute(statement)
        if self.outcome is not None:
            self._insert_outcome(key, {"state": error, "error": reason}, unless_ended=state is None)

    def _release(self, bundle: str) -> None:
        with folder_errors(self.name, self.claims_dir):
            shutil.rmtree(self.claims_dir / bundle.removesuffix(".json"), ignore_errors=True)

    def recover(self) -> list[Claimed]:
        """The rows the database says are claimed and not ended, from their local snapshot when
        there is one (with its tag), else rebuilt from the database."""
        pending: list[tuple[Key, Row | None]] = []
        if self.config.select.state is not None:
            is_claimed = self.source.c[self.config.select.state.column] == as_value(self.config.states.claimed)
            rows = self._read(select(literal_column("*")).select_from(self.source).where(is_claimed))
            for row in rows:
                key = self._row_key(row)
                if key is not None:
                    pending.append((key, row))
        else:
            for row in self._read(self._open_claims()):
                key = self._row_key(row)
                if key is not None:
                    pending.append((key, None))
        recovered = []
        live = set()
        for key, found in pending:
            bundle = self.bundle_of(key)
            folder = self.claims_dir / bundle.removesuffix(".json")
            live.add(folder.name)
            if (folder / MANIFEST).is_file() and (folder / bundle).is_file():
                with folder_errors(self.name, folder):
                    recovered.append(self._claimed(folder, bundle))
                continue
            current = found if found is not None else self._fetch(key)
            if current is None:
                self._fail(key, f"the row claimed is no longer in {self.where}; nothing was processed")
                continue
            claimed = self._snapshot(key, current)
            if claimed is not None:
                recovered.append(claimed)
        if self.claims_dir.is_dir():
            for leftover in self.claims_dir.iterdir():  # ended (commit interrupted) or a claim killed midway
                if leftover.name not in live:
                    shutil.rmtree(leftover, ignore_errors=True)
        return recovered

    def _open_claims(self) -> Any:
        assert self.outcome is not None
        o, ended = self.outcome, self.outcome.alias("ended")
        states = self.config.states
        closing = exists().where(self._same_key(ended, o), ended.c.seq > as_value(0),
                                 or_(ended.c.state == as_value(states.taken), ended.c.state == as_value(states.error)))
        return (select(*(o.c[k] for k in self.config.key))
                .where(o.c.seq == as_value(0), o.c.state == as_value(states.claimed), ~closing))

    # -- outcome table ------------------------------------------------------------------------
    def _insert_outcome(self, key: Key, values: dict[str, Any], *, unless_ended: bool = False) -> int | None:
        """One more row for ``key`` (the next seq); None when ``unless_ended`` and the claim has ended."""
        assert self.outcome is not None
        o, states = self.outcome, self.config.states
        ending = or_(o.c.state == as_value(states.taken), o.c.state == as_value(states.error))
        row = {**self._key_values(key), **{k: as_value(v) for k, v in {"at": self._now(), **values}.items()}}
        with database_errors(self.name, self.where):
            for attempt in range(5):
                try:
                    with self.engine.begin() as conn:
                        if unless_ended and conn.execute(
                                select(o.c.seq).where(self._match(o, key), o.c.seq > 0, ending)).first() is not None:
                            return None
                        last = conn.execute(select(func.max(o.c.seq)).where(self._match(o, key))).scalar()
                        seq = int(last) + 1 if last is not None else 1  # 0 is a claim's (watermark mode)
                        conn.execute(insert(o).values({**row, "seq": as_value(seq)}))
                        return seq
                except IntegrityError:
                    if attempt == 4:
                        raise
                    # another writer took that seq meanwhile (PostgreSQL): take the next one
        return None

    # -- replies ----------------------------------------------------------------------------
    def reply(
        self, bundle: str, code: str | None, payload: bytes | None, summary: dict[str, Any],
        attachments: dict[str, bytes] | None = None,
    ) -> list[str]:
        key = self.key_of(bundle)
        state = summary.get("state")
        error = summary.get("reason") if str(state) in FAILURE_STATES else None
        identifier = _identifier(summary)
        route = summary.get("route")
        written: list[str] = []
        columns = self.config.outcome.columns
        if columns is not None:
            chosen: RouteColumns = columns.routes.get(route, columns) if isinstance(route, str) else columns
            given = {chosen.state: state, chosen.error: error, chosen.at: self._now(), chosen.code: code}
            if identifier is not None:
                given[chosen.identifier] = identifier
            values = {name: value for name, value in given.items() if name}
            if values:
                statement = (update(self.vendor).where(self._match(self.vendor, key))
                             .values({name: as_value(value) for name, value in values.items()}))
                with database_errors(self.name, self.where), self.engine.begin() as conn:
                    if conn.execute(statement).rowcount:
                        written.append(f"{self.config.table}: {', '.join(values)}")
                    else:
                        log.warning("%s: reply for %s: the row is no longer in %s", self.name, bundle, self.where)
        else:
            seq = self._insert_outcome(key, {"route": route, "state": state, "identifier": identifier,
                                             "error": error, "code": code})
            written.append(f"{self.config.outcome.table}: seq {seq}")
        if self.config.replies_dir is not None:
            written += write_local_reply(self.name, self.config.replies_dir, bundle, code, payload, summary,
                                         attachments)
        return written

    # -- time and watermark -------------------------------------------------------------------
    def _now(self) -> Any:
        now = datetime.now(UTC)
        return now.isoformat() if self.url.get_backend_name() == "sqlite" else now

    @property
    def _mark_column(self) -> str:
        assert self.config.select.watermark is not None
        return self.config.select.watermark.column


def _identifier(summary: dict[str, Any]) -> str | None:
    message = summary.get("message")
    message = message if isinstance(message, dict) else {}
    for value in (message.get("decp_id"), message.get("id_acte"), summary.get("id_acte"), message.get("id")):
        if value not in (None, ""):
            return str(value)
    return None


Connector = DatabaseInbound
