"""Reading a RetourClassification (7-2) file leniently."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bus.errors import DocumentError
from transformers.classification import Classification

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "actes" / "samples"
PASTELL = SAMPLES / "pastell__999-1234----7-2_1.xml"
STELA = SAMPLES / "stela__exemple_codes_matieres.xml"

NS = 'xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"'
SMALL = f"""<?xml version="1.0" encoding="ISO-8859-1"?>
<actes:RetourClassification {NS}>
  <actes:DateClassification>2020-01-31</actes:DateClassification>
  <actes:NaturesActes>
    <actes:NatureActe actes:CodeNatureActe="1" actes:Libelle="D\xe9lib\xe9rations" actes:TypeAbrege="DE">
      <actes:TypePJNatureActe actes:CodeTypePJ="99_DE" actes:Libelle="D\xe9lib\xe9ration"/>
      <actes:TypePJNatureActe actes:CodeTypePJ="99_SE" actes:Libelle="Signature"/>
    </actes:NatureActe>
    <actes:NatureActe actes:CodeNatureActe="x" actes:Libelle="broken" actes:TypeAbrege="XX"/>
  </actes:NaturesActes>
  <actes:Matieres>
    <actes:Matiere1 actes:CodeMatiere="3" actes:Libelle="Domaine">
      <actes:Matiere2 actes:CodeMatiere="2" actes:Libelle="Cessions">
        <actes:Matiere3 actes:CodeMatiere="1" actes:Libelle="Ventes"/>
      </actes:Matiere2>
    </actes:Matiere1>
    <actes:Matiere1 actes:CodeMatiere="?" actes:Libelle="broken"/>
  </actes:Matieres>
</actes:RetourClassification>
""".encode("iso-8859-1")


def reference(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"reference sample missing: {path}")
    return path


def test_small_file_natures_types_and_tree() -> None:
    # Given a small classification with one broken nature and one broken matière
    classification = Classification.from_bytes(SMALL, name="small.xml")
    # Then the good entries are read and the broken ones skipped
    assert classification.date == date(2020, 1, 31)
    assert list(classification.natures) == [1]
    nature = classification.natures[1]
    assert (nature.code, nature.libelle, nature.abbrev) == (1, "Délibérations", "DE")
    assert nature.type_codes == {"99_DE": "Délibération", "99_SE": "Signature"}
    assert classification.type_codes_for(1) == {"99_DE", "99_SE"}
    assert classification.type_codes_for(4) == set()
    assert classification.has_matieres((3,))
    assert classification.has_matieres((3, 2))
    assert classification.has_matieres((3, 2, 1))
    assert not classification.has_matieres((3, 2, 2))
    assert not classification.has_matieres((3, 2, 1, 1))
    assert not classification.has_matieres(())
    assert classification.matieres[3].children[2].libelle == "Cessions"


def test_missing_namespace_and_bad_date_are_tolerated() -> None:
    data = (
        b"<RetourClassification><DateClassification>31/01/2020</DateClassification>"
        b"<Matieres><Matiere1 CodeMatiere='1' Libelle='CP'><Matiere2 CodeMatiere='1' Libelle='M'/>"
        b"</Matiere1></Matieres></RetourClassification>"
    )
    classification = Classification.from_bytes(data)
    assert classification.date is None
    assert classification.has_matieres((1, 1))
    assert classification.natures == {}


def test_entities_are_not_expanded(tmp_path: Path) -> None:
    # Given a file whose date is an external entity pointing at a local file
    secret = tmp_path / "secret.txt"
    secret.write_text("2020-01-01")
    data = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
        "<RetourClassification><DateClassification>&x;</DateClassification></RetourClassification>"
    ).encode()
    # Then the entity is not read
    assert Classification.from_bytes(data).date is None


def test_malformed_file_is_a_document_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.xml"
    path.write_bytes(b"<RetourClassification><oops></RetourClassification>")
    with pytest.raises(DocumentError) as caught:
        Classification.from_file(path)
    assert caught.value.rule == "xml-well-formed"
    assert caught.value.problems[0].file == str(path)


def test_wrong_root_is_a_document_error() -> None:
    with pytest.raises(DocumentError) as caught:
        Classification.from_bytes(b"<ARActe/>", name="x.xml")
    assert caught.value.rule == "classification-root"


def test_missing_file_is_a_document_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentError) as caught:
        Classification.from_file(tmp_path / "none.xml")
    assert caught.value.rule == "file-readable"


def test_pastell_ministry_file() -> None:
    classification = Classification.from_file(reference(PASTELL))
    assert classification.date == date(2019, 4, 18)
    assert sorted(classification.natures) == [1, 2, 3, 4, 5, 6]
    assert {n: i.abbrev for n, i in classification.natures.items()} == {
        1: "DE",
        2: "AR",
        3: "AI",
        4: "CC",
        5: "BF",
        6: "AU",
    }
    assert classification.natures[1].libelle == "Délibérations"
    assert {"99_DE", "99_SE"} <= classification.type_codes_for(1)
    assert "32_DP" in classification.type_codes_for(4)
    assert "32_DP" not in classification.type_codes_for(1)
    assert classification.type_codes_for(5) == {"99_BU", "99_SE", "70_DE"}
    assert sorted(classification.matieres) == list(range(1, 10))
    assert classification.has_matieres((3, 2))
    assert classification.has_matieres((7, 1))
    assert classification.has_matieres((1, 1, 7))
    assert not classification.has_matieres((9, 9, 9))


def test_stela_file_utf8_without_declaration() -> None:
    classification = Classification.from_file(reference(STELA))
    assert classification.date == date(2017, 12, 8)
    assert sorted(classification.natures) == [1, 2, 3, 4, 5, 6]
    assert classification.natures[5].type_codes["99_BU"] == "Document budgétaire"
    assert classification.has_matieres((7, 1))
