"""The ``shardedstore`` command line: a thin shell over the library.

``shardedstore info|tree|validate|convert|demo``; plain text for people, ``--json``
for scripts; exit 0 on success, 1 on failure with a one-line error (no traceback),
2 on a usage error, 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["build_parser", "main"]


def _open(config: str, storage_options: dict[str, Any] | None = None) -> Any:
    from shardedstore._config import open_config

    return open_config(config, "r", storage_options=storage_options)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _options(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are parsed as JSON when they can be."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _emit(text: str) -> None:
    """Print ``text`` (all of a command's output), quietly if the reader has gone.

    ``shardedstore info --json | head`` closes the pipe early: as Python's docs on
    SIGPIPE advise, stdout is then pointed at devnull so that nothing more is written
    (not even the flush at exit), and the command's own exit code stands.
    """
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _table(rows: list[tuple[str, ...]], right: int) -> str:
    """Rows as columns; the last ``right`` columns right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = len(widths) - right
    lines = []
    for row in rows:
        cells = [
            f"{cell:<{width}}" if i < left else f"{cell:>{width}}"
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------ commands


_SHOWN_ERRORS = 10
"""Unreadable shards ``info`` names on stderr before summing up the rest."""


def _cmd_info(args: argparse.Namespace) -> int:
    from shardedstore._inspect import ShardSummary, factory_text, shard_summaries

    store = _open(args.config, _options(args.storage_option))
    summaries = shard_summaries(store)
    unreadable = [s for s in summaries if s.error is not None]
    for s in unreadable[:_SHOWN_ERRORS]:
        print(
            f"shardedstore info: warning: {s.name}: cannot be read ({s.backend}): {s.error}",
            file=sys.stderr,
        )
    if len(unreadable) > _SHOWN_ERRORS:
        print(
            f"shardedstore info: warning: and {len(unreadable) - _SHOWN_ERRORS} more shard(s) "
            "that cannot be read (shardedstore validate lists them all)",
            file=sys.stderr,
        )

    def counts(group: list[ShardSummary]) -> dict[str, int]:
        return {
            name: sum(getattr(s, name) for s in group)
            for name in ("keys", "metadata_keys", "chunk_keys", "stray_keys", "bytes")
        }

    total = counts(summaries)
    if args.json:
        missing = sum(s.exists is False for s in summaries)
        document = {
            "config": args.config,
            "shards": [s.as_dict() for s in summaries],
            "total": {
                "shards": len(summaries),
                **total,
                "missing": missing,
                "unreadable": len(unreadable),
            },
        }
        _emit(json.dumps(document, indent=2))
        return 1 if unreadable else 0

    def row(name: str, backend: str, group: list[ShardSummary]) -> tuple[str, ...]:
        c = counts(group)
        return (
            name,
            backend,
            str(c["keys"]),
            str(c["metadata_keys"]),
            str(c["chunk_keys"]),
            _size(c["bytes"]),
        )

    def state(s: ShardSummary) -> str:
        if s.error is not None:
            return " (cannot be read: see stderr)"
        return "" if s.exists else " (missing)"

    rows: list[tuple[str, ...]] = [("shard", "backend", "keys", "metadata", "chunks", "bytes")]
    for s in summaries:
        if s.kind != "array shard":
            name = "base" if s.kind == "base" else f"mount {s.path}"
            rows.append(row(name, s.backend + state(s), [s]))
    for path, (dims, factory) in sorted(store.array_shards.items()):
        shards = [s for s in summaries if s.kind == "array shard" and s.path == path]
        broken = sum(s.error is not None for s in shards)
        found = sum(s.chunk_index is not None for s in shards)
        where = f"{found} shard(s) on {dims} dim(s): {factory_text(factory)}"
        if broken:
            where += f", {broken} unreadable"
        rows.append(row(f"array {path}", where, shards))
    rows.append(row("total", f"{len(summaries)} store(s)", summaries))
    lines = [_table(rows, right=4)]
    lines.append("keys: metadata documents (zarr.json, .zarray, ...) + chunks")
    if total["stray_keys"]:
        lines[-1] += (
            f" + {total['stray_keys']} stray key(s) that no reader of the layout reaches "
            "(shardedstore validate lists them)"
        )
    _emit("\n".join(lines))
    return 1 if unreadable else 0


def _cmd_tree(args: argparse.Namespace) -> int:
    from shardedstore._inspect import hierarchy, holder_text

    store = _open(args.config, _options(args.storage_option))
    nodes = hierarchy(store)
    if args.json:
        _emit(json.dumps(nodes, indent=2))
        return 0
    paths = [node["path"] for node in nodes]
    lines = []
    for node in nodes:
        path = node["path"]
        holder = holder_text(node["holder"])
        if not path:
            lines.append(f"/  [{holder}]")
            continue
        parent, _, name = path.rpartition("/")
        depth = path.count("/")
        siblings = [p for p in paths if p.rpartition("/")[0] == parent and p]
        branch = "└── " if path == siblings[-1] else "├── "
        indent = ""
        ancestor = parent
        for _ in range(depth):
            grand = ancestor.rpartition("/")[0]
            peers = [p for p in paths if p and p.rpartition("/")[0] == grand]
            indent = ("    " if ancestor == peers[-1] else "│   ") + indent
            ancestor = grand
        detail = ""
        if node["kind"] == "array":
            detail = f" {tuple(node['shape'])} {node['dtype']}"
        lines.append(f"{indent}{branch}{name}{detail}  [{holder}]")
    _emit("\n".join(lines))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from shardedstore._layoutcheck import validate_layout

    store = _open(args.config, _options(args.storage_option))
    validation = validate_layout(store)
    code = 0 if validation.valid else 1
    if args.json:
        _emit(json.dumps({"config": args.config, **validation.as_dict()}, indent=2))
        return code
    problems, warnings = validation.problems, validation.warnings
    if problems:
        lines = [f"{args.config}: {len(problems)} problem(s):"]
        lines += [f"  - {finding.message}" for finding in problems]
    else:
        lines = [
            f"{args.config}: valid (every shard reachable, metadata consistent, no stray keys)"
        ]
    if warnings:
        lines.append(f"{len(warnings)} warning(s):")
        lines += [f"  - {finding.message}" for finding in warnings]
    _emit("\n".join(lines))
    return code


class _UsageError(ValueError):
    """A command line that cannot run as given (exit code 2, as argparse's own errors)."""


def _convert_func(args: argparse.Namespace, options: dict[str, Any]) -> tuple[Any, str]:
    """The built-in transform for ``--to``/``--out`` and the new config's path.

    ``--out`` is checked and normalized before anything is read or written.
    """
    from shardedstore._prefixes import OutputPrefixError, check_path_prefix, check_url_prefix
    from shardedstore._transforms import (
        to_directory_store_with_prefix,
        to_url_with_prefix,
        to_zip_store_with_prefix,
    )

    try:
        if args.to == "url":
            url = check_url_prefix(args.out, "--out")
            func: Any = to_url_with_prefix(
                url, storage_options=options, include_stray=args.include_stray
            )
            return func, f"{url}.json"
        if "://" in args.out or "::" in args.out:
            raise _UsageError(
                f"--out {args.out!r} is a URL, but --to {args.to} writes local files: "
                "use --to url for URLs"
            )
        out = check_path_prefix(args.out, "--out")
    except OutputPrefixError as error:
        raise _UsageError(str(error)) from None
    if args.to == "zip":
        func = to_zip_store_with_prefix(
            out, compression=args.compression, include_stray=args.include_stray
        )
    else:
        func = to_directory_store_with_prefix(out, include_stray=args.include_stray)
    return func, f"{out}.json"


def _cmd_convert(args: argparse.Namespace) -> int:
    import warnings
    from concurrent.futures import Executor, ThreadPoolExecutor

    from shardedstore._transforms import StrayKeysWarning, map_shards
    from shardedstore._verify import verify_conversion

    options = _options(args.storage_option)
    func, config_path = _convert_func(args, options)
    # One conversion per output: held from before the source is read until the new
    # config is written and verified.
    with func.lock_output():
        source = _open(args.config)
        client = None
        executor: Executor
        if args.scheduler:
            from distributed import Client

            client = Client(args.scheduler)  # type: ignore[no-untyped-call]
            executor = client.get_executor()  # type: ignore[no-untyped-call]
        else:
            executor = ThreadPoolExecutor(max_workers=args.jobs)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", StrayKeysWarning)
                converted = map_shards(
                    source,
                    func,
                    executor=executor,
                    progress=None if not args.quiet else False,
                    output_locked=True,
                )
        finally:
            if client is not None:
                client.close()  # type: ignore[no-untyped-call]
            else:
                executor.shutdown(wait=True, cancel_futures=True)
        for warning in caught:
            if isinstance(warning.message, StrayKeysWarning):
                print(
                    f"shardedstore convert: warning: not copied, as no reader of the layout "
                    f"reaches them (validate lists them, --include-stray copies them): "
                    f"{'; '.join(warning.message.notes)}",
                    file=sys.stderr,
                )
            else:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        elapsed = time.perf_counter() - start
        converted.save_config(config_path, storage_options=options or None)
        summary = f"converted {args.config} -> {config_path} in {elapsed:.1f} s"
        if not args.no_verify:
            reopened = _open(config_path, options or None)
            verified = verify_conversion(source, reopened, include_stray=args.include_stray)
            summary += (
                f"; verified {verified.keys} keys ({verified.documents} metadata documents + "
                f"{verified.chunks} chunks), {_size(verified.bytes)}, identical (crc32)"
            )
    _emit(summary)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from shardedstore._demo import run_demo

    return 0 if run_demo(args.dir) else 1


# -------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``shardedstore`` command."""
    parser = argparse.ArgumentParser(
        prog="shardedstore",
        description="Spread one Zarr hierarchy over many stores, and inspect, check and "
        "convert such layouts. CONFIG is a layout config file (a path or fsspec URL).",
    )
    from shardedstore import __version__

    parser.add_argument("--version", action="version", version=f"shardedstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description)

    def config_args(sub: argparse.ArgumentParser, json_help: str) -> None:
        sub.add_argument("config", metavar="CONFIG", help="layout config file (path or URL)")
        sub.add_argument("--json", action="store_true", help=json_help)
        sub.add_argument(
            "--storage-option",
            metavar="KEY=VALUE",
            action="append",
            help="fsspec option for reading CONFIG from a URL (repeatable)",
        )

    info = command(
        "info",
        "summarize a layout: each shard, its store, its keys and bytes",
        "List the base, every mount and every array shard with its store (a URL), its "
        "keys (metadata documents + chunks, and stray keys if any) and bytes (array "
        "shards summed per array; --json lists each). A shard that cannot be read is "
        "marked and named on stderr, and the exit code is 1.",
    )
    config_args(info, "print JSON with every shard")
    info.set_defaults(func=_cmd_info)

    tree = command(
        "tree",
        "print the Zarr hierarchy, marking the shard that holds each node",
        "Print every group and array (shape, dtype) from metadata alone, without "
        "loading chunk data, each marked with the shard that holds it.",
    )
    config_args(tree, "print the nodes as JSON")
    tree.set_defaults(func=_cmd_tree)

    validate = command(
        "validate",
        "check that every shard is reachable, consistent and free of stray keys",
        "Check that every shard is reachable, that each array shard's metadata matches "
        "the array's metadata in base, and that no store holds keys nobody can read; "
        "every problem is reported, whatever fails first. Exit 1 with the list of "
        "problems otherwise. Warnings (array shards missing between others, array shards "
        "beyond the array's shape, zips being written or left by a dead writer) do not "
        "make a layout invalid.",
    )
    config_args(validate, "print the result as JSON")
    validate.set_defaults(func=_cmd_validate)

    convert = command(
        "convert",
        "copy every shard to zips, directories or a URL and write the new config",
        "Copy every shard of CONFIG (base, mounts, array shards) to a zip file, a "
        "directory or below an fsspec URL, with a progress bar, in parallel. Only each "
        "shard's own keys are copied (stray keys are reported; --include-stray copies "
        "them); shards are never read through a symlink. The output is locked for the "
        "run (PREFIX.lock). The new config is written next to the output (PREFIX.json), "
        "then every key is verified against the source (crc32). Re-running after a "
        "failure or Ctrl-C skips outputs with the same content and finishes the job.",
    )
    convert.add_argument("config", metavar="CONFIG", help="layout config file to convert")
    convert.add_argument(
        "--to", required=True, choices=["zip", "directory", "url"], help="kind of output"
    )
    convert.add_argument(
        "--out",
        required=True,
        metavar="PREFIX",
        help="output prefix, ending in a name: a path such as archive/ds, or a URL for "
        "--to url such as s3://bucket/ds",
    )
    convert.add_argument(
        "-j", "--jobs", type=int, default=4, metavar="N", help="parallel workers (default 4)"
    )
    convert.add_argument(
        "--scheduler", metavar="ADDRESS", help="run on this dask.distributed scheduler instead"
    )
    convert.add_argument(
        "--compression",
        default="stored",
        choices=["stored", "deflated", "bzip2", "lzma"],
        help="zip compression (default stored: chunks are usually compressed already)",
    )
    convert.add_argument(
        "--storage-option",
        metavar="KEY=VALUE",
        action="append",
        help="fsspec option for --to url outputs (repeatable), e.g. endpoint_url=http://...",
    )
    convert.add_argument(
        "--include-stray",
        action="store_true",
        help="also copy stray keys and array shards outside the array's shape, which no "
        "reader of the layout reaches (by default they are reported and left out)",
    )
    convert.add_argument("--no-verify", action="store_true", help="skip the checksum comparison")
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(func=_cmd_convert)

    demo = command(
        "demo",
        "write a small demo dataset sharded, save its config, reopen it and compare",
        "Build a small DataTree, write it through a ShardedStore under DIR, print where "
        "each node landed, save DIR/layout.json, reopen the dataset from it and compare. "
        "DIR must be new, empty, or an earlier demo's output (marked by DIR/.shardedstore-demo), "
        "whose entries are replaced; nothing else in DIR is touched.",
    )
    demo.add_argument("dir", nargs="?", default="demo-output", help="output directory")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        print(f"shardedstore {args.command}: error: -j must be at least 1", file=sys.stderr)
        return 2
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        hint = ""
        if args.command == "convert":
            hint = "; finished shards are complete: run the same command again to finish"
        print(f"shardedstore {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    except _UsageError as err:
        print(f"shardedstore {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # one line for people, never a traceback
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"shardedstore {args.command}: error: {message}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
