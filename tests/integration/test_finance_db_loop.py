"""config/examples/finance-db-to-procurement.yaml, end to end: the finance software's ``contrats``
table (SQLite here, PostgreSQL when HENT_TEST_POSTGRES_URL is set) → the préfecture as an act and
the procurement platform as DECP, over SOAP and over SFTP → each outcome written back to the row.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import SIRET
from simulators.finance_db import FinanceDatabase
from simulators.legality import LegalitySimulator
from simulators.procurement import ProcurementSimulator
from simulators.procurement_sftp import ProcurementDesk
from tests.harness import CLASSIFICATION, ROOT, run_cli
from tests.pg import postgres_url
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "config" / "examples" / "finance-db-to-procurement.yaml"
FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
SIGNED = date.today() - timedelta(days=3)
#: the example's collectivites.yaml, for a copy of the example written elsewhere
COLLECTIVITES = [{"siren": "214400152", "departement": "044", "arrondissement": 1, "nature": "31",
                  "return_emails": ["actes@saint-herblain.fr"], "classification": str(CLASSIFICATION),
                  "classification_date": "2025-01-15"}]


@pytest.fixture
def legality() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.1) as running:
        yield running


@pytest.fixture
def procurement() -> Iterator[ProcurementSimulator]:
    with ProcurementSimulator(publish_delay=0.1) as running:
        yield running


def environment(workspace: Path, db_url: str, legality: LegalitySimulator, procurement_url: str) -> dict[str, str]:
    return {"HENT_HOME": str(workspace / "var"), "FINANCES_DB_URL": db_url, "FINANCES_FILES": str(workspace / "pdf"),
            "LEGALITY_URL": legality.url, "PROCUREMENT_URL": procurement_url, "HENT_ANSWERS": "0.2s",
            "FINANCES_POLL": "0.2s"}


def run_example(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, config: Path = EXAMPLE) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime = Runtime(load_config(config), Pipeline.for_runtime, retry=FAST, serve_http=False)
    assert runtime.run_until_idle(timeout=60), "the bus did not finish"


def postgres_table(name: str) -> str:
    """The test PostgreSQL's URL (tests/pg.py: skipped, or failed under HENT_REQUIRE_POSTGRES=1, when
    there is none), the table ``name`` dropped if a former run left it."""
    url = postgres_url().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()
    return url


def test_the_example_checks_clean(tmp_path: Path, legality: LegalitySimulator,
                                  procurement: ProcurementSimulator) -> None:
    FinanceDatabase(f"sqlite:///{tmp_path / 'finances.db'}", tmp_path / "pdf").close()
    env = environment(tmp_path, f"sqlite:///{tmp_path / 'finances.db'}", legality, procurement.url)
    result = run_cli("check", "-c", str(EXAMPLE.relative_to(ROOT)), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    # and every server it names answers: the database, the legality platform, the procurement platform
    online = run_cli("check", "--online", "-c", str(EXAMPLE.relative_to(ROOT)), env=env)
    assert online.returncode == 0, online.stdout + online.stderr
    assert "finances_db" in online.stdout and "marches" in online.stdout, online.stdout
    # a database that is not there is named
    gone = run_cli("check", "--online", "-c", str(EXAMPLE.relative_to(ROOT)),
                   env={**env, "FINANCES_DB_URL": f"sqlite:///{tmp_path / 'missing.db'}"})
    assert gone.returncode == 1 and "finances_db" in gone.stdout + gone.stderr, gone.stdout + gone.stderr


def test_from_a_sqlite_table_to_the_prefecture_and_the_procurement_platform_over_soap(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the finance software's table with a contract over the threshold, one under it, one broken
    db = FinanceDatabase(f"sqlite:///{tmp_path / 'finances.db'}", tmp_path / "pdf")
    big = db.add("2026-0042", signed=SIGNED)
    small = db.add("2026-0043", signed=SIGNED, montant="12000.00")
    broken = db.add("2026-0044", signed=SIGNED, cpv="4542110")
    bad = {db.add(f"2026-01{n:02d}", signed=SIGNED, montant="90000.00", **{column: value}): (field, rule)
           for n, (column, value, field, rule) in enumerate([
               ("siret_acheteur", "2144001520001", "acheteur", "siret-format"),
               ("titulaires", "[]", "titulaires", "titulaire-required"),
               ("date_notification", "02/11/2026", "dateNotification", "date-format"),
               ("objet", "x" * 1001, "objet", "objet-length"),
               ("montant_ht", None, "montant", "required"),
           ])}
    # When the example configuration runs against the simulators
    run_example(environment(tmp_path, f"sqlite:///{tmp_path / 'finances.db'}", legality, procurement.url),
                monkeypatch)
    # Then each outcome is in the vendor's row
    rows = db.rows()
    assert rows[big]["hent_etat"] == "TAKEN"
    assert (rows[big]["acte_etat"], rows[big]["id_acte"]) == (
        "ACKNOWLEDGED", f"044-214400152-{SIGNED:%Y%m%d}-2026_0042-CC")
    assert (rows[big]["decp_etat"], rows[big]["decp_id"]) == ("ACKNOWLEDGED", "2026-0042")
    assert rows[big]["acte_date"] and rows[big]["decp_date"] and rows[big]["decp_erreur"] is None
    assert (rows[small]["acte_etat"], rows[small]["decp_etat"]) == ("ACKNOWLEDGED", None)
    assert rows[broken]["hent_etat"] == "ERROR" and "cpv-format" in (rows[broken]["hent_erreur"] or "")
    assert rows[broken]["acte_etat"] is None
    for row, (field, rule) in bad.items():  # each bad value named in the vendor's row, nothing sent
        error = rows[row]["hent_erreur"] or ""
        assert rows[row]["hent_etat"] == "ERROR" and field in error and f"[{rule}]" in error, (field, rule, error)
        assert rows[row]["acte_etat"] is None and rows[row]["decp_etat"] is None
    # and each platform received its part once
    assert sorted(legality.received()["by_act"].values()) == [1, 1]
    assert procurement.received()["published"] == {f"{SIRET}:2026-0042:0": 1}
    # and a second run takes nothing again
    run_example(environment(tmp_path, f"sqlite:///{tmp_path / 'finances.db'}", legality, procurement.url),
                monkeypatch)
    assert procurement.received()["published"] == {f"{SIRET}:2026-0042:0": 1}
    db.close()


def test_from_a_postgresql_table_to_the_procurement_platform_over_sftp(
    tmp_path: Path, sshd: SshServer, legality: LegalitySimulator, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the table in PostgreSQL and the procurement platform's SFTP desk
    table = f"contrats_{os.getpid()}"
    url = postgres_table(table)
    db = FinanceDatabase(url, tmp_path / "pdf", table=table)
    row = db.add("2026-0142", signed=SIGNED, montant="250000.00")
    base = sshd.root / tmp_path.name
    for folder in ("inbox", "outbox"):
        (base / folder).mkdir(parents=True)
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config.update(include=[], collectivites=COLLECTIVITES)
    for route in config["routes"]:
        route["map"] = str(EXAMPLE.parent.parent / "mappings" / "contrats-decp.yaml")
    config["connectors"]["finances_db"]["table"] = table
    config["connectors"]["marches"] = {
        "type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user, "key_file": str(sshd.key_file),
        "known_hosts": str(sshd.known_hosts), "path": str(base / "inbox"), "timeout": "5s",
        "answers": {"path": str(base / "outbox"), "pattern": "*.xml", "ready": {"min_age": "0s", "stable": False}},
    }
    sftp_config = tmp_path / "finance-db-sftp.yaml"
    sftp_config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    # When the bus runs with the desk answering
    with ProcurementDesk(base, interval=0.1) as desk:
        run_example(environment(tmp_path, url, legality, "http://127.0.0.1:9/unused"), monkeypatch, sftp_config)
        assert desk.received()["published"] == {f"{SIRET}:2026-0142:0": 1}
    # Then the receipt is written back to the row in PostgreSQL
    written = db.rows()[row]
    assert (written["hent_etat"], written["decp_etat"], written["decp_id"]) == ("TAKEN", "ACKNOWLEDGED", "2026-0142")
    assert written["acte_etat"] == "ACKNOWLEDGED"
    db.close()
    postgres_table(table)


def _bus(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "run_bus.py", "--log-level", "INFO", "run", "-c", str(config)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})


@pytest.mark.chaos
def test_sigkill_during_database_polls_processes_every_row_once(tmp_path: Path) -> None:
    """The bus is killed while rows are claimed and not yet taken, three times; after a last run every
    row is a document once, its act and DECP delivered once each, and none skipped."""
    rows = 40
    db = FinanceDatabase(f"sqlite:///{tmp_path / 'finances.db'}", tmp_path / "pdf")
    ids = [db.add(f"2026-{n:04d}", signed=SIGNED) for n in range(1, rows + 1)]
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config.update(include=[], collectivites=COLLECTIVITES)
    config["bus"].update({"lease": "2s", "sweep": "0.3s", "metrics": {"enabled": False}})
    config["connectors"]["finances_db"]["batch"] = 5
    config["connectors"]["prefecture"] = {"type": "folder", "path": str(tmp_path / "out-actes"), "create": True,
                                          "trigram": "HNT", "quadrigram": "TACT"}
    config["connectors"]["marches"] = {"type": "folder", "path": str(tmp_path / "out-decp"), "create": True}
    for route in config["routes"]:
        route["map"] = str(EXAMPLE.parent.parent / "mappings" / "contrats-decp.yaml")
    path = tmp_path / "hent.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    env = {"HENT_HOME": str(tmp_path / "var"), "FINANCES_DB_URL": f"sqlite:///{tmp_path / 'finances.db'}",
           "FINANCES_FILES": str(tmp_path / "pdf"), "FINANCES_POLL": "0.1s"}
    log = tmp_path / "bus.log"
    kills = caught = 0
    for _ in range(3):  # killed while some rows are CLAIMED (picked by a poll, not yet taken)
        bus = _bus(path, env, log)
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                states = [r["hent_etat"] for r in db.rows().values()]
                if "CLAIMED" in states and "NOUVEAU" in states:
                    caught += 1
                    break
                if "NOUVEAU" not in states:
                    break
                time.sleep(0.02)
        finally:
            bus.send_signal(signal.SIGKILL)
            bus.wait(timeout=10)
        kills += 1
    bus = _bus(path, env, log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = db.rows()
            if all(r["hent_etat"] == "TAKEN" and r["acte_etat"] == "DELIVERED" and r["decp_etat"] == "DELIVERED"
                   for r in found.values()):
                break
            time.sleep(0.2)
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(timeout=30)
    found = db.rows()
    assert [r for r in found.values() if r["hent_etat"] != "TAKEN"] == [], log.read_text()[-3000:]
    ledger = Ledger(f"sqlite:///{tmp_path / 'var' / 'ledger.db'}")
    try:
        bundles = sorted(d.bundle for d in ledger.documents())
        assert bundles == sorted(f"finances_db-{i}.json" for i in ids), bundles
        assert ledger.verify_journal() == []
    finally:
        ledger.close()
    archives = [p for p in (tmp_path / "out-actes").glob("*.tar.gz")]
    decps = [p for p in (tmp_path / "out-decp").glob("*.xml")]
    assert (len(archives), len(decps), kills) == (rows, rows, 3)
    assert caught >= 1, "the bus was never killed with rows claimed and not taken"
    db.close()
