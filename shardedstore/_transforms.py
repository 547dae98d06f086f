"""Transform every shard of a layout: ``map_shards`` and the built-in copies.

``map_shards(func)`` calls ``func(store, shard_path, chunk_index)`` for the base, every
mount and every existing array shard, on any ``concurrent.futures.Executor``, and
returns a new ShardedStore over the returned stores. The built-ins copy each shard to
a zip file, a directory or any fsspec URL:

- bytes are copied exactly, key by key, streaming (a few values in memory at a time);
- each output is written under a temporary name and renamed when complete, so a final
  name never holds a partial shard; an existing, complete output is skipped, which
  makes re-running after a failure finish the job;
- the new layout creates its future array shards with the same kind of store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import uuid
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, MemoryStore, ZipStore

from shardedstore._factories import (
    ArrayShardDirectoryFactory,
    ArrayShardFactory,
    array_shard_template_store,
)
from shardedstore._registry import same_store
from shardedstore._routing import validate_key
from shardedstore._zip import ZipReference, read_only_zip

if TYPE_CHECKING:
    from shardedstore._store import ShardedStore

__all__ = [
    "ArrayShardStoresFactory",
    "MapShardsError",
    "ShardFunc",
    "ToDirectoryStore",
    "ToUrl",
    "ToZipStore",
    "map_shards",
    "to_directory_store_with_prefix",
    "to_url_with_prefix",
    "to_zip_store_with_prefix",
]

ShardFunc = Callable[[Store, str, "str | None"], Store]
"""``func(store, shard_path, chunk_index) -> Store``, as called by ``map_shards``."""

_BATCH = 8
"""Values read ahead per shard while the previous batch is written (memory bound)."""

_PARTIAL = ".partial-"


class MapShardsError(RuntimeError):
    """A shard failed to transform. Finished shards are complete and usable.

    Attributes
    ----------
    shard_path
        The failing shard's node path (``""`` for the base).
    chunk_index
        The failing array shard's chunk index, or None for the base or a mount.
    finished
        How many shards were transformed before the run stopped.
    """

    def __init__(
        self,
        shard_path: str,
        chunk_index: str | None,
        finished: int,
        total: int,
        error: BaseException,
    ) -> None:
        self.shard_path = shard_path
        self.chunk_index = chunk_index
        self.finished = finished
        super().__init__(
            f"map_shards: {_describe_unit(shard_path, chunk_index)} failed: "
            f"{type(error).__name__}: {error}; {finished} of {total} shards finished and are "
            "usable; fix the cause and run again to finish (complete outputs are skipped)"
        )


def _describe_unit(shard_path: str, chunk_index: str | None) -> str:
    if chunk_index is not None:
        return f"array shard {shard_path!r} chunk {chunk_index}"
    return f"mount {shard_path!r}" if shard_path else "base"


# ------------------------------------------------------------------- copying


def _source_view(store: Store) -> Store:
    """A read-only store to copy from that is safe to pickle into another process."""
    if isinstance(store, ZipStore):
        return read_only_zip(store, fresh=True)
    if store.read_only:
        return store
    try:
        return store.with_read_only(True)
    except NotImplementedError:
        return store


async def _list_source(store: Store) -> list[str] | None:
    """The keys of ``store``, sorted; None if a read-only store does not exist."""
    from shardedstore._store import _opened

    if not await _opened(store):
        return None
    keys = sorted([key async for key in store.list()])
    for key in keys:
        validate_key(key)  # never write outside the output, whatever a store lists
    return keys


async def _sizes(store: Store, keys: list[str]) -> dict[str, int]:
    from shardedstore._store import _gather_bounded

    sizes = await _gather_bounded(store.getsize(key) for key in keys)
    return dict(zip(keys, sizes, strict=True))


def _each(write: Callable[[str, bytes], None]) -> Callable[[list[tuple[str, bytes]]], None]:
    def write_batch(batch: list[tuple[str, bytes]]) -> None:
        for key, data in batch:
            write(key, data)

    return write_batch


async def _copy(
    store: Store, keys: list[str], write_batch: Callable[[list[tuple[str, bytes]]], None]
) -> None:
    """Read ``keys`` in batches and hand them to the blocking ``write_batch``, overlapped.

    At most two batches of values are in memory: the one being written and the next.
    """
    prototype = default_buffer_prototype()

    pending: asyncio.Future[None] | None = None
    for start in range(0, len(keys), _BATCH):
        batch_keys = keys[start : start + _BATCH]
        values = await asyncio.gather(*(store.get(key, prototype) for key in batch_keys))
        batch = []
        for key, value in zip(batch_keys, values, strict=True):
            if value is None:
                raise FileNotFoundError(f"key {key!r} vanished from {store} while copying")
            batch.append((key, value.to_bytes()))
        if pending is not None:
            await pending
        pending = asyncio.ensure_future(asyncio.to_thread(write_batch, batch))
    if pending is not None:
        await pending


def _remove_partials(final: str) -> None:
    """Remove temporary outputs left by an earlier run that crashed."""
    parent, name = os.path.split(final)
    try:
        entries = os.listdir(parent or ".")
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.startswith(name + _PARTIAL):
            path = os.path.join(parent, entry)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)


def _differs(output: str, shard: str) -> FileExistsError:
    return FileExistsError(
        f"{output} exists but does not hold the same keys and sizes as {shard}; remove it "
        "(or choose another prefix) to convert again"
    )


# ----------------------------------------------------------------- built-ins


def _output_name(prefix: str, shard_path: str, chunk_index: str | None, suffix: str) -> str:
    if chunk_index is not None:
        return f"{prefix}/{shard_path}/{chunk_index}{suffix}"
    if shard_path:
        return f"{prefix}/{shard_path}{suffix}"
    return f"{prefix}{suffix}"


_COMPRESSION = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}


@dataclass(frozen=True)
class ToZipStore:
    """Copy each shard into one zip file (see :func:`to_zip_store_with_prefix`)."""

    prefix: str
    compression: int = zipfile.ZIP_STORED
    compresslevel: int | None = None

    def output(self, shard_path: str, chunk_index: str | None) -> str:
        """The zip file of a shard: ``{prefix}[/{shard_path}[/{chunk_index}]].zarr.zip``."""
        return _output_name(self.prefix, shard_path, chunk_index, ".zarr.zip")

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more zips."""
        template: dict[str, Any] = {"type": "zip", "path": self.output(array_path, "{chunk}")}
        if self.compression != zipfile.ZIP_STORED:
            template["compression"] = self.compression
        return array_shard_template_store(template)

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        final = self.output(shard_path, chunk_index)
        result = ZipStore(final, mode="a", compression=self.compression)
        keys = sync(_list_source(store))
        if keys is None:
            return result  # a shard that does not exist: nothing to copy
        if os.path.exists(final):
            sizes = sync(_sizes(store, keys))
            with zipfile.ZipFile(final) as zf:
                found = {info.filename: info.file_size for info in zf.infolist()}
            if found != sizes:
                raise _differs(final, str(store))
            return result
        _remove_partials(final)
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        partial = f"{final}{_PARTIAL}{uuid.uuid4().hex[:12]}"
        try:
            with zipfile.ZipFile(
                partial,
                "w",
                compression=self.compression,
                allowZip64=True,
                compresslevel=self.compresslevel,
            ) as zf:
                written: dict[str, int] = {}

                def write(key: str, data: bytes) -> None:
                    info = zipfile.ZipInfo(key, date_time=_now())
                    info.compress_type = self.compression
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data, compresslevel=self.compresslevel)
                    written[key] = len(data)

                sync(_copy(store, keys, _each(write)))
            with zipfile.ZipFile(partial) as zf:  # complete: central directory readable
                found = {info.filename: info.file_size for info in zf.infolist()}
            if found != written or len(found) != len(keys):
                raise OSError(f"{partial}: wrote {len(keys)} keys, the zip lists {len(found)}")
            os.replace(partial, final)
        except BaseException:
            if os.path.exists(partial):
                os.remove(partial)
            raise
        return result


def _now() -> tuple[int, int, int, int, int, int]:
    import time

    year, month, day, hour, minute, second = time.localtime()[:6]
    return (year, month, day, hour, minute, second)


@dataclass(frozen=True)
class ToDirectoryStore:
    """Copy each shard into one directory (see :func:`to_directory_store_with_prefix`)."""

    prefix: str

    def output(self, shard_path: str, chunk_index: str | None) -> str:
        """The directory of a shard: ``{prefix}[/{shard_path}[/{chunk_index}]].zarr``."""
        return _output_name(self.prefix, shard_path, chunk_index, ".zarr")

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more directories."""
        return ArrayShardDirectoryFactory(str(Path(f"{self.prefix}/{array_path}")))

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        final = self.output(shard_path, chunk_index)
        result = LocalStore(final)
        keys = sync(_list_source(store))
        if keys is None:
            return result
        if os.path.exists(final):
            sizes = sync(_sizes(store, keys))
            if _directory_sizes(final) != sizes:
                raise _differs(final, str(store))
            return result
        _remove_partials(final)
        partial = f"{final}{_PARTIAL}{uuid.uuid4().hex[:12]}"
        try:
            os.makedirs(partial)
            made: set[str] = set()

            def write(key: str, data: bytes) -> None:
                path = os.path.join(partial, *key.split("/"))
                parent = os.path.dirname(path)
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                with open(path, "wb") as f:
                    f.write(data)

            sync(_copy(store, keys, _each(write)))
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return result


def _directory_sizes(root: str) -> dict[str, int]:
    sizes = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            sizes[Path(os.path.relpath(path, root)).as_posix()] = os.path.getsize(path)
    return sizes


@dataclass(frozen=True)
class ToUrl:
    """Copy each shard below an fsspec URL (see :func:`to_url_with_prefix`)."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def output(self, shard_path: str, chunk_index: str | None) -> str:
        """The URL of a shard: ``{url}[/{shard_path}[/{chunk_index}]].zarr``."""
        return _output_name(self.url.rstrip("/"), shard_path, chunk_index, ".zarr")

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more URLs."""
        template: dict[str, Any] = {"type": "fsspec", "url": self.output(array_path, "{chunk}")}
        if self.storage_options:
            template["storage_options"] = dict(self.storage_options)
        return array_shard_template_store(template)

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        from fsspec.core import url_to_fs

        final_url = self.output(shard_path, chunk_index)
        result = FsspecStore.from_url(final_url, storage_options=dict(self.storage_options))
        keys = sync(_list_source(store))
        if keys is None:
            return result
        fs, final = url_to_fs(final_url, **self.storage_options)
        existing = (
            {
                entry["name"][len(final.rstrip("/")) + 1 :]: entry["size"]
                for entry in fs.find(final, detail=True).values()
            }
            if fs.exists(final)
            else {}
        )
        if existing:
            sizes = sync(_sizes(store, keys))
            if existing == sizes:
                return result
            if not set(existing) <= set(sizes):
                raise _differs(final_url, str(store))
            # A move interrupted on an object store (no atomic rename there): redo it.
        partial = f"{final}{_PARTIAL}{uuid.uuid4().hex[:12]}"
        local = _is_local(fs)
        try:

            def write_batch(batch: list[tuple[str, bytes]]) -> None:
                if local:
                    for key, _ in batch:
                        os.makedirs(os.path.dirname(f"{partial}/{key}"), exist_ok=True)
                fs.pipe({f"{partial}/{key}": data for key, data in batch})

            sync(_copy(store, keys, write_batch))
            if local:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.rename(partial, final)  # atomic on a local filesystem
            else:
                # Object stores cannot rename: server-side copies, then drop the partial.
                fs.copy([f"{partial}/{key}" for key in keys], [f"{final}/{key}" for key in keys])
                fs.rm(partial, recursive=True)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(partial, recursive=True)
            raise
        return result


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def to_zip_store_with_prefix(
    prefix: str | os.PathLike[str],
    *,
    compression: Literal["stored", "deflated", "bzip2", "lzma"] | int = "stored",
    compresslevel: int | None = None,
) -> ToZipStore:
    """Copy every shard into its own zip file, for :meth:`ShardedStore.map_shards`.

    Outputs: ``{prefix}.zarr.zip`` (base), ``{prefix}/{shard_path}.zarr.zip`` (a mount),
    ``{prefix}/{shard_path}/{chunk_index}.zarr.zip`` (an array shard). Zips are written
    uncompressed by default (chunks are usually compressed already), with ZIP64 for
    large files, under a temporary name renamed when complete; an existing complete
    zip is skipped. Array shards created later in the new layout are zips too.

    Parameters
    ----------
    prefix
        Where the zips go.
    compression
        ``"stored"`` (default), ``"deflated"``, ``"bzip2"``, ``"lzma"`` or a zipfile
        constant.
    compresslevel
        Compression level for deflated (0-9) or bzip2 (1-9).

    Returns
    -------
    ToZipStore
        A picklable ``func(store, shard_path, chunk_index) -> ZipStore``.
    """
    if isinstance(compression, str):
        if compression not in _COMPRESSION:
            raise ValueError(
                f"unknown zip compression {compression!r}; use one of {', '.join(_COMPRESSION)}"
            )
        compression = _COMPRESSION[compression]
    return ToZipStore(os.fspath(prefix), compression, compresslevel)


def to_directory_store_with_prefix(prefix: str | os.PathLike[str]) -> ToDirectoryStore:
    """Copy every shard into its own directory, for :meth:`ShardedStore.map_shards`.

    Outputs: ``{prefix}.zarr``, ``{prefix}/{shard_path}.zarr``,
    ``{prefix}/{shard_path}/{chunk_index}.zarr`` — the layout
    :func:`array_shard_directory_store` uses, so array shards created later land beside
    them. Each directory is written under a temporary name and renamed when complete.
    """
    return ToDirectoryStore(os.fspath(prefix))


def to_url_with_prefix(url: str, *, storage_options: Mapping[str, Any] | None = None) -> ToUrl:
    """Copy every shard below an fsspec URL (``s3://bucket/ds``), for ``map_shards``.

    Outputs: ``{url}.zarr``, ``{url}/{shard_path}.zarr``,
    ``{url}/{shard_path}/{chunk_index}.zarr``. Each shard is written below a temporary
    prefix, then moved (a rename on local disk, server-side copies on object stores); a
    re-run skips shards whose keys and sizes are all in place and redoes the rest.
    """
    return ToUrl(url, dict(storage_options or {}))


# ------------------------------------------------------------------ factories


@dataclass(frozen=True)
class ArrayShardStoresFactory:
    """Array shards made by a transform: the stores it returned, by chunk index.

    Shards a transform did not return (created later) come from ``fallback``; without
    one, they read as empty and cannot be written.
    """

    stores: Mapping[str, Store]
    fallback: ArrayShardFactory | None = None

    def __call__(self, chunk_index: str, /) -> Store:
        store = self.stores.get(chunk_index)
        if store is not None:
            return store
        if self.fallback is not None:
            return self.fallback(chunk_index)
        return MemoryStore(read_only=True)

    @property
    def supports_sync(self) -> bool:
        from zarr.abc.store import SupportsSyncStore

        from shardedstore._factories import factory_supports_sync

        return all(isinstance(s, SupportsSyncStore) for s in self.stores.values()) and (
            self.fallback is None or factory_supports_sync(self.fallback)
        )

    def existing_chunk_indices(self) -> list[str] | None:
        found = set(self.stores)
        lister = getattr(self.fallback, "existing_chunk_indices", None)
        if lister is not None:
            listed = lister()
            if listed is None:
                return None
            found.update(listed)
        return sorted(found)


# ----------------------------------------------------------------- map_shards


@dataclass(frozen=True)
class _Unit:
    shard_path: str
    chunk_index: str | None
    source: Store


def _index_key(index: str) -> tuple[int, ...]:
    return tuple(int(part) for part in index.split("."))


async def _units_async(store: ShardedStore) -> list[_Unit]:
    """The base, every mount and every existing array shard, as read-only sources."""
    base, mounts = store._given
    units = [_Unit("", None, _source_view(base))]
    units += [_Unit(path, None, _source_view(mount)) for path, mount in sorted(mounts.items())]
    for path, (_, factory) in sorted(store.array_shards.items()):
        indices = await store._existing_chunk_indices(path)
        for index in sorted(indices, key=_index_key):
            units.append(_Unit(path, index, _source_view(factory(index))))
    return units


def _units(store: ShardedStore) -> list[_Unit]:
    return list(sync(_units_async(store)))


def _run_unit(func: ShardFunc, source: Store, shard_path: str, chunk_index: str | None) -> Any:
    """Run ``func`` for one shard; the result travels back safely from a process."""
    result = func(source, shard_path, chunk_index)
    if not isinstance(result, Store):
        raise TypeError(
            f"map_shards: func returned {type(result).__name__} for "
            f"{_describe_unit(shard_path, chunk_index)}; it must return a zarr store"
        )
    return ZipReference.of(result)


def _progress_bar(progress: bool | None, total: int) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm

    # On a terminal the bar appears only for runs over a second.
    return tqdm(total=total, unit="shard", desc="map_shards", delay=1.0 if progress is None else 0)


def map_shards(
    store: ShardedStore,
    func: ShardFunc,
    *,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> ShardedStore:
    """See :meth:`ShardedStore.map_shards`."""
    from shardedstore._store import ShardedStore

    units = _units(store)
    own_executor = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=min(8, len(units)))
    bar = _progress_bar(progress, len(units))
    results: dict[tuple[str, str | None], Store] = {}
    try:
        futures: dict[Future[Any], _Unit] = {
            pool.submit(_run_unit, func, unit.source, unit.shard_path, unit.chunk_index): unit
            for unit in units
        }
        failure: tuple[_Unit, BaseException] | None = None
        for future in as_completed(futures):
            unit = futures[future]
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                if failure is None:
                    failure = (unit, error)
                    for other in futures:
                        other.cancel()  # those not started; running ones finish
                continue
            results[(unit.shard_path, unit.chunk_index)] = ZipReference.store(future.result())
            if bar is not None:
                bar.update(1)
        if failure is not None:
            unit, error = failure
            raise MapShardsError(
                unit.shard_path, unit.chunk_index, len(results), len(units), error
            ) from error
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            pool.shutdown(wait=True, cancel_futures=True)

    new_mounts = {path: results[(path, None)] for path in store._given[1]}
    arrays: dict[str, tuple[int, ArrayShardFactory]] = {}
    for path, (dims, _) in store.array_shards.items():
        made = {index: s for (p, index), s in results.items() if p == path and index is not None}
        maker = getattr(func, "array_shard_factory", None)
        fallback: ArrayShardFactory | None = maker(path) if maker is not None else None
        if fallback is not None and all(same_store(fallback(i), s) for i, s in made.items()):
            arrays[path] = (dims, fallback)
        else:
            arrays[path] = (dims, ArrayShardStoresFactory(made, fallback))
    return ShardedStore(results[("", None)], new_mounts, arrays)
