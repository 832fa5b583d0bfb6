"""The Pastell endpoint: its configuration, how a canonical act becomes an actes-generique document,
what Pastell's answers mean, and how its refusals are translated — against a scripted session."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import ValidationError
from requests.structures import CaseInsensitiveDict

from bus.connector import Artifact
from bus.errors import DocumentError, TransientError
from connectors._pastell_common import MultipartFile, NotFound, RateLimited, TransientAlert
from connectors.pastell_outbound import PastellOutbound, PastellOutboundConfig
from simulators.pdf import make_pdf

DAY = "2026-03-02"
ID_ACTE = f"044-214400152-{DAY.replace('-', '')}-DEL2026_042-DE"


@dataclass
class Call:
    method: str
    path: str
    params: Any
    body: Any
    headers: dict[str, str]
    auth: Any


def response(status: int, payload: Any = None, *, content: bytes = b"", headers: dict[str, str] | None = None
             ) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(payload).encode() if payload is not None else content
    answer.headers = CaseInsensitiveDict(headers or {})
    answer.encoding = "utf-8"
    return answer


Script = list[tuple[str, str, "requests.Response | Exception | Callable[[Call], requests.Response]"]]


class ScriptedSession:
    """Answers each call with the first scripted answer whose method and path pattern match."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.calls: list[Call] = []

    def request(self, method: str, url: str, *, params: Any = None, data: Any = None, headers: Any = None,
                auth: Any = None, **options: Any) -> requests.Response:
        body = data.read() if hasattr(data, "read") else data
        call = Call(method, url.split("/api/v2/", 1)[1], params, body, dict(headers or {}), auth)
        self.calls.append(call)
        for index, (verb, pattern, answer) in enumerate(self.script):
            if verb == method and re.fullmatch(pattern, call.path):
                del self.script[index]
                if isinstance(answer, Exception):
                    raise answer
                return answer(call) if callable(answer) else answer
        raise AssertionError(f"unexpected call {method} {call.path}")

    def close(self) -> None:
        pass

    def paths(self) -> list[str]:
        return [f"{c.method} {c.path}" for c in self.calls]


def endpoint(script: Script, sleeps: list[float] | None = None, **options: Any) -> tuple[PastellOutbound,
                                                                                           ScriptedSession]:
    settings = {"type": "pastell", "url": "https://pastell.example.org/api/v2/", "entity": 12,
                "token": "t0ken-secret-value", **options}
    connector = PastellOutbound("prefecture", PastellOutboundConfig.model_validate(settings))
    client = connector._http()
    session = ScriptedSession(script)
    client.session = session  # type: ignore[assignment]
    client._sleep = (sleeps if sleeps is not None else []).append
    return connector, session


def canonical(tmp_path: Path, *, numero: str = "DEL2026_042", objet: str = "Cession de la parcelle BK 112",
              annexes: int = 1) -> Artifact:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)

    def put(data: bytes) -> dict[str, Any]:
        sha = hashlib.sha256(data).hexdigest()
        (spool / sha).write_bytes(data)
        return {"sha256": sha, "size": len(data)}

    main = {"name": f"99_DE-{ID_ACTE}-1-1_1.pdf", "source_name": f"{numero}.pdf", "type_code": "99_DE",
            **put(make_pdf(["Délibération"]))}
    extra = [{"name": f"21_RP-{ID_ACTE}-1-1_{n + 2}.pdf", "source_name": f"{numero}_annexe{n + 1}.pdf",
              "type_code": "21_RP", **put(make_pdf([f"Annexe {n + 1}"]))} for n in range(annexes)]
    act = {"format": "hent-canonical-act/1", "id_acte": ID_ACTE, "siren": "214400152", "nature": 1,
           "nature_code": "DE", "numero_interne": numero, "decision_date": DAY, "matieres": [3, 2],
           "classification": "3.2", "classification_date": "2025-01-15", "objet": objet, "document_papier": False,
           "main_document": main, "annexes": extra}
    path = tmp_path / f"{ID_ACTE}.json"
    path.write_text(json.dumps(act), encoding="utf-8")
    return Artifact(name=path.name, path=path, sha256="x", kind="canonical-act", client_key=ID_ACTE,
                    meta={"id_acte": ID_ACTE}, blob=lambda sha: spool / sha)


def document(id_d: str, action: str, message: str = "", **data: str) -> dict[str, Any]:
    return {"info": {"id_d": id_d, "type": "actes-generique"},
            "data": {"numero_de_lacte": "DEL2026_042", "date_de_lacte": DAY, **data},
            "last_action": {"action": action, "message": message, "date": "2026-03-02 10:00:00"}}


DOCS = r"entite/12/document"
DOC = r"entite/12/document/abc"
FILLING: Script = [
    ("PATCH", DOC, response(200, {"result": "ok", "formulaire_ok": 0, "message": "«Acte» est obligatoire"})),
    ("POST", DOC + r"/file/arrete/0", response(201, {"result": "ok", "formulaire_ok": 1, "message": ""})),
    ("POST", DOC + r"/file/autre_document_attache/0", response(201, {"result": "ok", "formulaire_ok": 1})),
    ("PATCH", DOC + r"/externalData/type_piece", response(200, {"result": "ok"})),
]


# -- configuration ------------------------------------------------------------------------

def test_the_configuration_takes_pastells_address_and_normalises_it() -> None:
    config = PastellOutboundConfig.model_validate(
        {"type": "pastell", "url": "https://pastell.example.org/api/v2/", "entity": 12, "token": "secret-token"})
    assert (config.url, config.entity, config.flow, config.send_action) == (
        "https://pastell.example.org", "12", "actes-generique", "send-tdt")
    assert "secret-token" not in repr(config)


@pytest.mark.parametrize(("settings", "message"), [
    ({"token": None}, "auth: bearer takes a token (and no login or password)"),
    ({"auth": "basic", "login": "hent"}, "auth: basic takes login and password (and no token)"),
    ({"url": "ftp://pastell.example.org"}, "url must be an http:// or https:// URL, got 'ftp://pastell.example.org'"),
    ({"url": "https://hent:pw@pastell.example.org"}, "url must not hold credentials: set token, or login and"),
    ({"entity": "mairie"}, "String should match pattern '^[0-9]+$'"),
    ({"fields": {"numero": "numero_acte"}}, "Extra inputs are not permitted"),
])
def test_a_wrong_configuration_is_refused_with_what_to_fix(settings: dict[str, Any], message: str) -> None:
    base = {"type": "pastell", "url": "https://pastell.example.org", "entity": "12", "token": "secret-token"}
    with pytest.raises(ValidationError) as refused:
        PastellOutboundConfig.model_validate({**base, **settings})
    assert message in str(refused.value)


def test_check_builds_the_client_without_the_network_and_says_loudly_when_tls_is_not_verified(
    caplog: pytest.LogCaptureFixture
) -> None:
    connector, session = endpoint([], verify_tls=False)
    connector.check()
    assert session.calls == []
    assert "TLS verification is OFF for https://pastell.example.org" in caplog.text
    assert "t0ken-secret-value" not in caplog.text


# -- send ---------------------------------------------------------------------------------

def test_a_new_act_is_created_filled_typed_and_handed_to_the_tdt(tmp_path: Path) -> None:
    artifact = canonical(tmp_path)
    connector, session = endpoint([
        ("GET", DOCS, response(200, [])),
        ("POST", DOCS, response(201, {"info": {"id_d": "abc"}, "id_d": "abc"})),
        *FILLING,
        ("POST", DOC + r"/action/send-tdt", response(201, {"result": True, "message": "envoyé"})),
    ])
    result = connector.send(artifact)
    assert (result.state, result.remote_id) == ("SENT", "abc")
    search, create, form, main, annex, types, action = session.calls
    assert search.params == {"type": "actes-generique", "numero_de_lacte": "DEL2026_042", "limit": 100}
    assert dict(create.body) == {"type": "actes-generique"}
    assert form.body == {"acte_nature": "1", "numero_de_lacte": "DEL2026_042", "objet": "Cession de la parcelle BK 112",
                         "date_de_lacte": DAY, "document_papier": "0", "classification": "3.2", "envoi_tdt": "1"}
    blob = artifact.blob(json.loads(artifact.path.read_text())["main_document"]["sha256"])  # type: ignore[misc]
    assert main.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="file_name"\r\n\r\nDEL2026_042.pdf\r\n' in main.body
    assert b'name="file_content"; filename="DEL2026_042.pdf"' in main.body and blob.read_bytes() in main.body
    assert b"DEL2026_042_annexe1.pdf" in annex.body
    assert types.body == [("type_pj[]", "99_DE"), ("type_pj[]", "21_RP")]
    assert action.path == DOC + "/action/send-tdt"
    assert all(c.headers["Authorization"] == "Bearer t0ken-secret-value" and c.auth is None for c in session.calls)


def test_field_names_and_the_send_action_come_from_the_configuration(tmp_path: Path) -> None:
    connector, session = endpoint([
        ("GET", DOCS, response(200, [])),
        ("POST", DOCS, response(201, {"id_d": "abc"})),
        ("PATCH", DOC, response(200, {"result": "ok"})),
        ("POST", DOC + r"/file/acte/0", response(201, {"formulaire_ok": 1})),
        ("PATCH", DOC + r"/externalData/typologie", response(200, {})),
        ("POST", DOC + r"/action/orientation", response(201, {"result": True})),
    ], fields={"numero_de_lacte": "numero", "arrete": "acte", "type_piece": "typologie"}, send_action="orientation",
        auth="basic", login="hent", password="pw-secret", token=None)
    connector.send(canonical(tmp_path, annexes=0))
    assert session.calls[0].params["numero"] == "DEL2026_042" and "numero" in session.calls[2].body
    assert session.calls[0].auth == ("hent", "pw-secret") and "Authorization" not in session.calls[0].headers


@pytest.mark.parametrize(("act", "field", "rule"), [
    ({"numero": "7"}, "numero_interne", "pastell-numero"),
    ({"numero": "del_42"}, "numero_interne", "pastell-numero"),
    ({"objet": "x" * 500}, "objet", "pastell-objet"),
    ({"objet": "Deux\nlignes"}, "objet", "pastell-objet"),
])
def test_what_pastells_form_refuses_fails_the_act_before_any_call(
    tmp_path: Path, act: dict[str, Any], field: str, rule: str
) -> None:
    connector, session = endpoint([])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical(tmp_path, **act))
    assert (refused.value.field, refused.value.rule) == (field, rule)
    assert session.calls == []


def test_an_act_already_handed_to_the_tdt_is_followed_not_sent_again(tmp_path: Path) -> None:
    connector, session = endpoint([
        ("GET", DOCS, response(200, [{"id_d": "old", "last_action": {"action": "modification"}}, {"id_d": "abc"}])),
        ("GET", r"entite/12/document/old", response(200, document("old", "modification", date_de_lacte="2025-01-01"))),
        ("GET", DOC, response(200, document("abc", "erreur-verif-tdt", "ODT-VERIF-01"))),
    ])
    result = connector.send(canonical(tmp_path))
    assert (result.state, result.remote_id, result.detail) == ("SENT", "abc", "already in Pastell (erreur-verif-tdt)")
    assert [c.method for c in session.calls] == ["GET", "GET", "GET"]


def test_a_draft_left_by_an_interrupted_attempt_is_resumed_not_created_again(tmp_path: Path) -> None:
    connector, session = endpoint([
        ("GET", DOCS, response(200, [{"info": {"id_d": "abc"}}])),
        ("GET", DOC, response(200, document("abc", "send-tdt-erreur", "TdT injoignable"))),
        *FILLING,
        ("POST", DOC + r"/action/send-tdt", response(201, {"result": True})),
    ])
    assert connector.send(canonical(tmp_path)).remote_id == "abc"
    assert "POST entite/12/document" not in session.paths()


def test_a_lost_answer_to_send_tdt_is_looked_up_before_anything_else(tmp_path: Path) -> None:
    lost = requests.exceptions.ConnectionError(ConnectionResetError("reset by peer"))
    connector, session = endpoint([
        ("GET", DOCS, response(200, [])),
        ("POST", DOCS, response(201, {"id_d": "abc"})),
        *FILLING,
        ("POST", DOC + r"/action/send-tdt", lost),
        ("GET", DOC, response(200, document("abc", "send-tdt"))),
    ])
    result = connector.send(canonical(tmp_path))
    assert (result.state, result.remote_id) == ("SENT", "abc")
    assert result.detail == "handed to the TdT though Pastell's answer was lost (send-tdt)"


def test_a_refused_send_tdt_fails_the_delivery_with_pastells_words(tmp_path: Path) -> None:
    said = {"status": "error", "error-message": "L'action « send-tdt »  n'est pas permise : document_is_valide"}
    connector, _ = endpoint([
        ("GET", DOCS, response(200, [])),
        ("POST", DOCS, response(201, {"id_d": "abc"})),
        *FILLING,
        ("POST", DOC + r"/action/send-tdt", response(400, said)),
    ])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical(tmp_path))
    assert refused.value.message == (
        "connector 'prefecture': action send-tdt answered HTTP 400 (L'action « send-tdt »  n'est pas permise : "
        "document_is_valide): fix the act, then replay it; Pastell document abc stays a draft: a replay resumes it")


# -- Pastell's refusals --------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "kind", "rule"), [
    (response(401, {"status": "error", "error-message": "Authentification requise"}), TransientAlert,
     "pastell-http-401"),
    (response(403, {"status": "error", "error-message": "Acces interdit"}), TransientAlert, "pastell-http-403"),
    (response(404, {"status": "error", "error-message": "L'entité 12 n'existe pas"}), NotFound, "pastell-http-404"),
    (response(500, content=b"<html>Bad gateway</html>"), TransientError, "pastell-http-5xx"),
    (response(429, {"status": "error", "error-message": "Trop"}, headers={"Retry-After": "120"}), RateLimited,
     "pastell-http-429"),
    (requests.exceptions.ReadTimeout("slow"), TransientError, "pastell-timeout"),
    (requests.exceptions.ConnectTimeout("no route"), TransientError, "pastell-connect"),
    (requests.exceptions.SSLError("certificate verify failed"), TransientAlert, "pastell-tls"),
])
def test_each_refusal_says_what_happens_next(tmp_path: Path, answer: Any, kind: type, rule: str) -> None:
    connector, _ = endpoint([("GET", DOCS, answer)])
    with pytest.raises(kind) as failed:
        connector.send(canonical(tmp_path))
    assert failed.value.rule == rule and failed.value.connector == "prefecture"
    assert getattr(failed.value, "alert", False) is (kind is TransientAlert)
    if kind is RateLimited:
        assert failed.value.retry_after == 120


def test_a_bad_request_names_the_field_pastell_speaks_of(tmp_path: Path) -> None:
    said = "Le champ «Numéro de l'acte» est incorrect (Entre 2 et 15 caractères)"
    connector, _ = endpoint([
        ("GET", DOCS, response(200, [])),
        ("POST", DOCS, response(201, {"id_d": "abc"})),
        ("PATCH", DOC, response(400, {"status": "error", "error-message": said})),
    ])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical(tmp_path))
    assert refused.value.field == "numero_de_lacte" and said in refused.value.message


def test_a_short_retry_after_is_waited_out_then_the_call_made_again(tmp_path: Path) -> None:
    sleeps: list[float] = []
    limited = response(429, {"status": "error", "error-message": "Trop de requêtes"}, headers={"Retry-After": "3"})
    connector, session = endpoint([("GET", DOCS, limited), ("GET", DOCS, response(200, [])),
                                   ("POST", DOCS, response(201, {"id_d": "abc"})),
                                   ("PATCH", DOC, limited), *FILLING,
                                   ("POST", DOC + r"/action/send-tdt", response(201, {"result": True}))], sleeps)
    assert connector.send(canonical(tmp_path)).remote_id == "abc"
    assert sleeps == [3.0, 3.0]
    assert [c.path for c in session.calls].count(DOC) == 2
    uploads = [c for c in session.calls if c.path.endswith("/file/arrete/0")]
    assert len(uploads) == 1 and b"%PDF" in uploads[0].body


# -- answers ------------------------------------------------------------------------------

def test_pastells_actions_say_where_each_act_is(tmp_path: Path) -> None:
    aractes = b'<actes:ARActe xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"/>'
    connector, _ = endpoint([
        ("GET", r"entite/12/document/ack", response(200, document("ack", "attente-reponse-prefecture",
                                                                    aractes="DEL2026_042-ar-actes.xml"))),
        ("GET", r"entite/12/document/ack/file/aractes/0",
         response(200, content=aractes, headers={"Content-Disposition": 'attachment; filename="x-ar-actes.xml"'})),
        ("GET", r"entite/12/document/ko", response(200, document("ko", "erreur-verif-tdt", "ODT-VERIF-01 : date"))),
        ("GET", r"entite/12/document/off", response(200, document("off", "annuler-tdt", "Transaction annulée"))),
        ("GET", r"entite/12/document/wait", response(200, {"last_action": "document-transmis-tdt"})),
        ("GET", r"entite/12/document/sent", response(200, document("sent", "send-tdt", "envoyé"))),
        ("GET", r"entite/12/document/gone", response(404, {"status": "error", "error-message": "inconnu"})),
    ])
    ack, ko, off, wait, sent, gone = connector.statuses(["ack", "ko", "off", "wait", "sent", "gone"])
    assert (ack.state, ack.message, ack.message_name) == ("ACKNOWLEDGED", aractes, "x-ar-actes.xml")
    assert (ko.state, ko.detail) == ("REJECTED", "erreur-verif-tdt: ODT-VERIF-01 : date")
    assert (off.state, wait.state, wait.waiting) == ("CANCELLED", "IN_TRANSIT", "to-be-posted")
    assert (sent.state, sent.detail, sent.waiting) == ("IN_TRANSIT", "send-tdt: envoyé", None)
    assert gone.state == "UNKNOWN" and "inconnu" in gone.detail


def test_the_prefectures_messages_are_the_unpacked_files_of_pastells_blocks() -> None:
    letter = b"<actes:CourrierSimple/>"
    connector, _ = endpoint([
        ("GET", DOC, response(200, document("abc", "attente-reponse-prefecture", has_courrier_simple="1",
                                            courrier_simple_id="M42", has_lettre_observation="1",
                                            lettre_observation_id="M7"))),
        ("GET", DOC + r"/file/courrier_simple_unzip/0",
         response(200, content=letter, headers={"Content-Disposition": 'attachment; filename="a-2-1_3.xml"'})),
        ("GET", DOC + r"/file/courrier_simple_unzip/1",
         response(200, content=b"%PDF", headers={"Content-Disposition": 'attachment; filename="a-2-1_3_1.pdf"'})),
        ("GET", DOC + r"/file/courrier_simple_unzip/2", response(404, {"status": "error", "error-message": "non"})),
    ])
    [message] = connector.messages("abc", known={"lettre_observation:M7"})
    assert (message.message_id, message.name, message.data) == ("courrier_simple:M42", "a-2-1_3.xml", letter)
    assert message.attachments == {"a-2-1_3_1.pdf": b"%PDF"}


def test_the_stamped_files_and_the_bordereau_are_read_from_their_fields_under_pastells_names() -> None:
    def pdf(name: str) -> requests.Response:
        return response(200, content=b"%PDF-1.4 " + name.encode(),
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    missing = response(404, {"status": "error", "error-message": "Ce fichier n'existe pas"})
    connector, session = endpoint([
        ("GET", DOC, response(200, document("abc", "send-tdt"))),
        ("GET", DOC, response(200, document("abc", "acquiter-tdt", acte_tamponne="acte-tampon.pdf",
                                            annexes_tamponnees="a1-tampon.pdf\na2-tampon.pdf",
                                            bordereau="DEL2026_042-bordereau-tdt.pdf"))),
        ("GET", DOC + r"/file/acte_tamponne/0", pdf("acte-tampon.pdf")),
        ("GET", DOC + r"/file/annexes_tamponnees/0", pdf("../a1-tampon.pdf")),
        ("GET", DOC + r"/file/annexes_tamponnees/1", pdf("acte-tampon.pdf")),
        ("GET", DOC + r"/file/annexes_tamponnees/2", missing),
        ("GET", DOC + r"/file/bordereau/0", pdf("DEL2026_042-bordereau-tdt.pdf")),
    ])
    assert connector.receipts("abc") == {}  # not acknowledged yet: nothing asked but the document
    assert connector.receipts("abc") == {
        "acte-tampon.pdf": b"%PDF-1.4 acte-tampon.pdf", "a1-tampon.pdf": b"%PDF-1.4 ../a1-tampon.pdf",
        "annexes_tamponnees-2-acte-tampon.pdf": b"%PDF-1.4 acte-tampon.pdf",
        "DEL2026_042-bordereau-tdt.pdf": b"%PDF-1.4 DEL2026_042-bordereau-tdt.pdf",
    }
    assert session.paths()[:2] == ["GET entite/12/document/abc", "GET entite/12/document/abc"]


def test_an_act_is_looked_up_by_the_number_and_date_of_its_expected_idacte() -> None:
    connector, session = endpoint([
        ("GET", DOCS, response(200, [{"id_d": "abc"}])),
        ("GET", DOC, response(200, document("abc", "acquiter-tdt"))),
    ])
    assert connector.lookup(ID_ACTE) == "abc"
    assert session.calls[0].params["numero_de_lacte"] == "DEL2026_042"
    assert connector.lookup("not-an-idacte") is None


def test_without_its_tdt_connector_pastell_offers_no_classification() -> None:
    connector, session = endpoint([])
    with pytest.raises(DocumentError, match="Pastell's API offers no classification request"):
        connector.classification("214400152", None)
    assert session.calls == []


def test_the_multipart_body_is_read_from_disk_by_pieces_and_knows_its_length(tmp_path: Path) -> None:
    path = tmp_path / "big.pdf"
    path.write_bytes(b"%PDF" + bytes(range(256)) * 5000)
    body = MultipartFile({"file_name": "big.pdf"}, "file_content", "big.pdf", path)
    pieces = []
    while piece := body.read(4096):
        pieces.append(piece)
    body.close()
    data = b"".join(pieces)
    assert len(data) == len(body) and max(len(p) for p in pieces) == 4096
    boundary = body.content_type.split("boundary=")[1]
    assert data.endswith(f"\r\n--{boundary}--\r\n".encode()) and path.read_bytes() in data


def test_a_request_log_line_never_holds_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    limited = response(429, {"status": "error", "error-message": "t0ken-secret-value refusé"},
                       headers={"Retry-After": "1"})
    connector, _ = endpoint([("GET", DOCS, limited), ("GET", DOCS, limited), ("GET", DOCS, limited)])
    with pytest.raises(RateLimited) as failed:
        connector.send(canonical(tmp_path))
    assert "t0ken-secret-value" not in failed.value.message and "t0ken-secret-value" not in caplog.text
