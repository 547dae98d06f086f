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
import time
from pathlib import Path

from shardedstore.errors import ConcurrentWriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FileLock", "acquire", "is_held", "lock_holder"]


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


def lock_holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its file says: ``"process 4242"``."""
    try:
        pid = path.read_text().strip()
    except OSError:
        return "another writer"
    return f"process {pid}" if pid.isdigit() else "another writer"


def _held_per_proc_locks(info: os.stat_result) -> bool | None:
    """Whether the kernel lists a flock on the file ``info`` describes (None: cannot tell)."""
    try:
        with open("/proc/locks") as f:
            table = f.read()
    except OSError:
        return None
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2342923 0 EOF"; waiters have "->" first.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False


def is_held(path: Path) -> bool:
    """Whether a writer holds the lock at ``path`` now, without taking or creating it.

    Looks the lock up in ``/proc/locks`` where there is one, so that checking never
    makes a writer starting at that moment fail; elsewhere takes a shared lock for an
    instant. A lock file nobody holds is a writer's that died (kill -9).
    """
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    held = _held_per_proc_locks(info)
    if held is not None or fcntl is None:
        return bool(held)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if it was taken
    return False


def acquire(path: Path, what: str, advice: str, *, wait: float = 0.0) -> FileLock:
    """Take the lock at ``path`` at once (or within ``wait`` seconds) or raise.

    Parameters
    ----------
    path
        The lock file (created if needed; its parent must exist).
    what
        What is being locked, for the error message (``"zip shard 'a/b.zip'"``).
    advice
        What to do instead, appended to the error message.
    wait
        Seconds to keep trying while another writer holds the lock (for locks held
        only for an instant, such as a metadata document's compare-and-swap).

    Raises
    ------
    ConcurrentWriteError
        If another writer (any process, or another store object in this one) holds it.
    """
    if fcntl is None:  # pragma: no cover - Windows
        raise ConcurrentWriteError(
            f"{what}: writing needs POSIX file locks (fcntl), which this platform lacks; {advice}"
        )
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.005)
                continue
            raise ConcurrentWriteError(
                f"{what} is being written by {lock_holder(path)} (lock file {path}); "
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
            lock = FileLock(path, fd)
            try:  # who holds it, for messages (a full disk must not keep the lock held)
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
            except BaseException:
                lock.release()
                raise
            return lock
        os.close(fd)  # the previous holder removed the file as we opened it: retry
