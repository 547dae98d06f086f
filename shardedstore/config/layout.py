"""A ShardedStore's layout as JSON: write it, validate it, read it back.

The format (version 1, ``schema/config-v1.json``, documented in ``docs/config.md``)::

    {
      "format": "shardedstore",
      "version": 1,
      "base": {"type": "local", "root": "base.zarr"},
      "mounts": {"people": {"type": "zip", "path": "people.zarr.zip"}},
      "array_shards": {
        "simulation/fine/temperature": {
          "dims": 1,
          "store": {"type": "local", "root": "temperature/{chunk}.zarr"}
        }
      }
    }

A config is data: it can only name registered store types (``_registry.py``), and its
size does not depend on the number of array shards. Relative paths resolve against the
config file's directory (or ``base_path``). Configs written by shardedstore 0.3.x are
translated by ``_legacy.py`` into this format and open read-only.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zarr.abc.store import Store

from shardedstore.backends.cache import ShardCache
from shardedstore.backends.registry import SHARDED, StoreType, get_store_type, store_type_for
from shardedstore.backends.timeouts import fsspec_call
from shardedstore.config.legacy import is_legacy_config, translate_legacy_config
from shardedstore.config.schema import check_schema, describe
from shardedstore.config.strictjson import parse_config_json
from shardedstore.errors import ConfigError, LayoutError, LocationOverlapError, json_path
from shardedstore.store.factories import (
    CHUNK_PLACEHOLDER,
    ArrayShardDirectoryFactory,
    ArrayShardStoresFactory,
    ArrayShardTemplateFactory,
    _template_type,
)
from shardedstore.store.locations import (
    Location,
    Member,
    escapes_folder,
    folder_location,
    new_resolver,
    placeholder_survives,
)
from shardedstore.store.opencheck import check_dims
from shardedstore.store.routing import validate_node_path
from shardedstore.store.sharded import ShardedStore

if TYPE_CHECKING:
    from shardedstore.store.factories import ArrayShardSpec
    from shardedstore.store.sharded import ShardedStore

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "dump_config",
    "layout_config",
    "load_config",
    "open_config",
    "save_config",
]

FORMAT = "shardedstore"
FORMAT_VERSION = 1

Path_ = tuple[str | int, ...]
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_DIRECTORY_TEMPLATE = re.compile(r"^(?P<prefix>.+)/\{chunk\}\.zarr$")


# ----------------------------------------------------------------------- paths


def _has_scheme(value: str) -> bool:
    return _SCHEME.match(value) is not None


def _join_url(base: str, relative: str) -> str:
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.normpath(posixpath.join(rest, relative))}"


def _below(prefix: str, value: str) -> str:
    """``os.path.normpath(prefix + value)`` for a normalized ``prefix`` ending in '/'.

    Skips ``normpath`` where it would change nothing: it runs once per array shard.
    """
    joined = prefix + value
    if not value or value[0] in "./" or "/." in value or "//" in value or value[-1] == "/":
        return os.path.normpath(joined)
    return joined


def _resolve(
    value: str,
    kind: Literal["local", "url"],
    base: str | None,
    at: Path_,
    *,
    local_prefix: str | None = None,
) -> str:
    """A path field's value with a relative path resolved against ``base``.

    ``local_prefix``: ``base`` normalized and ending in '/', if it is an absolute local
    directory (to resolve many values faster).
    """
    if (kind == "url" and _has_scheme(value)) or os.path.isabs(value) or base is None:
        return value
    if local_prefix is not None:
        resolved = _below(local_prefix, value)
        return f"file://{Path(resolved).as_posix()}" if kind == "url" else resolved
    if _has_scheme(base):
        if kind == "local":
            raise ConfigError(
                at,
                f"relative local path {value!r} in a config read from {base!r}; make it "
                "absolute or pass base_path= a local directory",
            )
        return _join_url(base, value)
    resolved = os.path.normpath(os.path.join(base, value))
    # A local path in a URL field reads back as the file:// URL fsspec and obstore write.
    return f"file://{Path(resolved).as_posix()}" if kind == "url" else resolved


def _relativize(value: str, kind: Literal["local", "url"], relative_to: str | None) -> str:
    """A path field's value written relative to ``relative_to`` where it can be."""
    if relative_to is None:
        return value
    if _has_scheme(relative_to):
        prefix = relative_to.rstrip("/") + "/"
        return value[len(prefix) :] if value.startswith(prefix) else value
    path = value
    if kind == "url" and _has_scheme(value):
        if not value.startswith("file://"):
            return value
        path = value[len("file://") :]
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(relative_to))
    return Path(relative).as_posix()


# ------------------------------------------------------------------- writing


def _store_spec(store: Store, at: Path_, relative_to: str | None) -> dict[str, Any]:

    if isinstance(store, ShardedStore):
        return {"type": SHARDED, **_layout_spec(store, at, relative_to)}
    store_type = store_type_for(store, at)
    try:
        spec = store_type.to_spec(store)
    except ConfigError as error:
        raise ConfigError((*at, *error.path), error.problem) from None
    spec = {"type": store_type.name, **spec}
    for name in store_type.path_fields:
        if isinstance(spec.get(name), str):
            spec[name] = _relativize(spec[name], store_type.path_kind, relative_to)
    return spec


def _spec_relative(spec: Mapping[str, Any], relative_to: str | None) -> dict[str, Any]:
    store_type = get_store_type(str(spec["type"]), ("type",))
    written = dict(spec)
    for name in store_type.path_fields:
        if isinstance(written.get(name), str):
            written[name] = _relativize(written[name], store_type.path_kind, relative_to)
    return written


def _array_spec(spec: ArrayShardSpec, at: Path_, relative_to: str | None) -> dict[str, Any]:
    dims, factory = spec
    template: Mapping[str, Any] | None
    shards: Mapping[str, Mapping[str, Any]]
    if isinstance(factory, ArrayShardDirectoryFactory):
        prefix = Path(factory.prefix).as_posix()
        template, shards = {"type": "local", "root": f"{prefix}/{CHUNK_PLACEHOLDER}.zarr"}, {}
    elif isinstance(factory, ArrayShardTemplateFactory):
        template, shards = factory.template, factory.shards
    elif isinstance(factory, ArrayShardStoresFactory):
        # Shards a transform returned: the fallback's template plus every shard that
        # does not sit where the template would put it.
        made: dict[str, Any] = (
            _array_spec((dims, factory.fallback), at, relative_to)
            if factory.fallback is not None
            else {"dims": dims}
        )
        overrides = {
            index: _store_spec(store, (*at, "shards", index), relative_to)
            for index, store in sorted(factory.stores.items())
            if factory.fallback is None or factory.fallback(index) != store
        }
        if overrides:
            made["shards"] = {**made.get("shards", {}), **overrides}
        return made
    else:
        raise ConfigError(
            at,
            f"array-shard factory {factory!r} cannot be written to a config; use "
            "array_shard_directory_store(prefix) or array_shard_template_store(template)",
        )
    written: dict[str, Any] = {"dims": dims}
    if template is not None:
        written["store"] = _spec_relative(template, relative_to)
    if shards:
        written["shards"] = {
            index: _spec_relative(shard, relative_to) for index, shard in sorted(shards.items())
        }
    return written


def _layout_spec(store: ShardedStore, at: Path_, relative_to: str | None) -> dict[str, Any]:
    base, mounts = store.parts.base, store.parts.mounts
    spec: dict[str, Any] = {"base": _store_spec(base, (*at, "base"), relative_to)}
    if mounts:
        spec["mounts"] = {
            path: _store_spec(mount, (*at, "mounts", path), relative_to)
            for path, mount in sorted(mounts.items())
        }
    if store.array_shards:
        spec["array_shards"] = {
            path: _array_spec(array, (*at, "array_shards", path), relative_to)
            for path, array in sorted(store.array_shards.items())
        }
    return spec


def layout_config(
    store: ShardedStore, *, relative_to: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """The config of ``store`` (see :meth:`ShardedStore.get_config`)."""
    target = None if relative_to is None else os.fspath(relative_to)
    config = {"format": FORMAT, "version": FORMAT_VERSION, **_layout_spec(store, (), target)}
    if store.cache is not None:
        config["cache"] = store.cache.to_json()
    return config


def dump_config(config: Mapping[str, Any]) -> str:
    """A config as indented JSON text, ending with a newline."""
    return json.dumps(config, indent=2) + "\n"


def save_config(
    store: ShardedStore,
    path: str | os.PathLike[str],
    *,
    relative: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write the config of ``store`` to ``path`` (see :meth:`ShardedStore.save_config`)."""
    target = os.fspath(path)
    if _has_scheme(target) and not target.startswith("file://"):
        from fsspec.core import url_to_fs

        directory = target.rstrip("/").rpartition("/")[0]
        text = dump_config(layout_config(store, relative_to=directory if relative else None))
        fs, fs_path = url_to_fs(target, **dict(storage_options or {}))
        data = text.encode("utf-8")
        fsspec_call(fs, "pipe_file", fs_path, data, what="writing the config", url=target)
        return
    if target.startswith("file://"):
        target = target[len("file://") :]
    directory = os.path.dirname(os.path.abspath(target))
    text = dump_config(layout_config(store, relative_to=directory if relative else None))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{target}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, target)


# ------------------------------------------------------------------- reading


def _check_version(config: Mapping[str, Any]) -> None:
    if config.get("format") != FORMAT:
        raise ConfigError(
            ("format",),
            f"expected {FORMAT!r}, got {config.get('format')!r}; a shardedstore config starts "
            f'with {{"format": "{FORMAT}", "version": {FORMAT_VERSION}, ...}}',
        )
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(("version",), f"expected an integer format version, got {version!r}")
    if version > FORMAT_VERSION:
        from importlib.metadata import version as installed

        raise ConfigError(
            ("version",),
            f"format version {version} is newer than this shardedstore "
            f"({installed('shardedstore')}) "
            f"reads (up to {FORMAT_VERSION}); upgrade shardedstore",
        )
    if version < 1:
        raise ConfigError(("version",), f"unknown format version {version}; expected 1")


def _member_field(spec: Mapping[str, Any], member: Member, at: Path_) -> Path_:
    """The JSON path of the path field that places ``member`` (a store or template)."""
    node: Any = spec
    field: list[str | int] = [*at]
    try:
        for part in member.where:
            node = node[part]
            field.append(part)
        if "dims" in node:  # an array-shard entry: its template
            node = node["store"]
            field.append("store")
        store_type = get_store_type(str(node["type"]), ())
    except (KeyError, TypeError, ConfigError):
        return tuple(field)
    names = [name for name in store_type.path_fields if isinstance(node.get(name), str)]
    return (*field, names[0]) if names else tuple(field)


def _overlap_error(spec: Mapping[str, Any], error: LocationOverlapError, at: Path_) -> ConfigError:
    """A LocationOverlapError as a ConfigError naming the JSON fields of both stores."""

    def name(member: Member) -> str:
        text = json_path(_member_field(spec, member, at))
        if member.chunk_index is not None and "shards" not in member.where:
            text += f" (chunk {member.chunk_index})"
        return text

    return ConfigError(_member_field(spec, error.first, at), error.explain(name, subject=False))


class _Loader:
    """Builds stores from a validated config, resolving relative paths against ``base``.

    ``folder``: when set, every location must lie inside it (writing, no opt-in).
    """

    def __init__(
        self,
        base: str | None,
        read_only: bool,
        folder: Location | None,
        cache: ShardCache | None = None,
        owned: bool = False,
    ) -> None:
        self.base = base
        self.cache = cache
        self.owned = owned
        """The config was parsed for this load alone: its entries may be changed in place."""
        self.read_only = read_only
        self.folder = folder
        # An absolute local base as a prefix, to resolve 10^6 array shards faster.
        self.local_prefix: str | None = None
        if base is not None and os.sep == "/" and base.startswith("/"):
            self.local_prefix = os.path.normpath(base).rstrip("/") + "/"
        self.resolver = new_resolver()  # shared: a config may name 10^6 array shards

    def resolved(
        self,
        spec: Mapping[str, Any],
        at: Path_,
        *,
        template: bool = False,
        store_type: StoreType | None = None,
    ) -> dict[str, Any]:
        """``spec`` with its path fields resolved (and checked to lie inside the folder)."""
        if store_type is None:
            store_type = get_store_type(str(spec["type"]), (*at, "type"))
        resolved = dict(spec)
        for name in store_type.path_fields:
            if isinstance(resolved.get(name), str):
                resolved[name] = _resolve(
                    resolved[name],
                    store_type.path_kind,
                    self.base,
                    (*at, name),
                    local_prefix=self.local_prefix,
                )
                is_template = template and CHUNK_PLACEHOLDER in spec[name]
                if is_template and not placeholder_survives(resolved[name], store_type.path_kind):
                    raise ConfigError(
                        (*at, name),
                        f"{spec[name]!r} loses {CHUNK_PLACEHOLDER} once '..' is resolved, so "
                        f"every array shard would be one store; keep {CHUNK_PLACEHOLDER} in the "
                        f"path once '..' is resolved, e.g. 'shards/{CHUNK_PLACEHOLDER}.zarr'",
                    )
                self.check_inside(
                    spec[name], resolved[name], store_type.path_kind, (*at, name), is_template
                )
        return resolved

    def check_inside(
        self,
        value: str,
        resolved: str,
        kind: Literal["local", "url"],
        at: Path_,
        template: bool,
    ) -> None:
        """Refuse a location outside the config's folder (when opened for writing)."""
        if self.folder is None:
            return
        outside = escapes_folder(
            self.folder, resolved, kind, template=template, resolver=self.resolver
        )
        if outside is not None:
            raise ConfigError(
                at,
                f"{value!r} resolves to {outside}, which is not inside the config's folder "
                f"{self.folder}; a config opened for writing may only name locations inside "
                "its own folder, so that writing through it cannot touch data elsewhere. "
                "Move the data into the folder, or, if you trust this config, open it with "
                "allow_outside=True (shardedstore.open or ShardedStore.from_config)",
            )

    def store(self, spec: Mapping[str, Any], at: Path_) -> Store:
        if spec["type"] == SHARDED:
            return self.layout(spec, at)
        store_type = get_store_type(str(spec["type"]), (*at, "type"))
        schema = getattr(store_type, "schema", None)
        if schema is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import best_match

            error = best_match(Draft202012Validator(schema).iter_errors(dict(spec)))
            if error is not None:
                raise ConfigError((*at, *error.absolute_path), describe(error))
        resolved = self.resolved(spec, at)
        try:
            return store_type.from_spec(resolved, read_only=self.read_only)
        except ConfigError as error:
            raise ConfigError((*at, *error.path), error.problem) from None
        except (TypeError, ValueError) as error:
            raise ConfigError(at, f"cannot open {spec['type']} store: {error}") from error

    def factory(self, spec: Mapping[str, Any], at: Path_) -> ArrayShardDirectoryFactory | Any:
        dims = spec["dims"]
        template = spec.get("store")
        shards = spec.get("shards", {})
        dots = dims - 1
        for index, shard in shards.items():
            # The schema checked that each name is a chunk index; this, how many parts.
            if index.count(".") != dots:
                raise ConfigError(
                    (*at, "shards", index),
                    f"expected a chunk index with {dims} part(s) such as "
                    f"{'.'.join(['3'] * dims)!r}",
                )
            if shard["type"] == SHARDED:
                raise ConfigError(
                    (*at, "shards", index, "type"), "an array shard cannot be sharded"
                )
        if template is not None:
            try:
                _template_type(template, (*at, "store"))
            except LayoutError as error:
                raise ConfigError((*at, "store"), str(error)) from None
            template = self.resolved(template, (*at, "store"), template=True)
            if not shards and template["type"] == "local" and len(template) == 2:
                # The template array_shard_directory_store(prefix) writes reads back as one.
                match = _DIRECTORY_TEMPLATE.match(template["root"])
                if match is not None and CHUNK_PLACEHOLDER not in match["prefix"]:
                    return ArrayShardDirectoryFactory(str(Path(match["prefix"])))
        return ArrayShardTemplateFactory(template, self.explicit_shards(shards, at))

    def explicit_shards(
        self, shards: Mapping[str, Mapping[str, Any]], at: Path_
    ) -> dict[str, dict[str, Any]]:
        """The resolved specs of an array's explicit shards (there may be 10^6).

        The same as :meth:`resolved` for each, with what does not depend on the shard
        done once: reading a local config for reading, each costs a dict copy and a
        string join.
        """
        types: dict[object, StoreType] = {}
        resolved = {}
        prefix = self.local_prefix if self.folder is None else None
        for index, shard in shards.items():
            kind = shard["type"]
            store_type = types.get(kind)
            if store_type is None:
                store_type = get_store_type(str(kind), (*at, "shards", index, "type"))
                types[kind] = store_type
            if prefix is None:
                resolved[index] = self.resolved(
                    shard, (*at, "shards", index), store_type=store_type
                )
                continue
            # In place in a config parsed for this load (10^6 dict copies are 1-2 s).
            spec = resolved[index] = shard if self.owned and type(shard) is dict else dict(shard)
            url = store_type.path_kind == "url"
            for name in store_type.path_fields:
                value = spec.get(name)
                if type(value) is not str or value[:1] == "/" or (url and _has_scheme(value)):
                    continue  # not a path, or an absolute one: as _resolve
                local = _below(prefix, value)
                spec[name] = f"file://{local}" if url else local
        return resolved

    def layout(self, spec: Mapping[str, Any], at: Path_) -> ShardedStore:

        base = self.store(spec["base"], (*at, "base"))
        mounts = {}
        for path, mount in spec.get("mounts", {}).items():
            self.node_path(path, "mount", (*at, "mounts", path))
            mounts[path] = self.store(mount, (*at, "mounts", path))
        arrays = {}
        for path, array in spec.get("array_shards", {}).items():
            self.node_path(path, "array shard", (*at, "array_shards", path))
            arrays[path] = (array["dims"], self.factory(array, (*at, "array_shards", path)))
        try:
            return ShardedStore(base, mounts, arrays, read_only=self.read_only, cache=self.cache)
        except LocationOverlapError as error:
            raise _overlap_error(spec, error, at) from None
        except LayoutError as error:
            raise ConfigError(at, str(error)) from None

    @staticmethod
    def node_path(path: str, what: str, at: Path_) -> None:
        try:
            validate_node_path(path, what)
        except LayoutError as error:
            raise ConfigError(at, str(error)) from None


def load_config(
    config: object,
    *,
    base_path: str | os.PathLike[str] | None = None,
    read_only: bool | None = None,
    allow_outside: bool = False,
    check_data: bool = True,
    owned: bool = False,
) -> ShardedStore:
    """A ShardedStore from a config (see :meth:`ShardedStore.from_config`).

    ``check_data``: compare each array's dims with its data (``_opencheck``); off for
    ``validate`` and ``info``, which report what they find instead of raising.
    ``owned``: ``config`` was parsed for this call and nothing else holds it, so its
    entries may be resolved in place (a caller's dict is never changed).
    """

    if not isinstance(config, Mapping):
        raise ConfigError((), f"expected a JSON object (a dict), got {type(config).__name__}")
    if is_legacy_config(config):
        if read_only is False:
            raise ConfigError(
                (),
                "layouts written by shardedstore 0.3.x open read-only; open with "
                "read_only=True, then copy them to a new layout with map_shards",
            )
        config, read_only = translate_legacy_config(config), True
    _check_version(config)
    check_schema(config)
    base = None if base_path is None else os.fspath(base_path)
    # Writing stays inside the config's folder unless the caller opts out; reading
    # cannot destroy anything, so it may reach anywhere (docs/config.md, "Writing
    # stays inside the config's folder").
    folder = None if base is None or read_only or allow_outside else folder_location(base)
    cache = None
    if "cache" in config:
        cache = ShardCache.from_json(config["cache"], base=base)
    store = _Loader(base, bool(read_only), folder, cache, owned).layout(config, ())
    if folder is not None and "://" not in base.removeprefix("file://"):  # type: ignore[union-attr]
        # Array shards are checked again when first written: a shard of the template
        # may itself be a symlink out of the folder.
        store.confine_to(base.removeprefix("file://"))  # type: ignore[union-attr]
    if check_data:
        check_dims(store)
    return store


def _decoded(data: bytes, location: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError((), f"{location} is not UTF-8 text: {error}") from None


def open_layout_config(
    path_or_url: str | os.PathLike[str],
    mode: Literal["r", "r+", "a"] = "r",
    *,
    storage_options: Mapping[str, Any] | None = None,
    allow_outside: bool = False,
    timeout: float | None = None,
    check_data: bool = True,
) -> ShardedStore:
    """:func:`open_config`; ``check_data=False`` skips comparing the config with the data.

    ``validate`` and ``info`` open layouts so, to report what they find (dims that
    contradict the shards) among everything else instead of stopping at it.
    """
    if mode not in ("r", "r+", "a"):
        raise ValueError(f"mode must be 'r' (read-only), 'r+' or 'a' (read/write), got {mode!r}")
    location = os.fspath(path_or_url)
    if _has_scheme(location) and not location.startswith("file://"):
        from fsspec.core import url_to_fs

        fs, fs_path = url_to_fs(location, **dict(storage_options or {}))
        data = fsspec_call(
            fs,
            "cat_file",
            fs_path,
            what="fetching the config",
            url=location,
            timeout=timeout,
        )
        text = _decoded(data, location)
        base = location.rstrip("/").rpartition("/")[0]
    else:
        if location.startswith("file://"):
            location = location[len("file://") :]
        with open(location, encoding="utf-8") as f:
            text = f.read()
        base = os.path.dirname(os.path.abspath(location))
    config = parse_config_json(text, location)
    return load_config(
        config,
        base_path=base,
        read_only=mode == "r",
        allow_outside=allow_outside,
        check_data=check_data,
        owned=True,
    )


def open_config(
    path_or_url: str | os.PathLike[str],
    mode: Literal["r", "r+", "a"] = "r",
    *,
    storage_options: Mapping[str, Any] | None = None,
    allow_outside: bool = False,
    timeout: float | None = None,
) -> ShardedStore:
    """Open the dataset described by a layout config file.

    Parameters
    ----------
    path_or_url
        The config file: a local path or any fsspec URL (``s3://bucket/ds/layout.json``).
        Relative paths in it resolve against the file's directory.
    mode
        ``"r"`` read-only (the default), ``"r+"`` or ``"a"`` read/write.
    storage_options
        fsspec options for reading the config file itself.
    allow_outside
        With ``"r+"`` or ``"a"``, let the config name locations outside its own
        folder (absolute paths, ``..``, symlinks out, other URLs). Off by default, so
        that writing through someone else's config cannot touch data elsewhere.
    timeout
        Seconds to wait for the config file at a URL. Default: the environment
        variable ``SHARDEDSTORE_TIMEOUT``, else 30; ``math.inf`` waits forever.

    Returns
    -------
    ShardedStore
        Ready for ``xr.open_datatree(store, engine="zarr")`` or ``zarr.open_group``.

    Raises
    ------
    ConfigError
        If the file is not valid JSON or not a valid config, if two of its stores
        overlap, if it is opened for writing and names a location outside its
        folder without ``allow_outside=True``, or if an array's ``dims`` contradict
        its data (its metadata in base, or the names of its existing array shards:
        ``array_shards.t.dims: array 't': ...``; see ``docs/config.md``).
    FileNotFoundError
        If there is no such file. (A layout nothing was written to opens, read-only
        too: its stores are created by the first write.)
    RemoteTimeoutError
        A ``TimeoutError``: the server holding the config did not answer in time.
    """
    return open_layout_config(
        path_or_url,
        mode,
        storage_options=storage_options,
        allow_outside=allow_outside,
        timeout=timeout,
    )
