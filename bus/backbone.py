"""The message backbone: kombu queues carrying document and delivery ids, never payloads.

The embedded default is kombu's SQLAlchemy transport on a SQLite file; ``amqp://`` points
the same code at RabbitMQ.  A message is a claim check (``{"id": ...}``): the bytes are
in the spool, the truth is in the ledger.  Embedded transports drop an unacked message
when the process is killed, so nothing relies on the broker for durability: the sweeper
re-publishes whatever the ledger says is unfinished.
"""

from __future__ import annotations

__all__ = ["Backbone", "DOCUMENTS", "DELIVERIES"]

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu import Connection, Exchange, Queue
from kombu.exceptions import KombuError, OperationalError

from bus.errors import TransientError

log = logging.getLogger(__name__)

DOCUMENTS = "hent.documents"
DELIVERIES = "hent.deliveries"

_EXCHANGE = Exchange("hent", type="direct", durable=True)


def _queue(name: str) -> Queue:
    return Queue(name, exchange=_EXCHANGE, routing_key=name, durable=True)


@contextmanager
def broker_errors(url_for_messages: str) -> Iterator[None]:
    """Translate kombu and socket failures into TransientError."""
    try:
        yield
    except (TimeoutError, KombuError, OperationalError, OSError) as exc:
        raise TransientError(f"message broker {url_for_messages} unavailable: {exc}") from exc


class Backbone:
    """Publish ids to the two work queues and consume them, one connection per thread."""

    QUEUES = (DOCUMENTS, DELIVERIES)

    def __init__(self, url: str, *, display_url: str | None = None, polling_interval: float = 0.1) -> None:
        self.url = url
        self.display_url = display_url or url.split("@")[-1]
        self._polling_interval = polling_interval
        self._local = threading.local()
        self._admin: Connection | None = None
        self._admin_lock = threading.Lock()
        self._queues = {name: _queue(name) for name in self.QUEUES}
        with broker_errors(self.display_url):
            channel = self._admin_channel()
            for queue in self._queues.values():
                queue(channel).declare()
            self._end_session(channel)

    def _connection(self) -> Connection:
        conn = Connection(self.url, connect_timeout=5)
        # kombu's SQLAlchemy transport hands every transport option to create_engine,
        # so the polling interval of virtual transports is set on the transport itself.
        if hasattr(conn.transport, "polling_interval"):
            conn.transport.polling_interval = self._polling_interval
        return conn

    def _producer_connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connection()
        return conn

    def publish(self, queue: str, entity_id: str) -> None:
        """Send one id; raises TransientError when the broker cannot take it."""
        with broker_errors(self.display_url):
            conn = self._producer_connection()
            producer = conn.Producer(serializer="json")
            publish = conn.ensure(producer, producer.publish, max_retries=3)
            publish(
                {"id": entity_id},
                exchange=_EXCHANGE,
                routing_key=queue,
                declare=[self._queues[queue]],
                delivery_mode=2,
            )

    def consume(
        self,
        handlers: dict[str, Callable[[str], None]],
        stop: threading.Event,
        *,
        idle_timeout: float = 0.5,
        prefetch: int = 1,
    ) -> None:
        """Run ``handlers[queue](id)`` for each message until ``stop`` is set.

        A message is acknowledged once its handler returns or raises: the ledger records
        the outcome and the sweeper finds what a crash interrupted.
        """

        def on_message(body: Any, message: Any) -> None:
            queue = message.delivery_info.get("routing_key", "")
            handler = handlers.get(queue)
            entity_id = body.get("id") if isinstance(body, dict) else None
            try:
                if handler is None or not isinstance(entity_id, str):
                    log.error("dropping unexpected message on %s: %r", queue, body)
                else:
                    handler(entity_id)
            except Exception:  # the handler records its own failures; never kill the consumer
                log.exception("handler for %s %s raised", queue, entity_id)
            finally:
                message.ack()

        while not stop.is_set():
            try:
                with self._connection() as conn:
                    queues = [self._queues[name] for name in handlers]
                    with conn.Consumer(queues, callbacks=[on_message], accept=["json"], prefetch_count=prefetch):
                        while not stop.is_set():
                            try:
                                conn.drain_events(timeout=idle_timeout)
                            except TimeoutError:
                                continue
            except (KombuError, OperationalError, OSError) as exc:
                log.warning("broker %s: %s; reconnecting", self.display_url, exc)
                stop.wait(1.0)

    def _admin_channel(self) -> Any:
        if self._admin is None:
            self._admin = self._connection()
        return self._admin.default_channel

    @staticmethod
    def _end_session(channel: Any) -> None:
        """kombu's SQLAlchemy channel keeps its session's transaction open after a read."""
        session = getattr(channel, "_session", None)
        if session is not None:
            session.commit()

    def depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue``, or None when the transport cannot say."""
        with self._admin_lock:
            try:
                channel = self._admin_channel()
                try:
                    result = self._queues[queue](channel).queue_declare(passive=True)
                    return int(result.message_count)
                finally:
                    self._end_session(channel)
            except Exception:  # noqa: BLE001 - a gauge must never break the bus
                self._drop_admin()
                return None

    def housekeeping(self) -> int:
        """Delete the messages kombu's SQLAlchemy transport keeps after delivery (it never does)."""
        with self._admin_lock:
            try:
                channel = self._admin_channel()
                message_cls = getattr(channel, "message_cls", None)
                if message_cls is None:
                    return 0
                try:
                    query = channel.session.query(message_cls).filter(message_cls.visible.is_(False))
                    return int(query.delete(synchronize_session=False))
                finally:
                    self._end_session(channel)
            except Exception as exc:  # noqa: BLE001 - housekeeping must never break the bus
                log.warning("broker housekeeping failed: %s", exc)
                self._drop_admin()
                return 0

    def ping(self) -> bool:
        with self._admin_lock:
            try:
                if self._admin is None:
                    self._admin = self._connection()
                self._admin.ensure_connection(max_retries=1, timeout=2)
                return True
            except Exception:  # noqa: BLE001
                self._drop_admin()
                return False

    def _drop_admin(self) -> None:
        if self._admin is not None:
            try:
                self._admin.release()
            except Exception:  # noqa: BLE001
                pass
            self._admin = None

    def close(self) -> None:
        with self._admin_lock:
            self._drop_admin()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.release()
            self._local.conn = None
