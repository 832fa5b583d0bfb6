"""The backbone on a real RabbitMQ: quorum queues, confirms, dead letters, prefetch, restarts.

Each test has a virtual host of its own (``tests/rabbit.py``); ``.ci/run`` starts the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection, Exchange, Queue

from bus.backbone import DEAD, DELIVERIES, DOCUMENTS, HANDLER_ATTEMPTS, Backbone
from bus.errors import TransientError
from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision
from tests.harness import run_until_idle, write_config
from tests.rabbit import RabbitVhost, broker_stopped, rabbit_vhost, rabbitmqctl  # noqa: F401

pytestmark = pytest.mark.integration

TODAY = date.today()


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def backbone(vhost: RabbitVhost) -> Iterator[Backbone]:
    bus = Backbone(vhost.url)
    yield bus
    bus.close()


@pytest.fixture
def consumer(backbone: Backbone) -> Iterator[Callable[..., threading.Thread]]:
    """Starts ``backbone.consume(handlers)`` in a thread; stopped and joined after the test."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(handlers: dict[str, Callable[[str], None]], **options: int) -> threading.Thread:
        thread = threading.Thread(target=backbone.consume, args=(handlers, stop), kwargs=options, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield start
    stop.set()
    for thread in threads:
        thread.join(15)
        assert not thread.is_alive(), "the consumer did not stop"


def dead_letters(vhost: RabbitVhost) -> list[tuple[object, str]]:
    """The messages in hent.dead: (body, the queue they died in), taken off the queue."""
    found: list[tuple[object, str]] = []
    with Connection(vhost.url) as conn:
        queue = Queue(DEAD, no_declare=True)(conn.default_channel)
        while (message := queue.get(no_ack=True, accept=["json", "text/plain"])) is not None:
            deaths = message.headers.get("x-death") or [{}]
            found.append((message.decode(), str(deaths[0].get("queue"))))
    return found


def test_ids_go_through_quorum_queues_and_are_acknowledged(
    vhost: RabbitVhost, backbone: Backbone, consumer: Callable[..., threading.Thread]
) -> None:
    # Given a backbone on RabbitMQ 3.8 or later
    assert backbone.amqp and backbone.quorum
    assert vhost.queues() == {DOCUMENTS: "quorum", DELIVERIES: "quorum", DEAD: "quorum"}
    # When ids are published (each confirmed by the broker) and consumed
    for n in range(3):
        backbone.publish(DOCUMENTS, f"doc-{n}")
    backbone.publish(DELIVERIES, "delivery-1")
    assert backbone.depth(DOCUMENTS) == 3 and backbone.depth(DELIVERIES) == 1
    documents: list[str] = []
    deliveries: list[str] = []
    consumer({DOCUMENTS: documents.append, DELIVERIES: deliveries.append})
    # Then each is handled once, by its queue, and acknowledged
    assert wait_for(lambda: len(documents) + len(deliveries) == 4)
    assert documents == ["doc-0", "doc-1", "doc-2"] and deliveries == ["delivery-1"]
    assert wait_for(lambda: backbone.depth(DOCUMENTS) == 0 and backbone.depth(DELIVERIES) == 0)
    assert backbone.housekeeping() == 0  # RabbitMQ keeps nothing after an ack


def test_a_classic_queue_left_by_an_older_version_is_used_as_it_is(
    vhost: RabbitVhost, caplog: pytest.LogCaptureFixture
) -> None:
    # Given hent.documents made as a classic queue, without Hent's arguments
    with Connection(vhost.url) as conn:
        Queue(DOCUMENTS, Exchange("hent", type="direct", durable=True), DOCUMENTS, durable=True)(
            conn.default_channel).declare()
    # When the backbone starts on it
    with caplog.at_level(logging.WARNING, logger="bus.backbone"):
        backbone = Backbone(vhost.url)
    try:
        # Then it says so, and how to convert it, and works with it
        [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.startswith(f"queue {DOCUMENTS} on ")
        assert "PRECONDITION_FAILED - inequivalent arg" in warning
        assert "rabbitmqctl delete_queue hent.documents" in warning
        assert vhost.queues() == {DOCUMENTS: "classic", DELIVERIES: "quorum", DEAD: "quorum"}
        backbone.publish(DOCUMENTS, "doc-1")
        assert backbone.depth(DOCUMENTS) == 1
    finally:
        backbone.close()


def test_a_publish_while_the_broker_is_down_raises_a_transient_error_in_bounded_time(backbone: Backbone) -> None:
    backbone.publish(DOCUMENTS, "before")
    with broker_stopped():
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"^message broker 127\.0\.0\.1:\d+/hent-test-\w+ unavailable"):
            backbone.publish(DOCUMENTS, "during")
        assert time.monotonic() - started < 10
        assert not backbone.ping() and backbone.depth(DOCUMENTS) is None
    # And once the broker is back, publishing works again on a new connection
    backbone.publish(DOCUMENTS, "after")
    assert backbone.depth(DOCUMENTS) == 2 and backbone.ping()


def test_a_message_the_broker_refuses_raises_a_transient_error(vhost: RabbitVhost, backbone: Backbone) -> None:
    # Given a queue the operator limited to one message, refusing more (a policy)
    rabbitmqctl("set_policy", "-p", vhost.name, "--apply-to", "queues", "limit", f"^{DOCUMENTS}$",
                '{"max-length": 1, "overflow": "reject-publish"}')
    assert wait_for(lambda: "limit" in rabbitmqctl("list_queues", "-p", vhost.name, "name", "policy"))
    # When more are published than it takes (a quorum queue's limit lets one more in)
    refused: list[str] = []
    for n in range(1, 5):
        try:
            backbone.publish(DOCUMENTS, f"doc-{n}")
        except TransientError as exc:
            refused.append(str(exc))
    # Then the broker's nacks are transient errors naming what it refused
    assert refused and refused[0].startswith(f"message broker {backbone.display_url} refused {DOCUMENTS} doc-")
    assert "negative publisher confirm" in refused[0]
    assert backbone.depth(DOCUMENTS) == 4 - len(refused)


def test_a_batch_is_published_whole_and_confirmed_before_publish_many_returns(
    vhost: RabbitVhost, backbone: Backbone, consumer: Callable[..., threading.Thread]
) -> None:
    # When a poll's ids are published together, around single ones, twice on the same channel
    backbone.publish(DOCUMENTS, "single-1")
    backbone.publish_many(DOCUMENTS, [f"doc-{n}" for n in range(20)])
    backbone.publish_many(DOCUMENTS, [f"doc-{n}" for n in range(20, 25)])
    backbone.publish(DOCUMENTS, "single-2")
    # Then the broker has every one of them as publish_many returns (confirmed, on disk)
    assert backbone.depth(DOCUMENTS) == 27
    # and a consumer reads them as it reads single ones, in the order they were sent
    documents: list[str] = []
    consumer({DOCUMENTS: documents.append})
    assert wait_for(lambda: len(documents) == 27)
    assert documents == ["single-1", *[f"doc-{n}" for n in range(25)], "single-2"]


def test_batch_after_batch_each_is_confirmed_in_time(vhost: RabbitVhost) -> None:
    """The broker's acks come one by one or for several messages at once, some while the next ones are
    still being published (py-amqp reads the connection before each publish): none is lost, so no
    batch waits for a confirm already received."""
    backbone = Backbone(vhost.url, confirm_timeout=3.0)
    try:
        started = time.monotonic()
        for batch in range(40):
            backbone.publish_many(DOCUMENTS, [f"doc-{batch}-{n}" for n in range(16)])
        assert time.monotonic() - started < 20  # 40 batches, none waiting out its 3 s
        assert backbone.depth(DOCUMENTS) == 640
    finally:
        backbone.close()


def test_a_batch_the_broker_refuses_raises_a_transient_error_naming_it(vhost: RabbitVhost, backbone: Backbone) -> None:
    # Given a queue the operator limited to one message, refusing more (a policy)
    rabbitmqctl("set_policy", "-p", vhost.name, "--apply-to", "queues", "limit", f"^{DOCUMENTS}$",
                '{"max-length": 1, "overflow": "reject-publish"}')
    assert wait_for(lambda: "limit" in rabbitmqctl("list_queues", "-p", vhost.name, "name", "policy"))
    for n in range(2):  # and full (a quorum queue's limit lets one more in)
        try:
            backbone.publish(DOCUMENTS, f"fill-{n}")
        except TransientError:
            pass
    # When a batch of five is published
    with pytest.raises(TransientError) as refused:
        backbone.publish_many(DOCUMENTS, [f"doc-{n}" for n in range(5)])
    # Then the broker's nack is a transient error naming the batch
    assert str(refused.value).startswith(f"message broker {backbone.display_url} refused {DOCUMENTS} doc-0, doc-1, "
                                         "doc-2, ...")
    assert "negative publisher confirm" in str(refused.value)
    # and the next batch goes on a new channel, refused as well, not confused by the first one's confirms
    with pytest.raises(TransientError, match="negative publisher confirm"):
        backbone.publish_many(DOCUMENTS, ["doc-5", "doc-6"])
    assert backbone.depth(DOCUMENTS) in (1, 2)


def test_a_batch_while_the_broker_is_down_raises_a_transient_error_in_bounded_time(backbone: Backbone) -> None:
    backbone.publish_many(DOCUMENTS, ["before-1", "before-2"])
    with broker_stopped():
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"^message broker 127\.0\.0\.1:\d+/hent-test-\w+ unavailable"):
            backbone.publish_many(DOCUMENTS, ["during-1", "during-2"])
        assert time.monotonic() - started < 10
    # And once the broker is back, a batch goes again, on a new connection
    backbone.publish_many(DOCUMENTS, ["after-1", "after-2"])
    assert backbone.depth(DOCUMENTS) == 4


def test_a_consumer_reconnects_after_a_broker_restart_and_goes_on(
    backbone: Backbone, consumer: Callable[..., threading.Thread], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a consumer at work
    seen: list[str] = []
    consumer({DOCUMENTS: seen.append})
    backbone.publish(DOCUMENTS, "before")
    assert wait_for(lambda: seen == ["before"]) and backbone.ping()
    # When the broker restarts under it
    with broker_stopped():
        time.sleep(1.0)  # the consumer notices and backs off
    assert backbone.ping()  # at once, on a new connection: the broker closed the one it had
    # Then what is published after is handled, once, by the same consumer
    backbone.publish(DOCUMENTS, "after-1")
    backbone.publish(DOCUMENTS, "after-2")
    assert wait_for(lambda: len(seen) == 3, timeout=30), seen
    assert seen == ["before", "after-1", "after-2"]
    assert any("; reconnecting in " in r.getMessage() for r in caplog.records if r.name == "bus.backbone")


def test_a_message_whose_handler_keeps_raising_ends_in_hent_dead(
    vhost: RabbitVhost, backbone: Backbone, consumer: Callable[..., threading.Thread]
) -> None:
    attempts: list[str] = []

    def handler(entity_id: str) -> None:
        attempts.append(entity_id)
        if entity_id == "bad":
            raise RuntimeError("boom")

    backbone.publish(DOCUMENTS, "bad")
    backbone.publish(DOCUMENTS, "good")
    consumer({DOCUMENTS: handler})
    assert wait_for(lambda: backbone.depth(DEAD) == 1 and "good" in attempts)
    assert attempts.count("bad") == HANDLER_ATTEMPTS and attempts.count("good") == 1
    assert dead_letters(vhost) == [({"id": "bad"}, DOCUMENTS)]
    assert backbone.depth(DOCUMENTS) == 0


def test_messages_no_handler_can_read_are_dead_lettered_at_once(
    vhost: RabbitVhost, backbone: Backbone, consumer: Callable[..., threading.Thread]
) -> None:
    # Given a message that is not JSON and one without an id, beside a good one
    with Connection(vhost.url) as conn:
        producer = conn.Producer()
        producer.publish("not json", exchange="hent", routing_key=DOCUMENTS, content_type="text/plain",
                         content_encoding="utf-8")
        producer.publish({"document": "x"}, exchange="hent", routing_key=DOCUMENTS, serializer="json")
    backbone.publish(DOCUMENTS, "good")
    seen: list[str] = []
    consumer({DOCUMENTS: seen.append})
    # Then the good one is handled and the two others are in hent.dead, each tried once
    assert wait_for(lambda: seen == ["good"] and backbone.depth(DEAD) == 2)
    assert sorted(dead_letters(vhost), key=str) == [("not json", DOCUMENTS), ({"document": "x"}, DOCUMENTS)]


@pytest.mark.parametrize("prefetch", [1, 3])
def test_a_consumer_holds_no_more_messages_than_its_prefetch(
    backbone: Backbone, consumer: Callable[..., threading.Thread], prefetch: int
) -> None:
    # Given a slow handler and five messages
    release = threading.Event()
    seen: list[str] = []

    def slow(entity_id: str) -> None:
        seen.append(entity_id)
        release.wait(20)

    for n in range(5):
        backbone.publish(DOCUMENTS, f"doc-{n}")
    consumer({DOCUMENTS: slow}, prefetch=prefetch)
    # When it works on the first one
    assert wait_for(lambda: seen == ["doc-0"])
    time.sleep(0.5)
    # Then the consumer holds `prefetch` messages and the others wait in the queue
    assert backbone.depth(DOCUMENTS) == 5 - prefetch
    release.set()
    assert wait_for(lambda: len(seen) == 5 and backbone.depth(DOCUMENTS) == 0)


def test_the_bus_on_rabbitmq_delivers_each_document_once(
    vhost: RabbitVhost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the bus configured with the broker's URL (its password from the environment), nothing
    # else changed, and a worker of three threads
    parts = urlsplit(vhost.url)
    monkeypatch.setenv("HENT_TEST_AMQP_PASSWORD", parts.password or "")
    netloc = f"{parts.username}:${{HENT_TEST_AMQP_PASSWORD}}@{parts.hostname}:{parts.port}"
    broker = urlunsplit(parts._replace(netloc=netloc))
    config = write_config(tmp_path, extra_bus={"broker": broker, "workers": 3})
    drop = tmp_path / "drop"
    for n in range(1, 5):
        drop_deliberation(drop / "deliberations", f"DEL2026_2{n:02d}", decision=TODAY - timedelta(days=1))
    drop_hr_decision(drop / "rh", "ARR2026_201", decision=TODAY - timedelta(days=2))
    drop_contract(drop / "finances", "MAR2026_201", signed=TODAY - timedelta(days=3))
    # When it runs until idle
    outcome = run_until_idle(config)
    # Then every document was routed and delivered once, and nothing is left in the queues
    assert len(outcome) == 6
    for bundle, row in outcome.items():
        assert row["doc"].state == "ROUTED", (bundle, row["doc"].reason)
        assert [str(d.state) for d in row["deliveries"]] == ["DELIVERED"], bundle
    assert len(list((tmp_path / "out").iterdir())) == 6
    assert vhost.queues() == {DOCUMENTS: "quorum", DELIVERIES: "quorum", DEAD: "quorum"}
    backbone = Backbone(vhost.url)
    try:
        assert (backbone.depth(DOCUMENTS), backbone.depth(DELIVERIES), backbone.depth(DEAD)) == (0, 0, 0)
    finally:
        backbone.close()


def test_a_node_started_while_the_broker_is_down_waits_for_it_and_goes_on(
    vhost: RabbitVhost, caplog: pytest.LogCaptureFixture
) -> None:
    made: dict[str, Backbone] = {}
    starting = threading.Thread(target=lambda: made.update(backbone=Backbone(vhost.url, start_wait=60)))
    with caplog.at_level(logging.WARNING, logger="bus.backbone"), broker_stopped():
        starting.start()
        # Given RabbitMQ down while a node starts, Then the node waits, saying so, instead of exiting
        assert wait_for(lambda: any("unavailable" in r.getMessage() and "trying again in" in r.getMessage()
                                    for r in caplog.records), 30)
        assert starting.is_alive() and not made
    # When RabbitMQ is back, Then the node is up and publishes
    starting.join(60)
    backbone = made["backbone"]
    try:
        backbone.publish(DOCUMENTS, "after-start")
        assert backbone.depth(DOCUMENTS) == 1
    finally:
        backbone.close()


def test_an_unreachable_broker_is_refused_once_start_wait_is_over() -> None:
    began = time.monotonic()
    with pytest.raises(TransientError, match="unavailable"):
        Backbone("amqp://guest:guest@127.0.0.1:9/", start_wait=1.0)  # port 9 (discard): nothing listens
    assert time.monotonic() - began < 10
