"""An endpoint reads a platform's answer up to its ``max_response_bytes``, by chunks, over real HTTP on
127.0.0.1: past the limit the answer is dropped with a TransientError (response-too-large) naming the
connector, the URL and the limit, and the memory spent stays near the limit, whatever the size offered."""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bus.errors import TransientError
from connectors.pastell_outbound import PastellOutbound, PastellOutboundConfig
from connectors.s2low_outbound import S2lowOutbound, S2lowOutboundConfig
from connectors.soap_outbound import SoapOutbound, SoapOutboundConfig

LIMIT = 64 * 1024
GIB = 1 << 30
_BLOCK = b"x" * (1 << 16)


def endless(total: int, block: bytes = _BLOCK) -> Callable[[], Iterator[bytes]]:
    """``total`` bytes of ``block`` repeated, made as they are sent (never held whole)."""

    def chunks() -> Iterator[bytes]:
        left = total
        while left > 0:
            piece = block[: min(left, len(block))]
            left -= len(piece)
            yield piece

    return chunks


def once(data: bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: iter([data])


@dataclass
class Answer:
    """What the server answers: status, headers, the body's chunks, and how its end is told: ``length``
    (Content-Length, or ``declared`` instead of the true one), ``close`` (the connection closes) or
    ``chunked`` (Transfer-Encoding: chunked)."""

    body: Callable[[], Iterator[bytes]]
    status: int = 200
    media_type: str = "text/plain"
    framing: str = "close"
    declared: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


class Platform:
    """An HTTP server on 127.0.0.1 giving every request ``answer``; counts the bytes it managed to send."""

    def __init__(self) -> None:
        self.answer = Answer(once(b""))
        self.sent = 0
        self.requests: list[str] = []
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                platform.requests.append(f"{self.command} {self.path}")
                answer = platform.answer
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.media_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                chunks = answer.body()
                if answer.framing == "length":
                    data = b"".join(chunks)
                    self.send_header("Content-Length", str(answer.declared or len(data)))
                    chunks = iter([data])
                elif answer.framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in chunks:
                        if answer.framing == "chunked":
                            chunk = b"%x\r\n%s\r\n" % (len(chunk), chunk)
                        self.wfile.write(chunk)
                        platform.sent += len(chunk)
                    if answer.framing == "chunked":
                        self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what the limit is for

            do_GET = do_POST = do_PATCH = _answer  # noqa: N815 - http.server's naming

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def platform() -> Iterator[Platform]:
    server = Platform()
    try:
        yield server
    finally:
        server.stop()


def soap(url: str, limit: int = LIMIT) -> SoapOutbound:
    return SoapOutbound(
        "tdt", SoapOutboundConfig.model_validate({"endpoint": f"{url}/soap", "max_response_bytes": limit})
    )


def s2low(url: str, limit: int = LIMIT) -> S2lowOutbound:
    return S2lowOutbound(
        "tdt", S2lowOutboundConfig.model_validate({"type": "s2low", "url": url, "max_response_bytes": limit})
    )


def pastell(url: str, limit: int = LIMIT) -> PastellOutbound:
    return PastellOutbound(
        "ged",
        PastellOutboundConfig.model_validate(
            {"type": "pastell", "url": url, "entity": "12", "token": "a-pastell-token", "max_response_bytes": limit}
        ),
    )


#: (endpoint kind, the connector, a call that reads one answer, the media type of its answers)
ENDPOINTS: dict[str, tuple[Callable[[str, int], Any], Callable[[Any], Any], str]] = {
    "soap": (soap, lambda c: c.statuses(["T-1"]), "text/xml"),
    "s2low": (s2low, lambda c: c.statuses(["1"]), "text/plain"),
    "pastell": (pastell, lambda c: c.statuses(["abc"]), "application/json"),
}


def too_large(kind: str, platform: Platform, answer: Answer, limit: int = LIMIT) -> TransientError:
    build, call, media_type = ENDPOINTS[kind]
    answer.media_type = media_type
    platform.answer = answer
    connector = build(platform.url, limit)
    try:
        with pytest.raises(TransientError) as refused:
            call(connector)
    finally:
        connector.close()
    return refused.value


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_an_answer_larger_than_the_limit_is_refused_by_name_without_reading_it_whole(
    kind: str, platform: Platform
) -> None:
    # Given a platform that answers 1 GiB, its length unsaid, and an endpoint reading 64 KiB at most
    answer = Answer(endless(GIB))

    # When the endpoint asks for a status, memory traced
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = too_large(kind, platform, answer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Then it refuses the answer as response-too-large, naming the connector, the URL and the limit
    name = "ged" if kind == "pastell" else "tdt"
    assert (error.rule, error.connector) == ("response-too-large", name)
    assert f"connector {name!r}: " in error.message
    assert f"the answer of {platform.url}/" in error.message
    assert f"exceeds max_response_bytes ({LIMIT} bytes); dropped, retried later" in error.message
    assert "?" not in error.message  # no query string: S2LOW's carries a login's hash
    # And it read about the limit, not the gigabyte: little memory, little time
    assert peak < 8 << 20, peak
    assert time.monotonic() - started < 20
    assert platform.sent < 256 << 20


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_an_announced_length_above_the_limit_is_refused_before_reading(kind: str, platform: Platform) -> None:
    error = too_large(kind, platform, Answer(once(b"x" * (LIMIT + 1)), framing="length"))
    assert error.rule == "response-too-large"
    assert f"({LIMIT} bytes: it announces {LIMIT + 1})" in error.message


@pytest.mark.parametrize("kind", list(ENDPOINTS))
def test_a_gzip_answer_is_counted_unzipped(kind: str, platform: Platform) -> None:
    bomb = gzip.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 128 << 10
    error = too_large(
        kind, platform, Answer(once(bomb), framing="chunked", headers={"Content-Encoding": "gzip"}), limit=1 << 20
    )
    assert error.rule == "response-too-large"


def test_an_answer_within_the_limit_is_read_as_before(platform: Platform) -> None:
    # Given S2LOW's status answer, padded to exactly the limit, without Content-Length
    body = b"OK\n4\n<actes:ARActe/>"
    platform.answer = Answer(once(body + b" " * (LIMIT - len(body))), framing="chunked")
    connector = s2low(platform.url)
    try:
        [status] = connector.statuses(["1"])
    finally:
        connector.close()
    assert status.state == "ACKNOWLEDGED"
    assert status.message == b"<actes:ARActe/>"


def test_the_default_limit_is_well_above_an_acts_files_coming_back_stamped() -> None:
    for config in (
        SoapOutboundConfig(),
        S2lowOutboundConfig(url="https://s2low.example.org"),
        PastellOutboundConfig(url="https://pastell.example.org", entity="1", token="a-token-value"),
    ):
        assert config.max_response_bytes == 256 << 20  # S2LOW and Pastell take 150 MiB of files per act


def test_a_soap_submission_whose_answer_is_too_large_is_looked_up_before_any_resend(platform: Platform) -> None:
    """The request left: the submission may be recorded, so it is looked up (FindSubmission), not resent."""
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from bus.connector import ARCHIVE, Artifact

    platform.answer = Answer(endless(GIB), media_type="text/xml")
    connector = soap(platform.url)
    with TemporaryDirectory() as folder:
        archive = Path(folder) / "HNT-archive.tar.gz"
        archive.write_bytes(b"\x1f\x8b archive")
        artifact = Artifact(
            name=archive.name,
            path=archive,
            sha256="0" * 64,
            kind=ARCHIVE,
            client_key="EACT-envelope",
            meta={"id_acte": "044-214400152-20260101-DEL1-DE", "envelope_name": "EACT-envelope"},
        )
        try:
            with pytest.raises(TransientError) as refused:
                connector.send(artifact)
        finally:
            connector.close()
    # the lookup's answer is too large too: the error says both, and nothing was submitted twice
    assert "looking the submission up by its client key failed too" in refused.value.message
    assert [r.split()[0] for r in platform.requests] == ["POST", "POST"]
