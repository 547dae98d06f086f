"""shardedstore: spread one Zarr hierarchy over many stores and serve it as one.

The user guide lives in ``docs/``; the public names are listed in ``__all__``.

The names are imported on first use (PEP 562): ``import shardedstore`` loads neither
zarr nor numpy, so that the command line handles a Ctrl-C while it starts (exit 130,
one line) and ``shardedstore --version`` answers at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardedstore._cache import ShardCache
    from shardedstore._chunkparquet import ChunkTableOutputError, ChunkTableWrite, write_chunk_table
    from shardedstore._chunktable import (
        ArrayNotFoundError,
        ChunkTableError,
        MissingDependencyError,
        chunk_table,
    )
    from shardedstore._config import config_schema
    from shardedstore._config import open_config as open
    from shardedstore._errors import (
        CacheWarning,
        CommitError,
        ConcurrentWriteError,
        ConfigError,
        ConflictError,
        CorruptDataError,
        KeyValidationError,
        LayoutError,
        UncommittedWarning,
    )
    from shardedstore._factories import (
        ArrayShardDirectoryFactory,
        ArrayShardFactory,
        ArrayShardTemplateFactory,
        array_shard_directory_store,
        array_shard_template_store,
    )
    from shardedstore._iter import iter_shards
    from shardedstore._mapping import StoreMapping
    from shardedstore._registry import StoreType
    from shardedstore._remotezip import RemoteZipStore
    from shardedstore._shards import Shard
    from shardedstore._store import ShardedStore
    from shardedstore._timeouts import RemoteTimeoutError
    from shardedstore._transforms import (
        ArrayShardStoresFactory,
        MapShardsError,
        StrayKeysWarning,
        to_directory_store_with_prefix,
        to_url_with_prefix,
        to_zip_store_with_prefix,
    )
    from shardedstore._zipstore import CopyOnWriteZipStore

__all__ = [
    "ArrayNotFoundError",
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "ArrayShardStoresFactory",
    "ArrayShardTemplateFactory",
    "CacheWarning",
    "ChunkTableError",
    "ChunkTableOutputError",
    "ChunkTableWrite",
    "CommitError",
    "ConcurrentWriteError",
    "ConfigError",
    "ConflictError",
    "CopyOnWriteZipStore",
    "CorruptDataError",
    "KeyValidationError",
    "LayoutError",
    "MapShardsError",
    "MissingDependencyError",
    "RemoteTimeoutError",
    "RemoteZipStore",
    "ShardCache",
    "Shard",
    "ShardedStore",
    "StoreMapping",
    "StoreType",
    "StrayKeysWarning",
    "UncommittedWarning",
    "__version__",
    "array_shard_directory_store",
    "array_shard_template_store",
    "chunk_table",
    "config_schema",
    "iter_shards",
    "open",
    "to_directory_store_with_prefix",
    "to_url_with_prefix",
    "to_zip_store_with_prefix",
    "write_chunk_table",
]

__version__ = "0.4.0.dev0"


# Public name -> "module" (the same name there) or "module:name".
_LAZY: dict[str, str] = {
    "ArrayNotFoundError": "shardedstore._chunktable",
    "ArrayShardDirectoryFactory": "shardedstore._factories",
    "ArrayShardFactory": "shardedstore._factories",
    "ArrayShardStoresFactory": "shardedstore._transforms",
    "ArrayShardTemplateFactory": "shardedstore._factories",
    "CacheWarning": "shardedstore._errors",
    "ChunkTableError": "shardedstore._chunktable",
    "ChunkTableOutputError": "shardedstore._chunkparquet",
    "ChunkTableWrite": "shardedstore._chunkparquet",
    "CommitError": "shardedstore._errors",
    "ConcurrentWriteError": "shardedstore._errors",
    "ConfigError": "shardedstore._errors",
    "ConflictError": "shardedstore._errors",
    "CopyOnWriteZipStore": "shardedstore._zipstore",
    "CorruptDataError": "shardedstore._errors",
    "KeyValidationError": "shardedstore._errors",
    "LayoutError": "shardedstore._errors",
    "MapShardsError": "shardedstore._transforms",
    "MissingDependencyError": "shardedstore._chunktable",
    "RemoteTimeoutError": "shardedstore._timeouts",
    "RemoteZipStore": "shardedstore._remotezip",
    "Shard": "shardedstore._shards",
    "ShardCache": "shardedstore._cache",
    "ShardedStore": "shardedstore._store",
    "StoreMapping": "shardedstore._mapping",
    "StoreType": "shardedstore._registry",
    "StrayKeysWarning": "shardedstore._transforms",
    "UncommittedWarning": "shardedstore._errors",
    "array_shard_directory_store": "shardedstore._factories",
    "array_shard_template_store": "shardedstore._factories",
    "chunk_table": "shardedstore._chunktable",
    "config_schema": "shardedstore._config",
    "iter_shards": "shardedstore._iter",
    "open": "shardedstore._config:open_config",
    "to_directory_store_with_prefix": "shardedstore._transforms",
    "to_url_with_prefix": "shardedstore._transforms",
    "to_zip_store_with_prefix": "shardedstore._transforms",
    "write_chunk_table": "shardedstore._chunkparquet",
}


if not TYPE_CHECKING:  # for type checkers the names are the imports above, nothing else

    def __getattr__(name: str) -> Any:
        where = _LAZY.get(name)
        if where is None:
            raise AttributeError(f"module 'shardedstore' has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        globals()[name] = value  # imported once
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
