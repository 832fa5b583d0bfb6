"""One writer at a time on a SQLite database: the threads of a process and the processes of a machine.

SQLite lets one transaction write at a time; a writer that finds the database locked is put to
sleep by SQLite's busy handler, 1, 2, 5, 10, 15, 20, 25 ms and then up to 100 ms between tries, so
with several processes writing (``bus.processes``) a writer often sleeps long after the lock is
free. :class:`WriterLock` queues the writers before SQLite sees them: the threads of a process on a
``threading.Lock``, the processes on an ``flock`` of a file beside the database, tried again within
a few milliseconds. SQLite's own locking still guards the data; this only shortens the waits.  The
kernel drops an ``flock`` with its process, so a writer killed while holding it blocks nobody.
"""

from __future__ import annotations

__all__ = ["WriterLock"]

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

_FIRST_PAUSE = 0.0002  #: seconds between the first tries of a held flock
_LONGEST_PAUSE = 0.002  #: the pause doubles up to this


class WriterLock:
    """A context manager: ``with lock:`` holds the database's writer turn; ``TimeoutError`` after ``timeout`` s."""

    def __init__(self, path: Path | str, *, timeout: float) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def __repr__(self) -> str:
        return f"WriterLock({str(self.path)!r})"

    def _file(self) -> int:
        """The lock file's descriptor (opened read-only: flock needs no more), or -1 when it cannot
        be opened (another user's, a read-only folder): then SQLite's own locking is all there is."""
        if self._fd is None or self._pid != os.getpid():  # a forked child opens its own
            self._pid = os.getpid()
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.warning("%s: %s; writers of other processes are not queued here, SQLite's busy "
                            "handler makes them wait instead", self.path, exc.strerror or exc)
                self._fd = -1
        return self._fd

    def __enter__(self) -> WriterLock:
        deadline = time.monotonic() + self.timeout
        if not self._threads.acquire(timeout=self.timeout):
            raise TimeoutError(f"{self.path}: another thread of this process kept the writer turn {self.timeout:g} s")
        try:
            fd = self._file()
            pause = _FIRST_PAUSE
            while fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return self
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"{self.path}: another process kept the writer turn {self.timeout:g} s"
                        ) from None
                    time.sleep(pause)
                    pause = min(pause * 2, _LONGEST_PAUSE)
            return self
        except BaseException:
            self._threads.release()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._fd is not None and self._fd >= 0:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Close the lock file (the next ``with`` opens it again)."""
        if self._fd is not None and self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None
