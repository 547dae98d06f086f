"""``shardedstore init``: a layout config written from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import LocalStore

import shardedstore
from shardedstore import ConfigError, ShardedStore, array_shard_directory_store
from shardedstore.cli import main
from tests.conftest import S3Server


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory of the command: a fresh tmp dir."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_init_writes_a_config_writers_can_use(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "init",
            "ds/layout.json",
            "--base",
            "ds/base.zarr",
            "--mount",
            "people=zip:ds/people.zarr.zip",
            "--array-shards",
            "simulation/fine/temperature=1:local:ds/temperature/{chunk}.zarr",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote ds/layout.json\n")
    assert "mount people" in printed
    assert "people.zarr.zip" in printed
    assert "shardedstore.open('ds/layout.json', mode='r+')" in printed
    assert json.loads((here / "ds" / "layout.json").read_text()) == {
        "format": "shardedstore",
        "version": 1,
        "base": {"type": "local", "root": "base.zarr"},
        "mounts": {"people": {"type": "zip", "path": "people.zarr.zip"}},
        "array_shards": {
            "simulation/fine/temperature": {
                "dims": 1,
                "store": {"type": "local", "root": "temperature/{chunk}.zarr"},
            }
        },
    }
    assert _files(here) == ["ds", "ds/layout.json"]  # stores are created by writers

    tree = xr.DataTree.from_dict(
        {
            "people": xr.Dataset({"height": ("person", [1.5, 1.8])}),
            "simulation/fine": xr.Dataset(
                {"temperature": (("time", "x"), np.arange(6.0).reshape(3, 2))}
            ).chunk({"time": 1}),
        }
    )
    store = shardedstore.open(here / "ds" / "layout.json", mode="r+")
    tree.to_zarr(store, consolidated=False)
    store.close()
    layout = here / "ds" / "layout.json"
    assert (here / "ds" / "people.zarr.zip").is_file()
    assert sorted(os.listdir(here / "ds" / "temperature")) == ["0.zarr", "1.zarr", "2.zarr"]
    with xr.open_datatree(layout, engine="shardedstore", consolidated=False) as back:
        assert back.identical(tree)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("local:ds/b.zarr", {"type": "local", "root": "b.zarr"}),
        ("ds/b.zarr", {"type": "local", "root": "b.zarr"}),
        ("./ds/sub/../b", {"type": "local", "root": "b"}),
        ("zip:ds/b.zarr.zip", {"type": "zip", "path": "b.zarr.zip"}),
        ("ds/b.zip", {"type": "zip", "path": "b.zip"}),
        ("local:ds/b.zip", {"type": "local", "root": "b.zip"}),
        ("fsspec:ds/b.zarr", {"type": "fsspec", "url": "b.zarr"}),
        (
            '{"type": "zip", "path": "ds/b.zip", "mode": "r"}',
            {"type": "zip", "path": "b.zip", "mode": "r"},
        ),
    ],
)
def test_store_forms(here: Path, given: str, expected: dict[str, Any]) -> None:
    assert main(["init", "ds/layout.json", "--base", given]) == 0
    assert json.loads((here / "ds" / "layout.json").read_text())["base"] == expected


def test_file_urls_are_written_relative(here: Path) -> None:
    url = f"file://{here}/ds/b.zarr"
    assert main(["init", "ds/layout.json", "--base", url]) == 0
    config = json.loads((here / "ds" / "layout.json").read_text())
    assert config["base"] == {"type": "fsspec", "url": "b.zarr"}
    assert shardedstore.open(here / "ds" / "layout.json", mode="r+").read_only is False


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/ds/base.zarr", {"type": "fsspec", "url": "s3://bucket/ds/base.zarr"}),
        ("memory://ds/base.zarr", {"type": "fsspec", "url": "memory://ds/base.zarr"}),
        ("fsspec:s3://bucket/y.zarr", {"type": "fsspec", "url": "s3://bucket/y.zarr"}),
        ("obstore:s3://bucket/x.zarr", {"type": "obstore", "url": "s3://bucket/x.zarr"}),
    ],
)
def test_urls_are_outside_a_local_folder(
    here: Path, url: str, expected: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "ds/layout.json", "--base", url]) == 1
    error = capsys.readouterr().err
    assert "not inside the config's folder" in error
    assert "--allow-outside" in error
    assert not (here / "ds").exists()
    assert main(["init", "ds/layout.json", "--base", url, "--allow-outside"]) == 0
    assert "allow_outside=True" in capsys.readouterr().out
    config = json.loads((here / "ds" / "layout.json").read_text())
    assert config["base"] == expected
    with pytest.raises(ConfigError, match="allow_outside=True"):
        shardedstore.open(here / "ds" / "layout.json", mode="r+")
    opened = shardedstore.open(here / "ds" / "layout.json", mode="r+", allow_outside=True)
    assert opened.read_only is False


def test_an_existing_config_is_replaced_only_with_force(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "ds").mkdir()
    (here / "ds" / "layout.json").write_text("precious")
    assert main(["init", "ds/layout.json", "--base", "ds/base.zarr"]) == 1
    assert "ds/layout.json exists; pass --force" in capsys.readouterr().err
    assert (here / "ds" / "layout.json").read_text() == "precious"
    assert _files(here) == ["ds", "ds/layout.json"]  # no temporary file left
    assert main(["init", "ds/layout.json", "--base", "ds/base.zarr", "--force"]) == 0
    assert json.loads((here / "ds" / "layout.json").read_text())["base"]["root"] == "base.zarr"
    assert _files(here) == ["ds", "ds/layout.json"]


def test_a_directory_is_not_a_config_path(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (here / "ds" / "keep").mkdir(parents=True)
    for force in ([], ["--force"]):
        assert main(["init", "ds", "--base", "ds/base.zarr", *force]) == 2
        error = capsys.readouterr().err
        assert "ds is a directory; the config path must name a file in it" in error
        assert "ds/layout.json" in error
    assert _files(here) == ["ds", "ds/keep"]


@pytest.mark.parametrize(
    "args",
    [
        ["--mount", "people=ds/base.zarr"],  # the same location as the base
        ["--mount", "people=ds/base.zarr/people"],  # inside the base
        ["--mount", "a=ds/m.zarr", "--mount", "a/b=ds/n.zarr"],  # nested mount paths
        ["--array-shards", "t=1:ds/t/{chunk}.zarr", "--array-shards", "u=1:ds/t/{chunk}.zarr"],
        ["--array-shards", "t=1:ds/t/{chunk}/../../x.zarr"],  # '..' swallows {chunk}
        ["--mount", "people=ds/t/3.zarr", "--array-shards", "t=1:ds/t/{chunk}.zarr"],
        ["--mount", "../up=ds/m.zarr"],  # not a node path
        ["--base", "ds"],  # the config's folder itself
        ["--base", "../elsewhere.zarr"],  # outside the folder
    ],
)
def test_init_refuses_what_from_config_refuses(
    here: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["init", "ds/layout.json", "--base", "ds/base.zarr", *args]
    if args[0] == "--base":
        argv = ["init", "ds/layout.json", *args]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("shardedstore init: error: ")
    assert "\n" not in error
    assert not (here / "ds").exists()  # nothing written, nothing created
    # The same config, as shardedstore would write it, fails from_config the same way.
    written = _config_for(here, argv)
    with pytest.raises(ConfigError) as caught:
        ShardedStore.from_config(written, base_path=here / "ds")
    assert " ".join(str(caught.value).split()) in error


def _config_for(here: Path, argv: list[str]) -> dict[str, Any]:
    """What init would write for ``argv``, had it been allowed to (with --allow-outside)."""
    from shardedstore.cli.init import build_config

    options: dict[str, list[str]] = {"--base": [], "--mount": [], "--array-shards": []}
    for option, value in zip(argv[2::2], argv[3::2], strict=True):
        options[option].append(value)
    return build_config(
        options["--base"][0],
        options["--mount"],
        options["--array-shards"],
        relative_to=str(here / "ds"),
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mount", "people"], "--mount expects PATH=STORE"),
        (["--mount", "=x.zarr"], "--mount expects PATH=STORE"),
        (["--mount", "people=nosuch:x"], "unknown store type 'nosuch'"),
        (["--mount", "p=x.zarr", "--mount", "p=y.zarr"], "'p' is given twice"),
        (["--array-shards", "t=ds/t/{chunk}.zarr"], "--array-shards expects PATH=DIMS:TEMPLATE"),
        (["--array-shards", "t=0:ds/t/{chunk}.zarr"], "at least 1"),
        (
            ["--array-shards", "t=99999999999999999999:ds/t/{chunk}.zarr"],
            "--array-shards t: DIMS 99999999999999999999 is more than 64",
        ),
        (["--array-shards", "t=65:ds/t/{chunk}.zarr"], "--array-shards t: DIMS 65 is more than"),
        (["--array-shards", "t=1:ds/t.zarr"], "has no {chunk}"),
        (["--mount", "p={not json"], "not a JSON object"),
        (["--mount", 'p={"root": "x"}'], 'needs a "type"'),
        (["--mount", 'p={"type": "sharded", "base": {}}'], "nested sharded store"),
    ],
)
def test_usage_errors_exit_2(
    here: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", "ds/layout.json", "--base", "ds/base.zarr", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (here / "ds").exists()


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{chunk}.zarr", {"type": "local", "root": "{chunk}.zarr"}),
        ("{chunk}.zarr.zip", {"type": "zip", "path": "{chunk}.zarr.zip"}),
        ("{chunk}/t.zarr", {"type": "local", "root": "{chunk}/t.zarr"}),
        ("zip:{chunk}.zip", {"type": "zip", "path": "{chunk}.zip"}),
        ('{"type": "zip", "path": "{chunk}.zip"}', {"type": "zip", "path": "{chunk}.zip"}),
    ],
)
def test_a_template_starting_with_the_placeholder_is_a_path(
    here: Path, template: str, expected: dict[str, Any]
) -> None:
    argv = ["init", "layout.json", "--base", "base.zarr", "--array-shards", f"t=1:{template}"]
    assert main(argv) == 0
    written = json.loads((here / "layout.json").read_text())
    assert written["array_shards"]["t"] == {"dims": 1, "store": expected}


def test_json_output(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["init", "ds/layout.json", "--json", "--base", "ds/b.zarr", "--mount", "m=ds/m.zarr"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"] == "ds/layout.json"
    assert printed["layout"] == json.loads((here / "ds" / "layout.json").read_text())


def test_a_config_at_a_url(
    here: Path, s3_server: S3Server, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"s3://{s3_bucket}/ds/layout.json"
    endpoint = f"endpoint_url={s3_server.endpoint}"
    store = json.dumps(
        {
            "type": "fsspec",
            "url": f"s3://{s3_bucket}/ds/base.zarr",
            "storage_options": s3_server.storage_options,
        }
    )
    argv = ["init", url, "--base", store, "--storage-option", endpoint]
    assert main(argv) == 0
    options = s3_server.storage_options
    reopened = shardedstore.open(url, mode="r+", storage_options=options)
    assert reopened.get_config(relative_to=f"s3://{s3_bucket}/ds")["base"]["url"] == "base.zarr"
    xr.Dataset({"a": ("x", [1, 2, 3])}).to_zarr(reopened, consolidated=False)
    with xr.open_dataset(
        url, engine="shardedstore", storage_options=options, consolidated=False
    ) as back:
        assert back.a.values.tolist() == [1, 2, 3]
    capsys.readouterr()
    assert main(argv) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    # A local path is outside a config at a URL.
    assert (
        main(["init", url, "--base", "ds/local.zarr", "--storage-option", endpoint, "--force"]) == 1
    )
    assert "not inside the config's folder" in capsys.readouterr().err


node_names = st.text(alphabet="abcxyz_", min_size=1, max_size=4)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mounts=st.dictionaries(
        st.lists(node_names, min_size=1, max_size=3).map("/".join), node_names, max_size=4
    ),
    dims=st.integers(1, 3),
)
def test_init_writes_what_save_config_writes(here: Path, mounts: dict[str, str], dims: int) -> None:
    """The same layout built in Python and saved is byte for byte what init writes."""
    paths = sorted(mounts)
    if any(b.startswith(a + "/") for a in paths for b in paths):
        return  # nested mount paths: refused by both (test_init_refuses_...)
    if "t" in paths or any(p.startswith("t/") for p in paths):
        return
    folder = here / "ds"
    stores = {path: f"ds/m{i}.zarr" for i, path in enumerate(paths)}
    argv = ["init", "ds/layout.json", "--force", "--base", "ds/base.zarr"]
    for path in paths:
        argv += ["--mount", f"{path}={stores[path]}"]
    argv += ["--array-shards", f"t={dims}:local:ds/t/{{chunk}}.zarr"]
    assert main(argv) == 0
    python = ShardedStore(
        LocalStore(folder / "base.zarr"),
        {path: LocalStore(here / stores[path]) for path in paths},
        {"t": (dims, array_shard_directory_store(folder / "t"))},
    )
    python.save_config(folder / "saved.json")
    assert (folder / "layout.json").read_text() == (folder / "saved.json").read_text()


def test_the_installed_command(tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        command = Path(sys.executable).with_name("shardedstore")
        return subprocess.run(
            [str(command), *argv], cwd=tmp_path, capture_output=True, text=True, check=False
        )

    ok = run("init", "ds/layout.json", "--base", "ds/base.zarr")
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""
    again = run("init", "ds/layout.json", "--base", "ds/base.zarr")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "Traceback" not in again.stderr
    usage = run("init", "ds/other.json")
    assert usage.returncode == 2
    assert "--base" in usage.stderr
    helped = run("init", "--help")
    assert "PATH=DIMS:TEMPLATE" in helped.stdout
