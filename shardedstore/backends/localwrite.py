"""Keys of a local directory written atomically, in four system calls.

zarr's ``LocalStore`` writes a key to ``NAME.<32 hex>.partial`` and renames it over
``NAME``: a reader never sees half a file, and a crash leaves at most the temporary
file. On its way it makes sure of the parent folder (``mkdir`` and ``stat``), draws
the name (``getrandom``), and opens a buffered file (``fstat``, ``ioctl``, ``lseek``):
ten system calls for a chunk. :func:`put` writes the same file, under the same
temporary name, with four (``open``, ``write``, ``close``, ``rename``), and makes the
parent folders only when the ``open`` says they are missing. :func:`create_store`
makes a new array shard, its folder and its metadata documents, in one call.

Only for a store of exactly zarr's ``LocalStore`` class, writable and open: a
subclass may write in its own way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from typing import Any

__all__ = ["create_store", "make_folder", "put"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def put(root: str, key: str, data: Any) -> None:
    """Write ``data`` (bytes-like) to ``root/key`` atomically, as zarr's ``LocalStore`` does.

    Parameters
    ----------
    root
        The store's folder.
    key
        The key, ``/`` separated.
    data
        The bytes, any contiguous buffer.
    """
    path = os.path.join(root, key)
    # zarr's name: NAME's suffix replaced (zarr.json -> zarr.<hex>.partial)
    temporary = f"{os.path.splitext(path)[0]}.{os.urandom(16).hex()}.partial"
    try:
        fd = os.open(temporary, _FLAGS, 0o666)
    except FileNotFoundError:
        make_folder(os.path.dirname(path))
        fd = os.open(temporary, _FLAGS, 0o666)
    try:
        try:
            view = memoryview(data).cast("B")
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):  # must not hide the write's error
            os.unlink(temporary)
        raise


def make_folder(path: str) -> None:
    """Make the folder ``path`` and its missing parents (``os.makedirs``, without its
    ``stat`` of each parent first: one ``mkdir`` when only ``path`` is missing).

    A file where a folder should be fails the write that follows
    (``NotADirectoryError``), as with ``os.makedirs(path, exist_ok=True)``... followed
    by the write.
    """
    try:
        os.mkdir(path)
    except FileExistsError:
        pass
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if parent == path:
            raise
        make_folder(parent)
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            os.mkdir(path)


def create_store(root: str, documents: Iterable[tuple[str, Any]]) -> None:
    """Make the folder ``root`` (and its parents) and write ``documents`` into it.

    A folder already there is used as it is (another writer made the same shard).

    Parameters
    ----------
    root
        The store's folder.
    documents
        ``(key, bytes)`` pairs, each written with :func:`put`.
    """
    make_folder(root)  # a file there fails the writes below
    for key, data in documents:
        put(root, key, data)
