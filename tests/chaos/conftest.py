"""The ``backend`` fixture of the chaos tests (see ``_helpers.Backend``)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.chaos._helpers import EMBEDDED, PASSWORD_VARIABLE, SCALE_OUT, Backend
from tests.integration.test_scale_out import database  # noqa: F401 - a database of the case's own
from tests.rabbit import rabbit_vhost  # noqa: F401 - a virtual host of the case's own


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """The embedded default, or RabbitMQ + PostgreSQL (skipped without them, as ``tests/rabbit.py``
    and ``tests/pg.py`` say); parametrized indirectly by the cases."""
    name = getattr(request, "param", EMBEDDED)
    if name == EMBEDDED:
        return Backend(name)
    assert name == SCALE_OUT, name
    parts = urlsplit(request.getfixturevalue("vhost").url)
    ledger = request.getfixturevalue("database")
    # the password from the environment, in this process (load_config) and the bus's (start passes it on)
    monkeypatch.setenv(PASSWORD_VARIABLE, parts.password or "")
    netloc = f"{parts.username}:${{{PASSWORD_VARIABLE}}}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return Backend(name, broker=urlunsplit(parts._replace(netloc=netloc)), ledger=ledger)
