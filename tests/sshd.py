"""OpenSSH's own sshd on 127.0.0.1, for the SFTP tests: its own host key, config and client key.

Use it in a test module with ``from tests.sshd import sshd_server  # noqa: F401`` and a test
argument named ``sshd``.  The server runs as the current user (root in CI: key login only),
serves ``internal-sftp`` and is stopped by its PID when the module's tests are done.  When
/usr/sbin/sshd is missing the tests are skipped, or failed when HENT_REQUIRE_SSHD=1.

A test that kills, stalls or restarts the server takes ``dedicated_sshd`` instead (import
``dedicated_sshd_server``): an sshd of its own, see :class:`DedicatedSshd`.
"""

from __future__ import annotations

import getpass
import os
import signal
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
    server = SshServer("127.0.0.1", port, getpass.getuser(), client_key, known_hosts, host_key, root, base / "sshd.log")
    return server, _launch(sshd, config, server)


def _launch(sshd: Path, config: Path, server: SshServer) -> subprocess.Popen[bytes]:
    with open(server.log, "ab") as out:
        process = subprocess.Popen([str(sshd), "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(server.port, process, server.log)
    except BaseException:
        stop(process)
        raise
    return process


@pytest.fixture(scope="module", name="sshd")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A running sshd for the module's tests, stopped by its PID at the end."""
    server, process = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        stop(process)


def descendants(pid: int) -> list[int]:
    """The processes under ``pid``, from /proc: sshd forks one (or two, privilege separation)
    per connection, and internal-sftp runs in them."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat_file.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat_file.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class DedicatedSshd:
    """An sshd of one test's own, which the test may kill as a crash would, stall, and start again
    on the same port with the same host key (clients keep their known_hosts)."""

    def __init__(self, base: Path) -> None:
        self.server, self.process = start_sshd(base)
        self._stalled: list[int] = []

    def connection_pids(self) -> list[int]:
        """The processes serving the open connections (children of the listening sshd)."""
        return descendants(self.process.pid)

    def kill(self) -> None:
        """SIGKILL the listener and every connection's processes, at once: nothing is closed politely."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGSTOP)  # no new connection while the list is taken
        _signal_all([*self.connection_pids(), self.process.pid], signal.SIGKILL)
        self.process.wait(timeout=5)

    def stall(self) -> list[int]:
        """SIGSTOP the processes serving the open connections: the server stops answering, the
        TCP connections stay open.  :meth:`kill_stalled` ends them."""
        pids = self.connection_pids()
        _signal_all(pids, signal.SIGSTOP)
        self._stalled += pids
        return pids

    def kill_stalled(self) -> None:
        _signal_all(self._stalled, signal.SIGKILL)
        self._stalled = []

    def restart(self) -> None:
        """Start sshd again, same port, same host key and configuration (after :meth:`kill`)."""
        if self.process.poll() is None:
            raise RuntimeError("sshd is still running: kill() it first")
        self.process = _launch(sshd_or_skip(), self.server.log.parent / "sshd_config", self.server)

    def close(self) -> None:
        self.kill_stalled()
        if self.process.poll() is None:
            self.kill()


@pytest.fixture(name="dedicated_sshd")
def dedicated_sshd_server(tmp_path: Path) -> Iterator[DedicatedSshd]:
    """An sshd for one test only, which it may kill, stall and restart; killed with its
    connections' processes (by their PIDs) at the end."""
    dedicated = DedicatedSshd(tmp_path / "sshd")
    try:
        yield dedicated
    finally:
        dedicated.close()
