"""Opening the ministry's answer packages: messages with their letters, and nothing a package
could slip past (other paths, links, too many members, too many bytes)."""

from __future__ import annotations

import io
import tarfile

import pytest

from bus.errors import DocumentError
from transformers import actes_return
from transformers.actes_return import unpack_answer


def package(members: list[tuple[str, bytes]], *, link: str | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return out.getvalue()


def test_a_package_gives_its_messages_each_with_the_letters_named_after_it() -> None:
    data = package([("ENV.xml", b"<env/>"), ("044-1-2-1_7.xml", b"<a/>"), ("044-1-2-1_7_1.pdf", b"%PDF-a"),
                    ("044-1-3-1_8.xml", b"<b/>"), ("lettre.pdf", b"%PDF-b")])
    messages = {m.name: m for m in unpack_answer("answer.tar.gz", data)}
    assert set(messages) == {"ENV.xml", "044-1-2-1_7.xml", "044-1-3-1_8.xml"}
    assert set(messages["044-1-2-1_7.xml"].attachments) == {"044-1-2-1_7_1.pdf", "lettre.pdf"}
    assert set(messages["044-1-3-1_8.xml"].attachments) == {"lettre.pdf"}  # named after no message: with all


def test_a_bare_message_is_itself_with_the_letters_given_beside_it() -> None:
    [message] = unpack_answer("044-1-2-1_7.xml", b"<a/>", {"044-1-2-1_7_1.pdf": b"%PDF"})
    assert (message.name, message.data, message.attachments) == ("044-1-2-1_7.xml", b"<a/>",
                                                                 {"044-1-2-1_7_1.pdf": b"%PDF"})


@pytest.mark.parametrize(("members", "link", "words"), [
    ([("../evil.xml", b"<a/>")], None, "is not a plain file name"),
    ([("/etc/evil.xml", b"<a/>")], None, "is not a plain file name"),
    ([("a.xml", b"<a/>")], "link.xml", "is not a regular file"),
    ([("a.xml", b"<a/>"), ("a.xml", b"<b/>")], None, "appears twice"),
    ([("lettre.pdf", b"%PDF")], None, "holds no XML message"),
])
def test_a_package_that_is_not_flat_and_plain_is_refused(
    members: list[tuple[str, bytes]], link: str | None, words: str
) -> None:
    with pytest.raises(DocumentError, match=words) as refused:
        unpack_answer("answer.tar.gz", package(members, link=link))
    assert refused.value.rule == "answer-package"


def test_a_package_too_large_once_unpacked_or_with_too_many_members_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(actes_return, "MAX_UNPACKED", 1000)
    with pytest.raises(DocumentError, match="bytes once unpacked") as refused:
        unpack_answer("answer.tar.gz", package([("a.xml", b"x" * 600), ("b.xml", b"y" * 600)]))
    assert refused.value.rule == "answer-size"
    monkeypatch.setattr(actes_return, "MAX_MEMBERS", 2)
    with pytest.raises(DocumentError, match="more than 2 members"):
        unpack_answer("answer.tar.gz", package([("a.xml", b"<a/>"), ("b.xml", b"<b/>"), ("c.xml", b"<c/>")]))


def test_bytes_that_are_no_package_are_refused_with_the_name() -> None:
    with pytest.raises(DocumentError, match="answer package x.tar.gz: not a readable tar.gz"):
        unpack_answer("x.tar.gz", b"\x1f\x8b garbage")
