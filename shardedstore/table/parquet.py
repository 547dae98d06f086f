"""Write a chunk table as a Parquet dataset, incrementally: ``write_chunk_table``.

One file per shard and array, hive-partitioned by array
(``{out}/array=<url-quoted path>/base.parquet``, ``mount.parquet``,
``chunk-<index>.parquet``), each holding in its key-value metadata a fingerprint of
what it was computed from (see :mod:`shardedstore.table.chunks`). A re-run hands each
task its file's fingerprint; a task whose shard did not change sends back nothing and
the file is kept. Files are written under a temporary name and renamed; the output
holds a marker file, and only directories holding it (or new, empty ones) are written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from zarr.abc.store import Store

from shardedstore.backends.oserrors import renamed
from shardedstore.errors import ChunkTableOutputError
from shardedstore.shards.outputlock import local_output_lock
from shardedstore.table.chunks import (
    TablePlan,
    as_layout,
    missing_rows,
    plan_tasks,
    require_pyarrow,
    run_tasks,
    stored_coords,
)
from shardedstore.table.stats import Histogram, parse_stats
from shardedstore.table.tasks import FORMAT_VERSION, TableResult, TableTask

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["MARKER", "ChunkTableOutputError", "ChunkTableWrite", "write_chunk_table"]

MARKER = "_shardedstore_chunk_table.json"
"""The file that marks a directory as a chunk table ``write_chunk_table`` may update."""

_FINGERPRINT = b"shardedstore.fingerprint"


@dataclass(frozen=True)
class ChunkTableWrite:
    """What :func:`write_chunk_table` did.

    Attributes
    ----------
    written
        Files written (recomputed or new), relative to the output directory.
    unchanged
        Files kept as they were (their shard's fingerprint did not change).
    removed
        Files removed: their shard or array is gone.
    rows
        Rows in the files written.
    """

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    rows: int


def _file_name(task: TableTask) -> str:
    partition = f"array={quote(task.array.path, safe='')}"
    if task.kind == "array shard":
        return f"{partition}/chunk-{task.shard_index}.parquet"
    return f"{partition}/{'mount' if task.kind == 'mount' else 'base'}.parquet"


def _fingerprint_of(path: Path) -> str | None:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None  # unreadable: computed again
    value = metadata.get(_FINGERPRINT)
    return None if value is None else value.decode()


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ChunkTableOutputError(f"{out} exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ChunkTableOutputError(
            f"{out} is not empty and holds no chunk table ({MARKER} is missing); "
            "shardedstore writes chunk tables only into a new or empty directory, or one "
            "it wrote before: choose another --out"
        )


def _write_atomic(table: pa.Table, path: Path, metadata: Mapping[bytes, bytes]) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    merged = {**(table.schema.metadata or {}), **metadata}
    # The array is the hive partition (its directory); a column of the same name in the
    # files would clash with it in pyarrow and pandas.
    table = table.drop_columns(["array"])
    try:
        pq.write_table(table.replace_schema_metadata(merged), partial)
        os.replace(partial, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        public = renamed(error, str(partial), str(path))  # the temporary name means nothing
        if public is error:
            raise
        raise public from None


def write_chunk_table(
    store: Store,
    out: str | os.PathLike[str],
    arrays: Iterable[str] | str | None = None,
    *,
    stats: Iterable[str] | str | None = (),
    histogram: Histogram | None = None,
    missing: bool = False,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> ChunkTableWrite:
    """Write the chunk table as a Parquet dataset, one file per shard; incremental.

    Files are ``{out}/array={quoted array path}/base.parquet`` (or ``mount.parquet``,
    or ``chunk-{index}.parquet`` for each array shard; ``missing.parquet`` with
    ``missing``), hive-partitioned by array, so DuckDB, pyarrow and pandas read the
    directory as one table::

        SELECT "array", c0, max FROM read_parquet('out/**/*.parquet', hive_partitioning=true)

    Each file holds a fingerprint of what it was computed from; a re-run recomputes
    only the shards whose chunks (sizes and modification stamps), metadata or asked-for
    statistics changed, so appending time steps costs only the new shards. Files of
    shards that are gone are removed. Each file is written under a temporary name and
    renamed; one run at a time holds the lock ``{out}/_chunk_table.lock``.

    Parameters
    ----------
    store, arrays, stats, histogram, missing, executor, progress
        As for :func:`chunk_table`.
    out
        A local directory: new, empty, or written by this function before.

    Returns
    -------
    ChunkTableWrite

    Raises
    ------
    ChunkTableOutputError
        If ``out`` is a URL, a file, or a directory holding something else.
    ChunkTableError
        Naming the shard that failed; files finished before are kept, and a re-run
        finishes the job.
    """
    require_pyarrow()

    options = parse_stats(stats, histogram)
    text = os.fspath(out)
    if "://" in text or "::" in text:
        raise ChunkTableOutputError(
            f"{text!r} is a URL; chunk tables are written to a local directory: write "
            "locally, then upload the directory"
        )
    root = Path(text)
    _check_output(root)
    root.mkdir(parents=True, exist_ok=True)
    with local_output_lock(str(root / "_chunk_table"), f"chunk table {str(root)!r}"):
        marker = root / MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"format": FORMAT_VERSION}) + "\n")
        plan = plan_tasks(store, arrays, options)
        known = _FingerprintCache(root)
        tasks = [
            dataclasses.replace(task, previous=known.get(_file_name(task))) for task in plan.tasks
        ]
        written: list[str] = []
        unchanged: list[str] = []
        rows = 0
        expected: set[str] = set()

        def done(task: TableTask, result: TableResult) -> None:
            nonlocal rows
            name = _file_name(task)
            if not result.exists:
                return  # a candidate array shard that is not there
            expected.add(name)
            if result.table is None:
                unchanged.append(name)
                known.keep(name, result.fingerprint)
                return
            metadata = {
                _FINGERPRINT: result.fingerprint.encode(),
                b"shardedstore.array": task.array.path.encode(),
                b"shardedstore.shard": task.shard.encode(),
            }
            _write_atomic(result.table, root / name, metadata)
            known.keep(name, result.fingerprint)
            written.append(name)
            rows += result.table.num_rows

        run_tasks(tasks, executor, progress, done)
        if missing:
            import pyarrow.parquet as pq

            layout = as_layout(store)
            for path, array in plan.arrays.items():
                partition = root / f"array={quote(path, safe='')}"
                files = sorted(
                    str(p)
                    for p in partition.glob("*.parquet")
                    if p.name != "missing.parquet" and str(p.relative_to(root)) in expected
                )
                ndim = len(array.shape)
                present: set[tuple[int, ...]] = set()
                if files:
                    present = stored_coords(
                        pq.read_table(files, columns=[f"c{i}" for i in range(ndim)] or None), ndim
                    )
                table = missing_rows(path, array, present, plan.ndim, options, layout)
                name = f"array={quote(path, safe='')}/missing.parquet"
                metadata = {_FINGERPRINT: b"missing", b"shardedstore.array": path.encode()}
                _write_atomic(table, root / name, metadata)
                expected.add(name)
                written.append(name)
                rows += table.num_rows
        removed = _remove_stale(root, plan, expected, arrays is None)
        known.save()
    return ChunkTableWrite(tuple(sorted(written)), tuple(sorted(unchanged)), tuple(removed), rows)


class _FingerprintCache:
    """The fingerprints of the files, as their Parquet metadata says, read fast.

    The files' own metadata is the truth; ``_fingerprints.json`` remembers each file's
    fingerprint with its size and mtime, so that a re-run over 10^5 unchanged shards
    reads one JSON file instead of 10^5 Parquet footers. A file whose size or mtime
    differs from the cache's entry has its footer read.
    """

    NAME = "_fingerprints.json"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[str, list[Any]] = {}
        self.kept: dict[str, list[Any]] = {}
        try:
            loaded = json.loads((root / self.NAME).read_text())
        except (OSError, ValueError):
            loaded = None
        if isinstance(loaded, dict) and loaded.get("format") == FORMAT_VERSION:
            files = loaded.get("files")
            if isinstance(files, dict):
                self.entries = files
        self.kept = dict(self.entries)  # other arrays' files, when a run names arrays

    def get(self, name: str) -> str | None:
        path = self.root / name
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        entry = self.entries.get(name)
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and entry[:2] == [info.st_size, info.st_mtime_ns]
            and isinstance(entry[2], str)
        ):
            return entry[2]
        return _fingerprint_of(path)

    def keep(self, name: str, fingerprint: str) -> None:
        info = (self.root / name).stat()
        self.kept[name] = [info.st_size, info.st_mtime_ns, fingerprint]

    def save(self) -> None:
        path = self.root / self.NAME
        partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
        partial.write_text(json.dumps({"format": FORMAT_VERSION, "files": self.kept}))
        os.replace(partial, path)


def _remove_stale(root: Path, plan: TablePlan, expected: set[str], every_array: bool) -> list[str]:
    """Remove files this function wrote for shards (or arrays) that are gone."""
    partitions = {f"array={quote(path, safe='')}" for path in plan.arrays}
    removed: list[str] = []
    for directory in sorted(root.glob("array=*")):
        if not directory.is_dir() or (directory.name not in partitions and not every_array):
            continue
        for file in sorted(directory.glob("*.parquet")):
            name = f"{directory.name}/{file.name}"
            if name in expected or _fingerprint_of(file) is None:
                continue  # this run's, or not written by write_chunk_table
            file.unlink()
            removed.append(name)
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty
    return removed
