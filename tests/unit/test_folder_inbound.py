"""The drop-folder source: readiness, claim, commit, rollback, recovery, replies."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus.connector import InboundContext
from connectors.folder_inbound import MANIFEST, FolderInbound, FolderInboundConfig


def _members(name: str, data: bytes) -> list[str]:
    return list(json.loads(data).get("files", []))


def make(tmp_path: Path, **options: object) -> FolderInbound:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    config = FolderInboundConfig.model_validate({"type": "folder", "path": str(drop), **options})
    return FolderInbound("rh", config, InboundContext(bundle_members=_members))


def drop_bundle(folder: Path, name: str, files: dict[str, bytes], age: float = 60.0) -> None:
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / name).write_text(json.dumps({"files": list(files)}))
    past = time.time() - age
    for file_name in [name, *files]:
        os.utime(folder / file_name, (past, past))


def test_a_bundle_is_ready_only_once_its_sizes_held_still_between_two_polls(tmp_path: Path) -> None:
    # Given a bundle old enough
    source = make(tmp_path)
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF-1.4 a"})
    # When polled twice, Then it is ready at the second poll only
    assert source.list_ready() == []
    [candidate] = source.list_ready()
    assert candidate.key == "a.json" and candidate.members == ("a.pdf",)


def test_a_growing_member_holds_the_bundle_back(tmp_path: Path) -> None:
    source = make(tmp_path)
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF-1.4 a"})
    source.list_ready()
    with open(source.config.path / "a.pdf", "ab") as handle:  # still being written
        handle.write(b"more")
    os.utime(source.config.path / "a.pdf", (time.time() - 60, time.time() - 60))
    assert source.list_ready() == []
    assert [c.key for c in source.list_ready()] == ["a.json"]


def test_young_files_wait_for_min_age(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": "1h", "stable": False})
    drop_bundle(source.config.path, "a.json", {}, age=10)
    assert source.list_ready() == []


def test_done_file_mode_takes_only_marked_bundles_and_claims_the_marker(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"done_file": ".done", "min_age": 0})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF"}, age=0)
    drop_bundle(source.config.path, "b.json", {"b.pdf": b"%PDF"}, age=0)
    (source.config.path / "b.json.done").write_text("")
    [candidate] = source.list_ready()
    assert candidate.key == "b.json"
    claimed = source.claim(candidate)
    assert claimed is not None and set(claimed.files) == {"b.json", "b.pdf"}
    assert not (source.config.path / "b.json.done").exists()


def test_claim_moves_the_whole_bundle_and_commit_moves_it_to_done(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a", "b.pdf": b"%PDF b"})
    [candidate] = source.list_ready()
    claimed = source.claim(candidate)
    assert claimed is not None
    assert sorted(p.name for p in source.config.path.iterdir() if p.is_file()) == []
    assert claimed.files["a.pdf"].read_bytes() == b"%PDF a"
    source.commit(claimed)
    assert sorted(p.name for p in (source.config.path / "done").iterdir()) == ["a.json", "a.pdf", "b.pdf"]
    assert list((source.config.path / ".hent-work").iterdir()) == []


def test_rollback_moves_to_error_with_a_note_saying_what_to_fix(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None
    source.rollback(claimed, "a.json: numero_interne: '_A_' ... [numero-interne]")
    error = source.config.path / "error"
    assert sorted(p.name for p in error.iterdir()) == ["a.json", "a.json.error.txt", "a.pdf"]
    assert "[numero-interne]" in (error / "a.json.error.txt").read_text()


def test_a_second_failure_of_the_same_name_does_not_overwrite_the_first(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    for reason in ("first", "second"):
        drop_bundle(source.config.path, "a.json", {})
        claimed = source.claim(source.list_ready()[0])
        assert claimed is not None
        source.rollback(claimed, reason)
    error = source.config.path / "error"
    assert (error / "a.json.error.txt").read_text() == "first\n"
    assert (error / "a.json.1.error.txt").read_text() == "second\n"
    assert (error / "a.json.1").exists()


def test_delete_on_success(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False}, on_success="delete")
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"x"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None
    source.commit(claimed)
    assert list((source.config.path / "done").iterdir()) == []


def test_a_member_named_with_a_path_is_never_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret.pdf"
    secret.write_bytes(b"do not take")
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    (source.config.path / "a.json").write_text(json.dumps({"files": ["../secret.pdf", "/etc/passwd"]}))
    [candidate] = source.list_ready()
    assert candidate.members == ()
    claimed = source.claim(candidate)
    assert claimed is not None and set(claimed.files) == {"a.json"}
    assert secret.exists()


def test_recover_finishes_a_claim_interrupted_after_the_sidecar_moved(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a"})
    # Given a crash right after the manifest and the sidecar moved, before the PDF did
    claim_dir = source.work_dir / "1-crashed"
    claim_dir.mkdir(parents=True)
    manifest = {"key": "a.json", "members": ["a.pdf"], "origin": str(source.config.path)}
    (claim_dir / MANIFEST).write_text(json.dumps(manifest))
    os.replace(source.config.path / "a.json", claim_dir / "a.json")
    # When recovering, Then the whole bundle is claimed
    [claimed] = source.recover()
    assert set(claimed.files) == {"a.json", "a.pdf"}
    assert not (source.config.path / "a.pdf").exists()


def test_recover_forgets_a_claim_that_took_nothing(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {})
    claim_dir = source.work_dir / "1-crashed"
    claim_dir.mkdir(parents=True)
    manifest = {"key": "a.json", "members": [], "origin": str(source.config.path)}
    (claim_dir / MANIFEST).write_text(json.dumps(manifest))
    assert source.recover() == []
    assert not claim_dir.exists()
    assert [c.key for c in source.list_ready()] == ["a.json"]


def test_two_pollers_never_both_claim_a_bundle(tmp_path: Path) -> None:
    first = make(tmp_path, ready={"min_age": 0, "stable": False})
    second = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(first.config.path, "a.json", {})
    candidate = first.list_ready()[0]
    assert first.claim(candidate) is not None
    assert second.claim(candidate) is None


def test_replies_are_numbered_and_never_overwritten(tmp_path: Path) -> None:
    source = make(tmp_path)
    assert source.reply("deliberation-42.json", None, None, {"state": "FAILED"}) == ["deliberation-42.1.json"]
    written = source.reply("deliberation-42.json", "1-2", b"<ARActe/>", {"state": "ACKNOWLEDGED"})
    assert written == ["deliberation-42.2.1-2.xml", "deliberation-42.2.json"]
    replies = source.config.path / "replies"
    assert json.loads((replies / "deliberation-42.1.json").read_text()) == {"state": "FAILED"}
    assert (replies / "deliberation-42.2.1-2.xml").read_bytes() == b"<ARActe/>"


def test_unknown_option_is_refused() -> None:
    with pytest.raises(Exception, match="patern"):
        FolderInboundConfig.model_validate({"type": "folder", "path": "/x", "patern": "*.json"})


def test_a_commit_interrupted_before_the_sidecar_moved_is_finished_after_recovery(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a", "b.pdf": b"%PDF b"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None
    # Given a crash after the PDFs went to done/ but before the sidecar did
    os.replace(claimed.files["a.pdf"], source.done_dir / "a.pdf")
    # When recovering, Then the claim is still there, and committing it finishes the move
    [again] = source.recover()
    source.commit(again)
    assert sorted(p.name for p in source.done_dir.iterdir()) == ["a.json", "a.pdf", "b.pdf"]
    assert list(source.work_dir.iterdir()) == []


def test_a_commit_interrupted_after_the_sidecar_moved_leaves_nothing_behind(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None
    for path in source._claimed_files(claimed):  # every file moved, the manifest not yet removed
        os.replace(path, source.done_dir / path.name)
    assert source.recover() == []
    assert list(source.work_dir.iterdir()) == []


def test_leftover_claim_folders_are_removed_but_not_one_being_prepared(tmp_path: Path) -> None:
    source = make(tmp_path)
    source._ensure_dirs()
    released = source.work_dir / "1-killed-between-manifest-and-rmdir"
    released.mkdir()
    killed = source.work_dir / ".2-killed-before-it-began"
    killed.mkdir()
    (killed / MANIFEST).write_text("{}")
    os.utime(killed, (time.time() - 3600, time.time() - 3600))
    preparing = source.work_dir / ".3-another-poller-preparing"
    preparing.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().replace(".", "_")
    abandoned = source.work_dir / f".4-x.{host}.{dead.stdout.strip()}"  # its process is gone
    abandoned.mkdir()
    (abandoned / f".{MANIFEST}.{dead.stdout.strip()}.tmp").write_text("{}")  # killed while writing it
    assert source.recover() == []
    assert [p.name for p in source.work_dir.iterdir()] == [".3-another-poller-preparing"]


def test_a_tag_is_kept_with_the_claim_and_given_back_by_recover(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None and claimed.ref is None
    tagged = source.tag(claimed, "document-1")
    assert tagged.ref == "document-1"
    # the claim folder renamed (no file written), the files' paths with it
    assert tagged.sidecar.parent.name == f"{claimed.sidecar.parent.name}+document-1"
    assert all(path.is_file() and path.parent == tagged.sidecar.parent for path in tagged.files.values())
    [recovered] = source.recover()
    assert recovered.ref == "document-1" and set(recovered.files) == {"a.json", "a.pdf"}
    source.commit(recovered)
    source.settled()
    assert list(source.work_dir.iterdir()) == []
    assert sorted(p.name for p in source.done_dir.iterdir()) == ["a.json", "a.pdf"]


def test_a_tag_an_older_bus_wrote_in_the_manifest_is_still_read(tmp_path: Path) -> None:
    source = make(tmp_path, ready={"min_age": 0, "stable": False})
    drop_bundle(source.config.path, "a.json", {"a.pdf": b"%PDF a"})
    claimed = source.claim(source.list_ready()[0])
    assert claimed is not None
    manifest = claimed.sidecar.parent / MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "ref": "document-9"}))
    [recovered] = source.recover()
    assert recovered.ref == "document-9"


def test_a_claim_folder_left_with_a_killed_manifest_rewrite_is_removed(tmp_path: Path) -> None:
    source = make(tmp_path)
    source._ensure_dirs()
    leftover = source.work_dir / "1-committed"
    leftover.mkdir()
    (leftover / f".{MANIFEST}.4242.tmp").write_bytes(b"")
    assert source.recover() == []
    assert list(source.work_dir.iterdir()) == []
