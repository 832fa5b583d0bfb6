"""S2LOW (ADULLACT/Libriciel's tiers de télétransmission), outbound: the act as S2LOW's form, then follow it.

S2LOW builds the ACTES archive itself: ``send`` posts the checked act (``hent-canonical-act/1``,
:mod:`transformers.actes_canonical`) to ``actes_transac_create.php`` — its fields, the subject
in ISO-8859-1, the files streamed from the spool — and ends SENT with S2LOW's transaction
id.  The acknowledgment poller then asks :meth:`S2lowOutbound.statuses`
(``actes_transac_get_status.php``): 4 brings the ARActe, -1 the anomaly or S2LOW's error,
17 and 18 say that S2LOW holds the act until a person posts or signs it.

Nothing is sent twice.  A refusal because the number is already used, or a call whose outcome
is unknown (a timeout, a connection lost, a 5xx after the request left) is followed by a
lookup of the act by its IDActe: ``get_status?unique_id=<IDActe>`` (set by S2LOW from the
ARActe) or ``<IDActe>-1-1`` (S2LOW also finds a transaction by its Acte message's name), then
``api/list_actes.php`` for that status, which gives the transaction id by number and decision
date.  S2LOW takes a number once per collectivité: an act it refused earlier is followed, not
sent again, and the detail says to give it another number.

Later messages of the préfecture are listed per act (``actes_transac_get_document.php?id=``,
``type-status-id`` lines), each downloaded once (the ministry's ``.tar.gz``, handed to the
runtime as it came: the route layer opens it), and marked read at S2LOW once the bus has
recorded it (when it comes back in ``known``).  The 6-2 of a cancellation is the status 4
answer of the cancellation transaction.  Once the act is acknowledged, :meth:`S2lowOutbound.receipts`
brings back the bordereau d'acquittement (``actes_create_pdf.php``) and the PDFs of the act
stamped by S2LOW (``actes_download_file.php?tampon=true``, one per PDF that
``actes_transac_get_files_list.php`` lists).  One connector is one S2LOW account, hence one
collectivité: set ``siren`` to refuse acts of another.

The collectivité's answers to the préfecture's letters (``hent-canonical-response/1``,
:func:`transformers.actes_responses.build_canonical_response`) go to
``actes_transac_reponse_create.php``: ``id`` the letter's S2LOW transaction (``letter_id``, the
part before a ``/``), ``type_envoie`` 3 for a refusal (3-3, 4-3) and 4 for an answer (2-2, 3-4,
4-4), ``type_acte`` (and ``type_pj[]`` per further document) the typology ``99_<nature>`` of the
act's nature (``response_typology`` to set another), the first document as ``acte_pdf_file``, the
others as ``acte_attachments[]``; ``OK\n<id>`` → SENT.  That transaction's status 4 brings the
ministry's ARPieceComplementaire (3-5) or ARReponseRejetLettreObservations (4-5); a 2-2 gets
status 4 with no message (the ministry acknowledges none).

Assumed, as S2LOW's code is not at hand: 3-2 and 4-2 (acknowledgments of receipt of a letter)
are not posted: S2LOW sends them itself when the letter comes (its status 8 "document reçu, AR
envoyé"; Pastell's S2LOW connector too only posts ``type_envoie`` 3 or 4).  Such an answer ends
DELIVERED at once with that said; ``type_envoie: {"3-2": <n>}`` in the YAML posts it instead.
S2LOW offers no lookup of an answer by the letter it answers: an answer whose outcome is unknown
(the request left, no answer read) is not sent again: its document fails, saying to look at the
letter's answers at S2LOW before replaying it.
"""

from __future__ import annotations

__all__ = ["Connector", "S2lowOutbound", "S2lowOutboundConfig", "state_of", "MAX_SIZE", "PAGE"]

import json
import logging
import mimetypes
import re
import ssl
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
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
from bus.errors import ConfigError, DocumentError, HentError, Problem, TransientError
from bus.insecure import warn_unverified_tls
from bus.secrets import Secret, redact_url
from connectors._credentials import credentials_field, credentials_model
from connectors._http_limits import max_response_bytes_field
from connectors._s2low_common import (
    STATUS_LABELS,
    MultipartBody,
    S2lowAnswer,
    S2lowHttp,
    StatusAnswer,
    TransientAlert,
    plain,
    plain_file_name,
    read_answer,
    read_status,
)

log = logging.getLogger(__name__)

MAX_SIZE = 150 * 1024 * 1024  #: S2LOW's ACTES_ARCHIVE_MAX_SIZE
PAGE = 100  #: transactions per list_actes.php page
_PAGES = 50
_ACKNOWLEDGED, _REJECTED, _CANCELLED = {4, 12, 13, 14, 19, 20}, {-1, 6}, {0}
_WAITING = {17: "to-be-posted", 18: "to-be-signed"}
_PREFECTURE_TYPES, _PREFECTURE_STATUSES = {2, 3, 4, 5}, {7, 8, 11, 21}
_LISTED = re.compile(r"^\s*(\d+)-(-?\d+)-(\d+)\s*$")
_ID_ACTE = re.compile(rb'IDActe="([^"]+)"')
#: the root of a message S2LOW gives with status 4 → its code (the ARActe unless said otherwise)
_ACK_CODES = ((b"ARPieceComplementaire", "3-5"), (b"ARReponseRejetLettreObservations", "4-5"),
              (b"ARAnnulation", "6-2"))
#: the answer's code → S2LOW's type_envoie (3 refus, 4 réponse); 3-2 and 4-2: S2LOW sends them itself
TYPE_ENVOIE = {"2-2": 4, "3-3": 3, "3-4": 4, "4-3": 3, "4-4": 4}
_RESPONSE_CODES = ("2-2", "3-2", "3-3", "3-4", "4-2", "4-3", "4-4")
_ACTE_MESSAGE = re.compile(r"(?P<id_acte>.+)-1-1_[0-9]+\.xml")  #: the Acte message in S2LOW's files list
#: words of S2LOW's refusals that mean "already there", "S2LOW failed", and the field a refusal is about
_DUPLICATE = ("numero interne existe deja", "already used", "deja utilise", "doublon", "duplicate")
_SERVER_FAULT = ("erreur lors de l'enregistrement", "erreur d'initialisation", "erreur lors de la generation",
                 "erreur de journalisation", "erreur interne")
_FIELDS = (
    (("typologie", "type_acte", "type_pj"), "type_acte"), (("numero", "number"), "number"),
    (("objet", "subject"), "subject"), (("date",), "decision_date"), (("classif",), "classif"),
    (("nature",), "nature_code"), (("taille",), "size"), (("annexe", "attachment", "piece"), "acte_attachments"),
    (("fichier", "acte_pdf_file"), "acte_pdf_file"),
)


def state_of(status: int) -> str:
    """S2LOW's status code → RemoteStatus.state."""
    if status in _ACKNOWLEDGED:
        return "ACKNOWLEDGED"
    if status in _REJECTED:
        return "REJECTED"
    return "CANCELLED" if status in _CANCELLED else "IN_TRANSIT"


def _acknowledgment_code(message: bytes) -> str:
    """1-2 for an ARActe, 3-5 / 4-5 for the receipt of an answer to a letter, 6-2 for a cancellation."""
    head = message[:2000]
    return next((code for root, code in _ACK_CODES if re.search(rb"<(?:[\w.-]+:)?" + root + rb"[\s/>]", head)), "1-2")


def _named(message: bytes, code: str, transaction: str) -> str:
    """``<IDActe>-<code>_0.xml`` when the message names its act (S2LOW gives no file name), else S2LOW's id."""
    found = _ID_ACTE.search(message)
    return f"{found.group(1).decode('ascii', 'replace')}-{code}_0.xml" if found else f"s2low-{transaction}-{code}.xml"


class S2lowOutboundConfig(EndpointConfig):
    """``type: s2low`` used in a route's ``to``: an S2LOW account (one collectivité) over its HTTPS API."""

    type: Literal["s2low"] = Field("s2low", description="The protocol: S2LOW's API (actes module).")
    url: str = Field(..., description="S2LOW's address, e.g. https://s2low.example.org (no path).")
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to open the connection.")
    read_timeout: Duration = Field(120.0, gt=0, description="Seconds to wait for each part of an answer.")
    verify_tls: bool = Field(True, description="Verify the server's certificate (false only for tests: a warning at "
                             "every start and in check).")
    ca_file: ExistingFile | None = Field(None, description="CA bundle (PEM) to verify the server with.")
    client_cert: ExistingFile | None = Field(None, description="The RGS client certificate (PEM) S2LOW knows.")
    client_key: ExistingFile | None = Field(None, description="Its private key (PEM, unencrypted), if not in it.")
    login: str | None = Field(None, min_length=1, description="S2LOW login, when the account has one.")
    password: Secret | None = Field(None, description="Its password.", json_schema_extra={"secret": True})
    auth: Literal["basic", "nonce"] = Field(
        "basic", description="How login and password go: HTTP Basic on each call, or S2LOW's nonce.")
    en_attente: bool = Field(False, description="Leave each act at S2LOW until a person posts it (status 17).")
    siren: str | None = Field(None, pattern=r"^[0-9]{9}$",
                              description="SIREN of the account's collectivité: acts of another are refused.")
    max_size: int = Field(MAX_SIZE, gt=0, description="Bytes of an act's files together (S2LOW: 150 MiB).")
    type_envoie: dict[str, int] = Field(
        default_factory=lambda: dict(TYPE_ENVOIE),
        description="Answer code → S2LOW's type_envoie (3 refus, 4 réponse); a code left out (3-2, 4-2) is "
                    "not posted: S2LOW sends the acknowledgment of receipt of a letter itself.")
    response_typology: str | None = Field(
        None, pattern=r"^[0-9A-Z_]{5}$",
        description="Typology (type_acte, type_pj[]) of an answer's documents; default 99_<nature of the act>.")
    max_response_bytes: int = max_response_bytes_field()
    credentials: list[S2lowCredentials] = credentials_field()  # type: ignore[valid-type]  # built from the fields above

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value, rule="s2low-url", option="url", credentials="login and password").rstrip("/")

    @model_validator(mode="after")
    def _pairs(self) -> S2lowOutboundConfig:
        if self.client_key is not None and self.client_cert is None:
            raise PydanticCustomError("s2low-tls", "client_key needs client_cert (mutual TLS)", {})
        if (self.login is None) != (self.password is None):
            raise PydanticCustomError("s2low-credentials", "login and password go together", {})
        if self.auth == "nonce" and self.login is None:
            raise PydanticCustomError("s2low-credentials", "auth: nonce needs login and password", {})
        unknown = sorted(set(self.type_envoie) - set(_RESPONSE_CODES))
        if unknown:
            raise PydanticCustomError("s2low-type-envoie", "type_envoie: {got} is not an answer code ({known})",
                                      {"got": ", ".join(unknown), "known": ", ".join(_RESPONSE_CODES)})
        return self


S2lowCredentials = credentials_model("S2lowCredentials", S2lowOutboundConfig,
                                     ("client_cert", "client_key", "login", "password", "siren"))
S2lowOutboundConfig.model_rebuild()


class S2lowOutbound(OutboundConnector):
    Config = S2lowOutboundConfig
    consumes = (CANONICAL, CANONICAL_RESPONSE)
    config: S2lowOutboundConfig

    def __init__(self, name: str, config: S2lowOutboundConfig) -> None:
        super().__init__(name, config)
        warn_unverified_tls(name, config)
        self._lock = threading.Lock()
        self._http: S2lowHttp | None = None
        self._uncertain: set[str] = set()  #: IDActes whose last submission has an unknown outcome
        self._marked: set[str] = set()  #: préfecture messages marked read by this process

    # ------------------------------------------------------------ life cycle

    def connect(self) -> None:
        self._client()

    def check(self) -> None:
        """The certificate, its key and the CA load (no network): ConfigError naming the file otherwise."""
        c, problems = self.config, []
        context = ssl.create_default_context()
        if c.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(c.ca_file))
            except (ssl.SSLError, OSError) as exc:
                problems.append(Problem(f"ca_file {c.ca_file} is not a readable PEM CA bundle ({exc})",
                                        field=f"connectors.{self.name}.ca_file", rule="s2low-tls-file"))
        if c.client_cert is not None:
            try:
                context.load_cert_chain(str(c.client_cert), str(c.client_key) if c.client_key else None,
                                        password=lambda: b"")
            except (ssl.SSLError, OSError) as exc:
                problems.append(Problem(
                    f"cannot load the client certificate {c.client_cert} with its key ({exc}): the key must be "
                    "PEM, unencrypted, and match the certificate", field=f"connectors.{self.name}.client_cert",
                    rule="s2low-tls-file"))
        if problems:
            raise ConfigError(f"connector {self.name!r}: {problems[0].message}", problems=problems,
                              connector=self.name)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _client(self) -> S2lowHttp:
        with self._lock:
            if self._http is None:
                c = self.config
                self._http = S2lowHttp(self.name, url=c.url, timeouts=(c.connect_timeout, c.read_timeout),
                                       verify_tls=c.verify_tls, ca_file=c.ca_file, client_cert=c.client_cert,
                                       client_key=c.client_key, login=c.login, password=c.password, auth=c.auth,
                                       max_response_bytes=c.max_response_bytes)
            return self._http

    def _get(self, script: str, operation: str, **params: str) -> bytes:
        return self._client().call("GET", script, operation=operation, params=params)

    # ------------------------------------------------------------ send

    def send(self, artifact: Artifact) -> SendResult:
        if artifact.kind == CANONICAL_RESPONSE:
            return self._send_response(artifact)
        act = self._read_act(artifact)
        id_acte = str(artifact.client_key or act.get("id_acte") or "")
        fields, files = self._form(artifact, act)
        if id_acte in self._uncertain:  # the last try's outcome is unknown: ask before sending again
            found = self._lookup_after(id_acte, "the outcome of the last submission is unknown")
            self._uncertain.discard(id_acte)
            if found is not None:
                return SendResult("SENT", remote_id=found, detail="recorded by S2LOW though its answer was lost")
        try:
            body = self._client().call("POST", "modules/actes/actes_transac_create.php", operation="create",
                                       body=lambda: MultipartBody(fields, files))
            answer = read_answer(body, connector=self.name, operation="create")
        except TransientError as failure:
            if failure.rule == "s2low-connect" or isinstance(failure, TransientAlert):
                raise  # the request never left, or was refused before being read
            found = self._lookup_after(id_acte, failure.message)
            if found is None:
                raise
            return SendResult("SENT", remote_id=found, detail="recorded by S2LOW though its answer was lost")
        if answer.ok and answer.first.isdigit():
            return SendResult("SENT", remote_id=answer.first)
        if answer.ok:
            self._uncertain.add(id_acte)
            raise TransientError(f"connector {self.name!r}: create: S2LOW answered OK without a transaction id "
                                 f"({answer.text[:100]!r}); looked up before anything is sent again",
                                 connector=self.name, rule="s2low-answer")
        said = plain(answer.text)
        if any(words in said for words in _DUPLICATE):
            return self._after_duplicate(artifact, act, id_acte, answer.text)
        if any(words in said for words in _SERVER_FAULT):
            raise TransientError(f"connector {self.name!r}: create: S2LOW failed ({answer.text}); retried later",
                                 connector=self.name, rule="s2low-server")
        field = next((name for words, name in _FIELDS if any(w in said for w in words)), None)
        raise DocumentError(
            f"connector {self.name!r}: S2LOW refused act {id_acte}: {answer.text}"
            + (f" (field {field})" if field else "") + "; fix the act, then replay it",
            connector=self.name, path=artifact.name, field=field, rule="s2low-refused")

    def _send_response(self, artifact: Artifact) -> SendResult:
        """An answer to a letter: ``actes_transac_reponse_create.php`` (see the module's docstring)."""
        answer = self._read_json(artifact, "hent-canonical-response/1")
        code, letter = str(answer.get("code")), str(answer.get("letter_id") or "").split("/", 1)[0]
        what = f"answer {code} of act {answer.get('id_acte')} to the letter {letter}"
        type_envoie = self.config.type_envoie.get(code)
        if type_envoie is None:
            return SendResult("DELIVERED", remote_id=letter or None, detail=(
                f"{what} not posted: S2LOW sends the acknowledgment of receipt of a letter itself (status 8, "
                f"document reçu, AR envoyé); set type_envoie: {{{code!r}: <n>}} to post it"))
        fields, files = self._response_form(artifact, answer, letter, type_envoie)
        try:
            body = self._client().call("POST", "modules/actes/actes_transac_reponse_create.php",
                                       operation="reponse_create", body=lambda: MultipartBody(fields, files))
            said = read_answer(body, connector=self.name, operation="reponse_create")
        except TransientError as failure:
            if failure.rule == "s2low-connect" or isinstance(failure, TransientAlert):
                raise  # the request never left, or was refused before being read
            raise self._unknown_outcome(artifact, what, failure.message) from failure
        if said.ok and said.first.isdigit():
            return SendResult("SENT", remote_id=said.first)
        if said.ok:
            raise self._unknown_outcome(artifact, what, f"S2LOW answered OK without a transaction id "
                                                        f"({said.text[:100]!r})")
        if any(words in plain(said.text) for words in _SERVER_FAULT):
            raise TransientError(f"connector {self.name!r}: reponse_create: S2LOW failed ({said.text}); retried "
                                 "later", connector=self.name, rule="s2low-server")
        field = next((name for words, name in _FIELDS if any(w in plain(said.text) for w in words)), None)
        raise DocumentError(f"connector {self.name!r}: S2LOW refused the {what}: {said.text}"
                            + (f" (field {field})" if field else "") + "; fix the answer, then replay it",
                            connector=self.name, path=artifact.name, field=field, rule="s2low-refused")

    def _unknown_outcome(self, artifact: Artifact, what: str, cause: str) -> DocumentError:
        return DocumentError(
            f"connector {self.name!r}: the outcome of the {what} is unknown ({cause}); S2LOW offers no lookup of an "
            "answer, so it is not sent again: look at the letter's answers at S2LOW and replay this document only "
            "if S2LOW has none", connector=self.name, path=artifact.name, rule="s2low-answer-unknown")

    def _response_form(self, artifact: Artifact, answer: dict[str, Any], letter: str, type_envoie: int,
                       ) -> tuple[list[tuple[str, bytes]], list[tuple[str, str, Path, str]]]:
        """S2LOW's fields and files for an answer to the letter ``letter`` (files as paths in the spool)."""
        if not letter.isdigit():
            raise DocumentError(f"connector {self.name!r}: {artifact.name} answers the letter {letter!r}, which is "
                                "not an S2LOW transaction id: answer a letter received through S2LOW",
                                connector=self.name, path=artifact.name, field="letter_id", rule="s2low-letter")
        typology = self.config.response_typology or f"99_{str(answer['id_acte']).rsplit('-', 1)[-1]}"
        documents = list(answer.get("documents") or [])
        fields = [("api", "1"), ("id", letter), ("type_envoie", str(type_envoie)), ("type_acte", typology),
                  *(("type_pj[]", typology) for _ in documents[1:])]
        described = [("acte_pdf_file", d) for d in documents[:1]] + [("acte_attachments[]", d) for d in documents[1:]]
        return [(name, value.encode()) for name, value in fields], self._spooled(artifact, described)

    def _read_json(self, artifact: Artifact, expected: str, key: str | None = None) -> dict[str, Any]:
        """The canonical document (act or answer), its format and SIREN checked."""
        try:
            found = json.loads(artifact.path.read_bytes())
        except OSError as exc:
            raise TransientError(f"connector {self.name!r}: cannot read {artifact.name} from the spool "
                                 f"({exc.strerror or exc}); retried later", connector=self.name,
                                 path=str(artifact.path), rule="spool-read") from exc
        except ValueError as exc:
            found = {"format": f"not JSON ({exc})"}
        if not isinstance(found, dict) or found.get("format") != expected or artifact.blob is None \
                or not (key or found.get("id_acte")):
            raise DocumentError(f"connector {self.name!r}: {artifact.name} is not a {expected} document "
                                "with its files: replay its document so that it is prepared again",
                                connector=self.name, path=artifact.name, rule="s2low-canonical")
        if self.config.siren and found.get("siren") != self.config.siren:
            raise DocumentError(
                f"connector {self.name!r}: act {found.get('id_acte')} is of SIREN {found.get('siren')}, but this S2LOW "
                f"account sends for {self.config.siren}: route it to that collectivité's S2LOW connector",
                connector=self.name, path=artifact.name, field="siren", rule="s2low-siren")
        return found

    def _read_act(self, artifact: Artifact) -> dict[str, Any]:
        return self._read_json(artifact, "hent-canonical-act/1", key=artifact.client_key)

    def _form(self, artifact: Artifact, act: dict[str, Any]) -> tuple[list[tuple[str, bytes]],
                                                                      list[tuple[str, str, Path, str]]]:
        """S2LOW's fields and files for ``act`` (files as paths in the spool, read when sent)."""
        try:
            subject = str(act["objet"]).encode("iso-8859-1")
            annexes = list(act.get("annexes") or [])
            fields = [("api", "1"), ("nature_code", str(act["nature"])), ("number", str(act["numero_interne"])),
                      ("decision_date", str(act["decision_date"])),
                      *((f"classif{n}", str(code)) for n, code in enumerate(act["matieres"][:5], start=1)),
                      ("en_attente", "1" if self.config.en_attente else "0"),
                      ("document_papier", "1" if act.get("document_papier") else "0"),
                      ("type_acte", str(act["main_document"]["type_code"])),
                      *(("type_pj[]", str(annex["type_code"])) for annex in annexes)]
            described = [("acte_pdf_file", act["main_document"])] + [("acte_attachments[]", a) for a in annexes]
        except UnicodeEncodeError as exc:
            raise DocumentError(f"connector {self.name!r}: the objet of {artifact.name} holds "
                                f"{exc.object[exc.start:exc.end]!r}, outside ISO-8859-1, which S2LOW cannot take: "
                                "report it (the text policy should have replaced it)", connector=self.name,
                                path=artifact.name, field="objet", rule="s2low-subject-latin1") from exc
        except (KeyError, TypeError, IndexError) as exc:
            raise DocumentError(f"connector {self.name!r}: {artifact.name} lacks {exc}: replay its document",
                                connector=self.name, path=artifact.name, rule="s2low-canonical") from exc
        files = self._spooled(artifact, described)
        return [(name, value.encode()) for name, value in fields] + [("subject", subject)], files

    def _spooled(self, artifact: Artifact, described: list[tuple[str, dict[str, Any]]],
                 ) -> list[tuple[str, str, Path, str]]:
        """(field, name, path in the spool, media type) of each file, their size together checked."""
        assert artifact.blob is not None
        files, total = [], 0
        for field, file in described:
            path = artifact.blob(str(file["sha256"]))
            try:
                total += path.stat().st_size
            except OSError as exc:
                raise TransientError(f"connector {self.name!r}: {file.get('name')} of {artifact.name} is not in the "
                                     f"spool ({exc.strerror or exc}); retried later", connector=self.name,
                                     path=str(path), rule="spool-read") from exc
            name = str(file.get("name") or file.get("source_name") or file["sha256"])
            files.append((field, name, path, mimetypes.guess_type(name)[0] or "application/octet-stream"))
        if total > self.config.max_size:
            raise DocumentError(f"connector {self.name!r}: the files of {artifact.name} weigh {total} bytes, more than "
                                f"max_size ({self.config.max_size}): send fewer or smaller annexes",
                                connector=self.name, path=artifact.name, field="size", rule="s2low-max-size")
        return files

    def _after_duplicate(self, artifact: Artifact, act: dict[str, Any], id_acte: str, said: str) -> SendResult:
        found = self._lookup_after(id_acte, f"S2LOW refused act {id_acte} as already received ({said})")
        if found is not None:
            return SendResult("SENT", remote_id=found, detail=(
                f"S2LOW already holds act {id_acte} as transaction {found}: followed, not sent again (S2LOW takes "
                "a number once; to transmit the act anew, give it another NumeroInterne)"))
        raise DocumentError(
            f"connector {self.name!r}: S2LOW says number {act.get('numero_interne')} is already used ({said}), but "
            f"holds no act {id_acte}: another act of the collectivité has that number at S2LOW; give this act "
            "another NumeroInterne (S2LOW suggests a suffix)", connector=self.name, path=artifact.name,
            field="numero_interne", rule="s2low-number-used")

    def _lookup_after(self, id_acte: str, cause: str) -> str | None:
        try:
            return self.lookup(id_acte)
        except HentError as exc:
            self._uncertain.add(id_acte)
            error = TransientAlert if isinstance(exc, TransientAlert) else TransientError
            raise error(f"{cause}; looking the act up by its IDActe failed too ({exc.message}): it will be looked "
                        "up again before anything is sent", connector=self.name, rule="s2low-lookup") from exc

    # ------------------------------------------------------------ AnsweringEndpoint

    def lookup(self, client_key: str) -> str | None:
        """The transaction id of the act whose IDActe is ``client_key``, or None."""
        parts = client_key.split("-")
        if len(parts) < 5 or len(parts[2]) != 8:
            raise DocumentError(f"connector {self.name!r}: {client_key!r} is not an IDActe", connector=self.name,
                                rule="s2low-id-acte")
        number, day = "-".join(parts[3:-1]), f"{parts[2][:4]}-{parts[2][4:6]}-{parts[2][6:]}"
        for unique_id in (client_key, f"{client_key}-1-1"):
            status = self._status_of(unique_id)
            if status is None:
                continue
            found = self._listed(status, number, day)
            if found is None:  # the status may have moved on between the two calls
                again = self._status_of(unique_id)
                if again is not None and again != status:
                    found = self._listed(again, number, day)
            if found is not None:
                return found
            raise TransientError(
                f"connector {self.name!r}: S2LOW knows act {client_key} (status {status}) but lists no transaction "
                f"numbered {number} decided on {day}; looked up again later", connector=self.name,
                rule="s2low-lookup")
        return None

    def _status_of(self, unique_id: str) -> int | None:
        answer = read_status(self._get("modules/actes/actes_transac_get_status.php", "lookup", unique_id=unique_id),
                             connector=self.name, operation="lookup")
        if isinstance(answer, StatusAnswer):
            return answer.status
        if "invalide" in plain(answer.text):  # "Numéro de transaction invalide."
            return None
        raise TransientError(f"connector {self.name!r}: lookup: S2LOW answered KO ({answer.text}); retried later",
                             connector=self.name, rule="s2low-lookup")

    def _listed(self, status: int, number: str, day: str) -> str | None:
        for page in range(_PAGES):
            body = self._get("modules/actes/api/list_actes.php", "list_actes", status_id=str(status),
                             offset=str(page * PAGE), limit=str(PAGE))
            try:
                listed = json.loads(body)
                rows = listed.get("transactions", []) if isinstance(listed, dict) else listed
                for row in rows:
                    dated = str(row.get("decision_date") or row.get("date") or "")
                    if str(row.get("number", "")).strip() == number and dated.startswith(day) \
                            and str(row.get("type") or "1") == "1":
                        return str(row["id"])
            except (ValueError, AttributeError, KeyError, TypeError):
                raise TransientError(f"connector {self.name!r}: list_actes: S2LOW's answer is not the JSON list "
                                     "expected; retried later", connector=self.name, rule="s2low-answer") from None
            if len(rows) < PAGE:
                return None
        return None

    def statuses(self, remote_ids: list[str]) -> list[RemoteStatus]:
        """One ``actes_transac_get_status.php`` call per transaction (S2LOW has no batch)."""
        return [self._status(remote_id) for remote_id in remote_ids]

    def _status(self, remote_id: str) -> RemoteStatus:
        answer = read_status(self._get("modules/actes/actes_transac_get_status.php", "get_status",
                                       transaction=remote_id), connector=self.name, operation="get_status")
        if isinstance(answer, S2lowAnswer):
            return RemoteStatus(remote_id, "UNKNOWN", detail=f"S2LOW: {answer.text}")
        status, state = answer.status, state_of(answer.status)
        detail = f"s2low-status={status} {STATUS_LABELS.get(status, 'statut inconnu')}"
        detail += f": {answer.message}" if answer.message else ""
        message = answer.xml if state in ("ACKNOWLEDGED", "REJECTED") else None
        name = None
        if message is not None:
            name = _named(message, _acknowledgment_code(message), remote_id) if status == 4 \
                else f"s2low-{remote_id}-{status}.xml"
        return RemoteStatus(remote_id, state, message=message, message_name=name, detail=detail,
                            waiting=_WAITING.get(status))

    def messages(self, remote_id: str, known: set[str]) -> list[RemoteMessage]:
        """The préfecture's messages about ``remote_id`` and its cancellation's 6-2, but those in ``known``."""
        body = self._get("modules/actes/actes_transac_get_document.php", "list_messages", id=remote_id)
        if body[:2] == b"\x1f\x8b":  # a package, not a list: remote_id is itself a message (an answer to a letter)
            return []
        if body.lstrip()[:2].upper() == b"KO":
            said = read_answer(body, connector=self.name, operation="list_messages").text
            error = DocumentError if "invalide" in plain(said) else TransientError
            raise error(f"connector {self.name!r}: S2LOW lists no messages for transaction {remote_id}: {said}",
                        connector=self.name, rule="s2low-messages")
        lines = body.decode("utf-8", "replace").splitlines()
        if lines and not any(_LISTED.match(line) for line in lines) and any(line.strip() for line in lines):
            read_answer(body, connector=self.name, operation="list_messages")  # raises, saying what came
        result: list[RemoteMessage] = []
        for line in lines:
            listed = _LISTED.match(line)
            if listed is None:
                continue
            kind, status, transaction = int(listed[1]), int(listed[2]), listed[3]
            seen = transaction in known or any(k.startswith(f"{transaction}/") for k in known)
            if kind in _PREFECTURE_TYPES and status in _PREFECTURE_STATUSES:
                if seen:
                    self._mark_read(transaction)
                else:
                    result += self._prefecture_message(remote_id, transaction)
            elif kind == 6 and status == 4 and not seen:
                answer = read_status(self._get("modules/actes/actes_transac_get_status.php", "get_status",
                                               transaction=transaction), connector=self.name, operation="get_status")
                if isinstance(answer, StatusAnswer) and answer.xml:
                    result.append(RemoteMessage(remote_id, transaction, _named(answer.xml, "6-2", transaction),
                                                answer.xml))
        return result

    def _prefecture_message(self, remote_id: str, transaction: str) -> list[RemoteMessage]:
        data = self._get("modules/actes/actes_transac_get_document.php", "get_document", id=transaction)
        if data[:2] != b"\x1f\x8b":  # not a .tar.gz: an error, said as it came
            said = read_answer(data, connector=self.name, operation="get_document").text
            raise TransientError(f"connector {self.name!r}: get_document: S2LOW gives no package for message "
                                 f"{transaction} ({said}); retried later", connector=self.name, rule="s2low-answer")
        # the package as the ministry made it: the runtime opens it (one message → id ``transaction``,
        # several → ``transaction/<name>``) and leaves the envelope aside
        return [RemoteMessage(remote_id, transaction, f"{transaction}.tar.gz", data)]

    def _mark_read(self, transaction: str) -> None:
        """Tell S2LOW a message was recorded (once per process); a failure only delays it."""
        if transaction in self._marked:
            return
        try:
            self._get("modules/actes/api/document_prefecture_mark_as_read.php", "mark_as_read",
                      transaction_id=transaction)
            self._marked.add(transaction)
        except HentError as exc:
            log.warning("connector %r: marking message %s read failed: %s", self.name, transaction, exc.message)

    def cancel(self, remote_id: str, id_acte: str) -> RemoteStatus:
        """Ask S2LOW to cancel (6-1) an acknowledged act; the 6-2 comes later through :meth:`messages`."""
        body = self._client().call("POST", "modules/actes/actes_transac_cancel.php", operation="cancel",
                                   body=lambda: MultipartBody([("api", b"1"), ("id", remote_id.encode())], []))
        answer = read_answer(body, connector=self.name, operation="cancel")
        if answer.ok:
            return RemoteStatus(remote_id, "IN_TRANSIT", detail=f"S2LOW cancellation transaction {answer.first}")
        if "deja en cours" in plain(answer.text):
            return RemoteStatus(remote_id, "IN_TRANSIT", detail=f"already under way at S2LOW: {answer.text}")
        current = self._status(remote_id)
        if current.state == "CANCELLED":
            return current
        raise DocumentError(f"connector {self.name!r}: S2LOW refused to cancel act {id_acte} (transaction "
                            f"{remote_id}): {answer.text}", connector=self.name, rule="s2low-cancel")

    def receipts(self, remote_id: str) -> dict[str, bytes]:
        """The bordereau (``<IDActe>-bordereau.pdf``) and the act and annexes stamped by S2LOW
        (``<posted name>-tampon.pdf``) of an acknowledged act, all or none: {} while S2LOW has no
        acknowledgment to stamp with (it answers KO)."""
        bordereau = self._pdf(remote_id, "modules/actes/actes_create_pdf.php", "bordereau", trans_id=remote_id)
        if bordereau is None:
            return {}
        listed = self._files_list(remote_id)
        names = [str(entry.get("name") or "") for entry in listed]
        id_acte = next((found["id_acte"] for name in names if (found := _ACTE_MESSAGE.fullmatch(name))),
                       f"s2low-{remote_id}")
        files: dict[str, bytes] = {}
        for index, entry in enumerate(listed):
            posted = str(entry.get("posted_filename") or entry.get("name") or "")
            if entry.get("mimetype") != "application/pdf" and not posted.lower().endswith(".pdf"):
                continue  # S2LOW stamps PDFs only (the first file is the Acte message)
            stamped = self._pdf(remote_id, "modules/actes/actes_download_file.php", "download_file",
                                file=str(entry.get("id")), tampon="true")
            if stamped is None:
                return {}
            stem = Path(plain_file_name(posted, f"s2low-{remote_id}-{index}.pdf")).stem
            name = f"{stem}-tampon.pdf" if f"{stem}-tampon.pdf" not in files else f"{stem}-{index}-tampon.pdf"
            files[name] = stamped
        files[plain_file_name(f"{id_acte}-bordereau.pdf", f"s2low-{remote_id}-bordereau.pdf")] = bordereau
        return files

    def _pdf(self, remote_id: str, script: str, operation: str, **params: str) -> bytes | None:
        """A PDF S2LOW makes about ``remote_id``; None when it answers KO (not acknowledged yet): the
        runtime asks again later."""
        body = self._get(script, operation, **params)
        if body.lstrip().startswith(b"%PDF-"):
            return body
        answer = read_answer(body, connector=self.name, operation=operation)  # neither PDF nor OK/KO: raises
        if not answer.ok and "invalide" in plain(answer.text):
            raise DocumentError(f"connector {self.name!r}: {operation}: S2LOW knows no transaction {remote_id} "
                                f"({answer.text})", connector=self.name, rule="s2low-receipts")
        if answer.ok:
            raise TransientError(f"connector {self.name!r}: {operation}: S2LOW answered OK but no PDF for "
                                 f"transaction {remote_id} ({answer.text[:100]!r}); asked again later",
                                 connector=self.name, rule="s2low-answer")
        log.info("connector %r: %s of transaction %s not given by S2LOW yet: %s", self.name, operation, remote_id,
                 answer.text)
        return None

    def _files_list(self, remote_id: str) -> list[dict[str, Any]]:
        body = self._get("modules/actes/actes_transac_get_files_list.php", "files_list", transaction=remote_id)
        try:
            listed = json.loads(body)
        except ValueError:
            listed = None
        if not isinstance(listed, list) or not all(isinstance(entry, dict) and "id" in entry for entry in listed):
            raise TransientError(f"connector {self.name!r}: files_list: S2LOW's answer is not the JSON list of "
                                 f"files expected ({body[:80]!r}); asked again later", connector=self.name,
                                 rule="s2low-answer")
        return listed

    def classification(self, siren: str, current: str | None) -> tuple[str, bytes]:
        """Ask S2LOW for a 7-1 (``actes_classification_request``), then give what it holds (a 7-2)."""
        if self.config.siren and siren != self.config.siren:
            raise DocumentError(f"connector {self.name!r}: this S2LOW account is the collectivité "
                                f"{self.config.siren}'s, not {siren}'s", connector=self.name, rule="s2low-siren")
        asked = read_answer(self._get("modules/actes/actes_classification_request.php", "classification_request",
                                      api="1"), connector=self.name, operation="classification_request")
        if not asked.ok:
            log.warning("connector %r: S2LOW did not ask the ministry for the classification: %s", self.name,
                        asked.text)
        data = self._get("modules/actes/actes_classification_fetch.php", "classification_fetch", api="1")
        if not data.lstrip().startswith(b"<"):
            answer = read_answer(data, connector=self.name, operation="classification_fetch")
            raise TransientError(f"connector {self.name!r}: S2LOW gives no classification: {answer.text}",
                                 connector=self.name, rule="s2low-classification")
        return f"{siren}-classification-7-2.xml", data

    # ------------------------------------------------------------ readiness

    def test_connection(self, timeouts: tuple[float, float] | None = None) -> str:
        """``/api/test-connexion.php`` with the certificate and the login: S2LOW's ``OK``."""
        body = self._client().call("GET", "api/test-connexion.php", operation="test-connexion", timeouts=timeouts)
        answer = read_answer(body, connector=self.name, operation="test-connexion")
        if not answer.ok:
            raise TransientAlert(f"connector {self.name!r}: test-connexion: {answer.text}", connector=self.name,
                                 rule="s2low-login")
        return ("OK " + answer.text).strip()

    def reachable(self) -> tuple[bool, str]:
        """test-connexion with the connect timeout as read timeout too: (ready, where or why not)."""
        try:
            said = self.test_connection((self.config.connect_timeout, self.config.connect_timeout))
        except HentError as exc:
            return False, exc.message
        return True, f"{redact_url(self.config.url)} ({said})"


Connector = S2lowOutbound
