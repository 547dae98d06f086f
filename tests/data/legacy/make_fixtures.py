"""Write the shardedstore 0.3.1 fixtures under tests/data/legacy/ (run once, by hand).

Needs a throwaway virtualenv with the 2022 stack, not this project's::

    python3.11 -m venv /tmp/legacy-venv
    /tmp/legacy-venv/bin/pip install shardedstore==0.3.1 zarr==2.18.3 numcodecs==0.13.1 \
        xarray==2024.9.0 xarray-datatree==0.0.14 "numpy<2.1" dask
    cd tests/data/legacy && /tmp/legacy-venv/bin/python make_fixtures.py

It writes, for each dimension separator ("/" and "."), a DataTree through a 0.3.1
``ShardedStore`` (a mount and an array-sharded variable), the same tree unsharded as the
reference, and the 0.3.1 ``get_config()`` output. A third layout (mounts only: 0.3.1's
``map_shards`` fails when array shards exist) is converted to zips with 0.3.1's
``to_zip_store_with_prefix``. Paths in the configs are relative to this directory.
"""

import json
import os
import shutil

import datatree
import numpy as np
import xarray as xr
import zarr

import shardedstore

assert shardedstore.__version__ == "0.3.1", shardedstore.__version__
assert zarr.__version__ == "2.18.3", zarr.__version__


def build_tree() -> datatree.DataTree:
    rng = np.random.default_rng(3)
    root = xr.Dataset(attrs={"title": "shardedstore 0.3.1 fixture"})
    people = xr.Dataset(
        {
            "height": ("person", np.array([1.62, 1.80, 1.75])),
            "age": ("person", np.array([31, 45, 27], dtype="int32")),
        },
        coords={"person": [10, 11, 12]},
    )
    coarse = xr.Dataset({"pressure": (("y", "x"), rng.random((3, 4)))})
    fine = xr.Dataset(
        {
            "temperature": (("time", "y", "x"), rng.random((6, 3, 4)).astype("float32")),
            "mask": (("time", "y", "x"), rng.random((6, 3, 4)) > 0.5),
        },
        coords={"time": np.arange(6, dtype="int64")},
    )
    fine["temperature"].encoding["chunks"] = (1, 3, 2)
    fine["mask"].encoding["chunks"] = (1, 1, 2)
    return datatree.DataTree.from_dict(
        {"/": root, "people": people, "simulation/coarse": coarse, "simulation/fine": fine}
    )


def save_config(store: shardedstore.ShardedStore, name: str) -> None:
    """Write ``store.get_config()`` to ``{name}.json``.

    0.3.1 writes absolute paths (zarr 2's DirectoryStore makes them absolute); they are
    made relative to this directory so that the fixtures open from any checkout.
    """
    text = json.dumps(store.get_config(), indent=2).replace(os.getcwd() + os.sep, "")
    with open(f"{name}.json", "w") as f:
        f.write(text + "\n")


def write_sharded(name: str, separator: str) -> None:
    for path in (f"{name}", f"{name}.json"):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(name)
    store_cls = zarr.storage.NestedDirectoryStore if separator == "/" else zarr.DirectoryStore
    base = store_cls(f"{name}/base.zarr", dimension_separator=separator)
    people = zarr.DirectoryStore(f"{name}/people.zarr", dimension_separator=separator)
    store = shardedstore.ShardedStore(
        base,
        {"people": people},
        {
            "simulation/fine/temperature": (
                1,
                shardedstore.array_shard_directory_store(
                    f"{name}/temperature", dimension_separator=separator
                ),
            ),
            "simulation/fine/mask": (
                2,
                shardedstore.array_shard_directory_store(
                    f"{name}/mask", dimension_separator=separator
                ),
            ),
        },
        dimension_separator=separator,
    )
    build_tree().to_zarr(store, consolidated=False)
    save_config(store, name)


def write_zipped(name: str) -> None:
    for path in (name, f"{name}.json", f"{name}-dir"):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(f"{name}-dir")
    store = shardedstore.ShardedStore(
        zarr.DirectoryStore(f"{name}-dir/base.zarr"),
        {
            "people": zarr.DirectoryStore(f"{name}-dir/people.zarr"),
            "simulation/coarse": zarr.DirectoryStore(f"{name}-dir/coarse.zarr"),
        },
    )
    build_tree().to_zarr(store, consolidated=False)
    zipped = store.map_shards(shardedstore.to_zip_store_with_prefix(f"{name}/zips"))
    for shard in [zipped.base, *zipped.shards.values()]:
        shard.close()
    save_config(zipped, name)
    shutil.rmtree(f"{name}-dir")


def write_reference() -> None:
    shutil.rmtree("reference.zarr", ignore_errors=True)
    build_tree().to_zarr("reference.zarr", consolidated=False)


if __name__ == "__main__":
    write_sharded("nested", "/")
    write_sharded("dotted", ".")
    write_zipped("zipped")
    write_reference()
