"""The Pastell simulator's HTTP side: routes of the REST API v2, authentication, injected faults.

Each request is matched to the OpenAPI operation it belongs to (``createDocument``,
``postDocumentAction``...), counted, put through the injected faults, authenticated (Bearer
token or HTTP Basic: 401 with ``WWW-Authenticate: Basic realm="API Pastell"`` otherwise),
then answered by :class:`simulators.pastell_store.PastellStore`.  Errors have Pastell's shape,
``{"status": "error", "error-message": "..."}``.  Every answer is recorded (operation, status,
headers, body) for the contract test.  HTTP/1.0: one request per connection.
"""

from __future__ import annotations

__all__ = ["OPERATIONS", "PastellHandler", "PastellServer", "Reply", "route"]

import base64
import hmac
import json
import logging
import re
import socket
import ssl
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from simulators.pastell_form import PastellError

if TYPE_CHECKING:
    from simulators.pastell import PastellSimulator

log = logging.getLogger("simulators.pastell")
_MAX_BODY = 200 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0
#: (method, path pattern under /api/v2) → OpenAPI operationId; file uploads by path are Pastell's
#: real route (DocumentAPIController::postFile), answered like ``postDocumentFile``
OPERATIONS: list[tuple[str, str, str]] = [
    ("GET", r"version", "getVersion"),
    ("GET", r"entite", "listEntite"),
    ("GET", r"entite/(?P<id_e>[^/]+)/document", "listDocuments"),
    ("POST", r"entite/(?P<id_e>[^/]+)/document", "createDocument"),
    ("GET", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)", "getDocument"),
    ("PATCH", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)", "modifyDocument"),
    ("POST", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)", "postDocumentFile"),
    ("POST", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)/file/(?P<field>[^/]+)(/(?P<num>[0-9]+))?",
     "postDocumentFile"),
    ("GET", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)/file/(?P<field>[^/]+)(/(?P<num>[0-9]+))?",
     "getDocumentFile"),
    ("GET", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)/externalData/(?P<field>[^/]+)",
     "getDocumentExternalData"),
    ("PATCH", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)/externalData/(?P<field>[^/]+)",
     "patchDocumentExternalData"),
    ("POST", r"entite/(?P<id_e>[^/]+)/document/(?P<id_d>[^/]+)/action/(?P<action>[^/]+)", "postDocumentAction"),
    ("GET", r"entite/(?P<id_e>[^/]+)/connecteur", "listConnecteur"),
    ("GET", r"entite/(?P<id_e>[^/]+)/connecteur/(?P<id_ce>[^/]+)/file/(?P<field>[^/]+)/(?P<num>[0-9]+)",
     "getConnecteurFile"),
]
_COMPILED = [(method, re.compile(pattern + r"/?"), operation) for method, pattern, operation in OPERATIONS]


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """(operationId, path parameters) of a request path under ``/api/v2/``, or None."""
    for candidate, pattern, operation in _COMPILED:
        found = pattern.fullmatch(path)
        if candidate == method and found:
            return operation, {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
    return None


@dataclass
class Reply:
    """An answer: JSON (``payload``) or bytes (``body`` with ``content_type``)."""

    status: int
    payload: Any = None
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        if self.body is not None:
            return self.body
        return json.dumps(self.payload, ensure_ascii=False).encode("utf-8")


def error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"status": "error", "error-message": message}, headers=headers)


class PastellServer(ThreadingHTTPServer):
    daemon_threads = True
    simulator: PastellSimulator

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):  # handshake in the connection's thread, not in accept()
            request.settimeout(_HANDSHAKE_TIMEOUT)
            request.do_handshake()
            request.settimeout(None)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("request from %s failed", client_address, exc_info=True)


class PastellHandler(BaseHTTPRequestHandler):
    server: PastellServer
    server_version = "HentPastellSimulator/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing ---------------------------------------------------------------------

    def _send(self, reply: Reply) -> None:
        body = reply.encoded()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        """Close the connection without a byte of answer."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self._send(error(413, "requête trop volumineuse"))
            return None
        return self.rfile.read(length)

    def _form(self, body: bytes) -> tuple[dict[str, str], dict[str, list[str]], dict[str, tuple[str, bytes]]]:
        """(fields, repeated fields, files) of a form-urlencoded or multipart body."""
        kind = self.headers.get("Content-Type") or ""
        pairs: list[tuple[str, str]] = []
        files: dict[str, tuple[str, bytes]] = {}
        if kind.lower().startswith("multipart/form-data"):
            found = re.search(r'boundary="?([^";]+)"?', kind)
            for part in body.split(b"--" + found.group(1).encode()) if found else []:
                head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
                disposition = re.search(rb'name="([^"]*)"(; *filename="([^"]*)")?', head)
                if disposition is None:
                    continue
                name, content = disposition.group(1).decode(), content.removesuffix(b"\r\n")
                if disposition.group(2):
                    files[name] = (disposition.group(3).decode("utf-8", "replace"), content)
                else:
                    pairs.append((name, content.decode("utf-8", "replace")))
        else:
            pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        lists: dict[str, list[str]] = {}
        for name, value in pairs:
            lists.setdefault(name.removesuffix("[]"), []).append(value)
        return {name: values[-1] for name, values in lists.items()}, lists, files

    def _authorised(self) -> bool:
        simulator = self.server.simulator
        if simulator.token is None and simulator.login is None:
            return True
        header = self.headers.get("Authorization") or ""
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and simulator.token is not None:
            return hmac.compare_digest(value.strip().encode(), simulator.token.encode())
        if scheme.lower() == "basic" and simulator.login is not None:
            try:
                login, _, password = base64.b64decode(value.strip()).decode("utf-8").partition(":")
            except ValueError:
                return False
            return hmac.compare_digest(login.encode(), simulator.login.encode()) and hmac.compare_digest(
                password.encode(), (simulator.password or "").encode())
        return False

    # -- one request ----------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        simulator = self.server.simulator
        parts = urlsplit(self.path)
        body = self._body()
        if body is None:
            return
        if parts.path.startswith("/control/"):
            try:
                payload = json.loads(body or b"{}") if method != "GET" else {}
            except ValueError as exc:
                self._send(Reply(400, {"error": f"not JSON: {exc}"}))
                return
            status, answer = simulator._control(method, parts.path, payload if isinstance(payload, dict) else {})
            self._send(Reply(status, answer))
            return
        found = route(method, parts.path.removeprefix("/api/v2/")) if parts.path.startswith("/api/v2/") else None
        if found is None:
            self._send(error(404, f"Ressource {parts.path} introuvable"))
            return
        operation, params = found
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        key = f"action:{params['action']}" if operation == "postDocumentAction" else operation
        latency, fault = simulator._take_faults(operation, key)
        if latency and simulator._wait(latency):
            self._drop()
            return
        kind = fault.kind if fault else None
        if kind in ("drop", "timeout"):
            if kind == "timeout":
                simulator._wait((fault.seconds if fault else 0.0) or 3600.0)
            self._drop()
            return
        if kind == "http500":
            reply = error(500, "Erreur interne (injectée)")
        elif kind == "rate_limit":
            reply = error(429, "Trop de requêtes", **{"Retry-After": str(int((fault.seconds if fault else 0) or 1))})
        elif kind == "refuse_credentials" or not self._authorised():
            reply = error(401, "Authentification requise", **{"WWW-Authenticate": 'Basic realm="API Pastell"'})
        else:
            reply = self._answer(operation, params, query, body)
        if kind == "lost_reply":
            self._drop()
            return
        simulator._record(operation, method, parts.path, reply)
        self._send(reply)

    def _answer(self, operation: str, params: dict[str, str], query: dict[str, str], body: bytes) -> Reply:
        try:
            return self._dispatch(operation, params, query, body)
        except PastellError as refused:
            return error(refused.status, refused.message)
        except Exception as exc:  # the simulator answers like a server, it does not die
            log.exception("%s failed", operation)
            return error(500, f"{type(exc).__name__}: {exc}")

    def _dispatch(self, operation: str, params: dict[str, str], query: dict[str, str], body: bytes) -> Reply:
        simulator = self.server.simulator
        store = simulator.store
        id_e, id_d = params.get("id_e", ""), params.get("id_d", "")
        match operation:
            case "getVersion":
                return Reply(200, simulator.version())
            case "listEntite":
                return Reply(200, [simulator.entity_json(e) for e in store.entities.values()])
            case "listDocuments":
                return Reply(200, store.search(id_e, query))
            case "createDocument":
                fields, _, _ = self._form(body)
                return Reply(201, store.create(id_e, fields.get("type") or query.get("type", "")))
            case "getDocument":
                return Reply(200, store.detail(id_e, id_d))
            case "modifyDocument":
                fields, _, _ = self._form(body)
                return Reply(200, store.modify(id_e, id_d, fields))
            case "postDocumentFile":
                fields, _, files = self._form(body)
                name, content = files.get("file_content") or (fields.get("file_name", ""),
                                                               fields.get("file_content", "").encode())
                field_name = params.get("field") or query.get("field") or ""
                return Reply(201, store.add_file(id_e, id_d, field_name, int(params.get("num") or 0),
                                                 fields.get("file_name") or name, content))
            case "getDocumentFile":
                name, content = store.file(id_e, id_d, params["field"], int(params.get("num") or 0))
                return Reply(200, body=content, content_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
            case "getDocumentExternalData":
                if params["field"] != "type_piece":
                    raise PastellError(400, f"Type {params['field']} introuvable")
                return Reply(200, store.type_pieces(id_e, id_d))
            case "patchDocumentExternalData":
                if params["field"] != "type_piece":
                    raise PastellError(400, f"Type {params['field']} introuvable")
                _, lists, _ = self._form(body)
                return Reply(200, store.set_type_piece(id_e, id_d, lists.get("type_pj", [])))
            case "postDocumentAction":
                return Reply(201, store.action(id_e, id_d, params["action"]))
            case "listConnecteur":
                store.entity(id_e)
                return Reply(200, [simulator.tdt_connector(id_e)])
            case "getConnecteurFile":
                store.entity(id_e)
                wanted = (simulator.tdt_connector(id_e)["id_ce"], "classification_file", "0")
                if (params["id_ce"], params["field"], params["num"]) != wanted:
                    raise PastellError(404, "Ce fichier n'existe pas")
                name, content = store.tdt_classification()
                return Reply(200, body=content, content_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
        raise PastellError(404, f"Opération {operation} non simulée")
