"""Exceptions raised by shardedstore. All are ``ValueError`` subclasses."""

from __future__ import annotations

__all__ = ["KeyValidationError", "LayoutError"]


class LayoutError(ValueError):
    """A layout (mounts, array shards, array metadata) that shardedstore cannot serve.

    The message names the path or dimension at fault and what to change.
    """


class KeyValidationError(ValueError):
    """A key or prefix that is not a valid relative Zarr key; nothing was read or written."""
