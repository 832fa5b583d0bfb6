"""End to end on the embedded default: drop folder → ledger → archive → SFTP → done, acts/s
beside the bare loop with the upload, in the same run.

Measured side: the real bus, ``python run_bus.py run -c CONFIG`` (a folder source polled every
0.2 s, the deliberations route and its vendor mapping, an ``sftp`` endpoint on OpenSSH's sshd
on 127.0.0.1; the embedded SQLite ledger and kombu SQLite broker, 2 workers, lease 60 s: the
product's defaults; metrics off).  A round renames ``--acts`` sidecars into the drop folder at
once (their PDFs are there already) and ends when every delivery is DELIVERED (uploaded to
``.part``, size checked, renamed) and every bundle is in ``done/``: acts / (drop → the last of
those, from the ledger's ``final_at`` and the ``done/`` files' ctime).

Baseline: :class:`bench._bus.BareUploader`, one process, one thread, on the same acts' bytes:
json, lxml build, XSD validation, tar.gz with tarfile's gzip -9, paramiko put to
``.part``, stat, rename, on one SSH connection opened beforehand, to the same sshd.

The bus's processes are stopped (SIGSTOP) while the bare loop runs, so that its idle polls (a
few % of a core) do not slow the baseline.  Rounds alternate (bare first in odd ones) after a
warm-up; each round's bus / bare ratio is paired (the two ran one after the other), and the
figure is the round of the median ratio.  Target (issue 10): bus acts/s >= 0.7 × bare acts/s.
``--profile FILE`` adds a round of the bus under cProfile (every thread of its first process) and
prints the top functions by cumulative time on stderr.

    python -m bench.end_to_end [--acts 200] [--rounds 5] [--processes N] [--quick] [--profile e2e.prof] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/end_to_end.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bench._bus import (  # noqa: E402
    BareUploader,
    BenchError,
    BusProcess,
    drop,
    read_ledger,
    settled,
    stopping,
    wait_for,
    write_acts,
    write_config,
)
from bench._common import Figure, measure_in_workdir, summary  # noqa: E402
from bench._sshd import SshServer, running_sshd  # noqa: E402
from bench.actes_throughput import Bundle  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.ledger import Ledger  # noqa: E402

TARGET = 0.7


class Bench:
    """One sshd, one bus (started once, as in production its ledger grows), the bare uploader."""

    def __init__(self, args: argparse.Namespace, root: Path, server: SshServer) -> None:
        self.args, self.root, self.server = args, root, server
        self.today = date.today()
        self.decision = self.today - timedelta(days=3)
        self.drop_dir, self.bare_dir, self.out_dir = root / "drop", root / "bare-in", root / "bare-out"
        self.remote = server.root / "tdt"
        bare_remote = server.root / "bare"
        for folder in (self.remote, bare_remote, self.out_dir):
            folder.mkdir(parents=True)
        self.config = write_config(root / "hent.yaml", server=server, drop_dir=self.drop_dir, remote=self.remote,
                                   state_dir=root / "var", bus={"processes": args.processes})
        self.ledger_url = load_config(self.config).bus.ledger
        self.bare = BareUploader(server, bare_remote, self.today)
        self.delivered = 0  #: deliveries expected DELIVERED so far (the ledger keeps every round's)

    def acts(self, tag: str, count: int) -> list[Bundle]:
        return write_acts(self.drop_dir, self.bare_dir, tag, count, decision=self.decision, seed=self.args.seed)

    def run_bare(self, bundles: list[Bundle]) -> tuple[float, float]:
        """Seconds, and CPU seconds of this process, for the bare loop on ``bundles``."""
        gc.collect()
        os.sync()  # neither side pays for the other's writes (nor for the acts' files just written)
        cpu = time.process_time()
        began = time.perf_counter()
        for bundle in bundles:
            self.bare.send(bundle, self.out_dir)
        return time.perf_counter() - began, time.process_time() - cpu

    def run_bus(self, bus: BusProcess, ledger: Ledger, bundles: list[Bundle]) -> dict[str, float]:
        """Drop ``bundles``, wait until each is DELIVERED and in done/; the times, from the drop."""
        done = self.drop_dir / "done"
        self.delivered += len(bundles)

        finished = settled(ledger, done, bundles, self.delivered, context=lambda: f"\n{bus.tail()}")
        os.sync()  # as for the bare loop
        cpu = bus.cpu_seconds()
        dropped = drop(self.drop_dir, bundles)
        wait_for("every delivery DELIVERED and every bundle in done/", finished, [bus], self.args.timeout, every=0.1)
        cpu = bus.cpu_seconds() - cpu
        delivered = [d.final_at.timestamp() for d in ledger.deliveries(state="DELIVERED") if d.final_at]
        delivered = [t for t in delivered if t >= dropped]
        received = [d.created_at.timestamp() for d in ledger.documents() if d.created_at.timestamp() >= dropped]
        last_settled = max(os.stat(done / b.sidecar).st_ctime for b in bundles)
        end = max(max(delivered), last_settled)
        return {"seconds": end - dropped, "cpu_s": cpu, "first_received": min(received) - dropped,
                "last_received": max(received) - dropped, "last_delivered": max(delivered) - dropped,
                "last_settled": last_settled - dropped}

    # a round's files stay until the work folder goes at the end: deleting them between rounds (and
    # the discards that follow) slowed the next round's file creations, whichever side came next


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    began = time.monotonic()
    with running_sshd(root / "sshd") as server:
        bench = Bench(args, root, server)
        try:
            bus = BusProcess(bench.config, root / "bus.log")
            with stopping(bus):
                wait_for("the bus's first poll", lambda: (bench.drop_dir / ".hent-work").is_dir(), [bus], 60)
                with read_ledger(bench.ledger_url) as ledger:
                    if args.warmup:  # imports, the mapping and schema caches, the first spool folders
                        warm = bench.acts("W", args.warmup)
                        with bus.paused():
                            bench.run_bare(warm)
                        bench.run_bus(bus, ledger, warm)
                    rounds = []
                    for number in range(1, args.rounds + 1):
                        tag = f"R{number}"
                        bundles = bench.acts(tag, args.acts)
                        if number % 2:
                            with bus.paused():  # the bare loop alone, as the bus is alone in its rounds
                                bare_s, bare_cpu = bench.run_bare(bundles)
                            times = bench.run_bus(bus, ledger, bundles)
                        else:
                            times = bench.run_bus(bus, ledger, bundles)
                            with bus.paused():
                                bare_s, bare_cpu = bench.run_bare(bundles)
                        rounds.append({"bus_acts_per_s": args.acts / times["seconds"],
                                       "bare_acts_per_s": args.acts / bare_s,
                                       "bus_cpu_ms_per_act": times.pop("cpu_s") * 1000 / args.acts,
                                       "bare_cpu_ms_per_act": bare_cpu * 1000 / args.acts, **times})
            code = bus.process.returncode
            if code != 0:
                raise BenchError(f"the bus exited with {code} after SIGTERM\n{bus.tail()}")
            profile = profile_round(bench, args) if args.profile else None
        finally:
            bench.bare.close()
    # each round's two sides ran one after the other: their ratio is paired, and the machine's drift
    # between rounds (the bare side moves by a quarter here) cancels out; the figure is the round of
    # the median ratio (an odd number of rounds: that round itself)
    paired = sorted(rounds, key=lambda r: r["bus_acts_per_s"] / r["bare_acts_per_s"])
    middle = paired[(len(paired) - 1) // 2]
    bus_rate, bare_rate = middle["bus_acts_per_s"], middle["bare_acts_per_s"]
    ratio = bus_rate / bare_rate
    return {"bench": "end_to_end", "acts": args.acts, "processes": args.processes, "rounds": rounds,
            "bus_acts_per_s": bus_rate, "bare_acts_per_s": bare_rate, "ratio": ratio, "target": TARGET,
            "wall_s": time.monotonic() - began, "profile": profile}


def profile_round(bench: Bench, args: argparse.Namespace) -> str:
    """A round of the bus under cProfile (every thread); the top entries by cumulative time."""
    out = Path(args.profile).resolve()
    bus = BusProcess(bench.config, bench.root / "bus-profiled.log", profile=out)
    with stopping(bus), read_ledger(bench.ledger_url) as ledger:
        wait_for("the profiled bus's first poll", lambda: bus.log.exists(), [bus], 60)
        time.sleep(1.0)  # its start-up and first polls
        bench.run_bus(bus, ledger, bench.acts("P", args.acts))
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(25)
    return text.getvalue()


def figures(result: dict[str, Any]) -> list[Figure]:
    ratio = result["ratio"]
    return [Figure("end_to_end", result["bus_acts_per_s"], "acts/s", result["bare_acts_per_s"],
                   "bare lxml + tarfile + paramiko put, one process", f"ratio >= {TARGET}", ratio >= TARGET)]


def notes(result: dict[str, Any]) -> list[str]:
    lines = [f"# end_to_end: {result['acts']} acts x {len(result['rounds'])} round(s), median; folder → SQLite "
             f"ledger → archive → SFTP (local sshd) → DELIVERED and done/; bus: {result['processes']} process(es) "
             "(bus.processes) of 2 workers (bus.workers)"]
    for n, r in enumerate(result["rounds"], start=1):
        lines.append(
            f"# round {n}: bus {r['bus_acts_per_s']:.1f} acts/s, bare {r['bare_acts_per_s']:.1f} acts/s; after the "
            f"drop: first RECEIVED {r['first_received']:.2f} s, last RECEIVED {r['last_received']:.2f} s, last "
            f"DELIVERED {r['last_delivered']:.2f} s, last in done/ {r['last_settled']:.2f} s; CPU per act: bus "
            f"{r['bus_cpu_ms_per_act']:.1f} ms (all its threads), bare {r['bare_cpu_ms_per_act']:.1f} ms")
    lines.append(f"# wall time {result['wall_s']:.1f} s")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end",
        description="acts/s end to end (drop folder → ledger → archive → SFTP → done) through the bus beside a bare "
                    "lxml + tarfile + paramiko loop; target ratio >= 0.7",
    )
    parser.add_argument("--acts", type=int, default=200, help="acts per round (default 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each side, median (default 5)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed acts of each side first (default 10)")
    parser.add_argument("--quick", action="store_true", help="30 acts, 1 round: checks that it runs (CI)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the PDFs' random samples")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="bus.processes: processes of the bus (default: this machine's CPUs, as "
                             "docs/deployment.md advises)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a round may take (default 600)")
    parser.add_argument("--profile", metavar="FILE", help="add a round of the bus under cProfile, written to FILE")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (ledger, spool, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.acts, args.rounds, args.warmup = 30, 1, 5
    if args.acts < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--acts and --rounds must be at least 1, --warmup at least 0")
    if args.warmup + args.acts * (args.rounds + 1) > 9999:
        parser.error("ACTES allows 9999 envelope serials per SIREN and day: lower --acts or --rounds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure_in_workdir("end_to_end", args, measure)
    if result is None:
        return 1
    profile = result.pop("profile")
    found = figures(result)
    if args.json:
        print(json.dumps({**result, "figures": [f.line() for f in found]}, indent=2))
    else:
        print("\n".join([*notes(result), *(f.line() for f in found), summary(found)]))
    if profile:
        print(f"\ncProfile of the bus, every thread, {args.acts} acts:\n{profile}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
