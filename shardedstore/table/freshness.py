"""Listings of shards on local disk, walked once, then re-validated by ``lstat`` alone.

Pruning by value lists every shard of an array before each query: a statistic is used
only while its shard is what the statistic was computed from. Walking a shard costs a
``scandir`` per directory and an ``lstat`` per file; this module keeps each walk with
the stamp (size, mtime, ctime, inode) of every directory and file it saw, and at the
next query only ``lstat`` s those paths. The walk is reused only if every stamp is the
same:

- a chunk written in place changes its file's mtime and ctime (whatever its size; a
  writer that sets mtime back cannot set ctime);
- a chunk written by rename, added or removed changes its directory's mtime and ctime
  (a new directory changes its parent's), a replaced file or directory its inode;
- an entry ``lstat`` cannot find, or that became a symlink, is a change.

Stamps have the resolution of the file system's clock: an entry changed twice within one
tick keeps its stamp. So, as git does for "racily clean" files, a walk that saw a stamp
less than :data:`RACY_NS` older than the moment it started is not kept: that shard is
walked again at each query until its entries are older.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from shardedstore.table.seen import Stamps
from shardedstore.table.tasks import (
    ChunkTask,
    Listing,
    Stamp,
    local_root,
    owned,
    stamp_of,
    walk_local,
)

__all__ = ["RACY_NS", "clear", "list_local_fresh", "settled"]

RACY_NS = 3_000_000_000
"""A walk is kept only if every stamp it saw is at least this much older than its start
(file system clocks tick coarsely, and a network file system's clock may lag ours): the
margin the chunk table's stamps take too (:data:`shardedstore.table.seen.RACY_NS`)."""

_STAMPS = 1_000_000
"""Stamps (files and directories) the kept walks hold at most (least recently used go)."""


@dataclass(frozen=True, slots=True)
class _Walk:
    keys: dict[str, tuple[int | None, str]]
    stamps: dict[str, Stamp]
    serial: int | None
    """A number of its own while kept; None for a walk not kept (walked again next time)."""


_walks: OrderedDict[tuple[str, str], _Walk] = OrderedDict()
_held = 0
_lock = threading.Lock()
_serials = itertools.count()


def _unchanged(walk: _Walk, root: str, root_info: os.stat_result) -> bool:
    lstat = os.lstat
    try:
        for path, expected in walk.stamps.items():
            info = root_info if path == root else lstat(path)
            if stamp_of(info) != expected:
                return False
    except OSError:
        return False
    return True


def _keep(key: tuple[str, str], walk: _Walk | None) -> None:
    global _held
    with _lock:
        old = _walks.pop(key, None)
        if old is not None:
            _held -= len(old.stamps)
        if walk is None:
            return
        _walks[key] = walk
        _held += len(walk.stamps)
        while _held > _STAMPS and len(_walks) > 1:
            _, dropped = _walks.popitem(last=False)
            _held -= len(dropped.stamps)


def _walked(root: str, prefix: str, shard: str, root_info: os.stat_result) -> _Walk:
    key = (root, prefix)
    with _lock:
        kept = _walks.get(key)
        if kept is not None:
            _walks.move_to_end(key)
    if kept is not None and _unchanged(kept, root, root_info):
        return kept
    started = time.time_ns()
    seen: Stamps = []
    keys = walk_local(root, prefix, shard, root_info, seen)
    stamps = {(os.path.join(root, key) if key else root): stamp_of(info) for key, info in seen}
    kept_now = bool(stamps) and settled(stamps.values(), started)
    walk = _Walk(keys, stamps, next(_serials) if kept_now else None)
    _keep(key, walk if kept_now else None)
    return walk


def settled(stamps: Iterable[Stamp], started: int) -> bool:
    """Whether every stamp is older than ``RACY_NS`` before ``started`` (``time.time_ns()``
    before they were taken): a later change cannot leave any of them as it is."""
    newest = max((max(s[1], s[2]) for s in stamps), default=started)
    return newest < started - RACY_NS


def list_local_fresh(task: ChunkTask) -> tuple[Listing | None, Hashable | None]:
    """The task's listing (as :func:`shardedstore.table.tasks.list_local` gives it) and a
    token that is the same only while the shard is unchanged.

    The token is ``"absent"`` for a shard never written, the number of the walk kept
    while the shard is unchanged, and None for a shard whose walk is not kept (a file
    changed less than :data:`RACY_NS` before it: walked again at each query, nothing
    known of it is kept by its token).
    """
    found = local_root(task)
    if found is None:
        return None, "absent"
    root, info = found
    walk = _walked(root, task.array.inner, task.shard, info)
    return Listing(owned(task.own_keys, walk.keys)), walk.serial


def clear() -> None:
    """Forget every walk kept (the next query walks every shard)."""
    global _held
    with _lock:
        _walks.clear()
        _held = 0
