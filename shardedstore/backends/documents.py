"""Compare-and-swap of metadata documents in local directories: no lost updates.

Two writers that read an array's ``zarr.json`` (its shape) and each append a time
step would otherwise both write shape + 1, and the second would overwrite the first's
step. A :class:`ShardedStore` therefore remembers a digest of every metadata document
(``zarr.json``, ``.zarray``, ``.zattrs``, ``.zgroup``) it read from, or wrote to, a
:class:`zarr.storage.LocalStore` of its layout. Writing (or deleting) such a document
again takes an OS lock, compares the document on disk with what the store last saw,
and raises :class:`ConflictError` if another writer changed it; otherwise it writes
under the same lock. A document the store never read is written as asked (what
``mode="w"`` means).

The lock is ``flock`` on ``.NAME.lock`` beside the store's directory ``NAME``, as a
zip's is beside the zip: outside the store, so that no listing (zarr's, ``validate``,
``convert``, chunk tables) ever sees it. It is held only while one document is
compared and replaced; writers wait for it (up to :data:`LOCK_WAIT` seconds). Where
that file cannot be created (a folder the writer may not write to), the store's
directory itself is locked.

Chunks are not compared: each chunk has one writer (see the user guide, "What is
safe"); two writers of one chunk race, the last one wins, as with any Zarr store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zarr.abc.store import Store
from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

from shardedstore.backends.filelock import acquire
from shardedstore.errors import ConcurrentWriteError, ConflictError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_WAIT",
    "METADATA_DOCUMENTS",
    "DocumentVersions",
    "is_metadata_document",
    "lock_path",
]

METADATA_DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
"""Names of Zarr metadata documents (v3, v2, consolidated v2); every other key is a chunk."""

LOCK_WAIT = 30.0
"""Seconds a writer waits for another's compare-and-swap of a document to finish."""

_Digest = bytes | None
"""A document's BLAKE2b digest; None: there is no such document."""


def is_metadata_document(key: str) -> bool:
    """Whether ``key`` names a metadata document (``a/b/zarr.json``) rather than a chunk."""
    return key.rpartition("/")[2] in METADATA_DOCUMENTS


def lock_path(root: Path) -> Path:
    """The lock file of the directory store at ``root``: ``.NAME.lock`` beside it."""
    return root.parent / f".{root.name}.lock"


def _digest(value: Buffer | None) -> _Digest:
    if value is None:
        return None
    return hashlib.blake2b(value.as_buffer_like(), digest_size=16).digest()


@contextlib.contextmanager
def _directory_locked(root: Path) -> Iterator[None]:
    """``flock`` the directory itself (where no lock file can be made beside it)."""
    if fcntl is None:  # pragma: no cover - Windows
        raise ConcurrentWriteError(
            f"metadata of {os.fspath(root)!r}: writing needs POSIX file locks (fcntl), which "
            "this platform lacks"
        )
    fd = os.open(root, os.O_RDONLY)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConcurrentWriteError(
                        f"metadata of {os.fspath(root)!r}: another writer held its lock for "
                        f"over {LOCK_WAIT:.0f} s; try again"
                    ) from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _locked(root: Path, lock: Path | None = None) -> Iterator[None]:
    """Hold the metadata lock of the directory store at ``root``."""
    lock = lock_path(root) if lock is None else lock
    try:
        held = acquire(
            lock,
            f"the metadata of {os.fspath(root)!r}",
            "another writer took longer than expected; try again",
            wait=LOCK_WAIT,
        )
    except OSError:  # no lock file can be made beside it: lock the directory itself
        with _directory_locked(root):
            yield
        return
    try:
        yield
    finally:
        held.release()


@dataclass(slots=True, eq=False)
class DocumentVersions:
    """What one writer last read or wrote of each metadata document in local directories.

    Shared by a :class:`ShardedStore` and its read-only views. Keys are the store's
    directory and the document's key in it.
    """

    seen: dict[tuple[str, str], _Digest] = field(default_factory=dict)

    @staticmethod
    def applies(store: Store, key: str) -> bool:
        """Whether writes of ``key`` to ``store`` are compare-and-swap."""
        return isinstance(store, LocalStore) and is_metadata_document(key)

    def read(self, store: Store, key: str, value: Buffer | None) -> None:
        """Remember what this writer read of ``key`` (whole) from ``store``."""
        if self.applies(store, key):
            assert isinstance(store, LocalStore)
            self.seen[os.fspath(store.root), key] = _digest(value)

    def forget(self, store: Store, prefix: str) -> None:
        """Forget every document under ``prefix``: this writer deleted them itself."""
        if not isinstance(store, LocalStore) or not self.seen:
            return
        root = os.fspath(store.root)
        for known in [k for k in self.seen if k[0] == root and k[1].startswith(prefix)]:
            del self.seen[known]

    def write(self, store: LocalStore, key: str, value: Buffer | None, name: str) -> None:
        """Write ``value`` to ``key`` (None: delete it), compare-and-swap if it was read.

        Blocking: call it from a thread (or inline, for a fast disk).

        Parameters
        ----------
        store
            The directory store.
        key
            The document's key in ``store``.
        value
            The new document, or None to delete it.
        name
            The document as the layout names it, for the error message.

        Raises
        ------
        ConflictError
            If another writer changed the document since this writer last read or
            wrote it; nothing was written.
        """
        ident = (os.fspath(store.root), key)
        if ident not in self.seen:
            self._put(store, key, value)
            self.seen[ident] = _digest(value)
            return
        with _locked(Path(store.root)):
            # Read under the lock: a write of this writer that held it before counts.
            expected = self.seen.get(ident)
            now = _digest(store.get_sync(key))
            if now != expected:
                what = (
                    "was created"
                    if expected is None
                    else "was deleted"
                    if now is None
                    else "changed"
                )
                node = name.rpartition("/")[0] or "the root"
                raise ConflictError(
                    f"{name!r} (the metadata of {node!r}) {what} since this store read it: "
                    f"another writer wrote it meanwhile (in {os.fspath(store.root)!r}), and "
                    "writing would lose that update; nothing was written. Open the layout "
                    "again (a new store), read what is there now, and write again",
                    name,
                )
            self._put(store, key, value)
            self.seen[ident] = _digest(value)

    @staticmethod
    def _put(store: LocalStore, key: str, value: Buffer | None) -> None:
        if value is None:
            store.delete_sync(key)
        else:
            store.set_sync(key, value)
