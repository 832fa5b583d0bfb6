"""The ACTES throughput bench runs end to end and reports figures: a smoke test, not a timing assertion."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

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
    assert breakdown["runtime_ms_per_act"]["ledger: add_document"] > 0
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
