"""OpenSSH's own sshd on 127.0.0.1 for the benches, as ``tests/sshd.py`` starts it for the tests
(its own host key pinned in a known_hosts, key login, ``internal-sftp``), without pytest.

    with running_sshd(base) as server:
        ...  # server.host, server.port, server.key_file, server.known_hosts, server.root

The server runs as the current user and is stopped by its PID when the block ends.
"""

from __future__ import annotations

__all__ = ["SSHD", "SshServer", "SshdMissing", "running_sshd", "start_sshd", "stop"]

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


class SshdMissing(RuntimeError):
    """OpenSSH's server is not installed here."""


@dataclass(frozen=True)
class SshServer:
    host: str
    port: int
    user: str
    key_file: Path  #: the client's private key (ed25519), authorized
    known_hosts: Path  #: pins the server's host key
    root: Path  #: a folder for the remote paths (absolute paths work: same machine)
    log: Path


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hent-bench", "-f", str(path)], check=True)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
    """Keys, configuration and a running sshd under ``base``; the caller stops it."""
    if not SSHD.is_file():
        raise SshdMissing(f"OpenSSH server not found: {SSHD} (apt-get install openssh-server)")
    base.mkdir(parents=True, exist_ok=True)
    host_key = _keygen(base / "ssh_host_ed25519_key")
    client_key = _keygen(base / "client_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_ed25519.pub").read_text())
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {base / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nSubsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\n"
    )
    public = (base / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public[0]} {public[1]}\n")
    root = base / "remote"
    root.mkdir()
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    log = base / "sshd.log"
    server = SshServer("127.0.0.1", port, getpass.getuser(), client_key, known_hosts, root, log)
    with open(log, "ab") as out:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server, process
        except OSError:
            if time.monotonic() > deadline:
                stop(process)
                raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within 10 s") from None
            time.sleep(0.05)


@contextmanager
def running_sshd(base: Path) -> Iterator[SshServer]:
    server, process = start_sshd(base)
    try:
        yield server
    finally:
        stop(process)
