"""The shard cache under faults: changed objects, damaged entries, tight bounds, a cache
that cannot be written, dead readers' leftovers, read-ahead at the array's end.

Real components throughout: moto's S3 server or a plain HTTP server on 127.0.0.1,
real zip files, real cache directories, real processes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
import zarr

from shardedstore import ShardCache, ShardedStore
from shardedstore.backends.cache import cache_engine
from tests._httpserver import HttpFiles, http_files, set_mtime
from tests._s3counter import CountedS3, build_layout, counted_s3

__all__ = ["counted_s3", "http_files"]


def _fs(s3: CountedS3) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3.endpoint}, skip_instance_cache=True)


def _open(url: str, config: dict[str, Any], cache: dict[str, Any]) -> ShardedStore:
    return ShardedStore.from_config({**config, "cache": cache}, base_path=url, read_only=True)


def _step(store: ShardedStore, t: int) -> np.ndarray:
    return np.asarray(zarr.open_array(store, path="temp", mode="r")[t])


def _reordered(data: bytes) -> bytes:
    """The same zip with its members in reverse order behind a padding member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        target.writestr("padding", b"\0" * 1000)
        for info in reversed(source.infolist()):
            target.writestr(info.filename, source.read(info.filename))
    return out.getvalue()


def _cache_files(directory: Path) -> list[Path]:
    root = directory / "shardedstore-cache-v1"
    return sorted(p for p in root.iterdir() if p.is_file())


@pytest.mark.parametrize("on_disk", [False, True])
def test_a_replaced_zip_is_never_read_with_its_old_member_table(
    counted_s3: CountedS3, tmp_path: Path, on_disk: bool
) -> None:
    """Item 2: evicted, replaced by a zip of other order, read again by the same store."""
    url, config, values = build_layout(tmp_path / "a", counted_s3, "zip", 3)
    size = _fs(counted_s3).size(f"{url}/t/1.zarr.zip")
    cache: dict[str, Any] = {"max_bytes": int(1.5 * size)}
    if on_disk:
        cache["dir"] = str(tmp_path / "cache")
    store = _open(url, config, cache)
    np.testing.assert_array_equal(_step(store, 1), values[1])
    for t in (0, 2):  # the bound holds one zip: shard 1 is evicted
        np.testing.assert_array_equal(_step(store, t), values[t])
    # Another writer replaces shard 1: other values, members in another order.
    other_url, _, other = build_layout(tmp_path / "b", counted_s3, "zip", 3, seed=99)
    replacement = _reordered(_fs(counted_s3).cat_file(f"{other_url}/t/1.zarr.zip"))
    _fs(counted_s3).pipe_file(f"{url}/t/1.zarr.zip", replacement)
    np.testing.assert_array_equal(_step(store, 1), other[1])


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("kind", ["zip", "directory"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_cache_entry_is_dropped_and_fetched_again(
    counted_s3: CountedS3, tmp_path: Path, kind: str, compressed: bool, damage: str
) -> None:
    """Item 3: every cache file damaged; a new store reads the right values."""
    url, config, values = build_layout(tmp_path / "l", counted_s3, kind, 2, compressed=compressed)
    cache = {"dir": str(tmp_path / "cache")}
    first = _open(url, config, cache)
    for t in range(2):
        np.testing.assert_array_equal(_step(first, t), values[t])
    files = _cache_files(tmp_path / "cache")
    assert files
    for path in files:
        data = bytearray(path.read_bytes())
        if damage == "flip":
            # Inside what is read: a chunk member of a zip (not its own zarr.json, which
            # a layout never reads), else the middle of the entry.
            start = max(0, len(data) // 2 - 32)
            if data[:2] == b"PK":
                with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
                    info = archive.getinfo("c/0/0")
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
            for i in range(start, min(len(data), start + 64)):
                data[i] ^= 0xFF
        elif damage == "truncate":
            data = data[: len(data) // 2]
        else:
            data = bytearray()
        path.write_bytes(bytes(data))
    counted_s3.requests.clear()
    again = _open(url, config, cache)
    for t in range(2):
        np.testing.assert_array_equal(_step(again, t), values[t])
    assert counted_s3.requests.count("GET", "/t/") >= 1  # fetched again
    # Healed: a third store reads from the cache without fetching.
    counted_s3.requests.clear()
    third = _open(url, config, cache)
    for t in range(2):
        np.testing.assert_array_equal(_step(third, t), values[t])
    assert counted_s3.requests.count("GET", "/t/") == 0


def _http_zip_layout(files: HttpFiles, tmp_path: Path, steps: int) -> tuple[dict[str, Any], Any]:
    """A zip layout written locally into the HTTP server's folder (same-size zips)."""
    from zarr.storage import LocalStore

    from shardedstore import array_shard_template_store

    root = files.root
    factory = array_shard_template_store(
        {"type": "zip", "path": str(root / "t" / "{chunk}.zarr.zip")}
    )
    store = ShardedStore(LocalStore(root / "base.zarr"), {}, {"temp": (1, factory)})
    values = np.random.default_rng(0).random((steps, 16, 16)).astype("f4")
    array = zarr.create_array(
        store, name="temp", shape=values.shape, chunks=(1, 8, 8), dtype="f4", compressors=None
    )
    array[:] = values
    store.close()
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "fsspec", "url": f"{files.url}/base.zarr"},
        "array_shards": {
            "temp": {
                "dims": 1,
                "store": {"type": "zip_url", "url": f"{files.url}/t/{{chunk}}.zarr.zip"},
            }
        },
    }
    return config, values


_READ_STEP = """
import json, sys
import numpy as np, zarr
from shardedstore import ShardedStore
config, t = json.loads(sys.argv[1]), int(sys.argv[2])
store = ShardedStore.from_config(config, read_only=True)
print(json.dumps(np.asarray(zarr.open_array(store, path="temp", mode="r")[t]).tolist()))
"""


def _read_in_process(config: dict[str, Any], t: int) -> np.ndarray:
    result = subprocess.run(
        [sys.executable, "-c", _READ_STEP, json.dumps(config), str(t)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return np.array(json.loads(result.stdout), dtype="f4")


def test_last_modified_alone_keeps_entries_fresh(http_files: HttpFiles, tmp_path: Path) -> None:
    """Item 4: no ETag, Last-Modified only; replaced by a zip of the same size."""
    config, values = _http_zip_layout(http_files, tmp_path, 3)
    shard = http_files.root / "t" / "1.zarr.zip"
    set_mtime(shard, 1_700_000_000)
    config = {**config, "cache": {"dir": str(tmp_path / "cache")}}
    np.testing.assert_array_equal(_read_in_process(config, 1), values[1])
    replacement = (http_files.root / "t" / "2.zarr.zip").read_bytes()
    assert len(replacement) == shard.stat().st_size
    shard.write_bytes(replacement)
    set_mtime(shard, 1_700_000_100)
    np.testing.assert_array_equal(_read_in_process(config, 1), values[2])


def test_no_validator_at_all_is_never_shared(http_files: HttpFiles, tmp_path: Path) -> None:
    """Neither ETag nor Last-Modified: entries are private to the store that fetched them."""
    http_files.last_modified = False
    config, values = _http_zip_layout(http_files, tmp_path, 3)
    config = {**config, "cache": {"dir": str(tmp_path / "cache")}}
    np.testing.assert_array_equal(_read_in_process(config, 1), values[1])
    shard = http_files.root / "t" / "1.zarr.zip"
    shard.write_bytes((http_files.root / "t" / "2.zarr.zip").read_bytes())
    np.testing.assert_array_equal(_read_in_process(config, 1), values[2])


@pytest.mark.parametrize("on_disk", [True, False])
@pytest.mark.parametrize("shards", [0.5, None])
def test_read_ahead_never_evicts_what_is_read(
    counted_s3: CountedS3, tmp_path: Path, on_disk: bool, shards: float | None
) -> None:
    """Item 5: a bound of k + 1 zips (the documented minimum), and one below one zip."""
    depth = 2
    url, config, values = build_layout(tmp_path / "l", counted_s3, "zip", 8)
    size = _fs(counted_s3).size(f"{url}/t/0.zarr.zip")
    bound = int((shards if shards is not None else depth + 1) * size)
    cache: dict[str, Any] = {"max_bytes": bound, "read_ahead": depth}
    if on_disk:
        cache["dir"] = str(tmp_path / "cache")
    for _ in range(2):
        store = _open(url, config, cache)
        array = zarr.open_array(store, path="temp", mode="r")
        for t in range(len(values)):
            np.testing.assert_array_equal(array[t], values[t])
        store.close()


_READ_ALL = """
import json, sys, warnings
import numpy as np, zarr
from shardedstore import ShardedStore
config = json.loads(sys.argv[1])
if len(sys.argv) > 2:  # from here on no file may grow past this many bytes
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    store = ShardedStore.from_config(config, read_only=True)
    array = zarr.open_array(store, path="temp", mode="r")
    data = np.stack([array[t] for t in range(array.shape[0])])
print(json.dumps({"sum": float(data.astype("f8").sum()),
                  "warnings": [str(w.message) for w in caught]}))
"""


def _drop_capabilities() -> None:
    """In a child before exec: no capabilities, so root too obeys file permissions.

    (PR_CAPBSET_DROP for every capability; a user without them is refused, and needs
    no dropping.)
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(64):
        libc.prctl(24, capability, 0, 0, 0)


def _read_all_elsewhere(config: dict[str, Any], *extra: str, unprivileged: bool = False) -> Any:
    result = subprocess.run(
        [sys.executable, "-c", _READ_ALL, json.dumps(config), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_drop_capabilities if unprivileged else None,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "never awaited" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def test_a_cache_directory_that_cannot_be_written_is_bypassed(
    counted_s3: CountedS3, tmp_path: Path
) -> None:
    """Item 6: a read-only cache directory (read without capabilities: root too obeys)."""
    url, config, values = build_layout(tmp_path / "l", counted_s3, "zip", 3)
    directory = tmp_path / "cache"
    (directory / "shardedstore-cache-v1" / "tmp").mkdir(parents=True)
    for path in (
        directory,
        directory / "shardedstore-cache-v1",
        directory / "shardedstore-cache-v1" / "tmp",
    ):
        path.chmod(0o555)
    full = ShardedStore.from_config(config, base_path=url, read_only=True).get_config()
    full["cache"] = {"dir": str(directory)}
    out = _read_all_elsewhere(full, unprivileged=True)
    assert out["sum"] == pytest.approx(float(values.astype("f8").sum()))
    cannot = [w for w in out["warnings"] if "cache" in w and str(directory) in w]
    assert len(cannot) == 1, out["warnings"]


def test_a_full_disk_under_the_cache_is_bypassed(counted_s3: CountedS3, tmp_path: Path) -> None:
    """Item 6: writing a cache entry fails (EFBIG, as on a full disk): reads go on."""
    url, config, values = build_layout(tmp_path / "l", counted_s3, "zip", 3)
    full = ShardedStore.from_config(config, base_path=url, read_only=True).get_config()
    full["cache"] = {"dir": str(tmp_path / "cache")}
    out = _read_all_elsewhere(full, "100")
    assert out["sum"] == pytest.approx(float(values.astype("f8").sum()))
    assert len([w for w in out["warnings"] if "cache" in w]) == 1, out["warnings"]


def test_leftovers_of_dead_readers_are_removed_and_counted(tmp_path: Path) -> None:
    """Item 6: a killed reader's partial entries do not stay forever."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    directory = tmp_path / "cache"
    setting = ShardCache(dir=str(directory), max_bytes=10_000)
    cache_engine(setting)
    parts = directory / "shardedstore-cache-v1" / "tmp"
    import socket

    mine = parts / f"{socket.gethostname()}-{pid}-{'a' * 32}.part"
    mine.write_bytes(b"x" * 4000)
    old = parts / f"{'b' * 32}.part"  # an older release's name: removed once old
    old.write_bytes(b"y" * 4000)
    set_mtime(old, time.time() - 7200)
    live = parts / f"{socket.gethostname()}-{os.getpid()}-{'c' * 32}.part"
    live.write_bytes(b"z" * 100)
    engine = cache_engine(ShardCache(dir=str(directory), max_bytes=10_001))  # a new engine
    assert engine.size >= 100  # a live writer's part counts
    engine.put(engine.entry("n", "k", "v"), b"data")
    assert not mine.exists()
    assert not old.exists()
    assert live.exists()
    assert engine.stats.leftovers_removed == 2


def test_read_ahead_stays_inside_the_array(counted_s3: CountedS3, tmp_path: Path) -> None:
    """Item 7: no request for shards past the end; a warm pass costs no request."""
    url, config, values = build_layout(tmp_path / "l", counted_s3, "zip", 6)
    store = _open(url, config, {"dir": str(tmp_path / "cache"), "read_ahead": 4})
    array = zarr.open_array(store, path="temp", mode="r")
    counted_s3.requests.clear()
    for t in range(6):
        np.testing.assert_array_equal(array[t], values[t])
    deadline = time.monotonic() + 20
    assert store._read_ahead is not None
    while store._read_ahead.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    for t in range(6, 12):
        assert counted_s3.requests.count(contains=f"/t/{t}.zarr.zip") == 0, t
    counted_s3.requests.clear()
    for t in range(6):
        np.testing.assert_array_equal(array[t], values[t])
    assert counted_s3.requests.count() == 0
    store.close()


@pytest.mark.parametrize("etag", [False, True])
def test_a_warm_pass_over_http_asks_for_no_shard(
    http_files: HttpFiles, tmp_path: Path, etag: bool
) -> None:
    """Issue 21: zip shards at plain HTTP URLs, read in order with read-ahead 4, then
    again: the first pass asks for no shard past the array's end, the second pass (every
    shard in the cache) for no shard at all: neither a HEAD nor a GET."""
    http_files.etag = etag
    config, values = _http_zip_layout(http_files, tmp_path, 6)
    store = _open(http_files.url, config, {"dir": str(tmp_path / "cache"), "read_ahead": 4})
    array = zarr.open_array(store, path="temp", mode="r")
    for t in range(6):
        np.testing.assert_array_equal(array[t], values[t])
    deadline = time.monotonic() + 20
    assert store._read_ahead is not None
    while store._read_ahead.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    for t in range(6):  # each shard once: one HEAD, one GET
        assert http_files.count("HEAD", f"/t/{t}.zarr.zip") == 1, t
        assert http_files.count("GET", f"/t/{t}.zarr.zip") == 1, t
    assert http_files.count("HEAD", ".zarr.zip") == 6  # none past the end
    http_files.log.clear()
    for t in range(6):
        np.testing.assert_array_equal(array[t], values[t])
    assert [entry for entry in http_files.log if ".zarr.zip" in entry[1]] == []
    store.close()


def test_a_failed_fetch_ahead_is_not_retried_on_every_read(
    counted_s3: CountedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDEDSTORE_RETRIES", "0")
    url, config, values = build_layout(tmp_path / "l", counted_s3, "zip", 8)
    store = _open(url, config, {"dir": str(tmp_path / "cache"), "read_ahead": 4})
    array = zarr.open_array(store, path="temp", mode="r")
    requests = counted_s3.requests
    requests.clear()
    requests.failing = lambda method, path: path.endswith("/t/5.zarr.zip")
    requests.failures = 1000
    try:
        asked = None
        for t in range(5):
            np.testing.assert_array_equal(array[t], values[t])
            assert store._read_ahead is not None
            deadline = time.monotonic() + 20
            while store._read_ahead.in_flight and time.monotonic() < deadline:
                time.sleep(0.02)
            if t == 1:  # 0 -> 1: shards 2 to 5 fetched ahead, and 5 failed
                asked = requests.count(contains="/t/5.zarr.zip")
                assert asked >= 1
        # Reads 2, 3 and 4 each look ahead past 5 again: no new request for it.
        assert requests.count(contains="/t/5.zarr.zip") == asked
    finally:
        requests.failures = 0
    store.close()


_EXIT_WHILE_AHEAD = """
import json, sys
import zarr
from shardedstore import ShardedStore
url, config = sys.argv[1], json.loads(sys.argv[2])
store = ShardedStore.from_config(config, base_path=url, read_only=True)
array = zarr.open_array(store, path="temp", mode="r")
array[0]; array[1]
print("read", flush=True)
if sys.argv[3] == "drop":  # the store goes while its shards are fetched ahead
    import gc
    del array, store
    gc.collect()
"""


@pytest.mark.parametrize("then", ["exit", "drop"])
def test_exit_while_reading_ahead_is_quiet(
    counted_s3: CountedS3, tmp_path: Path, then: str
) -> None:
    """Item 12: no 'Task was destroyed but it is pending' at exit."""
    url, config, _ = build_layout(tmp_path / "l", counted_s3, "zip", 8)
    counted_s3.requests.slow = lambda method, path: method == "GET" and "/t/" in path
    counted_s3.requests.delay = 0.5
    try:
        full = {**config, "cache": {"dir": str(tmp_path / "cache"), "read_ahead": 4}}
        result = subprocess.run(
            [sys.executable, "-c", _EXIT_WHILE_AHEAD, url, json.dumps(full), then],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        counted_s3.requests.delay = 0.0
    assert result.returncode == 0, result.stderr
    assert "read" in result.stdout
    assert "Task was destroyed" not in result.stderr, result.stderr
    assert "never awaited" not in result.stderr, result.stderr


def test_a_changed_object_is_never_cached_under_its_old_version(
    counted_s3: CountedS3, tmp_path: Path
) -> None:
    """A store that opened a zip (X), read it from the cache, then downloads it again
    after it changed (Y) and was evicted: Y is never kept under X's name, so a new
    store, after X is restored, reads X."""
    url, config, values = build_layout(tmp_path / "a", counted_s3, "zip", 4, compressed=False)
    other_url, _, other = build_layout(
        tmp_path / "b", counted_s3, "zip", 4, compressed=False, seed=7
    )
    fs = _fs(counted_s3)
    x, y = fs.cat_file(f"{url}/t/0.zarr.zip"), fs.cat_file(f"{other_url}/t/0.zarr.zip")
    assert len(x) == len(y)
    cache = {"dir": str(tmp_path / "cache"), "max_bytes": int(2.5 * len(x))}
    np.testing.assert_array_equal(_step(_open(url, config, cache), 0), values[0])
    store = _open(url, config, cache)
    array = zarr.open_array(store, path="temp", mode="r")
    np.testing.assert_array_equal(array[0], values[0])  # a HEAD, then a cache hit
    fs.pipe_file(f"{url}/t/0.zarr.zip", y)
    for t in (1, 2, 3):  # the bound evicts step 0
        np.testing.assert_array_equal(array[t], values[t])
    np.testing.assert_array_equal(array[0], other[0])  # asked again, then fetched: Y
    fs.pipe_file(f"{url}/t/0.zarr.zip", x)  # X restored
    np.testing.assert_array_equal(_step(_open(url, config, cache), 0), values[0])


def test_a_changed_chunk_object_is_never_cached_under_its_old_version(
    counted_s3: CountedS3, tmp_path: Path
) -> None:
    """The same for directory shards: a store holds a listing (X); the chunk changes
    (Y), and its entry is fetched again: not under X's name."""
    url, config, values = build_layout(tmp_path / "a", counted_s3, "directory", 2)
    fs = _fs(counted_s3)
    key = f"{url}/t/0.zarr/c/0/0"
    x = fs.cat_file(key)
    cache = {"dir": str(tmp_path / "cache")}
    store = _open(url, config, cache)
    array = zarr.open_array(store, path="temp", mode="r")
    np.testing.assert_array_equal(array[1], values[1])  # lists shard... and shard 1 only
    reader = _open(url, config, cache)
    shard = reader._shard_reader("temp", "0")
    assert zarr.core.sync.sync(shard.get("c/0/1")) is not None  # listed: X's ETag for c/0/0
    fs.pipe_file(key, fs.cat_file(f"{url}/t/1.zarr/c/0/0"))  # Y
    got = zarr.core.sync.sync(shard.get("c/0/0"))
    assert got is not None
    assert got.to_bytes() == fs.cat_file(key)  # the listing was stale: asked again
    fs.pipe_file(key, x)  # X restored
    fresh = _open(url, config, cache)
    np.testing.assert_array_equal(_step(fresh, 0), values[0])


def test_a_damaged_central_directory_never_reads_as_missing(
    counted_s3: CountedS3, tmp_path: Path
) -> None:
    """One member name flipped in the central directory of every cached zip: chunks do
    not read as the fill value; the entries are fetched again."""
    url, config, values = build_layout(tmp_path / "a", counted_s3, "zip", 2)
    cache = {"dir": str(tmp_path / "cache")}
    for t in range(2):
        np.testing.assert_array_equal(_step(_open(url, config, cache), t), values[t])
    damaged = 0
    for path in _cache_files(tmp_path / "cache"):
        data = bytearray(path.read_bytes())
        at = data.find(b"c/1/0", max(0, data.find(b"PK\x01\x02")))
        if data[:2] == b"PK" and at > 0:
            data[at + 4] ^= 0x01  # 'c/1/0' -> 'c/1/1', in the central directory only
            path.write_bytes(bytes(data))
            damaged += 1
    assert damaged == 2
    for t in range(2):
        np.testing.assert_array_equal(_step(_open(url, config, cache), t), values[t])


def test_a_directory_where_an_entry_goes_is_not_read(counted_s3: CountedS3, tmp_path: Path) -> None:
    url, config, values = build_layout(tmp_path / "a", counted_s3, "zip", 1)
    cache = {"dir": str(tmp_path / "cache")}
    np.testing.assert_array_equal(_step(_open(url, config, cache), 0), values[0])
    for path in _cache_files(tmp_path / "cache"):
        path.unlink()
        path.mkdir()  # empty: removed and fetched again
    np.testing.assert_array_equal(_step(_open(url, config, cache), 0), values[0])
    np.testing.assert_array_equal(_step(_open(url, config, cache), 0), values[0])


@pytest.mark.parametrize("on_disk", [True, False])
def test_each_pass_costs_known_requests_and_one_parse_per_zip(
    http_files: HttpFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_disk: bool
) -> None:
    """Issue 21, counted at a real HTTP server: a cold pass costs one HEAD and one GET per
    zip and parses each zip once (the copy just kept, not the downloaded bytes too); a
    warm pass costs no request for a zip and no parse; a zip replaced on the server
    (same size, new ETag) is read new by the next store, from the same cache."""
    import shardedstore.backends.remotezip as remotezip

    http_files.etag = True
    steps = 4
    config, values = _http_zip_layout(http_files, tmp_path, steps)
    parses: list[object] = []
    parse = remotezip._parse

    def counted(held: Any) -> Any:
        parses.append(held)
        return parse(held)

    monkeypatch.setattr(remotezip, "_parse", counted)
    cache = {"dir": str(tmp_path / "cache")} if on_disk else {"max_bytes": 1 << 24}
    store = _open(http_files.url, config, cache)
    array = zarr.open_array(store, path="temp", mode="r")
    http_files.log.clear()
    for t in range(steps):
        np.testing.assert_array_equal(array[t], values[t])
    zips = [entry for entry in http_files.log if ".zarr.zip" in entry[1]]
    assert sorted(zips) == sorted(
        (method, f"/t/{t}.zarr.zip") for t in range(steps) for method in ("HEAD", "GET")
    )
    assert len(parses) == steps
    http_files.log.clear()
    parses.clear()
    for t in range(steps):  # warm
        np.testing.assert_array_equal(array[t], values[t])
    assert http_files.log == []
    assert parses == []
    shard = http_files.root / "t" / "1.zarr.zip"
    replacement = (http_files.root / "t" / "2.zarr.zip").read_bytes()
    assert len(replacement) == shard.stat().st_size
    shard.write_bytes(replacement)
    again = zarr.open_array(_open(http_files.url, config, cache), path="temp", mode="r")
    np.testing.assert_array_equal(again[1], values[2])
    np.testing.assert_array_equal(again[0], values[0])
    store.close()
