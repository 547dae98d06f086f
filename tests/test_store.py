"""ShardedStore behaviour beyond zarr's generic store tests."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import Store, SupportsDeleteSync, SupportsGetSync, SupportsSetSync
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator
from zarr.storage import FsspecStore, LocalStore, MemoryStore, WrapperStore, ZipStore

from shardedstore import (
    KeyValidationError,
    LayoutError,
    ShardedStore,
    array_shard_directory_store,
)
from tests.conftest import MemoryShardFactory


def buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


@pytest.fixture
def local_layout(tmp_path: Path) -> ShardedStore:
    return ShardedStore(
        LocalStore(tmp_path / "base"),
        {"people": LocalStore(tmp_path / "people"), "deep/er/mount": LocalStore(tmp_path / "m")},
        {"sim/foo": (1, array_shard_directory_store(tmp_path / "shards"))},
    )


def tree(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "key", ["", "/zarr.json", "a//b", "a/../b", "../escape", "sim/foo/c/../../x", "a\\b", "a/."]
)
async def test_bad_keys_write_nothing(local_layout: ShardedStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(KeyValidationError):
        await local_layout.set(key, buf(b"x"))
    with pytest.raises(ValueError, match="invalid key"):
        await local_layout.get(key, default_buffer_prototype())
    with pytest.raises(ValueError, match="invalid key"):
        await local_layout.delete(key)
    assert not any(tree(tmp_path / d) for d in ("base", "people", "m", "shards"))
    assert tree(tmp_path.parent / "escape") == []


@pytest.mark.parametrize(
    "prefix", ["//", "/etc", "/etc/", "/a", "a//", "../", "a/../", "a/../b", "\\", "a\\b/", "./"]
)
async def test_bad_prefixes(local_layout: ShardedStore, tmp_path: Path, prefix: str) -> None:
    with pytest.raises(KeyValidationError):
        await _collect_aiterator(local_layout.list_prefix(prefix))
    with pytest.raises(KeyValidationError):
        await _collect_aiterator(local_layout.list_dir(prefix))
    with pytest.raises(KeyValidationError):
        await local_layout.is_empty(prefix)
    with pytest.raises(KeyValidationError):
        await local_layout.delete_dir(prefix)
    assert not any((tmp_path / d).exists() for d in ("base", "people", "m", "shards"))


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="lies inside"):
        ShardedStore(MemoryStore(), {"a": MemoryStore(), "a/b": MemoryStore()})
    with pytest.raises(LayoutError, match="lies inside"):
        ShardedStore(MemoryStore(), {"a": MemoryStore()}, {"a/x": (1, MemoryShardFactory())})
    with pytest.raises(LayoutError, match="expected a zarr store"):
        ShardedStore(MemoryStore(), {"a": str(tmp_path)})  # type: ignore[dict-item]
    with pytest.raises(LayoutError, match="expected a zarr store"):
        ShardedStore(str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(LayoutError, match=r"expected \(dims, factory\)"):
        ShardedStore(MemoryStore(), {}, {"x": MemoryShardFactory()})  # type: ignore[dict-item]


async def test_array_shards_are_lazy(local_layout: ShardedStore, tmp_path: Path) -> None:
    root = zarr.open_group(local_layout, mode="w")
    arr = root.create_array("sim/foo", shape=(30, 4), chunks=(1, 4), dtype="i2", fill_value=0)
    assert not (tmp_path / "shards").exists()
    # Reading, deleting and checking missing chunks creates nothing.
    assert arr[7, 0] == 0
    await local_layout.delete("sim/foo/c/7/0")
    assert not await local_layout.exists("sim/foo/c/7/0")
    assert not (tmp_path / "shards").exists()
    arr[12] = 5
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["12.zarr"]
    assert tree(tmp_path / "shards") == ["12.zarr/c/0", "12.zarr/zarr.json"]
    # Mount directories are not created by reading either.
    assert not (tmp_path / "m").exists()


async def test_listing_merges_every_shard(local_layout: ShardedStore) -> None:
    root = zarr.open_group(local_layout, mode="w")
    arr = root.create_array("sim/foo", shape=(12, 4), chunks=(1, 2), dtype="i2", fill_value=0)
    arr[:] = 1
    root.create_group("people").create_array("h", shape=(2,), dtype="f4")[:] = 1.5
    keys = set(await _collect_aiterator(local_layout.list()))
    chunk_keys = {f"sim/foo/c/{i}/{j}" for i in range(12) for j in range(2)}
    assert chunk_keys <= keys
    assert {"people/zarr.json", "people/h/zarr.json", "people/h/c/0", "sim/foo/zarr.json"} <= keys
    assert set(await _collect_aiterator(local_layout.list_prefix("sim/foo/c/1"))) == {
        f"sim/foo/c/{i}/{j}" for i in (1, 10, 11) for j in range(2)
    }
    assert set(await _collect_aiterator(local_layout.list_dir("sim/foo/c"))) == {
        str(i) for i in range(12)
    }
    assert set(await _collect_aiterator(local_layout.list_dir("sim/foo"))) == {"zarr.json", "c"}
    mapping = local_layout.as_mapping()
    assert len(mapping) == len(keys)
    assert set(mapping) == keys
    assert "sim/foo/c/11/1" in mapping
    assert "sim/foo/c/12/1" not in mapping


async def _names(store: Store, path: str) -> set[str]:
    return set(await _collect_aiterator(store.list_dir(path)))


async def test_mount_points_show_once_they_hold_something(
    local_layout: ShardedStore, tmp_path: Path
) -> None:
    # An empty mount is invisible, as an empty directory is to zarr.
    for path in ("", "deep", "deep/er", "deep/er/mount", "people"):
        assert await _names(local_layout, path) == set()
    assert await local_layout.is_empty("")
    assert await local_layout.is_empty("deep/er/mount")
    # Looking creates nothing: the mounts' directories were never made.
    assert not (tmp_path / "people").exists()
    assert not (tmp_path / "m").exists()
    await local_layout.set("deep/er/mount/zarr.json", buf(b"{}"))
    assert await _names(local_layout, "") == {"deep"}
    assert await _names(local_layout, "deep") == {"er"}
    assert await _names(local_layout, "deep/er") == {"mount"}
    assert not await local_layout.is_empty("deep/")
    await local_layout.delete("deep/er/mount/zarr.json")
    assert await _names(local_layout, "") == set()
    assert await local_layout.is_empty("")
    # A fresh store over the same storage sees what the mounts hold, read-only or not.
    await local_layout.set("people/zarr.json", buf(b"{}"))
    again = ShardedStore(*local_layout._given, local_layout.array_shards)
    for store in (again, again.with_read_only(True)):
        assert await _names(store, "") == {"people"}
        assert not await store.is_empty("people/")


async def test_mount_that_cannot_be_opened_read_only_is_empty(tmp_path: Path) -> None:
    store = ShardedStore(
        MemoryStore(),
        {"z": ZipStore(tmp_path / "z.zip", mode="w"), "d/e": LocalStore(tmp_path / "d")},
    )
    await store.set("zarr.json", buf(b"{}"))
    assert await _names(store, "") == {"zarr.json"}
    assert await store.is_empty("z/")
    assert await store.is_empty("d/")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_consolidated_metadata_support_follows_the_base() -> None:
    assert ShardedStore(MemoryStore(), {"m": MemoryStore()}).supports_consolidated_metadata
    store = ShardedStore(_NoConsolidatedMetadata(MemoryStore()), {"m": MemoryStore()})
    assert store.supports_consolidated_metadata is False
    assert store.with_read_only(True).supports_consolidated_metadata is False
    zarr.open_group(store, mode="w").create_group("m")
    with pytest.raises(TypeError, match="doesn't support consolidated metadata"):
        zarr.consolidate_metadata(store)


class _NoConsolidatedMetadata(WrapperStore[Store]):
    """A store that consolidates metadata its own way (as Icechunk does)."""

    @property
    def supports_consolidated_metadata(self) -> bool:
        return False


async def test_delete_dir_clears_array_shards_and_mounts(
    local_layout: ShardedStore, tmp_path: Path
) -> None:
    root = zarr.open_group(local_layout, mode="w")
    root.create_array("sim/foo", shape=(3, 2), chunks=(1, 2), dtype="i2")[:] = 3
    root.create_group("people").create_array("h", shape=(2,), dtype="f4")[:] = 1.5
    await local_layout.delete_dir("sim")
    assert not await local_layout.exists("sim/foo/zarr.json")
    assert not await local_layout.exists("sim/foo/c/0/0")
    assert tree(tmp_path / "shards") == []
    assert await local_layout.exists("people/h/c/0")
    await local_layout.clear()
    assert await _collect_aiterator(local_layout.list()) == ()
    # The store stays usable after a clear: shards are re-created with their metadata.
    root = zarr.open_group(local_layout, mode="w")
    arr = root.create_array("sim/foo", shape=(3, 2), chunks=(1, 2), dtype="i2", fill_value=0)
    arr[1] = 9
    assert tree(tmp_path / "shards") == ["1.zarr/c/0", "1.zarr/zarr.json"]


async def test_get_partial_values_groups_per_shard() -> None:
    factory = MemoryShardFactory()
    store = ShardedStore(MemoryStore(), {"m": MemoryStore()}, {"a": (1, factory)})
    await store.set("a/c/0/0", buf(b"0123456789"))
    await store.set("a/c/5/0", buf(b"abcdefghij"))
    await store.set("m/x", buf(b"mount"))
    await store.set("b", buf(b"base"))
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    out = await store.get_partial_values(
        default_buffer_prototype(),
        [
            ("a/c/5/0", RangeByteRequest(2, 5)),
            ("b", None),
            ("a/c/0/0", SuffixByteRequest(3)),
            ("m/x", OffsetByteRequest(2)),
            ("a/c/9/0", None),
        ],
    )
    assert [None if v is None else v.to_bytes() for v in out] == [
        b"cde",
        b"base",
        b"789",
        b"unt",
        None,
    ]
    assert sorted(factory.existing_chunk_indices()) == ["0", "5"]


def test_sync_protocols_follow_sub_stores(tmp_path: Path) -> None:
    local = ShardedStore(
        LocalStore(tmp_path / "b"),
        {"m": MemoryStore()},
        {"a": (1, array_shard_directory_store(tmp_path / "s"))},
    )
    for protocol in (SupportsGetSync, SupportsSetSync, SupportsDeleteSync):
        assert isinstance(local, protocol)
    local.set_sync("a/c/3/0", buf(b"chunk"))
    assert (tmp_path / "s" / "3.zarr" / "c" / "0").read_bytes() == b"chunk"
    got = local.get_sync("a/c/3/0")
    assert got is not None
    assert got.to_bytes() == b"chunk"
    assert local.get_sync("a/c/4/0") is None
    local.delete_sync("a/c/3/0")
    assert local.get_sync("a/c/3/0") is None
    assert not (tmp_path / "s" / "4.zarr").exists()

    remote = ShardedStore(
        LocalStore(tmp_path / "b"),
        {"m": FsspecStore.from_url("memory://m")},
    )
    assert not isinstance(remote, SupportsGetSync)
    plain_factory = ShardedStore(MemoryStore(), {}, {"a": (1, lambda i: MemoryStore())})
    assert not isinstance(plain_factory, SupportsSetSync)


async def test_pickle_round_trip(local_layout: ShardedStore) -> None:
    await local_layout.set("sim/foo/c/2/0", buf(b"x"))
    clone = pickle.loads(pickle.dumps(local_layout))
    assert clone == local_layout
    assert type(clone) is type(local_layout)
    value = await clone.get("sim/foo/c/2/0", default_buffer_prototype())
    assert value is not None
    assert value.to_bytes() == b"x"


async def test_read_only_view(local_layout: ShardedStore, tmp_path: Path) -> None:
    await local_layout.set("people/zarr.json", buf(b"{}"))
    reader = local_layout.with_read_only(True)
    assert reader.read_only
    assert reader == local_layout
    with pytest.raises(ValueError, match="read-only"):
        await reader.set("people/x", buf(b"1"))
    with pytest.raises(ValueError, match="read-only"):
        await reader.delete_dir("people")
    assert await reader.exists("people/zarr.json")
    # A read-only store never creates missing sub-stores.
    assert await reader.get("deep/er/mount/x", default_buffer_prototype()) is None
    assert not (tmp_path / "m").exists()


async def test_metadata_write_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"foo": (1, array_shard_directory_store(tmp_path))}
    )
    with pytest.raises(LayoutError, match="not valid JSON"):
        await store.set("foo/zarr.json", buf(b"garbage"))
    with pytest.raises(LayoutError, match="group"):
        zarr.open_group(store, path="foo", mode="w")
    assert not await store.exists("foo/zarr.json")


async def test_plain_callable_factory_lists_by_shape() -> None:
    made: dict[str, MemoryStore] = {}

    def factory(index: str) -> MemoryStore:
        return made.setdefault(index, MemoryStore())

    store = ShardedStore(MemoryStore(), {}, {"x": (1, factory)})
    arr = zarr.create_array(store, name="x", shape=(4, 3), chunks=(1, 3), dtype="u1")
    arr[:] = np.arange(12, dtype="u1").reshape(4, 3)
    # A fresh store over the same storage finds the shards from the array's shape.
    again = ShardedStore(store.base, {}, {"x": (1, factory)})
    keys = set(await _collect_aiterator(again.list_prefix("x/")))
    assert keys == {"x/zarr.json"} | {f"x/c/{i}/0" for i in range(4)}


def test_pickling_keeps_a_zip_mount_intact(tmp_path: Path) -> None:
    # zarr's ZipStore reopens itself when unpickled; mode "w" would truncate the zip.
    mount = ZipStore(tmp_path / "people.zip", mode="w")
    store = ShardedStore(LocalStore(tmp_path / "base"), {"people": mount})
    group = zarr.open_group(store, mode="w")
    group.create_array("people/x", shape=(3,), dtype="i4")[:] = [1, 2, 3]
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store
    store.close()
    with zipfile.ZipFile(tmp_path / "people.zip") as zf:
        assert zf.testzip() is None
        assert "x/c/0" in zf.namelist()
    assert zarr.open_array(copy, path="people/x", mode="r")[:].tolist() == [1, 2, 3]
    copy.close()


# ------------------------------------------------- "/" as zarr's MemoryStore reads it


class _RootGuard(WrapperStore[Store]):
    """A real store that fails loudly when a listing or delete prefix starts with ``/``.

    zarr's LocalStore takes ``/`` for the filesystem root (``delete_dir("/")`` would
    remove it); a ShardedStore must answer ``/`` itself and never pass it on.
    """

    @staticmethod
    def _check(method: str, prefix: str) -> None:
        if prefix.startswith("/"):
            raise AssertionError(f"{method}({prefix!r}) reached a sub-store")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self._check("list_prefix", prefix)
        return super().list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self._check("list_dir", prefix)
        return super().list_dir(prefix)

    async def is_empty(self, prefix: str) -> bool:
        self._check("is_empty", prefix)
        return await super().is_empty(prefix)

    async def delete_dir(self, prefix: str) -> None:
        self._check("delete_dir", prefix)
        await super().delete_dir(prefix)


def _guarded_layout(tmp_path: Path, kind: str) -> ShardedStore:
    base = _RootGuard(LocalStore(tmp_path / "base"))
    if kind == "base only":
        return ShardedStore(base)
    return ShardedStore(
        base,
        {
            "people": _RootGuard(LocalStore(tmp_path / "people")),
            "deep/er/mount": _RootGuard(LocalStore(tmp_path / "m")),
        },
        {"sim/foo": (1, array_shard_directory_store(tmp_path / "shards"))},
    )


async def _memory_copy(store: ShardedStore) -> MemoryStore:
    reference = MemoryStore()
    for key in await _collect_aiterator(store.list()):
        value = await store.get(key, default_buffer_prototype())
        assert value is not None
        await reference.set(key, value)
    return reference


async def _root_answers(store: Store, root: str) -> tuple[list[str], list[str], bool]:
    return (
        sorted(await _collect_aiterator(store.list_prefix(root))),
        sorted(await _collect_aiterator(store.list_dir(root))),
        await store.is_empty(root),
    )


@pytest.mark.parametrize("kind", ["base only", "mounts and array shards"])
@pytest.mark.parametrize("written", [False, True])
async def test_slash_prefix_is_the_root(tmp_path: Path, kind: str, written: bool) -> None:
    (tmp_path / "sentinel").write_text("must survive delete_dir('/')")
    store = _guarded_layout(tmp_path, kind)
    if written:
        root = zarr.open_group(store, mode="w")
        root.create_array("sim/foo", shape=(3, 2), chunks=(1, 2), dtype="i2")[:] = 3
        root.create_group("people").create_array("h", shape=(2,), dtype="f4")[:] = 1.5
        root.create_group("deep/er/mount").attrs["x"] = 1
    reference = await _memory_copy(store)
    keys = sorted(await _collect_aiterator(store.list()))
    assert len(keys) == (12 if written else 0)
    # "/" answers as "" does, in the store and in a MemoryStore holding the same keys
    # (whose list_prefix/is_empty read "/" as a string prefix, so "" stands in there);
    # _RootGuard fails the test if "/" ever reaches a sub-store.
    assert await _root_answers(store, "/") == await _root_answers(reference, "")
    assert await _root_answers(store, "/") == await _root_answers(store, "")
    await store.delete_dir("/")
    assert sorted(await _collect_aiterator(store.list())) == []
    assert await store.is_empty("/")
    assert (tmp_path / "sentinel").exists()  # nothing above the store was touched
    with pytest.raises(ValueError, match="read-only"):
        await store.with_read_only(True).delete_dir("/")
