"""Reading time steps from slow remote storage: read-ahead, a warm cache, and anchors.

The store answers every request after a fixed delay (20 ms by default, a nearby cloud
region's latency). It holds 32 time steps of a float32 array (32, 512, 512), chunks
(1, 128, 128): 16 chunks of 64 KiB per time step, one array shard per time step, once
as zip shards (read as ``zip_url``: one HEAD for the ETag, one GET for the zip) and once
as directory shards (read through ``fsspec``: one object per chunk). Three backends:

- ``memory``: fsspec's in-memory filesystem behind a wrapper that sleeps ``delay``
  per call (``info``, ``cat_file``, one ``find``): the latency alone;
- ``http``: a plain HTTP file server in its own process on 127.0.0.1 (``HEAD``,
  ``GET`` with byte ranges, ``ETag`` and ``Last-Modified``), holding each request for
  ``delay``: real HTTP, as from a bucket's public URL or any static file server;
- ``moto``: moto's S3 server in its own process on 127.0.0.1, behind a WSGI layer
  that holds each request for ``delay`` (on a loaded 2-core machine moto's own CPU per
  request is what limits read-ahead); not run by default.

For each backend and kind the time steps are read in order (``array[t]`` for t in
0..31) through a layout opened with a cache in a fresh directory:

- ``none``: no read-ahead, cold (empty cache): the baseline;
- ``k=4``: read-ahead of 4 shards, cold;
- ``warm``: the ``none`` store read a second time (every shard in the cache).

Anchors, read the same way: the same array as one plain Zarr (no layout, no cache)
through zarr 3 over ``FsspecStore``, and over obstore's ``ObjectStore`` (``http``:
obstore's ``HTTPStore``; ``moto``: its ``S3Store``; obstore has no slow in-memory store).

Rounds are interleaved; medians are reported with the ratios the targets are about
(issue 21): read-ahead k=4 / none <= 0.3 on the first pass, and warm / cold <= 0.05.
They are judged on zip shards, on the ``memory`` and ``http`` backends; directory
shards are reported beside them (over plain HTTP they are read without the cache: HTTP
gives no listing to check each object's version by). The floor of a warm pass is
zarr's own: the same plain Zarr in a ``LocalStore`` on local disk, read the same way,
is printed beside it (``local``): a warm pass does no I/O but zarr's pipeline per
chunk, so on a loaded machine, where CPU time grows and request latency does not,
warm / cold grows too. A last run (moto, zip shards, in another process) with an
in-memory cache bounded to 8 shards and read-ahead 4 reports the most the cache held
and the peak of all memory the reader allocated (``tracemalloc``).

Usage: python benchmarks/remote.py [--rounds 3] [--delay 0.02] [--backend memory http moto]
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

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

STEPS = 32
SHAPE = (STEPS, 512, 512)
CHUNKS = (1, 128, 128)
READ_AHEAD_TARGET = 0.3
"""Read-ahead k=4 / none, first pass, at most."""
WARM_TARGET = 0.05
"""Warm second pass / cold first pass, at most."""


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


class _HttpFiles(BaseHTTPRequestHandler):
    """Files below ``root``, with ``HEAD``, ``GET`` (one byte range), ``ETag`` and
    ``Last-Modified``, every answer held for ``delay`` (set on a subclass)."""

    protocol_version = "HTTP/1.1"
    root = Path(".")
    delay = 0.02
    count: Any = None
    etags: ClassVar[dict[Path, tuple[float, str]]] = {}

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _file(self) -> Path | None:
        with self.count.get_lock():
            self.count.value += 1
        time.sleep(self.delay)
        relative = self.path.split("?", 1)[0].lstrip("/")
        path = (self.root / relative).resolve()
        if self.root not in path.parents or not path.is_file():
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return path

    def _headers(self, path: Path, length: int) -> None:
        info = path.stat()
        known = self.etags.get(path)
        if known is None or known[0] != info.st_mtime:
            digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            known = self.etags[path] = (info.st_mtime, f'"{digest}"')
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", email.utils.formatdate(info.st_mtime, usegmt=True))
        self.send_header("ETag", known[1])
        self.end_headers()

    def do_HEAD(self) -> None:
        path = self._file()
        if path is not None:
            self.send_response(200)
            self._headers(path, path.stat().st_size)

    def do_GET(self) -> None:
        path = self._file()
        if path is None:
            return
        data = path.read_bytes()
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            first, _, last = wanted[len("bytes=") :].partition("-")
            if first:
                start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
            else:
                start, end = max(0, len(data) - int(last)), len(data)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
            self._headers(path, end - start)
            self.wfile.write(data[start:end])
            return
        self.send_response(200)
        self._headers(path, len(data))
        self.wfile.write(data)


def serve_http(root: str, port: Any, delay: float, count: Any) -> None:
    """The HTTP server process: the files below ``root`` on 127.0.0.1."""
    handler = type(
        "Files", (_HttpFiles,), {"root": Path(root).resolve(), "delay": delay, "count": count}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    port.value = server.server_port
    server.serve_forever()


def start_http(root: Path, delay: float) -> tuple[str, Any, Callable[[], None]]:
    """The HTTP server in its own process (so that it does not take this one's CPU)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    port, count = context.Value("i", 0), context.Value("q", 0)
    process = context.Process(target=serve_http, args=(str(root), port, delay, count), daemon=True)
    process.start()
    deadline = time.monotonic() + 60
    while not port.value:
        if time.monotonic() > deadline or not process.is_alive():
            raise RuntimeError("the HTTP server did not start")
        time.sleep(0.05)

    def stop() -> None:
        process.terminate()
        process.join()

    return f"http://127.0.0.1:{port.value}", count, stop


def write_layouts(folder: Path, values: np.ndarray) -> None:
    """Both layouts, written locally (``folder/zip``, ``folder/directory``), and the
    same array as one plain Zarr (``folder/plain/plain.zarr``)."""
    plain = zarr.create_array(
        LocalStore(folder / "plain" / "plain.zarr"),
        name="temp",
        shape=SHAPE,
        chunks=CHUNKS,
        dtype="f4",
        compressors=None,
    )
    plain[:] = values
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


def layout_configs(options: dict[str, Any]) -> dict[str, Any]:
    """The config of each layout kind (paths relative to the kind's folder)."""
    configs = {}
    with_options = {"storage_options": options} if options else {}
    for kind in ("zip", "directory"):
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


def upload(folder: Path, fs: Any, root: str, options: dict[str, Any]) -> dict[str, Any]:
    """Copy both layouts and the plain Zarr below ``root`` of ``fs``; each layout's config."""
    for kind in ("zip", "directory", "plain"):
        local = folder / kind
        for where, _, files in os.walk(local):
            for name in files:
                if not name.startswith("."):
                    path = Path(where) / name
                    fs.pipe_file(f"{root}/{kind}/{path.relative_to(local)}", path.read_bytes())
    return layout_configs(options)


def open_layout(url: str, config: dict[str, Any], cache: dict[str, Any]) -> ShardedStore:
    return ShardedStore.from_config({**config, "cache": cache}, base_path=url, read_only=True)


def read_in_order(store: Any, values: np.ndarray) -> float:
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


def anchors(backend: str, url: str, options: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """The plain Zarr's stores, by name: zarr 3 over FsspecStore, over obstore."""
    from zarr.storage import FsspecStore, ObjectStore

    plain = f"{url}/plain/plain.zarr"
    stores: dict[str, Callable[[], Any]] = {
        "fsspec": lambda: FsspecStore.from_url(plain, read_only=True, storage_options=options)
    }
    if backend == "http":
        from obstore.store import HTTPStore

        def http() -> Any:
            inner = HTTPStore.from_url(plain, client_options={"allow_http": True})
            return ObjectStore(inner, read_only=True)

        stores["obstore"] = http
    elif backend == "moto":
        from obstore.store import S3Store

        bucket, _, prefix = plain.removeprefix("s3://").partition("/")

        def s3() -> Any:
            inner = S3Store(
                bucket,
                prefix=prefix,
                endpoint=options["endpoint_url"],
                region="us-east-1",
                skip_signature=False,
                access_key_id="testing",
                secret_access_key="testing",
                client_options={"allow_http": True},
            )
            return ObjectStore(inner, read_only=True)

        stores["obstore"] = s3
    return stores


def run_backend(
    backend: str,
    configs: dict[str, Any],
    url: str,
    requests_made: Callable[[], int],
    folder: Path,
    values: np.ndarray,
    rounds: int,
    options: dict[str, Any],
) -> bool:
    """Time the three passes for each kind and the anchors; print medians and ratios;
    targets met?"""
    ok = True
    anchor_stores = anchors(backend, url, options)
    anchor_times: dict[str, list[float]] = {name: [] for name in anchor_stores}
    anchor_requests: dict[str, int] = {}
    results: dict[str, dict[str, float]] = {}
    local_times: list[float] = []
    local = LocalStore(folder / "plain" / "plain.zarr", read_only=True)
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
                    if kind == "zip":  # the floor of a warm pass, at about the same time
                        local_times.append(read_in_order(local, values))
                store.close()
            if kind == "zip":  # the anchors, once per round
                for name, make in anchor_stores.items():
                    before = requests_made()
                    anchor_times[name].append(read_in_order(make(), values))
                    anchor_requests[name] = requests_made() - before
        median = {name: statistics.median(found) for name, found in times.items()}
        results[kind] = median
        ahead = median["k=4"] / median["none"]
        warm = median["warm"] / median["none"]
        print(f"\n{backend}, {kind} shards")
        for name in times:
            print(
                f"  {name:5} {median[name]:7.3f} s  ({requests[name]:4} requests, "
                f"{STEPS / median[name]:7.1f} steps/s)"
            )
        judged = kind == "zip"
        goal = "target" if judged else "reported"
        print(f"  read-ahead k=4 / none, first pass: {ahead:5.3f}  ({goal} <= {READ_AHEAD_TARGET})")
        print(f"  warm second pass / cold first:     {warm:5.3f}  ({goal} <= {WARM_TARGET})")
        if kind == "zip":
            floor = statistics.median(local_times)
            print(
                f"  warm's floor, the plain Zarr in a LocalStore on local disk: {floor:6.3f} s"
                f"\n    warm / it: {median['warm'] / floor:5.2f}; "
                f"it / cold: {floor / median['none']:5.3f}"
            )
        if judged:
            ok = ok and ahead <= READ_AHEAD_TARGET and warm <= WARM_TARGET
    print(f"\n{backend}, anchors: the same array as one plain Zarr, read in order, no cache")
    for name, found in anchor_times.items():
        median = statistics.median(found)
        print(
            f"  zarr 3 over {name:8} {median:7.3f} s  ({anchor_requests[name]:4} requests); "
            f"zip shards k=4 / it: {results['zip']['k=4'] / median:5.3f}, warm / it: "
            f"{results['zip']['warm'] / median:5.3f}"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument(
        "--backend", nargs="+", default=["memory", "http"], choices=["memory", "http", "moto"]
    )
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    values = np.random.default_rng(0).random(SHAPE, dtype="float32")
    shard_bytes = values[0].nbytes
    print(
        f"{STEPS} time steps of {shard_bytes / 2**10:.0f} KiB in {values[0].size // 128**2} "
        f"chunks, {args.delay * 1e3:.0f} ms per request, {args.rounds} rounds (medians)"
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
                {},
            )
        if "http" in args.backend:
            url, count, stop = start_http(folder, args.delay)
            try:
                ok &= run_backend(
                    "http",
                    layout_configs({}),
                    url,
                    lambda: int(count.value),
                    folder,
                    values,
                    args.rounds,
                    {},
                )
            finally:
                stop()
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
                    "moto",
                    configs,
                    url,
                    lambda: int(server.value),
                    folder,
                    values,
                    args.rounds,
                    options,
                )
                if {"memory", "http"} & set(args.backend):  # the targets are about latency
                    print(f"  (moto: ratios {'met' if moto_ok else 'below'} the targets)")
                else:
                    ok &= moto_ok
                # Memory: an in-memory cache of 8 shards, reading ahead 4, over every
                # shard, measured in another process (the server's allocations are not
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
