"""Shared fixtures: an in-memory array-shard factory and a routing oracle."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from zarr.storage import MemoryStore

from shardedstore import ShardedStore


@dataclass(eq=True)
class MemoryShardFactory:
    """Array shards in memory: one MemoryStore per chunk index, made on demand.

    Listable (it knows which shards it made) and sync-capable, like the directory factory.
    """

    stores: dict[str, MemoryStore] = field(default_factory=dict)
    supports_sync = True

    def __call__(self, chunk_index: str) -> MemoryStore:
        if chunk_index not in self.stores:
            self.stores[chunk_index] = MemoryStore()
        return self.stores[chunk_index]

    def existing_chunk_indices(self) -> list[str]:
        return [index for index, store in self.stores.items() if store._store_dict]


_INDEX = r"(?:0|[1-9][0-9]*)"


def locate(store: ShardedStore, key: str) -> tuple[str, str | None, str]:
    """Where a key should physically live, computed independently of the router.

    Returns ``(node, chunk_index, inner_key)``; node ``""`` is the base.
    """
    for mount in store.mounts:
        if key.startswith(mount + "/"):
            return mount, None, key[len(mount) + 1 :]
    for array, (dims, _) in store.array_shards.items():
        if not key.startswith(array + "/"):
            continue
        rest = key[len(array) + 1 :]
        m = re.fullmatch(rf"c([/.])({_INDEX}(?:\1{_INDEX})*)", rest)
        if m:
            sep, parts = m.group(1), m.group(2).split(m.group(1))
            prefix = "c"
        elif re.fullmatch(rf"{_INDEX}(?:/{_INDEX})*", rest):
            sep, parts, prefix = "/", rest.split("/"), ""
        elif re.fullmatch(rf"{_INDEX}(?:\.{_INDEX})*", rest):
            sep, parts, prefix = ".", rest.split("."), ""
        else:
            return "", None, key
        if len(parts) < dims:
            return "", None, key
        index, remaining = ".".join(parts[:dims]), parts[dims:]
        if prefix:
            inner = "c" + (sep + sep.join(remaining) if remaining else "")
        else:
            inner = sep.join(remaining) if remaining else "0"
        return array, index, inner
    return "", None, key
