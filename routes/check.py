"""``run_bus.py check``: the configuration, the vendor mappings it names, the schemas it needs.

:func:`check_report` gives errors (the configuration cannot run: check exits 2) and warnings
(it runs, but a person should act: a key file others can read, TLS not verified —
:mod:`bus.insecure`; check's exit code does not change).
"""

from __future__ import annotations

__all__ = ["CheckReport", "check_configuration", "check_report", "probe_connectors"]

from dataclasses import dataclass, field
from pathlib import Path

from bus import registry
from bus.certs import describe_certificate
from bus.config import load_config
from bus.connector import ARCHIVE, CANONICAL, CANONICAL_RESPONSE, DECP_JSON, DECP_XML, FILE
from bus.errors import ConfigError, HentError, Problem
from bus.insecure import configuration_warnings
from routes.decp_route import DECP_KINDS
from transformers.actes_validate import ActesValidator
from transformers.classification import Classification
from transformers.decp_mapping import ContractMapping
from transformers.mapping import Mapping

#: what each route transform builds, and the schemas it compiles
TRANSFORM_KINDS = {"actes": (ARCHIVE, CANONICAL), "passthrough": (FILE,), "response": (ARCHIVE, CANONICAL_RESPONSE),
                   "decp": (DECP_XML, DECP_JSON)}


@dataclass
class CheckReport:
    """What check found: ``problems`` (errors: the bus would not start), ``warnings`` (it would, but a
    person should act), and the summary printed when there is no error."""

    problems: list[Problem]
    summary: str = ""
    warnings: list[Problem] = field(default_factory=list)


def check_configuration(path: Path) -> tuple[list[Problem], str]:
    """Every problem at once (empty when the configuration can run), and a one-line summary."""
    report = check_report(path)
    return report.problems, report.summary


def check_report(path: Path) -> CheckReport:
    """Every error and every warning at once, and the summary."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return CheckReport(exc.problems or [exc.problem()])
    problems: list[Problem] = []
    seen_maps: set[str] = set()
    built: set[str] = set()
    certificates: list[str] = []
    for index, route in enumerate(config.routes):
        if route.map is not None and str(route.map) not in seen_maps:
            seen_maps.add(str(route.map))
            try:
                loader = ContractMapping.load if route.transform == "decp" else Mapping.load
                loader(Path(route.map), _as_given(path, Path(route.map)))
            except ConfigError as exc:
                problems.extend(exc.problems or [exc.problem()])
        kind = TRANSFORM_KINDS.get(route.transform)
        if route.transform == "decp":
            kind = (DECP_KINDS[route.decp_format],)
        if route.transform == "actes" and route.map is None:
            problems.append(Problem(
                f"route {route.name!r} builds ACTES archives: it needs `map` (the vendor mapping), or "
                "`transform: passthrough` to relay the files unchanged",
                file=str(path), field=f"routes[{index}].map", rule="route-map",
            ))
        for endpoint in route.to:
            try:
                cfg = config.connector_config(endpoint, "outbound")
                connector = registry.connector_class(cfg.type, "outbound")(endpoint, cfg)
            except HentError as exc:
                problems.append(exc.problem())
                continue
            consumes = connector.consumes
            if endpoint not in built:  # what only shows when a connector gets ready: a WSDL, a key file
                built.add(endpoint)
                certificates.extend(
                    f"  certificate of {endpoint} ({sirens}): {describe_certificate(path)}"
                    for sirens, path in connector.certificates()
                )
                try:
                    connector.check()
                except ConfigError as exc:
                    problems.extend(exc.problems or [exc.problem()])
            if kind is not None and not set(kind) & set(consumes):
                problems.append(
                    Problem(
                        f"endpoint {endpoint!r} takes {' or '.join(consumes)}, but transform {route.transform!r} "
                        f"builds {' or '.join(kind)}",
                        file=str(path),
                        field=f"routes[{index}].to",
                        rule="endpoint-kind",
                    )
                )
    for entry in config.collectivites:
        if entry.classification:
            try:
                Classification.from_file(Path(entry.classification))
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                problems.append(
                    Problem(f"classification file unreadable: {exc}", file=str(entry.classification),
                            field=f"collectivites[{entry.siren}].classification", rule="classification")
                )
    try:
        ActesValidator()
        schemas = "actes"
    except Exception as exc:  # noqa: BLE001
        problems.append(Problem(f"the ACTES schema does not compile: {exc}", rule="schema"))
        schemas = "none"
    summary = (
        f"{path}: OK — {len(config.connectors)} connector(s), {len(config.routes)} route(s), "
        f"{len(config.collectivites)} collectivité(s); schemas compiled: {schemas}"
    )
    return CheckReport(problems, "\n".join([summary, *certificates]), configuration_warnings(config))


def _as_given(config: Path, resolved: Path) -> str:
    """A path the configuration names, as it wrote it, beside the configuration as given.

    ``mappings/x.yaml`` in ``conf/main.yaml`` is ``conf/mappings/x.yaml``; a path written
    absolute, or outside the configuration's folder, stays as resolved.
    """
    try:
        return str(config.parent / resolved.relative_to(config.resolve().parent))
    except ValueError:
        return str(resolved)


def probe_connectors(path: Path) -> list[tuple[str, bool, str]]:
    """``check --online``: each connector's server asked once, with its credentials (a login,
    a listing, a status query): (name, reachable, where or why not), in the YAML's order."""
    config = load_config(path)
    results: list[tuple[str, bool, str]] = []
    for name in config.connectors:
        for direction in sorted(config.directions(name)) or ["outbound"]:
            try:
                cfg = config.connector_config(name, direction)
                connector = registry.connector_class(cfg.type, direction)(name, cfg)
            except HentError as exc:
                results.append((name, False, exc.message))
                continue
            reachable = getattr(connector, "reachable", None)
            if reachable is None:
                results.append((name, True, f"{cfg.type}: nothing to ask"))
                continue
            try:
                ok, detail = reachable()
            except Exception as exc:  # noqa: BLE001 - a probe reports, it does not crash the check
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            finally:
                connector.close()
            results.append((name, ok, detail))
    return results
