"""The command line: the demo that `make demo` runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import LocalStore

import shardedstore
from shardedstore._demo import build_demo_tree
from shardedstore.cli import main
from tests.conftest import S3Server

pytestmark = pytest.mark.filterwarnings("ignore:Object at .* is not recognized")


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
        if p.is_file() and p.name != "layout.json"
    )
    assert info["total"]["bytes"] == on_disk
    assert info["total"]["keys"] == sum(1 for p in demo_config.parent.rglob("*") if p.is_file()) - 1


def test_tree(demo_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tree", str(demo_config)]) == 0
    text = capsys.readouterr().out
    assert "├── people  [mount 'people'" in text
    assert "temperature (12, 16, 32) float32  [base + 12 array shard(s) on 1 dim(s)" in text
    assert main(["tree", str(demo_config), "--json"]) == 0
    nodes = {node["path"]: node for node in json.loads(capsys.readouterr().out)}
    assert nodes["simulation/coarse/temperature"]["holder"].startswith("mount 'simulation/coarse'")
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
    with xr.open_datatree(store, engine="zarr") as back:
        assert back.identical(build_demo_tree())


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
