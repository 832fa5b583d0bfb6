"""Recovery: from the restart of a bus killed with SIGKILL while ``--acts`` documents were in
flight, to the first new SENT.

The bus is ``python run_bus.py run -c CONFIG`` on the embedded default (SQLite ledger and
broker, 2 workers, lease 60 s and sweep 30 s: the product's defaults), a folder source polled
every 0.2 s, the deliberations route and an ``sftp`` endpoint with an answer folder on
OpenSSH's sshd (an archive uploaded there ends SENT).

1. The bus starts with nothing to do: Popen → its "running" log line is the **cold start**.
2. ``--acts`` acts are dropped at once; once every one is RECEIVED (claimed, in the spool, in
   the ledger) and a few are SENT, the bus is killed with SIGKILL: the others are in flight
   (RECEIVED, PREPARED or ROUTED with their delivery PENDING, some of them leased by the dead
   process, their messages in the SQLite broker or lost with it).
3. The same bus is started again: Popen → "running" (start-up: the spool reconciled with the
   ledger, unfinished work re-published) → the **first delivery SENT**
   that was not SENT before the kill; then ``--after`` more, for the rate after the restart.
4. Unless ``--quick`` or ``--no-probe``: one new act dropped as the bus restarts, and the time
   until it is RECEIVED (the source is polled again once this node holds its lease).

Target: restart → first new SENT <= 2 × ``bus.lease`` (120 s with the default 60 s).  Why:
work the dead process held is given back when its lease expires (one lease) and the sweeper
re-publishes it at its next round (at most one more lease with the default sweep); a restart
slower than that would leave the bus idle while work it could take waits, so that is the
bound an operator is promised for a crash.  Everything not leased can go at once, so the
figure is expected far below it: the ratio to the lease says how far.  Baseline: the lease.

    python -m bench.recovery [--acts 1000] [--quick] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/recovery.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import time  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from bench._bus import (  # noqa: E402
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
from bench._common import Figure, report, skipped  # noqa: E402
from bench._sshd import running_sshd  # noqa: E402
from bus.config import load_config  # noqa: E402
from bus.ledger import Ledger  # noqa: E402

RUNNING = " running: "  #: in the bus's INFO line once start-up (recovery included) is done


def _running(bus: BusProcess) -> bool:
    return bus.log.is_file() and RUNNING in bus.log.read_text(errors="replace")


def _received(ledger: Ledger, sidecar: str) -> float | None:
    """When the bundle of ``sidecar`` was RECEIVED, or None."""
    found = [d.created_at.timestamp() for d in ledger.documents(source="drop") if d.bundle == sidecar]
    return found[0] if found else None


def _no_failure(ledger: Ledger, bus: BusProcess) -> None:
    counts = ledger.counts_by_state()
    if counts["document"]["FAILED"] or counts["delivery"]["FAILED"]:
        raise BenchError(f"FAILED in the ledger: {failures(ledger)}\n{bus.tail()}")


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    began = time.monotonic()
    decision = date.today() - timedelta(days=3)
    drop_dir = root / "drop"
    with running_sshd(root / "sshd") as server:
        remote, acks = server.root / "tdt", server.root / "acks"
        for folder in (remote, acks):
            folder.mkdir(parents=True)
        config_path = write_config(root / "hent.yaml", server=server, drop_dir=drop_dir, remote=remote,
                                   state_dir=root / "var", answers=acks)
        config = load_config(config_path)
        lease = float(config.bus.lease)
        acts = write_acts(drop_dir, root / "bare-in", "K", args.acts, decision=decision, seed=args.seed)
        probe = write_acts(drop_dir, root / "bare-in", "Q", 1, decision=decision, seed=args.seed)

        first = BusProcess(config_path, root / "bus-1.log", level="INFO")
        try:
            cold = wait_for("the bus running", lambda: _running(first), [first], 120) - first.started
            with read_ledger(config.bus.ledger) as ledger:
                drop(drop_dir, acts)

                def all_received_some_sent() -> bool:
                    _no_failure(ledger, first)
                    counts = ledger.counts_by_state()
                    return (sum(counts["document"].values()) >= args.acts
                            and counts["delivery"]["SENT"] >= args.sent_before)

                wait_for(f"{args.acts} RECEIVED and {args.sent_before} SENT", all_received_some_sent, [first],
                         args.timeout, every=0.05)
                killed = first.kill()
                before = set(delivery_times(ledger, "SENT"))
                at_kill = ledger.counts_by_state()
        finally:
            first.stop()

        second = BusProcess(config_path, root / "bus-2.log", level="INFO")
        with stopping(second), read_ledger(config.bus.ledger) as ledger:
            restarted = second.started
            if args.probe:  # a new act dropped as the bus restarts: when is it picked up?
                drop(drop_dir, probe)
            ready = wait_for("the restarted bus running", lambda: _running(second), [second], args.timeout)

            def new_sent(count: int) -> bool:
                _no_failure(ledger, second)
                return len(set(delivery_times(ledger, "SENT")) - before) >= count

            wait_for("a new SENT", lambda: new_sent(1), [second], args.timeout, every=0.05)
            wait_for(f"{args.after} new SENT", lambda: new_sent(args.after), [second], args.timeout, every=0.1)
            times = sorted(t for d, t in delivery_times(ledger, "SENT").items() if d not in before)
            picked: float | None = None
            if args.probe:
                sidecar = probe[0].sidecar
                wait_for("the act dropped at the restart RECEIVED", lambda: _received(ledger, sidecar) is not None,
                         [second], 3 * lease + 60, every=0.2)
                picked = _received(ledger, sidecar)
        if second.process.returncode != 0:
            raise BenchError(f"the restarted bus exited with {second.process.returncode}\n{second.tail()}")
    in_flight = args.acts - at_kill["delivery"]["SENT"]
    return {
        "bench": "recovery", "acts": args.acts, "in_flight": in_flight, "at_kill": at_kill, "lease_s": lease,
        "cold_start_s": cold, "killed_after_s": killed - first.started,
        "restart_to_running_s": ready - restarted, "restart_to_first_sent_s": times[0] - restarted,
        "restart_to_pickup_s": None if picked is None else picked - restarted,
        "after": len(times),
        "rate_after_acts_per_s": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0,
        "wall_s": time.monotonic() - began,
    }


def figures(result: dict[str, Any]) -> tuple[list[Figure], list[str]]:
    lease = result["lease_s"]
    first = result["restart_to_first_sent_s"]
    found = [
        Figure("recovery_start", result["restart_to_running_s"], "s", result["cold_start_s"],
               "the same bus starting with nothing in flight"),
        Figure("recovery_first_sent", first, "s", lease, "bus.lease", f"<= 2 x bus.lease ({2 * lease:.0f} s)",
               first <= 2 * lease),
    ]
    lines = [f.line() for f in found]
    if result["restart_to_pickup_s"] is None:
        lines.append(skipped("recovery_pickup", "not measured with --quick (it waits for up to one bus.lease)"))
    else:
        pickup = Figure("recovery_pickup", result["restart_to_pickup_s"], "s", lease, "bus.lease",
                        note="report: an act dropped at the restart, RECEIVED after")
        found.append(pickup)
        lines.append(pickup.line())
    return found, lines


def notes(result: dict[str, Any]) -> list[str]:
    docs, deliveries = result["at_kill"]["document"], result["at_kill"]["delivery"]
    shown = ", ".join(f"{k} {v}" for k, v in docs.items() if v)
    shown_d = ", ".join(f"{k} {v}" for k, v in deliveries.items() if v)
    return [
        f"# recovery: {result['acts']} acts dropped, SIGKILL {result['killed_after_s']:.1f} s after the start with "
        f"{result['in_flight']} in flight (documents: {shown}; deliveries: {shown_d})",
        f"# recovery: restart → running (spool reconciled, unfinished work re-published) "
        f"{result['restart_to_running_s']:.2f} s (cold start {result['cold_start_s']:.2f} s), → first new SENT "
        f"{result['restart_to_first_sent_s']:.2f} s; then {result['after']} SENT at "
        f"{result['rate_after_acts_per_s']:.1f} acts/s",
        f"# wall time {result['wall_s']:.1f} s",
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.recovery",
        description="time from the restart of a bus killed (SIGKILL) with documents in flight to the first new SENT "
                    "(target <= 2 x bus.lease)",
    )
    parser.add_argument("--acts", type=int, default=1000, help="acts in flight (default 1000)")
    parser.add_argument("--sent-before", type=int, default=5, help="deliveries SENT before the kill (default 5)")
    parser.add_argument("--after", type=int, default=20, help="new SENT awaited after the restart (default 20)")
    parser.add_argument("--quick", action="store_true", help="100 acts, no probe: checks that it runs (CI)")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="do not measure when an act dropped at the restart is picked up (it waits up to a lease)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the PDFs' random samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each phase may take (default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (ledger, spool, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.acts, args.after, args.probe = 100, 5, False
    if args.acts < 2 or not 1 <= args.sent_before < args.acts or args.after < 1:
        parser.error("--acts must be at least 2, --sent-before between 1 and --acts, --after at least 1")
    if args.acts > 9999:
        parser.error("ACTES allows 9999 envelope serials per SIREN and day: lower --acts")
    return args


def main(argv: list[str] | None = None) -> int:
    return report("recovery", parse_args(argv), measure, figures, notes)


if __name__ == "__main__":
    sys.exit(main())
