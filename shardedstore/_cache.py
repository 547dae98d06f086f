"""A bounded cache for remote shards: LRU by bytes, in memory or in a shared directory.

One :class:`ShardCache` (a setting: where, how big, how far to read ahead) is set per
layout (``ShardedStore(..., cache=ShardCache(...))`` or ``"cache": {...}`` in a config).
The stores that read remote data go through it:

- a zip shard at a URL (:class:`~shardedstore._remotezip.RemoteZipStore`) is one entry,
  fetched whole with one GET;
- a remote directory shard (``FsspecStore``, ``ObjectStore``) is wrapped in a
  :class:`CachedStore` and cached chunk by chunk.

Entries are keyed by what the backend says identifies the object's content: its ETag,
else its size and modification time. A zip shard asks once when the shard is opened
(one HEAD); a directory shard lists its objects once (one LIST per 1000 keys), which
also answers every missing chunk without a request. A changed object has a new key, so
it is fetched again and never served stale; the old entry ages out.

With ``dir`` set, entries are files below that directory, written to a temporary name
and renamed into place (no reader ever sees a torn entry), so any number of processes
can share it; the least recently used files are removed once the total passes
``max_bytes``. Each process counts its own writes and looks at the whole directory
again at least every half second while it writes, so with several writers the total
can pass the bound for that long. Without ``dir`` the entries are held in this process's memory.

zarr's own ``zarr.experimental.cache_store.CacheStore`` caches one store with its own
bound, keys entries by key alone and keeps no validator, so it cannot give one bound
for the many shard stores of a layout, share entries between processes, or notice a
changed object; this module does those three things and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from shardedstore._errors import ConfigError

__all__ = ["CacheStats", "CachedStore", "ShardCache", "cache_engine", "slice_bytes", "wrap"]

DEFAULT_MAX_BYTES = 1 << 30
"""1 GiB: the default bound of a cache."""

_FETCH_LIMIT = 8
"""Most GETs one store keeps in flight while prefetching a whole shard."""

_METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})

_RESCAN = 0.5
"""Seconds after which a process writing to a cache directory looks at it again (its
count includes other processes' entries as of then)."""

_WHOLE_LIMIT_SHARE = 16
"""A byte-range read fetches (and caches) the whole object when it is at most this
share of the cache (a sharding-codec shard file larger than that is read by range)."""


@dataclass(frozen=True)
class ShardCache:
    """How a layout caches the shards it reads from remote stores.

    Parameters
    ----------
    dir
        A directory for the entries, shared safely by any number of processes (atomic
        writes; least recently used files removed past ``max_bytes``). None: keep them
        in this process's memory.
    max_bytes
        The bound, in bytes, on what the cache holds (1 GiB by default). Make it at
        least ``read_ahead + 1`` shards, so that read-ahead does not evict the shard
        being read.
    read_ahead
        When array shard ``t`` of an array is read right after ``t - 1``, fetch shards
        ``t + 1 ... t + read_ahead`` in the background. 0 (the default) turns it off.

    Examples
    --------
    >>> ShardCache(dir="/tmp/cache", max_bytes=10 * 2**30, read_ahead=4).to_json()
    {'dir': '/tmp/cache', 'max_bytes': 10737418240, 'read_ahead': 4}
    """

    dir: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    read_ahead: int = 0

    def __post_init__(self) -> None:
        if self.dir is not None:
            if not isinstance(self.dir, str | os.PathLike) or not os.fspath(self.dir):
                raise ConfigError(("cache", "dir"), f"expected a directory path, got {self.dir!r}")
            object.__setattr__(self, "dir", os.path.abspath(os.fspath(self.dir)))
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int):
            raise ConfigError(
                ("cache", "max_bytes"), f"expected a whole number of bytes, got {self.max_bytes!r}"
            )
        if self.max_bytes <= 0:
            raise ConfigError(("cache", "max_bytes"), f"must be > 0, got {self.max_bytes}")
        read_ahead = self.read_ahead
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
            raise ConfigError(
                ("cache", "read_ahead"),
                f"expected a number of shards >= 0 (0: off), got {read_ahead!r}",
            )

    def to_json(self) -> dict[str, Any]:
        """The setting as the config's ``"cache"`` object."""
        out: dict[str, Any] = {}
        if self.dir is not None:
            out["dir"] = self.dir
        out["max_bytes"] = self.max_bytes
        if self.read_ahead:
            out["read_ahead"] = self.read_ahead
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any], *, base: str | None = None) -> ShardCache:
        """The setting from a config's ``"cache"`` object; a relative ``dir`` resolves
        against ``base`` (the config's directory) when that is local."""
        directory = value.get("dir")
        if isinstance(directory, str) and not os.path.isabs(directory) and base is not None:
            if "://" in base and not base.startswith("file://"):
                raise ConfigError(
                    ("cache", "dir"),
                    f"relative cache directory {directory!r} in a config read from {base!r}; "
                    "make it absolute (the cache is always on local disk)",
                )
            directory = os.path.join(base.removeprefix("file://"), directory)
        return cls(
            dir=directory,
            max_bytes=value.get("max_bytes", DEFAULT_MAX_BYTES),
            read_ahead=value.get("read_ahead", 0),
        )


@dataclass
class CacheStats:
    """What a cache did in this process: entries served, fetched and removed."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


def slice_bytes(data: bytes | memoryview, byte_range: ByteRequest | None) -> bytes | memoryview:
    """The part of ``data`` a zarr byte request asks for."""
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[len(data) - byte_range.suffix :] if byte_range.suffix else data[:0]
    raise TypeError(f"unexpected byte request {byte_range!r}")


def _entry_name(namespace: str, key: str, validator: str) -> str:
    text = f"{namespace}\0{key}\0{validator}".encode()
    return hashlib.sha256(text).hexdigest()


def _is_entry_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


class _Engine:
    """The entries of one cache setting in this process (shared by all its stores)."""

    def __init__(self, setting: ShardCache) -> None:
        self.setting = setting
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._pending: dict[tuple[int, str], asyncio.Future[bytes | None]] = {}
        self._root: str | None = None
        self._disk_bytes: int | None = None  # as of the last scan plus our writes since
        self._scanned = 0.0
        if setting.dir is not None:
            self._root = os.path.join(setting.dir, "shardedstore-cache-v1")
            os.makedirs(os.path.join(self._root, "tmp"), exist_ok=True)

    # -- naming

    def entry(self, namespace: str, key: str, validator: str) -> str:
        """The name of the entry holding ``key`` of store ``namespace`` at ``validator``."""
        return _entry_name(namespace, key, validator)

    def path(self, entry: str) -> str:
        assert self._root is not None
        return os.path.join(self._root, entry)

    @property
    def on_disk(self) -> bool:
        return self._root is not None

    @property
    def size(self) -> int:
        """Bytes held now (on disk: as of the last scan plus what this process added)."""
        if self._root is None:
            return self._memory_bytes
        return self._scan_total()

    # -- reading

    def lookup(self, entry: str) -> bytes | None:
        """The entry's bytes, marking it most recently used; None if absent."""
        if self._root is None:
            with self._lock:
                data = self._memory.get(entry)
                if data is not None:
                    self._memory.move_to_end(entry)
                    self.stats.hits += 1
                return data
        path = self.path(entry)
        try:
            with open(path, "rb") as f:
                data = f.read()
            os.utime(path)
        except FileNotFoundError:  # never there, or removed by another process
            return None
        with self._lock:
            self.stats.hits += 1
        return data

    def lookup_file(self, entry: str) -> str | None:
        """On disk: the entry's file path (marked most recently used), or None."""
        path = self.path(entry)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        with self._lock:
            self.stats.hits += 1
        return path

    def contains(self, entry: str) -> bool:
        if self._root is None:
            return entry in self._memory
        return os.path.exists(self.path(entry))

    # -- writing

    def put(self, entry: str, data: bytes) -> bool:
        """Add an entry (evicting least recently used ones); False if larger than the bound."""
        size = len(data)
        if size > self.setting.max_bytes:
            return False
        if self._root is None:
            with self._lock:
                old = self._memory.pop(entry, None)
                if old is not None:
                    self._memory_bytes -= len(old)
                self._memory[entry] = data
                self._memory_bytes += size
                while self._memory_bytes > self.setting.max_bytes and len(self._memory) > 1:
                    _, evicted = self._memory.popitem(last=False)
                    self._memory_bytes -= len(evicted)
                    self.stats.evictions += 1
            return True
        self._write_file(entry, data)
        return True

    def _write_file(self, entry: str, data: bytes) -> None:
        assert self._root is not None
        target = self.path(entry)
        temporary = os.path.join(self._root, "tmp", f"{uuid.uuid4().hex}.part")
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, target)  # atomic: readers see all of it or nothing
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        # Other processes write here too: what this one knows of the directory is
        # refreshed when its own count passes the bound, and at least every
        # _RESCAN seconds while it writes.
        with self._lock:
            if self._disk_bytes is not None:
                self._disk_bytes += len(data)
            due = (
                self._disk_bytes is None
                or self._disk_bytes > self.setting.max_bytes
                or time.monotonic() - self._scanned > _RESCAN
            )
        if due:
            self._evict_files(keep=entry)

    def _entries_on_disk(self) -> list[tuple[float, int, str]]:
        assert self._root is not None
        found = []
        with os.scandir(self._root) as files:
            for file in files:
                if not _is_entry_name(file.name):
                    continue
                try:
                    info = file.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
                found.append((info.st_mtime, info.st_size, file.path))
        return found

    def _scan_total(self) -> int:
        total = sum(size for _, size, _ in self._entries_on_disk())
        with self._lock:
            self._disk_bytes = total
        return total

    def _evict_files(self, keep: str) -> None:
        """Remove least recently used files until the directory is within the bound."""
        entries = sorted(self._entries_on_disk())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.setting.max_bytes:
                break
            if os.path.basename(path) == keep:
                continue
            with contextlib.suppress(FileNotFoundError):  # another process removed it
                os.unlink(path)
                with self._lock:
                    self.stats.evictions += 1
            total -= size
        with self._lock:
            self._disk_bytes = total
            self._scanned = time.monotonic()

    # -- fetching

    async def fetch(
        self, entry: str, fetcher: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        """The entry's bytes: from the cache, else from ``fetcher`` (once, however many
        callers ask at the same time), then kept."""
        data = self.lookup(entry)
        if data is not None:
            return data
        return await self._fetch_once(entry, fetcher)

    async def ensure(self, entry: str, fetcher: Callable[[], Awaitable[bytes | None]]) -> bool:
        """Make sure the entry is cached (fetching it if not); False if the object is gone."""
        if self.contains(entry):
            return True
        return await self._fetch_once(entry, fetcher) is not None

    async def _fetch_once(
        self, entry: str, fetcher: Callable[[], Awaitable[bytes | None]]
    ) -> bytes | None:
        loop = asyncio.get_running_loop()
        key = (id(loop), entry)
        while (pending := self._pending.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this caller was cancelled
                # The fetch it waited for was (read-ahead, stopped by close()): fetch.
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._pending[key] = future
        try:
            with self._lock:
                self.stats.misses += 1
            data = await fetcher()
            if data is not None:
                if self._root is None:
                    self.put(entry, data)
                else:
                    await asyncio.to_thread(self.put, entry, data)
            future.set_result(data)
            return data
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._pending[key]


_engines: dict[ShardCache, _Engine] = {}
_engines_pid = os.getpid()
_engines_lock = threading.Lock()


def cache_engine(setting: ShardCache) -> _Engine:
    """The one engine of ``setting`` in this process (a forked child gets its own)."""
    global _engines_pid
    with _engines_lock:
        if os.getpid() != _engines_pid:
            _engines.clear()
            _engines_pid = os.getpid()
        engine = _engines.get(setting)
        if engine is None:
            engine = _engines[setting] = _Engine(setting)
        return engine


# ------------------------------------------------------------------ listings


def _validator(info: Mapping[str, Any]) -> str:
    """What identifies an object's content: its ETag, else size and modification time."""
    for name in ("ETag", "etag", "e_tag"):
        value = info.get(name)
        if value:
            return f"etag:{value}"
    size = info.get("size", info.get("Size"))
    for name in ("LastModified", "last_modified", "mtime", "updated", "modified", "created"):
        value = info.get(name)
        if value is not None:
            return f"size:{size}:mtime:{value}"
    return f"size:{size}"


def is_remote(store: Store) -> bool:
    """Whether ``store`` reads over the network (an fsspec or obstore store not on disk)."""
    from zarr.storage import FsspecStore

    if isinstance(store, FsspecStore):
        fs = getattr(store.fs, "sync_fs", store.fs)
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        return not {"file", "local", "memory"} & set(protocols)
    try:
        from zarr.storage import ObjectStore
    except ImportError:  # pragma: no cover
        return False
    if isinstance(store, ObjectStore):
        kind = type(store.store).__name__
        return kind not in ("LocalStore", "MemoryStore")
    return False


async def _list_objects(store: Store) -> dict[str, tuple[int, str]]:
    """Every key of a remote store with its size and validator (a few LIST requests)."""
    from zarr.storage import FsspecStore

    found: dict[str, tuple[int, str]] = {}
    if isinstance(store, FsspecStore):
        root = store.path.rstrip("/")
        store.fs.invalidate_cache(root)  # a listing from the server, not from fsspec's memory
        try:
            listed = await store.fs._find(root, detail=True)
        except FileNotFoundError:
            return found
        for path, info in listed.items():
            if info.get("type", "file") != "file":
                continue
            key = path[len(root) + 1 :] if root else path
            found[key] = (int(info.get("size") or 0), _validator(info))
        return found
    import obstore

    async for batch in obstore.list(store.store, chunk_size=1000):  # type: ignore[attr-defined]
        for meta in batch:
            found[meta["path"]] = (int(meta["size"]), _validator(meta))
    return found


def _store_identity(store: Store) -> str:
    """A name for a store's location, the same in every process (the cache namespace)."""
    from zarr.storage import FsspecStore

    if isinstance(store, FsspecStore):
        fs = getattr(store.fs, "sync_fs", store.fs)
        return f"fsspec:{fs.unstrip_protocol(store.path)}"
    inner = getattr(store, "store", None)
    if inner is not None:
        prefix = getattr(inner, "prefix", "") or ""
        config = getattr(inner, "config", {}) or {}
        where = config.get("bucket") or config.get("container_name") or getattr(inner, "url", "")
        endpoint = config.get("endpoint", "")
        return f"obstore:{type(inner).__name__}:{endpoint}:{where}/{prefix}"
    return f"{type(store).__name__}:{store}"


# ------------------------------------------------------------- CachedStore


class CachedStore(Store):
    """A remote directory store read chunk by chunk through a :class:`ShardCache`.

    Read-only views cache; a writable one passes everything through (what a writer
    writes is not served from a cache). The store is listed once, on first read: the
    listing gives each object's ETag (or size and mtime), which names its entry, and
    says which keys are missing, so those cost no request. Keys written by others after
    that listing are seen by a new store object.

    Parameters
    ----------
    store
        The remote store (``FsspecStore`` or ``ObjectStore``).
    cache
        The cache setting.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(self, store: Store, cache: ShardCache) -> None:
        super().__init__(read_only=store.read_only)
        self.store = store
        self.cache = cache
        self._engine = cache_engine(cache)
        self._namespace = _store_identity(store)
        self._objects: dict[str, tuple[int, str]] | None = None
        self._listing = asyncio.Lock()
        self._is_open = store._is_open

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.store, self.cache))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CachedStore)
            and self.store == other.store
            and self.cache == other.cache
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CachedStore({self.store!r})"

    def __str__(self) -> str:
        return str(self.store)

    def with_read_only(self, read_only: bool = False) -> Self:
        # docstring inherited
        return type(self)(self.store.with_read_only(read_only), self.cache)

    async def _open(self) -> None:
        if not self.store._is_open:
            await self.store._open()
        self._is_open = True

    def close(self) -> None:
        # docstring inherited
        self.store.close()
        super().close()

    async def _objects_listed(self) -> dict[str, tuple[int, str]]:
        if self._objects is None:
            async with self._listing:  # one listing however many chunks ask at once
                if self._objects is None:
                    self._objects = await _list_objects(self.store)
        return self._objects

    async def _whole(self, key: str) -> bytes | None:
        buffer = await self.store.get(key, default_buffer_prototype())
        return None if buffer is None else buffer.to_bytes()

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if prototype is None:
            prototype = default_buffer_prototype()
        if not self.read_only:
            return await self.store.get(key, prototype, byte_range)
        listed = (await self._objects_listed()).get(key)
        if listed is None:
            return None
        size, validator = listed
        if byte_range is not None and size > self.cache.max_bytes // _WHOLE_LIMIT_SHARE:
            return await self.store.get(key, prototype, byte_range)
        entry = self._engine.entry(self._namespace, key, validator)
        data = await self._engine.fetch(entry, lambda: self._whole(key))
        if data is None:
            return None
        return prototype.buffer.from_bytes(slice_bytes(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        # docstring inherited
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    async def prefetch(self) -> None:
        """Fetch every chunk of this store into the cache (read-ahead).

        Metadata documents are left out: a layout keeps an array's metadata in its
        base, so reading array shards through it never asks for them.
        """
        objects = await self._objects_listed()
        semaphore = asyncio.Semaphore(_FETCH_LIMIT)

        async def one(key: str, validator: str) -> None:
            async with semaphore:
                entry = self._engine.entry(self._namespace, key, validator)
                await self._engine.ensure(entry, lambda: self._whole(key))

        await asyncio.gather(
            *(
                one(key, validator)
                for key, (_, validator) in objects.items()
                if key.rsplit("/", 1)[-1] not in _METADATA_NAMES
            )
        )

    async def exists(self, key: str) -> bool:
        # docstring inherited
        if not self.read_only:
            return await self.store.exists(key)
        return key in await self._objects_listed()

    async def getsize(self, key: str) -> int:
        # docstring inherited
        if self.read_only:
            listed = (await self._objects_listed()).get(key)
            if listed is None:
                raise FileNotFoundError(key)
            return listed[0]
        return await self.store.getsize(key)

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        await self.store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        await self.store.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        await self.store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        await self.store.delete_dir(prefix)

    async def is_empty(self, prefix: str) -> bool:
        # docstring inherited
        return await self.store.is_empty(prefix)

    def list(self) -> AsyncIterator[str]:
        # docstring inherited
        return self.store.list()

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        return self.store.list_prefix(prefix)

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        return self.store.list_dir(prefix)


def wrap(store: Store, cache: ShardCache) -> Store:
    """``store`` reading through ``cache``: remote zips and remote directories are; any
    other store (local disk, memory, a zip file) is returned as it is."""
    from shardedstore._remotezip import RemoteZipStore

    if isinstance(store, RemoteZipStore):
        return store.with_cache(cache)
    if isinstance(store, CachedStore) or not is_remote(store):
        return store
    return CachedStore(store, cache)
