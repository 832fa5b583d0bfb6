"""Worker processes on one machine: ``bus.processes`` beyond the first, started, watched, stopped.

One Python process uses one core for Python code (the GIL); the bus's work on a document —
mapping, building and validating, packing, the ledger, the transfer — is mostly that.  With
``bus.processes: N`` the ``run`` command starts N - 1 more processes of itself in the role
``worker`` on the same configuration (the same ledger, broker and spool: the embedded SQLite
files take several processes, as RabbitMQ and PostgreSQL do), so that a machine's cores share
the documents and deliveries, as several machines do (docs/deployment.md).

The :class:`Supervisor` is the parent's: it restarts a worker that dies (its work comes back
through the ledger's leases, as after any crash) after a pause that doubles up to a minute
while it keeps dying, and at the end stops them with SIGTERM (each finishes its work in
flight), then SIGKILL after ``shutdown_timeout``.  Each worker is told to end with its parent
(Linux ``PR_SET_PDEATHSIG``): a parent killed with SIGKILL leaves no worker behind.  Worker
``n`` serves its metrics and health on ``metrics.port + n`` (when metrics are enabled) and is
named ``<worker_id>.<n>`` when ``worker_id`` is set in the configuration (else its own
``host-pid``).
"""

from __future__ import annotations

__all__ = ["Supervisor", "as_worker_process", "end_with_parent", "worker_command"]

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_BUS = Path(__file__).resolve().parent.parent / "run_bus.py"
FIRST_PAUSE = 1.0  #: seconds before a dead worker is started again; doubled while it keeps dying
LONGEST_PAUSE = 60.0
HEALTHY_AFTER = 30.0  #: a worker that lived this long has its pause reset


def end_with_parent(parent: int) -> None:
    """In a worker: ask Linux to send SIGTERM when the parent ends (prctl PR_SET_PDEATHSIG), and
    end now if it has ended already (between its fork and this call)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return  # not Linux: the parent's stop() is the only way workers end
    if os.getppid() != parent:
        raise SystemExit(f"worker process: its parent {parent} has ended")


def as_worker_process(config: Any, process: str) -> None:
    """Make ``config`` that of worker process ``N`` of ``PARENT`` (``--process N:PARENT``): no workers of
    its own, metrics on the port + N, ``worker_id`` + ``.N`` when the configuration names one; and
    end with the parent."""
    index_text, _, parent_text = process.partition(":")
    if not (index_text.isdigit() and parent_text.isdigit() and int(index_text) > 0):
        raise SystemExit(f"--process {process!r}: expected N:PARENT (set by Hent itself)")
    index, parent = int(index_text), int(parent_text)
    end_with_parent(parent)
    settings = config.bus
    settings.processes = 1
    if "worker_id" in settings.model_fields_set:
        settings.worker_id = f"{settings.worker_id}.{index}"
    host, _, port = settings.metrics.listen.rpartition(":")
    if int(port):  # 0: any free port already
        settings.metrics.listen = f"{host}:{int(port) + index}"


def worker_command(config: Path, index: int, *, global_args: list[str]) -> list[str]:
    """``python run_bus.py [global args] run -c CONFIG --role worker --process N:PARENT``."""
    return [sys.executable, str(RUN_BUS), *global_args, "run", "-c", str(config), "--role", "worker",
            "--process", f"{index}:{os.getpid()}"]


class _Worker:
    def __init__(self, index: int, command: list[str]) -> None:
        self.index = index
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.pause = FIRST_PAUSE
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command)  # noqa: S603
        self.started = time.monotonic()
        log.info("worker process %d started (pid %d)", self.index, self.process.pid)


class Supervisor:
    """Start ``count`` worker processes with ``command(index)``; keep them running until :meth:`stop`."""

    def __init__(self, count: int, command: Callable[[int], list[str]], *, shutdown_timeout: float,
                 every: float = 0.5) -> None:
        self.workers = [_Worker(index, command(index)) for index in range(1, count + 1)]
        self.shutdown_timeout = shutdown_timeout
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hent-supervisor", daemon=True)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self._thread.start()

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None and w.process.poll() is None]

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is None:
                    if now >= worker.restart_at and not self._stop.is_set():
                        worker.start()
                    continue
                code = process.poll()
                if code is None:
                    if now - worker.started > HEALTHY_AFTER:
                        worker.pause = FIRST_PAUSE
                    continue
                worker.process = None
                worker.restart_at = now + worker.pause
                log.error("worker process %d (pid %d) ended with %s; started again in %.0f s", worker.index,
                          process.pid, _ended(code), worker.pause)
                worker.pause = min(worker.pause * 2, LONGEST_PAUSE)

    def stop(self) -> None:
        """SIGTERM every worker, wait for them (``shutdown_timeout`` and a margin), SIGKILL the rest."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + 5.0
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("worker process pid %d did not stop in time: killed", process.pid)
                process.kill()
                process.wait()


def _ended(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
