"""Each real ministry message of ../shared/reference/actes/samples/ reads to pinned fields.

The saved copies are named ``<origin>__<name the ministry gave>``; the test passes the
ministry's name, as the poller would.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pytest

from transformers.actes_in import ActKey, MinistryMessage, parse_message

pytestmark = pytest.mark.conformance


def read(reference_dir: Path, saved_name: str) -> MinistryMessage:
    path = reference_dir / "actes" / "samples" / saved_name
    return parse_message(path.read_bytes(), saved_name.split("__", 1)[1])


def test_the_real_aracte_reads_to_its_idacte_key_and_dates(reference_dir: Path) -> None:
    message = read(reference_dir, "pastell__034-491011698-20171207-CL20171227_06-DE-1-2.xml")

    assert (message.kind, message.code) == ("ARActe", "1-2")
    assert message.id_acte == "034-491011698-20171207-CL20171227_06-DE"
    # ActeRecu has no SIREN: it comes from the IDActe
    assert message.act_key == ActKey("491011698", "CL20171227_06", date(2017, 12, 7), 1)
    assert message.dates == {
        "DateReception": date(2017, 12, 27),
        "ClassificationDateVersionEnCours": date(2017, 11, 13),
        "ClassificationDateVersion": date(2017, 11, 13),
    }
    assert message.file_names == ("32_DP-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf",)
    assert (message.anomaly_nature, message.detail, message.envelope_name) == (None, None, None)
    assert message.errors == ()


def test_the_real_anomalie_acte_reads_with_the_siren_of_its_file_name(reference_dir: Path) -> None:
    message = read(reference_dir, "stela__044-214400152----1-3_1.xml")

    assert (message.kind, message.code, message.id_acte) == ("AnomalieActe", "1-3", None)
    assert message.act_key == ActKey("214400152", "123456", date(2018, 10, 1), 1)
    assert message.anomaly_nature == "002"
    assert message.detail == (
        "ODT-VERIF-01 : Votre acte a été transmis avec une date de classification qui n'est pas à jour"
    )
    assert message.dates == {
        "Date": date(2018, 10, 12),
        "ClassificationDateVersionEnCours": date(2018, 10, 10),
        "ClassificationDateVersion": date(2017, 4, 19),
    }
    assert message.file_names == (
        "99_DE-044-214400152-20181012-123456-DE-1-1_1.pdf",
        "01_01-044-214400152-20181012-123456-DE-1-1_2.xml",
    )
    assert message.errors == ()


def test_the_real_classification_file_reads_to_its_date(reference_dir: Path) -> None:
    message = read(reference_dir, "pastell__999-1234----7-2_1.xml")

    assert (message.kind, message.code, message.id_acte) == ("RetourClassification", "7-2", None)
    assert message.dates == {"DateClassification": date(2019, 4, 18)}
    assert message.act_key == ActKey("1234", None, None, None)  # a test SIREN, kept as named
    assert message.file_names == ()
    assert message.errors == ()


def test_stela_classification_example_reads_without_a_file_name_key(reference_dir: Path) -> None:
    message = read(reference_dir, "stela__exemple_codes_matieres.xml")

    assert (message.kind, message.code) == ("RetourClassification", "7-2")
    assert message.dates == {"DateClassification": date(2017, 12, 8)}
    assert message.act_key is None
    assert message.errors == ()


def test_the_real_ministry_envelope_reads_to_its_destinataire(reference_dir: Path) -> None:
    message = read(reference_dir, "stela__EACT--SPREF0441-214400152-20181012-9.xml")

    assert (message.kind, message.code, message.id_acte) == ("EnveloppeMISILLCL", "ENV", None)
    assert message.act_key == ActKey("214400152", None, None, None)
    assert message.file_names == ("044-214400152----1-3_1.xml",)
    assert message.envelope_name is None
    assert message.dates == {}
    assert message.errors == ()


def test_the_collectivite_s_own_acte_is_not_a_ministry_message(reference_dir: Path) -> None:
    message = read(reference_dir, "pastell__034-491011698-20171207-CL20171227_06-DE-1-1_0.xml")

    assert (message.kind, message.code) == ("Unknown", None)
    assert message.act_key == ActKey("491011698", "CL20171227_06", date(2017, 12, 7), 1)
    assert message.errors == ("root element 'Acte' is not a message the ministry sends",)


def test_every_sample_is_kept_verbatim(reference_dir: Path) -> None:
    for path in sorted((reference_dir / "actes" / "samples").glob("*.xml")):
        raw = path.read_bytes()
        message = parse_message(raw, path.name)
        assert message.raw == raw
        assert message.to_dict()["raw"] == {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
