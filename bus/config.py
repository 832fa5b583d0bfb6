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
"""

from __future__ import annotations

__all__ = [
    "BusSettings",
    "CollectiviteConfig",
    "Config",
    "ConfigPath",
    "ConnectorConfig",
    "Duration",
    "ExistingFile",
    "MetricsSettings",
    "RouteCondition",
    "RouteConfig",
    "Schedule",
    "load_config",
    "parse_duration",
    "parse_schedule",
]

import os
import re
import socket
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bus import registry
from bus.errors import ConfigError, Problem
from bus.secrets import redact
from bus.yamlconf import (
    MarkedDict,
    describe,
    format_path,
    interpolate,
    load_yaml,
    locate,
    validation_problems,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SQLITE_URL = re.compile(r"^((?:sqla\+)?sqlite(?:\+\w+)?:///)(?!/)(?!:memory:)(.+)$")


def parse_duration(value: Any) -> float:
    """``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1m30s"`` → seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if text and re.fullmatch(rf"(?:{_DURATION_PART.pattern}\s*)+", text):
            return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(text))
    raise PydanticCustomError(
        "duration",
        "invalid duration {got}: write a number of seconds or a value like 500ms, 30s, 5m, 1h",
        {"got": describe(value)},
    )


def parse_schedule(value: Any) -> float | str:
    """A duration → seconds (float); a five-field cron line → the line, checked by APScheduler."""
    if isinstance(value, str) and len(value.split()) > 1:
        fields = value.split()
        if len(fields) != 5:
            raise PydanticCustomError(
                "cron",
                "invalid cron line {got}: expected 5 fields (minute hour day month weekday), got {count}",
                {"got": describe(value), "count": len(fields)},
            )
        try:
            CronTrigger.from_crontab(" ".join(fields), timezone="UTC")
        except ValueError as exc:
            raise PydanticCustomError(
                "cron", "invalid cron line {got}: {reason}", {"got": describe(value), "reason": str(exc)}
            ) from None
        return " ".join(fields)
    try:
        seconds = parse_duration(value)
    except PydanticCustomError:
        raise PydanticCustomError(
            "schedule",
            'invalid schedule {got}: write a duration (30s, 5m) or a cron line ("*/5 * * * *")',
            {"got": describe(value)},
        ) from None
    if seconds <= 0:
        raise PydanticCustomError("schedule", "a poll interval must be more than 0 seconds", {})
    return seconds


#: seconds, written ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"``
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": r"^[0-9.smhd ]+$"}]}
    ),
]
#: a poll schedule: seconds (float) from a duration, or a five-field cron line (str)
Schedule = Annotated[
    float | str,
    PlainValidator(parse_schedule),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}]}),
]


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    return Path(base) / value if base is not None and not value.is_absolute() else value


def _must_exist(value: Path) -> Path:
    if not value.exists():
        raise PydanticCustomError("missing-file", "file not found: {path}", {"path": str(value)})
    return value


#: a path, relative ones resolved against the main configuration file's directory
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]
#: a :data:`ConfigPath` that must exist when the configuration is loaded
ExistingFile = Annotated[Path, AfterValidator(_resolve_path), AfterValidator(_must_exist)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _resolve_url(url: str, base: Any) -> str:
    match = _SQLITE_URL.match(url)
    if base is None or match is None:
        return url
    return f"{match.group(1)}{Path(base) / match.group(2)}"


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

    @model_validator(mode="after")
    def _defaults(self, info: ValidationInfo) -> BusSettings:
        base = (info.context or {}).get("base_dir")
        if "spool" not in self.model_fields_set:
            self.spool = self.state_dir / "spool"
        self.broker = _resolve_url(self.broker, base) or f"sqla+sqlite:///{self.state_dir}/broker.db"
        self.ledger = _resolve_url(self.ledger, base) or f"sqlite:///{self.state_dir}/ledger.db"
        return self


def _siren(value: Any) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{9}", text):
        raise PydanticCustomError("siren", "a SIREN is 9 digits, got {got}", {"got": describe(value)})
    return text


def _departement(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[09][0-9][AB0-9]", value):
        raise PydanticCustomError(
            "departement",
            'a département is a quoted 3-character code like "034", "02A" or "974", got {got}',
            {"got": describe(value)},
        )
    return value


def _nature(value: Any) -> str:
    text = f"{value:02d}" if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d{2}", text):
        raise PydanticCustomError(
            "nature",
            'the nature of a collectivité is 2 digits like "31", got {got}',
            {"got": describe(value)},
        )
    return text


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise PydanticCustomError("email", "not an e-mail address: {got}", {"got": describe(value)})
    return value


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

    type: str = Field(..., description="The protocol: folder, sftp, soap, database, s2low, pastell.")
    description: str = Field(default="", description="Free text for the people who run the bus.")


_NATURE_CODES = {"DE": 1, "AR": 2, "AI": 3, "CC": 4, "BF": 5, "AU": 6}


def _act_nature(value: Any) -> int:
    if isinstance(value, str) and value.strip().upper() in _NATURE_CODES:
        return _NATURE_CODES[value.strip().upper()]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 6:
        return value
    raise PydanticCustomError(
        "nature",
        "the nature of an act is 1 to 6 or DE, AR, AI, CC, BF, AU, got {got}",
        {"got": describe(value)},
    )


def _matiere(value: Any) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(r"\d+(?:\.\d+)*", text):
        raise PydanticCustomError(
            "matiere", 'a matière is a code like "3" or "3.2" (quote it), got {got}', {"got": describe(value)}
        )
    return text


_Listed = BeforeValidator(_as_list)


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
    transform: str = Field(
        default="actes", pattern=r"^[a-z][a-z0-9_]*$", description="What to build: actes, decp."
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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, interpolate and validate ``path``: the :class:`Config`, or every problem at once.

    Raises :class:`~bus.errors.ConfigError` whose ``problems`` hold each finding (YAML
    syntax, unknown key, wrong type, missing key, bad reference, unresolved secret...)
    with its file (the included one when the key is there), line and field path.
    """
    source = Path(path)
    document, problems, files = load_yaml(source)
    if document is None and not problems:
        document = MarkedDict()
    if document is not None and not isinstance(document, dict):
        problems.append(
            Problem(
                "the configuration must be a mapping (bus, collectivites, connectors, routes)",
                file=str(source),
                line=1,
                rule="type",
            )
        )
    if problems and not isinstance(document, dict):
        raise _error(source, problems, files)
    interpolated = interpolate(document, problems)
    context = {"base_dir": source.resolve().parent}
    problems.extend(_plain_urls(document, interpolated))
    raw_connectors = document.get("connectors")
    usage = _usage(document.get("routes"))
    by_direction: dict[tuple[str, str], ConnectorConfig] = {}
    if isinstance(raw_connectors, dict):
        for name, entry in raw_connectors.items():
            found = _connector(
                document, str(name), entry, usage.get(name, []), context, interpolated, problems
            )
            by_direction.update(((str(name), d), model) for d, model in found.items())
    data = dict(document)
    data.setdefault("bus", {})  # validated with the context: defaults under the config's folder
    if isinstance(raw_connectors, dict):
        data["connectors"] = {  # the inbound model when both sides are used; YAML order kept
            str(name): by_direction.get((str(name), "inbound")) or by_direction[(str(name), "outbound")]
            for name in raw_connectors
            if (str(name), "inbound") in by_direction or (str(name), "outbound") in by_direction
        }
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        problems.extend(validation_problems(exc, document, (), Config))
    problems.extend(_references(document))
    if problems or config is None:
        raise _error(source, problems, files)
    config._source, config._files, config._by_direction = source, tuple(Path(f) for f in files), by_direction
    return config


def _error(source: Path, problems: list[Problem], files: list[str]) -> ConfigError:
    order = {name: index for index, name in enumerate(files)}
    unique = list(dict.fromkeys(problems))
    unique.sort(key=lambda p: (order.get(p.file or "", len(order)), p.line or 0))
    count = f"{len(unique)} problem{'s' if len(unique) != 1 else ''}"
    return ConfigError(f"{source}: {count} in the configuration", problems=unique, path=str(source))


def _problem(document: Any, loc: tuple[Any, ...], message: str, rule: str) -> Problem:
    mark, path = locate(document, loc)
    return Problem(
        redact(message),
        file=mark.file if mark else None,
        line=mark.line if mark else None,
        field=format_path(path),
        rule=rule,
    )


def _names(value: Any, loc: tuple[Any, ...]) -> list[tuple[str, tuple[Any, ...]]]:
    """The connector names in a ``from``/``to``/``source`` value, with where each is written."""
    if isinstance(value, str):
        return [(value, loc)]
    if isinstance(value, list):
        return [(item, (*loc, index)) for index, item in enumerate(value) if isinstance(item, str)]
    return []


def _usage(routes: Any) -> dict[str, list[tuple[str, tuple[Any, ...]]]]:
    """Connector name → (direction, where a route names it) for every use."""
    usage: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict):
            for key, direction in (("from", "inbound"), ("to", "outbound")):
                for name, loc in _names(route.get(key), ("routes", index, key)):
                    usage.setdefault(name, []).append((direction, loc))
    return usage


def _connector(
    document: Any,
    name: str,
    entry: Any,
    uses: list[tuple[str, tuple[Any, ...]]],
    context: dict[str, Any],
    interpolated: set[tuple[Any, ...]],
    problems: list[Problem],
) -> dict[str, ConnectorConfig]:
    """Validate one ``connectors:`` entry against the model of each direction it is used in."""
    prefix = ("connectors", name)
    if not isinstance(entry, dict):
        problems.append(_problem(document, prefix, f"expected a mapping, got {describe(entry)}", "type"))
        return {}
    type_name = entry.get("type")
    if not isinstance(type_name, str):
        message = (
            "missing required key 'type'"
            if type_name is None
            else f"expected a string, got {describe(type_name)}"
        )
        problems.append(
            _problem(document, (*prefix, "type"), message, "missing" if type_name is None else "type")
        )
        return {}
    directions = sorted({direction for direction, _ in uses})
    if not directions:
        sides = registry.known_types().get(type_name, set())
        directions = ["outbound" if sides == {"outbound"} else "inbound"]
    found: dict[str, ConnectorConfig] = {}
    for direction in directions:
        try:
            cls = registry.connector_class(type_name, direction)
        except ConfigError as exc:
            if exc.rule == "connector-direction":  # said where a route uses it that way
                places = [loc for d, loc in uses if d == direction]
                problems.extend(_problem(document, loc, exc.message, exc.rule) for loc in places)
            else:
                problems.append(
                    _problem(document, (*prefix, "type"), exc.message, exc.rule or "connector-type")
                )
                break
            continue
        model = getattr(cls, "Config", None)
        if not (isinstance(model, type) and issubclass(model, ConnectorConfig)):
            problems.append(
                _problem(
                    document,
                    (*prefix, "type"),
                    f"connector type '{type_name}' has no Config model",
                    "connector-module",
                )
            )
            continue
        try:
            found[direction] = model.model_validate(entry, context=context)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, document, prefix, model))
            continue
        problems.extend(_plain_secrets(document, found[direction], prefix, interpolated))
    return found


_IN_YAML = "a secret must not be written in the YAML: use ${ENV_VAR} or ${file:/path}"
_URL_IN_YAML = "the password in this URL must not be written in the YAML: use ${ENV_VAR} or ${file:/path}"


def _plain_secrets(
    document: Any, model: BaseModel, loc: tuple[Any, ...], interpolated: set[tuple[Any, ...]]
) -> list[Problem]:
    """Fields flagged secret whose value was written in the YAML rather than referenced."""
    problems = []
    for name, field in type(model).model_fields.items():
        if name not in model.model_fields_set:
            continue
        key, value = field.alias or name, getattr(model, name)
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("secret") and value is not None:
            if (*loc, key) not in interpolated:
                problems.append(_problem(document, (*loc, key), _IN_YAML, "secret-in-yaml"))
        elif isinstance(value, BaseModel):
            problems.extend(_plain_secrets(document, value, (*loc, key), interpolated))
    return problems


def _plain_urls(document: Any, interpolated: set[tuple[Any, ...]]) -> list[Problem]:
    """A password written in the broker or ledger URL rather than referenced."""
    bus = document.get("bus")
    problems = []
    for key in ("broker", "ledger"):
        url = bus.get(key) if isinstance(bus, dict) else None
        if isinstance(url, str) and ("bus", key) not in interpolated:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                problems.append(_problem(document, ("bus", key), _URL_IN_YAML, "secret-in-yaml"))
    return problems


def _references(document: Any) -> list[Problem]:
    """Names that must exist (connectors in routes) and values that must be unique."""
    problems: list[Problem] = []
    connectors = document.get("connectors")
    known = [str(n) for n in connectors] if isinstance(connectors, dict) else []
    routes = document.get("routes")
    first_route: dict[str, tuple[Any, ...]] = {}
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if not isinstance(route, dict):
            continue
        name = route.get("name")
        if isinstance(name, str):
            if name in first_route:
                problems.append(
                    _duplicate(
                        document,
                        first_route[name],
                        ("routes", index, "name"),
                        f"route name '{name}' is used twice",
                    )
                )
            first_route.setdefault(name, ("routes", index, "name"))
        when = route.get("when")
        named = [
            *_names(route.get("from"), ("routes", index, "from")),
            *_names(route.get("to"), ("routes", index, "to")),
        ]
        if isinstance(when, dict):
            named += _names(when.get("source"), ("routes", index, "when", "source"))
        for connector, loc in named:
            if connector not in known:
                hint = registry.suggest(connector, known) or (
                    f" (declared connectors: {', '.join(sorted(known))})"
                    if known
                    else " (no connector is declared)"
                )
                problems.append(
                    _problem(document, loc, f"unknown connector '{connector}'{hint}", "unknown-reference")
                )
    collectivites = document.get("collectivites")
    first_siren: dict[str, tuple[Any, ...]] = {}
    for index, entry in enumerate(collectivites if isinstance(collectivites, list) else []):
        siren = entry.get("siren") if isinstance(entry, dict) else None
        if isinstance(siren, str | int) and not isinstance(siren, bool):
            if str(siren) in first_siren:
                problems.append(
                    _duplicate(
                        document,
                        first_siren[str(siren)],
                        ("collectivites", index, "siren"),
                        f"SIREN {siren} is declared twice",
                    )
                )
            first_siren.setdefault(str(siren), ("collectivites", index, "siren"))
    return problems


def _duplicate(document: Any, first: tuple[Any, ...], second: tuple[Any, ...], message: str) -> Problem:
    first_mark, _ = locate(document, first)
    second_mark, _ = locate(document, second)
    where = first_mark.relative_to(second_mark) if first_mark else "elsewhere"
    return _problem(document, second, f"{message} (first at {where})", "duplicate")
