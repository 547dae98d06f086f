"""The chunk table's Parquet files as DuckDB, pyarrow and pandas read them (issue 20).

Each test reproduces what a new user ran into: one array written alone lost the index
columns the others have; arrays named like numbers came back as integers; thousands of
small shards wrote thousands of tiny files.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import zarr
from zarr.storage import LocalStore

from shardedstore import (
    ShardedStore,
    array_shard_directory_store,
    chunk_table,
    write_chunk_table,
)
from shardedstore.cli import main
from shardedstore.table import seen


def _source(out: Path) -> str:
    return f"read_parquet('{out}/**/*.parquet', hive_partitioning = true, union_by_name = true)"


@pytest.fixture
def mixed(tmp_path: Path) -> ShardedStore:
    """A 3-D array-sharded array and a 1-D one (``elevation``) in one layout."""
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {},
        {"temperature": (1, array_shard_directory_store(tmp_path / "t"))},
    )
    root = zarr.open_group(store, mode="w")
    temperature = root.create_array(
        "temperature", shape=(3, 4, 6), chunks=(1, 2, 3), dtype="f4", fill_value=np.nan
    )
    temperature[:] = np.arange(72, dtype="f4").reshape(3, 4, 6)
    elevation = root.create_array("elevation", shape=(5,), chunks=(2,), dtype="i2")
    elevation[:] = [1, 2, 3, 4, 5]
    return store


def test_one_schema_whatever_the_arrays_selected(mixed: ShardedStore, tmp_path: Path) -> None:
    from shardedstore import chunk_table_schema

    whole = chunk_table(mixed)
    alone = chunk_table(mixed, "elevation")
    assert alone.schema == whole.schema == chunk_table_schema(mixed)
    assert {"c2", "start2", "stop2"} <= set(alone.column_names)
    # The files of one array written alone, then the other's: one schema in every file.
    out = tmp_path / "chunks"
    write_chunk_table(mixed, out, "elevation", progress=False)
    write_chunk_table(mixed, out, "temperature", progress=False)
    schemas = {pq.read_schema(path).remove_metadata() for path in out.rglob("*.parquet")}
    assert len(schemas) == 1
    # The query the CLI prints works in DuckDB, and pyarrow keeps c2.
    rows = duckdb.sql(f'SELECT "array", max(c2) FROM {_source(out)} GROUP BY ALL').fetchall()
    assert dict(rows) == {"temperature": 1, "elevation": None}
    assert "c2" in pq.read_table(out).column_names


def test_numeric_array_names_stay_strings(tmp_path: Path) -> None:
    """OME-Zarr levels ``0``, ``1``, ``2``: the in-file ``array_path`` stays a string."""
    store = LocalStore(tmp_path / "image.zarr")
    root = zarr.open_group(store, mode="w")
    for level in range(3):
        size = 8 >> level
        root.create_array(str(level), shape=(size, size), chunks=(2, 2), dtype="u1")[:] = level + 1
    out = tmp_path / "chunks"
    write_chunk_table(store, out, progress=False)
    found = duckdb.sql(
        f"SELECT array_path, typeof(array_path), count(*) FROM {_source(out)} GROUP BY ALL "
        "ORDER BY 1"
    ).fetchall()
    assert found == [("0", "VARCHAR", 16), ("1", "VARCHAR", 4), ("2", "VARCHAR", 1)]
    table = pq.read_table(out)
    assert table.schema.field("array_path").type == pa.string()
    assert sorted(set(table["array_path"].to_pylist())) == ["0", "1", "2"]
    # Read with the partition typed as a string, the hive column agrees.
    partitioning = pads.partitioning(pa.schema([("array", pa.string())]), flavor="hive")
    typed = pads.dataset(out, format="parquet", partitioning=partitioning).to_table()
    assert typed["array"].to_pylist() == typed["array_path"].to_pylist()


def test_many_small_shards_share_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """300 array shards of 4 chunks each: a bounded number of files, still incremental."""
    monkeypatch.setattr(seen, "RACY_NS", 0)  # shards written just now: stamps trusted
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {},
        {"t": (1, array_shard_directory_store(tmp_path / "t"))},
    )
    array = zarr.create_array(store, name="t", shape=(300, 4), chunks=(1, 1), dtype="f8")
    array[:] = np.arange(1, 1201, dtype="f8").reshape(300, 4)  # no chunk of fill value
    out = tmp_path / "chunks"
    first = write_chunk_table(store, out, stats="max", progress=False)
    files = sorted(p.name for p in (out / "array=t").glob("*.parquet"))
    assert files == ["shards-0-255.parquet", "shards-256-511.parquet"]
    assert first.rows == 1200
    again = write_chunk_table(store, out, stats="max", progress=False)
    assert again.written == ()
    assert sorted(again.unchanged) == ["array=t/" + name for name in files]
    # One shard rewritten: its file again, the other shards' rows kept as they were.
    array[260, 2] = -1.0
    changed = write_chunk_table(store, out, stats="max", progress=False)
    assert changed.written == ("array=t/shards-256-511.parquet",)
    query = f"SELECT max FROM {_source(out)} WHERE c0 = 260 AND c1 = 2"
    assert duckdb.sql(query).fetchall() == [(-1.0,)]
    assert duckdb.sql(f"SELECT count(*) FROM {_source(out)}").fetchall() == [(1200,)]
    # A smaller group size is honoured, and the files of the old grouping go.
    regrouped = write_chunk_table(store, out, stats="max", shards_per_file=100, progress=False)
    assert sorted(p.name for p in (out / "array=t").glob("*.parquet")) == [
        "shards-0-99.parquet",
        "shards-100-199.parquet",
        "shards-200-299.parquet",
    ]
    assert sorted(regrouped.removed) == ["array=t/" + name for name in files]
    assert pq.read_table(out).num_rows == 1200


def test_cli_types_the_array_column_as_a_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "image.zarr"
    root = zarr.open_group(LocalStore(image), mode="w")
    for level in range(2):
        root.create_array(str(level), shape=(4,), chunks=(2,), dtype="u1")[:] = level + 1
    out = str(tmp_path / "chunks")
    query = 'SELECT DISTINCT "array", typeof("array") AS type FROM chunks ORDER BY 1'
    assert main(["chunks", str(image), "--out", out, "-q", "--sql", query, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"array": "0", "type": "VARCHAR"},
        {"array": "1", "type": "VARCHAR"},
    ]
