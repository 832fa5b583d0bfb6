"""Crash points (``bus.crash``) and what makes each of them safe: the reply written once
(``write_reply`` with a reply id) and the reply a crash left owed (``Ledger.owed_replies``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bus.crash import ENV, POINTS, armed, crash_point, halfway, parse
from bus.ledger import Ledger
from connectors._folder_common import exclusive_write, write_reply
from tests.harness import ROOT

#: the code that may reach a crash point
SOURCES = [ROOT / "run_bus.py", *(p for folder in ("bus", "connectors", "routes", "transformers")
                                  for p in (ROOT / folder).rglob("*.py"))]
USE = re.compile(r"""(?:crash_point|halfway)\(\s*"([^"]+)"|\bcrash="([^"]+)\"""")


def run_python(code: str, crash_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at is not None:
        env[ENV] = crash_at
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


# -- the registry -------------------------------------------------------------------------------


def test_every_point_in_the_code_is_registered_and_every_registered_point_is_in_the_code() -> None:
    used: dict[str, list[str]] = {}
    for path in SOURCES:
        for found in USE.finditer(path.read_text(encoding="utf-8")):
            used.setdefault(found[1] or found[2], []).append(str(path.relative_to(ROOT)))
    assert sorted(set(used) - set(POINTS)) == [], "used in the code but not in bus.crash.POINTS"
    assert sorted(set(POINTS) - set(used)) == [], "in bus.crash.POINTS but reached nowhere"
    assert all(description and "\n" not in description for description in POINTS.values())


def test_hent_crash_at_names_points_each_with_the_time_it_kills() -> None:
    assert parse(None) == parse("") == {}
    assert parse("send.after-send") == {"send.after-send": 1}
    assert parse(" send.after-send:3, reply.mid-write ,") == {"send.after-send": 3, "reply.mid-write": 1}


@pytest.mark.parametrize(("value", "message"), [
    ("send.after-sent", "HENT_CRASH_AT: unknown crash point 'send.after-sent'; the points are: ingest.after-spool, "),
    ("send.after-send:0", "HENT_CRASH_AT: 'send.after-send:0': the count after ':' must be a whole number from 1"),
    ("send.after-send:x", "HENT_CRASH_AT: 'send.after-send:x': the count after ':' must be a whole number from 1"),
])
def test_a_mistaken_hent_crash_at_is_refused_with_what_to_fix(value: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse(value)
    assert str(raised.value).startswith(message)


# -- inert unless named -------------------------------------------------------------------------


def test_unset_every_point_is_inert() -> None:
    if os.environ.get(ENV):
        pytest.skip(f"{ENV} is set for this test run")
    chunks = [b"abc", b"def"]
    for point in POINTS:
        assert not armed(point)
        crash_point(point)  # returns
        assert halfway(point, chunks, 6) is chunks
    assert halfway(None, chunks, 6) is chunks


def test_the_variable_is_read_once_at_import_not_at_each_point() -> None:
    result = run_python(
        "import os\nfrom bus.crash import crash_point\n"
        "os.environ['HENT_CRASH_AT'] = 'send.after-send'\ncrash_point('send.after-send')\nprint('alive')",
        crash_at=None)
    assert (result.returncode, result.stdout) == (0, "alive\n")


def test_the_nth_time_a_point_is_reached_the_process_kills_itself_with_sigkill() -> None:
    result = run_python(
        "from bus.crash import crash_point\n"
        "for n in (1, 2, 3):\n"
        "    crash_point('ingest.after-spool')\n    crash_point('send.after-send')\n    print(n, flush=True)\n",
        crash_at="send.after-send:2,reply.mid-write")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == "1\n"
    assert result.stderr == "hent: crash point send.after-send reached (time 2): SIGKILL (HENT_CRASH_AT)\n"


@pytest.mark.parametrize(("chunks", "first"), [([b"a" * 10, b"b" * 10], "a" * 10), ([b"x" * 20], "x" * 10),
                                               ([b"a" * 4, b"b" * 12, b"c" * 4], "aaaabbbbbb")])
def test_halfway_the_consumer_gets_the_first_half_then_the_process_dies(chunks: list[bytes], first: str) -> None:
    result = run_python(
        "import sys\nfrom bus.crash import halfway\n"
        f"for chunk in halfway('send.mid-upload', {chunks!r}, 20):\n"
        "    sys.stdout.write(chunk.decode()); sys.stdout.flush()\n",
        crash_at="send.mid-upload")
    assert result.returncode == -signal.SIGKILL
    assert result.stdout == first
    assert "crash point send.mid-upload reached (time 1)" in result.stderr


def test_a_mistaken_hent_crash_at_stops_the_bus_from_starting() -> None:
    result = run_python("import bus.crash", crash_at="nowhere")
    assert result.returncode == 1
    assert "ValueError: HENT_CRASH_AT: unknown crash point 'nowhere'" in result.stderr


# -- a reply written once -----------------------------------------------------------------------


def reply(folder: Path, summary: dict[str, object]) -> list[str]:
    folder.mkdir(exist_ok=True)
    return write_reply(
        "DEL_001.json", "1-2", b"<ARActe/>", summary, {"tampon.pdf": b"%PDF"},
        exists=lambda name: (folder / name).exists(),
        put_new=lambda name, data: exclusive_write(folder / name, data),
        remove=lambda name: (folder / name).unlink(missing_ok=True),
        read=lambda name: (folder / name).read_bytes(),
    )


def test_a_reply_with_an_id_asked_twice_is_written_once(tmp_path: Path) -> None:
    folder = tmp_path / "replies"
    written = reply(folder, {"state": "ACKNOWLEDGED", "reply_id": "d1:ACKNOWLEDGED:t"})
    # When the bus, killed before it could record the reply, writes it again
    again = reply(folder, {"state": "ACKNOWLEDGED", "reply_id": "d1:ACKNOWLEDGED:t"})
    # Then nothing new is written; another reply takes the next number
    assert written == ["DEL_001.1.1-2.xml", "DEL_001.1.1-2.tampon.pdf", "DEL_001.1.json"] and again == []
    assert reply(folder, {"state": "ACKNOWLEDGED", "reply_id": "d1:receipts"})[-1] == "DEL_001.2.json"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*written, "DEL_001.2.1-2.xml",
                                                               "DEL_001.2.1-2.tampon.pdf", "DEL_001.2.json"])


def test_a_reply_cut_short_by_a_crash_is_finished_under_its_own_number(tmp_path: Path) -> None:
    folder = tmp_path / "replies"
    folder.mkdir()
    # Given a reply killed after its message, before its attachment and summary
    (folder / ".DEL_001.1.claim").write_bytes(b"d1:ACKNOWLEDGED:t")
    (folder / "DEL_001.1.1-2.xml").write_bytes(b"<ARActe/>")
    # When it is written again
    written = reply(folder, {"state": "ACKNOWLEDGED", "reply_id": "d1:ACKNOWLEDGED:t"})
    # Then it is whole, once, under number 1, and its claim is gone
    assert written == ["DEL_001.1.1-2.xml", "DEL_001.1.1-2.tampon.pdf", "DEL_001.1.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(written)
    assert json.loads((folder / "DEL_001.1.json").read_text())["reply_id"] == "d1:ACKNOWLEDGED:t"


def test_a_claim_left_after_a_whole_reply_is_removed_and_nothing_written(tmp_path: Path) -> None:
    folder = tmp_path / "replies"
    written = reply(folder, {"state": "DELIVERED", "reply_id": "d2:DELIVERED:t"})
    (folder / ".DEL_001.1.claim").write_bytes(b"d2:DELIVERED:t")  # killed before the claim went
    assert reply(folder, {"state": "DELIVERED", "reply_id": "d2:DELIVERED:t"}) == []
    assert sorted(p.name for p in folder.iterdir()) == sorted(written)


def test_a_reply_with_no_id_is_written_each_time(tmp_path: Path) -> None:
    folder = tmp_path / "replies"
    reply(folder, {"state": "ROUTED", "note": "already processed"})
    reply(folder, {"state": "ROUTED", "note": "already processed"})
    assert sorted(p.name for p in folder.glob("*.json")) == [f"DEL_001.{n}.json" for n in (1, 2)]


# -- a reply owed -------------------------------------------------------------------------------


def test_a_delivery_made_final_owes_its_reply_until_it_is_written(tmp_path: Path) -> None:
    now = [datetime(2026, 5, 2, 9, 0, tzinfo=UTC)]
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", actor="worker-1", clock=lambda: now[0])
    ledger.reply_lease = 2.0
    try:
        document, _ = ledger.add_document(source="deliberations", bundle="DEL_001.json", idempotency_key="k",
                                          sidecar_sha256="a" * 64, files={})
        delivery = ledger.add_delivery(document.id, route="deliberations", endpoint="prefecture",
                                       artifact_name="a.tar.gz", artifact_sha256="b" * 64,
                                       artifact_kind="actes-archive", client_key="c", id_acte=None, envelope_name=None)
        ledger.transition_delivery(delivery.id, "SENT")
        assert ledger.owed_replies() == []  # SENT: nothing to reply yet
        # When the delivery ends, in the same transaction the reply is owed, held by this worker
        ledger.transition_delivery(delivery.id, "ACKNOWLEDGED")
        assert ledger.owed_replies() == []
        # Then, once the worker's hold expires (it was killed), the reply is listed as owed
        now[0] += timedelta(seconds=3)
        assert ledger.owed_replies() == [delivery.id]
        # and written, it is owed no more
        ledger.reply_written(delivery.id)
        assert ledger.owed_replies() == []
        assert ledger.verify_journal() == []
    finally:
        ledger.close()
