"""Pure geometry for the native engines: chunk keys to coordinates, chunks to boxes.

zarr hands a codec pipeline one item per chunk: the chunk's key, the part of the chunk
selected (``chunk_selection``) and where that part goes in the output
(``out_selection``). An engine that reads or writes whole regions (TensorStore) needs
the items of one store as one box of the array and one box of the output; this module
says whether they form one, and which. Nothing here performs I/O or imports zarr.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from shardedstore.store.routing import parse_chunk_key

__all__ = ["Boxes", "ChunkKeys", "Region", "StoredRegion", "merge_region"]


@dataclass(frozen=True, slots=True)
class ChunkKeys:
    """How an array spells its chunk keys, to read them back: ``prefix`` and
    ``separator`` as in :class:`~shardedstore.store.routing.ChunkKeyFormat`, ``ndim``
    the array's number of dimensions (all of them, where that counts an array shard's)."""

    prefix: str
    separator: str
    ndim: int

    @property
    def parts(self) -> int:
        """How many ``/``-separated parts a chunk key has (``c/0/1``: 3, ``0.1``: 1)."""
        if self.separator != "/" or self.ndim == 0:
            return 1
        return self.ndim + (1 if self.prefix else 0)

    def split(self, key: str) -> tuple[str, tuple[int, ...]] | None:
        """``(node path, chunk coordinates)`` of a chunk key of the array, or None.

        Examples
        --------
        >>> ChunkKeys("c", "/", 2).split("group/a/c/3/0")
        ('group/a', (3, 0))
        >>> ChunkKeys("", ".", 2).split("a/3.0")
        ('a', (3, 0))
        >>> ChunkKeys("c", "/", 1).split("c/4")
        ('', (4,))
        """
        pieces = key.rsplit("/", self.parts)
        if len(pieces) == self.parts + 1:
            node, chunk = pieces[0], "/".join(pieces[1:])
        elif len(pieces) == self.parts:
            node, chunk = "", key
        else:
            return None
        coords = parse_chunk_key(chunk, self.prefix, self.separator, self.ndim)
        return None if coords is None else (node, coords)

    def match(self, node: str, keys: Sequence[str | None]) -> list[tuple[str, ...] | None]:
        """The coordinates (as digits) of each of ``keys`` that is a chunk key of the
        array at ``node``, else None: one regular expression per key, no Python per part.

        Examples
        --------
        >>> ChunkKeys("c", "/", 2).match("a", ["a/c/3/0", "a/c/03/0", "b/c/1/1", None])
        [('3', '0'), None, None, None]
        """
        pattern = _key_pattern(self.prefix, self.separator, self.ndim, node)
        # "" is no chunk key of any array: the pattern has at least one character.
        matched = map(pattern.fullmatch, [key or "" for key in keys])
        return [None if found is None else found.groups() for found in matched]

    def encode(self, coords: Sequence[int]) -> str:
        """The chunk key of ``coords`` (any number of them: an array shard has fewer).

        Examples
        --------
        >>> ChunkKeys("c", "/", 3).encode((0, 1))
        'c/0/1'
        >>> ChunkKeys("", ".", 1).encode(())
        '0'
        """
        if self.prefix:
            return self.separator.join((self.prefix, *map(str, coords)))
        return self.separator.join(map(str, coords)) if coords else "0"


@functools.lru_cache(maxsize=256)
def _key_pattern(prefix: str, separator: str, ndim: int, node: str) -> re.Pattern[str]:
    """The chunk keys of the array at ``node``, one group per index (canonical only,
    as :func:`~shardedstore.store.routing.parse_chunk_key` reads them)."""
    index = "(0|[1-9][0-9]*)"
    indices = re.escape(separator).join([index] * ndim)
    if prefix:
        chunk = re.escape(prefix) + (re.escape(separator) + indices if ndim else "")
    else:
        chunk = indices if ndim else "0"
    return re.compile((re.escape(node + "/") if node else "") + chunk)


@dataclass(frozen=True, slots=True)
class Region:
    """One box of an array and the box of the output (or input) it maps to.

    Attributes
    ----------
    start, stop
        The box in array coordinates, every dimension (``stop`` exclusive).
    integers
        Per dimension, whether it was selected by an integer (it is not in the output).
    out
        The same box in the output: one slice per dimension selected by a slice.
    """

    start: tuple[int, ...]
    stop: tuple[int, ...]
    integers: tuple[bool, ...]
    out: tuple[slice, ...]

    def index(self, drop: int = 0) -> tuple[int | slice | None, ...]:
        """A NumPy-style index of the box in the array without its first ``drop``
        dimensions (an array shard), giving exactly the output's shape: an integer where
        zarr was given one, a slice elsewhere, and a new axis of length 1 for each of the
        first ``drop`` dimensions selected by a slice."""
        head: tuple[int | slice | None, ...] = tuple(
            None for dim in range(drop) if not self.integers[dim]
        )
        return head + tuple(
            self.start[dim] if self.integers[dim] else slice(self.start[dim], self.stop[dim])
            for dim in range(drop, len(self.start))
        )


@dataclass(frozen=True, slots=True)
class StoredRegion:
    """A region of the array that lies in one local directory, as an engine reads or
    writes it.

    Attributes
    ----------
    directory
        The directory of the array there (an array shard's, or the array's in a base
        or mount).
    metadata
        The metadata document the array there holds.
    region
        The box, in the layout's array.
    drop
        The dimensions the array there lacks (its sharded dimensions; 0 in a base or
        mount).
    """

    directory: str
    metadata: Mapping[str, Any]
    region: Region
    drop: int


_Int = np.int64
_ALL = slice(None)


def _is_integer(selection: object) -> bool:
    return isinstance(selection, int | np.integer) and not isinstance(selection, bool | np.bool_)


_BOUNDS = operator.attrgetter("start", "stop")
_STEP = operator.attrgetter("step")


def _integers(values: list[Any]) -> np.ndarray[Any, Any] | None:
    """``values`` as an array if they are all integers (not booleans), else None."""
    if not set(map(type, values)) <= {int} and not all(map(_is_integer, values)):
        return None
    return np.fromiter(values, _Int, len(values))


def _slice_bounds(column: list[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None:
    """``(starts, stops)`` of unit-step slices with integer bounds, else None."""
    if set(map(type, column)) != {slice} or not set(map(_STEP, column)) <= {None, 1}:
        return None
    bounds = _integers(list(chain.from_iterable(map(_BOUNDS, column))))
    return None if bounds is None else (bounds[0::2], bounds[1::2])


@dataclass(frozen=True, slots=True)
class Boxes:
    """The part of each chunk of a batch that is selected, as boxes of the array and of
    the output: one row per chunk, built once per batch with arrays (no Python per
    chunk and dimension beyond reading zarr's slices).

    Attributes
    ----------
    start, stop
        ``(chunks, ndim)``: each part in array coordinates (``stop`` exclusive).
    integers
        Per dimension, whether it was selected by an integer (it is not in the output).
    shift
        ``(chunks, output ndim)``: the output position minus the array position of
        each part along the dimensions in the output.
    """

    start: np.ndarray[Any, Any]
    stop: np.ndarray[Any, Any]
    integers: tuple[bool, ...]
    shift: np.ndarray[Any, Any]

    @classmethod
    def of(
        cls,
        coords: np.ndarray[Any, Any],
        chunk_selections: Sequence[Any],
        out_selections: Sequence[Any],
        chunk_shape: Sequence[int],
    ) -> Boxes | None:
        """The boxes of chunks at ``coords`` (``(chunks, ndim)``), or None when any
        selection is not a unit-step slice or an integer per dimension (as zarr builds
        them for basic indexing), or a part and its output differ in size."""
        count, ndim = len(chunk_selections), len(chunk_shape)
        if (
            count == 0
            or set(map(type, chunk_selections)) != {tuple}
            or set(map(type, out_selections)) != {tuple}
            or set(map(len, chunk_selections)) != {ndim}
        ):
            return None
        integers = tuple(map(_is_integer, chunk_selections[0]))
        width = integers.count(False)
        if set(map(len, out_selections)) != {width}:
            return None
        low = np.empty((count, ndim), _Int)
        high = np.empty((count, ndim), _Int)
        shift = np.empty((count, width), _Int)
        position = 0
        for dim in range(ndim):
            column = list(map(operator.itemgetter(dim), chunk_selections))
            if integers[dim]:
                indices = _integers(column)
                if indices is None:
                    return None
                low[:, dim], high[:, dim] = indices, indices + 1
                continue
            bounds = _slice_bounds(column)
            outs = _slice_bounds(list(map(operator.itemgetter(position), out_selections)))
            if (
                bounds is None
                or outs is None
                or not np.array_equal(outs[1] - outs[0], bounds[1] - bounds[0])
            ):
                return None
            low[:, dim], high[:, dim] = bounds
            shift[:, position] = outs[0] - bounds[0]
            position += 1
        origin = np.asarray(coords, _Int).reshape(count, ndim) * np.asarray(chunk_shape, _Int)
        shift -= origin[:, [dim for dim in range(ndim) if not integers[dim]]]
        return cls(origin + low, origin + high, integers, shift)

    def region(self, rows: np.ndarray[Any, Any] | slice = _ALL) -> Region | None:
        """The one box the parts in ``rows`` form, or None: when they do not tile one
        box exactly, when the output is not the same box shifted, or when it is a single
        element (no dimension)."""
        start, stop, shift = self.start[rows], self.stop[rows], self.shift[rows]
        if not len(start) or not shift.shape[1] or not (shift == shift[0]).all():
            return None
        low, high = start.min(axis=0), stop.max(axis=0)
        # The parts are disjoint chunks: they tile the box exactly when their volumes add up.
        if int(np.prod(stop - start, axis=1).sum()) != math.prod((high - low).tolist()):
            return None
        sliced = [dim for dim, integer in enumerate(self.integers) if not integer]
        out = tuple(
            slice(int(low[dim] + offset), int(high[dim] + offset))
            for dim, offset in zip(sliced, shift[0].tolist(), strict=True)
        )
        return Region(tuple(low.tolist()), tuple(high.tolist()), self.integers, out)


def merge_region(
    items: Iterable[tuple[Sequence[int], object, object]], chunk_shape: Sequence[int]
) -> Region | None:
    """The one box that the selected parts of some chunks form, or None.

    Parameters
    ----------
    items
        ``(chunk coordinates, chunk_selection, out_selection)`` per chunk, as zarr
        builds them for basic indexing: per dimension a slice with step 1 or an
        integer in the chunk, and a slice with step 1 in the output per sliced
        dimension.
    chunk_shape
        The array's chunk shape (its chunk grid; shards with the sharding codec).

    Returns
    -------
    Region or None
        None when any selection is not of that kind (steps, integer arrays, masks),
        when the parts do not tile one box exactly, when the output is not the
        same box shifted, or when it is a single element (no dimension).

    Examples
    --------
    >>> region = merge_region(
    ...     [((0, 0), (slice(2, 4), slice(0, 4)), (slice(0, 2), slice(0, 4))),
    ...      ((0, 1), (slice(2, 4), slice(0, 1)), (slice(0, 2), slice(4, 5)))],
    ...     (4, 4),
    ... )
    >>> region.start, region.stop, region.out
    ((2, 0), (4, 5), (slice(0, 2, None), slice(0, 5, None)))
    """
    listed = list(items)
    coords = np.array([item[0] for item in listed], _Int).reshape(len(listed), len(chunk_shape))
    boxes = Boxes.of(
        coords, [item[1] for item in listed], [item[2] for item in listed], chunk_shape
    )
    return None if boxes is None else boxes.region()
