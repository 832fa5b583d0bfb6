"""Declarative contract mappings: a vendor's sidecar (JSON, CSV or XML) → a `CanonicalContract`.

The same YAML language as the act mappings of :mod:`transformers.mapping` (read it first),
in a ``decp:`` section; ``format``, ``encoding``, ``csv`` and ``namespaces`` are shared at
the top, so that one file may describe both what a contract sends to the préfecture (the
act: ``fields:``, ``files:``) and its données essentielles (``decp:``)::

    format: json
    encoding: utf-8
    description: free text
    decp:
      fields:                    # DECP field → rule (path, const, default, map, format, split, required)
        kind: {path: type_contrat, map: {M: marche, C: contrat-concession}}   # default: marche
        id: numero_marche
        acheteur: siret_acheteur
        codeCPV: cpv
        lieuExecution.code: lieu_code          # a nested object's fields, dotted
        montant: montant_ht                    # decimals: 125000.50, "125 000,50"
        techniques: {path: techniques, split: ";", map: {AC: Accord-cadre}}
      lists:                     # lists of objects: items, then each item's fields
        titulaires:
          items: {path: titulaires, parse: json}     # a column holding a JSON list
          fields: {typeIdentifiant: {path: type, default: SIRET}, id: siret}
        modifications:
          items: {path: avenants, parse: json}
          fields: {id: numero, dateNotificationModification: date, ...}
          lists: {titulaires: {items: ..., fields: ...}}
      extra: {contrat_id: id}    # free text kept in CanonicalContract.extra

Field names are DECP's (:mod:`transformers.decp_model`); a nested object's are dotted
(``lieuExecution.typeCode``, a subcontracting act's ``sousTraitant.id``).  Lists are
``titulaires``, ``concessionnaires``, ``modifications``, ``actesSousTraitance`` and
``modificationsActesSousTraitance``; a modification's ``titulaires`` nest under its
``lists:``.  A list's ``items`` selects the items: a JSON list, XML elements (item paths
are then XPaths relative to the item), a text holding a JSON list (``parse: json``: a
database row has no nested JSON, so one column holds the list, e.g.
``[{"siret": "55204599900869"}]``), or a text split into items (``split: ";"``: each item is
a text, read with the path ``.``).  For a list of values (``techniques``, ``typesPrix``...),
``split:`` cuts the text first and ``map:`` then translates each value.

Only the fields that apply to the contract's kind are read; the others are ignored, so one
mapping can serve a table holding both marchés and concessions (``acheteur`` and
``autoriteConcedante`` may read the same column).  A field the kind requires and the
sidecar lacks is a problem (rule ``required``); so is one the mapping gives no rule for.

Every problem names the sidecar, the field (``titulaires[0].id``, counting from 0) and the
rule: required, map-value, integer, decimal, date-format, boolean, text, single-value,
json-syntax, choice (kind), and the sidecar's own (encoding, json-syntax, csv-syntax...).
DECP rules (SIRET, CPV, amounts...) are :func:`transformers.decp.check_contract`'s, not
checked here.  Mistakes in the mapping file are one `ConfigError` listing them all with
their line and YAML path (``decp.fields.codeCPV``), as for act mappings.
"""

from __future__ import annotations

__all__ = ["FIELD_KINDS", "LIST_ITEMS", "ContractMapping", "ListRule"]

import types
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

from bus.errors import ConfigError, DocumentError, Problem
from transformers.decp_model import KINDS, MARCHE, CanonicalContract, schema_fields
from transformers.mapping import Mapping
from transformers.mapping_load import _ConfigReader, _read_text, _Rules
from transformers.sidecar import ABSENT, Rule, Sidecar
from transformers.sidecar_values import clean

_SCALARS = {str: "text", int: "int", Decimal: "decimal", date: "date", bool: "bool"}


@cache
def _shape(cls: type) -> tuple[dict[str, str], dict[str, type]]:
    """The mappable fields of a model class: {name or dotted name: kind} and {list name: item class}."""
    scalars: dict[str, str] = {}
    lists: dict[str, type] = {}
    hints = get_type_hints(cls)
    for spec in fields(cls):
        if spec.name in ("sidecar", "extra"):
            continue
        hint = hints[spec.name]
        if get_origin(hint) in (Union, types.UnionType):
            hint = next(arg for arg in get_args(hint) if arg is not type(None))
        if get_origin(hint) is tuple:
            item = get_args(hint)[0]
            if isinstance(item, type) and is_dataclass(item):
                lists[spec.name] = item
            else:
                scalars[spec.name] = "texts"
        elif isinstance(hint, type) and is_dataclass(hint):
            scalars.update({f"{spec.name}.{name}": kind for name, kind in _shape(hint)[0].items()})
        else:
            scalars[spec.name] = _SCALARS.get(hint, "text")  # Literal (kind): a text
    return scalars, lists


#: every field a contract mapping may give, and its kind (text, int, decimal, date, bool, texts)
FIELD_KINDS: dict[str, str] = _shape(CanonicalContract)[0]
#: the lists of objects a contract mapping may give, and their items' class
LIST_ITEMS: dict[str, type] = _shape(CanonicalContract)[1]


@dataclass(frozen=True)
class ListRule:
    """Where a list's items are and, inside each item, its fields and nested lists."""

    items: Rule
    fields: dict[str, Rule]
    lists: dict[str, ListRule] = field(default_factory=dict)


@dataclass(frozen=True)
class ContractMapping:
    """One vendor export's contract mapping, validated when loaded (see the module docstring)."""

    source: str
    format: str
    fields: dict[str, Rule]
    lists: dict[str, ListRule] = field(default_factory=dict)
    extra: dict[str, Rule] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str = ","
    quotechar: str = '"'
    layout: str = "header"
    namespaces: dict[str, str] = field(default_factory=dict)
    description: str = ""
    act: Mapping | None = None  #: the act side of the same file (``fields:``, ``files:``), if any

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> ContractMapping:
        """Read and check a mapping file's ``decp:`` section (and its act side, if any); one ConfigError."""
        source = name or str(path)
        reader = _ConfigReader(source, _read_text(path, source))
        data = reader.parse()
        fmt, encoding, options, namespaces = reader.head(data)
        act = None
        if "fields" in data or "files" in data:
            try:
                act = Mapping.load(path, name)
            except ConfigError as exc:
                reader.problems += [p for p in exc.problems if p not in reader.problems]
        loaded = _Loader(reader, _Rules(reader, fmt, namespaces)).decp(data.get("decp"))
        if reader.problems:
            reader.fail()
        return cls(source=source, format=fmt, fields=loaded["fields"], lists=loaded.get("lists", {}),
                   extra=loaded.get("extra", {}), encoding=encoding, namespaces=namespaces,
                   delimiter=options.get("delimiter", ","), quotechar=options.get("quotechar", '"'),
                   layout=options.get("layout", "header"), description=str(data.get("description") or ""), act=act)

    def referenced_files(self, sidecar_name: str, data: bytes) -> list[str]:
        """The files the sidecar names for the act side, if the mapping has one; DECP itself needs none."""
        return self.act.referenced_files(sidecar_name, data) if self.act is not None else []

    def map(self, sidecar_name: str, data: bytes) -> CanonicalContract:
        """The canonical contract the sidecar describes; a `DocumentError` lists every problem."""
        run = _Run(self, sidecar_name, data)
        if run.context is None:
            run.fail()
        kind = (run.value(self.fields["kind"], "text", "kind") if "kind" in self.fields else None) or MARCHE
        if kind not in KINDS:
            run.problem("kind", "choice", f"kind {kind!r} must be marche or contrat-concession")
        if run.problems:
            run.fail()
        values = run.read_object(CanonicalContract, self.fields, self.lists, kind, run.context, "")
        extra = {name: run.value(rule, "text", f"extra.{name}") for name, rule in self.extra.items()}
        if run.problems or values is None:
            run.fail()
        return CanonicalContract(kind=kind, sidecar=sidecar_name,
                                 extra={name: value for name, value in extra.items() if value is not None},
                                 **values)


class _Run(Sidecar):
    """Mapping one sidecar: its parsed content and the problems found so far."""

    def __init__(self, mapping: ContractMapping, sidecar_name: str, data: bytes) -> None:
        super().__init__(sidecar_name, data, mapping.format, encoding=mapping.encoding,
                         delimiter=mapping.delimiter, quotechar=mapping.quotechar, layout=mapping.layout)
        self.mapping = mapping

    def fail(self) -> NoReturn:
        count = len(self.problems)
        first = self.problems[0] if count == 1 else Problem("")
        raise DocumentError(
            f"{self.name}: {count} problem(s) mapping the sidecar with {self.mapping.source}",
            problems=self.problems, path=self.name, field=first.field, rule=first.rule,
        )

    def read_object(self, cls: type, rules: dict[str, Rule], lists: dict[str, ListRule], kind: str, context: Any,
               prefix: str) -> dict[str, Any] | None:
        """The fields of one ``cls`` read in ``context`` (those that apply to ``kind``), or None."""
        applies = schema_fields(cls, kind)
        scalars, list_items = _shape(cls)
        values: dict[str, Any] = {}
        for name, value_kind in scalars.items():
            top, _, sub = name.partition(".")
            if top not in applies:
                continue
            required = applies[top] and (not sub or schema_fields(_nested(cls, top), kind)[sub])
            rule = rules.get(name)
            if rule is None:
                if required:
                    self.problem(prefix + name, "required", f"the mapping gives no rule for {name}, which a "
                                 f"{kind} requires")
                continue
            if value_kind == "texts":
                value = self.texts(rule, prefix + name, required, context)
            else:
                value = self.value(rule, value_kind, prefix + name, required=required, context=context)
            if value is not None and sub:
                values.setdefault(top, {})[sub] = value
            elif value is not None:
                values[name] = value
        for top, sub_class in ((top, _nested(cls, top)) for top in list(values) if top not in scalars):
            values[top] = _build(sub_class, values[top])
        for name, item_class in list_items.items():
            spec = lists.get(name)
            if name in applies and spec is None and applies[name]:
                self.problem(prefix + name, "required", f"the mapping gives no rule for {name}, which a {kind} "
                             "requires")
            if name not in applies or spec is None:
                continue
            items = self.value(spec.items, "items", prefix + name, context=context) or []
            built = [self.read_object(item_class, spec.fields, spec.lists, kind, item, f"{prefix}{name}[{index}].")
                     for index, item in enumerate(items)]
            values[name] = tuple(_build(item_class, item) for item in built if item is not None)
        return None if None in values.values() else values

    def texts(self, rule: Rule, field_name: str, required: bool, context: Any) -> tuple[str, ...] | None:
        """A list of values: split the source text first, then translate each value with ``map:``."""
        found = clean(self.lookup(rule, context)) if rule.path is not None and rule.const is ABSENT else None
        if rule.map is None or found is None:
            return self.value(rule, "texts", field_name, required=required, context=context)
        items = self.convert(found, "texts", rule, field_name, True)
        translated = self._translate(list(items), rule.map, field_name) if items is not None else None
        if translated is None:
            return None
        wrong = [value for value in translated if not isinstance(value, str)]
        if wrong:
            self.problem(field_name, "text", f"the map gives {wrong[0]!r}, not a text")
            return None
        return tuple(translated)


def _nested(cls: type, name: str) -> type:
    hint = get_type_hints(cls)[name]
    found: type = next(arg for arg in get_args(hint) or (hint,) if arg is not type(None))
    return found


def _build(cls: type, values: Any) -> Any:
    """``cls(**values)``, or None when a required value is missing (its problem is already recorded)."""
    try:
        return cls(**values) if isinstance(values, dict) else None
    except TypeError:
        return None


class _Loader:
    """Checks a ``decp:`` section with the act loader's reader and rules."""

    def __init__(self, reader: _ConfigReader, rules: _Rules) -> None:
        self.reader = reader
        self.rules = rules

    def decp(self, section: Any) -> dict[str, Any]:
        if not isinstance(section, dict):
            self.reader.problem("decp", "required" if section is None else "type",
                                "decp: holds the contract's fields:, lists: and extra:")
            return {"fields": {}}
        self.reader._keys(section, "decp", ("fields", "lists", "extra"))
        rules = self.reader._section(section.get("fields"), "decp.fields", FIELD_KINDS, self.rules)
        kind = rules.get("kind")
        kinds = KINDS if kind is not None and kind.const is ABSENT else (kind.const if kind else MARCHE,)
        given = [*kinds, *(kind.map or {}).values()] if kind is not None else []
        wrong = next((k for k in given if k not in KINDS), None)
        if wrong is not None:
            self.reader.problem("decp.fields.kind", "choice", f"kind is marche or contrat-concession, not {wrong!r}")
            kinds = ()
        lists = self.lists(section.get("lists", {}), "decp.lists", CanonicalContract, kinds)
        self.required(CanonicalContract, rules, lists, kinds, "decp")
        extra = self.reader._section(section.get("extra", {}), "decp.extra", None, self.rules)
        return {"fields": rules, "lists": lists, "extra": extra}

    def lists(self, section: Any, where: str, cls: type, kinds: tuple[str, ...]) -> dict[str, ListRule]:
        if not isinstance(section, dict):
            self.reader.problem(where, "type", f"{where}: maps list names to items: and fields:")
            return {}
        items = _shape(cls)[1]
        self.reader._keys(section, where, tuple(items))
        found: dict[str, ListRule] = {}
        for name, spec in section.items():
            if name not in items:
                continue
            at = f"{where}.{name}"
            if not isinstance(spec, dict) or "items" not in spec:
                self.reader.problem(f"{at}.items", "required", f"say where {name}'s items are (items:)")
                continue
            self.reader._keys(spec, at, ("items", "fields", "lists"))
            rules = self.reader._section(spec.get("fields"), f"{at}.fields", _shape(items[name])[0], self.rules)
            nested = self.lists(spec.get("lists", {}), f"{at}.lists", items[name], kinds)
            self.required(items[name], rules, nested, kinds, at)
            found[name] = ListRule(self.rules.rule(f"{at}.items", spec["items"], "items"), rules, nested)
        return found

    def required(self, cls: type, rules: dict[str, Rule], lists: dict[str, ListRule], kinds: tuple[str, ...],
                 where: str) -> None:
        """Each field every possible kind requires must have a rule (the others are checked when mapping)."""
        if not kinds:
            return
        needed = [name for name in _shape(cls)[0] if all(self._requires(cls, name, kind) for kind in kinds)]
        needed += [name for name in _shape(cls)[1] if all(schema_fields(cls, k).get(name) for k in kinds)]
        for name in needed:
            if name not in rules and name not in lists:
                part = "lists" if name in _shape(cls)[1] else "fields"
                self.reader.problem(f"{where}.{part}.{name}", "required", f"say where {name} comes from")

    @staticmethod
    def _requires(cls: type, name: str, kind: str) -> bool:
        top, _, sub = name.partition(".")
        table = schema_fields(cls, kind)
        return bool(table.get(top)) and (not sub or schema_fields(_nested(cls, top), kind)[sub])
