"""``/metrics``, ``/healthz`` and ``/readyz`` hold no personal data and listen on loopback by default.

A bus is run on acts whose objet, numbers, file names and the names of the people who wrote them
are distinctive, one of them failing; then every endpoint is scraped over real HTTP and searched
for any of those strings, the spool's path and the ledger's ids, in label values and in bodies.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bus.config import MetricsSettings, load_config
from bus.health import HealthServer
from bus.runtime import Runtime
from routes.pipeline import Pipeline
from simulators.backoffice import drop_contract, drop_deliberation, drop_hr_decision
from tests.harness import write_config

#: what the acts carry that must never leave the bus through these endpoints
OBJETS = {
    "deliberation": "Cession de la parcelle ZQ 4242 au profit de M. Quillivic-Privacy",
    "hr": "Nomination de Mme Zephyrine Quelennec au grade d'attachee principale",
    "contract": "Marche de maintenance Kerprivacy des chaudieres du groupe scolaire",
}
NUMEROS = {"deliberation": "DELZQ4242", "hr": "ARZQ0913", "contract": "MARZQ0077", "failed": "_ZQFAIL_"}
#: the people the vendors' exports name (simulators/backoffice.py), and their addresses
PEOPLE = (
    "Maëlle Le Goff",
    "Le Goff",
    "m.legoff@saint-herblain.fr",
    "Gaëlle Riou",
    "Riou",
    "g.riou@saint-herblain.fr",
    "Yann Kervella",
    "Kervella",
    "004512",
)


@dataclass
class Scraped:
    bodies: dict[str, str]  #: path → body
    labels: set[str]  #: every label value of /metrics
    forbidden: set[str]


def get(base_url: str, path: str) -> str:
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return str(error.read().decode())


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """Given a bus that routed a deliberation, an HR decision and a contract, and failed a fourth act."""
    tmp = tmp_path_factory.mktemp("privacy")
    config = load_config(write_config(tmp, metrics=True))
    drop = tmp / "drop"
    today = date.today()
    bundles = [
        drop_deliberation(
            drop / "deliberations",
            NUMEROS["deliberation"],
            decision=today - timedelta(days=3),
            objet=OBJETS["deliberation"],
        ),
        drop_hr_decision(drop / "rh", NUMEROS["hr"], decision=today - timedelta(days=2), objet=OBJETS["hr"]),
        drop_contract(
            drop / "finances", NUMEROS["contract"], signed=today - timedelta(days=4), objet=OBJETS["contract"]
        ),
        drop_deliberation(
            drop / "deliberations",
            NUMEROS["failed"],
            decision=today - timedelta(days=1),
            objet=OBJETS["deliberation"] + " (refused)",
        ),
    ]
    files = {path.name for bundle in bundles for path in bundle.parent.iterdir()}
    runtime = Runtime(config, Pipeline.for_runtime)
    consumer = threading.Thread(target=runtime.consume, name="privacy-consumer", daemon=True)
    try:
        runtime.start()
        consumer.start()
        wait_for(lambda: len(runtime.ledger.documents()) == 4 and runtime.is_idle())
        assert runtime._http is not None
        host, port = runtime._http.address[:2]
        assert isinstance(host, str)
        base_url = f"http://{host}:{port}"
        ledger = runtime.ledger
        documents = ledger.documents()
        deliveries = [d for document in documents for d in ledger.deliveries_of(document.id)]
        assert {str(d.state) for d in documents} == {"ROUTED", "FAILED"}
        bodies = {path: get(base_url, path) for path in ("/metrics", "/healthz", "/readyz")}
        labels = {
            value
            for family in text_string_to_metric_families(bodies["/metrics"])
            for sample in family.samples
            for value in sample.labels.values()
        }
        forbidden = {
            *OBJETS.values(),
            *(o.split(" ", 1)[1] for o in OBJETS.values()),
            "Quillivic",
            "Quelennec",
            "Kerprivacy",
            *NUMEROS.values(),
            *files,
            *PEOPLE,
            str(config.bus.spool),
            *(d.id for d in documents),
            *(d.bundle for d in documents),
            *(d.id_acte for d in documents if d.id_acte),
            *(x.id for x in deliveries),
            *(x.artifact_name for x in deliveries if x.artifact_name),
        }
        yield Scraped(bodies, labels, forbidden)
    finally:
        runtime.stop_event.set()
        if consumer.is_alive():
            consumer.join(timeout=10)
        runtime.shutdown()


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
def test_no_objet_number_file_name_person_or_spool_path_appears_in_a_body(scraped: Scraped, path: str) -> None:
    body = scraped.bodies[path]
    assert body  # scraped
    found = sorted(text for text in scraped.forbidden if text and text in body)
    assert found == [], f"{path} gives away {found}"


def test_no_label_value_holds_personal_data(scraped: Scraped) -> None:
    assert scraped.labels  # the bus counted something
    found = sorted({text for value in scraped.labels for text in scraped.forbidden if text and text in value})
    assert found == []


def test_labels_hold_names_and_fixed_words_not_sentences_paths_or_file_names(scraped: Scraped) -> None:
    odd = {
        value
        for value in scraped.labels
        if " " in value or "/" in value or "\\" in value or value.lower().endswith(_FILE_TYPES)
    }
    assert odd == set(), odd


_FILE_TYPES = (".json", ".csv", ".xml", ".pdf", ".gz", ".tar", ".zip")


def test_the_metrics_and_health_server_listens_on_loopback_when_no_address_is_configured(tmp_path: Path) -> None:
    # Given a configuration that says nothing of bus.metrics
    config_file = write_config(tmp_path)
    document = yaml.safe_load(config_file.read_text())
    del document["bus"]["metrics"]
    config_file.write_text(yaml.safe_dump(document))
    config = load_config(config_file)

    # Then the address is loopback, and so is a listen address given as a port alone
    assert config.bus.metrics.listen == MetricsSettings().listen == "127.0.0.1:9464"
    for listen in (config.bus.metrics.listen.replace(":9464", ":0"), ":0"):
        server = HealthServer(listen, {}).start()
        try:
            assert server.address[0] == "127.0.0.1"
        finally:
            server.stop()
