"""zarr's own store test suite, run over several ShardedStore layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator
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


class _MountPointTests(_ShardedStoreTests):
    """Layouts with mounts: list_dir shows mount points before anything is written.

    zarr's generic ``test_list_dir`` expects an empty store to list nothing; here the
    mount points (and the parents of deep ones) are listed from the start, by design.
    The same checks run with them added to the expected names.
    """

    async def test_list_dir(self, store: ShardedStore) -> None:
        def mount_points(root: str) -> set[str]:
            prefix = f"{root}/" if root else ""
            return {m[len(prefix) :].split("/")[0] for m in store.mounts if m.startswith(prefix)}

        assert set(await _collect_aiterator(store.list_dir(""))) == mount_points("")
        roots_and_keys = [
            ("foo", {"foo/zarr.json": b"bar", "foo/c/1": b"\x01"}),
            ("foo/bar", {"foo/bar/first": b"1", "foo/bar/second/zarr.json": b"2"}),
        ]
        for root, data in roots_and_keys:
            assert set(await _collect_aiterator(store.list_dir(root))) == mount_points(root)
            await store._set_many((k, self.buffer_cls.from_bytes(v)) for k, v in data.items())
            expected = {k.removeprefix(root + "/").split("/")[0] for k in data}
            expected |= mount_points(root)
            assert set(await _collect_aiterator(store.list_dir(root))) == expected
            assert set(await _collect_aiterator(store.list_dir(root + "/"))) == expected


class TestBaseOnlyMemory(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"base": MemoryStore()}


class TestBaseOnlyLocal(_ShardedStoreTests):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"base": LocalStore(tmp_path / "base")}


class TestMountsMemory(_MountPointTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"base": MemoryStore(), "shards": {"foo": MemoryStore(), "a/b": MemoryStore()}}


class TestMountsAndArrayShardsMemory(_MountPointTests):
    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {
            "base": MemoryStore(),
            "shards": {"foo": MemoryStore(), "a/b": MemoryStore()},
            "array_shard_funcs": {"c": (1, MemoryShardFactory())},
        }


class TestMountsAndArrayShardsLocal(_MountPointTests):
    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {
            "base": LocalStore(tmp_path / "base"),
            "shards": {"foo": LocalStore(tmp_path / "foo"), "a/b": LocalStore(tmp_path / "ab")},
            "array_shard_funcs": {"c": (1, array_shard_directory_store(tmp_path / "shards"))},
        }


class TestArrayShardsOnlyLocal(_ShardedStoreTests):
    """Array shards without mounts: zarr's list_dir test runs unchanged."""

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {
            "base": LocalStore(tmp_path / "base"),
            "array_shard_funcs": {"c": (1, array_shard_directory_store(tmp_path / "shards"))},
        }
