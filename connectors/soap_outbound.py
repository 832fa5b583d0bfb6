"""Hent's legality SOAP contract (``schemas/legality/``), outbound, with zeep: submit, then follow.

``send`` submits the ACTES archive (SubmitArchive) and ends SENT with the platform's
transaction id; the acknowledgment poller then asks :meth:`SoapOutbound.statuses`.  Nothing
is sent twice: when the platform answers DUPLICATE, or when the outcome is unknown (a
timeout or a connection lost after the request left, a 5xx), the submission is looked up by
its client key (FindSubmission) before anything else; the runtime's retry sends the very
same bytes, from the spool.  A delivery tried before (``artifact.meta["attempted"]``: the
runtime counts each try in the ledger before it starts, so this survives a crash of the
process between the send and the ledger's SENT) is looked up first, and followed if found.
Once the act is acknowledged, :meth:`SoapOutbound.receipts` brings back the stamped act, its
stamped annexes and the bordereau (GetReceipts).

The WSDL is read from a local file once per connector and never fetched at run time; TLS is
verified unless ``verify_tls: false`` (a warning in the log each time the connector is built, at
every start, and in ``check``).
"""

from __future__ import annotations

__all__ = ["Connector", "SoapOutbound", "SoapOutboundConfig", "STATES", "BATCH"]

from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bus.config import Duration, EndpointConfig, ExistingFile
from bus.config_types import http_url
from bus.connector import ARCHIVE, Artifact, RemoteMessage, RemoteStatus, SendResult
from bus.errors import DocumentError, HentError, TransientError
from bus.secrets import Secret, redact_url
from connectors._archive_options import ArchiveOptions
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
    unique_name,
    zeep_errors,
)

DEFAULT_WSDL = Path(__file__).resolve().parents[1] / "schemas" / "legality" / "legality.wsdl"
#: transaction ids per GetStatus call
BATCH = 50
#: the platform's Status → RemoteStatus.state (anything else: UNKNOWN)
STATES = {
    "POSTED": "IN_TRANSIT",
    "TRANSMITTED": "IN_TRANSIT",
    "ACKNOWLEDGED": "ACKNOWLEDGED",
    "REJECTED": "REJECTED",
    "CANCELLED": "CANCELLED",
    "UNKNOWN": "UNKNOWN",
}
_PING_KEY = "__hent_ping__"


class SoapOutboundConfig(EndpointConfig, ArchiveOptions):
    """``type: soap`` used in a route's ``to``: a tiers de télétransmission speaking Hent's contract."""

    type: Literal["soap"] = Field("soap", description="The protocol: Hent's legality SOAP contract.")
    wsdl: ExistingFile = Field(DEFAULT_WSDL, description="Local WSDL file (never fetched over the network).")
    endpoint: str | None = Field(None, description="Service URL (http:// or https://); default: the WSDL's address.")
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to open the connection.")
    read_timeout: Duration = Field(60.0, gt=0, description="Seconds to wait for each part of an answer.")
    verify_tls: bool = Field(True, description="Verify the server's certificate (false only for tests: a warning at "
                             "every start and in check).")
    ca_file: ExistingFile | None = Field(None, description="CA bundle (PEM) to verify the server with.")
    client_cert: ExistingFile | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    client_key: ExistingFile | None = Field(None, description="Private key (PEM) of client_cert, if not in it.")
    username: str | None = Field(None, min_length=1, description="WS-Security UsernameToken user name.")
    password: Secret | None = Field(
        None, description="WS-Security UsernameToken password.", json_schema_extra={"secret": True}
    )
    max_response_bytes: int = max_response_bytes_field()
    credentials: list[SoapCredentials] = credentials_field()  # type: ignore[valid-type]  # built from the fields above

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        return http_url(value, rule="soap-endpoint", option="endpoint", credentials="username and password")

    @model_validator(mode="after")
    def _pairs(self) -> SoapOutboundConfig:
        if self.client_key is not None and self.client_cert is None:
            raise PydanticCustomError("soap-tls", "client_key needs client_cert (mutual TLS)", {})
        if (self.username is None) != (self.password is None):
            raise PydanticCustomError(
                "soap-credentials", "username and password go together (WS-Security UsernameToken)", {}
            )
        return self


def _state(status: Any) -> str:
    return STATES.get(str(status or "").strip().upper(), "UNKNOWN")


SoapCredentials = credentials_model("SoapCredentials", SoapOutboundConfig,
                                    ("client_cert", "client_key", "username", "password"))
SoapOutboundConfig.model_rebuild()


class SoapOutbound(SoapEndpoint):
    Config = SoapOutboundConfig
    consumes = (ARCHIVE,)
    config: SoapOutboundConfig

    def _build(self) -> SoapClient:
        c = self.config
        return open_client(self.name, wsdl=c.wsdl, endpoint=c.endpoint, timeouts=(c.connect_timeout, c.read_timeout),
                           verify_tls=c.verify_tls, ca_file=c.ca_file, client_cert=c.client_cert,
                           client_key=c.client_key, username=c.username, password=c.password,
                           max_response_bytes=c.max_response_bytes)

    def _call(self, operation: str, **arguments: Any) -> Any:
        service = self._client().service
        with zeep_errors(self.name, operation):
            return getattr(service, operation)(**arguments)

    # ------------------------------------------------------------ send

    def send(self, artifact: Artifact) -> SendResult:
        client_key = artifact.client_key or artifact.meta.get("envelope_name")
        id_acte = artifact.meta.get("id_acte")
        if not client_key or not id_acte:
            missing = "client key (envelope name)" if not client_key else "expected IDActe"
            raise DocumentError(
                f"connector {self.name!r}: {artifact.name} has no {missing}, which the platform needs to find "
                "the submission again: replay its document so that it is prepared again",
                connector=self.name, path=artifact.name, rule="soap-client-key",
            )
        return self._submit(artifact, client_key, "SubmitArchive", ArchiveName=artifact.name, ClientKey=client_key,
                            ExpectedIDActe=id_acte, Archive=self._read(artifact))

    def _read(self, artifact: Artifact) -> bytes:
        try:
            size = artifact.path.stat().st_size
            if size > self.config.max_archive_size:
                raise DocumentError(
                    f"connector {self.name!r}: {artifact.name} is {size} bytes, more than max_archive_size "
                    f"({self.config.max_archive_size}): split the annexes or raise the limit the platform allows",
                    connector=self.name, path=artifact.name, field="size", rule="archive-max-size",
                )
            return artifact.path.read_bytes()
        except OSError as exc:
            raise TransientError(
                f"connector {self.name!r}: cannot read {artifact.name} from the spool ({exc.strerror or exc}); "
                "retried later", connector=self.name, path=str(artifact.path), rule="spool-read",
            ) from exc

    def _after_duplicate(self, artifact: Artifact, client_key: str, duplicate: DuplicateSubmission) -> SendResult:
        found = self._lookup_after(client_key, duplicate)
        if found is not None:
            return SendResult("SENT", remote_id=found, detail="already received")
        if duplicate.transaction_id:
            return SendResult(
                "SENT", remote_id=duplicate.transaction_id,
                detail="already received under another submission: followed instead of sending it again",
            )
        raise DocumentError(
            f"{duplicate.message}, but the platform names no transaction and none has the client key "
            f"{client_key!r}: find the act on the platform; it is not sent again",
            connector=self.name, path=artifact.name, rule="soap-duplicate-unknown",
        ) from duplicate

    # ------------------------------------------------------------ AnsweringEndpoint

    def lookup(self, client_key: str) -> str | None:
        """The transaction id of the submission with ``client_key`` (FindSubmission), or None."""
        answer = self._call("FindSubmission", ClientKey=client_key)
        return text(getattr(answer, "TransactionId", None)) or None

    def statuses(self, remote_ids: list[str]) -> list[RemoteStatus]:
        """One RemoteStatus per id asked (UNKNOWN when the answer omits it), GetStatus by batches of 50."""
        found: dict[str, RemoteStatus] = {}
        for start in range(0, len(remote_ids), BATCH):
            answer = self._call("GetStatus", TransactionId=remote_ids[start:start + BATCH])
            for item in items(answer, "Transaction"):
                remote_id = text(getattr(item, "TransactionId", None))
                if remote_id is None:
                    continue
                status = getattr(item, "Status", None)
                found[remote_id] = RemoteStatus(
                    remote_id=remote_id,
                    state=_state(status),
                    message=getattr(item, "Message", None),
                    message_name=text(getattr(item, "MessageName", None)),
                    detail=text(getattr(item, "Detail", None)) or str(status or ""),
                )
        return [
            found.get(remote_id) or RemoteStatus(remote_id, "UNKNOWN", detail="absent from the platform's answer")
            for remote_id in remote_ids
        ]

    def messages(self, remote_id: str, known: set[str]) -> list[RemoteMessage]:
        """The follow-up messages of ``remote_id`` not in ``known`` (ListMessages, then GetMessage each)."""
        listed = self._call("ListMessages", TransactionId=remote_id)
        result = []
        for summary in items(listed, "Message"):
            message_id = text(getattr(summary, "MessageId", None))
            if message_id is None or message_id in known:
                continue
            message = self._call("GetMessage", MessageId=message_id)
            attachments: dict[str, bytes] = {}
            for attachment in items(getattr(message, "Attachment", None), "Attachment"):
                name = unique_name(text(getattr(attachment, "Name", None)) or "attachment", attachments)
                attachments[name] = bytes(getattr(attachment, "Content", None) or b"")
            result.append(RemoteMessage(
                remote_id=remote_id,
                message_id=message_id,
                name=text(getattr(message, "Name", None)) or text(getattr(summary, "Name", None)) or message_id,
                data=bytes(getattr(message, "Content", None) or b""),
                attachments=attachments,
            ))
        return result

    def cancel(self, remote_id: str, id_acte: str) -> RemoteStatus:
        """Ask for the cancellation (6-1) of an acknowledged act; the 6-2 follows as a message."""
        answer = self._call("CancelAct", TransactionId=remote_id, IDActe=id_acte)
        status = getattr(answer, "Status", None)
        return RemoteStatus(text(getattr(answer, "TransactionId", None)) or remote_id, _state(status),
                            detail=str(status or ""))

    def receipts(self, remote_id: str) -> dict[str, bytes]:
        """The stamped act, its stamped annexes and the bordereau of an acknowledged act (GetReceipts),
        by the names the platform gives them, made plain (``<transaction>-<kind>.pdf`` when it gives
        none); {} while the platform has none."""
        answer = self._call("GetReceipts", TransactionId=remote_id)
        files: dict[str, bytes] = {}
        for receipt in items(answer, "Receipt"):
            data = bytes(getattr(receipt, "Content", None) or b"")
            if not data:
                continue
            kind = text(getattr(receipt, "Kind", None)) or "receipt"
            name = plain_file_name(text(getattr(receipt, "Name", None)),
                                   plain_file_name(f"{remote_id}-{kind}.pdf", f"{kind}.pdf"))
            files[unique_name(name, files)] = data
        return files

    def classification(self, siren: str, current: str | None) -> tuple[str, bytes]:
        """Request the classification (7-1) of ``siren``: (file name, the 7-2 or the 7-3)."""
        current_date = None
        if current:
            try:
                current_date = date.fromisoformat(current)
            except ValueError as exc:
                raise DocumentError(
                    f"connector {self.name!r}: classification date {current!r} is not a date like 2024-03-01",
                    connector=self.name, field="current", rule="classification-date",
                ) from exc
        answer = self._call("RequestClassification", SIREN=siren, CurrentDate=current_date)
        name = text(getattr(answer, "Name", None)) or f"{siren}-{getattr(answer, 'Code', 'classification')}.xml"
        return name, bytes(getattr(answer, "Content", None) or b"")

    # ------------------------------------------------------------ readiness

    def reachable(self) -> tuple[bool, str]:
        """A FindSubmission with the connect timeout as read timeout too: (ready, where or why not)."""
        try:
            soap = self._client()
            with soap.transport.timeouts(self.config.connect_timeout, self.config.connect_timeout):
                self.lookup(_PING_KEY)
        except HentError as exc:
            return False, exc.message
        return True, redact_url(soap.address)


Connector = SoapOutbound
