"""``run_bus.py journal verify``: the hash chain catches an edited, inserted or deleted row.

The journal is tampered with as someone with the ``sqlite3`` module would, behind the bus's
back, each time on a fresh copy of the demo's ``var/`` folder.
"""

# ruff: noqa: E501  (the exact texts are asserted whole, one per line)

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.journal import event_hash
from tests.harness import run_cli

REPO = Path(__file__).resolve().parents[2]
ALTERED = "journal: {} problem(s): it was altered\n"


run_bus = run_cli


def verify(workspace: Path) -> subprocess.CompletedProcess[str]:
    return run_bus("journal", "verify", "-c", "config/demo.yaml", env={"HENT_DEMO_WORKSPACE": str(workspace)})


@pytest.fixture(scope="module")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run of the demo for the whole module; its workspace is never altered."""
    workspace = tmp_path_factory.mktemp("demo")
    result = run_bus("demo", "--workspace", str(workspace), "--keep", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return workspace


@pytest.fixture
def copy(demo_workspace: Path, tmp_path: Path) -> Path:
    """A workspace holding a fresh copy of the demo's ``var/`` (ledger, broker, spool)."""
    shutil.copytree(demo_workspace / "var", tmp_path / "var")
    return tmp_path


def tamper(workspace: Path, change: Callable[[sqlite3.Connection, int], object]) -> int:
    """Apply ``change(connection, last_seq)`` to the copy's ledger; return the last seq before it."""
    with sqlite3.connect(workspace / "var" / "ledger.db") as conn:
        (last,) = conn.execute("SELECT max(seq) FROM journal").fetchone()
        change(conn, last)
    conn.close()
    return int(last)


def test_the_demo_leaves_an_intact_journal(demo_workspace: Path) -> None:
    # Given the demo's ledger, When the journal is verified
    result = verify(demo_workspace)

    # Then it is intact
    assert (result.returncode, result.stdout, result.stderr) == (0, "journal: intact\n", "")


def test_an_edited_reason_is_detected(copy: Path) -> None:
    # Given a journal whose fourth event had its reason rewritten
    tamper(copy, lambda conn, _: conn.execute("UPDATE journal SET reason = 'nothing to see' WHERE seq = 4"))

    # When the journal is verified
    result = verify(copy)

    # Then the edited event is named and verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["seq 4: its hash does not match its content (event edited)"]
    assert result.stderr == ALTERED.format(1)


def test_a_forged_row_appended_with_a_valid_hash_is_detected(copy: Path) -> None:
    # Given a journal with one more event, chained and hashed correctly, but the head not moved
    def forge(conn: sqlite3.Connection, last: int) -> None:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(journal)")]
        previous = dict(
            zip(columns, conn.execute("SELECT * FROM journal WHERE seq = ?", (last,)).fetchone(), strict=True)
        )
        forged = {
            **previous,
            "seq": last + 1,
            "actor": "intruder",
            "reason": "forged: this act was never sent",
            "prev_hash": previous["hash"],
        }
        forged["hash"] = event_hash(forged)
        conn.execute(
            f"INSERT INTO journal ({', '.join(forged)}) VALUES ({', '.join('?' for _ in forged)})",
            list(forged.values()),
        )

    last = tamper(copy, forge)

    # When the journal is verified
    result = verify(copy)

    # Then the head gives it away, and verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"journal_head: counts {last} events but the journal holds {last + 1} (events deleted or inserted)",
        f"journal_head: last seq is {last} but the journal ends at seq {last + 1} (last events deleted, or events appended behind the bus's back)",
        f"journal_head: last hash does not match the hash of seq {last + 1} (last event deleted, rewritten or appended behind the bus's back)",
    ]
    assert result.stderr == ALTERED.format(3)


def test_a_forged_row_inserted_in_the_middle_is_detected(copy: Path) -> None:
    # Given a journal where a forged, correctly hashed event was slipped in as seq 6
    # (the events from seq 6 on moved up by one to make room for it)
    def forge(conn: sqlite3.Connection, last: int) -> None:
        for seq in range(last, 5, -1):
            conn.execute("UPDATE journal SET seq = seq + 1 WHERE seq = ?", (seq,))
        columns = [row[1] for row in conn.execute("PRAGMA table_info(journal)")]
        previous = dict(zip(columns, conn.execute("SELECT * FROM journal WHERE seq = 5").fetchone(), strict=True))
        forged = {**previous, "seq": 6, "actor": "intruder", "reason": "forged", "prev_hash": previous["hash"]}
        forged["hash"] = event_hash(forged)
        conn.execute(
            f"INSERT INTO journal ({', '.join(forged)}) VALUES ({', '.join('?' for _ in forged)})",
            list(forged.values()),
        )

    last = tamper(copy, forge)

    # When the journal is verified
    result = verify(copy)

    # Then every event after the forged one is named, and the head too, and verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "seq 7: its hash does not match its content (event edited)",
        "seq 7: prev_hash does not match the hash of seq 6 (an event was inserted, deleted or rewritten before it)",
        *[f"seq {seq}: its hash does not match its content (event edited)" for seq in range(8, last + 2)],
        f"journal_head: counts {last} events but the journal holds {last + 1} (events deleted or inserted)",
        f"journal_head: last seq is {last} but the journal ends at seq {last + 1} (last events deleted, or events appended behind the bus's back)",
    ]


def test_a_deleted_middle_row_is_detected(copy: Path) -> None:
    # Given a journal from which an event in the middle was deleted (one that is not the
    # last event of its document or delivery: the chain alone must tell)
    deleted: list[int] = []

    def delete(conn: sqlite3.Connection, last: int) -> None:
        rows = conn.execute("SELECT seq, entity_id FROM journal ORDER BY seq").fetchall()
        seq = next(seq for seq, entity_id in rows[1:-2] if any(later == entity_id for s, later in rows if s > seq))
        conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
        deleted.append(seq)

    last = tamper(copy, delete)
    (seq,) = deleted

    # When the journal is verified
    result = verify(copy)

    # Then the gap and the broken link are named, and verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"seq {seq + 1}: seq {seq} missing (events deleted or seq edited)",
        f"seq {seq + 1}: prev_hash does not match the hash of seq {seq - 1} (an event was inserted, deleted or rewritten before it)",
        f"journal_head: counts {last} events but the journal holds {last - 1} (events deleted or inserted)",
    ]
    assert result.stderr == ALTERED.format(3)


def test_a_deleted_last_row_is_detected(copy: Path) -> None:
    # Given a journal whose last event was deleted
    entity: list[tuple[str, str, str, str]] = []

    def delete(conn: sqlite3.Connection, last: int) -> None:
        kind, entity_id, state = conn.execute(
            "SELECT entity, entity_id, to_state FROM journal WHERE seq = ?", (last,)
        ).fetchone()
        (before,) = conn.execute(
            "SELECT to_state FROM journal WHERE entity_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1", (entity_id, last)
        ).fetchone()
        conn.execute("DELETE FROM journal WHERE seq = ?", (last,))
        entity.append((kind, entity_id, state, before))

    last = tamper(copy, delete)
    ((kind, entity_id, state, before),) = entity

    # When the journal is verified
    result = verify(copy)

    # Then the head gives it away, and so does the row whose last event is gone; verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"journal_head: counts {last} events but the journal holds {last - 1} (events deleted or inserted)",
        f"journal_head: last seq is {last} but the journal ends at seq {last - 1} (last events deleted, or events appended behind the bus's back)",
        f"journal_head: last hash does not match the hash of seq {last - 1} (last event deleted, rewritten or appended behind the bus's back)",
        f"{kind} {entity_id}: state is {state} but its last journal event says {before} (state edited behind the bus's back)",
    ]
    assert result.stderr == ALTERED.format(4)


def test_a_state_edited_in_the_documents_table_is_detected(copy: Path) -> None:
    # Given a ledger where the failed document was marked ROUTED without a journal event
    failed: list[str] = []

    def edit(conn: sqlite3.Connection, _: int) -> None:
        (document_id,) = conn.execute("SELECT id FROM documents WHERE state = 'FAILED'").fetchone()
        conn.execute("UPDATE documents SET state = 'ROUTED' WHERE id = ?", (document_id,))
        failed.append(document_id)

    tamper(copy, edit)

    # When the journal is verified
    result = verify(copy)

    # Then the document is named with both states, and verify exits 1
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"document {failed[0]}: state is ROUTED but its last journal event says FAILED (state edited behind the bus's back)"
    ]
    assert result.stderr == ALTERED.format(1)
