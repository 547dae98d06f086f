"""Layouts of 10^3 to 10^6 time steps: what each operation costs, and how it grows.

A layout as the first users have it: an array ``temperature`` float32 (N, 8, 8), one
chunk per step, zstd, sharded on time with the template ``t/{chunk}.zarr`` (directory
shards) or ``t/{chunk}.zarr.zip`` (zip shards). The writer of the big layouts writes
one shard through the store and copies its files for the others, in parallel
processes (what many independent writers produce); the write rate through the store
is measured on its own (``write``).

Each operation runs in a process of its own (for its peak memory, ``ru_maxrss``):

- ``open``: ``shardedstore.open(config)``, plus reading one step (``read``);
- ``list``: ``list_dir`` of one shard's prefix (``temperature/c/K/``) and of the
  array's chunk prefix (``temperature/c/``);
- ``shards``: ``store.shards()``;
- ``info``, ``validate``: the CLI commands (``--json``); ``info`` twice (``info again``):
  the first pass may find the shards' folders out of memory (the first pass over a
  tree, or a machine that pages out what was not used for a while: this VM does it
  within seconds), the second finds them in memory;
- ``chunks``: ``chunks --stats min,max --out DIR``, then again with nothing changed;
- ``write``: new shards written through the store, in batches of 1,000 steps;
- ``explicit``: opening a config that lists every shard (what ``map_shards`` writes
  for outputs a template cannot describe).

Targets at 10^5 directory shards (issue 22): info <= 10 s, validate <= 15 s, shards()
<= 1 s, chunks <= 60 s, rerun <= 5 s, each <= 300 MB; writes >= 2,000 new shards/s;
an explicit config of 10^6 shards opens in <= 10 s; list of one shard independent of N.

Usage: python benchmarks/scale.py [--counts 1000 10000 100000] [--kinds directory zip]
       [--skip chunks validate] [--write 5000] [--repeat 3] [--engines zarr zarrs]
       [--explicit 1000000]
       [--layouts DIR]   (keep and reuse the built layouts, e.g. for --counts 1000000)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

WORKER = r"""
import json, resource, sys, time
what, config, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
out = {}
if what == "open":
    import shardedstore, zarr
    store = shardedstore.open(config)
    out["open"] = time.perf_counter() - started
    step = time.perf_counter()
    zarr.open_array(store, path="temperature", mode="r")[count // 2]
    out["read"] = time.perf_counter() - step
elif what == "list":
    import shardedstore
    from zarr.core.sync import sync
    store = shardedstore.open(config)
    async def names(prefix):
        return [name async for name in store.list_dir(prefix)]
    step = time.perf_counter()
    one = sync(names(f"temperature/c/{count // 2}/"))
    out["list one"] = time.perf_counter() - step
    step = time.perf_counter()
    every = sync(names("temperature/c/"))
    out["list all"] = time.perf_counter() - step
    assert len(one) == 1 and len(every) == count, (len(one), len(every))
elif what == "shards":
    import shardedstore
    store = shardedstore.open(config)
    step = time.perf_counter()
    assert len(store.shards()) == count + 1
    out["shards"] = time.perf_counter() - step
elif what in ("info", "validate"):
    import contextlib, io
    from shardedstore.cli import main
    with contextlib.redirect_stdout(io.StringIO()):
        code = main([what, config, "--json"])
    assert code == 0, code
    out[what] = time.perf_counter() - started
elif what == "chunks":
    import contextlib, io
    from shardedstore.cli import main
    target = sys.argv[4]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["chunks", config, "--stats", "min,max", "--out", target]) == 0
    out["chunks"] = time.perf_counter() - started
    step = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["chunks", config, "--stats", "min,max", "--out", target]) == 0
    out["rerun"] = time.perf_counter() - step
elif what == "explicit":
    import shardedstore
    out["explicit"] = (shardedstore.open(config), time.perf_counter() - started)[1]
try:  # this process's own peak (ru_maxrss would include the parent's, kept across exec)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["rss MB"] = peak / 1024
print(json.dumps(out))
"""


def _template(kind: str) -> dict[str, Any]:
    if kind == "zip":
        return {"type": "zip", "path": "t/{chunk}.zarr.zip"}
    return {"type": "local", "root": "t/{chunk}.zarr"}


def _copy_shards(source: str, target_dir: str, kind: str, first: int, last: int) -> None:
    for t in range(first, last):
        if kind == "zip":
            shutil.copyfile(source, os.path.join(target_dir, f"{t}.zarr.zip"))
        else:
            shutil.copytree(source, os.path.join(target_dir, f"{t}.zarr"))


def build(root: Path, count: int, kind: str) -> Path:
    """The layout of ``count`` steps under ``root``; its config's path."""
    import numpy as np
    import zarr
    from zarr.codecs import ZstdCodec

    import shardedstore

    root.mkdir(parents=True, exist_ok=True)
    config = root / "layout.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {"temperature": {"dims": 1, "store": _template(kind)}},
            }
        )
    )
    store = shardedstore.open(config, mode="r+")
    array = zarr.create_array(
        store,
        name="temperature",
        shape=(count, 8, 8),
        chunks=(1, 8, 8),
        dtype="f4",
        compressors=ZstdCodec(),
    )
    array[0] = np.arange(64, dtype="f4").reshape(8, 8)
    store.close()
    source = root / "t" / ("0.zarr.zip" if kind == "zip" else "0.zarr")
    jobs = max(1, os.cpu_count() or 1)
    edges = [1 + (count - 1) * i // jobs for i in range(jobs + 1)]
    with ProcessPoolExecutor(jobs) as pool:
        list(
            pool.map(
                _copy_shards,
                [str(source)] * jobs,
                [str(root / "t")] * jobs,
                [kind] * jobs,
                edges[:-1],
                edges[1:],
            )
        )
    return config


def build_explicit(root: Path, count: int) -> Path:
    """A config listing ``count`` zip shards one by one (only the config exists)."""
    shards = {str(i): {"type": "zip", "path": f"z/{i}.zarr.zip", "mode": "r"} for i in range(count)}
    config = root / "explicit.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {"temperature": {"dims": 1, "shards": shards}},
            }
        )
    )
    return config


def run(what: str, config: Path, count: int, *extra: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", WORKER, what, str(config), str(count), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {result.stderr[-2000:]}")
    found: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return found


def write_rate(root: Path, steps: int) -> float:
    """New shards per second written through the store (batches of 1,000 steps)."""
    import numpy as np
    import zarr

    import shardedstore

    config = build(root, 1, "directory")
    store = shardedstore.open(config, mode="r+")
    array = zarr.open_array(store, path="temperature", mode="r+")
    array.resize((steps, 8, 8))
    values = np.ones((1000, 8, 8), dtype="f4")
    started = time.perf_counter()
    for first in range(0, steps, 1000):
        stop = min(steps, first + 1000)
        array[first:stop] = values[: stop - first]
    elapsed = time.perf_counter() - started
    store.close()
    return steps / elapsed


def reuse_or_build(folder: Path, count: int, kind: str) -> tuple[Path, float | None]:
    """The layout kept in ``folder`` (built there first if it is not complete).

    A layout counts as complete once its marker is written, after the last shard; a
    folder without it is refused rather than deleted (it may not be ours).
    """
    marker = folder / "built.json"
    if marker.exists():
        found = json.loads(marker.read_text())
        if found == {"count": count, "kind": kind}:
            return folder / "layout.json", None
        raise SystemExit(f"{folder} holds another layout ({found}); pick another --layouts")
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} exists without {marker.name} (an unfinished build?); remove it")
    started = time.perf_counter()
    config = build(folder, count, kind)
    marker.write_text(json.dumps({"count": count, "kind": kind}))
    return config, time.perf_counter() - started


def _engine(engine: str, *, sharded: bool) -> contextlib.AbstractContextManager[Any]:
    """zarr's codec pipeline for one write row: ``engine`` for our store or plain zarr."""
    import zarr

    import shardedstore

    if engine == "zarr":
        return contextlib.nullcontext()
    if sharded:
        return shardedstore.use_engine(engine)
    return zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})


def plain_write_rate(root: Path, steps: int) -> float:
    """The same writes into one plain zarr ``LocalStore`` (the baseline of ``write``)."""
    import numpy as np
    import zarr
    from zarr.codecs import ZstdCodec

    array = zarr.create_array(
        zarr.storage.LocalStore(root),
        name="temperature",
        shape=(steps, 8, 8),
        chunks=(1, 8, 8),
        dtype="f4",
        compressors=ZstdCodec(),
    )
    values = np.ones((1000, 8, 8), dtype="f4")
    started = time.perf_counter()
    for first in range(0, steps, 1000):
        stop = min(steps, first + 1000)
        array[first:stop] = values[: stop - first]
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--kinds", nargs="*", default=["directory", "zip"])
    parser.add_argument("--skip", nargs="*", default=[])
    parser.add_argument("--write", type=int, default=5000, help="steps written through the store")
    parser.add_argument("--explicit", type=int, nargs="*", default=[])
    parser.add_argument("--repeat", type=int, default=3, help="write runs (medians)")
    parser.add_argument(
        "--engines",
        nargs="*",
        default=["zarr"],
        choices=["zarr", "zarrs"],
        help="codec pipelines of the write rows: zarr's own, and zarrs (the store with "
        "shardedstore.use_engine('zarrs'), the plain LocalStore with zarrs' pipeline)",
    )
    parser.add_argument(
        "--layouts",
        type=Path,
        help="keep the built layouts in this folder and reuse them in later runs "
        "(a 10^6 layout takes long to build); by default they are built in a "
        "temporary folder and removed",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shardedstore-scale-") as scratch:
        base = Path(scratch)
        for engine in args.engines if args.write else ():
            ours, plain = [], []
            for run_number in range(args.repeat):  # side by side, alternating
                with _engine(engine, sharded=True):
                    ours.append(write_rate(base / f"write-{engine}-{run_number}", args.write))
                with _engine(engine, sharded=False):
                    plain.append(
                        plain_write_rate(base / f"plain-{engine}-{run_number}", args.write)
                    )
            mine, theirs = statistics.median(ours), statistics.median(plain)
            print(
                f"write through the store ({engine} pipeline): {mine:,.0f} new shards/s, "
                f"plain zarr LocalStore {theirs:,.0f} chunks/s: ratio {mine / theirs:.2f} "
                f"(medians of {args.repeat}, {args.write} steps; runs at >= 2,000/s: "
                f"{sum(r >= 2000 for r in ours)} of {args.repeat})",
                flush=True,
            )
        for count in args.explicit:
            folder = base / f"explicit-{count}"
            folder.mkdir()
            found = run("explicit", build_explicit(folder, count), count)
            print(
                f"explicit config of {count:,} shards: open {found['explicit']:.2f} s, "
                f"{found['rss MB']:.0f} MB"
            )
        for kind in args.kinds:
            for count in args.counts:
                root = (args.layouts or base) / f"{kind}-{count}"
                root.mkdir(parents=True, exist_ok=True)
                config, took = reuse_or_build(root, count, kind)
                built = "reused" if took is None else f"built in {took:.1f} s"
                print(f"\n{kind} shards, N = {count:,} ({built})", flush=True)
                rows: dict[str, float] = {}
                peaks: dict[str, float] = {}
                for what in ("open", "list", "shards", "info", "info again", "validate", "chunks"):
                    command = what.removesuffix(" again")
                    if command in args.skip:
                        continue
                    extra = (str(root / "chunks"),) if what == "chunks" else ()
                    found = run(command, config, count, *extra)
                    if what != command:
                        found[what] = found.pop(command)
                    peaks[what] = found.pop("rss MB")
                    rows.update(found)
                for name, seconds in rows.items():
                    per = seconds / count * 1e6
                    print(f"  {name:<10} {seconds:9.3f} s  {per:9.1f} us/shard")
                print("  peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
                if args.layouts is None:
                    shutil.rmtree(root)  # made here, below the scratch directory
                else:
                    shutil.rmtree(root / "chunks", ignore_errors=True)  # made by "chunks"


if __name__ == "__main__":
    main()
