"""The spool: a content-addressed store for the bytes the bus carries (the claim check).

A blob is named by the sha256 of its content and lives at ``root/ab/<sha256>``.  Every
write goes to a temporary file under ``root/tmp`` (same file system), is fsynced, then
``os.replace``-d into place, and the directory is fsynced: after ``put_*`` returns, the
bytes survive a crash, and a reader never sees a half-written blob.  Writing the same
content twice keeps the blob already there.  A batch of blobs can be written with ``sync=False``
and made durable together by :meth:`Spool.sync_many`: on Linux one ``syncfs(2)`` of the spool's
file system (the disk's cache flushed once for the batch, not twice per blob), elsewhere (and on
FUSE) each blob and its folder fsynced.

A write that fails — the spool's file system full (ENOSPC), a quota (EDQUOT) or a file-size
limit (EFBIG) reached, or any other error of the spool's own files — is a
:class:`~bus.errors.TransientError` naming the spool (rule ``spool-full``, or ``spool-write``),
its temporary file removed: the runtime leaves the source as it was and tries again later.
An error reading what is being stored (the source's file or stream) stays the ``OSError`` it is.

::

    spool = Spool(Path("var/hent/spool"))
    sha = spool.put_file(Path("/srv/rh/export/arrete-12.pdf"))
    with spool.open(sha) as f: ...
    with spool.writer() as out:          # build an archive straight into the spool
        with tarfile.open(fileobj=out, mode="w:gz") as tar: ...
    archive_sha = out.sha256
"""

from __future__ import annotations

__all__ = ["Spool", "SpoolWriter", "MissingBlob", "Readable", "CHUNK_SIZE"]

import ctypes
import errno
import hashlib
import os
import re
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from bus.errors import HentError, TransientError

CHUNK_SIZE = 1024 * 1024  #: bytes read or hashed at a time; no blob is held in memory whole
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  #: the file system full, a quota, a file-size limit


class MissingBlob(HentError, KeyError):
    """The spool holds no blob with this sha256 (it is also a ``KeyError``)."""

    def __init__(self, sha256: str, root: Path) -> None:
        super().__init__(
            f"spool {root}: no blob {sha256}; the ledger names bytes the spool lost "
            "(restore the spool from backup or replay the document from its source)",
            path=str(root),
        )
        self.sha256 = sha256


class Readable(Protocol):
    """Anything with ``read(size) -> bytes``: an open file, a socket's file, an SFTP file."""

    def read(self, size: int, /) -> bytes: ...


def _fsync(path: Path) -> None:
    """fsync a file or a folder (its entries) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_call() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)`` (Linux; it releases Python's lock while it runs), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int
    return call  # type: ignore[no-any-return]


_SYNCFS = _syncfs_call()

#: file systems whose ``syncfs`` may flush nothing (FUSE's reaches the daemon only if it asks for it):
#: their blobs are fsynced one by one, which FUSE passes on
_NO_SYNCFS_TYPES = ("fuse",)
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  #: how mountinfo writes a space, a tab, a backslash


def _mount_type(path: Path, mountinfo: str) -> str | None:
    """The type of the file system ``path`` (absolute, resolved) is on, from ``/proc/self/mountinfo``'s
    text: the mount whose point is the longest prefix of the path; None if none is."""
    found: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not after:
            continue
        point = Path(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), parts[4]))  # a space is \040
        if (path == point or point in path.parents) and (found is None or len(point.parts) > found[0]):
            found = (len(point.parts), after.split()[0])
    return found[1] if found else None


def _syncfs_for(root: Path) -> Callable[[int], int] | None:
    """``syncfs`` for a spool at ``root``, or None where its file system's could flush nothing."""
    if _SYNCFS is None:
        return None
    try:
        kind = _mount_type(root.resolve(), Path("/proc/self/mountinfo").read_text(errors="replace"))
    except OSError:
        return None  # not known: fsync, which every file system honours
    if kind is None or kind.startswith(_NO_SYNCFS_TYPES):
        return None
    return _SYNCFS


def _stored_again(blob: Path) -> bool:
    """Refresh the time of a blob whose bytes are stored again (a purge of blobs that nothing names
    leaves it alone then); False when it is gone: a purge took it away meanwhile, the new copy takes
    its place."""
    try:
        os.utime(blob)
    except FileNotFoundError:
        return False
    except PermissionError:  # another user's blob (an operator's command): kept as it is
        pass
    return True


def _cannot_store(root: Path, what: str, exc: OSError) -> TransientError:
    """The error of a failed write into the spool at ``root`` (its ``path``, which ``str()`` shows
    first): ``spool-full`` when there is no room."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NO_ROOM:
        return TransientError(
            f"the spool is full: {what} could not be stored ({reason}); free space on its file system "
            "(or raise the quota or file-size limit that applies): the bus tries again",
            path=str(root), rule="spool-full",
        )
    return TransientError(
        f"the spool cannot store {what} ({reason}); check the spool's folder and file system: "
        "the bus tries again",
        path=str(root), rule="spool-write",
    )


@contextmanager
def _storing(root: Path, what: str) -> Iterator[None]:
    """Translate an ``OSError`` of a write into the spool (see :func:`_cannot_store`)."""
    try:
        yield
    except OSError as exc:
        raise _cannot_store(root, what, exc) from exc


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 (64 lowercase hex digits): {sha256!r}")
    return sha256


_BUILT = "a blob being built (an archive, a message)"


class SpoolWriter:
    """A file to write into (seekable: tarfile and zipfile work); ``sha256`` is known once closed."""

    def __init__(self, spool: Spool, file: BinaryIO, temp_path: Path) -> None:
        self._spool = spool
        self._file = file
        self._temp_path = temp_path
        self._sha256: str | None = None
        self._digest: Any = hashlib.sha256()  #: None once the writer seeks back

    @property
    def sha256(self) -> str:
        """The blob's name; readable after the ``with spool.writer()`` block has closed."""
        if self._sha256 is None:
            raise RuntimeError("SpoolWriter.sha256 is known only after the writer block has closed")
        return self._sha256

    def write(self, data: bytes) -> int:
        if self._digest is not None:
            self._digest.update(data)
        with _storing(self._spool.root, _BUILT):
            return self._file.write(data)

    def flush(self) -> None:
        with _storing(self._spool.root, _BUILT):
            self._file.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        with _storing(self._spool.root, _BUILT):  # a seek writes out what is buffered
            position = self._file.seek(offset, whence)
            if position != self._file.seek(0, os.SEEK_END) or self._digest is None:
                self._digest = None  # a writer that goes back (zipfile): hash the result at the end
            self._file.seek(position)
        return position

    def __getattr__(self, name: str) -> Any:  # tell, flush, read, seekable, writable...
        return getattr(self._file, name)

    def _commit(self, sync: bool) -> str:
        with _storing(self._spool.root, _BUILT):
            self._file.flush()
            digest = self._digest
            if digest is None:
                self._file.seek(0)
                digest = hashlib.sha256()
                for chunk in iter(lambda: self._file.read(CHUNK_SIZE), b""):
                    digest.update(chunk)
            if sync:
                os.fsync(self._file.fileno())
            self._file.close()
            self._sha256 = self._spool._install(self._temp_path, digest.hexdigest(), sync=sync)
        return self._sha256

    def _abort(self) -> None:
        with suppress(OSError):
            self._file.close()
        with suppress(FileNotFoundError):
            self._temp_path.unlink()


class Spool:
    """A content-addressed, crash-safe blob store under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._syncfs = _syncfs_for(self.root)
        self._root_fd: int | None = None  #: opened once: syncfs reports a write error since then
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Spool({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; return its sha256."""
        what = f"a blob of {len(data)} bytes"
        with self._temp(what) as (file, temp_path), _storing(self.root, what):
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        with _storing(self.root, what):
            return self._install(temp_path, hashlib.sha256(data).hexdigest())

    def put_stream(self, fileobj: Readable, *, what: str = "a stream", sync: bool = True) -> str:
        """Store what ``fileobj`` yields until EOF, chunk by chunk; return its sha256.  ``what`` it is
        names it in the error of a failed write.  With ``sync=False`` neither the blob nor its folder
        is fsynced: :meth:`sync_many` makes it durable (with the others of its batch) before
        anything relies on it surviving a power loss."""
        digest = hashlib.sha256()
        with self._temp(what) as (file, temp_path):
            for chunk in iter(lambda: fileobj.read(CHUNK_SIZE), b""):
                digest.update(chunk)
                with _storing(self.root, what):
                    file.write(chunk)
            with _storing(self.root, what):
                file.flush()
                if sync:
                    os.fsync(file.fileno())
        with _storing(self.root, what):
            return self._install(temp_path, digest.hexdigest(), sync=sync, sync_root=sync)

    def put_file(self, src: Path | str) -> str:
        """Store a copy of the file at ``src``; return its sha256."""
        with open(src, "rb") as fileobj:
            return self.put_stream(fileobj, what=str(src))

    @contextmanager
    def writer(self, *, sync: bool = True) -> Iterator[SpoolWriter]:
        """A file to build a blob in; on a clean exit it is stored and ``.sha256`` is set.

        If the block raises, the temporary file is removed and nothing is stored.  With
        ``sync=False`` the blob is not fsynced yet: call :meth:`sync` before relying on it
        surviving a power loss (the runtime does, before sending it anywhere).
        """
        with _storing(self.root, _BUILT):
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="writer-")
        out = SpoolWriter(self, os.fdopen(fd, "w+b"), Path(name))
        try:
            yield out
        except OSError as exc:
            out._abort()
            if exc.errno in _NO_ROOM:  # written through the file's other methods
                raise _cannot_store(self.root, _BUILT, exc) from exc
            raise
        except BaseException:
            out._abort()
            raise
        try:
            out._commit(sync)
        except BaseException:
            out._abort()
            raise

    def clean_temp(self, older_than: float = 3600.0) -> int:
        """Remove temporary files left by writers killed mid-write; return how many went."""
        removed = 0
        limit = time.time() - older_than
        for leftover in self._tmp.iterdir():
            with suppress(FileNotFoundError):
                if leftover.stat().st_mtime < limit:
                    leftover.unlink()
                    removed += 1
        return removed

    # -- reading ---------------------------------------------------------------------------

    def exists(self, sha256: str) -> bool:
        return self._location(_check_sha(sha256)).is_file()

    def __contains__(self, sha256: object) -> bool:
        return isinstance(sha256, str) and _SHA256.fullmatch(sha256) is not None and self.exists(sha256)

    def path(self, sha256: str) -> Path:
        """Where the blob lives; raises :class:`MissingBlob` (a ``KeyError``) if absent."""
        location = self._location(_check_sha(sha256))
        if not location.is_file():
            raise MissingBlob(sha256, self.root)
        return location

    def open(self, sha256: str) -> BinaryIO:
        """The blob, opened for binary reading; raises :class:`MissingBlob` if absent."""
        return open(self.path(sha256), "rb")

    def blobs(self) -> Iterator[tuple[str, int]]:
        """Every blob in the spool: its sha256 and when it was last stored (its modification time in ns,
        which storing the same bytes again refreshes); temporary files are not blobs."""
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder):
                if _SHA256.fullmatch(entry.name) and entry.name.startswith(folder.name):
                    with suppress(FileNotFoundError):  # removed meanwhile
                        yield entry.name, entry.stat(follow_symlinks=False).st_mtime_ns

    def verify(self, sha256: str) -> bool:
        """True when the blob exists and its content still hashes to its name."""
        try:
            fileobj = self.open(sha256)
        except MissingBlob:
            return False
        digest = hashlib.sha256()
        with fileobj:
            for chunk in iter(lambda: fileobj.read(CHUNK_SIZE), b""):
                digest.update(chunk)
        return digest.hexdigest() == sha256

    # -- internals -------------------------------------------------------------------------

    def sync_many(self, sha256s: Iterable[str]) -> None:
        """Make blobs stored with ``put_stream(..., sync=False)`` durable, their bytes and their
        folders' entries: on Linux one ``syncfs(2)`` of the spool's file system (every file written
        there is flushed with them, the disk's cache once), elsewhere (or on a FUSE file system) each
        blob, its folder and the root fsynced.  A write error the file system had since this spool was
        opened (``syncfs`` reports it once, to the first call that follows) is a
        :class:`TransientError` (``spool-write``): the batch is not relied on, and stored again."""
        blobs = sorted({_check_sha(sha256) for sha256 in sha256s})
        if not blobs:
            return
        what = f"{len(blobs)} blob(s) being made durable"
        with _storing(self.root, what):
            syncfs = self._syncfs
            if syncfs is not None and self._synced_fs(syncfs):
                return
            for blob in blobs:
                _fsync(self.path(blob))
            for folder in sorted({self._location(blob).parent for blob in blobs}):
                _fsync(folder)
            _fsync(self.root)  # a folder made for them

    def _synced_fs(self, syncfs: Callable[[int], int]) -> bool:
        """``syncfs`` on the spool's root; False where the kernel has none (ENOSYS): fsync instead."""
        with self._sync_lock:  # one at a time: each sees the errors since the one before it
            if self._root_fd is None:
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
                weakref.finalize(self, os.close, self._root_fd)  # closed with the spool
            if syncfs(self._root_fd) == 0:
                return True
            error = ctypes.get_errno()
        if error == errno.ENOSYS:
            self._syncfs = None
            return False
        raise OSError(error, os.strerror(error), str(self.root))

    def sync(self, sha256: str) -> None:
        """Make a blob written with ``sync=False`` durable (its bytes and its folder entry)."""
        location = self.path(sha256)
        _fsync(location)
        _fsync(location.parent)

    def _location(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    @contextmanager
    def _temp(self, what: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A temporary file to write ``what`` into, closed at the end of the block, removed if it raises."""
        with _storing(self.root, what):
            fd, name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        temp_path = Path(name)
        file = os.fdopen(fd, "wb")
        try:
            yield file, temp_path
        except BaseException:
            with suppress(OSError):  # what it still buffers goes with it
                file.close()
            with suppress(FileNotFoundError):
                temp_path.unlink()
            raise
        try:
            with _storing(self.root, what):
                file.close()
        except TransientError:
            with suppress(FileNotFoundError):
                temp_path.unlink()
            raise

    def _install(self, temp_path: Path, sha256: str, *, sync: bool = True, sync_root: bool = True) -> str:
        """Move a temporary file (fsynced, unless not ``sync``) into place under its name (idempotent);
        removed if that fails.  The folder it goes into is fsynced after (``sync``), the root when
        that folder is new (``sync_root``)."""
        target = self._location(sha256)
        try:
            if target.is_file() and target.stat().st_size == temp_path.stat().st_size and _stored_again(target):
                temp_path.unlink()
                return sha256
            self._makedirs(target.parent, sync=sync_root)
            os.replace(temp_path, target)
        except OSError:
            with suppress(FileNotFoundError):
                temp_path.unlink()
            raise
        if sync:
            _fsync(target.parent)
        return sha256

    def _makedirs(self, directory: Path, *, sync: bool = True) -> None:
        """Create the ``ab`` folder if needed, fsyncing the root whose listing changed (``sync``)."""
        if not directory.is_dir():
            with suppress(FileExistsError):
                directory.mkdir()
            if sync:
                _fsync(directory.parent)
