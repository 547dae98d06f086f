"""Every shard of a layout, in one place: :meth:`ShardedStore.shards`.

A layout's shards are its base, each mount, and each existing array shard. Everything
that works shard by shard enumerates them here: ``map_shards`` and ``convert``
(:mod:`shardedstore.shards.source`), ``info`` (:mod:`shardedstore.report.info`),
``validate`` (:mod:`shardedstore.report.validate`) and the chunk table
(:mod:`shardedstore.table.chunks`).

Each :class:`Shard` carries a new read-only handle on its store (a zip is a fresh
handle, safe to pickle into another process), and which of its keys a reader of the
layout reaches (:class:`shardedstore.shards.source.OwnKeys`). The enumeration reads
only the arrays' metadata in base and lists the array shards' locations; it never
reads a shard.

``info`` and ``validate`` must report every problem and go on, so the enumeration can
also run *tolerantly* (:func:`list_shards` with ``strict=False``): an array whose
metadata or shards cannot be read, or an array shard its factory cannot make, is
recorded in the :class:`ShardListing` instead of raised.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from zarr.abc.store import Store
from zarr.storage import LocalStore

from shardedstore.backends.handles import read_only_handle
from shardedstore.backends.registry import facts_of, local_root_of
from shardedstore.errors import LayoutError, describe_shard
from shardedstore.store.factories import (
    ArrayShardDirectoryFactory,
    ArrayShardFactory,
    ArrayShardStoresFactory,
    ArrayShardTemplateFactory,
    ListableArrayShardFactory,
    make_array_shard,
)
from shardedstore.store.ownkeys import ArrayShardKeys, BaseKeys, MountKeys, OwnKeys

if TYPE_CHECKING:
    from shardedstore.store.metadata import ShardedArrayLayout
    from shardedstore.store.sharded import ShardedStore

__all__ = [
    "ArrayListing",
    "Shard",
    "ShardKind",
    "ShardListing",
    "base_and_mounts",
    "index_key",
    "iter_shards",
    "list_shards",
]

ShardKind = Literal["base", "mount", "array shard"]


class _Handle:
    """An array shard's read-only store, made when first asked for (picklable): listing
    10^6 shards makes no store (and a slotted class, not a frozen dataclass, whose
    ``__init__`` costs a few times more)."""

    __slots__ = ("factory", "index")

    def __init__(self, factory: ArrayShardFactory, index: str) -> None:
        self.factory = factory
        self.index = index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Handle):
            return NotImplemented
        return self.factory == other.factory and self.index == other.index

    def __hash__(self) -> int:
        return hash(self.index)

    def __repr__(self) -> str:
        return f"_Handle({self.factory!r}, {self.index!r})"

    def __call__(self) -> Store:
        if isinstance(self.factory, ArrayShardDirectoryFactory):  # no second store
            return LocalStore(self.factory.path_for(self.index), read_only=True)
        return read_only_handle(self.factory(self.index))

    def local_root(self) -> tuple[str, str] | None:
        """Where the shard is on local disk, if it is, without making its store."""
        factory = self.factory
        if isinstance(factory, ArrayShardDirectoryFactory):
            return "directory", factory.path_for(self.index)
        if isinstance(factory, ArrayShardTemplateFactory):
            spec = factory.spec_for(self.index)
            return None if spec is None else local_root_of(spec)
        return None


_CHEAP = (ArrayShardDirectoryFactory, ArrayShardTemplateFactory, ArrayShardStoresFactory)
"""Factories that always make a store, at no cost but their own: made when needed."""


@dataclass(frozen=True)
class Shard:
    """One shard of a layout: the base, a mount or an array shard.

    Attributes
    ----------
    kind
        ``"base"``, ``"mount"`` or ``"array shard"``.
    path
        The node path of the mount or array-sharded array (``""`` for the base).
    chunk_index
        The array shard's chunk index along the sharded dimensions (``"3"``,
        ``"3.0"``); None for the base and mounts.
    store
        A read-only store of the shard. Zips and array shards are new handles, which
        the caller may close; a zip handle reads the zip as last committed.
    own_keys
        Which keys of the shard a reader of the layout reaches (``own_keys.owns(key)``);
        None when no reader reaches any: an array shard beyond the array's shape
        along the sharded dimensions, or of an array without (usable) metadata in base.
    beyond_shape
        An array shard beyond the array's shape along the sharded dimensions (a resize
        that shrank the array leaves them).
    listed
        False for an array shard whose factory cannot list its shards: the index is a
        candidate within the array's shape, and the shard may not exist.

    Examples
    --------
    >>> for shard in store.shards():  # doctest: +SKIP
    ...     print(shard.name, shard.store)
    base file:///data/base.zarr
    array shard 'simulation/fine/foo' chunk 0 file:///data/array_shards/0.zarr
    """

    kind: ShardKind
    path: str
    chunk_index: str | None
    source: Store | _Handle = field(repr=False)
    own_keys: OwnKeys | None
    beyond_shape: bool = False
    listed: bool = True

    @property
    def local_root(self) -> tuple[str, str] | None:
        """``("directory", path)`` or ``("file", path)`` of a shard on local disk (a zip
        file), else None; an array shard's is told without making its store."""
        source = self.source
        if isinstance(source, _Handle):
            root = source.local_root()
            if root is not None:
                return root
        return facts_of(self.store).local_root

    @property
    def store(self) -> Store:
        """A read-only store of the shard (an array shard's is made when first asked for)."""
        source = self.source
        if isinstance(source, _Handle):
            source = source()
            object.__setattr__(self, "source", source)
        return source

    @property
    def name(self) -> str:
        """The shard as messages name it: ``base``, ``mount 'a'``, ``array shard 'x' chunk 3``."""
        return describe_shard(self.path, self.chunk_index)

    @property
    def reachable(self) -> bool:
        """Whether a reader of the layout reaches any key of this shard."""
        return self.own_keys is not None


@dataclass
class ArrayListing:
    """What the enumeration found out about one array-sharded array.

    Attributes
    ----------
    path
        The array's node path.
    dims
        Number of sharded (leading) dimensions.
    layout
        How the array is laid out in its shards; None without metadata in base (or
        when it could not be read: see ``layout_error``).
    layout_error
        Why the array's metadata in base could not be read (a :class:`LayoutError`:
        it cannot be sharded; anything else: base could not be read).
    listing_error
        Why the array shards could not be listed (then no shard of the array is in
        the listing).
    indices
        The chunk indices of its shards in the listing, in order.
    count
        How many array shards were found (known before :func:`iter_shards` makes them).
    """

    path: str
    dims: int
    layout: ShardedArrayLayout | None = None
    layout_error: Exception | None = None
    listing_error: Exception | None = None
    indices: list[str] = field(default_factory=list)
    count: int = 0


@dataclass
class ShardListing:
    """Every shard of a layout, with what could not be enumerated.

    Attributes
    ----------
    shards
        The base, the mounts (by path), then each array's shards (by array path and
        chunk index).
    arrays
        Array path -> :class:`ArrayListing`, for every array-sharded array.
    unmade
        ``(array path, chunk index, error)`` of array shards whose factory failed.
    """

    shards: list[Shard] = field(default_factory=list)
    arrays: dict[str, ArrayListing] = field(default_factory=dict)
    unmade: list[tuple[str, str, Exception]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Shard]:
        return iter(self.shards)


def index_key(index: str) -> tuple[int, ...]:
    """A chunk index as integers, to sort indices numerically (``"10"`` after ``"9"``)."""
    if "." not in index:  # one sharded dimension, the common case: 4x faster
        return (int(index),)
    return tuple(map(int, index.split(".")))


@dataclass
class _ArrayPlan:
    """What enumerating one array's shards needs: its chunk indices, in order."""

    path: str
    factory: ArrayShardFactory
    keys: OwnKeys | None
    shape: tuple[int, ...] | None
    indices: list[str]
    listed: bool


async def _array_plan(
    store: ShardedStore, path: str, listing: ShardListing, strict: bool, metadata: bool
) -> _ArrayPlan | None:
    """The array's metadata and its shards' chunk indices (None: they cannot be listed)."""
    dims, factory = store.array_shards[path]
    info = listing.arrays[path] = ArrayListing(path, dims)
    keys: OwnKeys | None = None  # no usable metadata in base: no reader reaches the shards
    try:
        info.layout = await store.array_layout(path) if metadata else None
    except LayoutError as error:  # metadata in base that cannot be sharded
        if strict:
            raise
        info.layout_error = error
    except Exception as error:  # base cannot be read: which keys are stray cannot be told
        if strict:
            raise
        info.layout_error = error
        keys = MountKeys()
    if info.layout is not None:
        keys = ArrayShardKeys.of(info.layout)
    listed = isinstance(factory, ListableArrayShardFactory)
    try:
        # In numeric order (``"10"`` after ``"9"``); by name where numbers tie.
        indices = sorted(await store.shard_indices(path))
    except Exception as error:  # the template's directory or prefix cannot be listed
        if strict:
            raise
        info.listing_error = error
        return None
    indices.sort(key=index_key)
    info.count = len(indices)
    shape = info.layout.shape[:dims] if info.layout is not None else None
    return _ArrayPlan(path, factory, keys, shape, indices, listed)


def _array_shards(plan: _ArrayPlan, listing: ShardListing, strict: bool) -> Iterator[Shard]:
    """The shards of one array, each made when reached (10^6 are never all held)."""
    path, factory, keys, shape = plan.path, plan.factory, plan.keys, plan.shape
    indices = listing.arrays[path].indices
    lazy = isinstance(factory, _CHEAP)
    for index in plan.indices:
        handle: Store | _Handle = _Handle(factory, index)
        if not lazy:  # any callable: made now, so that what it raises is reported
            try:
                handle = read_only_handle(make_array_shard(factory, path, index))
            except Exception as error:
                if strict:
                    raise
                listing.unmade.append((path, index, error))
                continue
        beyond = shape is not None and any(map(operator.ge, index_key(index), shape))
        indices.append(index)
        own = None if beyond else keys
        yield Shard("array shard", path, index, handle, own, beyond, plan.listed)


def base_and_mounts(store: ShardedStore) -> list[Shard]:
    """The base and the mounts (by path) of ``store``: no I/O."""
    base, mounts = store.parts.base, store.parts.mounts
    router = store.router
    array_dims = tuple(sorted(router.array_dims.items()))
    shards = [
        Shard("base", "", None, read_only_handle(base), BaseKeys(router.mount_paths, array_dims))
    ]
    for path, mount in sorted(mounts.items()):
        shards.append(Shard("mount", path, None, read_only_handle(mount), MountKeys()))
    return shards


async def iter_shards(
    store: ShardedStore, *, strict: bool = True, metadata: bool = True
) -> tuple[ShardListing, Iterator[Shard]]:
    """:func:`list_shards`, with the shards given one at a time: bounded memory.

    Returns the listing, whose ``shards`` stay empty, and an iterator over the shards
    (in the listing's order) that makes each array shard when it is reached. The
    arrays' metadata and chunk indices are read before this returns; each
    :class:`ArrayListing`'s ``indices`` and the listing's ``unmade`` are complete once
    the iterator is exhausted (with ``strict``, a factory's error is raised by it).
    Iterate once.
    """
    listing = ShardListing()
    head = base_and_mounts(store)
    paths = sorted(store.array_shards)
    plans = await asyncio.gather(
        *(_array_plan(store, path, listing, strict, metadata) for path in paths)
    )
    listing.arrays = {path: listing.arrays[path] for path in paths}  # in path order

    def shards() -> Iterator[Shard]:
        yield from head
        for plan in plans:
            if plan is not None:
                yield from _array_shards(plan, listing, strict)

    return listing, shards()


async def list_shards(
    store: ShardedStore, *, strict: bool = True, metadata: bool = True
) -> ShardListing:
    """Enumerate the base, every mount and every existing array shard of ``store``.

    Parameters
    ----------
    store
        The layout.
    strict
        Raise when an array's metadata or shards cannot be read (else record it in
        the listing and go on, as ``info`` and ``validate`` do).
    metadata
        Read the arrays' metadata in base. ``validate`` passes False when base
        cannot be reached: array shards then have no layout and no own keys.
    """
    listing, shards = await iter_shards(store, strict=strict, metadata=metadata)
    listing.shards.extend(shards)
    return listing
