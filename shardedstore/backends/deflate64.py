"""Deflate64 zips read through :mod:`zipfile`, decompressed by ``inflate64``.

Deflate64 ("enhanced deflate", zip compression method 9) is what Windows Explorer and 7-Zip
write for large files. Python's :mod:`zipfile` reads stored, deflate, bzip2 and lzma entries
only, and raises ``NotImplementedError`` on method 9. :func:`enable` hooks zipfile's
decompressor lookup so that method 9 entries are inflated by ``inflate64.Inflater`` (the
library py7zr uses, with wheels for every CPython we support). Reading only: nothing here
writes Deflate64, and zips we write use the compression their store was given.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Callable
from typing import Any

__all__ = ["ZIP_DEFLATED64", "enable"]

ZIP_DEFLATED64 = 9
"""The zip compression method number of Deflate64 (APPNOTE 4.4.5)."""

_lock = threading.Lock()
_enabled = False


class _Deflate64Decompressor:
    """What ``zipfile.ZipExtFile`` asks of a decompressor: ``decompress`` and ``eof``."""

    def __init__(self) -> None:
        import inflate64

        self._inflater = inflate64.Inflater()

    @property
    def eof(self) -> bool:
        return bool(self._inflater.eof)

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._inflater.inflate(data)
        return out


def _with_deflate64(original: Callable[[int], Any]) -> Callable[[int], Any]:
    def get_decompressor(compress_type: int) -> Any:
        if compress_type == ZIP_DEFLATED64:
            return _Deflate64Decompressor()
        return original(compress_type)

    return get_decompressor


def enable() -> None:
    """Teach :mod:`zipfile` to read Deflate64 entries (idempotent, thread-safe).

    Only the decompressor lookup changes: entries with other methods, and everything
    zipfile writes, behave exactly as before.
    """
    global _enabled
    with _lock:
        if _enabled:
            return
        import inflate64  # noqa: F401  (fail here, not on the first read, if it is missing)

        # ZipExtFile looks _get_decompressor up in zipfile's globals on every open.
        original = getattr(zipfile, "_get_decompressor")  # noqa: B009  (private)
        setattr(zipfile, "_get_decompressor", _with_deflate64(original))  # noqa: B010
        _enabled = True
