"""Config size and open time do not depend on the number of array shards.

For layouts with 1, 1,000 and 100,000 array shards (an int32 array of shape (N, 4),
chunks (1, 4), sharded on its first dimension, one LocalStore per shard), print:

- the size in bytes of the saved config (must be the same for all three), next to the
  size a config listing every shard would have (what shardedstore 0.3.x wrote);
- the median time of ``shardedstore.open(config)`` plus the first read of one element
  (the last row), and its ratio to the 1-shard case (target <= 2).

Usage: python benchmarks/config_scale.py [--counts 1 1000 100000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import ShardedStore, array_shard_directory_store


def build(root: Path, count: int) -> Path:
    """Write the layout with ``count`` array shards under ``root``; return its config."""
    store = ShardedStore(
        LocalStore(root / "base.zarr"), {}, {"t": (1, array_shard_directory_store(root / "t"))}
    )
    array = zarr.create_array(store, name="t", shape=(count, 4), chunks=(1, 4), dtype="i4")
    array[...] = np.arange(count * 4, dtype="i4").reshape(count, 4)
    path = root / "layout.json"
    store.save_config(path)
    return path


def listed_size(root: Path, count: int) -> int:
    """Bytes of a config that lists every shard explicitly (the 0.3.x approach)."""
    shards = {str(i): {"type": "local", "root": f"t/{i}.zarr"} for i in range(count)}
    config = json.loads((root / "layout.json").read_text())
    config["array_shards"]["t"] = {"dims": 1, "shards": shards}
    return len(json.dumps(config, indent=2)) + 1


def open_and_read(path: Path, count: int) -> float:
    start = time.perf_counter()
    store = shardedstore.open(path)
    value = zarr.open_array(store, path="t", mode="r")[count - 1, 3]
    elapsed = time.perf_counter() - start
    assert value == count * 4 - 1
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 1_000, 100_000])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Object at .* is not recognized")

    roots = {
        count: Path(tempfile.mkdtemp(prefix=f"shardedstore-config-{count}-"))
        for count in args.counts
    }
    try:
        paths = {}
        for count, root in roots.items():
            start = time.perf_counter()
            paths[count] = build(root, count)
            print(f"built {count:>7} shards in {time.perf_counter() - start:6.1f} s")
        times: dict[int, list[float]] = {count: [] for count in args.counts}
        for _ in range(args.rounds):  # interleaved, so that machine noise hits all alike
            for count in args.counts:
                times[count].append(open_and_read(paths[count], count))
        base = statistics.median(times[args.counts[0]])
        print()
        print(
            f"{'shards':>8} {'config bytes':>13} {'listing every shard':>20} "
            f"{'open+first read (median)':>25} {'ratio':>6}"
        )
        for count in args.counts:
            median = statistics.median(times[count])
            size = paths[count].stat().st_size
            print(
                f"{count:>8} {size:>13} {listed_size(roots[count], count):>20} "
                f"{median * 1e3:>22.2f} ms {median / base:>6.2f}"
            )
        sizes = {paths[count].stat().st_size for count in args.counts}
        print()
        print("config size independent of shard count:", "yes" if len(sizes) == 1 else "NO")
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
