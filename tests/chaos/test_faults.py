"""Faults other than kills: a flaky endpoint that also goes fully down, a full disk under the
spool, poison documents among good ones.

Each run measures "0 lost, 0 duplicates" — the acts the endpoint received (its own counts)
against the documents dropped and what the ledger says — and prints one line::

    documents: 60 | kills: 0 | lost: 0 | duplicate transmissions: 0 | time to recover: 1.4 s

The flaky endpoint also runs, reduced (20 acts, a 5 s outage), on RabbitMQ + PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from bus.config import load_config
from bus.ledger import Ledger
from bus.metrics import REGISTRY
from bus.runtime import Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_contract, drop_deliberation
from simulators.legality import LegalitySimulator
from tests.chaos._helpers import EMBEDDED, SCALE_OUT, Backend
from tests.harness import ROOT, ledger_outcome, run_until_idle, write_config

pytestmark = pytest.mark.chaos
DECISION = date.today() - timedelta(days=1)
SEED = 20260412  # the chaos's draws; printed, to replay a failed run


@dataclass
class Figures:
    """What a run measured; ``line()`` is what it prints."""

    documents: int
    lost: int
    duplicates: int
    recover: float | None = None
    kills: int = 0

    def line(self) -> str:
        recover = "-" if self.recover is None else f"{self.recover:.1f} s"
        return (f"documents: {self.documents} | kills: {self.kills} | lost: {self.lost} | "
                f"duplicate transmissions: {self.duplicates} | time to recover: {recover}")


def act_key(numero: str) -> str:
    """How the legality simulator counts an act: ``SIREN:NUMERO:DATE``."""
    return f"214400152:{numero}:{DECISION.isoformat()}"


def measured(simulator: LegalitySimulator, numeros: list[str]) -> tuple[int, int]:
    """(lost, duplicate transmissions): acts dropped that the platform never recorded, and every
    SubmitArchive of an act beyond its first (refused duplicates included) or of an act never dropped."""
    counts = simulator.received()
    expected = {act_key(n) for n in numeros}
    lost = len(expected - {key for key, n in counts["recorded"].items() if n >= 1})
    duplicates = sum(n - 1 for n in counts["by_act"].values() if n > 1)
    duplicates += sum(n for key, n in counts["by_act"].items() if key not in expected)
    return lost, duplicates


def soap_bus(workspace: Path, simulator: LegalitySimulator, **endpoint: Any) -> Path:
    """The harness's bus with the deliberations sent to the legality simulator over SOAP."""
    path = write_config(workspace, sweep="0.3s", lease="5s", extra_bus={"answers": "0.3s", "workers": 2})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {
        "type": "soap", "endpoint": simulator.url, "connect_timeout": "1s", "read_timeout": "1s",
        "trigram": "HNT", "quadrigram": "TACT", **endpoint,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def running(config: Path) -> Iterator[Runtime]:
    """The bus of ``config`` in this process (its metrics in ``bus.metrics.REGISTRY``), stopped at the end."""
    runtime = Runtime(load_config(config), Pipeline.for_runtime, serve_http=False)
    runtime.start()
    consumer = threading.Thread(target=runtime.consume, name="hent-consumer", daemon=True)
    consumer.start()
    try:
        yield runtime
    finally:
        runtime.stop_event.set()
        consumer.join(timeout=15)
        runtime.shutdown()


@dataclass
class Sampler:
    """Samples, every 50 ms, the circuit's state in ``hent_endpoint_circuit_state`` (each change
    with its time) and when each delivery was first seen ACKNOWLEDGED in the ledger."""

    runtime: Runtime
    endpoint: str
    circuit: list[tuple[float, int]] = field(default_factory=list)
    acknowledged: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(0.05):
            now = time.monotonic()
            state = REGISTRY.get_sample_value("hent_endpoint_circuit_state", {"connector": self.endpoint})
            if state is not None and (not self.circuit or self.circuit[-1][1] != int(state)):
                self.circuit.append((now, int(state)))
            for delivery in self.runtime.ledger.deliveries(state="ACKNOWLEDGED"):
                self.acknowledged.setdefault(delivery.id, now)

    @contextmanager
    def sampling(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, name="circuit-sampler", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=5)


# -- a flaky endpoint, then fully down -----------------------------------------------------

class Flaky(NamedTuple):
    acts: int
    outage: float  #: seconds the endpoint is fully down


FLAKY = {EMBEDDED: Flaky(60, 20.0), SCALE_OUT: Flaky(20, 5.0)}


@pytest.mark.parametrize("backend", [EMBEDDED, pytest.param(SCALE_OUT, marks=pytest.mark.integration)],
                         indirect=True)
def test_a_flaky_endpoint_that_goes_down_for_a_while_gets_every_act_once(tmp_path: Path, backend: Backend) -> None:
    began = time.monotonic()
    acts, outage = FLAKY[backend.name]
    numeros = [f"FLK2026_{n:03d}" for n in range(acts)]
    with LegalitySimulator(ack_delay=0.2) as simulator:
        # Given an endpoint that fails 30 % of its calls (HTTP 500, or no answer within the bus's 1 s
        # read timeout), with a circuit of 3 failures and 2 s of cooldown, and a generous retry
        simulator.chaos(0.3, ["http500", "hang"], seconds=1.5, seed=SEED)
        config = backend.apply(soap_bus(
            tmp_path, simulator, retry={"max_attempts": 60, "first_delay": "0.2s", "max_delay": "2s", "jitter": 0.3},
            circuit={"threshold": 3, "cooldown": "2s"}))
        for numero in numeros:
            drop_deliberation(tmp_path / "drop" / "deliberations", numero, decision=DECISION, annexes=1)
        with running(config) as runtime, Sampler(runtime, "prefecture").sampling() as sampler:
            # When it goes fully down (connection refused) for a while (20 s, 5 s reduced) once half the acts reached it
            wait_until(lambda: len(simulator.received()["by_act"]) >= acts // 2, 60, "half the acts sent")
            simulator.down(outage)
            outage_end = time.monotonic() + outage
            time.sleep(outage - 0.5)
            held_back = {d.id for d in runtime.ledger.deliveries(state="PENDING")}
            # Then every act ends acknowledged, after the outage
            wait_until(lambda: all_acknowledged(runtime, acts), outage + 50, "every act acknowledged")
        assert not simulator.is_down
        lost, duplicates = measured(simulator, numeros)
        calls = simulator.received()["calls"]
    outcome = ledger_outcome(config)
    # time to recover: from the end of the outage to the first acknowledgment of an act it held back
    recovered_at = min((sampler.acknowledged[d] for d in held_back if d in sampler.acknowledged), default=None)
    figures = Figures(acts, lost, duplicates, None if recovered_at is None else recovered_at - outage_end)
    opened = sum(state == 1 for _, state in sampler.circuit)
    print(f"\nflaky endpoint on {backend.name} (seed {SEED}; {sum(calls.values())} calls; circuit seen opening "
          f"{opened} times; {len(held_back)} acts held back by the {outage:.0f} s outage): {figures.line()} "
          f"[{time.monotonic() - began:.0f} s]")
    # each act received exactly once, as many acts as documents, every delivery acknowledged
    assert (lost, duplicates) == (0, 0)
    assert len(outcome) == acts
    assert all([d.state for d in o["deliveries"]] == ["ACKNOWLEDGED"] for o in outcome.values())
    # the circuit was seen open (1), and closed (0) again at the end
    states = [state for _, state in sampler.circuit]
    assert 1 in states, sampler.circuit
    assert states[-1] == 0, sampler.circuit
    assert held_back, "the outage came too late to hold any act back"
    assert figures.recover is not None and 0 < figures.recover < 15


def all_acknowledged(runtime: Runtime, count: int) -> bool:
    deliveries = runtime.ledger.counts_by_state().get("delivery", {})
    return deliveries.get("ACKNOWLEDGED", 0) == count and sum(deliveries.values()) == count


# -- the spool's disk full ---------------------------------------------------------------

SMALL, BIG = 6, 4
ROOM = 2 * 1024 * 1024  #: what the spool may take: each file under it (a file-size limit), or in all (tmpfs)
_LIMITED = (  # the bus under a file-size limit: writes past it fail with EFBIG (SIGXFSZ ignored: not killed)
    "import os, resource, signal, sys; limit = int(sys.argv[1]); signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def start_bus(config: Path, log: Path, *, file_size_limit: int | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "run_bus.py", "--log-level", "WARNING", "run", "-c", str(config)]
    if file_size_limit is not None:
        command = [sys.executable, "-c", _LIMITED, str(file_size_limit), *command[1:]]
    with open(log, "ab") as out:
        return subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop_bus(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def ledger_states(config: Path) -> dict[str, list[str]]:
    """Each bundle's document state then its deliveries' states, from the ledger."""
    ledger = Ledger(load_config(config).bus.ledger)
    try:
        return {d.bundle: [d.state, *(v.state for v in ledger.deliveries_of(d.id))] for d in ledger.documents()}
    finally:
        ledger.close()


def bundle_bytes(folder: Path, numero: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"{numero}*")) if p.is_file()}


@contextmanager
def small_tmpfs(mountpoint: Path, size: int) -> Iterator[Callable[[int], None]]:
    """A tmpfs of ``size`` bytes at ``mountpoint`` (skipped where mount is not allowed); yields
    ``resize(bytes)``; unmounted at the end."""
    mountpoint.mkdir(parents=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def resize(new: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new}", str(mountpoint)], check=True)

    try:
        yield resize
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.parametrize("full", ["file-size-limit", "tmpfs"])
def test_a_full_spool_leaves_the_bundles_untouched_and_loses_nothing_once_space_is_back(
    tmp_path: Path, full: str
) -> None:
    began = time.monotonic()
    folder = tmp_path / "drop" / "deliberations"
    numeros = [f"DSK2026_{n:03d}" for n in range(SMALL + BIG)]
    big = set(numeros[1::(SMALL + BIG) // BIG][:BIG])  # interleaved with the small ones
    log = tmp_path / "bus.log"
    room: AbstractContextManager[Callable[[int], None] | None] = (
        small_tmpfs(tmp_path / "spool", ROOM) if full == "tmpfs" else nullcontext(None))
    with room as resize, LegalitySimulator(ack_delay=0.2) as simulator:
        config = soap_bus(tmp_path, simulator, retry={"max_attempts": 20, "first_delay": "0.2s", "max_delay": "1s"})
        if resize is not None:  # the spool alone on a small file system, which the source looks at first
            settings = yaml.safe_load(config.read_text(encoding="utf-8"))
            settings["bus"]["spool"] = str(tmp_path / "spool")
            settings["connectors"]["deliberations"]["limits"] = {"min_free_bytes": 256 * 1024}
            config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
        # the file-size limit is only met when writing (EFBIG): the bundle is claimed, fails, goes back;
        # a tmpfs too small is seen before the bundle moves (the source's min_free_bytes): it stays
        def held_back(numero: str) -> bool:
            if resize is None:
                return f"{numero}.json from deliberations not taken in" in log.read_text()
            return any("spool is full for bundle" in line and f"{numero}.json" in line  # one line per poll
                       for line in log.read_text().splitlines())
        # Given bundles dropped, some larger than the room the spool has left
        for numero in numeros:
            drop_deliberation(folder, numero, decision=DECISION, annexes=1,
                              pdf_size=ROOM + 512 * 1024 if numero in big else 0)
        dropped = {numero: bundle_bytes(folder, numero) for numero in big}
        # When the bus runs with the spool full for them
        bus = start_bus(config, log, file_size_limit=ROOM if resize is None else None)
        try:
            # Then the others go through, and each large one is named in a clear error
            wait_until(lambda: sum(s == ["ROUTED", "ACKNOWLEDGED"] for s in ledger_states(config).values()) == SMALL,
                       60, "the small bundles acknowledged")
            wait_until(lambda: all(held_back(n) for n in big),
                       30, "an error for each large bundle")
        finally:
            stop_bus(bus)
        text = log.read_text()
        assert "[spool-full]" in text and "the spool is full" in text, text[-3000:]
        if resize is None:
            assert "File too large" in text and "back in the source as it was" in text
        else:
            assert "limits.min_free_bytes" in text and "the bundle waits at the source" in text
        assert "Traceback" not in text, text[-3000:]
        # and the large bundles are in the drop folder as they were dropped, nothing of them recorded
        assert {numero: bundle_bytes(folder, numero) for numero in big} == dropped
        assert not set(ledger_states(config)) & {f"{n}.json" for n in big}
        assert not list((folder / ".hent-work").iterdir()) and not list((folder / "error").iterdir())
        spool = load_config(config).bus.spool
        assert not list((spool / "tmp").iterdir()), "a half-written blob was left in the spool"
        # When space comes back: the bus restarted without the limit, or, on the tmpfs, restarted
        # still full and the file system grown under it while it runs
        tried = log.read_text().count("spool is full for bundle")
        bus = start_bus(config, log)
        if resize is not None:
            wait_until(lambda: log.read_text().count("spool is full for bundle") > tried, 20, "the bus to try again")
            resize(64 * 1024 * 1024)
        back = time.monotonic()
        recovered: list[float] = []

        def acknowledged() -> bool:
            states = ledger_states(config)
            if not recovered and any(states.get(f"{n}.json") == ["ROUTED", "ACKNOWLEDGED"] for n in big):
                recovered.append(time.monotonic() - back)
            return len(states) == len(numeros) and all(s == ["ROUTED", "ACKNOWLEDGED"] for s in states.values())

        try:
            wait_until(acknowledged, 60, "every bundle acknowledged")
            wait_until(lambda: len(list((folder / "done").glob("*.json"))) == len(numeros), 20, "every bundle done")
        finally:
            stop_bus(bus)
        lost, duplicates = measured(simulator, numeros)
    figures = Figures(len(numeros), lost, duplicates, recovered[0] if recovered else None)
    print(f"\nfull spool ({full}): {figures.line()} [{time.monotonic() - began:.0f} s]")
    # Then every document is delivered once
    assert (lost, duplicates) == (0, 0)
    assert not list(folder.glob("*.json")) and not list((folder / "error").iterdir())


# -- poison documents among good ones -------------------------------------------------------

GOOD = 30
_BOMB = ('<!DOCTYPE fin:export [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
         '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>')
_XXE = '<!DOCTYPE fin:export [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


def _with_doctype(sidecar: Path, doctype: str, entity: str) -> None:
    """The finance software's XML sidecar with ``doctype`` after its declaration, ``entity`` used in it."""
    text = sidecar.read_text(encoding="utf-8")
    declaration, rest = text.split("\n", 1)
    sidecar.write_text(f"{declaration}\n{doctype}\n{rest.replace('2026-T-0031', entity)}", encoding="utf-8")


def drop_poison(drop: Path, kind: str, numero: str) -> str:
    """Drop one poison bundle of ``kind``; its sidecar's name."""
    folder = drop / "deliberations"
    match kind:
        case "malformed JSON":
            (folder / f"{numero}.json").write_bytes(b'{"collectivite": {"siren": "214400152"}, "numero": ')
        case "empty sidecar":
            (folder / f"{numero}.json").write_bytes(b"")
        case "missing PDF":
            drop_deliberation(folder, numero, decision=DECISION, omit=(f"{numero}.pdf",))
        case "unknown SIREN":
            drop_deliberation(folder, numero, decision=DECISION, siren="123456782")
        case "objet too long":
            drop_deliberation(folder, numero, decision=DECISION, objet="Cession de parcelles communales " * 20)
        case "not a PDF":
            drop_deliberation(folder, numero, decision=DECISION)
            (folder / f"{numero}.pdf").write_bytes(b"MZ\x90\x00\x03 an executable named .pdf" * 20)
        case "unknown matière":
            drop_deliberation(folder, numero, decision=DECISION, classification="9.9")
        case "decided in the future":
            drop_deliberation(folder, numero, decision=date.today() + timedelta(days=30))
        case "XML bomb":
            _with_doctype(drop_contract(drop / "finances", numero, signed=DECISION), _BOMB, "&d;")
            return f"{numero}.xml"
        case "external entity":
            _with_doctype(drop_contract(drop / "finances", numero, signed=DECISION), _XXE, "&x;")
            return f"{numero}.xml"
    return f"{numero}.json"


#: each kind of poison and the rule its failure names
POISONS = {
    "malformed JSON": "json-syntax", "empty sidecar": "json-syntax", "missing PDF": "file-present",
    "unknown SIREN": "collectivite-known", "objet too long": "objet-length", "not a PDF": "file-type-mismatch",
    "unknown matière": "matieres-unknown", "decided in the future": "decision-date-future",
    "XML bomb": "xml-entities-forbidden", "external entity": "xml-entities-forbidden",
}


def test_poison_documents_each_fail_with_their_reason_and_the_good_ones_flow(tmp_path: Path) -> None:
    began = time.monotonic()
    drop = tmp_path / "drop"
    with LegalitySimulator(ack_delay=0.2) as simulator:
        config = soap_bus(tmp_path, simulator)
        # Given 30 good deliberations with 10 poison bundles of several kinds dropped among them
        good: list[str] = []
        poison: dict[str, str] = {}  # sidecar → kind
        kinds = iter(POISONS)
        for n in range(GOOD + len(POISONS)):
            numero = f"DEL2026_{n:03d}" if n % 4 != 2 else f"PSN2026_{n:03d}"
            if n % 4 == 2:
                kind = next(kinds)
                poison[drop_poison(drop, kind, numero)] = kind
            else:
                drop_deliberation(drop / "deliberations", numero, decision=DECISION, annexes=1)
                good.append(numero)
        assert len(good) == GOOD and len(poison) == len(POISONS)
        # When the bus runs
        outcome = run_until_idle(config, timeout=80)
        lost, duplicates = measured(simulator, good)
        received = simulator.received()["by_act"]
    # Then each poison document FAILED with its reason, in the ledger and in its error note and reply
    failures = {}
    for sidecar, kind in poison.items():
        document = outcome[sidecar]["doc"]
        rule = POISONS[kind]
        folder = drop / ("finances" if sidecar.endswith(".xml") else "deliberations")
        note = (folder / "error" / f"{sidecar}.error.txt").read_text(encoding="utf-8")
        [reply] = [json.loads(p.read_bytes()) for p in (folder / "replies").glob(f"{sidecar.rsplit('.', 1)[0]}.*.json")]
        failures[kind] = (document.state, outcome[sidecar]["deliveries"], f"[{rule}]" in (document.reason or ""),
                          f"[{rule}]" in note, reply["state"] == "FAILED" and f"[{rule}]" in reply["reason"])
    assert failures == {kind: ("FAILED", [], True, True, True) for kind in POISONS}, failures
    # and every good one ACKNOWLEDGED, its act received once; no act of a poison document reached the platform
    not_through = [n for n in good if [outcome[f"{n}.json"]["doc"].state,
                                       *(d.state for d in outcome[f"{n}.json"]["deliveries"])]
                   != ["ROUTED", "ACKNOWLEDGED"]]
    lost += len(not_through)
    lost += sum(state != ("FAILED", [], True, True, True) for state in failures.values())
    figures = Figures(GOOD + len(POISONS), lost, duplicates)
    print(f"\npoison documents ({len(POISONS)} among {GOOD} good): {figures.line()} "
          f"[{time.monotonic() - began:.0f} s]")
    assert (lost, duplicates) == (0, 0), not_through
    assert sorted(received) == sorted(act_key(n) for n in good)
    assert not list((drop / "deliberations").glob("*.json")) and not list((drop / "finances").glob("*.xml"))
