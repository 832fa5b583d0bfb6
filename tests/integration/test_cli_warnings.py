"""``run_bus.py check`` and ``run``, as a user runs them, on a configuration that works but is not safe:
a key file and a password file every user can read, an endpoint that does not verify TLS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import ROOT, run_cli
from tests.unit.test_insecure import SOAP, configuration

TLS_OFF = (
    "connector 'tdt': verify_tls is false: the server's certificate is NOT verified; anyone on the network "
    "path can pose as the server and intercept the credentials and what is sent; set verify_tls: true "
    "(with ca_file for a private CA)"
)


def unsafe(tmp: Path) -> Path:
    """Given a SOAP endpoint with verify_tls: false, its client key and its password file at 0644."""
    return configuration(tmp, SOAP + "    verify_tls: false\n", secret_mode=0o644, key_mode=0o644)


def test_check_prints_a_warning_per_file_others_can_read_and_per_unverified_endpoint_and_still_passes(
    tmp_path: Path,
) -> None:
    config = unsafe(tmp_path)
    secret, key = tmp_path / "secrets" / "tdt-password", tmp_path / "tls" / "client.key"

    # When it is checked
    result = run_cli("check", "-c", str(config))

    # Then check passes (exit 0, its summary on stdout) and stderr lists each warning, then their count
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK — 2 connector(s), 1 route(s)")
    warnings = [line for line in result.stderr.splitlines() if not line[:1].isdigit()]  # log lines start with a date
    assert warnings == [
        f"warning: {config}:13: connectors.tdt.password: secret file {secret} (${{file:...}}) is readable by every "
        f"user (mode 0644): chmod 600 {secret} [secret-file-mode]",
        f"warning: {config}:10: connectors.tdt.client_key: private key {key} is readable by every user (mode 0644): "
        f"chmod 600 {key} [secret-file-mode]",
        f"warning: {config}:14: connectors.tdt.verify_tls: {TLS_OFF} [tls-unverified]",
        f"{config}: 3 warning(s)",
    ]
    assert "s3cr3t-from-a-file" not in result.stdout + result.stderr


def test_check_prints_no_warning_once_the_files_are_private_and_tls_verified(tmp_path: Path) -> None:
    config = configuration(tmp_path, SOAP)
    result = run_cli("check", "-c", str(config))
    assert (result.returncode, result.stderr) == (0, "")


def test_check_gives_the_warnings_beside_the_errors_and_still_exits_2(tmp_path: Path) -> None:
    config = unsafe(tmp_path)
    config.write_text(config.read_text().replace("bus: {state_dir: var}", "bus: {state_dir: var, lease: soon}"))
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{config}:1: bus.lease: invalid duration 'soon'")
    assert lines[-1] == f"{config}: 1 error(s)"  # warnings need a configuration that loads


def test_run_logs_the_file_warnings_and_the_unverified_endpoint_at_start(tmp_path: Path) -> None:
    config = unsafe(tmp_path)
    config.write_text(
        config.read_text().replace("bus: {state_dir: var}", "bus: {state_dir: var, metrics: {enabled: false}}")
    )
    key = tmp_path / "tls" / "client.key"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HENT_")}

    # When the bus is started, then stopped as systemd stops it
    process = subprocess.Popen(
        [sys.executable, "run_bus.py", "run", "-c", str(config)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "var" / "ledger.db").exists():
                time.sleep(1.0)
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # Then its log gives each warning, with the file, the field and the fix, at WARNING
    warnings = [line.split(" ", 2)[2] for line in stderr.splitlines() if " WARNING bus.insecure: " in line]
    assert (
        f"WARNING bus.insecure: {config}:10: connectors.tdt.client_key: private key {key} is readable by every "
        f"user (mode 0644): chmod 600 {key} [secret-file-mode]" in warnings
    ), stderr
    assert any("connectors.tdt.password: secret file" in line for line in warnings), stderr
    assert f"WARNING bus.insecure: {TLS_OFF}" in warnings, stderr
