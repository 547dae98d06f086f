"""Costs that must not grow with the number of array shards: routed listing.

A counting factory records every call each array shard's store gets; listing a prefix
inside one shard, or the time steps of the array, must cost the same whether the array
has 10 shards or 300.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.sync import sync
from zarr.storage import MemoryStore

from shardedstore import ShardedStore


class CountingStore(MemoryStore):
    """A MemoryStore that counts the calls it gets (one counter for a whole factory)."""

    calls: Counter[str]

    def _count(self, name: str) -> None:
        self.calls[name] += 1

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        self._count("get")
        return await super().get(*args, **kwargs)

    async def exists(self, key: str) -> bool:
        self._count("exists")
        return await super().exists(key)

    def list(self) -> AsyncIterator[str]:
        self._count("list")
        return super().list()

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self._count("list_prefix")
        return super().list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self._count("list_dir")
        return super().list_dir(prefix)


@dataclass
class CountingFactory:
    """Array shards in counting memory stores; listable, like the directory factory."""

    stores: dict[str, CountingStore] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    def __call__(self, chunk_index: str) -> CountingStore:
        if chunk_index not in self.stores:
            store = CountingStore()
            store.calls = self.calls
            self.stores[chunk_index] = store
        return self.stores[chunk_index]

    def existing_chunk_indices(self) -> list[str]:
        self.calls["existing_chunk_indices"] += 1
        return [index for index, store in self.stores.items() if store._store_dict]


def _layout(steps: int, dims: int = 1) -> tuple[ShardedStore, CountingFactory]:
    factory = CountingFactory()
    store = ShardedStore(MemoryStore(), {}, {"t": (dims, factory)})
    shape = (steps, 2, 4) if dims == 2 else (steps, 4)
    chunks = (1, 1, 2) if dims == 2 else (1, 2)
    array = zarr.create_array(store, name="t", shape=shape, chunks=chunks, dtype="f4")
    array[...] = np.arange(np.prod(shape), dtype="f4").reshape(shape) + 1
    return store, factory


async def _dir(store: ShardedStore, prefix: str) -> list[str]:
    return sorted([name async for name in store.list_dir(prefix)])


async def _prefix(store: ShardedStore, prefix: str) -> list[str]:
    return sorted([key async for key in store.list_prefix(prefix)])


def _calls(factory: CountingFactory, run: Any) -> tuple[Any, Counter[str]]:
    factory.calls.clear()
    result = sync(run)
    return result, Counter(factory.calls)


@pytest.mark.parametrize(
    ("what", "prefix"),
    [
        ("dir", "t/c/5/"),  # inside one shard
        ("prefix", "t/c/5/"),
        ("prefix", "t/c/5/1"),
        ("dir", "t/c/"),  # the time steps: the shards' names alone
        ("dir", "t/"),  # the array: is any chunk there
        ("dir", ""),
    ],
)
def test_listing_costs_the_same_for_10_or_300_shards(what: str, prefix: str) -> None:
    costs = []
    for steps in (10, 300):
        store, factory = _layout(steps)
        lister = _dir if what == "dir" else _prefix
        found, calls = _calls(factory, lister(store, prefix))
        reference = MemoryStore()
        for key, value in [(k, sync(store.get(k))) for k in sync(_prefix(store, ""))]:
            sync(reference.set(key, value))
        expected = sync((_dir if what == "dir" else _prefix)(reference, prefix))  # type: ignore[arg-type]
        assert found == expected
        costs.append(calls)
    assert costs[0] == costs[1], costs


def test_two_sharded_dims_list_one_level_at_a_time() -> None:
    store, factory = _layout(12, dims=2)
    names, calls = _calls(factory, _dir(store, "t/c/"))
    assert names == [str(t) for t in sorted(range(12), key=str)]
    assert calls == Counter({"existing_chunk_indices": 1})
    names, calls = _calls(factory, _dir(store, "t/c/7/"))
    assert names == ["0", "1"]
    assert calls == Counter({"existing_chunk_indices": 1})
    names, calls = _calls(factory, _dir(store, "t/c/7/1/"))
    assert names == ["0", "1"]
    assert calls["existing_chunk_indices"] == 0  # one shard, named in full


def test_an_existing_shard_shows_at_every_level_once_its_chunks_are_deleted(
    tmp_path: Any,
) -> None:
    # A directory shard keeps its folder and metadata when its last chunk is deleted:
    # it shows as a directory does, in the array's listing (c) and in c's (its index),
    # never in one and not the other. Removed, it shows in neither.
    import shutil

    from zarr.storage import LocalStore

    from shardedstore import array_shard_directory_store

    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"t": (1, array_shard_directory_store(tmp_path / "t"))}
    )
    array = zarr.create_array(store, name="t", shape=(4, 2), chunks=(1, 2), dtype="i2")
    assert sync(_dir(store, "t/")) == ["zarr.json"]
    array[1] = 5
    assert sync(_dir(store, "t/")) == ["c", "zarr.json"]
    assert sync(_dir(store, "t/c/")) == ["1"]
    sync(store.delete("t/c/1/0"))
    assert sync(_prefix(store, "t/c/")) == []
    assert sync(_dir(store, "t/")) == ["c", "zarr.json"]
    assert sync(_dir(store, "t/c/")) == ["1"]
    shards = [p for p in (tmp_path / "t").iterdir() if p.is_dir()]
    assert len(shards) == 1
    shutil.rmtree(shards[0])
    reopened = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"t": (1, array_shard_directory_store(tmp_path / "t"))}
    )
    assert sync(_dir(reopened, "t/")) == ["zarr.json"]
    assert sync(_dir(reopened, "t/c/")) == []
