"""A bus on a temporary folder, as an IT department would configure it, for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MAPPINGS = ROOT / "config" / "mappings"
CLASSIFICATION = ROOT / "config" / "classifications" / "demo-classification-7-2.xml"
REFERENCE = ROOT.parent / "shared" / "reference"


def reference_or_skip() -> Path:
    """../shared/reference; skipped when absent, failed when HENT_REQUIRE_REFERENCE=1."""
    if not REFERENCE.is_dir():
        message = f"reference directory not found: {REFERENCE}"
        if os.environ.get("HENT_REQUIRE_REFERENCE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE


def write_config(
    workspace: Path,
    *,
    text_policy: str = "transliterate",
    poll: str = "0.2s",
    lease: str = "30s",
    sweep: str = "1s",
    metrics: bool = False,
    rh_mapping: Path | None = None,
    extra_bus: dict[str, Any] | None = None,
) -> Path:
    """Three drop folders (JSON, CSV, XML vendors) → one folder endpoint; returns the YAML path."""
    ready = {"min_age": "0s", "stable": False}
    folder = {"type": "folder", "poll": poll, "ready": ready}
    config: dict[str, Any] = {
        "bus": {
            "state_dir": str(workspace / "var"),
            "text_policy": text_policy,
            "lease": lease,
            "sweep": sweep,
            "metrics": {"enabled": metrics, "listen": "127.0.0.1:0"},
            **(extra_bus or {}),
        },
        "collectivites": [{
            "siren": "214400152", "departement": "044", "arrondissement": 1, "nature": "31",
            "return_emails": ["actes@saint-herblain.fr"], "classification": str(CLASSIFICATION),
            "classification_date": "2025-01-15",
        }],
        "connectors": {
            "deliberations": {**folder, "path": str(workspace / "drop" / "deliberations"), "pattern": "*.json"},
            "rh": {**folder, "path": str(workspace / "drop" / "rh"), "pattern": "*.csv"},
            "finances": {**folder, "path": str(workspace / "drop" / "finances"), "pattern": "*.xml"},
            "prefecture": {"type": "folder", "path": str(workspace / "out"), "create": True,
                           "trigram": "HNT", "quadrigram": "TACT"},
        },
        "routes": [
            {"name": "deliberations", "from": "deliberations", "map": str(MAPPINGS / "deliberations-json.yaml"),
             "to": "prefecture"},
            {"name": "arretes-rh", "from": "rh", "when": {"nature": 3},
             "map": str(rh_mapping or MAPPINGS / "rh-csv.yaml"), "to": "prefecture"},
            {"name": "contrats", "from": "finances", "when": {"nature": 4},
             "map": str(MAPPINGS / "contrats-xml.yaml"), "to": "prefecture"},
        ],
    }
    for name in ("deliberations", "rh", "finances"):
        (workspace / "drop" / name).mkdir(parents=True, exist_ok=True)
    path = workspace / "hent.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def archive_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python run_bus.py ARGS`` from the repository root, as the README shows it, with no
    HENT_ variable of the caller's environment but those given."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HENT_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "run_bus.py", *args], cwd=ROOT, env=environment, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def ledger_outcome(config_path: Path) -> dict[str, Any]:
    """Each document of the bus's ledger by bundle: ``{"doc": DocumentRow, "deliveries": [...]}``."""
    from bus.config import load_config
    from bus.ledger import Ledger

    ledger = Ledger(load_config(config_path).bus.ledger)
    try:
        return {d.bundle: {"doc": d, "deliveries": ledger.deliveries_of(d.id)} for d in ledger.documents()}
    finally:
        ledger.close()


def run_until_idle(config_path: Path, *, timeout: float = 60, retry: Any = None) -> dict[str, Any]:
    """Run the bus of ``config_path`` until every delivery is final; then :func:`ledger_outcome`."""
    from bus.config import load_config
    from bus.runtime import Runtime
    from routes.pipeline import Pipeline

    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=retry, serve_http=False)
    assert runtime.run_until_idle(timeout=timeout), "the bus did not finish"
    return ledger_outcome(config_path)
