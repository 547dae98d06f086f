"""A synchronous ``MutableMapping[str, bytes]`` view of any zarr store."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

__all__ = ["StoreMapping"]


class StoreMapping(MutableMapping[str, bytes]):
    """Plain key/value access to a zarr store, for code that wants a dict.

    Every call runs the store's async method on zarr's event loop, so do not use it
    from inside a coroutine. ``len``, iteration and ``in`` see every key the store
    lists; for a :class:`ShardedStore` that includes every mount and array shard.

    Parameters
    ----------
    store
        The store to view.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getitem__(self, key: str) -> bytes:
        value = sync(self.store.get(key, default_buffer_prototype()))
        if value is None:
            raise KeyError(key)
        return value.to_bytes()

    def __setitem__(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"values must be bytes-like, not {type(value).__name__}")
        sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(bytes(value))))

    def __delitem__(self, key: str) -> None:
        if not sync(self.store.exists(key)):
            raise KeyError(key)
        sync(self.store.delete(key))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return bool(sync(self.store.exists(key)))

    def _keys(self) -> list[str]:
        async def collect() -> list[str]:
            return [key async for key in self.store.list()]

        return sync(collect())

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def __repr__(self) -> str:
        return f"StoreMapping({self.store!r})"
