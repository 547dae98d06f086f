"""Pure key routing: which store holds a Zarr key, and under which inner key.

Nothing here performs I/O or imports zarr. The :class:`Router` is built once from the
layout (mount paths and array-shard paths) and then answers, per key, in time
proportional to the key's depth, never to the number of mounts.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shardedstore.errors import KeyValidationError, LayoutError

__all__ = [
    "ARRAY_METADATA",
    "NO_SHARD",
    "BASE",
    "CHUNK",
    "MAX_SHARDED_DIMS",
    "MOUNT",
    "ROOT_PREFIX",
    "ChunkKeyFormat",
    "PrefixPlan",
    "Route",
    "Router",
    "ShardSelection",
    "outer_chunk_key",
    "select_shards",
    "split_chunk_key",
    "validate_key",
    "validate_prefix",
]

# Route kinds. Plain ints keep the hot path free of enum attribute lookups.
BASE: Final = 0
"""The key lives in the base store, unchanged."""
MOUNT: Final = 1
"""The key lives in a mounted store, with the mount path stripped."""
CHUNK: Final = 2
"""The key is a chunk of an array-sharded array and lives in one array shard."""
ARRAY_METADATA: Final = 3
"""The key is a metadata document of an array-sharded array; it lives in base."""

Route = tuple[int, str, str | None, str]
"""``(kind, node_path, chunk_index, inner_key)``.

``node_path`` is the mount or array path (``""`` for the base), ``chunk_index`` the
array shard's index such as ``"3"`` or ``"3.0"`` (``None`` unless ``kind == CHUNK``)
and ``inner_key`` the key inside the target store.
"""

MAX_SHARDED_DIMS: Final = 64
"""The most dims an array can be sharded on: an array has at most 64 dimensions (numpy)."""

_ROUTES: Final = 1 << 16
"""Routes a :class:`Router` remembers (then it starts again)."""

ARRAY_METADATA_NAMES: Final = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup"})


def _bad_key(key: object) -> str | None:
    """Return why ``key`` is not a valid Zarr key, or None when it is."""
    if not isinstance(key, str):
        return f"keys must be str, not {type(key).__name__}"
    if key == "":
        return "the key is empty"
    if "\\" in key:
        return "backslashes are not allowed"
    if key[0] == "/":
        return "a leading '/' is not allowed"
    if key[-1] == "/" or "//" in key:
        return "empty path segments are not allowed"
    if key == "." or key == ".." or key.startswith(("./", "../")):
        return "'.' and '..' segments are not allowed"
    if "/./" in key or "/../" in key or key.endswith(("/.", "/..")):
        return "'.' and '..' segments are not allowed"
    return None


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid Zarr key, else raise :class:`KeyValidationError`.

    Valid keys are relative, ``/``-separated, with no empty, ``.`` or ``..``
    segments and no backslashes.
    """
    reason = _bad_key(key)
    if reason is not None:
        raise KeyValidationError(f"invalid key {key!r}: {reason}")
    return key


ROOT_PREFIX: Final = "/"
"""zarr's other spelling of the root prefix: the same as ``""`` in ``list_prefix``,
``list_dir``, ``is_empty`` and ``delete_dir``.

zarr's MemoryStore treats ``"/"`` as the root in ``list_dir`` only (elsewhere as a plain
string prefix that no key starts with, so ``is_empty("/")`` is True on a full store,
which zarr's own state machine marks as broken); here it is the root everywhere. It is
never passed on to a sub-store: zarr's LocalStore reads ``/`` as the filesystem root.
"""


def validate_prefix(prefix: str) -> str:
    """Validate a listing prefix: ``""``, ``"/"`` or a key optionally ending in ``/``.

    Anything else starting with ``/`` (``"/etc"``, ``"//"``) is refused.
    """
    if prefix == "" or prefix == ROOT_PREFIX:
        return prefix
    reason = _bad_key(prefix[:-1] if prefix.endswith("/") and len(prefix) > 1 else prefix)
    if reason is not None:
        raise KeyValidationError(f"invalid prefix {prefix!r}: {reason}")
    return prefix


def validate_node_path(path: str, what: str) -> str:
    """Validate a mount or array-shard path given in a layout."""
    reason = _bad_key(path)
    if reason is not None:
        raise LayoutError(f"invalid {what} path {path!r}: {reason}")
    return path


def _is_index(part: str) -> bool:
    # Canonical non-negative decimal integer: "0", "7", "12" but not "07", "+1", "¹".
    return part.isdigit() and part.isascii() and (part[0] != "0" or len(part) == 1)


@dataclass(frozen=True, slots=True)
class ChunkKeyFormat:
    """How an array spells its chunk keys, as its metadata says.

    Parameters
    ----------
    prefix
        ``"c"`` for zarr v3's default chunk-key encoding, ``""`` for the v2 encoding.
    separator
        ``"/"`` or ``"."``.
    remaining_ndim
        Number of dimensions left in each array shard (the array's ndim minus the
        sharded dims).
    """

    prefix: str
    separator: str
    remaining_ndim: int


def parse_chunk_key(key: str, prefix: str, separator: str, ndim: int) -> tuple[int, ...] | None:
    """The chunk coordinates ``key`` names in an ``ndim``-dimensional array, or None.

    ``prefix`` and ``separator`` spell the array's keys as its metadata says (see
    :class:`ChunkKeyFormat`); only canonical indices count (``"07"`` is not one).

    Examples
    --------
    >>> parse_chunk_key("c/1/20", "c", "/", 2)
    (1, 20)
    >>> parse_chunk_key("0", "", ".", 0)
    ()
    >>> parse_chunk_key("1.07", "", ".", 2) is None
    True
    """
    parts: list[str]
    if prefix:
        if key == prefix:
            parts = []
        elif key.startswith(prefix + separator):
            parts = key[len(prefix) + 1 :].split(separator)
        else:
            return None
    elif ndim == 0:
        return () if key == "0" else None  # a zarr v2 0-d array keeps its chunk under "0"
    else:
        parts = key.split(separator)
    if len(parts) != ndim or not all(_is_index(part) for part in parts):
        return None
    return tuple(int(part) for part in parts)


def split_chunk_key(rest: str, dims: int) -> tuple[str, str] | None:
    """Split an array-relative chunk key into ``(chunk_index, inner_key)``.

    ``rest`` is the key with the array path and its ``/`` removed. The first ``dims``
    chunk indices select the array shard; the remaining ones form the chunk key
    inside the shard, in the same encoding. Returns None when ``rest`` is not a
    chunk key with at least ``dims`` indices (metadata, attributes, anything else).

    Examples
    --------
    >>> split_chunk_key("c/3/0/1", 1)
    ('3', 'c/0/1')
    >>> split_chunk_key("12.4", 1)
    ('12', '4')
    >>> split_chunk_key("3.4", 2)
    ('3.4', '0')
    """
    if rest[:2] in ("c/", "c."):
        sep = rest[1]
        parts = rest[2:].split(sep)
        prefix = "c"
    elif rest[:1] == "c":
        return None
    else:
        sep = "/" if "/" in rest else "."
        parts = rest.split(sep)
        prefix = ""
    if len(parts) < dims:
        return None
    for part in parts:
        if not _is_index(part):
            return None
    index = ".".join(parts[:dims])
    remaining = parts[dims:]
    if prefix:
        inner = prefix + sep + sep.join(remaining) if remaining else prefix
    else:
        # A zarr v2 0-d array keeps its only chunk under "0".
        inner = sep.join(remaining) if remaining else "0"
    return index, inner


def outer_chunk_key(chunk_index: str, inner_key: str, fmt: ChunkKeyFormat | None) -> str | None:
    """Invert :func:`split_chunk_key`: the array-relative key of ``inner_key``.

    ``fmt`` (from the array's metadata) settles the two cases an inner key alone does
    not: the separator of a key with a single index, and whether a v2 shard is 0-d.
    Without metadata, ``/`` is assumed for v3 keys, ``.`` for v2 keys, and a v2 inner
    key ``"0"`` is read as one remaining dimension. Returns None for inner keys that
    are not chunk keys (the shard's own metadata documents).
    """
    indices = chunk_index.split(".")
    if inner_key[:2] in ("c/", "c."):
        sep = inner_key[1]
        rest = inner_key[2:].split(sep)
        prefix = "c"
    elif inner_key == "c":
        sep = fmt.separator if fmt is not None else "/"
        rest = []
        prefix = "c"
    else:
        prefix = ""
        if "/" in inner_key:
            sep = "/"
        elif "." in inner_key:
            sep = "."
        else:
            sep = fmt.separator if fmt is not None else "."
        if inner_key == "0" and fmt is not None and fmt.remaining_ndim == 0:
            rest = []
        else:
            rest = inner_key.split(sep)
    for part in rest:
        if not _is_index(part):
            return None
    parts = sep.join(indices + rest)
    return prefix + sep + parts if prefix else parts


@dataclass(frozen=True, slots=True)
class ShardSelection:
    """The array shards a listing prefix below an array can reach (pure).

    Attributes
    ----------
    parts
        The index parts the prefix spells out in full (``("3",)`` for ``c/3/``).
    partial
        The start of the next index part (``"3"`` for ``c/3``: shards 3, 30, 31 ...).
    level
        When the prefix ends where an index part begins (``c/``, ``c/3/`` of a layout
        sharded on two dims) and the parts are directories (``/``): how many parts it
        spelled; the names below it are then that part of each shard's index. Else None.
    """

    parts: tuple[str, ...]
    partial: str
    level: int | None

    def matches(self, index: str) -> bool:
        """Whether the array shard at ``index`` can hold keys under the prefix."""
        found = index.split(".")
        given = len(self.parts)
        if given >= len(found):
            return tuple(found) == self.parts[: len(found)]
        return tuple(found[:given]) == self.parts and found[given].startswith(self.partial)

    def single(self, dims: int) -> str | None:
        """The one shard the prefix names in full (its index), if it does."""
        return ".".join(self.parts[:dims]) if len(self.parts) >= dims else None


NO_SHARD = ShardSelection(("",), "", None)
"""A selection no array shard matches (a prefix no chunk key has)."""


def select_shards(rest: str, fmt: ChunkKeyFormat, dims: int) -> ShardSelection | None:
    """Which array shards hold keys under ``array/rest``; None: possibly every one.

    Examples
    --------
    >>> fmt = ChunkKeyFormat("c", "/", 2)
    >>> select_shards("c/3/0/", fmt, 1)
    ShardSelection(parts=('3', '0'), partial='', level=None)
    >>> select_shards("c/", fmt, 1)
    ShardSelection(parts=(), partial='', level=0)
    >>> select_shards("zarr.json", fmt, 1) == NO_SHARD
    True
    """
    if fmt.prefix:
        if rest in ("", fmt.prefix):
            return None
        if not rest.startswith(fmt.prefix + fmt.separator):
            return NO_SHARD if not fmt.prefix.startswith(rest) else None
        rest = rest[len(fmt.prefix) + 1 :]
    if rest == "" and fmt.separator != "/":
        return None  # v2 keys spelled with "." are names of their own: every shard's
    *parts, partial = rest.split(fmt.separator)
    if not all(_is_index(part) for part in parts):
        return NO_SHARD
    level = len(parts) if partial == "" and fmt.separator == "/" and len(parts) < dims else None
    return ShardSelection(tuple(parts), partial, level)


@dataclass(frozen=True, slots=True)
class PrefixPlan:
    """Which stores a listing prefix touches, from :meth:`Router.plan_prefix`.

    Attributes
    ----------
    inside_mount
        ``(mount_path, inner_prefix)`` when the prefix lies wholly inside one mount;
        then nothing else is touched.
    base
        Whether the base store is listed (with the prefix unchanged).
    mounts
        Mount paths whose whole content falls under the prefix.
    arrays
        Array-shard paths whose chunks may fall under the prefix.
    """

    inside_mount: tuple[str, str] | None
    base: bool
    mounts: tuple[str, ...]
    arrays: tuple[str, ...]


class Router:
    """Map Zarr keys to (store, inner key) for one fixed layout.

    Parameters
    ----------
    mount_paths
        Node paths mounted to their own store.
    array_dims
        Array path -> number of leading chunk dimensions that select an array shard.

    Raises
    ------
    LayoutError
        If a path is invalid, a dims value is not a positive integer, or one path
        lies inside another.
    """

    __slots__ = (
        "_array_dims",
        "_children",
        "_interior",
        "_mount_paths",
        "_routes",
        "_sorted_arrays",
        "_sorted_mounts",
        "_table",
    )

    def __init__(self, mount_paths: Iterable[str], array_dims: Mapping[str, int]) -> None:
        table: dict[str, int] = {}
        for path in mount_paths:
            validate_node_path(path, "mount")
            table[path] = MOUNT
        for path, dims in array_dims.items():
            validate_node_path(path, "array shard")
            if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
                raise LayoutError(
                    f"array shard {path!r}: dims must be a positive integer "
                    f"(the number of leading chunk dimensions to shard on), got {dims!r}"
                )
            if dims > MAX_SHARDED_DIMS:
                raise LayoutError(
                    f"array shard {path!r}: dims is {dims}, but an array has at most "
                    f"{MAX_SHARDED_DIMS} dimensions (numpy's limit); dims is the number of "
                    "leading chunk dimensions to shard on, usually 1"
                )
            if path in table:
                raise LayoutError(f"{path!r} is both a mount and an array-shard path; choose one")
            table[path] = CHUNK
        interior: set[str] = set()
        children: dict[str, set[str]] = {}
        for path in table:
            parts = path.split("/")
            for depth in range(len(parts)):
                parent = "/".join(parts[:depth])
                if parent in table:
                    raise LayoutError(
                        f"{path!r} lies inside {parent!r}: mounts and array shards must not "
                        "nest; mount a ShardedStore at the outer path instead"
                    )
                if depth:
                    interior.add(parent)
                if table[path] == MOUNT:
                    children.setdefault(parent, set()).add(parts[depth])
        for path in table:
            if path in interior:
                inner = next(p for p in table if p.startswith(path + "/"))
                raise LayoutError(
                    f"{inner!r} lies inside {path!r}: mounts and array shards must not "
                    "nest; mount a ShardedStore at the outer path instead"
                )
        self._table = table
        self._interior = frozenset(interior)
        self._children = {k: frozenset(v) for k, v in children.items()}
        self._array_dims = dict(array_dims)
        self._mount_paths = tuple(p for p, k in table.items() if k == MOUNT)
        self._sorted_mounts = sorted(p + "/" for p in self._mount_paths)
        self._sorted_arrays = sorted(p + "/" for p in self._array_dims)
        self._routes: dict[str, Route] = {}

    @property
    def mount_paths(self) -> tuple[str, ...]:
        """The mounted node paths."""
        return self._mount_paths

    @property
    def array_dims(self) -> Mapping[str, int]:
        """Array path -> sharded dims."""
        return self._array_dims

    def route(self, key: str) -> Route:
        """Route one key. Raises :class:`KeyValidationError` for an invalid key.

        Routes are remembered (up to :data:`_ROUTES` keys): a pass over an array asks
        for the same chunk keys again.
        """
        found = self._routes.get(key)
        if found is not None:
            return found
        found = self._route(key)
        if len(self._routes) >= _ROUTES:
            self._routes.clear()
        self._routes[key] = found
        return found

    def _route(self, key: str) -> Route:
        reason = _bad_key(key)
        if reason is not None:
            raise KeyValidationError(f"invalid key {key!r}: {reason}")
        table = self._table
        if not table:
            return (BASE, "", None, key)
        interior = self._interior
        end = key.find("/")
        while end != -1:
            node = key[:end]
            kind = table.get(node)
            if kind is not None:
                rest = key[end + 1 :]
                if kind == MOUNT:
                    return (MOUNT, node, None, rest)
                split = split_chunk_key(rest, self._array_dims[node])
                if split is not None:
                    return (CHUNK, node, split[0], split[1])
                if rest in ARRAY_METADATA_NAMES:
                    return (ARRAY_METADATA, node, None, rest)
                return (BASE, "", None, key)
            if node not in interior:
                break
            end = key.find("/", end + 1)
        return (BASE, "", None, key)

    def plan_prefix(self, prefix: str) -> PrefixPlan:
        """Which stores hold keys starting with ``prefix`` (string prefix match)."""
        # A prefix reaching past "mount/" addresses one mount only.
        end = prefix.find("/")
        while end != -1:
            node = prefix[:end]
            kind = self._table.get(node)
            if kind == MOUNT:
                return PrefixPlan((node, prefix[end + 1 :]), False, (), ())
            if kind == CHUNK:
                return PrefixPlan(None, True, (), (node,))
            end = prefix.find("/", end + 1)
        return PrefixPlan(
            None,
            True,
            tuple(p[:-1] for p in _starting_with(self._sorted_mounts, prefix)),
            tuple(p[:-1] for p in _starting_with(self._sorted_arrays, prefix)),
        )

    def mount_children(self, dir_path: str) -> frozenset[str]:
        """Names directly below ``dir_path`` that are, or lead to, a mount point."""
        return self._children.get(dir_path, frozenset())

    def containing_node(self, dir_path: str) -> tuple[int, str] | None:
        """The mount or array path that ``dir_path`` is, or lies inside, if any."""
        node = dir_path
        while True:
            kind = self._table.get(node)
            if kind is not None:
                return kind, node
            cut = node.rfind("/")
            if cut == -1:
                return None
            node = node[:cut]


def _starting_with(sorted_paths: list[str], prefix: str) -> list[str]:
    """Entries of a sorted list that start with ``prefix``, by bisection."""
    start = bisect.bisect_left(sorted_paths, prefix)
    out: list[str] = []
    for path in sorted_paths[start:]:
        if not path.startswith(prefix):
            break
        out.append(path)
    return out
