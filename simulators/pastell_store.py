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
from datetime import date
from pathlib import Path
from typing import Any

from bus.errors import DocumentError, ValidationFailed
from simulators import legality_messages as messages
from simulators.legality_platform import Platform
from simulators.legality_soap import LegalityFault
from simulators.pastell_form import (
    ACTES_FORM,
    EDITABLE_FROM,
    FLOW,
    FOLLOWUP_FIELDS,
    IN_TDT,
    Entity,
    PastellDocument,
    PastellError,
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

    def __init__(self, platform: Platform, entities: list[Entity], *, ack_delay: float = 0.0) -> None:
        self.platform = platform
        self.entities = {e.id_e: e for e in entities}
        self.ack_delay = ack_delay
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
            if query.get("type") not in (None, "", FLOW):
                return []
            found = []
            for document in self._documents.values():
                if document.id_e != id_e:
                    continue
                self._collect(document)
                if query.get("numero_de_lacte") and document.data.get("numero_de_lacte") != query["numero_de_lacte"]:
                    continue
                if query.get("lastetat") and document.last != query["lastetat"]:
                    continue
                if query.get("search") and query["search"].lower() not in document.data.get("objet", "").lower():
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

    def type_pieces(self, id_e: str, id_d: str) -> dict[str, Any]:
        with self._lock:
            document = self._document(id_e, id_d)
            nature = int(document.data.get("acte_nature") or 0)
            labels = {code: code for code in sorted(self.platform.classification.type_codes_for(nature))}
            pieces = document.names("arrete") + document.names("autre_document_attache")
            if not pieces:
                raise PastellError(400, "La pièce principale n'est pas présente")
            return {"actes_type_pj_list": labels, "pieces": pieces}

    def act_counts(self) -> dict[str, int]:
        """Pastell documents per act (SIREN:NUMERO:DATE), once their number and date are set."""
        counts: dict[str, int] = {}
        with self._lock:
            for document in self._documents.values():
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
            id_d = _base36(next(self._ids) * 7919 + 1_000_000)
            document = PastellDocument(id_d, id_e, created, created)
            document.act("creation", "Création du document")
            self._documents[id_d] = document
            return {**document.detail(), "id_d": id_d}

    def modify(self, id_e: str, id_d: str, form: dict[str, str]) -> dict[str, Any]:
        """PATCH: the fields the form knows are set (others ignored, as Pastell does)."""
        with self._lock:
            document = self._editable(id_e, id_d)
            for name, value in form.items():
                rule = ACTES_FORM.get(name)
                if rule is None or rule.kind == "file" or name == "type_piece":
                    continue
                document.data[name] = ("1" if value.strip().lower() in _TRUE else "0") if rule.kind == "checkbox" \
                    else value
            return self._modified(document, "Modification du document")

    def add_file(self, id_e: str, id_d: str, name: str, num: int, file_name: str, content: bytes) -> dict[str, Any]:
        with self._lock:
            document = self._editable(id_e, id_d)
            rule = ACTES_FORM.get(name)
            if rule is None or rule.kind != "file":
                raise PastellError(400, f"Le champ {name} n'est pas un fichier de ce document")
            if not file_name:
                raise PastellError(400, "Le nom du fichier (file_name) est obligatoire")
            document.put(self.folder, name, file_name, content, num if rule.multiple else 0)
            return self._modified(document, f"Ajout du fichier {Path(file_name).name}")

    def set_type_piece(self, id_e: str, id_d: str, codes: list[str]) -> dict[str, Any]:
        with self._lock:
            document = self._editable(id_e, id_d)
            pieces = document.names("arrete") + document.names("autre_document_attache")
            if not document.names("arrete"):
                raise PastellError(400, "La pièce principale n'est pas présente")
            if not codes:
                raise PastellError(400, "Aucun type_pj fourni")
            if len(codes) != len(pieces):
                raise PastellError(400, f"{len(codes)} type(s) de pièce pour {len(pieces)} pièce(s)")
            document.data["type_piece"] = f"{len(codes)} fichier(s) typé(s)"
            document.data["type_acte"] = codes[0]
            document.data["type_pj"] = json.dumps(codes[1:])
            return {**self._modified(document, "Modification de la typologie des pièces")["content"], "result": "ok"}

    def _editable(self, id_e: str, id_d: str) -> PastellDocument:
        document = self._document(id_e, id_d)
        if document.last not in EDITABLE_FROM:
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
                rule = "document_is_valide" if document.last in EDITABLE_FROM else "last-action"
                problem = document.problem() if rule == "document_is_valide" else None
                raise PastellError(400, f"L'action « {name} »  n'est pas permise : {rule}"
                                        + (f" ({problem})" if problem else ""))
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
        """What Pastell's ``verif-tdt`` and ``verif-annulation-tdt`` jobs would have found by now."""
        if document.last in IN_TDT and "tedetis_transaction_id" in document.data:
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
        """The préfecture writes about an acknowledged act; Pastell keeps it in the code's block."""
        kind = FOLLOWUP_FIELDS.get(code)
        if kind is None:
            raise ValueError(f"Pastell keeps no field for a {code} message; one of {', '.join(FOLLOWUP_FIELDS)}")
        with self._lock:
            for document in self._documents.values():
                self._collect(document)
            found = [d for d in self._documents.values() if d.data.get("acte_unique_id") == id_acte]
            if not found:
                raise KeyError(f"no document acknowledged with IDActe {id_acte}")
            document = found[-1]
            message = self.platform.followup(id_acte, code)
            package = io.BytesIO()
            with tarfile.open(fileobj=package, mode="w:gz") as tar:
                for name, content in ((message.name, message.content), *message.attachments.items()):
                    info = tarfile.TarInfo(name)
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
            document.put(self.folder, kind, f"{message.name.removesuffix('.xml')}.tar.gz", package.getvalue())
            for num, (name, content) in enumerate(((message.name, message.content), *message.attachments.items())):
                document.put(self.folder, f"{kind}_unzip", name, content, num)
            document.data.update({f"has_{kind}": "1", f"{kind}_id": message.message_id,
                                  f"{kind}_date": message.day.isoformat()})
            waits = code in ("2-1", "3-1", "4-1")
            document.act("attente-reponse-prefecture" if waits else "verif-reponse-tdt",
                      "Réponse à la préfecture attendue" if waits else "Message de la préfecture récupéré")
            return {"message_id": message.message_id, "code": code, "name": message.name, "id_d": document.id_d}

    def tdt_classification(self) -> tuple[str, bytes]:
        """The 7-2 the TdT connector keeps (``classification_file``), dated as the TdT knows it."""
        content = messages.retour_classification(self.platform.classification_bytes, self.tdt_classification_date)
        return "classification.xml", content


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"

