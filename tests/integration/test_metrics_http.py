"""``/metrics``, ``/healthz`` and ``/readyz`` of a running bus, over real HTTP on 127.0.0.1.

A runtime is started on a small configuration (a drop folder, a deposit folder), fed a good
deliberation and a broken one, and scraped as Prometheus would.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus import metrics
from bus.answers import ANSWER_AGES, awaiting_answer_metric
from bus.config import load_config
from bus.runtime import Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_deliberation

REPO = Path(__file__).resolve().parents[2]
ROUTE = "metrics-deliberations"  # a route name no other test uses: the registry is per process
SOURCE, ENDPOINT = "seances", "depot"

CONFIG = """\
bus:
  state_dir: {tmp}/var
  metrics: {{listen: "127.0.0.1:0"}}
  lease: 30s
  sweep: 1s
collectivites:
  - {{siren: "214400152", departement: "044", arrondissement: 1, nature: "31",
     classification_date: 2025-01-15, return_emails: [actes@saint-herblain.fr]}}
connectors:
  {source}:
    type: folder
    path: {tmp}/drop
    pattern: "*.json"
    poll: 0.2s
    ready: {{min_age: 0s, stable: false}}
  {endpoint}:
    type: folder
    path: {tmp}/out
    create: {create}
    trigram: HNT
    quadrigram: TACT
routes:
  - name: {route}
    from: {source}
    map: {repo}/config/mappings/deliberations-json.yaml
    to: {endpoint}
"""


@dataclass
class Running:
    runtime: Runtime
    base_url: str
    tmp: Path
    bundles: list[str]

    def get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of a GET, whatever the status."""
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=10) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers["Content-Type"], error.read().decode()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of ``/metrics``, parsed by prometheus_client: (name, labels) → value."""
        status, _, body = self.get("/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }


def write_config(tmp: Path, *, create: bool) -> Path:
    config_file = tmp / "hent.yaml"
    config_file.write_text(
        CONFIG.format(tmp=tmp, repo=REPO, route=ROUTE, source=SOURCE, endpoint=ENDPOINT, create=str(create).lower()),
        encoding="utf-8",
    )
    return config_file


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s")


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A runtime serving HTTP, after it routed a good deliberation and failed a broken one."""
    tmp = tmp_path_factory.mktemp("metrics")
    today = date.today()
    good = drop_deliberation(tmp / "drop", "DEL2026_777", decision=today - timedelta(days=2))
    broken = drop_deliberation(tmp / "drop", "_B_", decision=today - timedelta(days=1))
    (tmp / "out").mkdir()
    runtime = Runtime(load_config(write_config(tmp, create=False)), Pipeline.for_runtime)
    consumer = threading.Thread(target=runtime.consume, name="test-consumer", daemon=True)
    try:
        runtime.start()
        consumer.start()
        wait_for(lambda: runtime.is_idle() and runtime.is_idle())
        # the only way to learn the bound port: HealthServer.address, kept in a private attribute
        assert runtime._http is not None
        host, port = runtime._http.address[:2]
        yield Running(runtime, f"http://{host}:{port}", tmp, [good.name, broken.name])
    finally:
        runtime.stop_event.set()
        if consumer.is_alive():
            consumer.join(timeout=10)
        runtime.shutdown()


def test_metrics_count_the_documents_by_route_and_outcome(running: Running) -> None:
    # Given the bus routed one deliberation and failed one
    # When /metrics is scraped
    status, content_type, _ = running.get("/metrics")
    samples = running.samples()

    # Then it is Prometheus text, and the documents are counted by route and outcome
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    assert samples[("hent_documents_total", (("outcome", "routed"), ("route", ROUTE)))] == 1.0
    # a document that fails before it is mapped has no route yet
    assert samples[("hent_documents_total", (("outcome", "failed"), ("route", "none")))] >= 1.0
    assert samples[("hent_dead_letters_total", (("connector", SOURCE), ("route", "none")))] == 1.0


def test_metrics_time_each_stage_and_the_end_to_end_latency(running: Running) -> None:
    samples = running.samples()

    stages = {dict(labels)["stage"] for (name, labels) in samples if name == "hent_stage_duration_seconds_count"}
    assert {"ingest", "prepare", "send", "reply"} <= stages
    for stage in ("ingest", "prepare", "send", "reply"):
        assert samples[("hent_stage_duration_seconds_count", (("stage", stage),))] >= 1.0
        assert ("hent_stage_duration_seconds_bucket", (("le", "+Inf"), ("stage", stage))) in samples
    assert samples[("hent_end_to_end_seconds_count", (("outcome", "delivered"), ("route", ROUTE)))] == 1.0


def test_metrics_gauge_the_ledger_by_state(running: Running) -> None:
    # Given the sweeper refreshed the gauges after the work was done
    def gauges() -> dict[str, float]:
        return {
            dict(labels)["state"]: value
            for (name, labels), value in running.samples().items()
            if name == "hent_ledger_documents"
        }

    wait_for(lambda: gauges().get("ROUTED") == 1.0 and gauges().get("FAILED") == 1.0)

    # Then every document state is there, the empty ones at 0
    assert gauges() == {"RECEIVED": 0.0, "PREPARED": 0.0, "ROUTED": 1.0, "FAILED": 1.0}
    samples = running.samples()
    assert samples[("hent_ledger_deliveries", (("state", "DELIVERED"),))] == 1.0
    assert samples[("hent_ledger_deliveries", (("state", "PENDING"),))] == 0.0
    assert samples[("hent_endpoint_circuit_state", (("connector", ENDPOINT),))] == 0.0


def test_metrics_say_when_each_source_was_last_polled_successfully(running: Running) -> None:
    # Given the bus polls its drop folder every 0.2 s
    # When /metrics is scraped
    last = running.samples()[("hent_source_last_success_timestamp_seconds", (("connector", SOURCE),))]

    # Then the last successful poll is a Unix time of a moment ago
    assert time.time() - 30 < last <= time.time()


def test_metrics_count_sent_deliveries_awaiting_an_answer_by_endpoint_and_age() -> None:
    # Given SENT deliveries of two platforms sent 10 minutes, 5 hours and 3 days ago, and a folder endpoint
    now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

    @dataclass
    class Sent:
        endpoint: str
        updated_at: datetime

    class Ledger:
        def deliveries(self, *, state: str) -> list[Sent]:
            assert state == "SENT"
            return [Sent("metrics-platform", now - timedelta(minutes=10)),
                    Sent("metrics-platform", now - timedelta(hours=5)),
                    Sent("metrics-platform", now - timedelta(hours=7)),
                    Sent("metrics-tdt", now - timedelta(days=3))]

    # When the sweep computes the gauge
    awaiting_answer_metric(Ledger(), {"metrics-folder": object()}, now)  # type: ignore[dict-item]

    # Then each platform's deliveries are counted by age, every bucket present; a folder has none
    def gauge(connector: str) -> dict[str, float | None]:
        return {label: metrics.REGISTRY.get_sample_value("hent_deliveries_awaiting_answer",
                                                         {"connector": connector, "age": label})
                for _, label in ANSWER_AGES}

    assert gauge("metrics-platform") == {"0-1h": 1.0, "1-4h": 0.0, "4-24h": 2.0, "1-7d": 0.0, "7d+": 0.0}
    assert gauge("metrics-tdt") == {"0-1h": 0.0, "1-4h": 0.0, "4-24h": 0.0, "1-7d": 1.0, "7d+": 0.0}
    assert set(gauge("metrics-folder").values()) == {None}


def test_metrics_carry_the_build_info(running: Running) -> None:
    samples = running.samples()

    (labels,) = [dict(labels) for (name, labels) in samples if name == "hent_build_info"]
    assert set(labels) == {"version", "python"}
    assert labels["version"]


def test_no_label_value_is_a_file_name_a_path_or_a_document_id(running: Running) -> None:
    # Given what the ledger knows of the two documents
    ledger = running.runtime.ledger
    documents = ledger.documents()
    forbidden = {
        *running.bundles,
        *(Path(name).stem for name in running.bundles),
        *(d.id for d in documents),
        *(delivery.id for d in documents for delivery in ledger.deliveries_of(d.id)),
        *(x.artifact_name for d in documents for x in ledger.deliveries_of(d.id) if x.artifact_name),
        *(d.id_acte for d in documents if d.id_acte),
        str(running.tmp),
    }
    assert len(documents) == 2

    # When /metrics is scraped
    _, _, body = running.get("/metrics")
    label_values = {
        value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        for value in sample.labels.values()
    }

    # Then none of them appears, neither as a label value nor anywhere in the exposition
    for text in forbidden:
        assert text not in body, text
    assert not any(text in value for value in label_values for text in forbidden)


def test_healthz_says_ok(running: Running) -> None:
    assert running.get("/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_an_unknown_path_is_404(running: Running) -> None:
    status, _, _ = running.get("/nothing-here")
    assert status == 404


def test_readyz_checks_the_ledger_the_broker_and_each_connector_then_fails_without_the_endpoint(
    running: Running,
) -> None:
    # Given the running bus, When /readyz is asked
    status, content_type, body = running.get("/readyz")

    # Then it is ready, with one check for the ledger, the broker and each connector
    assert (status, content_type) == (200, "application/json"), body
    answer = json.loads(body)
    assert answer["ready"] is True
    assert set(answer["checks"]) == {"ledger", "broker", f"connector:{SOURCE}", f"connector:{ENDPOINT}",
                                     f"circuit:{ENDPOINT}"}
    assert answer["checks"][f"circuit:{ENDPOINT}"] == {"ok": True, "detail": "circuit closed"}
    assert all(check["ok"] for check in answer["checks"].values())
    assert answer["checks"][f"connector:{ENDPOINT}"]["detail"] == str(running.tmp / "out")

    # When the deposit folder disappears
    shutil.rmtree(running.tmp / "out")
    status, _, body = running.get("/readyz")

    # Then the bus is not ready, and says which check failed
    assert status == 503
    answer = json.loads(body)
    assert answer["ready"] is False
    assert {name for name, check in answer["checks"].items() if not check["ok"]} == {f"connector:{ENDPOINT}"}


def test_readyz_is_ready_before_the_first_send_creates_the_deposit_folder(tmp_path: Path) -> None:
    # Given a fresh bus whose deposit folder does not exist yet, with create: true
    (tmp_path / "drop").mkdir()
    runtime = Runtime(load_config(write_config(tmp_path, create=True)), Pipeline.for_runtime)
    try:
        runtime.start()
        assert runtime._http is not None
        host, port = runtime._http.address[:2]
        fresh = Running(runtime, f"http://{host}:{port}", tmp_path, [])

        # When /readyz is asked
        status, _, body = fresh.get("/readyz")
    finally:
        runtime.shutdown()

    # Then it is ready: the folder will be created when the first archive is written
    assert status == 200, body
