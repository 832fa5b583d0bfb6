"""Every crash point hit on purpose: the bus kills itself there (``HENT_CRASH_AT``), is started
again without it, and must finish every document exactly once.

After the restart: every document ROUTED, every delivery final, each act received once by the
legality simulator (SubmitArchive calls counted, duplicates included), each reply file once (no
second copy of a message, no reply cut short, no claim left behind), every bundle in done/, and
the journal verified.  The simulator runs in this process, the bus in a subprocess, as in production.
Each SOAP case runs on the embedded default; a reduced set of them (``SCALE_OUT_POINTS``) also runs
on RabbitMQ + PostgreSQL, the same YAML with the broker's and the ledger's URLs changed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from bus.config import load_config
from bus.crash import POINTS
from bus.ledger import Ledger
from bus.ledger_schema import leases_table
from simulators.backoffice import drop_deliberation
from simulators.legality import LegalitySimulator
from simulators.legality_sftp import LegalityDesk
from tests.chaos._helpers import EMBEDDED, PASSWORD_VARIABLE, SCALE_OUT, Backend
from tests.harness import ROOT, write_config
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.chaos
ACTS = 3
DECISION = date.today() - timedelta(days=1)
BUDGET = 20.0  #: seconds each case may take, both runs included
#: the points, each with the time it is reached that kills (HENT_CRASH_AT=<point>:<nth>)
SOAP_POINTS = {
    "ingest.after-spool": 2,
    "ingest.before-source-commit": 1,
    "prepare.after-build": 1,
    "send.after-send": 1,
    "answer.after-ledger": 1,
    "reply.mid-write": 1,
    "reply.after-write": 1,
    "journal.mid-append": 5,
    "settle.before-commit": 1,
}
#: the points also hit on RabbitMQ + PostgreSQL
SCALE_OUT_POINTS = ["send.after-send", "answer.after-ledger", "journal.mid-append", "ingest.before-source-commit",
                    "reply.mid-write", "reply.after-write"]
MID_UPLOAD = "send.mid-upload"  #: no upload to a SOAP platform: hit on a folder and on an SFTP desk
#: what shows, in the log or the journal, that the restart took the safe path
EVIDENCE = {
    "send.after-send": "found at the platform (an earlier try): not resent",
    "answer.after-ledger": "its reply is still owed: writing it now",
    "reply.mid-write": "its reply is still owed: writing it now",
    "reply.after-write": "its reply is still owed: writing it now",
}


# -- the bus under test ---------------------------------------------------------------------------

def start(config: Path, log: Path, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    """``python run_bus.py run -c config``, its output appended to ``log``; of this process's HENT_
    variables, only the broker's password is passed on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HENT_") or k == PASSWORD_VARIABLE}
    if crash_at:
        env["HENT_CRASH_AT"] = crash_at
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "run_bus.py", "--log-level", "INFO", "run", "-c", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(bus: subprocess.Popen[bytes]) -> None:
    if bus.poll() is None:
        bus.send_signal(signal.SIGTERM)
        try:
            bus.wait(timeout=15)
        except subprocess.TimeoutExpired:
            bus.kill()
            bus.wait()


def wait_until(predicate: Callable[[], bool], deadline: float, what: str, log: Path) -> None:
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text(errors='replace')[-4000:]}")


def soap_bus(workspace: Path, simulator: LegalitySimulator, **bus: Any) -> Path:
    """The harness's drop folders, the deliberations sent to the legality simulator over SOAP."""
    path = write_config(workspace, poll="0.2s", lease="2s", sweep="0.3s",
                        extra_bus={"answers": "0.2s", "follow_ups": "1s", **bus})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {
        "type": "soap", "endpoint": simulator.url, "read_timeout": "5s", "connect_timeout": "2s",
        "trigram": "HNT", "quadrigram": "TACT",
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def drop_acts(workspace: Path, count: int, prefix: str = "DEL2026_") -> list[str]:
    folder = workspace / "drop" / "deliberations"
    numbers = [f"{prefix}{n:03d}" for n in range(count)]
    for numero in numbers:
        drop_deliberation(folder, numero, decision=DECISION, annexes=0)
    return numbers


def act_key(numero: str) -> str:
    """How the simulator counts an act: SIREN:NumeroInterne:decision date."""
    return f"214400152:{numero}:{DECISION.isoformat()}"


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.2) as running:
        yield running


# -- what must hold at the end ----------------------------------------------------------------------

def ledger_of(config: Path) -> Ledger:
    return Ledger(load_config(config).bus.ledger, actor="test")


def finished(ledger: Ledger, count: int, final: str) -> bool:
    documents, deliveries = ledger.documents(), ledger.deliveries()
    return (len(documents) == count and all(d.state == "ROUTED" for d in documents)
            and len(deliveries) == count and all(d.state == final for d in deliveries))


def settled(workspace: Path, count: int) -> bool:
    folder = workspace / "drop" / "deliberations"
    work = folder / ".hent-work"
    return len(list((folder / "done").glob("*.json"))) == count and not (work.is_dir() and any(work.iterdir()))


def reply_sets(folder: Path) -> dict[str, dict[int, list[str]]]:
    """The reply files by bundle stem and number: ``{stem: {n: [names]}}`` (hidden claims under n too)."""
    sets: dict[str, dict[int, list[str]]] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        found = re.fullmatch(r"\.?(.+?)\.(\d+)\.(.+)", path.name)
        assert found, f"unexpected file in replies/: {path.name}"
        sets.setdefault(found[1], {}).setdefault(int(found[2]), []).append(path.name)
    return sets


def reply_kinds(folder: Path) -> dict[str, Counter[str]]:
    """``{stem: Counter(kind)}``: each whole reply by what it says (``ACKNOWLEDGED``, ``DELIVERED``,
    ``receipts``...), the ones cut short (``cut short``) and claims left behind (``claim``)."""
    kinds: dict[str, Counter[str]] = {}
    for stem, numbered in reply_sets(folder).items():
        counted = kinds.setdefault(stem, Counter())
        for n, names in numbered.items():
            if f".{stem}.{n}.claim" in names:
                counted["claim"] += 1
            if f"{stem}.{n}.json" not in names:
                counted["cut short"] += 1
                continue
            summary = json.loads((folder / f"{stem}.{n}.json").read_text(encoding="utf-8"))
            message = summary.get("message") or {}
            counted["receipts" if message.get("kind") == "receipts" else summary["state"]] += 1
    return kinds


def replies_whole(folder: Path, numbers: list[str], expected: Counter[str]) -> bool:
    kinds = reply_kinds(folder)
    return all(kinds.get(numero) == expected for numero in numbers)


def leftover_debts(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        return [row.key for row in conn.execute(select(leases_table).where(leases_table.c.entity == "reply"))]


def all_done(ledger: Ledger, workspace: Path, numbers: list[str], final: str, expected: Counter[str]) -> bool:
    """Every act ``final``, its bundle settled, its replies whole, and no reply owed any more: a
    kill between a reply's write and the ledger's knowing it leaves the debt until its lease
    expires, then the sweeper finds the reply written."""
    replies = workspace / "drop" / "deliberations" / "replies"
    return (finished(ledger, len(numbers), final) and settled(workspace, len(numbers))
            and replies_whole(replies, numbers, expected) and not leftover_debts(ledger))


def assert_exactly_once(config: Path, workspace: Path, numbers: list[str], received: dict[str, Any],
                        final: str, replies: Counter[str]) -> None:
    ledger = ledger_of(config)
    try:
        assert finished(ledger, len(numbers), final)
        assert sorted(d.bundle for d in ledger.documents()) == sorted(f"{n}.json" for n in numbers)
        assert ledger.verify_journal() == []
        assert leftover_debts(ledger) == []
    finally:
        ledger.close()
    assert received["by_act"] == {act_key(n): 1 for n in numbers}, received["by_act"]
    assert received["recorded"] == {act_key(n): 1 for n in numbers}
    folder = workspace / "drop" / "deliberations"
    assert {stem: dict(kinds) for stem, kinds in reply_kinds(folder / "replies").items()} == {
        n: dict(replies) for n in numbers}
    assert sorted(p.name for p in (folder / "done").iterdir()) == sorted(
        f"{n}{ext}" for n in numbers for ext in (".json", ".pdf"))
    assert not list((folder / "error").iterdir()) and not list(folder.glob("*.json"))


def crash_then_recover(config: Path, log: Path, point: str, done: Callable[[], bool], began: float,
                       killed: Callable[[], None] = lambda: None) -> None:
    """Run the bus with ``point`` armed until it kills itself, check ``killed()``, then run it
    again until ``done()``."""
    bus = start(config, log, point)
    try:
        bus.wait(timeout=BUDGET)
    except subprocess.TimeoutExpired:
        stop(bus)
        raise AssertionError(f"{point} was never reached:\n{log.read_text(errors='replace')[-4000:]}") from None
    text = log.read_text(errors="replace")
    assert bus.returncode == -signal.SIGKILL, text[-4000:]
    assert f"hent: crash point {point.split(':')[0]} reached" in text
    killed()
    bus = start(config, log)
    try:
        wait_until(done, began + BUDGET, "every document final after the restart", log)
    finally:
        stop(bus)
    assert bus.returncode == 0, log.read_text(errors="replace")[-4000:]


def assert_partial(found: Iterator[Path]) -> None:
    """The kill left an upload cut short behind it (as much of its first half as reached the disk); two
    when the other worker thread was uploading too at that moment."""
    partial = list(found)
    assert 1 <= len(partial) <= 2, partial


# -- the cases ---------------------------------------------------------------------------------------

def test_every_point_is_hit_by_a_case() -> None:
    assert sorted([*SOAP_POINTS, MID_UPLOAD]) == sorted(POINTS)


def test_the_points_hit_on_rabbitmq_and_postgresql_are_soap_points() -> None:
    assert set(SCALE_OUT_POINTS) <= set(SOAP_POINTS)


@pytest.mark.parametrize(("point", "backend"), [
    *((point, EMBEDDED) for point in SOAP_POINTS),
    *(pytest.param(point, SCALE_OUT, marks=pytest.mark.integration) for point in SCALE_OUT_POINTS),
], indirect=["backend"])
def test_killed_at_a_crash_point_the_bus_finishes_every_act_once_after_a_restart(
    tmp_path: Path, simulator: LegalitySimulator, point: str, backend: Backend
) -> None:
    began = time.monotonic()
    config = backend.apply(soap_bus(tmp_path, simulator))
    numbers = drop_acts(tmp_path, ACTS)
    expected = Counter({"ACKNOWLEDGED": 1, "receipts": 1})
    ledger = ledger_of(config)
    try:
        # Given the bus killing itself at the point; When it is started again without it
        crash_then_recover(
            config, tmp_path / "bus.log", f"{point}:{SOAP_POINTS[point]}",
            lambda: all_done(ledger, tmp_path, numbers, "ACKNOWLEDGED", expected), began)
    finally:
        ledger.close()
    # Then every act was received once by the platform, answered once to the software
    assert_exactly_once(config, tmp_path, numbers, simulator.received(), "ACKNOWLEDGED", expected)
    if point in EVIDENCE:  # and the restart took the path that makes it so
        ledger = ledger_of(config)
        try:
            said = [e.reason for d in ledger.documents() for e in ledger.history(d.id)]
        finally:
            ledger.close()
        assert any(EVIDENCE[point] in text for text in [*said, (tmp_path / "bus.log").read_text()])
    assert time.monotonic() - began < BUDGET


def test_killed_mid_upload_to_a_folder_the_archive_is_written_whole_once(tmp_path: Path) -> None:
    began = time.monotonic()
    config = write_config(tmp_path, poll="0.2s", lease="2s", sweep="0.3s")
    numbers = drop_acts(tmp_path, ACTS)
    out = tmp_path / "out"
    replies = tmp_path / "drop" / "deliberations" / "replies"
    expected = Counter({"DELIVERED": 1})
    ledger = ledger_of(config)
    try:
        crash_then_recover(config, tmp_path / "bus.log", MID_UPLOAD,
                           lambda: all_done(ledger, tmp_path, numbers, "DELIVERED", expected), began,
                           killed=lambda: assert_partial(out.glob(".*.tar.gz.*.tmp")))
        assert ledger.verify_journal() == [] and leftover_debts(ledger) == []
    finally:
        ledger.close()
    archives = sorted(p.name for p in out.iterdir())
    assert len(archives) == ACTS and all(name.endswith(".tar.gz") for name in archives), archives  # no temp left
    assert {stem: dict(kinds) for stem, kinds in reply_kinds(replies).items()} == {n: dict(expected) for n in numbers}
    assert time.monotonic() - began < BUDGET


def test_killed_mid_upload_to_an_sftp_desk_the_act_is_received_once(sshd: SshServer, tmp_path: Path) -> None:
    began = time.monotonic()
    platform = sshd.root / tmp_path.name / "platform"
    for folder in ("inbox", "outbox"):
        (platform / folder).mkdir(parents=True)
    config = write_config(tmp_path, poll="0.2s", lease="2s", sweep="0.3s", extra_bus={"answers": "0.2s"})
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["connectors"]["prefecture"] = {
        "type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user, "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts), "path": str(platform / "inbox"), "timeout": "5s",
        "trigram": "HNT", "quadrigram": "TACT",
        "answers": {"path": str(platform / "outbox"), "ready": {"min_age": "0s", "stable": False}},
    }
    config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    numbers = drop_acts(tmp_path, ACTS)
    expected = Counter({"ACKNOWLEDGED": 1})
    with LegalityDesk.for_root(platform, interval=0.1) as desk:
        ledger = ledger_of(config)
        try:
            crash_then_recover(config, tmp_path / "bus.log", MID_UPLOAD,
                               lambda: all_done(ledger, tmp_path, numbers, "ACKNOWLEDGED", expected), began,
                               killed=lambda: assert_partial((platform / "inbox").glob("*.tar.gz.part")))
        finally:
            ledger.close()
        received = desk.received()
    assert_exactly_once(config, tmp_path, numbers, received, "ACKNOWLEDGED", expected)
    assert not received["duplicates"] and not received["refused"]
    assert not list((platform / "inbox").glob("*.part"))
    assert time.monotonic() - began < BUDGET
