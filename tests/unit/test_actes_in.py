"""ACTES in: every ministry message kind, and every way its bytes can be broken."""

from __future__ import annotations

import json
import random
from datetime import date

import pytest

import transformers.actes_in as actes_in
from transformers.actes_in import (
    MATCHING_RULE,
    ActKey,
    key_from_file_name,
    parse_id_acte,
    parse_message,
)

NS = 'xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216" xmlns:insee="http://xml.insee.fr/schema"'
ID = "034-491011698-20171207-CL20171227_06-DE"
KEY = ActKey("491011698", "CL20171227_06", date(2017, 12, 7), 1)


def xml(body: str, encoding: str = "ISO-8859-1") -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?>\n{body}'.encode("iso-8859-1")


ACTE_RECU = """<actes:ActeRecu actes:Date="2017-12-07" actes:NumeroInterne="CL20171227_06"
 actes:CodeNatureActe="1">
  <actes:CodeMatiere1 actes:CodeMatiere="3"/><actes:CodeMatiere2 actes:CodeMatiere="2"/>
  <actes:Objet>Budget primitif</actes:Objet>
  <actes:ClassificationDateVersion>2017-11-13</actes:ClassificationDateVersion>
  <actes:Document><actes:NomFichier>99_DE-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf</actes:NomFichier>
  </actes:Document>
  <actes:Annexes actes:Nombre="1"><actes:Annexe>
    <actes:NomFichier>21_RP-034-491011698-20171207-CL20171227_06-DE-1-1_2.pdf</actes:NomFichier>
  </actes:Annexe></actes:Annexes>
  <actes:DocumentPapier>N</actes:DocumentPapier>
</actes:ActeRecu>"""
ACTE_FILES = (
    "99_DE-034-491011698-20171207-CL20171227_06-DE-1-1_1.pdf",
    "21_RP-034-491011698-20171207-CL20171227_06-DE-1-1_2.pdf",
)

ARACTE = xml(
    f'<actes:ARActe {NS} actes:IDActe="{ID}" actes:DateReception="2017-12-27">{ACTE_RECU}'
    "<actes:ClassificationDateVersionEnCours>2017-11-13</actes:ClassificationDateVersionEnCours>"
    "</actes:ARActe>"
)


def test_aracte_gives_idacte_key_dates_and_file_names() -> None:
    message = parse_message(ARACTE, f"{ID}-1-2_5279.xml")

    assert (message.kind, message.code, message.id_acte) == ("ARActe", "1-2", ID)
    assert message.act_key == KEY
    assert message.dates == {
        "DateReception": date(2017, 12, 27),
        "ClassificationDateVersionEnCours": date(2017, 11, 13),
        "ClassificationDateVersion": date(2017, 11, 13),
    }
    assert message.file_names == ACTE_FILES
    assert message.errors == ()


def test_anomalie_acte_keeps_a_nature_outside_the_pattern_and_says_so() -> None:
    raw = xml(
        f"<actes:AnomalieActe {NS}><actes:Date>2018-10-12</actes:Date><actes:Nature>2</actes:Nature>"
        "<actes:Detail>ODT-VERIF-01 : date de classification pas à jour</actes:Detail>"
        f"{ACTE_RECU}<actes:ClassificationDateVersionEnCours>2018-10-10</actes:ClassificationDateVersionEnCours>"
        "</actes:AnomalieActe>"
    )
    message = parse_message(raw, "034-491011698----1-3_1.xml")

    assert (message.kind, message.code, message.id_acte) == ("AnomalieActe", "1-3", None)
    assert message.act_key == KEY
    assert message.anomaly_nature == "2"
    assert message.detail == "ODT-VERIF-01 : date de classification pas à jour"
    assert message.dates["Date"] == date(2018, 10, 12)
    assert message.errors == ("AnomalieActe Nature '2' is not three digits; kept as received",)


@pytest.mark.parametrize(
    ("root", "code", "inner", "detail"),
    [
        ("CourrierSimple", "2-1", "", None),
        ("DemandePieceComplementaire", "3-1", "<actes:DescriptionPieces>Le plan</actes:DescriptionPieces>",
         "Le plan"),
        ("LettreObservations", "4-1", "<actes:Motif>Incompétence</actes:Motif>", "Incompétence"),
    ],
)
def test_letters_from_the_prefecture(root: str, code: str, inner: str, detail: str | None) -> None:
    raw = xml(
        f'<actes:{root} {NS} actes:IDActe="{ID}" actes:DateCourrierPref="2018-01-15">{inner}'
        f"<actes:Document><actes:NomFichier>{ID}-{code}_7.pdf</actes:NomFichier></actes:Document>"
        f"</actes:{root}>"
    )
    message = parse_message(raw, f"{ID}-{code}_7.xml")

    assert (message.kind, message.code, message.id_acte) == (root, code, ID)
    assert message.act_key == KEY
    assert message.dates == {"DateCourrierPref": date(2018, 1, 15)}
    assert message.detail == detail
    assert message.file_names == (f"{ID}-{code}_7.pdf",)
    assert message.errors == ()


@pytest.mark.parametrize(
    ("root", "code"), [("ARPieceComplementaire", "3-5"), ("ARReponseRejetLettreObservations", "4-5")]
)
def test_acknowledgments_of_a_reply_read_infos_courrier_pref(root: str, code: str) -> None:
    raw = xml(
        f'<actes:{root} {NS} actes:DateReception="2018-02-01">'
        f'<actes:InfosCourrierPref actes:IDActe="{ID}" actes:DateCourrierPref="2018-01-15"/></actes:{root}>'
    )
    message = parse_message(raw)

    assert (message.kind, message.code, message.id_acte) == (root, code, ID)
    assert message.act_key == KEY
    assert message.dates == {"DateReception": date(2018, 2, 1), "DateCourrierPref": date(2018, 1, 15)}
    assert message.errors == ()


def test_defere_ta() -> None:
    raw = xml(
        f'<actes:DefereTA {NS} actes:IDActe="{ID}"><actes:DateDepot>2018-03-01</actes:DateDepot>'
        "<actes:NatureIllegalite>Vice de procédure</actes:NatureIllegalite><actes:PiecesJointes>"
        "<actes:PieceJointe><actes:NomFichier>requete.pdf</actes:NomFichier></actes:PieceJointe>"
        "</actes:PiecesJointes></actes:DefereTA>"
    )
    message = parse_message(raw)

    assert (message.kind, message.code, message.id_acte) == ("DefereTA", "5-1", ID)
    assert message.dates == {"DateDepot": date(2018, 3, 1)}
    assert message.detail == "Vice de procédure"
    assert message.file_names == ("requete.pdf",)


def test_ar_annulation() -> None:
    raw = xml(f'<actes:ARAnnulation {NS} actes:IDActe="{ID}" actes:DateReception="2018-04-02"/>')
    message = parse_message(raw, f"{ID}-6-2_10.xml")

    assert (message.kind, message.code, message.id_acte, message.act_key) == ("ARAnnulation", "6-2", ID, KEY)
    assert message.dates == {"DateReception": date(2018, 4, 2)}


@pytest.mark.parametrize(
    ("root", "code"), [("RetourClassification", "7-2"), ("ReponseClassificationSansChangement", "7-3")]
)
def test_classification_answers(root: str, code: str) -> None:
    raw = xml(
        f"<actes:{root} {NS}><actes:DateClassification>2019-04-18</actes:DateClassification></actes:{root}>"
    )
    message = parse_message(raw, f"044-214400152----{code}_1.xml")

    assert (message.kind, message.code, message.id_acte) == (root, code, None)
    assert message.dates == {"DateClassification": date(2019, 4, 18)}
    assert message.act_key == ActKey("214400152", None, None, None)


ANOMALIE_ENVELOPPE = xml(
    f"<actes:AnomalieEnveloppe {NS}><actes:Date>2017-06-12</actes:Date><actes:Nature>999</actes:Nature>"
    "<actes:Detail>SLO-EACT--210703385--20170612-2.tar.gz -> PREF-VERIF-02 : Votre numéro de SIREN n'est pas"
    " encore enregistré</actes:Detail><actes:EnveloppeRecue><actes:Emetteur>"
    '<actes:IDCL insee:SIREN="210703385" actes:Departement="007" actes:Arrondissement="1" actes:Nature="31"/>'
    "</actes:Emetteur><actes:AdressesRetour><actes:Email>actes@mairie.example</actes:Email></actes:AdressesRetour>"
    "<actes:FormulairesEnvoyes><actes:Formulaire>"
    "<actes:NomFichier>007-210703385-20170601-D2017_12-DE-1-1_0.xml</actes:NomFichier>"
    "</actes:Formulaire></actes:FormulairesEnvoyes></actes:EnveloppeRecue></actes:AnomalieEnveloppe>"
)


def test_anomalie_enveloppe_names_its_envelope_from_the_ano_file_name() -> None:
    message = parse_message(ANOMALIE_ENVELOPPE, "ANO_EACT--210703385--20170612-2.xml")

    assert (message.kind, message.code) == ("AnomalieEnveloppe", "ANO")
    assert message.envelope_name == "EACT--210703385--20170612-2"
    assert message.anomaly_nature == "999"
    assert message.dates == {"Date": date(2017, 6, 12)}
    assert message.detail is not None and "PREF-VERIF-02" in message.detail
    assert message.act_key == ActKey("210703385", "D2017_12", date(2017, 6, 1), 1)  # the one form it lists
    assert message.file_names == ("007-210703385-20170601-D2017_12-DE-1-1_0.xml",)
    assert message.errors == ("AnomalieEnveloppe Nature '999' is not in the schema's list; kept",)


def test_anomalie_enveloppe_without_its_file_name_takes_the_archive_quoted_in_detail() -> None:
    message = parse_message(ANOMALIE_ENVELOPPE, "message.xml")

    assert message.envelope_name == "EACT--210703385--20170612-2"


def test_ministry_envelope_gives_the_destinataire_siren_only() -> None:
    raw = xml(
        f"<actes:EnveloppeMISILLCL {NS}>"
        '<actes:Emetteur><actes:IDPref actes:Departement="044"/></actes:Emetteur>'
        "<actes:FormulairesEnvoyes><actes:Formulaire><actes:NomFichier>a-1-2_1.xml</actes:NomFichier>"
        "</actes:Formulaire></actes:FormulairesEnvoyes>"
        '<actes:Destinataire insee:SIREN="214400152"/></actes:EnveloppeMISILLCL>'
    )
    message = parse_message(raw, "EACT--SPREF0441-214400152-20181012-9.xml")

    assert (message.kind, message.code, message.envelope_name) == ("EnveloppeMISILLCL", "ENV", None)
    assert message.act_key == ActKey("214400152", None, None, None)
    assert message.file_names == ("a-1-2_1.xml",)


@pytest.mark.parametrize("encoding", ["iso-8859-1", "utf-8"])
def test_multicanal_notice_in_html(encoding: str) -> None:
    raw = (
        "<html><head><title>Pr&eacute;fecture</title></head><body><p>Acte " + ID + " :</p><p>Notre service"
        " de contrôle de légalité a identifié qu'il s'agit d'un acte dont la transmission est\n effectuée"
        " en multi canal.</p></body></html>"
    ).encode(encoding)
    message = parse_message(raw, "message_body.html")

    assert (message.kind, message.code, message.id_acte, message.act_key) == ("MultiCanal", "MC", ID, KEY)
    assert message.detail is not None and "multi canal" in message.detail
    assert message.errors == ()


def test_multicanal_notice_with_html_entities_and_no_idacte() -> None:
    raw = b"<p>il s&#39;agit d&rsquo;un acte dont la transmission est effectu&eacute;e en multi-canal</p>"
    message = parse_message(raw)

    assert (message.kind, message.id_acte, message.act_key) == ("MultiCanal", None, None)


@pytest.mark.parametrize("raw", [b"", b"   \n", b"\x00\x01\x02\xff\xfe garbage", b"%PDF-1.4\n%\xe2\xe3"])
def test_garbage_is_unknown_never_raised(raw: bytes) -> None:
    message = parse_message(raw, "x.bin")

    assert (message.kind, message.code, message.id_acte, message.act_key) == ("Unknown", None, None, None)
    assert message.errors
    assert message.raw == raw


def test_another_root_element_is_unknown() -> None:
    message = parse_message(xml(f'<actes:Annulation {NS} actes:IDActe="{ID}"/>'))

    assert (message.kind, message.code, message.id_acte) == ("Unknown", None, ID)
    assert message.errors == ("root element 'Annulation' is not a message the ministry sends",)


def test_truncated_xml_is_recovered_as_far_as_it_goes() -> None:
    message = parse_message(ARACTE[:260], f"{ID}-1-2_1.xml")

    assert (message.kind, message.id_acte) == ("ARActe", ID)
    assert message.dates["DateReception"] == date(2017, 12, 27)
    assert message.act_key == KEY  # the file name fills what the truncated echo lost
    assert any(error.startswith("malformed XML") for error in message.errors)


def test_every_truncation_and_random_bytes_never_raise() -> None:
    for end in range(len(ARACTE)):
        parse_message(ARACTE[:end], "x.xml")
    rng = random.Random(7)
    for _ in range(200):
        parse_message(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))), None)


def test_billion_laughs_is_not_expanded() -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    raw = (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]>'
        f'<actes:AnomalieActe {NS}><actes:Date>2018-10-12</actes:Date><actes:Nature>002</actes:Nature>'
        "<actes:Detail>début &lol9; fin</actes:Detail></actes:AnomalieActe>"
    ).encode()
    message = parse_message(raw)

    assert message.kind == "AnomalieActe"
    assert message.anomaly_nature == "002"
    assert message.detail == "début"  # libxml2 stops at the bomb; nothing after it, nothing expanded
    assert "lol" not in json.dumps(message.to_dict())
    assert "the message declares entities (DOCTYPE): they were not expanded" in message.errors
    assert any("amplification" in error for error in message.errors)


def test_internal_entity_reference_is_left_out_not_expanded() -> None:
    raw = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY org "Préfecture">]>'
        f"<actes:AnomalieActe {NS}><actes:Nature>002</actes:Nature>"
        "<actes:Detail>début &org; fin</actes:Detail></actes:AnomalieActe>"
    ).encode()
    message = parse_message(raw)

    assert message.detail == "début  fin"
    assert "entity reference &org; in Detail was not expanded" in message.errors


def test_external_system_entity_is_not_read(tmp_path: object) -> None:
    raw = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<actes:AnomalieActe ' + NS.encode() + b"><actes:Nature>002</actes:Nature>"
        b"<actes:Detail>&xxe;</actes:Detail></actes:AnomalieActe>"
    )
    message = parse_message(raw)

    assert message.detail is None
    assert "root:" not in json.dumps(message.to_dict())


def test_latin1_bytes_declared_utf8_are_read_as_latin1() -> None:
    raw = ARACTE.replace(b'encoding="ISO-8859-1"', b'encoding="UTF-8"').replace(b"Budget", b"R\xe9gie")
    message = parse_message(raw)

    assert (message.kind, message.id_acte) == ("ARActe", ID)
    assert message.errors and message.errors[0].startswith("wrong encoding")


def test_bad_dates_and_enumerations_are_recorded_not_raised() -> None:
    raw = xml(
        f'<actes:ARActe {NS} actes:IDActe="034-491011698-20171399-X1-ZZ" actes:DateReception="27/12/2017">'
        '<actes:ActeRecu actes:Date="2017-12-07" actes:NumeroInterne="X1" actes:CodeNatureActe="un"/>'
        "</actes:ARActe>"
    )
    message = parse_message(raw)

    assert message.dates == {}
    assert message.act_key == ActKey("491011698", "X1", date(2017, 12, 7), None)
    assert set(message.errors) == {
        "DateReception: '27/12/2017' is not a date",
        "ActeRecu CodeNatureActe 'un' is not an integer",
        "IDActe '034-491011698-20171399-X1-ZZ' date: '20171399' is not a date",
        "IDActe '034-491011698-20171399-X1-ZZ' ends with an unknown nature 'ZZ'",
    }


def test_missing_namespace_and_undeclared_prefix_are_tolerated() -> None:
    plain = parse_message(f'<ARActe IDActe="{ID}" DateReception="2017-12-27"/>'.encode())
    odd = parse_message(f'<actes:ARActe actes:IDActe="{ID}" actes:DateReception="2017-12-27"/>'.encode())

    for message in (plain, odd):
        assert (message.kind, message.id_acte, message.act_key) == ("ARActe", ID, KEY)
        assert message.dates == {"DateReception": date(2017, 12, 27)}
    assert plain.errors == ("ARActe is not in the ACTES namespace "
                            "'http://www.interieur.gouv.fr/ACTES#v1.1-20040216'; read anyway",)
    assert odd.errors[0].startswith("malformed XML")


def test_a_file_name_code_that_contradicts_the_root_is_noted() -> None:
    message = parse_message(ARACTE, f"{ID}-1-3_2.xml")

    assert message.errors == ("file name says 1-3 but the root element is ARActe (1-2)",)


@pytest.mark.parametrize(
    ("name", "key", "code"),
    [
        ("044-214400152----1-3_1.xml", ActKey("214400152", None, None, None), "1-3"),
        ("999-1234----7-2_1.xml", ActKey("1234", None, None, None), "7-2"),
        (f"{ID}-1-2.xml", KEY, "1-2"),
        (f"32_DP-{ID}-1-1_1.pdf", KEY, "1-1"),
        ("006-210600235-20180522-684-AI-1-2_5.xml", ActKey("210600235", "684", date(2018, 5, 22), 3), "1-2"),
        ("02A-212000046-20200101-A_1-CC-2-1_3.xml", ActKey("212000046", "A_1", date(2020, 1, 1), 4), "2-1"),
        ("inbox/2018/" + f"{ID}-6-2_10.xml", KEY, "6-2"),
        ("EACT--SPREF0441-214400152-20181012-9.xml", None, None),
        ("ANO_EACT--210703385--20170612-2.xml", None, None),
        ("message_body.html", None, None),
    ],
)
def test_file_name_keys(name: str, key: ActKey | None, code: str | None) -> None:
    assert key_from_file_name(name) == (key, code)


def test_parse_id_acte() -> None:
    assert parse_id_acte(ID) == KEY
    errors: list[str] = []
    assert parse_id_acte("not an id", errors) is None
    assert errors == ["IDActe 'not an id' does not follow DDD-SIREN-YYYYMMDD-NUMERO-NN"]


def test_to_dict_is_json_ready_and_hides_the_bytes() -> None:
    data = parse_message(ARACTE, "r.xml").to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["dates"]["DateReception"] == "2017-12-27"
    assert data["act_key"] == {"siren": "491011698", "numero_interne": "CL20171227_06",
                               "decision_date": "2017-12-07", "nature": 1}
    assert data["raw"]["size"] == len(ARACTE) and len(data["raw"]["sha256"]) == 64


def test_the_matching_rule_is_written_down_in_the_module_docstring() -> None:
    assert "IDActe" in MATCHING_RULE and "envelope" in MATCHING_RULE
    assert actes_in.__doc__ is not None and MATCHING_RULE in actes_in.__doc__


def test_public_names() -> None:
    assert sorted(actes_in.__all__) == sorted(
        ["ACTES_NS", "MATCHING_RULE", "MESSAGE_CODES", "ActKey", "MinistryMessage", "key_from_file_name",
         "parse_id_acte", "parse_message"]
    )


def test_an_internal_failure_still_returns_an_unknown_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(self: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(actes_in._Reader, "read", explode)
    message = parse_message(ARACTE, "x.xml")

    assert (message.kind, message.raw, message.filename) == ("Unknown", ARACTE, "x.xml")
    assert message.errors == ("internal error while reading the message: RuntimeError('boom')",)
