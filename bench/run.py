"""The benchmark suite in one command: every bench, each in a process of its own, one line per
figure beside its baseline measured in the same run, then how many targets were met.

    python bench/run.py                     # the whole suite (about 10 minutes on 2 cores)
    python bench/run.py --quick             # the reduced version, under 3 minutes: checks that they run (CI)
    python bench/run.py --only end_to_end   # one bench (or several: --only a,b / --only a --only b)
    python bench/run.py --json              # one JSON object
    python bench/run.py --list              # the benches and what they measure

Each bench is ``python bench/<name>.py`` with its own options (``--quick`` for the reduced
run): a bench that crashes or times out is reported and the others run.  A figure reads::

    name: value unit | baseline: value unit (what) | ratio: x.xx | target: rule: met

(see ``bench/_common.py``); a figure that cannot be measured here (no PostgreSQL, no RabbitMQ)
is ``name: skipped: why``.  The last line is ``targets met: K/N`` over every bench.  Exit 0
when every bench ran, targets met or not (it is a report); 1 when one errored.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/run.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from bench._common import FIGURE_LINE, SKIPPED_LINE, SUMMARY_LINE  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Bench:
    name: str
    what: str
    full: tuple[str, ...] = ()  #: options of the full run
    quick: tuple[str, ...] = ("--quick",)  #: options of the reduced run
    timeout: float = 1800.0  #: seconds, full run
    quick_timeout: float = 300.0


#: cheapest first
BENCHES = (
    Bench("ledger_transitions", "ledger state transitions/s with durability, SQLite and PostgreSQL, vs bare SQL"),
    Bench("xsd_validation", "XSD validations/s of an Acte: lxml (the bus's path) vs xmlschema"),
    Bench("actes_throughput", "map + build + validate + pack through the runtime vs bare lxml + tarfile (>= 0.8)",
          full=("--figures",), quick=("--quick", "--figures")),
    Bench("soap_throughput", "SOAP submit + acknowledgment through the simulator vs bare zeep; SENT → ACK p99",
          full=("--figures",), quick=("--quick", "--figures")),
    Bench("end_to_end", "drop folder → ledger → archive → SFTP → done, acts/s vs bare loop with upload (>= 0.7)"),
    Bench("latency", "pickup → SENT at half the maximum rate, p50 and p99 (p99 <= 1 s)"),
    Bench("recovery", "restart → first new SENT after SIGKILL with 1,000 in flight (<= 2 x bus.lease)"),
    Bench("scale_out", "1 vs 2 workers on RabbitMQ + PostgreSQL vs the bare loop's 1 vs 2 processes (>= 0.9)"),
    Bench("sftp_memory", "peak RSS carrying 1 GiB and a 140 MiB annex over SFTP (< 200 MiB), MB/s vs bare paramiko"),
)
NAMES = tuple(b.name for b in BENCHES)


def run_bounded(command: list[str], timeout: float) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run ``command`` in a process group of its own; past ``timeout`` the whole group (the bench,
    the bus and the sshd it started) gets SIGTERM, then SIGKILL 10 s later, so that nothing is left
    running.  (The result, whether it timed out.)"""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), False
    except subprocess.TimeoutExpired:
        for signal_number in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal_number)
            try:
                stdout, stderr = process.communicate(timeout=10.0)
                break
            except subprocess.TimeoutExpired:
                stdout, stderr = "", ""
        # a descendant that closed its pipes but ignored SIGTERM is still in the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), True


def run_bench(bench: Bench, args: argparse.Namespace, suite: Path) -> dict[str, Any]:
    """Run one bench in its own process, its folder kept in ``suite`` until the suite ends; its
    figures, skips, notes, status and time."""
    options = [*(bench.quick if args.quick else bench.full), "--workdir", str(suite), "--keep"]
    command = [sys.executable, str(REPO / "bench" / f"{bench.name}.py"), *options]
    timeout = bench.quick_timeout if args.quick else bench.timeout
    began = time.monotonic()
    result: dict[str, Any] = {"name": bench.name, "command": " ".join(command[1:]), "figures": [], "skipped": [],
                              "notes": []}
    done, timed_out = run_bounded(command, timeout)
    if timed_out:
        result.update(status="error", seconds=time.monotonic() - began, exit_code=None,
                      error=f"timed out after {timeout:.0f} s", stderr_tail=(done.stderr or "").splitlines()[-20:])
        return result
    result.update(seconds=time.monotonic() - began, exit_code=done.returncode)
    for line in done.stdout.splitlines():
        if line.startswith("#"):
            result["notes"].append(line)
        elif figure := FIGURE_LINE.fullmatch(line):
            result["figures"].append({"line": line, **{k: v for k, v in figure.groupdict().items() if v is not None}})
        elif skip := SKIPPED_LINE.fullmatch(line):
            result["skipped"].append({"line": line, **skip.groupdict()})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        result.update(status="error", error=f"exit code {done.returncode}: {last}",
                      stderr_tail=done.stderr.splitlines()[-20:])
    elif not result["figures"] and not result["skipped"]:
        result.update(status="error", error="no figure line in its output", stdout_tail=done.stdout.splitlines()[-20:])
    elif not any(SUMMARY_LINE.fullmatch(line) for line in done.stdout.splitlines()):
        result.update(status="error", error="no 'targets met' line in its output")
    else:
        result["status"] = "ok"
    return result


def _target(figure: dict[str, Any]) -> bool | None:
    """True/False for a figure with a target (met or not), None for an informative one."""
    target = figure["target"]
    if target.endswith(": NOT met"):
        return False
    if target.endswith(": met"):
        return True
    return None


def tally(results: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Targets met, targets, benches errored."""
    outcomes = [_target(f) for r in results for f in r["figures"]]
    ruled = [o for o in outcomes if o is not None]
    return sum(ruled), len(ruled), sum(r["status"] != "ok" for r in results)


def header(args: argparse.Namespace) -> str:
    try:
        load = "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        load = "load average unknown"
    return (f"# hent benchmark suite, {'quick' if args.quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M')}: "
            f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {load}")


def report_bench(result: dict[str, Any], verbose: bool) -> list[str]:
    if result["status"] == "ok":
        lines = [f"# {result['name']}: ran in {result['seconds']:.1f} s"]
    else:
        lines = [f"# {result['name']}: ERROR after {result['seconds']:.1f} s: {result['error']}"]
        lines += [f"#   {line}" for line in result.get("stderr_tail", result.get("stdout_tail", []))[-8:]]
    if verbose:
        lines += result["notes"]
    lines += [f["line"] for f in result["figures"]] + [s["line"] for s in result["skipped"]]
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Hent's benchmarks, each beside its bare baseline in the same run; one line per figure, then "
                    "'targets met: K/N'. Exit 0 when every bench ran, 1 when one errored.",
    )
    parser.add_argument("--quick", action="store_true", help="the reduced suite (under 3 minutes): checks that "
                        "every bench runs, not its figures (CI)")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"run only these benches (comma-separated or repeated): {', '.join(NAMES)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument("--verbose", action="store_true", help="also print each bench's context lines (#)")
    parser.add_argument("--list", action="store_true", help="list the benches and exit")
    parser.add_argument("--workdir", type=Path,
                        help="where the suite makes its folder (each bench a folder inside; all removed at the end)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for item in args.only or [] for name in item.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in NAMES]
    if unknown:
        parser.error(f"unknown bench {', '.join(unknown)}: one of {', '.join(NAMES)}")
    args.benches = [b for b in BENCHES if not chosen or b.name in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for bench in BENCHES:
            print(f"{bench.name:<20} {bench.what}")
        return 0
    began = time.monotonic()
    results = []
    if not args.json:
        print(header(args), flush=True)
    # every bench's folder is removed at the end, not before the next bench: on a file system that
    # skips inodes freed in the last minute (ext4 without a journal), the thousands one bench frees
    # would slow every file the next one creates (bench/README.md)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    suite = Path(tempfile.mkdtemp(prefix="hent-bench-suite-", dir=args.workdir))
    try:
        for bench in args.benches:
            result = run_bench(bench, args, suite)
            results.append(result)
            if not args.json:
                print("\n".join(report_bench(result, args.verbose)), flush=True)
    finally:
        shutil.rmtree(suite, ignore_errors=True)
    met, total, errors = tally(results)
    wall = time.monotonic() - began
    if args.json:
        print(json.dumps({"mode": "quick" if args.quick else "full", "header": header(args), "benches": results,
                          "targets_met": met, "targets": total, "errors": errors, "wall_s": wall}, indent=2,
                         ensure_ascii=False))
    else:
        print(f"# {len(results) - errors} bench(es) ran, {errors} errored; wall time {wall:.0f} s")
        print(f"targets met: {met}/{total}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
