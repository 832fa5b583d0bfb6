"""The ISO-8859-1 policy: French text meets latin-1 in ACTES messages and S2LOW's API.

One policy for every endpoint (DESIGN.md): ``TRANSLITERATE`` replaces what latin-1 lacks
(œ → oe, ’ → ', € → EUR, — → -, … → ..., narrow spaces → space, accented letters outside
latin-1 → their base letter) and fails on what it cannot replace; ``FAIL`` refuses any
character outside latin-1.  A character is never dropped silently: each failure is a
:class:`~bus.errors.Problem` naming the file, the field, the character (``U+XXXX``, what it is)
and its position (from 1).

Some characters never reach a document, whatever its encoding and the policy: :func:`classify`
names them, :func:`check_text` lists them for UTF-8 formats (DECP) and the latin-1 policy refuses
them first.  Rules:

* ``xml-char``: what XML 1.0 forbids — C0 controls other than tab, newline and carriage return,
  and the non-characters U+FFFE, U+FFFF;
* ``control-char``: DEL U+007F and the C1 controls U+0080..U+009F.  These are latin-1 and XML
  characters, but no text holds them: they are almost always Windows-1252 bytes read as
  ISO-8859-1.  ``TRANSLITERATE`` therefore reads them as Windows-1252 (``\x92`` → ’ → ') and
  refuses the five bytes Windows-1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D);
  ``FAIL`` refuses them all;
* ``lone-surrogate``: U+D800..U+DFFF, half of a UTF-16 pair (a JSON ``"\ud800"``), which no
  encoding can write;
* ``replacement-char``: U+FFFD, the mark a decoder leaves where the bytes were not in the
  encoding it was told: the source file's encoding is wrong, and the text has already lost
  what stood there;
* ``bidi-control``: the bidirectional embeddings, overrides and isolates U+202A..U+202E,
  U+2066..U+2069, which make a text display otherwise than it reads;
* ``zero-width``: U+200B..U+200F (zero-width space, joiners, direction marks), U+2060 and
  U+FEFF inside a field: invisible, they would be sent unseen.  They are refused, not dropped,
  under both policies.

Tab, newline and carriage return are legal in XML and in the ACTES schema's ``xsd:string``, so
this module keeps them.  Whether a field may span lines is the field's rule, not the
encoding's: ACTES ``Objet`` is one line (S2LOW stores one line, Pastell's form requires
``^.{1,499}$``; standards.md §1.7), refused by :func:`transformers.actes_rules.check_act` as
``objet-newline``, and the referent's name and telephone likewise (``referent-newline``).  A
tab inside one line is legal there and kept.  Under ``TRANSLITERATE`` the non-breaking space
U+00A0 becomes a plain space.
"""

from __future__ import annotations

__all__ = ["TextPolicy", "check_latin1", "check_text", "classify", "to_latin1"]

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
    "\u0192": "f",  # ƒ, ˆ, ˜: Windows-1252 0x83, 0x88, 0x98
    "\u02c6": "^",
    "\u02dc": "~",
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


_CONTROL = ("control-char", "control character")
_BIDI = ("bidi-control", "bidirectional override")
_ZERO_WIDTH = ("zero-width", "zero-width character")
_ADVICE = {
    "xml-char": "XML does not allow it; remove it",
    "control-char": "remove it from the source",
    "lone-surrogate": "half of a UTF-16 pair with no other half (such as \\ud800 in a JSON text), which no "
    "encoding can write; fix the export",
    "replacement-char": "the source file was decoded with the wrong encoding before it reached Hent (or the "
    "mapping's encoding: is wrong), and what stood there is lost; export it again or set the "
    "right encoding",
    "bidi-control": "it makes the text display otherwise than it reads; remove it",
    "zero-width": "invisible, it would be sent unseen; remove it",
}


def classify(ch: str) -> tuple[str, str] | None:
    """(rule, what it is) for a character no document may carry, whatever its encoding; None otherwise.

    Rules: xml-char, control-char, lone-surrogate, replacement-char, bidi-control, zero-width
    (the module docstring says which characters each covers).
    """
    code = ord(ch)
    if code < 0x20:
        return None if ch in "\t\n\r" else ("xml-char", "control character")
    if code < 0x7F:
        return None
    if code <= 0x9F:
        return _CONTROL
    if code < 0x200B:
        return None
    if code <= 0x200F or code in (0x2060, 0xFEFF):
        return _ZERO_WIDTH
    if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        return _BIDI
    if 0xD800 <= code <= 0xDFFF:
        return ("lone-surrogate", "lone surrogate")
    if code == 0xFFFD:
        return ("replacement-char", "replacement character (the source's encoding was wrong)")
    if code in (0xFFFE, 0xFFFF):
        return ("xml-char", "non-character")
    return None


#: what :func:`classify` may refuse; a text without any is looked at no further
_SUSPECT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069"
    "\ud800-\udfff\ufeff\ufffd\ufffe\uffff]"
)


def _describe(ch: str) -> str:
    """``U+0153 œ`` for a character one can show, ``U+202E (RIGHT-TO-LEFT OVERRIDE)`` for the others."""
    if classify(ch) is None and ch.isprintable():
        return f"U+{ord(ch):04X} {ch}"
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X} ({name})" if name else f"U+{ord(ch):04X}"


def _refused(
    ch: str, position: int, rule: str, what: str, field: str, file: str | None, advice: str | None = None
) -> Problem:
    article = "an" if what[0] in "aeiou" else "a"
    return Problem(
        f"character {_describe(ch)} at position {position} is {article} {what}; {advice or _ADVICE[rule]}",
        file=file,
        field=field,
        rule=rule,
    )


def check_text(text: str, *, field: str, file: str | None = None) -> list[Problem]:
    """Every character of ``text`` that no document may carry (see :func:`classify`), as problems.

    For formats written in UTF-8 (DECP), where latin-1 does not apply.
    """
    if not _SUSPECT.search(text):
        return []
    problems = []
    for index, ch in enumerate(text):
        found = classify(ch)
        if found is not None:
            problems.append(_refused(ch, index + 1, *found, field, file))
    return problems


def _is_latin1(text: str) -> bool:
    return all(ord(ch) < 0x100 for ch in text)


def _is_safe(text: str) -> bool:
    """Latin-1 and nothing :func:`classify` refuses: what a transliteration may produce."""
    return bool(text) and _is_latin1(text) and not _SUSPECT.search(text)


def _windows_1252(ch: str) -> str | None:
    """The Windows-1252 character of a C1 control read from latin-1 (``\x92`` → ’), None for the five it lacks."""
    try:
        return bytes([ord(ch)]).decode("cp1252")
    except UnicodeDecodeError:
        return None


def _transliterate(ch: str) -> str | None:
    """Latin-1 replacement of one character, or None if there is none."""
    if ch in _TABLE:
        return _TABLE[ch]
    if _is_latin1(ch):
        return ch
    composed = unicodedata.normalize("NFKC", ch)
    if _is_safe(composed):
        return composed
    decomposed = unicodedata.normalize("NFKD", ch)
    base = "".join(c for c in decomposed if not unicodedata.combining(c))
    base = "".join(_TABLE.get(c, c) for c in base)
    if _is_safe(base):
        return base
    return None


def _c1(ch: str, policy: TextPolicy) -> str | None:
    """A C1 control read as Windows-1252 under TRANSLITERATE (``\\x92`` → ’ → '); None when it is refused."""
    if policy is not TextPolicy.TRANSLITERATE:
        return None
    read = _windows_1252(ch)
    return _transliterate(read) if read is not None else None


def _c1_advice(ch: str, policy: TextPolicy) -> str:
    if policy is TextPolicy.TRANSLITERATE:
        read = _windows_1252(ch)
        if read is not None:
            return f"read as Windows-1252 it is {_describe(read)}, which has no transliteration; replace it"
        return f"byte 0x{ord(ch):02X} is not a Windows-1252 character either; remove it from the source"
    return (
        "usually a Windows-1252 byte read as ISO-8859-1: fix the export's encoding, or set the text policy "
        "to transliterate to read it as Windows-1252"
    )


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
        found = classify(ch)
        if found is not None and 0x80 <= ord(ch) <= 0x9F:  # a C1 control: a Windows-1252 byte read as latin-1
            replacement = _c1(ch, policy)
            if replacement is not None:
                out.append(replacement)
            else:
                problems.append(_refused(ch, position, *found, field, file, advice=_c1_advice(ch, policy)))
            continue
        if found is not None:
            problems.append(_refused(ch, position, *found, field, file))
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
