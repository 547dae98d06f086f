"""Value statistics of one decoded chunk, and the columns of a chunk table (pure, no I/O).

Statistics are computed with numpy over the chunk's region of the array (an edge
chunk is clipped to the array's shape), in float64 for numbers:

- ``count``: elements that are not NaN; ``nan_count``: NaN elements (NaT, "not a
  time", counts as NaN in datetime64 and timedelta64 arrays);
- ``fill_count``: elements equal to the array's fill value (NaN counts as equal to a
  NaN fill value, NaT to a NaT fill value). An array whose metadata has no fill value
  (zarr v2's ``"fill_value": null``) reads chunks never written as its dtype's default
  (0, NaT, ``""``), so that is its fill value here;
- ``min``, ``max``, ``mean``, ``std`` (population, ``ddof=0``): over the elements that
  are not NaN; null when there are none, and for dtypes that are not real numbers
  (complex, strings, datetimes, structured);
- ``histogram``: counts in fixed bins over ``[lo, hi]`` (NaN and values outside left
  out), as ``numpy.histogram(values, bins, (lo, hi))``.

Booleans count as 0 and 1. Integers beyond 2**53 lose precision in float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shardedstore.errors import ArgumentError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "STATS",
    "ChunkStats",
    "Histogram",
    "StatsOptions",
    "chunk_stats",
    "fill_stats",
    "parse_stats",
    "read_fill_value",
    "table_schema",
]

STATS = ("min", "max", "mean", "std", "count", "nan_count", "fill_count")
"""The statistics a chunk table can hold, in column order."""

_FLOAT_STATS = frozenset({"min", "max", "mean", "std"})

Histogram = tuple[float, float, int]
"""``(lo, hi, bins)``: fixed bins over ``[lo, hi]``."""


@dataclass(frozen=True)
class StatsOptions:
    """Which statistics to compute (picklable, part of each shard's fingerprint).

    Attributes
    ----------
    stats
        Names from :data:`STATS`, in column order.
    histogram
        ``(lo, hi, bins)``, or None for no histogram column.
    """

    stats: tuple[str, ...] = ()
    histogram: Histogram | None = None

    @property
    def reads_values(self) -> bool:
        """Whether chunks must be read and decoded (any statistic asked for)."""
        return bool(self.stats) or self.histogram is not None


def parse_stats(
    stats: Iterable[str] | str | None, histogram: Iterable[float] | None = None
) -> StatsOptions:
    """Check and order the statistics asked for (``"min,max"`` or ``["min", "max"]``).

    Raises
    ------
    ArgumentError
        For an unknown statistic or a histogram that is not ``(lo, hi, bins)`` with
        ``lo < hi`` and ``bins >= 1``.
    """
    if stats is None:
        names: list[str] = []
    elif isinstance(stats, str):
        names = [name.strip() for name in stats.split(",") if name.strip()]
    else:
        names = [str(name) for name in stats]
    if "all" in names:
        names = list(STATS)
    unknown = sorted(set(names) - set(STATS))
    if unknown:
        hint = " (give a histogram as histogram=(lo, hi, bins))" if "histogram" in unknown else ""
        raise ArgumentError(
            f"unknown statistic(s) {', '.join(unknown)}; choose from {', '.join(STATS)} "
            f"or all{hint}"
        )
    bins: Histogram | None = None
    if histogram is not None:
        values = list(histogram)
        try:
            if len(values) != 3:
                raise ValueError
            lo, hi, count = float(values[0]), float(values[1]), int(values[2])
        except (TypeError, ValueError):
            raise ArgumentError(
                f"histogram must be (lo, hi, bins), e.g. (0, 1, 10); got {histogram!r}"
            ) from None
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi and count >= 1):
            raise ArgumentError(
                f"histogram (lo, hi, bins) needs finite lo < hi and bins >= 1; got {histogram!r}"
            )
        bins = (lo, hi, count)
    return StatsOptions(tuple(name for name in STATS if name in names), bins)


ChunkStats = dict[str, Any]
"""Statistic name (and ``"histogram"``) -> value (None for null)."""


def _real(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "biuf"


def _is_nan(value: Any) -> bool:
    """Whether ``value`` is NaN, or NaT (a datetime64 or timedelta64 "not a time")."""
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    try:
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def read_fill_value(metadata: Any) -> Any:
    """What zarr reads where no chunk is stored: the fill value of an array's metadata.

    Zarr v2 metadata may have none (``"fill_value": null``); zarr then reads the
    dtype's default scalar (0, 0.0, NaT, False, ``""``).
    """
    fill = metadata.fill_value
    if fill is None:
        return metadata.dtype.default_scalar()
    return fill


def chunk_stats(data: Any, fill_value: Any, options: StatsOptions) -> ChunkStats:
    """The statistics of one decoded chunk (``data``: its region of the array)."""
    values = np.asarray(data)
    wanted = set(options.stats)
    found: ChunkStats = {}
    real = _real(values.dtype)
    if values.dtype.kind == "b":
        values = values.astype(np.uint8)
    nan_mask = None
    nans = 0
    if values.dtype.kind in "fc":
        nan_mask = np.isnan(values)
        nans = int(np.count_nonzero(nan_mask))
    elif values.dtype.kind in "mM":  # NaT: the NaN of datetimes and timedeltas
        nan_mask = np.isnat(values)
        nans = int(np.count_nonzero(nan_mask))
    finite = values if not nans or nan_mask is None else values[~nan_mask]
    count = int(finite.size)
    if "count" in wanted:
        found["count"] = count
    if "nan_count" in wanted:
        found["nan_count"] = nans
    if "fill_count" in wanted:
        if _is_nan(fill_value):
            found["fill_count"] = nans
        else:
            try:
                found["fill_count"] = int(np.count_nonzero(values == fill_value))
            except (TypeError, ValueError):
                found["fill_count"] = None
    if wanted & _FLOAT_STATS:
        usable = real and count > 0
        if "min" in wanted:
            found["min"] = float(finite.min()) if usable else None
        if "max" in wanted:
            found["max"] = float(finite.max()) if usable else None
        # inf - inf is NaN, as numpy says, without its warning on every chunk
        with np.errstate(invalid="ignore", over="ignore"):
            if "mean" in wanted:
                found["mean"] = float(finite.mean(dtype=np.float64)) if usable else None
            if "std" in wanted:
                found["std"] = float(finite.std(dtype=np.float64)) if usable else None
    if options.histogram is not None:
        lo, hi, bins = options.histogram
        if real:
            counts, _ = np.histogram(finite, bins=bins, range=(lo, hi))
            found["histogram"] = [int(n) for n in counts]
        else:
            found["histogram"] = None
    return found


def fill_stats(
    dtype: np.dtype[Any], fill_value: Any, size: int, options: StatsOptions
) -> ChunkStats:
    """The statistics of a missing chunk of ``size`` elements: all fill value, not read."""
    one = chunk_stats(np.full(1, fill_value, dtype=dtype), fill_value, options)
    for name in ("count", "nan_count", "fill_count"):
        if one.get(name) is not None:
            one[name] *= size
    if one.get("std") is not None:
        one["std"] = 0.0
    if one.get("histogram") is not None:
        one["histogram"] = [n * size for n in one["histogram"]]
    return one


def table_schema(ndim: int, options: StatsOptions) -> pa.Schema:
    """The columns of a chunk table whose arrays have at most ``ndim`` dimensions."""
    import pyarrow as pa

    fields = [
        pa.field("array", pa.string(), nullable=False),
        pa.field("shard_kind", pa.string(), nullable=False),
        pa.field("shard_path", pa.string(), nullable=False),
        pa.field("shard_index", pa.string()),
    ]
    fields += [pa.field(f"c{i}", pa.int64()) for i in range(ndim)]
    fields += [pa.field(f"start{i}", pa.int64()) for i in range(ndim)]
    fields += [pa.field(f"stop{i}", pa.int64()) for i in range(ndim)]
    fields += [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard_key", pa.string(), nullable=False),
        pa.field("exists", pa.bool_(), nullable=False),
        pa.field("nbytes", pa.int64()),
        pa.field("zip_file", pa.string()),
        pa.field("zip_offset", pa.int64()),
        pa.field("zip_length", pa.int64()),
    ]
    for name in options.stats:
        fields.append(pa.field(name, pa.float64() if name in _FLOAT_STATS else pa.int64()))
    if options.histogram is not None:
        fields.append(pa.field("histogram", pa.list_(pa.int64())))
    return pa.schema(fields)
