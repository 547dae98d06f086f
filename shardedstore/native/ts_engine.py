"""TensorStore on the local directories of a layout: one box per directory, read or written.

Every array shard is a standalone Zarr array (its own metadata, the sub-array left once
the sharded dimensions are fixed), so TensorStore opens it alone, with its ``zarr3`` or
``zarr`` (v2) driver over its ``file`` key-value store. The part of a request that falls
in one shard is one box of that shard when zarr was asked for slices and integers; one
``read`` or ``write`` of that box replaces one call per chunk.

An array shard is opened assuming the metadata the layout says it holds
(``assume_metadata``): its own document is neither read nor written (the layout writes
it), and its chunks are decoded with the array's metadata, exactly as zarr's pipeline
decodes them (which never reads a shard's document either); opening costs no I/O.
Anything TensorStore cannot open (a codec it does not know) is declined, and zarr's own
pipeline serves it; the caller reads a shard that does not exist as fill values. Only
TensorStore's public API is used (``open`` and its documented spec, indexing, ``read``,
``write``).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorstore as ts

from shardedstore.native.regions import StoredRegion

__all__ = ["TensorStoreEngine", "metadata_constraint", "shard_metadata"]

MAX_OPEN = 1024
"""Most opened TensorStore arrays kept for reuse (by spec), in this process."""


class _Opened:
    """TensorStore arrays opened in this process, by spec (least recently used dropped).

    One context for all of them: a context starts TensorStore's thread pools, which
    costs more than opening an array. The spec names the metadata the array must hold,
    so an array whose metadata changed is opened again, never read with the old one;
    no chunk is cached (TensorStore's default cache pool holds nothing).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrays: OrderedDict[str, ts.TensorStore] = OrderedDict()
        self._context: ts.Context | None = None

    @property
    def context(self) -> ts.Context:
        with self._lock:
            if self._context is None:
                self._context = ts.Context()
            return self._context

    def get(self, key: str) -> ts.TensorStore | None:
        with self._lock:
            array = self._arrays.get(key)
            if array is not None:
                self._arrays.move_to_end(key)
            return array

    def put(self, key: str, array: ts.TensorStore) -> None:
        with self._lock:
            self._arrays[key] = array
            while len(self._arrays) > MAX_OPEN:
                self._arrays.popitem(last=False)


_OPENED = _Opened()


class TensorStoreEngine:
    """TensorStore on the local directories of one zarr array.

    Parameters
    ----------
    zarr_format
        The array's Zarr format (2 or 3).
    """

    def __init__(self, zarr_format: int) -> None:
        self._driver = "zarr3" if zarr_format == 3 else "zarr"

    async def _array(
        self, directory: str, metadata: Mapping[str, Any], write: bool, store_empty: bool
    ) -> ts.TensorStore | None:
        """The array in ``directory``, assumed to hold ``metadata`` (None: TensorStore
        cannot open such an array)."""
        spec: dict[str, Any] = {
            "driver": self._driver,
            "kvstore": {"driver": "file", "path": directory.rstrip("/") + "/"},
            "metadata": dict(metadata),
            "assume_metadata": True,
            "store_data_equal_to_fill_value": store_empty,
        }
        key = json.dumps([spec, write], sort_keys=True)
        array = _OPENED.get(key)
        if array is not None:
            return array
        try:
            array = await ts.open(spec, read=True, write=write, context=_OPENED.context)
        except ValueError:  # a codec or data type it lacks
            return None
        _OPENED.put(key, array)
        return array

    async def _box(
        self, part: StoredRegion, store_empty: bool | None = None
    ) -> ts.TensorStore | None:
        """``part`` in the output's coordinates, to read (``store_empty`` None) or
        write; None: declined."""
        write = store_empty is not None
        array = await self._array(part.directory, part.metadata, write, bool(store_empty))
        return None if array is None else array[part.region.index(part.drop)].translate_to[0]

    async def read(self, part: StoredRegion, out: np.ndarray[Any, Any]) -> bool:
        """Read ``part`` into ``out``; False: declined."""
        source = await self._box(part)
        if source is None:
            return False
        target = out[part.region.out]
        if target.dtype.isnative:  # decoded straight into the output
            with contextlib.suppress(ValueError):  # unless it cannot be referenced
                await ts.array(target, copy=False, write=True).write(source)
                return True
        # TensorStore's arrays are in native byte order: numpy converts.
        target[...] = await source.read()
        return True

    async def write(
        self, part: StoredRegion, value: np.ndarray[Any, Any], store_empty: bool
    ) -> bool:
        """Write ``part`` from ``value`` (a scalar is broadcast); False: declined.

        One transaction: its commit ends once every chunk is written or has failed, so no
        chunk write of a failed request is still to come when it raises."""
        target = await self._box(part, store_empty)
        if target is None:
            return False
        source = value if value.shape == () else value[part.region.out]
        if not source.dtype.isnative:  # TensorStore's arrays are in native byte order
            source = source.astype(source.dtype.newbyteorder("="))
        transaction = ts.Transaction()
        await target.with_transaction(transaction).write(source)
        await transaction.commit_async()
        return True


def metadata_constraint(document: Mapping[str, Any]) -> dict[str, Any]:
    """What TensorStore must find in an array's metadata document: all of it but the
    attributes (they do not change how chunks decode, and v2's are not in ``.zarray``)."""
    return {name: value for name, value in document.items() if name != "attributes"}


def shard_metadata(documents: Mapping[str, bytes]) -> dict[str, Any] | None:
    """The metadata an array shard must hold (its documents as the layout writes them)."""
    for name in ("zarr.json", ".zarray"):
        if name in documents:
            return metadata_constraint(json.loads(documents[name]))
    return None
