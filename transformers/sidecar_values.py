"""A value read from a sidecar turned into a canonical kind: text, int, decimal, date, bool, lists.

Pure functions: :func:`convert` returns the value and the problems as (rule, message)
pairs, and :class:`~transformers.sidecar.Sidecar` records them against the sidecar and
the field.  An XML element stands for its text; an empty text or list is no value.
"""

from __future__ import annotations

__all__ = ["clean", "convert", "scalar", "text_key", "to_int", "xml_value"]

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from lxml import etree

_TRUE = {"o", "oui", "y", "yes", "true", "1", "vrai"}
_FALSE = {"n", "non", "no", "false", "0", "faux"}
#: the separator of a list field when the rule gives no ``split:``
_DEFAULT_SPLIT = {"ints": ".", "texts": ","}


def convert(
    value: Any, kind: str, split: str | None, formats: tuple[str, ...]
) -> tuple[Any, list[tuple[str, str]]]:
    """``value`` as ``kind`` (text, int, decimal, date, bool, ints, texts, items), or None, with the problems.

    ``split`` separates a text into list items (``ints`` and ``texts`` have a default);
    ``formats`` are the strptime formats a date is tried against, in order.
    """
    problems: list[tuple[str, str]] = []
    if kind == "items":
        if isinstance(value, str) and split:
            return [part.strip() for part in value.split(split) if part.strip()], problems
        return (value if isinstance(value, list) else [value]), problems
    if kind in ("ints", "texts"):
        parts: list[Any] = []
        for item in value if isinstance(value, list | tuple) else [value]:
            item = scalar(item)
            if isinstance(item, str | int) and not isinstance(item, bool):
                parts += [p.strip() for p in str(item).split(split or _DEFAULT_SPLIT[kind]) if p.strip()]
            else:
                parts.append(item)
        converted = [to_int(p) if kind == "ints" else (p if isinstance(p, str) else None) for p in parts]
        for part, result in zip(parts, converted, strict=True):
            if result is None:
                rule_name, what = ("integer", "an integer") if kind == "ints" else ("text", "a text")
                problems.append((rule_name, f"{part!r} is not {what}"))
        return (None if None in converted else tuple(converted)), problems
    if isinstance(value, list | tuple):
        if len(value) != 1:
            return None, [("single-value", f"the path selects {len(value)} values, expected one")]
        value = value[0]
    value = scalar(value)
    if kind == "text":
        if isinstance(value, str) and value:
            return value, problems
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(to_int(value) if to_int(value) is not None else value), problems
        problems.append(("text", f"expected a text, found {value!r}"))
    elif kind == "int":
        if to_int(value) is not None:
            return to_int(value), problems
        problems.append(("integer", f"{value!r} is not an integer"))
    elif kind == "decimal":
        number = _to_decimal(value)
        if number is not None:
            return number, problems
        problems.append(("decimal", f"{value!r} is not a decimal number (such as 125000.50 or 125000,50)"))
    elif kind == "date":
        if isinstance(value, date):
            return (value.date() if isinstance(value, datetime) else value), problems
        for fmt in formats if isinstance(value, str) else ():
            try:
                return datetime.strptime(value, fmt).date(), problems
            except ValueError:
                continue
        problems.append(("date-format", f"{value!r} does not match the date format {' or '.join(formats)}"))
    elif kind == "bool":
        if isinstance(value, bool):
            return value, problems
        text = text_key(value).lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE, problems
        problems.append(("boolean", f"{value!r} is not a yes/no value (O/N, oui/non, true/false, 1/0)"))
    return None, problems


def scalar(value: Any) -> Any:
    """An XML element stands for its text."""
    if isinstance(value, etree._Element):
        return "".join(value.itertext()).strip()
    return value


def xml_value(item: Any) -> Any:
    """What an XPath result item stands for: an element with children or attributes, or a text."""
    if isinstance(item, etree._Element):
        return item if len(item) or item.attrib else "".join(item.itertext())
    if isinstance(item, str):
        return str(item)
    return to_int(item) if isinstance(item, float) and item.is_integer() else item


def clean(value: Any) -> Any:
    """Trim texts; an empty text or an empty list is no value."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        cleaned = [c for c in (clean(v) for v in value) if c is not None]
        return cleaned or None
    return value


def to_int(value: Any) -> int | None:
    """``value`` as an integer (``"12"``, ``12.0``), None when it is not one (booleans are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    return None


def _to_decimal(value: Any) -> Decimal | None:
    """``value`` as a finite Decimal: 12, 12.5 (its shortest repr), "125 000,50"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int | float):
        value = repr(value)
    if not isinstance(value, str):
        return None
    text = re.sub(r"\s", "", value)  # spaces, no-break spaces between thousands
    if not re.fullmatch(r"[+-]?([0-9]+([.,][0-9]*)?|[.,][0-9]+)([eE][+-]?[0-9]+)?", text):
        return None
    return Decimal(text.replace(",", "."))


def text_key(value: Any) -> str:
    """``value`` as a ``map:`` key: trimmed text, JSON booleans as ``true``/``false``, 3.0 as ``3``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    value = scalar(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
