"""Copy a plain Zarr hierarchy into a layout's stores: ``shardedstore import``.

Writers that only write to a path (ngff-zarr's ``to_ngff_zarr``, tools that take an
output directory) write a plain Zarr; :func:`import_zarr` then copies it into an
existing layout, each key to the store the layout routes it to (a mount, an array
shard, the base), through a :class:`ShardedStore` opened for writing, so that every
guarantee of a writer holds:

- **a Zarr, and a layout that fits it**: the source must hold Zarr metadata at its root
  (:class:`SourceError` otherwise, :class:`SourceNotFoundError` for a missing one), and
  each mount and array shard of the layout must name one of its nodes or hold data
  already (``partial=True`` lifts this), or the import stops before any write;
- **metadata first**: every metadata document of the source is compared with what the
  layout holds, and the arrays the layout shards are checked against it (chunk size 1
  along the sharded dimensions...), before anything is written; then the documents are
  written (compare-and-swap against other writers), then the chunks, each array shard
  created with its own metadata;
- **nothing is overwritten**: a key the layout holds already is skipped when its
  content is the same (size and crc32), and refused (``FileExistsError``, naming the
  key) when it differs; a chunk is written only if absent at that moment
  (``set_if_not_exists``), so a concurrent writer's chunk is never replaced;
- **atomic**: each key appears whole (directories write under a temporary name,
  object stores put objects whole), zip shards are copy-on-write and committed by the
  store's ``close()`` at the end, all of them or none; one writer per zip (an OS lock)
  and the metadata lock of directory bases apply as to any writer; the layout's config
  is opened ``mode="r+"``, so nothing is written outside its folder unless asked;
- **resumable**: after a failure or a Ctrl-C (which stops the copy at once), running
  the same import again skips what is in place and copies the rest (zip shards of a
  run that failed were left as they were, and are written again);
- **parallel**: ``jobs`` keys are read and written at once (async I/O on zarr's event
  loop, memory bounded by ``jobs`` values); progress is shown as ``convert`` shows it;
- **verified by content**: after the commit, the layout is opened again read-only and
  every key is read back and compared with the source (size and crc32).

The source is read without following symlinks (as ``convert`` reads shards): a local
directory holding a link is refused. A source that lies in a store of the layout (the
same directory as its base, say) is refused too.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype

from shardedstore.backends.crc import crc32
from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.handles import opened
from shardedstore.backends.sync import interruptible_sync
from shardedstore.backends.zips import enable_deflate64
from shardedstore.config.layout import open_config
from shardedstore.errors import (
    ArgumentError,
    LayoutError,
    SourceError,
    SourceNotFoundError,
    VerificationError,
)
from shardedstore.shards.source import ShardSource
from shardedstore.store.locations import (
    Member,
    find_overlap,
    layout_members,
    member_name,
    store_location,
)
from shardedstore.store.metadata import JSON, parse_metadata_document, sharded_array_layout
from shardedstore.store.routing import validate_key
from shardedstore.store.sharded import ShardedStore

__all__ = ["ImportSummary", "import_zarr", "open_source"]

_ARRAY_DOCUMENTS = ("zarr.json", ".zarray", ".zattrs")

Digest = tuple[int, int]
"""``(size, crc32)`` of a value."""


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_zarr` did.

    Attributes
    ----------
    keys
        Keys of the source: ``documents`` metadata documents plus ``chunks``.
    documents, chunks
        How many of them are metadata documents (``zarr.json``, ``.zarray``, ...), and
        chunks.
    copied
        Keys written to the layout by this run.
    skipped
        Keys the layout held already with the same content (an earlier, interrupted
        run, or the same import done twice).
    bytes
        Bytes of every key of the source.
    verified
        Whether every key was read back from the layout, once committed, and found
        identical (size and crc32).
    seconds
        How long the copy took (verification included).
    """

    keys: int
    documents: int
    chunks: int
    copied: int
    skipped: int
    bytes: int
    verified: bool
    seconds: float


def _digest(data: bytes) -> Digest:
    return len(data), crc32(data)


def open_source(
    source: str | os.PathLike[str] | Store,
    storage_options: Mapping[str, Any] | None = None,
    *,
    what: str = "the Zarr to import",
) -> Store:
    """A plain Zarr to read (import, chunks, sql), read-only: a directory, a zip, a URL or a store.

    Parameters
    ----------
    source
        A local directory, a local ``.zip`` (any file), an fsspec URL, a layout config
        (``.json``, opened read-only), or a zarr store.
    storage_options
        fsspec options for a URL.
    what
        How messages name the source (``"the Zarr to import"``, ``"SOURCE"``).

    Raises
    ------
    SourceNotFoundError
        If a local source does not exist (a ``FileNotFoundError`` too).
    SourceError
        If a local file is not a zip file.
    """
    if isinstance(source, Store):
        return source if source.read_only else source.with_read_only(True)
    location = os.fspath(source)
    if "::" in location:  # a chained fsspec URL (zip::, shardedstore::, simplecache::...)
        return _fsspec_source(location, storage_options)
    if location.endswith(".json"):
        return open_config(location, "r", storage_options=storage_options)
    if "://" in location:
        return _fsspec_source(location, storage_options)
    if not os.path.exists(location):
        raise SourceNotFoundError(
            f"{location} does not exist; give {what} as a directory, a zip file, a URL or a "
            "layout config (.json)"
        )
    if os.path.isfile(location):
        if not zipfile.is_zipfile(location):
            raise SourceError(
                f"{location} is a file but not a zip file; give {what} as a directory, a zip "
                "file, a URL or a layout config (.json)"
            )
        from zarr.storage import ZipStore

        enable_deflate64()  # zips from Windows tools
        return ZipStore(location, mode="r", read_only=True)
    from zarr.storage import LocalStore

    return LocalStore(location, read_only=True)


def _fsspec_source(url: str, storage_options: Mapping[str, Any] | None) -> Store:
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(
        url, read_only=True, storage_options=dict(storage_options or {}) or None
    )


def _check_apart(source: Store, layout: ShardedStore, name: str) -> None:
    """Refuse a source that shares a location with a store of the layout."""
    parts = layout.parts
    members = layout_members(parts.base, parts.mounts, parts.array_shards)
    source_member = Member(("source",), store_location(source))
    overlap = find_overlap([*members, source_member])
    if overlap is None or source_member not in (overlap.first, overlap.second):
        return
    other = cast("Member", overlap.second if overlap.first is source_member else overlap.first)
    raise LayoutError(
        f"the source {name} ({source_member.location}) and the {member_name(other)} of the "
        f"layout ({other.location}) are the same location or one lies in the other, so the "
        "import would read what it writes; copy the source elsewhere first, or import it "
        "into a layout whose stores lie apart from it"
    )


def _check_sharded_arrays(layout: ShardedStore, documents: Mapping[str, bytes]) -> None:
    """Refuse, before any write, an array the layout shards but the source cannot fill.

    Raises
    ------
    LayoutError
        Naming the array and why (its chunk size along a sharded dimension is not 1,
        it has fewer dimensions than the layout shards, it is a group...).
    """
    for path, (dims, _) in sorted(layout.array_shards.items()):
        docs: dict[str, JSON] = {}
        for name in (*_ARRAY_DOCUMENTS, ".zgroup"):
            value = documents.get(f"{path}/{name}")
            if value is not None:
                docs[name] = parse_metadata_document(path, name, value)
        try:
            sharded_array_layout(path, docs, dims)
        except LayoutError as error:
            raise LayoutError(
                f"the source cannot be imported into this layout: {error} (the layout's "
                f"array_shards.{path}.dims is {dims}); nothing was written"
            ) from None


def _nodes(keys: Iterable[str]) -> set[str]:
    """The node paths of a hierarchy's keys (``""`` for the root)."""
    nodes = set()
    for key in keys:
        parent, _, name = key.rpartition("/")
        if name in _ROOT_DOCUMENTS:
            nodes.add(parent)
    return nodes


async def _uncovered(keys: Iterable[str], layout: ShardedStore) -> list[str]:
    """The layout's mounts and array shards that name no node of the source and that
    the layout does not hold either, as config fields (``mounts.people``)."""
    nodes = _nodes(keys)
    wanted = [("mounts", path) for path in sorted(layout.mounts)]
    wanted += [("array_shards", path) for path in sorted(layout.array_shards)]
    missing = [(field, path) for field, path in wanted if path not in nodes]
    held = await asyncio.gather(*(layout.is_empty(path) for _, path in missing))
    return [f"{field}.{path}" for (field, path), empty in zip(missing, held, strict=True) if empty]


def _check_covered(
    keys: list[str],
    reopen: Callable[[], ShardedStore],
    source: str,
    layout: str,
) -> None:
    """Refuse a source that leaves mounts or array shards of the layout empty.

    Raises
    ------
    LayoutError
        Naming the config fields, the source's nodes, and what to do (fix the
        layout, or ``partial=True``); nothing was written.
    """
    check = reopen()  # read-only: looking opens no store for writing
    try:
        uncovered = interruptible_sync(_uncovered(keys, check))
    finally:
        check.close()
    if not uncovered:
        return
    nodes = sorted(_nodes(keys))
    shown = ", ".join(repr(node) for node in nodes[:8]) + (", ..." if len(nodes) > 8 else "")
    raise LayoutError(
        f"{layout} does not fit the source {source}: its "
        f"{', '.join(uncovered)} name(s) no node of the source (whose nodes are {shown}), "
        "so what the layout means to place there would land elsewhere; fix those paths "
        "in the layout (for an OME-Zarr image, shardedstore.ome_zarr_layout(SRC) "
        "proposes one from the image), or import anyway with partial=True (--partial) if "
        "another source fills them later; nothing was written"
    )


def _differs(layout: str, key: str, source: str, detail: str) -> FileExistsError:
    return FileExistsError(
        f"{layout}: {key!r} exists in the layout with other content than in {source} "
        f"({detail}); import never overwrites what a layout holds: remove that data from "
        "the layout, or import into a new layout, to import again"
    )


def _detail(expected: Digest, found: Digest) -> str:
    if expected[0] != found[0]:
        return f"{found[0]} bytes instead of {expected[0]}"
    return "same size, other bytes: crc32 differs"


class _Progress:
    """A progress bar over keys, as ``map_shards`` shows one (tqdm; on a terminal, for
    runs over a second, unless asked)."""

    def __init__(self, progress: bool | None, total: int) -> None:
        show = sys.stderr.isatty() if progress is None else progress
        self.bar: Any = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total, unit="key", desc="import", delay=1.0 if progress is None else 0
            )

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


T = TypeVar("T")


async def _pool(items: Iterable[T], func: Callable[[T], Awaitable[None]], jobs: int) -> None:
    """``func(item)`` for every item, ``jobs`` at a time, stopping all at the first error.

    ``jobs`` workers take the next item as each finishes: memory and tasks stay bounded
    whatever the number of items, and a cancelled run leaves no call unawaited.
    """
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:
            await func(item)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(jobs):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


_ROOT_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray")


async def _list(source: Store, name: str) -> list[str]:
    """Every key of the source, once it is known to be a Zarr hierarchy.

    Directory entries of zips and folder markers of object stores (``people/``) are not
    keys, and are left out.

    Raises
    ------
    SourceNotFoundError
        If the source does not exist.
    SourceError
        If it holds no Zarr metadata at its root (empty, another kind of data, or a
        Zarr one folder down, as a zip made from the folder rather than its contents).
    """
    if not await opened(source):
        raise SourceNotFoundError(f"{name} does not exist: nothing to import")
    keys = sorted({key async for key in source.list() if not key.endswith("/")})
    if not any(document in keys for document in _ROOT_DOCUMENTS):
        raise SourceError(f"{name} is not a Zarr hierarchy: {_not_zarr(keys, name)}")
    for key in keys:
        validate_key(key)  # never write outside a store, whatever a source lists
    return keys


def _not_zarr(keys: list[str], name: str) -> str:
    """What a source without root metadata holds, and what to give instead."""
    if not keys:
        return "it is empty; give the Zarr's own folder, zip file or URL"
    what = "no zarr.json (Zarr 3) nor .zgroup or .zarray (Zarr 2) at its root"
    tops = sorted({key.split("/", 1)[0] for key in keys if "/" in key})
    nested = [top for top in tops if any(f"{top}/{doc}" in keys for doc in _ROOT_DOCUMENTS)]
    if len(nested) != 1:
        return f"{what} (it holds {len(keys)} other key(s), e.g. {keys[0]!r})"
    folder = nested[0]
    if name.endswith(".zip"):
        return (
            f"{what}, but a Zarr in its folder {folder!r} (a zip made from the folder rather "
            f"than its contents): give zip://{folder}::{name}, or zip the folder's contents"
        )
    return f"{what}, but a Zarr in its folder {folder!r}: give {name.rstrip('/')}/{folder}"


async def _get(store: Store, key: str) -> bytes | None:
    value: Buffer | None = await store.get(key, default_buffer_prototype())
    return None if value is None else value.to_bytes()


@dataclass
class _Copy:
    """One run of :func:`import_zarr`: the source, the layout and what was done."""

    source: Store
    layout: ShardedStore
    source_name: str
    layout_name: str
    jobs: int
    progress: _Progress
    digests: dict[str, Digest]
    copied: int = 0
    skipped: int = 0

    async def _read_source(self, key: str) -> bytes:
        data = await _get(self.source, key)
        if data is None:
            raise FileNotFoundError(
                f"{key!r} vanished from {self.source_name} while importing; import again once "
                "the source is complete"
            )
        self.digests[key] = _digest(data)
        return data

    async def _compare(self, key: str, data: bytes, held: bytes) -> None:
        expected, found = _digest(data), _digest(held)
        if expected != found:
            raise _differs(self.layout_name, key, self.source_name, _detail(expected, found))
        self.skipped += 1
        self.progress.update()

    async def documents(self, keys: list[str]) -> None:
        """Compare every document first, check the sharded arrays, then write."""
        documents: dict[str, bytes] = {}
        held: dict[str, bytes | None] = {}

        async def read(key: str) -> None:
            documents[key] = await self._read_source(key)

        async def look(key: str) -> None:
            # Through the writer: its writes are compared against what it saw.
            held[key] = await _get(self.layout, key)

        await _pool(keys, read, self.jobs)
        # Before the layout is touched (opening its stores for writing makes their
        # directories): a source the layout cannot hold leaves it as it was.
        _check_sharded_arrays(self.layout, documents)
        await _pool(keys, look, self.jobs)
        absent = []
        for key in keys:
            there = held[key]
            if there is None:
                absent.append(key)
            else:
                await self._compare(key, documents[key], there)
        prototype = default_buffer_prototype()
        # Parents before children, so that a reader never meets a node below no group.
        for key in sorted(absent, key=lambda k: (k.count("/"), k)):
            await self.layout.set(key, prototype.buffer.from_bytes(documents[key]))
            self.copied += 1
            self.progress.update()

    async def chunk(self, item: tuple[str, bool]) -> None:
        key, held = item
        data = await self._read_source(key)
        if held:
            there = await _get(self.layout, key)
            if there is not None:
                await self._compare(key, data, there)
                return
        # Only if absent now: a chunk another writer wrote meanwhile is never replaced
        # (verification then names it, if it differs).
        await self.layout.set_if_not_exists(key, default_buffer_prototype().buffer.from_bytes(data))
        self.copied += 1
        self.progress.update()


async def _run(copy: _Copy, keys: list[str]) -> None:
    documents = [key for key in keys if is_metadata_document(key)]
    chunks = [key for key in keys if not is_metadata_document(key)]
    await copy.documents(documents)
    held = {key async for key in copy.layout.list()}
    await _pool(((key, key in held) for key in chunks), copy.chunk, copy.jobs)


async def _verify(
    layout: ShardedStore, digests: Mapping[str, Digest], jobs: int
) -> list[tuple[str, str]]:
    """Keys whose content in ``layout`` is not what was imported, with how."""
    differing: dict[str, str] = {}

    async def one(key: str) -> None:
        data = await _get(layout, key)
        if data is None:
            differing[key] = "missing"
        elif (found := _digest(data)) != digests[key]:
            differing[key] = _detail(digests[key], found)

    await _pool(sorted(digests), one, jobs)
    return sorted(differing.items())


def _layout_store(
    layout: str | os.PathLike[str] | ShardedStore,
    storage_options: Mapping[str, Any] | None,
    allow_outside: bool,
) -> tuple[ShardedStore, str, Callable[[], ShardedStore]]:
    """The layout opened for writing, its name, and how to open it again to verify."""
    if isinstance(layout, ShardedStore):
        if layout.read_only:
            raise ArgumentError(
                "the layout to import into is read-only; open it with "
                "shardedstore.open(config, mode='r+')"
            )
        return layout, "the layout", lambda: layout.with_read_only(True)
    config = os.fspath(layout)
    store = open_config(config, "r+", storage_options=storage_options, allow_outside=allow_outside)
    return store, config, lambda: open_config(config, "r", storage_options=storage_options)


def import_zarr(
    source: str | os.PathLike[str] | Store,
    layout: str | os.PathLike[str] | ShardedStore,
    *,
    jobs: int = 16,
    progress: bool | None = None,
    verify: bool = True,
    source_options: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    allow_outside: bool = False,
    partial: bool = False,
) -> ImportSummary:
    """Copy a plain Zarr hierarchy into the stores of an existing layout.

    Every key of ``source`` lands where the layout routes it (a mount, an array shard,
    the base), as if written through the layout by zarr: metadata first, nothing
    overwritten, zips committed at the end, resumable, verified by content (see the
    module docstring of :mod:`shardedstore.shards.importing`, and ``docs/cli.md``).

    Parameters
    ----------
    source
        The Zarr to copy: a local directory, a zip file, an fsspec URL, a layout config
        (``.json``) or a zarr store. It is only read.
    layout
        The layout to copy into: its config (a path or URL, opened ``mode="r+"``), or
        a :class:`ShardedStore` opened for writing (then the caller closes it, which
        commits its zips, and verification reads through the store).
    jobs
        Keys read and written at once.
    progress
        Show a progress bar (tqdm). Default: on a terminal, for runs over a second.
    verify
        Read every key back from the layout and compare it with the source (size and
        crc32), after the commit.
    source_options
        fsspec options for a ``source`` URL.
    storage_options
        fsspec options for reading a ``layout`` config at a URL.
    allow_outside
        Let a layout config name stores outside its own folder (as for
        :func:`shardedstore.open`).
    partial
        Import a source that fills only some of the layout's mounts and array shards
        (others to come from another source). By default each of them must name a node
        of the source, or hold data already: a layout whose paths miss the source
        would put everything in its base.

    Returns
    -------
    ImportSummary
        How many keys were copied, skipped (already there) and verified.

    Raises
    ------
    SourceNotFoundError
        The source does not exist (a ``FileNotFoundError`` too).
    SourceError
        The source is not a Zarr hierarchy (no metadata at its root, a file that is
        not a zip); the message says what to give instead.
    FileExistsError
        A key the layout holds with other content than the source; nothing is
        overwritten (the message names the key).
    LayoutError
        A mount or array shard of the layout that names no node of the source (unless
        ``partial``), an array the layout shards that the source cannot fill (both
        checked before any write), a source holding a symlink, or a source in a store
        of the layout.
    VerificationError
        A key that does not read back as it was copied.
    ConcurrentWriteError, ConflictError, CommitError
        As any writer of the layout meets them (another writer of a zip, of the
        metadata).

    Examples
    --------
    >>> summary = import_zarr("image.ome.zarr", "img/layout.json")  # doctest: +SKIP
    >>> summary.copied, summary.skipped, summary.verified  # doctest: +SKIP
    (412, 0, True)
    """
    if jobs < 1:
        raise ArgumentError(f"jobs must be at least 1, got {jobs}")
    start = time.perf_counter()
    source_name = os.fspath(source) if not isinstance(source, Store) else str(source)
    opened_source = open_source(source, source_options)
    view = ShardSource(opened_source, f"source {source_name}", None)  # no symlinks
    store, layout_name, reopen = _layout_store(layout, storage_options, allow_outside)
    _check_apart(opened_source, store, source_name)
    keys = interruptible_sync(_list(view, source_name))
    if not partial:
        _check_covered(keys, reopen, source_name, layout_name)
    digests: dict[str, Digest] = {}
    bar = _Progress(progress, len(keys))
    copy = _Copy(view, store, source_name, layout_name, jobs, bar, digests)
    try:
        if isinstance(layout, ShardedStore):
            interruptible_sync(_run(copy, keys))
        else:
            # A with block: committed if the copy finished, else nothing of it in zips.
            with store:
                interruptible_sync(_run(copy, keys))
    finally:
        bar.close()
    verified = False
    if verify:
        check = reopen()
        try:
            differing = interruptible_sync(_verify(check, digests, jobs))
        finally:
            if check is not store:
                check.close()
        if differing:
            shown = ", ".join(f"{key!r} ({how})" for key, how in differing[:3])
            raise VerificationError(
                f"import into {layout_name}: {len(differing)} key(s) do not read back as "
                f"copied from {source_name}, e.g. {shown}; another writer changed them "
                "meanwhile, or the storage lost them: check the layout (shardedstore "
                "validate) and import again"
            )
        verified = True
    documents = sum(is_metadata_document(key) for key in keys)
    return ImportSummary(
        keys=len(keys),
        documents=documents,
        chunks=len(keys) - documents,
        copied=copy.copied,
        skipped=copy.skipped,
        bytes=sum(size for size, _ in digests.values()),
        verified=verified,
        seconds=time.perf_counter() - start,
    )
