"""A vendor's sidecar (JSON, CSV or XML), read safely, and its values made canonical.

A :class:`Sidecar` parses the bytes once and then answers what a :class:`Rule` selects,
converted to a canonical kind (text, int, date, bool, a list of them); nothing raises:
every finding is a :class:`~bus.errors.Problem` naming the sidecar, the canonical field and
the rule (encoding, lone-surrogate, json-syntax, json-too-deep, csv-syntax, csv-rows, xml-syntax,
xml-entities-forbidden, xml-too-large, xml-too-deep, required, map-value, integer, decimal, text,
single-value, date-format, boolean).  XML is read by :func:`transformers.safe_xml.parse` (no entity
expansion, no network, bounded size and depth); a sidecar declaring entities is refused.  The
mapping file's syntax is in :mod:`transformers.mapping`.

Bytes are decoded strictly, never another way than the encoding the mapping (or the XML
declaration, or a UTF-16/32 byte order mark for XML) gives: bytes that encoding refuses, a NUL
byte (UTF-16 without a byte order mark read as 8-bit), and UTF-8 read as a one-byte encoding
(``é`` would become ``Ã©``) are each an ``encoding`` problem naming the byte offset and line.  A
text holding half of a UTF-16 pair (JSON ``"\\ud800"``) is refused as ``lone-surrogate``: nothing
can store or send it.  The other characters no document carries (controls, U+FFFD, bidi) are
refused where the text is written (:mod:`transformers.text_policy`), under its policy.
"""

from __future__ import annotations

__all__ = ["ABSENT", "Rule", "Sidecar", "known_encoding"]

import codecs
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
from transformers.text_policy import check_text

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


def _bom_hint(data: bytes) -> str | None:
    """The advice a byte order mark gives: the encoding it announces."""
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return f"the file starts with a {name.upper()} byte order mark: set encoding: {name} in the mapping"
    return None


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
        """``data`` read strictly as ``encoding``; None with an ``encoding`` problem naming the byte offset.

        Besides the bytes the codec refuses, two readings that succeed but are wrong are refused:
        NUL bytes (UTF-16 or UTF-32 without a byte order mark, read as an 8-bit encoding) and UTF-8
        read as a one-byte-per-character encoding (latin-1, cp1252: ``é`` would arrive as ``Ã©``).
        """
        codec = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        wide = codecs.lookup(codec).name.startswith(("utf-16", "utf-32"))
        nul = -1 if wide else data.find(b"\x00")
        try:
            text = data.decode(codec)
        except UnicodeDecodeError as exc:
            bom = _bom_hint(data)
            if bom is None and nul >= 0:
                self._nul(data, nul, encoding)
            else:
                self._wrong_encoding(data, exc.start, f"cannot be read as {encoding}: byte 0x{data[exc.start]:02x}",
                                     bom or "set encoding: in the mapping to the export's encoding")
            return None
        if nul >= 0:
            self._nul(data, nul, encoding)
            return None
        if codec != "utf-8-sig" and data.startswith(codecs.BOM_UTF8) and not wide:
            self._wrong_encoding(data, 0, f"cannot be read as {encoding}: bytes ef bb bf", "the file starts with a "
                                 "UTF-8 byte order mark; set encoding: utf-8 in the mapping")
            return None
        if len(text) == len(data) and not data.isascii():  # one byte per character: was it UTF-8?
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return text
            start = next(i for i, byte in enumerate(data) if byte >= 0x80)
            end = start + 1
            while end < len(data) and 0x80 <= data[end] < 0xC0:
                end += 1
            sequence = data[start:end]
            self._wrong_encoding(data, start, f"cannot be read as {encoding}: it is UTF-8, bytes {sequence.hex(' ')}",
                                 f"they are {sequence.decode('utf-8')!r} in UTF-8 and would be read as "
                                 f"{sequence.decode(codec)!r}; set encoding: utf-8 in the mapping")
            return None
        return text

    def _nul(self, data: bytes, offset: int, encoding: str) -> None:
        head = data[:256]
        wide = head.count(0) * 4 >= len(head)  # every other byte NUL: ASCII written as UTF-16 or UTF-32
        self._wrong_encoding(data, offset, f"cannot be read as {encoding}: a NUL byte (0x00), which no text holds,",
                             "it is probably UTF-16 or UTF-32 without a byte order mark; export it again as UTF-8, "
                             "or set encoding: utf-16 in the mapping" if wide else "remove it from the export")

    def _wrong_encoding(self, data: bytes, offset: int, what: str, advice: str) -> None:
        line = data.count(b"\n", 0, offset) + 1
        self.problem(None, "encoding", f"{what} at byte offset {offset} (line {line}); {advice}", line=line)

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
        texts = [converted] if isinstance(converted, str) else converted if kind == "texts" and converted else []
        halves = [p for text in texts for p in check_text(text, field=field_name, file=self.name)
                  if p.rule == "lone-surrogate"]  # no encoding writes one: not in the ledger, not in a reply
        self.problems.extend(halves)
        return None if halves else converted

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
