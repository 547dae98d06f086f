"""Many small shards in one worker call: the chunk table's tasks, batched.

A layout of 10^5 time steps has 10^5 array shards of a chunk or two each. Run one by
one, each task pays for an event loop, for opening its array (reading and parsing its
``zarr.json``), for zarr's pipeline decoding one chunk, and for an Arrow table of one
row: about 2 ms, where the chunk itself costs microseconds. :func:`run_batch` runs many
tasks in one event loop and shares what they share:

- shards whose metadata document holds the same bytes share one parsed array (the same
  bytes are the same array: shape, dtype, fill value, codecs);
- their chunks are read straight from the shard's directory (the listing has already
  refused every symbolic link in it; a read takes a file only if it is still the one
  the listing saw: same size, mtime, ctime and inode) or zip (checked against the CRC-32
  the listing saw) and decoded by the array's own codec pipeline, many chunks in one call;
- their rows become one Arrow table, sliced per task.

The values are the ones :func:`shardedstore.table.tasks.run_task` computes: the same
listing and fingerprint, the same decoded chunk clipped to the array's shape, the same
statistics. A task the batch cannot serve so (a shard not in a local directory, a big
shard, an array whose pipeline is not zarr's batched one, a chunk gone since the
listing) runs as :func:`run_task` runs it, in the same loop.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.storage import LocalStore, ZipStore

from shardedstore.backends.crc import crc32
from shardedstore.table.seen import Seen
from shardedstore.table.stats import chunk_stats, read_fill_value
from shardedstore.table.tasks import (
    ChunkTask,
    Listing,
    OpenedArray,
    TableResult,
    _found,
    _identity_row,
    _list_chunks,
    _run_inline,
    _table_task,
    _zip_members,
    file_stamp,
    kept,
    list_local,
    open_task_array,
    owned,
    settled_fingerprint,
    to_table,
    zip_stamps,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["BatchFailure", "Stopped", "batchable", "filesystem_type", "lanes", "run_batch"]

SMALL_SHARD_BYTES = 1 << 20
"""A shard whose chunks store at most this many bytes is read within a batch."""

SMALL_SHARD_CHUNKS = 64
"""... and which stores at most this many chunks."""

SMALL_SHARD_DECODED = 16 << 20
"""... and whose chunks decode to at most this many bytes."""

_DECODED_BYTES = 32 << 20
"""Decoded bytes a batch holds at once, at most (then it decodes what it has)."""

_DOCUMENTS = ("zarr.json", ".zarray")


class Stopped(Exception):
    """A batch stopped before its next task, as its caller asked."""


class BatchFailure(Exception):
    """The task at ``position`` of a batch failed with ``error``."""

    def __init__(self, position: int, error: BaseException) -> None:
        super().__init__(position, error)
        self.position = position
        self.error = error


_LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "tmpfs", "ramfs", "overlay"}
)


def filesystem_type(path: str) -> str | None:
    """The type of the filesystem ``path`` is on, from ``/proc/self/mounts`` (Linux);
    None where it cannot be told."""
    try:
        with open("/proc/self/mounts") as mounts:
            table = [line.split()[1:3] for line in mounts if len(line.split()) > 2]
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for point, kind in table:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):  # the last one mounted shows
            best = (len(point), kind)
    return None if best is None else best[1]


def lanes(tasks: Sequence[ChunkTask]) -> int | None:
    """How many batches should run at once in one process: 1 when the shards are on a
    local disk (the work is Python's, and threads only take turns for it: two threads
    take about 1.4 times as long as one), None (as many as the executor has) elsewhere,
    where waiting on the filesystem is what threads overlap (NFS, Lustre, GPFS)."""
    for task in tasks:
        if batchable(task):
            kind = filesystem_type(_root(task))
            return 1 if kind in _LOCAL_FILESYSTEMS else None
    return None


def batchable(task: ChunkTask) -> bool:
    """Whether ``task`` gains from running in a batch: an array shard in a local
    directory or zip."""
    store = task.store
    return task.kind == "array shard" and (type(store) is LocalStore or isinstance(store, ZipStore))


def _root(task: ChunkTask) -> str:
    store = task.store
    return os.fspath(store.root if isinstance(store, LocalStore) else store.path)  # type: ignore[attr-defined]


def _list_now(task: ChunkTask) -> Listing | None:
    """The task's listing, in this thread (the batch owns it); FileNotFoundError where
    the task's own path must say what is missing."""
    if isinstance(task.store, LocalStore):
        return list_local(task)
    path = os.path.abspath(_root(task))
    if not os.path.isfile(path):
        if task.store.read_only:
            return None  # a shard never written reads as empty
        raise FileNotFoundError(path)
    inner = task.array.inner
    # Stamped before it is listed: a zip replaced in between shows at the next run.
    stamps = None if task.stamps_before is None else zip_stamps(path)
    keys, members = _zip_members(path, f"{inner}/" if inner else "")
    return Listing(owned(task.own_keys, keys), path, members, stamps)


def _fetch(task: ChunkTask, listed: Listing, key: str) -> bytes | None:
    """The bytes of ``key`` as the listing saw them; None: not so readable here (a
    compressed zip member, a file gone or changed since)."""
    size, stamp = listed.keys[key]
    if listed.zip_file is None:
        try:
            return _read(_root(task), key, size, stamp)
        except OSError:
            return None
    place = listed.zip_members.get(key)
    if place is None:
        return None
    offset, length = place
    try:
        with open(listed.zip_file, "rb") as file:
            file.seek(offset)
            data = file.read(length)
    except OSError:
        return None
    return data if f"{crc32(data):08x}" == stamp else None


@dataclass
class _Shared:
    """An array opened once for every shard whose metadata document has these bytes."""

    opened: OpenedArray
    pipeline: BatchedCodecPipeline
    spec: Any  # zarr's ArraySpec of one stored chunk
    fill: Any
    chunk_bytes: int


@dataclass
class _Pending:
    """A task whose chunks wait to be decoded."""

    position: int
    task: ChunkTask
    listed: Listing
    fingerprint: str
    shared: _Shared
    found: list[tuple[tuple[int, ...], str, int | None]]
    seen: Seen | None
    raw: list[Any] = field(default_factory=list)  # Buffer per found chunk


async def _shared_array(
    task: ChunkTask, listed: Listing, arrays: dict[tuple[str, bytes], _Shared | None]
) -> _Shared | None:
    """The array of ``task``'s shard, parsed once per metadata document; None: no batch."""
    from zarr.core.array_spec import ArraySpec

    inner = task.array.inner
    for name in _DOCUMENTS:
        key = f"{inner}/{name}" if inner else name
        if key in listed.keys:
            break
    else:
        return None  # no metadata document: the task's own path says what is wrong
    document = _fetch(task, listed, key)
    if document is None:
        return None
    cache_key = (task.array.path, document)
    if cache_key in arrays:
        return arrays[cache_key]
    shared = None
    opened = await open_task_array(task)
    pipeline = getattr(opened.array, "codec_pipeline", None) if opened is not None else None
    if opened is not None and type(pipeline) is BatchedCodecPipeline:
        metadata = opened.array.metadata
        spec = ArraySpec(
            shape=opened.chunks,
            dtype=metadata.dtype,
            fill_value=metadata.fill_value,
            config=opened.array.config,
            prototype=default_buffer_prototype(),
        )
        itemsize = np.dtype(opened.array.dtype).itemsize if _numeric(opened.array) else 64
        shared = _Shared(
            opened,
            pipeline,
            spec,
            read_fill_value(metadata),
            math.prod(opened.chunks) * itemsize,
        )
    arrays[cache_key] = shared
    return shared


def _numeric(array: Any) -> bool:
    try:
        return np.dtype(array.dtype).kind in "biufcmMSV"
    except TypeError:
        return False


def _read(root: str, key: str, size: int | None, stamp: str) -> bytes | None:
    """The bytes of ``root/key`` if it is still the file the listing saw (the same size,
    mtime, ctime and inode: not a file reached through a folder swapped for a symbolic link
    since, nor rewritten); never through a symbolic link at the last step."""
    descriptor = os.open(os.path.join(root, key), os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as file:
        info = os.fstat(descriptor)
        if info.st_size != size or file_stamp(info) != stamp:
            return None
        return file.read()


def _small(found: list[tuple[tuple[int, ...], str, int | None]], chunk_bytes: int) -> bool:
    """Whether a shard is small enough for a batch: stored and decoded bytes."""
    sizes = [size for _, _, size in found]
    return (
        len(found) <= SMALL_SHARD_CHUNKS
        and None not in sizes
        and sum(s for s in sizes if s is not None) <= SMALL_SHARD_BYTES
        and chunk_bytes * len(found) <= SMALL_SHARD_DECODED
    )


async def _decode(pending: list[_Pending]) -> list[list[dict[str, Any]]] | None:
    """The statistics of every pending chunk, per task; None where one is not readable."""
    prototype = default_buffer_prototype()
    by_array: dict[int, list[tuple[int, int]]] = {}
    for n, item in enumerate(pending):
        for _, shard_key, _ in item.found:
            value = _fetch(item.task, item.listed, shard_key)
            if value is None:
                return None  # changed since the listing: read the usual way
            item.raw.append(prototype.buffer.from_bytes(value))
        by_array.setdefault(id(item.shared), []).extend((n, k) for k in range(len(item.found)))
    stats: list[list[dict[str, Any]]] = [[{}] * len(item.found) for item in pending]
    for members in by_array.values():
        shared = pending[members[0][0]].shared
        pipeline = dataclasses.replace(shared.pipeline, batch_size=max(1, len(members)))
        decoded = list(
            await pipeline.decode([(pending[n].raw[k], shared.spec) for n, k in members])
        )
        for (n, k), values in zip(members, decoded, strict=True):
            if values is None:
                return None
            item = pending[n]
            coords = item.found[k][0]
            shape = shared.opened.shape
            clip = tuple(
                slice(0, min(c, s - i * c))
                for i, c, s in zip(coords, shared.opened.chunks, shape, strict=True)
            )
            data = values.as_numpy_array()[clip]
            stats[n][k] = chunk_stats(data, shared.fill, item.task.options)
    return stats


def _rows(item: _Pending, stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for n, (coords, shard_key, size) in enumerate(item.found):
        row = _identity_row(item.task, coords, shard_key, item.shared.opened)
        row["exists"] = True
        row["nbytes"] = size
        if item.listed.zip_file is not None:
            row["zip_file"] = item.listed.zip_file
            member = item.listed.zip_members.get(shard_key)
            if member is not None:
                row["zip_offset"], row["zip_length"] = member
        if stats:
            row.update(stats[n])
        rows.append(row)
    return rows


async def _batch(
    tasks: Sequence[ChunkTask],
    gate: threading.Semaphore | None = None,
    stop: threading.Event | None = None,
) -> list[TableResult]:
    results: list[TableResult | None] = [None] * len(tasks)
    tables: dict[int, pa.Table] = {}
    arrays: dict[tuple[str, bytes], _Shared | None] = {}
    pending: list[_Pending] = []
    held = 0

    async def flush() -> None:
        nonlocal held
        if not pending:
            return
        reads = any(item.task.options.reads_values for item in pending)
        try:
            stats = await _decode(pending) if reads else [[] for _ in pending]
        except Exception:
            stats = None  # a chunk that does not decode: its own task says which
        if stats is None:  # or one changed under us: every task of the flush, as usual
            for item in pending:
                results[item.position] = await _run_one(item.position, item.task, gate)
        else:
            rows = [_rows(item, found) for item, found in zip(pending, stats, strict=True)]
            every = to_table(
                [row for part in rows for row in part],
                pending[0].task.ndim_columns,
                pending[0].task.options,
            )
            offset = 0
            for item, part in zip(pending, rows, strict=True):
                tables[item.position] = every.slice(offset, len(part))
                results[item.position] = TableResult(item.fingerprint, None, seen=item.seen)
                offset += len(part)
        pending.clear()
        held = 0

    for position, task in enumerate(tasks):
        if stop is not None and stop.is_set():
            raise BatchFailure(position, Stopped("the run was stopped"))
        try:
            item = await _plan(position, task, arrays)
            if item is None:
                results[position] = await _run_one(position, task, gate)
                continue
            if isinstance(item, TableResult):
                results[position] = item
                continue
            if pending and (
                item.task.options != pending[0].task.options
                or item.task.ndim_columns != pending[0].task.ndim_columns
            ):
                await flush()
            size = item.shared.chunk_bytes * len(item.found)
            if held + size > _DECODED_BYTES:
                await flush()
            pending.append(item)
            held += size
        except BatchFailure:
            raise
        except Exception as error:
            raise BatchFailure(position, error) from error
    try:
        await flush()
    except BatchFailure:
        raise
    except Exception as error:
        raise BatchFailure(pending[0].position if pending else 0, error) from error
    done: list[TableResult] = []
    for position, result in enumerate(results):
        assert result is not None
        if position in tables:
            result = dataclasses.replace(result, table=tables[position])
        done.append(result)
    return done


async def _run_one(
    position: int, task: ChunkTask, gate: threading.Semaphore | None = None
) -> TableResult:
    """The task alone, as :func:`run_task` runs it; the gate is let go meanwhile (a big
    shard reads by itself, alongside other threads' batches)."""
    if gate is not None:
        gate.release()
    try:
        return await _table_task(task)
    except Exception as error:
        raise BatchFailure(position, error) from error
    finally:
        if gate is not None:
            gate.acquire()


async def _plan(
    position: int, task: ChunkTask, arrays: dict[tuple[str, bytes], _Shared | None]
) -> _Pending | TableResult | None:
    """What the batch does with ``task``: done already (unchanged, no shard), its chunks
    to decode with the others, or None (run it alone)."""
    try:
        listed = _list_now(task)  # no thread hop: the batch owns this thread
    except FileNotFoundError:
        listed = await _list_chunks(task)  # a writable store, as the task's own path does
    if listed is None:
        return TableResult("", None, exists=False)
    fingerprint, seen = settled_fingerprint(task, listed)
    if kept(task, fingerprint):
        return TableResult(fingerprint, None, seen=seen)
    shared = await _shared_array(task, listed, arrays)
    if shared is None:
        return None
    found = _found(task, listed, shared.opened)
    if not _small(found, shared.chunk_bytes):
        return None
    if listed.zip_file is not None and any(k not in listed.zip_members for _, k, _ in found):
        return None  # compressed members: zipfile reads them
    return _Pending(position, task, listed, fingerprint, shared, found, seen)


def run_batch(
    tasks: Sequence[ChunkTask],
    gate: threading.Semaphore | None = None,
    stop: threading.Event | None = None,
) -> list[TableResult]:
    """:func:`shardedstore.table.tasks.run_task` of every task, in one event loop.

    Parameters
    ----------
    tasks
        Array shards in local directories or zips (see :func:`batchable`).
    gate
        Held while the batch runs (one batch at a time on a local disk), let go while a
        task too big for the batch runs alone.
    stop
        Set by the caller to stop the batch before its next task (a failure elsewhere,
        Ctrl-C).

    Raises
    ------
    BatchFailure
        Naming the position of the task that failed (or where the batch stopped), with
        its error.
    """
    if gate is not None:
        gate.acquire()
    try:
        return _run_inline(lambda: _batch(tasks, gate, stop))
    finally:
        if gate is not None:
            gate.release()
        for task in tasks:
            if task.kind == "array shard":
                task.store.close()  # a handle of its own: 10^5 shards must not stay open
