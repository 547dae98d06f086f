"""A request split by the local directory each of its chunks lives in (the layout's
routing; no I/O).

zarr hands a codec pipeline one item per chunk. The chunk keys of a request are parsed
once (one regular expression per key), its chunks grouped by array shard (their first
coordinates) with arrays, and the layout asked for one store per shard, not per chunk.
The chunks of local directories go to a native engine; the rest to zarr's pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.storage import LocalStore, StorePath

from shardedstore.native.regions import Boxes, ChunkKeys

if TYPE_CHECKING:
    from zarr.abc.store import Store
    from zarr.core.array_spec import ArraySpec

    from shardedstore.store.sharded import ShardedStore

__all__ = ["BatchItem", "Group", "split_batch"]

BatchItem = tuple[Any, "ArraySpec", Any, Any, bool]
"""``(byte getter or setter, chunk spec, chunk_selection, out_selection, is_complete)``."""


@dataclass(slots=True)
class Group:
    """The chunks of one request that live in one local directory (one store).

    Attributes
    ----------
    root
        The store's directory.
    directory
        The array's directory there: ``root`` for an array shard, the array's node
        below it in a base or mount.
    drop
        The array's sharded dims (0 in a base or mount).
    prefix
        The array's node in the store, with a ``/`` (``""`` for an array shard).
    node
        The array's node path in the layout.
    items
        The group's items, as zarr gave them.
    coords
        ``(chunks, ndim)``: the items' chunk coordinates.
    boxes
        The boxes of the request's local chunks (None: not asked for, or not all of
        them are boxes).
    rows
        The group's rows in ``boxes``.
    """

    root: str
    directory: str
    drop: int
    prefix: str
    node: str
    items: list[BatchItem] = field(default_factory=list)
    coords: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty((0, 0), np.int64))
    boxes: Boxes | None = None
    rows: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, np.intp))

    def engine_keys(self, keys: ChunkKeys) -> tuple[str, list[str]]:
        """``(parent directory, keys under it)`` for zarrs: one pipeline per parent serves
        every array shard in it (``array_shards/{chunk}.zarr``)."""
        parent, name = os.path.split(self.root.rstrip("/"))
        if not name or not parent:
            parent, name = self.root, ""
        head = f"{name}/" if name else ""
        if self.drop:
            inner = [keys.encode(coords[self.drop :]) for coords in self.coords.tolist()]
        else:
            cut = len(self.node) + 1 if self.node else 0
            inner = [self.prefix + item[0].path[cut:] for item in self.items]
        return parent, [head + key for key in inner]


def split_batch(
    layout: ShardedStore,
    keys: ChunkKeys,
    batch: list[BatchItem],
    chunk_shape: tuple[int, ...] | None,
) -> tuple[list[Group], list[BatchItem]]:
    """The items of ``batch`` by the local directory they live in, and the rest.

    Parameters
    ----------
    layout
        The layout the array is in (items of other stores are the rest).
    keys
        How the array spells its chunk keys.
    batch
        The items, as zarr gives them to a codec pipeline.
    chunk_shape
        The shape of the chunks zarr hands the pipeline, to find each group's box
        (None: boxes not wanted).
    """
    paths = [
        item[0].path if isinstance(item[0], StorePath) and item[0].store is layout else None
        for item in batch
    ]
    node = next((split[0] for path in paths if path and (split := keys.split(path))), None)
    if node is None:
        return [], batch
    found = keys.match(node, paths)
    rest = [item for item, digits in zip(batch, found, strict=True) if digits is None]
    local = [item for item, digits in zip(batch, found, strict=True) if digits is not None]
    if not local:
        return [], rest
    digits = chain.from_iterable(digits for digits in found if digits is not None)
    coords = np.fromiter(map(int, digits), np.int64).reshape(-1, keys.ndim)
    boxes = None
    if chunk_shape is not None:
        selections = [item[2] for item in local], [item[3] for item in local]
        boxes = Boxes.of(coords, *selections, chunk_shape)
    drop = layout.router.array_dims.get(node, 0)
    if drop:
        shards = np.unique(coords[:, :drop], axis=0, return_inverse=True)[1].reshape(-1)
        order = np.argsort(shards, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(shards))[:-1])
    else:
        members = [np.arange(len(local))]
    groups: list[Group] = []
    routes = layout.stores_for_read([local[rows[0]][0].path for rows in members])
    for rows, route in zip(members, routes, strict=True):
        group = _group(route, local[rows[0]][0].path, node, drop)
        chunks = [local[row] for row in rows.tolist()]
        if group is None:
            rest.extend(chunks)
            continue
        group.items, group.coords, group.boxes, group.rows = chunks, coords[rows], boxes, rows
        groups.append(group)
    return groups, rest


def _group(route: tuple[Store, str], key: str, node: str, drop: int) -> Group | None:
    """The group of ``key``, in the store and at the inner key ``route`` gives (None:
    not a local directory)."""
    store, inner = route
    # Exactly zarr's LocalStore: a subclass may read in its own way.
    if type(store) is not LocalStore:
        return None
    root = str(store.root)
    if drop:
        return Group(root, root, drop, "", node)
    chunk = key[len(node) + 1 :] if node else key
    prefix = inner[: len(inner) - len(chunk)]
    if prefix + chunk != inner:
        return None
    directory = os.path.join(root, prefix.rstrip("/")) if prefix else root
    return Group(root, directory, 0, prefix, node)
