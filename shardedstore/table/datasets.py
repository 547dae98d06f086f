"""Arrays as ``pyarrow.dataset.Dataset`` objects, which query engines scan with pushdown.

DuckDB (``connection.register(name, dataset)``) calls ``scanner(columns=[...],
filter=...)`` once per scan; DataFusion (``SessionContext.register_dataset``) calls
``get_fragments(filter)`` and scans each fragment in a partition of its own; Polars
(``scan_pyarrow_dataset``) and pyarrow call ``scanner`` or ``to_table``. Both
classes here subclass ``pyarrow.dataset.Dataset`` (engines check with ``isinstance``)
without its native state, as Lance's ``LanceDataset`` does: every method a consumer
calls is defined here, and ``scanner`` applies the filter exactly (engines may drop
the conditions they push down), so pruning is only ever an optimization.

- :class:`ValuesDataset`: the values of arrays (:mod:`shardedstore.table.values`);
  fragments are array shards (or runs of chunks).
- :class:`ChunkTableDataset`: the chunk table, computed on the first scan (or read
  from a written chunk-table directory), so that registering it costs nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store

from shardedstore.table.chunks import require_pyarrow
from shardedstore.table.values import Fragment, Pruned, Statistics, ValuesPlan

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

__all__ = ["ChunkTableDataset", "ValuesDataset", "ValuesFragment"]


def _dataset_base() -> type:
    require_pyarrow()
    import pyarrow.dataset as pads

    base: type = pads.Dataset
    return base


class _DatasetMethods:
    """The members of ``pyarrow.dataset.Dataset`` a consumer may call, through ``scanner``."""

    def scanner(self, **kwargs: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def schema(self) -> pa.Schema:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_batches(self, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        return iter(self.scanner(**kwargs).to_batches())

    def to_table(self, **kwargs: Any) -> pa.Table:
        return self.scanner(**kwargs).to_table()

    def to_reader(self, **kwargs: Any) -> pa.RecordBatchReader:
        return self.scanner(**kwargs).to_reader()

    def head(self, num_rows: int, **kwargs: Any) -> pa.Table:
        return self.scanner(**kwargs).head(num_rows)

    def count_rows(self, **kwargs: Any) -> int:
        return int(self.scanner(**kwargs).count_rows())

    @property
    def partition_expression(self) -> pc.Expression:
        import pyarrow.compute as pc

        return pc.scalar(True)

    def __reduce__(self) -> Any:
        raise TypeError(
            f"{type(self).__name__} does not pickle; send the layout and array names "
            "(or chunk_tasks) to other processes instead"
        )


def _scanner(
    schema: pa.Schema, columns: Sequence[str] | None, batches: Iterator[pa.RecordBatch]
) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as pads

    names = list(schema.names) if columns is None else list(columns)
    projected = pa.schema([schema.field(name) for name in names])
    return pads.Scanner.from_batches(batches, schema=projected)


class ValuesFragment:
    """One fragment of a :class:`ValuesDataset`: an array shard or a run of chunks.

    DataFusion plans one partition per fragment and calls :meth:`scanner` for each,
    with the filter it pushed down.
    """

    def __init__(
        self,
        plan: ValuesPlan,
        fragment: Fragment,
        chunks: list[tuple[int, ...]] | None,
        pruned: Pruned | None,
        where: pc.Expression | None,
    ) -> None:
        self.plan = plan
        self.fragment = fragment
        self.chunks = chunks
        self.pruned = pruned
        self.where = where

    @property
    def physical_schema(self) -> pa.Schema:
        return self.plan.schema

    @property
    def partition_expression(self) -> pc.Expression:
        import pyarrow.compute as pc

        return pc.scalar(True)

    def scanner(
        self,
        schema: pa.Schema | None = None,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        plan = self.plan
        projected = list(plan.schema.names) if columns is None else list(columns)
        scan = plan.scan_schema(projected, filter)
        same = self.pruned is not None and (
            filter is self.where
            or (filter is not None and self.where is not None and filter.equals(self.where))
        )
        if same and self.chunks is not None and self.pruned is not None:
            pruned = Pruned([(self.fragment, self.chunks)], self.pruned.known)
            batches = plan.read(pruned, projected, scan, filter)
        else:
            batches = plan.batches(projected, filter, [self.fragment])
        return _scanner(plan.schema, projected, batches)

    def to_batches(self, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        return iter(self.scanner(**kwargs).to_batches())

    def to_table(self, **kwargs: Any) -> pa.Table:
        return self.scanner(**kwargs).to_table()

    def count_rows(self, **kwargs: Any) -> int:
        return int(self.scanner(**kwargs).count_rows())

    def __repr__(self) -> str:
        return f"<ValuesFragment shard {self.fragment.shard_index} {self.fragment.ranges}>"


class ValuesDataset(_DatasetMethods, _dataset_base()):  # type: ignore[misc]
    """The values of arrays as a ``pyarrow.dataset.Dataset`` with pushdown.

    Register it with any engine that scans pyarrow datasets (DuckDB's
    ``connection.register``, DataFusion's ``register_dataset``, Polars'
    ``scan_pyarrow_dataset``): the columns a query needs and the filter it pushes
    down reach :meth:`scanner`, which prunes chunks and reads only those columns (see
    :func:`shardedstore.values`). Made once per table (the arrays' metadata and
    coordinates are read); each scan lists what it needs afresh.

    Parameters
    ----------
    store, array, coords, statistics
        As for :func:`shardedstore.values`.

    Examples
    --------
    >>> import duckdb  # doctest: +SKIP
    >>> con = duckdb.connect()  # doctest: +SKIP
    >>> con.register("temperature", ValuesDataset(store, "temperature"))  # doctest: +SKIP
    >>> con.sql("SELECT time, max(temperature) FROM temperature GROUP BY time")  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        array: str | Sequence[str],
        *,
        coords: bool = True,
        statistics: Statistics = None,
    ) -> None:
        # No super().__init__(): pyarrow's Dataset cannot be made from Python.
        self.plan = ValuesPlan(store, array, coords=coords, statistics=statistics)
        self.hint: pc.Expression | None = None

    @classmethod
    def from_plan(cls, plan: ValuesPlan, hint: pc.Expression | None = None) -> ValuesDataset:
        """A dataset over a plan already made; ``hint`` skips chunks in every scan (a
        condition every row the consumer keeps satisfies, which it filters by itself)."""
        dataset = cls.__new__(cls)
        dataset.plan = plan
        dataset.hint = hint
        return dataset

    @property
    def schema(self) -> pa.Schema:
        return self.plan.schema

    def scanner(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """A scanner of the rows passing ``filter``, holding ``columns`` (default: all).

        Chunks are pruned and read only when the scanner's batches are read.
        """
        batches = self.plan.batches(columns, filter, hint=self.hint)
        return _scanner(self.schema, columns, batches)

    def get_fragments(self, filter: pc.Expression | None = None) -> list[ValuesFragment]:
        """The fragments holding a chunk that can pass ``filter`` (pruned once, here)."""
        pruned = self.plan.prune(filter)
        return [
            ValuesFragment(self.plan, fragment, chunks, pruned, filter)
            for fragment, chunks in pruned.selected
        ]

    def __repr__(self) -> str:
        arrays = ", ".join(a.path for a in self.plan.arrays)
        return f"<ValuesDataset {arrays} {self.plan.shape}>"


class ChunkTableDataset(_DatasetMethods, _dataset_base()):  # type: ignore[misc]
    """A table made on its first scan (the chunk table), as a ``pyarrow.dataset.Dataset``.

    Parameters
    ----------
    schema
        The table's schema, known before it is made.
    make
        Makes the table (called once, on the first scan).
    """

    def __init__(self, schema: pa.Schema, make: Callable[[], pa.Table]) -> None:
        self._schema = schema
        self._make = make
        self._table: pa.Table | None = None
        self._lock = threading.Lock()

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    def table(self) -> pa.Table:
        with self._lock:
            if self._table is None:
                self._table = self._make().select(self._schema.names).cast(self._schema)
            return self._table

    def scanner(
        self,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        import pyarrow.dataset as pads

        def batches() -> Iterator[pa.RecordBatch]:
            scanner = pads.dataset(self.table()).scanner(columns=columns, filter=filter)
            yield from scanner.to_batches()

        return _scanner(self.schema, columns, batches())

    def get_fragments(self, filter: pc.Expression | None = None) -> list[Any]:
        return [_WholeFragment(self)]


class _WholeFragment:
    def __init__(self, dataset: ChunkTableDataset) -> None:
        self.dataset = dataset

    def scanner(self, schema: pa.Schema | None = None, **kwargs: Any) -> Any:
        return self.dataset.scanner(**kwargs)
