"""DECP out against the reference: the official 2.0.2 XSD, the 2.0.3 JSON schema and their example."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lxml import etree

from tests.unit.test_decp import every_contract
from transformers.decp import SCHEMA_DIR, build_json, build_xml, contract_problems, contracts_from_xml
from transformers.decp_model import ActeSousTraitance, CanonicalContract, LieuExecution, Titulaire

pytestmark = pytest.mark.conformance

EXAMPLE = "exemple-Marche.xml"


@pytest.fixture(scope="module")
def reference(reference_dir: Path) -> Path:
    return reference_dir / "decp" / "v2.0.2"


@pytest.fixture(scope="module")
def official_xsd(reference: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(reference / "schema_decp_v2.0.2.xsd"), parser))


@pytest.fixture(scope="module")
def official_json(reference: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((reference / "schema_decp_v2.0.3.json").read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def hent_xsd() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(SCHEMA_DIR / "hent-decp.xsd"), parser))


def test_the_project_ships_the_official_schemas_unchanged(reference: Path) -> None:
    for name in ("schema_decp_v2.0.2.xsd", "schema_decp_v2.0.3.json"):
        assert (SCHEMA_DIR / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.parametrize("contract", every_contract(), ids=lambda c: f"{c.kind}-{c.id}-{len(c.modifications)}")
def test_every_built_decp_is_valid_against_the_official_schemas(
    contract: CanonicalContract, official_xsd: etree.XMLSchema, official_json: dict[str, Any]
) -> None:
    document = etree.fromstring(build_xml(contract))

    assert official_xsd.validate(document), official_xsd.error_log
    jsonschema.validate(json.loads(build_json(contract)), official_json, cls=jsonschema.Draft7Validator)


def test_the_reference_example_reads_into_the_model(reference: Path, official_xsd: etree.XMLSchema) -> None:
    data = (reference / EXAMPLE).read_bytes()
    assert official_xsd.validate(etree.fromstring(data))

    contracts = contracts_from_xml(data, EXAMPLE)

    assert len(contracts) == 2 and contracts[0] == contracts[1]  # the example holds the same marché twice
    example = contracts[0]
    assert example == CanonicalContract(
        id="TEST2022", acheteur="21750001630040", nature="Marché", objet="envoi pour Json test",
        codeCPV="45000000-7", procedure="Appel d'offres ouvert", lieuExecution=LieuExecution("75000", "Code postal"),
        dureeMois=48, dateNotification=date(2024, 5, 15), datePublicationDonnees=date(2024, 5, 25),
        montant=Decimal("575000"), formePrix="Forfaitaire", typesPrix=("Définitif ferme",),
        titulaires=(Titulaire("SIRET", "55204599900869"),),
        considerationsSociales=("Clause sociale", "Critère social"),
        considerationsEnvironnementales=("Clause environnementale",), techniques=("Concours", "Accord-cadre"),
        modalitesExecution=("Tranches",), idAccordCadre="1234567890", marcheInnovant=True, ccag="Travaux",
        offresRecues=4, attributionAvance=True, tauxAvance=Decimal("0"), typeGroupementOperateurs="Pas de groupement",
        origineUE=Decimal("0.1"), origineFrance=Decimal("0.1"), sousTraitanceDeclaree=True,
        actesSousTraitance=(ActeSousTraitance(
            id=1, sousTraitant=Titulaire("SIRET", "214356"), dureeMois=12, dateNotification=date(2024, 10, 11),
            montant=Decimal("123456.89"), variationPrix="Révisable", datePublicationDonnees=date(2024, 10, 12)),),
    )


def test_hent_is_stricter_than_the_official_schema(reference: Path, official_json: dict[str, Any],
                                                   official_xsd: etree.XMLSchema,
                                                   hent_xsd: etree.XMLSchema) -> None:
    data = (reference / EXAMPLE).read_bytes()
    example = contracts_from_xml(data, EXAMPLE)[0]

    # the official schema accepts the example; Hent's refuses its order, its "oui" and its two marchés,
    # and Hent's rules refuse its sous-traitant's SIRET of 6 digits
    assert not hent_xsd.validate(etree.fromstring(data))
    assert [(p.field, p.rule) for p in contract_problems(example)] == [
        ("actesSousTraitance[0].sousTraitant.id", "siret-format")]

    # once that SIRET is complete, Hent builds it, valid against the reference schemas
    acte = replace(example.actesSousTraitance[0], sousTraitant=Titulaire("SIRET", "21435600000018"))
    fixed = replace(example, actesSousTraitance=(acte,))
    rebuilt = etree.fromstring(build_xml(fixed))
    assert official_xsd.validate(rebuilt), official_xsd.error_log
    assert hent_xsd.validate(rebuilt), hent_xsd.error_log
    jsonschema.validate(json.loads(build_json(fixed)), official_json, cls=jsonschema.Draft7Validator)
    assert contracts_from_xml(build_xml(fixed), "x.xml") == [fixed]


def _mutations(document: etree._Element) -> list[etree._Element]:
    """The document with one element removed, doubled, emptied or given another text, each in turn."""
    variants = []
    for index in range(len(list(document.iter()))):
        for change in ("remove", "double", "empty", "zero", "oui", "minus"):
            copy = etree.fromstring(etree.tostring(document))
            target = list(copy.iter())[index]
            parent = target.getparent()
            if change == "remove" and parent is not None:
                parent.remove(target)
            elif change == "double" and parent is not None:
                parent.insert(parent.index(target), etree.fromstring(etree.tostring(target)))
            elif len(target) == 0 and change in ("empty", "zero", "oui", "minus"):
                target.text = {"empty": "", "zero": "0", "oui": "oui", "minus": "-1"}[change]
            else:
                continue
            variants.append(copy)
    return variants


@pytest.mark.parametrize("contract", every_contract(), ids=lambda c: f"{c.kind}-{c.id}-{len(c.modifications)}")
def test_what_hent_schema_accepts_the_official_accepts(contract: CanonicalContract, official_xsd: etree.XMLSchema,
                                                       hent_xsd: etree.XMLSchema) -> None:
    variants = _mutations(etree.fromstring(build_xml(contract)))

    accepted = [variant for variant in variants if hent_xsd.validate(variant)]

    assert len(variants) > 100 and accepted  # some mutations are harmless (a double titulaire, a zero rate)
    for variant in accepted:
        assert official_xsd.validate(variant), etree.tostring(variant, encoding="unicode")
