"""Hypothesis: writes through a config opened for writing never leave its folder.

Symbolic links to a folder outside appear and go at random places of a layout (the
base, a mounted directory, an array shard, a folder inside a shard) between writes and
deletes, each through a store opened afresh (as separate jobs do). Checked against a
plain model of the keys written, after every step:

- the folder outside is never changed;
- a write whose path goes through a link is refused with ``LayoutError``, any other
  write succeeds; a refused write or delete changes nothing;
- reading (a fresh read-only store) gives what the model holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import hypothesis.strategies as st
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import shardedstore
from shardedstore import CommitError, LayoutError, ShardedStore, UncommittedWarning

STEPS = 2
BASE_KEYS = ["g/a", "g/h/b"]
MOUNT_KEYS = ["m/s/a"]
CHUNK_KEYS = [f"t/c/{i}/0" for i in range(STEPS)]
KEYS = BASE_KEYS + MOUNT_KEYS + CHUNK_KEYS
# Where a link may appear (relative to the layout's folder), when nothing is there.
PLACES = ["base.zarr/g", "base.zarr/g/h", "m.zarr/s", "t/0.zarr", "t/0.zarr/c", "t/1.zarr/c"]


def _path(key: str) -> str:
    """Where ``key`` is on disk, relative to the layout's folder."""
    if key.startswith("m/"):
        return f"m.zarr/{key[2:]}"
    if key.startswith("t/c/"):
        step = key.split("/")[2]
        return f"t/{step}.zarr/c/0"
    return f"base.zarr/{key}"


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for where, dirs, files in os.walk(folder):
        for name in dirs:
            found[os.path.relpath(os.path.join(where, name), folder)] = None
        for name in files:
            path = os.path.join(where, name)
            with open(path, "rb") as file:
                found[os.path.relpath(path, folder)] = file.read()
    return found


class ConfinementMachine(RuleBasedStateMachine):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.model: dict[str, bytes] = {}

    @initialize()
    def make_layout(self) -> None:
        top = Path(tempfile.mkdtemp(dir=self.root))
        self.folder = top / "ds"
        self.outside = top / "outside"
        # What each key would reach through a link (so that a write or delete through
        # one shows): g/a, m/s/a -> a; g/h/b -> b or h/b; a chunk -> 0 or c/0.
        for name in ("a", "b", "0", "h/b", "c/0"):
            (self.outside / "target" / name).parent.mkdir(parents=True, exist_ok=True)
            (self.outside / "target" / name).write_bytes(b"precious")
        (self.outside / "keep.txt").write_bytes(b"years of work")
        self.before = _snapshot(self.outside)
        config = {
            "format": "shardedstore",
            "version": 1,
            "base": {"type": "local", "root": "base.zarr"},
            "mounts": {"m": {"type": "local", "root": "m.zarr"}},
            "array_shards": {
                "t": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}
            },
        }
        self.folder.mkdir()
        self.config = self.folder / "layout.json"
        self.config.write_text(json.dumps(config))
        with shardedstore.open(self.config, mode="r+") as store:
            zarr.create_group(store)
            zarr.create_group(store, path="m")
            zarr.create_array(store, name="t", shape=(STEPS, 2), chunks=(1, 2), dtype="u1")

    def _linked(self, key: str) -> bool:
        """Whether the path of ``key`` goes through a link (for a chunk: its shard
        holds one anywhere, which refuses every write to the shard)."""
        parts = _path(key).split("/")
        for depth in range(1, len(parts)):
            if os.path.islink(self.folder.joinpath(*parts[:depth])):
                return True
        if key.startswith("t/c/"):
            shard = self.folder / parts[0] / parts[1]
            return shard.is_dir() and any(
                os.path.islink(os.path.join(where, name))
                for where, dirs, files in os.walk(shard)
                for name in dirs + files
            )
        return False

    def _open(self) -> ShardedStore:
        return shardedstore.open(self.config, mode="r+")

    @staticmethod
    def _close(store: ShardedStore) -> None:
        """Close; after a refused write there is nothing to commit (close says so)."""
        with warnings.catch_warnings(), contextlib.suppress(CommitError):
            warnings.simplefilter("ignore", UncommittedWarning)
            store.close()

    @rule(
        key=st.sampled_from(KEYS),
        value=st.binary(min_size=2, max_size=2),
        how=st.sampled_from(["set", "set_sync", "set_if_not_exists"]),
    )
    def write(self, key: str, value: bytes, how: str) -> None:
        linked = self._linked(key)
        store = self._open()
        buffer = default_buffer_prototype().buffer.from_bytes(value)
        calls = {
            "set": lambda: sync(store.set(key, buffer)),
            "set_sync": lambda: store.set_sync(key, buffer),  # type: ignore[attr-defined]
            "set_if_not_exists": lambda: sync(store.set_if_not_exists(key, buffer)),
        }
        try:
            if linked:
                with pytest.raises(LayoutError, match=r"outside the config's folder|is a symlink"):
                    calls[how]()
            else:
                calls[how]()
                if how != "set_if_not_exists" or key not in self.model:
                    self.model[key] = value
        finally:
            self._close(store)

    @rule(key=st.sampled_from(KEYS), how=st.sampled_from(["delete", "delete_sync"]))
    def delete(self, key: str, how: str) -> None:
        linked = self._linked(key)
        # Something is there through the link: a delete that followed it would show.
        reachable = linked and os.path.exists(self.folder / _path(key))
        store = self._open()
        refused: LayoutError | None = None
        try:
            if how == "delete":
                sync(store.delete(key))
            else:
                store.delete_sync(key)  # type: ignore[attr-defined]
        except LayoutError as error:
            refused = error
        finally:
            self._close(store)
        if refused is None:
            assert not reachable, f"{key}: deleted through a link"
            self.model.pop(key, None)
        else:
            assert linked, f"{key}: refused without a link on its way: {refused}"

    @rule(place=st.sampled_from(PLACES))
    def link(self, place: str) -> None:
        path = self.folder / place
        parent = path.parent
        if os.path.lexists(path) or not parent.is_dir() or parent.resolve() != parent:
            return  # something there, or a link on the way (would put the link outside)
        os.symlink(self.outside / "target", path)

    @rule(place=st.sampled_from(PLACES))
    def replace_with_link(self, place: str) -> None:
        # A folder of the layout (a shard's c/, a group) removed and a link put there.
        path = self.folder / place
        if os.path.islink(path) or not path.is_dir() or path.resolve() != path:
            return
        assert str(path).startswith(str(self.folder) + os.sep)  # only what we made
        shutil.rmtree(path)
        for key in [k for k in self.model if (_path(k) + "/").startswith(place + "/")]:
            del self.model[key]
        os.symlink(self.outside / "target", path)

    @rule(place=st.sampled_from(PLACES))
    def unlink(self, place: str) -> None:
        path = self.folder / place
        if os.path.islink(path):
            os.unlink(path)

    @rule()
    def clear_group(self) -> None:
        # delete_dir("g"): refused if g itself leads out, else g goes (a link inside
        # it is removed, never followed).
        store = self._open()
        try:
            sync(store.delete_dir("g"))
        except LayoutError:
            assert os.path.islink(self.folder / "base.zarr" / "g")
        else:
            for key in [k for k in self.model if k.startswith("g/")]:
                del self.model[key]
        finally:
            self._close(store)

    @invariant()
    def outside_is_untouched(self) -> None:
        if hasattr(self, "outside"):
            assert _snapshot(self.outside) == self.before

    @invariant()
    def reads_give_the_model(self) -> None:
        if not hasattr(self, "config"):
            return
        store = shardedstore.open(self.config)
        prototype = default_buffer_prototype()
        for key in KEYS:
            found = sync(store.get(key, prototype))
            expected = self.model.get(key)
            if expected is None:
                assert found is None or self._linked(key), key
            else:
                assert found is not None, key
                assert found.to_bytes() == expected, key


def test_writes_never_leave_the_folder(tmp_path: Path) -> None:
    run_state_machine_as_test(
        lambda: ConfinementMachine(tmp_path),
        settings=settings(
            max_examples=60,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
