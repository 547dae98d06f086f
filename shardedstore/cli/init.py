"""``shardedstore init``: a layout config written from the command line.

Stores are given as ``TYPE:PATH`` (``local:base.zarr``, ``zip:people.zarr.zip``,
``fsspec:s3://bucket/x.zarr``, ``obstore:s3://...``, or any registered type with one
path field), as a bare URL (``s3://bucket/x.zarr``: fsspec), as a bare path (a ``.zip``
is a zip, anything else a directory), or as the JSON of a store's config
(``{"type": "fsspec", "url": ..., "storage_options": {...}}``). Relative local paths are
relative to the working directory, as on any command line, and are written relative to
the config's folder. The config written is checked exactly as ``shardedstore.open(path,
mode="r+")`` will check it (schema, overlapping stores, locations outside the config's
folder), so that every writer can start from it; nothing but the config is created.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from shardedstore.backends.registry import SHARDED, get_store_type, known_type_names
from shardedstore.backends.timeouts import fsspec_call
from shardedstore.config.layout import (
    FORMAT,
    FORMAT_VERSION,
    _has_scheme,
    _spec_relative,
    dump_config,
    load_config,
)
from shardedstore.errors import ArgumentError, ConfigError, OutputError
from shardedstore.store.factories import CHUNK_PLACEHOLDER
from shardedstore.store.routing import MAX_SHARDED_DIMS

__all__ = ["ArgumentError", "OutputError", "init_layout", "parse_store"]

_TYPE_PREFIX = re.compile(r"^(?P<type>[A-Za-z][A-Za-z0-9_\-]*):(?!//)(?P<value>.+)$")


def parse_store(text: str, what: str) -> dict[str, Any]:
    """A store's config from its command-line form.

    Parameters
    ----------
    text
        ``TYPE:PATH``, a URL, a path, or a JSON object (see the module docstring).
    what
        The option it came from, for messages (``"--base"``, ``"--mount people"``).

    Returns
    -------
    dict
        The store's config, with relative local paths made absolute against the
        working directory.

    Raises
    ------
    ArgumentError
        If ``text`` is empty, names an unknown type, or is not a valid JSON object.
    """
    if not text:
        raise ArgumentError(f"{what}: empty store; give a path, TYPE:PATH or a URL")
    # A template may start with its placeholder ({chunk}.zarr): a path, not JSON.
    if text.lstrip().startswith("{") and not text.startswith(CHUNK_PLACEHOLDER):
        try:
            spec = json.loads(text)
        except ValueError as error:
            raise ArgumentError(
                f"{what}: not a JSON object: {error} (a path that starts with '{{' is "
                "written ./{...})"
            ) from None
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise ArgumentError(
                f'{what}: a store given as JSON needs a "type", e.g. '
                '{"type": "fsspec", "url": "s3://bucket/x.zarr", "storage_options": {...}}'
            )
    elif _has_scheme(text):
        spec = {"type": "fsspec", "url": text}
    elif (match := _TYPE_PREFIX.match(text)) is not None and len(match["type"]) > 1:
        name, value = match["type"], match["value"]
        if name not in known_type_names():
            raise ArgumentError(
                f"{what}: unknown store type {name!r} in {text!r}; known: "
                f"{', '.join(n for n in known_type_names() if n != SHARDED)} "
                "(or give a path or a URL)"
            )
        spec = {"type": name, **_path_field(name, value, what)}
    else:
        spec = (
            {"type": "zip", "path": text}
            if text.endswith(".zip")
            else {"type": "local", "root": text}
        )
    if spec["type"] == SHARDED:
        raise ArgumentError(
            f"{what}: a nested sharded store cannot be given on the command line; "
            "write its layout into the config by hand, or mount its stores directly"
        )
    return _absolute(spec, what)


def _path_field(name: str, value: str, what: str) -> dict[str, str]:
    store_type = get_store_type(name, ("type",))
    if len(store_type.path_fields) != 1:
        raise ArgumentError(
            f"{what}: store type {name!r} has {len(store_type.path_fields)} path fields; "
            f'give it as JSON: \'{{"type": "{name}", ...}}\''
        )
    return {store_type.path_fields[0]: value}


def _absolute(spec: dict[str, Any], what: str) -> dict[str, Any]:
    """``spec`` with relative local paths joined onto the working directory."""
    try:
        store_type = get_store_type(str(spec["type"]), ("type",))
    except ValueError as error:
        raise ArgumentError(f"{what}: {error}") from None
    spec = dict(spec)
    for name in store_type.path_fields:
        value = spec.get(name)
        if not isinstance(value, str) or not value:
            continue
        if store_type.path_kind == "url" and _has_scheme(value):
            continue
        if not os.path.isabs(value):
            # Joined, not normalized: a '..' that swallows {chunk} must still show.
            spec[name] = os.path.join(os.getcwd(), value)
    return spec


def _split_pair(text: str, option: str, example: str) -> tuple[str, str]:
    path, sep, value = text.partition("=")
    if not sep or not path or not value:
        raise ArgumentError(f"{option} expects {example}, got {text!r}")
    return path.strip("/"), value


def parse_mount(text: str) -> tuple[str, dict[str, Any]]:
    """``PATH=STORE`` of ``--mount``: the node path and the store's config."""
    path, store = _split_pair(text, "--mount", "PATH=STORE, e.g. people=zip:people.zarr.zip")
    return path, parse_store(store, f"--mount {path}")


def parse_array_shards(text: str) -> tuple[str, dict[str, Any]]:
    """``PATH=DIMS:TEMPLATE`` of ``--array-shards``: the array path and its entry."""
    example = "PATH=DIMS:TEMPLATE, e.g. temperature=1:local:temperature/{chunk}.zarr"
    path, rest = _split_pair(text, "--array-shards", example)
    dims_text, sep, template = rest.partition(":")
    if not sep or not dims_text.isascii() or not dims_text.isdigit() or int(dims_text) < 1:
        raise ArgumentError(
            f"--array-shards expects {example} (DIMS: how many leading chunk dimensions "
            f"select a shard, at least 1), got {text!r}"
        )
    if int(dims_text) > MAX_SHARDED_DIMS:
        raise ArgumentError(
            f"--array-shards {path}: DIMS {dims_text} is more than {MAX_SHARDED_DIMS}, and an "
            f"array has at most {MAX_SHARDED_DIMS} dimensions (numpy's limit); DIMS is how "
            "many leading chunk dimensions select a shard, usually 1"
        )
    if CHUNK_PLACEHOLDER not in template:
        raise ArgumentError(
            f"--array-shards {path}: the template {template!r} has no {CHUNK_PLACEHOLDER}; "
            f"put it where each shard's name goes, e.g. {path.rpartition('/')[2] or 'a'}/"
            f"{CHUNK_PLACEHOLDER}.zarr"
        )
    store = parse_store(template, f"--array-shards {path}")
    return path, {"dims": int(dims_text), "store": store}


def _once(path: str, given: Mapping[str, Any], option: str) -> None:
    if path in given:
        raise ArgumentError(f"{option} {path!r} is given twice; give each path once")


def _folder(target: str) -> str:
    """The folder a config at ``target`` (a path or a URL) resolves its paths against."""
    if _has_scheme(target):
        return target.rstrip("/").rpartition("/")[0]
    return os.path.dirname(os.path.abspath(target))


def build_config(
    base: str,
    mounts: Sequence[str] = (),
    array_shards: Sequence[str] = (),
    *,
    relative_to: str,
) -> dict[str, Any]:
    """The config the options describe, paths written relative to ``relative_to``."""
    config: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "base": _spec_relative(parse_store(base, "--base"), relative_to),
    }
    mount_specs: dict[str, Any] = {}
    for item in mounts:
        path, spec = parse_mount(item)
        _once(path, mount_specs, "--mount")
        mount_specs[path] = _spec_relative(spec, relative_to)
    array_entries: dict[str, Any] = {}
    for item in array_shards:
        path, entry = parse_array_shards(item)
        _once(path, array_entries, "--array-shards")
        array_entries[path] = {**entry, "store": _spec_relative(entry["store"], relative_to)}
    if mount_specs:
        config["mounts"] = mount_specs
    if array_entries:
        config["array_shards"] = array_entries
    return config


def _write_local(target: str, text: str, force: bool) -> None:
    directory = os.path.dirname(os.path.abspath(target))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
    )
    try:
        with open(descriptor, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # as open() would create it, not 0o600
        if force:
            os.replace(temporary, target)
            return
        try:
            os.link(temporary, target)  # atomic, and never replaces a file
        except FileExistsError:
            raise OutputError(_exists_message(target)) from None
        except OSError:  # a filesystem without hard links
            with open(target, "x", encoding="utf-8") as f:
                f.write(text)
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exists_message(target: str) -> str:
    return f"{target} exists; pass --force to replace it, or choose another path"


def _write_url(
    target: str, text: str, force: bool, storage_options: Mapping[str, Any] | None
) -> None:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(target, **dict(storage_options or {}))
    if not force and fsspec_call(fs, "exists", path, what="checking the config", url=target):
        raise OutputError(_exists_message(target))
    data = text.encode("utf-8")
    fsspec_call(fs, "pipe_file", path, data, what="writing the config", url=target)


def init_layout(
    output: str | os.PathLike[str],
    base: str,
    mounts: Sequence[str] = (),
    array_shards: Sequence[str] = (),
    *,
    force: bool = False,
    allow_outside: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check and write the layout config the command-line options describe.

    Parameters
    ----------
    output
        Where to write the config: a local path or an fsspec URL.
    base
        The base store (``--base``).
    mounts
        ``PATH=STORE`` items (``--mount``).
    array_shards
        ``PATH=DIMS:TEMPLATE`` items (``--array-shards``).
    force
        Replace an existing file at ``output``.
    allow_outside
        Accept stores outside the config's folder (writers then open it with
        ``allow_outside=True``).
    storage_options
        fsspec options for writing ``output`` at a URL.

    Returns
    -------
    dict
        The config written.

    Raises
    ------
    ArgumentError
        An option that cannot be read.
    ConfigError
        The layout is refused as ``shardedstore.open(output, mode="r+")`` would refuse
        it (overlapping stores, a location outside the folder, ...).
    OutputError
        ``output`` exists and ``force`` is false.
    """
    target = os.fspath(output)
    if target.startswith("file://"):
        target = target[len("file://") :]
    if not target or target.endswith(("/", os.sep)):
        raise ArgumentError(f"the config path must name a file, got {target!r}")
    if not _has_scheme(target) and os.path.isdir(target):
        raise ArgumentError(
            f"{target} is a directory; the config path must name a file in it, e.g. "
            f"{os.path.join(target, 'layout.json')}"
        )
    folder = _folder(target)
    config = build_config(base, mounts, array_shards, relative_to=folder)
    # As every writer will open it: shardedstore.open(output, mode="r+"). Overlaps
    # first, then the folder, so that a location outside it gets init's own opt-in.
    load_config(config, base_path=folder, read_only=False, allow_outside=True)
    if not allow_outside:
        try:
            load_config(config, base_path=folder, read_only=False)
        except ConfigError as error:
            raise ConfigError(
                error.path,
                f"{error.problem}; with shardedstore init: --allow-outside, and writers "
                "open the config with allow_outside=True",
            ) from None
    text = dump_config(config)
    if _has_scheme(target):
        _write_url(target, text, force, storage_options)
    else:
        _write_local(target, text, force)
    return config


def _where(spec: Mapping[str, Any]) -> str:
    store_type = get_store_type(str(spec["type"]), ("type",))
    for name in store_type.path_fields:
        if isinstance(spec.get(name), str):
            return str(spec[name])
    return json.dumps({k: v for k, v in spec.items() if k != "type"})


def layout_rows(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """One ``(shard, type, location)`` row per store of a config written by init."""
    rows = [("base", str(config["base"]["type"]), _where(config["base"]))]
    for path, spec in config.get("mounts", {}).items():
        rows.append((f"mount {path}", str(spec["type"]), _where(spec)))
    for path, entry in config.get("array_shards", {}).items():
        template = entry["store"]
        where = f"{_where(template)} (one store per chunk index on {entry['dims']} dim(s))"
        rows.append((f"array {path}", str(template["type"]), where))
    return rows
