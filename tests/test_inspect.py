"""info, tree and validate on layouts that are broken, remote, or being written (issue 9).

``validate`` reports every problem it can reach and keeps going; ``info`` survives a
broken shard and marks it; both name stores by their URL. Real components only: real
zips (truncated with ``truncate``), moto's S3 server, a port nobody listens on, real
writer processes.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.storage import FsspecStore, LocalStore

import shardedstore
from shardedstore.backends.filelock import acquire, is_held
from shardedstore.backends.zips import zip_name_of
from shardedstore.backends.zipstore import leftover_names
from shardedstore.cli import main
from shardedstore.cli.demo import run_demo
from shardedstore.report.validate import GAP_EXAMPLES, _gaps
from tests.conftest import S3Server

CLI = str(Path(sys.executable).parent / "shardedstore")
STEPS = 40


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    """The installed command in a real process: warnings at exit show up on stderr."""
    return subprocess.run([CLI, *argv], capture_output=True, text=True, check=False, timeout=120)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, _ = _cli(capsys, *argv, "--json")
    return code, json.loads(out)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect") / "demo"
    assert run_demo(out, echo=lambda line: None)
    return out


@pytest.fixture
def demo_copy(demo: Path, tmp_path: Path) -> Path:
    shutil.copytree(demo, tmp_path / "demo")
    return tmp_path / "demo" / "layout.json"


@pytest.fixture(scope="module")
def zipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zipped layout: a base zip, a mount zip and STEPS array-shard zips."""
    root = tmp_path_factory.mktemp("zipped")
    store = shardedstore.ShardedStore(
        LocalStore(root / "base.zarr"),
        {"m": LocalStore(root / "m.zarr")},
        {"t": (1, shardedstore.array_shard_directory_store(root / "t"))},
    )
    values = np.arange(STEPS * 4, dtype="i2").reshape(STEPS, 4)
    zarr.create_array(store, name="t", shape=(STEPS, 4), chunks=(1, 4), dtype="i2")[:] = values
    zarr.create_array(store, name="m/x", shape=(3,), chunks=(3,), dtype="i2")[:] = [1, 2, 3]
    converted = store.map_shards(
        shardedstore.to_zip_store_with_prefix(root / "z" / "ds"), progress=False
    )
    converted.save_config(root / "z" / "ds.json")
    return root / "z" / "ds.json"


@pytest.fixture
def zipped_copy(zipped: Path, tmp_path: Path) -> Path:
    shutil.copytree(zipped.parent, tmp_path / "z")
    return tmp_path / "z" / "ds.json"


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


# ------------------------------------------------------------ corrupt zips


def test_a_truncated_zip_among_many_is_named_and_the_rest_checked(zipped_copy: Path) -> None:
    shards = zipped_copy.parent / "ds" / "t"
    assert len(list(shards.glob("*.zarr.zip"))) == STEPS
    _truncate(shards / "17.zarr.zip")
    _truncate(zipped_copy.parent / "ds" / "m.zarr.zip")
    (zipped_copy.parent / "ds" / "t" / "23.zarr.zip").unlink()  # and a gap

    result = _run("validate", str(zipped_copy))
    assert result.returncode == 1, result
    assert "2 problem(s)" in result.stdout
    assert "array shard 't' chunk 17: cannot be read" in result.stdout
    assert "mount 'm': cannot be read" in result.stdout
    assert "File is not a zip file" in result.stdout
    assert "chunk 23" in result.stdout  # the gap, as a warning
    for output in (result.stdout, result.stderr):
        assert "never awaited" not in output
        assert "Traceback" not in output

    result = _run("validate", str(zipped_copy), "--json")
    assert result.returncode == 1, result
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert {
        (p["shard"]["kind"], p["shard"]["path"], p["shard"]["chunk_index"])
        for p in report["problems"]
    } == {
        ("array shard", "t", "17"),
        ("mount", "m", None),
    }
    assert {p["check"] for p in report["problems"]} == {"unreadable"}
    assert "never awaited" not in result.stderr

    for argv in (["info", str(zipped_copy)], ["info", str(zipped_copy), "--json"]):
        result = _run(*argv)
        assert result.returncode == 1, result  # printed, but its totals miss two shards
        assert "never awaited" not in result.stderr
        assert "Traceback" not in result.stderr
        assert "array shard 't' chunk 17: cannot be read" in result.stderr
    info = json.loads(result.stdout)
    by_shard = {(s["path"], s["chunk_index"]): s for s in info["shards"]}
    assert len(by_shard) == 1 + 1 + STEPS - 1
    assert "not a zip file" in by_shard[("t", "17")]["error"]
    assert "not a zip file" in by_shard[("m", None)]["error"]
    assert by_shard[("t", "16")]["error"] is None
    assert by_shard[("t", "16")]["keys"] == 2
    assert info["total"]["unreadable"] == 2

    result = _run("info", str(zipped_copy))
    row = next(line for line in result.stdout.splitlines() if line.startswith("mount m"))
    assert "cannot be read" in row
    row = next(line for line in result.stdout.splitlines() if line.startswith("array t"))
    assert "1 unreadable" in row

    # The tree needs every mount: it stops, but names the one that cannot be read.
    result = _run("tree", str(zipped_copy))
    assert result.returncode == 1
    assert result.stderr.startswith("shardedstore tree: error: mount 'm': cannot be read")


# ------------------------------------------------- missing and unreachable stores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _remote_layout(root: Path, s3_server: S3Server, bucket: str) -> Path:
    """A local base with S3 mounts that hold a group, through fsspec and obstore."""
    good = FsspecStore.from_url(
        f"s3://{bucket}/good", storage_options=s3_server.storage_options, read_only=False
    )
    zarr.create_array(good, name="x", shape=(2,), chunks=(2,), dtype="i1")[:] = [1, 2]
    zarr.create_group(
        FsspecStore.from_url(
            f"s3://{bucket}/good-ob", storage_options=s3_server.storage_options, read_only=False
        )
    )
    zarr.create_group(LocalStore(root / "base.zarr"))
    config = {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {
            "good": {
                "type": "fsspec",
                "url": f"s3://{bucket}/good",
                "storage_options": {"endpoint_url": s3_server.endpoint},
            },
            "good_ob": {
                "type": "obstore",
                "url": f"s3://{bucket}/good-ob",
                "config": s3_server.obstore_config,
                "client_options": s3_server.obstore_client_options,
            },
        },
    }
    path = root / "remote.json"
    path.write_text(json.dumps(config))
    return path


def test_validate_reports_every_missing_or_unreachable_store(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = _remote_layout(tmp_path, s3_server, s3_bucket)
    config = json.loads(config_path.read_text())
    refused = f"http://127.0.0.1:{_free_port()}"  # nobody listens there
    no_retries = {"retries": {"max_attempts": 1}, "connect_timeout": 2}
    config["mounts"].update(
        {
            "fs_path": {"type": "fsspec", "url": f"file://{tmp_path}/nowhere"},
            "memory": {"type": "fsspec", "url": "memory://x"},
            "s3_no_bucket": {
                "type": "fsspec",
                "url": "s3://no-such-bucket/x",
                "storage_options": {"endpoint_url": s3_server.endpoint},
            },
            "s3_empty": {
                "type": "fsspec",
                "url": f"s3://{s3_bucket}/nothing-here",
                "storage_options": {"endpoint_url": s3_server.endpoint},
            },
            "s3_refused": {
                "type": "fsspec",
                "url": f"s3://{s3_bucket}/refused",
                "storage_options": {"endpoint_url": refused, "config_kwargs": no_retries},
            },
            "ob_no_bucket": {
                "type": "obstore",
                "url": "s3://no-such-bucket-either/x",
                "config": s3_server.obstore_config,
                "client_options": s3_server.obstore_client_options,
            },
            "ob_refused": {
                "type": "obstore",
                "url": f"s3://{s3_bucket}/ob-refused",
                "config": {"endpoint": refused, "region": "us-east-1"},
                "client_options": {"allow_http": True},
                "retry_config": {"max_retries": 0},
            },
            "local": {"type": "local", "root": "nowhere-local"},
        }
    )
    config_path.write_text(json.dumps(config))

    code, report = _cli_json(capsys, "validate", str(config_path))
    assert code == 1
    assert report["valid"] is False
    found = {p["shard"]["path"]: p for p in report["problems"]}
    missing = {"fs_path", "memory", "s3_empty", "local"}
    unreadable = {"s3_no_bucket", "s3_refused", "ob_no_bucket", "ob_refused"}
    assert set(found) == missing | unreadable, report["problems"]
    for name in missing:
        assert found[name]["check"] == "missing", found[name]
        assert "does not exist" in found[name]["message"]
    for name in unreadable:
        assert found[name]["check"] == "unreadable", found[name]
        assert "\n" not in found[name]["message"]
        assert len(found[name]["message"]) < 600
    assert "bucket does not exist" in found["s3_no_bucket"]["message"]
    assert "NoSuchBucket" in found["ob_no_bucket"]["message"]
    assert f"s3://{s3_bucket}/refused" in found["s3_refused"]["message"]
    assert "memory://" in found["memory"]["message"]

    code, text, _ = _cli(capsys, "validate", str(config_path))
    assert code == 1
    assert "8 problem(s)" in text
    assert "mount 's3_no_bucket': cannot be read (s3://no-such-bucket/x)" in text

    # info survives them all, marks each, and says it could not read some.
    code, info = _cli_json(capsys, "info", str(config_path))
    assert code == 1
    shards = {s["path"]: s for s in info["shards"]}
    for name in missing:
        assert shards[name]["exists"] is False
        assert shards[name]["error"] is None
    for name in unreadable:
        assert shards[name]["error"], shards[name]
    assert shards["good"]["keys"] == 3  # zarr.json, x/zarr.json, x/c/0


def test_info_and_tree_name_remote_stores_by_url(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(_remote_layout(tmp_path, s3_server, s3_bucket))
    code, text, _ = _cli(capsys, "info", config)
    assert code == 0
    assert f"s3://{s3_bucket}/good " in text
    assert f"s3://{s3_bucket}/good-ob " in text
    assert "FsspecStore" not in text
    assert "S3Store" not in text
    code, info = _cli_json(capsys, "info", config)
    backends = {s["path"]: s["backend"] for s in info["shards"]}
    assert backends["good"] == f"s3://{s3_bucket}/good"
    assert backends["good_ob"] == f"s3://{s3_bucket}/good-ob"
    assert backends[""] == f"file://{tmp_path}/base.zarr"

    code, text, _ = _cli(capsys, "tree", config)
    assert code == 0
    assert f"x (2,) int8  [mount 'good': s3://{s3_bucket}/good]" in text
    assert "FsspecStore" not in text
    code, nodes = _cli_json(capsys, "tree", config)
    holder = {node["path"]: node["holder"] for node in nodes}["good/x"]
    assert holder == {"kind": "mount", "path": "good", "store": f"s3://{s3_bucket}/good"}


# ---------------------------------------------------------- tree --json holders


def test_tree_json_has_structured_holders(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, nodes = _cli_json(capsys, "tree", str(demo / "layout.json"))
    assert code == 0
    holders = {node["path"]: node["holder"] for node in nodes}
    base = f"file://{demo}/base.zarr"
    assert holders[""] == {"kind": "base", "store": base}
    assert holders["simulation/fine"] == {"kind": "base", "store": base}
    assert holders["people/heights"] == {
        "kind": "mount",
        "path": "people",
        "store": f"file://{demo}/people.zarr",
    }
    assert holders["simulation/fine/temperature"] == {
        "kind": "array shards",
        "path": "simulation/fine/temperature",
        "store": base,
        "dims": 1,
        "shards": 12,
        "template": f"{demo}/temperature/{{chunk}}.zarr",
    }


# ------------------------------------------------------- gaps and shrinking


def test_a_missing_time_step_is_a_warning_not_a_failure(
    demo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(demo_copy.parent / "temperature" / "5.zarr")
    code, text, _ = _cli(capsys, "validate", str(demo_copy))
    assert code == 0, text
    assert "valid" in text
    assert "1 warning(s)" in text
    assert "array 'simulation/fine/temperature': 1 array shard(s) missing" in text
    assert "chunk 5" in text
    code, report = _cli_json(capsys, "validate", str(demo_copy))
    assert code == 0
    assert report["valid"] is True
    assert report["problems"] == []
    assert [w["check"] for w in report["warnings"]] == ["gaps"]
    array = report["arrays"]["simulation/fine/temperature"]
    assert array["shards"] == 11
    assert array["gaps"] == {"count": 1, "chunk_indices": ["5"]}
    assert array["beyond_shape"] == {"count": 0, "chunk_indices": [], "holding_chunks": 0}


def test_shards_left_by_a_shrinking_resize_are_removable_not_invalid(
    demo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = shardedstore.open(demo_copy, mode="r+")
    zarr.open_array(store, path="simulation/fine/temperature", mode="r+").resize((8, 16, 32))
    store.close()
    code, text, _ = _cli(capsys, "validate", str(demo_copy))
    assert code == 0, text
    assert (
        "array 'simulation/fine/temperature': 4 array shard(s) beyond the array's shape [8]"
    ) in text
    assert "chunks 8, 9, 10, 11" in text
    assert "can be removed" in text
    code, report = _cli_json(capsys, "validate", str(demo_copy))
    assert code == 0
    assert report["valid"] is True
    assert [w["check"] for w in report["warnings"]] == ["beyond-shape"]
    assert report["arrays"]["simulation/fine/temperature"]["beyond_shape"] == {
        "count": 4,
        "chunk_indices": ["8", "9", "10", "11"],
        "holding_chunks": 0,
    }


# ---------------------------------------------------------------- zip writers


def test_zips_being_written_or_left_by_a_dead_writer_are_warned_of(
    zipped_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A writer that died without closing: its lock file and staging stay behind.
    script = textwrap.dedent(
        f"""
        import os, shardedstore, zarr
        store = shardedstore.open({str(zipped_copy)!r}, mode="r+")
        zarr.open_array(store, path="t", mode="r+")[5] = [9, 9, 9, 9]
        os._exit(0)  # as kill -9: nothing is committed
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    shards = zipped_copy.parent / "ds" / "t"
    assert [p.name for p in shards.iterdir() if p.name.startswith(".5.zarr.zip.staging-")]

    # A live writer, in this process, still writing shard 3.
    store = shardedstore.open(zipped_copy, mode="r+")
    zarr.open_array(store, path="t", mode="r+")[3] = [7, 7, 7, 7]
    try:
        code, text, _ = _cli(capsys, "validate", str(zipped_copy))
        assert code == 0, text
        assert "2 warning(s)" in text
        assert f"array shard 't' chunk 3: being written by process {os.getpid()}" in text
        assert "array shard 't' chunk 5: leftovers of a writer that stopped" in text
        code, report = _cli_json(capsys, "validate", str(zipped_copy))
        assert code == 0
        assert sorted(w["check"] for w in report["warnings"]) == ["zip-leftovers", "zip-writer"]
    finally:
        store.close()  # validate took no lock: the writer commits
    assert zarr.open_array(shardedstore.open(zipped_copy), path="t")[3].tolist() == [7] * 4
    code, report = _cli_json(capsys, "validate", str(zipped_copy))
    assert [w["check"] for w in report["warnings"]] == ["zip-leftovers"]


# ------------------------------------------------------------- what counts


def test_info_and_convert_say_what_they_count(
    demo_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (demo_copy.parent / "temperature" / "3.zarr" / "junk").write_text("x")  # a stray key
    code, info = _cli_json(capsys, "info", str(demo_copy))
    assert code == 0
    total = info["total"]
    assert total["keys"] == total["metadata_keys"] + total["chunk_keys"] + total["stray_keys"]
    assert total["stray_keys"] == 1
    code, text, _ = _cli(capsys, "info", str(demo_copy))
    header = text.splitlines()[0].split()
    assert header[-4:] == ["keys", "metadata", "chunks", "bytes"]
    assert "1 stray key(s)" in text
    code, out, _ = _cli(
        capsys, "convert", str(demo_copy), "--to", "zip", "--out", str(tmp_path / "z"), "-q"
    )
    assert code == 0
    own = total["keys"] - total["stray_keys"]
    assert (
        f"verified {own} keys ({total['metadata_keys']} metadata documents + "
        f"{total['chunk_keys']} chunks)"
    ) in out


# ------------------------------------------------------------------ helpers


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 3).flatmap(
        lambda dims: st.tuples(
            st.just(dims),
            st.sets(st.tuples(*[st.integers(0, 6)] * dims), max_size=30),
        )
    )
)
def test_gaps_are_the_missing_indices_below_the_highest_ones(
    case: tuple[int, set[tuple[int, ...]]],
) -> None:
    dims, present = case
    count, examples = _gaps(present, dims)
    if not present:
        assert (count, examples) == (0, [])
        return
    upper = [max(index[d] for index in present) + 1 for d in range(dims)]
    box = itertools.product(*(range(n) for n in upper))
    missing = [".".join(map(str, index)) for index in box if index not in present]
    assert count == len(missing)
    assert examples == missing[:GAP_EXAMPLES]


@pytest.mark.parametrize("name", ["5.zarr.zip", "t.2.zip", "a.lock.zip", "x"])
def test_every_leftover_of_a_zip_names_its_zip(name: str) -> None:
    lock, staging, partial = leftover_names(name)
    assert [zip_name_of(n) for n in (lock, staging + "ab12", partial + "cd34")] == [name] * 3
    assert zip_name_of(name) is None
    assert zip_name_of(lock + "x") is None


def test_a_lock_is_seen_held_only_while_its_writer_lives(tmp_path: Path) -> None:
    path = tmp_path / ".x.zip.lock"
    assert not is_held(path)
    lock = acquire(path, "x", "y")
    assert is_held(path)
    lock.release()
    assert not is_held(path)
    path.write_text("4242")  # a dead writer's lock file
    assert not is_held(path)
    assert path.read_text() == "4242"  # looked at, never taken or changed
