"""Key arithmetic for stores that hold a flat list of keys (zips, a shard's own keys)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

__all__ = ["child_names"]


def child_names(keys: Iterable[str], prefix: str) -> Iterator[str]:
    """What ``list_dir(prefix)`` yields over ``keys``: each name directly below, once."""
    prefix = prefix.rstrip("/")
    start = f"{prefix}/" if prefix else ""
    seen: set[str] = set()
    for key in keys:
        if key.startswith(start):
            name = key[len(start) :].split("/", 1)[0]
            if name and name not in seen:  # "" for a zip's directory entry "a/"
                seen.add(name)
                yield name
