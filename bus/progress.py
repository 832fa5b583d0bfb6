"""Progress for people: one line on stderr, rewritten in place, shown only on a terminal.

    with Progress("replayed", total=len(replays)) as progress:
        for replay in replays:
            ...
            progress.advance()          # "replayed 120/400", drawn again at most every 0.1 s

When stderr is not a terminal (a script, cron, CI, a file) nothing at all is written.  While the
line is shown, whatever the command prints on the terminal (stdout, stderr) and every log record
(:mod:`bus.logging_setup`) clears it first, the next update drawing it again, so that a result
is never glued to it; :meth:`Progress.close` (the end of the ``with``) erases it.  The line never
holds more than the terminal's width, so that ``\\r`` can rewrite it.
"""

from __future__ import annotations

__all__ = ["Progress", "clear_line", "is_terminal"]

import shutil
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

_lock = threading.RLock()
_shown: Progress | None = None  #: the progress whose line is on the screen now


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def clear_line() -> None:
    """Erase the progress line on the screen, if one is shown (before a log record or a result is
    written); the next update draws it again."""
    with _lock:
        if _shown is not None:
            _shown._erase()


class Progress:
    """``label done/total`` (or ``label done``, or a free ``text``) on a terminal's stderr.

    ``until_output``: stop showing for good once the command writes to stdout (its report).
    """

    def __init__(self, label: str, total: int | None = None, *, stream: IO[str] | None = None,
                 interval: float = 0.1, until_output: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.text: str | None = None
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self.stream)
        self.interval = interval
        self.until_output = until_output
        self._clock = clock
        self._drawn_at: float | None = None
        self._width = 0  # characters of the line on the screen (0: none shown)
        self._line = ""
        self._stdout: _ClearingStream | None = None
        self._stderr: _ClearingStream | None = None

    # -- the line --------------------------------------------------------------------
    def line(self, width: int | None = None) -> str:
        """``label text``, ``label done/total``, ``label done``, or the label alone before anything is done;
        within ``width`` characters: a text is cut at its end, a label shortened at its start (``…``)."""
        if self.text is not None:
            return f"{self.label} {self.text}"[:width]
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}" if self.done else ""
        label = self.label
        if width is not None and len(label) + len(count) + 1 > width:
            room = max(width - len(count) - 1, 1)
            label = "…" + label[-room + 1:] if room > 1 else "…"
        return f"{label} {count}" if count else label

    def update(self, done: int | None = None, *, total: int | None = None, text: str | None = None,
               force: bool = False) -> None:
        """Set what is done (and the total, or a free text) and draw the line if it is due."""
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if text is not None:
            self.text = text
        if not self.enabled:
            return
        now = self._clock()
        due = (force or self._width == 0 or self._drawn_at is None or now - self._drawn_at >= self.interval
               or (self.total is not None and self.done >= self.total))
        if due:
            self._draw(now)

    def advance(self, step: int = 1) -> None:
        self.update(self.done + step)

    def count(self, done: int, total: int) -> None:
        """``done`` of ``total``: a callback for the functions that report how far they are."""
        self.update(done, total=total)

    def clear(self) -> None:
        """Erase the line now (the next update draws it again)."""
        self._erase()

    def close(self) -> None:
        """Erase the line and stop showing it."""
        global _shown
        with _lock:
            self._erase()
            self.enabled = False
            if _shown is self:
                _shown = None
            if self._stdout is not None and sys.stdout is self._stdout:
                sys.stdout = self._stdout.inner
            if self._stderr is not None and sys.stderr is self._stderr:
                sys.stderr = self._stderr.inner
            self._stdout = self._stderr = None

    def __enter__(self) -> Progress:
        """Shows the line from the first update; what the command prints meanwhile on the terminal
        clears it first."""
        if self.enabled and is_terminal(sys.stdout):
            self._stdout = sys.stdout = _ClearingStream(sys.stdout, self, result=True)
        if self.enabled and is_terminal(sys.stderr):
            self._stderr = sys.stderr = _ClearingStream(sys.stderr, self, result=False)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- drawing ---------------------------------------------------------------------
    def _draw(self, now: float) -> None:
        global _shown
        with _lock:
            if not self.enabled:
                return
            if _shown is not None and _shown is not self:
                _shown._erase()
            line = self.line(max(shutil.get_terminal_size((80, 24)).columns - 1, 10))
            if self._width and line == self._line:  # already on the screen
                return
            self._line = line
            self._write("\r" + line + " " * max(self._width - len(line), 0))
            self._width = len(line)
            self._drawn_at = now
            _shown = self

    def _erase(self) -> None:
        with _lock:
            if self._width:
                self._write("\r" + " " * self._width + "\r")
                self._width = 0

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: the command goes on
            self.enabled = False

    def _before_output(self, result: bool) -> None:
        with _lock:
            self._erase()
            if result and self.until_output:
                self.enabled = False


class _ClearingStream:
    """``sys.stdout`` or ``sys.stderr`` while a progress is shown: each write first clears its line
    (``result``: stdout, where the command writes its result)."""

    def __init__(self, inner: Any, progress: Progress, *, result: bool) -> None:
        self.inner = inner
        self._progress = progress
        self._result = result

    def write(self, text: str) -> int:
        if text:
            self._progress._before_output(self._result)
        return int(self.inner.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
