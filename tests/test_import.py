"""``shardedstore import``: a plain Zarr copied into an existing layout's stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore import (
    ArgumentError,
    ConcurrentWriteError,
    LayoutError,
    ShardedStore,
    SourceError,
    import_zarr,
)
from shardedstore.cli import main
from tests.conftest import S3Server

CLI = str(Path(sys.executable).parent / "shardedstore")
STEPS = 6


def _datasets() -> tuple[xr.Dataset, xr.Dataset]:
    rng = np.random.default_rng(5)
    temp = xr.Dataset(
        {"temp": (("t", "y", "x"), rng.random((STEPS, 8, 6)).astype("f4"))},
        coords={"t": np.arange(STEPS)},
        attrs={"title": "imported"},
    )
    people = xr.Dataset({"heights": ("p", rng.random(4))})
    return temp, people


def _source(path: Path, zarr_format: int = 3, t_chunk: int = 1) -> Path:
    """A plain Zarr (one directory) as a writer that only writes to a path leaves it."""
    temp, people = _datasets()
    store = LocalStore(path)
    temp.chunk({"t": t_chunk, "y": 4, "x": 3}).to_zarr(
        store, consolidated=False, zarr_format=zarr_format
    )
    people.to_zarr(store, group="people", consolidated=False, zarr_format=zarr_format)
    return path


def _layout(folder: Path, kind: str) -> Path:
    """An empty layout, as ``shardedstore init`` writes one: only its config."""
    folder.mkdir(parents=True, exist_ok=True)

    def store(name: str) -> dict[str, str]:
        if kind == "zip":
            return {"type": "zip", "path": f"{name}.zarr.zip"}
        return {"type": "local", "root": f"{name}.zarr"}

    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {"people": store("people")},
        "array_shards": {"temp": {"dims": 1, "store": store("temp/{chunk}")}},
    }
    (folder / "layout.json").write_text(json.dumps(config))
    return folder / "layout.json"


def _keys(store: Any) -> dict[str, bytes]:
    return dict(store.as_mapping() if isinstance(store, ShardedStore) else _mapping(store))


def _mapping(store: zarr.abc.store.Store) -> dict[str, bytes]:
    from shardedstore import StoreMapping

    return dict(StoreMapping(store))


def _tree(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _assert_same_data(layout: Path, source: Path) -> None:
    temp, people = _datasets()
    store = shardedstore.open(layout)
    read = xr.open_zarr(store, consolidated=False).compute()
    assert read.attrs == {"title": "imported"}
    np.testing.assert_array_equal(read.temp.values, temp.temp.values)
    group = xr.open_zarr(store, group="people", consolidated=False).compute()
    np.testing.assert_array_equal(group.heights.values, people.heights.values)
    assert _keys(store) == _mapping(LocalStore(source, read_only=True))  # every key, exactly


@pytest.mark.parametrize("kind", ["directory", "zip"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_import_puts_every_key_where_the_layout_routes_it(
    tmp_path: Path, kind: str, zarr_format: int
) -> None:
    source = _source(tmp_path / "src.zarr", zarr_format)
    layout = _layout(tmp_path / "ds", kind)
    summary = import_zarr(source, layout, progress=False)
    keys = _mapping(LocalStore(source, read_only=True))
    documents = sum(
        k.rpartition("/")[2] in {"zarr.json", ".zarray", ".zattrs", ".zgroup"} for k in keys
    )
    assert (summary.keys, summary.documents, summary.copied, summary.skipped) == (
        len(keys),
        documents,
        len(keys),
        0,
    )
    assert summary.bytes == sum(len(v) for v in keys.values())
    assert summary.verified
    _assert_same_data(layout, source)
    # Placement: each time step in its own array shard, which reads alone; the mount
    # holds the group; the base holds neither.
    suffix = ".zarr.zip" if kind == "zip" else ".zarr"
    shards = sorted(
        p.name for p in (tmp_path / "ds" / "temp").iterdir() if not p.name.startswith(".")
    )
    assert shards == sorted(f"{t}{suffix}" for t in range(STEPS))
    one = f"{tmp_path}/ds/temp/3{suffix}"
    alone = zarr.open_array(
        zarr.storage.ZipStore(one, mode="r") if kind == "zip" else one, mode="r"
    )
    np.testing.assert_array_equal(alone[...], _datasets()[0].temp.values[3])
    base = _tree(tmp_path / "ds" / "base.zarr")
    assert not [name for name in base if name.startswith(("people", "temp/c", "temp/0"))]
    assert (tmp_path / "ds" / f"people{suffix}").exists()
    again = import_zarr(source, layout, progress=False)  # the same import: all in place
    assert (again.copied, again.skipped) == (0, len(keys))


def test_a_zip_source_and_a_store_object(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    with zipfile.ZipFile(tmp_path / "src.zip", "w") as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(source).as_posix())
    layout = _layout(tmp_path / "ds", "directory")
    writer = shardedstore.open(layout, mode="r+")
    summary = import_zarr(tmp_path / "src.zip", writer, progress=False)
    assert summary.verified  # read back through the writer, before its close
    writer.close()
    _assert_same_data(layout, source)
    with pytest.raises(ArgumentError, match="mode='r\\+'"):
        import_zarr(source, shardedstore.open(layout), progress=False)


def test_a_source_at_a_url(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    import s3fs

    source = _source(tmp_path / "src.zarr")
    fs = s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_server.endpoint}, skip_instance_cache=True
    )
    fs.put(str(source), f"{s3_bucket}/src.zarr", recursive=True)
    layout = _layout(tmp_path / "ds", "zip")
    url = f"s3://{s3_bucket}/src.zarr"
    option = f"endpoint_url={s3_server.endpoint}"
    code = main(["import", url, str(layout), "--source-option", option, "-q"])
    assert code == 0
    _assert_same_data(layout, source)


def test_cli_reports_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    assert main(["import", str(source), str(layout), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"imported {source} -> {layout} in ")
    assert "0 already in place; verified: identical (crc32)" in out
    assert main(["import", str(source), str(layout), "--json", "-j", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["copied"] == 0
    assert document["skipped"] == document["keys"] > 0
    assert document["verified"] is True
    assert main(["import", str(tmp_path / "nope.zarr"), str(layout)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "nope.zarr does not exist" in err[0]


# ------------------------------------------------------------------- resuming


def test_a_rerun_copies_only_what_is_missing(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    import_zarr(source, layout, progress=False)
    # As if the first run had stopped: some chunks of two array shards and the mount
    # never arrived.
    lost = [
        *sorted((tmp_path / "ds" / "temp" / "4.zarr" / "c").rglob("*"))[-2:],
        *sorted((tmp_path / "ds" / "temp" / "5.zarr" / "c").rglob("*"))[-2:],
        tmp_path / "ds" / "people.zarr" / "heights" / "c" / "0",
    ]
    files = [path for path in lost if path.is_file()]
    for path in files:
        path.unlink()
    summary = import_zarr(source, layout, progress=False)
    assert summary.copied == len(files) > 0
    assert summary.skipped == summary.keys - len(files)
    _assert_same_data(layout, source)


def test_a_conflicting_key_is_never_overwritten(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    import_zarr(source, layout, progress=False)
    chunk = tmp_path / "ds" / "temp" / "2.zarr" / "c" / "0" / "0"
    chunk.write_bytes(b"someone else's chunk")
    before = _tree(tmp_path / "ds")
    with pytest.raises(FileExistsError, match=r"'temp/c/2/0/0' exists in the layout") as error:
        import_zarr(source, layout, progress=False)
    assert "import never overwrites" in str(error.value)
    assert _tree(tmp_path / "ds") == before


def test_zip_shards_are_committed_all_or_none(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "zip")
    # The layout holds one chunk already, with other bytes: the run fails on it, late.
    writer = shardedstore.open(layout, mode="r+")
    zarr.open_group(writer, mode="w", attributes={"title": "imported"})
    temp = _datasets()[0]
    temp.chunk({"t": 1, "y": 4, "x": 3}).to_zarr(
        writer, consolidated=False, compute=False, mode="a"
    )
    array = zarr.open_array(writer, path="temp", mode="r+")
    array[5, :4, :3] = -1  # one chunk of the last array shard, not the source's
    writer.close()
    before = _tree(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="temp/c/5/0/0"):
        import_zarr(source, layout, progress=False, jobs=1)
    assert _tree(tmp_path / "ds") == before  # every zip as it was: nothing committed
    # Remove what conflicts, then the same import finishes the job.
    writer = shardedstore.open(layout, mode="r+")
    zarr.core.sync.sync(writer.delete("temp/c/5/0/0"))
    writer.close()
    summary = import_zarr(source, layout, progress=False)
    assert summary.verified
    _assert_same_data(layout, source)


def _many_chunks(path: Path) -> Path:
    store = LocalStore(path)
    array = zarr.create_array(
        store, name="temp", shape=(4, 60, 60), chunks=(1, 2, 2), dtype="u1", compressors=None
    )
    array[:] = np.arange(4 * 60 * 60, dtype="u1").reshape(4, 60, 60)
    zarr.open_group(store, mode="a").create_group("people")
    return path


def test_ctrl_c_stops_an_import_and_a_rerun_finishes_it(tmp_path: Path) -> None:
    source = _many_chunks(tmp_path / "many.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    process = subprocess.Popen(
        [CLI, "import", str(source), str(layout), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal gives it, even if this run inherited SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    shards = tmp_path / "ds" / "temp"
    deadline = time.monotonic() + 60
    while sum(1 for p in shards.rglob("*") if p.is_file()) < 200:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert time.monotonic() - start < 10
    assert stderr.strip().splitlines()[-1] == (
        "shardedstore import: interrupted; run the same command again to finish (what is in "
        "place is skipped)"
    )
    assert "Traceback" not in stderr
    written = sum(1 for p in shards.rglob("*") if p.is_file())
    assert 200 <= written < 3600 + 4  # stopped before the end
    assert not [p for p in (tmp_path / "ds").rglob("*") if p.name.endswith(".partial")]
    summary = import_zarr(source, layout, progress=False)
    assert summary.skipped >= 200
    assert summary.copied + summary.skipped == summary.keys
    assert summary.verified
    np.testing.assert_array_equal(
        zarr.open_array(shardedstore.open(layout), path="temp", mode="r")[:],
        np.arange(4 * 60 * 60, dtype="u1").reshape(4, 60, 60),
    )


# ------------------------------------------------------------------- refusals


def test_an_array_the_layout_cannot_shard_is_refused_before_any_write(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr", t_chunk=2)  # two time steps per chunk
    layout = _layout(tmp_path / "ds", "directory")
    with pytest.raises(LayoutError, match=r"chunk.*temp.*nothing was written") as error:
        import_zarr(source, layout, progress=False)
    assert "array_shards.temp.dims is 1" in str(error.value)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["layout.json"]


def test_a_source_with_a_symlink_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    secret = tmp_path / "secret"
    secret.write_bytes(b"private")
    os.symlink(secret, source / "people" / "leak")
    layout = _layout(tmp_path / "ds", "directory")
    with pytest.raises(LayoutError, match="symbolic link"):
        import_zarr(source, layout, progress=False)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["layout.json"]


def test_a_source_inside_the_layout_is_refused(tmp_path: Path) -> None:
    layout = _layout(tmp_path / "ds", "directory")
    source = _source(tmp_path / "ds" / "base.zarr")
    before = _tree(tmp_path / "ds")
    with pytest.raises(LayoutError, match="base of the layout"):
        import_zarr(source, layout, progress=False)
    with pytest.raises(LayoutError, match="same location or one lies in the other"):
        import_zarr(source / "people", layout, progress=False)
    assert _tree(tmp_path / "ds") == before


def test_one_writer_per_zip_holds_for_imports(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "zip")
    holder = shardedstore.open(layout, mode="r+")
    document = (source / "people" / "zarr.json").read_bytes()
    buffer = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(document)
    zarr.core.sync.sync(holder.set("people/zarr.json", buffer))  # holds the mount's zip
    with pytest.raises(ConcurrentWriteError, match=r"people\.zarr\.zip"):
        import_zarr(source, layout, progress=False)
    holder.close()


# ------------------------------------------------------------- bad sources


@pytest.mark.parametrize("what", ["missing", "empty", "not zarr", "text file", "nested"])
def test_a_source_that_is_not_a_zarr_is_refused_saying_what_to_give(
    tmp_path: Path, what: str
) -> None:
    source = tmp_path / "src"
    expected = {
        "missing": r"src does not exist; give the Zarr to import as a directory, a zip",
        "empty": r"src is not a Zarr hierarchy: it is empty",
        "not zarr": r"src is not a Zarr hierarchy: no zarr\.json .* e\.g\. 'readme\.md'",
        "text file": r"src is a file but not a zip file",
        "nested": r"a Zarr in its folder 'inner\.zarr': give .*src/inner\.zarr",
    }[what]
    if what == "empty":
        source.mkdir()
    elif what == "not zarr":
        source.mkdir()
        (source / "readme.md").write_text("notes")
    elif what == "text file":
        source.write_text("not a zip")
    elif what == "nested":
        _source(source / "inner.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    with pytest.raises(SourceError, match=expected) as error:
        import_zarr(source, layout, progress=False)
    assert isinstance(error.value, ValueError)
    assert isinstance(error.value, FileNotFoundError) == (what == "missing")
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["layout.json"]
    assert main(["import", str(source), str(layout), "-q"]) == 1


def test_a_zip_made_by_common_tools_imports(tmp_path: Path) -> None:
    """Zips from zip -r, shutil.make_archive or a file manager hold directory entries
    (``people/``), which are not keys; one made from the folder holds the Zarr one
    folder down, reached as zip://FOLDER::ZIP."""
    source = _source(tmp_path / "src.zarr")
    flat = shutil.make_archive(str(tmp_path / "flat"), "zip", source)
    with zipfile.ZipFile(flat) as archive:
        assert "people/" in archive.namelist()  # a directory entry
    layout = _layout(tmp_path / "ds", "directory")
    assert import_zarr(flat, layout, progress=False).verified
    _assert_same_data(layout, source)
    nested = shutil.make_archive(str(tmp_path / "nested"), "zip", tmp_path, "src.zarr")
    other = _layout(tmp_path / "other", "zip")
    with pytest.raises(SourceError, match=r"give zip://src\.zarr::.*nested\.zip"):
        import_zarr(nested, other, progress=False)
    assert import_zarr(f"zip://src.zarr::{nested}", other, progress=False).verified
    _assert_same_data(other, source)


def test_a_layout_source_by_url(tmp_path: Path) -> None:
    source = _source(tmp_path / "src.zarr")
    first = _layout(tmp_path / "first", "directory")
    import_zarr(source, first, progress=False)
    second = _layout(tmp_path / "second", "zip")
    assert import_zarr(f"shardedstore::{first}", second, progress=False).verified
    _assert_same_data(second, source)


@pytest.mark.parametrize("field", ["mounts", "array_shards"])
def test_a_layout_whose_shards_miss_the_source_is_refused(tmp_path: Path, field: str) -> None:
    """A layout whose paths name no node of the source would put everything in its base:
    refused, naming the field and the source's nodes, unless partial."""
    source = _source(tmp_path / "src.zarr")
    layout = _layout(tmp_path / "ds", "directory")
    config = json.loads(layout.read_text())
    if field == "mounts":
        config["mounts"]["labels"] = {"type": "local", "root": "labels.zarr"}
    else:
        config["array_shards"]["temperature"] = config["array_shards"].pop("temp")
    layout.write_text(json.dumps(config))
    missing = "mounts.labels" if field == "mounts" else "array_shards.temperature"
    with pytest.raises(LayoutError, match=rf"its {missing} name\(s\) no node") as error:
        import_zarr(source, layout, progress=False)
    assert "'', 'people', 'people/heights', 't', 'temp'" in str(error.value)
    assert "partial=True (--partial)" in str(error.value)
    assert "nothing was written" in str(error.value)
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["layout.json"]
    assert main(["import", str(source), str(layout), "-q"]) == 1
    assert main(["import", str(source), str(layout), "-q", "--partial"]) == 0
    _assert_same_data(layout, source)
    if field == "mounts":
        # Once the layout holds the node, a source without it imports without --partial.
        labels = _source(tmp_path / "with-labels.zarr")
        xr.Dataset({"mask": ("p", [1, 0])}).to_zarr(labels, group="labels", consolidated=False)
        assert import_zarr(labels, layout, progress=False).verified
        assert import_zarr(source, layout, progress=False).skipped > 0
