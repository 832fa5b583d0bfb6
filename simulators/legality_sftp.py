"""The legality platform behind two folders — "the desk" — as some transmission platforms offer it.

The desk makes :class:`~simulators.legality_platform.Platform` reachable through files.  It
only touches the local filesystem under ``root``; an SFTP server (OpenSSH's sshd, or
:mod:`simulators.sftp_server`) serves that folder to the bus.

Read, from ``root/inbox``: every regular file named ``*.tar.gz`` that is not hidden.  A client
uploads ``<name>.part`` and renames it, so a file under its final name is complete and
``.part`` files are never taken.  Each archive is submitted under its own name, with the
client key ``QUAD--SIREN--YYYYMMDD-N`` taken from ``TRI-QUAD--SIREN--YYYYMMDD-N.tar.gz``
(standards.md §1.8; the archive's name when it does not parse) and no expected IDActe, then
moved to ``inbox/processed/``: never deleted, never taken twice.  A name already there gets
``.<k>`` before ``.tar.gz``.

- An archive that was already received (the same client key or the same act, not
  rejected; the platform's ``DUPLICATE`` fault) gets no answer, because the first one's
  answer was written.  It is listed in ``received()["duplicates"]``.
- An archive that the platform refuses at once (not a tar.gz, no valid envelope:
  ``INVALID_ARCHIVE``), or that fails in any other way, goes to ``inbox/refused/``.  Beside
  it, ``<name>.error.txt`` says why, and the desk goes on.

Written, into ``root/outbox``, each file as ``.<name>.tmp`` then renamed (an SFTP client never
sees a partial answer): the ministry's answer to each archive at once (the platform's
``ack_delay`` is a SOAP-side notion), the follow-ups :meth:`LegalityDesk.followup` asks for
and the classification files that :meth:`LegalityDesk.publish_classification` sends.

- ``answer_format="archive"`` (default; how the ministry packs its answers, standards.md
  §1.11): a flat ``QUAD--SPREF<DDD>1-<SIREN>-<YYYYMMDD>-<n>.tar.gz`` holding the ministry's
  envelope ``EnveloppeMISILLCL`` under the same stem + ``.xml`` (it lists the message), the
  message, and the letters (PDF) that the message names.  QUAD is the quadrigram of the
  collectivité's last archive (``EACT`` before any), DDD its département, the date is
  today's, and ``n`` is a counter of the desk that skips names already in outbox.
- ``answer_format="xml"``: the message alone under the ministry's name (``<IDActe>-1-2_<n>.xml``,
  ``<IDActe>-1-3_<n>.xml``, ``ANO_<envelope>.xml``, ``<IDActe>-2-1_<n>.xml``,
  ``DDD-SIREN----7-2_<n>.xml``), and each letter under its own name
  (``<IDActe>-2-1_<n>_1.pdf``).  A name still in outbox gets ``.<k>`` before its extension.

Run it with ``python -m simulators.legality --desk DIR``, or in a test::

    with LegalityDesk.for_root(tmp_path) as desk:
        (desk.inbox_dir / "SLO-EACT--214400152--20260113-1.tar.gz").write_bytes(archive)
"""

from __future__ import annotations

__all__ = ["ANSWER_FORMATS", "LegalityDesk", "client_key_for"]

import io
import itertools
import logging
import os
import re
import tarfile
import threading
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from simulators import legality_messages as messages
from simulators._xml import XmlRefused, parse
from simulators.legality_platform import Platform
from simulators.legality_soap import LegalityFault
from transformers.actes_validate import ARCHIVE_NAME

ANSWER_FORMATS = ("archive", "xml")
_ARCHIVE = ".tar.gz"
_QUADRIGRAM = re.compile(r"[A-Za-z0-9]{3}-(?P<quadrigram>[A-Za-z0-9]{4})--")
_ADDRESSEE = re.compile(r"(?P<departement>[09][0-9][AB0-9])-(?P<siren>[0-9]{9})-")
_NS = messages.ACTES_NS
log = logging.getLogger(__name__)


def client_key_for(archive_name: str) -> str:
    """``TRI-QUAD--SIREN--YYYYMMDD-N.tar.gz`` → ``QUAD--SIREN--YYYYMMDD-N``; else the name itself."""
    found = ARCHIVE_NAME.fullmatch(archive_name)
    return found.group("envelope") if found else archive_name


def _is_archive(path: Path) -> bool:
    return path.name.endswith(_ARCHIVE) and not path.name.startswith(".") and path.is_file()


def _split(name: str) -> tuple[str, str]:
    """(stem, extension), ``.tar.gz`` counted as one extension."""
    if name.endswith(_ARCHIVE):
        return name[: -len(_ARCHIVE)], _ARCHIVE
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if stem else (name, "")


def _free_name(folder: Path, name: str) -> str:
    """``name``, or ``<stem>.<k><extension>`` (k = 2, 3...) when ``folder`` already holds it."""
    stem, extension = _split(name)
    candidates = itertools.chain([name], (f"{stem}.{k}{extension}" for k in itertools.count(2)))
    return next(c for c in candidates if not (folder / c).exists() and not (folder / f".{c}.tmp").exists())


def _addressee(message_name: str, message: bytes, departement: str) -> tuple[str, str]:
    """(département, SIREN) of the collectivité a message goes to: from its name, else from the
    envelope an AnomalieEnveloppe echoes."""
    found = _ADDRESSEE.match(message_name)
    if found:
        return found["departement"], found["siren"]
    try:
        idcl = next(parse(message, name=message_name, entities="keep").iter(f"{{{_NS}}}IDCL"), None)
    except XmlRefused as exc:
        raise ValueError(f"{message_name}: cannot tell which collectivité it goes to ({exc.message})") from exc
    if idcl is None:
        raise ValueError(f"{message_name}: cannot tell which collectivité it goes to")
    return idcl.get(f"{{{_NS}}}Departement", departement), idcl.get(f"{{{messages.INSEE_NS}}}SIREN", "")


def _pack(files: dict[str, bytes]) -> bytes:
    """A flat tar.gz of ``files``, in order."""
    out = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), now, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class LegalityDesk:
    """The platform behind ``root/inbox`` and ``root/outbox`` (see the module's docstring)."""

    def __init__(
        self,
        root: Path,
        platform: Platform,
        *,
        inbox: str = "inbox",
        outbox: str = "outbox",
        interval: float = 0.2,
        answer_format: Literal["archive", "xml"] = "archive",
    ) -> None:
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"unknown answer format {answer_format!r}; one of {', '.join(ANSWER_FORMATS)}")
        self.root = Path(root)
        self.platform = platform
        self.inbox_dir = self.root / inbox
        self.outbox_dir = self.root / outbox
        self.processed_dir = self.inbox_dir / "processed"
        self.refused_dir = self.inbox_dir / "refused"
        for folder in (self.outbox_dir, self.processed_dir, self.refused_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.interval = interval
        self.answer_format = answer_format
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._serial = itertools.count(1)
        self._quadrigrams: dict[str, str] = {}  #: SIREN → quadrigram of its last archive
        self._handled: list[str] = []
        self._duplicates: list[str] = []
        self._refused: list[str] = []

    @classmethod
    def for_root(
        cls,
        root: Path | str,
        *,
        classification: Path | None = None,
        inbox: str = "inbox",
        outbox: str = "outbox",
        interval: float = 0.2,
        answer_format: Literal["archive", "xml"] = "archive",
        **platform_kwargs: Any,
    ) -> LegalityDesk:
        """A desk on a new Platform built as LegalitySimulator builds it (``ack_delay``,
        ``departement``, ``validator`` go to the platform)."""
        from simulators.legality import DEFAULT_CLASSIFICATION  # here: that module imports this one

        platform = Platform(classification or DEFAULT_CLASSIFICATION, **platform_kwargs)
        return cls(Path(root), platform, inbox=inbox, outbox=outbox, interval=interval, answer_format=answer_format)

    # -- life ---------------------------------------------------------------------------

    def start(self) -> LegalityDesk:
        """Process the inbox every ``interval`` seconds in a daemon thread."""
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=f"legality-desk-{self.root.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current round (waits 10 s at most)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> LegalityDesk:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.process_once()
            except Exception:  # the desk goes on; a file that failed is tried again next round
                log.exception("legality desk: a round over %s failed", self.inbox_dir)
            self._stopping.wait(self.interval)

    # -- the collectivité's side --------------------------------------------------------

    def process_once(self) -> int:
        """Handle every complete archive in inbox, oldest first; how many were handled."""
        with self._lock:
            archives = []
            for path in self.inbox_dir.iterdir():
                try:
                    if _is_archive(path):
                        archives.append((path.stat().st_mtime, path.name))
                except FileNotFoundError:  # taken away meanwhile
                    continue
            for _, name in sorted(archives):
                self._handle(name)
            return len(archives)

    def _handle(self, name: str) -> None:
        path = self.inbox_dir / name
        self._handled.append(name)
        try:
            transaction = self.platform.submit(name, client_key_for(name), "", path.read_bytes())
            written: list[str] = []
            if transaction.message:  # an answer the ministry acknowledges without a message (2-2, 3-2, 4-2): none
                departement, siren = _addressee(transaction.message_name, transaction.message,
                                                self.platform.departement)
                found = _QUADRIGRAM.match(name)
                if found:
                    self._quadrigrams[siren] = found["quadrigram"]
                written = self._write_answer(departement, siren, transaction.message_name, transaction.message, {})
        except LegalityFault as fault:
            if fault.code != "DUPLICATE":
                self._refuse(path, str(fault))
                return
            log.info("legality desk: %s is a duplicate (%s); no answer", name, fault.message)
            self._duplicates.append(name)
        except Exception as exc:
            log.exception("legality desk: %s could not be handled", name)
            self._refuse(path, f"{type(exc).__name__}: {exc}")
            return
        else:
            log.info("legality desk: %s → %s (%s)", name, ", ".join(written), transaction.outcome)
        os.replace(path, self.processed_dir / _free_name(self.processed_dir, name))

    def _refuse(self, path: Path, why: str) -> None:
        target = _free_name(self.refused_dir, path.name)
        os.replace(path, self.refused_dir / target)
        (self.refused_dir / f"{target}.error.txt").write_text(f"{path.name}: {why}\n", encoding="utf-8")
        self._refused.append(path.name)
        log.warning("legality desk: %s refused: %s", path.name, why)

    # -- the préfecture's side ------------------------------------------------------------

    def followup(self, id_acte: str, code: str) -> list[str]:
        """The préfecture sends ``code`` (2-1, 3-1, ..., 6-2) about the acknowledged act
        ``id_acte``; the names written in outbox.  KeyError / ValueError as Platform.followup."""
        followup = self.platform.followup(id_acte, code)
        with self._lock:
            departement, siren = _addressee(followup.name, followup.content, self.platform.departement)
            return self._write_answer(departement, siren, followup.name, followup.content, followup.attachments)

    def publish_classification(self, day: date, sirens: Iterable[str]) -> list[str]:
        """A new classification from ``day``: acts stamped earlier get ODT-VERIF-01, and each
        collectivité of ``sirens`` is sent the RetourClassification (7-2); the names written."""
        sirens = list(sirens)
        wrong = [s for s in sirens if not (len(s) == 9 and s.isdigit())]
        if wrong:
            raise ValueError(f"SIREN {', '.join(map(repr, wrong))} is not 9 digits")
        self.platform.publish_classification(day)
        written: list[str] = []
        with self._lock:
            for siren in sirens:
                _, name, content = self.platform.request_classification(siren, None)
                departement, _ = _addressee(name, content, self.platform.departement)
                written += self._write_answer(departement, siren, name, content, {})
        return written

    def received(self) -> dict[str, Any]:
        """``platform.counts()`` and the archive names ``handled`` (all, in order), ``duplicates``
        (answered by nothing) and ``refused`` (moved to inbox/refused/)."""
        with self._lock:
            mine = {"handled": list(self._handled), "duplicates": list(self._duplicates),
                    "refused": list(self._refused)}
        return {**self.platform.counts(), **mine}

    # -- outbox -------------------------------------------------------------------------

    def _write_answer(
        self, departement: str, siren: str, message_name: str, message: bytes, attachments: dict[str, bytes]
    ) -> list[str]:
        if self.answer_format == "xml":
            files = {message_name: message, **attachments}
            return [self._write(_free_name(self.outbox_dir, name), data) for name, data in files.items()]
        quadrigram, today = self._quadrigrams.get(siren, "EACT"), f"{date.today():%Y%m%d}"
        while True:
            stem = f"{quadrigram}--SPREF{departement}1-{siren}-{today}-{next(self._serial)}"
            if not (self.outbox_dir / f"{stem}{_ARCHIVE}").exists():
                break
        envelope = messages.enveloppe_misillcl(departement, siren, [message_name])
        return [self._write(stem + _ARCHIVE, _pack({f"{stem}.xml": envelope, message_name: message, **attachments}))]

    def _write(self, name: str, data: bytes) -> str:
        temporary = self.outbox_dir / f".{name}.tmp"
        temporary.write_bytes(data)
        os.replace(temporary, self.outbox_dir / name)
        return name
