"""What the benches that run the real bus as a process share: the acts they drop, the
configuration, the bus process, the ledger read from outside, and the bare loop with the upload.

The acts are deliberation bundles as the séance software drops them (the sidecar shape of
``simulators.backoffice.drop_deliberation``): a JSON sidecar, a 200 KB signed PDF and 0, 1 or 2
annexes of 50 KB (act n has n mod 3), the PDFs images of random samples (incompressible, like
real signed PDFs: :func:`bench.actes_throughput.make_pdf`).  Each act is written twice over the
same bytes (hard links): in the drop folder with its sidecar under a hidden name until
:func:`drop` renames it, and in a folder of its own for the bare loop.

The bus is ``python run_bus.py run -c CONFIG`` (:class:`BusProcess`): configuration, registry,
spool, ledger, backbone and connectors, as in production; the bare loop is
:class:`BareUploader`: :class:`bench.actes_throughput.BareLoop` (json, lxml build, XSD
validation, tarfile's gzip -9) then a paramiko upload to ``<name>.part``,
a size check and a rename, on one connection opened beforehand; no spool, no ledger, no fsync.
"""

from __future__ import annotations

__all__ = [
    "BareUploader",
    "BusProcess",
    "BenchError",
    "delivery_times",
    "drop",
    "failures",
    "read_ledger",
    "run_help",
    "settled",
    "stopping",
    "wait_for",
    "write_acts",
    "write_config",
]

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import paramiko
import yaml
from sqlalchemy import select

from bench._sshd import SshServer
from bench.actes_throughput import (
    CLASSIFICATION,
    CLASSIFICATION_DATE,
    MAPPING,
    OBJET,
    REFERENT,
    BareLoop,
    Bundle,
    make_pdf,
)
from bus.journal import journal_table
from bus.ledger import Ledger
from simulators.backoffice import SIREN

REPO = Path(__file__).resolve().parent.parent
PDF_SIZE, ANNEX_SIZE = 200 * 1024, 50 * 1024
CHUNK = 256 * 1024  #: the bare upload's writes (the bus's read_local chunk)
HIDDEN = ".tmp"  #: a sidecar waiting to be dropped: ``.<numero>.json.tmp``


class BenchError(Exception):
    """The bench could not measure: the bus died, a document failed, time ran out."""


# -- the acts --------------------------------------------------------------------------------


def write_acts(drop_dir: Path, bare_dir: Path, tag: str, count: int, *, decision: date, seed: int = 0) -> list[Bundle]:
    """``count`` acts numbered ``B<tag>_<n>``: their PDFs in ``drop_dir`` with the sidecar hidden,
    and the same bytes (hard links) as a bundle of its own under ``bare_dir`` for the bare loop."""
    drop_dir.mkdir(parents=True, exist_ok=True)
    bundles = []
    for n in range(count):
        numero = f"B{tag}_{n:05d}"
        rng = random.Random(f"{seed}:{numero}")
        main = f"{numero}.pdf"
        files = {main: make_pdf([f"Délibération {numero}", OBJET, f"Séance du {decision:%d/%m/%Y}"], PDF_SIZE, rng)}
        annexes = [f"{numero}_annexe{k}.pdf" for k in range(1, n % 3 + 1)]
        for k, annex in enumerate(annexes, start=1):
            files[annex] = make_pdf([f"Annexe {k} à la délibération {numero}", "Plan de situation"], ANNEX_SIZE, rng)
        sidecar = {  # the shape of simulators.backoffice.drop_deliberation's sidecar
            "collectivite": {"siren": SIREN, "nom": "Commune de Saint-Herblain"},
            "seance": {"id": f"CM-{decision:%Y-%m}", "date": decision.isoformat()},
            "numero": numero,
            "objet": OBJET,
            "classification": "3.2",
            "type": "DELIBERATION",
            "envoi_papier": False,
            "redacteur": {"nom": REFERENT[0], "telephone": REFERENT[1], "email": REFERENT[2]},
            "fichier": main,
            "annexes": [{"fichier": annex, "type": "21_RP"} for annex in annexes],
        }
        folder = bare_dir / tag / numero
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
            os.link(folder / name, drop_dir / name)
        name = f"{numero}.json"
        (folder / name).write_bytes(json.dumps(sidecar, ensure_ascii=False, indent=2).encode())
        os.link(folder / name, drop_dir / f".{name}{HIDDEN}")
        bundles.append(Bundle(numero, folder, name, (name, *files)))
    return bundles


def drop(drop_dir: Path, bundles: list[Bundle]) -> float:
    """Make the bundles' sidecars appear under their names (the files are there already); the
    moment it began (``time.time()``)."""
    began = time.time()
    for bundle in bundles:
        os.replace(drop_dir / f".{bundle.sidecar}{HIDDEN}", drop_dir / bundle.sidecar)
    return began


# -- the configuration -----------------------------------------------------------------------


def write_config(
    path: Path, *, server: SshServer, drop_dir: Path, remote: Path, state_dir: Path,
    answers: Path | None = None, poll: float = 0.2, bus: dict[str, Any] | None = None,
) -> Path:
    """A folder source, one ACTES route, an SFTP endpoint on ``server``; the bus's other settings
    are the product's defaults (``bus`` overrides them), metrics off (no port to share).  With
    ``answers`` the endpoint has an answer folder: archives sent there end SENT, not DELIVERED."""
    endpoint: dict[str, Any] = {
        "type": "sftp", "host": server.host, "port": server.port, "username": server.user,
        "key_file": str(server.key_file), "known_hosts": str(server.known_hosts), "path": str(remote),
        "trigram": "HNT", "quadrigram": "TACT",
    }
    if answers is not None:
        endpoint["answers"] = {"path": str(answers)}
    config = {
        "bus": {"state_dir": str(state_dir), "metrics": {"enabled": False}, **(bus or {})},
        "collectivites": [{"siren": SIREN, "departement": "044", "arrondissement": 1, "nature": "31",
                           "return_emails": ["actes@saint-herblain.fr"], "classification": str(CLASSIFICATION),
                           "classification_date": CLASSIFICATION_DATE}],
        "connectors": {
            "drop": {"type": "folder", "path": str(drop_dir), "pattern": "*.json", "poll": f"{poll}s",
                     "ready": {"min_age": "0s", "stable": False}},
            "tdt": endpoint,
        },
        "routes": [{"name": "deliberations", "from": "drop", "map": str(MAPPING), "to": "tdt"}],
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


# -- the bus ---------------------------------------------------------------------------------


def run_help() -> str:
    """What ``run_bus.py run --help`` says (to see whether it knows ``--role``)."""
    done = subprocess.run([sys.executable, "run_bus.py", "run", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    return done.stdout


class BusProcess:
    """``python run_bus.py --log-level LEVEL run -c CONFIG [ARGS]``, its log in a file; under
    ``bench/_profiled.py`` (a cProfile of every thread, written to ``profile``) when given; ``env``
    adds to its environment (the secrets its configuration names as ``${VAR}``)."""

    def __init__(self, config: Path, log: Path, *, level: str = "WARNING", args: tuple[str, ...] = (),
                 profile: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.log = log
        command = [sys.executable]
        if profile is not None:
            command += [str(REPO / "bench" / "_profiled.py"), str(profile)]
        command += ["run_bus.py", "--log-level", level, "run", "-c", str(config), *args]
        self.started = time.time()
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                            env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.process.pid

    def _stats(self) -> dict[int, list[str]]:
        """``/proc/<pid>/stat`` fields (after the command) of the bus and of the processes it started."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, rest = int(stat.parent.name), stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if pid == self.pid or int(rest[1]) == self.pid:  # the bus, or a worker process it started
                found[pid] = rest
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time the bus has used so far (``/proc/<pid>/stat``), its threads and its
        worker processes (``bus.processes``) included."""
        total = sum(int(rest[11]) + int(rest[12]) for rest in self._stats().values())
        return total / os.sysconf("SC_CLK_TCK")

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The bus and its worker processes stopped (SIGSTOP) inside the block, continued after: the
        bare loop's rounds then share the machine with nothing of the bus, not even its idle polls."""
        pids = sorted(self._stats())
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(f"the bus exited with {self.process.returncode}\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            text = []
        return f"--- last {len(text)} lines of {self.log} ---\n" + "\n".join(text)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, wait, SIGKILL if it lingers: by its PID only; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def kill(self) -> float:
        """SIGKILL, as a crash: the moment it was sent."""
        moment = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        return moment


@contextmanager
def stopping(*buses: BusProcess) -> Iterator[None]:
    """Stop the buses (SIGTERM) when the block ends, whatever happens in it."""
    try:
        yield
    finally:
        for bus in buses:
            bus.stop()


def wait_for(what: str, predicate: Callable[[], bool], buses: list[BusProcess], timeout: float,
             every: float = 0.05) -> float:
    """Wait until ``predicate()``, the buses alive; the moment it held (``time.time()``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for bus in buses:
            bus.check_alive()
        if time.monotonic() > deadline:
            tails = "\n".join(bus.tail() for bus in buses)
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")
        time.sleep(every)
    return time.time()


# -- the ledger, read from outside -----------------------------------------------------------


@contextmanager
def read_ledger(url: str) -> Iterator[Ledger]:
    ledger = Ledger(url, actor="bench")
    try:
        yield ledger
    finally:
        ledger.close()


def delivery_times(ledger: Ledger, to_state: str) -> dict[str, float]:
    """When each delivery first entered ``to_state``, from the journal (``time.time()`` scale)."""
    table = journal_table
    query = (select(table.c.entity_id, table.c.at)
             .where(table.c.entity == "delivery", table.c.to_state == to_state,
                    table.c.from_state.is_distinct_from(to_state))
             .order_by(table.c.seq))
    found: dict[str, float] = {}
    with ledger._read() as conn:
        for entity_id, at in conn.execute(query):
            found.setdefault(entity_id, datetime.fromisoformat(at).timestamp())
    return found


def settled(ledger: Ledger, done: Path, bundles: list[Bundle], delivered: int, *,
            context: Callable[[], str] = lambda: "", ledger_every: float = 1.0) -> Callable[[], bool]:
    """A :func:`wait_for` predicate: every bundle of ``bundles`` in ``done/`` and at least ``delivered``
    deliveries DELIVERED in the ledger; raises :class:`BenchError` once something FAILED (``context()``
    added to the message).  It stays cheap while it waits, the harness taking as little as it can of
    the CPU the bus is measured on: a stat from the first bundle not yet in done/ on (those before
    stay there), the ledger read once every ``ledger_every`` seconds for a failure (a bundle that
    failed goes to error/, never to done/) and once all are in done/.  The measured times come from
    the ledger and done/'s timestamps, not from when this saw them."""
    first_missing = 0
    read_at = time.monotonic()

    def check() -> bool:
        nonlocal first_missing, read_at
        while first_missing < len(bundles) and (done / bundles[first_missing].sidecar).exists():
            first_missing += 1
        all_done = first_missing == len(bundles)
        if not all_done and time.monotonic() < read_at + ledger_every:
            return False
        read_at = time.monotonic()
        counts = ledger.counts_by_state()
        if counts["document"]["FAILED"] or counts["delivery"]["FAILED"]:
            raise BenchError(f"FAILED in the ledger: {failures(ledger)}{context()}")
        return all_done and counts["delivery"]["DELIVERED"] >= delivered

    return check


def failures(ledger: Ledger) -> list[str]:
    """What FAILED, with its reason: documents and deliveries."""
    found = [f"document {d.bundle}: {d.reason}" for d in ledger.documents(state="FAILED", limit=5)]
    found += [f"delivery {d.id}: {d.reason}" for d in ledger.deliveries(state="FAILED", limit=5)]
    return found


# -- the bare loop ---------------------------------------------------------------------------


class BareUploader:
    """A hand-written script's job for one act: build, validate and pack it (``BareLoop``), then
    upload the archive to ``<remote>/<name>.part``, check its size and rename it; one SSH
    connection, opened here; no spool, no ledger, no fsync."""

    def __init__(self, server: SshServer, remote: Path, today: date) -> None:
        self.loop = BareLoop(today)
        self.remote = remote
        known = paramiko.HostKeys(str(server.known_hosts)).lookup(f"[{server.host}]:{server.port}")
        if not known:
            raise BenchError(f"{server.known_hosts} does not pin [{server.host}]:{server.port}")
        self.transport = paramiko.Transport((server.host, server.port))
        self.transport.connect(hostkey=next(iter(known.values())), username=server.user,
                               pkey=paramiko.PKey.from_path(server.key_file))
        sftp = paramiko.SFTPClient.from_transport(self.transport)
        assert sftp is not None
        self.sftp = sftp

    def send(self, bundle: Bundle, out_dir: Path) -> None:
        archive = self.loop.process(bundle, out_dir)
        final = f"{self.remote}/{archive.name}"
        part = f"{final}.part"
        size = archive.stat().st_size
        with open(archive, "rb") as source, self.sftp.open(part, "wb") as handle:
            handle.set_pipelined(True)
            while data := source.read(CHUNK):
                handle.write(data)
        if self.sftp.stat(part).st_size != size:
            raise BenchError(f"the bare upload of {part} is incomplete")
        self.sftp.posix_rename(part, final)

    def close(self) -> None:
        self.sftp.close()
        self.transport.close()
