"""The small interfaces a connector implements; the runtime owns every policy around them.

An inbound connector lists what is ready, claims it, reads it, and at the end commits
(done/ or delete) or rolls back (error/, with a note saying what to fix); it also carries
replies back to the software that dropped the document.  An outbound connector connects,
sends one artifact, closes.  Retries, back-off, metrics and journaling live in ``bus/``.

Each module ``connectors/<type>_<direction>.py`` exposes its class as ``Connector``; the
class's ``Config`` (a :class:`bus.config.ConnectorConfig`) sits in the same module.
"""

from __future__ import annotations

__all__ = [
    "Candidate",
    "Claimed",
    "Artifact",
    "SendResult",
    "InboundContext",
    "InboundConnector",
    "OutboundConnector",
    "RemoteStatus",
    "RemoteMessage",
    "AnsweringEndpoint",
    "InboxItem",
    "InboxEndpoint",
    "ARCHIVE",
    "FILE",
    "CANONICAL",
    "CANONICAL_RESPONSE",
    "DECP_XML",
    "DECP_JSON",
]

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from bus.errors import DocumentError

#: the artifact kinds: an ACTES archive built by the bus, a vendor's file relayed unchanged, the
#: checked act as JSON naming its files by sha256 (transformers/actes_canonical.py)
ARCHIVE = "actes-archive"
FILE = "file"
CANONICAL = "canonical-act"
#: the collectivité's answer to a letter of the préfecture as JSON (transformers/actes_responses.py)
CANONICAL_RESPONSE = "canonical-response"
#: a contract's données essentielles (DECP 2.x) as XML or as JSON, one contract per file (transformers/decp.py)
DECP_XML = "decp-xml"
DECP_JSON = "decp-json"


@dataclass(frozen=True)
class Candidate:
    """Something ready to be claimed: a bundle (a sidecar and the files it names)."""

    key: str  #: the sidecar's name, unique within the connector
    members: tuple[str, ...]  #: the other files of the bundle, by name


@dataclass(frozen=True)
class Claimed:
    """A bundle moved out of the source's reach, with where each of its files now is."""

    key: str
    files: dict[str, Path]  #: name in the bundle → local path (sidecar first)
    origin: str = ""  #: where it came from, for messages (a folder, a remote path)
    ref: str | None = None  #: what the runtime recorded it as (its document id), kept by :meth:`tag`

    @property
    def sidecar(self) -> Path:
        return self.files[self.key]


class ClaimedFile(Protocol):
    """A claimed file as the runtime reads it into the spool, then closes it."""

    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Artifact:
    """What an outbound connector sends: a file in the spool and what identifies it."""

    name: str  #: the name it must have at the endpoint (archive name, DECP file name)
    path: Path  #: where its bytes are
    sha256: str
    kind: str  #: "actes-archive", "decp-xml", ...
    client_key: str | None = None  #: envelope name or expected IDActe, to ask the endpoint about it
    meta: dict[str, Any] = field(default_factory=dict)
    #: where the spool keeps a blob by its sha256 (the files a canonical act names)
    blob: Callable[[str], Path] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SendResult:
    """The endpoint took the artifact: final at once (DELIVERED) or awaiting an answer (SENT)."""

    state: str  #: "DELIVERED" or "SENT"
    remote_id: str | None = None
    detail: str = ""


@dataclass
class InboundContext:
    """What the runtime lends an inbound connector, which knows no format by itself."""

    #: given a sidecar's name and bytes, the names of the files it refers to
    bundle_members: Callable[[str, bytes], list[str]] = field(default=lambda name, data: [])
    #: the spool's folder, where the runtime copies what a source claims (its free space is checked first)
    spool: Path | None = None


class InboundConnector(ABC):
    """list → claim → (runtime reads and records) → commit | rollback; reply at any time."""

    Config: ClassVar[type]
    direction: ClassVar[str] = "inbound"
    #: how many bundles of a poll the runtime takes in side by side when the configuration's
    #: ``intake_threads`` does not say: 1 where taking a bundle in is the interpreter's work and the
    #: local disk's (threads would only contend for the interpreter: a third more CPU per bundle for a
    #: folder), more where each step waits for a server
    intake_threads_default: ClassVar[int] = 1

    def __init__(self, name: str, config: Any, context: InboundContext | None = None) -> None:
        self.name = name
        self.config = config
        self.context = context or InboundContext()

    @property
    def intake_threads(self) -> int:
        """How many bundles of a poll the runtime takes in side by side (claim, spool, ledger)."""
        return getattr(self.config, "intake_threads", None) or self.intake_threads_default

    @abstractmethod
    def list_ready(self) -> list[Candidate]:
        """The bundles ready now (readiness rules applied); never blocks for long."""

    @abstractmethod
    def claim(self, candidate: Candidate) -> Claimed | None:
        """Move the bundle out of the source's reach; None if another poller took it."""

    @abstractmethod
    def tag(self, claimed: Claimed, ref: str) -> Claimed:
        """Durably remember ``ref`` with the claim, so that :meth:`recover` gives it back."""

    @abstractmethod
    def commit(self, claimed: Claimed) -> None:
        """The document is safe in the ledger and processed: move to done/ or delete."""

    @abstractmethod
    def rollback(self, claimed: Claimed, reason: str) -> None:
        """The document failed: move to error/ with ``<name>.error.txt`` holding ``reason``."""

    def reading(self, claimed: Claimed) -> Callable[[str], ClaimedFile]:
        """How the runtime opens the files of ``claimed``, one after the other, to copy them into the
        spool: ``open(name)``, closed by the runtime.  By default each file as it is; a source whose
        files a writer may still reach after their claim (a handle left open) counts their bytes
        against its limits as they are read, DocumentError past one: the runtime then gives the bundle
        back through :meth:`refuse`, nothing recorded."""
        return lambda name: open(claimed.files[name], "rb")

    def refuse(self, claimed: Claimed, error: DocumentError) -> None:
        """Give back a claimed bundle the runtime could not take in (``error``: a limit passed while its
        files were read), as :meth:`rollback` does a failed document's."""
        self.rollback(claimed, str(error))

    def settled(self) -> None:  # noqa: B027 - optional hook
        """After a poll's commits and rollbacks: make durable what they left to be synced together
        (a commit lost to a power cut before this only leaves its bundle claimed, for :meth:`recover`)."""

    @abstractmethod
    def recover(self) -> list[Claimed]:
        """Bundles claimed before a crash and neither committed nor rolled back."""

    @abstractmethod
    def reply(
        self, bundle: str, code: str | None, payload: bytes | None, summary: dict[str, Any],
        attachments: dict[str, bytes] | None = None,
    ) -> list[str]:
        """Hand a platform's message (verbatim), its attachments and a summary back to the source.

        Never overwrites: each call takes the next sequence number for ``bundle``.
        Returns the names written.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the connector holds (connections, handles)."""


class OutboundConnector(ABC):
    """connect → send → close."""

    Config: ClassVar[type]
    direction: ClassVar[str] = "outbound"
    #: the artifact kinds this endpoint takes ("actes-archive", "file", "canonical-act"); an
    #: instance may narrow it from its configuration
    consumes: tuple[str, ...] = (ARCHIVE,)

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config
        self._scopes: dict[int, OutboundConnector] = {}
        self._scopes_lock = threading.Lock()

    def scoped(self, siren: str | None) -> OutboundConnector:
        """The connector acting for ``siren``: itself, or — when its ``credentials:`` give that
        collectivité (or its group) credentials of its own — a copy of it using them, kept."""
        sets = getattr(self.config, "credentials", None) or []
        match = next((c for c in sets if siren in c.sirens), None) if siren else None
        if match is None:
            return self
        with self._scopes_lock:
            found = self._scopes.get(id(match))
            if found is None:
                config = self.config.model_copy(update={**match.overrides(), "credentials": []})
                found = self._scopes[id(match)] = type(self)(self.name, config)
            return found

    def close_scopes(self) -> None:
        """Close the copies :meth:`scoped` made."""
        with self._scopes_lock:
            scopes = list(self._scopes.values())
        for scope in scopes:
            scope.close()

    def certificates(self) -> list[tuple[str, Path]]:
        """The client certificates it may present, labelled ``default`` or by the SIRENs of their set."""
        found = []
        if getattr(self.config, "client_cert", None) is not None:
            found.append(("default", Path(self.config.client_cert)))
        for entry in getattr(self.config, "credentials", None) or []:
            if getattr(entry, "client_cert", None) is not None:
                found.append((",".join(entry.sirens), Path(entry.client_cert)))
        return found

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open what the endpoint needs (a session, a client)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Prepare what only shows when the connector gets ready (a WSDL, a key file), with no
        side effect and no network: raise ConfigError if it is wrong (``run_bus.py check``)."""

    @abstractmethod
    def send(self, artifact: Artifact) -> SendResult:
        """Deliver one artifact; raise TransientError to be retried, DocumentError to fail it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what ``connect`` opened."""


@dataclass(frozen=True)
class RemoteStatus:
    """What an endpoint that answers says of one submission (a transaction)."""

    remote_id: str  #: the endpoint's transaction id
    state: str  #: "IN_TRANSIT", "ACKNOWLEDGED", "REJECTED", "CANCELLED" or "UNKNOWN"
    message: bytes | None = None  #: the ministry's message verbatim (ARActe, AnomalieActe...), if any
    message_name: str | None = None  #: its file name, as the ministry named it
    detail: str = ""  #: the endpoint's own words (an error, a status label)
    #: IN_TRANSIT but held at the platform until a person acts: "to-be-posted", "to-be-signed"
    waiting: str | None = None


@dataclass(frozen=True)
class RemoteMessage:
    """A follow-up message of an act (2-1, 3-1, 4-1, 5-1, 3-5, 4-5, 6-2...), verbatim."""

    remote_id: str  #: the transaction it belongs to
    message_id: str  #: the endpoint's id for it (to fetch it once)
    name: str  #: its file name
    data: bytes  #: the message itself
    attachments: dict[str, bytes] = field(default_factory=dict)  #: letters (PDF) and the like


@runtime_checkable
class AnsweringEndpoint(Protocol):
    """What an endpoint that answers later (SENT, then ACKNOWLEDGED or REJECTED) also offers.

    Connectors move bytes and know no format: the runtime has the transformers read the
    messages.  Each call may raise TransientError (retry later) like ``send``.
    """

    def lookup(self, client_key: str) -> str | None:
        """The transaction id of an earlier submission with this client key, or None."""
        ...

    def statuses(self, remote_ids: list[str]) -> list[RemoteStatus]:
        """The status of several submissions at once."""
        ...

    def messages(self, remote_id: str, known: set[str]) -> list[RemoteMessage]:
        """The follow-up messages of a submission, but those whose id is in ``known``."""
        ...

    def cancel(self, remote_id: str, id_acte: str) -> RemoteStatus:
        """Ask for the cancellation (6-1) of an acknowledged act."""
        ...

    def classification(self, siren: str, current: str | None) -> tuple[str, bytes]:
        """Request the classification of a SIREN (7-1): (file name, the 7-2 or 7-3 message)."""
        ...


# An answering endpoint may also offer, after the acknowledgment, the stamped act and the
# acknowledgment receipt (bordereau):
#
#     def receipts(self, remote_id: str) -> dict[str, bytes]:
#         """The stamped act (and stamped annexes) and the bordereau, by file name; {} when the
#         platform has none yet (asked again later)."""
#
# The answer poller calls it when present (``bus/answers.py``) and returns the files to the source.


@dataclass(frozen=True)
class InboxItem:
    """A file an endpoint left in its answer folder (an ARActe, an anomaly, a letter, a receipt)."""

    name: str  #: its file name
    size: int
    ref: str  #: where it is (a remote path), for :meth:`InboxEndpoint.fetch` and ``settle``
    attachments: tuple[str, ...] = ()  #: files that go with it (a letter's PDF beside its message)


@runtime_checkable
class InboxEndpoint(Protocol):
    """An endpoint that answers by leaving files in a folder it shares (an SFTP answer directory).

    The runtime lists the ready files, fetches each, has the route layer read and match it,
    records the outcome in the ledger, returns it to the source, and only then settles the
    file (deleted or moved to done/; moved to error/ with a note when it matches nothing).
    """

    @property
    def has_inbox(self) -> bool:
        """Whether this endpoint is configured with an answer folder."""
        ...

    def inbox(self) -> list[InboxItem]:
        """The answer files ready now (readiness rules applied), oldest first."""
        ...

    def fetch(self, item: InboxItem) -> tuple[bytes, dict[str, bytes]]:
        """The file's bytes and its attachments' (DocumentError when larger than allowed)."""
        ...

    def settle(self, item: InboxItem, problem: str | None) -> None:
        """Done with the file: deleted or moved to done/ (``problem`` None), else moved to error/."""
        ...
