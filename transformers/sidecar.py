"""A vendor's sidecar (JSON, CSV or XML), read safely, and its values made canonical.

A :class:`Sidecar` parses the bytes once and then answers what a :class:`Rule` selects,
converted to a canonical kind (text, int, date, bool, a list of them); nothing raises:
every finding is a :class:`~bus.errors.Problem` naming the sidecar, the canonical field and
the rule (encoding, json-syntax, json-too-deep, csv-syntax, csv-rows, xml-syntax, xml-entities-forbidden,
xml-too-large, xml-too-deep, required, map-value, integer, decimal, text, single-value, date-format,
boolean).  XML is read by :func:`transformers.safe_xml.parse` (no entity expansion, no network,
bounded size and depth); a sidecar declaring entities is refused.  The mapping file's syntax is
in :mod:`transformers.mapping`.
"""

from __future__ import annotations

__all__ = ["ABSENT", "Rule", "Sidecar", "known_encoding"]

import csv
import io
import json
import re
from dataclasses import dataclass
from typing import Any

from lxml import etree

from bus.errors import Problem
from bus.registry import suggest
from transformers import safe_xml
from transformers.safe_xml import XmlRefused
from transformers.sidecar_values import clean, convert, scalar, text_key, xml_value

#: a rule's ``const`` or ``default`` when the mapping gives none (None is a value there)
ABSENT: Any = object()
MAX_SIDECAR_BYTES = 16 << 20  #: an XML sidecar holds one act's metadata: a few KiB
MAX_SIDECAR_DEPTH = 32  #: nesting of an XML sidecar's elements


@dataclass(frozen=True)
class Rule:
    """Where one value comes from and how it is turned into the canonical kind."""

    path: str | None = None
    const: Any = ABSENT
    default: Any = ABSENT
    map: dict[str, Any] | None = None
    formats: tuple[str, ...] = ("%Y-%m-%d",)
    split: str | None = None
    required: bool = False
    xpath: Any = None
    parse: str | None = None  #: "json": the text found is a JSON document (a list of items in one column)


def known_encoding(encoding: str) -> bool:
    """Whether Python knows the codec ``encoding`` (latin-1, cp1252, utf-8...)."""
    try:
        "".encode(encoding)
    except LookupError:
        return False
    return True


class Sidecar:
    """One sidecar: its parsed content (``context``, None when unreadable) and its problems."""

    def __init__(self, name: str, data: bytes, format: str, *, encoding: str | None = None,
                 delimiter: str = ",", quotechar: str = '"', layout: str = "header") -> None:
        self.name = name
        self.format = format
        self.encoding = encoding
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.layout = layout
        self.problems: list[Problem] = []
        readers = {"json": self._read_json, "csv": self._read_csv, "xml": self._read_xml}
        self.context: Any = readers[format](bytes(data))

    def problem(self, field_name: str | None, rule: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(message, file=self.name, line=line, field=field_name, rule=rule))

    # -- reading ----------------------------------------------------------------------------
    def _decode(self, data: bytes, encoding: str) -> str | None:
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        try:
            return data.decode(codec)
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.problem(None, "encoding", f"cannot be read as {encoding}: byte 0x{data[exc.start]:02x} at "
                         f"byte offset {exc.start} (line {line}); set encoding: in the mapping to the "
                         "export's encoding", line=line)
            return None

    def _read_json(self, data: bytes) -> Any:
        text = self._decode(data, self.encoding or "utf-8")
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.problem(None, "json-syntax", f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}", line=exc.lineno)
            return None
        except ValueError as exc:  # crash found by tests/hostile: an integer of 5,000 digits
            self.problem(None, "json-syntax", f"not valid JSON: {exc}")
            return None
        except RecursionError:  # crash found by tests/hostile: [[[[... 100,000 deep
            self.problem(None, "json-too-deep", "arrays or objects nested too deep to be read: export the "
                         "sidecar flat")
            return None

    def _read_csv(self, data: bytes) -> Any:
        text = self._decode(data, self.encoding or "utf-8")
        if text is None:
            return None
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""),
                            delimiter=self.delimiter, quotechar=self.quotechar)
        try:
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
        except csv.Error as exc:
            self.problem(None, "csv-syntax", f"not valid CSV at line {reader.line_num}: {exc}",
                         line=reader.line_num)
            return None
        record: dict[str, Any] = {}
        pairs: list[tuple[str, str]] = []
        if self.layout == "key-value":
            for line, row in rows:
                if len(row) < 2:
                    self.problem(None, "csv-rows", f"line {line} has no value after its key", line=line)
                pairs += [(row[0].strip(), cell) for cell in row[1:2] + [c for c in row[2:] if c.strip()]]
        elif len(rows) != 2:
            self.problem(None, "csv-rows", f"expected a header row and one data row, found {len(rows)} "
                         "non-empty rows (one act per sidecar)")
            return None
        else:
            (_, header), (line, row) = rows
            if len(row) != len(header):
                self.problem(None, "csv-rows", f"line {line} has {len(row)} cells, the header "
                             f"{len(header)}", line=line)
            pairs = [(name.strip(), cell) for name, cell in zip(header, row, strict=False)]
        for key, value in pairs:
            if key in record:
                previous = record[key]
                record[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                record[key] = value
        return record

    def _read_xml(self, data: bytes) -> Any:
        declared = re.match(rb"\s*<\?xml[^>]*encoding=[\"']([A-Za-z0-9._-]+)[\"']", data)
        encoding = self.encoding or (declared.group(1).decode() if declared else "utf-8")
        if not data.startswith((b"\xff\xfe", b"\xfe\xff")) and known_encoding(encoding):
            if self._decode(data, encoding) is None:
                return None
        try:
            return safe_xml.parse(data, name=self.name, encoding=self.encoding, max_bytes=MAX_SIDECAR_BYTES,
                                  max_depth=MAX_SIDECAR_DEPTH)
        except XmlRefused as exc:
            if exc.rule == "xml-entities-forbidden":
                self._entities_forbidden()
            elif exc.rule == "xml-well-formed":
                self.problem(None, "xml-syntax", exc.message, line=exc.line)
            else:
                self.problem(None, exc.rule or "xml-syntax", exc.message, line=exc.line)
            return None

    def _entities_forbidden(self) -> None:
        self.problem(None, "xml-entities-forbidden", "the sidecar declares XML entities (<!ENTITY ...>); "
                     "they are refused, never expanded: export the sidecar without a DOCTYPE")

    # -- evaluating rules -------------------------------------------------------------------
    def lookup(self, rule: Rule, context: Any) -> Any:
        """What the rule's path selects in the context (None: nothing)."""
        assert rule.path is not None
        if rule.path in (".", ""):
            return context
        if self.format == "xml" and isinstance(context, etree._Element):
            result = rule.xpath(context)
            return [xml_value(item) for item in result] if isinstance(result, list) else xml_value(result)
        if self.format == "csv" and context is self.context:
            return context.get(rule.path) if isinstance(context, dict) else None
        # JSON, or an item parsed from a JSON text (``parse: json``) in any format: a dotted path
        value = context
        for part in rule.path.split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    def value(self, rule: Rule, kind: str, field_name: str, *, required: bool = False,
              context: Any = ABSENT) -> Any:
        """The rule's canonical value, or None with the problem recorded."""
        context = self.context if context is ABSENT else context
        from_source = rule.const is ABSENT
        value = clean(self.lookup(rule, context)) if from_source and rule.path is not None else None
        if rule.const is not ABSENT:
            value = rule.const
        elif value is None and rule.default is not ABSENT:
            value, from_source = rule.default, False
        if value is None:
            if required or rule.required:
                self.problem(field_name, "required", self._absent(rule, context))
            return None
        if from_source and rule.map is not None:
            value = self._translate(value, rule.map, field_name)
            if value is None:
                return None
        return self.convert(value, kind, rule, field_name, from_source)

    def convert(self, value: Any, kind: str, rule: Rule, field_name: str, from_source: bool) -> Any:
        """``value`` as the canonical ``kind``, or None with the problem recorded."""
        formats = rule.formats if from_source else ("%Y-%m-%d", *rule.formats)
        if kind == "items" and rule.parse == "json" and isinstance(scalar(value), str):
            try:
                value = json.loads(scalar(value))
            except json.JSONDecodeError as exc:
                self.problem(field_name, "json-syntax", f"the text is not valid JSON (column {exc.colno}: "
                             f"{exc.msg})")
                return None
            except ValueError as exc:
                self.problem(field_name, "json-syntax", f"the text is not valid JSON ({exc})")
                return None
            except RecursionError:
                self.problem(field_name, "json-too-deep", "the JSON text is nested too deep to be read")
                return None
        converted, problems = convert(value, kind, rule.split, formats)
        for rule_name, message in problems:
            self.problem(field_name, rule_name, message)
        return converted

    def _absent(self, rule: Rule, context: Any) -> str:
        if rule.path is None:
            return "no value"
        if self.format == "csv" and isinstance(context, dict):
            near = suggest(rule.path, list(context))
            return f"column {rule.path!r} is missing or empty (columns: {', '.join(context)}){near}"
        if self.format == "xml":
            return f"XPath {rule.path!r} selects nothing (or only empty text)"
        return f"{rule.path!r} is absent or empty in the sidecar"

    def _translate(self, value: Any, table: dict[str, Any], field_name: str) -> Any:
        if isinstance(value, list):
            translated = [self._translate(item, table, field_name) for item in value]
            return None if None in translated else translated
        key = text_key(value)
        if key in table:
            return table[key]
        self.problem(field_name, "map-value", f"{key!r} is not in the map (known: {', '.join(table)})"
                     f"{suggest(key, list(table))}")
        return None
