"""A config checked against the shipped JSON Schema, in time independent of repetition.

``map_shards`` writes one explicit store per array shard (``array_shards.*.shards``),
so a config may hold 10^6 entries that differ only in their paths. The JSON Schema
validator costs ~0.4 ms per entry; here each map of stores (``shards``, ``mounts``) is
validated through one representative per *shape* of entry, and the rest are only
grouped by shape, a fast structural pass.

Two entries have the same shape when the schema cannot tell them apart: the same keys
in the same order, the same values, except that path fields whose schema is only
"a non-empty string" (``root``, ``path``, ``url``, read from the schema itself) count
as "non-empty string" or "empty string", and that a store type the schema does not
know (a plugin's) counts by its ``type`` alone. Entries of one shape are valid or
invalid together, with errors that differ only in the entry's key. The representative
of a shape is the entry the full validator's ``best_match`` would report (the greatest
key), plus the first entry whose key the schema refuses; so the error raised, JSON path
and message, is exactly the one validating every entry gives.

Also here: the depth limit on nested ``sharded`` stores.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

from shardedstore.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

__all__ = [
    "MAX_SHARDED_DEPTH",
    "check_depth",
    "check_schema",
    "config_schema",
    "describe",
    "schema_skeleton",
    "too_deep",
]

MAX_SHARDED_DEPTH = 32
"""How deep ``sharded`` stores may nest in one config."""

Path_ = tuple[str | int, ...]
Shape = Any  # a hashable summary of an entry (see the module docstring)

_NON_EMPTY_STRING = {"type": "string", "minLength": 1}
_UNKNOWN_TYPE = object()  # the shape tag of a store type the schema does not describe


# --------------------------------------------------------------------- schema


@functools.cache
def config_schema() -> dict[str, Any]:
    """The JSON Schema of config format version 1, as shipped in the package."""
    text = (resources.files("shardedstore.config") / "schema" / "config-v1.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(config_schema())


def _definition(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` with a local ``$ref`` followed."""
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        found: Mapping[str, Any] = config_schema()["$defs"][reference.removeprefix("#/$defs/")]
        return found
    return schema


@functools.cache
def _erasable_fields() -> dict[str, frozenset[str]]:
    """Store type -> fields whose schema is only "a non-empty string"."""
    defs = config_schema()["$defs"]
    erasable: dict[str, frozenset[str]] = {}
    for branch in defs["store"]["allOf"]:
        name = branch["if"]["properties"]["type"]["const"]
        properties = _definition(branch["then"]).get("properties", {})
        erasable[name] = frozenset(
            field for field, schema in properties.items() if schema == _NON_EMPTY_STRING
        )
    return erasable


def _name_check(schema: Mapping[str, Any]) -> Callable[[str], bool] | None:
    """A fast test of a ``propertyNames`` schema (None: not one we can test fast)."""
    schema = _definition(schema)
    if not set(schema) <= {"type", "minLength", "pattern"}:
        return None
    if schema.get("type", "string") != "string":
        return None
    minimum = schema.get("minLength", 0)
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None

    def valid(name: str) -> bool:
        return len(name) >= minimum and (pattern is None or pattern.search(name) is not None)

    return valid


@functools.cache
def _name_checks() -> tuple[Callable[[str], bool] | None, Callable[[str], bool] | None]:
    """Fast tests of the names of ``mounts`` and of ``shards``."""
    defs = config_schema()["$defs"]
    mounts = _name_check(defs["mounts"]["propertyNames"])
    shards = _name_check(defs["arrayShards"]["properties"]["shards"]["propertyNames"])
    return mounts, shards


# ---------------------------------------------------------------------- shapes


def _exact(value: Any) -> Shape:
    kind = type(value)
    if kind is dict:
        return (dict, tuple([(key, _exact(item)) for key, item in value.items()]))
    if kind is list:
        return (list, tuple([_exact(item) for item in value]))
    return (kind, value)


def _shape(entry: Any, erasable: Mapping[str, frozenset[str]]) -> Shape:
    """What the schema can see of a store entry (see the module docstring)."""
    if type(entry) is not dict:
        return _exact(entry)
    kind = entry.get("type")
    fields = erasable.get(kind) if type(kind) is str else None
    if fields is None:
        if "type" not in entry:
            return _exact(entry)
        return (_UNKNOWN_TYPE, _exact(kind))  # only its type is in the schema
    values: list[Any] = []
    for key, value in entry.items():
        if type(value) is not str:
            values.append(_exact(value))  # tagged with its type: 1, 1.0 and True differ
        elif key in fields:
            values.append(value != "")  # a path field: only "is it empty" counts
        else:
            values.append(value)
    return (tuple(entry), tuple(values))


def _reduced(entries: Any, valid_name: Callable[[str], bool] | None) -> Any:
    """A map of stores cut down to one entry per shape, plus the first refused name."""
    if type(entries) is not dict or len(entries) < 2 or valid_name is None:
        return entries
    erasable = _erasable_fields()
    greatest: dict[Shape, str] = {}
    first_refused: str | None = None
    for name, entry in entries.items():
        shape = _shape(entry, erasable)
        kept = greatest.get(shape)
        if kept is None or name > kept:
            greatest[shape] = name
        if first_refused is None and not valid_name(name):
            first_refused = name
    if len(greatest) == len(entries):
        return entries
    chosen = set(greatest.values())
    if first_refused is not None:
        chosen.add(first_refused)
    return {name: entry for name, entry in entries.items() if name in chosen}


def _reduced_layout(layout: Any) -> Any:
    """A layout (top level or a ``sharded`` store) with its maps of stores cut down."""
    if type(layout) is not dict:
        return layout
    mount_names, shard_names = _name_checks()
    reduced = dict(layout)
    if "base" in reduced:
        reduced["base"] = _reduced_store(reduced["base"])
    mounts = reduced.get("mounts")
    if type(mounts) is dict:
        mounts = _reduced(mounts, mount_names)
        reduced["mounts"] = {name: _reduced_store(entry) for name, entry in mounts.items()}
    arrays = reduced.get("array_shards")
    if type(arrays) is dict:
        reduced["array_shards"] = arrays = dict(arrays)
        for path, array in arrays.items():
            if type(array) is dict and "shards" in array:
                shards = _reduced(array["shards"], shard_names)
                if type(shards) is dict:
                    shards = {index: _reduced_store(entry) for index, entry in shards.items()}
                arrays[path] = {**array, "shards": shards}
    return reduced


def _reduced_store(store: Any) -> Any:
    if type(store) is dict and store.get("type") == "sharded":
        return _reduced_layout(store)
    return store


def schema_skeleton(config: Mapping[str, Any]) -> Any:
    """The config with one entry per shape in each map of stores (``config`` unchanged).

    Validating the skeleton gives exactly the error validating ``config`` gives.
    """
    return _reduced_layout(dict(config))


# ---------------------------------------------------------------------- errors


def describe(error: ValidationError) -> str:
    """A schema error in words, for a ConfigError at the error's path."""
    instance: Any = error.instance
    expected: Any = error.validator_value
    schema: Any = error.schema
    if error.validator == "required":
        missing = [name for name in expected if name not in instance]
        return f"missing required field {', '.join(map(repr, missing))}"
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(instance) - set(allowed))
        return f"unknown field {', '.join(map(repr, extra))}; allowed: {', '.join(allowed)}"
    if error.validator == "type":
        shown = json.dumps(instance)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return f"expected {expected}, got {type(instance).__name__} {shown}"
    if error.validator in ("enum", "const"):
        allowed = expected if error.validator == "enum" else [expected]
        return f"{instance!r} is not allowed; expected {' or '.join(map(repr, allowed))}"
    if error.validator == "anyOf" and isinstance(instance, dict) and "dims" in instance:
        return "give 'store' (a store template with {chunk} in its path) and/or 'shards'"
    if error.validator == "maximum" and list(error.absolute_path)[-1:] == ["dims"]:
        return (
            f"{instance} is more than {expected}: an array has at most {expected} dimensions "
            "(numpy's limit); dims is the number of leading chunk dimensions to shard on, "
            "usually 1"
        )
    if error.validator == "propertyNames":
        return f"invalid name: {error.message}"
    return str(error.message)


def too_deep(at: Path_) -> ConfigError:
    """The error for a ``sharded`` store nested more than MAX_SHARDED_DEPTH deep."""
    return ConfigError(
        at,
        f"sharded stores nest more than {MAX_SHARDED_DEPTH} deep here; a config may nest "
        f"at most {MAX_SHARDED_DEPTH} levels of sharded stores: mount the inner stores "
        "of a level directly instead of through another sharded store",
    )


def _sharded_children(layout: Mapping[str, Any], at: Path_) -> list[tuple[Any, Path_]]:
    """The stores a layout names directly, with their JSON paths."""
    children: list[tuple[Any, Path_]] = [(layout.get("base"), (*at, "base"))]
    mounts = layout.get("mounts")
    if type(mounts) is dict:
        children += [(store, (*at, "mounts", name)) for name, store in mounts.items()]
    arrays = layout.get("array_shards")
    if type(arrays) is dict:
        for path, array in arrays.items():
            if type(array) is not dict:
                continue
            children.append((array.get("store"), (*at, "array_shards", path, "store")))
            shards = array.get("shards")
            if type(shards) is dict:
                children += [
                    (store, (*at, "array_shards", path, "shards", index))
                    for index, store in shards.items()
                    if type(store) is dict and store.get("type") == "sharded"
                ]
    return [(store, where) for store, where in children if type(store) is dict]


def check_depth(config: Mapping[str, Any]) -> None:
    """Refuse ``sharded`` stores nested more than :data:`MAX_SHARDED_DEPTH` deep.

    Iterative, so that a config nested far deeper gives this error, not RecursionError.
    """
    stack: list[tuple[Mapping[str, Any], Path_, int]] = [(config, (), 0)]
    while stack:
        layout, at, depth = stack.pop()
        for store, where in _sharded_children(layout, at):
            if store.get("type") != "sharded":
                continue
            if depth + 1 > MAX_SHARDED_DEPTH:
                raise too_deep(where)
            stack.append((store, where, depth + 1))


def check_schema(config: Mapping[str, Any]) -> None:
    """Validate ``config`` against the shipped JSON Schema.

    Raises
    ------
    ConfigError
        At the JSON path of the field the validator's ``best_match`` names.
    """
    from jsonschema.exceptions import best_match

    check_depth(config)
    try:
        error = best_match(_validator().iter_errors(schema_skeleton(config)))
    except RecursionError:
        raise ConfigError(
            (), "nested too deeply to validate; a layout config is a few levels deep"
        ) from None
    if error is not None:
        raise ConfigError(tuple(error.absolute_path), describe(error))
