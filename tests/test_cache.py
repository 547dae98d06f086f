"""The shard cache against a real S3 server (moto on 127.0.0.1), counting requests there."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import shardedstore.backends.cache as cache_module
from shardedstore import ConfigError, RemoteZipStore, ShardCache, ShardedStore
from shardedstore.backends.cache import CachedStore, cache_engine
from tests._openfiles import CAN_LIST, open_files_below
from tests._s3counter import CountedS3, build_layout, counted_s3

__all__ = ["counted_s3"]


def open_layout(url: str, config: dict[str, Any], cache: dict[str, Any] | None) -> ShardedStore:
    full = dict(config)
    if cache is not None:
        full["cache"] = cache
    return ShardedStore.from_config(full, base_path=url, read_only=True)


def read_all(store: ShardedStore, steps: int) -> np.ndarray:
    array = zarr.open_array(store, path="temp", mode="r")
    return np.stack([array[t] for t in range(steps)])


@pytest.fixture(scope="module")
def zip_layout(counted_s3: CountedS3, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_layout(tmp_path_factory.mktemp("zip"), counted_s3, "zip")


@pytest.fixture(scope="module")
def directory_layout(counted_s3: CountedS3, tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_layout(tmp_path_factory.mktemp("dir"), counted_s3, "directory")


def shard_requests(s3: CountedS3, method: str) -> int:
    return s3.requests.count(method, "/t/")


@pytest.mark.parametrize("on_disk", [False, True])
def test_zip_shards_are_fetched_whole_once(
    counted_s3: CountedS3, zip_layout: Any, tmp_path: Path, on_disk: bool
) -> None:
    url, config, values = zip_layout
    cache = {"max_bytes": 1 << 26, **({"dir": str(tmp_path / "cache")} if on_disk else {})}
    store = open_layout(url, config, cache)
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, len(values)), values)
    steps = len(values)
    assert shard_requests(counted_s3, "GET") == steps  # one GET per zip shard, 4 chunks each
    assert shard_requests(counted_s3, "HEAD") == steps  # its ETag, once
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, steps), values)
    assert counted_s3.requests.count(contains="/t/") == 0  # hits: no request at all
    # A new store on the same cache: asks each zip's ETag, fetches nothing.
    again = open_layout(url, config, cache)
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(again, steps), values)
    assert shard_requests(counted_s3, "GET") == 0
    assert shard_requests(counted_s3, "HEAD") == steps


def test_directory_shards_are_cached_chunk_by_chunk(
    counted_s3: CountedS3, directory_layout: Any, tmp_path: Path
) -> None:
    url, config, values = directory_layout
    steps = len(values)
    store = open_layout(url, config, {"dir": str(tmp_path / "cache")})
    assert isinstance(store._shard_reader("temp", "0"), CachedStore)
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, steps), values)
    # Per shard: one listing (a GET on the bucket, not below /t/) and its 4 chunks.
    assert shard_requests(counted_s3, "GET") == steps * 4
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, steps), values)
    assert counted_s3.requests.count(contains="/t/") == 0
    assert counted_s3.requests.count() == 0


def test_missing_chunks_cost_no_request(
    counted_s3: CountedS3, directory_layout: Any, tmp_path: Path
) -> None:
    url, config, _ = directory_layout
    store = open_layout(url, config, {})
    reader = store._shard_reader("temp", "0")
    assert zarr.core.sync.sync(reader.get("c/0/0")) is not None
    counted_s3.requests.clear()
    assert zarr.core.sync.sync(reader.get("c/9/9")) is None
    assert zarr.core.sync.sync(reader.exists("c/9/9")) is False
    assert counted_s3.requests.count() == 0


@pytest.mark.parametrize("on_disk", [False, True])
def test_eviction_keeps_the_bound(
    counted_s3: CountedS3, zip_layout: Any, tmp_path: Path, on_disk: bool
) -> None:
    url, config, values = zip_layout
    zip_size = counted_s3_size(counted_s3, url, "t/0.zarr.zip")
    bound = int(2.5 * zip_size)  # room for two shards
    cache = {"max_bytes": bound, **({"dir": str(tmp_path / "cache")} if on_disk else {})}
    store = open_layout(url, config, cache)
    np.testing.assert_array_equal(read_all(store, len(values)), values)
    engine = cache_engine(store.cache)  # type: ignore[arg-type]
    assert 0 < engine.size <= bound
    assert engine.stats.evictions >= len(values) - 2
    if on_disk:
        files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert sum(p.stat().st_size for p in files) <= bound
    # Evicted shards are fetched again, once each, and still read right.
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, len(values)), values)
    assert shard_requests(counted_s3, "GET") >= len(values) - 2


@pytest.mark.skipif(not CAN_LIST, reason="needs /proc (Linux)")
def test_cache_files_kept_open_are_bounded_never_pin_a_removed_entry_and_close(
    counted_s3: CountedS3, zip_layout: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "_HELD_FILES", 2)
    url, config, values = zip_layout
    steps = len(values)
    cache_dir = tmp_path / "cache"
    store = open_layout(url, config, {"dir": str(cache_dir), "max_bytes": 1 << 26})
    np.testing.assert_array_equal(read_all(store, steps), values)
    np.testing.assert_array_equal(read_all(store, steps), values)
    held = open_files_below(cache_dir)
    assert len(held) == 2, held  # the last two shards read, for their next reads
    # Another process evicts both: the next read of each fetches it again (a removed
    # file is neither served nor kept open, taking room on disk, once its shard is read).
    array = zarr.open_array(store, path="temp", mode="r")
    for name in held:
        os.unlink(name)
    for read, t in enumerate([steps - 1, steps - 2], start=1):
        counted_s3.requests.clear()
        np.testing.assert_array_equal(array[t], values[t])
        assert shard_requests(counted_s3, "GET") == 1
        removed = [name for name in open_files_below(cache_dir) if name.endswith("(deleted)")]
        assert len(removed) == 2 - read, removed
    assert len(open_files_below(cache_dir)) == 2
    store.close()
    assert open_files_below(cache_dir) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2])
def test_threads_reading_one_kept_cache_file_never_see_damage(
    tmp_path: Path, compression: int
) -> None:
    # Two threads, each with its own event loop and store, read one zip through one
    # cache: both are handed the same kept cache file, and zipfile reads lzma and
    # bzip2 members by seek and read. Each reader must read from a position of its
    # own: sharing the descriptor's made healthy zips read as damaged.
    members = {f"k{i}": os.urandom(1000) * 30 for i in range(40)}
    path = tmp_path / "shard.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    cache = ShardCache(dir=str(tmp_path / "cache"), max_bytes=1 << 28)
    prototype = zarr.core.buffer.default_buffer_prototype()
    outcomes: dict[str, Any] = {}

    def read(name: str, passes: int) -> None:
        store = RemoteZipStore(path.as_uri(), cache=cache)

        async def every_member() -> int:
            wrong = 0
            for _ in range(passes):
                for key, data in members.items():
                    found = await store.get(key, prototype)
                    wrong += found is None or found.to_bytes() != data
            return wrong

        try:
            outcomes[name] = asyncio.run(every_member())
        except Exception as error:  # reported below, with the thread's name
            outcomes[name] = error
        finally:
            store.close()

    read("warm", 1)
    engine = cache_engine(cache)
    damaged = engine.stats.damaged
    threads = [threading.Thread(target=read, args=(f"thread {i}", 10)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == {"warm": 0, "thread 0": 0, "thread 1": 0}
    assert engine.stats.damaged == damaged


def counted_s3_size(s3: CountedS3, url: str, key: str) -> int:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint}, skip_instance_cache=True)
    return int(fs.size(f"{url}/{key}"))


_READER = """
import json, sys, hashlib
import numpy as np, zarr
from shardedstore import ShardedStore
url, config = sys.argv[1], json.loads(sys.argv[2])
store = ShardedStore.from_config(config, base_path=url, read_only=True)
array = zarr.open_array(store, path="temp", mode="r")
for _ in range(3):
    data = np.stack([array[t] for t in range(array.shape[0])])
print(hashlib.sha256(data.tobytes()).hexdigest())
"""


def test_processes_share_a_cache_directory(
    counted_s3: CountedS3, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import hashlib

    url, config, values = build_layout(tmp_path_factory.mktemp("shared"), counted_s3, "zip", 8)
    directory = tmp_path / "cache"
    # Room for 5 of 8 shards: both processes also evict while the other reads.
    bound = 5 * counted_s3_size(counted_s3, url, "t/0.zarr.zip") + 100
    full = {**config, "cache": {"dir": str(directory), "max_bytes": bound}}
    command = [sys.executable, "-c", _READER, url, json.dumps(full)]
    environment = {**os.environ, "PYTHONPATH": os.getcwd()}
    readers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment)
        for _ in range(2)
    ]
    expected = hashlib.sha256(values.tobytes()).hexdigest()
    for reader in readers:
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err.decode()
        assert out.decode().strip() == expected
    # Each process looks at the directory at least every 0.5 s while it writes; the
    # next write, from any process, brings it within the bound.
    engine = cache_engine(ShardCache(str(directory), bound))
    engine.put(engine.entry("test", "one more", "v"), b"x")
    entries = [p for p in directory.rglob("*") if p.is_file()]
    assert entries
    assert sum(p.stat().st_size for p in entries) <= bound
    assert not list((directory / "shardedstore-cache-v1" / "tmp").iterdir())  # no torn entries
    zips = [entry for entry in entries if entry.read_bytes()[:2] == b"PK"]
    assert len(zips) >= 3
    for entry in zips:  # every zip entry is a whole, valid zip
        with zipfile.ZipFile(entry) as archive:
            assert archive.testzip() is None


def test_a_changed_object_is_fetched_again(
    counted_s3: CountedS3, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import s3fs

    url, config, values = build_layout(tmp_path_factory.mktemp("changed"), counted_s3, "zip", 3)
    cache = {"dir": str(tmp_path / "cache")}
    np.testing.assert_array_equal(read_all(open_layout(url, config, cache), 3), values)
    # Another writer replaces shard 1 with shard 2's zip (same size, new content).
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": counted_s3.endpoint}, skip_instance_cache=True
    )
    fs.pipe_file(f"{url}/t/1.zarr.zip", fs.cat_file(f"{url}/t/2.zarr.zip"))
    counted_s3.requests.clear()
    again = read_all(open_layout(url, config, cache), 3)
    np.testing.assert_array_equal(again[1], values[2])
    np.testing.assert_array_equal(again[[0, 2]], values[[0, 2]])
    assert counted_s3.requests.count("GET", "/t/1.zarr.zip") == 1
    assert counted_s3.requests.count("GET", "/t/") == 1


def test_cache_in_the_config(counted_s3: CountedS3, zip_layout: Any, tmp_path: Path) -> None:
    url, config, _ = zip_layout
    cache = {"dir": str(tmp_path / "c"), "max_bytes": 12345, "read_ahead": 2}
    store = open_layout(url, config, cache)
    assert store.cache == ShardCache(str(tmp_path / "c"), 12345, 2)
    written = store.get_config()
    assert written["cache"] == cache
    assert written["array_shards"]["temp"]["store"] == {
        "type": "zip_url",
        "url": f"{url}/t/{{chunk}}.zarr.zip",
        "storage_options": counted_s3.storage_options,
    }
    assert written["base"]["storage_options"] == counted_s3.storage_options  # no defaults added
    assert ShardedStore.from_config(written, read_only=True).cache == store.cache
    assert (
        ShardedStore.from_config({k: v for k, v in written.items() if k != "cache"}).cache is None
    )


@pytest.mark.parametrize(
    ("cache", "field"),
    [
        ({"max_bytes": 10, "size": 3}, "cache"),
        ({"max_bytes": 0}, "cache.max_bytes"),
        ({"max_bytes": "1GB"}, "cache.max_bytes"),
        ({"read_ahead": -1}, "cache.read_ahead"),
        ({"dir": ""}, "cache.dir"),
        ([], "cache"),
    ],
)
def test_bad_cache_settings_name_the_field(cache: Any, field: str) -> None:
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "cache": cache,
    }
    with pytest.raises(ConfigError, match=f"^{field}"):
        ShardedStore.from_config(config)


def test_shard_cache_checks_its_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        ShardCache(max_bytes=-1)
    with pytest.raises(ConfigError, match="read_ahead"):
        ShardCache(read_ahead=True)  # type: ignore[arg-type]
    assert ShardCache(dir="rel").dir == os.path.abspath("rel")
    relative = ShardCache.from_json({"dir": "cache"}, base=str(tmp_path))
    assert relative.dir == str(tmp_path / "cache")
    with pytest.raises(ConfigError, match="absolute"):
        ShardCache.from_json({"dir": "cache"}, base="s3://bucket/ds")


def test_python_api_and_pickling(counted_s3: CountedS3, zip_layout: Any) -> None:
    import pickle

    from zarr.storage import FsspecStore

    url, _config, values = zip_layout
    base = FsspecStore.from_url(
        f"{url}/base.zarr", storage_options=counted_s3.storage_options, read_only=True
    )
    shard = RemoteZipStore(f"{url}/t/0.zarr.zip", counted_s3.storage_options)
    with pytest.raises(ValueError, match=r"overlap|lies|same"):
        ShardedStore(shard, {"a": shard})
    store = ShardedStore(base, {"zero": shard}, cache=ShardCache(max_bytes=1 << 20))
    assert isinstance(store.mounts["zero"], RemoteZipStore)
    assert store.mounts["zero"].cache == store.cache  # type: ignore[attr-defined]
    copy = pickle.loads(pickle.dumps(store))
    assert copy.cache == store.cache
    assert copy == store
    data = zarr.open_array(copy.mounts["zero"], mode="r")[:]
    np.testing.assert_array_equal(data, values[0])
    with pytest.raises(PermissionError, match="read-only"):
        zarr.core.sync.sync(
            shard.set("x", zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"1"))
        )


def _base_options(store: ShardedStore) -> dict[str, Any]:
    options: dict[str, Any] = store._given[0].fs.storage_options  # type: ignore[attr-defined]
    return options


def test_remote_stores_get_timeouts_and_retries(
    counted_s3: CountedS3, zip_layout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, config, _values = zip_layout
    store = ShardedStore.from_config(config, base_path=url, read_only=True)
    added = _base_options(store)["config_kwargs"]
    assert added["connect_timeout"] == added["read_timeout"] == 30.0
    assert "retries" in added
    shard = store._shard_reader("temp", "0")
    assert isinstance(shard, RemoteZipStore)
    assert shard.storage_options["config_kwargs"]["read_timeout"] == 30.0
    assert "config_kwargs" not in store.get_config()["base"]["storage_options"]
    monkeypatch.setenv("SHARDEDSTORE_TIMEOUT", "7")
    monkeypatch.setenv("SHARDEDSTORE_RETRIES", "1")
    configured = ShardedStore.from_config(config, base_path=url, read_only=True)
    assert _base_options(configured)["config_kwargs"]["read_timeout"] == 7.0
    # What the config says wins, and is written back as it was.
    own = {"config_kwargs": {"read_timeout": 99}, **counted_s3.storage_options}
    config = {**config, "base": {**config["base"], "storage_options": own}}
    explicit = ShardedStore.from_config(config, base_path=url, read_only=True)
    assert _base_options(explicit)["config_kwargs"] == {"read_timeout": 99}
    assert explicit.get_config()["base"]["storage_options"] == own


def test_a_zip_is_fetched_despite_server_errors(
    counted_s3: CountedS3, zip_layout: Any, tmp_path: Path
) -> None:
    url, config, values = zip_layout
    store = open_layout(url, config, {"dir": str(tmp_path / "c")})
    requests = counted_s3.requests
    requests.clear()
    requests.failing = lambda method, path: path.endswith("/t/3.zarr.zip")
    requests.failures = 2  # the HEAD and the first GET fail, as S3 does when overloaded
    try:
        np.testing.assert_array_equal(zarr.open_array(store, path="temp", mode="r")[3], values[3])
    finally:
        requests.failures = 0
    assert requests.count(contains="/t/3.zarr.zip") == 4  # two failed, retried


def test_obstore_stores_get_timeouts_and_retries(counted_s3: CountedS3) -> None:
    spec = {
        "format": "shardedstore",
        "version": 1,
        "base": {
            "type": "obstore",
            "url": f"s3://{counted_s3.new_bucket()}/base",
            "config": {"endpoint": counted_s3.endpoint, "region": "us-east-1"},
        },
    }
    store = ShardedStore.from_config(spec, read_only=True)
    inner = store._given[0].store  # type: ignore[attr-defined]
    assert inner.client_options["timeout"] == "30s"
    assert inner.retry_config["max_retries"] == 3
    written = store.get_config()["base"]
    assert "client_options" not in written
    assert "retry_config" not in written
    spec["base"]["client_options"] = {"allow_http": True}  # type: ignore[index]
    given = ShardedStore.from_config(spec).get_config()["base"]["client_options"]
    assert given == {"allow_http": "true"}  # as obstore normalizes it: no default added


def test_retrying_retries_transient_failures_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from shardedstore.backends.timeouts import resolve_retries, retrying

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("dropped")
        return "ok"

    assert asyncio.run(retrying(flaky, "test")) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectionResetError):
        asyncio.run(retrying(flaky, "test", retries=1))
    assert len(calls) == 2

    async def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        asyncio.run(retrying(missing, "test"))
    assert len(calls) == 1
    monkeypatch.setenv("SHARDEDSTORE_RETRIES", "x")
    with pytest.raises(ValueError, match="SHARDEDSTORE_RETRIES"):
        resolve_retries()
    with pytest.raises(ValueError, match="retries"):
        resolve_retries(-1)


def test_obstore_directory_shards_are_cached(
    counted_s3: CountedS3, directory_layout: Any, tmp_path: Path
) -> None:
    url, config, values = directory_layout
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    options = {
        "config": {"endpoint": counted_s3.endpoint, "region": "us-east-1"},
        "client_options": {"allow_http": True},
    }
    config = {
        **config,
        "base": {"type": "obstore", "url": f"s3://{bucket}/{prefix}/base.zarr", **options},
        "array_shards": {
            "temp": {
                "dims": 1,
                "store": {
                    "type": "obstore",
                    "url": f"s3://{bucket}/{prefix}/t/{{chunk}}.zarr",
                    **options,
                },
            }
        },
    }
    store = open_layout(url, config, {"dir": str(tmp_path / "cache")})
    assert isinstance(store._shard_reader("temp", "0"), CachedStore)
    counted_s3.requests.clear()
    np.testing.assert_array_equal(read_all(store, len(values)), values)
    assert shard_requests(counted_s3, "GET") == len(values) * 4
    counted_s3.requests.clear()
    np.testing.assert_array_equal(
        read_all(open_layout(url, config, {"dir": str(tmp_path / "cache")}), len(values)), values
    )
    assert shard_requests(counted_s3, "GET") == 0  # listed again (ETags), nothing fetched


def test_one_fetch_per_entry_and_a_cancelled_fetch_is_taken_over() -> None:
    import asyncio

    engine = cache_engine(ShardCache(max_bytes=1000, read_ahead=1))  # a setting of its own
    calls: list[int] = []

    async def slow_fetch() -> bytes:
        calls.append(1)
        await asyncio.sleep(0.05)
        return b"data"

    async def together() -> list[bytes | None]:
        entry = engine.entry("test", "together", "v1")
        return list(await asyncio.gather(*(engine.fetch(entry, slow_fetch) for _ in range(5))))

    assert asyncio.run(together()) == [b"data"] * 5
    assert len(calls) == 1  # five readers, one request

    async def taken_over() -> bytes | None:
        entry = engine.entry("test", "taken over", "v1")
        ahead = asyncio.ensure_future(engine.fetch(entry, slow_fetch))  # read-ahead...
        await asyncio.sleep(0.01)
        reader = asyncio.ensure_future(engine.fetch(entry, slow_fetch))  # ...a reader waits
        await asyncio.sleep(0.01)
        ahead.cancel()  # close() stops the read-ahead: the reader fetches itself
        return await reader

    calls.clear()
    assert asyncio.run(taken_over()) == b"data"
    assert len(calls) == 2


def test_info_and_validate_read_zip_url_layouts(
    counted_s3: CountedS3, zip_layout: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shardedstore.cli import main

    url, config, _ = zip_layout
    absolute = open_layout(url, config, {"max_bytes": 1 << 24}).get_config()
    (tmp_path / "layout.json").write_text(json.dumps(absolute))
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "layout.json")]) == 0
    assert main(["info", str(tmp_path / "layout.json")]) == 0
    out = capsys.readouterr().out
    assert "valid (every shard reachable" in out
    assert "6 shard(s) on 1 dim(s)" in out
    assert "24" in out
