"""Every Prometheus metric of Hent, defined once.

Labels are bounded: route, connector, outcome, stage, state, queue — names from the
configuration or fixed vocabularies, never a file name or a document id.
"""

from __future__ import annotations

__all__ = [
    "DOCUMENTS",
    "STAGE_SECONDS",
    "END_TO_END_SECONDS",
    "ACKNOWLEDGMENT_SECONDS",
    "LEDGER_DOCUMENTS",
    "LEDGER_DELIVERIES",
    "DEAD_LETTERS",
    "POLL_FAILURES",
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
    "stage_timer",
]

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

DOCUMENTS = Counter(
    "hent_documents",
    "Documents that reached a final document state, by route and outcome (routed, failed).",
    ["route", "outcome"],
    registry=REGISTRY,
)
STAGE_SECONDS = Histogram(
    "hent_stage_duration_seconds",
    "Time spent in each stage of the pipeline (ingest, prepare: map + build + validate + pack, send, reply).",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
END_TO_END_SECONDS = Histogram(
    "hent_end_to_end_seconds",
    "From pickup at the source to the final state of a delivery (delivered, acknowledged...).",
    ["route", "outcome"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 7 * 24 * 3600),
    registry=REGISTRY,
)
ACKNOWLEDGMENT_SECONDS = Histogram(
    "hent_acknowledgment_seconds",
    "From SENT to the platform's answer (acknowledged, rejected), by route.",
    ["route", "outcome"],
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600),
    registry=REGISTRY,
)
LEDGER_DOCUMENTS = Gauge(
    "hent_ledger_documents", "Documents in the ledger by state.", ["state"], registry=REGISTRY
)
LEDGER_DELIVERIES = Gauge(
    "hent_ledger_deliveries", "Deliveries in the ledger by state.", ["state"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "hent_dead_letters",
    "Deliveries and documents moved to FAILED, by route and connector.",
    ["route", "connector"],
    registry=REGISTRY,
)
POLL_FAILURES = Counter(
    "hent_poll_failures", "Failed polls of a source connector.", ["connector"], registry=REGISTRY
)
PLATFORM_WAITING = Gauge(
    "hent_platform_waiting_deliveries",
    "Deliveries a platform holds until a person acts (S2LOW 17: to be posted, 18: to be signed).",
    ["connector", "waiting"],
    registry=REGISTRY,
)
LETTERS_OPEN = Gauge(
    "hent_prefecture_letters_open",
    "Letters of the préfecture (2-1, 3-1, 4-1) not answered yet, by code and age (0-7d, 7-30d, 30d+).",
    ["code", "age"],
    registry=REGISTRY,
)
CERTIFICATE_EXPIRY = Gauge(
    "hent_certificate_expiry_timestamp_seconds",
    "When each client certificate an endpoint presents expires (Unix time), by connector and the SIRENs "
    "it acts for ('default': the connector's own).",
    ["connector", "sirens"],
    registry=REGISTRY,
)
UNMATCHED_ANSWERS = Counter(
    "hent_unmatched_answers",
    "Answer files an endpoint left that matched no delivery or could not be read (set aside in error/).",
    ["connector"],
    registry=REGISTRY,
)
SEND_FAILURES = Counter(
    "hent_send_failures",
    "Failed sends to an endpoint, by connector and kind (transient, document).",
    ["connector", "kind"],
    registry=REGISTRY,
)
CIRCUIT_STATE = Gauge(
    "hent_endpoint_circuit_state",
    "Circuit of each endpoint: 0 closed, 1 open, 2 half-open.",
    ["connector"],
    registry=REGISTRY,
)
SOURCE_PAUSED = Gauge(
    "hent_source_paused",
    "1 while a source takes no new documents because its routes' backlog reached max_backlog.",
    ["connector"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "hent_backbone_queue_depth", "Messages waiting in each backbone queue.", ["queue"], registry=REGISTRY
)
BUILD_INFO = Info("hent_build", "Version of Hent and of the Python running it.", registry=REGISTRY)

try:
    _version = metadata.version("hent")
except metadata.PackageNotFoundError:  # running from a checkout that was not installed
    _version = "0+unknown"
BUILD_INFO.info({"version": _version, "python": platform.python_version()})


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Observe the duration of a pipeline stage."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(stage=stage).observe(time.perf_counter() - start)
