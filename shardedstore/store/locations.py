"""Where each store of a layout keeps its data, and whether two of them overlap.

A *location* is where a store's keys live:

- a local directory or zip file, after ``..``, symlinks and :func:`os.path.realpath`;
  ``file://`` URLs and fsspec's local filesystem are local paths too;
- a URL: its protocol and its normalized path (``s3://b/x/../y`` is ``s3://b/y``);
- for a store without a path (a ``MemoryStore``, a store type this module does not
  know), the store itself: such stores overlap only if they are the same store (for a
  ``MemoryStore``: if they share its dict).

An array-shard template is a location *pattern* in which ``{chunk}`` stands for any
chunk index of the array's dims. Two stores of one layout overlap when their locations
are the same or one lies inside the other; :func:`check_layout` refuses that. The cost
is O(stores): templates are compared as patterns, never by trying every chunk index.
Everything here is pure apart from ``os.path.realpath`` (and one ``lstat`` per store),
and :func:`first_link_below`, which lists a folder.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from zarr.abc.store import Store
from zarr.storage import MemoryStore, WrapperStore

from shardedstore.backends.registry import facts_of, get_store_type
from shardedstore.errors import ConfigError, LocationOverlapError
from shardedstore.store.factories import (
    CHUNK_PLACEHOLDER,
    ArrayShardDirectoryFactory,
    ArrayShardStoresFactory,
    ArrayShardTemplateFactory,
)
from shardedstore.store.parts import Layered

__all__ = [
    "ExplicitShards",
    "Location",
    "Member",
    "Pattern",
    "check_layout",
    "escapes_folder",
    "find_overlap",
    "first_link_below",
    "folder_location",
    "layout_checked",
    "layout_members",
    "member_name",
    "new_resolver",
    "placeholder_survives",
]

LOCAL = "file"
"""The space of local paths."""

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)
# Protocol names that address the same namespace.
_ALIASES = {"local": LOCAL, "s3a": "s3", "gcs": "gs", "http": "https"}
_INDEX_PART = "(?:0|[1-9][0-9]*)"
_POSIX = os.sep == "/" and os.altsep is None
_DIGITS = frozenset("0123456789")
_NONZERO = frozenset("123456789")

_FIX = (
    "give every store of a layout its own location, none inside another (to nest "
    "layouts, mount a ShardedStore whose stores are separate)"
)
_COLLAPSE_FIX = (
    f"keep {CHUNK_PLACEHOLDER} in the path once '..' is resolved, "
    f"e.g. 'shards/{CHUNK_PLACEHOLDER}.zarr'"
)


# ------------------------------------------------------------------ locations


@dataclass(eq=False, slots=True)
class Location:
    """Where one store keeps its keys (never changed once made).

    Attributes
    ----------
    space
        ``"file"`` for local paths, a URL protocol (``"s3"``), or ``""`` for a store
        located by its identity.
    parts
        The normalized path, split on ``/`` (for URLs the bucket or host comes first).
    token
        For a store located by identity: the object that is its location.
    label
        How an identity location is shown in messages.
    """

    space: str
    parts: tuple[str, ...]
    token: object = None
    label: str = ""

    @property
    def key(self) -> tuple[str, tuple[str, ...], int]:
        """Equal for equal locations (identity locations: while ``token`` is alive)."""
        return (self.space, self.parts, id(self.token))

    def __str__(self) -> str:
        if self.token is not None:
            return self.label
        path = "/".join(self.parts)
        return f"/{path}" if self.space == LOCAL else f"{self.space}://{path}"


@dataclass(frozen=True)
class Pattern:
    """The locations of an array-shard template: ``{chunk}`` is any chunk index.

    Attributes
    ----------
    space
        As for :class:`Location`.
    fixed
        The resolved path up to the first part holding ``{chunk}``.
    rest
        The remaining parts, normalized; the first holds ``{chunk}``.
    dims
        How many parts a chunk index has (``3`` or ``3.0``).
    """

    space: str
    fixed: tuple[str, ...]
    rest: tuple[str, ...]
    dims: int

    def render(self, chunk_index: str) -> Location:
        """The location of the array shard at ``chunk_index``."""
        rendered = tuple(part.replace(CHUNK_PLACEHOLDER, chunk_index) for part in self.rest)
        return Location(self.space, self.fixed + rendered)

    def __str__(self) -> str:
        return str(Location(self.space, self.fixed + self.rest))


def _lexical(parts: Sequence[str]) -> tuple[int, list[str]]:
    """``parts`` with ``.`` and ``..`` resolved: (``..`` left over at the start, parts)."""
    ups, out = 0, list[str]()
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
            else:
                ups += 1
        else:
            out.append(part)
    return ups, out


def _real_parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in os.path.realpath(path).split(os.sep) if part)


class _Resolver:
    """``os.path.realpath`` for many paths, resolving each parent directory once.

    Array shards share a few parent directories: each path then costs one ``lstat``
    (is its last part a symlink) instead of one per path component, and a parent
    holding many of them is listed once instead (``os.scandir`` tells which entries
    are symlinks without a system call per entry).
    """

    _LIST_AFTER = 16
    """Paths looked up in one parent, one ``lstat`` each, before listing that parent."""

    def __init__(self) -> None:
        self._parents: dict[str, tuple[str, ...]] = {}
        self._lookups: dict[str, int] = {}
        self._links: dict[str, frozenset[str] | None] = {}  # None: cannot list it

    def _is_link(self, text: str, parent: str, name: str) -> bool:
        if parent in self._links:
            links = self._links[parent]
        else:
            count = self._lookups[parent] = self._lookups.get(parent, 0) + 1
            if count < self._LIST_AFTER:
                return os.path.islink(text)
            try:
                with os.scandir(parent) as entries:
                    links = frozenset(entry.name for entry in entries if entry.is_symlink())
            except (FileNotFoundError, NotADirectoryError):
                links = frozenset()  # nothing exists in it, no symlink either
            except OSError:  # e.g. a directory we may traverse but not list
                links = None
            self._links[parent] = links
        return os.path.islink(text) if links is None else name in links

    def local(self, path: str | os.PathLike[str]) -> Location:
        return Location(LOCAL, self.local_parts(path))

    def local_parts(self, path: str | os.PathLike[str]) -> tuple[str, ...]:
        """The parts of :meth:`local`'s location, without making a Location."""
        text = os.fspath(path)
        if _POSIX:  # os.path.split, without its cost (it runs once per array shard)
            parent, _, name = text.rpartition("/")
            if not parent and text.startswith("/"):
                parent = "/"
        else:  # pragma: no cover - Windows
            parent, name = os.path.split(text)
        if parent and name not in ("", ".", "..") and not self._is_link(text, parent, name):
            parts = self._parents.get(parent)
            if parts is None:
                parts = self._parents[parent] = _real_parts(parent)
            return (*parts, name)
        return _real_parts(text)


def first_link_below(folder: str) -> str | None:
    """The path of a symlink anywhere below the directory ``folder``, or None.

    One ``os.scandir`` per directory (its entries say which are links without a system
    call each); links are not followed. A directory that vanishes meanwhile is skipped.
    """
    pending = [folder]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    if entry.is_symlink():
                        return entry.path
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return None


def new_resolver() -> _Resolver:
    """A cache of resolved directories, for resolving many locations in one go."""
    return _Resolver()


def _split(value: str, kind: Literal["local", "url"]) -> tuple[str, str]:
    """(space, path) of a path field's value; local paths keep their own form."""
    match = _URL.match(value) if kind == "url" else None
    if match is None:
        return LOCAL, value
    scheme = match[1].lower()
    scheme, rest = _ALIASES.get(scheme, scheme), match[2]
    if scheme == LOCAL:
        return LOCAL, rest or "/"
    if scheme == "https":
        rest = rest.split("#", 1)[0].split("?", 1)[0]
        host, _, path = rest.partition("/")
        rest = f"{host.lower()}/{path}"
    return scheme, rest


def _location(space: str, path: str, resolver: _Resolver) -> Location:
    if space == LOCAL:
        return resolver.local(path or ".")
    return Location(space, tuple(_lexical(path.split("/"))[1]))


def value_location(
    value: str, kind: Literal["local", "url"], resolver: _Resolver | None = None
) -> Location:
    """The location of a store config's path field (a local path or a URL)."""
    return _location(*_split(value, kind), resolver or _Resolver())


def pattern_location(
    value: str, kind: Literal["local", "url"], dims: int, resolver: _Resolver | None = None
) -> Location | Pattern:
    """The locations of a template's path field; a Location if ``{chunk}`` does not survive."""
    resolver = resolver or _Resolver()
    space, path = _split(value, kind)
    parts = path.split("/")
    first = next((i for i, part in enumerate(parts) if CHUNK_PLACEHOLDER in part), None)
    if first is None:
        return _location(space, path, resolver)
    ups, rest = _lexical(parts[first:])
    fixed = "/".join([*parts[:first], *[".."] * ups])
    if not any(CHUNK_PLACEHOLDER in part for part in rest):
        return _location(space, "/".join([fixed, *rest]), resolver)
    if space == LOCAL and not fixed and path.startswith("/"):
        fixed = "/"
    return Pattern(space, _location(space, fixed, resolver).parts, tuple(rest), dims)


def placeholder_survives(value: str, kind: Literal["local", "url"]) -> bool:
    """Whether ``{chunk}`` is still in a template path once ``.`` and ``..`` are resolved."""
    _, path = _split(value, kind)
    parts = path.split("/")
    first = next((i for i, part in enumerate(parts) if CHUNK_PLACEHOLDER in part), None)
    return first is not None and any(
        CHUNK_PLACEHOLDER in part for part in _lexical(parts[first:])[1]
    )


def folder_location(path_or_url: str) -> Location:
    """The location of a config's folder (a local directory or a URL)."""
    return value_location(path_or_url, "url")


def escapes_folder(
    folder: Location,
    value: str,
    kind: Literal["local", "url"],
    *,
    template: bool,
    resolver: _Resolver | None = None,
) -> Location | Pattern | None:
    """Where a path field's value points, if that is not inside ``folder`` (else None).

    A store must lie strictly inside the folder: the folder itself holds the config.
    A template counts by its fixed part (its array shards lie below that). Checking
    many values, pass one ``resolver`` (see :func:`new_resolver`).
    """
    where: Location | Pattern
    if template and CHUNK_PLACEHOLDER in value:
        where = pattern_location(value, kind, 1, resolver)
    else:
        where = value_location(value, kind, resolver)
    if where.space != folder.space:
        return where
    size = len(folder.parts)
    if isinstance(where, Pattern):
        inside = where.fixed[:size] == folder.parts
    else:
        inside = len(where.parts) > size and where.parts[:size] == folder.parts
    return None if inside else where


def _spec_locations(spec: Mapping[str, Any], resolver: _Resolver) -> list[Location]:
    """The locations a store config names (none for a type that is not registered)."""
    try:
        store_type = get_store_type(str(spec.get("type")), ("type",))
    except ConfigError:  # raised again, naming the field, when the store is made
        return []
    return [
        value_location(spec[name], store_type.path_kind, resolver)
        for name in store_type.path_fields
        if isinstance(spec.get(name), str)
    ]


def store_location(store: Store, resolver: _Resolver | None = None) -> Location:
    """Where ``store`` keeps its keys (its identity if it has no place of its own)."""
    resolver = resolver or _Resolver()
    place = facts_of(store).place
    if place is not None:
        kind, value = place
        return resolver.local(value) if kind == "local" else value_location(value, kind, resolver)
    while isinstance(store, WrapperStore):
        store = store._store
    if isinstance(store, MemoryStore):  # two views of one dict are one location
        return Location("", (), store._store_dict, str(store))
    return Location("", (), store, f"{type(store).__name__} {store}")


# -------------------------------------------------------------------- members


# Not frozen, like Location: a layout with 10^6 explicit array shards makes 10^6 of
# each, and a frozen dataclass takes several times longer to make. Never changed.
@dataclass(eq=False, slots=True)
class Member:
    """One store (or array-shard template) of a layout, and where the layout names it.

    Attributes
    ----------
    where
        The path of its entry in the layout, as in a config: ``("base",)``,
        ``("mounts", "people")``, ``("array_shards", "t")`` (the template),
        ``("array_shards", "t", "shards", "3")`` (an explicit array shard),
        ``("mounts", "sub", "base")`` (inside a mounted ShardedStore).
    location
        Its location, or the pattern of a template's.
    array
        The ``where`` of the array-shard entry it belongs to, if any.
    chunk_index
        The array shard it is (None: the base, a mount, or every array shard).
    collapsed
        For a template whose ``{chunk}`` does not survive normalization: its text.
    """

    where: tuple[str, ...]
    location: Location | Pattern
    array: tuple[str, ...] | None = None
    chunk_index: str | None = None
    collapsed: str | None = None


def member_name(member: Member) -> str:
    """A member as people name it: ``base``, ``mount 'people'``, ``base in mount 'sub'``."""
    where, names, i = member.where, [], 0
    while i < len(where):
        if where[i] == "mounts":
            names.append(f"mount {where[i + 1]!r}")
            i += 2
        elif where[i] == "array_shards":
            path, i = where[i + 1], i + 2
            if where[i : i + 1] == ("shards",):
                names.append(f"array shard {path!r} chunk {where[i + 1]}")
                i += 2
            elif member.chunk_index is not None and i == len(where):
                names.append(f"array shard {path!r} chunk {member.chunk_index}")
            else:
                names.append(f"array shards of {path!r}")
        else:
            names.append(where[i])
            i += 1
    return " in ".join(reversed(names))


def _sample_indices(dims: int) -> tuple[str, str]:
    """Two distinct chunk indices of ``dims`` parts: ``0``/``1``, ``0.0``/``1.1``."""
    return ".".join("0" * dims), ".".join("1" * dims)


def _store_members(
    store: Store,
    where: tuple[str, ...],
    resolver: _Resolver,
    array: tuple[str, ...] | None = None,
    chunk_index: str | None = None,
) -> Iterator[Member | ExplicitShards]:
    if isinstance(store, Layered):
        # A mounted layout contributes every one of its own locations.
        parts = store.parts
        yield from _layout_members(parts.base, parts.mounts, parts.array_shards, where, resolver)
    else:
        yield Member(where, store_location(store, resolver), array, chunk_index)


def _template_members(
    template: Mapping[str, Any], dims: int, where: tuple[str, ...], resolver: _Resolver
) -> Iterator[Member]:
    try:
        store_type = get_store_type(str(template.get("type")), ("type",))
    except ConfigError:  # raised again, naming the field, when a shard is made
        return
    values = [
        template[name] for name in store_type.path_fields if isinstance(template.get(name), str)
    ]
    kind = store_type.path_kind
    with_placeholder = [value for value in values if CHUNK_PLACEHOLDER in value]
    for value in with_placeholder:
        found = pattern_location(value, kind, dims, resolver)
        collapsed = None if isinstance(found, Pattern) else value
        yield Member(where, found, where, None, collapsed)
    if values and not with_placeholder:  # lost on the way, e.g. by resolving '..'
        yield Member(where, value_location(values[0], kind, resolver), where, None, values[0])


@dataclass(eq=False, slots=True)
class ExplicitShards:
    """Explicit array shards of one array located by path, kept compact.

    A layout may list 10^6 explicit array shards (``map_shards`` output): they are kept
    as lists of strings and tuples, which the garbage collector stops tracking, and a
    :class:`Member` is made only for a shard an error names.

    Attributes
    ----------
    array
        The ``where`` of the array-shard entry (``("array_shards", "t")``).
    indices, spaces, parts
        The chunk index and the location's space and parts of each shard, in order.
    """

    array: tuple[str, ...]
    indices: list[str] = field(default_factory=list)
    spaces: list[str] = field(default_factory=list)
    parts: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, index: str, space: str, parts: tuple[str, ...]) -> None:
        self.indices.append(index)
        self.spaces.append(space)
        self.parts.append(parts)

    def member(self, number: int) -> Member:
        """The shard ``number`` as a Member."""
        index = self.indices[number]
        location = Location(self.spaces[number], self.parts[number])
        return Member((*self.array, "shards", index), location, self.array, index)


def _explicit_members(
    shards: Mapping[str, Mapping[str, Any]], where: tuple[str, ...], resolver: _Resolver
) -> Iterator[ExplicitShards]:
    """The explicit array shards of a template factory (as ``_spec_locations`` finds them).

    The store type is looked up once per type, not once per shard.
    """
    fields: dict[object, tuple[tuple[str, ...], Literal["local", "url"]]] = {}
    group = ExplicitShards(where)
    for index, spec in shards.items():
        kind = spec.get("type")
        found = fields.get(kind)
        if found is None:
            try:
                store_type = get_store_type(str(kind), ("type",))
            except ConfigError:  # raised again, naming the field, when the store is made
                found = fields[kind] = ((), "local")
            else:
                found = fields[kind] = (store_type.path_fields, store_type.path_kind)
        names, path_kind = found
        for name in names:
            value = spec.get(name)
            if isinstance(value, str):
                if path_kind == "local":
                    group.add(index, LOCAL, resolver.local_parts(value or "."))
                else:
                    location = value_location(value, path_kind, resolver)
                    group.add(index, location.space, location.parts)
    if group.indices:
        yield group


def _stores_members(
    stores: Mapping[str, Store], where: tuple[str, ...], resolver: _Resolver
) -> Iterator[Member | ExplicitShards]:
    """The array shards a transform returned, in order; those with a path kept compact."""
    group = ExplicitShards(where)
    for index, store in stores.items():
        location = None
        if not isinstance(store, Layered):
            location = store_location(store, resolver)
            if location.token is None:
                group.add(index, location.space, location.parts)
                continue
        if group.indices:
            yield group
            group = ExplicitShards(where)
        if location is not None:
            yield Member((*where, "shards", index), location, where, index)
        else:
            yield from _store_members(store, (*where, "shards", index), resolver, where, index)
    if group.indices:
        yield group


def _factory_members(
    factory: object, dims: int, where: tuple[str, ...], resolver: _Resolver
) -> Iterator[Member | ExplicitShards]:
    if isinstance(factory, ArrayShardDirectoryFactory):
        prefix = os.fspath(factory.prefix)
        pattern = Pattern(LOCAL, resolver.local(prefix).parts, (f"{CHUNK_PLACEHOLDER}.zarr",), dims)
        yield Member(where, pattern, where)
    elif isinstance(factory, ArrayShardTemplateFactory):
        if factory.template is not None:
            yield from _template_members(factory.template, dims, where, resolver)
        yield from _explicit_members(factory.shards, where, resolver)
    elif isinstance(factory, ArrayShardStoresFactory):
        yield from _stores_members(factory.stores, where, resolver)
        if factory.fallback is not None:
            yield from _factory_members(factory.fallback, dims, where, resolver)
    elif callable(factory):
        # Any other callable: what it makes for two distinct chunk indices.
        for index in _sample_indices(dims):
            try:
                store = factory(index)
            except Exception:  # an index it does not serve fails again when it is used
                continue
            if isinstance(store, Store):
                yield from _store_members(store, where, resolver, where, index)


def _layout_members(
    base: Store,
    mounts: Mapping[str, Store],
    arrays: Mapping[str, tuple[int, object]],
    prefix: tuple[str, ...],
    resolver: _Resolver,
) -> Iterator[Member | ExplicitShards]:
    yield from _store_members(base, (*prefix, "base"), resolver)
    for path, store in mounts.items():
        yield from _store_members(store, (*prefix, "mounts", path), resolver)
    for path, (dims, factory) in arrays.items():
        yield from _factory_members(factory, dims, (*prefix, "array_shards", path), resolver)


def layout_members(
    base: Store, mounts: Mapping[str, Store], arrays: Mapping[str, tuple[int, object]]
) -> list[Member | ExplicitShards]:
    """Every store of a layout (mounted layouts included) with its location, in order.

    Explicit array shards located by path come in compact groups.
    """
    return list(_layout_members(base, mounts, arrays, (), _Resolver()))


# -------------------------------------------------------------------- overlap


@functools.lru_cache(maxsize=256)
def _part_regex(part: str, dims: int) -> re.Pattern[str]:
    index = _INDEX_PART + rf"(?:\.{_INDEX_PART}){{{dims - 1}}}"
    pieces = part.split(CHUNK_PLACEHOLDER)
    # Every {chunk} in a part is replaced by the same chunk index.
    regex = re.escape(pieces[0]) + f"(?P<index>{index})"
    regex += "".join(f"{re.escape(piece)}(?P=index)" for piece in pieces[1:-1])
    return re.compile(regex + re.escape(pieces[-1]))


Edges = list[list[tuple[frozenset[str] | None, int]]]


@functools.lru_cache(maxsize=256)
def _automaton(part: str, dims: int) -> tuple[Edges, int]:
    """A part's names as an automaton (edges; None is an empty move) and its end state."""
    edges: Edges = [[]]

    def new() -> int:
        edges.append([])
        return len(edges) - 1

    current = 0
    pieces = part.split(CHUNK_PLACEHOLDER)
    for number, piece in enumerate(pieces):
        for char in piece:
            state = new()
            edges[current].append((frozenset(char), state))
            current = state
        if number == len(pieces) - 1:
            break
        for dim in range(dims):  # a chunk index: dims numbers joined by '.'
            zero, digits, end = new(), new(), new()
            edges[current] += [(frozenset("0"), zero), (_NONZERO, digits)]
            edges[digits].append((_DIGITS, digits))
            edges[zero].append((None, end))
            edges[digits].append((None, end))
            current = end
            if dim < dims - 1:
                current = new()
                edges[end].append((frozenset("."), current))
    return edges, current


def _closure(edges: Edges, states: set[int]) -> frozenset[int]:
    todo, seen = list(states), set(states)
    while todo:
        for label, target in edges[todo.pop()]:
            if label is None and target not in seen:
                seen.add(target)
                todo.append(target)
    return frozenset(seen)


def _patterns_meet(a: str, a_dims: int, b: str, b_dims: int) -> bool:
    """Whether two template parts can name the same file or directory."""
    (edges_a, end_a), (edges_b, end_b) = _automaton(a, a_dims), _automaton(b, b_dims)
    alphabet = {c for edges in (edges_a, edges_b) for out in edges for s, _ in out if s for c in s}
    start = (_closure(edges_a, {0}), _closure(edges_b, {0}))
    todo, seen = [start], {start}
    while todo:
        states_a, states_b = todo.pop()
        if end_a in states_a and end_b in states_b:
            return True
        for char in alphabet:
            next_a = {t for s in states_a for label, t in edges_a[s] if label and char in label}
            next_b = {t for s in states_b for label, t in edges_b[s] if label and char in label}
            if next_a and next_b:
                pair = (_closure(edges_a, next_a), _closure(edges_b, next_b))
                if pair not in seen:
                    seen.add(pair)
                    todo.append(pair)
    return False


def _parts(found: Location | Pattern) -> list[tuple[str, int]]:
    """Path parts with the dims of those holding ``{chunk}`` (0: a plain name)."""
    if isinstance(found, Location):
        return [(part, 0) for part in found.parts]
    rest = [(part, found.dims if CHUNK_PLACEHOLDER in part else 0) for part in found.rest]
    return [(part, 0) for part in found.fixed] + rest


def _parts_meet(a: tuple[str, int], b: tuple[str, int]) -> bool:
    (text_a, dims_a), (text_b, dims_b) = a, b
    if not dims_a and not dims_b:
        return text_a == text_b
    if not dims_a:
        return _part_regex(text_b, dims_b).fullmatch(text_a) is not None
    if not dims_b:
        return _part_regex(text_a, dims_a).fullmatch(text_b) is not None
    return _patterns_meet(text_a, dims_a, text_b, dims_b)


def _rendered_index(pattern: Pattern, location: Location) -> str | None:
    """The chunk index ``pattern`` matches ``location`` (or its parent) with, if any."""
    for part, name in zip(pattern.rest, location.parts[len(pattern.fixed) :], strict=False):
        if CHUNK_PLACEHOLDER in part:
            match = _part_regex(part, pattern.dims).fullmatch(name)
            return None if match is None else match["index"]
    return None


def _against_pattern(member: Member, pattern_member: Member) -> str:
    """How a location under a template's fixed part relates to the template."""
    location, pattern = member.location, pattern_member.location
    assert isinstance(location, Location)
    assert isinstance(pattern, Pattern)
    index = _rendered_index(pattern, location)
    size = len(pattern.fixed) + len(pattern.rest)
    if len(location.parts) == size:
        return f"is where chunk index {index} goes in"
    if len(location.parts) > size:
        return f"lies inside the store of chunk index {index} of"
    return f"contains the store of chunk index {index} of"


Place = tuple[str, tuple[str, ...]]  # (space, parts) of a path location
_PATH = id(None)  # the token id of every location that is a path


class _Concrete:
    """The concrete locations of a layout, numbered in layout order, in flat lists.

    Members and compact groups of explicit array shards alike; :meth:`member` makes
    the Member an error names.
    """

    def __init__(self) -> None:
        self.spaces: list[str] = []
        self.parts: list[tuple[str, ...]] = []
        self.tokens: list[int] = []
        self.arrays: list[tuple[str, ...] | None] = []
        self.indices: list[str | None] = []
        self._owners: list[Member | ExplicitShards] = []
        self._numbers: list[int] = []

    def __len__(self) -> int:
        return len(self.parts)

    def add(self, member: Member) -> None:
        location = cast("Location", member.location)
        self.spaces.append(location.space)
        self.parts.append(location.parts)
        self.tokens.append(id(location.token))
        self.arrays.append(member.array)
        self.indices.append(member.chunk_index)
        self._owners.append(member)
        self._numbers.append(0)

    def add_group(self, group: ExplicitShards, template: Pattern | None) -> None:
        """The shards of ``group``, but those where ``template`` would put them.

        Such a shard adds nothing to check: whatever overlaps it overlaps the template.
        """
        indices, spaces, parts = group.indices, group.spaces, group.parts
        kept: Sequence[int] = range(len(indices))
        if template is not None:
            kept = [
                number
                for number in kept
                if not _rendered_at(template, indices[number], spaces[number], parts[number])
            ]
        if len(kept) < len(indices):
            indices = [indices[number] for number in kept]
            spaces = [spaces[number] for number in kept]
            parts = [parts[number] for number in kept]
        # In bulk: a group may hold 10^6 shards.
        count = len(kept)
        self.spaces += spaces
        self.parts += parts
        self.tokens += [_PATH] * count
        self.arrays += [group.array] * count
        self.indices += indices
        self._owners += [group] * count
        self._numbers += kept

    def member(self, number: int) -> Member:
        owner = self._owners[number]
        return owner if isinstance(owner, Member) else owner.member(self._numbers[number])

    def same_shard(self, a: int, b: int) -> bool:
        """Whether ``a`` and ``b`` are one array shard described twice (an override)."""
        array, index, other = self.arrays[a], self.indices[a], self.indices[b]
        return (
            array is not None and array == self.arrays[b] and index is not None and index == other
        )

    def rendered_by(self, member: Member, number: int) -> bool:
        """Whether ``number`` is where the template ``member`` puts that shard."""
        index = self.indices[number]
        return (
            member.array is not None
            and member.array == self.arrays[number]
            and index is not None
            and _rendered_at(
                cast("Pattern", member.location), index, self.spaces[number], self.parts[number]
            )
        )


def _rendered_at(pattern: Pattern, index: str, space: str, parts: tuple[str, ...]) -> bool:
    """Whether ``pattern`` puts the shard of chunk ``index`` at (space, parts)."""
    # Cheap tests first: most explicit shards lie elsewhere (a zip for a directory).
    if len(parts) != len(pattern.fixed) + len(pattern.rest) or parts[-1] != pattern.rest[
        -1
    ].replace(CHUNK_PLACEHOLDER, index):
        return False
    rendered = pattern.render(index)
    return rendered.space == space and rendered.parts == parts


class _Nesting:
    """Which locations contain a place: O(1) per lookup once its parent was seen.

    Array shards share a few parent directories, so the locations at or above a
    parent are worked out once per parent, not once per shard and path component.
    """

    def __init__(self, seen: Mapping[str, Mapping[tuple[str, ...], int]]) -> None:
        self._seen = seen  # space -> parts -> number of the first location there
        self._chains: dict[Place, tuple[int, ...]] = {}

    def at_or_above(self, space: str, parts: tuple[str, ...]) -> tuple[int, ...]:
        """Numbers of the locations at ``parts`` or at a prefix of it, the shortest first."""
        chain = self._chains.get((space, parts))
        if chain is not None:
            return chain
        size, missing = len(parts), []
        while size >= 0 and (space, parts[:size]) not in self._chains:
            missing.append(size)
            size -= 1
        chain = self._chains[(space, parts[:size])] if size >= 0 else ()
        seen = self._seen.get(space, {})
        for size in reversed(missing):
            here = seen.get(parts[:size])
            if here is not None:
                chain = (*chain, here)
            self._chains[(space, parts[:size])] = chain
        return chain


def _pattern_candidates(pattern: Pattern, below: Mapping[Place, list[int]]) -> Iterator[int]:
    """Numbers of the concrete locations lying strictly below a template's fixed part."""
    size = len(pattern.fixed)
    for (space, parent), numbers in below.items():
        if space == pattern.space and len(parent) >= size and parent[:size] == pattern.fixed:
            yield from numbers


def _overlap(first: Member, second: Member | None, relation: str) -> LocationOverlapError:
    return LocationOverlapError(first, second, relation, member_name)


def find_overlap(members: Sequence[Member | ExplicitShards]) -> LocationOverlapError | None:
    """The first two members whose locations are the same or nested (None: none do).

    O(members): locations are grouped by parent directory, never compared pairwise.
    """
    singles = [m for m in members if isinstance(m, Member)]
    patterns = [m for m in singles if isinstance(m.location, Pattern)]
    for member in singles:
        if member.collapsed is not None:
            return _overlap(
                member,
                None,
                f"loses {CHUNK_PLACEHOLDER} in {member.collapsed!r} once '..' is resolved, "
                "so every chunk index maps to this one store",
            )
    templates = {m.array: cast("Pattern", m.location) for m in patterns}
    concrete = _Concrete()
    for item in members:
        if isinstance(item, ExplicitShards):
            concrete.add_group(item, templates.get(item.array))
        elif isinstance(item.location, Location):
            pattern, index, location = templates.get(item.array), item.chunk_index, item.location
            if (
                pattern is None
                or index is None
                or not _rendered_at(pattern, index, location.space, location.parts)
                or location.token is not None
            ):
                concrete.add(item)
    for member in patterns:
        pattern = cast("Pattern", member.location)
        first, second = (pattern.render(i) for i in _sample_indices(pattern.dims))
        if first.parts[: len(second.parts)] == second.parts[: len(first.parts)]:
            return _overlap(member, None, "renders the same or nested stores for two chunk indices")
    # Concrete locations: the same, or one inside another (its parent chain).
    all_parts = concrete.parts
    seen: dict[str, dict[tuple[str, ...], int]] = {}  # paths: space -> parts -> number
    identities: dict[int, int] = {}  # stores located by identity: token id -> number
    below: dict[Place, list[int]] = {}  # parent place -> numbers of the paths in it
    for number, (space, parts, token) in enumerate(
        zip(concrete.spaces, all_parts, concrete.tokens, strict=True)
    ):
        if token == _PATH:
            paths = seen.get(space)
            if paths is None:
                paths = seen[space] = {}
            earlier = paths.setdefault(parts, number)
            if parts:
                below.setdefault((space, parts[:-1]), []).append(number)
        else:
            earlier = identities.setdefault(token, number)
        if earlier != number and not concrete.same_shard(number, earlier):
            return _overlap(
                concrete.member(number), concrete.member(earlier), "is the same location as"
            )
    # Inside another: per parent directory, the first location (in layout order) inside
    # a location that is not the same array shard.
    nesting = _Nesting(seen)
    inside: tuple[int, int] | None = None
    for (space, parent), numbers in below.items():
        outers = nesting.at_or_above(space, parent)
        for number in numbers if outers else ():
            if inside is not None and number > inside[0]:
                break
            outer = next((o for o in outers if not concrete.same_shard(number, o)), None)
            if outer is not None:
                inside = (number, outer)
                break
    if inside is not None:
        number, outer = inside
        return _overlap(concrete.member(number), concrete.member(outer), "lies inside")
    # Templates against concrete locations: those containing the template's fixed
    # part, and those below it that a rendering of the template meets (the first in
    # path order is reported).
    for member in patterns:
        pattern = cast("Pattern", member.location)
        for outer in nesting.at_or_above(pattern.space, pattern.fixed):
            if not concrete.rendered_by(member, outer):
                return _overlap(member, concrete.member(outer), "puts its array shards inside")
        size = len(pattern.fixed)
        rest = _parts(pattern)[size:]
        met: tuple[tuple[str, ...], int] | None = None
        for number in _pattern_candidates(pattern, below):
            parts = all_parts[number]
            if (met is None or (parts, number) < met) and not concrete.rendered_by(member, number):
                names = [(part, 0) for part in parts[size:]]
                if all(_parts_meet(a, b) for a, b in zip(names, rest, strict=False)):
                    met = (parts, number)
        if met is not None:
            other = concrete.member(met[1])
            return _overlap(other, member, _against_pattern(other, member))
    # Templates against each other.
    for number, member in enumerate(patterns):
        for other_member in patterns[number + 1 :]:
            a, b = member.location, other_member.location
            if member.array == other_member.array or a.space != b.space:
                continue
            if all(_parts_meet(x, y) for x, y in zip(_parts(a), _parts(b), strict=False)):
                return _overlap(
                    other_member, member, "can render the same location as (or one nested with)"
                )
    return None


_CHECKED: ContextVar[bool] = ContextVar("shardedstore_layout_checked", default=False)


@contextmanager
def layout_checked() -> Iterator[None]:
    """Within this block, :func:`check_layout` trusts the layouts it is given.

    For a layout checked already: a read-only view of a store, a store unpickled from
    one that was built (and checked) where it was pickled. The check costs O(stores),
    about 10 s for 10^6 explicit array shards, and xarray asks for a read-only view on
    every open.
    """
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def check_layout(
    base: Store, mounts: Mapping[str, Store], arrays: Mapping[str, tuple[int, object]]
) -> None:
    """Refuse a layout two of whose stores are the same or nested.

    Does nothing within :func:`layout_checked`.

    Raises
    ------
    LocationOverlapError
        Naming both stores and their locations.
    """
    if _CHECKED.get():
        return
    error = find_overlap(layout_members(base, mounts, arrays))
    if error is not None:
        raise error
