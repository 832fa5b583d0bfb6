"""Reading and checking a vendor mapping file (YAML) into a :class:`~transformers.mapping.Mapping`.

Every mistake is found in one pass and raised at once in a `ConfigError`, each with its
line and its path in the YAML (``fields.nature.map``) and a rule: yaml-syntax, unknown-key
("did you mean ...?"), required, choice, type, encoding, format-option, rule-shape,
xpath-syntax, file-readable.  XPaths are compiled here, once per mapping.

Two generalisations serve the contract mappings of :mod:`transformers.decp_mapping`, which
read their ``decp:`` section with this same machinery (``_ConfigReader``, ``_Rules``): the
act loader accepts and ignores a top-level ``decp:`` (one vendor file may describe the act
and its données essentielles), and a list rule may say ``parse: json`` (the text found is a
JSON list: a database column holding the annexes or the holders of a contract).
"""

from __future__ import annotations

__all__ = ["load_mapping"]

from pathlib import Path
from typing import Any, NoReturn

import yaml
from lxml import etree

from bus.errors import ConfigError, Problem
from bus.registry import suggest
from transformers.mapping import FIELD_KINDS, REQUIRED_FIELDS, Mapping
from transformers.sidecar import ABSENT, Rule, known_encoding
from transformers.sidecar_values import text_key

_TOP_KEYS = ("format", "encoding", "description", "csv", "namespaces", "fields", "files", "extra", "decp")
_CSV_KEYS = ("delimiter", "quotechar", "layout")
_RULE_KEYS = ("path", "const", "default", "map", "format", "split", "required", "parse")


def load_mapping(path: Path, name: str | None = None) -> Mapping:
    """Read and check the mapping file at ``path``; problems name it ``name`` (default: ``path``)."""
    source = name or str(path)
    return _ConfigReader(source, _read_text(path, source)).read()


def _read_text(path: Path, source: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        problem = Problem(f"cannot read the mapping: {reason}", file=source, rule="file-readable")
        raise ConfigError(str(problem), problems=[problem], path=source) from exc


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
        data = self.parse()
        fmt, encoding, options, namespaces = self.head(data)
        rules = _Rules(self, str(fmt), namespaces)
        fields = self._section(data.get("fields"), "fields", FIELD_KINDS, rules)
        for name in REQUIRED_FIELDS:
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

    def parse(self) -> dict[str, Any]:
        """The YAML as data, its keys' lines indexed and the top-level keys checked."""
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
        return data

    def head(self, data: dict[str, Any]) -> tuple[str, str | None, dict[str, str], dict[str, str]]:
        """What every mapping says of its sidecar: format, encoding, csv: options and namespaces."""
        fmt = data.get("format")
        if fmt not in ("json", "csv", "xml"):
            self.problem("format", "required" if fmt is None else "choice",
                         f"format must be json, csv or xml, not {fmt!r}"
                         f"{suggest(str(fmt), ['json', 'csv', 'xml'])}")
        encoding = data.get("encoding")
        if encoding is not None and not (isinstance(encoding, str) and known_encoding(encoding)):
            self.problem("encoding", "encoding", f"unknown encoding {encoding!r} (latin-1, cp1252, utf-8...)")
        if fmt == "csv" and encoding is None:
            self.problem("encoding", "required", "a CSV export's encoding cannot be guessed: say encoding: "
                         "latin-1, cp1252 or utf-8")
        options = self._csv(data.get("csv"), fmt)
        namespaces = self._namespaces(data.get("namespaces"), fmt)
        return str(fmt), encoding, options, namespaces

    def _index(self, node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                self.lines[path] = key.start_mark.line + 1
                self._index(value, path)

    def _keys(self, data: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        for key in data:
            if key not in allowed:
                hint = suggest(str(key), list(allowed)) or f" (known: {', '.join(allowed)})"
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
                 rules: _Rules) -> dict[str, Rule]:
        if not isinstance(section, dict):
            self.problem(where, "required" if section is None else "type", f"{where}: maps names to rules")
            return {}
        if kinds is not None:
            self._keys(section, where, tuple(kinds))
        return {str(name): rules.rule(f"{where}.{name}", spec, kinds[name] if kinds else "text")
                for name, spec in section.items() if kinds is None or name in kinds}

    def _files_part(self, section: Any, where: str, allowed: tuple[str, ...], needed: str,
                    rules: _Rules) -> dict[str, Rule]:
        if not isinstance(section, dict) or needed not in section:
            self.problem(f"{where}.{needed}", "required", f"say where {where}.{needed} comes from")
            return {needed: Rule()}
        self._keys(section, where, allowed)
        return {key: rules.rule(f"{where}.{key}", section[key], "items" if key == "items" else "text")
                for key in allowed if key in section}


class _Rules:
    """Builds the rules of one mapping file, reporting to its `_ConfigReader`."""

    def __init__(self, reader: _ConfigReader, fmt: str, namespaces: dict[str, str]) -> None:
        self.reader = reader
        self.format = fmt
        self.namespaces = namespaces

    def rule(self, where: str, spec: Any, kind: str) -> Rule:
        problem = self.reader.problem
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, dict):
            problem(where, "type", "a rule is a path or a mapping (path:, const:, default:, map:, format:, "
                    "split:, required:)")
            return Rule()
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
        table = {text_key(key): value for key, value in table.items()} if table is not None else None
        formats = spec.get("format", "%Y-%m-%d")
        if "format" in spec and kind != "date":
            problem(f"{where}.format", "format-option", "format: applies to dates only")
        formats = (formats,) if isinstance(formats, str) else formats
        if not (isinstance(formats, list | tuple) and formats and all(isinstance(f, str) for f in formats)):
            problem(f"{where}.format", "type", "format: is a strptime format or a list of them")
            formats = ("%Y-%m-%d",)
        split = spec.get("split")
        if split is not None and kind not in ("ints", "texts", "items"):
            problem(f"{where}.split", "format-option", "split: applies to list fields only (matieres, "
                    "return_emails, annexes.items...)")
        elif split is not None and not (isinstance(split, str) and split):
            problem(f"{where}.split", "type", f"split: is a separator text, not {split!r}")
        parse = spec.get("parse")
        if parse is not None and kind != "items":
            problem(f"{where}.parse", "format-option", "parse: applies to the items: of a list only")
        elif parse is not None and parse != "json":
            problem(f"{where}.parse", "choice", f"parse: is json, not {parse!r}")
        required = spec.get("required", False)
        if not isinstance(required, bool):
            problem(f"{where}.required", "type", f"required: is true or false, not {required!r}")
        candidates = [spec.get("const"), spec.get("default"), *(table or {}).values()]
        if kind == "ints" and any(isinstance(v, float) for v in candidates):
            problem(where, "type", "YAML reads 3.10 as the number 3.1: write matières as a quoted text "
                    "\"3.10\" or a list [3, 10]")
        return Rule(path, spec.get("const", ABSENT), spec.get("default", ABSENT), table, tuple(formats),
                    split if isinstance(split, str) else None, required is True, self._xpath(where, path),
                    "json" if parse == "json" else None)

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
