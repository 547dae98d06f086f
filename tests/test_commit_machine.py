"""Hypothesis: commits and concurrent writers, checked against what was reported written.

Two writers (two ``ShardedStore`` objects of one layout, as two processes would have)
write time steps, append time steps, fail writes, close, leave ``with`` blocks normally
or by an exception, or are dropped without ``close()`` (what exit does). The layout is
real: an array ``a`` sharded along time, with zip files or directories in a temporary
folder. The model is plain: the committed shape and the value of each time step, and per
writer what it staged, which zips it holds and which writes failed unhealed.

After every step a fresh read-only store must read exactly what the model says was
committed: no value appears where it was never written, no write that reported success
and was committed is lost, and every outcome (success, ``ConcurrentWriteError``,
``ConflictError``, ``CommitError``, a warning at exit) is the one the model expects.

In directories, chunks are written in place, and so is metadata; but a writer of
metadata holds the base's metadata lock until it ends (as a zip writer holds its zip),
and a writer that ends without committing writes its metadata back as it was.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

import shardedstore
import shardedstore.backends.documents as documents
from shardedstore import (
    CommitError,
    ConcurrentWriteError,
    ConflictError,
    CopyOnWriteZipStore,
    KeyValidationError,
    ShardedStore,
    UncommittedWarning,
    array_shard_directory_store,
    array_shard_template_store,
)

WIDTH = 2
METADATA = "a/zarr.json"


def _chunk_key(t: int) -> str:
    return f"a/c/{t}/0"


@dataclass
class Writer:
    """One writer: the store and zarr array it uses, and what the model expects of it."""

    store: ShardedStore
    array: zarr.Array
    shape: int  # the zarr array's shape along time, as this writer's array knows it
    read_version: int  # the version of the array's metadata its store last read or wrote
    snapshot: int  # zips: the version of the base zip its store reads (see reread)
    holds: set[str] = field(default_factory=set)  # zips with staged changes: "base", "3"
    # (directories: "base" once it wrote metadata; the shape before it did)
    base_shape: int | None = None
    staged: dict[int, float] = field(default_factory=dict)
    staged_shape: int | None = None
    failures: set[str] = field(default_factory=set)  # keys failed and not written again


class CommitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="shardedstore-commits-"))
        self.kind = "zip"
        self.config = self.root / "layout.json"
        self.writers: dict[int, Writer] = {}
        # The model: what a fresh reader must see.
        self.values: dict[int, float] = {}
        self.history: list[int] = []  # shape of each committed version of the metadata
        self.counter = 0.0
        self.blocked: int | None = None  # a time step whose shard cannot be written
        # A writer waits this long for another's metadata lock (30 s in use).
        self.lock_wait = documents.LOCK_WAIT
        documents.LOCK_WAIT = 0.05
        # gc.collect() runs after every drop: with what is alive now (pytest, hypothesis,
        # earlier examples' survivors) moved out of its way, it looks only at what this
        # example makes. The examples' own stores are collected in teardown.
        gc.freeze()

    def teardown(self) -> None:
        documents.LOCK_WAIT = self.lock_wait
        for writer in self.writers.values():  # discard what is left: nothing commits
            writer.store.__exit__(RuntimeError, RuntimeError("teardown"), None)
        self.writers.clear()
        gc.collect()
        shutil.rmtree(self.root)  # made by this machine, in the temporary directory

    @property
    def version(self) -> int:
        return len(self.history) - 1

    @property
    def shape(self) -> int:
        return self.history[-1]

    def _value(self) -> float:
        self.counter += 1.0
        return self.counter

    # ------------------------------------------------------------------ setup

    @initialize(kind=st.sampled_from(["zip", "directory"]))
    def make_layout(self, kind: str) -> None:
        self.kind = kind
        if kind == "zip":
            base: LocalStore | CopyOnWriteZipStore = CopyOnWriteZipStore(
                self.root / "base.zip", mode="a"
            )
            shards = array_shard_template_store(
                {"type": "zip", "path": f"{self.root}/a/{{chunk}}.zip"}
            )
        else:
            base = LocalStore(self.root / "base.zarr")
            shards = array_shard_directory_store(self.root / "a")
        store = ShardedStore(base, {}, {"a": (1, shards)})
        array = zarr.create_array(
            store, name="a", shape=(2, WIDTH), chunks=(1, WIDTH), dtype="f8", fill_value=np.nan
        )
        for t in range(2):
            value = self._value()
            array[t] = value
            self.values[t] = value
        store.close()
        store.save_config(self.config)
        self.history = [2]

    # ------------------------------------------------------------------ writers

    @precondition(lambda self: len(self.writers) < 2)
    @rule()
    def open_writer(self) -> None:
        w = min({0, 1} - set(self.writers))
        store = shardedstore.open(self.config, mode="r+")
        array = zarr.open_array(store, path="a", mode="r+")
        assert array.shape == (self.shape, WIDTH)
        self.writers[w] = Writer(store, array, self.shape, self.version, self.version)

    def _pick(self, data: st.DataObject) -> int:
        """One of the open writers."""
        return data.draw(st.sampled_from(sorted(self.writers)), label="writer")

    def _other_holds(self, w: int, zip_name: str) -> bool:
        return any(zip_name in o.holds for v, o in self.writers.items() if v != w)

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def write_step(self, data: st.DataObject) -> None:
        w = self._pick(data)
        t = data.draw(st.integers(0, self.writers[w].shape - 1), label="t")
        self._write(w, t)

    def _failed_steps(self, w: int) -> list[int]:
        writer = self.writers[w]
        steps = (int(key.split("/")[2]) for key in writer.failures if key.startswith("a/c/"))
        return sorted(t for t in steps if t < writer.shape)

    @precondition(lambda self: any(self._failed_steps(w) for w in self.writers))
    @rule(data=st.data())
    def retry_a_failed_write(self, data: st.DataObject) -> None:
        """Write a time step again whose write failed (what a caller does next)."""
        w = data.draw(st.sampled_from([w for w in sorted(self.writers) if self._failed_steps(w)]))
        self._write(w, data.draw(st.sampled_from(self._failed_steps(w)), label="t"))

    def _write(self, w: int, t: int) -> None:
        writer = self.writers[w]
        value = self._value()
        key = _chunk_key(t)
        if self.kind == "zip" and self._other_holds(w, str(t)):
            with pytest.raises(ConcurrentWriteError):
                writer.array[t] = value
            writer.failures.add(key)
            return
        if t == self.blocked:
            with pytest.raises(OSError):  # noqa: PT011 - which one depends on the shard type
                writer.array[t] = value
            writer.failures.add(key)
            return
        writer.array[t] = value
        writer.failures.discard(key)
        if self.kind == "zip":
            writer.holds.add(str(t))
            writer.staged[t] = value
        else:
            self.values[t] = value

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def append(self, data: st.DataObject) -> None:
        w = self._pick(data)
        writer = self.writers[w]
        value = self._value()
        new = np.full((1, WIDTH), value)
        t = writer.shape
        if self.kind == "zip":
            if self._other_holds(w, "base"):
                with pytest.raises(ConcurrentWriteError):
                    writer.array.append(new)
                writer.failures.add(METADATA)
                return
            if "base" not in writer.holds:
                writer.snapshot = self.version  # the store re-bases on the zip as it is
                if writer.read_version != self.version:
                    with pytest.raises(ConflictError, match=r"a/zarr\.json"):
                        writer.array.append(new)
                    writer.failures.add(METADATA)
                    return
            writer.holds.add("base")
            writer.staged_shape = t + 1
            if self._appended(writer, new, t):
                writer.holds.add(str(t))
                writer.staged[t] = value
        else:
            if self._other_holds(w, "base"):  # metadata writers take turns
                with pytest.raises(ConcurrentWriteError):
                    writer.array.append(new)
                writer.failures.add(METADATA)
                return
            # Compare-and-swap compares content: metadata written back as it was reads
            # as the version it restored.
            if self.history[writer.read_version] != self.shape:
                with pytest.raises(ConflictError, match=r"a/zarr\.json"):
                    writer.array.append(new)
                writer.failures.add(METADATA)
                return
            if "base" not in writer.holds:
                writer.holds.add("base")
                writer.base_shape = self.shape
            self.history.append(t + 1)  # the metadata is written first, at once
            writer.read_version = self.version
            if self._appended(writer, new, t):
                self.values[t] = value
        writer.shape = t + 1

    def _appended(self, writer: Writer, new: np.ndarray, t: int) -> bool:
        """Append; whether its chunk was written (the metadata always is, first)."""
        writer.failures.discard(METADATA)
        if t == self.blocked:
            with pytest.raises(OSError):  # noqa: PT011 - which one depends on the shard type
                writer.array.append(new)
            writer.failures.add(_chunk_key(t))
            return False
        writer.array.append(new)
        writer.failures.discard(_chunk_key(t))
        return True
        writer.failures.difference_update((METADATA, _chunk_key(t)))
        writer.shape = t + 1

    @precondition(lambda self: self.blocked is None)
    @rule()
    def block_the_next_step(self) -> None:
        """Make the shard of the next new time step unwritable (a file or directory
        where it goes), as a full or read-only disk would."""
        t = max([self.shape, *(writer.shape for writer in self.writers.values())])
        where = self.root / "a" / (f"{t}.zip" if self.kind == "zip" else f"{t}.zarr")
        if where.exists():  # written by an append that was discarded: not blocked
            return
        if self.kind == "zip":
            (self.root / "a" / f"{t}.zip").mkdir()  # new: no zip beyond the shapes
        else:
            (self.root / "a" / f"{t}.zarr").write_text("not a shard")
        self.blocked = t

    @precondition(lambda self: self.blocked is not None)
    @rule()
    def unblock(self) -> None:
        if self.kind == "zip":
            (self.root / "a" / f"{self.blocked}.zip").rmdir()
        else:
            (self.root / "a" / f"{self.blocked}.zarr").unlink()
        self.blocked = None

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def reread(self, data: st.DataObject) -> None:
        """The writer opens the array again: its store reads the metadata again."""
        w = self._pick(data)
        writer = self.writers[w]
        writer.array = zarr.open_array(writer.store, path="a", mode="r+")
        if self.kind == "zip" and "base" in writer.holds:
            assert writer.staged_shape is not None
            expected = writer.staged_shape  # its own uncommitted append
        elif self.kind == "zip":
            expected = self.history[writer.snapshot]  # the base zip as it last opened it
            writer.read_version = writer.snapshot
        else:
            expected = self.shape
            writer.read_version = self.version
        assert writer.array.shape == (expected, WIDTH)
        writer.shape = expected

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def fail_a_write(self, data: st.DataObject) -> None:
        """A write the store refuses (an invalid key): it never heals."""
        w = self._pick(data)
        writer = self.writers[w]
        with pytest.raises(KeyValidationError):
            sync(writer.store.set("a/../x", default_buffer_prototype().buffer.from_bytes(b"x")))
        writer.failures.add("a/../x")

    # ------------------------------------------------------------------ endings

    def _commit(self, writer: Writer) -> None:
        self.values.update(writer.staged)
        if writer.staged_shape is not None:
            self.history.append(writer.staged_shape)

    def _discard(self, writer: Writer) -> None:
        """Nothing of the writer is committed; in directories its metadata is written
        back (its chunks stay, beyond the shape)."""
        if self.kind == "directory" and writer.base_shape is not None:
            self.history.append(writer.base_shape)

    def _refused(self, writer: Writer) -> bool:
        """Whether ending this writer must commit nothing (and say so)."""
        return bool(writer.failures) and bool(writer.holds)

    @precondition(lambda self: self.writers)
    @rule(data=st.data(), how=st.sampled_from(["close", "with"]))
    def close(self, data: st.DataObject, how: str) -> None:
        writer = self.writers.pop(self._pick(data))
        if self._refused(writer):
            with pytest.raises(CommitError, match="nothing was committed") as refused:
                _end(writer.store, how)
            assert any(key in str(refused.value) for key in writer.failures)
            self._discard(writer)
            return
        _end(writer.store, how)
        self._commit(writer)

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def leave_with_block_by_an_exception(self, data: st.DataObject) -> None:
        writer = self.writers.pop(self._pick(data))
        with pytest.raises(RuntimeError, match="the job failed"), writer.store:
            raise RuntimeError("the job failed")
        self._discard(writer)

    @precondition(lambda self: self.writers)
    @rule(data=st.data())
    def drop_without_close(self, data: st.DataObject) -> None:
        """The writer's program ends (or forgets the store) without close()."""
        writer = self.writers.pop(self._pick(data))
        refused = self._refused(writer)
        gone = weakref.ref(writer.store)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del writer.store, writer.array
            gc.collect()
        assert gone() is None, "the store was not dropped"
        said = [w for w in caught if issubclass(w.category, UncommittedWarning)]
        if refused:
            assert said, "changes discarded at exit without a warning"
            assert any(key in str(said[0].message) for key in writer.failures)
            self._discard(writer)
        else:
            assert not said, [str(w.message) for w in said]
            self._commit(writer)

    # ------------------------------------------------------------------ invariant

    @invariant()
    def a_fresh_reader_sees_what_was_committed(self) -> None:
        if not self.history:
            return
        array = zarr.open_array(shardedstore.open(self.config), path="a", mode="r")
        assert array.shape == (self.shape, WIDTH)
        expected = np.full((self.shape, WIDTH), np.nan)
        for t, value in self.values.items():
            if t < self.shape:
                expected[t] = value
        np.testing.assert_array_equal(array[:], expected)


def _end(store: ShardedStore, how: str) -> None:
    """close() the store, or leave a ``with`` block normally."""
    if how == "close":
        store.close()
        return
    with store:
        pass


CommitMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCommitMachine = CommitMachine.TestCase
