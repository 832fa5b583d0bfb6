"""Loading the configuration: includes, line numbers, every error at once, exact texts."""

# ruff: noqa: E501  (the exact error texts are asserted whole, one per line)

from __future__ import annotations

import importlib.util
import logging
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from pydantic import Field

from bus import config as config_module
from bus import registry
from bus.config import (
    BusSettings,
    Config,
    ConfigPath,
    ConnectorConfig,
    Duration,
    Schedule,
    load_config,
    parse_duration,
    parse_schedule,
)
from bus.errors import ConfigError
from bus.secrets import MASK, Secret, SecretFilter
from tests.harness import MAPPINGS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"


# -- a test-only connector type, registered through the public hook ----------------------
class MemoInboundConfig(ConnectorConfig):
    """``type: memo`` used in a ``from``."""

    path: ConfigPath = Field(..., description="Where documents are read.")
    pattern: str = Field("*.json", description="Glob of the sidecars.")
    poll: Schedule = Field("30s", description="How often to look.")
    min_age: Duration = Field(5.0, description="Minimum age of a file.")


class MemoOutboundConfig(ConnectorConfig):
    """``type: memo`` used in a ``to``."""

    url: str = Field(..., description="Where to send.")
    password: Secret | None = Field(None, description="Password.", json_schema_extra={"secret": True})


class MemoInbound:
    Config = MemoInboundConfig


class MemoOutbound:
    Config = MemoOutboundConfig


class SinkOutbound:
    Config = MemoOutboundConfig


@pytest.fixture(autouse=True)
def memo_connectors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    registry.register("memo", "inbound", MemoInbound)
    registry.register("memo", "outbound", MemoOutbound)
    registry.register("sink", "outbound", SinkOutbound)
    monkeypatch.setenv("HENT_TEST_MQ_PASSWORD", "mq-pa55word-from-env")
    yield
    registry.unregister("memo", "inbound")
    registry.unregister("memo", "outbound")
    registry.unregister("sink", "outbound")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def relative(lines: list[str], folder: Path) -> list[str]:
    return [line.replace(f"{folder}/", "") for line in lines]


MINIMAL = """\
connectors:
  src: {type: memo, path: in}
  dst: {type: memo, url: "https://x.example"}
routes:
  - {name: r, from: src, to: dst}
"""


# -- a whole configuration ---------------------------------------------------------------
def test_valid_configuration_split_over_files_loads() -> None:
    # Given the fixture: main.yaml + include: [connectors.yaml] + !include collectivites.yaml
    # When it is loaded
    config = load_config(FIXTURES / "valid" / "main.yaml")
    # Then every section is typed, durations in seconds, paths resolved against main.yaml's folder
    base = FIXTURES / "valid"
    assert config.bus.lease == 120.0 and config.bus.sweep == 0.5 and config.bus.shutdown_timeout == 10.0
    assert config.bus.text_policy == "fail" and config.bus.metrics.listen == "0.0.0.0:9500"
    assert config.bus.broker == "amqp://hent:mq-pa55word-from-env@mq/hent"
    assert config.bus.ledger == f"sqlite:///{base}/var/hent/ledger.db"
    assert config.bus.spool == base / "var/hent/spool"
    assert [c.siren for c in config.collectivites] == ["214400152", "491011698"]
    assert config.collectivites[0].nature == "31" and config.collectivites[1].departement == "02A"
    assert config.collectivites[0].classification_date == date(2024, 1, 15)
    inbound = config.connector_config("rh_outbox", "inbound")
    assert (
        isinstance(inbound, MemoInboundConfig) and inbound.path == base / "export/rh" and inbound.poll == 30.0
    )
    assert config.connector_config("finance", "inbound").poll == "*/5 * * * *"  # type: ignore[attr-defined]
    outbound = config.connector_config("prefecture", "outbound")
    assert isinstance(outbound, MemoOutboundConfig) and outbound.password is not None
    assert outbound.password.reveal() == "tdt-s3cret-from-file"
    assert config.directions("prefecture") == {"outbound"} and config.directions("finance") == {"inbound"}
    first, second = config.routes
    assert (
        first.from_ == ["rh_outbox", "finance"] and first.to == ["prefecture"] and first.transform == "actes"
    )
    assert first.map == base / "mappings/rh-vendor.yaml"
    assert (
        second.when.nature == [4, 4] and second.when.matiere == ["1.1"] and second.when.source == ["finance"]
    )
    assert config.source == FIXTURES / "valid" / "main.yaml"
    assert config.files == (base / "main.yaml", base / "collectivites.yaml", base / "connectors.yaml")


def test_secrets_never_show_in_repr_str_logs_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(FIXTURES / "valid" / "main.yaml")
    outbound = config.connector_config("prefecture", "outbound")
    for text in (repr(config), str(config), repr(config.bus), str(outbound), repr(outbound)):
        assert "mq-pa55word-from-env" not in text and "tdt-s3cret-from-file" not in text
    assert "amqp://hent:**********@mq/hent" in str(config)
    assert outbound.model_dump()["password"] == MASK
    # a log line that carries them, through the filter on the handler
    caplog.handler.addFilter(SecretFilter())
    logging.getLogger("hent.test").warning(
        "connecting %s with %s",
        config.bus.broker,
        outbound.password.reveal(),  # type: ignore[attr-defined]
    )
    assert caplog.messages == ["connecting amqp://hent:**********@mq/hent with **********"]


def test_a_secret_in_an_error_message_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HENT_TEST_SECRET_POLL", "every-now-and-then")  # named as a secret: masked wherever used
    path = write(tmp_path, "main.yaml", MINIMAL.replace("path: in}", "path: in, poll: '${HENT_TEST_SECRET_POLL}'}"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "every-now-and-then" not in str(caught.value)
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:2: connectors.src.poll: invalid schedule '**********': "
        'write a duration (30s, 5m) or a cron line ("*/5 * * * *") [schedule]'
    ]


# -- every error at once, at its file and line ---------------------------------------------
def test_every_error_is_reported_at_once_with_file_line_and_field() -> None:
    folder = FIXTURES / "errors"
    assert relative(problems_of(folder / "main.yaml"), folder) == [
        "main.yaml:3: bus.lease: invalid duration 'soon': write a number of seconds or a value like "
        "500ms, 30s, 5m, 1h [duration]",
        "main.yaml:4: bus.text_policy: expected 'transliterate' or 'fail', got 'drop' [value]",
        "main.yaml:6: collectivites[0].siren: a SIREN is 9 digits, got '21440015' [siren]",
        "main.yaml:6: collectivites[0].departement: a département is a quoted 3-character code like "
        '"034", "02A" or "974", got \'44\' [departement]',
        "main.yaml:9: routes[0].from: unknown connector 'rh_outbx' (did you mean 'rh_outbox'?) [unknown-reference]",
        "main.yaml:11: routes[0].extra: unknown key 'extra' (expected one of: decp_format, from, map, max_backlog, name, to, transform, when)"
        " [unknown-key]",
        "connectors.yaml:4: connectors.rh_outbox.patern: unknown key 'patern' (did you mean 'pattern'?) [unknown-key]",
        "connectors.yaml:6: connectors.prefecture.url: missing required key 'url' [missing]",
    ]


def test_the_error_says_how_many_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "main.yaml", "bus: {lease: x, sweep: y}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == f"{path}: 2 problems in the configuration"
    assert [(p.file, p.line, p.field, p.rule) for p in caught.value.problems] == [
        (str(path), 1, "bus.lease", "duration"),
        (str(path), 1, "bus.sweep", "duration"),
    ]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "conectors: {}\n",
            "main.yaml:1: conectors: unknown key 'conectors' (did you mean 'connectors'?) [unknown-key]",
        ),
        (
            "bus: {lease: -3}\n",
            "main.yaml:1: bus.lease: invalid duration -3: write a number of seconds or a value "
            "like 500ms, 30s, 5m, 1h [duration]",
        ),
        (
            "bus: {metrics: {enabled: maybe}}\n",
            "main.yaml:1: bus.metrics.enabled: expected true or false, got 'maybe' [type]",
        ),
        ("bus: [1]\n", "main.yaml:1: bus: expected a mapping, got a list [type]"),
        ("routes: {}\n", "main.yaml:1: routes: expected a list, got a mapping [type]"),
        (
            "collectivites:\n  - {siren: '214400152', departement: '034', arrondissement: 12, nature: 31}\n",
            "main.yaml:2: collectivites[0].arrondissement: input should be less than or equal to 9, got 12 [value]",
        ),
        (
            "collectivites:\n  - {siren: '214400152', departement: 34, arrondissement: 1, nature: 3}\n",
            'main.yaml:2: collectivites[0].departement: a département is a quoted 3-character code like "034", '
            '"02A" or "974", got 34 [departement]',
        ),
        (
            "collectivites:\n  - {siren: '214400152', departement: '034', arrondissement: 1, nature: 31,\n"
            "     return_emails: [nobody]}\n",
            "main.yaml:3: collectivites[0].return_emails[0]: not an e-mail address: 'nobody' [email]",
        ),
        (
            "collectivites:\n  - {siren: '214400152', departement: '034', arrondissement: 1}\n",
            "main.yaml:2: collectivites[0].nature: missing required key 'nature' [missing]",
        ),
        (
            "collectivites:\n  - {siren: '214400152', departement: '034', arrondissement: 1, nature: 31,\n"
            "     classification: nomenclature.xml}\n",
            "main.yaml:3: collectivites[0].classification: file not found: nomenclature.xml [missing-file]",
        ),
    ],
)
def test_error_texts_are_exact(tmp_path: Path, yaml_text: str, expected: str) -> None:
    path = write(tmp_path, "main.yaml", yaml_text)
    assert relative(problems_of(path), tmp_path) == [expected]


def test_route_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        MINIMAL
        + """\
  - name: r
    from: [src, nowhere]
    when: {nature: 9, matiere: 3.x, sirne: "1"}
    map: mappings/missing.yaml
    to: []
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:6: routes[1].name: route name 'r' is used twice (first at line 5) [duplicate]",
        "main.yaml:7: routes[1].from[1]: unknown connector 'nowhere' (declared connectors: dst, src) "
        "[unknown-reference]",
        "main.yaml:8: routes[1].when.nature[0]: the nature of an act is 1 to 6 or DE, AR, AI, CC, BF, AU, got 9 "
        "[nature]",
        'main.yaml:8: routes[1].when.matiere[0]: a matière is a code like "3" or "3.2" (quote it), got \'3.x\' '
        "[matiere]",
        "main.yaml:8: routes[1].when.sirne: unknown key 'sirne' (did you mean 'siren'?) [unknown-key]",
        "main.yaml:9: routes[1].map: file not found: mappings/missing.yaml [missing-file]",
        "main.yaml:10: routes[1].to: expected at least 1 item(s), got 0 [value]",
    ]


def test_duplicate_siren_and_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        """\
collectivites:
  - {siren: "214400152", departement: "044", arrondissement: 1, nature: 31}
  - {siren: "214400152", departement: "044", arrondissement: 2, nature: 31}
bus:
  lease: 1m
  lease: 2m
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:3: collectivites[1].siren: SIREN 214400152 is declared twice (first at line 2) [duplicate]",
        "main.yaml:6: bus.lease: defined twice (first at line 5) [duplicate-key]",
    ]


def test_connector_type_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        """\
connectors:
  a: {type: memoo, path: x}
  b: {path: x}
  c: {type: sink, url: "https://x.example"}
  d: "folder"
routes:
  - {name: r, from: c, to: a}
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:2: connectors.a.type: unknown connector type 'memoo' (did you mean 'memo'?) "
        "[unknown-connector-type]",
        "main.yaml:3: connectors.b.type: missing required key 'type' [missing]",
        "main.yaml:5: connectors.d: expected a mapping, got 'folder' [type]",
        "main.yaml:7: routes[0].from: connector type 'sink' cannot be used as inbound [connector-direction]",
    ]


def test_a_connector_used_both_ways_is_checked_against_both_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        """\
connectors:
  both: {type: memo, path: x}
routes:
  - {name: r, from: both, to: both}
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:2: connectors.both.url: missing required key 'url' [missing]",
        "main.yaml:2: connectors.both.path: unknown key 'path' (expected one of: description, password, type, url) "
        "[unknown-key]",
    ]


def test_a_connector_no_route_uses_is_validated_against_its_inbound_model(tmp_path: Path) -> None:
    path = write(
        tmp_path, "main.yaml", "connectors:\n  idle: {type: memo, path: x}\n  out: {type: sink, url: u}\n"
    )
    config = load_config(path)
    assert isinstance(config.connectors["idle"], MemoInboundConfig)
    assert isinstance(config.connectors["out"], MemoOutboundConfig)


# -- includes -------------------------------------------------------------------------------
def test_errors_in_an_included_file_carry_its_name_and_line(tmp_path: Path) -> None:
    write(tmp_path, "main.yaml", "include: [parts/conn.yaml]\nroutes:\n  - {name: r, from: src, to: dst}\n")
    write(
        tmp_path,
        "parts/conn.yaml",
        "# connectors\nconnectors:\n  src: {type: memo, path: in}\n\n  dst:\n    type: memo\n    urll: x\n",
    )
    assert relative(problems_of(tmp_path / "main.yaml"), tmp_path) == [
        "parts/conn.yaml:5: connectors.dst.url: missing required key 'url' [missing]",
        "parts/conn.yaml:7: connectors.dst.urll: unknown key 'urll' (did you mean 'url'?) [unknown-key]",
    ]


def test_bang_include_places_a_document_and_keeps_its_lines(tmp_path: Path) -> None:
    write(tmp_path, "main.yaml", MINIMAL + "collectivites: !include sub/coll.yaml\n")
    write(
        tmp_path,
        "sub/coll.yaml",
        "- siren: '214400152'\n  departement: '034'\n  arrondissement: x\n  nature: 31\n",
    )
    assert relative(problems_of(tmp_path / "main.yaml"), tmp_path) == [
        "sub/coll.yaml:3: collectivites[0].arrondissement: expected a whole number, got 'x' [type]"
    ]


def test_include_merges_sections_and_reports_a_name_defined_twice(tmp_path: Path) -> None:
    write(tmp_path, "main.yaml", "include: [more.yaml]\n" + MINIMAL)
    write(
        tmp_path, "more.yaml", "connectors:\n  other: {type: memo, path: y}\n  src: {type: memo, path: z}\n"
    )
    assert relative(problems_of(tmp_path / "main.yaml"), tmp_path) == [
        "more.yaml:3: connectors.src: defined twice (first at main.yaml:3) [duplicate-key]"
    ]
    write(
        tmp_path,
        "more.yaml",
        "connectors:\n  other: {type: memo, path: y}\nroutes:\n  - {name: s, from: other, to: dst}\n",
    )
    config = load_config(tmp_path / "main.yaml")
    assert sorted(config.connectors) == ["dst", "other", "src"]
    assert [r.name for r in config.routes] == ["r", "s"]


def test_include_cycle_and_missing_include(tmp_path: Path) -> None:
    write(tmp_path, "main.yaml", "include: [a.yaml, gone.yaml]\n")
    write(tmp_path, "a.yaml", "bus: !include b.yaml\n")
    write(tmp_path, "b.yaml", "include: [main.yaml]\n")
    assert relative(problems_of(tmp_path / "main.yaml"), tmp_path) == [
        "main.yaml:1: cannot read 'gone.yaml': No such file or directory [include]",
        "b.yaml:1: include cycle: main.yaml → a.yaml → b.yaml → main.yaml [include]",
    ]


def test_yaml_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "main.yaml", "include: [bad.yaml]\n")
    write(tmp_path, "bad.yaml", "bus:\n  lease: 1m\n  sweep: [1, 2\n")
    assert relative(problems_of(tmp_path / "main.yaml"), tmp_path) == [
        "bad.yaml:4: invalid YAML: expected ',' or ']', but got '<stream end>' [yaml-syntax]"
    ]


def test_the_configuration_must_be_a_mapping(tmp_path: Path) -> None:
    assert relative(problems_of(write(tmp_path, "main.yaml", "- a\n")), tmp_path) == [
        "main.yaml:1: the configuration must be a mapping (bus, collectivites, connectors, routes) [type]"
    ]


def test_an_empty_file_is_a_configuration_of_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "main.yaml", "# nothing yet\n"))
    assert config.bus.broker == f"sqla+sqlite:///{tmp_path}/var/hent/broker.db"
    assert config.bus.state_dir == tmp_path / "var/hent" and config.routes == []


# -- interpolation ----------------------------------------------------------------------------
def test_env_default_file_and_escape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HENT_TEST_UNSET", raising=False)
    monkeypatch.setenv("HENT_TEST_HOST", "mq-test-host.invalid")
    write(tmp_path, "run/pw", "file-pa55word\r\n")
    path = write(
        tmp_path,
        "main.yaml",
        """\
bus:
  broker: "amqp://hent:${file:run/pw}@${HENT_TEST_HOST}/hent"
  ledger: "${HENT_TEST_UNSET:-sqlite:///ledger.db}"
  worker_id: "$${not-a-reference}"
""",
    )
    settings = load_config(path).bus
    assert settings.broker == "amqp://hent:file-pa55word@mq-test-host.invalid/hent"
    assert settings.ledger == f"sqlite:///{tmp_path}/ledger.db"
    assert settings.worker_id == "${not-a-reference}"


def test_unresolved_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HENT_TEST_UNSET", raising=False)
    path = write(
        tmp_path,
        "main.yaml",
        """\
connectors:
  dst:
    type: memo
    url: "https://${HENT_TEST_UNSET}/x"
    password: ${file:/nonexistent/hent/pw}
    description: "${bad name}"
  src: {type: memo, path: in}
routes:
  - {name: r, from: src, to: dst}
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:4: connectors.dst.url: environment variable 'HENT_TEST_UNSET' is not set [secret-unresolved]",
        "main.yaml:5: connectors.dst.password: cannot read secret file '/nonexistent/hent/pw': "
        "No such file or directory [secret-unresolved]",
        "main.yaml:6: connectors.dst.description: invalid reference '${bad name}': write ${NAME}, "
        "${NAME:-default} or ${file:/path} [secret-unresolved]",
    ]


def test_a_secret_written_in_the_yaml_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        MINIMAL.replace('url: "https://x.example"', 'url: "https://x.example", password: hunter2')
        + "bus:\n  broker: amqp://hent:guest@mq/hent\n",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:3: connectors.dst.password: a secret must not be written in the YAML: use ${ENV_VAR} or "
        "${file:/path} [secret-in-yaml]",
        "main.yaml:7: bus.broker: the password in this URL must not be written in the YAML: use ${ENV_VAR} or "
        "${file:/path} [secret-in-yaml]",
    ]


# -- durations, schedules, defaults ------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        (" 2 h ", 7200.0),
    ],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize("written", ["", "soon", "5 minutes", "-1s", True, None, [1]])
def test_bad_durations(written: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(written)


def test_schedules() -> None:
    assert parse_schedule("30s") == 30.0 and parse_schedule(45) == 45.0
    assert parse_schedule("*/5  * * * *") == "*/5 * * * *"
    assert parse_schedule("0 7 * * mon-fri") == "0 7 * * mon-fri"
    with pytest.raises(ValueError, match=r"invalid cron line '\* \* \*': expected 5 fields"):
        parse_schedule("* * *")
    with pytest.raises(ValueError, match="the step value \\(61\\) is higher than the total range"):
        parse_schedule("*/61 * * * *")
    with pytest.raises(ValueError, match="a poll interval must be more than 0 seconds"):
        parse_schedule(0)


def test_bus_defaults_without_a_file() -> None:
    settings = BusSettings.model_validate({})
    assert settings.broker == "sqla+sqlite:///var/hent/broker.db"
    assert settings.ledger == "sqlite:///var/hent/ledger.db"
    assert settings.spool == Path("var/hent/spool")
    assert (settings.lease, settings.sweep, settings.shutdown_timeout) == (60.0, 30.0, 10.0)
    assert settings.metrics.listen == "127.0.0.1:9464" and settings.metrics.enabled
    assert settings.text_policy == "transliterate" and "-" in settings.worker_id


def test_every_field_has_a_description() -> None:
    for model in (
        BusSettings,
        Config,
        config_module.CollectiviteConfig,
        config_module.RouteConfig,
        config_module.RouteCondition,
        config_module.MetricsSettings,
        ConnectorConfig,
    ):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"
    schema = MemoOutboundConfig.model_json_schema()
    assert schema["properties"]["password"]["secret"] is True


def test_public_names() -> None:
    for name in config_module.__all__:
        assert hasattr(config_module, name)


# -- the real folder connector -------------------------------------------------------------
@pytest.mark.skipif(
    importlib.util.find_spec("connectors.folder_inbound") is None, reason="no folder connector"
)
def test_folder_connector_configuration(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "folder", tmp_path / "conf")
    config = load_config(tmp_path / "conf" / "main.yaml")
    inbound = config.connector_config("rh_outbox", "inbound")
    assert type(inbound).__module__ == "connectors.folder_inbound"
    assert inbound.path == tmp_path / "conf" / "drop/rh"  # type: ignore[attr-defined]
    assert inbound.poll == 30.0  # type: ignore[attr-defined]
    assert (
        type(config.connector_config("legality_drop", "outbound")).__module__ == "connectors.folder_outbound"
    )
    assert config.bus.spool == tmp_path / "conf" / "state" / "spool"


@pytest.mark.skipif(
    importlib.util.find_spec("connectors.folder_inbound") is None, reason="no folder connector"
)
def test_folder_connector_typo(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "main.yaml",
        """\
connectors:
  rh_outbox: {type: folder, path: /srv/rh/export, patern: "*.json"}
  drop: {type: foldr, path: /srv/drop}
routes:
  - {name: r, from: rh_outbox, to: drop}
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:2: connectors.rh_outbox.patern: unknown key 'patern' (did you mean 'pattern'?) [unknown-key]",
        "main.yaml:3: connectors.drop.type: unknown connector type 'foldr' (did you mean 'folder'?) "
        "[unknown-connector-type]",
    ]


def test_passthrough_and_response_routes_take_no_map_nor_act_condition_and_a_source_feeds_one_kind(
    tmp_path: Path,
) -> None:
    mapping = write(tmp_path, "m.yaml", "format: json\nfields: {}\n")
    path = write(
        tmp_path,
        "main.yaml",
        f"""\
connectors:
  a: {{type: folder, path: in-a}}
  b: {{type: folder, path: in-b}}
  out: {{type: folder, path: out}}
routes:
  - {{name: relay, from: a, transform: passthrough, map: {mapping}, when: {{nature: 1}}, to: out}}
  - {{name: answers, from: b, transform: response, when: {{siren: "214400152", source: b}}, to: out}}
  - {{name: mapped, from: a, map: {mapping}, to: out}}
""",
    )
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:6: routes[0].map: a passthrough route reads no vendor export: remove `map` [passthrough]",
        "main.yaml:6: routes[0].when.nature: a passthrough route reads no act: `when` may name the source only, "
        "not 'nature' [passthrough]",
        "main.yaml:7: routes[1].when.siren: a response route reads no act: `when` may name the source only, "
        "not 'siren' [response]",
        "main.yaml:8: routes[2].from: connector 'a' feeds a mapped route here and a passthrough route in "
        "routes[0]: a source's files are read one way (relayed unchanged, a response bundle or a vendor's "
        "export); use two sources [route-kind]",
    ]


def test_a_password_written_in_a_credentials_list_is_refused_and_a_reference_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HENT_TEST_CRED_PASSWORD", "from-the-environment")
    (tmp_path / "in").mkdir()
    path = write(tmp_path, "main.yaml", (
        "bus: {state_dir: ./var}\n"
        "connectors:\n"
        "  src: {type: folder, path: in}\n"
        "  tdt:\n"
        "    type: soap\n"
        "    endpoint: https://tdt.example/soap\n"
        "    credentials:\n"
        "      - {sirens: ['214400152'], username: a, password: written-here}\n"
        "      - {sirens: ['214400160'], username: b, password: '${HENT_TEST_CRED_PASSWORD}'}\n"
        f"routes: [{{name: r, from: src, map: {MAPPINGS / 'deliberations-json.yaml'}, to: tdt}}]\n"
    ))
    assert relative(problems_of(path), tmp_path) == [
        "main.yaml:8: connectors.tdt.credentials[0].password: a secret must not be written in the YAML: "
        "use ${ENV_VAR} or ${file:/path} [secret-in-yaml]"
    ]
