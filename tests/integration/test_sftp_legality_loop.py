"""The whole loop over SFTP, on OpenSSH's sshd: a vendor's SFTP outbox → the bus → the legality
platform's SFTP inbox (the simulator's desk) → the ministry's answer in the platform's outbox →
the ledger → a reply file in the vendor's SFTP reply folder.  And a file relayed unchanged."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus import metrics
from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from simulators.legality_sftp import LegalityDesk
from simulators.pdf import make_pdf
from tests.harness import CLASSIFICATION, MAPPINGS, ledger_outcome
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
TODAY = date.today()
SIREN = "214400152"


def sftp(sshd: SshServer, path: Path, **extra: Any) -> dict[str, Any]:
    return {"type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user,
            "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), "path": str(path),
            "timeout": "5s", **extra}


def write_loop_config(sshd: SshServer, base: Path, workspace: Path, answer_extra: dict[str, Any] | None = None) -> Path:
    """The vendor's outbox and the platform's folders are on the SFTP server (``base``)."""
    for folder in ("vendor", "vendor-answers", "relay-in", "relay-out", "platform/inbox", "platform/outbox"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    quick = {"min_age": "0s", "stable": False}
    config = {
        "bus": {"state_dir": str(workspace / "var"), "lease": "2s", "sweep": "0.2s", "answers": "0.2s",
                "metrics": {"enabled": False}},
        "collectivites": [{"siren": SIREN, "departement": "044", "arrondissement": 1, "nature": "31",
                           "return_emails": ["actes@saint-herblain.fr"], "classification": str(CLASSIFICATION),
                           "classification_date": "2025-01-15"}],
        "connectors": {
            "vendor": sftp(sshd, base / "vendor", pattern="*.json", poll="0.2s", ready=quick,
                           local_work_dir=str(workspace / "work-vendor")),
            "prefecture": sftp(sshd, base / "platform" / "inbox", trigram="HNT", quadrigram="TACT",
                               answers={"path": str(base / "platform" / "outbox"), "ready": quick,
                                        **(answer_extra or {})}),
            "vendor-answers": sftp(sshd, base / "vendor-answers", pattern="*.json", poll="0.2s", ready=quick,
                                   local_work_dir=str(workspace / "work-answers")),
            "relay-in": sftp(sshd, base / "relay-in", pattern="*.csv", poll="0.2s", ready=quick,
                             local_work_dir=str(workspace / "work-relay")),
            "relay-out": sftp(sshd, base / "relay-out"),
        },
        "routes": [
            {"name": "deliberations", "from": "vendor", "map": str(MAPPINGS / "deliberations-json.yaml"),
             "to": "prefecture"},
            {"name": "reponses", "from": "vendor-answers", "transform": "response", "to": "prefecture"},
            {"name": "relay", "from": "relay-in", "transform": "passthrough", "to": "relay-out"},
        ],
    }
    path = workspace / "hent.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture
def loop(sshd: SshServer, tmp_path: Path) -> Iterator[tuple[Path, Path, LegalityDesk]]:
    base = sshd.root / tmp_path.name
    config = write_loop_config(sshd, base, tmp_path)
    with LegalityDesk.for_root(base / "platform", interval=0.1) as desk:
        yield config, base, desk


def run(config: Path, timeout: float = 60) -> None:
    runtime = Runtime(load_config(config), Pipeline.for_runtime, retry=FAST, serve_http=False)
    assert runtime.run_until_idle(timeout=timeout), "the bus did not finish"


def ledger_of(config: Path) -> Ledger:
    return Ledger(load_config(config).bus.ledger)


def replies(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "replies").iterdir()) if (folder / "replies").is_dir() else []


def test_an_act_from_an_sftp_outbox_is_acknowledged_over_sftp_and_the_aracte_reaches_the_vendor(
    loop: tuple[Path, Path, LegalityDesk],
) -> None:
    config, base, desk = loop
    # Given a deliberation in the vendor's SFTP outbox
    drop_deliberation(base / "vendor", "DEL2026_101", decision=TODAY - timedelta(days=2), annexes=1)
    # When the bus runs until every delivery is final
    run(config)
    # Then the platform received the archive once and the ministry acknowledged it
    id_acte = f"044-{SIREN}-{TODAY - timedelta(days=2):%Y%m%d}-DEL2026_101-DE"
    assert list(desk.received()["by_act"].values()) == [1]
    ledger = ledger_of(config)
    try:
        [delivery] = ledger.deliveries()
        assert delivery.state == "ACKNOWLEDGED" and delivery.id_acte == id_acte
        assert "ARActe" in (delivery.reason or "")
    finally:
        ledger.close()
    # and the vendor finds the ARActe verbatim in its SFTP reply folder, beside a summary
    names = replies(base / "vendor")
    [aracte] = [n for n in names if n.endswith(".1-2.xml")]
    assert aracte.startswith("DEL2026_101.") and b"ARActe" in (base / "vendor" / "replies" / aracte).read_bytes()
    summaries = [json.loads((base / "vendor" / "replies" / n).read_text()) for n in names if n.endswith(".json")]
    assert any(s.get("state") == "ACKNOWLEDGED" and s.get("id_acte") == id_acte for s in summaries)
    # and the answer left the platform's outbox for its done/ folder; the bundle is in done/
    outbox = base / "platform" / "outbox"
    assert [p for p in outbox.iterdir() if p.is_file()] == []
    assert len(list((outbox / "done").iterdir())) == 1 and list((outbox / "error").iterdir()) == []
    assert "DEL2026_101.json" in {p.name for p in (base / "vendor" / "done").iterdir()}


def test_a_new_classification_over_sftp_is_kept_and_dates_the_next_acts(
    loop: tuple[Path, Path, LegalityDesk],
) -> None:
    config, base, desk = loop
    # Given an act prepared with the configured classification, while the préfecture publishes a new one
    desk.publish_classification(TODAY, [SIREN])
    drop_deliberation(base / "vendor", "DEL2026_102", decision=TODAY - timedelta(days=1), annexes=0)
    run(config)
    ledger = ledger_of(config)
    try:
        kept = ledger.classification(SIREN)
        assert kept is not None and kept["date"] == TODAY.isoformat()
        first = {d.id_acte: d for d in ledger.deliveries()}
    finally:
        ledger.close()
    # (the act may have been built before or after the 7-2 was read: either outcome is the ministry's)
    [state] = [d.state for d in first.values()]
    assert state in ("ACKNOWLEDGED", "REJECTED")
    # When another act is dropped after the 7-2 was kept
    drop_deliberation(base / "vendor", "DEL2026_103", decision=TODAY - timedelta(days=1), annexes=0)
    run(config)
    # Then it is stamped with the new classification date and acknowledged
    ledger = ledger_of(config)
    try:
        [second] = [d for d in ledger.deliveries() if "DEL2026_103" in (d.id_acte or "")]
        assert second.state == "ACKNOWLEDGED", second.reason
    finally:
        ledger.close()


def test_a_letter_of_the_prefecture_over_sftp_reaches_the_vendor_once_with_its_pdf(
    loop: tuple[Path, Path, LegalityDesk],
) -> None:
    config, base, desk = loop
    drop_deliberation(base / "vendor", "DEL2026_104", decision=TODAY - timedelta(days=2), annexes=0)
    run(config)
    id_acte = f"044-{SIREN}-{TODAY - timedelta(days=2):%Y%m%d}-DEL2026_104-DE"
    # When the préfecture writes a letter about the acknowledged act
    desk.followup(id_acte, "2-1")
    run(config)
    run(config)  # a second run finds nothing new
    # Then the vendor has the letter and its PDF, once
    names = replies(base / "vendor")
    assert len([n for n in names if n.endswith(".2-1.xml")]) == 1
    assert len([n for n in names if n.endswith(".pdf")]) == 1
    ledger = ledger_of(config)
    try:
        [delivery] = ledger.deliveries()
        assert [m["code"] for m in ledger.messages_of(delivery.id)] == ["2-1"]
    finally:
        ledger.close()


def drop_answer(folder: Path, name: str, id_acte: str, code: str, documents: int = 1) -> None:
    files = [f"{name}_{n}.pdf" for n in range(1, documents + 1)]
    for file in files:
        (folder / file).write_bytes(make_pdf([f"Réponse {code}", f"Acte {id_acte}", file]))
    sidecar = {"reponse": {"acte": id_acte, "type": code, "documents": [{"fichier": f} for f in files]}}
    (folder / f"{name}.json").write_text(json.dumps(sidecar), encoding="utf-8")


def test_answers_over_sftp_end_delivered_when_the_ministry_sends_nothing_and_acknowledged_by_its_3_5(
    loop: tuple[Path, Path, LegalityDesk],
) -> None:
    config, base, desk = loop
    drop_deliberation(base / "vendor", "DEL2026_107", decision=TODAY - timedelta(days=2), annexes=0)
    run(config)
    id_acte = f"044-{SIREN}-{TODAY - timedelta(days=2):%Y%m%d}-DEL2026_107-DE"
    desk.followup(id_acte, "3-1")
    run(config)
    # When the software acknowledges the request (3-2), for which the ministry sends no message
    drop_answer(base / "vendor-answers", "AR_107", id_acte, "3-2", documents=0)
    run(config)
    # Then that answer is delivered once in the platform's inbox, not left waiting for a message
    [answer] = ledger_outcome(config)["AR_107.json"]["deliveries"]
    assert answer.state == "DELIVERED" and "no message" in (answer.reason or ""), answer.reason
    # and the letter still awaits its answer (a 3-2 only says it was received)
    # When the documents asked for are sent (3-4)
    drop_answer(base / "vendor-answers", "REP_107", id_acte, "3-4", documents=2)
    run(config)
    # Then the ministry's 3-5 acknowledges it and reaches the software
    [sent] = ledger_outcome(config)["REP_107.json"]["deliveries"]
    assert sent.state == "ACKNOWLEDGED", sent.reason
    names = replies(base / "vendor-answers")
    assert "REP_107.1.3-5.xml" in names and "AR_107.1.json" in names, names
    assert json.loads((base / "vendor-answers" / "replies" / "AR_107.1.json").read_text())["state"] == "DELIVERED"


def test_an_answer_that_matches_nothing_is_set_aside_with_a_note(loop: tuple[Path, Path, LegalityDesk]) -> None:
    config, base, desk = loop
    outbox = base / "platform" / "outbox"
    # Given an ARActe for an act this bus never sent, and bytes that are no message at all
    stray = (f'<actes:ARActe xmlns:actes="http://www.interieur.gouv.fr/ACTES#v1.1-20040216" '
             f'actes:DateReception="{TODAY}" actes:IDActe="044-{SIREN}-20200101-NOPE-DE"/>')
    (outbox / f"044-{SIREN}-20200101-NOPE-DE-1-2_9.xml").write_text(stray)
    (outbox / "garbage.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    before = metrics.UNMATCHED_ANSWERS.labels(connector="prefecture")._value.get()
    run(config)
    # Then both are in error/ beside a note naming what is wrong, and counted
    error = {p.name: p for p in (outbox / "error").iterdir()}
    assert set(error) == {f"044-{SIREN}-20200101-NOPE-DE-1-2_9.xml", "garbage.tar.gz",
                          f"044-{SIREN}-20200101-NOPE-DE-1-2_9.xml.error.txt", "garbage.tar.gz.error.txt"}
    assert "matches no delivery to prefecture" in error[f"044-{SIREN}-20200101-NOPE-DE-1-2_9.xml.error.txt"].read_text()
    assert "not a readable tar.gz" in error["garbage.tar.gz.error.txt"].read_text()
    assert metrics.UNMATCHED_ANSWERS.labels(connector="prefecture")._value.get() == before + 2


def test_a_file_relayed_unchanged_arrives_whole_and_is_delivered_once(loop: tuple[Path, Path, LegalityDesk]) -> None:
    config, base, _ = loop
    # Given a vendor file that is no act (a payroll export), on a passthrough route
    data = os.urandom(3 << 20)
    (base / "relay-in" / "paie-2026-11.csv").write_bytes(data)
    run(config)
    # Then it arrives unchanged under its name, and the source gets a DELIVERED summary
    assert hashlib.sha256((base / "relay-out" / "paie-2026-11.csv").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    assert [p.name for p in (base / "relay-out").iterdir()] == ["paie-2026-11.csv"]
    [summary] = [json.loads((base / "relay-in" / "replies" / n).read_text()) for n in replies(base / "relay-in")]
    assert summary["state"] == "DELIVERED" and summary["archive"] == "paie-2026-11.csv"
    assert [p.name for p in (base / "relay-in" / "done").iterdir()] == ["paie-2026-11.csv"]
    # and the same file put back unchanged is not relayed again
    os.replace(base / "relay-in" / "done" / "paie-2026-11.csv", base / "relay-in" / "paie-2026-11.csv")
    time.sleep(0.1)
    run(config)
    ledger = ledger_of(config)
    try:
        assert len(ledger.deliveries()) == 1
    finally:
        ledger.close()


def test_bare_xml_answers_with_their_letters_beside_them_are_read_together(sshd: SshServer, tmp_path: Path) -> None:
    # Given a platform that leaves bare messages, and letters as separate PDFs beside them
    base = sshd.root / tmp_path.name
    config = write_loop_config(sshd, base, tmp_path)
    with LegalityDesk.for_root(base / "platform", interval=0.1, answer_format="xml") as desk:
        drop_deliberation(base / "vendor", "DEL2026_105", decision=TODAY - timedelta(days=2), annexes=0)
        run(config)
        id_acte = f"044-{SIREN}-{TODAY - timedelta(days=2):%Y%m%d}-DEL2026_105-DE"
        written = desk.followup(id_acte, "3-1")
        assert any(name.endswith(".pdf") for name in written)
        run(config)
    # Then the request for documents reached the vendor with its letter, and both files left the outbox together
    names = replies(base / "vendor")
    assert len([n for n in names if n.endswith(".3-1.xml")]) == 1 and len([n for n in names if n.endswith(".pdf")]) == 1
    done = sorted(p.name for p in (base / "platform" / "outbox" / "done").iterdir())
    assert set(written) <= set(done) and len(done) == 3  # the ARActe, the 3-1 and its letter


def test_an_answer_recorded_but_not_settled_before_a_failure_is_not_returned_twice(
    loop: tuple[Path, Path, LegalityDesk],
) -> None:
    config, base, desk = loop
    outbox = base / "platform" / "outbox"
    # Given a done/ folder that cannot take the answer (a file stands in its place)
    (outbox / "done").write_text("not a folder")
    drop_deliberation(base / "vendor", "DEL2026_106", decision=TODAY - timedelta(days=2), annexes=0)
    run(config)
    # Then the act is acknowledged and the vendor has its ARActe, but the answer is still in the outbox
    assert len([n for n in replies(base / "vendor") if n.endswith(".1-2.xml")]) == 1
    assert len([p for p in outbox.iterdir() if p.name.endswith(".tar.gz")]) == 1
    # When the folder is repaired and the bus runs again
    (outbox / "done").unlink()
    (outbox / "done").mkdir()
    run(config)
    # Then the answer is settled, and the vendor did not get it a second time
    assert [p for p in outbox.iterdir() if p.is_file()] == [] and len(list((outbox / "done").iterdir())) == 1
    assert len([n for n in replies(base / "vendor") if n.endswith(".1-2.xml")]) == 1
