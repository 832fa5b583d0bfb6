"""What every benchmark's command line shares: a work folder, and a failure reported, not raised."""

from __future__ import annotations

__all__ = ["measure_in_workdir"]

import argparse
import json
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
