"""Options of every source that picks bundles up from a folder, local or remote."""

from __future__ import annotations

__all__ = ["INTAKE_THREADS_HELP", "IntakeThreads", "PickupOptions", "ReadyConfig", "SourceLimits"]

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.config import Duration, Schedule
from connectors._limits import SourceLimits

#: ``intake_threads`` of a source: None for its type's default (``InboundConnector.intake_threads_default``)
IntakeThreads = Annotated[int | None, Field(ge=1, le=16)]
INTAKE_THREADS_HELP = (
    "How many bundles of a poll are taken in side by side (claimed, copied into the spool, recorded). "
    "Default: 1 for a folder (one after the other costs the least CPU: threads would contend for the "
    "interpreter), 4 for an SFTP server or a database (each step waits for the server); raise it for a "
    "folder on a network share."
)


class ReadyConfig(BaseModel):
    """When a dropped bundle may be taken."""

    model_config = ConfigDict(extra="forbid")

    min_age: Duration = Field(5.0, description="Files must be at least this old (seconds or '5s').")
    stable: bool = Field(True, description="Sizes must not change between two polls.")
    done_file: str | None = Field(
        None, description="Suffix of a marker file (e.g. '.done'): when set, only bundles with one are taken."
    )


class PickupOptions(BaseModel):
    """What to look for, how often, when it is ready, and what to do once it is processed."""

    pattern: str = Field("*.json", description="Glob of the sidecar files that announce a bundle.")
    poll: Schedule = Field("30s", description="How often to look: a duration ('30s') or a cron line.")
    ready: ReadyConfig = Field(default_factory=ReadyConfig, description="Readiness rules.")
    on_success: Literal["move", "delete"] = Field("move", description="Move processed bundles or delete them.")
    max_per_poll: int = Field(500, gt=0, description="At most this many bundles are claimed per poll.")
    intake_threads: IntakeThreads = Field(None, description=INTAKE_THREADS_HELP)
    limits: SourceLimits = Field(
        default_factory=SourceLimits, description="Size limits of a bundle, and the room it must leave."
    )
