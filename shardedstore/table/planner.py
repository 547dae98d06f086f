"""The public planner: picklable per-shard tasks for any engine, and ``map_chunks``.

``chunk_tasks(store)`` is the plan the chunk table runs: one :class:`ChunkTask` per
shard and array whose chunks it holds. A task lists its shard's chunks without reading
them (:meth:`ChunkTask.stored_chunks`), computes its rows of the chunk table
(:meth:`ChunkTask.table`) or runs any function on each chunk's values
(:meth:`ChunkTask.map`), wherever it is unpickled: a thread or process pool, a dask
cluster, Spark executors (:mod:`shardedstore.spark`). ``map_chunks`` runs the last on
an executor and gathers one table; ``chunk_table_schema`` is the schema every task's
table has, for engines that want it before anything runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.store import Store

from shardedstore.errors import MapChunksError
from shardedstore.table.chunks import (
    as_layout,
    hierarchy_arrays,
    plan_tasks,
    require_pyarrow,
    run_tasks,
)
from shardedstore.table.stats import Histogram, parse_stats, table_schema
from shardedstore.table.tasks import ChunkTask, identity_schema

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["chunk_table_schema", "chunk_tasks", "map_chunks"]


def chunk_tasks(
    store: Store,
    arrays: Iterable[str] | str | None = None,
    *,
    stats: Iterable[str] | str | None = (),
    histogram: Histogram | None = None,
) -> list[ChunkTask]:
    """The plan of the chunk table: one task per shard and array whose chunks it holds.

    Only the arrays' metadata is read and the array shards' locations listed (as
    :meth:`ShardedStore.shards` does); no shard is read. Each task pickles, so that any
    engine can run it where it likes.

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy (or one array).
    arrays
        Array paths (default: every array of the hierarchy).
    stats, histogram
        The statistics each task's table holds, as for :func:`chunk_table`.

    Returns
    -------
    list of ChunkTask
        Those of base and mounts by array path, then array shards by array path and
        chunk index.

    Examples
    --------
    >>> from concurrent.futures import ProcessPoolExecutor  # doctest: +SKIP
    >>> with ProcessPoolExecutor() as pool:  # doctest: +SKIP
    ...     tables = list(pool.map(ChunkTask.table, chunk_tasks(store, stats="max")))
    """
    require_pyarrow()
    return list(plan_tasks(store, arrays, parse_stats(stats, histogram)).tasks)


def chunk_table_schema(
    store: Store,
    *,
    stats: Iterable[str] | str | None = (),
    histogram: Histogram | None = None,
) -> pa.Schema:
    """The schema of the chunk table of ``store``, whichever arrays are tabled.

    One schema per layout: as many ``c``/``start``/``stop`` columns as the deepest array
    of the hierarchy has dimensions, then the statistics asked for. Only the arrays'
    metadata is read.

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy.
    stats, histogram
        As for :func:`chunk_table`.

    Returns
    -------
    pyarrow.Schema
    """
    require_pyarrow()
    options = parse_stats(stats, histogram)
    found = hierarchy_arrays(as_layout(store))
    ndim = max((len(array.shape) for array in found.values()), default=0)
    return table_schema(ndim, options)


def _map_one(task: ChunkTask, func: Callable[[np.ndarray[Any, Any]], Any]) -> pa.Table:
    return task.map(func)


def map_chunks(
    store: Store,
    func: Callable[[np.ndarray[Any, Any]], Any],
    arrays: Iterable[str] | str | None = None,
    executor: Executor | None = None,
    *,
    progress: bool | None = None,
) -> pa.Table:
    """Run ``func`` on the values of every stored chunk, shard by shard, as one table.

    Each task (see :func:`chunk_tasks`) reads its shard's chunks, a few at a time, and
    calls ``func`` with each chunk's decoded values (its region of the array, an edge
    chunk clipped to the shape, as zarr returns them: CF encodings are not applied).

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy (or one array).
    func
        ``func(values)`` returns a mapping of column name to value (a number, a string,
        a list such as histogram counts), or one value for a column named ``value``.
        It must pickle for a process pool or a cluster (a module-level function, or
        ``functools.partial`` of one).
    arrays
        Array paths (default: every array of the hierarchy).
    executor
        Any ``concurrent.futures.Executor``; default: a thread pool.
    progress
        Show a progress bar (tqdm). Default: on a terminal, for runs over a second.

    Returns
    -------
    pyarrow.Table
        The chunk table's identity columns (``array``, ``shard_kind``, ``shard_path``,
        ``shard_index``, ``c0..``, ``start0..``, ``stop0..``, ``key``) and ``func``'s
        columns: one row per stored chunk, sorted by array and chunk indices.

    Raises
    ------
    MapChunksError
        Naming the shard and array that failed (and why).

    Examples
    --------
    >>> def features(values):  # doctest: +SKIP
    ...     return {"p90": float(np.nanpercentile(values, 90)), "hot": int((values > 30).sum())}
    >>> map_chunks(store, features, "temperature").to_pandas()  # doctest: +SKIP
    """
    require_pyarrow()
    import pyarrow as pa

    plan = plan_tasks(store, arrays, parse_stats(()))
    tables: list[pa.Table] = []

    def done(_: ChunkTask, table: pa.Table) -> None:
        tables.append(table)

    work = functools.partial(_map_one, func=func)
    run_tasks(plan.tasks, plan.count, executor, progress, done, work, "map_chunks", MapChunksError)
    tables = [table for table in tables if table.num_rows]
    if not tables:
        return identity_schema(plan.ndim).empty_table()
    table = pa.concat_tables(tables, promote_options="permissive")
    keys = [("array", "ascending")] + [(f"c{i}", "ascending") for i in range(plan.ndim)]
    return table.sort_by(keys)
