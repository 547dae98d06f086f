"""One row per stored chunk, with optional value statistics: ``chunk_table``.

The work splits by shard (:meth:`ShardedStore.shards`): for each shard and each array
whose chunks it holds, a task lists the chunk keys with their sizes and, when
statistics are asked for, reads and decodes those chunks, a few at a time, through
a read-only view of the shard's own keys (no symlinks followed, see
:mod:`shardedstore.shards.source`). Tasks run on any ``concurrent.futures.Executor``,
threads by default, as ``map_shards`` does, and send back a small Arrow table.

A task (:mod:`shardedstore.table.tasks`) fingerprints its shard first, so that an
unchanged shard is not read again: this is what makes ``write_chunk_table``
(:mod:`shardedstore.table.parquet`) incremental.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from zarr.abc.store import Store
from zarr.core.sync import sync

from shardedstore.errors import ArrayNotFoundError, ChunkTableError, MissingDependencyError
from shardedstore.shards.listing import index_key, iter_shards
from shardedstore.store.opencheck import check_base_exists
from shardedstore.store.routing import ARRAY_METADATA, MOUNT
from shardedstore.store.sharded import ShardedStore
from shardedstore.table.batch import BatchFailure, batchable, lanes, run_batch
from shardedstore.table.stats import (
    Histogram,
    StatsOptions,
    fill_stats,
    parse_stats,
    read_fill_value,
    table_schema,
)
from shardedstore.table.tasks import (
    ArraySpec,
    ChunkTask,
    TableResult,
    key_format,
    run_task,
    storage_chunks,
    to_table,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from shardedstore.shards.listing import Shard
    from shardedstore.store.sharded import ShardedStore

R = TypeVar("R")

__all__ = [
    "ArrayNotFoundError",
    "ChunkTableError",
    "MissingDependencyError",
    "TablePlan",
    "as_layout",
    "chunk_table",
    "hierarchy_arrays",
    "holder",
    "iter_tasks",
    "missing_rows",
    "plan_tasks",
    "require_pyarrow",
    "run_tasks",
    "select_arrays",
    "stored_coords",
    "tasks_for",
]


def require_pyarrow() -> None:
    """Fail in one line when pyarrow is missing."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            'chunk tables need pyarrow: pip install "shardedstore[table]"'
        ) from None


# ---------------------------------------------------------------- the plan


def as_layout(store: Store) -> ShardedStore:
    """``store`` as a layout: any zarr store is a layout with only a base."""

    if isinstance(store, ShardedStore):
        return store
    if not isinstance(store, Store):
        raise TypeError(
            f"chunk_table: expected a zarr store, got {type(store).__name__}; open a path "
            "with zarr.storage.LocalStore(path) or a layout with shardedstore.open(config)"
        )
    return ShardedStore(store, read_only=True)


def hierarchy_arrays(layout: ShardedStore) -> dict[str, Any]:
    """Array path -> zarr Array, for every array of the hierarchy, by path."""
    import warnings

    import zarr
    from zarr.errors import NodeNotFoundError

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        try:
            node = zarr.open(layout.with_read_only(True), mode="r")
        except NodeNotFoundError:
            check_base_exists(layout)  # a missing base, named as such
            raise
        if isinstance(node, zarr.Array):
            found: dict[str, Any] = {"": node}
        else:
            found = {
                path: member
                for path, member in node.members(max_depth=None)
                if isinstance(member, zarr.Array)
            }
    return dict(sorted(found.items()))


def select_arrays(found: dict[str, Any], wanted: Iterable[str] | str | None) -> dict[str, Any]:
    """The arrays named (all of them for None); an unknown name raises, listing the rest."""
    if wanted is None:
        return found
    names = [name.strip("/") for name in ([wanted] if isinstance(wanted, str) else wanted)]
    unknown = [name for name in names if name not in found]
    if unknown:
        shown = ", ".join(sorted(found)[:10]) or "none"
        raise ArrayNotFoundError(
            f"no array {', '.join(map(repr, unknown))} in the hierarchy; its arrays: {shown}"
        )
    return {name: found[name] for name in sorted(set(names))}


def holder(layout: ShardedStore, path: str) -> tuple[str, str]:
    """``("base" | "mount" | "array shards", node)``: where the chunks of ``path`` are."""

    kind, node = layout.router.route(f"{path}/zarr.json" if path else "zarr.json")[:2]
    if kind == MOUNT:
        return "mount", node
    if kind == ARRAY_METADATA:
        return "array shards", node
    return "base", ""


@dataclass
class TablePlan:
    """The arrays of a chunk table and its tasks, made as they are reached (10^6 shards
    are never all held): ``tasks`` is iterated once, ``count`` is how many at most."""

    tasks: Iterator[ChunkTask]
    count: int
    arrays: dict[str, Any]
    ndim: int


def plan_tasks(
    store: Store,
    arrays: Iterable[str] | str | None,
    options: StatsOptions,
    skip: Callable[[Shard, ArraySpec], bool] | None = None,
) -> TablePlan:
    """One task per shard and array whose chunks it holds.

    The table has as many ``c``/``start``/``stop`` columns as the deepest array of the
    whole hierarchy has dimensions, whichever arrays are asked for: one schema per
    layout, so that files written for some arrays read together with the others'.
    ``skip(shard, array)``, asked before an array shard's task is made: True leaves it
    out (the caller has its rows already).
    """

    layout = as_layout(store)
    every = hierarchy_arrays(layout)
    found = select_arrays(every, arrays)
    ndim = max((len(array.shape) for array in every.values()), default=0)
    count, tasks = iter_tasks(layout, found, options, ndim, skip)
    return TablePlan(tasks, count, found, ndim)


def tasks_for(
    layout: ShardedStore, found: dict[str, Any], options: StatsOptions, ndim: int
) -> list[ChunkTask]:
    """The tasks of the arrays ``found`` (path -> zarr Array): the shards are listed
    afresh (array shards written since show)."""
    return list(iter_tasks(layout, found, options, ndim)[1])


def iter_tasks(
    layout: ShardedStore,
    found: dict[str, Any],
    options: StatsOptions,
    ndim: int,
    skip: Callable[[Shard, ArraySpec], bool] | None = None,
) -> tuple[int, Iterator[ChunkTask]]:
    """How many tasks :func:`tasks_for` gives at most, and those tasks, each made when
    reached: the tasks of base and mounts (by array path), then the array shards (by
    array path and chunk index)."""
    listing, shards = sync(iter_shards(layout))
    holders = {path: holder(layout, path) for path in found}
    count = sum(
        listing.arrays[node].count if kind == "array shards" else 1
        for kind, node in holders.values()
    )
    grids = {path: (storage_chunks(a), key_format(a.metadata)) for path, a in found.items()}

    def head(owners: dict[str | None, Shard]) -> Iterator[ChunkTask]:
        for path, (kind, node) in holders.items():
            if kind == "array shards":
                continue
            owner = owners[node if kind == "mount" else None]
            inner = path[len(node) + 1 :] if kind == "mount" and path != node else ""
            if kind == "base":
                inner = path
            spec = ArraySpec(path, inner, (), *grids[path])
            yield ChunkTask(
                owner.kind, owner.path, None, owner.store, owner.own_keys, spec, options, ndim
            )

    def tasks() -> Iterator[ChunkTask]:
        owners: dict[str | None, Shard] = {}
        for shard in shards:
            if shard.kind != "array shard":
                owners[shard.path if shard.kind == "mount" else None] = shard
                continue
            if owners:
                yield from head(owners)
                owners = {}
            path = shard.path
            if path not in grids or not shard.reachable:
                continue
            lead = index_key(shard.chunk_index or "")
            spec = ArraySpec(path, "", lead, *grids[path])
            if skip is not None and skip(shard, spec):
                continue
            yield ChunkTask(
                "array shard",
                path,
                shard.chunk_index,
                shard.store,
                shard.own_keys,
                spec,
                options,
                ndim,
            )
        if owners:
            yield from head(owners)

    return count, tasks()


# ---------------------------------------------------------------- running


def _progress_bar(progress: bool | None, total: int, desc: str) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="shard", desc=desc, delay=1.0 if progress is None else 0)


_BATCH = 256
"""Small array shards one worker call takes at most (see :mod:`shardedstore.table.batch`)."""

_WINDOW = 32
"""Worker calls submitted and not yet done, at most: the tasks held at once are bounded."""


def _units(tasks: Iterable[ChunkTask], batched: bool, count: int) -> Iterator[list[ChunkTask]]:
    """The tasks each worker call runs: batches of array shards in directories or zips
    (at least 32 calls of ``count`` tasks, to keep every worker busy), others alone."""
    if not batched:
        yield from ([task] for task in tasks)
        return
    size = max(1, min(_BATCH, count // 32))
    unit: list[ChunkTask] = []
    for task in tasks:
        if not batchable(task):
            yield [task]
            continue
        unit.append(task)
        if len(unit) == size:
            yield unit
            unit = []
    if unit:
        yield unit


def _run_unit(
    work: Callable[[ChunkTask], R] | None,
    tasks: list[ChunkTask],
    gate: threading.Semaphore | None = None,
    stop: threading.Event | None = None,
) -> list[R]:
    """One worker call: a batch of chunk-table tasks, or one task of ``work``."""
    if work is None:
        if len(tasks) == 1 and not batchable(tasks[0]):
            try:
                return [run_task(tasks[0])]  # type: ignore[list-item]
            except Exception as error:
                raise BatchFailure(0, error) from error
        return run_batch(tasks, gate, stop)  # type: ignore[return-value]
    try:
        return [work(task) for task in tasks]
    except Exception as error:
        raise BatchFailure(0, error) from error


def run_tasks(
    tasks: Iterable[ChunkTask],
    count: int,
    executor: Executor | None,
    progress: bool | None,
    done: Callable[[ChunkTask, R], None],
    work: Callable[[ChunkTask], R] | None = None,
    desc: str = "chunk table",
    failed: type[ChunkTableError] = ChunkTableError,
) -> None:
    """Run ``work`` on every task (default: its chunk-table rows, small shards in
    batches); ``done`` is called in this thread as each one finishes.

    ``tasks`` are taken as workers are free (at most ``_WINDOW`` calls wait), so that a
    plan of 10^6 shards is never held whole; ``count``: how many there are at most.
    """
    own_executor = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, min(8, count)))
    bar = _progress_bar(progress, count, desc)
    futures: dict[Future[list[R]], list[ChunkTask]] = {}
    finished = 0
    threads = isinstance(pool, ThreadPoolExecutor) and work is None
    gate: threading.Semaphore | None = None
    stop: threading.Event | None = threading.Event() if threads else None
    laned = False  # whether the gate is decided (at the first batch)
    failure: tuple[ChunkTask, BaseException] | None = None
    try:
        units = _units(tasks, work is None, count)
        while True:
            while failure is None and len(futures) < _WINDOW:
                unit = next(units, None)
                if unit is None:
                    break
                if threads and not laned and batchable(unit[0]):
                    width = lanes(unit)
                    gate = None if width is None else threading.Semaphore(width)
                    laned = True
                futures[pool.submit(_run_unit, work, unit, gate, stop)] = unit
            if not futures:
                break
            for future in wait(futures, return_when=FIRST_COMPLETED).done:
                unit = futures.pop(future)  # its rows are the caller's now: not held
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None:
                    if failure is None:
                        if stop is not None:
                            stop.set()
                        if isinstance(error, BatchFailure):
                            failure = (unit[error.position], error.error)
                        else:
                            failure = (unit[0], error)
                        for other in futures:
                            other.cancel()  # those not started; running ones finish
                    continue
                for task, result in zip(unit, future.result(), strict=True):
                    done(task, result)
                finished += len(unit)
                if bar is not None:
                    bar.update(len(unit))
        if failure is not None:
            task, error = failure
            raise failed(task.shard, task.array.path, finished, count, error) from error
        if bar is not None and bar.total != finished:
            bar.total = finished  # shards beyond the array's shape are not tabled
            bar.refresh()
    except BaseException:
        if stop is not None:
            stop.set()
        for future in futures:
            future.cancel()
        running = [future for future in futures if not future.done()]
        if running:
            wait(running, timeout=10.0)
        raise
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            pool.shutdown(wait=True, cancel_futures=True)


def missing_rows(
    path: str,
    array: Any,
    present: set[tuple[int, ...]],
    ndim: int,
    options: StatsOptions,
    layout: ShardedStore,
) -> pa.Table:
    """Rows for the chunks of ``array`` that are not stored: they read as the fill value."""
    import itertools

    shape = tuple(int(n) for n in array.shape)
    chunks = storage_chunks(array)
    keys = key_format(array.metadata)
    grid = [range(-(-s // c) if c else 0) for s, c in zip(shape, chunks, strict=True)]
    kind, node = holder(layout, path)
    dims = layout.array_shards[node][0] if kind == "array shards" else 0
    spec = ArraySpec(path, "", (), chunks, keys)
    fill = read_fill_value(array.metadata)
    rows = []
    for coords in itertools.product(*grid):
        if coords in present:
            continue
        starts = [i * c for i, c in zip(coords, chunks, strict=True)]
        stops = [min((i + 1) * c, s) for i, c, s in zip(coords, chunks, shape, strict=True)]
        size = int(np.prod([b - a for a, b in zip(starts, stops, strict=True)]))
        index = ".".join(map(str, coords[:dims])) if dims else None
        full_key = spec.full_key(coords)
        if kind == "array shards":
            shard_key = keys.encode(coords[dims:])
        elif kind == "mount":
            shard_key = full_key[len(node) + 1 :]
        else:
            shard_key = full_key
        row: dict[str, Any] = {
            "array": path,
            "shard_kind": {"array shards": "array shard"}.get(kind, kind),
            "shard_path": node,
            "shard_index": index,
            "coords": coords,
            "starts": starts,
            "stops": stops,
            "key": full_key,
            "shard_key": shard_key,
            "exists": False,
            "nbytes": None,
        }
        if options.reads_values:
            row.update(fill_stats(array.dtype, fill, size, options))
        rows.append(row)
    return to_table(rows, ndim, options)


def stored_coords(table: pa.Table, ndim: int) -> set[tuple[int, ...]]:
    columns = [table.column(f"c{i}").to_pylist() for i in range(ndim)]
    return (
        {tuple(value for value in row if value is not None) for row in zip(*columns, strict=True)}
        if ndim
        else ({()} if table.num_rows else set())
    )


def _sorted(table: pa.Table, ndim: int) -> pa.Table:
    keys = [("array", "ascending")] + [(f"c{i}", "ascending") for i in range(ndim)]
    return table.sort_by(keys)


# ---------------------------------------------------------------- public API


def chunk_table(
    store: Store,
    arrays: Iterable[str] | str | None = None,
    *,
    stats: Iterable[str] | str | None = (),
    histogram: Histogram | None = None,
    missing: bool = False,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> pa.Table:
    """One row per stored chunk of every array (or those named), as an Arrow table.

    The work runs shard by shard (see :meth:`ShardedStore.shards`) on ``executor``;
    statistics read and decode each chunk, a few at a time per task. Any zarr store
    works: a store that is not a :class:`ShardedStore` is a layout with only a base.

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy (or one array).
    arrays
        Array paths to table (default: every array of the hierarchy).
    stats
        Any of ``min``, ``max``, ``mean``, ``std``, ``count``, ``nan_count``,
        ``fill_count`` (or ``"all"``), as a list or a comma-separated string. See
        :mod:`shardedstore.table.stats` for their exact meaning (NaN-aware, edge
        chunks clipped to the array's shape).
    histogram
        ``(lo, hi, bins)``: add a ``histogram`` column of counts in fixed bins.
    missing
        Also give a row (``exists`` false, statistics of the fill value) to each chunk
        of the grid that is not stored.
    executor
        Any ``concurrent.futures.Executor`` (a process pool, or a dask.distributed
        cluster through ``client.get_executor()``). Default: a thread pool.
    progress
        Show a progress bar (tqdm). Default: on a terminal, for runs over a second.

    Returns
    -------
    pyarrow.Table
        Columns ``array``, ``shard_kind`` (``base``, ``mount``, ``array shard``),
        ``shard_path``, ``shard_index``, ``c0..`` (chunk grid indices), ``start0..``
        and ``stop0..`` (the chunk's region), ``key`` (in the hierarchy),
        ``shard_key`` (in the shard's store), ``exists``, ``nbytes`` (stored bytes),
        ``zip_file``, ``zip_offset``, ``zip_length`` (for a chunk stored uncompressed in
        a zip: where its bytes are in the file), then the statistics asked for. Rows
        are sorted by array and chunk indices; arrays with fewer dimensions than the
        table leave the extra ``c``/``start``/``stop`` columns null.

    Raises
    ------
    MissingDependencyError
        Without pyarrow (``pip install "shardedstore[table]"``).
    ChunkTableError
        Naming the shard and array that failed.

    Examples
    --------
    >>> table = chunk_table(store, stats="min,max,mean")  # doctest: +SKIP
    >>> table.filter(pc.field("max") > 10).select(["array", "c0"])  # doctest: +SKIP
    """
    require_pyarrow()
    import pyarrow as pa

    options = parse_stats(stats, histogram)
    plan = plan_tasks(store, arrays, options)
    tables: list[pa.Table] = []

    def done(task: ChunkTask, result: TableResult) -> None:
        if result.table is not None:
            tables.append(result.table)

    run_tasks(plan.tasks, plan.count, executor, progress, done)
    schema = table_schema(plan.ndim, options)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if missing:
        layout = as_layout(store)
        extra = []
        for path, array in plan.arrays.items():
            mine = table.filter(pa.compute.equal(table.column("array"), path))
            extra.append(
                missing_rows(
                    path, array, stored_coords(mine, len(array.shape)), plan.ndim, options, layout
                )
            )
        table = pa.concat_tables([table, *extra])
    return _sorted(table, plan.ndim)
