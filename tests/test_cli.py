"""The command line: the demo that `make demo` runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore

from shardedstore._demo import build_demo_tree
from shardedstore.cli import main


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
