"""Declarative vendor mappings: a sidecar (JSON, CSV or XML) → a `CanonicalAct`.

An IT department writes one YAML file per vendor export; no code per vendor::

    format: json                 # json | csv | xml                              (required)
    encoding: utf-8              # json/xml: default utf-8 / the XML declaration;
                                 # csv: required (latin-1, utf-8, cp1252...)
    description: free text
    csv: {delimiter: ";", quotechar: '"', layout: header}   # csv only; layout: header
                                 # (a header row, one data row) or key-value (rows "key;value")
    namespaces: {f: "urn:vendor:export"}                      # xml only: XPath prefixes
    fields:                      # canonical field → rule
      siren: collectivite.siren  # a bare string is a path
      nature: {path: type, map: {DELIBERATION: 1, ARRETE: 2}}
      decision_date: {path: seance.date, format: ["%Y-%m-%d", "%d/%m/%Y"]}
      matieres: {path: classification, split: "."}       # "3.2" → (3, 2)
      document_papier: {path: papier, default: false}
      objet: {path: objet, required: true}
    files:
      main: {file: fichier, type: {const: 99_DE}}          # type: None → the nature's default
      annexes: {items: annexes, file: fichier, type: type}
    extra: {vendor_id: id}       # free text kept in CanonicalAct.extra

A *rule* has: ``path`` (JSON: dotted, list indexes as numbers, ``a.b.0.c``; CSV: the
column name; XML: an XPath, absolute for fields, relative to the item for annexes), or
``const``; ``default`` when the path finds nothing or an empty text; ``map`` (source text
→ canonical value, keys compared as text, JSON booleans as ``true``/``false``);
``format`` (strptime formats for dates, tried in order; default ``%Y-%m-%d``); ``split``
(a separator for list fields: ``matieres`` default ``.``, ``return_emails`` default
``,``, annex ``items``); ``required`` (make an optional field mandatory). ``const`` and
``default`` are canonical values and skip ``map``. Order: path → default → map → split →
type (text, int, date, bool, list). Annex ``items`` selects the list (a JSON list, XML
elements, or text split into names); ``file`` and ``type`` are read inside each item
(``file`` omitted: the item is the file name).

Fields: siren, numero_interne, decision_date, nature, matieres, objet (required);
classification_date, return_emails, departement, arrondissement, collectivite_nature
(default: the configured `Collectivite` of the SIREN); document_papier,
precedent_id_acte, referent_name, referent_phone, referent_email (optional).

Every problem names the sidecar, the canonical field (``annexes[1].file`` counts from 0,
like the JSON list it comes from) and the rule: required, map-value, integer,
date-format, boolean, text, single-value, file-present, collectivite-known, encoding,
json-syntax, csv-syntax, csv-rows, xml-syntax, xml-entities-forbidden. ACTES rules
(NumeroInterne pattern, Objet length...) are the builder's, not checked here. XML is read
with no entity expansion and no network; a sidecar declaring entities is refused.

Mistakes in the mapping file itself are a `ConfigError` listing them all, each with its
line and path in the YAML (``fields.nature.map``) and a rule: yaml-syntax, unknown-key
("did you mean ...?"), required, choice, type, encoding, format-option, rule-shape,
xpath-syntax, file-readable.
"""

from __future__ import annotations

__all__ = ["FIELD_KINDS", "Mapping"]

import csv
import difflib
import io
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path, PureWindowsPath
from typing import Any, NoReturn

import yaml
from lxml import etree

from bus.errors import ConfigError, DocumentError, Problem
from transformers.actes_model import ActFile, CanonicalAct, Collectivite

#: canonical field → kind of value
FIELD_KINDS: dict[str, str] = {
    "siren": "text", "numero_interne": "text", "decision_date": "date", "nature": "int",
    "matieres": "ints", "objet": "text", "classification_date": "date", "document_papier": "bool",
    "precedent_id_acte": "text", "return_emails": "texts", "referent_name": "text",
    "referent_phone": "text", "referent_email": "text", "departement": "text",
    "arrondissement": "int", "collectivite_nature": "text",
}
_TRUE = {"o", "oui", "y", "yes", "true", "1", "vrai"}
_FALSE = {"n", "non", "no", "false", "0", "faux"}
_DEFAULT_SPLIT = {"ints": ".", "texts": ","}
_ABSENT = object()
_REQUIRED = ("siren", "numero_interne", "decision_date", "nature", "matieres", "objet")
_FROM_COLLECTIVITE = {
    "departement": "departement", "arrondissement": "arrondissement", "collectivite_nature": "nature",
    "return_emails": "return_emails", "classification_date": "classification_date",
}
_TOP_KEYS = ("format", "encoding", "description", "csv", "namespaces", "fields", "files", "extra")
_CSV_KEYS = ("delimiter", "quotechar", "layout")
_RULE_KEYS = ("path", "const", "default", "map", "format", "split", "required")
_XML_PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": False, "no_network": True, "load_dtd": False, "huge_tree": False,
}


@dataclass(frozen=True)
class _Rule:
    """Where one value comes from and how it is turned into the canonical type."""

    path: str | None = None
    const: Any = _ABSENT
    default: Any = _ABSENT
    map: dict[str, Any] | None = None
    formats: tuple[str, ...] = ("%Y-%m-%d",)
    split: str | None = None
    required: bool = False
    xpath: Any = None


@dataclass(frozen=True)
class Mapping:
    """One vendor export's mapping, validated when loaded (see the module docstring)."""

    source: str
    format: str
    fields: dict[str, _Rule]
    main_file: _Rule
    main_type: _Rule | None = None
    annex_items: _Rule | None = None
    annex_file: _Rule | None = None
    annex_type: _Rule | None = None
    extra: dict[str, _Rule] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str = ","
    quotechar: str = '"'
    layout: str = "header"
    namespaces: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, path: Path) -> Mapping:
        """Read and check a mapping file; every mistake at once in a `ConfigError`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = Problem(f"cannot read the mapping: {exc}", file=str(path), rule="file-readable")
            raise ConfigError(str(problem), problems=[problem], path=str(path)) from exc
        return _ConfigReader(str(path), text).read()

    def referenced_files(self, sidecar_name: str, data: bytes) -> list[str]:
        """The main document's and the annexes' names, [] when the sidecar cannot be read."""
        try:
            run = _Run(self, sidecar_name, data)
            if run.context is None:
                return []
            main = run.value(self.main_file, "text", "main_document.file")
            names = [main] if isinstance(main, str) else []
            names += [name for name, _type in run.annexes() if name is not None]
            return names
        except Exception:  # an unreadable sidecar is reported by map(), not here
            return []

    def map(
        self, sidecar_name: str, data: bytes, files: dict[str, Path], collectivites: dict[str, Collectivite]
    ) -> CanonicalAct:
        """The canonical act the sidecar describes; a `DocumentError` lists every problem."""
        run = _Run(self, sidecar_name, data)
        if run.context is None:
            run.fail()
        values = {name: run.value(rule, FIELD_KINDS[name], name, required=name in _REQUIRED)
                  for name, rule in self.fields.items()}
        collectivite = _collectivite(run, values.get("siren"), collectivites)
        for name, attribute in _FROM_COLLECTIVITE.items():
            if values.get(name) in (None, ()) and collectivite is not None:
                values[name] = getattr(collectivite, attribute)
        if collectivite is not None and values.get("classification_date") is None:
            run.problem("classification_date", "required", "the sidecar gives no classification date and "
                        f"none is configured for collectivité {collectivite.siren}")
        main_name = run.value(self.main_file, "text", "main_document.file", required=True)
        main_type = run.value(self.main_type, "text", "main_document.type") if self.main_type else None
        main = run.act_file(main_name, main_type, "main_document.file", files)
        annexes = [run.act_file(name, type_code, f"annexes[{index}].file", files)
                   for index, (name, type_code) in enumerate(run.annexes())]
        extra = {name: run.value(rule, "text", f"extra.{name}") for name, rule in self.extra.items()}
        if run.problems or main is None or None in annexes:
            run.fail()
        return CanonicalAct(
            siren=values["siren"], departement=values["departement"],
            arrondissement=values["arrondissement"], collectivite_nature=values["collectivite_nature"],
            decision_date=values["decision_date"], numero_interne=values["numero_interne"],
            nature=values["nature"], matieres=values["matieres"], objet=values["objet"],
            classification_date=values["classification_date"], main_document=main,
            annexes=tuple(a for a in annexes if a is not None),
            document_papier=bool(values.get("document_papier") or False),
            precedent_id_acte=values.get("precedent_id_acte"),
            return_emails=tuple(values.get("return_emails") or ()),
            referent_name=values.get("referent_name"), referent_phone=values.get("referent_phone"),
            referent_email=values.get("referent_email"), sidecar=sidecar_name,
            extra={name: value for name, value in extra.items() if value is not None},
        )


def _collectivite(run: _Run, siren: Any, collectivites: dict[str, Collectivite]) -> Collectivite | None:
    if not isinstance(siren, str):
        return None
    collectivite = collectivites.get(siren)
    if collectivite is None:
        known = ", ".join(sorted(collectivites)) or "none"
        run.problem("siren", "collectivite-known", f"SIREN {siren} is not a collectivité of the "
                    f"configuration (collectivites: {known}); add it under collectivites:")
    return collectivite


class _Run:
    """Mapping one sidecar: its parsed content and the problems found so far."""

    def __init__(self, mapping: Mapping, sidecar_name: str, data: bytes) -> None:
        self.mapping = mapping
        self.name = sidecar_name
        self.problems: list[Problem] = []
        self.context: Any = None
        readers = {"json": self._read_json, "csv": self._read_csv, "xml": self._read_xml}
        self.context = readers[mapping.format](bytes(data))

    def problem(self, field_name: str | None, rule: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(message, file=self.name, line=line, field=field_name, rule=rule))

    def fail(self) -> NoReturn:
        count = len(self.problems)
        first = self.problems[0] if count == 1 else Problem("")
        raise DocumentError(
            f"{self.name}: {count} problem(s) mapping the sidecar with {self.mapping.source}",
            problems=self.problems, path=self.name, field=first.field, rule=first.rule,
        )

    # -- reading the sidecar ------------------------------------------------------------
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
        text = self._decode(data, self.mapping.encoding or "utf-8")
        if text is None:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.problem(None, "json-syntax", f"not valid JSON at line {exc.lineno}, column {exc.colno}: "
                         f"{exc.msg}", line=exc.lineno)
            return None

    def _read_csv(self, data: bytes) -> Any:
        text = self._decode(data, self.mapping.encoding or "utf-8")
        if text is None:
            return None
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""),
                            delimiter=self.mapping.delimiter, quotechar=self.mapping.quotechar)
        try:
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
        except csv.Error as exc:
            self.problem(None, "csv-syntax", f"not valid CSV at line {reader.line_num}: {exc}",
                         line=reader.line_num)
            return None
        record: dict[str, Any] = {}
        pairs: list[tuple[str, str]] = []
        if self.mapping.layout == "key-value":
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
        encoding = self.mapping.encoding or (declared.group(1).decode() if declared else "utf-8")
        if not data.startswith((b"\xff\xfe", b"\xfe\xff")) and self._known(encoding):
            if self._decode(data, encoding) is None:
                return None
        parser = etree.XMLParser(encoding=self.mapping.encoding, **_XML_PARSER_OPTIONS)
        try:
            root = etree.fromstring(data, parser)
        except etree.XMLSyntaxError as exc:
            if b"<!ENTITY" in data:
                self._entities_forbidden()
            else:
                self.problem(None, "xml-syntax", f"not well-formed XML: {exc}", line=exc.lineno)
            return None
        dtd = root.getroottree().docinfo.internalDTD
        if dtd is not None and list(dtd.entities()):
            self._entities_forbidden()
            return None
        return root

    def _entities_forbidden(self) -> None:
        self.problem(None, "xml-entities-forbidden", "the sidecar declares XML entities (<!ENTITY ...>); "
                     "they are refused, never expanded: export the sidecar without a DOCTYPE")

    @staticmethod
    def _known(encoding: str) -> bool:
        try:
            "".encode(encoding)
        except LookupError:
            return False
        return True

    # -- evaluating rules -------------------------------------------------------------------
    def lookup(self, rule: _Rule, context: Any) -> Any:
        """What the rule's path selects in the context (None: nothing)."""
        assert rule.path is not None
        if rule.path in (".", ""):
            return context
        if self.mapping.format == "xml":
            if not isinstance(context, etree._Element):
                return None
            result = rule.xpath(context)
            return [_xml_value(item) for item in result] if isinstance(result, list) else _xml_value(result)
        if self.mapping.format == "csv":
            return context.get(rule.path) if isinstance(context, dict) else None
        value = context
        for part in rule.path.split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    def value(self, rule: _Rule, kind: str, field_name: str, *, required: bool = False,
              context: Any = _ABSENT) -> Any:
        """The rule's canonical value, or None with the problem recorded."""
        context = self.context if context is _ABSENT else context
        from_source = rule.const is _ABSENT
        value = _clean(self.lookup(rule, context)) if from_source and rule.path is not None else None
        if rule.const is not _ABSENT:
            value = rule.const
        elif value is None and rule.default is not _ABSENT:
            value, from_source = rule.default, False
        if value is None:
            if required or rule.required:
                self.problem(field_name, "required", self._absent(rule, context))
            return None
        if from_source and rule.map is not None:
            value = self._translate(value, rule.map, field_name)
            if value is None:
                return None
        return _convert(self, value, kind, rule, field_name, from_source)

    def _absent(self, rule: _Rule, context: Any) -> str:
        if rule.path is None:
            return "no value"
        if self.mapping.format == "csv" and isinstance(context, dict):
            near = _did_you_mean(rule.path, list(context))
            return f"column {rule.path!r} is missing or empty (columns: {', '.join(context)}){near}"
        if self.mapping.format == "xml":
            return f"XPath {rule.path!r} selects nothing (or only empty text)"
        return f"{rule.path!r} is absent or empty in the sidecar"

    def _translate(self, value: Any, table: dict[str, Any], field_name: str) -> Any:
        if isinstance(value, list):
            translated = [self._translate(item, table, field_name) for item in value]
            return None if None in translated else translated
        key = _text_key(value)
        if key in table:
            return table[key]
        self.problem(field_name, "map-value", f"{key!r} is not in the map (known: {', '.join(table)})"
                     f"{_did_you_mean(key, list(table))}")
        return None

    def annexes(self) -> list[tuple[str | None, str | None]]:
        """(file name, type code) of each annex the sidecar lists."""
        items_rule = self.mapping.annex_items
        if items_rule is None:
            return []
        items = self.value(items_rule, "items", "annexes")
        annexes: list[tuple[str | None, str | None]] = []
        for index, item in enumerate(items or []):
            where = f"annexes[{index}]"
            if self.mapping.annex_file is not None:
                name = self.value(self.mapping.annex_file, "text", f"{where}.file", required=True,
                                  context=item)
            else:
                name = _convert(self, item, "text", _Rule(), f"{where}.file", True)
            type_rule = self.mapping.annex_type
            type_code = self.value(type_rule, "text", f"{where}.type", context=item) if type_rule else None
            annexes.append((name, type_code))
        return annexes

    def act_file(self, name: str | None, type_code: str | None, field_name: str,
                 files: dict[str, Path]) -> ActFile | None:
        if name is None:
            return None
        path = files.get(name)
        if path is None:
            base = PureWindowsPath(name).name
            path = next((p for n, p in files.items() if PureWindowsPath(n).name == base), None)
        if path is None:
            known = ", ".join(sorted(files)) or "none"
            self.problem(field_name, "file-present", f"{name!r} is named by the sidecar but is not in the "
                         f"bundle (files: {known})")
            return None
        return ActFile(source_name=name, path=path, type_code=type_code)


def _convert(run: _Run, value: Any, kind: str, rule: _Rule, field_name: str, from_source: bool) -> Any:
    """Turn a cleaned value into the canonical kind, recording a problem when it cannot be."""
    if kind == "items":
        if isinstance(value, str) and rule.split:
            return [part.strip() for part in value.split(rule.split) if part.strip()]
        return value if isinstance(value, list) else [value]
    if kind in ("ints", "texts"):
        parts: list[Any] = []
        for item in value if isinstance(value, list | tuple) else [value]:
            item = _scalar(item)
            if isinstance(item, str | int) and not isinstance(item, bool):
                parts += [p.strip() for p in str(item).split(rule.split or _DEFAULT_SPLIT[kind]) if p.strip()]
            else:
                parts.append(item)
        converted = [_int(p) if kind == "ints" else (p if isinstance(p, str) else None) for p in parts]
        for part, result in zip(parts, converted, strict=True):
            if result is None:
                rule_name, what = ("integer", "an integer") if kind == "ints" else ("text", "a text")
                run.problem(field_name, rule_name, f"{part!r} is not {what}")
        return None if None in converted else tuple(converted)
    if isinstance(value, list | tuple):
        if len(value) != 1:
            run.problem(field_name, "single-value", f"the path selects {len(value)} values, expected one")
            return None
        value = value[0]
    value = _scalar(value)
    if kind == "text":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(_int(value) if _int(value) is not None else value)
        run.problem(field_name, "text", f"expected a text, found {value!r}")
    elif kind == "int":
        if _int(value) is not None:
            return _int(value)
        run.problem(field_name, "integer", f"{value!r} is not an integer")
    elif kind == "date":
        if isinstance(value, date):
            return value.date() if isinstance(value, datetime) else value
        formats = rule.formats if from_source else ("%Y-%m-%d", *rule.formats)
        for fmt in formats if isinstance(value, str) else ():
            try:
                return datetime.strptime(value, fmt).date()
            except ValueError:
                continue
        run.problem(field_name, "date-format", f"{value!r} does not match the date format "
                    f"{' or '.join(formats)}")
    elif kind == "bool":
        if isinstance(value, bool):
            return value
        text = _text_key(value).lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        run.problem(field_name, "boolean", f"{value!r} is not a yes/no value (O/N, oui/non, true/false, 1/0)")
    return None


def _scalar(value: Any) -> Any:
    """An XML element stands for its text."""
    if isinstance(value, etree._Element):
        return "".join(value.itertext()).strip()
    return value


def _xml_value(item: Any) -> Any:
    if isinstance(item, etree._Element):
        return item if len(item) or item.attrib else "".join(item.itertext())
    if isinstance(item, str):
        return str(item)
    return _int(item) if isinstance(item, float) and item.is_integer() else item


def _clean(value: Any) -> Any:
    """Trim texts; an empty text or an empty list is no value."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        cleaned = [c for c in (_clean(v) for v in value) if c is not None]
        return cleaned or None
    return value


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        return int(value)
    return None


def _text_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    value = _scalar(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class _ConfigReader:
    """Check a mapping file, every finding with its line and its path in the YAML."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.text = text
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}

    def problem(self, where: str | None, rule: str, message: str) -> None:
        line = None
        path = where or ""
        while path and line is None:
            line = self.lines.get(path)
            path = path.rpartition(".")[0]
        self.problems.append(Problem(message, file=self.source, line=line, field=where, rule=rule))

    def fail(self) -> NoReturn:
        self.problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
        raise ConfigError(f"{self.source}: {len(self.problems)} problem(s) in the mapping",
                          problems=self.problems, path=self.source)

    def read(self) -> Mapping:
        try:
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(self.text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            self.problems.append(Problem(f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                                         file=self.source, line=mark.line + 1 if mark else None,
                                         rule="yaml-syntax"))
            self.fail()
        self._index(node, "")
        if not isinstance(data, dict):
            self.problem(None, "type", "a mapping file is a YAML mapping with format:, fields: and files:")
            self.fail()
        self._keys(data, "", _TOP_KEYS)
        fmt = data.get("format")
        if fmt not in ("json", "csv", "xml"):
            self.problem("format", "required" if fmt is None else "choice",
                         f"format must be json, csv or xml, not {fmt!r}"
                         f"{_did_you_mean(str(fmt), ['json', 'csv', 'xml'])}")
        encoding = data.get("encoding")
        if encoding is not None and not (isinstance(encoding, str) and _Run._known(encoding)):
            self.problem("encoding", "encoding", f"unknown encoding {encoding!r} (latin-1, cp1252, utf-8...)")
        if fmt == "csv" and encoding is None:
            self.problem("encoding", "required", "a CSV export's encoding cannot be guessed: say encoding: "
                         "latin-1, cp1252 or utf-8")
        options = self._csv(data.get("csv"), fmt)
        namespaces = self._namespaces(data.get("namespaces"), fmt)
        rules = _Rules(self, str(fmt), namespaces)
        fields = self._section(data.get("fields"), "fields", FIELD_KINDS, rules)
        for name in _REQUIRED:
            if name not in fields and isinstance(data.get("fields"), dict):
                self.problem(f"fields.{name}", "required", f"say where {name} comes from")
        extra = self._section(data.get("extra", {}), "extra", None, rules)
        files = data.get("files")
        main: dict[str, Any] = {}
        annexes: dict[str, Any] = {}
        if not isinstance(files, dict):
            self.problem("files", "required", "say where the main document's name is (files: main: file:)")
        else:
            self._keys(files, "files", ("main", "annexes"))
            main = self._files_part(files.get("main"), "files.main", ("file", "type"), "file", rules)
            annexes = self._files_part(files.get("annexes"), "files.annexes", ("items", "file", "type"),
                                       "items", rules) if "annexes" in files else {}
        if self.problems:
            self.fail()
        return Mapping(
            source=self.source, format=str(fmt), fields=fields, main_file=main["file"],
            main_type=main.get("type"), annex_items=annexes.get("items"), annex_file=annexes.get("file"),
            annex_type=annexes.get("type"), extra=extra, encoding=encoding, namespaces=namespaces,
            description=str(data.get("description") or ""), **options,
        )

    def _index(self, node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                self.lines[path] = key.start_mark.line + 1
                self._index(value, path)

    def _keys(self, data: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = _did_you_mean(str(key), list(allowed)) or f" (known: {', '.join(allowed)})"
                where_key = f"{where}.{key}" if where else str(key)
                self.problem(where_key, "unknown-key", f"unknown key {key!r}{hint}")

    def _csv(self, section: Any, fmt: Any) -> dict[str, str]:
        if section is None:
            return {}
        if fmt != "csv":
            self.problem("csv", "format-option", "csv: applies to format: csv only")
            return {}
        if not isinstance(section, dict):
            self.problem("csv", "type", "csv: is a mapping (delimiter:, quotechar:, layout:)")
            return {}
        self._keys(section, "csv", _CSV_KEYS)
        for key in ("delimiter", "quotechar"):
            if key in section and not (isinstance(section[key], str) and len(section[key]) == 1):
                self.problem(f"csv.{key}", "type", f"{key} is one character, not {section[key]!r}")
        if section.get("layout", "header") not in ("header", "key-value"):
            self.problem("csv.layout", "choice", f"layout is header or key-value, not {section['layout']!r}")
        return {key: section[key] for key in _CSV_KEYS if key in section}

    def _namespaces(self, section: Any, fmt: Any) -> dict[str, str]:
        if section is None:
            return {}
        if fmt != "xml":
            self.problem("namespaces", "format-option", "namespaces: applies to format: xml only")
        elif isinstance(section, dict) and all(isinstance(v, str) for v in section.values()):
            return {str(prefix): uri for prefix, uri in section.items()}
        else:
            self.problem("namespaces", "type", "namespaces: maps each prefix to its namespace URI")
        return {}

    def _section(self, section: Any, where: str, kinds: dict[str, str] | None,
                 rules: _Rules) -> dict[str, _Rule]:
        if not isinstance(section, dict):
            self.problem(where, "required" if section is None else "type", f"{where}: maps names to rules")
            return {}
        if kinds is not None:
            self._keys(section, where, tuple(kinds))
        return {str(name): rules.rule(f"{where}.{name}", spec, kinds[name] if kinds else "text")
                for name, spec in section.items() if kinds is None or name in kinds}

    def _files_part(self, section: Any, where: str, allowed: tuple[str, ...], needed: str,
                    rules: _Rules) -> dict[str, _Rule]:
        if not isinstance(section, dict) or needed not in section:
            self.problem(f"{where}.{needed}", "required", f"say where {where}.{needed} comes from")
            return {needed: _Rule()}
        self._keys(section, where, allowed)
        return {key: rules.rule(f"{where}.{key}", section[key], "items" if key == "items" else "text")
                for key in allowed if key in section}


class _Rules:
    """Builds the rules of one mapping file, reporting to its `_ConfigReader`."""

    def __init__(self, reader: _ConfigReader, fmt: str, namespaces: dict[str, str]) -> None:
        self.reader = reader
        self.format = fmt
        self.namespaces = namespaces

    def rule(self, where: str, spec: Any, kind: str) -> _Rule:
        problem = self.reader.problem
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict):
            problem(where, "type", "a rule is a path or a mapping (path:, const:, default:, map:, format:, "
                    "split:, required:)")
            return _Rule()
        self.reader._keys(spec, where, _RULE_KEYS)
        path = spec.get("path")
        if path is not None and not isinstance(path, str):
            problem(f"{where}.path", "type", f"a path is a text, not {path!r}")
            path = None
        if path is None and "const" not in spec and "default" not in spec:
            problem(where, "rule-shape", "give a path: or a const:")
        if path is not None and "const" in spec:
            problem(where, "rule-shape", "give a path: or a const:, not both")
        table = spec.get("map")
        if table is not None and not isinstance(table, dict):
            problem(f"{where}.map", "type", "map: translates each source text to a value")
            table = None
        table = {_text_key(key): value for key, value in table.items()} if table is not None else None
        formats = spec.get("format", "%Y-%m-%d")
        if "format" in spec and kind != "date":
            problem(f"{where}.format", "format-option", "format: applies to dates only")
        formats = (formats,) if isinstance(formats, str) else formats
        if not (isinstance(formats, list | tuple) and formats and all(isinstance(f, str) for f in formats)):
            problem(f"{where}.format", "type", "format: is a strptime format or a list of them")
            formats = ("%Y-%m-%d",)
        split = spec.get("split")
        if split is not None and kind not in ("ints", "texts", "items"):
            problem(f"{where}.split", "format-option", "split: applies to matieres, return_emails and "
                    "annexes.items only")
        elif split is not None and not (isinstance(split, str) and split):
            problem(f"{where}.split", "type", f"split: is a separator text, not {split!r}")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            problem(f"{where}.required", "type", f"required: is true or false, not {required!r}")
        candidates = [spec.get("const"), spec.get("default"), *(table or {}).values()]
        if kind == "ints" and any(isinstance(v, float) for v in candidates):
            problem(where, "type", "YAML reads 3.10 as the number 3.1: write matières as a quoted text "
                    "\"3.10\" or a list [3, 10]")
        return _Rule(path, spec.get("const", _ABSENT), spec.get("default", _ABSENT), table, tuple(formats),
                     split if isinstance(split, str) else None, required is True, self._xpath(where, path))

    def _xpath(self, where: str, path: str | None) -> Any:
        if self.format != "xml" or path is None or path in (".", ""):
            return None
        try:
            xpath = etree.XPath(path, namespaces=self.namespaces, smart_strings=False)
            xpath(etree.Element("probe"))  # an undefined prefix or function shows only when run
            return xpath
        except etree.XPathError as exc:
            self.reader.problem(f"{where}.path", "xpath-syntax", f"{path!r} is not a valid XPath: {exc}")
            return None
