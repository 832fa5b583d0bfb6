"""The S2LOW endpoint offline: S2LOW's answers read leniently, statuses mapped, the form it is sent,
its refusals sorted into what happens next, and the lookup that keeps an act from going twice.

requests runs for real; only the HTTP layer is a stub (an adapter answering as S2LOW would,
or raising as the network would), so nothing here opens a socket.
"""

# ruff: noqa: E501  (the exact texts are asserted whole)

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from requests.adapters import BaseAdapter

from bus import registry
from bus.connector import CANONICAL, CANONICAL_RESPONSE, AnsweringEndpoint, Artifact
from bus.errors import ConfigError, DocumentError, TransientError
from bus.secrets import MASK
from connectors._s2low_common import MultipartBody, StatusAnswer, TransientAlert, read_answer, read_status, split_xml
from connectors.s2low_outbound import S2lowOutbound, S2lowOutboundConfig, state_of
from simulators.s2low_http import parse_form

URL = "https://s2low.test"
ID_ACTE = "044-214400152-20260105-DEL_1-DE"
ARACTE = (b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:ARActe xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216" '
          b'actes:DateReception="2026-01-06" actes:IDActe="044-214400152-20260105-DEL_1-DE">\n'
          b'  <actes:ActeRecu actes:Date="2026-01-05"/>\n</actes:ARActe>\n')
ANOMALIE = (b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:AnomalieActe xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216">'
            b"<actes:Nature>002</actes:Nature><actes:Detail>ODT-VERIF-01 : d\xe9j\xe0 vu</actes:Detail></actes:AnomalieActe>")


def read(body: bytes) -> Any:
    return read_answer(body, connector="prefecture", operation="create")


def status(body: bytes) -> Any:
    return read_status(body, connector="prefecture", operation="get_status")


# -------------------------------------------------------------------- S2LOW's answers, leniently


@pytest.mark.parametrize("body", [b"OK\n1234\n", b"\r\n\r\nOK  \r\n  1234 \r\n\r\n", b"\xef\xbb\xbfok\n1234", b"OK\n\n\n1234"])
def test_an_ok_answer_is_read_whatever_its_blank_lines_and_line_ends(body: bytes) -> None:
    answer = read(body)
    assert (answer.ok, answer.first, answer.text) == (True, "1234", "1234")


def test_a_ko_answer_gives_s2lows_words_in_iso_8859_1_or_utf_8() -> None:
    assert read("KO\nLe numéro n'est pas correct\n".encode("iso-8859-1")).text == "Le numéro n'est pas correct"
    assert read("KO\r\nÉchec de l'authentification".encode()).text == "Échec de l'authentification"
    assert read(b"KO").text == ""


@pytest.mark.parametrize(("body", "said"), [
    (b"<!DOCTYPE html><html><head><title>S2LOW - Connexion</title></head><body>...</body></html>",
     "an HTML page ('S2LOW - Connexion')"),
    (b"  <html><body>Maintenance</body></html>", "an HTML page"),
    (b"", "an empty answer"),
    (b"Warning: pg_connect(): unable to connect", "'Warning: pg_connect(): unable to connect'"),
])
def test_what_is_neither_ok_nor_ko_is_a_transient_error_that_says_what_came(body: bytes, said: str) -> None:
    with pytest.raises(TransientError) as caught:
        read(body)
    assert caught.value.message == (f"connector 'prefecture': create: S2LOW answered {said} instead of OK or KO; "
                                    "retried later (check the url if it lasts)")
    assert caught.value.rule == "s2low-answer"


def test_a_status_keeps_the_ministrys_xml_verbatim_and_the_words_after_it() -> None:
    answer = status(b"OK\r\n4\r\n" + ARACTE)
    assert isinstance(answer, StatusAnswer)
    assert (answer.status, answer.xml, answer.message) == (4, ARACTE.rstrip(b"\n"), "")
    refused = status(b"OK\n-1\n" + ANOMALIE + "\nLe ministère a refusé l'acte".encode("iso-8859-1"))
    assert isinstance(refused, StatusAnswer)
    assert (refused.status, refused.xml, refused.message) == (-1, ANOMALIE, "Le ministère a refusé l'acte")
    error = status("OK\n-1\nErreur lors de l'envoi au ministère  \n".encode("iso-8859-1"))
    assert isinstance(error, StatusAnswer) and (error.xml, error.message) == (None, "Erreur lors de l'envoi au ministère")
    held = status(b"OK\n17\n")
    assert isinstance(held, StatusAnswer) and (held.status, held.xml, held.message) == (17, None, "")


def test_a_self_closing_message_and_a_message_with_comments_are_cut_where_they_end() -> None:
    cancelled = b'<?xml version="1.0"?>\n<!-- 6-2 --><actes:ARAnnulation xmlns:actes="urn:x" actes:IDActe="X"/>'
    assert split_xml(cancelled + b" fin") == (cancelled, "fin")
    assert split_xml(b"<a><a>x</a></a>\ntrailer") == (b"<a><a>x</a></a>", "trailer")
    assert split_xml(b"<a>unclosed") == (b"<a>unclosed", "")


def test_a_status_without_a_code_is_a_transient_error() -> None:
    with pytest.raises(TransientError, match="S2LOW answered OK without a status code"):
        status(b"OK\nacquitte\n")
    ko = status("KO\nNuméro de transaction invalide.".encode())
    assert not isinstance(ko, StatusAnswer) and ko.text == "Numéro de transaction invalide."


@pytest.mark.parametrize(("code", "state"), [
    (4, "ACKNOWLEDGED"), (12, "ACKNOWLEDGED"), (13, "ACKNOWLEDGED"), (-1, "REJECTED"), (6, "REJECTED"),
    (0, "CANCELLED"), (1, "IN_TRANSIT"), (2, "IN_TRANSIT"), (3, "IN_TRANSIT"), (17, "IN_TRANSIT"),
    (18, "IN_TRANSIT"), (99, "IN_TRANSIT"),
])
def test_s2low_status_codes_map_to_remote_states(code: int, state: str) -> None:
    assert state_of(code) == state


# -------------------------------------------------------------------- the body it streams


def test_the_multipart_body_streams_in_chunks_and_reads_back_as_sent(tmp_path: Path) -> None:
    pdf = tmp_path / "acte.pdf"
    pdf.write_bytes(b"%PDF-1.4\r\n--not-a-boundary\r\n" + bytes(range(256)) * 50)
    body = MultipartBody([("api", b"1"), ("subject", "Objet accentué".encode("iso-8859-1"))],
                         [("acte_pdf_file", "99_DE-acte.pdf", pdf, "application/pdf")])
    chunks = []
    while chunk := body.read(1000):
        chunks.append(chunk)
    data = b"".join(chunks)
    assert len(data) == len(body) and len(chunks) > 5
    fields, files = parse_form(body.content_type, data)
    assert fields == {"api": [b"1"], "subject": ["Objet accentué".encode("iso-8859-1")]}
    [upload] = files["acte_pdf_file"]
    assert (upload.filename, upload.data) == ("99_DE-acte.pdf", pdf.read_bytes())


# -------------------------------------------------------------------- configuration


def test_the_configuration_says_what_is_wrong() -> None:
    def errors(**values: Any) -> list[str]:
        with pytest.raises(ValidationError) as caught:
            S2lowOutboundConfig.model_validate({"url": URL, **values})
        return [e["msg"] for e in caught.value.errors()]

    assert errors(url="s2low.example.org") == ["url must be an http:// or https:// URL, got 's2low.example.org'"]
    assert errors(url="https://hent:pw@s2low.example.org") == ["url must not hold credentials: set login and password"]
    assert errors(login="hent") == ["login and password go together"]
    assert errors(auth="nonce") == ["auth: nonce needs login and password"]
    assert errors(siren="21440015") == ["String should match pattern '^[0-9]{9}$'"]
    config = S2lowOutboundConfig.model_validate({"url": URL + "/", "login": "hent", "password": "s2low-pw-123"})
    assert config.url == URL and config.verify_tls and config.auth == "basic" and not config.en_attente
    assert "s2low-pw-123" not in repr(config) and MASK in repr(config)


def test_the_registry_finds_it_and_it_answers_later() -> None:
    cls = registry.connector_class("s2low", "outbound")
    assert cls is S2lowOutbound and cls.consumes == (CANONICAL, CANONICAL_RESPONSE)
    assert isinstance(S2lowOutbound("prefecture", S2lowOutboundConfig(url=URL)), AnsweringEndpoint)


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_check_loads_the_certificate_with_its_key_and_names_a_mismatch(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, "rgs")
    _, other_key = _self_signed(tmp_path, "other")
    good = S2lowOutbound("prefecture", S2lowOutboundConfig(url=URL, client_cert=cert, client_key=key, ca_file=cert))
    good.check()
    bad = S2lowOutbound("prefecture", S2lowOutboundConfig(url=URL, client_cert=cert, client_key=other_key))
    with pytest.raises(ConfigError) as caught:
        bad.check()
    [problem] = caught.value.problems
    assert problem.field == "connectors.prefecture.client_cert" and problem.rule == "s2low-tls-file"
    assert problem.message.startswith(f"cannot load the client certificate {cert} with its key (")
    assert problem.message.endswith("): the key must be PEM, unencrypted, and match the certificate")


# -------------------------------------------------------------------- a scripted S2LOW

Answer = tuple[int, bytes] | BaseException


class S2low(BaseAdapter):
    """Per page, the answers of its successive calls (the last one repeats); the requests it got."""

    def __init__(self, script: dict[str, list[Answer] | Callable[[requests.PreparedRequest], Answer]]) -> None:
        super().__init__()
        self.script = script
        self.calls: list[tuple[str, str, bytes]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = str(request.url)
        page = url.split("?")[0].rsplit("/", 1)[-1]
        body = request.body.read() if hasattr(request.body, "read") else bytes(request.body or b"")  # type: ignore[arg-type]
        self.calls.append((page, url, body))
        script = self.script[page]
        if callable(script):
            answer = script(request)
        else:
            answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, BaseException):
            raise answer
        response = requests.Response()
        response.status_code, response._content, response.request, response.url = answer[0], answer[1], request, url
        return response

    def close(self) -> None:
        pass

    def pages(self) -> list[str]:
        return [page.removesuffix(".php") for page, _, _ in self.calls]


def endpoint(script: dict[str, Any], **options: Any) -> tuple[S2lowOutbound, S2low]:
    connector = S2lowOutbound("prefecture", S2lowOutboundConfig.model_validate({"url": URL, **options}))
    connector.connect()
    adapter = S2low(script)
    connector._client().session.mount(URL, adapter)
    return connector, adapter


@pytest.fixture
def act(tmp_path: Path) -> Artifact:
    files = {}
    for name in ("acte.pdf", "annexe.pdf"):
        data = f"%PDF-1.4 {name}".encode()
        files[hashlib.sha256(data).hexdigest()] = tmp_path / name
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).write_bytes(data)
    main, annex = list(files)
    document = {
        "format": "hent-canonical-act/1", "id_acte": ID_ACTE, "siren": "214400152", "nature": 1,
        "numero_interne": "DEL_1", "decision_date": "2026-01-05", "matieres": [3, 2], "objet": "Cession à l'euro",
        "document_papier": False,
        "main_document": {"name": f"99_DE-{ID_ACTE}-1-1_1.pdf", "type_code": "99_DE", "sha256": main},
        "annexes": [{"name": f"21_RP-{ID_ACTE}-1-1_2.pdf", "type_code": "21_RP", "sha256": annex}],
    }
    path = tmp_path / f"{ID_ACTE}.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return Artifact(name=path.name, path=path, sha256="0" * 64, kind=CANONICAL, client_key=ID_ACTE,
                    meta={"id_acte": ID_ACTE}, blob=files.__getitem__)


def test_send_posts_s2lows_form_with_the_subject_in_iso_8859_1_and_the_files(act: Artifact) -> None:
    connector, s2low = endpoint({"actes_transac_create.php": [(200, b"OK\n1234\n")]}, en_attente=True)
    result = connector.send(act)
    assert (result.state, result.remote_id) == ("SENT", "1234")
    [(_, url, body)] = s2low.calls
    assert url == f"{URL}/modules/actes/actes_transac_create.php"
    boundary = body.split(b"\r\n", 1)[0][2:].decode()
    fields, files = parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert {k: [v.decode("iso-8859-1") for v in values] for k, values in fields.items()} == {
        "api": ["1"], "nature_code": ["1"], "number": ["DEL_1"], "decision_date": ["2026-01-05"], "classif1": ["3"],
        "classif2": ["2"], "en_attente": ["1"], "document_papier": ["0"], "type_acte": ["99_DE"], "type_pj[]": ["21_RP"],
        "subject": ["Cession à l'euro"],
    }
    assert fields["subject"] == ["Cession à l'euro".encode("iso-8859-1")]
    assert [(u.filename, u.data) for u in files["acte_pdf_file"]] == [(f"99_DE-{ID_ACTE}-1-1_1.pdf", b"%PDF-1.4 acte.pdf")]
    assert [u.filename for u in files["acte_attachments[]"]] == [f"21_RP-{ID_ACTE}-1-1_2.pdf"]


@pytest.mark.parametrize(("said", "field"), [
    ("Le numéro n'est pas correct", "number"),
    ("La date de décision est une date dans le futur", "decision_date"),
    ("Erreur lors de la réception du fichier annexe x.pdf : typologie absente", "type_acte"),
    ("L'objet ne doit pas contenir de retour à la ligne", "subject"),
    ("Refusé pour une raison inconnue", None),
])
def test_a_refusal_of_the_act_fails_the_document_naming_the_field(act: Artifact, said: str, field: str | None) -> None:
    connector, _ = endpoint({"actes_transac_create.php": [(200, f"KO\n{said}\n".encode("iso-8859-1"))]})
    with pytest.raises(DocumentError) as caught:
        connector.send(act)
    assert caught.value.field == field and caught.value.rule == "s2low-refused"
    assert caught.value.message == (f"connector 'prefecture': S2LOW refused act {ID_ACTE}: {said}"
                                    + (f" (field {field})" if field else "") + "; fix the act, then replay it")


@pytest.mark.parametrize(("answer", "rule"), [
    ((200, "KO\nÉchec de l'authentification\n".encode("iso-8859-1")), "s2low-login"),
    ((200, "KO\nAccès refusé".encode()), "s2low-login"),
    ((401, b"Unauthorized"), "s2low-http-401"),
    ((403, b"Forbidden"), "s2low-http-403"),
    ((404, b"<html>Not Found</html>"), "s2low-http-404"),
    (requests.exceptions.SSLError("certificate required"), "s2low-tls"),
])
def test_a_refused_login_or_certificate_is_an_alert_and_nothing_is_looked_up(act: Artifact, answer: Answer, rule: str) -> None:
    connector, s2low = endpoint({"actes_transac_create.php": [answer]})
    with pytest.raises(TransientAlert) as caught:
        connector.send(act)
    assert caught.value.rule == rule and getattr(caught.value, "alert", False)
    assert s2low.pages() == ["actes_transac_create"]


def test_a_server_error_is_looked_up_then_retried_when_s2low_has_nothing(act: Artifact) -> None:
    not_found = (200, "KO\nNuméro de transaction invalide.".encode())
    connector, s2low = endpoint({"actes_transac_create.php": [(500, b"<html>Internal Server Error</html>")],
                                 "actes_transac_get_status.php": [not_found]})
    with pytest.raises(TransientError) as caught:
        connector.send(act)
    assert caught.value.rule == "s2low-http-500"
    assert s2low.pages() == ["actes_transac_create", "actes_transac_get_status", "actes_transac_get_status"]
    assert [url.split("unique_id=")[1] for _, url, _ in s2low.calls[1:]] == [ID_ACTE, f"{ID_ACTE}-1-1"]


def listed(*rows: dict[str, Any]) -> tuple[int, bytes]:
    return 200, json.dumps({"status_id": 3, "offset": 0, "limit": 100, "transactions": list(rows)}).encode()


def test_number_already_used_is_followed_by_the_transaction_s2low_holds(act: Artifact) -> None:
    duplicate = "KO\nUn acte portant le même numéro interne existe déjà dans la base de données.\nIl faut peut-être ajouter un suffixe au numéro.\n"
    connector, s2low = endpoint({
        "actes_transac_create.php": [(200, duplicate.encode("iso-8859-1"))],
        "actes_transac_get_status.php": [(200, "KO\nNuméro de transaction invalide.".encode()), (200, b"OK\n3\n")],
        "list_actes.php": [listed({"id": "77", "number": "DEL_1", "decision_date": "2026-01-04", "type": "1"},
                                  {"id": "78", "number": "DEL_1", "date": "2026-01-05", "type": "1"})],
    })
    result = connector.send(act)
    assert (result.state, result.remote_id) == ("SENT", "78")
    assert result.detail.startswith(f"S2LOW already holds act {ID_ACTE} as transaction 78: followed, not sent again")
    assert "status_id=3" in s2low.calls[-1][1]


def test_number_already_used_by_another_act_fails_the_document_with_what_to_do(act: Artifact) -> None:
    connector, _ = endpoint({
        "actes_transac_create.php": [(200, b"KO\nnumber already used")],
        "actes_transac_get_status.php": [(200, "KO\nNuméro de transaction invalide.".encode())],
    })
    with pytest.raises(DocumentError) as caught:
        connector.send(act)
    assert caught.value.rule == "s2low-number-used" and caught.value.field == "numero_interne"
    assert caught.value.message.endswith("give this act another NumeroInterne (S2LOW suggests a suffix)")


def test_a_lost_answer_is_found_by_the_acte_message_name_and_not_sent_again(act: Artifact) -> None:
    lost = requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected")
    connector, s2low = endpoint({
        "actes_transac_create.php": [lost],
        "actes_transac_get_status.php": [(200, "KO\nNuméro de transaction invalide.".encode()), (200, b"OK\n1\n")],
        "list_actes.php": [listed({"id": "90", "number": "DEL_1", "decision_date": "2026-01-05"})],
    })
    result = connector.send(act)
    assert (result.state, result.remote_id) == ("SENT", "90")
    assert s2low.pages().count("actes_transac_create") == 1


def test_an_unknown_outcome_whose_lookup_failed_is_looked_up_first_at_the_next_try(act: Artifact) -> None:
    timeout = requests.exceptions.ReadTimeout("read timed out")
    connector, s2low = endpoint({
        "actes_transac_create.php": [timeout],
        "actes_transac_get_status.php": [(502, b"Bad Gateway"), (200, b"OK\n4\n" + ARACTE)],
        "list_actes.php": [listed({"id": "91", "number": "DEL_1", "decision_date": "2026-01-05"})],
    })
    with pytest.raises(TransientError) as caught:
        connector.send(act)
    assert caught.value.rule == "s2low-lookup" and "no answer from S2LOW within read_timeout" in caught.value.message
    assert connector.send(act).remote_id == "91"
    assert s2low.pages().count("actes_transac_create") == 1


def test_an_act_of_another_collectivite_or_with_a_non_latin_1_objet_is_refused_before_sending(act: Artifact) -> None:
    connector, s2low = endpoint({}, siren="999999999")
    with pytest.raises(DocumentError) as caught:
        connector.send(act)
    assert caught.value.rule == "s2low-siren"
    document = json.loads(act.path.read_text(encoding="utf-8"))
    act.path.write_text(json.dumps({**document, "objet": "Cession — œuvre"}), encoding="utf-8")
    connector, s2low = endpoint({})
    with pytest.raises(DocumentError) as caught:
        connector.send(act)
    assert caught.value.rule == "s2low-subject-latin1" and "'—'" in caught.value.message
    assert s2low.calls == []


def test_statuses_say_what_s2low_says_with_the_raw_code_first() -> None:
    answers = {"1": (200, b"OK\n4\n" + ARACTE), "2": (200, b"OK\n-1\n" + ANOMALIE + b"\nRefus du minist\xe8re"),
               "3": (200, b"OK\n17\n"), "4": (200, b"OK\n18\n"), "5": (200, b"OK\n0\n"),
               "6": (200, "KO\nNuméro de transaction invalide.".encode())}
    connector, _ = endpoint({"actes_transac_get_status.php": lambda r: answers[str(r.url).rsplit("=", 1)[1]]})
    acknowledged, rejected, posted, signed, cancelled, unknown = connector.statuses(["1", "2", "3", "4", "5", "6"])
    assert (acknowledged.state, acknowledged.message, acknowledged.message_name) == (
        "ACKNOWLEDGED", ARACTE.rstrip(b"\n"), f"{ID_ACTE}-1-2_0.xml")
    assert acknowledged.detail == "s2low-status=4 acquittement reçu"
    assert (rejected.state, rejected.message, rejected.message_name) == ("REJECTED", ANOMALIE, "s2low-2--1.xml")
    assert rejected.detail == "s2low-status=-1 erreur: Refus du ministère"
    assert (posted.state, posted.waiting, posted.detail) == ("IN_TRANSIT", "to-be-posted", "s2low-status=17 en attente d'être postée")
    assert (signed.waiting, signed.detail) == ("to-be-signed", "s2low-status=18 en attente d'être signée")
    assert (cancelled.state, unknown.state, unknown.detail) == ("CANCELLED", "UNKNOWN", "S2LOW: Numéro de transaction invalide.")


def test_an_html_page_instead_of_a_status_is_a_transient_error_not_a_crash() -> None:
    connector, _ = endpoint({"actes_transac_get_status.php": [(200, b"<html><title>Maintenance</title></html>")]})
    with pytest.raises(TransientError, match=r"S2LOW answered an HTML page \('Maintenance'\)"):
        connector.statuses(["1"])


# -------------------------------------------------------------------- the stamped act and the bordereau

FILES_LIST = json.dumps([
    {"id": 3967, "name": f"{ID_ACTE}-1-1_0.xml", "posted_filename": "", "mimetype": "text/xml", "size": 836, "sign": "", "code_pj": ""},
    {"id": 3968, "name": f"99_DE-{ID_ACTE}-1-1_1.pdf", "posted_filename": "C:\\Actes\\Délibération 1.pdf", "mimetype": "application/pdf", "size": 9, "sign": "", "code_pj": "99_DE"},
    {"id": 3969, "name": f"21_RP-{ID_ACTE}-1-1_2.pdf", "posted_filename": "annexe.pdf", "mimetype": "application/pdf", "size": 9, "sign": "", "code_pj": "21_RP"},
    {"id": 3970, "name": f"41_NC-{ID_ACTE}-1-1_3.xml", "posted_filename": "budget.xml", "mimetype": "text/xml", "size": 9, "sign": "", "code_pj": "41_NC"},
    {"id": 3971, "name": f"21_RP-{ID_ACTE}-1-1_4.pdf", "posted_filename": "annexe.pdf", "mimetype": "application/pdf", "size": 9, "sign": "", "code_pj": "21_RP"},
]).encode()


def test_the_bordereau_and_the_stamped_pdfs_are_fetched_and_named_after_what_was_posted() -> None:
    stamped = {"3968": b"%PDF-1.4 acte", "3969": b"%PDF-1.4 annexe", "3971": b"%PDF-1.4 autre annexe"}
    connector, s2low = endpoint({
        "actes_create_pdf.php": [(200, b"%PDF-1.4 bordereau")],
        "actes_transac_get_files_list.php": [(200, FILES_LIST)],
        "actes_download_file.php": lambda r: (200, stamped[str(r.url).split("file=")[1].split("&")[0]]),
    })
    assert connector.receipts("42") == {
        "Délibération 1-tampon.pdf": b"%PDF-1.4 acte", "annexe-tampon.pdf": b"%PDF-1.4 annexe",
        "annexe-4-tampon.pdf": b"%PDF-1.4 autre annexe", f"{ID_ACTE}-bordereau.pdf": b"%PDF-1.4 bordereau",
    }
    assert [url.split("/modules/actes/")[1] for _, url, _ in s2low.calls] == [
        "actes_create_pdf.php?trans_id=42", "actes_transac_get_files_list.php?transaction=42",
        "actes_download_file.php?file=3968&tampon=true", "actes_download_file.php?file=3969&tampon=true",
        "actes_download_file.php?file=3971&tampon=true"]


def test_nothing_is_given_before_s2low_has_the_acknowledgment_and_an_unknown_transaction_is_said() -> None:
    connector, s2low = endpoint({"actes_create_pdf.php": [(200, b"KO\nPas d'aquittement recu\n"),
                                                          (200, "KO\nNuméro de transaction invalide.".encode())]})
    assert connector.receipts("42") == {}
    assert s2low.pages() == ["actes_create_pdf"]
    with pytest.raises(DocumentError, match=r"bordereau: S2LOW knows no transaction 43 \(Numéro de transaction invalide.\)"):
        connector.receipts("43")


def test_a_stamp_not_given_yet_gives_nothing_at_all_and_a_wrong_answer_is_retried() -> None:
    connector, _ = endpoint({
        "actes_create_pdf.php": [(200, b"%PDF-1.4 bordereau")],
        "actes_transac_get_files_list.php": [(200, FILES_LIST), (200, b"<html><body>Erreur</body></html>")],
        "actes_download_file.php": [(200, b"%PDF-1.4 acte"), (200, b"KO\nPas d'aquittement recu")],
    })
    assert connector.receipts("42") == {}  # all or nothing: the runtime keeps the receipts once
    with pytest.raises(TransientError, match="files_list: S2LOW's answer is not the JSON list of files expected"):
        connector.receipts("42")


# -------------------------------------------------------------------- answers to the préfecture's letters


def answer_artifact(tmp_path: Path, code: str, documents: int, letter_id: str = "2002") -> Artifact:
    files, listed = {}, []
    for n in range(1, documents + 1):
        data = f"%PDF-1.4 reponse {n}".encode()
        sha = hashlib.sha256(data).hexdigest()
        (tmp_path / f"r{n}.pdf").write_bytes(data)
        files[sha] = tmp_path / f"r{n}.pdf"
        listed.append({"name": f"{ID_ACTE}-{code}_{n}.pdf", "source_name": f"r{n}.pdf", "sha256": sha, "size": len(data)})
    document = {"format": "hent-canonical-response/1", "id_acte": ID_ACTE, "siren": "214400152", "code": code,
                "letter_code": code[0] + "-1", "letter_date": "2026-02-01", "letter_id": letter_id, "documents": listed}
    path = tmp_path / f"{ID_ACTE}-{code}.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return Artifact(name=path.name, path=path, sha256="0" * 64, kind=CANONICAL_RESPONSE, client_key=f"{ID_ACTE}-{code}",
                    blob=files.__getitem__)


def posted(body: bytes) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    boundary = body.split(b"\r\n", 1)[0][2:].decode()
    fields, files = parse_form(f"multipart/form-data; boundary={boundary}", body)
    return ({k: [v.decode() for v in values] for k, values in fields.items()},
            {k: [u.filename for u in uploads] for k, uploads in files.items()})


@pytest.mark.parametrize(("code", "documents", "letter_id", "type_envoie"), [
    ("3-4", 2, "2002", "4"), ("3-3", 1, "2002/x-3-1_0.xml", "3"), ("4-3", 1, "2002", "3"), ("4-4", 1, "2002", "4"),
    ("2-2", 1, "2002", "4"),
])
def test_an_answer_posts_s2lows_reponse_form_for_the_letters_transaction(
    tmp_path: Path, code: str, documents: int, letter_id: str, type_envoie: str
) -> None:
    connector, s2low = endpoint({"actes_transac_reponse_create.php": [(200, b"OK\n3003\n")]})
    result = connector.send(answer_artifact(tmp_path, code, documents, letter_id))
    assert (result.state, result.remote_id) == ("SENT", "3003")
    [(_, url, body)] = s2low.calls
    assert url == f"{URL}/modules/actes/actes_transac_reponse_create.php"
    fields, files = posted(body)
    assert fields == {"api": ["1"], "id": ["2002"], "type_envoie": [type_envoie], "type_acte": ["99_DE"],
                      **({"type_pj[]": ["99_DE"]} if documents > 1 else {})}
    assert files == {"acte_pdf_file": [f"{ID_ACTE}-{code}_1.pdf"],
                     **({"acte_attachments[]": [f"{ID_ACTE}-{code}_2.pdf"]} if documents > 1 else {})}


def test_an_acknowledgment_of_receipt_is_left_to_s2low_unless_the_yaml_says_how_to_post_it(tmp_path: Path) -> None:
    connector, s2low = endpoint({"actes_transac_reponse_create.php": [(200, b"OK\n3004\n")]})
    result = connector.send(answer_artifact(tmp_path, "3-2", 0))
    assert (result.state, result.remote_id, s2low.calls) == ("DELIVERED", "2002", [])
    assert "S2LOW sends the acknowledgment of receipt of a letter itself" in result.detail
    connector, s2low = endpoint({"actes_transac_reponse_create.php": [(200, b"OK\n3004\n")]},
                                type_envoie={"3-2": 2, "3-4": 4}, response_typology="99_AU")
    assert connector.send(answer_artifact(tmp_path, "3-2", 0)).remote_id == "3004"
    assert posted(s2low.calls[0][2]) == ({"api": ["1"], "id": ["2002"], "type_envoie": ["2"], "type_acte": ["99_AU"]}, {})
    with pytest.raises(ValidationError, match="type_envoie: 3-1 is not an answer code"):
        S2lowOutboundConfig.model_validate({"url": URL, "type_envoie": {"3-1": 4}})


def test_an_answer_refused_fails_its_document_and_an_unknown_outcome_is_not_sent_again(tmp_path: Path) -> None:
    refused = "Le code de la PJ doit faire 5 caractères"
    connector, _ = endpoint({"actes_transac_reponse_create.php": [(200, f"KO\n{refused}\n".encode("iso-8859-1"))]})
    with pytest.raises(DocumentError) as caught:
        connector.send(answer_artifact(tmp_path, "3-4", 1))
    assert caught.value.rule == "s2low-refused" and refused in caught.value.message
    connector, s2low = endpoint({"actes_transac_reponse_create.php": [(500, b"<html>Internal Server Error</html>")]})
    with pytest.raises(DocumentError) as caught:
        connector.send(answer_artifact(tmp_path, "3-4", 1))
    assert caught.value.rule == "s2low-answer-unknown" and "replay this document only if S2LOW has none" in caught.value.message
    assert s2low.pages() == ["actes_transac_reponse_create"]
    connector, _ = endpoint({"actes_transac_reponse_create.php": [requests.exceptions.ConnectTimeout("connect timeout")]})
    with pytest.raises(TransientError):  # never left: retried
        connector.send(answer_artifact(tmp_path, "3-4", 1))


def test_the_receipt_of_an_answer_is_named_by_its_code_and_one_without_message_is_acknowledged() -> None:
    ar = (b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:ARPieceComplementaire xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216" '
          b'actes:DateReception="2026-02-03"><actes:InfosCourrierPref actes:IDActe="' + ID_ACTE.encode() + b'" actes:DateCourrierPref="2026-02-01"/>'
          b"</actes:ARPieceComplementaire>")
    answers = {"1": (200, b"OK\n4\n" + ar), "2": (200, b"OK\n4\n")}
    connector, _ = endpoint({"actes_transac_get_status.php": lambda r: answers[str(r.url).rsplit("=", 1)[1]]})
    with_receipt, without = connector.statuses(["1", "2"])
    assert (with_receipt.state, with_receipt.message_name, with_receipt.message) == ("ACKNOWLEDGED", f"{ID_ACTE}-3-5_0.xml", ar)
    assert (without.state, without.message, without.message_name) == ("ACKNOWLEDGED", None, None)


def test_an_answers_transaction_has_no_messages_of_its_own() -> None:
    connector, _ = endpoint({"actes_transac_get_document.php": [(200, b"\x1f\x8b\x08\x00 the answer's archive")]})
    assert connector.messages("3003", set()) == []
