"""Exceptions and warnings of shardedstore, each a subclass of the builtin it refines."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CacheWarning",
    "CommitError",
    "ConcurrentWriteError",
    "ConflictError",
    "CorruptDataError",
    "ConfigError",
    "KeyValidationError",
    "LayoutError",
    "UncommittedWarning",
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


class ConflictError(ValueError):
    """The layout changed since this store read what a write would replace.

    Another writer committed a new version of a metadata document (an array's shape,
    its attributes) or of a zip member after this store read it: writing would lose
    that writer's update. Nothing of the write was done. Open the layout again (a new
    store), read what is there now and write again.

    Attributes
    ----------
    key
        The key that changed, as the store that raised it names it.
    """

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type[ConflictError], tuple[str, str]]:
        return (type(self), (str(self), self.key))


class CommitError(ValueError):
    """``close()`` committed nothing: a write failed and was not written again.

    The uncommitted changes of the store's zips were discarded and every zip was left
    as it was; the message names the first key that failed and the zips. Directory and
    object-store shards keep what was written to them (they have nothing to commit).
    """


class UncommittedWarning(UserWarning):
    """Uncommitted changes to zips were discarded when a store was dropped or at exit.

    Issued when a store is left without ``close()`` after a write that failed and was
    not written again, after a conflict, or when the program ends with an uncaught
    exception; the message names the zips and the keys that failed.
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
