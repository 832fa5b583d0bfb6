"""A small, real SFTP server on paramiko's server classes: the demo's SFTP partner, with nothing but Python.

It serves one folder, ``root``, as the client's ``/``: every path a client names is resolved
inside it, and one that leaves it (``..`` above ``/``, a symlink pointing outside) is refused
with *permission denied*; an absolute path is read from ``root`` (``/inbox/x`` is
``root/inbox/x``).  Listing, stat, lstat, open (read, write, append, create, exclusive,
truncate), remove, rename (refused when the target exists, as in SFTP v3), the
``posix-rename@openssh.com`` extension (replaces), mkdir, rmdir and setstat (mode, times,
size) are served; OS errors become the SFTP status a client expects (no such file,
permission denied, failure).  Symlinks cannot be created through it.

Logins: ``username`` with a public key of ``authorized_keys``, or any user of ``passwords``
with that password; only the ``sftp`` subsystem is offered (no exec, no shell, no
forwarding).  Each connection is served by its paramiko transport thread; :meth:`SftpServer.stop`
closes the listening socket and every connection, and returns within a few seconds.

The confinement is a check before each operation (``realpath`` inside ``root``), good for
a demo and tests, not a security boundary against a local user racing symlinks; the test
suite's reference server stays OpenSSH's sshd.

Run it alone::

    HENT_SFTP_PASSWORD=... python -m simulators.sftp_server --root /tmp/sftp --password-env HENT_SFTP_PASSWORD
"""

from __future__ import annotations

__all__ = ["SftpServer", "main"]

import argparse
import base64
import errno
import hmac
import io
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from connectors._sftp_common import fingerprint as _fingerprint

log = logging.getLogger(__name__)
#: paramiko's server-side transports log a client's plain disconnection as an ERROR: kept for DEBUG
_TRANSPORT_LOG = f"{__name__}.transport"
logging.getLogger(_TRANSPORT_LOG).setLevel(logging.CRITICAL)

_T = TypeVar("_T")
_STOP_WITHIN = 4.0  #: seconds stop() waits for the server's threads in all
_NO_LINK = (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.EOPNOTSUPP)  #: hard links impossible here: plain rename


def _new_host_key() -> paramiko.PKey:
    """A fresh Ed25519 key (paramiko cannot generate one: ``cryptography`` does), else RSA 2048."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        return paramiko.Ed25519Key(file_obj=io.StringIO(pem.decode("ascii")))
    except (ImportError, ValueError, paramiko.SSHException) as exc:
        log.debug("no Ed25519 host key (%s): RSA 2048 instead", exc)
        return paramiko.RSAKey.generate(2048)


def _status(exc: OSError) -> int:
    """The SFTP status for an OS error, as OpenSSH's sftp-server maps it."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return int(SFTP_PERMISSION_DENIED)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return int(SFTP_NO_SUCH_FILE)
    return int(SFTP_FAILURE)


def _guarded(what: str, path: str, action: Callable[[], _T]) -> _T | int:
    """``action()``, or the SFTP status of the error it raised."""
    try:
        return action()
    except OSError as exc:
        log.debug("sftp %s %r refused: %s", what, path, exc)
        return _status(exc)
    except ValueError as exc:  # a NUL byte in a path
        log.debug("sftp %s %r refused: %s", what, path, exc)
        return int(SFTP_FAILURE)


def _apply(attr: paramiko.SFTPAttributes, target: int | str) -> None:
    """Set what ``attr`` carries (mode, times, size) on a path or a file descriptor; owners are left alone."""
    flags = attr._flags
    if flags & attr.FLAG_PERMISSIONS:
        os.chmod(target, attr.st_mode & 0o7777)
    if flags & attr.FLAG_AMTIME:
        os.utime(target, (attr.st_atime, attr.st_mtime))
    if flags & attr.FLAG_SIZE:
        os.truncate(target, attr.st_size)


class _Handle(paramiko.SFTPHandle):
    """An open file: paramiko's handle reads and writes through ``readfile`` / ``writefile``."""

    def __init__(self, file: IO[Any], flags: int) -> None:
        super().__init__(flags)
        self.file = file
        access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
        if access in (os.O_RDONLY, os.O_RDWR):
            self.readfile = file
        if access in (os.O_WRONLY, os.O_RDWR):
            self.writefile = file

    def stat(self) -> paramiko.SFTPAttributes | int:
        return _guarded("fstat", "<handle>", lambda: paramiko.SFTPAttributes.from_stat(os.fstat(self.file.fileno())))

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        self.file.flush()
        result = _guarded("fsetstat", "<handle>", lambda: _apply(attr, self.file.fileno()))
        return int(SFTP_OK) if result is None else result


class _ChrootSftp(paramiko.SFTPServerInterface):
    """The SFTP operations, each on a path resolved inside ``root``."""

    def __init__(self, server: paramiko.ServerInterface, root: str) -> None:
        super().__init__(server)
        self.root = root

    def _local(self, path: str, *, follow: bool = True) -> str:
        """The real path of the client's ``path`` (the link itself when not ``follow``); outside root: denied."""
        parts: list[str] = []
        for part in path.split("/"):
            if part == "..":
                if not parts:
                    raise PermissionError(errno.EACCES, "outside the served folder", path)
                parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        local = os.path.join(self.root, *parts)
        if follow or not parts:
            real = os.path.realpath(local)
        else:
            real = os.path.join(os.path.realpath(os.path.dirname(local)), parts[-1])
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(errno.EACCES, "outside the served folder", path)
        return real

    def _entry(self, path: str) -> str:
        """The directory entry ``path`` names (a symlink itself, not its target); never root itself."""
        real = self._local(path, follow=False)
        if real == self.root:
            raise PermissionError(errno.EACCES, "the served folder itself", path)
        return real

    def canonicalize(self, path: str) -> str:
        parts: list[str] = []
        for part in path.split("/"):
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        return "/" + "/".join(parts)

    def list_folder(self, path: str) -> list[paramiko.SFTPAttributes] | int:
        def listing() -> list[paramiko.SFTPAttributes]:
            folder = self._local(path)
            entries = []
            for name in sorted(os.listdir(folder)):
                try:
                    entries.append(paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(folder, name)), name))
                except FileNotFoundError:
                    continue  # removed meanwhile
            return entries

        return _guarded("list", path, listing)

    def stat(self, path: str) -> paramiko.SFTPAttributes | int:
        return _guarded("stat", path, lambda: paramiko.SFTPAttributes.from_stat(os.stat(self._local(path))))

    def lstat(self, path: str) -> paramiko.SFTPAttributes | int:
        return _guarded(
            "lstat", path, lambda: paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path, follow=False)))
        )

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> _Handle | int:
        def opening() -> _Handle:
            mode = attr.st_mode & 0o777 if attr._flags & attr.FLAG_PERMISSIONS else 0o666
            fd = os.open(self._local(path), flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            access = flags & (os.O_RDONLY | os.O_WRONLY | os.O_RDWR)
            if access == os.O_WRONLY:
                how = "ab" if flags & os.O_APPEND else "wb"  # on a descriptor: "wb" does not truncate
            elif access == os.O_RDWR:
                how = "a+b" if flags & os.O_APPEND else "r+b"
            else:
                how = "rb"
            try:
                return _Handle(os.fdopen(fd, how), flags)
            except BaseException:
                os.close(fd)
                raise

        return _guarded("open", path, opening)

    def remove(self, path: str) -> int:
        return self._done("remove", path, lambda: os.remove(self._entry(path)))

    def rename(self, oldpath: str, newpath: str) -> int:
        def renaming() -> None:
            source, target = self._entry(oldpath), self._entry(newpath)
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "the target exists", newpath)
            if stat.S_ISDIR(os.lstat(source).st_mode):
                os.rename(source, target)
                return
            try:  # as OpenSSH: a hard link never replaces what appeared meanwhile
                os.link(source, target, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
                os.rename(source, target)
            else:
                os.unlink(source)

        return self._done("rename", f"{oldpath} -> {newpath}", renaming)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._done(
            "posix-rename", f"{oldpath} -> {newpath}", lambda: os.replace(self._entry(oldpath), self._entry(newpath))
        )

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        mode = attr.st_mode & 0o777 if attr._flags & attr.FLAG_PERMISSIONS else 0o777
        return self._done("mkdir", path, lambda: os.mkdir(self._entry(path), mode))

    def rmdir(self, path: str) -> int:
        return self._done("rmdir", path, lambda: os.rmdir(self._entry(path)))

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return self._done("setstat", path, lambda: _apply(attr, self._local(path)))

    @staticmethod
    def _done(what: str, path: str, action: Callable[[], None]) -> int:
        result = _guarded(what, path, action)
        return int(SFTP_OK) if result is None else result


class _Logins(paramiko.ServerInterface):
    """Who may log in, and to what: sessions with the ``sftp`` subsystem only."""

    def __init__(self, username: str, authorized_keys: Sequence[paramiko.PKey], passwords: Mapping[str, str]) -> None:
        self.username = username
        self.keys = {key.asbytes() for key in authorized_keys}
        self.passwords = dict(passwords)

    def get_allowed_auths(self, username: str) -> str:
        # the same answer for every user: it does not tell which users exist
        return ",".join(m for m, on in (("publickey", self.keys), ("password", self.passwords)) if on)

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.username and key.asbytes() in self.keys:
            return int(paramiko.AUTH_SUCCESSFUL)
        log.debug("public key login refused for %r (%s)", username, key.get_name())
        return int(paramiko.AUTH_FAILED)

    def check_auth_password(self, username: str, password: str) -> int:
        expected = self.passwords.get(username)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            return int(paramiko.AUTH_SUCCESSFUL)
        log.debug("password login refused for %r", username)
        return int(paramiko.AUTH_FAILED)

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return int(paramiko.OPEN_SUCCEEDED)
        return int(paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED)

    def check_channel_subsystem_request(self, channel: paramiko.Channel, name: str) -> bool:
        if name != "sftp":
            log.debug("subsystem %r refused", name)
            return False
        return bool(super().check_channel_subsystem_request(channel, name))


class SftpServer:
    """An SFTP server on ``host:port`` (0: a free port) serving ``root``; ``with SftpServer(...) as server:``."""

    def __init__(
        self, root: Path, *, host: str = "127.0.0.1", port: int = 0, host_key: paramiko.PKey | None = None,
        authorized_keys: Sequence[paramiko.PKey] = (), passwords: Mapping[str, str] | None = None,
        username: str = "hent",
    ) -> None:
        if not Path(root).is_dir():
            raise ValueError(f"the SFTP server's root {root} is not a folder")
        self.root = Path(os.path.realpath(root))
        self.host = host
        self.host_key = host_key if host_key is not None else _new_host_key()
        self.username = username
        self._requested_port = port
        self._logins = _Logins(username, authorized_keys, passwords or {})
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._transports: list[paramiko.Transport] = []

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        listener = self._listener
        return int(listener.getsockname()[1]) if listener is not None else self._requested_port

    def fingerprint(self) -> str:
        """The host key's ``SHA256:...``, as ``ssh-keygen -lf`` prints it."""
        return _fingerprint(self.host_key)

    def known_hosts_line(self) -> str:
        """``[host]:port type base64``: a known_hosts line pinning this server's host key."""
        label = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{label} {self.host_key.get_name()} {self.host_key.get_base64()}"

    def start(self) -> SftpServer:
        """Listen, and accept connections in a daemon thread; each is served by its own transport thread."""
        if self._listener is not None:
            raise RuntimeError(f"the SFTP server on {self.host}:{self.port} is already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self._requested_port), family=family)
        self._listener.settimeout(0.2)  # the accept loop looks at the stop flag this often
        self._stopping.clear()
        self._acceptor = threading.Thread(target=self._accept, name=f"sftp-server-{self.port}", daemon=True)
        self._acceptor.start()
        log.debug("SFTP server on %s:%s serving %s, host key %s", self.host, self.port, self.root, self.fingerprint())
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection; wait (bounded) for their threads."""
        deadline = time.monotonic() + _STOP_WITHIN
        with self._lock:
            self._stopping.set()
            listener, self._listener = self._listener, None
            transports, self._transports = self._transports, []
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept loop at once (Linux)
            except OSError:
                pass  # elsewhere the loop sees the flag within its accept timeout
            listener.close()
        for transport in transports:
            transport.close()
        for thread in [self._acceptor, *transports]:
            if thread is not None and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._acceptor = None
        log.debug("SFTP server on %s stopped, %d connection(s) closed", self.host, len(transports))

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        listener = self._listener
        while listener is not None and not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                log.debug("accept failed: %s", exc)
                time.sleep(0.1)  # out of descriptors, say: no busy loop
                continue
            try:
                self._serve(sock, address)
            except Exception as exc:  # one broken connection must not stop the server
                log.debug("connection from %s dropped: %s", address, exc)
                sock.close()

    def _serve(self, sock: socket.socket, address: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        transport.set_log_channel(_TRANSPORT_LOG)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _ChrootSftp, str(self.root))
        with self._lock:
            if self._stopping.is_set():
                sock.close()
                return
            self._transports = [t for t in self._transports if t.is_alive()]
            transport.start_server(event=threading.Event(), server=self._logins)  # returns: its thread negotiates
            self._transports.append(transport)
        log.debug("connection from %s", address)


def _public_keys(path: Path) -> list[paramiko.PKey]:
    """The keys of a ``.pub`` or ``authorized_keys`` file (options before the key type are skipped)."""
    keys = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        start = next((i for i, f in enumerate(fields) if f.startswith(("ssh-", "ecdsa-"))), None)
        if start is None or start + 1 >= len(fields):
            raise ValueError(f"{path}: not a public key line: {line[:40]!r}")
        keys.append(paramiko.PKey.from_type_string(fields[start], base64.b64decode(fields[start + 1])))
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simulators.sftp_server --root DIR ...``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m simulators.sftp_server", description="An SFTP server serving one folder as /."
    )
    parser.add_argument("--root", type=Path, required=True, help="the folder clients see as /")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--username", default="hent", help="the user who logs in (default hent)")
    parser.add_argument("--authorized-key", type=Path, action="append", default=[], metavar="FILE.pub",
                        help="a public key (or authorized_keys file) allowed to log in; repeatable")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the user's password")
    parser.add_argument("--host-key", type=Path, metavar="FILE", help="private host key (default: a fresh Ed25519)")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"--root {args.root} is not a folder")
    passwords: dict[str, str] = {}
    if args.password_env:
        if not os.environ.get(args.password_env):
            parser.error(f"--password-env: the environment variable {args.password_env} is not set or empty")
        passwords[args.username] = os.environ[args.password_env]
    try:
        keys = [key for path in args.authorized_key for key in _public_keys(path)]
        host_key = paramiko.PKey.from_path(args.host_key) if args.host_key else None
    except (OSError, ValueError, paramiko.SSHException) as exc:
        parser.error(str(exc))
    if not keys and not passwords:
        parser.error("nobody could log in: give --authorized-key or --password-env")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with SftpServer(args.root, host=args.host, port=args.port, host_key=host_key, authorized_keys=keys,
                        passwords=passwords, username=args.username) as server:
            print(f"port {server.port}", flush=True)
            print(f"fingerprint {server.fingerprint()}", flush=True)
            print(f"known_hosts {server.known_hosts_line()}", flush=True)
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
