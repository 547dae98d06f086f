"""One task of the planner: one shard and one array, listed, fingerprinted, read.

:class:`ChunkTask` is the unit every engine runs (threads, processes, dask, Spark
executors): the chunk table, ``map_chunks`` and the values of ``values`` all work task
by task.

A task lists the chunk keys of its (sub-)array in its shard with their sizes and
modification stamps (mtime, ctime and inode on local disk, crc32 in a zip, ETag or mtime on
object stores; elsewhere, and where a listing has neither, crc32 of the metadata
documents, and of every chunk when statistics are asked for: a rewrite of the same size
must not go unnoticed) and fingerprints them with the statistics asked for. Given the
fingerprint of an earlier run, an unchanged shard is not read at all: this is what makes
``write_chunk_table`` incremental. Otherwise it reads the chunks, at most ``_IN_FLIGHT``
at a time, through a read-only view of the shard's own keys (no symlinks followed, see
:mod:`shardedstore.shards.source`), and sends back its rows as a small Arrow table. Tasks
are picklable: they run in threads, processes or on a dask cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import math
import os
import stat
import struct
import zipfile
from collections.abc import Callable, Coroutine, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, ObjectStore, ZipStore

from shardedstore.backends.cache import CachedStore, object_validator
from shardedstore.backends.crc import crc32
from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.handles import gather_bounded, opened
from shardedstore.backends.zipstore import open_zip_identity
from shardedstore.errors import ArgumentError, LayoutError, describe_shard
from shardedstore.shards.source import ShardSource
from shardedstore.store.ownkeys import OwnKeys
from shardedstore.store.routing import parse_chunk_key
from shardedstore.table.seen import Folders, Seen, Stamps, is_racy, record, still_seen
from shardedstore.table.stats import StatsOptions, chunk_stats, read_fill_value, table_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from shardedstore.shards.listing import ShardKind

__all__ = [
    "FORMAT_VERSION",
    "IDENTITY_COLUMNS",
    "ArraySpec",
    "ChunkTask",
    "KeyFormat",
    "Stamp",
    "StoredChunk",
    "TableResult",
    "Listing",
    "file_stamp",
    "fingerprint_of",
    "kept",
    "key_format",
    "list_for_fingerprint",
    "list_local",
    "local_root",
    "stamp_of",
    "walk_local",
    "listed_coords",
    "open_task_array",
    "read_chunks",
    "region",
    "run_on_task_loop",
    "run_task",
    "seen_context",
    "seen_context_of",
    "seen_head",
    "settled_fingerprint",
    "storage_chunks",
    "to_table",
    "unchanged",
]

T = TypeVar("T")

FORMAT_VERSION = 2
"""Version of the table's columns and fingerprints; a change recomputes every file."""

_IN_FLIGHT = 8
"""Chunks one task reads and decodes at once, by one request (its memory bound)."""

_INLINE_ELEMENTS = 1 << 16
"""Chunks up to this many elements get their statistics on the event loop."""


# ------------------------------------------------------------------ chunk keys


@dataclass(frozen=True)
class KeyFormat:
    """How an array spells chunk keys: ``c/1/2`` (prefix ``c``) or ``1.2`` (no prefix)."""

    prefix: str
    separator: str

    def encode(self, coords: tuple[int, ...]) -> str:
        joined = self.separator.join(map(str, coords))
        if self.prefix:
            return f"{self.prefix}{self.separator}{joined}" if coords else self.prefix
        return joined if coords else "0"

    def parse(self, key: str, ndim: int) -> tuple[int, ...] | None:
        return _parse(self, key, ndim)


@functools.lru_cache(maxsize=1 << 20)
def _parse(key_format: KeyFormat, key: str, ndim: int) -> tuple[int, ...] | None:
    """Chunk indices a key names (cached: scans list the same keys query after query)."""
    return parse_chunk_key(key, key_format.prefix, key_format.separator, ndim)


_OWNED: dict[OwnKeys, dict[str, bool]] = {}
"""Which keys each shard's readers reach, remembered (shards are listed at every query
that filters on values)."""


def owned(own: OwnKeys | None, keys: dict[str, T]) -> dict[str, T]:
    """The items of ``keys`` whose key a reader of the layout reaches (all for None)."""
    if own is None:
        return keys
    memo = _OWNED.get(own)
    if memo is None:
        if len(_OWNED) > 4096:
            _OWNED.clear()
        memo = _OWNED[own] = {}
    found = {}
    for key, value in keys.items():
        reached = memo.get(key)
        if reached is None:
            reached = memo[key] = own.owns(key)
        if reached:
            found[key] = value
    return found


def key_format(metadata: Any) -> KeyFormat:
    encoding = getattr(metadata, "chunk_key_encoding", None)
    if encoding is not None:  # zarr v3
        separator = str(getattr(encoding, "separator", "/"))
        return KeyFormat("" if getattr(encoding, "name", "default") == "v2" else "c", separator)
    return KeyFormat("", str(getattr(metadata, "dimension_separator", ".") or "."))


def storage_chunks(array: Any) -> tuple[int, ...]:
    """The chunk shape of the stored objects: the shard shape with the sharding codec."""
    shards = getattr(array, "shards", None)
    return tuple(int(n) for n in (shards if shards is not None else array.chunks))


# ---------------------------------------------------------------------- tasks


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """One array as the tasks see it.

    ``lead`` holds the chunk indices an array shard fixes (empty elsewhere); the
    task's (sub-)array, at ``inner`` in the shard's store, has the remaining dims.
    """

    path: str
    inner: str
    lead: tuple[int, ...]
    chunks: tuple[int, ...]
    key_format: KeyFormat

    def full_key(self, coords: tuple[int, ...]) -> str:
        key = self.key_format.encode(coords)
        return f"{self.path}/{key}" if self.path else key


IDENTITY_COLUMNS = ("array", "shard_kind", "shard_path", "shard_index")
"""The chunk table's first columns, before ``c0..``, ``start0..``, ``stop0..`` and ``key``."""


@dataclass(frozen=True)
class StoredChunk:
    """One chunk a shard stores, as its listing gives it: nothing is read.

    Attributes
    ----------
    coords
        The chunk's indices in the array's chunk grid (every dimension, the sharded
        ones included).
    starts, stops
        The region of the array the chunk covers (an edge chunk stops at the shape).
    key
        The chunk's key in the hierarchy (``t/c/3/0/1``).
    shard_key
        Its key in the shard's own store (``c/0/1`` in an array shard).
    nbytes
        Its stored size in bytes (None where the store cannot tell).
    """

    coords: tuple[int, ...]
    starts: tuple[int, ...]
    stops: tuple[int, ...]
    key: str
    shard_key: str
    nbytes: int | None

    @property
    def region(self) -> tuple[slice, ...]:
        """The chunk's region as slices, to index the whole array with."""
        return tuple(slice(a, b) for a, b in zip(self.starts, self.stops, strict=True))


@dataclass(frozen=True, slots=True)
class ChunkTask:
    """One shard and one array whose chunks it holds: the planner's unit of work.

    Tasks are picklable (their store is a handle of its own), so that any engine runs
    them where it likes: a thread or process pool, a dask cluster, Spark executors.
    :func:`shardedstore.chunk_tasks` makes them.

    Attributes
    ----------
    kind
        The shard's kind: ``"base"``, ``"mount"`` or ``"array shard"``.
    shard_path
        The node path of the mount or array-sharded array (``""`` for the base).
    shard_index
        The array shard's chunk index along the sharded dimensions (``"3"``); None for
        the base and mounts.
    store
        A read-only store of the shard.
    own_keys
        Which keys of the shard a reader of the layout reaches.
    array
        The array (its path, where it is in the shard, its chunk grid).
    options
        The statistics the chunk table asks for.
    ndim_columns
        How many ``c``/``start``/``stop`` columns the table has (the deepest array of
        the hierarchy).
    previous
        The fingerprint of an earlier run: an unchanged shard is not read again.
    stamps_before
        Nanoseconds since the epoch: the stamps of the shard's folders and files older
        than this are recorded for the next run (:mod:`shardedstore.table.seen`); None:
        none.

    Examples
    --------
    >>> for task in chunk_tasks(store, "t"):  # doctest: +SKIP
    ...     print(task.shard, [c.coords for c in task.stored_chunks()])
    array shard 't' chunk 0 [(0, 0, 0), (0, 0, 1)]
    """

    kind: ShardKind
    shard_path: str
    shard_index: str | None
    store: Store
    own_keys: OwnKeys | None
    array: ArraySpec
    options: StatsOptions
    ndim_columns: int
    previous: str | None = None
    stamps_before: int | None = None

    @property
    def shard(self) -> str:
        """The shard as messages name it (``array shard 't' chunk 3``)."""
        return describe_shard(self.shard_path, self.shard_index)

    def stored_chunks(self) -> list[StoredChunk]:
        """The chunks the shard stores for the array, from its listing alone.

        Nothing is read but the listing and the array's metadata: no chunk is fetched
        or decoded. Chunks outside the array's shape (left by a resize) and keys that
        are not chunks are left out; a shard that does not exist has none.
        """
        return run_on_task_loop(self, lambda: _stored_chunks(self))

    def table(self) -> pa.Table:
        """The task's rows of the chunk table (its statistics computed, if asked for)."""
        fresh = replace(self, previous=None, stamps_before=None)
        result = run_on_task_loop(self, lambda: _table_task(fresh))
        if result.table is None:  # no such shard
            return to_table([], self.ndim_columns, self.options)
        return result.table

    def map(self, func: Callable[[np.ndarray[Any, Any]], Any]) -> pa.Table:
        """``func(values)`` for every chunk the shard stores, as rows.

        Parameters
        ----------
        func
            Called with each chunk's decoded values (its region of the array, as zarr
            returns them); returns a mapping of column name to value (a number, a
            string, a list ...), or one value for a column named ``value``.

        Returns
        -------
        pyarrow.Table
            The identity columns of the chunk table (``array``, ``shard_kind``,
            ``shard_path``, ``shard_index``, ``c0..``, ``start0..``, ``stop0..``,
            ``key``) and ``func``'s columns, one row per stored chunk.
        """
        return run_on_task_loop(self, lambda: _map_task(self, func))


@dataclass
class TableResult:
    """A task's outcome: the shard's table, or None when unchanged or not there;
    ``seen``: the stamps behind ``fingerprint``, for the next run (None: none).

    Pickled (back from a process or a dask worker) with its table in Arrow's IPC format:
    a batch's tables are slices of one table, which pickle would send whole.
    """

    fingerprint: str
    table: pa.Table | None
    exists: bool = True
    seen: Seen | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.table is not None:
            import pyarrow as pa

            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, self.table.schema) as writer:
                writer.write_table(self.table)
            state["table"] = sink.getvalue().to_pybytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        table = state.get("table")
        if isinstance(table, bytes):
            import pyarrow as pa

            state = {**state, "table": pa.ipc.open_stream(table).read_all()}
        self.__dict__.update(state)


@dataclass
class Listing:
    """Keys of one (sub-)array's node in one shard: shard key -> (size, stamp); the
    stamps of its folders and files, when asked for (:mod:`shardedstore.table.seen`)."""

    keys: dict[str, tuple[int | None, str]] = field(default_factory=dict)
    zip_file: str | None = None
    zip_members: dict[str, tuple[int, int]] = field(default_factory=dict)
    stamps: Stamps | None = None


def _refuse_link(shard: str, path: str) -> LayoutError:
    return LayoutError(
        f"{shard}: {path} is a symbolic link; shardedstore never follows a symlink out of "
        "a shard: replace the link with what it points to"
    )


Stamp = tuple[int, int, int, int]
"""A file's or directory's ``(size, mtime_ns, ctime_ns, inode)``, as ``lstat`` gives it."""


def stamp_of(info: os.stat_result) -> Stamp:
    """The stamp of an ``lstat`` result (any change to an entry's content, or to which
    entries a directory holds, changes it, within the clock's resolution)."""
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def walk_local(
    root: str,
    prefix: str,
    shard: str,
    root_info: os.stat_result | None = None,
    stamps: Stamps | None = None,
) -> dict[str, tuple[int | None, str]]:
    """``key -> (size, stamp)`` of the files below ``root/prefix``; refuses symlinks.

    ``root_info``: the ``lstat`` of ``root`` the caller has already made; ``stamps``
    gets the ``lstat`` of every folder (``root/prefix`` first) and file walked."""
    found: dict[str, tuple[int | None, str]] = {}
    top = os.path.join(root, prefix) if prefix else root
    try:
        info = root_info if root_info is not None and not prefix else os.lstat(top)
    except FileNotFoundError:
        return found
    if stat.S_ISLNK(info.st_mode):
        raise _refuse_link(shard, top)
    if not stat.S_ISDIR(info.st_mode):
        return found
    if stamps is not None:
        stamps.append((prefix, info))
    pending = [(prefix, top)]
    while pending:
        relative, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                key = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_symlink():
                    raise _refuse_link(shard, entry.path)
                if entry.is_dir(follow_symlinks=False):
                    pending.append((key, entry.path))
                    if stamps is not None:
                        stamps.append((key, entry.stat(follow_symlinks=False)))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    found[key] = (st.st_size, file_stamp(st))
                    if stamps is not None:
                        stamps.append((key, st))
    return found


def file_stamp(info: os.stat_result) -> str:
    """A local file's change stamp: mtime, ctime and inode. The inode: zarr writes by
    rename, so a rewrite within the clock tick of the last one (same size, same coarse
    mtime) shows; the ctime: a rewrite in place whose mtime was set back shows."""
    return f"{info.st_mtime_ns}:{info.st_ctime_ns}:{info.st_ino}"


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


def _zip_members(
    path: str, prefix: str
) -> tuple[dict[str, tuple[int | None, str]], dict[str, tuple[int, int]]]:
    """Members below ``prefix``: ``(size, crc32)``, and ``(offset, length)`` of STORED ones."""
    keys: dict[str, tuple[int | None, str]] = {}
    stored: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or (prefix and not name.startswith(prefix)):
                continue
            keys[name] = (info.file_size, f"{info.CRC:08x}")
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                raw.seek(info.header_offset)
                header = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
                if header[0] != b"PK\x03\x04":
                    continue  # not a local header: leave its offset out rather than guess
                name_length, extra_length = header[-2], header[-1]
                offset = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                stored[name] = (offset, info.compress_size)
    return keys, stored


def _stamp(info: Mapping[str, Any]) -> str:
    """An object's change stamp from a listing: its ETag, else its mtime; "" for neither."""

    return object_validator(info) or ""


async def _list_fsspec(store: FsspecStore, prefix: str) -> dict[str, tuple[int | None, str]]:
    root = store.path.rstrip("/")
    top = f"{root}/{prefix}".rstrip("/") if prefix else root
    found = await store.fs._find(top, detail=True)
    keys: dict[str, tuple[int | None, str]] = {}
    for name, info in found.items():
        if info.get("type") == "directory" or not str(name).startswith(root + "/"):
            continue
        size = info.get("size")
        keys[str(name)[len(root) + 1 :]] = (None if size is None else int(size), _stamp(info))
    return keys


async def _list_obstore(store: ObjectStore[Any], prefix: str) -> dict[str, tuple[int | None, str]]:
    """Keys below ``prefix`` with their sizes and ETags (a few LIST requests)."""
    import obstore

    keys: dict[str, tuple[int | None, str]] = {}
    top = prefix.rstrip("/") or None
    async for batch in obstore.list(store.store, prefix=top, chunk_size=1000):
        for meta in batch:
            keys[str(meta["path"])] = (int(meta["size"]), _stamp(meta))
    return keys


async def _content_stamps(
    store: Store, keys: dict[str, tuple[int | None, str]]
) -> dict[str, tuple[int | None, str]]:
    """``keys`` with each empty stamp replaced by the crc32 of the key's value.

    At most ``_IN_FLIGHT`` values are held at once, as when chunks are read for their
    statistics.
    """
    prototype = default_buffer_prototype()
    slots = asyncio.Semaphore(_IN_FLIGHT)

    async def crc(key: str) -> str:
        async with slots:
            value = await store.get(key, prototype)
            return "" if value is None else f"crc:{crc32(value.to_bytes()):08x}"

    blank = [key for key, (_, stamp) in keys.items() if not stamp]
    stamps = await asyncio.gather(*(crc(key) for key in blank))
    found = dict(keys)
    for key, stamp in zip(blank, stamps, strict=True):
        found[key] = (found[key][0], stamp)
    return found


async def _list_any(store: Store, prefix: str) -> dict[str, tuple[int | None, str]]:
    """Keys with their sizes; stores without stamps: crc32 of metadata documents."""

    keys = [key async for key in store.list_prefix(prefix)]
    sizes = await gather_bounded(store.getsize(key) for key in keys)
    found: dict[str, tuple[int | None, str]] = {}
    prototype = default_buffer_prototype()
    for key, size in zip(keys, sizes, strict=True):
        stamp = ""
        if is_metadata_document(key):
            value = await store.get(key, prototype)
            stamp = "" if value is None else f"{crc32(value.to_bytes()):08x}"
        found[key] = (size, stamp)
    return found


async def _list_chunks(task: ChunkTask, content_stamps: bool | None = None) -> Listing | None:
    """The task's chunk keys in its shard, with sizes and stamps; None: no such shard.

    ``content_stamps`` (default: when the task's statistics read values) gives each key
    whose listing has no stamp the crc32 of its bytes.
    """

    store = task.store
    if not await opened(store):
        return None
    inner = task.array.inner
    prefix = f"{inner}/" if inner else ""
    listed = Listing()
    listing = store.store if isinstance(store, CachedStore) else store  # the same keys
    if isinstance(listing, ObjectStore):
        listed.keys = await _list_obstore(listing, prefix)
    elif isinstance(store, LocalStore):
        root = os.fspath(store.root)
        if os.path.islink(root):
            raise _refuse_link(task.shard, root)
        listed.stamps = None if task.stamps_before is None else []
        listed.keys = await asyncio.to_thread(
            walk_local, root, inner, task.shard, None, listed.stamps
        )
    elif isinstance(store, ZipStore):
        listed.zip_file = os.path.abspath(store.path)  # readable from any cwd
        if task.stamps_before is not None:
            # Stamped before it is listed, and only if it is the zip the store has open
            # (its rows are read through the store): else a zip replaced in between
            # would leave this run's rows under the new zip's stamps for good.
            listed.stamps = zip_stamps(listed.zip_file)
            info = listed.stamps[0][1]
            if open_zip_identity(store) != (info.st_dev, info.st_ino):
                listed.stamps = []  # racy: the next run reads the shard again
        listed.keys, listed.zip_members = await asyncio.to_thread(
            _zip_members, listed.zip_file, prefix
        )
    elif isinstance(listing, FsspecStore) and hasattr(listing.fs, "_find"):
        listed.keys = await _list_fsspec(listing, prefix)
    else:
        listed.keys = await _list_any(store, prefix)
    listed.keys = owned(task.own_keys, listed.keys)
    if task.options.reads_values if content_stamps is None else content_stamps:
        # Statistics of a chunk rewritten with the same size must not be kept: where
        # the listing gives no stamp, the chunk's bytes are its stamp.
        listed.keys = await _content_stamps(store, listed.keys)
    return listed


def zip_stamps(path: str) -> Stamps:
    """The stamps of a zip shard: the zip file's own (statted before its listing)."""
    return [("", os.stat(path))]


def seen_context(
    array: ArraySpec, options: StatsOptions, columns: int, own: OwnKeys | None, fingerprint: str
) -> str:
    """What a record of stamps vouches for besides them (see :mod:`.seen`): everything a
    task's fingerprint depends on but its listing, and the fingerprint."""
    return seen_context_of(
        seen_head(array.path, array.inner, options, columns, own), array.lead, fingerprint
    )


def seen_context_of(head: str, lead: tuple[int, ...], fingerprint: str) -> str:
    """:func:`seen_context` from its shared part (:func:`seen_head`)."""
    return f"{head}{lead!r}\n{fingerprint}"


def seen_head(
    path: str, inner: str, options: StatsOptions, columns: int, own: OwnKeys | None
) -> str:
    """The part of :func:`seen_context` the shards of one array share (kept by callers
    that check many shards)."""
    before, after = _head(path, options, columns)
    return f"{before}{after}\n{inner}\n{_owner_token(cast('Hashable', own))}\n"


@functools.lru_cache(maxsize=64)
def _owner_token(own: object) -> str:
    """``own`` (an :class:`OwnKeys`) as the same text in every process (sets sorted)."""
    if not dataclasses.is_dataclass(own) or isinstance(own, type):
        return repr(own)
    values = [getattr(own, f.name) for f in dataclasses.fields(own)]
    shown = [sorted(v) if isinstance(v, frozenset) else v for v in values]
    return f"{type(own).__name__}{shown!r}"


def settled_fingerprint(task: ChunkTask, listed: Listing) -> tuple[str, Seen | None]:
    """The task's fingerprint, and the record of its stamps for the next run.

    Where the task records stamps (``task.stamps_before``) and one of them is racy (changed
    just before or during this run: a change in the same clock tick would not show),
    the fingerprint is marked: no run takes it for unchanged (see :func:`kept`), the
    next one reads the shard again.
    """
    fingerprint = _fingerprint(task, listed)
    before = task.stamps_before
    if before is None or listed.stamps is None:
        return fingerprint, None
    if is_racy(listed.stamps, before):
        return f"{_RACY}{fingerprint}", None
    context = seen_context(task.array, task.options, task.ndim_columns, task.own_keys, fingerprint)
    return fingerprint, record(listed.stamps, context, before)


_RACY = "racy:"


def kept(task: ChunkTask, fingerprint: str) -> bool:
    """Whether the shard's rows from the earlier run stand: the same fingerprint, and not
    one taken from racy stamps."""
    return task.previous == fingerprint and not fingerprint.startswith(_RACY)


def unchanged(
    local_root: tuple[str, str] | None, seen: Seen, context: str, folders: Folders
) -> bool:
    """Whether the stamps of ``seen`` still hold for a shard at ``local_root`` (as
    :attr:`Shard.local_root` gives it): it has not changed, and is not listed again."""
    if local_root is None:
        return False
    kind, root = local_root
    return still_seen(seen, context, root, kind == "file", folders)


def _fingerprint(task: ChunkTask, listed: Listing) -> str:
    """What a task's rows were computed from: its array, statistics and every key of the
    node (metadata documents included) with its size and stamp."""
    digest = hashlib.sha256()
    before, after = _head(task.array.path, task.options, task.ndim_columns)
    lead = ", ".join(map(str, task.array.lead))  # json.dumps of a tuple of ints
    digest.update(f"{before}[{lead}]{after}".encode())
    items = sorted(listed.keys.items())
    digest.update("".join(f"\n{k}\t{size}\t{stamp}" for k, (size, stamp) in items).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _head(path: str, options: StatsOptions, columns: int) -> tuple[str, str]:
    """The fingerprint's JSON head, around the place of ``lead`` (one JSON text per
    array and statistics, with each shard's ``lead`` put in: 10^5 shards share it)."""
    head = {
        "format": FORMAT_VERSION,
        "array": path,
        "lead": _LEAD,
        "stats": options.stats,
        "histogram": options.histogram,
        "columns": columns,
    }
    before, after = json.dumps(head, sort_keys=True).split(json.dumps(_LEAD))
    return before, after


_LEAD = "\x00lead\x00"


def fingerprint_of(task: ChunkTask, listed: Listing | None) -> str | None:
    """The task's fingerprint, or None where a key has no stamp (an unknown change)."""
    if listed is None or any(not stamp for _, stamp in listed.keys.values()):
        return None
    return _fingerprint(task, listed)


async def list_for_fingerprint(task: ChunkTask) -> Listing | None:
    """The task's listing without reading chunk bytes (for :func:`fingerprint_of`)."""
    return await _list_chunks(task, content_stamps=False)


def local_root(task: ChunkTask) -> tuple[str, os.stat_result] | None:
    """The root directory of a task's shard in a local directory and its ``lstat``;
    None for a read-only shard never written (it reads as empty)."""
    store = task.store
    if not isinstance(store, LocalStore):
        raise TypeError(f"list_local: {task.shard} is not a local directory")
    root = os.fspath(store.root)
    try:
        info: os.stat_result | None = os.lstat(root)
    except (FileNotFoundError, NotADirectoryError):
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        raise _refuse_link(task.shard, root)
    if info is None or not stat.S_ISDIR(info.st_mode):
        if store.read_only:
            return None
        raise FileNotFoundError(root)
    return root, info


def list_local(task: ChunkTask) -> Listing | None:
    """:func:`list_for_fingerprint` of a shard in a local directory, without an event
    loop (scans list every shard before they filter on values)."""
    found = local_root(task)
    if found is None:
        return None
    root, info = found
    stamps: Stamps | None = None if task.stamps_before is None else []
    keys = walk_local(root, task.array.inner, task.shard, info, stamps)
    return Listing(owned(task.own_keys, keys), stamps=stamps)


def listed_coords(
    task: ChunkTask, listing: Listing, shape: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """The chunk indices (every dimension) of the chunks ``listing`` holds within the
    array's ``shape``, sorted; nothing is read."""
    prefix = f"{task.array.inner}/" if task.array.inner else ""
    lead = task.array.lead
    grid = [-(-s // c) if c else 0 for s, c in zip(shape, task.array.chunks, strict=True)]
    inner_grid = grid[len(lead) :]
    found = []
    for shard_key in listing.keys:
        coords = task.array.key_format.parse(shard_key[len(prefix) :], len(inner_grid))
        if coords is None or any(i >= n for i, n in zip(coords, inner_grid, strict=True)):
            continue
        found.append(lead + coords)
    found.sort()
    return found


def region(
    coords: tuple[int, ...], chunks: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """The region of the array a chunk covers, clipped to the array's shape."""
    return tuple(
        slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(coords, chunks, shape, strict=True)
    )


def _batches(coords: list[tuple[int, ...]], limit: int) -> list[list[tuple[int, ...]]]:
    """Sorted chunks in runs read by one request: each run's bounding box spans at most
    ``limit`` chunks (the memory bound), usually neighbours along the last dim."""
    batches: list[list[tuple[int, ...]]] = []
    low: list[int] = []
    high: list[int] = []
    for chunk in coords:
        if batches and len(batches[-1]) < limit:
            new_low = [min(a, b) for a, b in zip(low, chunk, strict=True)]
            new_high = [max(a, b) for a, b in zip(high, chunk, strict=True)]
            if math.prod(h - lo + 1 for lo, h in zip(new_low, new_high, strict=True)) <= limit:
                batches[-1].append(chunk)
                low, high = new_low, new_high
                continue
        batches.append([chunk])
        low, high = list(chunk), list(chunk)
    return batches


@dataclass
class OpenedArray:
    """A task's (sub-)array, opened for reading through the shard's own keys."""

    array: Any  # zarr.AsyncArray
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    grid: tuple[int, ...]


async def open_task_array(task: ChunkTask) -> OpenedArray | None:
    """The task's (sub-)array in its shard; None when the shard does not exist."""
    import zarr.api.asynchronous as zarr_async

    if not await opened(task.store):
        return None
    source = ShardSource(task.store, task.shard, task.own_keys)
    array = await zarr_async.open_array(store=source, path=task.array.inner, mode="r")
    shape = tuple(int(n) for n in array.shape)
    chunks = task.array.chunks[len(task.array.lead) :]
    grid = tuple(-(-s // c) if c else 0 for s, c in zip(shape, chunks, strict=True))
    return OpenedArray(array, shape, chunks, grid)


async def read_chunks(
    opened_array: OpenedArray,
    coords: list[tuple[int, ...]],
    func: Callable[[tuple[int, ...], np.ndarray[Any, Any]], T],
    limit: int = _IN_FLIGHT,
) -> list[T]:
    """``func(chunk, values)`` for each chunk of ``coords`` (sorted), in that order.

    Neighbouring chunks are read by one request (a box of at most ``limit`` chunks);
    a chunk that is not stored reads as the fill value, as zarr reads it.
    """
    array, chunks, shape = opened_array.array, opened_array.chunks, opened_array.shape
    found: list[T] = []
    for batch in _batches(coords, limit):
        low = [min(chunk[d] for chunk in batch) for d in range(len(shape))]
        high = [max(chunk[d] for chunk in batch) for d in range(len(shape))]
        top = region(tuple(high), chunks, shape)
        box = tuple(
            slice(b.start, top[d].stop) for d, b in enumerate(region(tuple(low), chunks, shape))
        )
        data = np.asarray(await array.getitem(box))
        offset = [b.start for b in box]

        def compute(
            batch: list[tuple[int, ...]] = batch,
            data: np.ndarray[Any, Any] = data,
            offset: list[int] = offset,
        ) -> list[T]:
            out = []
            for chunk in batch:
                local = tuple(
                    slice(r.start - o, r.stop - o)
                    for r, o in zip(region(chunk, chunks, shape), offset, strict=True)
                )
                out.append(func(chunk, data[local]))
            return out

        found += compute() if data.size <= _INLINE_ELEMENTS else await asyncio.to_thread(compute)
    return found


def _found(
    task: ChunkTask, listed: Listing, opened_array: OpenedArray
) -> list[tuple[tuple[int, ...], str, int | None]]:
    """``(sub-array chunk indices, shard key, size)`` of the stored chunks, sorted."""
    prefix = f"{task.array.inner}/" if task.array.inner else ""
    key_format = task.array.key_format
    ndim, grid = len(opened_array.shape), opened_array.grid
    found = []
    for shard_key, (size, _) in listed.keys.items():
        coords = key_format.parse(shard_key[len(prefix) :], ndim)
        if coords is None or any(i >= n for i, n in zip(coords, grid, strict=True)):
            continue  # metadata, another node's key, or beyond the array's shape
        found.append((coords, shard_key, size))
    found.sort()
    return found


def _starts_stops(
    task: ChunkTask, coords: tuple[int, ...], opened_array: OpenedArray
) -> tuple[list[int], list[int]]:
    lead = task.array.lead
    lead_chunks = task.array.chunks[: len(lead)]
    starts = [i * c for i, c in zip(lead, lead_chunks, strict=True)]
    stops = [(i + 1) * c for i, c in zip(lead, lead_chunks, strict=True)]
    starts += [i * c for i, c in zip(coords, opened_array.chunks, strict=True)]
    stops += [
        min((i + 1) * c, s)
        for i, c, s in zip(coords, opened_array.chunks, opened_array.shape, strict=True)
    ]
    return starts, stops


async def _stored_chunks(task: ChunkTask) -> list[StoredChunk]:
    listed = await _list_chunks(task, content_stamps=False)
    opened_array = None if listed is None else await open_task_array(task)
    if listed is None or opened_array is None:
        return []
    stored = []
    for coords, shard_key, size in _found(task, listed, opened_array):
        starts, stops = _starts_stops(task, coords, opened_array)
        full = task.array.lead + coords
        stored.append(
            StoredChunk(
                full, tuple(starts), tuple(stops), task.array.full_key(full), shard_key, size
            )
        )
    return stored


def _identity_row(
    task: ChunkTask, coords: tuple[int, ...], shard_key: str, opened_array: OpenedArray
) -> dict[str, Any]:
    starts, stops = _starts_stops(task, coords, opened_array)
    full = task.array.lead + coords
    return {
        "array": task.array.path,
        "shard_kind": task.kind,
        "shard_path": task.shard_path,
        "shard_index": task.shard_index,
        "coords": full,
        "starts": starts,
        "stops": stops,
        "key": task.array.full_key(full),
        "shard_key": shard_key,
    }


async def _table_task(task: ChunkTask) -> TableResult:
    listed = await _list_chunks(task)
    if listed is None:
        return TableResult("", None, exists=False)
    # Every key of the node, metadata documents included, with its stamp: a change to
    # any of them changes the fingerprint, and only then is the array opened and read.
    fingerprint, seen = settled_fingerprint(task, listed)
    if kept(task, fingerprint):
        return TableResult(fingerprint, None, seen=seen)
    opened_array = await open_task_array(task)
    if opened_array is None:
        return TableResult("", None, exists=False)
    found = _found(task, listed, opened_array)
    options = task.options
    fill = read_fill_value(opened_array.array.metadata)
    stats: list[dict[str, Any]] = []
    if options.reads_values:
        stats = await read_chunks(
            opened_array,
            [coords for coords, *_ in found],
            lambda _, data: chunk_stats(data, fill, options),
        )
    rows = []
    for n, (coords, shard_key, size) in enumerate(found):
        row = _identity_row(task, coords, shard_key, opened_array)
        row["exists"] = True
        row["nbytes"] = size
        if listed.zip_file is not None:
            row["zip_file"] = listed.zip_file
            member = listed.zip_members.get(shard_key)
            if member is not None:
                row["zip_offset"], row["zip_length"] = member
        if stats:
            row.update(stats[n])
        rows.append(row)
    return TableResult(fingerprint, to_table(rows, task.ndim_columns, task.options), seen=seen)


def _as_columns(result: Any) -> Mapping[str, Any]:
    return result if isinstance(result, Mapping) else {"value": result}


async def _map_task(task: ChunkTask, func: Callable[[np.ndarray[Any, Any]], Any]) -> pa.Table:
    import pyarrow as pa

    listed = await _list_chunks(task, content_stamps=False)
    opened_array = None if listed is None else await open_task_array(task)
    identity = identity_schema(task.ndim_columns)
    if listed is None or opened_array is None:
        return identity.empty_table()
    found = _found(task, listed, opened_array)
    results = await read_chunks(
        opened_array, [coords for coords, *_ in found], lambda _, data: _as_columns(func(data))
    )
    rows = [_identity_row(task, coords, key, opened_array) for coords, key, _ in found]
    table = to_table(rows, task.ndim_columns, None)
    names: list[str] = []
    for result in results:
        names += [str(name) for name in result if str(name) not in names]
    for name in names:
        if name in table.column_names:
            raise ArgumentError(
                f"map_chunks: the function returned a column {name!r}, which the chunk "
                "table's identity columns already have; return another name"
            )
        column = [result.get(name) for result in results]
        table = table.append_column(name, pa.array(_plain(column)))
    return table


def _plain(values: list[Any]) -> list[Any]:
    """numpy scalars and arrays as Python values, which pyarrow takes as they are."""
    return [v.tolist() if isinstance(v, np.ndarray | np.generic) else v for v in values]


def identity_schema(ndim: int) -> pa.Schema:
    """The identity columns of the chunk table, for arrays of at most ``ndim`` dims."""
    import pyarrow as pa

    full = table_schema(ndim, StatsOptions())
    return pa.schema([full.field(name) for name in identity_names(ndim)])


def identity_names(ndim: int) -> list[str]:
    names = list(IDENTITY_COLUMNS)
    for prefix in ("c", "start", "stop"):
        names += [f"{prefix}{i}" for i in range(ndim)]
    return [*names, "key"]


def to_table(rows: list[dict[str, Any]], ndim: int, options: StatsOptions | None) -> pa.Table:
    """Rows (``coords``, ``starts``, ``stops`` and columns) in the chunk table's schema;
    ``options`` None: the identity columns only."""
    import pyarrow as pa

    schema = identity_schema(ndim) if options is None else table_schema(ndim, options)
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    per_dim = {f"{name}{i}" for name in ("c", "start", "stop") for i in range(ndim)}
    plain = [name for name in schema.names if name not in per_dim]
    for row in rows:
        coords, starts, stops = row["coords"], row["starts"], row["stops"]
        for i in range(ndim):
            inside = i < len(coords)
            columns[f"c{i}"].append(coords[i] if inside else None)
            columns[f"start{i}"].append(starts[i] if inside else None)
            columns[f"stop{i}"].append(stops[i] if inside else None)
        for name in plain:
            columns[name].append(row.get(name))
    return pa.table(columns, schema=schema)


class _InlineExecutor(ThreadPoolExecutor):
    """Runs each call at once, in the calling thread (never starts a thread).

    The default executor of a task's own event loop: that loop serves one task in one
    worker thread, so the stores' blocking calls (``asyncio.to_thread``) may as well
    run in that thread, without a hop to another one.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


def _run_inline(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on an event loop of its own, whose blocking calls run in this thread."""
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_InlineExecutor())
    try:
        return loop.run_until_complete(work())
    finally:
        loop.close()


def run_on_task_loop(task: ChunkTask, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work()`` for ``task`` (in a worker thread or process).

    A shard on local disk (a directory or a zip) is read and decoded in the worker's own
    thread (see :func:`_run_inline`), so that workers run in parallel instead of taking
    turns on zarr's one event loop, and without a thread hop per read; other stores
    (remote filesystems bind their sessions to zarr's loop) go through zarr's loop.
    """
    try:
        if isinstance(task.store, LocalStore | ZipStore):
            return _run_inline(work)
        return sync(work())
    finally:
        if task.kind == "array shard":
            task.store.close()  # a handle of its own: 10^5 zips must not stay open


def run_task(task: ChunkTask) -> TableResult:
    """Run one chunk-table task (in a worker thread or process)."""
    return run_on_task_loop(task, lambda: _table_task(task))
