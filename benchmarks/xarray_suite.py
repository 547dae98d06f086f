"""xarray's own zarr backend tests through ShardedStore: how much longer with 22 mounts?

Runs xarray's ``ZarrBase`` test class (the one its ``TestZarrDictStore`` and
``TestZarrDirectoryStore`` subclass) three times in one process, interleaved by pytest
run, each with a different ``create_zarr_target``:

- ``local``: one zarr ``LocalStore`` (the baseline);
- ``sharded-1``: a ``ShardedStore`` over the same LocalStore base, no mounts;
- ``sharded-22``: a ``ShardedStore`` with 22 LocalStore mounts on the variable names
  xarray's tests use most (``var1``, ``x``, ``time``, ...).

Prints the summed test time of each and the ratios to ``local``, plus the number of
tests that passed in each (they must be the same).

Usage: python benchmarks/xarray_suite.py [-k EXPR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

MOUNTS = [
    "var1", "var2", "var3", "x", "y", "z", "time", "dim1", "dim2", "dim3", "numbers",
    "foo", "bar", "data", "a", "b", "c", "t", "lat", "lon", "da", "ds",
]  # fmt: skip

MODULE = textwrap.dedent(
    """
    import contextlib, os, tempfile, uuid
    import pytest
    from zarr.storage import LocalStore
    from xarray.tests.test_backends import ZarrBase, default_zarr_format  # noqa: F401
    from shardedstore import ShardedStore

    MOUNTS = {mounts!r}
    KIND = os.environ["SHARDEDSTORE_SUITE_KIND"]

    class TestThroughStore(ZarrBase):
        @contextlib.contextmanager
        def create_zarr_target(self):
            with tempfile.TemporaryDirectory() as d:
                base = LocalStore(os.path.join(d, "base.zarr"))
                if KIND == "local":
                    yield base
                    return
                mounts = {{}}
                if KIND == "sharded-22":
                    mounts = {{m: LocalStore(os.path.join(d, m + ".zarr")) for m in MOUNTS}}
                yield ShardedStore(base, mounts)
    """
)


class _Timer:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.seconds += report.duration
            self.passed += report.passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", default="", help="pytest -k expression")
    args = parser.parse_args()
    results: dict[str, _Timer] = {}
    with tempfile.TemporaryDirectory(prefix="shardedstore-xarray-suite-") as folder:
        module = Path(folder) / "test_through_store.py"
        module.write_text(MODULE.format(mounts=MOUNTS))
        (Path(folder) / "conftest.py").write_text('pytest_plugins = ["xarray.tests.conftest"]\n')
        for kind in ("local", "sharded-1", "sharded-22"):
            os.environ["SHARDEDSTORE_SUITE_KIND"] = kind
            sys.modules.pop("test_through_store", None)
            timer = _Timer()
            argv = [str(module), "-q", "-p", "no:cacheprovider", "--no-header"]
            argv += ["-W", "ignore", "--rootdir", folder]
            if args.k:
                argv += ["-k", args.k]
            with contextlib.nullcontext():
                start = time.perf_counter()
                pytest.main(argv, plugins=[timer])
                wall = time.perf_counter() - start
            results[kind] = timer
            print(f"{kind:11} {timer.passed:4d} passed, summed test time {timer.seconds:6.1f} s")
            print(f"{'':11} (wall {wall:.1f} s)")
    base = results["local"].seconds
    for kind in ("sharded-1", "sharded-22"):
        print(f"{kind} / local = {results[kind].seconds / base:.2f}")


if __name__ == "__main__":
    main()
