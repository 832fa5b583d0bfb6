"""Latency pickup → SENT at half the maximum rate, through the real bus, beside the bare loop's
time for one act.

The bus is ``python run_bus.py run -c CONFIG`` on the embedded default (SQLite ledger and
broker, 2 workers), a folder source polled every 0.2 s, the deliberations route, and an
``sftp`` endpoint on OpenSSH's sshd on 127.0.0.1 *with an answer folder*, so that an archive
uploaded there ends SENT (it waits for the ministry's answer), as on a real platform.

1. The maximum rate: ``--burst`` acts dropped at once; rate = acts / (drop → the last SENT).
2. The feed: one act every 2 / rate seconds for ``--seconds`` seconds (half that rate), each
   sidecar renamed into the drop folder on its schedule.
3. Per act, from the ledger's journal: **pickup → SENT** = the document RECEIVED (claimed,
   its files in the spool, fsynced, its row committed) → its delivery SENT (the archive
   built, validated, uploaded, renamed, the row committed).  drop → SENT (which adds the
   wait for the next poll, up to 0.2 s) is printed beside it.

Baseline: the bare loop (``bench._bus.BareUploader``: json, lxml, XSD, tarfile, paramiko put
+ rename on an open connection) timed act by act on the burst's acts: what one act costs with
no bus and no queue.  Target (issue 10): p99 <= 1 s.  Exit 0 whatever the figures.

    python -m bench.latency [--burst 100] [--seconds 40] [--quick] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/latency.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import time  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bench._bus import (  # noqa: E402
    BareUploader,
    BenchError,
    BusProcess,
    delivery_times,
    drop,
    failures,
    read_ledger,
    stopping,
    wait_for,
    write_acts,
    write_config,
)
from bench._common import Figure, percentile, report  # noqa: E402
from bench._sshd import running_sshd  # noqa: E402
from bench.actes_throughput import Bundle  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.ledger import Ledger  # noqa: E402

TARGET_MS = 1000.0
POLL = 0.2


def _sent_all(ledger: Ledger, expected: int, bus: BusProcess) -> bool:
    counts = ledger.counts_by_state()
    if counts["document"]["FAILED"] or counts["delivery"]["FAILED"]:
        raise BenchError(f"FAILED in the ledger: {failures(ledger)}\n{bus.tail()}")
    return counts["delivery"]["SENT"] >= expected


def latencies(ledger: Ledger, dropped: dict[str, float]) -> tuple[list[float], list[float]]:
    """Per act dropped (sidecar name → drop time): RECEIVED → SENT and drop → SENT, in seconds."""
    sent = delivery_times(ledger, "SENT")
    documents = {d.id: d for d in ledger.documents() if d.bundle in dropped}
    pickup, overall = [], []
    for delivery in ledger.deliveries():
        document = documents.get(delivery.document_id)
        if document is None or delivery.id not in sent:
            continue
        pickup.append(sent[delivery.id] - document.created_at.timestamp())
        overall.append(sent[delivery.id] - dropped[document.bundle])
    if len(pickup) != len(dropped):
        raise BenchError(f"{len(pickup)} acts SENT of the {len(dropped)} fed")
    return pickup, overall


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    began = time.monotonic()
    today = date.today()
    decision = today - timedelta(days=3)
    drop_dir, bare_dir = root / "drop", root / "bare-in"
    with running_sshd(root / "sshd") as server:
        remote, acks, bare_remote = server.root / "tdt", server.root / "acks", server.root / "bare"
        for folder in (remote, acks, bare_remote, root / "bare-out"):
            folder.mkdir(parents=True)
        config = write_config(root / "hent.yaml", server=server, drop_dir=drop_dir, remote=remote,
                              state_dir=root / "var", answers=acks, poll=POLL)
        burst = write_acts(drop_dir, bare_dir, "L", args.burst, decision=decision, seed=args.seed)

        bare = BareUploader(server, bare_remote, today)  # baseline: one act at a time, no queue
        try:
            bare.send(burst[0], root / "bare-out")  # warm
            bare_ms = []
            for bundle in burst:
                start = time.perf_counter()
                bare.send(bundle, root / "bare-out")
                bare_ms.append((time.perf_counter() - start) * 1000)
        finally:
            bare.close()

        bus = BusProcess(config, root / "bus.log")
        with stopping(bus), read_ledger(load_config(config).bus.ledger) as ledger:
            wait_for("the bus's first poll", lambda: (drop_dir / ".hent-work").is_dir(), [bus], 60)
            dropped_at = drop(drop_dir, burst)
            wait_for("the burst SENT", lambda: _sent_all(ledger, len(burst), bus), [bus], args.timeout, every=0.05)
            last_sent = max(delivery_times(ledger, "SENT").values())
            max_rate = len(burst) / (last_sent - dropped_at)

            rate = max_rate / 2
            count = max(int(args.seconds * rate), 10)
            fed: list[Bundle] = write_acts(drop_dir, bare_dir, "F", count, decision=decision, seed=args.seed)
            dropped: dict[str, float] = {}
            start = time.time() + 0.5
            for n, bundle in enumerate(fed):
                pause = start + n / rate - time.time()
                if pause > 0:
                    time.sleep(pause)
                dropped[bundle.sidecar] = drop(drop_dir, [bundle])
            feed_s = time.time() - start
            wait_for("every act fed SENT", lambda: _sent_all(ledger, len(burst) + count, bus), [bus], args.timeout)
            pickup, overall = latencies(ledger, dropped)
        if bus.process.returncode != 0:
            raise BenchError(f"the bus exited with {bus.process.returncode} after SIGTERM\n{bus.tail()}")
    ms = [s * 1000 for s in pickup]
    overall_ms = [s * 1000 for s in overall]
    return {
        "bench": "latency", "burst": len(burst), "max_rate_acts_per_s": max_rate, "fed_rate_acts_per_s": rate,
        "fed": count, "feed_s": feed_s, "poll_s": POLL,
        "pickup_to_sent_ms": {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms)},
        "drop_to_sent_ms": {"p50": percentile(overall_ms, 50), "p99": percentile(overall_ms, 99)},
        "bare_ms": {"p50": percentile(bare_ms, 50), "p99": percentile(bare_ms, 99)},
        "target_ms": TARGET_MS, "wall_s": time.monotonic() - began,
    }


def figures(result: dict[str, Any]) -> list[Figure]:
    bus, bare = result["pickup_to_sent_ms"], result["bare_ms"]
    what = "bare loop, one act alone"
    return [
        Figure("latency_p50", bus["p50"], "ms", bare["p50"], what),
        Figure("latency_p99", bus["p99"], "ms", bare["p99"], what, f"p99 <= {TARGET_MS:.0f} ms",
               bus["p99"] <= TARGET_MS),
    ]


def notes(result: dict[str, Any]) -> list[str]:
    overall = result["drop_to_sent_ms"]
    return [
        f"# latency: burst of {result['burst']} acts: maximum rate {result['max_rate_acts_per_s']:.1f} acts/s (drop → "
        f"last SENT); then {result['fed']} acts fed at {result['fed_rate_acts_per_s']:.2f} acts/s for "
        f"{result['feed_s']:.1f} s",
        f"# latency: pickup (RECEIVED) → SENT p50/p99/max {result['pickup_to_sent_ms']['p50']:.0f} / "
        f"{result['pickup_to_sent_ms']['p99']:.0f} / {result['pickup_to_sent_ms']['max']:.0f} ms; drop → SENT "
        f"(with the wait for the next poll, every {result['poll_s']:g} s) p50/p99 {overall['p50']:.0f} / "
        f"{overall['p99']:.0f} ms",
        f"# wall time {result['wall_s']:.1f} s",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="latency pickup → SENT at half the maximum rate through the bus (p50, p99; target p99 <= 1 s)",
    )
    parser.add_argument("--burst", type=int, default=100, help="acts dropped at once to find the maximum rate")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long acts are fed at half that rate")
    parser.add_argument("--quick", action="store_true", help="a burst of 20, fed for 8 s: checks that it runs (CI)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the PDFs' random samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each phase may take (default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (ledger, spool, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.burst, args.seconds = 20, 8.0
    if args.burst < 2 or args.seconds <= 0:
        parser.error("--burst must be at least 2 and --seconds positive")
    return args


def main(argv: list[str] | None = None) -> int:
    return report("latency", parse_args(argv), measure, figures, notes)


if __name__ == "__main__":
    sys.exit(main())
