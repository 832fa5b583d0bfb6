"""What the chaos tests share: the backend a case runs on.

The same YAML runs on the embedded default (SQLite ledger, kombu's SQLAlchemy broker on SQLite)
or, with two URLs changed, on RabbitMQ and PostgreSQL; a case asks for the ``backend`` fixture
(``tests/chaos/conftest.py``) with ``@pytest.mark.parametrize("backend", [...], indirect=True)``
and passes its configuration through :meth:`Backend.apply`.  On RabbitMQ + PostgreSQL each case
has a virtual host and a database of its own; the broker's password is read from
``HENT_BROKER_PASSWORD``, as a deployment writes it, never from the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

EMBEDDED = "embedded"
SCALE_OUT = "rabbitmq+postgresql"
BACKENDS = [EMBEDDED, SCALE_OUT]
PASSWORD_VARIABLE = "HENT_BROKER_PASSWORD"  #: passed on to the bus processes (other HENT_ variables are not)


@dataclass(frozen=True)
class Backend:
    """The broker and ledger URLs a case writes in ``bus:`` (none on the embedded default)."""

    name: str
    broker: str = ""  #: ``amqp://user:${HENT_BROKER_PASSWORD}@host:port/vhost``
    ledger: str = ""  #: ``postgresql+psycopg://...``, a database of the case's own

    @property
    def embedded(self) -> bool:
        return self.name == EMBEDDED

    def apply(self, config: Path) -> Path:
        """``config`` with this backend's URLs in its ``bus:`` section."""
        if not self.embedded:
            settings = yaml.safe_load(config.read_text(encoding="utf-8"))
            settings["bus"].update(broker=self.broker, ledger=self.ledger)
            config.write_text(yaml.safe_dump(settings, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return config
