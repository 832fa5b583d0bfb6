"""The embedded broker's transport: FIFO per queue, each message to one consumer across threads
and processes, nothing left behind once delivered."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

from bus.backbone import DELIVERIES, DOCUMENTS, Backbone
from bus.sqlite_broker import sqlite_path


def _drain(url: str, seconds: float, out: list[str] | None = None) -> list[str]:
    """Consume DOCUMENTS for ``seconds``; the ids received."""
    got = out if out is not None else []
    backbone = Backbone(url, polling_interval=0.01)
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.start()
    backbone.consume({DOCUMENTS: got.append, DELIVERIES: got.append}, stop)
    backbone.close()
    return got


def _drain_to_file(url: str, seconds: float, path: str) -> None:
    Path(path).write_text("\n".join(_drain(url, seconds)))


def test_the_url_names_the_file_and_only_sqlite_urls_are_taken(tmp_path: Path) -> None:
    assert sqlite_path(f"sqla+sqlite:///{tmp_path}/b.db") == f"{tmp_path}/b.db"
    assert sqlite_path("sqla+postgresql://h/db") is None
    assert sqlite_path("amqp://guest@localhost//") is None
    assert sqlite_path("sqla+sqlite://") is None


def test_messages_come_out_in_order_per_queue_and_are_deleted_once_delivered(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.db"
    backbone = Backbone(url)
    for n in range(5):
        backbone.publish(DOCUMENTS, f"d{n}")
    backbone.publish(DELIVERIES, "x")
    assert backbone.depth(DOCUMENTS) == 5 and backbone.depth(DELIVERIES) == 1
    got = _drain(url, 1.0)
    assert [g for g in got if g.startswith("d")] == [f"d{n}" for n in range(5)]
    assert "x" in got
    assert backbone.depth(DOCUMENTS) == 0
    with sqlite3.connect(tmp_path / "broker.db") as db:  # nothing kept after delivery
        assert db.execute("SELECT count(*) FROM hent_messages").fetchone()[0] == 0
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    backbone.close()


def test_each_message_reaches_one_consumer_across_threads_and_processes(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path}/broker.db"
    backbone = Backbone(url)
    ids = [f"m{n}" for n in range(600)]
    for entity_id in ids:
        backbone.publish(DOCUMENTS, entity_id)
    files = [tmp_path / f"p{n}.txt" for n in range(2)]
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_drain_to_file, args=(url, 8.0, str(f))) for f in files]
    for process in processes:
        process.start()
    time.sleep(0.5)  # let them start taking
    threads_got: list[list[str]] = [[], []]
    threads = [threading.Thread(target=_drain, args=(url, 6.0, got)) for got in threads_got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    received = [*threads_got[0], *threads_got[1]]
    for f in files:
        received += [line for line in f.read_text().splitlines() if line]
    assert sorted(received) == sorted(ids)  # every one, once
    backbone.close()
