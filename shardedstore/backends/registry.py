"""The store types a layout config may name, and how each maps to and from JSON.

A config is data, not code: it can only name a type registered here (``local``,
``zip``, ``fsspec``, ``obstore``) or by an installed package through the
``shardedstore.stores`` entry point group, in the way fsspec registers protocols.
Nothing a config says is ever imported or called by name. The ``sharded`` type (a
nested ShardedStore) is handled by the config module itself.

Store types see paths exactly as the config layer hands them over: resolving relative
paths against the config's location, and writing them relative, happens in
``_config.py`` for the fields each type lists in ``path_fields``.
"""

from __future__ import annotations

import functools
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol, runtime_checkable

from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore, MemoryStore, WrapperStore, ZipStore

from shardedstore.backends.remotezip import RemoteZipStore
from shardedstore.backends.timeouts import (
    call_within,
    fsspec_call,
    fsspec_defaults,
    obstore_defaults,
)
from shardedstore.backends.zips import enable_deflate64
from shardedstore.backends.zipstore import CopyOnWriteZipStore
from shardedstore.errors import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "SHARDED",
    "StoreFacts",
    "StoreType",
    "facts_of",
    "local_root_of",
    "get_store_type",
    "known_type_names",
    "same_store",
    "store_type_for",
]

ENTRY_POINT_GROUP = "shardedstore.stores"
SHARDED = "sharded"

Spec = dict[str, Any]
"""A store's config: a JSON object whose ``type`` names its store type."""


@runtime_checkable
class StoreType(Protocol):
    """How one kind of zarr store is written to and read from a layout config.

    Third-party packages register an instance under the entry point group
    ``shardedstore.stores``; the entry point's name is the ``type`` configs use.

    Attributes
    ----------
    name
        The ``type`` value in configs.
    path_fields
        Fields holding a path or URL. Relative values are resolved against the
        config's location before :meth:`from_spec` sees them, and written relative by
        ``get_config(relative_to=...)``. An array-shard template substitutes
        ``{chunk}`` in these fields.
    path_kind
        ``"local"`` if the path fields are local file paths, ``"url"`` if they are
        URLs (a value without ``scheme://`` is then a local path).
    supports_sync
        Whether the stores made implement zarr's sync store protocols.

    Notes
    -----
    Optional: ``schema`` (a JSON Schema dict the spec is validated against before
    :meth:`from_spec`), ``list_names(spec, field) -> list[str] | None`` (the names in
    the directory ``spec[field]``), which lets array shards made from a template of this
    type be listed without probing every chunk index, and what the store knows of
    itself (:class:`StoreFacts`: ``facts(store)``), for messages, overlap checks, the
    cache and symlink checks; without it they are read from :meth:`to_spec`.
    """

    name: str
    path_fields: tuple[str, ...]
    path_kind: Literal["local", "url"]
    supports_sync: bool

    def handles(self, store: Store) -> bool:
        """Whether ``store`` is of this type."""
        ...

    def to_spec(self, store: Store) -> Spec:
        """The config of ``store`` (without ``type``); raise ConfigError if impossible."""
        ...

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        """A store from its config, with its path fields already resolved."""
        ...


Place = tuple[Literal["local", "url"], str]
"""Where a store keeps its keys: a local path, or a URL."""


@dataclass(frozen=True)
class StoreFacts:
    """What a store says of itself: where it is, and how it is reached.

    Attributes
    ----------
    url
        Where it is, as people write it (``file:///data/x``, ``s3://bucket/path``).
    place
        Where it keeps its keys (``("local", path)`` or ``("url", url)``); None when it
        has no place of its own (in memory).
    remote
        Whether it reads over the network.
    local_root
        ``("directory", path)`` or ``("file", path)`` for a store on local disk (a
        directory, a zip file); None otherwise.
    identity
        A name for its location, the same in every process (a URL and the endpoint
        serving it): what a shared cache keys its entries by.
    """

    url: str
    place: Place | None
    remote: bool = False
    local_root: tuple[Literal["directory", "file"], str] | None = None
    identity: str = ""


@runtime_checkable
class _KnowsFacts(Protocol):
    def facts(self, store: Store) -> StoreFacts: ...


def _fs_protocols(store: FsspecStore) -> tuple[Any, tuple[str, ...]]:
    fs = getattr(store.fs, "sync_fs", store.fs)  # zarr wraps sync filesystems
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    return fs, protocols


def _local_names(directory: str) -> list[str] | None:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


class _OnLocalDisk:
    """What the store types of local paths share."""

    path_kind: Literal["local", "url"] = "local"
    supports_sync = True

    def list_names(self, spec: Mapping[str, Any], field: str) -> list[str] | None:
        return _local_names(spec[field])


class _LocalType(_OnLocalDisk):
    name = "local"
    path_fields: tuple[str, ...] = ("root",)

    def handles(self, store: Store) -> bool:
        return isinstance(store, LocalStore)

    def to_spec(self, store: Store) -> Spec:
        assert isinstance(store, LocalStore)
        return {"root": os.fspath(store.root)}

    def facts(self, store: Store) -> StoreFacts:
        assert isinstance(store, LocalStore)
        root = os.fspath(store.root)
        url = f"file://{root}"
        return StoreFacts(url, ("local", root), False, ("directory", root), url)

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        return LocalStore(spec["root"], read_only=read_only)


class _ZipType(_OnLocalDisk):
    name = "zip"
    path_fields: tuple[str, ...] = ("path",)

    def handles(self, store: Store) -> bool:
        return isinstance(store, ZipStore)

    def to_spec(self, store: Store) -> Spec:
        assert isinstance(store, ZipStore)
        spec: Spec = {"path": os.fspath(store.path)}
        if getattr(store, "_zmode", "r") == "r":
            spec["mode"] = "r"
        if store.compression != zipfile.ZIP_STORED:
            spec["compression"] = store.compression
        if not store.allowZip64:
            spec["allowZip64"] = False
        return spec

    def facts(self, store: Store) -> StoreFacts:
        assert isinstance(store, ZipStore)
        path = os.fspath(store.path)
        return StoreFacts(str(store), ("local", path), False, ("file", path), str(store))

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        enable_deflate64()
        # The mode is the config's; opening a layout read-only makes the store read-only
        # without changing it, so that its config (to_spec) says what it said.
        mode: Literal["r", "a"] = "r" if spec.get("mode") == "r" else "a"
        return CopyOnWriteZipStore(
            spec["path"],
            mode=mode,
            read_only=read_only or mode == "r",
            compression=spec.get("compression", zipfile.ZIP_STORED),
            allowZip64=spec.get("allowZip64", True),
        )


def _json_value(value: object) -> bool:
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list | tuple):
        return all(_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_value(v) for k, v in value.items())
    return False


def _json_options(kind: str, options: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in options.items():
        if not _json_value(value):
            raise ConfigError(
                (kind, key),
                f"option of type {type(value).__name__} cannot be written to JSON; "
                "pass options as plain strings, numbers, booleans, lists or dicts",
            )
    return dict(options)


_ADDED = "_shardedstore_defaults"
"""Attribute of a store made from a config: the options added as defaults (_timeouts),
left out when the store is written back to a config."""


def _without_added(store: object, options: Mapping[str, Any]) -> dict[str, Any]:
    # By name: the clients change the dicts they are given (botocore renames retries).
    added: Mapping[str, Any] = getattr(store, _ADDED, {})
    return {k: v for k, v in options.items() if k not in added}


class _FsspecType:
    name = "fsspec"
    path_fields: tuple[str, ...] = ("url",)
    path_kind: Literal["local", "url"] = "url"
    supports_sync = False

    def handles(self, store: Store) -> bool:
        return isinstance(store, FsspecStore)

    def to_spec(self, store: Store) -> Spec:
        assert isinstance(store, FsspecStore)
        fs, protocols = _fs_protocols(store)
        if "memory" in protocols:
            raise ConfigError(
                (),
                f"{store} lives in this process's memory and cannot be written to a config; "
                "copy it to a persistent store first",
            )
        options = {k: v for k, v in fs.storage_options.items() if k != "asynchronous"}
        options = _without_added(store, options)
        spec: Spec = {"url": fs.unstrip_protocol(store.path)}
        if options:
            spec["storage_options"] = _json_options("storage_options", options)
        return spec

    def facts(self, store: Store) -> StoreFacts:
        assert isinstance(store, FsspecStore)
        fs, protocols = _fs_protocols(store)
        path = str(store.path)
        try:
            url = str(fs.unstrip_protocol(path))
        except Exception:  # a filesystem without protocol info: zarr's own text
            url = str(store)
        options = fs.storage_options
        endpoint = options.get("endpoint_url") or options.get("client_kwargs", {}).get(
            "endpoint_url", ""
        )
        if "memory" in protocols:  # in this process, but with a URL of its own
            return StoreFacts(url, ("url", url), identity=f"fsspec:{url}")
        if {"file", "local"} & set(protocols):
            root = str(fs._strip_protocol(path))
            return StoreFacts(url, ("local", root), False, ("directory", root), url)
        place: Place = ("url", path if "://" in path else url)  # http keeps its URL
        return StoreFacts(url, place, True, None, f"fsspec:{url}@{endpoint}")

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        options = dict(spec.get("storage_options", {}))
        added = fsspec_defaults(spec["url"], options)
        store = FsspecStore.from_url(
            spec["url"], storage_options={**options, **added}, read_only=read_only
        )
        setattr(store, _ADDED, added)
        return store

    def list_names(self, spec: Mapping[str, Any], field: str) -> list[str] | None:
        from fsspec.core import url_to_fs

        url = spec[field]
        fs, path = url_to_fs(url, **spec.get("storage_options", {}))
        try:
            entries = fsspec_call(fs, "ls", path, detail=False, what="listing", url=url)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries]


# obstore store classes by name, and the URL scheme and config key naming the bucket.
_OBSTORE_BUCKETS = {"S3Store": ("s3", "bucket"), "GCSStore": ("gs", "bucket")}
_OBSTORE_AZURE = ("AzureStore", "az", "container_name")


class _ObstoreType:
    name = "obstore"
    path_fields: tuple[str, ...] = ("url",)
    path_kind: Literal["local", "url"] = "url"
    supports_sync = False

    def handles(self, store: Store) -> bool:
        try:
            from zarr.storage import ObjectStore
        except ImportError:  # pragma: no cover - zarr without obstore support
            return False
        return isinstance(store, ObjectStore)

    @staticmethod
    def _url(inner: Any) -> tuple[str, dict[str, Any]] | None:
        """The URL of an obstore store, and its config without the bucket."""
        kind = type(inner).__name__
        if kind == "LocalStore":
            return f"file://{os.fspath(inner.__getnewargs_ex__()[0][0])}", {}
        if kind == "HTTPStore":
            return str(inner.url), {}
        if kind in _OBSTORE_BUCKETS or kind == _OBSTORE_AZURE[0]:
            scheme, bucket_key = _OBSTORE_BUCKETS.get(kind, _OBSTORE_AZURE[1:])
            config = dict(inner.config)
            bucket = config.pop(bucket_key)
            return f"{scheme}://{bucket}/{inner.prefix or ''}".rstrip("/"), config
        return None

    def to_spec(self, store: Store) -> Spec:
        inner = store.store  # type: ignore[attr-defined]
        kind = type(inner).__name__
        found = self._url(inner)
        spec: Spec
        if kind == "LocalStore":
            spec = {"url": found[0] if found else ""}
            if inner.__getnewargs_ex__()[1].get("mkdir"):
                spec["mkdir"] = True
            return spec
        if found is not None:
            spec = {"url": found[0]}
            if found[1]:
                spec["config"] = _json_options("config", found[1])
        else:
            raise ConfigError(
                (),
                f"obstore {kind} cannot be written to a config; supported: LocalStore, "
                "S3Store, GCSStore, AzureStore, HTTPStore",
            )
        given = _without_added(
            store,
            {"client_options": inner.client_options, "retry_config": inner.retry_config},
        )
        if given.get("client_options"):
            spec["client_options"] = _json_options("client_options", given["client_options"])
        if given.get("retry_config"):
            spec["retry_config"] = _json_options("retry_config", given["retry_config"])
        return spec

    def facts(self, store: Store) -> StoreFacts:
        inner = store.store  # type: ignore[attr-defined]
        kind = type(inner).__name__
        if kind == "MemoryStore":
            return StoreFacts(str(store), None, identity=f"obstore:{id(inner)}")
        found = self._url(inner)
        if found is None:
            return StoreFacts(str(store), None, identity=f"obstore:{kind}:{id(inner)}")
        url = found[0]
        if kind == "LocalStore":
            root = url.removeprefix("file://")
            return StoreFacts(url, ("local", root), False, ("directory", root), url)
        endpoint = (getattr(inner, "config", None) or {}).get("endpoint", "")
        return StoreFacts(url, ("url", url), True, None, f"obstore:{url}@{endpoint}")

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        try:
            import obstore.store
            from zarr.storage import ObjectStore
        except ImportError as error:
            raise ConfigError(
                ("type",), "store type 'obstore' needs the obstore package: pip install obstore"
            ) from error
        url = spec["url"]
        inner: Any
        added: dict[str, Any] = {}
        if "://" not in url or url.startswith("file://"):
            inner = obstore.store.LocalStore(
                url.removeprefix("file://"), mkdir=spec.get("mkdir", False)
            )
        else:
            options = {
                key: spec[key]
                for key in ("config", "client_options", "retry_config")
                if key in spec
            }
            added = obstore_defaults(options)
            inner = obstore.store.from_url(url, **options, **added)
        store = ObjectStore(inner, read_only=read_only)
        setattr(store, _ADDED, added)
        return store

    def list_names(self, spec: Mapping[str, Any], field: str) -> list[str] | None:
        url = spec[field]
        if "://" not in url or url.startswith("file://"):
            return _local_names(url.removeprefix("file://"))
        store = self.from_spec(spec, read_only=True).store  # type: ignore[attr-defined]
        result = call_within(store.list_with_delimiter, "listing", url)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in result["common_prefixes"]]
        names += [o["path"].rsplit("/", 1)[-1] for o in result["objects"]]
        return names


class _ZipUrlType:
    """A zip file at a URL, read whole into the layout's cache (``_remotezip``)."""

    name = "zip_url"
    path_fields: tuple[str, ...] = ("url",)
    path_kind: Literal["local", "url"] = "url"
    supports_sync = False

    def handles(self, store: Store) -> bool:
        return isinstance(store, RemoteZipStore)

    def to_spec(self, store: Store) -> Spec:
        assert isinstance(store, RemoteZipStore)
        spec: Spec = {"url": store.url}
        options = _without_added(store, store.storage_options)
        if options:
            spec["storage_options"] = _json_options("storage_options", options)
        return spec

    def facts(self, store: Store) -> StoreFacts:
        assert isinstance(store, RemoteZipStore)
        url = store.url
        if url.startswith("file://"):
            path = url.removeprefix("file://")
            return StoreFacts(url, ("local", path), False, ("file", path), f"zip:{url}")
        return StoreFacts(url, ("url", url), "://" in url, None, f"zip:{url}")

    def from_spec(self, spec: Mapping[str, Any], *, read_only: bool) -> Store:
        url = spec["url"]
        if url.startswith("file://") and not url[len("file://") :].startswith("/"):
            raise ConfigError(("url",), f"expected an absolute file:// URL, got {url!r}")
        options = dict(spec.get("storage_options", {}))
        added = fsspec_defaults(url, options)
        store = RemoteZipStore(url, {**options, **added})
        setattr(store, _ADDED, added)
        return store

    def list_names(self, spec: Mapping[str, Any], field: str) -> list[str] | None:
        return _FsspecType().list_names(spec, field)


_BUILTINS: dict[str, StoreType] = {
    t.name: t for t in (_LocalType(), _ZipType(), _FsspecType(), _ObstoreType(), _ZipUrlType())
}
_plugins: dict[str, StoreType] = {}


def _plugin_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_type_names() -> list[str]:
    """The store types a config can name: built-ins, ``sharded``, then plugins."""
    names = [*_BUILTINS, SHARDED]
    names += sorted(set(_plugin_entry_points()) - set(names))
    return names


def _load_plugin(name: str, entry_point: Any, at: tuple[str | int, ...]) -> StoreType:
    store_type = entry_point.load()
    if not isinstance(store_type, StoreType):
        raise ConfigError(
            at,
            f"entry point {name!r} in group {ENTRY_POINT_GROUP!r} ({entry_point.value}) is "
            "not a shardedstore StoreType; fix or uninstall the package that provides it",
        )
    return store_type


def get_store_type(name: str, at: tuple[str | int, ...]) -> StoreType:
    """The registered store type ``name``; ConfigError at ``at`` if there is none."""
    found = _BUILTINS.get(name) or _plugins.get(name)
    if found is not None:
        return found
    entry_point = _plugin_entry_points().get(name) if name != SHARDED else None
    if entry_point is None:
        raise ConfigError(
            at, f"unknown store type {name!r}; known: {', '.join(known_type_names())}"
        )
    store_type = _load_plugin(name, entry_point, at)
    _plugins[name] = store_type
    return store_type


def store_type_for(store: Store, at: tuple[str | int, ...]) -> StoreType:
    """The store type that can write ``store`` to a config."""
    for store_type in _BUILTINS.values():
        if store_type.handles(store):
            return store_type
    if isinstance(store, MemoryStore):
        raise ConfigError(
            at,
            "a MemoryStore cannot be written to a config: its data lives only in this "
            "process; copy it to a LocalStore, ZipStore or FsspecStore first",
        )
    for name, entry_point in _plugin_entry_points().items():
        try:
            store_type = _plugins.get(name) or _load_plugin(name, entry_point, at)
        except ConfigError:
            continue  # a broken plugin cannot describe this store; others still may
        _plugins[name] = store_type
        if store_type.handles(store):
            return store_type
    raise ConfigError(
        at,
        f"no registered store type writes {type(store).__name__} to a config; known: "
        f"{', '.join(known_type_names())} (third-party types register through the "
        f"{ENTRY_POINT_GROUP!r} entry point group)",
    )


def same_store(a: Store, b: Store) -> bool:
    """Equal, or described by the same config.

    fsspec caches a filesystem per thread, so two FsspecStores of one URL made in two
    threads compare unequal although they are the same store.
    """
    if a == b:
        return True
    if type(a) is not type(b):
        return False
    try:
        kind = store_type_for(a, ())
        return kind.to_spec(a) == kind.to_spec(b)
    except ConfigError:
        return False


_LOCAL_ROOTS: dict[str, tuple[Literal["directory", "file"], str]] = {
    "local": ("directory", "root"),
    "zip": ("file", "path"),
}


def local_root_of(spec: Mapping[str, Any]) -> tuple[Literal["directory", "file"], str] | None:
    """Where a store config keeps its keys on local disk, without making the store
    (``("directory", root)`` of a ``local`` store, ``("file", path)`` of a ``zip``)."""
    found = _LOCAL_ROOTS.get(str(spec.get("type")))
    if found is None or not isinstance(spec.get(found[1]), str):
        return None
    return found[0], spec[found[1]]


def _facts_from_spec(store_type: StoreType, store: Store) -> StoreFacts:
    """What a store whose type does not say (a plugin's) tells through its config."""
    try:
        spec = store_type.to_spec(store)
    except (ConfigError, ImportError, AttributeError, TypeError):
        return StoreFacts(str(store), None, identity=f"{store_type.name}:{store}")
    value = spec.get(store_type.path_fields[0]) if store_type.path_fields else None
    if not isinstance(value, str):
        return StoreFacts(str(store), None, identity=f"{store_type.name}:{store}")
    if store_type.path_kind == "local" or "://" not in value or value.startswith("file://"):
        path = value.removeprefix("file://")
        return StoreFacts(str(store), ("local", path), identity=f"{store_type.name}:{path}")
    return StoreFacts(value, ("url", value), True, None, f"{store_type.name}:{value}")


_TELLERS: dict[type, Callable[[Store], StoreFacts]] = {}
"""How the built-in store type of each store class met tells its facts (built-ins
handle by class)."""


def _teller(store_type: StoreType) -> Callable[[Store], StoreFacts]:
    if isinstance(store_type, _KnowsFacts):
        return store_type.facts
    return functools.partial(_facts_from_spec, store_type)


def facts_of(store: Store) -> StoreFacts:
    """What ``store`` says of itself, asked of its store type (wrappers looked through).

    Any store: one of no registered type (a ``MemoryStore``) has its ``str`` for a URL
    and no place.
    """
    while isinstance(store, WrapperStore):
        store = store._store
    teller = _TELLERS.get(type(store))
    if teller is None:
        builtin = next((t for t in _BUILTINS.values() if t.handles(store)), None)
        if builtin is not None:
            teller = _TELLERS[type(store)] = _teller(builtin)
        else:
            plugin = next((t for t in _plugins.values() if t.handles(store)), None)
            if plugin is None:
                return StoreFacts(str(store), None, identity=f"{type(store).__name__}:{id(store)}")
            teller = _teller(plugin)
    return teller(store)
