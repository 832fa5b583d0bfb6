"""Pastell (REST API v2, flow ``actes-generique``), outbound: fill a document, send it to the TdT, follow it.

Pastell builds the ACTES archive itself (through its TdT connector), so this endpoint consumes
the canonical act (``hent-canonical-act/1``).  ``send`` looks the act up first (search by
``numero_de_lacte``, then ``date_de_lacte``): a document already handed to the TdT — in transit,
acknowledged, or refused by the ministry (the bus never sends an act twice: a refused one comes
back with a new number) — is followed, not sent again (SENT with its ``id_d``); a draft left by
an interrupted attempt (``creation``, ``modification``, ``send-tdt-erreur``) is resumed; else a
document is created.  It is then filled — the form (PATCH), the act and its annexes (uploaded to
explicit slots ``file/arrete/0``, ``file/autre_document_attache/<n>``, streamed from the spool,
so an upload made twice replaces itself), the typology (``externalData/type_piece``) — and
``send_action`` (``send-tdt``) is triggered.  When the answer to that last call is lost, the
document is read again before anything else.  A refusal of ``send-tdt`` (HTTP 400: Pastell could
not hand the act to its TdT, whose words are given) fails the delivery; the document stays a
draft (``send-tdt-erreur``) that a replay resumes.  One limit: an empty draft may stay in
Pastell when the answer to its creation is lost (it holds no act, is never sent, can be deleted).

Answers (:class:`bus.connector.AnsweringEndpoint`): ``acquiter-tdt`` (or an ``aractes`` file) →
ACKNOWLEDGED with the ARActe as message; ``erreur-verif-tdt``, ``tdt-error``, ``fatal-error``,
``send-tdt-erreur`` → REJECTED with Pastell's message (Pastell keeps the ministry's anomaly as
that message only, and a transaction its TdT lost can only be mended by a person in Pastell);
``annuler-tdt`` → CANCELLED; ``document-transmis-tdt`` and ``teletransmission-tdt`` → IN_TRANSIT
waiting "to-be-posted" (a person must confirm the teletransmission); anything else IN_TRANSIT
with the action in ``detail``.  Once acknowledged, :meth:`PastellOutbound.receipts` brings back
what Pastell's TdT fetched with the ARActe: the stamped act (``acte_tamponne``), the stamped
annexes (``annexes_tamponnees``) and the bordereau d'acquittement (``bordereau``).  The
préfecture's later messages are documents of their own (``actes-reponse-prefecture``), and the
collectivité's answers to them (``hent-canonical-response/1``) are written and sent on those
documents: see :mod:`connectors._pastell_answers` (``answers:`` in the YAML).  Pastell keeps no
ARAnnulation (6-2): a cancellation shows as the document's ``annuler-tdt`` only.  The classification
is the 7-2 file the entity's TdT connector keeps (``classification_connector``), when configured:
Pastell's API cannot request one (7-1).
"""

from __future__ import annotations

__all__ = ["Connector", "PastellFields", "PastellOutbound", "PastellOutboundConfig", "STATES"]

import json
import re
import threading
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bus.config import Duration, EndpointConfig, ExistingFile
from bus.config_types import http_url
from bus.connector import (
    CANONICAL,
    CANONICAL_RESPONSE,
    Artifact,
    OutboundConnector,
    RemoteMessage,
    RemoteStatus,
    SendResult,
)
from bus.errors import DocumentError, HentError, TransientError
from bus.insecure import warn_unverified_tls
from bus.secrets import Secret, redact_url
from connectors._credentials import credentials_field, credentials_model
from connectors._http_limits import max_response_bytes_field
from connectors._pastell_answers import PastellAnswerOptions, PastellAnswers
from connectors._pastell_common import (
    MAX_FILES,
    UNKNOWN_OUTCOME,
    MultipartFile,
    NotFound,
    PastellClient,
    TransientAlert,
    data_of,
    file_name_of,
    last_action,
)

#: Pastell's last action → RemoteStatus.state (others: IN_TRANSIT)
STATES = {
    "acquiter-tdt": "ACKNOWLEDGED", "annulation-tdt": "ACKNOWLEDGED", "verif-annulation-tdt": "ACKNOWLEDGED",
    "annuler-tdt": "CANCELLED",
    "erreur-verif-tdt": "REJECTED", "tdt-error": "REJECTED", "fatal-error": "REJECTED", "send-tdt-erreur": "REJECTED",
}
DRAFTS = ("creation", "modification", "send-tdt-erreur")
TO_BE_POSTED = ("document-transmis-tdt", "teletransmission-tdt")
NUMERO = re.compile(r"[0-9A-Z_]{2,15}")
MAX_TOTAL = 150 * 1024 * 1024  #: acte + annexes, Pastell's limit
_FORMAT = "hent-canonical-act/1"


class PastellFields(BaseModel):
    """Names of the actes-generique fields, for a Pastell whose flow names them otherwise."""

    model_config = ConfigDict(extra="forbid")

    acte_nature: str = Field("acte_nature", description="Nature of the act (1..6).")
    numero_de_lacte: str = Field("numero_de_lacte", description="Number of the act (indexed: used to find it).")
    objet: str = Field("objet", description="Subject.")
    date_de_lacte: str = Field("date_de_lacte", description="Date of the decision.")
    document_papier: str = Field("document_papier", description="Paper documents sent another way (checkbox).")
    classification: str = Field("classification", description="Matière code, e.g. 3.2.")
    envoi_tdt: str = Field("envoi_tdt", description="Send to the TdT (checkbox).")
    arrete: str = Field("arrete", description="The act (file).")
    autre_document_attache: str = Field("autre_document_attache", description="The annexes (files).")
    type_piece: str = Field("type_piece", description="The piece typology (external data, type_pj[]).")
    aractes: str = Field("aractes", description="The ministry's ARActe (file).")
    acte_unique_id: str = Field("acte_unique_id", description="The IDActe Pastell read from the ARActe.")
    bordereau: str = Field("bordereau", description="The TdT's bordereau d'acquittement (file).")
    acte_tamponne: str = Field("acte_tamponne", description="The act stamped by the TdT (file).")
    annexes_tamponnees: str = Field("annexes_tamponnees", description="The annexes stamped by the TdT (files).")
    tedetis_transaction_id: str = Field("tedetis_transaction_id", description="The act's TdT transaction.")


class PastellOutboundConfig(EndpointConfig):
    """``type: pastell`` used in a route's ``to``: a Pastell that sends acts to its TdT."""

    type: Literal["pastell"] = Field("pastell", description="The protocol: Pastell's REST API v2.")
    url: str = Field(..., description="Pastell's address, e.g. https://pastell.example.org (API under /api/v2).")
    entity: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int) else v)] = Field(
        ..., pattern=r"^[0-9]+$", description="id_e of the collectivité's entity in Pastell.")
    flow: str = Field("actes-generique", min_length=1, description="Document type (flux) of the acts.")
    auth: Literal["bearer", "basic"] = Field("bearer", description="Bearer token, or HTTP Basic login + password.")
    token: Secret | None = Field(None, description="API token (auth: bearer).", json_schema_extra={"secret": True})
    login: str | None = Field(None, min_length=1, description="Pastell user (auth: basic).")
    password: Secret | None = Field(None, description="Password of login (auth: basic).",
                                    json_schema_extra={"secret": True})
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to open the connection.")
    read_timeout: Duration = Field(60.0, gt=0, description="Seconds to wait for each part of an answer.")
    verify_tls: bool = Field(True, description="Verify Pastell's certificate (false only for tests: a warning at "
                             "every start and in check).")
    ca_file: ExistingFile | None = Field(None, description="CA bundle (PEM) to verify Pastell with.")
    client_cert: ExistingFile | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    client_key: ExistingFile | None = Field(None, description="Private key (PEM) of client_cert, if not in it.")
    send_action: str = Field("send-tdt", min_length=1, description="Action that hands a document to the TdT.")
    cancel_action: str = Field("annulation-tdt", min_length=1, description="Action that asks for a cancellation.")
    max_retry_after: Duration = Field(10.0, ge=0, description="Longest Retry-After (429) waited out at once; "
                                      "longer ones are retried later by the bus.")
    classification_connector: str | None = Field(
        None, min_length=1, description="id_ce of the entity's TdT connector, to read the classification it keeps.")
    fields: PastellFields = Field(default_factory=lambda: PastellFields(), description="Field names of the flow.")
    answers: PastellAnswerOptions = Field(default_factory=lambda: PastellAnswerOptions(), description=(
        "The préfecture's messages (actes-reponse-prefecture) and how the answers to them are sent."))
    max_response_bytes: int = max_response_bytes_field()
    credentials: list[PastellCredentials] = credentials_field()  # type: ignore[valid-type]  # built from the fields above

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = http_url(value, rule="pastell-url", option="url", credentials="token, or login and password")
        return re.sub(r"/api(/v2)?/?$", "", value.rstrip("/"))

    @model_validator(mode="after")
    def _credentials(self) -> PastellOutboundConfig:
        if self.auth == "bearer" and (self.token is None or self.login is not None or self.password is not None):
            raise PydanticCustomError("pastell-credentials",
                                      "auth: bearer takes a token (and no login or password)", {})
        if self.auth == "basic" and (self.login is None or self.password is None or self.token is not None):
            raise PydanticCustomError("pastell-credentials",
                                      "auth: basic takes login and password (and no token)", {})
        if self.client_key is not None and self.client_cert is None:
            raise PydanticCustomError("pastell-tls", "client_key needs client_cert (mutual TLS)", {})
        return self


PastellCredentials = credentials_model("PastellCredentials", PastellOutboundConfig,
                                       ("token", "login", "password", "client_cert", "client_key", "entity"))
PastellOutboundConfig.model_rebuild()


class PastellOutbound(OutboundConnector):
    Config = PastellOutboundConfig
    consumes = (CANONICAL, CANONICAL_RESPONSE)
    config: PastellOutboundConfig

    def __init__(self, name: str, config: PastellOutboundConfig) -> None:
        super().__init__(name, config)
        warn_unverified_tls(name, config)
        self._lock = threading.Lock()
        self._client: PastellClient | None = None
        self.answers = PastellAnswers(name, config.answers, config.entity, self._http,
                                      numero_field=config.fields.numero_de_lacte,
                                      transaction_field=config.fields.tedetis_transaction_id)

    # ------------------------------------------------------------ life cycle

    def connect(self) -> None:
        self._http()

    def check(self) -> None:
        """Build the client (no network): the TLS files were checked with the configuration."""
        self._http()

    def close(self) -> None:
        client = self._client
        if client is not None:
            client.session.close()

    def _http(self) -> PastellClient:
        with self._lock:
            if self._client is None:
                c = self.config
                self._client = PastellClient(
                    self.name, c.url, token=c.token if c.auth == "bearer" else None, login=c.login,
                    password=c.password, timeouts=(c.connect_timeout, c.read_timeout), verify_tls=c.verify_tls,
                    ca_file=c.ca_file, client_cert=c.client_cert, client_key=c.client_key, max_wait=c.max_retry_after,
                    max_response_bytes=c.max_response_bytes,
                )
            return self._client

    def _documents(self) -> str:
        return f"entite/{self.config.entity}/document"

    def _detail(self, id_d: str) -> dict[str, Any]:
        return self._http().document(self.config.entity, id_d)

    # ------------------------------------------------------------ send

    def send(self, artifact: Artifact) -> SendResult:
        if artifact.kind == CANONICAL_RESPONSE:
            return self.answers.send(artifact)
        act = self._act(artifact)
        found = self._find(act["numero_interne"], act["decision_date"])
        for id_d, detail in found:
            action = last_action(detail)[0]
            if action not in DRAFTS:  # handed to the TdT (answered or not): followed, never sent again
                return SendResult("SENT", remote_id=id_d, detail=f"already in Pastell ({action})")
        drafts = [id_d for id_d, detail in found if last_action(detail)[0] in DRAFTS]
        id_d = drafts[0] if drafts else self._create()
        self._fill(id_d, act, artifact)
        return self._trigger(id_d, artifact)

    def _act(self, artifact: Artifact) -> dict[str, Any]:
        """The canonical act, checked against what Pastell's form accepts (before any call)."""
        try:
            act = json.loads(artifact.path.read_bytes())
        except OSError as exc:
            raise TransientError(f"connector {self.name!r}: cannot read {artifact.name} from the spool "
                                 f"({exc.strerror or exc}); retried later", connector=self.name,
                                 path=str(artifact.path), rule="spool-read") from exc
        except ValueError as exc:
            raise DocumentError(f"connector {self.name!r}: {artifact.name} is not JSON: replay its document",
                                connector=self.name, path=artifact.name, rule="pastell-canonical") from exc
        if not isinstance(act, dict) or act.get("format") != _FORMAT:
            raise DocumentError(f"connector {self.name!r}: {artifact.name} is not a {_FORMAT} document: the route "
                                "must build the canonical act for this endpoint", connector=self.name,
                                path=artifact.name, rule="pastell-canonical")

        def refuse(field: str, rule: str, message: str) -> DocumentError:
            return DocumentError(f"connector {self.name!r}: {artifact.name}: {message}", connector=self.name,
                                 path=artifact.name, field=field, rule=rule)

        numero, objet = str(act.get("numero_interne") or ""), str(act.get("objet") or "")
        if not NUMERO.fullmatch(numero):
            raise refuse("numero_interne", "pastell-numero", f"Pastell takes an act number of 2 to 15 capital "
                         f"letters, digits or _ (numero_de_lacte), not {numero!r}")
        if not 1 <= len(objet) <= 499 or "\n" in objet or "\r" in objet:
            raise refuse("objet", "pastell-objet", f"Pastell takes a subject of 1 to 499 characters without a line "
                         f"break (objet), this one has {len(objet)}")
        if act.get("nature") not in (1, 2, 3, 4, 5, 6) or not act.get("classification"):
            raise refuse("nature", "pastell-canonical", "the act has no nature 1..6 or no classification")
        try:
            date.fromisoformat(str(act.get("decision_date")))
        except ValueError as exc:
            raise refuse("decision_date", "pastell-canonical", "the decision date is not a date") from exc
        files = [act.get("main_document"), *(act.get("annexes") or [])]
        if not all(isinstance(f, dict) and f.get("sha256") for f in files) or artifact.blob is None:
            raise refuse("main_document", "pastell-canonical", "the act's files are not named by sha256 in the spool")
        total = sum(int(f.get("size") or 0) for f in files)
        if total > MAX_TOTAL:
            raise refuse("annexes", "pastell-size", f"the act and its annexes make {total} bytes, more than the "
                         f"{MAX_TOTAL} Pastell takes: send the large annexes another way (document_papier)")
        return act

    def _find(self, numero: str, day: str) -> list[tuple[str, dict[str, Any]]]:
        """Documents of this act (number, then date), newest first, with their detail."""
        rows = self._http().json("GET", self._documents(), operation="listDocuments", params={
            "type": self.config.flow, self.config.fields.numero_de_lacte: numero, "limit": 100})
        found = []
        for row in rows if isinstance(rows, list) else []:
            id_d = row.get("id_d") or (row.get("info") or {}).get("id_d") if isinstance(row, dict) else None
            if not id_d:
                continue
            detail = self._detail(str(id_d))
            data = data_of(detail)
            if data.get(self.config.fields.numero_de_lacte) == numero and \
                    str(data.get(self.config.fields.date_de_lacte) or "")[:10] == day:
                found.append((str(id_d), detail))
        return found

    def _create(self) -> str:
        created = self._http().json("POST", self._documents(), operation="createDocument",
                                    data={"type": self.config.flow})
        id_d = created.get("id_d") or (created.get("info") or {}).get("id_d") if isinstance(created, dict) else None
        if not id_d:
            raise TransientError(f"connector {self.name!r}: createDocument: Pastell's answer names no id_d; "
                                 "retried later", connector=self.name, rule="pastell-answer")
        return str(id_d)

    def _fill(self, id_d: str, act: dict[str, Any], artifact: Artifact) -> None:
        """The form, the files (each in its slot: an upload made again replaces itself), the typology."""
        f, http, path = self.config.fields, self._http(), f"{self._documents()}/{id_d}"
        form = {
            f.acte_nature: str(act["nature"]), f.numero_de_lacte: act["numero_interne"], f.objet: act["objet"],
            f.date_de_lacte: act["decision_date"], f.document_papier: "1" if act.get("document_papier") else "0",
            f.classification: str(act["classification"]), f.envoi_tdt: "1",
        }
        http.json("PATCH", path, operation="modifyDocument", data=form)
        assert artifact.blob is not None
        pieces = [(f.arrete, 0, act["main_document"])]
        pieces += [(f.autre_document_attache, n, annex) for n, annex in enumerate(act.get("annexes") or [])]
        answer: Any = None
        for field, num, described in pieces:
            name, blob = str(described.get("source_name") or described.get("name")), artifact.blob(described["sha256"])
            if not blob.is_file():
                raise TransientError(f"connector {self.name!r}: {name} ({described['sha256'][:12]}…) is not in the "
                                     "spool; retried later", connector=self.name, path=str(blob), rule="spool-read")

            def upload(name: str = name, blob: Any = blob) -> MultipartFile:
                return MultipartFile({"file_name": name}, "file_content", name, blob)

            answer = http.json("POST", f"{path}/file/{field}/{num}", operation="postDocumentFile", upload=upload)
        codes = [str(described.get("type_code") or "") for _, _, described in pieces]
        http.call("PATCH", f"{path}/externalData/{f.type_piece}", operation="patchDocumentExternalData",
                  data=[("type_pj[]", code) for code in codes])
        if isinstance(answer, dict) and str(answer.get("formulaire_ok", "1")) == "0":
            said = str(answer.get("message") or "the form is incomplete")
            raise DocumentError(f"connector {self.name!r}: Pastell finds document {id_d} of {artifact.name} "
                                f"invalid ({said}); fix the act, then replay it: this draft is resumed",
                                connector=self.name, path=artifact.name, rule="pastell-form")

    def _trigger(self, id_d: str, artifact: Artifact) -> SendResult:
        action = self.config.send_action
        try:
            self._http().json("POST", f"{self._documents()}/{id_d}/action/{action}", operation=f"action {action}")
        except DocumentError as refused:
            raise DocumentError(f"{refused.message}; Pastell document {id_d} stays a draft: a replay resumes it",
                                connector=self.name, path=artifact.name, field=refused.field,
                                rule=refused.rule) from refused
        except TransientError as failure:
            if failure.rule not in UNKNOWN_OUTCOME:
                raise
            try:
                action_now, _ = last_action(self._detail(id_d))
            except HentError:
                raise failure from None
            if action_now in DRAFTS:
                raise
            return SendResult("SENT", remote_id=id_d, detail=f"handed to the TdT though Pastell's answer was lost "
                                                              f"({action_now})")
        return SendResult("SENT", remote_id=id_d)

    # ------------------------------------------------------------ AnsweringEndpoint

    def lookup(self, client_key: str) -> str | None:
        """The id_d of the act whose expected IDActe is ``client_key`` (number and date in it), or None."""
        parts = client_key.split("-")
        if len(parts) < 5 or not parts[2].isdigit() or len(parts[2]) != 8:
            return None
        day = f"{parts[2][:4]}-{parts[2][4:6]}-{parts[2][6:]}"
        found = self._find("-".join(parts[3:-1]), day)
        live = [id_d for id_d, detail in found if last_action(detail)[0] not in DRAFTS]
        return live[0] if live else None

    def statuses(self, remote_ids: list[str]) -> list[RemoteStatus]:
        result = []
        for id_d in remote_ids:
            try:
                detail = self._detail(id_d)
            except NotFound as exc:
                result.append(RemoteStatus(id_d, "UNKNOWN", detail=exc.message))
                continue
            result.append(self.answers.status(id_d, detail) if self.answers.is_answer(detail)
                          else self._status(id_d, detail))
        return result

    def _status(self, id_d: str, detail: dict[str, Any]) -> RemoteStatus:
        action, message = last_action(detail)
        said = f"{action}: {message}" if message else action
        state = STATES.get(action)
        if state == "CANCELLED":
            return RemoteStatus(id_d, "CANCELLED", detail=said)
        if state == "ACKNOWLEDGED" or data_of(detail).get(self.config.fields.aractes):
            files = self._files(id_d, self.config.fields.aractes, limit=1)
            name, data = files[0] if files else (None, None)
            return RemoteStatus(id_d, "ACKNOWLEDGED", message=data, message_name=name, detail=said)
        if state == "REJECTED":
            return RemoteStatus(id_d, "REJECTED", detail=said)
        return RemoteStatus(id_d, "IN_TRANSIT", detail=said, waiting="to-be-posted" if action in TO_BE_POSTED else None)

    def _files(self, id_d: str, field: str, *, limit: int = MAX_FILES) -> list[tuple[str, bytes]]:
        return self._http().files(self.config.entity, id_d, field, limit=limit)

    def messages(self, remote_id: str, known: set[str]) -> list[RemoteMessage]:
        """The préfecture's messages about the act ``remote_id`` (actes-reponse-prefecture documents, each
        by its id_d), but those in ``known``; none for an answer's document."""
        detail = self._detail(remote_id)
        return [] if self.answers.is_answer(detail) else self.answers.messages(remote_id, detail, known)

    def receipts(self, remote_id: str) -> dict[str, bytes]:
        """The stamped act, the stamped annexes and the bordereau Pastell's TdT fetched at the
        acknowledgment, by the names Pastell gives them (made plain); {} while the document holds
        neither the bordereau nor the stamped act."""
        f = self.config.fields
        data = data_of(self._detail(remote_id))
        if not (data.get(f.bordereau) or data.get(f.acte_tamponne)):
            return {}
        files: dict[str, bytes] = {}
        for field, limit in ((f.acte_tamponne, 1), (f.annexes_tamponnees, MAX_FILES), (f.bordereau, 1)):
            if not data.get(field):
                continue
            for name, content in self._files(remote_id, field, limit=limit):
                files[name if name not in files else f"{field}-{len(files)}-{name}"] = content
        return files

    def cancel(self, remote_id: str, id_acte: str) -> RemoteStatus:
        """Ask Pastell's TdT for the cancellation (6-1) of the acknowledged act ``id_acte``."""
        detail = self._detail(remote_id)
        known = data_of(detail).get(self.config.fields.acte_unique_id)
        if known and known != id_acte:
            raise DocumentError(f"connector {self.name!r}: Pastell document {remote_id} is the act {known}, not "
                                f"{id_acte}: nothing cancelled", connector=self.name, rule="pastell-cancel")
        action = self.config.cancel_action
        if last_action(detail)[0] not in ("annulation-tdt", "verif-annulation-tdt", "annuler-tdt"):
            self._http().json("POST", f"{self._documents()}/{remote_id}/action/{action}", operation=f"action {action}")
            detail = self._detail(remote_id)
        now, message = last_action(detail)
        return RemoteStatus(remote_id, "CANCELLED" if now == "annuler-tdt" else "IN_TRANSIT",
                            detail=f"{now}: {message}" if message else now)

    def classification(self, siren: str, current: str | None) -> tuple[str, bytes]:
        """The classification (7-2) the entity's TdT connector keeps (Pastell cannot send a 7-1 itself)."""
        connector = self.config.classification_connector
        if connector is None:
            raise DocumentError(
                f"connector {self.name!r}: Pastell's API offers no classification request (7-1); set "
                "classification_connector to the id_ce of the entity's TdT connector to read the classification it "
                "keeps, or keep the classification file in the configuration", connector=self.name,
                rule="pastell-classification")
        entity = self._entity()
        if entity.get("siren") and entity["siren"] != siren:
            raise DocumentError(f"connector {self.name!r}: entity {self.config.entity} is SIREN {entity['siren']}, "
                                f"not {siren}: its TdT keeps no classification for {siren}", connector=self.name,
                                rule="pastell-classification")
        response = self._http().call("GET", f"entite/{self.config.entity}/connecteur/{connector}/file/"
                                            "classification_file/0", operation="getConnecteurFile")
        return file_name_of(response, f"{siren}-classification-7-2.xml"), response.content

    def _entity(self, timeouts: tuple[float, float] | None = None) -> dict[str, Any]:
        entities = self._http().json("GET", "entite", operation="listEntite", timeouts=timeouts)
        for entity in entities if isinstance(entities, list) else []:
            if isinstance(entity, dict) and str(entity.get("id_e")) == self.config.entity:
                return entity
        raise TransientAlert(f"connector {self.name!r}: entity {self.config.entity} is not among those Pastell's user "
                             "sees: check entity and the user's roles", connector=self.name, rule="pastell-entity")

    # ------------------------------------------------------------ readiness

    def test_connection(self, timeouts: tuple[float, float] | None = None) -> str:
        """Pastell's version and the entity, as the configured user sees them (raises HentError)."""
        version = self._http().json("GET", "version", operation="getVersion", timeouts=timeouts)
        entity = self._entity(timeouts)
        shown = version.get("version", "?") if isinstance(version, dict) else "?"
        return (f"Pastell {shown} at {redact_url(self.config.url)}, entity {self.config.entity} "
                f"({entity.get('denomination', '?')}, SIREN {entity.get('siren', '?')})")

    def reachable(self) -> tuple[bool, str]:
        """:meth:`test_connection` with the connect timeout as read timeout too: (ready, where or why not)."""
        timeout = self.config.connect_timeout
        try:
            return True, self.test_connection((timeout, timeout))
        except HentError as exc:
            return False, exc.message


Connector = PastellOutbound
