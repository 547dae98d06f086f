"""Read-ahead along the sharded dimension, against a real S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from shardedstore import ShardedStore
from shardedstore.store.readahead import ReadAhead
from tests._s3counter import CountedS3, build_layout, counted_s3

__all__ = ["counted_s3"]

STEPS = 8


@pytest.fixture(scope="module")
def zips(counted_s3: CountedS3, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_layout(tmp_path_factory.mktemp("ra"), counted_s3, "zip", STEPS)


@pytest.fixture
def slow_gets(counted_s3: CountedS3) -> Iterator[CountedS3]:
    """GETs of shard objects take 0.4 s at the server."""
    counted_s3.requests.slow = lambda method, path: method == "GET" and "/t/" in path
    counted_s3.requests.delay = 0.4
    try:
        yield counted_s3
    finally:
        counted_s3.requests.delay = 0.0


def open_with(url: str, config: dict[str, Any], tmp_path: Path, depth: int) -> ShardedStore:
    cache = {"dir": str(tmp_path / "cache"), "read_ahead": depth}
    return ShardedStore.from_config({**config, "cache": cache}, base_path=url, read_only=True)


def wait_idle(store: ShardedStore, timeout: float = 20.0) -> ReadAhead:
    read_ahead = store._read_ahead
    assert read_ahead is not None
    deadline = time.monotonic() + timeout
    while read_ahead.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_ahead.in_flight == 0
    return read_ahead


def gets(s3: CountedS3, step: int) -> int:
    return s3.requests.count("GET", f"/t/{step}.zarr.zip")


def test_sequential_reads_fetch_the_next_shards(
    counted_s3: CountedS3, zips: Any, tmp_path: Path
) -> None:
    url, config, values = zips
    store = open_with(url, config, tmp_path, depth=3)
    array = zarr.open_array(store, path="temp", mode="r")
    counted_s3.requests.clear()
    np.testing.assert_array_equal(array[0], values[0])
    np.testing.assert_array_equal(array[1], values[1])  # 0 then 1: sequential
    assert wait_idle(store).fetched == 3
    assert [gets(counted_s3, t) for t in range(STEPS)] == [1, 1, 1, 1, 1, 0, 0, 0]
    counted_s3.requests.clear()
    for t in (2, 3, 4):
        np.testing.assert_array_equal(array[t], values[t])
    wait_idle(store)
    assert [gets(counted_s3, t) for t in (2, 3, 4)] == [0, 0, 0]  # already cached
    assert [gets(counted_s3, t) for t in (5, 6, 7)] == [1, 1, 1]  # and on it goes
    # Past the end: the shard does not exist; nothing breaks.
    np.testing.assert_array_equal(array[STEPS - 2 :], values[STEPS - 2 :])
    wait_idle(store)
    store.close()


def test_random_access_fetches_nothing_ahead(
    counted_s3: CountedS3, zips: Any, tmp_path: Path
) -> None:
    url, config, values = zips
    store = open_with(url, config, tmp_path, depth=4)
    array = zarr.open_array(store, path="temp", mode="r")
    counted_s3.requests.clear()
    for t in (5, 0, 3, 7, 2, 2, 6):
        np.testing.assert_array_equal(array[t], values[t])
    assert wait_idle(store).fetched == 0
    assert counted_s3.requests.count("GET", "/t/") == 6
    store.close()


def test_fetches_in_flight_are_bounded(slow_gets: CountedS3, zips: Any, tmp_path: Path) -> None:
    url, config, values = zips
    store = open_with(url, config, tmp_path, depth=2)
    array = zarr.open_array(store, path="temp", mode="r")
    slow_gets.requests.clear()
    for t in range(STEPS):
        np.testing.assert_array_equal(array[t], values[t])
        assert store._read_ahead is not None
        assert store._read_ahead.in_flight <= 2
    wait_idle(store)
    # The reader's own GET plus at most two fetched ahead, never more.
    assert 2 <= slow_gets.requests.slow_peak <= 3
    assert all(gets(slow_gets, t) == 1 for t in range(STEPS))
    store.close()


def test_close_cancels_what_is_fetched_ahead(
    counted_s3: CountedS3, zips: Any, tmp_path: Path
) -> None:
    url, config, values = zips
    store = open_with(url, config, tmp_path, depth=3)
    array = zarr.open_array(store, path="temp", mode="r")
    ahead = ("/t/2.", "/t/3.", "/t/4.")
    counted_s3.requests.slow = lambda method, path: (
        method == "GET" and path.endswith(tuple(f"{a}zarr.zip" for a in ahead))
    )
    counted_s3.requests.delay = 1.5
    try:
        np.testing.assert_array_equal(array[0], values[0])
        np.testing.assert_array_equal(array[1], values[1])  # 0 -> 1: 2, 3, 4 fetched ahead
        read_ahead = store._read_ahead
        assert read_ahead is not None
        assert read_ahead.in_flight == 3
        started = time.monotonic()
        store.close()
        wait_idle(store, timeout=1.0)  # cancelled: no waiting for the slow server
        assert time.monotonic() - started < 1.0
        assert read_ahead.fetched == 0
        time.sleep(1.6)  # the server answers in the end; nobody stores the answers
        files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        zips = [p for p in files if p.read_bytes()[:2] == b"PK"]
        assert len(zips) == 2  # shards 0 and 1 (the others: the array's metadata)
        # Closed: no more looking ahead.
        read_ahead.shard_read("temp", "5")
        read_ahead.shard_read("temp", "6")
        assert read_ahead.in_flight == 0
    finally:
        counted_s3.requests.delay = 0.0


def test_directory_shards_are_fetched_ahead(
    counted_s3: CountedS3, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url, config, values = build_layout(tmp_path_factory.mktemp("rad"), counted_s3, "directory", 5)
    store = open_with(url, config, tmp_path, depth=2)
    array = zarr.open_array(store, path="temp", mode="r")
    np.testing.assert_array_equal(array[0], values[0])
    np.testing.assert_array_equal(array[1], values[1])
    wait_idle(store)
    counted_s3.requests.clear()
    np.testing.assert_array_equal(array[2], values[2])
    np.testing.assert_array_equal(array[3], values[3])
    assert counted_s3.requests.count("GET", "/t/2.zarr/") == 0
    assert counted_s3.requests.count("GET", "/t/3.zarr/") == 0
    store.close()
    wait_idle(store)


class _Shard:
    """A store stand-in with the one method read-ahead calls: it records the call."""

    def __init__(self, log: list[str], index: str) -> None:
        self.log, self.index = log, index

    async def prefetch(self) -> None:
        self.log.append(self.index)


@pytest.mark.parametrize(
    ("reads", "expected"),
    [
        (["0", "1"], ["2", "3"]),
        (["0", "0", "1", "1"], ["2", "3"]),
        (["1", "0"], []),
        (["0", "2"], []),
        (["3.1", "4.1"], ["5.1", "6.1"]),
        (["3.0", "4.1"], []),
        (["0", "1", "2"], ["2", "3", "4"]),
    ],
)
def test_the_sequential_pattern(reads: list[str], expected: list[str]) -> None:
    log: list[str] = []

    async def run() -> None:
        read_ahead = ReadAhead(2, lambda array, index: _Shard(log, index))  # type: ignore[arg-type,return-value]
        for index in reads:
            read_ahead.shard_read("a", index)
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert log == expected


class _Gated:
    """A store stand-in whose fetch ahead waits until the test lets it finish."""

    def __init__(self, log: list[str], gates: dict[str, asyncio.Event], index: str) -> None:
        self.log, self.gates, self.index = log, gates, index

    async def prefetch(self) -> None:
        self.log.append(self.index)
        await self.gates.setdefault(self.index, asyncio.Event()).wait()


def test_the_window_stays_full_and_the_shape_is_read_first() -> None:
    """The shape is asked on the first read (not when reading ahead starts), and each
    fetch that ends starts the next shard ahead of the reader, never more than
    ``depth`` at once and never past the array's end."""
    log: list[str] = []
    shapes: list[str] = []
    gates: dict[str, asyncio.Event] = {}

    async def shape(array: str) -> tuple[int, ...]:
        shapes.append(array)
        return (5,)

    async def run() -> None:
        read_ahead = ReadAhead(2, lambda array, index: _Gated(log, gates, index), shape)  # type: ignore[arg-type,return-value]
        read_ahead.shard_read("a", "0")
        await asyncio.sleep(0.01)
        assert shapes == ["a"]  # on the first read, before any pattern
        assert log == []  # one read is no pattern: nothing fetched
        read_ahead.shard_read("a", "1")
        await asyncio.sleep(0.01)
        assert log == ["2", "3"]
        assert shapes == ["a"]  # asked once
        read_ahead.shard_read("a", "2")  # 3 and 4 ahead; 4 waits for a free slot
        await asyncio.sleep(0.01)
        assert log == ["2", "3"]
        gates.setdefault("2", asyncio.Event()).set()
        await asyncio.sleep(0.01)
        assert log == ["2", "3", "4"]  # 2 done: 4 starts without another read
        assert read_ahead.in_flight == 2
        for index in ("3", "4"):
            gates.setdefault(index, asyncio.Event()).set()
        await asyncio.sleep(0.01)
        assert log == ["2", "3", "4"]  # 5 would be past the end
        assert read_ahead.in_flight == 0
        read_ahead.shard_read("a", "0")  # random access: the window is gone
        gates.clear()
        read_ahead.close()

    asyncio.run(run())
