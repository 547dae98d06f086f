"""Array shards as samples for training loops: ``iter_shards``."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import itertools
import threading
import weakref
from collections import deque
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shardedstore.errors import LayoutError

if TYPE_CHECKING:
    from shardedstore.store.sharded import ShardedStore

__all__ = ["DEFAULT_SHUFFLE_SEED", "iter_shards"]

ShardIndex = int | tuple[int, ...]
Item = tuple[ShardIndex, np.ndarray[Any, Any]]

DEFAULT_SHUFFLE_SEED = 0
"""The seed of ``order="shuffle"`` when several workers are given none.

Workers must agree on the order to own disjoint shares, so without a seed they all
use this one (as ``torch.utils.data.DistributedSampler`` uses 0): every pass then
gives the same order; pass a new ``seed`` per epoch for a new one.
"""

_SETTLE_SECONDS = 5.0
"""How long stopping an iterator waits for its reads ahead to be cancelled."""

# Iterators not finished yet: closed at exit, before zarr stops its event loop (atexit
# runs the last registered first), so that no read ahead is left pending.
_open_iterators: weakref.WeakSet[Generator[Item, None, None]] = weakref.WeakSet()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def _close_open_iterators() -> None:
    for shards in list(_open_iterators):
        with contextlib.suppress(ValueError):  # running in another thread right now
            shards.close()


def _close_at_exit(shards: Generator[Item, None, None]) -> None:
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:  # after zarr's own hook, so it runs before it
            atexit.register(_close_open_iterators)
            _exit_hook_registered = True
    _open_iterators.add(shards)


def _cancel(
    futures: list[concurrent.futures.Future[np.ndarray[Any, Any]]],
    running: set[asyncio.Task[np.ndarray[Any, Any]]],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Cancel the reads ahead and wait (briefly) until they have stopped.

    A read left pending when zarr stops its loop at exit would be reported as "Task
    was destroyed but it is pending".
    """
    if loop.is_closed():
        return  # nothing runs any more, and cancelling would call into a closed loop
    for future in futures:
        future.cancel()
    with contextlib.suppress(RuntimeError):
        if asyncio.get_running_loop() is loop:
            return  # closed from the loop itself: it must not wait for itself
    if not loop.is_running():
        return

    async def settle() -> None:
        tasks = [task for task in running if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):  # the loop stopped meanwhile, or took too long
        asyncio.run_coroutine_threadsafe(settle(), loop).result(_SETTLE_SECONDS)


def iter_shards(
    store: ShardedStore,
    array: str,
    *,
    order: Literal["sequential", "shuffle"] = "sequential",
    seed: int | None = None,
    worker: int = 0,
    num_workers: int = 1,
    read_ahead: int = 2,
) -> Iterator[Item]:
    """Yield the array shards of ``array`` one by one, as numpy arrays.

    Each item is one index along the sharded dimensions (one time step, say) and the
    array's values there. Meant for training loops: with ``num_workers`` workers
    (``torch.utils.data`` DataLoader workers, ranks of a job) each worker gets its own
    disjoint share of the shards, and the next ``read_ahead`` shards are read while
    the current one is used.

    Parameters
    ----------
    store
        The layout.
    array
        The path of an array-sharded array (``"simulation/fine/temperature"``).
    order
        ``"sequential"``: by index. ``"shuffle"``: a random permutation drawn from
        ``seed`` (pass the same seed to every worker and a new one per epoch).
    seed
        Seed of the shuffle. Workers must agree on it, so with ``num_workers > 1`` and
        no seed, every worker uses seed 0 (``DEFAULT_SHUFFLE_SEED``): the same order in
        every pass. One worker without a seed gets a new permutation each time.
    worker, num_workers
        This worker's number (``0 <= worker < num_workers``) and how many there are.
        Worker ``w`` gets positions ``w, w + num_workers, ...`` of the order.
    read_ahead
        Shards read ahead of the one being yielded (0: none). Memory holds at most
        ``read_ahead + 1`` shards. Stopping early (``break``, ``close()``, or leaving
        the iterator unfinished at exit) cancels the reads ahead.

    Yields
    ------
    index : int or tuple of int
        The shard's index: an int for an array sharded on one dimension, else a tuple.
    values : numpy.ndarray
        The array at that index (the remaining dimensions).

    Raises
    ------
    LayoutError
        If ``array`` is not array-sharded in ``store`` (raised by the call itself).
    ValueError
        If ``order``, ``worker``, ``num_workers`` or ``read_ahead`` is out of range.

    Examples
    --------
    >>> shards = iter_shards(store, "temperature", order="shuffle", seed=epoch)  # doctest: +SKIP
    >>> for t, values in shards:  # doctest: +SKIP
    ...     train_step(values)
    """
    import zarr

    if order not in ("sequential", "shuffle"):
        raise ValueError(f"order must be 'sequential' or 'shuffle', got {order!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a whole number >= 1, got {num_workers!r}")
    if isinstance(worker, bool) or not isinstance(worker, int) or not 0 <= worker < num_workers:
        raise ValueError(
            f"worker must be a whole number in 0..{num_workers - 1} (num_workers - 1), got "
            f"{worker!r}; inside a torch DataLoader use get_worker_info().id"
        )
    if isinstance(read_ahead, bool) or not isinstance(read_ahead, int) or read_ahead < 0:
        raise ValueError(f"read_ahead must be a whole number >= 0, got {read_ahead!r}")
    spec = store.array_shards.get(array)
    if spec is None:
        sharded = ", ".join(repr(path) for path in sorted(store.array_shards)) or "none"
        raise LayoutError(
            f"{array!r} is not an array-sharded array of this layout (array-sharded: "
            f"{sharded}); iterate over a plain array with zarr directly"
        )
    dims = spec[0]
    opened = zarr.open_array(store, path=array, mode="r")
    indices: list[tuple[int, ...]] = list(
        itertools.product(*(range(n) for n in opened.shape[:dims]))
    )
    if order == "shuffle":
        if seed is None and num_workers > 1:
            seed = DEFAULT_SHUFFLE_SEED  # one order for all, or shares overlap
        permutation = np.random.default_rng(seed).permutation(len(indices))
        indices = [indices[i] for i in permutation]
    shards = _read_shards(opened._async_array, indices[worker::num_workers], dims, read_ahead)
    _close_at_exit(shards)
    return shards


def _read_shards(
    reader: Any, mine: list[tuple[int, ...]], dims: int, read_ahead: int
) -> Generator[Item, None, None]:
    """Read ``mine`` in order, ``read_ahead`` shards ahead, on zarr's event loop."""
    from zarr.core.sync import _get_loop

    loop = _get_loop()
    running: set[asyncio.Task[np.ndarray[Any, Any]]] = set()

    async def read(index: tuple[int, ...]) -> np.ndarray[Any, Any]:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
        try:
            result = await reader.getitem(index)
            return np.asarray(result)
        finally:
            running.discard(task)

    pending: deque[tuple[tuple[int, ...], concurrent.futures.Future[np.ndarray[Any, Any]]]]
    pending = deque()
    upcoming = iter(mine)
    try:
        while True:
            while len(pending) <= read_ahead:
                index = next(upcoming, None)
                if index is None:
                    break
                pending.append((index, asyncio.run_coroutine_threadsafe(read(index), loop)))
            if not pending:
                return
            index, future = pending.popleft()
            values = future.result()
            yield (index[0] if dims == 1 else index), values
    finally:  # stopped early (or failed): drop what was read ahead
        _cancel([future for _, future in pending], running, loop)
