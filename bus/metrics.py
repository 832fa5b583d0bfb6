"""Every Prometheus metric of Hent, defined once.

Names follow Prometheus' conventions: the ``hent_`` prefix, ``_total`` on counters (added by the
client), base units spelt out (``_seconds``, ``_timestamp_seconds``, ``_bytes``).  Labels are
bounded: route, connector, outcome, stage, state, queue, kind, code, age, waiting, sirens — names
from the configuration or fixed vocabularies, never a file name, a document id or an objet.

:data:`SERIES` lists every series ``/metrics`` exposes with its label names (what the dashboard
and the alert rules may use: ``tests/unit/test_grafana_dashboard.py`` checks them against it).
No ``_created`` series: they would double the series for no use a dashboard has.
"""

from __future__ import annotations

__all__ = [
    "DOCUMENTS",
    "STAGE_SECONDS",
    "END_TO_END_SECONDS",
    "ACKNOWLEDGMENT_SECONDS",
    "LEDGER_DOCUMENTS",
    "LEDGER_DELIVERIES",
    "DELIVERIES_AWAITING_ANSWER",
    "DEAD_LETTERS",
    "BUNDLES_REFUSED",
    "POLL_FAILURES",
    "SOURCE_LAST_SUCCESS",
    "SEND_FAILURES",
    "UNMATCHED_ANSWERS",
    "PLATFORM_WAITING",
    "CERTIFICATE_EXPIRY",
    "LETTERS_OPEN",
    "CIRCUIT_STATE",
    "SOURCE_PAUSED",
    "QUEUE_DEPTH",
    "BUILD_INFO",
    "REGISTRY",
    "SERIES",
    "stage_timer",
]

import platform
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

disable_created_metrics()
REGISTRY = CollectorRegistry(auto_describe=True)
#: every series name ``/metrics`` exposes → its label names
SERIES: dict[str, tuple[str, ...]] = {}


def _counter(name: str, documentation: str, labels: Sequence[str]) -> Counter:
    SERIES[f"{name}_total"] = tuple(labels)
    return Counter(name, documentation, labels, registry=REGISTRY)


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> Gauge:
    SERIES[name] = tuple(labels)
    return Gauge(name, documentation, labels, registry=REGISTRY)


def _histogram(name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
    SERIES.update({f"{name}_bucket": (*labels, "le"), f"{name}_count": tuple(labels), f"{name}_sum": tuple(labels)})
    return Histogram(name, documentation, labels, buckets=buckets, registry=REGISTRY)


def _info(name: str, documentation: str, values: dict[str, str]) -> Info:
    SERIES[f"{name}_info"] = tuple(values)
    info = Info(name, documentation, registry=REGISTRY)
    info.info(values)
    return info


_MINUTE, _HOUR, _DAY = 60, 3600, 24 * 3600

# -- the flow ---------------------------------------------------------------------------
DOCUMENTS = _counter(
    "hent_documents",
    "Documents that reached a final document state, by route and outcome (routed, failed).",
    ["route", "outcome"],
)
STAGE_SECONDS = _histogram(
    "hent_stage_duration_seconds",
    "Time spent in each stage of the pipeline (ingest, prepare: map + build + validate + pack, send, reply).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
END_TO_END_SECONDS = _histogram(
    "hent_end_to_end_seconds",
    "From pickup at the source to the final state of a delivery, by route and outcome (delivered, "
    "acknowledged, rejected, failed).",
    ["route", "outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, _MINUTE, 5 * _MINUTE, 15 * _MINUTE, _HOUR, 4 * _HOUR, _DAY, 7 * _DAY),
)
ACKNOWLEDGMENT_SECONDS = _histogram(
    "hent_acknowledgment_seconds",
    "From SENT to the platform's answer, by route and outcome (acknowledged, rejected).",
    ["route", "outcome"],
    buckets=(1, 5, 15, _MINUTE, 5 * _MINUTE, 15 * _MINUTE, _HOUR, 4 * _HOUR, 12 * _HOUR, _DAY, 3 * _DAY, 7 * _DAY),
)

# -- the ledger (refreshed at each sweep, the same on every node) ---------------------------
LEDGER_DOCUMENTS = _gauge("hent_ledger_documents", "Documents in the ledger by state.", ["state"])
LEDGER_DELIVERIES = _gauge("hent_ledger_deliveries", "Deliveries in the ledger by state.", ["state"])
DELIVERIES_AWAITING_ANSWER = _gauge(
    "hent_deliveries_awaiting_answer",
    "Deliveries SENT and not answered yet (no acknowledgment, no anomaly), by endpoint and time since they "
    "were sent or last heard of (0-1h, 1-4h, 4-24h, 1-7d, 7d+).",
    ["connector", "age"],
)
LETTERS_OPEN = _gauge(
    "hent_prefecture_letters_open",
    "Letters of the préfecture (2-1, 3-1, 4-1) not answered yet, by code and age (0-7d, 7-30d, 30d+).",
    ["code", "age"],
)

# -- failures and dead letters ----------------------------------------------------------------
DEAD_LETTERS = _counter(
    "hent_dead_letters",
    "Deliveries and documents moved to FAILED, by route ('none': failed before it was routed) and connector.",
    ["route", "connector"],
)
BUNDLES_REFUSED = _counter(
    "hent_bundles_refused",
    "Bundles a source refused before taking them in, over one of its limits, by connector and rule "
    "(file-too-large, document-too-large, too-many-files): not in the ledger, given back to the software "
    "(error/ and a reply, or its row in error).",
    ["connector", "rule"],
)
POLL_FAILURES = _counter(
    "hent_poll_failures",
    "Failed polls of a source, or of an endpoint's answers, by connector.",
    ["connector"],
)
SOURCE_LAST_SUCCESS = _gauge(
    "hent_source_last_success_timestamp_seconds",
    "When the node holding each source last polled it successfully (Unix time; the time it took the "
    "source, until its first success).",
    ["connector"],
)
SEND_FAILURES = _counter(
    "hent_send_failures",
    "Failed sends to an endpoint, by connector and kind (transient, document, unexpected).",
    ["connector", "kind"],
)
UNMATCHED_ANSWERS = _counter(
    "hent_unmatched_answers",
    "Answer files an endpoint left that matched no delivery or could not be read (set aside in error/).",
    ["connector"],
)

# -- endpoints and sources --------------------------------------------------------------------
PLATFORM_WAITING = _gauge(
    "hent_platform_waiting_deliveries",
    "Deliveries a platform holds until a person acts, by connector and why (to-be-posted: S2LOW 17, or Pastell's "
    "TdT still to transmit it; to-be-signed: S2LOW 18).",
    ["connector", "waiting"],
)
CERTIFICATE_EXPIRY = _gauge(
    "hent_certificate_expiry_timestamp_seconds",
    "When each client certificate an endpoint presents expires (Unix time), by connector and the SIRENs "
    "it acts for ('default': the connector's own).",
    ["connector", "sirens"],
)
CIRCUIT_STATE = _gauge(
    "hent_endpoint_circuit_state",
    "Circuit of each endpoint: 0 closed, 1 open, 2 half-open.",
    ["connector"],
)
SOURCE_PAUSED = _gauge(
    "hent_source_paused",
    "1 while a source takes no new documents because its routes' backlog reached max_backlog.",
    ["connector"],
)
QUEUE_DEPTH = _gauge("hent_backbone_queue_depth", "Messages waiting in each backbone queue.", ["queue"])

try:
    _version = metadata.version("hent")
except metadata.PackageNotFoundError:  # running from a checkout that was not installed
    _version = "0+unknown"
BUILD_INFO = _info("hent_build", "Version of Hent and of the Python running it.",
                   {"version": _version, "python": platform.python_version()})


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Observe the duration of a pipeline stage."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=stage).observe(time.perf_counter() - start)
