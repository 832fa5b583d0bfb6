"""A contract goes both ways: to the préfecture as an act AND, from 40,000 € HT, to the procurement
platform as DECP — one source document, two deliveries, each answered and reported to the source.

Real servers on 127.0.0.1: the legality simulator and the procurement simulator over SOAP, and the
procurement platform's SFTP desk on OpenSSH's sshd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from lxml import etree

from bus.runtime import RetryPolicy
from simulators.backoffice import SIRET, contract_row, drop_contract_row
from simulators.legality import LegalitySimulator
from simulators.procurement import ProcurementSimulator
from simulators.procurement_sftp import ProcurementDesk
from tests.harness import MAPPINGS, run_cli, run_until_idle, write_config
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
SIGNED = date.today() - timedelta(days=3)
CONTRACTS = MAPPINGS / "contrats-decp.yaml"


@pytest.fixture
def legality() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.1) as running:
        yield running


@pytest.fixture
def procurement() -> Iterator[ProcurementSimulator]:
    with ProcurementSimulator(publish_delay=0.1) as running:
        yield running


def both_ways_config(workspace: Path, legality: LegalitySimulator, marches: dict[str, Any]) -> Path:
    """The finance software's exports → the préfecture (act) and the procurement platform (DECP)."""
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["finances"]["pattern"] = "*.json"
    config["connectors"]["prefecture"] = {
        "type": "soap", "endpoint": legality.url, "read_timeout": "2s", "connect_timeout": "1s",
        "trigram": "HNT", "quadrigram": "TACT",
    }
    config["connectors"]["marches"] = marches
    config["routes"] = [
        {"name": "contrats", "from": "finances", "when": {"nature": 4, "matiere": "1"}, "map": str(CONTRACTS),
         "to": "prefecture"},
        {"name": "decp", "from": "finances", "transform": "decp", "when": {"montant_min": 40000},
         "map": str(CONTRACTS), "to": "marches"},
    ]
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def run(config: Path) -> dict[str, Any]:
    return run_until_idle(config, timeout=60, retry=FAST)


def replies(workspace: Path) -> dict[str, bytes]:
    folder = workspace / "drop" / "finances" / "replies"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def test_a_contract_goes_to_the_prefecture_and_to_the_procurement_platform_each_answer_back(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator,
) -> None:
    # Given a contract of 125,000 € HT exported by the finance software
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url,
                                                   "read_timeout": "2s", "connect_timeout": "1s"})
    drop_contract_row(tmp_path / "drop" / "finances", contract_row("2026-0042", signed=SIGNED))
    # When the bus runs until both deliveries are final
    outcome = run(config)["2026-0042.json"]
    # Then one document went two ways, both answered
    assert outcome["doc"].state == "ROUTED", outcome["doc"].reason
    by_endpoint = {d.endpoint: d for d in outcome["deliveries"]}
    assert sorted(by_endpoint) == ["marches", "prefecture"]
    act, decp = by_endpoint["prefecture"], by_endpoint["marches"]
    assert act.state == "ACKNOWLEDGED" and act.id_acte == f"044-214400152-{SIGNED:%Y%m%d}-2026_0042-CC"
    assert decp.state == "ACKNOWLEDGED", decp.reason
    assert decp.client_key == f"decp:{SIRET}:2026-0042:0" and "published as" in (decp.reason or "")
    # and each platform received its part once
    assert list(legality.received()["by_act"].values()) == [1]
    assert procurement.received()["published"] == {f"{SIRET}:2026-0042:0": 1}
    # and the software has both answers: the ARActe and the platform's receipt, each with its summary
    files = replies(tmp_path)
    assert any(n.endswith(".1-2.xml") for n in files) and any(n.endswith(".decp-receipt.xml") for n in files)
    summaries = [json.loads(v) for n, v in files.items() if n.endswith(".json")]
    receipt = next(s for s in summaries if s.get("endpoint") == "marches")
    assert receipt["state"] == "ACKNOWLEDGED" and receipt["message"]["decp_id"] == "2026-0042"
    assert receipt["message"]["publication_id"]


def test_below_the_threshold_only_the_act_goes_and_a_modification_is_published_as_such(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator,
) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url,
                                                   "read_timeout": "2s", "connect_timeout": "1s"})
    folder = tmp_path / "drop" / "finances"
    # A contract of 25,000 € HT goes to the préfecture only
    drop_contract_row(folder, contract_row("2026-0050", signed=SIGNED, montant="25000.00"))
    [only] = run(config)["2026-0050.json"]["deliveries"]
    assert (only.endpoint, only.state) == ("prefecture", "ACKNOWLEDGED")
    # A contract published, then its first modification (avenant) published as such, with its own key
    drop_contract_row(folder, contract_row("2026-0051", signed=SIGNED, montant="90000.00"))
    run(config)
    avenant = {"numero": 1, "date_notification": date.today().isoformat(),
               "date_publication": date.today().isoformat(), "montant_ht": "99000.00"}
    drop_contract_row(folder, contract_row("2026-0051", signed=SIGNED, montant="90000.00", avenants=[avenant],
                                           reference_acte="2026_0051_AV1", fichier_acte="2026-0051_av1.pdf"),
                      name="2026-0051-avenant-1")
    outcome = run(config)
    decps = sorted((d.client_key, d.state) for o in outcome.values() for d in o["deliveries"]
                   if d.endpoint == "marches")
    assert decps == [(f"decp:{SIRET}:2026-0051:0", "ACKNOWLEDGED"), (f"decp:{SIRET}:2026-0051:1", "ACKNOWLEDGED")]
    assert procurement.received()["published"] == {f"{SIRET}:2026-0051:0": 1, f"{SIRET}:2026-0051:1": 1}


def test_a_contract_due_for_publication_with_bad_data_fails_whole_though_its_act_could_go(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator,
) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url})
    drop_contract_row(tmp_path / "drop" / "finances", contract_row("2026-0065", signed=SIGNED, cpv="4542"))
    outcome = run(config)["2026-0065.json"]
    assert outcome["doc"].state == "FAILED" and "[cpv-format]" in (outcome["doc"].reason or "")
    assert outcome["deliveries"] == [] and legality.received()["by_act"] == {}


def test_the_same_publication_dropped_twice_is_refused_not_sent_again(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator,
) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url,
                                                   "read_timeout": "2s", "connect_timeout": "1s"})
    config_doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    config_doc["routes"] = [r for r in config_doc["routes"] if r["name"] == "decp"]  # DECP only
    config.write_text(yaml.safe_dump(config_doc, allow_unicode=True), encoding="utf-8")
    folder = tmp_path / "drop" / "finances"
    drop_contract_row(folder, contract_row("2026-0060", signed=SIGNED))
    run(config)
    drop_contract_row(folder, {**contract_row("2026-0060", signed=SIGNED), "fichier_acte": "again.pdf"},
                      name="2026-0060-again")
    outcome = run(config)
    failed = outcome["2026-0060-again.json"]["doc"]
    assert failed.state == "FAILED" and "[decp-unique]" in (failed.reason or ""), failed.reason
    assert procurement.received()["published"] == {f"{SIRET}:2026-0060:0": 1}


@pytest.mark.parametrize(("column", "value", "field", "rule"), [
    ("siret_acheteur", "2144001520001", "acheteur", "siret-format"),
    ("cpv", "4542110", "codeCPV", "cpv-format"),
    ("montant_ht", "0.50", "montant", "montant-min"),
    ("titulaires", "[]", "titulaires", "titulaire-required"),
    ("date_notification", "02/11/2026", "dateNotification", "date-format"),
    ("objet", "x" * 1001, "objet", "objet-length"),
])
def test_bad_contract_data_fails_the_document_naming_the_field_and_the_rule(
    tmp_path: Path, legality: LegalitySimulator, procurement: ProcurementSimulator,
    column: str, value: str, field: str, rule: str,
) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url})
    config_doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    config_doc["routes"] = [{**r, "when": {}} for r in config_doc["routes"] if r["name"] == "decp"]  # any amount
    config.write_text(yaml.safe_dump(config_doc, allow_unicode=True), encoding="utf-8")
    drop_contract_row(tmp_path / "drop" / "finances", contract_row("2026-0070", signed=SIGNED, **{column: value}))
    outcome = run(config)["2026-0070.json"]
    reason = outcome["doc"].reason or ""
    assert outcome["doc"].state == "FAILED" and field in reason and f"[{rule}]" in reason, reason
    assert outcome["deliveries"] == [] and procurement.received()["published"] == {}
    [summary] = [json.loads(v) for n, v in replies(tmp_path).items() if n.endswith(".json")]
    assert summary["state"] == "FAILED" and rule in summary["reason"]


def test_over_sftp_the_decp_lands_in_the_platforms_inbox_and_its_receipt_comes_back(
    sshd: SshServer, tmp_path: Path, legality: LegalitySimulator, reference_dir: Path,
) -> None:
    base = sshd.root / tmp_path.name
    for folder in ("inbox", "outbox"):
        (base / folder).mkdir(parents=True)
    quick = {"min_age": "0s", "stable": False}
    marches = {"type": "sftp", "host": sshd.host, "port": sshd.port, "username": sshd.user,
               "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts), "path": str(base / "inbox"),
               "timeout": "5s", "answers": {"path": str(base / "outbox"), "pattern": "*.xml", "ready": quick}}
    config = both_ways_config(tmp_path, legality, marches)
    folder = tmp_path / "drop" / "finances"
    drop_contract_row(folder, contract_row("2026-0080", signed=SIGNED))
    with ProcurementDesk(base, interval=0.1) as desk:
        outcome = run(config)
        assert desk.received()["published"] == {f"{SIRET}:2026-0080:0": 1}
    by_endpoint = {d.endpoint: d for d in outcome["2026-0080.json"]["deliveries"]}
    assert by_endpoint["marches"].state == "ACKNOWLEDGED", by_endpoint["marches"].reason
    assert by_endpoint["prefecture"].state == "ACKNOWLEDGED"
    assert any(n.endswith(".decp-receipt.xml") for n in replies(tmp_path))
    # every DECP the platform received is valid against the official XSD of ../shared/reference (conformance)
    official = etree.XMLSchema(etree.parse(str(reference_dir / "decp" / "v2.0.2" / "schema_decp_v2.0.2.xsd")))
    received = [p for p in (base / "inbox" / "processed").iterdir() if p.is_file()]
    assert len(received) == 1
    for path in received:
        assert official.validate(etree.parse(str(path))), (path.name, official.error_log)


def test_check_accepts_the_both_ways_configuration(tmp_path: Path, legality: LegalitySimulator,
                                                   procurement: ProcurementSimulator) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "procurement", "url": procurement.url})
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_decp_as_json_goes_to_an_endpoint_that_takes_files_and_follows_the_official_json_schema(
    tmp_path: Path, legality: LegalitySimulator, reference_dir: Path,
) -> None:
    config = both_ways_config(tmp_path, legality, {"type": "folder", "path": str(tmp_path / "opendata"),
                                                   "create": True})
    config_doc = yaml.safe_load(config.read_text(encoding="utf-8"))
    config_doc["routes"] = [{**r, "decp_format": "json"} for r in config_doc["routes"] if r["name"] == "decp"]
    config.write_text(yaml.safe_dump(config_doc, allow_unicode=True), encoding="utf-8")
    drop_contract_row(tmp_path / "drop" / "finances", contract_row("2026-0090", signed=SIGNED))
    [delivery] = run(config)["2026-0090.json"]["deliveries"]
    assert (delivery.state, delivery.artifact_kind) == ("DELIVERED", "decp-json")
    [published] = list((tmp_path / "opendata").glob("*.json"))
    schema = json.loads((reference_dir / "decp" / "v2.0.2" / "schema_decp_v2.0.3.json").read_text(encoding="utf-8"))
    document = json.loads(published.read_bytes())
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(document))
    assert errors == [], [e.message for e in errors]
    assert "2026-0090" in published.read_text(encoding="utf-8")
