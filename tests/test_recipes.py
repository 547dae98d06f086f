"""The recipes of the user guide, run exactly as written there, in real processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

USER_GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user-guide.md"


def _section(title: str) -> str:
    text = USER_GUIDE.read_text()
    start = text.index(f"### {title}\n")
    end = re.compile(r"^#{2,3} ", re.M).search(text, start + 4)
    return text[start : end.start() if end else len(text)]


def _blocks(section: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a section, in order: (language, code)."""
    return re.findall(r"^```(\w+)\n(.*?)^```$", section, flags=re.S | re.M)


def _env() -> dict[str, str]:
    """This environment's ``python`` and ``shardedstore`` first on PATH, as after an install."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def _run(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    assert result.stderr == "", result.stderr  # no warnings printed either
    return result.stdout


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_many_writers_one_per_time_step(tmp_path: Path) -> None:
    blocks = _blocks(_section("Many writers, one per time step"))
    assert [language for language, _ in blocks] == ["bash", "python", "python", "bash", "python"]
    shell = [code for language, code in blocks if language == "bash"]
    outputs = []
    base_after_template: dict[str, bytes] = {}
    for language, code in blocks:
        if language == "bash":
            if "write_step.py" in code:
                base_after_template = _tree_bytes(tmp_path / "ds" / "base.zarr")
                assert not (tmp_path / "ds" / "temperature").exists()  # no data yet
            outputs.append(_run(["bash", "-e", "-c", code], tmp_path))
            continue
        name = re.match(r"# (\S+\.py)", code)
        assert name is not None, f"a python block of the recipe names its file: {code[:40]}"
        (tmp_path / name[1]).write_text(code)
        if not any(name[1] in command for command in shell):
            outputs.append(_run([sys.executable, name[1]], tmp_path))

    assert outputs[-1].strip() == "15.0"
    assert outputs[0].startswith("wrote ds/layout.json")
    shards = sorted(os.listdir(tmp_path / "ds" / "temperature"))
    assert shards == ["0.zarr", "1.zarr", "2.zarr", "3.zarr"]
    # The writers touched their own array shards only, never the base.
    assert _tree_bytes(tmp_path / "ds" / "base.zarr") == base_after_template
    with xr.open_dataset(
        tmp_path / "ds" / "layout.json", engine="shardedstore", consolidated=False
    ) as ds:
        expected = np.broadcast_to(10.0 * np.arange(4)[:, None, None], (4, 3, 2))
        np.testing.assert_array_equal(ds.temperature.values, expected)
        assert str(ds.time.values[3])[:10] == "2024-01-04"
