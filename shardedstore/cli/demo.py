"""The demo dataset: a small DataTree written sharded, read back and compared."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
from zarr.abc.store import Store
from zarr.storage import LocalStore

from shardedstore.config.layout import open_config
from shardedstore.errors import MissingDependencyError, OutputError
from shardedstore.report.info import node_holder
from shardedstore.store.factories import array_shard_directory_store
from shardedstore.store.sharded import ShardedStore
from shardedstore.table.chunks import chunk_table

__all__ = ["DEMO_MARKER", "OutputError", "build_demo_tree", "run_demo"]

DEMO_MARKER = ".shardedstore-demo"
"""The file that marks a directory as the demo's own output, which a re-run may replace."""

DEMO_DIRECTORIES = ("base.zarr", "people.zarr", "coarse.zarr", "temperature")
DEMO_FILES = ("layout.json",)
"""What the demo writes in its directory, besides the marker; nothing else is removed."""


def build_demo_tree(seed: int = 0) -> xr.DataTree:
    """A small climate-like hierarchy: groups, a mounted group and a time-sharded array."""
    rng = np.random.default_rng(seed)
    time = np.arange("2026-01-01", "2026-01-13", dtype="datetime64[D]")
    temperature = xr.DataArray(
        rng.standard_normal((time.size, 16, 32)).astype("float32"),
        dims=("time", "lat", "lon"),
        coords={"time": time, "lat": np.linspace(-80, 80, 16), "lon": np.arange(32) * 11.25},
        attrs={"units": "degC"},
    )
    fine = xr.Dataset({"temperature": temperature, "station": ("lat", np.arange(16))})
    coarse = fine.coarsen(lat=4, lon=4).mean()
    # One time step per chunk (one array shard each), as an encoding: the demo needs no dask.
    fine["temperature"].encoding["chunks"] = (1, 8, 16)
    people = xr.Dataset(
        {"heights": ("people", [1.57, 1.82, 1.65])},
        coords={"people": ["alice", "bob", "carol"]},
    )
    return xr.DataTree.from_dict(
        {
            "/": xr.Dataset(attrs={"title": "shardedstore demo"}),
            "simulation/fine": fine,
            "simulation/coarse": coarse,
            "people": people,
        }
    )


def demo_store(root: Path) -> ShardedStore:
    """The demo layout under ``root``: base, two mounts, one array-sharded variable."""
    return ShardedStore(
        LocalStore(root / "base.zarr"),
        {
            "people": LocalStore(root / "people.zarr"),
            "simulation/coarse": LocalStore(root / "coarse.zarr"),
        },
        {"simulation/fine/temperature": (1, array_shard_directory_store(root / "temperature"))},
    )


def prepare_demo_directory(root: Path) -> None:
    """Make ``root`` ready for the demo, deleting nothing the demo did not write.

    A missing or empty directory is used as is. A directory holding a previous demo
    (its :data:`DEMO_MARKER`) loses that demo's entries (:data:`DEMO_DIRECTORIES`,
    :data:`DEMO_FILES`) and keeps anything else. Any other directory is refused.

    Raises
    ------
    OutputError
        If ``root`` is not a directory, is not empty and holds no previous demo, or
        an entry of a previous demo is not what the demo writes (a symbolic link, a
        file where the demo writes a directory or the reverse).
    """
    if root.exists() and not root.is_dir():
        raise OutputError(
            f"demo directory {str(root)!r} is not a directory; nothing was deleted. "
            "Give a new or empty directory, e.g. `shardedstore demo demo-output`"
        )
    marker = root / DEMO_MARKER
    if root.is_dir() and any(root.iterdir()):
        if marker.is_symlink() or not marker.is_file():
            raise OutputError(
                f"demo directory {str(root)!r} is not empty and holds no previous demo "
                f"(no {DEMO_MARKER} file in it); nothing was deleted. To run the demo, "
                "give a new or empty directory, e.g. `shardedstore demo demo-output`"
            )
        entries = [(root / name, True) for name in DEMO_DIRECTORIES]
        entries += [(root / name, False) for name in DEMO_FILES]
        for entry, is_dir in entries:
            if entry.is_symlink() or (entry.exists() and entry.is_dir() != is_dir):
                kind = "a symbolic link" if entry.is_symlink() else "not what the demo writes"
                raise OutputError(
                    f"{str(entry)!r} is {kind} (the demo writes a "
                    f"{'directory' if is_dir else 'file'} there); nothing was deleted. "
                    "Move it away, or give a new or empty directory"
                )
        for entry, is_dir in entries:
            if is_dir and entry.exists():
                shutil.rmtree(entry)
            elif entry.exists():
                entry.unlink()
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "Output of `shardedstore demo`. Running the demo again here replaces "
        f"{', '.join(DEMO_DIRECTORIES + DEMO_FILES)} and nothing else.\n"
    )


def run_demo(out_dir: str | Path = "demo-output", echo: Callable[[str], None] = print) -> bool:
    """Write the demo tree sharded under ``out_dir``, read it back, compare; True if equal.

    ``out_dir`` must be new, empty, or the output of an earlier demo, which is replaced;
    files the demo does not write are left alone (see :func:`prepare_demo_directory`).

    Raises
    ------
    OutputError
        If ``out_dir`` holds anything but an earlier demo; nothing was deleted.
    """
    root = Path(out_dir)
    prepare_demo_directory(root)
    tree = build_demo_tree()
    store = demo_store(root)
    with warnings.catch_warnings():
        # Noise for a demo: consolidated metadata and fixed-width strings in v3.
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        warnings.filterwarnings("ignore", message="The data type")
        tree.to_zarr(store, mode="w")
    echo(f"wrote the demo DataTree sharded under {root}/")
    for node in tree.subtree:
        for name in node.variables:
            path = f"{node.path.strip('/')}/{name}".strip("/")
            echo(f"  {path:<36} {node_holder(store, path)}")
    shards = sorted(p.name for p in (root / "temperature").iterdir())
    echo(
        f"array shards of simulation/fine/temperature: {len(shards)} ({', '.join(shards[:3])}, ...)"
    )
    config_path = root / "layout.json"
    store.save_config(config_path)
    echo(f"layout config: {config_path} ({config_path.stat().st_size} bytes, paths relative)")
    for line in config_path.read_text().splitlines():
        echo(f"  {line}")
    # Reopen from the config alone, read-only, as a user elsewhere would.
    reopened = open_config(config_path)
    # xarray's annotations predate zarr 3 stores; it accepts any zarr Store here.
    back = xr.open_datatree(reopened, engine="zarr").compute()  # type: ignore[arg-type]
    same = bool(back.identical(tree.compute()))
    echo(
        f"reopened with shardedstore.open({str(config_path)!r}): "
        + ("identical to the original" if same else "DIFFERS from the original")
    )
    _echo_chunk_rows(reopened, echo)
    return same


def _echo_chunk_rows(store: Store, echo: Callable[[str], None], shown: int = 4) -> None:
    """A few rows of the dataset's chunk table (or how to get pyarrow for it)."""

    array = "simulation/fine/temperature"
    try:
        table = chunk_table(store, [array], stats="min,max,mean", progress=False)
    except MissingDependencyError:
        echo('chunk table: skipped, it needs pyarrow: pip install "shardedstore[table]"')
        return
    echo(f"chunk table of {array}: {table.num_rows} chunks, the first {shown}:")
    rows = table.slice(0, shown).to_pylist()
    ndim = sum(name.startswith("c") and name[1:].isdigit() for name in table.column_names)
    for row in rows:
        index = ",".join(str(row[f"c{i}"]) for i in range(ndim))
        echo(
            f"  chunk ({index})  array shard {row['shard_index']:>2}  {row['nbytes']:>5} bytes  "
            f"min {row['min']:7.2f}  max {row['max']:7.2f}  mean {row['mean']:7.2f}"
        )
    echo("  (shardedstore chunks LAYOUT --stats min,max,mean --out DIR writes it as Parquet)")
