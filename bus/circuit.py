"""A circuit breaker per endpoint: after repeated transient failures, stop trying for a while."""

from __future__ import annotations

__all__ = ["Circuit"]

import threading
import time
from collections.abc import Callable

from bus.metrics import CIRCUIT_STATE

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half-open"}


class Circuit:
    """Closed → (``threshold`` consecutive failures) → open for ``cooldown`` s → half-open.

    In half-open one trial goes through: a success closes the circuit, a failure opens it
    again.  ``allow()`` says whether a send may be tried now; ``retry_in()`` how long to wait.
    """

    def __init__(self, connector: str, *, threshold: int = 5, cooldown: float = 30.0,
                 on_change: Callable[[str, int], None] | None = None) -> None:
        self.connector = connector
        self.on_change = on_change  # (state name, consecutive failures): told when the state changes
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()
        CIRCUIT_STATE.labels(connector=connector).set(CLOSED)

    @property
    def state(self) -> int:
        with self._lock:
            return self._state()

    def _state(self) -> int:
        if self._opened_at is None:
            return CLOSED
        if time.monotonic() - self._opened_at >= self.cooldown:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._trial:
                self._trial = True
                CIRCUIT_STATE.labels(connector=self.connector).set(HALF_OPEN)
                self._tell(HALF_OPEN)
                return True
            return False

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(self.cooldown - (time.monotonic() - self._opened_at), 0.0) + 0.1

    def success(self) -> None:
        with self._lock:
            changed = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._trial = False
            CIRCUIT_STATE.labels(connector=self.connector).set(CLOSED)
            if changed:
                self._tell(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.threshold:
                self._opened_at = time.monotonic()
                self._trial = False
                CIRCUIT_STATE.labels(connector=self.connector).set(OPEN)
                self._tell(OPEN)

    def describe(self) -> tuple[bool, str]:
        """(not open, in words): for ``/readyz``."""
        with self._lock:
            state = self._state()
            if state == OPEN:
                wait = self.cooldown - (time.monotonic() - (self._opened_at or 0.0))
                return False, f"circuit open after {self._failures} failures; a trial in {max(wait, 0):.0f} s"
            return True, f"circuit {NAMES[state]}"

    def _tell(self, state: int) -> None:
        """Tell ``on_change`` (under the lock: the order of changes is kept); its failure is not ours."""
        if self.on_change is not None:
            try:
                self.on_change(NAMES[state], self._failures)
            except Exception:  # noqa: BLE001 - recording the state must never stop a send
                pass
