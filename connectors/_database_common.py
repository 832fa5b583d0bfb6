"""What a database source needs besides its model: the engine, its errors, keys in names, rows as JSON.

* :func:`open_engine`: an SQLAlchemy engine for the vendor's database, the password put in from
  its :class:`~bus.secrets.Secret`, with timeouts; on SQLite the file must exist (a typo must not
  create an empty database), write transactions take the lock at once (``BEGIN IMMEDIATE``, no
  lock upgrade to deadlock on) and reads stay deferred, and the journal mode is left as the
  vendor set it.
* :func:`database_errors`: SQLAlchemy's exceptions as Hent's (transient, or transient with an
  alert when a person must act: a password, a privilege, a table or column that does not exist).
* :func:`encode_key` / :func:`decode_key`: a row's key (integers and texts) as a file-name-safe
  text and back, types kept: ``42``, ``DEL-2024-001``, ``%3007`` (the text "007"), ``12,A%2CB``.
* :func:`row_json`: a row as a JSON object (dates ISO 8601, decimals as strings); binary
  columns are refused.
* :func:`relative_file`, :func:`inside`: a file name a row gives, checked to stay under the files folder.
* :class:`Watermark`: the highest watermark claimed, remembered in a local file (a hint that
  narrows the query: losing it only makes one query read more).
"""

from __future__ import annotations

__all__ = [
    "KeyValue", "READ", "Watermark", "open_engine", "database_errors", "encode_key", "decode_key", "row_json",
    "relative_file", "as_value", "sql_table", "file_names", "inside",
]

import json
import math
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import column, create_engine, event, literal, table
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import TableClause
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import NullType

from bus.errors import ConfigError, TransientAlert, TransientError
from bus.secrets import Secret, redact

#: a key column's value: what the name of a row's bundle can carry and give back
KeyValue = int | str
#: execution option of a connection that only reads (SQLite: a deferred BEGIN)
READ = "hent_read_only"

_INTEGER = re.compile(r"-?[0-9]+")
#: what a failure says when a person must act rather than wait
_ALERTS = ("password", "authentication", "permission denied", "privilege", "no such table", "no such column",
           "does not exist", "undefined", "readonly database", "read-only", "unable to open database")


def open_engine(connector: str, url: URL, password: Secret | None, *, connect_timeout: float,
                timeout: float) -> Engine:
    """An engine for the vendor's database (nothing is connected yet)."""
    if password is not None:
        url = url.set(password=password.reveal())
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = Path(url.database or "")
        if not database.is_file():
            raise TransientAlert(
                f"connector {connector!r}: the SQLite database {database} does not exist: check url "
                "(Hent never creates the vendor's database)", connector=connector, path=str(database),
                rule="database-file")
        connect_args["timeout"] = timeout  # how long to wait for the vendor's writers
        # opened read-write, never created: a file deleted later is an error, not a new empty database
        url = url.set(database=f"file:{quote(str(database), safe='/')}").update_query_dict(
            {"mode": "rw", "uri": "true"})
    elif backend == "postgresql":
        connect_args["connect_timeout"] = max(1, round(connect_timeout))
        connect_args["options"] = f"-c statement_timeout={round(timeout * 1000)}"
    try:
        engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (ImportError, SQLAlchemyError) as exc:
        raise ConfigError(f"connector {connector!r}: cannot use {url.render_as_string(hide_password=True)}: "
                          f"{redact(str(exc))}", connector=connector, rule="database-url") from exc
    if backend == "sqlite":
        _sqlite_transactions(engine)
    return engine


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # BEGIN is emitted below, not by the driver

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ) else "BEGIN IMMEDIATE")


@contextmanager
def database_errors(connector: str, where: str) -> Iterator[None]:
    """Translate SQLAlchemy's exceptions: ``where`` (a URL with no password, a table) says on what."""
    try:
        yield
    except DBAPIError as exc:
        first = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines()
        reason = redact(first[0] if first else type(exc).__name__)
        alert = isinstance(exc, IntegrityError) or any(word in reason.lower() for word in _ALERTS)
        kind = TransientAlert if alert else TransientError
        hint = "a person must act: fix the configuration or the database's grants" if alert else "retried later"
        raise kind(f"connector {connector!r}: database {where}: {reason} ({hint})", connector=connector,
                   path=where, rule="database") from exc
    except SQLAlchemyError as exc:
        raise TransientError(f"connector {connector!r}: database {where}: {redact(str(exc))} (retried later)",
                             connector=connector, path=where, rule="database") from exc


def as_value(value: Any) -> BindParameter[Any]:
    """``value`` bound as it is: the driver adapts it, the database casts it to the column's type
    (no cast written in the SQL, which would refuse a text compared with a timestamp)."""
    return literal(value, NullType())


# -- keys in names ---------------------------------------------------------------------------


def encode_key(values: tuple[KeyValue, ...]) -> str:
    """The key as a text safe in a file name; :func:`decode_key` gives back the same values."""
    parts = []
    for value in values:
        if isinstance(value, int):
            parts.append(str(value))
        else:
            text = quote(value, safe="")
            if _INTEGER.fullmatch(value):  # a text of digits must not read as an integer
                text = f"%{ord(value[0]):02X}{text[1:]}"
            parts.append(text)
    return ",".join(parts)


def decode_key(text: str) -> tuple[KeyValue, ...]:
    return tuple(int(part) if _INTEGER.fullmatch(part) else unquote(part) for part in text.split(","))


# -- rows as JSON ----------------------------------------------------------------------------


def row_json(connector: str, row: Mapping[str, Any], json_columns: frozenset[str]) -> tuple[bytes, str | None]:
    """The row as a JSON object, and the problem of this row if one of its JSON columns cannot be
    read (the row fails, the others go on).  A column of a type JSON cannot carry (binary) is the
    query's fault: :class:`ConfigError`, before anything is claimed."""
    document: dict[str, Any] = {}
    problem = None
    for name, value in row.items():
        if name in json_columns and isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... (tests/hostile)
                problem = problem or f"column {name!r} does not hold JSON ({exc}): fix the row, then make it ready"
                continue
        document[name] = _jsonable(connector, name, value)
    return json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8"), problem


def _jsonable(connector: str, column: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(connector, column, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(connector, column, v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        message = (f"connector {connector!r}: column {column!r} holds binary data: Hent reads a row's files "
                   "from files_dir, not from the database; leave the column out of query")
    else:
        message = (f"connector {connector!r}: column {column!r} holds a {type(value).__name__}, which JSON cannot "
                   "carry; cast it to text in query")
    raise ConfigError(message, connector=connector, field="query", rule="database-column-type")


# -- files a row names -----------------------------------------------------------------------


def relative_file(value: str) -> str | None:
    """``value`` as a path relative to the files folder (``/`` separated), or None when it is
    absolute, climbs out (``..``) or is empty."""
    if not value or "\0" in value or value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", value):
        return None
    parts = [part for part in re.split(r"[\\/]", value) if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def file_names(value: Any) -> list[Any]:
    """A ``files`` column's value as a list: nothing, one name, or a list of them."""
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def inside(folder: Path, relative: str) -> Path | None:
    """``folder/relative`` unless a symbolic link leads it out of ``folder``."""
    path = folder / relative
    try:
        if not path.resolve().is_relative_to(folder.resolve()):
            return None
    except OSError:
        return None
    return path


def sql_table(name: str, columns: list[str]) -> TableClause:
    """``name`` (``schema.table`` allowed) with the ``columns`` the statements name."""
    schema, _, bare = name.rpartition(".")
    return table(bare, *map(column, dict.fromkeys(columns)), schema=schema or None)


# -- the watermark ---------------------------------------------------------------------------


class Watermark:
    """The highest watermark claimed so far, never below ``start``, kept in ``path`` with its type."""

    def __init__(self, path: Path, column: str, start: Any) -> None:
        self.path, self.column, self.start = path, column, start

    def value(self) -> Any:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return self.start
        if not isinstance(saved, dict) or saved.get("column") != self.column or saved.get("start") != _tagged(
                self.start):
            return self.start  # the configuration changed: from start again
        return _untagged(saved.get("value"))

    def advance(self, value: Any) -> None:
        """Remember ``value`` if higher (a row just claimed).  No fsync: a hint only."""
        if value is None:
            return
        current = self.value()
        try:
            higher = current is None or value > current
        except TypeError:  # start written as a text, the column a timestamp: the column's own type from now on
            higher = True
        if higher:
            data = json.dumps({"column": self.column, "start": _tagged(self.start), "value": _tagged(value)})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            temporary.write_text(data)
            os.replace(temporary, self.path)


def _tagged(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    return value


def _untagged(value: Any) -> Any:
    if isinstance(value, dict):
        if "datetime" in value:
            return datetime.fromisoformat(value["datetime"])
        if "date" in value:
            return date.fromisoformat(value["date"])
        if "decimal" in value:
            return Decimal(value["decimal"])
    return value
