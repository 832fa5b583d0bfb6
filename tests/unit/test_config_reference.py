"""docs/configuration.md: generated from the models, up to date, and what check and --help name is in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import run_bus
from bus import config_reference
from bus.config import BusSettings, RouteConfig
from bus.config_reference import COMMAND, DOCUMENT, connector_models, documented_options, is_secret, render
from routes.check import check_configuration


def test_docs_configuration_md_is_up_to_date() -> None:
    current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.is_file() else ""
    assert current == render(), f"docs/configuration.md is out of date with the models: run {COMMAND}"


def test_check_mode_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    assert config_reference.main(["--check", "--output", str(stale)]) == 1
    assert capsys.readouterr().err == f"{stale} is out of date: run python -m bus.config_reference\n"
    assert config_reference.main(["--output", str(stale)]) == 0
    assert config_reference.main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text(encoding="utf-8") == render()


def test_every_connector_and_every_field_is_documented_with_its_secret_flag() -> None:
    text = render()
    models = connector_models()
    assert {(t, d) for t, d, _ in models} >= {("folder", "inbound"), ("folder", "outbound"), ("sftp", "inbound"),
                                              ("sftp", "outbound"), ("soap", "outbound"), ("s2low", "outbound"),
                                              ("pastell", "outbound"), ("procurement", "outbound"),
                                              ("database", "inbound")}
    for type_, direction, cls in models:
        section = text.split(f"\n### {type_} {direction}\n", 1)[1].split("\n### ", 1)[0]
        assert "Example (" in section and "```yaml\nconnectors:\n" in section, (type_, direction)
        for name, field in cls.Config.model_fields.items():
            [row] = [line for line in section.splitlines() if line.startswith(f"| `{field.alias or name}` |")]
            cells = [cell.strip() for cell in row.split(" | ")]
            assert cells[3] == ("yes" if is_secret(field) else ""), (type_, direction, name)


def test_a_row_says_type_default_secret_and_description() -> None:
    text = render()
    assert "| `lease` | duration | `1m` |  | How long a worker owns a source or a document before others may. |" in text
    assert "| `classification` | schedule | `0 6 * * *` |  |" in text
    assert "| `from` | one or a list of string | **required** |  | Inbound connector(s) the documents come from" in text
    assert "| `password` | secret | — | yes | WS-Security UsernameToken password. |" in text
    assert "| `credentials[].password` | secret | — | yes |" in text
    assert "| `ready.min_age` | duration | `5s` |  |" in text
    assert "| `wsdl` | path | `schemas/legality/legality.wsdl` (in Hent's installation) |" in text
    assert "| `max_attempts` | integer | `8` |  | Tries in all, the first included. |" in text


def test_the_examples_are_valid_yaml_of_their_type() -> None:
    for block in re.findall(r"```yaml\n(.*?)```", render(), flags=re.S):
        document = yaml.safe_load(block)
        [(name, options)] = document["connectors"].items()
        assert isinstance(options, dict) and options["type"], name


def test_every_field_check_names_is_in_the_reference(tmp_path: Path) -> None:
    # Given a configuration with a mistake in each part
    config = tmp_path / "bad.yaml"
    config.write_text("""\
bus:
  lease: soon
  retry: {max_attempts: 0}
  metrics: {listen: nowhere}
collectivites:
  - {siren: "12", departement: "044", arrondissement: 1, nature: "31", return_emails: [nope]}
connectors:
  drop: {type: folder, path: /tmp/x, ready: {min_age: later}, pattern: 3}
  out: {type: soap, endpoint: "ftp://x", circuit: {threshold: 0}, retry: {jitter: 4}}
  tdt: {type: s2low, url: "https://s2low.example.org", read_timeout: -1,
        credentials: [{sirens: ["1"], login: x}]}
  sftp: {type: sftp, host: h, username: u, path: /in, answers: {path: /out, max_size: 0}}
routes:
  - {name: r, from: drop, when: {nature: 9, matiere: x}, to: [out, tdt, sftp], max_backlog: 0}
""", encoding="utf-8")
    # When check reads it
    problems, _ = check_configuration(config)
    fields = [problem.field for problem in problems if problem.field]
    assert len(fields) >= 12, problems
    # Then every field path it names is an option of the reference
    types = {"drop": "folder inbound", "out": "soap outbound", "tdt": "s2low outbound", "sftp": "sftp outbound"}
    options = documented_options()
    for path in fields:
        plain = re.sub(r"\[[^\]]*\]", "[]", path)
        section, _, rest = plain.partition(".")
        if section == "connectors":
            connector, _, rest = rest.partition(".")
            section = types[connector]
        else:
            section, rest = section.removesuffix("[]"), rest
        rest = rest.removesuffix("[]")
        assert rest in options[section], f"check names {path}, which docs/configuration.md does not document"


def test_the_bus_options_the_help_texts_name_are_in_the_reference() -> None:
    parser = run_bus.build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions if parser._subparsers else []:  # type: ignore[union-attr]
        for sub in getattr(action, "choices", {}).values():
            texts.append(sub.format_help())
    named = set(re.findall(r"\bbus\.([a-z_]+(?:\.[a-z_]+)?)", " ".join(" ".join(texts).split())))
    assert named, "the help texts name no bus option any more: this test has nothing to check"
    assert named <= documented_options()["bus"], named - documented_options()["bus"]


def test_the_core_models_are_all_in_it() -> None:
    options = documented_options()
    assert set(BusSettings.model_fields) <= options["bus"]
    assert {"retry.max_attempts", "circuit.cooldown", "metrics.listen"} <= options["bus"]
    assert {f.alias or n for n, f in RouteConfig.model_fields.items()} <= options["routes"]
    assert "when.montant_min" in options["routes"]
    assert {"retry.max_age", "circuit.threshold", "credentials[].password"} <= options["soap outbound"]
