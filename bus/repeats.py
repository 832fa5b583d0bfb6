"""Say a repeated failure once, not at every try.

A source whose server is down fails at every poll: every 0.2 s to every few minutes, each a log
line at ERROR that buries everything else.  :class:`RepeatedFailures` decides what is said: the
first failure (or a different one) at once, the same failure again only every ``every`` seconds
while it lasts, with how many tries failed since when, and one line when a try works again.
The metrics still count every failure (``hent_poll_failures_total``) and say when the last try
worked (``hent_source_last_success_timestamp_seconds``): alerts come from there.
"""

from __future__ import annotations

__all__ = ["RepeatedFailures", "REPEAT_EVERY"]

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REPEAT_EVERY = 600.0  #: seconds between two lines about the same failure while it lasts


@dataclass
class _Run:
    message: str
    since: float  #: wall clock of the first failure of the run
    since_monotonic: float
    said_at: float  #: monotonic time the failure was last said
    failures: int = 1


class RepeatedFailures:
    """What to log about the failures of a repeated task, per key (a source's name)."""

    def __init__(self, every: float = REPEAT_EVERY, *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.every = every
        self._monotonic, self._wall = monotonic, wall
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    def failed(self, key: str, message: str, detail: str = "") -> str | None:
        """One more failure of ``key``: the line to log at ERROR, or None to say nothing now (the
        same ``message`` was said less than ``every`` seconds ago); ``detail`` is added to the line
        and does not make a failure another one (the bundles a failed claim named)."""
        now = self._monotonic()
        with self._lock:
            run = self._runs.get(key)
            if run is None or run.message != message:
                if run is not None:  # another failure: said at once, the run goes on
                    run.message, run.failures, run.said_at = message, run.failures + 1, now
                else:
                    self._runs[key] = _Run(message, self._wall(), now, now)
                return message + detail
            run.failures += 1
            if now - run.said_at < self.every:
                return None
            run.said_at = now
            return f"{message}{detail} (still failing: {run.failures} tries since {_clock(run.since)})"

    def succeeded(self, key: str) -> str | None:
        """A try of ``key`` worked: the line to log at INFO when it ends a run of failures, else None."""
        with self._lock:
            run = self._runs.pop(key, None)
        if run is None:
            return None
        lasted = self._monotonic() - run.since_monotonic
        return (f"works again after {run.failures} failed tr{'y' if run.failures == 1 else 'ies'} "
                f"since {_clock(run.since)} ({lasted:.0f} s)")

    def log_failed(self, logger: logging.Logger, key: str, what: str, message: str, detail: str = "",
                   **kwargs: Any) -> None:
        """Log a failure of ``what`` ("poll of rh"): at ERROR when :meth:`failed` gives a line, else
        at DEBUG; ``kwargs`` go to the logger (``extra``)."""
        line = self.failed(key, message, detail)
        if line is None:
            logger.debug("%s failed again: %s", what, message, **kwargs)
        else:
            logger.error("%s failed: %s", what, line, **kwargs)

    def log_succeeded(self, logger: logging.Logger, key: str, what: str, **kwargs: Any) -> None:
        """Log at INFO that ``what`` works again, when it ends a run of failures."""
        again = self.succeeded(key)
        if again:
            logger.info("%s %s", what, again, **kwargs)


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
