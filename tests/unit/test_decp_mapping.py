"""Contract mappings: a finance database row (JSON), a CSV and an XML export → the canonical contract."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bus.errors import ConfigError, DocumentError
from transformers import decp_mapping
from transformers.decp import build_json, build_xml, contract_problems
from transformers.decp_mapping import ContractMapping
from transformers.decp_model import CanonicalContract, LieuExecution, Modification, Titulaire
from transformers.mapping import Mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "mappings" / "contrats-decp.yaml"


def row(**changes: Any) -> dict[str, Any]:
    """A row of the table contrats, as the finance database exports it."""
    values: dict[str, Any] = {
        "id": 12, "type_contrat": "M", "numero_marche": "2026-0042", "siren": "214400152",
        "siret_acheteur": "21440015200013", "reference_acte": "MAR2026_0042",
        "fichier_acte": "MAR2026_0042_acte_engagement.pdf", "date_signature": "2026-10-20", "nature": "MARCHE",
        "objet": "Réfection de la toiture du groupe scolaire Jules Verne", "cpv": "45261210-9", "procedure": "AOO",
        "lieu_code": "44162", "lieu_type": "COMMUNE", "duree_mois": 12, "date_notification": "2026-11-02",
        "date_publication": "2026-11-20", "date_debut_execution": None, "montant_ht": "125000.00",
        "subvention_publique": None, "forme_prix": "F", "types_prix": "REVISABLE", "techniques": None,
        "modalites_execution": "TRANCHES;BDC", "clauses_sociales": "CLAUSE;CRITERE", "clauses_environnementales": None,
        "numero_accord_cadre": None, "innovant": "N", "ccag": "TRAVAUX", "nombre_offres": 4, "avance": "O",
        "taux_avance": 0.05, "groupement": "SOLIDAIRE", "part_ue": None, "part_france": None, "sous_traitance": "N",
        "titulaires": json.dumps([{"siret": "55204599900869"}, {"type": "TVA", "siret": "FR40303265045"}]),
        "avenants": None,
    }
    values.update(changes)
    return values


def sidecar(**changes: Any) -> bytes:
    return json.dumps(row(**changes), ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def example() -> ContractMapping:
    return ContractMapping.load(EXAMPLE)


def mapping_from(tmp_path: Path, text: str) -> ContractMapping:
    path = tmp_path / "vendor.yaml"
    path.write_text(text, encoding="utf-8")
    return ContractMapping.load(path, "mappings/vendor.yaml")


# -- the example mapping, end to end -------------------------------------------------------

def test_a_marche_row(example: ContractMapping) -> None:
    contract = example.map("contrat-12.json", sidecar())

    assert contract == CanonicalContract(
        id="2026-0042", acheteur="21440015200013", nature="Marché",
        objet="Réfection de la toiture du groupe scolaire Jules Verne", codeCPV="45261210-9",
        procedure="Appel d'offres ouvert", lieuExecution=LieuExecution("44162", "Code commune"), dureeMois=12,
        dateNotification=date(2026, 11, 2), datePublicationDonnees=date(2026, 11, 20), montant=Decimal("125000.00"),
        formePrix="Forfaitaire", typesPrix=("Définitif révisable",),
        titulaires=(Titulaire("SIRET", "55204599900869"), Titulaire("TVA", "FR40303265045")),
        considerationsSociales=("Clause sociale", "Critère social"),
        considerationsEnvironnementales=("Pas de considération environnementale",), techniques=("Sans objet",),
        modalitesExecution=("Tranches", "Bons de commande"), marcheInnovant=False, ccag="Travaux", offresRecues=4,
        attributionAvance=True, tauxAvance=Decimal("0.05"), typeGroupementOperateurs="Solidaire",
        sousTraitanceDeclaree=False,
    )
    assert (contract.sidecar, contract.extra) == ("contrat-12.json", {"contrat_id": "12"})
    assert contract_problems(contract) == []
    assert b"<montant>125000.00</montant>" in build_xml(contract)


def test_the_same_file_maps_the_act_for_the_prefecture(example: ContractMapping) -> None:
    act_mapping = Mapping.load(EXAMPLE)

    assert example.act is not None
    assert example.referenced_files("contrat-12.json", sidecar()) == ["MAR2026_0042_acte_engagement.pdf"]
    assert act_mapping.referenced_files("contrat-12.json", sidecar()) == ["MAR2026_0042_acte_engagement.pdf"]
    assert "decp" not in act_mapping.fields


def test_a_row_with_avenants_publishes_the_modifications(example: ContractMapping) -> None:
    avenants = [
        {"numero": 1, "date_notification": "2027-03-01", "date_publication": "2027-03-10", "montant_ht": "131250.50"},
        {"numero": 2, "date_notification": "2027-06-01", "date_publication": "2027-06-05", "duree_mois": 18,
         "titulaires": [{"siret": "38012986600047"}]},
    ]

    contract = example.map("contrat-12.json", sidecar(avenants=json.dumps(avenants)))

    assert contract.modifications == (
        Modification(id=1, dateNotificationModification=date(2027, 3, 1),
                     datePublicationDonneesModification=date(2027, 3, 10), montant=Decimal("131250.50")),
        Modification(id=2, dateNotificationModification=date(2027, 6, 1),
                     datePublicationDonneesModification=date(2027, 6, 5), dureeMois=18,
                     titulaires=(Titulaire("SIRET", "38012986600047"),)),
    )
    assert contract.idempotency_key == "decp:21440015200013:2026-0042:2"
    build_json(contract)


def test_a_concession_row_reads_only_the_concession_fields(example: ContractMapping) -> None:
    data = sidecar(type_contrat="C", numero_marche="DSP-EAU-2026", nature="DSP", procedure="PNO",
                   date_signature="2026-06-15", date_publication="2026-07-01", date_debut_execution="2027-01-01",
                   montant_ht="48000000", titulaires=json.dumps([{"siret": "57202552600029"}]),
                   clauses_sociales="RESERVE_CONCESSION", cpv="not read for a concession")

    contract = example.map("dsp.json", data)

    assert contract == CanonicalContract(
        kind="contrat-concession", id="DSP-EAU-2026", autoriteConcedante="21440015200013",
        nature="Délégation de service public", objet="Réfection de la toiture du groupe scolaire Jules Verne",
        procedure="Procédure négociée ouverte", dureeMois=12, dateSignature=date(2026, 6, 15),
        datePublicationDonnees=date(2026, 7, 1), dateDebutExecution=date(2027, 1, 1),
        valeurGlobale=Decimal("48000000"), montantSubventionPublique=Decimal("0"),
        concessionnaires=(Titulaire("SIRET", "57202552600029"),), considerationsSociales=("Concession réservée",),
        considerationsEnvironnementales=("Pas de considération environnementale",),
    )
    assert contract_problems(contract) == []


def test_every_problem_names_the_sidecar_the_field_and_the_rule(example: ContractMapping) -> None:
    data = sidecar(date_notification="02/11/2026", montant_ht="125 k€", procedure="AOOO", duree_mois="douze",
                   types_prix="FERME;REVISABLES", innovant="peut-être",
                   titulaires=json.dumps([{"siret": "55204599900869"}, {"type": "TVA"}]))

    with pytest.raises(DocumentError) as error:
        example.map("contrat-12.json", data)

    assert [(p.file, p.field, p.rule) for p in error.value.problems] == [
        ("contrat-12.json", "procedure", "map-value"),
        ("contrat-12.json", "dureeMois", "integer"),
        ("contrat-12.json", "dateNotification", "date-format"),
        ("contrat-12.json", "montant", "decimal"),
        ("contrat-12.json", "typesPrix", "map-value"),
        ("contrat-12.json", "marcheInnovant", "boolean"),
        ("contrat-12.json", "titulaires[1].id", "required"),
    ]
    assert str(error.value).splitlines()[0] == (
        "contrat-12.json: procedure: 'AOOO' is not in the map (known: MAPA, AOO, AOR, PN, SANS, DC, PNO, PNNO, PNR, "
        "PNNR) (did you mean 'AOO'?) [map-value]")
    assert str(error.value).splitlines()[-1] == "contrat-12.json: titulaires[1].id: 'siret' is absent or empty in " \
        "the sidecar [required]"
    assert error.value.path == "contrat-12.json"


def test_a_list_column_that_is_not_json(example: ContractMapping) -> None:
    with pytest.raises(DocumentError) as error:
        example.map("contrat-12.json", sidecar(titulaires="55204599900869;38012986600047"))

    assert [(p.field, p.rule) for p in error.value.problems] == [("titulaires", "json-syntax")]


def test_a_required_field_missing_from_the_row(example: ContractMapping) -> None:
    with pytest.raises(DocumentError) as error:
        example.map("contrat-12.json", sidecar(cpv=None, lieu_type=None, type_contrat="X"))

    assert [(p.field, p.rule) for p in error.value.problems] == [("kind", "map-value")]

    with pytest.raises(DocumentError) as error:
        example.map("contrat-12.json", sidecar(cpv=None, lieu_type=None))

    assert [(p.field, p.rule) for p in error.value.problems] == [
        ("codeCPV", "required"), ("lieuExecution.typeCode", "required")]


def test_an_unreadable_sidecar(example: ContractMapping) -> None:
    with pytest.raises(DocumentError) as error:
        example.map("contrat-12.json", b'{"id": 12,')

    assert [(p.field, p.rule) for p in error.value.problems] == [(None, "json-syntax")]
    assert example.referenced_files("contrat-12.json", b'{"id": 12,') == []


# -- other formats -------------------------------------------------------------------------

MINIMAL_FIELDS = """
    id: {path: %(id)s}
    acheteur: {path: %(acheteur)s}
    nature: {const: Marché}
    objet: {path: %(objet)s}
    codeCPV: {path: %(cpv)s}
    procedure: {const: Procédure adaptée}
    lieuExecution.code: {const: "44"}
    lieuExecution.typeCode: {const: Code département}
    dureeMois: {path: %(duree)s}
    dateNotification: {path: %(notification)s, format: ["%%d/%%m/%%Y"]}
    datePublicationDonnees: {path: %(publication)s, format: ["%%d/%%m/%%Y"]}
    montant: {path: %(montant)s}
    formePrix: {const: Unitaire}
    typesPrix: {const: [Définitif ferme]}
    considerationsSociales: {const: Pas de considération sociale}
    considerationsEnvironnementales: {const: Pas de considération environnementale}
    techniques: {const: Sans objet}
    modalitesExecution: {const: Bons de commande}
    marcheInnovant: {const: false}
    ccag: {const: Pas de CCAG}
    offresRecues: {path: %(offres)s}
    attributionAvance: {const: false}
    typeGroupementOperateurs: {const: Pas de groupement}
    sousTraitanceDeclaree: {const: false}
"""


def test_a_csv_export_with_a_separated_list_and_french_numbers(tmp_path: Path) -> None:
    mapping = mapping_from(tmp_path, "format: csv\nencoding: latin-1\ncsv: {delimiter: \";\"}\n"
                           "description: marchés à procédure adaptée\ndecp:\n  fields:" + MINIMAL_FIELDS % {
                               "id": "Numero", "acheteur": "SIRET", "objet": "Objet", "cpv": "CPV",
                               "duree": "Duree", "notification": "Notifie le", "publication": "Publie le",
                               "montant": "Montant HT", "offres": "Offres"} + """
  lists:
    titulaires:
      items: {path: Titulaires, split: "|"}
      fields: {typeIdentifiant: {const: SIRET}, id: .}
""")
    data = ("Numero;SIRET;Objet;CPV;Duree;Notifie le;Publie le;Montant HT;Offres;Titulaires\n"
            "M26-7;21440015200013;Entretien des espaces verts;77310000;24;02/11/2026;20/11/2026;"
            "48 500,50;3;55204599900869|38012986600047\n").encode("latin-1")

    contract = mapping.map("paysage.csv", data)

    assert (contract.montant, contract.dateNotification, contract.offresRecues) == (
        Decimal("48500.50"), date(2026, 11, 2), 3)
    assert contract.titulaires == (Titulaire("SIRET", "55204599900869"), Titulaire("SIRET", "38012986600047"))
    assert mapping.referenced_files("paysage.csv", data) == []  # no act side: DECP needs no file
    assert contract_problems(contract) == []


def test_an_xml_export_with_items_elements(tmp_path: Path) -> None:
    mapping = mapping_from(tmp_path, "format: xml\nnamespaces: {f: 'urn:f'}\ndescription: x\ndecp:\n  fields:"
                           + MINIMAL_FIELDS % {
                               "id": "/f:m/f:numero", "acheteur": "/f:m/@siret", "objet": "/f:m/f:objet",
                               "cpv": "/f:m/f:cpv", "duree": "/f:m/f:duree", "notification": "/f:m/f:notifie",
                               "publication": "/f:m/f:publie", "montant": "/f:m/f:montant",
                               "offres": "/f:m/f:offres"} + """
  lists:
    titulaires:
      items: /f:m/f:titulaire
      fields: {typeIdentifiant: {path: "@type", default: SIRET}, id: "@id"}
""")
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<m xmlns="urn:f" siret="21440015200013"><numero>M26-8</numero><objet>Fournitures</objet><cpv>30192000-1</cpv>
<duree>12</duree><notifie>02/11/2026</notifie><publie>21/11/2026</publie><montant>41000</montant><offres>2</offres>
<titulaire id="55204599900869"/><titulaire type="TVA" id="FR40303265045"/></m>"""

    contract = mapping.map("m.xml", data)

    assert contract.titulaires == (Titulaire("SIRET", "55204599900869"), Titulaire("TVA", "FR40303265045"))
    assert (contract.id, contract.acheteur, contract.montant) == ("M26-8", "21440015200013", Decimal("41000"))


def test_a_kind_read_from_the_sidecar_needs_rules_for_that_kind(tmp_path: Path) -> None:
    mapping = mapping_from(tmp_path, "format: json\ndescription: x\ndecp:\n  fields:" + MINIMAL_FIELDS % {
        "id": "id", "acheteur": "siret", "objet": "objet", "cpv": "cpv", "duree": "duree",
        "notification": "notifie", "publication": "publie", "montant": "montant", "offres": "offres"}
        + "    kind: type\n")
    data = json.dumps({"type": "contrat-concession", "id": "C1", "objet": "o", "duree": 12, "publie": "01/07/2026",
                       "siret": "21440015200013"}).encode()

    with pytest.raises(DocumentError) as error:
        mapping.map("c.json", data)

    assert [(p.field, p.rule) for p in error.value.problems] == [
        ("autoriteConcedante", "required"), ("dateSignature", "required"), ("dateDebutExecution", "required"),
        ("valeurGlobale", "required"), ("montantSubventionPublique", "required"), ("concessionnaires", "required")]
    messages = {p.field: p.message for p in error.value.problems}
    assert messages["dateSignature"] == "the mapping gives no rule for dateSignature, which a contrat-concession " \
        "requires"


# -- mistakes in the mapping file ----------------------------------------------------------

def test_mapping_mistakes_are_listed_at_once_with_their_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: json
description: x
decp:
  fields:
    id: numero
    codeCVP: cpv
    montant: {path: montant, parse: json}
    kind: {const: accord}
  lists:
    titulaire: {items: t}
    modifications: {fields: {id: n}}
  extras: {}
""")

    assert [str(p) for p in error.value.problems] == [
        "mappings/vendor.yaml:6: decp.fields.codeCVP: unknown key 'codeCVP' (did you mean 'codeCPV'?) [unknown-key]",
        "mappings/vendor.yaml:7: decp.fields.montant.parse: parse: applies to the items: of a list only "
        "[format-option]",
        "mappings/vendor.yaml:8: decp.fields.kind: kind is marche or contrat-concession, not 'accord' [choice]",
        "mappings/vendor.yaml:10: decp.lists.titulaire: unknown key 'titulaire' (did you mean 'titulaires'?) "
        "[unknown-key]",
        "mappings/vendor.yaml:11: decp.lists.modifications.items: say where modifications's items are (items:) "
        "[required]",
        "mappings/vendor.yaml:12: decp.extras: unknown key 'extras' (did you mean 'extra'?) [unknown-key]",
    ]


def test_a_marche_mapping_must_say_where_every_required_field_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: json
description: x
decp:
  fields:
    id: numero
    acheteur: siret
  lists:
    titulaires: {items: t, fields: {typeIdentifiant: {const: SIRET}}}
""")

    found = [(p.field, p.rule) for p in error.value.problems]
    assert ("decp.fields.codeCPV", "required") in found
    assert ("decp.fields.lieuExecution.typeCode", "required") in found
    assert ("decp.lists.titulaires.fields.id", "required") in found
    assert ("decp.fields.dateSignature", "required") not in found  # a concession's
    assert all(p.rule == "required" for p in error.value.problems)


def test_a_file_without_decp_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, "format: json\ndescription: x\n")

    assert [(p.field, p.rule) for p in error.value.problems] == [("decp", "required")]


def test_the_act_side_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, "format: json\ndescription: x\nfields: {siren: a}\ndecp: {fields: {id: n}}\n")

    found = [(p.field, p.rule) for p in error.value.problems]
    assert ("files", "required") in found and ("fields.objet", "required") in found


def test_public_names() -> None:
    assert sorted(decp_mapping.__all__) == ["ContractMapping", "FIELD_KINDS", "LIST_ITEMS", "ListRule"]
    assert decp_mapping.FIELD_KINDS["lieuExecution.typeCode"] == "text"
    assert decp_mapping.FIELD_KINDS["montant"] == "decimal"
    assert decp_mapping.FIELD_KINDS["techniques"] == "texts"
    assert set(decp_mapping.LIST_ITEMS) == {"titulaires", "concessionnaires", "modifications",
                                            "actesSousTraitance", "modificationsActesSousTraitance"}
