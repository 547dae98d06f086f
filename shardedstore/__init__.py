"""shardedstore: spread one Zarr hierarchy over many stores and serve it as one.

The user guide lives in ``docs/``; the public names are listed in ``__all__``.
"""

from __future__ import annotations

from shardedstore._errors import KeyValidationError, LayoutError
from shardedstore._factories import (
    ArrayShardDirectoryFactory,
    ArrayShardFactory,
    array_shard_directory_store,
)
from shardedstore._mapping import StoreMapping
from shardedstore._store import ShardedStore

__all__ = [
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "KeyValidationError",
    "LayoutError",
    "ShardedStore",
    "StoreMapping",
    "__version__",
    "array_shard_directory_store",
]

__version__ = "0.4.0.dev0"
