"""SFTP options, host key fingerprints, error translation and a server that never answers."""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
from pathlib import Path

import paramiko
import pytest
from pydantic import ValidationError

from bus import registry
from bus.connector import Artifact
from bus.errors import ConfigError, DocumentError, TransientError
from connectors._sftp_common import TransientAlert, fingerprint, load_key, open_session, sftp_errors
from connectors.sftp_inbound import SftpInbound
from connectors.sftp_outbound import SftpOutbound, SftpOutboundConfig

needs_keygen = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")


def _keygen(path: Path, kind: str, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path)], check=True)
    return path


def options(tmp_path: Path, **extra: object) -> dict[str, object]:
    known = tmp_path / "known_hosts"
    known.touch()
    return {"type": "sftp", "host": "127.0.0.1", "username": "hent", "password": "not-used-here",
            "known_hosts": str(known), "path": "/outbox", **extra}


def test_a_host_key_must_be_pinned() -> None:
    # Given neither known_hosts nor host_key_fingerprint, Then the configuration is refused, saying how
    with pytest.raises(ValidationError) as refused:
        SftpOutboundConfig.model_validate({"type": "sftp", "host": "sftp.example", "port": 2222, "username": "u",
                                           "password": "p4ssword", "path": "/in"})
    assert refused.value.errors()[0]["msg"] == (
        "the server's host key must be pinned: set known_hosts (ssh-keyscan -p 2222 sftp.example >> known_hosts) "
        "or host_key_fingerprint (SHA256:..., from ssh-keygen -lf)"
    )


def test_credentials_are_required_and_the_password_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as refused:
        SftpOutboundConfig.model_validate({**options(tmp_path), "password": None})
    assert refused.value.errors()[0]["msg"] == "set key_file or password to log in"
    config = SftpOutboundConfig.model_validate(options(tmp_path))
    assert "not-used-here" not in repr(config)


def test_a_fingerprint_must_look_like_ssh_keygen_s(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="host_key_fingerprint"):
        SftpOutboundConfig.model_validate({**options(tmp_path), "host_key_fingerprint": "MD5:aa:bb"})


@needs_keygen
@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_fingerprint_is_the_one_ssh_keygen_prints_and_keys_load(tmp_path: Path, kind: str) -> None:
    key_file = _keygen(tmp_path / "key", kind)
    printed = subprocess.run(["ssh-keygen", "-lf", str(key_file)], capture_output=True, text=True, check=True)
    config = SftpOutboundConfig.model_validate({**options(tmp_path), "key_file": str(key_file)})
    key = load_key("vendor", config)
    assert key is not None and fingerprint(key) == printed.stdout.split()[1]


@needs_keygen
def test_an_encrypted_key_without_its_passphrase_is_a_config_error(tmp_path: Path) -> None:
    key_file = _keygen(tmp_path / "key", "ed25519", passphrase="correct horse")
    config = SftpOutboundConfig.model_validate({**options(tmp_path), "key_file": str(key_file)})
    with pytest.raises(ConfigError, match="is encrypted: set key_passphrase"):
        load_key("vendor", config)
    unlocked = SftpOutboundConfig.model_validate(
        {**options(tmp_path), "key_file": str(key_file), "key_passphrase": "correct horse"})
    assert load_key("vendor", unlocked) is not None


@pytest.mark.parametrize(("raised", "kind", "rule"), [
    (paramiko.AuthenticationException("no"), TransientAlert, "sftp-auth"),
    (TimeoutError(), TransientError, "sftp-timeout"),
    (EOFError(), TransientError, "sftp-connection"),
    (paramiko.SSHException("lost"), TransientError, "sftp-connection"),
    (OSError(errno.ENOENT, "No such file"), TransientError, "sftp-not-found"),
    (OSError(errno.EACCES, "Permission denied"), TransientAlert, "sftp-permission"),
    (OSError("Failure"), TransientError, "sftp-io"),
])
def test_paramiko_errors_are_translated(raised: Exception, kind: type[TransientError], rule: str) -> None:
    with pytest.raises(kind) as translated, sftp_errors("vendor", "/outbox/a.zip"):
        raise raised
    assert translated.value.rule == rule and translated.value.connector == "vendor"
    assert translated.value.path == "/outbox/a.zip" and translated.value.__cause__ is raised


def test_a_server_that_never_answers_times_out_within_connect_timeout(tmp_path: Path, silent_server: int) -> None:
    config = SftpOutboundConfig.model_validate({**options(tmp_path), "port": silent_server, "connect_timeout": "1s"})
    started = time.monotonic()
    with pytest.raises(TransientError) as failed:
        open_session("vendor", config)
    assert time.monotonic() - started < 4
    assert failed.value.rule in ("sftp-timeout", "sftp-connection")


def test_the_registry_finds_both_directions() -> None:
    assert registry.connector_class("sftp", "inbound") is SftpInbound
    assert registry.connector_class("sftp", "outbound") is SftpOutbound


def test_an_archive_over_the_limit_fails_before_any_connection(tmp_path: Path) -> None:
    archive = tmp_path / "HNT-a.tar.gz"
    archive.write_bytes(b"x" * 100)
    config = SftpOutboundConfig.model_validate({**options(tmp_path), "port": 9, "max_archive_size": 10})
    endpoint = SftpOutbound("prefecture", config)
    with pytest.raises(DocumentError) as refused:
        endpoint.send(Artifact(archive.name, archive, "0" * 64, "actes-archive"))
    assert refused.value.rule == "archive-max-size"
