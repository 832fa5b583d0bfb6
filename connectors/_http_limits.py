"""How much of an HTTP answer is read: every endpoint speaking HTTP (SOAP, S2LOW, Pastell) reads its
answers through :func:`read_capped`, by chunks, up to its ``max_response_bytes``.

A platform (or whatever stands in its place: a proxy, an attacker on a network path without TLS
verification) could otherwise answer with an endless body and have the bus hold it all in memory.
Past the limit the answer is dropped unread, its connection closed, and a
:class:`~bus.errors.TransientError` (rule ``response-too-large``) names the connector, the URL and the
limit: retried later, and repeated it opens the endpoint's circuit.  A ``Content-Length`` above the
limit is refused before anything is read.  The limit counts the bytes as decoded (a gzip answer is
counted unzipped).
"""

from __future__ import annotations

__all__ = ["CHUNK", "DEFAULT_MAX_RESPONSE_BYTES", "max_response_bytes_field", "read_capped"]

from typing import Any

import requests
from pydantic import Field

from bus.errors import TransientError
from bus.secrets import redact_url

#: the default: above the largest legitimate answer, an acknowledged act's files coming back stamped
#: (up to the 150 MiB of S2LOW's and Pastell's limit; in SOAP, base64 makes them 200 MiB)
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
CHUNK = 1 << 16  #: bytes read at a time


def max_response_bytes_field() -> Any:
    """The ``max_response_bytes`` option of an endpoint's Config."""
    return Field(
        DEFAULT_MAX_RESPONSE_BYTES,
        gt=0,
        description=(
            "Largest answer read from the platform, in bytes (default 256 MiB, above an act's stamped files); a "
            "larger one is dropped unread and retried later (response-too-large)."
        ),
    )


def read_capped(response: requests.Response, *, connector: str, limit: int, operation: str | None = None) -> bytes:
    """The body of ``response`` (requested with ``stream=True``), read by chunks of :data:`CHUNK` up to
    ``limit`` bytes and kept as its ``content``; past the limit the connection is closed and a
    TransientError (``response-too-large``) raised.  requests' own exceptions (a connection lost while
    reading) pass through, for the caller's translation."""
    content: Any = getattr(response, "_content", False)
    if isinstance(content, bytes | bytearray):  # already read (a stub, or stream=False)
        response._content_consumed = True
        if len(content) > limit:
            raise _too_large(response, connector, limit, operation, f": it has {len(content)}")
        return bytes(content)
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        response.close()
        raise _too_large(response, connector, limit, operation, f": it announces {int(declared)}")
    body = bytearray()
    try:
        for chunk in response.iter_content(CHUNK):
            body += chunk
            if len(body) > limit:
                raise _too_large(response, connector, limit, operation, "")
    except BaseException:
        response.close()
        raise
    data = bytes(body)
    response._content, response._content_consumed = data, True
    return data


def _too_large(
    response: requests.Response, connector: str, limit: int, operation: str | None, size: str
) -> TransientError:
    url = redact_url(str(response.url or "").partition("?")[0])  # the query may hold a nonce's hash
    doing = f"{operation}: " if operation else ""
    return TransientError(
        f"connector {connector!r}: {doing}the answer of {url} exceeds max_response_bytes ({limit} bytes{size}); "
        "dropped, retried later; raise max_response_bytes if the platform's answers are really this large",
        connector=connector,
        rule="response-too-large",
    )
