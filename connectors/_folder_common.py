"""What both directions of the folder connector share: durable renames and writes."""

from __future__ import annotations

__all__ = [
    "fsync_dir", "fsync_dirs", "atomic_write", "move", "folder_errors", "exclusive_write", "owner_suffix", "abandoned",
    "remove_abandoned_temps", "plain_name", "plain_file_name", "free_name", "write_reply",
    "reply_file_writer", "write_local_reply",
]

import errno
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bus.crash import crash_point, halfway
from bus.errors import ConfigError, TransientError
from bus.names import is_safe_name, plain_file_name


def fsync_dir(path: Path) -> None:
    """Make a rename or a creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_HOST = socket.gethostname().replace(".", "_")


def owner_suffix() -> str:
    """``<host>.<pid>``: who made a temporary name, so that another run can tell it was abandoned."""
    return f"{_HOST}.{os.getpid()}"


def abandoned(name: str) -> bool:
    """True for a name ending in ``.<host>.<pid>[.tmp]`` of this host whose process is gone."""
    stem = name.removesuffix(".tmp")
    rest, _, pid = stem.rpartition(".")
    if not rest.endswith(f".{_HOST}") or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def remove_abandoned_temps(folder: Path) -> int:
    """Delete the temporary files that writers of this host, killed midway, left in ``folder``."""
    removed = 0
    for leftover in folder.glob(".*.tmp"):
        if abandoned(leftover.name):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write(target: Path, data: bytes | None = None, *, source: Path | None = None,
                 crash: str | None = None, count: Callable[[int], None] | None = None,
                 sync_dir: bool = True) -> None:
    """Write ``data`` (or copy ``source``) to ``target`` under a temporary name, fsync, rename;
    ``crash``: the crash point (:mod:`bus.crash`) reached halfway through a copy; ``count``: told the
    size of each chunk of ``source`` before it is written (what it raises stops the copy, nothing left);
    ``sync_dir=False``: the folder's entry is left to the caller's next :func:`fsync_dir` (the
    content is always fsynced: a file renamed into place is never found empty after a power loss)."""
    tmp = target.with_name(f".{target.name}.{threading.get_ident()}.{owner_suffix()}.tmp")
    try:
        with open(tmp, "wb") as out:
            if data is not None:
                out.write(data)
            elif source is not None:
                with open(source, "rb") as src:
                    for chunk in halfway(crash, iter(lambda: src.read(1 << 20), b""), os.fstat(src.fileno()).st_size):
                        if count is not None:
                            count(len(chunk))
                        out.write(chunk)
                        out.flush()
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if sync_dir:
        fsync_dir(target.parent)


def exclusive_write(target: Path, data: bytes, *, sync: bool = True, sync_dir: bool = True) -> bool:
    """Create ``target`` with ``data`` only if it does not exist; durable; False if it exists
    (``sync_dir``: as for :func:`atomic_write`; ``sync=False``: not even the content is fsynced,
    for a marker whose loss to a power cut costs nothing)."""
    tmp = target.with_name(f".{target.name}.{threading.get_ident()}.{owner_suffix()}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        if sync:
            os.fsync(out.fileno())
    try:
        os.link(tmp, target)  # fails if target exists: never overwrite
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    if sync_dir:
        fsync_dir(target.parent)
    return True


def move(src: Path, dst: Path, *, sync: bool = True) -> None:
    """Rename ``src`` to ``dst`` (same file system) and make both folders durable; ``sync=False``
    leaves that to one :func:`fsync_dirs` after several moves (a journaling file system keeps
    renames in order: a later one is never durable without the earlier ones)."""
    os.replace(src, dst)
    if sync:
        fsync_dirs(dst.parent, src.parent)


def fsync_dirs(*folders: Path) -> None:
    """:func:`fsync_dir` each distinct folder once."""
    for folder in dict.fromkeys(folders):
        fsync_dir(folder)


def reply_file_writer(folder: Path) -> Callable[[str, bytes], bool]:
    """``put_new`` of :func:`write_reply` for a local folder: each file's content fsynced, the
    folder once, with the summary (written last); the hidden claim of a number not at all (a
    reply cut short by a power cut is written again under another number)."""

    def put_new(name: str, data: bytes) -> bool:
        marker = name.startswith(".")
        return exclusive_write(folder / name, data, sync=not marker, sync_dir=name.endswith(".json"))

    return put_new


def write_local_reply(connector: str, folder: Path, bundle: str, code: str | None, payload: bytes | None,
                      summary: dict[str, Any], attachments: dict[str, bytes] | None) -> list[str]:
    """:func:`write_reply` into a local ``folder`` (made if missing): written once, a reply with an
    id found again by its summary or its claim; errors as :func:`folder_errors` says them."""
    with folder_errors(connector, folder):
        folder.mkdir(parents=True, exist_ok=True)
        return write_reply(
            bundle, code, payload, summary, attachments,
            exists=lambda name: os.path.lexists(folder / name),
            put_new=reply_file_writer(folder),
            remove=lambda name: (folder / name).unlink(missing_ok=True),
            read=lambda name: (folder / name).read_bytes(),
        )


@contextmanager
def folder_errors(connector: str, path: Path) -> Iterator[None]:
    """Translate OS errors: a missing or forbidden folder is configuration, the rest transient."""
    try:
        yield
    except PermissionError as exc:
        raise TransientError(
            f"connector {connector!r}: permission denied on {exc.filename or path}: "
            "give the bus's user read and write access",
            connector=connector,
            path=str(exc.filename or path),
        ) from exc
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise ConfigError(
                f"connector {connector!r}: {path} and its work folders must be on one file system",
                connector=connector,
                path=str(path),
            ) from exc
        raise TransientError(
            f"connector {connector!r}: {exc.strerror or exc} on {exc.filename or path}",
            connector=connector,
            path=str(exc.filename or path),
        ) from exc


def plain_name(name: str) -> bool:
    """A file name with no folder in it: what a sidecar may name (:func:`bus.names.is_safe_name`)."""
    return is_safe_name(name)


def free_name(name: str, taken: set[str]) -> str:
    """``name`` if not in ``taken``, else ``name.1``, ``name.2``...; the result is added to ``taken``."""
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}.{n}"
    taken.add(candidate)
    return candidate


_LOOK_PAST = 3  #: free numbers looked past for an earlier reply (a power cut may leave a gap)


def write_reply(
    bundle: str,
    code: str | None,
    payload: bytes | None,
    summary: dict[str, Any],
    attachments: dict[str, bytes] | None,
    *,
    exists: Callable[[str], bool],
    put_new: Callable[[str, bytes], bool],
    read: Callable[[str], bytes],
    remove: Callable[[str], None],
) -> list[str]:
    """Write one reply for ``bundle`` into a replies folder, never overwriting anything.

    ``<stem>.<n>.<code>.xml`` (the message, verbatim), its attachments as
    ``<stem>.<n>.<code>.<name>``, and ``<stem>.<n>.json`` (the summary) last, so that a reader
    who sees the summary finds the rest; ``n`` is the first number whose files are all free.
    ``exists`` says whether the folder holds a name (the folder is never listed: a replies folder
    holds thousands of files, a bundle's replies a few); ``put_new`` creates a file only if its
    name is free (False otherwise); ``remove`` deletes one (the hidden claim of the number, once
    the reply is whole).

    Two replies for one bundle at once (a contract's act and DECP answered together, two
    workers) never share a number: each first claims ``.<stem>.<n>.claim``, exclusively, then
    looks again that no reply took ``n`` meanwhile.

    A reply with an id (``summary["reply_id"]``, the runtime's) is written once even when the
    bus is killed and writes it again: ``read`` (a file's bytes) finds a reply whose summary has
    that id, not written again (``[]`` is returned), and one cut short (its claim holds the id,
    its summary is missing), finished under its own number.  Every folder a source replies into
    gives it: the runtime writes a reply again when it cannot know it was written.
    """
    stem = bundle.rsplit(".", 1)[0] if "." in bundle else bundle
    label = code or "message"
    body = json.dumps(summary, indent=2, ensure_ascii=False, default=str).encode("utf-8") + b"\n"
    files = [(f"{label}.xml", payload)] if payload is not None else []
    files += [(f"{label}.{name if plain_name(name) else 'attachment'}", data)  # letters, stamped acts...
              for name, data in (attachments or {}).items()]
    files.append(("", body))  # the summary, last

    def targets(seq: int) -> list[str]:
        mine: set[str] = set()
        return [f"{stem}.{seq}.json" if not suffix else free_name(f"{stem}.{seq}.{suffix}", mine)
                for suffix, _ in files]

    reply_id = str(summary.get("reply_id") or "")
    seq, whole = _earlier_reply(stem, reply_id, exists, read) if reply_id else (None, False)
    if whole:  # written before a crash, which came before the runtime could know it
        if exists(f".{stem}.{seq}.claim"):
            remove(f".{stem}.{seq}.claim")
        return []
    if seq is None:
        seq = _claim_number(stem, reply_id, targets, exists, put_new, remove)
    written = targets(seq)
    for (suffix, data), target in zip(files, written, strict=True):
        if not suffix:
            crash_point("reply.mid-write")
        # never over a file already there: a reply cut short by a crash is finished, what it wrote
        # stays (put_new says False); a number just claimed has its names checked free already
        put_new(target, data)
    remove(f".{stem}.{seq}.claim")
    return written


def _claim_number(stem: str, reply_id: str, targets: Callable[[int], list[str]], exists: Callable[[str], bool],
                  put_new: Callable[[str, bytes], bool], remove: Callable[[str], None]) -> int:
    """The first number whose claim (``.<stem>.<n>.claim``, holding the reply's id) and files are
    free, claimed; its files looked at again after the claim (a reply may have ended meanwhile)."""
    seq = 1
    while True:
        claim = f".{stem}.{seq}.claim"
        if not exists(claim) and not any(map(exists, targets(seq))) and put_new(claim, reply_id.encode()):
            if not any(map(exists, targets(seq))):
                return seq
            remove(claim)
        seq += 1


def _earlier_reply(
    stem: str, reply_id: str, exists: Callable[[str], bool], read: Callable[[str], bytes]
) -> tuple[int | None, bool]:
    """(n, whole) of the reply ``reply_id`` of ``stem`` already in the folder: whole when its
    summary is there, cut short when only its claim (holding the id) is; (None, False) if none.
    Numbers are looked at from 1 until a few in a row hold neither a summary nor a claim."""
    cut_short, seq, free = None, 0, 0
    while free < _LOOK_PAST:
        seq += 1
        summary, claim = f"{stem}.{seq}.json", f".{stem}.{seq}.claim"
        found = False
        for name in (summary, claim):
            if not exists(name):
                continue
            found = True
            try:
                data = read(name)
            except OSError:
                continue
            if name == claim and data == reply_id.encode():
                cut_short = seq
            elif name == summary:
                try:
                    said = json.loads(data).get("reply_id")
                except (ValueError, AttributeError):
                    continue
                if said == reply_id:
                    return seq, True
        free = 0 if found else free + 1
    return cut_short, False
