"""Config size and open time against the number of array shards.

1. Templates (what ``save_config`` writes): for layouts with 1, 1,000 and 100,000 array
   shards (an int32 array of shape (N, 4), chunks (1, 4), sharded on its first
   dimension, one LocalStore per shard), print the size in bytes of the saved config
   (the same for all), next to the size of a config listing every shard (what
   shardedstore 0.3.x wrote), and the median time of ``shardedstore.open(config)`` plus
   the first read of one element (the last row), with its ratio to the 1-shard case
   (target <= 2).
2. Explicit shards (what ``map_shards`` writes for outputs a template cannot describe):
   configs listing 10^4, 10^5 and 10^6 array shards, one zip each
   (``{"type": "zip", "path": "z/{i}.zarr.zip", "mode": "r"}``); the median time of
   ``shardedstore.open(config)`` alone, and plus the first read of the last row, per
   shard, against the targets (10^5 shards within ~1 s, 10^6 within ~10 s), and the
   time of ``with_read_only`` (which xarray calls on every open) on the opened store.
3. A shardedstore 0.3.x config listing 20,000 array shards (zarr 2 DirectoryStores).

Only the shard that is read exists on disk in 2. and 3.: opening a config creates,
lists and reads nothing, whatever its size.

Usage: python benchmarks/config_scale.py [--counts 1 1000 100000] [--rounds 15]
       [--explicit 10000 100000 1000000] [--legacy 20000] [--explicit-rounds 3]
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
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import ShardedStore, array_shard_directory_store, array_shard_template_store


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


def _last_row(store: ShardedStore, count: int, zarr_format: int = 3) -> None:
    """Create t (shape (count, 4)) in ``store`` and write its last row only."""
    array = zarr.create_array(
        store, name="t", shape=(count, 4), chunks=(1, 4), dtype="i4", zarr_format=zarr_format
    )
    array[count - 1] = np.arange((count - 1) * 4, count * 4, dtype="i4")
    store.close()


def build_explicit(root: Path, count: int) -> Path:
    """A config listing ``count`` zip array shards (only the last one exists)."""
    zips = array_shard_template_store({"type": "zip", "path": f"{root}/z/{{chunk}}.zarr.zip"})
    _last_row(ShardedStore(LocalStore(root / "base.zarr"), {}, {"t": (1, zips)}), count)
    shards = {str(i): {"type": "zip", "path": f"z/{i}.zarr.zip", "mode": "r"} for i in range(count)}
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {"t": {"dims": 1, "shards": shards}},
    }
    path = root / "layout.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def build_legacy(root: Path, count: int) -> Path:
    """A shardedstore 0.3.x config listing ``count`` array shards (only the last exists)."""
    directories = array_shard_directory_store(root / "t")
    _last_row(ShardedStore(LocalStore(root / "base.zarr"), {}, {"t": (1, directories)}), count, 2)

    def directory(path: str) -> dict[str, Any]:
        kwargs = {"normalize_keys": False, "dimension_separator": "."}
        return {
            "name": "DirectoryStore",
            "module": "zarr.storage",
            "config": {"args": [path], "kwargs": kwargs},
            "version": "2.18.3",
        }

    shards = {str(i): directory(f"t/{i}.zarr") for i in range(count)}
    config = {
        "version": "0.3.1",
        "name": "ShardedStore",
        "module": "shardedstore",
        "config": {
            "args": [directory("base.zarr")],
            "kwargs": {
                "dimension_separator": ".",
                "array_shard_dims": {"t": 1},
                "array_shards": {"t": shards},
            },
        },
    }
    path = root / "layout.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def listed_figures(path: Path, count: int, rounds: int) -> tuple[float, float, float]:
    """Medians of open, open + first read, and with_read_only on the opened store."""
    opens, reads, views = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        store = shardedstore.open(path)
        opens.append(time.perf_counter() - start)
        value = zarr.open_array(store, path="t", mode="r")[count - 1, 3]
        reads.append(time.perf_counter() - start)
        assert value == count * 4 - 1
        start = time.perf_counter()
        store.with_read_only(True)
        views.append(time.perf_counter() - start)
    return statistics.median(opens), statistics.median(reads), statistics.median(views)


TARGETS = {100_000: 1.0, 1_000_000: 10.0}  # seconds to open (issue 9, item 9)


def listed_part(roots: list[Path], explicit: list[int], legacy: list[int], rounds: int) -> None:
    cases = [("explicit", count) for count in explicit] + [("0.3.x", count) for count in legacy]
    print()
    print(
        f"{'config':>9} {'shards':>9} {'bytes':>12} {'open':>9} {'per shard':>10} "
        f"{'open+read':>10} {'with_read_only':>15} {'target':>8}"
    )
    for kind, count in cases:
        root = Path(tempfile.mkdtemp(prefix=f"shardedstore-{kind}-{count}-"))
        roots.append(root)
        start = time.perf_counter()
        path = (build_explicit if kind == "explicit" else build_legacy)(root, count)
        built = time.perf_counter() - start
        opened, read, view = listed_figures(path, count, rounds)
        target = TARGETS.get(count) if kind == "explicit" else None
        verdict = "-" if target is None else ("met" if opened <= target else "MISSED")
        print(
            f"{kind:>9} {count:>9} {path.stat().st_size:>12} {opened:>7.2f} s "
            f"{opened / count * 1e6:>7.1f} us {read:>8.2f} s {view * 1e3:>12.1f} ms "
            f"{verdict:>8}   (built in {built:.1f} s)"
        )


def template_part(roots: list[Path], counts: list[int], rounds: int) -> None:
    paths = {}
    for count in counts:
        root = Path(tempfile.mkdtemp(prefix=f"shardedstore-config-{count}-"))
        roots.append(root)
        start = time.perf_counter()
        paths[count] = build(root, count)
        print(f"built {count:>7} shards in {time.perf_counter() - start:6.1f} s")
    times: dict[int, list[float]] = {count: [] for count in counts}
    for _ in range(rounds):  # interleaved, so that machine noise hits all alike
        for count in counts:
            times[count].append(open_and_read(paths[count], count))
    base = statistics.median(times[counts[0]])
    print()
    print(
        f"{'shards':>8} {'config bytes':>13} {'listing every shard':>20} "
        f"{'open+first read (median)':>25} {'ratio':>6}"
    )
    for count in counts:
        median = statistics.median(times[count])
        size = paths[count].stat().st_size
        print(
            f"{count:>8} {size:>13} {listed_size(paths[count].parent, count):>20} "
            f"{median * 1e3:>22.2f} ms {median / base:>6.2f}"
        )
    sizes = {paths[count].stat().st_size for count in counts}
    print()
    print("config size independent of shard count:", "yes" if len(sizes) == 1 else "NO")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="*", default=[1, 1_000, 100_000])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--explicit", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--legacy", type=int, nargs="*", default=[20_000])
    parser.add_argument("--explicit-rounds", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Object at .* is not recognized")
    roots: list[Path] = []
    try:
        if args.counts:
            template_part(roots, args.counts, args.rounds)
        if args.explicit or args.legacy:
            listed_part(roots, args.explicit, args.legacy, args.explicit_rounds)
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
