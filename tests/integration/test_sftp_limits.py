"""Size limits of the SFTP source on OpenSSH's sshd: a bundle over a limit goes to error/ with its
note and a reply, never downloaded whole; a file growing while downloaded is cut off at the limit;
too little room leaves the bundle in the outbox (spool-full)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bus import metrics
from bus.connector import InboundContext
from bus.errors import TransientError
from connectors import _limits
from connectors.sftp_inbound import SftpInbound, SftpInboundConfig
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration


def _members(name: str, data: bytes) -> list[str]:
    return list(json.loads(data).get("files", []))


def source(sshd: SshServer, tmp_path: Path, folder: str, **limits: int) -> SftpInbound:
    outbox = sshd.root / folder
    outbox.mkdir(parents=True, exist_ok=True)
    config = SftpInboundConfig.model_validate(
        {
            "type": "sftp",
            "host": sshd.host,
            "port": sshd.port,
            "username": sshd.user,
            "key_file": str(sshd.key_file),
            "known_hosts": str(sshd.known_hosts),
            "path": str(outbox),
            "local_work_dir": str(tmp_path / "local"),
            "timeout": "5s",
            "ready": {"min_age": 0, "stable": False},
            "limits": limits,
        }
    )
    return SftpInbound("finances", config, InboundContext(bundle_members=_members))


def drop_bundle(folder: Path, name: str, files: dict[str, bytes]) -> dict[str, bytes]:
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    (folder / name).write_text(json.dumps({"files": list(files)}))
    past = time.time() - 60
    for file_name in [name, *files]:
        os.utime(folder / file_name, (past, past))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(
    ("limits", "files", "field", "rule", "named"),
    [
        ({"max_file_bytes": 1000}, {"a.pdf": b"x" * 1001}, "limits.max_file_bytes", "file-too-large", "a.pdf"),
        (
            {"max_document_bytes": 1500},
            {"a.pdf": b"x" * 800, "b.pdf": b"x" * 800},
            "limits.max_document_bytes",
            "document-too-large",
            "b.pdf",
        ),
        ({"max_files": 2}, {"a.pdf": b"a", "b.pdf": b"b"}, "limits.max_files", "too-many-files", "b.pdf"),
    ],
)
def test_a_bundle_over_a_limit_goes_to_error_with_its_note_and_a_reply(
    sshd: SshServer,
    tmp_path: Path,
    limits: dict[str, int],
    files: dict[str, bytes],
    field: str,
    rule: str,
    named: str,
) -> None:
    folder = f"limits-{rule}"
    vendor = source(sshd, tmp_path, folder, **limits)
    outbox = sshd.root / folder
    try:
        # Given a bundle over a limit in the outbox
        dropped = drop_bundle(outbox, "a.json", files)
        counted = {"connector": "finances", "rule": rule}
        refused = metrics.REGISTRY.get_sample_value("hent_bundles_refused_total", counted) or 0.0
        # When claimed, Then it is not taken, and the operators' metrics count it
        [candidate] = vendor.list_ready()
        assert vendor.claim(candidate) is None
        assert metrics.REGISTRY.get_sample_value("hent_bundles_refused_total", counted) == refused + 1
        # and its files are in error/ as dropped, beside a note naming the file, the option and the rule
        error = outbox / "error"
        assert {p.name: p.read_bytes() for p in error.iterdir() if not p.name.endswith(".error.txt")} == dropped
        note = (error / "a.json.error.txt").read_text()
        assert f"{named}: {field}: " in note and f"[{rule}]" in note, note
        reply = json.loads((outbox / "replies" / "a.1.json").read_text())
        assert (reply["state"], reply["file"], reply["field"], reply["rule"]) == ("FAILED", named, field, rule)
        # and nothing is left behind, locally or in the remote work folder
        assert list(vendor.claims_dir.iterdir()) == [] and list((outbox / ".hent-work").iterdir()) == []
    finally:
        vendor.close()


def test_a_file_growing_while_downloaded_is_cut_off_at_the_limit(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = source(sshd, tmp_path, "limits-growing", max_file_bytes=1 << 20)
    outbox = sshd.root / "limits-growing"
    try:
        drop_bundle(outbox, "a.json", {"a.pdf": b"x" * 1000})
        [candidate] = vendor.list_ready()
        download = SftpInbound._download

        def growing(self: SftpInbound, sftp: Any, remote: str, local: Path, *rest: Any) -> str:
            if remote.endswith("a.pdf"):  # the vendor still writes it, after the sizes were checked
                with open(outbox / ".hent-work" / Path(remote).parent.name / "a.pdf", "ab") as more:
                    more.write(b"y" * (3 << 20))
            return download(self, sftp, remote, local, *rest)

        monkeypatch.setattr(SftpInbound, "_download", growing)
        assert vendor.claim(candidate) is None
        note = (outbox / "error" / "a.json.error.txt").read_text()
        assert "a.pdf: limits.max_file_bytes: " in note and "grew past limits.max_file_bytes" in note, note
        assert (outbox / "error" / "a.pdf").stat().st_size == 1000 + (3 << 20)  # the vendor's file, whole
        assert list(vendor.claims_dir.iterdir()) == []  # the partial download removed
    finally:
        vendor.close()


def test_no_room_leaves_the_bundle_in_the_outbox(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = source(sshd, tmp_path, "limits-room", min_free_bytes=10_000)
    outbox = sshd.root / "limits-room"
    try:
        dropped = drop_bundle(outbox, "a.json", {"a.pdf": b"x" * 5000})
        [candidate] = vendor.list_ready()
        monkeypatch.setattr(_limits.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 30, 0, 14_000))
        with pytest.raises(TransientError) as caught:
            vendor.claim(candidate)
        assert caught.value.rule == "spool-full" and caught.value.path == str(vendor.local_dir)
        assert {p.name: p.read_bytes() for p in outbox.iterdir() if p.is_file()} == dropped
        assert not (vendor.claims_dir.exists() and list(vendor.claims_dir.iterdir()))
        monkeypatch.undo()
        claimed = vendor.claim(candidate)
        assert claimed is not None and claimed.files["a.pdf"].read_bytes() == b"x" * 5000
    finally:
        vendor.close()
