"""The S2LOW simulator's HTTP side: S2LOW's pages (see :mod:`simulators.s2low`), its login, its faults.

HTTP/1.0, one request per connection, so that a dropped or hung call holds no kept-alive
socket.  Over TLS the handshake is made in the connection's thread, like every HTTP
simulator's (:mod:`simulators._http_sim`).  Answers are what S2LOW's PHP pages print:
``OK``/``KO`` lines in ISO-8859-1 (``ResponseHelper::returnAndExit`` with ``api=1``), JSON for
the ``api/`` pages, the ministry's XML verbatim.  Forms are read as sent — multipart/form-data
or urlencoded — with no charset guessed: S2LOW reads ISO-8859-1.
"""

from __future__ import annotations

__all__ = ["S2lowHandler", "S2lowServer", "parse_form"]

import json
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from simulators._http_sim import BaseSimHandler, QuietHTTPServer
from simulators.s2low_actes import NOT_FOUND, Refused, Upload

if TYPE_CHECKING:
    from simulators.s2low import S2lowSimulator

_TEXT = "text/plain; charset=ISO-8859-1"
_PARAM = re.compile(r'(\w+)\*?=(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')
_REFUSED = "Échec de l'authentification"
log = logging.getLogger("simulators.s2low")


class S2lowServer(QuietHTTPServer):
    simulator: S2lowSimulator


def _params(header: str) -> tuple[str, dict[str, str]]:
    value, _, rest = header.partition(";")
    return value.strip().lower(), {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(rest)}


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, list[bytes]], dict[str, list[Upload]]]:
    """(fields, files) of a POST, values as bytes; ValueError when it cannot be read."""
    kind, params = _params(content_type)
    fields: dict[str, list[bytes]] = {}
    files: dict[str, list[Upload]] = {}
    if kind == "application/x-www-form-urlencoded":
        for pair in body.split(b"&"):
            if pair:
                name, _, value = pair.partition(b"=")
                fields.setdefault(unquote_to_bytes(name.replace(b"+", b" ")).decode("iso-8859-1"), []).append(
                    unquote_to_bytes(value.replace(b"+", b" ")))
        return fields, files
    if kind != "multipart/form-data" or not params.get("boundary"):
        raise ValueError(f"a form is multipart/form-data or urlencoded, not {content_type!r}")
    delimiter = b"\r\n--" + params["boundary"].encode("latin-1")
    chunks = (b"\r\n" + body).split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise ValueError("multipart body without its closing boundary")
    for chunk in chunks[1:-1]:
        head, found, content = chunk.partition(b"\r\n\r\n")
        if not found:
            raise ValueError("multipart part without headers")
        headers: dict[str, str] = {}
        for raw in head.strip().split(b"\r\n"):
            key, _, text = raw.decode("iso-8859-1").partition(":")
            headers[key.strip().lower()] = text.strip()
        disposition, options = _params(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in options:
            raise ValueError("multipart part without Content-Disposition: form-data; name=...")
        if "filename" in options:
            files.setdefault(options["name"], []).append(Upload(options["filename"], content))
        else:
            fields.setdefault(options["name"], []).append(content)
    return fields, files


def _lines(ok: bool, *lines: str) -> bytes:
    return ("OK\n" if ok else "KO\n").encode() + "".join(f"{line}\n" for line in lines).encode("iso-8859-1", "replace")


class S2lowHandler(BaseSimHandler):
    server: S2lowServer
    server_version = "HentS2lowSimulator/1"
    too_large = (b"<html><body>Request Entity Too Large</body></html>", "text/html")

    def _body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, b"Length Required", _TEXT)
            return None
        return super()._body()

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self._body() if method == "POST" else b""
        if body is None:
            return
        simulator = self.server.simulator
        if parts.path.startswith("/control/"):
            self._control(method, parts.path, body)
            return
        script = parts.path.rsplit("/", 1)[-1]
        answering, fault = self._apply_faults(script.removesuffix(".php"))
        if not answering:
            return
        kind = fault.kind if fault else None
        if kind == "http500":
            self._send(500, b"<html><head><title>500 Internal Server Error</title></head><body>injected</body></html>",
                       "text/html")
            return
        if script == "get-nounce.php":
            nonce = simulator._new_nonce(self.headers.get("Authorization", ""))
            if nonce is None or kind == "refuse_credentials":
                self._send(401, b"La fonction n'est utilisable qu'avec un login+mot de passe HTTP",
                           "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="API S2low"'})
            else:
                self._send(200, json.dumps({"nounce": nonce}).encode(), "application/json")
            return
        if kind == "refuse_credentials" or not simulator._authorised(self.headers.get("Authorization", ""), query):
            if "/api/" in parts.path:
                self._send(401, _REFUSED.encode(), "text/plain; charset=utf-8",
                           {"WWW-Authenticate": 'Basic realm="API S2low"'})
            else:
                self._send(200, _lines(False, _REFUSED), _TEXT)
            return
        try:
            answer = self._route(method, parts.path, query, body)
        except Refused as refusal:
            answer = (200, _lines(False, refusal.message), _TEXT)
        except Exception as exc:  # the simulator answers like a server, it does not die
            log.exception("%s failed", parts.path)
            answer = (500, f"<html><body>{type(exc).__name__}</body></html>".encode(), "text/html")
        if kind == "drop_reply_after_recording":
            self._drop()
            return
        self._send(*answer)

    def _route(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, bytes, str]:
        office = self.server.simulator.office
        script = path.removeprefix("/modules/actes/")
        if method == "GET" and path == "/api/test-connexion.php":
            return 200, b"OK", _TEXT
        if method == "POST" and script in ("actes_transac_create.php", "actes_transac_cancel.php",
                                           "actes_transac_reponse_create.php"):
            try:
                fields, files = parse_form(self.headers.get("Content-Type", ""), body)
            except ValueError as exc:
                return 400, f"<html><body>Bad Request: {exc}</body></html>".encode(), "text/html"
            if (fields.get("api") or [b""])[0].strip() != b"1":  # a browser's form: S2LOW redirects to a page
                office.refused["api"] += 1
                return 200, b"<!DOCTYPE html><html><head><title>S2LOW</title></head><body></body></html>", "text/html"
            if script == "actes_transac_create.php":
                return 200, _lines(True, str(office.create(fields, files))), _TEXT
            if script == "actes_transac_reponse_create.php":
                return 200, _lines(True, str(office.respond(fields, files))), _TEXT
            return 200, _lines(True, str(office.cancel((fields.get("id") or [b""])[0].decode().strip()))), _TEXT
        if method != "GET":
            return 405, b"Method Not Allowed", _TEXT
        return self._get(script, query)

    def _get(self, script: str, query: dict[str, str]) -> tuple[int, bytes, str]:
        office = self.server.simulator.office
        if script == "actes_transac_get_status.php":
            found = office.find(query.get("transaction"), query.get("unique_id") or None)
            if found is None:  # printed literally by S2LOW: UTF-8
                return 200, f"KO\n{NOT_FOUND}".encode(), "text/plain; charset=utf-8"
            status, xml, message = office.current(found)
            return 200, f"OK\n{status}\n".encode() + xml + message.encode("iso-8859-1", "replace"), _TEXT
        if script == "actes_transac_get_document.php":
            found = office.find(query.get("id"), query.get("unique_id") or None)
            if found is None or found.type not in (1, 2, 3, 4, 5):
                return 200, f"KO\n{NOT_FOUND}".encode(), "text/plain; charset=utf-8"
            if found.type == 1:
                return 200, "".join(f"{line}\n" for line in office.related(str(found.id))).encode(), _TEXT
            if found.answers is not None:  # an answer to a letter: the archive S2LOW built
                return 200, found.archive, "application/x-gzip"
            return 200, found.package, "application/x-gzip"
        if script == "actes_classification_fetch.php":
            return 200, office.classification(), "text/xml; charset=ISO-8859-1"
        if script == "actes_classification_request.php":
            return 200, _lines(True, str(office.request_classification())), _TEXT
        if script == "api/list_actes.php":
            status, offset, limit = (int(query.get(key) or default)
                                     for key, default in (("status_id", 0), ("offset", 0), ("limit", 100)))
            rows = office.listed(status, offset, limit)
            return 200, json.dumps({"status_id": status, "authority_id": 1, "offset": offset, "limit": limit,
                                    "transactions": rows}).encode(), "application/json"
        if script == "api/list_document_prefecture.php":
            return 200, json.dumps(office.unread()).encode(), "application/json"
        if script == "api/document_prefecture_mark_as_read.php":
            office.mark_read(query.get("transaction_id", ""))
            return 200, json.dumps({"result": "ok"}).encode(), "application/json"
        if script == "actes_transac_get_files_list.php":
            found = office.find(query.get("transaction"))
            files = found.files if found is not None else []
            return 200, json.dumps([{"id": f"{found.id}-{n}" if found else "", **f, "sign": ""}
                                    for n, f in enumerate(files)]).encode(), "application/json"
        if script == "actes_create_pdf.php":
            found = office.find(query.get("trans_id"))
            if found is None:
                return 200, f"KO\n{NOT_FOUND}".encode(), "text/plain; charset=utf-8"
            return 200, office.bordereau(found), "application/pdf"
        if script == "actes_download_file.php":
            media_type, data = office.download(query.get("file", ""), query.get("tampon") == "true")
            return 200, data, media_type
        return 404, b"<html><body>Not Found</body></html>", "text/html"
