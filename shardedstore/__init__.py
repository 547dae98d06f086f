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
    from shardedstore.backends.cache import ShardCache
    from shardedstore.backends.registry import StoreType
    from shardedstore.backends.remotezip import RemoteZipStore
    from shardedstore.backends.timeouts import RemoteTimeoutError
    from shardedstore.backends.zipstore import CopyOnWriteZipStore
    from shardedstore.config.layout import config_schema
    from shardedstore.config.layout import open_config as open
    from shardedstore.errors import (
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
    from shardedstore.iter import iter_shards
    from shardedstore.shards.listing import Shard
    from shardedstore.shards.transforms import (
        ArrayShardStoresFactory,
        MapShardsError,
        StrayKeysWarning,
        to_directory_store_with_prefix,
        to_url_with_prefix,
        to_zip_store_with_prefix,
    )
    from shardedstore.store.factories import (
        ArrayShardDirectoryFactory,
        ArrayShardFactory,
        ArrayShardTemplateFactory,
        array_shard_directory_store,
        array_shard_template_store,
    )
    from shardedstore.store.mapping import StoreMapping
    from shardedstore.store.sharded import ShardedStore
    from shardedstore.table.chunks import (
        ArrayNotFoundError,
        ChunkTableError,
        MissingDependencyError,
        chunk_table,
    )
    from shardedstore.table.parquet import ChunkTableOutputError, ChunkTableWrite, write_chunk_table

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
    "ArrayNotFoundError": "shardedstore.table.chunks",
    "ArrayShardDirectoryFactory": "shardedstore.store.factories",
    "ArrayShardFactory": "shardedstore.store.factories",
    "ArrayShardStoresFactory": "shardedstore.shards.transforms",
    "ArrayShardTemplateFactory": "shardedstore.store.factories",
    "CacheWarning": "shardedstore.errors",
    "ChunkTableError": "shardedstore.table.chunks",
    "ChunkTableOutputError": "shardedstore.table.parquet",
    "ChunkTableWrite": "shardedstore.table.parquet",
    "CommitError": "shardedstore.errors",
    "ConcurrentWriteError": "shardedstore.errors",
    "ConfigError": "shardedstore.errors",
    "ConflictError": "shardedstore.errors",
    "CopyOnWriteZipStore": "shardedstore.backends.zipstore",
    "CorruptDataError": "shardedstore.errors",
    "KeyValidationError": "shardedstore.errors",
    "LayoutError": "shardedstore.errors",
    "MapShardsError": "shardedstore.shards.transforms",
    "MissingDependencyError": "shardedstore.table.chunks",
    "RemoteTimeoutError": "shardedstore.backends.timeouts",
    "RemoteZipStore": "shardedstore.backends.remotezip",
    "Shard": "shardedstore.shards.listing",
    "ShardCache": "shardedstore.backends.cache",
    "ShardedStore": "shardedstore.store.sharded",
    "StoreMapping": "shardedstore.store.mapping",
    "StoreType": "shardedstore.backends.registry",
    "StrayKeysWarning": "shardedstore.shards.transforms",
    "UncommittedWarning": "shardedstore.errors",
    "array_shard_directory_store": "shardedstore.store.factories",
    "array_shard_template_store": "shardedstore.store.factories",
    "chunk_table": "shardedstore.table.chunks",
    "config_schema": "shardedstore.config.layout",
    "iter_shards": "shardedstore.iter",
    "open": "shardedstore.config.layout:open_config",
    "to_directory_store_with_prefix": "shardedstore.shards.transforms",
    "to_url_with_prefix": "shardedstore.shards.transforms",
    "to_zip_store_with_prefix": "shardedstore.shards.transforms",
    "write_chunk_table": "shardedstore.table.parquet",
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
