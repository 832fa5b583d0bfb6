"""Hent's procurement contract (``schemas/procurement/``), outbound, with zeep: publish a DECP file, then follow.

``send`` submits the DECP XML (SubmitDecp) and ends SENT with the platform's transaction id;
the answer poller then asks :meth:`ProcurementOutbound.statuses`, which gives the platform's
Receipt (ACKNOWLEDGED) or Rejection (REJECTED) verbatim, for ``transformers.procurement_receipt``
to read.  Nothing is published twice: when the platform answers DUPLICATE, or when the outcome
is unknown (a timeout or a connection lost after the request left, a 5xx), the submission is
looked up by its client key (FindSubmission) before anything else; a DUPLICATE that names
another transaction (the same contract and modification sent under another client key) is
followed instead.  The runtime's retry sends the very same bytes, from the spool.

The WSDL is the project's own, read from ``schemas/procurement/procurement.wsdl`` once per
connector and never fetched; TLS is verified unless ``verify_tls: false`` (a warning in the log at every
start, and in ``check``).
The platform sends no follow-up message, cancels nothing and has no classification.
"""

from __future__ import annotations

__all__ = ["BATCH", "Connector", "ProcurementOutbound", "ProcurementOutboundConfig", "STATES", "WSDL"]

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bus.config import Duration, EndpointConfig, ExistingFile
from bus.config_types import http_url
from bus.connector import DECP_XML, Artifact, RemoteMessage, RemoteStatus, SendResult
from bus.errors import DocumentError, HentError, TransientError
from bus.secrets import Secret, redact_url
from connectors._credentials import credentials_field, credentials_model
from connectors._http_limits import max_response_bytes_field
from connectors._soap_common import (
    DuplicateSubmission,
    SoapClient,
    SoapEndpoint,
    items,
    open_client,
    plain_file_name,
    text,
    zeep_errors,
)

WSDL = Path(__file__).resolve().parents[1] / "schemas" / "procurement" / "procurement.wsdl"
#: transaction ids per GetStatus call, unless ``batch`` says otherwise
BATCH = 50
#: the platform's Status → RemoteStatus.state (anything else: UNKNOWN)
STATES = {"RECEIVED": "IN_TRANSIT", "PUBLISHED": "ACKNOWLEDGED", "REJECTED": "REJECTED", "UNKNOWN": "UNKNOWN"}
_FAULT = "ProcurementFault"


class ProcurementOutboundConfig(EndpointConfig):
    """``type: procurement`` used in a route's ``to``: a procurement platform speaking Hent's contract."""

    type: Literal["procurement"] = Field(
        "procurement", description="The protocol: Hent's procurement SOAP contract (schemas/procurement/).")
    url: str = Field(..., description="Service URL (http:// or https://), e.g. https://marches.example/hent/soap.")
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to open the connection.")
    read_timeout: Duration = Field(60.0, gt=0, description="Seconds to wait for each part of an answer.")
    verify_tls: bool = Field(True, description="Verify the server's certificate (false only for tests: a warning at "
                             "every start and in check).")
    ca_file: ExistingFile | None = Field(None, description="CA bundle (PEM) to verify the server with.")
    client_cert: ExistingFile | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    client_key: ExistingFile | None = Field(None, description="Private key (PEM) of client_cert, if not in it.")
    username: str | None = Field(None, min_length=1, description="WS-Security UsernameToken user name.")
    password: Secret | None = Field(
        None, description="WS-Security UsernameToken password.", json_schema_extra={"secret": True})
    batch: int = Field(BATCH, ge=1, le=500, description="Transaction ids asked per GetStatus call.")
    max_size: int = Field(5 * 1024 * 1024, gt=0, description="Largest DECP file sent, in bytes.")
    max_response_bytes: int = max_response_bytes_field()
    credentials: list[ProcurementCredentials] = credentials_field()  # type: ignore[valid-type]

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, rule="procurement-url", option="url", credentials="username and password")

    @model_validator(mode="after")
    def _pairs(self) -> ProcurementOutboundConfig:
        if self.client_key is not None and self.client_cert is None:
            raise PydanticCustomError("soap-tls", "client_key needs client_cert (mutual TLS)", {})
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError(
                "soap-credentials", "username and password go together (WS-Security UsernameToken)", {})
        return self


ProcurementCredentials = credentials_model("ProcurementCredentials", ProcurementOutboundConfig,
                                           ("client_cert", "client_key", "username", "password"))
ProcurementOutboundConfig.model_rebuild()


class ProcurementOutbound(SoapEndpoint):
    Config = ProcurementOutboundConfig
    consumes = (DECP_XML,)
    config: ProcurementOutboundConfig

    def _build(self) -> SoapClient:
        c = self.config
        return open_client(self.name, wsdl=WSDL, endpoint=c.url, timeouts=(c.connect_timeout, c.read_timeout),
                           verify_tls=c.verify_tls, ca_file=c.ca_file, client_cert=c.client_cert,
                           client_key=c.client_key, username=c.username, password=c.password,
                           max_response_bytes=c.max_response_bytes)

    def _call(self, operation: str, **arguments: Any) -> Any:
        service = self._client().service
        with zeep_errors(self.name, operation, _FAULT):
            return getattr(service, operation)(**arguments)

    # ------------------------------------------------------------ send

    def send(self, artifact: Artifact) -> SendResult:
        """SubmitDecp; SENT with the transaction id (the existing one for a duplicate)."""
        if artifact.kind != DECP_XML:
            raise DocumentError(
                f"connector {self.name!r}: {artifact.name} is a {artifact.kind!r}, but a procurement platform takes "
                f"DECP XML ({DECP_XML!r}): route the contract through the decp transform",
                connector=self.name, path=artifact.name, rule="procurement-kind")
        client_key = artifact.client_key or artifact.name
        return self._submit(artifact, client_key, "SubmitDecp", FileName=plain_file_name(artifact.name, "decp.xml"),
                            Content=self._read(artifact), ClientKey=client_key)

    def _read(self, artifact: Artifact) -> bytes:
        try:
            size = artifact.path.stat().st_size
            if size > self.config.max_size:
                raise DocumentError(
                    f"connector {self.name!r}: {artifact.name} is {size} bytes, more than max_size "
                    f"({self.config.max_size}): one DECP file holds one contract; raise max_size if the platform "
                    "takes it", connector=self.name, path=artifact.name, field="size", rule="decp-max-size")
            return artifact.path.read_bytes()
        except OSError as exc:
            raise TransientError(
                f"connector {self.name!r}: cannot read {artifact.name} from the spool ({exc.strerror or exc}); "
                "retried later", connector=self.name, path=str(artifact.path), rule="spool-read") from exc

    def _after_duplicate(self, artifact: Artifact, client_key: str, duplicate: DuplicateSubmission) -> SendResult:
        found = self._lookup_after(client_key, duplicate)
        if found is not None:
            return SendResult("SENT", remote_id=found, detail="already received")
        if duplicate.transaction_id:
            return SendResult(
                "SENT", remote_id=duplicate.transaction_id,
                detail="this contract and modification were already published under another submission: "
                       "followed instead of publishing it again")
        raise DocumentError(
            f"connector {self.name!r}: the platform says {artifact.name} is already published but names no "
            f"transaction, and none has the client key {client_key!r}: find the publication on the platform; "
            "it is not sent again", connector=self.name, path=artifact.name, rule="procurement-duplicate-unknown",
        ) from duplicate

    # ------------------------------------------------------------ AnsweringEndpoint

    def lookup(self, client_key: str) -> str | None:
        """The transaction id of the latest submission with ``client_key`` (FindSubmission), or None."""
        answer = self._call("FindSubmission", ClientKey=client_key)
        return text(getattr(answer, "TransactionId", None)) or None

    def statuses(self, remote_ids: list[str]) -> list[RemoteStatus]:
        """One RemoteStatus per id asked (UNKNOWN when the answer omits it), GetStatus by ``batch``;
        the Receipt or Rejection as ``message``, named as over SFTP."""
        found: dict[str, RemoteStatus] = {}
        size = self.config.batch
        for start in range(0, len(remote_ids), size):
            answer = self._call("GetStatus", TransactionId=remote_ids[start:start + size])
            for item in items(answer, "Transaction"):
                remote_id = text(getattr(item, "TransactionId", None))
                if remote_id is None:
                    continue
                status = str(getattr(item, "Status", None) or "")
                document = getattr(item, "Document", None)
                found[remote_id] = RemoteStatus(
                    remote_id=remote_id,
                    state=STATES.get(status.strip().upper(), "UNKNOWN"),
                    message=bytes(document) if document else None,
                    message_name=text(getattr(item, "DocumentName", None)) if document else None,
                    detail=text(getattr(item, "Detail", None)) or status,
                )
        return [found.get(remote_id) or RemoteStatus(remote_id, "UNKNOWN", detail="absent from the platform's answer")
                for remote_id in remote_ids]

    def messages(self, remote_id: str, known: set[str]) -> list[RemoteMessage]:
        """None: a procurement platform sends nothing after its receipt."""
        return []

    def cancel(self, remote_id: str, id_acte: str) -> RemoteStatus:
        raise DocumentError(
            f"connector {self.name!r}: a procurement platform offers no cancellation; to withdraw a published "
            "contract, publish a modification or ask the platform", connector=self.name, rule="procurement-cancel")

    def classification(self, siren: str, current: str | None) -> tuple[str, bytes]:
        raise DocumentError(
            f"connector {self.name!r}: a procurement platform offers no classification; ask the legality endpoint",
            connector=self.name, rule="procurement-classification")

    # ------------------------------------------------------------ readiness

    def reachable(self) -> tuple[bool, str]:
        """A Ping with the connect timeout as read timeout too: (ready, where or why not)."""
        try:
            soap = self._client()
            with soap.transport.timeouts(self.config.connect_timeout, self.config.connect_timeout):
                self._call("Ping")
        except HentError as exc:
            return False, exc.message
        return True, redact_url(soap.address)


Connector = ProcurementOutbound
