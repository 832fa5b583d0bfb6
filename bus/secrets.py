"""Secrets: where they come from, and how they never reach a log line, a repr or ``check``.

A secret is never written in the YAML itself: the configuration refers to it as
``${ENV_VAR}``, ``${ENV_VAR:-default}`` or ``${file:/run/secrets/x}`` (a relative file path
is resolved against the directory of the YAML file that names it; one trailing newline
is dropped).  ``$${`` writes a literal ``${``.

Secrets are *registered* for the life of the process, and :func:`redact` replaces each
registered value by ``**********`` in any text: log lines (through :class:`SecretFilter`),
error messages and ``check``'s output.  Registered are: every value a :class:`Secret` field
holds (passwords, tokens: whatever reference it came from), every ``${file:...}`` value, and
the value of a variable whose name says it is one (``PASSWORD``, ``TOKEN``, ``SECRET``...,
:data:`SECRET_NAME`).  Other ``${ENV}`` values — a host, a user name, a path, a port — are
not: masking ``127.0.0.1`` or ``/var/lib/hent`` in every log line would hide what an operator
needs to read.  Values shorter than :data:`MIN_REDACT_LENGTH` characters are registered only
when a :class:`Secret` holds them.  :func:`redact` also masks the password of any ``scheme://user:password@``
URL, whether it was registered or not.
"""

from __future__ import annotations

__all__ = [
    "MASK",
    "MIN_REDACT_LENGTH",
    "SECRET_NAME",
    "Secret",
    "SecretFilter",
    "redact",
    "redact_url",
    "register_secret",
    "resolve_references",
    "secret_file_paths",
]

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

MASK = "**********"
MIN_REDACT_LENGTH = 4

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]+)@")
_REFERENCE = re.compile(r"\$\$\{[^}]*\}|\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: the names of environment variables whose values are registered as secrets wherever they are used
SECRET_NAME = re.compile(r"(?i)pass|secret|token|credential|api_?key|private")


def register_secret(value: str, *, force: bool = False) -> None:
    """Remember ``value`` so that :func:`redact` masks it from now on."""
    global _pattern
    if not value or (len(value) < MIN_REDACT_LENGTH and not force):
        return
    with _lock:
        if value in _known:
            return
        _known.add(value)
        ordered = sorted(_known, key=len, reverse=True)  # longest first: no partial leftovers
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """``text`` with every registered secret and every URL password replaced by ``**********``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    pattern = _pattern
    return pattern.sub(MASK, text) if pattern is not None else text


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced: ``amqp://hent:**********@mq/hent``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return redact(url)
    if password:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))
    return redact(url)


class Secret:
    """A credential: ``str()`` and ``repr()`` give ``**********``; :meth:`reveal` the value.

    Usable as a pydantic field type; serialising a model masks it too.  Flag the field
    with ``json_schema_extra={"secret": True}`` so that the generated reference says so.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError("a Secret holds a string")
        self._value = value
        register_secret(value, force=True)

    def reveal(self) -> str:
        """The value itself: hand it to the library that needs it, never to a log."""
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self._value,))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from_str = core_schema.no_info_after_validator_function(cls, core_schema.str_schema())
        return core_schema.json_or_python_schema(
            json_schema=from_str,
            python_schema=core_schema.union_schema([core_schema.is_instance_schema(cls), from_str]),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda s: MASK),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "password", "writeOnly": True}


class SecretFilter(logging.Filter):
    """Redacts every record's message, arguments and traceback.

    Add it to each *handler* (a filter on a logger does not see records that propagate
    from its children): ``handler.addFilter(SecretFilter())``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _secret_file(body: str, base_dir: Path) -> Path:
    """The file a ``file:/path`` reference names (relative: to ``base_dir``)."""
    path = Path(os.path.expanduser(body[5:].strip()))
    return path if path.is_absolute() else base_dir / path


def secret_file_paths(text: str, base_dir: Path) -> list[Path]:
    """The files the ``${file:...}`` references of ``text`` name, resolved as :func:`resolve_references`
    resolves them (``$${file:...}``, a literal, names none)."""
    return [_secret_file(m.group(1), base_dir) for m in _REFERENCE.finditer(text)
            if m.group(1) is not None and m.group(1).startswith("file:")]


def _resolve_one(body: str, base_dir: Path) -> tuple[str | None, str | None]:
    """(value, None) or (None, what went wrong) for the inside of one ``${...}``."""
    if body.startswith("file:"):
        path = _secret_file(body, base_dir)
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return None, f"cannot read secret file '{path}': {reason}"
        value = value[:-2] if value.endswith("\r\n") else value.removesuffix("\n")
        register_secret(value)
        return value, None
    name, has_default, default = body.partition(":-")
    if not _NAME.fullmatch(name):
        return (
            None,
            f"invalid reference '${{{body}}}': write ${{NAME}}, ${{NAME:-default}} or ${{file:/path}}",
        )
    env = os.environ.get(name)
    if env:
        if SECRET_NAME.search(name):
            register_secret(env)
        return env, None
    if has_default:
        return default, None
    if env is None:
        return None, f"environment variable '{name}' is not set"
    return env, None


def resolve_references(text: str, base_dir: Path) -> tuple[str, list[str], bool]:
    """Replace every ``${...}`` in ``text``: (new text, problems, whether any was found)."""
    problems: list[str] = []
    found = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal found
        body = match.group(1)
        if body is None:  # $${...}: a literal ${...}
            return match.group(0)[1:]
        found = True
        value, problem = _resolve_one(body, base_dir)
        if problem is not None:
            problems.append(problem)
            return ""
        return value or ""

    return _REFERENCE.sub(substitute, text), problems, found
