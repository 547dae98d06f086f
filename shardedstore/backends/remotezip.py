"""A zip shard at a URL, read whole: one GET per shard, then every chunk is local.

A zip is one object, so the cheapest way to read a shard of it from object storage is
to fetch the object once. :class:`RemoteZipStore` asks for the object's validator (its
ETag, else Last-Modified) when it is opened, fetches the whole zip into its
:class:`ShardCache` (memory, or a directory shared between processes) under that
validator, and serves chunks from there. Without a cache setting it uses a private
in-memory one of :data:`DEFAULT_ZIP_CACHE` bytes.

What is read is checked, so that a changed object or a damaged cache entry never
gives wrong values:

- Before every download the object is asked again (one HEAD): a long-lived store
  whose entry was evicted never stores a changed object under its old validator.
- The member table (where each member's bytes lie) is parsed from the very bytes or
  file being read and kept only as long as that copy is (same bytes object, or same
  file: device, inode and size), so a changed zip is never read with the old offsets.
- Every member read is checked against the CRC-32 the zip records for it. A copy that
  fails (a damaged, truncated or empty cache file; a zip that cannot be parsed) is
  dropped and fetched again, once; if the fresh copy fails too, the read raises
  :class:`~shardedstore.CorruptDataError` naming the zip and the member.
- A cache file is read through an open descriptor, so it can be evicted (by
  read-ahead, another process) while it is read.
- A zip larger than half the cache is not fetched whole: its central directory and
  then each member are read by range, one request each, with the same checks.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Self

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from shardedstore.backends.cache import (
    CHANGES,
    FRAME_SIZE,
    FRESH,
    CacheFile,
    ObjectChanged,
    ShardCache,
    cache_engine,
    content_md5,
    framed_size,
    object_validator,
    slice_bytes,
)
from shardedstore.backends.crc import crc32
from shardedstore.backends.keys import child_names
from shardedstore.backends.timeouts import retrying, within
from shardedstore.backends.zips import enable_deflate64
from shardedstore.errors import CorruptDataError

__all__ = ["DEFAULT_ZIP_CACHE", "RemoteZipStore"]

DEFAULT_ZIP_CACHE = ShardCache(max_bytes=256 << 20)
"""The cache of a RemoteZipStore made without one: 256 MiB in memory."""

_ONE_REQUEST = 64 << 20
"""Zips up to this size are fetched with one GET; larger ones as the filesystem likes
(s3fs: parts in parallel)."""

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"

_TAIL = 66 << 10
"""Bytes read from the end of a zip read by range: its end record, a ZIP64 locator and
a comment of up to 64 KiB, and usually the whole central directory of a shard."""

_SLACK = 1024
"""Extra bytes asked for with a member read by range, for its local extra field."""


class _Member(NamedTuple):
    """Where a member lies in its zip, and what its bytes must check against."""

    header: int
    """Offset of its local header."""
    start: int
    """Offset of its data (-1 until its local header is read, in a zip read by range)."""
    compressed: int
    size: int
    method: int
    crc: int
    name_length: int
    extra_length: int
    """Length of its extra field in the central directory (the local one may differ)."""


class _Damaged(Exception):
    """A copy of the zip does not check out (internal: the copy is dropped)."""


# ----------------------------------------------------------------- whole zips


class _Held:
    """One copy of the whole zip being read: bytes in memory, or an open cache file."""

    def __init__(
        self,
        data: bytes | None = None,
        file: CacheFile | None = None,
        fresh: bool = False,
        entry: str = "",
    ):
        self.data = data
        self._file = file
        self.fresh = fresh
        """Just downloaded (not read from the cache)."""
        if file is not None:
            # A cache file: the zip, then a trailer (its length and CRC-32), checked
            # when its member table is parsed (a file of another entry, or a new file
            # of this one, is parsed anew).
            info = file.info
            self.size = max(0, info.st_size - FRAME_SIZE)
            self.identity: object = (entry, info.st_dev, info.st_ino, info.st_size)
        else:
            assert data is not None
            self.size = len(data)
            self.identity = data  # compared with `is`, and kept alive with the table

    @property
    def fd(self) -> int | None:
        """The cache file's descriptor (None: a copy in memory)."""
        return None if self._file is None else self._file.fd

    def read(self, offset: int, length: int) -> bytes | memoryview:
        if self._file is not None:
            return os.pread(self._file.fd, length, offset)
        assert self.data is not None
        return memoryview(self.data)[offset : offset + length]  # no copy

    def file(self) -> IO[bytes]:
        if self._file is not None:
            # A position of its own: the cache file may be read by other threads (and,
            # after a fork, other processes) at the same time.
            return io.BufferedReader(_Positioned(self._file.fd, self.size))
        assert self.data is not None
        return io.BytesIO(self.data)

    def same(self, identity: object) -> bool:
        return identity is self.identity if self._file is None else identity == self.identity

    def close(self) -> None:
        if self._file is not None:
            self._file.release()
            self._file = None


class _Seekable(io.RawIOBase):
    """A readable, seekable stream of ``size`` bytes (subclasses read them)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.position = 0

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        base: int = {0: 0, 1: self.position, 2: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position


class _Positioned(_Seekable):
    """The first ``size`` bytes of a descriptor, read by ``pread`` from a position of
    its own (a duplicated descriptor would share the descriptor's, and every other
    reader's of it)."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__(size)
        self.fd = fd

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.size - self.position)
        if wanted <= 0:
            return 0
        data = os.pread(self.fd, wanted, self.position)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _table(archive: zipfile.ZipFile) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        name_length = len(info.filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"))
        members[info.filename] = _Member(
            info.header_offset,
            -1,
            info.compress_size,
            info.file_size,
            info.compress_type,
            info.CRC,
            name_length,
            len(info.extra),
        )
    return members


def _parse(held: _Held) -> dict[str, _Member]:
    """The member table of a whole copy, with each member's data offset checked.

    A cache file is checked whole first (its trailer): a damaged central directory
    (a member's name, say) would otherwise read as a missing member.
    """
    enable_deflate64()
    if held.fd is not None and framed_size(held.fd) != held.size:
        raise _Damaged("does not match the checksum it was cached with")
    try:
        with held.file() as source, zipfile.ZipFile(source) as archive:
            members = _table(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, EOFError, ValueError) as e:
        raise _Damaged(f"cannot be parsed: {e}") from e
    located = {}
    for name, member in members.items():
        header = held.read(member.header, _LOCAL_HEADER.size)
        start = _data_start(member, header)
        if start + member.compressed > held.size:
            raise _Damaged(f"member {name!r} runs past the end of the zip")
        located[name] = member._replace(start=start)
    return located


def _data_start(member: _Member, header: bytes | memoryview) -> int:
    """Where a member's data starts, from its local header."""
    if len(header) < _LOCAL_HEADER.size:
        raise _Damaged("a local header is cut short")
    fields = _LOCAL_HEADER.unpack_from(header)
    if fields[0] != _LOCAL_SIGNATURE:
        raise _Damaged("a local header is not where the central directory says")
    name_length: int = fields[10]
    extra_length: int = fields[11]
    return member.header + _LOCAL_HEADER.size + name_length + extra_length


def _checked(
    member: _Member, raw: bytes | memoryview, whole: _Held | bytes | None, key: str
) -> bytes | memoryview:
    """A member's bytes, decompressed and checked against its CRC-32 and size.

    ``whole`` is what to open with :mod:`zipfile` for methods other than stored and
    deflate (bzip2, lzma, Deflate64).
    """
    if len(raw) != member.compressed:
        raise _Damaged(f"member {key!r} is cut short")
    try:
        if member.method == zipfile.ZIP_STORED:
            data = raw
        elif member.method == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(raw, -15)
        else:
            assert whole is not None
            source = whole.file() if isinstance(whole, _Held) else io.BytesIO(whole)
            with source, zipfile.ZipFile(source) as archive:
                data = archive.read(key)  # zipfile checks the CRC itself
    except (zlib.error, zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise _Damaged(f"member {key!r} cannot be decompressed: {error}") from error
    if len(data) != member.size or crc32(data) != member.crc:
        raise _Damaged(f"member {key!r} fails its CRC-32 check")
    return data


# ----------------------------------------------------------- zips by range


class _NeedRange(Exception):
    def __init__(self, offset: int, length: int) -> None:
        super().__init__(offset, length)
        self.offset, self.length = offset, length


class _Sparse(_Seekable):
    """A zip read by range: the parts fetched so far; reading elsewhere asks for more."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.parts: list[tuple[int, bytes]] = []

    def add(self, offset: int, data: bytes) -> None:
        self.parts.append((offset, data))

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        if end <= self.position:
            return b""
        for offset, data in self.parts:
            if offset <= self.position and end <= offset + len(data):
                out = data[self.position - offset : end - offset]
                self.position = end
                return out
        raise _NeedRange(self.position, end - self.position)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class _Ranged:
    """A zip read by range: its validator, central directory and member table."""

    validator: str | None
    sparse: _Sparse
    members: dict[str, _Member]


# ------------------------------------------------------------------- the store


class RemoteZipStore(Store):
    """A read-only zarr store over a zip file at a URL, fetched whole into a cache.

    Parameters
    ----------
    url
        Any fsspec URL of a zip file (``s3://bucket/t/3.zarr.zip``).
    storage_options
        fsspec options (credentials, ``endpoint_url``, ...).
    cache
        Where the zip is kept once fetched; default :data:`DEFAULT_ZIP_CACHE`.

    Raises
    ------
    FileNotFoundError
        When opened, if there is no object at ``url`` (a layout then reads the shard as
        empty).
    CorruptDataError
        When a member fails its CRC-32 check in a freshly fetched copy of the zip.
    """

    supports_writes: bool = False
    supports_deletes: bool = False
    supports_listing: bool = True

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        *,
        cache: ShardCache | None = None,
    ) -> None:
        super().__init__(read_only=True)
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.cache = cache
        self._engine = cache_engine(cache or DEFAULT_ZIP_CACHE)
        self._fs: Any = None
        self._path = ""
        self._opening = asyncio.Lock()
        self._size: int | None = None
        self._validator: str | None = None
        self._md5: str | None = None
        self._headed_at = 0.0
        self._entry: str | None = None
        self._fresh = False  # the last HEAD is not yet followed by a download
        self._table: tuple[object, dict[str, _Member]] | None = None
        self._ranged: _Ranged | None = None
        self._private = os.urandom(16).hex()  # names entries of a zip without a validator

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.url, self.storage_options, self.cache))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RemoteZipStore)
            and self.url == other.url
            and self.storage_options == other.storage_options
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RemoteZipStore({self.url!r})"

    def __str__(self) -> str:
        return f"zip+{self.url}"

    def close(self) -> None:
        # docstring inherited
        if self._entry is not None:
            self._engine.close_file(self._entry)  # kept open for the next read
        super().close()

    def with_cache(self, cache: ShardCache) -> RemoteZipStore:
        """The same zip read through ``cache``."""
        return RemoteZipStore(self.url, self.storage_options, cache=cache)

    def with_read_only(self, read_only: bool = False) -> Self:
        # docstring inherited
        if not read_only:
            raise NotImplementedError("a zip at a URL is read-only")
        return self

    # -------------------------------------------------------------- fetching

    def _filesystem(self) -> Any:
        """The filesystem, in async mode where it has one (as zarr's FsspecStore opens it)."""
        if self._fs is None:
            from fsspec.core import url_to_fs
            from fsspec.registry import get_filesystem_class

            protocol = self.url.partition("://")[0] if "://" in self.url else "file"
            options = dict(self.storage_options)
            if getattr(get_filesystem_class(protocol), "async_impl", False):
                options.setdefault("asynchronous", True)
            self._fs, self._path = url_to_fs(self.url, **options)
        return self._fs

    async def _call(self, method: str, **kwargs: Any) -> Any:
        """``fs.<method>(path, **kwargs)`` for the zip's path."""
        fs = self._filesystem()
        if getattr(fs, "async_impl", False) and getattr(fs, "asynchronous", False):
            return await getattr(fs, f"_{method}")(self._path, **kwargs)
        return await asyncio.to_thread(getattr(fs, method), self._path, **kwargs)

    async def _head(self) -> None:
        """Ask the object's validator and size; name its cache entry after them."""

        async def head() -> Any:
            # Ask the server: fsspec filesystems answer info() from earlier listings.
            self._filesystem().invalidate_cache(self._path)
            return await within(self._call("info"), "reading the zip", self.url)

        info = await retrying(head, f"reading the zip {self.url}")
        if info.get("type", "file") != "file":
            raise FileNotFoundError(self.url)
        size = info.get("size")
        self._size = size if isinstance(size, int) else None
        self._validator = object_validator(info)
        self._md5 = content_md5(info)
        self._headed_at = time.monotonic()
        # Without a validator, nothing tells this content from the next: the entry is
        # this store object's own, never found by another store or process.
        namespace = f"zip:{self.url}" if self._validator else f"zip:{self.url}:{self._private}"
        entry = self._engine.entry(namespace, "", self._validator or "")
        if self._entry is not None and self._entry != entry:
            self._engine.close_file(self._entry)  # an older version's, kept open
        self._entry = entry
        self._fresh = True

    async def _download(self) -> bytes | None:
        size = self._size

        async def get() -> Any:
            if isinstance(size, int) and 0 < size <= _ONE_REQUEST:
                # The size is known: one GET (s3fs would ask for it again first).
                return await self._call("cat_file", start=0, end=size)
            return await self._call("cat_file")  # large: s3fs fetches parts concurrently

        try:
            data = bytes(await retrying(get, f"fetching the zip {self.url}"))
        except FileNotFoundError:
            return None
        await self._check_version(data)
        return data

    async def _check_version(self, data: bytes) -> None:
        """Raise :class:`ObjectChanged` unless ``data`` is the version the last HEAD named.

        By its MD5 where the HEAD gave one (an S3 ETag of a single-part upload), else
        by its size, and by a second HEAD if the first is older than :data:`FRESH`
        seconds (what changes between a HEAD and the GET right after it cannot be told
        without an MD5, as with any HEAD-then-GET reader).
        """
        if self._md5 is not None:
            if hashlib.md5(data, usedforsecurity=False).hexdigest() != self._md5:
                raise ObjectChanged(data)
            return
        validator, size = self._validator, self._size
        if size is not None and len(data) != size:
            raise ObjectChanged(data)
        if time.monotonic() - self._headed_at > FRESH:  # asked too long ago: ask again
            await self._head()
            if (self._validator, self._size) != (validator, size):
                raise ObjectChanged(data)

    async def _range(self, start: int, end: int) -> bytes:
        async def get() -> Any:
            return await self._call("cat_file", start=start, end=end)

        return bytes(await retrying(get, f"reading the zip {self.url}"))

    async def _open(self) -> None:
        async with self._opening:  # one HEAD however many chunks ask at once
            if not self._is_open:
                await self._head()
                self._is_open = True

    @property
    def _by_range(self) -> bool:
        """Whether the zip is read by range: too large to keep whole in the cache."""
        bound = self._engine.setting.max_bytes
        return self._size is not None and self._size > bound // 2

    async def prefetch(self) -> None:
        """Fetch the whole zip into the cache (read-ahead); nothing if it does not exist."""
        try:
            await self._open()
            if self._by_range:
                await self._ranged_zip()
                return
            assert self._entry is not None
            if not self._engine.contains(self._entry):
                self._fresh = False
                await self._engine.fetch_new(self._entry, self._download, framed=True)
        except (FileNotFoundError, ObjectChanged):  # the read itself fetches it again
            return

    def _cached(self) -> _Held | None:
        assert self._entry is not None
        data = self._engine.in_memory(self._entry)
        if data is not None:
            return _Held(data=data)
        file = self._engine.open_file(self._entry)
        return None if file is None else _Held(file=file, entry=self._entry)

    async def _held(self) -> _Held:
        """A copy of the whole zip: cached, else downloaded (and kept in the cache)."""
        if not self._is_open:
            await self._open()
        held = self._cached()
        if held is not None:
            self._fresh = False  # what was asked is cached: the next download asks again
            return held
        assert self._entry is not None
        for attempt in range(CHANGES):
            if not self._fresh and not self._engine.pending(self._entry):
                # Not cached (evicted, or dropped as damaged): the object may have
                # changed since it was asked, and must not be kept under its old name.
                await self._head()
                held = self._cached()
                if held is not None:
                    return held
            self._fresh = False
            try:
                data = await self._engine.fetch_new(self._entry, self._download, framed=True)
            except ObjectChanged as changed:
                if attempt == CHANGES - 1:  # changing all the time: a version, uncached
                    return _Held(data=changed.data, fresh=True)
                continue
            if data is None:
                raise FileNotFoundError(self.url)
            # The copy just kept, if any: its member table serves every later read
            # (parsing the downloaded bytes too would parse the zip twice).
            held = self._cached()
            if held is not None:
                return held
            return _Held(data=data, fresh=True)
        raise AssertionError("unreachable")

    def _members_of(self, held: _Held) -> dict[str, _Member]:
        if self._table is not None and held.same(self._table[0]):
            return self._table[1]
        members = _parse(held)
        self._table = (held.identity, members)
        return members

    def _damaged(self, held: _Held | None, damage: _Damaged, key: str, last: bool) -> None:
        """Drop a copy that does not check out; raise if it was the last try."""
        self._table = None
        self._ranged = None
        if held is not None and not held.fresh:
            assert self._entry is not None
            self._engine.discard(self._entry)
        if last:
            raise CorruptDataError(
                f"zip shard {self.url}: {damage} (key {key!r}), also when fetched again: "
                "the object itself is damaged; write the shard again or restore it"
            ) from damage

    # --------------------------------------------------------------- reading

    async def _read(self, key: str) -> bytes | memoryview | None:
        """A member's bytes, checked; None if the zip has no such member."""
        if not self._is_open:
            await self._open()
        if self._by_range:
            return await self._read_by_range(key)
        for attempt in range(2):
            held = await self._held()
            try:
                member = self._members_of(held).get(key)
                if member is None:
                    return None
                raw = held.read(member.start, member.compressed)
                return _checked(member, raw, held, key)
            except _Damaged as damage:
                self._damaged(held, damage, key, last=attempt == 1)
            finally:
                held.close()
        raise AssertionError("unreachable")

    async def _members(self) -> dict[str, _Member]:
        if not self._is_open:
            await self._open()
        if self._by_range:
            return (await self._ranged_zip()).members
        for attempt in range(2):
            held = await self._held()
            try:
                return self._members_of(held)
            except _Damaged as damage:
                self._damaged(held, damage, "", last=attempt == 1)
            finally:
                held.close()
        raise AssertionError("unreachable")

    async def _ranged_zip(self) -> _Ranged:
        """The central directory of a zip read by range (a few requests, once)."""
        if self._ranged is not None and self._ranged.validator == self._validator:
            return self._ranged
        size = self._size
        assert size is not None
        sparse = _Sparse(size)
        tail = min(size, _TAIL)
        sparse.add(size - tail, await self._range(size - tail, size))
        for _ in range(4):  # the end record, then the directory, then a ZIP64 record
            try:
                sparse.seek(0)
                with zipfile.ZipFile(sparse) as archive:
                    members = _table(archive)
                break
            except _NeedRange as need:
                sparse.add(need.offset, await self._range(need.offset, need.offset + need.length))
            except (zipfile.BadZipFile, zipfile.LargeZipFile, struct.error, ValueError) as e:
                raise CorruptDataError(f"zip shard {self.url}: cannot be parsed: {e}") from e
        else:
            raise CorruptDataError(f"zip shard {self.url}: its central directory is scattered")
        self._ranged = _Ranged(self._validator, sparse, members)
        return self._ranged

    async def _read_by_range(self, key: str) -> bytes | memoryview | None:
        for attempt in range(2):
            ranged = await self._ranged_zip()
            member = ranged.members.get(key)
            if member is None:
                return None
            try:
                # The local header, its name and extra field, and the data, at once.
                end = min(
                    ranged.sparse.size,
                    member.header
                    + _LOCAL_HEADER.size
                    + member.name_length
                    + member.extra_length
                    + member.compressed
                    + _SLACK,
                )
                part = await self._range(member.header, end)
                start = _data_start(member, part[: _LOCAL_HEADER.size])
                stop = start + member.compressed
                if stop > member.header + len(part):
                    part += await self._range(member.header + len(part), stop)
                raw = part[start - member.header : stop - member.header]
                whole: bytes | None = None
                if member.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    whole = await self._range(0, ranged.sparse.size)
                return _checked(member, raw, whole, key)
            except _Damaged as damage:
                # Changed since its directory was read, or damaged: ask again, once.
                self._damaged(None, damage, key, last=attempt == 1)
                await self._head()
        raise AssertionError("unreachable")

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if prototype is None:
            prototype = default_buffer_prototype()
        data = await self._read(key)
        if data is None:
            return None
        return prototype.buffer.from_bytes(slice_bytes(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        # docstring inherited
        return [await self.get(key, prototype, rng) for key, rng in key_ranges]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return key in await self._members()

    async def getsize(self, key: str) -> int:
        # docstring inherited
        member = (await self._members()).get(key)
        if member is None:
            raise FileNotFoundError(key)
        return member.size

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in list(await self._members()):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in list(await self._members()):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for name in child_names(list(await self._members()), prefix):
            yield name

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        raise PermissionError(
            f"{self.url} is a zip at a URL, which is read-only; write a local zip or a "
            "directory and upload it (shardedstore convert LAYOUT --to url)"
        )

    async def delete(self, key: str) -> None:
        # docstring inherited
        await self.set(key, default_buffer_prototype().buffer.from_bytes(b""))


def _rebuild(url: str, storage_options: dict[str, Any], cache: ShardCache | None) -> RemoteZipStore:
    return RemoteZipStore(url, storage_options, cache=cache)
