"""What every benchmark's command line shares: a work folder, a failure reported, not raised, and
the one line per figure that ``bench/run.py`` gathers.

A figure line reads::

    name: 12.3 acts/s | baseline: 15.0 acts/s (what the baseline is) | ratio: 0.82 | target: ratio >= 0.7: met

``ratio`` is value / baseline; ``target`` is ``none (...)`` for a figure that only informs, else
the rule and ``met`` or ``NOT met``.  A figure that has no bare twin says ``baseline: none (why)``
and ``ratio: -``.  A figure that could not be measured here is one line ``name: skipped: why``.
A bench ends with ``targets met: K/N`` (the targets of its own lines).
"""

from __future__ import annotations

__all__ = [
    "FIGURE_LINE",
    "SKIPPED_LINE",
    "SUMMARY_LINE",
    "Figure",
    "measure_in_workdir",
    "percentile",
    "report",
    "skipped",
    "summary",
]

import argparse
import json
import math
import re
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIGURE_LINE = re.compile(
    r"(?P<name>\w+): (?P<value>-?[\d.]+|nan) (?P<unit>\S+)"
    r" \| baseline: (?:(?P<baseline>-?[\d.]+|nan) (?P<baseline_unit>\S+) \((?P<what>.+?)\)|none \((?P<why>.+?)\))"
    r" \| ratio: (?P<ratio>-?[\d.]+|nan|-)"
    r" \| target: (?P<target>.+)"
)
SKIPPED_LINE = re.compile(r"(?P<name>\w+): skipped: (?P<why>.+)")
SUMMARY_LINE = re.compile(r"targets met: (?P<met>\d+)/(?P<total>\d+)")


def _number(value: float) -> str:
    if math.isnan(value):
        return "nan"
    for bound, digits in ((1000, 0), (10, 1), (1, 2)):
        if abs(value) >= bound:
            return f"{value:.{digits}f}"
    return f"{value:.3f}"


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its baseline, and its target (``rule`` None: informative)."""

    name: str
    value: float
    unit: str
    baseline: float | None  #: None: no bare twin (``what`` says why)
    what: str  #: what the baseline is
    rule: str | None = None  #: e.g. "ratio >= 0.7"; None: no target
    met: bool | None = None
    note: str = "report"  #: what ``target: none (...)`` says when there is no rule

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.value / self.baseline if self.baseline else float("nan")

    def line(self) -> str:
        if self.baseline is None:
            baseline, ratio = f"none ({self.what})", "-"
        else:
            baseline, ratio = f"{_number(self.baseline)} {self.unit} ({self.what})", f"{self.ratio:.2f}"
        target = f"none ({self.note})" if self.rule is None else f"{self.rule}: {'met' if self.met else 'NOT met'}"
        value = f"{_number(self.value)} {self.unit}"
        return f"{self.name}: {value} | baseline: {baseline} | ratio: {ratio} | target: {target}"


def skipped(name: str, why: str) -> str:
    """The line of a figure that could not be measured here."""
    return f"{name}: skipped: {why}"


def summary(figures: list[Figure]) -> str:
    """``targets met: K/N`` over the figures that have a target."""
    ruled = [f for f in figures if f.rule is not None]
    return f"targets met: {sum(bool(f.met) for f in ruled)}/{len(ruled)}"


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, linear between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure_in_workdir(
    name: str, args: argparse.Namespace, measure: Callable[[argparse.Namespace, Path], dict[str, Any]]
) -> dict[str, Any] | None:
    """Run ``measure(args, root)`` in a fresh folder under ``args.workdir`` (removed unless
    ``args.keep``); on an error print it (as JSON with ``args.json``) and return None."""
    parent = args.workdir.resolve() if args.workdir else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"hent-bench-{name}-", dir=parent)).resolve()
    try:
        return measure(args, root)
    except Exception as exc:  # noqa: BLE001 - a report: say what failed, exit 1
        traceback.print_exc(file=sys.stderr)
        if args.json:
            print(json.dumps({"bench": name, "error": f"{type(exc).__name__}: {exc}"}))
        else:
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    finally:
        if args.keep:
            print(f"kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(
    name: str,
    args: argparse.Namespace,
    measure: Callable[[argparse.Namespace, Path], dict[str, Any]],
    figures: Callable[[dict[str, Any]], list[Figure] | tuple[list[Figure], list[str]]],
    notes: Callable[[dict[str, Any]], list[str]],
) -> int:
    """A bench's ``main``: measure in a fresh folder, then print its notes, its figure lines and the
    summary (or one JSON object with ``args.json``); 1 when the measure failed.  ``figures`` gives the
    figures, or the figures and the lines to print (a skipped figure has a line and no Figure)."""
    result = measure_in_workdir(name, args, measure)
    if result is None:
        return 1
    found = figures(result)
    found, lines = found if isinstance(found, tuple) else (found, [figure.line() for figure in found])
    if args.json:
        print(json.dumps({**result, "figures": lines}, indent=2))
    else:
        print("\n".join([*notes(result), *lines, summary(found)]))
    return 0
