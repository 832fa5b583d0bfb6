"""The document model the runtime moves around, and what it asks of the route layer.

The runtime knows documents only as ledger rows and spool blobs.  What a document *means*
— which route takes it, what act it is, which archive goes to which endpoint — is the
business of a :class:`Processor` (``routes.pipeline.Pipeline``), handed to the runtime by
``run_bus.py``: ``bus/`` imports neither ``routes/`` nor ``transformers/``.
"""

from __future__ import annotations

__all__ = ["PlannedDelivery", "PreparedDocument", "Processor", "Answer"]

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class PlannedDelivery:
    """One endpoint a document goes to, with the artifact built once for it."""

    route: str
    endpoint: str
    artifact_name: str
    artifact_sha256: str
    artifact_kind: str
    client_key: str | None = None
    id_acte: str | None = None
    envelope_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def ledger_fields(self) -> dict[str, Any]:
        """The keyword arguments of ``Ledger.add_delivery`` for this delivery."""
        return self.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PlannedDelivery:
        return cls(**data)


@dataclass(frozen=True)
class PreparedDocument:
    """A document mapped, routed and built: everything the deliveries need."""

    route: str  #: the first route that took it (a document may take several)
    siren: str | None
    id_acte: str | None  #: the expected IDActe, for an act
    natural_key: str | None  #: SIREN + NumeroInterne + decision date, for an act
    canonical: dict[str, Any]  #: the canonical model, JSON-ready
    deliveries: tuple[PlannedDelivery, ...] = field(default_factory=tuple)

    def ledger_payload(self) -> dict[str, Any]:
        """What the ledger keeps in the document's ``canonical`` column."""
        return {
            "model": self.canonical,
            "natural_key": self.natural_key,
            "deliveries": [d.to_json() for d in self.deliveries],
        }

    @staticmethod
    def planned_from_ledger(payload: dict[str, Any] | None) -> list[PlannedDelivery]:
        return [PlannedDelivery.from_json(d) for d in (payload or {}).get("deliveries", [])]


@dataclass(frozen=True)
class Answer:
    """What the runtime needs to know of a message an endpoint sent back (read by the route layer)."""

    kind: str  #: ARActe, AnomalieActe, AnomalieEnveloppe, CourrierSimple... or Unknown
    code: str | None  #: "1-2", "1-3", "ANO", "2-1"... (names the reply file)
    id_acte: str | None = None  #: the act's official identifier, when the message gives it
    act: tuple[str, str, str] | None = None  #: (SIREN, decision date YYYYMMDD, NumeroInterne) when all known
    envelope_name: str | None = None  #: the envelope an AnomalieEnveloppe refuses (with .xml)
    client_key: str | None = None  #: the submission's client key, when the message names it (a DECP's)
    received_on: str | None = None  #: DateReception (ISO), for an acknowledgment
    anomaly: str | None = None  #: the anomaly's nature code, as received
    detail: str | None = None  #: the anomaly's or the letter's text
    summary: dict[str, Any] = field(default_factory=dict)  #: the parsed message, JSON-ready


class Processor(Protocol):
    """What the runtime needs from the route layer."""

    def bundle_members(self, source: str) -> Callable[[str, bytes], list[str]]:
        """For a source connector: given a sidecar, the names of the files it brings."""
        ...

    def prepare(self, document: Any) -> PreparedDocument:
        """Map, route, build and validate a RECEIVED document; raise DocumentError if it cannot go."""
        ...

    def read_answer(self, data: bytes, name: str | None) -> Answer:
        """Read a message an endpoint sent back, leniently: never raises."""
        ...

    def read_inbox(
        self, name: str, data: bytes, attachments: dict[str, bytes]
    ) -> list[tuple[str, bytes, dict[str, bytes]]]:
        """The messages (name, bytes, attachments) in a file an endpoint left in its answer folder;
        DocumentError when the package cannot be opened safely."""
        ...
