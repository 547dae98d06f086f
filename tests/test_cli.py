"""The command line: the demo that `make demo` runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore.cli import main
from shardedstore.cli.demo import build_demo_tree, run_demo
from shardedstore.errors import OutputError
from tests.conftest import S3Server


def test_demo_writes_shards_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "identical to the original" in printed
    assert f"shardedstore.open({str(out / 'layout.json')!r})" in printed
    assert "mount 'people'" in printed
    config = json.loads((out / "layout.json").read_text())
    assert config["mounts"]["people"] == {"type": "local", "root": "people.zarr"}
    assert config["array_shards"]["simulation/fine/temperature"] == {
        "dims": 1,
        "store": {"type": "local", "root": "temperature/{chunk}.zarr"},
    }
    assert '"format": "shardedstore"' in printed
    shards = sorted((out / "temperature").iterdir())
    assert len(shards) == 12
    temperature = build_demo_tree()["simulation/fine/temperature"].values
    alone = zarr.open_array(LocalStore(out / "temperature" / "11.zarr"), mode="r")
    np.testing.assert_array_equal(alone[...], temperature[11])
    assert not (out / "base.zarr" / "people").exists()


def test_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def _shardedstore(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``shardedstore`` command, as a user would."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "shardedstore"), *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def _files(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


@pytest.mark.parametrize("target", [".", "sentinel"])
def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path: Path, target: str) -> None:
    # `shardedstore demo .` in a folder holding a thesis used to rmtree the folder.
    sentinel = tmp_path / "sentinel"
    (sentinel / "chapters").mkdir(parents=True)
    (sentinel / "thesis").write_text("five years of work")
    (sentinel / "chapters" / "1.tex").write_text("\\chapter{Intro}")
    before = _files(sentinel)
    result = _shardedstore("demo", target, cwd=sentinel if target == "." else tmp_path)
    assert result.returncode == 1, result
    assert _files(sentinel) == before
    assert sorted(p.name for p in sentinel.iterdir()) == ["chapters", "thesis"]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shardedstore demo: error: ")
    assert "is not empty and holds no previous demo" in lines[0]
    assert ".shardedstore-demo" in lines[0]
    assert "nothing was deleted" in lines[0]
    assert "give a new or empty directory" in lines[0]
    assert "Traceback" not in result.stderr


def test_demo_refuses_in_process_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "thesis").write_text("five years of work")
    assert main(["demo", str(tmp_path)]) == 1
    assert "is not empty and holds no previous demo" in capsys.readouterr().err
    with pytest.raises(OutputError, match="nothing was deleted"):
        run_demo(tmp_path, echo=lambda line: None)
    assert _files(tmp_path) == {"thesis": b"five years of work"}
    (tmp_path / "thesis").unlink()
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OutputError, match="not a directory"):
        run_demo(tmp_path / "file", echo=lambda line: None)


def test_demo_reruns_into_its_own_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = _shardedstore("demo", str(out), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "identical to the original" in first.stdout
    assert (out / ".shardedstore-demo").is_file()
    # zarr finds no node without metadata: an empty mount is invisible to it.
    assert "not recognized" not in first.stderr
    # Files the demo did not write survive a re-run; what it wrote is replaced.
    (out / "notes.txt").write_text("mine")
    (out / "mine").mkdir()
    (out / "mine" / "keep").write_text("mine too")
    (out / "temperature" / "99.zarr").mkdir()  # a stale shard of an earlier demo
    second = _shardedstore("demo", str(out), cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "identical to the original" in second.stdout
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "mine" / "keep").read_text() == "mine too"
    assert not (out / "temperature" / "99.zarr").exists()
    assert len(list((out / "temperature").iterdir())) == 12
    # An empty directory is fine too.
    (tmp_path / "empty").mkdir()
    assert main(["demo", str(tmp_path / "empty")]) == 0


def test_demo_never_follows_a_link_out_of_its_output(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", str(out)]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "thesis").write_text("five years of work")
    shutil.rmtree(out / "people.zarr")
    (out / "people.zarr").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(OutputError, match=r"people\.zarr.*symbolic link"):
        run_demo(out, echo=lambda line: None)
    assert _files(elsewhere) == {"thesis": b"five years of work"}
    assert (out / "people.zarr").is_symlink()
    (out / "people.zarr").unlink()
    (out / "people.zarr").write_text("a file where the demo writes a directory")
    with pytest.raises(OutputError, match="not what the demo writes"):
        run_demo(out, echo=lambda line: None)
    assert (out / "people.zarr").read_text() == "a file where the demo writes a directory"


def test_unknown_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2


# ------------------------------------------------------- info, tree, validate


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    assert main(["demo", str(out)]) == 0
    return out / "layout.json"


def test_info(demo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["info", str(demo_config)]) == 0
    text = capsys.readouterr().out
    assert "mount people" in text
    assert "array simulation/fine/temperature" in text
    assert "12 shard(s) on 1 dim(s)" in text
    assert main(["info", str(demo_config), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    kinds = [(s["kind"], s["path"], s["chunk_index"]) for s in info["shards"]]
    assert kinds[:3] == [
        ("base", "", None),
        ("mount", "people", None),
        ("mount", "simulation/coarse", None),
    ]
    assert len([k for k in kinds if k[0] == "array shard"]) == 12
    on_disk = sum(
        p.stat().st_size
        for p in demo_config.parent.rglob("*")
        if p.is_file() and p.name not in ("layout.json", ".shardedstore-demo")
    )
    assert info["total"]["bytes"] == on_disk
    keys = sum(1 for p in demo_config.parent.rglob("*") if p.is_file())
    assert info["total"]["keys"] == keys - 2  # not layout.json, not the demo's marker


def test_tree(demo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tree", str(demo_config)]) == 0
    text = capsys.readouterr().out
    assert "├── people  [mount 'people'" in text
    assert "temperature (12, 16, 32) float32  [base + 12 array shard(s) on 1 dim(s)" in text
    assert main(["tree", str(demo_config), "--json"]) == 0
    nodes = {node["path"]: node for node in json.loads(capsys.readouterr().out)}
    holder = nodes["simulation/coarse/temperature"]["holder"]
    assert (holder["kind"], holder["path"]) == ("mount", "simulation/coarse")
    assert nodes["simulation/fine"]["kind"] == "group"


def test_tree_reads_no_chunk_data(
    demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Remove every chunk: the tree is built from metadata alone and does not notice.
    copy = tmp_path / "demo"
    shutil.copytree(demo_config.parent, copy)
    for path in list(copy.rglob("c/*")):
        if path.is_file() or path.is_dir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    capsys.readouterr()
    assert main(["tree", str(copy / "layout.json")]) == 0
    assert "temperature (12, 16, 32) float32" in capsys.readouterr().out


def test_validate(demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["validate", str(demo_config)]) == 0
    assert "valid" in capsys.readouterr().out
    broken = tmp_path / "demo"
    shutil.copytree(demo_config.parent, broken)
    (broken / "base.zarr" / "people").mkdir()
    (broken / "base.zarr" / "people" / "zarr.json").write_text("{}")  # hidden by the mount
    (broken / "temperature" / "3.zarr" / "junk").write_text("x")  # a stray key
    meta = broken / "temperature" / "5.zarr" / "zarr.json"
    meta.write_text(meta.read_text().replace('"float32"', '"float64"'))  # inconsistent
    shutil.rmtree(broken / "coarse.zarr")  # unreachable mount
    assert main(["validate", str(broken / "layout.json")]) == 1
    text = capsys.readouterr().out
    assert "4 problem(s)" in text
    assert "mount 'simulation/coarse': does not exist" in text
    assert "base: 1 stray key(s) under mount 'people'" in text
    assert "array shard 'simulation/fine/temperature' chunk 3: 1 stray key(s)" in text
    assert "chunk 5: zarr.json differs from what base implies" in text
    assert main(["validate", str(broken / "layout.json"), "--json"]) == 1
    assert len(json.loads(capsys.readouterr().out)["problems"]) == 4


def test_validate_flags_legacy_shard_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    legacy = Path(__file__).parent / "data" / "legacy" / "nested.json"
    assert main(["validate", str(legacy)]) == 1
    assert ".zarray differs from what base implies" in capsys.readouterr().out


# ----------------------------------------------------------------- convert


def _reads_identical(config: Path | str, **options: object) -> None:
    store = shardedstore.open(config, **options)  # type: ignore[arg-type]
    try:
        with xr.open_datatree(store, engine="zarr") as back:
            assert back.identical(build_demo_tree())
    finally:
        store.close()


def test_convert_to_zip_and_back(
    demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        main(
            [
                "convert",
                str(demo_config),
                "--to",
                "zip",
                "--out",
                str(tmp_path / "z" / "ds"),
                "-j",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "verified" in printed
    assert "identical (crc32)" in printed
    config = tmp_path / "z" / "ds.json"
    assert json.loads(config.read_text())["base"] == {"type": "zip", "path": "ds.zarr.zip"}
    _reads_identical(config)
    assert main(["validate", str(config)]) == 0
    assert (
        main(
            ["convert", str(config), "--to", "directory", "--out", str(tmp_path / "d" / "ds"), "-q"]
        )
        == 0
    )
    _reads_identical(tmp_path / "d" / "ds.json")
    # Converting again finds every output complete and verified.
    assert (
        main(["convert", str(demo_config), "--to", "zip", "--out", str(tmp_path / "z" / "ds")]) == 0
    )


def test_convert_to_s3_url(demo_config: Path, s3_server: S3Server, s3_bucket: str) -> None:
    url = f"s3://{s3_bucket}/ds"
    option = f"endpoint_url={s3_server.endpoint}"
    assert (
        main(["convert", str(demo_config), "--to", "url", "--out", url, "--storage-option", option])
        == 0
    )
    _reads_identical(f"{url}.json", storage_options=s3_server.storage_options)


def test_convert_on_a_dask_scheduler(demo_config: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        argv = ["convert", str(demo_config), "--to", "zip", "--out", str(tmp_path / "z")]
        assert main([*argv, "--scheduler", cluster.scheduler_address]) == 0
    _reads_identical(tmp_path / "z.json")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("command", ["info", "tree", "validate", "convert", "demo"])
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: shardedstore " + command in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "missing.json"], "No such file or directory"),
        (["tree", "bad.json"], "is not valid JSON"),
        (["validate", "invalid.json"], "mounts.people.type: unknown store type 'foo'"),
        (["convert", "invalid.json", "--to", "zip", "--out", "x"], "unknown store type 'foo'"),
        (
            [
                "convert",
                "ok.json",
                "--to",
                "url",
                "--out",
                "s3://b/x",
                "--storage-option",
                "novalue",
            ],
            "KEY=VALUE",
        ),
        (["info", "hostile.json"], "refusing store class 'os'.'system'"),
    ],
)
def test_errors_are_one_line_without_traceback(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    (tmp_path / "invalid.json").write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "b"},
                "mounts": {"people": {"type": "foo"}},
            }
        )
    )
    (tmp_path / "ok.json").write_text(
        json.dumps({"format": "shardedstore", "version": 1, "base": {"type": "local", "root": "b"}})
    )
    (tmp_path / "hostile.json").write_text(
        json.dumps({"name": "system", "module": "os", "config": {"args": ["touch pwned"]}})
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "shardedstore"), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"shardedstore {argv[0]}: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------- convert is safe (issue 9)

CLI = str(Path(sys.executable).parent / "shardedstore")
ROOT = Path(__file__).resolve().parents[1]


def _entries_of_the_root() -> list[str]:
    return sorted(os.listdir("/"))


@pytest.mark.parametrize(
    "out", ["", "/", ".", "out/..", "//"], ids=["empty", "root", "dot", "dotdot", "slashes"]
)
def test_convert_refuses_an_out_that_names_no_output(
    demo_config: Path, tmp_path: Path, out: str
) -> None:
    # An unset $OUT in a script: nothing may be written, least of all at "/".
    work = tmp_path / "work"
    work.mkdir()
    root_before = _entries_of_the_root()
    result = subprocess.run(
        [CLI, "convert", str(demo_config), "--to", "zip", "--out", out],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("shardedstore convert: error: --out ")
    assert _entries_of_the_root() == root_before
    assert list(work.iterdir()) == []


def test_convert_refuses_a_url_out_for_local_outputs(demo_config: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [CLI, "convert", str(demo_config), "--to", "zip", "--out", "s3://bucket/ds"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result
    assert "--to url" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_convert_normalizes_out(
    demo_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(demo_config), "--to", "zip", "--out", "out/", "-q"]) == 0
    assert (tmp_path / "out.zarr.zip").is_file()
    assert (tmp_path / "out.json").is_file()
    assert not (tmp_path / "out" / ".zarr.zip").exists()
    assert not (tmp_path / "out" / ".json").exists()
    assert "//" not in (tmp_path / "out.json").read_text()
    _reads_identical(tmp_path / "out.json")


def _private_key_home(root: Path) -> Path:
    home = root / "home" / "user"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY----- secret")
    return home


def test_convert_never_archives_a_symlinked_home_folder(
    demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The repro of issue 9: a time step that is a symlink to a home folder holding
    # .ssh/id_rsa (and the shard's own keys, so that only a stray key gives it away).
    layout = tmp_path / "demo"
    shutil.copytree(demo_config.parent, layout)
    shard = layout / "temperature" / "6.zarr"
    home = _private_key_home(tmp_path)
    shutil.copytree(shard, home, dirs_exist_ok=True)
    shutil.rmtree(shard)
    shard.symlink_to(home, target_is_directory=True)
    capsys.readouterr()
    code = main(
        ["convert", str(layout / "layout.json"), "--to", "zip", "--out", str(tmp_path / "z")]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "array shard 'simulation/fine/temperature' chunk 6" in err
    assert "symbolic link" in err
    for path in tmp_path.joinpath("z").rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes()
            assert "id_rsa" not in path.name


def test_convert_reports_stray_keys_and_copies_them_only_when_asked(
    demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = tmp_path / "demo"
    shutil.copytree(demo_config.parent, layout)
    (layout / "temperature" / "3.zarr" / "junk").write_text("x")
    shutil.copytree(layout / "temperature" / "11.zarr", layout / "temperature" / "12.zarr")
    capsys.readouterr()
    argv = ["convert", str(layout / "layout.json"), "--to", "zip", "-q"]
    assert main([*argv, "--out", str(tmp_path / "z")]) == 0
    captured = capsys.readouterr()
    assert "identical (crc32)" in captured.out
    assert captured.err.startswith("shardedstore convert: warning: ")
    assert "chunk 3: 1 stray key(s), e.g. ['junk']" in captured.err
    assert "chunk 12: outside the array's shape" in captured.err
    assert "--include-stray" in captured.err
    assert not (tmp_path / "z" / "simulation/fine/temperature/12.zarr.zip").exists()
    assert main([*argv, "--out", str(tmp_path / "all"), "--include-stray"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert (tmp_path / "all" / "simulation/fine/temperature/12.zarr.zip").is_file()


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_reconverting_after_a_same_size_change_says_what_to_do(
    demo_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], verify: bool
) -> None:
    layout = tmp_path / "demo"
    shutil.copytree(demo_config.parent, layout)
    argv = ["convert", str(layout / "layout.json"), "--to", "zip", "--out", str(tmp_path / "z")]
    argv += [] if verify else ["--no-verify"]
    assert main(argv) == 0
    meta = layout / "base.zarr" / "simulation" / "fine" / "temperature" / "zarr.json"
    meta.write_text(meta.read_text().replace("degC", "degF"))  # same size, other bytes
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "z.zarr.zip exists and differs from base" in err
    assert "remove it" in err
    assert "another --out" in err
    zipped = shardedstore.open(tmp_path / "z.json")
    attrs = zarr.open_array(zipped, path="simulation/fine/temperature", mode="r").attrs
    assert attrs["units"] == "degC"  # kept, and said so; never passed off as converted


# -------------------------------------------- long runs: locks, Ctrl-C (issue 9)

MANY = 800


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout with MANY small array shards (16 chunks each): a convert lasting seconds."""
    root = tmp_path_factory.mktemp("many")
    store = shardedstore.ShardedStore(
        LocalStore(root / "base.zarr"),
        {},
        {"t": (1, shardedstore.array_shard_directory_store(root / "t"))},
    )
    array = zarr.create_array(
        store, name="t", shape=(MANY, 8, 8), chunks=(1, 2, 2), dtype="i2", compressors=None
    )
    array[0] = np.arange(64, dtype="i2").reshape(8, 8)
    for index in range(1, MANY):
        shutil.copytree(root / "t" / "0.zarr", root / "t" / f"{index}.zarr")
    store.save_config(root / "layout.json")
    return root / "layout.json"


def _default_sigint() -> None:
    """Ctrl-C as a terminal gives it, even when this run was started with SIGINT
    ignored (a background job of a script), which children would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_convert(config: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, "convert", str(config), "--to", "zip", "--out", str(out), "-j", "1", *extra],
        cwd=out.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _finished_shards(out: Path) -> list[Path]:
    return list((out / "t").glob("*.zarr.zip")) if (out / "t").is_dir() else []


def _wait_for_progress(process: subprocess.Popen[str], out: Path, shards: int) -> None:
    deadline = time.monotonic() + 60
    while len(_finished_shards(out)) < shards:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def _assert_complete_zips(out: Path) -> None:
    """Every zip under a final name is whole; nothing is left under a temporary name."""
    for path in _finished_shards(out):
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert len(zf.namelist()) == 17, path  # zarr.json and 16 chunks
    assert not [p for p in out.parent.rglob("*") if ".partial-" in p.name]


def test_a_second_convert_into_the_same_output_fails_at_once(
    many_shards: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "ds"
    out.parent.mkdir()
    first = _start_convert(many_shards, out)
    _wait_for_progress(first, out, 20)
    start = time.monotonic()
    second = subprocess.run(
        [CLI, "convert", str(many_shards), "--to", "zip", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert time.monotonic() - start < 10
    assert second.returncode == 1, second
    assert first.poll() is None, "the first run should still be converting"
    assert f"is being written by process {first.pid}" in second.stderr
    assert "ds.lock" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr  # nothing of the first run was removed
    assert "identical (crc32)" in stdout
    assert len(_finished_shards(out)) == MANY
    _assert_complete_zips(out)
    assert not (tmp_path / "out" / "ds.lock").exists()


def test_ctrl_c_stops_a_convert_within_seconds(many_shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "ds"
    out.parent.mkdir()
    process = _start_convert(many_shards, out)
    _wait_for_progress(process, out, 20)
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    elapsed = time.monotonic() - start
    assert process.returncode == 130, stderr
    assert elapsed < 5, f"took {elapsed:.1f} s to stop"
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    finished = len(_finished_shards(out))
    assert 20 <= finished < MANY - 50  # what had not started was cancelled
    _assert_complete_zips(out)
    rerun = subprocess.run(
        [CLI, "convert", str(many_shards), "--to", "zip", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "identical (crc32)" in rerun.stdout
    assert len(_finished_shards(out)) == MANY
    _assert_complete_zips(out)


def test_a_second_convert_into_the_same_url_fails_at_once(
    demo_config: Path, s3_server: S3Server, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}/ds"
    holder = shardedstore.to_url_with_prefix(url, storage_options=s3_server.storage_options)
    option = f"endpoint_url={s3_server.endpoint}"
    argv = ["convert", str(demo_config), "--to", "url", "--out", url, "--storage-option", option]
    capsys.readouterr()
    with holder.lock_output():
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{url} is being written by process {os.getpid()}" in err
        assert f"{url}.lock" in err
    assert main(argv) == 0


def test_info_into_a_closed_pipe_exits_quietly(many_shards: Path) -> None:
    # `shardedstore info --json CONFIG | head`: head leaves after a few lines.
    process = subprocess.Popen(
        [CLI, "info", "--json", str(many_shards)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.read(200).startswith(b"{")
    process.stdout.close()  # more than a pipe's buffer is still to come
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    assert stderr == ""


_INTERRUPTED_IN_A_CALLBACK = """
import importlib, sys, time, weakref
cli = importlib.import_module("shardedstore.cli.main")  # shardedstore.cli.main: the function

def validate(args):
    # What a Ctrl-C during an import can meet: it lands in a callback Python runs for
    # itself (an import lock's), which cannot raise it.
    class Thing:
        pass

    def callback(_):
        raise KeyboardInterrupt

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    time.sleep(10)
    print("finished")
    return 0

cli._cmd_validate = validate
sys.argv = ["shardedstore", "validate", "layout.json"]
sys.exit(cli.main())
"""


def test_ctrl_c_in_a_callback_python_cannot_raise_still_stops_the_command(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IN_A_CALLBACK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=_default_sigint,
    )
    assert result.stderr.splitlines() == ["shardedstore validate: interrupted"], result.stderr
    assert result.returncode == 130
    assert result.stdout == ""


@pytest.mark.parametrize("during", ["numpy", "zarr"])
def test_ctrl_c_while_starting_exits_130_in_one_line(tmp_path: Path, during: str) -> None:
    # Python reports each import as it ends (-X importtime): SIGINT is sent as soon as
    # the first module of `during` is imported, while the command is still starting.
    store = shardedstore.ShardedStore(LocalStore(tmp_path / "base.zarr"))
    zarr.create_group(store)
    store.save_config(tmp_path / "layout.json")
    process = subprocess.Popen(
        [CLI, "validate", str(tmp_path / "layout.json")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        preexec_fn=_default_sigint,
    )
    assert process.stderr is not None
    pattern = re.compile(rf"\|\s+{during}(\.|$)")
    seen: list[str] = []
    for line in process.stderr:
        seen.append(line)
        if pattern.search(line):
            process.send_signal(signal.SIGINT)
            break
    else:
        pytest.fail(f"{during} was never imported: {''.join(seen[-5:])}")
    stdout, rest = process.communicate(timeout=60)
    stderr = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert stderr == ["shardedstore validate: interrupted"], rest[-2000:]
    assert process.returncode == 130
    assert stdout == ""


def test_a_command_collects_garbage_less_often_and_restores_the_thresholds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() is called in-process (by tests, by scripts): the collector's thresholds it
    # raises for a command are the caller's again afterwards, even when the command fails.
    import gc
    import importlib

    cli_main = importlib.import_module("shardedstore.cli.main")  # the module, not main()
    seen: list[tuple[int, ...]] = []

    def command(args: object) -> int:
        seen.append(gc.get_threshold())
        raise RuntimeError("boom")

    monkeypatch.setattr(cli_main, "_cmd_info", command)
    before = gc.get_threshold()
    assert main(["info", str(tmp_path / "layout.json")]) == 1
    assert len(seen) == 1
    assert seen[0][0] > before[0]
    assert gc.get_threshold() == before


def test_commands_in_two_threads_restore_the_thresholds_when_both_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import importlib
    import threading

    cli_main = importlib.import_module("shardedstore.cli.main")
    started = [threading.Event(), threading.Event()]
    may_end = [threading.Event(), threading.Event()]
    calls: list[int] = []

    def command(args: object) -> int:
        number = len(calls)
        calls.append(number)
        started[number].set()
        assert may_end[number].wait(10)
        return 0

    monkeypatch.setattr(cli_main, "_cmd_info", command)
    before = gc.get_threshold()
    config = str(tmp_path / "layout.json")
    threads = [threading.Thread(target=main, args=(["info", config],)) for _ in range(2)]
    threads[0].start()
    assert started[0].wait(10)
    threads[1].start()
    assert started[1].wait(10)
    may_end[0].set()  # the first command ends while the second runs
    threads[0].join(10)
    assert gc.get_threshold()[0] > before[0]
    may_end[1].set()
    threads[1].join(10)
    assert gc.get_threshold() == before
