"""chunk_table and write_chunk_table against numpy, on every kind of shard; the CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    ArrayNotFoundError,
    ChunkTableError,
    ChunkTableOutputError,
    MissingDependencyError,
    ShardedStore,
    array_shard_directory_store,
    chunk_table,
    to_url_with_prefix,
    to_zip_store_with_prefix,
    write_chunk_table,
)
from shardedstore.cli import main
from shardedstore.table import seen

from .conftest import S3Server

STATS = ["min", "max", "mean", "std", "count", "nan_count", "fill_count"]
HISTOGRAM = (-2.0, 2.0, 4)

# Known data: (shape, chunks, dtype, fill value); written where the mask says.
ARRAYS: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, Any]] = {
    "ints": ((5, 7), (2, 3), "i2", 0),
    "small/uints": ((9,), (4,), "u1", 7),
    "floats": ((6, 5), (4, 2), "f4", np.nan),
    "flags": ((6,), (4,), "bool", False),
    "waves": ((4,), (3,), "c8", 0),
    "people/height": ((5,), (2,), "f8", np.nan),  # in the mount
    "sim/temp": ((4, 5, 6), (1, 2, 4), "f8", np.nan),  # array-sharded on dim 0
}


def _data(name: str) -> np.ndarray:
    shape, _, dtype, fill = ARRAYS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same in every process
    values = rng.normal(size=shape)
    if dtype == "bool":
        return values > 0
    if dtype == "c8":
        return (values + 1j * values[::-1]).astype(dtype)
    data = (values * 3).astype(dtype) if dtype[0] in "iu" else values.astype(dtype)
    if dtype[0] == "f":
        data.flat[::5] = np.nan  # NaNs inside chunks
    if dtype[0] == "u":
        data[:4] = fill  # one chunk of fill value only: not stored
    return data


def _write(store: ShardedStore, zarr_format: int) -> dict[str, np.ndarray]:
    root = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    written = {}
    for name, (shape, chunks, dtype, fill) in ARRAYS.items():
        array = root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
        data = _data(name)
        if name == "sim/temp":
            array[:3] = data[:3]  # the last time step is never written: no array shard 3
            data[3] = fill
        elif name == "floats":
            array[:4] = data[:4]  # the last row of chunks is missing
            data[4:] = fill
        else:
            array[...] = data
        written[name] = data
    return written


def _layout(root: Path) -> ShardedStore:
    return ShardedStore(
        LocalStore(root / "base.zarr"),
        {"people": LocalStore(root / "people.zarr")},
        {"sim/temp": (1, array_shard_directory_store(root / "temp"))},
    )


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def dataset(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ShardedStore, dict[str, np.ndarray]]:
    root = tmp_path_factory.mktemp(f"v{request.param}")
    store = _layout(root)
    return store, _write(store, request.param)


def _region(row: dict[str, Any], ndim: int) -> tuple[slice, ...]:
    return tuple(slice(row[f"start{i}"], row[f"stop{i}"]) for i in range(ndim))


def _expected(values: np.ndarray, fill: Any) -> dict[str, Any]:
    """The statistics numpy gives for a chunk's values."""
    flat = values.astype(np.uint8) if values.dtype == bool else values
    nan = np.isnan(flat) if flat.dtype.kind in "fc" else np.zeros(flat.shape, bool)
    real = flat.dtype.kind in "biuf"
    kept = flat[~nan]
    found: dict[str, Any] = {
        "count": int(kept.size),
        "nan_count": int(nan.sum()),
        "fill_count": int(nan.sum()) if fill != fill else int((flat == fill).sum()),
    }
    for name, func in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
        found[name] = float(func(kept.astype(np.float64))) if real and kept.size else None
    if real:
        found["histogram"] = np.histogram(kept, bins=4, range=HISTOGRAM[:2])[0].tolist()
    else:
        found["histogram"] = None
    return found


def _check_rows(table: pa.Table, data: dict[str, np.ndarray], store: ShardedStore) -> None:
    """Every row matches numpy; the rows are exactly the chunks stored."""
    mapping = store.as_mapping()
    rows = table.to_pylist()
    for row in rows:
        name = row["array"]
        shape, chunks, _, fill = ARRAYS[name]
        ndim = len(shape)
        coords = tuple(row[f"c{i}"] for i in range(ndim))
        assert [row[f"start{i}"] for i in range(ndim)] == [
            c * n for c, n in zip(coords, chunks, strict=True)
        ]
        values = data[name][_region(row, ndim)]
        for stat, value in _expected(values, fill).items():
            got = row[stat]
            if isinstance(value, float):
                assert got == pytest.approx(value, rel=1e-5, abs=1e-6), (name, coords, stat)
            else:
                assert got == value, (name, coords, stat)
        assert row["exists"] is True
        assert row["nbytes"] == len(mapping[row["key"]])
    for name in ARRAYS:
        array = zarr.open_array(store, path=name, mode="r")
        stored = [row for row in rows if row["array"] == name]
        assert len(stored) == array.nchunks_initialized, name


def test_the_table_matches_numpy(dataset: tuple[ShardedStore, dict[str, np.ndarray]]) -> None:
    store, data = dataset
    table = chunk_table(store, stats=STATS, histogram=HISTOGRAM)
    _check_rows(table, data, store)
    kinds = {row["array"]: row["shard_kind"] for row in table.to_pylist()}
    assert kinds["people/height"] == "mount"
    assert kinds["sim/temp"] == "array shard"
    assert kinds["ints"] == "base"
    temp = table.filter(pa.compute.equal(table["array"], "sim/temp")).to_pylist()
    assert {row["shard_index"] for row in temp} == {"0", "1", "2"}
    assert all(row["c0"] == int(row["shard_index"]) for row in temp)
    # sorted by array, then chunk indices
    order = [(row["array"], row["c0"], row["c1"] or 0) for row in table.to_pylist()]
    assert order == sorted(order)


def test_without_stats_nothing_is_decoded(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]],
) -> None:
    store, _ = dataset
    table = chunk_table(store, ["sim/temp", "ints"])
    assert set(table["array"].to_pylist()) == {"sim/temp", "ints"}
    assert "min" not in table.column_names
    with pytest.raises(ArrayNotFoundError, match="'nope'"):
        chunk_table(store, ["nope"])
    with pytest.raises(ValueError, match="unknown statistic"):
        chunk_table(store, stats="median")


def test_missing_chunks_are_fill_value_rows(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]],
) -> None:
    store, _ = dataset
    table = chunk_table(store, ["sim/temp", "small/uints"], stats=STATS, missing=True)
    rows = table.to_pylist()
    missing = [row for row in rows if not row["exists"]]
    assert {(row["array"], row["c0"]) for row in missing if row["array"] == "small/uints"} == {
        ("small/uints", 0)
    }
    uints = next(row for row in missing if row["array"] == "small/uints")
    assert (uints["min"], uints["max"], uints["std"]) == (7.0, 7.0, 0.0)
    assert uints["count"] == uints["fill_count"] == 4
    temp = [row for row in missing if row["array"] == "sim/temp"]
    assert len(temp) == 6  # time step 3: 3 x 2 chunks, all NaN
    assert all(row["nan_count"] == row["fill_count"] > 0 and row["min"] is None for row in temp)
    assert all(row["shard_index"] == "3" and row["nbytes"] is None for row in temp)
    stored = table.filter(table["exists"])
    assert stored.num_rows == len(rows) - len(missing)


def test_a_plain_store_and_the_sharding_codec(tmp_path: Path) -> None:
    plain = LocalStore(tmp_path / "plain.zarr")
    data = np.arange(4 * 8 * 8, dtype="i4").reshape(4, 8, 8)
    array = zarr.create_array(
        plain, name="a", shape=data.shape, chunks=(1, 2, 2), shards=(1, 4, 4), dtype="i4"
    )
    array[:] = data
    table = chunk_table(plain, stats="min,max,count")
    assert table.num_rows == 4 * 2 * 2  # one row per stored object (a shard of chunks)
    for row in table.to_pylist():
        region = data[_region(row, 3)]
        assert row["key"] == f"a/c/{row['c0']}/{row['c1']}/{row['c2']}"
        assert (row["min"], row["max"], row["count"]) == (region.min(), region.max(), 16)
    # the same array sharded by time step, the sharding codec inside each array shard
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {},
        {"a": (1, array_shard_directory_store(tmp_path / "s"))},
    )
    sharded = zarr.create_array(
        store, name="a", shape=data.shape, chunks=(1, 2, 2), shards=(1, 4, 4), dtype="i4"
    )
    sharded[:] = data
    again = chunk_table(store, stats="min,max,count")
    assert again.select(["c0", "c1", "c2", "min", "max", "count", "nbytes"]).equals(
        table.select(["c0", "c1", "c2", "min", "max", "count", "nbytes"])
    )
    assert set(again["shard_kind"].to_pylist()) == {"array shard"}


def test_zip_shards_give_the_same_table_and_exact_offsets(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    store, data = dataset
    zipped = store.map_shards(to_zip_store_with_prefix(tmp_path / "zips"))
    table = chunk_table(zipped, stats=STATS, histogram=HISTOGRAM)
    _check_rows(table, data, zipped)
    reference = chunk_table(store, stats=STATS, histogram=HISTOGRAM)
    compared = [name for name in table.column_names if not name.startswith("zip_")]
    assert table.select(compared).equals(reference.select(compared))
    mapping = zipped.as_mapping()
    rows = table.to_pylist()
    assert all(row["zip_offset"] is not None for row in rows)  # written STORED
    for row in rows:
        with open(row["zip_file"], "rb") as file:  # a plain file read, no zip library
            file.seek(row["zip_offset"])
            assert file.read(row["zip_length"]) == mapping[row["key"]]


def test_deflated_zip_members_have_no_offset(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore(tmp_path / "base.zarr"))
    zarr.create_array(store, name="a", shape=(4,), chunks=(2,), dtype="i4")[:] = [1, 2, 3, 4]
    zipped = store.map_shards(to_zip_store_with_prefix(tmp_path / "z", compression="deflated"))
    table = chunk_table(zipped, stats="max")
    assert table["max"].to_pylist() == [2.0, 4.0]
    assert table["zip_offset"].null_count == 2
    assert table["zip_file"].to_pylist() == [str(tmp_path / "z.zarr.zip")] * 2


def test_zip_file_is_absolute_for_a_relative_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Parquet reader elsewhere (another cwd) finds the zip the table names."""
    from zarr.storage import ZipStore

    monkeypatch.chdir(tmp_path)
    writer = ZipStore("rel.zarr.zip", mode="w")
    array = zarr.create_array(
        writer, name="a", shape=(2,), chunks=(2,), dtype="<i4", compressors=None
    )
    array[:] = [3, 4]
    writer.close()
    write_chunk_table(ZipStore("rel.zarr.zip", mode="r"), "table", progress=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    (row,) = pq.read_table(tmp_path / "table").to_pylist()
    assert row["zip_file"] == str(tmp_path / "rel.zarr.zip")
    with open(row["zip_file"], "rb") as file:
        file.seek(row["zip_offset"])
        assert np.frombuffer(file.read(row["zip_length"]), "<i4").tolist() == [3, 4]


def test_s3_shards_give_the_same_table(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]], s3_server: S3Server, s3_bucket: str
) -> None:
    store, data = dataset
    options = s3_server.storage_options
    remote = store.map_shards(to_url_with_prefix(f"s3://{s3_bucket}/ds", storage_options=options))
    table = chunk_table(remote, stats=STATS, histogram=HISTOGRAM)
    _check_rows(table, data, remote)
    reference = chunk_table(store, stats=STATS, histogram=HISTOGRAM)
    assert table.drop_columns(["zip_file"]).equals(reference.drop_columns(["zip_file"]))


def test_an_error_names_the_shard(tmp_path: Path) -> None:
    store = _layout(tmp_path)
    _write(store, 3)
    (tmp_path / "temp" / "1.zarr" / "c" / "0" / "0").write_bytes(b"not a chunk")
    with pytest.raises(ChunkTableError, match=r"array shard 'sim/temp' chunk 1, array 'sim/temp'"):
        chunk_table(store, ["sim/temp"], stats="max")
    assert chunk_table(store, ["sim/temp"]).num_rows == 18  # no stats: nothing decoded


def test_pyarrow_missing_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an absent package does
    with pytest.raises(MissingDependencyError, match=r'pip install "shardedstore\[table\]"'):
        chunk_table(LocalStore(tmp_path / "x.zarr"))
    assert issubclass(MissingDependencyError, ImportError)


def test_dask_processes_give_the_same_table(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]], capsys: pytest.CaptureFixture[str]
) -> None:
    distributed = pytest.importorskip("distributed")
    store, _ = dataset
    threads = chunk_table(store, stats=STATS, histogram=HISTOGRAM)
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_cluster = chunk_table(
            store, stats=STATS, histogram=HISTOGRAM, executor=client.get_executor()
        )
        pids = client.run(os.getpid)
        # the command line on the same cluster
        config = str(Path(store.base.root).parent / "layout.json")
        store.save_config(config)
        address = cluster.scheduler_address
        assert main(["chunks", config, "--stats", "max", "--scheduler", address, "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == threads.num_rows
    assert os.getpid() not in pids.values()
    assert on_cluster.equals(threads)


# ------------------------------------------------------------------ Parquet


def _duckdb_rows(out: Path, query: str) -> list[tuple[Any, ...]]:
    import duckdb

    source = f"read_parquet('{out}/**/*.parquet', hive_partitioning = true)"
    return duckdb.sql(query.format(source=source)).fetchall()


def test_written_dataset_queries_with_duckdb_and_pandas(
    dataset: tuple[ShardedStore, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    import pandas as pd

    store, data = dataset
    out = tmp_path / "table"
    result = write_chunk_table(store, out, stats=STATS)
    assert "array=sim%2Ftemp/shards-0-255.parquet" in result.written
    assert "array=people%2Fheight/mount.parquet" in result.written
    assert "array=ints/base.parquet" in result.written
    expected = set()
    for row in chunk_table(store, stats=["max"]).to_pylist():
        shape = ARRAYS[row["array"]][0]
        values = data[row["array"]][_region(row, len(shape))]
        if values.dtype.kind in "biuf" and np.nanmax(values.astype(np.float64)) > 1.5:
            expected.add((row["array"], row["c0"]))
    found = _duckdb_rows(out, 'SELECT DISTINCT "array", c0 FROM {source} WHERE max > 1.5')
    assert set(found) == expected
    assert expected  # the query selects something
    frame = pd.read_parquet(out)
    assert len(frame) == result.rows == chunk_table(store).num_rows
    assert set(frame["array"]) == set(ARRAYS)


def test_rerun_recomputes_only_changed_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen, "RACY_NS", 0)  # shards written just now: stamps trusted
    store = _layout(tmp_path)
    _write(store, 3)
    out = tmp_path / "table"
    first = write_chunk_table(store, out, stats="min,max", shards_per_file=1)
    assert len(first.written) == len(ARRAYS) + 2  # one file per array, 3 array shards
    one = {"stats": "min,max", "shards_per_file": 1}
    again = write_chunk_table(store, out, **one)
    assert again.written == ()
    assert again.removed == ()
    assert sorted(again.unchanged) == sorted(first.written)
    # the fingerprint cache is only a cache: the files' own metadata decides
    (out / "_fingerprints.json").write_text("not json")
    assert write_chunk_table(store, out, **one).written == ()
    shard_files = out / "array=sim%2Ftemp"
    shutil.copy(shard_files / "shards-1-1.parquet", shard_files / "shards-0-0.parquet")
    assert write_chunk_table(store, out, **one).written == ("array=sim%2Ftemp/shards-0-0.parquet",)
    # appending a time step: only the new shard is read
    temp = zarr.open_array(store, path="sim/temp", mode="r+")
    temp.resize((5, 5, 6))
    temp[3:5] = 1.0
    appended = write_chunk_table(store, out, **one)
    assert sorted(appended.written) == [
        "array=sim%2Ftemp/shards-3-3.parquet",
        "array=sim%2Ftemp/shards-4-4.parquet",
    ]
    # a chunk rewritten, same size: its shard again (the stamp changed)
    temp[1, 0:2, 0:4] = 2.0
    changed = write_chunk_table(store, out, **one)
    assert changed.written == ("array=sim%2Ftemp/shards-1-1.parquet",)
    assert _duckdb_rows(
        out,
        "SELECT max FROM {source} WHERE \"array\" = 'sim/temp' AND c0 = 1 AND c1 = 0 AND c2 = 0",
    ) == [(2.0,)]
    # other statistics: every file
    mean = {"stats": "mean", "shards_per_file": 1}
    assert len(write_chunk_table(store, out, **mean).written) == len(ARRAYS) + 4
    # a shard removed: its file goes
    shutil.rmtree(tmp_path / "temp" / "4.zarr")
    removed = write_chunk_table(ShardedStore(*_given(store)), out, **mean)
    assert removed.removed == ("array=sim%2Ftemp/shards-4-4.parquet",)
    assert not (out / "array=sim%2Ftemp" / "shards-4-4.parquet").exists()


def _same_size_rewrite_is_noticed(store: Any, path: str, out: Path) -> None:
    """An uncompressed chunk rewritten (same size) between two runs changes its row."""
    array = zarr.create_array(
        store, name=path, shape=(4,), chunks=(2,), dtype="f8", compressors=None, fill_value=0
    )
    array[:] = 1.0
    first = write_chunk_table(store, out, stats="max", progress=False)
    assert write_chunk_table(store, out, stats="max", progress=False).written == ()
    array[:2] = 5.0
    again = write_chunk_table(store, out, stats="max", progress=False)
    assert again.written == first.written
    assert sorted(pq.read_table(out)["max"].to_pylist()) == [1.0, 5.0]


def test_a_same_size_rewrite_is_noticed_on_every_store(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    import obstore.store
    from zarr.storage import MemoryStore, ObjectStore

    # Stores whose listing gives no stamp of their own: a nested layout, memory.
    nested = ShardedStore(
        LocalStore(tmp_path / "outer.zarr"), {"m": ShardedStore(LocalStore(tmp_path / "in.zarr"))}
    )
    zarr.open_group(nested, mode="w")
    _same_size_rewrite_is_noticed(nested, "m/a", tmp_path / "nested")
    _same_size_rewrite_is_noticed(MemoryStore(), "a", tmp_path / "memory")
    # obstore on S3: the ETag, under a prefix
    s3 = ObjectStore(
        obstore.store.S3Store(
            s3_bucket,
            prefix="data.zarr",
            config=s3_server.obstore_config,
            client_options=s3_server.obstore_client_options,
        )
    )
    _same_size_rewrite_is_noticed(s3, "a", tmp_path / "s3")
    # local disk whose clock ticks coarser than the two writes (mtime unchanged)
    local = tmp_path / "local.zarr"
    array = zarr.create_array(LocalStore(local), name="a", shape=(2,), chunks=(2,), dtype="f8")
    array[:] = 1.0
    chunk = local / "a" / "c" / "0"
    stamp = chunk.stat().st_mtime_ns
    write_chunk_table(LocalStore(local), tmp_path / "coarse", stats="max", progress=False)
    array[:] = 2.0
    os.utime(chunk, ns=(stamp, stamp))
    again = write_chunk_table(LocalStore(local), tmp_path / "coarse", stats="max", progress=False)
    assert again.written == ("array=a/base.parquet",)
    assert pq.read_table(tmp_path / "coarse")["max"].to_pylist() == [2.0]


def _given(store: ShardedStore) -> tuple[Any, ...]:
    return store._given[0], store._given[1], store.array_shards


def test_output_must_be_new_or_a_chunk_table(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore(tmp_path / "base.zarr"))
    zarr.create_array(store, name="a", shape=(2,), chunks=(1,), dtype="i4")[:] = 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(ChunkTableOutputError, match="not empty"):
        write_chunk_table(store, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    with pytest.raises(ChunkTableOutputError, match="URL"):
        write_chunk_table(store, "s3://bucket/table")
    written = write_chunk_table(store, tmp_path / "new")
    assert written.rows == 2
    assert not list((tmp_path / "new").rglob(".*partial*"))
    zarr.open_array(store, path="a", mode="r+").resize((3,))  # chunk 2 is missing
    with_missing = write_chunk_table(store, tmp_path / "new", missing=True)
    assert with_missing.written == ("array=a/base.parquet", "array=a/missing.parquet")
    rows = _duckdb_rows(tmp_path / "new", "SELECT c0, exists FROM {source} ORDER BY c0")
    assert rows == [(0, True), (1, True), (2, False)]


# ---------------------------------------------------------------------- CLI


@pytest.fixture
def config(tmp_path: Path) -> str:
    store = _layout(tmp_path)
    _write(store, 3)
    store.save_config(tmp_path / "layout.json")
    return str(tmp_path / "layout.json")


def test_cli_prints_the_table_as_json(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chunks", config, "--stats", "min,max", "--array", "sim/temp", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 18
    assert {row["shard_index"] for row in rows} == {"0", "1", "2"}
    assert all(not math.isnan(row["max"]) for row in rows)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_cli_json_is_strict_json_with_infinities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.zarr"
    array = zarr.create_array(LocalStore(plain), name="a", shape=(4,), chunks=(4,), dtype="f8")
    array[:] = [1.5, np.inf, -np.inf, np.nan]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # inf - inf: no warning per chunk
        assert main(["chunks", str(plain), "--stats", "all", "--json"]) == 0
    (row,) = _strict_json(capsys.readouterr().out)
    assert row["min"] is None  # -inf: null in JSON
    assert row["mean"] is None  # NaN (inf - inf)
    assert (row["count"], row["nan_count"]) == (3, 1)
    query = "SELECT min, max, mean FROM chunks"
    assert main(["chunks", str(plain), "--stats", "all", "--sql", query, "--json"]) == 0
    assert _strict_json(capsys.readouterr().out) == [{"min": None, "max": None, "mean": None}]
    assert chunk_table(LocalStore(plain), stats="min")["min"].to_pylist() == [-np.inf]


def test_cli_writes_and_queries_with_sql(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "chunks")
    assert main(["chunks", config, "--stats", "max", "--out", out, "-j", "2", "-q"]) == 0
    assert "wrote 7 file(s)" in capsys.readouterr().out  # sim/temp's 3 shards: one file
    query = 'SELECT "array", count(*) AS n FROM chunks GROUP BY ALL ORDER BY ALL'
    assert main(["chunks", config, "--out", out, "--stats", "max", "--sql", query, "--json"]) == 0
    counts = {row["array"]: row["n"] for row in json.loads(capsys.readouterr().out)}
    assert counts["sim/temp"] == 18
    assert counts["people/height"] == 3
    assert main(["chunks", config, "--sql", "SELECT count(*) FROM chunks"]) == 0
    assert "(1 row(s))" in capsys.readouterr().out


def test_cli_reads_a_plain_directory_and_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.zarr"
    zarr.create_array(LocalStore(plain), name="a", shape=(3,), chunks=(1,), dtype="i4")[:] = 4
    assert main(["chunks", str(plain), "--stats", "min"]) == 0
    assert "(3 chunk(s))" in capsys.readouterr().out
    assert main(["chunks", str(tmp_path / "absent")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "does not exist" in err
    assert main(["chunks", str(plain), "--stats", "median"]) == 1
    assert "unknown statistic" in capsys.readouterr().err


def test_public_names() -> None:
    for name in ("chunk_table", "write_chunk_table", "Shard", "ChunkTableWrite"):
        assert name in shardedstore.__all__


# ------------------------------------------------- NaT, and v2's null fill value


@pytest.mark.parametrize("unit", ["M8[s]", "m8[ms]"])
@pytest.mark.parametrize("fill", ["NaT", 0])
def test_nat_counts_as_nan_and_as_the_nat_fill_value(tmp_path: Path, unit: str, fill: Any) -> None:
    dtype = np.dtype(unit)
    fill_value = np.array(fill, dtype=dtype)[()] if fill == "NaT" else np.zeros((), dtype)[()]
    array = zarr.create_array(
        LocalStore(tmp_path / "t.zarr"), shape=(9,), chunks=(3,), dtype=dtype, fill_value=fill_value
    )
    values = np.arange(6).astype(dtype)
    values[[1, 4, 5]] = np.array("NaT", dtype=dtype)
    array[:6] = values  # chunks 0 and 1; chunk 2 is never written
    rows = chunk_table(LocalStore(tmp_path / "t.zarr"), stats="all", missing=True).to_pylist()
    by_chunk = {row["c0"]: row for row in rows}
    stats = {
        name: [by_chunk[c][name] for c in range(3)] for name in ("count", "nan_count", "fill_count")
    }
    if fill == "NaT":  # chunk 2 reads as NaT
        assert stats == {"count": [2, 1, 0], "nan_count": [1, 2, 3], "fill_count": [1, 2, 3]}
    else:  # as 0: the value at index 0 is the fill value too
        assert stats == {"count": [2, 1, 3], "nan_count": [1, 2, 0], "fill_count": [1, 0, 3]}
    assert all(by_chunk[c]["min"] is None for c in range(3))  # not real numbers


@pytest.mark.parametrize("dtype", ["i4", "f8", "M8[ns]", "bool", "U3"])
def test_v2_null_fill_value_counts_what_zarr_reads(tmp_path: Path, dtype: str) -> None:
    # zarr v2 metadata may say "fill_value": null; chunks never written then read as
    # the dtype's default (0, 0.0, NaT, False, "").
    path = tmp_path / "a.zarr"
    array = zarr.create_array(
        LocalStore(path), shape=(4,), chunks=(2,), dtype=dtype, zarr_format=2, fill_value=None
    )
    assert array.metadata.fill_value is None
    array[:2] = np.ones(2).astype(dtype)  # chunk 0; chunk 1 is never written
    read = array[:]
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "shardedstore"),
            "chunks",
            str(path),
            "--missing",
            "--stats",
            "all",
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {row["c0"]: row for row in json.loads(result.stdout)}
    assert rows[1]["exists"] is False
    missing = read[2:]
    nat = np.isnat(missing) if missing.dtype.kind == "M" else np.zeros(2, dtype=bool)
    if missing.dtype.kind == "f":
        nat = np.isnan(missing)
    assert rows[1]["nan_count"] == int(nat.sum())
    assert rows[1]["count"] == 2 - int(nat.sum())
    assert rows[1]["fill_count"] == 2  # every element is what a missing chunk reads as
    assert rows[0]["fill_count"] == 0  # ones: not the default
    if dtype in ("i4", "f8", "bool"):
        assert (rows[1]["min"], rows[1]["max"], rows[1]["std"]) == (0.0, 0.0, 0.0)
