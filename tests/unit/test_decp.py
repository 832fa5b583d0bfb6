"""DECP out: the canonical contract, its rules with their named errors, XML and JSON valid by schema."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from lxml import etree

from bus.errors import ConfigError, DocumentError, ValidationFailed
from transformers import decp, decp_model
from transformers.decp import (
    DecpValidator,
    build_json,
    build_xml,
    check_contract,
    contract_problems,
    contracts_from_xml,
    default_validator,
    file_name,
)
from transformers.decp_model import (
    ActeSousTraitance,
    CanonicalContract,
    LieuExecution,
    Modification,
    ModificationSousTraitance,
    Titulaire,
    contract_from_json,
    contract_to_json,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "decp"
HOLDER = Titulaire("SIRET", "55204599900869")
OTHER_HOLDER = Titulaire("SIRET", "38012986600047")


def marche(**changes: Any) -> CanonicalContract:
    """A valid marché with only what DECP requires."""
    contract = CanonicalContract(
        id="2026-0042", acheteur="21440015200013", nature="Marché",
        objet="Réfection de la toiture du groupe scolaire Jules Verne", codeCPV="45261210-9",
        procedure="Appel d'offres ouvert", lieuExecution=LieuExecution("44162", "Code commune"), dureeMois=12,
        dateNotification=date(2026, 11, 2), datePublicationDonnees=date(2026, 11, 20), montant=Decimal("125000.00"),
        formePrix="Forfaitaire", typesPrix=("Définitif révisable",), titulaires=(HOLDER,),
        considerationsSociales=("Pas de considération sociale",),
        considerationsEnvironnementales=("Clause environnementale",), techniques=("Sans objet",),
        modalitesExecution=("Tranches",), marcheInnovant=False, ccag="Travaux", offresRecues=4,
        attributionAvance=True, tauxAvance=Decimal("0.05"), typeGroupementOperateurs="Pas de groupement",
        sousTraitanceDeclaree=False, sidecar="contrat-12.json",
    )
    return replace(contract, **changes)


def amendment(id: int, notified: date, **changes: Any) -> Modification:
    return Modification(id=id, dateNotificationModification=notified,
                        datePublicationDonneesModification=notified.replace(day=notified.day + 5), **changes)


def full_marche() -> CanonicalContract:
    """Every optional part of a marché: accord-cadre, origins, subcontracting, two modifications."""
    return marche(
        techniques=("Accord-cadre",), modalitesExecution=("Bons de commande", "Marchés subséquents"),
        idAccordCadre="AC2025-007", origineUE=Decimal("0.8"), origineFrance=Decimal("0.45"),
        titulaires=(HOLDER, OTHER_HOLDER), typeGroupementOperateurs="Solidaire", sousTraitanceDeclaree=True,
        actesSousTraitance=(ActeSousTraitance(
            id=1, sousTraitant=Titulaire("TVA", "FR40303265045"), dureeMois=6, dateNotification=date(2026, 12, 1),
            montant=Decimal("18000"), variationPrix="Révisable", datePublicationDonnees=date(2026, 12, 10)),),
        modificationsActesSousTraitance=(ModificationSousTraitance(
            id=1, dateNotificationModificationSousTraitance=date(2027, 2, 1),
            datePublicationDonnees=date(2027, 2, 3), montant=Decimal("21000")),),
        modifications=(
            amendment(1, date(2027, 3, 1), montant=Decimal("131250.50")),
            amendment(2, date(2027, 6, 1), dureeMois=18, titulaires=(OTHER_HOLDER,)),
        ),
        considerationsSociales=("Clause sociale", "Critère social"), ccag="Maitrise d'œuvre",
        extra={"contrat_id": "12"},
    )


def concession(**changes: Any) -> CanonicalContract:
    contract = CanonicalContract(
        kind="contrat-concession", id="DSP-EAU-2026", autoriteConcedante="21440015200013",
        nature="Délégation de service public", objet="Exploitation du service public de l'eau potable",
        procedure="Procédure négociée ouverte", dureeMois=120, dateSignature=date(2026, 6, 15),
        datePublicationDonnees=date(2026, 7, 1), dateDebutExecution=date(2027, 1, 1),
        valeurGlobale=Decimal("48000000"), montantSubventionPublique=Decimal("0"),
        concessionnaires=(Titulaire("SIRET", "57202552600029"),),
        considerationsSociales=("Concession réservée",),
        considerationsEnvironnementales=("Critère environnemental",),
        modifications=(Modification(id=1, dateSignatureModification=date(2027, 6, 1),
                                    datePublicationDonneesModification=date(2027, 6, 20), dureeMois=132,
                                    valeurGlobale=Decimal("52000000")),),
        sidecar="dsp-eau.json",
    )
    return replace(contract, **changes)


def every_contract() -> list[CanonicalContract]:
    """The contracts every schema test builds (the conformance tests build them too)."""
    return [marche(), full_marche(), concession(), concession(modifications=()),
            marche(objet="é" * 1000, montant=Decimal("1"), tauxAvance=None, attributionAvance=False)]


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return {
        "hent": etree.XMLSchema(etree.parse(str(SCHEMAS / "hent-decp.xsd"), parser)),
        "official": etree.XMLSchema(etree.parse(str(SCHEMAS / "schema_decp_v2.0.2.xsd"), parser)),
        "json": json.loads((SCHEMAS / "schema_decp_v2.0.3.json").read_text(encoding="utf-8")),
    }


def problems(contract: CanonicalContract) -> list[tuple[str | None, str | None]]:
    return [(p.field, p.rule) for p in contract_problems(contract)]


# -- building ------------------------------------------------------------------------------

@pytest.mark.parametrize("contract", every_contract(), ids=lambda c: f"{c.kind}-{c.id}-{len(c.modifications)}")
def test_every_contract_builds_xml_valid_against_both_xsds(contract: CanonicalContract,
                                                         schemas: dict[str, Any]) -> None:
    document = etree.fromstring(build_xml(contract))

    assert schemas["hent"].validate(document), schemas["hent"].error_log
    assert schemas["official"].validate(document), schemas["official"].error_log
    assert [child.tag for child in document] == [contract.kind]
    assert contracts_from_xml(build_xml(contract), "x.xml") == [contract]  # nothing lost on the way


@pytest.mark.parametrize("contract", every_contract(), ids=lambda c: f"{c.kind}-{c.id}-{len(c.modifications)}")
def test_every_contract_builds_json_valid_against_the_json_schema(contract: CanonicalContract,
                                                                  schemas: dict[str, Any]) -> None:
    document = json.loads(build_json(contract))

    jsonschema.validate(document, schemas["json"], cls=jsonschema.Draft7Validator)
    assert list(document) == ["marches"]
    assert list(document["marches"]) == [contract.kind]
    assert len(document["marches"][contract.kind]) == 1


def test_the_marche_xml_in_the_xsd_order() -> None:
    given = marche()

    xml = build_xml(given)

    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<marches>\n  <marche>\n    <id>2026-0042</id>')
    element = etree.fromstring(xml)[0]
    assert [child.tag for child in element] == [
        "id", "acheteur", "nature", "objet", "codeCPV", "procedure", "lieuExecution", "dureeMois",
        "dateNotification", "datePublicationDonnees", "montant", "formePrix", "titulaires",
        "considerationsSociales", "considerationsEnvironnementales", "techniques", "modalitesExecution",
        "typesPrix", "marcheInnovant", "ccag", "offresRecues", "attributionAvance", "tauxAvance",
        "typeGroupementOperateurs", "sousTraitanceDeclaree"]
    assert element.findtext("acheteur/id") == "21440015200013"
    assert element.findtext("montant") == "125000.00"
    assert element.findtext("marcheInnovant") == "false"
    assert element.findtext("titulaires/titulaire/id") == "55204599900869"


def test_the_marche_json() -> None:
    document = json.loads(build_json(full_marche()))["marches"]["marche"][0]

    assert document["acheteur"] == {"id": "21440015200013"}
    assert document["montant"] == 125000 and isinstance(document["montant"], int)
    assert document["tauxAvance"] == 0.05
    assert document["titulaires"] == [{"titulaire": {"typeIdentifiant": "SIRET", "id": "55204599900869"}},
                                      {"titulaire": {"typeIdentifiant": "SIRET", "id": "38012986600047"}}]
    assert document["techniques"] == {"technique": ["Accord-cadre"]}
    assert document["modificationsActesSousTraitance"][0]["modificationActeSousTraitance"]["montant"] == 21000
    assert document["modifications"][0]["modification"] == {
        "id": 1, "dateNotificationModification": "2027-03-01", "datePublicationDonneesModification": "2027-03-06",
        "montant": 131250.5}
    assert "extra" not in document and "kind" not in document


def test_a_concession() -> None:
    given = concession()

    element = etree.fromstring(build_xml(given))[0]
    document = json.loads(build_json(given))

    assert element.tag == "contrat-concession"
    assert element.findtext("autoriteConcedante/id") == "21440015200013"
    assert element.findtext("concessionnaires/concessionnaire/id") == "57202552600029"
    assert element.findtext("modifications/modification/dateSignatureModification") == "2027-06-01"
    assert document["marches"]["contrat-concession"][0]["montantSubventionPublique"] == 0
    assert (given.siret, given.siren) == ("21440015200013", "214400152")
    assert file_name(given, "xml") == "DECP_21440015200013_DSP-EAU-2026_1.xml"


def test_a_modification_is_published_with_the_modifications_before_it() -> None:
    initial = marche()
    first = marche(modifications=(amendment(1, date(2027, 3, 1), montant=Decimal("131250.50")),))
    second = replace(first, modifications=(*first.modifications, amendment(2, date(2027, 6, 1), dureeMois=18)))

    element = etree.fromstring(build_xml(second))[0]

    assert [m.findtext("id") for m in element.iterfind("modifications/modification")] == ["1", "2"]
    assert element.findtext("montant") == "125000.00"  # the initial data are never changed
    assert element.findtext("datePublicationDonnees") == "2026-11-20"
    assert [c.modification_id for c in (initial, first, second)] == [0, 1, 2]
    assert [c.idempotency_key for c in (initial, first, second)] == [
        "decp:21440015200013:2026-0042:0", "decp:21440015200013:2026-0042:1", "decp:21440015200013:2026-0042:2"]
    assert file_name(second, "json") == "DECP_21440015200013_2026-0042_2.json"


def test_the_idempotency_key_holds_the_buyer_because_ids_are_the_buyers_own() -> None:
    ours, theirs = marche(), marche(acheteur="21350238800017")

    assert ours.id == theirs.id
    assert ours.idempotency_key != theirs.idempotency_key
    assert decp_model.decp_key("21440015200013", "2026-0042", 0) == ours.idempotency_key


def test_the_amount_is_the_montant_or_the_concession_valeur_globale() -> None:
    assert marche().amount == Decimal("125000.00")
    assert concession().amount == Decimal("48000000")
    assert marche(modifications=(amendment(1, date(2027, 3, 1), montant=Decimal("150000")),)).amount == Decimal(
        "125000.00")  # the initial amount


def test_file_names_use_safe_characters_only() -> None:
    assert file_name(marche(id="2026_T.42"), "xml") == "DECP_21440015200013_2026_T.42_0.xml"
    odd = file_name(marche(id="2026/42 lot 1"), "xml")
    other = file_name(marche(id="2026/42-lot 1"), "xml")
    assert odd.startswith("DECP_21440015200013_2026-42-lot-1-") and odd.endswith("_0.xml")
    assert odd != other  # the hash keeps them apart
    assert file_name(marche(id="../.."), "json").startswith("DECP_21440015200013_")
    assert "/" not in file_name(marche(id="../.."), "json")
    with pytest.raises(ValueError, match="fmt is xml or json, not 'pdf'"):
        file_name(marche(), "pdf")


# -- the rules -----------------------------------------------------------------------------

BAD = [
    ({"acheteur": "2144001520001"}, "acheteur", "siret-format"),
    ({"acheteur": "2144001520001A"}, "acheteur", "siret-format"),
    ({"codeCPV": "4526121"}, "codeCPV", "cpv-format"),
    ({"codeCPV": "45261210-10"}, "codeCPV", "cpv-format"),
    ({"montant": None}, "montant", "montant-min"),
    ({"montant": Decimal("0.99")}, "montant", "montant-min"),
    ({"montant": Decimal("NaN")}, "montant", "decimal"),
    ({"montant": Decimal("1234567890123.4567")}, "montant", "decimal-digits"),
    ({"titulaires": ()}, "titulaires", "titulaire-required"),
    ({"titulaires": (Titulaire("SIRET", "552045999"),)}, "titulaires[0].id", "siret-format"),
    ({"titulaires": (Titulaire("SIREN", "552045999"),)}, "titulaires[0].typeIdentifiant", "choice"),
    ({"titulaires": (Titulaire("TVA", " "),)}, "titulaires[0].id", "required"),
    ({"titulaires": (HOLDER, HOLDER)}, "titulaires", "duplicate"),
    ({"objet": "x" * 1001}, "objet", "objet-length"),
    ({"objet": "  "}, "objet", "required"),
    ({"objet": "Travaux\x0b"}, "objet", "xml-char"),
    ({"id": "MARCHE-2026-00042"}, "id", "id-length"),
    ({"idAccordCadre": "ACCORD-CADRE-2025"}, "idAccordCadre", "id-length"),
    ({"nature": "Marche"}, "nature", "choice"),
    ({"procedure": "Délégation de service public"}, "procedure", "choice"),
    ({"lieuExecution": LieuExecution("44", "Département")}, "lieuExecution.typeCode", "choice"),
    ({"lieuExecution": None}, "lieuExecution", "required"),
    ({"formePrix": "Ferme"}, "formePrix", "choice"),
    ({"typesPrix": ("Ferme",)}, "typesPrix[0]", "choice"),
    ({"typesPrix": ()}, "typesPrix", "required"),
    ({"techniques": ("Concours", "Concours")}, "techniques", "duplicate"),
    ({"considerationsSociales": ("Concession réservée",)}, "considerationsSociales[0]", "choice"),
    ({"ccag": "Maîtrise d’œuvre"}, "ccag", "choice"),
    ({"typeGroupementOperateurs": "Aucun"}, "typeGroupementOperateurs", "choice"),
    ({"marcheInnovant": None}, "marcheInnovant", "required"),
    ({"dureeMois": 0}, "dureeMois", "duree-min"),
    ({"offresRecues": 0}, "offresRecues", "offres-min"),
    ({"tauxAvance": Decimal("1.5")}, "tauxAvance", "rate-range"),
    ({"origineUE": Decimal("-0.1")}, "origineUE", "rate-range"),
    ({"origineUE": Decimal("0.2"), "origineFrance": Decimal("0.3")}, "origineFrance", "origine-order"),
    ({"attributionAvance": False, "tauxAvance": Decimal("0.1")}, "tauxAvance", "avance-consistency"),
    ({"datePublicationDonnees": date(2026, 11, 1)}, "datePublicationDonnees", "publication-date"),
    ({"dateSignature": date(2026, 10, 1)}, "dateSignature", "not-applicable"),
    ({"modifications": (amendment(1, date(2027, 3, 1)), amendment(1, date(2027, 4, 1)))},
     "modifications[1].id", "modification-id-unique"),
    ({"modifications": (amendment(2, date(2027, 3, 1)), amendment(1, date(2027, 4, 1)))},
     "modifications[1].id", "modification-order"),
    ({"modifications": (amendment(0, date(2027, 3, 1)),)}, "modifications[0].id", "modification-id-min"),
    ({"modifications": (amendment(1, date(2026, 10, 1)),)},
     "modifications[0].dateNotificationModification", "modification-date"),
    ({"modifications": (Modification(id=1, dateNotificationModification=date(2027, 3, 1),
                                     datePublicationDonneesModification=date(2027, 2, 1)),)},
     "modifications[0].datePublicationDonneesModification", "publication-date"),
    ({"modifications": (amendment(1, date(2027, 3, 1), montant=Decimal("0")),)},
     "modifications[0].montant", "montant-min"),
    ({"modifications": (amendment(1, date(2027, 3, 1), valeurGlobale=Decimal("10")),)},
     "modifications[0].valeurGlobale", "not-applicable"),
    ({"modificationsActesSousTraitance": (ModificationSousTraitance(
        id=3, dateNotificationModificationSousTraitance=date(2027, 1, 1), datePublicationDonnees=date(2027, 1, 2)),)},
     "modificationsActesSousTraitance[0].id", "sous-traitance-unknown"),
    ({"kind": "accord-cadre"}, "kind", "choice"),
]


@pytest.mark.parametrize(("changes", "field", "rule"), BAD, ids=[f"{f}-{r}" for _, f, r in BAD])
def test_each_broken_rule_names_its_field_and_rule(changes: dict[str, Any], field: str, rule: str) -> None:
    given = marche(**changes)

    with pytest.raises(ValidationFailed) as error:
        check_contract(given)

    assert [(p.field, p.rule) for p in error.value.problems] == [(field, rule)]
    assert {p.file for p in error.value.problems} == {"contrat-12.json"}
    with pytest.raises(DocumentError):
        build_xml(given)
    with pytest.raises(DocumentError):
        build_json(given)


def test_concession_rules() -> None:
    assert problems(concession(autoriteConcedante="214400152")) == [("autoriteConcedante", "siret-format")]
    assert problems(concession(valeurGlobale=None)) == [("valeurGlobale", "montant-min")]
    assert problems(concession(montantSubventionPublique=Decimal("-1"))) == [
        ("montantSubventionPublique", "montant-min")]
    assert problems(concession(concessionnaires=())) == [("concessionnaires", "concessionnaire-required")]
    assert problems(concession(considerationsSociales=("Marché réservé",))) == [
        ("considerationsSociales[0]", "choice")]
    assert problems(concession(procedure="Appel d'offres ouvert")) == [("procedure", "choice")]
    assert problems(concession(montant=Decimal("12"), codeCPV="45261210-9")) == [
        ("codeCPV", "not-applicable"), ("montant", "not-applicable")]
    assert problems(concession(dateDebutExecution=None)) == [("dateDebutExecution", "required")]
    modification = concession().modifications[0]
    assert problems(concession(modifications=(replace(modification, dateSignatureModification=date(2026, 6, 1)),))) \
        == [("modifications[0].dateSignatureModification", "modification-date")]
    assert problems(concession(modifications=(replace(modification, dateSignatureModification=None),))) == [
        ("modifications[0].dateSignatureModification", "required")]


def test_every_problem_is_reported_at_once_with_a_message_a_person_can_act_on() -> None:
    given = marche(acheteur="2144001520001", codeCPV="45261210", montant=Decimal("0"), titulaires=(),
                   objet="o" * 1200, nature="Marche")

    with pytest.raises(ValidationFailed) as error:
        check_contract(given)

    assert str(error.value).splitlines() == [  # in the schema's order
        "contrat-12.json: acheteur: SIRET '2144001520001' must be 14 digits [siret-format]",
        "contrat-12.json: nature: 'Marche' is not one of: Marché, Marché de partenariat, Marché de défense ou de "
        "sécurité (did you mean 'Marché'?) [choice]",
        "contrat-12.json: objet: objet has 1200 characters; at most 1000 [objet-length]",
        "contrat-12.json: montant: montant is 0; it must be at least 1 [montant-min]",
        "contrat-12.json: titulaires: titulaires is required for a marche (at least one titulaire) "
        "[titulaire-required]",
    ]
    assert (error.value.path, error.value.field, error.value.rule) == ("contrat-12.json", "acheteur", "siret-format")


def test_the_cpv_check_digit_is_optional_and_not_recomputed() -> None:
    # the check digit is tolerated, not recomputed: its documented algorithm does not give the published
    # digits (see transformers/decp.py)
    assert problems(marche(codeCPV="45261210")) == []
    assert problems(marche(codeCPV="45261210-0")) == []


# -- schema failures are Hent's bugs -------------------------------------------------------

def test_a_contract_that_passes_the_rules_but_not_the_schema_is_reported_as_decp_xsd(tmp_path: Path) -> None:
    for name in ("hent-decp.xsd", "schema_decp_v2.0.2.xsd", "schema_decp_v2.0.3.json"):
        shutil.copy(SCHEMAS / name, tmp_path / name)
    xsd = tmp_path / "hent-decp.xsd"
    xsd.write_text(xsd.read_text(encoding="utf-8").replace('<xs:maxLength value="1000"/>',
                                                           '<xs:maxLength value="10"/>'), encoding="utf-8")

    with pytest.raises(ValidationFailed) as error:
        build_xml(marche(), validator=DecpValidator(tmp_path))

    assert [(p.file, p.field, p.rule) for p in error.value.problems] == [
        ("DECP_21440015200013_2026-0042_0.xml", "/marches/marche/objet", "decp-xsd")]
    assert error.value.problems[0].message.startswith("hent-decp.xsd: Element 'objet': [facet 'maxLength']")
    assert "a bug of Hent" in error.value.message


def test_json_schema_problems_are_named_by_their_path() -> None:
    document = json.loads(build_json(marche()))
    del document["marches"]["marche"][0]["titulaires"]
    document["marches"]["marche"][0]["montant"] = 0

    found = default_validator().validate_json(json.dumps(document).encode(), "d.json")

    assert [(p.field, p.rule) for p in found] == [
        ("marches/marche/0", "decp-json-schema"), ("marches/marche/0/montant", "decp-json-schema")]


def test_a_missing_schema_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        DecpValidator(tmp_path)

    assert (error.value.path, error.value.rule) == (str(tmp_path / "hent-decp.xsd"), "schema-compiles")


def test_validators_are_compiled_once() -> None:
    assert default_validator() is default_validator()


# -- the canonical JSON --------------------------------------------------------------------

@pytest.mark.parametrize("contract", [*every_contract(), marche(modifications=(amendment(1, date(2027, 3, 1)),))])
def test_canonical_json_round_trip_is_exact(contract: CanonicalContract) -> None:
    stored = json.loads(json.dumps(contract_to_json(contract)))

    back = contract_from_json(stored)

    assert back == contract
    assert (back.sidecar, back.extra) == (contract.sidecar, contract.extra)
    assert stored["format"] == "hent-canonical-contract/1"


def test_canonical_json_keeps_decimals_and_dates_as_text() -> None:
    stored = contract_to_json(full_marche())

    assert stored["montant"] == "125000.00"
    assert stored["dateNotification"] == "2026-11-02"
    assert stored["modifications"][0]["montant"] == "131250.50"
    assert stored["lieuExecution"] == {"code": "44162", "typeCode": "Code commune"}


@pytest.mark.parametrize(("change", "field"), [
    ({"montant": 125000.0}, "montant"),
    ({"dateNotification": "02/11/2026"}, "dateNotification"),
    ({"kind": "accord"}, "kind"),
    ({"titulaires": [{"typeIdentifiant": "SIRET"}]}, "titulaires[0]"),
    ({"bogus": 1}, None),
    ({"format": "hent-canonical-act/1"}, "format"),
])
def test_canonical_json_that_is_not_a_contract(change: dict[str, Any], field: str | None) -> None:
    stored = {**contract_to_json(marche()), **change}

    with pytest.raises(DocumentError) as error:
        contract_from_json(stored)

    assert (error.value.field, error.value.rule) == (field, "canonical-json")


def test_public_names() -> None:
    for module in (decp, decp_model):
        assert isinstance(module.__all__, list)
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
    assert sorted(decp.__all__) == sorted([
        "CHOICES", "SCHEMA_DIR", "DecpValidator", "build_json", "build_xml", "check_contract", "contract_problems",
        "contracts_from_xml", "default_validator", "file_name"])
