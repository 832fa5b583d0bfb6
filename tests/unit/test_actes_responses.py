"""The collectivité's answers to the préfecture's letters: the sidecar read, the archive built."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.errors import DocumentError, ValidationFailed
from transformers.actes_model import ActFile
from transformers.actes_out import Transmission
from transformers.actes_responses import (
    DOCUMENT_COUNTS,
    LETTER_OF,
    RESPONSE_ROOTS,
    ResponseRequest,
    build_response_archive,
    read_response,
    response_members,
)
from transformers.actes_validate import default_validator

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
ID_ACTE = "044-214400152-20260112-DEL2026_042-DE"
LETTER_DATE = date(2026, 11, 25)
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
SIDECAR = "reponse-DEL2026_042.json"
COLLECTIVITE: dict[str, Any] = dict(
    departement="044", return_emails=("actes@saint-herblain.fr",), nature_collectivite="31", arrondissement=1,
    quadrigram="EACT", trigram="SLO", serial=3, generation_date=date(2026, 11, 27),
)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    contents = {"rapport.pdf": PDF, "avis.pdf": PDF, "plan.PNG": PNG, "fake.pdf": PNG, "vide.pdf": b"",
                "plan.gif": b"GIF89a"}
    paths = {}
    for name, data in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def official_schema(reference_dir: Path) -> etree.XMLSchema:
    """The ministry's actesv1_1.xsd (tests/conformance reads it the same way)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(reference_dir / "actes" / "xsd" / "actesv1_1.xsd"), parser))


def sidecar(**reponse: Any) -> bytes:
    body = {"acte": ID_ACTE, "type": "3-4", "documents": [{"fichier": "rapport.pdf"}], **reponse}
    return json.dumps({"reponse": {k: v for k, v in body.items() if v is not None}}).encode()


def documents(*names: str) -> list[dict[str, str]]:
    return [{"fichier": name} for name in names]


def request_for(code: str, files: dict[str, Path], count: int) -> ResponseRequest:
    names = ["rapport.pdf", "plan.PNG", "avis.pdf"][:count]
    return ResponseRequest(ID_ACTE, code, None, tuple(ActFile(n, files[n]) for n in names), SIDECAR)


def build(request: ResponseRequest, **changes: Any) -> tuple[Transmission, bytes]:
    out = io.BytesIO()
    transmission = build_response_archive(request, out, letter_date=LETTER_DATE, **{**COLLECTIVITE, **changes})
    return transmission, out.getvalue()


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def parse(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))


# ---------------------------------------------------------------- the sidecar


def test_a_response_sidecar_reads_to_its_request(files: dict[str, Path]) -> None:
    data = sidecar(date_courrier="2026-11-25", documents=documents("rapport.pdf", "plan.PNG"))

    request = read_response(SIDECAR, data, files)

    assert request == ResponseRequest(
        id_acte=ID_ACTE, code="3-4", letter_date=LETTER_DATE, sidecar=SIDECAR,
        documents=(ActFile("rapport.pdf", files["rapport.pdf"]), ActFile("plan.PNG", files["plan.PNG"])),
    )
    assert (request.letter_code, request.siren, request.root) == ("3-1", "214400152", "PieceComplementaire")


def test_the_letter_date_is_optional_and_an_acknowledgment_takes_no_document(files: dict[str, Path]) -> None:
    request = read_response(SIDECAR, sidecar(type="4-2", documents=None), files)

    assert (request.code, request.letter_code, request.letter_date, request.documents) == ("4-2", "4-1", None, ())


def test_each_answer_has_its_letter_and_its_root() -> None:
    assert LETTER_OF == {"2-2": "2-1", "3-2": "3-1", "3-3": "3-1", "3-4": "3-1", "4-2": "4-1", "4-3": "4-1",
                         "4-4": "4-1"}
    assert set(RESPONSE_ROOTS) == set(LETTER_OF) == set(DOCUMENT_COUNTS)


def test_response_members_are_the_plain_document_names_the_sidecar_lists() -> None:
    data = sidecar(documents=documents("rapport.pdf", "../etc/passwd", "sous\\dossier.pdf", "rapport.pdf", "avis.pdf"))

    assert response_members(SIDECAR, data) == ["rapport.pdf", "avis.pdf"]
    assert response_members(SIDECAR, b"{not json") == []
    assert response_members(SIDECAR, b'{"reponse": {"documents": 3}}') == []
    assert response_members(SIDECAR, b"[1, 2]") == []


@pytest.mark.parametrize(
    ("data", "field", "rule"),
    [
        (b"{not json", None, "json-syntax"),
        (b'{"reponse": "\xe9"}', None, "encoding"),
        (b"[]", "reponse", "type"),
        (b"{}", "reponse", "required"),
        (b'{"reponse": []}', "reponse", "type"),
        (json.dumps({"reponse": {"acte": ID_ACTE, "type": "3-2"}, "version": 1}).encode(), "version", "unknown-key"),
        (sidecar(objet="x"), "reponse.objet", "unknown-key"),
        (sidecar(type="3-6"), "reponse.type", "response-type"),
        (sidecar(type=None), "reponse.type", "required"),
        (sidecar(type=34), "reponse.type", "response-type"),
        (sidecar(acte=None), "reponse.acte", "required"),
        (sidecar(acte="044-214400152-20260112-DEL2026_042"), "reponse.acte", "idacte-pattern"),
        (sidecar(acte=["a", "b"]), "reponse.acte", "single-value"),
        (sidecar(date_courrier="25/11/2026"), "reponse.date_courrier", "date-format"),
        (sidecar(documents="rapport.pdf"), "reponse.documents", "type"),
        (sidecar(documents=["rapport.pdf"]), "reponse.documents[0]", "type"),
        (sidecar(documents=[{}]), "reponse.documents[0].fichier", "required"),
        (sidecar(documents=[{"fichier": "rapport.pdf", "type": "99_DE"}]), "reponse.documents[0].type",
         "unknown-key"),
        (sidecar(documents=documents("../rapport.pdf")), "reponse.documents[0].fichier", "file-name"),
        (sidecar(documents=documents("absent.pdf")), "reponse.documents[0].fichier", "file-present"),
        (sidecar(documents=documents("rapport.pdf", "rapport.pdf")), "reponse.documents[1].fichier",
         "file-name-duplicate"),
        (sidecar(documents=documents("plan.gif")), "reponse.documents[0].fichier", "file-extension"),
        (sidecar(documents=documents("fake.pdf")), "reponse.documents[0].fichier", "file-type-mismatch"),
        (sidecar(documents=documents("vide.pdf")), "reponse.documents[0].fichier", "file-empty"),
        (sidecar(type="3-2"), "reponse.documents", "document-count"),
        (sidecar(type="4-2"), "reponse.documents", "document-count"),
        (sidecar(type="3-4", documents=[]), "reponse.documents", "document-count"),
        (sidecar(type="3-3", documents=None), "reponse.documents", "document-count"),
        (sidecar(type="2-2", documents=documents("rapport.pdf", "avis.pdf")), "reponse.documents",
         "document-count"),
        (sidecar(type="4-3", documents=documents("rapport.pdf", "avis.pdf")), "reponse.documents",
         "document-count"),
        (sidecar(type="4-4", documents=[]), "reponse.documents", "document-count"),
    ],
)
def test_each_sidecar_mistake_is_named_by_field_and_rule(
    files: dict[str, Path], data: bytes, field: str | None, rule: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        read_response(SIDECAR, data, files)

    assert caught.value.path == SIDECAR
    assert (field, rule) in [(p.field, p.rule) for p in caught.value.problems]
    assert {p.file for p in caught.value.problems} == {SIDECAR}


def test_every_sidecar_mistake_is_reported_at_once_in_words(files: dict[str, Path]) -> None:
    data = sidecar(type="3-1", acte="44-214400152", documents=documents("absent.pdf", "fake.pdf"))

    with pytest.raises(DocumentError) as caught:
        read_response(SIDECAR, data, files)

    assert [str(p) for p in caught.value.problems] == [
        f"{SIDECAR}: reponse.type: type '3-1' is not an answer code (2-2, 3-2, 3-3, 3-4, 4-2, 4-3, 4-4); 3-1 is the "
        "préfecture's letter: answer it with 3-2, 3-3, 3-4 [response-type]",
        f"{SIDECAR}: reponse.acte: '44-214400152' is not an IDActe DDD-SIREN-YYYYMMDD-NUMERO-NN (such as "
        "044-214400152-20260112-DEL2026_042-DE) [idacte-pattern]",
        f"{SIDECAR}: reponse.documents[0].fichier: 'absent.pdf' is named by the sidecar but is not in the bundle "
        "(files: avis.pdf, fake.pdf, plan.PNG, plan.gif, rapport.pdf, vide.pdf) [file-present]",
        f"{SIDECAR}: reponse.documents[1].fichier: fake.pdf: the name says pdf but the content is png "
        "[file-type-mismatch]",
    ]
    assert caught.value.message == f"{SIDECAR}: 4 problem(s) in the response sidecar"


def test_a_document_for_an_acknowledgment_says_why(files: dict[str, Path]) -> None:
    with pytest.raises(DocumentError) as caught:
        read_response(SIDECAR, sidecar(type="3-2"), files)

    assert str(caught.value) == (
        f"{SIDECAR}: reponse.documents: 3-2 (ARDemandePieceComplementaire) takes no document (its message carries "
        "only IDActe and DateCourrierPref); 1 given [document-count]"
    )


# ---------------------------------------------------------------- the archive


@pytest.mark.parametrize(
    ("code", "count"),
    [("2-2", 1), ("3-2", 0), ("3-3", 1), ("3-4", 1), ("3-4", 3), ("4-2", 0), ("4-3", 1), ("4-4", 1)],
)
def test_each_answer_builds_a_flat_archive_valid_against_both_schemas(
    files: dict[str, Path], official_schema: etree.XMLSchema, code: str, count: int
) -> None:
    request = request_for(code, files, count)

    transmission, data = build(request)

    base = f"{ID_ACTE}-{code}"
    names = {d.source_name: f"{base}_{n}.{d.source_name.rsplit('.', 1)[1].lower()}"
             for n, d in enumerate(request.documents, start=1)}
    envelope = "EACT--214400152--20261127-3.xml"
    assert transmission == Transmission(
        archive_name=f"SLO-{envelope.removesuffix('.xml')}.tar.gz", envelope_name=envelope,
        message_name=f"{base}_0.xml", id_acte=ID_ACTE, file_names=names, size=len(data),
    )
    found = members(data)
    assert list(found) == [envelope, f"{base}_0.xml", *names.values()]
    assert [found[names[d.source_name]] for d in request.documents] == [d.path.read_bytes() for d in request.documents]
    for name in (envelope, f"{base}_0.xml"):
        assert found[name].startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n')
        assert default_validator().validate_xml(found[name], name) == []
        assert official_schema.validate(parse(found[name])), official_schema.error_log
    root = parse(found[envelope])
    assert dict(root.find(f"{{{NS}}}Emetteur/{{{NS}}}IDCL").attrib) == {
        "{http://xml.insee.fr/schema}SIREN": "214400152", f"{{{NS}}}Departement": "044",
        f"{{{NS}}}Arrondissement": "1", f"{{{NS}}}Nature": "31",
    }
    assert [e.text for e in root.iterfind(f"{{{NS}}}AdressesRetour/{{{NS}}}Email")] == ["actes@saint-herblain.fr"]
    assert [e.text for e in root.iter(f"{{{NS}}}NomFichier")] == [f"{base}_0.xml"]
    message = parse(found[f"{base}_0.xml"])
    assert etree.QName(message).localname == RESPONSE_ROOTS[code]
    assert message.get(f"{{{NS}}}IDActe") == ID_ACTE
    assert message.get(f"{{{NS}}}DateCourrierPref") == "2026-11-25"
    assert [e.text for e in message.iter(f"{{{NS}}}NomFichier")] == list(names.values())
    path = "actes:Documents/actes:Document" if code == "3-4" else "actes:Document"
    assert len(message.findall(path, {"actes": NS})) == count


def test_the_archive_is_the_same_bytes_each_time(files: dict[str, Path]) -> None:
    request = request_for("3-4", files, 2)

    assert build(request)[1] == build(request)[1]


@pytest.mark.parametrize(
    ("request_changes", "changes", "field", "rule"),
    [
        ({"letter_date": date(2026, 11, 24)}, {}, "reponse.date_courrier", "letter-date"),
        ({}, {"departement": "035"}, "reponse.acte", "idacte-departement"),
        ({"code": "5-1"}, {}, "reponse.type", "response-type"),
        ({"code": "3-2"}, {}, "reponse.documents", "document-count"),
        ({"id_acte": "044-214400152-20260112-DEL2026_042"}, {}, "reponse.acte", "idacte-pattern"),
    ],
)
def test_the_builder_checks_the_request_again(
    files: dict[str, Path], request_changes: dict[str, Any], changes: dict[str, Any], field: str, rule: str
) -> None:
    request = dataclasses.replace(request_for("3-4", files, 1), **request_changes)

    with pytest.raises(ValidationFailed) as caught:
        build(request, **changes)

    assert (caught.value.path, caught.value.field, caught.value.rule) == (SIDECAR, field, rule)


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"return_emails": ()}, "return_emails", "return-emails-required"),
        ({"quadrigram": "EAC"}, "quadrigram", "quadrigram-pattern"),
        ({"serial": 10000}, "serial", "envelope-serial"),
        ({"max_size": 200}, "size", "archive-max-size"),
    ],
)
def test_the_archive_refuses_what_an_act_archive_refuses(
    files: dict[str, Path], changes: dict[str, Any], field: str, rule: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        build(request_for("3-3", files, 1), **changes)

    assert (caught.value.field, caught.value.rule) == (field, rule)


def test_envelope_values_breaking_the_schema_are_refused(files: dict[str, Path]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        build(request_for("4-4", files, 1), return_emails=("pas une adresse",), nature_collectivite="3")

    assert caught.value.path == "SLO-EACT--214400152--20261127-3.tar.gz"
    assert {p.rule for p in caught.value.problems} == {"xsd"}
    assert {p.file for p in caught.value.problems} == {"EACT--214400152--20261127-3.xml"}
    assert len(caught.value.problems) == 2
