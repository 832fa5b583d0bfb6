"""ACTES out against the reference: the official XSD and a real Acte message (golden test)."""

from __future__ import annotations

import io
import tarfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import build_archive
from transformers.actes_validate import default_validator
from transformers.classification import Classification
from transformers.text_policy import TextPolicy

pytestmark = pytest.mark.conformance

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(16)
BUDGET = b'<?xml version="1.0" encoding="UTF-8"?><DocumentBudgetaire/>'
GOLDEN = "pastell__034-491011698-20171207-CL20171227_06-DE-1-1_0.xml"


@pytest.fixture(scope="module")
def official_schema(reference_dir: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(reference_dir / "actes" / "xsd" / "actesv1_1.xsd"), parser))


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def acts(folder: Path) -> list[tuple[CanonicalAct, dict[str, Any]]]:
    """One act per nature, with annexes, precedent id, accents, referent, paper documents."""
    pdf, png = write(folder, "acte.pdf", PDF), write(folder, "plan.png", PNG)
    jpeg, budget = write(folder, "photo.jpeg", JPEG), write(folder, "budget.xml", BUDGET)
    common: dict[str, Any] = dict(
        siren="214400152",
        departement="044",
        arrondissement=1,
        collectivite_nature="31",
        decision_date=date(2024, 2, 12),
        classification_date=date(2019, 4, 18),
        main_document=ActFile("Délibération signée.pdf", pdf),
        return_emails=("actes@nantes.fr", "dgs@nantes.fr"),
    )
    return [
        (
            CanonicalAct(
                **common,
                numero_interne="DEL2024_001",
                nature=1,
                matieres=(3, 2),
                objet="Cession d’une parcelle — « Les Œillets » à l’euro symbolique (1 €)…",
                annexes=(ActFile("plan.png", png, "99_SE"), ActFile("annexe.pdf", pdf)),
                referent_name="Loïc Le Bœuf",
                referent_phone="02 40 00 00 00",
                referent_email="loic.leboeuf@nantes.fr",
            ),
            {},
        ),
        (
            CanonicalAct(
                **common,
                numero_interne="AR2024_002",
                nature=2,
                matieres=(6, 1, 1),
                objet="Arrêté réglementant le stationnement",
                document_papier=True,
            ),
            {},
        ),
        (
            CanonicalAct(
                **{**common, "departement": "02A", "siren": "200067106", "arrondissement": 0},
                numero_interne="RH_42",
                nature=3,
                matieres=(4, 1),
                objet="Nomination d'un agent",
                annexes=(ActFile("photo.jpeg", jpeg),),
                precedent_id_acte="02A-200067106-20240110-RH_41-AI",
            ),
            {},
        ),
        (
            CanonicalAct(
                **{**common, "main_document": ActFile("marche.pdf", pdf, "99_DC")},
                numero_interne="MP2024",
                nature=4,
                matieres=(1, 1, 7),
                objet="Marché de voirie",
                annexes=(ActFile("dce.pdf", pdf, "32_DP"),),
            ),
            {"with_classification": True},
        ),
        (
            CanonicalAct(
                **{**common, "main_document": ActFile("budget.xml", budget)},
                numero_interne="BP2024",
                nature=5,
                matieres=(7, 1),
                objet="Budget primitif 2024",
                annexes=(ActFile("rapport.pdf", pdf),),
            ),
            {"serial": 9999},
        ),
        (
            CanonicalAct(
                **common,
                numero_interne="974X",
                nature=6,
                matieres=(9, 1),
                objet="Autre acte",
                annexes=tuple(ActFile(f"annexe{i}.pdf", pdf) for i in range(12)),
            ),
            {},
        ),
    ]


def test_archives_validate_against_project_and_official_schemas(
    tmp_path: Path, reference_dir: Path, official_schema: etree.XMLSchema
) -> None:
    classification = Classification.from_file(
        reference_dir / "actes" / "samples" / "pastell__999-1234----7-2_1.xml"
    )
    for act, options in acts(tmp_path):
        # Given an act, When its archive is built
        out = io.BytesIO()
        transmission = build_archive(
            act,
            out,
            quadrigram="EACT",
            trigram="SLO",
            serial=options.get("serial", 1),
            generation_date=date(2024, 3, 1),
            today=date(2024, 3, 1),
            text_policy=TextPolicy.TRANSLITERATE,
            classification=classification if options.get("with_classification") else None,
        )
        path = tmp_path / transmission.archive_name
        path.write_bytes(out.getvalue())
        # Then the project's validator accepts the whole archive
        assert default_validator().validate_archive(path) == [], transmission.archive_name
        # And both XML files validate against the official schema
        with tarfile.open(path, "r:gz") as tar:
            names = tar.getnames()
            assert names[:2] == [transmission.envelope_name, transmission.message_name]
            assert len(names) == 3 + len(act.annexes)
            for name in names[:2]:
                data = tar.extractfile(name).read()  # type: ignore[union-attr]
                document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
                assert official_schema.validate(document), (name, official_schema.error_log)


def normalised(data: bytes) -> bytes:
    """Canonical XML (C14N 1.0, inclusive) after removing whitespace-only text and tails.

    The sample is indented by hand (line breaks inside the root tag, an empty
    ``Annexes`` written with a newline inside), our output is pretty-printed: the
    whitespace-only text between elements is the only difference C14N does not remove.
    """
    root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(root, method="c14n")


def test_golden_pastell_acte_is_rebuilt_identically(
    tmp_path: Path, reference_dir: Path, official_schema: etree.XMLSchema
) -> None:
    sample = (reference_dir / "actes" / "samples" / GOLDEN).read_bytes()
    # Given the fields of the real message 1-1 produced by S2LOW for Pastell
    act = CanonicalAct(
        siren="491011698",
        departement="034",
        arrondissement=0,
        collectivite_nature="31",
        decision_date=date(2017, 12, 7),
        numero_interne="CL20171227_06",
        nature=1,
        matieres=(3, 2),
        objet="Fichier signé parapheur",
        classification_date=date(2017, 11, 13),
        main_document=ActFile("parapheur.pdf", write(tmp_path, "parapheur.pdf", PDF), "32_DP"),
        document_papier=False,
        return_emails=("actes@example.fr",),
    )
    # When its archive is built
    out = io.BytesIO()
    transmission = build_archive(
        act,
        out,
        quadrigram="EACT",
        trigram="SLO",
        serial=1,
        generation_date=date(2017, 12, 27),
        today=date(2017, 12, 27),
    )
    # Then the names are those of the sample
    assert transmission.message_name == GOLDEN.removeprefix("pastell__")
    assert transmission.file_names == {
        "parapheur.pdf": "32_DP-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf"
    }
    assert transmission.id_acte == "034-491011698-20171207-CL20171227_06-DE"
    with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
        built = tar.extractfile(transmission.message_name).read()  # type: ignore[union-attr]
    # And the XML is the sample's, compared as canonical XML without whitespace-only text
    assert normalised(built) == normalised(sample)
    assert built.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert "Fichier signé parapheur".encode("iso-8859-1") in built
    assert official_schema.validate(etree.fromstring(sample))
