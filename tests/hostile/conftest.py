"""Prints what the hostile-input corpus found: cases, crashes, documents lost (and with ``-s``,
each case with the error a user would see)."""

from __future__ import annotations

import pytest

from tests.hostile._corpus import OUTCOMES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not OUTCOMES:
        return
    crashes = sum(o.verdict == "CRASH" for o in OUTCOMES)
    lost = sum(o.verdict == "LOST" for o in OUTCOMES)
    write = terminalreporter.write_line
    terminalreporter.section("hostile inputs")
    if config.getoption("capture") == "no":
        width = max(len(f"{o.family}/{o.case}") for o in OUTCOMES)
        for o in OUTCOMES:
            write(f"{f'{o.family}/{o.case}':<{width}}  {o.verdict:<7}  {o.seen}")
    families = sorted({o.family for o in OUTCOMES})
    write(f"families: {len(families)} ({', '.join(families)})")
    write(f"cases: {len(OUTCOMES)} | crashes: {crashes} | documents lost: {lost}")
