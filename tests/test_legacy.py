"""Layouts written by shardedstore 0.3.1 with zarr 2 (fixtures in tests/data/legacy/).

The fixtures were made by ``tests/data/legacy/make_fixtures.py`` in a throwaway
virtualenv with shardedstore 0.3.1, zarr 2.18.3 and xarray-datatree 0.0.14: one
DataTree written through a 0.3.1 ShardedStore with each dimension separator (a mount,
an array sharded on 1 dim, one on 2 dims), a mounts-only layout converted to zips by
0.3.1's ``map_shards``, and the same tree unsharded as the reference.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore, ZipStore

import shardedstore
from shardedstore import ArrayShardTemplateFactory, ConfigError, ShardedStore

FIXTURES = Path(__file__).parent / "data" / "legacy"
LAYOUTS = ["nested", "dotted", "zipped"]


@pytest.fixture
def fixtures(tmp_path: Path) -> Path:
    """A copy of the fixtures, so that a test that wrote by mistake could not hide it."""
    copy = tmp_path / "legacy"
    shutil.copytree(FIXTURES, copy)
    return copy


def _reference(root: Path) -> xr.DataTree:
    return xr.open_datatree(root / "reference.zarr", engine="zarr", consolidated=False)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("name", LAYOUTS)
def test_legacy_layout_reads_identical_to_the_unsharded_data(name: str, fixtures: Path) -> None:
    before = _files(fixtures)
    store = shardedstore.open(fixtures / f"{name}.json")
    assert store.read_only
    with (
        xr.open_datatree(store, engine="zarr", consolidated=False) as tree,
        _reference(fixtures) as ref,
    ):
        assert tree.identical(ref)
        assert tree["simulation/fine/temperature"].shape == (6, 3, 4)
    assert _files(fixtures) == before  # nothing written, nothing created


@pytest.mark.parametrize("name", LAYOUTS)
def test_legacy_layout_lists_every_key(name: str, fixtures: Path) -> None:
    root = fixtures / "reference.zarr"
    reference = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if name == "nested":  # written with "/" as the dimension separator: 0.1 -> 0/1
        reference = {
            re.sub(r"/([0-9]+(?:\.[0-9]+)*)$", lambda m: "/" + m[1].replace(".", "/"), key)
            for key in reference
        }
    store = shardedstore.open(fixtures / f"{name}.json")
    assert set(store.as_mapping()) == reference
    assert len(store.as_mapping()) == len(reference)


def test_legacy_array_shards_are_routed_by_key(fixtures: Path) -> None:
    config = json.loads((fixtures / "dotted.json").read_text())
    store = ShardedStore.from_config(config, base_path=fixtures)
    dims, factory = store.array_shards["simulation/fine/mask"]
    assert dims == 2
    assert isinstance(factory, ArrayShardTemplateFactory)
    assert factory.template is None
    assert sorted(factory.shards)[:3] == ["0.0", "0.1", "0.2"]  # 0.3.1 wrote "0.0" / "0/0"
    assert factory("5.2") == LocalStore(fixtures / "dotted" / "mask" / "5.2.zarr")
    nested = ShardedStore.from_config(
        json.loads((fixtures / "nested.json").read_text()), base_path=fixtures
    )
    assert nested.array_shards["simulation/fine/mask"][1]("5.2") == LocalStore(
        fixtures / "nested" / "mask" / "5" / "2.zarr"
    )
    # Reading one chunk touches the key's own shard; 0.3.1's per-shard metadata (wrong
    # shapes) is never consulted.
    mask = zarr.open_array(store, path="simulation/fine/mask", mode="r")
    ref = zarr.open_array(fixtures / "reference.zarr" / "simulation" / "fine" / "mask", mode="r")
    assert (mask[5, 2] == ref[5, 2]).all()


def test_legacy_zip_layout_maps_zarr2_zipstore(fixtures: Path) -> None:
    store = shardedstore.open(fixtures / "zipped.json")
    assert store.mounts["people"] == ZipStore(fixtures / "zipped" / "zips" / "people.zarr.zip")
    assert store.base == ZipStore(fixtures / "zipped" / "zips.zarr.zip")


def test_legacy_configs_open_read_only_only(fixtures: Path) -> None:
    config = json.loads((fixtures / "nested.json").read_text())
    with pytest.raises(
        ConfigError, match=r"^<config>: layouts written by shardedstore 0\.3\.x open read-only"
    ):
        ShardedStore.from_config(config, base_path=fixtures, read_only=False)
    with pytest.raises(ConfigError, match="open read-only"):
        shardedstore.open(fixtures / "nested.json", mode="r+")
    assert ShardedStore.from_config(config, base_path=fixtures).read_only


def test_legacy_config_with_absolute_paths(fixtures: Path) -> None:
    # 0.3.1 wrote absolute paths (the committed fixtures were made relative).
    text = (fixtures / "dotted.json").read_text().replace('"dotted/', f'"{fixtures}/dotted/')
    store = ShardedStore.from_config(json.loads(text))
    with (
        xr.open_datatree(store, engine="zarr", consolidated=False) as tree,
        _reference(fixtures) as ref,
    ):
        assert tree.identical(ref)


def _legacy_store(name: str, args: list[Any], **kwargs: Any) -> dict[str, Any]:
    return {"name": name, "module": "zarr.storage", "config": {"args": args, "kwargs": kwargs}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["config"]["kwargs"]["shards"]["people"]["config"]["kwargs"].update(
                normalize_keys=True
            ),
            r"normalize_keys=True",
        ),
        (
            lambda c: c["config"]["kwargs"]["shards"]["people"]["config"]["kwargs"].update(evil=1),
            r"\.kwargs\.evil: option not supported for DirectoryStore",
        ),
        (
            lambda c: c["config"]["kwargs"]["shards"]["people"]["config"].update(args=[3]),
            r"shards\.people\.config\.args\[0\]: expected the store's path as a string, got int",
        ),
        (
            lambda c: c["config"]["kwargs"]["array_shards"]["simulation/fine/temperature"].update(
                {"x": {}}
            ),
            r"temperature\.x: expected a chunk prefix",
        ),
        (
            lambda c: c["config"]["kwargs"].update(shards=["people"]),
            r"config\.kwargs\.shards: expected an object, got list",
        ),
        (lambda c: c["config"].update(args=[]), r"config\.args: missing the base store"),
        (
            lambda c: c.update(name="Popen", module="subprocess"),
            r"^module: refusing store class 'subprocess'\.'Popen'",
        ),
        (
            lambda c: c["config"]["kwargs"]["array_shard_dims"].update(
                {"simulation/fine/temperature": "1"}
            ),
            r"array_shard_dims.*: expected an integer, got str",
        ),
    ],
)
def test_broken_legacy_configs(change: Any, message: str, fixtures: Path) -> None:
    config = json.loads((fixtures / "dotted.json").read_text())
    change(config)
    with pytest.raises(ConfigError, match=message):
        ShardedStore.from_config(config, base_path=fixtures)


def _legacy_nested(depth: int) -> dict[str, Any]:
    """0.3.x ShardedStores nested ``depth`` deep, each mounted at 'm' of the one above."""
    store: dict[str, Any] = _legacy_store("DirectoryStore", ["leaf"])
    for level in range(depth + 1):
        store = {
            "name": "ShardedStore",
            "module": "shardedstore",
            "config": {
                "args": [_legacy_store("DirectoryStore", [f"b{level}"])],
                "kwargs": {"shards": {"m": store}},
            },
        }
    return store


def test_legacy_nesting_has_the_depth_limit(tmp_path: Path) -> None:
    # 200 nested sharded stores gave a RecursionError.
    limit = r"^config\.kwargs\.shards\.m(\.config\.kwargs\.shards\.m){32}: sharded stores nest"
    for depth in (33, 200):
        with pytest.raises(ConfigError, match=limit):
            ShardedStore.from_config(_legacy_nested(depth), base_path=tmp_path)
    store = ShardedStore.from_config(_legacy_nested(32), base_path=tmp_path)
    assert isinstance(store.mounts["m"], ShardedStore)


def test_many_legacy_array_shards(tmp_path: Path) -> None:
    # A 0.3.x config lists every array shard; 20,000 of them opened in 8.7 s.
    shards = {str(i): _legacy_store("DirectoryStore", [f"t/{i}.zarr"]) for i in range(5000)}
    config = {
        "name": "ShardedStore",
        "module": "shardedstore",
        "config": {
            "args": [_legacy_store("DirectoryStore", ["base.zarr"])],
            "kwargs": {"array_shard_dims": {"t": 1}, "array_shards": {"t": shards}},
        },
    }
    store = ShardedStore.from_config(config, base_path=tmp_path)
    factory = store.array_shards["t"][1]
    assert factory("4999") == LocalStore(tmp_path / "t" / "4999.zarr")
    shards["17"] = _legacy_store("DirectoryStore", ["t/3.zarr"])
    with pytest.raises(
        ConfigError,
        match=r"^array_shards\.t\.shards\.17\.root: .* is the same location as "
        r"array_shards\.t\.shards\.3\.root",
    ):
        ShardedStore.from_config(config, base_path=tmp_path)
