"""The SOAP endpoint against the legality simulator over real TLS on 127.0.0.1.

A CA, a server certificate for 127.0.0.1 and a client certificate are made at test time with
the ``openssl`` command; the simulator serves HTTPS with them (and, for mutual TLS, requires a
client certificate from the same CA).  The endpoint must verify the server by default, accept
the configured ``ca_file``, present ``client_cert``/``client_key``, and only skip the check
(with a warning in the log) when ``verify_tls: false``.

requests lets the ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` environment variables override
a session's ``verify``: the main cases run without them, so that they show what the connector
itself does; the last ones set them, as many hosts do.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import InsecureRequestWarning

from bus.connector import Artifact
from bus.errors import TransientError
from connectors._soap_common import TransientAlert
from connectors.soap_outbound import SoapOutbound, SoapOutboundConfig
from simulators.legality import LegalitySimulator, server_context
from simulators.pdf import make_pdf
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import build_archive

OPENSSL = shutil.which("openssl")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(OPENSSL is None, reason="the openssl command is needed to make the test certificates"),
]

SIREN = "214400152"
#: environment variables that make requests replace a session's verify (and proxies, not wanted on loopback)
REQUESTS_ENVIRONMENT = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                        "all_proxy")


# -------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def openssl(*args: str | Path, cwd: Path) -> None:
    assert OPENSSL is not None
    done = subprocess.run([OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, f"openssl {' '.join(map(str, args))} failed: {done.stderr}"


def issue(folder: Path, name: str, subject: str, extensions: str, serial: int) -> tuple[Path, Path]:
    """A P-256 key and a certificate for it signed by the CA in ``folder``: (cert, key)."""
    key, csr, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(extensions, encoding="ascii")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", key, "-out", csr, "-subj", subject, cwd=folder)
    openssl("x509", "-req", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(serial),
            "-days", "2", "-sha256", "-extfile", ext, "-out", cert, cwd=folder)
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-sha256", "-subj", "/CN=Hent test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder)
    leaf = ("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    server_cert, server_key = issue(folder, "server", "/CN=127.0.0.1",
                                    leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n", 2)
    client_cert, client_key = issue(folder, "client", "/CN=hent-bus", leaf + "extendedKeyUsage=clientAuth\n", 3)
    return Pki(folder / "ca.pem", server_cert, server_key, client_cert, client_key)


# -------------------------------------------------------------------- servers, endpoint, archive


@pytest.fixture(autouse=True)
def plain_requests_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REQUESTS_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def https(pki: Pki) -> Iterator[LegalitySimulator]:
    """Server authentication only."""
    with LegalitySimulator(tls=server_context(pki.server_cert, pki.server_key)) as running:
        yield running


@pytest.fixture
def mutual(pki: Pki) -> Iterator[LegalitySimulator]:
    """A client certificate from the CA required."""
    context = server_context(pki.server_cert, pki.server_key, client_ca=pki.ca)
    assert context.verify_mode == ssl.CERT_REQUIRED
    with LegalitySimulator(tls=context) as running:
        yield running


def send(simulator: LegalitySimulator, artifact: Artifact, **options: Any) -> str:
    """Submit with a fresh endpoint (closed after): the SendResult state."""
    config = {"endpoint": simulator.url, "connect_timeout": "2s", "read_timeout": "2s", **options}
    connector = SoapOutbound("prefecture", SoapOutboundConfig.model_validate(config))
    try:
        connector.connect()
        return connector.send(artifact).state
    finally:
        connector.close()


def recorded(simulator: LegalitySimulator) -> int:
    return sum(int(n) for n in simulator.received()["recorded"].values())


@pytest.fixture
def artifact(tmp_path: Path) -> Artifact:
    """A valid act's archive in a spool-like file, built like test_soap_outbound does."""
    pdf = tmp_path / "acte.pdf"
    pdf.write_bytes(make_pdf(["Délibération du conseil municipal"]))
    act = CanonicalAct(
        siren=SIREN, departement="044", arrondissement=1, collectivite_nature="31",
        decision_date=date(2025, 3, 12), numero_interne="DEL2025_TLS", nature=1, matieres=(3, 2),
        objet="Cession d'une parcelle communale", classification_date=date(2025, 1, 15),
        main_document=ActFile("acte.pdf", pdf), return_emails=("actes@mairie-nantes.fr",),
    )
    out = io.BytesIO()
    built = build_archive(act, out, quadrigram="EACT", trigram="HNT", serial=1,
                          generation_date=date(2025, 3, 13), today=date(2025, 3, 13))
    data = out.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    path = tmp_path / sha256
    path.write_bytes(data)
    return Artifact(name=built.archive_name, path=path, sha256=sha256, kind="actes-archive",
                    client_key=built.envelope_name,
                    meta={"id_acte": built.id_acte, "envelope_name": built.envelope_name})


# -------------------------------------------------------------------- server authentication


def test_the_simulator_serves_https_when_given_a_context(https: LegalitySimulator) -> None:
    assert https.url.startswith("https://127.0.0.1:") and https.url.endswith("/soap")
    assert LegalitySimulator().url.startswith("http://")  # the default is unchanged


def test_a_server_certificate_from_the_configured_ca_is_accepted(
    https: LegalitySimulator, artifact: Artifact, pki: Pki
) -> None:
    assert send(https, artifact, ca_file=str(pki.ca)) == "SENT"
    assert recorded(https) == 1


def test_the_server_is_verified_by_default_against_the_system_cas(
    https: LegalitySimulator, artifact: Artifact
) -> None:
    with pytest.raises(TransientError) as caught:
        send(https, artifact)
    assert isinstance(caught.value, TransientAlert) and getattr(caught.value, "alert", False)
    assert caught.value.rule == "soap-tls"
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert https.received()["calls"] == {}  # nothing reached the platform, nothing was looked up


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_tls_false_skips_the_check_and_says_so(
    https: LegalitySimulator, artifact: Artifact, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="connectors._soap_common"):
        assert send(https, artifact, verify_tls=False) == "SENT"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "connectors._soap_common"]
    assert "TLS verification is off" in warning.getMessage() and https.url in warning.getMessage()
    assert recorded(https) == 1


# -------------------------------------------------------------------- mutual TLS


def test_mutual_tls_with_the_client_certificate(mutual: LegalitySimulator, artifact: Artifact, pki: Pki) -> None:
    state = send(mutual, artifact, ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                 client_key=str(pki.client_key))
    assert state == "SENT"
    assert recorded(mutual) == 1


def test_mutual_tls_without_a_client_certificate_is_refused(
    mutual: LegalitySimulator, artifact: Artifact, pki: Pki
) -> None:
    with pytest.raises(TransientError) as caught:
        send(mutual, artifact, ca_file=str(pki.ca))
    # usually a TransientAlert (soap-tls: "tlsv13 alert certificate required"); under TLS 1.3 the client
    # may see the refusal only once its request is written, as a reset, hence no stricter assertion
    assert caught.value.connector == "prefecture"
    assert mutual.received()["calls"] == {}  # refused in the handshake: no request reached the platform
    assert recorded(mutual) == 0


# -------------------------------------------------------------------- with a CA bundle in the environment


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_file_is_used_even_when_the_environment_names_a_ca_bundle(
    https: LegalitySimulator, artifact: Artifact, pki: Pki, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, str(pki.client_cert))  # any other bundle: one that does not hold the CA
    assert send(https, artifact, ca_file=str(pki.ca)) == "SENT"


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verify_tls_false_holds_even_when_the_environment_names_a_ca_bundle(
    https: LegalitySimulator, artifact: Artifact, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.client_cert))
    assert send(https, artifact, verify_tls=False) == "SENT"


def test_the_insecure_request_warning_is_urllib3s(https: LegalitySimulator, artifact: Artifact) -> None:
    """verify_tls: false also makes urllib3 warn on each request (a Python warning, not Hent's log)."""
    with pytest.warns(InsecureRequestWarning):
        assert send(https, artifact, verify_tls=False) == "SENT"


# -------------------------------------------------------------------- one endpoint, many collectivités


def test_two_collectivites_on_one_endpoint_each_send_with_their_own_certificate(
    pki: Pki, mutual: LegalitySimulator, tmp_path: Path
) -> None:
    import yaml

    from bus import metrics
    from bus.certs import certificate_expiry
    from simulators.backoffice import drop_deliberation
    from tests.harness import run_cli, run_until_idle, write_config

    # Given one SOAP endpoint over mutual TLS: Saint-Herblain has a certificate of its own, the
    # other collectivité uses the endpoint's default one
    own_cert, own_key = issue(pki.ca.parent, "saint-herblain", "/CN=saint-herblain",
                              "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                              "extendedKeyUsage=clientAuth\n", 40)
    other = "200012345"
    path = write_config(tmp_path, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["collectivites"].append({**config["collectivites"][0], "siren": other})
    config["connectors"]["prefecture"] = {
        "type": "soap", "endpoint": mutual.url, "ca_file": str(pki.ca), "connect_timeout": "2s",
        "read_timeout": "2s", "trigram": "HNT", "quadrigram": "TACT",
        "client_cert": str(pki.client_cert), "client_key": str(pki.client_key),
        "credentials": [{"sirens": [SIREN], "client_cert": str(own_cert), "client_key": str(own_key)}],
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    decision = date.today()
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_501", decision=decision)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_502", decision=decision, siren=other)
    # When the bus runs
    outcome = run_until_idle(path)
    # Then each act was acknowledged, and each was sent with its collectivité's certificate
    assert [d.state for o in outcome.values() for d in o["deliveries"]] == ["ACKNOWLEDGED", "ACKNOWLEDGED"]
    clients = mutual.received()["clients"]
    assert clients == {f"{SIREN}:DEL2026_501:{decision}": ["CN=saint-herblain"],
                       f"{other}:DEL2026_502:{decision}": ["CN=hent-bus"]}
    # and each certificate's expiry is exported and shown by check
    expiry = certificate_expiry(own_cert)
    assert expiry is not None
    gauge = metrics.CERTIFICATE_EXPIRY.labels(connector="prefecture", sirens=SIREN)._value.get()
    assert gauge == expiry.timestamp()
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert f"certificate of prefecture ({SIREN}): CN=saint-herblain, expires " in result.stdout
    assert "certificate of prefecture (default): CN=hent-bus, expires " in result.stdout
