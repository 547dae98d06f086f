"""Look at a layout without loading chunk data: shard sizes, the hierarchy, problems.

Used by the ``info``, ``tree`` and ``validate`` commands; each function returns plain
data (dicts and lists) that the command line prints as text or JSON.
"""

from __future__ import annotations

import asyncio
import json
import warnings
import zlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from shardedstore._errors import LayoutError
from shardedstore._routing import CHUNK, outer_chunk_key
from shardedstore._transforms import _Unit, _units, _units_async

if TYPE_CHECKING:
    from shardedstore._store import ShardedStore

__all__ = [
    "ShardSummary",
    "checksums",
    "factory_text",
    "hierarchy",
    "node_holder",
    "shard_summaries",
    "validate_layout",
]


@dataclass(frozen=True)
class ShardSummary:
    """One shard: where it is and what it holds."""

    kind: str  # "base", "mount" or "array shard"
    path: str
    chunk_index: str | None
    backend: str
    exists: bool
    keys: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kind(unit: _Unit) -> str:
    if unit.chunk_index is not None:
        return "array shard"
    return "mount" if unit.shard_path else "base"


async def _summary(unit: _Unit) -> ShardSummary:
    from shardedstore._store import _gather_bounded, _opened

    store = unit.source
    if not await _opened(store):
        return ShardSummary(_kind(unit), unit.shard_path, unit.chunk_index, str(store), False, 0, 0)
    keys = [key async for key in store.list()]
    sizes = await _gather_bounded(store.getsize(key) for key in keys)
    return ShardSummary(
        _kind(unit), unit.shard_path, unit.chunk_index, str(store), True, len(keys), sum(sizes)
    )


def shard_summaries(store: ShardedStore) -> list[ShardSummary]:
    """Every shard of ``store`` (base, mounts, existing array shards) with its size."""
    from shardedstore._store import _gather_bounded

    units = _units(store)
    return list(sync(_gather_bounded(_summary(unit) for unit in units)))


def node_holder(store: ShardedStore, path: str) -> str:
    """Which store holds the node at ``path``, for people to read."""
    for mount, sub in store.mounts.items():
        if path == mount or path.startswith(mount + "/"):
            return f"mount {mount!r}: {sub}"
    if path in store.array_shards:
        dims, factory = store.array_shards[path]
        indices = sync(store._existing_chunk_indices(path, probe=False))
        return f"base + {len(indices)} array shard(s) on {dims} dim(s): {factory_text(factory)}"
    return f"base: {store.base}"


def factory_text(factory: object) -> str:
    """Where an array-shard factory puts its shards (its path template)."""
    from shardedstore._factories import ArrayShardDirectoryFactory, ArrayShardTemplateFactory

    if isinstance(factory, ArrayShardDirectoryFactory):
        return f"{factory.prefix}/{{chunk}}.zarr"
    if isinstance(factory, ArrayShardTemplateFactory) and factory.template is not None:
        template = factory.template
        return str(template.get("path") or template.get("root") or template.get("url"))
    return type(factory).__name__


def hierarchy(store: ShardedStore) -> list[dict[str, Any]]:
    """Every group and array (path, kind, shape, dtype, holder), from metadata only."""
    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Object at .* is not recognized")
        root = zarr.open_group(store, mode="r")
        members = sorted(root.members(max_depth=None), key=lambda member: member[0])
    nodes: list[dict[str, Any]] = [{"path": "", "kind": "group", "holder": node_holder(store, "")}]
    for path, node in members:
        entry: dict[str, Any] = {"path": path, "kind": "group", "holder": node_holder(store, path)}
        if isinstance(node, zarr.Array):
            entry.update(kind="array", shape=list(node.shape), dtype=str(node.dtype))
        nodes.append(entry)
    return nodes


async def _documents(store: Store, names: list[str]) -> dict[str, Any]:
    prototype = default_buffer_prototype()
    values = await asyncio.gather(*(store.get(name, prototype) for name in names))
    found = {}
    for name, value in zip(names, values, strict=True):
        if value is not None:
            try:
                found[name] = json.loads(value.to_bytes())
            except ValueError:
                found[name] = value.to_bytes()
    return found


async def _check_array(store: ShardedStore, path: str, problems: list[str]) -> None:
    from shardedstore._store import _opened

    dims = store._router.array_dims[path]
    indices = sorted(await store._existing_chunk_indices(path, probe=False))
    try:
        layout = await store._layout(path)
    except LayoutError as error:
        problems.append(f"array {path!r}: metadata in base cannot be sharded: {error}")
        return
    if layout is None:
        if indices:
            problems.append(
                f"array {path!r}: {len(indices)} array shard(s) exist but base has no "
                "metadata for the array"
            )
        return
    expected = {name: json.loads(doc) for name, doc in layout.shard_documents.items()}
    for index in indices:
        where = f"array shard {path!r} chunk {index}"
        parts = [int(p) for p in index.split(".")]
        if any(p >= n for p, n in zip(parts, layout.shape[:dims], strict=False)):
            problems.append(
                f"{where}: outside the array's shape {list(layout.shape[:dims])} along the "
                "sharded dimension(s)"
            )
        shard = store._shard_reader(path, index)
        if not await _opened(shard):
            problems.append(f"{where}: listed but does not exist ({shard})")
            continue
        names = ["zarr.json", ".zarray", ".zattrs", ".zgroup"]
        found = await _documents(shard, names)
        for name, doc in expected.items():
            if found.get(name) != doc:
                state = "missing" if name not in found else "differs from what base implies"
                problems.append(f"{where}: {name} {state}")
        stray = []
        async for inner in shard.list():
            if inner in expected:
                continue
            if outer_chunk_key(index, inner, layout.key_format) is None:
                stray.append(inner)
        if stray:
            problems.append(f"{where}: {len(stray)} stray key(s), e.g. {sorted(stray)[:3]}")


async def _validate(store: ShardedStore) -> list[str]:
    from shardedstore._store import _opened

    problems: list[str] = []
    units = await _units_async(store)
    # Every shard reachable.
    for unit in units:
        try:
            exists = await _opened(unit.source)
        except Exception as error:  # any backend error: report, keep checking the rest
            problems.append(f"{_kind(unit)} {unit.shard_path!r}: unreachable: {error}")
            continue
        if not exists:
            what = f"{_kind(unit)} {unit.shard_path!r}".replace("base ''", "base")
            if unit.chunk_index is not None:
                what += f" chunk {unit.chunk_index}"
            problems.append(f"{what}: does not exist ({unit.source})")
    base = store.base
    if not await _opened(base):
        return problems
    # Keys in base that no reader can reach: under a mount, or chunks of sharded arrays.
    for mount in store.mounts:
        hidden = [key async for key in base.list_prefix(mount + "/")]
        if hidden:
            problems.append(
                f"base: {len(hidden)} stray key(s) under mount {mount!r}, hidden by it, "
                f"e.g. {sorted(hidden)[:3]}"
            )
    for path in store.array_shards:
        hidden = [
            key
            async for key in base.list_prefix(path + "/")
            if store._router.route(key)[0] == CHUNK
        ]
        if hidden:
            problems.append(
                f"base: {len(hidden)} stray chunk key(s) of array-sharded {path!r}, hidden by "
                f"its array shards, e.g. {sorted(hidden)[:3]}"
            )
        await _check_array(store, path, problems)
    return problems


def validate_layout(store: ShardedStore) -> list[str]:
    """Problems with a layout: unreachable shards, inconsistent metadata, stray keys."""
    return list(sync(_validate(store)))


async def _checksums(store: Store) -> dict[str, tuple[int, int]]:
    from shardedstore._store import _gather_bounded, _opened

    prototype = default_buffer_prototype()
    if not await _opened(store):
        return {}
    keys = [key async for key in store.list()]

    async def one(key: str) -> tuple[int, int]:
        value = await store.get(key, prototype)
        data = b"" if value is None else value.to_bytes()
        return len(data), zlib.crc32(data)

    sums = await _gather_bounded(one(key) for key in keys)
    return dict(zip(keys, sums, strict=True))


def checksums(store: Store) -> dict[str, tuple[int, int]]:
    """``key -> (size, crc32)`` for every key of ``store`` (reads every value)."""
    return dict(sync(_checksums(store)))
