"""The ISO-8859-1 policy: French text meets latin-1 in ACTES messages and S2LOW's API.

One policy for every endpoint (DESIGN.md): ``TRANSLITERATE`` replaces what latin-1 lacks
(œ → oe, ’ → ', € → EUR, — → -, … → ..., narrow spaces → space, accented letters outside
latin-1 → their base letter) and fails on what it cannot replace; ``FAIL`` refuses any
character outside latin-1.  A character is never dropped silently: each failure is a
:class:`~bus.errors.Problem` naming the field, the character and its position.

Characters XML 1.0 forbids (C0 controls other than tab, newline, carriage return) are
refused under both policies (rule ``xml-char``).  Under ``TRANSLITERATE`` the C1 controls
U+0080..U+009F, usually Windows-1252 bytes read as latin-1, are read as Windows-1252
(``\\x92`` → ’ → ') and the non-breaking space U+00A0 becomes a plain space.
"""

from __future__ import annotations

__all__ = ["TextPolicy", "check_latin1", "to_latin1"]

import re
import unicodedata
from enum import StrEnum

from bus.errors import DocumentError, Problem


class TextPolicy(StrEnum):
    """What to do with a character that ISO-8859-1 cannot encode."""

    TRANSLITERATE = "transliterate"
    FAIL = "fail"


_TABLE: dict[str, str] = {
    "\u0153": "oe",
    "\u0152": "OE",  # œ Œ
    "\u2019": "'",
    "\u2018": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u02bc": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u2039": "<",
    "\u203a": ">",
    "\u20ac": "EUR",
    "\u2014": "-",
    "\u2013": "-",
    "\u2012": "-",
    "\u2011": "-",
    "\u2010": "-",
    "\u2212": "-",
    "\u2015": "-",
    "\u2026": "...",
    "\u0141": "L",  # Ł: letters NFKD does not decompose
    "\u0142": "l",
    "\u0110": "D",
    "\u0111": "d",
    "\u0131": "i",
    "\u0126": "H",
    "\u0127": "h",
    "\u2022": "-",
    "\u2122": "TM",
    "\u0178": "Y",
    "\u0160": "S",
    "\u0161": "s",
    "\u017d": "Z",
    "\u017e": "z",
    "\u00a0": " ",
    "\u202f": " ",
    "\u2007": " ",
    "\u2009": " ",
    "\u200a": " ",
    "\u2002": " ",
    "\u2003": " ",
    "\u2004": " ",
    "\u2005": " ",
    "\u2006": " ",
    "\u2008": " ",
    "\u205f": " ",
    "\u3000": " ",
}


def _is_latin1(text: str) -> bool:
    return all(ord(ch) < 0x100 for ch in text)


def _is_xml_char(ch: str) -> bool:
    code = ord(ch)
    return code >= 0x20 or ch in "\t\n\r"


def _transliterate(ch: str) -> str | None:
    """Latin-1 replacement of one character, or None if there is none."""
    if ch in _TABLE:
        return _TABLE[ch]
    if 0x80 <= ord(ch) <= 0x9F:  # a Windows-1252 byte read as latin-1
        try:
            decoded = bytes([ord(ch)]).decode("cp1252")
        except UnicodeDecodeError:
            return None
        return _transliterate(decoded) if not _is_latin1(decoded) else decoded
    if _is_latin1(ch):
        return ch
    composed = unicodedata.normalize("NFKC", ch)
    if composed and _is_latin1(composed) and all(_is_xml_char(c) for c in composed):
        return composed
    decomposed = unicodedata.normalize("NFKD", ch)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    base = "".join(_TABLE.get(c, c) for c in base)
    if base and _is_latin1(base) and all(_is_xml_char(c) for c in base):
        return base
    return None


def _describe(ch: str) -> str:
    shown = ch if ch.isprintable() else repr(ch)[1:-1]
    return f"U+{ord(ch):04X} {shown}"


#: text that every policy keeps as it is: printable ASCII and latin-1 letters, tab, newlines
_PLAIN = re.compile(r"[\t\n\r\x20-\x7e\xa1-\xff]*")


def _convert(text: str, policy: TextPolicy, field: str, file: str | None) -> tuple[str, list[Problem]]:
    if _PLAIN.fullmatch(text):  # the common case, without looking at each character
        return text, []
    policy = TextPolicy(policy)
    out: list[str] = []
    problems: list[Problem] = []
    for index, ch in enumerate(text):
        position = index + 1
        if not _is_xml_char(ch):
            problems.append(
                Problem(
                    f"character {_describe(ch)} at position {position} is not allowed in XML; remove it",
                    file=file,
                    field=field,
                    rule="xml-char",
                )
            )
            continue
        if policy is TextPolicy.FAIL:
            if ord(ch) < 0x100:
                out.append(ch)
            else:
                problems.append(
                    Problem(
                        f"character {_describe(ch)} at position {position} is not in ISO-8859-1; "
                        "replace it or set the text policy to transliterate",
                        file=file,
                        field=field,
                        rule="latin-1",
                    )
                )
            continue
        replacement = _transliterate(ch)
        if replacement is None:
            problems.append(
                Problem(
                    f"character {_describe(ch)} at position {position} is not in ISO-8859-1 "
                    "and has no transliteration; replace it",
                    file=file,
                    field=field,
                    rule="latin-1",
                )
            )
        else:
            out.append(replacement)
    return "".join(out), problems


def check_latin1(text: str, *, policy: TextPolicy, field: str, file: str | None = None) -> list[Problem]:
    """Every character of ``text`` the policy cannot turn into latin-1, as problems."""
    return _convert(text, policy, field, file)[1]


def to_latin1(text: str, *, policy: TextPolicy, field: str, file: str | None = None) -> str:
    """``text`` made ISO-8859-1-safe under ``policy``; DocumentError listing every refused character."""
    result, problems = _convert(text, policy, field, file)
    if problems:
        first = problems[0]
        raise DocumentError(
            f"{field}: {first.message}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            problems=problems,
            path=file,
            field=field,
            rule=first.rule,
        )
    return result
