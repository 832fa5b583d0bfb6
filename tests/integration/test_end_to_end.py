"""The whole flow on the embedded default: drop folders in, ACTES archives out, replies back.

Bad input of every kind ends FAILED with a message naming the file, the field and the
rule; the bundle sits in error/ beside its .error.txt; the software finds a negative
reply; the bus goes on and the good documents beside it are delivered.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision
from tests.harness import MAPPINGS, archive_members, reference_or_skip, write_config
from transformers.actes_validate import default_validator

TODAY = date.today()
XXE = (
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    '<fin:export xmlns:fin="urn:example:finances:export:2"><fin:contrat>'
    "<fin:reference>&e;</fin:reference></fin:contrat></fin:export>"
)
ARCHIVE = re.compile(r"^HNT-TACT--214400152--\d{8}-\d{1,4}\.tar\.gz$")


def run_bus(config_path: Path) -> dict[str, Any]:
    config = load_config(config_path)
    runtime = Runtime(config, Pipeline.for_runtime, serve_http=False)
    assert runtime.run_until_idle(timeout=60), "the bus did not finish"
    ledger = Ledger(config.bus.ledger)
    try:
        return {
            doc.bundle: {"doc": doc, "deliveries": ledger.deliveries_of(doc.id)} for doc in ledger.documents()
        }
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Given good and broken bundles from the three vendors, dropped together."""
    workspace = tmp_path_factory.mktemp("e2e")
    utf8_mapping = workspace / "rh-utf8.yaml"  # a vendor said UTF-8 but exports latin-1
    utf8_mapping.write_text(
        (MAPPINGS / "rh-csv.yaml").read_text(encoding="utf-8").replace("encoding: latin-1", "encoding: utf-8"),
        encoding="utf-8",
    )
    config = write_config(workspace, rh_mapping=utf8_mapping)
    drop = workspace / "drop"
    drop_deliberation(drop / "deliberations", "DEL2026_001", decision=TODAY - timedelta(days=1), annexes=2)
    drop_contract(drop / "finances", "MAR2026_0031", signed=TODAY - timedelta(days=5))
    (drop / "deliberations" / "BROKEN.json").write_text('{"numero": "X", oops}', encoding="utf-8")
    drop_deliberation(drop / "deliberations", "NOPDF", decision=TODAY, omit=("NOPDF.pdf",))
    drop_deliberation(drop / "deliberations", "_A_", decision=TODAY)
    drop_deliberation(drop / "deliberations", "DEL 42", decision=TODAY)
    drop_deliberation(drop / "deliberations", "LONG", decision=TODAY, objet="x" * 600)
    drop_hr_decision(drop / "rh", "AR2026_0187", decision=TODAY)
    (drop / "finances" / "XXE.xml").write_text(XXE, encoding="utf-8")
    return workspace, run_bus(config)


BROKEN = {
    # bundle: (source, text naming file [and field], rule)
    "BROKEN.json": ("deliberations", "BROKEN.json:1: not valid JSON at line 1, column 17", "json-syntax"),
    "NOPDF.json": (
        "deliberations", "NOPDF.json: main_document.file: 'NOPDF.pdf' is named by the sidecar", "file-present"
    ),
    "_A_.json": ("deliberations", "_A_.json: numero_interne: NumeroInterne '_A_'", "numero-interne-pattern"),
    "DEL 42.json": ("deliberations", "DEL 42.json: numero_interne: NumeroInterne 'DEL 42'", "numero-interne-pattern"),
    "LONG.json": ("deliberations", "LONG.json: objet: Objet has 600 characters; 1 to 499 are allowed", "objet-length"),
    "AR2026_0187.csv": ("rh", "AR2026_0187.csv:2: cannot be read as utf-8: byte 0xe9", "encoding"),
    "XXE.xml": ("finances", "XXE.xml: the sidecar declares XML entities", "xml-entities-forbidden"),
}


@pytest.mark.parametrize("bundle", sorted(BROKEN))
def test_broken_input_fails_with_file_field_and_rule(broken_run: tuple[Path, dict[str, Any]], bundle: str) -> None:
    workspace, outcome = broken_run
    source, text, rule = BROKEN[bundle]
    document = outcome[bundle]["doc"]
    # Then the document is FAILED, with the reason a person can act on
    assert document.state == "FAILED"
    assert document.reason.startswith(text) and document.reason.rstrip().endswith(f"[{rule}]")
    assert outcome[bundle]["deliveries"] == []
    folder = workspace / "drop" / source
    # and the bundle is in error/ with its note, nothing is left in the drop or work folder
    assert (folder / "error" / bundle).is_file()
    note = (folder / "error" / f"{bundle}.error.txt").read_text(encoding="utf-8")
    assert text in note and f"[{rule}]" in note and "drop the corrected bundle again" in note
    assert not (folder / bundle).exists()
    assert list((folder / ".hent-work").iterdir()) == []
    # and the software has a negative reply
    stem = bundle.rsplit(".", 1)[0]
    reply = json.loads((folder / "replies" / f"{stem}.1.json").read_text(encoding="utf-8"))
    assert reply["state"] == "FAILED" and reply["bundle"] == bundle and reply["document"] == document.id
    assert any(f"[{rule}]" in line for line in reply["problems"])


def test_the_good_documents_beside_them_are_delivered(broken_run: tuple[Path, dict[str, Any]]) -> None:
    workspace, outcome = broken_run
    for bundle, source in (("DEL2026_001.json", "deliberations"), ("MAR2026_0031.xml", "finances")):
        document, deliveries = outcome[bundle]["doc"], outcome[bundle]["deliveries"]
        assert document.state == "ROUTED"
        [delivery] = deliveries
        assert delivery.state == "DELIVERED" and ARCHIVE.match(delivery.artifact_name)
        assert (workspace / "out" / delivery.artifact_name).is_file()
        assert (workspace / "drop" / source / "done" / bundle).is_file()
        stem = bundle.rsplit(".", 1)[0]
        reply = json.loads((workspace / "drop" / source / "replies" / f"{stem}.1.json").read_text())
        assert reply["state"] == "DELIVERED" and reply["archive"] == delivery.artifact_name
        assert reply["id_acte"] == document.id_acte
    assert len(list((workspace / "out").iterdir())) == 2


def test_every_archive_validates_against_the_project_and_official_schemas(
    broken_run: tuple[Path, dict[str, Any]],
) -> None:
    workspace, _ = broken_run
    reference = reference_or_skip()
    official = etree.XMLSchema(etree.parse(str(reference / "actes" / "xsd" / "actesv1_1.xsd")))
    archives = sorted((workspace / "out").iterdir())
    assert archives
    for archive in archives:
        assert default_validator().validate_archive(archive) == []
        for name, data in archive_members(archive).items():
            if name.endswith(".xml"):
                document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
                assert official.validate(document), (name, official.error_log)


def test_envelope_serials_are_unique_and_increasing_per_day(broken_run: tuple[Path, dict[str, Any]]) -> None:
    workspace, _ = broken_run
    serials = sorted(int(p.name.rsplit("-", 1)[1].split(".")[0]) for p in (workspace / "out").iterdir())
    assert len(set(serials)) == len(serials) and all(0 < s < 10000 for s in serials)


def test_a_character_outside_latin1_fails_under_the_fail_policy(tmp_path: Path) -> None:
    config = write_config(tmp_path, text_policy="fail")
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_077", decision=TODAY,
                      objet="Subvention au cœur de ville")
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_078", decision=TODAY,
                      objet="Subvention au centre-ville")
    outcome = run_bus(config)
    failed = outcome["DEL2026_077.json"]["doc"]
    assert failed.state == "FAILED"
    assert failed.reason.startswith("DEL2026_077.json: objet: character U+0153 œ at position 16 is not in ISO-8859-1")
    assert failed.reason.rstrip().endswith("[latin-1]")
    assert outcome["DEL2026_078.json"]["doc"].state == "ROUTED"


def test_the_same_act_dropped_twice_is_sent_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_090", decision=TODAY)
    run_bus(config)
    # When the software exports the same act again (another file, same SIREN, number, date)
    drop_deliberation(folder, "DEL2026_090", decision=TODAY, objet="Même acte, exporté une seconde fois")
    outcome = run_bus(config)
    # Then the second copy fails as a duplicate and only one archive exists
    states = sorted(str(d.state) for d in Ledger(load_config(config).bus.ledger).documents())
    assert states == ["FAILED", "ROUTED"]
    assert "already received as document" in outcome["DEL2026_090.json"]["doc"].reason or any(
        "[act-unique]" in (row["doc"].reason or "") for row in outcome.values()
    )
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_an_identical_bundle_dropped_again_is_not_processed_twice(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_091", decision=TODAY)
    sidecar = (folder / "DEL2026_091.json").read_bytes()
    pdfs = {p.name: p.read_bytes() for p in folder.glob("*.pdf")}
    run_bus(config)
    for name, data in pdfs.items():
        (folder / name).write_bytes(data)
    (folder / "DEL2026_091.json").write_bytes(sidecar)
    run_bus(config)
    assert len(Ledger(load_config(config).bus.ledger).documents()) == 1
    assert len(list((tmp_path / "out").iterdir())) == 1
    second = json.loads((folder / "replies" / "DEL2026_091.2.json").read_text())
    assert second["note"].startswith("already processed as document")


def test_a_failed_bundle_dropped_again_after_a_configuration_fix_is_processed_anew(tmp_path: Path) -> None:
    # Given a deliberation from a collectivité the configuration does not know yet
    config = write_config(tmp_path)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_093", decision=TODAY, siren="200000172")  # SIREN not configured
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    first = run_bus(config)["DEL2026_093.json"]["doc"]
    assert first.state == "FAILED" and "[collectivite-known]" in first.reason
    # When the IT department adds the collectivité and the software drops the same bytes again
    text = config.read_text(encoding="utf-8").replace(
        "collectivites:\n", "collectivites:\n- {siren: '200000172', departement: '044', arrondissement: 1, "
        "nature: '31', return_emails: [actes@saint-herblain.fr], classification_date: '2025-01-15'}\n", 1)
    config.write_text(text, encoding="utf-8")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    outcome = run_bus(config)
    # Then the same document is replayed and delivered, once
    again = outcome["DEL2026_093.json"]["doc"]
    assert again.id == first.id and again.state == "ROUTED"
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_a_bundle_dropped_again_with_its_missing_file_is_a_new_document(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = tmp_path / "drop" / "deliberations"
    drop_deliberation(folder, "DEL2026_094", decision=TODAY, omit=("DEL2026_094.pdf",))
    assert run_bus(config)["DEL2026_094.json"]["doc"].state == "FAILED"
    drop_deliberation(folder, "DEL2026_094", decision=TODAY)  # now with its PDF
    run_bus(config)
    states = sorted(str(d.state) for d in Ledger(load_config(config).bus.ledger).documents())
    assert states == ["FAILED", "ROUTED"]
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_a_route_to_two_endpoints_makes_a_delivery_for_each(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    text = config_path.read_text(encoding="utf-8")
    text = text.replace("  prefecture:\n", f"  archives:\n    type: folder\n    path: {tmp_path / 'archive'}\n"
                        "    create: true\n    trigram: ARC\n    quadrigram: TACT\n  prefecture:\n", 1)
    text = text.replace("  to: prefecture\n", "  to: [prefecture, archives]\n", 1)
    config_path.write_text(text, encoding="utf-8")
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_095", decision=TODAY)
    outcome = run_bus(config_path)["DEL2026_095.json"]
    assert outcome["doc"].state == "ROUTED"
    assert sorted((d.endpoint, str(d.state)) for d in outcome["deliveries"]) == [
        ("archives", "DELIVERED"), ("prefecture", "DELIVERED"),
    ]
    [first] = list((tmp_path / "out").iterdir())
    [second] = list((tmp_path / "archive").iterdir())
    assert first.name.startswith("HNT-TACT--214400152--") and second.name.startswith("ARC-TACT--214400152--")
