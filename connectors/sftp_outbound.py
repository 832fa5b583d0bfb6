"""SFTP, outbound: upload each artifact under a temporary name, check its size, rename it.

The bytes go to ``<path>/<name>.part`` (streamed from the spool, memory flat), the remote
size is checked, then the file is renamed to its final name (``posix-rename@openssh.com``
where the server offers it), so no reader ever sees a partial file under the final name;
an optional done-file follows.  Before anything is sent the remote folder is listed: a file
already there under the final name with the same size counts as delivered (the outcome of
an earlier try was unknown); one with another size is never overwritten.  A leftover
``.part`` of an interrupted try is overwritten.

A platform that answers on SFTP (an ARActe, an anomaly, later letters) is given ``answers:``,
the remote folder it writes into (``connectors/_sftp_answers.py``): an ACTES archive sent
there ends SENT, and the runtime's answer poller reads that folder; a file relayed unchanged
still ends DELIVERED.
"""

from __future__ import annotations

__all__ = ["Connector", "SftpOutbound", "SftpOutboundConfig"]

import stat
from typing import Literal

import paramiko
from pydantic import Field

from bus.config import EndpointConfig
from bus.connector import ARCHIVE, DECP_JSON, DECP_XML, FILE, Artifact, InboxItem, OutboundConnector, SendResult
from bus.crash import halfway
from bus.errors import ConfigError, DocumentError, TransientError
from connectors._archive_options import ArchiveOptions
from connectors._sftp_answers import AnswerFolderOptions, SftpAnswerFolder
from connectors._sftp_common import SessionHolder, SftpOptions, load_key, makedirs, read_local, remote_join


class SftpOutboundConfig(EndpointConfig, SftpOptions, ArchiveOptions):
    """``type: sftp`` used in a route's ``to``."""

    type: Literal["sftp"] = Field("sftp", description="The protocol: SFTP (SSH).")
    create_dirs: bool = Field(False, description="Create the remote folder when it is missing.")
    done_file: str | None = Field(
        None, min_length=1, description="Suffix of an empty marker written after each file (e.g. '.done')."
    )
    answers: AnswerFolderOptions | None = Field(
        None, description="The remote folder the platform answers in (ARActe, anomalies, letters): archives sent "
        "here then wait for their answer (SENT)."
    )


#: what a platform answers about in its answer folder: the ministry (ACTES), the procurement platform (DECP)
ANSWERED = (ARCHIVE, DECP_XML, DECP_JSON)


class SftpOutbound(OutboundConnector):
    Config = SftpOutboundConfig
    consumes: tuple[str, ...] = (ARCHIVE, FILE, DECP_XML, DECP_JSON)
    config: SftpOutboundConfig

    def __init__(self, name: str, config: SftpOutboundConfig) -> None:
        super().__init__(name, config)
        self.session = SessionHolder(name, config)
        self.answers = SftpAnswerFolder(name, config.answers, self.session) if config.answers else None
        self._folder_made = False  #: create_dirs done once; again after any failure

    @property
    def has_inbox(self) -> bool:
        return self.answers is not None

    def inbox(self) -> list[InboxItem]:
        return self.answers.inbox() if self.answers else []

    def fetch(self, item: InboxItem) -> tuple[bytes, dict[str, bytes]]:
        assert self.answers is not None
        return self.answers.fetch(item)

    def settle(self, item: InboxItem, problem: str | None) -> None:
        assert self.answers is not None
        self.answers.settle(item, problem)

    def check(self) -> None:
        load_key(self.name, self.config, ConfigError)

    def connect(self) -> None:
        with self.session.using(self.config.path):
            pass

    def close(self) -> None:
        self.session.close()

    def send(self, artifact: Artifact) -> SendResult:
        final = remote_join(self.config.path, artifact.name)
        size = self._size(artifact)
        try:
            with self.session.using(final) as sftp:
                return self._upload(sftp, artifact, final, size)
        except BaseException:
            self._folder_made = False  # the folder may have gone: made again on the next try
            raise

    def _upload(self, sftp: paramiko.SFTPClient, artifact: Artifact, final: str, size: int) -> SendResult:
        """``final`` once: asked first (one stat), then written to ``.part``, checked, renamed."""
        if self.config.create_dirs and not self._folder_made:
            makedirs(sftp, self.config.path)
            self._folder_made = True
        present = _size_of(sftp, final)
        if present is not None:
            if present == size:
                self._done_file(sftp, final)
                return SendResult(self._sent_state(artifact), remote_id=final, detail="already present")
            raise DocumentError(
                f"connector {self.name!r}: {final} already exists on the server with another size; it is never "
                "overwritten: move it away, then replay the delivery",
                connector=self.name, path=final, rule="never-overwrite",
            )
        part = f"{final}.part"
        with sftp.open(part, "wb") as remote:
            remote.set_pipelined(True)
            for chunk in halfway("send.mid-upload", read_local(artifact.path), size):
                remote.write(chunk)
        written = sftp.stat(part).st_size
        if written != size:
            raise TransientError(
                f"connector {self.name!r}: {part} holds {written} bytes instead of {size}; sent again later",
                connector=self.name, path=part, rule="sftp-size",
            )
        _rename(sftp, part, final)
        self._done_file(sftp, final)
        return SendResult(self._sent_state(artifact), remote_id=final)

    def _sent_state(self, artifact: Artifact) -> str:
        """SENT when the platform will answer (an archive or a DECP, an answer folder), else DELIVERED."""
        return "SENT" if self.answers is not None and artifact.kind in ANSWERED else "DELIVERED"

    def _size(self, artifact: Artifact) -> int:
        try:
            size = artifact.path.stat().st_size
        except OSError as exc:
            raise TransientError(
                f"connector {self.name!r}: cannot read {artifact.name} from the spool ({exc.strerror or exc}); "
                "retried later", connector=self.name, path=str(artifact.path), rule="spool-read",
            ) from exc
        if artifact.kind == ARCHIVE and size > self.config.max_archive_size:
            raise DocumentError(
                f"connector {self.name!r}: {artifact.name} is {size} bytes, more than max_archive_size "
                f"({self.config.max_archive_size}): split the annexes or raise the limit the endpoint allows",
                connector=self.name, path=artifact.name, field="size", rule="archive-max-size",
            )
        return size

    def _done_file(self, sftp: paramiko.SFTPClient, final: str) -> None:
        if self.config.done_file:
            with sftp.open(f"{final}{self.config.done_file}", "wb"):
                pass

    def reachable(self) -> tuple[bool, str]:
        where = f"{self.config.where()}/{self.config.path.lstrip('/')}"
        try:
            with self.session.using(self.config.path) as sftp:
                if not stat.S_ISDIR(sftp.stat(self.config.path).st_mode or 0):
                    return False, f"{where} is not a folder"
        except TransientError as exc:
            if exc.rule == "sftp-not-found" and self.config.create_dirs:
                return True, f"{where} (created on the first send)"
            return False, exc.message
        return True, where


def _size_of(sftp: paramiko.SFTPClient, path: str) -> int | None:
    """The size of ``path`` on the server, None when there is no such file (one round trip)."""
    try:
        return sftp.stat(path).st_size or 0
    except FileNotFoundError:
        return None


def _rename(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """posix-rename (atomic, replaces) where the server has it, else a plain rename."""
    try:
        sftp.posix_rename(source, target)
    except OSError as exc:
        if exc.errno is not None:
            raise
        sftp.rename(source, target)  # the server does not know the extension (SFTP_OP_UNSUPPORTED)


Connector = SftpOutbound
