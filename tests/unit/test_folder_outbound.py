"""The drop-folder endpoint: atomic writes, idempotent retries, never an overwrite."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bus.connector import Artifact
from bus.errors import DocumentError, TransientError
from connectors.folder_outbound import FolderOutbound, FolderOutboundConfig


def artifact(tmp_path: Path, data: bytes, name: str = "HNT-EACT--214400152--20261129-1.tar.gz") -> Artifact:
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return Artifact(name=name, path=path, sha256=hashlib.sha256(data).hexdigest(), kind="actes-archive")


def endpoint(folder: Path, **options: object) -> FolderOutbound:
    return FolderOutbound("prefecture", FolderOutboundConfig.model_validate({"path": str(folder), **options}))


def test_send_writes_the_artifact_under_its_name_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    connector = endpoint(out, create=True)
    connector.connect()
    result = connector.send(artifact(tmp_path, b"archive"))
    assert result.state == "DELIVERED"
    assert [p.name for p in out.iterdir()] == ["HNT-EACT--214400152--20261129-1.tar.gz"]


def test_a_retry_of_the_same_bytes_is_delivered_again_without_a_second_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    connector = endpoint(out, create=True)
    connector.connect()
    connector.send(artifact(tmp_path, b"archive"))
    assert connector.send(artifact(tmp_path, b"archive")).detail == "already present"


def test_other_bytes_under_the_same_name_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    connector = endpoint(out, create=True)
    connector.connect()
    connector.send(artifact(tmp_path, b"archive"))
    with pytest.raises(DocumentError, match="never overwritten"):
        connector.send(artifact(tmp_path, b"other"))


def test_a_missing_folder_is_transient_unless_created(tmp_path: Path) -> None:
    with pytest.raises(TransientError, match="does not exist"):
        endpoint(tmp_path / "absent").connect()


def test_a_missing_folder_is_not_ready_unless_it_will_be_created(tmp_path: Path) -> None:
    # Given a deposit folder that does not exist yet, two levels under an existing folder
    folder = tmp_path / "out" / "prefecture"

    # Then without create: true the endpoint is not ready
    assert endpoint(folder).reachable() == (False, str(folder))
    # and with create: true it is, since its nearest existing parent is a writable folder
    assert endpoint(folder, create=True).reachable() == (True, f"{folder} (created on the first send)")
    # and checking created nothing
    assert list(tmp_path.iterdir()) == []


def test_a_folder_under_a_file_is_not_ready_even_with_create(tmp_path: Path) -> None:
    # Given a deposit folder whose nearest existing parent is a file
    (tmp_path / "out").write_bytes(b"")
    folder = tmp_path / "out" / "prefecture"

    # Then it is not ready, and the detail says why
    assert endpoint(folder, create=True).reachable() == (
        False,
        f"{folder} cannot be created: {tmp_path / 'out'} is not a writable folder",
    )


def test_a_file_in_place_of_the_folder_is_not_ready_even_with_create(tmp_path: Path) -> None:
    # Given a file where the deposit folder should be
    folder = tmp_path / "out"
    folder.write_bytes(b"")

    # Then it is not ready: the first send could not create the folder
    assert endpoint(folder, create=True).reachable() == (False, f"{folder} is not a folder")


def test_an_existing_folder_is_ready(tmp_path: Path) -> None:
    assert endpoint(tmp_path).reachable() == (True, str(tmp_path))


def test_trigram_and_quadrigram_are_checked() -> None:
    with pytest.raises(Exception, match="quadrigram"):
        FolderOutboundConfig.model_validate({"path": "/x", "quadrigram": "eact1"})


def test_temporary_files_of_a_writer_killed_midway_are_removed_at_the_next_connect(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname().replace(".", "_")
    killed = out / f".HNT-TACT--214400152--20261129-4.tar.gz.{host}.{dead.stdout.strip()}.tmp"
    killed.write_bytes(b"half an archive")
    alive = out / f".HNT-TACT--214400152--20261129-5.tar.gz.{host}.{os.getpid()}.tmp"  # being written now
    alive.write_bytes(b"")
    endpoint(out).connect()
    assert not killed.exists() and alive.exists()
