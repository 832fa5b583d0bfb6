"""Pastell's ``actes-reponse-prefecture`` flow: the préfecture's messages about an act, and the answers to them.

When the préfecture writes about an act (2-1 courrier simple, 3-1 demande de pièces
complémentaires, 4-1 lettre d'observations, 5-1 déféré), Pastell's TdT connector files each
message as a document of its own, of type ``actes-reponse-prefecture``, in the act's entity:
read-only ``type_reponse`` (2, 3, 4, 5), ``numero_de_lacte``, ``related_transaction_id`` (the act's
TdT transaction), the ministry's package as ``reponse_prefecture`` (.tar.gz) and its files as
``reponse_prefecture_unzip``; its last action is ``attente-reponse-prefecture`` when an answer is
expected (``termine`` for a déféré).  The act's document links to them through the file
``reponse_prefecture_file`` (JSON: type → ``/Document/detail?id_d=…``, one link per type).

:meth:`PastellAnswers.messages` gives each such document once, by its ``id_d`` (the message's id,
which an answer names as ``letter_id``): the documents linked from the act, and those of the same
number whose ``related_transaction_id`` is the act's (a second letter of a type replaces the first's
link).  The package is handed as it came (the runtime opens it); without one, the unpacked files.

:meth:`PastellAnswers.send` answers a letter on its document (``hent-canonical-response/1``): the
action ``repondre``, ``refus_reponse`` (1 for 3-3 and 4-3, 0 for 3-4 and 4-4), the first document
as ``reponse`` (PDF), the further ones of a 3-4 as ``reponse_pj_demande_piece_complementaire``, the
typology ``type_piece_<courrier_simple|demande_piece_complementaire|lettre_observation>`` (``typology``,
default ``99_<nature of the act>``), then ``send-reponse-prefecture`` → SENT with the document's
``id_d``.  Nothing is sent twice: a document already sent (``send-reponse-prefecture`` and after, or a
``response_transaction_id``) is followed; a draft (``attente-reponse-prefecture``, ``modification``)
is resumed; a lost answer to ``send-reponse-prefecture`` is followed by a look at the document.
3-2 and 4-2 (acknowledgments of receipt of a letter) are not posted: Pastell's flow only takes an
answer with its PDF (its TdT posts ``type_envoie`` 3 or 4), and the TdT acknowledges a letter's
receipt itself: such an answer ends DELIVERED at once, with that said.

:meth:`PastellAnswers.status`: ``has_acquittement`` → ACKNOWLEDGED with ``acquittement_file`` (the
ministry's 3-5 or 4-5) as message; a 2-2 (the ministry acknowledges none), or ``termine`` →
ACKNOWLEDGED without message once sent; ``tdt-error``, ``erreur-verif-tdt``, ``fatal-error`` →
REJECTED with Pastell's words; else IN_TRANSIT with the action in ``detail``.
"""

from __future__ import annotations

__all__ = ["LIBELLES", "NOT_POSTED", "TYPE_REPONSE", "PastellAnswerFields", "PastellAnswerOptions", "PastellAnswers"]

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bus.connector import Artifact, RemoteMessage, RemoteStatus, SendResult
from bus.errors import DocumentError, HentError, TransientError
from connectors._pastell_common import (
    UNKNOWN_OUTCOME,
    MultipartFile,
    NotFound,
    PastellClient,
    data_of,
    last_action,
    truthy,
)

log = logging.getLogger(__name__)

#: the answer's code → the type_reponse of the letter it answers
TYPE_REPONSE = {"2-2": "2", "3-2": "3", "3-3": "3", "3-4": "3", "4-2": "4", "4-3": "4", "4-4": "4"}
#: type_reponse → the name Pastell gives that kind of message in its fields
LIBELLES = {"2": "courrier_simple", "3": "demande_piece_complementaire", "4": "lettre_observation",
            "5": "defere_tribunal_administratif"}
#: acknowledgments of receipt of a letter: Pastell's TdT sends them itself
NOT_POSTED = ("3-2", "4-2")
_REFUSALS = ("3-3", "4-3")
#: the answer may still be written and sent
_DRAFTS = ("attente-reponse-prefecture", "modification")
_REJECTED = ("tdt-error", "erreur-verif-tdt", "fatal-error")
#: sent (answered or not): followed, never sent again
_SENT = ("send-reponse-prefecture", "verif-reponse-tdt", "termine", *_REJECTED)
_FORMAT = "hent-canonical-response/1"
_LINKED = re.compile(r"id_d=([^&\s]+)")
_PACKAGES = (".tar.gz", ".tgz")


class PastellAnswerFields(BaseModel):
    """Names of the actes-reponse-prefecture fields (and of the act's link to them)."""

    model_config = ConfigDict(extra="forbid")

    reponse_prefecture_file: str = Field("reponse_prefecture_file",
                                         description="On the act's document: its links to the messages (file).")
    type_reponse: str = Field("type_reponse", description="The message's type (2, 3, 4, 5).")
    related_transaction_id: str = Field("related_transaction_id", description="The act's TdT transaction.")
    reponse_prefecture: str = Field("reponse_prefecture", description="The ministry's package (file).")
    reponse_prefecture_unzip: str = Field("reponse_prefecture_unzip", description="Its files, unpacked.")
    repondre: str = Field("repondre", description="Set by the reply action: an answer is being written.")
    reponse: str = Field("reponse", description="The answer (PDF; for 3-x the first document).")
    reponse_pj: str = Field("reponse_pj_demande_piece_complementaire",
                            description="The further documents of a 3-4 (files).")
    refus_reponse: str = Field("refus_reponse", description="The answer is a refusal, 3-3 or 4-3 (checkbox).")
    type_piece_courrier_simple: str = Field("type_piece_courrier_simple",
                                            description="Typology of an answer to a 2-1 (external data).")
    type_piece_demande_piece_complementaire: str = Field(
        "type_piece_demande_piece_complementaire", description="Typology of an answer to a 3-1 (external data).")
    type_piece_lettre_observation: str = Field("type_piece_lettre_observation",
                                               description="Typology of an answer to a 4-1 (external data).")
    response_transaction_id: str = Field("response_transaction_id",
                                         description="The answer's TdT transaction, once sent.")
    has_acquittement: str = Field("has_acquittement", description="The ministry acknowledged the answer.")
    acquittement_file: str = Field("acquittement_file", description="The ministry's 3-5 or 4-5 (file).")


class PastellAnswerOptions(BaseModel):
    """The flow that holds the préfecture's messages, and how an answer is sent on it."""

    model_config = ConfigDict(extra="forbid")

    flow: str = Field("actes-reponse-prefecture", min_length=1, description="Document type of the messages.")
    reply_action: str = Field("repondre", min_length=1, description="Action that opens the answer's form.")
    send_action: str = Field("send-reponse-prefecture", min_length=1,
                             description="Action that sends the answer to the préfecture.")
    typology: str | None = Field(None, pattern=r"^[0-9A-Z_]{5}$",
                                 description="Typology of an answer's documents; default 99_<nature of the act>.")
    fields: PastellAnswerFields = Field(default_factory=lambda: PastellAnswerFields(),
                                        description="Field names of the flow.")


class PastellAnswers:
    """The préfecture's messages and the answers to them, for one connector (its client and entity)."""

    def __init__(self, connector: str, options: PastellAnswerOptions, entity: str, http: Callable[[], PastellClient],
                 *, numero_field: str, transaction_field: str) -> None:
        self.name, self.options, self.entity, self._http = connector, options, entity, http
        self.numero_field, self.transaction_field = numero_field, transaction_field

    def _path(self, id_d: str) -> str:
        return f"entite/{self.entity}/document/{id_d}"

    def is_answer(self, detail: dict[str, Any]) -> bool:
        """True for a document of the messages' flow (by its type, else by its type_reponse)."""
        info = detail.get("info")
        flow = info.get("type") if isinstance(info, dict) else None
        return flow == self.options.flow if flow else self.options.fields.type_reponse in data_of(detail)

    # ------------------------------------------------------------ the préfecture's messages

    def messages(self, remote_id: str, act: dict[str, Any], known: set[str]) -> list[RemoteMessage]:
        """The messages about the act ``remote_id`` (its detail ``act``), but those in ``known``."""
        data = data_of(act)
        linked = self._linked(remote_id, data)
        searched = [id_d for id_d in self._searched(data) if id_d not in linked]
        result = []
        for id_d in [*linked, *searched]:
            if id_d in known or any(key.startswith(f"{id_d}/") for key in known):
                continue
            try:
                detail = self._http().document(self.entity, id_d)
            except NotFound:
                log.warning("connector %r: act %s links to Pastell document %s, which is gone", self.name,
                            remote_id, id_d)
                continue
            related = data_of(detail).get(self.options.fields.related_transaction_id)
            if id_d in searched and not (related and str(related) == str(data.get(self.transaction_field) or "")):
                continue  # a message about another act of the same number
            message = self._message(remote_id, id_d)
            if message is not None:
                result.append(message)
        return result

    def _linked(self, remote_id: str, data: dict[str, Any]) -> list[str]:
        field = self.options.fields.reponse_prefecture_file
        if not data.get(field):
            return []
        files = self._http().files(self.entity, remote_id, field, limit=1)
        try:
            links = json.loads(files[0][1]) if files else {}
        except (ValueError, RecursionError):  # RecursionError: [[[[... (tests/hostile)
            links = {}
        values = links.values() if isinstance(links, dict) else links if isinstance(links, list) else []
        found = [m.group(1) for value in values if (m := _LINKED.search(str(value)))]
        return list(dict.fromkeys(found))

    def _searched(self, data: dict[str, Any]) -> list[str]:
        numero = data.get(self.numero_field)
        if not numero:
            return []
        rows = self._http().json("GET", f"entite/{self.entity}/document", operation="listDocuments", params={
            "type": self.options.flow, self.numero_field: numero, "limit": 100})
        found = [row.get("id_d") or (row.get("info") or {}).get("id_d") for row in rows if isinstance(row, dict)] \
            if isinstance(rows, list) else []
        return list(dict.fromkeys(str(id_d) for id_d in found if id_d))

    def _message(self, remote_id: str, id_d: str) -> RemoteMessage | None:
        f, http = self.options.fields, self._http()
        package = http.files(self.entity, id_d, f.reponse_prefecture, limit=1)
        if package:
            name, content = package[0]
            if content[:2] == b"\x1f\x8b" and not name.lower().endswith(_PACKAGES):
                name += ".tar.gz"
            return RemoteMessage(remote_id, id_d, name, content)
        files = http.files(self.entity, id_d, f.reponse_prefecture_unzip)
        xml = [(n, d) for n, d in files if n.lower().endswith(".xml") and "--" not in n]  # "--": an envelope
        if not xml:
            log.warning("connector %r: Pastell document %s holds no message of the préfecture", self.name, id_d)
            return None
        attachments = {n: d for n, d in files if not n.lower().endswith(".xml")}
        return RemoteMessage(remote_id, id_d, xml[0][0], xml[0][1], attachments)

    # ------------------------------------------------------------ answers

    def send(self, artifact: Artifact) -> SendResult:
        answer = self._read(artifact)
        code, letter = answer["code"], str(answer["letter_id"]).split("/", 1)[0]
        what = f"answer {code} of act {answer.get('id_acte')} to the letter {letter}"
        if code in NOT_POSTED:
            return SendResult("DELIVERED", remote_id=letter, detail=(
                f"{what} not posted: Pastell's TdT acknowledges the receipt of a letter itself, and "
                f"{self.options.flow} only takes an answer with its PDF"))
        detail = self._letter(letter, code, artifact, what)
        action, data = last_action(detail)[0], data_of(detail)
        f = self.options.fields
        if action in _SENT or data.get(f.response_transaction_id) or truthy(data.get(f.has_acquittement)):
            return SendResult("SENT", remote_id=letter, detail=f"already answered in Pastell ({action})")
        if action not in _DRAFTS:
            raise DocumentError(f"connector {self.name!r}: Pastell document {letter} is at {action!r}, where it takes "
                                f"no answer: the {what} is not sent; look at it in Pastell", connector=self.name,
                                path=artifact.name, field="letter_id", rule="pastell-letter")
        if not truthy(data.get(f.repondre)):
            action = self.options.reply_action
            self._http().json("POST", f"{self._path(letter)}/action/{action}", operation=f"action {action}")
        self._fill(letter, answer, artifact)
        return self._trigger(letter, artifact, what)

    def _read(self, artifact: Artifact) -> dict[str, Any]:
        """The canonical answer, checked against what Pastell's flow takes (before any call)."""
        try:
            found = json.loads(artifact.path.read_bytes())
        except OSError as exc:
            raise TransientError(f"connector {self.name!r}: cannot read {artifact.name} from the spool "
                                 f"({exc.strerror or exc}); retried later", connector=self.name,
                                 path=str(artifact.path), rule="spool-read") from exc
        except ValueError:
            found = None

        def refuse(field: str, rule: str, message: str) -> DocumentError:
            return DocumentError(f"connector {self.name!r}: {artifact.name}: {message}", connector=self.name,
                                 path=artifact.name, field=field, rule=rule)

        if not isinstance(found, dict) or found.get("format") != _FORMAT or artifact.blob is None:
            raise refuse("format", "pastell-canonical", f"not a {_FORMAT} document with its files: replay its "
                         "document so that it is prepared again")
        code = str(found.get("code"))
        if code not in TYPE_REPONSE:
            raise refuse("code", "pastell-canonical", f"{code!r} is not an answer to a letter "
                         f"({', '.join(TYPE_REPONSE)})")
        if not str(found.get("letter_id") or "").strip():
            raise refuse("letter_id", "pastell-letter", "the answer names no letter of the préfecture")
        documents = found.get("documents") or []
        if code in NOT_POSTED:
            return found
        if not documents or not all(isinstance(d, dict) and d.get("sha256") for d in documents):
            raise refuse("documents", "pastell-canonical", "the answer's documents are not named by sha256 in the "
                         "spool")
        if len(documents) > 1 and code != "3-4":
            raise refuse("documents", "pastell-answer-documents", f"Pastell takes one document for a {code} "
                         f"(further documents only with a 3-4), not {len(documents)}")
        names = [str(d.get("source_name") or d.get("name") or "") for d in documents]
        if not all(name.lower().endswith(".pdf") for name in names):
            raise refuse("documents", "pastell-answer-pdf", f"Pastell takes PDF answers only, not "
                         f"{', '.join(n for n in names if not n.lower().endswith('.pdf'))}")
        return found

    def _letter(self, id_d: str, code: str, artifact: Artifact, what: str) -> dict[str, Any]:
        """The letter's document, checked to be a message of the kind ``code`` answers."""
        def refuse(message: str) -> DocumentError:
            return DocumentError(f"connector {self.name!r}: the {what} is not sent: {message}", connector=self.name,
                                 path=artifact.name, field="letter_id", rule="pastell-letter")

        try:
            detail = self._http().document(self.entity, id_d)
        except NotFound as exc:
            raise refuse(f"entity {self.entity} holds no document {id_d} ({exc.message}); answer a letter "
                         "received through this Pastell") from exc
        if not self.is_answer(detail):
            raise refuse(f"Pastell document {id_d} is not a message of the préfecture ({self.options.flow})")
        kind = str(data_of(detail).get(self.options.fields.type_reponse) or "")
        if kind != TYPE_REPONSE[code]:
            raise refuse(f"Pastell document {id_d} is a message of type {kind or '?'}, which a {code} does not "
                         f"answer (type {TYPE_REPONSE[code]})")
        return detail

    def _fill(self, id_d: str, answer: dict[str, Any], artifact: Artifact) -> None:
        """The refusal box, the documents (each in its slot: an upload made again replaces itself), the typology."""
        f, http, path, code = self.options.fields, self._http(), self._path(id_d), answer["code"]
        kind = TYPE_REPONSE[code]
        if kind in ("3", "4"):
            http.json("PATCH", path, operation="modifyDocument",
                      data={f.refus_reponse: "1" if code in _REFUSALS else "0"})
        documents = list(answer["documents"])
        pieces = [(f.reponse, 0, documents[0])] + [(f.reponse_pj, n, d) for n, d in enumerate(documents[1:])]
        assert artifact.blob is not None
        for field, num, described in pieces:
            name, blob = str(described.get("source_name") or described.get("name")), artifact.blob(described["sha256"])
            if not blob.is_file():
                raise TransientError(f"connector {self.name!r}: {name} ({described['sha256'][:12]}…) is not in the "
                                     "spool; retried later", connector=self.name, path=str(blob), rule="spool-read")

            def upload(name: str = name, blob: Any = blob) -> MultipartFile:
                return MultipartFile({"file_name": name}, "file_content", name, blob)

            http.json("POST", f"{path}/file/{field}/{num}", operation="postDocumentFile", upload=upload)
        typology = self.options.typology or f"99_{str(answer.get('id_acte') or '').rsplit('-', 1)[-1]}"
        field = {"2": f.type_piece_courrier_simple, "3": f.type_piece_demande_piece_complementaire,
                 "4": f.type_piece_lettre_observation}[kind]
        typed = http.call("PATCH", f"{path}/externalData/{field}", operation="patchDocumentExternalData",
                          data=[("type_pj[]", typology) for _ in pieces])
        try:
            said = typed.json()
        except (ValueError, RecursionError):
            said = None
        if isinstance(said, dict) and str(said.get("formulaire_ok", "1")) == "0":
            raise DocumentError(f"connector {self.name!r}: Pastell finds the answer in document {id_d} invalid "
                                f"({said.get('message') or 'the form is incomplete'}); fix the answer, then replay "
                                "it: this draft is resumed", connector=self.name, path=artifact.name,
                                rule="pastell-form")

    def _trigger(self, id_d: str, artifact: Artifact, what: str) -> SendResult:
        action = self.options.send_action
        try:
            self._http().json("POST", f"{self._path(id_d)}/action/{action}", operation=f"action {action}")
        except DocumentError as refused:
            raise DocumentError(f"{refused.message}; the {what} stays a draft in Pastell document {id_d}: a replay "
                                "resumes it", connector=self.name, path=artifact.name, field=refused.field,
                                rule=refused.rule) from refused
        except TransientError as failure:
            if failure.rule not in UNKNOWN_OUTCOME:
                raise
            try:
                detail = self._http().document(self.entity, id_d)
            except HentError:
                raise failure from None
            now = last_action(detail)[0]
            if now in _DRAFTS and not data_of(detail).get(self.options.fields.response_transaction_id):
                raise
            return SendResult("SENT", remote_id=id_d, detail=f"sent to the préfecture though Pastell's answer was "
                                                              f"lost ({now})")
        return SendResult("SENT", remote_id=id_d)

    def status(self, id_d: str, detail: dict[str, Any]) -> RemoteStatus:
        """Where the answer written on document ``id_d`` is (see the module's docstring)."""
        f, data = self.options.fields, data_of(detail)
        action, message = last_action(detail)
        said = f"{action}: {message}" if message else action
        if truthy(data.get(f.has_acquittement)) or data.get(f.acquittement_file):
            files = self._http().files(self.entity, id_d, f.acquittement_file, limit=1)
            if files:
                return RemoteStatus(id_d, "ACKNOWLEDGED", message=files[0][1], message_name=files[0][0], detail=said)
        if action in _REJECTED:
            return RemoteStatus(id_d, "REJECTED", detail=said)
        if action == "termine":
            return RemoteStatus(id_d, "ACKNOWLEDGED", detail=said)
        sent = action in _SENT or bool(data.get(f.response_transaction_id))
        if sent and str(data.get(f.type_reponse) or "") == "2":  # a 2-2: the ministry acknowledges none
            return RemoteStatus(id_d, "ACKNOWLEDGED", detail=f"{said} (no acknowledgment of a 2-2)")
        return RemoteStatus(id_d, "IN_TRANSIT", detail=said)
