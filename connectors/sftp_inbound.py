"""SFTP, inbound: a vendor's outbox on an SFTP server, with the life of a drop folder.

A sidecar matching ``pattern`` is ready when a done-file sits beside it, or else when it and
the files it names are older than ``ready.min_age`` (remote mtime) AND their sizes and
mtimes did not change between two polls.  ``claim`` writes a local manifest first, renames
the bundle on the server into ``<path>/.hent-work/<claim id>/`` (out of other pollers'
reach), then downloads it, streamed, into ``local_work_dir`` (default
``~/.cache/hent/sftp/<connector>``), where the runtime reads it into the spool.  ``commit``
records what was consumed, then moves the bundle to ``done/`` (or deletes it);
``rollback`` moves it to ``error/`` beside ``<sidecar>.error.txt``.  Replies are written to
``replies/`` on the server, named as the folder connector names them, never overwritten.
``recover`` resumes from the local manifests.

``limits`` (:mod:`connectors._limits`): before a bundle moves, the sizes of the last listing must
leave ``limits.min_free_bytes`` free in ``local_work_dir`` (and the spool, when the runtime says
where it is), else a TransientError (``spool-full``) and the bundle stays in the outbox.  Once
renamed into the remote work folder, the sizes the server gives are checked against
``max_file_bytes``, ``max_document_bytes`` and ``max_files``, then the bytes are counted as they
are downloaded (a file whose size lied is cut off at the limit, its partial copy removed): a
bundle over a limit goes to ``error/`` with its note and a reply, and is never copied further.

What was consumed — (remote path, size, mtime, sha256, ``consumed_at``) — is appended to
``<local_work_dir>/consumed.jsonl`` before the remote move: a file seen again with the same
path, size and mtime (a remote move that failed, a bundle put back) is not claimed again.
The file is read again only when its mtime or size changed.  An entry is forgotten once it
is older than ``remember`` (default 30 days) AND its path is no longer in the outbox's
listing (a file still sitting there stays remembered, whatever its age): each poll drops
such entries, if any, in one atomic rewrite.  An entry written before ``consumed_at``
existed counts as consumed when consumed.jsonl was last modified (never earlier than the
truth, so never forgotten too early); the first rewrite records that time in it.
"""

from __future__ import annotations

__all__ = ["Connector", "SftpInbound", "SftpInboundConfig"]

import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import paramiko
from pydantic import Field

from bus.config import ConfigPath, ConnectorConfig, Duration
from bus.connector import Candidate, Claimed, InboundConnector
from bus.errors import ConfigError, DocumentError, TransientError
from bus.names import name_problem
from connectors._folder_common import (
    atomic_write,
    exclusive_write,
    folder_errors,
    free_name,
    move,
    owner_suffix,
    plain_name,
    write_reply,
)
from connectors._limits import Budget, refuse, room_folders, room_for
from connectors._pickup_options import PickupOptions
from connectors._sftp_common import SessionHolder, SftpOptions, load_key, makedirs, remote_join
from connectors.folder_inbound import MANIFEST

log = logging.getLogger(__name__)

CONSUMED = "consumed.jsonl"
MAX_SIDECAR = 16 << 20  #: a sidecar larger than this is not read for its members
DOWNLOAD_CHUNK = 32 << 10  #: bytes per SFTP read request (what every server accepts)
DOWNLOAD_WINDOW = 8 << 20  #: bytes asked for at once (256 requests in flight)


class SftpInboundConfig(ConnectorConfig, SftpOptions, PickupOptions):
    """``type: sftp`` used in a route's ``from``."""

    type: Literal["sftp"] = Field("sftp", description="The protocol: SFTP (SSH).")
    local_work_dir: ConfigPath | None = Field(
        None, description="Local folder for downloaded bundles and manifests (default ~/.cache/hent/sftp/<connector>)."
    )
    done_dir: str | None = Field(None, description="Remote folder for processed bundles (default <path>/done).")
    error_dir: str | None = Field(None, description="Remote folder for failed bundles (default <path>/error).")
    replies: str | None = Field(None, description="Remote folder for replies (default <path>/replies).")
    remember: Duration = Field(
        30 * 86400.0, gt=0,
        description="How long after its consumption a file is remembered (longer while it is still in the outbox).",
    )


class SftpInbound(InboundConnector):
    Config = SftpInboundConfig
    config: SftpInboundConfig
    intake_threads_default = 4  # each file operation waits for the server

    def __init__(self, name: str, config: SftpInboundConfig, context: Any = None) -> None:
        super().__init__(name, config, context)
        root = config.path
        self.remote_work = remote_join(root, ".hent-work")
        self.done_dir = config.done_dir or remote_join(root, "done")
        self.error_dir = config.error_dir or remote_join(root, "error")
        self.replies_dir = config.replies or remote_join(root, "replies")
        self.local_dir = config.local_work_dir or Path.home() / ".cache" / "hent" / "sftp" / name
        self.claims_dir = self.local_dir / "claims"
        self.session = SessionHolder(name, config)
        self.consumed = _ConsumedLog(name, self.local_dir / CONSUMED)
        self._last_seen: dict[str, tuple[int, int]] = {}
        self._listed: dict[str, int] = {}  #: the outbox's files and sizes at the last listing
        self._warned: set[tuple[str, int | None, int | None]] = set()
        self._dirs_ready = False

    def check(self) -> None:
        load_key(self.name, self.config, ConfigError)

    def close(self) -> None:
        self.session.close()

    def _ensure_dirs(self, sftp: paramiko.SFTPClient) -> None:
        if not self._dirs_ready:
            for folder in (self.remote_work, self.done_dir, self.error_dir):
                makedirs(sftp, folder)
            self._dirs_ready = True

    # -- readiness -------------------------------------------------------------------
    def list_ready(self) -> list[Candidate]:
        root, ready = self.config.path, self.config.ready
        found: list[Candidate] = []
        seen: dict[str, tuple[int, int]] = {}
        now = time.time()
        with self.session.using(root) as sftp:
            self._ensure_dirs(sftp)
            listing = sftp.listdir_attr(root)
            self.consumed.forget(now - self.config.remember, {remote_join(root, e.filename) for e in listing})
            consumed = self.consumed.keys()
            entries = {e.filename: e for e in listing if stat.S_ISREG(e.st_mode or 0)}
            self._listed = {name: attr.st_size or 0 for name, attr in entries.items()}
            for name in sorted(entries):
                attr = entries[name]
                if name.startswith(".") or not fnmatchcase(name, self.config.pattern):
                    continue
                key = (remote_join(root, name), attr.st_size, attr.st_mtime)
                problem = name_problem(name)
                if problem is not None:  # never claimed under a name that is no plain file name
                    if key not in self._warned:
                        self._warned.add(key)
                        log.warning("%s: the listing of %s names %r, which %s: left alone; rename it [file-name]",
                                    self.name, root, name[:120], problem)
                    continue
                if key in consumed:
                    if key not in self._warned:  # once, not at every poll
                        self._warned.add(key)
                        log.warning("%s: %s was already consumed (same size and mtime): left alone", self.name, name)
                    continue
                try:
                    members = self._members(sftp, name, attr)
                except FileNotFoundError:  # taken by another poller meanwhile
                    continue
                if ready.done_file:
                    if f"{name}{ready.done_file}" not in entries:
                        continue
                else:
                    present = [entries[n] for n in (name, *members) if n in entries]
                    if not all([self._stable(a, now, seen) for a in present]):
                        continue
                found.append(Candidate(name, tuple(members)))
                if len(found) >= self.config.max_per_poll:
                    break
        self._last_seen = seen
        return found

    def _stable(self, attr: paramiko.SFTPAttributes, now: float, seen: dict[str, tuple[int, int]]) -> bool:
        signature = (attr.st_size or 0, attr.st_mtime or 0)
        previous = self._last_seen.get(attr.filename)
        seen[attr.filename] = signature
        if now - signature[1] < self.config.ready.min_age:
            return False
        return not self.config.ready.stable or previous == signature

    def _members(self, sftp: paramiko.SFTPClient, name: str, attr: paramiko.SFTPAttributes) -> list[str]:
        if (attr.st_size or 0) > MAX_SIDECAR:
            return []
        with sftp.open(remote_join(self.config.path, name), "rb") as handle:
            data = handle.read()
        try:
            names = self.context.bundle_members(name, data)
        except Exception as exc:  # noqa: BLE001 - the mapping reports it when the document is mapped
            log.debug("bundle members of %s unknown: %s", name, exc)
            return []
        return [n for n in dict.fromkeys(names) if plain_name(n) and n != name]

    # -- claim / commit / rollback ---------------------------------------------------
    def claim(self, candidate: Candidate) -> Claimed | None:
        claim_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        claim_dir = self.claims_dir / claim_id
        remote_dir = remote_join(self.remote_work, claim_id)
        self._room(candidate)
        manifest: dict[str, Any] = {"key": candidate.key, "members": list(candidate.members),
                                    "origin": self.config.path, "remote_dir": remote_dir, "files": {}}
        with folder_errors(self.name, self.claims_dir):  # the local manifest first: recover() starts there
            preparing = self.claims_dir / f".{claim_id}.{owner_suffix()}"
            preparing.mkdir(parents=True)
            exclusive_write(preparing / MANIFEST, json.dumps(manifest).encode())
            move(preparing, claim_dir)
        with self.session.using(remote_dir) as sftp:
            self._ensure_dirs(sftp)
            sftp.mkdir(remote_dir)
            try:
                sftp.rename(remote_join(self.config.path, candidate.key), remote_join(remote_dir, candidate.key))
            except FileNotFoundError:  # another poller took it
                sftp.rmdir(remote_dir)
                shutil.rmtree(claim_dir)
                return None
            return self._finish_claim(sftp, claim_dir, manifest)

    def _room(self, candidate: Candidate) -> None:
        """TransientError (``spool-full``) when the bundle, by the sizes of the last listing, would leave
        less than ``limits.min_free_bytes`` where it is copied; nothing has moved yet.  A bundle over a
        limit is not held back: it is refused once claimed, and never downloaded."""
        sizes = {name: self._listed[name] for name in (candidate.key, *candidate.members) if name in self._listed}
        try:
            Budget(self.config.limits, self.name, candidate.key).declare(sizes)
        except DocumentError:
            return
        room_for(self.config.limits, self.name, candidate.key, sum(sizes.values()),
                 room_folders(self.context, self.local_dir))

    def _finish_claim(self, sftp: paramiko.SFTPClient, claim_dir: Path, manifest: dict[str, Any]) -> Claimed | None:
        """The claim, its files renamed into the remote work folder and downloaded; None when the bundle
        broke a limit (then rolled back to ``error/``)."""
        key, remote_dir, origin = manifest["key"], manifest["remote_dir"], manifest["origin"]
        marker = f"{key}{self.config.ready.done_file}" if self.config.ready.done_file else None
        attrs: dict[str, paramiko.SFTPAttributes] = {}
        for name in [key, *manifest["members"], *([marker] if marker else [])]:
            target = remote_join(remote_dir, name)
            try:
                attr = sftp.stat(target)
            except FileNotFoundError:
                try:
                    sftp.rename(remote_join(origin, name), target)
                except FileNotFoundError:
                    continue  # a member that is missing: the mapping says so
                attr = sftp.stat(target)
            if name != marker:
                attrs[name] = attr
        # a claim recorded before a restart was taken in already: its limits were checked then
        budget = Budget(self.config.limits, self.name, key) if manifest.get("ref") is None else None
        try:
            if budget is not None:
                budget.declare({name: attr.st_size or 0 for name, attr in attrs.items()})
            for name, attr in attrs.items():
                if name not in manifest["files"] or not (claim_dir / name).is_file():
                    digest = self._download(sftp, remote_join(remote_dir, name), claim_dir / name, budget, name)
                    manifest["files"][name] = {"size": attr.st_size, "mtime": attr.st_mtime, "sha256": digest}
                elif budget is not None:
                    budget.start(name)
                    budget.count((claim_dir / name).stat().st_size)
        except DocumentError as error:
            refused: DocumentError | None = error
        else:
            refused = None
        with folder_errors(self.name, claim_dir):
            atomic_write(claim_dir / MANIFEST, json.dumps(manifest).encode())
        files = {name: claim_dir / name for name in [key, *manifest["members"]] if name in manifest["files"]}
        claimed = Claimed(key, {key: claim_dir / key, **files}, origin=f"{self.config.where()}{origin}",
                          ref=manifest.get("ref"))
        if refused is not None:
            refuse(self, claimed, refused)
            return None
        return claimed

    def _download(self, sftp: paramiko.SFTPClient, remote: str, local: Path, budget: Budget | None = None,
                  name: str = "") -> str:
        """Stream ``remote`` into ``local`` (complete, or absent); its sha256.  ``budget`` counts the
        bytes as they come (DocumentError past a limit: no more is read, the partial copy removed)."""
        digest = hashlib.sha256()
        partial = local.with_name(f".{local.name}.part")
        if budget is not None:
            budget.start(name or local.name)

        try:
            with folder_errors(self.name, local), open(partial, "wb") as out:
                with sftp.open(remote, "rb") as handle:
                    size = handle.stat().st_size or 0
                    # pipelined reads a window at a time: fast, and never more than a window in memory
                    # (paramiko's getfo either asks for the whole file at once, or, with a limit on the
                    # requests in flight, may fall back to one synchronous read per chunk while its
                    # prefetch thread keeps the rest of the file in memory)
                    for start in range(0, size, DOWNLOAD_WINDOW):
                        end = min(start + DOWNLOAD_WINDOW, size)
                        for data in handle.readv([(o, min(DOWNLOAD_CHUNK, end - o))
                                                  for o in range(start, end, DOWNLOAD_CHUNK)]):
                            if budget is not None:
                                budget.count(len(data))
                            digest.update(data)
                            out.write(data)
                out.flush()
                if out.tell() != size:
                    raise TransientError(f"connector {self.name!r}: {remote} gave {out.tell()} bytes instead of "
                                         f"{size}; read again later", connector=self.name, path=remote,
                                         rule="sftp-size")
                os.fsync(out.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)  # complete, or absent
            raise
        os.replace(partial, local)
        return digest.hexdigest()

    def tag(self, claimed: Claimed, ref: str) -> Claimed:
        claim_dir = claimed.sidecar.parent
        with folder_errors(self.name, claim_dir):
            manifest = json.loads((claim_dir / MANIFEST).read_text())
            manifest["ref"] = ref
            atomic_write(claim_dir / MANIFEST, json.dumps(manifest).encode())
        return replace(claimed, ref=ref)

    def recover(self) -> list[Claimed]:
        """Claims a crash interrupted, from the local manifests: where the remote sidecar is tells."""
        claims: list[Claimed] = []
        with folder_errors(self.name, self.claims_dir):
            if not self.claims_dir.is_dir():
                return claims
            manifests = []
            for claim_dir in sorted(self.claims_dir.iterdir()):
                if claim_dir.name.startswith(".") or not (claim_dir / MANIFEST).is_file():
                    shutil.rmtree(claim_dir, ignore_errors=True)  # a claim killed before it began
                    continue
                manifests.append((claim_dir, json.loads((claim_dir / MANIFEST).read_text())))
        if not manifests:
            return claims
        with self.session.using(self.remote_work) as sftp:
            for claim_dir, manifest in manifests:
                remote_dir = manifest["remote_dir"]
                try:
                    sftp.stat(remote_join(remote_dir, manifest["key"]))
                except FileNotFoundError:
                    # still at the source (claim interrupted) or already in done/ or error/
                    _remote_rmdir(sftp, remote_dir)
                    shutil.rmtree(claim_dir)
                    continue
                claimed = self._finish_claim(sftp, claim_dir, manifest)
                if claimed is not None:
                    claims.append(claimed)
        return claims

    def commit(self, claimed: Claimed) -> None:
        manifest = self._manifest(claimed)
        self._remember(manifest)
        with self.session.using(self.done_dir) as sftp:
            taken = set(sftp.listdir(self.done_dir))
            for name in self._remote_files(sftp, manifest):
                source = remote_join(manifest["remote_dir"], name)
                if self.config.on_success == "delete":
                    sftp.remove(source)
                else:
                    sftp.rename(source, remote_join(self.done_dir, free_name(name, taken)))
            _remote_rmdir(sftp, manifest["remote_dir"])
        self._release(claimed)

    def rollback(self, claimed: Claimed, reason: str) -> None:
        manifest = self._manifest(claimed)
        with self.session.using(self.error_dir) as sftp:
            taken = set(sftp.listdir(self.error_dir))
            sidecar_target = free_name(claimed.key, taken)
            note = free_name(f"{sidecar_target}.error.txt", taken)
            _put_new(sftp, self.error_dir, note, reason.rstrip("\n").encode("utf-8") + b"\n")
            for name in self._remote_files(sftp, manifest):
                target = sidecar_target if name == claimed.key else free_name(name, taken)
                sftp.rename(remote_join(manifest["remote_dir"], name), remote_join(self.error_dir, target))
            _remote_rmdir(sftp, manifest["remote_dir"])
        self._release(claimed)

    def _manifest(self, claimed: Claimed) -> dict[str, Any]:
        with folder_errors(self.name, claimed.sidecar.parent):
            manifest: dict[str, Any] = json.loads((claimed.sidecar.parent / MANIFEST).read_text())
        return manifest

    def _remember(self, manifest: dict[str, Any]) -> None:
        """Record what the claim consumed in consumed.jsonl, durably, before anything moves
        (once: a commit that failed and is tried again adds nothing)."""
        consumed_at = round(time.time(), 3)
        records = [
            {"path": remote_join(manifest["origin"], name), **record, "consumed_at": consumed_at}
            for name, record in manifest["files"].items()
        ]
        known = self.consumed.keys()
        fresh = [r for r in records if (r["path"], r["size"], r["mtime"]) not in known]
        if fresh:
            self.consumed.append(fresh)

    @staticmethod
    def _remote_files(sftp: paramiko.SFTPClient, manifest: dict[str, Any]) -> list[str]:
        """The claim's files on the server, the sidecar last (see :meth:`recover`)."""
        names = sorted(n for n in sftp.listdir(manifest["remote_dir"]) if n != manifest["key"])
        return [*names, manifest["key"]] if manifest["key"] in sftp.listdir(manifest["remote_dir"]) else names

    def _release(self, claimed: Claimed) -> None:
        with folder_errors(self.name, self.claims_dir):
            shutil.rmtree(claimed.sidecar.parent, ignore_errors=True)

    # -- replies ---------------------------------------------------------------------
    def reply(
        self, bundle: str, code: str | None, payload: bytes | None, summary: dict[str, Any],
        attachments: dict[str, bytes] | None = None,
    ) -> list[str]:
        folder = self.replies_dir
        with self.session.using(folder) as sftp:
            makedirs(sftp, folder)
            return write_reply(
                bundle, code, payload, summary, attachments,
                exists=lambda name: _exists(sftp, remote_join(folder, name)),
                put_new=lambda name, data: _put_new(sftp, folder, name, data),
                remove=lambda name: sftp.remove(remote_join(folder, name)),
                read=lambda name: _read_small(sftp, remote_join(folder, name)),
            )

    def reachable(self) -> tuple[bool, str]:
        where = f"{self.config.where()}/{self.config.path.lstrip('/')}"
        try:
            with self.session.using(self.config.path) as sftp:
                if not stat.S_ISDIR(sftp.stat(self.config.path).st_mode or 0):
                    return False, f"{where} is not a folder"
        except TransientError as exc:
            return False, exc.message
        return True, where


class _ConsumedLog:
    """``consumed.jsonl``: one JSON entry a line, cached while the file's mtime and size hold."""

    def __init__(self, connector: str, path: Path) -> None:
        self.connector = connector
        self.path = path
        self._records: list[dict[str, Any]] = []
        self._keys: set[tuple[str, int, int]] = set()
        self._signature: tuple[int, int] | None = None  #: (mtime_ns, size) of what _records holds

    def keys(self) -> set[tuple[str, int, int]]:
        """(path, size, mtime) of every entry."""
        self._load()
        return self._keys

    def append(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(record) + "\n" for record in records).encode()
        self._load()
        with folder_errors(self.connector, self.path), open(self.path, "a+b") as out:
            before = os.fstat(out.fileno())
            if before.st_size:
                out.seek(before.st_size - 1)
                if out.read(1) != b"\n":  # a line a crash cut short: it stays apart, unreadable
                    data = b"\n" + data
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            after = os.fstat(out.fileno())
        if (before.st_mtime_ns, before.st_size) == self._signature or not (before.st_size or self._records):
            self._set([*self._records, *records], (after.st_mtime_ns, after.st_size))
        else:
            self._signature = None  # changed behind our back: read again next time

    def forget(self, consumed_before: float, listed: set[str]) -> int:
        """Drop the entries consumed before ``consumed_before`` whose path is not ``listed``."""
        self._load()
        keep = [r for r in self._records if r["consumed_at"] >= consumed_before or r["path"] in listed]
        dropped = len(self._records) - len(keep)
        if dropped:
            with folder_errors(self.connector, self.path):
                atomic_write(self.path, "".join(json.dumps(record) + "\n" for record in keep).encode())
                info = self.path.stat()
            self._set(keep, (info.st_mtime_ns, info.st_size))
            log.info("%s: %d consumed file(s) forgotten, %d remembered", self.connector, dropped, len(keep))
        return dropped

    def _load(self) -> None:
        with folder_errors(self.connector, self.path):
            try:
                info = self.path.stat()
            except FileNotFoundError:
                self._set([], None)
                return
            if (info.st_mtime_ns, info.st_size) == self._signature:
                return
            lines = self.path.read_bytes().splitlines()
        records = []
        for line in filter(bytes.strip, lines):
            try:
                record = json.loads(line)
                if not {"path", "size", "mtime"} <= record.keys():
                    raise ValueError("path, size or mtime missing")
            except (ValueError, AttributeError):  # cut short by a crash before its fsync: not committed
                log.warning("%s: %s: unreadable line skipped: %.80r", self.connector, self.path, line)
                continue
            record.setdefault("consumed_at", info.st_mtime)  # written before consumed_at existed
            records.append(record)
        self._set(records, (info.st_mtime_ns, info.st_size))

    def _set(self, records: list[dict[str, Any]], signature: tuple[int, int] | None) -> None:
        self._records, self._signature = records, signature
        self._keys = {(r["path"], r["size"], r["mtime"]) for r in records}


def _put_new(sftp: paramiko.SFTPClient, folder: str, name: str, data: bytes) -> bool:
    """Write ``folder/name`` whole (temporary name, then rename) unless it exists: False then."""
    temporary = remote_join(folder, f".{name}.{threading.get_ident()}.{owner_suffix()}.tmp")
    with sftp.open(temporary, "wb") as out:
        out.write(data)
    try:
        sftp.rename(temporary, remote_join(folder, name))  # OpenSSH's rename never replaces a file
    except OSError:
        sftp.remove(temporary)
        if _exists(sftp, remote_join(folder, name)):
            return False
        raise
    return True


def _read_small(sftp: paramiko.SFTPClient, path: str) -> bytes:
    """The bytes of a small remote file (a reply's summary or claim, to tell a reply already written)."""
    with sftp.open(path, "rb") as handle:
        return handle.read(MAX_SIDECAR)  # ours are a few KB: bounded all the same


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    """Whether ``path`` is there (a file, a folder or a link), asked with one ``lstat``."""
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _remote_rmdir(sftp: paramiko.SFTPClient, folder: str) -> None:
    try:
        sftp.rmdir(folder)
    except OSError:
        pass  # not empty (files another step will move) or already gone


Connector = SftpInbound
