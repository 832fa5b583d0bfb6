"""A source that fails at every poll is said once in the log, not at every poll, and its recovery
once; the metrics count every failed poll."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from tests.chaos.test_restart import start, wait_until
from tests.harness import write_config


def put_a_file_in_place_of(folder: Path) -> None:
    """A file where ``folder`` was, against a poller that makes the folder (and its work folders)
    again whenever it finds it gone: the folder renamed away at once (deleting it file by file races
    the poller filling it again), then a file renamed in, again until no folder is in its way."""
    folder.rename(folder.with_name(f"{folder.name}-away"))
    blocker = folder.with_name(f"{folder.name}.file")
    blocker.write_text("not a folder")

    def placed() -> bool:
        try:
            os.rename(blocker, folder)  # refused over a folder the poller made again meanwhile
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            return False
        return True

    wait_until(placed, 30, f"a file in place of {folder}")


def test_a_source_failing_at_every_poll_is_said_once_and_its_recovery_once(tmp_path: Path) -> None:
    # Given the bus polling its drop folders every 0.1 s
    config = write_config(tmp_path, poll="0.1s")
    log = tmp_path / "bus.log"
    bus = start(config, log)
    try:
        wait_until(lambda: " running: " in log.read_text(errors="replace"), 60, "the bus running")
        rh = tmp_path / "drop" / "rh"
        # When the folder of one source becomes a file: every poll of it fails
        put_a_file_in_place_of(rh)
        began = time.monotonic()
        wait_until(lambda: "poll of rh failed" in log.read_text(errors="replace"), 30, "the failure said")
        time.sleep(max(0.0, began + 3.0 - time.monotonic()))  # about 30 polls of it
        failing = log.read_text(errors="replace")
        # And it is a folder again
        rh.unlink()
        rh.mkdir(exist_ok=True)  # the poller may have made it first
        wait_until(lambda: "poll of rh works again" in log.read_text(errors="replace"), 30, "the recovery said")
    finally:
        bus.send_signal(signal.SIGTERM)
        bus.wait(timeout=60)
    text = log.read_text(errors="replace")
    # Then the failure was said once, naming the source and the folder, and its end once
    assert failing.count("poll of rh failed") == 1, failing[-3000:]
    [line] = [line for line in text.splitlines() if "poll of rh failed" in line]
    assert "ERROR" in line and str(rh) in line, line
    assert text.count("poll of rh works again after") == 1, text[-3000:]
    works_again = next(line for line in text.splitlines() if "poll of rh works again" in line)
    failed_tries = int(works_again.split("works again after ")[1].split()[0])
    assert failed_tries >= 10, works_again  # the polls went on meanwhile: each one counted
    # and the other sources were not disturbed
    assert "poll of deliberations failed" not in text and "poll of finances failed" not in text
    assert bus.returncode == 0, text[-3000:]
