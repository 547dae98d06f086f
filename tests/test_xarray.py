"""The real xarray round trips: README example, shards alone, append, resize, sharding codec."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, MemoryStore

from shardedstore import LayoutError, ShardedStore, array_shard_directory_store

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if "ShardedStore(" in b and "to_zarr" in b]
    return block


def test_readme_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), str(README), "exec"), namespace)
    assert (tmp_path / "array_shards1" / "0.zarr").is_dir()
    # The config example continues in the same session.
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    (config_block,) = [b for b in blocks if "save_config" in b]
    exec(compile(config_block, str(README), "exec"), namespace)
    assert json.loads((tmp_path / "layout.json").read_text())["base"]["root"] == "base.zarr"


@pytest.mark.parametrize("page", ["README.md", "docs/user-guide.md"])
def test_readme_examples_print_nothing(page: str, tmp_path: Path) -> None:
    """Run as a user would, in a fresh interpreter: no warning, no unused import.

    The README's examples in one session; the user guide's quick start (its first block).
    """
    blocks = re.findall(r"```python\n(.*?)```", (README.parent / page).read_text(), flags=re.S)
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks if page == "README.md" else blocks[:1]))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout


def _base_keys(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_readme_example_each_format(
    zarr_format: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = readme_example()
    for target in ("store", 'LocalStore("single.zarr")'):
        written = f"dt.to_zarr({target}, consolidated=False)"
        assert written in code
        code = code.replace(written, f"{written[:-1]}, zarr_format={zarr_format})")
    namespace: dict[str, Any] = {}
    exec(compile(code, str(README), "exec"), namespace)
    ds = namespace["ds"]

    base = _base_keys(tmp_path / "base.zarr")
    assert not [k for k in base if k.startswith(("people/", "species/"))]
    foo_in_base = [k for k in base if k.startswith("simulation/coarse/foo/")]
    meta = {"zarr.json"} if zarr_format == 3 else {".zarray", ".zattrs"}
    assert {k.rsplit("/", 1)[1] for k in foo_in_base} == meta
    assert "zarr.json" in _base_keys(tmp_path / "shard1.zarr") or ".zarray" in str(
        _base_keys(tmp_path / "shard1.zarr")
    )
    # Each array shard alone is the matching slice, to any zarr reader.
    for index in range(2):
        shard = zarr.open_array(LocalStore(tmp_path / "array_shards1" / f"{index}.zarr"), mode="r")
        assert shard.metadata.zarr_format == zarr_format
        np.testing.assert_array_equal(shard[...], ds.foo.values[index])
    assert sorted(p.name for p in (tmp_path / "array_shards1").iterdir()) == ["0.zarr", "1.zarr"]


def _layout(tmp_path: Path, name: str = "foo") -> ShardedStore:
    return ShardedStore(
        LocalStore(tmp_path / "base"),
        {},
        {name: (1, array_shard_directory_store(tmp_path / "shards"))},
    )


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_more_than_ten_shards_and_no_compression(zarr_format: int, tmp_path: Path) -> None:
    values = np.arange(25 * 3, dtype="int32").reshape(25, 3)
    ds = xr.Dataset({"foo": (("t", "y"), values)}).chunk({"t": 1})
    encoding = {"foo": {"compressors": None}}
    store = _layout(tmp_path)
    ds.to_zarr(store, zarr_format=zarr_format, encoding=encoding, consolidated=False)
    back = xr.open_zarr(store, consolidated=False).compute()
    np.testing.assert_array_equal(back.foo.values, values)
    assert len(list((tmp_path / "shards").iterdir())) == 25
    assert zarr.open_array(store, path="foo", mode="r").compressors == ()
    shard_12 = zarr.open_array(LocalStore(tmp_path / "shards" / "12.zarr"), mode="r")
    np.testing.assert_array_equal(shard_12[...], values[12])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_append_along_sharded_dim(zarr_format: int, tmp_path: Path) -> None:
    values = np.random.default_rng(1).standard_normal((14, 4))
    full = xr.Dataset({"foo": (("t", "y"), values)}, coords={"t": np.arange(14)})
    store = _layout(tmp_path)
    full.isel(t=slice(0, 5)).chunk({"t": 1}).to_zarr(store, zarr_format=zarr_format)
    full.isel(t=slice(5, 14)).chunk({"t": 1}).to_zarr(store, append_dim="t")
    back = xr.open_zarr(store).compute()
    xr.testing.assert_identical(back, full)
    assert len(list((tmp_path / "shards").iterdir())) == 14


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_resize_along_unsharded_dim_rewrites_shard_metadata(
    zarr_format: int, tmp_path: Path
) -> None:
    store = _layout(tmp_path)
    root = zarr.open_group(store, mode="w", zarr_format=zarr_format)
    arr = root.create_array("foo", shape=(3, 4), chunks=(1, 2), dtype="i4", fill_value=-1)
    arr[...] = np.arange(12).reshape(3, 4)
    arr.resize((3, 6))
    arr[:, 4:] = 7
    for index in range(3):
        shard = zarr.open_array(LocalStore(tmp_path / "shards" / f"{index}.zarr"), mode="r")
        assert shard.shape == (6,)
        np.testing.assert_array_equal(shard[...], arr[index])


def test_chunk_size_other_than_one_is_refused(tmp_path: Path) -> None:
    ds = xr.Dataset({"foo": (("t", "y"), np.zeros((4, 3)))}).chunk({"t": 2})
    store = _layout(tmp_path)
    with pytest.raises(LayoutError, match=r"dimension 0 \('t'\) is 2"):
        ds.to_zarr(store, zarr_format=3)
    assert not (tmp_path / "shards").exists()
    assert not (tmp_path / "base" / "foo" / "zarr.json").exists()


class _RangeRecordingStore(MemoryStore):
    """A MemoryStore that records the byte ranges asked of it (instrumentation only)."""

    ranges: list[ByteRequest | None]

    def __init__(self, ranges: list[ByteRequest | None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ranges = [] if ranges is None else ranges

    def with_read_only(self, read_only: bool = False) -> _RangeRecordingStore:
        return type(self)(self.ranges, store_dict=self._store_dict, read_only=read_only)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        if key.startswith("c"):
            self.ranges.append(byte_range)
        return await super().get(key, prototype, byte_range)


def test_sharding_codec_reads_byte_ranges_through_array_shards() -> None:
    shards: dict[str, _RangeRecordingStore] = {}

    def factory(index: str) -> _RangeRecordingStore:
        return shards.setdefault(index, _RangeRecordingStore())

    values = np.arange(3 * 8 * 8, dtype="float64").reshape(3, 8, 8)
    ds = xr.Dataset({"foo": (("t", "y", "x"), values)}).chunk({"t": 1, "y": 8, "x": 8})
    store = ShardedStore(MemoryStore(), {}, {"foo": (1, factory)})
    encoding = {"foo": {"chunks": (1, 4, 4), "shards": (1, 8, 8)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=3, encoding=encoding)
    assert sorted(shards) == ["0", "1", "2"]
    back = xr.open_zarr(store).compute()
    np.testing.assert_array_equal(back.foo.values, values)
    # Reading one inner chunk goes through as byte ranges, not whole shards.
    for shard in shards.values():
        shard.ranges.clear()
    arr = zarr.open_array(store, path="foo", mode="r")
    np.testing.assert_array_equal(arr[1, :4, :4], values[1, :4, :4])
    assert shards["1"].ranges
    assert None not in shards["1"].ranges  # never the whole shard
    assert any(isinstance(r, RangeByteRequest) for r in shards["1"].ranges)
    assert not shards["0"].ranges
    assert not shards["2"].ranges
    # One shard alone is a valid sharded array of the remaining dims.
    alone = zarr.open_array(shards["2"], mode="r")
    np.testing.assert_array_equal(alone[...], values[2])


def test_open_datatree_reads_read_only(tmp_path: Path) -> None:
    store = _layout(tmp_path)
    ds = xr.Dataset({"foo": (("t",), np.arange(3.0))}).chunk({"t": 1})
    ds.to_zarr(store, zarr_format=3)
    reader = store.with_read_only(True)
    back = xr.open_dataset(reader, engine="zarr").compute()
    xr.testing.assert_identical(back, ds.compute())
    with pytest.raises(ValueError, match="read-only"):
        ds.to_zarr(reader, mode="w")


def _not_recognized(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "is not recognized" in str(w.message)]


@pytest.mark.parametrize("consolidated", [False, True])
def test_empty_mounts_never_warn(tmp_path: Path, consolidated: bool) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"),
        {
            "people": LocalStore(tmp_path / "people"),
            "spare": LocalStore(tmp_path / "spare"),  # never written
            "deep/spare": LocalStore(tmp_path / "deep"),  # never written, and deep
        },
    )
    tree = xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"title": "t"}),
            "people": xr.Dataset({"heights": ("n", [1.5, 1.8])}),
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tree.to_zarr(store, mode="w", consolidated=consolidated)
        back = xr.open_datatree(store, engine="zarr", consolidated=consolidated)
        members = dict(zarr.open_group(store, mode="r").members(max_depth=None))
    assert _not_recognized(caught) == []
    assert sorted(back.groups) == ["/", "/people"]
    assert sorted(members) == ["people", "people/heights"]
