"""The SOAP endpoint against the legality simulator, over real HTTP on 127.0.0.1.

Each test starts its own simulator (a loopback port chosen by the system) and stops it;
the archives are real ones, built by ``transformers.actes_out.build_archive``.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests

from bus.connector import Artifact, SendResult
from bus.errors import DocumentError, TransientError
from bus.secrets import Secret
from connectors._soap_common import TransientAlert
from connectors.soap_outbound import SoapOutbound, SoapOutboundConfig
from simulators.legality import LegalitySimulator
from simulators.pdf import make_pdf
from transformers.actes_model import ActFile, CanonicalAct
from transformers.actes_out import build_archive

pytestmark = pytest.mark.integration

SIREN = "214400152"
PASSWORD = "Legality-Pw-0f-the-commune"
MakeArtifact = Callable[..., tuple[Artifact, str]]


@pytest.fixture
def simulator() -> Iterator[LegalitySimulator]:
    with LegalitySimulator(ack_delay=0.0) as running:
        yield running


@pytest.fixture
def endpoint(simulator: LegalitySimulator) -> Iterator[SoapOutbound]:
    connector = soap(simulator)
    connector.connect()
    yield connector
    connector.close()


def soap(simulator: LegalitySimulator, **options: Any) -> SoapOutbound:
    config = {"endpoint": simulator.url, "connect_timeout": "2s", "read_timeout": "1s", **options}
    return SoapOutbound("prefecture", SoapOutboundConfig.model_validate(config))


@pytest.fixture
def make_artifact(tmp_path: Path) -> MakeArtifact:
    """An act's archive in a spool-like file: (artifact, its act key for the simulator's counts)."""
    pdf = tmp_path / "acte.pdf"
    pdf.write_bytes(make_pdf(["Délibération du conseil municipal"]))

    def make(numero: str, *, serial: int = 1, classification: date = date(2025, 1, 15)) -> tuple[Artifact, str]:
        act = CanonicalAct(
            siren=SIREN, departement="044", arrondissement=1, collectivite_nature="31",
            decision_date=date(2025, 3, 12), numero_interne=numero, nature=1, matieres=(3, 2),
            objet="Cession d'une parcelle communale", classification_date=classification,
            main_document=ActFile("acte.pdf", pdf), return_emails=("actes@mairie-nantes.fr",),
        )
        out = io.BytesIO()
        built = build_archive(act, out, quadrigram="EACT", trigram="HNT", serial=serial,
                              generation_date=date(2025, 3, 13), today=date(2025, 3, 13))
        data = out.getvalue()
        sha256 = hashlib.sha256(data).hexdigest()
        path = tmp_path / sha256
        path.write_bytes(data)
        artifact = Artifact(name=built.archive_name, path=path, sha256=sha256, kind="actes-archive",
                            client_key=built.envelope_name,
                            meta={"id_acte": built.id_acte, "envelope_name": built.envelope_name})
        return artifact, f"{SIREN}:{numero}:2025-03-12"

    return make


def recorded(simulator: LegalitySimulator, key: str) -> int:
    return int(simulator.received()["recorded"].get(key, 0))


def calls(simulator: LegalitySimulator, operation: str) -> int:
    return int(simulator.received()["calls"].get(operation, 0))


# -------------------------------------------------------------------- the happy path, offline WSDL


def test_an_act_is_submitted_then_acknowledged_with_no_document_fetched_over_the_network(
    simulator: LegalitySimulator, make_artifact: MakeArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    gets: list[str] = []
    real_request = requests.Session.request

    def recording(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if method.upper() != "POST":
            gets.append(f"{method} {url}")
        return real_request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", recording)
    endpoint = soap(simulator)
    artifact, key = make_artifact("DEL2025_001")
    endpoint.connect()
    result = endpoint.send(artifact)
    [status] = endpoint.statuses([result.remote_id or ""])
    endpoint.close()

    assert result.state == "SENT" and result.remote_id
    assert status.state == "ACKNOWLEDGED"
    assert status.message_name == "044-214400152-20250312-DEL2025_001-DE-1-2_1.xml"
    assert status.message is not None and b"<actes:ARActe" in status.message
    assert b'actes:IDActe="044-214400152-20250312-DEL2025_001-DE"' in status.message
    assert recorded(simulator, key) == 1
    transport = endpoint._client().transport
    assert [Path(url).name for url in transport.loads] == ["legality.wsdl", "legality.xsd"]
    assert not any(url.startswith(("http:", "https:")) for url in transport.loads)
    assert gets == []  # every HTTP request was a SOAP POST: no WSDL or schema fetched


def test_an_anomaly_is_a_rejected_status_with_the_ministrys_message(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    simulator.publish_classification("2026-01-01")
    artifact, _ = make_artifact("DEL2025_002")
    result = endpoint.send(artifact)
    [status] = endpoint.statuses([result.remote_id or "", "no-such-transaction"])[:1]
    assert status.state == "REJECTED"
    assert status.message is not None and b"AnomalieActe" in status.message
    assert "ODT-VERIF-01" in status.detail
    assert endpoint.statuses(["no-such-transaction"])[0].state == "UNKNOWN"


# -------------------------------------------------------------------- never twice


def test_the_same_act_sent_again_is_followed_not_transmitted_twice(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    artifact, key = make_artifact("DEL2025_003")
    first = endpoint.send(artifact)
    again = endpoint.send(artifact)  # a redelivery: same client key
    other, _ = make_artifact("DEL2025_003", serial=2)  # the act prepared again: another envelope
    reprepared = endpoint.send(other)
    assert again == SendResult("SENT", first.remote_id, "already received")
    assert (reprepared.state, reprepared.remote_id) == ("SENT", first.remote_id)
    assert reprepared.detail.startswith("already received under another submission")
    assert recorded(simulator, key) == 1


def test_a_reply_lost_after_recording_is_looked_up_not_resent(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    artifact, key = make_artifact("DEL2025_004")
    simulator.inject("lost_reply", operation="SubmitArchive")
    result = endpoint.send(artifact)
    assert result.state == "SENT" and result.remote_id
    assert result.detail == "recorded by the platform though its answer was lost"
    assert (calls(simulator, "SubmitArchive"), calls(simulator, "FindSubmission")) == (1, 1)
    assert recorded(simulator, key) == 1 and simulator.received()["by_act"][key] == 1


@pytest.mark.parametrize(("kind", "rule"), [("http500", "soap-http-500"), ("soapfault", "soap-fault-INTERNAL"),
                                             ("drop", "soap-connection-lost")])
def test_platform_failures_are_transient_and_the_retry_sends_the_same_act_once(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact, kind: str, rule: str
) -> None:
    artifact, key = make_artifact("DEL2025_005")
    simulator.inject(kind, operation="SubmitArchive")
    with pytest.raises(TransientError) as caught:
        endpoint.send(artifact)
    assert caught.value.rule == rule and caught.value.connector == "prefecture"
    assert calls(simulator, "FindSubmission") == 1  # asked before letting the runtime retry
    assert endpoint.send(artifact).state == "SENT"
    assert recorded(simulator, key) == 1


def test_a_timeout_then_a_late_recording_ends_in_one_transmission(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    artifact, key = make_artifact("DEL2025_006")
    simulator.inject("latency", operation="SubmitArchive", seconds=1.5)  # answers after read_timeout (1 s)
    with pytest.raises(TransientError) as caught:
        endpoint.send(artifact)
    assert caught.value.rule == "soap-timeout"
    deadline = time.monotonic() + 5
    while recorded(simulator, key) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the platform records it after the bus gave up waiting
    retried = endpoint.send(artifact)  # the runtime's retry: DUPLICATE, looked up
    assert (retried.state, retried.detail) == ("SENT", "already received")
    assert recorded(simulator, key) == 1


def test_a_hung_platform_does_not_hang_the_caller_beyond_the_read_timeout(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    artifact, _ = make_artifact("DEL2025_007")
    simulator.inject("hang", operation="*", count=2, seconds=10)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        endpoint.send(artifact)  # SubmitArchive hangs, then the FindSubmission too
    elapsed = time.monotonic() - started
    assert caught.value.rule == "soap-lookup"
    assert 1.9 <= elapsed < 4.0  # two calls, each cut at read_timeout (1 s)


def test_an_unreadable_archive_fails_the_document(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact, tmp_path: Path
) -> None:
    artifact, _ = make_artifact("DEL2025_008")
    broken = tmp_path / "broken"
    broken.write_bytes(b"not a tar.gz")
    with pytest.raises(DocumentError) as caught:
        endpoint.send(Artifact(name=artifact.name, path=broken, sha256="0", kind="actes-archive",
                               client_key=artifact.client_key, meta=artifact.meta))
    assert caught.value.rule == "soap-fault-INVALID_ARCHIVE"
    assert "cannot read the archive as tar.gz" in str(caught.value)


# -------------------------------------------------------------------- after the acknowledgment


def test_follow_ups_are_fetched_once_and_a_cancellation_answers_6_2(
    simulator: LegalitySimulator, endpoint: SoapOutbound, make_artifact: MakeArtifact
) -> None:
    artifact, _ = make_artifact("DEL2025_009")
    remote_id = endpoint.send(artifact).remote_id or ""
    id_acte = artifact.meta["id_acte"]
    simulator.followup(id_acte, "2-1")
    [letter] = endpoint.messages(remote_id, set())
    assert letter.remote_id == remote_id and "-2-1_" in letter.name and b"<actes:" in letter.data
    [(pdf_name, pdf)] = letter.attachments.items()
    assert pdf_name.endswith(".pdf") and pdf.startswith(b"%PDF")
    assert endpoint.messages(remote_id, {letter.message_id}) == []
    assert calls(simulator, "GetMessage") == 1

    with pytest.raises(DocumentError) as refused:
        endpoint.cancel(remote_id, "044-214400152-20250312-OTHER-DE")
    assert refused.value.rule == "soap-fault-NOT_CANCELLABLE"
    cancelled = endpoint.cancel(remote_id, id_acte)
    assert (cancelled.remote_id, cancelled.state) == (remote_id, "CANCELLED")
    [answer] = endpoint.messages(remote_id, {letter.message_id})
    assert "-6-2_" in answer.name and b"ARAnnulation" in answer.data
    assert endpoint.statuses([remote_id])[0].state == "CANCELLED"
    with pytest.raises(DocumentError) as unknown:
        endpoint.messages("no-such-transaction", set())
    assert unknown.value.rule == "soap-fault-UNKNOWN_TRANSACTION"


def test_classification_answers_7_2_then_7_3_once_up_to_date(endpoint: SoapOutbound) -> None:
    name, content = endpoint.classification(SIREN, None)
    assert "-7-2_" in name and b"RetourClassification" in content
    name, content = endpoint.classification(SIREN, "2025-01-15")
    assert "-7-3_" in name and content


# -------------------------------------------------------------------- credentials and readiness


def test_ws_security_username_token(make_artifact: MakeArtifact) -> None:
    with LegalitySimulator(username="hent", password=PASSWORD) as simulator:
        artifact, key = make_artifact("DEL2025_010")
        for options in ({}, {"username": "hent", "password": Secret("not-the-" + PASSWORD)}):
            with pytest.raises(TransientAlert) as caught:
                soap(simulator, **options).send(artifact)
            assert caught.value.rule == "soap-fault-AUTH" and caught.value.alert
            assert PASSWORD not in str(caught.value)
        assert calls(simulator, "FindSubmission") == 0  # a refused request was not recorded: no lookup
        good = soap(simulator, username="hent", password=Secret(PASSWORD))
        assert good.send(artifact).state == "SENT"
        assert good.reachable()[0]
        assert recorded(simulator, key) == 1


def test_reachable_says_whether_the_platform_answers() -> None:
    simulator = LegalitySimulator().start()
    endpoint = soap(simulator)
    try:
        assert endpoint.reachable() == (True, simulator.url)
    finally:
        simulator.stop()
    started = time.monotonic()
    ready, why = endpoint.reachable()
    assert not ready and "FindSubmission" in why
    assert time.monotonic() - started < 3
