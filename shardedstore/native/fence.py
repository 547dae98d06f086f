"""A request's chunk writes, fenced: none of them lands after the request has raised.

zarr's own pipeline (``BatchedCodecPipeline``, which zarrs falls back to for what it
declines) writes chunks in tasks it gathers without waiting for the others when one
fails, and newer zarr cancels them, which does not stop a write already in a thread.
So a failed ``array[...] = v`` could raise while some of its chunk writes were still to
come, and those would land after the caller's next write. The engine pipeline hands
every byte setter through a :class:`WriteFence`; once the request is over, the fence
waits for the writes in flight and drops any that start later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from zarr.storage import StorePath

if TYPE_CHECKING:
    from zarr.abc.store import Store
    from zarr.core.buffer import Buffer

__all__ = ["FencedStorePath", "WriteFence"]


def _retrieve(task: asyncio.Task[None]) -> None:
    # A write awaited by nobody (its request already failed): its outcome is observed here.
    if not task.cancelled():
        task.exception()


class WriteFence:
    """The chunk writes of one request: let through while it runs, waited for at its end."""

    __slots__ = ("_open", "_running")

    def __init__(self) -> None:
        self._open = True
        self._running: set[asyncio.Task[None]] = set()

    def path(self, store: Store, path: str) -> FencedStorePath:
        """A byte setter for ``path`` in ``store`` whose writes go through this fence."""
        return FencedStorePath(store, path, self)

    def fenced(self, setter: Any) -> Any:
        """``setter`` through this fence if it is a ``StorePath`` (zarr's byte setter)."""
        return self.path(setter.store, setter.path) if type(setter) is StorePath else setter

    async def run(self, write: Coroutine[Any, Any, None]) -> None:
        """Run ``write`` unless the request is over; if the caller is cancelled, it still
        completes, and :meth:`close` waits for it."""
        if not self._open:
            write.close()
            return
        task = asyncio.ensure_future(write)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)

    async def close(self) -> None:
        """End the request: wait for the writes in flight; drop those not started."""
        self._open = False
        while self._running:
            await asyncio.wait(tuple(self._running))


class FencedStorePath(StorePath):
    """A ``StorePath`` whose writes and deletes go through a :class:`WriteFence`."""

    def __init__(self, store: Store, path: str, fence: WriteFence) -> None:
        super().__init__(store, path)
        self._fence = fence

    async def set(self, value: Buffer) -> None:
        # docstring inherited
        await self._fence.run(super().set(value))

    async def set_if_not_exists(self, default: Buffer) -> None:
        # docstring inherited
        await self._fence.run(super().set_if_not_exists(default))

    async def delete(self) -> None:
        # docstring inherited
        await self._fence.run(super().delete())
