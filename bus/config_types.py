"""The value types of the configuration models and the small validators behind them.

:data:`Duration` (``30``, ``"30s"``, ``"5m"`` → seconds), :data:`Schedule` (a duration or a
five-field cron line), :data:`ConfigPath` and :data:`ExistingFile` (relative paths resolved
against the directory of the main configuration file, passed in the validation context as
``base_dir``), with :func:`parse_duration` and :func:`parse_schedule` behind them; and the
checks of single values (SIREN, département, nature, e-mail address, matière) whose error
messages say what was expected.  :mod:`bus.config` re-exports the public names.
"""

from __future__ import annotations

__all__ = [
    "ConfigPath",
    "Duration",
    "ExistingFile",
    "Schedule",
    "http_url",
    "parse_duration",
    "parse_schedule",
]

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BeforeValidator, PlainValidator, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from bus.secrets import redact_url
from bus.yamlconf import describe

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SQLITE_URL = re.compile(r"^((?:sqla\+)?sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)(.+)$")


def parse_duration(value: Any) -> float:
    """``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1m30s"`` → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if text and re.fullmatch(rf"(?:{_DURATION_PART.pattern}\s*)+", text):
            return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    raise PydanticCustomError(
        "duration",
        "invalid duration {got}: write a number of seconds or a value like 500ms, 30s, 5m, 1h",
        {"got": describe(value)},
    )


def parse_schedule(value: Any) -> float | str:
    """A duration → seconds (float); a five-field cron line → the line, checked by APScheduler."""
    if isinstance(value, str) and len(value.split()) > 1:
        fields = value.split()
        if len(fields) != 5:
            raise PydanticCustomError(
                "cron",
                "invalid cron line {got}: expected 5 fields (minute hour day month weekday), got {count}",
                {"got": describe(value), "count": len(fields)},
            )
        try:
            CronTrigger.from_crontab(" ".join(fields), timezone="UTC")
        except ValueError as exc:
            raise PydanticCustomError(
                "cron", "invalid cron line {got}: {reason}", {"got": describe(value), "reason": str(exc)}
            ) from None
        return " ".join(fields)
    try:
        seconds = parse_duration(value)
    except PydanticCustomError:
        raise PydanticCustomError(
            "schedule",
            'invalid schedule {got}: write a duration (30s, 5m) or a cron line ("*/5 * * * *")',
            {"got": describe(value)},
        ) from None
    if seconds <= 0:
        raise PydanticCustomError("schedule", "a poll interval must be more than 0 seconds", {})
    return seconds


#: seconds, written ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^[0-9.smhd ]+$"}]}
    ),
]
#: a poll schedule: seconds (float) from a duration, or a five-field cron line (str)
Schedule = Annotated[
    float | str,
    PlainValidator(parse_schedule),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return Path(base) / value if base is not None and not value.is_absolute() else value


def _must_exist(value: Path) -> Path:
    if not value.exists():
        raise PydanticCustomError("missing-file", "file not found: {path}", {"path": str(value)})
    return value


#: a path, relative ones resolved against the main configuration file's directory
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
#: a :data:`ConfigPath` that must exist when the configuration is loaded
ExistingFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_must_exist)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _resolve_url(url: str, base: Any) -> str:
    match = _SQLITE_URL.match(url)
    if base is None or match is None:
        return url
    return f"{match.group(1)}{Path(base) / match.group(2)}"


def _siren(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{9}", text):
        raise PydanticCustomError("siren", "a SIREN is 9 digits, got {got}", {"got": describe(value)})
    return text


def _departement(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[09][0-9][AB0-9]", value):
        raise PydanticCustomError(
            "departement",
            'a département is a quoted 3-character code like "034", "02A" or "974", got {got}',
            {"got": describe(value)},
        )
    return value


def _nature(value: Any) -> str:
    text = f"{value:02d}" if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{2}", text):
        raise PydanticCustomError(
            "nature",
            'the nature of a collectivité is 2 digits like "31", got {got}',
            {"got": describe(value)},
        )
    return text


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise PydanticCustomError("email", "not an e-mail address: {got}", {"got": describe(value)})
    return value


_NATURE_CODES = {"DE": 1, "AR": 2, "AI": 3, "CC": 4, "BF": 5, "AU": 6}


def _act_nature(value: Any) -> int:
    if isinstance(value, str) and value.strip().upper() in _NATURE_CODES:
        return _NATURE_CODES[value.strip().upper()]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 6:
        return value
    raise PydanticCustomError(
        "nature",
        "the nature of an act is 1 to 6 or DE, AR, AI, CC, BF, AU, got {got}",
        {"got": describe(value)},
    )


def _matiere(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d+(?:\.\d+)*", text):
        raise PydanticCustomError(
            "matiere", 'a matière is a code like "3" or "3.2" (quote it), got {got}', {"got": describe(value)}
        )
    return text


_Listed = BeforeValidator(_as_list)


def http_url(value: str, *, rule: str, option: str, credentials: str) -> str:
    """``value`` if it is an http:// or https:// URL holding no credentials (they go in
    ``credentials``, options of their own), else the connector's ``rule`` error naming ``option``."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError(rule, "{option} must be an http:// or https:// URL, got {got}",
                                  {"option": option, "got": describe(redact_url(value))})
    if parts.username or parts.password:
        raise PydanticCustomError(rule, "{option} must not hold credentials: set {credentials}",
                                  {"option": option, "credentials": credentials})
    return value
