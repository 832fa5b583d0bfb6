"""The kombu backbone on the embedded SQLite transport: ids in, ids out."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from bus.backbone import DELIVERIES, DOCUMENTS, Backbone


def test_ids_published_are_consumed_by_queue_and_acknowledged(tmp_path: Path) -> None:
    backbone = Backbone(f"sqla+sqlite:///{tmp_path}/broker.db")
    for n in range(3):
        backbone.publish(DOCUMENTS, f"doc-{n}")
    backbone.publish(DELIVERIES, "delivery-1")
    assert backbone.depth(DOCUMENTS) == 3
    documents: list[str] = []
    deliveries: list[str] = []
    stop = threading.Event()
    consumer = threading.Thread(
        target=backbone.consume, args=({DOCUMENTS: documents.append, DELIVERIES: deliveries.append}, stop)
    )
    consumer.start()
    deadline = time.monotonic() + 10
    while len(documents) + len(deliveries) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    consumer.join(5)
    assert documents == ["doc-0", "doc-1", "doc-2"] and deliveries == ["delivery-1"]
    assert backbone.depth(DOCUMENTS) == 0
    backbone.close()


def test_a_handler_that_raises_does_not_stop_the_consumer(tmp_path: Path) -> None:
    backbone = Backbone(f"sqla+sqlite:///{tmp_path}/broker.db")
    seen: list[str] = []

    def handler(entity_id: str) -> None:
        seen.append(entity_id)
        if entity_id == "bad":
            raise RuntimeError("boom")

    backbone.publish(DOCUMENTS, "bad")
    backbone.publish(DOCUMENTS, "good")
    stop = threading.Event()
    consumer = threading.Thread(target=backbone.consume, args=({DOCUMENTS: handler}, stop))
    consumer.start()
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    consumer.join(5)
    assert seen == ["bad", "good"]
