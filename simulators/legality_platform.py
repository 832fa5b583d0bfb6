"""What the legality simulator remembers and decides: transactions, the ministry's answers.

A submission is opened and judged at once (standards.md §1.5-1.9), in this order:

1. the archive cannot be read as a tar.gz, or it holds no envelope that validates (so no
   anomaly could echo it) → ``INVALID_ARCHIVE`` fault, nothing recorded;
2. the client key, or the act (SIREN + NumeroInterne + decision date), belongs to a
   transaction that is not REJECTED → ``DUPLICATE`` fault naming that transaction;
3. otherwise a transaction is recorded, TRANSMITTED, and the ministry's answer is decided
   now and shown ``ack_delay`` seconds later:

   - problems with the archive, the envelope or the XML of a message (archive name, a
     listed message missing, an unlisted file, XSD errors, several or non-Acte messages)
     → REJECTED with an **AnomalieEnveloppe** ``ANO_<envelope>`` (Nature 001 archive,
     002 missing message, 005 invalid XML); its Detail is ``<archive> -> rule : text``;
   - problems with a schema-valid act's own files (message or document name, a piece
     type code the classification does not list for the nature, a referenced file
     missing, content not matching the extension, Annexes count) → REJECTED with an
     **AnomalieActe** ``<IDActe>-1-3_<n>.xml`` (Nature 001 naming, 003 missing file,
     004 content) echoing the act;
   - a ClassificationDateVersion older than the current classification → AnomalieActe
     Nature 002 ``ODT-VERIF-01``;
   - else ACKNOWLEDGED with an **ARActe** ``<IDActe>-1-2_<n>.xml`` (DateReception: the
     day it was received).

An act whose transmission was REJECTED may be sent again (it is not a duplicate).

An archive may instead carry the collectivité's answer to a letter of the préfecture (2-2,
3-2, 3-3, 3-4, 4-2, 4-3, 4-4).  It is inspected as strictly (a broken archive, a message
breaking the schema, badly named or missing documents, an IDActe of another collectivité →
REJECTED with an AnomalieEnveloppe), and further refused the same way when the act is not
known and ACKNOWLEDGED, or when its DateCourrierPref is not the date of a letter of that
kind (2-1 for 2-2; 3-1 for 3-x; 4-1 for 4-x) the préfecture sent about the act.  Otherwise it
is ACKNOWLEDGED (DateReception: the day it was received):

- 3-3 / 3-4 with an **ARPieceComplementaire** ``<IDActe>-3-5_<n>.xml``, 4-3 / 4-4 with an
  **ARReponseRejetLettreObservations** ``<IDActe>-4-5_<n>.xml`` (``InfosCourrierPref``: the
  IDActe and the DateCourrierPref answered);
- 2-2, 3-2, 4-2 with no message at all: the ministry acknowledges none of them, so the
  transaction's ``message_name`` is ``""`` and its ``message`` ``b""`` (GetStatus then sends
  empty ``MessageName``/``Message``, which a client reads as "no message"), and its
  ``detail`` says so.

An answer is keyed on IDActe + code + DateCourrierPref (``Transaction.response_key``), never
on the act: the same answer to the same letter, while not REJECTED, is a ``DUPLICATE``.  An
answer's transaction gets no follow-ups and cannot be cancelled.
"""

from __future__ import annotations

__all__ = ["ODT_VERIF_01", "ODT_VERIF_17", "Platform", "Transaction", "FollowUp"]

import hashlib
import itertools
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from lxml import etree

from bus.errors import Problem
from simulators import legality_messages as messages
from simulators.legality_archive import Inspection, inspect_archive
from simulators.legality_soap import LegalityFault
from simulators.pdf import make_pdf
from transformers.actes_responses import LETTER_OF, RESPONSE_ROOTS
from transformers.actes_validate import DOCUMENT_NAME, ActesValidator
from transformers.classification import Classification

NS = messages.ACTES_NS
ODT_VERIF_01 = "ODT-VERIF-01 : Votre acte a été transmis avec une date de classification qui n'est pas à jour"
ODT_VERIF_17 = "ODT-VERIF-17 : La transaction que vous avez envoyé n'est pas reconnu dans l'application ACTES."
#: validator rules about an act's own files → AnomalieActe Nature; the others → AnomalieEnveloppe
_ACT_RULES = {
    "message-name": "001", "document-name": "001", "type-code-unknown": "001",
    "archive-document-missing": "003", "file-type-mismatch": "004", "annexes-count": "004",
}
_ENVELOPE_NATURES = {"archive-message-missing": "002", "xsd": "005", "xml-well-formed": "005", "xml-doctype": "005"}


@dataclass
class FollowUp:
    """A message of the préfecture after the acknowledgment (ListMessages / GetMessage)."""

    message_id: str
    code: str
    name: str
    day: date
    content: bytes
    attachments: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Transaction:
    """One recorded submission and the ministry's answer to it."""

    transaction_id: str
    client_key: str
    expected_id_acte: str
    archive_name: str
    act_key: str | None
    id_acte: str | None
    due: float  #: time.monotonic() from which the answer is visible
    outcome: str  #: "ACKNOWLEDGED" or "REJECTED", shown from ``due``
    message_name: str
    message: bytes
    detail: str | None
    date_reception: date
    cancelled: bool = False
    followups: list[FollowUp] = field(default_factory=list)
    #: an answer to a letter: IDActe:code:DateCourrierPref (None for an act)
    response_key: str | None = None

    def status(self, now: float) -> str:
        if self.cancelled:
            return "CANCELLED"
        return self.outcome if now >= self.due else "TRANSMITTED"


def _detail(archive: str, problems: list[Problem]) -> str:
    parts = [f"{p.rule} : {p.message}" + (f" [{p.field}]" if p.field else "") for p in problems]
    return f"{archive} -> " + " ; ".join(parts)


class Platform:
    """The tiers de télétransmission and the ministry behind it, in memory, thread-safe."""

    def __init__(
        self,
        classification: Path,
        *,
        ack_delay: float = 0.0,
        departement: str = "044",
        validator: ActesValidator | None = None,
    ) -> None:
        self.classification_bytes = classification.read_bytes()
        self.classification = Classification.from_bytes(self.classification_bytes, name=str(classification))
        self.classification_date = self.classification.date or date.today()
        self.ack_delay = ack_delay
        self.departement = departement
        self.validator = validator or ActesValidator()
        self._lock = threading.Lock()
        self._run = secrets.token_hex(2)
        self._transactions: dict[str, Transaction] = {}
        self._by_client_key: dict[str, list[str]] = {}
        self._departements: dict[str, str] = {}
        self._tx_counter = itertools.count(1)
        self._message_counter = itertools.count(1)
        self.by_act: Counter[str] = Counter()
        self.by_response: Counter[str] = Counter()
        self._archives: dict[str, list[str]] = {}

    # -- submission ---------------------------------------------------------------------

    def submit(self, archive_name: str, client_key: str, expected_id_acte: str, data: bytes) -> Transaction:
        """Record a submission (see the module's docstring); LegalityFault when refused at once."""
        inspection = inspect_archive(archive_name, data, self.validator)
        key = inspection.act_key
        with self._lock:
            if key:
                self.by_act[key] += 1
                self._archives.setdefault(key, []).append(hashlib.sha256(data).hexdigest())
            if inspection.response_id_acte:
                self.by_response[f"{inspection.response_id_acte}:{inspection.response_code}"] += 1
            now = time.monotonic()
            self._refuse_duplicate(client_key, key, inspection.response_key, now)
            self._departements[inspection.siren] = inspection.departement
            if inspection.response is not None:
                transaction = self._decide_response(archive_name, client_key, expected_id_acte, inspection, now)
            else:
                transaction = self._decide(archive_name, client_key, expected_id_acte, inspection, now)
            self._transactions[transaction.transaction_id] = transaction
            self._by_client_key.setdefault(client_key, []).append(transaction.transaction_id)
            return transaction

    def _refuse_duplicate(self, client_key: str, act_key: str | None, response_key: str | None, now: float) -> None:
        """DUPLICATE when the client key, the act or the answer belongs to a transaction not REJECTED."""
        for transaction_id in self._by_client_key.get(client_key, []):
            if self._transactions[transaction_id].status(now) != "REJECTED":
                raise LegalityFault("DUPLICATE", f"client key {client_key} was already submitted", transaction_id)
        for transaction in self._transactions.values():
            if transaction.status(now) == "REJECTED":
                continue
            if act_key and transaction.act_key == act_key:
                raise LegalityFault(
                    "DUPLICATE",
                    f"act {act_key} already received (transaction {transaction.transaction_id}, "
                    f"archive {transaction.archive_name})",
                    transaction.transaction_id,
                )
            if response_key and transaction.response_key == response_key:
                raise LegalityFault(
                    "DUPLICATE",
                    f"answer {response_key} already received (transaction {transaction.transaction_id}, "
                    f"archive {transaction.archive_name})",
                    transaction.transaction_id,
                )

    def _decide(
        self, archive_name: str, client_key: str, expected: str, inspection: Inspection, now: float
    ) -> Transaction:
        today = date.today()
        acte, id_acte, problems = inspection.acte, inspection.id_acte, list(inspection.problems)
        if acte is not None and not problems:
            problems = self._type_code_problems(acte)
        outcome, detail = "REJECTED", None
        if problems and acte is not None and all(p.rule in _ACT_RULES for p in problems):
            detail = " ; ".join(f"{p.rule} : {p.message}" + (f" [{p.field}]" if p.field else "") for p in problems)
            name = f"{id_acte}-1-3_{next(self._message_counter)}.xml"
            nature = _ACT_RULES[problems[0].rule or ""]
            message = messages.anomalie_acte(acte, nature, detail, today, self.classification_date)
        elif problems:
            detail = _detail(archive_name, problems)
            name = f"ANO_{inspection.envelope_name}"
            nature = _ENVELOPE_NATURES.get(problems[0].rule or "", "001")
            message = messages.anomalie_enveloppe(inspection.envelope, nature, detail, today)
        else:
            assert acte is not None and id_acte is not None
            sent = acte.findtext(f"{{{NS}}}ClassificationDateVersion", "")
            if date.fromisoformat(sent.strip()) < self.classification_date:
                detail = ODT_VERIF_01
                name = f"{id_acte}-1-3_{next(self._message_counter)}.xml"
                message = messages.anomalie_acte(acte, "002", detail, today, self.classification_date)
            else:
                outcome = "ACKNOWLEDGED"
                name = f"{id_acte}-1-2_{next(self._message_counter)}.xml"
                message = messages.ar_acte(acte, id_acte, today, self.classification_date)
        return Transaction(
            transaction_id=f"{self._run}-{next(self._tx_counter):06d}",
            client_key=client_key,
            expected_id_acte=expected,
            archive_name=archive_name,
            act_key=inspection.act_key,
            id_acte=id_acte if outcome == "ACKNOWLEDGED" else None,
            due=now + self.ack_delay,
            outcome=outcome,
            message_name=name,
            message=message,
            detail=detail,
            date_reception=today,
        )

    def _decide_response(
        self, archive_name: str, client_key: str, expected: str, inspection: Inspection, now: float
    ) -> Transaction:
        """An answer to a letter: ACKNOWLEDGED (3-5 / 4-5 / no message) or an AnomalieEnveloppe."""
        today = date.today()
        code, id_acte, dated = inspection.response_code, inspection.response_id_acte, inspection.response_letter_date
        problems = list(inspection.problems)
        if not problems:  # schema-valid: the IDActe and DateCourrierPref are there
            assert code is not None and id_acte is not None and dated is not None
            problems = self._letter_problems(id_acte, code, dated, now)
        if problems:
            outcome, name, detail = "REJECTED", f"ANO_{inspection.envelope_name}", _detail(archive_name, problems)
            nature = _ENVELOPE_NATURES.get(problems[0].rule or "", "001")
            message = messages.anomalie_enveloppe(inspection.envelope, nature, detail, today)
        elif code in messages.RESPONSE_ACKS:
            assert id_acte is not None and dated is not None
            outcome, detail = "ACKNOWLEDGED", None
            name = f"{id_acte}-{messages.RESPONSE_ACKS[code]}_{next(self._message_counter)}.xml"
            message = messages.ar_reponse(code, id_acte, date.fromisoformat(dated), today)
        else:  # 2-2, 3-2, 4-2: the ministry acknowledges them with no message
            assert code is not None
            outcome, name, message = "ACKNOWLEDGED", "", b""
            detail = (f"{code} {RESPONSE_ROOTS[code]} to the letter {LETTER_OF[code]} of {dated} received; "
                      "the ministry acknowledges it with no message")
        return Transaction(
            transaction_id=f"{self._run}-{next(self._tx_counter):06d}",
            client_key=client_key,
            expected_id_acte=expected,
            archive_name=archive_name,
            act_key=None,
            id_acte=id_acte if outcome == "ACKNOWLEDGED" else None,
            due=now + self.ack_delay,
            outcome=outcome,
            message_name=name,
            message=message,
            detail=detail,
            date_reception=today,
            response_key=inspection.response_key,
        )

    def _letter_problems(self, id_acte: str, code: str, letter_date: str, now: float) -> list[Problem]:
        """Why the préfecture cannot take the answer ``code`` of ``letter_date`` for ``id_acte`` ([] if it can)."""
        acts = [t for t in self._transactions.values() if t.response_key is None and t.id_acte == id_acte]
        if not acts:
            return [Problem(f"{ODT_VERIF_17} (act {id_acte} was never acknowledged)", field=id_acte,
                            rule="response-act-unknown")]
        live = [t for t in acts if t.status(now) == "ACKNOWLEDGED"]
        if not live:
            return [Problem(f"act {id_acte} is {acts[-1].status(now)}, not ACKNOWLEDGED", field=id_acte,
                            rule="response-act-state")]
        letter = LETTER_OF[code]
        sent = sorted({f.day.isoformat() for t in live for f in t.followups if f.code == letter})
        if letter_date in sent:
            return []
        return [Problem(f"no letter {letter} of {letter_date} was sent about act {id_acte} "
                        f"(letters {letter} sent: {', '.join(sent) or 'none'})", field=id_acte,
                        rule="response-letter")]

    def _type_code_problems(self, acte: etree._Element) -> list[Problem]:
        nature = int(acte.get(f"{{{NS}}}CodeNatureActe", "0"))
        allowed = self.classification.type_codes_for(nature)
        problems = []
        for element in acte.iter(f"{{{NS}}}NomFichier"):
            found = DOCUMENT_NAME.fullmatch((element.text or "").strip())
            if allowed and found and found.group("code") not in allowed:
                problems.append(Problem(
                    f"piece type {found.group('code')} is not in the classification for nature {nature} "
                    f"({', '.join(sorted(allowed))})",
                    field=(element.text or "").strip(), rule="type-code-unknown",
                ))
        return problems

    # -- queries --------------------------------------------------------------------------

    def find(self, client_key: str) -> tuple[str, str] | None:
        """The latest transaction submitted with ``client_key`` and its status."""
        with self._lock:
            ids = self._by_client_key.get(client_key)
            if not ids:
                return None
            return ids[-1], self._transactions[ids[-1]].status(time.monotonic())

    def transaction(self, transaction_id: str) -> Transaction | None:
        with self._lock:
            return self._transactions.get(transaction_id)

    def status(self, transaction_id: str) -> str:
        with self._lock:
            transaction = self._transactions.get(transaction_id)
            return transaction.status(time.monotonic()) if transaction else "UNKNOWN"

    def _known(self, transaction_id: str) -> Transaction:
        transaction = self._transactions.get(transaction_id)
        if transaction is None:
            raise LegalityFault("UNKNOWN_TRANSACTION", f"no transaction {transaction_id}", transaction_id)
        return transaction

    def followups(self, transaction_id: str) -> list[FollowUp]:
        with self._lock:
            return list(self._known(transaction_id).followups)

    def message(self, message_id: str) -> FollowUp:
        with self._lock:
            for transaction in self._transactions.values():
                for followup in transaction.followups:
                    if followup.message_id == message_id:
                        return followup
        raise LegalityFault("UNKNOWN_TRANSACTION", f"no message {message_id}")

    # -- the préfecture's side ----------------------------------------------------------------

    def cancel(self, transaction_id: str, id_acte: str) -> str:
        """6-1 → 6-2: only an ACKNOWLEDGED act, by its IDActe; idempotent once CANCELLED."""
        with self._lock:
            transaction = self._known(transaction_id)
            status = transaction.status(time.monotonic())
            if status == "CANCELLED" and transaction.id_acte == id_acte:
                return status
            if status != "ACKNOWLEDGED" or transaction.id_acte != id_acte or transaction.response_key:
                raise LegalityFault(
                    "NOT_CANCELLABLE",
                    f"transaction {transaction_id} is {status}"
                    + (f" with IDActe {transaction.id_acte}" if transaction.id_acte else "")
                    + f"; only an ACKNOWLEDGED act can be cancelled, by its IDActe (got {id_acte})",
                    transaction_id,
                )
            self._add_followup(transaction, "6-2")
            transaction.cancelled = True
            return "CANCELLED"

    def followup(self, id_acte: str, code: str) -> FollowUp:
        """The préfecture sends ``code`` about the acknowledged act ``id_acte``.

        KeyError when no transaction has that IDActe, ValueError when the code is unknown or
        the act is not ACKNOWLEDGED (yet).
        """
        if code not in messages.FOLLOWUP_CODES:
            raise ValueError(f"unknown follow-up code {code!r}; one of {', '.join(messages.FOLLOWUP_CODES)}")
        with self._lock:
            now = time.monotonic()
            found = [t for t in self._transactions.values() if t.id_acte == id_acte and t.response_key is None]
            if not found:
                raise KeyError(f"no transaction with IDActe {id_acte}")
            live = [t for t in found if t.status(now) == "ACKNOWLEDGED"]
            if not live:
                raise ValueError(f"act {id_acte} is {found[-1].status(now)}, not ACKNOWLEDGED")
            followup = self._add_followup(live[-1], code)
            if code == "6-2":
                live[-1].cancelled = True
            return followup

    def _add_followup(self, transaction: Transaction, code: str) -> FollowUp:
        assert transaction.id_acte is not None
        today = date.today()
        number = next(self._message_counter)
        name = f"{transaction.id_acte}-{code}_{number}.xml"
        attachments: dict[str, bytes] = {}
        attachment = None
        if code in ("2-1", "3-1", "4-1", "5-1"):
            attachment = f"{transaction.id_acte}-{code}_{number}_1.pdf"
            title = messages.FOLLOWUP_CODES[code]
            attachments[attachment] = make_pdf([f"Préfecture - {title}", f"Acte {transaction.id_acte}",
                                                f"Courrier du {today:%d/%m/%Y} (simulateur Hent)"])
        letters = [f for f in transaction.followups if f.code in ("3-1", "4-1")]
        content = messages.followup_message(
            code, transaction.id_acte, today, attachment=attachment,
            letter_date=letters[-1].day if letters else None,
        )
        followup = FollowUp(f"{self._run}-M{number:06d}", code, name, today, content, attachments)
        transaction.followups.append(followup)
        return followup

    def request_classification(self, siren: str, current: date | None) -> tuple[str, str, bytes]:
        """7-1 → (code, file name, content): 7-3 when ``current`` is the current date, else 7-2."""
        with self._lock:
            departement = self._departements.get(siren, self.departement)
            number = next(self._message_counter)
            day = self.classification_date
        if current == day:
            return "7-3", f"{departement}-{siren}----7-3_{number}.xml", messages.reponse_sans_changement(day)
        content = messages.retour_classification(self.classification_bytes, day)
        return "7-2", f"{departement}-{siren}----7-2_{number}.xml", content

    def publish_classification(self, day: date) -> None:
        """From now on acts stamped with an older ClassificationDateVersion get ODT-VERIF-01."""
        with self._lock:
            self.classification_date = day

    def counts(self) -> dict[str, Any]:
        """``by_act`` / ``recorded``: submissions / transactions per act (``SIREN:NUMERO:DATE``);
        ``archives``: the sha256 of each archive per act; ``responses`` / ``responses_recorded``:
        answers to letters received (duplicates included) / recorded, per ``IDActe:code``."""
        with self._lock:
            recorded = Counter(t.act_key for t in self._transactions.values() if t.act_key)
            answers = Counter(":".join(t.response_key.split(":")[:2]) for t in self._transactions.values()
                              if t.response_key)
            archives = {key: list(hashes) for key, hashes in self._archives.items()}
            return {"by_act": dict(self.by_act), "recorded": dict(recorded), "archives": archives,
                    "responses": dict(self.by_response), "responses_recorded": dict(answers)}
