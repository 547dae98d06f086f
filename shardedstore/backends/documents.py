"""Compare-and-swap of metadata documents in local directories: no lost updates.

Two writers that read an array's ``zarr.json`` (its shape) and each append a time
step would otherwise both write shape + 1, and the second would overwrite the first's
step. A :class:`ShardedStore` therefore remembers a digest of every metadata document
(``zarr.json``, ``.zarray``, ``.zattrs``, ``.zgroup``) it read from, or wrote to, a
:class:`zarr.storage.LocalStore` of its layout. Writing (or deleting) such a document
compares the document on disk with what the store last saw, and raises
:class:`ConflictError` if another writer changed it. A document the store never read is
written as asked (what ``mode="w"`` means).

An append changes several documents (a coordinate's shape, then each variable's), so
compare-and-swap of each alone is not enough: a writer that read a half-done append of
another would pass every check. The first metadata write of a store to a directory
takes an OS lock on it and holds it until the store is closed (or discarded, or the
process ends), as a zip's lock is held until its commit: writers of a layout's metadata
take turns, a second one waiting (up to :data:`LOCK_WAIT` seconds) for the first to
close, then finding what changed. Writers of chunks alone (one per time step) take no
lock. A store that is discarded (a ``with`` block left by an exception) writes back the
documents it changed, as they were before its first write, so a half-done append leaves
no shape that points at steps that were never written.

The lock is ``flock`` on ``.NAME.lock`` beside the store's directory ``NAME``, as a
zip's is beside the zip: outside the store, so that no listing (zarr's, ``validate``,
``convert``, chunk tables) ever sees it. Where that file cannot be created (a folder the
writer may not write to), the store's directory itself is locked.

Chunks are not compared: each chunk has one writer (see the user guide, "What is
safe"); two writers of one chunk race, the last one wins, as with any Zarr store.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from zarr.abc.store import Store
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import LocalStore

from shardedstore.backends.filelock import FileLock, acquire
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
"""Seconds a writer of metadata waits for another to close its store."""

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


class _DirectoryLock:
    """``flock`` on a directory itself (where no lock file can be made beside it)."""

    def __init__(self, root: Path) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConcurrentWriteError(
                f"metadata of {os.fspath(root)!r}: writing needs POSIX file locks (fcntl), "
                "which this platform lacks"
            )
        self._fd: int | None = os.open(root, os.O_RDONLY)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    raise ConcurrentWriteError(
                        f"the metadata of {os.fspath(root)!r} is being written by another "
                        f"writer, which has not closed its store within {LOCK_WAIT:.0f} s; "
                        "try again once it has"
                    ) from None
                time.sleep(0.005)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _lock(root: Path, lock: Path | None = None) -> FileLock | _DirectoryLock:
    """The metadata lock of the directory store at ``root`` (waiting for it)."""
    try:
        return acquire(
            lock_path(root) if lock is None else lock,
            f"the metadata of {os.fspath(root)!r}",
            "another writer of this layout's metadata has not closed its store; try again "
            "once it has (a writer holds this lock from its first metadata write to close())",
            wait=LOCK_WAIT,
        )
    except ConcurrentWriteError:
        raise
    except OSError:  # no lock file can be made beside it: lock the directory itself
        return _DirectoryLock(root)


@dataclass(slots=True, eq=False)
class DocumentVersions:
    """What one writer read or wrote of metadata documents in local directories.

    Shared by a :class:`ShardedStore` and its read-only views. Keys are the store's
    directory and the document's key in it.

    Attributes
    ----------
    seen
        The digest of what this writer last read or wrote of each document.
    held
        The directories whose metadata this writer holds locked (until
        :meth:`release` or :meth:`rollback`).
    originals
        Each document this writer changed, as it was before (None: absent).
    """

    seen: dict[tuple[str, str], _Digest] = field(default_factory=dict)
    held: dict[str, FileLock | _DirectoryLock] = field(default_factory=dict)
    originals: dict[tuple[str, str], tuple[LocalStore, bytes | None, str]] = field(
        default_factory=dict
    )
    _guard: threading.Lock = field(default_factory=threading.Lock)

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

        Takes the directory's metadata lock on the first write, and keeps it. Blocking:
        call it from a thread (or inline, for a fast disk).

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
        ConcurrentWriteError
            If another writer holds the lock for longer than :data:`LOCK_WAIT`.
        """
        with self._guard:  # zarr writes documents concurrently, from threads
            self._write(store, key, value, name)

    def _write(self, store: LocalStore, key: str, value: Buffer | None, name: str) -> None:
        root = os.fspath(store.root)
        if root not in self.held:
            self.held[root] = _lock(Path(root))
        ident = (root, key)
        # Read under the lock: what another writer closed before counts.
        current = store.get_sync(key)
        now = _digest(current)
        if ident in self.seen and now != self.seen[ident]:
            if not any(known[0] == root for known in self.originals):
                self.held.pop(root).release()  # refused before writing: blocks nobody
            expected = self.seen[ident]
            what = (
                "was created" if expected is None else "was deleted" if now is None else "changed"
            )
            node = name.rpartition("/")[0] or "the root"
            raise ConflictError(
                f"{name!r} (the metadata of {node!r}) {what} since this store read it: "
                f"another writer wrote it meanwhile (in {root!r}), and writing would lose "
                "that update; nothing was written. Open the layout again (a new store), "
                "read what is there now, and write again",
                name,
            )
        if ident not in self.originals:
            self.originals[ident] = (store, None if current is None else current.to_bytes(), name)
        if value is None:
            store.delete_sync(key)
        else:
            store.set_sync(key, value)
        self.seen[ident] = _digest(value)

    def rollback(self) -> list[str]:
        """Write back every document this writer changed, as it was; then :meth:`release`.

        Returns the documents restored, as the layout names them. A document that
        cannot be written back is left as it is (the lock goes in any case).
        """
        with self._guard:
            return self._rollback()

    def _rollback(self) -> list[str]:
        restored = []
        prototype = default_buffer_prototype()
        for (_, key), (store, before, name) in self.originals.items():
            with contextlib.suppress(OSError):
                if before is None:
                    store.delete_sync(key)
                else:
                    store.set_sync(key, prototype.buffer.from_bytes(before))
                restored.append(name)
        self._release()
        return sorted(restored)

    def release(self) -> None:
        """Let other writers of these directories' metadata in (this writer is done)."""
        with self._guard:
            self._release()

    def _release(self) -> None:
        for lock in self.held.values():
            lock.release()
        self.held.clear()
        self.originals.clear()
