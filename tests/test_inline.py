"""The inline I/O fast path: fast sub-stores in the event loop, slow ones in threads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore

from shardedstore import ShardedStore, array_shard_directory_store
from shardedstore._inline import INLINE_THRESHOLD, Latency


def test_latency_decides_by_its_running_estimate() -> None:
    latency = Latency()
    assert latency.inline  # nothing measured yet: try inline
    latency.record(10 * INLINE_THRESHOLD)
    assert not latency.inline  # the first sample decides at once
    for _ in range(30):
        latency.record(INLINE_THRESHOLD / 10)
    assert latency.inline  # fast again: back inline
    latency.record(2 * INLINE_THRESHOLD)
    assert latency.inline  # one outlier does not flip a fast store


class RecordingStore(LocalStore):
    """A LocalStore that records which thread serves each read, optionally slowly."""

    delay = 0.0

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self.threads: list[int] = []

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        self.threads.append(threading.get_ident())
        if self.delay:
            time.sleep(self.delay)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if not self._is_open:
            await self._open()
        return await asyncio.to_thread(
            self.get_sync, key, prototype=prototype, byte_range=byte_range
        )

    def with_read_only(self, read_only: bool = False) -> RecordingStore:
        store = type(self)(self.root, read_only=read_only)
        store.delay = self.delay
        store.threads = self.threads
        return store


def _loop_thread() -> int:
    from zarr.core.sync import _get_loop

    loop = _get_loop()
    ident: list[int] = []
    done = threading.Event()
    loop.call_soon_threadsafe(lambda: (ident.append(threading.get_ident()), done.set()))
    done.wait(10)
    return ident[0]


@pytest.mark.parametrize("slow", [False, True])
def test_fast_stores_are_read_inline_and_slow_ones_in_threads(tmp_path: Path, slow: bool) -> None:
    data = np.arange(64 * 16, dtype="f4").reshape(64, 16)
    source = LocalStore(tmp_path / "m")
    zarr.create_array(source, name="x", shape=data.shape, chunks=(1, 16), dtype="f4")[:] = data
    zarr.open_group(LocalStore(tmp_path / "base"), mode="w")
    mount = RecordingStore(tmp_path / "m")
    mount.delay = 4 * INLINE_THRESHOLD if slow else 0.0
    store = ShardedStore(LocalStore(tmp_path / "base"), {"g": mount}, read_only=True)
    back = zarr.open_array(store, path="g/x", mode="r")[:]
    np.testing.assert_array_equal(back, data)
    loop = _loop_thread()
    chunk_reads = mount.threads[-64:]
    on_loop = sum(ident == loop for ident in chunk_reads)
    if slow:
        assert on_loop <= 2  # the first measurement, then threads
    else:
        # Inline, apart from the few reads after an outlier (a busy machine) that the
        # running estimate sends to a thread until it decays again.
        assert on_loop >= len(chunk_reads) // 2


def test_inline_writes_and_reads_round_trip(tmp_path: Path) -> None:
    """Writes through the fast path land where a plain LocalStore reader finds them."""
    store = ShardedStore(
        LocalStore(tmp_path / "base"),
        {},
        {"a": (1, array_shard_directory_store(tmp_path / "shards"))},
    )
    data = np.random.default_rng(1).random((6, 32, 32)).astype("f4")
    zarr.create_array(store, name="a", shape=data.shape, chunks=(1, 8, 8), dtype="f4")[:] = data
    alone = zarr.open_array(LocalStore(tmp_path / "shards" / "5.zarr", read_only=True), mode="r")
    np.testing.assert_array_equal(alone[:], data[5])
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], data)


def test_a_subclass_overriding_get_is_called_through_get(tmp_path: Path) -> None:
    """Inline I/O never bypasses a subclass's own ``get`` (logging, auth, counting)."""
    from shardedstore._inline import inline_capable

    class Counting(LocalStore):
        async def get(
            self,
            key: str,
            prototype: BufferPrototype | None = None,
            byte_range: ByteRequest | None = None,
        ) -> Buffer | None:
            return await super().get(key, prototype, byte_range)

    assert inline_capable(LocalStore(tmp_path))
    assert inline_capable(RecordingStore(tmp_path))
    assert not inline_capable(Counting(tmp_path))
    assert not inline_capable(ShardedStore(LocalStore(tmp_path)))
