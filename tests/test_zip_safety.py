"""Zipped layouts under real workloads: appends, crashes, a full disk, many writers.

Each test is a repro from issue 8: before copy-on-write zips, appending to a zipped
layout made its base zip unreadable while the writer lived (and for good if it was
killed), and several writers of one zip lost data silently.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore.cli import main

NX = 8


def _dataset(times: range) -> xr.Dataset:
    t = np.array(list(times))
    values = (t[:, None] * 100 + np.arange(NX)[None, :]).astype("f8")
    return xr.Dataset(
        {"t2m": (("time", "x"), values, {"units": "degC"})},
        coords={"time": t, "x": np.arange(NX)},
    ).chunk({"time": 1, "x": NX // 4})


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def zipped(tmp_path: Path) -> Path:
    """A layout with time steps 0-1 converted to zips by the CLI: ``arch/ds.json``."""
    src = tmp_path / "src"
    store = ShardedStore(
        LocalStore(src / "base.zarr"), {}, {"t2m": (1, array_shard_directory_store(src / "t2m"))}
    )
    _dataset(range(2)).to_zarr(store, consolidated=False, zarr_format=3)
    store.save_config(src / "layout.json")
    out = tmp_path / "arch" / "ds"
    assert main(["convert", str(src / "layout.json"), "--to", "zip", "--out", str(out)]) == 0
    return tmp_path / "arch" / "ds.json"


def _read(config: Path) -> xr.Dataset:
    store = shardedstore.open(config)
    try:
        return xr.open_zarr(store, consolidated=False).compute()
    finally:
        store.close()


def _all_zips(config: Path) -> list[Path]:
    return sorted(config.parent.rglob("*.zip"))


def _assert_clean_zips(config: Path) -> None:
    for path in _all_zips(config):
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None, path
            names = zf.namelist()
            assert len(names) == len(set(names)), f"duplicate entries in {path}"


APPEND = textwrap.dedent(
    """
    import sys, time
    import numpy as np, xarray as xr, shardedstore
    config, first, count, then = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    t = np.arange(first, first + count)
    ds = xr.Dataset(
        {"t2m": (("time", "x"), (t[:, None] * 100 + np.arange(__NX__)).astype("f8"),
                 {"units": "degC"})},
        coords={"time": t, "x": np.arange(__NX__)},
    ).chunk({"time": 1, "x": __NX__ // 4})
    store = shardedstore.open(config, mode="r+")
    ds.to_zarr(store, append_dim="time", consolidated=False)
    print("appended", flush=True)
    if then == "wait":
        time.sleep(600)
    if then == "exit":  # no close(): the zips are committed at interpreter exit
        sys.exit(0)
    store.close()
    print("closed", flush=True)
    """
).replace("__NX__", str(NX))


def _append(config: Path, first: int, count: int, then: str = "close") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", APPEND, str(config), str(first), str(count), then],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_append_to_a_zipped_layout(zipped: Path) -> None:
    """Repro 1, clean path: append, no duplicate entries, a later convert works."""
    process = _append(zipped, 2, 2)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    _assert_clean_zips(zipped)
    assert _read(zipped).identical(_dataset(range(4)).compute())
    out_dir = zipped.parent.parent / "again" / "ds"
    assert main(["convert", str(zipped), "--to", "directory", "--out", str(out_dir)]) == 0
    assert main(["convert", str(zipped), "--to", "zip", "--out", str(out_dir) + "z"]) == 0
    assert _read(out_dir.parent / "dsz.json").identical(_dataset(range(4)).compute())


def test_append_without_close_commits_at_exit(zipped: Path) -> None:
    """xarray never closes the store it is given: a normal exit must not lose the data."""
    process = _append(zipped, 2, 1, then="exit")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    _assert_clean_zips(zipped)
    assert _read(zipped).identical(_dataset(range(3)).compute())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_writer_killed_during_append_leaves_every_zip_intact(
    zipped: Path, sig: signal.Signals
) -> None:
    """Repro 1, crash: readers are fine while the writer lives, and after it is killed."""
    before = {path: _digest(path) for path in _all_zips(zipped)}
    process = _append(zipped, 2, 2, then="wait")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == "appended", process.stderr.read() if process.stderr else ""
        # The writer is alive with everything written but not committed: other
        # readers see the old layout, complete and valid.
        _assert_clean_zips(zipped)
        assert _read(zipped).identical(_dataset(range(2)).compute())
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert {path: _digest(path) for path in _all_zips(zipped)} == before
    assert _read(zipped).identical(_dataset(range(2)).compute())
    # The dead writer's lock is gone with it; the next writer cleans up after it.
    retry = _append(zipped, 2, 2)
    _, err = retry.communicate(timeout=120)
    assert retry.returncode == 0, err
    assert _read(zipped).identical(_dataset(range(4)).compute())
    leftovers = [p for p in zipped.parent.rglob(".*") if p.name.startswith(".ds.zarr.zip.")]
    assert leftovers == []


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np, xarray as xr, shardedstore
    config, limit = sys.argv[1], int(sys.argv[2])
    store = shardedstore.open(config, mode="r+")
    t = np.arange(2, 4)
    ds = xr.Dataset(
        {"t2m": (("time", "x"), np.ones((2, __NX__)), {"units": "degC"})},
        coords={"time": t, "x": np.arange(__NX__)},
    ).chunk({"time": 1})
    ds.to_zarr(store, append_dim="time", consolidated=False)
    # From here on no file may grow past `limit` bytes: writing the new base zip
    # fails as on a full disk (EFBIG instead of ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        store.close()
    except OSError as error:
        print("close failed:", error.errno, flush=True)
        sys.exit(3)
    """
).replace("__NX__", str(NX))


def test_full_disk_while_committing_leaves_the_old_zip(zipped: Path) -> None:
    base = zipped.parent / "ds.zarr.zip"
    before = _digest(base)
    limit = base.stat().st_size // 2
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(zipped), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "close failed" in result.stdout
    assert _digest(base) == before
    _assert_clean_zips(zipped)
    assert _read(zipped).identical(_dataset(range(2)).compute())
    assert not [p for p in zipped.parent.iterdir() if ".partial-" in p.name]


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np, zarr, shardedstore
    config, block, reports = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    writers = int(sys.argv[4])
    store = shardedstore.open(config, mode="r+")
    array = zarr.open_array(store, path="t2m", mode="r+")
    width = __NX__ // writers
    try:
        array[2, block * width:(block + 1) * width] = 1000 + block
        outcome = "ok"
    except Exception as error:
        outcome = type(error).__name__
    (reports / str(block)).write_text(outcome)
    # Hold on (lock included) until every writer has tried.
    while len(list(reports.iterdir())) < writers:
        time.sleep(0.05)
    store.close()
    """
).replace("__NX__", str(NX))


def test_four_writers_of_one_zip_never_lose_data_silently(zipped: Path, tmp_path: Path) -> None:
    """Repro 2: four processes write four chunks of one new time step (one zip shard)."""
    grow = shardedstore.open(zipped, mode="r+")
    xr.open_zarr(grow, consolidated=False)
    _dataset(range(2, 3)).to_zarr(grow, append_dim="time", consolidated=False, compute=False)
    grow.close()
    reports = tmp_path / "reports"
    reports.mkdir()
    writers = 4
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(zipped), str(block), str(reports), str(writers)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for block in range(writers)
    ]
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
    outcomes = {int(p.name): p.read_text() for p in reports.iterdir()}
    assert sorted(outcomes.values()) == ["ConcurrentWriteError"] * 3 + ["ok"]
    row = _read(zipped).t2m.values[2]
    width = NX // writers
    for block, outcome in outcomes.items():
        cells = row[block * width : (block + 1) * width]
        expected = 1000 + block if outcome == "ok" else np.nan
        np.testing.assert_array_equal(cells, np.full(width, expected))
    _assert_clean_zips(zipped)


def test_dask_cluster_writing_zip_shards_fails_loudly(tmp_path: Path) -> None:
    """Repro 2, dask: writing from worker processes into zip shards raises.

    It used to return normally and leave zips reading back as ``Bad magic number``.
    The same write into directory shards is correct.
    """
    from distributed import Client, LocalCluster

    ds = _dataset(range(4))
    zips = array_shard_template_store({"type": "zip", "path": f"{tmp_path}/z/{{chunk}}.zip"})
    dirs = array_shard_directory_store(tmp_path / "d")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        zipped = ShardedStore(LocalStore(tmp_path / "zbase"), {}, {"t2m": (1, zips)})
        with pytest.raises(Exception, match="copy sent to another process") as failure:
            ds.to_zarr(zipped, consolidated=False, zarr_format=3)
        assert isinstance(failure.value, shardedstore.LayoutError)
        zipped.close()
        plain = ShardedStore(LocalStore(tmp_path / "dbase"), {}, {"t2m": (1, dirs)})
        ds.to_zarr(plain, consolidated=False, zarr_format=3)
    assert not list((tmp_path / "z").glob("*.zip")) if (tmp_path / "z").exists() else True
    back = xr.open_zarr(
        ShardedStore(LocalStore(tmp_path / "dbase"), {}, {"t2m": (1, dirs)}, read_only=True),
        consolidated=False,
    ).compute()
    assert back.identical(ds.compute())


def test_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "held.zip"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from zarr.core.buffer import default_buffer_prototype
                from zarr.core.sync import sync
                from shardedstore import CopyOnWriteZipStore
                store = CopyOnWriteZipStore({str(path)!r}, mode="a")
                sync(store.set("k", default_buffer_prototype().buffer.from_bytes(b"v")))
                print("holding", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    value = default_buffer_prototype().buffer.from_bytes(b"mine")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        other = shardedstore.CopyOnWriteZipStore(path, mode="a")
        started = time.monotonic()
        with pytest.raises(shardedstore.ConcurrentWriteError, match=f"process {holder.pid}"):
            sync(other.set("k", value))
        assert time.monotonic() - started < 5  # at once, not after a timeout
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    sync(other.set("k", value))
    other.close()
    assert not path.with_name(".held.zip.lock").exists()
    with zipfile.ZipFile(path) as zf:
        assert zf.read("k") == b"mine"


# ------------------------------------------------- found by review (issue 8)

_FORK_STORE: ShardedStore | None = None


def _write_in_fork() -> str:
    assert _FORK_STORE is not None
    try:
        _FORK_STORE.as_mapping()["notes/readme.txt"] = b"child bytes"
    except shardedstore.LayoutError as error:
        return str(error)
    return "written"


def test_a_forked_process_cannot_write_the_parents_zips(zipped: Path) -> None:
    """A store inherited by fork shared the parent's staging: the base zip got corrupted."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import zarr

    global _FORK_STORE
    _FORK_STORE = shardedstore.open(zipped, mode="r+")
    try:
        group = zarr.open_group(_FORK_STORE, mode="a")
        group.attrs["p1"] = 1
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            outcome = pool.submit(_write_in_fork).result()
            group.attrs["p2"] = 2
        assert "inherited by a forked process" in outcome
        _FORK_STORE.close()
    finally:
        _FORK_STORE = None
    _assert_clean_zips(zipped)
    back = zarr.open_group(shardedstore.open(zipped), mode="r")
    assert (back.attrs["p1"], back.attrs["p2"]) == (1, 2)
    assert "notes" not in back
    assert _read(zipped).t2m.identical(_dataset(range(2)).t2m.compute())


def test_the_writer_reads_its_own_appends_through_xarray(zipped: Path) -> None:
    """A read-only view of a writer saw the new shape but read the new steps as NaN,
    and closing it committed the writer's base zip early."""
    base = zipped.parent / "ds.zarr.zip"
    before = _digest(base)
    store = shardedstore.open(zipped, mode="r+")
    _dataset(range(2, 4)).to_zarr(store, append_dim="time", consolidated=False)
    with xr.open_zarr(store, consolidated=False) as seen:
        assert seen.compute().identical(_dataset(range(4)).compute())
    assert _digest(base) == before  # closing the view committed nothing
    assert _read(zipped).identical(_dataset(range(2)).compute())
    store.close()
    assert _read(zipped).identical(_dataset(range(4)).compute())


FAIL_AFTER_APPEND = textwrap.dedent(
    """
    import sys
    import numpy as np, xarray as xr, shardedstore
    config, how = sys.argv[1], sys.argv[2]
    t = np.arange(2, 4)
    ds = xr.Dataset(
        {"t2m": (("time", "x"), np.ones((2, __NX__)), {"units": "degC"})},
        coords={"time": t, "x": np.arange(__NX__)},
    ).chunk({"time": 1})
    store = shardedstore.open(config, mode="r+")
    ds.to_zarr(store, append_dim="time", consolidated=False)
    if how == "uncaught":
        raise RuntimeError("the job fails after writing, before close()")
    from zarr.core.buffer import default_buffer_prototype
    try:  # a write the store refuses
        store.set_sync("bad/../key", default_buffer_prototype().buffer.from_bytes(b"x"))
    except ValueError:
        pass
    """
).replace("__NX__", str(NX))


@pytest.mark.parametrize("how", ["uncaught", "failed write"])
def test_nothing_commits_at_exit_after_a_failure(zipped: Path, how: str) -> None:
    """After an uncaught exception or a failed write, exit leaves the zips as they were."""
    before = {path: _digest(path) for path in _all_zips(zipped)}
    result = subprocess.run(
        [sys.executable, "-c", FAIL_AFTER_APPEND, str(zipped), how],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode != 0) == (how == "uncaught"), result.stderr
    assert {path: _digest(path) for path in _all_zips(zipped)} == before
    assert _read(zipped).identical(_dataset(range(2)).compute())


SHARD_DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np, xarray as xr, shardedstore
    config, limit = sys.argv[1], int(sys.argv[2])
    store = shardedstore.open(config, mode="r+")
    t = np.arange(2, 3)
    # One big time step: its shard zip exceeds the limit, the base zip does not.
    ds = xr.Dataset(
        {"t2m": (("time", "x"), np.random.default_rng(0).random((1, __NX__)))},
        coords={"time": t, "x": np.arange(__NX__)},
    )
    ds.to_zarr(store, append_dim="time", consolidated=False)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        store.close()
    except OSError:
        sys.exit(3)
    """
)


def test_metadata_never_commits_ahead_of_its_chunks(tmp_path: Path) -> None:
    """close() committed the base (new shape) before the shards: a failure in between
    left time steps reading as NaN."""
    nx = 200_000
    src = tmp_path / "src"
    store = ShardedStore(
        LocalStore(src / "base.zarr"), {}, {"t2m": (1, array_shard_directory_store(src / "t2m"))}
    )
    first = xr.Dataset(
        {"t2m": (("time", "x"), np.zeros((2, nx)))}, coords={"time": [0, 1], "x": np.arange(nx)}
    )
    first.to_zarr(store, consolidated=False, zarr_format=3)
    store.save_config(src / "layout.json")
    out = tmp_path / "arch" / "ds"
    assert main(["convert", str(src / "layout.json"), "--to", "zip", "--out", str(out)]) == 0
    config = tmp_path / "arch" / "ds.json"
    base = tmp_path / "arch" / "ds.zarr.zip"
    before = _digest(base)
    limit = 4 * base.stat().st_size + 100_000  # room for the base, not for a 1.6 MB shard
    result = subprocess.run(
        [sys.executable, "-c", SHARD_DISK_FULL.replace("__NX__", str(nx)), str(config), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert _digest(base) == before
    back = xr.open_zarr(shardedstore.open(config), consolidated=False)
    assert back.sizes["time"] == 2


def test_symlinked_shard_zip_out_of_the_folder_is_not_written(zipped: Path) -> None:
    """A shard zip linked to a file outside the dataset folder was emptied by mode='w'."""
    shards = zipped.parent / "ds" / "t2m"
    precious = zipped.parent.parent / "precious.zip"
    (shards / "1.zarr.zip").rename(precious)
    (shards / "1.zarr.zip").symlink_to(precious)
    before = _digest(precious)
    store = shardedstore.open(zipped, mode="r+")
    with pytest.raises(shardedstore.LayoutError, match="outside the config's folder"):
        _dataset(range(2)).to_zarr(store, mode="w", consolidated=False)
    store.close()
    assert _digest(precious) == before
    # Reading through the link is fine.
    assert _read(zipped).identical(_dataset(range(2)).compute())


def test_emptied_zip_shards_are_removed(zipped: Path) -> None:
    """Deleting an array of a zipped layout left zips with no entries, which validate
    then reported; a directory layout removes the shard directories."""
    import zarr

    store = shardedstore.open(zipped, mode="r+")
    del zarr.open_group(store, mode="r+")["t2m"]
    store.close()
    assert not list((zipped.parent / "ds" / "t2m").glob("*.zip"))
    assert "t2m" not in zarr.open_group(shardedstore.open(zipped), mode="r")
    _assert_clean_zips(zipped)


def test_leftover_cleanup_removes_only_its_own_staging(tmp_path: Path) -> None:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    lookalike = tmp_path / ".z.zip.staging-0123456789ab"
    lookalike.mkdir()
    (lookalike / "thesis.tex").write_text("years of work")
    store = shardedstore.CopyOnWriteZipStore(tmp_path / "z.zip", mode="a")
    sync(store.set("k", default_buffer_prototype().buffer.from_bytes(b"v")))
    store.close()
    assert (lookalike / "thesis.tex").read_text() == "years of work"


def test_an_unpickled_zip_store_refuses_writes(tmp_path: Path) -> None:
    import pickle

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = shardedstore.CopyOnWriteZipStore(tmp_path / "z.zip", mode="a")
    copy = pickle.loads(pickle.dumps(store))
    with pytest.raises(shardedstore.LayoutError, match="copy sent to another process"):
        sync(copy.set("k", default_buffer_prototype().buffer.from_bytes(b"v")))
    assert not (tmp_path / "z.zip").exists()


@pytest.mark.parametrize("attempt", range(3))  # a race: more than one try to meet it
def test_zip_array_shards_created_by_one_write_are_all_committed(
    tmp_path: Path, attempt: int
) -> None:
    """One zarr write creating many zip array shards at once (as ome-zarr-py's dask
    write does): every zip is committed at close() and reads back exactly."""
    import json

    import zarr

    config = tmp_path / "layout.json"
    config.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
                "array_shards": {
                    "a": {"dims": 1, "store": {"type": "zip", "path": "a/{chunk}.zarr.zip"}}
                },
            }
        )
    )
    data = np.random.default_rng(attempt).integers(0, 1000, (12, 2, 64, 64), dtype="u2")
    store = shardedstore.open(config, mode="r+")
    group = zarr.open_group(store, mode="w")
    group.create_array("a", shape=data.shape, chunks=(1, 1, 32, 32), dtype="u2")[:] = data
    store.close()
    zips = sorted(p.name for p in (tmp_path / "a").iterdir() if p.suffix == ".zip")
    assert zips == sorted(f"{t}.zarr.zip" for t in range(12))
    back = zarr.open_array(shardedstore.open(config), path="a", mode="r")[...]
    np.testing.assert_array_equal(back, data)
