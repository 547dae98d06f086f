"""Reruns of write_chunk_table after changes: never a stale row.

A rerun checks the stamps a run recorded of each shard instead of listing it
(:mod:`shardedstore.table.seen`). The model is a plain record of the bytes each chunk
file holds and of the byte order each shard's ``zarr.json`` declares; a hypothesis state
machine changes the shards every way a writer can (zarr writes, in-place overwrites of
the same size, deleted chunks, a replaced ``zarr.json``, shards removed and new ones,
zips rewritten in place) and checks every run's table against the model.

Runs here record stamps however fresh (``RACY_NS`` 0, as if each run started long after
the writes before it), and the shards are changed only after the clock has moved on
from the run: what the margin guards against in real use. Other tests keep the margin.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

import shardedstore
from shardedstore import write_chunk_table
from shardedstore.table import batch, seen, tasks
from shardedstore.table.seen import Folders, Seen, is_racy, record, still_seen

STEPS, WIDTH, CHUNK = 4, 4, 2  # array (STEPS, WIDTH) int32, chunks (1, CHUNK)
TICK = 0.03  # seconds: longer than a coarse file-system clock's tick


def _layout(root: Path, kind: str) -> Path:
    store = (
        {"type": "zip", "path": "t/{chunk}.zarr.zip"}
        if kind == "zip"
        else {"type": "local", "root": "t/{chunk}.zarr"}
    )
    config = root / "layout.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {"a": {"dims": 1, "store": store}},
            }
        )
    )
    zarr.create_array(
        shardedstore.open(config, mode="r+"),
        name="a",
        shape=(STEPS, WIDTH),
        chunks=(1, CHUNK),
        dtype="i4",
        compressors=None,
        fill_value=0,
    )
    return config


def _write_step(config: Path, step: int, values: np.ndarray) -> None:
    store = shardedstore.open(config, mode="r+")  # afresh: shards removed behind its back
    zarr.open_array(store, path="a", mode="r+")[step] = values
    store.close()


def _table_rows(out: Path) -> dict[tuple[int, int], tuple[float, float]]:
    if not list(out.glob("*/*.parquet")):
        return {}
    table = pq.read_table(out, columns=["c0", "c1", "min", "max"]).to_pylist()
    rows = {(r["c0"], r["c1"]): (r["min"], r["max"]) for r in table}
    assert len(rows) == len(table)  # one row per chunk
    return rows


class _Zip:
    """A zip shard's members, rewritten in place (the same inode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as zf:
            self.members = {name: zf.read(name) for name in zf.namelist()}

    def save(self) -> None:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
            for name, data in self.members.items():
                zf.writestr(name, data)
        with open(self.path, "r+b") as file:
            file.write(buffer.getvalue())
            file.truncate()


class RerunMachine(RuleBasedStateMachine):
    """Shards changed between runs; each run's table against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="rerun-"))
        self.racy = seen.RACY_NS
        seen.RACY_NS = 0
        self.shards: dict[int, dict[str, Any]] = {}  # step -> endian, chunk bytes
        self.kind = "directory"

    def teardown(self) -> None:
        seen.RACY_NS = self.racy
        shutil.rmtree(self.tmp)

    @initialize(kind=st.sampled_from(["directory", "zip"]))
    def start(self, kind: str) -> None:
        self.kind = kind
        self.config = _layout(self.tmp, kind)
        self.out = self.tmp / "table"

    def _shard(self, step: int) -> Path:
        suffix = ".zarr.zip" if self.kind == "zip" else ".zarr"
        return self.tmp / "t" / f"{step}{suffix}"

    def _with_chunks(self) -> list[int]:
        return sorted(step for step, shard in self.shards.items() if shard["chunks"])

    @rule(
        step=st.integers(0, STEPS - 1),
        values=st.lists(st.integers(1, 2**31 - 1), min_size=WIDTH, max_size=WIDTH),
    )
    def write_through_zarr(self, step: int, values: list[int]) -> None:
        _write_step(self.config, step, np.array(values, dtype="i4"))
        shard = self.shards.setdefault(step, {"endian": "<", "chunks": {}})
        # A store's first write to a shard writes the shard's metadata as base implies
        # it: a zarr.json flipped behind its back is little-endian again.
        shard["endian"] = "<"
        data = np.array(values, dtype="<i4")
        for j in range(WIDTH // CHUNK):
            shard["chunks"][j] = data[j * CHUNK : (j + 1) * CHUNK].tobytes()

    @precondition(lambda self: any(s["chunks"] for s in self.shards.values()))
    @rule(data=st.data(), value=st.integers(-(2**31), 2**31 - 1))
    def overwrite_in_place(self, data: st.DataObject, value: int) -> None:
        """A chunk's bytes changed in place: the same file, the same size."""
        step = data.draw(
            st.sampled_from(sorted(s for s in self.shards if self.shards[s]["chunks"]))
        )
        chunks = self.shards[step]["chunks"]
        j = data.draw(st.sampled_from(sorted(chunks)))
        new = np.array([value, value ^ 1], dtype="<i4").tobytes()
        if self.kind == "zip":
            members = _Zip(self._shard(step))
            members.members[f"c/{j}"] = new
            members.save()
        else:
            with open(self._shard(step) / "c" / str(j), "r+b") as file:
                file.write(new)
        chunks[j] = new

    @precondition(lambda self: any(s["chunks"] for s in self.shards.values()))
    @rule(data=st.data())
    def delete_chunk(self, data: st.DataObject) -> None:
        step = data.draw(
            st.sampled_from(sorted(s for s in self.shards if self.shards[s]["chunks"]))
        )
        j = data.draw(st.sampled_from(sorted(self.shards[step]["chunks"])))
        if self.kind == "zip":
            members = _Zip(self._shard(step))
            del members.members[f"c/{j}"]
            members.save()
        else:
            os.remove(self._shard(step) / "c" / str(j))
        del self.shards[step]["chunks"][j]

    @precondition(lambda self: bool(self.shards))
    @rule(data=st.data())
    def flip_byte_order(self, data: st.DataObject) -> None:
        """The shard's ``zarr.json`` replaced: its chunks now read in the other order."""
        step = data.draw(st.sampled_from(sorted(self.shards)))
        shard = self.shards[step]
        shard["endian"] = ">" if shard["endian"] == "<" else "<"
        name = "big" if shard["endian"] == ">" else "little"
        if self.kind == "zip":
            members = _Zip(self._shard(step))
            document = json.loads(members.members["zarr.json"])
        else:
            path = self._shard(step) / "zarr.json"
            document = json.loads(path.read_text())
        document["codecs"][0]["configuration"]["endian"] = name
        if self.kind == "zip":
            members.members["zarr.json"] = json.dumps(document).encode()
            members.save()
        else:
            partial = path.with_name("zarr.json.partial")
            partial.write_text(json.dumps(document))
            os.replace(partial, path)  # as zarr writes it

    @precondition(lambda self: bool(self.shards))
    @rule(data=st.data())
    def remove_shard(self, data: st.DataObject) -> None:
        step = data.draw(st.sampled_from(sorted(self.shards)))
        if self.kind == "zip":
            os.remove(self._shard(step))
        else:
            shutil.rmtree(self._shard(step))
        del self.shards[step]

    @rule(shards_per_file=st.sampled_from([1, 2, 256]))
    def run(self, shards_per_file: int) -> None:
        store = shardedstore.open(self.config)
        write_chunk_table(store, self.out, stats="min,max", shards_per_file=shards_per_file)
        assert _table_rows(self.out) == self._expected()
        time.sleep(TICK)  # changes after the run stamp a later tick than the run saw
        # nothing changed since: every file kept, from the stamps alone
        again = write_chunk_table(store, self.out, stats="min,max", shards_per_file=shards_per_file)
        assert again.written == again.removed == ()
        assert _table_rows(self.out) == self._expected()

    def _expected(self) -> dict[tuple[int, int], tuple[float, float]]:
        rows = {}
        for step, shard in self.shards.items():
            for j, raw in shard["chunks"].items():
                values = np.frombuffer(raw, dtype=f"{shard['endian']}i4")
                rows[(step, j)] = (float(values.min()), float(values.max()))
        return rows


RerunMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=12, deadline=None)
test_reruns_against_the_model = RerunMachine.TestCase


# ------------------------------------------------------------------ single cases


@pytest.fixture
def no_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seen, "RACY_NS", 0)


def _walks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The shards listed from now on: folders walked, zips read (spies on the real ones)."""
    walked: list[str] = []
    for module, name in ((tasks, "walk_local"), (tasks, "_zip_members"), (batch, "_zip_members")):
        real = getattr(module, name)

        def spy(root: str, *args: Any, real: Any = real, **kwargs: Any) -> Any:
            walked.append(os.path.abspath(root))
            return real(root, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return walked


def _steps(tmp_path: Path, kind: str = "directory") -> Path:
    config = _layout(tmp_path, kind)
    for step in range(STEPS):
        _write_step(config, step, np.arange(WIDTH, dtype="i4") + 10 * step + 1)
    return config


@pytest.mark.parametrize("kind", ["directory", "zip"])
def test_an_unchanged_rerun_lists_no_shard(
    tmp_path: Path, no_margin: None, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    config = _steps(tmp_path, kind)
    out = tmp_path / "table"
    one = {"stats": "min,max", "shards_per_file": 2}
    first = write_chunk_table(shardedstore.open(config), out, **one)
    time.sleep(TICK)
    walked = _walks(monkeypatch)
    again = write_chunk_table(shardedstore.open(config), out, **one)
    assert again.written == ()
    assert sorted(again.unchanged) == sorted(first.written)
    assert walked == []  # no shard listed
    # other statistics: the records are not taken for them
    other = write_chunk_table(shardedstore.open(config), out, stats="min,max,mean")
    assert len(other.written) == 1
    assert len(walked) == STEPS
    assert _table_rows(out)[(2, 1)] == (23.0, 24.0)


def test_a_same_size_rewrite_with_its_old_mtime_is_seen(
    tmp_path: Path, no_margin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In place, the same size, the mtime set back: the ctime still moves."""
    config = _steps(tmp_path)
    out = tmp_path / "table"
    write_chunk_table(shardedstore.open(config), out, stats="min,max")
    time.sleep(TICK)
    chunk = tmp_path / "t" / "1.zarr" / "c" / "0"
    before = chunk.stat()
    with open(chunk, "r+b") as file:
        file.write(np.array([500, 600], dtype="<i4").tobytes())
    os.utime(chunk, ns=(before.st_atime_ns, before.st_mtime_ns))
    walked = _walks(monkeypatch)
    again = write_chunk_table(shardedstore.open(config), out, stats="min,max")
    assert again.written == ("array=a/shards-0-255.parquet",)
    assert walked == [str(tmp_path / "t" / "1.zarr")]  # that shard alone is listed
    assert _table_rows(out)[(1, 0)] == (500.0, 600.0)


def test_fresh_stamps_are_not_recorded_and_their_shards_are_read_again(tmp_path: Path) -> None:
    """With the real margin, shards written just now are read again by the next run."""
    config = _steps(tmp_path)
    out = tmp_path / "table"
    write_chunk_table(shardedstore.open(config), out, stats="max")
    cache = json.loads((out / "_fingerprints.json").read_text())["files"]
    entry = cache["array=a/shards-0-255.parquet"]
    assert entry[3]["shards"] == {}
    assert all(value.startswith("racy:") for value in entry[2].values())
    again = write_chunk_table(shardedstore.open(config), out, stats="max")
    assert again.written == ("array=a/shards-0-255.parquet",)  # read again, not trusted


def test_records_and_checks(tmp_path: Path) -> None:
    folder = tmp_path / "shard"
    folder.mkdir()
    (folder / "x").write_bytes(b"1234")
    stamps = [("", os.lstat(folder)), ("x", os.lstat(folder / "x"))]
    now = time.time_ns()
    folders = Folders()
    assert record(stamps, "context", now - 10**12) is None  # too fresh
    assert is_racy([], now)
    kept = record(stamps, "context", now + 10**9)
    assert kept is not None
    assert kept.paths == ("", "x")
    assert still_seen(kept, "context", str(folder), False, folders)
    assert not still_seen(kept, "other context", str(folder), False, folders)
    assert not still_seen(Seen((), kept.digest), "context", str(folder), False, folders)
    time.sleep(TICK)
    (folder / "y").write_bytes(b"")  # a new entry: the folder's stamp moves
    assert not still_seen(kept, "context", str(folder), False, folders)
    kept = record([("", os.lstat(folder)), ("x", os.lstat(folder / "x"))], "c", now + 10**12)
    assert kept is not None
    (folder / "x").unlink()
    assert not still_seen(kept, "c", str(folder), False, folders)
    folders.close()


def test_a_zip_replaced_after_its_store_opened_it_is_not_recorded(tmp_path: Path) -> None:
    # Rows of a zip shard are read through its store's open zip; its stamps come from
    # the path. A zip swapped in between (a new version published by renaming) must not
    # leave the old zip's rows under the new zip's stamps: no record, read again.
    import asyncio
    import dataclasses

    from shardedstore.backends.handles import opened

    config = _layout(tmp_path, "zip")
    _write_step(config, 0, np.arange(WIDTH, dtype="i4") + 1)
    _write_step(config, 1, np.arange(WIDTH, dtype="i4") + 7)
    store = shardedstore.open(config)
    found = {t.shard_index: t for t in shardedstore.chunk_tasks(store, "a") if t.shard_index}
    before = time.time_ns() + 10**9  # nothing racy by time: only the swap may say so

    async def listed(task: Any, swap: bool) -> Any:
        task = dataclasses.replace(task, stamps_before=before)
        assert await opened(task.store)
        if swap:  # another version of the same shard, renamed over it
            path = Path(task.store.path)
            spare = path.with_name("spare.zip")
            shutil.copyfile(tmp_path / "t" / "1.zarr.zip", spare)
            os.replace(spare, path)
        return await tasks._list_chunks(task)

    kept = asyncio.run(listed(found["1"], swap=False))
    assert kept.stamps
    assert not is_racy(kept.stamps, before)
    swapped = asyncio.run(listed(found["0"], swap=True))
    assert swapped.stamps == []
    assert is_racy(swapped.stamps, before)
