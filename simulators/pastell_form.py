"""The flows as the Pastell simulator knows them: fields, rules, documents, their JSON.

``actes-generique`` (:class:`PastellDocument`) follows Pastell's ``module/actes-generique/definition.yml``
(standards.md §4.1): the fields a client fills (PATCH, file upload, externalData), the rule
each must meet before ``send-tdt`` (``numero_de_lacte`` ``^[0-9A-Z_]{2,15}$``, ``objet`` 1..499
characters without a line break...), the actions possible from each state, and the JSON shapes
of the OpenAPI description (``Document``: ``info``, ``data`` of strings, ``action_possible``,
``last_action``).  ``actes-reponse-prefecture`` (:class:`ResponseDocument`) follows
``module/actes-reponse-prefecture/definition.yml``: one document per message of the préfecture,
its read-only fields set by the TdT, the answer's fields (``reponse``,
``reponse_pj_demande_piece_complementaire``, ``refus_reponse``, the typology
``type_piece_<libellé>``) and its actions (``repondre``, ``send-reponse-prefecture``,
``verif-reponse-tdt``, ``termine``).
"""

from __future__ import annotations

__all__ = [
    "ACTES_FORM", "EDITABLE_FROM", "FLOW", "IN_TDT", "LIBELLES", "REPONSE_FLOW", "REPONSE_FORM", "TYPE_REPONSE",
    "Entity", "FieldRule", "PastellDocument", "PastellError", "ResponseDocument", "StoredFile", "now",
]

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar

from transformers.actes_model import NATURES

FLOW = "actes-generique"
REPONSE_FLOW = "actes-reponse-prefecture"
#: follow-up code of the préfecture → the type_reponse of the document Pastell files it as
TYPE_REPONSE = {"2-1": "2", "3-1": "3", "4-1": "4", "5-1": "5"}
#: type_reponse → Pastell's name for that kind of message (in field names)
LIBELLES = {"2": "courrier_simple", "3": "demande_piece_complementaire", "4": "lettre_observation",
            "5": "defere_tribunal_administratif"}
#: the last actions after which the document may be modified (and filled again)
EDITABLE_FROM = ("creation", "modification", "send-tdt-erreur")
#: handed to the TdT, the ministry's answer not yet collected
IN_TDT = ("send-tdt", "verif-tdt")


class PastellError(Exception):
    """A refusal, as Pastell words it, with its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FieldRule:
    """One field of the form: its label, kind and the rule Pastell checks before ``send-tdt``."""

    label: str
    kind: str = "text"  #: text, select, date, checkbox, file, external
    required: bool = False
    pattern: str | None = None
    pattern_error: str = ""
    values: tuple[str, ...] = ()
    multiple: bool = False


#: the fields of actes-generique a client fills, in form order
ACTES_FORM: dict[str, FieldRule] = {
    "acte_nature": FieldRule("Nature de l'acte", "select", True, values=tuple(str(n) for n in NATURES)),
    "numero_de_lacte": FieldRule("Numéro de l'acte", required=True, pattern=r"^[0-9A-Z_]{2,15}$",
                                 pattern_error="Entre 2 et 15 caractères (chiffres, lettres en majuscule ou _)"),
    "objet": FieldRule("Objet", required=True, pattern=r"^[^\r\n]{1,499}$",
                       pattern_error="L'objet doit faire entre 1 et 499 charactères sans retour chariot"),
    "date_de_lacte": FieldRule("Date de l'acte", "date", True),
    "document_papier": FieldRule("Envoi de documents papiers complémentaires", "checkbox"),
    "arrete": FieldRule("Acte", "file", True),
    "autre_document_attache": FieldRule("Autre document attaché", "file", multiple=True),
    "classification": FieldRule("Classification Actes", "external", True, pattern=r"^[0-9]+(\.[0-9]+){1,4}( .*)?$",
                                pattern_error="un code de matière tel que 3.2"),
    "type_piece": FieldRule("Typologie des pièces", "external"),
    "envoi_signature": FieldRule("Transmission à la signature", "checkbox"),
    "envoi_tdt": FieldRule("Transmission au contrôle de légalité", "checkbox"),
    "envoi_ged": FieldRule("Transmission à la GED", "checkbox"),
    "envoi_sae": FieldRule("Transmission au SAE", "checkbox"),
}


#: the fields of actes-reponse-prefecture a client fills (the others are read-only: set by the TdT)
REPONSE_FORM: dict[str, FieldRule] = {
    "reponse": FieldRule("Réponse", "file", True),
    "reponse_pj_demande_piece_complementaire": FieldRule("Autres pièces complémentaire", "file", multiple=True),
    "refus_reponse": FieldRule("Cocher cette case s'il s'agit d'un refus de réponse", "checkbox"),
}
#: the last actions after which an actes-reponse-prefecture document may be modified
_REPONSE_EDITABLE = ("creation", "modification", "attente-reponse-prefecture", "erreur-verif-tdt")
_REPONSE_DELETABLE = ("creation", "modification", "termine", "fatal-error", "tdt-error", "attente-reponse-prefecture",
                      "verif-reponse-tdt")


@dataclass(frozen=True)
class Entity:
    """A collectivité in Pastell, with what its TdT connector knows of it."""

    id_e: str
    denomination: str
    siren: str
    departement: str
    arrondissement: int = 1
    nature: str = "31"


@dataclass
class StoredFile:
    name: str
    path: Path


def now() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class PastellDocument:
    """One actes-generique document: its form data, its files (by field and number), its actions."""

    flow: ClassVar[str] = FLOW
    form: ClassVar[dict[str, FieldRule]] = ACTES_FORM
    main_field: ClassVar[str] = "arrete"  #: the file the typology types first

    id_d: str
    id_e: str
    created: str
    modified: str
    data: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[StoredFile | None]] = field(default_factory=dict)
    actions: list[dict[str, str]] = field(default_factory=list)
    cancel_due: float | None = None  #: time.monotonic() from which the cancellation is acknowledged

    @property
    def last(self) -> str:
        return self.actions[-1]["action"]

    def has(self, action: str) -> bool:
        return any(a["action"] == action for a in self.actions)

    def names(self, name: str) -> list[str]:
        return [f.name for f in self.files.get(name, []) if f is not None]

    def act(self, action: str, message: str) -> None:
        self.actions.append({"action": action, "message": message, "date": now()})

    def put(self, folder: Path, name: str, file_name: str, content: bytes, num: int = 0) -> None:
        """Keep ``content`` as file ``num`` of field ``name`` (replacing what was there)."""
        where = folder / self.id_d / name
        where.mkdir(parents=True, exist_ok=True)
        path = where / str(num)
        path.write_bytes(content)
        files = self.files.setdefault(name, [])
        files.extend([None] * (num + 1 - len(files)))
        files[num] = StoredFile(Path(file_name).name, path)

    def editable(self) -> bool:
        return self.last in EDITABLE_FROM

    def typology_field(self) -> str | None:
        """The externalData field of the piece typology."""
        return "type_piece"

    def pieces(self) -> list[str]:
        """The files the typology types, in order."""
        return self.names("arrete") + self.names("autre_document_attache")

    def title(self) -> str:
        return self.data.get("objet", "")

    def why_not(self, action: str) -> str:
        """The rule that forbids ``action`` now, as Pastell names it in its refusal."""
        if self.last not in EDITABLE_FROM:
            return "last-action"
        problem = self.problem()
        return "document_is_valide" + (f" ({problem})" if problem else "")

    def problem(self) -> str | None:
        """The first reason the form is not valid, as Pastell words it (``document_is_valide``)."""
        for name, rule in ACTES_FORM.items():
            value = self.data.get(name, "")
            present = bool(self.names(name)) if rule.kind == "file" else bool(value)
            if rule.required and not present:
                return f"Le formulaire est incomplet : le champ «{rule.label}» est obligatoire."
            if not value or rule.kind == "file":
                continue
            wrong = (rule.pattern is not None and not re.fullmatch(rule.pattern, value)) or (
                rule.values and value not in rule.values) or (rule.kind == "date" and not _is_date(value))
            if wrong:
                return f"Le champ «{rule.label}» est incorrect" + (
                    f" ({rule.pattern_error})" if rule.pattern_error else f" : {value!r}")
        return None

    def possible(self) -> list[str]:
        """The actions the definition's rules allow now."""
        possible = []
        if self.last in EDITABLE_FROM:
            possible += ["modification", "supression"]
            if (not self.has("send-tdt") or self.last == "send-tdt-erreur") \
                    and self.data.get("envoi_tdt") == "1" and self.problem() is None:
                possible.append("send-tdt")
        if self.last in (*IN_TDT, "erreur-verif-tdt", "tdt-error"):
            possible.append("verif-tdt")
        if self.has("acquiter-tdt"):
            possible.append("verif-reponse-tdt")
            if not self.has("annulation-tdt"):
                possible.append("annulation-tdt")
        return possible

    def _last_action(self) -> dict[str, str]:
        last = self.actions[-1]
        return {"action": last["action"], "message": last["message"], "date": last["date"]}

    def detail(self) -> dict[str, Any]:
        """The ``Document`` JSON: every ``data`` value a string (a file field: its names, one a line)."""
        data = dict(self.data)
        for name, files in self.files.items():
            if any(files):
                data[name] = "\n".join(self.names(name))
        possible = self.possible()
        return {
            "info": {"id_d": self.id_d, "type": self.flow, "titre": self.title(), "creation": self.created,
                     "modification": self.modified},
            "data": data, "action_possible": possible, "action-possible": possible,
            "last_action": self._last_action(),
        }

    def row(self) -> dict[str, Any]:
        """A search result: flat, with ``last_action`` as an object like a document's."""
        return {"id_d": self.id_d, "id_e": self.id_e, "type": self.flow, "titre": self.title(),
                "creation": self.created, "modification": self.modified, "last_action": self._last_action(),
                "last_action_date": self.actions[-1]["date"]}


@dataclass
class ResponseDocument(PastellDocument):
    """One actes-reponse-prefecture document: a message of the préfecture, and the answer written to it."""

    flow: ClassVar[str] = REPONSE_FLOW
    form: ClassVar[dict[str, FieldRule]] = REPONSE_FORM
    main_field: ClassVar[str] = "reponse"

    id_acte: str = ""  #: the act the message is about
    letter_day: date | None = None  #: its DateCourrierPref
    answer_code: str | None = None  #: the answer sent (2-2, 3-3, 3-4, 4-3, 4-4), once sent
    answer_due: float | None = None  #: time.monotonic() from which the TdT has the ministry's answer

    @property
    def libelle(self) -> str:
        return LIBELLES.get(self.data.get("type_reponse", ""), "")

    def editable(self) -> bool:
        return self.last in _REPONSE_EDITABLE

    def typology_field(self) -> str | None:
        return f"type_piece_{self.libelle}" if self.data.get("type_reponse") in ("2", "3", "4") else None

    def pieces(self) -> list[str]:
        further = self.names("reponse_pj_demande_piece_complementaire") if self.data.get("type_reponse") == "3" else []
        return self.names("reponse") + further

    def title(self) -> str:
        return self.data.get("numero_de_lacte", "")

    def problem(self) -> str | None:
        if not self.names("reponse"):
            return f"Le formulaire est incomplet : le champ «{REPONSE_FORM['reponse'].label}» est obligatoire."
        typed = self.data.get(f"type_acte_{self.libelle}")
        if not typed:
            return "Le formulaire est incomplet : le champ «Typologie des pièces» est obligatoire."
        count = 1 + len(json.loads(self.data.get(f"type_pj_{self.libelle}") or "[]"))
        if count != len(self.pieces()):
            return f"La typologie des pièces n'est pas à jour : {count} type(s) pour {len(self.pieces())} pièce(s)"
        return None

    def possible(self) -> list[str]:
        last, repondre = self.last, self.data.get("repondre") == "1"
        possible = ["modification"] if last in _REPONSE_EDITABLE else []
        if last in _REPONSE_DELETABLE:
            possible.append("supression")
        if last == "attente-reponse-prefecture" and not repondre:
            possible.append("repondre")
        if last in ("send-reponse-prefecture", "tdt-error", "erreur-verif-tdt"):
            possible.append("verif-reponse-tdt")
        if self.why_not("send-reponse-prefecture") == "":
            possible.append("send-reponse-prefecture")
        return possible

    def why_not(self, action: str) -> str:
        if action == "repondre":
            return "last-action" if self.last != "attente-reponse-prefecture" else "content (repondre)"
        if action != "send-reponse-prefecture":
            return "last-action"
        if self.last not in ("attente-reponse-prefecture", "erreur-verif-tdt", "modification") \
                or not self.has("attente-reponse-prefecture"):
            return "last-action"
        if self.data.get("repondre") != "1":
            return "content (repondre)"
        problem = self.problem()
        return f"document_is_valide ({problem})" if problem else ""


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True
