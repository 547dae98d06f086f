"""shardedstore.spark: the PySpark data source, in a real Spark (``local[2]``).

One session for the module (starting Spark takes most of the time). Skipped, with the
reason, where pyspark (``pip install "shardedstore[spark]"``, which ``make test``
installs) is missing; where pyspark is installed but Java is not, the module fails.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from shardedstore import chunk_table, chunk_tasks, write_chunk_table

from .test_values import CHUNKS, HOT, SHAPE, _write, run_guide

pytest.importorskip("pyspark", reason='needs pyspark: pip install "shardedstore[spark]"')
if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
    # pyspark is installed (make test installs it), so these tests must run: a machine
    # without Java fails here, naming what is missing, rather than passing silently.
    pytest.fail("Spark needs Java (17 or newer) on PATH or JAVA_HOME", pytrace=False)

from pyspark.sql import SparkSession

import shardedstore.spark

# pyspark 4 on pandas 3 warns about itself (its toPandas passes copy=False to astype).
pytestmark = [
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def _hot(values: np.ndarray) -> dict[str, int]:
    return {"hot": int((values > 30).sum())}


@pytest.fixture(scope="module")
def spark() -> Iterator[SparkSession]:
    # The executors' Python is this one (with shardedstore installed), not "python3".
    saved = {name: os.environ.get(name) for name in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("shardedstore-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    shardedstore.spark.register(session, functions={"hot": (_hot, "hot bigint")})
    try:
        yield session
    finally:
        session.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, str]:
    root = tmp_path_factory.mktemp("spark")
    store, ds = _write(root, 3)
    return store, ds, str(root / "layout.json")


def test_chunk_table_with_statistics_equals_chunk_table(spark: SparkSession, layout: Any) -> None:
    store, _, config = layout
    frame = spark.read.format("shardedstore").option("stats", "min,max").load(config)
    assert dict(frame.dtypes)["array"] == "string"
    got = sorted((r["key"], r["min"], r["max"]) for r in frame.collect())
    expected = chunk_table(store, stats="min,max", progress=False)
    assert got == sorted(
        zip(
            expected["key"].to_pylist(),
            expected["min"].to_pylist(),
            expected["max"].to_pylist(),
            strict=True,
        )
    )


def test_filters_on_array_and_sharded_dimension_prune_partitions(
    spark: SparkSession, layout: Any
) -> None:
    store, _, config = layout
    frame = spark.read.format("shardedstore").load(config)
    assert frame.rdd.getNumPartitions() == len(chunk_tasks(store))
    # Spark SQL quotes names with backticks; "array" would be a string literal.
    one = frame.filter("`array` = 'temperature' AND c0 = 2")
    assert one.rdd.getNumPartitions() == 1
    rows = one.select("key").collect()
    assert sorted(r["key"] for r in rows) == sorted(
        k
        for k in chunk_table(store, "temperature", progress=False)["key"].to_pylist()
        if k.startswith("temperature/c/2/")
    )
    arrays = frame.filter("`array` IN ('temperature', 'humidity')")
    assert arrays.rdd.getNumPartitions() == 2 * SHAPE[0]


def test_map_chunks_on_executors(spark: SparkSession, layout: Any) -> None:
    _, ds, config = layout
    reader = spark.read.format("shardedstore").option("table", "map")
    maxima = reader.option("function", "max").option("array", "temperature").load(config)
    t = ds.temperature.values
    for row in maxima.collect():
        region = tuple(slice(row[f"start{i}"], row[f"stop{i}"]) for i in range(3))
        assert row["max"] == pytest.approx(float(np.nanmax(t[region])))
    assert maxima.count() == np.prod([s // c for s, c in zip(SHAPE, CHUNKS, strict=True)])
    hot = reader.option("function", "hot").option("array", "temperature").load(config)
    assert hot.groupBy().sum("hot").collect()[0][0] == int((t > 30).sum())


def test_values_with_pushed_filters(spark: SparkSession, layout: Any) -> None:
    _, ds, config = layout
    cells = (
        spark.read.format("shardedstore")
        .option("table", "values")
        .option("array", "temperature,humidity")
        .load(config)
    )
    assert cells.count() == np.prod(SHAPE)
    step = cells.filter("time_index = 2")
    assert step.rdd.getNumPartitions() == 1  # one array shard
    # Spark orders NaN above every number, as DuckDB does: NaN > 40 is true.
    hot = cells.filter("temperature > 40").select("time_index", "y_index", "x_index").collect()
    assert sorted(tuple(r) for r in hot) == sorted([*HOT, (1, 0, 0)])
    means = step.groupBy().avg("humidity").collect()[0][0]
    assert means == pytest.approx(float(ds.humidity.values[2].mean()))


def test_user_guide_spark_example(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = run_guide(tmp_path, monkeypatch, spark=True)
    assert found["spark"] is spark  # getOrCreate: the session of the module
    t = found["ds"].temperature.values
    assert found["day_3"].rdd.getNumPartitions() == 1
    assert sorted(r["key"] for r in found["day_3"].collect()) == sorted(
        k
        for k in chunk_table(found["store"], "temperature", progress=False)["key"].to_pylist()
        if k.startswith("temperature/c/3/")
    )
    hot = found["hot"]
    assert hot["c0"].tolist() == list(range(t.shape[0]))
    assert hot["sum(hot)"].tolist() == (t > 30).sum(axis=(1, 2)).tolist()
    assert found["cells"] == int((t[3] > 35).sum())


def test_spark_reads_one_partition_of_a_chunk_table_with_base_path(
    spark: SparkSession, layout: Any, tmp_path: Path
) -> None:
    store, _, _ = layout
    out = tmp_path / "chunks"
    write_chunk_table(store, out, progress=False)
    one = spark.read.option("basePath", str(out)).parquet(str(out / "array=temperature"))
    keys = [r["key"] for r in one.filter("`array` = 'temperature'").select("key").collect()]
    assert sorted(keys) == sorted(
        chunk_table(store, "temperature", progress=False)["key"].to_pylist()
    )
    # Spark SQL reads "array" as a string literal: one group, not one per array.
    one.createOrReplaceTempView("chunks")
    assert len(spark.sql('SELECT "array", count(*) FROM chunks GROUP BY "array"').collect()) == 1


def test_values_after_a_time_step_is_appended(spark: SparkSession, tmp_path: Path) -> None:
    """Workers that read the layout before see the step appended since, never stale rows."""
    store, _ = _write(tmp_path, 3)
    config = str(tmp_path / "layout.json")
    query = "SELECT count(*), max(time), sum(temperature) FROM cells WHERE time >= 5"

    def run() -> tuple[Any, ...]:
        source = spark.read.format("shardedstore").option("table", "values")
        cells = source.option("array", "temperature").option("coords", "false").load(config)
        cells.createOrReplaceTempView("cells")
        return tuple(spark.sql(query).collect()[0])

    before = run()
    assert before[:2] == (np.prod(SHAPE[1:]), SHAPE[0] - 1)
    array = zarr.open_array(store, path="temperature", mode="r+")
    array.resize((SHAPE[0] + 1, *SHAPE[1:]))
    array[SHAPE[0]] = 1.0
    after = run()
    assert after == (
        2 * np.prod(SHAPE[1:]),
        SHAPE[0],
        pytest.approx(before[2] + np.prod(SHAPE[1:])),
    )
