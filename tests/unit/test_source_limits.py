"""Size limits of the sources (connectors/_limits.py): a bundle over a limit is refused before it is
copied, naming the file, the option and the rule, its files kept; too little room leaves it where
it was dropped (spool-full)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bus import metrics
from bus.connector import InboundContext
from bus.errors import DocumentError, TransientError
from connectors import _limits, database_inbound
from connectors._limits import GIB, Budget, SourceLimits
from connectors.database_inbound import DatabaseInbound, DatabaseInboundConfig
from connectors.folder_inbound import FolderInbound, FolderInboundConfig


def _members(name: str, data: bytes) -> list[str]:
    return list(json.loads(data).get("files", []))


@dataclass
class SpoolContext(InboundContext):
    """What the runtime lends a source, with the spool's folder (see connectors._limits.room_folders)."""

    spool: Path | None = None


def refused_count(connector: str, rule: str) -> float:
    """``hent_bundles_refused_total`` of ``connector`` and ``rule`` (0 before the first)."""
    labels = {"connector": connector, "rule": rule}
    return metrics.REGISTRY.get_sample_value("hent_bundles_refused_total", labels) or 0.0


def folder_source(tmp_path: Path, limits: dict[str, int], context: InboundContext | None = None) -> FolderInbound:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    config = FolderInboundConfig.model_validate(
        {"type": "folder", "path": str(drop), "ready": {"min_age": 0, "stable": False}, "limits": limits}
    )
    return FolderInbound("rh", config, context or InboundContext(bundle_members=_members))


def drop_bundle(folder: Path, name: str, files: dict[str, bytes]) -> dict[str, bytes]:
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / name).write_text(json.dumps({"files": list(files)}))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def low_disk(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """The file systems report ``free`` bytes free."""
    monkeypatch.setattr(_limits.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 * GIB, 0, free))


# -- the options -----------------------------------------------------------------------------


def test_the_defaults_let_a_one_gib_file_through_and_keep_a_gib_free() -> None:
    limits = SourceLimits()
    assert (limits.max_file_bytes, limits.max_document_bytes, limits.max_files, limits.min_free_bytes) == (
        1 << 30,
        2 << 30,
        1000,
        1 << 30,
    )
    Budget(limits, "sftp", "relay.bin").declare({"relay.bin": 1 << 30})  # bench/sftp_memory.py's file


def test_every_source_has_the_limits_block_and_refuses_unknown_or_zero_limits(tmp_path: Path) -> None:
    assert FolderInboundConfig.model_validate({"type": "folder", "path": str(tmp_path)}).limits == SourceLimits()
    with pytest.raises(ValidationError, match="max_file_byte"):
        FolderInboundConfig.model_validate({"type": "folder", "path": str(tmp_path), "limits": {"max_file_byte": 1}})
    with pytest.raises(ValidationError, match="greater than 0"):
        FolderInboundConfig.model_validate({"type": "folder", "path": str(tmp_path), "limits": {"max_files": 0}})


def test_a_limit_error_names_the_file_the_option_and_the_rule() -> None:
    budget = Budget(SourceLimits(max_file_bytes=10), "rh", "a.json")
    with pytest.raises(DocumentError) as caught:
        budget.declare({"a.json": 5, "annexe.pdf": 11})
    error = caught.value
    assert (error.path, error.field, error.rule, error.connector) == (
        "annexe.pdf",
        "limits.max_file_bytes",
        "file-too-large",
        "rh",
    )
    assert str(error) == (
        "annexe.pdf: limits.max_file_bytes: connector 'rh': annexe.pdf of bundle a.json is 11 bytes, "
        "more than limits.max_file_bytes (10 bytes): split or compress it, or raise the limit "
        "[file-too-large]"
    )


# -- the drop folder -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "files", "field", "rule", "named"),
    [
        ({"max_file_bytes": 100}, {"a.pdf": b"x" * 101}, "limits.max_file_bytes", "file-too-large", "a.pdf"),
        (
            {"max_document_bytes": 150},
            {"a.pdf": b"x" * 80, "b.pdf": b"x" * 80},
            "limits.max_document_bytes",
            "document-too-large",
            "b.pdf",
        ),
        ({"max_files": 2}, {"a.pdf": b"a", "b.pdf": b"b"}, "limits.max_files", "too-many-files", "b.pdf"),
    ],
)
def test_a_dropped_bundle_over_a_limit_goes_to_error_with_its_note_and_a_reply(
    tmp_path: Path, limits: dict[str, int], files: dict[str, bytes], field: str, rule: str, named: str
) -> None:
    # Given a bundle over a limit
    source = folder_source(tmp_path, limits)
    dropped = drop_bundle(source.config.path, "a.json", files)
    refused = refused_count("rh", rule)
    # When it is claimed, Then it is not taken, and the operators' metrics count it
    [candidate] = source.list_ready()
    assert source.claim(candidate) is None
    assert refused_count("rh", rule) == refused + 1
    # and its files are in error/, as dropped, beside a note naming the file, the option and the rule
    error = source.config.path / "error"
    kept = {p.name: p.read_bytes() for p in error.iterdir() if not p.name.endswith(".error.txt")}
    assert kept == dropped
    note = (error / "a.json.error.txt").read_text()
    assert f"{named}: {field}: " in note and f"[{rule}]" in note and "drop the corrected bundle again" in note
    # and the reply says so too
    reply = json.loads((source.config.path / "replies" / "a.1.json").read_text())
    assert (reply["state"], reply["file"], reply["field"], reply["rule"]) == ("FAILED", named, field, rule)
    assert not list(source.work_dir.iterdir())


def test_a_bundle_at_exactly_its_limits_is_taken(tmp_path: Path) -> None:
    source = folder_source(tmp_path, {"max_file_bytes": 100, "max_document_bytes": 100 + 20, "max_files": 2})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"x" * 100})
    assert len((source.config.path / "a.json").read_bytes()) == 20
    [candidate] = source.list_ready()
    claimed = source.claim(candidate)
    assert claimed is not None and set(claimed.files) == {"a.json", "a.pdf"}


def test_a_file_that_grew_after_the_listing_is_measured_again_once_claimed(tmp_path: Path) -> None:
    source = folder_source(tmp_path, {"max_file_bytes": 100})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"x" * 50})
    [candidate] = source.list_ready()
    with open(source.config.path / "a.pdf", "ab") as more:
        more.write(b"y" * 51)
    assert source.claim(candidate) is None
    assert (source.config.path / "error" / "a.pdf").stat().st_size == 101


def test_a_refused_bundle_left_mid_claim_by_a_crash_is_refused_by_recover(tmp_path: Path) -> None:
    source = folder_source(tmp_path, {"max_file_bytes": 10})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"x" * 11})
    # a claim interrupted after the sidecar moved: its manifest and sidecar in the work folder
    claim_dir = source.work_dir / "1-crashed"
    claim_dir.mkdir(parents=True)
    (claim_dir / ".claim.json").write_text(
        json.dumps({"key": "a.json", "members": ["a.pdf"], "origin": str(source.config.path)})
    )
    os.replace(source.config.path / "a.json", claim_dir / "a.json")
    assert source.recover() == []
    assert sorted(p.name for p in (source.config.path / "error").iterdir()) == ["a.json", "a.json.error.txt", "a.pdf"]


def test_no_room_in_the_spool_leaves_the_bundle_where_it_was_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a spool whose file system would keep less than min_free_bytes once the bundle is in
    context = SpoolContext(bundle_members=_members, spool=tmp_path / "spool")
    (tmp_path / "spool").mkdir()
    source = folder_source(tmp_path, {"min_free_bytes": 1000}, context)
    dropped = drop_bundle(source.config.path, "a.json", {"a.pdf": b"x" * 500})
    [candidate] = source.list_ready()
    low_disk(monkeypatch, 1400)
    # When claimed, Then a TransientError naming the spool, and the bundle untouched
    with pytest.raises(TransientError) as caught:
        source.claim(candidate)
    assert caught.value.rule == "spool-full" and caught.value.field == "limits.min_free_bytes"
    assert caught.value.path == str(tmp_path / "spool")
    assert "the bundle waits at the source" in str(caught.value)
    assert {p.name: p.read_bytes() for p in source.config.path.iterdir() if p.is_file()} == dropped
    assert not list(source.work_dir.iterdir())
    # When space comes back, Then it is taken
    low_disk(monkeypatch, 2000)
    assert source.claim(candidate) is not None


def test_a_bundle_over_a_limit_is_refused_even_when_the_spool_has_no_room_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = SpoolContext(bundle_members=_members, spool=tmp_path)
    source = folder_source(tmp_path, {"max_file_bytes": 100}, context)
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"x" * 101})
    [candidate] = source.list_ready()
    low_disk(monkeypatch, 0)
    assert source.claim(candidate) is None  # never copied: it needs no room
    assert (source.config.path / "error" / "a.pdf").is_file()


# -- the database ----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE export_actes (
    id INTEGER PRIMARY KEY, numero TEXT, fichier TEXT, annexe TEXT, statut TEXT, erreur TEXT);
"""


@pytest.fixture
def vendor(tmp_path: Path) -> Iterator[Path]:
    db = tmp_path / "vendor.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    (tmp_path / "pdf").mkdir()
    yield db


def database_source(db: Path, limits: dict[str, int], context: InboundContext | None = None) -> DatabaseInbound:
    config = DatabaseInboundConfig.model_validate(
        {
            "type": "database",
            "url": f"sqlite:///{db}",
            "table": "export_actes",
            "key": "id",
            "select": {"state": {"column": "statut", "ready": ["NOUVEAU"]}},
            "files": ["fichier", "annexe"],
            "files_dir": str(db.parent / "pdf"),
            "outcome": {"columns": {"state": "statut", "error": "erreur"}},
            "work_dir": str(db.parent / "work"),
            "limits": limits,
        }
    )
    return DatabaseInbound("delib", config, context)


def add_row(db: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (db.parent / "pdf" / name).write_bytes(data)
    main, *annex = files
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO export_actes (id, numero, fichier, annexe, statut) VALUES (1, 'DEL-1', ?, ?, 'NOUVEAU')",
            (main, annex[0] if annex else None),
        )


def leftovers(db: Path) -> list[Path]:
    claims = db.parent / "work" / "claims"
    return list(claims.iterdir()) if claims.is_dir() else []


def row(db: Path) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return tuple(conn.execute("SELECT statut, erreur FROM export_actes WHERE id = 1").fetchone())


@pytest.mark.parametrize(
    ("limits", "files", "field", "rule"),
    [
        ({"max_file_bytes": 100}, {"DEL-1.pdf": b"x" * 101}, "limits.max_file_bytes", "file-too-large"),
        ({"max_document_bytes": 150}, {"DEL-1.pdf": b"x" * 100}, "limits.max_document_bytes", "document-too-large"),
        ({"max_files": 2}, {"DEL-1.pdf": b"a", "DEL-1-annexe.pdf": b"b"}, "limits.max_files", "too-many-files"),
    ],
)
def test_a_row_whose_files_break_a_limit_ends_in_error_naming_the_file_option_and_rule(
    vendor: Path, limits: dict[str, int], files: dict[str, bytes], field: str, rule: str
) -> None:
    source = database_source(vendor, limits)
    try:
        add_row(vendor, files)
        refused = refused_count(source.name, rule)
        [candidate] = source.list_ready()
        assert source.claim(candidate) is None
        assert refused_count(source.name, rule) == refused + 1
        state, error = row(vendor)
        assert state == "ERROR" and f"{field}: " in error and f"[{rule}]" in error, error
        assert sorted(p.name for p in (vendor.parent / "pdf").iterdir()) == sorted(files)  # the vendor's, kept
        assert leftovers(vendor) == []
    finally:
        source.close()


def test_a_row_file_growing_while_copied_is_cut_off_at_the_limit(vendor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a file within the limit when the row is claimed, which the vendor still writes
    source = database_source(vendor, {"max_file_bytes": 3 << 20})
    try:
        add_row(vendor, {"DEL-1.pdf": b"x" * (1 << 20)})
        [candidate] = source.list_ready()
        copy = database_inbound.atomic_write

        def growing(target: Path, data: bytes | None = None, **options: Any) -> None:
            if options.get("source") is not None:
                with open(options["source"], "ab") as more:
                    more.write(b"y" * (3 << 20))
            copy(target, data, **options)

        monkeypatch.setattr(database_inbound, "atomic_write", growing)
        # When claimed, Then the copy stops at the limit, nothing of it left, the row in error
        assert source.claim(candidate) is None
        state, error = row(vendor)
        assert state == "ERROR" and "grew past limits.max_file_bytes" in error and "[file-too-large]" in error
        assert leftovers(vendor) == []
    finally:
        source.close()


def test_no_room_leaves_the_row_unclaimed(vendor: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = database_source(vendor, {"min_free_bytes": 1000})
    try:
        add_row(vendor, {"DEL-1.pdf": b"x" * 500})
        [candidate] = source.list_ready()
        low_disk(monkeypatch, 1400)
        with pytest.raises(TransientError) as caught:
            source.claim(candidate)
        assert caught.value.rule == "spool-full" and caught.value.path == str(vendor.parent / "work")
        assert row(vendor) == ("NOUVEAU", None)
        low_disk(monkeypatch, 1 << 20)
        assert source.claim(candidate) is not None and row(vendor) == ("CLAIMED", None)
    finally:
        source.close()


def test_room_is_looked_at_once_per_file_system_even_for_a_folder_not_made_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def usage(path: Any) -> Any:
        asked.append(str(path))
        return shutil._ntuple_diskusage(10 * GIB, 0, 5 * GIB)

    monkeypatch.setattr(_limits.shutil, "disk_usage", usage)
    _limits.room_for(SourceLimits(), "rh", "a.json", GIB, [tmp_path / "not-yet" / "made", tmp_path])
    assert asked == [str(tmp_path)]
