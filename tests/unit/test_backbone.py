"""The kombu backbone on the embedded SQLite transport: ids in, ids out; RabbitMQ's policies without a broker
(the broker itself: tests/integration/test_backbone_rabbitmq.py)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue

from bus.backbone import DEAD, DELIVERIES, DOCUMENTS, HANDLER_ATTEMPTS, Backbone, supports_quorum
from bus.sqlite_broker import SqliteTransport


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


def test_messages_no_handler_can_read_are_logged_and_acked_on_the_embedded_transport(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a message that is not JSON and one without an id before a good one
    url = f"sqla+sqlite:///{tmp_path}/broker.db"
    backbone = Backbone(url)
    assert not backbone.amqp
    queue = Queue(DOCUMENTS, Exchange("hent", type="direct", durable=True), DOCUMENTS, durable=True)
    with Connection(transport=SqliteTransport, transport_options={"path": f"{tmp_path}/broker.db"}) as conn:
        producer = conn.Producer()
        producer.publish("not json", exchange="hent", routing_key=DOCUMENTS, content_type="text/plain",
                         content_encoding="utf-8", declare=[queue])
        producer.publish({"document": "x"}, exchange="hent", routing_key=DOCUMENTS, serializer="json")
    backbone.publish(DOCUMENTS, "good")
    seen: list[str] = []
    stop = threading.Event()
    consumer = threading.Thread(target=backbone.consume, args=({DOCUMENTS: seen.append}, stop))
    # When the consumer runs
    with caplog.at_level(logging.ERROR, logger="bus.backbone"):
        consumer.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        consumer.join(5)
    # Then both are dropped with a log line, acked (the sweeper re-publishes from the ledger), and the good one handled
    assert seen == ["good"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "dropping undecodable message (text/plain)", "dropping unexpected message on hent.documents",
    ]
    assert backbone.depth(DOCUMENTS) == 0 and backbone.depth(DEAD) is None
    backbone.close()


@pytest.mark.parametrize(
    ("properties", "quorum"),
    [
        ({"product": "RabbitMQ", "version": "3.10.8"}, True),
        ({"product": "RabbitMQ", "version": "3.8.0"}, True),
        ({"product": "RabbitMQ", "version": "4.1.0"}, True),
        ({"product": "RabbitMQ", "version": "3.7.28"}, False),
        ({"product": "RabbitMQ", "version": "3.12.0-rc.1"}, True),
        ({"product": "LavinMQ", "version": "2.0.0"}, False),
        ({}, False),
    ],
)
def test_quorum_queues_are_asked_of_rabbitmq_3_8_and_later(properties: dict[str, str], quorum: bool) -> None:
    assert supports_quorum(properties) is quorum


class _Message:
    """What the consumer needs of a kombu message: its properties, headers and settlement."""

    def __init__(self, headers: dict[str, object] | None = None) -> None:
        self.properties = {"message_id": "m-1"}
        self.headers = headers or {}
        self.settled: list[str] = []

    def requeue(self) -> None:
        self.settled.append("requeue")

    def reject(self, requeue: bool = False) -> None:
        self.settled.append("requeue" if requeue else "reject")


def test_on_rabbitmq_a_failing_message_is_requeued_then_dead_lettered_at_the_last_attempt(tmp_path: Path) -> None:
    backbone = Backbone(f"sqla+sqlite:///{tmp_path}/broker.db")
    backbone.amqp = True  # the settlement policy of RabbitMQ, without a broker
    stop = threading.Event()
    stop.set()  # no back-off pause
    message = _Message()
    for _ in range(HANDLER_ATTEMPTS):
        backbone._handler_failed(message, DOCUMENTS, "doc-1", stop)
    assert message.settled == ["requeue"] * (HANDLER_ATTEMPTS - 1) + ["reject"]
    # a quorum queue's count of deliveries (other workers' failures) is taken into account
    redelivered = _Message({"x-delivery-count": HANDLER_ATTEMPTS - 1})
    backbone._handler_failed(redelivered, DOCUMENTS, "doc-1", stop)
    assert redelivered.settled == ["reject"]
    backbone.close()
