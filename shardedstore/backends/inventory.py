"""What a store holds, read in one pass: every key's size, and a few documents.

``info`` and ``validate`` look at every shard of a layout: 10^5 or 10^6 of them. A
shard on local disk is read directly, without zarr's store methods: a directory with
one ``scandir`` per level (the kernel gives names and types; sizes cost a ``stat``
each, only when asked for), a zip from its central directory alone (a plain zip's in
one read, :mod:`shardedstore.backends.zipindex`); and many shards in one thread
call, since a thread hop costs more than reading a small shard. Other stores (object
stores, memory) are asked through zarr's API: one listing, then sizes and documents,
concurrently.
"""

from __future__ import annotations

import asyncio
import os
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from shardedstore.backends.handles import gather_bounded, opened
from shardedstore.backends.registry import facts_of
from shardedstore.backends.timeouts import within
from shardedstore.backends.zipindex import read_plain_zip

__all__ = ["Inventory", "LocalRoot", "inventories"]

_BATCH = 256
"""Shards on local disk read in one thread call, one such call at a time.

A small shard costs a few system calls, each releasing the GIL for a microsecond or
two: threads reading shards side by side hand the GIL back and forth on every call
(10^5 directory shards, 2 cores: one thread 3.9 s, two 5.2 s, four or six 9.4 s and
13-16 s of CPU). One thread, off the event loop, reads them fastest."""


@dataclass
class Inventory:
    """What one store holds.

    Attributes
    ----------
    exists
        Whether the store is there (a directory or zip that exists; an object store
        prefix that holds a key).
    sizes
        Key -> size in bytes, for every key (0 each when sizes were not asked for).
    documents
        Name -> bytes of the documents asked for that are there.
    error
        Why the store could not be read (then it is not known to exist).
    """

    exists: bool
    sizes: dict[str, int] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    error: BaseException | None = None


def _directory(root: str, wanted: Sequence[str], sizes: bool) -> Inventory:
    found = Inventory(True)
    pending = [("", root)]
    while pending:
        relative, directory = pending.pop()
        try:
            entries = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            if not relative:  # the shard itself is not there (or is not a directory)
                return Inventory(False)
            raise
        with entries:
            for entry in entries:
                key = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((key, entry.path))
                else:  # the kernel's listing has no sizes: a stat each, only when asked
                    found.sizes[key] = entry.stat(follow_symlinks=False).st_size if sizes else 0
    for name in wanted:
        if name in found.sizes:
            found.documents[name] = _read_whole(os.path.join(root, name))
    return found


_READ = 1 << 16


def _read_whole(path: str) -> bytes:
    """A small file's bytes in three system calls (``open()`` makes eight: a buffered
    file object seeks and stats); a regular file reads short only at its end."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = os.read(fd, _READ)
        if len(data) < _READ:
            return data
        parts = [data]
        while part := os.read(fd, _READ):
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def _zip(path: str, wanted: Sequence[str]) -> Inventory:  # sizes: in the member table
    try:
        plain = read_plain_zip(path, wanted)  # one read, no zipfile objects
        if plain is not None:
            return Inventory(True, *plain)
        archive = zipfile.ZipFile(path)  # any other zip; says what is wrong with it
    except FileNotFoundError:
        return Inventory(False)
    with archive:
        found = Inventory(True)
        for info in archive.infolist():
            if not info.is_dir():
                found.sizes[info.filename] = info.file_size
        for name in wanted:
            if name in found.sizes:
                found.documents[name] = archive.read(name)
    return found


def _local(root: tuple[str, str], wanted: Sequence[str], sizes: bool) -> Inventory:
    kind, path = root
    try:
        return _directory(path, wanted, sizes) if kind == "directory" else _zip(path, wanted)
    except Exception as error:  # a shard that cannot be read is reported, not raised
        return Inventory(False, error=error)


def _local_batch(
    roots: list[tuple[str, str]], wanted: Sequence[str], sizes: bool
) -> list[Inventory]:
    return [_local(root, wanted, sizes) for root in roots]


async def _remote(
    store: Store, wanted: Sequence[str], sizes: bool, timeout: float | None
) -> Inventory:
    try:
        return await within(_listed(store, wanted, sizes), "probing", facts_of(store).url, timeout)
    except Exception as error:  # a shard that cannot be read is reported, not raised
        return Inventory(False, error=error)


async def _listed(store: Store, wanted: Sequence[str], sizes: bool) -> Inventory:
    if not await opened(store):
        return Inventory(False)
    keys = [key async for key in store.list()]
    if not keys:
        return Inventory(False)
    if sizes:
        found = Inventory(
            True,
            dict(zip(keys, await gather_bounded(store.getsize(key) for key in keys), strict=True)),
        )
    else:
        found = Inventory(True, dict.fromkeys(keys, 0))
    prototype = default_buffer_prototype()
    for name in wanted:
        if name in found.sizes and (value := await store.get(name, prototype)) is not None:
            found.documents[name] = value.to_bytes()
    return found


LocalRoot = tuple[str, str]
"""``("directory", path)`` or ``("file", path)``: a store on local disk, by its place."""


async def inventories(
    stores: Iterable[Store | LocalRoot],
    documents: Sequence[str] = (),
    timeout: float | None = None,
    *,
    sizes: bool = True,
) -> list[Inventory]:
    """What each store holds (in order), with the ``documents`` asked for.

    ``sizes=False``: only the keys are wanted (each size reads as 0), which spares a
    ``stat`` per file of a directory and a request per key of an object store.

    A store on local disk may be given by its place alone (a :data:`LocalRoot`): it is
    read without making a store. Stores on local disk are read in batches, one thread
    at a time; others concurrently (at most 64 at a time), each within ``timeout`` seconds (as
    :func:`~shardedstore.backends.timeouts.resolve_timeout` says for None). Never
    raises for a store that cannot be read: its ``error`` says why.
    """
    stores = list(stores)
    found: list[Inventory | None] = [None] * len(stores)
    local: list[tuple[int, LocalRoot]] = []
    remote: list[int] = []
    for position, store in enumerate(stores):
        root = store if isinstance(store, tuple) else facts_of(store).local_root
        if root is None:
            remote.append(position)
        else:
            local.append((position, root))
    batches = [local[start : start + _BATCH] for start in range(0, len(local), _BATCH)]
    one_thread = asyncio.Semaphore(1)

    async def batch(items: list[tuple[int, tuple[str, str]]]) -> None:
        async with one_thread:  # see _BATCH
            results = await asyncio.to_thread(
                _local_batch, [root for _, root in items], documents, sizes
            )
        for (position, _), result in zip(items, results, strict=True):
            found[position] = result

    async def one(position: int) -> None:
        store = stores[position]
        assert not isinstance(store, tuple)
        found[position] = await _remote(store, documents, sizes, timeout)

    await gather_bounded([*(batch(items) for items in batches), *(one(p) for p in remote)])
    return [result if result is not None else Inventory(False) for result in found]
