"""A zip shard at a URL, read whole: one GET per shard, then every chunk is local.

A zip is one object, so the cheapest way to read a shard of it from object storage is
to fetch the object once. :class:`RemoteZipStore` asks for the object's ETag (or size
and mtime) when it is opened, fetches the whole zip into its :class:`ShardCache`
(memory, or a directory shared between processes) under that validator, and serves
chunks from there. Without a cache setting it uses a private in-memory one of
:data:`DEFAULT_ZIP_CACHE` bytes.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Self

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype

from shardedstore._cache import ShardCache, _validator, cache_engine, slice_bytes
from shardedstore._timeouts import retrying, within
from shardedstore._zip import enable_deflate64

__all__ = ["DEFAULT_ZIP_CACHE", "RemoteZipStore"]

DEFAULT_ZIP_CACHE = ShardCache(max_bytes=256 << 20)
"""The cache of a RemoteZipStore made without one: 256 MiB in memory."""

_ONE_REQUEST = 64 << 20
"""Zips up to this size are fetched with one GET; larger ones as the filesystem likes
(s3fs: parts in parallel)."""

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")

Member = tuple[int, int, int, int]
"""A member's data offset, compressed size, size and compression method."""


def _members(source: Any) -> dict[str, Member]:
    """Where each member's data lies in a zip (a path or a binary file object)."""
    enable_deflate64()
    members: dict[str, Member] = {}
    with zipfile.ZipFile(source) as archive:
        handle = archive.fp
        assert handle is not None
        for info in archive.infolist():
            if info.is_dir():
                continue
            handle.seek(info.header_offset)
            header = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
            start = info.header_offset + _LOCAL_HEADER.size + header[10] + header[11]
            members[info.filename] = (start, info.compress_size, info.file_size, info.compress_type)
    return members


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
        self._entry: str | None = None
        self._members: dict[str, Member] | None = None
        self._opening = asyncio.Lock()
        self._size: int | None = None

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

    async def _head(self) -> str:
        async def head() -> Any:
            # Ask the server: fsspec filesystems answer info() from earlier listings.
            self._filesystem().invalidate_cache(self._path)
            return await within(self._call("info"), "reading the zip", self.url)

        info = await retrying(head, f"reading the zip {self.url}")
        if info.get("type", "file") != "file":
            raise FileNotFoundError(self.url)
        self._size = info.get("size")
        return _validator(info)

    async def _download(self) -> bytes | None:
        size = self._size

        async def get() -> Any:
            if isinstance(size, int) and 0 < size <= _ONE_REQUEST:
                # The size is known: one GET (s3fs would ask for it again first).
                return await self._call("cat_file", start=0, end=size)
            return await self._call("cat_file")  # large: s3fs fetches parts concurrently

        try:
            data = await retrying(get, f"fetching the zip {self.url}")
        except FileNotFoundError:
            return None
        return bytes(data)

    async def _open(self) -> None:
        async with self._opening:  # one HEAD however many chunks ask at once
            if not self._is_open:
                await self._validate()
                self._is_open = True

    async def _validate(self) -> None:
        validator = await self._head()
        self._entry = self._engine.entry(f"zip:{self.url}", "", validator)

    async def prefetch(self) -> None:
        """Fetch the whole zip into the cache (read-ahead); nothing if it does not exist."""
        try:
            await self._open()
        except FileNotFoundError:
            return
        assert self._entry is not None
        await self._engine.ensure(self._entry, self._download)

    async def _source(self) -> bytes | str:
        """The zip's bytes (memory cache) or local file (directory cache)."""
        if not self._is_open:
            await self._open()
        entry = self._entry
        assert entry is not None
        engine = self._engine
        if engine.on_disk:
            path = engine.lookup_file(entry)
            if path is None:
                await engine.ensure(entry, self._download)
                path = engine.lookup_file(entry)
            if path is None:
                raise FileNotFoundError(f"{self.url} (removed while it was read)")
            return path
        data = await engine.fetch(entry, self._download)
        if data is None:
            raise FileNotFoundError(self.url)
        return data

    async def _index(self, source: bytes | str) -> dict[str, Member]:
        if self._members is None:
            if isinstance(source, str):
                self._members = await asyncio.to_thread(_members, source)
            else:
                self._members = _members(io.BytesIO(source))
        return self._members

    # --------------------------------------------------------------- reading

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if prototype is None:
            prototype = default_buffer_prototype()
        source = await self._source()
        member = (await self._index(source)).get(key)
        if member is None:
            return None
        start, compressed, _size, method = member
        data: bytes | memoryview
        if isinstance(source, str):
            data = _read_file(source, start, compressed)
        else:
            data = memoryview(source)[start : start + compressed]
        if method == zipfile.ZIP_DEFLATED:
            data = zlib.decompress(data, -15)
        elif method != zipfile.ZIP_STORED:
            data = _read_member(source, key)
        return prototype.buffer.from_bytes(slice_bytes(data, byte_range))

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        # docstring inherited
        return [await self.get(key, prototype, rng) for key, rng in key_ranges]

    async def _keys(self) -> list[str]:
        return list(await self._index(await self._source()))

    async def exists(self, key: str) -> bool:
        # docstring inherited
        return key in await self._index(await self._source())

    async def getsize(self, key: str) -> int:
        # docstring inherited
        member = (await self._index(await self._source())).get(key)
        if member is None:
            raise FileNotFoundError(key)
        return member[2]

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in await self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in await self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        prefix = prefix.rstrip("/")
        start = f"{prefix}/" if prefix else ""
        seen: set[str] = set()
        for key in await self._keys():
            if key.startswith(start):
                name = key[len(start) :].split("/", 1)[0]
                if name not in seen:
                    seen.add(name)
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


def _read_file(path: str, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, start)


def _read_member(source: bytes | str, name: str) -> bytes:
    """A member compressed with a method other than deflate (bzip2, lzma, Deflate64)."""
    opened = source if isinstance(source, str) else io.BytesIO(source)
    with zipfile.ZipFile(opened) as archive:
        return archive.read(name)


def _rebuild(url: str, storage_options: dict[str, Any], cache: ShardCache | None) -> RemoteZipStore:
    return RemoteZipStore(url, storage_options, cache=cache)
