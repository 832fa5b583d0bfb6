"""What comes back from the platforms: the ministry's messages and packages, SOAP answers, S2LOW's
text answers and Pastell's JSON answers."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from connectors._pastell_common import PastellClient, file_name_of, refusal
from connectors._s2low_common import read_answer, read_status
from connectors.soap_outbound import SoapOutbound, SoapOutboundConfig
from tests.hostile._corpus import ENTITY_ATTACKS, ENTITY_REFERENCES, attempt, deep_xml, encodings, truncations
from transformers.actes_in import parse_message
from transformers.actes_return import unpack_answer

NS = 'xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216"'
ID = "034-491011698-20171207-CL20171227_06-DE"
ARACTE = (f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<actes:ARActe {NS} actes:IDActe="{ID}">'
          "<actes:DateReception>2017-12-07</actes:DateReception><actes:ActeRecu><actes:CodeNatureActe>1"
          "</actes:CodeNatureActe><actes:Objet>Budget</actes:Objet></actes:ActeRecu></actes:ARActe>")


def message_cases() -> Iterator[tuple[str, bytes]]:
    yield from truncations(ARACTE.encode("latin-1"), 8)
    yield from encodings(ARACTE.replace(' encoding="ISO-8859-1"', ""))
    for name, doctype in ENTITY_ATTACKS.items():
        text = ARACTE.replace("?>\n", "?>\n" + doctype).replace("Budget", "Budget" + ENTITY_REFERENCES.get(name, ""))
        yield f"entities-{name}", text.encode("latin-1")
    yield "deep", ARACTE.replace("Budget", deep_xml(3000).decode()).encode("latin-1")
    yield "huge-objet", ARACTE.replace("Budget", "x" * (11 << 20)).encode("latin-1")
    yield "over-max-bytes", b"<a>" + b"<b/>" * (17 << 20) + b"</a>"
    yield "control-chars", ARACTE.replace("Budget", "&#1;&#x1b;").encode("latin-1")
    yield "bad-idacte", ARACTE.replace(ID, "../../" + "9" * 300).encode("latin-1")
    yield "bad-date", ARACTE.replace("2017-12-07", "2017-13-45").encode("latin-1")
    yield "html", b"<html><body>Erreur 500</body></html>"
    yield "binary", bytes(range(256)) * 8


MESSAGES = list(message_cases())


@pytest.mark.parametrize(("case", "data"), MESSAGES, ids=[c for c, _ in MESSAGES])
def test_a_hostile_ministry_message_is_read_leniently_and_kept_verbatim(case: str, data: bytes) -> None:
    attempt("return-message", case, lambda: parse_message(data, "034-491011698-20171207-CL20171227_06-DE-1-2_1.xml"),
            lost=lambda message: message.raw != data,
            shown=lambda message: f"{message.kind}; errors: {'; '.join(message.errors)}")


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as archive:  # type: ignore[call-overload]
        for info, content in members:
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return out.getvalue()


def _member(name: str, content: bytes = b"<a/>", **changes: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    for key, value in changes.items():
        setattr(info, key, value)
    return info, content if info.isfile() else None


def package_cases() -> Iterator[tuple[str, str, bytes]]:
    good = _tar([_member("ar-1-2_1.xml", ARACTE.encode("latin-1")), _member("ar-1-2_1_1.pdf", b"%PDF-1.4")])
    yield "good", "ok.tar.gz", good
    for case, data in truncations(good, 6):
        yield case, "cut.tar.gz", data
    for name in ("../evil.xml", "/etc/evil.xml", "a/b.xml", "C:\\evil.xml", "CON.xml", "a\x01.xml", "x" * 300 + ".xml",
                 "..", "."):
        yield f"member-name-{name[:20]!r}", "names.tar.gz", _tar([_member(name)])
    yield "symlink", "l.tar.gz", _tar([_member("link.xml", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")])
    yield "hardlink", "h.tar.gz", _tar([_member("a.xml"), _member("b.xml", b"", type=tarfile.LNKTYPE,
                                                                    linkname="a.xml")])
    yield "device", "d.tar.gz", _tar([_member("dev.xml", b"", type=tarfile.CHRTYPE)])
    yield "fifo", "f.tar.gz", _tar([_member("fifo.xml", b"", type=tarfile.FIFOTYPE)])
    yield "directory", "dir.tar.gz", _tar([_member("dir", b"", type=tarfile.DIRTYPE)])
    yield "duplicate", "dup.tar.gz", _tar([_member("a.xml"), _member("a.xml")])
    yield "many-members", "many.tar.gz", _tar([_member(f"m{n}.xml") for n in range(300)])
    yield "no-xml", "pdf.tar.gz", _tar([_member("a.pdf", b"%PDF-1.4")])
    yield "empty-tar", "empty.tar.gz", _tar([])
    bomb = io.BytesIO()
    with tarfile.open(fileobj=bomb, mode="w:gz") as archive:
        info = tarfile.TarInfo("bomb.xml")
        info.size = 300 << 20
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    yield "tar-bomb-300MiB", "bomb.tar.gz", bomb.getvalue()
    yield "size-lies", "lies.tar.gz", _tar([_member("a.xml", b"<a/>")]).replace(b"0000000004", b"7777777777", 1)
    yield "gzip-garbage", "g.tar.gz", b"\x1f\x8b" + bytes(range(256))
    yield "plain-tar", "p.tar.gz", _tar([_member("a.xml")], mode="w")
    yield "bz2-tar", "b.tar.gz", _tar([_member("a.xml")], mode="w:bz2")
    yield "bare-xml", "ar.xml", ARACTE.encode("latin-1")
    yield "bare-empty", "empty.xml", b""


PACKAGES = list(package_cases())


@pytest.mark.parametrize(("case", "name", "data"), PACKAGES, ids=[c for c, _, _ in PACKAGES])
def test_a_hostile_answer_package_is_unpacked_or_refused(case: str, name: str, data: bytes) -> None:
    attempt("answer-package", case, lambda: unpack_answer(name, data), lost=lambda messages: not messages,
            shown=lambda messages: f"{len(messages)} message(s): {', '.join(m.name for m in messages)[:80]}")


# -- SOAP answers, through zeep, from a stub platform -----------------------------------------------

def _envelope(body: str) -> bytes:
    return (f'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
            f"<s:Body>{body}</s:Body></s:Envelope>").encode()


STATUS = '<GetStatusResponse xmlns="urn:hent:legality:1"><Transaction><TransactionId>T-1</TransactionId>' \
         "<Status>ACKNOWLEDGED</Status><Message>PEFSQWN0ZS8+</Message></Transaction></GetStatusResponse>"


def soap_cases() -> Iterator[tuple[str, int, bytes, str]]:
    good = _envelope(STATUS)
    yield "good", 200, good, "text/xml"
    for case, data in truncations(good, 6):
        yield case, 200, data, "text/xml"
    for name, doctype in ENTITY_ATTACKS.items():
        text = good.decode().replace("?>", "?>" + doctype).replace("T-1", "T-1" + ENTITY_REFERENCES.get(name, ""))
        yield f"entities-{name}", 200, text.encode(), "text/xml"
    yield "deep", 200, _envelope(deep_xml(5000).decode()), "text/xml"
    yield "huge-text", 200, _envelope(STATUS.replace("T-1", "x" * (11 << 20))), "text/xml"
    yield "bad-base64", 200, _envelope(STATUS.replace("PEFSQWN0ZS8+", "!!!not base64!!!")), "text/xml"
    yield "wrong-element", 200, _envelope("<Other xmlns='urn:x'/>"), "text/xml"
    yield "html-200", 200, b"<html><body>proxy login</body></html>", "text/html"
    yield "html-502", 502, b"<html>bad gateway</html>", "text/html"
    yield "fault-deep-detail", 500, _envelope("<s:Fault><faultcode>s:Server</faultcode><faultstring>x</faultstring>"
                                              f"<detail>{deep_xml(300).decode()}</detail></s:Fault>"), "text/xml"
    yield "fault-no-detail", 500, _envelope("<s:Fault><faultcode>s:Client</faultcode></s:Fault>"), "text/xml"
    yield "empty", 200, b"", "text/xml"
    yield "binary", 200, bytes(range(256)), "text/xml"


class _Platform(BaseAdapter):
    def __init__(self, status: int, body: bytes, media_type: str) -> None:
        super().__init__()
        self.answer = status, body, media_type

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = requests.Response()
        response.status_code, response._content, media_type = self.answer
        response.headers["Content-Type"] = media_type
        response.url, response.request = str(request.url), request
        return response

    def close(self) -> None:
        pass


SOAP = list(soap_cases())


@pytest.mark.parametrize(("case", "status", "body", "media_type"), SOAP, ids=[c for c, _, _, _ in SOAP])
def test_a_hostile_soap_answer_is_read_or_refused(case: str, status: int, body: bytes, media_type: str) -> None:
    endpoint = SoapOutbound("prefecture", SoapOutboundConfig.model_validate({"endpoint": "http://127.0.0.1:9/soap"}))
    endpoint.connect()
    try:
        endpoint._client().transport.session.mount("http://", _Platform(status, body, media_type))
        attempt("soap-answer", case, lambda: endpoint.statuses(["T-1"]),
                shown=lambda found: ", ".join(s.state for s in found))
    finally:
        endpoint.close()


# -- S2LOW's text answers -------------------------------------------------------------------------

S2LOW = [("ok", b"OK\n12\n"), ("ko", b"KO\nEchec de l'authentification"), ("empty", b""), ("blank", b" \r\n\t"),
         ("html", b"<html><title>Erreur</title></html>"), ("bom-ok", b"\xef\xbb\xbfOK\n1"),
         ("latin1", b"KO\nAcc\xe8s refus\xe9"), ("nul", b"OK\x00\n3"), ("status-not-int", b"OK\nfour\n"),
         ("status-huge", b"OK\n" + b"9" * 5000 + b"\n"), ("status-xml-truncated", b"OK\n4\n<actes:ARActe"),
         ("status-xml-entities", b"OK\n4\n" + ENTITY_ATTACKS["billion-laughs"].encode() + b"<a>&i;</a>"),
         ("status-xml-self-closing", b"OK\n4\n<actes:ARAnnulation/>trailing"), ("huge", b"OK\n" + b"x" * (8 << 20)),
         ("many-lines", b"KO\n" + b"line\n" * 200_000), ("utf16", "OK\n1".encode("utf-16")),
         ("binary", bytes(range(256))), ("cr-only", b"OK\r1\r"), ("ok-lower", b"ok\n1"), ("okay", b"OKAY\n1")]


@pytest.mark.parametrize(("case", "body"), S2LOW, ids=[c for c, _ in S2LOW])
def test_a_hostile_s2low_answer_is_read_or_refused(case: str, body: bytes) -> None:
    attempt("s2low-answer", case, lambda: read_answer(body, connector="tdt", operation="send"),
            shown=lambda answer: f"{'OK' if answer.ok else 'KO'} {answer.first!r:.60}")
    attempt("s2low-answer", f"{case}:status", lambda: read_status(body, connector="tdt", operation="status"),
            shown=lambda answer: f"{type(answer).__name__}")


# -- Pastell's JSON answers -------------------------------------------------------------------------

def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    response.headers.update({"Content-Type": "application/json", **(headers or {})})
    return response


class _Session:
    def __init__(self, response: requests.Response) -> None:
        self.response = response

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        return self.response

    def close(self) -> None:
        pass


PASTELL_BODIES = {
    "detail-ok": json.dumps({"info": {"id_d": "a"}, "data": {}, "last_action": {"action": "termine"}}).encode(),
    "not-json": b"<html>maintenance</html>", "empty": b"", "list": b"[1, 2]", "null": b"null", "string": b'"x"',
    "deep": b"[" * 100_000 + b"]" * 100_000, "huge-number": b"[" + b"9" * 5000 + b"]",
    "last-action-list": b'{"last_action": [1], "data": []}', "data-string": b'{"data": "x", "last_action": null}',
    "latin1": b'{"error-message": "acc\xe8s refus\xe9"}', "nan": b'{"a": NaN}', "truncated": b'{"info": {"id_',
    "error-huge": json.dumps({"error-message": "x" * (1 << 20)}).encode(),
    "error-not-text": b'{"error-message": {"a": [1, 2]}}', "utf16": json.dumps({"a": 1}).encode("utf-16"),
}


@pytest.mark.parametrize("status", [200, 400, 401, 404, 429, 500])
@pytest.mark.parametrize("body", list(PASTELL_BODIES))
def test_a_hostile_pastell_answer_is_read_or_refused(body: str, status: int) -> None:
    client = PastellClient.__new__(PastellClient)
    reply = _response(status, PASTELL_BODIES[body], {"Retry-After": "soon"})

    def document() -> Any:
        if status >= 400:
            raise refusal("ged", "getDocument", reply)
        client.connector, client.session = "ged", _Session(reply)  # type: ignore[assignment]
        client.call = lambda *a, **k: reply  # type: ignore[method-assign]
        return client.document("12", "a")

    attempt("pastell-answer", f"{body}-{status}", document, shown=lambda detail: f"detail with {len(detail)} keys")


DISPOSITIONS = ['attachment; filename="../../etc/passwd"', 'attachment; filename="CON.pdf"',
                "attachment; filename*=UTF-8''%2e%2e%2f%00evil.pdf", 'attachment; filename="' + "a" * 1000 + '.pdf"',
                'attachment; filename="a\\\\b.pdf"', "attachment; filename=", "garbage;;;==",
                'attachment; filename="\x01"']


@pytest.mark.parametrize("header", DISPOSITIONS)
def test_a_hostile_pastell_file_name_is_made_plain(header: str) -> None:
    name = attempt("pastell-file-name", repr(header)[:50],
                   lambda: file_name_of(_response(200, b"%PDF", {"Content-Disposition": header}), "aractes-0"),
                   shown=repr)
    assert isinstance(name, str) and "/" not in name and "\\" not in name and len(name.encode()) <= 255
