"""A test double: ``type: memory`` keeps what it is sent in memory, and fails when told to.

Like kombu's ``memory://`` transport, it lives beside the real connectors so that tests (and
whoever tries a configuration) can run routes with no endpoint at all.  ``fail`` scripts
the outcome of the first sends, in order: ``transient`` (a TransientError: retried),
``document`` (a DocumentError: the delivery fails), ``unexpected`` (a plain exception, as a
connector's bug would raise); after them every send succeeds.  ``answer: SENT`` makes it
behave as an endpoint that acknowledges later.
"""

from __future__ import annotations

__all__ = ["Connector", "MemoryOutboundConfig", "MemoryOutbound"]

import threading
from typing import ClassVar, Literal

from pydantic import Field

from bus.config import EndpointConfig
from bus.connector import ARCHIVE, CANONICAL, DECP_JSON, DECP_XML, FILE, Artifact, OutboundConnector, SendResult
from bus.errors import DocumentError, TransientError
from connectors._archive_options import ArchiveOptions


class MemoryOutboundConfig(EndpointConfig, ArchiveOptions):
    """``type: memory`` used in a route's ``to``."""

    type: Literal["memory"] = "memory"
    fail: list[Literal["transient", "document", "unexpected"]] = Field(
        default_factory=list, description="Outcomes of the first sends, in order; then success."
    )
    answer: Literal["DELIVERED", "SENT"] = Field("DELIVERED", description="State of a successful send.")
    takes: Literal["archive", "canonical-act"] = Field(
        "archive", description="What it is sent: ACTES archives (and files), or the canonical act as S2LOW takes it."
    )


class MemoryOutbound(OutboundConnector):
    Config = MemoryOutboundConfig
    consumes: tuple[str, ...] = (ARCHIVE, FILE, DECP_XML, DECP_JSON)
    config: MemoryOutboundConfig

    #: every artifact each memory endpoint was sent, by connector name (for the tests)
    sent: ClassVar[dict[str, list[Artifact]]] = {}
    attempts: ClassVar[dict[str, int]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str, config: MemoryOutboundConfig) -> None:
        super().__init__(name, config)
        if config.takes == "canonical-act":
            self.consumes = (CANONICAL,)

    def send(self, artifact: Artifact) -> SendResult:
        with self._lock:
            attempt = self.attempts.get(self.name, 0)
            self.attempts[self.name] = attempt + 1
        outcome = self.config.fail[attempt] if attempt < len(self.config.fail) else None
        if outcome == "transient":
            raise TransientError(f"connector {self.name!r}: endpoint unavailable (scripted)", connector=self.name)
        if outcome == "document":
            raise DocumentError(f"connector {self.name!r}: refused {artifact.name} (scripted)", connector=self.name,
                                rule="refused")
        if outcome == "unexpected":
            raise RuntimeError(f"connector {self.name!r}: a bug (scripted)")
        with self._lock:
            self.sent.setdefault(self.name, []).append(artifact)
        return SendResult(self.config.answer, remote_id=f"memory:{artifact.name}")

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls.sent.clear()
            cls.attempts.clear()


Connector = MemoryOutbound
