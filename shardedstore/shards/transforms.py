"""Transform every shard of a layout: ``map_shards`` and the built-in copies.

``map_shards(func)`` calls ``func(store, shard_path, chunk_index)`` for the base, every
mount and every existing array shard (as :meth:`ShardedStore.shards` enumerates them),
on any ``concurrent.futures.Executor``, and returns a new ShardedStore over the
returned stores. Each ``store`` is a read-only
view of the shard's own keys (see :mod:`shardedstore.shards.source`): stray keys and
array shards outside the array's shape are reported, not copied, and a shard is never
read through a symlink. The built-ins copy each shard to a zip file, a directory or
any fsspec URL:

- bytes are copied exactly, key by key, streaming (a few values in memory at a time);
- one conversion per output at a time (an OS lock, or a lease on object stores), and
  only the holder removes the leftovers of dead runs (:mod:`shardedstore.shards.outputlock`);
- each output is written under a temporary name and renamed when complete, so a final
  name never holds a partial shard; an existing output is skipped only if it holds the
  same keys with the same content (crc32), which makes re-running after a failure
  finish the job; one with other content is refused, never kept silently;
- one Ctrl-C cancels the shards not started and stops the running ones between two
  batches of values;
- the new layout creates its future array shards with the same kind of store.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import threading
import uuid
import warnings
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, cast, runtime_checkable

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore

from shardedstore.backends.crc import crc32
from shardedstore.backends.handles import opened
from shardedstore.backends.oserrors import written_as
from shardedstore.backends.registry import same_store
from shardedstore.backends.sync import interruptible_sync
from shardedstore.backends.zips import ZipReference
from shardedstore.backends.zipstore import CopyOnWriteZipStore
from shardedstore.errors import MapShardsError, StrayKeysWarning, describe_shard
from shardedstore.shards.outputlock import (
    PARTIAL,
    UrlLease,
    leftover_pattern,
    local_output_lock,
    remove_local_leftovers,
    remove_url_leftovers,
)
from shardedstore.shards.prefixes import check_path_prefix, check_url_prefix
from shardedstore.shards.source import ShardSource, shard_sources
from shardedstore.store.factories import (
    ArrayShardDirectoryFactory,
    ArrayShardFactory,
    ArrayShardStoresFactory,
    array_shard_template_store,
)
from shardedstore.store.routing import validate_key
from shardedstore.store.sharded import ShardedStore

if TYPE_CHECKING:
    import re

__all__ = [
    "IncludesStray",
    "LocksOutput",
    "MakesArrayShards",
    "RunCancelled",
    "ShardFunc",
    "ShardTransform",
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


@runtime_checkable
class IncludesStray(Protocol):
    """A transform that says whether it reads stray keys and shards too."""

    include_stray: bool


@runtime_checkable
class MakesArrayShards(Protocol):
    """A transform that says where array shards created later in its output go."""

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """The factory of the array shards of ``array_path`` in the new layout."""
        ...


@runtime_checkable
class LocksOutput(Protocol):
    """A transform that holds its output for the run and cleans up after dead runs."""

    def lock_output(self) -> contextlib.AbstractContextManager[Any]:
        """A context manager held for the whole run (one run per output)."""
        ...

    def remove_leftovers(self, store: ShardedStore) -> None:
        """Remove temporary outputs of dead runs (called holding :meth:`lock_output`)."""
        ...


@runtime_checkable
class ShardTransform(IncludesStray, MakesArrayShards, LocksOutput, Protocol):
    """What ``map_shards`` asks of a transform: ``func(store, shard_path, chunk_index)``.

    Every hook is optional for a plain function; :func:`map_shards` uses those a
    transform has (each a Protocol of its own: :class:`IncludesStray`,
    :class:`MakesArrayShards`, :class:`LocksOutput`). The built-ins have all of them; a
    transform wrapping one should forward them.
    """

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None, /) -> Store:
        """The new store of one shard, read from ``store`` (a read-only view)."""
        ...


_BATCH = 8
"""Values read ahead per shard while the previous batch is written (memory bound)."""

_STOP_WAIT = 10.0
"""Seconds an interrupted run waits for its running shards to stop and clean up."""

Digest = tuple[int, int]
"""``(size, crc32)`` of a value."""


class RunCancelled(Exception):
    """The run was interrupted (Ctrl-C) before this shard was finished."""


# ------------------------------------------------------------- cancellation

_cancelled_runs: set[str] = set()
"""Runs of this process interrupted by the user: their shards stop between batches."""

_current = threading.local()
"""The run a worker thread is transforming a shard for (``_current.run``)."""


def _cancel_check() -> Callable[[], bool]:
    """Whether the run calling a built-in (in this thread) was interrupted."""
    run = getattr(_current, "run", None)
    if run is None:
        return lambda: False
    return lambda: run in _cancelled_runs


# ------------------------------------------------------------------- copying


async def _list_source(store: Store) -> list[str] | None:
    """The keys of ``store``, sorted; None if a read-only store does not exist."""

    if not await opened(store):
        return None
    keys = sorted({key async for key in store.list()})
    for key in keys:
        validate_key(key)  # never write outside the output, whatever a store lists
    return keys


def _each(write: Callable[[str, bytes], None]) -> Callable[[list[tuple[str, bytes]]], None]:
    def write_batch(batch: list[tuple[str, bytes]]) -> None:
        for key, data in batch:
            write(key, data)

    return write_batch


async def _copy(
    store: Store,
    keys: list[str],
    write_batch: Callable[[list[tuple[str, bytes]]], None],
    cancelled: Callable[[], bool],
) -> None:
    """Read ``keys`` in batches and hand them to the blocking ``write_batch``, overlapped.

    At most two batches of values are in memory: the one being written and the next.
    Raises :class:`RunCancelled` between two batches once ``cancelled()``.
    """
    prototype = default_buffer_prototype()

    pending: asyncio.Future[None] | None = None
    try:
        for start in range(0, len(keys), _BATCH):
            if cancelled():
                raise RunCancelled("interrupted")
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
    finally:
        if pending is not None and not pending.done():
            with contextlib.suppress(BaseException):
                await pending  # never leave a write running behind the caller's cleanup


async def _digests(
    store: Store, keys: list[str], cancelled: Callable[[], bool]
) -> dict[str, Digest]:
    """``key -> (size, crc32)`` of ``keys`` in ``store``, streaming."""
    found: dict[str, Digest] = {}

    def record(batch: list[tuple[str, bytes]]) -> None:
        for key, data in batch:
            found[key] = (len(data), crc32(data))

    await _copy(store, keys, record, cancelled)
    return found


def _difference(expected: Mapping[str, Digest], found: Mapping[str, Digest]) -> str | None:
    """How an existing output differs from what converting the shard writes, or None."""
    for key in sorted(expected.keys() | found.keys()):
        if key not in found:
            return f"{key!r} is missing from it"
        if key not in expected:
            return f"it holds {key!r}, which the shard does not"
        (size, crc), (found_size, found_crc) = expected[key], found[key]
        if size != found_size:
            return f"{key!r} holds {found_size} bytes instead of {size}"
        if crc != found_crc:
            return f"{key!r} has the same size but other bytes (crc32 differs)"
    return None


def _differs(output: str, shard: str, detail: str) -> FileExistsError:
    return FileExistsError(
        f"{output} exists and differs from {shard}: {detail}; it holds other data than this "
        "conversion writes, so it is left as it is: remove it, or convert into another --out "
        "(prefix), to convert again"
    )


# ----------------------------------------------------------------- built-ins


def _output_name(prefix: str, shard_path: str, chunk_index: str | None, suffix: str) -> str:
    if chunk_index is not None:
        return f"{prefix}/{shard_path}/{chunk_index}{suffix}"
    if shard_path:
        return f"{prefix}/{shard_path}{suffix}"
    return f"{prefix}{suffix}"


def _partial_name(final: str) -> str:
    return f"{final}{PARTIAL}{uuid.uuid4().hex[:12]}"


def _leftover_places(prefix: str, store: ShardedStore, suffix: str) -> dict[str, re.Pattern[str]]:
    """Directories (or object prefixes) of a layout's outputs -> names of their leftovers."""
    names: dict[str, set[str]] = {}
    for path in ("", *store.mounts):
        parent, _, name = _output_name(prefix, path, None, suffix).rpartition("/")
        names.setdefault(parent, set()).add(name)
    array_dirs = {f"{prefix}/{path}" for path in store.array_shards}
    return {
        directory: leftover_pattern(
            names.get(directory, ()), suffix, array_shards=directory in array_dirs
        )
        for directory in names.keys() | array_dirs
    }


_COMPRESSION = {
    "stored": zipfile.ZIP_STORED,
    "deflated": zipfile.ZIP_DEFLATED,
    "bzip2": zipfile.ZIP_BZIP2,
    "lzma": zipfile.ZIP_LZMA,
}


class _LocalOutput:
    """What the transforms writing below a local path prefix share."""

    prefix: str
    _suffix: ClassVar[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", check_path_prefix(self.prefix))

    def output(self, shard_path: str, chunk_index: str | None) -> str:
        """The output of a shard: ``{prefix}[/{shard_path}[/{chunk_index}]]`` + the suffix
        (``.zarr.zip``, ``.zarr``)."""
        return _output_name(self.prefix, shard_path, chunk_index, self._suffix)

    def lock_output(self) -> contextlib.AbstractContextManager[None]:
        """Hold the OS lock ``{prefix}.lock``: one conversion into the prefix at a time."""
        return local_output_lock(self.prefix, f"output {self.prefix!r}")

    def remove_leftovers(self, store: ShardedStore) -> None:
        """Remove the temporary outputs of dead runs (while holding :meth:`lock_output`)."""
        remove_local_leftovers(_leftover_places(self.prefix, store, self._suffix))


@dataclass(frozen=True)
class ToZipStore(_LocalOutput):
    """Copy each shard into one zip file (see :func:`to_zip_store_with_prefix`)."""

    prefix: str
    compression: int = zipfile.ZIP_STORED
    compresslevel: int | None = None
    include_stray: bool = False
    _suffix: ClassVar[str] = ".zarr.zip"

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more zips."""
        template: dict[str, Any] = {"type": "zip", "path": self.output(array_path, "{chunk}")}
        if self.compression != zipfile.ZIP_STORED:
            template["compression"] = self.compression
        return array_shard_template_store(template)

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        final = self.output(shard_path, chunk_index)
        result = CopyOnWriteZipStore(final, mode="a", compression=self.compression)
        cancelled = _cancel_check()
        keys = sync(_list_source(store))
        if keys is None:
            return result  # a shard that does not exist: nothing to copy
        if os.path.lexists(final):
            detail: str | None
            try:
                with zipfile.ZipFile(final) as zf:
                    found = {info.filename: (info.file_size, info.CRC) for info in zf.infolist()}
            except (zipfile.BadZipFile, OSError) as error:
                detail = f"it is not a readable zip ({error})"
            else:
                detail = _difference(sync(_digests(store, keys, cancelled)), found)
            if detail is not None:
                raise _differs(final, describe_shard(shard_path, chunk_index), detail)
            return result  # complete: the same keys with the same crc32
        os.makedirs(os.path.dirname(final) or ".", exist_ok=True)
        partial = _partial_name(final)

        def discard() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)

        with written_as(partial, final, discard):
            with zipfile.ZipFile(
                partial,
                "w",
                compression=self.compression,
                allowZip64=True,
                compresslevel=self.compresslevel,
            ) as zf:
                written: dict[str, Digest] = {}

                def write(key: str, data: bytes) -> None:
                    info = zipfile.ZipInfo(key, date_time=_now())
                    info.compress_type = self.compression
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, data, compresslevel=self.compresslevel)
                    written[key] = (len(data), info.CRC)  # computed by zipfile as it wrote

                sync(_copy(store, keys, _each(write), cancelled))
            with zipfile.ZipFile(partial) as zf:  # complete: central directory readable
                found = {info.filename: (info.file_size, info.CRC) for info in zf.infolist()}
            if found != written or len(found) != len(keys):
                raise OSError(
                    f"{final}: wrote {len(keys)} keys, the zip lists {len(found)}; it was "
                    "not written"
                )
            os.replace(partial, final)
        return result


def _now() -> tuple[int, int, int, int, int, int]:
    import time

    year, month, day, hour, minute, second = time.localtime()[:6]
    return (year, month, day, hour, minute, second)


@dataclass(frozen=True)
class ToDirectoryStore(_LocalOutput):
    """Copy each shard into one directory (see :func:`to_directory_store_with_prefix`)."""

    prefix: str
    include_stray: bool = False
    _suffix: ClassVar[str] = ".zarr"

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more directories."""
        return ArrayShardDirectoryFactory(str(Path(f"{self.prefix}/{array_path}")))

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        final = self.output(shard_path, chunk_index)
        result = LocalStore(final)
        cancelled = _cancel_check()
        keys = sync(_list_source(store))
        if keys is None:
            return result
        if os.path.lexists(final):
            detail = _difference(
                sync(_digests(store, keys, cancelled)), _directory_digests(final, cancelled)
            )
            if detail is not None:
                raise _differs(final, describe_shard(shard_path, chunk_index), detail)
            return result
        partial = _partial_name(final)
        with written_as(partial, final, lambda: shutil.rmtree(partial, ignore_errors=True)):
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

            sync(_copy(store, keys, _each(write), cancelled))
            os.rename(partial, final)
        return result


def _directory_digests(root: str, cancelled: Callable[[], bool]) -> dict[str, Digest]:
    """``key -> (size, crc32)`` of every file below ``root`` (symlinks not followed)."""
    found: dict[str, Digest] = {}
    for directory, _, files in os.walk(root):
        if cancelled():
            raise RunCancelled("interrupted")
        for name in files:
            path = os.path.join(directory, name)
            key = Path(os.path.relpath(path, root)).as_posix()
            if os.path.islink(path):
                found[key] = (-1, 0)  # never the same as a file of the shard
                continue
            with open(path, "rb") as f:
                data = f.read()
            found[key] = (len(data), crc32(data))
    return found


@dataclass(frozen=True)
class ToUrl:
    """Copy each shard below an fsspec URL (see :func:`to_url_with_prefix`)."""

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    include_stray: bool = False
    lease_seconds: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", check_url_prefix(self.url))

    def output(self, shard_path: str, chunk_index: str | None) -> str:
        """The URL of a shard: ``{url}[/{shard_path}[/{chunk_index}]].zarr``."""
        return _output_name(self.url, shard_path, chunk_index, ".zarr")

    def array_shard_factory(self, array_path: str) -> ArrayShardFactory:
        """Where array shards created later in the new layout go: more URLs."""
        template: dict[str, Any] = {"type": "fsspec", "url": self.output(array_path, "{chunk}")}
        if self.storage_options:
            template["storage_options"] = dict(self.storage_options)
        return array_shard_template_store(template)

    def _fs(self) -> tuple[Any, str]:
        from fsspec.core import url_to_fs

        fs, path = url_to_fs(self.url, **self.storage_options)
        return fs, str(path).rstrip("/")

    def lock_output(self) -> contextlib.AbstractContextManager[Any]:
        """One conversion into the URL at a time.

        On local disk (``file://``), the OS lock ``{path}.lock``; elsewhere a lease: the
        object ``{url}.lock``, renewed while held, taken over once it expired (its
        holder died). See :mod:`shardedstore.shards.outputlock`.
        """
        fs, path = self._fs()
        if _is_local(fs):
            return local_output_lock(path, f"output {self.url!r}")
        return UrlLease(fs, f"{path}.lock", self.url, self.lease_seconds)

    def remove_leftovers(self, store: ShardedStore) -> None:
        """Remove temporary prefixes of dead runs (while holding :meth:`lock_output`)."""
        fs, path = self._fs()
        places = _leftover_places(path, store, ".zarr")
        if _is_local(fs):
            remove_local_leftovers(places)
        else:
            remove_url_leftovers(fs, places)

    def __call__(self, store: Store, shard_path: str, chunk_index: str | None) -> Store:
        from fsspec.core import url_to_fs

        final_url = self.output(shard_path, chunk_index)
        result = FsspecStore.from_url(final_url, storage_options=dict(self.storage_options))
        cancelled = _cancel_check()
        keys = sync(_list_source(store))
        if keys is None:
            return result
        fs, final = url_to_fs(final_url, **self.storage_options)
        final = str(final).rstrip("/")
        with contextlib.suppress(Exception):
            fs.invalidate_cache(final)
        if fs.exists(final):
            inside = [str(name) for name in fs.find(final) if str(name).startswith(final + "/")]
            names = [name[len(final) + 1 :] for name in inside]
            found = _url_digests(fs, final, names, cancelled)
            expected = sync(_digests(store, keys, cancelled))
            detail = _difference(expected, found)
            if detail is None:
                return result
            interrupted_move = set(found) < set(expected) and all(
                expected[key] == digest for key, digest in found.items()
            )
            if not interrupted_move:
                raise _differs(final_url, describe_shard(shard_path, chunk_index), detail)
            # A move interrupted on an object store (no atomic rename there): redo it.
        partial = _partial_name(final)
        local = _is_local(fs)

        def discard() -> None:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(partial, recursive=True)

        with written_as(partial, final, discard):

            def write_batch(batch: list[tuple[str, bytes]]) -> None:
                if local:
                    for key, _ in batch:
                        os.makedirs(os.path.dirname(f"{partial}/{key}"), exist_ok=True)
                fs.pipe({f"{partial}/{key}": data for key, data in batch})

            sync(_copy(store, keys, write_batch, cancelled))
            if cancelled():
                raise RunCancelled("interrupted")
            if local:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.rename(partial, final)  # atomic on a local filesystem
            else:
                # Object stores cannot rename: server-side copies, then drop the partial.
                fs.copy([f"{partial}/{key}" for key in keys], [f"{final}/{key}" for key in keys])
                fs.rm(partial, recursive=True)
        return result


def _url_digests(
    fs: Any, root: str, names: list[str], cancelled: Callable[[], bool]
) -> dict[str, Digest]:
    """``name -> (size, crc32)`` of the objects ``root/name``, a batch at a time."""
    found: dict[str, Digest] = {}
    for start in range(0, len(names), _BATCH):
        if cancelled():
            raise RunCancelled("interrupted")
        batch = names[start : start + _BATCH]
        values = fs.cat([f"{root}/{name}" for name in batch])
        for name in batch:
            data = values[f"{root}/{name}"]
            found[name] = (len(data), crc32(data))
    return found


def _is_local(fs: Any) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return "file" in protocols or "local" in protocols


def to_zip_store_with_prefix(
    prefix: str | os.PathLike[str],
    *,
    compression: Literal["stored", "deflated", "bzip2", "lzma"] | int = "stored",
    compresslevel: int | None = None,
    include_stray: bool = False,
) -> ToZipStore:
    """Copy every shard into its own zip file, for :meth:`ShardedStore.map_shards`.

    Outputs: ``{prefix}.zarr.zip`` (base), ``{prefix}/{shard_path}.zarr.zip`` (a mount),
    ``{prefix}/{shard_path}/{chunk_index}.zarr.zip`` (an array shard). Zips are written
    uncompressed by default (chunks are usually compressed already), with ZIP64 for
    large files, under a temporary name renamed when complete. An existing zip holding
    the same keys with the same crc32 is skipped; one holding anything else is refused.
    A conversion holds the OS lock ``{prefix}.lock``. Array shards created later in the
    new layout are zips too.

    Parameters
    ----------
    prefix
        Where the zips go: a path ending in a name (``archive/ds``), normalized.
    compression
        ``"stored"`` (default), ``"deflated"``, ``"bzip2"``, ``"lzma"`` or a zipfile
        constant.
    compresslevel
        Compression level for deflated (0-9) or bzip2 (1-9).
    include_stray
        Also copy stray keys and array shards outside the array's shape (by default
        they are reported with a :class:`StrayKeysWarning` and left out).

    Returns
    -------
    ToZipStore
        A picklable ``func(store, shard_path, chunk_index) -> ZipStore``.

    Raises
    ------
    ValueError
        If ``prefix`` is empty, a root, ``.``/``..`` or a URL (see ``_prefixes``).
    """
    if isinstance(compression, str):
        if compression not in _COMPRESSION:
            raise ValueError(
                f"unknown zip compression {compression!r}; use one of {', '.join(_COMPRESSION)}"
            )
        compression = _COMPRESSION[compression]
    return ToZipStore(os.fspath(prefix), compression, compresslevel, include_stray)


def to_directory_store_with_prefix(
    prefix: str | os.PathLike[str], *, include_stray: bool = False
) -> ToDirectoryStore:
    """Copy every shard into its own directory, for :meth:`ShardedStore.map_shards`.

    Outputs: ``{prefix}.zarr``, ``{prefix}/{shard_path}.zarr``,
    ``{prefix}/{shard_path}/{chunk_index}.zarr`` — the layout
    :func:`array_shard_directory_store` uses, so array shards created later land beside
    them. Each directory is written under a temporary name and renamed when complete;
    an existing one is skipped only if it holds the same keys with the same crc32.
    ``include_stray`` as for :func:`to_zip_store_with_prefix`.
    """
    return ToDirectoryStore(os.fspath(prefix), include_stray)


def to_url_with_prefix(
    url: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    include_stray: bool = False,
    lease_seconds: float = 60.0,
) -> ToUrl:
    """Copy every shard below an fsspec URL (``s3://bucket/ds``), for ``map_shards``.

    Outputs: ``{url}.zarr``, ``{url}/{shard_path}.zarr``,
    ``{url}/{shard_path}/{chunk_index}.zarr``. Each shard is written below a temporary
    prefix, then moved (a rename on local disk, server-side copies on object stores); a
    re-run skips shards whose keys are all in place with the same crc32, redoes a move
    that was interrupted, and refuses anything else.

    Parameters
    ----------
    url
        Where the shards go: a URL with a name below its bucket, normalized.
    storage_options
        fsspec options (``endpoint_url``, credentials...).
    include_stray
        As for :func:`to_zip_store_with_prefix`.
    lease_seconds
        On object stores, how long the lock object ``{url}.lock`` of a conversion stays
        valid without renewal: after a crash, the next conversion waits at most this
        long. It is renewed every third of it while the conversion runs.
    """
    return ToUrl(url, dict(storage_options or {}), include_stray, float(lease_seconds))


# ----------------------------------------------------------------- map_shards


_Outcome = tuple["Store | ZipReference", int, list[str]]
"""What a shard's task sends back: its new store, and its stray keys (count, examples)."""


def _run_unit(
    func: ShardFunc, source: Store, shard_path: str, chunk_index: str | None, run: str
) -> _Outcome:
    """Run ``func`` for one shard; the result travels back safely from a process."""
    _current.run = run
    try:
        result = func(source, shard_path, chunk_index)
    finally:
        _current.run = None
    if not isinstance(result, Store):
        raise TypeError(
            f"map_shards: func returned {type(result).__name__} for "
            f"{describe_shard(shard_path, chunk_index)}; it must return a zarr store"
        )
    stray = source.stray_keys() if isinstance(source, ShardSource) else []
    return ZipReference.of(result), len(stray), stray[:3]


def _progress_bar(progress: bool | None, total: int) -> Any:
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        return None
    from tqdm.auto import tqdm

    # On a terminal the bar appears only for runs over a second.
    return tqdm(total=total, unit="shard", desc="map_shards", delay=1.0 if progress is None else 0)


def _stop(run: str, futures: Mapping[Future[Any], int]) -> None:
    """Cancel the shards not started; let the running ones stop and clean up."""
    _cancelled_runs.add(run)
    for future in futures:
        future.cancel()
    running = [future for future in futures if not future.done()]
    if running:
        wait(running, timeout=_STOP_WAIT)


def _run_all(
    func: ShardFunc,
    sources: list[tuple[str, str | None, ShardSource]],
    executor: Executor | None,
    progress: bool | None,
) -> tuple[dict[tuple[str, str | None], Store], list[str]]:
    """Transform every shard; the new stores by shard, and notes on stray keys."""
    run = uuid.uuid4().hex
    own_executor = executor is None
    pool = executor or ThreadPoolExecutor(max_workers=max(1, min(8, len(sources))))
    bar = _progress_bar(progress, len(sources))
    results: dict[tuple[str, str | None], Store] = {}
    notes: dict[int, str] = {}
    futures: dict[Future[_Outcome], int] = {}
    try:
        for position, (path, index, source) in enumerate(sources):
            futures[pool.submit(_run_unit, func, source, path, index, run)] = position
        failure: tuple[int, BaseException] | None = None
        for future in as_completed(futures):
            position = futures[future]
            if future.cancelled():
                continue
            error = future.exception()
            if error is not None:
                if failure is None:
                    failure = (position, error)
                    for other in futures:
                        other.cancel()  # those not started; running ones finish
                continue
            reference, count, examples = future.result()
            path, index, source = sources[position]
            results[(path, index)] = ZipReference.store(reference)
            if count:
                notes[position] = f"{source.shard}: {count} stray key(s), e.g. {examples}"
            if bar is not None:
                bar.update(1)
        if failure is not None:
            position, error = failure
            path, index, _ = sources[position]
            raise MapShardsError(path, index, len(results), len(sources), error) from error
    except BaseException:
        _stop(run, futures)  # Ctrl-C: nothing new starts, running shards stop
        raise
    finally:
        if bar is not None:
            bar.close()
        if own_executor:
            pool.shutdown(wait=True, cancel_futures=True)
        _cancelled_runs.discard(run)
    return results, [notes[position] for position in sorted(notes)]


def _has_hooks(func: object, *names: str) -> bool:
    """Whether ``func`` has every hook in ``names`` (as attribute access finds them)."""
    return all(callable(getattr(func, name, None)) for name in names)


def map_shards(
    store: ShardedStore,
    func: ShardFunc,
    *,
    executor: Executor | None = None,
    progress: bool | None = None,
    output_locked: bool = False,
) -> ShardedStore:
    """See :meth:`ShardedStore.map_shards`.

    ``func`` may have, besides ``array_shard_factory`` (see there): ``include_stray``
    (read stray keys and shards too), ``lock_output()`` (a context manager held for the
    run; skipped if ``output_locked``: the caller holds it) and ``remove_leftovers(store)``
    (called while holding it, before any shard starts).
    """

    # Hooks are looked up by attribute access, not isinstance(func, Protocol): since
    # Python 3.12 that check reads attributes statically, so a wrapper forwarding them by
    # __getattr__ would silently lose its output lock and its cleanup of dead runs.
    include_stray = bool(getattr(func, "include_stray", False))
    locker = (
        cast("LocksOutput", func) if _has_hooks(func, "lock_output", "remove_leftovers") else None
    )
    lock = locker.lock_output() if locker is not None and not output_locked else None
    with lock if lock is not None else contextlib.nullcontext():
        plan = interruptible_sync(shard_sources(store, include_stray=include_stray))
        if locker is not None:
            locker.remove_leftovers(store)
        results, notes = _run_all(func, plan.sources, executor, progress)
    if plan.left_out or notes:
        warnings.warn(StrayKeysWarning(notes + plan.left_out), stacklevel=3)

    new_mounts = {path: results[(path, None)] for path in store.parts.mounts}
    arrays: dict[str, tuple[int, ArrayShardFactory]] = {}
    for path, (dims, _) in store.array_shards.items():
        made = {index: s for (p, index), s in results.items() if p == path and index is not None}
        fallback: ArrayShardFactory | None = None
        if _has_hooks(func, "array_shard_factory"):
            fallback = cast("MakesArrayShards", func).array_shard_factory(path)
        if fallback is not None and all(same_store(fallback(i), s) for i, s in made.items()):
            arrays[path] = (dims, fallback)
        else:
            arrays[path] = (dims, ArrayShardStoresFactory(made, fallback))
    return ShardedStore(results[("", None)], new_mounts, arrays)
