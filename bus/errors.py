"""The one exception tree of Hent, sorted by what happens next.

::

    HentError                    base; carries route, connector, path, field, rule
    ├── ConfigError              refuse to start: found while reading the configuration
    ├── TransientError           retry with back-off; repeated, it opens the endpoint's circuit
    │   └── (a password rejected at run time is transient, with an alert)
    └── DocumentError            this document fails with its reason; the bus goes on
        └── ValidationFailed     the built XML or archive breaks the schema or a rule

Third-party exceptions (lxml, paramiko, zeep, SQLAlchemy) are translated at the boundary
with ``raise ... from exc``; nothing from them reaches route code.  Every message says
what failed, on which object, and what to do; the object is also in attributes so that
no handler parses strings.
"""

from __future__ import annotations

__all__ = [
    "HentError",
    "ConfigError",
    "TransientError",
    "TransientAlert",
    "DocumentError",
    "ValidationFailed",
    "Problem",
]

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Problem:
    """One finding: which file, where in it, which field, which rule, and the message."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None
    rule: str | None = None

    def __str__(self) -> str:
        where = self.file or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        head = ": ".join(part for part in (where, self.field) if part)
        text = f"{head}: {self.message}" if head else self.message
        if self.rule:
            text = f"{text} [{self.rule}]"
        return text


class HentError(Exception):
    """Base of every error Hent raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        route: str | None = None,
        connector: str | None = None,
        path: str | None = None,
        field: str | None = None,
        rule: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.route = route
        self.connector = connector
        self.path = path
        self.field = field
        self.rule = rule
        self.line = line

    def problem(self) -> Problem:
        return Problem(self.message, file=self.path, line=self.line, field=self.field, rule=self.rule)

    def __str__(self) -> str:
        return str(self.problem())


class _WithProblems(HentError):
    """An error that may carry several findings, every one of them reported."""

    def __init__(self, message: str, *, problems: list[Problem] | None = None, **where: object) -> None:
        super().__init__(message, **where)  # type: ignore[arg-type]
        self.problems = list(problems or [])

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return "\n".join(str(p) for p in self.problems)


class ConfigError(_WithProblems):
    """The configuration is wrong: refuse to start.  ``problems`` lists every finding."""


class TransientError(HentError):
    """Retry later: a server down, a timeout, a lock.  The document is not at fault."""


class TransientAlert(TransientError):
    """Retried like any transient failure, but a person must act: credentials, a certificate, a
    host key, an address refused.  The runtime logs it as an ALERT; the endpoint's circuit opens."""

    alert: ClassVar[bool] = True


class DocumentError(_WithProblems):
    """This document cannot go on; the message says which file, field and rule to fix."""


class ValidationFailed(DocumentError):
    """What the bus built breaks the schema or a rule the schema cannot express."""
