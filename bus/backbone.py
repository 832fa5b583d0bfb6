"""The message backbone: kombu queues carrying document and delivery ids, never payloads.

The embedded default (``sqla+sqlite:///path``) is a kombu transport on a SQLite file
(:mod:`bus.sqlite_broker`); another ``sqla+`` URL is kombu's SQLAlchemy transport; ``amqp://``
(or ``pyamqp://``) points the same code at RabbitMQ.  A message is a claim check
(``{"id": ...}``): the bytes are in the spool, the truth is in the ledger.  Embedded
transports drop an unacked message when the process is killed, so nothing relies on the
broker for durability: the sweeper re-publishes whatever the ledger says is unfinished.

On RabbitMQ the backbone also asks the broker for what it can give:

- durable queues, quorum queues (``x-queue-type: quorum``) when the server is RabbitMQ
  3.8 or later; a queue that already exists with other arguments (a classic queue made
  by an older version) is used as it is, with a warning saying how to convert it;
- publisher confirms: :meth:`Backbone.publish` returns once the broker has the message,
  and raises TransientError when it has not (after kombu's ``ensure`` retries);
  :meth:`Backbone.publish_many` (a poll's documents) sends them all, then awaits their
  confirms once;
- manual acknowledgment, sent after the handler returned: the runtime's handlers commit
  the ledger before they return, so a message is acked only once its outcome is on disk;
- a bounded prefetch (``bus.prefetch``, per consumer thread and queue);
- a dead-letter exchange ``hent.dead`` (fanout) and its queue ``hent.dead``: a message that
  cannot be handled (malformed body, unknown queue, a handler raising
  ``HANDLER_ATTEMPTS`` times) is rejected without requeue and RabbitMQ moves it there;
  the document stays unfinished in the ledger, which still drives it;
- reconnection: a consumer reconnects with back-off after a broker restart and goes on.

On the embedded transport a message that cannot be handled is logged and acked, as it
always was: the sweeper re-publishes from the ledger.
"""

from __future__ import annotations

__all__ = ["Backbone", "DOCUMENTS", "DELIVERIES", "DEAD", "HANDLER_ATTEMPTS", "supports_quorum"]

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import AMQPError, MessageNacked, PreconditionFailed
from kombu import Connection, Exchange, Queue
from kombu.common import maybe_declare
from kombu.exceptions import KombuError, OperationalError

from bus.errors import TransientError
from bus.sqlite_broker import SqliteTransport, sqlite_path

log = logging.getLogger(__name__)

DOCUMENTS = "hent.documents"
DELIVERIES = "hent.deliveries"
DEAD = "hent.dead"
HANDLER_ATTEMPTS = 3  #: on RabbitMQ, a message whose handler raised this many times is dead-lettered

_EXCHANGE = Exchange("hent", type="direct", durable=True)
_DEAD_EXCHANGE = Exchange(DEAD, type="fanout", durable=True)
_BROKER_ERRORS = (TimeoutError, KombuError, OperationalError, OSError, AMQPError, MessageNacked)


def _queue(name: str) -> Queue:
    return Queue(name, exchange=_EXCHANGE, routing_key=name, durable=True)


def _amqp_queues(quorum: bool) -> dict[str, Queue]:
    kind = {"x-queue-type": "quorum"} if quorum else {}
    queues = {
        name: Queue(name, exchange=_EXCHANGE, routing_key=name, durable=True,
                    queue_arguments={**kind, "x-dead-letter-exchange": DEAD})
        for name in Backbone.QUEUES
    }
    queues[DEAD] = Queue(DEAD, exchange=_DEAD_EXCHANGE, routing_key=DEAD, durable=True, queue_arguments=kind)
    return queues


def supports_quorum(server_properties: Mapping[str, Any]) -> bool:
    """True when the AMQP server says it is RabbitMQ 3.8 or later (quorum queues)."""
    if str(server_properties.get("product", "")) != "RabbitMQ":
        return False
    numbers = []
    for part in str(server_properties.get("version", "")).split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers) >= (3, 8)


def _nacked(exc: BaseException | None) -> bool:
    """True when a negative publisher confirm is among the causes of ``exc``."""
    while exc is not None:
        if isinstance(exc, MessageNacked):
            return True
        exc = exc.__cause__
    return False


@contextmanager
def broker_errors(url_for_messages: str) -> Iterator[None]:
    """Translate kombu, py-amqp and socket failures into TransientError."""
    try:
        yield
    except _BROKER_ERRORS as exc:
        raise TransientError(f"message broker {url_for_messages} unavailable: {exc!r}") from exc


class _Confirms:
    """A channel in confirm mode and its messages the broker has not confirmed yet.

    The broker numbers the channel's messages from 1 and confirms them one by one or every one up to
    a number (``multiple``).  Its acks are taken by listeners, not by ``Channel.wait``: py-amqp reads
    the connection before each publish (to see a ``connection.blocked``), and an ack it reads then
    would be lost to a one-shot wait.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._count = 0
        self._waiting: set[int] = set()
        self._nacked = False
        channel.events["basic_ack"].add(self._confirmed)
        channel.events["basic_nack"].add(self._refused)
        channel.confirm_select()

    def _confirmed(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._waiting = {tag for tag in self._waiting if tag > delivery_tag}
        else:
            self._waiting.discard(delivery_tag)

    def _refused(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._confirmed(delivery_tag, multiple)

    def sent(self, message: Any, *, exchange: str, routing_key: str) -> None:
        self.channel._basic_publish(message, exchange=exchange, routing_key=routing_key)
        self._count += 1
        self._waiting.add(self._count)

    def wait(self, deadline: float) -> None:
        """Until every message sent is confirmed; MessageNacked when the broker refused one,
        TimeoutError past ``deadline`` (``time.monotonic``)."""
        while self._waiting and not self._nacked:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self._waiting)} message(s) not confirmed in time")
            self.channel.connection.drain_events(timeout=left)
        if self._nacked:
            raise MessageNacked()


class Backbone:
    """Publish ids to the two work queues and consume them, one connection per thread."""

    QUEUES = (DOCUMENTS, DELIVERIES)

    def __init__(
        self,
        url: str,
        *,
        display_url: str | None = None,
        polling_interval: float = 0.1,
        prefetch: int = 1,
        confirm_timeout: float = 10.0,
        heartbeat: float = 60.0,
        start_wait: float = 0.0,
    ) -> None:
        """``start_wait``: how long to keep trying when the broker cannot be reached at first (a node
        started while RabbitMQ restarts waits for it), with a warning at each try; 0: not at all."""
        self.url = url
        self.display_url = display_url or url.split("@")[-1]
        self.prefetch = prefetch
        self._polling_interval = polling_interval
        self._confirm_timeout = confirm_timeout
        self._heartbeat = heartbeat
        self._local = threading.local()
        self._producers: set[Connection] = set()  # every thread's, released by close()
        self._producers_lock = threading.Lock()
        self._admin: Connection | None = None
        self._admin_lock = threading.Lock()
        self._failures: dict[str, int] = {}  # message → handler failures so far (RabbitMQ)
        self._failures_lock = threading.Lock()
        self.amqp = Connection(url).transport.driver_type == "amqp"
        self._sqlite = None if self.amqp else sqlite_path(url)  # the embedded broker's file
        self.quorum = False
        deadline, pause = time.monotonic() + start_wait, 0.5
        while True:
            try:
                self._queues = self._declare()
                break
            except TransientError as exc:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("%s; trying again in %.1f s", exc, pause)
                self._drop_admin()
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _declare(self) -> dict[str, Queue]:
        with broker_errors(self.display_url):
            if self.amqp:
                return self._declare_amqp()
            queues = {name: _queue(name) for name in self.QUEUES}
            channel = self._admin_channel()
            for queue in queues.values():
                queue(channel).declare()
            self._end_session(channel)
            return queues

    # -- connections ---------------------------------------------------------------------
    def _connection(self, *, heartbeat: float = 0) -> Connection:
        if self.amqp:
            return Connection(self.url, connect_timeout=5, heartbeat=heartbeat,
                              transport_options={"confirm_publish": True})
        if self._sqlite is not None:
            conn = Connection(transport=SqliteTransport, transport_options={"path": self._sqlite}, connect_timeout=5)
        else:  # kombu's SQLAlchemy transport hands every transport option to create_engine,
            conn = Connection(self.url, connect_timeout=5)
        # so the polling interval of virtual transports is set on the transport itself
        if hasattr(conn.transport, "polling_interval"):
            conn.transport.polling_interval = self._polling_interval
        return conn

    def _declare_amqp(self) -> dict[str, Queue]:
        """Declare exchanges and queues on RabbitMQ, each on a channel of its own (a refused
        declaration closes its channel)."""
        admin = self._admin = self._connection()
        admin.connect()
        self.quorum = supports_quorum(admin.connection.server_properties)
        queues = _amqp_queues(self.quorum)
        for name, queue in list(queues.items()):
            channel = admin.channel()
            try:
                queue(channel).declare()
            except PreconditionFailed as exc:
                queues[name] = self._existing_queue(admin, queue, exc)
            finally:
                self._close_channel(channel)
        return queues

    def _existing_queue(self, admin: Connection, wanted: Queue, refusal: Exception) -> Queue:
        """``wanted`` exists with other arguments: check it is there, bind it, use it as it is."""
        existing = Queue(wanted.name, exchange=wanted.exchange, routing_key=wanted.routing_key,
                         durable=True, no_declare=True)
        channel = admin.channel()
        try:
            existing(channel).queue_declare(passive=True)
            existing(channel).queue_bind()
        finally:
            self._close_channel(channel)
        log.warning(
            "queue %s on %s exists with other arguments than Hent's (%s); used as it is, without %s. "
            "To convert it, stop every worker, delete the queue (rabbitmqctl delete_queue %s -p VHOST; "
            "the ledger re-publishes its work) and start again",
            wanted.name, self.display_url, getattr(refusal, "reply_text", refusal),
            ", ".join(f"{k}={v}" for k, v in (getattr(wanted, "queue_arguments", None) or {}).items()), wanted.name,
        )
        return existing

    @staticmethod
    def _close_channel(channel: Any) -> None:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - a channel the broker closed already
            pass

    def _producer_connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connection()
            with self._producers_lock:
                self._producers.add(conn)
        return conn

    # -- publishing ----------------------------------------------------------------------
    def publish(self, queue: str, entity_id: str) -> None:
        """Send one id; raises TransientError when the broker cannot take it.

        On RabbitMQ it returns once the broker confirmed the message (publisher confirms);
        kombu's ``ensure`` reconnects and retries three times before giving up.
        """
        options: dict[str, Any] = {}
        retries: dict[str, Any] = {}
        if self.amqp:
            options = {"message_id": uuid.uuid4().hex, "timeout": self._confirm_timeout,
                       "confirm_timeout": self._confirm_timeout}
            retries = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}
        try:
            with broker_errors(self.display_url):
                conn = self._producer_connection()
                if self.amqp:  # bounded: a default channel would retry connecting for 6 s
                    conn.ensure_connection(max_retries=2, **retries)
                producer = conn.Producer(serializer="json")
                publish = conn.ensure(producer, producer.publish, max_retries=3, **retries)
                publish(
                    {"id": entity_id},
                    exchange=_EXCHANGE,
                    routing_key=queue,
                    declare=[self._queues[queue]],
                    delivery_mode=2,
                    **options,
                )
        except TransientError as exc:
            self._drop_producer()
            if _nacked(exc):
                raise TransientError(
                    f"message broker {self.display_url} refused {queue} {entity_id} (negative publisher "
                    "confirm: a queue limit or a broker alarm?)"
                ) from exc
            raise

    def publish_many(self, queue: str, entity_ids: Sequence[str]) -> None:
        """Send several ids to ``queue``; raises TransientError when the broker cannot take them all
        (some may have gone: a claim check sent twice is handled once).

        On RabbitMQ they are all published before the broker's confirms are awaited, once for the
        lot (the broker writes them to its disk together, where one publish at a time costs a write
        and a round trip each); elsewhere one after the other as :meth:`publish`.
        """
        if not self.amqp or len(entity_ids) < 2:
            for entity_id in entity_ids:
                self.publish(queue, entity_id)
            return
        try:
            with broker_errors(self.display_url):
                self._publish_confirmed(queue, entity_ids)
        except TransientError as exc:
            self._drop_producer()
            if _nacked(exc):
                raise TransientError(
                    f"message broker {self.display_url} refused {queue} {', '.join(entity_ids[:3])}"
                    f"{', ...' if len(entity_ids) > 3 else ''} (negative publisher confirm: a queue limit or a "
                    "broker alarm?)"
                ) from exc
            raise

    def _publish_confirmed(self, queue: str, entity_ids: Sequence[str]) -> None:
        """Publish on this thread's confirm channel, then read the connection until the broker
        confirmed each message, ``confirm_timeout`` in all."""
        conn = self._producer_connection()
        conn.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5, interval_max=1.0)
        confirms = getattr(self._local, "confirms", None)
        if confirms is None or confirms.channel.connection is not conn.connection:
            confirms = self._local.confirms = _Confirms(conn.channel())
        maybe_declare(self._queues[queue], confirms.channel)  # once per connection, as publish() does
        try:
            for entity_id in entity_ids:
                message = confirms.channel.prepare_message(
                    json.dumps({"id": entity_id}), 0, "application/json", "utf-8", {},
                    {"delivery_mode": 2, "message_id": uuid.uuid4().hex})
                confirms.sent(message, exchange=_EXCHANGE.name, routing_key=queue)
            confirms.wait(time.monotonic() + self._confirm_timeout)
        except BaseException:
            self._local.confirms = None  # its confirms are out of step: the next batch opens another channel
            self._close_channel(confirms.channel)
            raise

    def _drop_producer(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.confirms = None
        if conn is not None:
            with self._producers_lock:
                self._producers.discard(conn)
            self._release(conn)

    @staticmethod
    def _release(conn: Connection) -> None:
        try:
            conn.release()
        except Exception:  # noqa: BLE001 - it is broken already
            pass

    # -- consuming -----------------------------------------------------------------------
    def consume(
        self,
        handlers: dict[str, Callable[[str], None]],
        stop: threading.Event,
        *,
        idle_timeout: float = 0.5,
        prefetch: int | None = None,
    ) -> None:
        """Run ``handlers[queue](id)`` for each message until ``stop`` is set.

        A message is acknowledged after its handler returned: the runtime's handlers commit
        the ledger first, and the sweeper finds what a crash interrupted.  A handler that
        raises: on the embedded transport the message is acked all the same (logged); on
        RabbitMQ it is requeued, and dead-lettered to ``hent.dead`` at the
        ``HANDLER_ATTEMPTS``-th failure.  A broken connection is reopened with back-off
        (0.5 s doubling to 10 s).
        """
        prefetch = self.prefetch if prefetch is None else prefetch

        def on_message(body: Any, message: Any) -> None:
            queue = message.delivery_info.get("routing_key", "")
            handler = handlers.get(queue)
            entity_id = body.get("id") if isinstance(body, dict) else None
            if handler is None or not isinstance(entity_id, str):
                self._unhandled(message, f"unexpected message on {queue}: {body!r}")
                return
            try:
                handler(entity_id)
            except Exception:  # the handler records its own failures; never kill the consumer
                log.exception("handler for %s %s raised", queue, entity_id)
                if self.amqp:
                    self._handler_failed(message, queue, entity_id, stop)
                    return
            else:
                self._forget(message, queue, entity_id)
            message.ack()

        def on_decode_error(message: Any, exc: Exception) -> None:
            self._unhandled(message, f"undecodable message ({message.content_type}): {exc}")

        delay = 0.5
        while not stop.is_set():
            try:
                with self._connection(heartbeat=self._heartbeat) as conn:
                    if self.amqp:  # one try each time: the back-off below paces the attempts
                        conn.ensure_connection(max_retries=0)
                    queues = [self._queues[name] for name in handlers]
                    with conn.Consumer(queues, callbacks=[on_message], accept=["json"], prefetch_count=prefetch,
                                       on_decode_error=on_decode_error):
                        delay = 0.5
                        while not stop.is_set():
                            try:
                                conn.drain_events(timeout=idle_timeout)
                            except TimeoutError:
                                pass
                            if self.amqp:
                                conn.heartbeat_check()
            except _BROKER_ERRORS as exc:
                log.warning("broker %s: %r; reconnecting in %.1f s", self.display_url, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 10.0)

    def _unhandled(self, message: Any, what: str) -> None:
        """A message no handler can take: dead-lettered on RabbitMQ, acked on the embedded transport."""
        if self.amqp:
            log.error("%s; dead-lettered to %s", what, DEAD)
            message.reject(requeue=False)
        else:
            log.error("dropping %s", what)
            message.ack()

    @staticmethod
    def _message_key(message: Any, queue: str, entity_id: str) -> str:
        return str(message.properties.get("message_id") or f"{queue}:{entity_id}")

    def _handler_failed(self, message: Any, queue: str, entity_id: str, stop: threading.Event) -> None:
        key = self._message_key(message, queue, entity_id)
        with self._failures_lock:
            failures = self._failures.pop(key, 0) + 1
            # a quorum queue counts the deliveries of a message, whichever consumer had them
            failures = max(failures, int((message.headers or {}).get("x-delivery-count") or 0) + 1)
            if failures < HANDLER_ATTEMPTS:
                self._failures[key] = failures
                while len(self._failures) > 10_000:  # messages requeued then taken by another worker
                    self._failures.pop(next(iter(self._failures)))
        if failures >= HANDLER_ATTEMPTS:
            log.error("handler for %s %s raised %d times; dead-lettered to %s (the ledger still has it)",
                      queue, entity_id, failures, DEAD)
            message.reject(requeue=False)
        else:
            stop.wait(0.2 * failures)
            message.requeue()

    def _forget(self, message: Any, queue: str, entity_id: str) -> None:
        if self.amqp and self._failures:
            with self._failures_lock:
                self._failures.pop(self._message_key(message, queue, entity_id), None)

    # -- administration ------------------------------------------------------------------
    def _admin_channel(self) -> Any:
        if self._admin is None:
            self._admin = self._connection()
        if self.amqp:  # one try: a gauge or a readiness check must not wait for kombu's retries
            self._admin.ensure_connection(max_retries=0)
        return self._admin.default_channel

    @staticmethod
    def _end_session(channel: Any) -> None:
        """kombu's SQLAlchemy channel keeps its session's transaction open after a read."""
        session = getattr(channel, "_session", None)
        if session is not None:
            session.commit()

    def depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (not those held by consumers), or None when the
        transport cannot say.  A passive declaration: it never creates nor changes a queue."""
        with self._admin_lock:
            # on RabbitMQ a second try on a new connection: the first may have been closed by a restart
            for _ in range(2 if self.amqp else 1):
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
        """Delete the messages kombu's SQLAlchemy transport keeps after delivery (it never
        does); RabbitMQ removes what is acked: nothing to do there."""
        if self.amqp:
            return 0
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
        """True when the broker answers.  On RabbitMQ a round trip (a passive declaration): a
        connection the broker closed still looks open until it is read."""
        if self.amqp:
            return self.depth(DOCUMENTS) is not None
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
            self._release(self._admin)
            self._admin = None

    def close(self) -> None:
        """Release the connections of every thread that published, and the administration one."""
        with self._admin_lock:
            self._drop_admin()
        with self._producers_lock:
            producers, self._producers = self._producers, set()
        for conn in producers:
            self._release(conn)
        self._local.conn = None
