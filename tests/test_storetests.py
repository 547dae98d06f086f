"""zarr's own store test suite, run over several ShardedStore layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.storage import LocalStore, MemoryStore
from zarr.testing.store import StoreTests

from shardedstore import ShardedStore, array_shard_directory_store
from tests.conftest import MemoryShardFactory, locate


class _ShardedStoreTests(StoreTests[ShardedStore, cpu.Buffer]):
    store_cls = ShardedStore
    buffer_cls = cpu.Buffer

    def _physical(self, store: ShardedStore, key: str) -> tuple[Any, str]:
        node, index, inner = locate(store, key)
        if index is not None:
            _, factory = store.array_shards[node]
            return factory(index), inner
        if node:
            return store.mounts[node], inner
        return store.base, inner

    async def set(self, store: ShardedStore, key: str, value: Buffer) -> None:
        target, inner = self._physical(store, key)
        await target.set(inner, value)

    async def get(self, store: ShardedStore, key: str) -> Buffer:
        target, inner = self._physical(store, key)
        value = await target.get(inner, prototype=default_buffer_prototype())
        assert value is not None
        return value

    def test_store_repr(self, store: ShardedStore) -> None:
        assert repr(store).startswith("ShardedStore(base=")

    def test_store_supports_writes(self, store: ShardedStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: ShardedStore) -> None:
        assert store.supports_listing


class TestBaseOnlyMemory(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"base": MemoryStore()}


class TestBaseOnlyLocal(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"base": LocalStore(tmp_path / "base")}


class TestMountsMemory(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"base": MemoryStore(), "shards": {"foo": MemoryStore(), "a/b": MemoryStore()}}


class TestMountsAndArrayShardsMemory(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {
            "base": MemoryStore(),
            "shards": {"foo": MemoryStore(), "a/b": MemoryStore()},
            "array_shard_funcs": {"c": (1, MemoryShardFactory())},
        }


class TestMountsAndArrayShardsLocal(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {
            "base": LocalStore(tmp_path / "base"),
            "shards": {"foo": LocalStore(tmp_path / "foo"), "a/b": LocalStore(tmp_path / "ab")},
            "array_shard_funcs": {"c": (1, array_shard_directory_store(tmp_path / "shards"))},
        }


class TestArrayShardsOnlyLocal(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {
            "base": LocalStore(tmp_path / "base"),
            "array_shard_funcs": {"c": (1, array_shard_directory_store(tmp_path / "shards"))},
        }
