"""APScheduler 3.x: one job per inbound connector (interval or cron) plus the sweeper."""

from __future__ import annotations

__all__ = ["Scheduler", "trigger_for"]

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)


class _SkippedRuns(logging.Filter):
    """A poll still running when its next run is due is skipped on purpose (one run of a job
    at a time): APScheduler's warning for each skip would flood the log of a busy source."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRuns())


def trigger_for(schedule: float | int | str) -> BaseTrigger:
    """A number of seconds → an interval; a five-field cron line → a cron trigger."""
    if isinstance(schedule, int | float):
        return IntervalTrigger(seconds=max(float(schedule), 0.05), timezone=UTC)
    return CronTrigger.from_crontab(schedule)


class Scheduler:
    """Runs each job in its own thread, never two runs of one job at once."""

    def __init__(self, threads: int = 4) -> None:
        self._scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=threads)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 30},
            timezone=UTC,
        )

    def add(self, name: str, func: Callable[[], object], schedule: float | int | str, *, now: bool = True) -> None:
        """Schedule ``func``; with ``now`` it also runs at start-up."""
        kwargs = {"next_run_time": datetime.now(UTC)} if now else {}
        self._scheduler.add_job(func, trigger_for(schedule), id=name, name=name, **kwargs)

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, let the running jobs finish."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
