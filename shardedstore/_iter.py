"""Array shards as samples for training loops: ``iter_shards``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shardedstore._errors import LayoutError

if TYPE_CHECKING:
    from shardedstore._store import ShardedStore

__all__ = ["iter_shards"]

ShardIndex = int | tuple[int, ...]


def iter_shards(
    store: ShardedStore,
    array: str,
    *,
    order: Literal["sequential", "shuffle"] = "sequential",
    seed: int | None = None,
    worker: int = 0,
    num_workers: int = 1,
    read_ahead: int = 2,
) -> Iterator[tuple[ShardIndex, np.ndarray[Any, Any]]]:
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
        Seed of the shuffle. Workers must agree on it, or their shares overlap.
    worker, num_workers
        This worker's number (``0 <= worker < num_workers``) and how many there are.
        Worker ``w`` gets positions ``w, w + num_workers, ...`` of the order.
    read_ahead
        Shards read ahead of the one being yielded (0: none). Memory holds at most
        ``read_ahead + 1`` shards.

    Yields
    ------
    index : int or tuple of int
        The shard's index: an int for an array sharded on one dimension, else a tuple.
    values : numpy.ndarray
        The array at that index (the remaining dimensions).

    Raises
    ------
    LayoutError
        If ``array`` is not array-sharded in ``store``.
    ValueError
        If ``order``, ``worker``, ``num_workers`` or ``read_ahead`` is out of range.

    Examples
    --------
    >>> shards = iter_shards(store, "temperature", order="shuffle", seed=epoch)  # doctest: +SKIP
    >>> for t, values in shards:  # doctest: +SKIP
    ...     train_step(values)
    """
    import zarr
    from zarr.core.sync import _get_loop

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
        permutation = np.random.default_rng(seed).permutation(len(indices))
        indices = [indices[i] for i in permutation]
    mine = indices[worker::num_workers]
    loop = _get_loop()
    reader = opened._async_array

    async def read(index: tuple[int, ...]) -> np.ndarray[Any, Any]:
        result = await reader.getitem(index)
        return np.asarray(result)

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
    finally:
        for _, future in pending:  # the loop stopped early: drop what was read ahead
            future.cancel()
