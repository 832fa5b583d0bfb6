"""Crash points: named instants where a test makes the bus kill itself, so that every dangerous
instant is hit on purpose, not by luck.

``HENT_CRASH_AT=send.after-send`` makes the process SIGKILL itself the first time it reaches
that point; ``send.after-send:3`` the third time; several points are separated by commas
(``ingest.after-spool,reply.mid-write:2``).  The variable is read once, when this module is
imported; unset (in production), :func:`crash_point` is one dictionary lookup.

The kill is SIGKILL sent by the process to itself: no ``finally``, no ``atexit``, no flush,
like a power cut for the process (the kernel still holds what was written to files).  Before
it, one line goes to stderr naming the point.  Every point is listed in :data:`POINTS`, and
``tests/unit/test_crash.py`` checks that the code uses each of them and only them.
"""

from __future__ import annotations

__all__ = ["POINTS", "ENV", "armed", "crash_point", "halfway", "parse"]

import os
import signal
import threading
from collections.abc import Iterable, Iterator

ENV = "HENT_CRASH_AT"

#: every crash point, with the state the bus is left in when it dies there
POINTS: dict[str, str] = {
    "ingest.after-spool": "a claimed bundle's files are in the spool; the ledger has not recorded the document",
    "ingest.before-source-commit": "the document is RECEIVED in the ledger; the source's claim does not know it yet",
    "prepare.after-build": "the archive and the act are built in the spool; the ledger has not recorded ROUTED",
    "send.mid-upload": "half the archive is written: SFTP <name>.part, or the folder endpoint's temporary file",
    "send.after-send": "the endpoint has the archive; the ledger still says PENDING (the most dangerous instant)",
    "answer.after-ledger": "the ledger says ACKNOWLEDGED (or REJECTED); the reply file is not written",
    "reply.mid-write": "a reply's message and attachments are written, not its summary",
    "reply.after-write": "a final delivery's reply is written whole; the ledger still owes it (its debt not cleared)",
    "journal.mid-append": "inside a ledger transaction, the rows changed, the journal event not appended yet",
    "settle.before-commit": "the document is ROUTED; its bundle is still claimed, not moved to done/",
}


def parse(text: str | None) -> dict[str, int]:
    """``{point: nth}`` from the value of HENT_CRASH_AT; ValueError naming an unknown point."""
    armed: dict[str, int] = {}
    for item in (text or "").split(","):
        name, _, nth = item.strip().partition(":")
        if not name:
            continue
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown crash point {name!r}; the points are: {', '.join(POINTS)}")
        if nth and not (nth.isdigit() and int(nth) >= 1):
            raise ValueError(f"{ENV}: {item.strip()!r}: the count after ':' must be a whole number from 1")
        armed[name] = int(nth) if nth else 1
    return armed


_ARMED = parse(os.environ.get(ENV))
_reached: dict[str, int] = {}
_lock = threading.Lock()


def armed(name: str) -> bool:
    """Whether HENT_CRASH_AT names ``name`` in this process."""
    return name in _ARMED


def crash_point(name: str) -> None:
    """Kill this process with SIGKILL if HENT_CRASH_AT names ``name`` and this is its nth time."""
    nth = _ARMED.get(name)
    if nth is None:
        return
    with _lock:
        _reached[name] = count = _reached.get(name, 0) + 1
    if count != nth:
        return
    os.write(2, f"hent: crash point {name} reached (time {count}): SIGKILL ({ENV})\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)


def halfway(name: str | None, chunks: Iterable[bytes], size: int) -> Iterable[bytes]:
    """``chunks`` unchanged; when ``name`` is armed, cut where half of ``size`` bytes have gone
    through and reach the crash point there, once the consumer has taken the first half."""
    if name is None or name not in _ARMED:
        return chunks
    return _halfway(name, chunks, size)


def _halfway(name: str, chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    half, done = size // 2, 0
    for chunk in chunks:
        if done < half <= done + len(chunk):
            cut = half - done
            yield chunk[:cut]
            crash_point(name)
            if chunk[cut:]:
                yield chunk[cut:]
        else:
            yield chunk
        done += len(chunk)
