"""Oversized answers from the platforms, over real HTTP on 127.0.0.1: SOAP (through zeep), S2LOW and
Pastell.  Each endpoint reads 64 KiB at most here; an answer past that, however it is framed (its length
unsaid, chunked, announced, gzipped, behind an error status), is refused as response-too-large, and one
within it is read as usual."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import pytest

from bus.errors import TransientError
from tests.hostile._corpus import attempt
from tests.integration.test_response_limits import ENDPOINTS, GIB, LIMIT, Answer, Platform, endless, once

ENVELOPE = (
    b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
    b'<GetStatusResponse xmlns="urn:hent:legality:1"><Transaction><TransactionId>T-1</TransactionId>'
    b"<Status>TRANSMITTED</Status></Transaction></GetStatusResponse></s:Body></s:Envelope>"
)
#: a good answer of each endpoint, padded with blanks to ``size`` bytes (still a good answer)
GOOD = {
    "soap": ENVELOPE,
    "s2low": b"OK\n3\n",
    "pastell": json.dumps({"info": {"id_d": "abc"}, "data": {}, "last_action": {"action": "send-tdt"}}).encode(),
}


def padded(kind: str, size: int) -> bytes:
    return GOOD[kind] + b" " * (size - len(GOOD[kind]))


def cases(kind: str) -> Iterator[tuple[str, Answer, bool]]:
    """(case, answer, whether it must be refused as too large)."""
    yield "endless-until-close", Answer(endless(GIB)), True
    yield "endless-chunked", Answer(endless(GIB), framing="chunked"), True
    yield "announced-10GiB", Answer(once(b"x" * 100), framing="length", declared=10 * GIB), True
    yield "announced-limit+1", Answer(once(padded(kind, LIMIT + 1)), framing="length"), True
    yield "limit+1-chunked", Answer(once(padded(kind, LIMIT + 1)), framing="chunked"), True
    yield (
        "gzip-bomb-64MiB",
        Answer(once(gzip.compress(bytes(64 << 20), 9)), framing="chunked", headers={"Content-Encoding": "gzip"}),
        True,
    )
    yield (
        "gzip-limit+1",
        Answer(once(gzip.compress(padded(kind, LIMIT + 1))), framing="length", headers={"Content-Encoding": "gzip"}),
        True,
    )
    yield "error-500-endless", Answer(endless(GIB), status=500), True
    yield "one-long-line", Answer(endless(GIB, b"9" * (1 << 16))), True
    yield "at-limit", Answer(once(padded(kind, LIMIT)), framing="chunked"), False
    yield "at-limit-announced", Answer(once(padded(kind, LIMIT)), framing="length"), False


CASES = [(kind, case, answer, refused) for kind in ENDPOINTS for case, answer, refused in cases(kind)]


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    server = Platform()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("kind", "case", "answer", "refused"), CASES, ids=[f"{k}-{c}" for k, c, _, _ in CASES])
def test_an_oversized_answer_is_refused_and_one_within_the_limit_read(
    platform: Platform, kind: str, case: str, answer: Answer, refused: bool
) -> None:
    build, call, media_type = ENDPOINTS[kind]
    answer.media_type = media_type
    platform.answer = answer
    connector = build(platform.url, LIMIT)
    try:
        result = attempt(
            f"{kind}-response-size",
            case,
            lambda: call(connector),
            shown=lambda found: ", ".join(s.state for s in found),
        )
    finally:
        connector.close()
    if refused:
        assert isinstance(result, TransientError) and result.rule == "response-too-large", result
    else:
        assert not isinstance(result, Exception), result
