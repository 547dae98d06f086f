"""Look at a layout without loading chunk data: shard sizes and the hierarchy.

Used by the ``info`` and ``tree`` commands (``validate``: :mod:`shardedstore.report.validate`);
each function returns plain data that the command line prints as text or JSON. A shard
that is missing, unreachable or corrupt is marked, never a reason to stop: every other
shard is still looked at.
"""

from __future__ import annotations

import itertools
import math
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.handles import gather_bounded, opened, read_only_view
from shardedstore.backends.inventory import Inventory, LocalRoot, inventories
from shardedstore.backends.probe import error_text, reach
from shardedstore.backends.registry import facts_of
from shardedstore.backends.timeouts import resolve_timeout
from shardedstore.errors import LayoutError, describe_shard
from shardedstore.shards.listing import iter_shards
from shardedstore.store.factories import factory_text
from shardedstore.store.ownkeys import KeyVerdicts, OwnKeys
from shardedstore.store.routing import ARRAY_METADATA, BASE, MOUNT, validate_key

if TYPE_CHECKING:
    from shardedstore.shards.listing import Shard
    from shardedstore.store.sharded import ShardedStore

__all__ = [
    "ShardSummary",
    "checksums",
    "hierarchy",
    "holder_text",
    "iter_shard_summaries",
    "node_holder",
    "node_holder_info",
    "shard_summaries",
]


@dataclass(frozen=True)
class ShardSummary:
    """One shard: where it is and what it holds.

    Attributes
    ----------
    kind
        ``"base"``, ``"mount"`` or ``"array shard"``.
    path
        The mount or array path (``""`` for the base).
    chunk_index
        The array shard's chunk index (None for the base and mounts).
    backend
        Where the shard is, as a URL.
    exists
        Whether the store is there (False: missing, or an empty object-store prefix;
        None: it could not be told, see ``error``).
    error
        Why the shard could not be read (a corrupt zip, an unreachable endpoint), or None.
    keys
        Every key the shard holds: ``metadata_keys + chunk_keys + stray_keys``.
    metadata_keys
        Metadata documents (``zarr.json``, ``.zarray``, ...) a reader reaches.
    chunk_keys
        Chunks a reader reaches.
    stray_keys
        Keys no reader of the layout reaches (``validate`` lists them).
    bytes
        Bytes of all ``keys``.
    """

    kind: str
    path: str
    chunk_index: str | None
    backend: str
    exists: bool | None
    error: str | None
    keys: int
    metadata_keys: int
    chunk_keys: int
    stray_keys: int
    bytes: int

    @property
    def name(self) -> str:
        """The shard as messages name it: ``base``, ``mount 'a'``, ``array shard 'x' chunk 3``."""
        if self.kind == "array shard" and self.chunk_index is None:
            return f"array {self.path!r}"  # its shards could not be listed
        return describe_shard(self.path, self.chunk_index)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field (10^6 shards: seconds).
        return {name: getattr(self, name) for name in _SUMMARY_FIELDS}

    def as_json(self) -> str:
        """``json.dumps(self.as_dict())``, the same text, a few times faster (``info
        --json`` writes one such line per shard)."""
        return (
            f'{{"kind": {_text(self.kind)}, "path": {_text(self.path)}, '
            f'"chunk_index": {_text(self.chunk_index)}, "backend": {_text(self.backend)}, '
            f'"exists": {_FLAGS[self.exists]}, "error": {_text(self.error)}, '
            f'"keys": {self.keys:d}, "metadata_keys": {self.metadata_keys:d}, '
            f'"chunk_keys": {self.chunk_keys:d}, "stray_keys": {self.stray_keys:d}, '
            f'"bytes": {self.bytes:d}}}'
        )

    @classmethod
    def empty(
        cls, kind: str, path: str, index: str | None, backend: str, error: str | None
    ) -> ShardSummary:
        """A shard that is missing (``error`` None) or cannot be read (its ``error``)."""
        exists = False if error is None else None
        return cls(kind, path, index, backend, exists, error, 0, 0, 0, 0, 0)


_SUMMARY_FIELDS = tuple(f.name for f in fields(ShardSummary))

_FLAGS = {True: "true", False: "false", None: "null"}
"""``exists`` as JSON writes it."""


def _text(value: str | None) -> str:
    """A string (or None) as ``json.dumps`` writes it (the C encoder's own escaping)."""
    return "null" if value is None else encode_basestring_ascii(value)


def _owned(keys: OwnKeys | None, key: str) -> bool:
    if keys is None:
        return False
    try:
        validate_key(key)
    except ValueError:
        return False
    return keys.owns(key)


_Verdict = tuple[bool, bool]
"""A key's verdict in its shard: reached by a reader, and a metadata document."""


def _verdicts(keys: OwnKeys | None) -> KeyVerdicts[_Verdict]:
    def verdict(key: str) -> _Verdict:
        owned = _owned(keys, key)
        return owned, owned and is_metadata_document(key)

    return KeyVerdicts(verdict)


def _summary(
    kind: str,
    path: str,
    index: str | None,
    url: str,
    verdicts: KeyVerdicts[_Verdict],
    found: Inventory,
) -> ShardSummary:
    """What one shard holds; ``verdicts`` judge its keys (its own, metadata documents)."""
    if not found.exists:
        error = None if found.error is None else error_text(found.error)
        return ShardSummary.empty(kind, path, index, url, error)
    listed = found.sizes
    own = documents = 0
    for key in listed:
        owned, document = verdicts(key)
        own += owned
        documents += document
    return ShardSummary(
        kind,
        path,
        index,
        url,
        True,
        None,
        len(listed),
        documents,
        own - documents,
        len(listed) - own,
        sum(listed.values()),
    )


def _place_url(place: LocalRoot) -> str:
    """A local shard's place as zarr writes its stores: ``file://...``, ``zip://...``."""
    kind, path = place
    return f"file://{path}" if kind == "directory" else f"zip://{path}"


_WINDOW = 4096
"""Shards whose stores are open (and whose summaries are held) at once: memory stays
bounded whatever their number."""


async def _inventories(
    window: list[Shard], timeout: float
) -> tuple[list[Store | LocalRoot], list[Inventory]]:
    """What each shard of ``window`` holds, and where it is (a shard on local disk is
    read by its place: no store is made for it)."""
    places: list[Store | LocalRoot] = []
    for shard in window:
        root = shard.local_root if shard.kind == "array shard" else None
        places.append(root if root is not None else shard.store)
    try:
        return places, await inventories(places, timeout=timeout)
    finally:
        for place, shard in zip(places, window, strict=True):
            if shard.kind == "array shard" and not isinstance(place, tuple):
                place.close()  # a handle of its own: 10^5 zips must not stay open


def _summaries(store: ShardedStore, timeout: float) -> Iterator[ShardSummary]:
    listing, shards = sync(iter_shards(store, strict=False))
    arrays = store.array_shards
    named = {
        path: set(getattr(factory, "shards", None) or ()) for path, (_, factory) in arrays.items()
    }
    judges: dict[int, tuple[OwnKeys | None, KeyVerdicts[_Verdict]]] = {}
    while window := list(itertools.islice(shards, _WINDOW)):
        places, seen = sync(_inventories(window, timeout))
        for shard, place, inventory in zip(window, places, seen, strict=True):
            index = shard.chunk_index
            url = _place_url(place) if isinstance(place, tuple) else facts_of(place).url
            keys = shard.own_keys
            judged = judges.get(id(keys))
            if judged is None:  # the record is kept, so its id stays its own
                judged = judges[id(keys)] = (keys, _verdicts(keys))
            summary = _summary(shard.kind, shard.path, index, url, judged[1], inventory)
            if (
                summary.exists is False
                and shard.kind == "array shard"
                and index not in named[shard.path]
            ):
                continue  # a candidate index of a factory that cannot list its shards
            yield summary
    for path, index, error in listing.unmade:  # the factory itself failed for this index
        yield ShardSummary.empty("array shard", path, index, "?", error_text(error))
    for path, array in listing.arrays.items():
        if array.listing_error is not None:  # the template's directory cannot be listed
            error_line = f"array shards cannot be listed: {error_text(array.listing_error)}"
            factory = arrays[path][1]
            yield ShardSummary.empty("array shard", path, None, factory_text(factory), error_line)


def iter_shard_summaries(
    store: ShardedStore, *, timeout: float | None = None
) -> Iterator[ShardSummary]:
    """Every shard of ``store`` with what it holds, as :func:`shard_summaries` gives
    them, one at a time: 10^6 shards are summarized in bounded memory.

    The arrays' chunk indices are listed when the iteration starts; then the shards
    are made and read a few thousand at a time, as the summaries are consumed.

    Parameters
    ----------
    store
        The layout.
    timeout
        Seconds each shard may take to open and list its first key (None: the
        ``SHARDEDSTORE_TIMEOUT`` environment variable, else 30 s; ``math.inf``: no limit).
    """

    limit = resolve_timeout(timeout)  # a bad setting fails here, not as a shard's error
    return _summaries(store, math.inf if limit is None else limit)


def shard_summaries(store: ShardedStore, *, timeout: float | None = None) -> list[ShardSummary]:
    """Every shard of ``store`` (base, mounts, existing array shards) with what it holds.

    A shard that is missing is listed with ``exists`` False, one that cannot be read
    (unreachable, corrupt) with its ``error``; the others are still summarized.
    :func:`iter_shard_summaries` gives them one at a time.

    Parameters
    ----------
    store
        The layout.
    timeout
        Seconds each shard may take to open and list its first key (None: the
        ``SHARDEDSTORE_TIMEOUT`` environment variable, else 30 s; ``math.inf``: no limit).
    """

    return list(iter_shard_summaries(store, timeout=timeout))


# ------------------------------------------------------------------ the tree


def node_holder_info(store: ShardedStore, path: str) -> dict[str, Any]:
    """Which store holds the node at ``path``, as data.

    ``{"kind": "base", "store": URL}``, ``{"kind": "mount", "path": MOUNT, "store": URL}``
    or, for an array-sharded array (metadata in base, chunks in its array shards),
    ``{"kind": "array shards", "path": ARRAY, "store": BASE URL, "dims": N,
    "shards": COUNT, "template": WHERE}``.
    """
    kind, node = (BASE, "") if not path else store.router.route(f"{path}/zarr.json")[:2]
    if kind == MOUNT:
        return {"kind": "mount", "path": node, "store": facts_of(store.mounts[node]).url}
    base = facts_of(store.base).url
    if kind == ARRAY_METADATA:
        dims, factory = store.array_shards[node]
        indices = sync(store.shard_indices(node, probe=False))
        return {
            "kind": "array shards",
            "path": node,
            "store": base,
            "dims": dims,
            "shards": len(indices),
            "template": factory_text(factory),
        }
    return {"kind": "base", "store": base}


def holder_text(holder: dict[str, Any]) -> str:
    """A holder from :func:`node_holder_info`, for people to read."""
    if holder["kind"] == "mount":
        return f"mount {holder['path']!r}: {holder['store']}"
    if holder["kind"] == "array shards":
        return (
            f"base + {holder['shards']} array shard(s) on {holder['dims']} dim(s): "
            f"{holder['template']}"
        )
    return f"base: {holder['store']}"


def node_holder(store: ShardedStore, path: str) -> str:
    """Which store holds the node at ``path``, for people to read."""
    return holder_text(node_holder_info(store, path))


async def _first_unreadable(store: ShardedStore) -> str | None:
    """``base: cannot be read (URL): ...`` for the first of base and mounts that fails."""

    subs = [("base", store.base)]
    subs += [(f"mount {path!r}", mount) for path, mount in sorted(store.mounts.items())]
    views = [read_only_view(sub) for _, sub in subs]
    found = await gather_bounded(reach(view) for view in views)
    for (name, _), view, outcome in zip(subs, views, found, strict=True):
        if outcome.state == "unreadable":
            return f"{name}: cannot be read ({facts_of(view).url}): {outcome.error}"
    return None


def hierarchy(store: ShardedStore) -> list[dict[str, Any]]:
    """Every group and array (path, kind, shape, dtype, holder), from metadata only."""
    import zarr

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Object at .* is not recognized")
            root = zarr.open_group(store, mode="r")
            members = sorted(root.members(max_depth=None), key=lambda member: member[0])
    except Exception as error:
        broken = sync(_first_unreadable(store))
        if broken is None:
            raise
        raise LayoutError(
            f"{broken}; the tree needs the base and every mount (shardedstore validate "
            "lists every problem)"
        ) from error
    nodes: list[dict[str, Any]] = [
        {"path": "", "kind": "group", "holder": node_holder_info(store, "")}
    ]
    for path, node in members:
        entry: dict[str, Any] = {
            "path": path,
            "kind": "group",
            "holder": node_holder_info(store, path),
        }
        if isinstance(node, zarr.Array):
            entry.update(kind="array", shape=list(node.shape), dtype=str(node.dtype))
        nodes.append(entry)
    return nodes


# ---------------------------------------------------------------- checksums


async def _checksums(store: Store) -> dict[str, tuple[int, int]]:

    prototype = default_buffer_prototype()
    if not await opened(store):
        return {}
    keys = [key async for key in store.list()]

    async def one(key: str) -> tuple[int, int]:
        value = await store.get(key, prototype)
        data = b"" if value is None else value.to_bytes()
        return len(data), zlib.crc32(data)

    sums = await gather_bounded(one(key) for key in keys)
    return dict(zip(keys, sums, strict=True))


def checksums(store: Store) -> dict[str, tuple[int, int]]:
    """``key -> (size, crc32)`` for every key of ``store`` (reads every value)."""
    return dict(sync(_checksums(store)))
