"""Sub-array metadata written into array shards, and the layout checks."""

from __future__ import annotations

import json

import pytest

from shardedstore import LayoutError
from shardedstore.store.metadata import parse_metadata_document, sharded_array_layout
from shardedstore.store.routing import ChunkKeyFormat


def v3_doc(shape: list[int], chunks: list[int], **extra: object) -> dict[str, object]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": chunks}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {"units": "K"},
        **extra,
    }


def test_v3_sub_array() -> None:
    doc = v3_doc([12, 16, 32], [1, 8, 16], dimension_names=["time", "lat", "lon"])
    layout = sharded_array_layout("t", {"zarr.json": doc}, 1)
    assert layout is not None
    assert layout.key_format == ChunkKeyFormat("c", "/", 2)
    sub = json.loads(layout.shard_documents["zarr.json"])
    assert sub["shape"] == [16, 32]
    assert sub["chunk_grid"]["configuration"]["chunk_shape"] == [8, 16]
    assert sub["dimension_names"] == ["lat", "lon"]
    assert sub["attributes"] == {}
    assert layout.shape == (12, 16, 32)


def test_v3_sharding_codec_and_transpose_drop_sharded_dims() -> None:
    codecs = [
        {"name": "transpose", "configuration": {"order": [0, 2, 1]}},
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [1, 4, 4],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
            },
        },
    ]
    doc = v3_doc([5, 8, 8], [1, 8, 8], codecs=codecs)
    layout = sharded_array_layout("x", {"zarr.json": doc}, 1)
    assert layout is not None
    sub = json.loads(layout.shard_documents["zarr.json"])
    assert sub["codecs"][0]["configuration"]["order"] == [1, 0]
    assert sub["codecs"][1]["configuration"]["chunk_shape"] == [4, 4]


def test_v2_sub_array_with_dimension_names() -> None:
    zarray = {
        "zarr_format": 2,
        "shape": [30, 4],
        "chunks": [1, 2],
        "dtype": "<f8",
        "compressor": None,
        "fill_value": "NaN",
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
    docs = {".zarray": zarray, ".zattrs": {"_ARRAY_DIMENSIONS": ["x", "y"], "a": 1}}
    layout = sharded_array_layout("v", docs, 1)
    assert layout is not None
    assert layout.key_format == ChunkKeyFormat("", "/", 1)
    assert json.loads(layout.shard_documents[".zarray"])["shape"] == [4]
    assert json.loads(layout.shard_documents[".zarray"])["compressor"] is None
    assert json.loads(layout.shard_documents[".zattrs"]) == {"_ARRAY_DIMENSIONS": ["y"]}


def test_chunk_size_other_than_one_names_the_dimension() -> None:
    doc = v3_doc([12, 16], [4, 16], dimension_names=["time", "lat"])
    with pytest.raises(LayoutError, match=r"dimension 0 \('time'\) is 4.*must be 1"):
        sharded_array_layout("t", {"zarr.json": doc}, 1)


def test_too_few_dimensions() -> None:
    with pytest.raises(LayoutError, match="has 1 dimension"):
        sharded_array_layout("t", {"zarr.json": v3_doc([3], [1])}, 2)


def test_group_at_array_shard_path() -> None:
    group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    with pytest.raises(LayoutError, match="describes a 'group'"):
        sharded_array_layout("t", {"zarr.json": group}, 1)
    with pytest.raises(LayoutError, match=r"\.zgroup"):
        sharded_array_layout("t", {".zgroup": {"zarr_format": 2}}, 1)


def test_attributes_alone_are_not_a_layout() -> None:
    assert sharded_array_layout("t", {".zattrs": {"a": 1}}, 1) is None


@pytest.mark.parametrize("value", [b"\xff", b"not json", b"[1, 2]"])
def test_unparseable_metadata(value: bytes) -> None:
    with pytest.raises(LayoutError, match=r"t/zarr\.json"):
        parse_metadata_document("t", "zarr.json", value)
