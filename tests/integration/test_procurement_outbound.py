"""The procurement endpoint against the procurement simulator, over real HTTP on 127.0.0.1.

Each test starts its own simulator (a loopback port chosen by the system) and stops it; the
DECP files are the simulator tests' hand-written ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bus import registry
from bus.connector import DECP_XML, AnsweringEndpoint, Artifact, SendResult
from bus.errors import ConfigError, DocumentError, TransientError
from connectors import procurement_outbound
from connectors._soap_common import TransientAlert
from connectors.procurement_outbound import ProcurementOutbound, ProcurementOutboundConfig
from simulators.procurement import ProcurementSimulator
from tests.integration.test_procurement_simulator import BUYER, decp
from transformers.procurement_receipt import read_procurement_answer

pytestmark = pytest.mark.integration

MakeArtifact = Callable[..., Artifact]
KEY = f"{BUYER}:2025-0042:0"


@pytest.fixture
def simulator() -> Iterator[ProcurementSimulator]:
    with ProcurementSimulator(publish_delay=0.0) as running:
        yield running


def procurement(simulator: ProcurementSimulator, **options: Any) -> ProcurementOutbound:
    config = {"url": simulator.url, "connect_timeout": "2s", "read_timeout": "1s", **options}
    return ProcurementOutbound("marches", ProcurementOutboundConfig.model_validate(config))


@pytest.fixture
def endpoint(simulator: ProcurementSimulator) -> Iterator[ProcurementOutbound]:
    connector = procurement(simulator)
    connector.connect()
    yield connector
    connector.close()


@pytest.fixture
def make_artifact(tmp_path: Path) -> MakeArtifact:
    """A DECP file in a spool-like file, named and keyed as a delivery would be."""

    def make(data: bytes | None = None, *, name: str = "decp-2025-0042.xml",
             client_key: str | None = "d-1") -> Artifact:
        data = decp() if data is None else data
        sha256 = hashlib.sha256(data).hexdigest()
        path = tmp_path / sha256
        path.write_bytes(data)
        return Artifact(name=name, path=path, sha256=sha256, kind=DECP_XML, client_key=client_key)

    return make


def published(simulator: ProcurementSimulator, key: str = KEY) -> int:
    return int(simulator.received()["published"].get(key, 0))


def calls(simulator: ProcurementSimulator, operation: str) -> int:
    return int(simulator.received()["calls"].get(operation, 0))


# -------------------------------------------------------------------- the happy path


def test_found_by_the_registry_and_answering(simulator: ProcurementSimulator) -> None:
    assert registry.connector_class("procurement", "outbound") is ProcurementOutbound
    endpoint = procurement(simulator)
    assert isinstance(endpoint, AnsweringEndpoint) and endpoint.consumes == (DECP_XML,)
    endpoint.check()
    assert endpoint.reachable() == (True, simulator.url)
    assert endpoint.messages("any", set()) == []
    with pytest.raises(DocumentError, match="offers no cancellation") as cancel:
        endpoint.cancel("any", "any")
    with pytest.raises(DocumentError, match="offers no classification") as classification:
        endpoint.classification("214400152", None)
    assert (cancel.value.rule, classification.value.rule) == ("procurement-cancel", "procurement-classification")
    endpoint.close()


def test_a_contract_is_sent_then_acknowledged_with_the_receipt(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    artifact = make_artifact()
    result = endpoint.send(artifact)
    assert result.state == "SENT" and result.remote_id
    [status] = endpoint.statuses([result.remote_id])
    assert (status.remote_id, status.state) == (result.remote_id, "ACKNOWLEDGED")
    assert status.message_name == "decp-2025-0042.xml.receipt.xml" and status.message is not None
    receipt = read_procurement_answer(status.message, status.message_name)
    assert (receipt.kind, receipt.decp_id, receipt.modification_id) == ("receipt", "2025-0042", 0)
    assert (receipt.file_name, receipt.sha256) == (artifact.name, artifact.sha256)
    assert endpoint.lookup("d-1") == result.remote_id and endpoint.lookup("never") is None
    assert published(simulator) == 1
    transport = endpoint._client().transport
    assert [Path(url).name for url in transport.loads] == ["procurement.wsdl", "procurement.xsd"]


def test_while_received_the_status_is_in_transit(make_artifact: MakeArtifact) -> None:
    with ProcurementSimulator(publish_delay=30) as simulator:
        endpoint = procurement(simulator)
        remote_id = endpoint.send(make_artifact()).remote_id or ""
        [status] = endpoint.statuses([remote_id])
        endpoint.close()
    assert (status.state, status.message, status.message_name, status.detail) == ("IN_TRANSIT", None, None, "RECEIVED")


def test_statuses_are_asked_in_batches_and_unknown_ids_say_so(
    simulator: ProcurementSimulator, make_artifact: MakeArtifact
) -> None:
    endpoint = procurement(simulator, batch=2)
    ids = [endpoint.send(make_artifact(decp(f"2025-{n:04d}"), name=f"{n}.xml", client_key=f"k{n}")).remote_id or ""
           for n in range(3)]
    statuses = endpoint.statuses([*ids, "no-such-transaction"])
    endpoint.close()
    assert [s.state for s in statuses] == ["ACKNOWLEDGED"] * 3 + ["UNKNOWN"]
    assert [s.remote_id for s in statuses] == [*ids, "no-such-transaction"]
    assert calls(simulator, "GetStatus") == 2


def test_a_rejected_contract_is_a_rejected_status_with_the_rejection(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    result = endpoint.send(make_artifact(decp(montant="0")))
    [status] = endpoint.statuses([result.remote_id or ""])
    assert status.state == "REJECTED" and status.message_name == "decp-2025-0042.xml.rejection.xml"
    assert status.message is not None
    rejection = read_procurement_answer(status.message, status.message_name)
    assert [(p.field, p.rule) for p in rejection.problems] == [("/marches/marche/montant", "xsd")]
    assert "/marches/marche/montant" in status.detail


# -------------------------------------------------------------------- never twice


def test_the_same_contract_sent_again_is_followed_not_published_twice(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    first = endpoint.send(make_artifact())
    again = endpoint.send(make_artifact())  # a redelivery: same client key
    other = endpoint.send(make_artifact(name="other.xml", client_key="d-2"))  # prepared again: another key
    assert again == SendResult("SENT", first.remote_id, "already received")
    assert (other.state, other.remote_id) == ("SENT", first.remote_id)
    assert other.detail.startswith("this contract and modification were already published under another submission")
    assert published(simulator) == 1 and calls(simulator, "SubmitDecp") == 3


def test_with_no_client_key_the_file_name_is_the_key(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    remote_id = endpoint.send(make_artifact(client_key=None)).remote_id
    assert endpoint.lookup("decp-2025-0042.xml") == remote_id


def test_a_reply_lost_after_recording_is_looked_up_not_resent(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    simulator.inject("lost_reply", operation="SubmitDecp")
    result = endpoint.send(make_artifact())
    assert result.state == "SENT" and result.remote_id
    assert result.detail == "recorded by the platform though its answer was lost"
    assert (calls(simulator, "SubmitDecp"), calls(simulator, "FindSubmission")) == (1, 1)
    assert simulator.received()["by_contract"] == {KEY: 1} and published(simulator) == 1
    assert endpoint.statuses([result.remote_id])[0].state == "ACKNOWLEDGED"


@pytest.mark.parametrize(("kind", "rule"), [("http500", "soap-http-500"), ("soapfault", "soap-fault-INTERNAL"),
                                             ("drop", "soap-connection-lost")])
def test_platform_failures_are_transient_and_the_retry_publishes_once(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact, kind: str, rule: str
) -> None:
    simulator.inject(kind, operation="SubmitDecp")
    with pytest.raises(TransientError) as caught:
        endpoint.send(make_artifact())
    assert caught.value.rule == rule and caught.value.connector == "marches"
    assert calls(simulator, "FindSubmission") == 1  # asked before letting the runtime retry
    assert endpoint.send(make_artifact()).state == "SENT"
    assert published(simulator) == 1


def test_a_timeout_then_a_late_recording_ends_in_one_publication(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    simulator.inject("latency", operation="SubmitDecp", seconds=1.5)  # answers after read_timeout (1 s)
    with pytest.raises(TransientError) as caught:
        endpoint.send(make_artifact())
    assert caught.value.rule == "soap-timeout"
    deadline = time.monotonic() + 5
    while published(simulator) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)  # the platform records it after the bus gave up waiting
    retried = endpoint.send(make_artifact())  # the runtime's retry: DUPLICATE, looked up
    assert (retried.state, retried.detail) == ("SENT", "already received")
    assert published(simulator) == 1


def test_a_platform_that_never_answers_holds_the_caller_no_longer_than_the_read_timeout(
    simulator: ProcurementSimulator, endpoint: ProcurementOutbound, make_artifact: MakeArtifact
) -> None:
    simulator.inject("timeout", operation="*", count=2, seconds=10)
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        endpoint.send(make_artifact())  # SubmitDecp hangs, then the FindSubmission too
    elapsed = time.monotonic() - started
    assert caught.value.rule == "soap-lookup" and "looked up again before anything is sent" in caught.value.message
    assert 1.9 <= elapsed < 4.0  # two calls, each cut at read_timeout (1 s)


def test_a_stopped_platform_is_transient_and_unreachable(make_artifact: MakeArtifact) -> None:
    with ProcurementSimulator() as simulator:
        endpoint = procurement(simulator)
    with pytest.raises(TransientError) as caught:
        endpoint.send(make_artifact())
    assert caught.value.rule == "soap-connect"
    ready, why = endpoint.reachable()
    assert not ready and "refused or unreachable" in why


def test_credentials_refused_are_an_alert(make_artifact: MakeArtifact) -> None:
    with ProcurementSimulator(username="hent", password="right") as simulator:
        endpoint = procurement(simulator, username="hent", password="wrong")
        with pytest.raises(TransientAlert) as caught:
            endpoint.send(make_artifact())
        good = procurement(simulator, username="hent", password="right")
        assert good.send(make_artifact()).state == "SENT"
    assert caught.value.rule == "soap-fault-AUTH"
    assert calls(simulator, "FindSubmission") == 0  # refused before being read: nothing to look up


# -------------------------------------------------------------------- the document's faults


def test_a_file_too_large_or_of_another_kind_fails_the_document(
    simulator: ProcurementSimulator, make_artifact: MakeArtifact
) -> None:
    endpoint = procurement(simulator, max_size=100)
    with pytest.raises(DocumentError) as large:
        endpoint.send(make_artifact())
    artifact = make_artifact()
    json_artifact = Artifact(name="decp.json", path=artifact.path, sha256=artifact.sha256, kind="decp-json")
    with pytest.raises(DocumentError) as kind:
        endpoint.send(json_artifact)
    assert (large.value.rule, kind.value.rule) == ("decp-max-size", "procurement-kind")
    assert calls(simulator, "SubmitDecp") == 0


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="url must be an http:// or https:// URL"):
        ProcurementOutboundConfig.model_validate({"url": "ftp://marches.example"})
    with pytest.raises(ValueError, match="url must not hold credentials: set username and password"):
        ProcurementOutboundConfig.model_validate({"url": "https://hent:pw@marches.example/soap"})
    with pytest.raises(ValueError, match="username and password go together"):
        ProcurementOutboundConfig.model_validate({"url": "https://marches.example/soap", "username": "hent"})
    config = ProcurementOutboundConfig.model_validate({"url": "https://marches.example/soap", "username": "hent",
                                                      "password": "pw-never-shown"})
    assert "pw-never-shown" not in repr(config) and config.batch == 50


def test_a_missing_wsdl_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(procurement_outbound, "WSDL", tmp_path / "procurement.wsdl")
    endpoint = ProcurementOutbound("marches", ProcurementOutboundConfig(url="https://marches.example/soap"))
    with pytest.raises(ConfigError) as caught:
        endpoint.check()
    assert caught.value.rule == "soap-wsdl" and "WSDL file not found" in caught.value.message


def test_check_and_send_fetch_nothing_over_the_network(
    simulator: ProcurementSimulator, make_artifact: MakeArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    gets: list[str] = []
    real_request = requests.Session.request

    def recording(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if method.upper() != "POST":
            gets.append(f"{method} {url}")
        return real_request(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", recording)
    endpoint = procurement(simulator)
    endpoint.check()
    endpoint.send(make_artifact())
    endpoint.close()
    assert gets == []


def test_a_send_tried_before_a_crash_is_looked_up_first_and_not_submitted_again(
    endpoint: ProcurementOutbound, simulator: ProcurementSimulator, make_artifact: MakeArtifact,
) -> None:
    # Given a DECP the platform received, though the bus died before recording it
    artifact = make_artifact()
    first = endpoint.send(artifact)
    # When the runtime tries it again, marked as tried before
    again = endpoint.send(dataclasses.replace(artifact, meta={"attempted": True}))
    # Then the platform is asked first and the submission followed, never submitted twice
    assert again.remote_id == first.remote_id and "not resent" in again.detail
    assert calls(simulator, "SubmitDecp") == 1 and calls(simulator, "FindSubmission") == 1
