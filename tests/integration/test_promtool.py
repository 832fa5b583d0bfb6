"""Prometheus' own promtool on what Hent gives it: a running bus's /metrics, the alert rules and their
unit tests, the scrape configuration.

The bus runs the demo's configuration (config/demo.yaml: three drop folders, the legality
platform's SOAP simulator, a folder of archives) on the demo's bundles, its first send refused
once, until every delivery is final, so that the labelled series exist when it is scraped.
promtool comes with Debian's ``prometheus`` package: without it the tests are skipped, or failed
when HENT_REQUIRE_PROMTOOL=1 (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bus.config import load_config
from bus.metrics import SERIES
from bus.runtime import RetryPolicy, Runtime
from routes.pipeline import Pipeline
from simulators.demo import DEMO_CONFIG, drop_demo_bundles
from simulators.legality import LegalitySimulator
from tests.unit.test_grafana_dashboard import expressions, load, problems, read_promql

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
#: what the demo's flow leaves in the ledger and the counters: each of these series has samples
FLOW_SERIES = (
    "hent_documents_total", "hent_stage_duration_seconds_bucket", "hent_end_to_end_seconds_count",
    "hent_acknowledgment_seconds_sum", "hent_ledger_documents", "hent_ledger_deliveries",
    "hent_deliveries_awaiting_answer", "hent_prefecture_letters_open", "hent_dead_letters_total",
    "hent_send_failures_total", "hent_source_last_success_timestamp_seconds", "hent_platform_waiting_deliveries",
    "hent_endpoint_circuit_state", "hent_backbone_queue_depth", "hent_build_info",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    """The path of promtool; skipped when missing, failed under HENT_REQUIRE_PROMTOOL=1."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("HENT_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool not found and HENT_REQUIRE_PROMTOOL=1 (apt-get install prometheus)")
        pytest.skip("promtool not found (Debian: apt-get install prometheus)")
    return path


def run_promtool(promtool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], input=stdin, cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=120, check=False)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not reached within {timeout} s")


@dataclass
class Scrape:
    body: str

    def samples(self) -> dict[str, list[dict[str, str]]]:
        """Series name → the label sets of its samples."""
        found: dict[str, list[dict[str, str]]] = {}
        for family in text_string_to_metric_families(self.body):
            for sample in family.samples:
                found.setdefault(sample.name, []).append(dict(sample.labels))
        return found

    def declared(self) -> set[str]:
        """Every series name the exposition declares (``# TYPE``), whether it has samples yet or not."""
        names = set()
        for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", self.body, re.MULTILINE):
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
        return names


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """/metrics of a bus that carried the demo's bundles: three acts acknowledged, one failed."""
    workspace = tmp_path_factory.mktemp("promtool")
    with LegalitySimulator(ack_delay=0.2) as platform, pytest.MonkeyPatch.context() as env:
        env.setenv("HENT_DEMO_WORKSPACE", str(workspace))
        env.setenv("HENT_DEMO_LEGALITY_URL", platform.url)
        platform.inject("http500", operation="SubmitArchive", count=1)  # a send failure, retried
        drop_demo_bundles(workspace)
        runtime = Runtime(load_config(DEMO_CONFIG), Pipeline.for_runtime, retry=RetryPolicy(first_delay=0.2))
        consumer = threading.Thread(target=runtime.consume, name="promtool-consumer", daemon=True)
        try:
            runtime.start()
            consumer.start()
            wait_for(runtime.is_idle)
            assert runtime._http is not None  # the bound port: kept in a private attribute only
            host, port = runtime._http.address[:2]
            assert isinstance(host, str)

            def body() -> str:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
                    return str(response.read().decode())

            # the gauges computed at each sweep, once the last answers came back
            wait_for(lambda: 'hent_ledger_documents{state="ROUTED"} 3.0' in body()
                     and 'hent_deliveries_awaiting_answer{age="0-1h",connector="prefecture"} 0.0' in body())
            yield Scrape(body())
        finally:
            runtime.stop_event.set()
            if consumer.is_alive():
                consumer.join(timeout=10)
            runtime.shutdown()


def test_promtool_finds_nothing_to_say_about_a_running_bus_metrics(promtool: str, scrape: Scrape) -> None:
    # Given the scrape of a bus that carried acts, When promtool lints it
    result = run_promtool(promtool, "check", "metrics", stdin=scrape.body)

    # Then it finds nothing: names, units, types, help texts follow Prometheus' conventions
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_series_served_are_those_bus_metrics_defines_with_their_labels(scrape: Scrape) -> None:
    samples = scrape.samples()

    assert scrape.declared() == set(SERIES)
    for name, label_sets in samples.items():
        for labels in label_sets:
            assert set(labels) == set(SERIES[name]), (name, labels)
    assert [name for name in FLOW_SERIES if not samples.get(name)] == []
    assert not any(name.endswith("_created") for name in scrape.declared())


def test_the_alert_rules_pass_promtool_and_their_unit_tests(promtool: str) -> None:
    # Given deploy/prometheus, When promtool checks the rules, the scrape configuration and runs the unit tests
    checked = run_promtool(promtool, "check", "rules", "alerts.yml")
    configured = run_promtool(promtool, "check", "config", "prometheus.yml")
    tested = run_promtool(promtool, "test", "rules", "alerts_test.yml")

    # Then all pass
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert configured.returncode == 0, configured.stdout + configured.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_each_alert_waits_has_a_severity_says_what_to_do_and_is_unit_tested() -> None:
    rules = [rule for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))["groups"]
             for rule in group["rules"]]
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]

    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        # fires in one case, stays silent in another
        assert {bool(c["exp_alerts"]) for c in cases if c["alertname"] == rule["alert"]} == {True, False}, rule["alert"]


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_the_alerts_and_the_dashboard_query_series_the_running_bus_serves(source: str, scrape: Scrape) -> None:
    # Given the expressions of the alert rules or of the dashboard
    if source == "alerts":
        groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))["groups"]
        queries = [(rule["alert"], rule["expr"]) for group in groups for rule in group["rules"]]
    else:
        queries = expressions(load())

    # Then each selects series the bus serves, by labels they have (Prometheus' own `up` aside)
    served = scrape.declared()
    for where, expr in queries:
        assert problems(expr, also=frozenset({"up"})) == [], f"{where}: {expr}"
        missing = {series for series, _ in read_promql(expr).selectors} - served - {"up"}
        assert missing == set(), f"{where}: {sorted(missing)} not served"
