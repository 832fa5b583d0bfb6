"""Content-based routing: which routes take a document, by its source and canonical fields.

``when`` holds conditions on canonical fields, all of which must hold; a list means any
of its values::

    when: {nature: [1, 2], siren: "214400152", matiere: "3.2", source: rh_outbox}

``matiere`` matches a classification prefix: ``"3"`` takes 3.x.y, ``"3.2"`` takes 3.2.y.  A decp
route reads a contract: ``siren`` (the buyer's), ``source`` and ``montant_min`` (its amount € HT, or a
concession's valeur globale, at least this much: ``40000`` is the publication threshold).
"""

from __future__ import annotations

__all__ = ["WHEN_FIELDS", "condition_failures", "matches"]

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from transformers.actes_model import CanonicalAct
from transformers.decp_model import CanonicalContract

WHEN_FIELDS = ("nature", "siren", "matiere", "source", "montant_min")


def _values(value: Any) -> list[str]:
    items: Iterable[Any] = value if isinstance(value, list | tuple | set) else [value]
    return [str(item).strip() for item in items]


def _matiere_matches(wanted: str, matieres: tuple[int, ...]) -> bool:
    prefix = [part for part in wanted.split(".") if part]
    actual = [str(m) for m in matieres]
    return actual[: len(prefix)] == prefix


def _conditions(when: Any) -> dict[str, Any]:
    if when is None:
        return {}
    if hasattr(when, "model_dump"):  # the configuration's RouteCondition
        return dict(when.model_dump(exclude_none=True))
    return dict(when)


def condition_failures(when: Any, act: CanonicalAct | CanonicalContract | None, source: str) -> list[str]:
    """The conditions of ``when`` that the act or contract (None: a file relayed unchanged) does not
    meet, in words (empty: it matches)."""
    failures: list[str] = []
    for key, expected in _conditions(when).items():
        wanted = _values(expected)
        if key == "source":
            ok, actual = source in wanted, source
        elif act is None:
            ok, actual = False, "unknown (a file relayed unchanged is not read)"
        elif key == "montant_min":
            amount = act.amount if isinstance(act, CanonicalContract) else None
            ok, actual = amount is not None and amount >= Decimal(wanted[0]), f"{amount} € HT"
            wanted = [f"at least {wanted[0]} € HT"]
        elif key == "siren":
            ok, actual = act.siren in wanted, act.siren
        elif isinstance(act, CanonicalContract):
            ok, actual = False, "a contract (an act's condition)"
        elif key == "nature":
            ok = str(act.nature) in wanted or act.nature_code in wanted
            actual = f"{act.nature} ({act.nature_code})"
        elif key == "matiere":
            ok = any(_matiere_matches(w, act.matieres) for w in wanted)
            actual = ".".join(str(m) for m in act.matieres)
        else:
            ok, actual = False, "?"
        if not ok:
            failures.append(f"{key} is {actual}, route wants {' or '.join(wanted)}")
    return failures


def matches(when: Any, act: CanonicalAct | CanonicalContract, source: str) -> bool:
    return not condition_failures(when, act, source)
