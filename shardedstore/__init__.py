"""shardedstore: spread one Zarr hierarchy over many stores and serve it as one.

The user guide lives in ``docs/``; the public names are listed in ``__all__``.
"""

from __future__ import annotations

from shardedstore._config import config_schema
from shardedstore._config import open_config as open
from shardedstore._errors import (
    ConcurrentWriteError,
    ConfigError,
    KeyValidationError,
    LayoutError,
)
from shardedstore._factories import (
    ArrayShardDirectoryFactory,
    ArrayShardFactory,
    ArrayShardTemplateFactory,
    array_shard_directory_store,
    array_shard_template_store,
)
from shardedstore._mapping import StoreMapping
from shardedstore._registry import StoreType
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
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "ArrayShardStoresFactory",
    "ArrayShardTemplateFactory",
    "ConcurrentWriteError",
    "ConfigError",
    "CopyOnWriteZipStore",
    "KeyValidationError",
    "LayoutError",
    "MapShardsError",
    "RemoteTimeoutError",
    "ShardedStore",
    "StoreMapping",
    "StoreType",
    "StrayKeysWarning",
    "__version__",
    "array_shard_directory_store",
    "array_shard_template_store",
    "config_schema",
    "open",
    "to_directory_store_with_prefix",
    "to_url_with_prefix",
    "to_zip_store_with_prefix",
]

__version__ = "0.4.0.dev0"
