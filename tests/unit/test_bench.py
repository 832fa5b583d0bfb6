"""The ACTES throughput bench runs end to end and reports figures: a smoke test, not a timing assertion."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.actes_throughput import make_pdf

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )


def test_bench_reports_both_sides_and_the_ratio_with_valid_archives(tmp_path: Path) -> None:
    # Given a tiny run of the bench, as a command
    done = run_bench(
        "-m", "bench.actes_throughput", "--acts", "5", "--rounds", "1", "--warmup", "2",
        "--json", "--workdir", str(tmp_path),
    )

    # Then it succeeds and prints one JSON object with positive figures
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("runtime_acts_per_s", "bare_acts_per_s", "ratio"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["target"] == 0.8 and result["target_met"] == (result["ratio"] >= 0.8)
    assert result["acts"] == 5 and len(result["rounds_detail"]) == 1
    # And the archives of both sides were checked, valid, with the same members and bytes
    archives = result["archives"]
    assert archives["runtime_checked"] > 0 and archives["bare_checked"] > 0
    assert archives["valid"] and archives["same_content"], archives
    # And the breakdown names where the runtime's time goes
    breakdown = result["breakdown"]
    assert breakdown["runtime_total_ms_per_act"] > 0 and breakdown["bare_total_ms_per_act"] > 0
    assert breakdown["runtime_ms_per_act"]["ledger: add_documents (a poll's batch)"] > 0
    assert breakdown["runtime_ms_per_act"]["spool: store the bundle's 3 files (put_stream)"] > 0
    assert breakdown["per_act"]["ledger write transactions"] > 0
    # And nothing is left behind without --keep
    assert list(tmp_path.iterdir()) == []


def test_bench_runs_as_a_script() -> None:
    done = run_bench("bench/actes_throughput.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "--acts" in done.stdout and "--profile" in done.stdout


def test_bench_pdfs_have_the_size_asked_and_do_not_compress() -> None:
    pdf = make_pdf(["Délibération B_1"], 200 * 1024, random.Random(1))
    assert len(pdf) == 200 * 1024
    assert pdf.startswith(b"%PDF-1.4\n") and pdf.endswith(b"%%EOF\n")
    assert len(gzip.compress(pdf)) > 0.95 * len(pdf)


class _CountingLedger:
    """What ``bench._bus.settled`` reads of a ledger: the counts by state (each read counted), and
    the failures' reasons."""

    def __init__(self) -> None:
        self.reads = 0
        self.delivered = 0
        self.failed = 0

    def counts_by_state(self) -> dict[str, dict[str, int]]:
        self.reads += 1
        return {"document": {"FAILED": 0}, "delivery": {"DELIVERED": self.delivered, "FAILED": self.failed}}

    def documents(self, **_: object) -> list[object]:
        return []

    def deliveries(self, **_: object) -> list[object]:
        return [SimpleNamespace(id="d1", reason="refused by the endpoint")] if self.failed else []


def test_settled_waits_on_done_cheaply_reads_the_ledger_at_its_pace_and_stops_on_a_failure(tmp_path: Path) -> None:
    from bench._bus import BenchError, settled

    bundles = [SimpleNamespace(sidecar=f"act-{n}.json") for n in range(3)]
    ledger = _CountingLedger()
    check = settled(ledger, tmp_path, bundles, 3, ledger_every=3600.0)  # type: ignore[arg-type]
    for _ in range(50):  # bundles missing: done/ looked at, the ledger not read before its time
        assert not check()
    assert ledger.reads == 0
    for bundle in bundles:
        (tmp_path / bundle.sidecar).touch()
    assert not check()  # all in done/: the ledger is read, its deliveries not all DELIVERED yet
    ledger.delivered = 3
    assert check()
    assert ledger.reads == 2

    failing = settled(ledger, tmp_path / "nothing", bundles, 3, context=lambda: " (the bus's log)", ledger_every=0.0)
    ledger.failed = 1
    reason = r"FAILED in the ledger: \['delivery d1: refused by the endpoint'\] \(the bus's log\)"
    with pytest.raises(BenchError, match=reason):
        failing()
