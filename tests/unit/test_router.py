"""Content-based routing on canonical fields."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from routes.router import condition_failures, matches
from transformers.actes_model import ActFile, CanonicalAct

ACT = CanonicalAct(
    siren="214400152", departement="044", arrondissement=1, collectivite_nature="31",
    decision_date=date(2026, 11, 20), numero_interne="DEL2026_042", nature=1, matieres=(3, 2),
    objet="Cession d'une parcelle", classification_date=date(2025, 1, 1),
    main_document=ActFile("d.pdf", Path("d.pdf")),
)


def test_no_condition_takes_everything() -> None:
    assert matches(None, ACT, "rh") and matches({}, ACT, "rh")


def test_each_condition_must_hold_and_a_list_means_any() -> None:
    assert matches({"nature": [1, 2], "siren": "214400152", "source": "rh"}, ACT, "rh")
    assert matches({"nature": "DE"}, ACT, "rh")
    assert not matches({"nature": 3}, ACT, "rh")
    assert not matches({"source": "finance"}, ACT, "rh")


def test_matiere_is_a_classification_prefix() -> None:
    assert matches({"matiere": "3"}, ACT, "rh")
    assert matches({"matiere": ["7.1", "3.2"]}, ACT, "rh")
    assert not matches({"matiere": "3.1"}, ACT, "rh")
    assert not matches({"matiere": "3.2.1"}, ACT, "rh")


def test_failures_say_what_the_route_wanted() -> None:
    assert condition_failures({"nature": [3, 4]}, ACT, "rh") == ["nature is 1 (DE), route wants 3 or 4"]
