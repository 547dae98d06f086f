"""The CRC-32 every check uses: zlib's values, from ISA-L where it is installed."""

from __future__ import annotations

import os
import zlib

import pytest

from shardedstore.backends import crc


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 65536, 1 << 20])
def test_same_values_as_zlib(size: int) -> None:
    data = os.urandom(size)
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc.crc32(memoryview(data)) == zlib.crc32(data)
    half = size // 2
    assert crc.crc32(data[half:], crc.crc32(data[:half])) == zlib.crc32(data)


def test_isal_is_used_where_installed() -> None:
    try:
        import isal.isal_zlib  # noqa: F401
    except ImportError:
        assert not crc.FAST
    else:
        assert crc.FAST
