"""Read-ahead along the sharded dimension: fetch shard t+1 while shard t is read.

A layout knows which store holds the next time step. When a chunk of array shard
``t`` is read right after one of ``t - 1`` (same remaining indices, first index one
up), :class:`ReadAhead` asks the stores of shards ``t + 1 ... t + depth`` to fetch
themselves into the layout's cache (``prefetch()``: a zip shard in one GET, a
directory shard object by object). Random access never triggers it. At most ``depth``
shards are fetched at once, and as each one is done the next one ahead of the reader
starts (the window stays full). The array's shape is read on its first read, so
that nothing waits for it later. What was fetched lives in the bounded cache, and
:meth:`ReadAhead.close` cancels what is still running (so does the interpreter's exit).

Only shards inside the array's shape are asked for (never ``t + 1`` past the last time
step), and a shard whose fetch failed is not asked for again while it is remembered:
the read itself reports the error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from zarr.abc.store import Store

__all__ = ["ReadAhead"]

logger = logging.getLogger(__name__)

_REMEMBERED = 4
"""Shards already fetched ahead are remembered for this many times ``depth`` requests."""


def _parts(index: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in index.split("."))
    except ValueError:
        return None


class ReadAhead:
    """Fetches the next array shards of a layout in the background.

    Parameters
    ----------
    depth
        How many shards ahead (``k``); also the most shards fetched at once.
    open_shard
        ``open_shard(array_path, chunk_index)``: the store to read that array shard
        through (no I/O). Stores without a ``prefetch()`` coroutine are skipped.
    sharded_shape
        ``await sharded_shape(array_path)``: the array's shape along its sharded
        dimensions (None: unknown, then nothing is fetched ahead). Asked once per array.
    """

    def __init__(
        self,
        depth: int,
        open_shard: Callable[[str, str], Store],
        sharded_shape: Callable[[str], Awaitable[tuple[int, ...] | None]] | None = None,
    ) -> None:
        self.depth = depth
        self._open_shard = open_shard
        self._sharded_shape = sharded_shape
        self._shapes: dict[str, tuple[int, ...] | None] = {}
        self._last: dict[str, str] = {}
        self._window: dict[str, list[str]] = {}
        """The shards ahead of the last one read, per array read in order."""
        self._asked: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._closed = False
        self.fetched = 0
        """Shards fetched ahead so far (for tests and benchmarks)."""
        # A store dropped while fetches run stops them (asyncio keeps only weak
        # references to tasks: they would be destroyed pending).
        weakref.finalize(self, _cancel, self._running)

    def shard_read(self, array: str, index: str) -> None:
        """Array shard ``index`` of ``array`` is being read: look ahead if sequential."""
        last = self._last.get(array)
        if last == index:
            return  # the common case: another chunk of the same shard
        self._last[array] = index
        if self._closed:
            return
        if last is None:
            # The first read of the array: learn its shape now, so that reading ahead
            # (from the next shard on) does not wait for its metadata.
            self.hint(array, [])
            return
        now, before = _parts(index), _parts(last)
        if now is None or before is None or now[1:] != before[1:] or now[0] != before[0] + 1:
            self._window.pop(array, None)
            return
        rest = ".".join(str(part) for part in now[1:])
        ahead = [
            f"{now[0] + step}{'.' + rest if rest else ''}" for step in range(1, self.depth + 1)
        ]
        self._window[array] = ahead
        self.hint(array, ahead)

    def hint(self, array: str, indices: Iterable[str]) -> None:
        """Fetch these array shards ahead, in order, as far as ``depth`` allows.

        Indices outside the array's shape along its sharded dimensions are skipped.
        """
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a synchronous caller: nothing to run the fetches on
        if self._sharded_shape is not None and array not in self._shapes:
            # The shape first (one read of the array's metadata, usually cached); the
            # shards ahead of the last one read are asked for once it is known.
            if (array, "") not in self._running:
                self._running[(array, "")] = _started(loop, self._with_shape(array))
            return
        shape = self._shapes.get(array)
        for index in indices:
            parts = _parts(index)
            if self._sharded_shape is not None and (
                shape is None
                or parts is None
                or len(parts) != len(shape)
                or any(p >= n for p, n in zip(parts, shape, strict=True))
            ):
                continue  # past the array's end: there is nothing to fetch
            key = (array, index)
            if key in self._asked:
                continue
            if len(self._running) >= self.depth:
                break
            store = self._open_shard(array, index)
            prefetch: Callable[[], Coroutine[Any, Any, None]] | None = getattr(
                store, "prefetch", None
            )
            self._remember(key)
            if prefetch is None:
                continue
            self._running[key] = _started(loop, self._run(key, prefetch))

    async def _with_shape(self, array: str) -> None:
        assert self._sharded_shape is not None
        try:
            self._shapes[array] = await self._sharded_shape(array)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the read itself will report it
            logger.debug("read-ahead: shape of %s unknown: %r", array, error)
            self._shapes[array] = None
        finally:
            self._running.pop((array, ""), None)
        self.hint(array, self._window.get(array, ()))

    def _remember(self, key: tuple[str, str]) -> None:
        self._asked[key] = None
        while len(self._asked) > _REMEMBERED * max(self.depth, 1):
            self._asked.popitem(last=False)

    async def _run(
        self, key: tuple[str, str], prefetch: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        try:
            await prefetch()
            self.fetched += 1
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the read itself will report it
            # Remembered as asked: not tried again on every read that follows.
            logger.debug("read-ahead of array shard %s %s failed: %r", *key, error)
        finally:
            self._running.pop(key, None)
        # Not cancelled: keep the window full (the next shard ahead of the last read).
        self.hint(key[0], self._window.get(key[0], ()))

    def close(self) -> None:
        """Cancel the fetches still running; look no further ahead."""
        self._closed = True
        _cancel(self._running)

    @property
    def in_flight(self) -> int:
        """Shards being fetched ahead right now."""
        return len(self._running)


_tasks: set[asyncio.Task[None]] = set()
"""Every fetch running ahead in this process (strong references: see ReadAhead)."""


def _started(
    loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    task = loop.create_task(coroutine)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


def _cancel(running: dict[tuple[str, str], asyncio.Task[None]]) -> None:
    for task in list(running.values()):
        with contextlib.suppress(RuntimeError):  # its loop is closed already
            task.get_loop().call_soon_threadsafe(task.cancel)


@atexit.register
def _stop_at_exit() -> None:
    """Stop every fetch still running, and wait (briefly) until it has.

    atexit runs this before zarr's own clean-up (registered earlier, when zarr was
    imported) stops its event loop, so no fetch is destroyed pending ("Task was
    destroyed but it is pending").
    """
    for task in list(_tasks):
        loop = task.get_loop()
        if loop.is_closed() or not loop.is_running():
            continue

        async def stopped(task: asyncio.Task[None] = task) -> None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stopped(), loop).result(timeout=1.0)
