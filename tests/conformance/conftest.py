"""Shared fixtures for conformance tests against ../shared/reference."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

__all__ = ["reference_dir"]

_REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Path to ../shared/reference; skip (or fail if HENT_REQUIRE_REFERENCE=1) when absent."""
    if not _REFERENCE.is_dir():
        message = f"reference directory not found: {_REFERENCE}"
        if os.environ.get("HENT_REQUIRE_REFERENCE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return _REFERENCE
