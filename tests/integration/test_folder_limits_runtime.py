"""A file of a dropped bundle that a writer still adds to after its claim (a handle left open): the
bus counts its bytes against the source's limits as it copies it into the spool, and refuses the
bundle past one — nothing in the ledger, its files in error/ beside a note, a reply, a metric — while
the bundle beside it goes through."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus import metrics
from bus.connector import Candidate, Claimed
from connectors.folder_inbound import FolderInbound
from simulators.backoffice import drop_deliberation
from tests.harness import run_until_idle, write_config

pytestmark = pytest.mark.integration

LIMIT = 64 * 1024


def test_a_file_still_written_after_its_claim_is_refused_when_it_passes_the_limit_while_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a drop folder whose files may weigh 64 KiB, and two deliberations well within it
    config = write_config(tmp_path)
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["connectors"]["deliberations"]["limits"] = {"max_file_bytes": LIMIT}
    config.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
    drop = tmp_path / "drop" / "deliberations"
    decision = date.today() - timedelta(days=1)
    drop_deliberation(drop, "DEL2026_010", decision=decision, annexes=0)
    drop_deliberation(drop, "DEL2026_011", decision=decision, annexes=0)
    sizes = {p.name: p.stat().st_size for p in drop.iterdir()}
    assert max(sizes.values()) < LIMIT
    # and the software still writing to one PDF once the bus has claimed it, past the limit
    claim = FolderInbound.claim

    def claimed_then_written(self: FolderInbound, candidate: Candidate) -> Claimed | None:
        claimed = claim(self, candidate)
        if claimed is not None and claimed.key == "DEL2026_011.json":
            with open(claimed.files["DEL2026_011.pdf"], "ab") as handle:
                handle.write(b"\0" * LIMIT)
        return claimed

    monkeypatch.setattr(FolderInbound, "claim", claimed_then_written)
    counted = {"connector": "deliberations", "rule": "file-too-large"}
    refused = metrics.REGISTRY.get_sample_value("hent_bundles_refused_total", counted) or 0.0

    # When the bus runs
    outcome = run_until_idle(config)

    # Then the bundle beside it is delivered, and the one written to is not in the ledger
    assert set(outcome) == {"DEL2026_010.json"}
    assert [d.state for d in outcome["DEL2026_010.json"]["deliveries"]] == ["DELIVERED"]
    # its files are in error/, as the software left them, beside a note naming the file, the option and the rule
    error = drop / "error"
    assert (error / "DEL2026_011.pdf").stat().st_size == sizes["DEL2026_011.pdf"] + LIMIT
    assert (error / "DEL2026_011.json").stat().st_size == sizes["DEL2026_011.json"]
    note = (error / "DEL2026_011.json.error.txt").read_text(encoding="utf-8")
    assert "DEL2026_011.pdf: limits.max_file_bytes: " in note and "grew past limits.max_file_bytes" in note, note
    assert "[file-too-large]" in note, note
    # the software finds a reply saying so
    replies: dict[str, Any] = {p.name: json.loads(p.read_text(encoding="utf-8"))
                               for p in (drop / "replies").glob("DEL2026_011.*.json")}
    assert [(r["state"], r["file"], r["rule"]) for r in replies.values()] == [
        ("FAILED", "DEL2026_011.pdf", "file-too-large")]
    # the operators' metrics count it, and nothing of it is left claimed or half copied
    assert metrics.REGISTRY.get_sample_value("hent_bundles_refused_total", counted) == refused + 1
    assert list((drop / ".hent-work").rglob("*")) == []
    assert list((tmp_path / "var" / "spool" / "tmp").iterdir()) == []
