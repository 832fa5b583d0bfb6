"""The database source on a SQLite file: state and watermark modes, claim once, files, outcomes,
replies, recovery, configuration mistakes and the password."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bus.config import load_config
from bus.connector import Claimed, InboundContext
from bus.errors import ConfigError, TransientAlert, TransientError
from bus.secrets import MASK, Secret, redact
from connectors._database_common import decode_key, encode_key, relative_file, row_json
from connectors.database_inbound import MANIFEST, DatabaseInbound, DatabaseInboundConfig

SCHEMA = """
CREATE TABLE export_actes (
    id INTEGER PRIMARY KEY, numero TEXT, objet TEXT, fichier TEXT, annexes TEXT,
    statut TEXT, id_acte TEXT, erreur TEXT, date_retour TEXT, statut_decp TEXT, id_decp TEXT);
CREATE TABLE flux (id INTEGER PRIMARY KEY, exported_at TEXT, numero TEXT, fichier TEXT, contenu BLOB);
CREATE TABLE hent_outcome (
    id INTEGER NOT NULL, seq INTEGER NOT NULL, route TEXT, state TEXT NOT NULL, identifier TEXT,
    error TEXT, at TEXT NOT NULL, code TEXT, PRIMARY KEY (id, seq));
"""
COLUMNS = {"state": "statut", "identifier": "id_acte", "error": "erreur", "at": "date_retour",
           "routes": {"contracts-to-procurement": {"state": "statut_decp", "identifier": "id_decp"}}}


@pytest.fixture
def vendor(tmp_path: Path) -> Path:
    """The vendor's database, and its PDFs under tmp_path/pdf."""
    db = tmp_path / "vendor.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    (tmp_path / "pdf" / "2024").mkdir(parents=True)
    (tmp_path / "pdf" / "2024" / "DEL-1.pdf").write_bytes(b"%PDF-1.4 one")
    (tmp_path / "pdf" / "DEL-2.pdf").write_bytes(b"%PDF-1.4 two")
    return db


def sql(db: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(statement, params).fetchall()


def add_acts(db: Path, *rows: tuple[Any, ...]) -> None:
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO export_actes (id, numero, objet, fichier, statut) VALUES (?, ?, ?, ?, ?)", rows)


OPENED: list[DatabaseInbound] = []


@pytest.fixture(autouse=True)
def close_sources() -> Iterator[None]:
    yield
    while OPENED:
        OPENED.pop().close()


def state_source(db: Path, name: str = "delib", context: InboundContext | None = None, **extra: Any) -> DatabaseInbound:
    config = DatabaseInboundConfig.model_validate({
        "type": "database", "url": f"sqlite:///{db}", "table": "export_actes", "key": "id",
        "select": {"state": {"column": "statut", "ready": ["NOUVEAU", None]}},
        "files": ["fichier"], "files_dir": str(db.parent / "pdf"), "outcome": {"columns": COLUMNS},
        "work_dir": str(db.parent / f"work-{name}"), "timeout": "5s", **extra,
    })
    OPENED.append(DatabaseInbound(name, config, context))
    return OPENED[-1]


def watermark_source(db: Path, name: str = "flux", **extra: Any) -> DatabaseInbound:
    config = DatabaseInboundConfig.model_validate({
        "type": "database", "url": f"sqlite:///{db}", "query": "SELECT id, exported_at, numero, fichier FROM flux",
        "key": "id", "select": {"watermark": {"column": "exported_at", "start": "2024-01-01"}},
        "files": "fichier", "files_dir": str(db.parent / "pdf"), "outcome": {"table": "hent_outcome"},
        "work_dir": str(db.parent / f"work-{name}"), "timeout": "5s", **extra,
    })
    OPENED.append(DatabaseInbound(name, config))
    return OPENED[-1]


def take(source: DatabaseInbound) -> list[Claimed]:
    return [claimed for candidate in source.list_ready() if (claimed := source.claim(candidate)) is not None]


# -- state mode -------------------------------------------------------------------------------
def test_a_ready_row_is_claimed_as_its_sidecar_and_files_then_committed(vendor: Path) -> None:
    # Given a new row, an empty one (null state), and one already taken
    add_acts(vendor, (1, "DEL-1", "Budget", "2024/DEL-1.pdf", "NOUVEAU"), (2, "DEL-2", "Voirie", "DEL-2.pdf", None),
             (3, "DEL-3", "Ancien", "DEL-2.pdf", "TAKEN"))
    source = state_source(vendor)
    # When listed and the first claimed
    candidates = source.list_ready()
    assert [(c.key, c.members) for c in candidates] == [("delib-1.json", ("2024/DEL-1.pdf",)),
                                                        ("delib-2.json", ("DEL-2.pdf",))]
    claimed = source.claim(candidates[0])
    # Then the row is CLAIMED, and the bundle is its columns (not Hent's own) and its file, copied
    assert claimed is not None and list(claimed.files) == ["delib-1.json", "2024/DEL-1.pdf"]
    assert sql(vendor, "SELECT statut FROM export_actes WHERE id = 1") == [("CLAIMED",)]
    assert json.loads(claimed.sidecar.read_bytes()) == {
        "id": 1, "numero": "DEL-1", "objet": "Budget", "fichier": "2024/DEL-1.pdf", "annexes": None}
    assert claimed.files["2024/DEL-1.pdf"].read_bytes() == b"%PDF-1.4 one"
    assert claimed.files["2024/DEL-1.pdf"].is_relative_to(vendor.parent / "work-delib")
    # And a second claim of it finds it taken; it is no longer listed
    assert source.claim(candidates[0]) is None
    assert [c.key for c in source.list_ready()] == ["delib-2.json"]
    # When committed
    source.commit(claimed)
    # Then the row is TAKEN and the local copy is gone
    assert sql(vendor, "SELECT statut FROM export_actes WHERE id = 1") == [("TAKEN",)]
    assert not claimed.sidecar.parent.exists()


def test_the_batch_bounds_a_poll(vendor: Path) -> None:
    add_acts(vendor, *[(n, f"DEL-{n}", "x", None, "NOUVEAU") for n in range(1, 6)])
    assert [c.key for c in state_source(vendor, batch=2).list_ready()] == ["delib-1.json", "delib-2.json"]


@pytest.mark.parametrize("mode", ["state", "watermark"])
def test_two_connectors_racing_for_the_same_rows_claim_each_row_once(vendor: Path, mode: str) -> None:
    # Given 40 ready rows and two pollers of their own (two engines), as two bus nodes
    add_acts(vendor, *[(n, f"DEL-{n}", "x", None, "NOUVEAU") for n in range(1, 41)])
    with sqlite3.connect(vendor) as conn:
        conn.executemany("INSERT INTO flux (id, exported_at, numero) VALUES (?, ?, ?)",
                         [(n, f"2024-02-{n % 28 + 1:02d}", f"F-{n}") for n in range(1, 41)])
    make = state_source if mode == "state" else watermark_source
    pollers = [make(vendor, "node", work_dir=str(vendor.parent / f"work-{n}")) for n in (1, 2)]
    taken: dict[int, list[str]] = {1: [], 2: []}
    start = threading.Barrier(2)

    def poll(n: int) -> None:
        start.wait()
        for candidate in pollers[n - 1].list_ready():  # both see the same rows
            claimed = pollers[n - 1].claim(candidate)
            if claimed is not None:
                taken[n].append(claimed.key)

    # When both claim everything they listed, at once
    threads = [threading.Thread(target=poll, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then each row was claimed by exactly one of them
    assert sorted(taken[1] + taken[2]) == sorted(f"node-{n}.json" for n in range(1, 41))
    assert not set(taken[1]) & set(taken[2])


def test_rollback_writes_the_error_state_and_reason(vendor: Path) -> None:
    add_acts(vendor, (1, "DEL-1", "Budget", None, "NOUVEAU"))
    source = state_source(vendor)
    [claimed] = take(source)
    source.rollback(claimed, "sidecar.numero: required\n")
    state, error, at = sql(vendor, "SELECT statut, erreur, date_retour FROM export_actes")[0]
    assert (state, error) == ("ERROR", "sidecar.numero: required")
    assert datetime.fromisoformat(at).tzinfo is not None
    assert not claimed.sidecar.parent.exists() and source.list_ready() == []


@pytest.mark.parametrize(("value", "why"), [
    ("absent.pdf", "{pdf}/absent.pdf not found"),
    ("../vendor.db", "a file name relative to files_dir is expected"),
    ("/etc/passwd", "a file name relative to files_dir is expected"),
])
def test_a_row_naming_a_missing_or_unsafe_file_is_rolled_back_naming_column_and_path(
        vendor: Path, value: str, why: str) -> None:
    # Given a row whose file column names a file that is not there (or out of files_dir)
    add_acts(vendor, (1, "DEL-1", "Budget", value, "NOUVEAU"))
    source = state_source(vendor)
    # When claimed
    [candidate] = source.list_ready()
    # Then nothing is handed to the runtime, and the row says why
    assert source.claim(candidate) is None
    reason = f"column 'fichier' names {value!r}: " + why.format(pdf=vendor.parent / "pdf")
    assert sql(vendor, "SELECT statut, erreur FROM export_actes") == [("ERROR", reason)]
    assert not (vendor.parent / "work-delib" / "claims" / "delib-1").exists()


def test_files_dir_unmounted_takes_nothing(vendor: Path) -> None:
    add_acts(vendor, (1, "DEL-1", "Budget", "DEL-2.pdf", "NOUVEAU"))
    source = state_source(vendor, files_dir=str(vendor.parent / "unmounted"))
    with pytest.raises(TransientAlert, match="files_dir .*unmounted is not a folder: mount it or fix files_dir"):
        source.list_ready()
    assert sql(vendor, "SELECT statut FROM export_actes") == [("NOUVEAU",)]


def test_files_the_mapping_names_come_along_and_json_columns_are_read_as_json(vendor: Path) -> None:
    # Given a row whose annexes (JSON text) name a file the mapping reads
    add_acts(vendor, (1, "DEL-1", "Budget", "2024/DEL-1.pdf", "NOUVEAU"))
    sql(vendor, "UPDATE export_actes SET annexes = ? WHERE id = 1", json.dumps([{"fichier": "DEL-2.pdf"}]))

    def members(name: str, data: bytes) -> list[str]:
        row = json.loads(data)
        return [row["fichier"], *(a["fichier"] for a in row["annexes"]), "not-there.pdf"]

    source = state_source(vendor, context=InboundContext(bundle_members=members), json_columns=["annexes"])
    # When claimed
    [claimed] = take(source)
    # Then the annexes are JSON in the sidecar, and the annex is in the bundle (the mapping reports the missing one)
    assert json.loads(claimed.sidecar.read_bytes())["annexes"] == [{"fichier": "DEL-2.pdf"}]
    assert list(claimed.files) == ["delib-1.json", "2024/DEL-1.pdf", "DEL-2.pdf"]


def test_a_json_column_that_is_not_json_rolls_the_row_back(vendor: Path) -> None:
    add_acts(vendor, (1, "DEL-1", "Budget", None, "NOUVEAU"))
    sql(vendor, "UPDATE export_actes SET annexes = '[{' WHERE id = 1")
    source = state_source(vendor, json_columns=["annexes"])
    assert take(source) == []
    [(state, error)] = sql(vendor, "SELECT statut, erreur FROM export_actes")
    assert state == "ERROR" and error.startswith("column 'annexes' does not hold JSON (")


def test_a_query_chooses_the_rows_and_columns_read(vendor: Path) -> None:
    add_acts(vendor, (1, "DEL-1", "Budget", None, "NOUVEAU"), (2, "AR-2", "Arrêté", None, "NOUVEAU"))
    query = "SELECT id, numero, statut FROM export_actes WHERE numero LIKE 'DEL%'"
    source = state_source(vendor, files=[], query=query)
    [claimed] = take(source)
    assert json.loads(claimed.sidecar.read_bytes()) == {"id": 1, "numero": "DEL-1"}


def test_a_binary_column_is_refused_before_anything_is_claimed(vendor: Path) -> None:
    sql(vendor, "INSERT INTO flux VALUES (1, '2024-03-01', 'F-1', NULL, x'00ff')")
    source = watermark_source(vendor, query="SELECT * FROM flux")
    with pytest.raises(ConfigError, match="column 'contenu' holds binary data: Hent reads a row's files from "
                       "files_dir, not from the database; leave the column out of query"):
        source.list_ready()
    assert sql(vendor, "SELECT count(*) FROM hent_outcome") == [(0,)]


# -- replies ----------------------------------------------------------------------------------
def test_replies_write_state_identifier_error_and_time_to_the_route_columns(vendor: Path) -> None:
    # Given a claimed contract
    add_acts(vendor, (1, "CC-1", "Marché", None, "NOUVEAU"))
    source = state_source(vendor, replies_dir=str(vendor.parent / "replies"))
    [claimed] = take(source)
    # When the legality platform acknowledges it and the procurement platform rejects it
    source.reply(claimed.key, "1-2", b"<ARActe/>", {"state": "ACKNOWLEDGED", "route": "actes-to-legality",
                                                     "id_acte": "034-214400152-20240502-CC1-CC", "reason": None})
    source.reply(claimed.key, None, None, {"state": "REJECTED", "route": "contracts-to-procurement", "id_acte": None,
                                           "reason": "montant: required", "message": {"decp_id": "2024-CC1"}})
    # Then each route's columns hold its outcome (the procurement route writes only the columns it names)
    assert sql(vendor, "SELECT statut, id_acte, erreur, statut_decp, id_decp FROM export_actes") == [
        ("ACKNOWLEDGED", "034-214400152-20240502-CC1-CC", None, "REJECTED", "2024-CC1")]
    # And the replies folder got the message and each summary, never overwritten
    assert sorted(p.name for p in (vendor.parent / "replies").iterdir()) == [
        "delib-1.1.1-2.xml", "delib-1.1.json", "delib-1.2.json"]
    # And a commit afterwards leaves the reply written over the claim alone
    source.commit(claimed)
    assert sql(vendor, "SELECT statut FROM export_actes") == [("ACKNOWLEDGED",)]


def test_a_reply_with_an_id_written_again_after_a_crash_adds_no_second_reply_file(vendor: Path) -> None:
    # Given a contract's acknowledgment written to the row and the replies folder under its id
    add_acts(vendor, (1, "CC-1", "Marché", None, "NOUVEAU"))
    source = state_source(vendor, replies_dir=str(vendor.parent / "replies"))
    [claimed] = take(source)
    summary = {"state": "ACKNOWLEDGED", "route": "actes-to-legality", "id_acte": "034-214400152-20240502-CC1-CC",
               "reason": None, "reply_id": "d1:ACKNOWLEDGED:t"}
    source.reply(claimed.key, "1-2", b"<ARActe/>", summary)
    # When the bus, killed before its ledger knew, writes it again
    again = source.reply(claimed.key, "1-2", b"<ARActe/>", summary)
    # Then the row says the same, and the folder holds the reply once
    assert again == ["export_actes: statut, erreur, date_retour, id_acte"]
    assert sql(vendor, "SELECT statut, id_acte FROM export_actes") == [
        ("ACKNOWLEDGED", "034-214400152-20240502-CC1-CC")]
    assert sorted(p.name for p in (vendor.parent / "replies").iterdir()) == ["delib-1.1.1-2.xml", "delib-1.1.json"]


def test_a_failure_reply_writes_its_reason_and_a_later_success_clears_it(vendor: Path) -> None:
    add_acts(vendor, (1, "DEL-1", "Budget", None, "NOUVEAU"))
    source = state_source(vendor)
    [claimed] = take(source)
    source.reply(claimed.key, "1-3", b"<Anomalie/>", {"state": "REJECTED", "reason": "Classification inconnue"})
    assert sql(vendor, "SELECT statut, erreur FROM export_actes") == [("REJECTED", "Classification inconnue")]
    source.reply(claimed.key, None, None, {"state": "SENT", "reason": "transaction 42"})
    assert sql(vendor, "SELECT statut, erreur FROM export_actes") == [("SENT", None)]


# -- recovery ---------------------------------------------------------------------------------
def test_recover_gives_back_a_claimed_row_with_its_tag_or_rebuilt_with_the_same_bytes(vendor: Path) -> None:
    # Given a row claimed and tagged, then the bus killed
    add_acts(vendor, (1, "DEL-1", "Budget", "2024/DEL-1.pdf", "NOUVEAU"), (2, "DEL-2", "Voirie", None, "NOUVEAU"))
    first = state_source(vendor)
    one, two = take(first)
    one = first.tag(one, "doc-1")
    sidecar = one.sidecar.read_bytes()
    # When a new process recovers
    again = state_source(vendor)
    recovered = {c.key: c for c in again.recover()}
    # Then both rows come back, the tagged one with its document id
    assert sorted(recovered) == ["delib-1.json", "delib-2.json"]
    assert recovered["delib-1.json"].ref == "doc-1" and recovered["delib-1.json"].sidecar.read_bytes() == sidecar
    # When the local snapshots are lost too (another machine): rebuilt from the database, same bytes
    for claimed in recovered.values():
        (claimed.sidecar.parent / MANIFEST).unlink()
    rebuilt = {c.key: c for c in state_source(vendor).recover()}
    assert rebuilt["delib-1.json"].ref is None and rebuilt["delib-1.json"].sidecar.read_bytes() == sidecar
    assert rebuilt["delib-1.json"].files["2024/DEL-1.pdf"].read_bytes() == b"%PDF-1.4 one"
    # When one is committed and the other rolled back: nothing left to recover, no folder left
    again.commit(rebuilt["delib-1.json"])
    again.rollback(rebuilt["delib-2.json"], "bad")
    assert again.recover() == [] and list((vendor.parent / "work-delib" / "claims").iterdir()) == []


# -- watermark mode with an outcome table -------------------------------------------------------
def test_watermark_mode_claims_by_inserting_into_the_outcome_table(vendor: Path) -> None:
    # Given rows before start, after it, and one with no watermark
    sql(vendor, "INSERT INTO flux (id, exported_at, numero, fichier) VALUES (1, '2023-12-31', 'old', NULL), "
                "(2, '2024-03-02', 'B', 'DEL-2.pdf'), (3, '2024-03-01', 'A', NULL), (4, NULL, 'none', NULL)")
    source = watermark_source(vendor)
    # When listed: watermark order, from start
    candidates = source.list_ready()
    assert [c.key for c in candidates] == ["flux-3.json", "flux-2.json"]
    # When claimed: a claim row each, once
    first, second = (source.claim(c) for c in candidates)
    assert first is not None and second is not None and source.claim(candidates[0]) is None
    assert list(second.files) == ["flux-2.json", "DEL-2.pdf"]
    assert source.list_ready() == []
    # When one is committed, the other rolled back, and a reply arrives for the first
    source.commit(first)
    source.commit(first)  # a commit tried again adds nothing
    source.rollback(second, "numero: unknown")
    source.reply(first.key, "1-2", b"<ARActe/>", {"state": "ACKNOWLEDGED", "route": "legality",
                                                  "id_acte": "034-X-DE", "reason": "ignored"})
    # Then the outcome table holds one row per event, in order
    rows = sql(vendor, "SELECT id, seq, route, state, identifier, error, code FROM hent_outcome ORDER BY id, seq")
    assert rows == [(2, 0, None, "CLAIMED", None, None, None), (2, 1, None, "ERROR", None, "numero: unknown", None),
                    (3, 0, None, "CLAIMED", None, None, None), (3, 1, None, "TAKEN", None, None, None),
                    (3, 2, "legality", "ACKNOWLEDGED", "034-X-DE", None, "1-2")]
    # And a row added later below the watermark reached is not read (the watermark narrows the query)
    sql(vendor, "INSERT INTO flux (id, exported_at, numero) VALUES (5, '2024-03-01T12', 'late'), "
                "(6, '2024-03-03', 'new')")
    assert [c.key for c in watermark_source(vendor).list_ready()] == ["flux-6.json"]


def test_watermark_recover_finds_claims_that_did_not_end(vendor: Path) -> None:
    sql(vendor, "INSERT INTO flux (id, exported_at, numero) VALUES (1, '2024-03-01', 'A'), (2, '2024-03-02', 'B')")
    source = watermark_source(vendor)
    one, two = take(source)
    source.commit(one)
    source.tag(two, "doc-2")
    [recovered] = watermark_source(vendor).recover()
    assert recovered.key == "flux-2.json" and recovered.ref == "doc-2"
    # a claimed row the vendor deleted meanwhile ends in error
    sql(vendor, "DELETE FROM flux WHERE id = 2")
    (recovered.sidecar.parent / MANIFEST).unlink()
    assert watermark_source(vendor).recover() == []
    assert sql(vendor, "SELECT state, error FROM hent_outcome WHERE id = 2 AND seq = 1")[0][0] == "ERROR"


def test_an_outcome_table_that_refuses_the_claim_is_an_alert_not_a_lost_race(vendor: Path) -> None:
    sql(vendor, "INSERT INTO flux (id, exported_at, numero) VALUES (1, '2024-03-01', 'A')")
    sql(vendor, "DROP TABLE hent_outcome")
    sql(vendor, "CREATE TABLE hent_outcome (id INTEGER NOT NULL, seq INTEGER NOT NULL, route TEXT, state TEXT, "
                "identifier TEXT, error TEXT, at TEXT, code TEXT, extra TEXT NOT NULL, PRIMARY KEY (id, seq))")
    source = watermark_source(vendor)
    [candidate] = source.list_ready()
    with pytest.raises(TransientAlert, match=r"NOT NULL constraint failed: hent_outcome.extra \(a person must act"):
        source.claim(candidate)


# -- pieces -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [(42,), ("DEL-2024-001",), ("007",), ("-5",), (12, "A,B"), ("é/ü %",), ("",)])
def test_a_key_goes_through_a_bundle_name_and_back_with_its_type(key: tuple[Any, ...]) -> None:
    text = encode_key(key)
    assert decode_key(text) == key and "/" not in text


def test_a_row_becomes_json_with_iso_dates_and_decimals_as_text() -> None:
    data, problem = row_json("c", {"d": date(2024, 5, 2), "t": datetime(2024, 5, 2, 9, 30, tzinfo=UTC),
                                   "m": Decimal("40000.10"), "n": None, "j": '{"a": 1}'}, frozenset({"j"}))
    assert problem is None
    assert json.loads(data) == {"d": "2024-05-02", "t": "2024-05-02T09:30:00+00:00", "m": "40000.10", "n": None,
                                "j": {"a": 1}}


@pytest.mark.parametrize(("value", "expected"), [
    ("a.pdf", "a.pdf"), ("2024\\01\\a.pdf", "2024/01/a.pdf"), ("./x//a.pdf", "x/a.pdf"),
    ("../a.pdf", None), ("x/../../a.pdf", None), ("/a.pdf", None), ("C:\\a.pdf", None), ("", None)])
def test_file_names_stay_under_files_dir(value: str, expected: str | None) -> None:
    assert relative_file(value) == expected


def test_reachable_runs_a_query_and_says_where(vendor: Path) -> None:
    assert state_source(vendor).reachable() == (True, f"sqlite:///{vendor} (export_actes)")
    ok, why = state_source(vendor, table="exports").reachable()
    assert not ok and "no such table: exports (a person must act" in why


def test_a_missing_sqlite_file_is_an_alert_and_is_not_created(tmp_path: Path, vendor: Path) -> None:
    source = state_source(vendor)
    vendor.unlink()
    with pytest.raises(TransientAlert, match="the SQLite database .*vendor.db does not exist: check url"):
        source.list_ready()
    assert not vendor.exists()


# -- configuration ----------------------------------------------------------------------------
def write_config(folder: Path, connectors: str) -> Path:
    path = folder / "main.yaml"
    path.write_text(f"connectors:\n{connectors}\nroutes:\n  - {{name: r, from: [vendor], to: out}}\n"
                    "  - {name: s, from: [vendor], to: out}\n", encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p).replace(f"{path}:", "") for p in caught.value.problems]


def test_configuration_mistakes_are_each_named_with_their_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HENT_TEST_DB_PASSWORD", "Db-pa55word-never-printed")
    path = write_config(tmp_path, """\
  vendor:
    type: database
    url: sqlite:///vendor.db
    password: ${HENT_TEST_DB_PASSWORD}
    query: "SELECT * FROM flux WHERE nature = :nature"
    key: [id, "bad name"]
    select:
      state: {column: statut, ready: [NOUVEAU, null]}
      watermark: {column: exported_at}
    files: [fichier]
    outcome: {columns: {state: statut}}
    batch: 0
  out: {type: folder, path: out}""")
    assert problems(path) == [
        "5: connectors.vendor.password: a SQLite database has no password [database-url]",
        "6: connectors.vendor.query: no bound parameter (nature) is needed: Hent adds the state or watermark "
        "condition around the query [database-query]",
        "7: connectors.vendor.key[1]: 'bad name' is not a plain SQL name (letters, digits and _, a table may be "
        "schema.table) [database-name]",
        "8: connectors.vendor.select: set either state: {column, ready} or watermark: {column}, not both nor "
        "neither [database-select]",
        "11: connectors.vendor.files: set files_dir, the folder these columns' file names are relative to "
        "[database-files]",
        "12: connectors.vendor.outcome.columns.error: missing required key 'error' [missing]",
        "13: connectors.vendor.batch: input should be greater than 0, got 0 [value]",
    ]


def test_the_modes_need_what_they_write_to(tmp_path: Path) -> None:
    # a state column and outcome columns are updated in table; a watermark needs an outcome table
    path = write_config(tmp_path, """\
  vendor:
    type: database
    url: sqlite:///vendor.db
    key: id
    select: {state: {column: statut, ready: [NOUVEAU]}}
    outcome: {columns: {state: statut, error: erreur}}
  out: {type: folder, path: out}""")
    assert problems(path) == [
        "2: connectors.vendor.query: set table (the table or view read) or query (a SELECT) [database-source]",
        "6: connectors.vendor.select: state: claims update the state column of table: set table (query may still "
        "choose the rows and columns read) [database-select]",
        "7: connectors.vendor.outcome: columns are updated in table: set table [database-outcome]",
    ]
    path = write_config(tmp_path, """\
  vendor:
    type: database
    url: sqlite:///vendor.db
    table: flux
    key: id
    select: {watermark: {column: exported_at}}
    outcome: {columns: {state: statut, error: erreur}}
  out: {type: folder, path: out}""")
    assert problems(path) == [
        "8: connectors.vendor.outcome: with select.watermark, rows are claimed by inserting into an outcome table: "
        "set table [database-outcome]"]
    # Hent's own values cannot mean "ready", nor can it write a key column
    path = write_config(tmp_path, """\
  vendor:
    type: database
    url: sqlite:///vendor.db
    table: export_actes
    key: [id, numero]
    select: {state: {column: statut, ready: [NOUVEAU, TRAITE]}}
    states: {taken: TRAITE}
    outcome: {columns: {state: statut, error: erreur, routes: {decp: {identifier: numero}}}}
  out: {type: folder, path: out}""")
    assert problems(path) == [
        "8: connectors.vendor.states: claimed, taken and error must not be values of select.state.ready: a row "
        "would be taken again [database-states]",
        "9: connectors.vendor.outcome: numero: a key column cannot be written by Hent [database-key]"]


def test_a_relative_sqlite_path_is_the_configuration_folders(tmp_path: Path, vendor: Path) -> None:
    path = write_config(tmp_path, """\
  vendor: {type: database, url: "sqlite:///vendor.db", table: flux, key: id,
           select: {watermark: {column: exported_at}}, outcome: {table: hent_outcome}}
  out: {type: folder, path: out}""")
    config = load_config(path).connector_config("vendor", "inbound")
    assert isinstance(config, DatabaseInboundConfig) and config.url == f"sqlite:///{tmp_path}/vendor.db"


# -- the password -----------------------------------------------------------------------------
PASSWORD = "Db-pa55word-never-printed"


def test_the_password_comes_from_a_reference_and_is_never_printed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # Given a password written in the URL, and one given by reference
    monkeypatch.setenv("HENT_TEST_DB_PASSWORD", PASSWORD)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inline = write_config(tmp_path, f"""\
  vendor: {{type: database, url: "postgresql+psycopg://hent:{PASSWORD}@127.0.0.1:{port}/delib", table: t, key: id,
           select: {{state: {{column: s, ready: N}}}}, outcome: {{columns: {{state: s, error: e}}}}}}
  out: {{type: folder, path: out}}""")
    [problem] = problems(inline)
    assert problem == ("2: connectors.vendor.url: the URL must not hold the password: write it in password: as "
                       "${ENV_VAR} or ${file:/path} [database-url]")
    referenced = write_config(tmp_path, f"""\
  vendor: {{type: database, url: "postgresql+psycopg://hent@127.0.0.1:{port}/delib",
           password: "${{HENT_TEST_DB_PASSWORD}}", table: t, key: id, select: {{state: {{column: s, ready: N}}}},
           outcome: {{columns: {{state: s, error: e}}}}, connect_timeout: 2s}}
  out: {{type: folder, path: out}}""")
    config = load_config(referenced).connector_config("vendor", "inbound")
    assert isinstance(config, DatabaseInboundConfig) and config.password == Secret(PASSWORD)
    source = DatabaseInbound("vendor", config)
    OPENED.append(source)
    # When the database cannot be reached
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientError) as caught:
        source.list_ready()
    ok, why = source.reachable()
    # Then no message, repr or log line holds the password
    printed = [str(caught.value), why, repr(config), str(config), source.where, caplog.text]
    assert not ok and f"postgresql+psycopg://hent@127.0.0.1:{port}/delib (t)" in why
    assert all(PASSWORD not in text for text in printed), printed
    assert MASK in repr(config) and redact(f"x {PASSWORD} y") == f"x {MASK} y"


def test_state_mode_may_log_its_outcomes_in_an_outcome_table(vendor: Path) -> None:
    # Given a state column for the claims and an outcome table for the rest
    add_acts(vendor, (1, "DEL-1", "Budget", None, "NOUVEAU"), (2, "DEL-2", "Voirie", None, "NOUVEAU"))
    source = state_source(vendor, files=[], outcome={"table": "hent_outcome"})
    one, two = take(source)
    # When one is answered and committed, the other rolled back
    source.reply(one.key, None, None, {"state": "SENT", "route": "r", "id_acte": "034-X-DE"})
    source.commit(one)
    source.rollback(two, "objet: too short")
    # Then the state column says TAKEN / ERROR and the table holds the events, numbered from 1
    assert sql(vendor, "SELECT id, statut FROM export_actes") == [(1, "TAKEN"), (2, "ERROR")]
    assert sql(vendor, "SELECT id, seq, route, state, identifier, error FROM hent_outcome ORDER BY id") == [
        (1, 1, "r", "SENT", "034-X-DE", None), (2, 1, None, "ERROR", None, "objet: too short")]
