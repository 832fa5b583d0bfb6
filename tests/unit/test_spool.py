from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

import bus.spool
from bus.errors import TransientError
from bus.spool import MissingBlob, Spool


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


def temp_files(spool: Spool) -> list[Path]:
    return list((spool.root / "tmp").iterdir())


def test_put_bytes_stores_the_blob_under_its_sha256(spool: Spool) -> None:
    # When
    name = spool.put_bytes(b"deliberation 2024-12")
    # Then
    assert name == sha(b"deliberation 2024-12")
    assert spool.path(name) == spool.root / name[:2] / name
    assert spool.path(name).read_bytes() == b"deliberation 2024-12"
    assert spool.exists(name) and name in spool and spool.verify(name)
    with spool.open(name) as f:
        assert f.read() == b"deliberation 2024-12"
    assert temp_files(spool) == []


def test_putting_the_same_bytes_twice_keeps_the_first_blob_stored_anew(spool: Spool) -> None:
    first = spool.put_bytes(b"same")
    os.utime(spool.path(first), (1_000_000_000, 1_000_000_000))  # stored long ago
    before = spool.path(first).stat()
    # When
    second = spool.put_bytes(b"same")
    third = spool.put_stream(io.BytesIO(b"same"))
    # Then the first blob stays, its time of storage now (a purge of blobs nothing names goes by it)
    assert first == second == third
    after = spool.path(first).stat()
    assert after.st_ino == before.st_ino
    assert after.st_mtime > before.st_mtime + 1_000_000
    assert temp_files(spool) == []


def test_the_same_bytes_stored_while_a_purge_takes_the_blob_away_are_stored_again(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    first = spool.put_bytes(b"same")
    utime = os.utime

    def taken_away_first(path: Any, *args: Any) -> None:  # the purge moves it aside between the look and the touch
        os.unlink(path)
        utime(path, *args)

    monkeypatch.setattr(bus.spool.os, "utime", taken_away_first)
    assert spool.put_bytes(b"same") == first
    assert spool.verify(first) and temp_files(spool) == []


def test_the_same_bytes_stored_again_over_another_users_blob_keep_it(
        spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    first = spool.put_bytes(b"same")

    def not_yours(path: Any, *args: Any) -> None:  # written by an operator's command as another user
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(bus.spool.os, "utime", not_yours)
    assert spool.put_bytes(b"same") == first
    assert spool.verify(first) and temp_files(spool) == []


def test_blobs_lists_every_blob_with_its_time_of_storage_not_temporary_files(spool: Spool) -> None:
    one, two = spool.put_bytes(b"one"), spool.put_bytes(b"two")
    os.utime(spool.path(one), ns=(5_000_000_000, 5_000_000_000))
    (spool.root / "tmp" / "put-leftover").write_bytes(b"half written")
    (spool.root / one[:2] / "not-a-blob").write_bytes(b"?")
    listed = dict(spool.blobs())
    assert listed.keys() == {one, two}
    assert listed[one] == 5_000_000_000 and listed[two] == spool.path(two).stat().st_mtime_ns


def test_put_file_and_put_stream_read_in_chunks(
    spool: Spool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus.spool, "CHUNK_SIZE", 1000)
    data = os.urandom(3500)
    src = tmp_path / "arrete.pdf"
    src.write_bytes(data)
    reads: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(-1 if size is None else size)
            return super().read(size)

    # When
    from_file = spool.put_file(src)
    from_stream = spool.put_stream(Recording(data))
    # Then
    assert from_file == from_stream == sha(data)
    assert reads == [1000] * 5  # 4 reads with data, one at EOF: never the whole stream at once
    assert spool.path(from_file).read_bytes() == data


def test_a_blob_is_fsynced_before_it_is_renamed_and_its_directory_after(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    # When
    spool.put_bytes(b"payload")
    # Then: the file is synced; ab/ is created and the root synced; the rename into ab/ is
    # followed by a sync of ab/
    assert events == ["fsync file", "fsync dir", "replace", "fsync dir"]


def test_a_stream_failing_midway_leaves_no_blob_and_no_temporary_file(spool: Spool) -> None:
    class Broken(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 1:
                raise OSError("connection reset by peer")
            return b"x" * 10

    # When
    with pytest.raises(OSError, match="connection reset"):
        spool.put_stream(Broken())
    # Then
    assert temp_files(spool) == []
    assert not spool.exists(sha(b"x" * 10))


def test_writer_builds_a_tar_gz_straight_into_the_spool(spool: Spool) -> None:
    # When
    with spool.writer() as out:
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            info = tarfile.TarInfo("034-214400152---20240102-DE_0.xml")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"<a/>\n"))
    # Then
    data = spool.path(out.sha256).read_bytes()
    assert out.sha256 == sha(data)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.getnames() == ["034-214400152---20240102-DE_0.xml"]
    assert temp_files(spool) == []


def test_writer_accepts_seeking_writers_such_as_zipfile(spool: Spool) -> None:
    with spool.writer() as out:
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr("decp.xml", "<marches/>")
    with spool.open(out.sha256) as blob, zipfile.ZipFile(blob) as archive:
        assert archive.read("decp.xml") == b"<marches/>"
    assert spool.verify(out.sha256)


def test_writer_stores_nothing_when_the_block_raises(spool: Spool) -> None:
    with pytest.raises(RuntimeError, match="boom"), spool.writer() as out:
        out.write(b"half an archive")
        raise RuntimeError("boom")
    assert temp_files(spool) == []
    assert not spool.exists(sha(b"half an archive"))
    with pytest.raises(RuntimeError, match="only after the writer block has closed"):
        _ = out.sha256


def test_an_absent_blob_is_a_clear_key_error(spool: Spool) -> None:
    absent = sha(b"never stored")
    with pytest.raises(MissingBlob, match=f"no blob {absent}") as caught:
        spool.path(absent)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(KeyError):
        spool.open(absent)
    assert not spool.exists(absent)
    assert absent not in spool
    assert spool.verify(absent) is False


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "A" * 64, ""])
def test_a_name_that_is_not_a_sha256_is_refused(spool: Spool, bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256"):
        spool.path(bad)
    assert bad not in spool


def test_verify_detects_a_corrupted_blob(spool: Spool) -> None:
    name = spool.put_bytes(b"signed pdf")
    spool.path(name).write_bytes(b"tampered")
    assert spool.verify(name) is False


def test_public_names() -> None:
    for name in bus.spool.__all__:
        assert hasattr(bus.spool, name)


def test_clean_temp_removes_what_a_killed_writer_left(spool: Spool) -> None:
    old = spool.root / "tmp" / "put-killed"
    old.write_bytes(b"half")
    os.utime(old, (0, 0))
    fresh = spool.root / "tmp" / "put-running"
    fresh.write_bytes(b"in progress")
    assert spool.clean_temp(older_than=3600) == 1
    assert temp_files(spool) == [fresh]


def test_an_unsynced_writer_blob_is_made_durable_by_sync(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    (spool.root / hashlib.sha256(b"archive bytes").hexdigest()[:2]).mkdir()  # a fan-out folder made earlier
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with spool.writer(sync=False) as out:
        out.write(b"archive bytes")
    assert synced == []  # not yet: the runtime syncs it before sending it anywhere
    assert spool.verify(out.sha256)
    spool.sync(out.sha256)
    assert len(synced) == 2  # the blob, then its folder


def test_a_writer_that_seeks_back_is_hashed_from_what_it_wrote(spool: Spool) -> None:
    with spool.writer() as out:
        out.write(b"xxxx-tail")
        out.seek(0)
        out.write(b"head")
        out.seek(0, os.SEEK_END)
    assert out.sha256 == hashlib.sha256(b"head-tail").hexdigest()
    assert spool.verify(out.sha256)


def _syncfs_failing(error: int) -> Any:
    """A ``syncfs`` that fails with ``error`` (as libc's: -1, the error in ctypes' errno)."""

    def syncfs(_fd: int) -> int:
        ctypes.set_errno(error)
        return -1

    return syncfs


def _two_blobs_unsynced(spool: Spool) -> list[str]:
    return [spool.put_stream(io.BytesIO(data), sync=False) for data in (b"deliberation", b"annexe 1")]


def test_put_stream_unsynced_fsyncs_nothing_until_sync_many_makes_the_batch_durable_at_once(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
    syncfs_calls: list[int] = []
    real_syncfs = spool._syncfs

    def syncfs(fd: int) -> int:
        syncfs_calls.append(fd)
        return real_syncfs(fd) if real_syncfs is not None else 0

    monkeypatch.setattr(spool, "_syncfs", syncfs)
    # When two blobs are stored unsynced (each in a fan-out folder of its own, made for it)
    blobs = _two_blobs_unsynced(spool)
    # Then nothing was fsynced yet, and the blobs are there to read
    assert fsynced == [] and all(spool.verify(blob) for blob in blobs)
    # And sync_many makes them durable with one syncfs of the spool's file system, no fsync
    spool.sync_many([*blobs, blobs[0]])
    assert len(syncfs_calls) == 1 and fsynced == []
    spool.sync_many([])  # nothing to make durable: no call
    assert len(syncfs_calls) == 1


def test_sync_many_without_syncfs_fsyncs_each_blob_its_folder_and_the_root(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_syncfs", None)  # not Linux
    blobs = _two_blobs_unsynced(spool)
    fsynced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}") if Path("/proc/self/fd").is_dir() else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    # When
    spool.sync_many(blobs)
    # Then each blob, each blob's folder, then the root (where the folders were made)
    if Path("/proc/self/fd").is_dir():
        folders = sorted({str(spool.path(blob).parent) for blob in blobs})
        assert sorted(fsynced[:2]) == sorted(str(spool.path(blob)) for blob in blobs)
        assert fsynced[2:] == [*folders, str(spool.root)]
    else:
        assert len(fsynced) == 5


def test_sync_many_falls_back_to_fsync_where_the_kernel_has_no_syncfs(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_syncfs", _syncfs_failing(errno.ENOSYS))
    blobs = _two_blobs_unsynced(spool)
    fsynced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd))[1])
    # When
    spool.sync_many(blobs)
    # Then the blobs, their folders and the root were fsynced, and syncfs is not tried again
    assert len(fsynced) == 5
    assert spool._syncfs is None


def test_a_write_error_syncfs_reports_is_a_transient_error_naming_the_spool(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_syncfs", _syncfs_failing(errno.EIO))
    blobs = _two_blobs_unsynced(spool)
    # When / Then: the batch is not relied on, and the error says which spool and why
    with pytest.raises(TransientError) as raised:
        spool.sync_many(blobs)
    assert raised.value.rule == "spool-write"
    assert str(spool.root) in str(raised.value) and "2 blob(s) being made durable" in str(raised.value)


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:40 / /srv/hent rw,relatime - xfs /dev/vdb rw
41 40 0:41 / /srv/hent/remote\\040spool rw,nosuid - fuse.sshfs backup@nas:/spool rw,user_id=0
"""


def test_the_file_system_of_a_path_is_the_longest_mount_point_above_it() -> None:
    assert bus.spool._mount_type(Path("/var/lib/hent/spool"), MOUNTINFO) == "ext4"
    assert bus.spool._mount_type(Path("/srv/hent/spool"), MOUNTINFO) == "xfs"
    assert bus.spool._mount_type(Path("/srv/hent"), MOUNTINFO) == "xfs"
    assert bus.spool._mount_type(Path("/srv/hent/remote spool/ab"), MOUNTINFO) == "fuse.sshfs"
    assert bus.spool._mount_type(Path("/srv/hentx"), MOUNTINFO) == "ext4"  # a prefix of the name is not a parent
    assert bus.spool._mount_type(Path("/srv"), "") is None


def test_a_spool_on_fuse_fsyncs_its_blobs_rather_than_trust_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if bus.spool._SYNCFS is None:
        pytest.skip("no syncfs here (not Linux)")
    monkeypatch.setattr(bus.spool, "_mount_type", lambda _path, _text: "fuse.sshfs")
    assert Spool(tmp_path / "on-fuse")._syncfs is None
    monkeypatch.setattr(bus.spool, "_mount_type", lambda _path, _text: "ext4")
    assert Spool(tmp_path / "on-ext4")._syncfs is bus.spool._SYNCFS


def test_the_descriptor_a_spool_syncs_through_is_closed_with_the_spool(tmp_path: Path) -> None:
    if bus.spool._SYNCFS is None:
        pytest.skip("no syncfs here (not Linux)")
    spool = Spool(tmp_path / "spool")
    spool.sync_many([spool.put_stream(io.BytesIO(b"deliberation"), sync=False)])
    fd = spool._root_fd
    assert fd is not None and os.path.samefile(f"/proc/self/fd/{fd}", spool.root)
    # When the spool goes
    del spool
    # Then its descriptor is closed (not one left open per spool made, as the tests make thousands)
    assert not os.path.exists(f"/proc/self/fd/{fd}") or not os.path.samefile(f"/proc/self/fd/{fd}", tmp_path / "spool")
