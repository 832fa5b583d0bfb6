"""The ledger's state machines: document and delivery states, the transitions allowed
between them, which states are final, and the errors a ledger operation raises when a caller
asks for something the ledger refuses (an unknown row, an illegal transition, a stale state).
Everything here is re-exported by :mod:`bus.ledger`, the place to import it from.
"""

from __future__ import annotations

__all__ = [
    "DocumentState",
    "DeliveryState",
    "DOCUMENT_TRANSITIONS",
    "DELIVERY_TRANSITIONS",
    "FINAL_DOCUMENT_STATES",
    "FINAL_DELIVERY_STATES",
    "LedgerError",
    "UnknownEntity",
    "IllegalTransition",
    "StaleState",
]

from enum import StrEnum
from typing import Any

from bus.errors import HentError

# -- states -------------------------------------------------------------------------------


class DocumentState(StrEnum):
    RECEIVED = "RECEIVED"
    PREPARED = "PREPARED"
    ROUTED = "ROUTED"
    FAILED = "FAILED"


class DeliveryState(StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    REJECTED = "REJECTED"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


_D, _V = DocumentState, DeliveryState
DOCUMENT_TRANSITIONS: dict[DocumentState, frozenset[DocumentState]] = {
    _D.RECEIVED: frozenset({_D.PREPARED, _D.FAILED}),
    _D.PREPARED: frozenset({_D.ROUTED, _D.FAILED}),
    _D.ROUTED: frozenset(),
    # replay (run_bus.py replay, bus.ledger_ops) or the same bundle dropped again: the same row, with the
    # same idempotency key, prepared anew from its files in the spool by the mappings the bus now runs with
    _D.FAILED: frozenset({_D.RECEIVED}),
}
DELIVERY_TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    _V.PENDING: frozenset({_V.SENT, _V.DELIVERED, _V.FAILED}),
    _V.SENT: frozenset({_V.ACKNOWLEDGED, _V.REJECTED, _V.DELIVERED, _V.FAILED}),
    _V.ACKNOWLEDGED: frozenset(),
    _V.REJECTED: frozenset(),
    _V.DELIVERED: frozenset(),
    # replay: the same artifact sent again by the ordinary send path, which asks the endpoint first
    _V.FAILED: frozenset({_V.PENDING}),
}
FINAL_DOCUMENT_STATES = frozenset({_D.ROUTED, _D.FAILED})
FINAL_DELIVERY_STATES = frozenset({_V.ACKNOWLEDGED, _V.REJECTED, _V.DELIVERED, _V.FAILED})

#: columns a transition (or :meth:`Ledger.record`) may set besides state and reason
_DOCUMENT_FIELDS = frozenset({"route", "siren", "id_acte", "canonical"})
_DELIVERY_FIELDS = frozenset({"id_acte", "remote_id", "attempts", "client_key", "envelope_name"})


# -- errors -------------------------------------------------------------------------------


class LedgerError(HentError):
    """A ledger operation refused; ``entity`` and ``entity_id`` say on what."""

    def __init__(self, message: str, *, entity: str, entity_id: str) -> None:
        super().__init__(message)
        self.entity = entity
        self.entity_id = entity_id


class UnknownEntity(LedgerError, KeyError):
    """No document or delivery with this id (also a ``KeyError``)."""


class IllegalTransition(LedgerError):
    """The state machine does not allow this change: a bug in the caller, not in the document."""

    def __init__(self, entity: str, entity_id: str, from_state: str, to_state: str) -> None:
        allowed = _allowed(entity, from_state)
        super().__init__(
            f"{entity} {entity_id}: illegal transition {from_state} → {to_state} "
            f"(from {from_state} only {allowed} is allowed)",
            entity=entity,
            entity_id=entity_id,
        )
        self.from_state = from_state
        self.to_state = to_state


class StaleState(LedgerError):
    """Compare-and-set lost: the row is no longer in the state the caller expected.

    Someone else (another worker, the sweeper, a replay) moved it; drop the work, do not retry.
    """

    def __init__(self, entity: str, entity_id: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{entity} {entity_id}: expected state {expected} but it is {actual} "
            "(another worker moved it; this work is stale)",
            entity=entity,
            entity_id=entity_id,
        )
        self.expected = expected
        self.actual = actual


def _allowed(entity: str, state: str) -> str:
    table: dict[Any, frozenset[Any]] = DOCUMENT_TRANSITIONS if entity == "document" else DELIVERY_TRANSITIONS
    targets = sorted(str(s) for s in table.get(state, frozenset()))
    return " or ".join(targets) if targets else "nothing (final state)"
