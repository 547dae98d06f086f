"""Batches of small shards (shardedstore.table.batch) against the one-task path.

The chunk table runs the array shards of a directory or zip layout in batches: one event
loop, one parsed array per metadata document, many chunks in one decode, one Arrow
table. The model is the path every other task takes (``run_task``, one task at a time):
on layouts drawn by hypothesis (every dtype family, v2 and v3, compressed or not, the
sharding codec, edge chunks, missing shards and chunks, NaNs, a shard whose metadata
document differs, deflated zips), both give the same rows and fingerprints, and the same
"unchanged" answer on a rerun. Faults (a damaged zip member, a chunk gone between
listing and reading) fail or fall back as the one-task path does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import tempfile
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.codecs import ZstdCodec

import shardedstore
from shardedstore import ChunkTableError, write_chunk_table
from shardedstore.table import batch
from shardedstore.table.chunks import _units, plan_tasks
from shardedstore.table.stats import parse_stats
from shardedstore.table.tasks import run_task

STATS = parse_stats("min,max,mean,std,count,nan_count,fill_count", (-2.0, 2.0, 4))


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str  # "directory" | "zip" | "deflated zip"
    dtype: str
    zarr_format: int
    compressed: bool
    sharded: bool
    steps: int
    inner: tuple[int, ...]
    chunks: tuple[int, ...]
    written: tuple[bool, ...]
    odd_document: bool


@st.composite
def cases(draw: Any) -> Case:
    zarr_format = draw(st.sampled_from([2, 3]))
    ndim = draw(st.integers(1, 2))
    inner = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    chunks = tuple(draw(st.integers(1, n)) for n in inner)
    steps = draw(st.integers(2, 9))
    return Case(
        kind=draw(st.sampled_from(["directory", "zip", "deflated zip"])),
        dtype=draw(st.sampled_from(["f4", "f8", "i2", "u1", "bool", "c8"])),
        zarr_format=zarr_format,
        compressed=draw(st.booleans()),
        sharded=zarr_format == 3 and draw(st.booleans()),
        steps=steps,
        inner=inner,
        chunks=chunks,
        written=tuple(draw(st.lists(st.booleans(), min_size=steps, max_size=steps))),
        odd_document=draw(st.booleans()),
    )


def _values(case: Case, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.normal(size=shape)
    if case.dtype == "bool":
        return values > 0
    if case.dtype == "c8":
        return (values + 1j * values).astype("c8")
    if case.dtype[0] in "iu":
        data = (values * 3).astype(case.dtype)
        data[..., :1] = 0  # some chunks hold only the fill value: not stored
        return data
    data = values.astype(case.dtype)
    data.flat[::4] = np.nan
    return data


def _layout(root: Path, case: Case) -> Path:
    if case.kind == "directory":
        template: dict[str, Any] = {"type": "local", "root": "t/{chunk}.zarr"}
    else:
        template = {"type": "zip", "path": "t/{chunk}.zarr.zip"}
        if case.kind == "deflated zip":
            template["compression"] = 8
    config = root / "layout.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {"a": {"dims": 1, "store": template}},
            }
        )
    )
    shape = (case.steps, *case.inner)
    options: dict[str, Any] = {"fill_value": 0}
    if case.zarr_format == 3:
        options["compressors"] = ZstdCodec() if case.compressed else None
        if case.sharded:
            options["shards"] = (1, *(2 * c for c in case.chunks))  # edge shards too
    else:
        options["compressors"] = None if not case.compressed else "auto"
    store = shardedstore.open(config, mode="r+")
    array = zarr.create_array(
        store,
        name="a",
        shape=shape,
        chunks=(1, *case.chunks),
        dtype=case.dtype,
        zarr_format=case.zarr_format,
        **options,
    )
    data = _values(case, shape)
    for step, written in enumerate(case.written):
        if written:
            array[step] = data[step]
    store.close()
    if case.odd_document and case.kind == "directory" and case.written[0]:
        document = root / "t" / "0.zarr" / ("zarr.json" if case.zarr_format == 3 else ".zarray")
        if document.exists():  # (not when every value written was the fill value)
            found = json.loads(document.read_text())
            document.write_text(json.dumps(found, indent=4))  # the same array, other bytes
    return config


def _tasks(config: Path) -> list[Any]:
    store = shardedstore.open(config)
    return [t for t in plan_tasks(store, None, STATS).tasks if t.kind == "array shard"]


def _compare(one: list[Any], many: list[Any]) -> None:
    assert len(one) == len(many)
    for a, b in zip(one, many, strict=True):
        assert (a.fingerprint, a.exists) == (b.fingerprint, b.exists)
        if a.table is None or b.table is None:
            assert a.table is None
            assert b.table is None
        else:
            assert a.table.equals(b.table), (a.table.to_pylist(), b.table.to_pylist())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_a_batch_gives_what_each_task_gives(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = _layout(Path(tmp), case)
        tasks = _tasks(config)
        assert len(tasks) <= case.steps
        _compare([run_task(t) for t in tasks], batch.run_batch(tasks))
        # A rerun with the fingerprints: nothing read again, in either path.
        again = [
            dataclasses.replace(t, previous=r.fingerprint)
            for t, r in zip(_tasks(config), batch.run_batch(_tasks(config)), strict=True)
        ]
        many = batch.run_batch(again)
        _compare([run_task(t) for t in again], many)
        assert all(r.table is None for r in many)


def test_written_tables_do_not_depend_on_batching(tmp_path: Path) -> None:
    """write_chunk_table over 100 shards (batches of 3) equals the one-task tables."""
    case = Case("zip", "f4", 3, True, False, 100, (4, 3), (2, 2), (True,) * 99 + (False,), False)
    config = _layout(tmp_path, case)
    tasks = _tasks(config)
    assert max(len(unit) for unit in _units(tasks, True, len(tasks))) == 3
    out = tmp_path / "table"
    write_chunk_table(shardedstore.open(config), out, stats="min,max,nan_count")
    import pyarrow.parquet as pq

    written = pq.read_table(out).sort_by([("c0", "ascending"), ("c1", "ascending")])
    expected = [
        run_task(dataclasses.replace(t, options=parse_stats("min,max,nan_count"))) for t in tasks
    ]
    rows = [row for r in expected if r.table is not None for row in r.table.to_pylist()]
    assert written.num_rows == len(rows) == 99 * 4
    by_key = {row["key"]: row for row in rows}
    for row in written.to_pylist():
        want = by_key[row["key"]]
        assert (row["min"], row["max"], row["nan_count"]) == (
            want["min"],
            want["max"],
            want["nan_count"],
        )


def test_a_damaged_zip_member_fails_as_one_task_does(tmp_path: Path) -> None:
    case = Case("zip", "f8", 3, False, False, 6, (4,), (2,), (True,) * 6, False)
    config = _layout(tmp_path, case)
    path = tmp_path / "t" / "3.zarr.zip"
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("c/1")
        assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    # The member's data start after its local header: flip its last byte.
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("c/1")
    end = (
        info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size
    )
    raw[end - 1] ^= 0xFF
    path.write_bytes(bytes(raw))
    tasks = _tasks(config)
    with pytest.raises(zipfile.BadZipFile):
        run_task(tasks[3])
    with pytest.raises(batch.BatchFailure) as failure:
        batch.run_batch(tasks)
    assert failure.value.position == 3
    assert isinstance(failure.value.error, zipfile.BadZipFile)
    with pytest.raises(ChunkTableError, match="chunk 3"):
        write_chunk_table(shardedstore.open(config), tmp_path / "out", stats="max")


def test_a_chunk_gone_since_the_listing_reads_as_one_task_reads_it(tmp_path: Path) -> None:
    case = Case("directory", "i2", 3, True, False, 4, (6,), (3,), (True,) * 4, False)
    config = _layout(tmp_path, case)
    tasks = _tasks(config)
    pending = []
    arrays: dict[Any, Any] = {}

    async def plan_then_remove() -> Any:
        for n, task in enumerate(tasks):
            pending.append(await batch._plan(n, task, arrays))
        os.remove(tmp_path / "t" / "2.zarr" / "c" / "1")  # gone after the listing
        return await batch._decode(pending)

    from shardedstore.table.tasks import _run_inline

    assert _run_inline(plan_then_remove) is None  # the batch gives up: one task each
    one = [run_task(t) for t in _tasks(config)]
    _compare(one, batch.run_batch(_tasks(config)))
    assert one[2].table is not None
    assert one[2].table.num_rows == 1


def test_filesystem_types() -> None:
    """The type of the mount a path is on, as the mount table says (the last mounted on
    a point shows); None where the table has no mount above it (a chroot's root)."""
    try:
        with open("/proc/self/mounts") as mounts:
            table = [line.split()[1:3] for line in mounts if len(line.split()) > 2]
    except OSError:
        assert batch.filesystem_type("/") is None
        return
    visible = {point: kind for point, kind in table}  # later lines win
    for point, kind in visible.items():
        if os.path.isdir(point) and "\\" not in point:
            assert batch.filesystem_type(point) == kind
            assert batch.filesystem_type(os.path.join(point, "no-such-child")) == kind
    with tempfile.TemporaryDirectory() as tmp:
        found = batch.filesystem_type(tmp)
    assert found is None or found in set(visible.values())


# ------------------------------------------------------------------ review findings


def _steps(
    root: Path,
    steps: int,
    inner: tuple[int, ...] = (6,),
    chunks: tuple[int, ...] = (3,),
    kind: str = "directory",
    data: np.ndarray | None = None,
) -> Path:
    """A layout of ``steps`` array shards, values 1, 2, 3, ... (or ``data``)."""
    if kind == "directory":
        template: dict[str, Any] = {"type": "local", "root": "t/{chunk}.zarr"}
    else:
        template = {"type": "zip", "path": "t/{chunk}.zarr.zip"}
    config = root / "layout.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {"a": {"dims": 1, "store": template}},
            }
        )
    )
    store = shardedstore.open(config, mode="r+")
    shape = (steps, *inner)
    array = zarr.create_array(
        store,
        name="a",
        shape=shape,
        chunks=(1, *chunks),
        dtype="f4",
        fill_value=0,
        compressors=ZstdCodec(),
    )
    if data is None:
        data = np.arange(np.prod(shape), dtype="f4").reshape(shape) + 1
    for t in range(steps):
        array[t] = data[t]
    store.close()
    return config


def _value_tasks(config: Path, stats: str = "max") -> list[Any]:
    store = shardedstore.open(config)
    tasks = plan_tasks(store, None, parse_stats(stats)).tasks
    return [t for t in tasks if t.kind == "array shard"]


def test_small_shards_are_read_in_the_batch(tmp_path: Path, monkeypatch: Any) -> None:
    """The comparisons above are about the batch path: it must be the one that ran."""
    config = _steps(tmp_path, 12)
    alone: list[int] = []
    real = batch._run_one

    async def counted(position: int, task: Any, gate: Any = None) -> Any:
        alone.append(position)
        return await real(position, task, gate)

    monkeypatch.setattr(batch, "_run_one", counted)
    results = batch.run_batch(_value_tasks(config))
    assert alone == []
    assert [r.table.num_rows for r in results] == [2] * 12


def test_a_corrupt_chunk_names_its_own_shard(tmp_path: Path) -> None:
    config = _steps(tmp_path, 128)  # batches of 4: shard 5 shares one with 4, 6 and 7
    (tmp_path / "t" / "5.zarr" / "c" / "1").write_bytes(b"not zstd")
    with pytest.raises(ChunkTableError, match=r"chunk 5,"):
        shardedstore.chunk_table(shardedstore.open(config), stats="max", progress=False)
    with pytest.raises(batch.BatchFailure) as failure:
        batch.run_batch(_value_tasks(config)[4:8])
    assert failure.value.position == 1


def test_batch_results_pickle_as_small_as_one_task_results(tmp_path: Path) -> None:
    """Results travel back from process and dask workers by pickle."""
    config = _steps(tmp_path, 256, inner=(4,), chunks=(2,))
    one = len(pickle.dumps([run_task(t) for t in _value_tasks(config, "min,max")]))
    results = batch.run_batch(_value_tasks(config, "min,max"))
    many = len(pickle.dumps(results))
    assert many < 2 * one, (one, many)
    again = pickle.loads(pickle.dumps(results))
    assert all(a.table.equals(b.table) for a, b in zip(results, again, strict=True))


def test_a_batch_holds_no_more_decoded_bytes_than_one_task(tmp_path: Path) -> None:
    """64 chunks of 1 MiB decoded, a few bytes stored each: too big for a batch."""
    data = np.zeros((1, 8 * 512, 8 * 512), dtype="f4")
    data[0, ::512, ::512] = 1.0
    config = _steps(tmp_path, 1, inner=(8 * 512, 8 * 512), chunks=(512, 512), data=data)
    del data
    peaks = []
    for run in (
        lambda: [run_task(t) for t in _value_tasks(config)],
        lambda: batch.run_batch(_value_tasks(config)),
    ):
        tracemalloc.start()
        run()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    one, many = peaks
    assert many < 2 * one, (one >> 20, many >> 20)


def test_big_shards_still_run_in_parallel_threads(tmp_path: Path, monkeypatch: Any) -> None:
    import shardedstore.table.tasks as tasks_module

    config = _steps(tmp_path, 12, inner=(100,), chunks=(1,))  # 100 chunks: not small
    lock, running, peak = threading.Lock(), [0], [0]
    real = tasks_module.read_chunks

    async def counted(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.01)  # the other threads' turn to start theirs
            return await real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(tasks_module, "read_chunks", counted)
    shardedstore.chunk_table(shardedstore.open(config), stats="max", progress=False)
    assert peak[0] > 1


def test_a_zip_gone_since_the_listing_falls_back(tmp_path: Path) -> None:
    config = _steps(tmp_path, 4, kind="zip")
    tasks = _value_tasks(config)
    pending: list[Any] = []
    arrays: dict[Any, Any] = {}

    async def plan_remove_decode() -> Any:
        for n, task in enumerate(tasks):
            pending.append(await batch._plan(n, task, arrays))
        os.remove(tmp_path / "t" / "2.zarr.zip")
        return await batch._decode(pending)

    from shardedstore.table.tasks import _run_inline

    assert _run_inline(plan_remove_decode) is None  # as for a directory: one task each


def test_a_folder_swapped_for_a_symlink_after_the_listing_is_not_read(tmp_path: Path) -> None:
    config = _steps(tmp_path, 4)
    outside = zarr.create_array(
        str(tmp_path / "outside.zarr"),
        shape=(6,),
        chunks=(3,),
        dtype="f4",
        fill_value=0,
        compressors=ZstdCodec(),
    )
    outside[:] = 999.0
    tasks = _value_tasks(config)
    pending: list[Any] = []
    arrays: dict[Any, Any] = {}

    async def plan_swap_decode() -> Any:
        for n, task in enumerate(tasks):
            pending.append(await batch._plan(n, task, arrays))
        shutil.rmtree(tmp_path / "t" / "2.zarr" / "c")  # a folder of this test's layout
        os.symlink(tmp_path / "outside.zarr" / "c", tmp_path / "t" / "2.zarr" / "c")
        return await batch._decode(pending)

    from shardedstore.table.tasks import _run_inline

    assert _run_inline(plan_swap_decode) is None  # not the files the listing saw


def test_lru_order_holds_between_processes(tmp_path: Path) -> None:
    """A cache shared by processes: the entry used last is kept, whoever used the others."""
    import subprocess
    import sys

    from shardedstore.backends.cache import ShardCache, cache_engine

    x, y, z = "a" * 64, "b" * 64, "c" * 64
    engine = cache_engine(ShardCache(dir=str(tmp_path), max_bytes=2500))
    engine.put(x, b"x" * 1000)
    time.sleep(0.02)
    engine.put(y, b"y" * 1000)
    time.sleep(0.02)
    engine.lookup(x)
    time.sleep(0.02)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from shardedstore.backends.cache import ShardCache, cache_engine;"
            f"cache_engine(ShardCache(dir={str(tmp_path)!r}, max_bytes=2500)).lookup({y!r})",
        ],
        check=True,
    )
    time.sleep(0.02)
    engine.lookup(x)  # x: the most recently used
    engine.put(z, b"z" * 1000)
    kept = {n[0] for n in os.listdir(tmp_path / "shardedstore-cache-v1") if len(n) == 64}
    assert kept == {"a", "c"}
