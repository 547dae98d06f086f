"""Exceptions and warnings of shardedstore, each a subclass of the builtin it refines."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "ConcurrentWriteError",
    "CorruptDataError",
    "ConfigError",
    "KeyValidationError",
    "LayoutError",
    "json_path",
]


class LayoutError(ValueError):
    """A layout (mounts, array shards, array metadata) that shardedstore cannot serve.

    The message names the path or dimension at fault and what to change.
    """


class ConcurrentWriteError(ValueError):
    """Another writer holds the file this write needs (one writer per zip shard).

    Raised at once, before anything is written; the message names the file, the
    process holding it where known, and what to do instead.
    """


class KeyValidationError(ValueError):
    """A key or prefix that is not a valid relative Zarr key; nothing was read or written."""


class ConfigError(ValueError):
    """A layout config that cannot be read or written; nothing was opened or run.

    The message starts with the JSON path of the field at fault
    (``mounts.people.type: unknown store type 'foo'; ...``).

    Attributes
    ----------
    path
        The JSON path of the field at fault, as a tuple of keys and indices
        (empty for the config as a whole).
    """

    def __init__(self, path: Sequence[str | int], problem: str) -> None:
        self.path = tuple(path)
        self.problem = problem
        super().__init__(f"{json_path(self.path)}: {problem}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[tuple[str | int, ...], str]]:
        return (type(self), (self.path, self.problem))


def json_path(parts: Sequence[str | int]) -> str:
    """A JSON path for messages: ``mounts.people.type``, ``base["a.b"]``, ``args[0]``.

    The config as a whole is ``<config>``.
    """
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-/" for c in part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "<config>"


class CorruptDataError(OSError):
    """Bytes read from a shard fail their check (a zip member's CRC-32, a cached chunk's
    checksum) even when fetched afresh: the object itself is damaged.

    A damaged *cached* copy never raises this: it is dropped and fetched again. The
    message names the object and the key.
    """


class CacheWarning(UserWarning):
    """The shard cache cannot do what its setting asks (its directory cannot be
    written, say); reading goes on without it. Issued once per store."""
