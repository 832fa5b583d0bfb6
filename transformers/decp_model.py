"""The canonical contract: what a vendor's contract data is mapped to before it becomes a DECP.

One :class:`CanonicalContract` is one *marché* or one *contrat de concession* of the
données essentielles de la commande publique, version 2 (standards.md §3.2).  Its field
names are DECP's own (``codeCPV``, ``dureeMois``, ``titulaires``...), so that a reader can
check them against the schema and every error names the field as the schema does
(``titulaires[0].id``).  The two kinds share one class: :data:`CONTRACT_FIELDS` says, per
kind, which fields apply — in the schema's order — and which the schema requires;
:data:`MODIFICATION_FIELDS` and :data:`ITEM_FIELDS` say the same of the nested objects.

:func:`contract_to_json` and :func:`contract_from_json` store a contract as JSON
(``hent-canonical-contract/1``: dates ISO, decimals as strings); the round trip is exact.
"""

from __future__ import annotations

__all__ = [
    "CONCESSION",
    "CONTRACT_FIELDS",
    "FORMAT",
    "ITEM_FIELDS",
    "KINDS",
    "MARCHE",
    "MODIFICATION_FIELDS",
    "ActeSousTraitance",
    "CanonicalContract",
    "Kind",
    "LieuExecution",
    "Modification",
    "ModificationSousTraitance",
    "Titulaire",
    "contract_from_json",
    "contract_to_json",
    "decp_key",
    "schema_fields",
]

import types
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from bus.errors import DocumentError

FORMAT = "hent-canonical-contract/1"
Kind = Literal["marche", "contrat-concession"]
MARCHE: Kind = "marche"
CONCESSION: Kind = "contrat-concession"
KINDS: tuple[Kind, ...] = (MARCHE, CONCESSION)


@dataclass(frozen=True)
class Titulaire:
    """A holder (titulaire), concessionnaire or sous-traitant: typeIdentifiant (SIRET, TVA...) and id."""

    typeIdentifiant: str
    id: str


@dataclass(frozen=True)
class LieuExecution:
    """lieuExecution: the place's code and the kind of code (typeCode: Code postal, Code commune...)."""

    code: str
    typeCode: str


@dataclass(frozen=True, kw_only=True)
class Modification:
    """One modification published after the initial data (marché or contrat-concession).

    A marché's modification has dateNotificationModification, and may change dureeMois,
    montant and titulaires; a contrat-concession's has dateSignatureModification, and may
    change dureeMois and valeurGlobale.
    """

    id: int  #: ≥ 1, unique and increasing within the contract
    datePublicationDonneesModification: date
    dateNotificationModification: date | None = None
    dateSignatureModification: date | None = None
    dureeMois: int | None = None
    montant: Decimal | None = None
    valeurGlobale: Decimal | None = None
    titulaires: tuple[Titulaire, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ActeSousTraitance:
    """acteSousTraitance: a subcontracting act notified by the buyer."""

    id: int
    sousTraitant: Titulaire
    dureeMois: int
    dateNotification: date
    montant: Decimal
    variationPrix: str  #: Ferme | Actualisable | Révisable
    datePublicationDonnees: date


@dataclass(frozen=True, kw_only=True)
class ModificationSousTraitance:
    """modificationActesSousTraitance: a change to a subcontracting act (its id)."""

    id: int
    dateNotificationModificationSousTraitance: date
    datePublicationDonnees: date
    dureeMois: int | None = None
    montant: Decimal | None = None


@dataclass(frozen=True, kw_only=True)
class CanonicalContract:
    """A marché or a contrat-concession as DECP 2 describes it; see :data:`CONTRACT_FIELDS`."""

    kind: Kind = MARCHE
    id: str  #: 1 to 16 characters, the buyer's own number
    nature: str
    objet: str
    procedure: str
    dureeMois: int
    datePublicationDonnees: date  #: first publication; unchanged by modifications
    considerationsSociales: tuple[str, ...] = ()
    considerationsEnvironnementales: tuple[str, ...] = ()
    modifications: tuple[Modification, ...] = ()
    # -- marché
    acheteur: str | None = None  #: acheteur/id, the buyer's SIRET
    codeCPV: str | None = None
    lieuExecution: LieuExecution | None = None
    dateNotification: date | None = None
    montant: Decimal | None = None  #: HT, forfaitaire ou estimé maximum
    formePrix: str | None = None
    typesPrix: tuple[str, ...] = ()
    titulaires: tuple[Titulaire, ...] = ()
    techniques: tuple[str, ...] = ()
    modalitesExecution: tuple[str, ...] = ()
    idAccordCadre: str | None = None
    marcheInnovant: bool | None = None
    ccag: str | None = None
    offresRecues: int | None = None
    attributionAvance: bool | None = None
    tauxAvance: Decimal | None = None  #: 0..1 (0.1 = 10 %)
    typeGroupementOperateurs: str | None = None
    origineUE: Decimal | None = None  #: 0..1
    origineFrance: Decimal | None = None  #: 0..1, at most origineUE
    sousTraitanceDeclaree: bool | None = None
    actesSousTraitance: tuple[ActeSousTraitance, ...] = ()
    modificationsActesSousTraitance: tuple[ModificationSousTraitance, ...] = ()
    # -- contrat-concession
    autoriteConcedante: str | None = None  #: autoriteConcedante/id, the SIRET
    dateSignature: date | None = None
    dateDebutExecution: date | None = None
    valeurGlobale: Decimal | None = None
    montantSubventionPublique: Decimal | None = None
    concessionnaires: tuple[Titulaire, ...] = ()
    # -- where it came from
    sidecar: str | None = field(default=None, compare=False)  #: the vendor file it was read from
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def siret(self) -> str:
        """The buyer's SIRET: acheteur (marché) or autoriteConcedante (contrat-concession)."""
        return (self.autoriteConcedante if self.kind == CONCESSION else self.acheteur) or ""

    @property
    def siren(self) -> str:
        """The buyer's SIREN: the SIRET's first 9 digits."""
        return self.siret[:9]

    @property
    def amount(self) -> Decimal | None:
        """The initial amount € HT: montant (marché) or valeurGlobale (contrat-concession)."""
        return self.valeurGlobale if self.kind == CONCESSION else self.montant

    @property
    def modification_id(self) -> int:
        """The latest modification's id; 0 for the initial data."""
        return max((m.id for m in self.modifications), default=0)

    @property
    def idempotency_key(self) -> str:
        """Buyer SIRET + contract id + modification id: each publication is sent once.

        The id is only unique for one buyer ("numéro d'ordre interne propre à l'acheteur"),
        so the SIRET is part of the key: two communes may both have a contract 2026-0042.
        """
        return decp_key(self.siret, self.id, self.modification_id)


def decp_key(siret: str, contract_id: str, modification_id: int) -> str:
    """The idempotency key of one publication: ``decp:<buyer SIRET>:<contract id>:<modification id>``."""
    return f"decp:{siret}:{contract_id}:{modification_id}"


#: per kind, the fields of CanonicalContract that apply, in the XSD's order, and whether required
CONTRACT_FIELDS: dict[str, dict[str, bool]] = {
    MARCHE: {
        "id": True, "acheteur": True, "nature": True, "objet": True, "codeCPV": True, "procedure": True,
        "lieuExecution": True, "dureeMois": True, "dateNotification": True, "datePublicationDonnees": True,
        "montant": True, "formePrix": True, "titulaires": True, "considerationsSociales": True,
        "considerationsEnvironnementales": True, "techniques": True, "modalitesExecution": True,
        "idAccordCadre": False, "typesPrix": True, "marcheInnovant": True, "ccag": True, "offresRecues": True,
        "attributionAvance": True, "tauxAvance": False, "typeGroupementOperateurs": True, "origineUE": False,
        "origineFrance": False, "sousTraitanceDeclaree": True, "actesSousTraitance": False,
        "modificationsActesSousTraitance": False, "modifications": False,
    },
    CONCESSION: {
        "id": True, "autoriteConcedante": True, "nature": True, "objet": True, "procedure": True,
        "dureeMois": True, "dateSignature": True, "datePublicationDonnees": True, "dateDebutExecution": True,
        "valeurGlobale": True, "montantSubventionPublique": True, "concessionnaires": True,
        "considerationsSociales": True, "considerationsEnvironnementales": True, "modifications": False,
    },
}
#: per kind, the fields of a Modification that apply, in the XSD's order, and whether required
MODIFICATION_FIELDS: dict[str, dict[str, bool]] = {
    MARCHE: {"id": True, "titulaires": False, "dateNotificationModification": True,
             "datePublicationDonneesModification": True, "dureeMois": False, "montant": False},
    CONCESSION: {"id": True, "dateSignatureModification": True, "datePublicationDonneesModification": True,
                 "dureeMois": False, "valeurGlobale": False},
}
#: the other nested objects' fields, in the XSD's order, and whether required
ITEM_FIELDS: dict[type, dict[str, bool]] = {
    Titulaire: {"typeIdentifiant": True, "id": True},
    LieuExecution: {"code": True, "typeCode": True},
    ActeSousTraitance: {"id": True, "sousTraitant": True, "dureeMois": True, "dateNotification": True,
                        "montant": True, "variationPrix": True, "datePublicationDonnees": True},
    ModificationSousTraitance: {"id": True, "dureeMois": False, "dateNotificationModificationSousTraitance": True,
                                "montant": False, "datePublicationDonnees": True},
}


def schema_fields(cls: type, kind: str) -> dict[str, bool]:
    """The fields of ``cls`` (CanonicalContract or a nested class) that apply to ``kind``, in order."""
    if cls is CanonicalContract:
        return CONTRACT_FIELDS[kind]
    if cls is Modification:
        return MODIFICATION_FIELDS[kind]
    return ITEM_FIELDS[cls]


# -- the canonical JSON --------------------------------------------------------------------

def contract_to_json(contract: CanonicalContract) -> dict[str, Any]:
    """The contract as JSON-ready data: every field, dates ISO, decimals as strings."""
    encoded: dict[str, Any] = _encode(contract)
    return {"format": FORMAT, **encoded}


def contract_from_json(data: dict[str, Any]) -> CanonicalContract:
    """The contract :func:`contract_to_json` wrote; DocumentError (rule canonical-json) if it is not one."""
    if not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DocumentError(f"not a {FORMAT} document ({found!r})", field="format", rule="canonical-json")
    body = {key: value for key, value in data.items() if key != "format"}
    contract: CanonicalContract = _decode(CanonicalContract, body, "")
    return contract


def _encode(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _encode(item) for key, item in value.items()}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _bad(where: str, message: str) -> DocumentError:
    return DocumentError(f"{where or 'contract'}: {message}", field=where or None, rule="canonical-json")


def _decode(hint: Any, value: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
        origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            raise _bad(where, f"{value!r} is not one of {', '.join(get_args(hint))}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise _bad(where, f"expected a list, found {value!r}")
        return tuple(_decode(get_args(hint)[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _bad(where, "expected an object of texts")
        return {str(key): item for key, item in value.items()}
    if isinstance(hint, type) and is_dataclass(hint):
        return _decode_object(hint, value, where)
    return _decode_scalar(hint, value, where)


def _decode_object(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise _bad(where, f"expected an object, found {value!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise _bad(where, f"unknown field(s) {', '.join(unknown)}")
    prefix = f"{where}." if where else ""
    missing = [name for name, f in known.items()
               if name not in value and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise _bad(where, f"missing field(s) {', '.join(missing)}")
    hints = _hints(cls)
    return cls(**{name: _decode(hints[name], item, prefix + name) for name, item in value.items()})


def _decode_scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is Decimal and isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
    elif hint is date and isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    elif hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif hint in (str, bool) and isinstance(value, hint):
        return value
    raise _bad(where, f"{value!r} is not a {getattr(hint, '__name__', hint)}")
