"""Which native engine reads and writes a layout's local directories, and whether it is here.

The engine is chosen in zarr's config, where zarr's own codec pipeline is chosen: the key
``shardedstore.engine`` (environment variable ``ZARR_SHARDEDSTORE__ENGINE``), read when
an array is opened. Engines are optional extras: ``shardedstore[zarrs]``,
``shardedstore[tensorstore]``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import numpy as np
from zarr.core.config import config

from shardedstore.errors import MissingDependencyError

__all__ = [
    "CONFIG_KEY",
    "ENGINES",
    "Engine",
    "EnginePlan",
    "configured_engine",
    "engine_plan",
    "installed",
    "require",
    "supports_dtype",
]

Engine = Literal["auto", "zarrs", "tensorstore", "zarr"]
"""``auto``: the fastest installed; ``zarrs``; ``tensorstore``; ``zarr``: zarr's own pipeline."""

ENGINES: Final[tuple[Engine, ...]] = get_args(Engine)

CONFIG_KEY: Final = "shardedstore.engine"
"""The key in zarr's config naming the engine (default ``auto``)."""

_EXTRA: Final = {"zarrs": "zarrs", "tensorstore": "tensorstore"}


_KINDS = frozenset("biufc")


def supports_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether the engines read and write ``dtype`` as zarr does: booleans and numbers.

    Others (strings, bytes, dates, structured types) go to zarr's own pipeline.
    """
    return dtype.kind in _KINDS and dtype.fields is None and dtype.subdtype is None


def installed(engine: str) -> bool:
    """Whether the package of ``engine`` can be imported (zarr's own always can)."""
    if engine not in _EXTRA:
        return True
    return importlib.util.find_spec(_EXTRA[engine]) is not None


def require(engine: str) -> Engine:
    """``engine``, checked: a known name whose package is installed.

    Raises
    ------
    ValueError
        If ``engine`` is not one of :data:`ENGINES`.
    MissingDependencyError
        If its package is not installed (the message names the extra to install).
    """
    if engine not in ENGINES:
        raise ValueError(
            f"unknown shardedstore engine {engine!r} (zarr config {CONFIG_KEY!r}); "
            f"choose one of {', '.join(ENGINES)}"
        )
    if not installed(engine):
        raise MissingDependencyError(
            f"the shardedstore engine {engine!r} needs the package {_EXTRA[engine]!r}: "
            f"pip install 'shardedstore[{engine}]', or choose engine 'auto' (the fastest "
            "installed) or 'zarr'"
        )
    return engine


def configured_engine() -> Engine:
    """The engine zarr's config names now (``auto`` when it names none)."""
    return require(str(config.get(CONFIG_KEY, "auto")))


@dataclass(frozen=True, slots=True)
class EnginePlan:
    """Which engine serves which part of the I/O of one array.

    Attributes
    ----------
    engine
        As chosen (``auto`` resolved into the fields below).
    read_regions
        Read every local store's part of a request with TensorStore when it is one box
        of the array (slices, integers) of a data type TensorStore reads as zarr does.
    read_chunks
        Read local chunks (the rest) with zarrs.
    write_regions
        Write one box per local store with TensorStore.
    write_chunks
        Write local chunks with zarrs.
    """

    engine: Engine
    read_regions: bool
    read_chunks: bool
    write_regions: bool
    write_chunks: bool

    @property
    def native(self) -> bool:
        """Whether any I/O goes to a native engine."""
        return self.read_regions or self.read_chunks or self.write_regions or self.write_chunks

    @property
    def zarrs(self) -> bool:
        """Whether zarrs serves any I/O (for arrays of plain stores too)."""
        return self.read_chunks or self.write_chunks


def engine_plan(engine: Engine) -> EnginePlan:
    """What ``engine`` means, given what is installed.

    ``auto`` reads with zarrs where it is installed (chunk by chunk, any selection),
    else with TensorStore; and writes with zarrs, else TensorStore (which syncs each
    chunk file to disk, zarrs and zarr do not). Measured in ``docs/benchmarks.md``.
    """
    if engine == "zarrs":
        return EnginePlan(engine, False, True, False, True)
    if engine == "tensorstore":
        return EnginePlan(engine, True, False, True, False)
    if engine == "zarr":
        return EnginePlan(engine, False, False, False, False)
    zarrs, tensorstore = installed("zarrs"), installed("tensorstore")
    return EnginePlan(
        engine,
        read_regions=tensorstore and not zarrs,
        read_chunks=zarrs,
        write_regions=tensorstore and not zarrs,
        write_chunks=zarrs,
    )
