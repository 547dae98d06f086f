"""The ``shardedstore`` command line: a thin shell over the library.

``shardedstore info|tree|validate|convert|import|chunks|sql|init|demo``; plain text for
people, ``--json`` for scripts; exit 0 on success, 1 on failure with a one-line error (no
traceback), 2 on a usage error, 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from shardedstore.errors import ArgumentError, OutputError


class _UsageError(ArgumentError):
    """An argument of the command line that cannot be used (exit status 2)."""


if TYPE_CHECKING:
    from concurrent.futures import Executor

    from shardedstore.report.info import ShardSummary

__all__ = ["build_parser", "main"]


def _open(
    config: str, storage_options: dict[str, Any] | None = None, *, check_data: bool = True
) -> Any:
    """The layout, read-only, with a base to read.

    ``check_data=False``: also when its base is missing or its dims contradict the
    data, for the commands that report those among the rest (info, validate).
    """
    from shardedstore.config.layout import open_layout_config
    from shardedstore.store.opencheck import check_base_exists

    store = open_layout_config(config, "r", storage_options=storage_options, check_data=check_data)
    if check_data:
        check_base_exists(store, config)
    return store


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


_COUNTS = ("keys", "metadata_keys", "chunk_keys", "stray_keys", "bytes")
"""What ``info`` sums per group of shards."""


class _Tally:
    """The sums of :data:`_COUNTS` over a group of shards, and how many were not
    there or could not be read."""

    __slots__ = ("count", "missing", "unreadable", "with_index", *_COUNTS)

    def __init__(self) -> None:
        self.count = self.with_index = self.missing = self.unreadable = 0
        self.keys = self.metadata_keys = self.chunk_keys = self.stray_keys = self.bytes = 0

    @property
    def sums(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _COUNTS}

    def add(self, summary: ShardSummary) -> None:
        self.keys += summary.keys
        self.metadata_keys += summary.metadata_keys
        self.chunk_keys += summary.chunk_keys
        self.stray_keys += summary.stray_keys
        self.bytes += summary.bytes
        self.count += 1
        self.with_index += summary.chunk_index is not None  # not "cannot be listed"
        self.missing += summary.exists is False
        self.unreadable += summary.error is not None


class _Output:
    """A command's output, written as it comes: quietly once the reader has gone
    (see :func:`_emit`)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size >= 1 << 16:
            self.flush()

    def flush(self) -> None:
        text, self.parts, self.size = "".join(self.parts), [], 0
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


def _cmd_info(args: argparse.Namespace) -> int:
    from shardedstore.report.info import iter_shard_summaries
    from shardedstore.store.factories import factory_text

    store = _open(args.config, _options(args.storage_option), check_data=False)
    # The shards are summed up as they come, never all held: 10^6 of them are many.
    total = _Tally()
    arrays = {path: _Tally() for path in store.array_shards}
    others: list[tuple[ShardSummary, _Tally]] = []  # base and mounts, one row each
    output = _Output() if args.json else None
    if output is not None:
        marker = "\\u0000rows"  # how JSON writes the NUL below: no path or name holds one
        head = json.dumps({"config": args.config, "shards": "\x00rows"}, indent=2)
        output.write(head[: head.index(f'"{marker}"')])
    for s in iter_shard_summaries(store):
        if s.error is not None and total.unreadable < _SHOWN_ERRORS:
            print(
                f"shardedstore info: warning: {s.name}: cannot be read ({s.backend}): {s.error}",
                file=sys.stderr,
            )
        if output is not None:  # one compact line a shard, by the C encoder
            line = s.as_json()
            output.write(f",\n    {line}" if total.count else f"[\n    {line}")
        total.add(s)
        if s.kind == "array shard":
            arrays[s.path].add(s)
        else:
            tally = _Tally()
            tally.add(s)
            others.append((s, tally))
    if total.unreadable > _SHOWN_ERRORS:
        print(
            f"shardedstore info: warning: and {total.unreadable - _SHOWN_ERRORS} more shard(s) "
            "that cannot be read (shardedstore validate lists them all)",
            file=sys.stderr,
        )
    code = 1 if total.unreadable else 0
    count = total.count
    if output is not None:
        output.write("\n  ]" if count else "[]")
        totals = {
            "shards": count,
            **total.sums,
            "missing": total.missing,
            "unreadable": total.unreadable,
        }
        tail = json.dumps({"total": totals}, indent=2)
        output.write(f",\n  {tail[4:-2]}\n}}\n")  # the document's last member
        output.flush()
        return code

    def row(name: str, backend: str, tally: _Tally) -> tuple[str, ...]:
        c = tally.sums
        return (
            name,
            backend,
            str(c["keys"]),
            str(c["metadata_keys"]),
            str(c["chunk_keys"]),
            _size(c["bytes"]),
        )

    def state(tally: _Tally) -> str:
        if tally.unreadable:
            return " (cannot be read: see stderr)"
        return " (missing)" if tally.missing else ""

    rows: list[tuple[str, ...]] = [("shard", "backend", "keys", "metadata", "chunks", "bytes")]
    for s, tally in others:
        name = "base" if s.kind == "base" else f"mount {s.path}"
        rows.append(row(name, s.backend + state(tally), tally))
    for path, (dims, factory) in sorted(store.array_shards.items()):
        tally = arrays[path]
        where = f"{tally.with_index} shard(s) on {dims} dim(s): {factory_text(factory)}"
        if tally.unreadable:
            where += f", {tally.unreadable} unreadable"
        rows.append(row(f"array {path}", where, tally))
    rows.append(row("total", f"{count} store(s)", total))
    lines = [_table(rows, right=4)]
    lines.append("keys: metadata documents (zarr.json, .zarray, ...) + chunks")
    if total.stray_keys:
        lines[-1] += (
            f" + {total.stray_keys} stray key(s) that no reader of the layout reaches "
            "(shardedstore validate lists them)"
        )
    _emit("\n".join(lines))
    return code


def _cmd_tree(args: argparse.Namespace) -> int:
    from shardedstore.report.info import hierarchy, holder_text

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
    from shardedstore.report.validate import validate_layout

    store = _open(args.config, _options(args.storage_option), check_data=False)
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


def _convert_func(args: argparse.Namespace, options: dict[str, Any]) -> tuple[Any, str]:
    """The built-in transform for ``--to``/``--out`` and the new config's path.

    ``--out`` is checked and normalized before anything is read or written.
    """
    from shardedstore.shards.prefixes import check_path_prefix, check_url_prefix
    from shardedstore.shards.transforms import (
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
    except OutputError as error:
        raise _UsageError(str(error)) from None
    if args.to == "zip":
        func = to_zip_store_with_prefix(
            out, compression=args.compression, include_stray=args.include_stray
        )
    else:
        func = to_directory_store_with_prefix(out, include_stray=args.include_stray)
    return func, f"{out}.json"


def _require(module: str, what: str, extra: str) -> None:
    """Fail in one line, before anything runs, when ``what`` needs a ``module`` not installed."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise _UsageError(f'{what}: pip install "shardedstore[{extra}]"') from None


@contextlib.contextmanager
def _executor(args: argparse.Namespace) -> Iterator[Executor]:
    """The executor ``--scheduler`` (a dask.distributed cluster) or ``-j`` asks for."""
    from concurrent.futures import ThreadPoolExecutor

    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)  # type: ignore[no-untyped-call]
        try:
            yield client.get_executor()  # type: ignore[no-untyped-call]
        finally:
            client.close()  # type: ignore[no-untyped-call]
        return
    executor = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _cmd_convert(args: argparse.Namespace) -> int:
    import warnings

    from shardedstore.errors import StrayKeysWarning
    from shardedstore.shards.transforms import map_shards
    from shardedstore.shards.verify import verify_conversion

    if args.scheduler:
        _require("distributed", "--scheduler needs dask.distributed", "dask")
    options = _options(args.storage_option)
    func, config_path = _convert_func(args, options)
    # One conversion per output: held from before the source is read until the new
    # config is written and verified.
    with func.lock_output():
        source = _open(args.config)
        with _executor(args) as executor, warnings.catch_warnings(record=True) as caught:
            start = time.perf_counter()  # once connected to a --scheduler
            warnings.simplefilter("always", StrayKeysWarning)
            converted = map_shards(
                source,
                func,
                executor=executor,
                progress=None if not args.quiet else False,
                output_locked=True,
            )
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


def _cmd_import(args: argparse.Namespace) -> int:
    from shardedstore.shards.importing import import_zarr

    summary = import_zarr(
        args.source,
        args.config,
        jobs=args.jobs,
        progress=None if not args.quiet else False,
        verify=not args.no_verify,
        source_options=_options(args.source_option) or None,
        storage_options=_options(args.storage_option) or None,
        allow_outside=args.allow_outside,
        partial=args.partial,
    )
    if args.json:
        document = {"source": args.source, "config": args.config, **vars(summary)}
        _emit(json.dumps({**document, "seconds": round(summary.seconds, 3)}, indent=2))
        return 0
    text = (
        f"imported {args.source} -> {args.config} in {summary.seconds:.1f} s: "
        f"{summary.keys} keys ({summary.documents} metadata documents + {summary.chunks} "
        f"chunks), {_size(summary.bytes)}; {summary.copied} copied, {summary.skipped} "
        "already in place"
    )
    if summary.verified:
        text += "; verified: identical (crc32)"
    _emit(text)
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    from shardedstore.cli.init import init_layout, layout_rows

    try:
        config = init_layout(
            args.config,
            args.base,
            args.mount or (),
            args.array_shards or (),
            force=args.force,
            allow_outside=args.allow_outside,
            storage_options=_options(args.storage_option) or None,
        )
    except ArgumentError as err:
        raise _UsageError(str(err)) from None
    if args.json:
        _emit(json.dumps({"config": args.config, "layout": config}, indent=2))
        return 0
    opener = f"shardedstore.open({args.config!r}, mode='r+'"
    opener += ", allow_outside=True)" if args.allow_outside else ")"
    rows = [("store", "type", "location (paths relative to the config's folder)")]
    lines = [f"wrote {args.config}", _table([*rows, *layout_rows(config)], right=0)]
    lines.append(f"writers open it with {opener}; stores are created on first write")
    _emit("\n".join(lines))
    return 0


def _open_source(source: str, options: dict[str, Any]) -> Any:
    """A layout config (``.json``) as its layout, else the zarr store at a path or URL."""
    if source.endswith(".json"):
        return _open(source, options or None)
    from shardedstore.shards.importing import open_source

    return open_source(source, options or None, what="SOURCE")


def _cmd_chunks(args: argparse.Namespace) -> int:
    from shardedstore.table.chunks import chunk_table, require_pyarrow
    from shardedstore.table.parquet import write_chunk_table

    require_pyarrow()
    if args.sql:
        _require("duckdb", "--sql needs DuckDB", "duckdb")
    if args.scheduler:
        _require("distributed", "--scheduler needs dask.distributed", "dask")
    histogram = None
    if args.histogram:
        histogram = tuple(part.strip() for part in args.histogram.split(","))
    options = _options(args.storage_option)
    store = _open_source(args.source, options)
    with _executor(args) as executor:
        start = time.perf_counter()  # once connected to a --scheduler
        common: dict[str, Any] = {
            "stats": args.stats,
            "histogram": histogram,
            "missing": args.missing,
            "executor": executor,
            "progress": None if not args.quiet else False,
        }
        if args.out:
            written = write_chunk_table(
                store, args.out, args.array, shards_per_file=args.shards_per_file, **common
            )
        else:
            table = chunk_table(store, args.array, **common)
    elapsed = time.perf_counter() - start
    if args.sql:
        import duckdb

        connection = duckdb.connect()
        if args.out:
            pattern = os.path.join(args.out, "**", "*.parquet").replace("'", "''")
            connection.execute(
                "CREATE VIEW chunks AS SELECT * FROM read_parquet("
                f"'{pattern}', hive_partitioning = true, hive_types = {{'array': VARCHAR}}, "
                "union_by_name = true)"
            )
        else:
            connection.register("chunks", table)
        relation: Any = connection.sql(args.sql)  # None for a statement without rows
        if relation is None:
            return 0  # a statement without a result
        names = list(relation.columns)
        found = relation.fetchall()
        if args.json:
            rows = [dict(zip(names, row, strict=True)) for row in found]
            _emit(_json_rows(rows))
        else:
            shown = [tuple(names), *(tuple(_cell(v) for v in row) for row in found)]
            _emit(_table(shown, right=0) + f"\n({len(found)} row(s))")
        return 0
    if args.out:
        summary = {
            "out": args.out,
            "written": list(written.written),
            "unchanged": list(written.unchanged),
            "removed": list(written.removed),
            "rows": written.rows,
            "seconds": round(elapsed, 3),
        }
        if args.json:
            _emit(json.dumps(summary, indent=2))
        else:
            _emit(
                f"wrote {len(written.written)} file(s) ({written.rows} rows), kept "
                f"{len(written.unchanged)} unchanged, removed {len(written.removed)}: "
                f"{args.out} in {elapsed:.1f} s (query: SELECT * FROM "
                f"read_parquet('{args.out}/**/*.parquet', hive_partitioning = true, "
                "hive_types = {'array': VARCHAR}))"
            )
        return 0
    if args.json:
        _emit(_json_rows(table.to_pylist()))
        return 0
    names = [name for name in table.column_names if table.column(name).null_count < len(table)]
    shown = [tuple(names)]
    shown += [tuple(_cell(row[name]) for name in names) for row in table.to_pylist()]
    _emit(_table(shown, right=0) + f"\n({table.num_rows} chunk(s))")
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from shardedstore.table.sql import sql

    if args.engine == "duckdb":
        _require("duckdb", "sql needs DuckDB", "duckdb")
    else:
        _require("datafusion", "sql --engine datafusion needs DataFusion", "datafusion")
    tables: dict[str, list[str]] = {}
    for spec in args.table or []:
        name, sep, members = spec.partition("=")
        if not sep or not name or not members:
            raise _UsageError(f"--table expects NAME=ARRAY,ARRAY..., got {spec!r}")
        tables[name] = [m.strip() for m in members.split(",") if m.strip()]
    statistics: Any = None
    if args.statistics == "none":
        statistics = False
    elif args.statistics:
        statistics = args.statistics
    store = _open_source(args.source, _options(args.storage_option))
    result = sql(
        store,
        args.query,
        engine=args.engine,
        arrays=args.array,
        tables=tables or None,
        coords=not args.no_coords,
        statistics=statistics,
        chunk_table_dir=args.chunk_table,
    )
    rows = result.to_pylist()
    if args.json:
        _emit(_json_rows(rows))
        return 0
    names = result.column_names
    shown = [tuple(names), *(tuple(_cell(row[name]) for name in names) for row in rows)]
    _emit((_table(shown, right=0) + "\n" if names else "") + f"({len(rows)} row(s))")
    return 0


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    return value


def _json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows of a table as strict JSON (NaN and infinities as null)."""
    return json.dumps(_json_safe(rows), indent=2, default=str, allow_nan=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _cmd_demo(args: argparse.Namespace) -> int:
    from shardedstore.cli.demo import run_demo

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

    def storage_option(sub: argparse.ArgumentParser, what: str, name: str = "storage") -> None:
        sub.add_argument(
            f"--{name}-option",
            metavar="KEY=VALUE",
            action="append",
            help=f"fsspec option for {what} (repeatable)",
        )

    def parallel(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-j", "--jobs", type=int, default=4, metavar="N", help="parallel workers (default 4)"
        )
        sub.add_argument(
            "--scheduler", metavar="ADDRESS", help="run on this dask.distributed scheduler instead"
        )

    def config_args(sub: argparse.ArgumentParser, json_help: str) -> None:
        sub.add_argument("config", metavar="CONFIG", help="layout config file (path or URL)")
        sub.add_argument("--json", action="store_true", help=json_help)
        storage_option(sub, "reading CONFIG from a URL")

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
        "problems otherwise (an array's dims that contradict its data included). Warnings "
        "(array shards missing between others, an array with no array shard at all, array "
        "shards beyond the array's shape, zips being written or left by a dead writer) do "
        "not make a layout invalid.",
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
    parallel(convert)
    convert.add_argument(
        "--compression",
        default="stored",
        choices=["stored", "deflated", "bzip2", "lzma"],
        help="zip compression (default stored: chunks are usually compressed already)",
    )
    storage_option(convert, "--to url outputs, e.g. endpoint_url=http://...")
    convert.add_argument(
        "--include-stray",
        action="store_true",
        help="also copy stray keys and array shards outside the array's shape, which no "
        "reader of the layout reaches (by default they are reported and left out)",
    )
    convert.add_argument("--no-verify", action="store_true", help="skip the checksum comparison")
    convert.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    convert.set_defaults(func=_cmd_convert)

    imports = command(
        "import",
        "copy a plain Zarr (directory, zip or URL) into an existing layout's stores",
        "Copy every key of SRC, a plain Zarr hierarchy (a directory, a zip file or a URL), "
        "into the stores of the layout CONFIG (opened for writing), each to the store the "
        "layout routes it to: for writers that only write to a path. Metadata first (each "
        "mount and array shard of the layout must name a node of SRC unless --partial, and "
        "the arrays the layout shards are checked against SRC, before anything is written), "
        "then the chunks, -j at a time; a key already in the layout is skipped if it holds "
        "the same bytes and refused if not (nothing is overwritten); zip shards are "
        "committed at the end, all or none. Re-running after a failure or Ctrl-C finishes "
        "the job. Then every key is read back from the layout and compared with SRC "
        "(crc32).",
    )
    imports.add_argument(
        "source", metavar="SRC", help="the Zarr to copy: a directory, a zip file or a URL"
    )
    imports.add_argument(
        "config", metavar="CONFIG", help="the layout's config file (path or URL) to copy into"
    )
    imports.add_argument(
        "-j", "--jobs", type=int, default=16, metavar="N", help="keys copied at once (default 16)"
    )
    storage_option(imports, "a SRC given as a URL", name="source")
    storage_option(imports, "reading CONFIG from a URL")
    imports.add_argument(
        "--allow-outside",
        action="store_true",
        help="let CONFIG name stores outside its own folder (as shardedstore.open allows)",
    )
    imports.add_argument(
        "--partial",
        action="store_true",
        help="import a SRC that fills only some of the layout's mounts and array shards",
    )
    imports.add_argument("--no-verify", action="store_true", help="skip the checksum comparison")
    imports.add_argument("--json", action="store_true", help="print the summary as JSON")
    imports.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    imports.set_defaults(func=_cmd_import)

    init = command(
        "init",
        "write a layout config (base, mounts, array shards) for writers to start from",
        "Write a layout config to CONFIG, a path or URL (refused if it exists, unless "
        "--force), checked as shardedstore.open(CONFIG, mode='r+') checks it: stores that "
        "overlap, or lie outside CONFIG's folder without --allow-outside, are refused. "
        "STORE is local:PATH, zip:PATH, fsspec:URL, obstore:URL, a URL (fsspec), a path "
        "(.zip: a zip, else a directory) or a store's config as JSON. Relative paths are "
        "relative to the working directory and written relative to CONFIG's folder. Only "
        "the config is written: stores are created by the first write to them.",
    )
    init.add_argument("config", metavar="CONFIG", help="config file to write (path or URL)")
    init.add_argument("--base", required=True, metavar="STORE", help="the base store")
    init.add_argument(
        "--mount",
        action="append",
        metavar="PATH=STORE",
        help="put the group or array at PATH in STORE (repeatable)",
    )
    init.add_argument(
        "--array-shards",
        action="append",
        metavar="PATH=DIMS:TEMPLATE",
        help="one store per chunk index along the first DIMS dimensions of the array at "
        "PATH; TEMPLATE is a STORE with {chunk} in its path, e.g. "
        "temperature=1:zip:temperature/{chunk}.zarr.zip (repeatable)",
    )
    init.add_argument("--force", action="store_true", help="replace CONFIG if it exists")
    init.add_argument(
        "--allow-outside",
        action="store_true",
        help="accept stores outside CONFIG's folder (writers need allow_outside=True)",
    )
    init.add_argument("--json", action="store_true", help="print the config written as JSON")
    storage_option(init, "writing CONFIG to a URL")
    init.set_defaults(func=_cmd_init)

    chunks = command(
        "chunks",
        "one row per stored chunk (array, shard, indices, key, bytes, statistics)",
        "Build the chunk table of SOURCE (a layout config .json, or any zarr store: a "
        "directory, a zip or a URL): one row per stored chunk with its array, shard, "
        "chunk indices, region, key and stored bytes, and with --stats value statistics "
        "of the decoded chunk. Shards are read in parallel (-j threads, or a dask cluster "
        "with --scheduler). With --out, write a Parquet dataset (one file per shard, "
        "hive-partitioned by array) that a re-run updates incrementally: only shards "
        "whose chunks changed are read again. --sql queries the result with DuckDB as "
        "the table chunks.",
    )
    chunks.add_argument(
        "source", metavar="SOURCE", help="layout config (.json), or a zarr directory, zip or URL"
    )
    chunks.add_argument(
        "--array", action="append", metavar="PATH", help="only this array (repeatable)"
    )
    chunks.add_argument(
        "--stats",
        default="",
        metavar="LIST",
        help="comma-separated statistics: min,max,mean,std,count,nan_count,fill_count or all",
    )
    chunks.add_argument(
        "--histogram", metavar="LO,HI,BINS", help="add counts in BINS fixed bins over [LO, HI]"
    )
    chunks.add_argument(
        "--missing",
        action="store_true",
        help="also list chunks that are not stored (they read as the fill value)",
    )
    chunks.add_argument(
        "--out", metavar="DIR", help="write a Parquet dataset to DIR (updated incrementally)"
    )
    parallel(chunks)
    chunks.add_argument(
        "--sql", metavar="QUERY", help="run QUERY with DuckDB on the table, named chunks"
    )
    chunks.add_argument("--json", action="store_true", help="print JSON")
    storage_option(chunks, "a SOURCE given as a URL")
    chunks.add_argument(
        "--shards-per-file",
        type=int,
        default=256,
        metavar="N",
        help="array shards whose rows share one file of --out (default 256)",
    )
    chunks.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    chunks.set_defaults(func=_cmd_chunks)

    query = command(
        "sql",
        "query the arrays' values and the chunk table with SQL (DuckDB or DataFusion)",
        "Run QUERY over SOURCE (a layout config .json, or any zarr store): every array is "
        'a table named by its path (quote it: "sim/temperature"), one row per cell with a '
        "column per dimension (its coordinate, else its index; the index of a dimension "
        "with a coordinate in DIM_index) and the values in a column named after the "
        "array; chunks is the chunk table. Filters on dimensions and on values skip "
        "chunks before they are read (value statistics from --statistics DIR, else "
        "computed as chunks are read).",
    )
    query.add_argument(
        "source", metavar="SOURCE", help="layout config (.json), or a zarr directory, zip or URL"
    )
    query.add_argument("query", metavar="QUERY", help="the SQL query")
    query.add_argument(
        "--engine",
        choices=["duckdb", "datafusion"],
        default="duckdb",
        help="the SQL engine (default duckdb)",
    )
    query.add_argument(
        "--array", action="append", metavar="PATH", help="only this array as a table (repeatable)"
    )
    query.add_argument(
        "--table",
        action="append",
        metavar="NAME=ARRAY,ARRAY",
        help="a table of arrays sharing their dimensions, one column each (repeatable)",
    )
    query.add_argument(
        "--chunk-table",
        metavar="DIR",
        help="a chunk table written by chunks --out, as the table chunks (default: computed)",
    )
    query.add_argument(
        "--statistics",
        metavar="DIR|none",
        help="chunk statistics for pruning by value: a chunk table written with "
        "--stats min,max,nan_count, or none (default: computed as chunks are read)",
    )
    query.add_argument(
        "--no-coords",
        action="store_true",
        help="dimension columns hold indices, not coordinate values",
    )
    query.add_argument("--json", action="store_true", help="print JSON")
    storage_option(query, "a SOURCE given as a URL")
    query.set_defaults(func=_cmd_sql)

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


def _interrupt_again(previous: Any, unraisable: Any) -> None:
    """``sys.unraisablehook`` while the console script runs.

    A Ctrl-C that lands in a callback Python runs for itself (an import lock's, seen
    while a command's imports run) cannot be raised there: Python prints it as
    "Exception ignored in ..." and goes on, and the command would run to its end.
    It is sent again instead, from another thread 50 ms later, once this callback is
    over, to stop the command where it can (and again, should it land in a callback
    once more).
    """
    if issubclass(unraisable.exc_type, KeyboardInterrupt) and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        main_thread = threading.main_thread().ident
        assert main_thread is not None
        again: Callable[[], object]
        if hasattr(signal, "pthread_kill"):  # wakes a main thread that waits, too
            again = functools.partial(signal.pthread_kill, main_thread, signal.SIGINT)
        else:  # pragma: no cover - Windows
            import _thread

            again = _thread.interrupt_main
        later = threading.Timer(0.05, again)  # once this callback has returned
        later.daemon = True
        later.start()
        return
    previous(unraisable)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    A Ctrl-C at any point, the imports of the command included, exits 130 with one
    line (``shardedstore`` imports nothing heavy before this runs).
    """
    previous = sys.unraisablehook
    script = argv is None and threading.current_thread() is threading.main_thread()
    if script:  # the process is the command's own
        sys.unraisablehook = functools.partial(_interrupt_again, previous)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        words = sys.argv[1:] if argv is None else list(argv)
        command = next((word for word in words if not word.startswith("-")), "")
        hint = ""
        if command == "convert":
            hint = "; finished shards are complete: run the same command again to finish"
        elif command == "import":
            hint = "; run the same command again to finish (what is in place is skipped)"
        name = f"shardedstore {command}" if command else "shardedstore"
        print(f"{name}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if script:
            sys.unraisablehook = previous


_COLLECTIONS = threading.Lock()
_running: list[tuple[int, int, int]] = []  # the thresholds before, once per command running


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run a command with the cyclic garbage collector started less often.

    A command over 10^5 shards makes millions of short-lived objects, few of them in
    cycles; at Python's default thresholds the collector's passes took a third of
    ``chunks`` at 10^5 shards (56 s -> 39 s without them). The command line owns its
    process, so it collects every 50,000 allocations instead of 700, while a command
    runs; the thresholds are restored when the last command running in the process ends
    (``main`` is also called in-process, maybe from several threads).
    """
    with _COLLECTIONS:
        if not _running:
            before = gc.get_threshold()
            gc.set_threshold(50_000, 20, 20)
        else:
            before = _running[0]
        _running.append(before)
    try:
        yield
    finally:
        with _COLLECTIONS:
            _running.pop()
            if not _running:
                gc.set_threshold(*before)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", 1) < 1:
        print(f"shardedstore {args.command}: error: -j must be at least 1", file=sys.stderr)
        return 2
    try:
        with _fewer_collections():
            code: int = args.func(args)
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
