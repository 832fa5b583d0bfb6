"""Delivery over SFTP to OpenSSH's sshd: temporary name, rename, unknown outcomes, host keys."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from bus.connector import Artifact
from bus.errors import DocumentError, TransientError
from connectors.sftp_outbound import SftpOutbound, SftpOutboundConfig
from tests.sshd import SshServer, keygen, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration


def endpoint(sshd: SshServer, folder: str, **extra: object) -> SftpOutbound:
    config = SftpOutboundConfig.model_validate({
        "type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user, "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts), "path": str(sshd.root / folder), "connect_timeout": "5s",
        "timeout": "5s", **extra,
    })
    return SftpOutbound("prefecture", config)


def artifact(tmp_path: Path, name: str, data: bytes) -> Artifact:
    path = tmp_path / name
    path.write_bytes(data)
    return Artifact(name, path, hashlib.sha256(data).hexdigest(), "actes-archive")


def test_an_archive_is_uploaded_under_its_final_name_with_no_part_left(sshd: SshServer, tmp_path: Path) -> None:
    # Given an endpoint allowed to create its folder, and a 3 MiB archive
    target = endpoint(sshd, "upload/in", create_dirs=True, done_file=".done")
    data = bytes(range(256)) * (3 * 4096)
    try:
        # When sent
        result = target.send(artifact(tmp_path, "HNT-a.tar.gz", data))
        # Then it is there whole, under its name, with its done-file, and nothing else
        assert result.state == "DELIVERED" and result.detail == ""
        folder = sshd.root / "upload" / "in"
        assert sorted(p.name for p in folder.iterdir()) == ["HNT-a.tar.gz", "HNT-a.tar.gz.done"]
        assert (folder / "HNT-a.tar.gz").read_bytes() == data
        assert target.reachable() == (True, f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{folder}")
    finally:
        target.close()


def test_a_file_already_there_with_the_same_size_is_not_sent_again(sshd: SshServer, tmp_path: Path) -> None:
    # Given an earlier try whose outcome was unknown, and a leftover .part of another
    folder = sshd.root / "unknown"
    folder.mkdir()
    (folder / "HNT-b.tar.gz").write_bytes(b"x" * 10)
    (folder / "HNT-c.tar.gz.part").write_bytes(b"half")
    target = endpoint(sshd, "unknown")
    try:
        # When both are sent
        again = target.send(artifact(tmp_path, "HNT-b.tar.gz", b"y" * 10))
        fresh = target.send(artifact(tmp_path, "HNT-c.tar.gz", b"whole archive"))
        # Then the first counts as delivered untouched, the second overwrote its leftover
        assert (again.state, again.detail) == ("DELIVERED", "already present")
        assert (folder / "HNT-b.tar.gz").read_bytes() == b"x" * 10
        assert fresh.state == "DELIVERED"
        assert sorted(p.name for p in folder.iterdir()) == ["HNT-b.tar.gz", "HNT-c.tar.gz"]
        # and another file under the same name with another size is never overwritten
        with pytest.raises(DocumentError, match="never overwritten"):
            target.send(artifact(tmp_path, "HNT-b.tar.gz", b"longer content"))
    finally:
        target.close()


def test_a_missing_folder_is_transient_unless_it_may_be_created(sshd: SshServer, tmp_path: Path) -> None:
    target = endpoint(sshd, "absent")
    try:
        assert target.reachable()[0] is False
        with pytest.raises(TransientError) as failed:
            target.send(artifact(tmp_path, "HNT-d.tar.gz", b"d"))
        assert failed.value.rule == "sftp-not-found"
    finally:
        target.close()


def test_an_unknown_host_key_is_refused_with_the_pinning_hint(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    target = endpoint(sshd, "", known_hosts=str(empty))
    try:
        with pytest.raises(TransientError) as refused:
            target.connect()
    finally:
        target.close()
    assert refused.value.rule == "sftp-host-key-unknown" and getattr(refused.value, "alert", False)
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in refused.value.message
    printed = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True, check=True)
    fingerprint = printed.stdout.split()[1]
    assert f"host_key_fingerprint: {fingerprint}" in refused.value.message
    # and pinning that fingerprint lets it in
    pinned = endpoint(sshd, "", known_hosts=None, host_key_fingerprint=fingerprint)
    try:
        pinned.connect()
    finally:
        pinned.close()


def test_a_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    # Given a known_hosts that pins another key for this server
    other = keygen(tmp_path / "other_host_key")
    kind, blob = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    assert other.exists()
    for target in (endpoint(sshd, "", known_hosts=str(known)),
                   endpoint(sshd, "", known_hosts=None, host_key_fingerprint="SHA256:" + "A" * 43)):
        try:
            with pytest.raises(TransientError) as refused:
                target.connect()
        finally:
            target.close()
        assert refused.value.rule == "sftp-host-key-changed"
        assert "it may be an attack" in refused.value.message and "ssh-keyscan" in refused.value.message
