"""The Pastell simulator's HTTP side: routes of the REST API v2, authentication, injected faults.

Each request is matched to the OpenAPI operation it belongs to (``createDocument``,
``postDocumentAction``...), counted, put through the injected faults, authenticated (Bearer
token or HTTP Basic: 401 with ``WWW-Authenticate: Basic realm="API Pastell"`` otherwise),
then answered by :class:`simulators.pastell_store.PastellStore`.  Errors have Pastell's shape,
``{"status": "error", "error-message": "..."}``.  Every answer is recorded (operation, status,
headers, body) for the contract test.  HTTP/1.0: one request per connection; the server and
the handler's helpers are :mod:`simulators._http_sim`'s.
"""

from __future__ import annotations

__all__ = ["OPERATIONS", "PastellHandler", "PastellServer", "Reply", "route"]

import base64
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from simulators._http_sim import BaseSimHandler, QuietHTTPServer
from simulators.pastell_form import PastellError

if TYPE_CHECKING:
    from simulators.pastell import PastellSimulator

log = logging.getLogger("simulators.pastell")
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


class PastellServer(QuietHTTPServer):
    simulator: PastellSimulator


class PastellHandler(BaseSimHandler):
    server: PastellServer
    server_version = "HentPastellSimulator/1"
    too_large = (error(413, "requête trop volumineuse").encoded(), "application/json")
    ascii_json = False

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- plumbing ---------------------------------------------------------------------

    def _reply(self, reply: Reply) -> None:
        self._send(reply.status, reply.encoded(), reply.content_type, reply.headers)

    def _body(self) -> bytes | None:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return super()._body()
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

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
            self._control(method, parts.path, body if method != "GET" else b"")
            return
        found = route(method, parts.path.removeprefix("/api/v2/")) if parts.path.startswith("/api/v2/") else None
        if found is None:
            self._reply(error(404, f"Ressource {parts.path} introuvable"))
            return
        operation, params = found
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        key = f"action:{params['action']}" if operation == "postDocumentAction" else operation
        answering, fault = self._apply_faults(operation, key)
        if not answering:
            return
        kind = fault.kind if fault else None
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
        self._reply(reply)

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
                return Reply(200, store.type_pieces(id_e, id_d, params["field"]))
            case "patchDocumentExternalData":
                _, lists, _ = self._form(body)
                return Reply(200, store.set_type_piece(id_e, id_d, params["field"], lists.get("type_pj", [])))
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
