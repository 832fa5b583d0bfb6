"""YAML loading that remembers where each key was written, with includes and ``${...}``.

Every mapping is a :class:`MarkedDict` and every sequence a :class:`MarkedList`; their
``__marks__`` give, for each key or item, the :class:`Mark` (file, 1-based line) where it
is written, so that an error found later (by pydantic, by a cross-reference check) is
reported at the right place, in the included file when the key is there.

Two ways to split a configuration:

* ``!include relative/path.yaml`` in place of any value: that file's document goes there;
* a top-level ``include: [a.yaml, b.yaml]`` key: each file's top-level mapping is merged
  into the including one: lists are appended, mappings merged key by key; a key of a
  section defined in two files (``connectors.rh_outbox`` twice) is a problem naming both.

Paths are relative to the including file.  An include cycle is a problem, as is a YAML
syntax error and a key written twice in one mapping.
"""

from __future__ import annotations

__all__ = [
    "Mark",
    "MarkedDict",
    "MarkedList",
    "describe",
    "format_path",
    "interpolate",
    "keys_at",
    "load_yaml",
    "locate",
    "validation_problems",
]

import os
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from bus.errors import Problem
from bus.registry import suggest
from bus.secrets import redact, resolve_references


class Mark(NamedTuple):
    """Where something is written: file and 1-based line."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"

    def relative_to(self, other: Mark | None) -> str:
        """``line 8`` when in ``other``'s file, else ``file:8``: for "first at ..." messages."""
        return f"line {self.line}" if other is not None and other.file == self.file else str(self)


class MarkedDict(dict[Any, Any]):
    """A mapping that knows where each of its keys was written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__marks__: dict[Any, Mark] = {}
        self.__mark__: Mark | None = None
        self.__dups__: list[tuple[Any, Mark, Mark]] = []  # key, second place, first place


class MarkedList(list[Any]):
    """A sequence that knows where each of its items was written."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.__marks__: list[Mark | None] = []
        self.__mark__: Mark | None = None


def format_path(parts: tuple[Any, ...] | list[Any]) -> str:
    """``("routes", 0, "from")`` → ``routes[0].from``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _Context:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.files: list[str] = []
        self.stack: list[str] = []

    def problem(
        self, message: str, mark: Mark | None, rule: str, field: str | None = None, file: str = ""
    ) -> None:
        self.problems.append(
            Problem(
                message,
                file=mark.file if mark else file or None,
                line=mark.line if mark else None,
                field=field,
                rule=rule,
            )
        )

    def load(self, path: str, via: Mark | None) -> Any:
        real = os.path.realpath(path)
        if real in self.stack:
            chain = " → ".join(os.path.basename(p) for p in [*self.stack[self.stack.index(real) :], real])
            self.problem(f"include cycle: {chain}", via, "include", file=path)
            return None
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.problem(f"cannot read '{path}': {reason}", via, "include", file=path)
            return None
        if path not in self.files:
            self.files.append(path)
        self.stack.append(real)
        loader = _Loader(text, self, path)
        try:
            document = loader.get_single_data()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            what = exc.problem or exc.context or "invalid YAML"
            self.problem(
                f"invalid YAML: {what}", Mark(path, mark.line + 1) if mark else None, "yaml-syntax", file=path
            )
            return None
        except yaml.YAMLError as exc:
            self.problem(f"invalid YAML: {exc}", None, "yaml-syntax", file=path)
            return None
        finally:
            loader.dispose()
            self.stack.pop()
        if isinstance(document, MarkedDict) and "include" in document:
            document = self._include(document, path)
        return document

    def _include(self, document: MarkedDict, path: str) -> MarkedDict:
        names = document.pop("include")
        mark = document.__marks__.pop("include")
        if isinstance(names, str):
            names = MarkedList([names])
            names.__marks__ = [mark]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            self.problem("expected a list of file names", mark, "include", "include")
            return document
        self.stack.append(os.path.realpath(path))
        try:
            for index, name in enumerate(names):
                item_mark = names.__marks__[index] if isinstance(names, MarkedList) else mark
                other = self.load(_relative(path, name), item_mark)
                if other is None:
                    continue
                if not isinstance(other, MarkedDict):
                    self.problem(
                        f"'{name}' must hold a mapping to be merged", item_mark, "include", "include"
                    )
                    continue
                self._merge(document, other, ())
        finally:
            self.stack.pop()
        return document

    def _merge(self, into: MarkedDict, other: MarkedDict, path: tuple[Any, ...]) -> None:
        for key, value in other.items():
            mark = other.__marks__.get(key)
            if key not in into:
                into[key] = value
                if mark is not None:
                    into.__marks__[key] = mark
                continue
            current = into[key]
            first = into.__marks__.get(key)
            if not path and isinstance(current, MarkedDict) and isinstance(value, MarkedDict):
                self._merge(current, value, (key,))
            elif isinstance(current, MarkedList) and isinstance(value, MarkedList):
                current.extend(value)
                current.__marks__.extend(value.__marks__)
            else:
                where = first.relative_to(mark) if first else "another file"
                self.problem(
                    f"defined twice (first at {where})", mark, "duplicate-key", format_path((*path, key))
                )


def _relative(including: str, name: str) -> str:
    name = os.path.expanduser(name)
    return name if os.path.isabs(name) else os.path.normpath(os.path.join(os.path.dirname(including), name))


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, context: _Context, file: str) -> None:
        super().__init__(stream)
        self.context = context
        self.file = file

    def mark(self, node: yaml.Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1)


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> Iterator[MarkedDict]:
    data = MarkedDict()
    data.__mark__ = loader.mark(node)
    yield data
    explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    explicit_keys: set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            loader.context.problem("a key must be a plain value", loader.mark(key_node), "yaml-syntax")
            continue
        mark = loader.mark(key_node)
        if key in explicit_keys and id(key_node) in explicit:
            data.__dups__.append((key, mark, data.__marks__[key]))
        if id(key_node) in explicit:
            explicit_keys.add(key)
        data[key] = loader.construct_object(value_node, deep=True)
        data.__marks__[key] = mark


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> Iterator[MarkedList]:
    data = MarkedList()
    data.__mark__ = loader.mark(node)
    yield data
    for child in node.value:
        data.append(loader.construct_object(child, deep=True))
        data.__marks__.append(loader.mark(child))


def _construct_include(loader: _Loader, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        loader.context.problem("!include takes a file name", loader.mark(node), "include")
        return None
    name = str(loader.construct_scalar(node))
    return loader.context.load(_relative(loader.file, name), loader.mark(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)
_Loader.add_constructor("!include", _construct_include)


def _walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, Any, tuple[Any, ...]]]:
    """(container, key, path) of every value below ``node``, depth first."""
    if isinstance(node, dict):
        for key in list(node):
            yield node, key, (*path, key)
            yield from _walk(node[key], (*path, key))
    elif isinstance(node, list):
        for index in range(len(node)):
            yield node, index, (*path, index)
            yield from _walk(node[index], (*path, index))


def _mark_in(container: Any, key: Any) -> Mark | None:
    marks = getattr(container, "__marks__", None)
    if isinstance(marks, dict):
        return marks.get(key)
    if isinstance(marks, list) and isinstance(key, int) and key < len(marks):
        return marks[key]
    return None


def load_yaml(path: str | Path) -> tuple[Any, list[Problem], list[str]]:
    """Read ``path`` and its includes: (document or None, problems, files read in order)."""
    context = _Context()
    document = context.load(str(path), None)
    mappings = [(document, ())] + [(c[k], p) for c, k, p in _walk(document, ())]
    for mapping, where in mappings:
        for key, second, first in getattr(mapping, "__dups__", ()):
            context.problem(
                f"defined twice (first at {first.relative_to(second)})",
                second,
                "duplicate-key",
                format_path((*where, key)),
            )
    return document, context.problems, context.files


def interpolate(document: Any, problems: list[Problem]) -> set[tuple[Any, ...]]:
    """Resolve ``${...}`` in every string value, in place; the paths of values that had one."""
    found_at: set[tuple[Any, ...]] = set()
    for container, key, path in list(_walk(document, ())):
        value = container[key]
        if not isinstance(value, str) or "${" not in value:
            continue
        mark = _mark_in(container, key)
        base = Path(os.path.dirname(mark.file)) if mark else Path.cwd()
        text, errors, found = resolve_references(value, base)
        container[key] = text
        if found:
            found_at.add(path)
        for error in errors:
            problems.append(
                Problem(
                    redact(error),
                    file=mark.file if mark else None,
                    line=mark.line if mark else None,
                    field=format_path(path),
                    rule="secret-unresolved",
                )
            )
    return found_at


def locate(document: Any, loc: tuple[Any, ...]) -> tuple[Mark | None, tuple[Any, ...]]:
    """Where ``loc`` (a pydantic error location) is written, and ``loc`` cleaned of union tags.

    A final key that is absent (a missing field) is reported at its parent's line.
    """
    node, mark, path = document, getattr(document, "__mark__", None), []
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            mark = _mark_in(node, part) or mark
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            mark = _mark_in(node, part) or mark
            node = node[part]
        elif index < len(loc) - 1:
            continue  # a tag pydantic adds inside unions ("function-after[...]", "str")
        path.append(part)
    return mark, tuple(path)


def describe(value: Any) -> str:
    """A value as an error message shows it: ``'abc'``, ``44``, ``a mapping``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return redact(repr(value if len(value) <= 60 else value[:57] + "..."))
    return redact(str(value))


_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "path_type": "a path",
}


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is Union or origin is UnionType:
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the model accepts at ``loc`` (its aliases), or None when it is not a model there."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        origin = get_origin(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or n: f for n, f in current.model_fields.items()}
            if part not in fields:
                return None
            current = fields[part].annotation
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            current = get_args(current)[0]
        elif origin is dict:
            current = get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return None


def _message(error: Mapping[str, Any], model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, str]:
    kind, ctx = error["type"], error.get("ctx") or {}
    got = describe(error.get("input"))
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        known = sorted(keys_at(model, loc[:-1]) or [])
        hint = suggest(str(key), known) or (f" (expected one of: {', '.join(known)})" if known else "")
        return f"unknown key '{key}'{hint}", "unknown-key"
    if kind == "missing":
        return f"missing required key '{loc[-1] if loc else '?'}'", "missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got}", "type"
    if kind in ("literal_error", "enum"):
        return f"expected {ctx.get('expected')}, got {got}", "value"
    if kind in ("too_short", "too_long"):
        which = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return f"expected {which} {limit} item(s), got {ctx.get('actual_length')}", "value"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, "), "value"
    if kind in _BUILTIN_VALUE_ERRORS:
        text = str(error["msg"])
        return f"{text[:1].lower()}{text[1:]}, got {got}", "value"
    return str(error["msg"]), kind  # our own PydanticCustomError: its type is the rule


_BUILTIN_VALUE_ERRORS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "string_pattern_mismatch",
    "string_too_short",
    "string_too_long",
    "multiple_of",
    "finite_number",
    "url_parsing",
    "url_scheme",
}


def validation_problems(
    exc: ValidationError, document: Any, prefix: tuple[Any, ...], model: type[BaseModel]
) -> list[Problem]:
    """One :class:`Problem` per pydantic error, at the file and line its key is written."""
    problems = []
    for error in exc.errors(include_url=False):
        mark, path = locate(document, (*prefix, *error["loc"]))
        message, rule = _message(error, model, path[len(prefix) :])
        problems.append(
            Problem(
                redact(message),
                file=mark.file if mark else None,
                line=mark.line if mark else None,
                field=format_path(path) or None,
                rule=rule,
            )
        )
    return problems
