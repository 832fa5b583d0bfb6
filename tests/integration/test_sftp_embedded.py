"""The embedded SFTP server (simulators/sftp_server.py): the project's connectors against it, confinement, stop."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bus.connector import Artifact, InboundContext
from bus.errors import Problem, TransientError
from bus.secrets import Secret
from bus.yamlconf import interpolate
from connectors._sftp_common import TransientAlert, fingerprint
from connectors.sftp_inbound import SftpInbound, SftpInboundConfig
from connectors.sftp_outbound import SftpOutbound, SftpOutboundConfig
from simulators.sftp_server import SftpServer
from tests.harness import ROOT

pytestmark = pytest.mark.integration

PASSWORD = "embedded-sftp-pw-7f3a"


def ed25519_key(path: Path) -> paramiko.PKey:
    """A fresh client key written to ``path`` (OpenSSH format, mode 600), as paramiko loads it."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return paramiko.Ed25519Key(filename=str(path))


@pytest.fixture(name="client_key")
def client_key_file(tmp_path: Path) -> Path:
    ed25519_key(tmp_path / "client_ed25519")
    return tmp_path / "client_ed25519"


@pytest.fixture(name="server")
def embedded_server(tmp_path: Path, client_key: Path) -> Iterator[SftpServer]:
    """A server on a free loopback port serving tmp_path/root, stopped at the end."""
    root = tmp_path / "root"
    for folder in ("inbox", "outbox"):
        (root / folder).mkdir(parents=True)
    server = SftpServer(root, authorized_keys=[paramiko.Ed25519Key(filename=str(client_key))],
                        passwords={"hent": PASSWORD}).start()
    try:
        yield server
    finally:
        server.stop()


def outbound(server: SftpServer, **login: object) -> SftpOutbound:
    document: dict[str, object] = {
        "type": "sftp", "host": server.host, "port": server.port, "username": "hent",
        "host_key_fingerprint": server.fingerprint(), "path": "/inbox", "connect_timeout": "2s", "timeout": "2s",
        **login,
    }
    problems: list[Problem] = []
    interpolate(document, problems)  # ${...} resolved as load_config resolves them
    assert problems == []
    return SftpOutbound("prefecture", SftpOutboundConfig.model_validate(document))


def artifact(tmp_path: Path, name: str, data: bytes) -> Artifact:
    path = tmp_path / name
    path.write_bytes(data)
    return Artifact(name, path, hashlib.sha256(data).hexdigest(), "actes-archive")


def raw_client(server: SftpServer) -> tuple[paramiko.Transport, paramiko.SFTPClient]:
    transport = paramiko.Transport(socket.create_connection((server.host, server.port), timeout=2))
    transport.connect(username="hent", password=PASSWORD)
    assert transport.get_remote_server_key() == server.host_key
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    return transport, sftp


def test_an_archive_sent_with_a_password_from_the_environment_arrives_whole(
    server: SftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an endpoint whose password is a ${HENT_TEST_SFTP_PASSWORD} reference, and a 1 MiB archive
    monkeypatch.setenv("HENT_TEST_SFTP_PASSWORD", PASSWORD)
    target = outbound(server, password="${HENT_TEST_SFTP_PASSWORD}", done_file=".done")
    assert isinstance(target.config.password, Secret) and PASSWORD not in repr(target.config)
    data = os.urandom(1 << 20)
    try:
        # When sent
        result = target.send(artifact(tmp_path, "HNT-a.tar.gz", data))
        # Then it is there whole under its final name, with its done-file, and no .part left
        assert result.state == "DELIVERED"
        inbox = server.root / "inbox"
        assert sorted(p.name for p in inbox.iterdir()) == ["HNT-a.tar.gz", "HNT-a.tar.gz.done"]
        assert (inbox / "HNT-a.tar.gz").read_bytes() == data
        assert target.reachable() == (True, f"sftp://hent@127.0.0.1:{server.port}/inbox")
    finally:
        target.close()


def test_a_key_login_and_a_known_hosts_line_work(server: SftpServer, tmp_path: Path, client_key: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(server.known_hosts_line() + "\n")
    assert server.known_hosts_line().startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 AAAA")
    target = outbound(server, key_file=str(client_key), known_hosts=str(known_hosts), host_key_fingerprint=None)
    try:
        assert target.send(artifact(tmp_path, "HNT-b.tar.gz", b"by key")).state == "DELIVERED"
        assert (server.root / "inbox" / "HNT-b.tar.gz").read_bytes() == b"by key"
    finally:
        target.close()


def test_a_wrong_password_is_a_transient_error_with_an_alert(server: SftpServer, tmp_path: Path) -> None:
    target = outbound(server, password="not-the-password")
    try:
        with pytest.raises(TransientAlert) as refused:
            target.send(artifact(tmp_path, "HNT-c.tar.gz", b"c"))
    finally:
        target.close()
    assert refused.value.rule == "sftp-auth" and refused.value.alert is True
    assert "the server refused the login" in refused.value.message and "check username" in refused.value.message
    assert list((server.root / "inbox").iterdir()) == []


def test_a_wrong_fingerprint_is_refused_with_the_pinning_hint(server: SftpServer, tmp_path: Path) -> None:
    assert server.fingerprint().startswith("SHA256:") and not server.fingerprint().endswith("=")
    target = outbound(server, password=PASSWORD, host_key_fingerprint="SHA256:" + "A" * 43)
    try:
        with pytest.raises(TransientError) as refused:
            target.connect()
    finally:
        target.close()
    assert refused.value.rule == "sftp-host-key-changed" and getattr(refused.value, "alert", False)
    assert f"set host_key_fingerprint: {server.fingerprint()}" in refused.value.message


def test_a_bundle_in_the_outbox_is_claimed_downloaded_and_committed(server: SftpServer, tmp_path: Path) -> None:
    # Given a bundle in root/outbox
    outbox = server.root / "outbox"
    (outbox / "a.pdf").write_bytes(b"%PDF-1.4 a" * 5000)
    (outbox / "a.json").write_text(json.dumps({"files": ["a.pdf"]}))
    config = SftpInboundConfig.model_validate({
        "type": "sftp", "host": server.host, "port": server.port, "username": "hent", "password": PASSWORD,
        "host_key_fingerprint": server.fingerprint(), "path": "/outbox", "local_work_dir": str(tmp_path / "local"),
        "timeout": "2s", "ready": {"min_age": 0, "stable": False},
    })
    members = InboundContext(bundle_members=lambda name, data: list(json.loads(data)["files"]))
    vendor = SftpInbound("finances", config, members)
    try:
        # When listed, claimed and committed
        [candidate] = vendor.list_ready()
        claimed = vendor.claim(candidate)
        assert claimed is not None
        assert claimed.files["a.pdf"].read_bytes() == b"%PDF-1.4 a" * 5000
        vendor.commit(claimed)
        # Then the bundle is in done/ and nothing is left in the outbox or the work folder
        assert sorted(p.name for p in (outbox / "done").iterdir()) == ["a.json", "a.pdf"]
        assert sorted(p.name for p in outbox.iterdir() if p.is_file()) == []
        assert list((outbox / ".hent-work").iterdir()) == []
    finally:
        vendor.close()


def _snapshot(folder: Path, skip: Path) -> dict[str, bytes | None]:
    return {str(p): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
            for p in sorted(folder.rglob("*")) if skip not in (p, *p.parents)}


def test_no_path_leads_outside_the_served_folder(server: SftpServer, tmp_path: Path) -> None:
    # Given a secret beside the root, and symlinks inside the root that point outside it
    (tmp_path / "secret.txt").write_text("outside")
    (server.root / "escape").symlink_to(tmp_path)
    (server.root / "inbox" / "link.txt").symlink_to(tmp_path / "secret.txt")
    (server.root / "inbox" / "mine.txt").write_text("inside")
    before = _snapshot(tmp_path, server.root)
    transport, sftp = raw_client(server)
    try:
        # When a client reaches for it through .., an absolute path or a symlink, Then it is denied
        for path in ("../secret.txt", "/../secret.txt", "inbox/../../secret.txt", "/escape/secret.txt",
                     "/inbox/link.txt"):
            with pytest.raises(PermissionError):
                sftp.open(path).read()
            with pytest.raises(PermissionError):
                sftp.stat(path)
        for folder in ("..", "/..", "/escape", "/inbox/../.."):
            with pytest.raises(PermissionError):
                sftp.listdir(folder)
        with pytest.raises(FileNotFoundError):  # an absolute path is read from the root
            sftp.stat(str(tmp_path / "secret.txt"))
        for path in ("../written.txt", "/escape/written.txt", "/inbox/link.txt"):
            with pytest.raises(PermissionError):
                sftp.open(path, "wb").write(b"x")
        with pytest.raises(PermissionError):
            sftp.mkdir("/../made")
        with pytest.raises(PermissionError):
            sftp.rename("/inbox/mine.txt", "/escape/moved.txt")
        with pytest.raises(PermissionError):
            sftp.posix_rename("/inbox/mine.txt", "/../moved.txt")
        with pytest.raises(PermissionError):
            sftp.rmdir("/")
        # while what is inside is served, and the link itself is seen as a link
        assert sftp.open("/inbox/mine.txt").read() == b"inside"
        assert sftp.normalize("/..") == "/" and sorted(sftp.listdir("/")) == ["escape", "inbox", "outbox"]
        assert stat.S_ISLNK(sftp.lstat("/inbox/link.txt").st_mode or 0)
    finally:
        sftp.close()
        transport.close()
    # and nothing outside the root was read into or written
    assert _snapshot(tmp_path, server.root) == before
    assert (tmp_path / "secret.txt").read_text() == "outside"


def test_files_behave_as_on_openssh(server: SftpServer) -> None:
    transport, sftp = raw_client(server)
    try:
        with sftp.open("/inbox/a.txt", "wb") as out:
            out.write(b"one")
        with sftp.open("/inbox/a.txt", "ab") as out:
            out.write(b"+two")
        assert sftp.open("/inbox/a.txt").read() == b"one+two"
        with pytest.raises(OSError):  # exclusive create of an existing file
            sftp.open("/inbox/a.txt", "xb")
        with sftp.open("/inbox/b.txt", "wb") as out:
            out.write(b"b")
        with pytest.raises(OSError):  # SFTP v3 rename never replaces
            sftp.rename("/inbox/a.txt", "/inbox/b.txt")
        sftp.posix_rename("/inbox/a.txt", "/inbox/b.txt")
        sftp.utime("/inbox/b.txt", (1_000_000_000, 1_000_000_000))
        [entry] = sftp.listdir_attr("/inbox")
        assert (entry.filename, entry.st_size, entry.st_mtime) == ("b.txt", 7, 1_000_000_000)
        assert stat.S_ISREG(entry.st_mode or 0)
        with pytest.raises(FileNotFoundError):
            sftp.stat("/inbox/a.txt")
        sftp.mkdir("/inbox/sub")
        with pytest.raises(OSError):
            sftp.rmdir("/inbox")  # not empty
        sftp.rmdir("/inbox/sub")
        sftp.remove("/inbox/b.txt")
        assert sftp.listdir("/inbox") == []
    finally:
        sftp.close()
        transport.close()


def test_logins_and_channels_are_limited_to_what_is_configured(server: SftpServer, tmp_path: Path) -> None:
    for user, password in (("root", PASSWORD), ("hent", "")):
        transport = paramiko.Transport(socket.create_connection((server.host, server.port), timeout=2))
        try:
            with pytest.raises(paramiko.AuthenticationException):
                transport.connect(username=user, password=password)
        finally:
            transport.close()
    intruder = ed25519_key(tmp_path / "intruder")
    transport = paramiko.Transport(socket.create_connection((server.host, server.port), timeout=2))
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.connect(username="hent", pkey=intruder)
    finally:
        transport.close()
    transport, sftp = raw_client(server)
    try:
        channel = transport.open_session(timeout=2)
        with pytest.raises(paramiko.SSHException):
            channel.exec_command("id")
    finally:
        sftp.close()
        transport.close()


def test_abrupt_clients_do_not_stop_the_server_and_stop_is_quick(server: SftpServer) -> None:
    # Given clients that vanish mid-handshake and mid-session, and one connected client
    with socket.create_connection((server.host, server.port), timeout=2) as rude:
        rude.sendall(b"SSH-2.0-rude\r\n")
    vanishing = socket.create_connection((server.host, server.port), timeout=2)
    transport = paramiko.Transport(vanishing)
    transport.connect(username="hent", password=PASSWORD)
    paramiko.SFTPClient.from_transport(transport)
    vanishing.shutdown(socket.SHUT_RDWR)
    transport.close()
    connected, sftp = raw_client(server)
    assert sftp.listdir("/") == ["inbox", "outbox"]
    port = server.port
    # When stopped
    started = time.monotonic()
    server.stop()
    # Then it returned quickly, the client is cut off, and the port is free
    assert time.monotonic() - started < 2.0
    deadline = time.monotonic() + 2
    while connected.is_active() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not connected.is_active()
    connected.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with SftpServer(server.root, port=port, passwords={"hent": PASSWORD}) as again:
        assert again.port == port


def test_the_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "SFTP_DEMO_PASSWORD": PASSWORD}
    command = [sys.executable, "-m", "simulators.sftp_server", "--root", str(tmp_path), "--password-env",
               "SFTP_DEMO_PASSWORD"]
    with open(tmp_path / "stderr.txt", "wb") as errors, subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
    ) as process:
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline().split()[1])
            printed = process.stdout.readline().split()[1]
            transport = paramiko.Transport(socket.create_connection(("127.0.0.1", port), timeout=2))
            try:
                transport.connect(username="hent", password=PASSWORD)
                assert fingerprint(transport.get_remote_server_key()) == printed
            finally:
                transport.close()
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0, (tmp_path / "stderr.txt").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
