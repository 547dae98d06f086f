"""Every store type end to end: an xarray DataTree round trip and a config round trip.

S3 is moto's S3 server on 127.0.0.1 (real HTTP), reached by s3fs (FsspecStore) and by
obstore (ObjectStore); zips are real zip files read by zarr's ZipStore, including one
compressed with Deflate64 by 7-Zip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import FsspecStore, LocalStore, ZipStore

import shardedstore
from shardedstore import ShardedStore, array_shard_directory_store, array_shard_template_store
from shardedstore.cli.demo import build_demo_tree
from tests.conftest import S3Server

pytestmark = [
    pytest.mark.filterwarnings("ignore:Object at .* is not recognized"),
    pytest.mark.filterwarnings("ignore:Duplicate name"),
]

TEMPERATURE = "simulation/fine/temperature"
DEFLATE64 = Path(__file__).parent / "data" / "deflate64" / "people.zarr.zip"


def _write_and_compare(store: ShardedStore, tree: xr.DataTree) -> None:
    tree.to_zarr(store, zarr_format=3, consolidated=False)
    with xr.open_datatree(store, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)


def _reopen_and_compare(store: ShardedStore, tree: xr.DataTree, **kwargs: Any) -> ShardedStore:
    config = json.loads(json.dumps(store.get_config()))
    again = ShardedStore.from_config(config, **kwargs)
    if not kwargs:
        assert again == store
    with xr.open_datatree(again, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)
    return again


def _keys(s3: S3Server, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


# -------------------------------------------------------------------- S3 (s3fs)


def test_s3_fsspec_mount_and_array_shards(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    options = s3_server.storage_options
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {"people": FsspecStore.from_url(f"s3://{s3_bucket}/people.zarr", storage_options=options)},
        {
            TEMPERATURE: (
                1,
                array_shard_template_store(
                    {
                        "type": "fsspec",
                        "url": f"s3://{s3_bucket}/temperature/{{chunk}}.zarr",
                        "storage_options": options,
                    }
                ),
            )
        },
    )
    tree = build_demo_tree()
    _write_and_compare(store, tree)
    keys = _keys(s3_server, s3_bucket)
    assert "people.zarr/zarr.json" in keys
    assert {k.split("/")[1] for k in keys if k.startswith("temperature/")} == {
        f"{i}.zarr" for i in range(12)
    }
    assert not (tmp_path / "base.zarr" / "people").exists()
    config = store.get_config()
    assert config["mounts"]["people"] == {
        "type": "fsspec",
        "url": f"s3://{s3_bucket}/people.zarr",
        "storage_options": options,
    }
    again = _reopen_and_compare(store, tree)
    # The shards are listed on S3 itself: a fresh store sees all 12 without probing.
    factory = again.array_shards[TEMPERATURE][1]
    assert sorted(factory.existing_chunk_indices(), key=int) == [str(i) for i in range(12)]
    assert len([k for k in again.as_mapping() if k.startswith(TEMPERATURE + "/c/")]) == 12 * 2 * 2


def test_s3_dataset_with_its_config_in_the_bucket(s3_server: S3Server, s3_bucket: str) -> None:
    options = s3_server.storage_options
    root = f"s3://{s3_bucket}/ds"
    store = ShardedStore(
        FsspecStore.from_url(f"{root}/base.zarr", storage_options=options),
        {"people": FsspecStore.from_url(f"{root}/people.zarr", storage_options=options)},
        {
            TEMPERATURE: (
                1,
                array_shard_template_store(
                    {
                        "type": "fsspec",
                        "url": f"{root}/t/{{chunk}}.zarr",
                        "storage_options": options,
                    }
                ),
            )
        },
    )
    tree = build_demo_tree()
    _write_and_compare(store, tree)
    store.save_config(f"{root}/layout.json", storage_options=options)
    written = json.loads(
        boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
        .get_object(Bucket=s3_bucket, Key="ds/layout.json")["Body"]
        .read()
    )
    assert written["base"]["url"] == "base.zarr"  # relative to the config's own location
    assert written["array_shards"][TEMPERATURE]["store"]["url"] == "t/{chunk}.zarr"
    reopened = shardedstore.open(f"{root}/layout.json", storage_options=options)
    assert reopened.read_only
    assert reopened == store.with_read_only(True) or reopened.get_config() == store.get_config()
    with xr.open_datatree(reopened, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)


# ------------------------------------------------------------------- obstore


def test_obstore_on_s3(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    import obstore.store

    def s3(prefix: str) -> zarr.abc.store.Store:
        return zarr.storage.ObjectStore(
            obstore.store.S3Store(
                s3_bucket,
                prefix=prefix,
                config=s3_server.obstore_config,
                client_options=s3_server.obstore_client_options,
            )
        )

    template = {
        "type": "obstore",
        "url": f"s3://{s3_bucket}/t/{{chunk}}.zarr",
        "config": s3_server.obstore_config,
        "client_options": s3_server.obstore_client_options,
    }
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {"people": s3("people.zarr"), "simulation/coarse": s3("coarse.zarr")},
        {TEMPERATURE: (1, array_shard_template_store(template))},
    )
    tree = build_demo_tree()
    _write_and_compare(store, tree)
    keys = _keys(s3_server, s3_bucket)
    assert "people.zarr/zarr.json" in keys
    assert "t/11.zarr/zarr.json" in keys
    config = store.get_config()
    assert config["mounts"]["people"]["url"] == f"s3://{s3_bucket}/people.zarr"
    assert config["mounts"]["people"]["client_options"] == {"allow_http": "true"}
    again = _reopen_and_compare(store, tree)
    assert len(again.array_shards[TEMPERATURE][1].existing_chunk_indices()) == 12


def test_obstore_local_filesystem(tmp_path: Path) -> None:
    import obstore.store

    def local(name: str) -> zarr.abc.store.Store:
        return zarr.storage.ObjectStore(obstore.store.LocalStore(tmp_path / name, mkdir=True))

    store = ShardedStore(
        local("base.zarr"),
        {"people": local("people.zarr")},
        {
            TEMPERATURE: (
                1,
                array_shard_template_store(
                    {"type": "obstore", "url": f"file://{tmp_path}/t/{{chunk}}.zarr", "mkdir": True}
                ),
            )
        },
    )
    tree = build_demo_tree()
    _write_and_compare(store, tree)
    assert (tmp_path / "people.zarr" / "zarr.json").is_file()
    assert (tmp_path / "t" / "3.zarr" / "c" / "0" / "0").is_file()
    _reopen_and_compare(store, tree)


# ---------------------------------------------------------------------- zips


def _zip_directory(directory: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(directory).as_posix())


def test_zip_mounts_and_zip_array_shards(tmp_path: Path) -> None:
    tree = build_demo_tree()
    source = tmp_path / "dirs"
    written = ShardedStore(
        LocalStore(source / "base.zarr"),
        {
            "people": LocalStore(source / "people.zarr"),
            "simulation/coarse": LocalStore(source / "coarse.zarr"),
        },
        {TEMPERATURE: (1, array_shard_directory_store(source / "t"))},
    )
    tree.to_zarr(written, zarr_format=3, consolidated=False)
    zips = tmp_path / "zips"
    _zip_directory(source / "people.zarr", zips / "people.zarr.zip")
    _zip_directory(source / "coarse.zarr", zips / "coarse.zarr.zip")
    for shard in (source / "t").iterdir():
        _zip_directory(shard, zips / "t" / f"{shard.name}.zip")
    store = ShardedStore(
        LocalStore(source / "base.zarr"),
        {
            "people": ZipStore(zips / "people.zarr.zip"),
            "simulation/coarse": ZipStore(zips / "coarse.zarr.zip"),
        },
        {
            TEMPERATURE: (
                1,
                array_shard_template_store(
                    {"type": "zip", "path": f"{zips}/t/{{chunk}}.zarr.zip", "mode": "r"}
                ),
            )
        },
    )
    with xr.open_datatree(store, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)
    config = store.get_config(relative_to=tmp_path)
    assert config["mounts"]["people"] == {
        "type": "zip",
        "path": "zips/people.zarr.zip",
        "mode": "r",
    }
    again = _reopen_and_compare(store, tree, base_path=tmp_path)
    assert sorted(again.array_shards[TEMPERATURE][1].existing_chunk_indices(), key=int) == [
        str(i) for i in range(12)
    ]


def test_zip_array_shards_are_written_lazily_as_zips(tmp_path: Path) -> None:
    template = {"type": "zip", "path": f"{tmp_path}/shards/{{chunk}}.zarr.zip"}
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"t": (1, array_shard_template_store(template))}
    )
    array = zarr.create_array(
        store, name="t", shape=(4, 6), chunks=(1, 3), dtype="i4", fill_value=-1
    )
    assert array[2, 0] == -1
    assert not (tmp_path / "shards").exists()  # reading a missing shard creates no zip
    array[1:3] = np.arange(12).reshape(2, 6)
    store.close()
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["1.zarr.zip", "2.zarr.zip"]
    with zipfile.ZipFile(tmp_path / "shards" / "2.zarr.zip") as zf:
        assert zf.testzip() is None
        assert {"zarr.json", "c/0", "c/1"} <= set(zf.namelist())
    alone = zarr.open_array(ZipStore(tmp_path / "shards" / "2.zarr.zip"), mode="r")
    assert alone[:].tolist() == list(range(6, 12))
    reopened = ShardedStore.from_config(store.get_config(), read_only=True)
    assert zarr.open_array(reopened, path="t")[:].tolist() == [
        [-1] * 6,
        *np.arange(12).reshape(2, 6).tolist(),
        [-1] * 6,
    ]


def test_deflate64_zip_reads_through_inflate64(tmp_path: Path) -> None:
    with zipfile.ZipFile(DEFLATE64) as zf:  # made by 7-Zip: 7z a -tzip -mm=Deflate64
        assert {info.compress_type for info in zf.infolist() if not info.is_dir()} == {9}
    # Python's zipfile alone cannot read it; shardedstore reads it through inflate64.
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import zipfile; zipfile.ZipFile({str(DEFLATE64)!r}).read('zarr.json')",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert plain.returncode != 0
    assert "compression method is not supported" in plain.stderr
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {"people": {"type": "zip", "path": str(DEFLATE64), "mode": "r"}},
    }
    (tmp_path / "layout.json").write_text(json.dumps(config))
    script = (
        "import shardedstore, zarr, numpy as np;"
        f"s = shardedstore.open({str(tmp_path / 'layout.json')!r});"
        "a = zarr.open_array(s, path='people/height', mode='r');"
        "assert (a[:] == np.arange(4096) % 97).all(), 'wrong values';"
        "print(zarr.open_group(s, path='people', mode='r').attrs['description'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Deflate64 fixture" in result.stdout


# -------------------------------------------------------------- nested stores


def test_nested_sharded_store_as_a_mount(tmp_path: Path) -> None:
    inner = ShardedStore(
        LocalStore(tmp_path / "simulation.zarr"),
        {"coarse": ZipStore(tmp_path / "coarse.zarr.zip", mode="w")},
        {"fine/temperature": (1, array_shard_directory_store(tmp_path / "t"))},
    )
    store = ShardedStore(
        LocalStore(tmp_path / "base.zarr"),
        {"simulation": inner, "people": LocalStore(tmp_path / "people.zarr")},
    )
    tree = build_demo_tree()
    _write_and_compare(store, tree)
    store.close()
    assert (tmp_path / "t" / "11.zarr" / "zarr.json").is_file()
    assert (tmp_path / "simulation.zarr" / "fine" / "temperature" / "zarr.json").is_file()
    assert not (tmp_path / "base.zarr" / "simulation").exists()
    with zipfile.ZipFile(tmp_path / "coarse.zarr.zip") as zf:
        assert zf.testzip() is None
    config = store.get_config(relative_to=tmp_path)
    assert config["mounts"]["simulation"]["type"] == "sharded"
    assert config["mounts"]["simulation"]["array_shards"] == {
        "fine/temperature": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}
    }
    (tmp_path / "layout.json").write_text(json.dumps(config))
    reopened = shardedstore.open(tmp_path / "layout.json")
    with xr.open_datatree(reopened, engine="zarr", consolidated=False) as back:
        assert back.identical(tree)
