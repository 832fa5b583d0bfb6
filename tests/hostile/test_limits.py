"""Oversized inputs at the sources: files over a limit, too many files, files that grow or lie about
their size, sparse files, empty ones, the limits at their exact boundaries, and too little room
to take a bundle in.  Each is taken whole or refused with the file, the option and the rule; its
bytes are never lost (taken, left in the drop folder, or kept in error/)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bus.connector import Claimed, InboundContext
from connectors import _limits, database_inbound
from connectors._limits import GIB, Budget, SourceLimits
from connectors.database_inbound import DatabaseInbound, DatabaseInboundConfig
from connectors.folder_inbound import FolderInbound, FolderInboundConfig
from tests.hostile._corpus import attempt

FAMILY = "source-limits"


def _members(name: str, data: bytes) -> list[str]:
    try:
        return [str(n) for n in json.loads(data).get("files", [])]
    except (ValueError, AttributeError):
        return []


@dataclass
class SpoolContext(InboundContext):
    """What the runtime lends a source, with the spool's folder (see connectors._limits.room_folders)."""

    spool: Path | None = None


@dataclass
class Taken:
    """What became of a bundle: claimed (its files), or refused (the note in error/)."""

    claimed: Claimed | None
    note: str
    where: dict[str, int]  #: every file of the bundle found anywhere (drop folder, error/, work) → size


def sizes_everywhere(drop: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in drop.rglob("*"):
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".error.txt"):
            if path.parent.name != "replies":
                found[path.name] = path.stat().st_size
    return found


def folder_case(
    tmp_path: Path,
    limits: dict[str, int],
    files: dict[str, int | bytes],
    *,
    after_listing: Callable[[Path], None] | None = None,
    sparse: set[str] = frozenset(),  # type: ignore[assignment]
    spool: Path | None = None,
) -> Callable[[], Taken]:
    """A drop folder with a bundle ``a.json`` naming ``files`` (bytes, or a size: written, or sparse)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    for name, content in files.items():
        path = drop / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif name in sparse:
            with open(path, "wb") as out:
                out.truncate(content)
        else:
            path.write_bytes(b"x" * content)
    (drop / "a.json").write_text(json.dumps({"files": list(files)}))
    config = FolderInboundConfig.model_validate(
        {"type": "folder", "path": str(drop), "ready": {"min_age": 0, "stable": False}, "limits": limits}
    )
    source = FolderInbound("rh", config, SpoolContext(bundle_members=_members, spool=spool))

    def take() -> Taken:
        [candidate] = source.list_ready()
        if after_listing is not None:
            after_listing(drop)
        claimed = source.claim(candidate)
        note = drop / "error" / "a.json.error.txt"
        return Taken(claimed, note.read_text() if note.is_file() else "", sizes_everywhere(drop))

    return take


def shown(taken: Taken) -> str:
    if taken.claimed is not None:
        return f"taken: {len(taken.claimed.files)} files"
    return "refused: " + (taken.note.splitlines()[1] if taken.note else "?")


def lost_from(expected: set[str]) -> Callable[[Taken], bool]:
    """The bundle is lost when one of its files is nowhere, or it was neither taken nor refused."""
    return lambda taken: not expected <= set(taken.where) or (taken.claimed is None and not taken.note)


MIB = 1 << 20
TWO_FILES = len(json.dumps({"files": ["a.pdf", "b.pdf"]}))  #: the sidecar naming a.pdf and b.pdf
SMALL = {"max_file_bytes": 1000, "max_document_bytes": 2000, "max_files": 3}

#: case → (limits, files, the rule expected or None when taken, sparse files)
CASES: dict[str, tuple[dict[str, int], dict[str, int | bytes], str | None, set[str]]] = {
    "only-a-sidecar": (SMALL, {}, None, set()),
    "zero-byte-file": (SMALL, {"vide.pdf": b""}, None, set()),
    "zero-byte-files-up-to-max-files": (SMALL, {"a.pdf": b"", "b.pdf": b""}, None, set()),
    "file-at-max-file-bytes": (SMALL, {"a.pdf": 1000}, None, set()),
    "file-one-byte-over": (SMALL, {"a.pdf": 1001}, "file-too-large", set()),
    "bundle-at-max-document-bytes": (
        {**SMALL, "max_document_bytes": 1000 + 1000 + TWO_FILES},
        {"a.pdf": 1000, "b.pdf": 1000},
        None,
        set(),
    ),
    "bundle-one-byte-over": (
        {**SMALL, "max_document_bytes": 1000 + 1000 + TWO_FILES - 1},
        {"a.pdf": 1000, "b.pdf": 1000},
        "document-too-large",
        set(),
    ),
    "files-at-max-files": (SMALL, {"a.pdf": 1, "b.pdf": 1}, None, set()),
    "one-file-too-many": (SMALL, {"a.pdf": 1, "b.pdf": 1, "c.pdf": 1}, "too-many-files", set()),
    "two-thousand-empty-files": ({}, {f"f{n:04d}.pdf": b"" for n in range(2000)}, "too-many-files", set()),
    "sparse-3-gib-default-limits": ({}, {"scan.pdf": 3 * GIB}, "file-too-large", {"scan.pdf"}),
    "sparse-two-1-gib-files-and-a-sidecar": (
        {},
        {"a.pdf": GIB, "b.pdf": GIB},
        "document-too-large",
        {"a.pdf", "b.pdf"},
    ),
    "sparse-within-limits": ({"max_file_bytes": 8 * MIB}, {"scan.pdf": 8 * MIB}, None, {"scan.pdf"}),
    "document-limit-below-file-limit": (
        {"max_file_bytes": 1000, "max_document_bytes": 500},
        {"a.pdf": 600},
        "document-too-large",
        set(),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_dropped_bundle_is_taken_or_refused_by_its_limits(tmp_path: Path, case: str) -> None:
    limits, files, rule, sparse = CASES[case]
    take = folder_case(tmp_path, limits, files, sparse=sparse)
    taken = attempt(FAMILY, f"folder/{case}", take, lost=lost_from({"a.json", *files}), shown=shown)
    assert (taken.claimed is None) == (rule is not None), shown(taken)
    if rule is not None:
        assert f"[{rule}]" in taken.note and ": limits." in taken.note, taken.note


def _grow(name: str, size: int) -> Callable[[Path], None]:
    def grow(drop: Path) -> None:
        with open(drop / name, "ab") as out:
            out.write(b"y" * size)

    return grow


def _shrink(drop: Path) -> None:
    os.truncate(drop / "a.pdf", 10)


def _swap_for_sparse(drop: Path) -> None:
    replacement = drop / ".new.pdf"
    with open(replacement, "wb") as out:
        out.truncate(5 * GIB)
    os.replace(replacement, drop / "a.pdf")


def _sidecar_grows(drop: Path) -> None:
    with open(drop / "a.json", "a") as out:
        out.write(" " * 2000)


CHANGES: dict[str, tuple[Callable[[Path], None], str | None]] = {
    "file-grows-past-the-limit-after-listing": (_grow("a.pdf", 600), "file-too-large"),
    "file-grows-within-the-limit-after-listing": (_grow("a.pdf", 100), None),
    "file-shrinks-after-listing": (_shrink, None),
    "file-swapped-for-a-5-gib-sparse-one": (_swap_for_sparse, "file-too-large"),
    "sidecar-grows-past-the-limit": (_sidecar_grows, "file-too-large"),
}


@pytest.mark.parametrize("case", list(CHANGES))
def test_sizes_that_change_after_the_listing_are_measured_again_once_claimed(tmp_path: Path, case: str) -> None:
    change, rule = CHANGES[case]
    take = folder_case(tmp_path, SMALL, {"a.pdf": 500}, after_listing=change)
    taken = attempt(FAMILY, f"folder/{case}", take, lost=lost_from({"a.json", "a.pdf"}), shown=shown)
    assert (taken.claimed is None) == (rule is not None), shown(taken)
    if rule is not None:
        assert f"[{rule}]" in taken.note, taken.note


def test_a_symbolic_link_to_a_huge_sparse_file_is_measured_by_its_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    with open(outside, "wb") as out:
        out.truncate(4 * GIB)
    take = folder_case(tmp_path, {}, {"a.pdf": b"%PDF"})
    (tmp_path / "drop" / "a.pdf").unlink()
    (tmp_path / "drop" / "a.pdf").symlink_to(outside)
    taken = attempt(FAMILY, "folder/symlink-to-4-gib-sparse", take, lost=lost_from({"a.json"}), shown=shown)
    assert taken.claimed is None and "[file-too-large]" in taken.note


# -- sizes that lie, counted as read -------------------------------------------------------


def _read(limits: SourceLimits, declared: int, actual: int, chunk: int = 4096) -> int:
    """A file said to be ``declared`` bytes that gives ``actual`` when read: what was counted."""
    budget = Budget(limits, "sftp", "a.json")
    budget.declare({"a.json": 10, "a.pdf": declared})
    budget.start("a.pdf")
    for _ in range(0, actual, chunk):
        budget.count(chunk)
    return budget.total


LIES = {
    "says-small-gives-more-than-the-limit": (100, 20_000),
    "says-zero-gives-more-than-the-limit": (0, 20_000),
    "says-negative-gives-little": (-1, 4096),
    "says-huge-integer": (2**63, 0),
    "says-the-limit-gives-the-limit": (16_384, 16_384),
}


@pytest.mark.parametrize("case", list(LIES))
def test_a_size_that_lies_is_cut_off_at_the_limit_when_read(case: str) -> None:
    declared, actual = LIES[case]
    limits = SourceLimits(max_file_bytes=16_384)
    outcome = attempt(FAMILY, f"counted/{case}", lambda: _read(limits, declared, actual), shown=lambda n: f"{n} bytes")
    over = max(declared, actual) > limits.max_file_bytes
    assert isinstance(outcome, Exception) == over, outcome
    if over:
        assert outcome.rule == "file-too-large" and outcome.field == "limits.max_file_bytes"


# -- the database: files copied while counted ------------------------------------------------


def database_case(tmp_path: Path, limits: dict[str, int], size: int, grow: int = 0, sparse: bool = False) -> Any:
    db = tmp_path / "vendor.db"
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, fichier TEXT, statut TEXT, erreur TEXT);")
        conn.execute("INSERT INTO t VALUES (1, 'a.pdf', 'NOUVEAU', NULL)")
    (tmp_path / "pdf").mkdir()
    with open(tmp_path / "pdf" / "a.pdf", "wb") as out:
        if sparse:
            out.truncate(size)
        else:
            out.write(b"x" * size)
    config = DatabaseInboundConfig.model_validate(
        {
            "type": "database",
            "url": f"sqlite:///{db}",
            "table": "t",
            "key": "id",
            "select": {"state": {"column": "statut", "ready": ["NOUVEAU"]}},
            "files": ["fichier"],
            "files_dir": str(tmp_path / "pdf"),
            "outcome": {"columns": {"state": "statut", "error": "erreur"}},
            "work_dir": str(tmp_path / "work"),
            "limits": limits,
        }
    )
    source = DatabaseInbound("delib", config, None)

    def take() -> tuple[Claimed | None, tuple[Any, ...]]:
        [candidate] = source.list_ready()
        claimed = source.claim(candidate)
        with sqlite3.connect(db) as conn:
            return claimed, tuple(conn.execute("SELECT statut, erreur FROM t").fetchone())

    return source, take


DATABASE = {
    "file-at-the-limit": ({"max_file_bytes": 4096}, 4096, 0, False, None),
    "file-one-byte-over": ({"max_file_bytes": 4096}, 4097, 0, False, "file-too-large"),
    "file-grows-while-copied": ({"max_file_bytes": 2 * MIB}, MIB, 3 * MIB, False, "file-too-large"),
    "sparse-3-gib": ({}, 3 * GIB, 0, True, "file-too-large"),
    "zero-byte-file": ({}, 0, 0, False, None),
}


@pytest.mark.parametrize("case", list(DATABASE))
def test_a_database_row_s_file_is_taken_or_the_row_ends_in_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    limits, size, grow, sparse, rule = DATABASE[case]
    source, take = database_case(tmp_path, limits, size, sparse=sparse)
    if grow:
        copy = database_inbound.atomic_write

        def growing(target: Path, data: bytes | None = None, **options: Any) -> None:
            if options.get("source") is not None:
                with open(options["source"], "ab") as more:
                    more.write(b"y" * grow)
            copy(target, data, **options)

        monkeypatch.setattr(database_inbound, "atomic_write", growing)
    try:
        claimed, (state, error) = attempt(
            FAMILY,
            f"database/{case}",
            take,
            lost=lambda result: result[0] is None and result[1][0] != "ERROR",
            shown=lambda result: f"{result[1][0]}: {result[1][1] or ''}"[:140],
        )
    finally:
        source.close()
    assert (claimed is None) == (rule is not None), error
    if rule is not None:
        assert state == "ERROR" and f"[{rule}]" in error and ": limits." in error, error
    assert (tmp_path / "pdf" / "a.pdf").is_file()  # the vendor's file is never touched


# -- room left where the bundle is copied ------------------------------------------------------

ROOM = {  # free bytes on the file system, the bundle's size 500, min_free_bytes 1000
    "free-exactly-size-plus-min-free": (1500, True),
    "free-one-byte-short": (1499, False),
    "free-nothing": (0, False),
    "free-plenty": (10 * GIB, True),
}


@pytest.mark.parametrize("case", list(ROOM))
def test_too_little_room_leaves_the_bundle_where_it_was_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    free, taken_in = ROOM[case]
    spool = tmp_path / "spool"
    spool.mkdir()
    take = folder_case(tmp_path, {"min_free_bytes": 1000}, {"a.pdf": 500 - 20}, spool=spool)  # a 20-byte sidecar
    monkeypatch.setattr(_limits.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(20 * GIB, 0, free))
    outcome = attempt(FAMILY, f"room/{case}", take, lost=lost_from({"a.json", "a.pdf"}), shown=shown)
    assert isinstance(outcome, Taken) == taken_in, outcome
    if not taken_in:
        assert outcome.rule == "spool-full" and outcome.field == "limits.min_free_bytes"
        assert sorted(p.name for p in (tmp_path / "drop").iterdir() if p.is_file()) == ["a.json", "a.pdf"]
