"""Array-shard factories: how an array shard's store is made from its chunk index.

A factory is any callable ``factory(chunk_index) -> Store``. Factories may also say
which shards already exist (``existing_chunk_indices``), which lets a store list
array shards without knowing the array's shape, and whether the stores they make
support zarr's synchronous store protocols (``supports_sync``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from zarr.abc.store import Store, SupportsSyncStore
from zarr.storage import LocalStore, MemoryStore

from shardedstore.backends.registry import SHARDED, StoreType, get_store_type
from shardedstore.errors import LayoutError

__all__ = [
    "CHUNK_PLACEHOLDER",
    "ArrayShardDirectoryFactory",
    "ArrayShardFactory",
    "ArrayShardSpec",
    "ArrayShardStoresFactory",
    "ArrayShardTemplateFactory",
    "ListableArrayShardFactory",
    "array_shard_directory_store",
    "array_shard_template_store",
    "factory_supports_sync",
    "factory_text",
    "make_array_shard",
    "sample_chunk_indices",
]

_CHUNK_INDEX_PATTERN = r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*"
_CHUNK_INDEX = re.compile(f"^{_CHUNK_INDEX_PATTERN}$")

CHUNK_PLACEHOLDER = "{chunk}"
"""Replaced by the chunk index (``3``, ``3.0``) in an array-shard store template."""


@runtime_checkable
class ArrayShardFactory(Protocol):
    """Makes the store of the array shard at a chunk index such as ``"3"`` or ``"3.0"``."""

    def __call__(self, chunk_index: str, /) -> Store: ...


@runtime_checkable
class ListableArrayShardFactory(ArrayShardFactory, Protocol):
    """A factory that can tell which array shards exist (blocking I/O is fine).

    ``existing_chunk_indices()`` may return None when it cannot tell this time; the
    store then probes every index within the array's shape.
    """

    def existing_chunk_indices(self) -> Iterable[str] | None: ...


ArrayShardSpec = tuple[int, ArrayShardFactory]
"""``(dims, factory)``: shard an array on its first ``dims`` chunk indices."""


@runtime_checkable
class _Located(Protocol):
    def location_text(self) -> str: ...


def factory_text(factory: object) -> str:
    """Where an array-shard factory puts its shards (its path template), for messages."""
    return factory.location_text() if isinstance(factory, _Located) else type(factory).__name__


def is_chunk_index(text: str) -> bool:
    """Whether ``text`` is a chunk index as used in shard names (``"3"``, ``"3.10"``)."""
    return _CHUNK_INDEX.match(text) is not None


def make_array_shard(factory: ArrayShardFactory, path: str, chunk_index: str) -> Store:
    """``factory(chunk_index)``, the store of the array shard; LayoutError if not a store."""
    store = factory(chunk_index)
    if not isinstance(store, Store):
        raise LayoutError(
            f"array shard {path!r}: the factory returned {type(store).__name__} for chunk "
            f"index {chunk_index!r}; it must return a zarr store"
        )
    return store


def factory_supports_sync(factory: object) -> bool:
    """Whether the stores a factory makes implement zarr's sync store protocols."""
    return bool(getattr(factory, "supports_sync", False))


@dataclass(frozen=True)
class ArrayShardDirectoryFactory:
    """One :class:`zarr.storage.LocalStore` per array shard: ``{prefix}/{chunk_index}.zarr``.

    Create it with :func:`array_shard_directory_store`.

    Attributes
    ----------
    prefix
        Directory holding the array shards.
    read_only
        Open the shard stores read-only.
    """

    prefix: str
    read_only: bool = False
    supports_sync: bool = field(default=True, init=False, repr=False, compare=False)

    def __call__(self, chunk_index: str, /) -> LocalStore:
        return LocalStore(self.path_for(chunk_index), read_only=self.read_only)

    def location_text(self) -> str:
        """Where the shards are: ``PREFIX/{chunk}.zarr``."""
        return f"{self.prefix}/{CHUNK_PLACEHOLDER}.zarr"

    def path_for(self, chunk_index: str) -> str:
        """The directory of the array shard at ``chunk_index``."""
        return os.path.join(self.prefix, f"{chunk_index}.zarr")

    def existing_chunk_indices(self) -> list[str]:
        """Chunk indices of the shard directories present under ``prefix``."""
        found = []
        try:
            with os.scandir(self.prefix) as entries:  # d_type: no stat per shard
                for entry in entries:
                    index = entry.name[: -len(".zarr")]
                    if entry.name.endswith(".zarr") and is_chunk_index(index) and entry.is_dir():
                        found.append(index)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return found


def array_shard_directory_store(
    prefix: str | os.PathLike[str], **kwargs: Any
) -> ArrayShardDirectoryFactory:
    """Array shards as directories: ``LocalStore(f"{prefix}/{chunk_index}.zarr")``.

    Parameters
    ----------
    prefix
        Directory that will hold one ``{chunk_index}.zarr`` directory per array shard.
        Shards are created lazily, on the first chunk written to them.
    **kwargs
        Options for each :class:`zarr.storage.LocalStore` (``read_only``).

    Returns
    -------
    ArrayShardDirectoryFactory
        A picklable, comparable factory.

    Examples
    --------
    >>> factory = array_shard_directory_store("array_shards")
    >>> factory("3")
    LocalStore('file://array_shards/3.zarr')
    """
    unknown = set(kwargs) - {"read_only"}
    if unknown:
        raise TypeError(
            f"array_shard_directory_store() got unexpected option(s) {sorted(unknown)}; "
            "LocalStore shards accept only read_only"
        )
    return ArrayShardDirectoryFactory(str(Path(prefix)), **kwargs)


def _substitute(spec: Mapping[str, Any], fields: Iterable[str], chunk_index: str) -> dict[str, Any]:
    filled = dict(spec)
    for name in fields:
        value = filled.get(name)
        if isinstance(value, str):
            filled[name] = value.replace(CHUNK_PLACEHOLDER, chunk_index)
    return filled


def _template_type(template: Mapping[str, Any], at: tuple[str | int, ...]) -> StoreType:
    kind = template.get("type")
    if kind == SHARDED:
        raise LayoutError(
            f"{'.'.join(map(str, at)) or 'template'}: an array-shard template cannot be a "
            "sharded store; mount a ShardedStore instead"
        )
    store_type = get_store_type(str(kind), (*at, "type"))
    if not any(CHUNK_PLACEHOLDER in str(template.get(name, "")) for name in store_type.path_fields):
        fields = " or ".join(repr(name) for name in store_type.path_fields)
        raise LayoutError(
            f"array-shard template {dict(template)!r}: put {CHUNK_PLACEHOLDER} in its {fields} "
            f"so that each array shard gets its own store, e.g. 'shards/{CHUNK_PLACEHOLDER}.zarr'"
        )
    return store_type


@dataclass(frozen=True)
class ArrayShardTemplateFactory:
    """Array shards from a store config with ``{chunk}`` in its path.

    ``{"type": "zip", "path": "shards/{chunk}.zarr.zip"}`` makes the array shard at
    chunk index ``3`` a ``ZipStore("shards/3.zarr.zip")``. Any registered store type
    works (``local``, ``zip``, ``fsspec``, ``obstore``, plugins). Create it with
    :func:`array_shard_template_store`.

    Attributes
    ----------
    template
        The store config of every array shard, with ``{chunk}`` in its path field, or
        None when only the explicit ``shards`` exist (layouts from shardedstore 0.3.x).
    shards
        Explicit store configs for some chunk indices, overriding the template.
    """

    template: Mapping[str, Any] | None
    shards: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def location_text(self) -> str:
        """Where the shards are: the template's path or URL."""
        template = self.template
        if template is None:
            return f"{len(self.shards)} explicit shard(s)"
        return str(template.get("path") or template.get("root") or template.get("url"))

    def spec_for(self, chunk_index: str) -> dict[str, Any] | None:
        """The store config of the array shard at ``chunk_index`` (None: no such shard)."""
        explicit = self.shards.get(chunk_index)
        if explicit is not None:
            return dict(explicit)
        if self.template is None:
            return None
        store_type = get_store_type(str(self.template["type"]), ("type",))
        return _substitute(self.template, store_type.path_fields, chunk_index)

    def __call__(self, chunk_index: str, /) -> Store:
        spec = self.spec_for(chunk_index)
        if spec is None:
            # Without a template only the listed shards exist; any other reads as empty.
            return MemoryStore(read_only=True)
        store_type = get_store_type(str(spec["type"]), ("type",))
        return store_type.from_spec(spec, read_only=False)

    @property
    def supports_sync(self) -> bool:
        """Whether every store this factory makes supports zarr's sync protocols."""
        if self.template is None:
            return False
        # One look-up per store type: a layout may list 10^6 explicit shards.
        kinds = {str(self.template["type"])} | {str(spec["type"]) for spec in self.shards.values()}
        return all(get_store_type(kind, ("type",)).supports_sync for kind in kinds)

    def existing_chunk_indices(self) -> list[str] | None:
        """The explicit shards plus those found where the template points (None: unknown).

        Costs one listing of the directory (or prefix) holding the ``{chunk}`` part, plus
        one listing per shard found when the placeholder is not in the last part
        (``t/{chunk}/data.zarr``): O(shards that exist), whatever the array's shape.
        """
        found = list(self.shards)
        template = self.template
        if template is None:
            return found
        store_type = get_store_type(str(template["type"]), ("type",))
        list_names = getattr(store_type, "list_names", None)
        if list_names is None:
            return None
        for name in store_type.path_fields:
            value = template.get(name)
            if not isinstance(value, str) or CHUNK_PLACEHOLDER not in value:
                continue

            def names_in(parent: str, field: str = name) -> list[str] | None:
                result: list[str] | None = list_names({**template, field: parent}, field)
                return result

            indices = _list_template(names_in, value.rstrip("/"))
            if indices is None:
                return None
            return sorted({*found, *indices})
        return None


def _segment_regex(segment: str) -> re.Pattern[str]:
    return re.compile(
        "^"
        + re.escape(segment).replace(re.escape(CHUNK_PLACEHOLDER), f"({_CHUNK_INDEX_PATTERN})")
        + "$"
    )


def _list_template(
    list_names: Callable[[str], list[str] | None], template: str
) -> list[str] | None:
    """Chunk indices whose rendering of ``template`` exists (None: cannot tell)."""
    segments = template.split("/")
    first = next(i for i, part in enumerate(segments) if CHUNK_PLACEHOLDER in part)
    parent = "/".join(segments[:first])
    if not parent or parent.endswith(":"):
        return None
    names = list_names(parent)
    if names is None:
        return None
    regex = _segment_regex(segments[first])
    candidates = []
    for entry in names:
        match = regex.match(entry)
        if match is not None and len(set(match.groups())) == 1:
            candidates.append(match.group(1))
    if first == len(segments) - 1:
        return candidates
    # The placeholder names a directory (t/{chunk}/data.zarr): keep the indices
    # whose full path exists, one listing each.
    existing = []
    for index in candidates:
        leaf_parent, _, leaf = template.replace(CHUNK_PLACEHOLDER, index).rpartition("/")
        listed = list_names(leaf_parent)
        if listed is None:
            return None
        if leaf in listed:
            existing.append(index)
    return existing


_SCAN_LIMIT = 1000
"""Most directory entries :func:`sample_chunk_indices` looks at (10^6 shards are fine)."""


def _scan(directory: str, regex: re.Pattern[str], limit: int) -> list[str]:
    """Up to ``limit`` chunk indices named in ``directory``, reading it only that far."""
    found: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for looked, entry in enumerate(entries):
                match = regex.match(entry.name)
                if match is not None and len(set(match.groups())) == 1:
                    found.append(match.group(1))
                    if len(found) == limit:
                        break
                if looked >= _SCAN_LIMIT:
                    break
    except (FileNotFoundError, NotADirectoryError):
        return []
    return found


def _local_template_sample(template: str, limit: int) -> list[str]:
    segments = template.rstrip("/").split("/")
    first = next(i for i, part in enumerate(segments) if CHUNK_PLACEHOLDER in part)
    parent = "/".join(segments[:first]) or "."
    # Any number of parts: a shard written with other dims is what is looked for.
    return _scan(parent, _segment_regex(segments[first]), limit)


def sample_chunk_indices(
    factory: object, limit: int, *, list_remote: bool = False
) -> list[str] | None:
    """A few chunk indices of array shards that exist, found cheaply, with any number of parts.

    Opening a layout compares them with its ``dims``. Local directories are read only
    as far as ``limit`` names (or a thousand entries), so the cost does not grow with
    the number of shards; object stores are listed only with ``list_remote`` (a whole
    listing, as ``validate`` does), else None.

    Parameters
    ----------
    factory
        An array-shard factory.
    limit
        Most indices returned.
    list_remote
        List a template at a URL (all of it) instead of giving up.

    Returns
    -------
    list of str or None
        Chunk indices such as ``"3"`` or ``"3.0"`` (their number of parts is not
        checked against the layout's dims); None when they cannot be found cheaply.
    """
    if isinstance(factory, ArrayShardDirectoryFactory):
        return _scan(factory.prefix, _segment_regex(f"{CHUNK_PLACEHOLDER}.zarr"), limit)
    if not isinstance(factory, ArrayShardTemplateFactory) or factory.template is None:
        return None  # explicit shards only: their names were checked with the config
    template = factory.template
    store_type = get_store_type(str(template["type"]), ("type",))
    for name in store_type.path_fields:
        value = template.get(name)
        if not isinstance(value, str) or CHUNK_PLACEHOLDER not in value:
            continue
        if store_type.path_kind == "local":
            return _local_template_sample(value, limit)
        if not list_remote:
            return None
        listed = factory.existing_chunk_indices()
        return None if listed is None else listed[:limit]
    return None


def array_shard_template_store(
    template: Mapping[str, Any], *, shards: Mapping[str, Mapping[str, Any]] | None = None
) -> ArrayShardTemplateFactory:
    """Array shards from a store config template, e.g. one zip per array shard.

    Parameters
    ----------
    template
        A store config as written in a layout config (``{"type": ..., ...}``) with
        ``{chunk}`` in its path field: ``root`` (local), ``path`` (zip) or ``url``
        (fsspec, obstore).
    shards
        Explicit store configs for some chunk indices, overriding the template.

    Returns
    -------
    ArrayShardTemplateFactory
        A picklable, comparable, listable factory.

    Raises
    ------
    LayoutError
        If the template names a sharded store or has no ``{chunk}`` in its path.
    ConfigError
        If it names an unknown store type.

    Examples
    --------
    >>> factory = array_shard_template_store({"type": "zip", "path": "t/{chunk}.zarr.zip"})
    >>> factory("3")
    ZipStore('...t/3.zarr.zip')
    """
    template = dict(template)
    _template_type(template, ())
    overrides = {index: dict(spec) for index, spec in (shards or {}).items()}
    for index in overrides:
        if not is_chunk_index(index):
            raise LayoutError(
                f"array shard override {index!r}: expected a chunk index such as '3' or '3.0'"
            )
    return ArrayShardTemplateFactory(template, overrides)


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
        return all(isinstance(s, SupportsSyncStore) for s in self.stores.values()) and (
            self.fallback is None or factory_supports_sync(self.fallback)
        )

    def location_text(self) -> str:
        """Where the shards are: the stores returned, and the fallback's place."""
        made = f"{len(self.stores)} store(s) made by a transform"
        return made if self.fallback is None else f"{made}, then {factory_text(self.fallback)}"

    def existing_chunk_indices(self) -> list[str] | None:
        found = set(self.stores)
        lister = getattr(self.fallback, "existing_chunk_indices", None)
        if lister is not None:
            listed = lister()
            if listed is None:
                return None
            found.update(listed)
        return sorted(found)
