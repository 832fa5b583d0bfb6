"""Pickup from a vendor's SFTP outbox on OpenSSH's sshd: readiness, claim, commit, rollback, replies,
what was consumed (remembered, cached, forgotten)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bus.connector import InboundContext
from bus.errors import TransientError
from connectors.sftp_inbound import CONSUMED, MANIFEST, SftpInbound, SftpInboundConfig
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration


def _members(name: str, data: bytes) -> list[str]:
    return list(json.loads(data).get("files", []))


def source(sshd: SshServer, tmp_path: Path, folder: str, **extra: object) -> SftpInbound:
    outbox = sshd.root / folder
    outbox.mkdir(parents=True, exist_ok=True)
    config = SftpInboundConfig.model_validate({
        "type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user, "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts), "path": str(outbox), "local_work_dir": str(tmp_path / "local"),
        "timeout": "5s", **extra,
    })
    return SftpInbound("finances", config, InboundContext(bundle_members=_members))


def drop_bundle(folder: Path, name: str, files: dict[str, bytes], age: float = 60.0) -> None:
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / name).write_text(json.dumps({"files": list(files)}))
    past = time.time() - age
    for file_name in [name, *files]:
        os.utime(folder / file_name, (past, past))


def test_a_bundle_is_claimed_downloaded_and_committed_to_done(sshd: SshServer, tmp_path: Path) -> None:
    # Given a bundle in the outbox
    vendor = source(sshd, tmp_path, "commit", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "commit"
    drop_bundle(outbox, "a.json", {"a.pdf": b"%PDF-1.4 a" * 1000})
    try:
        # When listed and claimed
        [candidate] = vendor.list_ready()
        assert candidate.key == "a.json" and candidate.members == ("a.pdf",)
        claimed = vendor.claim(candidate)
        assert claimed is not None and list(claimed.files) == ["a.json", "a.pdf"]
        # Then it left the outbox for the remote work folder and sits locally, whole
        assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == []
        assert claimed.files["a.pdf"].read_bytes() == b"%PDF-1.4 a" * 1000
        assert vendor.tag(claimed, "document-1").ref == "document-1"
        # When committed, Then it is in done/, remembered, and nothing is left behind
        vendor.commit(claimed)
        assert sorted(p.name for p in (outbox / "done").iterdir()) == ["a.json", "a.pdf"]
        assert list((outbox / ".hent-work").iterdir()) == [] and list(vendor.claims_dir.iterdir()) == []
        consumed = [json.loads(line) for line in (vendor.local_dir / CONSUMED).read_text().splitlines()]
        assert {r["path"] for r in consumed} == {str(outbox / "a.json"), str(outbox / "a.pdf")}
        # and the same file put back unchanged is not claimed again
        os.replace(outbox / "done" / "a.json", outbox / "a.json")
        assert vendor.list_ready() == []
    finally:
        vendor.close()


def test_rollback_moves_to_error_with_a_note(sshd: SshServer, tmp_path: Path) -> None:
    vendor = source(sshd, tmp_path, "rollback", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "rollback"
    try:
        for reason in ("first", "second"):
            drop_bundle(outbox, "a.json", {"a.pdf": b"%PDF"})
            claimed = vendor.claim(vendor.list_ready()[0])
            assert claimed is not None
            vendor.rollback(claimed, f"a.json: {reason} [numero-interne]")
        error = outbox / "error"
        assert sorted(p.name for p in error.iterdir()) == [
            "a.json", "a.json.1", "a.json.1.error.txt", "a.json.error.txt", "a.pdf", "a.pdf.1"]
        assert (error / "a.json.error.txt").read_text() == "a.json: first [numero-interne]\n"
        assert (error / "a.json.1.error.txt").read_text() == "a.json: second [numero-interne]\n"
    finally:
        vendor.close()


def test_replies_are_written_remotely_numbered_and_never_overwritten(sshd: SshServer, tmp_path: Path) -> None:
    vendor = source(sshd, tmp_path, "replies")
    try:
        assert vendor.reply("deliberation-42.json", None, None, {"state": "FAILED"}) == ["deliberation-42.1.json"]
        written = vendor.reply("deliberation-42.json", "1-2", b"<ARActe/>", {"state": "ACKNOWLEDGED"})
        assert written == ["deliberation-42.2.1-2.xml", "deliberation-42.2.json"]
        replies = sshd.root / "replies" / "replies"
        assert sorted(p.name for p in replies.iterdir()) == [
            "deliberation-42.1.json", "deliberation-42.2.1-2.xml", "deliberation-42.2.json"]
        assert json.loads((replies / "deliberation-42.1.json").read_text()) == {"state": "FAILED"}
        assert (replies / "deliberation-42.2.1-2.xml").read_bytes() == b"<ARActe/>"
    finally:
        vendor.close()


def test_a_reply_with_an_id_written_again_after_a_crash_is_written_once(sshd: SshServer, tmp_path: Path) -> None:
    # Given an acknowledgment written to the vendor's replies folder under its id
    vendor = source(sshd, tmp_path, "replies-once")
    summary = {"state": "ACKNOWLEDGED", "reply_id": "d1:ACKNOWLEDGED:t"}
    replies = sshd.root / "replies-once" / "replies"
    try:
        written = vendor.reply("deliberation-7.json", "1-2", b"<ARActe/>", summary)
        assert written == ["deliberation-7.1.1-2.xml", "deliberation-7.1.json"]
        # When the bus, killed before its ledger knew, writes it again
        # Then nothing is written twice; another reply takes the next number
        assert vendor.reply("deliberation-7.json", "1-2", b"<ARActe/>", summary) == []
        assert vendor.reply("deliberation-7.json", None, None, {"state": "ACKNOWLEDGED", "reply_id": "d1:receipts"}) \
            == ["deliberation-7.2.json"]
        # and one cut short (its claim holding the id, its message written, no summary) is finished under its number
        (replies / ".deliberation-8.1.claim").write_bytes(b"d2:ACKNOWLEDGED:t")
        (replies / "deliberation-8.1.1-2.xml").write_bytes(b"<ARActe/>")
        finished = vendor.reply("deliberation-8.json", "1-2", b"<ARActe/>",
                                {"state": "ACKNOWLEDGED", "reply_id": "d2:ACKNOWLEDGED:t"})
        assert finished == ["deliberation-8.1.1-2.xml", "deliberation-8.1.json"]
        assert sorted(p.name for p in replies.iterdir()) == [
            "deliberation-7.1.1-2.xml", "deliberation-7.1.json", "deliberation-7.2.json",
            "deliberation-8.1.1-2.xml", "deliberation-8.1.json"]
    finally:
        vendor.close()


def test_a_file_written_slowly_is_not_ready_until_its_size_holds(sshd: SshServer, tmp_path: Path) -> None:
    # Given a sidecar whose PDF another writer is still appending to, in chunks
    vendor = source(sshd, tmp_path, "slow", ready={"min_age": 0, "stable": True})
    outbox = sshd.root / "slow"
    (outbox / "a.json").write_text(json.dumps({"files": ["a.pdf"]}))
    (outbox / "a.pdf").write_bytes(b"%PDF")
    finished = threading.Event()

    def write_slowly() -> None:
        with open(outbox / "a.pdf", "ab") as pdf:
            for _ in range(8):
                time.sleep(0.1)
                pdf.write(b"x" * 65536)
                pdf.flush()
        finished.set()

    writer = threading.Thread(target=write_slowly)
    writer.start()
    try:
        # When polled while it grows, Then nothing is ready
        polls = 0
        while not finished.is_set():
            assert vendor.list_ready() == []
            polls += 1
            time.sleep(0.3)
        assert polls >= 2
        writer.join()
        # Then once it holds still between two polls, it is, whole
        [candidate] = vendor.list_ready() or vendor.list_ready()  # the first poll may see the final size
        claimed = vendor.claim(candidate)
        assert claimed is not None and claimed.files["a.pdf"].stat().st_size == 4 + 8 * 65536
    finally:
        writer.join()
        vendor.close()


def test_a_file_uploaded_with_openssh_s_sftp_client_is_picked_up(sshd: SshServer, tmp_path: Path) -> None:
    # Given a bundle put by OpenSSH's sftp command-line client, as back-office software does
    vendor = source(sshd, tmp_path, "cli", ready={"min_age": 0, "stable": True})
    local = tmp_path / "export"
    local.mkdir()
    (local / "b.pdf").write_bytes(b"%PDF-1.4 b")
    (local / "b.json").write_text(json.dumps({"files": ["b.pdf"]}))
    batch = tmp_path / "batch"
    batch.write_text(f"cd {sshd.root / 'cli'}\nput {local / 'b.pdf'}\nput {local / 'b.json'}\n")
    subprocess.run(
        ["sftp", "-b", str(batch), "-i", str(sshd.key_file), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-P", str(sshd.port), f"{sshd.user}@127.0.0.1"],
        check=True, capture_output=True, timeout=20,
    )
    try:
        # When polled twice (sizes held), Then it is claimed with its PDF
        assert vendor.list_ready() == []
        [candidate] = vendor.list_ready()
        claimed = vendor.claim(candidate)
        assert claimed is not None and claimed.files["b.pdf"].read_bytes() == b"%PDF-1.4 b"
        vendor.commit(claimed)
    finally:
        vendor.close()


def test_recover_finds_a_claim_the_bus_was_killed_after_downloading(sshd: SshServer, tmp_path: Path) -> None:
    # Given a claim downloaded and tagged, then the bus killed before its commit
    vendor = source(sshd, tmp_path, "recover", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "recover"
    drop_bundle(outbox, "a.json", {"a.pdf": b"%PDF"})
    try:
        claimed = vendor.claim(vendor.list_ready()[0])
        assert claimed is not None
        vendor.tag(claimed, "document-7")
    finally:
        vendor.close()
    restarted = source(sshd, tmp_path, "recover", ready={"min_age": 0, "stable": False})
    try:
        # When restarted, Then the claim comes back with its document, and nothing is ready twice
        assert restarted.list_ready() == []
        [again] = restarted.recover()
        assert again.ref == "document-7" and set(again.files) == {"a.json", "a.pdf"}
        assert (again.sidecar.parent / MANIFEST).is_file()
        restarted.commit(again)
        assert sorted(p.name for p in (outbox / "done").iterdir()) == ["a.json", "a.pdf"]
        assert restarted.recover() == []
    finally:
        restarted.close()


def test_two_pollers_never_both_claim_a_bundle(sshd: SshServer, tmp_path: Path) -> None:
    first = source(sshd, tmp_path / "1", "race", ready={"min_age": 0, "stable": False})
    second = source(sshd, tmp_path / "2", "race", ready={"min_age": 0, "stable": False})
    drop_bundle(sshd.root / "race", "a.json", {})
    try:
        candidate = first.list_ready()[0]
        assert first.claim(candidate) is not None
        assert second.claim(candidate) is None
        assert len(list((sshd.root / "race" / ".hent-work").iterdir())) == 1
        assert list(second.claims_dir.iterdir()) == []
    finally:
        first.close()
        second.close()


DAY = 86400.0


def remembered(vendor: SftpInbound) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (vendor.local_dir / CONSUMED).read_text().splitlines()]


def entry(path: Path, *, consumed_at: float | None, size: int = 2, mtime: int = 1_700_000_000) -> dict[str, object]:
    record: dict[str, object] = {"path": str(path), "size": size, "mtime": mtime, "sha256": "0" * 64}
    if consumed_at is not None:
        record["consumed_at"] = consumed_at
    return record


def write_consumed(vendor: SftpInbound, records: list[dict[str, object]]) -> Path:
    vendor.local_dir.mkdir(parents=True, exist_ok=True)
    path = vendor.local_dir / CONSUMED
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_an_old_entry_whose_file_left_the_outbox_is_forgotten_young_or_present_ones_stay(
    sshd: SshServer, tmp_path: Path
) -> None:
    # Given consumed.jsonl remembering for a day: a file consumed two days ago and gone, one
    # consumed forty days ago and still in the outbox (same size and mtime), one consumed an hour ago
    vendor = source(sshd, tmp_path, "forget", ready={"min_age": 0, "stable": False}, remember="1d")
    outbox = sshd.root / "forget"
    drop_bundle(outbox, "still.json", {})
    still = outbox / "still.json"
    now = time.time()
    gone = entry(outbox / "gone.json", consumed_at=now - 2 * DAY)
    kept = entry(still, consumed_at=now - 40 * DAY, size=still.stat().st_size, mtime=int(still.stat().st_mtime))
    young = entry(outbox / "young.json", consumed_at=now - 3600)
    consumed = write_consumed(vendor, [gone, kept, young])
    try:
        # When polled, Then the file still there is not claimed, and only the gone one is forgotten
        assert vendor.list_ready() == []
        assert remembered(vendor) == [kept, young]
        # and a poll with nothing to forget leaves the file alone (no rewrite)
        inode = consumed.stat().st_ino
        assert vendor.list_ready() == []
        assert consumed.stat().st_ino == inode and remembered(vendor) == [kept, young]
        # When the old file finally leaves the outbox, Then the next poll forgets it too
        still.unlink()
        assert vendor.list_ready() == []
        assert remembered(vendor) == [young]
    finally:
        vendor.close()


def test_entries_without_a_consumption_time_count_from_the_last_change_of_consumed_jsonl(
    sshd: SshServer, tmp_path: Path
) -> None:
    # Given entries written before consumed_at existed, for files gone from the outbox
    vendor = source(sshd, tmp_path, "legacy", remember="30d")
    outbox = sshd.root / "legacy"
    records = [entry(outbox / "a.json", consumed_at=None), entry(outbox / "b.json", consumed_at=None)]
    consumed = write_consumed(vendor, records)
    try:
        # When consumed.jsonl changed less than `remember` ago, Then they stay, untouched
        assert vendor.list_ready() == []
        assert remembered(vendor) == records
        # When it last changed 40 days ago, Then they are forgotten (a fresh connector reads it again)
        past = time.time() - 40 * DAY
        os.utime(consumed, (past, past))
        restarted = source(sshd, tmp_path, "legacy", remember="30d")
        try:
            assert restarted.list_ready() == []
            assert remembered(restarted) == []
        finally:
            restarted.close()
    finally:
        vendor.close()


def test_a_legacy_entry_kept_by_a_rewrite_gets_the_time_it_was_counted_from(sshd: SshServer, tmp_path: Path) -> None:
    # Given a legacy entry for a file still in the outbox and an old dated one for a gone file
    vendor = source(sshd, tmp_path, "legacy-pin", remember="1d")
    outbox = sshd.root / "legacy-pin"
    drop_bundle(outbox, "here.json", {})
    here = entry(outbox / "here.json", consumed_at=None)
    consumed = write_consumed(vendor, [here, entry(outbox / "gone.json", consumed_at=time.time() - 2 * DAY)])
    past = time.time() - 10 * DAY
    os.utime(consumed, (past, past))
    try:
        # When the gone one is forgotten, Then the legacy one stays, dated from consumed.jsonl's old mtime
        assert vendor.list_ready() == []
        [kept] = remembered(vendor)
        assert kept == {**here, "consumed_at": pytest.approx(past, abs=0.01)}
    finally:
        vendor.close()


def test_consumed_jsonl_is_read_again_only_when_it_changed(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = source(sshd, tmp_path, "cache", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "cache"
    consumed = write_consumed(vendor, [entry(outbox / "old.json", consumed_at=time.time())])
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counting(path: Path) -> bytes:
        if path.name == CONSUMED:
            reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    try:
        # Given three polls of an unchanged consumed.jsonl, Then it was read once
        for _ in range(3):
            assert vendor.list_ready() == []
        assert len(reads) == 1
        # When a bundle is committed (an append by the connector itself), Then it is not read again,
        # and the bundle put back is still known
        drop_bundle(outbox, "a.json", {})
        claimed = vendor.claim(vendor.list_ready()[0])
        assert claimed is not None
        vendor.commit(claimed)
        os.replace(outbox / "done" / "a.json", outbox / "a.json")
        assert vendor.list_ready() == [] and len(reads) == 1
        assert [r["path"] for r in remembered(vendor)] == [str(outbox / "old.json"), str(outbox / "a.json")]
        # When another hand changes it, Then the next poll reads it again
        with open(consumed, "a") as out:
            out.write(json.dumps(entry(outbox / "other.json", consumed_at=time.time())) + "\n")
        assert vendor.list_ready() == [] and len(reads) == 2
    finally:
        vendor.close()


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_entry_starts_on_its_own_line(
    sshd: SshServer, tmp_path: Path
) -> None:
    vendor = source(sshd, tmp_path, "torn", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "torn"
    consumed = write_consumed(vendor, [entry(outbox / "old.json", consumed_at=time.time())])
    with open(consumed, "a") as out:
        out.write('{"path": "/cut')
    drop_bundle(outbox, "a.json", {})
    try:
        claimed = vendor.claim(vendor.list_ready()[0])
        assert claimed is not None
        vendor.commit(claimed)
        os.replace(outbox / "done" / "a.json", outbox / "a.json")
        restarted = source(sshd, tmp_path, "torn", ready={"min_age": 0, "stable": False})
        try:
            assert restarted.list_ready() == []  # a.json is remembered despite the torn line before it
        finally:
            restarted.close()
    finally:
        vendor.close()


def test_a_commit_tried_again_after_its_remote_move_failed_remembers_each_file_once(
    sshd: SshServer, tmp_path: Path
) -> None:
    # Given a claimed bundle whose done/ folder is, by mistake, a file
    vendor = source(sshd, tmp_path, "broken-done", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "broken-done"
    drop_bundle(outbox, "a.json", {"a.pdf": b"%PDF"})
    try:
        claimed = vendor.claim(vendor.list_ready()[0])
        assert claimed is not None
        (outbox / "done").rmdir()
        (outbox / "done").write_text("not a folder")
        # When its commit fails twice, Then each file is remembered once, and the bundle waits in .hent-work
        for _ in range(2):
            with pytest.raises(TransientError):
                vendor.commit(claimed)
        assert sorted(r["path"] for r in remembered(vendor)) == [str(outbox / "a.json"), str(outbox / "a.pdf")]
        assert [p.name for p in (outbox / ".hent-work").iterdir()] == [claimed.sidecar.parent.name]
        # When done/ is a folder again, Then the commit goes through, still remembering each file once
        (outbox / "done").unlink()
        (outbox / "done").mkdir()
        vendor.commit(claimed)
        assert sorted(p.name for p in (outbox / "done").iterdir()) == ["a.json", "a.pdf"]
        assert len(remembered(vendor)) == 2
    finally:
        vendor.close()


def test_a_large_file_is_downloaded_with_memory_flat(sshd: SshServer, tmp_path: Path) -> None:
    import hashlib
    import tracemalloc

    # Given a 64 MiB bundle member in the outbox
    vendor = source(sshd, tmp_path, "large", ready={"min_age": 0, "stable": False})
    outbox = sshd.root / "large"
    data = os.urandom(64 << 20)
    drop_bundle(outbox, "big.json", {"big.bin": data})
    try:
        [candidate] = vendor.list_ready()
        # When it is claimed (downloaded), Then Python never holds more than a few MiB of it
        tracemalloc.start()
        try:
            claimed = vendor.claim(candidate)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert claimed is not None
        assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB while downloading 64 MiB"
        assert hashlib.sha256(claimed.files["big.bin"].read_bytes()).digest() == hashlib.sha256(data).digest()
    finally:
        vendor.close()
