"""The embedded broker: a kombu virtual transport on one SQLite file, for ``sqla+sqlite:///path``.

kombu's own SQLAlchemy transport goes through the ORM for every message (a query for the
queue's row, a flush, a commit of a rollback journal) and never deletes what it delivered;
measured end to end, a quarter of the bus's CPU time went there (bench/README.md).  This
transport keeps the same contract with plain ``sqlite3``: one table, a message is an
``INSERT``, a delivery takes the oldest row of its queue and deletes it in one ``DELETE ...
RETURNING`` (one consumer gets it, across threads and processes), the writers queued on a
:class:`~bus.writer_lock.WriterLock` beside the file (SQLite's busy handler would make them sleep
up to 100 ms between tries), the file in WAL mode with ``synchronous=NORMAL`` (a commit writes
the log, it does not wait for the disk; a power loss may lose the last messages, never corrupt
the file).

What a message carries is an id (the claim check); the ledger is the truth and its sweeper
publishes again whatever it says is unfinished, so a message lost with a killed process or a
power loss costs a delay, never a document (as with kombu's transport, whose unacked messages
are gone once fetched).  Tables of kombu's transport found in an older ``broker.db`` are left
alone.
"""

from __future__ import annotations

__all__ = ["SqliteTransport", "sqlite_path"]

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import virtual
from kombu.utils.json import dumps, loads
from sqlalchemy.engine import make_url

from bus.writer_lock import WriterLock

BUSY_TIMEOUT = 30.0  #: seconds a connection waits for another's write (threads and processes)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hent_messages ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, payload TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS hent_messages_queue ON hent_messages (queue, id)",
)
_TAKE = ("DELETE FROM hent_messages WHERE id = "
         "(SELECT id FROM hent_messages WHERE queue = ? ORDER BY id LIMIT 1) RETURNING payload")
_WRITERS: dict[str, WriterLock] = {}  #: one per broker file: the channels of a process share it
_WRITERS_LOCK = threading.Lock()


def _writer(path: Path) -> WriterLock:
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(str(path), WriterLock(f"{path}-writer.lock", timeout=BUSY_TIMEOUT))


def sqlite_path(url: str) -> str | None:
    """The file of an embedded broker URL (``sqla+sqlite:///path``), else None."""
    if not url.startswith("sqla+sqlite:"):
        return None
    database = make_url(url.removeprefix("sqla+")).database
    return database if database not in (None, "", ":memory:") else None


class Channel(virtual.Channel):
    """One SQLite connection per channel (kombu gives each thread its own connection)."""

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        path = Path(connection.client.transport_options["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit: each statement is its own transaction unless BEGIN says otherwise
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # a channel may be used by its connection's heartbeat thread too
        self._writer = _writer(path)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """This thread's turn to write the file (a statement is its own transaction)."""
        try:
            with self._writer:
                yield
        except TimeoutError as exc:  # what kombu knows of a broker it cannot use now
            raise sqlite3.OperationalError(f"broker busy: {exc}") from exc

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        with self._lock, self._writing():
            self._db.execute("INSERT INTO hent_messages (queue, payload) VALUES (?, ?)", (queue, dumps(message)))

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            if self._db.execute("SELECT 1 FROM hent_messages WHERE queue = ? LIMIT 1", (queue,)).fetchone() is None:
                raise Empty()  # the common case when idle: a read, no write lock taken
            with self._writing():
                rows = self._db.execute(_TAKE, (queue,)).fetchall()  # all fetched: the statement ends
        if not rows:  # another consumer took it between the two statements
            raise Empty()
        return loads(rows[0][0])

    def _size(self, queue: str) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM hent_messages WHERE queue = ?", (queue,)).fetchone()[0])

    def _purge(self, queue: str) -> int:
        with self._lock, self._writing():
            return self._db.execute("DELETE FROM hent_messages WHERE queue = ?", (queue,)).rowcount

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self._purge(queue)

    def close(self) -> None:
        try:
            super().close()
        finally:
            with self._lock:
                self._db.close()


class SqliteTransport(virtual.Transport):
    """kombu transport for the embedded broker; the file is ``transport_options["path"]``."""

    Channel = Channel
    default_port = None  # a file, no port
    driver_type = "sqlite"
    driver_name = "sqlite3"
    connection_errors = (sqlite3.OperationalError,)
    channel_errors = (sqlite3.OperationalError,)

    def driver_version(self) -> str:
        return sqlite3.sqlite_version
