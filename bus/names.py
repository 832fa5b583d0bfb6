"""File names that come from outside, confined to their folder: one check, one rule (``file-name``).

A sidecar's references, an SFTP listing, the members of the ministry's packages, the names
S2LOW or Pastell give their files: each is a *plain* file name before Hent writes, reads or
claims anything under it.  :func:`name_problem` says what is wrong with a name (None: nothing),
:func:`safe_name` refuses it with a :class:`~bus.errors.DocumentError` (rule ``file-name``),
:func:`is_safe_name` answers yes or no, and :func:`plain_file_name` makes a platform's name
plain when the file must be kept anyway (a letter from the préfecture).

Refused: empty, ``.`` and ``..``, a folder in the name (``/`` or ``\\``, which covers ``../``
and absolute paths), a drive (``C:``), NUL and other control characters, text that is not
valid Unicode, bidi controls, zero-width characters and the byte order mark (a name that shows
as another: ``\u202eexe.pdf`` reads "fdp.exe"), U+FFFD (a name decoded in the wrong encoding),
Windows device names (``CON``, ``NUL``, ``COM1``... with or without an extension) and names over
255 bytes in UTF-8.
"""

from __future__ import annotations

__all__ = ["MAX_NAME_BYTES", "RULE", "is_safe_name", "name_problem", "plain_file_name", "safe_name"]

import re

from bus.errors import DocumentError

RULE = "file-name"
MAX_NAME_BYTES = 255  #: what ext4, NTFS and most file systems take
_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in (*"0123456789", "¹", "²", "³")}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: bidi embeddings, overrides and isolates (a name that reads "exe.pdf" and is a .exe), zero-width
#: characters and the byte order mark (two names that look the same), U+FFFD (a name decoded wrongly)
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*]')
_DRIVE = re.compile(r"^[A-Za-z]:")


def name_problem(name: object) -> str | None:
    """What makes ``name`` unfit as a plain file name, or None."""
    if not isinstance(name, str):
        return f"is not text but {type(name).__name__}"
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL byte"
    if _CONTROL.search(name):
        return "holds a control character"
    invisible = _INVISIBLE.search(name)
    if invisible:
        return f"holds U+{ord(invisible.group()):04X}, an invisible or direction-changing character"
    if "\ufffd" in name:
        return "holds U+FFFD: it was decoded in the wrong encoding"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if name in (".", ".."):
        return "is a folder reference (. or ..)"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        return "climbs out of its folder (..)"
    if len(parts) > 1:
        return "holds a folder (/ or \\)"
    if name.split(".")[0].strip(" ").upper() in _DEVICES:
        return "is a device name on Windows"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes long, more than {MAX_NAME_BYTES}"
    return None


def is_safe_name(name: object) -> bool:
    """Whether ``name`` is a plain file name (see :func:`name_problem`)."""
    return name_problem(name) is None


def safe_name(name: object, *, field: str, path: str | None = None) -> str:
    """``name`` when it is a plain file name; else DocumentError (rule ``file-name``) naming ``field``."""
    problem = name_problem(name)
    if problem is None:
        assert isinstance(name, str)
        return name
    shown = repr(name)[:120]
    raise DocumentError(f"{field}: the file name {shown} {problem}; only a plain file name is accepted, "
                        "in the same folder", field=field, path=path, rule=RULE)


def plain_file_name(name: str | None, default: str) -> str:
    """``name`` made plain (its last component, control, invisible and reserved characters replaced, no leading
    dot, no device name, at most 255 bytes); ``default`` when nothing is left of it."""
    last = re.split(r"[\\/]", name or "")[-1]
    last = last.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    last = _INVISIBLE.sub("_", _UNSAFE.sub("_", last)).replace("\ufffd", "_").strip(" .")
    if last.split(".")[0].strip(" ").upper() in _DEVICES:
        last = f"_{last}"
    if len(last.encode("utf-8")) > MAX_NAME_BYTES:
        stem, dot, extension = last.rpartition(".")
        if not (dot and stem and len(extension.encode("utf-8")) < 16):
            stem, dot, extension = last, "", ""
        room = MAX_NAME_BYTES - len(f"{dot}{extension}".encode())
        stem = stem.encode("utf-8")[:room].decode("utf-8", "ignore")
        last = f"{stem}{dot}{extension}"
    return last or default
