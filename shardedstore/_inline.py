"""Inline I/O: fast sub-stores are called in the event loop, slow ones through threads.

zarr's ``LocalStore`` hands every ``get``/``set`` to a thread (``asyncio.to_thread``).
For a small chunk read from the page cache the hop costs several times the read
itself. A sub-store that implements zarr's sync protocols (``get_sync``, ``set_sync``,
``delete_sync``: ``LocalStore``, ``MemoryStore``, :class:`CopyOnWriteZipStore`) can be
called inline instead, with no hop at all (see :func:`inline_capable` for which
ones qualify), as long as its calls are fast: a call that
blocks the event loop for long would serialize requests that zarr wants concurrent
(network filesystems such as NFS, Lustre or GPFS, a slow or cold disk).

So each group of sub-stores (the base, one mount, the shards of one array) keeps a
running estimate of its per-call time, measured around the sync call itself in both
modes. While the estimate is at most :data:`INLINE_THRESHOLD`, calls run inline; above
it they go through a thread, where zarr's concurrency hides the latency, and the
thread-side measurements bring them back inline once the storage is fast again (a
page cache warmed up, say). The first call of a group is measured inline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from zarr.abc.store import Store, SupportsSyncStore

__all__ = ["INLINE_THRESHOLD", "Latency", "inline_capable"]

INLINE_THRESHOLD = 250e-6
"""Seconds per call above which a sub-store is called through a thread."""

_WEIGHT = 0.2
"""Weight of the newest sample in the running estimate."""

T = TypeVar("T")


def _owner(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def inline_capable(store: Store) -> bool:
    """Whether ``store``'s sync methods may be called inline from the event loop.

    Only when the class that defines ``get``/``set`` also defines ``get_sync``/
    ``set_sync``: a subclass that overrides ``get`` (to log, authenticate, count) and
    inherits ``get_sync`` must keep being called through its ``get``. A nested
    ShardedStore is excluded: its sync writes can need its own async code.
    """
    from shardedstore._store import ShardedStore

    if isinstance(store, ShardedStore) or not isinstance(store, SupportsSyncStore):
        return False
    kind = type(store)
    return all(
        _owner(kind, name) is _owner(kind, f"{name}_sync") for name in ("get", "set", "delete")
    )


class Latency:
    """The running per-call time of one group of sub-stores, and what it implies."""

    __slots__ = ("estimate", "samples")

    def __init__(self) -> None:
        self.estimate = 0.0
        self.samples = 0

    @property
    def inline(self) -> bool:
        """Whether the next call should run inline."""
        return self.estimate <= INLINE_THRESHOLD

    def record(self, seconds: float) -> None:
        """Add one measured call."""
        if self.samples == 0:
            self.estimate = seconds
        else:
            self.estimate += _WEIGHT * (seconds - self.estimate)
        self.samples += 1

    def timed(self, call: Callable[[], T]) -> T:
        """Run ``call`` (blocking) and record how long it took."""
        start = time.perf_counter()
        try:
            return call()
        finally:
            self.record(time.perf_counter() - start)

    async def run(self, call: Callable[[], T]) -> T:
        """Run the blocking ``call`` inline or in a thread, whichever this group needs."""
        if self.inline:
            return self.timed(call)
        return await asyncio.to_thread(self.timed, call)
