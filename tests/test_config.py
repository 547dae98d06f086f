"""The layout config: round trips, validation, relative paths, hostile input, scale."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import FsspecStore, LocalStore, MemoryStore, ZipStore

import shardedstore
from shardedstore import (
    ArrayShardDirectoryFactory,
    ArrayShardTemplateFactory,
    ConfigError,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore.cli.demo import build_demo_tree

pytestmark = pytest.mark.filterwarnings("ignore:Object at .* is not recognized")


def _round_trip(store: ShardedStore, **kwargs: Any) -> ShardedStore:
    text = json.dumps(store.get_config())
    return ShardedStore.from_config(json.loads(text), **kwargs)


def _valid(config: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(shardedstore.config_schema()).validate(config)


# ------------------------------------------------------------------ round trips


def _obstore_local(path: Path) -> zarr.abc.store.Store:
    import obstore.store

    return zarr.storage.ObjectStore(obstore.store.LocalStore(path, mkdir=True))


def _layouts(tmp: Path) -> dict[str, ShardedStore]:
    zip_shards = array_shard_template_store({"type": "zip", "path": f"{tmp}/z/{{chunk}}.zarr.zip"})
    return {
        "local": ShardedStore(
            LocalStore(tmp / "base"),
            {"people": LocalStore(tmp / "people")},
            {"a/x": (1, array_shard_directory_store(tmp / "x"))},
        ),
        "relative-local": ShardedStore(
            LocalStore("base.zarr"),
            {"p": LocalStore("p.zarr")},
            {"x": (2, ArrayShardDirectoryFactory("s"))},
        ),
        "zip": ShardedStore(
            ZipStore(tmp / "base.zip", mode="a"),
            {
                "people": ZipStore(tmp / "people.zip", mode="r"),
                "c": ZipStore(tmp / "c.zip", mode="w", compression=8),
            },
            {"a/x": (1, zip_shards)},
        ),
        "fsspec-file": ShardedStore(
            FsspecStore.from_url(f"file://{tmp}/base"),
            {"people": FsspecStore.from_url(f"file://{tmp}/people")},
            {
                "x": (
                    1,
                    array_shard_template_store(
                        {"type": "fsspec", "url": f"file://{tmp}/x/{{chunk}}.zarr"}
                    ),
                )
            },
        ),
        "obstore-local": ShardedStore(
            _obstore_local(tmp / "base"),
            {"people": _obstore_local(tmp / "people")},
            {
                "x": (
                    1,
                    array_shard_template_store(
                        {"type": "obstore", "url": f"file://{tmp}/x/{{chunk}}", "mkdir": True}
                    ),
                )
            },
        ),
        "nested": ShardedStore(
            LocalStore(tmp / "base"),
            {
                "sim": ShardedStore(
                    LocalStore(tmp / "sim"),
                    {"coarse": ZipStore(tmp / "coarse.zip", mode="a")},
                    {"fine/t": (1, array_shard_directory_store(tmp / "t"))},
                )
            },
        ),
        "overrides": ShardedStore(
            LocalStore(tmp / "base"),
            {},
            {
                "t": (
                    2,
                    array_shard_template_store(
                        {"type": "local", "root": f"{tmp}/t/{{chunk}}"},
                        shards={"0.3": {"type": "zip", "path": f"{tmp}/t3.zip", "mode": "r"}},
                    ),
                )
            },
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["local", "relative-local", "zip", "fsspec-file", "obstore-local", "nested", "overrides"],
)
def test_round_trip_is_equal(name: str, tmp_path: Path) -> None:
    store = _layouts(tmp_path)[name]
    config = store.get_config()
    _valid(config)
    assert config["format"] == "shardedstore"
    assert config["version"] == 1
    again = _round_trip(store)
    assert again == store
    assert again.get_config() == config
    assert type(again) is type(store)  # the sync-capable class survives the round trip


def test_round_trip_changes_nothing_on_disk(tmp_path: Path) -> None:
    layouts = _layouts(tmp_path)
    before = sorted(tmp_path.rglob("*"))  # obstore's LocalStore(mkdir=True) made its roots
    for store in layouts.values():
        _round_trip(store)
        _round_trip(store, read_only=True)
    assert sorted(tmp_path.rglob("*")) == before  # opening a layout creates no store


def test_directory_factory_is_a_template(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore("b"), {}, {"a/x": (3, array_shard_directory_store("shards/x"))})
    assert store.get_config()["array_shards"] == {
        "a/x": {"dims": 3, "store": {"type": "local", "root": "shards/x/{chunk}.zarr"}}
    }
    factory = _round_trip(store).array_shards["a/x"][1]
    assert factory == ArrayShardDirectoryFactory("shards/x")


def test_config_size_does_not_depend_on_shard_count(tmp_path: Path) -> None:
    def written(count: int) -> str:
        root = tmp_path / str(count)
        store = ShardedStore(
            LocalStore(root / "b"), {}, {"t": (1, array_shard_directory_store(root / "s"))}
        )
        group = zarr.open_group(store, mode="w")
        array = group.create_array("t", shape=(count, 4), chunks=(1, 4), dtype="i4")
        array[:] = np.arange(count * 4).reshape(count, 4)
        return store.to_json(relative_to=root)

    one, many = written(1), written(40)
    assert one == many
    assert len(os.listdir(tmp_path / "40" / "s")) == 40


def test_memory_store_cannot_be_persisted() -> None:
    with pytest.raises(ConfigError, match=r"^mounts\.people: a MemoryStore cannot be written"):
        ShardedStore(LocalStore("b"), {"people": MemoryStore()}).get_config()
    with pytest.raises(ConfigError, match=r"^base: .*memory"):
        ShardedStore(FsspecStore.from_url("memory://x")).get_config()


def test_plain_function_factory_cannot_be_persisted() -> None:
    store = ShardedStore(LocalStore("b"), {}, {"t": (1, lambda index: LocalStore(index))})
    with pytest.raises(ConfigError, match=r"^array_shards\.t: array-shard factory .* cannot"):
        store.get_config()


def test_unregistered_store_class_cannot_be_persisted() -> None:
    class Custom(LocalStore):
        pass

    # A subclass is still a LocalStore and writes as one; a foreign store does not.
    assert ShardedStore(Custom("b")).get_config()["base"] == {"type": "local", "root": "b"}
    foreign = zarr.storage.WrapperStore(LocalStore("b"))
    with pytest.raises(ConfigError, match=r"^base: no registered store type writes WrapperStore"):
        ShardedStore(foreign).get_config()


# -------------------------------------------------------------- relative paths


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zarr's ZipStore appends rewrites
def test_dataset_folder_moves_with_its_config(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    store = ShardedStore(
        LocalStore(folder / "base.zarr"),
        {"people": ZipStore(folder / "people.zarr.zip", mode="w")},
        {"simulation/fine/temperature": (1, array_shard_directory_store(folder / "t"))},
    )
    tree = build_demo_tree()
    tree.to_zarr(store, zarr_format=3, consolidated=False)
    store.close()
    store.save_config(folder / "layout.json")
    config = json.loads((folder / "layout.json").read_text())
    assert config["base"] == {"type": "local", "root": "base.zarr"}
    assert config["mounts"]["people"] == {"type": "zip", "path": "people.zarr.zip"}
    assert (
        config["array_shards"]["simulation/fine/temperature"]["store"]["root"] == "t/{chunk}.zarr"
    )

    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(folder, moved)
    reopened = shardedstore.open(moved / "layout.json")
    assert reopened.read_only
    with xr.open_datatree(reopened, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)
    # Writable through mode="r+": the shards resolve inside the moved folder.
    writable = shardedstore.open(f"file://{moved}/layout.json", mode="r+")
    zarr.open_array(writable, path="simulation/fine/temperature")[12:] = 0
    assert not (moved / "t" / "12.zarr").exists()  # nothing past the end
    assert zarr.open_array(writable, path="simulation/fine/temperature")[0, 0, 0] != 0


def test_get_config_relative_to(tmp_path: Path) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "a" / "base"),
        {
            "m": FsspecStore.from_url(f"file://{tmp_path}/m"),
            "s3": FsspecStore.from_url("s3://bkt/x", storage_options={"anon": True}),
        },
        {"t": (1, array_shard_directory_store(tmp_path / "shards"))},
    )
    config = store.get_config(relative_to=tmp_path / "a")
    assert config["base"]["root"] == "base"
    assert config["mounts"]["m"]["url"] == "../m"
    assert config["mounts"]["s3"] == {
        "type": "fsspec",
        "url": "s3://bkt/x",
        "storage_options": {"anon": True},
    }
    assert config["array_shards"]["t"]["store"]["root"] == "../shards/{chunk}.zarr"
    # "../m", "../shards" and s3:// lie outside the folder: writing needs the opt-in.
    back = ShardedStore.from_config(config, base_path=tmp_path / "a", allow_outside=True)
    assert back.get_config() == store.get_config()
    assert back.get_config(relative_to=tmp_path / "a") == config


def test_relative_local_path_under_a_url_base_is_refused() -> None:
    config = {"format": "shardedstore", "version": 1, "base": {"type": "local", "root": "base"}}
    with pytest.raises(
        ConfigError, match=r"^base\.root: relative local path 'base' in a config read from"
    ):
        ShardedStore.from_config(config, base_path="s3://bkt/ds")
    config["base"] = {"type": "fsspec", "url": "base.zarr", "storage_options": {"anon": True}}
    store = ShardedStore.from_config(config, base_path="s3://bkt/ds")
    assert store.get_config()["base"]["url"] == "s3://bkt/ds/base.zarr"


def test_save_config_is_atomic_and_reopens(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore(tmp_path / "b"))
    store.save_config(tmp_path / "layout.json")
    store.save_config(tmp_path / "layout.json")  # replaces, leaves no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout.json"]
    assert shardedstore.open(tmp_path / "layout.json") == store.with_read_only(True)


# ------------------------------------------------------------ invalid configs


def _config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base"},
        "mounts": {"people": {"type": "local", "root": "people"}},
        "array_shards": {"t": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = config
        for part in parents:
            target = target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return config


INVALID = {
    "unknown type": (
        _config(mounts={"people": {"type": "foo"}}),
        r"^mounts\.people\.type: unknown store type 'foo'; "
        r"known: local, zip, fsspec, obstore, zip_url, sharded$",
    ),
    "future version": (
        _config(version=2),
        r"^version: format version 2 is newer than this shardedstore",
    ),
    "version zero": (_config(version=0), r"^version: unknown format version 0"),
    "version as text": (
        _config(version="1"),
        r"^version: expected an integer format version, got '1'",
    ),
    "no format": (_config(format=KeyError), r"^format: expected 'shardedstore', got None"),
    "wrong format": (_config(format="zarr"), r"^format: expected 'shardedstore'"),
    "no base": (_config(base=KeyError), r"^<config>: missing required field 'base'"),
    "root not a string": (
        _config(base={"type": "local", "root": 7}),
        r"^base\.root: expected string, got int 7",
    ),
    "absent root": (_config(base={"type": "local"}), r"^base: missing required field 'root'"),
    "unknown field": (
        _config(base={"type": "local", "root": "b", "module": "os"}),
        r"^base: unknown field 'module'; allowed: root, type",
    ),
    "top-level extra": (_config(module="os"), r"^<config>: unknown field 'module'"),
    "mounts not an object": (_config(mounts=["people"]), r"^mounts: expected object, got list"),
    "type not a string": (
        _config(base={"type": 3, "root": "b"}),
        r"^base\.type: expected string, got int 3",
    ),
    "dims not an integer": (
        _config(array_shards={"t": {"dims": "1", "store": {"type": "local", "root": "t/{chunk}"}}}),
        r"^array_shards\.t\.dims: expected integer",
    ),
    "absent dims": (
        _config(array_shards={"t": {"store": {"type": "local", "root": "t/{chunk}"}}}),
        r"^array_shards\.t: missing required field 'dims'",
    ),
    "dims zero": (
        _config(array_shards={"t": {"dims": 0, "store": {"type": "local", "root": "t/{chunk}"}}}),
        r"^array_shards\.t\.dims: 0 is less than the minimum of 1",
    ),
    "template without chunk": (
        _config(array_shards={"t": {"dims": 1, "store": {"type": "local", "root": "t"}}}),
        r"^array_shards\.t\.store: .*put \{chunk\} in its 'root'",
    ),
    "sharded template": (
        _config(
            array_shards={
                "t": {
                    "dims": 1,
                    "store": {"type": "sharded", "base": {"type": "local", "root": "{chunk}"}},
                }
            }
        ),
        r"^array_shards\.t\.store: .*cannot be a sharded store",
    ),
    "override index with wrong dims": (
        _config(
            array_shards={
                "t": {
                    "dims": 2,
                    "store": {"type": "local", "root": "t/{chunk}"},
                    "shards": {"3": {"type": "local", "root": "x"}},
                }
            }
        ),
        r"^array_shards\.t\.shards\.3: expected a chunk index with 2 part\(s\)",
    ),
    "zip mode w": (
        _config(base={"type": "zip", "path": "b.zip", "mode": "w"}),
        r"^base\.mode: 'w' is not allowed; expected 'r' or 'a'",
    ),
    "bad mount path": (
        _config(mounts={"a/../b": {"type": "local", "root": "x"}}),
        r"^mounts\[?'?a/\.\./b'?\]?.*",
    ),
    "nested mounts": (
        _config(
            mounts={"a": {"type": "local", "root": "x"}, "a/b": {"type": "local", "root": "y"}}
        ),
        r"^<config>: .*a/b",
    ),
    "nested unknown type": (
        _config(
            mounts={
                "sim": {
                    "type": "sharded",
                    "base": {"type": "local", "root": "s"},
                    "mounts": {"x": {"type": "nope"}},
                }
            }
        ),
        r"^mounts\.sim\.mounts\.x\.type: unknown store type 'nope'",
    ),
    "dims beyond an index-sized integer": (
        _config(
            array_shards={
                "t": {"dims": 10**20, "store": {"type": "local", "root": "t/{chunk}.zarr"}}
            }
        ),
        r"^array_shards\.t\.dims: 100000000000000000000 .* at most 64 dimensions",
    ),
    "dims more than an array can have": (
        _config(
            array_shards={"t": {"dims": 65, "store": {"type": "local", "root": "t/{chunk}.zarr"}}}
        ),
        r"^array_shards\.t\.dims: 65 .* at most 64 dimensions",
    ),
    "storage options not an object": (
        _config(base={"type": "fsspec", "url": "s3://b/x", "storage_options": "anon"}),
        r"^base\.storage_options: expected object",
    ),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_config_names_the_field(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, message = INVALID[name]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        ShardedStore.from_config(config)
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("value", [[], "layout.json", None, 3, 2.5, True])
def test_non_object_config(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^<config>: expected a JSON object \(a dict\), got"):
        ShardedStore.from_config(value)  # type: ignore[arg-type]


def test_config_error_is_a_value_error_with_a_path() -> None:
    with pytest.raises(ValueError, match="unknown store type") as info:
        ShardedStore.from_config(_config(mounts={"people": {"type": "foo"}}))
    assert isinstance(info.value, ConfigError)
    assert info.value.path == ("mounts", "people", "type")


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        shardedstore.open(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        shardedstore.open(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text(json.dumps(_config()))
    with pytest.raises(ValueError, match="mode must be"):
        shardedstore.open(tmp_path / "ok.json", mode="w")  # type: ignore[arg-type]


# --------------------------------------------------------------- hostile configs

EVIL_MODULE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
def run(*args, **kwargs):
    pathlib.Path({marker!r}).write_text("called")
class Store:
    def __init__(self, *args, **kwargs):
        pathlib.Path({marker!r}).write_text("called")
"""


def _legacy(name: str, module: str, args: list[Any]) -> dict[str, Any]:
    return {"name": name, "module": module, "config": {"args": args, "kwargs": {}}}


def _legacy_layout(base: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {
        "version": "0.3.1",
        "name": "ShardedStore",
        "module": "shardedstore",
        "config": {"args": [base], "kwargs": kwargs},
    }


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that leaves a marker file if it is imported or called."""
    marker = tmp_path / "marker"
    (tmp_path / "evil_module_for_tests.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def _hostile(marker: Path) -> dict[str, dict[str, Any]]:
    directory = _legacy("DirectoryStore", "zarr.storage", ["base"])
    return {
        "os.system at top": _legacy("system", "os", [f"touch {marker}"]),
        "subprocess.Popen at top": _legacy("Popen", "subprocess", [["touch", str(marker)]]),
        "os.system as base": _legacy_layout(_legacy("system", "os", [f"touch {marker}"])),
        "Popen as mount": _legacy_layout(
            directory, shards={"people": _legacy("Popen", "subprocess", [["touch", str(marker)]])}
        ),
        "evil module as array shard": _legacy_layout(
            directory,
            array_shard_dims={"t": 1},
            array_shards={"t": {"0": _legacy("Store", "evil_module_for_tests", [])}},
        ),
        "evil module top": _legacy("run", "evil_module_for_tests", []),
        "lookalike module": _legacy_layout(_legacy("DirectoryStore", "zarr.storage.evil", ["b"])),
        "lookalike class": _legacy_layout(_legacy("FSStore", "zarr.storage", ["s3://x"])),
        "memory store": _legacy_layout(_legacy("MemoryStore", "zarr.storage", [])),
        "v1 type naming a module": _config(base={"type": "os.system", "root": str(marker)}),
        "v1 type naming evil": _config(base={"type": "evil_module_for_tests.Store"}),
    }


@pytest.mark.parametrize(
    "name",
    [
        "os.system at top",
        "subprocess.Popen at top",
        "os.system as base",
        "Popen as mount",
        "evil module as array shard",
        "evil module top",
        "lookalike module",
        "lookalike class",
        "memory store",
        "v1 type naming a module",
        "v1 type naming evil",
    ],
)
def test_hostile_config_runs_nothing(name: str, evil_module: Path) -> None:
    config = _hostile(evil_module)[name]
    with pytest.raises(ConfigError, match=r"refusing store class|unknown store type"):
        ShardedStore.from_config(config)
    assert not evil_module.exists()
    assert "evil_module_for_tests" not in sys.modules


def test_hostile_legacy_error_names_the_field(evil_module: Path) -> None:
    config = _hostile(evil_module)["Popen as mount"]
    with pytest.raises(
        ConfigError,
        match=r"^config\.kwargs\.shards\.people\.module: "
        r"refusing store class 'subprocess'\.'Popen'",
    ):
        ShardedStore.from_config(config)


# ------------------------------------------------------------------ schema


def test_shipped_schema_is_a_valid_json_schema() -> None:
    schema = shardedstore.config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    path = Path(shardedstore.__file__).parent / "config" / "schema" / "config-v1.json"
    assert json.loads(path.read_text()) == schema


@pytest.mark.parametrize("name", list(INVALID))
def test_schema_and_loader_agree_on_shape_errors(name: str) -> None:
    config, _ = INVALID[name]
    semantic = {
        "unknown type",
        "template without chunk",
        "sharded template",
        "override index with wrong dims",
        "bad mount path",
        "nested mounts",
        "nested unknown type",
        "version zero",
    }
    errors = list(jsonschema.Draft202012Validator(shardedstore.config_schema()).iter_errors(config))
    if name in semantic:
        pass  # caught by the loader, not expressible in the schema
    else:
        assert errors, f"schema accepts {name}"


# ------------------------------------------------------- property: round trip

_segment = st.text("abcdefgh_", min_size=1, max_size=4)
_path = st.lists(_segment, min_size=1, max_size=3).map("/".join)


def _non_nesting(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in paths:
        if all(
            not (path == other or path.startswith(other + "/") or other.startswith(path + "/"))
            for other in kept
        ):
            kept.append(path)
    return kept


@st.composite
def _store_specs(draw: st.DrawFn, root: str, name: str, depth: int = 0) -> Any:
    # Each store gets its own location (stores of one layout must not overlap): ``name``
    # is unique in the layout and, holding "~", never an array path's directory.
    kinds = ["local", "zip", "fsspec", "obstore"] + (["sharded"] if depth < 1 else [])
    kind = draw(st.sampled_from(kinds))
    location = f"{root}/{name}"
    if kind == "local":
        return LocalStore(location)
    if kind == "zip":
        mode = draw(st.sampled_from(["r", "a"]))
        return ZipStore(location + ".zip", mode=mode, compression=draw(st.sampled_from([0, 8])))
    if kind == "fsspec":
        return FsspecStore.from_url(f"file://{location}")
    if kind == "obstore":
        return _obstore_local(Path(location))
    return draw(_layouts_strategy(root=location, depth=depth + 1))


@st.composite
def _layouts_strategy(draw: st.DrawFn, root: str, depth: int = 0) -> ShardedStore:
    paths = _non_nesting(draw(st.lists(_path, max_size=5)))
    split = draw(st.integers(0, len(paths)))
    mounts = {
        path: draw(_store_specs(root, "mount~" + path.replace("/", "~"), depth))
        for path in paths[:split]
    }
    arrays: dict[str, Any] = {}
    for path in paths[split:]:
        dims = draw(st.integers(1, 3))
        kind = draw(st.sampled_from(["directory", "zip", "local", "overrides"]))
        if kind == "directory":
            factory: Any = array_shard_directory_store(f"{root}/{path}")
        elif kind == "zip":
            factory = array_shard_template_store(
                {"type": "zip", "path": f"{root}/{path}/{{chunk}}.zip"}
            )
        elif kind == "local":
            factory = array_shard_template_store(
                {"type": "local", "root": f"{root}/{path}/c{{chunk}}"}
            )
        else:
            index = ".".join(str(draw(st.integers(0, 20))) for _ in range(dims))
            factory = array_shard_template_store(
                {"type": "fsspec", "url": f"file://{root}/{path}/{{chunk}}"},
                shards={
                    index: {
                        "type": "zip",
                        "path": f"{root}/override~{path.replace('/', '~')}~{index}.zip",
                        "mode": "r",
                    }
                },
            )
        arrays[path] = (dims, factory)
    base = (
        draw(_store_specs(root, "base~", depth + 1)) if depth == 0 else LocalStore(f"{root}/base~")
    )
    return ShardedStore(base, mounts, arrays)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_layouts_survive_a_json_round_trip(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = str(tmp_path_factory.getbasetemp() / "layouts")
    store = data.draw(_layouts_strategy(root=root))
    config = json.loads(json.dumps(store.get_config()))
    _valid(config)
    assert ShardedStore.from_config(config) == store
    relative = json.loads(json.dumps(store.get_config(relative_to=root)))
    _valid(relative)
    assert ShardedStore.from_config(relative, base_path=root) == store


def test_template_factory_pickles_and_compares(tmp_path: Path) -> None:
    import pickle

    factory = array_shard_template_store(
        {"type": "zip", "path": f"{tmp_path}/{{chunk}}.zip"},
        shards={"2": {"type": "local", "root": "x"}},
    )
    assert pickle.loads(pickle.dumps(factory)) == factory
    assert isinstance(factory, ArrayShardTemplateFactory)
    assert factory("3") == ZipStore(tmp_path / "3.zip")
    assert factory("2") == LocalStore("x")
    assert factory.supports_sync  # local and (copy-on-write) zip stores both do
    assert array_shard_template_store({"type": "local", "root": "t/{chunk}"}).supports_sync
    assert not array_shard_template_store(
        {"type": "fsspec", "url": "memory://t/{chunk}"}
    ).supports_sync


# ------------------------------------------- issue 9, item 10: smaller config points


def test_saving_a_read_only_open_writes_the_config_it_was_opened_from(tmp_path: Path) -> None:
    # The read-only open wrote "mode": "r" on the base zip but not on the template.
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "zip", "path": "base.zarr.zip"},
        "mounts": {
            "coarse": {"type": "local", "root": "coarse.zarr"},
            "people": {"type": "zip", "path": "people.zarr.zip", "mode": "r"},
        },
        "array_shards": {
            "t": {
                "dims": 1,
                "store": {"type": "zip", "path": "t/{chunk}.zarr.zip"},
                "shards": {"7": {"type": "zip", "path": "archive/t7.zarr.zip"}},
            }
        },
    }
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "layout.json").write_text(json.dumps(config))
    for mode in ("r", "r+"):
        store = shardedstore.open(folder / "layout.json", mode)  # type: ignore[arg-type]
        assert store.read_only == (mode == "r")
        assert store.base.read_only == (mode == "r")
        store.save_config(folder / f"saved-{mode}.json")
        assert json.loads((folder / f"saved-{mode}.json").read_text()) == config
    # The open mode is the reader's: the saved config opens for writing like the original.
    saved = shardedstore.open(folder / "saved-r.json", "r+")
    assert not saved.base.read_only
    assert saved.mounts["people"].read_only  # declared read-only in the config itself
    assert sorted(p.name for p in folder.iterdir()) == [
        "layout.json",
        "saved-r+.json",
        "saved-r.json",
    ]  # nothing created by opening


def test_from_config_leaves_the_callers_dict_as_it_was(tmp_path: Path) -> None:
    # A config read from a file is resolved in place (10^6 explicit shards: no copy of
    # each); a dict the caller hands over is never changed.
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {
            "t": {
                "dims": 1,
                "shards": {
                    str(i): {"type": "zip", "path": f"t/{i}.zarr.zip", "mode": "r"}
                    for i in range(3)
                },
            }
        },
    }
    before = json.loads(json.dumps(config))
    store = ShardedStore.from_config(config, base_path=tmp_path, read_only=True)
    assert config == before
    (tmp_path / "layout.json").write_text(json.dumps(config))
    opened = shardedstore.open(tmp_path / "layout.json")  # type: ignore[arg-type]
    for made in (store, opened):
        saved = tmp_path / "saved.json"
        made.save_config(saved)
        assert json.loads(saved.read_text()) == before


def _nested_config(depth: int) -> dict[str, Any]:
    store: dict[str, Any] = {"type": "local", "root": "leaf"}
    for level in range(depth):
        store = {
            "type": "sharded",
            "base": {"type": "local", "root": f"b{level}"},
            "mounts": {"m": store},
        }
    return {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "top"},
        "mounts": {"m": store},
    }


def test_nested_sharded_stores_have_a_depth_limit(tmp_path: Path) -> None:
    # 200 nested sharded stores gave a RecursionError.
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(_nested_config(200)))
    limit = r"^mounts\.m(\.mounts\.m){32}: sharded stores nest more than 32 deep here"
    with pytest.raises(ConfigError, match=limit):
        shardedstore.open(path)
    with pytest.raises(ConfigError, match=limit):
        ShardedStore.from_config(_nested_config(33), base_path=tmp_path)
    store = ShardedStore.from_config(_nested_config(32), base_path=tmp_path)
    assert isinstance(store.mounts["m"], ShardedStore)


def test_json_nested_too_deeply_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    # Deeper than any Python's limit (3.13 parses 5000 levels without a RecursionError).
    path.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(ConfigError, match=r"deep\.json: JSON nested too deeply"):
        shardedstore.open(path)


DUPLICATES = {
    "store field": (
        '{"format": "shardedstore", "version": 1,'
        ' "base": {"type": "local", "root": "a", "root": "b"}}',
        r"^base\.root: the key 'root' appears twice in one JSON object",
    ),
    "top level": (
        '{"format": "shardedstore", "version": 1, "version": 1,'
        ' "base": {"type": "local", "root": "a"}}',
        r"^version: the key 'version' appears twice in one JSON object",
    ),
    "mount": (
        '{"format": "shardedstore", "version": 1, "base": {"type": "local", "root": "a"},'
        ' "mounts": {"p": {"type": "local", "root": "p"}, "p": {"type": "local", "root": "q"}}}',
        r"^mounts\.p: the key 'p' appears twice in one JSON object",
    ),
    "array shard": (
        '{"format": "shardedstore", "version": 1, "base": {"type": "local", "root": "a"},'
        ' "array_shards": {"t": {"dims": 1, "shards": {"3": {"type": "local", "root": "x"},'
        ' "3": {"type": "local", "root": "y"}}}}}',
        r"^array_shards\.t\.shards\.3: the key '3' appears twice in one JSON object",
    ),
    "legacy": (
        '{"name": "ShardedStore", "module": "shardedstore", "module": "os", "config": {}}',
        r"^module: the key 'module' appears twice in one JSON object",
    ),
}


@pytest.mark.parametrize("name", list(DUPLICATES))
def test_duplicate_keys_are_refused(name: str, tmp_path: Path) -> None:
    # The last value silently won.
    text, message = DUPLICATES[name]
    (tmp_path / "layout.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        shardedstore.open(tmp_path / "layout.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout.json"]


def test_duplicate_keys_are_refused_in_a_config_read_from_a_url(
    s3_server: Any, s3_bucket: str
) -> None:
    import boto3

    text, message = DUPLICATES["store field"]
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key="ds/layout.json", Body=text.encode())
    with pytest.raises(ConfigError, match=message):
        shardedstore.open(
            f"s3://{s3_bucket}/ds/layout.json", storage_options=s3_server.storage_options
        )


# ------------------------------------- issue 9, item 9: many explicit array shards


def _explicit(shards: dict[str, Any], dims: int = 1) -> dict[str, Any]:
    return {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {
            "t": {
                "dims": dims,
                "store": {"type": "local", "root": "t/{chunk}.zarr"},
                "shards": shards,
            }
        },
    }


def _full_validator_error(config: dict[str, Any]) -> tuple[tuple[Any, ...], str] | None:
    """What validating the whole config entry by entry reports (the reference)."""
    from jsonschema.exceptions import best_match

    from shardedstore.config.schema import describe

    validator = jsonschema.Draft202012Validator(shardedstore.config_schema())
    error = best_match(validator.iter_errors(config))
    return None if error is None else (tuple(error.absolute_path), describe(error))


def _fast_error(config: dict[str, Any]) -> tuple[tuple[Any, ...], str] | None:
    from shardedstore.config.schema import check_schema

    try:
        check_schema(config)
    except ConfigError as error:
        return error.path, error.problem
    return None


def test_repeated_shard_entries_are_validated_once_per_shape() -> None:
    from shardedstore.config.schema import schema_skeleton

    shards: dict[str, Any] = {
        str(i): {"type": "zip", "path": f"z/t-{i}.zarr.zip", "mode": "r"} for i in range(10_000)
    }
    shards.update({str(i): {"type": "local", "root": f"d/{i}"} for i in range(10_000, 10_100)})
    config = _explicit(shards)
    skeleton = schema_skeleton(config)
    assert len(skeleton["array_shards"]["t"]["shards"]) == 2  # one per shape of entry
    assert _fast_error(config) is None
    assert len(config["array_shards"]["t"]["shards"]) == 10_100  # the config is untouched


def test_a_bad_entry_among_many_is_named(tmp_path: Path) -> None:
    shards: dict[str, Any] = {
        str(i): {"type": "zip", "path": f"z/t-{i}.zarr.zip"} for i in range(2_000)
    }
    shards["1000"] = {"type": "zip", "path": "z/t-1000.zarr.zip", "mode": "w"}
    shards["1500"] = {"type": "zip", "path": ""}
    shards["01"] = {"type": "zip", "path": "z/01.zip"}
    config = _explicit(shards)
    # As the full validator ranks them: the shallowest error, then the greatest key.
    for bad, message in [
        ("01", r"^array_shards\.t\.shards: '01' does not match"),
        ("1500", r"^array_shards\.t\.shards\.1500\.path: '' should be non-empty"),
        ("1000", r"^array_shards\.t\.shards\.1000\.mode: 'w' is not allowed"),
    ]:
        with pytest.raises(ConfigError, match=message):
            ShardedStore.from_config(config, base_path=tmp_path)
        assert _fast_error(config) == _full_validator_error(config)
        del shards[bad]
    ShardedStore.from_config(config, base_path=tmp_path)


_bad_entries = st.sampled_from(
    [
        {"type": "local", "root": ""},
        {"type": "local", "root": 7},
        {"type": "local"},
        {"type": "local", "root": "x", "module": "os"},
        {"type": "zip", "path": "x.zip", "mode": "w"},
        {"type": "zip", "path": "x.zip", "compression": 3},
        {"type": "zip", "path": "x.zip", "allowZip64": "yes"},
        {"type": "fsspec", "url": "s3://b/x", "storage_options": "anon"},
        {"type": "obstore", "url": "s3://b/x", "config": {"region": ["a"]}},
        {"type": 3, "root": "x"},
        {"type": ""},
        {"root": "x"},
        "local",
        ["x"],
        None,
        {"type": "sharded", "base": {"type": "local", "root": ""}},
        {"type": "sharded"},
    ]
)
_good_entries = st.sampled_from(
    [
        {"type": "local", "root": "{i}"},
        {"type": "zip", "path": "z/{i}.zip", "mode": "r"},
        {"type": "zip", "path": "z/{i}.zip", "compression": 8, "allowZip64": False},
        {"type": "fsspec", "url": "s3://b/{i}", "storage_options": {"anon": True}},
        {"type": "obstore", "url": "s3://b/{i}", "config": {"region": "x"}},
        {"type": "plugin-type", "anything": "{i}"},
        {"type": "sharded", "base": {"type": "local", "root": "{i}"}},
    ]
)


def _render(entry: Any, i: int) -> Any:
    if isinstance(entry, dict):
        return {key: _render(value, i) for key, value in entry.items()}
    return entry.replace("{i}", str(i)) if isinstance(entry, str) else entry


@settings(max_examples=300, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["0", "1", "2", "10", "9", "3.1", "01", "x", ""]),
            st.one_of(_good_entries, _bad_entries),
        ),
        max_size=12,
    ),
    dims=st.integers(1, 2),
)
def test_fast_validation_reports_what_the_full_validator_reports(
    entries: list[tuple[str, Any]], dims: int
) -> None:
    shards = {f"{key}{n}" if key else key: _render(e, n) for n, (key, e) in enumerate(entries)}
    config = _explicit(shards, dims)
    assert _fast_error(config) == _full_validator_error(config)


@given(value=st.text(alphabet="ab./", min_size=1, max_size=12))
def test_resolving_many_shards_resolves_as_normpath(value: str) -> None:
    # The shortcut taken for each of 10^6 explicit shards gives os.path.normpath's answer.
    from shardedstore.config.layout import _below

    assert _below("/data/ds/", value) == os.path.normpath("/data/ds/" + value)
