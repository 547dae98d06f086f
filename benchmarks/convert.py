"""Throughput of map_shards(to_zip_store_with_prefix) against Python's own zipfile.

A layout of 64 array shards (float32 array (64, 1024, 1024), chunks (1, 256, 1024),
uncompressed: 4 chunk files of 1 MiB per shard, 256 MiB in all) is converted from
directories to one zip per shard:

- baseline: Python's ``zipfile`` writing the same files into the same zips in one loop
  (``ZipFile.write``, ZIP_STORED), no zarr, no verification;
- ours: ``store.map_shards(to_zip_store_with_prefix(...))`` with 1 and 2 worker threads
  (it also lists every shard, writes under temporary names, checks each zip's central
  directory and renames).

Rounds are interleaved and the outputs removed between runs; medians are reported as
throughput ratios ours/baseline (target >= 0.8 single-worker) and the 2-worker speed-up.
Peak RSS growth of each variant is measured in a fresh subprocess.

Usage: python benchmarks/convert.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import ShardedStore, array_shard_directory_store, to_zip_store_with_prefix

SHARDS = 64
SHAPE = (SHARDS, 1024, 1024)
CHUNKS = (1, 256, 1024)


def build(root: Path) -> Path:
    store = ShardedStore(
        LocalStore(root / "base.zarr"), {}, {"data": (1, array_shard_directory_store(root / "s"))}
    )
    array = zarr.create_array(
        store, name="data", shape=SHAPE, chunks=CHUNKS, dtype="f4", compressors=None
    )
    rng = np.random.default_rng(0)
    for index in range(SHARDS):
        array[index] = rng.random(SHAPE[1:], dtype="float32")
    store.save_config(root / "layout.json")
    return root / "layout.json"


def baseline(root: Path, out: Path) -> None:
    """Python's zipfile, one loop: every shard directory into its own zip."""
    (out / "data").mkdir(parents=True)
    for shard in sorted((root / "s").iterdir()):
        with zipfile.ZipFile(out / "data" / f"{shard.name}.zip", "w", zipfile.ZIP_STORED) as zf:
            for path in sorted(shard.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(shard).as_posix())


def ours(config: Path, out: Path, workers: int) -> None:
    store = shardedstore.open(config)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        store.map_shards(to_zip_store_with_prefix(out), executor=pool, progress=False)


def timed(run: object, out: Path) -> float:
    if out.exists():
        shutil.rmtree(out)
    os.sync()
    start = time.perf_counter()
    run()  # type: ignore[operator]
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return elapsed


_RSS = """
import resource, sys
from pathlib import Path
sys.path.insert(0, {here!r})
import convert
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[1] == "baseline":
    convert.baseline(Path(sys.argv[2]), Path(sys.argv[3]))
else:
    convert.ours(Path(sys.argv[2]) / "layout.json", Path(sys.argv[3]), int(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after)
"""


def rss_growth(variant: str, root: Path, out: Path) -> tuple[float, float]:
    """Peak RSS in MiB of a fresh process after its imports, and after one conversion."""
    script = _RSS.format(here=str(Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", script, variant, str(root), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(out, ignore_errors=True)
    before, after = (int(value) / 1024 for value in result.stdout.split())
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shardedstore-convert-"))
    try:
        config = build(root)
        total = sum(p.stat().st_size for p in (root / "s").rglob("*") if p.is_file())
        print(f"{SHARDS} array shards, {total / 2**20:.0f} MiB of chunk files and metadata")
        runs = {
            "baseline (zipfile loop)": lambda: baseline(root, root / "out-b"),
            "map_shards, 1 worker": lambda: ours(config, root / "out-1", 1),
            "map_shards, 2 workers": lambda: ours(config, root / "out-2", 2),
        }
        outs = {
            "baseline (zipfile loop)": root / "out-b",
            "map_shards, 1 worker": root / "out-1",
            "map_shards, 2 workers": root / "out-2",
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                times[name].append(timed(run, outs[name]))
        base = statistics.median(times["baseline (zipfile loop)"])
        one = statistics.median(times["map_shards, 1 worker"])
        rss = {
            "baseline (zipfile loop)": rss_growth("baseline", root, root / "rss-b"),
            "map_shards, 1 worker": rss_growth("1", root, root / "rss-1"),
            "map_shards, 2 workers": rss_growth("2", root, root / "rss-2"),
        }
        header = ("variant", "median s", "MiB/s", "ours/baseline", "peak RSS MiB")
        print(f"\n{header[0]:<26} {header[1]:>9} {header[2]:>8} {header[3]:>14} {header[4]:>22}")
        for name, values in times.items():
            median = statistics.median(values)
            before, after = rss[name]
            peak = f"{before:.0f} -> {after:.0f}"
            print(
                f"{name:<26} {median:>9.3f} {total / 2**20 / median:>8.0f} "
                f"{base / median:>14.2f} {peak:>22}"
            )
        print("(peak RSS of a fresh process: after its imports -> after the conversion)")
        print(f"\nsingle-worker throughput ratio ours/baseline: {base / one:.2f} (target >= 0.8)")
        print(
            "2-worker speed-up over 1 worker: "
            f"{one / statistics.median(times['map_shards, 2 workers']):.2f}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
