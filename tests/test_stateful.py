"""Hypothesis: a ShardedStore under a random layout behaves like one plain MemoryStore."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import _collect_aiterator, sync
from zarr.storage import MemoryStore

from shardedstore import ShardedStore
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
        inside_mount = any(path == m or path.startswith(m + "/") for m in self.layout["mounts"])
        if not inside_mount:  # mount points are listed even when empty
            dir_prefix = f"{path}/" if path else ""
            want |= {
                m[len(dir_prefix) :].split("/")[0]
                for m in self.layout["mounts"]
                if m.startswith(dir_prefix)
            }
        assert got == want

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
