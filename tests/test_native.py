"""Native engines (zarrs, TensorStore) through ``ShardedCodecPipeline``: bit-identical.

Every case writes the same sequence of values into two layouts, one through zarr's own
pipeline and one through an engine, then compares the two layouts file by file
(metadata byte for byte; chunk files byte for byte where they are not compressed, as
compressors differ between implementations) and reads both with both pipelines,
comparing the values bit for bit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from zarr.abc.store import ByteRequest
from zarr.codecs import BytesCodec, ZstdCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.core.indexing import BasicIndexer
from zarr.storage import LocalStore, MemoryStore, ZipStore

import shardedstore
from shardedstore import (
    CommitError,
    MissingDependencyError,
    ShardedCodecPipeline,
    ShardedStore,
    array_shard_directory_store,
    array_shard_template_store,
    use_engine,
)
from shardedstore.native.regions import ChunkKeys, merge_region

ENGINES = ["zarrs", "tensorstore"]
SHAPE = (3, 10, 13)
CHUNKS = (1, 4, 5)  # edge chunks along both inner dimensions
METADATA_NAMES = {"zarr.json", ".zarray", ".zattrs", ".zgroup"}


class CountingStore(ShardedStore):
    """A ShardedStore counting the chunk reads and writes that reach it (not an engine)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_gets = 0
        self.chunk_sets = 0

    @staticmethod
    def _is_chunk(key: str) -> bool:
        return key.rsplit("/", 1)[-1] not in METADATA_NAMES

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        self.chunk_gets += self._is_chunk(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Any
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        self.chunk_gets += sum(self._is_chunk(key) for key, _ in key_ranges)
        return await super().get_partial_values(prototype, key_ranges)

    async def set(self, key: str, value: Buffer) -> None:
        self.chunk_sets += self._is_chunk(key)
        await super().set(key, value)


def layout(root: Path, *, counting: bool = False) -> ShardedStore:
    """Base and a mount in directories; array ``a`` sharded on its first dimension."""
    kind = CountingStore if counting else ShardedStore
    return kind(
        LocalStore(root / "base"),
        {"m": LocalStore(root / "mount")},
        {"a": (1, array_shard_directory_store(root / "shards"))},
    )


@contextlib.contextmanager
def default_pipeline() -> Iterator[None]:
    """zarr's own pipeline, whatever the environment selects."""
    with zarr.config.set({"codec_pipeline.path": "zarr.core.codec_pipeline.BatchedCodecPipeline"}):
        yield


def pipeline(engine: str) -> contextlib.AbstractContextManager[Any]:
    return default_pipeline() if engine == "default" else use_engine(engine)


# ------------------------------------------------------------------ the cases


def _values(dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Random values of ``dtype`` in SHAPE (negative zeros and NaN among floats)."""
    size = int(np.prod(SHAPE))
    kind = np.dtype(dtype).kind if dtype is not str else "T"
    if kind == "b":
        values: Any = rng.random(size) < 0.5
    elif kind in "iu":
        native = np.dtype(dtype).newbyteorder("=")
        info = np.iinfo(native)
        low, high = max(info.min, -(2**40)), min(info.max, 2**40)
        values = rng.integers(low, high, size, dtype=native).astype(dtype)
    elif kind == "f":
        values = rng.standard_normal(size).astype(dtype)
        values[::17] = np.nan
        values[::23] = -0.0
    elif kind == "c":
        values = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(dtype)
    elif kind == "M":
        values = rng.integers(0, 2**31, size).astype(dtype)
    elif kind == "m":
        values = rng.integers(-(2**31), 2**31, size).astype(dtype)
    elif kind == "S":
        values = np.array([bytes(rng.integers(97, 123, 3)) for _ in range(size)], dtype=dtype)
    elif kind == "U":
        values = np.array(["".join(map(chr, rng.integers(945, 970, 2))) for _ in range(size)])
        values = values.astype(dtype)
    else:  # variable-length strings
        words = ["", "a", "zarr", "Zürich", "\u2603" * 3]
        values = np.array([words[i] for i in rng.integers(0, len(words), size)], dtype=object)
    return np.asarray(values).reshape(SHAPE)


# (name, dtype, fill value, formats): fill None is the format's default.
DTYPES: list[tuple[str, Any, Any, tuple[int, ...]]] = [
    ("bool", "bool", True, (2, 3)),
    ("int8", "i1", -3, (2, 3)),
    ("uint16", "u2", 7, (2, 3)),
    ("int64", "i8", None, (2, 3)),
    ("uint64", "u8", 2**63 + 5, (2, 3)),
    ("float16", "f2", None, (2, 3)),
    ("float32", "f4", np.nan, (2, 3)),
    ("float64", "f8", -0.0, (2, 3)),
    ("float64-big", ">f8", 1.5, (2, 3)),
    ("int32-big", ">i4", 9, (2,)),
    ("complex64", "c8", 1 + 2j, (2, 3)),
    ("complex128", "c16", None, (2, 3)),
    ("datetime64", "M8[s]", None, (2, 3)),
    ("timedelta64", "m8[ms]", None, (2, 3)),
    ("bytes", "S3", b"xyz", (2, 3)),
    ("unicode", "<U2", "ab", (2, 3)),
    ("string", str, "", (2, 3)),
]


def _create(
    store: ShardedStore,
    dtype: Any,
    fill: Any,
    zarr_format: int,
    compressed: bool,
    sharding: bool,
) -> zarr.Array[Any]:
    options: dict[str, Any] = {}
    if zarr_format == 3 and isinstance(dtype, str) and dtype.startswith(">"):
        options["serializer"] = BytesCodec(endian="big")
        dtype = dtype[1:]
    if compressed:
        options["compressors"] = ZstdCodec(level=3) if zarr_format == 3 else numcodecs.Zstd(3)
    else:
        options["compressors"] = None
    if sharding:
        options["shards"] = (1, 8, 10)
    if fill is not None:
        options["fill_value"] = fill
    return zarr.create_array(
        store,
        name="a",
        shape=SHAPE,
        chunks=CHUNKS,
        dtype=dtype,
        zarr_format=zarr_format,
        **options,
    )


def _write_sequence(array: zarr.Array[Any], values: np.ndarray, fill: Any) -> None:
    """Whole chunks, partial chunks, a chunk made all fill again, a time step of fill."""
    array[0] = values[0]
    array[1, 2:9, 3:11] = values[1, 2:9, 3:11]
    array[0, 4:8, 5:10] = array.fill_value  # one whole chunk back to the fill value
    array[2] = array.fill_value  # a shard that never needs to exist
    array[1, 9, :] = values[1, 9, :]  # the edge row
    array[0, 0, 0] = values[0, 0, 0]


SELECTIONS: list[tuple[str, Callable[[zarr.Array[Any]], Any]]] = [
    ("all", lambda a: a[...]),
    ("step", lambda a: a[1]),
    ("box", lambda a: a[0:2, 2:9, 3:12]),
    ("strided", lambda a: a[:, 3, ::2]),
    ("edge", lambda a: a[1, 8:, 10:]),
    ("element", lambda a: a[1, 9, 12]),
    ("orthogonal", lambda a: a.oindex[[0, 1], :, [1, 4, 12]]),
    ("points", lambda a: a.vindex[[0, 1, 1], [2, 3, 9], [4, 5, 12]]),
]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _bits(value: Any) -> Any:
    """What bit-identical means for a result: its bytes, or its items for objects."""
    array = np.asarray(value)
    if array.dtype.kind in "OT":
        return (array.shape, str(array.dtype), array.ravel().tolist())
    return (array.shape, array.dtype.str, array.tobytes())


def _check_identical(
    tmp_path: Path,
    engine: str,
    dtype: Any,
    fill: Any,
    zarr_format: int,
    compressed: bool = False,
    sharding: bool = False,
) -> None:
    values = _values(dtype, np.random.default_rng(21))
    roots = {name: tmp_path / name for name in ("default", engine)}
    for name, root in roots.items():
        store = layout(root)
        with pipeline(name):
            _write_sequence(
                _create(store, dtype, fill, zarr_format, compressed, sharding), values, fill
            )
        store.close()
    written = {name: _files(root) for name, root in roots.items()}
    assert written["default"].keys() == written[engine].keys()
    for path, data in written["default"].items():
        # Compressors and the order of chunks inside a shard are each implementation's.
        if Path(path).name in METADATA_NAMES or not (compressed or sharding):
            assert written[engine][path] == data, path
    assert not (roots[engine] / "shards" / "2.zarr").exists()  # all fill: never created
    results = {}
    for source, root in roots.items():
        for reader in ("default", engine):
            with pipeline(reader):
                array = zarr.open_array(layout(root), path="a", mode="r")
                results[source, reader] = {name: _bits(read(array)) for name, read in SELECTIONS}
    expected = results["default", "default"]
    for key, got in results.items():
        for name in expected:
            assert got[name] == expected[name], (key, name)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("zarr_format", "name", "dtype", "fill"),
    [(f, name, dtype, fill) for name, dtype, fill, formats in DTYPES for f in formats],
    ids=[f"v{f}-{name}" for name, _, _, formats in DTYPES for f in formats],
)
def test_every_dtype_is_bit_identical(
    tmp_path: Path, engine: str, zarr_format: int, name: str, dtype: Any, fill: Any
) -> None:
    _check_identical(tmp_path, engine, dtype, fill, zarr_format)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("dtype", "fill"), [("f4", np.nan), ("i2", 5), ("bool", None), ("c16", 0j), (str, "x")]
)
def test_compressed_is_bit_identical(
    tmp_path: Path, engine: str, zarr_format: int, dtype: Any, fill: Any
) -> None:
    _check_identical(tmp_path, engine, dtype, fill, zarr_format, compressed=True)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize(("dtype", "fill"), [("f8", np.nan), ("u1", 3), ("bool", False)])
def test_sharding_codec_is_bit_identical(
    tmp_path: Path, engine: str, compressed: bool, dtype: Any, fill: Any
) -> None:
    _check_identical(tmp_path, engine, dtype, fill, 3, compressed=compressed, sharding=True)


# ------------------------------------------------------- the engine does the I/O


@pytest.mark.parametrize("engine", ENGINES)
def test_local_chunks_go_to_the_engine(tmp_path: Path, engine: str) -> None:
    values = np.arange(np.prod(SHAPE), dtype="f4").reshape(SHAPE)
    store = layout(tmp_path, counting=True)
    assert isinstance(store, CountingStore)
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        assert isinstance(array.async_array.codec_pipeline, ShardedCodecPipeline)
        array[:] = values
        assert store.chunk_sets == 0
        assert np.array_equal(array[:], values)
        assert np.array_equal(array[1, 2:7, 3:9], values[1, 2:7, 3:9])
        assert store.chunk_gets == 0
        # TensorStore takes boxes only: a strided selection goes to zarr's pipeline.
        assert np.array_equal(array[:, ::2, 1], values[:, ::2, 1])
        assert (store.chunk_gets > 0) == (engine == "tensorstore")
    with default_pipeline():  # the same layout without the engine: through the store
        store.chunk_gets = 0
        assert np.array_equal(zarr.open_array(store, path="a")[:], values)
        assert store.chunk_gets == 3 * 3 * 3


@pytest.mark.parametrize("engine", ENGINES)
def test_mounts_and_base_run_on_the_engine(tmp_path: Path, engine: str) -> None:
    values = np.arange(10 * 13, dtype="i4").reshape(10, 13)
    store = layout(tmp_path, counting=True)
    assert isinstance(store, CountingStore)
    with use_engine(engine):
        group = zarr.open_group(store, mode="w")
        for path in ("m/deep/b", "plain"):
            array = group.create_array(path, shape=values.shape, chunks=(4, 5), dtype="i4")
            array[:] = values
            array[2:6, 1:4] = -1
        assert store.chunk_sets == 0
        for path in ("m/deep/b", "plain"):
            back = zarr.open_array(store, path=path)[:]
            expected = values.copy()
            expected[2:6, 1:4] = -1
            assert np.array_equal(back, expected)
        assert store.chunk_gets == 0
    assert (tmp_path / "mount" / "deep" / "b" / "c" / "0" / "0").is_file()
    assert (tmp_path / "base" / "plain" / "c" / "0" / "0").is_file()


@pytest.mark.parametrize("engine", ENGINES)
def test_zip_shards_and_memory_mounts_go_through_the_store(tmp_path: Path, engine: str) -> None:
    values = np.arange(np.prod(SHAPE), dtype="f8").reshape(SHAPE)
    template = {"type": "zip", "path": str(tmp_path / "zips" / "{chunk}.zip")}

    def make() -> ShardedStore:
        return ShardedStore(
            LocalStore(tmp_path / "base"),
            {"mem": MemoryStore(memory)},
            {"a": (1, array_shard_template_store(template))},
        )

    memory: dict[str, Buffer] = {}
    with use_engine(engine):
        store = make()
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f8")
        array[:] = values
        mem = zarr.create_array(store, name="mem/b", shape=(5,), chunks=(2,), dtype="i1")
        mem[:] = [1, 2, 3, 4, 5]
        store.close()
        again = make()
        assert np.array_equal(zarr.open_array(again, path="a")[:], values)
        assert zarr.open_array(again, path="mem/b")[:].tolist() == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp_path / "zips")) == ["0.zip", "1.zip", "2.zip"]


def test_plain_stores_get_the_engines_own_pipeline(tmp_path: Path) -> None:
    from zarrs import ZarrsCodecPipeline

    zarr.create_array(LocalStore(tmp_path), name="x", shape=(4,), chunks=(2,), dtype="i2")
    for engine, expected in [
        ("zarrs", ZarrsCodecPipeline),
        ("auto", ZarrsCodecPipeline),
        ("tensorstore", BatchedCodecPipeline),
        ("zarr", BatchedCodecPipeline),
    ]:
        with use_engine(engine):
            array = zarr.open_array(LocalStore(tmp_path), path="x")
            assert type(array.async_array.codec_pipeline) is expected, engine
            array[:] = [1, 2, 3, 4]
            assert array[:].tolist() == [1, 2, 3, 4]


# --------------------------------------------------------------------- writes


@pytest.mark.parametrize("engine", ENGINES)
def test_read_only_layouts_refuse_engine_writes(tmp_path: Path, engine: str) -> None:
    zarr.create_array(layout(tmp_path), name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
    with use_engine(engine):
        array = zarr.open_array(layout(tmp_path).with_read_only(True), path="a")
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1.0
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_engine_write_keeps_the_zip_base_from_committing(
    tmp_path: Path, engine: str
) -> None:
    def make() -> ShardedStore:
        return ShardedStore(
            ZipStore(tmp_path / "base.zip", mode="a"),
            {},
            {"a": (1, array_shard_directory_store(tmp_path / "shards"))},
        )

    store = make()
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        array[0] = 1.0  # shard 0 exists
        # A file where the shard's chunk directory goes: the engine cannot write there.
        blocker = tmp_path / "shards" / "0.zarr" / "c" / "1"
        shutil.rmtree(blocker)
        blocker.write_bytes(b"not a directory")
        with pytest.raises(Exception):  # noqa: B017, PT011 - each engine words it its own way
            array[0] = 2.0
    with pytest.raises(CommitError, match=r"the write of 'a/c/0/\d/\d' failed"):
        store.close()
    assert not (tmp_path / "base.zip").exists()  # the array's metadata was never committed


@pytest.mark.parametrize("engine", ENGINES)
def test_a_shard_that_cannot_be_created_keeps_the_zip_base_from_committing(
    tmp_path: Path, engine: str
) -> None:
    # The engine creates a new shard itself (store_for_write): a failure there must be
    # remembered as one inside ShardedStore.set is, or close() commits the base.
    store = ShardedStore(
        ZipStore(tmp_path / "base.zip", mode="a"),
        {},
        {"a": (1, array_shard_directory_store(tmp_path / "shards"))},
    )
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        array[0] = 1.0
        (tmp_path / "shards" / "1.zarr").write_bytes(b"a file where shard 1's folder goes")
        with pytest.raises(OSError):  # noqa: PT011 - FileExistsError or NotADirectoryError
            array[1] = 2.0
    with pytest.raises(CommitError, match=r"the write of 'a/c/1/\d/\d' failed"):
        store.close()
    assert not (tmp_path / "base.zip").exists()


@pytest.mark.parametrize("engine", ENGINES)
def test_writing_again_after_a_failure_commits(tmp_path: Path, engine: str) -> None:
    store = ShardedStore(
        ZipStore(tmp_path / "base.zip", mode="a"),
        {},
        {"a": (1, array_shard_directory_store(tmp_path / "shards"))},
    )
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        array[0] = 1.0
        blocker = tmp_path / "shards" / "0.zarr" / "c" / "1"
        shutil.rmtree(blocker)
        blocker.write_bytes(b"not a directory")
        with pytest.raises(Exception):  # noqa: B017, PT011
            array[0] = 2.0
        blocker.unlink()
        array[0] = 3.0
    store.close()
    reopened = ShardedStore(
        ZipStore(tmp_path / "base.zip", mode="r"),
        {},
        {"a": (1, array_shard_directory_store(tmp_path / "shards"))},
        read_only=True,
    )
    # No chunk write of the failed request lands after it raised (the engine pipeline
    # waits for those in flight), so the second write is what every cell holds.
    assert (zarr.open_array(reopened, path="a")[0] == 3.0).all()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_engine_write_leaves_no_chunk_write_in_flight(tmp_path: Path, engine: str) -> None:
    store = ShardedStore(
        LocalStore(tmp_path / "base"), {}, {"a": (1, array_shard_directory_store(tmp_path / "s"))}
    )
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        array[0] = 1.0
        blocker = tmp_path / "s" / "0.zarr" / "c" / "1"
        shutil.rmtree(blocker)
        blocker.write_bytes(b"not a directory")
        with pytest.raises(Exception):  # noqa: B017, PT011
            array[0] = 2.0
    written = _files(tmp_path / "s")
    time.sleep(0.2)  # what the engine had in flight would land now
    assert _files(tmp_path / "s") == written
    with pytest.raises(CommitError):
        store.close()


class FailingMemoryStore(MemoryStore):
    """A MemoryStore on which one chunk write fails at once and the others take a while."""

    async def set(self, key: str, value: Buffer, byte_range: Any = None) -> None:
        if key.rsplit("/", 1)[-1] not in METADATA_NAMES:
            if key.endswith("c/0/0/0"):
                raise OSError(f"no space left for {key}")
            await asyncio.sleep(0.05)
        await super().set(key, value)


@pytest.mark.parametrize("engine", ENGINES)
def test_no_chunk_write_of_a_failed_request_lands_after_it_raised(engine: str) -> None:
    memory: dict[str, Buffer] = {}
    store = ShardedStore(FailingMemoryStore(memory), {}, {})
    with use_engine(engine):
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="f4")
        with pytest.raises(OSError, match="no space left"):
            array[:] = 1.0
    written = dict(memory)
    time.sleep(0.3)  # what zarr's pipeline had in flight would land now
    assert dict(memory) == written


# ----------------------------------------------------------- arrays elsewhere


@pytest.mark.parametrize("engine", ENGINES)
def test_arrays_pickle_with_their_engine(tmp_path: Path, engine: str) -> None:
    with use_engine(engine):
        array = zarr.create_array(
            layout(tmp_path), name="a", shape=SHAPE, chunks=CHUNKS, dtype="i8"
        )
        array[:] = 5
    copy = pickle.loads(pickle.dumps(array))
    pipeline = copy.async_array.codec_pipeline
    assert isinstance(pipeline, ShardedCodecPipeline)
    assert pipeline.engine == engine
    assert (copy[:] == 5).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_xarray_and_dask_read_and_write_through_the_engine(tmp_path: Path, engine: str) -> None:
    data = np.random.default_rng(1).random((4, 6, 7)).astype("f4")
    ds = xr.Dataset({"v": (("t", "y", "x"), data)}, coords={"t": np.arange(4)})
    store = ShardedStore(
        LocalStore(tmp_path / "base"),
        {},
        {"v": (1, array_shard_directory_store(tmp_path / "v"))},
    )
    with use_engine(engine):
        ds.chunk({"t": 1, "y": 3}).to_zarr(store, mode="w", encoding={"v": {"chunks": (1, 3, 7)}})
        back = xr.open_zarr(store)
        assert back["v"].chunks == ((1, 1, 1, 1), (3, 3), (7,))
        assert back["v"].isel(t=2, y=slice(1, 5)).values.tobytes() == data[2, 1:5].tobytes()
        assert back["v"].values.tobytes() == data.tobytes()
    assert sorted(os.listdir(tmp_path / "v")) == ["0.zarr", "1.zarr", "2.zarr", "3.zarr"]


# ---------------------------------------------------------------- the choice


def test_use_engine_sets_zarrs_config_and_restores_it() -> None:
    before = zarr.config.get("codec_pipeline.path")
    with use_engine("tensorstore"):
        assert zarr.config.get("codec_pipeline.path") == "shardedstore.ShardedCodecPipeline"
        assert zarr.config.get("shardedstore.engine") == "tensorstore"
    assert zarr.config.get("codec_pipeline.path") == before


def test_unknown_engine_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of auto, zarrs, tensorstore, zarr"):
        use_engine("rust")
    with (
        zarr.config.set(
            {"codec_pipeline.path": "shardedstore.ShardedCodecPipeline", "shardedstore.engine": "x"}
        ),
        pytest.raises(ValueError, match="unknown shardedstore engine 'x'"),
    ):
        zarr.create_array(MemoryStore(), shape=(2,), dtype="i1")


def test_a_missing_engine_names_the_extra() -> None:
    import subprocess
    import sys

    # An entry of None in sys.modules is how Python marks a module as not importable
    # (importlib.util.find_spec then finds nothing either).
    script = (
        "import sys; sys.modules['tensorstore'] = None\n"
        "import shardedstore\n"
        "try:\n"
        "    shardedstore.use_engine('tensorstore')\n"
        "except shardedstore.MissingDependencyError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert "pip install 'shardedstore[tensorstore]'" in result.stdout
    assert issubclass(MissingDependencyError, ImportError)


def test_the_pipeline_is_named_by_its_public_name() -> None:
    assert shardedstore.ShardedCodecPipeline.__module__ == "shardedstore"
    from zarr.registry import get_pipeline_class

    with use_engine("zarr"):
        assert get_pipeline_class() is ShardedCodecPipeline


# -------------------------------------------------------------------- regions


def test_chunk_keys_split_every_encoding() -> None:
    assert ChunkKeys("c", "/", 3).split("g/a/c/1/2/3") == ("g/a", (1, 2, 3))
    assert ChunkKeys("c", ".", 2).split("a/c.1.2") == ("a", (1, 2))
    assert ChunkKeys("", "/", 2).split("a/1/2") == ("a", (1, 2))
    assert ChunkKeys("", ".", 0).split("a/0") == ("a", ())
    assert ChunkKeys("c", "/", 0).split("c") == ("", ())
    assert ChunkKeys("c", "/", 2).split("a/c/1") is None
    assert ChunkKeys("", ".", 2).split("a/1.x") is None
    assert ChunkKeys("c", "/", 2).encode((4,)) == "c/4"
    assert ChunkKeys("", "/", 2).encode((4, 5)) == "4/5"


@st.composite
def _basic_selections(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...], tuple[Any, ...]]:
    """An array shape, a chunk shape and a selection of slices and integers in it."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.integers(1, size)) for size in shape)
    selection: list[Any] = []
    for size in shape:
        start = draw(st.integers(0, size - 1))
        if draw(st.booleans()):
            selection.append(start)
        else:
            selection.append(slice(start, draw(st.integers(start + 1, size))))
    return shape, chunks, tuple(selection)


@settings(max_examples=200, deadline=None)
@given(_basic_selections())
def test_boxes_of_zarrs_items_form_the_selected_box(
    case: tuple[tuple[int, ...], tuple[int, ...], tuple[Any, ...]],
) -> None:
    shape, chunks, selection = case
    array = zarr.create_array(MemoryStore(), shape=shape, chunks=chunks, dtype="i1").async_array
    # zarr 3.2+ indexes with a runtime grid of its own, zarr 3.1 with the metadata's.
    grid = getattr(array, "_chunk_grid", array.metadata.chunk_grid)
    items = [
        (coords, chunk_selection, out_selection)
        for coords, chunk_selection, out_selection, _ in BasicIndexer(selection, shape, grid)
    ]
    region = merge_region(items, chunks)
    integers = tuple(isinstance(part, int) for part in selection)
    if all(integers):  # a single element: no output to view
        assert region is None
        return
    assert region is not None
    assert region.integers == integers
    assert region.start == tuple(p if isinstance(p, int) else p.start for p in selection)
    assert region.stop == tuple(p + 1 if isinstance(p, int) else p.stop for p in selection)
    assert region.out == tuple(slice(0, p.stop - p.start) for p in selection if type(p) is slice)
    # Any two chunks along a sliced dimension, apart: not one box.
    apart = [item for item in items if item[0][0] % 2 == 0]
    if not integers[0] and len({item[0][0] for item in apart}) > 1:
        assert merge_region(apart, chunks) is None


def test_merge_region_refuses_what_is_not_one_box() -> None:
    full = (slice(0, 2), slice(0, 2))
    # Two chunks side by side: one box.
    region = merge_region(
        [((0, 0), full, full), ((0, 1), full, (slice(0, 2), slice(2, 4)))], (2, 2)
    )
    assert region is not None
    assert (region.start, region.stop) == ((0, 0), (2, 4))
    # A missing chunk in between: not one box.
    assert (
        merge_region([((0, 0), full, full), ((0, 2), full, (slice(0, 2), slice(2, 4)))], (2, 2))
        is None
    )
    # Steps, integer arrays: not a box.
    assert merge_region([((0, 0), (slice(0, 2, 2), slice(0, 2)), full)], (2, 2)) is None
    assert merge_region([((0, 0), (np.array([0, 1]), slice(0, 2)), full)], (2, 2)) is None
    # The output not the same box shifted.
    assert merge_region([((0, 0), full, full), ((0, 1), full, full)], (2, 2)) is None
    # An integer drops its dimension from the output.
    region = merge_region([((1, 0), (1, slice(0, 2)), (slice(0, 2),))], (2, 2))
    assert region is not None
    assert region.index(0) == (3, slice(0, 2))
    assert region.index(1) == (slice(0, 2),)


def _two_layouts(tmp_path: Path) -> tuple[ShardedStore, ShardedStore]:
    made = []
    for name in ("batch", "one"):
        store = ShardedStore(
            LocalStore(tmp_path / name / "base.zarr"),
            {},
            {"a": (1, array_shard_directory_store(tmp_path / name / "shards"))},
        )
        zarr.create_array(
            store, name="a", shape=(8, 4), chunks=(1, 2), dtype="<i2", compressors=None
        )
        made.append(store)
    return made[0], made[1]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
    }


@settings(max_examples=25, deadline=None)
@given(
    existing=st.sets(st.integers(0, 7), max_size=3),
    keys=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 1)), min_size=1, max_size=12),
)
def test_stores_for_write_is_store_for_write_of_each_key(
    tmp_path_factory: pytest.TempPathFactory, existing: set[int], keys: list[tuple[int, int]]
) -> None:
    # The batch makes the new shards of all keys together; what it returns, and what
    # it leaves on disk, is what one store_for_write per key gives.
    tmp_path = tmp_path_factory.mktemp("layouts")
    batch, one = _two_layouts(tmp_path)
    for store in (batch, one):
        for step in existing:
            zarr.open_array(store, path="a")[step] = 1
    names = [f"a/c/{step}/{part}" for step, part in keys]

    async def both() -> tuple[list[tuple[Any, str]], list[tuple[Any, str]]]:
        together = list(await batch.stores_for_write(names))
        each = [await one.store_for_write(name) for name in names]
        return together, each

    together, each = zarr.core.sync.sync(both())
    assert [inner for _, inner in together] == [inner for _, inner in each]
    assert [type(s) for s, _ in together] == [type(s) for s, _ in each]
    assert [s.root.relative_to(tmp_path / "batch") for s, _ in together] == [  # type: ignore[attr-defined]
        s.root.relative_to(tmp_path / "one")
        for s, _ in each  # type: ignore[attr-defined]
    ]
    assert _tree(tmp_path / "batch") == _tree(tmp_path / "one")
    again = zarr.core.sync.sync(batch.stores_for_write(names))
    assert [s for s, _ in again] == [s for s, _ in together]  # made once, then kept


def test_a_set_during_a_batch_creation_waits_for_it(tmp_path: Path) -> None:
    # zarr's own pipeline (set) and an engine's batch writing shards of one request at
    # once: each shard is created once, and every writer sees it created.
    batch, _ = _two_layouts(tmp_path)
    value = np.ones(2, dtype="i2")

    async def both() -> None:
        buffer = zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(value.tobytes())
        await asyncio.gather(
            batch.stores_for_write([f"a/c/{step}/0" for step in range(6)]),
            *(batch.set(f"a/c/{step}/1", buffer) for step in range(3, 8)),
        )

    zarr.core.sync.sync(both())
    for step in range(8):
        assert (tmp_path / "batch" / "shards" / f"{step}.zarr" / "zarr.json").is_file()
    assert not list((tmp_path / "batch").rglob("*.partial"))
    np.testing.assert_array_equal(zarr.open_array(batch, path="a")[3:8, 2:4], 1)


def test_a_batch_that_fails_midway_can_be_written_again(tmp_path: Path) -> None:
    batch, _ = _two_layouts(tmp_path)
    shards = tmp_path / "batch" / "shards"
    shards.mkdir()
    (shards / "4.zarr").write_bytes(b"a file where shard 4's folder goes")
    names = [f"a/c/{step}/0" for step in range(8)]
    with pytest.raises(OSError):  # noqa: PT011 - NotADirectoryError
        zarr.core.sync.sync(batch.stores_for_write(names))
    (shards / "4.zarr").unlink()
    zarr.core.sync.sync(batch.stores_for_write(names))
    for step in range(8):
        assert (shards / f"{step}.zarr" / "zarr.json").is_file()


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.sampled_from([0.0, -0.0, 1.5, np.nan, np.inf, -2.0]), min_size=1, max_size=6
    ),
    fill=st.sampled_from([0.0, -0.0, 1.5, np.nan, None]),
    dtype=st.sampled_from(["f4", "f8", "c8"]),
)
def test_a_request_without_the_fill_value_has_no_part_of_fill(
    values: list[float], fill: float | None, dtype: str
) -> None:
    # The pipeline looks at each part of a request for all fill only when the request
    # holds the fill value somewhere (zarr's comparison: NaN equals NaN, -0.0 is not 0.0).
    from zarr.core.array_spec import ArrayConfig, ArraySpec
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.buffer.cpu import NDBuffer
    from zarr.dtype import parse_dtype

    from shardedstore.native.pipeline import _fill, _may_hold_fill

    zdtype = parse_dtype(np.dtype(dtype), zarr_format=3)
    spec = ArraySpec(
        shape=(1,),
        dtype=zdtype,
        fill_value=zdtype.cast_scalar(0.0 if fill is None else fill),
        config=ArrayConfig.from_dict({}),
        prototype=default_buffer_prototype(),
    )
    data = np.array(values, dtype=dtype)
    parts = [NDBuffer.from_numpy_array(data[i : i + 1]) for i in range(len(data))]
    if any(part.all_equal(_fill(spec)) for part in parts):
        assert _may_hold_fill(NDBuffer.from_numpy_array(data), spec)
