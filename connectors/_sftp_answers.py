"""An SFTP endpoint's answer folder: where the platform leaves ARActe, anomalies, letters, receipts.

The runtime (``bus/answers.py``) lists it, fetches each file, has it read and matched, records
the outcome and returns it to the source, and only then settles the file here: deleted, or
moved to ``done/``; a file that matched nothing, or could not be opened, is moved to
``error/`` beside ``<name>.error.txt`` saying why.  Nothing is ever overwritten: a name taken
in done/ or error/ gets a ``.1``, ``.2``... suffix.

A file is ready under the readiness rules of a pick-up folder (``ready``: minimum age and
sizes unchanged between two polls, or a done-file).  Messages are ``.xml`` files or
``.tar.gz`` packages; a file whose name starts with a message's stem followed by ``_`` or
``.`` (``…-2-1_12.xml`` → ``…-2-1_12_1.pdf``) goes with that message, and a file that goes
with no message is taken alone once it is older than ``orphan_after`` (and set aside, since
it matches nothing).  A listed name that is no plain file name (:mod:`bus.names`) is left
alone.
"""

from __future__ import annotations

__all__ = ["AnswerFolderOptions", "SftpAnswerFolder"]

import io
import stat
import time
from fnmatch import fnmatchcase
from typing import Literal

import paramiko
from pydantic import BaseModel, ConfigDict, Field

from bus.config import Duration
from bus.connector import InboxItem
from bus.errors import DocumentError
from bus.names import is_safe_name
from connectors._folder_common import free_name
from connectors._pickup_options import ReadyConfig
from connectors._sftp_common import SessionHolder, makedirs, remote_join

_MESSAGE_SUFFIXES = (".xml", ".tar.gz", ".tgz")


class AnswerFolderOptions(BaseModel):
    """``answers:`` of an SFTP endpoint: the remote folder its platform answers in."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., min_length=1, description="Remote folder the platform writes its answers into.")
    pattern: str = Field("*", description="Glob of the answer files to read.")
    ready: ReadyConfig = Field(default_factory=ReadyConfig, description="When an answer file may be read.")
    on_success: Literal["move", "delete"] = Field("move", description="Move read answers to done_dir, or delete them.")
    done_dir: str | None = Field(None, description="Remote folder for answers read (default <path>/done).")
    error_dir: str | None = Field(None, description="Remote folder for answers set aside (default <path>/error).")
    max_size: int = Field(64 << 20, gt=0, description="Largest answer file read, in bytes (with its attachments).")
    orphan_after: Duration = Field(3600.0, gt=0, description="Seconds after which a file that goes with no "
                                   "message is taken alone (and set aside).")


def _is_message(name: str) -> bool:
    return name.lower().endswith(_MESSAGE_SUFFIXES)


def _stem(name: str) -> str:
    lower = name.lower()
    for suffix in _MESSAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


class SftpAnswerFolder:
    """Implements the folder side of :class:`bus.connector.InboxEndpoint` for an SFTP endpoint."""

    def __init__(self, connector: str, options: AnswerFolderOptions, session: SessionHolder) -> None:
        self.connector = connector
        self.options = options
        self.session = session
        self.done_dir = options.done_dir or remote_join(options.path, "done")
        self.error_dir = options.error_dir or remote_join(options.path, "error")
        self._last_seen: dict[str, tuple[int, int]] = {}
        self._dirs_ready = False

    def inbox(self) -> list[InboxItem]:
        options, ready = self.options, self.options.ready
        now = time.time()
        seen: dict[str, tuple[int, int]] = {}
        with self.session.using(options.path) as sftp:
            if not self._dirs_ready:
                for folder in (self.done_dir, self.error_dir):
                    makedirs(sftp, folder)
                self._dirs_ready = True
            entries = {e.filename: e for e in sftp.listdir_attr(options.path) if stat.S_ISREG(e.st_mode or 0)}
        names = sorted(n for n in entries if not n.startswith(".") and fnmatchcase(n, options.pattern)
                       and is_safe_name(n)  # a name with a folder, a control character...: never fetched
                       and not (ready.done_file and n.endswith(ready.done_file)))
        messages = [n for n in names if _is_message(n)]
        belongs = {n: m for n in names if n not in messages
                   for m in messages if n.startswith((f"{_stem(m)}_", f"{_stem(m)}."))}
        items = []
        for name in names:
            if name in belongs:
                continue
            attachments = tuple(n for n, m in belongs.items() if m == name)
            group = [entries[n] for n in (name, *attachments)]
            signatures = {a.filename: (a.st_size or 0, a.st_mtime or 0) for a in group}
            seen.update(signatures)
            if not _is_message(name) and now - (entries[name].st_mtime or 0) < options.orphan_after:
                continue
            if ready.done_file:
                if f"{name}{ready.done_file}" not in entries:
                    continue
            elif any(now - mtime < ready.min_age for _, mtime in signatures.values()) or (
                ready.stable and any(self._last_seen.get(n) != s for n, s in signatures.items())
            ):
                continue
            items.append(InboxItem(name, sum(s for s, _ in signatures.values()),
                                   remote_join(options.path, name), attachments))
        self._last_seen = seen
        return sorted(items, key=lambda item: (entries[item.name].st_mtime or 0, item.name))

    def fetch(self, item: InboxItem) -> tuple[bytes, dict[str, bytes]]:
        if item.size > self.options.max_size:
            raise DocumentError(
                f"connector {self.connector!r}: answer {item.name} and its attachments weigh {item.size} bytes, "
                f"more than answers.max_size ({self.options.max_size})",
                connector=self.connector, path=item.ref, field="answers.max_size", rule="answer-size",
            )
        with self.session.using(item.ref) as sftp:
            data = self._read(sftp, item.ref)
            attachments = {n: self._read(sftp, remote_join(self.options.path, n)) for n in item.attachments}
        return data, attachments

    def _read(self, sftp: paramiko.SFTPClient, path: str) -> bytes:
        out = io.BytesIO()
        with sftp.open(path, "rb") as handle:
            handle.prefetch()
            while chunk := handle.read(1 << 16):
                out.write(chunk)
                if out.tell() > self.options.max_size:
                    raise DocumentError(
                        f"connector {self.connector!r}: answer {path} grew past answers.max_size "
                        f"({self.options.max_size}) while read", connector=self.connector, path=path,
                        field="answers.max_size", rule="answer-size",
                    )
        return out.getvalue()

    def settle(self, item: InboxItem, problem: str | None) -> None:
        names = (item.name, *item.attachments)
        folder = self.options.path
        with self.session.using(item.ref) as sftp:
            if problem is None and self.options.on_success == "delete":
                for name in names:
                    sftp.remove(remote_join(folder, name))
                self._remove_done_file(sftp, item)
                return
            target = self.done_dir if problem is None else self.error_dir
            taken = set(sftp.listdir(target))
            moved = item.name
            for name in names:
                final = free_name(name, taken)
                moved = final if name == item.name else moved
                sftp.rename(remote_join(folder, name), remote_join(target, final))
            if problem is not None:
                note = f"{item.name} was set aside by Hent ({self.connector}):\n{problem}\n"
                with sftp.open(remote_join(target, free_name(f"{moved}.error.txt", taken)), "wb") as out:
                    out.write(note.encode("utf-8"))
            self._remove_done_file(sftp, item)

    def _remove_done_file(self, sftp: paramiko.SFTPClient, item: InboxItem) -> None:
        if self.options.ready.done_file:
            try:
                sftp.remove(f"{item.ref}{self.options.ready.done_file}")
            except FileNotFoundError:
                pass
