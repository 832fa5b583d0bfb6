"""How many bundles of a poll the bus takes in at once (``intake_threads``): a folder's one after the
other in the poll's own thread by default (threads would only contend for the interpreter), side by
side on threads of the source's own when the configuration asks for it; every bundle recorded once
either way, and a bad value refused naming the option."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.config import load_config
from bus.connector import Candidate, Claimed
from bus.errors import ConfigError
from bus.runtime import Runtime
from connectors.database_inbound import DatabaseInbound
from connectors.folder_inbound import FolderInbound, FolderInboundConfig
from connectors.sftp_inbound import SftpInbound
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from tests.harness import write_config

pytestmark = pytest.mark.integration

BUNDLES = 6


def _config(workspace: Path, intake_threads: int | None) -> Path:
    config = write_config(workspace)
    if intake_threads is not None:
        settings = yaml.safe_load(config.read_text(encoding="utf-8"))
        settings["connectors"]["deliberations"]["intake_threads"] = intake_threads
        config.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
    drop = workspace / "drop" / "deliberations"
    for n in range(BUNDLES):
        drop_deliberation(drop, f"DEL2026_{n:03d}", decision=date.today() - timedelta(days=1), annexes=0)
    return config


def _poll_watching_claims(config: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, list[dict[str, Any]], Runtime]:
    """One poll of the deliberations' folder, each claim held 0.3 s; what it took, and each claim's
    thread and time."""
    seen: list[dict[str, Any]] = []
    claim = FolderInbound.claim

    def watched(self: FolderInbound, candidate: Candidate) -> Claimed | None:
        began = time.monotonic()
        time.sleep(0.3)
        claimed = claim(self, candidate)
        seen.append({"thread": threading.current_thread().name, "began": began, "ended": time.monotonic()})
        return claimed

    monkeypatch.setattr(FolderInbound, "claim", watched)
    runtime = Runtime(load_config(config), Pipeline.for_runtime, serve_http=False)
    try:
        taken = runtime.poll("deliberations")
    except BaseException:
        runtime.shutdown()
        raise
    return taken, seen, runtime


def _overlapping(seen: list[dict[str, Any]]) -> int:
    """The most claims that ran at the same moment (a claim's end counted before a start at the same time)."""
    events = sorted([(claim["began"], 1) for claim in seen] + [(claim["ended"], -1) for claim in seen])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def test_a_folder_takes_the_bundles_of_a_poll_one_after_the_other_in_the_polls_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given six bundles in a drop folder whose configuration says nothing of intake_threads
    config = _config(tmp_path, None)

    # When the bus polls it once, from this thread
    taken, seen, runtime = _poll_watching_claims(config, monkeypatch)
    try:
        # Then it took all six, each claimed in this very thread, one after the other
        assert taken == BUNDLES
        assert {claim["thread"] for claim in seen} == {threading.current_thread().name}
        assert _overlapping(seen) == 1
        assert runtime.ledger.counts_by_state()["document"]["RECEIVED"] == BUNDLES
        # and the bus started no intake thread for it
        assert not [t.name for t in threading.enumerate() if t.name.startswith("ingest-")]
    finally:
        runtime.shutdown()


def test_intake_threads_takes_the_bundles_of_a_poll_side_by_side_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same folder with intake_threads: 3 (a network share, say)
    config = _config(tmp_path, 3)

    # When the bus polls it once
    taken, seen, runtime = _poll_watching_claims(config, monkeypatch)
    try:
        # Then it took all six on three threads of the source's own, up to three at the same moment
        assert taken == BUNDLES
        threads = {claim["thread"] for claim in seen}
        assert len(threads) == 3 and all(name.startswith("ingest-deliberations") for name in threads), threads
        assert _overlapping(seen) == 3
        # and recorded each bundle once
        documents = runtime.ledger.documents()
        assert sorted(d.bundle for d in documents) == [f"DEL2026_{n:03d}.json" for n in range(BUNDLES)]
    finally:
        runtime.shutdown()
    # and its threads end with the bus
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ingest-deliberations")]


def test_each_source_type_has_its_own_default_and_the_option_overrides_it(tmp_path: Path) -> None:
    folder = FolderInboundConfig(path=tmp_path / "drop")
    assert FolderInbound("drop", folder).intake_threads == 1
    assert FolderInbound("drop", folder.model_copy(update={"intake_threads": 5})).intake_threads == 5
    # the sources whose every step waits for a server take four at once unless told otherwise
    assert SftpInbound.intake_threads_default == 4
    assert DatabaseInbound.intake_threads_default == 4


@pytest.mark.parametrize("value", [0, 17, "many"])
def test_a_bad_intake_threads_is_refused_naming_the_file_and_the_option(tmp_path: Path, value: Any) -> None:
    config = write_config(tmp_path)
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["connectors"]["deliberations"]["intake_threads"] = value
    config.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    message = str(raised.value)
    assert "intake_threads" in message and str(config) in message, message
