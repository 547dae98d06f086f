"""An exclusive, non-blocking OS file lock: one writer per file, across processes.

``flock`` locks belong to an open file description, so a second lock on the same
file fails even from the same process (a second store object), and the kernel
drops the lock when its holder dies (kill -9 included): a crash never leaves a
stale lock behind. The lock file is removed on release; :func:`acquire` checks
that the file it locked is still the one at ``path`` so that a lock taken on a
file just removed by its previous holder is retried rather than trusted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from shardedstore._errors import ConcurrentWriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileLock", "acquire"]


class FileLock:
    """A held lock; :meth:`release` removes its file and lets the next writer in."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another writer"
    return f"process {pid}" if pid.isdigit() else "another writer"


def acquire(path: Path, what: str, advice: str) -> FileLock:
    """Take the lock at ``path`` at once or raise.

    Parameters
    ----------
    path
        The lock file (created if needed; its parent must exist).
    what
        What is being locked, for the error message (``"zip shard 'a/b.zip'"``).
    advice
        What to do instead, appended to the error message.

    Raises
    ------
    ConcurrentWriteError
        If another writer (any process, or another store object in this one) holds it.
    """
    if fcntl is None:  # pragma: no cover - Windows
        raise ConcurrentWriteError(
            f"{what}: writing needs POSIX file locks (fcntl), which this platform lacks; {advice}"
        )
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConcurrentWriteError(
                f"{what} is being written by {_holder(path)} (lock file {path}); "
                f"one writer per file at a time: {advice}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return FileLock(path, fd)
        os.close(fd)  # the previous holder removed the file as we opened it: retry
