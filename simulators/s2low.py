"""An S2LOW server (the tiers de télétransmission) and the ministry behind it, for the demo and the tests.

It serves S2LOW's API (standards.md §4.2) on a real HTTP server on 127.0.0.1, for one
collectivité's account (:class:`~simulators.s2low_actes.Authority`), and is strict where
S2LOW is (see :mod:`simulators.s2low_actes`): the subject must be ISO-8859-1 (UTF-8 bytes,
control characters, a newline or more than 499 characters are refused), the number must match
``^[0-9A-Z_]{2,15}$`` and be new for the collectivité.  Run it with
``python -m simulators.s2low --port 8089``, or in a test::

    with S2lowSimulator(ack_delay=0.0) as s2low:
        requests.get(f"{s2low.url}/api/test-connexion.php")   # "OK"

Pages (``KO\\n<message>`` on a refusal, in S2LOW's words where they are known):

- ``GET /api/test-connexion.php`` → ``OK``; ``GET /api/get-nounce.php`` (HTTP Basic) →
  ``{"nounce": ...}``, then any page takes ``?nounce=&login=&hash=sha256("password:nounce")``
  (five minutes).  With ``login``/``password`` set, each page needs Basic or a nonce.
- ``POST /modules/actes/actes_transac_create.php`` (multipart: ``api=1``, ``nature_code``,
  ``number``, ``subject``, ``decision_date``, ``classif1..5``, ``document_papier``,
  ``en_attente``, ``type_acte``, ``type_pj[]``, files ``acte_pdf_file``, ``acte_attachments[]``)
  → ``OK\\n<id>``; ``en_attente=1`` (or ``hold``) leaves the act in status 17 (18) until
  :meth:`S2lowSimulator.post_waiting`.
- ``GET .../actes_transac_get_status.php?transaction=<id>`` or ``?unique_id=<IDActe>`` (or
  ``<IDActe>-1-1``, the Acte message's name) → ``OK\\n<status>\\n<XML><message>``.
- ``POST .../actes_transac_reponse_create.php`` (``api=1``, ``id`` of the letter, ``type_envoie``
  3 refus / 4 réponse, ``type_acte``, ``type_pj[]``, files ``acte_pdf_file``,
  ``acte_attachments[]``) → ``OK\n<id>``; its status is 4 with the ministry's 3-5 / 4-5 (nothing
  for a 2-2) after ``ack_delay``.
- ``POST .../actes_transac_cancel.php`` (``api=1``, ``id``) → ``OK\\n<cancellation id>``; the
  cancellation transaction reaches 4 with the 6-2 after ``ack_delay``.
- ``GET .../actes_classification_fetch.php?api=1`` (the 7-2 S2LOW holds),
  ``.../actes_classification_request.php?api=1`` (S2LOW asks the ministry: its 7-2 is kept).
- ``GET .../api/list_actes.php?status_id=&offset=&limit=`` (JSON ``transactions``: ``id``,
  ``number``, ``decision_date``...), ``.../api/list_document_prefecture.php`` (unread
  messages of the préfecture), ``.../api/document_prefecture_mark_as_read.php?transaction_id=``,
  ``.../actes_transac_get_document.php?id=`` (an act: ``type-status-id`` lines of what relates to
  it; a message: its ``.tar.gz``), ``.../actes_transac_get_files_list.php?transaction=``, and once
  the act is acknowledged (4; ``KO`` before) ``.../actes_create_pdf.php?trans_id=`` (its bordereau)
  and ``.../actes_download_file.php?file=<id>&tampon=true`` (a PDF of it stamped; without
  ``tampon``, the file as received).
- Control: ``GET /control/received``, ``POST|DELETE /control/faults``, ``POST /control/followup``
  ``{"id_acte", "code"}``, ``POST /control/classification`` ``{"date"}``, ``POST /control/post``.

Assumed where standards.md and S2LOW's code leave it open: a refused login is ``KO\\nÉchec de
l'authentification`` with HTTP 200 on the ``modules/`` pages (S2LOW's legacy pages) and HTTP 401
on the ``api/`` ones; list_actes gives the decision date as ``decision_date``; a message of the
préfecture is served at once by ``get_document?id=`` (S2LOW redirects to
``actes_download_file.php``) as a tar.gz holding the ministry's envelope, the message and its
PDF; its status is 21 for a 2-1 or 5-1 (no AR expected), else 7; an act the ministry refused is
-1 with the AnomalieActe (or AnomalieEnveloppe) XML followed by S2LOW's message, and a
cancelled one 0.  Faults (:data:`FAULT_KINDS`) apply to a page by its name without ``.php``
(``actes_transac_create``) or to every page (``*``).
"""

from __future__ import annotations

__all__ = ["FAULT_KINDS", "Fault", "S2lowSimulator", "main"]

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import ssl
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any, Self

from simulators._http_sim import HttpSimulator, InjectedFault, SimulatorCommand
from simulators.s2low_actes import Authority, S2lowOffice
from simulators.s2low_http import S2lowHandler, S2lowServer

#: latency: wait, then answer; http500: an HTML error page, nothing done; timeout: answer nothing
#: for ``seconds`` (default an hour, or until stop), nothing done; drop_reply_after_recording: do
#: the call, then close without answering; refuse_credentials: the login is refused
FAULT_KINDS = ("latency", "http500", "timeout", "drop_reply_after_recording", "refuse_credentials")
NONCE_TTL = 300.0
log = logging.getLogger(__name__)


class Fault(InjectedFault):
    """An injected fault: ``kind`` for page ``operation`` (or "*"), ``count`` times (None: always)."""

    kinds = FAULT_KINDS

    def __post_init__(self) -> None:
        super().__post_init__()
        self.operation = self.operation.removesuffix(".php")


class S2lowSimulator(HttpSimulator[Fault]):
    """S2LOW behind a loopback HTTP server: start(), url, stop(); a context manager."""

    fault_type = Fault
    server_class = S2lowServer
    handler_class = S2lowHandler
    name = "s2low"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, ack_delay: float = 0.0, transmit_delay: float = 0.0,
        classification: Path | None = None, authority: Authority | None = None, login: str | None = None,
        password: str | None = None, faults: list[Fault] | tuple[Fault, ...] = (), tls: ssl.SSLContext | None = None,
        hold: int | None = None,
    ) -> None:
        if hold not in (None, 17, 18):
            raise ValueError("hold is 17 (to be posted) or 18 (to be signed)")
        self.authority = authority or Authority()
        super().__init__(host, port, ack_delay=ack_delay, classification=classification,
                         departement=self.authority.departement, faults=faults, tls=tls)
        self._workdir = tempfile.TemporaryDirectory(prefix="hent-s2low-")
        self.office = S2lowOffice(self.platform, self.authority, Path(self._workdir.name),
                                  transmit_delay=transmit_delay)
        self.office.hold = hold
        self.login, self.password = login, password
        self._nonces: dict[str, float] = {}

    # -- life ---------------------------------------------------------------------------

    def start(self) -> Self:
        self.office.workdir.mkdir(parents=True, exist_ok=True)  # again after a stop()
        return super().start()

    def stop(self) -> None:
        """Stop serving (a hung call is released at once) and forget the files received."""
        super().stop()
        self._workdir.cleanup()

    # -- control ------------------------------------------------------------------------

    @property
    def hold(self) -> int | None:
        """17 or 18: every new act waits at S2LOW for a person (as with ``en_attente=1``)."""
        return self.office.hold

    @hold.setter
    def hold(self, status: int | None) -> None:
        self.office.hold = status

    def followup(self, id_acte: str, code: str) -> dict[str, str]:
        """The préfecture sends ``code`` (2-1, 3-1, 3-5, 4-1, 4-5, 5-1, 6-2) about an acknowledged act."""
        return self.office.followup(id_acte, code)

    def publish_classification(self, day: date | str) -> None:
        """The ministry's new classification: acts S2LOW stamps with an older one get ODT-VERIF-01
        until S2LOW is asked for it (``actes_classification_request.php``)."""
        self.platform.publish_classification(date.fromisoformat(day) if isinstance(day, str) else day)

    def post_waiting(self, transaction_id: int | None = None) -> list[int]:
        """A person posts (or signs) the acts S2LOW holds: they go to the ministry."""
        return self.office.post_waiting(transaction_id)

    @property
    def refused(self) -> dict[str, int]:
        """What S2LOW had to refuse, by field (``subject``, ``number``...): the strictness hook."""
        with self.office._lock:
            return dict(self.office.refused)

    def received(self) -> dict[str, Any]:
        """``by_act`` (create calls that reached S2LOW, per ``SIREN:NUMBER:DATE``, duplicates included),
        ``recorded`` (transactions), ``duplicates``, ``answers`` (answers to letters accepted, per
        ``<IDActe>:<code>``), ``refused`` (per field), ``unread``, ``calls`` (per page)."""
        office = self.office
        with office._lock:
            recorded = Counter(f"{self.authority.siren}:{t.number}:{t.decision_date}"
                               for t in office.transactions.values() if t.type == 1)
            counts = {"by_act": dict(office.by_act), "recorded": dict(recorded), "duplicates": office.duplicates,
                      "answers": dict(office.by_answer),
                      "refused": dict(office.refused), "unread": len(office.unread())}
        with self._lock:
            return {**counts, "calls": dict(self._calls)}

    # -- what the handler asks ----------------------------------------------------------

    def _basic_ok(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic" or self.login is None:
            return False
        try:
            login, _, password = base64.b64decode(encoded.strip(), validate=True).decode("latin-1").partition(":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(login.encode(), self.login.encode()) and \
            hmac.compare_digest(password.encode(), (self.password or "").encode())

    def _new_nonce(self, authorization: str) -> str | None:
        if not self._basic_ok(authorization):
            return None
        nonce = secrets.token_hex(16)
        with self._lock:
            now = time.monotonic()
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_TTL}
            self._nonces[nonce] = now
        return nonce

    def _authorised(self, authorization: str, query: dict[str, str]) -> bool:
        if self.login is None:
            return True
        if self._basic_ok(authorization):
            return True
        nonce = query.get("nounce", "")
        with self._lock:
            created = self._nonces.get(nonce)
        expected = hashlib.sha256(f"{self.password or ''}:{nonce}".encode()).hexdigest()
        return (created is not None and time.monotonic() - created < NONCE_TTL
                and hmac.compare_digest(query.get("login", ""), self.login)
                and hmac.compare_digest(query.get("hash", ""), expected))

    def _control_followup(self, payload: dict[str, Any]) -> tuple[int, Any]:
        try:
            return super()._control_followup(payload)
        except KeyError as exc:  # a missing field too is answered 404, naming it
            return 404, {"error": str(exc.args[0])}

    def _control_route(self, method: str, path: str, payload: dict[str, Any]) -> tuple[int, Any] | None:
        if method == "POST" and path == "/control/post":
            return 200, {"posted": self.post_waiting(payload.get("transaction_id"))}
        return None


def main(argv: list[str] | None = None) -> int:
    command = SimulatorCommand("simulators.s2low", __doc__, 8089)
    parser = command.parser
    parser.add_argument("--siren", default=Authority.siren, help="SIREN of the account's collectivité")
    parser.add_argument("--departement", default=Authority.departement, help="its département (3 characters)")
    parser.add_argument("--login", help="require HTTP Basic (or a nonce) with this login")
    parser.add_argument("--password", help="... and this password")
    parser.add_argument("--hold", type=int, choices=(17, 18), help="every act waits for a person (17 or 18)")
    command.add_fault_and_tls_options(Fault, "PAGE", latency=False)
    args = command.parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    running = S2lowSimulator(
        args.host, args.port, ack_delay=args.ack_delay, classification=args.classification,
        authority=Authority(siren=args.siren, departement=args.departement), login=args.login,
        password=args.password, faults=args.fault, tls=command.tls(args), hold=args.hold,
    ).start()
    return command.serve(running, f"S2LOW simulator on {running.url} (SIREN {running.authority.siren})")


if __name__ == "__main__":
    raise SystemExit(main())
