"""What the S2LOW connector needs from HTTP: a TLS session, S2LOW's logins, its terse answers read leniently.

S2LOW answers its API calls in plain text: ``OK`` or ``KO`` on the first line, then a
transaction id, a status code and the ministry's XML, or a message in French (ISO-8859-1 or
UTF-8 depending on the page).  :func:`read_answer` and :func:`read_status` accept blank
lines, ``\\r\\n`` and trailing spaces, keep the XML as bytes, verbatim, and turn anything else
(an HTML page, an empty body) into a :class:`~bus.errors.TransientError` that says what came.

:class:`S2lowHttp` owns the requests session (TLS verified, client certificate, each answer read up to
``max_response_bytes``: :mod:`connectors._http_limits`) and the login:
HTTP Basic on every call, or S2LOW's nonce scheme (``/api/get-nounce.php`` once with Basic,
then ``nounce``, ``login`` and ``hash = sha256("password:nounce")`` on each call; a nonce lives
five minutes at S2LOW and is renewed after four).  :func:`http_errors` translates what
requests raises; a refused login or certificate is a :class:`TransientAlert` (retried, the
circuit opens, a person must act).  The ``rule`` of each error names what happened:
``s2low-connect`` means the request never left.
"""

from __future__ import annotations

__all__ = [
    "STATUS_LABELS", "MultipartBody", "Reply", "S2lowAnswer", "S2lowHttp", "StatusAnswer", "TransientAlert",
    "http_errors", "plain", "plain_file_name", "read_answer", "read_status", "refused_login",
]

import hashlib
import json
import logging
import re
import secrets
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests

from bus.errors import DocumentError, TransientAlert, TransientError
from bus.secrets import Secret, redact, redact_url
from connectors._folder_common import plain_file_name
from connectors._http_limits import DEFAULT_MAX_RESPONSE_BYTES, read_capped

log = logging.getLogger(__name__)


#: S2LOW's transaction statuses (standards.md §1.12), in S2LOW's words
STATUS_LABELS = {
    -1: "erreur", 0: "annulé", 1: "posté", 2: "en attente de transmission", 3: "transmis", 4: "acquittement reçu",
    5: "validé", 6: "refusé", 7: "document reçu", 8: "document reçu, AR envoyé", 11: "acquittement reçu",
    12: "envoyé au SAE", 13: "archivé par le SAE", 14: "erreur lors de l'archivage", 17: "en attente d'être postée",
    18: "en attente d'être signée", 19: "en attente de transmission au SAE", 20: "erreur envoi SAE",
    21: "document reçu (pas d'AR)",
}
NONCE_LIFE = 240.0  #: seconds a nonce is used (S2LOW forgets it after five minutes)
_HTML = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_ROOT = re.compile(rb"<([A-Za-z_][\w.\-]*(?::[A-Za-z_][\w.\-]*)?)(?:\s[^>]*?)?(/?)>", re.DOTALL)
_LOGIN_REFUSED = ("echec de l'authentification", "acces refuse", "login+mot de passe", "certificat rgs")


def plain(text: str) -> str:
    """Lower case, no accents, single spaces: what S2LOW's messages are matched on."""
    decomposed = unicodedata.normalize("NFKD", text.replace("’", "'"))
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).lower().split())


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")


def refused_login(message: str) -> bool:
    """Whether S2LOW's message says that the login, password or certificate was refused."""
    said = plain(message)
    return any(words in said for words in _LOGIN_REFUSED)


@dataclass(frozen=True)
class S2lowAnswer:
    """``OK``/``KO`` and what follows: ``first`` its first line, ``text`` all of it, ``rest`` as bytes."""

    ok: bool
    first: str
    text: str
    rest: bytes


def _what_came(body: bytes) -> str:
    if not body.strip():
        return "an empty answer"
    if _HTML.match(body):
        title = _TITLE.search(body)
        return "an HTML page" + (f" ({_decode(title.group(1)).strip()[:80]!r})" if title else "")
    return f"{_decode(body[:80]).strip()!r}"


def read_answer(body: bytes, *, connector: str, operation: str) -> S2lowAnswer:
    """S2LOW's ``OK\\n...`` or ``KO\\n...``; TransientError when it is neither."""
    text = body.lstrip(b"\xef\xbb\xbf").lstrip()
    head, _, rest = text.partition(b"\n")
    word = head.strip().upper()
    if word not in (b"OK", b"KO"):
        raise TransientError(
            f"connector {connector!r}: {operation}: S2LOW answered {_what_came(body)} instead of OK or KO; "
            "retried later (check the url if it lasts)", connector=connector, rule="s2low-answer")
    rest = rest.replace(b"\r\n", b"\n").lstrip()
    lines = [line.strip() for line in _decode(rest).splitlines() if line.strip()]
    return S2lowAnswer(word == b"OK", lines[0] if lines else "", "\n".join(lines), rest)


@dataclass(frozen=True)
class StatusAnswer:
    """``actes_transac_get_status.php``'s answer: the status, the ministry's XML if any, the words after it."""

    status: int
    xml: bytes | None
    message: str


def split_xml(data: bytes) -> tuple[bytes | None, str]:
    """(the XML document at the start of ``data``, verbatim; the text after it)."""
    data = data.lstrip()
    if not data.startswith(b"<"):
        return None, _decode(data).strip()
    position = 0
    while True:  # the root element: past the declaration, comments, processing instructions
        found = _ROOT.search(data, position)
        if found is None:
            return data, ""
        if found.group(0).startswith((b"<?", b"<!")):
            position = found.end()
            continue
        break
    if found.group(2):  # <actes:ARAnnulation .../>
        end = found.end()
    else:
        closings = list(re.finditer(rb"</" + re.escape(found.group(1)) + rb"\s*>", data[found.end():]))
        if not closings:
            return data, ""
        end = found.end() + closings[-1].end()
    return data[:end], _decode(data[end:]).strip()


def read_status(body: bytes, *, connector: str, operation: str) -> StatusAnswer | S2lowAnswer:
    """``OK\\n<status>\\n<XML><message>``, or the KO answer as it came."""
    answer = read_answer(body, connector=connector, operation=operation)
    if not answer.ok:
        return answer
    head, _, rest = answer.rest.partition(b"\n")
    try:
        status = int(head.strip())
    except ValueError:
        raise TransientError(
            f"connector {connector!r}: {operation}: S2LOW answered OK without a status code "
            f"({_what_came(answer.rest)}); retried later", connector=connector, rule="s2low-answer") from None
    xml, message = split_xml(rest)
    return StatusAnswer(status, xml, message)


# ------------------------------------------------------------------ multipart, streamed


class MultipartBody:
    """A multipart/form-data body that requests reads in chunks: files stream from disk, never whole.

    ``fields`` are (name, bytes) sent as given (no charset added: S2LOW reads ISO-8859-1);
    ``files`` are (field, file name, path, media type).  Its length is known beforehand, so
    requests sends a Content-Length, not a chunked body.
    """

    CHUNK = 1 << 20

    def __init__(self, fields: list[tuple[str, bytes]], files: list[tuple[str, str, Path, str]]) -> None:
        self.boundary = f"hent-{secrets.token_hex(12)}"
        self._parts: list[bytes | Path] = []
        for name, value in fields:
            self._parts.append(self._head(name) + b"\r\n" + value + b"\r\n")
        for field, filename, path, media_type in files:
            safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
            self._parts += [self._head(field, f'; filename="{safe}"') + f"Content-Type: {media_type}\r\n\r\n"
                            .encode(), path, b"\r\n"]
        self._parts.append(f"--{self.boundary}--\r\n".encode())
        self._length = sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self._parts)
        self._index = 0
        self._open_file: BinaryIO | None = None

    def _head(self, name: str, extra: str = "") -> bytes:
        return f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(self.CHUNK):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        size = self._length if size is None or size < 0 else size
        out = bytearray()
        while len(out) < size and self._index < len(self._parts):
            part = self._parts[self._index]
            if isinstance(part, bytes):
                out += part
                self._index += 1
                continue
            if self._open_file is None:
                self._open_file = part.open("rb")
            chunk = self._open_file.read(size - len(out))
            if chunk:
                out += chunk
            else:
                self.close()
                self._index += 1
        return bytes(out)

    def close(self) -> None:
        if self._open_file is not None:
            self._open_file.close()
            self._open_file = None


# ------------------------------------------------------------------ HTTP


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


@contextmanager
def http_errors(connector: str, operation: str) -> Iterator[None]:
    """Translate what requests raises during ``operation`` into Hent's errors."""
    where: dict[str, Any] = {"connector": connector}
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise TransientAlert(
            f"connector {connector!r}: {operation}: TLS handshake failed ({redact(str(exc))[:300]}); check the "
            "server's certificate, ca_file and the client certificate (client_cert, client_key)",
            rule="s2low-tls", **where) from exc
    except (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
        raise TransientError(f"connector {connector!r}: {operation}: cannot connect to S2LOW "
                             f"({type(exc).__name__}); retried later", rule="s2low-connect", **where) from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(f"connector {connector!r}: {operation}: no answer from S2LOW within read_timeout; "
                             "retried later", rule="s2low-timeout", **where) from exc
    except requests.exceptions.ConnectionError as exc:
        before = _before_sending(exc)
        raise TransientError(
            f"connector {connector!r}: {operation}: connection to S2LOW "
            f"{'refused or unreachable' if before else 'lost'}; retried later",
            rule="s2low-connect" if before else "s2low-connection-lost", **where) from exc
    except (requests.exceptions.RequestException, OSError) as exc:  # chunked encoding, a file gone...
        raise TransientError(f"connector {connector!r}: {operation}: transfer failed ({type(exc).__name__}: "
                             f"{redact(str(exc))[:200]}); retried later", rule="s2low-transfer", **where) from exc


def _before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    from urllib3.exceptions import NewConnectionError

    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)


def _http_status(connector: str, operation: str, reply: Reply) -> Exception | None:
    status = reply.status
    if 200 <= status < 300:
        return None
    head = f"connector {connector!r}: {operation}: S2LOW answered HTTP {status}"
    where: dict[str, Any] = {"connector": connector, "rule": f"s2low-http-{status}"}
    if status in (401, 403):
        return TransientAlert(f"{head}: it refused the login; check login, password and the client "
                              "certificate of the connector", **where)
    if status == 404 or 300 <= status < 400:
        return TransientAlert(f"{head}: check the connector's url (the S2LOW server's address)", **where)
    if status == 413:
        return DocumentError(f"{head}: the act's files are too large for S2LOW; send fewer or smaller annexes",
                             **where)
    return TransientError(f"{head} ({_what_came(reply.body)}); retried later", **where)


class S2lowHttp:
    """The session, the login (Basic or nonce) and one call with its errors mapped."""

    def __init__(
        self, connector: str, *, url: str, timeouts: tuple[float, float], verify_tls: bool, ca_file: Path | None,
        client_cert: Path | None, client_key: Path | None, login: str | None, password: Secret | None,
        auth: str, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.connector, self.url, self.timeouts = connector, url.rstrip("/"), timeouts
        self.max_response_bytes = max_response_bytes
        self.login, self.password, self.auth = login, password, auth
        self.session = requests.Session()
        self.session.verify = str(ca_file) if ca_file is not None and verify_tls else verify_tls
        if client_cert is not None:
            self.session.cert = (str(client_cert), str(client_key)) if client_key else str(client_cert)
        if login is not None and password is not None and auth == "basic":
            self.session.auth = (login, password.reveal())
        self._nonce: tuple[str, float] | None = None
        self._lock = threading.Lock()
        if not verify_tls and self.url.startswith("https:"):
            log.warning("connector %r: TLS verification is off for %s: anyone on the path can read and change "
                        "the acts sent; set verify_tls: true", connector, redact_url(self.url))

    def close(self) -> None:
        self.session.close()  # pooled connections only: the session stays usable

    def call(
        self, method: str, script: str, *, operation: str, params: dict[str, str] | None = None,
        body: Callable[[], MultipartBody] | None = None, timeouts: tuple[float, float] | None = None,
    ) -> bytes:
        """The body of S2LOW's answer to ``script`` (a path under ``url``); Hent's errors otherwise."""
        for attempt in (1, 2):
            fresh = self._nonce is None
            query = {**(params or {}), **self._nonce_params(operation)}
            stream = body() if body is not None else None
            try:
                with http_errors(self.connector, operation):
                    response = self.session.request(
                        method, f"{self.url}/{script.lstrip('/')}", params=query or None, data=stream,
                        headers={"Content-Type": stream.content_type} if stream is not None else None,
                        timeout=timeouts or self.timeouts, verify=self.session.verify, cert=self.session.cert,
                        allow_redirects=method == "GET", stream=True)
                    reply = Reply(response.status_code, self._body(response, operation))
            finally:
                if stream is not None:
                    stream.close()
            refused = reply.status == 401 or (reply.status == 200 and _login_ko(reply.body))
            if refused and self.auth == "nonce" and self._nonce is not None:
                self._nonce = None  # renewed at the next call
                if attempt == 1 and not fresh:
                    continue
            if refused and reply.status == 200:
                words = _decode(reply.body).strip().replace("\n", ": ")
                raise TransientAlert(f"connector {self.connector!r}: {operation}: S2LOW refused the login "
                                     f"({words[:200]}); check login, password and the client certificate",
                                     connector=self.connector, rule="s2low-login")
            problem = _http_status(self.connector, operation, reply)
            if problem is not None:
                raise problem
            return reply.body
        raise AssertionError("unreachable")

    def _body(self, response: requests.Response, operation: str) -> bytes:
        """The answer's body, read by chunks up to ``max_response_bytes`` (response-too-large past it)."""
        return read_capped(response, connector=self.connector, limit=self.max_response_bytes, operation=operation)

    def _nonce_params(self, operation: str) -> dict[str, str]:
        if self.auth != "nonce" or self.login is None or self.password is None:
            return {}
        with self._lock:
            if self._nonce is None or time.monotonic() - self._nonce[1] > NONCE_LIFE:
                self._nonce = (self._new_nonce(operation), time.monotonic())
            nonce = self._nonce[0]
        digest = hashlib.sha256(f"{self.password.reveal()}:{nonce}".encode()).hexdigest()
        return {"nounce": nonce, "login": self.login, "hash": digest}

    def _new_nonce(self, operation: str) -> str:
        assert self.login is not None and self.password is not None
        with http_errors(self.connector, f"{operation} (get-nounce)"):
            response = self.session.get(f"{self.url}/api/get-nounce.php", auth=(self.login, self.password.reveal()),
                                        timeout=self.timeouts, verify=self.session.verify, cert=self.session.cert,
                                        stream=True)
            reply = Reply(response.status_code, self._body(response, "get-nounce"))
        problem = _http_status(self.connector, "get-nounce", reply)
        if problem is not None:
            raise problem
        try:
            nonce = json.loads(reply.body)["nounce"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise TransientError(f"connector {self.connector!r}: get-nounce: S2LOW answered {_what_came(reply.body)} "
                                 'instead of {"nounce": ...}; retried later', connector=self.connector,
                                 rule="s2low-answer") from None
        return str(nonce)


def _login_ko(body: bytes) -> bool:
    head = body.lstrip()[:400]
    return head[:2].upper() == b"KO" and refused_login(_decode(head))
