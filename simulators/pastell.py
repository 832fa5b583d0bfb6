"""A Pastell (REST API v2, flow ``actes-generique``) with its TdT and the ministry, for the tests and the demo.

A real HTTP server on 127.0.0.1 (ThreadingHTTPServer) answering the part of Pastell's API that
``connectors/pastell_outbound.py`` uses, in the shapes of
``../shared/reference/pastell/pastell_4.1.18_openapi.json``; behind it a simulated tiers de
télétransmission builds the ACTES archive and the ministry judges it
(:class:`simulators.legality_platform.Platform`: ARActe, or AnomalieActe such as ODT-VERIF-01
when the TdT's classification date is older than the one the préfecture published).  Run it
with ``python -m simulators.pastell --port 8089 --token secret``, or in a test::

    with PastellSimulator(token="t0ken", ack_delay=0.2) as pastell:
        requests.get(f"{pastell.url}/api/v2/version", headers={"Authorization": "Bearer t0ken"})

Routes (under ``/api/v2/``, see :data:`simulators.pastell_http.OPERATIONS`): ``version``,
``entite``, ``entite/{id_e}/document`` (search by ``type`` + ``numero_de_lacte``, ``lastetat``,
``search``; create), ``…/document/{id_d}`` (GET, PATCH the form), ``…/file/{field}/{num}``
(POST a file: ``file_name`` + ``file_content`` multipart; GET it), ``…/externalData/type_piece``
(GET the typology, PATCH ``type_pj[]``; ``type_piece_<libellé>`` on a message of the préfecture),
``…/action/{action}`` (``send-tdt``, ``annulation-tdt``, ``verif-tdt``, ``supression``; on a message:
``repondre``, ``send-reponse-prefecture``, ``verif-reponse-tdt``), ``entite/{id_e}/connecteur`` and
``…/connecteur/{id_ce}/file/classification_file/0`` (the 7-2 the TdT keeps).  Control (JSON):
``POST /control/faults`` ``{"kind", "operation", "count", "seconds"}``, ``DELETE /control/faults``,
``POST /control/followup`` ``{"id_acte", "code"}``, ``POST /control/classification`` ``{"date"}``,
``GET /control/received``.

Faults (:data:`FAULT_KINDS`), for an operationId, ``action:<name>`` or ``*``: ``latency``,
``http500`` (Pastell's error shape), ``timeout`` (no answer for ``seconds``, then closed),
``drop`` (closed before anything is done), ``lost_reply`` (done, then closed unanswered),
``refuse_credentials`` (401), ``rate_limit`` (429 with ``Retry-After: seconds``).

Where the OpenAPI description and standards.md are silent, this simulator assumes:

- File uploads go to ``POST …/document/{id_d}/file/{field}/{num}`` (Pastell's
  ``DocumentAPIController::postFile``, standards.md §4.1); the description's
  ``POST …/document/{id_d}?field=`` is accepted too (num 0).  Uploading to a ``num`` again
  replaces that file, which makes uploads idempotent.
- ``data`` values are strings, as the description types them: a file field holds its file
  names joined by newlines (Pastell itself returns a list).  The search returns flat rows
  (``id_d``, ``type``, ``titre``...) with ``last_action`` as an object like a document's.
- A PATCH with a value that breaks a field's rule is stored, as Pastell does; the answer says
  ``formulaire_ok: 0`` with the first problem in ``message``, and ``send-tdt`` is then refused
  (400 ``L'action « send-tdt »  n'est pas permise : document_is_valide (…)``).  Fields the form
  does not know are ignored.  Modification is allowed after ``creation``, ``modification`` and
  ``send-tdt-erreur`` only (403 afterwards).  ``type_pj[]`` must give one type per piece.
- The TdT refuses text outside ISO-8859-1 and anything :func:`transformers.actes_out.build_archive`
  refuses (``send-tdt-erreur``, 400 with its words); the ministry's anomaly is kept only as
  ``erreur-verif-tdt``'s message (Pastell stores no AnomalieActe file).  ``verif-tdt`` and
  ``verif-annulation-tdt`` run when a document is next read, once the answer is due.
- The préfecture's 2-1, 3-1, 4-1 and 5-1 become ``actes-reponse-prefecture`` documents, as
  Pastell's S2LOW connector files them (``getDocumentPrefecture``): ``type_reponse`` 2..5,
  ``numero_de_lacte``, ``related_transaction_id``, ``transaction_id`` (the ministry's message id),
  the package (envelope, message, letter) as ``reponse_prefecture`` (``<libellé>.tar.gz``), its
  files as ``reponse_prefecture_unzip`` (sorted by name), ``attente-reponse-prefecture`` (a 5-1:
  ``termine``); the act's document gets ``has_reponse_prefecture`` and ``reponse_prefecture_file``
  (``reponse_prefecture.json``: type → ``/Document/detail?id_d=…&id_e=…``, a second message of a
  type replacing the first's link).  Other codes (6-2) have no document in Pastell.
- An answer (see :mod:`simulators.pastell_store`): ``repondre`` sets ``repondre`` and writes no
  action; the PATCH and uploads make the last action ``modification``; ``send-reponse-prefecture``
  needs ``repondre``, a ``reponse``, the typology typing every piece with a code of the act's
  nature, and is refused by the TdT (400, the document unchanged) for a ``reponse`` that is not a
  PDF, a refusal to a 2-1, further documents but with a 3-4, or a second answer to a letter.
  ``reply_delay`` (default ``ack_delay``) later, ``verif-reponse-tdt`` brings ``has_acquittement``
  and ``acquittement_file`` (``<numero>-ar-<libellé>.xml``, a 3-5 or 4-5), or ``termine`` for a 2-2.
- A document's detail gives its last action, not its history (Pastell's journal API has that;
  :meth:`PastellSimulator.document` is enough for the tests).  Ids are short base-36 strings.
- The brute-force limit (429 after 5 failed logins) is not simulated: 429 only when injected.
  File downloads are ``application/octet-stream``, as the description says; ``receive=true``
  (JSON, base64), which the description mentions but declares no media type for, is not offered.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ENTITY", "FAULT_KINDS", "Exchange", "PastellFault", "PastellSimulator", "main"]

import logging
import ssl
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from simulators._http_sim import HttpSimulator, InjectedFault, SimulatorCommand
from simulators.pastell_form import Entity
from simulators.pastell_http import PastellHandler, PastellServer, Reply
from simulators.pastell_store import PastellStore

FAULT_KINDS = ("latency", "http500", "timeout", "drop", "lost_reply", "refuse_credentials", "rate_limit")
DEFAULT_ENTITY = Entity("1", "Commune de Saint-Herblain", "214400152", "044", 1, "31")
VERSION = "4.1.18"
log = logging.getLogger(__name__)


class PastellFault(InjectedFault):
    """``kind`` for ``operation`` (an operationId, ``action:send-tdt``, or "*"), ``count`` times
    (None: always); ``seconds`` of latency or timeout, or the Retry-After of a rate limit."""

    kinds = FAULT_KINDS


@dataclass(frozen=True)
class Exchange:
    """One answer the simulator gave, for the contract test."""

    operation: str
    method: str
    path: str
    status: int
    content_type: str
    headers: dict[str, str]
    body: bytes


class PastellSimulator(HttpSimulator[PastellFault]):
    """Pastell behind a loopback HTTP server: start(), url, stop(); a context manager.

    Its ``url`` is Pastell's address, e.g. ``http://127.0.0.1:8089`` (the API is under ``/api/v2``).
    """

    fault_type = PastellFault
    server_class = PastellServer
    handler_class = PastellHandler
    name = "pastell"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ack_delay: float = 0.0, classification: Path | None = None,
        entities: list[Entity] | None = None, token: str | None = None, login: str | None = None,
        password: str | None = None, faults: list[PastellFault] | tuple[PastellFault, ...] = (), latency: float = 0.0,
        tls: ssl.SSLContext | None = None, reply_delay: float | None = None,
    ) -> None:
        super().__init__(host, port, ack_delay=ack_delay, classification=classification, faults=faults,
                         latency=latency, tls=tls)
        self.token, self.login, self.password = token, login, password
        self.store = PastellStore(self.platform, list(entities or [DEFAULT_ENTITY]), ack_delay=ack_delay,
                                  reply_delay=reply_delay)
        self._exchanges: list[Exchange] = []

    def stop(self) -> None:
        """Stop serving (a call held by a ``timeout`` fault is released at once)."""
        super().stop()
        self.store.close()

    # -- control ------------------------------------------------------------------------

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture sends ``code`` (2-1, 3-1, 4-1, 5-1) about the acknowledged act ``id_acte``:
        ``message_id``, ``code``, ``name``, ``id_d`` (the message's document) and ``acte_id_d``."""
        return self.store.followup(id_acte, code)

    def publish_classification(self, day: date | str) -> None:
        """The préfecture publishes a classification: acts the TdT still dates older get ODT-VERIF-01."""
        self.platform.publish_classification(date.fromisoformat(day) if isinstance(day, str) else day)

    def tdt_fetches_classification(self) -> None:
        """The TdT fetches the préfecture's classification (its acts are dated by it from now on)."""
        self.store.tdt_classification_date = self.platform.classification_date

    def received(self) -> dict[str, Any]:
        """``by_act``: transmissions that reached the ministry per act (``SIREN:NUMERO:DATE``,
        refused duplicates included); ``documents``: Pastell documents per act; ``answers``: answers to
        letters the TdT took, per ``IDActe:code``; ``calls``: requests per operation (``action:<name>``
        for actions); ``statuses``: answers per HTTP status."""
        with self._lock:
            calls, statuses = dict(self._calls), dict(Counter(e.status for e in self._exchanges))
        counts = self.platform.counts()
        return {"by_act": counts["by_act"], "documents": self.store.act_counts(),
                "answers": self.store.answer_counts(), "calls": calls, "statuses": statuses}

    def exchanges(self) -> list[Exchange]:
        """Every answer given so far (unanswered calls aside), oldest first."""
        with self._lock:
            return list(self._exchanges)

    def document(self, id_d: str, id_e: str = DEFAULT_ENTITY.id_e) -> dict[str, Any]:
        """A document as ``GET …/document/{id_d}`` shows it (for the tests' assertions)."""
        return self.store.detail(id_e, id_d)

    # -- what the handler asks ----------------------------------------------------------

    def version(self) -> dict[str, Any]:
        return {"version": VERSION, "revision": 1, "last_changed_date": "2024-01-01 00:00:00",
                "extensions_versions_accepted": [VERSION], "version_complete": f"Version {VERSION} - Revision 1"}

    def entity_json(self, entity: Entity) -> dict[str, Any]:
        return {"id_e": entity.id_e, "denomination": entity.denomination, "siren": entity.siren,
                "type": "collectivite", "entite_mere": "0", "centre_de_gestion": "0", "is_active": True}

    def tdt_connector(self, id_e: str) -> dict[str, Any]:
        return {"id_ce": f"{id_e}01", "id_connecteur": "s2low", "libelle": "TdT (simulateur)", "global": False,
                "id_e": id_e}

    def _record(self, operation: str, method: str, path: str, reply: Reply) -> None:
        with self._lock:
            self._exchanges.append(Exchange(operation, method, path, reply.status, reply.content_type,
                                            dict(reply.headers), reply.encoded()))


def main(argv: list[str] | None = None) -> int:
    command = SimulatorCommand("simulators.pastell", __doc__, 8089,
                               classification_help="RetourClassification file (7-2) the ministry checks")
    parser = command.parser
    parser.add_argument("--token", help="accept this API token (Authorization: Bearer)")
    parser.add_argument("--login", help="accept HTTP Basic with this login...")
    parser.add_argument("--password", help="... and this password")
    command.add_fault_and_tls_options(PastellFault)
    args = command.parse(argv)
    if (args.login is None) != (args.password is None):
        parser.error("--login and --password go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    running = PastellSimulator(args.host, args.port, ack_delay=args.ack_delay, classification=args.classification,
                               token=args.token, login=args.login, password=args.password, faults=args.fault,
                               latency=args.latency, tls=command.tls(args)).start()
    return command.serve(running, f"Pastell simulator on {running.url} (API at {running.url}/api/v2)")


if __name__ == "__main__":
    raise SystemExit(main())
