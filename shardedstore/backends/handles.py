"""Handles on stores: opened on first use, read-only views, bounded fan-out.

Every layer opens sub-stores the same way: lazily, a read-only view of a shard that
was never written reading as empty (as zarr expects of missing keys), never creating
it. What is here knows zarr's ``Store`` interface and zips, nothing of a layout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import TypeVar

from zarr.abc.store import Store
from zarr.core.common import concurrent_map
from zarr.storage import ZipStore

from shardedstore.backends.zips import copy_on_write, read_only_zip

__all__ = [
    "FANOUT_LIMIT",
    "collect",
    "gather_bounded",
    "opened",
    "read_only_handle",
    "read_only_view",
]

T = TypeVar("T")

FANOUT_LIMIT = 64
"""Most sub-store requests one listing, delete or inspection keeps in flight at once."""


async def opened(store: Store) -> bool:
    """Open ``store`` if needed. False when a read-only store does not exist yet.

    A read-only view of a shard that was never written (a missing directory or zip)
    reads as empty, as zarr expects of missing keys.
    """
    if store._is_open:
        return True
    try:
        await store._open()
    except FileNotFoundError:
        if store.read_only:
            return False
        raise
    except ValueError:
        # "store is already open": another request opened it meanwhile (read again:
        # the await above may have changed it).
        if getattr(store, "_is_open", False):
            return True
        raise
    return True


def read_only_view(store: Store, read_only: bool = True) -> Store:
    """``store`` with ``read_only`` set (itself when it already is, or cannot say)."""
    if store.read_only == read_only:
        return store
    if read_only and isinstance(store, ZipStore):
        return read_only_zip(store)
    try:
        return store.with_read_only(read_only)
    except NotImplementedError:
        return store


def read_only_handle(store: Store) -> Store:
    """A read-only handle on a shard's store; a zip is a new handle, safe to pickle."""
    store = copy_on_write(store)
    if isinstance(store, ZipStore):
        return read_only_zip(store, fresh=True)
    return read_only_view(store)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def gather_bounded(awaitables: Iterable[Awaitable[T]], limit: int = FANOUT_LIMIT) -> list[T]:
    """Await concurrently, at most ``limit`` at a time; results in order.

    zarr's ``concurrent_map`` over awaitables already made (of different kinds).
    """
    return await concurrent_map([(awaitable,) for awaitable in awaitables], _awaited, limit)


async def collect(iterator: AsyncIterator[str]) -> list[str]:
    """Every item of an async iterator (a listing), in order."""
    return [item async for item in iterator]
