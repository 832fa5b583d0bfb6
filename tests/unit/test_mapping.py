"""Declarative vendor mappings: each example end to end, and every error named exactly."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

import transformers.mapping as mapping_module
from bus.errors import ConfigError, DocumentError, Problem
from transformers import mapping_load, sidecar, sidecar_values
from transformers.actes_model import ActFile, CanonicalAct, Collectivite
from transformers.mapping import Mapping

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "config" / "mappings"
SIDECARS = ROOT / "tests" / "fixtures" / "sidecars"
COLLECTIVITES = {
    "214400152": Collectivite("214400152", "044", 1, "31", ("actes@mairie.example",),
                              classification_date=date(2025, 3, 1)),
}


def bundle(tmp_path: Path, *names: str) -> dict[str, Path]:
    files = {}
    for name in names:
        (tmp_path / name).write_bytes(b"%PDF-1.4\n")
        files[name] = tmp_path / name
    return files


def mapping_from(tmp_path: Path, text: str, name: str = "vendor.yaml") -> Mapping:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return Mapping.load(path)


def problems_of(error: pytest.ExceptionInfo[DocumentError] | pytest.ExceptionInfo[ConfigError]) -> set[tuple]:
    return {(p.field, p.rule) for p in error.value.problems}


# -- the three example mappings, end to end ------------------------------------------------

def test_deliberations_json_example(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = (SIDECARS / "deliberation.json").read_bytes()
    names = ["DEL2026_042.pdf", "DEL2026_042_plan_cadastral.pdf", "DEL2026_042_avis_domaines.pdf"]
    files = bundle(tmp_path, *names)

    assert mapping.referenced_files("deliberation.json", data) == names
    act = mapping.map("deliberation.json", data, files, COLLECTIVITES)

    assert act == CanonicalAct(
        siren="214400152", departement="044", arrondissement=1, collectivite_nature="31",
        decision_date=date(2026, 11, 20), numero_interne="DEL2026_042", nature=1, matieres=(3, 2),
        objet="Cession de la parcelle cadastrée BK 112, rue de la Solidarité, à Loire-Atlantique Habitations",
        classification_date=date(2025, 3, 1),
        main_document=ActFile("DEL2026_042.pdf", files["DEL2026_042.pdf"], "99_DE"),
        annexes=(
            ActFile("DEL2026_042_plan_cadastral.pdf", files["DEL2026_042_plan_cadastral.pdf"], "21_RP"),
            ActFile("DEL2026_042_avis_domaines.pdf", files["DEL2026_042_avis_domaines.pdf"], None),
        ),
        document_papier=False, return_emails=("actes@mairie.example",),
        referent_name="Maëlle Le Goff", referent_phone="02 28 25 20 00",
        referent_email="m.legoff@mairie.example",
    )
    assert act.extra == {"seance_id": "CM-2026-11"}
    assert act.id_acte == "044-214400152-20261120-DEL2026_042-DE"


def test_rh_csv_example(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "rh-csv.yaml")
    data = (SIDECARS / "arrete-rh.csv").read_bytes()
    names = ["AR2026_0187.pdf", "AR2026_0187_avis_CAP.pdf", "AR2026_0187_fiche_poste.pdf"]
    files = bundle(tmp_path, *names)

    assert mapping.referenced_files("arrete-rh.csv", data) == names
    act = mapping.map("arrete-rh.csv", data, files, COLLECTIVITES)

    assert (act.siren, act.numero_interne, act.decision_date, act.nature, act.matieres) == (
        "214400152", "AR2026_0187", date(2026, 11, 3), 3, (4, 1))
    assert act.objet == (
        "Nomination de Mme Hélène Le Bihan au grade d'adjoint administratif principal de 2e classe")
    assert act.classification_date == date(2025, 3, 1)  # empty column: the collectivité's
    assert act.main_document == ActFile("AR2026_0187.pdf", files["AR2026_0187.pdf"], "99_AI")
    assert [a.source_name for a in act.annexes] == names[1:]
    assert (act.document_papier, act.referent_name, act.referent_email) == (False, "Gaëlle Riou",
                                                                             "g.riou@mairie.example")
    assert act.return_emails == ("actes@mairie.example",)
    assert act.extra == {"matricule_agent": "004512"}


def test_contrats_xml_example(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "contrats-xml.yaml")
    data = (SIDECARS / "contrat.xml").read_bytes()
    names = ["MAR2026_0031_acte_engagement.pdf", "MAR2026_0031_CCAP.pdf",
             "MAR2026_0031_rapport_presentation.pdf"]
    files = bundle(tmp_path, *names)

    assert mapping.referenced_files("contrat.xml", data) == names
    act = mapping.map("contrat.xml", data, files, COLLECTIVITES)

    assert (act.siren, act.numero_interne, act.decision_date, act.nature, act.matieres) == (
        "214400152", "MAR2026_0031", date(2026, 10, 5), 4, (1, 1))
    assert act.objet.startswith("Marché de travaux de rénovation énergétique")
    assert act.main_document.type_code == "99_DC"
    assert [(a.source_name, a.type_code) for a in act.annexes] == [
        ("MAR2026_0031_CCAP.pdf", "11_AP"), ("MAR2026_0031_rapport_presentation.pdf", "11_RP")]
    assert (act.referent_name, act.referent_phone) == ("Yann Kervella", "02 28 25 20 41")
    assert act.precedent_id_acte is None
    assert act.extra == {"numero_marche": "2026-T-0031", "montant_ht": "412850.00"}
    assert act.id_acte == "044-214400152-20261005-MAR2026_0031-CC"


# -- document errors --------------------------------------------------------------------------

def json_sidecar(**changes: object) -> bytes:
    data = json.loads((SIDECARS / "deliberation.json").read_text(encoding="utf-8"))
    data.update(changes)
    return json.dumps(data).encode()


ALL_DELIBERATION_FILES = (
    "DEL2026_042.pdf", "DEL2026_042_plan_cadastral.pdf", "DEL2026_042_avis_domaines.pdf")


def test_unknown_siren(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = json_sidecar(collectivite={"siren": "200000172"})

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", data, bundle(tmp_path, *ALL_DELIBERATION_FILES), COLLECTIVITES)

    assert error.value.problems == [Problem(
        "SIREN 200000172 is not a collectivité of the configuration (collectivites: 214400152); add it "
        "under collectivites:", file="d.json", field="siren", rule="collectivite-known")]
    assert (error.value.path, error.value.field, error.value.rule) == (
        "d.json", "siren", "collectivite-known")


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = json_sidecar(type="DELIBERATON", seance={"date": "20/11/2026"}, objet="  ", classification="3.x",
                        envoi_papier="peut-être", numero=["a", "b"])

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", data, bundle(tmp_path, *ALL_DELIBERATION_FILES), COLLECTIVITES)

    assert {str(p) for p in error.value.problems} == {
        "d.json: nature: 'DELIBERATON' is not in the map (known: DELIBERATION, ARRETE_REGLEMENTAIRE, "
        "ARRETE_INDIVIDUEL, CONTRAT, BUDGET, AUTRE) (did you mean 'DELIBERATION'?) [map-value]",
        "d.json: decision_date: '20/11/2026' does not match the date format %Y-%m-%d [date-format]",
        "d.json: objet: 'objet' is absent or empty in the sidecar [required]",
        "d.json: matieres: 'x' is not an integer [integer]",
        "d.json: document_papier: 'peut-être' is not a yes/no value (O/N, oui/non, true/false, 1/0) "
        "[boolean]",
        "d.json: numero_interne: the path selects 2 values, expected one [single-value]",
    }
    assert all(p.file == "d.json" for p in error.value.problems)


def test_a_named_annex_missing_from_the_bundle(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = (SIDECARS / "deliberation.json").read_bytes()

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", data, bundle(tmp_path, "DEL2026_042.pdf", "DEL2026_042_plan_cadastral.pdf"),
                    COLLECTIVITES)

    assert problems_of(error) == {("annexes[1].file", "file-present")}
    assert error.value.problems[0].message == (
        "'DEL2026_042_avis_domaines.pdf' is named by the sidecar but is not in the bundle "
        "(files: DEL2026_042.pdf, DEL2026_042_plan_cadastral.pdf)")


def test_a_missing_main_document(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", json_sidecar(fichier=None), bundle(tmp_path, *ALL_DELIBERATION_FILES[1:]),
                    COLLECTIVITES)

    assert problems_of(error) == {("main_document.file", "required")}


def test_files_are_found_by_base_name_when_the_sidecar_names_a_folder(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = json_sidecar(fichier="export\\2026\\DEL2026_042.pdf", annexes=[])
    files = bundle(tmp_path, "DEL2026_042.pdf")

    act = mapping.map("d.json", data, files, COLLECTIVITES)

    assert act.main_document == ActFile("export\\2026\\DEL2026_042.pdf", files["DEL2026_042.pdf"], "99_DE")


def test_malformed_json(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", b'{\n  "numero": "DEL1",\n  "objet" "x"\n}', {}, COLLECTIVITES)

    assert error.value.problems == [Problem(
        "not valid JSON at line 3, column 11: Expecting ':' delimiter", file="d.json", line=3,
        rule="json-syntax")]
    assert mapping.referenced_files("d.json", b"{oops") == []


def test_csv_in_the_wrong_encoding_names_the_byte_offset(tmp_path: Path) -> None:
    text = (MAPPINGS / "rh-csv.yaml").read_text(encoding="utf-8")
    text = text.replace("encoding: latin-1", "encoding: utf-8")
    mapping = mapping_from(tmp_path, text)
    data = (SIDECARS / "arrete-rh.csv").read_bytes()
    offset = data.index("é".encode("latin-1"))

    with pytest.raises(DocumentError) as error:
        mapping.map("arrete-rh.csv", data, {}, COLLECTIVITES)

    assert error.value.problems == [Problem(
        f"cannot be read as utf-8: byte 0xe9 at byte offset {offset} (line 2); set encoding: in the mapping "
        "to the export's encoding", file="arrete-rh.csv", line=2, rule="encoding")]
    assert (error.value.path, error.value.rule) == ("arrete-rh.csv", "encoding")
    assert mapping.referenced_files("arrete-rh.csv", data) == []


def test_csv_with_two_data_rows(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "rh-csv.yaml")
    data = (SIDECARS / "arrete-rh.csv").read_bytes()
    data += data.splitlines(keepends=True)[1]

    with pytest.raises(DocumentError) as error:
        mapping.map("a.csv", data, {}, COLLECTIVITES)

    assert problems_of(error) == {(None, "csv-rows")}
    assert error.value.problems[0].message == (
        "expected a header row and one data row, found 3 non-empty rows (one act per sidecar)")


def test_csv_missing_column_suggests_the_nearest(tmp_path: Path) -> None:
    text = (MAPPINGS / "rh-csv.yaml").read_text(encoding="utf-8").replace("path: type_acte", "path: type_act")
    mapping = mapping_from(tmp_path, text)

    with pytest.raises(DocumentError) as error:
        mapping.map("a.csv", (SIDECARS / "arrete-rh.csv").read_bytes(), bundle(tmp_path, "AR2026_0187.pdf",
                    "AR2026_0187_avis_CAP.pdf", "AR2026_0187_fiche_poste.pdf"), COLLECTIVITES)

    assert problems_of(error) == {("nature", "required")}
    assert error.value.problems[0].message.endswith(" (did you mean 'type_acte'?)")


def test_csv_key_value_layout(tmp_path: Path) -> None:
    mapping = mapping_from(tmp_path, """
format: csv
encoding: cp1252
csv: {delimiter: ";", layout: key-value}
fields:
  siren: siren
  numero_interne: numero
  decision_date: {path: date, format: "%d/%m/%Y"}
  nature: {const: 2}
  matieres: {path: matiere, split: "."}
  objet: objet
  return_emails: courriel
  classification_date: {default: 2024-01-15}
files:
  main: {file: document}
  annexes: {items: annexe}
""")
    data = ("siren;214400152\nnumero;REG2026_7\ndate;02/02/2026\nmatiere;6.1\n"
            "objet;Arrêté de stationnement\ncourriel;a@mairie.example, b@mairie.example\n"
            "document;reg.pdf\nannexe;plan.pdf\nannexe;photo.pdf\n").encode("cp1252")
    files = bundle(tmp_path, "reg.pdf", "plan.pdf", "photo.pdf")

    act = mapping.map("reg.csv", data, files, COLLECTIVITES)

    assert (act.numero_interne, act.nature, act.matieres, act.objet) == ("REG2026_7", 2, (6, 1),
                                                                         "Arrêté de stationnement")
    assert act.classification_date == date(2024, 1, 15)
    assert act.return_emails == ("a@mairie.example", "b@mairie.example")
    assert [a.source_name for a in act.annexes] == ["plan.pdf", "photo.pdf"]
    assert act.main_document.type_code is None


XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>',
])
def test_xml_sidecar_declaring_entities_is_refused(tmp_path: Path, doctype: str) -> None:
    mapping = Mapping.load(MAPPINGS / "contrats-xml.yaml")
    data = (SIDECARS / "contrat.xml").read_text(encoding="utf-8").replace(XML_HEAD, XML_HEAD + doctype)
    data = data.replace("<fin:objet>", "<fin:objet>&xxe;&d;")

    with pytest.raises(DocumentError) as error:
        mapping.map("c.xml", data.encode(), {}, COLLECTIVITES)

    assert problems_of(error) == {(None, "xml-entities-forbidden")}
    assert error.value.problems[0].file == "c.xml"
    assert mapping.referenced_files("c.xml", data.encode()) == []


def test_malformed_xml(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "contrats-xml.yaml")

    with pytest.raises(DocumentError) as error:
        mapping.map("c.xml", b"<fin:export xmlns:fin='urn:example:finances:export:2'>\n<fin:contrat>", {},
                    COLLECTIVITES)

    assert problems_of(error) == {(None, "xml-syntax")}
    assert error.value.problems[0].line == 2


def test_xml_type_problems_and_several_values(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "contrats-xml.yaml")
    data = (SIDECARS / "contrat.xml").read_text(encoding="utf-8")
    data = data.replace("2026-10-05", "le 5 octobre").replace("<fin:reference>MAR2026_0031</fin:reference>",
                                                              "<fin:reference>A</fin:reference>" * 2)

    with pytest.raises(DocumentError) as error:
        mapping.map("c.xml", data.encode(), {}, COLLECTIVITES)

    assert problems_of(error) == {
        ("decision_date", "date-format"), ("numero_interne", "single-value"),
        ("main_document.file", "file-present"), ("annexes[0].file", "file-present"),
        ("annexes[1].file", "file-present"),
    }


def test_classification_date_required_when_neither_sidecar_nor_collectivite_has_one(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    bare = {"214400152": Collectivite("214400152", "044", 1, "31")}

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", (SIDECARS / "deliberation.json").read_bytes(),
                    bundle(tmp_path, *ALL_DELIBERATION_FILES), bare)

    assert problems_of(error) == {("classification_date", "required")}


def test_sidecar_values_override_the_collectivite(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")
    data = json_sidecar(nomenclature={"date": "2026-01-10"})

    act = mapping.map("d.json", data, bundle(tmp_path, *ALL_DELIBERATION_FILES), COLLECTIVITES)

    assert act.classification_date == date(2026, 1, 10)


def test_document_error_reads_as_one_line_per_problem(tmp_path: Path) -> None:
    mapping = Mapping.load(MAPPINGS / "deliberations-json.yaml")

    with pytest.raises(DocumentError) as error:
        mapping.map("d.json", json_sidecar(type="X", classification="3.y"), {}, COLLECTIVITES)

    assert len(str(error.value).splitlines()) == len(error.value.problems) == 5


# -- configuration errors ---------------------------------------------------------------------

def test_unknown_keys_get_did_you_mean_with_their_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: json
feilds:
  siren: a
fields:
  siren: {pth: a}
  numero_interne: b
  decision_dat: c
  nature: {const: 1}
  matieres: d
  objet: e
files:
  main: {file: f, typ: {const: 99_DE}}
""")

    assert [str(p) for p in error.value.problems] == [
        f"{tmp_path}/vendor.yaml:2: feilds: unknown key 'feilds' (did you mean 'fields'?) [unknown-key]",
        f"{tmp_path}/vendor.yaml:4: fields.decision_date: say where decision_date comes from [required]",
        f"{tmp_path}/vendor.yaml:5: fields.siren.pth: unknown key 'pth' (did you mean 'path'?) [unknown-key]",
        f"{tmp_path}/vendor.yaml:5: fields.siren: give a path: or a const: [rule-shape]",
        f"{tmp_path}/vendor.yaml:7: fields.decision_dat: unknown key 'decision_dat' (did you mean "
        "'decision_date'?) [unknown-key]",
        f"{tmp_path}/vendor.yaml:12: files.main.typ: unknown key 'typ' (did you mean 'type'?) [unknown-key]",
    ]


def test_format_encoding_and_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: jsn
encoding: klingon
namespaces: {a: "urn:a"}
csv: {delimiter: ";;"}
fields: {siren: a, numero_interne: b, decision_date: c, nature: d, matieres: e, objet: f}
files: {main: {file: g}}
""")

    assert [(p.line, p.field, p.rule, p.message) for p in error.value.problems] == [
        (1, "format", "choice", "format must be json, csv or xml, not 'jsn' (did you mean 'json'?)"),
        (2, "encoding", "encoding", "unknown encoding 'klingon' (latin-1, cp1252, utf-8...)"),
        (3, "namespaces", "format-option", "namespaces: applies to format: xml only"),
        (4, "csv", "format-option", "csv: applies to format: csv only"),
    ]


def test_csv_needs_its_encoding_and_one_character_delimiter(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: csv
csv: {delimiter: ";;", layout: rows}
fields: {siren: a, numero_interne: b, decision_date: c, nature: d, matieres: e, objet: f}
files: {main: {file: g}}
""")

    assert [(p.field, p.rule) for p in error.value.problems] == [
        ("csv.delimiter", "type"), ("csv.layout", "choice"), ("encoding", "required")]


def test_rule_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, """format: xml
namespaces: {f: "urn:f"}
fields:
  siren: /f:a/@siren[
  numero_interne: {path: /f:b, split: "-"}
  decision_date: {path: /f:c, required: yes please}
  nature: {path: /f:d, format: "%Y"}
  matieres: {const: 3.10}
  objet: {path: /g:e}
files:
  main: {file: "@f"}
""")

    assert [(p.line, p.field, p.rule) for p in error.value.problems] == [
        (4, "fields.siren.path", "xpath-syntax"),
        (5, "fields.numero_interne.split", "format-option"),
        (6, "fields.decision_date.required", "type"),
        (7, "fields.nature.format", "format-option"),
        (8, "fields.matieres", "type"),
        (9, "fields.objet.path", "xpath-syntax"),
    ]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, "format: json\nfields:\n  siren: [a\n  objet: b\n")

    assert [(p.rule, p.line) for p in error.value.problems] == [("yaml-syntax", 4)]


def test_missing_required_parts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        mapping_from(tmp_path, "format: json\nfields: {siren: a}\n")

    assert [(p.field, p.rule) for p in error.value.problems] == [
        ("fields.numero_interne", "required"), ("fields.decision_date", "required"),
        ("fields.nature", "required"), ("fields.matieres", "required"), ("fields.objet", "required"),
        ("files", "required")]


def test_a_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        Mapping.load(tmp_path / "absent.yaml")

    assert problems_of(error) == {(None, "file-readable")}


def test_problems_name_the_mapping_as_the_configuration_gave_it(tmp_path: Path) -> None:
    # Given a mapping with a misspelt key, loaded under the name the configuration gave it
    path = tmp_path / "vendor.yaml"
    path.write_text("format: jsn\n", encoding="utf-8")

    # When it is loaded
    with pytest.raises(ConfigError) as error:
        Mapping.load(path, "mappings/vendor.yaml")

    # Then each problem names it so, not by its absolute path
    assert {p.file for p in error.value.problems} == {"mappings/vendor.yaml"}
    assert str(error.value.problems[0]) == (
        "mappings/vendor.yaml:1: format: format must be json, csv or xml, not 'jsn' (did you mean 'json'?) [choice]"
    )
    # and so does the error for a file that cannot be read
    with pytest.raises(ConfigError) as error:
        Mapping.load(tmp_path / "absent.yaml", "mappings/absent.yaml")
    assert str(error.value) == (
        "mappings/absent.yaml: cannot read the mapping: No such file or directory [file-readable]"
    )


def test_every_example_mapping_loads() -> None:
    for path in sorted(MAPPINGS.glob("*.yaml")):
        assert Mapping.load(path).description


def test_public_names() -> None:
    assert sorted(mapping_module.__all__) == ["FIELD_KINDS", "Mapping"]
    assert mapping_load.__all__ == ["load_mapping"]
    assert sorted(sidecar.__all__) == ["ABSENT", "Rule", "Sidecar", "known_encoding"]
    assert sorted(sidecar_values.__all__) == ["clean", "convert", "scalar", "text_key", "to_int", "xml_value"]
    for module in (mapping_module, mapping_load, sidecar, sidecar_values):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
