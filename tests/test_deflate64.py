"""Deflate64 zips (as Windows Explorer and 7-Zip write them) read through ``zips``.

``data/deflate64/wave.zarr.zip`` is a Zarr v3 group holding one uint8 array ``wave`` (one
uncompressed chunk of :func:`_wave` bytes), zipped by 7-Zip with
``7zz a -tzip -mm=Deflate64 -mx=9 ../wave.zarr.zip .``. The data repeats with a period of
40000 bytes, beyond deflate's 32 KiB window, so 7-Zip used Deflate64's long distances: plain
zlib cannot inflate it, which :func:`test_fixture_uses_what_only_deflate64_has` checks.
"""

from __future__ import annotations

import bz2
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import MemoryStore, ZipStore

import shardedstore
from shardedstore import ShardedStore
from shardedstore.backends import zips

WAVE = Path(__file__).parent / "data" / "deflate64" / "wave.zarr.zip"


def _wave() -> bytes:
    """The fixture's chunk: 40000 bytes of 2-bit noise, eight times over."""
    digests = (hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(1250))
    period = bytes(b & 3 for digest in digests for b in digest)
    return period * 8


def _raw_member(path: Path, name: str) -> bytes:
    """The compressed bytes of one member, as stored after its local header."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    with path.open("rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        return f.read(info.compress_size)


def test_fixture_uses_what_only_deflate64_has() -> None:
    with zipfile.ZipFile(WAVE) as zf:
        methods = {info.compress_type for info in zf.infolist() if not info.is_dir()}
    assert methods == {zips.ZIP_DEFLATED64}
    with pytest.raises(zlib.error):
        zlib.decompress(_raw_member(WAVE, "wave/c/0"), -15)


def test_plain_zipfile_refuses_it_and_enable_fixes_that() -> None:
    script = f"""
import sys, zipfile
zf = zipfile.ZipFile({str(WAVE)!r})
try:
    zf.read("wave/c/0")
except NotImplementedError:
    print("refused")
from shardedstore.backends import zips
zips.enable_deflate64()
zips.enable_deflate64()  # idempotent
print(len(zf.read("wave/c/0")))
print("zipfile_deflate64" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["refused", "320000", "False"]


def test_streamed_reads_in_small_pieces() -> None:
    zips.enable_deflate64()
    pieces = []
    with zipfile.ZipFile(WAVE) as zf, zf.open("wave/c/0") as member:
        while piece := member.read(1000):
            pieces.append(piece)
    assert len(pieces) == 320
    assert b"".join(pieces) == _wave()  # zipfile also checked the CRC-32


@pytest.mark.parametrize("where", [0.0, 0.5])
def test_a_corrupt_member_is_an_error_not_wrong_data(where: float, tmp_path: Path) -> None:
    zips.enable_deflate64()
    raw = bytearray(WAVE.read_bytes())
    with zipfile.ZipFile(WAVE) as zf:
        info = zf.getinfo("wave/c/0")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + 1 + int(where * info.compress_size)] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(raw))
    # An invalid stream (ValueError from inflate64) or wrong bytes (zipfile's CRC-32 check).
    with zipfile.ZipFile(bad) as zf, pytest.raises((ValueError, zipfile.BadZipFile)):
        zf.read("wave/c/0")


@pytest.mark.parametrize("how", ["constructed", "config"])
def test_reads_through_a_sharded_store(how: str, tmp_path: Path) -> None:
    if how == "constructed":
        store = ShardedStore(MemoryStore(), {"signals": ZipStore(WAVE, mode="r")}, read_only=True)
    else:
        config = {
            "format": "shardedstore",
            "version": 1,
            "base": {"type": "local", "root": "base.zarr"},
            "mounts": {"signals": {"type": "zip", "path": str(WAVE), "mode": "r"}},
        }
        (tmp_path / "layout.json").write_text(json.dumps(config))
        store = shardedstore.open(tmp_path / "layout.json")
    group = zarr.open_group(store, path="signals", mode="r")
    assert group.attrs["description"].startswith("Deflate64 fixture")
    wave = zarr.open_array(store, path="signals/wave", mode="r")
    assert wave.shape == (320000,)
    assert wave[:].tobytes() == _wave()
    assert wave[39990:40010].tolist() == list(_wave()[39990:40010])


def test_a_deflate64_zip_takes_new_arrays_and_keeps_the_old(tmp_path: Path) -> None:
    path = tmp_path / "wave.zarr.zip"
    shutil.copyfile(WAVE, path)
    store = ShardedStore(MemoryStore(), {"signals": ZipStore(path, mode="a")})
    extra = zarr.create_array(store, name="signals/extra", shape=(4,), chunks=(2,), dtype="i4")
    extra[:] = np.arange(4)
    store.close()
    # The copy-on-write rewrite recompressed the old members with the zip's own compression.
    with zipfile.ZipFile(path) as zf:
        assert {"wave/c/0", "extra/c/0", "extra/c/1"} <= set(zf.namelist())
    reopened = ShardedStore(MemoryStore(), {"signals": ZipStore(path, mode="r")}, read_only=True)
    assert zarr.open_array(reopened, path="signals/wave", mode="r")[:].tobytes() == _wave()
    assert zarr.open_array(reopened, path="signals/extra", mode="r")[:].tolist() == [0, 1, 2, 3]


def test_other_methods_are_untouched(tmp_path: Path) -> None:
    zips.enable_deflate64()
    path = tmp_path / "mixed.zip"
    methods = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]
    with zipfile.ZipFile(path, "w") as zf:
        for method in methods:
            zf.writestr(f"m{method}", _wave()[:50000], compress_type=method)
    with zipfile.ZipFile(path) as zf:
        assert [info.compress_type for info in zf.infolist()] == methods
        for method in methods:
            assert zf.read(f"m{method}") == _wave()[:50000]
    assert bz2.decompress(bz2.compress(b"x")) == b"x"
    with pytest.raises(NotImplementedError):  # writing Deflate64 stays unsupported
        zipfile.ZipFile(tmp_path / "w.zip", "w", compression=zips.ZIP_DEFLATED64)
