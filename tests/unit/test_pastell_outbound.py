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
    error: Any = failed.value
    assert error.rule == rule and error.connector == "prefecture"
    assert getattr(error, "alert", False) is (kind is TransientAlert)
    if kind is RateLimited:
        assert error.retry_after == 120


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


def named(content: bytes, name: str) -> requests.Response:
    return response(200, content=content, headers={"Content-Disposition": f'attachment; filename="{name}"'})


MISSING = response(404, {"status": "error", "error-message": "Ce fichier n'existe pas"})


def message_document(id_d: str, action: str = "attente-reponse-prefecture", message: str = "", **data: str
                     ) -> dict[str, Any]:
    """An actes-reponse-prefecture document as Pastell shows it."""
    fields = {"numero_de_lacte": "DEL2026_042", "acte_nature": "1", "type_reponse": "3",
              "related_transaction_id": "T42", **data}
    return {"info": {"id_d": id_d, "type": "actes-reponse-prefecture"}, "data": fields,
            "last_action": {"action": action, "message": message, "date": "2026-03-09 10:00:00"}}


def test_the_prefectures_messages_are_the_documents_the_act_links_to_or_of_its_transaction() -> None:
    # Given an act linked to two messages (one already recorded), and a third message of the same number found
    # by a search, a fourth of another act of that number
    links = json.dumps({"3": "/Document/detail?id_d=m3&id_e=12", "4": "/Document/detail?id_d=m4&id_e=12"})
    package = b"\x1f\x8b" + b"gzip bytes"
    connector, session = endpoint([
        ("GET", DOC, response(200, document("abc", "acquiter-tdt", tedetis_transaction_id="T42",
                                            reponse_prefecture_file="reponse_prefecture.json"))),
        ("GET", DOC + r"/file/reponse_prefecture_file/0", named(links.encode(), "reponse_prefecture.json")),
        ("GET", DOCS, response(200, [{"id_d": "m2"}, {"id_d": "m3"}, {"id_d": "other"}])),
        ("GET", r"entite/12/document/m3", response(200, message_document("m3"))),
        ("GET", r"entite/12/document/m3/file/reponse_prefecture/0", named(package, "demande_piece_complementaire")),
        ("GET", r"entite/12/document/m2", response(200, message_document("m2", type_reponse="2"))),
        ("GET", r"entite/12/document/m2/file/reponse_prefecture/0", MISSING),
        ("GET", r"entite/12/document/m2/file/reponse_prefecture_unzip/0", named(b"%PDF", "a-2-1_3_1.pdf")),
        ("GET", r"entite/12/document/m2/file/reponse_prefecture_unzip/1", named(b"<actes:CS/>", "a-2-1_3.xml")),
        ("GET", r"entite/12/document/m2/file/reponse_prefecture_unzip/2", named(b"<actes:Env/>", "TACT--SP.xml")),
        ("GET", r"entite/12/document/m2/file/reponse_prefecture_unzip/3", MISSING),
        ("GET", r"entite/12/document/other", response(200, message_document("other", related_transaction_id="T7"))),
    ])
    # When the messages are asked for
    found = connector.messages("abc", known={"m4"})
    # Then each comes once, by its document: the ministry's package as it came, else the unpacked files
    assert [(m.remote_id, m.message_id, m.name) for m in found] == [
        ("abc", "m3", "demande_piece_complementaire.tar.gz"), ("abc", "m2", "a-2-1_3.xml")]
    assert found[0].data == package and found[0].attachments == {}
    assert (found[1].data, found[1].attachments) == (b"<actes:CS/>", {"a-2-1_3_1.pdf": b"%PDF"})
    assert session.calls[2].params == {"type": "actes-reponse-prefecture", "numero_de_lacte": "DEL2026_042",
                                       "limit": 100}
    assert "GET entite/12/document/m4" not in session.paths()
    assert "GET entite/12/document/other/file/reponse_prefecture/0" not in session.paths()


def test_a_message_of_the_prefecture_has_no_messages_of_its_own() -> None:
    connector, session = endpoint([("GET", DOC, response(200, message_document("abc")))])
    assert connector.messages("abc", set()) == []
    assert session.paths() == ["GET entite/12/document/abc"]


# -- answers to the préfecture's letters ------------------------------------------------------

LETTER = r"entite/12/document/m3"


def canonical_answer(tmp_path: Path, code: str = "3-4", documents: int = 2, *, letter: str = "m3",
                     names: list[str] | None = None) -> Artifact:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    described = []
    for n in range(documents):
        data = make_pdf([f"Réponse {code}", f"pièce {n + 1}"])
        sha = hashlib.sha256(data).hexdigest()
        (spool / sha).write_bytes(data)
        described.append({"name": f"{ID_ACTE}-{code}_{n + 1}.pdf",
                          "source_name": (names or [])[n] if names else f"REP_{n + 1}.pdf", "sha256": sha,
                          "size": len(data)})
    answer = {"format": "hent-canonical-response/1", "id_acte": ID_ACTE, "siren": "214400152", "code": code,
              "letter_code": f"{code[0]}-1", "letter_date": DAY, "letter_id": letter, "documents": described}
    path = tmp_path / f"{ID_ACTE}-{code}.json"
    path.write_text(json.dumps(answer), encoding="utf-8")
    return Artifact(name=path.name, path=path, sha256="x", kind="canonical-response", client_key=f"{ID_ACTE}-{code}",
                    meta={}, blob=lambda sha: spool / sha)


ANSWERED = [
    ("POST", LETTER + r"/action/repondre", response(201, {"result": True, "message": ""})),
    ("PATCH", LETTER, response(200, {"result": "ok", "formulaire_ok": 0, "message": "«Réponse» est obligatoire"})),
    ("POST", LETTER + r"/file/reponse/0", response(201, {"result": "ok", "formulaire_ok": 0})),
    ("POST", LETTER + r"/file/reponse_pj_demande_piece_complementaire/0", response(201, {"formulaire_ok": 0})),
    ("PATCH", LETTER + r"/externalData/type_piece_demande_piece_complementaire",
     response(200, {"result": "ok", "formulaire_ok": 1, "message": ""})),
]


def test_an_answer_is_written_on_the_letters_document_typed_and_sent(tmp_path: Path) -> None:
    # Given a request for documents waiting for its answer, and a 3-4 of two documents
    connector, session = endpoint([
        ("GET", LETTER, response(200, message_document("m3"))), *ANSWERED,
        ("POST", LETTER + r"/action/send-reponse-prefecture", response(201, {"result": True, "message": "envoyée"})),
    ])
    result = connector.send(canonical_answer(tmp_path))
    # Then it is answered, not refused, on that document: the first document as reponse, the second as a further one
    assert (result.state, result.remote_id) == ("SENT", "m3")
    _, reply, form, first, second, types, _ = session.calls
    assert reply.path == LETTER + "/action/repondre" and form.body == {"refus_reponse": "0"}
    assert b'filename="REP_1.pdf"' in first.body and b"%PDF" in first.body
    assert b'filename="REP_2.pdf"' in second.body
    assert types.body == [("type_pj[]", "99_DE"), ("type_pj[]", "99_DE")]


@pytest.mark.parametrize(("code", "kind", "form", "typology"), [
    ("2-2", "2", None, "type_piece_courrier_simple"),
    ("4-3", "4", {"refus_reponse": "1"}, "type_piece_lettre_observation"),
    ("3-3", "3", {"refus_reponse": "1"}, "type_piece_demande_piece_complementaire"),
])
def test_each_answer_sets_its_refusal_and_typology(tmp_path: Path, code: str, kind: str, form: Any,
                                                    typology: str) -> None:
    connector, session = endpoint([
        ("GET", LETTER, response(200, message_document("m3", "modification", type_reponse=kind, repondre="1"))),
        ("PATCH", LETTER, response(200, {"result": "ok"})),
        ("POST", LETTER + r"/file/reponse/0", response(201, {"result": "ok"})),
        ("PATCH", LETTER + r"/externalData/" + typology, response(200, {"result": "ok", "formulaire_ok": 1})),
        ("POST", LETTER + r"/action/send-reponse-prefecture", response(201, {"result": True})),
    ], answers={"typology": "99_AU"})
    assert connector.send(canonical_answer(tmp_path, code, 1)).remote_id == "m3"
    patches = [c.body for c in session.calls if c.method == "PATCH" and c.path == LETTER]
    assert patches == ([form] if form else [])  # a draft: repondre is not asked again
    assert "POST entite/12/document/m3/action/repondre" not in session.paths()
    assert session.calls[-2].body == [("type_pj[]", "99_AU")]


@pytest.mark.parametrize("action", ["send-reponse-prefecture", "verif-reponse-tdt", "termine", "erreur-verif-tdt"])
def test_a_letter_already_answered_is_followed_not_answered_again(tmp_path: Path, action: str) -> None:
    connector, session = endpoint([("GET", LETTER, response(200, message_document("m3", action)))])
    result = connector.send(canonical_answer(tmp_path))
    assert (result.state, result.remote_id, result.detail) == ("SENT", "m3", f"already answered in Pastell ({action})")
    assert session.paths() == ["GET entite/12/document/m3"]


def test_a_lost_answer_to_send_reponse_prefecture_is_looked_up_before_anything_else(tmp_path: Path) -> None:
    lost = requests.exceptions.ConnectionError(ConnectionResetError("reset by peer"))
    connector, _ = endpoint([
        ("GET", LETTER, response(200, message_document("m3"))), *ANSWERED,
        ("POST", LETTER + r"/action/send-reponse-prefecture", lost),
        ("GET", LETTER, response(200, message_document("m3", "send-reponse-prefecture"))),
    ])
    result = connector.send(canonical_answer(tmp_path))
    assert (result.state, result.remote_id) == ("SENT", "m3")
    assert result.detail == "sent to the préfecture though Pastell's answer was lost (send-reponse-prefecture)"


def test_a_lost_answer_that_left_the_draft_unsent_is_raised_to_be_retried(tmp_path: Path) -> None:
    lost = requests.exceptions.ReadTimeout("slow")
    connector, _ = endpoint([
        ("GET", LETTER, response(200, message_document("m3"))), *ANSWERED,
        ("POST", LETTER + r"/action/send-reponse-prefecture", lost),
        ("GET", LETTER, response(200, message_document("m3", "modification", repondre="1"))),
    ])
    with pytest.raises(TransientError) as failed:
        connector.send(canonical_answer(tmp_path))
    assert failed.value.rule == "pastell-timeout"


def test_a_refused_send_leaves_a_draft_that_a_replay_resumes(tmp_path: Path) -> None:
    said = {"status": "error", "error-message": "Erreur lors de la transmission, le TdT a répondu : KO pas un PDF"}
    connector, _ = endpoint([
        ("GET", LETTER, response(200, message_document("m3"))), *ANSWERED,
        ("POST", LETTER + r"/action/send-reponse-prefecture", response(400, said)),
    ])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical_answer(tmp_path))
    assert refused.value.message.endswith(
        f"KO pas un PDF): fix the act, then replay it; the answer 3-4 of act {ID_ACTE} to the letter m3 stays a draft "
        "in Pastell document m3: a replay resumes it")


@pytest.mark.parametrize("code", ["3-2", "4-2"])
def test_an_acknowledgment_of_receipt_is_not_posted_pastells_tdt_sends_it(tmp_path: Path, code: str) -> None:
    connector, session = endpoint([])
    result = connector.send(canonical_answer(tmp_path, code, 0))
    assert (result.state, result.remote_id) == ("DELIVERED", "m3")
    assert "Pastell's TdT acknowledges the receipt of a letter itself" in result.detail
    assert session.calls == []


@pytest.mark.parametrize(("answer", "rule", "said"), [
    ({"code": "4-4", "documents": 2}, "pastell-answer-documents", "Pastell takes one document for a 4-4"),
    ({"code": "3-4", "documents": 1, "names": ["rapport.odt"]}, "pastell-answer-pdf",
     "Pastell takes PDF answers only, not rapport.odt"),
    ({"code": "5-2", "documents": 1}, "pastell-canonical", "'5-2' is not an answer to a letter"),
    ({"code": "3-4", "documents": 1, "letter": ""}, "pastell-letter", "the answer names no letter"),
])
def test_what_pastells_answer_form_refuses_fails_before_any_call(tmp_path: Path, answer: dict[str, Any], rule: str,
                                                                  said: str) -> None:
    connector, session = endpoint([])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical_answer(tmp_path, **answer))
    assert refused.value.rule == rule and said in refused.value.message
    assert session.calls == []


@pytest.mark.parametrize(("letter", "said"), [
    (response(200, message_document("m3", type_reponse="4")),
     "Pastell document m3 is a message of type 4, which a 3-4 does not answer (type 3)"),
    (response(200, document("m3", "acquiter-tdt")), "Pastell document m3 is not a message of the préfecture"),
    (response(404, {"status": "error", "error-message": "Le document m3 n'appartient pas à l'entité 12"}),
     "entity 12 holds no document m3"),
    (response(200, message_document("m3", "creation")), "Pastell document m3 is at 'creation', where it takes no"),
])
def test_an_answer_to_a_letter_pastell_does_not_hold_as_such_fails_without_writing(
    tmp_path: Path, letter: requests.Response, said: str
) -> None:
    connector, session = endpoint([("GET", LETTER, letter)])
    with pytest.raises(DocumentError) as refused:
        connector.send(canonical_answer(tmp_path))
    assert said in refused.value.message and refused.value.rule == "pastell-letter"
    assert [c.method for c in session.calls] == ["GET"]


def test_where_each_answer_is(tmp_path: Path) -> None:
    receipt = b'<actes:ARPieceComplementaire xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"/>'
    connector, _ = endpoint([
        ("GET", r"entite/12/document/ack", response(200, message_document(
            "ack", "verif-reponse-tdt", has_acquittement="1", acquittement_file="DEL2026_042-ar-x.xml"))),
        ("GET", r"entite/12/document/ack/file/acquittement_file/0", named(receipt, "DEL2026_042-ar-x.xml")),
        ("GET", r"entite/12/document/cs", response(200, message_document("cs", "send-reponse-prefecture",
                                                                          type_reponse="2"))),
        ("GET", r"entite/12/document/end", response(200, message_document("end", "termine", "sans acquittement"))),
        ("GET", r"entite/12/document/ko", response(200, message_document("ko", "erreur-verif-tdt", "KO TdT"))),
        ("GET", r"entite/12/document/wait", response(200, message_document("wait", "send-reponse-prefecture"))),
    ])
    ack, courrier, end, ko, wait = connector.statuses(["ack", "cs", "end", "ko", "wait"])
    assert (ack.state, ack.message, ack.message_name) == ("ACKNOWLEDGED", receipt, "DEL2026_042-ar-x.xml")
    assert (courrier.state, courrier.message) == ("ACKNOWLEDGED", None)
    assert courrier.detail == "send-reponse-prefecture (no acknowledgment of a 2-2)"
    assert (end.state, end.message, end.detail) == ("ACKNOWLEDGED", None, "termine: sans acquittement")
    assert (ko.state, ko.detail) == ("REJECTED", "erreur-verif-tdt: KO TdT")
    assert (wait.state, wait.detail) == ("IN_TRANSIT", "send-reponse-prefecture")


def test_the_answers_flow_actions_and_fields_come_from_the_configuration(tmp_path: Path) -> None:
    connector, session = endpoint([
        ("GET", LETTER, response(200, {"info": {"id_d": "m3", "type": "reponse-pref"},
                                       "data": {"nature_reponse": "4", "ouvert": "1"},
                                       "last_action": {"action": "attente-reponse-prefecture"}})),
        ("PATCH", LETTER, response(200, {"result": "ok"})),
        ("POST", LETTER + r"/file/courrier/0", response(201, {"result": "ok"})),
        ("PATCH", LETTER + r"/externalData/typo_lo", response(200, {"result": "ok"})),
        ("POST", LETTER + r"/action/envoyer", response(201, {"result": True})),
    ], answers={"flow": "reponse-pref", "reply_action": "ouvrir", "send_action": "envoyer",
                "fields": {"type_reponse": "nature_reponse", "repondre": "ouvert", "reponse": "courrier",
                           "refus_reponse": "refus", "type_piece_lettre_observation": "typo_lo"}})
    assert connector.send(canonical_answer(tmp_path, "4-4", 1)).state == "SENT"
    assert session.calls[1].body == {"refus": "0"}
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PastellOutboundConfig.model_validate({"type": "pastell", "url": "https://pastell.example.org", "entity": 12,
                                              "token": "t0ken-secret-value", "answers": {"fields": {"reponses": "x"}}})


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
