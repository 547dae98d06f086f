"""shardedstore: spread one Zarr hierarchy over many stores and serve it as one.

The user guide lives in ``docs/``; the public names are listed in ``__all__``.

The names are imported on first use (PEP 562): ``import shardedstore`` loads neither
zarr nor numpy, so that the command line handles a Ctrl-C while it starts (exit 130,
one line) and ``shardedstore --version`` answers at once.

The package is layered, each layer importing only those below it (``make test`` checks
it): ``errors``; ``backends`` (store types, zips, the cache); ``store``
(``ShardedStore``); ``config`` and ``native`` (zarr's codec pipeline for layouts on
zarrs or TensorStore); ``shards``; ``report`` and ``table``; ``xarray`` and ``iter``,
``fsspec`` (the ``shardedstore::`` protocol) and ``ome``; ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shardedstore import errors as _errors  # imports nothing else: zarr stays unloaded

if TYPE_CHECKING:
    from shardedstore.backends.cache import ShardCache
    from shardedstore.backends.registry import StoreType
    from shardedstore.backends.remotezip import RemoteZipStore
    from shardedstore.backends.zipstore import CopyOnWriteZipStore
    from shardedstore.config.layout import open_config as open
    from shardedstore.config.schema import config_schema
    from shardedstore.errors import (
        ArgumentError,
        ArrayNotFoundError,
        CacheWarning,
        ChunkTableError,
        ChunkTableOutputError,
        CommitError,
        ConcurrentWriteError,
        ConfigError,
        ConflictError,
        CorruptDataError,
        KeyValidationError,
        LayoutError,
        LocationOverlapError,
        MapChunksError,
        MapShardsError,
        MissingDependencyError,
        OutputError,
        ReadOnlyError,
        RemoteTimeoutError,
        SourceError,
        SourceNotFoundError,
        StrayKeysWarning,
        UncommittedWarning,
        VerificationError,
    )
    from shardedstore.fsspec import ShardedFileSystem
    from shardedstore.iter import iter_shards
    from shardedstore.native.pipeline import ShardedCodecPipeline, use_engine
    from shardedstore.ome import ome_zarr_layout
    from shardedstore.shards.importing import ImportSummary, import_zarr
    from shardedstore.shards.listing import Shard
    from shardedstore.shards.transforms import (
        ShardTransform,
        to_directory_store_with_prefix,
        to_url_with_prefix,
        to_zip_store_with_prefix,
    )
    from shardedstore.store.factories import (
        ArrayShardDirectoryFactory,
        ArrayShardFactory,
        ArrayShardStoresFactory,
        ArrayShardTemplateFactory,
        array_shard_directory_store,
        array_shard_template_store,
    )
    from shardedstore.store.mapping import StoreMapping
    from shardedstore.store.sharded import ShardedStore
    from shardedstore.table.chunks import chunk_table
    from shardedstore.table.datasets import ValuesDataset
    from shardedstore.table.parquet import ChunkTableWrite, write_chunk_table
    from shardedstore.table.planner import chunk_table_schema, chunk_tasks, map_chunks
    from shardedstore.table.sql import register_tables, sql
    from shardedstore.table.tasks import ChunkTask, StoredChunk
    from shardedstore.table.values import values

__all__ = [
    "ArgumentError",
    "ArrayNotFoundError",
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "ArrayShardStoresFactory",
    "ArrayShardTemplateFactory",
    "CacheWarning",
    "ChunkTableError",
    "ChunkTableOutputError",
    "ChunkTableWrite",
    "ChunkTask",
    "CommitError",
    "ConcurrentWriteError",
    "ConfigError",
    "ConflictError",
    "CopyOnWriteZipStore",
    "CorruptDataError",
    "ImportSummary",
    "KeyValidationError",
    "LayoutError",
    "LocationOverlapError",
    "MapChunksError",
    "MapShardsError",
    "MissingDependencyError",
    "OutputError",
    "ReadOnlyError",
    "RemoteTimeoutError",
    "RemoteZipStore",
    "Shard",
    "ShardCache",
    "ShardedCodecPipeline",
    "ShardedFileSystem",
    "ShardedStore",
    "StoreMapping",
    "StoreType",
    "StoredChunk",
    "ShardTransform",
    "SourceError",
    "SourceNotFoundError",
    "StrayKeysWarning",
    "UncommittedWarning",
    "ValuesDataset",
    "VerificationError",
    "__version__",
    "array_shard_directory_store",
    "array_shard_template_store",
    "chunk_table",
    "chunk_table_schema",
    "chunk_tasks",
    "config_schema",
    "import_zarr",
    "iter_shards",
    "map_chunks",
    "ome_zarr_layout",
    "open",
    "register_tables",
    "sql",
    "to_directory_store_with_prefix",
    "to_url_with_prefix",
    "to_zip_store_with_prefix",
    "use_engine",
    "values",
    "write_chunk_table",
]

__version__ = "0.4.0.dev0"


# Public name -> "module" (the same name there) or "module:name".
_LAZY: dict[str, str] = {
    **{name: "shardedstore.errors" for name in _errors.__all__ if name[0].isupper()},
    "ShardCache": "shardedstore.backends.cache",
    "StoreType": "shardedstore.backends.registry",
    "RemoteZipStore": "shardedstore.backends.remotezip",
    "CopyOnWriteZipStore": "shardedstore.backends.zipstore",
    "ArrayShardDirectoryFactory": "shardedstore.store.factories",
    "ArrayShardFactory": "shardedstore.store.factories",
    "ArrayShardStoresFactory": "shardedstore.store.factories",
    "ArrayShardTemplateFactory": "shardedstore.store.factories",
    "array_shard_directory_store": "shardedstore.store.factories",
    "array_shard_template_store": "shardedstore.store.factories",
    "StoreMapping": "shardedstore.store.mapping",
    "ShardedStore": "shardedstore.store.sharded",
    "ShardedCodecPipeline": "shardedstore.native.pipeline",
    "use_engine": "shardedstore.native.pipeline",
    "config_schema": "shardedstore.config.schema",
    "open": "shardedstore.config.layout:open_config",
    "Shard": "shardedstore.shards.listing",
    "ImportSummary": "shardedstore.shards.importing",
    "import_zarr": "shardedstore.shards.importing",
    "ShardTransform": "shardedstore.shards.transforms",
    "to_directory_store_with_prefix": "shardedstore.shards.transforms",
    "to_url_with_prefix": "shardedstore.shards.transforms",
    "to_zip_store_with_prefix": "shardedstore.shards.transforms",
    "chunk_table": "shardedstore.table.chunks",
    "ChunkTableWrite": "shardedstore.table.parquet",
    "write_chunk_table": "shardedstore.table.parquet",
    "chunk_table_schema": "shardedstore.table.planner",
    "chunk_tasks": "shardedstore.table.planner",
    "map_chunks": "shardedstore.table.planner",
    "ChunkTask": "shardedstore.table.tasks",
    "StoredChunk": "shardedstore.table.tasks",
    "ValuesDataset": "shardedstore.table.datasets",
    "register_tables": "shardedstore.table.sql",
    "sql": "shardedstore.table.sql",
    "values": "shardedstore.table.values",
    "iter_shards": "shardedstore.iter",
    "ShardedFileSystem": "shardedstore.fsspec",
    "ome_zarr_layout": "shardedstore.ome",
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
