"""Which keys of one shard a reader of the layout reaches (pure: no I/O).

- base: every key the layout routes to base (not those under a mount point, which the
  mount hides, nor chunk keys of an array-sharded array, which its array shards hide);
- a mount: every valid Zarr key it holds;
- an array shard: the metadata documents the array's metadata in base implies for it,
  and the chunk keys within the array's chunk grid.

Everything else in a shard is a stray key. The records pickle, so that a task in
another process knows them (transforms, chunk tables).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Generic, Protocol, TypeVar

from shardedstore.errors import KeyValidationError
from shardedstore.store.metadata import ShardedArrayLayout
from shardedstore.store.routing import (
    ARRAY_METADATA,
    BASE,
    ChunkKeyFormat,
    Router,
    parse_chunk_key,
    validate_key,
)

__all__ = ["ArrayShardKeys", "BaseKeys", "KeyVerdicts", "MountKeys", "OwnKeys"]

_V = TypeVar("_V")


def _valid(key: str) -> bool:
    try:
        validate_key(key)
    except KeyValidationError:
        return False
    return True


class OwnKeys(Protocol):
    """Which keys of one shard a reader of the layout reaches (picklable)."""

    def owns(self, key: str) -> bool: ...


@dataclass(frozen=True)
class MountKeys:
    """A mount: every valid key is reachable (``mount/key``)."""

    def owns(self, key: str) -> bool:
        return _valid(key)


@dataclass(frozen=True)
class BaseKeys:
    """The base: keys routed to base, not those hidden by mounts or array shards."""

    mount_paths: tuple[str, ...]
    array_dims: tuple[tuple[str, int], ...]

    @cached_property
    def _router(self) -> Router:
        return Router(self.mount_paths, dict(self.array_dims))

    def owns(self, key: str) -> bool:
        return _valid(key) and self._router.route(key)[0] in (BASE, ARRAY_METADATA)


@dataclass(frozen=True)
class ArrayShardKeys:
    """An array shard: its metadata documents and chunk keys within the chunk grid.

    Attributes
    ----------
    documents
        Names of the metadata documents base implies for the shard (``zarr.json``).
    key_format
        How the array spells chunk keys.
    grid
        Number of chunks along each remaining dimension (None: not checked).
    """

    documents: frozenset[str]
    key_format: ChunkKeyFormat
    grid: tuple[int, ...] | None

    @classmethod
    def of(cls, layout: ShardedArrayLayout) -> ArrayShardKeys:
        return cls(frozenset(layout.shard_documents), layout.key_format, _grid(layout))

    def owns(self, key: str) -> bool:
        if key in self.documents:
            return True
        fmt = self.key_format
        coords = parse_chunk_key(key, fmt.prefix, fmt.separator, fmt.remaining_ndim)
        if coords is None:
            return False
        return self.grid is None or all(
            coord < size for coord, size in zip(coords, self.grid, strict=False)
        )


def _grid(layout: ShardedArrayLayout) -> tuple[int, ...] | None:
    """Chunks along each remaining dimension, from the shard's own metadata."""
    try:
        if "zarr.json" in layout.shard_documents:
            doc = json.loads(layout.shard_documents["zarr.json"])
            shape = doc["shape"]
            chunks = doc["chunk_grid"]["configuration"]["chunk_shape"]
        else:
            doc = json.loads(layout.shard_documents[".zarray"])
            shape, chunks = doc["shape"], doc["chunks"]
        return tuple(math.ceil(int(s) / int(c)) for s, c in zip(shape, chunks, strict=True))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None  # metadata zarr itself could not read: check key shapes only


class KeyVerdicts(Generic[_V]):
    """``verdict(key)`` remembered per key name.

    The array shards of one array hold the same few inner keys (``zarr.json``,
    ``c/0/0``) 10^6 times over: looking at every shard (``info``, ``validate``) judges
    each name once, not once per shard. At most ``limit`` names are kept (then the
    record starts afresh), so memory stays bounded whatever the shards hold.

    Parameters
    ----------
    verdict
        A pure function of the key (an :meth:`OwnKeys.owns`, say).
    limit
        Most names remembered at once.
    """

    __slots__ = ("_limit", "_seen", "_verdict")

    def __init__(self, verdict: Callable[[str], _V], limit: int = 1 << 16) -> None:
        self._verdict = verdict
        self._limit = limit
        self._seen: dict[str, _V] = {}

    def __call__(self, key: str) -> _V:
        seen = self._seen
        try:
            return seen[key]
        except KeyError:
            pass
        value = self._verdict(key)
        if len(seen) >= self._limit:
            seen.clear()
        seen[key] = value
        return value
