"""deploy/grafana/hent.json is a Grafana dashboard whose every query uses what the bus exposes.

Each PromQL expression is read for the series it selects, the labels its matchers and its
``by (...)`` clauses name and the values its matchers compare with; all are checked against
``bus.metrics.SERIES`` (every series ``/metrics`` exposes, with its labels) and the fixed
vocabularies of the labels (ledger states, age buckets, letter codes...).
tests/integration/test_promtool.py holds the alert rules to the same checks, and the series list to
what a running bus serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bus.answers import ANSWER_AGES, HELD_REASONS, LETTER_AGES, LETTERS
from bus.backbone import Backbone
from bus.ledger import DeliveryState, DocumentState
from bus.metrics import SERIES

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "hent.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
#: labels Prometheus adds to every series it scrapes
TARGET_LABELS = {"job", "instance"}
#: the values a label may take wherever it appears (others, like route or connector, come from the configuration)
VOCABULARY: dict[str, set[str]] = {
    "state": {s.value for s in DocumentState} | {s.value for s in DeliveryState},
    "age": {label for _, label in (*ANSWER_AGES, *LETTER_AGES)},
    "code": set(LETTERS),
    "waiting": set(HELD_REASONS),
    "queue": set(Backbone.QUEUES),
}

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]|\d+(?:\.\d+)?(?:ms|[smhdwy])*|[A-Za-z_:][\w:]*|\S')
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_OPERATORS = {"and", "or", "unless", "bool", "offset"}
_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
                 "quantile"}


@dataclass
class Query:
    """What one PromQL expression uses."""

    expr: str
    selectors: list[tuple[str, list[tuple[str, str, str]]]] = field(default_factory=list)  #: (series, matchers)
    grouping: set[str] = field(default_factory=set)  #: labels named in by/without/on/ignoring/group_*


def read_promql(expr: str) -> Query:
    """The series, matchers and grouping labels of ``expr`` (enough PromQL for the dashboard and the alerts)."""
    query = Query(expr)
    tokens = _TOKEN.findall(expr)
    position = 0
    while position < len(tokens):
        token = tokens[position]
        following = tokens[position + 1] if position + 1 < len(tokens) else ""
        if token in _GROUPING and following == "(":
            end = tokens.index(")", position)
            query.grouping |= {t for t in tokens[position + 2:end] if t != ","}
            position = end + 1
            continue
        named = re.fullmatch(r"[A-Za-z_:][\w:]*", token) is not None
        if named and following != "(" and token not in _OPERATORS | _AGGREGATIONS:
            matchers = []
            if following.startswith("{"):
                matchers = [(name, op, _unquote(value)) for name, op, value in _MATCHER.findall(following)]
                position += 1
            query.selectors.append((token, matchers))
        position += 1
    return query


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def matched_values(op: str, value: str) -> set[str]:
    """The literal values an ``=`` or ``=~`` matcher of alternatives names (none for a real pattern)."""
    if op == "=":
        return {value}
    if op == "=~" and re.fullmatch(r"(?:[\w\- ]|\\.)+(?:\|(?:[\w\- ]|\\.)+)*", value):
        return {_unquote(part) for part in value.split("|")}
    return set()


def problems(expr: str, *, also: frozenset[str] = frozenset()) -> list[str]:
    """What in ``expr`` the bus does not expose (``also``: other series allowed, such as Prometheus' ``up``)."""
    query = read_promql(expr)
    found = []
    available = set(TARGET_LABELS)
    for series, matchers in query.selectors:
        if series in also:
            available |= {name for name, _, _ in matchers}
            continue
        if series not in SERIES:
            found.append(f"{series}: not a series the bus exposes")
            continue
        labels = set(SERIES[series]) | TARGET_LABELS
        available |= labels
        for name, op, value in matchers:
            if name not in labels:
                found.append(f"{series}: no label {name!r} (it has {', '.join(sorted(labels))})")
            elif name in VOCABULARY and (unknown := matched_values(op, value) - VOCABULARY[name]):
                found.append(f"{series}: {name} is never {', '.join(sorted(unknown))}")
    if not query.selectors:
        found.append("selects no series")
    for label in sorted(query.grouping - available):
        found.append(f"groups by {label!r}, a label none of its series has")
    return found


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every query of the dashboard: its panels' targets and its variables."""
    found = [(f"panel {panel['title']!r} {target['refId']}", target["expr"])
             for panel in panels(dashboard) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            definition = variable["definition"]
            inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", definition)
            found.append((f"variable {variable['name']}", inner.group(1) if inner else definition))
    return found


# -- the PromQL reader itself ------------------------------------------------------------------

def test_the_reader_finds_series_matchers_and_grouping_labels() -> None:
    query = read_promql('histogram_quantile(0.9, sum by (le, route) (rate(hent_x_bucket{job=~"$job", '
                        'age=~"4-24h|7d\\\\+"}[$__rate_interval]))) > on (connector) time() - hent_y offset 30m')

    assert query.selectors == [("hent_x_bucket", [("job", "=~", "$job"), ("age", "=~", "4-24h|7d\\+")]),
                               ("hent_y", [])]
    assert query.grouping == {"le", "route", "connector"}
    assert matched_values("=~", "4-24h|7d\\+") == {"4-24h", "7d+"}
    assert matched_values("=~", "$job") == set()


def test_the_checks_name_what_is_not_exposed() -> None:
    assert problems('sum by (kind) (rate(hent_documents_total{route="x", state="SENT"}[5m]))') == [
        "hent_documents_total: no label 'state' (it has instance, job, outcome, route)",
        "groups by 'kind', a label none of its series has",
    ]
    assert problems('hent_documents{route="x"}') == ["hent_documents: not a series the bus exposes"]
    assert problems('hent_ledger_deliveries{state="SEND"}') == ["hent_ledger_deliveries: state is never SEND"]
    assert problems('hent_stage_duration_seconds_bucket{le="+Inf", stage="send"}') == []


# -- the dashboard ---------------------------------------------------------------------------------

def test_the_dashboard_is_grafana_json_for_a_prometheus_data_source_given_at_import() -> None:
    # Given the dashboard, When it is read
    dashboard = load()

    # Then it is a dashboard of the current schema, importable with its Prometheus asked for
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] == "Hent" and dashboard["uid"] and dashboard["id"] is None
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")]
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    assert ("datasource", "prometheus") in required
    assert {("panel", p["type"]) for p in panels(dashboard) if p["type"] != "row"} <= required
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE


def test_every_panel_has_an_id_a_place_and_prometheus_queries() -> None:
    dashboard = load()
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        place = panel["gridPos"]
        assert place["x"] >= 0 and place["w"] > 0 and place["x"] + place["w"] <= 24, panel["title"]
        taken = {(x, y) for x in range(place["x"], place["x"] + place["w"])
                 for y in range(place["y"], place["y"] + place["h"])}
        assert not taken & cells, f"panel {panel['title']!r} overlaps another"
        cells |= taken
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        references = [target["refId"] for target in panel["targets"]]
        assert len(references) == len(set(references)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]


@pytest.mark.parametrize(("where", "expr"), expressions(load()), ids=[where for where, _ in expressions(load())])
def test_every_query_uses_series_and_labels_the_bus_exposes(where: str, expr: str) -> None:
    assert problems(expr) == [], f"{where}: {expr}"


def test_the_dashboard_shows_flow_latency_backlog_failures_circuits_letters_and_certificates() -> None:
    used = {series for _, expr in expressions(load()) for series, _ in read_promql(expr).selectors}

    assert {
        "hent_documents_total",  # flow by route and outcome
        "hent_end_to_end_seconds_count",
        "hent_acknowledgment_seconds_bucket",  # acknowledgment latency
        "hent_ledger_deliveries",  # backlog by state
        "hent_ledger_documents",
        "hent_deliveries_awaiting_answer",
        "hent_send_failures_total",  # failures by connector
        "hent_poll_failures_total",
        "hent_dead_letters_total",
        "hent_bundles_refused_total",  # bundles a source refused over a limit
        "hent_endpoint_circuit_state",  # circuit states
        "hent_prefecture_letters_open",
        "hent_certificate_expiry_timestamp_seconds",
    } <= used
