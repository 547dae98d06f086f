"""Statistics are never stale: each shortcut of a selective query sees what changed behind it.

The shortcuts: shard walks kept and re-validated by ``lstat``
(:mod:`shardedstore.table.freshness`), chunk-table files parsed once, what is known of an
array kept while all of that is unchanged (:mod:`shardedstore.table.statistics`), value
pruners and their masks kept, DuckDB's parse of a query cached and one in-memory
database shared. Each test first shows the shortcut taken (the same statistics object
comes back), then changes what it stands for, and the very next query must see it. The
racy window is lowered (and waited out) so that walks are kept at all. A hypothesis state
machine mixes writers (zarr, in place, removals), chunk-table rewrites and queries
against a plain numpy model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.compute as pc
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from zarr.storage import LocalStore

from shardedstore import (
    ShardedStore,
    array_shard_directory_store,
    chunk_tasks,
    sql,
    values,
    write_chunk_table,
)
from shardedstore.table import freshness, seen
from shardedstore.table.values import ValuesPlan

RACY = 0.05
SHAPE = (4, 4, 4)
CHUNKS = (1, 2, 2)
HOT = pc.field("t") > 40
COLD = pc.field("t") < 1


@pytest.fixture(autouse=True)
def _settle_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness, "RACY_NS", int(RACY * 1e9))
    # Chunk tables written straight after the data record its stamps (their own racy
    # rule has its tests in test_chunk_rerun.py).
    monkeypatch.setattr(seen, "RACY_NS", 0)


def _settle() -> None:
    time.sleep(2 * RACY)


def _open(root: Path) -> ShardedStore:
    return ShardedStore(
        LocalStore(root / "base.zarr"), {}, {"t": (1, array_shard_directory_store(root / "t"))}
    )


def _layout(root: Path) -> tuple[ShardedStore, np.ndarray]:
    """int32 ``t`` (4, 4, 4), chunks (1, 2, 2), array-sharded on the first dimension, no
    compression (a chunk's file has one size whatever it holds), fill value 0.

    Values 1..30; chunk (1, 1, 0) all fill (not stored); shard 3 never written.
    """
    store = _open(root)
    array = zarr.create_array(
        store, name="t", shape=SHAPE, chunks=CHUNKS, dtype="i4", fill_value=0,
        compressors=None, dimension_names=["a", "b", "c"],
    )  # fmt: skip
    model = np.zeros(SHAPE, dtype="i4")
    model[:3] = (np.arange(48).reshape(3, 4, 4) % 30 + 1).astype("i4")
    model[1, 2:4, 0:2] = 0
    array[:3] = model[:3]
    return store, model


def _chunk_file(root: Path, coords: tuple[int, int, int]) -> Path:
    return root / "t" / f"{coords[0]}.zarr" / "c" / str(coords[1]) / str(coords[2])


def _poke(path: Path, cell: int, value: int) -> None:
    """A writer changing one value of a stored chunk in place (same file, same size)."""
    data = np.frombuffer(path.read_bytes(), dtype="<i4").copy()
    data[cell] = value
    with open(path, "r+b") as file:
        file.write(data.tobytes())


def _cells(store: ShardedStore, where: pc.Expression, statistics: Any) -> set[tuple[int, ...]]:
    table = values(store, "t", where=where, columns=["a", "b", "c"], statistics=statistics)
    read = table.read_all()
    return set(zip(*(read.column(n).to_pylist() for n in "abc"), strict=True))


def _truth(model: np.ndarray, where: pc.Expression) -> set[tuple[int, ...]]:
    mask = model > 40 if where.equals(HOT) else model < 1
    return {tuple(int(i) for i in cell) for cell in np.argwhere(mask)}


def _chunks_holding(model: np.ndarray, where: pc.Expression) -> int:
    return len({(a, b // 2, c // 2) for a, b, c in _truth(model, where)})


MODES = ["computed", "chunk table"]


def _prime(store: ShardedStore, root: Path, mode: str) -> Any:
    """Statistics ready for ``mode`` and the shortcut taken: returns ``statistics=``."""
    statistics: Any = None
    if mode == "chunk table":
        statistics = root / "chunks"
        write_chunk_table(store, statistics, stats="min,max,nan_count", progress=False)
    _settle()
    for where in (HOT, COLD):
        _cells(store, where, statistics)  # a computed run learns here
    plan = ValuesPlan(store, "t", statistics=statistics)
    first, second = plan.prune(HOT), plan.prune(HOT)
    assert first.known["t"] is second.known["t"]  # nothing walked or parsed again
    return statistics


def _check(store: ShardedStore, model: np.ndarray, statistics: Any) -> None:
    for where in (HOT, COLD):
        assert _cells(store, where, statistics) == _truth(model, where)


@pytest.mark.parametrize("mode", MODES)
def test_a_chunk_overwritten_in_place_with_its_size_is_seen(tmp_path: Path, mode: str) -> None:
    store, model = _layout(tmp_path)
    statistics = _prime(store, tmp_path, mode)
    path = _chunk_file(tmp_path, (2, 1, 1))
    before = path.stat()
    _poke(path, 3, 45)
    after = path.stat()
    assert (after.st_size, after.st_ino) == (before.st_size, before.st_ino)
    model[2, 3, 3] = 45
    _check(store, model, statistics)


@pytest.mark.parametrize("mode", MODES)
def test_a_new_chunk_is_seen(tmp_path: Path, mode: str) -> None:
    store, model = _layout(tmp_path)
    statistics = _prime(store, tmp_path, mode)
    assert not _chunk_file(tmp_path, (1, 1, 0)).exists()  # fill: pruned without reading
    zarr.open_array(store, path="t", mode="r+")[1, 2, 1] = 45
    model[1, 2, 1] = 45
    _check(store, model, statistics)


@pytest.mark.parametrize("mode", MODES)
def test_a_removed_chunk_is_seen(tmp_path: Path, mode: str) -> None:
    store, model = _layout(tmp_path)
    statistics = _prime(store, tmp_path, mode)
    _chunk_file(tmp_path, (0, 1, 0)).unlink()  # its cells read as the fill value, 0
    model[0, 2:4, 0:2] = 0
    _check(store, model, statistics)


@pytest.mark.parametrize("mode", MODES)
def test_a_new_shard_and_a_removed_shard_are_seen(tmp_path: Path, mode: str) -> None:
    store, model = _layout(tmp_path)
    statistics = _prime(store, tmp_path, mode)
    assert not (tmp_path / "t" / "3.zarr").exists()
    zarr.open_array(store, path="t", mode="r+")[3, 0, 0] = 45
    model[3, 0, 0] = 45
    _check(store, model, statistics)
    shutil.rmtree(tmp_path / "t" / "2.zarr")
    model[2] = 0
    _check(store, model, statistics)


def test_a_rewritten_chunk_table_is_read_again(tmp_path: Path) -> None:
    store, model = _layout(tmp_path)
    statistics = _prime(store, tmp_path, "chunk table")
    _poke(_chunk_file(tmp_path, (2, 0, 0)), 0, 45)
    model[2, 0, 0] = 45
    _check(store, model, statistics)
    plan = ValuesPlan(store, "t", statistics=statistics)
    stale = plan.prune(HOT).chunks
    assert stale > _chunks_holding(model, HOT)  # shard 2's statistics no longer hold
    write_chunk_table(store, statistics, stats="min,max,nan_count", progress=False)
    assert plan.prune(HOT).chunks == _chunks_holding(model, HOT)  # the new file, at once
    _check(store, model, statistics)
    for file in Path(statistics).glob("array=t/*.parquet"):
        file.unlink()  # no chunk table at all: nothing from it
    assert plan.prune(HOT).chunks > _chunks_holding(model, HOT)
    _check(store, model, statistics)


def test_fresh_files_are_walked_again_until_they_settle(tmp_path: Path) -> None:
    store, _ = _layout(tmp_path)
    task = next(t for t in chunk_tasks(store, "t") if t.shard_index == "0")
    freshness.RACY_NS = int(60 * 1e9)  # every file is "just written" (monkeypatch undoes)
    racy = [freshness.list_local_fresh(task)[1] for _ in range(3)]
    assert racy == [None, None, None]  # never kept (no token): walked at each query
    freshness.RACY_NS = int(RACY * 1e9)
    _settle()
    tokens = {freshness.list_local_fresh(task)[1] for _ in range(3)}
    assert len(tokens) == 1
    assert None not in tokens
    # A change that only ctime shows (mtime set back, same size and inode) is a change.
    path = _chunk_file(tmp_path, (0, 0, 1))
    before = path.stat()
    _poke(path, 0, 45)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (before.st_mtime_ns, before.st_size)
    token = freshness.list_local_fresh(task)[1]
    assert token not in tokens
    assert freshness.settled([(0, 10, 10, 0)], 10 + 2 * freshness.RACY_NS)
    assert not freshness.settled([(0, 10, 10 + freshness.RACY_NS, 0)], 10 + freshness.RACY_NS)


# ----------------------------------------------------------------- DuckDB


def test_sql_statements_leave_nothing_behind(tmp_path: Path) -> None:
    store, model = _layout(tmp_path)
    query = 'SELECT a, b, c FROM "T" WHERE t < 1 ORDER BY a, b, c'  # names fold case
    got = sql(store, query)
    assert {tuple(r.values()) for r in got.to_pylist()} == _truth(model, COLD)
    sql(store, "CREATE TABLE kept AS SELECT 1 AS x")  # not a SELECT: its own database
    with pytest.raises(duckdb.CatalogException):
        sql(store, "SELECT * FROM kept")
    with pytest.raises(duckdb.CatalogException):
        sql(store, "SELECT * FROM query")  # no table, nor a Python variable, named so
    by_function = sql(store, "SELECT count(*) AS n FROM query_table('t')")
    assert by_function.column("n").to_pylist() == [model.size]


def test_sql_cached_parse_sees_a_changed_layout(tmp_path: Path) -> None:
    query = "SELECT a, b, c FROM t WHERE t > 40"
    store, _model = _layout(tmp_path / "one")
    _settle()
    assert sql(store, query).num_rows == 0
    zarr.open_array(store, path="t", mode="r+")[0, 0, 0] = 45
    assert sql(store, query).to_pylist() == [{"a": 0, "b": 0, "c": 0}]
    other, _ = _layout(tmp_path / "two")
    assert sql(other, query).num_rows == 0


def test_sql_from_threads_at_once(tmp_path: Path) -> None:
    store, model = _layout(tmp_path)
    model[1, 1, 1] = 45
    zarr.open_array(store, path="t", mode="r+")[1, 1, 1] = 45
    _settle()
    found: list[Any] = []

    def run() -> None:
        found.append(sql(store, "SELECT a, b, c FROM t WHERE t > 40").to_pylist())

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert found == [[{"a": 1, "b": 1, "c": 1}]] * 4


# ----------------------------------------------------------------- state machine


class Freshness(RuleBasedStateMachine):
    """Writers, removals, chunk-table rewrites and queries, against a numpy model."""

    @initialize()
    def setup(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="shardedstore-freshness-"))
        self.store, self.model = _layout(self.root)
        self.chunks = self.root / "chunks"
        self.has_table = False

    def teardown(self) -> None:
        root = getattr(self, "root", None)
        if root is not None and root.name.startswith("shardedstore-freshness-"):
            shutil.rmtree(root, ignore_errors=True)

    @rule(
        cell=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
        value=st.sampled_from([0, 5, 45]),
    )
    def write_with_zarr(self, cell: tuple[int, int, int], value: int) -> None:
        zarr.open_array(self.store, path="t", mode="r+")[cell] = value
        self.model[cell] = value

    @rule(
        cell=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
        value=st.sampled_from([0, 5, 45]),
    )
    def write_in_place(self, cell: tuple[int, int, int], value: int) -> None:
        a, b, c = cell
        path = _chunk_file(self.root, (a, b // 2, c // 2))
        if not path.exists():
            return
        _poke(path, (b % 2) * 2 + c % 2, value)
        self.model[cell] = value

    @rule(chunk=st.tuples(st.integers(0, 3), st.integers(0, 1), st.integers(0, 1)))
    def remove_chunk(self, chunk: tuple[int, int, int]) -> None:
        path = _chunk_file(self.root, chunk)
        if path.exists():
            path.unlink()
            a, b, c = chunk
            self.model[a, 2 * b : 2 * b + 2, 2 * c : 2 * c + 2] = 0

    @rule(shard=st.integers(0, 3))
    def remove_shard(self, shard: int) -> None:
        path = self.root / "t" / f"{shard}.zarr"
        if path.exists():
            shutil.rmtree(path)
            self.model[shard] = 0
            self.store = _open(self.root)  # a writer of its own, which knows it is gone

    @rule()
    def write_chunk_table(self) -> None:
        write_chunk_table(self.store, self.chunks, stats="min,max,nan_count", progress=False)
        self.has_table = True

    @rule()
    def settle(self) -> None:
        _settle()

    @rule(
        where=st.sampled_from([HOT, COLD]),
        mode=st.sampled_from(["computed", "chunk table", "none", "sql"]),
        settle_first=st.booleans(),
    )
    def query(self, where: pc.Expression, mode: str, settle_first: bool) -> None:
        if settle_first:
            _settle()  # so that this query's walks are kept, for the next one to reuse
        statistics: Any = {"computed": None, "none": False}.get(mode, self.chunks)
        if mode == "chunk table" and not self.has_table:
            statistics = None
        if mode == "sql":
            op = ">" if where.equals(HOT) else "<"
            bound = 40 if where.equals(HOT) else 1
            table = sql(self.store, f"SELECT a, b, c FROM t WHERE t {op} {bound}")
            got = {(r["a"], r["b"], r["c"]) for r in table.to_pylist()}
        else:
            got = _cells(self.store, where, statistics)
        assert got == _truth(self.model, where)

    @invariant()
    def pruning_never_loses_a_match(self) -> None:
        if not hasattr(self, "store"):
            return
        plan = ValuesPlan(self.store, "t", statistics=self.chunks if self.has_table else None)
        kept = {c for _, chunks in plan.prune(HOT).selected for c in chunks}
        holding = {(a, b // 2, c // 2) for a, b, c in _truth(self.model, HOT)}
        assert holding <= kept


Freshness.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_freshness_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(freshness, "RACY_NS", int(RACY * 1e9))
    Freshness.TestCase().runTest()


def test_the_cache_version_moves_only_when_what_it_holds_does() -> None:
    from shardedstore.table.statistics import StatisticsCache

    cache = StatisticsCache(limit=2)
    cache.put("a", (0,), (1.0, 2.0, 0))
    version = cache.version
    cache.put("a", (0,), (1.0, 2.0, 0))  # a scan storing what is there already
    cache.put("a", (0,), (1.0, 2.0, 0))
    assert cache.version == version
    cache.put("a", (0,), (1.0, 3.0, 0))
    assert cache.version > version
    version = cache.version
    nan = float("nan")
    cache.put("a", (1,), (nan, nan, 4))
    assert cache.version > version
    version = cache.version
    cache.put("a", (1,), (nan, nan, 4))  # NaN bounds are the same bounds
    assert cache.version == version
    cache.put("a", (1,), (nan, nan, 5))
    assert cache.version > version
    version = cache.version
    cache.put("b", (0,), (1.0, 2.0, 0))  # over the limit: "a" goes
    assert cache.version > version
    assert cache.get("a") == {}
