"""Where log records go, in which format, and the context they carry.

Two formats, on stderr: ``human`` (``2026-05-04 10:12:01,532 WARNING bus.runtime: ...``, for
people) and ``json`` (one JSON object per line, for a log shipper)::

    {"time": "2026-05-04T10:12:01.532Z", "level": "WARNING", "logger": "bus.runtime",
     "message": "delivery 95f0... to prefecture: attempt 1 failed (...); next try in 2 s",
     "document_id": "a085...", "delivery_id": "95f0...", "route": "deliberations",
     "connector": "prefecture", "state": "PENDING"}

``auto`` is human when stderr is a terminal, JSON otherwise.  The context fields
(:data:`CONTEXT_FIELDS`) are present when known: given with ``extra=`` at the call
(``log.info(..., extra=fields_of(delivery=d))``), or set for everything logged while a
document or a delivery is handled (:func:`with_log_context`, :func:`add_log_context`).

Every handler carries :class:`bus.secrets.SecretFilter`: a secret is masked in the message,
the traceback and (JSON) every context field.
"""

from __future__ import annotations

__all__ = [
    "CONTEXT_FIELDS",
    "FORMATS",
    "HUMAN_FORMAT",
    "ContextFilter",
    "JsonFormatter",
    "add_log_context",
    "fields_of",
    "log_context",
    "resolve_format",
    "setup_logging",
    "with_log_context",
]

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any, TypeVar, cast

from bus.progress import clear_line
from bus.secrets import SecretFilter, redact

#: the fields a record carries when they are known, in this order
CONTEXT_FIELDS = ("document_id", "delivery_id", "route", "connector", "state")
FORMATS = ("auto", "human", "json")
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NONE: Mapping[str, str] = MappingProxyType({})
_context: ContextVar[Mapping[str, str]] = ContextVar("hent_log_context", default=_NONE)
_F = TypeVar("_F", bound=Callable[..., Any])


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside the block (in this thread) carries ``fields`` (None ones are left out)."""
    token = _context.set({**_context.get(), **_clean(fields)})
    try:
        yield
    finally:
        _context.reset(token)


def add_log_context(**fields: Any) -> None:
    """Add ``fields`` to the context of the enclosing :func:`log_context` (what was learnt meanwhile:
    the route, the connector).  Call it only inside one: it ends with it."""
    _context.set({**_context.get(), **_clean(fields)})


def with_log_context(field: str) -> Callable[[_F], _F]:
    """A method ``(self, key, ...)`` runs in a :func:`log_context` where ``field`` is ``key``:
    ``@with_log_context("document_id")`` on ``handle_document(self, doc_id)``."""

    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def wrapper(self: Any, key: Any, *args: Any, **kwargs: Any) -> Any:
            with log_context(**{field: key}):
                return method(self, key, *args, **kwargs)

        return cast(_F, wrapper)

    return decorate


def fields_of(document: Any = None, delivery: Any = None, **more: Any) -> dict[str, Any]:
    """The context fields of a ledger document and/or delivery row, for ``extra=``; ``more`` wins
    (``state=...``).  A document's connector is its source; a delivery's, its endpoint."""
    fields: dict[str, Any] = {}
    if document is not None:
        fields.update(document_id=document.id, route=getattr(document, "route", None),
                      connector=getattr(document, "source", None), state=getattr(document, "state", None))
    if delivery is not None:
        fields.update(document_id=delivery.document_id, delivery_id=delivery.id,
                      route=getattr(delivery, "route", None) or fields.get("route"),
                      connector=delivery.endpoint, state=getattr(delivery, "state", None))
    fields.update(more)
    return _clean(fields)


def _clean(fields: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in fields.items() if value is not None and value != ""}


class ContextFilter(logging.Filter):
    """Puts the fields of the current :func:`log_context` on each record (``extra=`` ones win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the context
    fields present, and the traceback as ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        entry: dict[str, Any] = {
            "time": moment.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = redact(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that first clears a progress line shown on the same terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        clear_line()
        super().emit(record)


def resolve_format(name: str, stream: IO[str]) -> str:
    """``human`` or ``json``: ``auto`` is human on a terminal, JSON otherwise."""
    if name not in FORMATS:
        raise ValueError(f"log format {name!r}: one of {', '.join(FORMATS)}")
    if name != "auto":
        return name
    isatty = getattr(stream, "isatty", None)
    return "human" if isatty is not None and isatty() else "json"


def setup_logging(level: str = "INFO", log_format: str = "human", stream: IO[str] | None = None) -> logging.Handler:
    """The root logger writes to ``stream`` (stderr) in ``log_format`` at ``level``, secrets
    masked; returns the handler."""
    stream = stream if stream is not None else sys.stderr
    handler = _Handler(stream)
    fmt = resolve_format(log_format, stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(HUMAN_FORMAT))
    handler.addFilter(ContextFilter())
    handler.addFilter(SecretFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler reports every run of every job at INFO: keep its warnings only
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    return handler
