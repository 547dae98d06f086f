"""OME-Zarr, as the user guide's recipe does it: one store per resolution level, the full
resolution sharded on t; written with ome-zarr-py, imported from ngff-zarr, read back with
ome-zarr-py's Reader, ngff-zarr and ome-zarr-models, on directory and zip layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fsspec
import ngff_zarr
import numpy as np
import ome_zarr_models
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr.writer import write_image
from zarr.storage import FsspecStore, LocalStore

import shardedstore
from shardedstore import ArgumentError, ShardedFileSystem, import_zarr, ome_zarr_layout
from shardedstore.cli import main
from shardedstore.fsspec import PROTOCOL
from tests.test_recipes import _blocks, _run, _section

SHAPE = (6, 2, 8, 64, 64)  # t, c, z, y, x
CHUNKS = (1, 1, 8, 32, 32)
SCALES = [2, 4]  # three levels


@pytest.fixture(autouse=True)
def registered() -> None:
    """The protocol, as its entry point registers it once installed."""
    fsspec.register_implementation(PROTOCOL, ShardedFileSystem, clobber=True)


@pytest.fixture(scope="module")
def image() -> np.ndarray[Any, Any]:
    return np.random.default_rng(23).integers(0, 4000, SHAPE, dtype=np.uint16)


@pytest.fixture(params=["directory", "zip"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# ---------------------------------------------------------------- the readers


Read = tuple[list[np.ndarray[Any, Any]], Any]
"""Each level's pixels, and the multiscales metadata as the reader gives it."""


def _ome_zarr_py(location: Any) -> Read:
    found = parse_url(location)
    assert found is not None
    node = next(iter(Reader(found)()))
    keys = ("axes", "coordinateTransformations", "name")
    return [np.asarray(level) for level in node.data], {k: node.metadata[k] for k in keys}


def _ngff_zarr(location: Any) -> Read:
    multiscales = ngff_zarr.from_ngff_zarr(location)
    return [np.asarray(level.data) for level in multiscales.images], multiscales.metadata


def _ome_zarr_models(location: Any) -> Read:
    model = ome_zarr_models.open_ome_zarr(location)
    paths = model.attributes.ome.get_array_paths()
    levels = [zarr.open_array(location, path=path, mode="r")[...] for path in paths]
    return levels, model.attributes


def _read_all(plain: Path, config: Path) -> None:
    """Every reader reads the layout exactly as it reads the plain image."""
    url = f"{PROTOCOL}::{config}"
    ways = [
        # ome-zarr-py reads a string through fsspec only for http(s) and s3, any other
        # as a local path: it takes the FsspecStore of the URL instead.
        (_ome_zarr_py, str(plain), FsspecStore.from_url(url, read_only=True)),
        # ngff-zarr reads s3/gs/azure/http(s) strings with obstore, any other as a local
        # path: it takes key-to-bytes mappings, such as fsspec's of the URL.
        (_ngff_zarr, str(plain), fsspec.get_mapper(url)),
        (_ngff_zarr, str(plain), shardedstore.open(config).as_mapping()),
        # ome-zarr-models opens the URL with zarr.
        (_ome_zarr_models, str(plain), url),
    ]
    for read, expected_at, at in ways:
        expected_levels, expected_metadata = read(expected_at)
        levels, metadata = read(at)
        assert metadata == expected_metadata, read.__name__
        assert [level.shape for level in levels] == [level.shape for level in expected_levels]
        for level, expected in zip(levels, expected_levels, strict=True):
            np.testing.assert_array_equal(level, expected)


def _placement(folder: Path, full: str, kind: str) -> list[str]:
    suffix = ".zarr.zip" if kind == "zip" else ".zarr"
    return sorted(p.name for p in (folder / full).iterdir() if p.name.endswith(suffix))


# --------------------------------------------------------------- the recipe


def test_ome_zarr_py_writes_into_a_layout_every_reader_reads_it(
    tmp_path: Path, image: np.ndarray[Any, Any], kind: str
) -> None:
    plain = tmp_path / "plain.ome.zarr"
    options = {"chunks": CHUNKS}
    write_image(
        image, zarr.open_group(LocalStore(plain), mode="w-"), axes="tczyx",
        scale_factors=SCALES, storage_options=options,
    )  # fmt: skip
    # The layout, as the user guide's `shardedstore init` line writes it.
    zip_ = "zip:" if kind == "zip" else ""
    suffix = ".zarr.zip" if kind == "zip" else ".zarr"
    img = tmp_path / "img"
    argv = ["init", str(img / "layout.json"), "--base", str(img / "base.zarr")]
    argv += ["--array-shards", f"s0=1:{zip_}{img}/s0/{{chunk}}{suffix}"]
    argv += ["--mount", f"s1={img}/s1{suffix}", "--mount", f"s2={img}/s2{suffix}"]
    assert main([*argv, "--json"]) == 0
    store = shardedstore.open(img / "layout.json", mode="r+")
    write_image(
        image, zarr.open_group(store, mode="w-"), axes="tczyx", scale_factors=SCALES,
        storage_options=options,
    )  # fmt: skip
    store.close()
    assert _placement(img, "s0", kind) == sorted(f"{t}{suffix}" for t in range(SHAPE[0]))
    assert (img / f"s1{suffix}").exists()
    assert (img / f"s2{suffix}").exists()
    assert not (img / "base.zarr" / "s0" / "c").exists()  # pixels only in the shards
    assert main(["validate", str(img / "layout.json")]) == 0
    _read_all(plain, img / "layout.json")


def test_ngff_zarr_output_is_imported_every_reader_reads_it(
    tmp_path: Path, image: np.ndarray[Any, Any], kind: str
) -> None:
    plain = tmp_path / "ngff.ome.zarr"
    ngff_image = ngff_zarr.to_ngff_image(image, dims=list("tczyx"))
    chunks = dict(zip("tczyx", CHUNKS, strict=True))
    multiscales = ngff_zarr.to_multiscales(ngff_image, scale_factors=SCALES, chunks=chunks)
    ngff_zarr.to_ngff_zarr(str(plain), multiscales)  # writes to a local path only
    config = ome_zarr_layout(plain, kind=kind)  # read from the image's multiscales
    full = "scale0/image"
    assert config["array_shards"] == {
        full: {"dims": 1, "store": {"type": "zip", "path": f"{full}/{{chunk}}.zarr.zip"}}
        if kind == "zip"
        else {"dims": 1, "store": {"type": "local", "root": f"{full}/{{chunk}}.zarr"}}
    }
    assert sorted(config["mounts"]) == ["scale1/image", "scale2/image"]
    img = tmp_path / "img"
    img.mkdir()
    (img / "layout.json").write_text(json.dumps(config, indent=2))
    summary = import_zarr(plain, img / "layout.json", progress=False)
    assert summary.verified
    assert summary.copied == summary.keys
    suffix = ".zarr.zip" if kind == "zip" else ".zarr"
    assert _placement(img, full, kind) == sorted(f"{t}{suffix}" for t in range(SHAPE[0]))
    assert main(["validate", str(img / "layout.json")]) == 0
    _read_all(plain, img / "layout.json")


def test_the_proposed_layout_follows_the_multiscales_metadata() -> None:
    v05 = {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "axes": [{"name": n} for n in "tczyx"],
                    "datasets": [{"path": "s0"}, {"path": "s1"}, {"path": "s2"}],
                }
            ],
        }
    }
    config = ome_zarr_layout(v05)
    assert config == {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "array_shards": {"s0": {"dims": 1, "store": {"type": "local", "root": "s0/{chunk}.zarr"}}},
        "mounts": {
            "s1": {"type": "local", "root": "s1.zarr"},
            "s2": {"type": "local", "root": "s2.zarr"},
        },
    }
    whole = ome_zarr_layout(v05, shard_axis=None, kind="zip")
    assert "array_shards" not in whole
    assert sorted(whole["mounts"]) == ["s0", "s1", "s2"]
    no_time = {"multiscales": [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]}
    with pytest.raises(ArgumentError, match=r"shard_axis 't' is not an axis of \('c', 'y', 'x'\)"):
        ome_zarr_layout(no_time)
    with pytest.raises(ArgumentError, match="is axis 1"):
        ome_zarr_layout(no_time, shard_axis="y")
    with pytest.raises(ArgumentError, match="no OME-Zarr multiscales metadata"):
        ome_zarr_layout({"title": "not an image"})


def test_the_user_guide_recipe_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _blocks(
        _section("OME-Zarr: one store per resolution level, the full resolution sharded on t")
    )
    assert [language for language, _ in blocks] == ["bash", "python", "python", "bash", "python"]
    monkeypatch.chdir(tmp_path)
    for language, code in blocks:
        if language == "bash":
            _run(["bash", "-e", "-c", code], tmp_path)
        else:
            exec(compile(code, "user-guide.md", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.splitlines()[-1] == "every reader reads both layouts"
    assert sorted(p.name for p in (tmp_path / "img" / "s0").iterdir()) == [
        f"{t}.zarr" for t in range(SHAPE[0])
    ]
    zips = sorted(p.name for p in (tmp_path / "ngff" / "scale0" / "image").glob("*.zip"))
    assert zips == [f"{t}.zarr.zip" for t in range(SHAPE[0])]
