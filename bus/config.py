"""The configuration's typed models, and :func:`load_config`, which reports every error at once.

The YAML has four sections: ``bus`` (:class:`BusSettings`), ``collectivites``
(:class:`CollectiviteConfig`), ``connectors`` (name → the connector's own model, a
:class:`ConnectorConfig` subclass found through :mod:`bus.registry`) and ``routes``
(:class:`RouteConfig`).  Every model forbids unknown keys.

Relative paths (``state_dir``, ``spool``, a ``sqlite:///`` URL, a route's ``map``, a
classification file, and any field typed :data:`ConfigPath`) are resolved against the
directory of the *main* configuration file, whichever file they are written in.

A connector's model is chosen by where routes use it: named in a ``from`` it is validated
against ``connectors/<type>_inbound.py``'s ``Connector.Config``, in a ``to`` against the
outbound one, in both against both (so it may only hold keys both accept); used by no
route, against the inbound model if the type has one, else the outbound one.

The value types (:data:`Duration`, :data:`Schedule`, :data:`ConfigPath`...) are defined in
:mod:`bus.config_types` and :func:`load_config` in :mod:`bus.config_load`; import them from here.
"""

from __future__ import annotations

__all__ = [
    "BusSettings",
    "CollectiviteConfig",
    "Config",
    "ConfigPath",
    "ConnectorConfig",
    "EndpointConfig",
    "Duration",
    "ExistingFile",
    "CircuitSettings",
    "MetricsSettings",
    "RetrySettings",
    "RouteCondition",
    "RouteConfig",
    "Schedule",
    "load_config",
    "parse_duration",
    "parse_schedule",
]

import os
import socket
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    SerializeAsAny,
    ValidationInfo,
    model_validator,
)

from bus.config_load import load_config
from bus.config_types import (
    ConfigPath,
    Duration,
    ExistingFile,
    Schedule,
    _act_nature,
    _departement,
    _email,
    _Listed,
    _matiere,
    _nature,
    _resolve_url,
    _siren,
    parse_duration,
    parse_schedule,
)
from bus.secrets import redact


class _Redacted(BaseModel):
    """repr and str pass through :func:`bus.secrets.redact`: no URL password, no secret."""

    def __repr__(self) -> str:
        return redact(super().__repr__())

    def __str__(self) -> str:
        return redact(super().__str__())


class MetricsSettings(BaseModel):
    """Where Prometheus scrapes ``/metrics``, ``/healthz`` and ``/readyz``."""

    model_config = ConfigDict(extra="forbid")

    listen: str = Field(
        default="127.0.0.1:9464", pattern=r"^.*:\d{1,5}$", description="host:port to serve on."
    )
    enabled: bool = Field(default=True, description="Serve the metrics and health endpoints.")


class RetrySettings(BaseModel):
    """``retry:`` of an endpoint (or ``bus.retry`` for all): transient failures are tried again after
    an exponential back-off with jitter, until ``max_attempts`` or ``max_age``; then the delivery is
    a dead letter (FAILED, ``run_bus.py failed`` / ``replay``).  Document errors are never retried."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(8, ge=1, le=1000, description="Tries in all, the first included.")
    first_delay: Duration = Field(2.0, ge=0, description="Wait before the second try; doubled at each one.")
    max_delay: Duration = Field(300.0, gt=0, description="The longest wait between two tries.")
    max_age: Duration | None = Field(
        None, gt=0, description="Give up once the delivery is this old (e.g. 2d), whatever its attempts.")
    jitter: float = Field(0.2, ge=0, le=1, description="Each wait is drawn in ±jitter of it (0: exact), "
                          "so that deliveries failed together do not come back together.")


class CircuitSettings(BaseModel):
    """``circuit:`` of an endpoint (or ``bus.circuit``): after ``threshold`` transient failures in a row
    nothing is sent to it for ``cooldown``; then one trial (half-open) closes it again or reopens it."""

    model_config = ConfigDict(extra="forbid")

    threshold: int = Field(5, ge=1, description="Consecutive transient failures that open the circuit.")
    cooldown: Duration = Field(30.0, gt=0, description="How long it stays open before a trial.")


class BusSettings(_Redacted):
    """The ``bus:`` section: where the runtime keeps its state and how it behaves."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    state_dir: ConfigPath = Field(
        default=Path("var/hent"), description="Folder of the embedded broker, ledger and spool."
    )
    broker: str = Field(
        default="", description="kombu URL (default sqla+sqlite:///<state_dir>/broker.db; amqp://...)."
    )
    ledger: str = Field(
        default="", description="SQLAlchemy URL (default sqlite:///<state_dir>/ledger.db; postgresql://...)."
    )
    spool: ConfigPath = Field(
        default=Path("spool"), description="Folder of the payloads (default <state_dir>/spool)."
    )
    metrics: MetricsSettings = Field(default_factory=lambda: MetricsSettings(), description="Prometheus.")
    retry: RetrySettings = Field(default_factory=lambda: RetrySettings(),
                                 description="Retries of every endpoint that has no retry: of its own.")
    circuit: CircuitSettings = Field(default_factory=lambda: CircuitSettings(),
                                     description="Circuit breaker of every endpoint that has no circuit: of its own.")
    text_policy: Literal["transliterate", "fail"] = Field(
        default="transliterate",
        description="Characters outside ISO-8859-1: transliterate them, or fail the document.",
    )
    lease: Duration = Field(
        default=60.0, description="How long a worker owns a source or a document before others may."
    )
    sweep: Duration = Field(default=30.0, description="How often work whose lease expired is re-published.")
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="Name of this worker in leases and the journal (default hostname-pid).",
    )
    shutdown_timeout: Duration = Field(default=10.0, description="How long a stop waits for work.")
    answers: Duration = Field(
        default=30.0, description="How often endpoints that answer later are asked about SENT deliveries."
    )
    follow_ups: Duration = Field(
        default=600.0, description="How often acknowledged acts are asked for the préfecture's later messages."
    )
    classification: Schedule = Field(
        default="0 6 * * *",
        description="When the classification (7-1) of each SIREN is asked of answering endpoints (cron or duration).",
    )
    workers: int = Field(
        default=2, ge=1, le=64,
        description="Consumer threads of this process: documents and deliveries handled at once.",
    )
    processes: int = Field(
        default=1, ge=1, le=64,
        description="Processes `run` uses on this machine: itself and processes - 1 worker processes it starts, "
        "watches and stops (Python code runs on one core per process: set it to the machine's cores). Worker n "
        "serves its metrics on the metrics port + n.",
    )
    prefetch: int = Field(
        default=1, ge=1, le=1000,
        description="Messages a consumer thread takes from each queue before it acknowledges one (RabbitMQ).",
    )

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> BusSettings:
        base = (info.context or {}).get("base_dir")
        if "spool" not in self.model_fields_set:
            self.spool = self.state_dir / "spool"
        self.broker = _resolve_url(self.broker, base) or f"sqla+sqlite:///{self.state_dir}/broker.db"
        self.ledger = _resolve_url(self.ledger, base) or f"sqlite:///{self.state_dir}/ledger.db"
        return self


class CollectiviteConfig(BaseModel):
    """One ``collectivites:`` entry: who sends, as the ACTES envelope names it."""

    model_config = ConfigDict(extra="forbid")

    siren: Annotated[str, PlainValidator(_siren)] = Field(..., description="SIREN, 9 digits (quote it).")
    departement: Annotated[str, PlainValidator(_departement)] = Field(
        ..., description='Département code, 3 characters: "034", "02A", "974".'
    )
    arrondissement: int = Field(..., ge=0, le=9, description="Arrondissement, one digit.")
    nature: Annotated[str, PlainValidator(_nature)] = Field(
        ..., description='Nature of the collectivité (IDCL/@Nature), 2 digits: "31" commune...'
    )
    return_emails: list[Annotated[str, AfterValidator(_email)]] = Field(
        default_factory=list, description="E-mail addresses the prefecture answers to (AdressesRetour)."
    )
    classification: ExistingFile | None = Field(
        default=None, description="A RetourClassification (message 7-2) file to check matières against."
    )
    classification_date: date | None = Field(
        default=None, description="ClassificationDateVersion used when an act does not carry one."
    )


class ConnectorConfig(_Redacted):
    """Base of every connector's model (``Connector.Config``), in the connector's module."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    type: str = Field(..., description="The protocol: folder, sftp, soap, database, s2low, pastell, procurement.")
    description: str = Field(default="", description="Free text for the people who run the bus.")


class EndpointConfig(ConnectorConfig):
    """Base of every endpoint's model (a connector used in a route's ``to``)."""

    retry: RetrySettings | None = Field(None, description="Retries of transient failures (default: bus.retry).")
    circuit: CircuitSettings | None = Field(None, description="The circuit breaker (default: bus.circuit).")


class RouteCondition(BaseModel):
    """``when:``: every key given must match (a list means any of its values)."""

    model_config = ConfigDict(extra="forbid")

    nature: Annotated[list[Annotated[int, PlainValidator(_act_nature)]], _Listed] | None = Field(
        default=None, description="Nature of the act: 1..6 or its code (DE, AR, AI, CC, BF, AU)."
    )
    siren: Annotated[list[Annotated[str, PlainValidator(_siren)]], _Listed] | None = Field(
        default=None, description="SIREN of the collectivité."
    )
    matiere: Annotated[list[Annotated[str, PlainValidator(_matiere)]], _Listed] | None = Field(
        default=None, description='Matière code or its prefix: "3" matches 3, 3.2, 3.2.1.'
    )
    source: Annotated[list[str], _Listed] | None = Field(
        default=None, description="Name of the connector it came from."
    )
    montant_min: Decimal | None = Field(
        default=None, ge=0, description="DECP routes: the contract's amount (€ HT; a concession's valeur "
        "globale) is at least this much, e.g. 40000, the publication threshold."
    )


class RouteConfig(BaseModel):
    """One ``routes:`` entry: from which connectors, on which condition, built how, sent where."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(..., min_length=1, description="Unique name, in metrics and the journal.")
    from_: Annotated[list[str], _Listed] = Field(
        ..., alias="from", min_length=1, description="Inbound connector(s) the documents come from."
    )
    when: RouteCondition = Field(
        default_factory=lambda: RouteCondition(), description="Which documents take the route."
    )
    map: ExistingFile | None = Field(
        default=None, description="The vendor mapping (YAML or XSLT) to the canonical model."
    )
    transform: Literal["actes", "passthrough", "response", "decp"] = Field(
        default="actes",
        description="What to build: actes (an ACTES archive from the mapped act, `map` required), "
        "passthrough (the source's file relayed unchanged: no map, `when` on source only), response "
        "(the collectivité's answer to a letter of the préfecture, Hent's response bundle: no map) or decp "
        "(the contract's données essentielles, `map` to the canonical contract required).",
    )
    max_backlog: int | None = Field(
        default=None, ge=1, description="Back-pressure: its sources stop taking new documents while this many "
        "of its documents and deliveries wait (received and not routed, or not sent yet).")
    decp_format: Literal["xml", "json"] = Field(
        default="xml", description="decp routes: the DECP sent as XML (the 2.0.2 XSD) or JSON (the 2.0.3 "
        "JSON schema), to endpoints that take that format."
    )
    to: Annotated[list[str], _Listed] = Field(
        ..., min_length=1, description="Endpoint connector(s), one delivery each."
    )


class Config(_Redacted):
    """A whole configuration, as :func:`load_config` returns it."""

    model_config = ConfigDict(extra="forbid")

    bus: BusSettings = Field(default_factory=lambda: BusSettings(), description="Runtime settings.")
    collectivites: list[CollectiviteConfig] = Field(default_factory=list, description="Who sends.")
    connectors: dict[str, SerializeAsAny[ConnectorConfig]] = Field(
        default_factory=dict, description="Sources and endpoints by name."
    )
    routes: list[RouteConfig] = Field(default_factory=list, description="What goes where.")

    _source: Path | None = PrivateAttr(None)
    _files: tuple[Path, ...] = PrivateAttr(())
    _by_direction: dict[tuple[str, str], ConnectorConfig] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> Path | None:
        """The main configuration file, as given to :func:`load_config`."""
        return self._source

    @property
    def files(self) -> tuple[Path, ...]:
        """Every YAML file read (the main one first, then its includes)."""
        return self._files

    def connector_config(self, name: str, direction: str) -> ConnectorConfig:
        """The connector ``name`` validated against its ``direction`` model (``inbound``/``outbound``).

        Raises KeyError when no route uses it that way (a Config built by hand, not by
        :func:`load_config`, answers with ``connectors[name]``).
        """
        if (name, direction) in self._by_direction:
            return self._by_direction[(name, direction)]
        if not self._by_direction:
            return self.connectors[name]
        raise KeyError(f"connector '{name}' is not used as {direction}")

    def directions(self, name: str) -> frozenset[str]:
        """The sides it was validated for: where routes use it (``from``: inbound, ``to``:
        outbound), or its default side when no route does."""
        return frozenset(d for n, d in self._by_direction if n == name)

    def collectivite(self, siren: str) -> CollectiviteConfig | None:
        return next((c for c in self.collectivites if c.siren == siren), None)
