"""The endpoint circuit breaker."""

from __future__ import annotations

import time

from bus.circuit import CLOSED, HALF_OPEN, OPEN, Circuit


def test_opens_after_threshold_failures_then_lets_one_trial_through_after_cooldown() -> None:
    circuit = Circuit("prefecture", threshold=3, cooldown=0.2)
    for _ in range(3):
        assert circuit.allow()
        circuit.failure()
    assert circuit.state == OPEN and not circuit.allow()
    time.sleep(0.25)
    assert circuit.state == HALF_OPEN
    assert circuit.allow() and not circuit.allow()  # one trial only
    circuit.failure()
    assert circuit.state == OPEN
    time.sleep(0.25)
    assert circuit.allow()
    circuit.success()
    assert circuit.state == CLOSED and circuit.allow()


def test_a_success_resets_the_count() -> None:
    circuit = Circuit("prefecture", threshold=2, cooldown=10)
    circuit.failure()
    circuit.success()
    circuit.failure()
    assert circuit.state == CLOSED
