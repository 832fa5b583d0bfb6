"""What a SOAP connector needs from zeep: an offline WSDL, a TLS session, errors mapped at the boundary.

The WSDL and the schemas it imports are read from local files, once: :class:`OfflineTransport`
refuses any ``http(s)`` load and zeep's ``forbid_external`` refuses remote imports before
that, so a WSDL that names a remote schema is a :class:`~bus.errors.ConfigError`, never a
fetch at run time.  :func:`zeep_errors` turns what zeep and requests raise into the bus's
three kinds of error; the ``rule`` of each names what happened (``soap-connect`` means the
request never left, so a submission cannot have been recorded).
"""

from __future__ import annotations

__all__ = [
    "SoapEndpoint",
    "DuplicateSubmission", "OfflineTransport", "RemoteFetchRefused", "SoapClient", "TransientAlert", "build_session",
    "fault_detail", "items", "load_client", "open_client", "plain_file_name", "text", "unique_name", "zeep_errors",
]

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import requests
import zeep
from lxml import etree
from zeep.exceptions import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden, Fault, TransportError
from zeep.exceptions import Error as ZeepError
from zeep.transports import Transport

from bus.connector import Artifact, OutboundConnector, SendResult
from bus.errors import ConfigError, DocumentError, HentError, TransientAlert, TransientError
from bus.insecure import warn_unverified_tls
from bus.secrets import Secret, redact, redact_url
from connectors._folder_common import plain_file_name
from connectors._http_limits import DEFAULT_MAX_RESPONSE_BYTES, read_capped
from transformers import safe_xml
from transformers.safe_xml import XmlRefused

log = logging.getLogger(__name__)

#: LegalityFault codes that mean "this document (or this request) is wrong"
DOCUMENT_FAULTS = frozenset({"INVALID_ARCHIVE", "UNKNOWN_TRANSACTION", "NOT_CANCELLABLE"})
#: HTTP statuses that blame the request itself rather than the endpoint
DOCUMENT_STATUSES = frozenset({400, 413, 422})
_MAX_FAULT_DETAIL = 1 << 20  #: bytes of a fault's detail read back


class RemoteFetchRefused(Exception):
    """The WSDL or a schema it imports asked for a document over the network."""

    def __init__(self, url: str) -> None:
        super().__init__(f"refused to fetch {redact_url(url)}: only local files are read")
        self.url = url


class DuplicateSubmission(DocumentError):
    """The platform already holds this act; ``transaction_id`` is the original submission's."""

    def __init__(self, message: str, *, transaction_id: str | None, **where: Any) -> None:
        super().__init__(message, **where)
        self.transaction_id = transaction_id


class OfflineTransport(Transport):  # type: ignore[misc]
    """A zeep transport that reads local files only, never logs a message, knows two timeouts and reads
    an answer up to ``max_response_bytes`` (:func:`~connectors._http_limits.read_capped`).

    ``loads`` records every document zeep asked for (tests assert none was remote).
    """

    def __init__(self, session: requests.Session, connect_timeout: float, read_timeout: float, *,
                 connector: str = "", max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        super().__init__(session=session, timeout=read_timeout, operation_timeout=(connect_timeout, read_timeout))
        self.loads: list[str] = []
        self.connector, self.max_response_bytes = connector, max_response_bytes
        self._local = threading.local()

    def load(self, url: str) -> bytes:
        self.loads.append(str(url))
        if urlparse(str(url)).scheme.lower() in ("http", "https", "ftp"):
            raise RemoteFetchRefused(str(url))
        return bytes(super().load(url))

    def _load_remote_data(self, url: str) -> bytes:  # file:// goes through here too
        if urlparse(url).scheme.lower() != "file":
            raise RemoteFetchRefused(url)
        return bytes(super()._load_remote_data(url))

    @contextmanager
    def timeouts(self, connect: float, read: float) -> Iterator[None]:
        """Other timeouts for the calls this thread makes inside the block."""
        previous = getattr(self._local, "timeout", None)
        self._local.timeout = (connect, read)
        try:
            yield
        finally:
            self._local.timeout = previous

    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        # zeep's own post logs the whole envelope at DEBUG: the archive and the UsernameToken
        timeout = getattr(self._local, "timeout", None) or self.operation_timeout
        # verify and cert given per request: requests would let REQUESTS_CA_BUNDLE or
        # CURL_CA_BUNDLE from the environment override the session's (a configured CA, or off)
        response = self.session.post(address, data=message, headers=headers, timeout=timeout,
                                     verify=self.session.verify, cert=self.session.cert, stream=True)
        # read by chunks, up to max_response_bytes: zeep reads response.content, which this fills
        operation = str(headers.get("SOAPAction", "")).strip('"').rpartition("#")[2] or None
        read_capped(response, connector=self.connector, limit=self.max_response_bytes, operation=operation)
        media_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if response.status_code != 200 and not media_type.endswith("xml"):  # an HTML error page, or nothing
            status = response.status_code
            response.close()
            raise TransportError(f"HTTP {status} with no SOAP answer", status_code=status)
        return response


def build_session(
    *, verify_tls: bool, ca_file: Path | None, client_cert: Path | None, client_key: Path | None
) -> requests.Session:
    """A requests session: TLS verified (with ``ca_file`` if given), client certificate if given."""
    session = requests.Session()
    session.verify = str(ca_file) if ca_file is not None and verify_tls else verify_tls
    if client_cert is not None:
        session.cert = (str(client_cert), str(client_key)) if client_key is not None else str(client_cert)
    return session


@dataclass
class SoapClient:
    """A zeep client bound to its endpoint, with the transport whose session it uses."""

    client: zeep.Client
    service: Any  #: zeep's ServiceProxy: one method per operation
    transport: OfflineTransport
    address: str


def load_client(
    wsdl: Path, *, connector: str, transport: OfflineTransport, endpoint: str | None, wsse: Any = None
) -> SoapClient:
    """Read ``wsdl`` (and what it imports) from local files and bind its first port to ``endpoint``.

    Raises ConfigError when the WSDL is missing, unreadable, or imports a remote document.
    """
    settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
                             xml_huge_tree=False)

    def refuse(message: str, rule: str) -> ConfigError:
        return ConfigError(f"connector {connector!r}: {message}", connector=connector, path=str(wsdl), rule=rule)

    if not wsdl.is_file():
        raise refuse(f"WSDL file not found: {wsdl}", "soap-wsdl")
    try:
        client = zeep.Client(str(wsdl), transport=transport, wsse=wsse, settings=settings)
        ports = [port for service in client.wsdl.services.values() for port in service.ports.values()]
    except (ExternalReferenceForbidden, RemoteFetchRefused) as exc:
        url = getattr(exc, "url", "")
        raise refuse(
            f"{wsdl} imports the remote document {redact_url(str(url))}; documents are never fetched over the "
            "network: copy it beside the WSDL and import it by relative path", "soap-wsdl-remote") from exc
    except (ZeepError, etree.XMLSyntaxError, OSError, ValueError, KeyError) as exc:
        raise refuse(f"cannot load the WSDL {wsdl}: {redact(str(exc)) or type(exc).__name__}", "soap-wsdl") from exc
    if not ports:
        raise refuse(f"{wsdl} declares no service port", "soap-wsdl")
    port = ports[0]
    address = endpoint or port.binding_options.get("address")
    if not address:
        raise refuse(f"{wsdl} gives no address: set endpoint", "soap-endpoint")
    service = client.create_service(str(port.binding.name), address)
    return SoapClient(client=client, service=service, transport=transport, address=address)


def open_client(
    connector: str, *, wsdl: Path, endpoint: str | None, timeouts: tuple[float, float], verify_tls: bool,
    ca_file: Path | None, client_cert: Path | None, client_key: Path | None, username: str | None,
    password: Secret | None, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> SoapClient:
    """Session (TLS, client certificate), offline transport (answers read up to ``max_response_bytes``),
    UsernameToken and the WSDL: a ready client."""
    session = build_session(verify_tls=verify_tls, ca_file=ca_file, client_cert=client_cert, client_key=client_key)
    transport = OfflineTransport(session, *timeouts, connector=connector, max_response_bytes=max_response_bytes)
    wsse = None
    if username is not None and password is not None:
        from zeep.wsse.username import UsernameToken

        wsse = UsernameToken(username, password.reveal())
    soap = load_client(wsdl, connector=connector, transport=transport, endpoint=endpoint, wsse=wsse)
    if not verify_tls and soap.address.startswith("https:"):
        log.warning("connector %r: TLS verification is off for %s: anyone on the path can read and change what "
                    "is sent; set verify_tls: true", connector, redact_url(soap.address))
    return soap


class SoapEndpoint(OutboundConnector):
    """The life cycle every endpoint speaking one of Hent's SOAP contracts shares: the client (its WSDL
    read from local files) built once, on first use, under a lock; ``check`` builds it (a broken WSDL
    is a ConfigError); ``close`` closes the session's connections and keeps the parsed WSDL."""

    def __init__(self, name: str, config: Any) -> None:
        super().__init__(name, config)
        warn_unverified_tls(name, config)
        self._lock = threading.Lock()
        self._soap: SoapClient | None = None

    def _build(self) -> SoapClient:
        """The zeep client of this endpoint (:func:`open_client` with its configuration)."""
        raise NotImplementedError

    def connect(self) -> None:
        """Load the WSDL and build the client, the first time only."""
        self._client()

    def check(self) -> None:
        """Load the WSDL (local files only): a broken or remote-importing one is a ConfigError."""
        self._client()

    def close(self) -> None:
        """Close the session's connections; the parsed WSDL is kept (a later call reconnects)."""
        soap = self._soap
        if soap is not None:
            soap.transport.session.close()

    def _client(self) -> SoapClient:
        with self._lock:
            if self._soap is None:
                self._soap = self._build()
            return self._soap

    def _call(self, operation: str, **arguments: Any) -> Any:
        raise NotImplementedError

    def lookup(self, client_key: str) -> str | None:
        """The transaction id of the submission with ``client_key`` (FindSubmission), or None."""
        raise NotImplementedError

    def _after_duplicate(self, artifact: Artifact, client_key: str, duplicate: DuplicateSubmission) -> SendResult:
        """The platform refused the submission as a duplicate: the existing one, followed."""
        raise NotImplementedError

    def _submit(self, artifact: Artifact, client_key: str, operation: str, **arguments: Any) -> SendResult:
        """``operation(**arguments)`` never sent twice: an artifact tried before (``meta["attempted"]``:
        a crash may have cut that try short after it reached the platform) is looked up first; a
        DUPLICATE follows the existing submission; an unknown outcome (a timeout after the request
        left, a 5xx) is looked up by ``client_key`` before the runtime's retry."""
        if artifact.meta.get("attempted"):
            found = self.lookup(client_key)
            if found is not None:
                return SendResult("SENT", remote_id=found, detail="found at the platform (an earlier try): not resent")
        try:
            answer = self._call(operation, **arguments)
        except DuplicateSubmission as duplicate:
            return self._after_duplicate(artifact, client_key, duplicate)
        except TransientError as failure:
            if failure.rule == "soap-connect" or isinstance(failure, TransientAlert):
                raise  # the request never left, or was refused before being read: nothing to look up
            found = self._lookup_after(client_key, failure)
            if found is None:
                raise
            return SendResult("SENT", remote_id=found, detail="recorded by the platform though its answer was lost")
        return SendResult("SENT", remote_id=str(answer.TransactionId))

    def _lookup_after(self, client_key: str, cause: HentError) -> str | None:
        try:
            return self.lookup(client_key)
        except HentError as exc:
            raise TransientError(
                f"{cause.message}; looking the submission up by its client key failed too ({exc.message}): "
                "it will be looked up again before anything is sent",
                connector=self.name, rule="soap-lookup",
            ) from exc


def items(answer: Any, name: str) -> list[Any]:
    """The repeated ``name`` children of an answer, whether zeep unwrapped them or not."""
    if answer is None:
        return []
    if isinstance(answer, list):
        return answer
    value = getattr(answer, name, answer)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def text(value: Any) -> str | None:
    """A simple value of an answer as text (None stays None)."""
    return None if value is None else str(value)


def unique_name(name: str, taken: Iterable[str]) -> str:
    """``name``, or ``stem-2.ext``, ``stem-3.ext``... when it is already taken."""
    used, candidate, n = set(taken), name, 1
    while candidate in used:
        n += 1
        stem, dot, extension = name.rpartition(".")
        candidate = f"{stem}-{n}.{extension}" if dot else f"{name}-{n}"
    return candidate


def fault_detail(fault: Fault, element: str = "LegalityFault") -> tuple[str | None, str | None, str | None]:
    """(Code, Message, TransactionId) of the ``element`` (a LegalityFault unless told) in a fault's
    detail, leniently."""
    detail = fault.detail
    if isinstance(detail, str | bytes):
        try:
            detail = safe_xml.parse(detail.encode() if isinstance(detail, str) else detail, name="fault detail",
                                    max_bytes=_MAX_FAULT_DETAIL)
        except XmlRefused:
            return None, None, None
    if not isinstance(detail, etree._Element):
        return None, None, None
    node = detail if etree.QName(detail).localname == element else detail.find(f".//{{*}}{element}")
    if node is None:
        return None, None, None

    def child_text(name: str) -> str | None:
        child = node.find(f"{{*}}{name}")
        value = (child.text or "").strip() if child is not None else ""
        return value or None

    return child_text("Code"), child_text("Message"), child_text("TransactionId")


def _fault(connector: str, operation: str, fault: Fault, element: str = "LegalityFault") -> Exception:
    code, message, transaction_id = fault_detail(fault, element)
    said = redact(message or fault.message or "no message")
    head = f"connector {connector!r}: {operation} refused by the platform ({code or fault.code or 'fault'}: {said})"
    where: dict[str, Any] = {"connector": connector, "rule": f"soap-fault-{code or 'unknown'}"}
    if code == "DUPLICATE":
        return DuplicateSubmission(f"{head}: the act was already received", transaction_id=transaction_id, **where)
    if code in DOCUMENT_FAULTS:
        return DocumentError(f"{head}: fix the document, then replay it", **where)
    if code == "AUTH":
        return TransientAlert(f"{head}: check the username, password or client certificate of the connector",
                              **where)
    faultcode = (fault.code or "").lower()
    if code == "INTERNAL" or "server" in faultcode or code is None and "client" not in faultcode:
        return TransientError(f"{head}: the platform failed; retried later", **where)
    return DocumentError(f"{head}: the platform refused this request; fix it, then replay", **where)


def _http(connector: str, operation: str, exc: TransportError) -> Exception:
    status = exc.status_code
    head = f"connector {connector!r}: {operation} answered with HTTP {status}"
    where: dict[str, Any] = {"connector": connector, "rule": f"soap-http-{status}"}
    if status in (401, 403):
        return TransientAlert(f"{head}: the platform refused the credentials; check the username, "
                              "password or client certificate of the connector", **where)
    if status in DOCUMENT_STATUSES:
        return DocumentError(f"{head}: the platform refused the request; fix the document, then replay", **where)
    if status == 200:
        return TransientError(f"connector {connector!r}: {operation}: the platform's answer is not valid XML; "
                              "retried later", connector=connector, rule="soap-answer")
    return TransientError(f"{head}: retried later; check the endpoint URL if it lasts", **where)


@contextmanager
def zeep_errors(connector: str, operation: str, fault_element: str = "LegalityFault") -> Iterator[None]:
    """Translate zeep and requests exceptions raised by ``operation`` into Hent's errors; a SOAP
    fault's detail is read from its ``fault_element`` (Code, Message, TransactionId)."""
    try:
        yield
    except Fault as exc:
        raise _fault(connector, operation, exc, fault_element) from exc
    except TransportError as exc:
        raise _http(connector, operation, exc) from exc
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden) as exc:
        raise TransientError(
            f"connector {connector!r}: {operation}: the platform's answer holds a DTD, an entity or an external "
            "reference, which are refused; retried later", connector=connector, rule="soap-answer") from exc
    except ZeepError as exc:  # XMLSyntaxError, ValidationError, UnexpectedElementError... on the answer
        raise TransientError(
            f"connector {connector!r}: {operation}: unexpected answer from the platform "
            f"({type(exc).__name__}: {redact(str(exc))[:300]}); retried later", connector=connector,
            rule="soap-answer") from exc
    except requests.exceptions.SSLError as exc:
        raise TransientAlert(
            f"connector {connector!r}: {operation}: TLS handshake failed ({redact(str(exc))[:300]}); check the "
            "endpoint's certificate, ca_file and client_cert", connector=connector, rule="soap-tls") from exc
    except (requests.exceptions.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
        raise TransientError(
            f"connector {connector!r}: {operation}: cannot connect to the platform ({type(exc).__name__}); "
            "retried later", connector=connector, rule="soap-connect") from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(
            f"connector {connector!r}: {operation}: no answer within read_timeout; retried later",
            connector=connector, rule="soap-timeout") from exc
    except requests.exceptions.ConnectionError as exc:
        rule = "soap-connect" if _before_sending(exc) else "soap-connection-lost"
        raise TransientError(
            f"connector {connector!r}: {operation}: connection to the platform "
            f"{'refused or unreachable' if rule == 'soap-connect' else 'lost'}; retried later",
            connector=connector, rule=rule) from exc
    except (requests.exceptions.RequestException, etree.XMLSyntaxError) as exc:  # chunked encoding...
        raise TransientError(
            f"connector {connector!r}: {operation}: transfer failed ({type(exc).__name__}); retried later",
            connector=connector, rule="soap-transfer") from exc


def _before_sending(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection could not even be opened (the request never left)."""
    from urllib3.exceptions import NewConnectionError

    reason: Any = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
    return isinstance(reason, NewConnectionError)
