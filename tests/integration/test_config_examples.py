"""Each configuration of config/ checks clean, and each route of the demo produces, from a
vendor's fixture, exactly the ACTES message kept in tests/fixtures/expected/."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
from lxml import etree

from bus.config import load_config
from bus.ledger import Ledger
from bus.runtime import Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision
from simulators.legality import LegalitySimulator
from tests.harness import ROOT, archive_members, run_cli

EXPECTED = ROOT / "tests" / "fixtures" / "expected"


@pytest.mark.parametrize("config", ["config/demo.yaml", "config/examples/hent.yaml"])
def test_every_example_configuration_checks_clean(config: str, tmp_path: Path) -> None:
    result = run_cli("check", "-c", config, env={"HENT_DEMO_WORKSPACE": str(tmp_path), "HENT_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{config}: OK")


def test_the_sftp_demo_configuration_checks_clean(tmp_path: Path) -> None:
    from simulators.demo import new_client_key

    key = new_client_key(tmp_path / "keys")
    known_hosts = tmp_path / "keys" / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:2222 {key.get_name()} {key.get_base64()}\n")
    env = {"HENT_DEMO_WORKSPACE": str(tmp_path), "HENT_DEMO_SFTP_PORT": "2222",
           "HENT_DEMO_SFTP_KEY": str(tmp_path / "keys" / "id_ed25519"), "HENT_DEMO_SFTP_KNOWN_HOSTS": str(known_hosts)}
    result = run_cli("check", "-c", "config/demo-sftp.yaml", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config/demo-sftp.yaml: OK")


def test_the_s2low_example_configuration_checks_clean(tmp_path: Path) -> None:
    from tests.integration.test_s2low import make_pki

    # Given the certificate files and the password the example names through the environment
    pki = make_pki(tmp_path / "s2low")
    env = {"HENT_HOME": str(tmp_path), "S2LOW_PASSWORD": "example-s2low-password",
           "S2LOW_CLIENT_CERT": str(pki.client_cert), "S2LOW_CLIENT_KEY": str(pki.client_key),
           "S2LOW_CA_FILE": str(pki.ca)}
    result = run_cli("check", "-c", "config/examples/drop-folder-to-s2low.yaml", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config/examples/drop-folder-to-s2low.yaml: OK")


def test_the_pastell_example_configuration_checks_clean(tmp_path: Path) -> None:
    example = "config/examples/drop-folder-to-pastell.yaml"
    result = run_cli("check", "-c", example, env={"HENT_HOME": str(tmp_path), "PASTELL_TOKEN": "example-token-1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{example}: OK")


def _canonical(data: bytes) -> bytes:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)
    return etree.tostring(etree.fromstring(data, parser), method="c14n")


@pytest.fixture(scope="module")
def demo_messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Given the demo's configuration and one fixed export from each of its three vendors."""
    workspace = tmp_path_factory.mktemp("examples")
    platform = LegalitySimulator().start()
    os.environ["HENT_DEMO_WORKSPACE"] = str(workspace)
    os.environ["HENT_DEMO_LEGALITY_URL"] = platform.url
    try:
        config = load_config(ROOT / "config" / "demo.yaml")
    finally:
        del os.environ["HENT_DEMO_WORKSPACE"], os.environ["HENT_DEMO_LEGALITY_URL"]
    drop = workspace / "drop"
    drop_deliberation(drop / "deliberations", "DEL2026_042", decision=date(2026, 11, 20), annexes=2,
                      objet="Cession de la parcelle BK 112 — rue de la Solidarité, à l’euro symbolique")
    drop_hr_decision(drop / "rh", "AR2026_0187", decision=date(2026, 11, 3))
    drop_contract(drop / "finances", "MAR2026_0031", signed=date(2026, 10, 5))
    runtime = Runtime(config, Pipeline.for_runtime, serve_http=False)
    try:
        assert runtime.run_until_idle(timeout=60)
    finally:
        platform.stop()
    ledger = Ledger(config.bus.ledger)
    messages = {}
    try:
        for document in ledger.documents():
            assert document.state == "ROUTED", document.reason
            copy, sent = sorted(ledger.deliveries_of(document.id), key=lambda d: d.endpoint)
            assert (copy.endpoint, copy.state, sent.state) == ("archives", "DELIVERED", "ACKNOWLEDGED")
            members = archive_members(workspace / "out" / "archives" / copy.artifact_name)
            [(name, data)] = [(n, d) for n, d in members.items() if n.endswith("-1-1_0.xml")]
            messages[document.route] = data
            for name, data in members.items():
                if name.endswith(".xml"):
                    messages[f"{document.route}/{name}"] = data
    finally:
        ledger.close()
    return messages


@pytest.mark.parametrize("route", ["deliberations", "arretes-rh", "contrats"])
def test_each_demo_route_produces_the_expected_acte_message(demo_messages: dict[str, bytes], route: str) -> None:
    expected = (EXPECTED / f"{route}.xml").read_bytes()
    assert demo_messages[route].startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>')
    assert _canonical(demo_messages[route]) == _canonical(expected)


def test_every_xml_file_of_the_demo_archives_is_valid_against_the_official_schema(
    demo_messages: dict[str, bytes], reference_dir: Path
) -> None:
    official = etree.XMLSchema(etree.parse(str(reference_dir / "actes" / "xsd" / "actesv1_1.xsd")))
    members = {name: data for name, data in demo_messages.items() if "/" in name}
    assert len(members) == 6  # an envelope and a message in each of the three archives
    for name, data in members.items():
        document = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
        assert official.validate(document), (name, official.error_log)
