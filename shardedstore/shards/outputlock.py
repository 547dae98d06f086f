"""One conversion per output at a time, and the leftovers of dead ones removed.

- A local output (zips, directories, ``file://`` URLs) is locked with an OS lock on
  ``PREFIX.lock`` beside it (:mod:`shardedstore.backends.filelock`): a second conversion into it
  fails at once, and the lock dies with its process, kill -9 included.
- An object store has no locks. A URL output is claimed with a *lease*: an object
  ``PREFIX.lock`` created only if absent (``If-None-Match: *`` on S3), naming the run
  and renewed every third of its duration by a background thread. A second conversion
  that finds a live lease fails at once; one that finds an expired lease (its holder
  died) takes it over. This assumes the clocks of the machines agree to within the
  lease, and a run paused for longer than its lease may overlap the next one.
- Only the holder of the lock or lease removes leftovers (``NAME.partial-*``) of
  earlier runs, so one run's cleanup never removes another live run's work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from shardedstore.backends.filelock import acquire
from shardedstore.errors import ConcurrentWriteError

__all__ = [
    "PARTIAL",
    "UrlLease",
    "leftover_pattern",
    "local_output_lock",
    "remove_local_leftovers",
    "remove_url_leftovers",
]

PARTIAL = ".partial-"
"""Infix of the temporary name an output is written under: ``NAME.partial-<12 hex>``."""

_ADVICE = "wait for the other conversion to finish, or convert into another output prefix (--out)"


@contextlib.contextmanager
def local_output_lock(prefix: str, what: str) -> Iterator[None]:
    """Hold the OS lock ``{prefix}.lock`` for the duration of a conversion into ``prefix``.

    Raises
    ------
    ConcurrentWriteError
        At once, if another conversion (any process) holds it.
    """
    path = Path(f"{prefix}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = acquire(path, what, _ADVICE)
    try:
        yield
    finally:
        lock.release()


def leftover_pattern(
    names: Iterable[str], suffix: str, *, array_shards: bool = False
) -> re.Pattern[str]:
    """Temporary names of the outputs ``names`` (and of array shards ``<index><suffix>``).

    Only names a conversion writes match: never another writer's temporary files
    (a copy-on-write zip's ``.NAME.zip.partial-*`` starts with a dot).
    """
    alternatives = [re.escape(name) for name in sorted(set(names))]
    if array_shards:
        alternatives.append(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*" + re.escape(suffix))
    if not alternatives:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile(f"(?:{'|'.join(alternatives)}){re.escape(PARTIAL)}[0-9a-f]{{12}}")


def remove_local_leftovers(directories: dict[str, re.Pattern[str]]) -> int:
    """Remove temporary outputs of dead runs; call only while holding the output lock.

    Parameters
    ----------
    directories
        Directory -> the names of leftovers in it (from :func:`leftover_pattern`).

    Returns
    -------
    int
        How many leftovers were removed.
    """
    removed = 0
    for directory, pattern in directories.items():
        try:
            entries = list(os.scandir(directory or "."))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if not pattern.fullmatch(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
            removed += 1
    return removed


def remove_url_leftovers(fs: Any, directories: dict[str, re.Pattern[str]]) -> int:
    """:func:`remove_local_leftovers` for an fsspec filesystem (object stores included)."""
    removed = 0
    for directory, pattern in directories.items():
        with contextlib.suppress(Exception):
            fs.invalidate_cache(directory)
        try:
            entries = fs.ls(directory, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if pattern.fullmatch(str(entry).rstrip("/").rsplit("/", 1)[-1]):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm(entry, recursive=True)
                removed += 1
    return removed


# ------------------------------------------------------------------ leases


class UrlLease:
    """A lease on a URL output: the lock object ``{url}.lock``, renewed while held.

    Use as a context manager; entering raises :class:`ConcurrentWriteError` at once if
    another live run holds the lease.

    Parameters
    ----------
    fs
        The fsspec filesystem of the output.
    path
        The lock object's path on ``fs``.
    url
        The output URL, for messages.
    lease_seconds
        How long the lease lasts without renewal; the holder renews it every third.
    """

    def __init__(self, fs: Any, path: str, url: str, lease_seconds: float) -> None:
        if not lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        self.fs = fs
        self.path = path
        self.url = url
        self.lease_seconds = float(lease_seconds)
        self.run = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps(
            {
                "run": self.run,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "lease_seconds": self.lease_seconds,
                "renewed": time.time(),
            }
        ).encode()

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(data)
            float(holder["renewed"]), float(holder["lease_seconds"])
        except (ValueError, TypeError, KeyError) as error:
            raise ConcurrentWriteError(
                f"{self.url}: the lock object {self.url}.lock is not one shardedstore wrote "
                f"({error}); if no conversion into {self.url} is running, remove it"
            ) from None
        return dict(holder)

    def _busy(self, holder: dict[str, Any], age: float) -> ConcurrentWriteError:
        left = max(0.0, float(holder["lease_seconds"]) - age)
        return ConcurrentWriteError(
            f"{self.url} is being written by process {holder.get('pid')} on "
            f"{holder.get('host')} (lock object {self.url}.lock, renewed {age:.0f} s ago); "
            f"one conversion per output at a time: {_ADVICE}. If that process is gone, its "
            f"lease expires in {left:.0f} s, or remove {self.url}.lock"
        )

    def _create(self) -> None:
        """Write the lock object only if absent (FileExistsError otherwise)."""
        try:
            self.fs.pipe_file(self.path, self._record(), mode="create")
        except TypeError:  # a filesystem without exclusive writes: check, then write
            if self.fs.exists(self.path):
                raise FileExistsError(self.path) from None
            self.fs.pipe_file(self.path, self._record())

    def __enter__(self) -> UrlLease:
        for _ in range(3):
            try:
                self._create()
                break
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile: try again
                age = time.time() - float(holder["renewed"])
                if age <= float(holder["lease_seconds"]):
                    raise self._busy(holder, age) from None
                # Expired: its holder died without releasing it. Take it over.
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.path)
        else:
            raise ConcurrentWriteError(
                f"{self.url}: another conversion took the lock object {self.url}.lock at the "
                f"same time; {_ADVICE}"
            )
        self._renewer = threading.Thread(target=self._renew, name=f"lease {self.url}", daemon=True)
        self._renewer.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                holder = self._holder()
                if holder is None or holder.get("run") != self.run:
                    self.lost = True  # taken over after this process stalled
                    return
                self.fs.pipe_file(self.path, self._record())
            except Exception:  # a transient error: the next round retries
                continue

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with contextlib.suppress(Exception):
            holder = self._holder()
            if holder is not None and holder.get("run") == self.run:
                self.fs.rm_file(self.path)
