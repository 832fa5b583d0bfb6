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
json-syntax, csv-syntax, csv-rows, xml-syntax, xml-entities-forbidden, xml-too-large,
xml-too-deep, file-name (a file named with a folder, ``..``, a control character, a device
name...: :mod:`bus.names`; or holding a character no document carries — a bidi control, a
zero-width character, U+FFFD —, :func:`transformers.text_policy.check_text`: Pastell is sent
the vendor's name). ACTES rules
(NumeroInterne pattern, Objet length...) are the builder's, not checked here. XML is read
with no entity expansion and no network; a sidecar declaring entities is refused.

Mistakes in the mapping file itself are a `ConfigError` listing them all, each with its
line and path in the YAML (``fields.nature.map``) and a rule: yaml-syntax, unknown-key
("did you mean ...?"), required, choice, type, encoding, format-option, rule-shape,
xpath-syntax, file-readable.

The mapping file is read and checked in :mod:`transformers.mapping_load`; the sidecar is
read and its values converted in :mod:`transformers.sidecar`; here, the rules are applied.
"""

from __future__ import annotations

__all__ = ["FIELD_KINDS", "Mapping"]

from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, NoReturn

from bus.errors import DocumentError, Problem
from bus.names import RULE as NAME_RULE
from bus.names import name_problem
from transformers.actes_model import ActFile, CanonicalAct, Collectivite
from transformers.sidecar import Rule, Sidecar
from transformers.text_policy import check_text

#: canonical field → kind of value
FIELD_KINDS: dict[str, str] = {
    "siren": "text", "numero_interne": "text", "decision_date": "date", "nature": "int",
    "matieres": "ints", "objet": "text", "classification_date": "date", "document_papier": "bool",
    "precedent_id_acte": "text", "return_emails": "texts", "referent_name": "text",
    "referent_phone": "text", "referent_email": "text", "departement": "text",
    "arrondissement": "int", "collectivite_nature": "text",
}
#: the fields every mapping must say where to find
REQUIRED_FIELDS = ("siren", "numero_interne", "decision_date", "nature", "matieres", "objet")
_FROM_COLLECTIVITE = {
    "departement": "departement", "arrondissement": "arrondissement", "collectivite_nature": "nature",
    "return_emails": "return_emails", "classification_date": "classification_date",
}


@dataclass(frozen=True)
class Mapping:
    """One vendor export's mapping, validated when loaded (see the module docstring)."""

    source: str
    format: str
    fields: dict[str, Rule]
    main_file: Rule
    main_type: Rule | None = None
    annex_items: Rule | None = None
    annex_file: Rule | None = None
    annex_type: Rule | None = None
    extra: dict[str, Rule] = field(default_factory=dict)
    encoding: str | None = None
    delimiter: str = ","
    quotechar: str = '"'
    layout: str = "header"
    namespaces: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> Mapping:
        """Read and check a mapping file; every mistake at once in a `ConfigError`.

        ``name`` is how problems call the file: the path as the configuration gave it
        (default: ``path``).
        """
        from transformers.mapping_load import load_mapping  # it builds a Mapping: imported when used

        return load_mapping(path, name)

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
        values = {name: run.value(rule, FIELD_KINDS[name], name, required=name in REQUIRED_FIELDS)
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


class _Run(Sidecar):
    """Mapping one sidecar: its parsed content and the problems found so far."""

    def __init__(self, mapping: Mapping, sidecar_name: str, data: bytes) -> None:
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
                name = self.convert(item, "text", Rule(), f"{where}.file", True)
            type_rule = self.mapping.annex_type
            type_code = self.value(type_rule, "text", f"{where}.type", context=item) if type_rule else None
            annexes.append((name, type_code))
        return annexes

    def act_file(self, name: str | None, type_code: str | None, field_name: str,
                 files: dict[str, Path]) -> ActFile | None:
        if name is None:
            return None
        # a vendor may name a relative folder (export\\2026\\plan.pdf): its base name is looked up in the bundle;
        # a path climbing out (..) or absolute is refused, and the base name must be a plain one
        base = PureWindowsPath(name).name
        problem = name_problem(name) if ".." in name or PureWindowsPath(name).anchor else name_problem(base)
        if problem is not None:
            self.problem(field_name, NAME_RULE, f"the file name {name!r:.120} {problem}; the sidecar must name a "
                         "file of its bundle")
            return None
        unseen = check_text(base, field=field_name)  # bidi, zero-width, U+FFFD: Pastell is sent this name
        if unseen:
            self.problem(field_name, NAME_RULE, f"the file name {name!r:.120}: {unseen[0].message}")
            return None
        path = files.get(name)
        if path is None:
            path = next((p for n, p in files.items() if PureWindowsPath(n).name == base), None)
        if path is None:
            known = ", ".join(sorted(files)) or "none"
            self.problem(field_name, "file-present", f"{name!r} is named by the sidecar but is not in the "
                         f"bundle (files: {known})")
            return None
        return ActFile(source_name=name, path=path, type_code=type_code)
