"""map_shards and the built-in copies: exact, atomic, resumable, parallel, bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.abc.store import Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore, WrapperStore, ZipStore

import shardedstore
from shardedstore import (
    ArrayShardDirectoryFactory,
    ArrayShardStoresFactory,
    ArrayShardTemplateFactory,
    ConfigError,
    MapShardsError,
    ShardedStore,
    array_shard_directory_store,
    to_directory_store_with_prefix,
    to_url_with_prefix,
    to_zip_store_with_prefix,
)
from shardedstore.cli.demo import build_demo_tree
from shardedstore.report.info import checksums
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.filterwarnings("ignore:Object at .* is not recognized"),
    pytest.mark.filterwarnings("ignore:Duplicate name"),
]

TEMPERATURE = "simulation/fine/temperature"


def _source(root: Path) -> ShardedStore:
    """The demo tree over a base, a directory mount, a zip mount and 12 array shards."""
    store = ShardedStore(
        LocalStore(root / "base.zarr"),
        {
            "people": LocalStore(root / "people.zarr"),
            "simulation/coarse": LocalStore(root / "coarse.zarr"),
        },
        {TEMPERATURE: (1, array_shard_directory_store(root / "t"))},
    )
    build_demo_tree().to_zarr(store, zarr_format=3, consolidated=False)
    return store


@pytest.fixture
def source(tmp_path: Path) -> ShardedStore:
    return _source(tmp_path / "src")


def _tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: sha256 and mtime, to prove nothing changed."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _physical(store: ShardedStore) -> dict[tuple[str, str | None], dict[str, tuple[int, int]]]:
    """Per shard (path, chunk index): key -> (size, crc32), as stored physically."""
    return {(s.path, s.chunk_index): checksums(s.store) for s in store.shards()}


def _unzip_test(path: Path) -> None:
    unzip = shutil.which("unzip")
    assert unzip is not None, "the unzip command is needed (Debian package unzip)"
    result = subprocess.run([unzip, "-t", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout


# ------------------------------------------------------------------ map_shards


class _Recorder:
    """Copies each shard into a MemoryStore and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, bool]] = []

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        self.calls.append((shard_path, chunk_index, store.read_only))
        copy = MemoryStore()
        for key, (_, _) in checksums(store).items():
            value = zarr.core.sync.sync(store.get(key, zarr.core.buffer.default_buffer_prototype()))
            assert value is not None
            copy._store_dict[key] = value
        return copy


def test_func_is_called_for_every_shard_with_read_only_views(
    source: ShardedStore, tmp_path: Path
) -> None:
    before = _tree_digest(tmp_path / "src")
    recorder = _Recorder()
    mapped = source.map_shards(recorder)
    assert sorted(recorder.calls, key=lambda c: (c[0], int(c[1] or -1))) == [
        ("", None, True),
        ("people", None, True),
        ("simulation/coarse", None, True),
        *[(TEMPERATURE, str(i), True) for i in range(12)],
    ]
    assert _tree_digest(tmp_path / "src") == before  # the source is never modified
    assert isinstance(mapped.array_shards[TEMPERATURE][1], ArrayShardStoresFactory)
    with xr.open_datatree(mapped, engine="zarr", consolidated=False) as back:
        assert back.identical(build_demo_tree())
    with pytest.raises(ConfigError, match="MemoryStore cannot be written"):
        mapped.get_config()


def test_func_must_return_a_store(source: ShardedStore) -> None:
    with pytest.raises(MapShardsError, match=r"func returned str .* it must return a zarr store"):
        source.map_shards(lambda store, path, index: "nope")  # type: ignore[arg-type,return-value]


# ------------------------------------------------------------------------ zips


def test_zip_conversion_is_exact(source: ShardedStore, tmp_path: Path) -> None:
    before = _tree_digest(tmp_path / "src")
    prefix = tmp_path / "out" / "ds"
    zipped = source.map_shards(to_zip_store_with_prefix(prefix), progress=False)
    assert _tree_digest(tmp_path / "src") == before
    outputs = sorted(
        str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.zip")
    )
    assert outputs == sorted(
        ["ds.zarr.zip", "ds/people.zarr.zip", "ds/simulation/coarse.zarr.zip"]
        + [f"ds/simulation/fine/temperature/{i}.zarr.zip" for i in range(12)]
    )
    assert not list((tmp_path / "out").rglob("*.partial-*"))
    # Every key of every shard, byte for byte.
    assert _physical(zipped) == _physical(source)
    assert checksums(zipped) == checksums(source)
    for path in (tmp_path / "out").rglob("*.zip"):
        _unzip_test(path)
        with zipfile.ZipFile(path) as zf:
            assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}
    alone = zarr.open_array(ZipStore(prefix / "simulation/fine/temperature/7.zarr.zip"), mode="r")
    np.testing.assert_array_equal(alone[...], build_demo_tree()[TEMPERATURE].values[7])
    config = zipped.get_config(relative_to=tmp_path / "out")
    assert config["array_shards"][TEMPERATURE]["store"] == {
        "type": "zip",
        "path": "ds/simulation/fine/temperature/{chunk}.zarr.zip",
    }
    assert "shards" not in config["array_shards"][TEMPERATURE]
    with xr.open_datatree(zipped, engine="zarr", consolidated=False) as back:
        assert back.identical(build_demo_tree())


def test_zip_layout_keeps_producing_zips(source: ShardedStore, tmp_path: Path) -> None:
    zipped = source.map_shards(to_zip_store_with_prefix(tmp_path / "z"), progress=False)
    factory = zipped.array_shards[TEMPERATURE][1]
    assert isinstance(factory, ArrayShardTemplateFactory)
    array = zarr.open_array(zipped, path=TEMPERATURE)
    array.resize((13, 16, 32))
    array[12] = np.full((16, 32), 7, dtype="float32")
    zipped.close()
    new = tmp_path / "z" / "simulation/fine/temperature/12.zarr.zip"
    _unzip_test(new)
    reopened = ShardedStore.from_config(zipped.get_config(), read_only=True)
    assert zarr.open_array(reopened, path=TEMPERATURE)[12, 0, 0] == 7
    np.testing.assert_array_equal(
        zarr.open_array(reopened, path=TEMPERATURE)[:12], build_demo_tree()[TEMPERATURE].values
    )


def test_zip_compression_and_zip64(
    source: ShardedStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lower zipfile's ZIP64 threshold so that every entry and the archive need ZIP64
    # records, as a >4 GiB shard would.
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    zipped = source.map_shards(
        to_zip_store_with_prefix(tmp_path / "z", compression="deflated", compresslevel=9),
        progress=False,
    )
    monkeypatch.undo()
    path = tmp_path / "z" / "simulation/fine/temperature/0.zarr.zip"
    _unzip_test(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
        big = [info for info in infos if info.file_size > 100]
        assert big
        assert all(info.extra[:2] == b"\x01\x00" for info in big)  # a ZIP64 extra field
    assert checksums(zipped) == checksums(source)
    with pytest.raises(ValueError, match="unknown zip compression 'zstd'"):
        to_zip_store_with_prefix("x", compression="zstd")  # type: ignore[arg-type]


# ----------------------------------------------------------------- directories


def test_directory_conversion_is_exact(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    zipped = source.map_shards(to_zip_store_with_prefix(tmp_path / "z"), progress=False)
    back = zipped.map_shards(to_directory_store_with_prefix(tmp_path / "d"), progress=False)
    assert _physical(back) == _physical(source)
    assert back.array_shards[TEMPERATURE][1] == ArrayShardDirectoryFactory(
        str(tmp_path / "d" / TEMPERATURE)
    )
    assert (tmp_path / "d" / "simulation" / "coarse.zarr" / "zarr.json").is_file()
    assert (tmp_path / "d.zarr" / "zarr.json").is_file()
    with xr.open_datatree(back, engine="zarr", consolidated=False) as tree:
        assert tree.identical(build_demo_tree())


# ------------------------------------------------------------------------ URLs


def test_url_conversion_to_s3(source: ShardedStore, s3_server: S3Server, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/ds"
    copied = source.map_shards(
        to_url_with_prefix(url, storage_options=s3_server.storage_options), progress=False
    )
    assert checksums(copied) == checksums(source)
    assert _physical(copied) == _physical(source)
    config = copied.get_config()
    assert config["base"]["url"] == f"{url}.zarr"
    assert (
        config["array_shards"][TEMPERATURE]["store"]["url"] == f"{url}/{TEMPERATURE}/{{chunk}}.zarr"
    )
    reopened = ShardedStore.from_config(json.loads(json.dumps(config)), read_only=True)
    with xr.open_datatree(reopened, engine="zarr", consolidated=False) as back:
        assert back.identical(build_demo_tree())
    # Re-running finds every shard complete and copies nothing again.
    again = source.map_shards(
        to_url_with_prefix(url, storage_options=s3_server.storage_options), progress=False
    )
    assert again.get_config() == config


def test_url_conversion_to_a_local_file_url(source: ShardedStore, tmp_path: Path) -> None:
    copied = source.map_shards(to_url_with_prefix(f"file://{tmp_path}/u"), progress=False)
    assert _physical(copied) == _physical(source)
    assert not list(tmp_path.rglob("*.partial-*"))


# ---------------------------------------------------------- failures, resuming


class _FailingSource(WrapperStore[Store]):
    """A real shard store whose reads fail after ``after`` keys (or exit the process)."""

    def __init__(self, store: Store, after: int, crash: bool = False) -> None:
        super().__init__(store)
        self.after = after
        self.crash = crash
        self.reads = 0

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: Any = None
    ) -> Buffer | None:
        self.reads += 1
        if self.reads > self.after:
            if self.crash:
                os._exit(17)  # a killed worker: no cleanup runs
            raise OSError(f"injected read failure at key {key!r}")
        return await self._store.get(key, prototype, byte_range)


class _FailOn:
    """A built-in copy that fails (or crashes) part-way through one shard."""

    def __init__(self, inner: Any, chunk_index: str, crash: bool = False) -> None:
        self.inner = inner
        self.chunk_index = chunk_index
        self.crash = crash

    def __getattr__(self, name: str) -> Any:
        # The built-in's protocol (lock_output, remove_leftovers, ...), as the real run has.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        if chunk_index == self.chunk_index:
            store = _FailingSource(store, after=2, crash=self.crash)
        result: Store = self.inner(store, shard_path, chunk_index)
        return result


def test_failure_names_the_shard_and_a_rerun_finishes(source: ShardedStore, tmp_path: Path) -> None:
    prefix = tmp_path / "z"
    func = to_zip_store_with_prefix(prefix)
    with pytest.raises(
        MapShardsError,
        match=r"array shard 'simulation/fine/temperature' chunk 5 failed: OSError: injected",
    ) as info:
        source.map_shards(_FailOn(func, "5"), executor=ThreadPoolExecutor(1), progress=False)
    assert info.value.chunk_index == "5"
    assert info.value.shard_path == TEMPERATURE
    failed = prefix / TEMPERATURE / "5.zarr.zip"
    assert not failed.exists()
    assert not list(tmp_path.rglob("*.partial-*"))  # the temporary zip was removed
    finished = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.zarr.zip")}
    assert len(finished) == info.value.finished >= 1
    for path in finished:
        _unzip_test(path)  # finished shards are complete and usable
    zipped = source.map_shards(func, progress=False)
    assert failed.exists()
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in finished.items())  # skipped
    assert _physical(zipped) == _physical(source)


def test_a_crash_leaves_no_partial_shard_behind_a_final_name(tmp_path: Path) -> None:
    _source(tmp_path / "src").save_config(tmp_path / "src.json")
    script = f"""
import shardedstore
from concurrent.futures import ThreadPoolExecutor
from tests.test_transforms import _FailOn
store = shardedstore.open({str(tmp_path / "src.json")!r})
func = _FailOn(shardedstore.to_zip_store_with_prefix({str(tmp_path / "z")!r}), "5", crash=True)
store.map_shards(func, executor=ThreadPoolExecutor(1), progress=False)
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 17, result.stderr
    failed = tmp_path / "z" / TEMPERATURE / "5.zarr.zip"
    assert not failed.exists()
    partials = list((tmp_path / "z" / TEMPERATURE).glob("5.zarr.zip.partial-*"))
    assert len(partials) == 1  # the crash left its temporary file, under a temporary name
    source = shardedstore.open(tmp_path / "src.json")
    zipped = source.map_shards(to_zip_store_with_prefix(tmp_path / "z"), progress=False)
    assert not partials[0].exists()  # cleaned up by the re-run
    _unzip_test(failed)
    assert _physical(zipped) == _physical(source)


def test_an_existing_different_output_is_refused(source: ShardedStore, tmp_path: Path) -> None:
    prefix = tmp_path / "z"
    (prefix / TEMPERATURE).mkdir(parents=True)
    with zipfile.ZipFile(prefix / TEMPERATURE / "3.zarr.zip", "w") as zf:
        zf.writestr("zarr.json", b"{}")
    with pytest.raises(
        MapShardsError,
        match=r"chunk 3 failed: FileExistsError: .*3\.zarr\.zip exists and differs from array "
        r"shard 'simulation/fine/temperature' chunk 3: 'c/0/0' is missing from it; .*remove it",
    ):
        source.map_shards(to_zip_store_with_prefix(prefix), progress=False)


# -------------------------------------------------------------------- parallel


def test_process_pool(source: ShardedStore, tmp_path: Path) -> None:
    with ProcessPoolExecutor(max_workers=2) as pool:
        zipped = source.map_shards(
            to_zip_store_with_prefix(tmp_path / "z"), executor=pool, progress=False
        )
    assert _physical(zipped) == _physical(source)
    for path in (tmp_path / "z").rglob("*.zip"):
        _unzip_test(path)


def test_dask_distributed_cluster_of_processes(source: ShardedStore, tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2
        assert os.getpid() not in pids
        copied = source.map_shards(
            to_directory_store_with_prefix(tmp_path / "d"),
            executor=client.get_executor(),
            progress=False,
        )
    assert _physical(copied) == _physical(source)
    with xr.open_datatree(copied, engine="zarr", consolidated=False) as back:
        assert back.identical(build_demo_tree())


# -------------------------------------------------------------------- progress


def test_progress_bar(
    source: ShardedStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source.map_shards(to_zip_store_with_prefix(tmp_path / "a"), progress=True)
    shown = capsys.readouterr().err
    assert "map_shards" in shown
    assert "15/15" in shown
    source.map_shards(to_zip_store_with_prefix(tmp_path / "b"))  # stderr is not a terminal
    source.map_shards(to_zip_store_with_prefix(tmp_path / "c"), progress=False)
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------- bounded memory

_MEMORY_SCRIPT = """
import sys, shardedstore, shardedstore.shards.transforms

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

if len(sys.argv) > 3:  # how many values to read ahead (to show the test can fail)
    shardedstore.shards.transforms._BATCH = int(sys.argv[3])
store = shardedstore.open(sys.argv[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
store.map_shards(shardedstore.to_zip_store_with_prefix(sys.argv[2]), progress=False)
print(status("VmHWM") - before)
"""


def test_a_shard_bigger_than_the_memory_allowed_converts(tmp_path: Path) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"big": (1, array_shard_directory_store(tmp_path / "s"))}
    )
    array = zarr.create_array(
        store,
        name="big",
        shape=(1, 200, 262_144),
        chunks=(1, 1, 262_144),
        dtype="f4",
        compressors=None,
    )
    rng = np.random.default_rng(0)
    for row in range(0, 200, 20):
        array[0, row : row + 20] = rng.random((20, 262_144), dtype="float32")
    shard_bytes = sum(
        p.stat().st_size for p in (tmp_path / "s" / "0.zarr").rglob("*") if p.is_file()
    )
    assert shard_bytes > 200 * 2**20
    store.save_config(tmp_path / "big.json")
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path / "big.json"), str(tmp_path / "z")],
        capture_output=True,
        text=True,
        check=True,
    )
    growth = int(result.stdout.strip())
    assert growth < 100 * 2**20, (
        f"peak RSS grew by {growth / 2**20:.0f} MiB converting a 200 MiB shard"
    )
    with zipfile.ZipFile(tmp_path / "z" / "big" / "0.zarr.zip") as zf:
        assert sum(info.file_size for info in zf.infolist()) == shard_bytes


# ------------------------------------------------------ many writer processes


def _write_time_step(config: dict[str, Any], step: int) -> int:
    store = ShardedStore.from_config(config)
    array = zarr.open_array(store, path="t", mode="r+")
    array[step] = np.arange(64 * 64, dtype="int32").reshape(64, 64) * (step + 1)
    return os.getpid()


def test_many_processes_write_their_own_time_steps(tmp_path: Path) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"t": (1, array_shard_directory_store(tmp_path / "t"))}
    )
    zarr.create_array(
        store, name="t", shape=(8, 64, 64), chunks=(1, 32, 32), dtype="int32", fill_value=0
    )
    config = json.loads(json.dumps(store.get_config()))
    with ProcessPoolExecutor(max_workers=4) as pool:
        pids = set(pool.map(_write_time_step, [config] * 8, range(8)))
    assert os.getpid() not in pids
    back = zarr.open_array(ShardedStore.from_config(config, read_only=True), path="t")[...]
    expected = np.stack(
        [np.arange(64 * 64, dtype="int32").reshape(64, 64) * (s + 1) for s in range(8)]
    )
    assert back.dtype == expected.dtype
    assert back.tobytes() == expected.tobytes()
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [f"{i}.zarr" for i in range(8)]


def test_two_sharded_dims_name_shards_by_both_indices(tmp_path: Path) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"a/x": (2, array_shard_directory_store(tmp_path / "s"))}
    )
    array = zarr.create_array(
        store, name="a/x", shape=(3, 2, 5), chunks=(1, 1, 5), dtype="i2", compressors=None
    )
    array[...] = np.arange(30, dtype="i2").reshape(3, 2, 5)
    calls: list[str | None] = []

    def record(source: Store, path: str, index: str | None) -> Store:
        calls.append(index)
        return to_zip_store_with_prefix(tmp_path / "z")(source, path, index)

    zipped = store.map_shards(record, executor=ThreadPoolExecutor(1))
    assert sorted(c for c in calls if c is not None) == ["0.0", "0.1", "1.0", "1.1", "2.0", "2.1"]
    assert (tmp_path / "z" / "a" / "x" / "2.1.zarr.zip").is_file()
    assert zarr.open_array(zipped, path="a/x", mode="r")[...].tolist() == array[...].tolist()
    assert _physical(zipped) == _physical(store)


# ------------------------------------------------- only the shard's own keys (issue 9)

SECRET = b"-----BEGIN OPENSSH PRIVATE KEY----- not a real key"


def _outputs_holding(root: Path, needle: bytes) -> list[Path]:
    """Files below ``root`` whose name or bytes contain ``needle``."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and (needle in path.read_bytes() or needle.decode() in str(path))
    ]


def _home_with_a_private_key(root: Path) -> Path:
    home = root / "home" / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_bytes(SECRET)
    return home


def _builtins(tmp_path: Path, name: str) -> list[Any]:
    return [
        to_zip_store_with_prefix(tmp_path / "out" / f"{name}-zip"),
        to_directory_store_with_prefix(tmp_path / "out" / f"{name}-dir"),
        to_url_with_prefix(f"file://{tmp_path}/out/{name}-url"),
    ]


def test_a_shard_directory_symlinked_to_a_home_folder_is_refused(tmp_path: Path) -> None:
    # The repro of issue 9: array shard 6 is a symlink to a home folder that holds the
    # shard's keys and .ssh/id_rsa. Validate flags a stray key; convert must refuse.
    source = _source(tmp_path / "src")
    shard = tmp_path / "src" / "t" / "6.zarr"
    home = _home_with_a_private_key(tmp_path)
    shutil.copytree(shard, home, dirs_exist_ok=True)
    shutil.rmtree(shard)
    shard.symlink_to(home, target_is_directory=True)
    for func in _builtins(tmp_path, "t"):
        with pytest.raises(
            MapShardsError,
            match=r"array shard 'simulation/fine/temperature' chunk 6 failed: LayoutError: "
            r".*6\.zarr is a symbolic link",
        ):
            source.map_shards(func, executor=ThreadPoolExecutor(1), progress=False)
    assert _outputs_holding(tmp_path / "out", SECRET) == []
    assert _outputs_holding(tmp_path / "out", b"id_rsa") == []


def test_a_symlink_inside_a_shard_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path / "src")
    home = _home_with_a_private_key(tmp_path)
    chunk = tmp_path / "src" / "people.zarr" / "heights" / "c" / "0"
    chunk.unlink()
    chunk.symlink_to(home / ".ssh" / "id_rsa")
    for func in _builtins(tmp_path, "m"):
        with pytest.raises(
            MapShardsError,
            match=r"mount 'people' failed: LayoutError: .*'heights/c/0' .*symbolic link",
        ):
            source.map_shards(func, progress=False)
    # A symlinked directory inside a shard too (zarr's LocalStore would not list it).
    chunk.unlink()
    (home / "c").mkdir()
    (home / "c" / "0").write_bytes(SECRET)
    shutil.rmtree(tmp_path / "src" / "coarse.zarr" / "temperature" / "c")
    (tmp_path / "src" / "coarse.zarr" / "temperature" / "c").symlink_to(home / "c")
    with pytest.raises(MapShardsError, match=r"mount 'simulation/coarse' failed: .*symbolic"):
        source.map_shards(to_zip_store_with_prefix(tmp_path / "out" / "d"), progress=False)
    assert _outputs_holding(tmp_path / "out", SECRET) == []


def _add_strays(src: Path) -> None:
    """Keys no reader of the demo layout can reach, and a shard outside the shape."""
    (src / "t" / "3.zarr" / "junk").write_text("x")  # not a key of the shard at all
    (src / "t" / "3.zarr" / "c" / "5").mkdir()
    (src / "t" / "3.zarr" / "c" / "5" / "0").write_bytes(b"beyond")  # outside the grid
    (src / "base.zarr" / "people").mkdir()
    (src / "base.zarr" / "people" / "zarr.json").write_text("{}")  # hidden by the mount
    hidden = src / "base.zarr" / "simulation" / "fine" / "temperature" / "c" / "0" / "0"
    hidden.mkdir(parents=True)
    (hidden / "0").write_bytes(b"hidden")  # a chunk held by the array shards instead
    shutil.copytree(src / "t" / "11.zarr", src / "t" / "12.zarr")  # shape is 12 along time


def test_stray_keys_and_shards_outside_the_shape_are_reported_not_copied(
    tmp_path: Path,
) -> None:
    from shardedstore.errors import StrayKeysWarning

    source = _source(tmp_path / "src")
    _add_strays(tmp_path / "src")
    out = tmp_path / "out"
    with pytest.warns(StrayKeysWarning) as record:
        zipped = source.map_shards(to_zip_store_with_prefix(out / "z"), progress=False)
    [warning] = [w for w in record if w.category is StrayKeysWarning]
    message = str(warning.message)
    assert "not copied" in message
    assert "base: 2 stray key(s)" in message
    assert "'people/zarr.json'" in message
    assert "array shard 'simulation/fine/temperature' chunk 3: 2 stray key(s)" in message
    assert "'c/5/0'" in message
    assert "'junk'" in message
    assert "chunk 12: outside the array's shape" in message
    assert "include_stray=True" in message
    assert not (out / "z" / TEMPERATURE / "12.zarr.zip").exists()
    with zipfile.ZipFile(out / "z" / TEMPERATURE / "3.zarr.zip") as zf:
        assert "junk" not in zf.namelist()
        assert "c/5/0" not in zf.namelist()
        assert "c/1/1" in zf.namelist()
    with zipfile.ZipFile(out / "z.zarr.zip") as zf:
        assert not [n for n in zf.namelist() if n.startswith(("people/", f"{TEMPERATURE}/c/"))]
    with xr.open_datatree(zipped, engine="zarr", consolidated=False) as back:
        assert back.identical(build_demo_tree())  # a reader sees exactly what it saw
    # Asked for explicitly, everything is copied.
    everything = source.map_shards(
        to_zip_store_with_prefix(out / "all", include_stray=True), progress=False
    )
    assert _physical(everything) == _physical(source)
    with zipfile.ZipFile(out / "all" / TEMPERATURE / "3.zarr.zip") as zf:
        assert {"junk", "c/5/0"} <= set(zf.namelist())


# ------------------------------------------------------------ output prefixes (issue 9)


@pytest.mark.parametrize("prefix", ["", "/", "//", ".", "..", "a/..", "./"])
def test_prefixes_that_name_no_output_are_refused(prefix: str) -> None:
    for make in (to_zip_store_with_prefix, to_directory_store_with_prefix):
        with pytest.raises(ValueError, match="prefix"):
            make(prefix)
    with pytest.raises(ValueError, match="prefix"):
        to_url_with_prefix(f"file://{prefix}")


@pytest.mark.parametrize(
    "url", ["", "s3://", "s3://bucket", "s3://bucket/", "s3://bucket/..", "memory://", "file:///"]
)
def test_url_prefixes_that_name_no_output_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        to_url_with_prefix(url)


def test_prefixes_are_normalized(source: ShardedStore, tmp_path: Path) -> None:
    assert to_zip_store_with_prefix("out/").prefix == "out"
    assert to_directory_store_with_prefix("a//b/./c/").prefix == "a/b/c"
    assert to_url_with_prefix("s3://bucket//ds/").url == "s3://bucket/ds"
    assert to_url_with_prefix(f"file://{tmp_path}//u/").url == f"file://{tmp_path}/u"
    with pytest.raises(ValueError, match="is a URL"):
        to_zip_store_with_prefix("s3://bucket/ds")
    zipped = source.map_shards(to_zip_store_with_prefix(f"{tmp_path}/z/"), progress=False)
    assert (tmp_path / "z.zarr.zip").is_file()
    assert not (tmp_path / "z" / ".zarr.zip").exists()
    assert "//" not in json.dumps(zipped.get_config())


# ------------------------------------------- complete means same content (issue 9)


def _fix_a_value(src: Path) -> None:
    """Change bytes but not sizes: a unit fixed from degC to degF, and one chunk."""
    changed = 0
    for meta in src.rglob("zarr.json"):
        text = meta.read_text()
        if "degC" in text:
            meta.write_text(text.replace("degC", "degF"))
            changed += 1
    assert changed
    chunk = src / "t" / "4.zarr" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["zip", "directory", "file-url", "s3"])
def test_an_output_with_other_bytes_of_the_same_size_is_not_kept(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    source = _source(tmp_path / "src")
    func: Any
    if kind == "zip":
        func = to_zip_store_with_prefix(tmp_path / "out")
    elif kind == "directory":
        func = to_directory_store_with_prefix(tmp_path / "out")
    elif kind == "file-url":
        func = to_url_with_prefix(f"file://{tmp_path}/out")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        func = to_url_with_prefix(
            f"s3://{server.new_bucket()}/out", storage_options=server.storage_options
        )
    source.map_shards(func, progress=False)
    _fix_a_value(tmp_path / "src")
    with pytest.raises(MapShardsError, match=r"exists and differs .*remove it") as info:
        source.map_shards(func, executor=ThreadPoolExecutor(1), progress=False)
    assert "same size" in str(info.value)
    # Into a new output, the fixed values convert.
    fresh = source.map_shards(to_zip_store_with_prefix(tmp_path / "fresh"), progress=False)
    assert zarr.open_array(fresh, path=TEMPERATURE, mode="r").attrs["units"] == "degF"
    assert _physical(fresh) == _physical(source)


# -------------------------------------- leftovers of a killed URL conversion (issue 9)

_CRASH_URL_SCRIPT = """
import json, sys, shardedstore, shardedstore.shards.transforms
from concurrent.futures import ThreadPoolExecutor
from tests.test_transforms import _FailOn
shardedstore.shards.transforms._BATCH = 1  # so that the crash comes after a key was written
store = shardedstore.open(sys.argv[1])
func = shardedstore.to_url_with_prefix(
    sys.argv[2], storage_options=json.loads(sys.argv[3]), lease_seconds=1.0
)
store.map_shards(_FailOn(func, "5", crash=True), executor=ThreadPoolExecutor(1), progress=False)
"""


@pytest.mark.parametrize("target", ["file", "s3"])
def test_partials_of_a_killed_url_conversion_are_removed_by_the_next_run(
    tmp_path: Path, target: str, request: pytest.FixtureRequest
) -> None:
    from fsspec.core import url_to_fs

    from shardedstore.cli import main

    _source(tmp_path / "src").save_config(tmp_path / "src.json")
    options: dict[str, object] = {}
    if target == "file":
        url = f"file://{tmp_path}/u/ds"
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        url = f"s3://{server.new_bucket()}/ds"
        options = dict(server.storage_options)
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASH_URL_SCRIPT,
            str(tmp_path / "src.json"),
            url,
            json.dumps(options),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 17, result.stderr  # died mid-shard, no cleanup ran
    fs, path = url_to_fs(url, **options)
    parent = path.rsplit("/", 1)[0]

    def partials() -> list[str]:
        fs.invalidate_cache()
        return [p for p in fs.find(parent, withdirs=True) if ".partial-" in p]

    assert partials()
    assert fs.exists(f"{path}.lock")  # the dead run's lock file, or its lease on S3
    time.sleep(1.2)  # the dead run's lease (1 s) expires; on local disk its lock died with it
    argv = ["convert", str(tmp_path / "src.json"), "--to", "url", "--out", url, "-q"]
    if options:
        argv += ["--storage-option", f"endpoint_url={options['endpoint_url']}"]
    assert main(argv) == 0
    assert partials() == []
    assert not fs.exists(f"{path}.lock")


# ------------------------------------------------------ one run per output (issue 9)


def test_a_locked_output_is_refused_at_once(source: ShardedStore, tmp_path: Path) -> None:
    from shardedstore import ConcurrentWriteError

    func = to_zip_store_with_prefix(tmp_path / "z")
    with func.lock_output():  # another conversion holds the output
        with pytest.raises(ConcurrentWriteError, match=r"z\.lock"):
            source.map_shards(func, progress=False)
        assert not list(tmp_path.rglob("*.zip"))
    assert _physical(source.map_shards(func, progress=False)) == _physical(source)


def test_only_leftovers_of_this_kind_of_run_are_removed(
    source: ShardedStore, tmp_path: Path
) -> None:
    shards = tmp_path / "z" / TEMPERATURE
    shards.mkdir(parents=True)
    dead = [
        shards / "3.zarr.zip.partial-0123456789ab",
        tmp_path / "z.zarr.zip.partial-0123456789ab",
        tmp_path / "z" / "people.zarr.zip.partial-0123456789ab",
    ]
    others = [
        shards / ".3.zarr.zip.partial-0123456789ab",  # a copy-on-write zip's commit
        shards / "notes.txt.partial-0123456789ab",
        tmp_path / "z" / "unrelated.zarr.zip.partial-0123456789ab",
    ]
    for path in dead + others:
        path.write_bytes(b"x")
    source.map_shards(to_zip_store_with_prefix(tmp_path / "z"), progress=False)
    assert [p for p in dead if p.exists()] == []
    assert [p for p in others if not p.exists()] == []
