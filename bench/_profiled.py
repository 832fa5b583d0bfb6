"""Run a Python script with cProfile on every thread, the profiles merged into one file.

    python bench/_profiled.py OUT.prof run_bus.py run -c CONFIG

``python -m cProfile`` sees the main thread only; the bus works in its consumer threads and
its scheduler's pool.  Each thread started after this module is loaded gets its own
profiler; when the script ends (the bus stops on SIGTERM and joins its threads), the profiles
of the main thread and of every finished thread are added up and written to OUT.prof
(``pstats.Stats(OUT.prof)``).  A thread still running then is left out (counted on stderr).
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import runpy
import sys
import threading
from typing import Any

_profiles: list[tuple[threading.Thread, cProfile.Profile]] = []
_lock = threading.Lock()
_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profiler = cProfile.Profile()
    with _lock:
        _profiles.append((self, profiler))
    profiler.enable()
    try:
        _run(self)
    finally:
        profiler.disable()


def _dump(out: str, main: cProfile.Profile) -> None:
    main.disable()
    stats = pstats.Stats(main)
    left_out = 0
    with _lock:
        for thread, profiler in _profiles:
            if thread.is_alive():
                left_out += 1
                continue
            try:
                stats.add(profiler)
            except TypeError:  # a thread that never ran Python code: nothing to add
                continue
    stats.dump_stats(out)
    print(f"_profiled: {len(_profiles) - left_out} thread profile(s) merged into {out}"
          f"{f', {left_out} still running left out' if left_out else ''}", file=sys.stderr)


def main(argv: list[str]) -> Any:
    out, script, *rest = argv
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profiler = cProfile.Profile()
    atexit.register(_dump, out, main_profiler)
    sys.argv = [script, *rest]
    sys.path.insert(0, ".")
    main_profiler.enable()
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
