"""The legality desk: the platform behind an inbox and an outbox folder, as an SFTP server serves them.

Archives are built by Hent (``build_archive``) and dropped the way the bus uploads them
(``<name>.part``, then renamed).  Every answer is checked against the ministry's own schema
and read back by ``parse_message``, the bus's parsing side.  No network: the desk only
touches local folders.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from simulators.legality_platform import ODT_VERIF_01
from simulators.legality_sftp import LegalityDesk, client_key_for
from tests.integration import test_legality_simulator as soap_tests
from tests.integration.test_legality_simulator import CLASSIFICATION_DATE, archive_of, assert_ministry_valid, members
from transformers.actes_in import MinistryMessage, parse_message
from transformers.actes_model import CanonicalAct

pytestmark = pytest.mark.integration

# the SOAP tests' fixtures: an act built by Hent, and the ministry's actesv1_1.xsd
make_act = soap_tests.make_act
ministry_schema = soap_tests.ministry_schema

TODAY = f"{date.today():%Y%m%d}"
SIREN = "214400152"


@pytest.fixture
def desk(tmp_path: Path) -> LegalityDesk:
    """A desk that is not running: the tests call process_once() themselves."""
    return LegalityDesk.for_root(tmp_path / "desk")


def drop(desk: LegalityDesk, name: str, data: bytes) -> Path:
    """Upload as the bus does: ``<name>.part``, then renamed."""
    part = desk.inbox_dir / f"{name}.part"
    part.write_bytes(data)
    return part.rename(desk.inbox_dir / name)


def outbox(desk: LegalityDesk) -> list[str]:
    return sorted(path.name for path in desk.outbox_dir.iterdir())


def answer(desk: LegalityDesk, name: str, schema: etree.XMLSchema) -> dict[str, MinistryMessage]:
    """Every XML file of an answer archive (or a bare answer), valid and read without errors."""
    data = (desk.outbox_dir / name).read_bytes()
    files = members(data) if name.endswith(".tar.gz") else {name: data}
    read = {}
    for member, content in files.items():
        if member.endswith(".xml"):
            assert_ministry_valid(schema, content)
            read[member] = parse_message(content, member)
            assert read[member].errors == (), read[member].errors
    return read


def acknowledged(desk: LegalityDesk, make_act: Callable[..., CanonicalAct]) -> str:
    transmission, data = archive_of(make_act())
    drop(desk, transmission.archive_name, data)
    assert desk.process_once() == 1
    return transmission.id_acte


# ---------------------------------------------------------------- answers


def test_a_good_archive_gets_an_ar_acte_archive_with_the_ministry_envelope(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct], ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    drop(desk, transmission.archive_name, data)
    assert desk.process_once() == 1
    stem = f"EACT--SPREF0441-{SIREN}-{TODAY}-1"
    assert outbox(desk) == [f"{stem}.tar.gz"]
    with tarfile.open(desk.outbox_dir / f"{stem}.tar.gz", "r:gz") as tar:
        names = tar.getnames()
    assert names[0] == f"{stem}.xml" and len(names) == 2 and "/" not in "".join(names)
    read = answer(desk, f"{stem}.tar.gz", ministry_schema)
    envelope, message = read[f"{stem}.xml"], read[names[1]]
    assert (envelope.kind, envelope.code, envelope.file_names) == ("EnveloppeMISILLCL", "ENV", (names[1],))
    assert envelope.act_key is not None and envelope.act_key.siren == SIREN
    assert names[1].startswith(f"{transmission.id_acte}-1-2_")
    assert (message.kind, message.code, message.id_acte) == ("ARActe", "1-2", transmission.id_acte)
    assert [p.name for p in desk.inbox_dir.iterdir() if p.is_file()] == []
    assert (desk.processed_dir / transmission.archive_name).read_bytes() == data
    received = desk.received()
    assert (received["handled"], received["duplicates"], received["refused"]) == (
        [transmission.archive_name], [], [])
    assert received["recorded"] == {f"{SIREN}:DEL2026_042:2026-01-12": 1}
    assert desk.platform.find(transmission.envelope_name.removesuffix(".xml")) is not None  # the client key


def test_a_new_classification_sends_a_7_2_and_an_older_act_gets_odt_verif_01(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct], ministry_schema: etree.XMLSchema
) -> None:
    written = desk.publish_classification(date(2025, 6, 1), [SIREN, "123456789"])
    assert written == [f"EACT--SPREF0441-{SIREN}-{TODAY}-1.tar.gz", f"EACT--SPREF0441-123456789-{TODAY}-2.tar.gz"]
    for name, siren in zip(written, (SIREN, "123456789"), strict=True):
        read = answer(desk, name, ministry_schema)
        (form,) = [n for n in read if n.startswith("044-")]
        assert form.startswith(f"044-{siren}----7-2_")
        assert (read[form].kind, read[form].code) == ("RetourClassification", "7-2")
        assert read[form].dates["DateClassification"] == date(2025, 6, 1)
    transmission, data = archive_of(make_act())
    drop(desk, transmission.archive_name, data)
    desk.process_once()
    (name,) = set(outbox(desk)) - set(written)
    (message,) = [m for n, m in answer(desk, name, ministry_schema).items() if "-1-3_" in n]
    assert (message.kind, message.code, message.anomaly_nature, message.detail) == (
        "AnomalieActe", "1-3", "002", ODT_VERIF_01)
    assert message.act_key is not None and message.act_key.numero_interne == "DEL2026_042"
    assert message.dates["ClassificationDateVersion"] == CLASSIFICATION_DATE


def test_garbage_is_refused_with_its_reason_and_the_next_archive_is_still_answered(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct]
) -> None:
    drop(desk, "SLO-EACT--214400152--20260113-9.tar.gz", b"%PDF-1.4 not an archive")
    transmission, data = archive_of(make_act())
    drop(desk, transmission.archive_name, data)
    assert desk.process_once() == 2
    assert sorted(p.name for p in desk.refused_dir.iterdir()) == [
        "SLO-EACT--214400152--20260113-9.tar.gz", "SLO-EACT--214400152--20260113-9.tar.gz.error.txt"]
    why = (desk.refused_dir / "SLO-EACT--214400152--20260113-9.tar.gz.error.txt").read_text(encoding="utf-8")
    assert why.startswith("SLO-EACT--214400152--20260113-9.tar.gz: INVALID_ARCHIVE: ")
    assert "cannot read the archive as tar.gz" in why
    assert len(outbox(desk)) == 1
    assert desk.received()["refused"] == ["SLO-EACT--214400152--20260113-9.tar.gz"]


def test_an_envelope_error_gets_an_envelope_anomaly_addressed_from_the_echoed_envelope(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct], ministry_schema: etree.XMLSchema
) -> None:
    transmission, data = archive_of(make_act())
    drop(desk, "deliberation.tar.gz", data)  # not TRI-QUAD--SIREN--YYYYMMDD-N.tar.gz
    desk.process_once()
    assert outbox(desk) == [f"EACT--SPREF0441-{SIREN}-{TODAY}-1.tar.gz"]
    read = answer(desk, outbox(desk)[0], ministry_schema)
    message = read[f"ANO_{transmission.envelope_name}"]
    assert (message.kind, message.code, message.anomaly_nature) == ("AnomalieEnveloppe", "ANO", "001")
    assert message.envelope_name == transmission.envelope_name.removesuffix(".xml")
    assert message.detail is not None and message.detail.startswith("deliberation.tar.gz -> archive-name : ")
    assert desk.platform.find("deliberation.tar.gz") is not None  # the client key of an unparsable name


def test_the_same_archive_dropped_twice_gets_one_answer_and_is_kept_twice(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct]
) -> None:
    transmission, data = archive_of(make_act())
    for _ in range(2):
        drop(desk, transmission.archive_name, data)
        assert desk.process_once() == 1
    assert len(outbox(desk)) == 1
    stem = transmission.archive_name.removesuffix(".tar.gz")
    assert sorted(p.name for p in desk.processed_dir.iterdir()) == [f"{stem}.2.tar.gz", f"{stem}.tar.gz"]
    received = desk.received()
    assert received["handled"] == [transmission.archive_name] * 2
    assert received["duplicates"] == [transmission.archive_name]
    assert received["by_act"] == {f"{SIREN}:DEL2026_042:2026-01-12": 2}
    assert received["recorded"] == {f"{SIREN}:DEL2026_042:2026-01-12": 1}


def test_part_and_hidden_files_are_never_taken(desk: LegalityDesk, make_act: Callable[..., CanonicalAct]) -> None:
    transmission, data = archive_of(make_act())
    part = desk.inbox_dir / f"{transmission.archive_name}.part"
    part.write_bytes(data[: len(data) // 2])
    (desk.inbox_dir / f".{transmission.archive_name}").write_bytes(data)
    (desk.inbox_dir / "notes.txt").write_text("not an archive", encoding="utf-8")
    assert desk.process_once() == 0
    assert outbox(desk) == [] and desk.received()["handled"] == []
    part.write_bytes(data)
    part.rename(desk.inbox_dir / transmission.archive_name)
    assert desk.process_once() == 1


def test_a_follow_up_2_1_writes_the_message_and_its_letter(
    desk: LegalityDesk, make_act: Callable[..., CanonicalAct], ministry_schema: etree.XMLSchema
) -> None:
    id_acte = acknowledged(desk, make_act)
    (written,) = desk.followup(id_acte, "2-1")
    assert written == f"EACT--SPREF0441-{SIREN}-{TODAY}-2.tar.gz"
    files = members((desk.outbox_dir / written).read_bytes())
    (letter,) = [n for n in files if n.endswith(".pdf")]
    assert files[letter].startswith(b"%PDF-")
    read = answer(desk, written, ministry_schema)
    (form,) = [n for n in read if "-2-1_" in n]
    assert read[written.replace(".tar.gz", ".xml")].file_names == (form,)
    assert (read[form].kind, read[form].code, read[form].id_acte) == ("CourrierSimple", "2-1", id_acte)
    assert read[form].file_names == (letter,)
    with pytest.raises(KeyError, match="no transaction with IDActe"):
        desk.followup("044-214400152-20260112-NOPE-DE", "2-1")


def test_the_xml_format_writes_bare_files_under_the_ministry_names(
    tmp_path: Path, make_act: Callable[..., CanonicalAct], ministry_schema: etree.XMLSchema
) -> None:
    desk = LegalityDesk.for_root(tmp_path, answer_format="xml", departement="044")
    transmission, data = archive_of(make_act())
    drop(desk, transmission.archive_name, data)
    drop(desk, "deliberation.tar.gz", archive_of(make_act(numero_interne="DEL2026_043"))[1])
    assert desk.process_once() == 2
    written = desk.followup(transmission.id_acte, "2-1")
    written += desk.publish_classification(date(2025, 1, 15), [SIREN])
    names = outbox(desk)
    assert len(names) == 5 and set(written) <= set(names)
    kinds = {}
    for name in names:
        if name.endswith(".pdf"):
            assert name.startswith(f"{transmission.id_acte}-2-1_") and name.endswith("_1.pdf")
            continue
        (message,) = answer(desk, name, ministry_schema).values()
        kinds[message.kind] = name
    assert kinds["ARActe"].startswith(f"{transmission.id_acte}-1-2_")
    assert kinds["AnomalieEnveloppe"] == "ANO_EACT--214400152--20260113-1.xml"
    assert kinds["CourrierSimple"].startswith(f"{transmission.id_acte}-2-1_")
    assert kinds["RetourClassification"].startswith(f"044-{SIREN}----7-2_")
    with pytest.raises(ValueError, match="unknown answer format 'zip'"):
        LegalityDesk(tmp_path, desk.platform, answer_format="zip")  # type: ignore[arg-type]


def test_client_keys_are_the_envelope_stems() -> None:
    assert client_key_for("SLO-EACT--214400152--20260113-12.tar.gz") == "EACT--214400152--20260113-12"
    assert client_key_for("deliberation.tar.gz") == "deliberation.tar.gz"


# ---------------------------------------------------------------- running


@pytest.fixture
def running(tmp_path: Path) -> Iterator[LegalityDesk]:
    with LegalityDesk.for_root(tmp_path, interval=0.02) as started:
        yield started


def wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_running_desk_answers_and_takes_follow_ups_from_another_thread(
    running: LegalityDesk, make_act: Callable[..., CanonicalAct]
) -> None:
    transmission, data = archive_of(make_act())
    drop(running, transmission.archive_name, data)
    wait_for(lambda: outbox(running))
    assert running.followup(transmission.id_acte, "6-2") == [f"EACT--SPREF0441-{SIREN}-{TODAY}-2.tar.gz"]
    again, again_data = archive_of(make_act(), serial=2)
    drop(running, again.archive_name, again_data)
    wait_for(lambda: running.received()["duplicates"] == [again.archive_name])
    assert len(outbox(running)) == 2
    running.stop()
    running.stop()  # twice is harmless


def test_the_command_line_runs_a_desk_until_terminated(tmp_path: Path, make_act: Callable[..., CanonicalAct]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.legality", "--desk", str(tmp_path / "desk"), "--desk-format", "xml"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(f"legality desk on {tmp_path / 'desk'} ")
        transmission, data = archive_of(make_act())
        inbox = tmp_path / "desk" / "inbox"
        (inbox / f"{transmission.archive_name}.part").write_bytes(data)
        (inbox / f"{transmission.archive_name}.part").rename(inbox / transmission.archive_name)
        wait_for(lambda: list((tmp_path / "desk" / "outbox").glob("*-1-2_*.xml")))
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert process.returncode == 0, errors
    assert (inbox / "processed" / transmission.archive_name).exists()


def test_the_command_line_refuses_soap_options_with_a_desk(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulators.legality", "--desk", str(tmp_path), "--fault", "drop"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith("error: --desk takes no SOAP server options (--fault)")
