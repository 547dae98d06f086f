"""Hypothesis: a ShardedStore behaves like one plain MemoryStore.

Our own machine draws random layouts; zarr's own machines (``zarr.testing.stateful``)
run unmodified over fixed layouts with mounts on the node names they draw.
"""

from __future__ import annotations

import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from zarr.abc.store import Store
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator, sync
from zarr.storage import LocalStore, MemoryStore
from zarr.testing.stateful import ZarrHierarchyStateMachine, ZarrStoreStateMachine

from shardedstore import ShardedStore, array_shard_directory_store
from tests.conftest import MemoryShardFactory

SEGMENTS = ["a", "b", "c", "g", "zarr.json", "x.y", "0", "12"]
NODE_PATHS = ["a", "b", "g/a", "g/b", "a/b", "b/c/d", "g"]


def _nests(path: str, others: list[str]) -> bool:
    return any(path == o or path.startswith(o + "/") or o.startswith(path + "/") for o in others)


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    chosen: list[str] = []
    for path in draw(st.permutations(NODE_PATHS)):
        if len(chosen) < 4 and not _nests(path, chosen) and draw(st.booleans()):
            chosen.append(path)
    mounts, arrays = [], {}
    for path in chosen:
        if draw(st.booleans()):
            mounts.append(path)
        else:
            dims = draw(st.integers(1, 2))
            prefix, sep = draw(st.sampled_from([("c", "/"), ("c", "."), ("", "."), ("", "/")]))
            # v2 keys need two remaining indices to spell their separator without metadata.
            extra = draw(st.integers(1, 2)) if prefix else 2
            arrays[path] = (dims, prefix, sep, dims + extra)
    return {"mounts": mounts, "arrays": arrays}


class ShardedVsMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reference = MemoryStore()
        self.store: ShardedStore | None = None
        self.layout: dict[str, Any] = {}

    @initialize(layout=layouts())
    def make_store(self, layout: dict[str, Any]) -> None:
        self.layout = layout
        self.store = ShardedStore(
            MemoryStore(),
            {path: MemoryStore() for path in layout["mounts"]},
            {path: (spec[0], MemoryShardFactory()) for path, spec in layout["arrays"].items()},
        )

    @property
    def sharded(self) -> ShardedStore:
        assert self.store is not None
        return self.store

    def _under_array(self, key: str) -> bool:
        return any(key.startswith(a + "/") for a in self.layout["arrays"])

    @st.composite
    @staticmethod
    def _keys(draw: st.DrawFn, machine: ShardedVsMemory) -> str:
        arrays = machine.layout["arrays"]
        if arrays and draw(st.booleans()):
            path = draw(st.sampled_from(sorted(arrays)))
            _, prefix, sep, arity = arrays[path]
            parts = [str(draw(st.integers(0, 12))) for _ in range(arity)]
            return f"{path}/{prefix + sep if prefix else ''}{sep.join(parts)}"
        key = "/".join(draw(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4)))
        if machine._under_array(key):
            return "plain"  # keys under arrays come only from the branch above
        return key

    def key(self) -> st.SearchStrategy[str]:
        return self._keys(self)

    @rule(data=st.data(), value=st.binary(max_size=8))
    def set(self, data: st.DataObject, value: bytes) -> None:
        key = data.draw(self.key())
        sync(self.sharded.set(key, cpu.Buffer.from_bytes(value)))
        sync(self.reference.set(key, cpu.Buffer.from_bytes(value)))

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        got = sync(self.sharded.get(key, default_buffer_prototype()))
        want = sync(self.reference.get(key, default_buffer_prototype()))
        assert (got and got.to_bytes()) == (want and want.to_bytes())
        assert sync(self.sharded.exists(key)) == (want is not None)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        sync(self.sharded.delete(key))
        sync(self.reference.delete(key))

    @rule(data=st.data())
    def list_prefix(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        prefix = key[: data.draw(st.integers(0, len(key)))]
        if prefix.endswith("/") or prefix == "":
            pass
        elif "//" in prefix or prefix.startswith("/"):
            return
        got = sorted(sync(_collect_aiterator(self.sharded.list_prefix(prefix))))
        want = sorted(sync(_collect_aiterator(self.reference.list_prefix(prefix))))
        assert got == want

    @rule(data=st.data())
    def list_dir(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        parts = key.split("/")
        path = "/".join(parts[: data.draw(st.integers(0, len(parts) - 1))])
        got = set(sync(_collect_aiterator(self.sharded.list_dir(path))))
        want = set(sync(_collect_aiterator(self.reference.list_dir(path))))
        assert got == want  # an empty mount is invisible, as an empty directory

    @rule()
    def slash_prefix(self) -> None:
        # "/" is the root, the same as "" (MemoryStore agrees only in list_dir).
        reference = self.reference
        assert sync(self.sharded.is_empty("/")) == sync(reference.is_empty(""))
        got = sorted(sync(_collect_aiterator(self.sharded.list_prefix("/"))))
        assert got == sorted(sync(_collect_aiterator(reference.list_prefix(""))))
        got_dir = set(sync(_collect_aiterator(self.sharded.list_dir("/"))))
        assert got_dir == set(sync(_collect_aiterator(reference.list_dir("/"))))

    @rule(data=st.data())
    def delete_dir(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        parts = key.split("/")
        path = "/".join(parts[: data.draw(st.integers(1, len(parts)))])
        sync(self.sharded.delete_dir(path))
        sync(self.reference.delete_dir(path))

    @invariant()
    def same_keys(self) -> None:
        if self.store is None:
            return
        got = sorted(self.sharded.as_mapping())
        want = sorted(sync(_collect_aiterator(self.reference.list())))
        assert got == want


ShardedVsMemory.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestShardedVsMemory = ShardedVsMemory.TestCase


class DirectoriesVsMemory(ShardedVsMemory):
    """The same machine over real folders: a local base, local mounts and one directory
    per array shard (``{prefix}/{index}.zarr``), whose listings are routed (a prefix in
    one shard reaches that shard alone, an array's shard indices come from one scan of
    its folder). Every listing must still equal the plain store's."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="shardedstore-stateful-"))

    @initialize(layout=layouts())
    def make_store(self, layout: dict[str, Any]) -> None:
        self.layout = layout
        self.reopen()

    @rule()
    def reopen(self) -> None:
        """A new store over the same folders: it knows the shards only from them."""
        layout, root = self.layout, self.folder
        self.store = ShardedStore(
            LocalStore(root / "base"),
            {path: LocalStore(root / "mounts" / path) for path in layout["mounts"]},
            {
                path: (spec[0], array_shard_directory_store(str(root / "shards" / path)))
                for path, spec in layout["arrays"].items()
            },
        )

    def _fits_a_folder(self, key: str) -> bool:
        """Whether ``key`` can be a file beside the keys stored: a folder cannot hold a
        file and a folder of one name (MemoryStore can)."""
        keys = set(self.reference._store_dict)
        parts = key.split("/")
        ancestors = {"/".join(parts[:n]) for n in range(1, len(parts))}
        return not ancestors & keys and not any(k.startswith(key + "/") for k in keys)

    @rule(data=st.data(), value=st.binary(max_size=8))
    def set(self, data: st.DataObject, value: bytes) -> None:
        key = data.draw(self.key())
        if self._fits_a_folder(key):
            super().set(cast("st.DataObject", _Given(key)), value)

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        # LocalStore deletes a folder named by a key with all it holds, and cannot
        # delete a path through a file (NotADirectoryError); MemoryStore does neither.
        if self._fits_a_folder(key):
            super().delete(cast("st.DataObject", _Given(key)))

    @rule(data=st.data())
    def list_prefix(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        prefix = key[: data.draw(st.integers(0, len(key)))]
        # LocalStore lists a prefix as a folder: "b" finds nothing when b is a file.
        prefix = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        got = sorted(sync(_collect_aiterator(self.sharded.list_prefix(prefix))))
        want = sorted(sync(_collect_aiterator(self.reference.list_prefix(prefix))))
        assert got == want

    @rule(data=st.data())
    def delete_dir(self, data: st.DataObject) -> None:
        key = data.draw(self.key())
        parts = key.split("/")
        path = "/".join(parts[: data.draw(st.integers(1, len(parts)))])
        if path in self.reference._store_dict:
            return  # a file: LocalStore refuses it as a folder to delete
        sync(self.sharded.delete_dir(path))
        sync(self.reference.delete_dir(path))

    def teardown(self) -> None:
        shutil.rmtree(self.folder)  # made by this machine (mkdtemp)


class _Given:
    """A stand-in for ``st.data()`` that draws one given key."""

    def __init__(self, key: str) -> None:
        self.key = key

    def draw(self, strategy: object) -> str:
        return self.key


DirectoriesVsMemory.TestCase.settings = settings(
    derandomize=True,  # the same examples in every run (folders make a run slow to shrink)
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDirectoriesVsMemory = DirectoriesVsMemory.TestCase


# ------------------------------------------------------- zarr's own state machines

ONE_CHARACTER_NAMES = string.ascii_letters + string.digits + "-_"
"""Every one-character node name zarr's ``node_names`` strategy can draw.

Its alphabet is these and ``.``, which alone is no valid name. About one example in
four puts a node on a one-character name at the root, most often ``0``, the name
hypothesis shrinks towards; so mounts go on these names.
"""


def _flat() -> ShardedStore:
    """A mount on every one-character name at the root."""
    return ShardedStore(MemoryStore(), {name: MemoryStore() for name in ONE_CHARACTER_NAMES})


def _deep() -> ShardedStore:
    """Mounts below ``0`` (the name drawn most), on the other one-character names at the root."""
    mounts = {f"0/{name}": MemoryStore() for name in ONE_CHARACTER_NAMES}
    mounts.update({name: MemoryStore() for name in ONE_CHARACTER_NAMES if name != "0"})
    return ShardedStore(MemoryStore(), mounts)


def _nested() -> ShardedStore:
    """A ShardedStore mounted on ``0``, itself with a mount on every one-character name."""
    inner = ShardedStore(MemoryStore(), {name: MemoryStore() for name in ONE_CHARACTER_NAMES})
    mounts: dict[str, Store] = {"0": inner}
    mounts.update({name: MemoryStore() for name in ONE_CHARACTER_NAMES if name != "0"})
    return ShardedStore(MemoryStore(), mounts)


LAYOUTS: dict[str, Callable[[], ShardedStore]] = {
    "flat": _flat,
    "deep": _deep,
    "nested": _nested,
}

ZARR_MACHINE_SETTINGS = settings(
    max_examples=50,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_zarr_hierarchy_state_machine(layout: str) -> None:
    # As zarr's own tests/test_store/test_stateful.py: the machine as zarr ships it.
    store = LAYOUTS[layout]()
    run_state_machine_as_test(
        lambda: ZarrHierarchyStateMachine(store), settings=ZARR_MACHINE_SETTINGS
    )


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_zarr_store_state_machine(layout: str) -> None:
    store = LAYOUTS[layout]()
    run_state_machine_as_test(lambda: ZarrStoreStateMachine(store), settings=ZARR_MACHINE_SETTINGS)
