"""Pure geometry for the native engines: chunk keys to coordinates, chunks to boxes.

zarr hands a codec pipeline one item per chunk: the chunk's key, the part of the chunk
selected (``chunk_selection``) and where that part goes in the output
(``out_selection``). An engine that reads or writes whole regions (TensorStore) needs
the items of one store as one box of the array and one box of the output; this module
says whether they form one, and which. Nothing here performs I/O or imports zarr.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from shardedstore.store.routing import parse_chunk_key

__all__ = ["ChunkKeys", "Region", "merge_region"]


@dataclass(frozen=True, slots=True)
class ChunkKeys:
    """How an array spells its chunk keys (from its metadata), to read them back.

    Parameters
    ----------
    prefix
        ``"c"`` for zarr v3's default chunk-key encoding, ``""`` for the v2 encoding.
    separator
        ``"/"`` or ``"."``.
    ndim
        The array's number of dimensions.
    """

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


def _bounds(selection: object) -> tuple[int, int, bool] | None:
    """``(start, stop, is_integer)`` of a unit-step slice or an integer, else None."""
    if type(selection) is slice:
        start, stop, step = selection.start, selection.stop, selection.step
        if (step is None or step == 1) and type(start) is int and type(stop) is int:
            return start, stop, False
        return None
    if isinstance(selection, int | np.integer) and not isinstance(selection, bool | np.bool_):
        index = int(selection)
        return index, index + 1, True
    return None


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
    ndim = len(chunk_shape)
    lows: list[tuple[int, ...]] = []
    highs: list[tuple[int, ...]] = []
    out_lows: list[tuple[int, ...]] = []
    out_highs: list[tuple[int, ...]] = []
    integers: tuple[bool, ...] | None = None
    shift: tuple[int, ...] | None = None
    volume = 0
    for coords, chunk_selection, out_selection in items:
        if type(chunk_selection) is not tuple or len(chunk_selection) != ndim:
            return None
        if type(out_selection) is not tuple:
            return None
        low: list[int] = []
        high: list[int] = []
        ints: list[bool] = []
        out_low: list[int] = []
        out_high: list[int] = []
        part_shift: list[int] = []
        part_volume = 1
        for dim, selection in enumerate(chunk_selection):
            bounds = _bounds(selection)
            if bounds is None:
                return None
            origin = coords[dim] * chunk_shape[dim]
            a, b = origin + bounds[0], origin + bounds[1]
            low.append(a)
            high.append(b)
            ints.append(bounds[2])
            part_volume *= b - a
            if not bounds[2]:
                position = len(out_low)
                if position >= len(out_selection):
                    return None
                out_bounds = _bounds(out_selection[position])
                if out_bounds is None or out_bounds[2] or out_bounds[1] - out_bounds[0] != b - a:
                    return None
                out_low.append(out_bounds[0])
                out_high.append(out_bounds[1])
                part_shift.append(out_bounds[0] - a)
        if len(out_low) != len(out_selection):
            return None
        if integers is None:
            integers, shift = tuple(ints), tuple(part_shift)
        elif tuple(ints) != integers or tuple(part_shift) != shift:
            return None
        lows.append(tuple(low))
        highs.append(tuple(high))
        out_lows.append(tuple(out_low))
        out_highs.append(tuple(out_high))
        volume += part_volume
    if integers is None:
        return None
    start = tuple(map(min, zip(*lows, strict=True))) if ndim else ()
    stop = tuple(map(max, zip(*highs, strict=True))) if ndim else ()
    # The parts are disjoint chunks: they tile the box exactly when their volumes add up.
    if volume != math.prod(b - a for a, b in zip(start, stop, strict=True)):
        return None
    if not out_lows[0]:  # one element: the output has no dimension to view
        return None
    out_start = tuple(map(min, zip(*out_lows, strict=True)))
    out_stop = tuple(map(max, zip(*out_highs, strict=True)))
    return Region(
        start,
        stop,
        integers,
        tuple(slice(a, b) for a, b in zip(out_start, out_stop, strict=True)),
    )
