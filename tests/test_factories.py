"""Array-shard factories: listing costs O(shards that exist), whatever the shape."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from shardedstore import ShardedStore, array_shard_template_store


def _count_listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every directory the local store type lists."""
    from shardedstore.backends import registry as _registry

    seen: list[str] = []
    real = _registry._local_names

    def counting(directory: str) -> list[str] | None:
        seen.append(directory)
        return real(directory)

    monkeypatch.setattr(_registry, "_local_names", counting)
    return seen


@pytest.mark.parametrize(
    "template",
    [
        {"type": "local", "root": "t/{chunk}/data.zarr"},
        {"type": "zip", "path": "t/{chunk}/data.zarr.zip"},
        {"type": "local", "root": "t/{chunk}.zarr"},
    ],
)
def test_template_lists_only_existing_shards(
    tmp_path: Path, template: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    field = "root" if template["type"] == "local" else "path"
    template = {**template, field: f"{tmp_path}/{template[field]}"}
    factory = array_shard_template_store(template)
    store = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)})
    array = zarr.create_array(store, name="a", shape=(200_000, 4), chunks=(1, 4), dtype="f4")
    array[3] = np.arange(4)
    array[70_000] = np.arange(4) + 1
    store.close()
    # A decoy beside the shards: a folder that matches {chunk} but holds no shard.
    (tmp_path / "t" / "5").mkdir(exist_ok=True)
    listings = _count_listings(monkeypatch)
    assert factory.existing_chunk_indices() == ["3", "70000"]
    assert len(listings) <= 4  # the parent, then one per candidate (3, 5, 70000)

    reader = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)}, read_only=True)
    keys = sorted(zarr.core.sync.sync(zarr.core.sync._collect_aiterator(reader.list())))
    assert [k for k in keys if "/c/" in k] == ["a/c/3/0", "a/c/70000/0"]


def test_resize_along_an_unsharded_dim_creates_no_shards(tmp_path: Path) -> None:
    """Issue 9 item 8: a resize made 2,000 shard directories for 2 rows of data."""
    factory = array_shard_template_store({"type": "local", "root": f"{tmp_path}/t/{{chunk}}/d"})
    store = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)})
    array = zarr.create_array(store, name="a", shape=(2000, 4), chunks=(1, 4), dtype="f4")
    array[0] = 1
    array[1] = 2
    array.resize((2000, 8))
    assert sorted(os.listdir(tmp_path / "t")) == ["0", "1"]
    # The two shards that exist were told the new shape.
    alone = zarr.open_array(LocalStore(tmp_path / "t" / "1" / "d", read_only=True), mode="r")
    assert alone.shape == (8,)
    np.testing.assert_array_equal(alone[:4], np.full(4, 2, dtype="f4"))


def test_resize_with_a_plain_callable_factory_creates_no_shards(tmp_path: Path) -> None:
    """A factory that cannot list is probed read-only: still no shard is created."""

    def factory(index: str) -> LocalStore:
        return LocalStore(tmp_path / "p" / f"{index}.zarr")

    store = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)})
    array = zarr.create_array(store, name="a", shape=(50, 4), chunks=(1, 4), dtype="f4")
    array[7] = 1
    store.close()
    reopened = ShardedStore(LocalStore(tmp_path / "base"), {}, {"a": (1, factory)})
    zarr.open_array(reopened, path="a", mode="r+").resize((50, 6))
    assert sorted(os.listdir(tmp_path / "p")) == ["7.zarr"]
    alone = zarr.open_array(LocalStore(tmp_path / "p" / "7.zarr", read_only=True), mode="r")
    assert alone.shape == (6,)
