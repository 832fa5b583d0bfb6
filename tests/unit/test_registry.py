"""The registry: connector classes by (type, direction), imported only when named."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus import registry
from bus.errors import ConfigError


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A package of connector modules, scanned instead of ``connectors``."""
    package = "hent_test_plugins"
    root = tmp_path / package
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "drop_inbound.py").write_text("class Connector:\n    Config = None\n")
    (root / "drop_outbound.py").write_text("class Connector:\n    Config = None\n")
    (root / "soapy_outbound.py").write_text("import hent_no_such_driver\n\nclass Connector: ...\n")
    (root / "broken_inbound.py").write_text("Connector = 42\n")
    (root / "_common.py").write_text("")
    (root / "notes.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "PACKAGE", package)
    yield package
    for name in [m for m in sys.modules if m.startswith(package)]:
        del sys.modules[name]


def test_known_types_come_from_module_names(plugins: str) -> None:
    assert registry.known_types() == {
        "drop": {"inbound", "outbound"},
        "soapy": {"outbound"},
        "broken": {"inbound"},
    }


def test_connector_class_imports_lazily(plugins: str) -> None:
    assert f"{plugins}.drop_inbound" not in sys.modules
    cls = registry.connector_class("drop", "inbound")
    assert cls.__module__ == f"{plugins}.drop_inbound" and cls.__name__ == "Connector"
    assert f"{plugins}.drop_outbound" not in sys.modules


def test_unknown_type_suggests_the_closest(plugins: str) -> None:
    with pytest.raises(ConfigError) as caught:
        registry.connector_class("dorp", "inbound")
    assert (
        str(caught.value) == "unknown connector type 'dorp' (did you mean 'drop'?) [unknown-connector-type]"
    )
    with pytest.raises(
        ConfigError, match=r"^unknown connector type 'zzz' \(known types: broken, drop, soapy\)"
    ):
        registry.connector_class("zzz", "inbound")


def test_missing_direction(plugins: str) -> None:
    with pytest.raises(ConfigError) as caught:
        registry.connector_class("soapy", "inbound")
    assert caught.value.message == "connector type 'soapy' cannot be used as inbound"


def test_missing_driver_says_what_to_install(plugins: str) -> None:
    with pytest.raises(ConfigError) as caught:
        registry.connector_class("soapy", "outbound")
    assert caught.value.message == (
        "connector type 'soapy' needs the Python package 'hent_no_such_driver', which is not installed: "
        "pip install hent_no_such_driver"
    )
    assert caught.value.rule == "driver-missing"


def test_a_module_without_connector_class(plugins: str) -> None:
    with pytest.raises(ConfigError, match=f"module {plugins}.broken_inbound defines no Connector class"):
        registry.connector_class("broken", "inbound")


def test_register_wins_and_unregister_forgets(plugins: str) -> None:
    class Fake:
        pass

    registry.register("drop", "inbound", Fake)
    registry.register("memory", "outbound", Fake)
    try:
        assert registry.connector_class("drop", "inbound") is Fake
        assert registry.known_types()["memory"] == {"outbound"}
    finally:
        registry.unregister("drop", "inbound")
        registry.unregister("memory", "outbound")
    assert registry.connector_class("drop", "inbound") is not Fake
    assert "memory" not in registry.known_types()
    with pytest.raises(ValueError, match="direction must be one of"):
        registry.register("x", "sideways", Fake)


def test_the_real_connectors_package_is_scanned() -> None:
    types = registry.known_types()
    if "folder" in types:
        assert {"inbound", "outbound"} <= types["folder"]
        assert registry.connector_class("folder", "inbound").__module__ == "connectors.folder_inbound"


def test_load_object() -> None:
    assert registry.load_object("bus.errors:ConfigError") is ConfigError
    assert registry.load_object("bus.errors.ConfigError") is ConfigError
    assert registry.load_object("bus.errors:Problem.__str__") is not None
    with pytest.raises(
        ConfigError, match="cannot load 'bus.errors:Nope': bus.errors has no attribute 'Nope'"
    ):
        registry.load_object("bus.errors:Nope")
    with pytest.raises(
        ConfigError, match="cannot load 'hent_nothing_here:X': No module named 'hent_nothing_here'"
    ):
        registry.load_object("hent_nothing_here:X")
    with pytest.raises(ConfigError, match="write it as 'package.module:Name'"):
        registry.load_object("nothing")


def test_suggest() -> None:
    assert registry.suggest("foldr", ["folder", "sftp"]) == " (did you mean 'folder'?)"
    assert registry.suggest("xyz", ["folder", "sftp"]) == ""


def test_public_names() -> None:
    for name in registry.__all__:
        assert hasattr(registry, name)
