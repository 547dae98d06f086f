"""Write errors name the key and the final path, never a temporary file.

Writes go through temporary names (zarr's ``NAME.<hex>.partial``, the staging
directory of a copy-on-write zip, the ``NAME.partial-<hex>`` outputs of ``convert`` and
chunk tables); an error there used to name that temporary path.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

import shardedstore
from shardedstore import ShardedStore, array_shard_directory_store
from shardedstore.backends.oserrors import final_path, without_temporary_names

CLI = str(Path(sys.executable).parent / "shardedstore")


def _no_temporary_name(text: str) -> None:
    assert ".partial" not in text
    assert ".staging-" not in text


def test_a_store_write_names_the_key_and_its_file(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore(tmp_path / "base.zarr"))
    (tmp_path / "base.zarr" / "a" / "b" / "c").mkdir(parents=True)  # where the file goes
    value = default_buffer_prototype().buffer.from_bytes(b"x")
    for write in (
        lambda: store.as_mapping().__setitem__("a/b", b"x"),
        lambda: sync(store.set("a/b", value)),
    ):
        with pytest.raises(IsADirectoryError) as caught:
            write()
        message = str(caught.value)
        assert message == (
            f"[Errno {errno.EISDIR}] {os.strerror(errno.EISDIR)} (writing 'a/b'): "
            f"'{tmp_path}/base.zarr/a/b'"
        )
        _no_temporary_name(message)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_chunk_write_names_the_chunk_key_and_its_file_in_the_array_shard(
    tmp_path: Path, zarr_format: int
) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {},
        {"t": (1, array_shard_directory_store(tmp_path / "t"))},
    )
    array = zarr.create_array(
        store, name="t", shape=(2, 2, 3), chunks=(1, 1, 3), dtype="i2", zarr_format=zarr_format
    )
    array[0, 0] = 1  # array shard 0 exists, chunk (0, 1, 0) not
    # zarr v2 names chunk (0, 1, 0) "0.1.0": in array shard 0 it is "1.0".
    inner = "c/1/0" if zarr_format == 3 else "1.0"
    (tmp_path / "t" / "0.zarr" / inner / "x").mkdir(parents=True)
    key = "t/c/0/1/0" if zarr_format == 3 else "t/0.1.0"
    with pytest.raises(IsADirectoryError) as caught:
        array[0, 1] = 7
    message = str(caught.value)
    assert message.endswith(f" (writing {key!r}): '{tmp_path}/t/0.zarr/{inner}'")
    _no_temporary_name(message)


def test_convert_names_the_output_not_its_temporary_name(tmp_path: Path) -> None:
    store = ShardedStore(LocalStore(tmp_path / "base.zarr"), {"m": LocalStore(tmp_path / "m")})
    zarr.create_array(store, name="m/x", shape=(3,), dtype="i2")[:] = 1
    store.close()
    store.save_config(tmp_path / "layout.json")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ds").write_text("a file where the output's folder goes")
    out = str(tmp_path / "out" / "ds")
    result = subprocess.run(
        [CLI, "convert", str(tmp_path / "layout.json"), "--to", "directory", "--out", out, "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f"mount 'm' failed: NotADirectoryError: [Errno {errno.ENOTDIR}]" in line
    assert f": '{tmp_path}/out/ds/m.zarr';" in line
    _no_temporary_name(line)


def test_a_chunk_table_write_names_the_file(tmp_path: Path) -> None:
    plain = LocalStore(tmp_path / "p.zarr")
    zarr.create_array(plain, name="a", shape=(4,), chunks=(2,), dtype="i4")[:] = 1
    out = tmp_path / "chunks"
    shardedstore.write_chunk_table(plain, out)
    (out / "array=a" / "base.parquet").unlink()
    (out / "array=a" / "base.parquet" / "x").mkdir(parents=True)
    with pytest.raises(IsADirectoryError) as caught:
        shardedstore.write_chunk_table(plain, out, stats="min")
    assert str(caught.value).endswith(f": '{out}/array=a/base.parquet'")
    _no_temporary_name(str(caught.value))


@pytest.mark.parametrize(
    ("path", "final"),
    [
        # A zip's staging directory and what is in it, as ENOSPC names them: the zip.
        ("/d/t/.1.zip.staging-e9adf10a2d5b/.shardedstore-staging", "/d/t/1.zip"),
        ("/d/t/.1.zip.staging-e9adf10a2d5b/c/0", "/d/t/1.zip"),
        ("/d/.base.zip.partial-0123456789ab", "/d/base.zip"),  # a commit
        ("/d/t/.3.zarr.zip.lock", "/d/t/3.zarr.zip"),  # a writer's lock
        ("/d/out/m.zarr.partial-42a85120f99d/x/c/2", "/d/out/m.zarr/x/c/2"),  # convert
        ("/d/b.zarr/c/0." + "f" * 32 + ".partial", "/d/b.zarr/c/0"),  # zarr's LocalStore
        ("/d/b.zarr/zarr." + "0" * 32 + ".partial", "/d/b.zarr/zarr"),  # (suffix dropped)
        ("/d/b.zarr/c/0", None),
        ("/d/notes.partial", None),
    ],
)
def test_temporary_names_and_their_final_paths(path: str, final: str | None) -> None:
    assert final_path(path) == final
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    public = without_temporary_names(error, key="t/c/1/0")
    assert type(public) is OSError
    assert public.errno == errno.ENOSPC
    assert public.filename == (final or path)
    assert "(writing 't/c/1/0')" in str(public)


def test_zarrs_temporary_file_takes_the_name_of_the_key() -> None:
    path = "/d/b.zarr/zarr." + "a" * 32 + ".partial"
    assert final_path(path, "zarr.json") == "/d/b.zarr/zarr.json"
    assert final_path(path, "other.json") == "/d/b.zarr/zarr"  # not that file's
    error = PermissionError(errno.EACCES, "Permission denied", path)
    public = without_temporary_names(error, name="zarr.json")
    assert type(public) is PermissionError
    assert str(public) == "[Errno 13] Permission denied: '/d/b.zarr/zarr.json'"
    timeout = shardedstore.RemoteTimeoutError("reading", "s3://b/x." + "a" * 32 + ".partial", 1)
    assert without_temporary_names(timeout, key="k") is timeout  # not a builtin: as it is
