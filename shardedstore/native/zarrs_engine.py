"""zarrs on the local directories of a layout, through zarr's codec pipeline interface.

zarrs (``zarrs.ZarrsCodecPipeline``, Rust) serves a store it can map to its own, such as
a ``LocalStore``: it reads and writes each chunk at the key zarr asks for, under that
store's root. A layout's local parts are such stores. So the chunks of one request that
live in local directories are handed to a zarrs pipeline made for the *parent* directory
of those directories, each chunk under its key there (``3.zarr/c/0/1``): one pipeline,
and one call into Rust, for every array shard of an array, which usually share their
parent (``array_shards/{chunk}.zarr``).

The pipeline is made from the array's own metadata, not the shard's: a chunk's bytes are
the same in both (see ``shardedstore.store.metadata``), and the chunk's shape is given
with each chunk. Only zarr's public ``CodecPipeline`` interface of zarrs is used
(``from_array_metadata_and_store``, ``read``, ``write``), so where zarrs declines (a
data type it does not support) it falls back to zarr's pipeline itself, over the same
``LocalStore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zarr.storage import LocalStore, StorePath

if TYPE_CHECKING:
    from zarr.abc.codec import CodecPipeline
    from zarr.core.buffer import NDBuffer
    from zarr.core.metadata import ArrayMetadata

    from shardedstore.native.fence import WriteFence

__all__ = ["Item", "ZarrsEngine", "plain_zarrs_pipeline"]

Item = tuple[str, Any, Any, Any, bool]
"""``(key in the directory, chunk spec, chunk_selection, out_selection, is_complete)``."""

MAX_PIPELINES = 256
"""Most zarrs pipelines (one per directory and mode) one array keeps."""


def plain_zarrs_pipeline(metadata: ArrayMetadata, store: Any) -> CodecPipeline:
    """zarrs's pipeline for an array of a store that is not a layout."""
    from zarrs import ZarrsCodecPipeline

    pipeline: CodecPipeline = ZarrsCodecPipeline.from_array_metadata_and_store(metadata, store)
    return pipeline


class ZarrsEngine:
    """zarrs pipelines of one array, one per local directory (and read or write).

    Parameters
    ----------
    metadata
        The array's metadata, as zarr opened it.
    """

    def __init__(self, metadata: ArrayMetadata) -> None:
        self._metadata = metadata
        self._pipelines: dict[tuple[str, bool], tuple[CodecPipeline, LocalStore]] = {}

    def _pipeline(self, directory: str, write: bool) -> tuple[CodecPipeline, LocalStore]:
        made = self._pipelines.get((directory, write))
        if made is None:
            store = LocalStore(directory, read_only=not write)
            made = (plain_zarrs_pipeline(self._metadata, store), store)
            if len(self._pipelines) >= MAX_PIPELINES:
                del self._pipelines[next(iter(self._pipelines))]
            self._pipelines[directory, write] = made
        return made

    async def read(
        self, directory: str, items: Sequence[Item], out: NDBuffer, drop_axes: tuple[int, ...]
    ) -> None:
        """Read ``items`` (keys under ``directory``) into ``out``."""
        pipeline, store = self._pipeline(directory, write=False)
        await pipeline.read(
            [(StorePath(store, key), *rest) for key, *rest in items], out, drop_axes
        )

    async def write(
        self,
        directory: str,
        items: Sequence[Item],
        value: NDBuffer,
        drop_axes: tuple[int, ...],
        fence: WriteFence,
    ) -> None:
        """Write ``items`` (keys under ``directory``) from ``value``; what zarrs hands
        to zarr's pipeline is written through ``fence``."""
        pipeline, store = self._pipeline(directory, write=True)
        await pipeline.write(
            [(fence.path(store, key), *rest) for key, *rest in items], value, drop_axes
        )
