"""Chunk statistics for pruning by value, never stale: from a chunk-table dataset or
computed as chunks are read, each checked against its shard's listing.

Before a scan filters on values, every shard of the array is listed (sizes and change
stamps, nothing read: see :mod:`shardedstore.table.tasks`), and a chunk's ``min``,
``max`` and ``nan_count`` are used only when they were computed from exactly what that
listing shows:

- **a written chunk table** (``statistics=DIR``, from :func:`write_chunk_table` with at
  least ``min`` and ``max``, and ``nan_count`` for floating-point arrays): each file
  records its shards' fingerprints; a shard whose fingerprint today differs (rewritten
  since) has no statistics from it;
- **computed incrementally** (the default, and for shards a chunk table does not cover):
  a scan that filters on values computes the statistics of every chunk it reads and
  keeps them in memory under the shard's fingerprint (:class:`StatisticsCache`), so the
  next query skips what this one read; a changed shard has a new fingerprint.

A chunk that is not stored reads as the fill value: its statistics are known without
reading (none for a NaN fill). Shards whose listing carries no change stamp (a memory
store, a nested layout) are never given statistics. A chunk without statistics is read.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from zarr.storage import LocalStore

from shardedstore.table.parquet import FINGERPRINTS, OPTIONS
from shardedstore.table.stats import StatsOptions, chunk_stats, parse_stats
from shardedstore.table.tasks import (
    ChunkTask,
    Listing,
    fingerprint_of,
    list_for_fingerprint,
    list_local,
    listed_coords,
    run_on_task_loop,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "VALUE_OPTIONS",
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
    """Statistics of chunks read by scans, by shard fingerprint (thread-safe, bounded)."""

    def __init__(self, limit: int = _CACHE_CHUNKS) -> None:
        self.limit = limit
        self.size = 0
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
            if coords not in entry:
                self.size += 1
            entry[coords] = bounds
            while self.size > self.limit and len(self.shards) > 1:
                _, dropped = self.shards.popitem(last=False)
                self.size -= len(dropped)

    def clear(self) -> None:
        with self.lock:
            self.shards.clear()
            self.size = 0


CACHE = StatisticsCache()
"""The process's cache of statistics computed by scans."""

_COORDS: dict[tuple[str, tuple[int, ...]], list[tuple[int, ...]]] = {}
"""Stored chunks of a shard by its fingerprint (parsed once, not at every query)."""

_COORDS_SHARDS = 100_000


def bounds_of(data: np.ndarray[Any, Any], fill: Any) -> ChunkBounds:
    """The ``(min, max, nan_count)`` of a decoded chunk, as the chunk table computes them."""
    found = chunk_stats(data, fill, VALUE_OPTIONS)
    return found["min"], found["max"], found["nan_count"]


def fill_bounds(dtype: np.dtype[Any], fill: Any) -> ChunkBounds:
    """The bounds of a chunk that is not stored (every value the fill value)."""
    return bounds_of(np.full(1, fill, dtype=dtype), fill)


def _listing(task: ChunkTask) -> Listing | None:
    if type(task.store) is LocalStore:
        return list_local(task)
    return run_on_task_loop(task, lambda: list_for_fingerprint(task))


def list_tasks(tasks: list[ChunkTask]) -> list[Listing | None]:
    """Each task's listing (nothing read); remote shards a few at a time."""
    if len(tasks) <= 1 or all(type(task.store) is LocalStore for task in tasks):
        return [_listing(task) for task in tasks]  # threads would only take turns
    with ThreadPoolExecutor(max_workers=min(8, len(tasks))) as pool:
        return list(pool.map(_listing, tasks))


@dataclass
class ArrayStatistics:
    """What pruning by value knows of one array's chunks, and how scans add to it.

    Attributes
    ----------
    bounds
        Chunk indices -> ``(min, max, nan_count)``, for every chunk known.
    fingerprints
        Chunk indices of a stored chunk -> its shard's fingerprint, for chunks a scan may
        compute statistics of (their shard's listing has stamps).
    """

    bounds: dict[tuple[int, ...], ChunkBounds] = field(default_factory=dict)
    fingerprints: dict[tuple[int, ...], str] = field(default_factory=dict)
    cache: StatisticsCache | None = None
    stored: set[tuple[int, ...]] = field(default_factory=set)
    missing: ChunkBounds | None = None

    def get(self, coords: tuple[int, ...]) -> ChunkBounds | None:
        """The chunk's bounds; those of the fill value for a chunk that is not stored."""
        found = self.bounds.get(coords)
        if found is None and self.missing is not None and coords not in self.stored:
            return self.missing
        return found

    def arrays(
        self, chunks: list[tuple[int, ...]]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(low, high)`` of ``chunks``: NaN where unknown or where NaNs are (or may be)."""
        low = np.full(len(chunks), np.nan)
        high = np.full(len(chunks), np.nan)
        for n, coords in enumerate(chunks):
            bounds = self.get(coords)
            if bounds is None:
                continue
            minimum, maximum, nans = bounds
            if minimum is None or maximum is None or nans is None or nans > 0:
                continue  # NaN rows fall outside any range: no guarantee
            low[n], high[n] = minimum, maximum
        return low, high

    def record(self, coords: tuple[int, ...], data: np.ndarray[Any, Any], fill: Any) -> None:
        """Keep the statistics of a chunk a scan read (if its shard can be cached)."""
        fingerprint = self.fingerprints.get(coords)
        if self.cache is None or fingerprint is None or coords in self.bounds:
            return
        bounds = bounds_of(data, fill)
        self.bounds[coords] = bounds
        self.cache.put(fingerprint, coords, bounds)


def _file_options(metadata: dict[bytes, bytes]) -> tuple[StatsOptions, int] | None:
    try:
        found = json.loads(metadata[OPTIONS])
        options = parse_stats(found["stats"], found["histogram"])
        return options, int(found["columns"])
    except (KeyError, TypeError, ValueError):
        return None


def _from_dataset(
    directory: Path,
    path: str,
    ndim: int,
    tasks: list[ChunkTask],
    listings: list[Listing | None],
    floating: bool,
) -> dict[tuple[int, ...], ChunkBounds]:
    """Bounds of the chunks of shards whose fingerprint in the dataset is today's."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    by_shard = {
        task.shard_index or "": (task, listing)
        for task, listing in zip(tasks, listings, strict=True)
    }
    found: dict[tuple[int, ...], ChunkBounds] = {}
    partition = directory / f"array={quote(path, safe='')}"
    for file in sorted(partition.glob("*.parquet")):
        try:
            metadata = dict(pq.read_schema(file).metadata or {})
            recorded = json.loads(metadata.get(FINGERPRINTS, b"{}"))
        except (OSError, ValueError):
            continue  # not a chunk-table file this version wrote: no statistics from it
        options = _file_options(metadata)
        if options is None or not isinstance(recorded, dict):
            continue
        stats, columns = options
        if not {"min", "max"} <= set(stats.stats) or (floating and "nan_count" not in stats.stats):
            continue  # NaNs unknown in a floating-point array: no guarantee
        verified = []
        for key, fingerprint in recorded.items():
            task, listing = by_shard.get(str(key), (None, None))
            if task is None:
                continue
            today = fingerprint_of(
                dataclasses.replace(task, options=stats, ndim_columns=columns), listing
            )
            if today is not None and today == fingerprint:
                verified.append(str(key))
        if not verified:
            continue
        names = [f"c{i}" for i in range(ndim)] + ["shard_index", "min", "max"]
        names += ["nan_count"] if "nan_count" in stats.stats else []
        table = pq.read_table(file, columns=names)
        table = table.filter(pc.is_in(table["shard_index"].fill_null(""), _strings(verified)))
        rows = zip(*(table[name].to_pylist() for name in names), strict=True)
        for row in rows:
            coords = tuple(int(i) for i in row[:ndim])
            low, high = row[ndim + 1], row[ndim + 2]
            nans = row[ndim + 3] if len(row) > ndim + 3 else 0
            found[coords] = (low, high, nans)
    return found


def _strings(values: Iterable[str]) -> pa.Array:
    import pyarrow as pa

    return pa.array(list(values), type=pa.string())


def array_statistics(
    tasks: list[ChunkTask],
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    fill: Any,
    dataset: Path | None,
    cache: StatisticsCache | None,
) -> ArrayStatistics:
    """What is known today of the chunks of one array (its tasks: one per shard).

    Parameters
    ----------
    tasks
        The array's tasks (:func:`shardedstore.chunk_tasks`).
    shape, dtype, fill
        The array's shape, dtype and the value its missing chunks read as.
    dataset
        A chunk-table directory to take statistics from (checked), or None.
    cache
        Where scans keep the statistics they compute (None: nothing kept, nothing used).
    """
    found = ArrayStatistics(cache=cache)
    listings = list_tasks(tasks)
    for task, listing in zip(tasks, listings, strict=True):
        if listing is None:
            continue
        fingerprint = fingerprint_of(dataclasses.replace(task, options=VALUE_OPTIONS), listing)
        coords = _COORDS.get((fingerprint, shape)) if fingerprint is not None else None
        if coords is None:
            coords = listed_coords(task, listing, shape)
            if fingerprint is not None:
                _COORDS[(fingerprint, shape)] = coords
                while len(_COORDS) > _COORDS_SHARDS:
                    _COORDS.pop(next(iter(_COORDS)))
        found.stored.update(coords)
        if fingerprint is None:
            continue
        for chunk in coords:
            found.fingerprints[chunk] = fingerprint
        if cache is not None:
            found.bounds.update(cache.get(fingerprint))
    if dataset is not None and tasks:
        ndim = len(shape)
        floating = dtype.kind in "fc"
        found.bounds.update(
            _from_dataset(dataset, tasks[0].array.path, ndim, tasks, listings, floating)
        )
    found.missing = fill_bounds(dtype, fill)
    return found
