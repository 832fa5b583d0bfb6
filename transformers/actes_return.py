"""The packages the ministry's answers come in, opened into messages and their attachments.

The ministry packs each answer the way it packs what it receives (standards.md §1.11): a
flat ``.tar.gz`` holding its envelope (``EnveloppeMISILLCL``), the message (``…-1-2_n.xml``,
``…-1-3_n.xml``, ``ANO_<envelope>.xml``, ``…-2-1_n.xml``…) and the letters it refers to (PDF).
A platform may also leave the message alone, as a bare ``.xml`` file, with its letters
beside it (``<message stem>_1.pdf``): those come here as ``attachments``.

:func:`unpack_answer` never reads a member it would have to trust: only regular files with a
plain name (:func:`bus.names.name_problem`), at most :data:`MAX_MEMBERS` of them and
:data:`MAX_UNPACKED` bytes in all; anything else is a :class:`DocumentError` naming the
package and the rule, and the package is set aside by the caller with that note.  Which
message is which is the business of ``actes_in``.
"""

from __future__ import annotations

__all__ = ["ReturnedMessage", "unpack_answer", "MAX_MEMBERS", "MAX_UNPACKED"]

import io
import tarfile
import zlib
from dataclasses import dataclass, field

from bus.errors import DocumentError
from bus.names import name_problem

MAX_MEMBERS = 200  #: members in one answer package
MAX_UNPACKED = 256 << 20  #: bytes once unpacked (the ministry's archives stay under 150 MiB)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


@dataclass(frozen=True)
class ReturnedMessage:
    """One message of an answer, verbatim, with the files that go with it."""

    name: str
    data: bytes = field(repr=False)
    attachments: dict[str, bytes] = field(default_factory=dict, repr=False)


def unpack_answer(name: str, data: bytes, attachments: dict[str, bytes] | None = None) -> list[ReturnedMessage]:
    """The messages in an answer file: the XML members of a package, or the file itself."""
    attachments = dict(attachments or {})
    if not (name.lower().endswith(_ARCHIVE_SUFFIXES) or data[:2] == b"\x1f\x8b"):
        return [ReturnedMessage(name, data, attachments)]
    members = _members(name, data)
    messages = {n: content for n, content in members.items() if n.lower().endswith(".xml")}
    if not messages:
        raise DocumentError(f"answer package {name} holds no XML message", path=name, rule="answer-package")
    others = {n: content for n, content in members.items() if n not in messages}
    others.update(attachments)
    result = []
    for message, content in messages.items():
        stem = message[: -len(".xml")]
        own = {n: c for n, c in others.items() if n.startswith((f"{stem}_", f"{stem}."))}
        result.append(ReturnedMessage(message, content, own))
    claimed = {n for m in result for n in m.attachments}
    left = {n: c for n, c in others.items() if n not in claimed}
    if left:  # letters not named after their message: they go with every message of the package
        result = [ReturnedMessage(m.name, m.data, {**m.attachments, **left}) for m in result]
    return result


def _members(name: str, data: bytes) -> dict[str, bytes]:
    def refuse(message: str, rule: str = "answer-package") -> DocumentError:
        return DocumentError(f"answer package {name}: {message}", path=name, rule=rule)

    found: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_MEMBERS:
                    raise refuse(f"more than {MAX_MEMBERS} members", "answer-size")
                if not member.isfile():
                    raise refuse(f"member {member.name!r} is not a regular file")
                problem = name_problem(member.name)
                if problem is not None:
                    raise refuse(f"member {member.name!r:.120} is not a plain file name (the package must be flat): "
                                 f"it {problem}")
                if member.name in found:
                    raise refuse(f"member {member.name!r} appears twice")
                total += member.size
                if total > MAX_UNPACKED:
                    raise refuse(f"more than {MAX_UNPACKED} bytes once unpacked", "answer-size")
                handle = archive.extractfile(member)
                if handle is None:
                    raise refuse(f"member {member.name!r} cannot be read")
                found[member.name] = handle.read(member.size + 1)[: member.size]
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        raise refuse(f"not a readable tar.gz ({exc})") from exc
    return found
