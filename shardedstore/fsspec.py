"""Layouts as an fsspec filesystem: ``shardedstore::PATH_OR_URL_OF_CONFIG``.

Clients that take only a path or a URL (``zarr.open_group(url)``, ``xr.open_zarr(url)``,
``FsspecStore.from_url(url)``, ``fsspec.open``, ``fsspec.get_mapper``, kerchunk, DuckDB's
and Arrow's fsspec filesystems) reach a layout through the fsspec protocol
``shardedstore``, registered under fsspec's entry point group ``fsspec.specs``:

- ``shardedstore::ds/layout.json``: the whole hierarchy of the layout whose config is
  ``ds/layout.json``;
- ``shardedstore::s3://bucket/ds/layout.json``: the config at any fsspec URL, its
  options given under the protocol's name (``storage_options={"s3": {...}}``), as for
  every chained fsspec URL;
- ``shardedstore://group/path::ds/layout.json``: one node of the hierarchy;
- ``shardedstore::ds/layout.json/group/path``: the same, as clients write it when they
  append a key to a URL (``url + "/zarr.json"``): what follows the config's name (the
  first path component ending in ``.json``) is a node or key of the hierarchy, and the
  filesystem is rooted there.

Why chaining and not a ``shardedstore://`` scheme of its own: a layout is a filesystem
*over a file*, as ``zip::`` and ``tar::`` are, and fsspec's chaining says exactly that:
the config is reached by any fsspec filesystem with its own options, and the path
inside the hierarchy stays apart from the config's location (a scheme would have to
encode both in one path, and could not name a config at ``s3://``). zarr reads any
string with ``::`` or ``://`` through fsspec, so both forms reach zarr alike.

Listing and reading are the merged hierarchy: the filesystem is a :class:`ShardedStore`
opened from the config (read-only), so every shard is included (zips and remote ones
too), and the config's cache and read-ahead apply. A filesystem kept by a client reads
directory and object-store shards as they are, and each zip shard as it was when first
opened (a consistent snapshot while a computation runs, as every store reads zips);
``fs.invalidate_cache()`` reads the config and every shard afresh. It is an
``AsyncFileSystem``: zarr's ``FsspecStore`` awaits it directly, with no thread in
between. Its synchronous methods (``fs.cat``, ``fsspec.get_mapper``, files from
``fs.open``) run on zarr's event loop, where the stores of a layout live, never on a
second loop.

Writing is refused with :class:`ReadOnlyError`. A layout's guarantees rest on its
writer's ``close()``: zip shards are committed then, the metadata lock is held until
then, and a ``with`` block left by an exception commits nothing. fsspec has no close
(filesystems live as long as the process), so writes through it would be committed at
exit, if ever. Writers use ``shardedstore.open(CONFIG, mode="r+")``, or write a plain
Zarr and copy it in with ``shardedstore import``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal

from fsspec.asyn import AsyncFileSystem
from fsspec.spec import AbstractBufferedFile, make_instance
from fsspec.utils import stringify_path
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import _get_loop

from shardedstore.backends.handles import gather_bounded
from shardedstore.config.layout import open_layout_config
from shardedstore.errors import ArgumentError, ConfigError, KeyValidationError, ReadOnlyError
from shardedstore.store.opencheck import dims_mismatches
from shardedstore.store.sharded import ShardedStore

__all__ = ["PROTOCOL", "ShardedFile", "ShardedFileSystem"]

PROTOCOL = "shardedstore"
"""The fsspec protocol of layouts: ``shardedstore::PATH_OR_URL_OF_CONFIG``."""

_GENERIC_OPTIONS = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)
"""Options every fsspec filesystem takes (they change nothing here)."""

_LOCAL = ("file", "local")

_EMPTY = object()
"""A byte range that selects nothing (``end <= start``)."""

_BYTE_REQUESTS = (RangeByteRequest, OffsetByteRequest, SuffixByteRequest)
"""zarr's byte requests as classes: newer zarr makes ``ByteRequest`` a type alias, which
``isinstance`` does not take."""


def _config_location(fo: str, target_protocol: str | None) -> tuple[str, str]:
    """The config's absolute path or URL, and the node below it, from a chained URL's parts.

    fsspec hands over the part after ``::`` stripped of its protocol (``bucket/ds/...``
    for ``s3://bucket/ds/...``); a local path is made absolute, so that the filesystem
    means the same config in another working directory (a dask worker). What follows the
    first path component ending in ``.json`` is a node of the hierarchy
    (``ds/layout.json/people/zarr.json``), as clients write a URL with a key appended;
    a local file of that whole name is the config itself.
    """
    if fo.startswith("file://"):
        fo = fo[len("file://") :]
    remote = "://" in fo or (target_protocol is not None and target_protocol not in _LOCAL)
    config, node = fo, ""
    if remote or not os.path.isfile(fo):
        parts = fo.split("/")
        for i, part in enumerate(parts[:-1]):
            if part.endswith(".json") and (remote or os.path.isfile("/".join(parts[: i + 1]))):
                config, node = "/".join(parts[: i + 1]), "/".join(parts[i + 1 :]).strip("/")
                break
    if "://" in config:
        return config, node
    if not remote:
        return os.path.abspath(config), node
    return f"{target_protocol}://{config}", node


class ShardedFileSystem(AsyncFileSystem):  # type: ignore[misc]
    """A layout's merged hierarchy as a read-only fsspec filesystem.

    Reached by URL as ``shardedstore::PATH_OR_URL_OF_CONFIG`` (see the module
    docstring); paths are the layout's keys (``people/zarr.json``), listed and read
    from whichever shard holds them.

    Parameters
    ----------
    fo
        The layout: its config file (a local path or an fsspec URL), or a
        :class:`ShardedStore` (read through a read-only view of it).
    target_protocol, target_options
        The fsspec protocol and options of the config's location, as fsspec's URL
        chaining passes them (``shardedstore::s3://...`` with
        ``storage_options={"s3": {...}}``).
    node
        A node (or key) of the hierarchy to root the filesystem at: its paths are then
        relative to it, as ``shardedstore::ds/layout.json/people`` gives.
    mode
        Only ``"r"``: writes are refused (:class:`ReadOnlyError`).
    timeout
        Seconds to wait for a config at a URL (as for :func:`shardedstore.open`).
    asynchronous, loop
        As for every ``AsyncFileSystem``. A synchronous instance runs on zarr's event
        loop unless ``loop`` is given.

    Raises
    ------
    ArgumentError
        If no layout is given, or an option is not one of these (options of the
        config's own filesystem go under its protocol's name).
    ReadOnlyError
        If ``mode`` is not ``"r"``.
    ConfigError, FileNotFoundError
        As :func:`shardedstore.open` raises them for the config.

    Examples
    --------
    >>> import zarr, xarray as xr  # doctest: +SKIP
    >>> group = zarr.open_group("shardedstore::ds/layout.json", mode="r")  # doctest: +SKIP
    >>> ds = xr.open_zarr("shardedstore::ds/layout.json", group="simulation/fine")  # doctest: +SKIP
    >>> fs = ShardedFileSystem("ds/layout.json")  # doctest: +SKIP
    >>> fs.ls("", detail=False)  # doctest: +SKIP
    ['/people', '/simulation', '/zarr.json']
    """

    protocol: ClassVar[str | tuple[str, ...]] = PROTOCOL
    root_marker = ""
    # A layout changes (a config rewritten by convert, an array resized): every URL
    # opened reads the config afresh rather than an instance kept from earlier.
    cachable = False

    def __init__(
        self,
        fo: str | os.PathLike[str] | ShardedStore | None = None,
        *,
        target_protocol: str | None = None,
        target_options: Mapping[str, Any] | None = None,
        node: str = "",
        mode: Literal["r"] = "r",
        timeout: float | None = None,
        asynchronous: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - _GENERIC_OPTIONS)
        if unknown:
            raise ArgumentError(
                f"shardedstore:: takes no option {', '.join(map(repr, unknown))}; options of "
                "the filesystem holding the config go under its protocol's name, e.g. "
                "storage_options={'s3': {'endpoint_url': ...}} for "
                "shardedstore::s3://bucket/ds/layout.json (the stores of the layout take "
                "theirs from the config)"
            )
        if fo is None:
            raise ArgumentError(
                "shardedstore:: needs the layout's config: shardedstore::PATH_OR_URL, e.g. "
                "shardedstore::ds/layout.json or shardedstore::s3://bucket/ds/layout.json"
            )
        if not asynchronous and loop is None:
            loop = _get_loop()  # where zarr runs the layout's stores: one loop for both
        super().__init__(asynchronous=asynchronous, loop=loop, **kwargs)
        self.config: str | None = None
        """The config's absolute path or URL (None for a filesystem over a store)."""
        self.node = node.strip("/")
        """The node of the hierarchy the filesystem's root is (``""``: the whole)."""
        self._reopen = False
        if isinstance(fo, ShardedStore):
            self._refuse_mode(mode)
            store = fo if fo.read_only else fo.with_read_only(True)
            self._checked = True
        else:
            config, below = _config_location(stringify_path(fo), target_protocol)
            if os.path.isdir(config):
                found = sorted(name for name in os.listdir(config) if name.endswith(".json"))
                example = os.path.join(config, found[0] if found else "layout.json")
                raise IsADirectoryError(
                    f"{config} is a directory: shardedstore:: takes the layout's config "
                    f"file, e.g. {PROTOCOL}::{example}"
                )
            self.config = config
            self.node = "/".join(part for part in (below, self.node) if part)
            self._refuse_mode(mode)
            # zarr makes the filesystem on its own event loop, where nothing may wait for
            # that loop: the config is read here (a missing one raises here), and its
            # dims are compared with the data on first use (_ready), as open() would.
            self._target_options = dict(target_options or {}) or None
            self._timeout = timeout
            store = self._open_config()
            self._checked = False
        self.store: ShardedStore = store
        """The read-only store the filesystem reads (its cache is the config's)."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the config's absolute location (or the store itself).
        options = dict(self.storage_options)
        options.pop("target_protocol", None)
        options["fo"] = self.store if self.config is None else self.config
        options["node"] = self.node
        return make_instance, (type(self), (), options)

    def __repr__(self) -> str:
        where = repr(self.store) if self.config is None else repr(self.config)
        return f"ShardedFileSystem({where}{f', node={self.node!r}' if self.node else ''})"

    # ------------------------------------------------------------------ paths

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        # As fsspec's memory filesystem: "" is the root, every other path starts with
        # "/", which is what zarr's FsspecStore needs at the root of a filesystem.
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(stringify_path(path))
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
        text = text.split("::", 1)[0].strip("/")
        return f"/{text}" if text else ""

    def _key(self, path: str) -> str:
        """The layout's key of a path (``/people/zarr.json`` -> ``people/zarr.json``),
        below the node the filesystem is rooted at."""
        relative = str(self._strip_protocol(path)).lstrip("/")
        return "/".join(part for part in (self.node, relative) if part)

    def _path(self, key: str) -> str:
        """The path of a layout's key, relative to the filesystem's node."""
        if self.node:
            key = "" if key == self.node else key.removeprefix(f"{self.node}/")
        return f"/{key}" if key else ""

    def unstrip_protocol(self, name: str) -> str:
        """The URL of ``name`` that reaches it again: ``shardedstore://KEY::CONFIG``."""
        key = self._key(name)
        if self.config is None:
            return f"{PROTOCOL}://{key}"
        return f"{PROTOCOL}://{key}::{self.config}" if key else f"{PROTOCOL}::{self.config}"

    def _missing(self, path: str) -> FileNotFoundError:
        key = self._key(path)
        where = f"the layout {self.config}" if self.config else "the layout"
        return FileNotFoundError(
            f"{key!r} is in no store of {where}: no such key or node"
            if key
            else f"{where} is empty"
        )

    def _refuse_mode(self, mode: str) -> None:
        if mode != "r":
            raise ReadOnlyError(self._refusal(f"mode={mode!r}"))

    def _refusal(self, what: str) -> str:
        config = self.config or "CONFIG"
        return (
            f"{PROTOCOL}:: {what}: the layout's fsspec protocol is read-only, because "
            "writes through fsspec, which never closes a filesystem, could not keep the "
            "layout's guarantees (zip shards commit at close(), metadata writers hold "
            "their lock until close()). Write through the store instead: "
            f"store = shardedstore.open({config!r}, mode='r+'), then zarr or xarray on "
            "store, then store.close(); or write a plain Zarr and copy it in with "
            f"`shardedstore import SRC {config}`"
        )

    def _open_config(self) -> ShardedStore:
        assert self.config is not None
        return open_layout_config(
            self.config,
            "r",
            storage_options=self._target_options,
            timeout=self._timeout,
            check_data=False,
        )

    # ---------------------------------------------------------------- reading

    async def _ready(self) -> ShardedStore:
        """The store, once the config's dims are known to agree with the data.

        Raises
        ------
        ConfigError
            As :func:`shardedstore.open` does, at the ``dims`` field of the first array
            whose dims contradict its data.
        """
        if self._reopen:
            # The config and every shard afresh (invalidate_cache), in a thread: the
            # config may be at a URL, and this runs on zarr's event loop.
            self._reopen = False
            self.store = await asyncio.to_thread(self._open_config)
            self._checked = False
        if not self._checked:
            mismatches = await dims_mismatches(self.store)
            if mismatches:
                raise ConfigError(mismatches[0].at, mismatches[0].problem)
            self._checked = True
        return self.store

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        store = await self._ready()
        key = self._key(path)
        if not key:
            return {"name": "", "size": 0, "type": "directory"}
        if await store.exists(key):
            return {"name": self._path(key), "size": await store.getsize(key), "type": "file"}
        if not await store.is_empty(key) or await self._listed_as_directory(store, key):
            return {"name": self._path(key), "size": 0, "type": "directory"}
        raise self._missing(path)

    @staticmethod
    async def _listed_as_directory(store: ShardedStore, key: str) -> bool:
        """Whether its parent's listing names ``key``, though nothing is under it: an
        array shard that exists with its chunks deleted shows as a directory does."""
        parent, _, name = key.rpartition("/")
        return name in {found async for found in store.list_dir(parent)}

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except (FileNotFoundError, KeyValidationError):
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        store = await self._ready()
        key = self._key(path)
        names = sorted({name async for name in store.list_dir(key)})
        if not names and key:  # a file lists as itself; nothing at all is missing
            info = await self._info(path)
            if info["type"] == "directory":
                return []  # an emptied array shard
            return [info] if detail else [info["name"]]
        paths = [self._path(f"{key}/{name}" if key else name) for name in names]
        if not detail:
            return paths
        return await gather_bounded(self._info(child) for child in paths)

    async def _find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        if maxdepth is not None and maxdepth < 1:
            raise ValueError("maxdepth must be at least 1")
        store = await self._ready()
        key = self._key(path)
        prefix = f"{key}/" if key else ""
        # One merged listing of every shard below the path, not a walk directory by
        # directory.
        listed = sorted({found async for found in store.list_prefix(prefix)})
        directories: set[str] = set()
        if not listed and key and await store.exists(key):
            keys = [key]  # find on a file gives the file
        else:
            keys = [k for k in listed if maxdepth is None or k[len(prefix) :].count("/") < maxdepth]
            if withdirs and listed:
                if self._path(key):
                    directories.add(key)  # as fsspec's find: the directory itself
                for found in listed:
                    parts = found[len(prefix) :].split("/")[:-1]
                    deepest = len(parts) if maxdepth is None else min(len(parts), maxdepth)
                    directories.update(prefix + "/".join(parts[:n]) for n in range(1, deepest + 1))
        names = sorted({*keys, *directories})
        if not detail:
            return [self._path(name) for name in names]

        async def info(name: str) -> dict[str, Any]:
            if name in directories:
                return {"name": self._path(name), "size": 0, "type": "directory"}
            return {"name": self._path(name), "size": await store.getsize(name), "type": "file"}

        infos = await gather_bounded(info(name) for name in names)
        return {entry["name"]: entry for entry in infos}

    async def _byte_request(
        self, key: str, start: int | None, end: int | None
    ) -> ByteRequest | object | None:
        """fsspec's ``start``/``end`` (negative: from the end) as zarr's byte request."""
        start = start or 0
        if end is not None and (end < 0 or start < 0):
            size = await (await self._ready()).getsize(key)
            end = max(0, size + end) if end < 0 else end
            start = max(0, size + start) if start < 0 else start
        if start < 0:
            return SuffixByteRequest(-start)
        if end is None:
            return OffsetByteRequest(start) if start else None
        if end <= start:
            return _EMPTY
        return RangeByteRequest(start, end)

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        store = await self._ready()
        key = self._key(path)
        request = await self._byte_request(key, start, end)
        if request is _EMPTY:
            if not await store.exists(key):
                raise self._missing(path)
            return b""
        value = await store.get(
            key,
            default_buffer_prototype(),
            request if isinstance(request, _BYTE_REQUESTS) else None,
        )
        if value is None:
            raise self._missing(path)
        return value.to_bytes()

    async def _cat_ranges(
        self,
        paths: list[str],
        starts: int | Iterable[int | None] | None,
        ends: int | Iterable[int | None] | None,
        max_gap: int | None = None,
        batch_size: int | None = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        first = list(starts) if isinstance(starts, Iterable) else [starts] * len(paths)
        last = list(ends) if isinstance(ends, Iterable) else [ends] * len(paths)
        if not len(paths) == len(first) == len(last):
            raise ValueError("paths, starts and ends must have the same length")
        # One get_partial_values for the lot: the store groups the requests by shard
        # and keeps each byte range, so remote shards are asked for those bytes only.
        store = await self._ready()
        keys = [self._key(path) for path in paths]
        requests = await asyncio.gather(
            *(self._byte_request(k, s, e) for k, s, e in zip(keys, first, last, strict=True)),
            return_exceptions=True,
        )
        wanted = [i for i, request in enumerate(requests) if not isinstance(request, BaseException)]
        results: list[Any] = list(requests)
        fetched = [i for i in wanted if requests[i] is not _EMPTY]
        try:
            values = await store.get_partial_values(
                default_buffer_prototype(),
                [
                    (
                        keys[i],
                        request if isinstance(request := requests[i], _BYTE_REQUESTS) else None,
                    )
                    for i in fetched
                ],
            )
        except FileNotFoundError:
            # Some stores (zarr's LocalStore) raise for a missing key here rather than
            # answer None: then key by key, each missing one its own FileNotFoundError.
            for i in fetched:
                try:
                    results[i] = await self._cat_file(paths[i], first[i], last[i])
                except FileNotFoundError as error:
                    results[i] = error
        else:
            for i, value in zip(fetched, values, strict=True):
                results[i] = self._missing(paths[i]) if value is None else value.to_bytes()
        for i in wanted:
            if requests[i] is _EMPTY:
                results[i] = b"" if await store.exists(keys[i]) else self._missing(paths[i])
        if on_error != "return":
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    async def _get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
        if await self._isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        data = await self._cat_file(rpath)

        def write() -> None:
            os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
            with open(lpath, "wb") as f:
                f.write(data)

        await asyncio.to_thread(write)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ShardedFile:
        if "r" not in mode or "+" in mode:
            raise ReadOnlyError(self._refusal(f"open({path!r}, mode={mode!r})"))
        return ShardedFile(
            self,
            path,
            mode=mode,
            block_size=block_size or "default",
            cache_options=cache_options,
            **kwargs,
        )

    def invalidate_cache(self, path: str | None = None) -> None:
        """Read the layout afresh: its config, and every shard on its next read.

        Listings are never kept (every listing asks the shards), and directory and
        object-store shards are read as they are; but a zip shard is read as it was when
        first opened (a consistent snapshot while a computation runs), as every
        :class:`ShardedStore` reads it. After a writer committed, or a config was
        rewritten, this makes the next read see it. A filesystem over a store object
        (rather than a config) reads through that store, and is left as it is.

        Parameters
        ----------
        path
            Ignored: the whole layout is read afresh (as fsspec allows).
        """
        if self.config is not None:
            self._reopen = True

    # ---------------------------------------------------------------- writing

    async def _pipe_file(self, path: str, value: bytes, *args: Any, **kwargs: Any) -> None:
        raise ReadOnlyError(self._refusal(f"writing {self._key(path)!r}"))

    async def _put_file(self, lpath: str, rpath: str, *args: Any, **kwargs: Any) -> None:
        raise ReadOnlyError(self._refusal(f"writing {self._key(rpath)!r}"))

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        raise ReadOnlyError(self._refusal(f"copying to {self._key(path2)!r}"))

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        raise ReadOnlyError(self._refusal(f"deleting {self._key(path)!r}"))

    async def _rm(self, path: Any, recursive: bool = False, **kwargs: Any) -> None:
        paths = path if isinstance(path, list) else [path]
        named = ", ".join(repr(self._key(p)) if self._key(p) else "the root" for p in paths)
        raise ReadOnlyError(self._refusal(f"deleting {named}"))

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise ReadOnlyError(self._refusal(f"making directory {self._key(path)!r}"))

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        raise ReadOnlyError(self._refusal(f"making directory {self._key(path)!r}"))

    def rmdir(self, path: str) -> None:
        """Refused: the filesystem is read-only."""
        raise ReadOnlyError(self._refusal(f"removing directory {self._key(path)!r}"))


class ShardedFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of a :class:`ShardedFileSystem`, read in blocks by byte range."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self.fs.cat_file(self.path, start=start, end=end)
        return data
