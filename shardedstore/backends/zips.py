"""What zarr's ZipStore needs to behave like the other sub-stores.

- Every zip a layout uses goes through :class:`CopyOnWriteZipStore` (``_zipstore``),
  never zarr's ZipStore, which modifies the zip in place.
- Deflate64 zips (common from Windows tools) read through ``inflate64`` (``_deflate64``).
- A read-only view is a separate handle in mode "r" (or the same handle while it is
  open, so that it sees this writer's uncommitted changes).
- zarr reopens a ZipStore when it is unpickled, in its original mode, so a copy of one
  made with mode "w" would truncate the zip: pickle a ``ZipReference`` instead, which
  always comes back in mode "r" or "a".
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Literal

from zarr.abc.store import Store
from zarr.storage import ZipStore

from shardedstore.backends.zipstore import CopyOnWriteZipStore

__all__ = ["ZipReference", "copy_on_write", "enable_deflate64", "read_only_zip"]

_lock = threading.Lock()
_deflate64_enabled = False


def enable_deflate64() -> None:
    """Teach :mod:`zipfile` to read Deflate64 zips."""
    global _deflate64_enabled
    with _lock:
        if not _deflate64_enabled:
            from shardedstore.backends import deflate64 as _deflate64

            _deflate64.enable()
            _deflate64_enabled = True


def copy_on_write(store: Store) -> Store:
    """``store``, or for a zarr ``ZipStore`` the same zip as a :class:`CopyOnWriteZipStore`.

    zarr's own ZipStore appends to the zip in place (see ``_zipstore``); every zip a
    ShardedStore uses goes through the copy-on-write store instead.
    """
    if not isinstance(store, ZipStore) or isinstance(store, CopyOnWriteZipStore):
        return store
    mode: Literal["r", "w", "a"] = getattr(store, "_zmode", "r")
    return CopyOnWriteZipStore(
        store.path,
        mode=mode if mode in ("r", "w", "a") else "a",
        read_only=store.read_only,
        compression=store.compression,
        allowZip64=store.allowZip64,
    )


def read_only_zip(store: ZipStore, *, fresh: bool = False) -> ZipStore:
    """A read-only handle on ``store``'s zip that never creates or truncates it.

    ``fresh`` always returns a new handle (safe to pickle into another process).
    """
    if store._is_open and not fresh:
        return store
    if isinstance(store, CopyOnWriteZipStore) and not fresh:
        return store.read_view()  # what it reads counts as read by the writer
    return CopyOnWriteZipStore(
        store.path, mode="r", compression=store.compression, allowZip64=store.allowZip64
    )


@dataclass(frozen=True)
class ZipReference:
    """A ZipStore as pickled: rebuilt closed, in mode "r" or "a", never truncating."""

    path: str
    mode: Literal["r", "a"]
    compression: int
    allow_zip64: bool

    @classmethod
    def of(cls, store: Store) -> Store | ZipReference:
        """``store`` itself, or a reference to it if it is a ZipStore."""
        if not isinstance(store, ZipStore):
            return store
        mode: Literal["r", "a"] = "r" if getattr(store, "_zmode", "r") == "r" else "a"
        return cls(os.fspath(store.path), mode, store.compression, store.allowZip64)

    @staticmethod
    def store(value: Store | ZipReference) -> Store:
        """The store a value from :meth:`of` stands for."""
        if not isinstance(value, ZipReference):
            return value
        return CopyOnWriteZipStore(
            value.path, mode=value.mode, compression=value.compression, allowZip64=value.allow_zip64
        )
