"""Array-shard metadata: from an array's metadata to the metadata of one array shard.

An array sharded on its first ``dims`` dimensions keeps its own metadata in the base
store. Each array shard holds the metadata of the sub-array that remains once those
dimensions (all of chunk size 1) are fixed, so any Zarr reader can open one shard
alone. Chunk bytes are identical in both views: dropping leading size-1 dimensions
changes neither the C nor the F memory order of a chunk, nor the inner-chunk order of
zarr's sharding codec. Everything here is pure: JSON in, JSON out.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shardedstore.errors import LayoutError
from shardedstore.store.routing import ChunkKeyFormat

__all__ = ["ShardedArrayLayout", "parse_metadata_document", "sharded_array_layout"]

JSON = Any  # a parsed JSON document


@dataclass(frozen=True, slots=True)
class ShardedArrayLayout:
    """What an array-sharded array's metadata implies for its shards.

    Attributes
    ----------
    key_format
        How chunk keys are spelled (needed to list shards back as outer keys).
    shard_documents
        Metadata documents to write at the root of every array shard, by key.
    shape
        The full array shape (the sharded dims give the range of chunk indices).
    """

    key_format: ChunkKeyFormat
    shard_documents: Mapping[str, bytes]
    shape: tuple[int, ...]


def parse_metadata_document(path: str, name: str, value: bytes) -> JSON:
    """Parse a metadata document written at an array-shard path, or raise LayoutError."""
    try:
        doc = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LayoutError(
            f"{path}/{name}: not valid JSON ({err}); {path!r} is configured for array "
            "shards, so only Zarr array metadata can be written there"
        ) from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{path}/{name}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _encode(doc: JSON) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=False).encode()


def _describe_dim(dim: int, names: list[Any] | None) -> str:
    if names is not None and dim < len(names) and names[dim] is not None:
        return f"dimension {dim} ({names[dim]!r})"
    return f"dimension {dim}"


def _check_shardable(
    path: str, shape: list[int], chunks: list[int], dims: int, names: list[Any] | None
) -> None:
    if len(shape) < dims:
        raise LayoutError(
            f"array {path!r} has {len(shape)} dimension(s) but is configured with "
            f"array shards on its first {dims}; lower dims to at most {len(shape)}"
        )
    for dim in range(dims):
        if chunks[dim] != 1:
            label = _describe_dim(dim, names)
            hint = f" (xarray: .chunk({{{names[dim]!r}: 1}}))" if names and names[dim] else ""
            raise LayoutError(
                f"array {path!r}: chunk size along {label} is {chunks[dim]}, but array "
                f"shards split the first {dims} dimension(s) one index per shard, so the "
                f"chunk size there must be 1; rechunk to 1 along {label}{hint}"
            )


def _strip_codecs(codecs: list[JSON], dims: int) -> list[JSON]:
    """Drop the sharded dims from dimension-aware codecs (sharding, transpose)."""
    out = []
    for codec in codecs:
        if not isinstance(codec, dict):
            out.append(codec)
            continue
        codec = copy.deepcopy(codec)
        config = codec.get("configuration")
        name = codec.get("name")
        if name == "sharding_indexed" and isinstance(config, dict):
            config["chunk_shape"] = list(config["chunk_shape"])[dims:]
            for field in ("codecs", "index_codecs"):
                if field in config:
                    config[field] = _strip_codecs(config[field], dims)
        elif name == "transpose" and isinstance(config, dict):
            order = config["order"]
            config["order"] = [axis - dims for axis in order if axis >= dims]
        out.append(codec)
    return out


def _v3_layout(path: str, doc: JSON, dims: int) -> ShardedArrayLayout:
    if doc.get("node_type") != "array":
        raise LayoutError(
            f"{path}/zarr.json describes a {doc.get('node_type')!r}, but {path!r} is "
            "configured for array shards; remove it from the array shards or write an array"
        )
    try:
        shape = [int(s) for s in doc["shape"]]
        grid = doc["chunk_grid"]
        if grid.get("name") != "regular":
            raise LayoutError(
                f"array {path!r}: array shards need a regular chunk grid, got {grid.get('name')!r}"
            )
        chunks = [int(c) for c in grid["configuration"]["chunk_shape"]]
        encoding = doc.get("chunk_key_encoding", {"name": "default"})
    except (KeyError, TypeError, AttributeError) as err:
        raise LayoutError(f"{path}/zarr.json: malformed array metadata ({err!r})") from None
    names = doc.get("dimension_names")
    _check_shardable(path, shape, chunks, dims, names)
    enc_name = encoding.get("name")
    separator = (encoding.get("configuration") or {}).get("separator")
    if enc_name == "default":
        key_format = ChunkKeyFormat("c", separator or "/", len(shape) - dims)
    elif enc_name == "v2":
        key_format = ChunkKeyFormat("", separator or ".", len(shape) - dims)
    else:
        raise LayoutError(
            f"array {path!r}: chunk key encoding {enc_name!r} is not supported by array "
            "shards; use 'default' or 'v2'"
        )
    sub = copy.deepcopy(doc)
    sub["shape"] = shape[dims:]
    sub["chunk_grid"] = {"name": "regular", "configuration": {"chunk_shape": chunks[dims:]}}
    if names is not None:
        sub["dimension_names"] = list(names)[dims:]
    sub["attributes"] = {}
    if "codecs" in sub:
        sub["codecs"] = _strip_codecs(sub["codecs"], dims)
    return ShardedArrayLayout(key_format, {"zarr.json": _encode(sub)}, tuple(shape))


def _v2_layout(path: str, zarray: JSON, zattrs: JSON | None, dims: int) -> ShardedArrayLayout:
    try:
        shape = [int(s) for s in zarray["shape"]]
        chunks = [int(c) for c in zarray["chunks"]]
    except (KeyError, TypeError) as err:
        raise LayoutError(f"{path}/.zarray: malformed array metadata ({err!r})") from None
    names = None
    if isinstance(zattrs, dict) and isinstance(zattrs.get("_ARRAY_DIMENSIONS"), list):
        names = zattrs["_ARRAY_DIMENSIONS"]
    _check_shardable(path, shape, chunks, dims, names)
    separator = zarray.get("dimension_separator") or "."
    sub = dict(zarray)
    sub["shape"] = shape[dims:]
    sub["chunks"] = chunks[dims:]
    documents = {".zarray": _encode(sub)}
    if names is not None:
        documents[".zattrs"] = _encode({"_ARRAY_DIMENSIONS": names[dims:]})
    return ShardedArrayLayout(
        ChunkKeyFormat("", separator, len(shape) - dims), documents, tuple(shape)
    )


def sharded_array_layout(
    path: str, documents: Mapping[str, JSON], dims: int
) -> ShardedArrayLayout | None:
    """Derive the shard layout of the array at ``path`` from its metadata documents.

    Parameters
    ----------
    path
        The array's node path (for error messages).
    documents
        The array's parsed metadata documents by key: ``zarr.json`` (v3), or
        ``.zarray`` and optionally ``.zattrs`` (v2).
    dims
        Number of leading dimensions the array is sharded on.

    Returns
    -------
    ShardedArrayLayout or None
        None when there is no array metadata yet (only attributes, or nothing).

    Raises
    ------
    LayoutError
        If the metadata describes a group, or the array cannot be sharded as
        configured (fewer dims than ``dims``, chunk size other than 1 along a sharded
        dimension, an irregular chunk grid or unknown chunk-key encoding).
    """
    if ".zgroup" in documents:
        raise LayoutError(
            f"{path}/.zgroup: {path!r} is configured for array shards, but a group is being "
            "written there; remove it from the array shards or write an array"
        )
    if "zarr.json" in documents:
        return _v3_layout(path, documents["zarr.json"], dims)
    if ".zarray" in documents:
        return _v2_layout(path, documents[".zarray"], documents.get(".zattrs"), dims)
    return None
