"""ACTES out: names, rules, XML, archive and its validation."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import random
import re
import shutil
import subprocess
import tarfile
import zlib
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.errors import DocumentError, Problem, ValidationFailed
from transformers import actes_out, actes_rules
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import (
    Transmission,
    archive_name,
    build_acte_xml,
    build_archive,
    build_envelope_xml,
    check_act,
    envelope_name,
    file_names_for,
    message_name,
)
from transformers.actes_validate import MESSAGE_NAME, ActesValidator, default_validator
from transformers.classification import Classification
from transformers.text_policy import TextPolicy

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
TODAY = date(2024, 3, 1)
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 16
XML = b'<?xml version="1.0"?><budget/>'


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    contents = {
        "acte.pdf": PDF,
        "plan.png": PNG,
        "photo.JPG": JPEG,
        "budget.xml": XML,
        "annexe.pdf": PDF,
        "fake.pdf": PNG,
        "vide.pdf": b"",
        "plan.gif": b"GIF89a",
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def make_act(files: dict[str, Path], **changes: Any) -> CanonicalAct:
    act = CanonicalAct(
        siren="214400152",
        departement="044",
        arrondissement=1,
        collectivite_nature="31",
        decision_date=date(2024, 2, 12),
        numero_interne="DEL2024_012",
        nature=1,
        matieres=(3, 2),
        objet="Cession d'une parcelle communale",
        classification_date=date(2019, 4, 18),
        main_document=ActFile("acte.pdf", files["acte.pdf"]),
        annexes=(ActFile("plan.png", files["plan.png"], "99_SE"),),
        return_emails=("actes@mairie-nantes.fr",),
    )
    return dataclasses.replace(act, **changes)


def build(act: CanonicalAct, **options: Any) -> tuple[Transmission, bytes]:
    out = io.BytesIO()
    settings: dict[str, Any] = {
        "quadrigram": "EACT",
        "trigram": "SLO",
        "serial": 7,
        "generation_date": date(2024, 3, 1),
        "today": TODAY,
    }
    settings.update(options)
    transmission = build_archive(act, out, **settings)
    return transmission, out.getvalue()


# ---------------------------------------------------------------- names (standards.md §1.8)


def test_names_follow_the_specification(files: dict[str, Path]) -> None:
    act = make_act(
        files,
        annexes=(
            ActFile("plan.png", files["plan.png"], "99_SE"),
            ActFile("photo.JPG", files["photo.JPG"]),
            ActFile("annexe.pdf", files["annexe.pdf"], "21_RP"),
        ),
    )
    assert message_name(act) == "044-214400152-20240212-DEL2024_012-DE-1-1_0.xml"
    assert file_names_for(act) == {
        "acte.pdf": "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_1.pdf",
        "plan.png": "99_SE-044-214400152-20240212-DEL2024_012-DE-1-1_2.png",
        "photo.JPG": "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_3.jpg",
        "annexe.pdf": "21_RP-044-214400152-20240212-DEL2024_012-DE-1-1_4.pdf",
    }
    assert envelope_name("EACT", "214400152", date(2024, 3, 1), 7) == "EACT--214400152--20240301-7.xml"
    assert archive_name("SLO", "EACT--214400152--20240301-7.xml") == "SLO-EACT--214400152--20240301-7.tar.gz"


@pytest.mark.parametrize(
    ("nature", "code"), [(1, "99_DE"), (2, "99_AR"), (3, "99_AI"), (4, "99_DC"), (5, "99_BU"), (6, "99_AU")]
)
def test_default_type_code_per_nature(files: dict[str, Path], nature: int, code: str) -> None:
    act = make_act(files, nature=nature, annexes=(ActFile("annexe.pdf", files["annexe.pdf"]),))
    names = file_names_for(act)
    assert names["acte.pdf"].startswith(f"{code}-")
    assert names["annexe.pdf"].startswith(f"{code}-")


@pytest.mark.parametrize("serial", [0, 10000, -1])
def test_envelope_serial_outside_range_is_refused(serial: int) -> None:
    with pytest.raises(DocumentError) as caught:
        envelope_name("EACT", "214400152", TODAY, serial)
    assert (caught.value.field, caught.value.rule) == ("serial", "envelope-serial")


@pytest.mark.parametrize(
    ("options", "field"), [({"quadrigram": "EAC"}, "quadrigram"), ({"trigram": "S-O"}, "trigram")]
)
def test_bad_trigram_or_quadrigram_is_refused(
    files: dict[str, Path], options: dict[str, str], field: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        build(make_act(files), **options)
    assert (caught.value.field, caught.value.rule) == (field, f"{field}-pattern")


# ---------------------------------------------------------------- rules


def test_a_good_act_has_no_problem(files: dict[str, Path]) -> None:
    assert check_act(make_act(files), today=TODAY) == []


Change = Callable[[dict[str, Path]], dict[str, Any]]

BROKEN: list[tuple[str, Change, str, str]] = [
    ("underscores around", lambda f: {"numero_interne": "_A_"}, "numero_interne", "numero-interne-pattern"),
    ("space", lambda f: {"numero_interne": "A B"}, "numero_interne", "numero-interne-pattern"),
    ("single char", lambda f: {"numero_interne": "A"}, "numero_interne", "numero-interne-pattern"),
    ("lower case", lambda f: {"numero_interne": "del12"}, "numero_interne", "numero-interne-pattern"),
    ("16 chars", lambda f: {"numero_interne": "A" * 16}, "numero_interne", "numero-interne-pattern"),
    ("objet 600", lambda f: {"objet": "x" * 600}, "objet", "objet-length"),
    ("objet empty", lambda f: {"objet": ""}, "objet", "objet-length"),
    ("objet newline", lambda f: {"objet": "ligne 1\nligne 2"}, "objet", "objet-newline"),
    ("objet emoji", lambda f: {"objet": "Fête 🎉"}, "objet", "latin-1"),
    (
        "future",
        lambda f: {"decision_date": TODAY + timedelta(days=1)},
        "decision_date",
        "decision-date-future",
    ),
    ("siren 8", lambda f: {"siren": "21440015"}, "siren", "siren-pattern"),
    ("siren letters", lambda f: {"siren": "21440015A"}, "siren", "siren-pattern"),
    ("departement 2", lambda f: {"departement": "44"}, "departement", "departement-pattern"),
    ("departement 144", lambda f: {"departement": "144"}, "departement", "departement-pattern"),
    ("arrondissement", lambda f: {"arrondissement": 10}, "arrondissement", "arrondissement-range"),
    (
        "collectivite",
        lambda f: {"collectivite_nature": "3"},
        "collectivite_nature",
        "collectivite-nature-pattern",
    ),
    ("nature 7", lambda f: {"nature": 7}, "nature", "nature-range"),
    ("nature 0", lambda f: {"nature": 0}, "nature", "nature-range"),
    ("one matiere", lambda f: {"matieres": (3,)}, "matieres", "matieres-count"),
    ("six matieres", lambda f: {"matieres": (1, 1, 1, 1, 1, 1)}, "matieres", "matieres-count"),
    ("negative", lambda f: {"matieres": (3, -1)}, "matieres[1]", "matiere-range"),
    (
        "precedent",
        lambda f: {"precedent_id_acte": "044-214400152-2024-X-DE"},
        "precedent_id_acte",
        "idacte-pattern",
    ),
    ("no email", lambda f: {"return_emails": ()}, "return_emails", "return-emails-required"),
    ("bad email", lambda f: {"return_emails": ("a@b.fr", "nobody")}, "return_emails[1]", "email-pattern"),
    ("long tld", lambda f: {"return_emails": ("actes@mairie.example",)}, "return_emails[0]", "email-pattern"),
    ("referent", lambda f: {"referent_email": "x@"}, "referent_email", "email-pattern"),
    ("referent latin-1", lambda f: {"referent_name": "王"}, "referent_name", "latin-1"),
    (
        "missing pdf",
        lambda f: {"main_document": ActFile("absent.pdf", f["acte.pdf"].with_name("absent.pdf"))},
        "main_document",
        "file-missing",
    ),
    (
        "main png",
        lambda f: {"main_document": ActFile("plan.png", f["plan.png"]), "annexes": ()},
        "main_document",
        "main-document-type",
    ),
    (
        "main xml nature 1",
        lambda f: {"main_document": ActFile("budget.xml", f["budget.xml"]), "annexes": ()},
        "main_document",
        "main-document-type",
    ),
    (
        "main xml 5 but 7.2",
        lambda f: {
            "main_document": ActFile("budget.xml", f["budget.xml"]),
            "nature": 5,
            "matieres": (7, 2),
            "annexes": (),
        },
        "main_document",
        "main-document-type",
    ),
    (
        "xml act png annex",
        lambda f: {"main_document": ActFile("budget.xml", f["budget.xml"]), "nature": 5, "matieres": (7, 1)},
        "annexes[0]",
        "annex-type",
    ),
    (
        "gif annex",
        lambda f: {"annexes": (ActFile("plan.gif", f["plan.gif"]),)},
        "annexes[0]",
        "file-extension",
    ),
    (
        "pdf with png inside",
        lambda f: {"annexes": (ActFile("fake.pdf", f["fake.pdf"]),)},
        "annexes[0]",
        "file-type-mismatch",
    ),
    ("empty", lambda f: {"main_document": ActFile("vide.pdf", f["vide.pdf"])}, "main_document", "file-empty"),
    (
        "same name",
        lambda f: {"annexes": (ActFile("acte.pdf", f["annexe.pdf"]),)},
        "annexes[0]",
        "file-name-duplicate",
    ),
    (
        "main code",
        lambda f: {"main_document": ActFile("acte.pdf", f["acte.pdf"], "99-DE")},
        "main_document.type_code",
        "type-code-pattern",
    ),
    (
        "annex code",
        lambda f: {"annexes": (ActFile("plan.png", f["plan.png"], "se"),)},
        "annexes[0].type_code",
        "type-code-pattern",
    ),
]


@pytest.mark.parametrize(
    ("change", "field", "rule"), [case[1:] for case in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_each_broken_rule_is_named(files: dict[str, Path], change: Change, field: str, rule: str) -> None:
    # Given an act broken in exactly one way
    act = make_act(files, **change(files))
    # When it is checked
    problems = check_act(act, today=TODAY)
    # Then the one problem names that field and rule
    assert [(p.field, p.rule) for p in problems] == [(field, rule)], problems
    assert problems[0].message


def test_file_problems_name_the_file(files: dict[str, Path]) -> None:
    act = make_act(files, main_document=ActFile("absent.pdf", files["acte.pdf"].with_name("absent.pdf")))
    [problem] = check_act(act, today=TODAY)
    assert problem.file == "absent.pdf"
    assert "absent.pdf" in str(problem)


def test_budget_xml_act_with_pdf_annex_is_accepted(files: dict[str, Path]) -> None:
    act = make_act(
        files,
        nature=5,
        matieres=(7, 1),
        main_document=ActFile("budget.xml", files["budget.xml"]),
        annexes=(ActFile("annexe.pdf", files["annexe.pdf"]),),
    )
    assert check_act(act, today=TODAY) == []


def test_jpeg_annex_is_accepted(files: dict[str, Path]) -> None:
    act = make_act(files, annexes=(ActFile("photo.JPG", files["photo.JPG"]),))
    assert check_act(act, today=TODAY) == []


def test_fail_policy_refuses_what_transliterate_accepts(files: dict[str, Path]) -> None:
    act = make_act(files, objet="Œuvre d’art")
    assert check_act(act, today=TODAY, text_policy=TextPolicy.TRANSLITERATE) == []
    problems = check_act(act, today=TODAY, text_policy=TextPolicy.FAIL)
    assert [(p.field, p.rule) for p in problems] == [("objet", "latin-1"), ("objet", "latin-1")]
    assert "U+0152 Œ" in problems[0].message and "position 1" in problems[0].message


def test_objet_length_counts_the_transliterated_text(files: dict[str, Path]) -> None:
    act = make_act(files, objet="a" * 497 + "…")  # 498 characters, 500 once transliterated
    assert [(p.field, p.rule) for p in check_act(act, today=TODAY)] == [("objet", "objet-length")]


def test_every_problem_is_reported_at_once(files: dict[str, Path]) -> None:
    act = make_act(files, siren="1", numero_interne="_", objet="", return_emails=())
    rules = {p.rule for p in check_act(act, today=TODAY)}
    assert {"siren-pattern", "numero-interne-pattern", "objet-length", "return-emails-required"} <= rules


def small_classification() -> Classification:
    return Classification.from_bytes(
        f"""<actes:RetourClassification xmlns:actes="{NS}">
      <actes:DateClassification>2019-04-18</actes:DateClassification>
      <actes:NaturesActes><actes:NatureActe actes:CodeNatureActe="1" actes:Libelle="D" actes:TypeAbrege="DE">
        <actes:TypePJNatureActe actes:CodeTypePJ="99_DE" actes:Libelle="D"/>
        <actes:TypePJNatureActe actes:CodeTypePJ="99_SE" actes:Libelle="S"/>
      </actes:NatureActe></actes:NaturesActes>
      <actes:Matieres><actes:Matiere1 actes:CodeMatiere="3" actes:Libelle="M">
        <actes:Matiere2 actes:CodeMatiere="2" actes:Libelle="M"/></actes:Matiere1></actes:Matieres>
    </actes:RetourClassification>""".encode()
    )


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"matieres": (9, 9)}, "matieres", "matieres-unknown"),
        ({"matieres": (3, 2, 1)}, "matieres", "matieres-unknown"),
        ({"annexes": (ActFile("plan.png", Path("/nonexistent")),)}, "annexes[0]", "file-missing"),
        ({"classification_date": date(2017, 11, 13)}, "classification_date", "classification-date-outdated"),
    ],
)
def test_classification_rules(files: dict[str, Path], changes: dict[str, Any], field: str, rule: str) -> None:
    act = make_act(files, **changes)
    problems = check_act(act, today=TODAY, classification=small_classification())
    assert [(p.field, p.rule) for p in problems] == [(field, rule)]


def test_type_code_must_be_in_the_classification(files: dict[str, Path]) -> None:
    classification = small_classification()
    assert check_act(make_act(files), today=TODAY, classification=classification) == []
    act = make_act(files, main_document=ActFile("acte.pdf", files["acte.pdf"], "32_DP"))
    problems = check_act(act, today=TODAY, classification=classification)
    assert [(p.field, p.rule, p.file) for p in problems] == [
        ("main_document.type_code", "type-code-unknown", "acte.pdf")
    ]
    act = make_act(files, nature=3)  # 99_AI, 99_SE: nature 3 is not in this classification
    rules = [(p.field, p.rule) for p in check_act(act, today=TODAY, classification=classification)]
    assert rules == [
        ("main_document.type_code", "type-code-unknown"),
        ("annexes[0].type_code", "type-code-unknown"),
    ]


# ---------------------------------------------------------------- XML


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


def test_acte_xml_shape(files: dict[str, Path]) -> None:
    act = make_act(
        files,
        objet="Délibération n° 12 — l’œuvre",
        document_papier=True,
        precedent_id_acte="044-214400152-20240101-DEL2024_001-DE",
        matieres=(3, 2, 1),
    )
    data = build_acte_xml(act, file_names_for(act), text_policy=TextPolicy.TRANSLITERATE)
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:Acte ')
    assert "Délibération n° 12 - l'oeuvre".encode("iso-8859-1") in data
    root = parse(data)
    assert [etree.QName(child).localname for child in root] == [
        "CodeMatiere1",
        "CodeMatiere2",
        "CodeMatiere3",
        "Objet",
        "PrecedentIdentifiantActe",
        "ClassificationDateVersion",
        "Document",
        "Annexes",
        "DocumentPapier",
    ]
    assert root.nsmap == {
        "actes": NS,
        "insee": "http://xml.insee.fr/schema",
        "xsi": "http://www.w3.org/2001/XMLSchema-instance",
    }
    assert root.get(f"{{{NS}}}Date") == "2024-02-12"
    assert root.get(f"{{{NS}}}NumeroInterne") == "DEL2024_012"
    assert root.get(f"{{{NS}}}CodeNatureActe") == "1"
    assert root.get("{http://www.w3.org/2001/XMLSchema-instance}schemaLocation") == f"{NS} actesv1_1.xsd"
    assert root.find(f"{{{NS}}}CodeMatiere3").get(f"{{{NS}}}CodeMatiere") == "1"
    assert root.find(f"{{{NS}}}PrecedentIdentifiantActe").get(f"{{{NS}}}IDActe") == act.precedent_id_acte
    assert root.findtext(f"{{{NS}}}DocumentPapier") == "O"
    annexes = root.find(f"{{{NS}}}Annexes")
    assert annexes.get(f"{{{NS}}}Nombre") == "1"
    assert [e.text for e in annexes.iter(f"{{{NS}}}NomFichier")] == [
        "99_SE-044-214400152-20240212-DEL2024_012-DE-1-1_2.png"
    ]
    assert default_validator().validate_xml(data, "acte.xml") == []


def test_acte_xml_without_annex_or_precedent(files: dict[str, Path]) -> None:
    act = make_act(files, annexes=())
    root = parse(build_acte_xml(act, file_names_for(act), text_policy=TextPolicy.FAIL))
    assert root.find(f"{{{NS}}}PrecedentIdentifiantActe") is None
    assert root.find(f"{{{NS}}}Annexes").get(f"{{{NS}}}Nombre") == "0"
    assert len(root.find(f"{{{NS}}}Annexes")) == 0
    assert root.findtext(f"{{{NS}}}DocumentPapier") == "N"


def test_acte_xml_fail_policy_raises(files: dict[str, Path]) -> None:
    act = make_act(files, objet="cœur")
    with pytest.raises(DocumentError) as caught:
        build_acte_xml(act, file_names_for(act), text_policy=TextPolicy.FAIL)
    assert (caught.value.field, caught.value.rule) == ("objet", "latin-1")


def test_envelope_xml_shape(files: dict[str, Path]) -> None:
    act = make_act(
        files,
        return_emails=("tdt@mairie.fr", "dgs@mairie.fr"),
        referent_name="Loïc Le Bœuf",
        referent_email="loic@mairie.fr",
    )
    data = build_envelope_xml(act, ["m_0.xml"], text_policy=TextPolicy.TRANSLITERATE)
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:EnveloppeCLMISILL ')
    root = parse(data)
    idcl = root.find(f"{{{NS}}}Emetteur/{{{NS}}}IDCL")
    assert dict(idcl.attrib) == {
        "{http://xml.insee.fr/schema}SIREN": "214400152",
        f"{{{NS}}}Departement": "044",
        f"{{{NS}}}Arrondissement": "1",
        f"{{{NS}}}Nature": "31",
    }
    referent = root.find(f"{{{NS}}}Emetteur/{{{NS}}}Referent")
    assert [(etree.QName(e).localname, e.text) for e in referent] == [
        ("Nom", "Loïc Le Boeuf"),
        ("Email", "loic@mairie.fr"),
    ]
    assert [e.text for e in root.iterfind(f"{{{NS}}}AdressesRetour/{{{NS}}}Email")] == [
        "tdt@mairie.fr",
        "dgs@mairie.fr",
    ]
    assert [e.text for e in root.iter(f"{{{NS}}}NomFichier")] == ["m_0.xml"]


def test_envelope_without_referent_or_email(files: dict[str, Path]) -> None:
    root = parse(build_envelope_xml(make_act(files), ["m_0.xml"], text_policy=TextPolicy.FAIL))
    assert root.find(f"{{{NS}}}Emetteur/{{{NS}}}Referent") is None
    with pytest.raises(DocumentError) as caught:
        build_envelope_xml(make_act(files, return_emails=()), ["m_0.xml"], text_policy=TextPolicy.FAIL)
    assert (caught.value.field, caught.value.rule) == ("return_emails", "return-emails-required")


# ---------------------------------------------------------------- archive


def test_archive_content_and_transmission(files: dict[str, Path], tmp_path: Path) -> None:
    act = make_act(
        files,
        annexes=(ActFile("plan.png", files["plan.png"], "99_SE"), ActFile("annexe.pdf", files["annexe.pdf"])),
    )
    transmission, data = build(act)
    assert transmission == Transmission(
        archive_name="SLO-EACT--214400152--20240301-7.tar.gz",
        envelope_name="EACT--214400152--20240301-7.xml",
        message_name="044-214400152-20240212-DEL2024_012-DE-1-1_0.xml",
        id_acte="044-214400152-20240212-DEL2024_012-DE",
        file_names=file_names_for(act),
        size=len(data),
    )
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "EACT--214400152--20240301-7.xml",
            "044-214400152-20240212-DEL2024_012-DE-1-1_0.xml",
            "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_1.pdf",
            "99_SE-044-214400152-20240212-DEL2024_012-DE-1-1_2.png",
            "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_3.pdf",
        ]
        assert all(m.isfile() and m.mode == 0o644 and m.uid == 0 and m.gid == 0 for m in members)
        assert {m.mtime for m in members} == {1709251200}  # 2024-03-01T00:00:00Z
        assert tar.extractfile(members[2]).read() == PDF  # type: ignore[union-attr]
        assert tar.extractfile(members[3]).read() == PNG  # type: ignore[union-attr]
    path = tmp_path / transmission.archive_name
    path.write_bytes(data)
    assert default_validator().validate_archive(path) == []
    assert default_validator().validate_file(path) == []


def test_archive_is_deterministic(files: dict[str, Path]) -> None:
    assert build(make_act(files))[1] == build(make_act(files))[1]


def _text_pdf(lines: int) -> bytes:
    line = b"BT /F1 12 Tf 72 %d Td (Deliberation, ligne %d) Tj ET\n"
    return b"%PDF-1.4\n" + b"".join(line % (i, i) for i in range(lines))


def test_archive_stores_what_does_not_compress_and_deflates_the_rest(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # Given a signed PDF's compressed streams (random bytes), a text PDF, and a file that is both
    rnd = random.Random(7)
    noise = b"%PDF-1.7\n" + rnd.randbytes(600_000)
    text = _text_pdf(30_000)
    mixed = text[:300_000] + rnd.randbytes(400_000) + text[:300_000]
    annexes = []
    for name, data in (("scan.pdf", noise), ("texte.pdf", text), ("mixte.pdf", mixed)):
        (tmp_path / name).write_bytes(data)
        annexes.append(ActFile(name, tmp_path / name))
    act = make_act(files, annexes=tuple(annexes))
    # When the archive is built
    transmission, archive = build(act)
    # Then it is one gzip member (the header gzip -9 writes, dated the generation day) holding the tar
    assert archive[:10] == gzip.compress(b"", 9, mtime=1709251200)[:10]
    assert zlib.decompress(archive, 31) == gzip.decompress(archive)  # no second member, nothing after it
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        contents = [tar.extractfile(m).read() for m in tar.getmembers()]  # type: ignore[union-attr]
    assert contents[-3:] == [noise, text, mixed]
    path = tmp_path / transmission.archive_name
    path.write_bytes(archive)
    assert default_validator().validate_archive(path) == []
    # And what does not compress is stored as it is (its bytes appear in the stream, but where a stored
    # block of 64 KiB ends), what compresses is deflated, even inside one file: no bigger than gzip -9
    def stored(data: bytes, start: int, end: int) -> float:
        slices = [data[i:i + 1000] for i in range(start, end - 1000, 10_000)]
        return sum(piece in archive for piece in slices) / len(slices)

    assert stored(noise, 10_000, len(noise)) > 0.9 and stored(mixed, 400_000, 600_000) > 0.9
    assert text[:20_000] not in archive and mixed[:20_000] not in archive and mixed[-20_000:] not in archive
    assert len(archive) <= len(gzip.compress(gzip.decompress(archive), 9)) + 1024


def test_archive_stops_with_a_named_error_when_a_file_fails_midway(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 3 MiB scan (stored, not deflated) whose disk fails after its first MiB
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.7\n" + random.Random(5).randbytes(3 * 1024 * 1024))
    act = make_act(files, annexes=(ActFile("scan.pdf", scan),))
    real_open = Path.open

    class Failing(io.BufferedReader):
        def read(self, size: int | None = -1, /) -> bytes:
            if self.tell() >= 1024 * 1024:
                raise OSError(5, "Input/output error")
            return super().read(size)

    def opening(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if path == scan and mode == "rb":
            return Failing(io.FileIO(path, "rb"))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", opening)
    # When the archive is built, Then the build stops with the file and the rule named
    with pytest.raises(DocumentError) as caught:
        build(act)
    assert (caught.value.path, caught.value.rule) == ("scan.pdf", "file-readable")
    assert "Input/output error" in str(caught.value)


def test_archive_reads_with_the_system_tools(files: dict[str, Path], tmp_path: Path) -> None:
    tools = [t for t in ("gzip", "tar") if shutil.which(t)]
    if not tools:
        pytest.skip("neither gzip nor tar on this machine")
    noise = tmp_path / "scan.pdf"
    noise.write_bytes(b"%PDF-1.7\n" + random.Random(3).randbytes(300_000))
    transmission, archive = build(make_act(files, annexes=(ActFile("scan.pdf", noise),)))
    path = tmp_path / transmission.archive_name
    path.write_bytes(archive)
    if "gzip" in tools:
        assert subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode == 0
    if "tar" in tools:
        listing = subprocess.run(["tar", "tzf", str(path)], capture_output=True, text=True, check=True).stdout
        assert listing.splitlines()[-1] == "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_2.pdf"


def test_archive_refuses_a_broken_act_listing_all_problems(files: dict[str, Path]) -> None:
    out = io.BytesIO()
    act = make_act(
        files, objet="x" * 600, numero_interne="A B", annexes=(ActFile("fake.pdf", files["fake.pdf"]),)
    )
    with pytest.raises(ValidationFailed) as caught:
        build_archive(
            act, out, quadrigram="EACT", trigram="SLO", serial=1, generation_date=TODAY, today=TODAY
        )
    assert [(p.file, p.field, p.rule) for p in caught.value.problems] == [
        ("acte.pdf", "numero_interne", "numero-interne-pattern"),
        ("acte.pdf", "objet", "objet-length"),
        ("fake.pdf", "annexes[0]", "file-type-mismatch"),
    ]
    assert out.getvalue() == b""


def test_archive_refuses_a_future_decision_by_default_today(files: dict[str, Path]) -> None:
    act = make_act(files, decision_date=date.today() + timedelta(days=2))
    with pytest.raises(ValidationFailed) as caught:
        build(act, today=None)
    assert caught.value.problems[0].rule == "decision-date-future"


class RefusingValidator(ActesValidator):
    def validate_xml(self, data: bytes, name: str) -> list[Problem]:
        return [Problem("refused", file=name, line=3, field="/actes:Acte/actes:Objet", rule="xsd")]


def test_archive_refuses_what_the_schema_refuses(files: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        build(make_act(files), validator=RefusingValidator())
    assert [(p.file, p.rule) for p in caught.value.problems] == [
        ("EACT--214400152--20240301-7.xml", "xsd"),
        ("044-214400152-20240212-DEL2024_012-DE-1-1_0.xml", "xsd"),
    ]


def test_archive_size_limit(files: dict[str, Path], tmp_path: Path) -> None:
    # Given a 2 MiB annex that does not compress
    big = tmp_path / "gros.pdf"
    big.write_bytes(b"%PDF-1.7\n" + os.urandom(2 * 1024 * 1024))
    act = make_act(files, annexes=(ActFile("gros.pdf", big),))
    # When the limit is 1 MiB, Then the build stops with a named error
    out = io.BytesIO()
    with pytest.raises(DocumentError) as caught:
        build_archive(
            act,
            out,
            quadrigram="EACT",
            trigram="SLO",
            serial=1,
            generation_date=TODAY,
            today=TODAY,
            max_size=1024 * 1024,
        )
    assert (caught.value.field, caught.value.rule) == ("size", "archive-max-size")
    assert len(out.getvalue()) <= 1024 * 1024
    # And with the default limit it goes through
    transmission, data = build(act)
    assert transmission.size == len(data) > 2 * 1024 * 1024


# ---------------------------------------------------------------- validator


def test_validator_reports_line_path_and_message(files: dict[str, Path]) -> None:
    act = make_act(files)
    data = build_acte_xml(act, file_names_for(act), text_policy=TextPolicy.FAIL)
    broken = data.replace(b"<actes:DocumentPapier>N<", b"<actes:DocumentPapier>X<")
    [problem] = default_validator().validate_xml(broken, "m_0.xml")
    assert problem.file == "m_0.xml"
    assert problem.field == "/actes:Acte/actes:DocumentPapier"
    assert problem.rule == "xsd"
    assert problem.line == broken.splitlines().index(b"  <actes:DocumentPapier>X</actes:DocumentPapier>") + 1
    assert "actes:DocumentPapier" in problem.message


def test_validator_reports_malformed_xml_and_doctype() -> None:
    [problem] = default_validator().validate_xml(b"<actes:Acte", "m_0.xml")
    assert (problem.file, problem.rule) == ("m_0.xml", "xml-well-formed")
    [problem] = default_validator().validate_xml(b"<!DOCTYPE a []><a/>", "m_0.xml")
    assert problem.rule == "xml-doctype"


def test_validator_compiles_once() -> None:
    assert default_validator() is default_validator()


def write_tar(path: Path, members: dict[str, bytes], folder: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        if folder:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def good_members(files: dict[str, Path]) -> tuple[str, dict[str, bytes]]:
    _, data = build(make_act(files))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return "SLO-EACT--214400152--20240301-7.tar.gz", {
            m.name: tar.extractfile(m).read() for m in tar.getmembers()
        }  # type: ignore[union-attr]


def test_validate_archive_finds_missing_unexpected_and_nested(files: dict[str, Path], tmp_path: Path) -> None:
    name, members = good_members(files)
    document = "99_DE-044-214400152-20240212-DEL2024_012-DE-1-1_1.pdf"
    del members[document]
    members["notes.txt"] = b"x"
    members["dir/other.pdf"] = PDF
    problems = default_validator().validate_archive(write_tar(tmp_path / name, members, folder="dir"))
    assert sorted((p.field, p.rule) for p in problems) == sorted(
        [
            ("dir", "archive-flat"),
            ("dir/other.pdf", "archive-flat"),
            (document, "archive-document-missing"),
            ("notes.txt", "archive-unexpected-file"),
        ]
    )


def test_validate_archive_with_an_acte_breaking_the_schema_reports_only_that(
    files: dict[str, Path], tmp_path: Path
) -> None:
    # Given a good archive whose Acte has an Objet of 600 characters
    name, members = good_members(files)
    (message,) = [m for m in members if MESSAGE_NAME.fullmatch(m)]
    members[message] = re.sub(rb"<actes:Objet>.*?</actes:Objet>", b"<actes:Objet>" + b"A" * 600 + b"</actes:Objet>",
                              members[message])

    # When it is validated
    problems = default_validator().validate_archive(write_tar(tmp_path / name, members))

    # Then the schema error is the one problem: the files the Acte names are not "unexpected"
    assert [(p.file, p.field, p.rule) for p in problems] == [(message, "/actes:Acte/actes:Objet", "xsd")]


def test_validate_archive_checks_names_and_content(files: dict[str, Path], tmp_path: Path) -> None:
    name, members = good_members(files)
    annex = "99_SE-044-214400152-20240212-DEL2024_012-DE-1-1_2.png"
    members[annex] = PDF  # a PDF named .png
    problems = default_validator().validate_archive(write_tar(tmp_path / "bad-name.tar.gz", members))
    assert [(p.field, p.rule) for p in problems] == [(None, "archive-name"), (annex, "file-type-mismatch")]
    problems = default_validator().validate_archive(write_tar(tmp_path / name, members))
    assert [(p.field, p.rule) for p in problems] == [(annex, "file-type-mismatch")]


def test_validate_archive_unlisted_message_and_not_gzip(files: dict[str, Path], tmp_path: Path) -> None:
    name, members = good_members(files)
    members["044-214400152-20240212-OTHER-DE-1-1_0.xml"] = b"<x/>"
    problems = default_validator().validate_archive(write_tar(tmp_path / name, members))
    assert [p.rule for p in problems] == ["archive-message-unlisted"]
    bogus = tmp_path / "SLO-EACT--214400152--20240301-8.tar.gz"
    bogus.write_bytes(b"not a tar")
    assert [p.rule for p in default_validator().validate_file(bogus)] == ["archive-readable"]
    assert [p.rule for p in default_validator().validate_file(files["acte.pdf"])] == ["file-kind"]


def test_check_act_lives_in_actes_rules_and_is_re_exported() -> None:
    assert actes_out.check_act is actes_rules.check_act
    assert actes_rules.__all__ == ["check_act"]
    assert all(hasattr(actes_out, name) for name in actes_out.__all__)
