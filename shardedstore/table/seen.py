"""What a rerun of the chunk table checks instead of listing a shard: its stamps.

Listing a shard in a local directory takes a scan per folder; a rerun of
``write_chunk_table`` over 10^5 unchanged shards would spend most of its time there.
So a task that lists a shard on local disk (a directory or a zip) also notes the stamps
of what it saw, ``(type, size, mtime, ctime, inode)`` of every folder and file of its
node (of the zip file), and the next run only stats those paths: when every stamp is
the same, the listing would be too, and so the shard's fingerprint. Why that holds:

- adding, removing or renaming an entry changes its folder's mtime and ctime, and every
  folder of the node is stamped; a file rewritten in place changes its mtime and ctime
  (``os.utime`` can set the mtime back, never the ctime); a file or folder replaced is
  another inode; a zip rewritten (shardedstore writes a new one and renames it) or
  appended to changes its size, ctime and inode;
- timestamps tick coarsely (a few ms on Linux, 2 s on FAT), so a change in the tick of
  the stamp seen could keep it. As git does for its index, a run records no stamp newer
  than its start less a margin (:data:`RACY_NS`): any change after the run started
  stamps a later time than every stamp recorded. A shard with a newer stamp is not
  recorded, and its fingerprint is marked so that the next run lists and reads it again
  (see :func:`shardedstore.table.tasks.settled_fingerprint`).

A record is a digest of the stamps and of what the fingerprint depends on besides the
listing (the shard's root, the array, the statistics, which keys readers reach, the
fingerprint itself): a run with other statistics never takes an old record for its own.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass

__all__ = ["RACY_NS", "Folders", "Seen", "is_racy", "record", "still_seen"]

RACY_NS = 3_000_000_000
"""Stamps this close to a run's start (or later) are not trusted by the next run (ns)."""

Stamps = list[tuple[str, os.stat_result]]
"""``(path relative to the shard's root, its lstat)`` of what a listing saw."""


@dataclass(frozen=True, slots=True)
class Seen:
    """The stamps behind a shard's fingerprint.

    Attributes
    ----------
    paths
        Folders and files stamped, relative to the shard's root (``""``: the root, or
        the zip file).
    digest
        Digest of their stamps and of the task's context.
    """

    paths: tuple[str, ...]
    digest: str


_STAMP = struct.Struct("<IqqqQ")


def _stamp(info: os.stat_result) -> bytes:
    """``(type, size, mtime, ctime, inode)``, packed (a rerun makes 5 a shard)."""
    return _STAMP.pack(
        stat.S_IFMT(info.st_mode), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino
    )


def _digest(context: str, paths: tuple[str, ...], stamps: list[bytes]) -> str:
    digest = hashlib.blake2b(context.encode(), digest_size=16)
    digest.update("\0".join(paths).encode())
    digest.update(b"".join(stamps))
    return digest.hexdigest()


def is_racy(stamps: Stamps, before: int) -> bool:
    """Whether a stamp is too recent to be trusted by the next run (or absent)."""
    return not stamps or any(
        max(info.st_mtime_ns, info.st_ctime_ns) >= before for _, info in stamps
    )


def record(stamps: Stamps, context: str, before: int) -> Seen | None:
    """The record of ``stamps`` for the next run; None when one is racy."""
    if is_racy(stamps, before):
        return None
    ordered = sorted(stamps, key=lambda item: item[0])
    paths = tuple(path for path, _ in ordered)
    return Seen(paths, _digest(context, paths, [_stamp(info) for _, info in ordered]))


class Folders:
    """Folders opened once, to stat the shards below them by short relative paths
    (7 system calls a shard become 5: no open and close of each shard's own folder).

    A folder replaced while it is open is still the old one here: a change during the
    run, which the next run sees (its records are the earlier run's, and fail)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    def descriptor(self, folder: str) -> int:
        found = self.open.get(folder)
        if found is None:
            if len(self.open) >= self.limit:
                self.close()
            found = self.open[folder] = os.open(folder or ".", os.O_RDONLY | os.O_DIRECTORY)
        return found

    def close(self) -> None:
        for descriptor in self.open.values():
            os.close(descriptor)
        self.open.clear()


def still_seen(seen: Seen, context: str, root: str, follow: bool, folders: Folders) -> bool:
    """Whether every path of ``seen`` below ``root`` has the stamp recorded.

    ``follow``: ``root`` is a zip file, statted through a symbolic link (it is opened
    so); a folder and its entries are never followed (its listing refuses links).
    """
    if not seen.paths:
        return False
    parent, name = os.path.split(root)
    if not name:
        return False  # a root such as "/": no name to stat it by
    try:
        where = folders.descriptor(parent)
        if follow:  # a zip: the file alone
            if seen.paths != ("",):
                return False
            stamps = [_stamp(os.stat(name, dir_fd=where))]
        else:
            stamps = [
                _stamp(os.stat(f"{name}/{p}" if p else name, dir_fd=where, follow_symlinks=False))
                for p in seen.paths
            ]
    except (OSError, ValueError, struct.error):
        return False
    return _digest(context, seen.paths, stamps) == seen.digest
