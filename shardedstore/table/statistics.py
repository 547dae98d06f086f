"""Chunk statistics for pruning by value, never stale: from a chunk-table dataset or
computed as chunks are read, each checked against its shard's listing.

Before a scan filters on values, every shard of the array is listed (sizes and change
stamps, nothing read: see :mod:`shardedstore.table.tasks`; on local disk a shard listed
before is only ``lstat``-ed, see :mod:`shardedstore.table.freshness`), and a chunk's
``min``, ``max`` and ``nan_count`` are used only when they were computed from exactly
what that listing shows:

- **a written chunk table** (``statistics=DIR``, from :func:`write_chunk_table` with at
  least ``min`` and ``max``, and ``nan_count`` for floating-point arrays): each file
  records its shards' fingerprints; a shard whose fingerprint today differs (rewritten
  since) has no statistics from it. A file is parsed once and kept while its own stamp
  (size, mtime, ctime, inode: see :mod:`~shardedstore.table.freshness`) is unchanged;
- **computed incrementally** (the default, and for shards a chunk table does not cover):
  a scan that filters on values computes the statistics of every chunk it reads and
  keeps them in memory under the shard's fingerprint (:class:`StatisticsCache`), so the
  next query skips what this one read; a changed shard has a new fingerprint (a shard
  whose files changed just before it was listed is not kept: a change within the same
  tick of the file system's clock could leave its fingerprint as it was).

A chunk that is not stored reads as the fill value: its statistics are known without
reading (none for a NaN fill). Shards whose listing carries no change stamp (a memory
store, a nested layout) are never given statistics. A chunk without statistics is read.

What is known of an array is held as arrays over its chunk grid (:class:`ArrayStatistics`)
and kept for the next query while every shard's listing, every chunk-table file and the
in-memory cache are as they were.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from zarr.storage import LocalStore

from shardedstore.table.freshness import list_local_fresh, settled
from shardedstore.table.parquet import FINGERPRINTS, OPTIONS
from shardedstore.table.stats import StatsOptions, chunk_stats, parse_stats
from shardedstore.table.tasks import (
    ChunkTask,
    Listing,
    Stamp,
    fingerprint_of,
    list_for_fingerprint,
    listed_coords,
    run_on_task_loop,
    stamp_of,
)

__all__ = [
    "VALUE_OPTIONS",
    "ArrayStatistics",
    "ChunkBounds",
    "StatisticsCache",
    "array_statistics",
    "fill_bounds",
    "list_tasks",
]

VALUE_OPTIONS = StatsOptions(("min", "max", "nan_count"))
"""The statistics pruning by value needs, as the incremental cache computes them."""

ChunkBounds = tuple[float | None, float | None, int | None]
"""A chunk's ``(min, max, nan_count)``; None where unknown."""

_CACHE_CHUNKS = 1_000_000
"""Chunks whose statistics the in-memory cache holds at most (least recently used go)."""


class StatisticsCache:
    """Statistics of chunks read by scans, by shard fingerprint (thread-safe, bounded).

    ``version`` changes whenever what the cache holds may have (a scan storing the
    bounds the cache already holds leaves it as it is, so that what was built from the
    cache stays valid).
    """

    def __init__(self, limit: int = _CACHE_CHUNKS) -> None:
        self.limit = limit
        self.size = 0
        self.version = 0
        self.lock = threading.Lock()
        self.shards: OrderedDict[str, dict[tuple[int, ...], ChunkBounds]] = OrderedDict()

    def get(self, fingerprint: str) -> dict[tuple[int, ...], ChunkBounds]:
        with self.lock:
            found = self.shards.get(fingerprint)
            if found is None:
                return {}
            self.shards.move_to_end(fingerprint)
            return dict(found)

    def put(self, fingerprint: str, coords: tuple[int, ...], bounds: ChunkBounds) -> None:
        with self.lock:
            entry = self.shards.setdefault(fingerprint, {})
            self.shards.move_to_end(fingerprint)
            held = entry.get(coords)
            if held is None:
                self.size += 1
            if held is None or not _same(held, bounds):
                self.version += 1
                entry[coords] = bounds
            while self.size > self.limit and len(self.shards) > 1:
                _, dropped = self.shards.popitem(last=False)
                self.size -= len(dropped)
                self.version += 1

    def clear(self) -> None:
        with self.lock:
            self.shards.clear()
            self.size = 0
            self.version += 1


def _same(a: ChunkBounds, b: ChunkBounds) -> bool:
    """The same bounds: equal, or both NaN, value by value (and of the same type)."""
    return all(
        type(x) is type(y) and (x == y or (x != x and y != y))  # x != x: NaN
        for x, y in zip(a, b, strict=True)
    )


CACHE = StatisticsCache()
"""The process's cache of statistics computed by scans."""

_STORED: dict[tuple[str, tuple[int, ...], tuple[int, ...]], np.ndarray[Any, Any]] = {}
"""Flat chunk-grid positions of a shard's stored chunks, by its fingerprint, the array's
shape and chunks (parsed once, not at every query)."""

_STORED_SHARDS = 100_000


def bounds_of(data: np.ndarray[Any, Any], fill: Any) -> ChunkBounds:
    """The ``(min, max, nan_count)`` of a decoded chunk, as the chunk table computes them."""
    found = chunk_stats(data, fill, VALUE_OPTIONS)
    return found["min"], found["max"], found["nan_count"]


def fill_bounds(dtype: np.dtype[Any], fill: Any) -> ChunkBounds:
    """The bounds of a chunk that is not stored (every value the fill value)."""
    return bounds_of(np.full(1, fill, dtype=dtype), fill)


def _listing(task: ChunkTask) -> tuple[Listing | None, Hashable | None]:
    """A task's listing and a token that stays the same while its shard does (None:
    no token, the shard is listed afresh)."""
    if type(task.store) is LocalStore:
        return list_local_fresh(task)
    return run_on_task_loop(task, lambda: list_for_fingerprint(task)), None


def list_tasks(tasks: list[ChunkTask]) -> list[tuple[Listing | None, Hashable | None]]:
    """Each task's listing (nothing read) and its token; remote shards a few at a time."""
    if len(tasks) <= 1 or all(type(task.store) is LocalStore for task in tasks):
        return [_listing(task) for task in tasks]  # threads would only take turns
    with ThreadPoolExecutor(max_workers=min(8, len(tasks))) as pool:
        return list(pool.map(_listing, tasks))


def _flat(coords: np.ndarray[Any, Any], grid: tuple[int, ...]) -> np.ndarray[Any, Any]:
    """Flat (C-order) positions in ``grid`` of chunk indices (one row each)."""
    if not grid:
        return np.zeros(len(coords), dtype=np.intp)
    flat: np.ndarray[Any, Any] = np.ravel_multi_index(tuple(coords.T), grid)
    return flat


@dataclass(frozen=True)
class ArrayStatistics:
    """What pruning by value knows of one array's chunks, and how scans add to it.

    Read-only: the queries that find the array as it was share it.

    Attributes
    ----------
    grid
        The array's chunk grid; the arrays below hold one item per chunk, flat (C order).
    low, high
        Each chunk's minimum and maximum; NaN where unknown, or where the chunk holds
        (or may hold) NaNs: no guarantee.
    known
        Where a stored chunk's statistics are known (scans need not compute them).
    stored
        Where a chunk is stored (elsewhere it reads as the fill value).
    lead, fingerprints
        Each shard's fingerprint, by the ``lead`` first chunk indices (those its chunks
        share: none for a shard holding the whole array), for shards whose listing has
        stamps, none of them changed just before it was taken (see
        :func:`~shardedstore.table.freshness.settled`): a scan may keep the statistics of
        their chunks.
    cache
        Where scans keep the statistics they compute (None: nothing kept).
    """

    grid: tuple[int, ...]
    low: np.ndarray[Any, Any]
    high: np.ndarray[Any, Any]
    known: np.ndarray[Any, Any]
    stored: np.ndarray[Any, Any]
    lead: int
    fingerprints: dict[tuple[int, ...], str]
    cache: StatisticsCache | None

    def record(self, coords: tuple[int, ...], data: np.ndarray[Any, Any], fill: Any) -> None:
        """Keep the statistics of a chunk a scan read (if its shard can be cached)."""
        fingerprint = self.fingerprints.get(coords[: self.lead])
        if self.cache is None or fingerprint is None:
            return
        flat = int(_flat(np.array([coords], dtype=np.int64), self.grid)[0])
        if self.known[flat] or not self.stored[flat]:
            return
        self.cache.put(fingerprint, coords, bounds_of(data, fill))


def _file_options(metadata: dict[bytes, bytes]) -> tuple[StatsOptions, int] | None:
    try:
        found = json.loads(metadata[OPTIONS])
        options = parse_stats(found["stats"], found["histogram"])
        return options, int(found["columns"])
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class _TableFile:
    """What pruning takes from one chunk-table file: the fingerprint each shard's rows
    were computed from, and the rows (chunk indices, shard, min, max, nan_count)."""

    recorded: dict[str, str]
    options: StatsOptions
    columns: int
    coords: np.ndarray[Any, Any]
    shard_names: list[str]
    shard_codes: np.ndarray[Any, Any]
    low: np.ndarray[Any, Any]
    high: np.ndarray[Any, Any]
    nans: np.ndarray[Any, Any] | None

    def rows_of(self, shards: set[str]) -> np.ndarray[Any, Any]:
        """Where a row is of one of ``shards`` (by their ``shard_index``)."""
        chosen = np.fromiter((n in shards for n in self.shard_names), bool, len(self.shard_names))
        rows: np.ndarray[Any, Any] = chosen[self.shard_codes]
        return rows


def _floats(column: Any) -> np.ndarray[Any, Any]:
    """A column as float64, NaN where null."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


def _parse_file(path: str, ndim: int) -> _TableFile | None:
    import pyarrow.parquet as pq

    try:
        metadata = dict(pq.read_schema(path).metadata or {})
        recorded = json.loads(metadata.get(FINGERPRINTS, b"{}"))
    except (OSError, ValueError):
        return None  # not a chunk-table file this version wrote: no statistics from it
    options = _file_options(metadata)
    if options is None or not isinstance(recorded, dict):
        return None
    stats, columns = options
    if not {"min", "max"} <= set(stats.stats):
        return None
    names = [f"c{i}" for i in range(ndim)] + ["shard_index", "min", "max"]
    names += ["nan_count"] if "nan_count" in stats.stats else []
    try:
        table = pq.read_table(path, columns=names)
    except (OSError, ValueError):
        return None
    coords = (
        np.stack([_floats(table[f"c{i}"]) for i in range(ndim)], axis=1)
        if ndim
        else np.zeros((table.num_rows, 0))
    )
    whole = ~np.isnan(coords).any(axis=1)  # a row without its indices is of no use
    encoded = table["shard_index"].fill_null("").combine_chunks().dictionary_encode()
    return _TableFile(
        {str(k): str(v) for k, v in recorded.items()},
        stats,
        columns,
        coords[whole].astype(np.int64),
        [str(name) for name in encoded.dictionary.to_pylist()],
        np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.intp)[whole],
        _floats(table["min"])[whole],
        _floats(table["max"])[whole],
        _floats(table["nan_count"])[whole] if "nan_count" in stats.stats else None,
    )


_FILES: OrderedDict[tuple[str, int], tuple[Stamp, _TableFile | None]] = OrderedDict()
"""Chunk-table files parsed, with the stamp they had (kept while it is the same)."""

_FILES_KEPT = 64
_files_lock = threading.Lock()


def _table_files(
    directory: Path, path: str, ndim: int
) -> list[tuple[str, Stamp, _TableFile | None]]:
    """The array's files in a chunk-table directory, each with its stamp and contents."""
    partition = directory / f"array={quote(path, safe='')}"
    found = []
    for file in sorted(partition.glob("*.parquet")):
        name = os.fspath(file)
        started = time.time_ns()
        try:
            stamp = stamp_of(os.stat(name))
        except OSError:
            continue
        key = (name, ndim)
        with _files_lock:
            kept = _FILES.get(key)
        if kept is not None and kept[0] == stamp:
            found.append((name, stamp, kept[1]))
            continue
        parsed = _parse_file(name, ndim)
        found.append((name, stamp, parsed))
        if settled([stamp], started):  # else parsed again next time
            with _files_lock:
                _FILES[key] = (stamp, parsed)
                while len(_FILES) > _FILES_KEPT:
                    _FILES.popitem(last=False)
    return found


def _put(
    found: ArrayStatistics,
    flat: np.ndarray[Any, Any],
    low: np.ndarray[Any, Any],
    high: np.ndarray[Any, Any],
    nans: np.ndarray[Any, Any] | None,
) -> None:
    """Chunks' statistics into ``found`` (while it is being made)."""
    found.known[flat] = True
    usable = ~(np.isnan(low) | np.isnan(high))
    if nans is not None:
        usable &= nans == 0  # NaN rows fall outside any range: no guarantee
    found.low[flat[usable]] = low[usable]
    found.high[flat[usable]] = high[usable]


def _newest(listing: Listing) -> int:
    """The newest time stamp of a listing's keys (0: none; stamps that are not times,
    ETags or crc32, change with the content)."""
    newest = 0
    for _, stamp in listing.keys.values():
        parts = stamp.split(":")  # file_stamp: "mtime_ns:ctime_ns:inode"
        if len(parts) == 3 and all(part.isdigit() for part in parts):
            newest = max(newest, int(parts[0]), int(parts[1]))
    return newest


_DERIVED: OrderedDict[Hashable, Any] = OrderedDict()
"""What a local listing's keys give (fingerprints, newest stamp), by its token (the walk
it came from: the same token, the same keys) and what else it was computed from. Every
query lists every shard; their walks rarely change, so neither do these."""

_DERIVED_KEPT = 400_000
_derived_lock = threading.Lock()


def _derived(key: Hashable | None, compute: Any) -> Any:
    """``compute()``, kept under ``key`` (None: computed, not kept)."""
    if key is None:
        return compute()
    with _derived_lock:
        if key in _DERIVED:
            return _DERIVED[key]
    value = compute()
    with _derived_lock:
        _DERIVED[key] = value
        while len(_DERIVED) > _DERIVED_KEPT:
            _DERIVED.popitem(last=False)
    return value


def _settled(listing: Listing, token: Hashable | None, own: Any, started: int) -> bool:
    """Whether no file of a local listing changed less than ``RACY_NS`` before it was
    listed (at ``started``): then a change made since shows in the listing, and what a
    scan computes from its chunks may be kept under its fingerprint."""
    key = None if token is None else ("newest", token, own)
    newest = _derived(key, lambda: _newest(listing))
    return settled([(0, newest, newest, 0)], started)


def _fingerprint(
    task: ChunkTask,
    listing: Listing,
    token: Hashable | None,
    options: StatsOptions,
    columns: int,
) -> str | None:
    """:func:`fingerprint_of` the task asking for ``options`` in a table of ``columns``
    index columns (kept by the listing's token)."""
    key = None
    if token is not None:
        key = ("fingerprint", token, task.own_keys, task.array, options, columns)
    return _derived(  # type: ignore[no-any-return]
        key,
        lambda: fingerprint_of(
            dataclasses.replace(task, options=options, ndim_columns=columns), listing
        ),
    )


def _stored(
    task: ChunkTask, listing: Listing, fingerprint: str | None, shape: tuple[int, ...],
    grid: tuple[int, ...],
) -> np.ndarray[Any, Any]:  # fmt: skip
    key = (fingerprint, shape, task.array.chunks) if fingerprint is not None else None
    flat = _STORED.get(key) if key is not None else None
    if flat is None:
        coords = listed_coords(task, listing, shape)
        flat = _flat(np.array(coords, dtype=np.int64).reshape(len(coords), len(shape)), grid)
        if key is not None:
            _STORED[key] = flat
            while len(_STORED) > _STORED_SHARDS:
                _STORED.pop(next(iter(_STORED)))
    return flat


def _build(
    tasks: list[ChunkTask],
    listed: list[tuple[Listing | None, Hashable | None]],
    grid: tuple[int, ...],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    fill: Any,
    files: list[tuple[str, Stamp, _TableFile | None]],
    cache: StatisticsCache | None,
    started: int,
) -> ArrayStatistics:
    count = math.prod(grid)
    found = ArrayStatistics(
        grid,
        np.full(count, np.nan),
        np.full(count, np.nan),
        np.zeros(count, dtype=bool),
        np.zeros(count, dtype=bool),
        len(tasks[0].array.lead) if tasks else 0,
        {},
        cache,
    )
    by_shard: dict[str, tuple[ChunkTask, Listing, Hashable | None]] = {}
    for task, (listing, token) in zip(tasks, listed, strict=True):
        if listing is None:
            continue  # no such shard: its chunks read as the fill value
        fingerprint = _fingerprint(task, listing, token, VALUE_OPTIONS, task.ndim_columns)
        found.stored[_stored(task, listing, fingerprint, shape, grid)] = True
        if fingerprint is None:
            continue
        if _settled(listing, token, task.own_keys, started):
            found.fingerprints[task.array.lead] = fingerprint  # scans may add to the cache
        by_shard[task.shard_index or ""] = (task, listing, token)
        computed = cache.get(fingerprint) if cache is not None else {}
        if computed:
            coords = np.array(list(computed), dtype=np.int64).reshape(len(computed), len(shape))
            bounds = np.array(list(computed.values()), dtype=np.float64)  # None: NaN
            _put(found, _flat(coords, grid), bounds[:, 0], bounds[:, 1], bounds[:, 2])
    floating = dtype.kind in "fc"
    for _, _, table in files:
        if table is None or (floating and table.nans is None):
            continue  # NaNs unknown in a floating-point array: no guarantee
        verified = {
            key
            for key, fingerprint in table.recorded.items()
            if key in by_shard
            and fingerprint == _fingerprint(*by_shard[key], table.options, table.columns)
        }
        if not verified:
            continue
        rows = table.rows_of(verified)
        rows &= ((table.coords >= 0) & (table.coords < np.array(grid, dtype=np.int64))).all(1)
        nans = None if table.nans is None else table.nans[rows]
        _put(found, _flat(table.coords[rows], grid), table.low[rows], table.high[rows], nans)
    minimum, maximum, nans_missing = fill_bounds(dtype, fill)
    if minimum is not None and maximum is not None and nans_missing == 0:
        found.low[~found.stored] = minimum
        found.high[~found.stored] = maximum
    for array in (found.low, found.high, found.known, found.stored):
        array.setflags(write=False)
    return found


_MEMO: OrderedDict[Hashable, ArrayStatistics] = OrderedDict()
"""What was known of arrays, by everything it was made from (see :func:`array_statistics`)."""

_MEMO_CHUNKS = 4_000_000
_memo_lock = threading.Lock()


def _remember(key: Hashable, found: ArrayStatistics) -> None:
    with _memo_lock:
        _MEMO[key] = found
        while len(_MEMO) > 1 and sum(m.low.size for m in _MEMO.values()) > _MEMO_CHUNKS:
            _MEMO.popitem(last=False)


def array_statistics(
    tasks: list[ChunkTask],
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: np.dtype[Any],
    fill: Any,
    dataset: Path | None,
    cache: StatisticsCache | None,
) -> ArrayStatistics:
    """What is known today of the chunks of one array (its tasks: one per shard).

    Every shard is listed (on local disk, a shard listed before is ``lstat``-ed) and
    every chunk-table file's stamp taken; when all are as they were, and the cache holds
    what it held, what was known then is known now (nothing else is computed).

    Parameters
    ----------
    tasks
        The array's tasks (:func:`shardedstore.chunk_tasks`).
    shape, chunks, dtype, fill
        The array's shape, chunk shape, dtype and the value its missing chunks read as.
    dataset
        A chunk-table directory to take statistics from (checked), or None.
    cache
        Where scans keep the statistics they compute (None: nothing kept, nothing used).
    """
    grid = tuple(-(-s // c) if c else 0 for s, c in zip(shape, chunks, strict=True))
    started = time.time_ns()
    listed = list_tasks(tasks)
    files = []
    if dataset is not None and tasks:
        files = _table_files(dataset, tasks[0].array.path, len(shape))
    key: Hashable = None
    tokens = [
        (task.shard_index, task.own_keys, token)
        for task, (_, token) in zip(tasks, listed, strict=True)
    ]
    if all(token is not None for _, _, token in tokens):
        key = (
            tasks[0].array.path if tasks else None,
            shape,
            chunks,
            dtype.str,
            repr(fill),
            tuple(tokens),
            tuple((name, stamp) for name, stamp, _ in files),
            None if cache is None else (id(cache), cache.version),
        )
        with _memo_lock:
            found = _MEMO.get(key)
            if found is not None:
                _MEMO.move_to_end(key)
                return found
    found = _build(tasks, listed, grid, shape, dtype, fill, files, cache, started)
    if key is not None:
        _remember(key, found)
    return found
