"""Configs written by shardedstore 0.3.x (zarr-python 2), translated to format version 1.

A 0.3.x config names a module and a class for every store and 0.3.x imported and
called them. Here those names are only looked up in a fixed table of the zarr 2 stores
0.3.x could write; anything else is refused, and nothing is ever imported.

0.3.x listed one store per array shard, under a chunk prefix joined with the layout's
dimension separator (``"3"``, ``"3/0"`` or ``"3.0"``); those become explicit shards of
a template-less array-shard entry. The sub-array metadata 0.3.x wrote into each array
shard has wrong shapes; nothing here reads it, routing is by key alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shardedstore.config.schema import MAX_SHARDED_DEPTH, too_deep
from shardedstore.errors import ConfigError

__all__ = ["is_legacy_config", "translate_legacy_config"]

Path_ = tuple[str | int, ...]

_DIRECTORY_STORES = ("DirectoryStore", "NestedDirectoryStore")
_KNOWN = {
    ("zarr.storage", "DirectoryStore"): "local",
    ("zarr.storage", "NestedDirectoryStore"): "local",
    ("zarr.storage", "ZipStore"): "zip",
    ("shardedstore", "ShardedStore"): "sharded",
}
_HARMLESS_OPTIONS = {
    "local": {"dimension_separator", "normalize_keys"},
    "zip": {"dimension_separator", "compression", "allowZip64", "mode"},
}
_CHUNK_PREFIX = re.compile(r"^[0-9]+([./][0-9]+)*$")


def is_legacy_config(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` has the shape shardedstore 0.3.x wrote."""
    return "format" not in config and ("module" in config or "config" in config)


def _expect(value: object, kind: type | tuple[type, ...], at: Path_, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ConfigError(at, f"expected {what}, got {type(value).__name__}")
    return value


def _class_of(config: Mapping[str, Any], at: Path_) -> str:
    module = config.get("module")
    name = config.get("name")
    kind = _KNOWN.get((module, name))  # type: ignore[arg-type]
    if kind is None:
        known = ", ".join(f"{m}.{n}" for m, n in _KNOWN)
        raise ConfigError(
            (*at, "module"),
            f"refusing store class {module!r}.{name!r}: a shardedstore 0.3.x config may only "
            f"name {known}; nothing it names is imported",
        )
    return kind


def _arguments(config: Mapping[str, Any], at: Path_) -> tuple[list[Any], dict[str, Any]]:
    body = _expect(config.get("config"), dict, (*at, "config"), "an object with args, kwargs")
    args = _expect(body.get("args", []), list, (*at, "config", "args"), "a list")
    kwargs = _expect(body.get("kwargs", {}), dict, (*at, "config", "kwargs"), "an object")
    return args, kwargs


def _store(value: object, at: Path_, depth: int) -> dict[str, Any]:
    config: dict[str, Any] = _expect(value, dict, at, "a store object with name, module and config")
    kind = _class_of(config, at)
    if kind == "sharded":
        if depth + 1 > MAX_SHARDED_DEPTH:
            raise too_deep(at)
        return {"type": "sharded", **_layout(config, at, depth + 1)}
    args, kwargs = _arguments(config, at)
    unknown = sorted(set(kwargs) - {"path"} - _HARMLESS_OPTIONS[kind])
    if unknown:
        raise ConfigError(
            (*at, "config", "kwargs", unknown[0]),
            f"option not supported for {config['name']}; supported: "
            f"{', '.join(sorted(_HARMLESS_OPTIONS[kind]))}",
        )
    if kwargs.get("normalize_keys"):
        raise ConfigError(
            (*at, "config", "kwargs", "normalize_keys"),
            "normalize_keys=True stored keys lower-cased; this layout cannot be read by key",
        )
    path = args[0] if args else kwargs.get("path")
    path_at = (*at, "config", "args", 0) if args else (*at, "config", "kwargs", "path")
    path = _expect(path, str, path_at, "the store's path as a string")
    if not path:
        raise ConfigError(path_at, "empty store path")
    if kind == "local":
        return {"type": "local", "root": path}
    spec: dict[str, Any] = {"type": "zip", "path": path, "mode": "r"}
    compression = kwargs.get("compression", 0)
    if compression not in (0, 8, 12, 14):
        raise ConfigError((*at, "config", "kwargs", "compression"), "unknown zip compression")
    return spec


def _chunk_index(prefix: str, at: Path_) -> str:
    if not _CHUNK_PREFIX.match(prefix):
        raise ConfigError(
            at, f"expected a chunk prefix such as '3', '3/0' or '3.0', got {prefix!r}"
        )
    return ".".join(str(int(part)) for part in re.split(r"[./]", prefix))


def _layout(config: Mapping[str, Any], at: Path_, depth: int) -> dict[str, Any]:
    """The format-1 layout of a 0.3.x ShardedStore nested ``depth`` deep (0: the top)."""
    args, kwargs = _arguments(config, at)
    if not args:
        raise ConfigError((*at, "config", "args"), "missing the base store")
    layout: dict[str, Any] = {"base": _store(args[0], (*at, "config", "args", 0), depth)}
    kw_at = (*at, "config", "kwargs")
    shards = _expect(kwargs.get("shards") or {}, dict, (*kw_at, "shards"), "an object")
    if shards:
        layout["mounts"] = {
            path: _store(shard, (*kw_at, "shards", path), depth) for path, shard in shards.items()
        }
    dims_of = _expect(
        kwargs.get("array_shard_dims") or {}, dict, (*kw_at, "array_shard_dims"), "an object"
    )
    arrays = _expect(kwargs.get("array_shards") or {}, dict, (*kw_at, "array_shards"), "an object")
    translated: dict[str, Any] = {}
    for path, per_shard in arrays.items():
        entry_at = (*kw_at, "array_shards", path)
        per_shard = _expect(per_shard, dict, entry_at, "an object of chunk prefix -> store")
        stores = {
            _chunk_index(prefix, (*entry_at, prefix)): _store(shard, (*entry_at, prefix), depth)
            for prefix, shard in per_shard.items()
        }
        dims = dims_of.get(path)
        if dims is None:
            counts = {index.count(".") + 1 for index in stores}
            if len(counts) != 1:
                raise ConfigError(
                    (*kw_at, "array_shard_dims", path), "missing, and the shards do not agree"
                )
            dims = counts.pop()
        _expect(dims, int, (*kw_at, "array_shard_dims", path), "an integer")
        translated[path] = {"dims": dims, "shards": stores}
    for path, dims in dims_of.items():
        if path not in translated:  # an array sharded before any shard was written
            dims = _expect(dims, int, (*kw_at, "array_shard_dims", path), "an integer")
            translated[path] = {"dims": dims, "shards": {}}
    if translated:
        layout["array_shards"] = translated
    return layout


def translate_legacy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The format-1 equivalent of a shardedstore 0.3.x config (to be opened read-only)."""
    _class_of(config, ())
    return {"format": "shardedstore", "version": 1, **_layout(config, (), 0)}
