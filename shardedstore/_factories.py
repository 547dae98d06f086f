"""Array-shard factories: how an array shard's store is made from its chunk index.

A factory is any callable ``factory(chunk_index) -> Store``. Factories may also say
which shards already exist (``existing_chunk_indices``), which lets a store list
array shards without knowing the array's shape, and whether the stores they make
support zarr's synchronous store protocols (``supports_sync``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zarr.abc.store import Store
from zarr.storage import LocalStore

__all__ = [
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "ListableArrayShardFactory",
    "array_shard_directory_store",
    "factory_supports_sync",
]

_CHUNK_INDEX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


@runtime_checkable
class ArrayShardFactory(Protocol):
    """Makes the store of the array shard at a chunk index such as ``"3"`` or ``"3.0"``."""

    def __call__(self, chunk_index: str, /) -> Store: ...


@runtime_checkable
class ListableArrayShardFactory(ArrayShardFactory, Protocol):
    """A factory that can tell which array shards exist (blocking I/O is fine)."""

    def existing_chunk_indices(self) -> Iterable[str]: ...


def is_chunk_index(text: str) -> bool:
    """Whether ``text`` is a chunk index as used in shard names (``"3"``, ``"3.10"``)."""
    return _CHUNK_INDEX.match(text) is not None


def factory_supports_sync(factory: object) -> bool:
    """Whether the stores a factory makes implement zarr's sync store protocols."""
    return bool(getattr(factory, "supports_sync", False))


@dataclass(frozen=True)
class ArrayShardDirectoryFactory:
    """One :class:`zarr.storage.LocalStore` per array shard: ``{prefix}/{chunk_index}.zarr``.

    Create it with :func:`array_shard_directory_store`.

    Attributes
    ----------
    prefix
        Directory holding the array shards.
    read_only
        Open the shard stores read-only.
    """

    prefix: str
    read_only: bool = False
    supports_sync: bool = field(default=True, init=False, repr=False, compare=False)

    def __call__(self, chunk_index: str, /) -> LocalStore:
        return LocalStore(self.path_for(chunk_index), read_only=self.read_only)

    def path_for(self, chunk_index: str) -> str:
        """The directory of the array shard at ``chunk_index``."""
        return os.path.join(self.prefix, f"{chunk_index}.zarr")

    def existing_chunk_indices(self) -> list[str]:
        """Chunk indices of the shard directories present under ``prefix``."""
        try:
            names = os.listdir(self.prefix)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for name in names:
            if name.endswith(".zarr"):
                index = name[: -len(".zarr")]
                if is_chunk_index(index) and os.path.isdir(os.path.join(self.prefix, name)):
                    found.append(index)
        return found


def array_shard_directory_store(
    prefix: str | os.PathLike[str], **kwargs: Any
) -> ArrayShardDirectoryFactory:
    """Array shards as directories: ``LocalStore(f"{prefix}/{chunk_index}.zarr")``.

    Parameters
    ----------
    prefix
        Directory that will hold one ``{chunk_index}.zarr`` directory per array shard.
        Shards are created lazily, on the first chunk written to them.
    **kwargs
        Options for each :class:`zarr.storage.LocalStore` (``read_only``).

    Returns
    -------
    ArrayShardDirectoryFactory
        A picklable, comparable factory.

    Examples
    --------
    >>> factory = array_shard_directory_store("array_shards")
    >>> factory("3")
    LocalStore('file://array_shards/3.zarr')
    """
    unknown = set(kwargs) - {"read_only"}
    if unknown:
        raise TypeError(
            f"array_shard_directory_store() got unexpected option(s) {sorted(unknown)}; "
            "LocalStore shards accept only read_only"
        )
    return ArrayShardDirectoryFactory(str(Path(prefix)), **kwargs)
