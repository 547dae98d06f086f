"""shardedstore: spread one Zarr hierarchy over many stores and serve it as one.

The user guide lives in ``docs/``; the public names are listed in ``__all__``.
"""

from __future__ import annotations

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
    CommitError,
    ConcurrentWriteError,
    ConfigError,
    ConflictError,
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
    "ChunkTableError",
    "ChunkTableOutputError",
    "ChunkTableWrite",
    "CommitError",
    "ConcurrentWriteError",
    "ConfigError",
    "ConflictError",
    "CopyOnWriteZipStore",
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
