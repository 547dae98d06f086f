"""A zarr codec pipeline that runs a layout's local parts on a native engine.

zarr reads and writes an array through a codec pipeline, made per array from its
metadata and its store (``codec_pipeline.path`` in zarr's config). zarrs's pipeline
serves only stores it can map to its own (a ``LocalStore``), which a ``ShardedStore`` is
not; but every part of a layout is a store, and every array shard a standalone array.
:class:`ShardedCodecPipeline` splits each request by the store each chunk lives in (the
layout's routing, no I/O) and hands the chunks of each local directory to the engine
chosen (zarrs, TensorStore), and everything else (zips, remote stores, memory) to zarr's
own pipeline through the ``ShardedStore``, as before. For any other store it is the
engine's own pipeline (zarrs), or zarr's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from zarr.abc.codec import CodecPipeline
from zarr.codecs._v2 import V2Codec  # as zarr's own create_codec_pipeline makes v2's
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.config import config
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
from zarr.registry import register_pipeline
from zarr.storage import LocalStore

from shardedstore.native.engines import (
    CONFIG_KEY,
    Engine,
    EnginePlan,
    configured_engine,
    engine_plan,
    require,
    supports_dtype,
)
from shardedstore.native.fence import WriteFence
from shardedstore.native.groups import BatchItem, Group, split_batch
from shardedstore.native.regions import ChunkKeys, StoredRegion
from shardedstore.native.zarrs_engine import Item, ZarrsEngine, plain_zarrs_pipeline
from shardedstore.store.sharded import ShardedStore

if TYPE_CHECKING:
    from typing import Self

    from zarr.abc.codec import Codec
    from zarr.abc.store import ByteGetter, ByteSetter, Store
    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.indexing import SelectorTuple
    from zarr.core.metadata import ArrayMetadata
    from zarr.dtype import ZDType

    from shardedstore.native.ts_engine import TensorStoreEngine

__all__ = ["PIPELINE_PATH", "ShardedCodecPipeline", "use_engine"]

PIPELINE_PATH = "shardedstore.ShardedCodecPipeline"
"""The value of zarr's ``codec_pipeline.path`` that selects :class:`ShardedCodecPipeline`."""


def _codecs(metadata: ArrayMetadata) -> list[Codec]:
    if isinstance(metadata, ArrayV3Metadata):
        return list(metadata.codecs)
    return [V2Codec(filters=metadata.filters, compressor=metadata.compressor)]


def _chunk_keys(metadata: ArrayMetadata) -> ChunkKeys | None:
    """How the array spells its chunk keys (None: an encoding of a plugin)."""
    ndim = len(metadata.shape)
    if isinstance(metadata, ArrayV2Metadata):
        return ChunkKeys("", metadata.dimension_separator, ndim)
    encoding = metadata.chunk_key_encoding
    separator = getattr(encoding, "separator", None)
    if encoding.name == "default" and separator in ("/", "."):
        return ChunkKeys("c", separator, ndim)
    if encoding.name == "v2" and separator in ("/", "."):
        return ChunkKeys("", separator, ndim)
    return None


def _chunk_shape(metadata: ArrayMetadata) -> tuple[int, ...] | None:
    """The shape of the chunks zarr hands the pipeline: the chunk grid's (with the
    sharding codec, the shards'); None for a grid that is not regular.

    Read through the metadata's ``shards`` and ``chunks`` properties, which every zarr
    3 release has (the grid classes behind them were renamed in zarr 3.2+).
    """
    try:
        shards = metadata.shards
        return tuple(shards) if shards is not None else tuple(metadata.chunks)
    except NotImplementedError:  # a rectilinear or plugin grid
        return None


def _fill(spec: ArraySpec) -> Any:
    """The value a chunk not stored reads as (zarr v2 allowed none: the dtype's default)."""
    return spec.dtype.default_scalar() if spec.fill_value is None else spec.fill_value


def _all_fill(value: NDBuffer, items: Iterable[BatchItem]) -> bool:
    """Whether every part of ``value`` the items write equals its fill value (as zarr
    compares them: NaN equals NaN, -0.0 differs from 0.0)."""
    for _, spec, _, out_selection, _ in items:
        part = value if value.shape == () else value[out_selection]
        if not part.all_equal(_fill(spec)):
            return False
    return True


def _numpy(array: object) -> np.ndarray[Any, Any] | None:
    """``array`` if it is a numpy array in host memory (engines read and write those)."""
    return array if isinstance(array, np.ndarray) else None


def _may_hold_fill(value: NDBuffer, spec: ArraySpec) -> bool:
    """Whether some element of ``value`` may equal the fill value (False: no part of it
    is all fill, and :func:`_all_fill` need not look at the parts one by one)."""
    data, fill = _numpy(value.as_ndarray_like()), _fill(spec)
    if data is None or data.dtype.kind not in "biufc":
        return True
    try:
        fill = np.asarray(fill, dtype=data.dtype)
    except (TypeError, ValueError, OverflowError):
        return True
    # Looser than zarr's comparison (-0.0 equals 0.0 here), never stricter.
    hits = data == fill
    if data.dtype.kind in "fc" and np.isnan(fill):
        hits = np.isnan(data)
    return bool(np.any(hits))


async def _settled(jobs: list[Awaitable[object]]) -> None:
    """Await every job, then raise the first failure: none is left running."""
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


async def _unless_declined(
    job: Awaitable[bool] | None, group: Group, declined: list[BatchItem]
) -> None:
    """Await an engine's ``job`` on ``group``; if there is none or the engine declined
    it, add the group's chunks to ``declined`` (zarr's pipeline serves them)."""
    if job is None or not await job:
        declined.extend(group.items)


class ShardedCodecPipeline(CodecPipeline):
    """zarr's codec pipeline for layouts: local parts on a native engine (zarrs, TensorStore).

    Select it in zarr's config, with :func:`use_engine` or by hand::

        zarr.config.set({"codec_pipeline.path": "shardedstore.ShardedCodecPipeline",
                         "shardedstore.engine": "auto"})

    For an array of a :class:`ShardedStore`, each request is split by the store each
    chunk lives in: the chunks in local directories (``LocalStore`` base, mounts and
    array shards) go to the engine, everything else (zips, remote stores, memory, other
    stores) to zarr's own pipeline through the ``ShardedStore``, exactly as without it.
    For any other store it is zarrs's pipeline (engines ``auto`` with zarrs installed,
    and ``zarrs``) or zarr's.

    Engines (``shardedstore.engine``, read when an array is opened):

    - ``zarrs``: every local chunk through zarrs (Rust), any selection, reads and writes;
    - ``tensorstore``: the part of a request in each local directory, when it is one box
      (slices and integers), read or written with one TensorStore call; other parts go to
      zarr's pipeline;
    - ``auto`` (default): zarrs if installed, else TensorStore, else zarr's pipeline;
    - ``zarr``: zarr's own pipeline everywhere (the engines off).

    Values and metadata are exactly what zarr's own pipeline gives: metadata is written
    by zarr and the ``ShardedStore`` as always; engines read and write chunks only.

    Parameters
    ----------
    metadata
        The array's metadata.
    store
        The layout the array is in.
    engine
        The engine, checked (see :func:`use_engine`).
    """

    # zarr names pipelines by module and class name: this one by its public name.
    __module__ = "shardedstore"

    def __init__(self, metadata: ArrayMetadata, store: ShardedStore, engine: Engine) -> None:
        self._metadata = metadata
        self._store = store
        self._engine: Engine = engine
        self._plan: EnginePlan = engine_plan(engine)
        self._default = BatchedCodecPipeline.from_codecs(_codecs(metadata))
        self._keys = _chunk_keys(metadata)
        self._chunk_shape = _chunk_shape(metadata)
        if (
            self._keys is None
            or self._chunk_shape is None
            or not supports_dtype(metadata.dtype.to_native_dtype())
        ):
            # Strings, dates, a chunk grid or key encoding of a plugin: zarr's pipeline.
            self._plan = engine_plan("zarr")
        self._zarrs = ZarrsEngine(metadata) if self._plan.zarrs else None
        self._tensorstore: TensorStoreEngine | None = None
        self._constraint: dict[str, Any] | None = None
        self._shard_constraint: tuple[object, dict[str, Any] | None] | None = None
        if self._plan.read_regions or self._plan.write_regions:
            from shardedstore.native.ts_engine import TensorStoreEngine

            self._tensorstore = TensorStoreEngine(metadata.zarr_format)

    @property
    def engine(self) -> Engine:
        """The engine this array's local chunks go to."""
        return self._engine

    def __getstate__(self) -> dict[str, Any]:
        return {"metadata": self._metadata, "store": self._store, "engine": self._engine}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["metadata"], state["store"], state["engine"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"ShardedCodecPipeline(engine={self._engine!r}, store={self._store!r})"

    # ------------------------------------------------------------ construction

    @classmethod
    def from_array_metadata_and_store(cls, array_metadata: ArrayMetadata, store: Store) -> Self:
        # docstring inherited
        engine = configured_engine()
        if isinstance(store, ShardedStore):
            return cls(array_metadata, store, engine)
        if engine_plan(engine).zarrs:
            # zarr's protocol lets a pipeline class hand out another pipeline (zarrs's
            # own does: its from_codecs gives zarr's).
            return cast("Self", plain_zarrs_pipeline(array_metadata, store))
        return cast("Self", BatchedCodecPipeline.from_codecs(_codecs(array_metadata)))

    @classmethod
    def from_codecs(cls, codecs: Iterable[Codec]) -> Self:
        # docstring inherited
        # zarr's sharding codec makes its inner pipeline here: zarr's own, as with zarrs.
        return cast("Self", BatchedCodecPipeline.from_codecs(codecs))

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        # docstring inherited
        return self

    # ----------------------------------------------- zarr's pipeline, delegated

    @property
    def supports_partial_decode(self) -> bool:
        # docstring inherited
        return False

    @property
    def supports_partial_encode(self) -> bool:
        # docstring inherited
        return False

    def __iter__(self) -> Iterator[Codec]:
        return iter(self._default)

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[Any, Any], chunk_grid: ChunkGrid
    ) -> None:
        # docstring inherited
        self._default.validate(shape=shape, dtype=dtype, chunk_grid=chunk_grid)

    def compute_encoded_size(self, byte_length: int, array_spec: ArraySpec) -> int:
        # docstring inherited
        return self._default.compute_encoded_size(byte_length, array_spec)

    async def decode(
        self, chunk_bytes_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]
    ) -> Iterable[NDBuffer | None]:
        # docstring inherited
        return await self._default.decode(chunk_bytes_and_specs)

    async def encode(
        self, chunk_arrays_and_specs: Iterable[tuple[NDBuffer | None, ArraySpec]]
    ) -> Iterable[Buffer | None]:
        # docstring inherited
        return await self._default.encode(chunk_arrays_and_specs)

    # ----------------------------------------------------------------- routing

    def _split(self, batch_info: Iterable[BatchItem]) -> tuple[list[Group], list[BatchItem]]:
        """The items by the local directory they live in (with their boxes when
        TensorStore may serve them), and the rest."""
        plan = self._plan
        boxes = plan.read_regions or plan.write_regions
        keys = cast("ChunkKeys", self._keys)
        return split_batch(
            self._store, keys, list(batch_info), self._chunk_shape if boxes else None
        )

    async def _region_metadata(self, groups: list[Group]) -> dict[str, Any] | None:
        """The metadata TensorStore must find where the groups' array is (None: none):
        the same in every array shard of the array (its sub-array), asked once a batch."""
        if not groups or groups[0].boxes is None:  # no box for TensorStore to serve
            return None
        if not groups[0].drop:  # in a local base or mount: what zarr read
            return self._own_metadata()
        # An array shard holds the metadata of its sub-array, as the layout writes it.
        from shardedstore.native.ts_engine import shard_metadata

        layout = await self._store.array_layout(groups[0].node)
        if layout is None:
            return None
        if self._shard_constraint is None or self._shard_constraint[0] is not layout:
            self._shard_constraint = (layout, shard_metadata(layout.shard_documents))
        return self._shard_constraint[1]

    def _part(self, group: Group, metadata: dict[str, Any] | None) -> StoredRegion | None:
        """The one box the group's chunks form in its directory, if they form one."""
        region = None if group.boxes is None else group.boxes.region(group.rows)
        if region is None or metadata is None:
            return None
        return StoredRegion(group.directory, metadata, region, group.drop)

    def _own_metadata(self) -> dict[str, Any]:
        """The array's metadata as zarr opened it, as TensorStore must find it."""
        if self._constraint is None:
            from shardedstore.native.ts_engine import metadata_constraint

            self._constraint = metadata_constraint(self._metadata.to_dict())
        return self._constraint

    # -------------------------------------------------------------------- read

    async def read(
        self,
        batch_info: Iterable[tuple[ByteGetter, ArraySpec, SelectorTuple, SelectorTuple, bool]],
        out: NDBuffer,
        drop_axes: tuple[int, ...] = (),
    ) -> Any:
        # docstring inherited
        plan = self._plan
        if not (plan.read_chunks or plan.read_regions) or not config.get(
            "array.read_missing_chunks", True
        ):
            # zarr 3.2+ can be told to raise on missing chunks, from what the pipeline
            # says of each: zarr's own pipeline says it.
            return await self._default.read(batch_info, out, drop_axes)
        batch_info = list(batch_info)
        groups, rest = self._split(batch_info)
        target = _numpy(out.as_ndarray_like())
        regions = plan.read_regions and not drop_axes and target is not None
        chunks = plan.read_chunks and out.dtype.isnative
        by_parent: dict[str, list[Item]] = {}
        declined: list[BatchItem] = []  # what TensorStore could not open
        jobs: list[Awaitable[object]] = []
        keys = cast("ChunkKeys", self._keys)
        metadata = await self._region_metadata(groups) if regions else None
        for group in groups:
            if not os.path.isdir(group.root):  # a shard not written: zarr's fill values
                rest.extend(group.items)
            elif regions:
                part = self._part(group, metadata)
                engine = cast("TensorStoreEngine", self._tensorstore)
                ndarray = cast("np.ndarray[Any, Any]", target)
                read = None if part is None else engine.read(part, ndarray)
                jobs.append(_unless_declined(read, group, declined))
            elif chunks:
                parent, engine_keys = group.engine_keys(keys)
                by_parent.setdefault(parent, []).extend(
                    (key, *item[1:]) for key, item in zip(engine_keys, group.items, strict=True)
                )
            else:
                rest.extend(group.items)
        if by_parent:
            zarrs = cast("ZarrsEngine", self._zarrs)
            jobs.extend(
                zarrs.read(parent, items, out, drop_axes) for parent, items in by_parent.items()
            )
        if rest:
            jobs.append(self._default.read(rest, out, drop_axes))
        await _settled(jobs)
        if declined:
            await self._default.read(declined, out, drop_axes)
        # zarr 3.2+ reads a result per chunk (zarr 3.1 none); it looks at them only when
        # told to raise on missing chunks, which is served above.
        return tuple({"status": "present"} for _ in batch_info)

    # ------------------------------------------------------------------- write

    async def write(
        self,
        batch_info: Iterable[tuple[ByteSetter, ArraySpec, SelectorTuple, SelectorTuple, bool]],
        value: NDBuffer,
        drop_axes: tuple[int, ...] = (),
    ) -> None:
        # docstring inherited
        # Every chunk write of the request goes through one fence: when the request
        # fails, those still in flight are waited for and those not started dropped,
        # so none lands after the error reached the caller.
        fence = WriteFence()
        try:
            await self._write(
                [(fence.fenced(item[0]), *item[1:]) for item in batch_info],
                value,
                drop_axes,
                fence,
            )
        finally:
            await fence.close()

    async def _write(
        self,
        batch_info: list[BatchItem],
        value: NDBuffer,
        drop_axes: tuple[int, ...],
        fence: WriteFence,
    ) -> None:
        plan = self._plan
        if not (plan.write_chunks or plan.write_regions):
            await self._default.write(batch_info, value, drop_axes)
            return
        groups, rest = self._split(batch_info)
        jobs: list[Awaitable[object]] = []
        if rest:
            jobs.append(self._default.write(rest, value, drop_axes))
        jobs.append(self._write_local(groups, value, drop_axes, fence))
        await _settled(jobs)

    async def _write_local(
        self,
        groups: list[Group],
        value: NDBuffer,
        drop_axes: tuple[int, ...],
        fence: WriteFence,
    ) -> None:
        """Write the local groups with the engine; what it does not take, with zarr's."""
        ready = await self._ready_to_write(groups, value)
        declined: list[BatchItem] = []
        regions: list[Awaitable[object]] = []
        by_parent: dict[str, tuple[list[Item], list[Group]]] = {}
        source = _numpy(value.as_ndarray_like())
        keys = cast("ChunkKeys", self._keys)
        regions_ok = self._plan.write_regions and not drop_axes and source is not None
        metadata = await self._region_metadata(groups) if regions_ok else None
        for group, state in zip(groups, ready, strict=True):
            if state == "skip":
                continue
            if state == "decline":
                declined.extend(group.items)
            elif regions_ok:
                part = self._part(group, metadata)
                engine = cast("TensorStoreEngine", self._tensorstore)
                ndarray = cast("np.ndarray[Any, Any]", source)
                store_empty = bool(group.items[0][1].config.write_empty_chunks)
                write = None
                if part is not None:
                    write = self._recorded(engine.write(part, ndarray, store_empty), [group])
                regions.append(_unless_declined(write, group, declined))
            elif self._plan.write_chunks and value.dtype.isnative:
                # zarrs 0.2.3 fails on a scalar of another byte order (its own bug): such
                # arrays are written by zarr's pipeline.
                parent, engine_keys = group.engine_keys(keys)
                items, members = by_parent.setdefault(parent, ([], []))
                items.extend(
                    (key, *item[1:]) for key, item in zip(engine_keys, group.items, strict=True)
                )
                members.append(group)
            else:
                declined.extend(group.items)
        jobs = list(regions)
        for parent, (items, members) in by_parent.items():
            zarrs = cast("ZarrsEngine", self._zarrs)
            jobs.append(
                self._recorded(zarrs.write(parent, items, value, drop_axes, fence), members)
            )
        await _settled(jobs)
        if declined:
            await self._default.write(declined, value, drop_axes)

    async def _ready_to_write(self, groups: list[Group], value: NDBuffer) -> list[str]:
        """For each group: ``"write"``, ``"skip"`` (nothing to store in a shard not
        created) or ``"decline"`` (not a local directory to write: zarr's pipeline
        writes it)."""
        states: list[str] = []
        wanted: list[Group] = []
        may_hold_fill = bool(groups) and _may_hold_fill(value, groups[0].items[0][1])
        for group in groups:
            spec = group.items[0][1]
            store_empty = bool(spec.config.write_empty_chunks)
            if (
                not store_empty
                and may_hold_fill
                and not os.path.isdir(group.root)
                and _all_fill(value, group.items)
            ):
                # Nothing to store, and nothing stored to delete: zarr's own pipeline
                # would not create this array shard either (and would delete the keys: a
                # write of theirs that failed before is no longer pending).
                self._store.record_writes([item[0].path for item in group.items])
                states.append("skip")
            else:
                states.append("write")
                wanted.append(group)
        # Creates the array shards (their metadata) on their first write, together, and
        # refuses as ShardedStore.set does (read-only, discarded, outside the config's
        # folder). A failure is recorded as one through ShardedStore.set is: close()
        # then commits nothing (zips of the base and mounts stay as they were).
        try:
            found = await self._store.stores_for_write([group.items[0][0].path for group in wanted])
        except BaseException as error:
            self._store.record_writes(
                [item[0].path for group in wanted for item in group.items], error
            )
            raise
        stores = iter(found)
        for i, state in enumerate(states):
            if state == "write":
                store, _ = next(stores)
                if type(store) is not LocalStore or str(store.root) != groups[i].root:
                    states[i] = "decline"
        return states

    async def _recorded(self, write: Awaitable[bool | None], groups: list[Group]) -> bool:
        """Await a write of the groups' chunks, telling the layout how it went; False:
        the engine declined it (nothing written)."""
        keys = [item[0].path for group in groups for item in group.items]
        try:
            taken = await write is not False
        except BaseException as error:
            self._store.record_writes(keys, error)
            raise
        if taken:
            self._store.record_writes(keys)
        return taken


register_pipeline(ShardedCodecPipeline)


def use_engine(engine: str = "auto") -> AbstractContextManager[None]:
    """Read and write layouts with a native engine: set zarr's codec pipeline.

    Sets ``codec_pipeline.path`` to ``"shardedstore.ShardedCodecPipeline"`` and
    ``shardedstore.engine`` to ``engine`` in zarr's config, for arrays opened from now on
    (the engine is chosen when an array is opened). Used as a context manager, the
    previous settings come back at its end (arrays opened inside keep the engine).

    Parameters
    ----------
    engine
        ``"auto"`` (the fastest installed: zarrs, else TensorStore, else zarr's
        pipeline), ``"zarrs"``, ``"tensorstore"`` or ``"zarr"`` (zarr's own pipeline).

    Returns
    -------
    contextlib.AbstractContextManager
        zarr's config setting, already applied.

    Raises
    ------
    ValueError
        If ``engine`` is not one of these.
    MissingDependencyError
        If the engine's package is not installed (``pip install 'shardedstore[zarrs]'``).

    Examples
    --------
    >>> import shardedstore, zarr
    >>> with shardedstore.use_engine("zarr"):
    ...     zarr.config.get("codec_pipeline.path")
    'shardedstore.ShardedCodecPipeline'
    """
    checked = require(engine)
    setting = config.set({"codec_pipeline.path": PIPELINE_PATH, CONFIG_KEY: checked})
    return cast("AbstractContextManager[None]", setting)
