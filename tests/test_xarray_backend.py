"""xarray opens layout configs: engine="shardedstore", through xarray's public API only."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from xarray.backends.plugins import guess_engine
from zarr.errors import GroupNotFoundError
from zarr.storage import FsspecStore, LocalStore

import shardedstore
from shardedstore import (
    ConfigError,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from tests._openfiles import CAN_LIST, open_files_below

LEGACY = Path(__file__).parent / "data" / "legacy"


def _tree() -> xr.DataTree:
    rng = np.random.default_rng(0)
    time = pd.date_range("2024-01-01", periods=4, freq="D")
    fine = xr.Dataset(
        {
            "temperature": (("time", "y", "x"), rng.random((4, 3, 2)).astype("float32")),
            "counts": (("time", "y"), rng.integers(0, 9, (4, 3)) * 0.5),
        },
        coords={"time": time, "y": [10, 20, 30]},
    ).chunk({"time": 1})
    # Stored as int16 with a scale factor: decoding (mask_and_scale) gives the floats back.
    fine["counts"].encoding = {"dtype": "int16", "scale_factor": 0.5, "_FillValue": -1}
    people = xr.Dataset({"height": ("person", [1.57, 1.82])}, coords={"person": ["a", "b"]})
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"title": "backend test"}),
            "people": people,
            "simulation/fine": fine,
        }
    )


def _write(root: Path, *, zarr_format: int = 3, consolidated: bool = True) -> Path:
    """A layout under ``root`` (a zip mount, directory array shards), its config's path."""
    store = ShardedStore(
        LocalStore(root / "base.zarr"),
        {"people": shardedstore.CopyOnWriteZipStore(root / "people.zarr.zip", mode="a")},
        {"simulation/fine/temperature": (1, array_shard_directory_store(root / "temperature"))},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        _tree().to_zarr(store, zarr_format=zarr_format, consolidated=consolidated)
    store.close()
    store.save_config(root / "layout.json")
    return root / "layout.json"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout written once for the tests that only read it."""
    return _write(tmp_path_factory.mktemp("layout"))


@pytest.fixture
def layout(written: Path, tmp_path: Path) -> Path:
    """A fresh copy of the written layout (so that no test can change another's)."""
    shutil.copytree(written.parent, tmp_path / "ds")
    return tmp_path / "ds" / "layout.json"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_engine_is_installed() -> None:
    assert "shardedstore" in xr.backends.list_engines()
    names = {ep.name: ep.value for ep in entry_points(group="xarray.backends")}
    assert names["shardedstore"] == "shardedstore.xarray:ShardedStoreBackendEntrypoint"
    assert xr.backends.list_engines()["shardedstore"].supports_groups


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_open_datatree_reads_the_layout(zarr_format: int, tmp_path: Path) -> None:
    config = _write(tmp_path, zarr_format=zarr_format)
    before = _files(tmp_path)
    with xr.open_datatree(config, engine="shardedstore") as tree:
        assert tree.identical(_tree())
        assert tree["simulation/fine/temperature"].encoding["chunks"] == (1, 3, 2)
    with xr.open_datatree(str(config), engine="shardedstore", group="simulation") as sub:
        assert sub["fine"].identical(_tree()["simulation/fine"])
    assert _files(tmp_path) == before  # read-only: nothing written, no lock files


def test_open_dataset_with_group_and_chunks(layout: Path) -> None:
    expected = _tree()["simulation/fine"].to_dataset()
    with xr.open_dataset(layout, engine="shardedstore", group="simulation/fine") as ds:
        assert ds.identical(expected.compute())
        assert not ds.temperature.chunks  # lazily indexed numpy, as engine="zarr"
    with xr.open_dataset(
        layout, engine="shardedstore", group="/simulation/fine", chunks={}
    ) as lazy:
        assert lazy.temperature.chunks == ((1, 1, 1, 1), (3,), (2,))
        assert lazy.identical(expected)
    with xr.open_dataset(layout, engine="shardedstore", group="people") as people:
        assert people.identical(_tree()["people"].to_dataset())


def test_decode_options_reach_the_zarr_backend(layout: Path) -> None:
    group = "simulation/fine"
    with xr.open_dataset(layout, engine="shardedstore", group=group) as decoded:
        assert decoded.time.dtype.kind == "M"
        assert decoded.counts.dtype.kind == "f"  # scale_factor applied
    with xr.open_dataset(
        layout,
        engine="shardedstore",
        group=group,
        decode_times=False,
        mask_and_scale=False,
        drop_variables=["temperature"],
    ) as raw:
        assert raw.time.dtype.kind == "i"
        assert raw.time.attrs["units"].startswith("days since 2024-01-01")
        assert raw.counts.dtype == np.int16
        assert raw.counts.attrs["scale_factor"] == 0.5
        assert "temperature" not in raw
    with xr.open_dataset(layout, engine="shardedstore", group=group, decode_cf=False) as cf:
        assert cf.time.dtype.kind == "i"
    with pytest.raises(GroupNotFoundError):  # a v3 layout has no v2 group
        xr.open_dataset(layout, engine="shardedstore", group=group, zarr_format=2)


def test_consolidated_is_passed_through(tmp_path: Path) -> None:
    config = _write(tmp_path / "plain", consolidated=False)
    with pytest.raises(ValueError, match="onsolidated"):
        xr.open_datatree(config, engine="shardedstore", consolidated=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with xr.open_datatree(config, engine="shardedstore", consolidated=False) as tree:
            assert tree.identical(_tree())
    with pytest.warns(RuntimeWarning, match="consolidated"):
        xr.open_datatree(config, engine="shardedstore").close()


def test_open_groups(layout: Path) -> None:
    groups = xr.open_groups(layout, engine="shardedstore")
    try:
        assert sorted(groups) == ["/", "/people", "/simulation", "/simulation/fine"]
        assert groups["/"].attrs == {"title": "backend test"}
        assert groups["/simulation/fine"].identical(_tree()["simulation/fine"].to_dataset())
    finally:
        for ds in groups.values():
            ds.close()
    # With group=, the names are engine="zarr"'s, whatever they are.
    sub = xr.open_groups(layout, engine="shardedstore", group="simulation")
    same = xr.open_groups(shardedstore.open(layout), engine="zarr", group="simulation")
    assert sorted(sub) == sorted(same)
    assert len(sub) == 2
    for name, ds in sub.items():
        assert ds.identical(same[name])
        ds.close()


@pytest.mark.skipif(not CAN_LIST, reason="needs /proc (Linux)")
def test_closing_closes_the_zip_shards(layout: Path) -> None:
    # This layout's zips only: a store another test left unclosed may hold its own open
    # until garbage collection (or for good, once the suite's gc.freeze() has kept it).

    def open_zips() -> list[str]:
        return [n for n in open_files_below(layout.parent) if n.endswith("people.zarr.zip")]

    assert open_zips() == []
    tree = xr.open_datatree(layout, engine="shardedstore")
    tree.load()
    assert open_zips()
    tree.close()
    assert open_zips() == []

    groups = xr.open_groups(layout, engine="shardedstore")
    for ds in groups.values():
        ds.load()
    groups["/people"].close()
    # The other groups still read through the same store.
    assert groups["/"].attrs["title"] == "backend test"
    assert open_zips()
    for ds in groups.values():
        ds.close()
    assert open_zips() == []

    with xr.open_dataset(layout, engine="shardedstore", group="people") as people:
        people.load()
        assert open_zips()
    assert open_zips() == []


def test_engine_is_guessed_for_layout_configs(layout: Path) -> None:
    with xr.open_datatree(layout) as tree:
        assert tree.identical(_tree())
    with xr.open_dataset(layout, group="people") as people:
        assert people.identical(_tree()["people"].to_dataset())
    # Directory stores keep going to engine="zarr".
    base_path = layout.parent / "base.zarr"
    assert guess_engine(base_path) == "zarr"
    if xr.backends.list_engines()["zarr"].supports_groups:
        # xarray 2025.9 marks its zarr backend as not supporting groups, so
        # open_datatree cannot guess any engine there, ours or zarr's.
        with xr.open_datatree(base_path) as base:
            assert "simulation" in base.children


@pytest.fixture
def engine() -> Any:
    return xr.backends.list_engines()["shardedstore"]


def test_guess_can_open_only_claims_layout_configs(
    engine: Any, layout: Path, tmp_path: Path
) -> None:
    assert engine.guess_can_open(layout)
    assert engine.guess_can_open(str(layout))
    assert engine.guess_can_open(f"file://{layout}")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "geojson", "type": "FeatureCollection"}))
    assert not engine.guess_can_open(other)
    (tmp_path / "list.json").write_text("[1, 2]")
    assert not engine.guess_can_open(tmp_path / "list.json")
    (tmp_path / "broken.json").write_text('{"format": "shardedstore", ')
    assert not engine.guess_can_open(tmp_path / "broken.json")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert not engine.guess_can_open(tmp_path / "binary.json")
    renamed = tmp_path / "layout.txt"
    shutil.copy(layout, renamed)
    assert not engine.guess_can_open(renamed)  # by extension first
    assert not engine.guess_can_open(tmp_path / "missing.json")
    assert not engine.guess_can_open(tmp_path)  # a directory
    assert not engine.guess_can_open(layout.parent / "base.zarr")
    assert not engine.guess_can_open("s3://bucket/ds/layout.json")  # never fetched
    assert not engine.guess_can_open(layout.read_bytes())
    with pytest.raises(ValueError, match="did not find a match"):
        xr.open_dataset(other)
    for name in ("dotted", "nested", "zipped"):
        assert engine.guess_can_open(LEGACY / f"{name}.json")


def test_guess_can_open_reads_only_the_start_of_big_files(engine: Any, tmp_path: Path) -> None:
    base = str(tmp_path / "base.zarr")
    shards = {str(i): {"type": "local", "root": f"t/{i}.zarr"} for i in range(5000)}
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": base},
        "array_shards": {"t": {"dims": 1, "shards": shards}},
    }
    big = tmp_path / "big.json"
    big.write_text(json.dumps(config))
    assert big.stat().st_size > 64 * 1024
    assert engine.guess_can_open(big)
    not_ours = tmp_path / "not-ours.json"
    not_ours.write_text(json.dumps({"items": list(shards.values()), "format": "shardedstore"}))
    assert not_ours.stat().st_size > 64 * 1024
    assert not engine.guess_can_open(not_ours)  # "format" is past the first 64 KiB


def test_configs_from_shardedstore_0_3_open(tmp_path: Path) -> None:
    shutil.copytree(LEGACY, tmp_path / "legacy")
    reference = xr.open_datatree(
        tmp_path / "legacy" / "reference.zarr", engine="zarr", consolidated=False
    )
    with xr.open_datatree(tmp_path / "legacy" / "dotted.json", consolidated=False) as tree:
        assert tree.identical(reference)


def test_config_at_a_url(s3_server: Any, s3_bucket: str, tmp_path: Path) -> None:
    options = s3_server.storage_options
    prefix = f"s3://{s3_bucket}/ds"

    def remote(name: str) -> FsspecStore:
        return FsspecStore.from_url(f"{prefix}/{name}", storage_options=options)

    store = ShardedStore(
        remote("base.zarr"),
        {"people": remote("people.zarr")},
        {
            "simulation/fine/temperature": (
                1,
                array_shard_template_store(
                    {
                        "type": "fsspec",
                        "url": f"{prefix}/t/{{chunk}}.zarr",
                        "storage_options": options,
                    }
                ),
            )
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _tree().to_zarr(store)
    store.save_config(f"{prefix}/layout.json", storage_options=options)

    url = f"{prefix}/layout.json"
    with xr.open_datatree(url, engine="shardedstore", storage_options=options) as tree:
        assert tree.identical(_tree())
    with xr.open_dataset(
        url, engine="shardedstore", storage_options=options, group="simulation/fine", chunks={}
    ) as ds:
        assert ds.identical(_tree()["simulation/fine"].to_dataset())


def test_a_sharded_store_object_is_accepted_and_left_open(layout: Path) -> None:
    store = shardedstore.open(layout)
    with xr.open_datatree(store, engine="shardedstore") as tree:
        assert tree.identical(_tree())
    # Still usable: the engine did not close what the caller opened.
    with xr.open_dataset(store, engine="shardedstore", group="people") as people:
        assert people.identical(_tree()["people"].to_dataset())
    store.close()


def test_errors_say_what_is_wrong(layout: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        xr.open_datatree(tmp_path / "missing.json", engine="shardedstore")
    bad = tmp_path / "bad.json"
    config = json.loads(layout.read_text())
    config["base"]["type"] = "nosuch"
    bad.write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"base\.type: unknown store type 'nosuch'"):
        xr.open_dataset(bad, engine="shardedstore")
    with pytest.raises(TypeError, match="engine='zarr'"):
        xr.open_dataset(LocalStore(layout.parent / "base.zarr"), engine="shardedstore")
    # a Zarr directory (or the dataset's folder) instead of its config
    for directory in (layout.parent / "base.zarr", layout.parent):
        with pytest.raises(ConfigError, match=r"is a directory.*config.*engine='zarr'"):
            xr.open_dataset(directory, engine="shardedstore")


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.usefixtures("no_warnings")
def test_reading_a_consolidated_layout_warns_nothing(layout: Path) -> None:
    with xr.open_datatree(layout, engine="shardedstore") as tree:
        tree.load()
    with xr.open_dataset(layout, engine="shardedstore", group="simulation/fine") as ds:
        ds.load()


def test_opened_datasets_pickle(layout: Path) -> None:
    """As engine="zarr"'s do: dask and multiprocessing send them to other processes."""
    with xr.open_dataset(layout, engine="shardedstore", group="simulation/fine") as ds:
        copy = pickle.loads(pickle.dumps(ds))
        assert copy.identical(ds)
        copy.close()
        assert ds.load().identical(_tree()["simulation/fine"].to_dataset().compute())
    with xr.open_datatree(layout, engine="shardedstore", chunks={}) as tree:
        copied = pickle.loads(pickle.dumps(tree))
        assert copied.identical(_tree())
        copied.close()
