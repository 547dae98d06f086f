"""The parts of a layout as given: its base, mounts and array-shard factories.

A :class:`ShardedStore` reads through read-only views and cache wrappers of the stores
it was given; its config, equality, pickles and overlap checks describe the stores as
given. :class:`LayoutParts` is that description, and :class:`Layered` is what any store
made of other stores offers (a nested layout is looked into, not treated as one store).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from zarr.abc.store import Store

from shardedstore.store.factories import ArrayShardSpec

__all__ = ["Layered", "LayoutParts"]


@dataclass(frozen=True)
class LayoutParts:
    """The stores of a layout as given (not the views it reads through).

    Attributes
    ----------
    base
        The store of every key that is not mounted or array-sharded.
    mounts
        Node path -> mounted store.
    array_shards
        Array path -> ``(dims, factory)``.
    """

    base: Store
    mounts: Mapping[str, Store]
    array_shards: Mapping[str, ArrayShardSpec]


@runtime_checkable
class Layered(Protocol):
    """A store made of other stores (a :class:`ShardedStore`)."""

    @property
    def parts(self) -> LayoutParts:
        """The stores it is made of, as given."""
        ...
