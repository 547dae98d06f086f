"""Write a chunk table as a Parquet dataset, incrementally: ``write_chunk_table``.

Files are hive-partitioned by array (``{out}/array=<url-quoted path>/...``): one file
for the array's chunks in base (``base.parquet``) or in its mount (``mount.parquet``),
and one file per group of up to ``shards_per_file`` array shards
(``shards-0-255.parquet``: chunk indices 0 to 255 along the last sharded dimension;
``shards-3.0-255.parquet`` for indices ``3.0`` to ``3.255``), so that thousands of small
shards write a bounded number of files. Every file holds the array path as a string
column (``array_path``: readers type the hive ``array`` column by guessing, and an
array named ``0`` would come back as a number) and, in its key-value metadata, the
fingerprint of each shard it holds (see :mod:`shardedstore.table.tasks`) and the
statistics asked for. A re-run hands each task its shard's fingerprint; a task whose
shard did not change sends back nothing, and its rows are kept (a file whose shards are
all unchanged is not written at all). A shard on local disk whose stamps, recorded by
the earlier run, still hold gets no task at all (:mod:`shardedstore.table.seen`).
Tasks are made as the workers take them, file after file, so that 10^6 shards are
never all held. Files are written under a temporary name and renamed; the output holds
a marker file, and only directories holding it (or new, empty ones) are written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from zarr.abc.store import Store

from shardedstore.backends.oserrors import written_as
from shardedstore.errors import ArgumentError, ChunkTableOutputError
from shardedstore.shards.listing import index_key
from shardedstore.shards.outputlock import local_output_lock
from shardedstore.store.ownkeys import OwnKeys
from shardedstore.table import seen as seen_module
from shardedstore.table.chunks import (
    TablePlan,
    as_layout,
    missing_rows,
    plan_tasks,
    require_pyarrow,
    run_tasks,
    stored_coords,
)
from shardedstore.table.seen import Folders, Seen
from shardedstore.table.stats import Histogram, StatsOptions, parse_stats
from shardedstore.table.tasks import (
    FORMAT_VERSION,
    ArraySpec,
    ChunkTask,
    TableResult,
    seen_context_of,
    seen_head,
    unchanged,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from shardedstore.shards.listing import Shard

__all__ = [
    "ARRAY_PATH",
    "FINGERPRINTS",
    "MARKER",
    "OPTIONS",
    "SHARDS_PER_FILE",
    "ChunkTableOutputError",
    "ChunkTableWrite",
    "file_name",
    "file_options",
    "shard_key",
    "write_chunk_table",
]

MARKER = "_shardedstore_chunk_table.json"
"""The file that marks a directory as a chunk table ``write_chunk_table`` may update."""

SHARDS_PER_FILE = 256
"""Array shards whose rows share one file, by default."""

ARRAY_PATH = "array_path"
"""The in-file column holding the array path as a string (the hive column is ``array``)."""

FINGERPRINTS = b"shardedstore.fingerprints"
"""Metadata key: JSON object, shard key (its chunk index, ``""`` for base or a mount) to
the fingerprint of what its rows were computed from."""

OPTIONS = b"shardedstore.options"
"""Metadata key: JSON object, the statistics (``stats``, ``histogram``) and the number of
index columns (``columns``) the file's fingerprints were computed with."""

_OLD_FINGERPRINT = b"shardedstore.fingerprint"  # format 1: one shard per file


@dataclass(frozen=True)
class ChunkTableWrite:
    """What :func:`write_chunk_table` did.

    Attributes
    ----------
    written
        Files written (recomputed or new), relative to the output directory.
    unchanged
        Files kept as they were (the fingerprints of their shards did not change).
    removed
        Files removed: their shards or array are gone (or grouped otherwise now).
    rows
        Rows in the files written.
    """

    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]
    rows: int


def shard_key(task: ChunkTask) -> str:
    """The task's shard within its file: its chunk index, or ``""`` (base or a mount)."""
    return task.shard_index or ""


@functools.lru_cache(maxsize=1024)
def _partition(path: str) -> str:
    return f"array={quote(path, safe='')}"


def file_name(task: ChunkTask, shards_per_file: int = SHARDS_PER_FILE) -> str:
    """The file holding ``task``'s rows, relative to the output directory."""
    return _file_of(task.kind, task.array.path, task.shard_index, shards_per_file)


def _file_of(kind: str, path: str, index: str | None, shards_per_file: int) -> str:
    partition = _partition(path)
    if kind == "array shard":
        *lead, last = index_key(index or "0")
        low = last // shards_per_file * shards_per_file
        prefix = "".join(f"{i}." for i in lead)
        return f"{partition}/shards-{prefix}{low}-{low + shards_per_file - 1}.parquet"
    return f"{partition}/{'mount' if kind == 'mount' else 'base'}.parquet"


def file_options(options: StatsOptions, ndim: int) -> bytes:
    """The ``OPTIONS`` metadata of a file written with ``options``."""
    histogram = None if options.histogram is None else list(options.histogram)
    return json.dumps(
        {"stats": list(options.stats), "histogram": histogram, "columns": ndim}
    ).encode()


def _file_metadata(path: Path) -> dict[bytes, bytes] | None:
    """A Parquet file's key-value metadata; None when it cannot be read."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.read_schema(path).metadata or {})
    except (OSError, ValueError):
        return None


def _fingerprints_of(path: Path) -> dict[str, str] | None:
    """The fingerprints a file records, by shard key; None: none (or not readable)."""
    value = (_file_metadata(path) or {}).get(FINGERPRINTS)
    if value is None:
        return None
    try:
        found = json.loads(value)
    except ValueError:
        return None
    if not isinstance(found, dict) or not all(isinstance(v, str) for v in found.values()):
        return None
    return {str(key): value for key, value in found.items()}


def _written_by_us(path: Path) -> bool:
    metadata = _file_metadata(path) or {}
    return FINGERPRINTS in metadata or _OLD_FINGERPRINT in metadata


def _check_output(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ChunkTableOutputError(f"{out} exists and is not a directory: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ChunkTableOutputError(
            f"{out} is not empty and holds no chunk table ({MARKER} is missing); "
            "shardedstore writes chunk tables only into a new or empty directory, or one "
            "it wrote before: choose another --out"
        )


def _file_table(table: pa.Table) -> pa.Table:
    """A chunk table as its files hold it: ``array`` (the hive partition, which a column
    of the same name would clash with in pyarrow and pandas) as ``array_path``."""
    import pyarrow as pa

    if "array" not in table.column_names:
        return table
    column = table.column("array")
    table = table.drop_columns(["array"])
    return table.add_column(0, pa.field(ARRAY_PATH, pa.string(), nullable=False), column)


def _write_atomic(table: pa.Table, path: Path, metadata: Mapping[bytes, bytes]) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
    merged = {**(table.schema.metadata or {}), **metadata}

    def discard() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)

    with written_as(str(partial), str(path), discard):
        pq.write_table(table.replace_schema_metadata(merged), partial)
        os.replace(partial, path)


def write_chunk_table(
    store: Store,
    out: str | os.PathLike[str],
    arrays: Iterable[str] | str | None = None,
    *,
    stats: Iterable[str] | str | None = (),
    histogram: Histogram | None = None,
    missing: bool = False,
    shards_per_file: int = SHARDS_PER_FILE,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> ChunkTableWrite:
    """Write the chunk table as a Parquet dataset, hive-partitioned by array; incremental.

    Files are ``{out}/array={quoted array path}/base.parquet`` (or ``mount.parquet``)
    for the chunks in base or a mount, ``shards-{first}-{last}.parquet`` for each group
    of ``shards_per_file`` array shards, and ``missing.parquet`` with ``missing``.
    DuckDB, pyarrow, pandas and Spark read the directory as one table::

        SELECT "array", c0, max FROM read_parquet('out/**/*.parquet', hive_partitioning = true)

    Every file has the same columns (one schema per layout, see
    :func:`chunk_table_schema`), the array path in the string column ``array_path``
    among them (readers guess the type of the hive column ``array``: an array named
    ``0`` comes back as a number unless the partition is read as a string).

    Each file records the fingerprint of each shard it holds; a re-run recomputes only
    the shards whose chunks (sizes and modification stamps), metadata or asked-for
    statistics changed, and rewrites only the files holding them (the rows of their
    other shards are kept), so appending time steps costs only the new shards. A shard
    on local disk is not even listed again while the stamps of its folders and files
    (recorded by the last run, unless they were under 3 s old when it started) hold.
    Files of shards that are gone are removed. Each file is written under a temporary name
    and renamed; one run at a time holds the lock ``{out}/_chunk_table.lock``.

    Parameters
    ----------
    store, arrays, stats, histogram, missing, executor, progress
        As for :func:`chunk_table`.
    out
        A local directory: new, empty, or written by this function before.
    shards_per_file
        Array shards (consecutive chunk indices along the last sharded dimension)
        whose rows share a file.

    Returns
    -------
    ChunkTableWrite

    Raises
    ------
    ChunkTableOutputError
        If ``out`` is a URL, a file, or a directory holding something else.
    ArgumentError
        If ``shards_per_file`` is not a positive integer.
    ChunkTableError
        Naming the shard that failed; files finished before are kept, and a re-run
        finishes the job.
    """
    require_pyarrow()

    options = parse_stats(stats, histogram)
    if isinstance(shards_per_file, bool) or not isinstance(shards_per_file, int):
        raise ArgumentError(f"shards_per_file must be an integer, got {shards_per_file!r}")
    if shards_per_file < 1:
        raise ArgumentError(f"shards_per_file must be at least 1, got {shards_per_file}")
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
        before = time.time_ns() - seen_module.RACY_NS  # before anything is listed
        writer = _GroupWriter(root, options, shards_per_file, before)
        try:
            plan = plan_tasks(store, arrays, options, writer.skip)
            writer.start(plan)
            run_tasks(writer.tasks(), plan.count, executor, progress, writer.done)
        finally:
            writer.folders.close()
        if missing:
            writer.write_missing(store)
        removed = _remove_stale(root, plan, writer.expected, arrays is None)
        writer.known.save()
    return ChunkTableWrite(
        tuple(sorted(writer.written)), tuple(sorted(writer.unchanged)), tuple(removed), writer.rows
    )


class _GroupWriter:
    """Hands each task its shard's fingerprint from the earlier run, gathers the results
    of a file's tasks and writes the file once all are in.

    A shard on local disk whose stamps, as the earlier run recorded them, still hold
    gets no task at all (:meth:`skip`, asked by the plan): its rows are kept. A file's
    shards come one after the other (by chunk index): a file is complete once the plan
    has moved on to another one and all its tasks are done.
    """

    def __init__(
        self, root: Path, options: StatsOptions, shards_per_file: int, before: int
    ) -> None:
        self.root = root
        self.options = options
        self.shards_per_file = shards_per_file
        self.before = before
        self.known = _FingerprintCache(root)
        self.plan: TablePlan | None = None
        self.metadata_options = b""
        self.current: str | None = None
        self.recorded = _Recorded({}, {})
        self.waiting: dict[str, int] = {}
        self.array_of: dict[str, str] = {}
        self.closed: set[str] = set()
        self.results: dict[str, dict[str, TableResult]] = {}
        self.written: list[str] = []
        self.unchanged: list[str] = []
        self.expected: set[str] = set()
        self.rows = 0
        self.heads: dict[tuple[str, OwnKeys | None], str] = {}
        self.folders = Folders()

    def start(self, plan: TablePlan) -> None:
        self.plan = plan
        self.metadata_options = file_options(self.options, plan.ndim)

    def _enter(self, name: str, array: str) -> None:
        """The plan reached a shard of file ``name``."""
        if name == self.current:
            return
        if self.current is not None:
            self._close(self.current)
        if name in self.closed:
            raise RuntimeError(f"chunk table: the tasks of {name} are not in order")
        self.current = name
        self.recorded = self.known.get(name) or _Recorded({}, {})
        self.waiting[name] = 0
        self.array_of[name] = array

    def skip(self, shard: Shard, array: ArraySpec) -> bool:
        """Whether ``shard`` is unchanged by its stamps alone (then its rows are kept)."""
        name = _file_of("array shard", array.path, shard.chunk_index, self.shards_per_file)
        self._enter(name, array.path)
        key = shard.chunk_index or ""
        found = self.recorded.seen.get(key)
        previous = self.recorded.fingerprints.get(key)
        if found is None or previous is None or self.plan is None:
            return False
        seen = Seen(*found)
        head = self.heads.get((array.path, shard.own_keys))
        if head is None:  # one per array (its shards share their OwnKeys)
            head = seen_head(array.path, "", self.options, self.plan.ndim, shard.own_keys)
            self.heads[(array.path, shard.own_keys)] = head
        context = seen_context_of(head, array.lead, previous)
        if not unchanged(shard.local_root, seen, context, self.folders):
            return False
        self.waiting[name] += 1
        self._done(name, key, TableResult(previous, None, seen=seen))
        return True

    def tasks(self) -> Iterator[ChunkTask]:
        """The plan's tasks, each with its shard's fingerprint from the earlier run."""
        assert self.plan is not None
        for task in self.plan.tasks:
            name = file_name(task, self.shards_per_file)
            self._enter(name, task.array.path)
            self.waiting[name] += 1
            previous = self.recorded.fingerprints.get(shard_key(task))
            yield dataclasses.replace(task, previous=previous, stamps_before=self.before)
        if self.current is not None:
            self._close(self.current)

    def _close(self, name: str) -> None:
        self.closed.add(name)
        if not self.waiting[name]:
            self._finish(name)

    def done(self, task: ChunkTask, result: TableResult) -> None:
        self._done(file_name(task, self.shards_per_file), shard_key(task), result)

    def _done(self, name: str, key: str, result: TableResult) -> None:
        self.results.setdefault(name, {})[key] = result
        self.waiting[name] -= 1
        if not self.waiting[name] and name in self.closed:
            self._finish(name)

    def _finish(self, name: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        del self.waiting[name]
        array = self.array_of.pop(name)
        present = {key: r for key, r in self.results.pop(name, {}).items() if r.exists}
        if not present:
            return  # candidate array shards that are not there: no file
        self.expected.add(name)
        earlier = self.known.get(name) or _Recorded({}, {})
        kept = {key for key, r in present.items() if r.table is None}
        fingerprints = {key: r.fingerprint for key, r in sorted(present.items())}
        seen = {key: r.seen for key, r in present.items() if r.seen is not None}
        if kept == set(present) and set(earlier.fingerprints) == set(present):
            self.unchanged.append(name)
            self.known.keep(name, fingerprints, seen)
            return
        new = [r.table for r in present.values() if r.table is not None]
        tables = [_file_table(pa.concat_tables(new))] if new else []  # once, not per shard
        if kept:  # the rows of unchanged shards, from the file as it is
            old = pq.read_table(self.root / name)
            index = old.column("shard_index").fill_null("")
            tables.append(old.filter(pa.compute.is_in(index, pa.array(sorted(kept)))))
        table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables])
        assert self.plan is not None
        keys = [(f"c{i}", "ascending") for i in range(self.plan.ndim)]
        if keys:
            table = table.sort_by(keys)
        metadata = {
            FINGERPRINTS: json.dumps(fingerprints, sort_keys=True).encode(),
            OPTIONS: self.metadata_options,
            b"shardedstore.array": array.encode(),
        }
        _write_atomic(table, self.root / name, metadata)
        self.known.keep(name, fingerprints, seen)
        self.written.append(name)
        self.rows += table.num_rows

    def write_missing(self, store: Store) -> None:
        import pyarrow.parquet as pq

        layout = as_layout(store)
        plan = self.plan
        assert plan is not None
        for path, array in plan.arrays.items():
            partition = self.root / f"array={quote(path, safe='')}"
            files = sorted(
                str(p)
                for p in partition.glob("*.parquet")
                if p.name != "missing.parquet" and str(p.relative_to(self.root)) in self.expected
            )
            ndim = len(array.shape)
            present: set[tuple[int, ...]] = set()
            if files:
                present = stored_coords(
                    pq.read_table(files, columns=[f"c{i}" for i in range(ndim)] or None), ndim
                )
            table = missing_rows(path, array, present, plan.ndim, self.options, layout)
            name = f"array={quote(path, safe='')}/missing.parquet"
            metadata = {
                FINGERPRINTS: json.dumps({"missing": "missing"}).encode(),
                OPTIONS: self.metadata_options,
                b"shardedstore.array": path.encode(),
            }
            _write_atomic(_file_table(table), self.root / name, metadata)
            self.expected.add(name)
            self.written.append(name)
            self.rows += table.num_rows


@dataclass(frozen=True)
class _Recorded:
    """What the earlier run recorded of a file's shards, by shard key: fingerprints, and
    the stamps behind them (paths, digest; see :mod:`shardedstore.table.seen`)."""

    fingerprints: dict[str, str]
    seen: dict[str, tuple[tuple[str, ...], str]]


class _FingerprintCache:
    """The fingerprints of the files, as their Parquet metadata says, read fast.

    The files' own metadata is the truth; ``_fingerprints.json`` remembers each file's
    fingerprints with its size and mtime, so that a re-run over 10^5 unchanged shards
    reads one JSON file instead of 10^5 Parquet footers. A file whose size or mtime
    differs from the cache's entry has its footer read. The cache alone holds the stamps
    behind each fingerprint: without them (a file whose entry is stale), shards are
    listed again.
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

    def get(self, name: str) -> _Recorded | None:
        path = self.root / name
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        entry = self.entries.get(name)
        if (
            isinstance(entry, list)
            and len(entry) == 4
            and entry[:2] == [info.st_size, info.st_mtime_ns]
            and isinstance(entry[2], dict)
        ):
            fingerprints = {str(key): str(value) for key, value in entry[2].items()}
            return _Recorded(fingerprints, _seen_of(entry[3]))
        found = _fingerprints_of(path)
        return None if found is None else _Recorded(found, {})

    def keep(self, name: str, fingerprints: dict[str, str], seen: dict[str, Seen]) -> None:
        info = (self.root / name).stat()
        paths: dict[tuple[str, ...], int] = {}
        shards = {
            key: [paths.setdefault(record.paths, len(paths)), record.digest]
            for key, record in sorted(seen.items())
        }
        stamps = {"paths": [list(p) for p in paths], "shards": shards}
        self.kept[name] = [info.st_size, info.st_mtime_ns, fingerprints, stamps]
        self.entries.pop(name, None)  # read for the last time: not held twice

    def save(self) -> None:
        path = self.root / self.NAME
        partial = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:12]}")
        partial.write_text(json.dumps({"format": FORMAT_VERSION, "files": self.kept}))
        os.replace(partial, path)


def _seen_of(entry: Any) -> dict[str, tuple[tuple[str, ...], str]]:
    """The stamps a cache entry records, by shard key (nothing from a damaged entry)."""
    try:
        paths = [tuple(str(p) for p in group) for group in entry["paths"]]
        return {
            str(key): (paths[index], str(digest))
            for key, (index, digest) in entry["shards"].items()
        }
    except (KeyError, TypeError, ValueError, IndexError):
        return {}


def _remove_stale(root: Path, plan: TablePlan, expected: set[str], every_array: bool) -> list[str]:
    """Remove files this function wrote for shards (or arrays) that are gone."""
    partitions = {f"array={quote(path, safe='')}" for path in plan.arrays}
    removed: list[str] = []
    for directory in sorted(root.glob("array=*")):
        if not directory.is_dir() or (directory.name not in partitions and not every_array):
            continue
        for file in sorted(directory.glob("*.parquet")):
            name = f"{directory.name}/{file.name}"
            if name in expected or not _written_by_us(file):
                continue  # this run's, or not written by write_chunk_table
            file.unlink()
            removed.append(name)
        with contextlib.suppress(OSError):
            directory.rmdir()  # only if empty
    return removed
