"""Reading time steps from slow object storage: read-ahead and a warm cache.

The store answers every request after a fixed delay (20 ms by default, a nearby cloud
region's latency). It holds 64 time steps of a float32 array (64, 256, 256), chunks
(1, 128, 128), one array shard per time step: once as zip shards (read as
``zip_url``: one HEAD for the ETag, one GET for the zip) and once as directory shards
(read through ``fsspec``: one listing and 4 chunk objects per shard). Two backends:

- ``memory``: fsspec's in-memory filesystem behind a wrapper that sleeps ``delay``
  per call (``info``, ``cat_file``, one ``find``): the latency alone;
- ``moto``: moto's S3 server in its own process on 127.0.0.1, behind a WSGI layer
  that holds each request for ``delay``: real HTTP, with moto's own CPU cost per
  request on top (on a loaded 2-core machine, that cost is what limits read-ahead).

For each backend and kind the time steps are read in order (``array[t]`` for t in
0..63) through a layout opened with a cache in a fresh directory:

- ``none``: no read-ahead, cold (empty cache): the baseline;
- ``k=4``: read-ahead of 4 shards, cold;
- ``warm``: the ``none`` store read a second time (every shard in the cache).

Rounds are interleaved; medians are reported with the ratios the targets are about:
read-ahead k=4 >= 3x faster than none on the first pass, and the warm second pass
>= 10x faster than the cold first pass. The targets are judged on the ``memory``
backend when it runs (the latency the issue describes); moto's figures are reported
beside them. A last run (moto, zip shards, in another
process) with an in-memory cache bounded to 8 shards and read-ahead 4 reports the
most the cache held and the peak of all memory the reader allocated (``tracemalloc``).

Usage: python benchmarks/remote.py [--rounds 3] [--delay 0.02] [--backend memory moto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr
from fsspec.asyn import AsyncFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from zarr.storage import LocalStore

from shardedstore import (
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore.backends.cache import cache_engine

STEPS = 64
SHAPE = (STEPS, 256, 256)
CHUNKS = (1, 128, 128)


class Delayed:
    """A WSGI layer holding every request for ``delay`` seconds, and counting them."""

    def __init__(self, app: Any, delay: float, count: Any) -> None:
        self.app, self.delay, self.count = app, delay, count

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self.count.get_lock():
            self.count.value += 1
        time.sleep(self.delay)
        return list(self.app(environ, start_response))


class SlowMemoryFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """fsspec's memory filesystem, async, answering each call after ``delay`` seconds.

    Listing a tree is one call (``find``), as one S3 LIST request is.
    """

    protocol = "slowmem"
    delay = 0.02
    requests = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory = MemoryFileSystem()

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return str(MemoryFileSystem._strip_protocol(path.removeprefix("slowmem://")))

    async def _request(self) -> None:
        type(self).requests += 1
        await asyncio.sleep(self.delay)

    async def _info(self, path: str, **kwargs: Any) -> Any:
        await self._request()
        return self.memory.info(path)

    async def _cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> Any:
        await self._request()
        return self.memory.cat_file(path, start, end)

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        await self._request()
        return self.memory.ls(path, detail=detail)

    async def _find(self, path: str, *args: Any, **kwargs: Any) -> Any:
        await self._request()
        return self.memory.find(path, *args, **kwargs)


def serve(port: Any, delay: float, count: Any) -> None:
    """The server process: moto behind the delaying layer on 127.0.0.1."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = Delayed(DomainDispatcherApplication(create_backend_app), delay, count)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    port.value = server.server_port
    server.serve_forever()


def start_server(delay: float) -> tuple[str, Any, Callable[[], None]]:
    """moto's S3 server in its own process (so that it does not take this one's CPU)."""
    import multiprocessing

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    context = multiprocessing.get_context("spawn")
    port, count = context.Value("i", 0), context.Value("q", 0)
    process = context.Process(target=serve, args=(port, delay, count), daemon=True)
    process.start()
    deadline = time.monotonic() + 60
    while not port.value:
        if time.monotonic() > deadline or not process.is_alive():
            raise RuntimeError("the S3 server did not start")
        time.sleep(0.05)

    def stop() -> None:
        process.terminate()
        process.join()

    return f"http://127.0.0.1:{port.value}", count, stop


def write_layouts(folder: Path, values: np.ndarray) -> None:
    """Both layouts, written locally: ``folder/zip`` and ``folder/directory``."""
    for kind in ("zip", "directory"):
        local = folder / kind
        if kind == "zip":
            factory: Any = array_shard_template_store(
                {"type": "zip", "path": str(local / "t" / "{chunk}.zarr.zip")}
            )
        else:
            factory = array_shard_directory_store(str(local / "t"))
        store = ShardedStore(LocalStore(local / "base.zarr"), {}, {"temp": (1, factory)})
        array = zarr.create_array(
            store, name="temp", shape=SHAPE, chunks=CHUNKS, dtype="f4", compressors=None
        )
        array[:] = values
        store.close()


def upload(folder: Path, fs: Any, root: str, options: dict[str, Any]) -> dict[str, Any]:
    """Copy both layouts below ``root`` of ``fs``; the config of each, by kind."""
    configs = {}
    with_options = {"storage_options": options} if options else {}
    for kind in ("zip", "directory"):
        local = folder / kind
        for where, _, files in os.walk(local):
            for name in files:
                if not name.startswith("."):
                    path = Path(where) / name
                    fs.pipe_file(f"{root}/{kind}/{path.relative_to(local)}", path.read_bytes())
        if kind == "zip":
            template = {"type": "zip_url", "url": "t/{chunk}.zarr.zip", **with_options}
        else:
            template = {"type": "fsspec", "url": "t/{chunk}.zarr", **with_options}
        configs[kind] = {
            "format": "shardedstore",
            "version": 1,
            "base": {"type": "fsspec", "url": "base.zarr", **with_options},
            "array_shards": {"temp": {"dims": 1, "store": template}},
        }
    return configs


def open_layout(url: str, config: dict[str, Any], cache: dict[str, Any]) -> ShardedStore:
    return ShardedStore.from_config({**config, "cache": cache}, base_path=url, read_only=True)


def read_in_order(store: ShardedStore, values: np.ndarray) -> float:
    array = zarr.open_array(store, path="temp", mode="r")
    started = time.perf_counter()
    for t in range(STEPS):
        if not np.array_equal(array[t], values[t]):
            raise AssertionError(f"time step {t} read wrong")
    return time.perf_counter() - started


def measure(arguments: str) -> None:
    """In a fresh process: read every time step; print peak allocation and cache size."""
    url, config = json.loads(arguments)
    store = ShardedStore.from_config(config, base_path=url, read_only=True)
    array = zarr.open_array(store, path="temp", mode="r")
    engine = cache_engine(store.cache)  # type: ignore[arg-type]
    array[0]  # clients, sessions and metadata: not what the bound is about
    held = 0
    tracemalloc.start()
    for t in range(1, STEPS):
        array[t]
        held = max(held, engine.size)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store.close()
    print(peak, held)


def run_backend(
    backend: str,
    configs: dict[str, Any],
    url: str,
    requests_made: Callable[[], int],
    folder: Path,
    values: np.ndarray,
    rounds: int,
) -> bool:
    """Time the three passes for each kind; print medians and ratios; targets met?"""
    ok = True
    for kind, config in configs.items():
        base = f"{url}/{kind}"
        times: dict[str, list[float]] = {"none": [], "k=4": [], "warm": []}
        requests: dict[str, int] = {}
        for round_ in range(rounds):
            for name, depth in (("none", 0), ("k=4", 4)):
                directory = folder / f"cache-{backend}-{kind}-{name}-{round_}"
                store = open_layout(base, config, {"dir": str(directory), "read_ahead": depth})
                before = requests_made()
                times[name].append(read_in_order(store, values))
                requests[name] = requests_made() - before
                if name == "none":
                    before = requests_made()
                    times["warm"].append(read_in_order(store, values))
                    requests["warm"] = requests_made() - before
                store.close()
        median = {name: statistics.median(found) for name, found in times.items()}
        speedup = median["none"] / median["k=4"]
        warm = median["none"] / median["warm"]
        print(f"\n{backend}, {kind} shards")
        for name in times:
            print(
                f"  {name:5} {median[name]:7.3f} s  ({requests[name]:3} requests, "
                f"{STEPS / median[name]:7.1f} steps/s)"
            )
        print(f"  read-ahead k=4 vs none, first pass: {speedup:5.1f}x  (target >= 3)")
        print(f"  warm second pass vs cold first:     {warm:5.1f}x  (target >= 10)")
        ok = ok and speedup >= 3 and warm >= 10
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--backend", nargs="+", default=["memory", "moto"])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    values = np.random.default_rng(0).random(SHAPE, dtype="float32")
    shard_bytes = values[0].nbytes
    print(
        f"{STEPS} time steps of {shard_bytes / 2**10:.0f} KiB, {args.delay * 1e3:.0f} ms "
        f"per request, {args.rounds} rounds (medians)"
    )
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        write_layouts(folder, values)
        if "memory" in args.backend:
            fsspec.register_implementation("slowmem", SlowMemoryFileSystem, clobber=True)
            configs = upload(folder, MemoryFileSystem(), "bench", {})
            SlowMemoryFileSystem.delay = args.delay
            ok &= run_backend(
                "memory",
                configs,
                "slowmem://bench",
                lambda: SlowMemoryFileSystem.requests,
                folder,
                values,
                args.rounds,
            )
        if "moto" in args.backend:
            import s3fs

            endpoint, server, stop = start_server(args.delay)
            try:
                options = {"endpoint_url": endpoint}
                fs = s3fs.S3FileSystem(
                    client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True
                )
                bucket = f"bench-{uuid.uuid4().hex[:8]}"
                fs.mkdir(bucket)
                configs = upload(folder, fs, bucket, options)
                url = f"s3://{bucket}"
                moto_ok = run_backend(
                    "moto", configs, url, lambda: int(server.value), folder, values, args.rounds
                )
                if "memory" in args.backend:  # the targets are about latency: see above
                    print(f"  (moto: ratios {'met' if moto_ok else 'below'} the targets)")
                else:
                    ok &= moto_ok
                # Memory: an in-memory cache of 8 shards, reading ahead 4, over 64
                # shards, measured in another process (the server's allocations are not
                # the reader's).
                bound = 8 * (shard_bytes + 4096)
                full = {**configs["zip"], "cache": {"max_bytes": bound, "read_ahead": 4}}
                result = subprocess.run(
                    [sys.executable, __file__, "--measure", json.dumps([f"{url}/zip", full])],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                peak, held = (int(x) for x in result.stdout.split())
                print(
                    f"\nmemory cache bounded to {bound / 2**20:.2f} MiB (8 shards), read-ahead "
                    f"4, {STEPS * shard_bytes / 2**20:.0f} MiB read:"
                    f"\n  the cache held at most {held / 2**20:.2f} MiB; peak of all memory "
                    f"the reader allocated: {peak / 2**20:.2f} MiB"
                )
                ok = ok and held <= bound
            finally:
                stop()
    print("\nall targets met" if ok else "\nTARGET MISSED")


if __name__ == "__main__":
    main()
