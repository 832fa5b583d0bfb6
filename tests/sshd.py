"""OpenSSH's own sshd on 127.0.0.1, for the SFTP tests: its own host key, config and client key.

Use it in a test module with ``from tests.sshd import sshd_server  # noqa: F401`` and a test
argument named ``sshd``.  The server runs as the current user (root in CI: key login only),
serves ``internal-sftp`` and is stopped by its PID when the module's tests are done.  When
/usr/sbin/sshd is missing the tests are skipped, or failed when HENT_REQUIRE_SSHD=1.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    key_file: Path  #: the client's private key (ed25519), authorized
    known_hosts: Path  #: a known_hosts file that pins the server's host key
    host_key: Path  #: the server's private host key
    root: Path  #: a folder the tests use as remote base path (absolute paths work: same machine)
    log: Path


def sshd_or_skip() -> Path:
    if not SSHD.is_file():
        message = f"OpenSSH server not found: {SSHD} (apt-get install openssh-server)"
        if os.environ.get("HENT_REQUIRE_SSHD") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return SSHD


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run([SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", "hent-test", "-f", str(path)], check=True)
    return path


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {deadline}s: {log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate, wait, kill if it lingers: by its PID only."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_sshd(base: Path) -> tuple[SshServer, subprocess.Popen[bytes]]:
    sshd = sshd_or_skip()
    base.mkdir(parents=True, exist_ok=True)
    host_key = keygen(base / "ssh_host_ed25519_key")
    client_key = keygen(base / "client_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_ed25519.pub").read_text())
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nSubsystem sftp internal-sftp\nLogLevel INFO\n"
    )
    known_hosts = base / "known_hosts"
    public = (base / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    root = base / "remote"
    root.mkdir()
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = base / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log)
    except BaseException:
        stop(process)
        raise
    server = SshServer("127.0.0.1", port, getpass.getuser(), client_key, known_hosts, host_key, root, log)
    return server, process


@pytest.fixture(scope="module", name="sshd")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd for the module's tests, stopped by its PID at the end."""
    server, process = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop(process)
