"""Reading a configuration: :func:`load_config` and the checks it runs besides the models'.

It reads the YAML with its includes, interpolates ``${ENV_VAR}`` and ``${file:/path}``
references, validates each connector against the model of every direction routes use it in
(found through :mod:`bus.registry`), then the whole :class:`~bus.config.Config`, and checks
what no single model can: connectors named by routes exist, route names and SIRENs are
unique, and no secret or URL password is written in the YAML itself.  Every problem is
collected with its file, line and field path, and raised at once as one
:class:`~bus.errors.ConfigError`.  :mod:`bus.config` re-exports :func:`load_config`.
"""

from __future__ import annotations

__all__ = ["load_config"]

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from bus import registry
from bus.errors import ConfigError, Problem
from bus.secrets import Secret, redact
from bus.yamlconf import (
    MarkedDict,
    describe,
    format_path,
    interpolate,
    load_yaml,
    locate,
    validation_problems,
)

if TYPE_CHECKING:
    from bus.config import Config, ConnectorConfig


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, interpolate and validate ``path``: the :class:`Config`, or every problem at once.

    Raises :class:`~bus.errors.ConfigError` whose ``problems`` hold each finding (YAML
    syntax, unknown key, wrong type, missing key, bad reference, unresolved secret...)
    with its file (the included one when the key is there), line and field path.
    """
    from bus.config import Config  # here: bus.config imports this module

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
    from bus.config import ConnectorConfig  # here: bus.config imports this module

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
        if value is not None and (isinstance(value, Secret) or (isinstance(extra, dict) and extra.get("secret"))):
            if (*loc, key) not in interpolated:
                problems.append(_problem(document, (*loc, key), _IN_YAML, "secret-in-yaml"))
        elif isinstance(value, BaseModel):
            problems.extend(_plain_secrets(document, value, (*loc, key), interpolated))
        elif isinstance(value, list | tuple):  # credentials: [{sirens, password}, ...]
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    problems.extend(_plain_secrets(document, item, (*loc, key, index), interpolated))
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
        problems.extend(_transform_problems(document, index, route))
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
    problems.extend(_passthrough_sources(document, routes if isinstance(routes, list) else []))
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


def _transform_problems(document: Any, index: int, route: dict[str, Any]) -> list[Problem]:
    """A passthrough route relays files unchanged, a response route reads Hent's response bundle:
    neither takes a map, nor a condition on the act.  A decp route needs its map, and its `when`
    speaks of contracts; an act route's `when` speaks of acts."""
    loc: tuple[Any, ...] = ("routes", index)
    kind = route.get("transform")
    when = route.get("when")
    keys = list(when if isinstance(when, dict) else {})
    if kind == "decp":
        problems = [] if "map" in route else [_problem(
            document, (*loc, "transform"), "a decp route maps the vendor's export to a contract: add `map`", "decp")]
        return problems + [
            _problem(document, (*loc, "when", key), f"a decp route reads a contract, not an act: `when` may "
                     f"name source, siren or montant_min, not {key!r}", "decp")
            for key in keys if key not in ("source", "siren", "montant_min")]
    if kind not in ("passthrough", "response"):
        return [_problem(document, (*loc, "when", key), "montant_min is a condition of decp routes (an act has no "
                         "amount): put it on the `transform: decp` route", "when-key")
                for key in keys if key == "montant_min"]
    problems = []
    if "map" in route:
        problems.append(_problem(document, (*loc, "map"), f"a {kind} route reads no vendor export: remove `map`",
                                 kind))
    for key in keys:
        if key != "source":
            problems.append(_problem(document, (*loc, "when", key), f"a {kind} route reads no act: `when` "
                                     f"may name the source only, not {key!r}", kind))
    return problems


def _passthrough_sources(document: Any, routes: list[Any]) -> list[Problem]:
    """A source feeds routes of one kind: passthrough (a file relayed unchanged), response (Hent's
    response bundles) or mapped (a vendor's export), never two."""
    kinds: dict[str, tuple[str, int]] = {}
    problems = []
    for index, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        transform = route.get("transform")
        kind = transform if transform in ("passthrough", "response") else "mapped"
        for name, loc in _names(route.get("from"), ("routes", index, "from")):
            first = kinds.setdefault(name, (kind, index))
            if first[0] != kind:
                problems.append(_problem(
                    document, loc, f"connector '{name}' feeds a {kind} route here and a {first[0]} route in "
                    f"routes[{first[1]}]: a source's files are read one way (relayed unchanged, a response "
                    "bundle or a vendor's export); use two sources", "route-kind",
                ))
    return problems


def _duplicate(document: Any, first: tuple[Any, ...], second: tuple[Any, ...], message: str) -> Problem:
    first_mark, _ = locate(document, first)
    second_mark, _ = locate(document, second)
    where = first_mark.relative_to(second_mark) if first_mark else "elsewhere"
    return _problem(document, second, f"{message} (first at {where})", "duplicate")
