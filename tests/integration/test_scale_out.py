"""Scale out on RabbitMQ and PostgreSQL: one poller and three workers as separate processes, the
same YAML with other URLs. 500 acts of five collectivités through the legality simulator while a
worker is SIGKILLed, the poller SIGKILLed and restarted, and RabbitMQ restarted: every act
acknowledged, each received exactly once, envelope serials unique and increasing per SIREN and day.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml
from sqlalchemy import create_engine, make_url, text

from bus.ledger import Ledger
from simulators.backoffice import drop_deliberation
from simulators.legality import LegalitySimulator
from tests.harness import CLASSIFICATION, MAPPINGS, ROOT
from tests.pg import postgres_url
from tests.rabbit import RabbitVhost, broker_stopped, rabbit_vhost  # noqa: F401 - the vhost fixture

pytestmark = pytest.mark.integration

ACTS_PER_SIREN = 100
DECISION = date.today() - timedelta(days=1)


def luhn_valid(digits: str) -> bool:
    total = 0
    for n, char in enumerate(reversed(digits)):
        value = int(char) * (2 if n % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


#: five SIRENs of Loire-Atlantique communes' shape, each passing the SIREN's Luhn check
SIRENS = [next(f"2144{n:03d}{k:02d}" for k in range(100) if luhn_valid(f"2144{n:03d}{k:02d}"))
          for n in (1, 2, 3, 4, 5)]


@pytest.fixture
def database() -> Iterator[str]:
    """A database of the test's own on the test PostgreSQL, dropped afterwards."""
    admin = make_url(postgres_url()).set(drivername="postgresql+psycopg")
    name = f"hent_scale_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


def scale_config(workspace: Path, broker: str, ledger: str, legality: LegalitySimulator) -> Path:
    """The same configuration as on one machine; only the broker and the ledger URLs differ (their
    passwords from the environment, as a deployment writes them: ``HENT_BROKER_PASSWORD``)."""
    parts = urlsplit(broker)
    if parts.password:
        broker = urlunsplit(parts._replace(netloc=f"{parts.username}:${{HENT_BROKER_PASSWORD}}@{parts.hostname}"
                                                  f":{parts.port}"))
    drop = workspace / "drop"
    drop.mkdir(parents=True)
    config = {
        "bus": {"state_dir": str(workspace / "var"), "broker": broker, "ledger": ledger, "lease": "3s",
                "sweep": "0.5s", "answers": "0.5s", "workers": 1, "shutdown_timeout": "5s",
                "metrics": {"enabled": False}, "retry": {"max_attempts": 50, "first_delay": "0.2s",
                                                         "max_delay": "2s"}},
        "collectivites": [{"siren": siren, "departement": "044", "arrondissement": 1, "nature": "31",
                           "return_emails": ["actes@example.fr"], "classification": str(CLASSIFICATION),
                           "classification_date": "2025-01-15"} for siren in SIRENS],
        "connectors": {
            "seances": {"type": "folder", "path": str(drop), "pattern": "*.json", "poll": "0.3s",
                        "ready": {"min_age": "0s", "stable": False}},
            "prefecture": {"type": "soap", "endpoint": legality.url, "read_timeout": "5s", "connect_timeout": "2s",
                           "trigram": "HNT", "quadrigram": "TACT", "circuit": {"threshold": 1000}},
        },
        "routes": [{"name": "deliberations", "from": "seances", "map": str(MAPPINGS / "deliberations-json.yaml"),
                    "to": "prefecture"}],
    }
    path = workspace / "hent.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


class Node:
    """One ``run_bus.py run --role ...`` process, its output in a log file."""

    def __init__(self, config: Path, role: str, log: Path, env: dict[str, str]) -> None:
        self.config, self.role, self.log, self.env = config, role, log, env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "run_bus.py", "--log-level", "INFO", "run", "--role", self.role, "-c",
                 str(self.config)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, nodes: list[Node]) -> None:
    deadline = time.monotonic() + timeout
    problem = f"timed out waiting for {what}"
    while time.monotonic() < deadline:
        if predicate():
            return
        dead = [n for n in nodes if n.process is not None and n.process.poll() is not None]
        if dead:
            code = dead[0].process.returncode if dead[0].process else "?"
            problem = f"a {dead[0].role} exited ({code}) before {what}"
            break
        time.sleep(0.3)
    tails = "\n".join(f"--- {n.log.name}\n{n.log.read_text(errors='replace')[-2500:]}" for n in nodes)
    raise AssertionError(f"{problem}\n{tails}")


def test_one_poller_and_three_workers_survive_kills_and_a_broker_restart_with_every_act_once(
    tmp_path: Path, vhost: RabbitVhost, database: str, request: pytest.FixtureRequest,
) -> None:
    request_finalizer = request.addfinalizer
    with LegalitySimulator(ack_delay=0.3) as legality:
        config = scale_config(tmp_path, vhost.url, database, legality)
        for siren in SIRENS:
            for n in range(ACTS_PER_SIREN):
                drop_deliberation(tmp_path / "drop", f"DEL{siren[-4:]}_{n:03d}", decision=DECISION, annexes=0,
                                  siren=siren)
        ledger = Ledger(database)
        request_finalizer(ledger.close)  # closed whatever happens: no connection left to the next test
        total = len(SIRENS) * ACTS_PER_SIREN

        def count(*states: str) -> int:
            counts = ledger.counts_by_state()["delivery"]
            return sum(counts.get(state, 0) for state in states)

        env = {"HENT_BROKER_PASSWORD": urlsplit(vhost.url).password or ""}
        poller = Node(config, "poller", tmp_path / "poller.log", env).start()
        workers = [Node(config, "worker", tmp_path / f"worker{n}.log", env).start() for n in (1, 2, 3)]
        try:
            # a worker killed midway
            wait_for("100 sent", lambda: count("SENT", "ACKNOWLEDGED") >= 100, 120, [poller, *workers])
            workers[0].kill()
            # the poller killed once, and restarted
            wait_for("200 sent", lambda: count("SENT", "ACKNOWLEDGED") >= 200, 120, [poller, *workers[1:]])
            poller.kill()
            time.sleep(1.0)
            poller = Node(config, "poller", tmp_path / "poller2.log", env).start()
            # RabbitMQ restarted once
            wait_for("300 sent", lambda: count("SENT", "ACKNOWLEDGED") >= 300, 120, [poller, *workers[1:]])
            with broker_stopped():
                time.sleep(2.0)
            wait_for(f"{total} acknowledged", lambda: count("ACKNOWLEDGED") == total, 240, [poller, *workers[1:]])
        finally:
            for node in (poller, *workers):
                node.stop()
        # every act acknowledged, each received exactly once by the platform
        deliveries = ledger.deliveries()
        assert len(deliveries) == total and {d.state for d in deliveries} == {"ACKNOWLEDGED"}
        received = legality.received()["by_act"]
        assert len(received) == total and set(received.values()) == {1}, {k: v for k, v in received.items() if v != 1}
    # the envelope serials are unique per SIREN and day, drawn from one counter every worker shares
    # (a worker killed between drawing a serial and recording its delivery leaves a gap, never a twin)
    serials: dict[tuple[str, str], list[int]] = defaultdict(list)
    for delivery in deliveries:
        match = re.fullmatch(r"TACT--(\d{9})--(\d{8})-(\d+)\.xml", delivery.envelope_name or "")
        assert match, delivery.envelope_name
        serials[(match[1], match[2])].append(int(match[3]))
    assert sorted(siren for siren, _ in serials) == sorted(SIRENS)
    for key, numbers in serials.items():
        assert len(set(numbers)) == len(numbers) == ACTS_PER_SIREN, key
        assert min(numbers) >= 1 and max(numbers) <= ACTS_PER_SIREN + 3, (key, max(numbers))
    # the restarted poller took the source over once the killed one's lease expired
    assert "source:seances taken on this node" in (tmp_path / "poller2.log").read_text()


def test_the_scale_out_example_checks_clean(tmp_path: Path) -> None:
    from tests.harness import run_cli

    env = {"HENT_BROKER_PASSWORD": "broker-secret", "HENT_LEDGER_PASSWORD": "ledger-secret",
           "LEGALITY_SOAP_PASSWORD": "soap-secret", "HENT_HOME": str(tmp_path), "HENT_SPOOL": str(tmp_path / "spool")}
    result = run_cli("check", "-c", "config/examples/scale-out.yaml", env=env)
    assert result.returncode == 0, result.stderr
    assert "secret" not in result.stdout + result.stderr
