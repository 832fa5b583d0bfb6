"""What the S2LOW simulator remembers and decides: its transactions, what it refuses outright.

S2LOW checks the form of ``actes_transac_create.php`` strictly (:func:`read_form`), builds the
ACTES archive itself (:func:`transformers.actes_out.build_archive`, the Acte stamped with the
classification date S2LOW last received) and hands it to the ministry,
:class:`simulators.legality_platform.Platform`, which judges it as it judges any archive
(ARActe; AnomalieActe such as ODT-VERIF-01 when S2LOW's classification is older than the
ministry's).  A transaction's status is S2LOW's own while it holds the act (17, 18) or has
not posted it yet (1), then follows the ministry's answer: 3 transmitted, 4 with the ARActe,
-1 with the anomaly, 0 once cancelled.  A number is taken once per collectivité, whatever
became of the act that took it (S2LOW's ``isUnique``).

Once an act is acknowledged (4), S2LOW gives its bordereau d'acquittement and stamps its PDFs
(``actes_download_file.php?tampon=true``); before, it answers ``KO`` with its words of
``actes_transac_get_tampon.php`` (:data:`NOT_ACKNOWLEDGED`).  S2LOW writes its stamp on the PDF it
received; this simulator makes a new PDF instead (:func:`simulators.pdf.make_pdf`), showing "Acte
reçu en préfecture le <date> — <IDActe>" and the name of the file it stands for.

The collectivité answers a letter (2-1, 3-1, 4-1) through ``actes_transac_reponse_create.php``
(:meth:`S2lowOffice.respond`), checked strictly (:func:`read_response_form`): ``id`` a letter
of this account's acts S2LOW received (not an answer, not a 5-1), ``type_envoie`` 3 (refus) or
4 (réponse) — only 4 for a courrier simple, which has no refusal in ACTES (S2LOW itself does not
check this) —, ``type_acte`` (and a ``type_pj[]`` per attachment) of five characters, one PDF as
``acte_pdf_file``, attachments only for the pieces of a 3-4.  S2LOW builds the answer's archive
(:func:`transformers.actes_responses.build_response_archive`, DateCourrierPref the letter's)
and hands it to the ministry, which answers 3-5 / 4-5, or nothing for a 2-2: the answer's
transaction is 4 with that message (or with none).  3-2 and 4-2 are not posted: S2LOW sends
them itself when the letter comes (assumed, see :mod:`connectors.s2low_outbound`).

Every refusal of a field is counted in :attr:`S2lowOffice.refused` (``{"subject": n,
"number": n, ...}``): the tests assert that the bus never made S2LOW refuse anything.
"""

from __future__ import annotations

__all__ = ["ANSWER_CODES", "DUPLICATE", "FILE_NOT_FOUND", "NOT_ACKNOWLEDGED", "NOT_FOUND", "NUMBER", "Authority",
           "Form", "Refused", "ResponseForm", "S2lowOffice", "S2lowTransaction", "Upload", "check_subject", "read_form",
           "read_response_form"]

import io
import itertools
import re
import tarfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from bus.errors import DocumentError
from simulators import legality_messages as messages
from simulators.legality_platform import Platform
from simulators.legality_soap import LegalityFault
from simulators.pdf import make_pdf
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import build_archive
from transformers.actes_responses import ResponseRequest, build_response_archive
from transformers.text_policy import TextPolicy

#: S2LOW's ActesTransaction::NUMBER_REGEXP
NUMBER = re.compile(r"[0-9A-Z_]{2,15}")
TYPE_CODE = re.compile(r"[0-9A-Z_]{5}")
#: S2LOW's words when the number is taken (actes_transac_create.php), and for an unknown transaction
DUPLICATE = ("Un acte portant le même numéro interne existe déjà dans la base de données.\n"
             "Il faut peut-être ajouter un suffixe au numéro.")
NOT_FOUND = "Numéro de transaction invalide."
#: S2LOW's words (sic) when a transaction has no acknowledgment to stamp with (actes_transac_get_tampon.php)
NOT_ACKNOWLEDGED = "Pas d'aquittement recu"
FILE_NOT_FOUND = "Fichier introuvable"  #: assumed: S2LOW's page for an unknown file is not public
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_NATURES = {1: "Délibérations", 2: "Actes réglementaires", 3: "Actes individuels", 4: "Contrats et conventions",
            5: "Documents budgétaires et financiers", 6: "Autres"}
_LETTERS = {"2-1": 21, "5-1": 21}  #: no AR expected from the collectivité (S2LOW 21), the others 7
#: (letter's type, type_envoie) → the answer's code
ANSWER_CODES = {(2, 4): "2-2", (3, 3): "3-3", (3, 4): "3-4", (4, 3): "4-3", (4, 4): "4-4"}


class Refused(Exception):
    """S2LOW answers ``KO`` and ``message``; ``field`` is what the strictness counter counts."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field


@dataclass(frozen=True)
class Authority:
    """The collectivité of the S2LOW account (S2LOW knows it from the login or the certificate)."""

    siren: str = "214400152"
    departement: str = "044"
    arrondissement: int = 1
    nature: str = "31"
    email: str = "actes@saint-herblain.fr"


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class Form:
    """What ``actes_transac_create.php`` accepted."""

    nature: int
    number: str
    decision_date: date
    subject: str
    matieres: tuple[int, ...]
    document_papier: bool
    en_attente: bool
    type_acte: str
    main: Upload
    annexes: tuple[tuple[Upload, str], ...]


@dataclass(frozen=True)
class ResponseForm:
    """What ``actes_transac_reponse_create.php`` accepted."""

    letter: int
    type_envoie: int
    type_acte: str
    main: Upload
    attachments: tuple[tuple[Upload, str], ...]


@dataclass
class S2lowTransaction:
    id: int
    type: int  #: 1 acte, 2-5 messages of the préfecture, 6 cancellation, 7 classification request
    number: str = ""
    decision_date: str = ""
    subject: str = ""
    nature: int = 0
    status: int = 1  #: S2LOW's own status until the ministry has the act
    related: int | None = None
    unique_id: str | None = None
    acte_name: str = ""  #: the Acte message's name, <IDActe>-1-1_0.xml
    archive_name: str = ""
    archive: bytes = b""
    platform_id: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    package: bytes = b""  #: a préfecture message as S2LOW serves it (.tar.gz)
    flux: bytes = b""  #: a cancellation's 6-2
    message: str = ""
    due: float = 0.0
    read: bool = False
    letter_date: str = ""  #: a letter's DateCourrierPref
    answers: int | None = None  #: an answer: the letter it answers (``related`` is that letter too)
    code: str = ""  #: an answer's code (3-4...)


def _one(fields: dict[str, list[bytes]], name: str) -> str:
    values = fields.get(name) or [b""]
    return values[0].decode("iso-8859-1").strip()


def check_subject(raw: bytes) -> str:
    """The subject as S2LOW reads it (ISO-8859-1); Refused when it cannot be one."""
    if not raw.strip():
        raise Refused("L'objet de l'acte est obligatoire", "subject")
    if any(byte > 0x7F for byte in raw):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            raise Refused("L'objet doit être encodé en ISO-8859-1 (reçu en UTF-8)", "subject")
    subject = raw.decode("iso-8859-1")
    if "\n" in subject or "\r" in subject:
        raise Refused("L'objet ne doit pas contenir de retour à la ligne", "subject")
    if _CONTROL.search(subject):
        raise Refused("L'objet contient un caractère de contrôle ou hors ISO-8859-1", "subject")
    if len(subject) > 499:
        raise Refused(f"L'objet ne doit pas dépasser 499 caractères ({len(subject)})", "subject")
    return subject


def read_form(fields: dict[str, list[bytes]], files: dict[str, list[Upload]]) -> Form:
    """The fields of ``actes_transac_create.php``, strictly; Refused naming the first wrong one."""
    nature = _one(fields, "nature_code")
    if nature not in {"1", "2", "3", "4", "5", "6"}:
        raise Refused("La nature de l'acte n'est pas correcte", "nature_code")
    number = _one(fields, "number")
    if not NUMBER.fullmatch(number):
        raise Refused("Le numéro n'est pas correct", "number")
    day_text = _one(fields, "decision_date")
    try:
        day = date.fromisoformat(day_text) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", day_text) else None
    except ValueError:
        day = None
    if day is None:
        raise Refused("La date de décision n'est pas une date AAAA-MM-JJ", "decision_date")
    if day > date.today():
        raise Refused("La date de décision est une date dans le futur", "decision_date")
    subject = check_subject((fields.get("subject") or [b""])[0])
    codes = [_one(fields, f"classif{n}") for n in range(1, 6)]
    count = next((i for i, code in enumerate(codes) if not code), 5)
    if count < 2 or not all(code.isdigit() for code in codes[:count]) or any(codes[count:]):
        raise Refused("La classification de l'acte n'est pas correcte (classif1, classif2...)", "classif")
    for name in ("document_papier", "en_attente"):
        if _one(fields, name) not in ("", "0", "1"):
            raise Refused(f"Le champ {name} vaut 0 ou 1", name)
    main = (files.get("acte_pdf_file") or [Upload("", b"")])[0]
    if not main.data:
        raise Refused("Aucun fichier acte n'a été posté ", "acte_pdf_file")
    type_acte = _one(fields, "type_acte")
    if not TYPE_CODE.fullmatch(type_acte):
        raise Refused(f"Erreur lors de la réception du fichier {main.filename} : typologie absente", "type_acte")
    annexes = [upload for upload in files.get("acte_attachments[]", []) if upload.data]
    types = [value.decode("iso-8859-1").strip() for value in fields.get("type_pj[]", [])]
    for index, annex in enumerate(annexes):
        if index >= len(types) or not TYPE_CODE.fullmatch(types[index]):
            raise Refused(f"Erreur lors de la réception du fichier annexe {annex.filename} : typologie absente",
                          "type_pj")
    return Form(int(nature), number, day, subject, tuple(int(c) for c in codes[:count]),
                _one(fields, "document_papier") == "1", _one(fields, "en_attente") == "1", type_acte, main,
                tuple(zip(annexes, types, strict=False)))


def read_response_form(fields: dict[str, list[bytes]], files: dict[str, list[Upload]]) -> ResponseForm:
    """The fields of ``actes_transac_reponse_create.php``, strictly; Refused naming the first wrong one
    (the letter itself is checked by :meth:`S2lowOffice.respond`)."""
    letter = _one(fields, "id")
    if not letter.isdigit():
        raise Refused(NOT_FOUND, "id")
    type_envoie = _one(fields, "type_envoie")
    if type_envoie not in ("3", "4"):
        raise Refused("Le type d'envoi vaut 3 (refus) ou 4 (réponse)", "type_envoie")
    type_acte = _one(fields, "type_acte")
    if not type_acte:
        raise Refused("Erreur lors de la réception du fichier : typologie absente", "type_acte")
    if not TYPE_CODE.fullmatch(type_acte):
        raise Refused("Le code de la PJ doit faire 5 caractères", "type_acte")
    main = (files.get("acte_pdf_file") or [Upload("", b"")])[0]
    if not main.data:
        raise Refused("Aucun fichier acte n'a été posté ", "acte_pdf_file")
    if not main.data.startswith(b"%PDF-"):
        raise Refused(f"Le fichier {main.filename} n'est pas un PDF", "acte_pdf_file")
    attachments = [upload for upload in files.get("acte_attachments[]", []) if upload.data]
    types = [value.decode("iso-8859-1").strip() for value in fields.get("type_pj[]", [])]
    for index, attachment in enumerate(attachments):
        if index >= len(types) or not TYPE_CODE.fullmatch(types[index]):
            raise Refused(f"Erreur lors de la réception du fichier annexe {attachment.filename} : typologie absente",
                          "type_pj")
    return ResponseForm(int(letter), int(type_envoie), type_acte, main, tuple(zip(attachments, types, strict=False)))


class S2lowOffice:
    """The S2LOW account of one collectivité and the ministry behind it, thread-safe."""

    def __init__(self, platform: Platform, authority: Authority, workdir: Path, *, transmit_delay: float = 0.0) -> None:
        self.platform, self.authority, self.workdir = platform, authority, workdir
        self.transmit_delay = transmit_delay
        self.classification_date = platform.classification_date  #: the one S2LOW last received
        self.hold: int | None = None  #: 17 or 18: every new act waits for a person
        self.refused: Counter[str] = Counter()
        self.by_act: Counter[str] = Counter()
        self.by_answer: Counter[str] = Counter()  #: answers accepted, per ``<IDActe>:<code>``
        self.duplicates = 0
        self.transactions: dict[int, S2lowTransaction] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1001)
        self._serials: Counter[date] = Counter()

    # -- creation -------------------------------------------------------------------------

    def create(self, fields: dict[str, list[bytes]], files: dict[str, list[Upload]]) -> int:
        """``actes_transac_create.php``: the new transaction's id; Refused (KO) otherwise."""
        try:
            form = read_form(fields, files)
        except Refused as refusal:
            with self._lock:
                self.refused[refusal.field or "other"] += 1
            raise
        with self._lock:
            self.by_act[f"{self.authority.siren}:{form.number}:{form.decision_date}"] += 1
            if any(t.type == 1 and t.number == form.number for t in self.transactions.values()):
                self.duplicates += 1
                raise Refused(DUPLICATE)
            transaction = S2lowTransaction(next(self._ids), 1, form.number, form.decision_date.isoformat(),
                                           form.subject, form.nature, due=time.monotonic() + self.transmit_delay)
            self._build(transaction, form)
            transaction.status = self.hold or (17 if form.en_attente else 1)
            self.transactions[transaction.id] = transaction
            self._advance(transaction)
            return transaction.id

    def _build(self, transaction: S2lowTransaction, form: Form) -> None:
        """Write the uploads, build and keep the ACTES archive S2LOW will post."""
        folder = self.workdir / str(transaction.id)
        folder.mkdir(parents=True)
        stored = []
        for index, (upload, code) in enumerate([(form.main, form.type_acte), *form.annexes], start=1):
            name = _SAFE_NAME.sub("_", Path(upload.filename).name) or f"fichier{index}.pdf"
            path = folder / f"{index}-{name}"
            path.write_bytes(upload.data)
            stored.append(ActFile(name, path, code))
        a, today = self.authority, date.today()
        act = CanonicalAct(
            siren=a.siren, departement=a.departement, arrondissement=a.arrondissement, collectivite_nature=a.nature,
            decision_date=form.decision_date, numero_interne=form.number, nature=form.nature, matieres=form.matieres,
            objet=form.subject, classification_date=self.classification_date, main_document=stored[0],
            annexes=tuple(stored[1:]), document_papier=form.document_papier, return_emails=(a.email,),
            sidecar="actes_transac_create.php",
        )
        self._serials[today] += 1
        out = io.BytesIO()
        try:
            built = build_archive(act, out, quadrigram="TACT", trigram="SLO", serial=self._serials[today],
                                  generation_date=today, today=today, text_policy=TextPolicy.FAIL)
        except DocumentError as exc:
            self.refused[exc.field or "archive"] += 1
            raise Refused(f"Erreur de validation du fichier de l'acte :\n{exc}", exc.field) from exc
        transaction.archive, transaction.archive_name, transaction.acte_name = (out.getvalue(), built.archive_name,
                                                                                built.message_name)
        transaction.unique_id = None
        transaction.files = [{"name": built.message_name, "posted_filename": built.message_name,
                              "mimetype": "text/xml", "size": 0, "code_pj": ""}]
        for file, upload in zip(stored, [form.main, *(annex for annex, _ in form.annexes)], strict=True):
            transaction.files.append({"name": built.file_names[file.source_name], "posted_filename": upload.filename,
                                      "mimetype": "application/pdf", "size": len(upload.data),
                                      "code_pj": file.type_code or ""})

    def _advance(self, transaction: S2lowTransaction) -> None:
        """Post (1 → 3) an act that S2LOW no longer holds once its transmit delay is over."""
        if transaction.type != 1 or transaction.status != 1 or transaction.platform_id is not None:
            return
        if time.monotonic() < transaction.due:
            return
        try:
            sent = self.platform.submit(transaction.archive_name, f"s2low-{transaction.id}",
                                        transaction.acte_name.removesuffix("-1-1_0.xml"), transaction.archive)
        except LegalityFault as fault:
            transaction.status, transaction.message = -1, f"Erreur lors de la transmission au ministère : {fault}"
            return
        transaction.platform_id, transaction.status = sent.transaction_id, 3

    def post_waiting(self, transaction_id: int | None = None) -> list[int]:
        """A person posts (or signs) the acts S2LOW holds (17, 18): they go to the ministry."""
        with self._lock:
            held = [t for t in self.transactions.values() if t.type == 1 and t.status in (17, 18)
                    and transaction_id in (None, t.id)]
            for transaction in held:
                transaction.status, transaction.due = 1, time.monotonic() + self.transmit_delay
                self._advance(transaction)
            return [t.id for t in held]

    # -- status ---------------------------------------------------------------------------

    def current(self, transaction: S2lowTransaction) -> tuple[int, bytes, str]:
        """(status, the ministry's XML that goes with it, S2LOW's message)."""
        with self._lock:
            self._advance(transaction)
            if transaction.type == 6:
                return (4, transaction.flux, "") if time.monotonic() >= transaction.due else (3, b"", "")
            if transaction.answers is not None and transaction.platform_id is not None:
                return self._answer_status(transaction)
            if transaction.type != 1 or transaction.platform_id is None:
                return transaction.status, b"", transaction.message
            state = self.platform.status(transaction.platform_id)
            answer = self.platform.transaction(transaction.platform_id)
            assert answer is not None
            if state == "ACKNOWLEDGED":
                transaction.unique_id = answer.id_acte
                return 4, answer.message, ""
            if state == "REJECTED":
                return -1, answer.message, f"Le ministère a refusé l'acte : {answer.detail or ''}".strip()
            return (0, b"", "") if state == "CANCELLED" else (3, b"", "")

    def _answer_status(self, transaction: S2lowTransaction) -> tuple[int, bytes, str]:
        """An answer's status: 3 until the ministry has judged it, then 4 with its receipt (or none), or -1."""
        assert transaction.platform_id is not None
        state = self.platform.status(transaction.platform_id)
        answer = self.platform.transaction(transaction.platform_id)
        assert answer is not None
        if state == "ACKNOWLEDGED":
            return 4, answer.message, ""
        if state == "REJECTED":
            return -1, answer.message, f"Le ministère a refusé la réponse : {answer.detail or ''}".strip()
        return 3, b"", ""

    def find(self, transaction_id: str | None = None, unique_id: str | None = None) -> S2lowTransaction | None:
        """By id; or as ``getTransactionFromUniqueId``: by IDActe, else by the Acte message's name."""
        with self._lock:
            if unique_id is None:
                number = (transaction_id or "").strip()
                return self.transactions.get(int(number)) if number.isdigit() else None
            for transaction in self.transactions.values():
                self.current(transaction)
            acts = [t for t in self.transactions.values() if t.type == 1]
            matches = [t for t in acts if t.unique_id == unique_id] or [
                t for t in acts if t.acte_name == f"{unique_id}_0.xml"]
            return matches[0] if len(matches) == 1 else None

    def listed(self, status: int, offset: int, limit: int) -> list[dict[str, Any]]:
        """``api/list_actes.php``: the acts in ``status``, newest first."""
        with self._lock:
            acts = [t for t in sorted(self.transactions.values(), key=lambda t: -t.id)
                    if t.type == 1 and self.current(t)[0] == status]
            return [{"id": str(t.id), "subject": t.subject, "number": t.number, "decision_date": t.decision_date,
                     "nature_descr": _NATURES.get(t.nature, ""), "classification": "", "type": "1"}
                    for t in acts[offset:offset + limit]]

    # -- cancellation, the préfecture's messages ---------------------------------------------

    def cancel(self, transaction_id: str) -> int:
        """``actes_transac_cancel.php``: the cancellation transaction's id; Refused otherwise."""
        with self._lock:
            act = self.find(transaction_id)
            if act is None or act.type != 1:
                raise Refused("Erreur d'initialisation de la transaction.")
            if any(t.type == 6 and t.related == act.id for t in self.transactions.values()):
                raise Refused("Une demande d'annulation est déjà en cours pour cette transaction.")
            if self.current(act)[0] != 4:
                raise Refused("Impossible d'annuler une transaction qui n'est pas en état « Acquittement reçu ».")
            assert act.platform_id is not None and act.unique_id is not None
            self.platform.cancel(act.platform_id, act.unique_id)
            return self._cancellation(act, delay=self.platform.ack_delay).id

    def _cancellation(self, act: S2lowTransaction, delay: float) -> S2lowTransaction:
        assert act.platform_id is not None
        last = [f for f in self.platform.followups(act.platform_id) if f.code == "6-2"][-1]
        cancel = S2lowTransaction(next(self._ids), 6, act.number, related=act.id, unique_id=act.unique_id,
                                  flux=last.content, status=3, due=time.monotonic() + delay)
        self.transactions[cancel.id] = cancel
        return cancel

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture writes ``code`` about the acknowledged act ``id_acte`` (KeyError, ValueError)."""
        with self._lock:
            act = self.find(unique_id=id_acte)
            if act is None or act.unique_id != id_acte:
                raise KeyError(f"no acknowledged act with IDActe {id_acte}")
            message = self.platform.followup(id_acte, code)
            if code == "6-2":
                return {"transaction_id": str(self._cancellation(act, delay=0.0).id), "code": code,
                        "name": message.name}
            a = self.authority
            envelope = f"TACT--SPREF{a.departement}{a.arrondissement}-{a.siren}-{date.today():%Y%m%d}-{act.id}.xml"
            package = _pack({envelope: messages.enveloppe_misillcl(a.departement, a.siren, [message.name]),
                             message.name: message.content, **message.attachments})
            letter = S2lowTransaction(next(self._ids), int(code[0]), act.number, related=act.id,
                                      unique_id=id_acte, status=_LETTERS.get(code, 7), package=package,
                                      letter_date=message.day.isoformat())
            self.transactions[letter.id] = letter
            return {"transaction_id": str(letter.id), "code": code, "name": message.name}

    def related(self, transaction_id: str) -> list[str]:
        """``actes_transac_get_document.php?id=`` of an act: ``type-status-id`` of what relates to it."""
        with self._lock:
            return [f"{t.type}-{self.current(t)[0]}-{t.id}" for t in self.transactions.values()
                    if t.related is not None and str(t.related) == transaction_id]

    def unread(self) -> list[dict[str, str]]:
        """``api/list_document_prefecture.php``: the préfecture's messages not marked read."""
        with self._lock:
            return [{"id": str(t.id), "type": str(t.type), "related_transaction_id": str(t.related),
                     "number": t.number, "unique_id": t.unique_id or "", "last_status_id": str(t.status)}
                    for t in self.transactions.values() if 2 <= t.type <= 5 and t.answers is None and not t.read]

    def mark_read(self, transaction_id: str) -> None:
        with self._lock:
            found = self.find(transaction_id)
            if found is not None and 2 <= found.type <= 5 and found.answers is None:
                found.read = True

    # -- the collectivité's answers to the letters ------------------------------------------------

    def respond(self, fields: dict[str, list[bytes]], files: dict[str, list[Upload]]) -> int:
        """``actes_transac_reponse_create.php``: the answer's transaction id; Refused (KO) otherwise."""
        with self._lock:
            try:
                form = read_response_form(fields, files)
                letter = self.transactions.get(form.letter)
                if letter is None:
                    raise Refused(NOT_FOUND, "id")
                code = ANSWER_CODES.get((letter.type, form.type_envoie))
                if letter.answers is not None or letter.type not in (2, 3, 4) or not letter.unique_id:
                    raise Refused("Accès refusé : la transaction n'est pas un courrier de la préfecture à "
                                  "répondre", "id")
                if code is None:
                    raise Refused("Un courrier simple n'admet pas de refus (type_envoie 4 seulement)", "type_envoie")
                if form.attachments and code != "3-4":
                    raise Refused("Seule une réponse à une demande de pièces complémentaires a des pièces jointes",
                                  "acte_attachments")
            except Refused as refusal:
                self.refused[refusal.field or "other"] += 1
                raise
            self.by_answer[f"{letter.unique_id}:{code}"] += 1
            answer = S2lowTransaction(next(self._ids), letter.type, letter.number, related=letter.id,
                                      unique_id=letter.unique_id, answers=letter.id, code=code, status=1)
            self._build_answer(answer, letter, form)
            try:
                sent = self.platform.submit(answer.archive_name, f"s2low-{answer.id}", letter.unique_id,
                                            answer.archive)
            except LegalityFault as fault:
                answer.status, answer.message = -1, f"Erreur lors de la transmission au ministère : {fault}"
            else:
                answer.platform_id, answer.status = sent.transaction_id, 3
            self.transactions[answer.id] = answer
            return answer.id

    def _build_answer(self, answer: S2lowTransaction, letter: S2lowTransaction, form: ResponseForm) -> None:
        """Write the uploads, build and keep the answer's ACTES archive."""
        folder = self.workdir / str(answer.id)
        folder.mkdir(parents=True)
        documents = []
        for index, upload in enumerate([form.main, *(a for a, _ in form.attachments)], start=1):
            path = folder / f"{index}-{_SAFE_NAME.sub('_', Path(upload.filename).name) or 'reponse.pdf'}"
            if path.suffix.lower() != ".pdf":
                path = path.with_name(path.name + ".pdf")
            path.write_bytes(upload.data)
            documents.append(ActFile(path.name, path))
        assert letter.unique_id is not None
        request = ResponseRequest(letter.unique_id, answer.code, None, tuple(documents),
                                  "actes_transac_reponse_create.php")
        a, today = self.authority, date.today()
        self._serials[today] += 1
        out = io.BytesIO()
        try:
            built = build_response_archive(
                request, out, letter_date=date.fromisoformat(letter.letter_date), departement=a.departement,
                return_emails=(a.email,), nature_collectivite=a.nature, arrondissement=a.arrondissement,
                quadrigram="TACT", trigram="SLO", serial=self._serials[today], generation_date=today)
        except DocumentError as exc:
            self.refused[exc.field or "archive"] += 1
            raise Refused(f"Erreur de validation de la réponse :\n{exc}", exc.field) from exc
        answer.archive, answer.archive_name, answer.acte_name = out.getvalue(), built.archive_name, built.message_name
        answer.files = [{"name": built.message_name, "posted_filename": built.message_name, "mimetype": "text/xml",
                         "size": 0, "code_pj": ""}]

    # -- classification -----------------------------------------------------------------------

    def request_classification(self) -> int:
        """``actes_classification_request.php``: the 7-1 goes, the ministry's 7-2 is kept at once."""
        with self._lock:
            request = S2lowTransaction(next(self._ids), 7, status=4)
            self.transactions[request.id] = request
            self.classification_date = self.platform.classification_date
            return request.id

    def classification(self) -> bytes:
        """``actes_classification_fetch.php``: the RetourClassification S2LOW holds."""
        with self._lock:
            return messages.retour_classification(self.platform.classification_bytes, self.classification_date)

    # -- after the acknowledgment: the bordereau, the stamped files -------------------------------

    def _acknowledged_on(self, transaction: S2lowTransaction) -> date:
        """The day the ministry received an act S2LOW holds the ARActe of (4); Refused otherwise."""
        if transaction.type != 1 or self.current(transaction)[0] != 4:
            raise Refused(NOT_ACKNOWLEDGED)
        answer = self.platform.transaction(transaction.platform_id or "")
        assert answer is not None
        return answer.date_reception

    def bordereau(self, transaction: S2lowTransaction) -> bytes:
        """``actes_create_pdf.php``: the bordereau d'acquittement of an acknowledged act; Refused before."""
        with self._lock:
            day = self._acknowledged_on(transaction)
            names = [f["posted_filename"] or f["name"] for f in transaction.files]
        return make_pdf(["Bordereau d'acquittement de transmission (simulateur S2LOW de Hent)",
                         f"Transaction {transaction.id}", f"Identifiant unique : {transaction.unique_id}",
                         f"Objet : {transaction.subject}", f"Date de réception : {day:%d/%m/%Y}", "Fichiers :", *names])

    def download(self, file_id: str, tampon: bool) -> tuple[str, bytes]:
        """``actes_download_file.php?file=<transaction>-<n>``: (media type, the file as received);
        with ``tampon``, a PDF of an acknowledged act stamped (a new PDF, see the module's docstring)."""
        transaction_id, _, number = file_id.partition("-")
        with self._lock:
            transaction = self.find(transaction_id)
            files = transaction.files if transaction is not None else []
            if transaction is None or not number.isdigit() or int(number) >= len(files):
                raise Refused(FILE_NOT_FOUND)
            entry = files[int(number)]
            if not (tampon and entry["mimetype"] == "application/pdf"):
                return entry["mimetype"], _member(transaction.archive, entry["name"])
            day = self._acknowledged_on(transaction)
        return "application/pdf", make_pdf([
            f"Acte reçu en préfecture le {day:%d/%m/%Y} — {transaction.unique_id}",
            f"Document : {entry['posted_filename'] or entry['name']}",
            "(simulateur S2LOW de Hent : un PDF nouveau qui tient lieu du document tamponné)"])


def _member(archive: bytes, name: str) -> bytes:
    """A file of the archive S2LOW built, as it was received."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        try:
            stream = tar.extractfile(name)
        except KeyError:
            stream = None
        if stream is None:
            raise Refused(FILE_NOT_FOUND)
        return stream.read()


def _pack(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
