"""bus.repeats: a failure said once, again every few minutes while it lasts, and when it ends."""

from __future__ import annotations

from bus.repeats import RepeatedFailures


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def repeats(every: float = 600.0) -> tuple[RepeatedFailures, Clock]:
    clock = Clock()
    # the wall clock: 2026-03-02 12:00:00 UTC at the start, moving with the monotonic one
    return RepeatedFailures(every, monotonic=clock, wall=lambda: 1772452800.0 + clock.now - 1000.0), clock


def test_a_failure_is_said_once_then_every_period_while_it_lasts() -> None:
    failures, clock = repeats()
    # When a poll fails, then fails the same way every 0.25 s for 20 minutes
    said = [failures.failed("rh", "connection refused")]
    for _ in range(4800):
        clock.now += 0.25
        said.append(failures.failed("rh", "connection refused"))
    # Then it is said at once and then once every 10 minutes, with the count and since when
    lines = [line for line in said if line is not None]
    assert lines == [
        "connection refused",
        "connection refused (still failing: 2401 tries since 2026-03-02 12:00:00 UTC)",
        "connection refused (still failing: 4801 tries since 2026-03-02 12:00:00 UTC)",
    ]


def test_another_failure_is_said_at_once_and_the_details_do_not_count() -> None:
    failures, clock = repeats()
    assert failures.failed("rh", "connection refused", " (the same for 1 more: a.json)") == \
        "connection refused (the same for 1 more: a.json)"
    clock.now += 1
    assert failures.failed("rh", "connection refused", " (the same for 2 more: a.json, b.json)") is None
    assert failures.failed("rh", "permission denied") == "permission denied"
    assert failures.failed("finances", "permission denied") == "permission denied"  # each key its own


def test_the_end_of_a_run_of_failures_is_said_once() -> None:
    failures, clock = repeats()
    assert failures.succeeded("rh") is None  # nothing failed: nothing to say
    failures.failed("rh", "connection refused")
    clock.now += 90
    failures.failed("rh", "connection refused")
    assert failures.succeeded("rh") == "works again after 2 failed tries since 2026-03-02 12:00:00 UTC (90 s)"
    assert failures.succeeded("rh") is None
    # and the next failure is said at once
    assert failures.failed("rh", "connection refused") == "connection refused"
