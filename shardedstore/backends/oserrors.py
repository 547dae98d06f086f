"""Write errors that name what the user wrote, never a temporary file.

Writes go through temporary names that are renamed once complete: zarr's
``LocalStore`` writes ``NAME.<32 hex>.partial``, copy-on-write zips stage in
``.NAME.zip.staging-<12 hex>/`` (under the lock ``.NAME.zip.lock``) and commit
``.NAME.zip.partial-<12 hex>``, outputs of
``convert`` and chunk tables are written as ``NAME.partial-<12 hex>``. An ``OSError``
raised there (a full disk, a read-only or unreachable location, too many open files)
names that temporary path, which the user never wrote and will not find. Here such
errors are given the final path instead, and the key being written, with the same
errno and type (``FileNotFoundError``, ``PermissionError``, ...).
"""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

__all__ = ["final_path", "renamed", "without_temporary_names"]


_ZARR_PARTIAL = re.compile(r"^(?P<stem>.+)\.[0-9a-f]{32}\.partial$")
_ZIP_TEMPORARY = re.compile(
    r"^\.(?P<name>.+)\.(?:(?:staging|partial)-[0-9a-f]{12}|lock)$"  # and a writer's lock
)
_OUTPUT_PARTIAL = re.compile(r"^(?P<name>[^.].*)\.partial-[0-9a-f]{12}$")


def final_path(path: str, name: str | None = None) -> str | None:
    """The path a temporary ``path`` stands for; None when ``path`` is not temporary.

    Parameters
    ----------
    path
        A path as an ``OSError`` names it (``/`` separated).
    name
        The final file name of a zarr ``NAME.<hex>.partial`` temporary file (zarr
        replaces NAME's suffix, so ``zarr.json`` is written as ``zarr.<hex>.partial``);
        without it the stem is used.
    """
    parts = path.split("/")
    for i, part in enumerate(parts):
        match = _ZIP_TEMPORARY.match(part)
        if match is not None:  # a zip's staging or partial file: the zip is the place
            return "/".join([*parts[:i], match["name"]])
        match = _OUTPUT_PARTIAL.match(part)
        if match is not None:  # an output written whole, then renamed: the same inside
            return "/".join([*parts[:i], match["name"], *parts[i + 1 :]])
    match = _ZARR_PARTIAL.match(parts[-1])
    if match is not None:
        stem = match["stem"]
        final = name if name is not None and PurePosixPath(name).stem == stem else stem
        return "/".join([*parts[:-1], final])
    return None


def _rebuilt(error: OSError, strerror: str, filename: Any, filename2: Any) -> OSError:
    if filename2 is not None and filename2 == filename:
        filename2 = None  # "x.partial -> x": the same place once renamed
    rebuilt = OSError(error.errno, strerror, filename, None, filename2)
    rebuilt.__traceback__ = error.__traceback__
    return rebuilt


def without_temporary_names(
    error: OSError, *, key: str | None = None, name: str | None = None
) -> OSError:
    """``error`` naming final paths (and ``key``) instead of temporary ones.

    Only builtin ``OSError`` classes with an errno are rebuilt; anything else (a
    library's own subclass, a timeout naming its URL) is returned as it is.

    Parameters
    ----------
    error
        The error raised while writing.
    key
        The key being written, added to the message: ``... (writing 't/c/3/0'): PATH``.
    name
        The final file name, for zarr's temporary files (see :func:`final_path`).
    """
    if error.errno is None or type(error).__module__ != builtins.__name__:
        return error
    names = [error.filename, error.filename2]
    finals = [final_path(n, name) if isinstance(n, str) else None for n in names]
    if all(final is None for final in finals) and key is None:
        return error
    filename, filename2 = (final or n for final, n in zip(finals, names, strict=True))
    strerror = error.strerror or ""
    if key is not None:
        strerror = f"{strerror} (writing {key!r})"
    return _rebuilt(error, strerror, filename, filename2)


def renamed(error: BaseException, temporary: str, final: str) -> BaseException:
    """``error`` with the path ``temporary`` (and anything below it) shown as ``final``.

    For errors of code that writes to a temporary name it chose itself (the outputs of
    ``convert``, chunk tables); the message of an error without a filename (pyarrow's)
    is rewritten as text.
    """
    if not isinstance(error, OSError) or type(error).__module__ != builtins.__name__:
        return error
    if error.errno is not None:
        names = [error.filename, error.filename2]
        if not any(isinstance(n, str) and n.startswith(temporary) for n in names):
            return error
        filename, filename2 = (
            final + n[len(temporary) :] if isinstance(n, str) and n.startswith(temporary) else n
            for n in names
        )
        return _rebuilt(error, error.strerror or "", filename, filename2)
    text = str(error)
    if temporary not in text:
        return error
    rebuilt = type(error)(text.replace(temporary, final))
    rebuilt.__traceback__ = error.__traceback__
    return rebuilt


@contextlib.contextmanager
def written_as(temporary: str, final: str, discard: Callable[[], None]) -> Iterator[None]:
    """Write below ``temporary``; on any error, ``discard()`` it and raise as if ``final``.

    The error (see :func:`renamed`) names ``final``: the temporary name means nothing to
    the user.
    """
    try:
        yield
    except BaseException as error:
        discard()
        public = renamed(error, temporary, final)
        if public is error:
            raise
        raise public from None
