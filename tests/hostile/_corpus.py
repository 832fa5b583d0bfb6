"""The hostile-input corpus's bookkeeping and its families of mutations.

Each case calls the function a user's input reaches; it must return, or raise one of the bus's
own errors (:class:`~bus.errors.HentError`) with a message.  Anything else is a crash, and a
case whose document vanishes without a word (a predicate per family) is a document lost.
``conftest.py`` prints the count at the end of the run, and the table with ``-s``.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bus.errors import HentError


@dataclass(frozen=True)
class Outcome:
    family: str
    case: str
    verdict: str  #: ok, refused, CRASH, LOST
    seen: str  #: what a user would see


OUTCOMES: list[Outcome] = []


def _first_line(text: str, width: int = 150) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def attempt(family: str, case: str, call: Callable[[], Any], *, lost: Callable[[Any], bool] | None = None,
            shown: Callable[[Any], str] | None = None) -> Any:
    """Run ``call``; record and assert that it returned or refused with a HentError and a message."""
    try:
        result = call()
    except HentError as exc:
        text = str(exc)
        OUTCOMES.append(Outcome(family, case, "refused", f"{type(exc).__name__}: {_first_line(text)}"))
        assert text.strip(), f"{family}/{case}: {type(exc).__name__} without a message"
        return exc
    except Exception as exc:  # noqa: BLE001 - what the corpus is looking for
        OUTCOMES.append(Outcome(family, case, "CRASH", f"{type(exc).__name__}: {_first_line(str(exc))}"))
        raise AssertionError(f"{family}/{case}: crashed with {type(exc).__name__}: {exc!s:.300}") from exc
    if lost is not None and lost(result):
        OUTCOMES.append(Outcome(family, case, "LOST", _first_line(repr(result))))
        raise AssertionError(f"{family}/{case}: the document was lost without an error: {result!r:.300}")
    OUTCOMES.append(Outcome(family, case, "ok", _first_line(shown(result) if shown else "accepted")))
    return result


# -- families of mutations, on bytes -------------------------------------------------------

def truncations(data: bytes, count: int = 8) -> Iterator[tuple[str, bytes]]:
    """``data`` cut at ``count`` places (never whole)."""
    for n in range(count):
        end = len(data) * n // count
        yield f"truncated-{end}", data[:end]


def encodings(text: str) -> Iterator[tuple[str, bytes]]:
    """``text`` in encodings a vendor may pick, and bytes no encoding reads."""
    yield "utf-16-le-bom", codecs.BOM_UTF16_LE + text.encode("utf-16-le")
    yield "utf-16-be-no-bom", text.encode("utf-16-be")
    yield "utf-8-bom", codecs.BOM_UTF8 + text.encode("utf-8")
    yield "latin-1", text.encode("latin-1", "replace")
    yield "cp1252", text.encode("cp1252", "replace")
    yield "utf-32", text.encode("utf-32")
    yield "invalid-utf-8", text.encode("utf-8").replace(b"e", b"\xc3\x28", 3)
    yield "lone-surrogate", text.encode("utf-8") + b"\xed\xa0\x80"


CONTROL_VALUES = {
    "nul": "a\x00b", "bell": "a\x07b", "escape": "\x1b[31mred\x1b[0m", "c1": "a\x85b\x9fc", "bidi": "abc\u202edcba",
    "zero-width": "a\u200bb\ufeffc", "line-separator": "a\u2028b", "crlf": "a\r\nb", "non-latin": "€œ’—🙂",
    "lone-surrogate": "a\udc80b",
}

HUGE = {"huge-1mb": "x" * (1 << 20), "huge-words": "mot " * 200_000}

WRONG_TYPES: dict[str, Any] = {
    "null": None, "int": 42, "float": 1e308, "negative": -1, "bool": True, "list": ["a", "b"], "empty-list": [],
    "object": {"a": 1}, "nan-text": "NaN", "empty": "", "spaces": "   ", "big-int": 10**40,
}

ENTITY_ATTACKS = {
    "xxe-file": '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>',
    "xxe-http": '<!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]>',
    "billion-laughs": '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8)) + "]>",
    "quadratic": '<!DOCTYPE x [<!ENTITY q "' + "q" * 50_000 + '">]>',
    "parameter-entity": '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
    "external-dtd": '<!DOCTYPE x SYSTEM "http://127.0.0.1:9/x.dtd">',
    "public-dtd": '<!DOCTYPE x PUBLIC "-//X//DTD X//EN" "file:///etc/passwd">',
    "empty-internal": "<!DOCTYPE x []>",
}
#: the reference each attack puts in a text (``&e;`` for the XXEs, the top entity for the laughs)
ENTITY_REFERENCES = {"xxe-file": "&e;", "xxe-http": "&e;", "billion-laughs": "&i;", "quadratic": "&q;" * 200}


def deep_xml(depth: int) -> bytes:
    return b"<a>" * depth + b"</a>" * depth


def deep_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth
