"""What an operator must hear about at every start: secret files others can read, TLS not verified.

Neither stops the bus — a key file readable by every user of the machine still works, and
``verify_tls: false`` is an explicit choice — but both are said out loud:
``run_bus.py check`` lists them as warnings (its exit code unchanged) and ``run_bus.py run``
logs them at start; an endpoint with ``verify_tls: false`` also logs its warning each time it
is built (:func:`warn_unverified_tls`), whatever its address.

Files checked (``secret-file-mode``): every ``${file:...}`` a value of the YAML refers to, the
private keys (``key_file``, ``client_key``) and a ``client_cert`` file that holds its private
key too, wherever a connector names them (its ``credentials:`` sets
included): none may be readable by others nor writable by its group or others
(``chmod 600``).  Trust files (``trust-file-mode``: ``known_hosts``, ``ca_file``) are public,
but whoever may write them chooses which server the bus trusts: none may be writable by its
group or others.
"""

from __future__ import annotations

__all__ = [
    "KEY_FIELDS",
    "TRUST_FIELDS",
    "configuration_warnings",
    "file_mode_warnings",
    "unverified_tls_message",
    "unverified_tls_warnings",
    "warn_unverified_tls",
]

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bus.errors import Problem
from bus.secrets import secret_file_paths
from bus.yamlconf import format_path, load_yaml, locate

if TYPE_CHECKING:
    from bus.config import Config

log = logging.getLogger(__name__)

#: fields naming a private key: readable by its owner only
KEY_FIELDS = ("key_file", "client_key")
#: fields naming a file that says whom to trust: writable by its owner only
TRUST_FIELDS = ("known_hosts", "ca_file")


def unverified_tls_message(connector: str) -> str:
    """What ``verify_tls: false`` means, said the same way in the log and by ``check``."""
    return (
        f"connector {connector!r}: verify_tls is false: the server's certificate is NOT verified; anyone on "
        "the network path can pose as the server and intercept the credentials and what is sent; set "
        "verify_tls: true (with ca_file for a private CA)"
    )


def warn_unverified_tls(connector: str, config: Any) -> None:
    """Log a WARNING when ``config`` turns TLS verification off (called as each endpoint is built)."""
    if getattr(config, "verify_tls", True) is False:
        log.warning("%s", unverified_tls_message(connector), extra={"connector": connector})


def configuration_warnings(config: Config) -> list[Problem]:
    """:func:`file_mode_warnings` and :func:`unverified_tls_warnings`, in that order."""
    return [*file_mode_warnings(config), *unverified_tls_warnings(config)]


def unverified_tls_warnings(config: Config) -> list[Problem]:
    """One ``tls-unverified`` warning per connector whose ``verify_tls`` is false."""
    document = _raw(config)
    found = []
    for name, model in _connector_models(config):
        if getattr(model, "verify_tls", True) is False:
            found.append(
                _where(document, ("connectors", name, "verify_tls"), unverified_tls_message(name), "tls-unverified")
            )
    return list(dict.fromkeys(found))


def file_mode_warnings(config: Config) -> list[Problem]:
    """One warning per secret, key or trust file of the configuration whose mode lets others in."""
    document = _raw(config)
    found: list[Problem] = []
    for loc, value in _strings(document, ()):
        mark, _ = locate(document, loc)
        base = Path(os.path.dirname(mark.file)) if mark else Path.cwd()
        for path in secret_file_paths(value, base):
            found += _mode_problems(document, loc, path, f"secret file {path} (${{file:...}})", trust=False)
    for name, model in _connector_models(config):
        for loc, field, path in _files_of(model, ("connectors", name)):
            if field in KEY_FIELDS:
                found += _mode_problems(document, loc, path, f"private key {path}", trust=False)
            elif field in TRUST_FIELDS:
                found += _mode_problems(document, loc, path, f"{field} {path}", trust=True)
            elif field == "client_cert" and _holds_key(path):
                found += _mode_problems(
                    document, loc, path, f"client certificate {path}, which holds its private key,", trust=False
                )
    return list(dict.fromkeys(found))


def _raw(config: Config) -> Any:
    """The YAML as written (``${...}`` not resolved), with where each key is, or None."""
    if config.source is None:
        return None
    document, _, _ = load_yaml(config.source)
    return document


def _connector_models(config: Config) -> Iterator[tuple[str, BaseModel]]:
    """Each connector's model, once per side routes use it on."""
    for name, default in config.connectors.items():
        directions = sorted(config.directions(name))
        models = [config.connector_config(name, d) for d in directions] if directions else [default]
        for model in models:
            yield name, model


def _strings(node: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*loc, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*loc, index))
    elif isinstance(node, str) and "${" in node:
        yield loc, node


def _files_of(model: BaseModel, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str, Path]]:
    """(where, field name, path) of every key, certificate and trust file ``model`` names, nested ones too."""
    for name, info in type(model).model_fields.items():
        key, value = info.alias or name, getattr(model, name)
        if name in (*KEY_FIELDS, *TRUST_FIELDS, "client_cert") and isinstance(value, str | Path):
            yield (*loc, key), name, Path(value)
        elif isinstance(value, BaseModel):
            yield from _files_of(value, (*loc, key))
        elif isinstance(value, list | tuple):  # credentials: [{sirens, client_key}, ...]
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _files_of(item, (*loc, key, index))


def _holds_key(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return b"PRIVATE KEY-----" in handle.read(1 << 20)
    except OSError:
        return False


def _mode_problems(document: Any, loc: tuple[Any, ...], path: Path, what: str, *, trust: bool) -> list[Problem]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return []  # a missing file is check's error, not this warning
    wrong = [] if trust or not mode & stat.S_IROTH else ["readable by every user"]
    if mode & stat.S_IWGRP:
        wrong.append("writable by its group")
    if mode & stat.S_IWOTH:
        wrong.append("writable by every user")
    if not wrong:
        return []
    if trust:
        message = (
            f"{what} is {' and '.join(wrong)} (mode {mode:04o}): whoever may write it chooses which server "
            f"is trusted; chmod go-w {path}"
        )
        return [_where(document, loc, message, "trust-file-mode")]
    message = f"{what} is {' and '.join(wrong)} (mode {mode:04o}): chmod 600 {path}"
    return [_where(document, loc, message, "secret-file-mode")]


def _where(document: Any, loc: tuple[Any, ...], message: str, rule: str) -> Problem:
    mark, _ = locate(document, loc) if document is not None else (None, loc)
    return Problem(
        message, file=mark.file if mark else None, line=mark.line if mark else None, field=format_path(loc), rule=rule
    )
