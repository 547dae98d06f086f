"""A bounded cache for remote shards: LRU by bytes, in memory or in a shared directory.

One :class:`ShardCache` (a setting: where, how big, how far to read ahead) is set per
layout (``ShardedStore(..., cache=ShardCache(...))`` or ``"cache": {...}`` in a config).
The stores that read remote data go through it:

- a zip shard at a URL (:class:`~shardedstore.backends.remotezip.RemoteZipStore`) is one entry,
  fetched whole with one GET (a zip larger than half the bound is read by range
  instead, its members one request each);
- a remote directory shard (``FsspecStore``, ``ObjectStore``) is wrapped in a
  :class:`CachedStore` and cached chunk by chunk.

**Never wrong, never stale.** Entries are keyed by what the backend says identifies the
object's content (:func:`object_validator`): its ETag, else its Last-Modified time and
size. An object with neither is cached for the store that fetched it only, never shared
with another store or process. A zip shard asks when it is opened and again before
every download (one HEAD); a directory shard lists its objects once (one LIST per 1000
keys), which also answers every missing chunk without a request. A changed object has a
new key, so it is fetched again; the old entry ages out. Every cached byte is checked
when it is read: a zip's members against their CRC-32, a chunk entry against the
CRC-32 and length it was written with. A damaged, truncated or unreadable entry is
dropped and fetched again.

With ``dir`` set, entries are files below that directory, written to a temporary name
and renamed into place (no reader ever sees a torn entry), so any number of processes
can share it; the least recently used files are removed once the total passes
``max_bytes``. A file being read is open, so removing it never fails that read (the
last few opened stay open between reads; one removed or replaced meanwhile is closed
at its next read). Each process counts its own writes and looks at the whole
directory again at least every half second while it writes, so with several writers
the total can pass the bound for that long; temporary files of readers that died are
removed then. A directory that cannot be written (read-only, full) is bypassed with
one warning per store: entries then live in this process's memory (at most 256 MiB).
Without ``dir`` the entries are held in this process's memory.

zarr's own ``zarr.experimental.cache_store.CacheStore`` caches one store with its own
bound, keys entries by key alone and keeps no validator, so it cannot give one bound
for the many shard stores of a layout, share entries between processes, or notice a
changed object; this module does those three things and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import os
import socket
import stat
import struct
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, Self, runtime_checkable

from zarr.abc.store import (
    ByteRequest,
    Store,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import WrapperStore

from shardedstore.backends.crc import crc32
from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.zipstore import byte_bounds
from shardedstore.errors import CacheWarning, ConfigError

__all__ = [
    "CacheFile",
    "CacheStats",
    "Cacheable",
    "CachedStore",
    "FRAME_SIZE",
    "FRESH",
    "ShardCache",
    "cache_engine",
    "content_md5",
    "framed_size",
    "object_validator",
    "slice_bytes",
]

DEFAULT_MAX_BYTES = 1 << 30
"""1 GiB: the default bound of a cache."""

_FETCH_LIMIT = 8
"""Most GETs one store keeps in flight while prefetching a whole shard."""


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


_FALLBACK_BYTES = 256 << 20
"""The most a cache whose directory cannot be written keeps in memory instead."""

_RETRY_DIRECTORY = 30.0
"""Seconds after which a cache directory that could not be written is tried again."""

_LEFTOVER_AGE = 3600.0
"""A temporary file whose writer cannot be told dead (another host, an older name) is a
leftover once it is this many seconds old."""

_HOST = socket.gethostname()

_TRAILER = struct.Struct("<QI4s")
_MAGIC = b"SSC1"
"""An entry on disk is its bytes, then their length, CRC-32 and this mark."""

FRAME_SIZE = _TRAILER.size
"""Bytes an entry on disk has after what it holds (its trailer)."""


@dataclass
class CacheStats:
    """What a cache did in this process: entries served, fetched, removed and healed."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    damaged: int = 0
    """Entries found damaged (a wrong checksum, truncated, unreadable) and dropped."""
    bypassed: int = 0
    """Objects not kept: larger than the bound, or the directory could not be written."""
    leftovers_removed: int = 0
    """Temporary files of dead writers removed."""


def slice_bytes(data: bytes | memoryview, byte_range: ByteRequest | None) -> bytes | memoryview:
    """The part of ``data`` a zarr byte request asks for."""
    if byte_range is None:
        return data
    start, stop = byte_bounds(byte_range, len(data))
    return data[start:stop]


def _framed(data: bytes) -> bytes:
    return data + _TRAILER.pack(len(data), crc32(data), _MAGIC)


def _unframed(data: bytes) -> bytes | None:
    """A chunk entry's bytes, or None if they are not what was written."""
    if len(data) < _TRAILER.size:
        return None
    length, crc, magic = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    body = data[: len(data) - _TRAILER.size]
    if magic != _MAGIC or length != len(body) or crc32(body) != crc:
        return None
    return body


def framed_size(fd: int) -> int | None:
    """The size of what a framed cache file holds, if it checks out (None: damaged).

    Reads the whole file once (its CRC-32), in blocks.
    """
    total = os.fstat(fd).st_size
    if total < _TRAILER.size:
        return None
    length, crc, magic = _TRAILER.unpack(os.pread(fd, _TRAILER.size, total - _TRAILER.size))
    if magic != _MAGIC or length != total - _TRAILER.size:
        return None
    running, offset = 0, 0
    while offset < length:
        block = os.pread(fd, min(1 << 20, length - offset), offset)
        if not block:
            return None
        running = crc32(block, running)
        offset += len(block)
    return length if running == crc else None


def content_md5(info: Mapping[str, Any]) -> str | None:
    """The MD5 of an object's content, where its listing or HEAD says it (hex).

    An S3 ETag of a single-part upload is its MD5 (32 hex digits; a multipart one
    ends in ``-N``); GCS gives ``md5Hash`` and HTTP may give ``Content-MD5`` (base64).
    """
    fields = {str(name).lower().replace("-", "").replace("_", ""): v for name, v in info.items()}
    etag = str(fields.get("etag") or "").removeprefix("W/").strip('"')
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        return etag.lower()
    for name in ("md5hash", "contentmd5"):
        value = fields.get(name)
        if isinstance(value, str) and value:
            try:
                return base64.b64decode(value, validate=True).hex()
            except ValueError:
                return None
    return None


def _entry_name(namespace: str, key: str, validator: str) -> str:
    text = f"{namespace}\0{key}\0{validator}".encode()
    return hashlib.sha256(text).hexdigest()


def _is_entry_name(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _part_name() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex}.part"


def _writer_is_dead(name: str, age: float) -> bool:
    """Whether the temporary file ``name`` (that many seconds old) has no live writer.

    Its name says the writer's host and process; a process of this host that is gone
    is dead. A writer on another host (a cache directory on a shared filesystem), or a
    name without them, is taken for dead only once the file is an hour old.
    """
    parts = name.removesuffix(".part").rsplit("-", 2)
    if len(parts) == 3 and parts[0] == _HOST and parts[1].isdigit():
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            return False
        return False
    return age > _LEFTOVER_AGE


_TOUCH_AGAIN = 0.1
"""Seconds within which a repeated touch of the same entry is skipped."""

_HELD_FILES = 8
"""Cache files an engine keeps open between reads: opening and closing a file per chunk
read took about 8% of a warm pass's CPU."""


class CacheFile:
    """A cache file open for reading: ``fd``, its ``info``; :meth:`release` when read."""

    __slots__ = ("_engine", "fd", "info", "kept", "users")

    def __init__(self, engine: _Engine, fd: int, info: os.stat_result) -> None:
        self._engine = engine
        self.fd = fd
        self.info = info
        self.users = 1
        self.kept = False
        """Among the engine's files kept open (closed when dropped and no longer read)."""

    def release(self) -> None:
        """Done reading (the file is closed unless its engine keeps it open)."""
        self._engine.release(self)


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
        self._unwritable: str | None = None
        self._unwritable_since = 0.0
        self._last_touched: tuple[str, float] | None = None
        self._held: OrderedDict[str, CacheFile] = OrderedDict()
        if setting.dir is not None:
            self._root = os.path.join(setting.dir, "shardedstore-cache-v1")
            try:
                os.makedirs(os.path.join(self._root, "tmp"), exist_ok=True)
            except OSError as error:
                self._cannot_write(error)
            else:
                self._sweep_leftovers()

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
    def unwritable(self) -> str | None:
        """Why the cache directory cannot be written now (None: it can, or there is none)."""
        return self._unwritable

    @property
    def size(self) -> int:
        """Bytes held now (on disk: as of the last scan plus what this process added)."""
        if self._root is None:
            return self._memory_bytes
        return self._scan_total() + self._memory_bytes

    @property
    def _memory_bound(self) -> int:
        if self._root is None:
            return self.setting.max_bytes
        return min(self.setting.max_bytes, _FALLBACK_BYTES)  # the directory's stand-in

    # -- reading

    def in_memory(self, entry: str) -> bytes | None:
        """The entry's bytes if this process holds them in memory (marked recently used)."""
        with self._lock:
            data = self._memory.get(entry)
            if data is not None:
                self._memory.move_to_end(entry)
                self.stats.hits += 1
            return data

    def lookup(self, entry: str, *, framed: bool = False) -> bytes | None:
        """The entry's bytes, marking it most recently used; None if absent or damaged.

        ``framed``: a chunk entry, checked against the length and CRC-32 it was written
        with (a damaged one is dropped).
        """
        data = self.in_memory(entry)
        if data is not None or self._root is None:
            return data
        path = self.path(entry)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:  # never there, or removed by another process
            return None
        except OSError:
            self.discard(entry)
            return None
        if framed:
            data = _unframed(data)
            if data is None:
                self.discard(entry)
                return None
        self._touch(path)
        with self._lock:
            self.stats.hits += 1
        return data

    def open_file(self, entry: str) -> CacheFile | None:
        """On disk: the entry's file, open, with its ``fstat`` now; None if absent.

        Read it with ``os.pread`` and hand it back with :meth:`release`. Reading never
        fails because the file is removed meanwhile (evicted by another reader, say):
        the data stays until it is closed. The last :data:`_HELD_FILES` files opened
        stay open between reads (a warm pass reads a shard's chunks one after another);
        one removed or replaced since (its link count is 0) is closed and the entry
        opened again by name, exactly as a first open would.
        """
        if self._root is None:
            return None
        path = self.path(entry)
        with self._lock:
            held = self._held.get(entry)
            if held is not None:
                self._held.move_to_end(entry)
                held.users += 1
        if held is not None:
            try:
                info = os.fstat(held.fd)
            except OSError:
                info = None
            if info is not None and info.st_nlink > 0:
                held.info = info
                self._touch(path)
                with self._lock:
                    self.stats.hits += 1
                return held
            with self._lock:  # this one, not one another thread kept meanwhile
                if self._held.get(entry) is held:
                    del self._held[entry]
                    held.kept = False
            self.release(held)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError:
            self.discard(entry)
            return None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a directory where an entry goes
            os.close(fd)
            self.discard(entry)
            return None
        self._touch(path)
        opened = CacheFile(self, fd, info)
        dropped: list[CacheFile] = []
        with self._lock:
            self.stats.hits += 1
            if entry not in self._held:  # else another thread holds one: this one closes
                opened.kept = True
                self._held[entry] = opened
                while len(self._held) > _HELD_FILES:
                    _, oldest = self._held.popitem(last=False)
                    oldest.kept = False
                    if oldest.users == 0:
                        dropped.append(oldest)
        for file in dropped:
            os.close(file.fd)
        return opened

    def release(self, file: CacheFile) -> None:
        """Hand back a file from :meth:`open_file` (closed unless it is kept open)."""
        with self._lock:
            file.users -= 1
            close = file.users == 0 and not file.kept
        if close:
            os.close(file.fd)

    def close_file(self, entry: str) -> None:
        """Stop keeping the entry's file open (closed now, or when its last reader is done)."""
        with self._lock:
            held = self._held.pop(entry, None)
            if held is None:
                return
            held.kept = False
            close = held.users == 0
        if close:
            os.close(held.fd)

    def contains(self, entry: str) -> bool:
        if entry in self._memory:
            return True
        return self._root is not None and os.path.exists(self.path(entry))

    def discard(self, entry: str) -> None:
        """Drop a damaged entry, so that it is fetched again."""
        self.close_file(entry)
        with self._lock:
            self.stats.damaged += 1
            old = self._memory.pop(entry, None)
            if old is not None:
                self._memory_bytes -= len(old)
        if self._root is not None:
            path = self.path(entry)
            with contextlib.suppress(OSError):
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)  # only if empty: nothing of anyone's is removed
                else:
                    os.unlink(path)

    def _touch(self, path: str) -> None:
        """Mark an entry used (LRU by mtime). The entry this process touched last, less
        than ``_TOUCH_AGAIN`` seconds ago and with nothing written since, is not touched
        again (a warm pass reads a shard's chunks one after another): other processes'
        touches within that time may order before it."""
        now = time.monotonic()
        with self._lock:
            if self._last_touched == (path, now // _TOUCH_AGAIN):
                return
            self._last_touched = (path, now // _TOUCH_AGAIN)
        with contextlib.suppress(OSError):  # a read-only directory: LRU by write time
            os.utime(path)

    # -- writing

    def put(self, entry: str, data: bytes, *, framed: bool = False) -> bool:
        """Add an entry (evicting least recently used ones); False if it was not kept.

        It is not kept when larger than the bound. When the directory cannot be
        written (read-only, full), it is kept in memory instead (:attr:`unwritable`).
        """
        size = len(data)
        if size > self.setting.max_bytes:
            with self._lock:
                self.stats.bypassed += 1
            return False
        if self._root is not None and self._directory_usable():
            try:
                self._write_file(entry, _framed(data) if framed else data)
            except OSError as error:
                self._cannot_write(error)
            else:
                return True
        if size > self._memory_bound:
            with self._lock:
                self.stats.bypassed += 1
            return False
        with self._lock:
            old = self._memory.pop(entry, None)
            if old is not None:
                self._memory_bytes -= len(old)
            self._memory[entry] = data
            self._memory_bytes += size
            while self._memory_bytes > self._memory_bound and len(self._memory) > 1:
                _, evicted = self._memory.popitem(last=False)
                self._memory_bytes -= len(evicted)
                self.stats.evictions += 1
        return True

    def _directory_usable(self) -> bool:
        if self._unwritable is None:
            return True
        if time.monotonic() - self._unwritable_since < _RETRY_DIRECTORY:
            return False
        try:  # it may have been fixed (space freed, permissions given)
            os.makedirs(self.path("tmp"), exist_ok=True)
        except OSError as error:
            self._cannot_write(error)
            return False
        self._unwritable = None
        return True

    def _cannot_write(self, error: OSError) -> None:
        """The directory cannot be written: keep entries in memory, and say so once."""
        reason = f"{type(error).__name__}: {error.strerror or error}"
        with self._lock:
            first = self._unwritable is None
            self._unwritable = reason
            self._unwritable_since = time.monotonic()
            self.stats.bypassed += 1
        if first:
            warnings.warn(
                f"the cache directory {self.setting.dir} cannot be written ({reason}); "
                f"reading on without it: entries are kept in memory (at most "
                f"{_FALLBACK_BYTES >> 20} MiB) until it can be written again. Give the "
                "cache a writable directory with room for max_bytes, or remove cache.dir "
                "from the layout",
                CacheWarning,
                stacklevel=2,
            )

    def _write_file(self, entry: str, data: bytes) -> None:
        assert self._root is not None
        target = self.path(entry)
        temporary = os.path.join(self._root, "tmp", _part_name())
        self._last_touched = None  # a newer entry: the next touch is not a repeat
        try:
            with open(temporary, "wb") as f:
                f.write(data)
            os.replace(temporary, target)  # atomic: readers see all of it or nothing
        except BaseException:
            with contextlib.suppress(OSError):
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

    def _sweep_leftovers(self) -> int:
        """Remove dead writers' temporary files; the bytes of live ones."""
        assert self._root is not None
        live = 0
        now = time.time()
        with contextlib.suppress(FileNotFoundError), os.scandir(self.path("tmp")) as files:
            for file in files:
                if not file.name.endswith(".part"):
                    continue
                try:
                    info = file.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if _writer_is_dead(file.name, now - info.st_mtime):
                    try:
                        os.unlink(file.path)
                    except FileNotFoundError:
                        continue
                    except OSError:
                        live += info.st_size  # cannot be removed: it still takes room
                        continue
                    with self._lock:
                        self.stats.leftovers_removed += 1
                else:
                    live += info.st_size
        return live

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
        try:
            total = sum(size for _, size, _ in self._entries_on_disk())
            total += self._sweep_leftovers()
        except OSError:
            return 0
        with self._lock:
            self._disk_bytes = total
        return total

    def _evict_files(self, keep: str) -> None:
        """Remove least recently used files until the directory is within the bound."""
        entries = sorted(self._entries_on_disk())
        total = sum(size for _, size, _ in entries) + self._sweep_leftovers()
        for _, size, path in entries:
            if total <= self.setting.max_bytes:
                break
            if os.path.basename(path) == keep:
                continue
            self.close_file(os.path.basename(path))
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
        self,
        entry: str,
        fetcher: Callable[[], Awaitable[bytes | None]],
        *,
        framed: bool = False,
    ) -> bytes | None:
        """The entry's bytes: from the cache, else from ``fetcher`` (once, however many
        callers ask at the same time), then kept."""
        data = self.lookup(entry, framed=framed)
        if data is not None:
            return data
        return await self.fetch_new(entry, fetcher, framed=framed)

    async def ensure(
        self,
        entry: str,
        fetcher: Callable[[], Awaitable[bytes | None]],
        *,
        framed: bool = False,
    ) -> bool:
        """Make sure the entry is cached (fetching it if not); False if the object is gone."""
        if self.contains(entry):
            return True
        return await self.fetch_new(entry, fetcher, framed=framed) is not None

    def pending(self, entry: str) -> bool:
        """Whether the entry is being fetched now, on this event loop."""
        return (id(asyncio.get_running_loop()), entry) in self._pending

    async def fetch_new(
        self,
        entry: str,
        fetcher: Callable[[], Awaitable[bytes | None]],
        *,
        framed: bool = False,
    ) -> bytes | None:
        """Fetch the entry (once, however many callers ask at the same time) and keep it.

        Returns the fetched bytes themselves, so a caller never depends on the entry
        still being there when it reads.
        """
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
                    self.put(entry, data, framed=framed)
                else:
                    await asyncio.to_thread(self.put, entry, data, framed=framed)
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


def object_validator(info: Mapping[str, Any]) -> str | None:
    """What identifies an object's content in a listing or HEAD answer.

    Its ETag, else its Last-Modified time (with its size), in whatever casing the
    backend reports them (``ETag``, ``etag``, ``e_tag``; ``LastModified``,
    ``Last-Modified``, ``last_modified``, ``mtime``). None when it has neither: its
    content then cannot be told from another's of the same size.
    """
    fields = {str(name).lower().replace("-", "").replace("_", ""): v for name, v in info.items()}
    etag = fields.get("etag")
    if etag:
        return f"etag:{etag}"
    size = fields.get("size", fields.get("contentlength"))
    for name in ("lastmodified", "mtime", "updated", "modified"):
        value = fields.get(name)
        if value is not None and value != "":
            return f"size:{size}:mtime:{value}"
    return None


class Listed(NamedTuple):
    """An object as its listing says it is."""

    size: int
    validator: str | None
    md5: str | None


class ObjectChanged(Exception):
    """What was fetched is not the version the listing (or HEAD) named: the object
    changed meanwhile. Internal: the caller asks again, and does not cache ``data``."""

    def __init__(self, data: bytes) -> None:
        super().__init__("changed while it was fetched")
        self.data = data


CHANGES = 3
"""Fetches of an object that keeps changing under them, before one is served uncached."""

FRESH = 1.0
"""Seconds a HEAD or a listing names the version of what is fetched right after it,
without an MD5 to check it by; an older one is asked again after the fetch."""


async def _list_objects(store: Store) -> dict[str, Listed]:
    """Every key of a remote store with its size and validator (a few LIST requests)."""
    from zarr.storage import FsspecStore

    found: dict[str, Listed] = {}
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
            found[key] = Listed(
                int(info.get("size") or 0), object_validator(info), content_md5(info)
            )
        return found
    import obstore

    async for batch in obstore.list(store.store, chunk_size=1000):  # type: ignore[attr-defined]
        for meta in batch:
            found[meta["path"]] = Listed(
                int(meta["size"]), object_validator(meta), content_md5(meta)
            )
    return found


async def _head_validator(store: Store, key: str) -> str | None:
    """The validator of one object, asked of the server (a HEAD)."""
    from zarr.storage import FsspecStore

    if isinstance(store, FsspecStore):
        path = f"{store.path.rstrip('/')}/{key}"
        store.fs.invalidate_cache(path)
        return object_validator(await store.fs._info(path))
    import obstore

    return object_validator(await obstore.head_async(store.store, key))  # type: ignore[attr-defined]


# ------------------------------------------------------------- CachedStore


class CachedStore(WrapperStore[Store]):
    """A remote directory store read chunk by chunk through a :class:`ShardCache`.

    Read-only views cache; a writable one passes everything through (what a writer
    writes is not served from a cache). The store is listed once, on first read: the
    listing gives each object's ETag (or Last-Modified and size), which names its
    entry, and says which keys are missing, so those cost no request. Keys written by
    others after that listing are seen by a new store object. An object without a
    validator is cached for this store object only. Entries are checked (length and
    CRC-32) when read; a damaged one is fetched again.

    Parameters
    ----------
    store
        The remote store (``FsspecStore`` or ``ObjectStore``).
    cache
        The cache setting.
    identity
        A name for the store's location, the same in every process (its URL and
        endpoint): the namespace of its entries.
    """

    def __init__(self, store: Store, cache: ShardCache, identity: str) -> None:
        super().__init__(store)
        self.cache = cache
        self._engine = cache_engine(cache)
        self._namespace = identity
        self._private = f"{self._namespace}\0private:{uuid.uuid4().hex}"
        self._objects: dict[str, Listed] | None = None
        self._listed_at = 0.0
        self._listing = asyncio.Lock()

    @property
    def store(self) -> Store:
        """The remote store read through the cache."""
        return self._store

    def _with_store(self, store: Store) -> Self:
        return type(self)(store, self.cache, self._namespace)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._store, self.cache, self._namespace))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CachedStore)
            and self._store == other._store
            and self.cache == other.cache
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CachedStore({self._store!r})"

    def __str__(self) -> str:
        return str(self._store)

    async def _objects_listed(self) -> dict[str, Listed]:
        if self._objects is None:
            async with self._listing:  # one listing however many chunks ask at once
                if self._objects is None:
                    self._objects = await _list_objects(self._store)
                    self._listed_at = time.monotonic()
        return self._objects

    def _entry(self, key: str, validator: str | None) -> str:
        if validator is None:  # nothing tells this content apart: this store's only
            return self._engine.entry(self._private, key, "")
        return self._engine.entry(self._namespace, key, validator)

    async def _whole(self, key: str, listed: Listed) -> bytes | None:
        """The object, checked to be the version its listing named (else ObjectChanged).

        By its MD5 where the listing gave one (an S3 ETag of a single-part upload, a
        GCS md5Hash), else by its size and, once the listing is older than
        :data:`FRESH` seconds, by asking its validator again.
        """
        buffer = await self._store.get(key, default_buffer_prototype())
        if buffer is None:
            return None
        data = buffer.to_bytes()
        if listed.md5 is not None:
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != listed.md5:
                raise ObjectChanged(data)
        elif listed.validator is not None and (
            len(data) != listed.size
            or (
                time.monotonic() - self._listed_at > FRESH
                and await _head_validator(self._store, key) != listed.validator
            )
        ):
            raise ObjectChanged(data)
        return data

    async def _relisted(self) -> None:
        """List again: an object changed since the listing this store holds."""
        async with self._listing:
            self._objects = await _list_objects(self._store)
            self._listed_at = time.monotonic()

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
            return await self._store.get(key, prototype, byte_range)
        data: bytes | None = None
        for attempt in range(CHANGES):
            listed = (await self._objects_listed()).get(key)
            if listed is None:
                return None
            if listed.size > self.cache.max_bytes or (
                byte_range is not None and listed.size > self.cache.max_bytes // _WHOLE_LIMIT_SHARE
            ):
                return await self._store.get(key, prototype, byte_range)
            try:
                data = await self._engine.fetch(
                    self._entry(key, listed.validator),
                    functools.partial(self._whole, key, listed),
                    framed=True,
                )
                break
            except ObjectChanged as changed:  # never cached under the old version's name
                data = changed.data
                if attempt < CHANGES - 1:
                    await self._relisted()
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

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> Any:
        # docstring inherited
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def prefetch(self) -> None:
        """Fetch every chunk of this store into the cache (read-ahead).

        Metadata documents are left out: a layout keeps an array's metadata in its
        base, so reading array shards through it never asks for them.
        """
        objects = await self._objects_listed()
        semaphore = asyncio.Semaphore(_FETCH_LIMIT)

        async def one(key: str, listed: Listed) -> None:
            async with semaphore:
                with contextlib.suppress(ObjectChanged):  # the read fetches it again
                    await self._engine.ensure(
                        self._entry(key, listed.validator),
                        functools.partial(self._whole, key, listed),
                        framed=True,
                    )

        await asyncio.gather(
            *(
                one(key, listed)
                for key, listed in objects.items()
                if not is_metadata_document(key) and listed.size <= self.cache.max_bytes
            )
        )

    async def exists(self, key: str) -> bool:
        # docstring inherited
        if not self.read_only:
            return await self._store.exists(key)
        return key in await self._objects_listed()

    async def getsize(self, key: str) -> int:
        # docstring inherited
        if self.read_only:
            listed = (await self._objects_listed()).get(key)
            if listed is None:
                raise FileNotFoundError(key)
            return listed.size
        return await self._store.getsize(key)


@runtime_checkable
class Cacheable(Protocol):
    """A store that reads through a cache of its own kind (a zip at a URL)."""

    def with_cache(self, cache: ShardCache) -> Store:
        """The same store reading through ``cache``."""
        ...
