"""What the Pastell simulator keeps: entities, ``actes-generique`` documents, and the TdT behind them.

Requests are answered on :class:`simulators.pastell_form.PastellDocument` (the form, its rules
and actions).  ``send-tdt`` hands the document to the simulated tiers de télétransmission, which
builds the ACTES archive (:func:`transformers.actes_out.build_archive`, ISO-8859-1 text refused
rather than transliterated, its *own* classification date) and submits it to the ministry
(:class:`simulators.legality_platform.Platform`, which checks the archive and answers ARActe or an
anomaly).  Like Pastell's ``verif-tdt`` job, the ministry's answer is collected when the document
is next read: ``acquiter-tdt`` with the ``aractes``, ``bordereau``, ``acte_tamponne`` and
``annexes_tamponnees`` files (each stamped file a new PDF showing "Acte reçu en préfecture le <date>
— <IDActe>" and the name of the file it stands for: the TdT's real stamp is written on the PDF it
received), or ``erreur-verif-tdt`` with the TdT's message.  Refusals are raised as
:class:`simulators.pastell_form.PastellError` with the HTTP status and Pastell's wording.

A message of the préfecture (:meth:`PastellStore.followup`) becomes an ``actes-reponse-prefecture``
document, as Pastell's TdT connector files it, and the act's document links to it
(``reponse_prefecture_file``, ``has_reponse_prefecture``).  ``send-reponse-prefecture`` hands the
answer written on it to the TdT, which checks it strictly (a PDF ``reponse``; a refusal only to a 3-1
or 4-1; further documents only with a 3-4; one answer per letter), counts it per act and code, and
``reply_delay`` seconds later (when the document is next read) ``verif-reponse-tdt`` brings the
ministry's ARPieceComplementaire (3-5) or ARReponseRejetLettreObservations (4-5) as
``acquittement_file``; an answer to a courrier simple (2-2) gets none: the document ends ``termine``.
"""

from __future__ import annotations

__all__ = ["PastellStore", "TDT_MAILBOX"]

import io
import itertools
import json
import tarfile
import tempfile
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

from bus.errors import DocumentError, ValidationFailed
from simulators import legality_messages as messages
from simulators.legality_platform import Platform
from simulators.legality_soap import LegalityFault
from simulators.pastell_form import (
    FLOW,
    IN_TDT,
    LIBELLES,
    TYPE_REPONSE,
    Entity,
    PastellDocument,
    PastellError,
    ResponseDocument,
    now,
)
from simulators.pdf import make_pdf
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import build_archive
from transformers.text_policy import TextPolicy

#: the TdT's names towards the ministry and its return address
TDT_QUADRIGRAM, TDT_TRIGRAM, TDT_MAILBOX = "TACT", "PST", "actes@tdt.pastell.test"
_TRUE = ("1", "on", "true", "oui")


class PastellStore:
    """Entities and documents in memory (files in a temporary folder), thread-safe."""

    def __init__(self, platform: Platform, entities: list[Entity], *, ack_delay: float = 0.0,
                 reply_delay: float | None = None) -> None:
        self.platform = platform
        self.entities = {e.id_e: e for e in entities}
        self.ack_delay = ack_delay
        self.reply_delay = ack_delay if reply_delay is None else reply_delay
        #: answers to letters the TdT took, per ``IDActe:code``
        self.answers: Counter[str] = Counter()
        #: the classification date the TdT stamps acts with (ClassificationDateVersion)
        self.tdt_classification_date = platform.classification_date
        self._folder = tempfile.TemporaryDirectory(prefix="hent-pastell-")
        self.folder = Path(self._folder.name)
        self._lock = threading.RLock()
        self._documents: dict[str, PastellDocument] = {}
        self._ids = itertools.count(1)
        self._serials = itertools.count(1)

    def close(self) -> None:
        self._folder.cleanup()

    # -- reading -----------------------------------------------------------------------

    def entity(self, id_e: str) -> Entity:
        found = self.entities.get(id_e)
        if found is None:
            raise PastellError(404, f"L'entité {id_e} n'existe pas")
        return found

    def _document(self, id_e: str, id_d: str) -> PastellDocument:
        self.entity(id_e)
        document = self._documents.get(id_d)
        if document is None or document.id_e != id_e:
            raise PastellError(404, f"Le document {id_d} n'appartient pas à l'entité {id_e}")
        self._collect(document)
        return document

    def detail(self, id_e: str, id_d: str) -> dict[str, Any]:
        with self._lock:
            return self._document(id_e, id_d).detail()

    def search(self, id_e: str, query: dict[str, str]) -> list[dict[str, Any]]:
        """Documents of an entity, newest first, filtered by type, indexed field, state or text."""
        with self._lock:
            self.entity(id_e)
            found = []
            for document in self._documents.values():
                if document.id_e != id_e or query.get("type") not in (None, "", document.flow):
                    continue
                self._collect(document)
                if any(query.get(name) and document.data.get(name) != query[name]
                       for name in ("numero_de_lacte", "type_reponse", "acte_unique_id")):
                    continue
                if query.get("lastetat") and document.last != query["lastetat"]:
                    continue
                if query.get("search") and query["search"].lower() not in document.title().lower():
                    continue
                found.append(document)
            found.sort(key=lambda d: (d.actions[-1]["date"], int(d.id_d, 36)), reverse=True)
            offset, limit = int(query.get("offset") or 0), int(query.get("limit") or 100)
            return [d.row() for d in found[offset:offset + limit]]

    def file(self, id_e: str, id_d: str, name: str, num: int) -> tuple[str, bytes]:
        with self._lock:
            files = self._document(id_e, id_d).files.get(name, [])
            stored = files[num] if 0 <= num < len(files) else None
            if stored is None:
                raise PastellError(404, "Ce fichier n'existe pas")
            return stored.name, stored.path.read_bytes()

    def type_pieces(self, id_e: str, id_d: str, field: str) -> dict[str, Any]:
        with self._lock:
            document = self._typed(id_e, id_d, field)
            pieces = document.pieces()
            if not pieces:
                raise PastellError(400, "La pièce principale n'est pas présente")
            return {"actes_type_pj_list": {code: code for code in sorted(self._type_codes(document))},
                    "pieces": pieces}

    def _typed(self, id_e: str, id_d: str, field: str) -> PastellDocument:
        document = self._document(id_e, id_d)
        if field != document.typology_field():
            raise PastellError(400, f"Type {field} introuvable")
        return document

    def _type_codes(self, document: PastellDocument) -> set[str]:
        return set(self.platform.classification.type_codes_for(int(document.data.get("acte_nature") or 0)))

    def answer_counts(self) -> dict[str, int]:
        """Answers to letters the TdT took, per ``IDActe:code``."""
        with self._lock:
            return dict(self.answers)

    def act_counts(self) -> dict[str, int]:
        """Pastell documents per act (SIREN:NUMERO:DATE), once their number and date are set."""
        counts: dict[str, int] = {}
        with self._lock:
            for document in self._documents.values():
                if document.flow != FLOW:
                    continue
                numero, day = document.data.get("numero_de_lacte"), document.data.get("date_de_lacte")
                if numero and day:
                    key = f"{self.entities[document.id_e].siren}:{numero}:{day}"
                    counts[key] = counts.get(key, 0) + 1
        return counts

    # -- writing -------------------------------------------------------------------------

    def create(self, id_e: str, flow: str) -> dict[str, Any]:
        with self._lock:
            self.entity(id_e)
            if flow != FLOW:
                raise PastellError(400, f"Le type {flow} n'existe pas sur cette plateforme")
            created = now()
            id_d = self._new_id()
            document = PastellDocument(id_d, id_e, created, created)
            document.act("creation", "Création du document")
            self._documents[id_d] = document
            return {**document.detail(), "id_d": id_d}

    def _new_id(self) -> str:
        return _base36(next(self._ids) * 7919 + 1_000_000)

    def modify(self, id_e: str, id_d: str, form: dict[str, str]) -> dict[str, Any]:
        """PATCH: the fields the form knows are set (others ignored, as Pastell does)."""
        with self._lock:
            document = self._editable(id_e, id_d)
            for name, value in form.items():
                rule = document.form.get(name)
                if rule is None or rule.kind == "file" or name == "type_piece":
                    continue
                document.data[name] = ("1" if value.strip().lower() in _TRUE else "0") if rule.kind == "checkbox" \
                    else value
            return self._modified(document, "Modification du document")

    def add_file(self, id_e: str, id_d: str, name: str, num: int, file_name: str, content: bytes) -> dict[str, Any]:
        with self._lock:
            document = self._editable(id_e, id_d)
            rule = document.form.get(name)
            if rule is None or rule.kind != "file":
                raise PastellError(400, f"Le champ {name} n'est pas un fichier de ce document")
            if not file_name:
                raise PastellError(400, "Le nom du fichier (file_name) est obligatoire")
            document.put(self.folder, name, file_name, content, num if rule.multiple else 0)
            return self._modified(document, f"Ajout du fichier {Path(file_name).name}")

    def set_type_piece(self, id_e: str, id_d: str, field: str, codes: list[str]) -> dict[str, Any]:
        with self._lock:
            document = self._typed(id_e, id_d, field)
            if not document.editable():
                raise PastellError(403, f"L'action « modification »  n'est pas permise : last-action ({document.last})")
            pieces = document.pieces()
            if not document.names(document.main_field):
                raise PastellError(400, "La pièce principale n'est pas présente")
            if not codes:
                raise PastellError(400, "Aucun type_pj fourni")
            if len(codes) != len(pieces):
                raise PastellError(400, f"{len(codes)} type(s) de pièce pour {len(pieces)} pièce(s)")
            if isinstance(document, ResponseDocument):
                unknown = sorted(set(codes) - self._type_codes(document))
                if unknown:
                    raise PastellError(400, f"Le type de pièce {unknown[0]} n'existe pas pour la nature "
                                            f"{document.data.get('acte_nature')}")
                suffix = f"_{document.libelle}"
                document.data[f"type_piece{suffix}"] = f"{len(codes)} fichier(s) typé(s)"
                document.data[f"type_acte{suffix}"] = codes[0]
                document.data[f"type_pj{suffix}"] = json.dumps(codes[1:])
                return self._modified(document, "Modification de la typologie des pièces")
            document.data["type_piece"] = f"{len(codes)} fichier(s) typé(s)"
            document.data["type_acte"] = codes[0]
            document.data["type_pj"] = json.dumps(codes[1:])
            return {**self._modified(document, "Modification de la typologie des pièces")["content"], "result": "ok"}

    def _editable(self, id_e: str, id_d: str) -> PastellDocument:
        document = self._document(id_e, id_d)
        if not document.editable():
            raise PastellError(403, f"L'action « modification »  n'est pas permise : last-action "
                                    f"({document.last})")
        return document

    def _modified(self, document: PastellDocument, message: str) -> dict[str, Any]:
        document.modified = now()
        document.act("modification", message)
        problem = document.problem()
        return {"result": "ok", "formulaire_ok": 0 if problem else 1, "message": problem or "",
                "content": document.detail()}

    # -- actions ------------------------------------------------------------------------

    def action(self, id_e: str, id_d: str, name: str) -> dict[str, Any]:
        with self._lock:
            document = self._document(id_e, id_d)
            if name not in document.possible():
                raise PastellError(400, f"L'action « {name} »  n'est pas permise : {document.why_not(name)}")
            if isinstance(document, ResponseDocument):
                return self._response_action(document, name)
            if name == "send-tdt":
                return self._transmit(document)
            if name == "annulation-tdt":
                return self._cancel(document)
            if name == "verif-tdt":
                return {"result": True, "message": f"La transaction a comme statut : {document.last}"}
            if name == "supression":
                del self._documents[id_d]
                return {"result": True, "message": "Le document a été supprimé"}
            return {"result": True, "message": "Aucun nouveau message de la préfecture"}

    def _transmit(self, document: PastellDocument) -> dict[str, Any]:
        """``send-tdt``: the TdT builds the archive and posts it; refused → ``send-tdt-erreur`` and 400."""
        entity = self.entities[document.id_e]
        try:
            act = self._act_of(document, entity)
            out = io.BytesIO()
            today = date.today()
            transmission = build_archive(
                act, out, quadrigram=TDT_QUADRIGRAM, trigram=TDT_TRIGRAM, serial=next(self._serials) % 9999 + 1,
                generation_date=today, today=today, text_policy=TextPolicy.FAIL, validator=self.platform.validator,
            )
            transaction = self.platform.submit(transmission.archive_name, f"pastell:{document.id_d}",
                                               transmission.id_acte, out.getvalue())
        except (ValidationFailed, DocumentError, LegalityFault, ValueError) as exc:
            problems = getattr(exc, "problems", None)
            said = "; ".join(f"{p.field}: {p.message}" for p in problems) if problems else str(
                getattr(exc, "message", exc))
            message = f"Erreur lors de l'envoi au TdT : {said}"
            document.act("send-tdt-erreur", message)
            raise PastellError(400, message) from exc
        document.data["tedetis_transaction_id"] = transaction.transaction_id
        document.data["date_tdt_postage"] = date.today().isoformat()
        document.act("send-tdt", "Le document a été envoyé au contrôle de légalité")
        return {"result": True, "message": "Le document a été envoyé au contrôle de légalité"}

    def _act_of(self, document: PastellDocument, entity: Entity) -> CanonicalAct:
        data = document.data
        code = data.get("classification", "").split(" ")[0]
        main = [f for f in document.files.get("arrete", []) if f is not None]
        annexes = [f for f in document.files.get("autre_document_attache", []) if f is not None]
        types = json.loads(data.get("type_pj") or "[]")
        types += [None] * (len(annexes) - len(types))
        return CanonicalAct(
            siren=entity.siren, departement=entity.departement, arrondissement=entity.arrondissement,
            collectivite_nature=entity.nature, decision_date=date.fromisoformat(data["date_de_lacte"]),
            numero_interne=data["numero_de_lacte"], nature=int(data["acte_nature"]),
            matieres=tuple(int(part) for part in code.split(".")), objet=data["objet"],
            classification_date=self.tdt_classification_date,
            main_document=ActFile(main[0].name, main[0].path, data.get("type_acte") or None),
            annexes=tuple(ActFile(f.name, f.path, t) for f, t in zip(annexes, types, strict=True)),
            document_papier=data.get("document_papier") == "1", return_emails=(TDT_MAILBOX,),
        )

    def _cancel(self, document: PastellDocument) -> dict[str, Any]:
        try:
            self.platform.cancel(document.data["tedetis_transaction_id"], document.data["acte_unique_id"])
        except LegalityFault as exc:
            raise PastellError(400, f"Erreur lors de l'annulation : {exc.message}") from exc
        document.data["has_annulation"] = "1"
        document.data["tedetis_annulation_id"] = f"{document.data['tedetis_transaction_id']}-A"
        document.cancel_due = time.monotonic() + self.ack_delay
        document.act("annulation-tdt", "Une notification d'annulation a été envoyée au contrôle de légalité")
        return {"result": True, "message": "Une notification d'annulation a été envoyée au contrôle de légalité"}

    def _collect(self, document: PastellDocument) -> None:
        """What Pastell's ``verif-tdt``, ``verif-annulation-tdt`` and ``verif-reponse-tdt`` jobs would have
        found by now."""
        if isinstance(document, ResponseDocument):
            self._collect_answer(document)
        elif document.last in IN_TDT and "tedetis_transaction_id" in document.data:
            transaction = self.platform.transaction(document.data["tedetis_transaction_id"])
            status = self.platform.status(document.data["tedetis_transaction_id"])
            if transaction is None or status == "TRANSMITTED":
                return
            if status == "REJECTED":
                document.act("erreur-verif-tdt", f"Transaction en erreur sur le TdT : {transaction.detail}")
                return
            numero = document.data["numero_de_lacte"]
            document.put(self.folder, "aractes", f"{numero}-ar-actes.xml", transaction.message)
            document.put(self.folder, "bordereau", f"{numero}-bordereau-tdt.pdf", make_pdf([
                "Bordereau d'acquittement (simulateur Pastell de Hent)", f"Acte {transaction.id_acte}",
                f"Date de réception : {transaction.date_reception:%d/%m/%Y}"]))
            stamp = f"Acte reçu en préfecture le {transaction.date_reception:%d/%m/%Y} — {transaction.id_acte}"
            stamped = [("acte_tamponne", 0, document.names("arrete")[0])]
            stamped += [("annexes_tamponnees", num, annex)
                        for num, annex in enumerate(document.names("autre_document_attache"))]
            for field, num, name in stamped:
                document.put(self.folder, field, f"{Path(name).stem}-tampon.pdf", make_pdf([stamp, name]), num)
            document.data.update({"has_bordereau": "1", "acte_unique_id": transaction.id_acte or "",
                                  "date_ar": transaction.date_reception.isoformat()})
            document.act("acquiter-tdt", "L'acte a été acquitté par le contrôle de légalité")
        elif document.last == "annulation-tdt" and document.cancel_due is not None \
                and time.monotonic() >= document.cancel_due:
            document.act("annuler-tdt", "Transaction annulée")

    # -- the préfecture's and the TdT's side --------------------------------------------------

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture writes about an acknowledged act: the TdT files the message (the ministry's package)
        as an actes-reponse-prefecture document of the act's entity, and links the act to it."""
        kind = TYPE_REPONSE.get(code)
        if kind is None:
            raise ValueError(f"Pastell files no {code} message as a document; one of {', '.join(TYPE_REPONSE)}")
        with self._lock:
            for document in self._documents.values():
                self._collect(document)
            found = [d for d in self._documents.values() if d.flow == FLOW and d.data.get("acte_unique_id") == id_acte]
            if not found:
                raise KeyError(f"no document acknowledged with IDActe {id_acte}")
            act, libelle = found[-1], LIBELLES[kind]
            entity = self.entities[act.id_e]
            message = self.platform.followup(id_acte, code)
            envelope = (f"{TDT_QUADRIGRAM}--SPREF{entity.departement}{entity.arrondissement}-{entity.siren}-"
                        f"{message.day:%Y%m%d}-{next(self._serials)}.xml")
            files = {envelope: messages.enveloppe_misillcl(entity.departement, entity.siren, [message.name],
                                                           arrondissement=entity.arrondissement),
                     message.name: message.content, **message.attachments}
            created = now()
            letter = ResponseDocument(self._new_id(), act.id_e, created, created, id_acte=id_acte,
                                      letter_day=message.day)
            letter.act("creation", "Création du document")
            letter.data.update({
                "acte_nature": act.data.get("acte_nature", ""), "numero_de_lacte": act.data.get("numero_de_lacte", ""),
                "type_reponse": kind, "related_transaction_id": act.data.get("tedetis_transaction_id", ""),
                "transaction_id": message.message_id, "last_status_id": "7", f"has_{libelle}": "1", "date": created,
                "url_acte": f"/Document/detail?id_d={act.id_d}&id_e={act.id_e}",
            })
            letter.put(self.folder, "reponse_prefecture", f"{libelle}.tar.gz", _package(files))
            for num, name in enumerate(sorted(files)):
                letter.put(self.folder, "reponse_prefecture_unzip", name, files[name], num)
            waits = kind != "5"
            letter.act("attente-reponse-prefecture" if waits else "termine", "Attente d'une réponse" if waits
                       else "Ce type de réponse de la préfecture ne prévoit pas de retour")
            self._documents[letter.id_d] = letter
            linked = act.files.get("reponse_prefecture_file") or [None]
            links = json.loads(linked[0].path.read_bytes()) if linked[0] is not None else {}
            links[kind] = f"/Document/detail?id_d={letter.id_d}&id_e={act.id_e}"  # one link per type, as Pastell
            act.put(self.folder, "reponse_prefecture_file", "reponse_prefecture.json", json.dumps(links).encode())
            act.data["has_reponse_prefecture"] = "1"
            return {"message_id": message.message_id, "code": code, "name": message.name, "id_d": letter.id_d,
                    "acte_id_d": act.id_d}

    def _response_action(self, document: ResponseDocument, name: str) -> dict[str, Any]:
        if name == "repondre":  # ActeReponsePrefectureRepondre: sets the box, writes no action
            document.data["repondre"] = "1"
            return {"result": True, "message": "Réponse à la préfecture en cours de rédaction"}
        if name == "send-reponse-prefecture":
            return self._send_answer(document)
        if name == "supression":
            del self._documents[document.id_d]
            return {"result": True, "message": "Le document a été supprimé"}
        return {"result": True, "message": f"La transaction a comme statut : {document.last}"}

    def _send_answer(self, document: ResponseDocument) -> dict[str, Any]:
        """``send-reponse-prefecture``: the TdT checks the answer and posts it (400 with its words if not)."""
        kind, refusal = document.data.get("type_reponse", ""), document.data.get("refus_reponse") == "1"
        main = [f for f in document.files.get("reponse", []) if f is not None]
        further = [f for f in document.files.get("reponse_pj_demande_piece_complementaire", []) if f is not None]

        def refuse(why: str) -> PastellError:
            return PastellError(400, f"Erreur lors de la transmission, le TdT a répondu : KO {why}")

        not_pdf = [f.name for f in main[:1] + (further if kind == "3" else [])
                   if f.path.read_bytes()[:5] != b"%PDF-"]
        if not_pdf:
            raise refuse(f"{not_pdf[0]} n'est pas un fichier PDF")
        if refusal and kind not in ("3", "4"):
            raise refuse("un refus ne répond qu'à une demande de pièces complémentaires ou à une lettre "
                         "d'observations")
        if further and (kind != "3" or refusal):
            raise refuse("des pièces complémentaires ne se joignent qu'à la réponse à une demande de pièces "
                         "complémentaires")
        if document.answer_code is not None:
            raise refuse("une réponse a déjà été envoyée pour ce courrier")
        code = {"2": "2-2", "3": "3-3" if refusal else "3-4", "4": "4-3" if refusal else "4-4"}[kind]
        self.answers[f"{document.id_acte}:{code}"] += 1
        document.answer_code, document.answer_due = code, time.monotonic() + self.reply_delay
        document.data["response_transaction_id"] = f"{document.data.get('transaction_id', document.id_d)}-R"
        document.act("send-reponse-prefecture", "Réponse envoyée à la préfecture")
        return {"result": True, "message": "Réponse envoyée à la préfecture"}

    def _collect_answer(self, document: ResponseDocument) -> None:
        """``verif-reponse-tdt``: the ministry's 3-5 or 4-5 once due; a 2-2 gets none (``termine``)."""
        due = document.answer_due
        if document.last != "send-reponse-prefecture" or due is None or time.monotonic() < due:
            return
        code = document.answer_code or ""
        if code not in messages.RESPONSE_ACKS:
            document.act("termine", "Ce type de réponse de la préfécture ne prévoit pas d'acquittement")
            return
        today = date.today()
        content = messages.ar_reponse(code, document.id_acte, document.letter_day or today, today)
        name = f"{document.data.get('numero_de_lacte', document.id_d)}-ar-{document.libelle}.xml"
        document.put(self.folder, "acquittement_file", name, content)
        document.data["has_acquittement"] = "1"
        document.act("verif-reponse-tdt", f"Réception d'un message ({document.libelle}) de la préfecture")

    def tdt_classification(self) -> tuple[str, bytes]:
        """The 7-2 the TdT connector keeps (``classification_file``), dated as the TdT knows it."""
        content = messages.retour_classification(self.platform.classification_bytes, self.tdt_classification_date)
        return "classification.xml", content


def _package(files: dict[str, bytes]) -> bytes:
    """A flat tar.gz of ``files``, as the ministry sends its messages."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(content), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"

