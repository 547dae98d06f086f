"""A config must say what the data it names says: checked on open, reported by validate.

A config whose array-shard ``dims`` differ from those the shards were written with, or
whose shard template has a typo, used to open and read every value as the fill value
while ``validate`` said valid.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    ConfigError,
    LayoutError,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore.report.validate import validate_layout
from shardedstore.store.metadata import sharded_array_layout

CLI = str(Path(sys.executable).parent / "shardedstore")
VALUES = np.arange(4 * 3 * 5, dtype="f8").reshape(4, 3, 5)


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *argv], capture_output=True, text=True, check=False, timeout=120)


def _written(root: Path, dims: int, kind: str, chunks: tuple[int, ...] = (1, 1, 5)) -> Path:
    """Array ``t`` (4, 3, 5) written sharded on ``dims`` dims; returns its config."""
    if kind == "directory":
        factory: Any = array_shard_directory_store(root / "t")
    else:
        factory = array_shard_template_store({"type": "zip", "path": str(root / "t/{chunk}.zip")})
    store = ShardedStore(LocalStore(root / "base.zarr"), {}, {"t": (dims, factory)})
    array = zarr.create_array(store, name="t", shape=VALUES.shape, chunks=chunks, dtype="f8")
    array[:] = VALUES
    store.close()
    store.save_config(root / "layout.json")
    return root / "layout.json"


def _with_dims(config: Path, dims: int) -> Path:
    layout = json.loads(config.read_text())
    layout["array_shards"]["t"]["dims"] = dims
    changed = config.with_name(f"dims{dims}.json")
    changed.write_text(json.dumps(layout))
    return changed


# --------------------------------------------------------------- dims vs data


@pytest.mark.parametrize("kind", ["directory", "zip"])
@pytest.mark.parametrize(
    ("written", "configured", "says"),
    [
        (1, 2, r"its array shards are named for dims 1 \(e\.g\. '0' in .*t/\{chunk\}"),
        (1, 3, r"its chunk size along dimension 2 is 5, not 1"),  # in its metadata
        (1, 5, r"the array has 3 dimension\(s\) in its metadata"),
        (2, 1, r"its array shards are named for dims 2 \(e\.g\. '\d\.\d' in "),
    ],
)
def test_dims_that_do_not_match_the_data_raise_on_open(
    tmp_path: Path, kind: str, written: int, configured: int, says: str
) -> None:
    config = _with_dims(_written(tmp_path, written, kind), configured)
    for mode in ("r", "r+"):
        with pytest.raises(ConfigError) as caught:
            shardedstore.open(config, mode=mode)
        message = str(caught.value)
        assert message.startswith(
            f"array_shards.t.dims: array 't': the config shards it on its first {configured} "
            f"dimension(s) (dims {configured}), but "
        )
        assert re.search(says, message), message
    with pytest.raises(ConfigError, match=r"^array_shards\.t\.dims: "):
        ShardedStore.from_config(json.loads(config.read_text()), base_path=tmp_path)
    with pytest.raises(ConfigError, match=r"^array_shards\.t\.dims: "):
        xr.open_datatree(config, engine="shardedstore")
    # validate opens it anyway, and says the same as one of its problems.
    result = _run("validate", str(config), "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert problem["check"] == "dims"
    assert problem["message"].startswith("array 't': the config shards it on its first ")
    assert re.search(says, problem["message"])
    assert report["warnings"] == []  # no "no array shard" on top
    # With the dims the data was written with, it opens and reads back.
    store = shardedstore.open(_with_dims(config, written))
    np.testing.assert_array_equal(zarr.open_array(store, path="t", mode="r")[:], VALUES)


def test_a_nested_layout_names_its_own_field(tmp_path: Path) -> None:
    _written(tmp_path / "inner", 1, "directory")
    inner = json.loads((tmp_path / "inner" / "layout.json").read_text())
    inner["array_shards"]["t"]["dims"] = 2
    for field in ("base",):
        inner[field]["root"] = f"inner/{inner[field]['root']}"
    inner["array_shards"]["t"]["store"]["root"] = "inner/t/{chunk}.zarr"
    outer = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {"sim": {"type": "sharded", **{k: inner[k] for k in ("base", "array_shards")}}},
    }
    with pytest.raises(ConfigError, match=r"^mounts\.sim\.array_shards\.t\.dims: array 't'"):
        ShardedStore.from_config(outer, base_path=tmp_path)


def test_what_matches_opens_and_nothing_is_created(tmp_path: Path) -> None:
    config = _written(tmp_path, 1, "directory")
    (tmp_path / "t" / "notes.txt").write_text("not a shard")  # ignored
    (tmp_path / "t" / "x.zarr").mkdir()  # not a chunk index
    store = shardedstore.open(config)
    np.testing.assert_array_equal(zarr.open_array(store, path="t", mode="r")[:], VALUES)
    # A layout nothing was written to yet opens for writing, and creates nothing.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    layout = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {"t": {"dims": 2, "store": {"type": "zip", "path": "t/{chunk}.zip"}}},
    }
    (fresh / "layout.json").write_text(json.dumps(layout))
    writer = shardedstore.open(fresh / "layout.json", mode="r+")
    assert sorted(p.name for p in fresh.iterdir()) == ["layout.json"]
    zarr.create_array(writer, name="t", shape=(2, 2, 3), chunks=(1, 1, 3), dtype="i2")[:] = 1
    writer.close()
    assert shardedstore.open(fresh / "layout.json", mode="a").read_only is False


def test_dims_beyond_the_arrays_dimensions_are_refused_clearly() -> None:
    document = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [4, 3],
        "data_type": "float64",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1, 3]}},
        "chunk_key_encoding": {"name": "default"},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }
    with pytest.raises(LayoutError, match=r"array 't' has 2 dimension\(s\) but .* first 3; "):
        sharded_array_layout("t", {"zarr.json": document}, 3)
    zarray = {"shape": [4], "chunks": [1], "dtype": "<f8", "zarr_format": 2}
    with pytest.raises(LayoutError, match=r"lower dims to at most 1"):
        sharded_array_layout("t", {".zarray": zarray}, 2)


# ------------------------------------------------------- a template's typo


def test_an_array_without_any_shard_is_a_warning(tmp_path: Path) -> None:
    config = _written(tmp_path, 1, "directory")
    layout = json.loads(config.read_text())
    assert layout["array_shards"]["t"]["store"]["root"] == "t/{chunk}.zarr"
    layout["array_shards"]["t"]["store"]["root"] = "t1/{chunk}.zarr"  # a typo
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(layout))
    report = validate_layout(shardedstore.open(typo))
    assert report.valid  # as an array whose data is not written yet
    (warning,) = report.warnings
    assert warning.check == "no-shards"
    assert warning.message.startswith(
        "array 't': none of its array shards exist, but its shape along the sharded "
        "dimension(s) is [4]: every chunk reads as the fill value"
    )
    assert f"{tmp_path}/t1/{{chunk}}.zarr" in warning.message
    result = _run("validate", str(typo))
    assert result.returncode == 0, result.stderr
    assert "1 warning(s):" in result.stdout
    assert "none of its array shards exist" in result.stdout
    assert "typo" in result.stdout
    # An array of shape 0 along the sharded dimension has nothing to miss.
    store = shardedstore.open(config, mode="r+")
    zarr.open_array(store, path="t", mode="r+").resize((0, 3, 5))
    store.close()
    report = validate_layout(shardedstore.open(typo))
    assert [w.check for w in report.warnings] == []


# ---------------------------------------------------------- a missing base


def test_a_missing_base_is_named_where_a_layout_is_read(tmp_path: Path) -> None:
    layout = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {"t": {"dims": 1, "store": {"type": "local", "root": "t/{chunk}.zarr"}}},
    }
    config = tmp_path / "layout.json"
    config.write_text(json.dumps(layout))
    base = f"file://{tmp_path}/base.zarr"
    said = f"does not exist ({base}), so there is nothing to read"
    # Opening creates nothing and reads nothing: writers start from such a config.
    store = shardedstore.open(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layout.json"]
    with pytest.raises(FileNotFoundError) as caught:
        xr.open_datatree(config, engine="shardedstore")
    assert str(caught.value).startswith(f"the base store of {config} {said}")
    with pytest.raises(FileNotFoundError) as caught:
        shardedstore.chunk_table(store)
    assert str(caught.value).startswith(f"the layout's base store {said}")
    for command in ("tree", "chunks"):
        result = _run(command, str(config))
        assert result.returncode == 1
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"shardedstore {command}: error: the base store of {config} {said}")
        assert "StorePath" not in line
        assert "_Sync" not in line
    # validate and info report it among the rest, as before.
    result = _run("validate", str(config))
    assert result.returncode == 1
    assert f"base: does not exist ({base})" in result.stdout
    assert _run("info", str(config)).returncode == 0
    writer = shardedstore.open(config, mode="a")
    zarr.create_group(writer)
    writer.close()
    assert dict(zarr.open_group(shardedstore.open(config), mode="r").attrs) == {}
    assert xr.open_datatree(config, engine="shardedstore", consolidated=False).children == {}


# --------------------------------------------------------- a killed writer


def test_shards_of_an_append_that_did_not_finish_are_called_so(tmp_path: Path) -> None:
    # Base in a zip (committed at close), array shards in directories (written at once):
    # a writer killed before closing leaves the new time steps beyond the old shape.
    store = ShardedStore(
        zarr.storage.ZipStore(tmp_path / "base.zip", mode="a"),
        {},
        {"t": (1, array_shard_directory_store(tmp_path / "t"))},
    )
    zarr.create_array(store, name="t", shape=(3, 4), chunks=(1, 4), dtype="i2")[:] = 1
    store.close()
    store.save_config(tmp_path / "layout.json")
    script = textwrap.dedent(
        f"""
        import os, numpy as np, shardedstore, zarr
        store = shardedstore.open({str(tmp_path / "layout.json")!r}, mode="r+")
        zarr.open_array(store, path="t", mode="r+").append(np.full((2, 4), 7, dtype="i2"))
        os._exit(0)  # as kill -9, before the base zip is committed
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [f"{i}.zarr" for i in range(5)]
    report = validate_layout(shardedstore.open(tmp_path / "layout.json"))
    (beyond,) = [w for w in report.warnings if w.check == "beyond-shape"]
    assert "2 array shard(s) beyond the array's shape [3]" in beyond.message
    assert "chunks 3, 4" in beyond.message
    assert "an append or a write that did not finish" in beyond.message
    assert "resize that shrinks" not in beyond.message
