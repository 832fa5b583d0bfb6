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
]

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


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


@dataclass(frozen=True)
class Artifact:
    """What an outbound connector sends: a file in the spool and what identifies it."""

    name: str  #: the name it must have at the endpoint (archive name, DECP file name)
    path: Path  #: where its bytes are
    sha256: str
    kind: str  #: "actes-archive", "decp-xml", ...
    client_key: str | None = None  #: envelope name or expected IDActe, to ask the endpoint about it
    meta: dict[str, Any] = field(default_factory=dict)


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


class InboundConnector(ABC):
    """list → claim → (runtime reads and records) → commit | rollback; reply at any time."""

    Config: ClassVar[type]
    direction: ClassVar[str] = "inbound"

    def __init__(self, name: str, config: Any, context: InboundContext | None = None) -> None:
        self.name = name
        self.config = config
        self.context = context or InboundContext()

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

    @abstractmethod
    def recover(self) -> list[Claimed]:
        """Bundles claimed before a crash and neither committed nor rolled back."""

    @abstractmethod
    def reply(self, bundle: str, code: str | None, payload: bytes | None, summary: dict[str, Any]) -> list[str]:
        """Hand a platform's message (verbatim) and/or a summary back to the source.

        Never overwrites: each call takes the next sequence number for ``bundle``.
        Returns the names written.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the connector holds (connections, handles)."""


class OutboundConnector(ABC):
    """connect → send → close."""

    Config: ClassVar[type]
    direction: ClassVar[str] = "outbound"
    #: the artifact kind this endpoint takes ("actes-archive", "decp-xml", "canonical-act")
    consumes: ClassVar[str] = "actes-archive"

    def __init__(self, name: str, config: Any) -> None:
        self.name = name
        self.config = config

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open what the endpoint needs (a session, a client)."""

    @abstractmethod
    def send(self, artifact: Artifact) -> SendResult:
        """Deliver one artifact; raise TransientError to be retried, DocumentError to fail it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Close what ``connect`` opened."""
