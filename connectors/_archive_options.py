"""Options of every endpoint that takes ACTES archives (a folder, SFTP, Hent's SOAP contract)."""

from __future__ import annotations

__all__ = ["ArchiveOptions"]

from pydantic import BaseModel, Field


class ArchiveOptions(BaseModel):
    """The names the ministry knows the transmitting application by, and the size limit."""

    trigram: str = Field(
        "HNT",
        pattern=r"^[A-Za-z0-9]{3}$",
        description="TRIGRAMME of the application towards the ministry: prefix of the archive name.",
    )
    quadrigram: str = Field(
        "EACT",
        pattern=r"^[A-Z]{4}$",
        description="QUADRIGRAMME (EACT in production, TACT in test): prefix of the envelope name.",
    )
    max_archive_size: int = Field(
        150 * 1024 * 1024, gt=0, description="Largest archive accepted, in bytes (S2LOW: 150 MiB)."
    )
