"""The collectivité answers the préfecture's letters; the legality platform acknowledges the answers.

Through :class:`simulators.legality_platform.Platform` directly (no HTTP): an act is submitted
and acknowledged, the préfecture writes (2-1, 3-1, 4-1), Hent builds the answer's archive with
:func:`transformers.actes_responses.build_response_archive`, and the platform answers it — a
3-5 or 4-5 valid against the ministry's own schema and read back by ``parse_message``, no
message for 2-2/3-2/4-2, an AnomalieEnveloppe for an answer to a letter never sent, DUPLICATE
for the same answer twice.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from simulators.legality_platform import ODT_VERIF_17, Platform, Transaction
from simulators.legality_soap import LegalityFault
from simulators.pdf import make_pdf
from tests.harness import CLASSIFICATION
from transformers.actes_in import parse_message
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import Transmission, build_archive
from transformers.actes_responses import build_response_archive, read_response

pytestmark = pytest.mark.integration

NS = "http://www.interieur.gouv.fr/ACTES#v1.1-20040216"
TODAY = date.today()
ID_ACTE = "044-214400152-20260112-DEL2026_042-DE"


@pytest.fixture(scope="module")
def ministry_schema(reference_dir: Path) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(reference_dir / "actes" / "xsd" / "actesv1_1.xsd"), parser))


def assert_ministry_valid(schema: etree.XMLSchema, data: bytes) -> etree._Element:
    assert data.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    assert schema.validate(document), schema.error_log
    return document


@pytest.fixture
def platform() -> Platform:
    return Platform(CLASSIFICATION)


@pytest.fixture
def acknowledged(platform: Platform, tmp_path: Path) -> Transaction:
    """The act 044-214400152-20260112-DEL2026_042-DE, submitted and acknowledged."""
    main = tmp_path / "deliberation.pdf"
    main.write_bytes(make_pdf(["Délibération DEL2026_042"]))
    act = CanonicalAct(
        siren="214400152", departement="044", arrondissement=1, collectivite_nature="31",
        decision_date=date(2026, 1, 12), numero_interne="DEL2026_042", nature=1, matieres=(3, 2),
        objet="Cession de la parcelle BK 112", classification_date=date(2025, 1, 15),
        main_document=ActFile("deliberation.pdf", main), return_emails=("actes@saint-herblain.fr",),
    )
    out = io.BytesIO()
    sent = build_archive(act, out, quadrigram="EACT", trigram="SLO", serial=1, generation_date=date(2026, 1, 13),
                         today=date(2026, 1, 13))
    transaction = platform.submit(sent.archive_name, sent.envelope_name, sent.id_acte, out.getvalue())
    assert (platform.status(transaction.transaction_id), transaction.id_acte) == ("ACKNOWLEDGED", ID_ACTE)
    return transaction


class Collectivite:
    """Writes response bundles and builds their archives, one envelope serial each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.serial = 1

    def answer(self, code: str, letter_date: date, documents: int = 1, *,
               id_acte: str = ID_ACTE) -> tuple[Transmission, bytes]:
        files = {}
        for index in range(documents):
            name = f"piece-{index + 1}.pdf"
            files[name] = self.folder / name
            files[name].write_bytes(make_pdf([f"Réponse {code}, pièce {index + 1}"]))
        sidecar = json.dumps({"reponse": {"acte": id_acte, "type": code, "date_courrier": letter_date.isoformat(),
                                          "documents": [{"fichier": name} for name in files]}}).encode()
        request = read_response("reponse.json", sidecar, files)
        self.serial += 1
        out = io.BytesIO()
        transmission = build_response_archive(
            request, out, letter_date=letter_date, departement="044", return_emails=("actes@saint-herblain.fr",),
            nature_collectivite="31", arrondissement=1, quadrigram="EACT", trigram="SLO", serial=self.serial,
            generation_date=TODAY,
        )
        return transmission, out.getvalue()


@pytest.fixture
def collectivite(tmp_path: Path) -> Collectivite:
    folder = tmp_path / "bundle"
    folder.mkdir()
    return Collectivite(folder)


def submit(platform: Platform, built: tuple[Transmission, bytes]) -> Transaction:
    transmission, data = built
    return platform.submit(transmission.archive_name, transmission.envelope_name, transmission.id_acte, data)


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def repack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# ---------------------------------------------------------------- acknowledged with a message


@pytest.mark.parametrize(
    ("letter", "code", "documents", "ack", "root"),
    [
        ("3-1", "3-4", 2, "3-5", "ARPieceComplementaire"),
        ("3-1", "3-3", 1, "3-5", "ARPieceComplementaire"),
        ("4-1", "4-4", 1, "4-5", "ARReponseRejetLettreObservations"),
        ("4-1", "4-3", 1, "4-5", "ARReponseRejetLettreObservations"),
    ],
)
def test_an_answer_with_documents_is_acknowledged_by_the_ministry(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite, ministry_schema: etree.XMLSchema,
    letter: str, code: str, documents: int, ack: str, root: str,
) -> None:
    sent = platform.followup(ID_ACTE, letter)

    transaction = submit(platform, collectivite.answer(code, sent.day, documents))

    assert platform.status(transaction.transaction_id) == "ACKNOWLEDGED"
    assert (transaction.id_acte, transaction.act_key, transaction.detail) == (ID_ACTE, None, None)
    assert re.fullmatch(rf"{re.escape(ID_ACTE)}-{ack}_[0-9]+\.xml", transaction.message_name)
    document = assert_ministry_valid(ministry_schema, transaction.message)
    assert etree.QName(document).localname == root
    assert document.get(f"{{{NS}}}DateReception") == TODAY.isoformat()
    infos = document.find(f"{{{NS}}}InfosCourrierPref")
    assert dict(infos.attrib) == {f"{{{NS}}}IDActe": ID_ACTE, f"{{{NS}}}DateCourrierPref": sent.day.isoformat()}
    message = parse_message(transaction.message, transaction.message_name)
    assert (message.kind, message.code, message.id_acte, message.errors) == (root, ack, ID_ACTE, ())
    assert message.dates["DateCourrierPref"] == sent.day
    assert platform.counts()["responses"] == {f"{ID_ACTE}:{code}": 1}
    assert platform.counts()["responses_recorded"] == {f"{ID_ACTE}:{code}": 1}


# ---------------------------------------------------------------- acknowledged without a message


@pytest.mark.parametrize(("letter", "code", "documents"), [("2-1", "2-2", 1), ("3-1", "3-2", 0), ("4-1", "4-2", 0)])
def test_an_answer_the_ministry_does_not_acknowledge_is_acknowledged_without_message(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite, letter: str, code: str,
    documents: int,
) -> None:
    sent = platform.followup(ID_ACTE, letter)

    transaction = submit(platform, collectivite.answer(code, sent.day, documents))

    assert platform.status(transaction.transaction_id) == "ACKNOWLEDGED"
    assert (transaction.id_acte, transaction.message_name, transaction.message) == (ID_ACTE, "", b"")
    assert transaction.detail is not None and "no message" in transaction.detail
    assert platform.followups(transaction.transaction_id) == []


# ---------------------------------------------------------------- refused


def rejected(platform: Platform, transaction: Transaction, rule: str) -> str:
    assert platform.status(transaction.transaction_id) == "REJECTED"
    assert transaction.id_acte is None
    assert transaction.message_name == f"ANO_{transaction.archive_name.removeprefix('SLO-')[:-7]}.xml"
    message = parse_message(transaction.message, transaction.message_name)
    assert message.kind == "AnomalieEnveloppe"
    assert transaction.detail is not None and f"{rule} : " in transaction.detail
    return transaction.detail


def test_an_answer_to_a_letter_never_sent_is_refused(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite, ministry_schema: etree.XMLSchema
) -> None:
    platform.followup(ID_ACTE, "4-1")  # a letter, but of another kind

    transaction = submit(platform, collectivite.answer("3-4", TODAY))

    detail = rejected(platform, transaction, "response-letter")
    assert f"no letter 3-1 of {TODAY} was sent about act {ID_ACTE} (letters 3-1 sent: none)" in detail
    assert_ministry_valid(ministry_schema, transaction.message)


def test_an_answer_to_another_date_than_the_letter_s_is_refused(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    sent = platform.followup(ID_ACTE, "4-1")

    transaction = submit(platform, collectivite.answer("4-4", date(2026, 2, 1)))

    detail = rejected(platform, transaction, "response-letter")
    assert f"(letters 4-1 sent: {sent.day})" in detail


def test_an_answer_about_an_act_never_acknowledged_is_refused(
    platform: Platform, collectivite: Collectivite
) -> None:
    transaction = submit(platform, collectivite.answer("2-2", TODAY))

    assert ODT_VERIF_17 in rejected(platform, transaction, "response-act-unknown")


def test_an_answer_with_a_document_that_is_not_what_its_name_says_is_refused(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    sent = platform.followup(ID_ACTE, "3-1")
    transmission, data = collectivite.answer("3-4", sent.day)
    files = members(data)
    files[f"{ID_ACTE}-3-4_1.pdf"] = b"\x89PNG\r\n\x1a\n" + bytes(16)

    transaction = platform.submit(transmission.archive_name, transmission.envelope_name, ID_ACTE, repack(files))

    rejected(platform, transaction, "file-type-mismatch")


def test_an_answer_whose_document_is_missing_is_refused(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    sent = platform.followup(ID_ACTE, "3-1")
    transmission, data = collectivite.answer("3-3", sent.day)
    files = members(data)
    del files[f"{ID_ACTE}-3-3_1.pdf"]

    transaction = platform.submit(transmission.archive_name, transmission.envelope_name, ID_ACTE, repack(files))

    rejected(platform, transaction, "archive-document-missing")


# ---------------------------------------------------------------- duplicates


def test_the_same_answer_twice_is_a_duplicate_of_the_first(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    sent = platform.followup(ID_ACTE, "3-1")
    first = submit(platform, collectivite.answer("3-4", sent.day))

    with pytest.raises(LegalityFault) as caught:
        submit(platform, collectivite.answer("3-4", sent.day))  # another envelope, the same answer

    assert (caught.value.code, caught.value.transaction_id) == ("DUPLICATE", first.transaction_id)
    assert f"answer {ID_ACTE}:3-4:{sent.day} already received" in caught.value.message
    assert platform.counts()["responses"] == {f"{ID_ACTE}:3-4": 2}
    assert platform.counts()["responses_recorded"] == {f"{ID_ACTE}:3-4": 1}


def test_an_answer_is_never_a_duplicate_of_the_act_and_leaves_it_alone(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    sent = platform.followup(ID_ACTE, "3-1")
    answers = [submit(platform, collectivite.answer(code, sent.day, count)) for code, count in (("3-2", 0),
                                                                                                 ("3-4", 1))]

    assert [platform.status(t.transaction_id) for t in answers] == ["ACKNOWLEDGED", "ACKNOWLEDGED"]
    assert platform.counts()["by_act"] == {"214400152:DEL2026_042:2026-01-12": 1}
    later = platform.followup(ID_ACTE, "4-1")  # the préfecture still writes about the act itself
    assert platform.followups(acknowledged.transaction_id)[-1] == later
    with pytest.raises(LegalityFault) as caught:
        platform.cancel(answers[1].transaction_id, ID_ACTE)
    assert caught.value.code == "NOT_CANCELLABLE"


def test_a_refused_answer_may_be_sent_again_once_the_letter_is_sent(
    platform: Platform, acknowledged: Transaction, collectivite: Collectivite
) -> None:
    refused = submit(platform, collectivite.answer("4-2", TODAY, 0))
    assert platform.status(refused.transaction_id) == "REJECTED"
    platform.followup(ID_ACTE, "4-1")

    again = submit(platform, collectivite.answer("4-2", TODAY, 0))

    assert platform.status(again.transaction_id) == "ACKNOWLEDGED"
