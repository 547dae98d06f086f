"""Hypothesis: the ``shardedstore::`` filesystem never lists or serves stale or wrong bytes.

A state machine over real files: a layout whose base and mount are directories, with
one array sharded into zips (``a``, one zip per time step) and one into directories
(``d``). One filesystem is made at the start and kept, as zarr's ``FsspecStore`` and
fsspec's instance cache keep one; the model is a plain dict of every chunk key and its
bytes.

Rules: write or delete a chunk through the store API (a writer opened ``mode="r+"``,
then closed, as the error of the read-only filesystem advises); change a zip shard
behind the layout's back (rewritten whole, another value of its chunk); delete a shard
(a zip or a directory) behind its back; damage a zip shard in place (a flipped byte in
its chunk, its size and name kept); ``invalidate_cache``, as clients call it after a
write.

Checked after every step: ``cat``, ``cat_file`` with a range, ``cat_ranges``,
``info``, ``exists``, ``find`` and ``ls`` agree with the model. Directory shards, the
base and the mount are read as they are. A zip shard is read as it was when the
filesystem first opened it (a snapshot, as every ``ShardedStore`` reads zips), so
until ``invalidate_cache`` a chunk of a zip may show any version it had since the last
one (never bytes it never held); after it, exactly the model. A damaged chunk is never
served with the damage: it raises (not ``FileNotFoundError``), or shows the bytes it
held, as read before the damage by the open zip; an absent one raises
``FileNotFoundError``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import fsspec
import hypothesis.strategies as st
import pytest
import zarr
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import shardedstore
from shardedstore import ShardedFileSystem
from shardedstore.fsspec import PROTOCOL

STEPS = 3
ZIP_KEYS = [f"a/c/{t}/0" for t in range(STEPS)]
DIR_KEYS = [f"d/c/{t}/{j}" for t in range(STEPS) for j in range(2)]
MOUNT_KEYS = ["m/b/c/0", "m/b/c/1"]
BASE_KEYS = ["top/c/0"]
KEYS = ZIP_KEYS + DIR_KEYS + MOUNT_KEYS + BASE_KEYS
values = st.binary(min_size=1, max_size=24)


def _config() -> dict[str, Any]:
    return {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {"m": {"type": "local", "root": "m.zarr"}},
        "array_shards": {
            "a": {"dims": 1, "store": {"type": "zip", "path": "a/{chunk}.zarr.zip"}},
            "d": {"dims": 1, "store": {"type": "local", "root": "d/{chunk}.zarr"}},
        },
    }


class FilesystemMachine(RuleBasedStateMachine):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.model: dict[str, bytes] = {}
        self.damaged: set[str] = set()
        # Every version (None: absent) each zip chunk had since the last invalidate_cache.
        self.seen: dict[str, set[bytes | None]] = {key: {None} for key in ZIP_KEYS}
        self.was_damaged: set[str] = set()  # since the last invalidate_cache
        # Directory shards that exist: one shows in d/c's listing, as a directory does,
        # even once its chunks are deleted (its folder and metadata stay).
        self.folders: set[str] = set()

    @initialize()
    def make_layout(self) -> None:
        import json

        folder = Path(tempfile.mkdtemp(dir=self.root))
        self.folder = folder
        self.config = folder / "layout.json"
        self.config.write_text(json.dumps(_config()))
        store = shardedstore.open(self.config, mode="r+")
        group = zarr.open_group(store, mode="w")
        group.create_array("a", shape=(STEPS, 4), chunks=(1, 4), dtype="u1")
        group.create_array("d", shape=(STEPS, 8), chunks=(1, 4), dtype="u1")
        group.create_array("top", shape=(4,), chunks=(4,), dtype="u1")
        group.create_group("m").create_array("b", shape=(8,), chunks=(4,), dtype="u1")
        store.close()
        self.fs = fsspec.filesystem(PROTOCOL, fo=str(self.config))
        assert isinstance(self.fs, ShardedFileSystem)
        self.documents = {
            key: value
            for key, value in shardedstore.open(self.config).as_mapping().items()
            if key.endswith("zarr.json") and not key.startswith(("a/c", "d/c"))
        }

    # ------------------------------------------------------------ through the store

    def _writer(self) -> Any:
        return shardedstore.open(self.config, mode="r+")

    @precondition(lambda self: not self.damaged)
    @rule(key=st.sampled_from(KEYS), value=values)
    def write(self, key: str, value: bytes) -> None:
        store = self._writer()
        sync(store.set(key, default_buffer_prototype().buffer.from_bytes(value)))
        store.close()
        self.model[key] = value
        if key in DIR_KEYS:
            self.folders.add(key.split("/")[2])
        self._changed(key)

    @precondition(lambda self: not self.damaged)
    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        store = self._writer()
        sync(store.delete(key))
        store.close()
        self.model.pop(key, None)
        self._changed(key)

    @rule()
    def invalidate(self) -> None:
        self.fs.invalidate_cache()
        self.seen = {key: {self.model.get(key)} for key in ZIP_KEYS}
        self.was_damaged = set(self.damaged)

    def _changed(self, key: str) -> None:
        if key in self.seen:
            self.seen[key].add(self.model.get(key))

    # ------------------------------------------------------- behind the layout's back

    def _zip(self, t: int) -> Path:
        return self.folder / "a" / f"{t}.zarr.zip"

    @rule(t=st.integers(0, STEPS - 1), value=values)
    def replace_zip(self, t: int, value: bytes) -> None:
        path = self._zip(t)
        if not path.exists():
            return
        with zipfile.ZipFile(path) as archive:
            # All but the chunk, which may be damaged: it is replaced.
            members = {name: archive.read(name) for name in archive.namelist() if name != "c/0"}
        members["c/0"] = value
        staged = self.folder / f"staged-{t}.zip"
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        os.replace(staged, path)
        self.model[f"a/c/{t}/0"] = value
        self.damaged.discard(f"a/c/{t}/0")
        self._changed(f"a/c/{t}/0")

    @rule(t=st.integers(0, STEPS - 1), kind=st.sampled_from(["zip", "directory"]))
    def delete_shard(self, t: int, kind: str) -> None:
        if kind == "zip":
            path = self._zip(t)
            if path.exists():
                path.unlink()
            gone = [f"a/c/{t}/0"]
        else:
            path = self.folder / "d" / f"{t}.zarr"
            if path.exists():
                shutil.rmtree(path)
            self.folders.discard(str(t))
            gone = [f"d/c/{t}/{j}" for j in range(2)]
        for key in gone:
            self.model.pop(key, None)
            self.damaged.discard(key)
            self._changed(key)

    @rule(t=st.integers(0, STEPS - 1))
    def damage_zip(self, t: int) -> None:
        key = f"a/c/{t}/0"
        path = self._zip(t)
        if key not in self.model or not path.exists():
            return
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("c/0")
        with path.open("r+b") as f:
            f.seek(info.header_offset + 26)
            name_length = int.from_bytes(f.read(2), "little")
            extra_length = int.from_bytes(f.read(2), "little")
            f.seek(info.header_offset + 30 + name_length + extra_length)
            first = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([first[0] ^ 0xFF]))
        self.damaged.add(key)
        self.was_damaged.add(key)

    # ---------------------------------------------------------------- what is read

    def _fresh(self, key: str) -> bool:
        """Whether ``key`` must read exactly as the model says."""
        return key not in self.seen or self.seen[key] == {self.model.get(key)}

    @invariant()
    def reads_agree_with_the_model(self) -> None:
        if not hasattr(self, "fs"):
            return
        fs = self.fs
        for key in KEYS:
            expected = self.model.get(key)
            if key in self.damaged:
                try:
                    data = fs.cat(key)
                except FileNotFoundError:
                    raise AssertionError(f"{key}: damaged, read as missing") from None
                except Exception:
                    continue
                # Bytes read before the damage, kept by the open zip: right, not damaged.
                assert data in self.seen[key] | {expected}, f"{key}: {data!r} served damaged"
                continue
            if not self._fresh(key):
                try:
                    data = fs.cat(key)
                except FileNotFoundError:
                    data = None
                except Exception:
                    # The open zip, damaged before it was replaced or deleted.
                    assert key in self.was_damaged, f"{key}: an error, never damaged"
                    continue
                assert data in self.seen[key], f"{key}: {data!r} is no version since refresh"
                continue
            if expected is None:
                with pytest.raises(FileNotFoundError):
                    fs.cat(key)
                assert not fs.exists(key)
                continue
            assert fs.cat(key) == expected, key
            assert fs.cat_file(key, start=1, end=-1) == expected[1:-1], key
            assert fs.info(key) == {"name": f"/{key}", "size": len(expected), "type": "file"}
        exact = sorted(k for k in KEYS if k not in self.damaged and self._fresh(k))
        present = [key for key in exact if key in self.model]
        ranges = fs.cat_ranges(present, [0] * len(present), [3] * len(present))
        assert ranges == [self.model[key][:3] for key in present]
        found = {path.lstrip("/") for path in fs.find("")}
        assert {k for k in exact if k in found} == set(present), "find lists the chunks held"
        for key, document in self.documents.items():
            assert fs.cat(key) == document
        try:
            listed = set(fs.ls("d/c", detail=False))
        except FileNotFoundError:
            listed = set()
        assert listed == {f"/d/c/{t}" for t in self.folders}
        # d's listing agrees with d/c's: c shows while a shard exists.
        names = {path.rsplit("/", 1)[-1] for path in fs.ls("d", detail=False)}
        assert ("c" in names) == bool(self.folders), names
        # What is listed has an info of its own (fsspec's ls and walk ask each entry's).
        kinds = {entry["name"]: entry["type"] for entry in fs.ls("d", detail=True)}
        assert kinds.get("/d/c") == ("directory" if self.folders else None), kinds
        for t in self.folders:
            assert fs.info(f"d/c/{t}")["type"] == "directory"
        walked = {path for path, _, _ in fs.walk("d")}
        assert ("/d/c" in walked) == bool(self.folders), walked


def test_the_filesystem_follows_the_layout_under_faults(tmp_path: Path) -> None:
    run_state_machine_as_test(
        lambda: FilesystemMachine(tmp_path),
        settings=settings(
            max_examples=20,
            stateful_step_count=10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
