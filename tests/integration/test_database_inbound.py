"""The database source on the PostgreSQL of HENT_TEST_POSTGRES_URL, run as roles holding only what it needs:
SELECT plus UPDATE on the state and outcome columns, or SELECT on a view plus SELECT and INSERT on an
outcome table; and two processes racing for the same rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bus.connector import Claimed
from bus.errors import TransientAlert
from connectors._database_common import as_value, database_errors, sql_table
from connectors.database_inbound import DatabaseInbound, DatabaseInboundConfig
from tests.harness import ROOT
from tests.pg import PgSandbox, pg_sandbox  # noqa: F401 - the pg_sandbox fixture

pytestmark = pytest.mark.integration

PASSWORD = "Hent-db-pa55word"
VENDOR = """
CREATE TABLE {schema}.export_actes (
    id integer PRIMARY KEY, numero text NOT NULL, decision date, montant numeric(12, 2), signe_le timestamptz,
    fichier text, statut text, id_acte text, erreur text, date_retour timestamptz, statut_decp text, id_decp text)
"""
FLUX = """
CREATE TABLE {schema}.flux (
    numero text PRIMARY KEY, exported_at timestamp, objet text, interne text)
"""
OUTCOME = """
CREATE TABLE {schema}.hent_outcome (
    numero text NOT NULL, seq integer NOT NULL, route varchar(200), state varchar(40) NOT NULL,
    identifier varchar(200), error text, at timestamptz NOT NULL, code varchar(40), PRIMARY KEY (numero, seq))
"""
COLUMNS = {"state": "statut", "identifier": "id_acte", "error": "erreur", "at": "date_retour",
           "routes": {"contracts-to-procurement": {"state": "statut_decp", "identifier": "id_decp"}}}


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HENT_TEST_DB_PASSWORD", PASSWORD)
    return PASSWORD


def state_role(pg: PgSandbox) -> str:
    """SELECT on the vendor's table, UPDATE on the state and outcome columns only."""
    return pg.role(PASSWORD, "GRANT SELECT ON {schema}.export_actes TO {role}",
                   "GRANT UPDATE (statut, id_acte, erreur, date_retour, statut_decp, id_decp) "
                   "ON {schema}.export_actes TO {role}")


def outcome_role(pg: PgSandbox) -> str:
    """SELECT on a view of the vendor's, SELECT and INSERT on the outcome table, nothing else."""
    return pg.role(PASSWORD, "GRANT SELECT ON {schema}.v_flux TO {role}",
                   "GRANT SELECT, INSERT ON {schema}.hent_outcome TO {role}")


def state_config(pg: PgSandbox, role: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "database", "url": pg.url_of(role), "table": f"{pg.schema}.export_actes", "key": "id",
            "select": {"state": {"column": "statut", "ready": ["NOUVEAU", None]}}, "files": ["fichier"],
            "files_dir": str(tmp_path / "pdf"), "outcome": {"columns": COLUMNS}, "work_dir": str(tmp_path / "work"),
            "connect_timeout": "5s", "timeout": "10s", **extra}


def watermark_config(pg: PgSandbox, role: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "database", "url": pg.url_of(role), "table": f"{pg.schema}.v_flux", "key": "numero",
            "select": {"watermark": {"column": "exported_at", "start": "2024-01-01"}},
            "outcome": {"table": f"{pg.schema}.hent_outcome"}, "work_dir": str(tmp_path / "work"),
            "connect_timeout": "5s", "timeout": "10s", **extra}


OPENED: list[DatabaseInbound] = []


@pytest.fixture(autouse=True)
def close_sources() -> Iterator[None]:
    """Every connector a test made is closed (its pooled connections with it) before the roles go."""
    yield
    while OPENED:
        OPENED.pop().close()


def source(config: dict[str, Any], name: str = "delib") -> DatabaseInbound:
    connector = DatabaseInbound(name, DatabaseInboundConfig.model_validate({**config, "password": PASSWORD}))
    OPENED.append(connector)
    return connector


def take(connector: DatabaseInbound) -> list[Claimed]:
    return [claimed for candidate in connector.list_ready() if (claimed := connector.claim(candidate)) is not None]


def test_state_mode_runs_with_select_and_update_on_its_columns_only(pg: PgSandbox, tmp_path: Path) -> None:
    # Given the vendor's table, its PDF, and a role that may read it and write only the outcome columns
    pg.execute(VENDOR, "INSERT INTO {schema}.export_actes (id, numero, decision, montant, signe_le, fichier, statut) "
                       "VALUES (1, 'CC-1', '2024-05-02', 41250.50, '2024-05-02 09:30+00', 'CC-1.pdf', 'NOUVEAU'), "
                       "(2, 'DEL-2', '2024-05-03', NULL, NULL, 'absent.pdf', NULL), "
                       "(3, 'DEL-3', '2024-05-03', NULL, NULL, NULL, 'TAKEN')")
    (tmp_path / "pdf").mkdir()
    (tmp_path / "pdf" / "CC-1.pdf").write_bytes(b"%PDF-1.4 contract")
    delib = source(state_config(pg, state_role(pg), tmp_path))
    assert delib.reachable() == (True, f"{pg.url_of(delib.url.username or '')} ({pg.schema}.export_actes)")
    # When it polls
    [claimed] = take(delib)
    # Then the row is claimed, typed values in JSON, its file along; the one missing its file is in error
    assert json.loads(claimed.sidecar.read_bytes()) == {
        "id": 1, "numero": "CC-1", "decision": "2024-05-02", "montant": "41250.50",
        "signe_le": "2024-05-02T09:30:00+00:00", "fichier": "CC-1.pdf"}
    assert claimed.files["CC-1.pdf"].read_bytes() == b"%PDF-1.4 contract"
    assert pg.rows("SELECT id, statut, erreur FROM {schema}.export_actes ORDER BY id") == [
        (1, "CLAIMED", None), (2, "ERROR", f"column 'fichier' names 'absent.pdf': {tmp_path}/pdf/absent.pdf not found"),
        (3, "TAKEN", None)]
    # When the platforms answer, per route, and the document is committed
    delib.reply(claimed.key, "1-2", b"<ARActe/>", {"state": "ACKNOWLEDGED", "route": "actes-to-legality",
                                                    "id_acte": "034-214400152-20240502-CC1-CC"})
    delib.reply(claimed.key, None, None, {"state": "DELIVERED", "route": "contracts-to-procurement",
                                          "message": {"decp_id": "2024-CC1"}})
    delib.commit(claimed)
    # Then the outcome columns hold it, with the time of the answer
    [(state, id_acte, error, at, decp_state, decp_id)] = pg.rows(
        "SELECT statut, id_acte, erreur, date_retour, statut_decp, id_decp FROM {schema}.export_actes WHERE id = 1")
    assert (state, id_acte, error, decp_state, decp_id) == (
        "ACKNOWLEDGED", "034-214400152-20240502-CC1-CC", None, "DELIVERED", "2024-CC1")
    assert isinstance(at, datetime) and abs((datetime.now(UTC) - at).total_seconds()) < 60
    # And the role could not have written anything else
    with pytest.raises(TransientAlert, match="permission denied for table export_actes"):
        _update_numero(delib)


def _update_numero(delib: DatabaseInbound) -> None:
    """What the role must not do: change a column of the vendor's that is not an outcome."""
    table = sql_table(delib.config.table or "", ["id", "numero"])
    with database_errors(delib.name, delib.where), delib.engine.begin() as conn:
        conn.execute(update(table).where(table.c.id == as_value(1)).values(numero=as_value("changed")))


def test_state_mode_recovers_what_a_killed_process_claimed(pg: PgSandbox, tmp_path: Path) -> None:
    pg.execute(VENDOR, "INSERT INTO {schema}.export_actes (id, numero, statut) VALUES (1, 'A', 'NOUVEAU'), "
                       "(2, 'B', 'NOUVEAU')")
    (tmp_path / "pdf").mkdir()
    config = state_config(pg, state_role(pg), tmp_path)
    first = source(config)
    one, two = take(first)
    first.tag(one, "doc-1")
    first.close()
    again = source(config)
    recovered = {c.key: c.ref for c in again.recover()}
    assert recovered == {"delib-1.json": "doc-1", "delib-2.json": None}
    again.rollback(two, "numero: unknown")
    assert pg.rows("SELECT statut, erreur FROM {schema}.export_actes WHERE id = 2") == [("ERROR", "numero: unknown")]


def test_watermark_mode_reads_a_view_and_only_inserts_into_its_outcome_table(
        pg: PgSandbox, tmp_path: Path) -> None:
    # Given a view of the vendor's rows, and a role that reads it and inserts outcomes, nothing more
    pg.execute(FLUX, OUTCOME, "CREATE VIEW {schema}.v_flux AS SELECT numero, exported_at, objet FROM {schema}.flux",
               "INSERT INTO {schema}.flux VALUES ('2023-OLD', '2023-12-31 23:00', 'avant', 'x'), "
               "('007', '2024-03-02 10:00', 'deux', 'x'), ('DEL-1', '2024-03-01 10:00', 'un', 'x')")
    flux = source(watermark_config(pg, outcome_role(pg), tmp_path), "flux")
    assert flux.reachable()[0]
    # When it polls: from start, in watermark order, each row claimed by inserting its claim
    first, second = take(flux)
    assert [first.key, second.key] == ["flux-DEL-1.json", "flux-%3007.json"]
    assert json.loads(second.sidecar.read_bytes()) == {"numero": "007", "exported_at": "2024-03-02T10:00:00",
                                                       "objet": "deux"}
    assert take(flux) == []
    # When one is committed and answered, the other rolled back, and a killed process's claim is recovered
    flux.tag(second, "doc-2")
    flux.commit(first)
    flux.reply(first.key, "1-3", b"<AnomalieActe/>", {"state": "REJECTED", "route": "r", "reason": "Nature inconnue",
                                                       "id_acte": "034-X-DE"})
    assert [(c.key, c.ref) for c in source(watermark_config(pg, flux.url.username or "", tmp_path), "flux").recover()
            ] == [("flux-%3007.json", "doc-2")]
    flux.rollback(second, "objet: too short")
    # Then the outcome table tells each row's story, never updated
    assert pg.rows("SELECT numero, seq, route, state, identifier, error, code FROM {schema}.hent_outcome "
                   "ORDER BY numero, seq") == [
        ("007", 0, None, "CLAIMED", None, None, None), ("007", 1, None, "ERROR", None, "objet: too short", None),
        ("DEL-1", 0, None, "CLAIMED", None, None, None), ("DEL-1", 1, None, "TAKEN", None, None, None),
        ("DEL-1", 2, "r", "REJECTED", "034-X-DE", "Nature inconnue", "1-3")]
    # And a newer row is taken on the next poll
    pg.execute("INSERT INTO {schema}.flux VALUES ('DEL-4', '2024-03-05 08:00', 'quatre', 'x')")
    assert [c.key for c in take(flux)] == ["flux-DEL-4.json"]


def test_a_role_without_the_grants_is_told_what_is_missing(pg: PgSandbox, tmp_path: Path) -> None:
    pg.execute(VENDOR)
    nobody = pg.role(PASSWORD)
    ok, why = source(state_config(pg, nobody, tmp_path)).reachable()
    assert not ok and "permission denied for table export_actes (a person must act" in why and PASSWORD not in why


RACER = """
import json, os, sys, time
from pathlib import Path
from connectors.database_inbound import DatabaseInbound, DatabaseInboundConfig
password = os.environ["HENT_TEST_DB_PASSWORD"]
config = DatabaseInboundConfig.model_validate({**json.loads(sys.argv[1]), "password": password})
node = DatabaseInbound("node", config)
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
taken = []
while True:
    candidates = node.list_ready()
    if not candidates:
        break
    for candidate in candidates:
        claimed = node.claim(candidate)
        if claimed is not None:
            taken.append(claimed.key)
            node.commit(claimed)
print(json.dumps(taken))
"""


@pytest.mark.parametrize("mode", ["state", "watermark"])
def test_two_processes_racing_for_the_same_rows_claim_each_row_once(
        pg: PgSandbox, tmp_path: Path, password: str, mode: str) -> None:
    # Given 200 ready rows and two bus processes polling them in small batches, as least-privileged roles
    (tmp_path / "pdf").mkdir()
    if mode == "state":
        pg.execute(VENDOR, "INSERT INTO {schema}.export_actes (id, numero, statut) "
                           "SELECT n, 'DEL-' || n, 'NOUVEAU' FROM generate_series(1, 200) AS n")
        role, make = state_role(pg), state_config
        expected = sorted(f"node-{n}.json" for n in range(1, 201))
    else:
        pg.execute(FLUX, OUTCOME, "CREATE VIEW {schema}.v_flux AS SELECT numero, exported_at, objet FROM {schema}.flux",
                   "INSERT INTO {schema}.flux SELECT 'F' || n, timestamp '2024-03-01' + n * interval '1 minute', "
                   "'objet', 'x' FROM generate_series(1, 200) AS n")
        role, make = outcome_role(pg), watermark_config
        expected = sorted(f"node-F{n}.json" for n in range(1, 201))
    go = tmp_path / "go"
    racers = []
    for n in (1, 2):
        config = make(pg, role, tmp_path, work_dir=str(tmp_path / f"node{n}"), batch=7)
        racers.append(subprocess.Popen(
            [sys.executable, "-c", RACER, json.dumps(config), str(go)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}))
    outputs = []
    try:
        time.sleep(1.0)  # both started... then released at once
        go.touch()
        # When both have nothing left to take
        for racer in racers:
            out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err.decode()
            outputs.append(json.loads(out))
    finally:
        for racer in racers:  # by their own PIDs, if a failure left one running
            if racer.poll() is None:
                racer.kill()
                racer.communicate()
    # Then each row was claimed by exactly one process, and both took some
    first, second = outputs
    assert not set(first) & set(second)
    assert sorted(first + second) == expected
    assert first and second
