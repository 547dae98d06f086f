"""Pure routing: key validation, mount lookup, chunk-key splitting and its inverse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardedstore import KeyValidationError, LayoutError
from shardedstore.store.routing import (
    ARRAY_METADATA,
    BASE,
    CHUNK,
    MOUNT,
    ChunkKeyFormat,
    Router,
    outer_chunk_key,
    split_chunk_key,
    validate_key,
    validate_prefix,
)


@pytest.fixture
def router() -> Router:
    return Router(["people", "a/b/c"], {"sim/fine/foo": 1, "grid": 2})


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("zarr.json", (BASE, "", None, "zarr.json")),
        ("people", (BASE, "", None, "people")),
        ("people/zarr.json", (MOUNT, "people", None, "zarr.json")),
        ("people/x/c/0", (MOUNT, "people", None, "x/c/0")),
        ("peoplex/zarr.json", (BASE, "", None, "peoplex/zarr.json")),
        ("a/b/zarr.json", (BASE, "", None, "a/b/zarr.json")),
        ("a/b/c/d/zarr.json", (MOUNT, "a/b/c", None, "d/zarr.json")),
        ("sim/fine/foo/zarr.json", (ARRAY_METADATA, "sim/fine/foo", None, "zarr.json")),
        ("sim/fine/foo/.zarray", (ARRAY_METADATA, "sim/fine/foo", None, ".zarray")),
        ("sim/fine/foo/c/3/0/1", (CHUNK, "sim/fine/foo", "3", "c/0/1")),
        ("sim/fine/foo/c.3.0.1", (CHUNK, "sim/fine/foo", "3", "c.0.1")),
        ("sim/fine/foo/3.0.1", (CHUNK, "sim/fine/foo", "3", "0.1")),
        ("sim/fine/foo/3/0/1", (CHUNK, "sim/fine/foo", "3", "0/1")),
        ("sim/fine/foo/c/3", (CHUNK, "sim/fine/foo", "3", "c")),
        ("sim/fine/foo/3", (CHUNK, "sim/fine/foo", "3", "0")),
        ("sim/fine/foo/c/03/1", (BASE, "", None, "sim/fine/foo/c/03/1")),
        ("sim/fine/foo/notes.txt", (BASE, "", None, "sim/fine/foo/notes.txt")),
        ("grid/c/4/5/6", (CHUNK, "grid", "4.5", "c/6")),
        ("grid/4.5", (CHUNK, "grid", "4.5", "0")),
        ("grid/c/4", (BASE, "", None, "grid/c/4")),
    ],
)
def test_route(router: Router, key: str, expected: tuple[object, ...]) -> None:
    assert router.route(key) == expected


def test_more_than_ten_indices_never_collide(router: Router) -> None:
    # shardedstore 0.3 parsed one character: 10..19 all landed in shard "1".
    routes = {router.route(f"sim/fine/foo/c/{i}/0") for i in range(25)}
    assert len(routes) == 25
    assert router.route("sim/fine/foo/c/12/0") == (CHUNK, "sim/fine/foo", "12", "c/0")
    assert router.route("sim/fine/foo/12.0") == (CHUNK, "sim/fine/foo", "12", "0")


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/", "a/./b", "a/../b", "..", ".", "./a", "a/..", "a\\b", "../x"],
)
def test_bad_keys_raise(router: Router, key: str) -> None:
    with pytest.raises(KeyValidationError, match="invalid key"):
        router.route(key)
    with pytest.raises(ValueError, match="invalid key"):
        validate_key(key)


def test_hidden_files_are_valid_keys(router: Router) -> None:
    assert router.route(".zattrs") == (BASE, "", None, ".zattrs")
    assert router.route("a/.zgroup") == (BASE, "", None, "a/.zgroup")


@pytest.mark.parametrize(
    ("mounts", "arrays", "match"),
    [
        (["a", "a/b"], {}, "lies inside 'a'"),
        (["a/b", "a"], {}, "lies inside 'a'"),
        (["a"], {"a/x": 1}, "lies inside 'a'"),
        ([], {"a": 1, "a/b/c": 1}, "lies inside 'a'"),
        (["a"], {"a": 1}, "both a mount and an array-shard path"),
        (["a//b"], {}, "invalid mount path"),
        (["/a"], {}, "invalid mount path"),
        ([""], {}, "invalid mount path"),
        ([], {"x": 0}, "dims must be a positive integer"),
        ([], {"x": True}, "dims must be a positive integer"),
        ([], {"x": 65}, "at most 64 dimensions"),
        ([], {"x": 10**20}, "at most 64 dimensions"),
    ],
)
def test_bad_layouts(mounts: list[str], arrays: dict[str, int], match: str) -> None:
    with pytest.raises(LayoutError, match=match):
        Router(mounts, arrays)


def test_sibling_prefixes_do_not_nest() -> None:
    router = Router(["a", "ab", "a-b"], {})
    assert router.route("ab/x") == (MOUNT, "ab", None, "x")


def test_ten_thousand_mounts_route_by_path() -> None:
    mounts = [f"group{i}/sub{i % 7}" for i in range(10_000)]
    router = Router(mounts, {})
    assert router.route("group9999/sub3/x/zarr.json") == (
        MOUNT,
        "group9999/sub3",
        None,
        "x/zarr.json",
    )
    assert router.route("group9999/sub5/x/zarr.json")[0] == BASE
    assert router.route("group9999/other/zarr.json")[0] == BASE
    assert router.route("elsewhere/zarr.json")[0] == BASE
    assert router.mount_children("group42") == frozenset({"sub0"})
    assert len(router.mount_children("")) == 10_000


def test_plan_prefix(router: Router) -> None:
    plan = router.plan_prefix("")
    assert plan.base
    assert set(plan.mounts) == {"people", "a/b/c"}
    assert set(plan.arrays) == {"sim/fine/foo", "grid"}
    assert router.plan_prefix("people/x").inside_mount == ("people", "x")
    assert router.plan_prefix("people/").inside_mount == ("people", "")
    assert router.plan_prefix("peo").mounts == ("people",)
    assert router.plan_prefix("sim/fine/foo/c/").arrays == ("sim/fine/foo",)
    assert router.plan_prefix("sim/").mounts == ()


index = st.integers(min_value=0, max_value=10_000).map(str)


@given(
    dims=st.integers(1, 3),
    extra=st.integers(0, 3),
    sep=st.sampled_from(["/", "."]),
    v3=st.booleans(),
    data=st.data(),
)
def test_split_then_outer_round_trips(
    dims: int, extra: int, sep: str, v3: bool, data: st.DataObject
) -> None:
    parts = [data.draw(index) for _ in range(dims + extra)]
    rest = ("c" + sep if v3 else "") + sep.join(parts)
    split = split_chunk_key(rest, dims)
    assert split is not None
    chunk_index, inner = split
    assert chunk_index == ".".join(parts[:dims])
    fmt = ChunkKeyFormat("c" if v3 else "", sep, extra)
    assert outer_chunk_key(chunk_index, inner, fmt) == rest


@pytest.mark.parametrize("inner", ["zarr.json", ".zarray", ".zattrs", "c/x", "0.a", "c/1.partial"])
def test_outer_ignores_non_chunk_keys(inner: str) -> None:
    assert outer_chunk_key("3", inner, ChunkKeyFormat("c", "/", 1)) is None


@pytest.mark.parametrize("prefix", ["", "/", "a", "a/", "a/b/", ".zattrs", "a/c/0."])
def test_valid_prefixes(prefix: str) -> None:
    # "/" is zarr's spelling of the root (MemoryStore.list_dir("/") lists the root).
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize(
    "prefix", ["//", "/etc", "/etc/", "/a/b", "a//", "../", "a/../b", "a/./", "\\", "a\\", "./"]
)
def test_bad_prefixes_raise(prefix: str) -> None:
    with pytest.raises(KeyValidationError, match="invalid prefix"):
        validate_prefix(prefix)
