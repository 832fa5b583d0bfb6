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


def test_each_change_of_state_is_told_once_and_described_for_readyz() -> None:
    from bus.circuit import Circuit as Breaker

    seen: list[tuple[str, int]] = []
    circuit = Breaker("told", threshold=2, cooldown=0.05, on_change=lambda state, n: seen.append((state, n)))
    assert circuit.describe() == (True, "circuit closed")
    circuit.failure()
    circuit.failure()
    ok, words = circuit.describe()
    assert not ok and words.startswith("circuit open after 2 failures")
    import time

    time.sleep(0.06)
    assert circuit.allow()  # the half-open trial
    circuit.success()
    circuit.success()  # already closed: nothing more to tell
    assert seen == [("open", 2), ("half-open", 2), ("closed", 0)]


def test_a_failing_listener_never_stops_the_breaker() -> None:
    from bus.circuit import Circuit as Breaker

    def broken(state: str, failures: int) -> None:
        raise RuntimeError("the ledger is down")

    circuit = Breaker("quiet", threshold=1, cooldown=10, on_change=broken)
    circuit.failure()
    assert not circuit.allow()


def test_retry_delays_double_within_their_jitter_and_max_age_ends_them() -> None:
    from bus.runtime import RetryPolicy

    policy = RetryPolicy(max_attempts=10, first_delay=1.0, max_delay=8.0, max_age=60.0, jitter=0.25)
    for attempt, base in ((1, 1.0), (2, 2.0), (3, 4.0), (5, 8.0), (9, 8.0)):
        drawn = {round(policy.delay(attempt), 6) for _ in range(50)}
        assert all(base * 0.75 <= d <= base * 1.25 for d in drawn) and len(drawn) > 1
    assert policy.exhausted(3, 10.0) is None
    assert policy.exhausted(10, 10.0) == "gave up after 10 attempts"
    assert "max_age" in (policy.exhausted(3, 61.0) or "")
    assert RetryPolicy(first_delay=1.0).delay(3) == 4.0  # no jitter: exact
