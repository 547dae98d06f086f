"""Commits follow the caller, and no writer loses another's update (issue 18, items 1, 8, 9).

- A ``with`` block left by an exception commits nothing.
- ``close()`` after a write that failed and was not written again commits nothing and
  says so; leaving the interpreter then warns, naming the zips and the keys.
- A write that failed and was written again successfully is committed as usual, by
  ``close()`` or at exit.
- A writer whose layout changed since it read the metadata it replaces gets
  ``ConflictError`` (zips: compare-and-swap per member; directories: per metadata
  document, under a lock), and nothing of it is committed.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    CommitError,
    ConcurrentWriteError,
    ConflictError,
    CopyOnWriteZipStore,
    ShardedStore,
    array_shard_directory_store,
)
from shardedstore.cli import main

NX = 4
BUF = default_buffer_prototype().buffer


def _dataset(times: range, scale: float = 100.0) -> xr.Dataset:
    t = np.array(list(times))
    values = (t[:, None] * scale + np.arange(NX)[None, :]).astype("f8")
    return xr.Dataset(
        {"t2m": (("time", "x"), values)}, coords={"time": t, "x": np.arange(NX)}
    ).chunk({"time": 1})


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }


@pytest.fixture(params=["directory", "zip"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Time steps 0-1 of ``t2m`` (array-sharded on time), as directories or zips."""
    src = tmp_path / "src"
    store = ShardedStore(
        LocalStore(src / "base.zarr"), {}, {"t2m": (1, array_shard_directory_store(src / "t2m"))}
    )
    _dataset(range(2)).to_zarr(store, consolidated=False, zarr_format=3)
    store.save_config(src / "layout.json")
    if request.param == "directory":
        return src / "layout.json"
    out = tmp_path / "arch" / "ds"
    assert main(["convert", str(src / "layout.json"), "--to", "zip", "--out", str(out)]) == 0
    return tmp_path / "arch" / "ds.json"


@pytest.fixture
def zipped(tmp_path: Path) -> Path:
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
    with xr.open_zarr(shardedstore.open(config), consolidated=False) as ds:
        return ds.compute()


def _column(config: Path) -> list[float]:
    array = zarr.open_array(shardedstore.open(config), path="t2m", mode="r")
    return [float(v) for v in array[:, 0]]


# ------------------------------------------------------------------ item 1


def _failing(block: np.ndarray) -> np.ndarray:
    if block.ravel()[0] == 300.0:  # the second new time step
        raise RuntimeError("one dask task fails")
    return block


def test_a_with_block_left_by_an_exception_commits_nothing(zipped: Path) -> None:
    """Item 1: the partial append used to be committed on leaving the block."""
    before = _digests(zipped.parent)
    new = _dataset(range(2, 5))
    new["t2m"] = new.t2m.copy(data=new.t2m.data.map_blocks(_failing, dtype="f8"))
    with (
        pytest.raises(RuntimeError, match="one dask task fails"),
        shardedstore.open(zipped, mode="r+") as store,
    ):
        new.to_zarr(store, append_dim="time", consolidated=False)
    assert _digests(zipped.parent) == before
    assert _read(zipped).identical(_dataset(range(2)).compute())
    assert not [p for p in zipped.parent.rglob(".*") if ".staging-" in p.name or "lock" in p.name]


def test_a_with_block_left_normally_commits(zipped: Path) -> None:
    with shardedstore.open(zipped, mode="r+") as store:
        _dataset(range(2, 3)).to_zarr(store, append_dim="time", consolidated=False)
    assert _read(zipped).identical(_dataset(range(3)).compute())


def test_a_zip_store_with_block_left_by_an_exception_commits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("k", b"old")
    store = CopyOnWriteZipStore(path, mode="a")
    with pytest.raises(RuntimeError, match="stop"), store:  # noqa: PT012 - the block is the test
        sync(store.set("k", BUF.from_bytes(b"new")))
        raise RuntimeError("stop")
    with zipfile.ZipFile(path) as zf:
        assert zf.read("k") == b"old"


# ------------------------------------------------------------------ item 8


def test_two_appenders_never_lose_a_step(layout: Path) -> None:
    """Item 8: B appended over A's step; both reported success."""
    a = shardedstore.open(layout, mode="r+")
    b = shardedstore.open(layout, mode="r+")
    array_a = zarr.open_array(a, path="t2m", mode="r+")
    array_b = zarr.open_array(b, path="t2m", mode="r+")
    assert array_a.shape == array_b.shape == (2, NX)
    array_a.append(np.full((1, NX), 7.0))
    a.close()
    with pytest.raises(ConflictError, match=r"(?i)t2m.*open .*again") as conflict:
        array_b.append(np.full((1, NX), 8.0))
    assert isinstance(conflict.value, ValueError)
    b.close()  # nothing of B is committed; B's failure had nothing staged to discard
    assert _column(layout) == [0.0, 100.0, 7.0]
    # Reopened, B sees A's step and appends after it.
    again = shardedstore.open(layout, mode="r+")
    zarr.open_array(again, path="t2m", mode="r+").append(np.full((1, NX), 8.0))
    again.close()
    assert _column(layout) == [0.0, 100.0, 7.0, 8.0]


def test_an_xarray_appender_after_another_keeps_both_steps(zipped: Path) -> None:
    """xarray reads the metadata again after its first write (which re-bases B's zip
    on A's commit): B appends after A's step, with no conflict and no loss."""
    a = shardedstore.open(zipped, mode="r+")
    b = shardedstore.open(zipped, mode="r+")
    assert zarr.open_group(b, mode="r+")["t2m"].shape == (2, NX)  # B's base zip is open
    _dataset(range(2, 3)).to_zarr(a, append_dim="time", consolidated=False)
    a.close()
    _dataset(range(2, 3), scale=1000.0).to_zarr(b, append_dim="time", consolidated=False)
    b.close()
    assert _column(zipped) == [0.0, 100.0, 200.0, 2000.0]


def test_a_conflict_in_the_base_commits_no_zip_of_the_writer(zipped: Path) -> None:
    """B's chunk goes into a shard zip that A also wrote (B never read it), then B's
    metadata write conflicts: closing B must commit no zip at all, not even the shard
    (close() commits shards before the base)."""
    a = shardedstore.open(zipped, mode="r+")
    b = shardedstore.open(zipped, mode="r+")
    array_b = zarr.open_array(b, path="t2m", mode="r+")
    zarr.open_array(a, path="t2m", mode="r+").append(np.full((1, NX), 7.0))
    a.close()
    before = _digests(zipped.parent)
    chunk = sync(a.get("t2m/c/0/0", default_buffer_prototype()))  # any valid chunk
    assert chunk is not None
    sync(b.set("t2m/c/2/0", chunk))  # staged in A's shard zip 2
    with pytest.raises(ConflictError, match="t2m"):
        array_b.resize((3, NX))
    with pytest.raises(CommitError, match=r"2\.zarr\.zip"):
        b.close()
    assert _digests(zipped.parent) == before
    assert _column(zipped) == [0.0, 100.0, 7.0]


def test_a_zip_replaced_behind_the_lock_is_found_before_any_commit(zipped: Path) -> None:
    """Compare-and-swap again at commit: a zip changed by a writer that took no lock
    (here a plain copy over it) conflicts, and no zip of the layout is committed."""
    import shutil

    base = zipped.parent / "ds.zarr.zip"
    copy = zipped.parent.parent / "copy.zip"
    shutil.copy(base, copy)
    store = shardedstore.open(zipped, mode="r+")
    _dataset(range(2, 3)).to_zarr(store, append_dim="time", consolidated=False)
    with zipfile.ZipFile(copy, "a") as zf:
        zf.writestr("notes.txt", "written without the lock")
    shutil.copy(copy, base)
    before = _digests(zipped.parent)
    with pytest.raises(ConflictError, match=r"ds\.zarr\.zip"):
        store.close()
    assert _digests(zipped.parent) == before
    assert _column(zipped) == [0.0, 100.0]


def test_a_first_time_writer_is_not_refused(layout: Path) -> None:
    """Documents never read by the store are written as asked (mode="w")."""
    store = shardedstore.open(layout, mode="r+")
    _dataset(range(3), scale=10.0).to_zarr(store, mode="w", consolidated=False)
    store.close()
    assert _read(layout).identical(_dataset(range(3), scale=10.0).compute())


def test_appenders_taking_turns_through_a_long_lived_store(layout: Path) -> None:
    """A store whose writes follow a fresh read of the metadata is never refused."""
    long_lived = shardedstore.open(layout, mode="r+")
    for t in (2, 4):
        _dataset(range(t, t + 1)).to_zarr(long_lived, append_dim="time", consolidated=False)
        long_lived.close()
        other = shardedstore.open(layout, mode="r+")
        _dataset(range(t + 1, t + 2)).to_zarr(other, append_dim="time", consolidated=False)
        other.close()
    assert _read(layout).identical(_dataset(range(6)).compute())


# ------------------------------------------------------------------ item 9

RETRY = textwrap.dedent(
    """
    import sys
    import numpy as np, zarr, shardedstore
    config, then = sys.argv[1], sys.argv[2]
    a = shardedstore.open(config, mode="r+")
    b = shardedstore.open(config, mode="r+")
    zarr.open_array(a, path="t2m", mode="r+")[1] = 7.0   # A holds shard 1's zip
    array_b = zarr.open_array(b, path="t2m", mode="r+")
    try:
        array_b[1] = 8.0
        raise SystemExit("B was not refused")
    except shardedstore.ConcurrentWriteError:
        pass
    a.close()
    if then == "retry":
        array_b[1] = 8.0                                   # the retry succeeds
    elif then == "other":
        array_b[0] = 9.0                                   # a different write succeeds
    print("done", flush=True)
    """
)


@pytest.mark.parametrize("then", ["retry", "other"])
def test_a_retried_write_is_committed_at_exit(zipped: Path, then: str) -> None:
    """Item 9: B's retry succeeded, B never closed: the step was dropped, silently."""
    result = subprocess.run(
        [sys.executable, "-c", RETRY, str(zipped), then],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if then == "retry":
        assert _column(zipped) == [0.0, 8.0]
        assert "discarded" not in result.stderr
    else:
        # The failed write was never written again: nothing of B is committed, and
        # exit says so, naming the zip and the key.
        assert _column(zipped) == [0.0, 7.0]
        assert "discarded" in result.stderr
        assert "t2m/c/1/0" in result.stderr
        assert "0.zarr.zip" in result.stderr


def test_close_after_a_failed_write_commits_nothing_and_says_so(zipped: Path) -> None:
    a = shardedstore.open(zipped, mode="r+")
    b = shardedstore.open(zipped, mode="r+")
    zarr.open_array(a, path="t2m", mode="r+")[1] = 7.0
    array_b = zarr.open_array(b, path="t2m", mode="r+")
    array_b[0] = 9.0  # staged in shard 0's zip
    with pytest.raises(ConcurrentWriteError):
        array_b[1] = 8.0
    a.close()
    before = _digests(zipped.parent)
    with pytest.raises(CommitError, match=r"t2m/c/1/0.*left as they were") as refused:
        b.close()
    assert isinstance(refused.value, ValueError)
    assert "0.zarr.zip" in str(refused.value)
    assert _digests(zipped.parent) == before
    assert _column(zipped) == [0.0, 7.0]


def test_close_after_a_healed_failure_commits(zipped: Path) -> None:
    a = shardedstore.open(zipped, mode="r+")
    b = shardedstore.open(zipped, mode="r+")
    zarr.open_array(a, path="t2m", mode="r+")[1] = 7.0
    array_b = zarr.open_array(b, path="t2m", mode="r+")
    array_b[0] = 9.0
    with pytest.raises(ConcurrentWriteError):
        array_b[1] = 8.0
    a.close()
    array_b[1] = 8.0
    b.close()
    assert _column(zipped) == [9.0, 8.0]


def _held_zip(path: Path) -> CopyOnWriteZipStore:
    holder = CopyOnWriteZipStore(path, mode="a")
    sync(holder.set("h", BUF.from_bytes(b"held")))
    return holder


def test_a_failed_key_is_healed_by_deleting_it(tmp_path: Path) -> None:
    path = tmp_path / "base.zip"
    holder = _held_zip(path)
    store = ShardedStore(CopyOnWriteZipStore(path, mode="a"))
    with pytest.raises(ConcurrentWriteError):
        sync(store.set("k", BUF.from_bytes(b"lost")))
    holder.close()
    sync(store.set("a", BUF.from_bytes(b"1")))
    sync(store.delete("k"))  # what failed is now known: absent
    store.close()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["a", "h"]


def test_an_invalid_key_is_never_healed(tmp_path: Path) -> None:
    path = tmp_path / "base.zip"
    store = ShardedStore(CopyOnWriteZipStore(path, mode="a"))
    sync(store.set("a", BUF.from_bytes(b"1")))
    with pytest.raises(ValueError, match=r"b/\.\./c"):
        sync(store.set("b/../c", BUF.from_bytes(b"2")))
    with pytest.raises(CommitError, match=r"b/\.\./c"):
        store.close()
    assert not path.exists()
    store.close()  # closed already: nothing left to refuse


def test_close_after_a_failure_with_nothing_staged_is_quiet(layout: Path) -> None:
    """A failed write with nothing else uncommitted: close() has nothing to refuse."""
    store = shardedstore.open(layout, mode="r+")
    with pytest.raises(ValueError, match=r"\.\."):
        sync(store.set("t2m/../x", BUF.from_bytes(b"2")))
    store.close()


# ------------------------------------------------ compare-and-swap, in detail


def test_zip_members_are_compare_and_swap(tmp_path: Path) -> None:
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta", b"v1")
        zf.writestr("other", b"o1")
    first = CopyOnWriteZipStore(path, mode="a")
    second = CopyOnWriteZipStore(path, mode="a")
    for store in (first, second):
        assert store.get_sync("meta").to_bytes() == b"v1"  # type: ignore[union-attr]
    sync(first.set("meta", BUF.from_bytes(b"v2")))
    first.close()
    # A member the second store read and another writer changed: refused.
    with pytest.raises(ConflictError, match=r"'meta' in zip .* changed since this store read"):
        sync(second.set("meta", BUF.from_bytes(b"v2 from second")))
    with pytest.raises(ConflictError):
        sync(second.delete("meta"))
    # The lock was let go at once: another writer is not blocked by the refused one.
    third = CopyOnWriteZipStore(path, mode="a")
    sync(third.set("new", BUF.from_bytes(b"n")))
    third.close()
    # A member it never read is written as asked; one it reads again, too.
    sync(second.set("other", BUF.from_bytes(b"o2")))
    assert second.get_sync("meta").to_bytes() == b"v2"  # type: ignore[union-attr]
    sync(second.set("meta", BUF.from_bytes(b"v3")))
    second.close()
    with zipfile.ZipFile(path) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == {
            "meta": b"v3",
            "other": b"o2",
            "new": b"n",
        }


def test_a_member_created_meanwhile_conflicts_with_one_read_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "z.zip"
    first = CopyOnWriteZipStore(path, mode="a")
    second = CopyOnWriteZipStore(path, mode="a")
    assert sync(second.exists("k")) is False
    sync(first.set("k", BUF.from_bytes(b"first")))
    first.close()
    with pytest.raises(ConflictError, match="was added"):
        sync(second.set("k", BUF.from_bytes(b"second")))


def test_a_zip_that_cannot_be_read_leaves_no_lock_behind(tmp_path: Path) -> None:
    """A directory where the zip goes: the write fails, and the lock and staging
    directory it took are let go (they were kept until the process ended)."""
    path = tmp_path / "z.zip"
    store = CopyOnWriteZipStore(path, mode="a")
    assert sync(store.exists("k")) is False  # opened: no zip yet
    path.mkdir()  # then something else takes its place
    with pytest.raises(IsADirectoryError):
        sync(store.set("k", BUF.from_bytes(b"v")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.zip"]
    path.rmdir()
    other = CopyOnWriteZipStore(path, mode="a")
    sync(other.set("k", BUF.from_bytes(b"v")))  # no ConcurrentWriteError
    other.close()
    sync(store.set("k2", BUF.from_bytes(b"w")))
    store.close()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["k", "k2"]


def test_the_metadata_lock_is_outside_the_store_and_let_go(tmp_path: Path) -> None:
    """The compare-and-swap lock of a directory store lies beside it, never in it."""
    from shardedstore.backends.documents import lock_path

    root = tmp_path / "base.zarr"
    assert lock_path(root) == tmp_path / ".base.zarr.lock"
    store = ShardedStore(LocalStore(root))
    zarr.open_group(store, mode="w").attrs["a"] = 1
    group = zarr.open_group(store, mode="r+")  # read: the next write compares
    group.attrs["a"] = 2
    assert sorted(sync(_keys(store))) == ["zarr.json"]  # the held lock is not a key
    store.close()  # the metadata lock is held from the first write until close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.zarr"]  # lock removed
    assert sorted(sync(_keys(store))) == ["zarr.json"]


async def _keys(store: ShardedStore) -> list[str]:
    return [key async for key in store.list()]


def test_the_metadata_lock_falls_back_to_the_directory(tmp_path: Path) -> None:
    """Where no lock file can be made beside the store, the directory itself is locked."""
    from shardedstore.backends.documents import _lock

    root = tmp_path / "store"
    root.mkdir()
    held = _lock(root, tmp_path / "missing" / ".store.lock")
    assert not (tmp_path / "missing").exists()
    held.release()


def test_a_document_deleted_by_another_writer_conflicts(tmp_path: Path) -> None:
    first = ShardedStore(LocalStore(tmp_path / "base"))
    zarr.open_group(first, mode="w").attrs["a"] = 1
    second = ShardedStore(LocalStore(tmp_path / "base"))
    group = zarr.open_group(second, mode="r+")
    sync(first.delete("zarr.json"))
    first.close()  # a writer of metadata holds its lock until close()
    with pytest.raises(ConflictError, match="was deleted"):
        group.attrs["a"] = 2
    assert not (tmp_path / "base" / "zarr.json").exists()


def test_a_view_shares_what_its_store_read_and_its_failures(zipped: Path) -> None:
    store = shardedstore.open(zipped, mode="r+")
    zarr.open_array(store, path="t2m", mode="r+")[0] = 5.0  # staged
    with pytest.raises(ValueError, match=r"\.\."):
        sync(store.set("t2m/../x", BUF.from_bytes(b"x")))
    with xr.open_zarr(store, consolidated=False) as seen:  # a view, closed after
        assert float(seen.t2m.values[0, 0]) == 5.0
    with pytest.raises(CommitError):
        store.close()
    assert _column(zipped) == [0.0, 100.0]


EXIT_AFTER = textwrap.dedent(
    """
    import sys
    import numpy as np, zarr, shardedstore
    config, how = sys.argv[1], sys.argv[2]
    store = shardedstore.open(config, mode="r+")
    zarr.open_array(store, path="t2m", mode="r+")[0] = 5.0
    if how == "uncaught":
        raise RuntimeError("the job fails before close()")
    """
)


def test_exit_after_an_uncaught_exception_discards_and_warns(zipped: Path) -> None:
    before = _digests(zipped.parent)
    result = subprocess.run(
        [sys.executable, "-c", EXIT_AFTER, str(zipped), "uncaught"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "UncommittedWarning" in result.stderr
    assert "uncaught exception" in result.stderr
    assert "0.zarr.zip" in result.stderr
    assert _digests(zipped.parent) == before


# ------------------------------------------- directories: one metadata writer at a time


def test_a_with_block_left_by_an_exception_restores_directory_metadata(layout: Path) -> None:
    """A half-done append in a directory base (its shapes grown, a step missing) is
    written back as it was; the chunks it wrote stay, unreached."""
    new = _dataset(range(2, 5))
    new["t2m"] = new.t2m.copy(data=new.t2m.data.map_blocks(_failing, dtype="f8"))
    with (
        pytest.raises(RuntimeError, match="one dask task fails") as raised,
        shardedstore.open(layout, mode="r+") as store,
    ):
        new.to_zarr(store, append_dim="time", consolidated=False)
    assert "'t2m/zarr.json'" in " ".join(getattr(raised.value, "__notes__", [])) or (
        layout.name == "ds.json"  # zip base: the zip itself was discarded
    )
    assert _read(layout).identical(_dataset(range(2)).compute())
    assert not [p for p in layout.parent.rglob(".*") if p.name.endswith(".lock")]


def test_a_mixed_layout_leaves_no_shape_pointing_at_discarded_zips(tmp_path: Path) -> None:
    """A directory base with zip array shards: the zips are discarded, and so are the
    base's new shapes."""
    layout = tmp_path / "ds" / "layout.json"
    assert (
        main(
            [
                "init",
                str(layout),
                "--base",
                str(tmp_path / "ds" / "base.zarr"),
                "--array-shards",
                f"t2m=1:zip:{tmp_path}/ds/t2m/{{chunk}}.zarr.zip",
            ]
        )
        == 0
    )
    with shardedstore.open(layout, mode="r+") as store:
        _dataset(range(2)).to_zarr(store, consolidated=False, zarr_format=3)
    new = _dataset(range(2, 6))
    new["t2m"] = new.t2m.copy(data=new.t2m.data.map_blocks(_failing, dtype="f8"))
    with pytest.raises(RuntimeError), shardedstore.open(layout, mode="r+") as store:
        new.to_zarr(store, append_dim="time", consolidated=False)
    assert _read(layout).identical(_dataset(range(2)).compute())


_PAUSED_APPENDER = textwrap.dedent(
    """
    import subprocess, sys
    import numpy as np, xarray as xr, shardedstore
    from shardedstore import ShardedStore
    config = sys.argv[1]
    OTHER = '''
    import sys, numpy as np, xarray as xr, shardedstore
    import shardedstore.backends.documents as documents
    documents.LOCK_WAIT = 1.0
    ds = xr.Dataset({"t2m": (("time", "x"), np.full((1, 4), 20.0))},
                    coords={"time": [20], "x": np.arange(4)}).chunk({"time": 1})
    try:
        with shardedstore.open(sys.argv[1], mode="r+") as s:
            ds.to_zarr(s, append_dim="time", consolidated=False)
        print("other appended")
    except shardedstore.ConcurrentWriteError:
        print("other refused")
    '''
    original = ShardedStore.get
    seen = {"n": 0}
    async def paused(self, key, *args, **kwargs):
        # This writer has resized `time` and written its value; before it reads t2m's
        # metadata again to resize it, another process appends a whole step.
        if getattr(self, "paused", False) and key == "t2m/zarr.json":
            seen["n"] += 1
            if seen["n"] == 2:
                out = subprocess.run([sys.executable, "-c", OTHER, config],
                                     capture_output=True, text=True)
                print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])
        return await original(self, key, *args, **kwargs)
    ShardedStore.get = paused
    store = shardedstore.open(config, mode="r+")
    store.paused = True
    ds = xr.Dataset({"t2m": (("time", "x"), np.full((1, 4), 30.0))},
                    coords={"time": [30], "x": np.arange(4)}).chunk({"time": 1})
    with store:
        ds.to_zarr(store, append_dim="time", consolidated=False)
    print("this appended")
    """
)


def test_metadata_writers_take_turns_so_no_half_done_append_is_read(layout: Path) -> None:
    """A second appender never works on another's half-done append (which its
    compare-and-swap of each document alone would let through, and which tore the
    dataset: time labels under each other's values, or unequal lengths)."""
    result = subprocess.run(
        [sys.executable, "-c", _PAUSED_APPENDER, str(layout)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["other refused", "this appended"], result.stdout
    ds = _read(layout)
    assert ds.time.values.tolist() == [0, 1, 30]
    assert ds.t2m.values[:, 0].tolist() == [0.0, 100.0, 30.0]
