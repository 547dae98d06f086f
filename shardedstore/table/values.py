"""The values of arrays as a long table of Arrow batches: ``values``.

One row per cell, one batch per chunk: a column per dimension (the coordinate value
where the hierarchy has a 1-D coordinate array for it, else the index) and a column per
array, named after it. Several arrays with the same dimensions and shape come out side
by side, as one table.

Rows are produced chunk by chunk in the first array's chunk grid (with the sharding
codec, its shards): a filter first prunes whole chunks by the index and coordinate
ranges of each dimension and by the chunks' statistics (:mod:`shardedstore.table.prune`,
:mod:`shardedstore.table.statistics`), then the chunks left are read, a box of
neighbours per request, a few boxes ahead of the consumer in worker threads, and each
batch is filtered exactly. Nothing else is read: a column not asked for is never
fetched, and a query on the dimensions alone reads no chunk at all.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.store import Store
from zarr.core.sync import sync

from shardedstore.errors import ArgumentError
from shardedstore.table.chunks import (
    as_layout,
    hierarchy_arrays,
    holder,
    require_pyarrow,
    select_arrays,
    tasks_for,
)
from shardedstore.table.prune import AxisPruner, ValuePruner, referenced_columns
from shardedstore.table.statistics import (
    CACHE,
    VALUE_OPTIONS,
    ArrayStatistics,
    array_statistics,
)
from shardedstore.table.stats import read_fill_value
from shardedstore.table.tasks import region, storage_chunks

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

    from shardedstore.store.sharded import ShardedStore

__all__ = ["Fragment", "Statistics", "ValuesPlan", "values"]

Statistics = str | os.PathLike[str] | bool | None
"""Where pruning by value takes chunk statistics: None (computed as scans read chunks,
kept in memory), a chunk-table directory (and computed for what it lacks), False (none)."""

_BOX_ELEMENTS = 1 << 22
"""Elements one request reads at most (a box of neighbouring chunks)."""

_BOX_CHUNKS = 256
"""Chunks one request reads at most."""

_PREFETCH = 4
"""Groups of boxes read ahead of the consumer, in worker threads."""

_GROUP_ELEMENTS = 1 << 20
"""Elements a group of boxes read together holds at most (unless one box is larger)."""

_GROUP_CHUNKS = 64
"""Chunks a fragment of an array that is not array-sharded holds at least."""

_PRUNERS: OrderedDict[tuple[Any, ...], ValuePruner] = OrderedDict()
"""Value pruners by the bounds they were made from (queries after the first reuse them)."""

_PRUNERS_KEPT = 16
_pruners_lock = threading.Lock()


@dataclass(frozen=True)
class Dimension:
    """One dimension of a values table and its columns.

    Attributes
    ----------
    name
        The dimension's name (``dimension_names``, ``_ARRAY_DIMENSIONS``, else
        ``dim_0``...).
    size, chunk
        Its length and the chunk size along it.
    column
        The column of its coordinate values, or of the index where it has no coordinate
        (None when a value column has the dimension's name).
    index_column
        The column of the index when ``column`` holds the coordinate (``{name}_index``).
    coordinate
        The coordinate's values (decoded as xarray decodes them), or None.
    """

    name: str
    size: int
    chunk: int
    column: str | None
    index_column: str | None
    coordinate: np.ndarray[Any, Any] | None


@dataclass(frozen=True)
class ValueArray:
    """One array of a values table: its path, column and zarr array."""

    path: str
    column: str
    array: Any  # zarr.AsyncArray, read-only
    dtype: np.dtype[Any]
    fill: Any
    chunks: tuple[int, ...]


@dataclass(frozen=True)
class Fragment:
    """A box of the chunk grid scanned as one unit: an array shard, or a run of chunks.

    Attributes
    ----------
    ranges
        The chunk indices it covers along each dimension.
    shard_index
        The array shard it is (``"3"``), for an array-sharded array; else None.
    """

    ranges: tuple[range, ...]
    shard_index: str | None


def _dimension_names(array: Any) -> list[str]:
    names = getattr(array.metadata, "dimension_names", None)
    if names is None:
        names = array.attrs.get("_ARRAY_DIMENSIONS")
    if not names or len(names) != len(array.shape) or not all(isinstance(n, str) for n in names):
        return [f"dim_{i}" for i in range(len(array.shape))]
    return [str(n) for n in names]


def _coordinate(found: dict[str, Any], parent: str, name: str, size: int) -> Any:
    """The 1-D coordinate array of dimension ``name`` beside the arrays, if any."""
    path = f"{parent}/{name}" if parent else name
    candidate = found.get(path)
    if candidate is None or tuple(candidate.shape) != (size,):
        return None
    if _dimension_names(candidate) not in ([name], ["dim_0"]):
        return None
    return candidate


def _decoded(name: str, coordinate: Any) -> np.ndarray[Any, Any]:
    """A coordinate's values as xarray decodes them (times from their units, ...)."""
    import xarray as xr

    raw = np.asarray(coordinate[...])
    attrs = dict(coordinate.attrs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = xr.conventions.decode_cf_variable(name, xr.Variable((name,), raw, attrs))
        values = np.asarray(decoded.values)
    except Exception:  # an encoding xarray cannot decode: the stored values
        return raw
    if values.dtype.kind == "O":  # cftime dates and the like: Arrow has no type for them
        return raw
    return values


def _arrow_type(dtype: np.dtype[Any], what: str) -> pa.DataType:
    import pyarrow as pa

    try:
        return pa.from_numpy_dtype(dtype)
    except (pa.ArrowNotImplementedError, NotImplementedError, TypeError):
        raise ArgumentError(
            f"{what} has dtype {dtype}, which has no Arrow column type; query the arrays "
            "of numbers, booleans, strings or times"
        ) from None


class ValuesPlan:
    """What a values table is made of: its arrays, dimensions, chunk grid and fragments.

    Made once (the arrays' metadata and coordinates are read); scanned many times. The
    arrays' shapes are those they had when the plan was made.
    """

    def __init__(
        self,
        store: Store,
        arrays: str | Sequence[str],
        *,
        coords: bool = True,
        statistics: Statistics = None,
        hierarchy: dict[str, Any] | None = None,
    ) -> None:
        require_pyarrow()
        import pyarrow as pa
        import zarr.api.asynchronous as zarr_async

        layout = as_layout(store)
        self.layout: ShardedStore = layout.with_read_only(True)
        names = [arrays] if isinstance(arrays, str) else list(arrays)
        if not names:
            raise ArgumentError("values: name at least one array")
        every = hierarchy_arrays(layout) if hierarchy is None else hierarchy
        found = select_arrays(every, names)
        paths = [name.strip("/") for name in names]
        first = found[paths[0]]
        dims = _dimension_names(first)
        shape = tuple(int(n) for n in first.shape)
        for path in paths[1:]:
            other = found[path]
            if _dimension_names(other) != dims or tuple(other.shape) != shape:
                raise ArgumentError(
                    f"values: arrays {paths[0]!r} {tuple(dims)} {shape} and {path!r} "
                    f"{tuple(_dimension_names(other))} {tuple(other.shape)} do not share "
                    "their dimensions; query them one at a time (and join in SQL)"
                )
        self.shape = shape
        self.metadata = {path: found[path] for path in paths}
        self.chunks = storage_chunks(first)
        self.grid = tuple(-(-s // c) if c else 0 for s, c in zip(shape, self.chunks, strict=True))
        self.statistics: Statistics = statistics
        self.ndim_columns = max((len(a.shape) for a in every.values()), default=0)

        value_arrays: list[ValueArray] = []
        for path in paths:
            array = found[path]
            column = path.rpartition("/")[2]
            opened = sync(zarr_async.open_array(store=self.layout, path=path, mode="r"))
            value_arrays.append(
                ValueArray(
                    path,
                    column,
                    opened,
                    np.dtype(array.dtype),
                    read_fill_value(array.metadata),
                    storage_chunks(array),
                )
            )
        self.arrays = value_arrays
        value_columns = {a.column for a in value_arrays}
        if len(value_columns) != len(value_arrays):
            raise ArgumentError(
                f"values: arrays {', '.join(paths)} have the same name; query them one at a "
                "time (and join in SQL)"
            )
        parent = paths[0].rpartition("/")[0]
        self.dims: list[Dimension] = []
        for name, size, chunk in zip(dims, shape, self.chunks, strict=True):
            coordinate = _coordinate(every, parent, name, size) if coords else None
            if name in value_columns:  # the table of a coordinate itself: its values
                self.dims.append(Dimension(name, size, chunk, None, f"{name}_index", None))
            elif coordinate is not None:
                values = _decoded(name, coordinate)
                self.dims.append(Dimension(name, size, chunk, name, f"{name}_index", values))
            else:
                self.dims.append(Dimension(name, size, chunk, name, None, None))

        fields = []
        for dim in self.dims:
            if dim.column is not None:
                kind = (
                    pa.int64()
                    if dim.coordinate is None
                    else _arrow_type(dim.coordinate.dtype, f"coordinate {dim.name!r}")
                )
                fields.append(pa.field(dim.column, kind, nullable=False))
            if dim.index_column is not None:
                fields.append(pa.field(dim.index_column, pa.int64(), nullable=False))
        for value in value_arrays:
            kind = _arrow_type(value.dtype, f"array {value.path!r}")
            fields.append(pa.field(value.column, kind, nullable=False))
        names_seen = [f.name for f in fields]
        if len(set(names_seen)) != len(names_seen):
            clash = sorted({n for n in names_seen if names_seen.count(n) > 1})
            raise ArgumentError(
                f"values: column name(s) {', '.join(clash)} would appear twice (an array "
                "named like a dimension's index column); query the arrays one at a time"
            )
        self.schema = pa.schema(fields)
        self.value_columns = {a.column: a for a in value_arrays}

        kind, node = holder(layout, paths[0])
        self.sharded_dims = layout.array_shards[node][0] if kind == "array shards" else 0
        self.fragments = self._fragments()
        self._axes: list[AxisPruner] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # ---------------------------------------------------------------- fragments

    def _fragments(self) -> list[Fragment]:
        if not self.grid or 0 in self.grid:
            return [Fragment(tuple(range(n) for n in self.grid), None)] if not self.grid else []
        if self.sharded_dims:
            lead = self.grid[: self.sharded_dims]
            rest = tuple(range(n) for n in self.grid[self.sharded_dims :])
            return [
                Fragment(tuple(range(i, i + 1) for i in index) + rest, ".".join(map(str, index)))
                for index in itertools.product(*(range(n) for n in lead))
            ]
        per_row = math.prod(self.grid[1:])
        step = max(1, -(-_GROUP_CHUNKS // max(per_row, 1)))
        rest = tuple(range(n) for n in self.grid[1:])
        return [
            Fragment((range(i, min(i + step, self.grid[0])), *rest), None)
            for i in range(0, self.grid[0], step)
        ]

    # ---------------------------------------------------------------- pruning

    def _axis_pruners(self) -> list[AxisPruner]:
        if self._axes is None:
            axes = []
            for dim, count in zip(self.dims, self.grid, strict=True):
                starts = np.arange(count, dtype=np.int64) * dim.chunk
                stops = np.minimum(starts + dim.chunk, dim.size)
                index_column = dim.index_column if dim.coordinate is not None else dim.column
                if dim.column is None:
                    index_column = dim.index_column
                coordinate_column = dim.column if dim.coordinate is not None else None
                axes.append(
                    AxisPruner(
                        self.schema, starts, stops, index_column, coordinate_column, dim.coordinate
                    )
                )
            self._axes = axes
        return self._axes

    def _statistics_of(self, value: ValueArray) -> ArrayStatistics | None:
        """What is known of the array's chunks today (None: no pruning by value)."""
        if self.statistics is False or value.chunks != self.chunks:
            return None
        if value.dtype.kind not in "iuf":
            return None
        dataset = None
        if self.statistics not in (None, True):
            dataset = Path(os.fspath(self.statistics))  # type: ignore[arg-type]
        array = {value.path: self.metadata[value.path]}
        tasks = tasks_for(self.layout, array, VALUE_OPTIONS, self.ndim_columns)
        return array_statistics(
            tasks, self.shape, self.chunks, value.dtype, value.fill, dataset, CACHE
        )

    def _value_mask(
        self, value: ValueArray, known: ArrayStatistics, where: pc.Expression
    ) -> np.ndarray[Any, Any]:
        key = (self.schema, value.column, known.low.tobytes(), known.high.tobytes())
        with _pruners_lock:
            pruner = _PRUNERS.get(key)
        if pruner is None:
            pruner = ValuePruner(self.schema, value.column, known.low, known.high)
            with _pruners_lock:
                _PRUNERS[key] = pruner
                while len(_PRUNERS) > _PRUNERS_KEPT:
                    _PRUNERS.popitem(last=False)
        return pruner.kept(where)

    def prune(
        self, where: pc.Expression | None, fragments: Sequence[Fragment] | None = None
    ) -> Pruned:
        """The chunks of ``fragments`` (default: all) that can hold a row passing ``where``.

        ``where`` may hold conditions the rows are not filtered by (a hint every row
        the consumer keeps satisfies): only pruning sees it.
        """
        fragments = self.fragments if fragments is None else fragments
        mask: np.ndarray[Any, Any] | None = None  # over the chunk grid
        known: dict[str, ArrayStatistics] = {}
        if where is not None:
            used = referenced_columns(where, self.schema)
            for d, (dim, pruner) in enumerate(zip(self.dims, self._axis_pruners(), strict=True)):
                if not {dim.column, dim.index_column} & used:
                    continue  # a filter that does not read a dimension keeps all its chunks
                shape = [1] * len(self.grid)
                shape[d] = -1
                kept = pruner.kept(where).reshape(shape)
                mask = kept if mask is None else mask & kept
            for column in sorted(used & set(self.value_columns)):
                value = self.value_columns[column]
                found = self._statistics_of(value)
                if found is None:
                    continue
                known[column] = found
                kept = self._value_mask(value, found, where).reshape(self.grid)
                mask = kept if mask is None else mask & kept
        selected: list[tuple[Fragment, list[tuple[int, ...]]]] = []
        whole = None if mask is None else np.broadcast_to(mask, self.grid)
        for fragment in fragments:
            if whole is None:
                chunks = list(itertools.product(*fragment.ranges))
            else:
                box = whole[tuple(slice(r.start, r.stop) for r in fragment.ranges)]
                if not box.any():
                    continue
                starts = np.array([r.start for r in fragment.ranges], dtype=np.int64)
                chunks = [tuple(map(int, c)) for c in np.argwhere(box) + starts]
            if chunks:
                selected.append((fragment, chunks))
        return Pruned(selected, known)

    # ---------------------------------------------------------------- reading

    def pool(self) -> ThreadPoolExecutor:
        """The worker threads reading ahead, shared by this plan's scans."""
        with self._pool_lock:
            if self._pool is None:
                pool = ThreadPoolExecutor(max_workers=_PREFETCH, thread_name_prefix="values")
                weakref.finalize(self, pool.shutdown, wait=False, cancel_futures=True)
                self._pool = pool
            return self._pool

    def scan_schema(self, columns: Sequence[str] | None, where: pc.Expression | None) -> pa.Schema:
        """The columns a scan reads: those asked for and those ``where`` reads."""
        import pyarrow as pa

        wanted = list(self.schema.names) if columns is None else list(columns)
        unknown = [name for name in wanted if name not in self.schema.names]
        if unknown:
            raise ArgumentError(
                f"values: no column {', '.join(map(repr, unknown))}; the columns are "
                f"{', '.join(self.schema.names)}"
            )
        needed = set(wanted)
        if where is not None:
            needed |= referenced_columns(where, self.schema)
        return pa.schema([f for f in self.schema if f.name in needed])

    def batches(
        self,
        columns: Sequence[str] | None = None,
        where: pc.Expression | None = None,
        fragments: Sequence[Fragment] | None = None,
        hint: pc.Expression | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """One batch per chunk that can hold a passing row, filtered exactly by ``where``
        and holding ``columns`` (default: all); chunks with no passing row give none.

        ``hint``, a condition every row the consumer keeps satisfies (which it filters
        by itself), skips chunks too. Nothing is listed or read until the first batch
        is asked for.
        """
        projected = list(self.schema.names) if columns is None else list(columns)
        scan = self.scan_schema(projected, where)
        pruning = where if hint is None else hint if where is None else where & hint

        def generate() -> Iterator[pa.RecordBatch]:
            pruned = self.prune(pruning, fragments)
            yield from self.read(pruned, projected, scan, where)

        return generate()

    def read(
        self,
        pruned: Pruned,
        projected: list[str],
        scan: pa.Schema,
        where: pc.Expression | None,
    ) -> Iterator[pa.RecordBatch]:
        """The batches of the chunks ``pruned`` selected (see :meth:`batches`)."""
        record = bool(pruned.known) and self.statistics is not False
        reads = [a for a in self.arrays if a.column in scan.names]
        boxes: list[list[tuple[int, ...]]] = []
        for _, chunks in pruned.selected:
            boxes += _boxes(chunks, self.chunks)
        return self._generate(boxes, scan, projected, where, reads, pruned, record)

    def _generate(
        self,
        boxes: list[list[tuple[int, ...]]],
        scan: pa.Schema,
        projected: list[str],
        where: pc.Expression | None,
        reads: list[ValueArray],
        pruned: Pruned,
        record: bool,
    ) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        def load(group: list[list[tuple[int, ...]]]) -> list[pa.RecordBatch]:
            data = self._read(group, reads) if reads else [{} for _ in group]
            out = []
            for box, box_data in zip(group, data, strict=True):
                for chunk, values in _split(box, box_data, self.chunks, self.shape):
                    if record:
                        for column, array in values.items():
                            known = pruned.known.get(column)
                            if known is not None:
                                known.record(chunk, array, self.value_columns[column].fill)
                    out.append(self._batch(chunk, values, scan))
            if where is None:
                return [batch.select(projected) for batch in out]
            # One filter for the group: each call sets up an Acero plan (about 0.3 ms).
            table = pa.Table.from_batches(out, schema=scan).filter(where).select(projected)
            return [batch for batch in table.to_batches() if batch.num_rows]

        groups = _groups(boxes, math.prod(self.chunks) * max(1, len(reads)))
        if len(groups) <= 1:
            for group in groups:
                yield from load(group)
            return
        pool = self.pool()
        pending: deque[Future[list[pa.RecordBatch]]] = deque()
        try:
            for group in groups:
                pending.append(pool.submit(load, group))
                if len(pending) >= _PREFETCH:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early (LIMIT): drop the rest
                future.cancel()

    def _read(
        self, group: list[list[tuple[int, ...]]], reads: list[ValueArray]
    ) -> list[dict[str, tuple[np.ndarray[Any, Any], tuple[int, ...]]]]:
        """Each array's values over each box of chunks (with the box's start), read by
        one batch of concurrent requests."""
        selections = []
        for box in group:
            low = [min(chunk[d] for chunk in box) for d in range(len(self.shape))]
            high = [max(chunk[d] for chunk in box) for d in range(len(self.shape))]
            first = region(tuple(low), self.chunks, self.shape)
            last = region(tuple(high), self.chunks, self.shape)
            selections.append(
                tuple(slice(a.start, b.stop) for a, b in zip(first, last, strict=True))
            )

        async def read_all() -> list[Any]:
            import asyncio

            requests = [a.array.getitem(sel) for sel in selections for a in reads]
            return list(await asyncio.gather(*requests))

        found = iter(sync(read_all()))
        out = []
        for selection in selections:
            start = tuple(s.start for s in selection)
            out.append({a.column: (np.asarray(next(found)), start) for a in reads})
        return out

    def _batch(
        self, chunk: tuple[int, ...], values: dict[str, np.ndarray[Any, Any]], scan: pa.Schema
    ) -> pa.RecordBatch:
        """The rows of one chunk: its dimensions' columns and the values asked for."""
        import pyarrow as pa

        box = region(chunk, self.chunks, self.shape)
        lengths = [b.stop - b.start for b in box]
        rows = math.prod(lengths)
        columns: dict[str, Any] = {}
        for d, (dim, part) in enumerate(zip(self.dims, box, strict=True)):
            inner = math.prod(lengths[d + 1 :])
            outer = math.prod(lengths[:d])
            index = None
            if dim.column is not None and dim.column in scan.names:
                if dim.coordinate is None:
                    index = np.arange(part.start, part.stop, dtype=np.int64)
                    columns[dim.column] = _spread(index, inner, outer)
                else:
                    columns[dim.column] = _spread(dim.coordinate[part], inner, outer)
            if dim.index_column is not None and dim.index_column in scan.names:
                if index is None:
                    index = np.arange(part.start, part.stop, dtype=np.int64)
                columns[dim.index_column] = _spread(index, inner, outer)
        for column, data in values.items():
            columns[column] = np.ascontiguousarray(data).reshape(-1)
        if not scan.names:
            return pa.table({"_": np.zeros(rows, np.int8)}).select([]).to_batches()[0]
        arrays = [pa.array(columns[name], type=scan.field(name).type) for name in scan.names]
        return pa.RecordBatch.from_arrays(arrays, schema=scan)


@dataclass
class Pruned:
    """What a scan reads: each fragment left with its chunks, and the statistics used."""

    selected: list[tuple[Fragment, list[tuple[int, ...]]]]
    known: dict[str, ArrayStatistics] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        """How many chunks the scan reads."""
        return sum(len(chunks) for _, chunks in self.selected)


def _spread(values: np.ndarray[Any, Any], inner: int, outer: int) -> np.ndarray[Any, Any]:
    """A dimension's values as a column of a C-ordered block: each repeated ``inner``
    times, the whole tiled ``outer`` times."""
    repeated = np.repeat(values, inner) if inner > 1 else values
    return np.tile(repeated, outer) if outer > 1 else repeated


def _boxes(
    chunks: list[tuple[int, ...]], grid_chunks: tuple[int, ...]
) -> list[list[tuple[int, ...]]]:
    """Sorted chunks in runs read by one request: neighbours whose bounding box spans
    only chunks of the run, within the request's bounds."""
    per_chunk = max(1, math.prod(grid_chunks))
    limit = max(1, min(_BOX_CHUNKS, _BOX_ELEMENTS // per_chunk))
    boxes: list[list[tuple[int, ...]]] = []
    low: list[int] = []
    high: list[int] = []
    for chunk in sorted(chunks):
        if boxes and len(boxes[-1]) < limit:
            new_low = [min(a, b) for a, b in zip(low, chunk, strict=True)]
            new_high = [max(a, b) for a, b in zip(high, chunk, strict=True)]
            volume = math.prod(h - lo + 1 for lo, h in zip(new_low, new_high, strict=True))
            if volume == len(boxes[-1]) + 1:  # the box holds exactly the run's chunks
                boxes[-1].append(chunk)
                low, high = new_low, new_high
                continue
        boxes.append([chunk])
        low, high = list(chunk), list(chunk)
    return boxes


def _groups(
    boxes: list[list[tuple[int, ...]]], elements_per_chunk: int
) -> list[list[list[tuple[int, ...]]]]:
    """Boxes in groups read together: up to ``_GROUP_ELEMENTS`` elements each."""
    groups: list[list[list[tuple[int, ...]]]] = []
    size = 0
    for box in boxes:
        weight = len(box) * elements_per_chunk
        if not groups or size + weight > _GROUP_ELEMENTS:
            groups.append([])
            size = 0
        groups[-1].append(box)
        size += weight
    return groups


def _split(
    box: list[tuple[int, ...]],
    data: dict[str, tuple[np.ndarray[Any, Any], tuple[int, ...]]],
    chunks: tuple[int, ...],
    shape: tuple[int, ...],
) -> Iterator[tuple[tuple[int, ...], dict[str, np.ndarray[Any, Any]]]]:
    """Each chunk of the box with its values (views into the box's arrays)."""
    for chunk in box:
        part = region(chunk, chunks, shape)
        values = {}
        for column, (array, start) in data.items():
            local = tuple(slice(p.start - s, p.stop - s) for p, s in zip(part, start, strict=True))
            values[column] = array[local]
        yield chunk, values


def values(
    store: Store,
    array: str | Sequence[str],
    *,
    where: pc.Expression | None = None,
    columns: Iterable[str] | None = None,
    coords: bool = True,
    statistics: Statistics = None,
) -> pa.RecordBatchReader:
    """The values of an array (or of arrays sharing their dimensions) as a long table.

    One row per cell of the array's shape, one batch per chunk (with the sharding
    codec, per stored shard of chunks): a column per dimension and a column of values
    named after the array (the last part of its path). ``where`` prunes chunks before
    anything is read, by the dimensions' index and coordinate ranges and by the chunks'
    statistics, then filters every batch exactly.

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding the hierarchy.
    array
        An array path, or several arrays with the same dimensions and shape (one
        column each).
    where
        A filter (``pyarrow.compute.field("t") > 30``); rows that do not pass are left
        out, and chunks none of whose rows can pass are not read.
    columns
        The columns to return (default: all); the values of arrays not named are not
        read, and a table of dimension columns alone reads no chunk.
    coords
        Give each dimension that has a 1-D coordinate array beside the array (same
        group, named after the dimension, as xarray writes them) a column of its
        coordinate values, decoded as xarray decodes them (times from their units),
        named after the dimension, and its index in ``{dim}_index``. Without it (or
        without a coordinate) the dimension's column holds the index.
    statistics
        Where pruning by value takes each chunk's ``min``, ``max`` and ``nan_count``:
        None (default) computes them as scans read chunks and keeps them in memory for
        the next query; a directory written by :func:`write_chunk_table` (with those
        statistics) gives them at once; False prunes by dimensions only. Either way a
        statistic is used only if the shard it came from is unchanged (its listing's
        sizes and change stamps); a chunk without statistics is read.

    Returns
    -------
    pyarrow.RecordBatchReader

    Notes
    -----
    **Fill values and NaN.** Values are what zarr reads: a chunk never written reads
    as the array's fill value, in every cell, and gives rows like any other; NaN stays
    a floating-point NaN (never NULL), so ``count(t)`` counts it and ``avg(t)`` is NaN
    where a NaN is (filter with ``NOT isnan(t)``). No column is ever null. xarray's
    encodings of the values (``scale_factor``, ``_FillValue``) are not applied (the
    chunk statistics are of the stored values too); coordinates are decoded.

    Examples
    --------
    >>> import pyarrow.compute as pc  # doctest: +SKIP
    >>> reader = values(store, "temperature", where=pc.field("temperature") > 40)  # doctest: +SKIP
    >>> reader.read_pandas()  # doctest: +SKIP
    """
    import pyarrow as pa

    plan = ValuesPlan(store, array, coords=coords, statistics=statistics)
    wanted = None if columns is None else list(columns)
    projected = list(plan.schema.names) if wanted is None else wanted
    plan.scan_schema(projected, where)  # unknown columns raise here, not mid-stream
    schema = pa.schema([plan.schema.field(name) for name in projected])
    return pa.RecordBatchReader.from_batches(schema, plan.batches(projected, where))
