"""Every exception and warning of shardedstore, each a subclass of the builtin it refines.

This module imports nothing of the package: every layer raises from here. All of them
are exported from ``shardedstore``.

- Layouts and configs: :class:`LayoutError` (and :class:`LocationOverlapError`),
  :class:`ConfigError`, :class:`KeyValidationError`, :class:`ArgumentError`.
- Writers: :class:`ConcurrentWriteError`, :class:`ConflictError`, :class:`CommitError`,
  :class:`UncommittedWarning`.
- Reading: :class:`CorruptDataError`, :class:`RemoteTimeoutError`,
  :class:`CacheWarning`, :class:`ArrayNotFoundError`, :class:`MissingDependencyError`,
  :class:`ReadOnlyError`.
- Shard by shard: :class:`MapShardsError`, :class:`StrayKeysWarning`,
  :class:`VerificationError`, :class:`ChunkTableError` (and :class:`MapChunksError`),
  :class:`OutputError` (and :class:`ChunkTableOutputError`), :class:`SourceError` (and
  :class:`SourceNotFoundError`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "ArgumentError",
    "ArrayNotFoundError",
    "CacheWarning",
    "ChunkTableError",
    "ChunkTableOutputError",
    "CommitError",
    "ConcurrentWriteError",
    "ConfigError",
    "ConflictError",
    "CorruptDataError",
    "KeyValidationError",
    "LayoutError",
    "LocationOverlapError",
    "MapChunksError",
    "MapShardsError",
    "MissingDependencyError",
    "OutputError",
    "ReadOnlyError",
    "RemoteTimeoutError",
    "SourceError",
    "SourceNotFoundError",
    "StrayKeysWarning",
    "UncommittedWarning",
    "VerificationError",
    "describe_shard",
    "json_path",
]

TIMEOUT_ENV_VAR = "SHARDEDSTORE_TIMEOUT"
"""Environment variable holding the default time limit in seconds (``none``: no limit)."""


def describe_shard(shard_path: str, chunk_index: str | None) -> str:
    """A shard as messages name it: ``base``, ``mount 'a/b'``, ``array shard 'x' chunk 3``."""
    if chunk_index is not None:
        return f"array shard {shard_path!r} chunk {chunk_index}"
    return f"mount {shard_path!r}" if shard_path else "base"


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


class ArgumentError(ValueError):
    """An argument that cannot be used (a command-line option, a statistic's name); the
    message names it and says what is allowed. Nothing was done."""


class OutputError(ValueError):
    """An output named for writing cannot be used: a prefix that names no output (empty,
    a root, ``.``, a bucket alone), a directory that holds something else, a config file
    that exists. Nothing was written or deleted; the message says what to give instead."""


class ChunkTableOutputError(OutputError):
    """The output directory cannot hold a chunk table; the message says what to do."""


class SourceError(ValueError):
    """The Zarr given to ``import`` (or read by ``chunks``, ``sql``) is not one: not a
    directory, a zip file, a URL or a layout config, or without Zarr metadata at its root.
    Nothing was written; the message names the source and says what to give instead."""


class SourceNotFoundError(SourceError, FileNotFoundError):
    """The Zarr given to ``import`` (or read) does not exist (also a ``FileNotFoundError``).
    Nothing was written."""


class ReadOnlyError(PermissionError):
    """A write through a read-only way of reaching a layout (the ``shardedstore::``
    fsspec protocol); nothing was written.

    The message names the path and the store API that writes with every guarantee of
    the layout: ``shardedstore.open(CONFIG, mode="r+")``, or ``shardedstore import``
    for writers that only write to paths.
    """


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class ArrayNotFoundError(ValueError):
    """An array asked for is not in the hierarchy; the message lists those that are."""


class VerificationError(ValueError):
    """A converted layout does not hold what its source holds; the message says where."""


class LocationOverlapError(LayoutError):
    """Two stores of one layout share a location, or one lies inside the other.

    Attributes
    ----------
    first, second
        The two members of the layout (where they are in it, and their location);
        ``second`` is None when one array-shard template maps different chunk
        indices to one location.
    relation
        How ``first`` relates to ``second`` (``"is the same location as"``).
    """

    _FIX = (
        "give every store of a layout its own location, none inside another (to nest "
        "layouts, mount a ShardedStore whose stores are separate)"
    )
    _COLLAPSE_FIX = "keep {chunk} in the path once '..' is resolved, e.g. 'shards/{chunk}.zarr'"

    def __init__(
        self, first: Any, second: Any | None, relation: str, name: Callable[[Any], str]
    ) -> None:
        self.first = first
        self.second = second
        self.relation = relation
        super().__init__(self.explain(name))

    def explain(self, name: Callable[[Any], str], *, subject: bool = True) -> str:
        """The message, naming members with ``name``; without the subject's name if not."""
        head = (
            f"{name(self.first)} ({self.first.location})" if subject else str(self.first.location)
        )
        if self.second is None:
            return f"{head} {self.relation}; {self._COLLAPSE_FIX}"
        return f"{head} {self.relation} {name(self.second)} ({self.second.location}); {self._FIX}"

    def __reduce__(self) -> tuple[type[LayoutError], tuple[str]]:
        # The members hold stores; a plain LayoutError with the message pickles.
        return (LayoutError, (str(self),))


class RemoteTimeoutError(TimeoutError):
    """A remote call got no answer within its time limit; nothing was changed.

    Attributes
    ----------
    url
        Where the call went.
    timeout
        The limit, in seconds.
    """

    def __init__(self, what: str, url: str, timeout: float) -> None:
        self.what = what
        self.url = url
        self.timeout = timeout
        super().__init__(
            f"{what} {url}: no answer within {timeout:g} s; check that the server is "
            f"reachable, or allow longer with timeout= (shardedstore.open) or the "
            f"environment variable {TIMEOUT_ENV_VAR} (seconds, 'none' for no limit)"
        )

    def __reduce__(self) -> tuple[type[RemoteTimeoutError], tuple[str, str, float]]:
        return (type(self), (self.what, self.url, self.timeout))


class MapShardsError(RuntimeError):
    """A shard failed to transform. Finished shards are complete and usable.

    Attributes
    ----------
    shard_path
        The failing shard's node path (``""`` for the base).
    chunk_index
        The failing array shard's chunk index, or None for the base or a mount.
    finished
        How many shards were transformed before the run stopped.
    """

    def __init__(
        self,
        shard_path: str,
        chunk_index: str | None,
        finished: int,
        total: int,
        error: BaseException,
    ) -> None:
        self.shard_path = shard_path
        self.chunk_index = chunk_index
        self.finished = finished
        super().__init__(
            f"map_shards: {describe_shard(shard_path, chunk_index)} failed: "
            f"{type(error).__name__}: {error}; {finished} of {total} shards finished and are "
            "usable; fix the cause and run again to finish (complete outputs are skipped)"
        )


class StrayKeysWarning(UserWarning):
    """``map_shards`` left out keys or array shards that no reader of the layout reaches.

    Attributes
    ----------
    notes
        One line per shard (stray keys, with examples) or per array (array shards
        outside the array's shape).
    """

    def __init__(self, notes: Sequence[str]) -> None:
        self.notes = tuple(notes)
        super().__init__(
            "map_shards: not copied, as no reader of the layout reaches them (shardedstore "
            "validate lists them; give the transform include_stray=True to copy them): "
            + "; ".join(self.notes)
        )


class ChunkTableError(RuntimeError):
    """A shard failed while building a chunk table.

    Attributes
    ----------
    shard
        The shard as messages name it (``base``, ``array shard 'x' chunk 3``).
    array
        The array whose chunks were being read.
    """

    _operation = "chunk table"
    _advice = (
        "{done} of {total} tasks finished (write_chunk_table keeps their files: run it "
        "again to finish)"
    )

    def __init__(self, shard: str, array: str, done: int, total: int, error: BaseException):
        self.shard = shard
        self.array = array
        super().__init__(
            f"{self._operation}: {shard}, array {array!r} failed: {type(error).__name__}: "
            f"{error}; {self._advice.format(done=done, total=total)}"
        )


class MapChunksError(ChunkTableError):
    """A shard failed while ``map_chunks`` ran its function on the shard's chunks.

    Attributes
    ----------
    shard
        The shard as messages name it (``base``, ``array shard 'x' chunk 3``).
    array
        The array whose chunks were being read.
    """

    _operation = "map_chunks"
    _advice = (
        "{done} of {total} tasks had finished; fix the cause (a function that fails on "
        "some chunks, an unreadable shard) and run again"
    )
