"""Drop folder, outbound: write each artifact atomically (temporary name, fsync, rename).

A folder never answers, so a delivery here ends DELIVERED.  An artifact already present
with the same bytes counts as delivered (a retry after a crash); a different file under
the same name is never overwritten.
"""

from __future__ import annotations

__all__ = ["Connector", "FolderOutboundConfig"]

import hashlib
import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from bus.config import ConfigPath, EndpointConfig
from bus.connector import ARCHIVE, DECP_JSON, DECP_XML, FILE, Artifact, OutboundConnector, SendResult
from bus.errors import DocumentError, TransientError
from connectors._archive_options import ArchiveOptions
from connectors._folder_common import atomic_write, folder_errors, remove_abandoned_temps


class FolderOutboundConfig(EndpointConfig, ArchiveOptions):
    """``type: folder`` used in a route's ``to``."""

    type: Literal["folder"] = "folder"
    path: ConfigPath = Field(..., description="Folder the artifacts are written to.")
    create: bool = Field(False, description="Create the folder when it is missing.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class FolderOutbound(OutboundConnector):
    Config = FolderOutboundConfig
    consumes: tuple[str, ...] = (ARCHIVE, FILE, DECP_XML, DECP_JSON)
    config: FolderOutboundConfig
    _swept = False

    def connect(self) -> None:
        folder = self.config.path
        with folder_errors(self.name, folder):
            if self.config.create:
                folder.mkdir(parents=True, exist_ok=True)
            if folder.is_dir() and not self._swept:
                remove_abandoned_temps(folder)  # what an earlier run, killed mid-write, left
                self._swept = True
            if not folder.is_dir():
                raise TransientError(
                    f"connector {self.name!r}: folder {folder} does not exist: create it or set create: true",
                    connector=self.name,
                    path=str(folder),
                )

    def send(self, artifact: Artifact) -> SendResult:
        target = self.config.path / artifact.name
        with folder_errors(self.name, target):
            if target.exists():
                if _sha256(target) == artifact.sha256:
                    return SendResult("DELIVERED", remote_id=str(target), detail="already present")
                raise DocumentError(
                    f"{target} already exists with other content; it is never overwritten: "
                    "move it away, then replay the delivery",
                    connector=self.name,
                    path=str(target),
                    rule="never-overwrite",
                )
            atomic_write(target, source=artifact.path, crash="send.mid-upload")
        return SendResult("DELIVERED", remote_id=str(target))

    def reachable(self) -> tuple[bool, str]:
        """Ready when the folder exists, or when ``create: true`` and the first send can create it."""
        folder = self.config.path
        if folder.is_dir() or not self.config.create:
            return folder.is_dir(), str(folder)
        parent = next(p for p in (folder, *folder.parents) if p.exists())  # a file named so, or a parent
        if parent == folder:
            return False, f"{folder} is not a folder"
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return True, f"{folder} (created on the first send)"
        return False, f"{folder} cannot be created: {parent} is not a writable folder"


Connector = FolderOutbound
