"""DECP out: a canonical contract → its données essentielles, XML (DECP 2.0.2) or JSON (2.0.3).

:func:`check_contract` raises one `ValidationFailed` (a `DocumentError`) listing every rule
a :class:`~transformers.decp_model.CanonicalContract` breaks, each naming the sidecar, the
field as DECP names it (``titulaires[0].id``) and the rule.  :func:`build_xml` and
:func:`build_json` run it, then build one ``<marches>`` document holding the one contract and
validate it: XML against Hent's ``schemas/decp/hent-decp.xsd`` (the official structure,
restricted) and the official ``schema_decp_v2.0.2.xsd``, JSON against the official
``schema_decp_v2.0.3.json``.  A contract that passes the checks and then fails a schema is a
bug of Hent: it is reported with rule ``decp-xsd`` (``decp-json-schema``) and the element.

Rules (field): kind choice; required, not-applicable (a field of the other kind);
siret-format (acheteur, autoriteConcedante, every SIRET holder); id-length (id,
idAccordCadre: 1..16 characters); objet-length (over 1,000 characters); cpv-format
(``[0-9]{8}(-[0-9])?``); choice (every enumeration); duplicate (a list the JSON schema
wants unique); duree-min, offres-min (≥ 1); montant-min (montant, valeurGlobale and their
modifications ≥ 1, missing included; montantSubventionPublique ≥ 0); rate-range
(tauxAvance, origineUE, origineFrance in 0..1); origine-order (origineFrance ≤ origineUE);
avance-consistency (a rate without an advance); decimal (not a finite number);
decimal-digits (more than 15 significant digits: not exact as a JSON number);
publication-date (published before notification/signature); modification-id-min,
modification-id-unique, modification-order, modification-date (before the contract's
notification or signature); acte-id-unique, sous-traitance-unknown; and in every text (objet,
identifiers, lieuExecution's code, each list item) what :func:`transformers.text_policy.check_text`
refuses in any document: xml-char, control-char (DEL, C1), lone-surrogate, replacement-char (U+FFFD:
the source's encoding was wrong), bidi-control, zero-width.  DECP is UTF-8: latin-1 does not apply.

The CPV check digit is not checked, only the pattern: the algorithm documented with the
2008 CPV does not give the check digits published in it, as the Publications Office
acknowledges (OP-TED/ePO discussion #589, 2024), so no check can be stated with a source.

:func:`contracts_from_xml` reads a DECP 2 XML document back into contracts (leniently: any
order, ``oui``/``non`` booleans), for tests and for the reference examples.
"""

from __future__ import annotations

__all__ = [
    "CHOICES",
    "SCHEMA_DIR",
    "DecpValidator",
    "build_json",
    "build_xml",
    "check_contract",
    "contract_problems",
    "contracts_from_xml",
    "default_validator",
    "file_name",
]

import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, cast, get_args, get_origin, get_type_hints

import jsonschema
from lxml import etree

from bus.errors import ConfigError, DocumentError, Problem, ValidationFailed
from bus.registry import suggest

from . import safe_xml
from .decp_model import (
    CONCESSION,
    KINDS,
    MARCHE,
    ActeSousTraitance,
    CanonicalContract,
    Kind,
    Modification,
    ModificationSousTraitance,
    Titulaire,
    schema_fields,
)
from .safe_xml import XmlRefused
from .text_policy import check_text

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas" / "decp"
HENT_XSD = "hent-decp.xsd"
OFFICIAL_XSD = "schema_decp_v2.0.2.xsd"
JSON_SCHEMA = "schema_decp_v2.0.3.json"

SIRET = re.compile(r"[0-9]{14}")
CPV = re.compile(r"[0-9]{8}(-[0-9])?")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

_IDENTIFIANTS = ("SIRET", "TVA", "TAHITI", "RIDET", "FRWF", "IREP", "HORS-UE")
_ENVIRONNEMENT = ("Clause environnementale", "Critère environnemental", "Pas de considération environnementale")
#: per kind, each enumerated field (a list's items included) and its values, as the schemas spell them
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    MARCHE: {
        "nature": ("Marché", "Marché de partenariat", "Marché de défense ou de sécurité"),
        "procedure": ("Procédure adaptée", "Appel d'offres ouvert", "Appel d'offres restreint",
                      "Procédure avec négociation", "Marché passé sans publicité ni mise en concurrence préalable",
                      "Dialogue compétitif"),
        "typeCode": ("Code postal", "Code commune", "Code arrondissement", "Code canton", "Code département",
                     "Code région", "Code pays"),
        "formePrix": ("Unitaire", "Forfaitaire", "Mixte"),
        "typesPrix": ("Définitif ferme", "Définitif actualisable", "Définitif révisable", "Provisoire"),
        "techniques": ("Accord-cadre", "Concours", "Système de qualification", "Système d'acquisition dynamique",
                       "Catalogue électronique", "Enchère électronique", "Sans objet"),
        "modalitesExecution": ("Tranches", "Bons de commande", "Marchés subséquents", "Sans objet"),
        "considerationsSociales": ("Clause sociale", "Critère social", "Marché réservé",
                                   "Pas de considération sociale"),
        "considerationsEnvironnementales": _ENVIRONNEMENT,
        "ccag": ("Travaux", "Maitrise d'œuvre", "Fournitures courantes et services", "Marchés industriels",
                 "Prestations intellectuelles", "Techniques de l'information et de la communication", "Pas de CCAG"),
        "typeGroupementOperateurs": ("Conjoint", "Solidaire", "Pas de groupement"),
        "typeIdentifiant": _IDENTIFIANTS,
        "variationPrix": ("Ferme", "Actualisable", "Révisable"),
    },
    CONCESSION: {
        "nature": ("Concession de travaux", "Concession de service", "Concession de service public",
                   "Délégation de service public"),
        "procedure": ("Procédure négociée ouverte", "Procédure non négociée ouverte",
                      "Procédure négociée restreinte", "Procédure non négociée restreinte"),
        "considerationsSociales": ("Clause sociale", "Critère social", "Concession réservée",
                                   "Pas de considération sociale"),
        "considerationsEnvironnementales": _ENVIRONNEMENT,
        "typeIdentifiant": _IDENTIFIANTS,
    },
}
_BUYERS = ("acheteur", "autoriteConcedante")
_NOT_DECP = ("kind", "sidecar", "extra")
_AT_LEAST_ONE = {"montant": 1, "valeurGlobale": 1, "montantSubventionPublique": 0}
_RATES = ("tauxAvance", "origineUE", "origineFrance")
_REQUIRED_RULE = {"titulaires": "titulaire-required", "concessionnaires": "concessionnaire-required",
                  "montant": "montant-min", "valeurGlobale": "montant-min", "montantSubventionPublique": "montant-min"}
#: a list's item element: the same in XML and JSON, but for the subcontracting modifications
_ITEM = {"titulaires": "titulaire", "concessionnaires": "concessionnaire", "modifications": "modification",
         "actesSousTraitance": "acteSousTraitance", "typesPrix": "typePrix", "techniques": "technique",
         "modalitesExecution": "modaliteExecution", "considerationsSociales": "considerationSociale",
         "considerationsEnvironnementales": "considerationEnvironnementale",
         "modificationsActesSousTraitance": "modificationActesSousTraitance"}
_JSON_ITEM = {**_ITEM, "modificationsActesSousTraitance": "modificationActeSousTraitance"}

_Bad = Callable[[bool, str, str, str], None]


# -- the rules -----------------------------------------------------------------------------

def check_contract(contract: CanonicalContract) -> None:
    """Raise one ValidationFailed listing every rule the contract breaks (see the module docstring)."""
    problems = contract_problems(contract)
    if problems:
        raise ValidationFailed(
            f"{len(problems)} problem(s) in contract {contract.id}", problems=problems, path=contract.sidecar,
            field=problems[0].field, rule=problems[0].rule,
        )


def contract_problems(contract: CanonicalContract) -> list[Problem]:
    """Every rule the contract breaks, each a Problem naming the sidecar, the field and the rule."""
    problems: list[Problem] = []

    def bad(ok: bool, field: str, rule: str, message: str) -> None:
        if not ok:
            problems.append(Problem(message, file=contract.sidecar, field=field, rule=rule))

    kind = contract.kind
    if kind not in KINDS:
        bad(False, "kind", "choice", f"kind {kind!r} must be marche or contrat-concession{suggest(kind, KINDS)}")
        return problems
    _check_object(contract, kind, "", bad)
    _check_dates(contract, bad)
    if contract.tauxAvance is not None and contract.attributionAvance is False and _finite(contract.tauxAvance):
        bad(contract.tauxAvance == 0, "tauxAvance", "avance-consistency",
            f"tauxAvance is {contract.tauxAvance} but attributionAvance says no advance was granted")
    ue, france = contract.origineUE, contract.origineFrance
    if ue is not None and france is not None and _finite(ue) and _finite(france):
        bad(france <= ue, "origineFrance", "origine-order",
            f"origineFrance ({france}) cannot exceed origineUE ({ue}): French products are European")
    _check_ids(contract.modifications, "modifications", "modification", bad)
    _check_ids(contract.actesSousTraitance, "actesSousTraitance", "acte", bad)
    known = {acte.id for acte in contract.actesSousTraitance}
    for index, change in enumerate(contract.modificationsActesSousTraitance):
        bad(change.id in known, f"modificationsActesSousTraitance[{index}].id", "sous-traitance-unknown",
            f"no acteSousTraitance has id {change.id} (known: {', '.join(map(str, sorted(known))) or 'none'})")
    return problems


def _check_object(obj: Any, kind: str, prefix: str, bad: _Bad) -> None:
    """Presence, applicability and value of each field of ``obj``, then of its nested objects."""
    table = schema_fields(type(obj), kind)
    others = [spec.name for spec in fields(obj) if spec.name not in table and spec.name not in _NOT_DECP]
    for name in [*table, *others]:  # in the schema's order, then those of the other kind
        value = getattr(obj, name)
        where = f"{prefix}{name}"
        present = _is_set(value)
        if name not in table:
            what = "a contrat-concession" if kind == MARCHE else "a marché"
            bad(not present, where, "not-applicable", f"{name} applies to {what} only; this is a {kind}")
        elif not present:
            rule = _REQUIRED_RULE.get(name, "required")
            bad(not table[name], where, rule, f"{name} is required for a {kind}" + (
                f" (at least one {_ITEM[name]})" if name in _ITEM else ""))
        else:
            _check_value(name, value, kind, where, bad)


def _check_value(name: str, value: Any, kind: str, where: str, bad: _Bad) -> None:
    choices = CHOICES[kind].get(name)
    if isinstance(value, tuple):
        for index, item in enumerate(value):
            _check_value(name, item, kind, f"{where}[{index}]", bad)
        if not isinstance(value[0], Modification | ActeSousTraitance | ModificationSousTraitance):  # ids: apart
            twice = sorted({_label(item) for item in value if value.count(item) > 1})
            bad(not twice, where, "duplicate", f"{name} lists the same value twice: {', '.join(twice)}")
        return
    if is_dataclass(value):
        _check_object(value, kind, f"{where}.", bad)
        if isinstance(value, Titulaire) and value.typeIdentifiant == "SIRET":
            bad(bool(SIRET.fullmatch(value.id)), f"{where}.id", "siret-format",
                f"SIRET {value.id!r} must be 14 digits")
        return
    if isinstance(value, str):
        _check_text(name, value, choices, where, bad)
    elif isinstance(value, Decimal):
        _check_decimal(name, value, where, bad)
    elif isinstance(value, int) and not isinstance(value, bool) and name in ("dureeMois", "offresRecues"):
        rule = "duree-min" if name == "dureeMois" else "offres-min"
        bad(value >= 1, where, rule, f"{name} is {value}; it must be at least 1")


def _check_text(name: str, value: str, choices: tuple[str, ...] | None, where: str, bad: _Bad) -> None:
    for problem in check_text(value, field=where):  # controls, lone surrogates, U+FFFD, bidi, zero-width
        bad(False, where, problem.rule or "xml-char", problem.message)
    if choices is not None:
        bad(value in choices, where, "choice",
            f"{value!r} is not one of: {', '.join(choices)}{suggest(value, choices)}")
    elif name in _BUYERS:
        bad(bool(SIRET.fullmatch(value)), where, "siret-format", f"SIRET {value!r} must be 14 digits")
    elif name in ("id", "idAccordCadre") and "." not in where:
        bad(len(value) <= 16, where, "id-length", f"{name} has {len(value)} characters; 1 to 16 are allowed")
    elif name == "objet":
        bad(len(value) <= 1000, where, "objet-length", f"objet has {len(value)} characters; at most 1000")
    elif name == "codeCPV":
        bad(bool(CPV.fullmatch(value)), where, "cpv-format",
            f"CPV code {value!r} must be 8 digits, optionally a dash and the check digit (45233140-2)")


def _is_set(value: Any) -> bool:
    """Whether a field has a value: None, () and a blank text have none (and are not written)."""
    return value is not None and value != () and not (isinstance(value, str) and not value.strip())


def _label(item: Any) -> str:
    return f"{item.typeIdentifiant} {item.id}" if isinstance(item, Titulaire) else str(item)


def _finite(value: Decimal) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def _check_decimal(name: str, value: Decimal, where: str, bad: _Bad) -> None:
    if not _finite(value):
        bad(False, where, "decimal", f"{name} is {value}, not a number")
        return
    exact = value == value.to_integral_value() or len(value.normalize().as_tuple().digits) <= 15
    bad(exact, where, "decimal-digits", f"{name} {value} has more than 15 significant digits")
    if name in _RATES:
        bad(0 <= value <= 1, where, "rate-range", f"{name} is {value}; a share is between 0 and 1 (0.1 = 10 %)")
    elif name in _AT_LEAST_ONE:
        least = _AT_LEAST_ONE[name]
        bad(value >= least, where, "montant-min", f"{name} is {value}; it must be at least {least}")


def _check_dates(contract: CanonicalContract, bad: _Bad) -> None:
    start = contract.dateSignature if contract.kind == CONCESSION else contract.dateNotification
    event = "dateSignature" if contract.kind == CONCESSION else "dateNotification"
    if start is not None:
        bad(contract.datePublicationDonnees >= start, "datePublicationDonnees", "publication-date",
            f"datePublicationDonnees {contract.datePublicationDonnees} is before {event} {start}")
    for index, change in enumerate(contract.modifications):
        where = f"modifications[{index}]"
        name = "dateSignatureModification" if contract.kind == CONCESSION else "dateNotificationModification"
        signed = getattr(change, name)
        if signed is None:
            continue
        if start is not None:
            bad(signed >= start, f"{where}.{name}", "modification-date",
                f"the modification's {name} {signed} is before the contract's {event} {start}")
        bad(change.datePublicationDonneesModification >= signed, f"{where}.datePublicationDonneesModification",
            "publication-date", f"published {change.datePublicationDonneesModification}, before its {name} {signed}")
    for index, acte in enumerate(contract.actesSousTraitance):
        bad(acte.datePublicationDonnees >= acte.dateNotification, f"actesSousTraitance[{index}].datePublicationDonnees",
            "publication-date", f"published {acte.datePublicationDonnees}, before its notification "
            f"{acte.dateNotification}")


def _check_ids(items: tuple[Any, ...], name: str, rule: str, bad: _Bad) -> None:
    """Ids from 1, unique, increasing in the order of the list (the order of notification)."""
    previous = 0
    for index, item in enumerate(items):
        where = f"{name}[{index}].id"
        if item.id < 1:
            bad(False, where, f"{rule}-id-min", f"id {item.id}; ids start at 1")
        elif item.id in (other.id for other in items[:index]):
            bad(False, where, f"{rule}-id-unique", f"id {item.id} is used twice in {name}")
        elif rule == "modification":
            bad(item.id > previous, where, "modification-order",
                f"id {item.id} after id {previous}: modifications are numbered in the order they were notified")
        previous = max(previous, item.id)


# -- XML and JSON --------------------------------------------------------------------------

def build_xml(contract: CanonicalContract, *, validator: DecpValidator | None = None) -> bytes:
    """The contract's DECP 2.0.2 XML (UTF-8), checked and valid against Hent's and the official XSD."""
    check_contract(contract)
    root = etree.Element("marches")
    _xml_object(etree.SubElement(root, contract.kind), contract, contract.kind)
    body = _DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)
    _raise_if((validator or default_validator()).validate_xml(body, file_name(contract, "xml")), contract)
    return body


def build_json(contract: CanonicalContract, *, validator: DecpValidator | None = None) -> bytes:
    """The contract's DECP JSON (UTF-8), checked and valid against the official 2.0.3 JSON schema."""
    check_contract(contract)
    document = {"marches": {contract.kind: [_json_object(contract, contract.kind)]}}
    body = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
    _raise_if((validator or default_validator()).validate_json(body, file_name(contract, "json")), contract)
    return body


def _raise_if(problems: list[Problem], contract: CanonicalContract) -> None:
    if problems:
        raise ValidationFailed(
            f"{len(problems)} schema problem(s) in the DECP of contract {contract.id}: a bug of Hent, "
            "please report it with the contract", problems=problems, path=problems[0].file,
            field=problems[0].field, rule=problems[0].rule,
        )


def _present(obj: Any, kind: str) -> list[tuple[str, Any]]:
    """(name, value) of the fields of ``obj`` that apply to ``kind`` and are set, in the schema's order."""
    pairs = ((name, getattr(obj, name)) for name in schema_fields(type(obj), kind))
    return [(name, value) for name, value in pairs if _is_set(value)]


def _xml_object(parent: etree._Element, obj: Any, kind: str) -> None:
    for name, value in _present(obj, kind):
        if name in _BUYERS:
            etree.SubElement(etree.SubElement(parent, name), "id").text = value
        elif isinstance(value, tuple):
            wrapper = etree.SubElement(parent, name)
            for item in value:
                element = etree.SubElement(wrapper, _ITEM[name])
                if is_dataclass(item):
                    _xml_object(element, item, kind)
                else:
                    element.text = item
        elif is_dataclass(value):
            _xml_object(etree.SubElement(parent, name), value, kind)
        else:
            etree.SubElement(parent, name).text = _xml_text(value)


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _json_object(obj: Any, kind: str) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in _present(obj, kind):
        if name in _BUYERS:
            document[name] = {"id": value}
        elif isinstance(value, tuple) and is_dataclass(value[0]):
            document[name] = [{_JSON_ITEM[name]: _json_object(item, kind)} for item in value]
        elif isinstance(value, tuple):
            document[name] = {_JSON_ITEM[name]: list(value)}
        elif is_dataclass(value):
            document[name] = _json_object(value, kind)
        elif isinstance(value, Decimal):
            document[name] = int(value) if value == value.to_integral_value() else float(value)
        elif isinstance(value, date):
            document[name] = value.isoformat()
        else:
            document[name] = value
    return document


def file_name(contract: CanonicalContract, fmt: str) -> str:
    """``DECP_<siret>_<id>_<modification>.xml`` or ``.json``, in safe characters only.

    An id with other characters than letters, digits, ``_``, ``.`` and ``-`` has them replaced
    by ``-`` and gets 8 hex digits of its sha256, so that two ids never share a name.
    """
    if fmt not in ("xml", "json"):
        raise ValueError(f"fmt is xml or json, not {fmt!r}")
    return f"DECP_{_safe(contract.siret)}_{_safe(contract.id)}_{contract.modification_id}.{fmt}"


def _safe(text: str) -> str:
    if _SAFE_NAME.fullmatch(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}" if cleaned else digest


# -- validation ----------------------------------------------------------------------------

class DecpValidator:
    """Hent's and the official DECP schemas, compiled once; validates built XML and JSON."""

    def __init__(self, schema_dir: Path | None = None) -> None:
        folder = schema_dir or SCHEMA_DIR
        self._xsd = [(name, self._compile(folder / name)) for name in (HENT_XSD, OFFICIAL_XSD)]
        path = folder / JSON_SCHEMA
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.Draft7Validator.check_schema(schema)
        except (OSError, ValueError, jsonschema.SchemaError) as exc:
            raise ConfigError(f"cannot read the DECP JSON schema: {exc}", path=str(path),
                              rule="schema-compiles") from exc
        self._json = jsonschema.Draft7Validator(schema)
        self._lock = threading.Lock()

    @staticmethod
    def _compile(path: Path) -> etree.XMLSchema:
        parser = etree.XMLParser(resolve_entities=False, no_network=True)
        try:
            return etree.XMLSchema(etree.parse(str(path), parser))
        except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
            raise ConfigError(f"cannot compile the DECP schema: {exc}", path=str(path),
                              rule="schema-compiles") from exc

    def validate_xml(self, data: bytes, name: str) -> list[Problem]:
        """Problems of a DECP XML document against both XSDs (each error: schema, element, rule decp-xsd)."""
        try:
            document = safe_xml.parse(data, name=name).getroottree()
        except XmlRefused as exc:
            return list(exc.problems)
        problems = []
        for schema_name, schema in self._xsd:
            with self._lock:
                schema.validate(document)
                errors = list(schema.error_log)
            problems += [Problem(f"{schema_name}: {e.message}", file=name, line=e.line, field=e.path or None,
                                 rule="decp-xsd") for e in errors]
        return problems

    def validate_json(self, data: bytes, name: str) -> list[Problem]:
        """Problems of a DECP JSON document against the official JSON schema (rule decp-json-schema)."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            return [Problem(f"not valid JSON: {exc}", file=name, rule="json-syntax")]
        errors = sorted(self._json.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        return [Problem(f"{JSON_SCHEMA}: {e.message}", file=name,
                        field="/".join(map(str, e.absolute_path)) or None, rule="decp-json-schema") for e in errors]


@lru_cache(maxsize=1)
def default_validator() -> DecpValidator:
    """One shared validator with the project's schemas."""
    return DecpValidator()


# -- reading DECP XML back -----------------------------------------------------------------

_TRUE = ("oui", "true", "1")


def contracts_from_xml(data: bytes, name: str) -> list[CanonicalContract]:
    """The contracts of a DECP 2 ``<marches>`` document, read leniently; DocumentError (rule decp-read)."""
    root = safe_xml.parse(data, name=name)
    contracts = []
    for element in root:
        if element.tag in KINDS:
            kind = cast(Kind, element.tag)
            contracts.append(_read_object(CanonicalContract, element, kind, name, {"kind": kind, "sidecar": name}))
    return contracts


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _read_object(cls: type, element: etree._Element, kind: str, name: str,
                 given: dict[str, Any] | None = None) -> Any:
    values: dict[str, Any] = dict(given or {})
    for field_name in schema_fields(cls, kind):
        child = element.find(field_name)
        if child is None:
            continue
        hint = _hints(cls)[field_name]
        if field_name in _BUYERS:
            values[field_name] = (child.findtext("id") or "").strip()
        elif get_origin(hint) is tuple:
            item_type: type = get_args(hint)[0]
            values[field_name] = tuple(
                _read_object(item_type, item, kind, name) if is_dataclass(item_type) else (item.text or "").strip()
                for item in child.findall(_ITEM[field_name]))
        else:
            values[field_name] = _read_scalar(hint, child, kind, name)
    try:
        return cls(**values)
    except TypeError as exc:
        raise DocumentError(f"{element.tag} lacks a required element: {exc}", path=name,
                            field=element.getroottree().getpath(element), rule="decp-read") from exc


def _read_scalar(hint: Any, child: etree._Element, kind: str, name: str) -> Any:
    target = next((t for t in get_args(hint) or (hint,) if t is not type(None)), hint)
    if isinstance(target, type) and is_dataclass(target):
        return _read_object(target, child, kind, name)
    text = (child.text or "").strip()
    try:
        if not text:
            return None
        if target is bool:
            return text.lower() in _TRUE
        if target is int:
            return int(text)
        if target is Decimal:
            return Decimal(text)
        if target is date:
            return date.fromisoformat(text)
    except (ValueError, InvalidOperation) as exc:
        raise DocumentError(f"{child.tag} {text!r} cannot be read: {exc}", path=name,
                            field=child.getroottree().getpath(child), rule="decp-read") from exc
    return text
