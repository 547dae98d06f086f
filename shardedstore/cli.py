"""The ``shardedstore`` command line: a thin shell over the library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    from shardedstore._demo import run_demo

    return 0 if run_demo(args.dir) else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``shardedstore`` command."""
    parser = argparse.ArgumentParser(
        prog="shardedstore",
        description="Spread one Zarr hierarchy over many stores, and inspect such layouts.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="write a small demo dataset sharded, read it back and compare",
        description="Build a small DataTree, write it through a ShardedStore under DIR "
        "(replacing DIR), print where each node landed, read it back and compare.",
    )
    demo.add_argument("dir", nargs="?", default="demo-output", help="output directory")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (OSError, ValueError) as err:
        print(f"shardedstore {args.command}: error: {err}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
