"""A plain zip's member table from one read gives what zipfile gives, or nothing (issue 22).

Real zips written by :mod:`zipfile` (stored, deflated, bzip2, with comments, ZIP64,
directories, repeated names), then damaged (truncated, a byte changed): whatever
:func:`read_plain_zip` returns must be exactly what :class:`zipfile.ZipFile` reads; where
zipfile fails, it must return None (the caller then lets zipfile say what is wrong).
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardedstore.backends.inventory import inventories
from shardedstore.backends.zipindex import read_plain_zip

_names = st.sampled_from(["zarr.json", "c/0/0", "c/1/0", "é/ü", "a b", "dir/", ".zattrs"])
_members = st.lists(st.tuples(_names, st.binary(max_size=300)), min_size=0, max_size=6)
_methods = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])


def _write(
    path: Path, members: list[tuple[str, bytes]], method: int, comment: bytes, zip64: bool
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for name, data in members:
                if name.endswith("/"):
                    archive.writestr(zipfile.ZipInfo(name), b"")
                else:
                    with archive.open(name, "w", force_zip64=zip64) as f:
                        f.write(data)
            archive.comment = comment


def _zipfile_reads(path: Path, wanted: list[str]) -> tuple[dict[str, int], dict[str, bytes]] | None:
    """What inventory's zipfile path reads (None: zipfile fails)."""
    try:
        with zipfile.ZipFile(path) as archive:
            sizes = {}
            for info in archive.infolist():
                if not info.is_dir():
                    sizes[info.filename] = info.file_size
            documents = {name: archive.read(name) for name in wanted if name in sizes}
    except Exception:
        return None
    return sizes, documents


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    members=_members,
    method=_methods,
    comment=st.sampled_from([b"", b"a comment"]),
    zip64=st.booleans(),
    damage=st.one_of(
        st.none(),
        st.tuples(st.just("truncate"), st.floats(min_value=0, max_value=1)),
        st.tuples(st.just("flip"), st.floats(min_value=0, max_value=1)),
    ),
)
def test_a_plain_zip_reads_as_zipfile_reads_it(
    tmp_path: Path,
    members: list[tuple[str, bytes]],
    method: int,
    comment: bytes,
    zip64: bool,
    damage: tuple[str, float] | None,
) -> None:
    path = tmp_path / "shard.zip"
    _write(path, members, method, comment, zip64)
    data = bytearray(path.read_bytes())
    if damage is not None:
        kind, where = damage
        at = min(int(where * len(data)), len(data) - 1)
        if kind == "truncate":
            del data[at:]
        else:
            data[at] ^= 0x5A
        path.write_bytes(bytes(data))
    wanted = ["zarr.json", "c/0/0", "é/ü", "missing"]
    fast = read_plain_zip(str(path), wanted)
    expected = _zipfile_reads(path, wanted)
    if fast is not None:
        assert expected is not None, "read a zip that zipfile refuses"
        assert list(fast[0].items()) == list(expected[0].items())
        assert fast[1] == expected[1]
    plain = not comment and not zip64 and method != zipfile.ZIP_BZIP2 and damage is None
    if plain:  # what a layout writes: read without zipfile
        assert fast is not None


def test_a_missing_zip_is_missing_and_a_folder_is_not_a_plain_zip(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_plain_zip(str(tmp_path / "nowhere.zip"))
    assert read_plain_zip(str(tmp_path)) is None


def test_inventories_of_damaged_zips_keep_zipfiles_errors(tmp_path: Path) -> None:
    good, cut = tmp_path / "good.zip", tmp_path / "cut.zip"
    _write(good, [("zarr.json", b"{}"), ("c/0", b"x" * 100)], zipfile.ZIP_STORED, b"", False)
    cut.write_bytes(good.read_bytes()[:50])
    from zarr.core.sync import sync

    found = sync(
        inventories(
            [("file", str(good)), ("file", str(cut)), ("file", str(tmp_path / "no.zip"))],
            ["zarr.json"],
        )
    )
    assert found[0].exists
    assert found[0].sizes == {"zarr.json": 2, "c/0": 100}
    assert found[0].documents == {"zarr.json": b"{}"}
    assert isinstance(found[1].error, zipfile.BadZipFile)
    assert str(found[1].error) == "File is not a zip file"
    assert (found[2].exists, found[2].error) == (False, None)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_a_changed_byte_in_a_member_is_left_to_zipfile(tmp_path: Path, method: int) -> None:
    path = tmp_path / "shard.zip"
    document = b'{"zarr_format": 3, "node_type": "array"}' * 4
    _write(path, [("zarr.json", document), ("c/0", b"x" * 64)], method, b"", False)
    assert read_plain_zip(str(path), ["zarr.json"]) == (
        {"zarr.json": len(document), "c/0": 64},
        {"zarr.json": document},
    )
    data = bytearray(path.read_bytes())
    data[30 + len("zarr.json") + 5] ^= 0x01  # in the first member's data
    path.write_bytes(bytes(data))
    assert _zipfile_reads(path, ["zarr.json"]) is None
    assert read_plain_zip(str(path), ["zarr.json"]) is None
    assert read_plain_zip(str(path)) is not None  # the table alone is sound
