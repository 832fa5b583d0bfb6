"""The whole loop through S2LOW, on 127.0.0.1: a dropped act reaches the S2LOW simulator over real
HTTP (its multipart form, its plain-text answers), S2LOW builds the archive, the ministry
answers, and the answer comes back to the software; faults, logins and TLS on the way."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bus import metrics
from bus.circuit import CLOSED, OPEN, Circuit
from bus.config import load_config
from bus.connector import CANONICAL, Artifact
from bus.errors import TransientError
from bus.ledger import Ledger
from bus.runtime import RetryPolicy, Runtime
from connectors._s2low_common import TransientAlert
from connectors.s2low_outbound import S2lowOutbound, S2lowOutboundConfig
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation
from simulators.legality import server_context
from simulators.pdf import make_pdf
from simulators.s2low import S2lowSimulator
from simulators.s2low_actes import ANSWER_CODES
from tests.harness import ledger_outcome, run_cli, run_until_idle, write_config
from tests.integration.test_responses_loop import awaiting, drop_response
from transformers.actes_canonical import build_canonical
from transformers.actes_model import ActFile, CanonicalAct

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=6, first_delay=0.05, max_delay=0.3)
TODAY = date.today()
SIREN = "214400152"
PASSWORD = "s2low-Secret-pw-42"
#: three characters outside ISO-8859-1 that French text is full of
ODD_OBJET = "Cession — parcelle « BK 112 » à l’euro symbolique, cœur de ville"


@pytest.fixture
def s2low() -> Iterator[S2lowSimulator]:
    with S2lowSimulator(ack_delay=0.2) as running:
        yield running


def s2low_config(workspace: Path, simulator: S2lowSimulator, **options: Any) -> Path:
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {
        "type": "s2low", "url": simulator.url, "read_timeout": "1s", "connect_timeout": "1s", **options,
    }
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def run(config_path: Path, timeout: float = 60, retry: RetryPolicy = FAST) -> dict[str, Any]:
    return run_until_idle(config_path, timeout=timeout, retry=retry)


def replies(workspace: Path) -> dict[str, bytes]:
    folder = workspace / "drop" / "deliberations" / "replies"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def act_key(numero: str, day: date = TODAY) -> str:
    return f"{SIREN}:{numero}:{day}"


def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.1)


# -------------------------------------------------------------------- the loop


def test_a_dropped_act_is_acknowledged_and_the_aracte_goes_back_to_the_software(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    # Given an act whose objet holds —, ’ and œ, which S2LOW's ISO-8859-1 subject cannot carry
    yesterday = TODAY - timedelta(days=1)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_400", decision=yesterday, objet=ODD_OBJET)
    # When the bus runs
    [delivery] = run(s2low_config(tmp_path, s2low))["DEL2026_400.json"]["deliveries"]
    # Then S2LOW took it at the first try, never had to refuse a field, and the ARActe came back
    expected = f"044-214400152-{yesterday:%Y%m%d}-DEL2026_400-DE"
    assert (delivery.state, delivery.id_acte, delivery.attempts) == ("ACKNOWLEDGED", expected, 1)
    received = s2low.received()
    assert received["refused"] == {} and s2low.refused == {}
    assert received["by_act"] == received["recorded"] == {act_key("DEL2026_400", yesterday): 1}
    [transaction] = [t for t in s2low.office.transactions.values() if t.type == 1]
    assert transaction.subject == "Cession - parcelle « BK 112 » à l'euro symbolique, coeur de ville"
    assert delivery.remote_id == str(transaction.id)
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_400.1.")] == ["DEL2026_400.1.1-2.xml",
                                                                              "DEL2026_400.1.json"]
    assert b"ARActe" in files["DEL2026_400.1.1-2.xml"] and expected.encode() in files["DEL2026_400.1.1-2.xml"]
    summary = json.loads(files["DEL2026_400.1.json"])
    assert (summary["state"], summary["id_acte"], summary["message"]["kind"]) == ("ACKNOWLEDGED", expected, "ARActe")


def test_the_stamped_act_and_the_bordereau_come_back_once_even_when_s2low_failed_at_the_acknowledgment(
    tmp_path: Path, s2low: S2lowSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # Given S2LOW failing to give the bordereau right after the acknowledgment
    s2low.inject("http500", operation="actes_create_pdf", count=1)
    config_path = s2low_config(tmp_path, s2low)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_410", decision=TODAY, annexes=2)
    [delivery] = run(config_path)["DEL2026_410.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    assert not any(name.startswith("DEL2026_410.2.") for name in replies(tmp_path))
    assert f"stamped act of delivery {delivery.id} not fetched yet" in caplog.text
    # When the follow-up poll asks again, Then the bordereau and S2LOW's stamped PDFs come back, once
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        assert runtime.answers.poll_follow_ups("prefecture") == 0
    finally:
        runtime.shutdown()
    stem = f"{delivery.id_acte}-1-1"
    stamped = [f"{delivery.id_acte}-bordereau.pdf", f"21_RP-{stem}_2-tampon.pdf", f"99_DE-{stem}_1-tampon.pdf",
               f"99_DE-{stem}_3-tampon.pdf"]
    files = replies(tmp_path)
    assert [name for name in files if name.startswith("DEL2026_410.2.")] == [
        "DEL2026_410.2.json", *(f"DEL2026_410.2.receipts.{name}" for name in stamped)]
    assert all(files[f"DEL2026_410.2.receipts.{name}"].startswith(b"%PDF-") for name in stamped)
    assert f"Acte reçu en préfecture le {TODAY:%d/%m/%Y}".encode("cp1252") in \
        files[f"DEL2026_410.2.receipts.99_DE-{stem}_1-tampon.pdf"]
    assert json.loads(files["DEL2026_410.2.json"])["message"] == {"kind": "receipts", "files": stamped}
    calls = s2low.received()["calls"]
    assert (calls["actes_create_pdf"], calls["actes_transac_get_files_list"], calls["actes_download_file"]) == (
        2, 1, 3)


def test_an_act_stamped_with_s2lows_old_classification_gets_odt_verif_01_until_s2low_asks_for_the_new_one(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    # Given a classification the ministry published, which S2LOW could not be asked for
    s2low.publish_classification(TODAY)
    s2low.inject("http500", operation="actes_classification_request", count=None)
    config = s2low_config(tmp_path, s2low)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_401", decision=TODAY)
    [delivery] = run(config)["DEL2026_401.json"]["deliveries"]
    # Then the ministry's anomaly rejects the delivery, in its words, and goes back to the software
    assert delivery.state == "REJECTED"
    assert "ODT-VERIF-01" in delivery.reason and "nature 002" in delivery.reason
    files = replies(tmp_path)
    assert "DEL2026_401.1.1-3.xml" in files and b"AnomalieActe" in files["DEL2026_401.1.1-3.xml"]
    # When the IT department has the classification asked for, a new act goes through
    s2low.clear_faults()
    result = run_cli("classification", SIREN, "-c", str(config), "--refresh")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{SIREN}: classification of {TODAY}, received from the platform as ")
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_402", decision=TODAY)
    [delivery] = run(config)["DEL2026_402.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    assert s2low.refused == {}


def test_an_acknowledged_act_is_cancelled_and_the_6_2_comes_back_once(tmp_path: Path, s2low: S2lowSimulator) -> None:
    config_path = s2low_config(tmp_path, s2low)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_403", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_403.json"]["deliveries"]
    # When the act is cancelled from the command line
    result = run_cli("cancel", delivery.id_acte, "-c", str(config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{delivery.id_acte}: cancellation sent (IN_TRANSIT)")
    # Then the ARAnnulation (6-2) is recorded once, when the ministry sent it, and returned to the software
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        until(lambda: runtime.answers.poll_follow_ups("prefecture") == 1)
        assert runtime.answers.poll_follow_ups("prefecture") == 0
        [message] = [m for m in runtime.ledger.messages_of(delivery.id) if m["code"] != "receipts"]
    finally:
        runtime.shutdown()
    assert message["code"] == "6-2"
    assert b"ARAnnulation" in replies(tmp_path)["DEL2026_403.3.6-2.xml"]
    # and asking again sends no second cancellation: S2LOW says one is under way
    again = run_cli("cancel", delivery.id_acte, "-c", str(config_path))
    assert again.returncode == 0, again.stderr
    assert [t.type for t in s2low.office.transactions.values()].count(6) == 1


def test_server_errors_and_a_timeout_are_retried_and_the_act_is_received_once(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    s2low.inject("http500", operation="actes_transac_create", count=2)
    s2low.inject("timeout", operation="actes_transac_create", count=1, seconds=5)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_404", decision=TODAY)
    [delivery] = run(s2low_config(tmp_path, s2low))["DEL2026_404.json"]["deliveries"]
    assert (delivery.state, delivery.attempts) == ("ACKNOWLEDGED", 4)
    received = s2low.received()
    assert received["calls"]["actes_transac_create"] == 4
    assert received["by_act"] == received["recorded"] == {act_key("DEL2026_404"): 1}


def test_a_reply_lost_after_s2low_recorded_the_act_is_looked_up_not_sent_again(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    s2low.inject("drop_reply_after_recording", operation="actes_transac_create", count=1)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_405", decision=TODAY)
    [delivery] = run(s2low_config(tmp_path, s2low))["DEL2026_405.json"]["deliveries"]
    assert (delivery.state, delivery.attempts) == ("ACKNOWLEDGED", 1)
    received = s2low.received()
    assert received["by_act"] == received["recorded"] == {act_key("DEL2026_405"): 1}
    assert received["calls"]["actes_transac_create"] == 1 and received["calls"]["list_actes"] >= 1


# -------------------------------------------------------------------- the connector alone


def canonical_artifact(folder: Path, numero: str, objet: str = "Cession d'une parcelle communale") -> Artifact:
    """A checked act as the bus sends it to S2LOW: its JSON and its files, by sha256."""
    pdf = folder / f"{numero}.pdf"
    pdf.write_bytes(make_pdf([f"Délibération {numero}", objet]))
    sha = hashlib.sha256(pdf.read_bytes()).hexdigest()
    act = CanonicalAct(
        siren=SIREN, departement="044", arrondissement=1, collectivite_nature="31",
        decision_date=TODAY - timedelta(days=1), numero_interne=numero, nature=1, matieres=(3, 2), objet=objet,
        classification_date=date(2025, 1, 15), main_document=ActFile(pdf.name, pdf),
        return_emails=("actes@saint-herblain.fr",),
    )
    out = io.BytesIO()
    package = build_canonical(act, out, shas={pdf.name: sha}, today=TODAY)
    path = folder / package.name
    path.write_bytes(out.getvalue())
    return Artifact(name=package.name, path=path, sha256=hashlib.sha256(out.getvalue()).hexdigest(), kind=CANONICAL,
                    client_key=package.id_acte, meta={"id_acte": package.id_acte}, blob={sha: pdf}.__getitem__)


def connector(simulator: S2lowSimulator, **options: Any) -> S2lowOutbound:
    config = {"url": simulator.url, "connect_timeout": "2s", "read_timeout": "2s", **options}
    return S2lowOutbound("prefecture", S2lowOutboundConfig.model_validate(config))


def test_number_already_used_after_a_lost_reply_is_followed_not_sent_again(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    # Given a submission S2LOW recorded but whose answer was lost, and a lookup that failed too
    artifact = canonical_artifact(tmp_path, "DEL2026_406")
    s2low.inject("drop_reply_after_recording", operation="actes_transac_create", count=1)
    s2low.inject("http500", operation="actes_transac_get_status", count=1)
    first = connector(s2low)
    with pytest.raises(TransientError) as caught:
        first.send(artifact)
    assert caught.value.rule == "s2low-lookup"
    [recorded] = [t.id for t in s2low.office.transactions.values() if t.type == 1]
    # When a restarted bus (which forgot the unknown outcome) sends it again
    result = connector(s2low).send(artifact)
    # Then S2LOW's "number already used" makes it look the act up and follow it: one transaction
    assert (result.state, result.remote_id) == ("SENT", str(recorded))
    assert "S2LOW already holds act" in result.detail and "another NumeroInterne" in result.detail
    received = s2low.received()
    assert (received["duplicates"], received["recorded"]) == (1, {act_key("DEL2026_406", TODAY - timedelta(1)): 1})
    # and the bus that saw the unknown outcome asks before sending: no third submission
    assert first.send(artifact).remote_id == str(recorded)
    assert s2low.received()["calls"]["actes_transac_create"] == 2
    assert s2low.refused == {}


def test_s2low_refuses_subjects_outside_iso_8859_1_and_numbers_outside_its_pattern(s2low: S2lowSimulator) -> None:
    """The strictness hook itself: what the bus must never send is refused and counted."""
    pdf = make_pdf(["Acte"])

    def create(number: str, subject: bytes) -> str:
        fields = {"api": "1", "nature_code": "1", "number": number, "decision_date": TODAY.isoformat(),
                  "classif1": "3", "classif2": "2", "type_acte": "99_DE"}
        files: dict[str, Any] = {"subject": (None, subject), "acte_pdf_file": ("acte.pdf", pdf, "application/pdf")}
        answer = requests.post(f"{s2low.url}/modules/actes/actes_transac_create.php", data=fields, files=files,
                               timeout=5)
        return answer.content.decode("iso-8859-1")

    assert create("DEL_1", "Objet — en UTF-8".encode()).startswith("KO\nL'objet doit être encodé en ISO-8859-1")
    assert create("DEL_2", "Deux\nlignes".encode("iso-8859-1")).startswith("KO\n")
    assert create("del-3", "Objet".encode("iso-8859-1")) == "KO\nLe numéro n'est pas correct\n"
    assert s2low.refused == {"subject": 2, "number": 1}
    assert create("DEL_4", "Objet accentué".encode("iso-8859-1")).startswith("OK\n")
    assert create("DEL_4", "Objet accentué".encode("iso-8859-1")).startswith("KO\nUn acte portant le même numéro")


def test_an_act_held_at_s2low_waits_with_its_reason_then_goes_through(tmp_path: Path, s2low: S2lowSimulator) -> None:
    # Given a connector that leaves each act at S2LOW until a person posts it
    config_path = s2low_config(tmp_path, s2low, en_attente=True)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_407", decision=TODAY)
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    assert not runtime.run_until_idle(timeout=2)
    # Then it waits, SENT, its reason journaled, and counted as waiting to be posted
    [delivery] = ledger_outcome(config_path)["DEL2026_407.json"]["deliveries"]
    assert delivery.state == "SENT"
    ledger = Ledger(load_config(config_path).bus.ledger)
    try:
        reasons = {entry.reason for entry in ledger.entries(delivery.id)}
    finally:
        ledger.close()
    assert "waiting at the platform: to-be-posted (s2low-status=17 en attente d'être postée)" in reasons
    waiting = metrics.REGISTRY.get_sample_value("hent_platform_waiting_deliveries",
                                                {"connector": "prefecture", "waiting": "to-be-posted"})
    assert waiting == 1
    # When the person posts it at S2LOW, Then the ministry acknowledges it
    assert s2low.post_waiting() == [int(delivery.remote_id)]
    [delivery] = run(config_path)["DEL2026_407.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"


def test_a_letter_of_the_prefecture_reaches_the_software_once_with_its_pdf(
    tmp_path: Path, s2low: S2lowSimulator
) -> None:
    config_path = s2low_config(tmp_path, s2low)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_408", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_408.json"]["deliveries"]
    s2low.followup(delivery.id_acte, "2-1")
    assert s2low.received()["unread"] == 1
    runtime = Runtime(load_config(config_path), Pipeline.for_runtime, retry=FAST, serve_http=False)
    try:
        assert runtime.answers.poll_follow_ups("prefecture") == 1
        assert runtime.answers.poll_follow_ups("prefecture") == 0  # recorded once, then marked read at S2LOW
    finally:
        runtime.shutdown()
    assert s2low.received()["unread"] == 0
    files = replies(tmp_path)
    letters = [name for name in files if ".3.2-1." in name]
    assert "DEL2026_408.3.2-1.xml" in letters and any(name.endswith(".pdf") for name in letters)
    assert b"CourrierSimple" in files["DEL2026_408.3.2-1.xml"]
    assert not any(b"EnveloppeMISILLCL" in data for data in files.values())  # the ministry's envelope stays out


# -------------------------------------------------------------------- logins


def test_refused_credentials_keep_the_delivery_waiting_with_the_circuit_open_until_they_are_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HENT_TEST_S2LOW_PASSWORD", PASSWORD)
    with S2lowSimulator(ack_delay=0.1, login="hent", password=PASSWORD) as s2low:
        # Given S2LOW refusing the bus's login
        s2low.inject("refuse_credentials", count=None)
        config_path = s2low_config(tmp_path, s2low, login="hent", password="${HENT_TEST_S2LOW_PASSWORD}")
        drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_409", decision=TODAY)
        runtime = Runtime(load_config(config_path), Pipeline.for_runtime, serve_http=False,
                          retry=RetryPolicy(max_attempts=100, first_delay=0.05, max_delay=0.2))
        circuit = runtime.circuits["prefecture"] = Circuit("prefecture", threshold=3, cooldown=1.5)
        runtime.start()
        consumer = threading.Thread(target=runtime.consume, daemon=True)
        consumer.start()
        try:
            # Then the delivery waits, PENDING, its attempts growing, the circuit open, nothing lost
            until(lambda: circuit.state == OPEN)
            [delivery] = runtime.ledger.deliveries()
            assert delivery.state == "PENDING" and delivery.attempts >= 3
            assert metrics.REGISTRY.get_sample_value("hent_endpoint_circuit_state", {"connector": "prefecture"}) == OPEN
            assert s2low.received()["recorded"] == {}
            assert "ALERT connector prefecture" in caplog.text and "refused the login" in caplog.text
            # When the login is accepted again, Then it goes through
            s2low.clear_faults()
            until(lambda: runtime.ledger.get_delivery(delivery.id).state == "ACKNOWLEDGED")
            assert circuit.state == CLOSED
            assert metrics.REGISTRY.get_sample_value("hent_endpoint_circuit_state",
                                                     {"connector": "prefecture"}) == CLOSED
        finally:
            runtime.stop_event.set()
            consumer.join(timeout=10)
            runtime.shutdown()
    assert s2low.received()["by_act"] == {act_key("DEL2026_409"): 1}


def test_the_nonce_login_is_used_and_a_wrong_password_is_an_alert(tmp_path: Path) -> None:
    with S2lowSimulator(login="hent", password=PASSWORD) as s2low:
        good = connector(s2low, login="hent", password=PASSWORD, auth="nonce")
        assert good.test_connection() == "OK"
        assert good.send(canonical_artifact(tmp_path, "DEL2026_410")).state == "SENT"
        assert s2low.received()["calls"]["get-nounce"] == 1  # one nonce, kept for the following calls
        bad = connector(s2low, login="hent", password="not-the-password", auth="nonce")
        with pytest.raises(TransientAlert) as caught:
            bad.test_connection()
        assert caught.value.rule == "s2low-http-401"
        basic = connector(s2low, login="hent", password="not-the-password")
        assert basic.reachable()[0] is False


# -------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    stranger_cert: Path  #: a client certificate from the other CA
    stranger_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _authority(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    path = folder / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def _leaf(folder: Path, name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path],
          server: bool) -> tuple[Path, Path]:
    ca_cert, ca_key, _ = issuer
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(_key_pem(key))
    return cert_path, key_path


def make_pki(folder: Path) -> Pki:
    """A CA with a server certificate for 127.0.0.1 and a client (RGS-like) certificate; another CA."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, other = _authority(folder, "Hent test CA"), _authority(folder, "Another CA")
    server_cert, server_key = _leaf(folder, "server", ca, server=True)
    client_cert, client_key = _leaf(folder, "client", ca, server=False)
    stranger_cert, stranger_key = _leaf(folder, "stranger", other, server=False)
    return Pki(ca[2], server_cert, server_key, client_cert, client_key, other[2], stranger_cert, stranger_key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("s2low-pki"))


@pytest.fixture
def mutual(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[S2lowSimulator]:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with S2lowSimulator(tls=server_context(pki.server_cert, pki.server_key, client_ca=pki.ca)) as running:
        yield running


def test_mutual_tls_with_the_rgs_client_certificate(mutual: S2lowSimulator, pki: Pki, tmp_path: Path) -> None:
    endpoint = connector(mutual, ca_file=str(pki.ca), client_cert=str(pki.client_cert),
                         client_key=str(pki.client_key))
    endpoint.check()  # the certificate and its key load
    assert mutual.url.startswith("https://127.0.0.1:") and endpoint.test_connection() == "OK"
    assert endpoint.send(canonical_artifact(tmp_path, "DEL2026_411")).state == "SENT"
    assert endpoint.reachable() == (True, f"{mutual.url} (OK)")


def test_a_server_certificate_from_another_ca_is_refused(mutual: S2lowSimulator, pki: Pki, tmp_path: Path) -> None:
    endpoint = connector(mutual, ca_file=str(pki.other_ca), client_cert=str(pki.client_cert),
                         client_key=str(pki.client_key))
    with pytest.raises(TransientAlert) as caught:
        endpoint.send(canonical_artifact(tmp_path, "DEL2026_412"))
    assert caught.value.rule == "s2low-tls" and "CERTIFICATE_VERIFY_FAILED" in caught.value.message
    assert mutual.received()["calls"] == {}  # refused in the handshake: nothing reached S2LOW


def test_a_client_certificate_s2low_does_not_trust_is_refused(mutual: S2lowSimulator, pki: Pki,
                                                                 tmp_path: Path) -> None:
    endpoint = connector(mutual, ca_file=str(pki.ca), client_cert=str(pki.stranger_cert),
                         client_key=str(pki.stranger_key))
    with pytest.raises(TransientError) as caught:  # an alert, or a reset when TLS 1.3 reports it late
        endpoint.send(canonical_artifact(tmp_path, "DEL2026_413"))
    assert caught.value.connector == "prefecture"
    assert mutual.received()["calls"] == {} and mutual.received()["recorded"] == {}


# -------------------------------------------------------------------- answering the préfecture's letters


def s2low_answers_config(workspace: Path, simulator: S2lowSimulator) -> Path:
    """S2LOW as the préfecture's endpoint, and a source of response bundles routed to it."""
    path = write_config(workspace, sweep="0.2s", lease="2s", extra_bus={"answers": "0.2s", "follow_ups": "0.2s"})
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["connectors"]["prefecture"] = {"type": "s2low", "url": simulator.url, "read_timeout": "1s",
                                          "connect_timeout": "1s"}
    config["connectors"]["reponses"] = {"type": "folder", "path": str(workspace / "drop" / "reponses"),
                                        "pattern": "*.json", "poll": "0.2s",
                                        "ready": {"min_age": "0s", "stable": False}}
    config["routes"].append({"name": "reponses", "from": "reponses", "transform": "response", "to": "prefecture"})
    (workspace / "drop" / "reponses").mkdir(parents=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(("letter", "answer", "receipt", "documents", "type_envoie"), [
    ("3-1", "3-4", "3-5", 2, 4),
    ("4-1", "4-3", "4-5", 1, 3),
])
def test_a_letter_answered_through_s2low_is_acknowledged_by_the_ministrys_receipt(
    tmp_path: Path, s2low: S2lowSimulator, letter: str, answer: str, receipt: str, documents: int, type_envoie: int,
) -> None:
    # Given an act acknowledged through S2LOW and a letter of the préfecture about it, received by the bus
    config_path = s2low_answers_config(tmp_path, s2low)
    drop_deliberation(tmp_path / "drop" / "deliberations", "DEL2026_420", decision=TODAY)
    [delivery] = run(config_path)["DEL2026_420.json"]["deliveries"]
    assert delivery.state == "ACKNOWLEDGED"
    id_acte = str(delivery.id_acte)
    letter_id = s2low.followup(id_acte, letter)["transaction_id"]
    run(config_path)
    assert any(name.endswith(f".{letter}.xml") for name in replies(tmp_path))
    assert [(a["id_acte"], a["code"]) for a in awaiting(config_path)] == [(id_acte, letter)]
    # When the software drops its answer
    drop_response(tmp_path, "REP_420", id_acte, answer, documents=documents)
    outcome = run(config_path)["REP_420.json"]
    # Then S2LOW took it for that letter, and the ministry's receipt came back
    assert outcome["doc"].state == "ROUTED", outcome["doc"].reason
    [sent] = outcome["deliveries"]
    assert (sent.state, sent.id_acte) == ("ACKNOWLEDGED", id_acte)
    [posted] = [t for t in s2low.office.transactions.values() if t.answers is not None]
    assert (str(posted.answers), posted.code, sent.remote_id) == (letter_id, answer, str(posted.id))
    assert ANSWER_CODES[(posted.type, type_envoie)] == answer
    folder = tmp_path / "drop" / "reponses" / "replies"
    names = sorted(p.name for p in folder.iterdir())
    assert f"REP_420.1.{receipt}.xml" in names, names
    summary = json.loads((folder / "REP_420.1.json").read_text())
    assert summary["state"] == "ACKNOWLEDGED" and summary["message"]["code"] == receipt
    # and the letter no longer awaits an answer; S2LOW received the answer once and refused nothing
    assert awaiting(config_path) == []
    assert s2low.received()["answers"] == {f"{id_acte}:{answer}": 1}
    assert s2low.refused == {}
    run(config_path)  # the follow-up polls of the answer's transaction bring nothing new
    assert sorted(p.name for p in folder.iterdir()) == names
