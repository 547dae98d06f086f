"""What opening a config checks against the data it names: cheaply, before any read.

A config whose array-shard ``dims`` differ from those the data was written with would
route every chunk to an array shard that does not exist, and read the fill value
everywhere. So opening a layout (:func:`shardedstore.open`,
``ShardedStore.from_config``) compares, for each array-sharded array:

- ``dims`` with the array's metadata in base: the array must have at least ``dims``
  dimensions, with chunk size 1 along each of them (every shard was written so);
- ``dims`` with the names of a few existing array shards (``3`` for dims 1, ``3.0`` for
  dims 2), read from the shards' directory only that far, so opening 10^6 shards costs
  the same as opening ten. Shards on object stores are not listed here (``validate``
  lists them).

An array with no metadata in base and no shards yet (a layout nothing was written to)
passes: nothing contradicts the config. ``validate`` reports the same findings as
problems (check ``dims``) instead of raising.
"""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from shardedstore.backends.handles import gather_bounded, opened, read_only_handle
from shardedstore.backends.probe import reach
from shardedstore.backends.registry import facts_of
from shardedstore.errors import ConfigError
from shardedstore.store.factories import factory_text, sample_chunk_indices
from shardedstore.store.sharded import ShardedStore

__all__ = ["DimsMismatch", "check_base_exists", "check_dims", "dims_mismatches"]

SAMPLE = 8
"""Existing array shards whose names are compared with ``dims`` on open."""

_DOCUMENTS = ("zarr.json", ".zarray")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class DimsMismatch:
    """An array whose configured ``dims`` contradict its data.

    Attributes
    ----------
    at
        The JSON path of the ``dims`` field (``("array_shards", "t", "dims")``).
    path
        The array's node path.
    detail
        What the config says, what the data says, and what to change.
    """

    at: Path_
    path: str
    detail: str

    @property
    def problem(self) -> str:
        """The detail, naming the array: ``array 't': the config shards it ...``."""
        return f"array {self.path!r}: {self.detail}"


def _grid(documents: Mapping[str, Any]) -> tuple[list[int], list[int]] | None:
    """The array's shape and chunk shape from its metadata (None: none, or unusable)."""
    doc = documents.get("zarr.json")
    try:
        if isinstance(doc, dict) and doc.get("node_type") == "array":
            shape, chunks = doc["shape"], doc["chunk_grid"]["configuration"]["chunk_shape"]
        elif isinstance(documents.get(".zarray"), dict):
            shape, chunks = documents[".zarray"]["shape"], documents[".zarray"]["chunks"]
        else:
            return None
        return [int(n) for n in shape], [int(c) for c in chunks]
    except (KeyError, TypeError, ValueError):
        return None  # malformed: reading it fails with its own error (validate names it)


def _metadata_problem(dims: int, documents: Mapping[str, Any]) -> str | None:
    grid = _grid(documents)
    if grid is None:
        return None
    shape, chunks = grid
    said = f"the config shards it on its first {dims} dimension(s) (dims {dims})"
    # Shards split the leading dims with chunk size 1: at most that many were sharded.
    most = next((d for d, size in enumerate(chunks) if size != 1), len(chunks))
    fix = (
        f"set dims to the number of leading dimensions it was written sharded on (at most {most})"
        if most
        else "it cannot be array-sharded: remove it from array_shards"
    )
    if dims > len(shape):
        return f"{said}, but the array has {len(shape)} dimension(s) in its metadata; {fix}"
    if most < dims:
        return (
            f"{said}, but its chunk size along dimension {most} is {chunks[most]}, not 1, so "
            f"it was not sharded there; {fix}"
        )
    return None


def _names_problem(dims: int, indices: list[str], where: str) -> str | None:
    parts = collections.Counter(index.count(".") + 1 for index in indices)
    if not parts or dims in parts:
        return None
    found = parts.most_common(1)[0][0]
    example = min(
        (index for index in indices if index.count(".") + 1 == found),
        key=lambda index: [int(part) for part in index.split(".")],
    )
    return (
        f"the config shards it on its first {dims} dimension(s) (dims "
        f"{dims}), but its array shards are named for dims {found} (e.g. {example!r} in "
        f"{where}), so it reads as the fill value everywhere; set dims to {found}, as the "
        "shards were written"
    )


async def _documents(base: Store, path: str) -> dict[str, Any]:
    """The array's metadata documents in base (none when base does not exist)."""
    if not await opened(base):
        return {}
    prototype = default_buffer_prototype()
    values = await asyncio.gather(*(base.get(f"{path}/{name}", prototype) for name in _DOCUMENTS))
    found: dict[str, Any] = {}
    for name, value in zip(_DOCUMENTS, values, strict=True):
        if value is not None:
            try:
                found[name] = json.loads(value.to_bytes())
            except ValueError:
                continue  # not JSON: reading it fails with its own error
    return found


async def _array_mismatch(
    base: Store, path: str, dims: int, factory: object, at: Path_, list_remote: bool
) -> DimsMismatch | None:
    try:
        problem = _metadata_problem(dims, await _documents(base, path))
        if problem is None:
            indices = await asyncio.to_thread(
                sample_chunk_indices, factory, SAMPLE, list_remote=list_remote
            )
            problem = _names_problem(dims, indices or [], factory_text(factory))
    except Exception:  # unreadable: reads (or validate) report that with their own error
        return None
    if problem is None:
        return None
    return DimsMismatch((*at, "array_shards", path, "dims"), path, problem)


async def dims_mismatches(
    store: ShardedStore, *, at: Path_ = (), list_remote: bool = False
) -> list[DimsMismatch]:
    """The arrays of ``store`` (and of sharded stores in it) whose dims contradict their data.

    Parameters
    ----------
    store
        The layout.
    at
        The JSON path of ``store`` in its config (``()`` for the top).
    list_remote
        Also list array shards on object stores (a whole listing each).
    """
    found: list[DimsMismatch] = []
    if store.array_shards:
        base = read_only_handle(store.parts.base)  # a handle of its own
        try:
            results = await gather_bounded(
                _array_mismatch(base, path, dims, factory, at, list_remote)
                for path, (dims, factory) in sorted(store.array_shards.items())
            )
        finally:
            base.close()
        found += [mismatch for mismatch in results if mismatch is not None]
    for path, mount in sorted(store.mounts.items()):
        if isinstance(mount, ShardedStore):
            found += await dims_mismatches(mount, at=(*at, "mounts", path), list_remote=list_remote)
    return found


def check_dims(store: ShardedStore) -> None:
    """Raise for the first array whose configured dims contradict its data.

    Raises
    ------
    ConfigError
        At the ``dims`` field of that array (``array_shards.t.dims: array 't': ...``).
    """
    mismatches = sync(dims_mismatches(store))
    if mismatches:
        first = mismatches[0]
        raise ConfigError(first.at, first.problem)


def check_base_exists(store: ShardedStore, config: str | None = None) -> None:
    """Raise when the base store of a layout to be read does not exist.

    Zarr would say "No group found in store ..." instead, naming a store path.

    Parameters
    ----------
    store
        The layout.
    config
        Its config file, to name it (None: "the layout").

    Raises
    ------
    FileNotFoundError
        Naming the config and the base's location.
    """
    base = read_only_handle(store.parts.base)
    try:
        found = sync(reach(base))
    finally:
        base.close()
    if found.state == "missing":
        of = f"the base store of {config}" if config else "the layout's base store"
        raise FileNotFoundError(
            f"{of} does not exist ({facts_of(store.base).url}), so there is nothing to read: "
            "nothing was written to this layout yet, or its base was moved or deleted; fix "
            "'base' in the config, or write to it first (shardedstore.open(config, mode='a'))"
        )
