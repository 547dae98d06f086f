"""moto's S3 server on 127.0.0.1 behind a WSGI layer that counts (and can slow) requests.

The requests are real HTTP to a real moto server; the layer only records each
request's method and path before handing it to moto, so tests can say how many
requests reached the server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import S3Server, fake_aws_credentials


@dataclass
class Requests:
    """What reached the server: (method, path) per request, and the peak in flight."""

    log: list[tuple[str, str]] = field(default_factory=list)
    delay: float = 0.0
    slow: Callable[[str, str], bool] = lambda method, path: False
    failures: int = 0
    failing: Callable[[str, str], bool] = lambda method, path: False
    in_flight: int = 0
    peak: int = 0
    slow_in_flight: int = 0
    slow_peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.log.clear()
            self.peak = 0
            self.slow_peak = 0

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self.lock:
            return sum(
                1 for m, path in self.log if (method is None or m == method) and contains in path
            )


class _Counting:
    def __init__(self, app: Any, requests: Requests) -> None:
        self.app = app
        self.requests = requests

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        requests = self.requests
        with requests.lock:
            requests.log.append((method, path))
            requests.in_flight += 1
            requests.peak = max(requests.peak, requests.in_flight)
        with requests.lock:
            fail = requests.failures > 0 and requests.failing(method, path)
            if fail:
                requests.failures -= 1
        if fail:  # what S3 answers when it is overloaded; clients retry it
            start_response("503 Slow Down", [("Content-Type", "application/xml")])
            with requests.lock:
                requests.in_flight -= 1
            return [
                b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
            ]
        slow = bool(requests.delay) and requests.slow(method, path)
        try:
            if slow:
                with requests.lock:
                    requests.slow_in_flight += 1
                    requests.slow_peak = max(requests.slow_peak, requests.slow_in_flight)
                time.sleep(requests.delay)
            return list(self.app(environ, start_response))
        finally:
            with requests.lock:
                requests.in_flight -= 1
                if slow:
                    requests.slow_in_flight -= 1


@dataclass(frozen=True)
class CountedS3(S3Server):
    """moto's S3 server behind a layer that counts the requests it serves."""

    requests: Requests


@pytest.fixture(scope="module")
def counted_s3() -> Iterator[CountedS3]:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    fake_aws_credentials()
    requests = Requests()
    app = _Counting(DomainDispatcherApplication(create_backend_app), requests)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CountedS3(f"http://127.0.0.1:{server.server_port}", requests)
    finally:
        server.shutdown()
        thread.join()


def build_layout(
    folder: Any,
    s3: CountedS3,
    kind: str,
    steps: int = 6,
    bucket: str | None = None,
    *,
    compressed: bool = True,
    seed: int | None = None,
) -> tuple[str, dict[str, Any], Any]:
    """A layout of ``steps`` time steps of array ``temp`` (one array shard each), written
    locally under ``folder`` and uploaded to S3.

    ``kind`` is ``"zip"`` (zip shards read as ``zip_url``) or ``"directory"`` (directory
    shards read through fsspec). Returns the layout's URL, its config (without a
    cache) and the array's values. ``compressed=False`` stores the chunks without a
    compressor (every zip of the layout then has the same size); ``seed`` picks the
    values (default: ``steps``).
    """
    import numpy as np
    import s3fs
    import zarr
    from zarr.storage import LocalStore

    from shardedstore import ShardedStore, array_shard_directory_store, array_shard_template_store

    local = os.path.join(os.fspath(folder), f"{kind}-layout")
    if kind == "zip":
        factory: Any = array_shard_template_store(
            {"type": "zip", "path": os.path.join(local, "t", "{chunk}.zarr.zip")}
        )
        template = {"type": "zip_url", "url": "t/{chunk}.zarr.zip"}
    else:
        factory = array_shard_directory_store(os.path.join(local, "t"))
        template = {"type": "fsspec", "url": "t/{chunk}.zarr"}
    store = ShardedStore(LocalStore(os.path.join(local, "base.zarr")), {}, {"temp": (1, factory)})
    values = np.random.default_rng(steps if seed is None else seed).random((steps, 16, 16))
    values = values.astype("f4")
    array = zarr.create_array(
        store,
        name="temp",
        shape=values.shape,
        chunks=(1, 8, 8),
        dtype="f4",
        **({} if compressed else {"compressors": None}),
    )
    array[:] = values
    store.close()
    bucket = bucket or s3.new_bucket()
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint}, skip_instance_cache=True)
    for root, _, files in os.walk(local):
        for name in files:
            if name.startswith("."):
                continue  # lock files of the local zips
            path = os.path.join(root, name)
            fs.put_file(path, f"{bucket}/{kind}/{os.path.relpath(path, local)}")
    options = {"storage_options": s3.storage_options}
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "fsspec", "url": "base.zarr", **options},
        "array_shards": {"temp": {"dims": 1, "store": {**template, **options}}},
    }
    return f"s3://{bucket}/{kind}", config, values
