"""Output prefixes of the built-in transforms: checked and normalized before any write.

A prefix names outputs, it is not a folder: ``PREFIX.zarr.zip`` (the base) and
``PREFIX/...`` (mounts and array shards). So it must end in a name. An empty prefix
(an unset ``$OUT`` in a script) would put the outputs at the filesystem root, ``out/``
would give a hidden ``out/.zarr.zip``, and ``s3://bucket`` would name another bucket
(``s3://bucket.zarr``): all are refused. Doubled and trailing slashes are removed, so
``out//ds/`` and ``out/ds`` are the same prefix.
"""

from __future__ import annotations

import os
import posixpath

from shardedstore.errors import OutputError

__all__ = ["OutputError", "check_path_prefix", "check_url_prefix"]

_LOCAL_SCHEMES = ("file", "local")
_NO_CONTAINER_SCHEMES = ("memory",)
"""fsspec protocols whose paths need no bucket or host before the name."""


def check_path_prefix(prefix: str | os.PathLike[str], what: str = "prefix") -> str:
    """The normalized local output prefix, or :class:`OutputError`.

    Parameters
    ----------
    prefix
        A local path such as ``archive/ds``.
    what
        How the caller calls it in messages (``"--out"`` on the command line).

    Examples
    --------
    >>> check_path_prefix("archive//ds/")
    'archive/ds'
    """
    text = os.fspath(prefix)
    if not isinstance(text, str) or not text.strip():
        raise OutputError(
            f"{what} is empty; it names the outputs (PREFIX.zarr.zip or PREFIX.zarr for the "
            "base, PREFIX/... for the other shards): give a path such as archive/ds"
        )
    if "://" in text or "::" in text:
        raise OutputError(
            f"{what} {text!r} is a URL, but zips and directories are written to local paths; "
            "use to_url_with_prefix (shardedstore convert --to url) for URLs"
        )
    normalized = os.path.normpath(text)
    name = os.path.basename(normalized)
    if name in ("", ".", ".."):
        where = "the filesystem root" if not name else f"the directory {normalized!r}"
        raise OutputError(
            f"{what} {text!r} is {where}, not a name for the outputs (they are PREFIX.zarr.zip "
            f"or PREFIX.zarr and PREFIX/...): give a name below it, such as "
            f"{os.path.join(normalized, 'ds')!r}"
        )
    return normalized


def check_url_prefix(url: str, what: str = "prefix") -> str:
    """The normalized output URL prefix, or :class:`OutputError`.

    ``file://`` URLs and plain paths follow :func:`check_path_prefix`; other URLs need a
    name below their bucket (or host): ``s3://bucket/ds``, not ``s3://bucket``.

    Examples
    --------
    >>> check_url_prefix("s3://bucket//ds/")
    's3://bucket/ds'
    """
    if not isinstance(url, str) or not url.strip():
        raise OutputError(
            f"{what} is empty; give the URL the outputs go below, such as s3://bucket/ds"
        )
    head, chain, last = url.rpartition("::")
    scheme, sep, rest = last.partition("://")
    if not sep:
        return head + chain + check_path_prefix(last, what)
    if scheme in _LOCAL_SCHEMES:
        if not rest.strip():
            raise OutputError(
                f"{what} {url!r} has an empty path; give one such as file:///data/archive/ds"
            )
        return f"{head}{chain}{scheme}://{check_path_prefix(rest, what)}"
    parts = [part for part in rest.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise OutputError(
            f"{what} {url!r} has '.' or '..' in its path, which object stores do not resolve; "
            "spell the path out"
        )
    needed = 1 if scheme in _NO_CONTAINER_SCHEMES else 2
    if len(parts) < needed:
        example = posixpath.join(*(parts or ["bucket"]), "ds")
        raise OutputError(
            f"{what} {url!r} names no output below "
            f"{'its bucket or host' if parts else 'the store'} (the outputs are PREFIX.zarr "
            f"and PREFIX/...): give a name, such as {scheme}://{example}"
        )
    return f"{head}{chain}{scheme}://{'/'.join(parts)}"
