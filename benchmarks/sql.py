"""SQL over array values: our DuckDB values table against xarray-sql; pruning by chunk
statistics; Spark map_chunks against chunk_table on threads.

One layout, written once: a float32 array ``temperature`` (time 256, y 256, x 400: 105 MB
of values), chunks (1, 64, 80), array-sharded on time (256 array shards, 5,120 chunks,
zstd), with coordinates. Every value is below 40 but in 10 chunks (0.2%), which hold a
cell at 45. Rounds are interleaved; each figure is the median of its rounds (garbage
collected before each timed call).

1. **Full scan**, ``SELECT time, avg(temperature), max(temperature) FROM temperature
   GROUP BY time``:
   - ours: ``shardedstore.sql(store, query)`` (DuckDB over the values table, the layout
     opened and registered in the timed call);
   - baseline: ``xarray_sql.XarrayContext`` over the same layout opened with xarray
     (``xr.open_dataset(layout.json, engine="shardedstore", chunks={})``), the same query
     in DataFusion (xarray-sql's engine).
   Ratio: ours / xarray-sql (target <= 1.0).
2. **Selective**, ``SELECT time_index, y_index, x_index FROM temperature WHERE
   temperature > 40`` (10 of 5,120 chunks can match): ``sql(..., statistics=DIR)`` (a
   chunk table written with ``--stats min,max,nan_count``, not timed) and the same call a
   second time with statistics computed by the first scan, against ``statistics=False``
   (every chunk read). Ratio: without / with (target >= 50).
3. **Per-chunk max on Spark** (``local[2]``, the session started before timing):
   ``spark.read.format("shardedstore").option("table", "map").option("function",
   "max")`` collected, against ``chunk_table(store, stats="max")`` on a 2-thread pool.
   Reported (Spark pays its Python workers and Arrow hops; it is there to scale out).

Needs ``pip install -e ".[bench]"`` (DuckDB, DataFusion, xarray-sql, pyspark) and Java
for Spark (skipped, with the reason, without it).

Usage: python benchmarks/sql.py [--rounds 3] [--no-spark]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from zarr.storage import LocalStore

from shardedstore import (
    ShardedStore,
    array_shard_directory_store,
    chunk_table,
    sql,
    write_chunk_table,
)

SHAPE = (256, 256, 400)
CHUNKS = (1, 64, 80)
HOT_CHUNKS = 10
FULL = (
    "SELECT time, avg(temperature) AS mean, max(temperature) AS hottest "
    "FROM temperature GROUP BY time ORDER BY time"
)
SELECTIVE = "SELECT time_index, y_index, x_index FROM temperature WHERE temperature > 40"


def build(root: Path) -> tuple[ShardedStore, Path, list[tuple[int, int, int]]]:
    """The layout, its config, and the hot cells (one per hot chunk)."""
    store = ShardedStore(
        LocalStore(root / "base.zarr"),
        {},
        {"temperature": (1, array_shard_directory_store(root / "temperature"))},
    )
    rng = np.random.default_rng(0)
    grid = [s // c for s, c in zip(SHAPE, CHUNKS, strict=True)]
    chosen = rng.choice(int(np.prod(grid)), size=HOT_CHUNKS, replace=False)
    hot = []
    for flat in sorted(chosen):
        index = np.unravel_index(flat, grid)
        hot.append(tuple(int(i * c + c // 2) for i, c in zip(index, CHUNKS, strict=True)))
    coords = {
        "time": pd.date_range("2000-01-01", periods=SHAPE[0], freq="D"),
        "y": np.linspace(-60, 60, SHAPE[1]),
        "x": np.linspace(0, 360, SHAPE[2], endpoint=False),
    }
    data = np.clip(rng.normal(15, 8, size=SHAPE), -30, 39).astype("f4")
    for cell in hot:
        data[cell] = 45.0
    xr.Dataset({"temperature": (("time", "y", "x"), data)}, coords=coords).to_zarr(
        store, encoding={"temperature": {"chunks": CHUNKS}}, consolidated=False, mode="w"
    )
    store.save_config(root / "layout.json")
    return store, root / "layout.json", hot


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    """``func()`` and its time, after collecting garbage: what the step before left (a
    dask graph of xarray-sql's, say) is not collected on the next step's clock."""
    gc.collect()
    start = time.perf_counter()
    result = func()
    return time.perf_counter() - start, result


def xarray_sql_full(config: Path) -> Any:
    import xarray_sql

    ds = xr.open_dataset(config, engine="shardedstore", chunks={}, consolidated=False)
    context = xarray_sql.XarrayContext()
    context.from_dataset("temperature", ds)
    return context.sql(FULL).to_arrow_table()


def spark_session() -> Any:
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        print("spark: skipped (no Java on PATH or JAVA_HOME)")
        return None
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        print('spark: skipped (pip install "shardedstore[spark]")')
        return None
    import shardedstore.spark

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    shardedstore.spark.register(session)
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-sql-"))
    try:
        build_time, (store, config, hot) = timed(lambda: build(root))
        stored = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
        chunks = int(np.prod([s // c for s, c in zip(SHAPE, CHUNKS, strict=True)]))
        print(
            f"layout: {np.prod(SHAPE) * 4 / 1e6:.0f} MB of float32 values, {chunks} chunks in "
            f"{SHAPE[0]} array shards, {stored / 1e6:.0f} MB stored; built in {build_time:.0f} s"
        )
        stats_dir = root / "chunks"
        # A chunk table keeps the stamps of files at least 3 s old: those written less
        # than that before it are read again by the next run and their statistics are
        # not used by queries (racy timestamps, see the user guide). Write it as users
        # do, after the data has settled.
        time.sleep(3.5)
        stats_time, _ = timed(
            lambda: write_chunk_table(store, stats_dir, stats="min,max,nan_count", progress=False)
        )
        print(f"chunk table with min,max,nan_count written in {stats_time:.1f} s (not timed below)")
        session = None if args.no_spark else spark_session()

        times: dict[str, list[float]] = {}
        expected = sorted(hot)
        reference = None
        for _ in range(args.rounds):
            elapsed, ours = timed(lambda: sql(store, FULL))
            times.setdefault("full: ours (DuckDB)", []).append(elapsed)
            elapsed, theirs = timed(lambda: xarray_sql_full(config))
            times.setdefault("full: xarray-sql", []).append(elapsed)
            if reference is None:
                reference = ours.column("hottest").to_numpy()
                np.testing.assert_allclose(theirs.column("hottest").to_numpy(), reference)

            for label, kwargs in (
                ("selective: no statistics", {"statistics": False}),
                ("selective: statistics from the chunk table", {"statistics": stats_dir}),
                ("selective: statistics computed (2nd query)", {}),
            ):
                if kwargs == {}:
                    sql(store, SELECTIVE)  # the first scan computes them
                elapsed, found = timed(lambda kw=kwargs: sql(store, SELECTIVE, **kw))
                got = sorted(zip(*(found.column(i).to_pylist() for i in range(3)), strict=True))
                assert got == expected, (label, got)
                times.setdefault(label, []).append(elapsed)

            with ThreadPoolExecutor(2) as pool:
                elapsed, table = timed(
                    lambda pool=pool: chunk_table(store, stats="max", executor=pool, progress=False)
                )
            times.setdefault("per-chunk max: chunk_table, 2 threads", []).append(elapsed)
            if session is not None:
                reader = (
                    session.read.format("shardedstore")
                    .option("table", "map")
                    .option("function", "max")
                )
                elapsed, rows = timed(lambda r=reader: r.load(str(config)).collect())
                assert len(rows) == table.num_rows
                times.setdefault("per-chunk max: Spark map, local[2]", []).append(elapsed)

        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"medians of {args.rounds} rounds:")
        for name, value in med.items():
            rounds = ", ".join(f"{v:.3f}" for v in times[name])
            print(f"  {name:48s} {value:8.3f} s  (rounds: {rounds})")
        full = med["full: ours (DuckDB)"] / med["full: xarray-sql"]
        print(f"full scan, ours / xarray-sql: {full:.2f}x (target <= 1.0)")
        none = med["selective: no statistics"]
        for label in (
            "selective: statistics from the chunk table",
            "selective: statistics computed (2nd query)",
        ):
            print(f"{label.split(': ')[1]}: {none / med[label]:.0f}x faster (target >= 50)")
        if "per-chunk max: Spark map, local[2]" in med:
            ratio = (
                med["per-chunk max: Spark map, local[2]"]
                / (med["per-chunk max: chunk_table, 2 threads"])
            )
            print(f"per-chunk max, Spark / chunk_table on threads: {ratio:.2f}x (reported)")
        if session is not None:
            session.stop()
    finally:
        if root.name.startswith("shardedstore-bench-sql-"):
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
