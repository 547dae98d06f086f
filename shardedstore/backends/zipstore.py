"""A zip store that never modifies a zip in place: copy-on-write with an atomic rename.

zarr's ``ZipStore`` in mode ``"a"`` appends to the zip itself: while it is open other
readers see a file without a valid central directory, a crash before ``close()``
leaves it unreadable for good, and every rewrite of a key adds a duplicate entry.
:class:`CopyOnWriteZipStore` keeps the zip on disk as it was until ``close()``:

- The first write takes an OS lock on the zip (one writer per zip, enforced: a second
  process or store object gets :class:`ConcurrentWriteError` at once) and opens a
  staging directory beside it; writes and deletes go there.
- Reads see the staged state (this store reads its own writes); everyone else keeps
  reading the old zip, which stays complete and valid.
- ``close()`` writes the new zip (old entries not replaced or deleted, then the
  staged ones: each name once) to a temporary file beside it, fsyncs it and renames
  it over the old one. A crash at any point leaves the old zip as it was; the next
  writer removes the dead writer's staging leftovers.
- A new zip appears under its final name only when complete.
- No lost updates: the store remembers the CRC-32 of every member it read (or that
  it was absent). Replacing or deleting a member that another writer changed since
  raises :class:`ConflictError` before anything is staged, and ``close()`` checks
  again that the zip is still the one the changes were staged against.
- A store dropped or left open at interpreter exit is committed as ``close()``
  would (as :class:`zipfile.ZipFile` does), unless the program ended with an
  uncaught exception: then its changes are discarded, with a warning. A killed
  process commits nothing. A ``with`` block left by an exception discards.
- The zips of one :class:`ShardedStore` form a :class:`CommitGroup`: committed
  together, data before metadata, only if no write of the layout failed unhealed
  and no zip conflicts (checked for every zip before any is committed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import threading
import time
import uuid
import warnings
import weakref
import zipfile
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import ZipStore

from shardedstore.backends.crc import crc32
from shardedstore.backends.documents import DocumentVersions
from shardedstore.backends.filelock import FileLock, acquire
from shardedstore.backends.keys import child_names
from shardedstore.errors import ConflictError, LayoutError, UncommittedWarning

__all__ = [
    "CommitGroup",
    "CopyOnWriteZipStore",
    "finish_group",
    "leftover_names",
    "open_zip_identity",
]

_STAGING = ".staging-"
_PARTIAL = ".partial-"
_ZIP64_LIMIT = 1 << 31


_MARKER = ".shardedstore-staging"
"""A file in every staging directory: only directories holding it are ever removed."""


def open_zip_identity(store: ZipStore) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the zip file ``store`` has open for reading (zarr's
    ``ZipStore`` and :class:`CopyOnWriteZipStore` read through one ``ZipFile``); None
    when it has none open or it cannot be told."""
    archive = getattr(store, "_zf", None)
    handle = getattr(archive, "fp", None)
    try:
        info = os.fstat(handle.fileno())  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def leftover_names(zip_name: str) -> tuple[str, str, str]:
    """Name prefixes of the lock file, staging directories and partial zips of a zip."""
    return f".{zip_name}.lock", f".{zip_name}{_STAGING}", f".{zip_name}{_PARTIAL}"


def _is_leftover(entry: Path, zip_name: str) -> bool:
    """Whether ``entry`` is a staging directory or partial zip this module made for it."""
    _, staging, partial = leftover_names(zip_name)
    suffix = entry.name[len(staging) :] if entry.name.startswith(staging) else None
    if suffix is not None:
        return (
            len(suffix) == 12
            and all(c in "0123456789abcdef" for c in suffix)
            and entry.is_dir()
            and not entry.is_symlink()
            and (entry / _MARKER).is_file()
        )
    suffix = entry.name[len(partial) :] if entry.name.startswith(partial) else None
    return (
        suffix is not None
        and len(suffix) == 12
        and all(c in "0123456789abcdef" for c in suffix)
        and entry.is_file()
        and not entry.is_symlink()
    )


_uncaught = False
_hook_installed = False


def _note_uncaught_exceptions() -> None:
    """Remember an uncaught exception (Ctrl-C included), so exit commits nothing.

    Installed with the first writer, so that it wraps any hook installed before.
    """
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        global _uncaught
        _uncaught = True
        previous(kind, value, tb)

    sys.excepthook = hook


def byte_bounds(byte_range: ByteRequest | None, size: int) -> tuple[int, int]:
    """``(start, stop)`` of the bytes a zarr byte request asks for among ``size``."""
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        start = min(byte_range.start, size)
        return start, max(start, min(byte_range.end, size))
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, size), size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix), size
    raise TypeError(f"Unexpected byte_range, got {byte_range}.")  # as zarr says it


def _read_range(f: IO[bytes], size: int, byte_range: ByteRequest | None) -> bytes:
    start, stop = byte_bounds(byte_range, size)
    f.seek(start)
    return f.read(stop - start)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_Identity = tuple[int, int, int, int] | None
"""A zip file as found on disk: device, inode, size, mtime (None: no file)."""


def _identity(path: Path) -> _Identity:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _crc(zf: zipfile.ZipFile | None, key: str) -> int | None:
    """The CRC-32 of member ``key`` (None: no such member)."""
    if zf is None:
        return None
    try:
        return zf.getinfo(key).CRC
    except KeyError:
        return None


class _Pending:
    """The uncommitted state of one writer: its lock, staging directory and changes.

    Kept apart from the store so that a finalizer can commit it when the store is
    dropped or the interpreter exits without ``close()``; it holds everything a
    commit needs (the member names and what the store read are shared with it).
    """

    def __init__(
        self,
        path: Path,
        lock: FileLock,
        staging: Path,
        names: dict[str, None],
        *,
        compression: int,
        allow_zip64: bool,
        identity: _Identity,
    ) -> None:
        self.path = path
        self.lock = lock
        self.staging = staging
        self.names = names
        self.compression = compression
        self.allow_zip64 = allow_zip64
        self.identity = identity  # the zip the changes are staged against
        self.staged: dict[str, Path] = {}
        self.deleted: set[str] = set()
        self.replace_all = False  # mode "w": the old entries are dropped
        self.count = 0
        self.pid = os.getpid()  # a forked child must never commit or discard this
        self.group: CommitGroup | None = None  # committed with the group, not alone
        self.last = False  # metadata of its group: committed after the data

    @property
    def live(self) -> bool:
        """Whether this process holds the changes (not committed or discarded yet)."""
        return os.getpid() == self.pid and self.lock.held

    def stage(self, key: str, data: bytes) -> None:
        self.count += 1
        target = self.staging / str(self.count)
        target.write_bytes(data)
        old = self.staged.pop(key, None)
        if old is not None:
            old.unlink()
        self.staged[key] = target
        self.deleted.discard(key)

    def unstage(self, key: str) -> None:
        old = self.staged.pop(key, None)
        if old is not None:
            old.unlink()
        self.deleted.add(key)

    def conflict(self) -> str | None:
        """Why committing would overwrite another writer's changes (None: it would not).

        Every writer of this zip takes its lock, so the zip can only have changed under
        this one through a writer that did not (zarr's own ZipStore, a copy, a sync).
        """
        if self.replace_all or _identity(self.path) == self.identity:
            return None
        return (
            f"zip {os.fspath(self.path)!r} was replaced, changed or removed after this "
            "store staged its changes, by a writer that does not take its lock (zarr's "
            "own ZipStore, a copy, a sync)"
        )

    def commit(self) -> None:
        """Write the new zip beside the old one and rename it into place.

        A zip left with no entries is removed instead, as a directory shard emptied by
        ``delete_dir`` is.
        """
        names = list(self.names)
        compression, allow_zip64 = self.compression, self.allow_zip64
        if not names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            _fsync_dir(self.path.parent)
            self.discard()
            return
        partial = self.path.parent / f"{leftover_names(self.path.name)[2]}{uuid.uuid4().hex[:12]}"
        source: zipfile.ZipFile | None = None
        try:
            if not self.replace_all and self.path.exists():
                source = zipfile.ZipFile(self.path, "r")
            with zipfile.ZipFile(partial, "w", compression, allowZip64=allow_zip64) as out:
                now = time.localtime(time.time())[:6]
                for name in names:
                    staged = self.staged.get(name)
                    if staged is not None:
                        size = staged.stat().st_size
                        date_time = now
                    else:
                        assert source is not None
                        old = source.getinfo(name)
                        size, date_time = old.file_size, old.date_time
                    info = zipfile.ZipInfo(name, date_time=date_time)
                    info.compress_type = compression
                    info.external_attr = 0o644 << 16
                    force_zip64 = allow_zip64 and size >= _ZIP64_LIMIT
                    with out.open(info, "w", force_zip64=force_zip64) as dst:
                        if staged is not None:
                            with staged.open("rb") as src:
                                shutil.copyfileobj(src, dst, 1 << 20)
                        else:
                            assert source is not None
                            with source.open(name) as src:
                                shutil.copyfileobj(src, dst, 1 << 20)
            with contextlib.suppress(FileNotFoundError):  # keep the old zip's permissions
                os.chmod(partial, stat.S_IMODE(self.path.stat().st_mode))
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise
        finally:
            if source is not None:
                source.close()
        _fsync_dir(self.path.parent)
        self.discard()

    def discard(self) -> None:
        """Drop the staged changes and release the lock."""
        if os.getpid() != self.pid:
            return  # inherited by fork: the parent's to keep
        shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.release()


@dataclass(slots=True, eq=False)
class CommitGroup:
    """The zips one writer commits together, and that writer's writes that failed.

    A :class:`ShardedStore` makes one and its zips join it: ``close()`` and exit then
    commit them together, data first and the metadata zips (``last``) after, and only
    if every failed write was written again (or deleted) and no zip conflicts. Kept
    apart from the store so that a finalizer can finish it without keeping the store
    alive.

    Attributes
    ----------
    failures
        Keys whose last write (or delete) failed, with what was raised; a later
        successful write or delete of the key removes it.
    broken
        Set when ``close()`` failed half-way (some zips committed, not the metadata):
        exit then commits nothing more.
    """

    failures: dict[str, str] = field(default_factory=dict)
    broken: str | None = None
    pendings: list[_Pending] = field(default_factory=list)

    def write_failed(self, key: str, error: BaseException) -> None:
        """A write (or delete) of ``key`` failed."""
        self.failures.pop(key, None)  # the latest failure of a key is reported
        self.failures[key] = f"{type(error).__name__}: {error}"

    def write_succeeded(self, key: str, *, prefix: bool = False) -> None:
        """A write or delete of ``key`` (every key under it, for a ``prefix``) succeeded."""
        if not self.failures:
            return
        if not prefix:
            self.failures.pop(key, None)
            return
        for failed in [k for k in self.failures if k.startswith(key)]:
            del self.failures[failed]

    def refusal(self) -> str | None:
        """Why these changes must not be committed (None: they may be)."""
        if self.failures:
            key, error = next(iter(self.failures.items()))
            more = len(self.failures) - 1
            others = f" (and {more} other key(s): {', '.join(list(self.failures)[1:4])})"
            return f"the write of {key!r} failed ({error}) and was not written again" + (
                others if more else ""
            )
        return self.broken

    def live(self) -> list[_Pending]:
        """The pending changes of this group's zips, metadata zips last."""
        self.pendings[:] = [p for p in self.pendings if p.live]
        return sorted(self.pendings, key=lambda p: p.last)


def _paths(pendings: Iterable[_Pending]) -> str:
    return ", ".join(repr(os.fspath(p.path)) for p in pendings)


def _discard_with_warning(
    pendings: list[_Pending], reason: str, restored: list[str] | None = None
) -> None:
    for pending in pendings:
        pending.discard()
    undone = [f"the uncommitted changes to {_paths(pendings)}"] if pendings else []
    undone += [repr(name) for name in restored or []]
    warnings.warn(
        f"shardedstore: discarded {', '.join(undone)}: {reason}; they were left as they "
        "were. Call close() to commit, and write again what failed before it (close() "
        "raises instead of committing after a failure)",
        UncommittedWarning,
        stacklevel=2,
    )


def finish_group(group: CommitGroup, documents: DocumentVersions | None = None) -> None:
    """Commit (or discard, with a warning) a group left open at exit or dropped.

    The finalizer of the store that owns ``group`` (see ``weakref.finalize``). The
    metadata documents it wrote to directories (``documents``) are kept with a commit
    and written back with a discard.
    """
    pendings = group.live()
    reason = "the program ended with an uncaught exception" if _uncaught else group.refusal()
    if reason is None:
        reason = next((c for c in (p.conflict() for p in pendings) if c is not None), None)
    if reason is not None and (pendings or (documents is not None and documents.originals)):
        restored = documents.rollback() if documents is not None else []
        _discard_with_warning(pendings, reason, restored)
        return
    if documents is not None:
        documents.release()
    for done, pending in enumerate(pendings):
        try:
            pending.commit()
        except Exception as error:  # nothing to raise to here; the old zips are intact
            _discard_with_warning(
                pendings[done:], f"committing {os.fspath(pending.path)!r} failed ({error})"
            )
            return


def _commit_at_exit(pending: _Pending) -> None:
    """Commit a zip left open when it is dropped or the interpreter exits.

    A zip of a group is finished with its group (see :func:`finish_group`). Nothing
    is committed after an uncaught exception (Ctrl-C included), nor in a forked child.
    """
    if not pending.live or pending.group is not None:
        return
    if _uncaught:
        _discard_with_warning([pending], "the program ended with an uncaught exception")
        return
    conflict = pending.conflict()
    if conflict is not None:
        _discard_with_warning([pending], conflict)
        return
    try:
        pending.commit()
    except Exception as error:  # nothing to raise to at exit; the old zip is intact
        _discard_with_warning([pending], f"committing it failed ({error})")


class CopyOnWriteZipStore(ZipStore):
    """A zarr ``ZipStore`` that never modifies its zip in place.

    Writes and deletes are staged beside the zip and committed by ``close()``: the new
    zip is written to a temporary file and renamed over the old one, so readers always
    see a complete zip and a crash leaves the old one intact. One writer per zip is
    enforced with an OS lock taken on the first write. Deletes are supported. Mode
    ``"w"`` starts from an empty zip (the old one is replaced on ``close()``);
    ``"a"`` starts from the zip's current content; ``"r"`` is read-only.

    Members are compare-and-swap: replacing or deleting a member that another writer
    changed since this store read it raises :class:`ConflictError`. A ``with`` block
    left by an exception discards the changes; left normally, it commits them.

    Parameters
    ----------
    path
        The zip file.
    mode
        ``"r"``, ``"a"`` or ``"w"``.
    read_only
        Default: ``mode == "r"``.
    compression
        Compression of the entries written (``zipfile.ZIP_STORED`` by default: chunks
        are compressed already).
    allowZip64
        Allow ZIP64 extensions (zips over 2 GiB).

    Raises
    ------
    ConcurrentWriteError
        On the first write, if another writer holds the zip.
    ConflictError
        On a write (or at ``close()``), if another writer changed what it replaces.
    """

    supports_deletes: bool = True

    _zf: zipfile.ZipFile | None  # type: ignore[assignment]

    def __init__(
        self,
        path: Path | str,
        *,
        mode: Literal["r", "w", "a"] = "r",
        read_only: bool | None = None,
        compression: int = zipfile.ZIP_STORED,
        allowZip64: bool = True,
    ) -> None:
        super().__init__(
            Path(path),
            mode=mode,
            read_only=read_only,
            compression=compression,
            allowZip64=allowZip64,
        )
        self._zf = None
        self._names: dict[str, None] = {}
        self._pending: _Pending | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._refusal: str | None = None
        # CRC-32 of each member as this store last read or wrote it (None: absent);
        # shared with its read views (read_view) and kept across commits. Only a store
        # that can write needs it (a read-only layout may read millions of chunks).
        self._seen: dict[str, int | None] = {}
        self._records = not self.read_only
        self._group: CommitGroup | None = None
        self._last = False
        self._pid = os.getpid()
        self._lock = threading.RLock()

    # ------------------------------------------------------------- lifecycle

    def _sync_open(self) -> None:
        if self._is_open:
            raise ValueError("store is already open")
        self._zf = None
        if self.read_only or self._zmode != "w":
            try:
                self._zf = zipfile.ZipFile(self.path, "r")
            except FileNotFoundError:
                if self.read_only:
                    raise
            except zipfile.BadZipFile as error:  # say which zip (zipfile does not)
                raise zipfile.BadZipFile(
                    f"zip shard {os.fspath(self.path)!r}: {error}; it is damaged or not a "
                    "zip: restore it, or remove it if it holds nothing worth keeping "
                    "(shardedstore validate lists what a layout reaches)"
                ) from error
        self._names = dict.fromkeys(self._zf.namelist()) if self._zf is not None else {}
        self._is_open = True

    async def _open(self) -> None:
        self._sync_open()

    def _open_now(self) -> None:
        if not self._is_open:
            with self._lock:
                if not self._is_open:
                    self._sync_open()

    def refuse_writes(self, reason: str) -> None:
        """Make every later write raise ``LayoutError(reason)`` (reads still work)."""
        self._refusal = reason

    def join(self, group: CommitGroup, *, last: bool = False) -> None:
        """Commit with ``group`` at exit (``last``: after its data zips), if in none yet.

        The group's owner (a :class:`ShardedStore`) then decides what exit commits;
        ``close()`` and ``discard()`` of this store still act at once.
        """
        with self._lock:
            if self._group is not None:
                return
            self._group, self._last = group, last
            if self._pending is not None:
                self._pending.group, self._pending.last = group, last
                group.pendings.append(self._pending)

    @property
    def has_changes(self) -> bool:
        """Whether this store holds uncommitted changes (and the zip's lock)."""
        return self._pending is not None

    def read_view(self) -> CopyOnWriteZipStore:
        """A read-only store of the same zip whose reads count as this store's reads.

        What it reads is compared when this store later replaces it, as its own reads
        are (see :class:`ConflictError`).
        """
        view = CopyOnWriteZipStore(
            self.path, mode="r", compression=self.compression, allowZip64=self.allowZip64
        )
        view._seen, view._records = self._seen, self._records
        return view

    def check_conflicts(self) -> None:
        """Check that committing now would overwrite no other writer's changes.

        Nothing is committed or discarded; :class:`ShardedStore` checks every zip of a
        layout this way before it commits any.

        Raises
        ------
        ConflictError
            If the zip was replaced, changed or removed since this store staged its
            changes, by a writer that did not take its lock.
        """
        with self._lock:
            pending = self._pending
            conflict = None if pending is None else pending.conflict()
            if conflict is not None:
                raise ConflictError(
                    f"{conflict}; nothing was committed. Open the zip again (a new store) "
                    "and write again",
                    os.fspath(self.path),
                )

    def _check_unchanged(self, pending: _Pending, key: str) -> None:
        """Compare-and-swap: refuse to replace a member changed since this store read it.

        Called holding the zip's lock, with ``_zf`` the zip as it is now: nobody else
        can change it until this store commits.
        """
        if pending.replace_all or key in pending.staged or key in pending.deleted:
            return  # starting afresh, or replacing this store's own change
        if key not in self._seen:
            return  # never read here: written as asked
        read, now = self._seen[key], _crc(self._zf, key)
        if read != now:
            what = "was added" if read is None else "was deleted" if now is None else "changed"
            raise ConflictError(
                f"{key!r} in zip {os.fspath(self.path)!r} {what} since this store read it: "
                "another writer committed to the zip meanwhile, and writing would lose "
                "its update; nothing was written. Open the zip (or the layout) again, "
                "read what is there now, and write again",
                key,
            )

    def _note_read(self, key: str) -> None:
        """Remember the member as read (its CRC-32, or absent) for compare-and-swap."""
        if not self._records:
            return
        pending = self._pending
        if pending is not None and (key in pending.staged or key in pending.deleted):
            return  # this store's own change
        self._seen[key] = _crc(self._zf, key) if key in self._names else None

    def _writer(self) -> _Pending:
        """The staging state, taking the lock and re-reading the zip on first use."""
        self._check_can_write()
        if self._pending is not None:
            return self._pending
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A symlinked zip is replaced where it really is, and locked there.
        real = Path(os.path.realpath(self.path))
        directory = real.parent
        lock_name, staging_prefix, _ = leftover_names(real.name)
        lock = acquire(
            directory / lock_name,
            f"zip shard {os.fspath(self.path)!r}",
            "write from one process (and one store object) per zip and close() it, or "
            "write to directory shards and convert to zips afterwards "
            "(shardedstore convert LAYOUT --to zip)",
        )
        staging: Path | None = None
        try:
            # Holding the lock, anything staged or partial for this zip is a dead
            # writer's leftover.
            for entry in directory.iterdir():
                if _is_leftover(entry, real.name):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            staging = directory / f"{staging_prefix}{uuid.uuid4().hex[:12]}"
            staging.mkdir()
            (staging / _MARKER).write_text("shardedstore copy-on-write zip staging\n")
            identity = self._rebase()
        except BaseException:
            # Nothing staged: let the next writer in (and a zip that could not be read
            # is read again on next use).
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            lock.release()
            raise
        _note_uncaught_exceptions()
        pending = _Pending(
            real,
            lock,
            staging,
            self._names,
            compression=self.compression,
            allow_zip64=self.allowZip64,
            identity=identity,
        )
        pending.replace_all = self._zmode == "w"
        if self._group is not None:
            pending.group, pending.last = self._group, self._last
            self._group.pendings.append(pending)
        self._pending = pending
        self._finalizer = weakref.finalize(self, _commit_at_exit, pending)
        return pending

    def _rebase(self) -> _Identity:
        """Read the zip as it is now; return what it is on disk (None: no zip yet).

        Another writer may have committed since this store opened: start from its zip
        (members this store read are compared when they are replaced).
        """
        if self._zf is not None:
            self._zf.close()
            self._zf = None
        if self._zmode == "w":
            self._names = {}
            return None
        try:
            self._zf = zipfile.ZipFile(self.path, "r")
        except FileNotFoundError:
            self._names = {}
            return None
        except BaseException:
            self._is_open = False
            raise
        assert self._zf.fp is not None
        info = os.fstat(self._zf.fp.fileno())
        self._names = dict.fromkeys(self._zf.namelist())
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    def _staging_for(self, key: str) -> _Pending:
        """The staging state for changing ``key``, after its compare-and-swap check.

        A conflict on the first change leaves nothing staged: the lock is let go at
        once, so that the conflicting writer never blocks the others.
        """
        pending = self._writer()
        try:
            self._check_unchanged(pending, key)
        except ConflictError:
            if not pending.staged and not pending.deleted:
                self._drop_pending()
            raise
        return pending

    def _drop_pending(self) -> None:
        pending = self._pending
        if pending is not None:
            pending.discard()
            self._pending = None
            if self._finalizer is not None:
                self._finalizer.detach()

    def close(self) -> None:
        # docstring inherited
        # Raises (old zip intact, changes still staged) if the new zip cannot be
        # written, e.g. on a full disk; close() may then be called again. Raises
        # ConflictError (changes discarded) if the zip changed under this store.
        with self._lock:
            try:
                self.check_conflicts()
            except ConflictError:
                self._finish(commit=False)
                raise
            self._finish(commit=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit when the block ends normally; discard when an exception left it.

        After a discard the store refuses writes: writes still running (the other tasks
        of a failed computation) must not land after it.
        """
        if exc_type is None:
            self.close()
            return
        self.refuse_writes(
            f"zip {os.fspath(self.path)!r}: its uncommitted changes were discarded (a with "
            "block was left by an exception), so this store writes nothing more: open the "
            "zip again (a new store) and write again"
        )
        self.discard()

    def discard(self) -> None:
        """Drop the uncommitted changes and close; the zip stays as it was."""
        self._finish(commit=False)

    def _finish(self, *, commit: bool) -> None:
        with self._lock:
            pending = self._pending
            if pending is not None:
                if commit:
                    pending.commit()
                else:
                    pending.discard()
                self._pending = None
                if self._finalizer is not None:
                    self._finalizer.detach()
            if self._zf is not None:
                self._zf.close()
                self._zf = None
            self._is_open = False

    def with_read_only(self, read_only: bool = False) -> CopyOnWriteZipStore:
        # docstring inherited
        mode: Literal["r", "a"] = "r" if read_only else "a"
        return type(self)(
            self.path,
            mode=mode,
            read_only=read_only,
            compression=self.compression,
            allowZip64=self.allowZip64,
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": self._zmode,
            "read_only": self.read_only,
            "compression": self.compression,
            "allowZip64": self.allowZip64,
            "refusal": self._refusal,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copy never reopens in mode "w" on arrival: it opens lazily, on first use,
        # and refuses writes: nothing in another process would commit them in time.
        self.__init__(  # type: ignore[misc]
            state["path"],
            mode=state["mode"],
            read_only=state["read_only"],
            compression=state["compression"],
            allowZip64=state["allowZip64"],
        )
        self._refusal = state["refusal"] or (
            f"zip {os.fspath(state['path'])!r}: this is a copy sent to another process; zips "
            "are committed by close() in the process that writes them. Write from the process "
            "that made the store, or open the zip there yourself and close() it"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZipStore) and Path(self.path) == Path(other.path)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ reads

    def _get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
        *,
        note: bool = True,
    ) -> Buffer | None:
        self._open_now()
        pending = self._pending
        if pending is not None:
            staged = pending.staged.get(key)
            if staged is not None:
                with staged.open("rb") as f:
                    data = _read_range(f, staged.stat().st_size, byte_range)
                return prototype.buffer.from_bytes(data)
        if note:
            self._note_read(key)
        if key not in self._names or self._zf is None:
            return None
        info = self._zf.getinfo(key)
        try:
            with self._zf.open(info) as f:
                data = _read_range(f, info.file_size, byte_range)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:  # say which zip
            raise zipfile.BadZipFile(
                f"zip shard {os.fspath(self.path)!r}, member {key!r}: {error}; the zip is "
                "damaged: write the shard again or restore it"
            ) from error
        return prototype.buffer.from_bytes(data)

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        # docstring inherited
        with self._lock:
            return self._get(key, prototype, byte_range)

    def peek(self, key: str, prototype: BufferPrototype | None = None) -> Buffer | None:
        """Read a whole member without it counting as read for compare-and-swap.

        For a layout's own bookkeeping (an array's metadata read to lay out its shards):
        only what the caller read is compared when the caller writes.
        """
        with self._lock:
            return self._get(key, prototype or default_buffer_prototype(), note=False)

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get` (zarr's ``SupportsGetSync``)."""
        with self._lock:
            return self._get(key, prototype or default_buffer_prototype(), byte_range)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        # docstring inherited
        with self._lock:
            return [self._get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        # docstring inherited
        with self._lock:
            self._open_now()
            self._note_read(key)
            return key in self._names

    async def getsize(self, key: str) -> int:
        # docstring inherited
        with self._lock:
            self._open_now()
            self._note_read(key)
            if key not in self._names:
                raise FileNotFoundError(key)
            pending = self._pending
            if pending is not None and key in pending.staged:
                return pending.staged[key].stat().st_size
            assert self._zf is not None
            return self._zf.getinfo(key).file_size

    def _keys(self) -> list[str]:
        with self._lock:
            self._open_now()
            return list(self._names)

    async def list(self) -> AsyncIterator[str]:
        # docstring inherited
        for key in self._keys():
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for key in self._keys():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        # docstring inherited
        for name in child_names(self._keys(), prefix):
            yield name

    # ----------------------------------------------------------------- writes

    def _set(self, key: str, value: Buffer) -> None:
        with self._lock:
            data = value.to_bytes()
            self._staging_for(key).stage(key, data)
            self._names[key] = None
            self._seen[key] = crc32(data)

    async def set(self, key: str, value: Buffer) -> None:
        # docstring inherited
        if not isinstance(value, Buffer):
            raise TypeError(
                "CopyOnWriteZipStore.set(): `value` must be a Buffer instance. "
                f"Got an instance of {type(value)} instead."
            )
        self._set(key, value)

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set` (zarr's ``SupportsSetSync``)."""
        self._set(key, value)

    def _check_can_write(self) -> None:
        self._check_writable()
        if self._refusal is not None:
            raise LayoutError(self._refusal)
        if os.getpid() != self._pid:
            raise LayoutError(
                f"zip {os.fspath(self.path)!r}: this store was inherited by a forked process "
                "(a process pool or multiprocessing worker); zips are committed by close() in "
                "the process that writes them, so they cannot be written from a fork. Write to "
                "directory shards and convert them to zips afterwards (shardedstore convert "
                "LAYOUT --to zip), or write from the process that opened the store"
            )
        self._open_now()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        # docstring inherited
        with self._lock:
            self._check_can_write()
            if key not in self._names:
                self._set(key, value)

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete` (zarr's ``SupportsDeleteSync``)."""
        with self._lock:
            self._check_can_write()
            if key in self._names:  # deleting what is not there writes nothing
                self._staging_for(key).unstage(key)
                del self._names[key]
                self._seen[key] = None

    async def delete(self, key: str) -> None:
        # docstring inherited
        self.delete_sync(key)

    async def delete_dir(self, prefix: str) -> None:
        # docstring inherited
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        with self._lock:
            self._check_can_write()
            keys = [key for key in self._names if key.startswith(prefix)]
            for key in keys:  # every key checked before any is deleted
                self._staging_for(key)
            for key in keys:
                self._staging_for(key).unstage(key)
                del self._names[key]
                self._seen[key] = None

    async def clear(self) -> None:
        # docstring inherited
        await self.delete_dir("")

    async def move(self, path: Path | str) -> None:
        """Commit, then move the zip to ``path``."""
        self.close()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(self.path, target)
        self.path = target
        await self._open()
