"""The RabbitMQ of ``HENT_TEST_AMQP_URL`` (``.ci/run`` starts one), for the tests that need one.

``amqp_url()`` gives it, or skips the test when the variable is unset — or fails it when
``HENT_REQUIRE_RABBITMQ=1`` (as ``tests/pg.py`` does for PostgreSQL).  The ``rabbit_vhost``
fixture (a test argument named ``vhost``) gives a virtual host of the test's own, made and
deleted with ``rabbitmqctl``; :func:`broker_stopped` stops the broker's application for the
time of a ``with`` block and always starts it again.  Import them with
``from tests.rabbit import rabbit_vhost  # noqa: F401``.

``rabbitmqctl`` is ``HENT_TEST_RABBITMQCTL`` (default: the one on PATH), aimed at the node
``HENT_TEST_RABBITMQ_NODE`` when set (else ``RABBITMQ_NODENAME``, as rabbitmqctl reads it).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

VARIABLE = "HENT_TEST_AMQP_URL"


def _skip_or_fail(message: str) -> NoReturn:
    if os.environ.get("HENT_REQUIRE_RABBITMQ") == "1":
        pytest.fail(message)
    pytest.skip(message)


def amqp_url() -> str:
    url = os.environ.get(VARIABLE)
    if not url:
        _skip_or_fail(f"{VARIABLE} unset: no RabbitMQ to test against (.ci/run starts one)")
    return url


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run ``rabbitmqctl -q ARGS`` against the test broker's node; its output."""
    command = shlex.split(os.environ.get("HENT_TEST_RABBITMQCTL", "rabbitmqctl"))
    node = os.environ.get("HENT_TEST_RABBITMQ_NODE")
    if node:
        command += ["-n", node]
    try:
        done = subprocess.run([*command, "-q", *args], capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        _skip_or_fail(f"{command[0]} not found: the tests need rabbitmqctl (apt-get install rabbitmq-server)")
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} exited with {done.returncode}: {done.stderr or done.stdout}")
    return done.stdout


@dataclass(frozen=True)
class RabbitVhost:
    """A virtual host of one test's own on the test broker."""

    name: str
    url: str  #: the broker's URL aimed at this virtual host

    def queues(self) -> dict[str, str]:
        """Each queue of the virtual host and its type (``quorum``, ``classic``)."""
        out = rabbitmqctl("list_queues", "-p", self.name, "--no-table-headers", "name", "type")
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


@pytest.fixture(name="vhost")
def rabbit_vhost() -> Iterator[RabbitVhost]:
    parts = urlsplit(amqp_url())
    name = f"hent-test-{uuid.uuid4().hex[:10]}"
    user = parts.username or "guest"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        yield RabbitVhost(name, urlunsplit(parts._replace(path=f"/{name}")))
    finally:
        rabbitmqctl("delete_vhost", name)


@contextmanager
def broker_stopped() -> Iterator[None]:
    """The broker's application stopped (``rabbitmqctl stop_app``) in the block, started again after."""
    rabbitmqctl("stop_app")
    try:
        yield
    finally:
        rabbitmqctl("start_app")
