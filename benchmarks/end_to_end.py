"""End to end: write and read one array through zarr, against the stores users compare us with.

Rows, run side by side and interleaved in one run (medians of ``--rounds``):

- ``raw``: the chunks' bytes written and read with plain Python files, one per chunk;
- ``memory``: zarr-python 3's ``MemoryStore``, no I/O at all: the floor of zarr 3's own
  per-chunk pipeline, which no store can go below;
- ``zarr3``: zarr-python 3's own ``LocalStore``;
- ``sharded``: our ``ShardedStore``, one array shard (a ``LocalStore``) per leading index;
- ``zarrs``: zarr 3's ``LocalStore`` with the ``zarrs`` codec pipeline (Rust);
- ``tensorstore``: TensorStore's ``zarr3`` driver on a plain directory, without zarr
  (written with ``create``, read after a fresh ``open``; TensorStore syncs every file it
  writes to disk, zarr and zarrs do not);
- ``sharded+zarrs``, ``sharded+ts``: the ``sharded`` layout with
  ``shardedstore.use_engine("zarrs")`` and ``use_engine("tensorstore")`` (zarr's API,
  our codec pipeline handing each array shard's chunks to the engine);
- ``peer``: shardedstore 0.3.1 on zarr 2.18 (``DirectoryStore`` shards), run in its own
  virtualenv, made on first use under ``~/.cache/shardedstore-bench`` (the row is
  skipped with a message when it cannot be built). 0.3.1 crashes on uncompressed
  arrays, so its row is always compressed (Blosc/LZ4 for the "none" workload), and it
  reads back through the store object that wrote (a new one sees no array shards).

Workloads: (8, 1024, 1024) float32 in chunks (1, 128, 128) uncompressed (512 chunks),
the same with zstd, and chunks (1, 512, 512). Page cache warm (each read follows its
write). Then the slow-storage check: a ``LocalStore`` that sleeps 2 ms in every read,
plain against inside a ``ShardedStore`` (written once, read ``3 * rounds`` times each
way, in alternating order): the inline fast path must not serialize requests that zarr
wants concurrent.

Targets (ratios of medians): read sharded/peer <= 1.0, sharded/zarr3 <= 0.6; write
sharded/zarr3 <= 0.8; slow storage sharded/plain <= 1.05; native engines (issue 21):
read sharded+zarrs/zarrs <= 1.2, read sharded+ts/tensorstore <= 1.5, write
sharded+zarrs/zarrs <= 1.5. They are judged on the main workload (chunks 128x128,
uncompressed: issue 10's table) and the slow-storage check; the variants are reported
against the same targets, next to zarr 3's own floor there (``memory/zarr3``), which
for 512x512 chunks no store can go below. The engine rows are left out, with a
message, when zarrs or TensorStore is not installed (``pip install
'shardedstore[zarrs,tensorstore]'``).

Usage: python benchmarks/end_to_end.py [--rounds N] [--no-peer] [--rows NAME ...]
       [--workloads "128x128 none" ...] [--no-slow]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore

from shardedstore import ShardedStore, array_shard_directory_store, use_engine

SHAPE = (8, 1024, 1024)
WORKLOADS: dict[str, tuple[tuple[int, int, int], str]] = {
    "128x128 none": ((1, 128, 128), "none"),
    "128x128 zstd": ((1, 128, 128), "zstd"),
    "512x512 none": ((1, 512, 512), "none"),
}
PEER_DIR = Path.home() / ".cache" / "shardedstore-bench" / "peer-venv"
PEER_PACKAGES = [
    "shardedstore==0.3.1",
    "zarr==2.18.3",
    "numcodecs==0.13.1",
    "xarray==2024.9.0",
    "xarray-datatree==0.0.14",
    "numpy<2.1",
]
DELAY = 0.002
MAIN = "128x128 none"
"""The workload of issue 10's table; the targets are judged on it (and on slow storage)."""

PEER_SCRIPT = """
import json, os, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np, zarr, numcodecs, shardedstore
from zarr.storage import DirectoryStore
shape, chunks, codec = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
compressor = numcodecs.Zstd(3) if codec == "zstd" else numcodecs.Blosc("lz4", 5)
data = np.random.default_rng(0).random(shape, dtype="f4")
root = Path(tempfile.mkdtemp(prefix="shardedstore-peer-"))
try:
    store = shardedstore.ShardedStore(
        DirectoryStore(str(root / "base")), {},
        {"a": (1, shardedstore.array_shard_directory_store(str(root / "shards")))},
    )
    start = time.perf_counter()
    arr = zarr.create(shape, chunks=chunks, dtype="f4", store=store, path="a",
                      compressor=compressor)
    arr[:] = data
    write = time.perf_counter() - start
    # 0.3.1 finds its array shards only through the store object that wrote them (a new
    # one reads every chunk as fill value), so the peer reads back through the same one.
    start = time.perf_counter()
    back = zarr.open_array(store, path="a", mode="r")[:]
    read = time.perf_counter() - start
    assert (back == data).all()
    print(json.dumps({"write": write, "read": read}))
finally:
    shutil.rmtree(root)
    os.sync()
"""


def peer_python() -> Path | None:
    """The peer's interpreter, building its virtualenv on first use (None: unavailable)."""
    python = PEER_DIR / "bin" / "python"
    marker = PEER_DIR / ".complete"
    if marker.exists():
        return python
    print(f"building the peer virtualenv in {PEER_DIR} (once) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_DIR)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
            check=True,
            timeout=900,
        )
    except (subprocess.SubprocessError, OSError) as error:
        print(f"peer row skipped: could not build shardedstore 0.3.1 on zarr 2: {error}")
        return None
    marker.touch()
    return python


def _remove(root: Path) -> None:
    """Delete a round's files and let the filesystem settle before the next round.

    Without the sync, the next round's writes wait for the journal and writeback of
    this round's deletions, in whichever row happens to come next.
    """
    shutil.rmtree(root)
    os.sync()


def _compressors(codec: str) -> Any:
    return None if codec == "none" else ZstdCodec(level=3)


def zarr_row(
    make: Callable[[Path], Store],
    engine: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
) -> Callable[[np.ndarray, tuple[int, ...], str], Any]:
    """Write then read through zarr; ``engine`` is zarr's config while both run (the
    codec pipeline is chosen when an array is opened)."""

    def run(data: np.ndarray, chunks: tuple[int, ...], codec: str) -> tuple[float, float]:
        root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-"))
        try:
            with engine():
                start = time.perf_counter()
                arr = zarr.create_array(
                    make(root),
                    name="a",
                    shape=data.shape,
                    chunks=chunks,
                    dtype=data.dtype,
                    compressors=_compressors(codec),
                )
                arr[:] = data
                write = time.perf_counter() - start
                start = time.perf_counter()
                back = zarr.open_array(make(root), path="a", mode="r")[:]
                read = time.perf_counter() - start
            assert np.array_equal(back, data)
            return write, read
        finally:
            _remove(root)
            _MEMORY.pop(root, None)

    return run


def zarrs_pipeline() -> AbstractContextManager[Any]:
    """zarr's config selecting the zarrs codec pipeline (as its README says)."""
    return zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"})


def tensorstore_row(data: np.ndarray, chunks: tuple[int, ...], codec: str) -> tuple[float, float]:
    """TensorStore alone: create and write the array, then open it afresh and read it."""
    import tensorstore as ts

    root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-"))
    try:
        kvstore = {"driver": "file", "path": f"{root / 'a'}/"}
        codecs: list[dict[str, Any]] = [{"name": "bytes", "configuration": {"endian": "little"}}]
        if codec == "zstd":
            codecs.append({"name": "zstd", "configuration": {"level": 3, "checksum": False}})
        metadata = {
            "shape": list(data.shape),
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "chunk_key_encoding": {"name": "default"},
            "data_type": "float32",
            "fill_value": 0.0,
            "codecs": codecs,
        }
        start = time.perf_counter()
        arr = ts.open(
            {"driver": "zarr3", "kvstore": kvstore, "metadata": metadata}, create=True
        ).result()
        arr.write(data).result()
        write = time.perf_counter() - start
        start = time.perf_counter()
        back = ts.open({"driver": "zarr3", "kvstore": kvstore}).result().read().result()
        read = time.perf_counter() - start
        assert np.array_equal(back, data)
        return write, read
    finally:
        _remove(root)


def raw_row(data: np.ndarray, chunks: tuple[int, ...], codec: str) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-"))
    try:
        n0, n1, n2 = (s // c for s, c in zip(data.shape, chunks, strict=True))
        blocks = [
            (
                f"{i}.{j}.{k}",
                data[i, j * chunks[1] : (j + 1) * chunks[1], k * chunks[2] :][:, : chunks[2]],
            )
            for i in range(n0)
            for j in range(n1)
            for k in range(n2)
        ]
        start = time.perf_counter()
        for name, block in blocks:
            with open(root / name, "wb") as f:
                f.write(block.tobytes())
        write = time.perf_counter() - start
        start = time.perf_counter()
        for name, _ in blocks:
            with open(root / name, "rb") as f:
                f.read()
        read = time.perf_counter() - start
        return write, read
    finally:
        _remove(root)


def peer_row(python: Path) -> Callable[[np.ndarray, tuple[int, ...], str], Any]:
    def run(data: np.ndarray, chunks: tuple[int, ...], codec: str) -> tuple[float, float]:
        result = subprocess.run(
            # -I: never import this checkout's shardedstore from the working directory.
            [
                str(python),
                "-I",
                "-c",
                PEER_SCRIPT,
                json.dumps(data.shape),
                json.dumps(chunks),
                codec,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        times = json.loads(result.stdout.strip().splitlines()[-1])
        return times["write"], times["read"]

    return run


def plain(root: Path) -> Store:
    return LocalStore(root / "plain")


_MEMORY: dict[Path, dict[str, Buffer]] = {}


def memory(root: Path) -> Store:
    """zarr 3's ``MemoryStore``: no I/O at all, the floor of zarr 3's own pipeline."""
    return MemoryStore(_MEMORY.setdefault(root, {}))


def sharded(root: Path) -> Store:
    return ShardedStore(
        LocalStore(root / "base"), {}, {"a": (1, array_shard_directory_store(root / "shards"))}
    )


class SlowLocalStore(LocalStore):
    """A LocalStore whose every read takes ``DELAY`` seconds longer, in both of its paths."""

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        time.sleep(DELAY)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if not self._is_open:
            await self._open()
        return await asyncio.to_thread(
            self.get_sync, key, prototype=prototype, byte_range=byte_range
        )


def slow_reads(data: np.ndarray, rounds: int) -> dict[bool, list[float]]:
    """Read times through the slow store, plain (False) and in a ShardedStore (True).

    The array is written once; each round reads it both ways through new store
    objects (so the fast path starts from scratch), in alternating order.
    """
    root = Path(tempfile.mkdtemp(prefix="shardedstore-bench-"))
    try:
        arr = zarr.create_array(
            LocalStore(root / "plain"), name="a", shape=data.shape, chunks=(1, 128, 128), dtype="f4"
        )
        arr[:] = data

        def read(wrap: bool) -> float:
            store: Store = SlowLocalStore(root / "plain", read_only=True)
            if wrap:
                store = ShardedStore(store, read_only=True)
            start = time.perf_counter()
            back = zarr.open_array(store, path="a", mode="r")[:]
            elapsed = time.perf_counter() - start
            assert np.array_equal(back, data)
            return elapsed

        times: dict[bool, list[float]] = {False: [], True: []}
        read(False), read(True)  # warm-up
        for i in range(rounds):
            for wrap in (False, True) if i % 2 else (True, False):
                times[wrap].append(read(wrap))
        return times
    finally:
        _remove(root)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--rows", nargs="*", help="run only these rows (and what they need)")
    parser.add_argument("--workloads", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--no-slow", action="store_true", help="skip the slow-storage check")
    args = parser.parse_args()
    data = np.random.default_rng(0).random(SHAPE, dtype="f4")
    rows: dict[str, Callable[..., tuple[float, float]]] = {
        "raw": raw_row,
        "memory": zarr_row(memory),
        "zarr3": zarr_row(plain),
        "sharded": zarr_row(sharded),
    }
    if _installed("zarrs"):
        rows["zarrs"] = zarr_row(plain, zarrs_pipeline)
        rows["sharded+zarrs"] = zarr_row(sharded, lambda: use_engine("zarrs"))
    else:
        print("zarrs rows left out: pip install 'shardedstore[zarrs]'")
    if _installed("tensorstore"):
        rows["tensorstore"] = tensorstore_row
        rows["sharded+ts"] = zarr_row(sharded, lambda: use_engine("tensorstore"))
    else:
        print("tensorstore rows left out: pip install 'shardedstore[tensorstore]'")
    python = None if args.no_peer else peer_python()
    if python is not None:
        rows["peer"] = peer_row(python)
    if args.rows:
        rows = {name: run for name, run in rows.items() if name in args.rows}
    versions = [f"zarr {zarr.__version__}"]
    for package in ("zarrs", "tensorstore"):
        if _installed(package):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    print(f"{', '.join(versions)}; {args.rounds} rounds, medians in seconds")
    verdicts: list[bool] = []  # the main workload and the slow-storage check
    variants: list[bool] = []  # the zstd and 512x512 variants, reported against the same
    workloads = {name: WORKLOADS[name] for name in args.workloads or WORKLOADS}
    for workload, (chunks, codec) in workloads.items():
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
        for run in rows.values():  # warm-up
            run(data, chunks, codec)
        for i in range(args.rounds):
            # Each round in another order, so that no row always follows the same one.
            order = list(rows.items())
            shift = i % len(order)
            for name, run in order[shift:] + order[:shift]:
                times[name].append(run(data, chunks, codec))
        write = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
        read = {name: statistics.median(r for _, r in t) for name, t in times.items()}
        print(f"\n{workload}:")
        print(f"  {'row':14} {'write s':>9} {'read s':>9}")
        for name in rows:
            print(f"  {name:14} {write[name]:9.4f} {read[name]:9.4f}")
        judged = verdicts if workload == MAIN else variants

        medians = {"read": read, "write": write}

        def ratio(
            what: str,
            ours: str,
            base: str,
            target: float | None,
            note: str = "",
            medians: dict[str, dict[str, float]] = medians,
            judged: list[bool] = judged,
        ) -> None:
            times = medians[what]
            if ours not in times or base not in times:
                return
            value = times[ours] / times[base]
            goal = f"(target <= {target:.2f})" if target is not None else "(reported)"
            print(f"  {what:5} {ours + '/' + base:28} = {value:.2f} {goal}{note}")
            if target is not None:
                judged.append(value <= target)

        ratio("read", "sharded", "zarr3", 0.6)
        ratio("write", "sharded", "zarr3", 0.8)
        if "memory" in rows and "zarr3" in rows:
            print(
                f"  read  memory/zarr3 = {read['memory'] / read['zarr3']:.2f}, "
                f"write {write['memory'] / write['zarr3']:.2f} (zarr 3's floor: no I/O at all)"
            )
        ratio("read", "sharded+zarrs", "zarrs", 1.2)
        ratio("read", "sharded+ts", "tensorstore", 1.5)
        ratio("read", "sharded+zarrs", "tensorstore", None)
        ratio("write", "sharded+zarrs", "zarrs", 1.5)
        ratio("write", "sharded+ts", "tensorstore", None)
        ratio("read", "zarrs", "zarr3", None, " (the engine alone)")
        ratio("read", "tensorstore", "zarr3", None, " (the engine alone)")
        if "peer" in rows:
            ratio("read", "sharded", "peer", 1.0)
            if "memory" in rows:
                floor = read["memory"] / read["peer"]
                print(f"  read  memory/peer   = {floor:.2f} (zarr 3 with no I/O at all)")
            ratio("write", "sharded", "peer", None)
    if not args.no_slow:
        slow = slow_reads(data, 3 * args.rounds)
        plain_s, sharded_s = statistics.median(slow[False]), statistics.median(slow[True])
        slow_ratio = sharded_s / plain_s
        print(
            f"\nslow storage ({DELAY * 1000:.0f} ms per read), read of 512 chunks, "
            f"{3 * args.rounds} rounds:"
        )
        print(
            f"  plain {plain_s:.3f} s, sharded {sharded_s:.3f} s, ratio {slow_ratio:.2f} "
            "(target <= 1.05)"
        )
        verdicts.append(slow_ratio <= 1.05)
    print(
        f"\n{MAIN} and slow storage: "
        + ("all targets met" if all(verdicts) else "SOME TARGETS MISSED")
    )
    print(f"variants (zstd, 512x512): {sum(variants)} of {len(variants)} targets met")


if __name__ == "__main__":
    main()
