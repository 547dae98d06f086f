"""Store types from third-party packages, registered through the entry point group."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import xarray as xr
from zarr.storage import LocalStore

from shardedstore import ConfigError, ShardedStore, StoreType
from shardedstore.backends import registry as _registry
from shardedstore.cli.demo import build_demo_tree

pytestmark = pytest.mark.filterwarnings("ignore:Object at .* is not recognized")

PLUGIN = '''
from typing import Any
from zarr.storage import LocalStore, WrapperStore


class SnapshotStore(WrapperStore[LocalStore]):
    """A store type shardedstore does not know: a LocalStore behind a wrapper."""

    def __init__(self, root: str, read_only: bool = False) -> None:
        super().__init__(LocalStore(root, read_only=read_only))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SnapshotStore) and self._store == other._store

    def with_read_only(self, read_only: bool = False) -> "SnapshotStore":
        return SnapshotStore(str(self._store.root), read_only=read_only)


class SnapshotType:
    name = "snapshot"
    path_fields = ("root",)
    path_kind = "local"
    supports_sync = False
    schema = {
        "type": "object",
        "required": ["type", "root"],
        "additionalProperties": False,
        "properties": {"type": {"const": "snapshot"}, "root": {"type": "string"}},
    }

    def handles(self, store: Any) -> bool:
        return isinstance(store, SnapshotStore)

    def to_spec(self, store: Any) -> dict[str, Any]:
        return {"root": str(store._store.root)}

    def from_spec(self, spec: Any, *, read_only: bool) -> SnapshotStore:
        return SnapshotStore(spec["root"], read_only=read_only)


SNAPSHOT = SnapshotType()
NOT_A_STORE_TYPE = object()
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """An installed distribution registering ``snapshot`` (and a broken ``broken``)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "snapshot_plugin_for_tests.py").write_text(PLUGIN)
    info = site / "snapshot_plugin_for_tests-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: snapshot-plugin-for-tests\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [shardedstore.stores]
            snapshot = snapshot_plugin_for_tests:SNAPSHOT
            broken = snapshot_plugin_for_tests:NOT_A_STORE_TYPE
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(_registry, "_plugins", {})
    import importlib

    return importlib.import_module("snapshot_plugin_for_tests")


def test_plugin_store_type_round_trips(plugin: object, tmp_path: Path) -> None:
    snapshot_store = plugin.SnapshotStore  # type: ignore[attr-defined]
    assert isinstance(plugin.SNAPSHOT, StoreType)  # type: ignore[attr-defined]
    assert "snapshot" in _registry.known_type_names()
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"), {"people": snapshot_store(str(tmp_path / "people"))}
    )
    tree = build_demo_tree()
    tree.to_zarr(store, zarr_format=3, consolidated=False)
    config = store.get_config(relative_to=tmp_path)
    assert config["mounts"]["people"] == {"type": "snapshot", "root": "people"}
    (tmp_path / "layout.json").write_text(json.dumps(config))
    again = ShardedStore.from_config(config, base_path=tmp_path)
    assert isinstance(again.mounts["people"], snapshot_store)
    assert again.get_config(relative_to=tmp_path) == config
    with xr.open_datatree(again, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)


def test_plugin_schema_is_enforced(plugin: object) -> None:
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "b"},
        "mounts": {"people": {"type": "snapshot", "path": "p"}},
    }
    with pytest.raises(ConfigError, match=r"^mounts\.people: missing required field 'root'"):
        ShardedStore.from_config(config)


def test_unknown_type_lists_installed_plugins(plugin: object) -> None:
    config = {"format": "shardedstore", "version": 1, "base": {"type": "nope", "root": "b"}}
    with pytest.raises(
        ConfigError,
        match=r"known: local, zip, fsspec, obstore, zip_url, sharded, broken, snapshot$",
    ):
        ShardedStore.from_config(config)


def test_broken_plugin_is_reported(plugin: object) -> None:
    config = {"format": "shardedstore", "version": 1, "base": {"type": "broken", "root": "b"}}
    with pytest.raises(
        ConfigError, match=r"^base\.type: entry point 'broken' .* is not a shardedstore StoreType"
    ):
        ShardedStore.from_config(config)


def test_without_the_plugin_its_type_is_unknown(tmp_path: Path) -> None:
    config = {"format": "shardedstore", "version": 1, "base": {"type": "snapshot", "root": "b"}}
    with pytest.raises(ConfigError, match=r"^base\.type: unknown store type 'snapshot'"):
        ShardedStore.from_config(config)
