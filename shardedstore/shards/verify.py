"""Verify a conversion: every shard's own keys, compared by size and crc32.

The comparison is per shard (base, each mount, each array shard) over the keys a
transform copies (see :mod:`shardedstore.shards.source`), so that stray keys a
conversion left out on purpose are not counted as differences, and a key that moved
to another shard would be.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from zarr.core.buffer import default_buffer_prototype

from shardedstore.backends.crc import crc32
from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.handles import gather_bounded, opened
from shardedstore.backends.sync import interruptible_sync
from shardedstore.errors import VerificationError, describe_shard
from shardedstore.shards.source import ShardSource, shard_sources

if TYPE_CHECKING:
    from shardedstore.store.sharded import ShardedStore

__all__ = ["VerificationError", "Verified", "verify_conversion"]

Digests = dict[tuple[str, str | None], dict[str, tuple[int, int]]]


class Verified:
    """What a verification compared: ``keys`` own keys holding ``bytes`` bytes.

    ``keys`` is ``documents`` (metadata documents: ``zarr.json``, ``.zarray``, ...,
    one per node and one per array shard) plus ``chunks``.
    """

    def __init__(self, keys: int, nbytes: int, documents: int = 0) -> None:
        self.keys = keys
        self.bytes = nbytes
        self.documents = documents
        self.chunks = keys - documents


async def _shard_digests(source: ShardSource) -> dict[str, tuple[int, int]]:

    if not await opened(source):
        return {}
    keys = sorted({key async for key in source.list()})
    prototype = default_buffer_prototype()

    async def one(key: str) -> tuple[int, int]:
        value = await source.get(key, prototype)
        data = b"" if value is None else value.to_bytes()
        return len(data), crc32(data)

    return dict(zip(keys, await gather_bounded(one(key) for key in keys), strict=True))


_SHARDS_AT_ONCE = 8
"""Shards read concurrently while verifying (each reads its keys concurrently too)."""


async def _digests(store: ShardedStore, include_stray: bool) -> Digests:
    plan = await shard_sources(store, include_stray=include_stray)
    semaphore = asyncio.Semaphore(_SHARDS_AT_ONCE)

    async def one(source: ShardSource) -> dict[str, tuple[int, int]]:
        async with semaphore:
            return await _shard_digests(source)

    digests = await asyncio.gather(*(one(source) for _, _, source in plan.sources))
    return {
        (path, index): found for (path, index, _), found in zip(plan.sources, digests, strict=True)
    }


def verify_conversion(
    source: ShardedStore, converted: ShardedStore, *, include_stray: bool = False
) -> Verified:
    """Compare every shard's own keys of ``converted`` with those of ``source``.

    Raises
    ------
    VerificationError
        Naming the shards and keys that differ (missing, extra, other size or crc32).
    """
    before = interruptible_sync(_digests(source, include_stray))
    after = interruptible_sync(_digests(converted, include_stray))
    differing: list[str] = []
    for shard in sorted(before.keys() | after.keys(), key=lambda s: (s[0], s[1] or "")):
        old, new = before.get(shard, {}), after.get(shard, {})
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                differing.append(f"{describe_shard(*shard)}: {key!r}")
    if differing:
        raise VerificationError(
            f"verification failed: {len(differing)} key(s) differ after conversion, e.g. "
            f"{differing[:3]}; the source or the output changed while converting: remove "
            "the output (or convert into another --out) and convert again"
        )
    return Verified(
        sum(len(keys) for keys in before.values()),
        sum(size for keys in before.values() for size, _ in keys.values()),
        sum(is_metadata_document(key) for keys in before.values() for key in keys),
    )
