"""iter_shards: array shards as samples, in order or shuffled, split between workers."""

from __future__ import annotations

import json
import subprocess
import sys
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
from shardedstore.iter import DEFAULT_SHUFFLE_SEED
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


# ----------------------------------------------- shares of workers without a seed


@pytest.fixture(scope="module")
def sizes(tmp_path_factory: pytest.TempPathFactory) -> ShardedStore:
    """Arrays ``n0`` ... ``n23`` with n shards each (metadata only: shards read as fill)."""
    folder = tmp_path_factory.mktemp("sizes")
    arrays = {f"n{n}": (1, array_shard_directory_store(str(folder / f"n{n}"))) for n in range(24)}
    store = ShardedStore(LocalStore(folder / "base.zarr"), {}, arrays)
    for n in range(24):
        zarr.create_array(store, name=f"n{n}", shape=(n, 2), chunks=(1, 2), dtype="i1")
    store.close()
    return store.with_read_only(True)


@settings(max_examples=40, deadline=None)
@given(
    shards=st.integers(0, 23),
    num_workers=st.integers(1, 9),
    seed=st.none() | st.integers(0, 2**64 - 1),
    read_ahead=st.integers(0, 3),
)
def test_shuffled_shares_partition_the_shards_whatever_the_seed(
    sizes: ShardedStore, shards: int, num_workers: int, seed: int | None, read_ahead: int
) -> None:
    # Each worker runs on its own (as DataLoader workers do): with no seed given, they
    # must still agree on one order, or shards are read twice and others never.
    shares = [
        [
            index
            for index, _ in iter_shards(
                sizes,
                f"n{shards}",
                order="shuffle",
                seed=seed,
                worker=w,
                num_workers=num_workers,
                read_ahead=read_ahead,
            )
        ]
        for w in range(num_workers)
    ]
    flat = [index for share in shares for index in share]
    assert len(flat) == len(set(flat))  # disjoint
    assert sorted(flat) == list(range(shards))  # complete
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_workers_without_a_seed_share_the_documented_default(sizes: ShardedStore) -> None:
    unseeded = [index for index, _ in iter_shards(sizes, "n20", order="shuffle", num_workers=2)]
    seeded = [
        index
        for index, _ in iter_shards(
            sizes, "n20", order="shuffle", seed=DEFAULT_SHUFFLE_SEED, num_workers=2
        )
    ]
    assert unseeded == seeded
    # One worker alone owns every shard: without a seed, each pass is a new permutation.
    passes = {
        tuple(index for index, _ in iter_shards(sizes, "n20", order="shuffle")) for _ in range(5)
    }
    assert len(passes) > 1
    assert all(sorted(p) == list(range(20)) for p in passes)


@pytest.mark.parametrize("how", ["break", "close"])
def test_stopping_early_leaves_nothing_running_at_exit(
    counted_s3: CountedS3, tmp_path_factory: pytest.TempPathFactory, how: str
) -> None:
    # A new process, so that its exit (zarr stops its event loop) is the real one, and
    # shards after the first slow to read, so that reads ahead are running at exit.
    url, config, _ = build_layout(tmp_path_factory.mktemp("exit"), counted_s3, "directory", 6)
    stop = {
        # The iterator is still referenced: left suspended until the interpreter exits.
        "break": "for _ in shards:\n    break\n",
        "close": "next(shards)\nshards.close()\n",
    }[how]
    script = (
        "import json, sys, time\n"
        "from shardedstore import ShardedStore, iter_shards\n"
        f"store = ShardedStore.from_config(json.loads(sys.argv[1]), base_path={url!r})\n"
        "shards = iter_shards(store, 'temp', read_ahead=4)\n"
        "start = time.monotonic()\n"
        f"{stop}"
        "print('done' if time.monotonic() - start < 10 else 'waited for the reads ahead')\n"
    )
    counted_s3.requests.slow = lambda method, path: "/t/" in path and "/t/0.zarr" not in path
    counted_s3.requests.delay = 20.0
    try:
        result = subprocess.run(
            [sys.executable, "-c", script, json.dumps(config)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    finally:
        counted_s3.requests.delay = 0.0
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""
