"""iter_shards: array shards as samples, in order or shuffled, split between workers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.storage import LocalStore

from shardedstore import (
    LayoutError,
    ShardCache,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
    iter_shards,
)
from tests._s3counter import CountedS3, build_layout, counted_s3

__all__ = ["counted_s3"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShardedStore, np.ndarray]:
    folder = tmp_path_factory.mktemp("iter")
    store = ShardedStore(
        LocalStore(folder / "base.zarr"),
        {},
        {
            "t": (1, array_shard_directory_store(str(folder / "t"))),
            "grid": (
                2,
                array_shard_template_store(
                    {"type": "zip", "path": str(folder / "grid" / "{chunk}.zip")}
                ),
            ),
        },
    )
    values = np.arange(10 * 3 * 4, dtype="i4").reshape(10, 3, 4)
    zarr.create_array(store, name="t", shape=values.shape, chunks=(1, 3, 2), dtype="i4")[:] = values
    grid = zarr.create_array(store, name="grid", shape=(2, 3, 5), chunks=(1, 1, 5), dtype="i4")
    grid[:] = values[:2, :, :3].repeat(2, axis=2)[:, :, :5]
    zarr.create_array(store, name="plain", shape=(3,), dtype="i4")
    store.close()
    return store.with_read_only(True), values


def test_sequential_yields_every_shard_in_order(layout: Any) -> None:
    store, values = layout
    seen = list(iter_shards(store, "t"))
    assert [index for index, _ in seen] == list(range(10))
    for index, shard in seen:
        np.testing.assert_array_equal(shard, values[index])


def test_two_sharded_dims_yield_tuples(layout: Any) -> None:
    store, _ = layout
    grid = zarr.open_array(store, path="grid", mode="r")[:]
    seen = dict(iter_shards(store, "grid", read_ahead=0))
    assert sorted(seen) == [(i, j) for i in range(2) for j in range(3)]
    for (i, j), shard in seen.items():
        np.testing.assert_array_equal(shard, grid[i, j])


def test_shuffle_is_a_seeded_permutation(layout: Any) -> None:
    store, values = layout
    first = [index for index, _ in iter_shards(store, "t", order="shuffle", seed=7)]
    again = [index for index, _ in iter_shards(store, "t", order="shuffle", seed=7)]
    other = [index for index, _ in iter_shards(store, "t", order="shuffle", seed=8)]
    assert first == again
    assert sorted(first) == list(range(10))
    assert other != first
    for index, shard in iter_shards(store, "t", order="shuffle", seed=7):
        np.testing.assert_array_equal(shard, values[index])


@settings(max_examples=20, deadline=None)
@given(
    num_workers=st.integers(1, 12),
    order=st.sampled_from(["sequential", "shuffle"]),
    seed=st.integers(0, 2**32 - 1),
    read_ahead=st.integers(0, 4),
)
def test_workers_own_disjoint_shards_covering_all(
    layout: Any, num_workers: int, order: Any, seed: int, read_ahead: int
) -> None:
    store, _ = layout
    shares = [
        [
            index
            for index, _ in iter_shards(
                store,
                "t",
                order=order,
                seed=seed,
                worker=w,
                num_workers=num_workers,
                read_ahead=read_ahead,
            )
        ]
        for w in range(num_workers)
    ]
    flat = [index for share in shares for index in share]
    assert sorted(flat) == list(range(10))  # disjoint, and every shard once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_stopping_early_is_fine(layout: Any) -> None:
    store, values = layout
    iterator = iter_shards(store, "t", read_ahead=4)
    index, _shard = next(iterator)
    assert index == 0
    iterator.close()  # drops the shards read ahead
    np.testing.assert_array_equal(dict(iter_shards(store, "t"))[9], values[9])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"array": "plain"}, LayoutError, "not an array-sharded array"),
        ({"array": "nope"}, LayoutError, "'grid', 't'"),
        ({"order": "random"}, ValueError, "order"),
        ({"num_workers": 0}, ValueError, "num_workers"),
        ({"worker": 2, "num_workers": 2}, ValueError, "get_worker_info"),
        ({"worker": -1}, ValueError, "worker"),
        ({"read_ahead": -1}, ValueError, "read_ahead"),
    ],
)
def test_bad_arguments(layout: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    store, _ = layout
    arguments = {"array": "t", **kwargs}
    with pytest.raises(error, match=match):
        next(iter_shards(store, **arguments))


def test_remote_zip_shards_with_a_cache(
    counted_s3: CountedS3, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url, config, values = build_layout(tmp_path_factory.mktemp("remote"), counted_s3, "zip", 5)
    cache = {"dir": str(tmp_path / "cache"), "read_ahead": 2}
    store = ShardedStore.from_config({**config, "cache": cache}, base_path=url, read_only=True)
    assert store.cache == ShardCache(str(tmp_path / "cache"), read_ahead=2)
    counted_s3.requests.clear()
    for index, shard in iter_shards(store, "temp", order="shuffle", seed=1):
        np.testing.assert_array_equal(shard, values[index])
    assert counted_s3.requests.count("GET", "/t/") == 5  # each zip once
    store.close()
