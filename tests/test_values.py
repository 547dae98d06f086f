"""Arrays as tables: values(), pruning, SQL in DuckDB and DataFusion, the planner, the CLI.

Every answer is compared with what numpy computes on the data written.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    ArgumentError,
    ShardedStore,
    StoredChunk,
    array_shard_directory_store,
    chunk_table,
    chunk_table_schema,
    chunk_tasks,
    map_chunks,
    register_tables,
    sql,
    values,
    write_chunk_table,
)
from shardedstore.cli import main
from shardedstore.table import freshness, prune
from shardedstore.table.values import ValuesPlan

RACY = 0.05
"""Seconds a file must be older than when its shard is listed for the statistics computed
from it to be kept (lowered from 2 s here; tests that write and then query wait it out)."""


@pytest.fixture(autouse=True)
def _settle_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness, "RACY_NS", int(RACY * 1e9))


def _settle() -> None:
    """Wait until what was just written is older than the racy window."""
    time.sleep(2 * RACY)


SHAPE = (6, 8, 10)
CHUNKS = (1, 4, 5)
HOT = [(2, 3, 4), (4, 7, 9)]  # the only cells above 40


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(20)
    t = rng.normal(20, 5, size=SHAPE).astype("f4")
    t = np.clip(t, -10, 39)
    for cell in HOT:
        t[cell] = 45.0
    t[1, 0, 0] = np.nan  # a NaN inside a chunk
    humidity = rng.random(SHAPE)
    elevation = rng.integers(-50, 3000, size=SHAPE[1:]).astype("i2")
    return xr.Dataset(
        {
            "temperature": (("time", "y", "x"), t),
            "humidity": (("time", "y", "x"), humidity),
            "elevation": (("y", "x"), elevation),
        },
        coords={
            "time": pd.date_range("2024-01-01", periods=SHAPE[0]),
            "y": np.arange(SHAPE[1]) * 0.5,
            "x": np.arange(SHAPE[2]) * 2.0,
        },
    )


def _write(root: Path, zarr_format: int) -> tuple[ShardedStore, xr.Dataset]:
    store = ShardedStore(
        LocalStore(root / "base.zarr"),
        {},
        {
            "temperature": (1, array_shard_directory_store(root / "temperature")),
            "humidity": (1, array_shard_directory_store(root / "humidity")),
        },
    )
    ds = _dataset()
    encoding = {
        "temperature": {"chunks": CHUNKS},
        "humidity": {"chunks": CHUNKS},
        "elevation": {"chunks": (4, 5)},
    }
    ds.to_zarr(store, encoding=encoding, consolidated=False, zarr_format=zarr_format, mode="w")
    store.save_config(root / "layout.json")
    return store, ds


@pytest.fixture(scope="module", params=[3, 2], ids=["v3", "v2"])
def layout(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ShardedStore, xr.Dataset, Path]:
    root = tmp_path_factory.mktemp(f"values-v{request.param}")
    store, ds = _write(root, request.param)
    return store, ds, root


def _cells(table: pa.Table, *dims: str) -> tuple[np.ndarray, ...]:
    return tuple(table.column(f"{d}_index").to_numpy() for d in dims)


def _nan_equal(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)  # NaN equals NaN here


# ----------------------------------------------------------------- values()


def test_values_are_every_cell_with_its_coordinates(layout: Any) -> None:
    store, ds, _ = layout
    table = values(store, "temperature").read_all()
    assert table.num_rows == np.prod(SHAPE)
    assert table.schema.names == [
        "time", "time_index", "y", "y_index", "x", "x_index", "temperature",
    ]  # fmt: skip
    assert table.schema.field("temperature").type == pa.float32()
    ti, yi, xi = _cells(table, "time", "y", "x")
    _nan_equal(table.column("temperature").to_numpy(), ds.temperature.values[ti, yi, xi])
    rebuilt = np.full(SHAPE, -1.0, dtype="f4")
    rebuilt[ti, yi, xi] = table.column("temperature").to_numpy()
    _nan_equal(rebuilt, ds.temperature.values)  # every cell exactly once
    np.testing.assert_array_equal(table.column("time").to_numpy(), ds.time.values[ti])
    np.testing.assert_array_equal(table.column("x").to_numpy(), ds.x.values[xi])
    np.testing.assert_array_equal(table.column("y").to_numpy(), ds.y.values[yi])


def test_values_without_coords_give_indices(layout: Any) -> None:
    store, ds, _ = layout
    table = values(store, "elevation", coords=False).read_all()
    assert table.schema.names == ["y", "x", "elevation"]
    y, x = table.column("y").to_numpy(), table.column("x").to_numpy()
    np.testing.assert_array_equal(table.column("elevation").to_numpy(), ds.elevation.values[y, x])


def test_arrays_sharing_dimensions_side_by_side(layout: Any) -> None:
    store, ds, _ = layout
    table = values(
        store,
        ["temperature", "humidity"],
        columns=["time_index", "y_index", "x_index", "temperature", "humidity"],
    ).read_all()
    ti, yi, xi = _cells(table, "time", "y", "x")
    _nan_equal(table.column("temperature").to_numpy(), ds.temperature.values[ti, yi, xi])
    np.testing.assert_array_equal(
        table.column("humidity").to_numpy(), ds.humidity.values[ti, yi, xi]
    )
    with pytest.raises(ArgumentError, match="do not share their dimensions"):
        values(store, ["temperature", "elevation"])


def _expected_rows(ds: xr.Dataset, mask: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(i) for i in cell) for cell in np.argwhere(mask)}


FILTERS = {
    "value": (pc.field("temperature") > 40, lambda ds: ds.temperature.values > 40),
    "coordinate": (
        (pc.field("time") >= pd.Timestamp("2024-01-03")) & (pc.field("x") < 7.0),
        lambda ds: (
            (ds.time.values >= np.datetime64("2024-01-03"))[:, None, None]
            & (ds.x.values < 7.0)[None, None, :]
            & np.ones(SHAPE, bool)
        ),
    ),
    "index and value": (
        pc.field("y_index").isin([1, 6]) & (pc.field("temperature") < 10),
        lambda ds: (
            np.isin(np.arange(SHAPE[1]), [1, 6])[None, :, None] & (ds.temperature.values < 10)
        ),
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_where_keeps_the_rows_numpy_keeps(layout: Any, name: str) -> None:
    store, ds, _ = layout
    where, mask = FILTERS[name]
    table = values(store, "temperature", where=where).read_all()
    got = set(zip(*(c.tolist() for c in _cells(table, "time", "y", "x")), strict=True))
    assert got == _expected_rows(ds, mask(ds))
    assert len(got) == table.num_rows


def _chunks_above(ds: xr.Dataset, threshold: float) -> int:
    """Chunks holding a value above ``threshold`` or a NaN (which statistics cannot rule
    out: NaN passes ``NOT (t <= 40)``)."""
    t = ds.temperature.values
    count = 0
    for index in np.ndindex(*(s // c for s, c in zip(SHAPE, CHUNKS, strict=True))):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, CHUNKS, strict=True))
        count += bool(np.nanmax(t[region]) > threshold or np.isnan(t[region]).any())
    return count


def test_statistics_skip_chunks_computed_then_written(layout: Any, tmp_path: Path) -> None:
    store, ds, _ = layout
    where = pc.field("temperature") > 40
    every = int(np.prod([s // c for s, c in zip(SHAPE, CHUNKS, strict=True)]))
    hot = _chunks_above(ds, 40)
    assert 0 < hot < every

    none = ValuesPlan(store, "temperature", statistics=False)
    assert none.prune(where).chunks == every

    computed = ValuesPlan(store, "temperature")
    list(computed.batches(where=where))  # the first scan reads every chunk, and learns
    assert computed.prune(where).chunks == hot

    out = tmp_path / "chunks"
    write_chunk_table(store, out, stats="min,max,nan_count", progress=False)
    from_files = ValuesPlan(store, "temperature", statistics=out)
    assert from_files.prune(where).chunks == hot  # known before anything is read
    table = values(store, "temperature", where=where, statistics=out).read_all()
    assert table.num_rows == len(HOT)


def test_statistics_of_a_changed_shard_are_not_used(tmp_path: Path) -> None:
    store, _ds = _write(tmp_path, 3)
    out = tmp_path / "chunks"
    write_chunk_table(store, out, stats="min,max,nan_count", progress=False)
    where = pc.field("temperature") > 40
    # A writer changes time step 0 after the chunk table was written.
    zarr.open_array(store, path="temperature", mode="r+")[0, 1, 1] = 50.0
    table = values(store, "temperature", where=where, statistics=out).read_all()
    got = set(zip(*(c.tolist() for c in _cells(table, "time", "y", "x")), strict=True))
    assert got == {*HOT, (0, 1, 1)}


class CountingStore(LocalStore):
    """A local store that records the chunk keys read through it (and its copies)."""

    read: ClassVar[list[str]] = []

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if "/c/" in key:
            CountingStore.read.append(key)
        return await super().get(key, prototype, byte_range)


def test_a_pruned_chunk_is_never_read(tmp_path: Path) -> None:
    ds = _dataset()
    ds.to_zarr(
        tmp_path / "plain.zarr", encoding={"temperature": {"chunks": CHUNKS}}, consolidated=False
    )
    counting = CountingStore(tmp_path / "plain.zarr", read_only=True)
    _settle()
    where = pc.field("temperature") > 40
    plan = ValuesPlan(counting, "temperature")
    first = pa.Table.from_batches(list(plan.batches(where=where)), plan.scan_schema(None, where))
    assert first.num_rows == len(HOT)
    read_first = len([k for k in counting.read if k.startswith("temperature/")])
    counting.read.clear()
    second = pa.Table.from_batches(list(plan.batches(where=where)), plan.scan_schema(None, where))
    assert second.equals(first)
    read_second = {k for k in counting.read if k.startswith("temperature/")}
    assert read_first >= _chunks_above(ds, -1e9)  # the first scan read them all
    assert len(read_second) == _chunks_above(ds, 40)  # the second only those that match
    counting.read.clear()
    only_dims = values(counting, "temperature", columns=["time", "x"]).read_all()
    assert only_dims.num_rows == np.prod(SHAPE)
    assert not [k for k in counting.read if k.startswith("temperature/")]  # no chunk read


def test_unknown_column_says_which(layout: Any) -> None:
    store, _, _ = layout
    with pytest.raises(ArgumentError, match="no column 'pressure'"):
        values(store, "temperature", columns=["pressure"])


# ----------------------------------------------------------------- SQL


@pytest.mark.parametrize("engine", ["duckdb", "datafusion"])
def test_sql_group_by_a_dimension(layout: Any, engine: str) -> None:
    store, ds, _ = layout
    got = sql(
        store,
        "SELECT time_index, max(temperature) AS hottest, count(*) AS n FROM temperature "
        "WHERE NOT isnan(temperature) GROUP BY time_index ORDER BY time_index",
        engine=engine,  # type: ignore[arg-type]
    ).to_pydict()
    assert got["time_index"] == list(range(SHAPE[0]))
    np.testing.assert_allclose(got["hottest"], np.nanmax(ds.temperature.values, axis=(1, 2)))
    assert got["n"] == list((~np.isnan(ds.temperature.values)).sum(axis=(1, 2)))


@pytest.mark.parametrize("engine", ["duckdb", "datafusion"])
def test_sql_where_and_the_chunk_table(layout: Any, engine: str) -> None:
    store, _ds, _ = layout
    hot = sql(
        store,
        "SELECT time_index, y_index, x_index FROM temperature WHERE temperature > 40 "
        "ORDER BY time_index",
        engine=engine,  # type: ignore[arg-type]
    ).to_pydict()
    # DuckDB orders NaN above every number (NaN > 40 is true); DataFusion as Arrow does.
    nan = [(1, 0, 0)] if engine == "duckdb" else []
    assert list(zip(hot["time_index"], hot["y_index"], hot["x_index"], strict=True)) == sorted(
        HOT + nan
    )
    quote = '"array"'
    chunks = sql(
        store,
        f"SELECT {quote} AS a, count(*) AS n FROM chunks GROUP BY {quote} ORDER BY a",
        engine=engine,  # type: ignore[arg-type]
    ).to_pydict()
    expected = chunk_table(store, progress=False).group_by("array").aggregate([("key", "count")])
    assert dict(zip(chunks["a"], chunks["n"], strict=True)) == dict(
        zip(expected["array"].to_pylist(), expected["key_count"].to_pylist(), strict=True)
    )


def test_register_tables_on_a_connection_joins_two_arrays(layout: Any) -> None:
    import duckdb

    store, ds, _ = layout
    con = duckdb.connect()
    names = register_tables(con, store)
    assert names[-1] == "chunks"
    assert {"temperature", "humidity", "elevation"} <= set(names)
    got = con.sql(
        "SELECT t.time_index, avg(e.elevation) AS e FROM temperature t JOIN elevation e "
        "ON t.y_index = e.y_index AND t.x_index = e.x_index "
        "WHERE t.temperature > 40 AND NOT isnan(t.temperature) GROUP BY ALL "
        "ORDER BY 1"
    ).fetchall()
    expected = [(t, float(ds.elevation.values[y, x])) for t, y, x in HOT]
    assert got == expected


def test_sql_tables_of_numeric_array_names(tmp_path: Path) -> None:
    """OME-Zarr levels named 0 and 1: tables named by strings, the ``array`` column too."""
    root = zarr.open_group(LocalStore(tmp_path / "ome.zarr"), mode="w")
    data = np.arange(48, dtype="u2").reshape(6, 8)
    root.create_array("0", shape=data.shape, chunks=(3, 4), dtype=data.dtype)[...] = data
    root.create_array("1", shape=(3, 4), chunks=(3, 4), dtype=data.dtype)[...] = data[::2, ::2]
    store = LocalStore(tmp_path / "ome.zarr", read_only=True)
    got = sql(store, 'SELECT sum("0") AS s FROM "0"').to_pydict()
    assert got == {"s": [int(data.sum())]}
    arrays = sql(store, 'SELECT DISTINCT "array" FROM chunks ORDER BY 1').column(0)
    assert arrays.type == pa.string()
    assert arrays.to_pylist() == ["0", "1"]


# ----------------------------------------------------------------- CLI


def test_cli_sql_prints_the_result(layout: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, ds, root = layout
    code = main([
        "sql", str(root / "layout.json"),
        "SELECT time_index, min(humidity) AS low FROM humidity GROUP BY 1 ORDER BY 1",
        "--json",
    ])  # fmt: skip
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["time_index"] for r in rows] == list(range(SHAPE[0]))
    np.testing.assert_allclose([r["low"] for r in rows], ds.humidity.values.min(axis=(1, 2)))

    code = main(["sql", str(root / "layout.json"), "SELECT count(*) AS n FROM chunks"])
    assert code == 0
    text = capsys.readouterr().out
    stored = chunk_table(shardedstore.open(str(root / "layout.json")), progress=False).num_rows
    assert str(stored) in text
    assert "(1 row(s))" in text


def test_cli_sql_with_statistics_and_datafusion(
    layout: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _store, _, root = layout
    out = tmp_path / "chunks"
    assert main(["chunks", str(root / "layout.json"), "--stats", "min,max,nan_count",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    capsys.readouterr()
    for engine in ("duckdb", "datafusion"):
        code = main([
            "sql", str(root / "layout.json"),
            "SELECT time_index, y_index, x_index FROM temperature WHERE temperature > 40 "
            "ORDER BY 1",
            "--statistics", str(out), "--chunk-table", str(out), "--engine", engine, "--json",
        ])  # fmt: skip
        assert code == 0
        rows = json.loads(capsys.readouterr().out)
        nan = [(1, 0, 0)] if engine == "duckdb" else []  # NaN > 40 in DuckDB
        got = [(r["time_index"], r["y_index"], r["x_index"]) for r in rows]
        assert got == sorted(HOT + nan)


def test_cli_sql_bad_query_is_one_line(layout: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, root = layout
    code = main(["sql", str(root / "layout.json"), "SELECT nothing FROM nowhere"])
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip()


# ----------------------------------------------------------------- the planner


def _chunk_max(values: np.ndarray) -> dict[str, float]:
    return {"max": float(np.nanmax(values)), "cells": int(values.size)}


def test_map_chunks_matches_numpy_per_chunk(layout: Any) -> None:
    store, ds, _ = layout
    table = map_chunks(store, _chunk_max, "temperature")
    assert table.num_rows == np.prod([s // c for s, c in zip(SHAPE, CHUNKS, strict=True)])
    for row in table.to_pylist():
        region = tuple(slice(row[f"start{i}"], row[f"stop{i}"]) for i in range(3))
        assert row["max"] == pytest.approx(float(np.nanmax(ds.temperature.values[region])))
        assert row["cells"] == ds.temperature.values[region].size
        assert row["array"] == "temperature"
    assert set(chunk_table_schema(store).names) >= {"array", "c0", "c1", "c2", "key"}


def test_chunk_tasks_pickle_and_list_stored_chunks(layout: Any) -> None:
    store, _, _ = layout
    tasks = chunk_tasks(store, "temperature")
    assert [t.shard_index for t in tasks] == [str(i) for i in range(SHAPE[0])]
    again = pickle.loads(pickle.dumps(tasks))
    listed = [c for task in again for c in task.stored_chunks()]
    assert all(isinstance(c, StoredChunk) for c in listed)
    table = chunk_table(store, "temperature", progress=False)
    assert sorted(c.key for c in listed) == sorted(table["key"].to_pylist())
    assert all(c.coords[0] == int(t.shard_index or -1) for t in again for c in t.stored_chunks())
    rows = again[2].table().to_pylist()
    assert [r["key"] for r in rows] == [c.key for c in again[2].stored_chunks()]


# ----------------------------------------------------------------- the user guide

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"


def guide_blocks() -> list[tuple[str, str]]:
    """The fenced blocks of the user guide's "Arrays as tables", in order."""
    text = GUIDE.read_text()
    start = text.index("## Arrays as tables\n")
    end = text.index("\n## ", start + 4)
    return re.findall(r"^```(\w+)\n(.*?)^```$", text[start:end], flags=re.S | re.M)


def run_guide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, spark: bool) -> dict[str, Any]:
    """Run the section's Python blocks (the Spark one only if asked) in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "guide"}
    for language, code in guide_blocks():
        if language == "python" and ("pyspark" not in code or spark):
            exec(compile(code, str(GUIDE), "exec"), namespace)
    return namespace


def test_user_guide_arrays_as_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = guide_blocks()
    assert [language for language, _ in blocks].count("python") >= 6
    found = run_guide(tmp_path, monkeypatch, spark=False)
    t = found["ds"].temperature.values
    lat = found["ds"].lat.values
    hot = found["hot"]
    mask = (t > 35) & (lat > 0)[None, :, None]
    assert len(hot) == int(mask.sum())
    cells = t[hot.time_index, hot.lat_index, hot.lon_index]
    np.testing.assert_array_equal(hot.temperature.to_numpy(), cells)
    daily = found["daily"]
    np.testing.assert_allclose(daily.hottest, t.max(axis=(1, 2)))
    np.testing.assert_allclose(daily["mean"], t.mean(axis=(1, 2), dtype="f8"), rtol=1e-6)
    north = found["north"]
    by_lat = mask.sum(axis=(0, 2))
    assert dict(zip(north.lat, north.cells, strict=True)) == {
        float(lat[i]): int(by_lat[i]) for i in np.flatnonzero(by_lat)
    }
    per_step = dict(zip(*found["per_step"].to_pydict().values(), strict=True))
    assert per_step == {i: int(n) for i, n in enumerate((t > 35).sum(axis=(1, 2))) if n}
    counts = found["result"].to_pydict()
    stored = chunk_table(found["store"], progress=False)["array"].to_pylist()
    assert dict(zip(counts["array"], counts["n"], strict=True)) == {
        name: stored.count(name) for name in set(stored)
    }

    # The command lines, as a user runs them.
    (bash,) = [code for language, code in blocks if language == "bash"]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(
        ["bash", "-e", "-c", bash], cwd=tmp_path, env=env, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout[done.stdout.index("[") :])
    assert len(rows) == int((t > 40).sum())
    assert f"{t.max():.2f}"[:4] in done.stdout

    # Reading one array's partition of the written chunk table, as the table says.
    import duckdb
    import pyarrow.parquet as pq
    from datafusion import SessionContext

    chunks = tmp_path / "weather-chunks"
    stored = chunk_table(shardedstore.open("weather/layout.json"), "temperature", progress=False)
    one = duckdb.sql(
        f"SELECT key FROM read_parquet('{chunks}/array=temperature/*.parquet', "
        "hive_partitioning = true, hive_types = {'array': VARCHAR}) WHERE \"array\" = 'temperature'"
    ).fetchall()
    assert sorted(k for (k,) in one) == sorted(stored["key"].to_pylist())
    ctx = SessionContext()
    ctx.register_parquet("chunks", f"{chunks}/", table_partition_cols=[("array", pa.string())])
    keys = ctx.sql("SELECT key FROM chunks WHERE \"array\" = 'temperature'").to_pydict()["key"]
    assert sorted(keys) == sorted(stored["key"].to_pylist())
    table = pq.read_table(chunks, filters=[("array", "=", "temperature")])
    assert sorted(table["key"].to_pylist()) == sorted(stored["key"].to_pylist())
    assert set(table["array_path"].to_pylist()) == {"temperature"}


def test_the_engines_are_imported_only_when_used() -> None:
    script = (
        "import sys, shardedstore;"
        "engines = {'pyarrow', 'duckdb', 'datafusion', 'pyspark'};"
        "print(sorted({m.split('.')[0] for m in sys.modules} & engines));"
        "from shardedstore import *;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & engines))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == ["[]", "['pyarrow']"]


@settings(max_examples=200, deadline=None)
@given(
    levels=st.lists(
        st.one_of(
            st.floats(allow_nan=False, width=64),
            st.floats(allow_nan=False, width=32).map(float),
            st.floats(allow_nan=False, width=16).map(float),
            st.integers(-(2**63), 2**64).map(float),
        ),
        min_size=1,
        max_size=40,
    ),
    kind=st.sampled_from(
        [pa.float16(), pa.float32(), pa.float64(), pa.int8(), pa.int64(), pa.uint64(), pa.bool_()]
    ),
)
def test_value_pruner_levels_fit_the_column_type_exactly(levels: list[float], kind: Any) -> None:
    """The levels a value pruner bisects are those that fit the column's type exactly,
    found for all levels at once as one at a time (a level that does not fit would make
    Arrow compare a rounded bound: a wrong guarantee)."""
    array = np.unique(np.array(levels, dtype=np.float64))
    with np.errstate(over="ignore"):
        expected = [prune._typed(float(level), kind) is not None for level in array]
    assert prune._exact(array, kind).tolist() == expected
