"""A small zip's member table (and a few members) from one read: ``info``/``validate``.

Looking at 10^5 zip shards with :class:`zipfile.ZipFile` costs ~80 us each in Python
(an end record search, a :class:`~zipfile.ZipInfo` per member, a member file object per
read). The zips a layout writes are plain: no comment, no ZIP64, nothing before the
first member, members stored or deflated. :func:`read_plain_zip` reads such a zip's
last 64 KiB (all of a small shard) in one system call and parses its central directory
with :mod:`struct`; anything else (a comment, ZIP64, an extra field, encryption, a CRC
that does not match, a truncated file, any error) gives None, and the caller reads the
zip with :mod:`zipfile`, which then says exactly what is wrong.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence

__all__ = ["read_plain_zip"]

_TAIL = 1 << 16
"""Bytes read from the end of the zip at first (a small shard: all of it)."""

_END = struct.Struct("<4s4H2LH")  # end of central directory record, no comment
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_UTF8 = 0x800
_UNSUPPORTED_FLAGS = 0x1 | 0x20 | 0x40  # encrypted, patched data, strong encryption
_STORED, _DEFLATED = 0, 8
_MAX32 = 0xFFFFFFFF
_MAX_EXTRACT_VERSION = 63  # zipfile's own limit


class _NotPlain(Exception):
    """The zip is not one this module reads: :mod:`zipfile` must."""


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise _NotPlain
    return data


def _member(
    fd: int, tail: bytes, tail_start: int, entry: tuple[int, ...], raw: bytes, limit: int
) -> bytes:
    """A member's bytes, as :meth:`zipfile.ZipFile.read` gives them (CRC checked);
    ``limit``: where the next member (or the central directory) starts."""
    flags, method, crc, packed, size, offset = entry
    if offset >= tail_start and offset + _LOCAL.size <= tail_start + len(tail):
        header = tail[offset - tail_start : offset - tail_start + _LOCAL.size]
    else:
        header = _pread(fd, _LOCAL.size, offset)
    fields = _LOCAL.unpack(header)
    if fields[0] != _LOCAL_SIGNATURE or (fields[3] ^ flags) & _UTF8:
        raise _NotPlain
    start = offset + _LOCAL.size
    name_end = start + fields[10]
    data_start = name_end + fields[11]
    end = data_start + packed
    if end > limit:
        raise _NotPlain  # overlapping members: newer zipfile versions refuse them
    if start >= tail_start and end <= tail_start + len(tail):
        name = tail[start - tail_start : name_end - tail_start]
        data = tail[data_start - tail_start : end - tail_start]
    else:
        name = _pread(fd, fields[10], start)
        data = _pread(fd, packed, data_start)
    if name != raw:
        raise _NotPlain
    if method == _DEFLATED:
        try:
            inflate = zlib.decompressobj(-15)
            data = inflate.decompress(data) + inflate.flush()
        except zlib.error:
            raise _NotPlain from None
    if len(data) != size or zlib.crc32(data) != crc:
        raise _NotPlain
    return data


def _parse(fd: int, wanted: Sequence[str]) -> tuple[dict[str, int], dict[str, bytes]]:
    length = os.fstat(fd).st_size
    if length < _END.size:
        raise _NotPlain
    tail_start = max(length - _TAIL, 0)
    tail = _pread(fd, length - tail_start, tail_start)
    end = len(tail) - _END.size
    signature, disk, cd_disk, _, count, cd_size, cd_offset, comment = _END.unpack_from(tail, end)
    if signature != _END_SIGNATURE or comment or disk or cd_disk:
        raise _NotPlain  # a comment (or not a zip): the end record is searched for
    if end >= 20 and tail[end - 20 : end - 16] == _ZIP64_LOCATOR:
        raise _NotPlain
    if count == 0xFFFF or cd_size == _MAX32 or cd_offset == _MAX32:
        raise _NotPlain
    if cd_offset + cd_size != tail_start + end or cd_offset < tail_start:
        raise _NotPlain  # data before the first member, or a directory beyond the tail
    sizes: dict[str, int] = {}
    entries: dict[str, tuple[tuple[int, ...], bytes]] = {}
    offsets: list[int] = []
    position = cd_offset - tail_start
    stop = position + cd_size
    while position < stop:
        if position + _CENTRAL.size > stop:
            raise _NotPlain
        fields = _CENTRAL.unpack_from(tail, position)
        if fields[0] != _CENTRAL_SIGNATURE:
            raise _NotPlain
        flags, method = fields[5], fields[6]
        crc, packed, size, name_length, extra_length, comment_length = fields[9:15]
        offset = fields[18]
        if extra_length or flags & _UNSUPPORTED_FLAGS or method not in (_STORED, _DEFLATED):
            raise _NotPlain
        if fields[3] > _MAX_EXTRACT_VERSION:
            raise _NotPlain
        start = position + _CENTRAL.size
        position = start + name_length + comment_length
        if position > stop:
            raise _NotPlain
        raw = tail[start : start + name_length]
        name = raw.decode("utf-8" if flags & _UTF8 else "cp437")
        name = name.split("\x00", 1)[0]  # as zipfile ends a name at its first NUL
        if os.sep != "/":
            name = name.replace(os.sep, "/")
        offsets.append(offset)
        if name.endswith("/"):  # a directory entry
            continue
        sizes[name] = size
        entries[name] = ((flags, method, crc, packed, size, offset), raw)  # the last one wins
    if len(set(offsets)) != len(offsets):
        raise _NotPlain  # members that share their place
    documents = {}
    for name in wanted:
        if name in sizes:
            entry, raw = entries[name]
            limit = min((o for o in offsets if o > entry[5]), default=cd_offset)
            documents[name] = _member(fd, tail, tail_start, entry, raw, limit)
    return sizes, documents


def read_plain_zip(
    path: str, wanted: Sequence[str] = ()
) -> tuple[dict[str, int], dict[str, bytes]] | None:
    """Every member's size, and the ``wanted`` members that are there, of a plain zip.

    Gives what :class:`zipfile.ZipFile` gives (names as it decodes them, sizes of
    the members that are not directories, the last member of a name when there are
    several), or None when the zip is not a plain one (see the module's docstring)
    or cannot be read: the caller then reads it with :mod:`zipfile`.

    Raises
    ------
    FileNotFoundError
        The zip is not there.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise
    except OSError:
        return None
    try:
        return _parse(fd, wanted)
    except (_NotPlain, OSError, ValueError, struct.error):
        return None
    finally:
        os.close(fd)
