"""Size limits of every source: one file, one bundle, its number of files, the room left to take it in.

A source checks what it is told of a bundle's files before it copies a byte (a local ``stat``,
an SFTP listing, a database row's files), then counts the bytes as it copies them: a file that
grows, or whose size lied, is cut off at the limit and its partial copy removed.  A bundle over
a limit is a :class:`~bus.errors.DocumentError` naming the file, the option
(``limits.max_file_bytes``, ``limits.max_document_bytes``, ``limits.max_files``) and the rule
(``file-too-large``, ``document-too-large``, ``too-many-files``): the source rolls it back as it
does any bad bundle (its files kept in ``error/``, the error said back).  Too little room to
take a bundle in is not the bundle's fault: a :class:`~bus.errors.TransientError` (``spool-full``)
raised before anything moves, the bundle left where it is for a later poll.

::

    limits:
      max_file_bytes: 1073741824        # 1 GiB: one file of a bundle
      max_document_bytes: 2147483648    # 2 GiB: a bundle's files together
      max_files: 1000
      min_free_bytes: 1073741824        # what a bundle taken in must leave free
"""

from __future__ import annotations

__all__ = [
    "SourceLimits", "Budget", "CountedReader", "count_refusal", "refuse", "refusal_note", "refusal_summary",
    "room_for", "room_folders",
]

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from bus import metrics
from bus.connector import Claimed, InboundConnector
from bus.errors import DocumentError, HentError, TransientError

log = logging.getLogger(__name__)

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


class SourceLimits(BaseModel):
    """How large a bundle a source takes, and how much room it leaves where it copies it."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(GIB, gt=0, description="Largest file of a bundle, in bytes (1 GiB).")
    max_document_bytes: int = Field(2 * GIB, gt=0, description="Largest bundle, its files together, in bytes (2 GiB).")
    max_files: int = Field(1000, gt=0, description="Most files in one bundle, its sidecar included.")
    min_free_bytes: int = Field(
        GIB,
        ge=0,
        description="Bytes that must stay free on the spool's (and the source's work folder's) file "
        "system once a bundle is taken in; else the bundle waits at the source.",
    )


def _bytes(size: int) -> str:
    """``1073741824 bytes (1 GiB)``: the count, and a rounder figure a person reads at a glance."""
    for unit, name in ((GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size >= unit:
            figure = f"{size / unit:.1f}".removesuffix(".0")
            return f"{size} bytes ({figure} {name})"
    return f"{size} byte{'s' if size != 1 else ''}"


class Budget:
    """What one bundle may still take: each file and the bundle counted against ``limits``.

    ``declare`` a file's announced size before copying it, then ``count`` the bytes as they are
    read (``count`` raises as soon as a file or the bundle goes past a limit, so no more is read).
    """

    def __init__(self, limits: SourceLimits, connector: str, bundle: str) -> None:
        self.limits = limits
        self.connector = connector
        self.bundle = bundle
        self.files = 0
        self.total = 0  #: bytes counted (or declared) so far, every file of the bundle
        self._file = ""
        self._file_bytes = 0

    def declare(self, sizes: dict[str, int]) -> None:
        """Check the announced sizes of the bundle's files (by name) against every limit."""
        if len(sizes) > self.limits.max_files:
            raise self._refused(
                next(reversed(sizes)),
                "limits.max_files",
                "too-many-files",
                f"bundle {self.bundle} has {len(sizes)} files, more than limits.max_files "
                f"({self.limits.max_files}): send fewer files per bundle, or raise the limit",
            )
        total = 0
        for name, size in sizes.items():
            self._check_file(name, size)
            total += max(size, 0)
            self._check_total(name, total)

    def start(self, name: str) -> None:
        """A file is about to be copied."""
        self.files += 1
        self._file, self._file_bytes = name, 0
        if self.files > self.limits.max_files:
            raise self._refused(
                name,
                "limits.max_files",
                "too-many-files",
                f"bundle {self.bundle} has more than limits.max_files ({self.limits.max_files}) files: send fewer "
                "files per bundle, or raise the limit",
            )

    def count(self, size: int) -> None:
        """``size`` more bytes of the current file were read; raises past a limit."""
        self._file_bytes += size
        self.total += size
        self._check_file(self._file, self._file_bytes, read=True)
        self._check_total(self._file, self.total, read=True)

    def _check_file(self, name: str, size: int, *, read: bool = False) -> None:
        if size > self.limits.max_file_bytes:
            what = f"the sidecar {name}" if name == self.bundle else f"{name} of bundle {self.bundle}"
            said = (
                f"{what} grew past limits.max_file_bytes ({_bytes(self.limits.max_file_bytes)}) while it was read"
                if read
                else f"{what} is {_bytes(size)}, more than limits.max_file_bytes ({_bytes(self.limits.max_file_bytes)})"
            )
            raise self._refused(
                name, "limits.max_file_bytes", "file-too-large", f"{said}: split or compress it, or raise the limit"
            )

    def _check_total(self, name: str, total: int, *, read: bool = False) -> None:
        if total > self.limits.max_document_bytes:
            said = (
                f"the files of bundle {self.bundle} grew past limits.max_document_bytes "
                f"({_bytes(self.limits.max_document_bytes)}) while {name} was read"
                if read
                else f"the files of bundle {self.bundle} weigh {_bytes(total)} up to {name}, more than "
                f"limits.max_document_bytes ({_bytes(self.limits.max_document_bytes)})"
            )
            raise self._refused(
                name,
                "limits.max_document_bytes",
                "document-too-large",
                f"{said}: send fewer or smaller files, or raise the limit",
            )

    def _refused(self, name: str, field: str, rule: str, message: str) -> DocumentError:
        return DocumentError(
            f"connector {self.connector!r}: {message}", connector=self.connector, path=name, field=field, rule=rule
        )


def room_folders(context: Any, *own: Path | None) -> list[Path]:
    """Where a bundle taken in is written: the source's own work folders (``own``) and the spool's,
    when the runtime lends it to the source (``context.spool``: a folder or a ``Spool``)."""
    spool = getattr(context, "spool", None)
    if spool is not None and not isinstance(spool, str | os.PathLike):
        spool = spool.root  # a Spool
    return [Path(folder) for folder in (*own, spool) if folder is not None]


def room_for(limits: SourceLimits, connector: str, bundle: str, size: int, folders: Iterable[Path]) -> None:
    """TransientError (``spool-full``) when writing ``size`` more bytes into one of ``folders`` would
    leave its file system less than ``limits.min_free_bytes`` free; checked before anything moves."""
    seen: set[int] = set()
    for folder in folders:
        existing = folder
        while not existing.exists() and existing.parent != existing:  # a work folder not made yet
            existing = existing.parent
        try:
            device = existing.stat().st_dev
            if device in seen:
                continue
            seen.add(device)
            free = shutil.disk_usage(existing).free
        except OSError:
            continue  # unreadable: the copy itself will say what is wrong
        if free - size < limits.min_free_bytes:
            raise TransientError(
                f"connector {connector!r}: the spool is full for bundle {bundle}: taking its {_bytes(size)} in "
                f"would leave {_bytes(max(free - size, 0))} free on the file system of {folder}, less than "
                f"limits.min_free_bytes ({_bytes(limits.min_free_bytes)}); free space there (or lower the limit): "
                "the bundle waits at the source, taken at a later poll",
                connector=connector,
                path=str(folder),
                field="limits.min_free_bytes",
                rule="spool-full",
            )


def refusal_note(connector: str, bundle: str, error: DocumentError) -> str:
    """What ``<sidecar>.error.txt`` says of a bundle refused before it was taken in."""
    return (
        f"Hent could not take {bundle} in (from {connector}).\n{error}\n"
        "Fix what is named above, then drop the corrected bundle again.\n"
    )


def refusal_summary(connector: str, bundle: str, error: DocumentError) -> dict[str, Any]:
    """The reply's summary for a bundle refused before it was taken in (no document was recorded)."""
    return {
        "document": None,
        "bundle": bundle,
        "source": connector,
        "state": "FAILED",
        "document_state": "REFUSED",
        "at": datetime.now(UTC).isoformat(),
        "reason": str(error),
        "problems": [str(error)],
        "file": error.path,
        "field": error.field,
        "rule": error.rule,
    }


class CountedReader:
    """A file whose reads are told to ``count`` (a :meth:`Budget.count`) before they are returned:
    what it raises stops the copy."""

    def __init__(self, file: BinaryIO, count: Callable[[int], None]) -> None:
        self._file, self._count = file, count

    def read(self, size: int = -1, /) -> bytes:
        data = self._file.read(size)
        self._count(len(data))
        return data

    def close(self) -> None:
        self._file.close()


def count_refusal(connector: str, error: DocumentError) -> None:
    """Count a bundle refused over a limit (``hent_bundles_refused_total``): it never reaches the
    ledger, so neither its documents' counters nor the dead letters see it."""
    metrics.BUNDLES_REFUSED.labels(connector=connector, rule=error.rule or "limit").inc()


def refuse(source: InboundConnector, claimed: Claimed, error: DocumentError) -> None:
    """Roll a bundle back before it is taken in, as the runtime rolls back a failed document: a reply
    saying why, then the source's ``rollback`` (its files kept in ``error/`` beside a note)."""
    log.error("%s: %s refused: %s", source.name, claimed.key, error, extra={"connector": source.name})
    count_refusal(source.name, error)
    try:
        source.reply(claimed.key, None, None, refusal_summary(source.name, claimed.key, error))
    except HentError as exc:  # the note in error/ says it all the same
        log.error("%s: reply for %s failed: %s", source.name, claimed.key, exc, extra={"connector": source.name})
    source.rollback(claimed, refusal_note(source.name, claimed.key, error))
