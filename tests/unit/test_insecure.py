"""bus/insecure.py: secret and key files others can read, trust files others can write, TLS not verified."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bus.config import load_config
from bus.errors import Problem
from bus.insecure import configuration_warnings, file_mode_warnings, unverified_tls_warnings
from tests.harness import MAPPINGS

PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(path: Path, text: str, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def configuration(
    tmp: Path, endpoint: str, *, secret_mode: int = 0o600, key_mode: int = 0o600, ca_mode: int = 0o644
) -> Path:
    """A folder source and the endpoint ``endpoint`` (YAML lines), its files written with those modes."""
    write(tmp / "secrets" / "tdt-password", "s3cr3t-from-a-file\n", secret_mode)
    write(tmp / "tls" / "client.key", PEM_KEY, key_mode)
    write(tmp / "tls" / "client.pem", PEM_CERT, 0o644)
    write(tmp / "tls" / "ca.pem", PEM_CERT, ca_mode)
    (tmp / "drop").mkdir(exist_ok=True)
    path = tmp / "hent.yaml"
    path.write_text(f"""\
bus: {{state_dir: var}}
collectivites:
  - {{siren: "214400152", departement: "044", arrondissement: 1, nature: "31"}}
connectors:
  deliberations: {{type: folder, path: drop}}
  tdt:
{endpoint}
routes:
  - {{name: deliberations, from: deliberations, map: {MAPPINGS / "deliberations-json.yaml"}, to: tdt}}
""")
    return path


SOAP = """\
    type: soap
    endpoint: http://127.0.0.1:9/soap
    client_cert: tls/client.pem
    client_key: tls/client.key
    ca_file: tls/ca.pem
    username: hent
    password: ${file:secrets/tdt-password}
"""


def rules(problems: list[Problem]) -> list[tuple[str | None, str | None]]:
    return [(p.field, p.rule) for p in problems]


def test_a_key_file_and_a_secret_file_others_can_read_are_each_named_with_the_fix(tmp_path: Path) -> None:
    # Given a SOAP endpoint whose password file and client key are 0644
    config = load_config(configuration(tmp_path, SOAP, secret_mode=0o644, key_mode=0o644))

    # When its files' modes are looked at
    found = file_mode_warnings(config)

    # Then each file is named, with the field, the line, the rule and chmod 600
    secret, key = tmp_path / "secrets" / "tdt-password", tmp_path / "tls" / "client.key"
    assert [str(p) for p in found] == [
        f"{tmp_path}/hent.yaml:13: connectors.tdt.password: secret file {secret} (${{file:...}}) is readable by "
        f"every user (mode 0644): chmod 600 {secret} [secret-file-mode]",
        f"{tmp_path}/hent.yaml:10: connectors.tdt.client_key: private key {key} is readable by every user "
        f"(mode 0644): chmod 600 {key} [secret-file-mode]",
    ]


def test_files_only_their_owner_can_read_give_no_warning(tmp_path: Path) -> None:
    # Given the same endpoint with its password file and key at 0600 (and its public CA at 0644)
    config = load_config(configuration(tmp_path, SOAP))

    # Then nothing is said
    assert file_mode_warnings(config) == []


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        (0o640, None),  # readable by a group (root:hent): the usual way, not a warning
        (0o604, "readable by every user"),
        (0o660, "writable by its group"),
        (0o606, "readable by every user and writable by every user"),
        (0o666, "readable by every user and writable by its group and writable by every user"),
    ],
)
def test_a_key_file_is_warned_about_when_others_may_read_it_or_others_may_write_it(
    tmp_path: Path, mode: int, said: str | None
) -> None:
    config = load_config(configuration(tmp_path, SOAP, key_mode=mode))
    found = [p for p in file_mode_warnings(config) if p.field == "connectors.tdt.client_key"]
    assert [p.message.split(" is ", 1)[1].split(" (mode")[0] for p in found] == ([said] if said else [])


def test_a_trust_file_others_can_write_is_warned_about_but_not_one_they_can_read(tmp_path: Path) -> None:
    config = load_config(configuration(tmp_path, SOAP, ca_mode=0o666))
    ca = tmp_path / "tls" / "ca.pem"
    assert [str(p) for p in file_mode_warnings(config)] == [
        f"{tmp_path}/hent.yaml:11: connectors.tdt.ca_file: ca_file {ca} is writable by its group and writable by "
        f"every user (mode 0666): whoever may write it chooses which server is trusted; chmod go-w {ca} "
        "[trust-file-mode]",
    ]


def test_a_client_certificate_that_holds_its_private_key_is_a_key_file(tmp_path: Path) -> None:
    path = configuration(tmp_path, SOAP.replace("    client_key: tls/client.key\n", ""))
    write(tmp_path / "tls" / "client.pem", PEM_CERT + PEM_KEY, 0o644)
    [found] = file_mode_warnings(load_config(path))
    assert (found.field, found.rule) == ("connectors.tdt.client_cert", "secret-file-mode")
    assert "which holds its private key" in found.message


def test_the_key_files_of_credentials_per_collectivite_are_looked_at_too(tmp_path: Path) -> None:
    write(tmp_path / "tls" / "other.key", PEM_KEY, 0o644)
    endpoint = SOAP + (
        '    credentials:\n      - {sirens: ["214400152"], client_cert: tls/client.pem, client_key: tls/other.key}\n'
    )
    found = file_mode_warnings(load_config(configuration(tmp_path, endpoint)))
    assert rules(found) == [("connectors.tdt.credentials[0].client_key", "secret-file-mode")]


def test_a_literal_reference_and_a_missing_file_give_no_warning(tmp_path: Path) -> None:
    # $${file:...} is a literal, not a reference; a file that is gone is check's error, not this warning
    endpoint = SOAP.replace("    username: hent\n", "    description: see $${file:/etc/passwd}\n    username: hent\n")
    path = configuration(tmp_path, endpoint)
    config = load_config(path)
    (tmp_path / "tls" / "client.key").unlink()
    assert file_mode_warnings(config) == []


def test_each_endpoint_that_does_not_verify_tls_is_listed(tmp_path: Path) -> None:
    config = load_config(configuration(tmp_path, SOAP + "    verify_tls: false\n"))
    [found] = unverified_tls_warnings(config)
    assert str(found) == (
        f"{tmp_path}/hent.yaml:14: connectors.tdt.verify_tls: connector 'tdt': verify_tls is false: the server's "
        "certificate is NOT verified; anyone on the network path can pose as the server and intercept the "
        "credentials and what is sent; set verify_tls: true (with ca_file for a private CA) [tls-unverified]"
    )
    assert rules(configuration_warnings(config)) == [("connectors.tdt.verify_tls", "tls-unverified")]


ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "soap": ("connectors.soap_outbound", {"type": "soap", "endpoint": "http://127.0.0.1:9/soap"}),
    "procurement": ("connectors.procurement_outbound", {"type": "procurement", "url": "http://127.0.0.1:9/soap"}),
    "s2low": ("connectors.s2low_outbound", {"type": "s2low", "url": "http://127.0.0.1:9"}),
    "pastell": (
        "connectors.pastell_outbound",
        {"type": "pastell", "url": "http://127.0.0.1:9", "entity": "1", "token": "a-token-value"},
    ),
}


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_building_an_endpoint_that_does_not_verify_tls_logs_a_warning_whatever_its_address(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    import importlib

    module, settings = ENDPOINTS[kind]
    cls = importlib.import_module(module).Connector
    # Given an endpoint on plain http (its certificate would never be asked for) with verify_tls: false
    config = cls.Config.model_validate({**settings, "verify_tls": False})

    # When it is built, as at each start of the bus
    with caplog.at_level(logging.WARNING):
        cls("tdt", config)

    # Then a WARNING names it and says what is at stake
    [record] = [r for r in caplog.records if r.name == "bus.insecure"]
    assert record.levelno == logging.WARNING and record.connector == "tdt"  # type: ignore[attr-defined]
    assert record.getMessage().startswith(
        "connector 'tdt': verify_tls is false: the server's certificate is NOT verified"
    )
    assert "intercept the credentials" in record.getMessage()

    # And an endpoint that verifies says nothing
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        cls("tdt", cls.Config.model_validate(settings))
    assert [r for r in caplog.records if r.name == "bus.insecure"] == []
