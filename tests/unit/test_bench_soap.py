"""The SOAP throughput bench runs end to end against the simulator and reports figures: a smoke
test, not a timing assertion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.soap_throughput import percentile

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


def test_bench_reports_submitted_and_acknowledged_rates_and_the_latency(tmp_path: Path) -> None:
    # Given a tiny run of the bench, as a command
    done = run_bench("-m", "bench.soap_throughput", "--acts", "3", "--json", "--workdir", str(tmp_path))

    # Then it succeeds and prints one JSON object with positive figures
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bench"] == "soap_throughput" and result["acts"] == 3 and result["workers"] == 2
    for key in ("submitted_acts_per_s", "acknowledged_acts_per_s", "submitted_s", "acknowledged_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["submitted_s"] <= result["acknowledged_s"]
    latency = result["sent_to_acknowledged_ms"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p99"] <= latency["max"]
    # And it says that the latency includes the answers poll interval
    assert result["answers_poll_s"] == 0.2 and result["ack_delay_s"] == 0.0
    assert "answers poll" in result["note"] and "0.2 s" in result["note"]
    # And the simulator received each act exactly once
    received = result["received"]
    assert received["acts"] == 3 and received["exactly_once"], received
    assert received["calls"]["SubmitArchive"] == 3 and result["send_attempts"] == 3
    # And nothing is left behind without --keep
    assert list(tmp_path.iterdir()) == []


def test_bench_runs_as_a_script() -> None:
    done = run_bench("bench/soap_throughput.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "--acts" in done.stdout and "--workers" in done.stdout and "--json" in done.stdout


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 50) == 50.5
    assert round(percentile(values, 99), 2) == 99.01
    assert percentile([7.0], 99) == 7.0
