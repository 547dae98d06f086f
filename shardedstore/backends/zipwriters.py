"""Zips being written, and what writers that died left beside them.

A :class:`~shardedstore.backends.zipstore.CopyOnWriteZipStore` writer holds ``.NAME.lock``
and stages its changes in ``.NAME.staging-*`` beside the zip ``NAME``; ``close()``
writes ``.NAME.partial-*`` and renames it over the zip (see ``leftover_names``).
Until then readers see the zip as it was (or, for a new array shard, no zip at all),
which ``validate`` says: a live writer when the lock is held, a dead one's leftovers
when it is not. Nothing here takes a lock or removes anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shardedstore.backends.filelock import is_held, lock_holder
from shardedstore.backends.zipstore import leftover_names

__all__ = ["ZipWriter", "zip_name_of", "zip_writers"]


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
