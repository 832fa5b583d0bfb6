"""Progress for people: a line rewritten in place on a terminal, nothing at all in scripts."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import run_bus
from bus.ledger_ops import purge_folder
from bus.logging_setup import setup_logging
from bus.progress import Progress, clear_line
from tests.harness import write_config


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def screen(text: str) -> str:
    """What a terminal shows of ``text`` on its last line: each ``\\r`` goes back to the start."""
    line = ""
    for part in text.split("\n")[-1].split("\r"):
        line = part + line[len(part):]
    return line.rstrip()


def test_on_a_terminal_the_line_is_rewritten_in_place_then_erased() -> None:
    # Given a terminal and a clock that moves on at each step
    terminal, clock = FakeTerminal(), Clock()
    with Progress("replayed", total=3, stream=terminal, clock=clock) as progress:
        for _ in range(3):
            clock.now += 1
            progress.advance()
            # Then the line says how far it is
            assert screen(terminal.getvalue()) == f"replayed {progress.done}/3"
    # and it is gone at the end, written with carriage returns only
    assert screen(terminal.getvalue()) == ""
    assert "\n" not in terminal.getvalue()
    assert terminal.getvalue().startswith("\rreplayed 1/3")


def test_in_a_script_nothing_is_written() -> None:
    # Given stderr redirected to a file or a pipe
    stream = io.StringIO()
    with Progress("replayed", total=400, stream=stream) as progress:
        for _ in range(400):
            progress.advance()
        progress.update(text="anything")
    # Then nothing at all, and stdout is left as it was
    assert not progress.enabled
    assert stream.getvalue() == ""
    assert not type(sys.stdout).__name__.startswith("_Clearing")


def test_updates_are_drawn_at_most_every_interval_but_the_last_always() -> None:
    terminal, clock = FakeTerminal(), Clock()
    progress = Progress("removed", total=1000, stream=terminal, clock=clock, interval=0.5)
    for done in range(1, 1001):
        clock.now = done * 0.001  # 1 s in all: the first, one after 0.5 s, and the last
        progress.update(done)
    assert terminal.getvalue().count("\r") == 3
    assert screen(terminal.getvalue()) == "removed 1000/1000"


def test_the_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a terminal 21 columns wide
    monkeypatch.setenv("COLUMNS", "21")
    terminal = FakeTerminal()
    # Then a text is cut at its end, and a long label at its start, the count kept whole
    Progress("demo:", stream=terminal).update(text="5/5 documents prepared, 8/8 deliveries final")
    assert screen(terminal.getvalue()) == "demo: 5/5 documents"
    terminal = FakeTerminal()
    Progress("purge: /srv/exports/seances/done", stream=terminal).update(12, total=400)
    assert screen(terminal.getvalue()) == "…seances/done 12/400"


def test_what_the_command_prints_clears_the_line_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given stdout and stderr on the terminal
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with Progress("replayed", total=2, stream=terminal) as progress:
        progress.advance()
        # When the command prints a result line
        print("replayed document 1")
        progress.advance()
    # Then the line was erased before it, so the result stands alone on its line
    lines = terminal.getvalue().split("\n")
    assert screen(lines[0]) == "replayed document 1"
    assert sys.stdout is terminal


def test_until_output_stops_showing_once_the_report_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    with Progress("demo:", stream=terminal, until_output=True) as progress:
        progress.update(text="1/5 documents prepared")
        print("Hent demo over SOAP")
        progress.update(text="5/5 documents prepared", force=True)
    assert terminal.getvalue().endswith("Hent demo over SOAP\n")
    assert "5/5" not in terminal.getvalue()


def test_a_log_record_clears_the_line_first(root_logger: None) -> None:
    terminal = FakeTerminal()
    setup_logging("INFO", "human", terminal)
    with Progress("purge: spool blobs", total=10, stream=terminal) as progress:
        progress.update(3)
        logging.getLogger("bus.runtime").warning("something to say")
        progress.update(4, force=True)
    before, after = terminal.getvalue().split("\n")
    assert screen(before).endswith("WARNING bus.runtime: something to say")
    assert "purge" not in screen(before)
    assert "purge: spool blobs 4/10" in after
    clear_line()  # nothing shown any more: nothing to do


def test_purge_folder_tells_how_far_it_is(tmp_path: Path) -> None:
    for n in range(3):
        (tmp_path / f"bundle{n}.json").write_text("{}")
    told: list[tuple[int, int]] = []
    removed = purge_folder(tmp_path, time.time() + 10, progress=lambda done, total: told.append((done, total)))
    assert len(removed) == 3 and told == [(1, 3), (2, 3), (3, 3)]


def _purge_with_stderr(tmp_path: Path, stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> str:
    config = write_config(tmp_path)
    done = tmp_path / "drop" / "deliberations" / "done"
    done.mkdir(parents=True)
    for n in range(4):
        (done / f"DEL{n}.json").write_text("{}")
    time.sleep(0.01)  # a file's age counts from its last status change, which cannot be set back
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    assert run_bus.main(["purge", "--older-than", "0s", "-c", str(config)]) == 0
    return stdout.getvalue()


def test_purge_shows_progress_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            root_logger: None) -> None:
    terminal = FakeTerminal()
    output = _purge_with_stderr(tmp_path, terminal, monkeypatch)
    assert "source deliberations: removed 4 file(s)" in output
    assert "\rpurge: source deliberations 4/4" in terminal.getvalue()
    assert screen(terminal.getvalue()) == ""


def test_purge_is_quiet_in_a_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logger: None) -> None:
    stderr = io.StringIO()
    output = _purge_with_stderr(tmp_path, stderr, monkeypatch)
    assert "source deliberations: removed 4 file(s)" in output
    assert stderr.getvalue() == ""
