"""What a transform reads from one shard: its own keys, never through a symlink.

A shard's own keys are the keys a reader of the layout reaches through that shard:

- base: every key the layout routes to base (not those under a mount point, which the
  mount hides, nor chunk keys of an array-sharded array, which its array shards hide);
- a mount: every valid Zarr key it holds;
- an array shard: the metadata documents the array's metadata in base implies for it,
  and the chunk keys within the array's chunk grid.

Everything else is a stray key: :class:`ShardSource` does not list it (it records it
for the report) and reads it as missing. An array shard outside the array's shape is
stray as a whole. ``include_stray`` lists and reads every key instead.

A shard on local disk (a directory, a zip, a ``file://`` URL) is read without following
symlinks: a shard whose own path is a symlink, or one holding a symlink, is refused
with a :class:`LayoutError` naming the shard. Otherwise a shard directory that is a
link to a home folder would copy ``.ssh/id_rsa`` into an archive.
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from shardedstore.backends.keys import child_names
from shardedstore.backends.registry import facts_of
from shardedstore.errors import LayoutError
from shardedstore.shards.listing import list_shards
from shardedstore.store.ownkeys import OwnKeys

if TYPE_CHECKING:
    from shardedstore.store.sharded import ShardedStore

__all__ = ["ShardSource", "shard_sources"]


# ------------------------------------------------------------- no symlinks


def _refuse_link(shard: str, path: str, inside: str | None) -> LayoutError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    if inside is None:
        where = f"{path} is a symbolic link (to {target!r})"
        fix = (
            f"replace the link with what it points to, or point the layout at "
            f"{os.path.realpath(path)!r} directly"
        )
    else:
        where = f"{inside!r} in {path[: -len(inside) - 1]} is a symbolic link (to {target!r})"
        fix = "replace it with the file it points to, or remove it"
    return LayoutError(
        f"{shard}: {where}; shardedstore never follows a symlink out of a shard, which "
        f"could copy files that are not part of the dataset: {fix}"
    )


def _walk(root: str, shard: str) -> list[str] | None:
    """Keys of the regular files below ``root``; refuses symlinks. None if no ``root``."""
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise _refuse_link(shard, root, None)
    if not stat.S_ISDIR(info.st_mode):
        return None
    keys: list[str] = []
    pending = [("", root)]
    while pending:
        relative, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                key = f"{relative}/{entry.name}" if relative else entry.name
                if entry.is_symlink():
                    raise _refuse_link(shard, entry.path, key)
                if entry.is_dir(follow_symlinks=False):
                    pending.append((key, entry.path))
                elif entry.is_file(follow_symlinks=False):
                    keys.append(key)
                else:
                    raise LayoutError(
                        f"{shard}: {key!r} in {root} is not a regular file (a device, pipe "
                        "or socket); remove it from the shard"
                    )
    return keys


# ------------------------------------------------------------------- the view


class ShardSource(WrapperStore[Store]):
    """A read-only view of one shard for a transform: own keys only, no symlinks.

    Parameters
    ----------
    store
        The shard's store (a read-only handle).
    shard
        The shard as messages name it (see :func:`describe_shard`).
    keys
        Which keys are the shard's own; None lists and reads every key (stray ones too).
    """

    def __init__(self, store: Store, shard: str, keys: OwnKeys | None) -> None:
        super().__init__(store)
        self.shard = shard
        self.keys = keys
        self.local_root = facts_of(store).local_root
        self._stray: set[str] = set()

    # A view is read-only whatever it wraps.
    @property
    def read_only(self) -> bool:
        return True

    @property
    def supports_writes(self) -> bool:
        return False

    @property
    def supports_deletes(self) -> bool:
        return False

    def with_read_only(self, read_only: bool = False) -> ShardSource:
        if not read_only:
            raise ValueError(f"{self.shard}: a transform's view of a shard is read-only")
        return self

    def _refuse_write(self) -> None:
        raise ValueError(f"{self.shard}: a transform's view of a shard is read-only")

    async def set(self, key: str, value: Buffer) -> None:
        self._refuse_write()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        self._refuse_write()

    async def delete(self, key: str) -> None:
        self._refuse_write()

    async def delete_dir(self, prefix: str) -> None:
        self._refuse_write()

    async def clear(self) -> None:
        self._refuse_write()

    def __str__(self) -> str:
        return str(self._store)

    def __repr__(self) -> str:
        return f"ShardSource({self.shard}, {self._store!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ShardSource)
            and self.shard == other.shard
            and self.keys == other.keys
            and self._store == other._store
        )

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ checks

    def stray_keys(self) -> list[str]:
        """Stray keys seen while listing, sorted."""
        return sorted(self._stray)

    def _check_root(self) -> None:
        if self.local_root is not None:
            path = self.local_root[1]
            if os.path.islink(path):
                raise _refuse_link(self.shard, path, None)

    def _check_key(self, key: str) -> bool:
        """Whether ``key`` may be read; refuses a key reached through a symlink."""
        if self.keys is not None and not self.keys.owns(key):
            return False
        if self.local_root is None:
            return True
        kind, root = self.local_root
        self._check_root()
        if kind == "directory":
            # A few lstat calls: cheaper than a thread hop, and they must run right
            # before the read they guard.
            path = root
            for part in key.split("/"):
                path = os.path.join(path, part)
                try:
                    mode = os.lstat(path).st_mode
                except (FileNotFoundError, NotADirectoryError):
                    return True  # missing: the store reads it as missing
                if stat.S_ISLNK(mode):
                    raise _refuse_link(self.shard, path, path[len(root) + 1 :])
        return True

    # ------------------------------------------------------------------ reads

    async def _open(self) -> None:
        self._check_root()
        await self._store._open()

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if not self._check_key(key):
            return None
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return self._check_key(key) and await self._store.exists(key)

    async def getsize(self, key: str) -> int:
        if not self._check_key(key):
            raise FileNotFoundError(key)
        return await self._store.getsize(key)

    async def is_empty(self, prefix: str) -> bool:
        async for _ in self.list_prefix(prefix):
            return False
        return True

    async def _all_keys(self) -> list[str]:
        self._check_root()
        if self.local_root is not None and self.local_root[0] == "directory":
            import asyncio

            found = await asyncio.to_thread(_walk, self.local_root[1], self.shard)
            return found or []
        return [key async for key in self._store.list()]

    async def list(self) -> AsyncIterator[str]:
        for key in await self._all_keys():
            if self.keys is None or self.keys.owns(key):
                yield key
            else:
                self._stray.add(key)

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for name in child_names([key async for key in self.list()], prefix):
            yield name

    async def _get_many(self, requests: Iterable[tuple[str, BufferPrototype, Any]]) -> Any:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


# ---------------------------------------------------------------- the plan


@dataclass
class ShardPlan:
    """The shards a transform reads, and those it leaves out, with why.

    Attributes
    ----------
    sources
        ``(shard_path, chunk_index, view)`` for the base, every mount and every array
        shard to transform.
    left_out
        One line per array whose shards are stray as a whole (outside the array's shape,
        or the array has no metadata in base).
    """

    sources: list[tuple[str, str | None, ShardSource]] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


def _left_out(path: str, indices: list[str], why: str) -> str:
    shown = ", ".join(indices[:5])
    more = f" and {len(indices) - 5} more" if len(indices) > 5 else ""
    chunks = "chunk" if len(indices) == 1 else "chunks"
    return f"array shard {path!r} {chunks} {shown}{more}: {why}"


async def shard_sources(store: ShardedStore, *, include_stray: bool = False) -> ShardPlan:
    """The shards of ``store`` as :class:`ShardSource` views, for a transform.

    The shards are those of :meth:`ShardedStore.shards`; an array shard no reader
    reaches (beyond the array's shape, or of an array without metadata in base) is
    left out, and reported, unless ``include_stray``.

    Parameters
    ----------
    store
        The layout.
    include_stray
        List every key of every shard, and array shards outside the shape too.
    """

    listing = await list_shards(store)
    plan = ShardPlan()
    unreached: dict[str, list[str]] = {}
    for shard in listing.shards:
        if shard.chunk_index is not None and not shard.reachable and not include_stray:
            unreached.setdefault(shard.path, []).append(shard.chunk_index)
            continue
        keys = None if include_stray else shard.own_keys
        plan.sources.append(
            (shard.path, shard.chunk_index, ShardSource(shard.store, shard.name, keys))
        )
    for path, indices in unreached.items():
        array = listing.arrays[path]
        if array.layout is not None:
            shape = list(array.layout.shape[: array.dims])
            why = f"outside the array's shape {shape} along the sharded dimension(s)"
        else:
            why = "the array has no metadata in base, so no reader reaches its shards"
        plan.left_out.append(_left_out(path, indices, why))
    return plan
