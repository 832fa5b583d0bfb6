"""What a Pastell connector needs from requests: one session, Pastell's errors mapped at the boundary.

:class:`PastellClient` sends each call of the REST API v2 with the configured credentials
(``Authorization: Bearer`` or HTTP Basic), timeouts and TLS settings, and turns every answer
that is not a success into Hent's errors, by what happens next:

- 401, 403 → :class:`TransientAlert` (retried, the circuit opens, a person must act: the
  token, the password or the user's rights on the entity);
- 429 → waited out when ``Retry-After`` is short (at most ``max_wait`` seconds, twice),
  else :class:`RateLimited`, a TransientError carrying ``retry_after``;
- 400, 409, 413, 422 → DocumentError with Pastell's ``error-message`` and, when it names one,
  the field; 404 → :class:`NotFound` (a DocumentError);
- 5xx, timeouts, a connection lost → TransientError; :data:`UNKNOWN_OUTCOME` lists the rules
  after which the request may have been carried out (look before doing it again).

Files are uploaded as multipart streamed from disk (:class:`MultipartFile`), never read whole; every
answer is read by chunks up to ``max_response_bytes`` (:mod:`connectors._http_limits`).
"""

from __future__ import annotations

__all__ = [
    "FIELD_LABELS", "MAX_FILES", "UNKNOWN_OUTCOME", "MultipartFile", "NotFound", "PastellClient", "RateLimited",
    "TransientAlert", "data_of", "file_name_of", "last_action", "plain_file_name", "requests_errors", "truthy",
]

import email.message
import io
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import requests

from bus.errors import DocumentError, HentError, TransientAlert, TransientError
from bus.secrets import Secret, redact, redact_url
from connectors._folder_common import plain_file_name
from connectors._http_limits import DEFAULT_MAX_RESPONSE_BYTES, read_capped

log = logging.getLogger(__name__)

#: rules of the TransientErrors after which Pastell may have done what was asked
UNKNOWN_OUTCOME = frozenset({"pastell-timeout", "pastell-connection-lost", "pastell-transfer", "pastell-http-5xx",
                             "response-too-large"})
#: HTTP statuses that blame the request (the act) rather than Pastell
DOCUMENT_STATUSES = frozenset({400, 409, 413, 422})
#: how many times a short Retry-After is waited out before giving up to the runtime
MAX_WAITS = 2
#: Pastell's label of each actes-generique field, to name the field its messages speak of
FIELD_LABELS = {
    "acte_nature": "Nature de l'acte", "numero_de_lacte": "Numéro de l'acte", "objet": "Objet",
    "date_de_lacte": "Date de l'acte", "document_papier": "Envoi de documents papiers complémentaires",
    "arrete": "Acte", "autre_document_attache": "Autre document attaché", "classification": "Classification Actes",
    "type_piece": "Typologie des pièces", "envoi_tdt": "Transmission au contrôle de légalité",
}
MAX_FILES = 50  #: files read from one multiple field
_CHUNK = 1 << 20


class RateLimited(TransientError):
    """Pastell asked to wait longer than the connector waits by itself: ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float, **where: Any) -> None:
        super().__init__(message, **where)
        self.retry_after = retry_after


class NotFound(DocumentError):
    """Pastell has no such entity, document or file (HTTP 404)."""


class MultipartFile:
    """A ``multipart/form-data`` body (some fields, then one file read from disk as it is sent).

    Has a length (so requests sends Content-Length) and reads the file by chunks.
    """

    def __init__(self, fields: dict[str, str], file_field: str, file_name: str, path: Path) -> None:
        boundary = f"hent-{secrets.token_hex(16)}"
        self.content_type = f"multipart/form-data; boundary={boundary}"
        quoted = file_name.replace("\\", "_").replace('"', "_").replace("\r", "_").replace("\n", "_")
        head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                       for name, value in fields.items())
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{quoted}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n")
        start, end = head.encode("utf-8"), f"\r\n--{boundary}--\r\n".encode()
        self._file: BinaryIO = path.open("rb")
        self._parts: list[BinaryIO] = [io.BytesIO(start), self._file, io.BytesIO(end)]
        self._length = len(start) + path.stat().st_size + len(end)
        self._index = self._position = 0

    def __len__(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        need = self._length - self._position if size is None or size < 0 else size
        chunks = []
        while need > 0 and self._index < len(self._parts):
            piece = self._parts[self._index].read(need)
            if not piece:
                self._index += 1
                continue
            chunks.append(piece)
            need -= len(piece)
        out = b"".join(chunks)
        self._position += len(out)
        return out

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(_CHUNK):
            yield chunk

    def close(self) -> None:
        self._file.close()


def file_name_of(response: requests.Response, default: str) -> str:
    """The file name in a ``Content-Disposition`` header, made plain; else ``default``."""
    header = response.headers.get("Content-Disposition")
    if not header:
        return default
    message = email.message.Message()
    message["Content-Disposition"] = header
    return plain_file_name(message.get_filename(), default)


def last_action(detail: dict[str, Any]) -> tuple[str, str]:
    """(action, message) of a document's last action, whether Pastell gives an object or a name."""
    last = detail.get("last_action")
    if isinstance(last, dict):
        return str(last.get("action") or ""), str(last.get("message") or "")
    return str(last or ""), ""


def data_of(detail: dict[str, Any]) -> dict[str, Any]:
    """The form data of a document's detail ({} when Pastell gives none)."""
    data = detail.get("data")
    return data if isinstance(data, dict) else {}


def truthy(value: Any) -> bool:
    """A checkbox or flag of Pastell's data: "1", "on", true... (not "0", "false", "")."""
    return bool(value) and str(value).strip().lower() not in ("0", "false", "")


def _said(response: requests.Response) -> str:
    """Pastell's ``error-message``, else the start of the body."""
    try:
        payload = response.json()
    except (ValueError, RecursionError):  # RecursionError: [[[[... found by tests/hostile
        payload = None
    if isinstance(payload, dict) and payload.get("error-message"):
        return redact(str(payload["error-message"]))
    return redact(response.text[:300].strip()) or "no message"


def _field_named(message: str) -> str | None:
    for name, label in FIELD_LABELS.items():
        if f"«{label}»" in message or f"« {label} »" in message or name in message:
            return name
    return None


def _retry_after(response: requests.Response) -> float:
    value = (response.headers.get("Retry-After") or "").strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 60.0  # absent or a date: Pastell's own brute-force delay


def refusal(connector: str, operation: str, response: requests.Response) -> HentError:
    """The HentError an answer that is not a success stands for."""
    status = response.status_code
    said = _said(response)
    head = f"connector {connector!r}: {operation} answered HTTP {status} ({said})"
    if status in (401, 403):
        return TransientAlert(f"{head}: Pastell refused the credentials or the user's rights; check the token (or "
                              "login and password) and the user's role on the entity", connector=connector,
                              rule=f"pastell-http-{status}")
    if status == 404:
        return NotFound(head, connector=connector, rule="pastell-http-404")
    if status == 429:
        delay = _retry_after(response)
        return RateLimited(f"{head}: Pastell asks to wait {delay:.0f} s; retried later", retry_after=delay,
                           connector=connector, rule="pastell-http-429")
    if status in DOCUMENT_STATUSES:
        field = _field_named(said)
        return DocumentError(f"{head}: fix the act{f' ({field})' if field else ''}, then replay it",
                             connector=connector, field=field, rule=f"pastell-http-{status}")
    rule = "pastell-http-5xx" if status >= 500 else f"pastell-http-{status}"
    return TransientError(f"{head}: retried later; check the url if it lasts", connector=connector, rule=rule)


@contextmanager
def requests_errors(connector: str, operation: str) -> Iterator[None]:
    """Translate requests' exceptions raised by ``operation`` into Hent's errors."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise TransientAlert(
            f"connector {connector!r}: {operation}: TLS handshake failed ({redact(str(exc))[:300]}); check Pastell's "
            "certificate, ca_file and client_cert", connector=connector, rule="pastell-tls") from exc
    except (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
        raise TransientError(f"connector {connector!r}: {operation}: cannot connect to Pastell "
                             f"({type(exc).__name__}); retried later", connector=connector,
                             rule="pastell-connect") from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(f"connector {connector!r}: {operation}: no answer within read_timeout; retried later",
                             connector=connector, rule="pastell-timeout") from exc
    except requests.exceptions.ConnectionError as exc:
        before = _before_sending(exc)
        raise TransientError(
            f"connector {connector!r}: {operation}: connection to Pastell "
            f"{'refused or unreachable' if before else 'lost'}; retried later", connector=connector,
            rule="pastell-connect" if before else "pastell-connection-lost") from exc
    except requests.exceptions.RequestException as exc:
        raise TransientError(f"connector {connector!r}: {operation}: transfer failed ({type(exc).__name__}); "
                             "retried later", connector=connector, rule="pastell-transfer") from exc


def _before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection could not even be opened (the request never left)."""
    from urllib3.exceptions import NewConnectionError

    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


class PastellClient:
    """Calls of Pastell's REST API v2 (``<url>/api/v2/...``) on one requests session."""

    def __init__(
        self, connector: str, url: str, *, token: Secret | None = None, login: str | None = None,
        password: Secret | None = None, timeouts: tuple[float, float], verify_tls: bool = True,
        ca_file: Path | None = None, client_cert: Path | None = None, client_key: Path | None = None,
        max_wait: float = 10.0, sleep: Callable[[float], None] = time.sleep,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.connector, self.base = connector, url.rstrip("/") + "/api/v2"
        self.max_response_bytes = max_response_bytes
        self.timeouts, self.max_wait, self._sleep = timeouts, max_wait, sleep
        self.session = requests.Session()
        self._headers = {"Accept": "application/json"}
        self._auth: tuple[str, str] | None = None
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.reveal()}"
        elif login is not None and password is not None:
            self._auth = (login, password.reveal())
        # verify and cert given per request: REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE would override the session's
        self._verify: bool | str = str(ca_file) if ca_file is not None and verify_tls else verify_tls
        self._cert = (str(client_cert), str(client_key)) if client_cert and client_key else (
            str(client_cert) if client_cert else None)
        if not verify_tls and url.startswith("https:"):
            log.warning("connector %r: TLS verification is OFF for %s: anyone on the path can read the acts and the "
                        "token, and change them; set verify_tls: true", connector, redact_url(url))

    def close(self) -> None:
        self.session.close()

    def call(
        self, method: str, path: str, *, operation: str, params: Any = None, data: Any = None,
        upload: Callable[[], MultipartFile] | None = None, timeouts: tuple[float, float] | None = None,
    ) -> requests.Response:
        """One call; a short 429 is waited out (the body built again by ``upload``); errors translated."""
        for attempt in range(MAX_WAITS + 1):
            body = upload() if upload is not None else None
            headers = dict(self._headers)
            if body is not None:
                headers["Content-Type"] = body.content_type
            try:
                with requests_errors(self.connector, operation):
                    response = self.session.request(
                        method, f"{self.base}/{path}", params=params, data=body if body is not None else data,
                        headers=headers, auth=self._auth, timeout=timeouts or self.timeouts, verify=self._verify,
                        cert=self._cert, allow_redirects=False, stream=True,
                    )
                    read_capped(response, connector=self.connector, limit=self.max_response_bytes,
                                operation=operation)
            finally:
                if body is not None:
                    body.close()
            if response.status_code < 400:
                return response
            problem = refusal(self.connector, operation, response)
            response.close()
            if isinstance(problem, RateLimited) and problem.retry_after <= self.max_wait and attempt < MAX_WAITS:
                log.info("connector %r: %s rate-limited by Pastell: waiting %.1f s", self.connector, operation,
                         problem.retry_after)
                self._sleep(problem.retry_after)
                continue
            raise problem
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, method: str, path: str, *, operation: str, **options: Any) -> Any:
        """A call whose answer is JSON (an unreadable one is a TransientError)."""
        response = self.call(method, path, operation=operation, **options)
        try:
            return response.json()
        except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... found by tests/hostile
            raise TransientError(f"connector {self.connector!r}: {operation}: Pastell's answer is not JSON "
                                 f"(HTTP {response.status_code}); retried later", connector=self.connector,
                                 rule="pastell-answer") from exc

    def document(self, entity: str, id_d: str) -> dict[str, Any]:
        """``getDocument``: the detail of document ``id_d`` of the entity (a TransientError if not an object)."""
        detail = self.json("GET", f"entite/{entity}/document/{id_d}", operation="getDocument")
        if not isinstance(detail, dict):
            raise TransientError(f"connector {self.connector!r}: getDocument {id_d}: unexpected answer from Pastell; "
                                 "retried later", connector=self.connector, rule="pastell-answer")
        return detail

    def files(self, entity: str, id_d: str, field: str, *, limit: int = MAX_FILES) -> list[tuple[str, bytes]]:
        """The files of a document's field, by number until Pastell has no more: (name, content)."""
        found = []
        for num in range(limit):
            try:
                response = self.call("GET", f"entite/{entity}/document/{id_d}/file/{field}/{num}",
                                     operation="getDocumentFile")
            except NotFound:
                break
            found.append((file_name_of(response, f"{field}-{num}"), response.content))
        return found
