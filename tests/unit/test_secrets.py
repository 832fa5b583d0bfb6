"""Secrets: resolved from the environment or files, never shown."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from bus import secrets
from bus.secrets import MASK, Secret, SecretFilter, redact, redact_url, register_secret, resolve_references


class WithSecret(BaseModel):
    password: Secret = Field(..., description="A password.", json_schema_extra={"secret": True})


def test_a_secret_is_masked_everywhere_but_reveal() -> None:
    secret = Secret("correct-horse-battery")
    assert str(secret) == repr(secret) == MASK == "**********"
    assert f"{secret}" == MASK and secret.reveal() == "correct-horse-battery"
    model = WithSecret(password="correct-horse-battery")  # type: ignore[arg-type]
    assert isinstance(model.password, Secret) and model.password == secret
    assert "correct-horse-battery" not in repr(model) and "correct-horse-battery" not in str(model)
    assert model.model_dump() == {"password": MASK} and model.model_dump_json() == '{"password":"**********"}'
    assert WithSecret(password=secret).password is secret
    assert pickle.loads(pickle.dumps(secret)) == secret


def test_json_schema_flags_the_secret() -> None:
    schema = WithSecret.model_json_schema()["properties"]["password"]
    assert schema["secret"] is True and schema["format"] == "password" and schema["writeOnly"] is True


def test_redact_masks_registered_values_and_url_passwords() -> None:
    register_secret("s3cr3t-value-42")
    assert redact("token=s3cr3t-value-42; again s3cr3t-value-42") == "token=**********; again **********"
    assert redact("postgresql://hent:whatever@db/hent and amqp://u:p@mq//") == (
        "postgresql://hent:**********@db/hent and amqp://u:**********@mq//"
    )
    assert redact("nothing here") == "nothing here"


def test_short_values_are_not_registered_but_secrets_always_are() -> None:
    register_secret("22")
    assert redact("port 22") == "port 22"
    Secret("q7#")
    assert redact("q7#") == MASK


def test_redact_url() -> None:
    assert redact_url("amqp://hent:p%40ss@mq:5672/hent") == "amqp://hent:**********@mq:5672/hent"
    assert redact_url("postgresql+psycopg://hent:pw@db.local/hent?sslmode=require") == (
        "postgresql+psycopg://hent:**********@db.local/hent?sslmode=require"
    )
    assert redact_url("sqlite:///var/hent/ledger.db") == "sqlite:///var/hent/ledger.db"
    # a user name alone is not a secret (one no test registers: "guest" is also RabbitMQ's test password)
    assert redact_url("amqp://hent-reader@mq//") == "amqp://hent-reader@mq//"


def test_filter_redacts_message_args_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    register_secret("tb-secret-9876")
    caplog.handler.addFilter(SecretFilter())
    log = logging.getLogger("hent.test.secrets")
    log.error("login with %s failed", "tb-secret-9876")
    try:
        raise RuntimeError("server said: bad password tb-secret-9876")
    except RuntimeError:
        log.exception("boom")
    text = caplog.text
    assert "tb-secret-9876" not in text
    assert "login with ********** failed" in text and "bad password **********" in text


def test_resolve_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HENT_TEST_A", "alpha-value")
    monkeypatch.setenv("HENT_TEST_EMPTY", "")
    monkeypatch.delenv("HENT_TEST_UNSET", raising=False)
    (tmp_path / "pw").write_text("from-a-file\n", encoding="utf-8")
    assert resolve_references("x${HENT_TEST_A}y", tmp_path) == ("xalpha-valuey", [], True)
    assert resolve_references("${HENT_TEST_UNSET:-dflt}", tmp_path) == ("dflt", [], True)
    assert resolve_references("${HENT_TEST_EMPTY:-dflt}", tmp_path) == ("dflt", [], True)
    assert resolve_references("${HENT_TEST_EMPTY}", tmp_path) == ("", [], True)
    assert resolve_references("${file:pw}", tmp_path) == ("from-a-file", [], True)
    assert resolve_references("plain $HOME $${X}", tmp_path) == ("plain $HOME ${X}", [], False)
    assert resolve_references("${HENT_TEST_UNSET}", tmp_path) == (
        "",
        ["environment variable 'HENT_TEST_UNSET' is not set"],
        True,
    )
    assert redact("alpha-value from-a-file") == f"alpha-value {MASK}"  # a file: a secret; HENT_TEST_A: a value
    assert redact("dflt") == "dflt"  # a default is written in the YAML: not a secret


def test_a_variable_named_as_a_secret_is_masked_and_a_host_or_a_path_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HENT_TEST_DB_PASSWORD", "pw-from-the-environment")
    monkeypatch.setenv("HENT_TEST_API_TOKEN", "tok-from-the-environment")
    monkeypatch.setenv("HENT_TEST_SFTP_HOST", "10.20.30.40")
    monkeypatch.setenv("HENT_TEST_HOME", "/var/lib/hent-test")
    for name in ("HENT_TEST_DB_PASSWORD", "HENT_TEST_API_TOKEN", "HENT_TEST_SFTP_HOST", "HENT_TEST_HOME"):
        resolve_references(f"${{{name}}}", tmp_path)
    assert redact("pw-from-the-environment tok-from-the-environment") == f"{MASK} {MASK}"
    assert redact("sftp://10.20.30.40 state in /var/lib/hent-test") == "sftp://10.20.30.40 state in /var/lib/hent-test"


def test_public_names() -> None:
    for name in secrets.__all__:
        assert hasattr(secrets, name)
