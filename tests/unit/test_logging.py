"""Logs: human lines for people, one JSON object per record for a shipper, context fields, no secret."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import run_bus
from bus.logging_setup import (
    add_log_context,
    fields_of,
    log_context,
    resolve_format,
    setup_logging,
    with_log_context,
)
from bus.secrets import MASK, Secret

HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\w+) ([\w.]+): (.*)$")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def root_logger() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_gives_one_object_per_record_with_time_level_logger_message() -> None:
    # Given logs in JSON
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    # When two records are logged, one below the level
    logging.getLogger("bus.runtime").info("hent %s running", "all")
    logging.getLogger("bus.runtime").debug("not shown")
    # Then one line, one object, with exactly the fields known
    [entry] = json_lines(stream)
    assert ISO_UTC.match(entry.pop("time"))
    assert entry == {"level": "INFO", "logger": "bus.runtime", "message": "hent all running"}


def test_the_context_fields_come_from_extra_and_from_the_context() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    log = logging.getLogger("bus.runtime")
    delivery = SimpleNamespace(id="dlv1", document_id="doc1", endpoint="prefecture", route="deliberations",
                               state="SENT")
    # Given a record with extra=, one in a context, one in a context with an extra that wins, one after it
    log.info("delivery dlv1 to prefecture: SENT", extra=fields_of(delivery=delivery))
    with log_context(document_id="doc2"):
        add_log_context(route="rh", connector="rh_drop")
        log.warning("document doc2 will be retried")
        log.error("document doc2 FAILED", extra={"state": "FAILED", "connector": "other"})
    log.info("outside")
    # Then each carries what is known, and nothing leaks out of the context
    first, second, third, fourth = json_lines(stream)
    assert {k: first[k] for k in ("document_id", "delivery_id", "route", "connector", "state")} == {
        "document_id": "doc1", "delivery_id": "dlv1", "route": "deliberations", "connector": "prefecture",
        "state": "SENT"}
    assert (second["document_id"], second["route"], second["connector"], "state" in second) == (
        "doc2", "rh", "rh_drop", False)
    assert (third["connector"], third["state"], third["route"]) == ("other", "FAILED", "rh")
    assert set(fourth) == {"time", "level", "logger", "message"}


def test_a_method_handling_one_document_logs_with_its_id() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)

    class Worker:
        @with_log_context("document_id")
        def handle_document(self, doc_id: str) -> str:
            add_log_context(route="deliberations")
            logging.getLogger("bus.runtime").info("handled")
            return doc_id

    assert Worker().handle_document("abc") == "abc"
    logging.getLogger("bus.runtime").info("after")
    inside, after = json_lines(stream)
    assert (inside["document_id"], inside["route"]) == ("abc", "deliberations")
    assert "document_id" not in after and "route" not in after


def test_secrets_are_masked_in_the_json_message_fields_and_traceback() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    password = Secret("hunter2-is-the-password").reveal()
    log = logging.getLogger("connectors.soap_outbound")
    # Given a secret in the message, its arguments, a context field and an exception's text
    try:
        raise RuntimeError(f"login refused for password {password}")
    except RuntimeError:
        log.exception("connector %r: %s", "prefecture", f"password={password}",
                      extra={"connector": f"prefecture {password}"})
    log.error("url amqp://hent:plain-pass@mq/hent")
    # Then nothing of it reaches the line
    text = stream.getvalue()
    assert password not in text and "plain-pass" not in text
    first, second = json_lines(stream)
    assert first["message"] == f"connector 'prefecture': password={MASK}"
    assert first["connector"] == f"prefecture {MASK}"
    assert first["exception"].startswith("Traceback") and f"password {MASK}" in first["exception"]
    assert second["message"] == f"url amqp://hent:{MASK}@mq/hent"


def test_human_format_is_unchanged_and_carries_no_fields() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "human", stream)
    with log_context(document_id="doc1"):
        logging.getLogger("bus.runtime").warning("delivery %s to %s: attempt 1 failed", "d1", "prefecture",
                                                 extra={"state": "PENDING"})
    [line] = stream.getvalue().splitlines()
    match = HUMAN_LINE.match(line)
    assert match is not None, line
    assert match.groups() == ("WARNING", "bus.runtime", "delivery d1 to prefecture: attempt 1 failed")


def test_human_format_masks_secrets_too() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "human", stream)
    secret = Secret("another-s3cret-value").reveal()
    logging.getLogger("bus").error("token %s", secret)
    assert stream.getvalue().rstrip().endswith(f"bus: token {MASK}")


def test_auto_is_human_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", FakeTerminal()) == "human"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", FakeTerminal()) == "json"
    assert resolve_format("human", io.StringIO()) == "human"
    with pytest.raises(ValueError, match="log format 'xml': one of auto, human, json"):
        resolve_format("xml", io.StringIO())


def test_the_command_line_takes_the_format_and_defaults_to_human() -> None:
    parser = run_bus.build_parser()
    assert parser.parse_args(["demo"]).log_format == "human"
    assert parser.parse_args(["--log-format", "json", "demo"]).log_format == "json"
    assert parser.parse_args(["--log-format", "auto", "demo"]).log_format == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-format", "xml", "demo"])
    assert "auto: human when stderr is a terminal, json otherwise" in " ".join(parser.format_help().split())

