"""Stores of one layout never overlap; a config opened for writing stays in its folder.

Issue 8, "What was seen" 3 (a)-(d) and 5: each repro is a test below that failed
before the fix (the layout was accepted, or the write reached outside the folder).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore, LoggingStore, MemoryStore, ZipStore

import shardedstore
from shardedstore import (
    ArrayShardStoresFactory,
    ConfigError,
    LayoutError,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore.store.locations import (
    LOCAL,
    Pattern,
    _part_regex,
    _patterns_meet,
    pattern_location,
    placeholder_survives,
    value_location,
)

pytestmark = pytest.mark.filterwarnings("ignore:Object at .* is not recognized")

OVERLAP = "give every store of a layout its own location"


def _config(**layout: Any) -> dict[str, Any]:
    return {"format": "shardedstore", "version": 1, **layout}


def _write(path: Path, config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))
    return path


def _sentinel(folder: Path) -> dict[str, bytes]:
    """A folder holding something that must survive; returns what it holds."""
    (folder / "keep").mkdir(parents=True)
    (folder / "keep" / "thesis.txt").write_bytes(b"years of work")
    (folder / "zarr.json").write_bytes(b'{"zarr_format": 3, "node_type": "group"}')
    return _contents(folder)


def _contents(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _dataset(n: int = 4) -> xr.Dataset:
    return xr.Dataset(
        {"t2m": (("time", "x"), np.arange(n * 3, dtype="f8").reshape(n, 3))},
        coords={"time": np.arange(n)},
    ).chunk({"time": 1})


# ------------------------------------------------- issue 8, item 3: the repros


def test_repro_a_template_whose_dotdot_swallows_the_placeholder(tmp_path: Path) -> None:
    # Every array shard would be one store: rows 1, 2, 3 read back as 3, 3, 3.
    template = {"type": "local", "root": f"{tmp_path}/t/{{chunk}}/../../alias.zarr"}
    with pytest.raises(LayoutError, match=r"array shards of 't'.*loses \{chunk\}"):
        ShardedStore(
            LocalStore(tmp_path / "base"), {}, {"t": (1, array_shard_template_store(template))}
        )
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        array_shards={
            "t": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}/../../alias.zarr"}}
        },
    )
    path = _write(tmp_path / "ds" / "layout.json", config)
    for mode in ("r", "r+"):
        with pytest.raises(ConfigError, match=r"^array_shards\.t\.store\.root: .*loses \{chunk\}"):
            shardedstore.open(path, mode)  # type: ignore[arg-type]
    assert not (tmp_path / "ds" / "alias.zarr").exists()


def test_repro_b_two_arrays_with_one_template(tmp_path: Path) -> None:
    # Writing u10 overwrote t2m.
    template = {"type": "local", "root": f"{tmp_path}/shards/{{chunk}}.zarr"}
    with pytest.raises(LayoutError, match=r"array shards of 'u10'.*array shards of 't2m'"):
        ShardedStore(
            LocalStore(tmp_path / "base"),
            {},
            {
                "t2m": (1, array_shard_template_store(template)),
                "u10": (1, array_shard_template_store(template)),
            },
        )
    store = {"type": "local", "root": "shards/{chunk}.zarr"}
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        array_shards={"t2m": {"dims": 1, "store": store}, "u10": {"dims": 1, "store": store}},
    )
    with pytest.raises(
        ConfigError, match=r"^array_shards\.u10\.store\.root: .*array_shards\.t2m\.store\.root"
    ):
        ShardedStore.from_config(config, base_path=tmp_path)


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "file-url"])
def test_repro_c_base_and_a_mount_on_one_directory(tmp_path: Path, spelling: str) -> None:
    # Root attributes were overwritten.
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    mount: Store = {
        "same": LocalStore(tmp_path / "data"),
        "dotdot": LocalStore(f"{tmp_path}/other/../data"),
        "symlink": LocalStore(tmp_path / "link"),
        "file-url": FsspecStore.from_url(f"file://{tmp_path}/data"),
    }[spelling]
    with pytest.raises(LayoutError, match=r"mount 'people' .* is the same location as base"):
        ShardedStore(LocalStore(tmp_path / "data"), {"people": mount})
    config = _config(
        base={"type": "local", "root": "data"},
        mounts={"people": {"type": "local", "root": "link" if spelling == "symlink" else "data"}},
    )
    path = _write(tmp_path / "layout.json", config)
    with pytest.raises(
        ConfigError, match=r"^mounts\.people\.root: .* is the same location as base\.root"
    ):
        shardedstore.open(path)


def test_repro_d_base_directory_holding_the_array_shards(tmp_path: Path) -> None:
    # Shard files appeared as keys of the hierarchy.
    with pytest.raises(LayoutError, match=r"array shards of 't'.*inside base"):
        ShardedStore(
            LocalStore(tmp_path), {}, {"t": (1, array_shard_directory_store(tmp_path / "shards"))}
        )
    config = _config(
        base={"type": "local", "root": "."},
        array_shards={"t": {"dims": 1, "store": {"type": "local", "root": "shards/{chunk}.zarr"}}},
    )
    path = _write(tmp_path / "layout.json", config)
    with pytest.raises(ConfigError, match=r"^array_shards\.t\.store\.root: .*inside base\.root"):
        shardedstore.open(path)


def test_validate_reports_a_config_written_by_others(tmp_path: Path) -> None:
    # ``validate`` called these layouts valid; now it names both fields and exits 1.
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        mounts={"people": {"type": "local", "root": "./base.zarr"}},
    )
    path = _write(tmp_path / "theirs" / "layout.json", config)
    zarr.open_group(LocalStore(path.parent / "base.zarr"), mode="w", attributes={"a": 1})
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shardedstore"), "validate", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result
    assert "valid (every shard reachable" not in result.stdout
    assert "mounts.people.root:" in result.stderr
    assert "is the same location as base.root" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------ overlap: what counts


def test_a_mount_where_a_template_puts_a_shard(tmp_path: Path) -> None:
    shards = array_shard_directory_store(tmp_path / "shards")
    base = LocalStore(tmp_path / "base")
    with pytest.raises(LayoutError, match=r"mount 'm' .* is where chunk index 3 goes in"):
        ShardedStore(base, {"m": LocalStore(tmp_path / "shards" / "3.zarr")}, {"t": (1, shards)})
    with pytest.raises(LayoutError, match=r"lies inside the store of chunk index 3"):
        ShardedStore(base, {"m": LocalStore(tmp_path / "shards/3.zarr/x")}, {"t": (1, shards)})
    with pytest.raises(LayoutError, match=r"mount 'm' .* lies inside base"):
        ShardedStore(base, {"m": ZipStore(tmp_path / "base" / "m.zip")})
    # Next to the shards, under another name, is fine.
    ShardedStore(base, {"m": LocalStore(tmp_path / "shards" / "people.zarr")}, {"t": (1, shards)})


def test_templates_compare_as_patterns(tmp_path: Path) -> None:
    def layout(**templates: tuple[int, str]) -> ShardedStore:
        arrays = {
            name: (dims, array_shard_template_store({"type": "zip", "path": f"{tmp_path}/{path}"}))
            for name, (dims, path) in templates.items()
        }
        return ShardedStore(LocalStore(tmp_path / "base"), {}, arrays)

    layout(t=(1, "s/t-{chunk}.zip"), u=(1, "s/u-{chunk}.zip"))
    layout(t=(1, "s/{chunk}.zip"), u=(1, "s/{chunk}.zarr.zip"))
    layout(t=(1, "s/a{chunk}.zip"), u=(1, "s/{chunk}.zip"))
    with pytest.raises(LayoutError):  # "1.0.zip" is t's chunk 1.0 and u's chunk 1
        layout(t=(2, "s/{chunk}.zip"), u=(1, "s/{chunk}.0.zip"))
    with pytest.raises(LayoutError):  # "11.zip" is t's chunk 11 and u's chunk 1
        layout(t=(1, "s/{chunk}.zip"), u=(1, "s/1{chunk}.zip"))
    with pytest.raises(LayoutError):  # u's shards lie inside t's
        layout(t=(1, "s/{chunk}"), u=(1, "s/{chunk}/u.zip"))


def test_stores_without_a_path_overlap_by_identity(tmp_path: Path) -> None:
    memory = MemoryStore()
    with pytest.raises(LayoutError, match=r"mount 'b' .* is the same location as mount 'a'"):
        ShardedStore(MemoryStore(), {"a": memory, "b": memory})
    with pytest.raises(LayoutError, match=r"is the same location as base"):
        ShardedStore(memory, {"a": LoggingStore(memory.with_read_only(True))})
    ShardedStore(MemoryStore(), {"a": MemoryStore(), "b": MemoryStore()})


def test_urls_are_normalized(tmp_path: Path) -> None:
    base = FsspecStore.from_url("memory://ds/base")
    with pytest.raises(LayoutError, match=r"lies inside base"):
        ShardedStore(base, {"m": FsspecStore.from_url("memory:///ds/other/../base/m")})
    ShardedStore(base, {"m": FsspecStore.from_url("memory://ds/base-m")})
    assert (
        value_location("s3a://b/x/./y/../z", "url").key == value_location("s3://b/x/z", "url").key
    )
    assert (
        value_location(f"file://{tmp_path}/a", "url").key
        == value_location(str(tmp_path / "a"), "local").key
    )
    assert str(value_location("HTTP://Host.org/a/b?x=1", "url")) == "https://host.org/a/b"


def test_a_mounted_sharded_store_contributes_its_own_stores(tmp_path: Path) -> None:
    inner = ShardedStore(
        LocalStore(tmp_path / "inner"),
        {"x": LocalStore(tmp_path / "base" / "x")},
    )
    with pytest.raises(LayoutError, match=r"mount 'x' in mount 'sub' .* lies inside base"):
        ShardedStore(LocalStore(tmp_path / "base"), {"sub": inner})
    with pytest.raises(LayoutError, match=r"base in mount 'b' .* is the same location as"):
        ShardedStore(LocalStore(tmp_path / "other"), {"a": inner, "b": inner})
    ShardedStore(LocalStore(tmp_path / "other"), {"sub": inner})


def test_plain_callables_are_checked_by_calling_them_twice(tmp_path: Path) -> None:
    calls: list[str] = []

    def nested(index: str) -> Store:
        calls.append(index)
        return LocalStore(tmp_path / "base" / index)

    with pytest.raises(LayoutError, match=r"array shard 't' chunk 0\.0 .* lies inside base"):
        ShardedStore(LocalStore(tmp_path / "base"), {}, {"t": (2, nested)})
    assert calls == ["0.0", "1.1"]  # two indices, never every index of the array
    one = MemoryStore()
    with pytest.raises(LayoutError, match=r"chunk 1 .* is the same location as .* chunk 0"):
        ShardedStore(MemoryStore(), {}, {"t": (1, lambda index: one)})

    def only_zero(index: str) -> Store:
        if index != "0":
            raise KeyError(index)
        return LocalStore(tmp_path / "zero")

    ShardedStore(LocalStore(tmp_path / "base"), {}, {"t": (1, only_zero)})


def test_explicit_array_shards(tmp_path: Path) -> None:
    template = {"type": "zip", "path": f"{tmp_path}/t/{{chunk}}.zip"}
    base = LocalStore(tmp_path / "base")
    # An override where the template would put that very shard is that shard.
    same = {"3": {"type": "zip", "path": f"{tmp_path}/t/3.zip"}}
    ShardedStore(base, {}, {"t": (1, array_shard_template_store(template, shards=same))})
    stores = {"3": ZipStore(tmp_path / "t" / "3.zip")}
    fallback = array_shard_template_store(template)
    ShardedStore(base, {}, {"t": (1, ArrayShardStoresFactory(stores, fallback))})
    # Where the template puts another shard, it is not.
    other = {"3": {"type": "zip", "path": f"{tmp_path}/t/4.zip"}}
    with pytest.raises(LayoutError, match=r"array shard 't' chunk 3 .* chunk index 4 goes in"):
        ShardedStore(base, {}, {"t": (1, array_shard_template_store(template, shards=other))})
    two = {"3": {"type": "local", "root": "x"}, "4": {"type": "local", "root": "x/y"}}
    with pytest.raises(LayoutError, match=r"chunk 4 .* lies inside array shard 't' chunk 3"):
        ShardedStore(base, {}, {"t": (1, array_shard_template_store(template, shards=two))})


def test_overlap_in_a_nested_config_names_the_nested_field(tmp_path: Path) -> None:
    config = _config(
        base={"type": "local", "root": "b"},
        mounts={
            "s": {
                "type": "sharded",
                "base": {"type": "local", "root": "nb"},
                "mounts": {"q": {"type": "zip", "path": "b/q.zip"}},
            }
        },
    )
    with pytest.raises(
        ConfigError, match=r"^mounts\.s\.mounts\.q\.path: .* lies inside base\.root"
    ):
        ShardedStore.from_config(config, base_path=tmp_path)


def test_the_overlap_error_pickles(tmp_path: Path) -> None:
    with pytest.raises(LayoutError) as caught:
        ShardedStore(LocalStore(tmp_path), {"m": LocalStore(tmp_path)})
    back = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(back, LayoutError)
    assert str(back) == str(caught.value)


def test_pattern_locations(tmp_path: Path) -> None:
    found = pattern_location("s3://b/x/{chunk}/../y{chunk}.zarr", "url", 1)
    assert isinstance(found, Pattern)
    assert (found.space, found.fixed, found.rest) == ("s3", ("b", "x"), ("y{chunk}.zarr",))
    assert str(found.render("7")) == "s3://b/x/y7.zarr"
    assert not isinstance(pattern_location("t/{chunk}/..", "local", 1), Pattern)
    assert placeholder_survives("t/{chunk}/../u/{chunk}", "local")
    assert not placeholder_survives("t/{chunk}/../../alias.zarr", "local")
    found = pattern_location(f"{tmp_path}/a/../{{chunk}}", "local", 1)
    assert isinstance(found, Pattern)
    assert found.space == LOCAL
    assert str(found) == f"{os.path.realpath(tmp_path)}/{{chunk}}"


_template_part = st.lists(
    st.sampled_from(["{chunk}", "0", "1", "2", ".", "a", "-", "zip"]), min_size=1, max_size=4
).map("".join)


def _indices(dims: int) -> list[str]:
    numbers = [str(n) for n in range(13)]
    indices = numbers
    for _ in range(dims - 1):
        indices = [f"{a}.{b}" for a in indices for b in numbers[:4]]
    return indices


@settings(max_examples=300, deadline=None)
@given(a=_template_part, b=_template_part, a_dims=st.integers(1, 2), b_dims=st.integers(1, 2))
def test_template_parts_never_miss_a_shared_name(a: str, b: str, a_dims: int, b_dims: int) -> None:
    names_a = {a.replace("{chunk}", index) for index in _indices(a_dims)}
    names_b = {b.replace("{chunk}", index) for index in _indices(b_dims)}
    if "{chunk}" in a:
        assert all(_part_regex(a, a_dims).fullmatch(name) for name in names_a)
    if "{chunk}" in a and "{chunk}" in b and names_a & names_b:
        # Two templates that can name one file or directory are always caught.
        assert _patterns_meet(a, a_dims, b, b_dims)
        assert _patterns_meet(b, b_dims, a, a_dims)


# ---------------------------------------- issue 8, item 5: configs stay inside


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the dataset's folder, holding data that must survive."""
    return tmp_path / "elsewhere"


@pytest.mark.parametrize("root", ["absolute", "../../elsewhere", "template", "symlink"])
def test_repro_5_a_config_cannot_send_writes_outside_its_folder(
    tmp_path: Path, outside: Path, root: str
) -> None:
    before = _sentinel(outside)
    folder = tmp_path / "shared" / "ds"
    folder.mkdir(parents=True)
    os.symlink(outside, folder / "inside-looking")
    config: dict[str, Any] = _config(base={"type": "local", "root": "base.zarr"})
    if root == "absolute":
        config["base"]["root"] = str(outside)  # "/some/where"
        field = "base.root"
    elif root == "../../elsewhere":
        config["base"]["root"] = "../../elsewhere"
        field = "base.root"
    elif root == "symlink":
        config["mounts"] = {"people": {"type": "local", "root": "inside-looking"}}
        field = "mounts.people.root"
    else:
        store = {"type": "local", "root": "../../elsewhere/{chunk}"}
        config["array_shards"] = {"t2m": {"dims": 1, "store": store}}
        field = "array_shards.t2m.store.root"
    path = _write(folder / "layout.json", config)
    for mode in ("r+", "a"):
        with pytest.raises(ConfigError, match=rf"^{field}: .*allow_outside=True") as caught:
            shardedstore.open(path, mode)  # type: ignore[arg-type]
        assert str(outside.resolve()) in str(caught.value)
    with pytest.raises(ConfigError, match=r"not inside the config's folder"):
        ShardedStore.from_config(config, base_path=folder)
    assert _contents(outside) == before
    # Reading needs no opt-in: it cannot destroy anything.
    shardedstore.open(path).close()
    assert _contents(outside) == before


@pytest.mark.parametrize("engine", ["zarr", "zarrs"])
def test_a_template_folder_turned_into_a_symlink_stops_the_next_new_shard(
    tmp_path: Path, outside: Path, engine: str
) -> None:
    # Every new shard store is checked where it really is, not where the first one was;
    # with zarrs too, which makes the new shards of a request together.
    before = _sentinel(outside)
    folder = tmp_path / "ds"
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        array_shards={"t2m": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}},
    )
    path = _write(folder / "layout.json", config)
    store = shardedstore.open(path, "r+")
    with shardedstore.use_engine(engine):
        array = zarr.create_array(store, name="t2m", shape=(8, 2), chunks=(1, 2), dtype="i4")
    array[0:2] = 1  # shards 0 and 1, in the real folder t/
    os.rename(folder / "t", folder / "t-moved")
    os.symlink(outside, folder / "t")  # t/ now leads outside the config's folder
    with pytest.raises(LayoutError, match=r"outside the config's folder"):
        array[2:6] = 2
    assert _contents(outside) == before


@pytest.mark.parametrize("engine", ["zarr", "zarrs"])
def test_a_symlinked_shard_among_new_ones_stops_the_write(
    tmp_path: Path, outside: Path, engine: str
) -> None:
    # The shards of one request share their resolved folder, but each shard's own
    # name is still looked at: a link placed where a new shard will be is refused.
    before = _sentinel(outside)
    folder = tmp_path / "ds"
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        array_shards={"t2m": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}},
    )
    path = _write(folder / "layout.json", config)
    store = shardedstore.open(path, "r+")
    with shardedstore.use_engine(engine):
        array = zarr.create_array(store, name="t2m", shape=(8, 2), chunks=(1, 2), dtype="i4")
    (folder / "t").mkdir()
    os.symlink(outside, folder / "t" / "5.zarr")
    with pytest.raises(LayoutError, match=r"'t2m' chunk 5: .*outside the config's folder"):
        array[:] = 2
    assert _contents(outside) == before


@pytest.mark.parametrize("how", ["zarr", "zarrs", "delete", "delete_dir"])
def test_a_symlink_inside_an_existing_shard_stops_writes_through_it(
    tmp_path: Path, outside: Path, how: str
) -> None:
    # t/0.zarr/c -> elsewhere/keep: chunk (0, 0) of the array is elsewhere/keep/0. The
    # shard's own path is inside the folder; a write or delete below it would follow the
    # link out of it.
    path, _ = _linked_layout(tmp_path / "ds", outside)
    before = _contents(outside)
    store = shardedstore.open(path, "r+")
    array = zarr.open_array(store, path="t2m", mode="r+")

    def attempt() -> None:
        if how == "delete":
            zarr.core.sync.sync(store.delete("t2m/c/0/0"))
        elif how == "delete_dir":
            zarr.core.sync.sync(store.delete_dir("t2m"))
        else:
            with shardedstore.use_engine(how):  # the pipeline is chosen when it opens
                zarr.open_array(store, path="t2m", mode="r+")[:] = 2

    with pytest.raises(LayoutError, match=r"'t2m' chunk 0: .*0.zarr/c' is a symlink .*outside"):
        attempt()
    assert _contents(outside) == before
    # The shards without a link are written as usual; a read follows the link.
    array[1:] = 3
    np.testing.assert_array_equal(zarr.open_array(shardedstore.open(path), path="t2m")[1:], 3)
    store.close()
    # With the opt-in, the link is followed, as by any zarr store.
    with shardedstore.open(path, "r+", allow_outside=True) as store:
        zarr.open_array(store, path="t2m", mode="r+")[0] = 7
    assert (outside / "keep" / "0").read_bytes() != b"precious"


_BASE = {"type": "local", "root": "base.zarr"}
_T2M = {"t2m": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}}


def _linked_layout(folder: Path, outside: Path, nested: bool = False) -> tuple[Path, Path]:
    """A config whose array t2m (4 steps, written) has shard 0's c/ linked to
    outside/keep (its chunk 0 is outside/keep/0, "precious"); the config and the folder
    of the array's shards. ``nested``: the array is in a layout mounted at s."""
    _sentinel(outside)
    (outside / "keep" / "0").write_bytes(b"precious")
    if nested:
        inner = {"type": "sharded", "base": {"type": "local", "root": "s.zarr"}}
        inner["array_shards"] = _T2M
        config = _config(base=_BASE, mounts={"s": inner})
    else:
        config = _config(base=_BASE, array_shards=_T2M)
    path = _write(folder / "layout.json", config)
    name = "s/t2m" if nested else "t2m"
    with shardedstore.open(path, "r+") as store:
        if nested:
            zarr.create_group(store, path="s")
        array = zarr.create_array(store, name=name, shape=(4, 2), chunks=(1, 2), dtype="i4")
        array[:] = 1
    chunks = folder / "t" / "0.zarr" / "c"
    (chunks / "0").unlink()
    chunks.rmdir()
    os.symlink(outside / "keep", chunks)
    return path, folder / "t"


def test_a_pickled_store_stays_in_the_folder(tmp_path: Path, outside: Path) -> None:
    # What a dask worker or a process pool gets is a pickled copy: confined as well.
    path, _ = _linked_layout(tmp_path / "ds", outside)
    before = _contents(outside)
    copy = pickle.loads(pickle.dumps(shardedstore.open(path, "r+")))
    array = zarr.open_array(copy, path="t2m", mode="r+")
    with pytest.raises(LayoutError, match=r"'t2m' chunk 0: .* is a symlink"):
        array[0] = 2
    assert _contents(outside) == before


def test_a_mounted_layout_stays_in_the_folder(tmp_path: Path, outside: Path) -> None:
    path, _ = _linked_layout(tmp_path / "ds", outside, nested=True)
    before = _contents(outside)
    with shardedstore.open(path, "r+") as store:
        array = zarr.open_array(store, path="s/t2m", mode="r+")
        with pytest.raises(LayoutError, match=r"'t2m' chunk 0: .* is a symlink"):
            array[0] = 2
    assert _contents(outside) == before


def test_a_refused_resize_leaves_base_and_shards_as_they_were(
    tmp_path: Path, outside: Path
) -> None:
    # Every shard a resize rewrites is checked before base or any shard is written.
    path, shards = _linked_layout(tmp_path / "ds", outside)
    before = _contents(outside)
    metadata = {p: p.read_bytes() for p in sorted(shards.glob("*.zarr/zarr.json"))}
    base = (tmp_path / "ds" / "base.zarr" / "t2m" / "zarr.json").read_bytes()
    store = shardedstore.open(path, "r+")
    array = zarr.open_array(store, path="t2m", mode="r+")
    with pytest.raises(LayoutError, match=r"is a symlink"):
        array.resize((4, 3))
    store.close()
    assert {p: p.read_bytes() for p in sorted(shards.glob("*.zarr/zarr.json"))} == metadata
    assert (tmp_path / "ds" / "base.zarr" / "t2m" / "zarr.json").read_bytes() == base
    assert _contents(outside) == before


def test_a_cleared_shard_is_checked_again_when_written_again(tmp_path: Path, outside: Path) -> None:
    # delete_dir removes the shards; a link put where one was is refused on the next
    # write through the same store, as it would be through a new one.
    _sentinel(outside)
    before = _contents(outside)
    folder = tmp_path / "ds"
    path = _write(folder / "layout.json", _config(base=_BASE, array_shards=_T2M))
    store = shardedstore.open(path, "r+")
    array = zarr.create_array(store, name="t2m", shape=(4, 2), chunks=(1, 2), dtype="i4")
    array[0] = 1
    zarr.core.sync.sync(store.delete_dir("t2m"))  # the array: its shards go whole
    assert not (folder / "t" / "0.zarr").exists()
    os.symlink(outside, folder / "t" / "0.zarr")
    # The new metadata would be written to every shard there is: refused at once.
    with pytest.raises(LayoutError, match=r"'t2m' chunk 0: .*outside the config's folder"):
        zarr.create_array(store, name="t2m", shape=(4, 2), chunks=(1, 2), dtype="i4")
    assert _contents(outside) == before


@pytest.mark.parametrize(
    "how",
    [
        "set",
        "set_sync",
        "set_if_not_exists",
        "delete",
        "delete_sync",
        "delete_dir",
        "mount set",
        "mount rmdir",
    ],
)
def test_a_symlink_inside_the_base_or_a_mount_stops_writes_below_it(
    tmp_path: Path, outside: Path, how: str
) -> None:
    # base.zarr/grp -> elsewhere/keep (and m.zarr/sub the same): a key below the link
    # is a file outside the config's folder.
    _sentinel(outside)
    (outside / "keep" / "sub").mkdir()
    (outside / "keep" / "sub" / "x").write_bytes(b"kept")
    before = _contents(outside)
    folder = tmp_path / "ds"
    config = _config(
        base={"type": "local", "root": "base.zarr"},
        mounts={"m": {"type": "local", "root": "m.zarr"}},
    )
    path = _write(folder / "layout.json", config)
    with shardedstore.open(path, "r+") as store:
        zarr.create_group(store)
        zarr.create_group(store, path="m")
    os.symlink(outside / "keep", folder / "base.zarr" / "grp")
    os.symlink(outside / "keep", folder / "m.zarr" / "sub")
    store = shardedstore.open(path, "r+")
    value = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"overwritten")
    sync = zarr.core.sync.sync
    attempts = {
        "set": lambda: sync(store.set("grp/thesis.txt", value)),
        "set_sync": lambda: store.set_sync("grp/thesis.txt", value),  # type: ignore[attr-defined]
        "set_if_not_exists": lambda: sync(store.set_if_not_exists("grp/new", value)),
        "delete": lambda: sync(store.delete("grp/thesis.txt")),
        "delete_sync": lambda: store.delete_sync("grp/thesis.txt"),  # type: ignore[attr-defined]
        "delete_dir": lambda: sync(store.delete_dir("grp/sub")),
        "mount set": lambda: sync(store.set("m/sub/thesis.txt", value)),
        "mount rmdir": lambda: sync(store.delete_dir("m/sub/sub")),
    }
    with pytest.raises(LayoutError, match=r"outside the config's folder .*allow_outside"):
        attempts[how]()
    assert _contents(outside) == before
    # Keys beside the links are written as usual; reading follows the links.
    sync(store.set("other/x", value))
    store.close()
    assert (folder / "base.zarr" / "other" / "x").read_bytes() == b"overwritten"
    reader = shardedstore.open(path)
    prototype = zarr.core.buffer.default_buffer_prototype()
    found = sync(reader.get("grp/thesis.txt", prototype))
    assert found is not None
    assert found.to_bytes() == b"years of work"


def _base_layout(folder: Path, base: dict[str, Any] | None = None) -> Path:
    config = _config(base=base or _BASE)
    path = _write(folder / "layout.json", config)
    with shardedstore.open(path, "r+") as store:
        zarr.create_group(store)
    return path


@pytest.mark.parametrize("engine", ["zarr", "zarrs"])
def test_an_array_of_the_base_moved_out_and_linked_back_is_not_written(
    tmp_path: Path, outside: Path, engine: str
) -> None:
    # The native engines write the chunks of base arrays directly: checked the same way.
    _sentinel(outside)
    folder = tmp_path / "ds"
    path = _base_layout(folder)
    with shardedstore.open(path, "r+") as store:
        zarr.create_array(store, name="grp/arr", shape=(4,), chunks=(2,), dtype="i4")[:] = 1
    os.rename(folder / "base.zarr" / "grp", outside / "grp")
    os.symlink(outside / "grp", folder / "base.zarr" / "grp")
    before = _contents(outside)
    store = shardedstore.open(path, "r+")
    with shardedstore.use_engine(engine):  # the array's pipeline is chosen when it opens
        array = zarr.open_array(store, path="grp/arr", mode="r+")
        with pytest.raises(LayoutError, match="outside the config"):
            array[:] = 7
    assert _contents(outside) == before


def test_a_folder_deleted_and_linked_is_checked_again(tmp_path: Path, outside: Path) -> None:
    _sentinel(outside)
    before = _contents(outside)
    folder = tmp_path / "ds"
    path = _base_layout(folder)
    store = shardedstore.open(path, "r+")
    value = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"{}")
    zarr.core.sync.sync(store.set("grp/a", value))  # base.zarr/grp resolved: inside
    zarr.core.sync.sync(store.delete_dir("grp"))
    os.symlink(outside / "keep", folder / "base.zarr" / "grp")
    with pytest.raises(LayoutError, match="outside the config's folder"):
        zarr.core.sync.sync(store.set("grp/thesis.txt", value))
    assert _contents(outside) == before


def test_a_link_at_the_key_of_a_store_writing_in_place_is_refused(
    tmp_path: Path, outside: Path
) -> None:
    # fsspec's local filesystem opens the key's path for writing (following a link
    # there); zarr's LocalStore renames a new file over it (replacing the link).
    _sentinel(outside)
    before = _contents(outside)
    folder = tmp_path / "ds"
    url = (folder / "base.zarr").as_uri()
    base = {"type": "fsspec", "url": url, "storage_options": {"auto_mkdir": True}}
    path = _base_layout(folder, base)
    (folder / "base.zarr" / "g").mkdir()
    os.symlink(outside / "keep" / "thesis.txt", folder / "base.zarr" / "g" / "c0")
    store = shardedstore.open(path, "r+")
    value = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"overwritten")
    with pytest.raises(LayoutError, match="is a symlink"):
        zarr.core.sync.sync(store.set("g/c0", value))
    assert _contents(outside) == before


def test_writing_through_an_opted_in_config_works_as_before(tmp_path: Path, outside: Path) -> None:
    _sentinel(outside)
    folder = tmp_path / "ds"
    config = _config(
        base={"type": "local", "root": str(outside)},
        array_shards={"t2m": {"dims": 1, "store": {"type": "local", "root": "t2m/{chunk}.zarr"}}},
    )
    path = _write(folder / "layout.json", config)
    store = shardedstore.open(path, "r+", allow_outside=True)
    ds = _dataset()
    ds.to_zarr(store, mode="w", consolidated=False)
    xr.testing.assert_identical(
        xr.open_zarr(shardedstore.open(path), consolidated=False).load(), ds.load()
    )
    assert (outside / "zarr.json").is_file()  # the base is where the config said
    assert (folder / "t2m" / "3.zarr").is_dir()
    same = ShardedStore.from_config(config, base_path=folder, allow_outside=True)
    assert same == store


def test_inside_the_folder_opens_for_writing(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    store = ShardedStore(
        LocalStore(folder / "base.zarr"),
        {"people": ZipStore(folder / "people.zip", mode="a")},
        {"t2m": (1, array_shard_directory_store(folder / "t2m"))},
    )
    store.save_config(folder / "layout.json")
    reopened = shardedstore.open(folder / "layout.json", "r+")
    assert reopened == store
    ds = _dataset()
    ds.to_zarr(reopened, mode="w", consolidated=False)
    xr.testing.assert_identical(xr.open_zarr(reopened, consolidated=False).load(), ds.load())


def test_the_folder_itself_is_not_inside(tmp_path: Path) -> None:
    # A store at the folder itself would hold the config, and mode="w" would delete it.
    config = _config(base={"type": "local", "root": "."})
    path = _write(tmp_path / "ds" / "layout.json", config)
    with pytest.raises(ConfigError, match=r"^base\.root: '\.' resolves to"):
        shardedstore.open(path, "r+")
    shardedstore.open(path).close()
    shardedstore.open(path, "r+", allow_outside=True).close()
    assert path.is_file()


def test_urls_stay_below_the_config_url() -> None:
    config = _config(
        base={"type": "fsspec", "url": "base.zarr"},
        mounts={"m": {"type": "fsspec", "url": "memory://other/m.zarr"}},
    )
    with pytest.raises(ConfigError, match=r"^mounts\.m\.url: .*memory://other/m\.zarr"):
        ShardedStore.from_config(config, base_path="memory://data/ds")
    config["mounts"]["m"]["url"] = "memory://data/ds/sub/../m.zarr"
    ShardedStore.from_config(config, base_path="memory://data/ds")
    config["mounts"]["m"]["url"] = "memory://data/ds-evil/m.zarr"
    with pytest.raises(ConfigError, match=r"allow_outside"):
        ShardedStore.from_config(config, base_path="memory://data/ds")


def test_without_a_folder_nothing_is_outside(tmp_path: Path) -> None:
    # A config given as a dict with no base_path has no folder: paths are the caller's.
    config = _config(base={"type": "local", "root": str(tmp_path / "anywhere")})
    ShardedStore.from_config(config)


# ------------------------------------- issue 9, item 9: many shards, checked once


@dataclass(frozen=True)
class _LoggingFactory:
    """A picklable plain array-shard factory that notes every call in a file."""

    log: Path
    root: Path

    def __call__(self, chunk_index: str) -> Store:
        with self.log.open("a") as f:
            f.write(chunk_index + "\n")
        return LocalStore(self.root / chunk_index)

    def calls(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


def test_a_checked_layout_is_not_checked_again(tmp_path: Path) -> None:
    # The overlap check ran again on every with_read_only and unpickling: ~1 s each
    # for 10^5 explicit array shards, and xarray asks for a read-only view on open.
    factory = _LoggingFactory(tmp_path / "calls", tmp_path / "shards")
    store = ShardedStore(LocalStore(tmp_path / "base"), {}, {"t": (1, factory)})
    assert factory.calls() == ["0", "1"]  # the check calls a plain factory twice
    view = store.with_read_only(True)
    assert view.read_only
    assert view.with_read_only(False) == store
    back = pickle.loads(pickle.dumps(view))
    assert back == store
    assert back.read_only
    assert factory.calls() == ["0", "1"]
    # A new layout, even of the same stores, is checked.
    ShardedStore(LocalStore(tmp_path / "base"), {}, {"t": (1, factory)})
    assert factory.calls() == ["0", "1", "0", "1"]
    with pytest.raises(LayoutError, match="lies inside base"):
        ShardedStore(LocalStore(tmp_path / "shards"), {}, {"t": (1, factory)})


def test_overlaps_among_many_explicit_array_shards(tmp_path: Path) -> None:
    template = {"type": "local", "root": f"{tmp_path}/t/{{chunk}}.zarr"}
    shards = {str(i): {"type": "zip", "path": f"{tmp_path}/z/{i}.zip"} for i in range(10_000)}
    base = LocalStore(tmp_path / "base")

    def layout(changed: dict[str, Any], **mounts: Store) -> ShardedStore:
        factory = array_shard_template_store(template, shards={**shards, **changed})
        return ShardedStore(base, mounts, {"t": (1, factory)})

    layout({"9999": {"type": "local", "root": f"{tmp_path}/t/9999.zarr"}})  # its own place
    with pytest.raises(LayoutError, match=r"chunk 9999 .* lies inside array shard 't' chunk 17"):
        layout({"9999": {"type": "local", "root": f"{tmp_path}/z/17.zip/inner"}})
    with pytest.raises(LayoutError, match=r"chunk 9998 .* is the same location as .* chunk 17 "):
        layout({"9998": {"type": "zip", "path": f"{tmp_path}/z/../z/17.zip"}})
    with pytest.raises(LayoutError, match=r"array shard 't' chunk 5 .* chunk index 6 goes in"):
        layout({"5": {"type": "local", "root": f"{tmp_path}/t/6.zarr"}})
    with pytest.raises(LayoutError, match=r"array shard 't' chunk 0 .* lies inside mount 'm'"):
        layout({}, m=LocalStore(tmp_path / "z"))
    with pytest.raises(LayoutError, match=r"mount 'm' .* lies inside array shard 't' chunk 42"):
        layout({}, m=LocalStore(tmp_path / "z" / "42.zip" / "x"))
