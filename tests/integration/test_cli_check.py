"""``run_bus.py check``, run as a user runs it: every mistake at once, with file, line and field."""

# ruff: noqa: E501  (the exact error texts are asserted whole, one per line)

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import run_cli

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "cli"
#: long enough to be registered as a secret (bus.secrets.MIN_REDACT_LENGTH)
SECRET = "s3cr3t-Pa55-w0rd-from-env"


run_bus = run_cli


def fixture(name: str) -> str:
    """The fixture's path as a user types it: relative to the repository root."""
    return str((FIXTURES / name).relative_to(REPO))


# -- (a) the demo's configuration is fine ---------------------------------------------------
def test_check_accepts_the_demo_configuration_with_a_one_line_summary(tmp_path: Path) -> None:
    # Given the demo's configuration and the workspace it names through HENT_DEMO_WORKSPACE
    env = {"HENT_DEMO_WORKSPACE": str(tmp_path)}

    # When it is checked
    result = run_bus("check", "-c", "config/demo.yaml", env=env)

    # Then it exits 0 with the summary line only, and creates nothing in the workspace
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "config/demo.yaml: OK — 5 connector(s), 3 route(s), 1 collectivité(s); schemas compiled: actes\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_check_names_every_place_an_unset_environment_variable_is_used() -> None:
    # Given the demo's configuration without HENT_DEMO_WORKSPACE in the environment
    # When it is checked
    result = run_bus("check", "-c", "config/demo.yaml")

    # Then each use of the variable is reported where it is written, and check exits 2
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "config/demo.yaml:6: bus.state_dir: environment variable 'HENT_DEMO_WORKSPACE' is not set [secret-unresolved]",
        "config/demo.yaml:26: connectors.deliberations.path: environment variable 'HENT_DEMO_WORKSPACE' is not set [secret-unresolved]",
        "config/demo.yaml:33: connectors.rh.path: environment variable 'HENT_DEMO_WORKSPACE' is not set [secret-unresolved]",
        "config/demo.yaml:40: connectors.finances.path: environment variable 'HENT_DEMO_WORKSPACE' is not set [secret-unresolved]",
        "config/demo.yaml:55: connectors.archives.path: environment variable 'HENT_DEMO_WORKSPACE' is not set [secret-unresolved]",
        "config/demo.yaml: 5 error(s)",
    ]


# -- (b) several mistakes at once, across an included file ----------------------------------
def test_check_reports_every_mistake_at_once_with_file_line_and_field() -> None:
    # Given a configuration whose main file and included connectors.yaml hold six mistakes:
    # a bad duration, a missing mapping file, a route naming an unknown connector (main.yaml),
    # a misspelt key, a misspelt connector type and a four-field cron line (connectors.yaml)
    main = fixture("check-errors/main.yaml")
    included = fixture("check-errors/connectors.yaml")
    missing_map = FIXTURES / "check-errors" / "mappings" / "missing.yaml"

    # When it is checked
    result = run_bus("check", "-c", main)

    # Then each mistake is printed once, in file then line order, and check exits 2
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{main}:5: bus.lease: invalid duration 'soon': write a number of seconds or a value like 500ms, 30s, 5m, 1h [duration]",
        f"{main}:11: routes[0].map: file not found: {missing_map} [missing-file]",
        f"{main}:14: routes[1].from: unknown connector 'rh_outbx' (did you mean 'rh_outbox'?) [unknown-reference]",
        f"{included}:5: connectors.deliberations.patern: unknown key 'patern' (did you mean 'pattern'?) [unknown-key]",
        f"{included}:7: connectors.rh_outbox.type: unknown connector type 'foldr' (did you mean 'folder'?) [unknown-connector-type]",
        f"{included}:12: connectors.finances.poll: invalid cron line '*/5 * * *': expected 5 fields (minute hour day month weekday), got 4 [cron]",
        f"{main}: 6 error(s)",
    ]


# -- (c) secrets never reach the output ------------------------------------------------------
@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_check_never_prints_a_password_taken_from_the_environment(log_level: str) -> None:
    # Given a configuration whose broker and ledger URLs take their password from HENT_TEST_SECRET
    config = fixture("check-secret/main.yaml")

    # When it is checked, at the default log level and at DEBUG
    result = run_bus("--log-level", log_level, "check", "-c", config, env={"HENT_TEST_SECRET": SECRET})

    # Then it is accepted, and the password appears neither on stdout nor on stderr
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"{config}: OK — 2 connector(s), 1 route(s), 1 collectivité(s); schemas compiled: actes\n")
    assert SECRET not in result.stdout + result.stderr
    assert "Pa55" not in result.stdout + result.stderr


def test_check_masks_a_secret_in_the_values_it_reports_as_wrong() -> None:
    # Given a configuration where the secret ends up in values that are wrong (a duration, a poll)
    config = fixture("check-secret/broken.yaml")

    # When it is checked at DEBUG
    result = run_bus("--log-level", "DEBUG", "check", "-c", config, env={"HENT_TEST_SECRET": SECRET})

    # Then the mistakes are reported with the value masked, never in clear
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:5: bus.lease: invalid duration '**********': write a number of seconds or a value like 500ms, 30s, 5m, 1h [duration]",
        f"{config}:9: connectors.deliberations.poll: invalid schedule '**********': write a duration (30s, 5m) or a cron line (\"*/5 * * * *\") [schedule]",
        f"{config}: 2 error(s)",
    ]
    assert SECRET not in result.stdout + result.stderr


# -- (d) the mappings the routes name are checked too ----------------------------------------
def test_check_loads_the_mapping_a_route_names_and_reports_its_unknown_keys() -> None:
    # Given a valid configuration whose route names a mapping with two misspelt keys
    config = fixture("check-mapping/main.yaml")
    # named as the configuration gives it (mappings/deliberations.yaml), beside the configuration
    mapping = fixture("check-mapping/mappings/deliberations.yaml")

    # When it is checked
    result = run_bus("check", "-c", config)

    # Then the mapping's mistakes are reported with the mapping's file, line and field
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{mapping}:4: fields.objet: say where objet comes from [required]",
        f"{mapping}:10: fields.objett: unknown key 'objett' (did you mean 'objet'?) [unknown-key]",
        f"{mapping}:13: extras: unknown key 'extras' (did you mean 'extra'?) [unknown-key]",
        f"{config}: 3 error(s)",
    ]


# -- (e) YAML syntax -------------------------------------------------------------------------
def test_check_reports_a_yaml_syntax_error_with_its_file_and_line() -> None:
    # Given a configuration whose flow mapping on line 7 is never closed
    config = fixture("check-syntax/main.yaml")

    # When it is checked
    result = run_bus("check", "-c", config)

    # Then the syntax error is reported where the parser found it, and check exits 2
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{config}:8: invalid YAML: expected ',' or '}}', but got ':' [yaml-syntax]",
        f"{config}: 1 error(s)",
    ]


def test_check_reports_a_missing_configuration_file() -> None:
    # Given a configuration file that does not exist
    # When it is checked
    result = run_bus("check", "-c", "config/no-such-file.yaml")

    # Then check says it cannot read it, and exits 2
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "config/no-such-file.yaml: cannot read 'config/no-such-file.yaml': No such file or directory [include]",
        "config/no-such-file.yaml: 1 error(s)",
    ]


# -- (f) --online reaches each server with its credentials -------------------------------------
def test_check_online_reaches_each_server_and_says_which_one_fails(tmp_path: Path) -> None:
    from simulators.legality import LegalitySimulator
    from tests.sshd import free_port

    # Given the demo's configuration, its drop folders present, and the platform's simulator up
    for folder in ("deliberations", "rh", "finances"):
        (tmp_path / "drop" / folder).mkdir(parents=True)
    with LegalitySimulator() as platform:
        env = {"HENT_DEMO_WORKSPACE": str(tmp_path), "HENT_DEMO_LEGALITY_URL": platform.url}
        result = run_bus("check", "--online", "-c", "config/demo.yaml", env=env)
    # Then every connector answered
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [
        "connector deliberations", "connector rh", "connector finances", "connector prefecture", "connector archives",
    ]
    assert all(": OK — " in line for line in lines), lines
    # When the platform is down, Then check --online says so for that connector and exits 1
    env["HENT_DEMO_LEGALITY_URL"] = f"http://127.0.0.1:{free_port()}/soap"
    result = run_bus("check", "--online", "-c", "config/demo.yaml", env=env)
    assert result.returncode == 1
    [failed] = [line for line in result.stdout.splitlines() if "FAILED" in line]
    assert failed.startswith("connector prefecture: FAILED — ")
