"""Keys of local directories written atomically with few system calls (``localwrite``).

What ``put`` writes must be what zarr's ``LocalStore`` writes (same bytes, same file
mode, nothing left over), and a write that fails must leave the key as it was: checked
against a plain model, with a full disk injected into some writes.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

import shardedstore
from shardedstore.backends import localwrite
from shardedstore.backends.localwrite import create_store, make_folder, put

KEYS = st.lists(st.sampled_from(["zarr.json", "c", "0", "1", ".zattrs"]), min_size=1, max_size=3)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_put_writes_what_zarrs_local_store_writes(tmp_path: Path) -> None:
    value = b"\x00chunk\xff" * 1000
    buffer = default_buffer_prototype().buffer.from_bytes(value)
    theirs = LocalStore(tmp_path / "theirs")
    for key in ("zarr.json", "c/0/0", "a/b/.zattrs"):
        theirs.set_sync(key, buffer)
        put(str(tmp_path / "ours"), key, buffer.as_buffer_like())
    assert _files(tmp_path / "ours") == _files(tmp_path / "theirs")
    for key in ("zarr.json", "c/0/0"):
        assert (tmp_path / "ours" / key).stat().st_mode == (
            tmp_path / "theirs" / key
        ).stat().st_mode


def test_put_takes_any_contiguous_buffer(tmp_path: Path) -> None:
    values = np.arange(12, dtype="<f8").reshape(3, 4)
    put(str(tmp_path), "c/0", values)
    assert (tmp_path / "c" / "0").read_bytes() == values.tobytes()


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each entry set True makes the next writes fail as a full disk does, after
    writing part of their bytes."""
    failing = [False]
    write = os.write

    def fails(fd: int, data: memoryview) -> int:
        if failing[0]:
            write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(localwrite.os, "write", fails)
    return failing


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.tuples(KEYS.map("/".join), st.binary(min_size=1, max_size=300), st.booleans()),
        max_size=12,
    )
)
def test_put_keeps_each_key_whole_against_a_model(
    tmp_path_factory: pytest.TempPathFactory,
    full_disk: list[bool],
    writes: list[tuple[str, bytes, bool]],
) -> None:
    root = tmp_path_factory.mktemp("store")
    model: dict[str, bytes] = {}
    folders: set[str] = set()  # made by any write that got that far, as zarr's would
    for key, value, fails in writes:
        full_disk[0] = fails
        parents = ["/".join(key.split("/")[:i]) for i in range(1, key.count("/") + 1)]
        file_in_the_way = any(parent in model for parent in parents)
        if not file_in_the_way:
            folders.update(parents)
        if fails or file_in_the_way or key in folders:
            with pytest.raises(OSError):  # noqa: PT011 - ENOSPC, ENOTDIR or EISDIR
                put(str(root), key, value)
        else:
            put(str(root), key, value)
            model[key] = value
    full_disk[0] = False
    assert _files(root) == model  # no temporary file left over, no key half written


def test_a_failed_put_leaves_the_key_as_it_was(tmp_path: Path, full_disk: list[bool]) -> None:
    put(str(tmp_path), "c/0", b"before")
    full_disk[0] = True
    with pytest.raises(OSError, match="No space left") as caught:
        put(str(tmp_path), "c/0", b"after" * 100)
    assert caught.value.errno == errno.ENOSPC
    assert _files(tmp_path) == {"c/0": b"before"}


def test_make_folder_makes_missing_parents_and_keeps_what_is_there(tmp_path: Path) -> None:
    make_folder(str(tmp_path / "a" / "b" / "c"))
    make_folder(str(tmp_path / "a" / "b" / "c"))
    assert (tmp_path / "a" / "b" / "c").is_dir()
    (tmp_path / "file").write_bytes(b"x")
    make_folder(str(tmp_path / "file"))  # a file in the way: the write after fails
    with pytest.raises(NotADirectoryError):
        put(str(tmp_path / "file"), "zarr.json", b"{}")
    assert (tmp_path / "file").read_bytes() == b"x"


def test_create_store_makes_the_folder_and_its_documents(tmp_path: Path) -> None:
    root = tmp_path / "t" / "3.zarr"
    create_store(str(root), [("zarr.json", b"{}"), (".zattrs", b"[]")])
    create_store(str(root), [("zarr.json", b"{}")])  # made again by a second writer
    assert _files(root) == {"zarr.json": b"{}", ".zattrs": b"[]"}


@pytest.mark.parametrize("engine", ["zarr", "zarrs"])
def test_new_shards_hold_what_zarrs_local_store_would_write(tmp_path: Path, engine: str) -> None:
    # Through the layout: each new array shard's folder holds its metadata and chunk,
    # byte for byte what a plain zarr array of the sub-array holds, and nothing else.
    store = shardedstore.ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        array_shard_funcs={"t": (1, shardedstore.array_shard_directory_store(tmp_path / "t"))},
    )
    values = np.arange(5 * 4, dtype="f4").reshape(5, 4)
    with shardedstore.use_engine(engine):
        array = zarr.create_array(store, name="t", shape=(5, 4), chunks=(1, 4), dtype="f4")
        array[:] = values
        plain = zarr.create_array(
            LocalStore(tmp_path / "plain.zarr"), shape=(4,), chunks=(4,), dtype="f4"
        )
    for step in range(5):
        plain[:] = values[step]
        shard = _files(tmp_path / "t" / f"{step}.zarr")
        assert shard.keys() == {"zarr.json", "c/0"}
        assert shard["c/0"] == (tmp_path / "plain.zarr" / "c" / "0").read_bytes()
    np.testing.assert_array_equal(zarr.open_array(store, path="t", mode="r")[:], values)
