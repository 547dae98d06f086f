"""SQL over a layout: every array a table, ``chunks`` the chunk table (DuckDB, DataFusion).

:func:`register_tables` registers, on a DuckDB connection or a DataFusion
``SessionContext``, one :class:`~shardedstore.table.datasets.ValuesDataset` per array
(named by its path) and the chunk table as ``chunks``; the engines push the columns a
query needs and the filters they can into the scan. :func:`sql` does that on a
connection of its own and runs one query (the CLI's ``sql`` command).

DuckDB pushes comparisons of integers, strings and times into a Python scan, but not
ranges on floating-point columns (``t > 40``: DuckDB orders NaN above every number,
Arrow does not). :func:`sql` therefore reads the query's own ``WHERE`` clause with
DuckDB's parser (``json_serialize_sql``) and, for a query over one table, hands the
simple conditions on its columns to the scan as a pruning hint: chunks are skipped by
them (a chunk holding NaNs never is), while DuckDB still filters every row itself.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from zarr.abc.store import Store

from shardedstore.errors import ArgumentError, MissingDependencyError
from shardedstore.table.chunks import as_layout, chunk_table, hierarchy_arrays, require_pyarrow
from shardedstore.table.datasets import ChunkTableDataset, ValuesDataset
from shardedstore.table.planner import chunk_table_schema
from shardedstore.table.values import Statistics, ValuesPlan

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.compute as pc

__all__ = ["Engine", "duckdb_hint", "register_tables", "sql"]

Engine = Literal["duckdb", "datafusion"]


def _engine_of(connection: Any) -> Engine:
    module = type(connection).__module__.split(".")[0]
    if module in ("duckdb", "_duckdb"):
        return "duckdb"
    if module == "datafusion":
        return "datafusion"
    raise ArgumentError(
        f"register_tables: {type(connection).__name__} is neither a DuckDB connection "
        "(duckdb.connect()) nor a DataFusion SessionContext"
    )


def _chunks_dataset(store: Store, chunk_table_dir: str | os.PathLike[str] | None) -> Any:
    """The chunk table: a written directory as it is, else computed on the first scan."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    if chunk_table_dir is not None:
        partitioning = pads.partitioning(pa.schema([("array", pa.string())]), flavor="hive")
        return pads.dataset(os.fspath(chunk_table_dir), format="parquet", partitioning=partitioning)
    return ChunkTableDataset(chunk_table_schema(store), lambda: chunk_table(store, progress=False))


def _plans(
    store: Store,
    arrays: Iterable[str] | None,
    tables: Mapping[str, Sequence[str]] | None,
    coords: bool,
    statistics: Statistics,
    named: frozenset[str] | None = None,
) -> dict[str, ValuesPlan]:
    """A values plan per table: each array (or those named), and each table of arrays;
    with ``named``, only the tables whose name (lower case) is in it."""
    layout = as_layout(store)
    every = hierarchy_arrays(layout)
    wanted: dict[str, list[str]] = {}
    explicit = arrays is not None
    for path in every if arrays is None else [a.strip("/") for a in arrays]:
        wanted[path] = [path]
    for name, members in (tables or {}).items():
        wanted[name] = list(members)
    plans = {}
    for name, members in wanted.items():
        if named is not None and name.lower() not in named:
            continue
        try:
            plans[name] = ValuesPlan(
                layout, members, coords=coords, statistics=statistics, hierarchy=every
            )
        except ArgumentError:
            if explicit or name in (tables or {}):
                raise
            continue  # an array Arrow has no type for (complex numbers): not a table
    return plans


def register_tables(
    connection: Any,
    store: Store,
    arrays: Iterable[str] | None = None,
    *,
    tables: Mapping[str, Sequence[str]] | None = None,
    coords: bool = True,
    statistics: Statistics = None,
    chunk_table_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Register the arrays of a layout as tables, and its chunk table as ``chunks``.

    Each table is a :class:`~shardedstore.table.datasets.ValuesDataset` (see
    :func:`shardedstore.values` for its columns and rows): the engine pushes the
    columns a query needs and the filters it can into the scan, which skips chunks
    before reading them.

    Parameters
    ----------
    connection
        A DuckDB connection (``duckdb.connect()``) or a DataFusion ``SessionContext``.
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy.
    arrays
        Array paths to register (default: every array whose dtype has an Arrow type:
        numbers, booleans, strings, times). Each table is named by the array's path
        (quote it in SQL: ``"sim/temperature"``; DataFusion reads a dot as
        ``schema.table``, so a dot in a path becomes ``_`` there).
    tables
        More tables, each of several arrays sharing their dimensions: name -> paths.
    coords, statistics
        As for :func:`shardedstore.values`.
    chunk_table_dir
        A directory written by :func:`write_chunk_table` to serve as ``chunks`` (default:
        the chunk table computed, without statistics, on the first query that reads it).

    Returns
    -------
    list of str
        The names registered, ``chunks`` last.

    Examples
    --------
    >>> con = duckdb.connect()  # doctest: +SKIP
    >>> register_tables(con, shardedstore.open("layout.json"))  # doctest: +SKIP
    ['temperature', 'time', 'chunks']
    >>> con.sql('SELECT time, max(temperature) FROM temperature GROUP BY time')  # doctest: +SKIP
    """
    require_pyarrow()
    engine = _engine_of(connection)
    plans = _plans(store, arrays, tables, coords, statistics)
    return _register_all(connection, engine, store, plans, chunk_table_dir, {})


def _register_all(
    connection: Any,
    engine: Engine,
    store: Store,
    plans: Mapping[str, ValuesPlan],
    chunk_table_dir: str | os.PathLike[str] | None,
    hints: Mapping[str, pc.Expression],
    chunks_table: bool = True,
) -> list[str]:
    registered = []
    for name, plan in plans.items():
        dataset = ValuesDataset.from_plan(plan, hint=hints.get(name))
        registered.append(_register(connection, engine, name, dataset))
    if not chunks_table:
        return registered
    chunks = _chunks_dataset(as_layout(store), chunk_table_dir)
    registered.append(_register(connection, engine, "chunks", chunks))
    return registered


def _register(connection: Any, engine: Engine, name: str, dataset: Any) -> str:
    if engine == "duckdb":
        connection.register(name, dataset)
        return name
    name = name.replace(".", "_")
    if connection.table_exist(name):
        connection.deregister_table(name)
    connection.register_dataset(name, dataset)
    return name


# ------------------------------------------------------------- DuckDB's WHERE


_COMPARISONS = {
    "COMPARE_EQUAL": "==",
    "COMPARE_LESSTHAN": "<",
    "COMPARE_GREATERTHAN": ">",
    "COMPARE_LESSTHANOREQUALTO": "<=",
    "COMPARE_GREATERTHANOREQUALTO": ">=",
}
_FLIPPED = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "=="}


def _number(node: Mapping[str, Any]) -> float | None:
    """A numeric constant of DuckDB's parse tree (through casts), else None."""
    while node.get("class") == "CAST":
        node = node.get("child") or {}
    if node.get("class") != "CONSTANT":
        return None
    literal = node.get("literal")
    if not isinstance(literal, Mapping):
        return None
    if str(literal.get("kind", "")).upper() not in {
        "INTEGER", "BIGINT", "HUGEINT", "NUMERIC", "DECIMAL", "DOUBLE", "FLOAT",
    }:  # fmt: skip
        return None
    try:
        value = float(str(literal.get("text")))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _column(node: Mapping[str, Any]) -> str | None:
    if node.get("class") != "COLUMN_REF":
        return None
    names = node.get("column_names")
    if not isinstance(names, list) or not names:
        return None
    return str(names[-1])


def _condition(node: Mapping[str, Any], columns: set[str]) -> pc.Expression | None:
    """``column op number`` (or BETWEEN) on one of ``columns``, as an Arrow filter."""
    import pyarrow.compute as pc

    kind = node.get("class")
    if kind == "COMPARISON" and node.get("type") in _COMPARISONS:
        op = _COMPARISONS[str(node["type"])]
        left, right = node.get("left") or {}, node.get("right") or {}
        name, value = _column(left), _number(right)
        if name is None:
            name, value, op = _column(right), _number(left), _FLIPPED[op]
        if name is None or value is None or name not in columns:
            return None
        field = pc.field(name)
        return {
            "==": field == value,
            "<": field < value,
            ">": field > value,
            "<=": field <= value,
            ">=": field >= value,
        }[op]
    if kind == "BETWEEN":
        name = _column(node.get("input") or {})
        low, high = _number(node.get("lower") or {}), _number(node.get("upper") or {})
        if name is None or name not in columns or low is None or high is None:
            return None
        return (pc.field(name) >= low) & (pc.field(name) <= high)
    return None


def _shared_cursor() -> Any:
    """A new connection to the process's in-memory DuckDB database, which holds nothing
    but what each connection registers for itself (queries that only read use it: a
    connection of their own costs more than the query)."""
    global _database
    import duckdb

    with _database_lock:
        if _database is None:
            database = duckdb.connect()
            # A name no table has must not bind to a Python variable of this module.
            database.execute("SET GLOBAL python_enable_replacements = false")
            _database = database
        return _database.cursor()


_database: Any = None
_database_lock = threading.Lock()


@functools.lru_cache(maxsize=256)
def _parsed(query: str) -> Mapping[str, Any] | None:
    """The one statement of ``query`` as DuckDB's parser reads it (``json_serialize_sql``,
    which takes ``SELECT`` statements alone); None for anything else (read-only: cached)."""
    cursor = _shared_cursor()
    try:
        text = cursor.execute("SELECT json_serialize_sql(?)", [query]).fetchall()[0][0]
        parsed = json.loads(text)
    except Exception:  # a statement the parser or its serializer does not take
        return None
    finally:
        cursor.close()
    statements = parsed.get("statements") if isinstance(parsed, dict) else None
    if parsed.get("error") or not isinstance(statements, list) or len(statements) != 1:
        return None
    statement = statements[0]
    return statement if isinstance(statement, dict) else None


def _strings(node: Any, found: set[str]) -> set[str]:
    """Every string of a parse tree, in lower case (names, aliases, literals)."""
    if isinstance(node, str):
        found.add(node.lower())
    elif isinstance(node, dict):
        for value in node.values():
            _strings(value, found)
    elif isinstance(node, list):
        for value in node:
            _strings(value, found)
    return found


@functools.lru_cache(maxsize=256)
def _named(query: str) -> frozenset[str] | None:
    """The names (lower case) a single ``SELECT`` may read tables by; None when the
    query is anything else or calls a table function (which may name a table in a string)."""
    statement = _parsed(query)
    if statement is None or '"TABLE_FUNCTION"' in json.dumps(statement):
        return None
    return frozenset(_strings(statement, set()))


def duckdb_hint(
    query: str, tables: Mapping[str, Iterable[str]]
) -> tuple[str, pc.Expression] | None:
    """The table a DuckDB query reads alone and the simple conditions of its ``WHERE``.

    For a single ``SELECT`` over one of ``tables`` (name -> its floating-point columns)
    with no join, subquery, CTE or set operation, the conjuncts of ``WHERE`` of the form
    ``column op number`` or ``column BETWEEN a AND b`` on those columns, ANDed. Every
    row the query keeps satisfies them, so they may skip chunks (never rows: DuckDB
    filters rows itself). None when the query is anything else.
    """
    statement = _parsed(query)
    if statement is None:
        return None
    node = statement.get("node") or {}
    if node.get("type") != "SELECT_NODE" or (node.get("cte_map") or {}).get("map"):
        return None
    source = node.get("from_table") or {}
    if source.get("type") != "BASE_TABLE" or source.get("schema_name"):
        return None
    name = str(source.get("table_name"))
    if name not in tables:
        return None
    text = json.dumps(node)
    if '"SUBQUERY"' in text:
        return None  # a subquery could read the table again, with other conditions
    where = node.get("where_clause")
    if not isinstance(where, Mapping):
        return None
    parts = where.get("children", []) if where.get("type") == "CONJUNCTION_AND" else [where]
    columns = set(tables[name])
    conditions = (_condition(p, columns) for p in parts if isinstance(p, Mapping))
    found = [c for c in conditions if c is not None]
    if not found:
        return None
    hint = found[0]
    for condition in found[1:]:
        hint = hint & condition
    return name, hint


def sql(
    store: Store,
    query: str,
    *,
    engine: Engine = "duckdb",
    arrays: Iterable[str] | None = None,
    tables: Mapping[str, Sequence[str]] | None = None,
    coords: bool = True,
    statistics: Statistics = None,
    chunk_table_dir: str | os.PathLike[str] | None = None,
) -> pa.Table:
    """Run one SQL query over a layout: every array a table, ``chunks`` the chunk table.

    Parameters
    ----------
    store
        A :class:`ShardedStore` or any zarr store holding a hierarchy.
    query
        The query (DuckDB's or DataFusion's dialect). Quote array paths and the
        ``array`` column: ``SELECT "array", count(*) FROM chunks GROUP BY ALL``.
    engine
        ``"duckdb"`` (``pip install "shardedstore[duckdb]"``) or ``"datafusion"``
        (``pip install "shardedstore[datafusion]"``).
    arrays, tables, coords, statistics, chunk_table_dir
        As for :func:`register_tables`.

    Returns
    -------
    pyarrow.Table
        The result (empty, without columns, for a statement that returns none).

    Notes
    -----
    With DuckDB, a query over one table also skips chunks by its simple conditions on
    floating-point columns (see :func:`duckdb_hint`), which DuckDB does not push into
    the scan itself.
    """
    require_pyarrow()
    import pyarrow as pa

    named: frozenset[str] | None = None
    if engine == "duckdb":
        try:
            import duckdb
        except ImportError:
            raise MissingDependencyError(
                'SQL with DuckDB needs duckdb: pip install "shardedstore[duckdb]"'
            ) from None
        named = _named(query)
        # Only a single SELECT (it reads, and leaves nothing behind) shares the database.
        connection: Any = _shared_cursor() if named is not None else duckdb.connect()
    elif engine == "datafusion":
        try:
            import datafusion
        except ImportError:
            raise MissingDependencyError(
                'SQL with DataFusion needs datafusion: pip install "shardedstore[datafusion]"'
            ) from None
        connection = datafusion.SessionContext()
    else:
        raise ArgumentError(f"engine must be 'duckdb' or 'datafusion', got {engine!r}")
    if engine == "datafusion":
        plans = _plans(store, arrays, tables, coords, statistics)
        _register_all(connection, engine, store, plans, chunk_table_dir, {})
        return connection.sql(query).to_arrow_table()
    try:
        plans = _plans(store, arrays, tables, coords, statistics, named)
        hints: dict[str, pc.Expression] = {}
        found = duckdb_hint(query, {name: plan.schema.names for name, plan in plans.items()})
        if found is not None:
            hints[found[0]] = found[1]
        chunks_table = named is None or "chunks" in named
        _register_all(connection, engine, store, plans, chunk_table_dir, hints, chunks_table)
        relation = connection.sql(query)
        return pa.table({}) if relation is None else relation.to_arrow_table()
    finally:
        connection.close()
