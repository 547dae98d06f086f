"""Hypothesis: the shard cache never serves a value that was not written, under faults.

A state machine over a real S3 server (moto on 127.0.0.1) and real cache directories.
The remote holds a layout with two array-sharded arrays: ``z`` (zip shards read as
``zip_url``, one zip per time step) and ``d`` (directory shards read through fsspec,
one object per chunk). The model is a plain dict of every version ever written to
each chunk of the remote; each version fills its chunk with one number, so a read
shows which version it returned.

Rules: read a time step through one of several stores (sharing one cache directory,
a second "process" engine on the same directory with another bound, or an in-memory
cache); replace a zip shard (another member order, stored or deflated) or some chunk
objects; evict or remove cache files; damage cache files (flipped bytes, truncated,
empty); leave a dead reader's temporary file behind; make the directory unwritable
and writable again; put a zip with a bad CRC on the remote.

Invariants: this process never keeps more cache files open than its engines' bound,
and none once every store is closed; the files of readers that died are gone once a
writer passes the bound. Checked on every read: each chunk holds a version that was
written to it; a zip shard is read whole from one version (a zip is a snapshot); a
store never goes back to an older version of a chunk it has read; a damaged remote zip
raises :class:`CorruptDataError` (or is served from an older, valid copy), never wrong
values.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
import s3fs
import zarr
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import shardedstore.backends.cache as cache_module
from shardedstore import CorruptDataError, ShardCache, ShardedStore
from shardedstore.backends.cache import cache_engine
from tests._openfiles import open_files_below
from tests._s3counter import CountedS3, counted_s3

__all__ = ["counted_s3"]

STEPS = 2
CHUNK = 8
BLOCKS = [(0, 0), (0, 1), (1, 0), (1, 1)]


def _array_doc(shape: tuple[int, ...]) -> bytes:
    """A zarr v3 float32 array document, chunks of 8x8 (1x8x8), no compressor."""
    import json

    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "float32",
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [1] * (len(shape) - 2) + [CHUNK, CHUNK]},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {},
        "dimension_names": None,
        "storage_transformers": [],
    }
    return json.dumps(doc).encode()


def _chunk(value: int) -> bytes:
    return np.full((CHUNK, CHUNK), value, dtype="<f4").tobytes()


def _zip(versions: list[int], order: list[int], deflated: bool, damaged: bool = False) -> bytes:
    """A zip shard: its own metadata and four chunks, written in ``order``."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", method) as archive:
        archive.writestr("zarr.json", _array_doc((2 * CHUNK, 2 * CHUNK)))
        for position in order:
            i, j = BLOCKS[position]
            archive.writestr(f"c/{i}/{j}", _chunk(versions[position]))
    data = out.getvalue()
    if damaged:  # one member's data changes; its CRC-32 in the directory does not
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo(f"c/{BLOCKS[order[0]][0]}/{BLOCKS[order[0]][1]}")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        if info.compress_type == zipfile.ZIP_STORED:
            broken = bytearray(data)
            broken[start] ^= 0xFF
            data = bytes(broken)
        else:
            raw = bytearray(zlib.decompress(data[start : start + info.compress_size], -15))
            raw[0] ^= 0xFF
            packed = zlib.compressobj(6, zlib.DEFLATED, -15)
            again = packed.compress(bytes(raw)) + packed.flush()
            if len(again) == info.compress_size:
                data = data[:start] + again + data[start + info.compress_size :]
            else:  # cannot keep the size: flip a byte of the deflate stream instead
                broken = bytearray(data)
                broken[start + info.compress_size // 2] ^= 0xFF
                data = bytes(broken)
    return data


class CacheMachine(RuleBasedStateMachine):
    stores = Bundle("stores")

    def __init__(self, s3: CountedS3, folder: Path) -> None:
        super().__init__()
        self.s3 = s3
        self.folder = Path(tempfile.mkdtemp(dir=folder))
        self.fs = s3fs.S3FileSystem(
            client_kwargs={"endpoint_url": s3.endpoint}, skip_instance_cache=True
        )
        self.bucket = s3.new_bucket()
        self.url = f"s3://{self.bucket}/ds"
        self.cache_dir = self.folder / "cache"
        self.version = 0
        # (array, step, block) -> every version ever written there.
        self.written: dict[tuple[str, int, int], set[int]] = {}
        # (store number, array, step, block) -> the newest version that store read.
        self.seen: dict[tuple[int, str, int, int], int] = {}
        self.damaged: set[int] = set()  # zip steps whose remote zip has a bad CRC
        self.orders: dict[int, list[int]] = {}  # the member order of each remote zip
        self.opened: list[ShardedStore] = []
        self.settings: dict[str, ShardCache] = {}
        self.broken_tmp = False
        self.engines_on_disk: set[int] = set()  # ids of the engines with a directory
        self.dead_files: set[str] = set()  # temporary files of readers that died

    # -------------------------------------------------------------- remote

    def _next(self) -> int:
        self.version += 1
        return self.version

    def _put_zip(self, t: int, order: list[int], deflated: bool, damaged: bool) -> None:
        if order == self.orders.get(t):  # another order than the zip it replaces
            order = order[1:] + order[:1]
        self.orders[t] = order
        versions = [self._next() for _ in BLOCKS]
        self.fs.pipe_file(f"{self.url}/z/{t}.zarr.zip", _zip(versions, order, deflated, damaged))
        if damaged:
            self.damaged.add(t)
            # The damaged member never reads; the others do, so their versions count.
            for position, version in enumerate(versions):
                if position != order[0]:
                    self.written.setdefault(("z", t, position), set()).add(version)
        else:
            self.damaged.discard(t)
            for position, version in enumerate(versions):
                self.written.setdefault(("z", t, position), set()).add(version)

    def _put_chunk(self, t: int, position: int) -> None:
        version = self._next()
        i, j = BLOCKS[position]
        self.fs.pipe_file(f"{self.url}/d/{t}.zarr/c/{i}/{j}", _chunk(version))
        self.written.setdefault(("d", t, position), set()).add(version)

    @initialize()
    def write_the_layout(self) -> None:
        shape = (STEPS, 2 * CHUNK, 2 * CHUNK)
        self.fs.pipe_file(
            f"{self.url}/base.zarr/zarr.json",
            b'{"zarr_format":3,"node_type":"group","attributes":{}}',
        )
        for name in ("z", "d"):
            self.fs.pipe_file(f"{self.url}/base.zarr/{name}/zarr.json", _array_doc(shape))
        for t in range(STEPS):
            self._put_zip(t, [0, 1, 2, 3], deflated=False, damaged=False)
            self.fs.pipe_file(f"{self.url}/d/{t}.zarr/zarr.json", _array_doc(shape[1:]))
            for position in range(len(BLOCKS)):
                self._put_chunk(t, position)

    # -------------------------------------------------------------- stores

    def _config(self, cache: dict[str, Any]) -> dict[str, Any]:
        options = {"storage_options": self.s3.storage_options}
        return {
            "format": "shardedstore",
            "version": 1,
            "base": {"type": "fsspec", "url": f"{self.url}/base.zarr", **options},
            "array_shards": {
                "z": {
                    "dims": 1,
                    "store": {
                        "type": "zip_url",
                        "url": f"{self.url}/z/{{chunk}}.zarr.zip",
                        **options,
                    },
                },
                "d": {
                    "dims": 1,
                    "store": {"type": "fsspec", "url": f"{self.url}/d/{{chunk}}.zarr", **options},
                },
            },
            "cache": cache,
        }

    @rule(
        target=stores,
        kind=st.sampled_from(["shared", "other process", "memory"]),
        read_ahead=st.integers(0, 2),
    )
    def open_store(self, kind: str, read_ahead: int) -> int:
        zip_size = 2500  # about one zip shard: bounds of one to three shards
        if kind == "shared":
            cache = {"dir": str(self.cache_dir), "max_bytes": 3 * zip_size}
        elif kind == "other process":  # another bound: another engine, as in a process
            cache = {"dir": str(self.cache_dir), "max_bytes": 2 * zip_size + 1}
        else:
            cache = {"max_bytes": zip_size * 2}
        cache["read_ahead"] = read_ahead
        store = ShardedStore.from_config(self._config(cache), read_only=True)
        assert store.cache is not None
        self.settings[kind] = store.cache
        if store.cache.dir is not None:
            self.engines_on_disk.add(id(cache_engine(store.cache)))
        self.opened.append(store)
        return len(self.opened) - 1

    @rule(store=stores, array=st.sampled_from(["z", "d"]), t=st.integers(0, STEPS - 1))
    def read(self, store: int, array: str, t: int) -> None:
        opened = zarr.open_array(self.opened[store], path=array, mode="r")
        try:
            values = np.asarray(opened[t])
        except CorruptDataError:
            assert array == "z", "a directory shard raised CorruptDataError"
            assert t in self.damaged, "a valid zip raised CorruptDataError"
            return
        found = set()
        for position, (i, j) in enumerate(BLOCKS):
            block = values[i * CHUNK : (i + 1) * CHUNK, j * CHUNK : (j + 1) * CHUNK]
            assert (block == block.flat[0]).all(), f"{array}[{t}] block {position} mixes values"
            version = int(block.flat[0])
            assert version in self.written[(array, t, position)], (
                f"{array}[{t}] block {position} reads {version}, never written there "
                f"(written: {sorted(self.written[(array, t, position)])})"
            )
            key = (store, array, t, position)
            assert version >= self.seen.get(key, 0), (
                f"store {store} went back from version {self.seen[key]} to {version} "
                f"of {array}[{t}] block {position}"
            )
            self.seen[key] = version
            found.add(version)
        if array == "z":
            # One zip is one snapshot: its four chunks were written together, as four
            # consecutive versions.
            assert max(found) - min(found) < len(BLOCKS), f"z[{t}] mixes two zips: {found}"

    # -------------------------------------------------------------- changes

    @rule(
        t=st.integers(0, STEPS - 1),
        order=st.permutations(range(4)),
        deflated=st.booleans(),
    )
    def replace_zip(self, t: int, order: list[int], deflated: bool) -> None:
        self._put_zip(t, list(order), deflated, damaged=False)

    @rule(t=st.integers(0, STEPS - 1), order=st.permutations(range(4)), deflated=st.booleans())
    def damage_the_remote_zip(self, t: int, order: list[int], deflated: bool) -> None:
        self._put_zip(t, list(order), deflated, damaged=True)

    @rule(t=st.integers(0, STEPS - 1), positions=st.sets(st.integers(0, 3), min_size=1))
    def replace_chunks(self, t: int, positions: set[int]) -> None:
        for position in sorted(positions):
            self._put_chunk(t, position)

    # -------------------------------------------------------------- cache faults

    def _entries(self) -> list[Path]:
        root = self.cache_dir / "shardedstore-cache-v1"
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_file() and len(p.name) == 64)

    # Which file and where are drawn as shares (0..1), not from the directory's
    # listing: hypothesis must draw the same things when it replays a case.

    @rule(which=st.floats(0, 1, exclude_max=True))
    def remove_an_entry(self, which: float) -> None:
        entries = self._entries()
        if entries:
            entries[int(which * len(entries))].unlink(missing_ok=True)

    @rule(
        which=st.floats(0, 1, exclude_max=True),
        where=st.floats(0, 1, exclude_max=True),
        how=st.sampled_from(["flip", "truncate", "empty"]),
    )
    def damage_an_entry(self, which: float, where: float, how: str) -> None:
        entries = self._entries()
        if not entries:
            return
        path = entries[int(which * len(entries))]
        content = bytearray(path.read_bytes())
        if how == "flip" and content:
            start = int(where * len(content))
            for i in range(start, min(len(content), start + 64)):
                content[i] ^= 0xFF
        elif how == "truncate":
            content = content[: int(where * len(content))]
        else:
            content = bytearray()
        path.write_bytes(bytes(content))

    @rule()
    def other_readers_fill_the_caches(self) -> None:
        """Other readers of the same caches fill them: every entry is evicted."""
        for setting in self.settings.values():
            engine = cache_engine(setting)
            filler = engine.entry("another reader", os.urandom(8).hex(), "v")
            engine.put(filler, b"\0" * setting.max_bytes)
        tmp = self.cache_dir / "shardedstore-cache-v1" / "tmp"
        if self.engines_on_disk and not self.broken_tmp and tmp.is_dir():
            # Past the bound, a writer looks at the whole directory again: the files
            # of readers that died are removed then.
            left = sorted(self.dead_files & {p.name for p in tmp.iterdir()})
            assert not left, f"dead readers' files outlived a full cache: {left}"

    @rule()
    def a_reader_dies_mid_download(self) -> None:
        tmp = self.cache_dir / "shardedstore-cache-v1" / "tmp"
        if self.broken_tmp or not tmp.is_dir():
            return
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        )
        name = f"{cache_module._HOST}-{int(dead.stdout)}-{os.urandom(16).hex()}.part"
        (tmp / name).write_bytes(b"partial" * 100)
        self.dead_files.add(name)

    @rule()
    def make_the_directory_unwritable(self) -> None:
        tmp = self.cache_dir / "shardedstore-cache-v1" / "tmp"
        if self.broken_tmp or not tmp.is_dir():
            return
        shutil.rmtree(tmp)
        tmp.write_bytes(b"not a directory")  # every new entry fails (NotADirectoryError)
        self.broken_tmp = True

    @rule()
    def make_the_directory_writable(self) -> None:
        tmp = self.cache_dir / "shardedstore-cache-v1" / "tmp"
        if self.broken_tmp:
            tmp.unlink()
            tmp.mkdir()
            self.broken_tmp = False

    # -------------------------------------------------------------- invariants

    @invariant()
    def few_cache_files_stay_open(self) -> None:
        # Each engine on the directory (one per setting) keeps at most _HELD_FILES
        # files open between reads: a descriptor never leaks, whatever the faults.
        open_now = open_files_below(self.cache_dir)
        assert len(open_now) <= len(self.engines_on_disk) * cache_module._HELD_FILES, open_now

    def teardown(self) -> None:
        try:
            for store in self.opened:
                store.close()
            # Closing the stores closes every cache file their reads kept open.
            assert open_files_below(self.cache_dir) == []
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.filterwarnings("ignore::shardedstore.CacheWarning")  # the unwritable rule
def test_the_cache_never_serves_what_was_not_written(
    counted_s3: CountedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A directory that could not be written is tried again at once (30 s in use).
    monkeypatch.setattr(cache_module, "_RETRY_DIRECTORY", 0.0)
    # One cache file kept open per engine: each read of another shard closes one.
    monkeypatch.setattr(cache_module, "_HELD_FILES", 1)
    run_state_machine_as_test(
        lambda: CacheMachine(counted_s3, tmp_path),
        settings=settings(
            max_examples=20,
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
