"""The documentation site: builds with ``--strict`` and documents every public name."""

from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import shardedstore

ROOT = Path(__file__).parent.parent


def test_site_builds_strict_with_every_public_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    api = (site / "api" / "index.html").read_text()
    documented = set(re.findall(r'id="shardedstore\.(\w+)"', api))
    assert {name for name in shardedstore.__all__ if not name.startswith("_")} <= documented
    assert "Parameters:" in api  # numpydoc sections rendered as such, not as plain text
    assert not re.search(r":(class|func|meth|mod|data):", api)  # Sphinx roles made code spans
    for page in ("user-guide", "config", "cli", "benchmarks"):
        assert (site / page / "index.html").is_file()


def test_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``>>>`` example in the package's docstrings gives the output it shows."""
    monkeypatch.chdir(tmp_path)  # any example that touches files stays in here
    package = ROOT / "shardedstore"
    failed: list[str] = []
    attempted = 0
    for path in sorted(package.rglob("*.py")):
        if ">>> " not in path.read_text():
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=False)
        attempted += result.attempted
        if result.failed:
            failed.append(f"{path.name}: {result.failed} of {result.attempted}")
    assert not failed, failed
    assert attempted >= 20


def test_user_guide_states_the_inline_rules_the_code_applies() -> None:
    """The "Inline I/O" section quotes the thresholds and probe intervals in force."""
    from shardedstore.store import inline as _inline

    guide = (ROOT / "docs" / "user-guide.md").read_text()
    section = guide.split("### Inline I/O", 1)[1].split("\n### ", 1)[0]
    text = " ".join(section.split())
    assert f"at most {_inline.INLINE_THRESHOLD * 1e6:.0f} µs" in text
    assert f"wait at most {_inline.WAIT_THRESHOLD * 1e6:.0f} µs" in text
    assert f"at most {_inline.BUSY_THRESHOLD * 1e6:.0f} µs of CPU" in text
    assert f"every {_inline.PROBE_FIRST} calls" in text
    assert f"after every {_inline.PROBE_LAST} calls" in text
    assert f"less than {_inline.PROBE_GAIN} of the last inline one" in text
    assert f"more than {_inline.LONG_WAIT * 1e3:.0f} ms" in text
    assert f"one call in {_inline.THREAD_SAMPLING} is measured" in text
