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
import tempfile
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
    assert max(len(unit) for unit in _units(tasks, batched=True)) == 3
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
