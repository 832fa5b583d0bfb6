"""Drop folder, inbound: back-office software drops a sidecar and the files it names.

Life of a bundle (as Camel's file component): a sidecar matching ``pattern`` is *ready*
when a done-file sits beside it (``ready.done_file``), or else when it and the files it
names are older than ``ready.min_age`` AND their sizes did not change between two polls.
``claim`` moves the whole bundle into a private work folder (a manifest is written
first, so a crash mid-claim is finished by ``recover``).  ``commit`` moves it to
``done/`` (or deletes it); ``rollback`` moves it to ``error/`` beside
``<sidecar>.error.txt`` saying what to fix; ``unclaim`` gives a bundle the bus could not
record (its spool full) back to the drop folder, untouched.  Replies go to ``replies/`` as
``<bundle>.<seq>.<code>.xml`` (a platform's message, verbatim) and ``<bundle>.<seq>.json``
(a summary), never overwritten.  A file named by a sidecar is only ever looked for in
the drop folder itself: a name with a path in it is not followed.

``limits`` (:mod:`connectors._limits`): before a bundle moves, its files' sizes must leave
``min_free_bytes`` free where the bus copies them (else a TransientError, ``spool-full``, and the
bundle stays where it was dropped); once claimed, the sizes read in the work folder are checked
against ``max_file_bytes``, ``max_document_bytes`` and ``max_files``: a bundle over one is rolled
back at once (``error/`` with its note, and a reply naming the file, the option and the rule),
never copied into the spool.  The runtime copies the files through :meth:`FolderInbound.reading`,
which counts their bytes again: a file a writer still adds to after its claim (a handle left open)
stops the copy past a limit, and the bundle is refused the same way (:meth:`FolderInbound.refuse`).
"""

from __future__ import annotations

__all__ = ["Connector", "FolderInboundConfig", "ReadyConfig"]

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from bus.config import ConfigPath, ConnectorConfig
from bus.connector import Candidate, Claimed, ClaimedFile, InboundConnector
from bus.errors import DocumentError, TransientError
from connectors._folder_common import (
    abandoned,
    exclusive_write,
    folder_errors,
    fsync_dir,
    fsync_dirs,
    move,
    owner_suffix,
    plain_name,
    write_local_reply,
)
from connectors._limits import Budget, CountedReader, refuse, room_folders, room_for
from connectors._pickup_options import PickupOptions, ReadyConfig

log = logging.getLogger(__name__)

MANIFEST = ".claim.json"
REF_MARK = "+"  #: a claim folder ``<claim id>+<document id>`` once tagged
STALE_CLAIM_DIR = 300.0  # seconds after which an empty claim folder is a crash's leftover


class FolderInboundConfig(ConnectorConfig, PickupOptions):
    """``type: folder`` used in a route's ``from``."""

    type: Literal["folder"] = "folder"
    path: ConfigPath = Field(..., description="The drop folder the software writes into.")
    work_dir: ConfigPath | None = Field(None, description="Where claimed bundles wait (default <path>/.hent-work).")
    done_dir: ConfigPath | None = Field(None, description="Where processed bundles go (default <path>/done).")
    error_dir: ConfigPath | None = Field(None, description="Where failed bundles go (default <path>/error).")
    replies: ConfigPath | None = Field(None, description="Where replies to the software go (default <path>/replies).")


class FolderInbound(InboundConnector):
    Config = FolderInboundConfig
    config: FolderInboundConfig

    def __init__(self, name: str, config: FolderInboundConfig, context: Any = None) -> None:
        super().__init__(name, config, context)
        root = config.path
        self.work_dir = config.work_dir or root / ".hent-work"
        self.done_dir = config.done_dir or root / "done"
        self.error_dir = config.error_dir or root / "error"
        self.replies_dir = config.replies or root / "replies"
        self._last_seen: dict[str, tuple[int, int]] = {}
        self._unsynced = False  #: commits made since the last settled()

    def _ensure_dirs(self) -> None:
        for folder in (self.work_dir, self.done_dir, self.error_dir, self.replies_dir):
            folder.mkdir(parents=True, exist_ok=True)

    # -- readiness -------------------------------------------------------------------
    def _stable(self, path: Path, now: float, seen: dict[str, tuple[int, int]]) -> bool:
        stat = path.stat()
        signature = (stat.st_size, stat.st_mtime_ns)
        previous = self._last_seen.get(path.name)
        seen[path.name] = signature
        if now - stat.st_mtime < self.config.ready.min_age:
            return False
        return not self.config.ready.stable or previous == signature

    def list_ready(self) -> list[Candidate]:
        root = self.config.path
        ready = self.config.ready
        found: list[Candidate] = []
        seen: dict[str, tuple[int, int]] = {}
        now = time.time()
        with folder_errors(self.name, root):
            self._ensure_dirs()
            for sidecar in sorted(root.glob(self.config.pattern)):
                if not sidecar.is_file() or sidecar.name.startswith("."):
                    continue
                try:
                    if ready.done_file:
                        if not (root / f"{sidecar.name}{ready.done_file}").is_file():
                            continue
                        members = self._members(sidecar)
                    else:
                        members = self._members(sidecar)
                        present = [sidecar, *(root / m for m in members if (root / m).is_file())]
                        # every file is looked at, so that each has a size from this poll
                        if not all([self._stable(p, now, seen) for p in present]):
                            continue
                except FileNotFoundError:  # taken by another poller meanwhile
                    continue
                found.append(Candidate(sidecar.name, tuple(members)))
                if len(found) >= self.config.max_per_poll:
                    break
        self._last_seen = seen
        return found

    def _members(self, sidecar: Path) -> list[str]:
        try:
            names = self.context.bundle_members(sidecar.name, sidecar.read_bytes())
        except Exception as exc:  # noqa: BLE001 - the mapping reports it when the document is mapped
            log.debug("bundle members of %s unknown: %s", sidecar, exc)
            return []
        return [n for n in dict.fromkeys(names) if plain_name(n) and n != sidecar.name]

    # -- claim / commit / rollback ---------------------------------------------------
    def claim(self, candidate: Candidate) -> Claimed | None:
        root = self.config.path
        self._room(candidate)
        claim_id = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        claim_dir = self.work_dir / claim_id
        with folder_errors(self.name, root):
            # the folder appears with its manifest in it, or not at all
            preparing = self.work_dir / f".{claim_id}.{owner_suffix()}"
            preparing.mkdir(parents=True)
            manifest = {"key": candidate.key, "members": list(candidate.members), "origin": str(root)}
            exclusive_write(preparing / MANIFEST, json.dumps(manifest).encode(), sync_dir=False)
            move(preparing, claim_dir, sync=False)
            try:
                move(root / candidate.key, claim_dir / candidate.key, sync=False)
            except FileNotFoundError:
                (claim_dir / MANIFEST).unlink(missing_ok=True)
                claim_dir.rmdir()
                return None
            claimed = self._finish_claim(claim_dir, manifest)
            return self._within_limits(claimed)

    # -- limits ----------------------------------------------------------------------
    def reading(self, claimed: Claimed) -> Callable[[str], ClaimedFile]:
        """The claimed files counted against the limits as the runtime copies them: they were measured
        once claimed, but a writer that kept a handle open may still add to them."""
        budget = Budget(self.config.limits, self.name, claimed.key)

        def open_counted(name: str) -> ClaimedFile:
            budget.start(name)
            return CountedReader(open(claimed.files[name], "rb"), budget.count)

        return open_counted

    def refuse(self, claimed: Claimed, error: DocumentError) -> None:
        """A reply saying why, then the files to error/ beside a note; counted."""
        refuse(self, claimed, error)

    def _room(self, candidate: Candidate) -> None:
        """TransientError (``spool-full``) when the bundle, as it lies in the drop folder, would leave
        less than ``limits.min_free_bytes`` where it is copied; nothing has moved yet.  A bundle over
        a limit is not held back: it is refused once claimed, and never copied."""
        sizes: dict[str, int] = {}
        for name in (candidate.key, *candidate.members):
            try:
                sizes[name] = (self.config.path / name).stat().st_size
            except OSError:
                continue  # missing: the mapping says so; gone: the claim finds out
        try:
            Budget(self.config.limits, self.name, candidate.key).declare(sizes)
        except DocumentError:
            return
        room_for(self.config.limits, self.name, candidate.key, sum(sizes.values()), room_folders(self.context))

    def _within_limits(self, claimed: Claimed) -> Claimed | None:
        """``claimed``, or None once refused: its files, out of the writer's reach, over a limit."""
        if claimed.ref is not None:  # recorded before a restart: taken in already
            return claimed
        with folder_errors(self.name, claimed.sidecar.parent):
            sizes = {name: path.stat().st_size for name, path in claimed.files.items()}
        try:
            Budget(self.config.limits, self.name, claimed.key).declare(sizes)
        except DocumentError as error:
            self._ensure_dirs()  # recover() may come before any listing
            refuse(self, claimed, error)
            return None
        return claimed

    def _finish_claim(self, claim_dir: Path, manifest: dict[str, Any]) -> Claimed:
        root = Path(manifest["origin"])
        key = manifest["key"]
        names = [key, *manifest["members"]]
        if self.config.ready.done_file:
            names.append(f"{key}{self.config.ready.done_file}")
        files: dict[str, Path] = {}
        for name in names:
            target = claim_dir / name
            if not target.exists() and (root / name).is_file():
                move(root / name, target, sync=False)
            if target.exists() and not name.endswith(self.config.ready.done_file or "\0"):
                files[name] = target
        # not fsynced: a claim lost to a power cut only puts the bundle back where it was dropped,
        # and the ledger knows it again by its key; what must be durable is made so before the source
        # changes for good (the spool and the ledger when taken in, done/ or error/ at the end), and a
        # journaling file system makes those later syncs carry these earlier renames with them
        ref = claim_dir.name.partition(REF_MARK)[2] or manifest.get("ref")  # in the manifest: an older bus's tag
        return Claimed(key, files, origin=str(root), ref=ref)

    def tag(self, claimed: Claimed, ref: str) -> Claimed:
        """The claim folder renamed ``<claim id>+<ref>``: one rename, no file written, not synced (a
        tag lost to a power cut only makes recover() take the bundle in again, which the ledger knows
        by its key)."""
        claim_dir = claimed.sidecar.parent
        tagged = claim_dir.with_name(f"{claim_dir.name.split(REF_MARK, 1)[0]}{REF_MARK}{ref}")
        with folder_errors(self.name, claim_dir):
            os.rename(claim_dir, tagged)
        return replace(claimed, files={name: tagged / path.name for name, path in claimed.files.items()}, ref=ref)

    def recover(self) -> list[Claimed]:
        """Claims a crash interrupted: finished when the sidecar is in the work folder.

        The sidecar moves first when claiming and last when committing or rolling back,
        so where it is tells how far the interrupted step went.
        """
        claims: list[Claimed] = []
        with folder_errors(self.name, self.work_dir):
            if not self.work_dir.is_dir():
                return claims
            for claim_dir in sorted(self.work_dir.iterdir()):
                manifest_path = claim_dir / MANIFEST
                preparing = claim_dir.name.startswith(".")
                stale = time.time() - claim_dir.stat().st_mtime > STALE_CLAIM_DIR
                if preparing and (stale or abandoned(claim_dir.name)):
                    # a claim killed before it began: only its manifest (or the manifest's
                    # temporary file) is inside, never a file of the software's
                    shutil.rmtree(claim_dir, ignore_errors=True)
                if preparing:
                    continue
                if not manifest_path.is_file():  # a release killed between unlink and rmdir
                    for leftover in claim_dir.glob(f".{MANIFEST}.*.tmp"):  # and a rewrite killed earlier
                        leftover.unlink(missing_ok=True)
                    _remove_empty(claim_dir)
                    continue
                manifest = json.loads(manifest_path.read_text())
                if (claim_dir / manifest["key"]).exists():
                    claimed = self._within_limits(self._finish_claim(claim_dir, manifest))
                    if claimed is not None:
                        claims.append(claimed)
                    continue
                # the sidecar is back at the source (claim interrupted before it moved) or
                # already in done/ or error/ (commit or rollback interrupted at the end)
                manifest_path.unlink()
                _remove_empty(claim_dir)
        return claims

    def commit(self, claimed: Claimed) -> None:
        with folder_errors(self.name, self.done_dir):
            for path in self._claimed_files(claimed):
                if self.config.on_success == "delete":
                    path.unlink()
                else:
                    move(path, _free_name(self.done_dir / path.name), sync=False)
            self._release(claimed)
            self._unsynced = True  # done/ and the work folder, synced once for the poll's commits

    def settled(self) -> None:
        """The poll's commits, durable together: a power cut before this leaves a committed bundle
        in its claim folder (the moves undone) or its claim folder empty, which recover() settles."""
        if self._unsynced:
            with folder_errors(self.name, self.done_dir):
                fsync_dirs(self.done_dir, self.work_dir)
            self._unsynced = False

    def rollback(self, claimed: Claimed, reason: str) -> None:
        with folder_errors(self.name, self.error_dir):
            sidecar_target = _free_name(self.error_dir / claimed.key)
            note = _free_name(sidecar_target.with_name(f"{sidecar_target.name}.error.txt"))
            exclusive_write(note, reason.rstrip("\n").encode("utf-8") + b"\n")
            for path in self._claimed_files(claimed):
                target = sidecar_target if path.name == claimed.key else _free_name(self.error_dir / path.name)
                move(path, target)
            self._release(claimed)

    def unclaim(self, claimed: Claimed) -> None:
        """Give a bundle the bus could not record (its spool full...) back to the drop folder, as it
        was: the files first, the sidecar last (a crash midway: :meth:`recover` claims it again),
        never over a file dropped there since (TransientError: the bundle stays claimed)."""
        origin = Path(claimed.origin or self.config.path)
        with folder_errors(self.name, origin):
            for path in self._claimed_files(claimed):
                try:
                    os.link(path, origin / path.name)  # fails if a file of that name is there again
                except FileExistsError:
                    raise TransientError(
                        f"connector {self.name!r}: {path.name} was dropped again while its bundle "
                        f"{claimed.key} was claimed; the bundle stays in {path.parent} and is taken when "
                        "the bus starts next", connector=self.name, path=str(origin / path.name),
                    ) from None
                path.unlink()
                fsync_dir(origin)
            self._release(claimed)

    def _claimed_files(self, claimed: Claimed) -> list[Path]:
        """The bundle's files in the work folder, the sidecar last (see :meth:`recover`)."""
        claim_dir = claimed.sidecar.parent
        files = sorted(
            p for p in claim_dir.iterdir()
            if p.name not in (MANIFEST, claimed.key) and not p.name.startswith(f".{MANIFEST}.")  # a killed rewrite
        )
        return [*files, claimed.sidecar] if claimed.sidecar.exists() else files

    def _release(self, claimed: Claimed) -> None:
        claim_dir = claimed.sidecar.parent
        (claim_dir / MANIFEST).unlink(missing_ok=True)
        for leftover in claim_dir.glob(f".{MANIFEST}.*.tmp"):  # a manifest rewrite killed midway
            leftover.unlink(missing_ok=True)
        _remove_empty(claim_dir)
        # not fsynced: a claim folder whose release a power cut undid has its manifest and no
        # sidecar, which recover() removes

    # -- replies ---------------------------------------------------------------------
    def reply(
        self, bundle: str, code: str | None, payload: bytes | None, summary: dict[str, Any],
        attachments: dict[str, bytes] | None = None,
    ) -> list[str]:
        return write_local_reply(self.name, self.replies_dir, bundle, code, payload, summary, attachments)

    def reachable(self) -> tuple[bool, str]:
        root = self.config.path
        return root.is_dir() and os.access(root, os.R_OK | os.W_OK), str(root)


def _free_name(target: Path) -> Path:
    """``target`` if free, else ``name.1``, ``name.2``...: never overwrite."""
    candidate, n = target, 0
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.name}.{n}")
    return candidate


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


Connector = FolderInbound
