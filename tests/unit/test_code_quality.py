"""The code stays as STYLE.md wants it: ruff and mypy clean, every module's __all__ true."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

from tests.harness import ROOT

PACKAGES = ("bus", "connectors", "routes", "transformers", "simulators")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for info in pkgutil.iter_modules([str(ROOT / package)]):
            names.append(f"{package}.{info.name}")
    return sorted(names)


@pytest.mark.parametrize("module_name", _modules())
def test_every_module_declares_its_public_names_and_they_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    if module_name.rsplit(".", 1)[1].startswith("_"):
        return  # a private helper module of its package
    assert isinstance(getattr(module, "__all__", None), list), f"{module_name} has no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == [], f"{module_name}.__all__ names what it does not define: {missing}"


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", *PACKAGES, "run_bus.py"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
