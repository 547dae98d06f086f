"""The fsspec protocol of layouts: ``shardedstore::CONFIG`` for clients that take a URL."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

import shardedstore
from shardedstore import (
    ArgumentError,
    ConfigError,
    ReadOnlyError,
    ShardedFileSystem,
    ShardedStore,
    array_shard_directory_store,
    to_zip_store_with_prefix,
)
from shardedstore.fsspec import PROTOCOL
from tests._s3counter import CountedS3, build_layout, counted_s3

__all__ = ["counted_s3"]

ROOT = Path(__file__).parent.parent


@pytest.fixture(autouse=True)
def registered() -> None:
    """The protocol as the entry point registers it once installed (see the packaging
    test below for the entry point itself)."""
    fsspec.register_implementation(PROTOCOL, ShardedFileSystem, clobber=True)


def _values() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(23)
    return rng.random((5, 6, 4)).astype("f4"), rng.integers(0, 100, 3).astype("i8")


def _write(folder: Path, zarr_format: int) -> Path:
    """A layout with a mount and an array-sharded array; its config's path."""
    temp, heights = _values()
    store = ShardedStore(
        LocalStore(folder / "base.zarr"),
        {"people": LocalStore(folder / "people.zarr")},
        {"temp": (1, array_shard_directory_store(folder / "temp"))},
    )
    ds = xr.Dataset(
        {"temp": (("t", "y", "x"), temp)}, coords={"t": np.arange(5)}, attrs={"title": "x"}
    )
    ds.chunk({"t": 1, "y": 3, "x": 2}).to_zarr(store, consolidated=False, zarr_format=zarr_format)
    people = xr.Dataset({"heights": ("p", heights)})
    people.to_zarr(store, group="people", consolidated=False, zarr_format=zarr_format)
    store.close()
    store.save_config(folder / "layout.json")
    return folder / "layout.json"


@pytest.fixture(params=["directory", "zip"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A layout of directories, or the same converted to zips."""
    config = _write(tmp_path / "ds", 3)
    if request.param == "zip":
        zipped = shardedstore.open(config).map_shards(
            to_zip_store_with_prefix(tmp_path / "zips" / "ds"), progress=False
        )
        zipped.save_config(tmp_path / "zips" / "ds.json")
        return tmp_path / "zips" / "ds.json"
    return config


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_and_xarray_read_the_merged_hierarchy_by_url(tmp_path: Path, zarr_format: int) -> None:
    config = _write(tmp_path, zarr_format)
    url = f"{PROTOCOL}::{config}"
    temp, heights = _values()
    group = zarr.open_group(url, mode="r")
    assert sorted(group.keys()) == ["people", "t", "temp"]
    np.testing.assert_array_equal(group["temp"][:], temp)
    np.testing.assert_array_equal(group["people/heights"][:], heights)
    ds = xr.open_zarr(url, consolidated=False)
    assert ds.attrs == {"title": "x"}
    np.testing.assert_array_equal(ds.temp.values, temp)
    people = xr.open_zarr(url, group="people", consolidated=False)
    np.testing.assert_array_equal(people.heights.values, heights)
    # One node of the hierarchy by URL: shardedstore://NODE::CONFIG.
    node = zarr.open_group(f"{PROTOCOL}://people::{config}", mode="r")
    np.testing.assert_array_equal(node["heights"][:], heights)


def test_fsspec_store_lists_exactly_what_the_layout_holds(layout: Path) -> None:
    store = shardedstore.open(layout)
    expected = dict(store.as_mapping())
    fs_store = FsspecStore.from_url(f"{PROTOCOL}::{layout}", read_only=True)

    async def listed() -> tuple[list[str], list[str], list[str]]:
        keys = [key async for key in fs_store.list()]
        root = [name async for name in fs_store.list_dir("")]
        people = [name async for name in fs_store.list_prefix("people/")]
        return keys, root, people

    keys, root, people = zarr.core.sync.sync(listed())
    assert sorted(keys) == sorted(expected)
    assert sorted(root) == ["people", "t", "temp", "zarr.json"]
    assert sorted(people) == sorted(k for k in expected if k.startswith("people/"))
    mapper = fsspec.get_mapper(f"{PROTOCOL}::{layout}")
    assert dict(mapper) == expected  # every key of every shard, the same bytes


def test_filesystem_methods(layout: Path, tmp_path: Path) -> None:
    store = shardedstore.open(layout)
    fs = fsspec.filesystem(PROTOCOL, fo=str(layout))
    assert isinstance(fs, ShardedFileSystem)
    assert fs.store.read_only
    assert fs.ls("", detail=False) == ["/people", "/t", "/temp", "/zarr.json"]
    info = {entry["name"]: entry for entry in fs.ls("/people", detail=True)}
    assert info["/people/zarr.json"]["type"] == "file"
    assert info["/people/heights"]["type"] == "directory"
    assert fs.info("temp/c/3/0/0") == {
        "name": "/temp/c/3/0/0",
        "size": zarr.core.sync.sync(store.getsize("temp/c/3/0/0")),
        "type": "file",
    }
    assert fs.isdir("temp/c")
    assert fs.isfile("temp/zarr.json")
    assert not fs.exists("nothing")
    chunks = fs.find("temp/c")
    assert len(chunks) == 5 * 2 * 2
    assert chunks[0] == "/temp/c/0/0/0"
    assert "/temp/c/4" in fs.find("temp", withdirs=True)
    assert fs.find("temp", maxdepth=1) == ["/temp/zarr.json"]
    assert fs.find("temp", maxdepth=1, withdirs=True) == ["/temp", "/temp/c", "/temp/zarr.json"]
    assert fs.find("temp", maxdepth=2, withdirs=True)[:3] == ["/temp", "/temp/c", "/temp/c/0"]
    assert fs.find("temp/zarr.json") == ["/temp/zarr.json"]
    assert fs.find("temp/zarr.json", withdirs=True) == ["/temp/zarr.json"]
    assert fs.find("nothing") == fs.find("nothing", withdirs=True) == []
    assert fs.find("", maxdepth=1) == ["/zarr.json"]
    found = fs.find("people", detail=True, withdirs=True)
    assert found["/people/heights"]["type"] == "directory"
    assert found["/people/zarr.json"]["size"] == len(fs.cat("people/zarr.json"))
    data = zarr.core.sync.sync(store.get("temp/c/4/1/1")).to_bytes()
    assert fs.cat("temp/c/4/1/1") == data
    assert fs.cat_file("temp/c/4/1/1", start=3, end=9) == data[3:9]
    assert fs.cat_file("temp/c/4/1/1", start=-5) == data[-5:]
    assert fs.cat_file("temp/c/4/1/1", start=2, end=-2) == data[2:-2]
    assert fs.cat_file("temp/c/4/1/1", start=5, end=5) == b""
    ranges = fs.cat_ranges(["temp/c/4/1/1", "temp/c/0/0/0", "nope"], [1, None, 0], [4, None, 2])
    assert ranges[:2] == [data[1:4], zarr.core.sync.sync(store.get("temp/c/0/0/0")).to_bytes()]
    assert isinstance(ranges[2], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        fs.cat("temp/c/9/0/0")
    with fs.open("people/zarr.json") as f:
        assert json.loads(f.read())["node_type"] == "group"
    fs.get("people", str(tmp_path / "got"), recursive=True)
    assert json.loads((tmp_path / "got" / "heights" / "zarr.json").read_text())["shape"] == [3]
    again = pickle.loads(pickle.dumps(fs))  # as dask sends it to a worker
    assert again.config == str(layout)
    assert again.cat("temp/c/4/1/1") == data
    assert fs.unstrip_protocol("/temp/zarr.json") == f"{PROTOCOL}://temp/zarr.json::{layout}"
    with fsspec.open(fs.unstrip_protocol("/temp/zarr.json")) as f:
        assert json.loads(f.read())["shape"] == [5, 6, 4]


def test_other_fsspec_readers_arrow_and_duckdb(layout: Path) -> None:
    import duckdb
    import pyarrow.fs as pafs

    fs = fsspec.filesystem(PROTOCOL, fo=str(layout))
    arrow = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    found = arrow.get_file_info(pafs.FileSelector("people", recursive=True))
    assert "/people/heights/zarr.json" in {info.path for info in found}
    with arrow.open_input_file("temp/zarr.json") as f:
        assert json.loads(f.read())["shape"] == [5, 6, 4]
    connection = duckdb.connect()
    connection.register_filesystem(fs)
    query = f"SELECT shape FROM read_json_auto('{PROTOCOL}://temp/zarr.json')"
    assert connection.sql(query).fetchall() == [([5, 6, 4],)]
    globbed = connection.sql(f"SELECT count(*) FROM glob('{PROTOCOL}://temp/c/*/*/*')")
    assert globbed.fetchall() == [(20,)]


def test_writes_are_refused_naming_the_store_api(layout: Path, tmp_path: Path) -> None:
    before = _tree(layout.parent)
    url = f"{PROTOCOL}::{layout}"
    opener = f"shardedstore.open({str(layout)!r}, mode='r+')"
    with pytest.raises(ReadOnlyError, match=re.escape(opener)):
        zarr.open_group(url, mode="w")
    with pytest.raises(ReadOnlyError, match="shardedstore import SRC"):
        zarr.open_group(url, mode="a").create_array("new", shape=(2,), dtype="i4")
    with pytest.raises(ReadOnlyError):
        xr.Dataset({"a": ("x", [1])}).to_zarr(url, group="other", consolidated=False)
    fs = fsspec.filesystem(PROTOCOL, fo=str(layout))
    (tmp_path / "local").write_bytes(b"x")
    for write in (
        lambda: fs.pipe("a", b"x"),
        lambda: fs.rm("temp", recursive=True),
        lambda: fs.rm_file("temp/zarr.json"),
        lambda: fs.mkdir("d"),
        lambda: fs.makedirs("d/e"),
        lambda: fs.put(str(tmp_path / "local"), "local"),
        lambda: fs.copy("temp/zarr.json", "copy.json"),
        lambda: fs.mv("temp/zarr.json", "moved.json"),
        lambda: fs.open("temp/zarr.json", "wb"),
        lambda: fs.touch("t"),
        lambda: fs.rmdir("temp"),
    ):
        with pytest.raises(ReadOnlyError, match="read-only"):
            write()
    with pytest.raises(ReadOnlyError, match="mode='r\\+'"):
        ShardedFileSystem(str(layout), mode="r+")  # type: ignore[arg-type]
    assert _tree(layout.parent) == before  # nothing was written or deleted


def test_errors_name_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.json"):
        zarr.open_group(f"{PROTOCOL}::{tmp_path / 'nope.json'}", mode="r")
    with pytest.raises(ArgumentError, match=r"storage_options=\{'s3'"):
        fsspec.filesystem(PROTOCOL, fo=str(tmp_path / "x.json"), endpoint_url="http://x")
    with pytest.raises(ArgumentError, match="shardedstore::PATH_OR_URL"):
        fsspec.filesystem(PROTOCOL)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "layout.json").write_text("{}")
    with pytest.raises(IsADirectoryError, match=r"takes the layout's config file, e\.g\. "):
        zarr.open_group(f"{PROTOCOL}::{tmp_path / 'folder'}/", mode="r")
    # dims that contradict the data: refused as shardedstore.open refuses them, at the
    # first read (zarr makes the filesystem on its event loop, which nothing may block).
    config = _write(tmp_path / "ds", 3)
    text = json.loads(config.read_text())
    text["array_shards"]["temp"]["dims"] = 2
    config.write_text(json.dumps(text))
    with pytest.raises(ConfigError, match=r"array_shards\.temp\.dims"):
        shardedstore.open(config)
    with pytest.raises(ConfigError, match=r"array_shards\.temp\.dims"):
        zarr.open_group(f"{PROTOCOL}::{config}", mode="r")


def test_a_store_object_through_fsspec(tmp_path: Path) -> None:
    config = _write(tmp_path, 3)
    writer = shardedstore.open(config, mode="r+")
    fs = ShardedFileSystem(writer, asynchronous=True)
    assert fs.store.read_only
    assert fs.config is None
    group = zarr.open_group(FsspecStore(fs, path="", read_only=True), mode="r")
    np.testing.assert_array_equal(group["temp"][:], _values()[0])
    writer.close()


# --------------------------------------------------------------- remote, cached


def _wait_idle(store: ShardedStore, timeout: float = 20.0) -> None:
    read_ahead = store._read_ahead
    assert read_ahead is not None
    deadline = time.monotonic() + timeout
    while read_ahead.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert read_ahead.in_flight == 0


def test_remote_zip_shards_read_through_the_cache_and_ahead(
    counted_s3: CountedS3, tmp_path: Path
) -> None:
    import s3fs

    steps = 6
    url, config, values = build_layout(tmp_path, counted_s3, "zip", steps)
    cache = tmp_path / "cache"
    config = {**config, "cache": {"dir": str(cache), "read_ahead": 2}}
    s3 = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": counted_s3.endpoint}, skip_instance_cache=True
    )
    s3.pipe_file(f"{url.removeprefix('s3://')}/layout.json", json.dumps(config).encode())
    options = {"s3": counted_s3.storage_options}
    counted_s3.requests.clear()
    array = zarr.open_array(
        f"{PROTOCOL}::{url}/layout.json", path="temp", mode="r", storage_options=options
    )
    with fsspec.open(f"{PROTOCOL}::{url}/layout.json/temp/zarr.json", **options) as f:
        assert json.loads(f.read())["shape"][0] == steps  # a key appended to a remote URL
    store = array.store.fs.store
    assert store.cache is not None
    assert store.cache.read_ahead == 2
    np.testing.assert_array_equal(array[0], values[0])
    np.testing.assert_array_equal(array[1], values[1])  # in order: read ahead
    _wait_idle(store)
    gets = [counted_s3.requests.count("GET", f"/t/{t}.zarr.zip") for t in range(steps)]
    assert gets == [1, 1, 1, 1, 0, 0]  # one GET per zip, two fetched ahead
    assert any(cache.rglob("*"))  # kept on disk, for the next reader too
    counted_s3.requests.clear()
    np.testing.assert_array_equal(array[2:4], values[2:4])
    assert counted_s3.requests.count("GET", "/t/2.zarr.zip") == 0  # from the cache
    assert counted_s3.requests.count("GET", "/t/3.zarr.zip") == 0


# --------------------------------------------------------------- registration


def test_the_entry_point_registers_the_protocol_with_fsspec(tmp_path: Path) -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    value = project["entry-points"]["fsspec.specs"][PROTOCOL]
    assert value == f"{ShardedFileSystem.__module__}:{ShardedFileSystem.__qualname__}"
    # As an install writes it: a distribution whose entry_points.txt names the protocol.
    # fsspec, in a fresh process, finds it there without anything registering it.
    dist = tmp_path / "site" / "shardedstore_ep-0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shardedstore-ep\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[fsspec.specs]\n{PROTOCOL} = {value}\n")
    script = f"import fsspec; print(fsspec.get_filesystem_class({PROTOCOL!r}).__qualname__)"
    paths = [str(tmp_path / "site"), str(ROOT)]
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path[:0] = {paths!r}; {script}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ShardedFileSystem"


# ------------------------------------------------------------- public names


def test_what_open_returns_is_named_shardedstore_in_client_errors(tmp_path: Path) -> None:
    from ome_zarr.io import parse_url

    config = _write(tmp_path, 3)
    store = shardedstore.open(config)
    assert type(store).__name__ == type(store).__qualname__ == "ShardedStore"
    assert repr(store).startswith("ShardedStore(")
    assert "_Sync" not in repr(type(store))
    with pytest.raises(zarr.errors.GroupNotFoundError) as missing:
        zarr.open_group(store, path="nothing/here", mode="r")
    assert "_Sync" not in str(missing.value)
    path = zarr.storage.StorePath(store, "temp")
    assert repr(path).startswith("StorePath(ShardedStore, ")
    refusal = None
    try:
        location = parse_url(store)  # type: ignore[arg-type]
    except TypeError as error:  # ome-zarr-py 0.18 takes only its own store types
        refusal = str(error)
    if refusal is not None:
        assert refusal.endswith("ShardedStore'>")
        assert "_Sync" not in refusal
    else:  # newer releases take any zarr store
        assert location is not None
        assert "_Sync" not in repr(location)


# ------------------------------------------------------- a key appended to the URL


def test_a_key_or_node_appended_to_the_url(layout: Path) -> None:
    """Clients build URLs by appending keys (``url + "/zarr.json"``): what follows the
    config's name is a node of the hierarchy, the filesystem rooted there."""
    url = f"{PROTOCOL}::{layout}"
    store = shardedstore.open(layout)
    expected = dict(store.as_mapping())
    with fsspec.open(url + "/zarr.json") as f:
        assert f.read() == expected["zarr.json"]
    with fsspec.open(url + "/people/heights/zarr.json") as f:
        assert f.read() == expected["people/heights/zarr.json"]
    people = zarr.open_group(url + "/people", mode="r")
    np.testing.assert_array_equal(people["heights"][:], _values()[1])
    ds = xr.open_zarr(url + "/people", consolidated=False)
    np.testing.assert_array_equal(ds.heights.values, _values()[1])
    fs, path = fsspec.core.url_to_fs(url + "/people")
    assert (fs.node, path) == ("people", "")
    assert repr(fs) == f"ShardedFileSystem({str(layout)!r}, node='people')"
    assert fs.ls("", detail=False) == ["/heights", "/zarr.json"]
    assert fs.find("", withdirs=True)[:2] == ["/heights", "/heights/c"]
    assert dict(fsspec.get_mapper(url + "/people")) == {
        key.removeprefix("people/"): value
        for key, value in expected.items()
        if key.startswith("people/")
    }
    again = pickle.loads(pickle.dumps(fs))
    assert again.node == "people"
    assert again.cat("zarr.json") == expected["people/zarr.json"]
    # The URL of a path reaches it again from anywhere.
    with fsspec.open(fs.unstrip_protocol("/heights/zarr.json")) as f:
        assert f.read() == expected["people/heights/zarr.json"]
    with pytest.raises(FileNotFoundError, match=r"'people/nope' is in no store of the layout"):
        fsspec.open(url + "/people/nope").open()


def test_a_missing_key_names_itself_and_the_layout(layout: Path) -> None:
    fs = fsspec.filesystem(PROTOCOL, fo=str(layout))
    with pytest.raises(
        FileNotFoundError,
        match=rf"'temp/c/9/0/0' is in no store of the layout {re.escape(str(layout))}",
    ):
        fs.cat("temp/c/9/0/0")


def test_invalidate_cache_reads_the_layout_afresh(layout: Path) -> None:
    """A kept filesystem reads each zip as first opened (a snapshot); after a writer
    committed, invalidate_cache() shows what it wrote, as fsspec clients expect."""
    fs = fsspec.filesystem(PROTOCOL, fo=str(layout))
    key = "temp/c/4/1/1"
    before = fs.cat(key)
    writer = shardedstore.open(layout, mode="r+")
    zarr.core.sync.sync(
        writer.set(key, zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"new"))
    )
    writer.close()
    assert fs.cat(key) in (before, b"new")  # a zip's snapshot, or a directory as it is
    fs.invalidate_cache()
    assert fs.cat(key) == b"new"
    assert fs.info(key)["size"] == 3
    # The config too: a layout converted to zips, its config rewritten in place.
    if layout.name == "layout.json":
        zipped = shardedstore.open(layout).map_shards(
            to_zip_store_with_prefix(layout.parent / "zipped"), progress=False
        )
        config = zipped.get_config()
        layout.write_text(json.dumps(config))
        fs.invalidate_cache()
        assert fs.cat(key) == b"new"
        assert "zipped" in json.dumps(fs.store.get_config())


def test_an_emptied_array_shard_lists_and_walks_as_a_directory(tmp_path: Path) -> None:
    # Its chunks deleted, a directory shard keeps its folder and zarr.json: the store
    # lists it (t/c, t/c/2) as a directory store lists an emptied folder, and fsspec's
    # ls (with details), info and walk, which ask each listed entry's info, agree.
    config = _write(tmp_path / "ds", 3)
    store = shardedstore.open(config, mode="r+")
    for key in [k for k in store.as_mapping() if k.startswith("temp/c/")]:
        sync(store.delete(key))
    store.close()
    fs = fsspec.filesystem(PROTOCOL, fo=str(config))
    kinds = {entry["name"]: entry["type"] for entry in fs.ls("temp")}
    assert kinds == {"/temp/zarr.json": "file", "/temp/c": "directory"}
    assert fs.info("temp/c")["type"] == "directory"
    assert fs.info("temp/c/2")["type"] == "directory"
    assert fs.ls("temp/c/2") == []
    walked = {path: files for path, _, files in fs.walk("")}
    assert walked["/temp"] == ["zarr.json"]
    assert "/temp/c" in walked
    assert not fs.exists("temp/c/2/0/0")
    with pytest.raises(FileNotFoundError):
        fs.info("temp/c/9")
