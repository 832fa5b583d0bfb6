"""Fixtures every test folder shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import reference_or_skip


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference; skip (or fail if HENT_REQUIRE_REFERENCE=1) when absent."""
    return reference_or_skip()
