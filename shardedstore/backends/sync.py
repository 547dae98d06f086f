"""Run a coroutine on zarr's event loop so that one Ctrl-C stops it, quietly.

zarr's ``sync()`` waits for the coroutine in the calling thread; a Ctrl-C there
raises ``KeyboardInterrupt`` but leaves the coroutine running on zarr's loop thread,
which then fails noisily at interpreter exit ("cannot schedule new futures after
shutdown", "coroutine was never awaited"). :func:`interruptible_sync` cancels the
coroutine and waits (briefly) until it has unwound before re-raising.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from zarr.core.sync import _get_loop

__all__ = ["interruptible_sync"]

T = TypeVar("T")

_UNWIND_SECONDS = 5.0
"""How long an interrupted coroutine may take to unwind (running threads finish)."""


def interruptible_sync(coro: Coroutine[Any, Any, T]) -> T:
    """``zarr.core.sync.sync(coro)``, cancelling ``coro`` if the wait is interrupted."""
    unwound = threading.Event()

    async def run() -> T:
        try:
            return await coro
        finally:
            unwound.set()

    future = asyncio.run_coroutine_threadsafe(run(), _get_loop())
    try:
        return future.result()
    except BaseException:
        if not future.done():
            future.cancel()  # cancels the task on zarr's loop
            unwound.wait(_UNWIND_SECONDS)
        raise
