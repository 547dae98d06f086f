"""The inline I/O fast path: fast sub-stores in the event loop, slow ones in threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore

from shardedstore import ShardedStore, array_shard_directory_store
from shardedstore.store.inline import BUSY_THRESHOLD, INLINE_THRESHOLD, Latency

T = TypeVar("T")


def test_latency_decides_by_its_running_estimate() -> None:
    from shardedstore.store.inline import LONG_WAIT

    latency = Latency()
    assert latency.inline  # nothing measured yet: try inline
    latency.record(LONG_WAIT * 0.8)
    assert latency.inline  # one slow first call (creating folders, say) is not enough
    latency.record(LONG_WAIT * 0.8)
    assert not latency.inline  # two are: slow storage blocks the loop no longer
    reads = Latency(long_wait=LONG_WAIT)
    reads.record(LONG_WAIT * 1.5)
    assert not reads.inline  # a first read that waited this long decides alone
    writes = Latency()
    writes.record(LONG_WAIT * 1.5)
    assert writes.inline  # a first write may have created a shard's folders
    threaded = Latency(long_wait=LONG_WAIT)
    threaded.record(LONG_WAIT * 1.5, threaded=True)
    assert threaded.inline  # in a thread, that wait may be the GIL's
    for _ in range(30):
        latency.record(INLINE_THRESHOLD / 10)
    assert latency.inline  # fast again: back inline
    latency.record(2 * INLINE_THRESHOLD)
    assert latency.inline  # one outlier does not flip a fast store


BUSY_CALL = (INLINE_THRESHOLD + BUSY_THRESHOLD) / 2
"""A call slower than the inline threshold that still runs inline if it does not wait."""


def _busy(seconds: float) -> None:
    """Keep the CPU busy for ``seconds`` without blocking, as page-cache writes do."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_latency_keeps_busy_calls_inline_and_sends_waiting_ones_to_threads() -> None:
    from shardedstore.store.inline import WAIT_THRESHOLD

    busy = Latency()
    for _ in range(10):
        busy.timed(lambda: _busy(BUSY_CALL))
    assert busy.estimate > INLINE_THRESHOLD
    assert busy.inline  # slow but working, not waiting: a thread would not help
    waiting = Latency()
    for _ in range(4):
        waiting.timed(lambda: time.sleep(4 * INLINE_THRESHOLD))
    assert waiting.waiting > 0.5
    assert not waiting.inline  # slow storage keeps zarr's concurrency
    too_long = Latency()
    for _ in range(10):
        too_long.record(2 * BUSY_THRESHOLD, waited=0.0, cpu=2 * BUSY_THRESHOLD)
    assert not too_long.inline  # even busy calls never hold the loop for long
    short_wait = Latency()
    short_wait.record(INLINE_THRESHOLD / 2, waited=INLINE_THRESHOLD / 2)
    assert short_wait.inline  # short calls stay inline whatever they are made of
    # A lone long wait (another thread held the GIL) does not flip a busy group;
    # storage that waits on every call does, within a few calls.
    mixed = Latency()
    busy_call = BUSY_CALL
    for i in range(40):
        waited = 20 * busy_call if i % 5 == 4 else 0.0
        mixed.record(busy_call + waited, waited=waited, cpu=busy_call)
        assert mixed.inline
    flips = next(n for n in range(1, 10) if not _after_waits(mixed, n))
    assert flips <= 4
    assert WAIT_THRESHOLD < INLINE_THRESHOLD


def _after_waits(latency: Latency, count: int) -> bool:
    """Whether ``latency`` stays inline after ``count`` more calls that wait 2 ms."""
    import copy

    probe = copy.copy(latency)
    for _ in range(count):
        probe.record(0.002, waited=0.002, cpu=0.0)
    return probe.inline


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
    from shardedstore.store.inline import inline_capable

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


class TimedWriteStore(MemoryStore):
    """A MemoryStore whose writes take ~0.4 ms, busy or asleep, recording their thread.

    In memory, so that a busy machine's disk cannot make the busy writes wait.
    """

    sleep = False

    def __init__(self, store_dict: dict[str, Buffer] | None = None, *, read_only: bool = False):
        super().__init__(store_dict, read_only=read_only)
        self.threads: list[int] = []

    def set_sync(self, key: str, value: Buffer) -> None:
        self.threads.append(threading.get_ident())
        if self.sleep:
            time.sleep(BUSY_CALL)
        else:
            _busy(BUSY_CALL)
        super().set_sync(key, value)

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        await asyncio.to_thread(self.set_sync, key, value)

    def with_read_only(self, read_only: bool = False) -> TimedWriteStore:
        store = type(self)(self._store_dict, read_only=read_only)
        store.threads, store.sleep = self.threads, self.sleep
        return store


@pytest.mark.parametrize("sleep", [False, True])
def test_busy_writes_stay_inline_and_waiting_ones_go_to_threads(
    tmp_path: Path, sleep: bool
) -> None:
    from shardedstore.store.inline import inline_capable

    mount = TimedWriteStore()
    mount.sleep = sleep
    assert inline_capable(mount)
    store = ShardedStore(LocalStore(tmp_path / "base"), {"g": mount})
    data = np.random.default_rng(2).random((48, 8)).astype("f4")
    zarr.create_array(store, name="g/x", shape=data.shape, chunks=(1, 8), dtype="f4")[:] = data
    loop = _loop_thread()
    on_loop = sum(ident == loop for ident in mount.threads[-48:])
    if sleep:
        assert on_loop <= 3  # measured once inline, then threads
    else:
        assert on_loop >= 24  # CPU work: a thread hop would only add to it
    np.testing.assert_array_equal(zarr.open_array(mount, path="x", mode="r")[:], data)


class FixedThreadTimes(Latency):
    """A Latency whose calls in threads measure a fixed time, as if waiting for the GIL.

    Inline calls are measured for real; the test's calls do no work there.
    """

    __slots__ = ("in_threads",)

    def __init__(self, in_threads: float) -> None:
        super().__init__()
        self.in_threads = in_threads

    def timed(self, call: Callable[[], T], threaded: bool = False) -> T:
        if not threaded:
            return super().timed(call)
        result = call()
        self.record(self.in_threads, self.in_threads, 20e-6, threaded=True)
        return result


async def test_a_probe_brings_back_a_store_that_only_looks_slow_in_threads() -> None:
    """In threads a fast call can wait for the GIL; an inline probe now and then sees it."""
    from shardedstore.store.inline import PROBE_FIRST

    latency = FixedThreadTimes(in_threads=0.001)
    for _ in range(2):
        latency.record(0.002, waited=0.002)  # a slow start sends the group to threads
    assert not latency.inline
    for _ in range(PROBE_FIRST - 1):
        await latency.run_off_loop(lambda: None)
        assert not latency.inline
    await latency.run_off_loop(lambda: None)  # the probe: threads look faster than inline did
    assert latency.inline


async def test_a_probe_is_not_spoiled_by_a_thread_finishing_meanwhile() -> None:
    latency = Latency()
    for _ in range(4):
        latency.record(0.0004, waited=0.0004)
    latency.samples, latency._decisive = 0, True  # what run_off_loop does before a probe
    latency.record(0.003, waited=0.003, threaded=True)  # a worker's sample lands first
    latency.record(0.00015, waited=0.0, cpu=0.00015)  # the probe: fast
    assert latency.inline


async def test_storage_that_stays_slow_is_probed_once_per_probe_last_calls() -> None:
    """A probe blocks the loop; threads that show no change give no reason for one."""
    from shardedstore.store.inline import PROBE_FIRST, PROBE_LAST

    latency = Latency()
    for _ in range(4):
        latency.record(0.0004, waited=0.0004)  # inline: slow storage, to threads
    assert not latency.inline
    on_loop = 0
    loop_thread = threading.get_ident()

    def slow() -> None:
        nonlocal on_loop
        on_loop += threading.get_ident() == loop_thread
        time.sleep(0.0004)

    for calls in range(1, PROBE_LAST + PROBE_FIRST + 1):
        if latency.inline:
            latency.timed(slow)
        else:
            await latency.run_off_loop(slow)
        if calls == PROBE_LAST - 1:
            assert on_loop == 0  # due after PROBE_FIRST calls, but threads are no faster
    assert on_loop == 1  # the one after PROBE_LAST calls
    assert not latency.inline


class RecordingMemoryStore(MemoryStore):
    """A MemoryStore that records the keys written to it, in any thread."""

    def __init__(self, store_dict: dict[str, Buffer] | None = None, *, read_only: bool = False):
        super().__init__(store_dict, read_only=read_only)
        self.written: list[str] = []
        self.fail_metadata = False

    def set_sync(self, key: str, value: Buffer) -> None:
        if self.fail_metadata and key == "zarr.json":
            raise OSError("metadata write refused")
        self.written.append(key)
        super().set_sync(key, value)

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        self.set_sync(key, value)

    def with_read_only(self, read_only: bool = False) -> RecordingMemoryStore:
        store = type(self)(self._store_dict, read_only=read_only)
        store.written, store.fail_metadata = self.written, self.fail_metadata
        return store


S = TypeVar("S", bound=MemoryStore)


def _kept_shards(tmp_path: Path, make: Callable[[], S]) -> tuple[ShardedStore, dict[str, S]]:
    """A layout whose array "a" keeps each shard's store (one ``make()`` each) to look at."""
    shards: dict[str, S] = {}

    def factory(index: str) -> S:
        if index not in shards:
            shards[index] = make()
        return shards[index]

    return ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)}), shards


def test_a_new_shards_metadata_is_written_once_by_concurrent_chunk_writes(
    tmp_path: Path,
) -> None:
    """zarr writes a new shard's chunks concurrently; only the first writes its metadata."""
    store, shards = _kept_shards(tmp_path, RecordingMemoryStore)
    data = np.random.default_rng(3).random((4, 64, 64)).astype("f4")
    zarr.create_array(store, name="a", shape=data.shape, chunks=(1, 16, 16), dtype="f4")[:] = data
    assert sorted(shards) == ["0", "1", "2", "3"]
    for shard in shards.values():
        assert shard.written.count("zarr.json") == 1
        assert len(shard.written) == 1 + 16
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], data)


def test_a_failed_shard_metadata_write_fails_every_chunk_write_and_is_retried(
    tmp_path: Path,
) -> None:
    store, shards = _kept_shards(tmp_path, RecordingMemoryStore)
    shard = shards.setdefault("0", RecordingMemoryStore())
    shard.fail_metadata = True
    arr = zarr.create_array(store, name="a", shape=(1, 64), chunks=(1, 16), dtype="f4")

    async def write_all() -> list[BaseException | None]:
        # Not arr[:] = 1.0: zarr raises at the first failed chunk and leaves the
        # others running in the background, where one could land after the retry.
        keys = [f"a/c/0/{i}" for i in range(4)]
        return await asyncio.gather(
            *(store.set(key, _chunk()) for key in keys), return_exceptions=True
        )

    results = asyncio.run(write_all())
    assert all(isinstance(r, OSError) and "refused" in str(r) for r in results), results
    assert "zarr.json" not in shard.written
    shard.fail_metadata = False
    arr[:] = 2.0
    assert shard.written.count("zarr.json") == 1
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[:], 2.0)


class SlowMetadataStore(MemoryStore):
    """Writes ``zarr.json`` after a delay, failing it when told to (async only)."""

    def __init__(self, store_dict: dict[str, Buffer] | None = None, *, read_only: bool = False):
        super().__init__(store_dict, read_only=read_only)
        self.fail = False

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        if key == "zarr.json":
            await asyncio.sleep(0.05)
            if self.fail:
                raise OSError("metadata write refused")
        await super().set(key, value)

    def with_read_only(self, read_only: bool = False) -> SlowMetadataStore:
        store = type(self)(self._store_dict, read_only=read_only)
        store.fail = self.fail
        return store


def _slow_metadata_layout(
    tmp_path: Path, fail: bool
) -> tuple[ShardedStore, dict[str, SlowMetadataStore]]:
    def make() -> SlowMetadataStore:
        shard = SlowMetadataStore()
        shard.fail = fail
        return shard

    store, shards = _kept_shards(tmp_path, make)
    zarr.create_array(store, name="a", shape=(2, 64), chunks=(1, 16), dtype="f4")
    return store, shards


def _chunk() -> Buffer:
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype().buffer.from_bytes(bytes(64))


def test_a_write_arriving_during_a_failing_shard_creation_fails_too(tmp_path: Path) -> None:
    store, shards = _slow_metadata_layout(tmp_path, fail=True)

    async def main() -> list[BaseException | None]:
        first = asyncio.ensure_future(store.set("a/c/0/0", _chunk()))
        await asyncio.sleep(0.01)  # the creation is under way
        late = store.set("a/c/0/1", _chunk())
        return await asyncio.gather(first, late, return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, OSError) for result in results), results
    assert "zarr.json" not in shards["0"]._store_dict


def test_a_creation_left_behind_by_a_closed_loop_is_done_again(tmp_path: Path) -> None:
    """A loop that stops mid-creation must not leave the shard without its metadata."""
    store, shards = _slow_metadata_layout(tmp_path, fail=False)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(TimeoutError):
            loop.run_until_complete(asyncio.wait_for(store.set("a/c/0/0", _chunk()), 0.01))
    finally:
        loop.close()
    arr = zarr.open_array(store, path="a", mode="r+")
    arr[0, :] = 1.0  # zarr's own loop
    assert "zarr.json" in shards["0"]._store_dict
    np.testing.assert_array_equal(zarr.open_array(store, path="a", mode="r")[0], 1.0)
