"""bus.backbone._Confirms: a batch's publisher confirms counted whoever reads them off the connection.

A double of py-amqp's channel: its listeners (``channel.events``) are called for every ack or nack
read, and, as py-amqp does on a connection that can be blocked, each publish first reads what the
broker sent (here: the acks of the messages before it).  The real broker: tests/integration/
test_backbone_rabbitmq.py.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from amqp.exceptions import MessageNacked

from bus.backbone import _Confirms


class Broker:
    """The frames the broker has sent and the client has not read yet, read one at a time."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.channel: Channel | None = None

    def drain_events(self, timeout: float | None = None) -> None:
        if not self.frames:
            raise TimeoutError("timed out")  # socket.timeout, as py-amqp raises it
        kind, tag, multiple = self.frames.pop(0)
        assert self.channel is not None
        for listener in list(self.channel.events[f"basic_{kind}"]):
            listener(tag, multiple)


class Channel:
    def __init__(self, broker: Broker, *, ack: Any) -> None:
        self.connection = broker
        self.events: dict[str, set[Any]] = defaultdict(set)
        self.selected = False
        self.published: list[Any] = []
        self._ack = ack  # (the number of the message just published) -> frames the broker sends for it
        broker.channel = self

    def confirm_select(self) -> None:
        self.selected = True

    def _basic_publish(self, message: Any, *, exchange: str, routing_key: str) -> None:
        while self.connection.frames:  # what py-amqp reads before a publish, and nobody waits for
            self.connection.drain_events(timeout=0)
        self.published.append(message)
        self.connection.frames.extend(self._ack(len(self.published)))


def test_acks_read_while_the_next_messages_are_published_are_not_lost() -> None:
    # Given a broker that acks each message at once (read by the next publish), the last one alone
    broker = Broker()
    confirms = _Confirms(Channel(broker, ack=lambda n: [("ack", n, False)]))
    assert confirms.channel.selected
    # When a batch of five is sent and its confirms awaited
    for n in range(5):
        confirms.sent(f"m{n}", exchange="hent", routing_key="hent.documents")
    confirms.wait(deadline=float("inf"))
    # Then it returns with nothing left to read: four acks read while publishing, the fifth by the wait
    assert broker.frames == []


def test_one_ack_for_several_messages_confirms_them_all() -> None:
    broker = Broker()
    confirms = _Confirms(Channel(broker, ack=lambda n: [("ack", n, True)] if n in (3, 6) else []))
    for batch in range(2):  # two batches on the same channel: the broker numbers on from 4
        for n in range(3):
            confirms.sent(f"m{batch}{n}", exchange="hent", routing_key="hent.documents")
        confirms.wait(deadline=float("inf"))
    assert broker.frames == []


@pytest.mark.parametrize(("frames", "error"), [
    (lambda n: [("nack" if n == 2 else "ack", n, False)], MessageNacked),  # the broker refused one
    (lambda n: [("ack", n, False)] if n != 2 else [], TimeoutError),  # a confirm that never comes
])
def test_a_refused_or_missing_confirm_fails_the_batch(frames: Any, error: type[Exception]) -> None:
    broker = Broker()
    confirms = _Confirms(Channel(broker, ack=frames))
    for n in range(3):
        confirms.sent(f"m{n}", exchange="hent", routing_key="hent.documents")
    with pytest.raises(error):
        confirms.wait(deadline=float("inf"))
