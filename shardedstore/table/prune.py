"""Which chunks can hold a row that passes a filter, decided without reading them (pure).

A filter is a ``pyarrow.compute.Expression`` (what DuckDB, DataFusion and pyarrow push
into a scan). Whether a chunk can satisfy it is left to Arrow itself: each candidate
gets a *guarantee* (an expression true of every row it holds, such as
``t_index >= 4 and t_index <= 7``), and Arrow's guarantee simplification, through
``FileSystemDataset.get_fragments(filter=...)`` over fragments that are never opened,
says which guarantees leave the filter satisfiable. That is sound for every filter
shape: what Arrow cannot simplify is kept, and pruning only ever skips chunks no row of
which could pass.

- **Axes** (:class:`AxisPruner`): one guarantee per chunk index along a dimension
  (its index range, and its coordinate range where the coordinate has no NaN); a
  dimension with many chunks is pruned in two levels (buckets, then chunks).
- **Values** (:class:`ValuePruner`): a chunk's values lie in ``[min, max]`` (its
  statistics) when it holds no NaN. Guarantees are one-sided, ``v >= min`` and
  ``v <= max``; whether a filter can hold only gets less likely as the bound tightens,
  so a bisection over the distinct bounds (a dozen questions to Arrow, however many
  chunks) finds the ones that rule a chunk out, and a chunk is skipped when either side
  does. Two-sided disjunctions (``v < 0 or v > 100``) are thereby not pruned by value. A
  chunk without statistics, with NaNs, or of a dtype that is not a real number is never
  skipped by its values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

__all__ = ["AxisPruner", "ValuePruner", "referenced_columns"]

_FANOUT = 512
"""Guarantees per level of an axis (more chunks: buckets first)."""

_KEPT_FILTERS = 8
"""Filters whose masks a value pruner keeps (the same query, asked again)."""


def _errors() -> tuple[type[Exception], ...]:
    """What Arrow raises for a filter it cannot bind or simplify: then nothing is pruned."""
    import pyarrow as pa

    return (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError)


def _shadow(guarantees: Sequence[pc.Expression], schema: pa.Schema) -> pads.Dataset:
    """A dataset whose fragment ``i`` (never opened) guarantees ``guarantees[i]``."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fmt = pads.IpcFileFormat()
    fs = pafs.LocalFileSystem()
    fragments = [
        fmt.make_fragment(str(i), fs, partition_expression=guarantee)
        for i, guarantee in enumerate(guarantees)
    ]
    return pads.FileSystemDataset(fragments, schema, fmt, fs)


def _satisfiable(shadow: pads.Dataset, where: pc.Expression, count: int) -> np.ndarray[Any, Any]:
    """Which guarantees leave ``where`` satisfiable (all of them when Arrow cannot say)."""
    kept = np.zeros(count, dtype=bool)
    try:
        for fragment in shadow.get_fragments(filter=where):
            kept[int(fragment.path)] = True
    except _errors():
        kept[:] = True
    return kept


def referenced_columns(where: pc.Expression, schema: pa.Schema) -> set[str]:
    """The columns of ``schema`` that ``where`` reads (all of them when unsure).

    Arrow does not say which fields an expression references; binding it against
    tables that lack one column at a time names the first one missing.
    """
    import pyarrow as pa

    found: set[str] = set()
    names = set(schema.names)
    for _ in range(len(names) + 1):
        probe = pa.table(
            {n: pa.array([], type=schema.field(n).type) for n in schema.names if n in found}
        )
        try:
            probe.filter(where)
        except pa.ArrowInvalid as error:
            match = re.search(r"FieldRef\.Name\((.*?)\)", str(error))
            name = match.group(1) if match else None
            if name is None or name not in names or name in found:
                return names
            found.add(name)
            continue
        except _errors():
            return names
        return found
    return names


def _range(field: str, low: Any, high: Any, kind: pa.DataType) -> pc.Expression:
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.field(field)
    return (column >= pa.scalar(low, type=kind)) & (column <= pa.scalar(high, type=kind))


class AxisPruner:
    """The chunk indices along one dimension that can satisfy a filter.

    Parameters
    ----------
    schema
        The whole table's schema (a filter may name any column).
    starts, stops
        The index range ``[start, stop)`` of each chunk along the dimension.
    index_column
        The column holding the index (or None when the table has none).
    coordinate_column, coordinate
        The column holding the coordinate and its values (or None).
    """

    def __init__(
        self,
        schema: pa.Schema,
        starts: np.ndarray[Any, Any],
        stops: np.ndarray[Any, Any],
        index_column: str | None,
        coordinate_column: str | None,
        coordinate: np.ndarray[Any, Any] | None,
    ) -> None:
        self.schema = schema
        self.starts = starts
        self.stops = stops
        self.index_column = index_column
        self.coordinate_column = coordinate_column
        self.coordinate = coordinate
        self.count = len(starts)
        self.step = max(1, -(-self.count // _FANOUT))
        self._coarse: pads.Dataset | None = None
        self._fine: dict[int, pads.Dataset] = {}

    def _guarantee(self, first: int, last: int) -> pc.Expression:
        """What every row of chunks ``first..last`` (inclusive) satisfies."""
        import pyarrow as pa
        import pyarrow.compute as pc

        parts: list[pc.Expression] = []
        low, high = int(self.starts[first]), int(self.stops[last]) - 1
        if self.index_column is not None:
            parts.append(_range(self.index_column, low, high, pa.int64()))
        if self.coordinate_column is not None and self.coordinate is not None:
            values = self.coordinate[low : high + 1]
            ordered = values.dtype.kind in "iufM" and values.size
            if ordered and not (
                (values.dtype.kind == "f" and np.isnan(values).any())
                or (values.dtype.kind == "M" and np.isnat(values).any())
            ):
                kind = self.schema.field(self.coordinate_column).type
                try:
                    parts.append(_range(self.coordinate_column, values.min(), values.max(), kind))
                except _errors():
                    pass  # no guarantee on the coordinate: never pruned by it
        if not parts:
            return pc.scalar(True)
        guarantee = parts[0]
        for part in parts[1:]:
            guarantee = guarantee & part
        return guarantee

    def _level(self, bucket: int | None) -> pads.Dataset:
        if bucket is None:
            if self._coarse is None:
                spans = [
                    (b * self.step, min((b + 1) * self.step, self.count) - 1)
                    for b in range(-(-self.count // self.step))
                ]
                self._coarse = _shadow([self._guarantee(a, b) for a, b in spans], self.schema)
            return self._coarse
        if bucket not in self._fine:
            first = bucket * self.step
            last = min(first + self.step, self.count)
            self._fine[bucket] = _shadow(
                [self._guarantee(i, i) for i in range(first, last)], self.schema
            )
        return self._fine[bucket]

    def kept(self, where: pc.Expression) -> np.ndarray[Any, Any]:
        """A mask over the chunk indices: True where a row could pass ``where``."""
        buckets = -(-self.count // self.step)
        coarse = _satisfiable(self._level(None), where, buckets)
        if self.step == 1:
            return coarse
        mask = np.zeros(self.count, dtype=bool)
        for bucket in np.flatnonzero(coarse):
            first = int(bucket) * self.step
            last = min(first + self.step, self.count)
            mask[first:last] = _satisfiable(self._level(int(bucket)), where, last - first)
        return mask


def _typed(level: float, kind: pa.DataType) -> Any:
    """``level`` in the column's type, or None when it does not fit exactly."""
    import pyarrow as pa

    if pa.types.is_floating(kind):
        dtype = np.dtype(kind.to_pandas_dtype())
        cast = dtype.type(level)
        return cast if float(cast) == level or np.isinf(level) else None
    if pa.types.is_integer(kind):
        if not np.isfinite(level) or abs(level) >= 2**53 or level != int(level):
            return None  # beyond float64's exact integers: no guarantee
        return int(level)
    return None


def _exact(levels: np.ndarray[Any, Any], kind: pa.DataType) -> np.ndarray[Any, Any]:
    """Where a level (float64) fits the column's type exactly (:func:`_typed` is not
    None), for all levels at once."""
    import pyarrow as pa

    with np.errstate(over="ignore", invalid="ignore"):
        if pa.types.is_floating(kind):
            cast = levels.astype(np.dtype(kind.to_pandas_dtype()))
            fits: np.ndarray[Any, Any] = cast.astype(np.float64) == levels
            return fits
        if pa.types.is_integer(kind):
            finite = np.isfinite(levels)
            whole = np.abs(levels) < 2**53
            exact: np.ndarray[Any, Any] = np.trunc(np.where(finite, levels, 0)) == levels
            fitting: np.ndarray[Any, Any] = finite & whole & exact
            return fitting
    return np.zeros(levels.shape, dtype=bool)


class _Side:
    """One side of a value pruner: guarantees ``v >= level`` (``below``) or
    ``v <= level`` over the sorted distinct bounds of the chunks.

    Whether a filter can hold given ``v >= L`` only gets less likely as ``L`` grows:
    the levels it rules out are those from some point on. So a few of them, found by
    bisection, decide for all: where Arrow proves a level impossible, every stronger
    one is impossible too (sound even where Arrow could not have proven it there).
    """

    def __init__(
        self, schema: pa.Schema, column: str, bounds: np.ndarray[Any, Any], below: bool
    ) -> None:
        self.schema = schema
        self.column = column
        self.kind = schema.field(column).type
        self.below = below
        levels = np.unique(bounds)
        self.levels = levels[_exact(levels, self.kind)]
        # Each chunk's level: the largest at or below its minimum (below), or the
        # smallest at or above its maximum: a guarantee no stronger than its own bound.
        if below:
            position = np.searchsorted(self.levels, bounds, side="right") - 1
        else:
            position = np.searchsorted(self.levels, bounds, side="left")
        inside = (position >= 0) & (position < self.levels.size)
        self.position = np.where(inside, position, -1)

    def _possible(self, where: pc.Expression, level: int) -> bool:
        import pyarrow as pa
        import pyarrow.compute as pc

        value = pa.scalar(_typed(float(self.levels[level]), self.kind), type=self.kind)
        field = pc.field(self.column)
        guarantee = field >= value if self.below else field <= value
        return bool(_satisfiable(_shadow([guarantee], self.schema), where, 1)[0])

    def ruled_out(self, where: pc.Expression) -> np.ndarray[Any, Any]:
        """A mask over the levels: True where the filter cannot hold."""
        count = self.levels.size
        out = np.zeros(count, dtype=bool)
        if not count:
            return out
        # below: possible levels are a prefix; find the first impossible one.
        # above (v <= level): possible levels are a suffix; find the last impossible one.
        low, high = 0, count
        while low < high:
            middle = (low + high) // 2
            probe = middle if self.below else count - 1 - middle
            if self._possible(where, probe):
                low = middle + 1
            else:
                high = middle
        if self.below:
            out[low:] = True
        else:
            out[: count - low] = True
        return out


class ValuePruner:
    """The chunks whose values can satisfy a filter, from their ``[min, max]``.

    Parameters
    ----------
    schema
        The whole table's schema.
    column
        The value column.
    low, high
        Each chunk's minimum and maximum (NaN where unknown, or where the chunk holds
        NaNs: never pruned).
    """

    def __init__(
        self,
        schema: pa.Schema,
        column: str,
        low: np.ndarray[Any, Any],
        high: np.ndarray[Any, Any],
    ) -> None:
        import pyarrow as pa

        self.count = len(low)
        self._kept: list[tuple[pc.Expression, np.ndarray[Any, Any]]] = []
        kind = schema.field(column).type
        usable = pa.types.is_floating(kind) or pa.types.is_integer(kind)
        known = ~(np.isnan(low) | np.isnan(high)) if usable else np.zeros(self.count, bool)
        self.sides: list[tuple[_Side, np.ndarray[Any, Any]]] = []
        where_known = np.flatnonzero(known)
        if not where_known.size:
            return
        for bounds, below in ((low, True), (high, False)):
            side = _Side(schema, column, bounds[where_known], below)
            self.sides.append((side, where_known))

    def kept(self, where: pc.Expression) -> np.ndarray[Any, Any]:
        """A mask over the chunks: True where a value could pass ``where`` (read-only;
        the masks of the last few filters are kept)."""
        for earlier, found in list(self._kept):
            if earlier.equals(where):
                return found
        mask = np.ones(self.count, dtype=bool)
        for side, chunks in self.sides:
            ruled_out = side.ruled_out(where)
            has_level = side.position >= 0
            out = np.zeros(len(chunks), dtype=bool)
            out[has_level] = ruled_out[side.position[has_level]]
            mask[chunks[out]] = False
        mask.setflags(write=False)
        self._kept = [*self._kept[-(_KEPT_FILTERS - 1) :], (where, mask)]
        return mask
