"""ShardedStore: one Zarr hierarchy served from many stores."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import stat
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeGuard, TypeVar, cast

from zarr.abc.store import ByteRequest, Store, SupportsSyncStore
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, ZipStore

from shardedstore.backends.cache import Cacheable, CachedStore, ShardCache
from shardedstore.backends.documents import DocumentVersions, is_metadata_document
from shardedstore.backends.handles import collect, gather_bounded, opened, read_only_view
from shardedstore.backends.localwrite import create_store, put
from shardedstore.backends.oserrors import without_temporary_names
from shardedstore.backends.registry import facts_of, same_store
from shardedstore.backends.zips import ZipReference, copy_on_write, enable_deflate64
from shardedstore.backends.zipstore import CommitGroup, CopyOnWriteZipStore, finish_group
from shardedstore.errors import CommitError, ConflictError, KeyValidationError, LayoutError
from shardedstore.store.factories import (
    ArrayShardSpec,
    ListableArrayShardFactory,
    factory_supports_sync,
    make_array_shard,
)
from shardedstore.store.inline import LONG_WAIT, Latency, inline_capable
from shardedstore.store.locations import check_layout, first_link_below, layout_checked
from shardedstore.store.metadata import (
    JSON,
    ShardedArrayLayout,
    parse_metadata_document,
    sharded_array_layout,
)
from shardedstore.store.parts import LayoutParts
from shardedstore.store.readahead import ReadAhead
from shardedstore.store.routing import (
    ARRAY_METADATA,
    BASE,
    CHUNK,
    MOUNT,
    ROOT_PREFIX,
    Router,
    outer_chunk_key,
    select_shards,
    validate_prefix,
)

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from shardedstore.shards.listing import Shard
    from shardedstore.store.mapping import StoreMapping

__all__ = ["ShardedStore"]


_ARRAY_DOC_NAMES = ("zarr.json", ".zarray", ".zattrs")


def _check_buffer(value: object) -> None:
    if not isinstance(value, Buffer):
        raise TypeError(
            f"ShardedStore.set(): `value` must be a Buffer instance. "
            f"Got an instance of {type(value)} instead."
        )


_INLINE_TYPES: dict[type, bool] = {}

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="ShardedStore")


def _failure_key(method: Callable[..., Any], key: str) -> str:
    """The key a write is tracked by: a ``delete_dir`` prefix ends with ``/`` ("": all)."""
    if method.__name__ != "delete_dir":
        return key
    return "" if key in ("", "/") else key.rstrip("/") + "/"


def _public(store: ShardedStore, key: str, error: BaseException) -> BaseException:
    """``error`` naming the key and its final place, never a temporary file."""
    if not isinstance(error, OSError):
        return error
    try:
        name: str | None = store.inner_key(key).rpartition("/")[2]
    except ValueError:
        name = None
    return without_temporary_names(error, key=key, name=name)


def _write_method(
    method: Callable[Concatenate[S, str, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, str, P], Coroutine[Any, Any, R]]:
    """A write method whose outcome is tracked per key (see ``CommitGroup``), and
    whose errors name the key written, not a temporary file.

    A failure is remembered until a later write or delete of the same key succeeds;
    ``close()`` and exit commit nothing while one is remembered.
    """

    @functools.wraps(method)
    async def wrapper(self: S, key: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        tracked = _failure_key(method, key)
        try:
            result = await method(self, key, *args, **kwargs)
        except BaseException as error:
            self._group.write_failed(tracked, error)
            public = _public(self, key, error)
            if public is error:
                raise
            raise public from None
        self._group.write_succeeded(tracked, prefix=method.__name__ == "delete_dir")
        return result

    return wrapper


def _write_method_sync(
    method: Callable[Concatenate[S, str, P], R],
) -> Callable[Concatenate[S, str, P], R]:
    """:func:`_write_method` for the sync protocol methods."""

    @functools.wraps(method)
    def wrapper(self: S, key: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = method(self, key, *args, **kwargs)
        except BaseException as error:
            self._group.write_failed(key, error)
            public = _public(self, key, error)
            if public is error:
                raise
            raise public from None
        self._group.write_succeeded(key)
        return result

    return wrapper


_FOLDERS_KEPT = 65_536
"""Folders of base and mounts a store keeps as resolved (see _check_folder_confined)."""

_ONE_CALL_CREATION = (LocalStore, MemoryStore)
"""Stores whose new array shards are opened and given their metadata in one call: those
whose ``set_sync`` opens them and writes at once (no staging to commit, as zips have)."""


def _puts(store: Store) -> TypeGuard[LocalStore]:
    """Whether keys of ``store`` are written with ``localwrite.put``."""
    return type(store) is LocalStore and not store.read_only


def _writer(store: Store, key: str, value: Buffer) -> Callable[[], None]:
    """The blocking write of ``value`` to ``key`` of a store that supports ``set_sync``.

    For exactly zarr's ``LocalStore``, writable, the same atomic write with fewer
    system calls (``localwrite.put``, which makes the store's folder if need be, as
    opening it would).
    """
    if _puts(store):
        return functools.partial(put, str(store.root), key, value.as_buffer_like())
    return functools.partial(cast("SupportsSyncStore", store).set_sync, key, value)


async def _settled(waits: Iterable[Awaitable[object]]) -> None:
    """Await every one of ``waits``, then raise the first failure: none is left running."""
    for outcome in await asyncio.gather(*waits, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _inline_capable(store: Store) -> bool:
    """:func:`inline_capable`, cached by type (protocol checks are slow)."""
    kind = type(store)
    capable = _INLINE_TYPES.get(kind)
    if capable is None:
        capable = _INLINE_TYPES[kind] = inline_capable(store)
    return capable


def _listed(lister: Callable[[], Iterable[str] | None]) -> list[str] | None:
    result = lister()
    return None if result is None else list(result)


def _supports_sync(
    base: Store, mounts: Mapping[str, Store], arrays: Mapping[str, ArrayShardSpec]
) -> bool:
    return (
        isinstance(copy_on_write(base), SupportsSyncStore)
        and all(isinstance(copy_on_write(store), SupportsSyncStore) for store in mounts.values())
        and all(
            isinstance(spec, tuple) and len(spec) == 2 and factory_supports_sync(spec[1])
            for spec in arrays.values()
        )
    )


def _a_store(what: str, value: object) -> Store:
    """``value``, a zarr store (a zip as a copy-on-write zip), or a LayoutError."""
    if not isinstance(value, Store):
        raise LayoutError(
            f"{what}: expected a zarr store (zarr.abc.store.Store), got {type(value).__name__}; "
            "wrap a path in zarr.storage.LocalStore(path)"
        )
    return copy_on_write(value)


def _index_order(index: str) -> tuple[int, ...]:
    return tuple(int(part) for part in index.split("."))


def _through_cache(store: Store, cache: ShardCache) -> Store:
    """``store`` reading through ``cache``: remote zips and remote directories are; any
    other store (local disk, memory, a zip file) is returned as it is.

    A directory over plain HTTP is read without the cache: HTTP has no listing to give
    each object's validator (a zip over HTTP is cached: its HEAD gives them).
    """
    if isinstance(store, Cacheable):
        return store.with_cache(cache)
    facts = facts_of(store)
    listable = facts.place is not None and not facts.place[1].startswith(("http://", "https://"))
    if isinstance(store, CachedStore) or not facts.remote or not listable:
        return store
    return CachedStore(store, cache, facts.identity)


def _merge_document(docs: Mapping[str, JSON], name: str, doc: JSON) -> dict[str, JSON]:
    """An array's metadata documents with ``name`` replaced by ``doc``."""
    merged = dict(docs)
    merged[name] = doc
    if name == "zarr.json":  # a v3 array replaces any v2 metadata
        merged.pop(".zarray", None)
        merged.pop(".zattrs", None)
    return merged


def _rebuild(
    base: Store | ZipReference,
    mounts: dict[str, Store | ZipReference],
    arrays: dict[str, ArrayShardSpec],
    read_only: bool,
    cache: ShardCache | None = None,
    confined_to: str | None = None,
) -> ShardedStore:
    with layout_checked():  # where it was pickled
        store = ShardedStore(
            ZipReference.store(base),
            {path: ZipReference.store(mount) for path, mount in mounts.items()},
            arrays,
            read_only=read_only,
            cache=cache,
        )
    store._refuse_zip_writes()
    store._confined_to = confined_to  # a copy in a dask worker writes where this may
    return store


class ShardedStore(Store):
    """A Zarr store that spreads one hierarchy over many stores.

    Keys below a *mount* path go to that mount's store with the path stripped, so each
    mount is a standalone Zarr node. Chunks of an *array-sharded* array go to one store
    per index along its first ``dims`` dimensions, each holding valid metadata for its
    sub-array; the array's own metadata stays in ``base``. Everything else is in
    ``base``. Routing is pure and costs O(key depth), whatever the number of mounts.

    Parameters
    ----------
    base
        Store for every key that is not mounted or array-sharded.
    shards
        Mounts: node path (a group or an array) -> store.
    array_shard_funcs
        Array shards: array path -> ``(dims, factory)``, where ``factory(chunk_index)``
        returns the store of one array shard (see :func:`array_shard_directory_store`).
        Shards are created lazily, on the first chunk written to them.
    read_only
        Refuse writes. Sub-stores are used through read-only views.
    cache
        Cache remote shards (zips at a URL whole, remote directories chunk by chunk)
        and read array shards ahead; see :class:`ShardCache`. Local stores are read
        directly.

    Raises
    ------
    LayoutError
        If a path is invalid, a mount or array-shard path lies inside another, a
        sub-store or factory has the wrong type, or two stores of the layout share a
        location or lie one inside the other (the message names both; see
        ``docs/config.md``, "Stores never overlap").

    Examples
    --------
    >>> from zarr.storage import MemoryStore
    >>> store = ShardedStore(MemoryStore(), {"people": MemoryStore()})
    >>> import zarr
    >>> group = zarr.open_group(store, mode="w")
    >>> _ = group.create_array("people/heights", shape=(2,), dtype="f8")
    >>> sorted(store.mounts["people"]._store_dict)  # the group "people" and its array
    ['heights/zarr.json', 'zarr.json']
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __new__(
        cls,
        base: Store,
        shards: Mapping[str, Store] | None = None,
        array_shard_funcs: Mapping[str, ArrayShardSpec] | None = None,
        *,
        read_only: bool = False,
        cache: ShardCache | None = None,
    ) -> ShardedStore:
        # Offer zarr's sync protocols exactly when every sub-store supports them.
        if cls is ShardedStore and _supports_sync(base, shards or {}, array_shard_funcs or {}):
            cls = _SyncShardedStore
        return super().__new__(cls)

    def __init__(
        self,
        base: Store,
        shards: Mapping[str, Store] | None = None,
        array_shard_funcs: Mapping[str, ArrayShardSpec] | None = None,
        *,
        read_only: bool = False,
        cache: ShardCache | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        base = _a_store("base", base)
        mounts = {
            path: _a_store(f"mount {path!r}", store) for path, store in (shards or {}).items()
        }
        arrays: dict[str, ArrayShardSpec] = {}
        for path, spec in (array_shard_funcs or {}).items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and callable(spec[1])):
                raise LayoutError(
                    f"array shard {path!r}: expected (dims, factory) with factory(chunk_index) "
                    f"-> Store, got {spec!r}; e.g. (1, array_shard_directory_store('shards'))"
                )
            arrays[path] = spec
        self._router = Router(mounts, {path: dims for path, (dims, _) in arrays.items()})
        check_layout(base, mounts, arrays)
        if any(isinstance(store, ZipStore) for store in (base, *mounts.values())):
            enable_deflate64()
        # The stores as given describe the layout (config, equality, pickling); the
        # ones used for I/O are read-only views of them when the store is read-only.
        self._given = (base, dict(mounts))
        if read_only:
            base = read_only_view(base)
            mounts = {path: read_only_view(store) for path, store in mounts.items()}
        # Remote shards read through the cache, and ahead along the sharded dims.
        self._cache = cache
        self._read_ahead: ReadAhead | None = None
        if cache is not None:
            base = _through_cache(base, cache)
            mounts = {path: _through_cache(store, cache) for path, store in mounts.items()}
            if cache.read_ahead:
                self._read_ahead = ReadAhead(
                    cache.read_ahead, self._shard_reader, self._sharded_shape
                )
        self._base = base
        self._mounts = mounts
        self._arrays = arrays
        self._factories = {path: factory for path, (_, factory) in arrays.items()}
        # Array shards: stores made so far, read views of shards not written in this
        # session (reading must not create a shard), and shards written this session.
        self._shard_stores: dict[tuple[str, str], Store] = {}
        self._shard_readers: dict[tuple[str, str], Store] = {}
        self._written: set[tuple[str, str]] = set()
        # Shards whose metadata is being written: concurrent first writes wait for one.
        self._creating: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._created: dict[str, set[str]] = {path: set() for path in arrays}
        # Parsed metadata of array-sharded arrays, as read from or written to base.
        self._array_docs: dict[str, dict[str, JSON]] = {}
        self._array_layouts: dict[str, ShardedArrayLayout | None] = {}
        # Set in a copy unpickled in another process (a dask worker): see below.
        self._zip_refusal: str | None = None
        self._pid = os.getpid()
        # The zips this store commits together and the writes that failed (see
        # close()); what it read of metadata documents in directories (compare-and-swap).
        self._group = CommitGroup()
        self._documents = DocumentVersions()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        if not read_only:
            # Dropped or left open at exit: commit as close() would, or warn.
            self._finalizer = weakref.finalize(self, finish_group, self._group, self._documents)
            for store in (base, *mounts.values()):
                if isinstance(store, CopyOnWriteZipStore):
                    store.join(self._group, last=store is base)
        # Why writes are refused: a with block discarded this store's changes; and
        # the metadata documents it wrote back then.
        self._discarded: str | None = None
        self._restored: list[str] = []
        # The store this one is a with_read_only view of, if any.
        self._origin: ShardedStore | None = None
        # Set for layouts opened from a config for writing: no array shard may be
        # written outside this folder (after symlinks), see _check_confined.
        self._confined_to: str | None = None
        # While stores_for_write makes the stores of one request: each folder that holds
        # array shards, resolved once for all of them (see _real_location).
        self._resolved: dict[str, str] | None = None
        # Array shards checked against the config's folder (see _check_confined), and
        # folders of base and mounts (see _check_folder_confined).
        self._confined_checked: set[tuple[str, str]] = set()
        self._folders_inside: set[str] = set()
        self._directory_roots: dict[int, str | None] = {}
        # Per-call time of each group of sub-stores: inline or threaded I/O.
        self._latencies: dict[tuple[str, bool], Latency] = {}

    # ------------------------------------------------------------------ layout

    @property
    def base(self) -> Store:
        """The store holding every key that is not mounted or array-sharded."""
        return self._base

    @property
    def cache(self) -> ShardCache | None:
        """How remote shards are cached and read ahead (None: they are not)."""
        return self._cache

    @property
    def mounts(self) -> Mapping[str, Store]:
        """Node path -> mounted store."""
        return dict(self._mounts)

    @property
    def array_shards(self) -> Mapping[str, ArrayShardSpec]:
        """Array path -> ``(dims, factory)``."""
        return dict(self._arrays)

    @property
    def parts(self) -> LayoutParts:
        """The stores of the layout as given, which its config describes (not the
        read-only views and cache wrappers it reads through)."""
        base, mounts = self._given
        return LayoutParts(base, mounts, self._arrays)

    @property
    def router(self) -> Router:
        """Which store holds a key (pure: no I/O)."""
        return self._router

    def inner_key(self, key: str) -> str:
        """The key inside the sub-store that holds ``key`` (``t/c/3/0`` -> ``c/0``)."""
        return self._router.route(key)[3]

    def confine_to(self, folder: str) -> None:
        """Refuse to write array shards whose real location is outside ``folder`` (or
        that hold symlinks), here and in the layouts mounted in this one."""
        self._confined_to = os.path.realpath(folder)
        base, mounts = self._given
        for store in (base, *mounts.values()):
            if isinstance(store, ShardedStore):
                store.confine_to(folder)

    @property
    def supports_consolidated_metadata(self) -> bool:
        """Whether zarr may consolidate metadata here: as the base says.

        Consolidated metadata lives in the root ``zarr.json``, which is in the base.
        """
        return self._base.supports_consolidated_metadata

    def __reduce__(self) -> tuple[Any, ...]:
        base, mounts = self._given
        return (
            _rebuild,
            (
                ZipReference.of(base),
                {path: ZipReference.of(mount) for path, mount in mounts.items()},
                self._arrays,
                self.read_only,
                self._cache,
                self._confined_to,
            ),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShardedStore) or self._arrays != other._arrays:
            return False
        (base, mounts), (other_base, other_mounts) = self._given, other._given
        return (
            same_store(base, other_base)
            and mounts.keys() == other_mounts.keys()
            and all(same_store(store, other_mounts[path]) for path, store in mounts.items())
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"ShardedStore(base={self._base!r}, mounts={sorted(self._mounts)!r}, "
            f"array_shards={sorted(self._arrays)!r})"
        )

    def __str__(self) -> str:
        return f"sharded://{self._base}"

    def with_read_only(self, read_only: bool = False) -> ShardedStore:
        # docstring inherited
        with layout_checked():  # the same layout as self, checked when self was made
            view = ShardedStore(*self._given, self._arrays, read_only=read_only, cache=self._cache)
        # A view reads this store's own writes (array shards it has written, zips not
        # committed yet) and never closes, so never commits, the stores it shares. What
        # it reads counts as read by the writer, whose commit group it shares.
        origin = self._origin or self
        view._origin = origin
        view._confined_to = self._confined_to
        view._documents = origin._documents
        if not origin.read_only:
            if view._finalizer is not None:
                view._finalizer.detach()
                view._finalizer = None
            view._group = origin._group
        return view

    # ------------------------------------------------------------------ config

    def get_config(self, *, relative_to: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The layout as a JSON-serializable dict (format documented in ``docs/config.md``).

        The config names each store by a registered type (``local``, ``zip``,
        ``fsspec``, ``obstore``, ``sharded`` or a plugin) and describes array shards by
        a path template, so its size does not depend on the number of shards.

        Parameters
        ----------
        relative_to
            Write local paths relative to this directory (or URLs below this URL
            relative to it), e.g. the directory the config will be saved in. By
            default paths are written as the stores hold them.

        Returns
        -------
        dict
            ``{"format": "shardedstore", "version": 1, "base": ..., "mounts": ...,
            "array_shards": ...}``; ``ShardedStore.from_config(config) == self``.

        Raises
        ------
        ConfigError
            If a store cannot be described (a ``MemoryStore``, an unregistered store
            type, a plain-function array-shard factory); the message names it.

        Examples
        --------
        >>> from zarr.storage import LocalStore
        >>> store = ShardedStore(LocalStore("base.zarr"), {"people": LocalStore("p.zarr")})
        >>> store.get_config()["mounts"]
        {'people': {'type': 'local', 'root': 'p.zarr'}}
        """
        from shardedstore.config.layout import layout_config

        return layout_config(self, relative_to=relative_to)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        base_path: str | os.PathLike[str] | None = None,
        read_only: bool | None = None,
        allow_outside: bool = False,
    ) -> ShardedStore:
        """Rebuild a store from :meth:`get_config` output (or a shardedstore 0.3.x config).

        The config is validated against the shipped JSON Schema and may only name
        registered store types; nothing it names is imported or called.

        Parameters
        ----------
        config
            The config, as parsed from JSON.
        base_path
            Directory (or URL) that relative paths in the config resolve against;
            by default they stay relative to the working directory.
            :func:`shardedstore.open` passes the config file's directory.
        read_only
            Open read-only. Default: False, except for 0.3.x configs, which always
            open read-only (asking for ``read_only=False`` raises).
        allow_outside
            When opening for writing with a ``base_path``, let the config name
            locations outside that folder (absolute paths, ``..``, symlinks out, other
            URLs). Off by default: writing through a config must not touch data
            elsewhere. Reading never needs it.

        Returns
        -------
        ShardedStore

        Raises
        ------
        ConfigError
            If the config is invalid; the message starts with the JSON path of the
            bad field (``mounts.people.type: unknown store type 'foo'; known: ...``).
            Also if two of its stores overlap, if it is opened for writing with a
            ``base_path`` and names a location outside it without ``allow_outside``,
            or if an array's ``dims`` contradict its data (its metadata in base or
            the names of its existing array shards).
        """
        from shardedstore.config.layout import load_config

        return load_config(
            config, base_path=base_path, read_only=read_only, allow_outside=allow_outside
        )

    def to_json(self, *, relative_to: str | os.PathLike[str] | None = None) -> str:
        """:meth:`get_config` as indented JSON text."""
        from shardedstore.config.layout import dump_config

        return dump_config(self.get_config(relative_to=relative_to))

    def save_config(
        self,
        path: str | os.PathLike[str],
        *,
        relative: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        """Write :meth:`get_config` to a JSON file (a local path or an fsspec URL).

        Parameters
        ----------
        path
            Where to write the config. Local files are replaced atomically.
        relative
            Write paths relative to the config's directory, so that the dataset
            folder (config and shards) can be moved, zipped or uploaded as one piece.
        storage_options
            fsspec options for writing to a URL.
        """
        from shardedstore.config.layout import save_config

        save_config(self, path, relative=relative, storage_options=storage_options)

    # -------------------------------------------------------------- transforms

    def map_shards(
        self,
        func: Callable[[Store, str, str | None], Store],
        *,
        executor: Executor | None = None,
        progress: bool | None = None,
    ) -> ShardedStore:
        """Transform every shard; return a new store with the same layout over the results.

        ``func(store, shard_path, chunk_index)`` is called for the base
        (``shard_path == ""``, ``chunk_index is None``), every mount (``chunk_index is
        None``) and every existing array shard (``chunk_index`` such as ``"3"`` or
        ``"3.0"``), with a read-only view of that shard, and returns the shard's new
        store. This store is never modified.

        Parameters
        ----------
        func
            The transform; built-ins: :func:`to_zip_store_with_prefix`,
            :func:`to_directory_store_with_prefix`, :func:`to_url_with_prefix`. If it
            has an ``array_shard_factory(array_path)`` method (the built-ins do), array
            shards created later in the new store come from that factory.
        executor
            Any ``concurrent.futures.Executor``: a ``ProcessPoolExecutor``, or a
            dask.distributed cluster through ``client.get_executor()``; ``func`` and
            the stores are then sent by pickling. Default: a thread pool.
        progress
            Show a progress bar (tqdm). Default: on a terminal, for runs over a second.

        Returns
        -------
        ShardedStore

        Raises
        ------
        MapShardsError
            Naming the shard that failed. Shards finished before are complete; running
            again with a built-in skips them and finishes the job.

        Examples
        --------
        >>> zipped = store.map_shards(to_zip_store_with_prefix("zips"))  # doctest: +SKIP
        >>> zipped.save_config("zips.json")  # doctest: +SKIP
        """
        from shardedstore.shards.transforms import map_shards

        return map_shards(self, func, executor=executor, progress=progress)

    def shards(self) -> list[Shard]:
        """Every shard of the layout: the base, each mount, each existing array shard.

        The one enumeration ``map_shards``, ``info``, ``validate`` and
        :func:`chunk_table` use. Only the arrays' metadata in base is read and the
        array shards' locations listed; no shard is read.

        Returns
        -------
        list of Shard
            The base first, then the mounts by path, then each array's shards by array
            path and chunk index, each with a read-only store (see :class:`Shard`).
            An array shard beyond the array's shape is included, marked
            ``beyond_shape``.

        Raises
        ------
        LayoutError
            If an array's metadata in base cannot be sharded, or a factory does not
            return a store.

        Examples
        --------
        >>> [shard.name for shard in store.shards()]  # doctest: +SKIP
        ['base', "mount 'people'", "array shard 'simulation/fine/foo' chunk 0"]
        """
        from shardedstore.shards.listing import list_shards

        return list(sync(list_shards(self)).shards)

    def as_mapping(self) -> StoreMapping:
        """A synchronous ``MutableMapping[str, bytes]`` view of the whole hierarchy.

        ``len``, iteration and ``in`` cover the base, every mount and every array
        shard, with keys as zarr sees them.
        """
        from shardedstore.store.mapping import StoreMapping

        return StoreMapping(self)

    def close(self) -> None:
        """Commit this store's zips and close every sub-store.

        Zips are committed only if every write through this store that failed was
        written again (or deleted) successfully since, and if no zip changed under it;
        each zip is checked before any is committed. Array shards and mounts are
        committed first, the base (the arrays' shapes) last, and only if all of them
        were. Directory and object-store shards were written already.

        Raises
        ------
        CommitError
            A write failed and was not written again: the uncommitted changes of every
            zip were discarded, each zip left as it was; the message names the key.
        ConflictError
            Another writer changed a zip under this store: nothing was committed.
        OSError
            A zip could not be written (a full disk): the ones not committed yet keep
            their changes staged, and ``close()`` may be called again.
        """
        # A view never closes what it shares with the store it views.
        stores = self._own_stores()
        if self._origin is None:
            zips = [s for s in stores if isinstance(s, CopyOnWriteZipStore) and s.has_changes]
            refusal = self._group.refusal() if self._group.failures else None
            self._group.failures.clear()  # this session ends here, whatever follows
            if refusal is not None and (zips or self._documents.originals):
                undone = [f"the uncommitted changes to {os.fspath(z.path)!r}" for z in zips]
                undone += [repr(name) for _, _, name in self._documents.originals.values()]
                message = (
                    f"close(): nothing was committed: {refusal}, so {', '.join(undone)} were "
                    "discarded: the zips and metadata documents are left as they were"
                )
                self._discard(stores, message)
                raise CommitError(
                    f"{message}. Open the layout again (a new store) and write again; a "
                    "write that failed must be written again successfully (or deleted) "
                    "before close() for the rest to be committed"
                )
            try:
                for changed in zips:
                    changed.check_conflicts()
            except ConflictError as conflict:
                self._discard(stores, f"close() found a conflict: {conflict}")
                raise
        # Data before metadata: array shards and mounts commit first, the base last,
        # and only if all of them did, so that a crash or a full disk in between never
        # leaves metadata pointing at chunks that are not there.
        failure: BaseException | None = None
        for store in stores[:-1]:
            if store._is_open:
                try:
                    store.close()
                except Exception as error:
                    failure = failure or error
        if failure is not None:
            # The base keeps its changes staged: close() again. Exit commits nothing.
            self._group.broken = f"close() failed ({failure}) before committing the base"
            raise failure
        self._group.broken = None
        if self._read_ahead is not None:
            self._read_ahead.close()
        base = stores[-1]
        if base is self._base and base._is_open:
            base.close()
        if self._origin is None:
            self._documents.release()  # its metadata writes are done: others may write
        super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit (``close()``) when the block ends normally; discard on an exception.

        A ``with`` block left by an exception commits nothing: every zip's uncommitted
        changes are discarded and each zip is left as it was (the exception gets a note
        saying so). Directory and object-store shards keep what was written.
        """
        if exc_type is None:
            self.close()
            return
        stores = self._own_stores()
        zips = [s for s in stores if isinstance(s, CopyOnWriteZipStore) and s.has_changes]
        self._discard(stores, f"a with block was left by an exception ({exc_type.__name__})")
        if exc_value is not None and (zips or self._restored):
            undone = [f"the uncommitted changes to {os.fspath(z.path)!r}" for z in zips]
            undone += [f"{name!r}" for name in self._restored]
            exc_value.add_note(
                "shardedstore: the with block was left by this exception, so nothing of it "
                f"was committed: {', '.join(undone)} are as they were before the block "
                "(chunks already written to directories stay, unreached)"
            )

    def _own_stores(self) -> list[Store]:
        """The sub-stores this store closes: data first, the base last (if its own).

        A view's shared stores are left out; the list always ends with the base's place
        (``self`` stands in when the base is shared).
        """
        shared: set[int] = set()
        if self._origin is not None:
            origin = self._origin
            shared = {
                id(store)
                for store in itertools.chain(
                    (origin._base,),
                    origin._mounts.values(),
                    origin._shard_stores.values(),
                    origin._shard_readers.values(),
                )
            }
        data = itertools.chain(
            self._shard_stores.values(), self._shard_readers.values(), self._mounts.values()
        )
        own: dict[int, Store] = {}
        for store in data:
            if id(store) not in shared and store is not self._base:
                own.setdefault(id(store), store)
        base: Store = self if id(self._base) in shared else self._base
        return [*own.values(), base]

    def _discard(self, stores: list[Store], why: str) -> None:
        """Drop every zip's uncommitted changes and close the stores, committing nothing.

        Every later write is refused (``why`` says why): writes still running, such as
        the other tasks of a failed dask computation, must not land after the discard.
        """
        self._discarded = (
            f"this store's uncommitted changes were discarded ({why}), so it writes nothing "
            "more: open the layout again (a new store) and write again"
        )
        if self._origin is None:  # a view shares its origin's group and documents
            self._group.failures.clear()
            self._restored = self._documents.rollback()
        for store in stores:
            if store is self:
                continue
            if isinstance(store, CopyOnWriteZipStore):
                # Refused first: a write staging now finishes and is discarded with the
                # rest, none starts after.
                store.refuse_writes(f"zip {os.fspath(store.path)!r}: {self._discarded}")
                store.discard()
            elif store._is_open:
                with contextlib.suppress(Exception):  # nothing of theirs is uncommitted
                    store.close()
        if self._read_ahead is not None:
            self._read_ahead.close()
        super().close()

    def _check_writable(self) -> None:
        # docstring inherited
        super()._check_writable()
        if self._discarded is not None:
            raise CommitError(self._discarded)

    def _check_confined(self, path: str, index: str, store: Store) -> None:
        """Refuse writing an array shard whose real location leaves the config's folder.

        Or that holds a symlink: a write below it (``c -> ../../elsewhere``) would
        follow the link out of the folder. Checked on the shard's first write through
        this store; a link made inside a shard while it is being written is not seen.
        """
        local = facts_of(store).local_root
        if self._confined_to is None or local is None:
            return
        location = os.fspath(local[1])
        real, is_folder = self._real_location(location)
        folder = self._confined_to
        if not real.startswith(folder if folder.endswith(os.sep) else folder + os.sep):
            raise LayoutError(
                f"array shard {path!r} chunk {index}: {os.fspath(location)!r} resolves to "
                f"{real!r}, outside the config's folder {folder!r} (a symlink?); shardedstore "
                "does not write outside the folder of a config opened for writing. Replace the "
                "link with the data itself, or open with allow_outside=True"
            )
        link = first_link_below(real) if is_folder else None
        if link is not None:
            raise LayoutError(
                f"array shard {path!r} chunk {index}: {link!r} is a symlink (to "
                f"{os.path.realpath(link)!r}); shardedstore does not write into an array shard "
                "that holds symlinks when the config is opened for writing (a write would follow "
                f"the link, maybe out of the config's folder {folder!r}). Replace the link with "
                "the data itself, or open with allow_outside=True"
            )

    def _directory_root(self, store: Store) -> str | None:
        """The folder of ``store`` (the base or a mount) if it is a local directory."""
        if id(store) in self._directory_roots:
            return self._directory_roots[id(store)]
        local = facts_of(store).local_root
        # Not a directory: a zip's members hold no links, URLs none.
        known = os.fspath(local[1]) if local is not None and local[0] == "directory" else None
        self._directory_roots[id(store)] = known
        return known

    def _check_folder_confined(self, store: Store, folder: str) -> None:
        """Refuse writing below ``folder`` (relative to the root of ``store``, the base or a
        mount) when it really lies outside the config's folder: a symlink on the way
        (``base.zarr/group -> /elsewhere``). Each folder is resolved once per store (one
        ``lstat`` when its parent was resolved), until a ``delete_dir`` removes it."""
        confined = self._confined_to
        if confined is None:
            return
        root = self._directory_root(store)
        if root is None:
            return
        path = os.path.join(root, folder) if folder else root
        inside = self._folders_inside
        if path in inside:
            return
        parent, _, name = path.rpartition(os.sep)
        if parent in inside and name not in ("", ".", "..") and not os.path.islink(path):
            real = path  # its parent is inside, and it is no link
        else:
            real = os.path.realpath(path)
            if not real.startswith(confined if confined.endswith(os.sep) else confined + os.sep):
                raise LayoutError(
                    f"{path!r} resolves to {real!r}, outside the config's folder {confined!r} "
                    "(a symlink?); shardedstore does not write outside the folder of a config "
                    "opened for writing. Replace the link with the data itself, or open with "
                    "allow_outside=True"
                )
        if len(inside) >= _FOLDERS_KEPT:
            inside.clear()  # resolved again when written again
        inside.add(path)

    def _check_key_confined(self, store: Store, key: str) -> None:
        """:meth:`_check_folder_confined` of the folder holding ``key``; and for a store
        that writes a key in place (not by renaming a new file over it, as zarr's
        ``LocalStore`` does), the key itself must be no link."""
        if self._confined_to is None:
            return
        self._check_folder_confined(store, key.rpartition("/")[0])
        if not isinstance(store, LocalStore):
            root = self._directory_root(store)
            path = os.path.join(root, key) if root is not None else None
            if path is not None and os.path.islink(path):
                raise LayoutError(
                    f"{path!r} is a symlink (to {os.path.realpath(path)!r}); shardedstore does "
                    f"not write through links of a config opened for writing (the config's "
                    f"folder {self._confined_to!r}). Replace the link with the data itself, or "
                    "open with allow_outside=True"
                )

    def _forget_folders(self, store: Store, folder: str) -> None:
        """Forget the resolved folders at or below ``folder`` of ``store`` (deleted)."""
        root = self._directory_root(store)
        if root is None or not self._folders_inside:
            return
        path = os.path.join(root, folder) if folder else root
        below = path + os.sep
        self._folders_inside.difference_update(
            [known for known in self._folders_inside if known == path or known.startswith(below)]
        )

    def _real_location(self, location: str) -> tuple[str, bool]:
        """Where ``location`` really is, symlinks resolved; and whether it is a folder.

        Resolved anew for every new shard store: a folder on the way may have become a
        symlink since the last one (a cache of resolved parents let writes escape). Only
        the shards of one request (:meth:`stores_for_write`) share the resolved folder
        they are in, checked before any of them is written, as each was before; the
        shard's own name is still looked at, one ``lstat`` each.
        """
        parent, name = os.path.split(location)
        try:
            mode: int | None = os.lstat(location).st_mode
        except OSError:  # missing (a new shard), or not reachable: nothing inside it yet
            mode = None
        resolved = self._resolved
        if mode is not None and stat.S_ISLNK(mode):
            real = os.path.realpath(location)
            return real, os.path.isdir(real)
        is_folder = mode is not None and stat.S_ISDIR(mode)
        if resolved is None or name in ("", ".", ".."):
            return os.path.realpath(location), is_folder
        real_parent = resolved.get(parent)
        if real_parent is None:
            real_parent = resolved[parent] = os.path.realpath(parent)
        return os.path.join(real_parent, name), is_folder

    # ------------------------------------------------------------ array shards

    def _zip_write_refusal(self) -> str | None:
        """Why zips cannot be written from this copy of the store (None: they can)."""
        if self._zip_refusal is not None:
            return self._zip_refusal
        if self._discarded is not None:
            return self._discarded
        if os.getpid() != self._pid:
            return (
                "this ShardedStore was inherited by a forked process (a process pool or "
                "multiprocessing worker); zip shards are committed by close() in the process "
                "that writes them, so they cannot be written from a fork. Write to directory "
                "shards and convert them to zips afterwards (shardedstore convert LAYOUT --to "
                "zip), or write from the process that opened the store"
            )
        return None

    def _refuse_zip_writes(self) -> None:
        """Refuse writes to zip shards: this is a copy sent to another process.

        Nothing in a dask worker or a pool process would ever ``close()`` the store
        and so commit a zip; two of them would also race for the same zip. Writing
        there must fail loudly rather than lose data silently.
        """
        self._zip_refusal = (
            "this ShardedStore is a copy sent to another process (a dask worker or a process "
            "pool); zip shards are committed by close() in the process that writes them, so "
            "they cannot be written from such copies. Write to directory shards and convert "
            "them to zips afterwards (shardedstore convert LAYOUT --to zip), or write the zip "
            "layout from one process and close() the store"
        )
        for store in (self._base, *self._mounts.values()):
            if isinstance(store, CopyOnWriteZipStore):
                store.refuse_writes(f"zip {os.fspath(store.path)!r}: {self._zip_refusal}")

    def _shard_store(self, path: str, index: str) -> Store:
        """The store of one array shard to write, checked against the config's folder
        on first use (see :meth:`_check_confined`)."""
        store = self._shard_made(path, index)
        key = (path, index)
        if key not in self._confined_checked:
            if not self.read_only:
                self._check_confined(path, index, store)
            self._confined_checked.add(key)
        return store

    def _shard_made(self, path: str, index: str) -> Store:
        """The store of one array shard, made by its factory on first use."""
        key = (path, index)
        store = self._shard_stores.get(key)
        if store is None:
            store = copy_on_write(make_array_shard(self._factories[path], path, index))
            if isinstance(store, CopyOnWriteZipStore):
                refusal = self._zip_write_refusal()
                if refusal is not None:
                    store.refuse_writes(f"zip {os.fspath(store.path)!r}: {refusal}")
                if not self.read_only:
                    store.join(self._group)
            if self._cache is not None:
                store = _through_cache(store, self._cache)
            if self.read_only:
                store = read_only_view(store)
            self._shard_stores[key] = store
        return store

    def _shard_reader(self, path: str, index: str) -> Store:
        """A store to read one array shard through, which never creates the shard."""
        key = (path, index)
        origin = self._origin
        if origin is not None and key in origin._written:
            return origin._shard_stores[key]  # what the store this one views wrote
        store = self._shard_readers.get(key)
        if store is None:
            store = self._shard_made(path, index)
            if key not in self._written:
                store = read_only_view(store)
            self._shard_readers[key] = store
        return store

    async def _shard_for_write(self, path: str, index: str) -> Store:
        """The store of one array shard, creating it (with its metadata) on first write."""
        store = self._shard_store(path, index)
        if (path, index) not in self._written:
            await self._shard_created(path, index, store)
        return store

    def _shard_created(self, path: str, index: str, store: Store) -> Awaitable[None]:
        """Wait for an array shard's metadata, written by the first writer only.

        zarr writes a shard's chunks concurrently; each would otherwise see the shard
        as new and write its metadata again.
        """
        return self._shards_created(path, {index: store})

    def _shards_created(self, path: str, shards: Mapping[str, Store]) -> Awaitable[None]:
        """Wait for the metadata of array shards (index: store) of the array ``path``.

        Those no writer is creating yet are created together (:meth:`_create_shards`);
        for the others, this waits for their first writer's creation.
        """
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[None]] = []
        new: dict[str, Store] = {}
        for index, store in shards.items():
            creating = self._creating.get((path, index))
            # A creation that failed, or that belongs to another (maybe closed) event
            # loop, is not waited for: this writer starts one of its own.
            if creating is None or creating.done() or creating.get_loop() is not loop:
                new[index] = store
            elif creating not in waits:
                waits.append(creating)
        if new:
            task = loop.create_task(self._create_shards(path, new))
            for index in new:
                self._creating[path, index] = task
                task.add_done_callback(functools.partial(self._creation_done, (path, index)))
            waits.append(task)
        # Shielded: one cancelled writer must not cancel the others' shards.
        if len(waits) == 1:
            return asyncio.shield(waits[0])
        return _settled([asyncio.shield(wait) for wait in waits])

    def _creation_done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._creating.get(key) is task:
            del self._creating[key]
        if not task.cancelled():
            # Every waiter has seen it; read here too, for when every waiter was
            # cancelled (asyncio would log it as never retrieved).
            task.exception()

    async def _create_shards(self, path: str, shards: Mapping[str, Store]) -> None:
        """Write the own metadata of array shards, once per shard and store instance.

        A shard counts as written only once its metadata is: until then, every writer
        waits for this creation (:meth:`_shards_created`) and shares its outcome.
        Local shards (directories, memory) are made in one blocking call for all of
        them, inline or in one thread hop, as their chunks are written.
        """
        layout = await self.array_layout(path)
        local: dict[str, Store] = {}
        others: dict[str, Store] = {}
        for index, store in shards.items():
            one_call = (
                layout is not None
                and type(store) in _ONE_CALL_CREATION
                and _inline_capable(store)  # has set_sync (zarr >= 3.1)
                and not store._is_open
                # Not a zip: its writes are staged and committed at close(), which this
                # path skips (zip shards of concurrent writers went missing).
                and not isinstance(store, CopyOnWriteZipStore)
            )
            (local if one_call else others)[index] = store
        if local:
            await self._create_local_shards(path, local, cast("ShardedArrayLayout", layout))
        if others:
            await asyncio.gather(
                *(self._create_shard(path, index, store, layout) for index, store in others.items())
            )

    async def _create_local_shards(
        self, path: str, shards: Mapping[str, Store], layout: ShardedArrayLayout
    ) -> None:
        """Open local shards (their folders made) and write their metadata in one call."""
        documents = list(layout.shard_documents.items())
        buffers = [
            (name, default_buffer_prototype().buffer.from_bytes(doc)) for name, doc in documents
        ]
        created: list[tuple[str, Store]] = []

        def create() -> None:
            for index, store in shards.items():
                if type(store) is LocalStore and not store.read_only:
                    create_store(str(store.root), documents)
                    store._is_open = True  # what its set_sync would have done: root made
                else:
                    sync_store = cast("SupportsSyncStore", store)
                    for name, value in buffers:
                        sync_store.set_sync(name, value)  # opens the store first
                created.append((index, store))

        try:
            if len(shards) == 1:
                await self._latency(path, True).run(create)
            else:  # many: one hop, not the event loop blocked for all of them
                await asyncio.to_thread(create)
        finally:
            for index, store in created:
                if not store._is_open:  # a store whose set_sync does not open it
                    await opened(store)
                self._shard_written(path, index, store)

    async def _create_shard(
        self, path: str, index: str, store: Store, layout: ShardedArrayLayout | None
    ) -> None:
        """Open one array shard and write its metadata through :meth:`_set_in`."""
        await opened(store)
        if layout is not None:
            # Through the same inline-or-thread path as the shard's chunks.
            await asyncio.gather(
                *(
                    self._set_in(
                        store, path, name, default_buffer_prototype().buffer.from_bytes(doc)
                    )
                    for name, doc in layout.shard_documents.items()
                )
            )
        self._shard_written(path, index, store)

    def _shard_written(self, path: str, index: str, store: Store) -> None:
        """Count an array shard as written (created, with its metadata)."""
        self._written.add((path, index))
        self._created[path].add(index)
        self._shard_readers[path, index] = store

    async def _array_documents(self, path: str) -> dict[str, JSON]:
        """The parsed metadata documents of an array-sharded array, read from base once."""
        docs = self._array_docs.get(path)
        if docs is None:
            docs = {}
            if await opened(self._base):
                # Not noted as read (compare-and-swap): this is the store's own look at
                # the layout, not what its caller based a write on.
                values = await asyncio.gather(
                    *(self._peek_base(f"{path}/{name}") for name in _ARRAY_DOC_NAMES)
                )
                for name, value in zip(_ARRAY_DOC_NAMES, values, strict=True):
                    if value is not None:
                        docs[name] = parse_metadata_document(path, name, value.to_bytes())
            # A concurrent metadata write may have filled the cache meanwhile; it wins.
            docs = self._array_docs.setdefault(path, docs)
        return docs

    async def _peek_base(self, key: str) -> Buffer | None:
        """Read ``key`` from base without it counting as read by the caller."""
        if isinstance(self._base, CopyOnWriteZipStore):
            return self._base.peek(key)
        return await self._base.get(key, default_buffer_prototype())

    async def array_layout(self, path: str) -> ShardedArrayLayout | None:
        """How the array-sharded array at ``path`` is laid out in its shards.

        Its metadata in base, read once and kept (writes through this store update it).

        Returns
        -------
        ShardedArrayLayout or None
            None while the array has no metadata.

        Raises
        ------
        LayoutError
            If the metadata cannot be sharded as the layout says.
        """
        if path in self._array_layouts:
            return self._array_layouts[path]
        docs = await self._array_documents(path)
        layout = sharded_array_layout(path, docs, self._router.array_dims[path])
        self._array_layouts[path] = layout
        return layout

    async def _sharded_shape(self, path: str) -> tuple[int, ...] | None:
        """The array's shape along its sharded dimensions (None: no metadata)."""
        layout = await self._layout_or_none(path)
        return None if layout is None else tuple(layout.shape[: self._router.array_dims[path]])

    async def _layout_or_none(self, path: str) -> ShardedArrayLayout | None:
        try:
            return await self.array_layout(path)
        except LayoutError:
            return None

    def _forget_array(self, path: str) -> None:
        self._array_docs.pop(path, None)
        self._array_layouts.pop(path, None)

    async def _set_array_metadata(
        self, path: str, name: str, value: Buffer, *, if_not_exists: bool = False
    ) -> None:
        """Write an array-sharded array's metadata to base, keeping its shards in step.

        The new metadata is validated before anything is written; if it changes what
        the shards' own metadata must say, every existing shard is rewritten.
        """
        key = f"{path}/{name}"
        await opened(self._base)
        if if_not_exists and await self._base.exists(key):
            return
        doc = parse_metadata_document(path, name, value.to_bytes())
        dims = self._router.array_dims[path]
        old_layout = await self._layout_or_none(path)
        # Validate before writing anything, then merge into the cache as it is after
        # the write: v2 arrays write .zarray and .zattrs concurrently.
        current = await self._array_documents(path)
        planned = sharded_array_layout(path, _merge_document(current, name, doc), dims)
        # The shards to rewrite, each checked against the config's folder before anything
        # is written: a refused one must not leave the others rewritten and base not.
        stale = await self._stale_shards(path, old_layout, planned)
        self._check_key_confined(self._base, key)
        await self._set_in(self._base, "", key, value, name=key)
        docs = _merge_document(self._array_docs.get(path, {}), name, doc)
        self._array_docs[path] = docs
        layout = sharded_array_layout(path, docs, dims)
        self._array_layouts[path] = layout
        if layout is None:
            return
        if old_layout is None or old_layout.shard_documents != layout.shard_documents:
            if stale is None:  # the cache held other documents than base did
                stale = await self._stale_shards(path, old_layout, layout)
            documents = [
                (name, default_buffer_prototype().buffer.from_bytes(doc))
                for name, doc in layout.shard_documents.items()
            ]

            async def rewrite(store: Store) -> None:
                await opened(store)
                for doc_name, buffer in documents:
                    await store.set(doc_name, buffer)

            await gather_bounded(rewrite(store) for store in stale or ())

    async def _stale_shards(
        self,
        path: str,
        old_layout: ShardedArrayLayout | None,
        layout: ShardedArrayLayout | None,
    ) -> list[Store] | None:
        """The stores of the existing shards whose metadata ``layout`` changes (None: it
        changes none), each checked for writing (:meth:`_shard_store`)."""
        if layout is None or (
            old_layout is not None and old_layout.shard_documents == layout.shard_documents
        ):
            return None
        # Without earlier metadata, only shards known to this store can be stale;
        # probing every possible index of a fresh array would cost O(shape).
        indices = sorted(await self.shard_indices(path, probe=old_layout is not None))

        async def exists(index: str) -> bool:
            # a probed index with no shard: never create one here
            return index in self._created[path] or await self._shard_exists(path, index)

        found = await gather_bounded(exists(index) for index in indices)
        return [
            self._shard_store(path, index)
            for index, there in zip(indices, found, strict=True)
            if there
        ]

    async def _shard_exists(self, path: str, index: str) -> bool:
        """Whether the array shard at ``index`` exists (read-only check, creates nothing)."""
        reader = self._shard_reader(path, index)
        if not await opened(reader):
            return False
        async for _ in reader.list():
            return True
        return False

    async def shard_indices(self, path: str, *, probe: bool = True) -> set[str]:
        """Chunk indices of the array shards of ``path`` that exist (or may exist).

        Those the factory lists (``existing_chunk_indices``) and those this store
        created. A factory that cannot list its shards gives, with ``probe``, every
        index within the array's shape along its sharded dimensions (candidates).
        """
        factory = self._factories[path]
        found = set(self._created[path])
        listed = None
        if isinstance(factory, ListableArrayShardFactory):
            listed = await asyncio.to_thread(_listed, factory.existing_chunk_indices)
        if listed is not None:
            dims = self._router.array_dims[path]
            found.update(index for index in listed if index.count(".") == dims - 1)
        elif probe:
            # A plain callable cannot list its shards: every index within the array's
            # shape along the sharded dims is a candidate.
            layout = await self._layout_or_none(path)
            if layout is not None:
                dims = self._router.array_dims[path]
                ranges = (range(n) for n in layout.shape[:dims])
                found.update(".".join(map(str, idx)) for idx in itertools.product(*ranges))
        return found

    async def _selected_shards(self, path: str, prefix: str) -> list[str]:
        """The array shards of ``path`` that can hold keys under ``prefix``, in order.

        A prefix that names one shard (``t/c/3/``, ``t/c/3/0/``) reaches that shard
        alone, without listing the others; a shorter one keeps the shards whose index
        it starts (from one listing of the shards' places, no shard opened).
        """
        layout = await self._layout_or_none(path)
        rest = prefix[len(path) + 1 :] if prefix.startswith(f"{path}/") else ""
        dims = self._router.array_dims[path]
        selection = select_shards(rest, layout.key_format, dims) if layout else None
        if selection is not None and (index := selection.single(dims)) is not None:
            return [index]
        indices = await self.shard_indices(path)
        chosen = indices if selection is None else filter(selection.matches, indices)
        return sorted(chosen, key=_index_order)

    async def _list_shard(self, path: str, index: str, prefix: str) -> list[str]:
        """Outer keys of the chunks stored in one array shard, under ``prefix``."""
        store = self._shard_reader(path, index)
        if not await opened(store):
            return []
        layout = await self._layout_or_none(path)
        key_format = layout.key_format if layout is not None else None
        keys = []
        async for inner in store.list():
            rest = outer_chunk_key(index, inner, key_format)
            if rest is not None and (key := f"{path}/{rest}").startswith(prefix):
                keys.append(key)
        return keys

    async def _list_array(self, path: str, prefix: str = "") -> list[str]:
        """Outer keys of the chunks stored in the array shards of ``path``, under ``prefix``."""
        indices = await self._selected_shards(path, prefix)
        listed = await gather_bounded(self._list_shard(path, i, prefix) for i in indices)
        return [key for keys in listed for key in keys]

    async def _array_holds(self, path: str, prefix: str) -> bool:
        """Whether any array shard of ``path`` holds a key under ``prefix`` (stops at one)."""
        for index in await self._selected_shards(path, prefix):
            if await self._list_shard(path, index, prefix):
                return True
        return False

    async def _array_dir(self, path: str, dir_prefix: str) -> set[str]:
        """The names right below ``dir_prefix``, inside the array-sharded ``path``.

        Where they are index parts of the shards (``t/c/`` lists the time steps), they
        come from the shards' places alone: a shard that exists shows, as a directory
        does. Below that, only the shards the prefix names are listed.
        """
        layout = await self._layout_or_none(path)
        rest = dir_prefix[len(path) + 1 :]
        dims = self._router.array_dims[path]
        selection = select_shards(rest, layout.key_format, dims) if layout else None
        if selection is not None and selection.level is not None:
            level = selection.level
            return {
                index.split(".")[level]
                for index in await self.shard_indices(path)
                if selection.matches(index)
            }
        if layout is not None and rest == "" and layout.key_format.prefix:
            prefix = layout.key_format.prefix
            if isinstance(self._factories[path], ListableArrayShardFactory):
                # ``c`` shows once a shard exists, as the folder of chunks does in a
                # directory store (and as ``c/`` lists each existing shard): one listing.
                return {prefix} if await self.shard_indices(path) else set()
            # Shards that cannot be listed: c shows once one of them holds a key.
            return {prefix} if await self._array_holds(path, f"{path}/{prefix}") else set()
        return {
            key[len(dir_prefix) :].split("/", 1)[0]
            for key in await self._list_array(path, dir_prefix)
        }

    # -------------------------------------------------------------- key access

    def _read_target(self, key: str) -> tuple[Store, str]:
        store, inner, _ = self._read_route(key)
        return store, inner

    def _read_route(self, key: str) -> tuple[Store, str, str]:
        """The store to read ``key`` from, the key inside it, and its latency group."""
        kind, node, index, inner = self._router.route(key)
        if kind == MOUNT:
            return self._mounts[node], inner, node
        if kind == CHUNK:
            if self._read_ahead is not None:
                self._read_ahead.shard_read(node, cast("str", index))
            return self._shard_reader(node, cast("str", index)), inner, node
        return self._base, key, ""

    def _latency(self, group: str, write: bool) -> Latency:
        """The running latency of a group's reads or of its writes (they cost apart)."""
        latency = self._latencies.get((group, write))
        if latency is None:
            latency = Latency(long_wait=None if write else LONG_WAIT)
            self._latencies[group, write] = latency
        return latency

    async def _set_in(
        self, store: Store, group: str, key: str, value: Buffer, *, name: str | None = None
    ) -> None:
        """``store.set``, inline when the store is fast (see ``_inline``).

        ``name``: the key as the layout names it, for keys of the base and the mounts;
        their metadata documents in directories are compare-and-swap.
        """
        documents = name is not None and self._documents.applies(store, key)
        if not store._is_open and (documents or not _puts(store)):
            await opened(store)
        if documents:
            await asyncio.to_thread(
                self._documents.write, cast("LocalStore", store), key, value, cast("str", name)
            )
            return
        if _inline_capable(store):
            latency = self._latency(group, True)
            write = _writer(store, key, value)
            if latency.inline:
                latency.timed(write)
            else:
                await latency.run_off_loop(write)
            return
        await store.set(key, value)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        if prototype is None:
            prototype = default_buffer_prototype()
        store, inner, group = self._read_route(key)
        if not store._is_open and not await opened(store):
            return None
        value: Buffer | None
        if _inline_capable(store):
            latency = self._latency(group, False)
            sync_store = cast("SupportsSyncStore", store)

            def call() -> Buffer | None:
                return sync_store.get_sync(inner, prototype=prototype, byte_range=byte_range)

            if latency.inline:
                value = latency.timed(call)
            else:
                value = await latency.run_off_loop(call)
        else:
            value = await store.get(inner, prototype, byte_range)
        if byte_range is None and is_metadata_document(inner):
            self._documents.read(store, inner, value)
        return value

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        groups: dict[int, tuple[Store, list[int], list[tuple[str, ByteRequest | None]]]] = {}
        count = 0
        for position, (key, byte_range) in enumerate(key_ranges):
            store, inner = self._read_target(key)
            group = groups.setdefault(id(store), (store, [], []))
            group[1].append(position)
            group[2].append((inner, byte_range))
            count += 1
        results: list[Buffer | None] = [None] * count

        async def fetch(
            store: Store, positions: list[int], requests: list[tuple[str, ByteRequest | None]]
        ) -> None:
            if not await opened(store):
                return
            values = await store.get_partial_values(prototype, requests)
            for position, value in zip(positions, values, strict=True):
                results[position] = value

        await asyncio.gather(*(fetch(*group) for group in groups.values()))
        return results

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        # docstring inherited
        tasks = [
            (key, asyncio.ensure_future(self.get(key, prototype, byte_range)))
            for key, prototype, byte_range in requests
        ]
        for key, task in tasks:
            yield key, await task

    async def exists(self, key: str) -> bool:
        # docstring inherited
        store, inner = self._read_target(key)
        if not store._is_open and not await opened(store):
            return False
        return await store.exists(inner)

    async def getsize(self, key: str) -> int:
        # docstring inherited
        store, inner = self._read_target(key)
        if not store._is_open and not await opened(store):
            raise FileNotFoundError(key)
        return await store.getsize(inner)

    @_write_method
    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        _check_buffer(value)
        kind, node, index, inner = self._router.route(key)
        if kind == CHUNK:
            shard = (node, cast("str", index))
            if shard in self._written:
                store = self._shard_stores[shard]
            else:
                # A new shard: its metadata and first chunk are written concurrently.
                store = self._shard_store(*shard)
                await asyncio.gather(
                    self._shard_created(*shard, store), self._set_in(store, node, inner, value)
                )
                return
        elif kind == MOUNT:
            store = self._mounts[node]
        elif kind == ARRAY_METADATA:
            await self._set_array_metadata(node, inner, value)
            return
        else:
            store = self._base
            node = ""
        self._check_key_confined(store, inner)
        await self._set_in(store, node, inner, value, name=key)

    @_write_method
    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        self._check_writable()
        _check_buffer(value)
        kind, node, index, inner = self._router.route(key)
        if kind == CHUNK:
            store = await self._shard_for_write(node, cast("str", index))
        elif kind == MOUNT:
            store = self._mounts[node]
        elif kind == ARRAY_METADATA:
            await self._set_array_metadata(node, inner, value, if_not_exists=True)
            return
        else:
            store = self._base
        if kind != CHUNK:
            self._check_key_confined(store, inner)
        await opened(store)
        await store.set_if_not_exists(inner, value)

    @_write_method
    async def delete(self, key: str) -> None:
        # docstring inherited
        self._check_writable()
        kind, node, index, inner = self._router.route(key)
        if kind == CHUNK:
            shard = (node, cast("str", index))
            if shard not in self._written:
                # Deleting from a shard that was never written must not create it.
                reader = self._shard_reader(*shard)
                if not await opened(reader) or not await reader.exists(inner):
                    return
            store = self._shard_store(*shard)
        elif kind == MOUNT:
            store = self._mounts[node]
        else:
            store = self._base
            if kind == ARRAY_METADATA:
                self._forget_array(node)
        if kind != CHUNK:
            self._check_key_confined(store, inner)
        await opened(store)
        if kind != CHUNK and self._documents.applies(store, inner):
            await asyncio.to_thread(
                self._documents.write, cast("LocalStore", store), inner, None, key
            )
            return
        await store.delete(inner)

    # ----------------------------------------------------------------- listing

    async def _list_base(self, prefix: str) -> list[str]:
        """Keys of base under ``prefix`` that are really served from base."""
        if not await opened(self._base):
            return []
        route = self._router.route
        keys = []
        async for key in self._base.list_prefix(prefix):
            try:
                kind = route(key)[0]
            except KeyValidationError:
                continue
            if kind in (BASE, ARRAY_METADATA):
                keys.append(key)
        return keys

    @contextlib.asynccontextmanager
    async def _mount_to_look_at(self, path: str) -> AsyncIterator[Store | None]:
        """The mount at ``path`` to list, opened; None when it does not exist.

        A mount not opened yet is looked at through a read-only view, closed after, so
        that looking never creates a mount (a directory, a zip). A mount that cannot be
        opened read-only (it was never written) holds nothing.
        """
        store = self._mounts[path]
        if store._is_open:
            yield store
            return
        view = read_only_view(store)
        try:
            yield view if await opened(view) else None
        finally:
            if view is not store and view._is_open:
                view.close()

    async def _mount_is_empty(self, path: str, inner_prefix: str = "") -> bool:
        async with self._mount_to_look_at(path) as store:
            return store is None or await store.is_empty(inner_prefix)

    async def _list_mount(self, path: str, inner_prefix: str = "") -> list[str]:
        store = self._mounts[path]
        if not await opened(store):
            return []
        return [f"{path}/{key}" async for key in store.list_prefix(inner_prefix)]

    def list(self) -> AsyncIterator[str]:
        # docstring inherited
        return self.list_prefix("")

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        if validate_prefix(prefix) == ROOT_PREFIX:
            prefix = ""  # "/" is the root (see ROOT_PREFIX), never passed on
        plan = self._router.plan_prefix(prefix)
        if plan.inside_mount is not None:
            for key in await self._list_mount(*plan.inside_mount):
                yield key
            return
        jobs: list[Awaitable[list[str]]] = [self._list_base(prefix)]
        jobs.extend(self._list_mount(path) for path in plan.mounts)
        jobs.extend(self._list_array(path, prefix) for path in plan.arrays)
        for keys in await gather_bounded(jobs):
            for key in keys:
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        validate_prefix(prefix)
        path = prefix.rstrip("/")  # "/" is the root, as in zarr's MemoryStore
        node = self._router.containing_node(path) if path else None
        if node is not None and node[0] == MOUNT:
            mount = node[1]
            async with self._mount_to_look_at(mount) as store:
                found = (
                    [] if store is None else await collect(store.list_dir(path[len(mount) + 1 :]))
                )
            for name in found:
                yield name
            return
        names: set[str] = set()
        if await opened(self._base):
            names.update([name async for name in self._base.list_dir(path)])
        dir_prefix = f"{path}/" if path else ""
        if node is not None:  # inside an array-sharded array
            names.update(await self._array_dir(node[1], dir_prefix))
        else:
            names.update(await self._mount_points_in_use(path, dir_prefix, names))
            for array in self._router.plan_prefix(dir_prefix).arrays:
                name = array[len(dir_prefix) :].split("/", 1)[0]
                if name not in names and await self._array_holds(array, f"{array}/"):
                    names.add(name)
        for name in names:
            yield name

    async def _mount_points_in_use(
        self, path: str, dir_prefix: str, listed: Iterable[str]
    ) -> frozenset[str]:
        """Names below ``path`` that lead to a mount holding something.

        A mount point shows, as a directory does, once its mount holds a key; an empty
        mount is invisible, so zarr never meets a node without metadata. Only names not
        already ``listed`` from base are checked, all their mounts concurrently.
        """
        children = self._router.mount_children(path).difference(listed)
        if not children:
            return frozenset()
        mounts = [
            (name, mount)
            for mount in self._router.plan_prefix(dir_prefix).mounts
            if (name := mount[len(dir_prefix) :].split("/", 1)[0]) in children
        ]
        empty = await gather_bounded(self._mount_is_empty(mount) for _, mount in mounts)
        return frozenset(
            name for (name, _), is_empty in zip(mounts, empty, strict=True) if not is_empty
        )

    async def is_empty(self, prefix: str) -> bool:
        # docstring inherited
        if validate_prefix(prefix) == ROOT_PREFIX:
            prefix = ""  # "/" is the root (see ROOT_PREFIX), never passed on
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        plan = self._router.plan_prefix(prefix)
        if plan.inside_mount is not None:
            return await self._mount_is_empty(*plan.inside_mount)
        if await self._list_base(prefix):
            return False
        empty = await gather_bounded(self._mount_is_empty(mount) for mount in plan.mounts)
        if not all(empty):
            return False
        for array in plan.arrays:
            if await self._array_holds(array, prefix):
                return False
        return True

    @_write_method
    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        self._check_writable()
        if validate_prefix(prefix) == ROOT_PREFIX:
            prefix = ""  # "/" is the root (see ROOT_PREFIX), never passed on
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        plan = self._router.plan_prefix(prefix)
        if plan.inside_mount is not None:
            mount, inner = plan.inside_mount
            store = self._mounts[mount]
            self._check_folder_confined(store, inner.rstrip("/"))
            await opened(store)
            await store.delete_dir(inner)
            self._documents.forget(store, inner)
            self._forget_folders(store, inner.rstrip("/"))
            return
        self._check_folder_confined(self._base, prefix.rstrip("/"))  # before any shard goes
        # Chunks before metadata: if clearing an array shard fails (a shard that may
        # not be written, say), the base and the mounts are still untouched.
        arrays: list[Awaitable[None]] = []
        for array in plan.arrays:
            if (array + "/").startswith(prefix):
                arrays.append(self._clear_array(array))
            else:
                arrays.append(self._delete_array_keys(array, prefix))
        await gather_bounded(arrays)
        jobs: list[Awaitable[None]] = [self._delete_base_dir(prefix)]
        jobs.extend(self._clear_mount(path) for path in plan.mounts)
        await gather_bounded(jobs)

    async def _delete_base_dir(self, prefix: str) -> None:
        self._check_folder_confined(self._base, prefix.rstrip("/"))
        await opened(self._base)
        await self._base.delete_dir(prefix)
        self._documents.forget(self._base, prefix)
        self._forget_folders(self._base, prefix.rstrip("/"))

    async def _clear_mount(self, path: str) -> None:
        store = self._mounts[path]
        if not store._is_open and await self._mount_is_empty(path):
            return  # opening it for writing would create it only to empty it
        await opened(store)
        await store.delete_dir("")
        self._documents.forget(store, "")
        self._forget_folders(store, "")

    async def _clear_array(self, path: str) -> None:
        """Remove every array shard of ``path`` (its metadata in base goes separately)."""
        indices = await self.shard_indices(path)
        # Every shard's store first: one that may not be written raises before any is
        # cleared.
        stores = [self._shard_store(path, index) for index in sorted(indices)]

        async def clear(store: Store) -> None:
            await opened(store)
            await store.delete_dir("")

        await gather_bounded(clear(store) for store in stores)
        for index in indices:
            self._written.discard((path, index))
            self._shard_readers.pop((path, index), None)
            self._confined_checked.discard((path, index))  # checked again if written again
        self._created[path].clear()
        self._forget_array(path)

    async def _delete_array_keys(self, path: str, prefix: str) -> None:
        keys = await self._list_array(path, prefix)
        await gather_bounded(self.delete(key) for key in keys)

    # ---------------------------------------------- direct access (native engines)

    def store_for_read(self, key: str) -> tuple[Store, str]:
        """The sub-store that serves reads of ``key``, and the key inside it.

        Routing only, no I/O. An array shard not written through this store comes as a
        read-only view, so that reading never creates it. For readers that reach the
        layout's parts directly (``ShardedCodecPipeline``, the native engines).

        Raises
        ------
        KeyValidationError
            If ``key`` is not a valid Zarr key.
        """
        return self._read_target(key)

    def stores_for_read(self, keys: Iterable[str]) -> Sequence[tuple[Store, str]]:
        """:meth:`store_for_read` of many keys (one request), in the same order."""
        return [self._read_target(key) for key in keys]

    async def store_for_write(self, key: str) -> tuple[Store, str]:
        """The sub-store that a write of the chunk ``key`` goes to, and the key inside it.

        Checks what :meth:`set` checks (the store is writable, an array shard lies inside
        the config's folder) and creates an array shard, with its metadata, on its first
        write, as :meth:`set` does. Report what became of writes made directly to the
        sub-store with :meth:`record_writes`.

        Raises
        ------
        KeyValidationError
            If ``key`` is not a valid Zarr key.
        ValueError
            If ``key`` is a metadata document of an array-sharded array: write it with
            :meth:`set`, which keeps the array's shards in step.
        """
        self._check_writable()
        kind, node, index, inner = self._router.route(key)
        if kind == CHUNK:
            return await self._shard_for_write(node, cast("str", index)), inner
        if kind == ARRAY_METADATA:
            raise ValueError(
                f"{key!r} is the metadata of the array-sharded array {node!r}: write it "
                "with ShardedStore.set(), which keeps the array's shards in step"
            )
        store = self._mounts[node] if kind == MOUNT else self._base
        self._check_key_confined(store, inner)
        await opened(store)
        return store, inner

    async def stores_for_write(self, keys: Sequence[str]) -> Sequence[tuple[Store, str]]:
        """:meth:`store_for_write` of many chunk keys at once, in the same order.

        The array shards the keys create are created together: local ones (directories)
        in one blocking call for all of them, instead of one call each.

        Raises
        ------
        KeyValidationError
            If a key is not a valid Zarr key.
        ValueError
            If a key is a metadata document of an array-sharded array.
        """
        self._check_writable()
        new: dict[str, dict[str, Store]] = {}
        # The new shards are checked against the config's folder together: the folders
        # they are in resolved once, not once per shard.
        self._resolved = {}
        try:
            for key in keys:
                kind, node, index, _ = self._router.route(key)
                if kind == CHUNK and (node, index) not in self._written:
                    shard = cast("str", index)
                    new.setdefault(node, {})[shard] = self._shard_store(node, shard)
        finally:
            self._resolved = None
        await _settled(self._shards_created(node, shards) for node, shards in new.items())
        return [await self.store_for_write(key) for key in keys]

    def record_writes(self, keys: Iterable[str], error: BaseException | None = None) -> None:
        """Record what became of writes made directly to sub-stores (:meth:`store_for_write`).

        A failed write is remembered, as one through :meth:`set` is, until the key is
        written again successfully; while one is, :meth:`close` commits nothing.

        Parameters
        ----------
        keys
            The keys written, as this store names them.
        error
            What the writes raised; None when they succeeded.
        """
        for key in keys:
            if error is None:
                self._group.write_succeeded(key)
            else:
                self._group.write_failed(key, error)


class _SyncShardedStore(ShardedStore):
    """A ShardedStore whose sub-stores all support zarr's synchronous store protocols.

    ``get_sync``, ``set_sync`` and ``delete_sync`` go straight to the sub-store, with
    no event loop in between. The rare cases that need more than one sub-store call
    (creating an array shard, writing array metadata) run the async code.
    """

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        store, inner = self._read_target(key)
        try:
            value = cast("SupportsSyncStore", store).get_sync(
                inner, prototype=prototype, byte_range=byte_range
            )
        except FileNotFoundError:  # a read-only view of a shard not written yet
            return None
        if byte_range is None and is_metadata_document(inner):
            self._documents.read(store, inner, value)
        return value

    @_write_method_sync
    def set_sync(self, key: str, value: Buffer) -> None:
        self._check_writable()
        _check_buffer(value)
        kind, node, index, inner = self._router.route(key)
        if kind == CHUNK:
            shard = (node, cast("str", index))
            if shard not in self._written:
                sync(self._shard_for_write(*shard))
            store = self._shard_store(*shard)
        elif kind == MOUNT:
            store = self._mounts[node]
        elif kind == ARRAY_METADATA:
            sync(self._set_array_metadata(node, inner, value))
            return
        else:
            store = self._base
        if kind != CHUNK:
            self._check_key_confined(store, inner)
        if kind != CHUNK and self._documents.applies(store, inner):
            self._documents.write(cast("LocalStore", store), inner, value, key)
            return
        _writer(store, inner, value)()

    @_write_method_sync
    def delete_sync(self, key: str) -> None:
        self._check_writable()
        kind, node, index, inner = self._router.route(key)
        if kind in (MOUNT, BASE):
            store = self._mounts[node] if kind == MOUNT else self._base
            self._check_key_confined(store, inner)
            if self._documents.applies(store, inner):
                self._documents.write(cast("LocalStore", store), inner, None, key)
            else:
                cast("SupportsSyncStore", store).delete_sync(inner)
        elif kind == CHUNK and (node, index) in self._written:
            shard = self._shard_store(node, cast("str", index))
            cast("SupportsSyncStore", shard).delete_sync(inner)
        else:
            sync(self.delete(key))


# What users and client errors see is the public class (zarr's ``StorePath(ShardedStore,
# ...)``, ``<class '...ShardedStore'>``), never this private subclass.
_SyncShardedStore.__name__ = _SyncShardedStore.__qualname__ = "ShardedStore"
