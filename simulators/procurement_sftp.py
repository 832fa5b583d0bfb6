"""The procurement platform behind two folders — "the desk" — as platforms offer it over SFTP.

The desk makes :class:`~simulators.procurement_platform.ProcurementPlatform` reachable through
files.  It only touches the local filesystem under ``root``; an SFTP server (OpenSSH's sshd, or
:mod:`simulators.sftp_server`) serves that folder to the bus.

Read, from ``root/inbox``: every regular file that is not hidden and not a ``.part`` (a client
uploads ``<name>.part`` and renames it, so a file under its final name is complete).  Each is
submitted under its own name (never refused for its name alone), then moved to ``inbox/processed/``:
never deleted, never taken twice (a name already there gets ``.<k>`` before its extension).
Every file gets an answer, a duplicate included (a Rejection with rule ``duplicate`` naming
the existing publication).  A file that makes the desk itself fail goes to ``inbox/refused/``
with ``<name>.error.txt`` beside it, and the desk goes on.

Written, into ``root/outbox``, as ``.<name>.tmp`` then renamed (an SFTP client never sees a
partial answer): ``<file>.receipt.xml`` once the contract is published (``publish_delay``
seconds after it was taken), ``<file>.rejection.xml`` for a refused file at the same delay.
While an answer of that name is still in outbox, the next is ``<file>.receipt.<k>.xml``
(k = 2, 3...); the ``FileName`` inside always names the file received.

Run it with ``python -m simulators.procurement --desk DIR``, or in a test::

    with ProcurementDesk(tmp_path, ProcurementPlatform()) as desk:
        (desk.inbox_dir / "decp-TEST2022-0.xml").write_bytes(decp)
"""

from __future__ import annotations

__all__ = ["ProcurementDesk"]

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from simulators.procurement_platform import ProcurementPlatform, Submission

log = logging.getLogger("simulators.procurement")


def _free_name(folder: Path, stem: str, extension: str) -> str:
    """``<stem><extension>``, or ``<stem>.<k><extension>`` (k = 2, 3...) when ``folder`` holds it."""
    candidates = itertools.chain([stem + extension], (f"{stem}.{k}{extension}" for k in itertools.count(2)))
    return next(c for c in candidates if not (folder / c).exists() and not (folder / f".{c}.tmp").exists())


def _split(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if stem else (name, "")


class ProcurementDesk:
    """The platform behind ``root/inbox`` and ``root/outbox`` (see the module's docstring)."""

    def __init__(self, root: Path | str, platform: ProcurementPlatform | None = None, *, inbox: str = "inbox",
                 outbox: str = "outbox", interval: float = 0.2) -> None:
        self.root = Path(root)
        self.platform = platform or ProcurementPlatform()
        self.inbox_dir = self.root / inbox
        self.outbox_dir = self.root / outbox
        self.processed_dir = self.inbox_dir / "processed"
        self.refused_dir = self.inbox_dir / "refused"
        for folder in (self.outbox_dir, self.processed_dir, self.refused_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: list[Submission] = []  #: decided, answer not written yet
        self._handled: list[str] = []
        self._refused: list[str] = []
        self._answers: list[str] = []

    # -- life ---------------------------------------------------------------------------

    def start(self) -> ProcurementDesk:
        """Process the inbox every ``interval`` seconds in a daemon thread."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"procurement-desk-{self.root.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current round (waits 10 s at most)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ProcurementDesk:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.process_once()
            except Exception:  # the desk goes on; a file that failed is tried again next round
                log.exception("procurement desk: a round over %s failed", self.inbox_dir)
            self._stopping.wait(self.interval)

    # -- a round ------------------------------------------------------------------------

    def process_once(self) -> int:
        """Take every complete file in inbox, oldest first, then write the answers now due;
        how many files were taken."""
        with self._lock:
            ready = []
            for path in self.inbox_dir.iterdir():
                try:
                    if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".part"):
                        ready.append((path.stat().st_mtime, path.name))
                except FileNotFoundError:  # taken away meanwhile
                    continue
            for _, name in sorted(ready):
                self._take(name)
            self._write_due()
            return len(ready)

    def _take(self, name: str) -> None:
        path = self.inbox_dir / name
        self._handled.append(name)
        try:
            # each file its own client key: over SFTP only the contract makes a duplicate, not the name
            client_key = f"sftp:{len(self._handled)}:{name}"
            submission = self.platform.submit(name, path.read_bytes(), client_key, duplicates="reject")
        except Exception as exc:
            log.exception("procurement desk: %s could not be handled", name)
            target = _free_name(self.refused_dir, *_split(name))
            os.replace(path, self.refused_dir / target)
            (self.refused_dir / f"{target}.error.txt").write_text(f"{name}: {type(exc).__name__}: {exc}\n",
                                                                  encoding="utf-8")
            self._refused.append(name)
            return
        log.info("procurement desk: %s → %s (%s)", name, submission.outcome, submission.detail)
        self._pending.append(submission)
        os.replace(path, self.processed_dir / _free_name(self.processed_dir, *_split(name)))

    def _write_due(self) -> None:
        now = time.monotonic()
        due = [s for s in self._pending if s.due <= now]
        self._pending = [s for s in self._pending if s.due > now]
        for submission in due:
            stem = submission.document_name.removesuffix(".xml")
            name = _free_name(self.outbox_dir, stem, ".xml")
            temporary = self.outbox_dir / f".{name}.tmp"
            temporary.write_bytes(submission.document)
            os.replace(temporary, self.outbox_dir / name)
            self._answers.append(name)

    def received(self) -> dict[str, Any]:
        """``platform.counts()`` and the file names ``handled`` (all, in order), ``refused``
        (moved to inbox/refused/) and ``answers`` (written to outbox, in order)."""
        with self._lock:
            mine = {"handled": list(self._handled), "refused": list(self._refused), "answers": list(self._answers)}
        return {**self.platform.counts(), **mine}
