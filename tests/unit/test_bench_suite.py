"""The benchmark suite's command runs a bench in a process of its own and prints well-formed lines:
a smoke test on the cheapest bench (the whole ``--quick`` suite is run by .ci/run), and the line
format itself.  No timing is asserted."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import run
from bench._common import FIGURE_LINE, SKIPPED_LINE, SUMMARY_LINE, Figure, skipped, summary

REPO = Path(__file__).resolve().parents[2]


def run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "bench/run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


def test_the_cheapest_quick_bench_prints_well_formed_lines(tmp_path: Path) -> None:
    # Given the suite's command, asked for the cheapest bench in its reduced form
    done = run_suite("--quick", "--only", "ledger_transitions", "--workdir", str(tmp_path))

    # Then it succeeds: a header, the bench's status, its figures (or a skip saying why), the summary
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# hent benchmark suite, quick run")
    assert re.fullmatch(r"# ledger_transitions: ran in [\d.]+ s", lines[1]), lines[1]
    figures = [m for line in lines if (m := FIGURE_LINE.fullmatch(line))]
    skips = [m for line in lines if (m := SKIPPED_LINE.fullmatch(line))]
    assert {m["name"] for m in figures + skips} == {"ledger_sqlite", "ledger_postgresql"}, done.stdout
    sqlite = next(m for m in figures if m["name"] == "ledger_sqlite")
    assert sqlite["unit"] == sqlite["baseline_unit"] == "transitions/s"
    assert float(sqlite["value"]) > 0 and float(sqlite["baseline"]) > 0 and float(sqlite["ratio"]) > 0
    assert sqlite["target"].startswith("none (informative")
    for skip in skips:
        assert "HENT_TEST_POSTGRES_URL unset" in skip["why"]
    # And every other line is a comment, the last one the count of targets met
    assert all(line.startswith("#") or FIGURE_LINE.fullmatch(line) or SKIPPED_LINE.fullmatch(line)
               for line in lines[:-1]), done.stdout
    assert SUMMARY_LINE.fullmatch(lines[-1]) and lines[-1] == "targets met: 0/0", lines[-1]
    # And nothing is left behind in the work folder
    assert list(tmp_path.iterdir()) == []


def test_the_suite_reports_as_json(tmp_path: Path) -> None:
    done = run_suite("--quick", "--only", "ledger_transitions", "--json", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["mode"] == "quick" and result["errors"] == 0 and result["targets"] == 0
    [bench] = result["benches"]
    assert bench["name"] == "ledger_transitions" and bench["status"] == "ok" and bench["exit_code"] == 0
    assert bench["figures"][0]["name"] == "ledger_sqlite"


def test_each_bench_folder_stays_until_the_suite_ends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # Given two quick benches, and a look into the suite's folder as each one starts
    seen: list[list[str]] = []
    real = run.run_bounded

    def looking(command: list[str], timeout: float) -> Any:
        suite = Path(command[command.index("--workdir") + 1])
        seen.append(sorted(p.name.rsplit("-", 1)[0] for p in suite.iterdir()))
        assert suite.parent == tmp_path and "--keep" in command
        return real(command, timeout)

    monkeypatch.setattr(run, "run_bounded", looking)
    # When the suite runs them
    code = run.main(["--quick", "--only", "ledger_transitions,xsd_validation", "--workdir", str(tmp_path)])
    # Then the first bench's folder was still there when the second began (its thousands of files are
    # not deleted under the next bench's feet), and nothing is left once the suite is done
    assert code == 0, capsys.readouterr()
    assert seen == [[], ["hent-bench-ledger_transitions"]]
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_bench_is_refused_with_the_names() -> None:
    done = run_suite("--only", "end_to_edn")
    assert done.returncode == 2
    assert "unknown bench end_to_edn: one of ledger_transitions, xsd_validation" in done.stderr


def test_a_bench_that_fails_is_reported_and_the_suite_exits_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Given a suite whose only bench is a script that does not exist
    missing = run.Bench("no_such_bench", "a bench that cannot run", quick=())
    monkeypatch.setattr(run, "BENCHES", (missing,))
    monkeypatch.setattr(run, "NAMES", ("no_such_bench",))
    # When it runs
    code = run.main(["--quick", "--workdir", str(tmp_path)])
    # Then the failure is reported, the count says so, and the exit code is 1; the suite's folder is gone
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert re.fullmatch(r"# no_such_bench: ERROR after [\d.]+ s: exit code 2: .*", out[1]), out
    assert out[-2].startswith("# 0 bench(es) ran, 1 errored; wall time"), out
    assert out[-1] == "targets met: 0/0"
    assert list(tmp_path.iterdir()) == []


def test_figure_lines_read_back_as_written() -> None:
    met = Figure("end_to_end", 52.345, "acts/s", 70.0, "bare loop", "ratio >= 0.7", False)
    informative = Figure("xsd_validation", 41234.0, "validations/s", 2400.5, "xmlschema", note="informative: lxml")
    no_twin = Figure("soap_sent_to_ack_p99", 0.25, "ms", None, "no bare twin")
    lines = [f.line() for f in (met, informative, no_twin)]
    assert lines == [
        "end_to_end: 52.3 acts/s | baseline: 70.0 acts/s (bare loop) | ratio: 0.75 | target: ratio >= 0.7: NOT met",
        "xsd_validation: 41234 validations/s | baseline: 2400 validations/s (xmlschema) | ratio: 17.18 "
        "| target: none (informative: lxml)",
        "soap_sent_to_ack_p99: 0.250 ms | baseline: none (no bare twin) | ratio: - | target: none (report)",
    ]
    parsed = [FIGURE_LINE.fullmatch(line) for line in lines]
    assert all(parsed)
    assert [m["ratio"] for m in parsed if m] == ["0.75", "17.18", "-"]
    assert summary([met, informative, no_twin]) == "targets met: 0/1"
    assert SKIPPED_LINE.fullmatch(skipped("scale_out", "HENT_TEST_AMQP_URL unset"))


def test_the_existing_bench_lines_fit_the_suite_format() -> None:
    # sftp_memory prints its own lines: the suite must read them
    line = ("passthrough_peak_rss: 100.1 MiB | baseline: 86.0 MiB (idle bus) | ratio: 1.16 | target: < 200 MiB: met")
    match = FIGURE_LINE.fullmatch(line)
    assert match and match["target"] == "< 200 MiB: met"
    assert run._target(match.groupdict()) is True
    assert not math.isnan(float(match["value"]))


def test_a_bench_past_its_time_is_ended_with_all_it_started(tmp_path: Path) -> None:
    # Given a "bench" that starts a child of its own (as a bench starts the bus and an sshd), then hangs
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(600)\n")
    # When the suite's time for it runs out
    done, timed_out = run.run_bounded([sys.executable, "-c", script], timeout=2)
    # Then it is ended, and so is its child: nothing is left running
    assert timed_out and done.returncode is not None
    child = int(pid_file.read_text())
    # (a process closes its files before it becomes a zombie: give its exit a moment to finish)
    deadline = time.monotonic() + 10.0
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), f"the bench's child {child} outlived the bench"


def _running(pid: int) -> bool:
    """Whether ``pid`` is still a live process (gone or a zombie is ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_bench_in_time_gives_its_output(tmp_path: Path) -> None:
    done, timed_out = run.run_bounded([sys.executable, "-c", "print('figure'); import sys; sys.exit(3)"], timeout=60)
    assert not timed_out and done.returncode == 3 and done.stdout == "figure\n"
