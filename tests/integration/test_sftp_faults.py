"""SFTP when the server fails: sshd killed mid-upload, a server that never answers, one that
stops answering mid-session.  Every failure must be a TransientError within the configured
time limits, leave no partial file under its final name, and free the worker for the retry."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
import yaml

from bus.config import load_config
from bus.connector import Artifact, InboundContext, SendResult
from bus.errors import TransientError
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from connectors.sftp_inbound import SftpInbound, SftpInboundConfig
from connectors.sftp_outbound import SftpOutbound, SftpOutboundConfig
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from tests.harness import write_config
from tests.sshd import DedicatedSshd, SshServer, dedicated_sshd_server  # noqa: F401 - the dedicated_sshd fixture

pytestmark = pytest.mark.integration

BIG = 64 << 20  #: large enough that the upload lasts (about 1 s on loopback) while sshd is killed
NAME = "HNT-big.tar.gz"


def options(server: SshServer, port: int | None = None) -> dict[str, object]:
    return {
        "type": "sftp", "host": server.host, "port": port or server.port, "username": server.user,
        "key_file": str(server.key_file), "known_hosts": str(server.known_hosts),
    }


def endpoint(server: SshServer, folder: Path, *, port: int | None = None, timeout: str = "3s") -> SftpOutbound:
    config = SftpOutboundConfig.model_validate({
        **options(server, port), "path": str(folder), "connect_timeout": timeout, "timeout": timeout,
    })
    return SftpOutbound("prefecture", config)


def big_artifact(tmp_path: Path) -> Artifact:
    data = os.urandom(BIG)  # incompressible: the bytes really travel
    path = tmp_path / NAME
    path.write_bytes(data)
    return Artifact(NAME, path, hashlib.sha256(data).hexdigest(), "actes-archive")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def part_size(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


class Sending(threading.Thread):
    """``endpoint.send(artifact)`` in a worker thread: its result or its error, and when it ended."""

    def __init__(self, target: SftpOutbound, artifact: Artifact) -> None:
        super().__init__(name="sending", daemon=True)
        self.target, self.artifact = target, artifact
        self.result: SendResult | None = None
        self.error: BaseException | None = None
        self.ended = 0.0

    def run(self) -> None:
        try:
            self.result = self.target.send(self.artifact)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc
        finally:
            self.ended = time.monotonic()


@dataclass
class Upload:
    """A large upload under way to ``folder`` on the dedicated sshd, in a worker thread."""

    target: SftpOutbound
    folder: Path
    part: Path
    artifact: Artifact
    sending: Sending


def upload_under_way(sshd: DedicatedSshd, tmp_path: Path, *, timeout: str, grown: int = 1 << 20) -> Upload:
    """Start a 64 MiB send to ``<root>/in`` and wait until ``grown`` bytes reached the ``.part``."""
    folder = sshd.server.root / "in"
    folder.mkdir()
    target = endpoint(sshd.server, folder, timeout=timeout)
    artifact = big_artifact(tmp_path)
    upload = Upload(target, folder, folder / f"{NAME}.part", artifact, Sending(target, artifact))
    try:
        upload.sending.start()
        wait_until(lambda: part_size(upload.part) >= grown, 10, "the .part to grow")
    except BaseException:
        target.close()
        raise
    return upload


def test_sshd_killed_mid_upload_fails_transiently_leaves_no_final_file_and_the_retry_delivers(
    dedicated_sshd: DedicatedSshd, tmp_path: Path
) -> None:
    # Given a 64 MiB upload under way
    upload = upload_under_way(dedicated_sshd, tmp_path, timeout="3s")
    target, folder, part, artifact, sending = upload.target, upload.folder, upload.part, upload.artifact, upload.sending
    try:
        # When sshd and the process serving the connection are SIGKILLed
        dedicated_sshd.kill()
        killed = time.monotonic()
        assert part_size(part) < BIG, "sshd was killed too late to mean anything"
        # Then send raises a TransientError within the configured timeout
        sending.join(timeout=10)
        assert not sending.is_alive(), "send hangs after the server died"
        assert isinstance(sending.error, TransientError), sending.error
        assert sending.ended - killed < 3.0
        # and nothing exists under the final name: at most the .part
        assert {p.name for p in folder.iterdir()} <= {f"{NAME}.part"}
        # When sshd is back (same port, same host key), Then the same endpoint delivers it whole
        dedicated_sshd.restart()
        result = target.send(artifact)
        assert (result.state, result.detail) == ("DELIVERED", "")
        assert sorted(p.name for p in folder.iterdir()) == [NAME]
        assert sha256(folder / NAME) == artifact.sha256
    finally:
        target.close()


def test_a_delivery_the_runtime_retries_after_sshd_was_killed_mid_upload_ends_delivered_once(
    dedicated_sshd: DedicatedSshd, tmp_path: Path
) -> None:
    # Given a bus whose endpoint is the SFTP server, and an act with a large incompressible annex
    server = dedicated_sshd.server
    folder = server.root / "prefecture"
    config_path = write_config(tmp_path, sweep="0.1s", lease="2s")
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {
        **options(server), "path": str(folder), "create_dirs": True, "connect_timeout": "3s", "timeout": "3s",
        "trigram": "HNT", "quadrigram": "TACT",
    }
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    drop = tmp_path / "drop" / "deliberations"
    drop_deliberation(drop, "DEL2026_001", decision=date.today())
    (drop / "DEL2026_001_annexe1.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(48 << 20))
    loaded = load_config(config_path)
    runtime = Runtime(loaded, Pipeline.for_runtime, retry=RetryPolicy(8, 0.2, 1.0), serve_http=False)
    seen: list[int] = []

    def kill_mid_upload_then_restart() -> None:
        try:
            wait_until(lambda: any(part_size(p) >= 1 << 20 for p in folder.glob("*.part")), 30, "the upload")
            dedicated_sshd.kill()
            seen.extend(part_size(p) for p in folder.glob("*.part"))
            time.sleep(0.3)
            dedicated_sshd.restart()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            seen.append(-1)
            raise AssertionError(exc) from None

    chaos = threading.Thread(target=kill_mid_upload_then_restart, daemon=True)
    chaos.start()
    # When the bus runs until idle while sshd is killed mid-upload and restarted
    assert runtime.run_until_idle(timeout=60)
    chaos.join(timeout=5)
    assert seen and all(0 < size < 48 << 20 for size in seen), seen
    # Then the delivery was retried and ended DELIVERED, with one whole file on the server
    ledger = Ledger(loaded.bus.ledger)
    try:
        [delivery] = ledger.deliveries()
    finally:
        ledger.close()
    name = delivery.artifact_name
    assert delivery.state == "DELIVERED" and delivery.attempts >= 2 and name is not None
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert sha256(folder / name) == delivery.artifact_sha256


def test_a_server_that_accepts_and_never_answers_times_out_and_frees_the_worker(
    dedicated_sshd: DedicatedSshd, tmp_path: Path, silent_server: int
) -> None:
    # Given both directions pointed at a server that accepts and stays silent, 1 s allowed
    server = dedicated_sshd.server
    target = endpoint(server, server.root, port=silent_server, timeout="1s")
    vendor = SftpInbound("finances", SftpInboundConfig.model_validate({
        **options(server, silent_server), "path": str(server.root), "connect_timeout": "1s", "timeout": "1s",
        "local_work_dir": str(tmp_path / "local"),
    }), InboundContext(bundle_members=lambda name, data: []))
    artifact = Artifact("HNT-a.tar.gz", tmp_path / "a", "0" * 64, "actes-archive")
    artifact.path.write_bytes(b"archive")
    try:
        for _ in range(2):  # twice: the first failure left no lock held, no half-open session behind
            # When a send is tried in a worker, Then it fails transiently within seconds, and the worker is free
            sending = Sending(target, artifact)
            began = time.monotonic()
            sending.start()
            sending.join(timeout=5)
            assert not sending.is_alive(), "the worker hangs on a silent server"
            assert isinstance(sending.error, TransientError) and sending.error.rule in ("sftp-timeout",
                                                                                        "sftp-connection")
            assert sending.ended - began < 3
            # and a poll of the source too
            began = time.monotonic()
            with pytest.raises(TransientError):
                vendor.list_ready()
            assert time.monotonic() - began < 3
    finally:
        target.close()
        vendor.close()


def test_a_server_that_stops_answering_mid_upload_times_out_and_frees_the_worker(
    dedicated_sshd: DedicatedSshd, tmp_path: Path
) -> None:
    # Given a 64 MiB upload under way
    upload = upload_under_way(dedicated_sshd, tmp_path, timeout="1s")
    target, folder, artifact, sending = upload.target, upload.folder, upload.artifact, upload.sending
    try:
        # When the processes serving the session are stopped (SIGSTOP): the TCP connection stays open
        assert dedicated_sshd.stall(), "no process served the connection"
        stalled = time.monotonic()
        # Then send fails transiently within a few times the 1 s timeout, and the worker is free
        sending.join(timeout=10)
        assert not sending.is_alive(), "the worker hangs on a server that stopped answering"
        assert isinstance(sending.error, TransientError), sending.error
        assert sending.ended - stalled < 5, sending.ended - stalled
        assert not (folder / NAME).exists()
        # When the stalled session is gone, Then the same endpoint delivers it whole
        dedicated_sshd.kill_stalled()
        result = target.send(artifact)
        assert result.state == "DELIVERED"
        assert sorted(p.name for p in folder.iterdir()) == [NAME] and sha256(folder / NAME) == artifact.sha256
    finally:
        target.close()


def test_a_server_that_stops_reading_while_the_send_buffer_is_full_times_out(
    dedicated_sshd: DedicatedSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a client whose TCP send buffer is small, so that it fills before the SSH channel's window
    connect = socket.create_connection

    def small_send_buffer(*args: object, **kwargs: object) -> socket.socket:
        sock = connect(*args, **kwargs)  # type: ignore[arg-type]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return sock

    monkeypatch.setattr(socket, "create_connection", small_send_buffer)
    upload = upload_under_way(dedicated_sshd, tmp_path, timeout="1s", grown=32 << 10)
    target, sending = upload.target, upload.sending
    try:
        # When the server stops reading, Then send fails within a few seconds
        dedicated_sshd.stall()
        sending.join(timeout=5)
        assert not sending.is_alive(), "the worker hangs on a server that stopped reading"
        assert isinstance(sending.error, TransientError)
    finally:
        dedicated_sshd.kill_stalled()  # the connection dies: the worker, if stuck, is freed
        sending.join(timeout=10)
        target.close()
