"""Ledger: state transitions per second with durability, on SQLite and on PostgreSQL, beside a
bare loop of the same transactions.

Each act goes through what the runtime asks of the ledger for one document sent to an endpoint
that answers (one thread, as one consumer):

1. ``add_document``: RECEIVED (its idempotency key checked, the journal appended);
2. ``claim_document``: the lease;
3. ``route_document``: PREPARED, one delivery PENDING, ROUTED, the lease given back, in one
   transaction;
4. ``bump_attempts`` then ``sync`` (the runtime makes the ledger durable before a send);
5. ``transition_delivery`` to SENT, then to ACKNOWLEDGED.

That is 6 transitions (journal events, hash-chained) in 6 write transactions.  transitions/s =
journal events / seconds.

Baseline: the same 6 transactions per act written by hand (sqlite3, or psycopg), on tables
with the same columns that matter (state, lease, attempts) and a journal of one row per
transition, without the ORM layer, the idempotency lookup, the compare-and-set reads, the
hash chain or the rows read back.  Same durability: SQLite in WAL mode with synchronous=NORMAL
and one fsync of the WAL per act at step 4 (as ``Ledger.sync``); PostgreSQL commits as the
server is configured (``fsync`` and ``synchronous_commit`` are printed: CI runs PostgreSQL
with fsync=off).

PostgreSQL is ``HENT_TEST_POSTGRES_URL`` (a schema of the bench's own is made and dropped);
unset, its two figures are printed as skipped.  Informative: no target.

    python -m bench.ledger_transitions [--acts 300] [--quick] [--json]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python bench/ledger_transitions.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench._common import Figure, report, skipped  # noqa: E402
from bus.journal import journal_head_table  # noqa: E402
from bus.ledger import Ledger  # noqa: E402

POSTGRES = "HENT_TEST_POSTGRES_URL"
TRANSITIONS_PER_ACT = 6
SIREN = "214400152"

_BARE_SCHEMA = (
    "CREATE TABLE bare_documents (id VARCHAR(32) PRIMARY KEY, idempotency_key VARCHAR(200) UNIQUE, state VARCHAR(16),"
    " route VARCHAR(100), id_acte VARCHAR(64), lease_owner VARCHAR(200), lease_until VARCHAR(40),"
    " updated_at VARCHAR(40))",
    "CREATE TABLE bare_deliveries (id VARCHAR(32) PRIMARY KEY, document_id VARCHAR(32), state VARCHAR(16),"
    " attempts INTEGER, artifact_sha256 VARCHAR(64), updated_at VARCHAR(40))",
    "CREATE TABLE bare_journal (seq INTEGER PRIMARY KEY, at VARCHAR(40), entity_id VARCHAR(32), from_state VARCHAR(16),"
    " to_state VARCHAR(16))",
)


# -- the ledger's side -------------------------------------------------------------------------


def _events(ledger: Ledger) -> int:
    with ledger._read() as conn:
        return int(conn.execute(select(journal_head_table.c.count)).scalar_one())


def ledger_acts(ledger: Ledger, acts: int, tag: str) -> float:
    """``acts`` acts through the ledger's API as the runtime calls it; the seconds taken."""
    owner = "bench/consumer-1"
    began = time.perf_counter()
    for n in range(acts):
        numero = f"L{tag}_{n:05d}"
        document, _ = ledger.add_document(
            source="drop", bundle=f"{numero}.json", idempotency_key=f"bundle:drop:{numero}.json:{uuid.uuid4().hex}",
            sidecar_sha256=uuid.uuid4().hex * 2, files={f"{numero}.json": uuid.uuid4().hex * 2}, actor="drop")
        if ledger.claim_document(document.id, owner, 60.0) is None:
            raise RuntimeError(f"document {document.id}: the lease was refused")
        id_acte = f"044-{SIREN}-20260101-{numero}-DE"
        _, [delivery] = ledger.route_document(
            document.id, prepared={"route": "deliberations", "siren": SIREN, "id_acte": id_acte,
                                   "canonical": {"numero_interne": numero}},
            deliveries=[{"route": "deliberations", "endpoint": "tdt", "artifact_name": f"{numero}.tar.gz",
                         "artifact_sha256": uuid.uuid4().hex * 2, "artifact_kind": "actes-archive",
                         "client_key": f"{numero}.xml", "id_acte": id_acte, "envelope_name": f"{numero}.xml"}],
            release_owner=owner, payload_sha256=document.sidecar_sha256, unique_id_acte=True)
        ledger.bump_attempts(delivery.id)
        ledger.sync()
        ledger.transition_delivery(delivery.id, "SENT", actor="tdt", expect="PENDING", remote_id=numero, attempts=1)
        ledger.transition_delivery(delivery.id, "ACKNOWLEDGED", actor="tdt", expect="SENT")
    return time.perf_counter() - began


def measure_ledger(url: str, acts: int, warmup: int) -> tuple[float, int]:
    """transitions/s through a Ledger at ``url``; the journal events counted."""
    ledger = Ledger(url, actor="bench")
    try:
        ledger_acts(ledger, warmup, "W")
        before = _events(ledger)
        seconds = ledger_acts(ledger, acts, "M")
        events = _events(ledger) - before
    finally:
        ledger.close()
    if events != acts * TRANSITIONS_PER_ACT:
        raise RuntimeError(f"{events} journal events for {acts} acts, {acts * TRANSITIONS_PER_ACT} expected")
    return events / seconds, events


# -- the bare loop -----------------------------------------------------------------------------


class BareTransitions:
    """The same transactions by hand on a DB-API connection (``?`` or ``%s`` placeholders)."""

    def __init__(self, connection: Any, placeholder: str, begin: str | None, sync: Callable[[], None]) -> None:
        self.conn = connection
        self.p = placeholder
        self.begin = begin
        self.sync = sync
        self.seq = 0

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.p)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        cursor = self.conn.cursor()
        if self.begin:
            cursor.execute(self.begin)
        try:
            yield cursor
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _journal(self, cursor: Any, entity_id: str, from_state: str | None, to_state: str, now: str) -> None:
        self.seq += 1
        cursor.execute(self._sql("INSERT INTO bare_journal VALUES (?, ?, ?, ?, ?)"),
                       (self.seq, now, entity_id, from_state, to_state))

    def act(self, numero: str) -> None:
        now = datetime.now(UTC).isoformat()
        document, delivery = uuid.uuid4().hex, uuid.uuid4().hex
        with self.transaction() as c:
            c.execute(self._sql("INSERT INTO bare_documents (id, idempotency_key, state, updated_at) "
                                "VALUES (?, ?, ?, ?)"), (document, f"bundle:drop:{numero}:{document}", "RECEIVED", now))
            self._journal(c, document, None, "RECEIVED", now)
        with self.transaction() as c:
            until = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
            c.execute(self._sql("UPDATE bare_documents SET lease_owner = ?, lease_until = ? WHERE id = ?"),
                      ("bench/consumer-1", until, document))
        with self.transaction() as c:
            c.execute(self._sql("INSERT INTO bare_deliveries VALUES (?, ?, ?, ?, ?, ?)"),
                      (delivery, document, "PENDING", 0, uuid.uuid4().hex * 2, now))
            c.execute(self._sql("UPDATE bare_documents SET state = ?, route = ?, id_acte = ?, lease_owner = NULL, "
                                "lease_until = NULL, updated_at = ? WHERE id = ?"),
                      ("ROUTED", "deliberations", f"044-{SIREN}-20260101-{numero}-DE", now, document))
            self._journal(c, document, "RECEIVED", "PREPARED", now)
            self._journal(c, delivery, None, "PENDING", now)
            self._journal(c, document, "PREPARED", "ROUTED", now)
        with self.transaction() as c:
            c.execute(self._sql("UPDATE bare_deliveries SET attempts = attempts + 1 WHERE id = ?"), (delivery,))
        self.sync()
        for before, after in (("PENDING", "SENT"), ("SENT", "ACKNOWLEDGED")):
            with self.transaction() as c:
                c.execute(self._sql("UPDATE bare_deliveries SET state = ?, updated_at = ? WHERE id = ?"),
                          (after, now, delivery))
                self._journal(c, delivery, before, after, now)

    def run(self, acts: int, tag: str) -> float:
        began = time.perf_counter()
        for n in range(acts):
            self.act(f"L{tag}_{n:05d}")
        return time.perf_counter() - began


def bare_sqlite(path: Path, acts: int, warmup: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _BARE_SCHEMA:
            conn.execute(statement)
        wal = Path(f"{path}-wal")

        def sync() -> None:  # as Ledger.sync: one fsync of the write-ahead log
            fd = os.open(wal, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        bare = BareTransitions(conn, "?", "BEGIN IMMEDIATE", sync)
        bare.run(warmup, "W")
        return acts * TRANSITIONS_PER_ACT / bare.run(acts, "M")
    finally:
        conn.close()


def bare_postgres(url: str, schema: str, acts: int, warmup: int) -> float:
    import psycopg  # the test extra; only when PostgreSQL is measured

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, options=f"-csearch_path={schema}") as conn:
        with conn.cursor() as cursor:
            for statement in _BARE_SCHEMA:
                cursor.execute(statement)
        conn.commit()
        bare = BareTransitions(conn, "%s", None, lambda: None)  # PostgreSQL commits are durable already
        bare.run(warmup, "W")
        return acts * TRANSITIONS_PER_ACT / bare.run(acts, "M")


@contextmanager
def postgres_schema(url: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A schema of the bench's own: (the ledger's URL aimed at it, its name, the server's settings)."""
    admin_url = make_url(url).set(drivername="postgresql+psycopg")
    schema = f"hent_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
            settings = {name: str(conn.execute(text(f"SHOW {name}")).scalar_one())
                        for name in ("fsync", "synchronous_commit", "server_version")}
        ledger_url = admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield ledger_url.render_as_string(hide_password=False), schema, settings
        finally:
            with engine.connect() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        engine.dispose()


# -- the run -----------------------------------------------------------------------------------


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "ledger_transitions", "acts": args.acts,
                              "transitions_per_act": TRANSITIONS_PER_ACT}
    rate, events = measure_ledger(f"sqlite:///{root / 'ledger.db'}", args.acts, args.warmup)
    result["sqlite"] = {"ledger_per_s": rate, "events": events,
                        "bare_per_s": bare_sqlite(root / "bare.db", args.acts, args.warmup)}
    url = os.environ.get(POSTGRES)
    if not url:
        result["postgresql"] = {"skipped": f"{POSTGRES} unset: no PostgreSQL to measure"}
        return result
    with postgres_schema(url) as (ledger_url, schema, settings):
        rate, events = measure_ledger(ledger_url, args.acts, args.warmup)
        result["postgresql"] = {"ledger_per_s": rate, "events": events, "settings": settings,
                                "bare_per_s": bare_postgres(url, schema, args.acts, args.warmup)}
    return result


def figures(result: dict[str, Any]) -> tuple[list[Figure], list[str]]:
    found, lines = [], []
    for kind, label in (("sqlite", "SQLite WAL, synchronous=NORMAL + WAL fsync per act"),
                        ("postgresql", "PostgreSQL")):
        part = result[kind]
        if "skipped" in part:
            lines.append(skipped(f"ledger_{kind}", part["skipped"]))
            continue
        figure = Figure(f"ledger_{kind}", part["ledger_per_s"], "transitions/s", part["bare_per_s"],
                        f"bare {'sqlite3' if kind == 'sqlite' else 'psycopg'}, the same transactions",
                        note=f"informative: {label}")
        found.append(figure)
        lines.append(figure.line())
    return found, lines


def notes(result: dict[str, Any]) -> list[str]:
    lines = [f"# ledger_transitions: {result['acts']} acts x {result['transitions_per_act']} transitions (RECEIVED, "
             "PREPARED, PENDING, ROUTED, SENT, ACKNOWLEDGED) in 6 write transactions per act, one thread"]
    settings = result["postgresql"].get("settings")
    if settings:
        lines.append(f"# PostgreSQL {settings['server_version']}: fsync={settings['fsync']}, synchronous_commit="
                     f"{settings['synchronous_commit']}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger_transitions",
        description="ledger state transitions per second with durability, SQLite and PostgreSQL "
                    f"({POSTGRES}), beside a bare loop of the same transactions",
    )
    parser.add_argument("--acts", type=int, default=300, help="acts, 6 transitions each (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed acts first (default 20)")
    parser.add_argument("--quick", action="store_true", help="30 acts: checks that it runs (CI)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", type=Path, help="where to work (a fresh folder is made inside)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the SQLite files)")
    args = parser.parse_args(argv)
    if args.quick:
        args.acts, args.warmup = 30, 5
    if args.acts < 1 or args.warmup < 0:
        parser.error("--acts must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    return report("ledger_transitions", parse_args(argv), measure, figures, notes)


if __name__ == "__main__":
    sys.exit(main())
