"""Overhead of ShardedStore over its sub-stores, as ratios against a plain baseline.

1. Chunk I/O: write then read a (32, 512, 512) float32 array, chunks (1, 128, 128),
   uncompressed, through a ShardedStore with one LocalStore array shard per leading
   index, against the same array in one plain LocalStore. Runs are interleaved; the
   ratio of medians is printed (target <= 1.10, aim 1.03).
2. Routing: ``exists()`` over 50,000 keys with 5,000 mounts against 1 mount
   (target <= 1.5): routing cost must not grow with the number of mounts.

Usage: python benchmarks/overhead.py [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.storage import LocalStore, MemoryStore

from shardedstore import ShardedStore, array_shard_directory_store

SHAPE = (32, 512, 512)
CHUNKS = (1, 128, 128)


def plain(root: Path) -> Store:
    return LocalStore(root / "plain")


def sharded(root: Path) -> Store:
    return ShardedStore(
        LocalStore(root / "base"), {}, {"foo": (1, array_shard_directory_store(root / "shards"))}
    )


def one_run(make: Callable[[Path], Store], data: np.ndarray) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-"))
    try:
        store = make(root)
        arr = zarr.create_array(
            store, name="foo", shape=SHAPE, chunks=CHUNKS, dtype="f4", compressors=None
        )
        start = time.perf_counter()
        arr[...] = data
        written = time.perf_counter() - start
        reader = zarr.open_array(store, path="foo", mode="r")
        start = time.perf_counter()
        back = reader[...]
        read = time.perf_counter() - start
        assert np.array_equal(back, data)
        return written, read
    finally:
        shutil.rmtree(root)


def chunk_io(rounds: int) -> tuple[float, float]:
    data = np.random.default_rng(0).standard_normal(SHAPE).astype("f4")
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "sharded": []}
    one_run(plain, data)  # warm up caches and imports
    one_run(sharded, data)
    for round_ in range(rounds):
        # Alternate which goes first, so drift in machine load hits both alike.
        order = ("plain", "sharded") if round_ % 2 == 0 else ("sharded", "plain")
        for name in order:
            times[name].append(one_run(plain if name == "plain" else sharded, data))
    med = {
        name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
        for name, runs in times.items()
    }
    write_ratio = med["sharded"][0] / med["plain"][0]
    read_ratio = med["sharded"][1] / med["plain"][1]
    print(f"chunk I/O, {rounds} interleaved rounds, medians:")
    print(
        f"  write: plain {med['plain'][0] * 1e3:7.1f} ms  sharded {med['sharded'][0] * 1e3:7.1f} ms"
        f"  ratio {write_ratio:.3f}"
    )
    print(
        f"  read:  plain {med['plain'][1] * 1e3:7.1f} ms  sharded {med['sharded'][1] * 1e3:7.1f} ms"
        f"  ratio {read_ratio:.3f}"
    )
    return write_ratio, read_ratio


def routing(rounds: int) -> float:
    # Same key depth and the same code path in both layouts (every key lands in a
    # mount); only the number of mounts differs.
    def layout(n_mounts: int) -> ShardedStore:
        return ShardedStore(
            MemoryStore(), {f"group{i}/node{i % 10}": MemoryStore() for i in range(n_mounts)}
        )

    def keys(n_mounts: int) -> list[str]:
        return [f"group{i % n_mounts}/node{i % n_mounts % 10}/var/c/{i}" for i in range(50_000)]

    async def probe(store: ShardedStore, keys: list[str]) -> float:
        start = time.perf_counter()
        for key in keys:
            await store.exists(key)
        return time.perf_counter() - start

    cases = {n: (layout(n), keys(n)) for n in (1, 5000)}
    runs: dict[int, list[float]] = {n: [] for n in cases}
    for _ in range(rounds):
        for n, (store, probe_keys) in cases.items():
            runs[n].append(asyncio.run(probe(store, probe_keys)))
    one, many = statistics.median(runs[1]), statistics.median(runs[5000])
    ratio = many / one
    print(f"routing, exists() over 50,000 keys, {rounds} rounds, medians:")
    print(f"  1 mount {one * 1e3:7.1f} ms  5,000 mounts {many * 1e3:7.1f} ms  ratio {ratio:.3f}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    write_ratio, read_ratio = chunk_io(args.rounds)
    route_ratio = routing(args.rounds)
    ok = write_ratio <= 1.10 and read_ratio <= 1.10 and route_ratio <= 1.5
    print("targets (write, read <= 1.10; routing <= 1.5):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
