"""Each scenario example of config/examples/ checks clean and runs end to end against the simulators.

- drop-folder-to-legality-soap.yaml: the séance (JSON), HR (CSV) and finance (XML) software's
  drop folders → the legality platform's simulator over Hent's SOAP contract, on 127.0.0.1.
- sftp-outbox-to-legality-sftp.yaml: the séance software's SFTP outbox at its vendor → the
  platform's SFTP desk (simulators.legality_sftp), both served by OpenSSH's sshd.

Each example is loaded as written, with the environment variables it reads pointing at the
simulators.  The one thing the tests change is the clock (:func:`at_test_speed`): sources are
polled and answers looked for every 0.2 s, and bundles are taken as soon as they are seen,
instead of the minutes a commune's servers wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from bus.config import Config, load_config
from bus.runtime import RetryPolicy, Runtime
from connectors._pickup_options import PickupOptions, ReadyConfig
from connectors.sftp_outbound import SftpOutboundConfig
from routes.pipeline import Pipeline
from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision
from simulators.legality import LegalitySimulator
from simulators.legality_sftp import LegalityDesk
from tests.harness import ROOT, ledger_outcome, run_cli
from tests.sshd import SshServer, sshd_server  # noqa: F401 - the sshd fixture

pytestmark = pytest.mark.integration

SOAP_EXAMPLE = "config/examples/drop-folder-to-legality-soap.yaml"
SFTP_EXAMPLE = "config/examples/sftp-outbox-to-legality-sftp.yaml"
SIREN = "214400152"
TODAY = date.today()
SOAP_USER = "mairie-saint-herblain"  # the example's WS-Security user name
SOAP_PASSWORD = "example-legality-password"
FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)


def at_test_speed(config: Config) -> Config:
    """The example's connectors, routes and endpoints untouched; only its waits shortened."""
    config.bus.answers = 0.2
    now = ReadyConfig(min_age=0.0, stable=False)
    for route in config.routes:
        for name in route.from_:
            source = config.connector_config(name, "inbound")
            assert isinstance(source, PickupOptions)
            source.poll = 0.2
            if source.ready.done_file is None:  # a done-file says "complete" at once already
                source.ready = now
        for name in route.to:
            endpoint = config.connector_config(name, "outbound")
            if isinstance(endpoint, SftpOutboundConfig) and endpoint.answers is not None:
                endpoint.answers.ready = now
    return config


def run_example(example: str, timeout: float = 60) -> None:
    """Load ``example`` with the environment as set, run it until every delivery is final."""
    config = at_test_speed(load_config(ROOT / example))
    runtime = Runtime(config, Pipeline.for_runtime, retry=FAST, serve_http=False)
    assert runtime.run_until_idle(timeout=timeout), "the bus did not finish"


def assert_acknowledged_with_aracte(example: str, replies: dict[str, Path], expected: dict[str, str]) -> None:
    """Every bundle of ``expected`` (bundle → IDActe) ROUTED, its one delivery ACKNOWLEDGED, and its
    ARActe verbatim in its source's reply folder (``replies``: bundle → that folder)."""
    outcome = ledger_outcome(ROOT / example)
    assert set(outcome) == set(expected)
    for bundle, id_acte in expected.items():
        document, deliveries = outcome[bundle]["doc"], outcome[bundle]["deliveries"]
        assert document.state == "ROUTED", document.reason
        [delivery] = deliveries
        assert (delivery.endpoint, delivery.state, delivery.id_acte) == ("prefecture", "ACKNOWLEDGED", id_acte), \
            delivery.reason
        stem = bundle.rsplit(".", 1)[0]
        [aracte] = sorted(replies[bundle].glob(f"{stem}.*.1-2.xml"))
        message = aracte.read_bytes()
        assert b"ARActe" in message and id_acte.encode() in message


# -- drop folders → SOAP --------------------------------------------------------------------


def test_the_soap_example_checks_clean(tmp_path: Path) -> None:
    # Given the password the example reads from the environment
    env = {"HENT_HOME": str(tmp_path / "var"), "HENT_EXPORTS": str(tmp_path / "exports"),
           "LEGALITY_SOAP_PASSWORD": SOAP_PASSWORD}
    result = run_cli("check", "-c", SOAP_EXAMPLE, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{SOAP_EXAMPLE}: OK")


def test_the_soap_example_refuses_to_start_without_its_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEGALITY_SOAP_PASSWORD", raising=False)
    result = run_cli("check", "-c", SOAP_EXAMPLE, env={"HENT_HOME": str(tmp_path)})
    assert result.returncode == 2
    [line] = [line for line in result.stderr.splitlines() if "prefecture.password" in line]
    assert line.endswith(": connectors.prefecture.password: environment variable 'LEGALITY_SOAP_PASSWORD' "
                         "is not set [secret-unresolved]")


@pytest.fixture
def soap_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The legality platform's SOAP simulator on 127.0.0.1, expecting the example's user and
    password, and the environment the example reads; yields the exports' folder."""
    with LegalitySimulator(username=SOAP_USER, password=SOAP_PASSWORD) as platform:
        monkeypatch.setenv("HENT_HOME", str(tmp_path / "var"))
        monkeypatch.setenv("HENT_EXPORTS", str(tmp_path / "exports"))
        monkeypatch.setenv("LEGALITY_SOAP_URL", platform.url)
        monkeypatch.setenv("LEGALITY_SOAP_PASSWORD", SOAP_PASSWORD)
        yield tmp_path / "exports"
        # the platform received each act once
        assert sorted(platform.received()["by_act"].values()) == [1, 1, 1]


def test_the_soap_example_has_each_act_of_the_three_programs_acknowledged(soap_platform: Path) -> None:
    exports = soap_platform
    decided = TODAY - timedelta(days=2)
    # Given one bundle from each program, the HR one with the done-file its software writes last
    drop_deliberation(exports / "seances", "DEL2026_301", decision=decided, annexes=1)
    drop_hr_decision(exports / "rh", "AR2026_0301", decision=decided)
    (exports / "rh" / "AR2026_0301.csv.done").touch()
    drop_contract(exports / "finances", "MAR2026_0301", signed=decided)
    # When the example runs until every delivery is final
    run_example(SOAP_EXAMPLE)
    # Then each act is acknowledged by the ministry and its program has the ARActe in retours/
    acts = {"DEL2026_301.json": ("seances", "DE"), "AR2026_0301.csv": ("rh", "AI"),
            "MAR2026_0301.xml": ("finances", "CC")}
    assert_acknowledged_with_aracte(
        SOAP_EXAMPLE,
        {bundle: exports / folder / "retours" for bundle, (folder, _) in acts.items()},
        {bundle: f"044-{SIREN}-{decided:%Y%m%d}-{bundle.split('.')[0]}-{code}" for bundle, (_, code) in acts.items()},
    )


# -- SFTP outbox → SFTP desk ----------------------------------------------------------------


def test_the_sftp_example_checks_clean(tmp_path: Path) -> None:
    from simulators.demo import new_client_key

    # Given the bus's key and a known_hosts file pinning the servers' host key
    key = new_client_key(tmp_path / "ssh")
    known_hosts = tmp_path / "ssh" / "known_hosts"
    known_hosts.write_text(f"sftp.editeur.example.org {key.get_name()} {key.get_base64()}\n"
                           f"sftp.tdt.example.org {key.get_name()} {key.get_base64()}\n")
    env = {"HENT_HOME": str(tmp_path / "var"), "HENT_SSH_KEY": str(tmp_path / "ssh" / "id_ed25519"),
           "HENT_KNOWN_HOSTS": str(known_hosts)}
    result = run_cli("check", "-c", SFTP_EXAMPLE, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{SFTP_EXAMPLE}: OK")


@pytest.fixture
def sftp_servers(sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The vendor's outbox and the platform's desk on one sshd (as test_sftp_legality_loop lays
    them out), and the environment the example reads; yields the vendor's outbox."""
    base = sshd.root / tmp_path.name
    vendor, desk_root = base / "vendor", base / "platform"
    vendor.mkdir(parents=True)
    env = {"HENT_HOME": str(tmp_path / "var"), "HENT_SSH_KEY": str(sshd.key_file),
           "HENT_KNOWN_HOSTS": str(sshd.known_hosts)}
    for server in ("VENDOR", "LEGALITY"):
        env |= {f"{server}_SFTP_HOST": sshd.host, f"{server}_SFTP_PORT": str(sshd.port),
                f"{server}_SFTP_USER": sshd.user}
    env |= {"VENDOR_SFTP_PATH": str(vendor), "LEGALITY_SFTP_INBOX": str(desk_root / "inbox"),
            "LEGALITY_SFTP_OUTBOX": str(desk_root / "outbox")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with LegalityDesk.for_root(desk_root, interval=0.1) as desk:
        yield vendor
        # the desk received the act once, and every answer it wrote was read and moved to done/
        assert list(desk.received()["by_act"].values()) == [1]
        assert [p for p in desk.outbox_dir.iterdir() if p.is_file()] == []
        assert list((desk.outbox_dir / "error").iterdir()) == []


def test_the_sftp_example_has_the_vendors_act_acknowledged_over_sftp(sftp_servers: Path) -> None:
    vendor = sftp_servers
    decided = TODAY - timedelta(days=2)
    # Given a deliberation in the séance software's SFTP outbox
    drop_deliberation(vendor, "DEL2026_302", decision=decided, annexes=1)
    # When the example runs until every delivery is final
    run_example(SFTP_EXAMPLE)
    # Then the ministry acknowledged it and the vendor has the ARActe in its retours/ folder
    assert_acknowledged_with_aracte(
        SFTP_EXAMPLE, {"DEL2026_302.json": vendor / "retours"},
        {"DEL2026_302.json": f"044-{SIREN}-{decided:%Y%m%d}-DEL2026_302-DE"},
    )
    assert "DEL2026_302.json" in {p.name for p in (vendor / "done").iterdir()}
