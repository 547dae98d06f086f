"""Zips as sub-stores: copy-on-write handles, Deflate64, and the traces of writers.

- Every zip a layout uses goes through :class:`CopyOnWriteZipStore` (``zipstore``),
  never zarr's ZipStore, which modifies the zip in place.
- Deflate64 zips (common from Windows tools) read through ``inflate64``: :func:`enable_deflate64`
  hooks zipfile's decompressor lookup so that method 9 entries are inflated by
  ``inflate64.Inflater`` (the library py7zr uses, with wheels for every CPython we
  support). Reading only: zips we write use the compression their store was given.
- A read-only view is a separate handle in mode "r" (or the same handle while it is
  open, so that it sees this writer's uncommitted changes).
- zarr reopens a ZipStore when it is unpickled, in its original mode, so a copy of one
  made with mode "w" would truncate the zip: pickle a ``ZipReference`` instead, which
  always comes back in mode "r" or "a".
- A writer holds ``.NAME.lock`` and stages its changes in ``.NAME.staging-*`` beside the
  zip ``NAME``; ``close()`` writes ``.NAME.partial-*`` and renames it over the zip. Until
  then readers see the zip as it was (or, for a new array shard, no zip at all), which
  ``validate`` says (:func:`zip_writers`): a live writer when the lock is held, a dead
  one's leftovers when it is not.
"""

from __future__ import annotations

import os
import re
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zarr.abc.store import Store
from zarr.storage import ZipStore

from shardedstore.backends.filelock import is_held, lock_holder
from shardedstore.backends.zipstore import CopyOnWriteZipStore, leftover_names

__all__ = [
    "ZIP_DEFLATED64",
    "ZipReference",
    "ZipWriter",
    "copy_on_write",
    "enable_deflate64",
    "read_only_zip",
    "zip_name_of",
    "zip_writers",
]

ZIP_DEFLATED64 = 9
"""The zip compression method number of Deflate64 (APPNOTE 4.4.5)."""

_lock = threading.Lock()
_deflate64_enabled = False


class _Deflate64Decompressor:
    """What ``zipfile.ZipExtFile`` asks of a decompressor: ``decompress`` and ``eof``."""

    def __init__(self) -> None:
        import inflate64

        self._inflater = inflate64.Inflater()

    @property
    def eof(self) -> bool:
        return bool(self._inflater.eof)

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._inflater.inflate(data)
        return out


def _with_deflate64(original: Callable[[int], Any]) -> Callable[[int], Any]:
    def get_decompressor(compress_type: int) -> Any:
        if compress_type == ZIP_DEFLATED64:
            return _Deflate64Decompressor()
        return original(compress_type)

    return get_decompressor


def enable_deflate64() -> None:
    """Teach :mod:`zipfile` to read Deflate64 entries (idempotent, thread-safe).

    Only the decompressor lookup changes: entries with other methods, and everything
    zipfile writes, behave exactly as before.
    """
    global _deflate64_enabled
    with _lock:
        if _deflate64_enabled:
            return
        import inflate64  # noqa: F401  (fail here, not on the first read, if it is missing)

        # ZipExtFile looks _get_decompressor up in zipfile's globals on every open.
        original = getattr(zipfile, "_get_decompressor")  # noqa: B009  (private)
        setattr(zipfile, "_get_decompressor", _with_deflate64(original))  # noqa: B010
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


# ------------------------------------------------------------------ writers


# ".NAME.lock" exactly; ".NAME.staging-..." and ".NAME.partial-..." as prefixes.
_PATTERNS = [
    re.compile("^" + re.escape(name).replace("NAME", "(?P<zip>.+?)", 1) + end)
    for name, end in zip(leftover_names("NAME"), ("$", "", ""), strict=True)
]


def zip_name_of(entry: str) -> str | None:
    """The zip a lock file, staging directory or partial zip belongs to (None: not one)."""
    for pattern in _PATTERNS:
        match = pattern.match(entry)
        if match is not None and match["zip"]:
            return match["zip"]
    return None


@dataclass(frozen=True)
class ZipWriter:
    """A writer of one zip, alive or dead.

    Attributes
    ----------
    zip_path
        The zip it writes (which may not exist yet: a new array shard).
    live
        Whether it holds the zip's lock now.
    holder
        Who holds the lock (``"process 4242"``), for a live writer.
    entries
        Its lock file, staging directories and partial zips, by name.
    """

    zip_path: Path
    live: bool
    holder: str | None
    entries: tuple[str, ...]


def zip_writers(directory: Path, wanted: Callable[[str], bool]) -> list[ZipWriter]:
    """Writers of the zips in ``directory`` whose names ``wanted`` accepts, by zip name."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found: dict[str, list[str]] = {}
    for name in names:
        if name.startswith("."):
            zip_name = zip_name_of(name)
            if zip_name is not None and wanted(zip_name):
                found.setdefault(zip_name, []).append(name)
    writers = []
    for zip_name, entries in sorted(found.items()):
        lock = directory / leftover_names(zip_name)[0]
        live = lock.name in entries and is_held(lock)
        writers.append(
            ZipWriter(
                directory / zip_name,
                live,
                lock_holder(lock) if live else None,
                tuple(sorted(entries)),
            )
        )
    return writers
