"""info and validate at a small cost per shard, in bounded memory (issue 22).

``info --json`` writes each shard's row as it is summarized and sums the totals as it
goes; the text must stay exactly what one ``json.dumps`` of the whole document, one row
a line, wrote. Real layouts only: directory and zip shards, some of them truncated.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.core.sync import sync
from zarr.storage import LocalStore

import shardedstore
from shardedstore.backends.inventory import inventories
from shardedstore.cli import main
from shardedstore.report.info import ShardSummary, iter_shard_summaries, shard_summaries
from shardedstore.report.validate import validate_layout
from shardedstore.store.ownkeys import KeyVerdicts

STEPS = 15


def _layout(root: Path, kind: str) -> Path:
    """A layout with a mount and STEPS array shards (directories or zips)."""
    store = shardedstore.ShardedStore(
        LocalStore(root / "base.zarr"),
        {"m": LocalStore(root / "m.zarr")},
        {"t": (1, shardedstore.array_shard_directory_store(root / "t"))},
    )
    values = np.arange(STEPS * 4, dtype="i2").reshape(STEPS, 4)
    zarr.create_array(store, name="t", shape=(STEPS, 4), chunks=(1, 4), dtype="i2")[:] = values
    zarr.create_array(store, name="m/x", shape=(3,), chunks=(3,), dtype="i2")[:] = [1, 2, 3]
    if kind == "directory":
        store.save_config(root / "layout.json")
        return root / "layout.json"
    zipped = store.map_shards(
        shardedstore.to_zip_store_with_prefix(root / "z" / "ds"), progress=False
    )
    zipped.save_config(root / "z" / "ds.json")
    return root / "z" / "ds.json"


def _document_text(config: str, summaries: list[ShardSummary]) -> str:
    """What ``info --json`` wrote when it held every summary: the whole document
    indented, its rows one compact line each."""
    unreadable = sum(s.error is not None for s in summaries)
    total: dict[str, Any] = {"shards": len(summaries)}
    for name in ("keys", "metadata_keys", "chunk_keys", "stray_keys", "bytes"):
        total[name] = sum(getattr(s, name) for s in summaries)
    total["missing"] = sum(s.exists is False for s in summaries)
    total["unreadable"] = unreadable
    text = json.dumps({"config": config, "shards": "ROWS", "total": total}, indent=2)
    rows = ",\n    ".join(json.dumps(s.as_dict()) for s in summaries)
    return text.replace('"ROWS"', f"[\n    {rows}\n  ]", 1) + "\n"


@pytest.mark.parametrize("kind", ["directory", "zip"])
@pytest.mark.parametrize("broken", [0, 3, 12])
def test_info_json_is_the_whole_document_written_row_by_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, broken: int
) -> None:
    config = _layout(tmp_path, kind)
    if kind == "zip":
        for index in range(broken):  # truncated zips: unreadable shards
            path = config.parent / "ds" / "t" / f"{index}.zarr.zip"
            with path.open("r+b") as f:
                f.truncate(path.stat().st_size // 2)
    else:
        for index in range(broken):  # keys no reader reaches
            (tmp_path / "t" / f"{index}.zarr" / "stray").write_bytes(b"x")
    store = shardedstore.open(config)
    summaries = shard_summaries(store)
    assert list(iter_shard_summaries(store)) == summaries

    capsys.readouterr()
    code = main(["info", str(config), "--json"])
    out, err = capsys.readouterr()
    assert out == _document_text(str(config), summaries)
    unreadable = [s for s in summaries if s.error is not None]
    assert code == (1 if unreadable else 0)
    assert len(unreadable) == (broken if kind == "zip" else 0)
    lines = err.splitlines()
    assert len(lines) == min(len(unreadable), 10) + (len(unreadable) > 10)
    for s, line in zip(unreadable[:10], lines, strict=False):
        assert f"{s.name}: cannot be read ({s.backend}): {s.error}" in line
    if len(unreadable) > 10:
        assert f"and {len(unreadable) - 10} more shard(s)" in lines[-1]
    if kind == "directory" and broken:
        assert json.loads(out)["total"]["stray_keys"] == broken


_texts = st.one_of(st.none(), st.text())


@given(
    kind=st.text(),
    path=st.text(),
    index=_texts,
    backend=st.text(),
    exists=st.sampled_from([True, False, None]),
    error=_texts,
    counts=st.lists(st.integers(min_value=0, max_value=2**70), min_size=5, max_size=5),
)
def test_a_summary_row_is_what_json_dumps_writes(
    kind: str,
    path: str,
    index: str | None,
    backend: str,
    exists: bool | None,
    error: str | None,
    counts: list[int],
) -> None:
    summary = ShardSummary(kind, path, index, backend, exists, error, *counts)
    assert summary.as_json() == json.dumps(summary.as_dict())


def test_each_key_name_is_judged_once_and_the_record_stays_bounded() -> None:
    judged: list[str] = []

    def verdict(key: str) -> bool:
        judged.append(key)
        return key.startswith("c/")

    verdicts = KeyVerdicts(verdict, limit=3)
    for _ in range(100):
        assert [verdicts(key) for key in ("zarr.json", "c/0/0")] == [False, True]
    assert judged == ["zarr.json", "c/0/0"]
    for key in ("a", "b", "c/1"):  # the record is full at the third: it starts afresh
        verdicts(key)
    assert verdicts("zarr.json") is False
    assert judged == ["zarr.json", "c/0/0", "a", "b", "c/1", "zarr.json"]


def test_an_inventory_without_sizes_has_the_same_keys(tmp_path: Path) -> None:
    config = _layout(tmp_path, "directory")
    places: list[Any] = [("directory", str(path)) for path in sorted((tmp_path / "t").iterdir())]
    places += [
        ("directory", str(tmp_path / "nowhere.zarr")),  # missing
        ("directory", str(config)),  # a file, not a directory
    ]
    sized = sync(inventories(places, ["zarr.json"]))
    unsized = sync(inventories(places, ["zarr.json"], sizes=False))
    assert [(i.exists, i.error) for i in sized[-2:]] == [(False, None), (False, None)]
    assert [(i.exists, i.error) for i in unsized[-2:]] == [(False, None), (False, None)]
    for with_sizes, without in zip(sized, unsized, strict=True):
        assert with_sizes.exists == without.exists
        assert sorted(with_sizes.sizes) == sorted(without.sizes)
        assert set(without.sizes.values()) <= {0}
        assert with_sizes.documents == without.documents
    assert sized[0].sizes["zarr.json"] == (tmp_path / "t" / "0.zarr" / "zarr.json").stat().st_size
    assert sorted(sized[0].sizes) == ["c/0", "zarr.json"]


def test_shards_a_factory_cannot_make_are_reported_in_order_with_the_next_arrays(
    tmp_path: Path,
) -> None:
    """validate and info make each array shard as they reach it: a factory's failures
    still come in chunk-index order, and the next array is still checked."""

    def good(index: str) -> LocalStore:
        return LocalStore(tmp_path / "a" / f"{index}.zarr")

    def bad(index: str) -> Any:
        if index == "1":
            raise OSError("no place for shard 1")
        return "not a store" if index == "4" else good(index)

    b = shardedstore.array_shard_directory_store(tmp_path / "b")
    store = shardedstore.ShardedStore(
        LocalStore(tmp_path / "base.zarr"), {}, {"a": (1, good), "b": (1, b)}
    )
    group = zarr.open_group(store, mode="w")
    group.create_array("a", shape=(6, 2), chunks=(1, 2), dtype="i4")[:] = 1
    group.create_array("b", shape=(4, 2), chunks=(1, 2), dtype="i4")[:] = 1
    (tmp_path / "b" / "0.zarr" / "stray").write_bytes(b"x")
    shutil.rmtree(tmp_path / "b" / "2.zarr")
    store = shardedstore.ShardedStore(
        LocalStore(tmp_path / "base.zarr", read_only=True), {}, {"a": (1, bad), "b": (1, b)}
    )

    report = validate_layout(store)
    assert [(f.shard.path, f.shard.chunk_index, f.check) for f in report.problems] == [
        ("a", "1", "unreadable"),
        ("a", "4", "unreadable"),
        ("b", "0", "stray-keys"),
    ]
    assert "cannot be made: no place for shard 1" in report.problems[0].message
    assert "the factory returned str" in report.problems[1].message
    assert [(f.shard.path, f.check) for f in report.warnings] == [("b", "gaps")]
    assert (report.arrays["a"].shards, report.arrays["b"].shards) == (6, 3)

    rows = [(s.path, s.chunk_index, s.error is not None) for s in shard_summaries(store)]
    assert rows == [
        ("", None, False),
        *[("a", index, False) for index in ("0", "2", "3", "5")],
        *[("b", index, False) for index in ("0", "1", "3")],
        ("a", "1", True),
        ("a", "4", True),
    ]
