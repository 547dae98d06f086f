"""A PySpark data source whose partitions are shards: ``spark.read.format("shardedstore")``.

Register it once per session, then read a layout (a config ``.json``, a zarr directory,
zip or URL) as one of three tables::

    import shardedstore.spark

    shardedstore.spark.register(spark)
    chunks = (spark.read.format("shardedstore")
              .option("stats", "min,max").load("layout.json"))          # the chunk table
    maxima = (spark.read.format("shardedstore").option("table", "map")
              .option("function", "max").load("layout.json"))          # map_chunks
    cells = (spark.read.format("shardedstore").option("table", "values")
             .option("array", "temperature").load("layout.json"))      # values

Each partition is one shard (:func:`shardedstore.chunk_tasks`; for ``values``, an array
shard or a run of chunks of an array that is not array-sharded), read on the executors,
which need the same Python environment as the driver (``PYSPARK_PYTHON``). Filters on
``array``, ``shard_index`` and the sharded dimensions' ``c0``, ``c1``... skip whole
partitions of the chunk and map tables; filters on the dimensions and values of a
``values`` table skip partitions and chunks as :func:`shardedstore.values` does. Spark
applies every filter again on what is read.

Options:

``table``
    ``chunks`` (default), ``map`` or ``values``.
``array``
    Comma-separated array paths (default: every array; ``values`` needs them, arrays
    sharing their dimensions).
``stats``, ``histogram``
    The chunk table's statistics (``min,max`` or ``all``; ``lo,hi,bins``).
``function``
    For ``map``: a statistic's name (``min``, ``max``, ``mean``, ``std``, ``count``,
    ``nan_count``: one column of that name), or a name given to :func:`register` with
    its function and result schema.
``coords``, ``statistics``
    For ``values``: ``false`` for index columns only; a chunk-table directory for
    pruning by value (``none``: no pruning by value).
``storage_options``
    JSON object of fsspec options for a path that is a URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    EqualTo,
    Filter,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    LessThan,
    LessThanOrEqual,
)

from shardedstore.errors import ArgumentError
from shardedstore.table.stats import STATS

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType
    from zarr.abc.store import Store

    from shardedstore.table.tasks import ChunkTask
    from shardedstore.table.values import ValuesPlan

__all__ = ["ShardedStoreDataSource", "register"]

ChunkFunction = Callable[[np.ndarray[Any, Any]], Any]
"""``func(values)`` -> a mapping of column name to value (see :func:`shardedstore.map_chunks`)."""

_FILTER_PUSHDOWN = "spark.sql.python.filterPushdown.enabled"

_BUILT_IN = tuple(name for name in STATS if name != "fill_count")
"""Statistics ``.option("function", NAME)`` names without registering anything."""


def register(
    spark: SparkSession,
    *,
    functions: Mapping[str, tuple[ChunkFunction, str]] | None = None,
) -> None:
    """Register the ``shardedstore`` data source with a Spark session.

    Also sets ``spark.sql.python.filterPushdown.enabled`` (Spark asks Python data
    sources for the filters they can use only then), so that filters prune shards.

    Parameters
    ----------
    spark
        The session.
    functions
        Functions for ``.option("table", "map")``: name -> ``(func, schema)``, where
        ``func(values)`` returns a mapping of column name to value for a chunk's decoded
        values and ``schema`` is its columns in Spark's DDL (``"p90 double, hot
        bigint"``). ``func`` is pickled to the executors with the data source.

    Examples
    --------
    A function of one's own, then a table of its results per chunk (not a doctest:
    importing this module needs pyspark, which the wheels-only test runs lack)::

        def hot(values):
            return {"hot": int((values > 30).sum())}

        register(spark, functions={"hot": (hot, "hot bigint")})
        spark.read.format("shardedstore").option("table", "map") \
            .option("function", "hot").load("/data/layout.json")
    """
    source: type[ShardedStoreDataSource] = ShardedStoreDataSource
    if functions:
        checked = {}
        for name, (func, schema) in functions.items():
            if not callable(func) or not isinstance(schema, str):
                raise ArgumentError(
                    f"functions[{name!r}] must be (function, schema DDL string), e.g. "
                    '(hot, "hot bigint")'
                )
            checked[str(name)] = (func, schema)
        # A class of its own, pickled by value to the executors with its functions.
        source = type(
            "ShardedStoreDataSource",
            (ShardedStoreDataSource,),
            {"functions": {**ShardedStoreDataSource.functions, **checked}},
        )
    spark.conf.set(_FILTER_PUSHDOWN, "true")
    spark.dataSource.register(source)


# ------------------------------------------------------------------ options


@dataclass(frozen=True)
class _Options:
    """The data source's options, checked (picklable: sent to the executors)."""

    path: str
    table: str
    arrays: tuple[str, ...] | None
    stats: str
    histogram: tuple[float, float, int] | None
    function: str
    coords: bool
    statistics: str | None
    storage_options: dict[str, Any] | None

    @classmethod
    def of(cls, options: Mapping[str, str]) -> _Options:
        path = options.get("path")
        if not path:
            raise ArgumentError(
                'shardedstore data source: give the layout to load: .load("layout.json")'
            )
        table = str(options.get("table", "chunks")).lower()
        if table not in ("chunks", "map", "values"):
            raise ArgumentError(
                f"shardedstore data source: option table must be chunks, map or values, "
                f"got {table!r}"
            )
        arrays = options.get("array")
        names = tuple(a.strip() for a in arrays.split(",") if a.strip()) if arrays else None
        if table == "values" and not names:
            raise ArgumentError(
                'shardedstore data source: table values needs .option("array", "PATH") '
                "(arrays sharing their dimensions, comma-separated)"
            )
        histogram = None
        if options.get("histogram"):
            parts = str(options["histogram"]).split(",")
            try:
                histogram = (float(parts[0]), float(parts[1]), int(parts[2]))
            except (IndexError, ValueError):
                raise ArgumentError(
                    f"option histogram must be LO,HI,BINS, got {options['histogram']!r}"
                ) from None
        storage = options.get("storage_options")
        try:
            storage_options = json.loads(storage) if storage else None
        except ValueError:
            raise ArgumentError(
                f"option storage_options must be a JSON object, got {storage!r}"
            ) from None
        statistics = options.get("statistics")
        return cls(
            str(path),
            table,
            names,
            str(options.get("stats", "")),
            histogram,
            str(options.get("function", "")),
            str(options.get("coords", "true")).lower() not in ("false", "0", "no"),
            None if statistics is None else str(statistics),
            storage_options,
        )

    def store(self) -> Store:
        """The layout (or zarr store) at the path, read-only."""
        return _open(self.path, self.storage_options)


def _open(path: str, storage_options: dict[str, Any] | None) -> Store:
    from shardedstore.shards.importing import open_source

    return open_source(path, storage_options, what="the path")


_PLANS: dict[tuple[Any, ...], ValuesPlan] = {}
"""Values plans made in this process (an executor reads many partitions of one)."""


def _values_plan(
    options: _Options, *, fresh: bool = False, shape: tuple[int, ...] | None = None
) -> ValuesPlan:
    """The values plan of ``options``: made anew when ``fresh`` (the driver plans from the
    layout as it is now) or when the one kept has another ``shape`` than the driver's
    (arrays grown since this worker made it)."""
    from shardedstore.table.values import ValuesPlan

    statistics: Any = None
    if options.statistics == "none":
        statistics = False
    elif options.statistics:
        statistics = options.statistics
    key = (options.path, options.arrays, options.coords, options.statistics)
    plan = _PLANS.get(key)
    if plan is None or fresh or (shape is not None and plan.shape != shape):
        if len(_PLANS) > 16:
            _PLANS.clear()
        plan = _PLANS[key] = ValuesPlan(
            options.store(), list(options.arrays or ()), coords=options.coords,
            statistics=statistics,
        )  # fmt: skip
    return plan


# ------------------------------------------------------------------ schemas


def _spark_type(kind: pa.DataType) -> tuple[str, pa.DataType]:
    """A Spark SQL type (DDL) for an Arrow type, and the Arrow type Spark takes for it."""
    import pyarrow as pa

    simple = {
        pa.bool_(): "boolean",
        pa.int8(): "tinyint",
        pa.int16(): "smallint",
        pa.int32(): "int",
        pa.int64(): "bigint",
        pa.float32(): "float",
        pa.float64(): "double",
        pa.string(): "string",
    }
    if kind in simple:
        return simple[kind], kind
    widened = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}
    if kind in widened:
        return simple[widened[kind]], widened[kind]
    if kind == pa.uint64():
        return "decimal(20,0)", pa.decimal128(20, 0)
    if kind == pa.float16():
        return "float", pa.float32()
    if pa.types.is_timestamp(kind):
        return "timestamp_ntz", pa.timestamp("us")
    if pa.types.is_list(kind):
        inner, arrow = _spark_type(kind.value_type)
        return f"array<{inner}>", pa.list_(arrow)
    raise ArgumentError(
        f"shardedstore data source: a column of type {kind} has no Spark type; read the "
        "arrays of numbers, booleans, strings or times"
    )


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _spark_schema(schema: pa.Schema) -> tuple[str, pa.Schema]:
    """Spark's DDL for an Arrow schema, and the Arrow schema of the batches it takes."""
    import pyarrow as pa

    ddl, fields = [], []
    for field in schema:
        spark, arrow = _spark_type(field.type)
        ddl.append(f"{_quote(field.name)} {spark}")
        fields.append(pa.field(field.name, arrow))
    return ", ".join(ddl), pa.schema(fields)


def _map_schema(options: _Options, functions: Mapping[str, tuple[ChunkFunction, str]]) -> str:
    from shardedstore.table.planner import chunk_table_schema
    from shardedstore.table.tasks import identity_names

    table = chunk_table_schema(options.store())
    ndim = sum(1 for name in table.names if name.startswith("start"))
    identity, _ = _spark_schema(_select(table, identity_names(ndim)))
    name = options.function
    if name in functions:
        return f"{identity}, {functions[name][1]}"
    if name in _BUILT_IN:
        kind = "double" if name in ("min", "max", "mean", "std") else "bigint"
        return f"{identity}, {_quote(name)} {kind}"
    known = ", ".join([*_BUILT_IN, *functions])
    raise ArgumentError(
        f"shardedstore data source: option function must name a statistic or a function "
        f"given to shardedstore.spark.register(functions=...); got {name!r} ({known})"
    )


def _select(schema: pa.Schema, names: Sequence[str]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([schema.field(name) for name in names])


# ------------------------------------------------------------------ the source


class ShardedStoreDataSource(DataSource):
    """The ``shardedstore`` PySpark data source (see the module's documentation).

    Register it with :func:`register`; ``spark.read.format("shardedstore")`` then reads
    a layout's chunk table, per-chunk function results or values, a shard per
    partition.
    """

    functions: Mapping[str, tuple[ChunkFunction, str]] = {}
    """Functions ``.option("function", NAME)`` may name (see :func:`register`)."""

    @classmethod
    def name(cls) -> str:
        return "shardedstore"

    def schema(self) -> str:
        options = _Options.of(self.options)
        if options.table == "chunks":
            from shardedstore.table.planner import chunk_table_schema

            table = chunk_table_schema(
                options.store(), stats=options.stats, histogram=options.histogram
            )
            return _spark_schema(table)[0]
        if options.table == "map":
            return _map_schema(options, self.functions)
        return _spark_schema(_values_plan(options, fresh=True).schema)[0]

    def reader(self, schema: StructType) -> DataSourceReader:
        options = _Options.of(self.options)
        if options.table == "values":
            return _ValuesReader(options, schema)
        return _TaskReader(options, schema, dict(self.functions))


def _arrow_schema(schema: StructType) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def _cast(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A batch in the Arrow types Spark takes for the schema's columns."""
    if batch.schema.equals(schema):
        return batch
    return batch.select(schema.names).cast(schema)


class _TaskPartition(InputPartition):
    """One task of the plan: one shard and one array."""

    def __init__(self, task: ChunkTask) -> None:
        super().__init__(task.shard)
        self.task = task


def _values_of(filter: Filter) -> list[Any] | None:
    """The values an EqualTo or In filter allows, else None."""
    if isinstance(filter, EqualTo):
        return [filter.value]
    if isinstance(filter, In):
        return list(filter.value)
    return None


def _column(filter: Filter) -> str | None:
    attribute = getattr(filter, "attribute", None)
    return attribute[0] if isinstance(attribute, tuple) and len(attribute) == 1 else None


def _allows(filter: Filter, value: Any) -> bool:
    """Whether ``value`` can pass ``filter`` (True when the filter is not understood)."""
    try:
        if isinstance(filter, EqualTo):
            return bool(value == filter.value)
        if isinstance(filter, In):
            return value in filter.value
        if isinstance(filter, GreaterThan):
            return bool(value > filter.value)
        if isinstance(filter, GreaterThanOrEqual):
            return bool(value >= filter.value)
        if isinstance(filter, LessThan):
            return bool(value < filter.value)
        if isinstance(filter, LessThanOrEqual):
            return bool(value <= filter.value)
    except TypeError:
        return True
    return True


class _TaskReader(DataSourceReader):
    """The chunk and map tables: a partition per task (shard and array)."""

    def __init__(
        self,
        options: _Options,
        schema: StructType,
        functions: dict[str, tuple[ChunkFunction, str]],
    ) -> None:
        self.options = options
        self.arrow = _arrow_schema(schema)
        self.functions = functions
        self.filters: list[Filter] = []

    def pushFilters(self, filters: list[Filter]) -> Iterator[Filter]:
        for filter in filters:
            if _column(filter) in ("array", "shard_index") or (
                (_column(filter) or "").startswith("c") and (_column(filter) or "c")[1:].isdigit()
            ):
                self.filters.append(filter)
            yield filter  # Spark filters the rows again

    def _keeps(self, task: ChunkTask) -> bool:
        for filter in self.filters:
            column = _column(filter)
            if column == "array" and not _allows(filter, task.array.path):
                return False
            if (
                column == "shard_index"
                and task.shard_index is not None
                and not _allows(filter, task.shard_index)
            ):
                return False
            if column and column.startswith("c") and column[1:].isdigit():
                position = int(column[1:])
                lead = task.array.lead
                if position < len(lead) and not _allows(filter, lead[position]):
                    return False
        return True

    def partitions(self) -> Sequence[InputPartition]:
        from shardedstore.table.planner import chunk_tasks

        options = self.options
        stats = options.stats if options.table == "chunks" else ()
        histogram = options.histogram if options.table == "chunks" else None
        tasks = chunk_tasks(options.store(), options.arrays, stats=stats, histogram=histogram)
        return [_TaskPartition(task) for task in tasks if self._keeps(task)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _TaskPartition)
        task = partition.task
        if self.options.table == "chunks":
            table = task.table()
        else:
            table = task.map(_function(self.options.function, self.functions))
        for batch in table.to_batches():
            yield _cast(batch, self.arrow)


def _function(name: str, functions: Mapping[str, tuple[ChunkFunction, str]]) -> ChunkFunction:
    if name in functions:
        return functions[name][0]
    from shardedstore.table.stats import StatsOptions, chunk_stats

    options = StatsOptions((name,))

    def statistic(values: np.ndarray[Any, Any]) -> dict[str, Any]:
        return {name: chunk_stats(values, None, options)[name]}

    return statistic


class _FragmentPartition(InputPartition):
    """One fragment of a values table: an array shard or a run of chunks."""

    def __init__(self, position: int, shard_index: str | None, shape: tuple[int, ...]) -> None:
        super().__init__(shard_index)
        self.position = position
        self.shape = shape


def _expression(filter: Filter, schema: pa.Schema) -> pc.Expression | None:
    """A Spark filter on a column as an Arrow filter (None when it cannot be one)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = _column(filter)
    comparisons = (EqualTo, In, GreaterThan, GreaterThanOrEqual, LessThan, LessThanOrEqual)
    if column is None or column not in schema.names or not isinstance(filter, comparisons):
        return None
    field = pc.field(column)
    kind = schema.field(column).type
    try:
        values = _values_of(filter)
        if values is not None:
            return field.isin(pa.array(values).cast(kind))
        value = pa.scalar(filter.value).cast(kind)
    except (
        pa.ArrowInvalid,
        pa.ArrowNotImplementedError,
        pa.ArrowTypeError,
        TypeError,
        ValueError,
    ):
        return None
    if isinstance(filter, GreaterThan):
        return field > value
    if isinstance(filter, GreaterThanOrEqual):
        return field >= value
    if isinstance(filter, LessThan):
        return field < value
    if isinstance(filter, LessThanOrEqual):
        return field <= value
    return None


class _ValuesReader(DataSourceReader):
    """The values table: a partition per fragment that can hold a passing row."""

    def __init__(self, options: _Options, schema: StructType) -> None:
        self.options = options
        self.arrow = _arrow_schema(schema)
        self.where: pc.Expression | None = None
        # Made on the driver: the layout as it is now; executors check their plan's shape.
        self.shape = _values_plan(options, fresh=True).shape

    def pushFilters(self, filters: list[Filter]) -> Iterator[Filter]:
        table = _values_plan(self.options, shape=self.shape).schema
        for filter in filters:
            expression = _expression(filter, table)
            if expression is not None:
                self.where = expression if self.where is None else self.where & expression
            yield filter  # Spark filters the rows again

    def partitions(self) -> Sequence[InputPartition]:
        plan = _values_plan(self.options, shape=self.shape)
        pruned = plan.prune(self.where)
        kept = {id(fragment) for fragment, _ in pruned.selected}
        return [
            _FragmentPartition(position, fragment.shard_index, plan.shape)
            for position, fragment in enumerate(plan.fragments)
            if id(fragment) in kept
        ]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, _FragmentPartition)
        plan = _values_plan(self.options, shape=partition.shape)
        fragment = plan.fragments[partition.position]
        # The filters skip chunks only (a hint): Spark filters the rows itself, with its
        # own semantics (NaN is above every number in Spark SQL, not in Arrow).
        for batch in plan.batches(self.arrow.names, None, [fragment], hint=self.where):
            if batch.num_rows:
                yield _cast(batch, self.arrow)
