"""CopyOnWriteZipStore: zarr's store tests, and a zip that is never modified in place."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from zarr.core.buffer import Buffer, cpu, default_buffer_prototype
from zarr.storage import LocalStore, ZipStore
from zarr.testing.store import StoreTests

from shardedstore import (
    ConcurrentWriteError,
    CopyOnWriteZipStore,
    LayoutError,
    ShardedStore,
    array_shard_template_store,
)

BUF = default_buffer_prototype().buffer


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _zip_with(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


class TestCopyOnWriteZipStore(StoreTests[CopyOnWriteZipStore, cpu.Buffer]):
    store_cls = CopyOnWriteZipStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        # An existing (empty) zip: a read-only store of a missing zip cannot open.
        _zip_with(tmp_path / "store.zip", {})
        return {"path": tmp_path / "store.zip", "mode": "a"}

    async def set(self, store: CopyOnWriteZipStore, key: str, value: Buffer) -> None:
        await store.set(key, value)

    async def get(self, store: CopyOnWriteZipStore, key: str) -> Buffer:
        value = await store.get(key, prototype=default_buffer_prototype())
        assert value is not None
        return value

    def test_store_repr(self, store: CopyOnWriteZipStore) -> None:
        assert repr(store) == f"ZipStore('zip://{store.path}')"

    def test_store_supports_writes(self, store: CopyOnWriteZipStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: CopyOnWriteZipStore) -> None:
        assert store.supports_listing


def test_zip_is_unchanged_until_close(tmp_path: Path) -> None:
    path = tmp_path / "base.zip"
    _zip_with(path, {"zarr.json": b"old", "a/0": b"zero", "a/1": b"one"})
    before = _digest(path)
    store = CopyOnWriteZipStore(path, mode="a")
    zarr.core.sync.sync(store.set("zarr.json", BUF.from_bytes(b"new")))
    zarr.core.sync.sync(store.set("zarr.json", BUF.from_bytes(b"newer")))
    zarr.core.sync.sync(store.set("a/2", BUF.from_bytes(b"two")))
    zarr.core.sync.sync(store.delete("a/0"))
    # The writer reads its own writes; the zip on disk is byte for byte the old one,
    # and any other reader sees a complete, valid zip with the old content.
    assert store.get_sync("zarr.json").to_bytes() == b"newer"  # type: ignore[union-attr]
    assert store.get_sync("a/0") is None
    assert _digest(path) == before
    with zipfile.ZipFile(path) as other:
        assert other.testzip() is None
        assert other.read("zarr.json") == b"old"
        assert sorted(other.namelist()) == ["a/0", "a/1", "zarr.json"]
    store.close()
    with zipfile.ZipFile(path) as after:
        assert after.testzip() is None
        names = after.namelist()
        assert sorted(names) == ["a/1", "a/2", "zarr.json"]  # each name once
        assert after.read("zarr.json") == b"newer"
        assert after.read("a/1") == b"one"
    assert _leftovers(tmp_path) == []  # no lock, staging or partial file left


def test_new_zip_appears_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "new.zip"
    store = CopyOnWriteZipStore(path, mode="a")
    zarr.core.sync.sync(store.set("zarr.json", BUF.from_bytes(b"{}")))
    assert not path.exists()
    store.close()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["zarr.json"]


def test_mode_w_replaces_on_close(tmp_path: Path) -> None:
    path = tmp_path / "w.zip"
    _zip_with(path, {"old": b"1"})
    store = CopyOnWriteZipStore(path, mode="w")
    assert zarr.core.sync.sync(store.exists("old")) is False
    zarr.core.sync.sync(store.set("new", BUF.from_bytes(b"2")))
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["old"]
    store.close()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["new"]


def test_second_writer_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "one.zip"
    first = CopyOnWriteZipStore(path, mode="a")
    second = CopyOnWriteZipStore(path, mode="a")
    zarr.core.sync.sync(first.set("a", BUF.from_bytes(b"1")))
    with pytest.raises(ConcurrentWriteError, match=r"one\.zip.*is being written by process"):
        zarr.core.sync.sync(second.set("b", BUF.from_bytes(b"2")))
    # Reading is never refused; deleting what is not there writes nothing.
    assert zarr.core.sync.sync(second.get("a", default_buffer_prototype())) is None
    zarr.core.sync.sync(second.delete("missing"))
    first.close()
    # Once the first writer has committed, the second starts from what it wrote.
    zarr.core.sync.sync(second.set("b", BUF.from_bytes(b"2")))
    second.close()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["a", "b"]


def test_discard_keeps_the_old_zip(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    _zip_with(path, {"k": b"v"})
    before = _digest(path)
    store = CopyOnWriteZipStore(path, mode="a")
    zarr.core.sync.sync(store.set("k", BUF.from_bytes(b"changed")))
    store.discard()
    assert _digest(path) == before
    assert _leftovers(tmp_path) == []


def test_sharded_store_uses_copy_on_write_for_zarr_zipstores(tmp_path: Path) -> None:
    path = tmp_path / "base.zip"
    store = ShardedStore(ZipStore(path, mode="a"), {"m": ZipStore(tmp_path / "m.zip", mode="a")})
    assert isinstance(store.base, CopyOnWriteZipStore)
    assert isinstance(store.mounts["m"], CopyOnWriteZipStore)
    group = zarr.open_group(store, mode="w")
    group.create_array("m/x", shape=(4,), dtype="i4")[:] = np.arange(4)
    group.attrs["title"] = "t"
    group.attrs["title"] = "u"
    assert not path.exists()
    store.close()
    for name in ("base.zip", "m.zip"):
        with zipfile.ZipFile(tmp_path / name) as zf:
            assert len(zf.namelist()) == len(set(zf.namelist()))
    reopened = ShardedStore(ZipStore(path), {"m": ZipStore(tmp_path / "m.zip")}, read_only=True)
    back = zarr.open_group(reopened, mode="r")
    assert back.attrs["title"] == "u"
    np.testing.assert_array_equal(back["m/x"][:], np.arange(4))


def test_a_copy_sent_to_another_process_refuses_zip_writes(tmp_path: Path) -> None:
    template = array_shard_template_store({"type": "zip", "path": f"{tmp_path}/t/{{chunk}}.zip"})
    store = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, template)})
    array = zarr.create_array(store, name="a", shape=(2, 2), chunks=(1, 2), dtype="i4")
    copy = pickle.loads(pickle.dumps(store))
    with pytest.raises(LayoutError, match=r"copy sent to another process.*directory shards"):
        zarr.open_array(copy, path="a", mode="r+")[0] = [1, 2]
    assert not (tmp_path / "t").exists() or list((tmp_path / "t").glob("*.zip")) == []
    array[1] = [3, 4]  # the original still writes
    store.close()
    assert [p.name for p in (tmp_path / "t").glob("*.zip")] == ["1.zip"]


def test_commit_keeps_symlink_and_permissions(tmp_path: Path) -> None:
    real = tmp_path / "real" / "data.zip"
    real.parent.mkdir()
    _zip_with(real, {"k": b"old"})
    real.chmod(0o640)
    link = tmp_path / "link.zip"
    link.symlink_to(real)
    store = CopyOnWriteZipStore(link, mode="a")
    zarr.core.sync.sync(store.set("k", BUF.from_bytes(b"new")))
    store.close()
    assert link.is_symlink()  # the zip it points to was replaced, not the link
    with zipfile.ZipFile(real) as zf:
        assert zf.read("k") == b"new"
    assert real.stat().st_mode & 0o777 == 0o640
    assert _leftovers(real.parent) == []


def test_a_damaged_zip_is_named(tmp_path: Path) -> None:
    import zipfile

    from shardedstore import CopyOnWriteZipStore

    path = tmp_path / "t" / "3.zarr.zip"
    path.parent.mkdir()
    path.write_bytes(b"not a zip at all")
    with pytest.raises(zipfile.BadZipFile, match=r"3\.zarr\.zip.*damaged"):
        zarr.open_array(CopyOnWriteZipStore(path, mode="r"), mode="r")


@pytest.mark.parametrize("compressed", [False, True])
def test_a_damaged_member_names_its_zip(tmp_path: Path, compressed: bool) -> None:
    from shardedstore import CopyOnWriteZipStore

    path = tmp_path / "t" / "3.zarr.zip"
    path.parent.mkdir()
    store = CopyOnWriteZipStore(path, mode="w")
    compressors = "auto" if compressed else None
    array = zarr.create_array(
        store, shape=(4, 100), chunks=(1, 100), dtype="f8", compressors=compressors
    )
    array[:] = np.arange(400.0).reshape(4, 100)
    store.close()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("c/1/0")
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF  # a byte inside the member's data
    path.write_bytes(bytes(raw))
    array = zarr.open_array(CopyOnWriteZipStore(path, mode="r"), mode="r")
    with pytest.raises(zipfile.BadZipFile, match=r"3\.zarr\.zip', member 'c/1/0'.*damaged"):
        array[1]
    np.testing.assert_array_equal(array[2], np.arange(200.0, 300.0))  # the rest still reads


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_new_zip_shards_keep_every_chunk_written_while_they_open(
    tmp_path: Path, zarr_format: int
) -> None:
    """zarr writes a new array shard's chunks concurrently; the first write creates the
    zip shard (its metadata) while the others stage their members: none is lost."""
    factory = array_shard_template_store(
        {"type": "zip", "path": str(tmp_path / "t" / "{chunk}.zarr.zip")}
    )
    store = ShardedStore(LocalStore(tmp_path / "base.zarr"), {}, {"a": (1, factory)})
    values = np.random.default_rng(0).random((12, 64, 64)).astype("f4")
    array = zarr.create_array(
        store,
        name="a",
        shape=values.shape,
        chunks=(1, 16, 16),
        dtype="f4",
        compressors=None,
        zarr_format=zarr_format,
    )
    array[:] = values
    store.close()
    for t in range(values.shape[0]):
        with zipfile.ZipFile(tmp_path / "t" / f"{t}.zarr.zip") as shard:
            documents = {"zarr.json", ".zarray", ".zattrs"}
            chunks = [name for name in shard.namelist() if name not in documents]
            assert len(chunks) == 16, (t, chunks)
    reopened = ShardedStore(
        LocalStore(tmp_path / "base.zarr", read_only=True), {}, {"a": (1, factory)}, read_only=True
    )
    np.testing.assert_array_equal(zarr.open_array(reopened, path="a", mode="r")[:], values)
