"""chunk_table with statistics against a plain zarr loop; incremental write_chunk_table.

A layout of 200 array shards (float32 array (200, 200, 250), chunks (1, 100, 50),
zstd-compressed: 10 chunks per shard, 2,000 chunks in all) on local disk:

1. **Statistics**: min, max, mean, std, count and nan_count of every chunk.
   - baseline: a plain loop that reads each chunk with zarr (``array[region]``, through
     the same ShardedStore) and computes the same numpy statistics;
   - ours: ``chunk_table(store, stats=...)`` with a 1-worker and a 2-worker thread pool
     (it also lists every shard, sizes every chunk and builds the Arrow table).
   Ratio: median baseline time / median ours (target >= 1.0 with one worker), and the
   2-worker speed-up over 1 worker.
2. **Incremental**: ``write_chunk_table`` into a new directory (full run), then 20 time
   steps (10% new array shards) are appended and the same call runs again; ratio of
   medians re-run / full run (target <= 0.2).

Rounds are interleaved. Usage: python benchmarks/chunk_table.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from shardedstore import ShardedStore, array_shard_directory_store, chunk_table, write_chunk_table

STEPS = 200
SHAPE = (STEPS, 200, 250)
CHUNKS = (1, 100, 50)
APPEND = STEPS // 10
STATS = ["min", "max", "mean", "std", "count", "nan_count"]


def build(root: Path) -> ShardedStore:
    store = ShardedStore(
        LocalStore(root / "base.zarr"), {}, {"data": (1, array_shard_directory_store(root / "s"))}
    )
    array = zarr.create_array(store, name="data", shape=SHAPE, chunks=CHUNKS, dtype="f4")
    rng = np.random.default_rng(0)
    for index in range(STEPS):
        array[index] = rng.normal(size=SHAPE[1:]).astype("f4")
    return store


def append(store: ShardedStore) -> None:
    array = zarr.open_array(store, path="data", mode="r+")
    array.resize((STEPS + APPEND, *SHAPE[1:]))
    rng = np.random.default_rng(1)
    for index in range(STEPS, STEPS + APPEND):
        array[index] = rng.normal(size=SHAPE[1:]).astype("f4")


def plain_loop(store: ShardedStore) -> int:
    """Read each chunk with zarr and compute the same statistics with numpy."""
    array = zarr.open_array(store, path="data", mode="r")
    rows = 0
    for t in range(array.shape[0]):
        for i in range(0, SHAPE[1], CHUNKS[1]):
            for j in range(0, SHAPE[2], CHUNKS[2]):
                data = array[t, i : i + CHUNKS[1], j : j + CHUNKS[2]]
                nan = np.isnan(data)
                kept = data[~nan]
                _ = (
                    float(kept.min()),
                    float(kept.max()),
                    float(kept.mean(dtype=np.float64)),
                    float(kept.std(dtype=np.float64)),
                    int(kept.size),
                    int(nan.sum()),
                )
                rows += 1
    return rows


def ours(store: ShardedStore, workers: int) -> int:
    with ThreadPoolExecutor(workers) as pool:
        return int(chunk_table(store, stats=STATS, executor=pool, progress=False).num_rows)


def timed(func: object, *args: object) -> float:
    start = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    root = Path(tempfile.mkdtemp(prefix="chunk-table-bench-"))
    try:
        store = build(root)
        assert plain_loop(store) == ours(store, 1) == 2000  # warm up, same rows
        times: dict[str, list[float]] = {"loop": [], "ours-1": [], "ours-2": []}
        for n in range(rounds):
            order = ["loop", "ours-1", "ours-2"]
            for name in order[n % 3 :] + order[: n % 3]:
                if name == "loop":
                    times[name].append(timed(plain_loop, store))
                else:
                    times[name].append(timed(ours, store, int(name[-1])))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"statistics of {SHAPE[0] * 2 * 5} chunks, medians of {rounds} rounds:")
        for name, value in med.items():
            print(f"  {name:7s} {value:7.3f} s")
        print(f"  speed ours(1 worker) / plain loop: {med['loop'] / med['ours-1']:.2f}x")
        print(f"  speed ours(2 workers) / plain loop: {med['loop'] / med['ours-2']:.2f}x")
        print(f"  2 workers / 1 worker speed-up: {med['ours-1'] / med['ours-2']:.2f}x")

        outs = [root / f"table-{n}" for n in range(rounds)]
        full = []
        for out in outs:
            start = time.perf_counter()
            write_chunk_table(store, out, stats=STATS, progress=False)
            full.append(time.perf_counter() - start)
        append(store)
        again = ShardedStore(store.base, store.mounts, store.array_shards)
        rerun = []
        for out in outs:
            start = time.perf_counter()
            result = write_chunk_table(again, out, stats=STATS, progress=False)
            rerun.append(time.perf_counter() - start)
            assert len(result.written) == APPEND, result.written
        ratio = statistics.median(rerun) / statistics.median(full)
        print(f"incremental write_chunk_table, {APPEND} new shards of {STEPS + APPEND}:")
        print(
            f"  full run {statistics.median(full):.3f} s, re-run {statistics.median(rerun):.3f} s"
        )
        print(f"  re-run / full run: {ratio:.3f}x (target <= 0.2)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
