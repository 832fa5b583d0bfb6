"""Connector classes by (type, direction), found by name and imported only when used.

A connector lives in ``connectors/<type>_<direction>.py`` (direction: ``inbound`` or
``outbound``) and exposes its class as ``Connector``.  ``bus/`` never imports
``connectors/`` statically: :func:`connector_class` imports the module the first time a
configuration names it, so an optional driver (zeep, paramiko, a database driver) is
needed only by the configurations that use it.  Plugins and tests add classes with
:func:`register`, which wins over the package.
"""

from __future__ import annotations

__all__ = [
    "DIRECTIONS",
    "PACKAGE",
    "connector_class",
    "known_types",
    "load_object",
    "register",
    "suggest",
    "unregister",
]

import difflib
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterable
from typing import Any

from bus.errors import ConfigError

DIRECTIONS = ("inbound", "outbound")
#: the package scanned for ``<type>_<direction>`` modules
PACKAGE = "connectors"
#: import name → what to ``pip install`` when they differ
_PIP_NAMES = {
    "yaml": "PyYAML",
    "psycopg2": "psycopg2-binary",
    "MySQLdb": "mysqlclient",
    "cx_Oracle": "oracledb",
    "ldap": "python-ldap",
}

_registered: dict[tuple[str, str], type] = {}


def suggest(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'folder'?)"`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def register(type_name: str, direction: str, cls: type) -> None:
    """Make ``cls`` the ``type_name`` connector for ``direction`` (plugins, tests)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    _registered[(type_name, direction)] = cls


def unregister(type_name: str, direction: str) -> None:
    """Forget what :func:`register` added (the package's module is found again)."""
    _registered.pop((type_name, direction), None)


def _scan() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return found
    for module in pkgutil.iter_modules(list(spec.submodule_search_locations)):
        type_name, _, direction = module.name.rpartition("_")
        if type_name and not type_name.startswith("_") and direction in DIRECTIONS:
            found.setdefault(type_name, set()).add(direction)
    return found


def known_types() -> dict[str, set[str]]:
    """Every connector type and the directions it has: ``{"folder": {"inbound", "outbound"}}``."""
    found = _scan()
    for type_name, direction in _registered:
        found.setdefault(type_name, set()).add(direction)
    return found


def connector_class(type_name: str, direction: str) -> type[Any]:
    """The ``Connector`` class of ``connectors/<type_name>_<direction>.py``.

    Raises :class:`ConfigError` for an unknown type ("did you mean ...?"), a type that has
    no such direction, or a driver the module needs that is not installed.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    registered = _registered.get((type_name, direction))
    if registered is not None:
        return registered
    types = known_types()
    if type_name not in types:
        hint = suggest(type_name, types) or (f" (known types: {', '.join(sorted(types))})" if types else "")
        raise ConfigError(f"unknown connector type '{type_name}'{hint}", rule="unknown-connector-type")
    if direction not in types[type_name]:
        raise ConfigError(
            f"connector type '{type_name}' cannot be used as {direction}", rule="connector-direction"
        )
    module_name = f"{PACKAGE}.{type_name}_{direction}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or module_name.startswith(missing) or missing == PACKAGE:
            raise
        package = _PIP_NAMES.get(missing, missing)
        raise ConfigError(
            f"connector type '{type_name}' needs the Python package '{package}', which is not installed: "
            f"pip install {package}",
            rule="driver-missing",
        ) from exc
    cls = getattr(module, "Connector", None)
    if not isinstance(cls, type):
        raise ConfigError(f"module {module_name} defines no Connector class", rule="connector-module")
    return cls


def load_object(spec: str) -> Any:
    """The object named ``"package.module:Name"`` (or ``"package.module.Name"``), imported now."""
    module_name, colon, attribute = spec.partition(":")
    if not colon:
        module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(f"cannot load '{spec}': write it as 'package.module:Name'", rule="load-object")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot load '{spec}': {exc}", rule="load-object") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ConfigError(
                f"cannot load '{spec}': {module_name} has no attribute '{attribute}'", rule="load-object"
            ) from exc
    return target
