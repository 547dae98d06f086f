"""What ``pip install shardedstore`` brings, and what ``import shardedstore`` loads.

Runtime dependencies must install from wheels on CPython 3.11-3.13 (no C compiler), and
dask / distributed are an extra (``shardedstore[dask]``) used only by the CLI's
``--scheduler``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import zarr
from zarr.storage import LocalStore

ROOT = Path(__file__).parent.parent


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requirements}


def test_runtime_dependencies_need_no_compiler_and_no_dask() -> None:
    runtime = _names(_project()["dependencies"])
    assert "zipfile-deflate64" not in runtime  # sdist only on Python >= 3.11
    assert "inflate64" in runtime
    assert not runtime & {"dask", "distributed"}


def test_dask_extra_and_test_extra() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert _names(extras["dask"]) == {"dask", "distributed"}
    assert {"dask", "distributed"} <= _names(extras["test"])


def test_import_loads_neither_dask_nor_distributed() -> None:
    script = (
        "import sys, shardedstore;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'zipfile_deflate64')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_scheduler_without_distributed_names_the_extra(tmp_path: Path) -> None:
    zarr.open_group(LocalStore(tmp_path / "base.zarr"), mode="w")
    layout = tmp_path / "layout.json"
    layout.write_text(
        json.dumps(
            {
                "format": "shardedstore",
                "version": 1,
                "base": {"type": "local", "root": "base.zarr"},
            }
        )
    )
    # As if distributed were not installed: None in sys.modules makes its import fail.
    script = (
        "import sys; sys.modules['distributed'] = None;"
        "from shardedstore.cli import main;"
        f"sys.exit(main(['convert', {str(layout)!r}, '--to', 'zip', '--out', "
        f"{str(tmp_path / 'out' / 'ds')!r}, '--scheduler', 'tcp://127.0.0.1:1']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "shardedstore convert: error: --scheduler needs dask.distributed: "
        'pip install "shardedstore[dask]"'
    ]
    assert not (tmp_path / "out").exists()  # failed before anything ran


def test_import_loads_nothing_heavy_and_every_public_name_resolves() -> None:
    # Names are imported on first use, so that the CLI handles a Ctrl-C while starting.
    script = (
        "import sys, shardedstore;"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'zarr', 'numpy', 'xarray'}));"
        "from shardedstore import *;"
        "print(sorted(n for n in shardedstore.__all__ if n not in globals()))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["[]", "[]"]
    import importlib

    import shardedstore

    lazy = dict(shardedstore._LAZY)
    assert set(lazy) == set(shardedstore.__all__) - {"__version__"}
    for name, where in lazy.items():
        module, _, attribute = where.partition(":")
        assert getattr(shardedstore, name) is getattr(
            importlib.import_module(module), attribute or name
        )
    assert set(shardedstore.__all__) <= set(dir(shardedstore))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = shardedstore.nope  # type: ignore[attr-defined]
