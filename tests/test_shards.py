"""store.shards(): the one enumeration of a layout's shards."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, ZipStore

from shardedstore import LayoutError, Shard, ShardedStore, array_shard_directory_store
from shardedstore.shards.listing import iter_shards, list_shards


def _layout(tmp_path: Path) -> ShardedStore:
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {"people": LocalStore(tmp_path / "people.zarr")},
        {"sim/foo": (1, array_shard_directory_store(tmp_path / "shards"))},
    )
    root = zarr.open_group(store, mode="w")
    root.create_array("people/height", shape=(3,), dtype="f8")[:] = [1.5, 1.7, 1.9]
    foo = root.create_array("sim/foo", shape=(12, 4), chunks=(1, 2), dtype="i4")
    foo[:] = np.arange(48).reshape(12, 4)
    return store


def test_base_mounts_then_array_shards_in_numeric_order(tmp_path: Path) -> None:
    shards = _layout(tmp_path).shards()
    assert all(isinstance(shard, Shard) for shard in shards)
    assert [(s.kind, s.path, s.chunk_index) for s in shards[:2]] == [
        ("base", "", None),
        ("mount", "people", None),
    ]
    assert [s.chunk_index for s in shards[2:]] == [str(i) for i in range(12)]  # 10 after 9
    assert shards[2].name == "array shard 'sim/foo' chunk 0"
    assert all(s.reachable and s.listed and not s.beyond_shape for s in shards)


def test_every_store_is_read_only_and_holds_the_shard(tmp_path: Path) -> None:
    shards = _layout(tmp_path).shards()
    value = default_buffer_prototype().buffer.from_bytes(b"x")
    for shard in shards:
        assert shard.store.read_only
        with pytest.raises(ValueError, match=r"read.only"):
            sync(shard.store.set("zarr.json", value))
    third = shards[5]  # array shard 3
    listed = sorted(sync(_collect(third.store)))
    assert listed == ["c/0", "c/1", "zarr.json"]
    assert third.own_keys is not None
    assert third.own_keys.owns("c/1")
    assert not third.own_keys.owns("c/2")  # beyond the 2 chunks of the remaining dim


async def _collect(store: Store) -> list[str]:
    return [key async for key in store.list()]


def test_shards_beyond_the_shape_are_marked_not_dropped(tmp_path: Path) -> None:
    store = _layout(tmp_path)
    zarr.open_array(store, path="sim/foo", mode="r+").resize((10, 4))
    shards = ShardedStore(store.base, store.mounts, store.array_shards).shards()
    beyond = [s.chunk_index for s in shards if s.beyond_shape]
    assert beyond == ["10", "11"]
    assert all(not s.reachable for s in shards if s.beyond_shape)


def test_zip_shards_are_fresh_handles_that_pickle(tmp_path: Path) -> None:
    store = _layout(tmp_path)
    from shardedstore import to_zip_store_with_prefix

    zipped = store.map_shards(to_zip_store_with_prefix(tmp_path / "zips"))
    shards = zipped.shards()
    assert all(isinstance(s.store, ZipStore) for s in shards)
    assert all(s.store is not zipped.base for s in shards)
    copy = pickle.loads(pickle.dumps(shards[3]))
    assert copy.chunk_index == "1"
    assert sorted(sync(_collect(copy.store))) == ["c/0", "c/1", "zarr.json"]


def test_a_factory_that_cannot_list_gives_candidates(tmp_path: Path) -> None:
    made: dict[str, MemoryStore] = {}

    def factory(index: str) -> MemoryStore:
        return made.setdefault(index, MemoryStore())

    store = ShardedStore(MemoryStore(), {}, {"a": (1, factory)})
    array = zarr.open_group(store, mode="w").create_array(
        "a", shape=(3, 2), chunks=(1, 2), dtype="i4"
    )
    array[1] = 5
    shards = store.shards()
    assert [s.chunk_index for s in shards[1:]] == ["0", "1", "2"]  # every index in the shape
    assert not any(s.listed for s in shards[1:])


def test_metadata_that_cannot_be_sharded_raises_or_is_recorded(tmp_path: Path) -> None:
    base = LocalStore(tmp_path / "base.zarr")
    zarr.open_group(base, mode="w").create_array("a", shape=(4, 4), chunks=(2, 2), dtype="i4")
    store = ShardedStore(base, {}, {"a": (1, array_shard_directory_store(tmp_path / "s"))})
    with pytest.raises(LayoutError, match="'a'"):
        store.shards()
    listing = sync(list_shards(store, strict=False))
    assert isinstance(listing.arrays["a"].layout_error, LayoutError)
    assert [s.kind for s in listing] == ["base"]


def test_a_plain_store_is_a_layout_with_only_a_base(tmp_path: Path) -> None:
    shards = ShardedStore(LocalStore(tmp_path / "plain.zarr")).shards()
    assert [(s.kind, s.path) for s in shards] == [("base", "")]


def test_iter_shards_makes_each_shard_when_reached(tmp_path: Path) -> None:
    """info looks at 10^6 shards in bounded memory: iter_shards makes each array shard
    (here: calls the factory) only when it is reached, in list_shards' order."""
    made: list[str] = []

    def factory(index: str) -> Store:  # a plain callable: its shards are made, not listed
        made.append(index)
        return LocalStore(tmp_path / "shards" / f"{index}.zarr")

    listed = _layout(tmp_path)
    store = ShardedStore(listed.base, listed.mounts, {"sim/foo": (1, factory)})
    expected = [(s.kind, s.path, s.chunk_index) for s in sync(list_shards(store)).shards]
    made.clear()
    listing, shards = sync(iter_shards(store))
    assert made == []
    assert listing.shards == []
    first = [next(shards) for _ in range(3)]  # base, mount, the first array shard
    assert made == ["0"]
    rest = list(shards)
    assert [(s.kind, s.path, s.chunk_index) for s in first + rest] == expected
    assert made == [str(i) for i in range(12)]
    assert listing.arrays["sim/foo"].indices == [str(i) for i in range(12)]
