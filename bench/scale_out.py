"""Scale-out: end to end with 1 and then 2 bus workers on RabbitMQ + PostgreSQL, beside the bare
loop with 1 and then 2 processes, in the same run.

Bus side: the configuration of ``bench/end_to_end.py`` (a folder source, the deliberations
route, an ``sftp`` endpoint on OpenSSH's sshd on 127.0.0.1) with ``bus.broker`` RabbitMQ
(``HENT_TEST_AMQP_URL``, in a virtual host of the bench's own when ``rabbitmqctl`` can make
one) and ``bus.ledger`` PostgreSQL (``HENT_TEST_POSTGRES_URL``, in a schema of its own).  When
``run_bus.py run --help`` knows ``--role``, a phase is one ``--role poller`` process and N
``--role worker`` processes; else N plain ``run`` processes (each polls and consumes), each
with ``bus.workers: 1``.  A phase first drops 2 acts per worker, untimed (each worker connects
and runs once, as the bare processes connect before their start), then ``--acts`` acts at once,
and ends when every delivery is DELIVERED and every bundle in ``done/``.

Bare side: N processes (``multiprocessing``, spawn) each running
:class:`bench._bus.BareUploader` on its share of the acts, started together.

Figure: bus scaling (acts/s with 2 / with 1) beside the bare loop's (2 processes / 1), in
``--rounds`` rounds of the four phases; each round's two scalings are paired (measured one after
the other) and the figure is the round of the median ratio, the bare loop's own speed-up drifting
between rounds on a shared machine.  Target (issue 10): bus scaling >= 0.9 × bare scaling.
Either server unset: skipped, with the line saying so.

    python -m bench.scale_out [--acts 200] [--rounds 3] [--quick] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/scale_out.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import functools  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from datetime import date, timedelta  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit, urlunsplit  # noqa: E402

from bench._bus import (  # noqa: E402
    BareUploader,
    BenchError,
    BusProcess,
    drop,
    read_ledger,
    run_help,
    settled,
    stopping,
    wait_for,
    write_acts,
    write_config,
)
from bench._common import Figure, report, skipped  # noqa: E402
from bench._sshd import SshServer, running_sshd  # noqa: E402
from bench.actes_throughput import Bundle  # noqa: E402
from bench.ledger_transitions import postgres_schema  # noqa: E402

AMQP, POSTGRES = "HENT_TEST_AMQP_URL", "HENT_TEST_POSTGRES_URL"
#: the configuration names the servers' URLs as ``${VAR}``: no password is written in the YAML
BROKER_VAR, LEDGER_VAR = "HENT_BENCH_BROKER_URL", "HENT_BENCH_LEDGER_URL"
TARGET = 0.9
RUNNING = " running: "


# -- the servers -----------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = shlex.split(os.environ.get("HENT_TEST_RABBITMQCTL", "rabbitmqctl"))
    node = os.environ.get("HENT_TEST_RABBITMQ_NODE")
    if node:
        command += ["-n", node]
    return subprocess.run([*command, "-q", *args], capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def own_vhost(url: str) -> Iterator[tuple[str, str]]:
    """The broker URL aimed at a virtual host of the bench's own (made and deleted with
    rabbitmqctl), or ``url`` as it is when rabbitmqctl cannot; and what was done."""
    parts = urlsplit(url)
    name = f"hent-bench-{uuid.uuid4().hex[:10]}"
    try:
        made = _rabbitmqctl("add_vhost", name)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        yield url, f"the broker's URL as given (rabbitmqctl: {exc})"
        return
    if made.returncode != 0:
        yield url, f"the broker's URL as given (rabbitmqctl add_vhost: {(made.stderr or made.stdout).strip()[:120]})"
        return
    try:
        _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
        yield urlunsplit(parts._replace(path=f"/{name}")), f"virtual host {name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


# -- the bare side ---------------------------------------------------------------------------


def _bare_worker(server: SshServer, remote: Path, out_dir: Path, bundles: list[Bundle], today: date,
                 go: Any, results: Any) -> None:
    bare = BareUploader(server, remote, today)
    try:
        go.wait()
        began = time.time()
        for bundle in bundles:
            bare.send(bundle, out_dir)
        results.put((began, time.time()))
    finally:
        bare.close()


def run_bare(server: SshServer, remote: Path, out_dir: Path, bundles: list[Bundle], processes: int,
             timeout: float) -> float:
    """acts/s of ``processes`` bare processes sharing ``bundles``, started together (each its own
    remote folder: their envelope serials, counted apart, would name the same archives)."""
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    workers = []
    for n in range(processes):
        folders = [folder / f"p{processes}-{n}" for folder in (remote, out_dir)]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        worker = context.Process(target=_bare_worker, args=(server, *folders, bundles[n::processes],
                                                            date.today(), go, results))
        worker.start()
        workers.append(worker)
    time.sleep(2.0)  # imports and connections before the start
    os.sync()  # no phase pays for the writeback of another's files (nor of the acts' just written)
    go.set()
    spans: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while len(spans) < processes:
        try:
            spans.append(results.get(timeout=0.5))
        except queue.Empty:
            dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for worker in workers:
                    worker.terminate()
                raise BenchError(f"bare processes: exit codes {dead} (their error above)" if dead
                                 else f"the bare processes did not finish within {timeout:.0f} s") from None
    for worker in workers:
        worker.join(timeout=60)
    return len(bundles) / (max(end for _, end in spans) - min(start for start, _ in spans))


# -- the bus side ----------------------------------------------------------------------------


def _running(bus: BusProcess) -> bool:
    return RUNNING in bus.log.read_text(errors="replace")


def run_bus_phase(root: Path, config: Path, env: dict[str, str], drop_dir: Path, bundles: list[Bundle], workers: int,
                  roles: bool, timeout: float, warm: list[Bundle]) -> tuple[float, str]:
    """acts/s of ``workers`` bus workers on ``bundles``, once ``warm`` went through untimed; how they
    were run."""
    layout: list[tuple[str, tuple[str, ...]]]
    if roles:
        layout = [("poller", ("--role", "poller"))]
        layout += [(f"worker{n}", ("--role", "worker")) for n in range(workers)]
        how = f"1 `run --role poller` + {workers} `run --role worker`"
    else:
        layout = [(f"run{n}", ()) for n in range(workers)]
        how = f"{workers} `run` process(es) (no --role in run_bus.py yet)"
    with ExitStack() as stack:
        buses = []
        for label, extra in layout:
            bus = BusProcess(config, root / f"bus-{workers}-{label}.log", level="INFO", args=extra, env=env)
            stack.enter_context(stopping(bus))
            buses.append(bus)
        for bus in buses:
            wait_for("the bus running", functools.partial(_running, bus), buses, 120)
        time.sleep(1.0)  # their first polls and consumers
        ledger = stack.enter_context(read_ledger(env[LEDGER_VAR]))
        done = drop_dir / "done"

        # untimed, as the bare processes connect before their start: a few acts each worker takes one
        # of (the broker hands them out in turn), so that each opened its SSH connection and ran once
        expected = ledger.counts_by_state()["delivery"]["DELIVERED"] + len(warm)
        drop(drop_dir, warm)
        wait_for(f"{len(warm)} warm-up acts DELIVERED", settled(ledger, done, warm, expected), buses, timeout)
        expected += len(bundles)
        os.sync()  # as for the bare loop
        dropped = drop(drop_dir, bundles)
        wait_for(f"{len(bundles)} acts DELIVERED with {workers} worker(s)",
                 settled(ledger, done, bundles, expected), buses, timeout, every=0.1)
        delivered = [d.final_at.timestamp() for d in ledger.deliveries(state="DELIVERED")
                     if d.final_at and d.final_at.timestamp() >= dropped]
        last_settled = max(os.stat(done / b.sidecar).st_ctime for b in bundles)
        seconds = max(max(delivered), last_settled) - dropped
    return len(bundles) / seconds, how


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    amqp, postgres = os.environ.get(AMQP), os.environ.get(POSTGRES)
    if not amqp or not postgres:
        unset = " and ".join(name for name, value in ((AMQP, amqp), (POSTGRES, postgres)) if not value)
        return {"bench": "scale_out", "skipped": f"{unset} unset: no RabbitMQ + PostgreSQL to scale out on"}
    began = time.monotonic()
    decision = date.today() - timedelta(days=3)
    roles = "--role" in run_help()
    drop_dir, bare_dir = root / "drop", root / "bare-in"
    with running_sshd(root / "sshd") as server, own_vhost(amqp) as (broker, vhost), \
            postgres_schema(postgres) as (ledger_url, schema, _settings):
        remote, bare_remote = server.root / "tdt", server.root / "bare"
        for folder in (remote, bare_remote):
            folder.mkdir(parents=True)
        config = write_config(root / "hent.yaml", server=server, drop_dir=drop_dir, remote=remote,
                              state_dir=root / "var",
                              bus={"broker": f"${{{BROKER_VAR}}}", "ledger": f"${{{LEDGER_VAR}}}", "workers": 1})
        env = {BROKER_VAR: broker, LEDGER_VAR: ledger_url}
        rounds: list[dict[str, dict[int, float]]] = []
        how: dict[int, str] = {}
        for number in range(1, args.rounds + 1):
            rates: dict[str, dict[int, float]] = {"bus": {}, "bare": {}}
            for workers in (1, 2):
                bundles = write_acts(drop_dir, bare_dir, f"R{number}S{workers}", args.acts, decision=decision,
                                     seed=args.seed)
                rates["bare"][workers] = run_bare(server, bare_remote, root / "bare-out", bundles, workers,
                                                  args.timeout)
                warm = write_acts(drop_dir, bare_dir, f"R{number}W{workers}", 2 * workers, decision=decision,
                                  seed=args.seed)
                rates["bus"][workers], how[workers] = run_bus_phase(
                    root, config, env, drop_dir, bundles, workers, roles, args.timeout, warm)
            rounds.append(rates)
    # each round's bus and bare phases ran one after the other: the ratio of their scalings is paired,
    # and the figure is the round of the median one (the bare loop's own speed-up drifts between rounds)
    rounds.sort(key=lambda r: _scaling(r["bus"]) / _scaling(r["bare"]))
    return {"bench": "scale_out", "acts": args.acts, "rates": rounds[(len(rounds) - 1) // 2], "rounds": rounds,
            "how": how, "broker": vhost, "ledger": f"PostgreSQL schema {schema}", "wall_s": time.monotonic() - began}


def _scaling(rates: dict[int, float]) -> float:
    return rates[2] / rates[1]


def figures(result: dict[str, Any]) -> tuple[list[Figure], list[str]]:
    if "skipped" in result:
        return [], [skipped("scale_out", result["skipped"])]
    bus_scaling, bare_scaling = _scaling(result["rates"]["bus"]), _scaling(result["rates"]["bare"])
    figure = Figure("scale_out", bus_scaling, "x", bare_scaling, "bare loop, 2 processes / 1",
                    f"ratio >= {TARGET}", bus_scaling >= TARGET * bare_scaling)
    return [figure], [figure.line()]


def notes(result: dict[str, Any]) -> list[str]:
    if "skipped" in result:
        return []
    lines = [f"# scale_out: {result['acts']} acts per phase, {len(result['rounds'])} round(s), the round of the "
             f"median paired ratio; broker RabbitMQ ({result['broker']}), ledger {result['ledger']}; 2 workers = "
             f"{result['how'][2]}"]
    for rates in result["rounds"]:
        bus, bare = rates["bus"], rates["bare"]
        lines.append(f"# scale_out: bus {bus[1]:.1f} → {bus[2]:.1f} acts/s; bare {bare[1]:.1f} → {bare[2]:.1f} "
                     f"acts/s (1 → 2 processes); ratio {_scaling(bus) / _scaling(bare):.2f}")
    return [*lines, f"# wall time {result['wall_s']:.1f} s"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale_out",
        description=f"end-to-end acts/s with 1 and 2 bus workers on RabbitMQ ({AMQP}) + PostgreSQL ({POSTGRES}) "
                    "beside the bare loop with 1 and 2 processes; target: bus scaling >= 0.9 x bare scaling",
    )
    parser.add_argument("--acts", type=int, default=200, help="acts per phase (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four phases (default 3)")
    parser.add_argument("--quick", action="store_true", help="30 acts per phase, 1 round: checks that it runs (CI)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the PDFs' random samples")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a phase may take (default 600)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (spool, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.acts, args.rounds = 30, 1
    if args.acts < 2 or args.rounds < 1:
        parser.error("--acts must be at least 2, --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return report("scale_out", parse_args(argv), measure, figures, notes)


if __name__ == "__main__":
    sys.exit(main())
