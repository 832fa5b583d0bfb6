"""What both directions of the SFTP connector share: options, host key pinning, a session, errors.

Secure by default: the server's host key must be pinned, by a ``known_hosts`` file or by its
``host_key_fingerprint`` (``SHA256:...`` as ``ssh-keygen -lf`` prints it); an unknown or
changed key is refused with a message saying how to pin it, never added.  Every step is
bounded: ``connect_timeout`` covers the TCP connection, the SSH banner, the key exchange and
authentication (a watchdog closes the transport if they last longer), ``timeout`` is the
longest the server may stay silent during any SFTP operation (the channel's timeout, and on
Linux the socket's TCP_USER_TIMEOUT, which also ends a send blocked on a server that stopped
reading: paramiko alone would retry that send for as long as the connection lives), so a
server that stops answering cannot hang a worker.  Retrying (with back-off) is the runtime's
business: every failure here is a :class:`TransientError`, with ``alert`` when a person must
act (credentials, host key).
"""

from __future__ import annotations

__all__ = [
    "SftpOptions", "SftpSession", "SessionHolder", "TransientAlert", "sftp_errors", "fingerprint",
    "load_key", "open_session", "remote_join", "read_local", "makedirs",
]

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paramiko
from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from bus.config import Duration, ExistingFile
from bus.errors import ConfigError, HentError, TransientAlert, TransientError
from bus.secrets import Secret, redact


class SftpOptions(BaseModel):
    """Where the SFTP server is, how to log in, how its host key is pinned, how long to wait."""

    host: str = Field(..., min_length=1, description="Server name or address.")
    port: int = Field(22, gt=0, lt=65536, description="SSH port.")
    username: str = Field(..., min_length=1, description="User to log in as.")
    key_file: ExistingFile | None = Field(None, description="Private key (ed25519 or RSA, OpenSSH or PEM format).")
    key_passphrase: Secret | None = Field(
        None, description="Passphrase of key_file, if it has one.", json_schema_extra={"secret": True}
    )
    password: Secret | None = Field(
        None, description="Password (a ${ENV} or ${file:...} reference).", json_schema_extra={"secret": True}
    )
    known_hosts: ExistingFile | None = Field(None, description="known_hosts file that pins the server's host key.")
    host_key_fingerprint: str | None = Field(
        None, pattern=r"^SHA256:[A-Za-z0-9+/]{43}=?$",
        description="The host key's fingerprint as `ssh-keygen -lf` prints it (SHA256:...).",
    )
    connect_timeout: Duration = Field(10.0, gt=0, description="Seconds to connect, exchange keys and log in.")
    timeout: Duration = Field(30.0, gt=0, description="Seconds the server may stay silent during an operation.")
    path: str = Field(..., min_length=1, description="The remote folder.")

    @model_validator(mode="after")
    def _secure(self) -> SftpOptions:
        if self.known_hosts is None and self.host_key_fingerprint is None:
            raise PydanticCustomError(
                "sftp-host-key",
                "the server's host key must be pinned: set known_hosts (ssh-keyscan -p {port} {host} >> known_hosts)"
                " or host_key_fingerprint (SHA256:..., from ssh-keygen -lf)", {"port": self.port, "host": self.host},
            )
        if self.key_file is None and self.password is None:
            raise PydanticCustomError("sftp-credentials", "set key_file or password to log in", {})
        if self.key_passphrase is not None and self.key_file is None:
            raise PydanticCustomError("sftp-credentials", "key_passphrase needs key_file", {})
        return self

    def where(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -lf`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def load_key(connector: str, options: SftpOptions, error: type[HentError] = ConfigError) -> paramiko.PKey | None:
    """The private key of ``key_file`` (ed25519, RSA, ECDSA), or None; ``error`` when unreadable."""
    if options.key_file is None:
        return None
    passphrase = options.key_passphrase.reveal().encode() if options.key_passphrase is not None else None
    try:
        return paramiko.PKey.from_path(options.key_file, passphrase)
    except (paramiko.PasswordRequiredException, TypeError) as exc:  # cryptography: TypeError, no password
        message = f"{options.key_file} is encrypted: set key_passphrase"
        cause: Exception = exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        message = f"cannot read the private key {options.key_file}: {redact(str(exc)) or type(exc).__name__}"
        cause = exc
    raise error(f"connector {connector!r}: {message}", connector=connector, path=str(options.key_file),
                rule="sftp-key") from cause


def _host_label(options: SftpOptions) -> str:
    return options.host if options.port == 22 else f"[{options.host}]:{options.port}"


def _check_host_key(connector: str, options: SftpOptions, key: paramiko.PKey) -> None:
    """Refuse a host key that is not the pinned one, saying how to pin it."""
    offered = f"{key.get_name()} {fingerprint(key)}"
    where = f"{options.host}:{options.port}"
    hint = (f"if it is the right server (ask its administrator), pin it: ssh-keyscan -p {options.port} "
            f"{options.host} >> {options.known_hosts or 'known_hosts'}, or set host_key_fingerprint: "
            f"{fingerprint(key)}")
    common: dict[str, Any] = {"connector": connector, "path": where}
    if options.host_key_fingerprint is not None:
        if options.host_key_fingerprint.rstrip("=") == fingerprint(key):
            return
        raise TransientAlert(
            f"connector {connector!r}: the host key of {where} changed: it offers {offered}, "
            f"host_key_fingerprint pins {options.host_key_fingerprint}; refused (it may be an attack): {hint}",
            rule="sftp-host-key-changed", **common)
    try:
        known = paramiko.HostKeys(str(options.known_hosts)).lookup(_host_label(options))
    except (OSError, paramiko.SSHException) as exc:
        raise TransientAlert(f"connector {connector!r}: cannot read known_hosts {options.known_hosts}: {exc}",
                             rule="sftp-known-hosts", **common) from exc
    if known is not None and key.get_name() in known:
        if known[key.get_name()] == key:
            return
        raise TransientAlert(
            f"connector {connector!r}: the host key of {where} changed: it offers {offered}, which is not the one "
            f"in {options.known_hosts}; refused (it may be an attack). If the server's key was really replaced, "
            f"remove the old line (ssh-keygen -R '{_host_label(options)}' -f {options.known_hosts}), then {hint}",
            rule="sftp-host-key-changed", **common)
    raise TransientAlert(
        f"connector {connector!r}: the host key of {where} ({offered}) is unknown: it is not in "
        f"{options.known_hosts}; refused: {hint}", rule="sftp-host-key-unknown", **common)


@contextmanager
def sftp_errors(connector: str, path: str) -> Iterator[None]:
    """Translate paramiko and socket exceptions into Hent's errors, ``raise ... from exc``."""
    where: dict[str, Any] = {"connector": connector, "path": path}
    try:
        yield
    except paramiko.AuthenticationException as exc:
        raise TransientAlert(f"connector {connector!r}: the server refused the login ({exc}); check username, "
                             "key_file or password", rule="sftp-auth", **where) from exc
    except TimeoutError as exc:
        raise TransientError(f"connector {connector!r}: no answer from the server on {path} in time; retried later",
                             rule="sftp-timeout", **where) from exc
    except (paramiko.SSHException, EOFError, ConnectionError) as exc:
        raise TransientError(f"connector {connector!r}: SSH connection failed or lost on {path} "
                             f"({type(exc).__name__}: {redact(str(exc))[:200]}); retried later",
                             rule="sftp-connection", **where) from exc
    except PermissionError as exc:
        raise TransientAlert(f"connector {connector!r}: permission denied on {path}: give the SFTP user read and "
                             "write access", rule="sftp-permission", **where) from exc
    except FileNotFoundError as exc:
        raise TransientError(f"connector {connector!r}: {path} does not exist on the server: create it or fix path",
                             rule="sftp-not-found", **where) from exc
    except OSError as exc:
        raise TransientError(f"connector {connector!r}: {exc.strerror or exc or type(exc).__name__} on {path}; "
                             "retried later", rule="sftp-io", **where) from exc


class SftpSession:
    """One SSH transport and its SFTP client; :meth:`close` releases both."""

    def __init__(self, transport: paramiko.Transport, sftp: paramiko.SFTPClient) -> None:
        self.transport = transport
        self.sftp = sftp
        self.used = time.monotonic()

    def alive(self) -> bool:
        return self.transport.is_active()

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            self.transport.close()


def open_session(connector: str, options: SftpOptions) -> SftpSession:
    """Connect, check the host key, log in, open SFTP: all within ``connect_timeout``, or an error."""
    pkey = load_key(connector, options, TransientAlert)
    with sftp_errors(connector, options.where()):
        sock = socket.create_connection((options.host, options.port), timeout=options.connect_timeout)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux: data unacknowledged for `timeout` aborts the connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(options.timeout * 1000))
        transport = paramiko.Transport(sock)
        # a server that accepts and never speaks: the watchdog closes the transport, waking every wait
        watchdog = threading.Timer(options.connect_timeout, transport.close)
        watchdog.daemon = True
        watchdog.start()
        try:
            transport.banner_timeout = transport.handshake_timeout = transport.auth_timeout = options.connect_timeout
            _prefer_pinned_key_type(options, transport)
            transport.start_client(timeout=options.connect_timeout)
            key = transport.get_remote_server_key()
            _check_host_key(connector, options, key)
            if pkey is not None:
                transport.auth_publickey(options.username, pkey)
            if not transport.is_authenticated() and options.password is not None:
                transport.auth_password(options.username, options.password.reveal())
            channel = transport.open_session(timeout=options.connect_timeout)
            channel.settimeout(options.timeout)
            channel.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(channel)
        except BaseException as exc:
            transport.close()
            sock.close()
            if not watchdog.is_alive() and not isinstance(exc, TransientError):
                raise TimeoutError(f"no answer within connect_timeout ({options.connect_timeout}s)") from exc
            raise
        finally:
            watchdog.cancel()
        sftp.get_channel().settimeout(options.timeout)  # type: ignore[union-attr]
        return SftpSession(transport, sftp)


def _prefer_pinned_key_type(options: SftpOptions, transport: paramiko.Transport) -> None:
    """Ask the server for the key type that known_hosts pins (as OpenSSH's client does)."""
    if options.known_hosts is None:
        return
    try:
        known = paramiko.HostKeys(str(options.known_hosts)).lookup(_host_label(options))
    except (OSError, paramiko.SSHException):
        return
    if known:
        security = transport.get_security_options()
        pinned = [t for t in known.keys() if t in security.key_types]
        security.key_types = [*pinned, *(t for t in security.key_types if t not in pinned)]


class SessionHolder:
    """SSH sessions reused across polls and sends: one per thread at a time, kept for the next use.

    Each thread takes an idle session (or opens one) for the length of a ``using`` block and
    gives it back after: two workers upload side by side on two sessions, and the next send
    pays no SSH handshake.  A nested ``using`` in the same thread reuses its session.  A
    session is closed on any error inside the block, when found dead or idle longer than
    ``timeout``, and by :meth:`close` (a session busy at that moment is closed when given back).
    """

    def __init__(self, connector: str, options: SftpOptions) -> None:
        self.connector = connector
        self.options = options
        self._idle: list[SftpSession] = []
        self._lock = threading.Lock()
        self._generation = 0  #: bumped by close(): sessions of an older generation are not kept
        self._local = threading.local()

    @contextmanager
    def using(self, path: str) -> Iterator[paramiko.SFTPClient]:
        """The SFTP client, errors translated; the session is closed if anything fails."""
        held: SftpSession | None = getattr(self._local, "session", None)
        if held is not None:  # nested in this thread: the same session
            with sftp_errors(self.connector, path):
                yield held.sftp
            return
        with sftp_errors(self.connector, path):
            session, generation = self._take()
            if session is None:
                session = open_session(self.connector, self.options)
            self._local.session = session
            try:
                yield session.sftp
            except BaseException:
                session.close()
                raise
            finally:
                self._local.session = None
            session.used = time.monotonic()
            self._give_back(session, generation)

    def _take(self) -> tuple[SftpSession | None, int]:
        stale = []
        with self._lock:
            generation, session = self._generation, None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.alive() and time.monotonic() - candidate.used <= self.options.timeout:
                    session = candidate
                    break
                stale.append(candidate)
        for old in stale:
            old.close()
        return session, generation

    def _give_back(self, session: SftpSession, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._idle.append(session)
                return
        session.close()

    def close(self) -> None:
        """Close the idle sessions now, the busy ones when given back."""
        with self._lock:
            self._generation += 1
            idle, self._idle = self._idle, []
        for session in idle:
            session.close()


def remote_join(folder: str, name: str) -> str:
    return f"{folder.rstrip('/')}/{name}" if folder not in ("", "/") else f"{folder}{name}"


def read_local(path: Path, chunk: int = 1 << 18) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while data := handle.read(chunk):
            yield data


def makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    """Create the remote ``folder`` and its missing parents."""
    current = "/" if folder.startswith("/") else ""
    for part in (p for p in folder.split("/") if p):
        current = remote_join(current, part) if current else part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current)
