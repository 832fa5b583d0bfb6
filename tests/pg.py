"""The PostgreSQL of ``HENT_TEST_POSTGRES_URL`` (``.ci/run`` starts one), for the tests that need one.

``postgres_url()`` gives it, or skips the test when the variable is unset — or fails it when
``HENT_REQUIRE_POSTGRES=1`` (as ``tests/sshd.py`` does for sshd).  The ``pg_sandbox`` fixture
(a test argument named ``pg``) gives a schema of the test's own and creates login roles with
just the grants a test names; the schema and the roles are dropped afterwards.  Import it
with ``from tests.pg import pg_sandbox  # noqa: F401``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

VARIABLE = "HENT_TEST_POSTGRES_URL"


def postgres_url() -> str:
    url = os.environ.get(VARIABLE)
    if not url:
        message = f"{VARIABLE} unset: no PostgreSQL to test against (.ci/run starts one)"
        if os.environ.get("HENT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return url


@dataclass
class PgSandbox:
    """A schema of one test's own in the test database, and roles made for it."""

    url: URL  #: the administrator's URL (postgresql+psycopg://)
    schema: str
    engine: Engine
    roles: list[str] = field(default_factory=list)

    def execute(self, *statements: str) -> None:
        """Run ``statements`` as the administrator, ``{schema}`` standing for the test's schema."""
        with self.engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement.replace("{schema}", self.schema)))

    def rows(self, query: str) -> list[tuple[object, ...]]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query.replace("{schema}", self.schema)))]

    def role(self, password: str, *grants: str) -> str:
        """A login role with ``password``, USAGE on the schema and the ``grants`` (``GRANT ... TO {role}``)."""
        name = f"{self.schema}_r{len(self.roles) + 1}"
        self.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'", f"GRANT USAGE ON SCHEMA {{schema}} TO {name}")
        self.roles.append(name)
        self.execute(*(grant.replace("{role}", name) for grant in grants))
        return name

    def url_of(self, role: str) -> str:
        """The URL a role logs in with, without its password."""
        return self.url.set(username=role, password=None).render_as_string(hide_password=False)


@pytest.fixture(name="pg")
def pg_sandbox() -> Iterator[PgSandbox]:
    url = make_url(postgres_url()).set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    sandbox = PgSandbox(url, f"hent_{uuid.uuid4().hex[:10]}", engine)
    sandbox.execute("CREATE SCHEMA {schema}")
    try:
        yield sandbox
    finally:
        sandbox.execute("DROP SCHEMA {schema} CASCADE")
        for role in sandbox.roles:
            sandbox.execute(f"DROP OWNED BY {role}", f"DROP ROLE {role}")
        engine.dispose()
