"""Check a layout and report every problem it can reach: ``shardedstore validate``.

Problems make a layout invalid; warnings describe a state that legitimate operations
leave and readers cope with. Every shard is looked at whatever happened to the others:
a missing mount, an unreachable endpoint or a truncated zip is one finding, never the
end of the check.

Problems (``check``):

- ``missing``: a store the layout names is not there (an empty object-store prefix
  counts: object stores have no directories).
- ``unreadable``: a store that cannot be opened or read (a corrupt zip, a bucket that
  does not exist, a refused connection, no answer within the time limit).
- ``stray-keys``: keys that no reader of the layout reaches (``convert`` leaves them out).
- ``metadata``: array metadata that cannot be sharded, array shards without metadata in
  base, array-shard metadata that differs from what base implies.
- ``dims``: an array's ``dims`` in the config contradict its data (its metadata in base,
  or the names of its array shards): opening the layout refuses it
  (:mod:`shardedstore.store.opencheck`).

Warnings:

- ``gaps``: array shards missing between existing ones (a deleted time step); those
  chunks read as the fill value.
- ``no-shards``: an array whose shape along the sharded dimensions is not empty has no
  array shard at all: every chunk reads as the fill value. An array whose metadata was
  written before its data is so until the data comes; a typo in the shard template is
  so for good.
- ``beyond-shape``: array shards beyond the array's shape along the sharded dimensions:
  those holding chunks were written by an append (or a write) that did not finish,
  before the array's metadata was resized, or kept by a resize that shrank the array;
  those holding none are left by a resize that shrank it. No reader reaches them and
  they can be removed (``convert`` leaves them out).
- ``zip-writer``: a zip shard being written; readers see it as it was until the writer
  closes it.
- ``zip-leftovers``: a lock file, staging directory or partial zip of a writer that
  stopped without closing; the zip is as it was before that writer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import ZipStore

from shardedstore.backends.documents import is_metadata_document
from shardedstore.backends.handles import gather_bounded
from shardedstore.backends.inventory import Inventory, LocalRoot, inventories
from shardedstore.backends.probe import error_text, reach
from shardedstore.backends.registry import facts_of
from shardedstore.backends.timeouts import resolve_timeout
from shardedstore.backends.zips import ZipWriter, zip_writers
from shardedstore.backends.zipstore import leftover_names
from shardedstore.errors import LayoutError, json_path
from shardedstore.shards.listing import base_and_mounts, index_key, iter_shards
from shardedstore.store.factories import (
    CHUNK_PLACEHOLDER,
    ArrayShardDirectoryFactory,
    ArrayShardTemplateFactory,
    factory_text,
    is_chunk_index,
)
from shardedstore.store.metadata import ShardedArrayLayout
from shardedstore.store.opencheck import dims_mismatches
from shardedstore.store.ownkeys import ArrayShardKeys, KeyVerdicts
from shardedstore.store.routing import CHUNK, MOUNT

if TYPE_CHECKING:
    from shardedstore.shards.listing import Shard, ShardListing
    from shardedstore.store.sharded import ShardedStore

__all__ = ["ArrayReport", "Finding", "ShardRef", "Validation", "validate_layout"]

GAP_EXAMPLES = 1000
"""Most gap chunk indices listed in an :class:`ArrayReport` (the count is exact)."""

_SHOWN = 5


@dataclass(frozen=True)
class ShardRef:
    """What a finding is about: a shard, or an array as a whole.

    Attributes
    ----------
    kind
        ``"base"``, ``"mount"``, ``"array shard"`` or ``"array"``.
    path
        The mount or array path (``""`` for the base).
    chunk_index
        The array shard's chunk index, for ``"array shard"``.
    """

    kind: Literal["base", "mount", "array shard", "array"]
    path: str = ""
    chunk_index: str | None = None

    def __str__(self) -> str:
        if self.kind == "base":
            return "base"
        if self.kind == "array shard":
            return f"array shard {self.path!r} chunk {self.chunk_index}"
        return f"{self.kind} {self.path!r}"


@dataclass(frozen=True)
class Finding:
    """One problem or warning: about what, which check, and the full message."""

    shard: ShardRef
    check: str
    detail: str

    @property
    def message(self) -> str:
        return f"{self.shard}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        shard = {
            "kind": self.shard.kind,
            "path": self.shard.path,
            "chunk_index": self.shard.chunk_index,
        }
        return {"shard": shard, "check": self.check, "message": self.message}


@dataclass
class ArrayReport:
    """The array shards of one array-sharded array.

    Attributes
    ----------
    dims
        Number of sharded dimensions.
    shape
        The array's shape along the sharded dimensions (None: no usable metadata).
    shards
        Array shards that exist within that shape (readable or not).
    gaps
        Number of array shards missing between existing ones: indices within the
        bounding box of the existing shards (from index 0) that have no shard.
    gap_indices
        The first :data:`GAP_EXAMPLES` of them.
    beyond_shape
        Chunk indices of the array shards beyond the shape, all of them.
    holding_chunks
        How many of those still hold chunks (they would read again if the array grew).
    """

    dims: int
    shape: list[int] | None = None
    shards: int = 0
    gaps: int = 0
    gap_indices: list[str] = field(default_factory=list)
    beyond_shape: list[str] = field(default_factory=list)
    holding_chunks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "shape": self.shape,
            "shards": self.shards,
            "gaps": {"count": self.gaps, "chunk_indices": self.gap_indices},
            "beyond_shape": {
                "count": len(self.beyond_shape),
                "chunk_indices": self.beyond_shape,
                "holding_chunks": self.holding_chunks,
            },
        }


@dataclass
class Validation:
    """What ``validate`` found: problems (invalid), warnings, and each sharded array."""

    problems: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    arrays: dict[str, ArrayReport] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.problems

    def problem(self, shard: ShardRef, check: str, detail: str) -> None:
        self.problems.append(Finding(shard, check, detail))

    def warning(self, shard: ShardRef, check: str, detail: str) -> None:
        self.warnings.append(Finding(shard, check, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "problems": [finding.as_dict() for finding in self.problems],
            "warnings": [finding.as_dict() for finding in self.warnings],
            "arrays": {path: report.as_dict() for path, report in sorted(self.arrays.items())},
        }


# ----------------------------------------------------------------- helpers


def _chunks_text(indices: list[str]) -> str:
    """``chunk 5`` or ``chunks 8, 9, 10, 11`` or ``chunks 1, 2, 3, 4, 5 and 7 more``."""
    shown = ", ".join(indices[:_SHOWN])
    more = f" and {len(indices) - _SHOWN} more" if len(indices) > _SHOWN else ""
    return f"{'chunk' if len(indices) == 1 else 'chunks'} {shown}{more}"


def _gaps(existing: Iterable[tuple[int, ...]], dims: int) -> tuple[int, list[str]]:
    """Indices missing in the box ``[0, max]`` per dimension around ``existing``.

    The count is arithmetic; listing the first few walks the box in order and stops
    after :data:`GAP_EXAMPLES`, so it costs O(existing + examples), not O(box).
    """
    present = set(existing)
    if not present:
        return 0, []
    upper = [max(index[d] for index in present) + 1 for d in range(dims)]
    count = math.prod(upper) - len(present)
    examples: list[str] = []
    if count:
        for index in itertools.product(*(range(n) for n in upper)):
            if index not in present:
                examples.append(".".join(map(str, index)))
                if len(examples) == GAP_EXAMPLES or len(examples) == count:
                    break
    return count, examples


async def _documents(store: Store, names: Iterable[str]) -> dict[str, Any]:
    names = list(names)
    prototype = default_buffer_prototype()
    values = await asyncio.gather(*(store.get(name, prototype) for name in names))
    found: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        if value is not None:
            try:
                found[name] = json.loads(value.to_bytes())
            except ValueError:
                found[name] = value.to_bytes()
    return found


def _unreachable(
    validation: Validation, shard: ShardRef, url: str, state: str, error: str | None
) -> None:
    if state == "missing":
        validation.problem(shard, "missing", f"does not exist ({url})")
    else:
        validation.problem(shard, "unreadable", f"cannot be read ({url}): {error}")


# ------------------------------------------------------------ array shards


@dataclass(slots=True)
class _ShardOutcome:  # one per array shard: small (10^6 of them are held)
    index: str
    state: Literal["ok", "missing", "unreadable"]
    findings: tuple[Finding, ...] = ()
    holds_chunks: bool = False
    beyond: bool = False  # beyond the array's shape along the sharded dimensions


def _check_array_shard(
    shard: Shard,
    place: Store | LocalRoot,
    found: Inventory,
    owns: KeyVerdicts[bool] | None,
    expected: dict[str, tuple[bytes, Any]],
) -> _ShardOutcome:
    """One array shard, from what it holds: there and readable, its metadata, its stray
    keys (``owns``: which keys a reader reaches, None: none)."""
    index = shard.chunk_index or ""
    ref = ShardRef("array shard", shard.path, index)
    if found.error is not None:
        url = (
            f"{'file' if place[0] == 'directory' else 'zip'}://{place[1]}"
            if isinstance(place, tuple)
            else facts_of(place).url
        )
        detail = f"cannot be read ({url}): {error_text(found.error)}"
        finding = Finding(ref, "unreadable", detail)
        return _ShardOutcome(index, "unreadable", (finding,), beyond=shard.beyond_shape)
    if not found.exists:
        return _ShardOutcome(index, "missing", beyond=shard.beyond_shape)
    outcome = _ShardOutcome(index, "ok", beyond=shard.beyond_shape)
    if owns is None:
        return outcome
    if shard.beyond_shape:
        outcome.holds_chunks = any(
            owns(key) and not is_metadata_document(key) for key in found.sizes
        )
        return outcome
    findings: list[Finding] = []
    for name, (written, doc) in expected.items():
        text = found.documents.get(name)
        try:  # as written (the common case), else the same JSON written otherwise
            same = text is not None and (text == written or json.loads(text) == doc)
        except ValueError:
            same = False
        if not same:
            state = "missing" if text is None else "differs from what base implies"
            findings.append(Finding(ref, "metadata", f"{name} {state}"))
    stray = sorted(key for key in found.sizes if not owns(key))
    if stray:
        findings.append(Finding(ref, "stray-keys", f"{len(stray)} stray key(s), e.g. {stray[:3]}"))
    if findings:
        outcome.findings = tuple(findings)
    return outcome


_WINDOW = 4096
"""Array shards whose stores are open at once (memory stays bounded whatever their number)."""


async def _check_array_shards(
    shards: Iterable[Shard], layout: ShardedArrayLayout | None, timeout: float | None
) -> list[_ShardOutcome]:
    """Every array shard of one array, read a window at a time (a shard on local disk by
    its place alone)."""
    expected = (
        {}
        if layout is None
        else {name: (doc, json.loads(doc)) for name, doc in layout.shard_documents.items()}
    )
    # One verdict per key name, not per shard: the shards hold the same few names.
    owns = None if layout is None else KeyVerdicts(ArrayShardKeys.of(layout).owns)
    outcomes: list[_ShardOutcome] = []
    shards = iter(shards)
    while window := list(itertools.islice(shards, _WINDOW)):
        places: list[Store | LocalRoot] = []
        for shard in window:
            root = shard.local_root
            places.append(root if root is not None else shard.store)
        try:
            seen = await inventories(places, list(expected), timeout, sizes=False)
        finally:
            for place in places:
                if not isinstance(place, tuple):
                    place.close()  # a handle of its own: 10^5 zips must not stay open
        for shard, place, found in zip(window, places, seen, strict=True):
            outcomes.append(_check_array_shard(shard, place, found, owns, expected))
    return outcomes


async def _check_array(
    store: ShardedStore,
    listing: ShardListing,
    shards: Iterator[Shard],
    path: str,
    validation: Validation,
    base_ok: bool,
    timeout: float | None,
    dims_problem: bool,
) -> list[str]:
    """Check the array shards of ``path``; returns the chunk indices of those that exist.

    ``dims_problem``: the array's dims contradict its data (reported already).
    """

    dims, factory = store.array_shards[path]
    report = validation.arrays[path] = ArrayReport(dims)
    array = ShardRef("array", path)
    listed = listing.arrays[path]
    layout: ShardedArrayLayout | None = None
    if base_ok:
        error = listed.layout_error
        if isinstance(error, LayoutError):
            if not dims_problem:  # else said already, with what the data says instead
                validation.problem(
                    array, "metadata", f"metadata in base cannot be sharded: {error}"
                )
        elif error is not None:  # base answered its probe, then failed
            validation.problem(
                array, "unreadable", f"metadata in base cannot be read: {error_text(error)}"
            )
        layout = listed.layout
    if listed.listing_error is not None:  # the template's directory or prefix cannot be listed
        validation.problem(
            array,
            "unreadable",
            f"its array shards cannot be listed: {error_text(listed.listing_error)}",
        )
        return []
    shape = None if layout is None else list(layout.shape[:dims])
    report.shape = shape

    def beyond(index: str) -> bool:
        return shape is not None and any(
            i >= n for i, n in zip(index_key(index), shape, strict=False)
        )

    outcomes = await _check_array_shards(shards, layout, timeout)  # in the listing's order
    unmade = [(index, error) for at, index, error in listing.unmade if at == path]
    for index, error in unmade:  # the factory failed for this index
        detail = f"cannot be made: {error_text(error)}"
        ref = ShardRef("array shard", path, index)
        outcome = _ShardOutcome(index, "unreadable", (Finding(ref, "unreadable", detail),))
        outcome.beyond = beyond(index)
        outcomes.append(outcome)
    if unmade:
        outcomes.sort(key=lambda outcome: index_key(outcome.index))
    named = set(getattr(factory, "shards", None) or {})
    existing: list[str] = []
    for outcome in outcomes:
        validation.problems.extend(outcome.findings)
        if outcome.state == "missing":
            if outcome.index in named:  # the config names this shard's store
                shard = ShardRef("array shard", path, outcome.index)
                url = facts_of(factory(outcome.index)).url
                validation.problem(shard, "missing", f"does not exist ({url})")
            continue  # otherwise: no shard at this index (a factory that cannot list)
        if outcome.beyond:
            report.beyond_shape.append(outcome.index)
            report.holding_chunks += outcome.holds_chunks
        else:
            existing.append(outcome.index)
    report.shards = len(existing)
    if layout is None:
        if existing and base_ok and not any(p.shard == array for p in validation.problems):
            validation.problem(
                array,
                "metadata",
                f"{len(existing)} array shard(s) exist but base has no metadata for the array",
            )
        return existing
    if not existing and shape and math.prod(shape) and not dims_problem:
        beyond_only = (
            f" ({len(report.beyond_shape)} beyond its shape)" if report.beyond_shape else ""
        )
        validation.warning(
            array,
            "no-shards",
            f"none of its array shards exist{beyond_only}, but its shape along the sharded "
            f"dimension(s) is {shape}: every chunk reads as the fill value. Check the shard "
            f"template in the config for a typo ({factory_text(factory)}); an array whose "
            "metadata was written before its data is so until the data is written",
        )
    report.gaps, report.gap_indices = _gaps((index_key(i) for i in existing), dims)
    if report.gaps:
        validation.warning(
            array,
            "gaps",
            f"{report.gaps} array shard(s) missing between existing ones, "
            f"{_chunks_text(report.gap_indices)}: those chunks read as the fill value",
        )
    if report.beyond_shape:
        validation.warning(
            array,
            "beyond-shape",
            f"{len(report.beyond_shape)} array shard(s) beyond the array's shape {shape} "
            f"along the sharded dimension(s), {_chunks_text(report.beyond_shape)}"
            f"{_beyond_cause(len(report.beyond_shape), report.holding_chunks)}: no reader "
            "reaches them and they can be removed (convert leaves them out)",
        )
    return existing + report.beyond_shape


def _beyond_cause(count: int, holding: int) -> str:
    """How array shards beyond the shape came to be, from whether they hold chunks.

    A shrinking resize deletes the chunks outside the new shape and leaves the shards'
    metadata; a writer that stopped between writing new shards and resizing the
    array's metadata (killed before its base was committed, say) leaves chunks.
    """
    unfinished = (
        "written by an append or a write that did not finish (a writer that stopped "
        "before the array's metadata was resized), or kept by a resize that shrank the "
        "array; they would read again if the array grew back"
    )
    emptied = "left by a resize that shrank the array"
    if holding == count:
        return f", which hold chunks: {unfinished}"
    if not holding:
        return f", which hold no chunks: {emptied}"
    return f"; {holding} of them hold chunks: {unfinished}; the others hold none: {emptied}"


class _PerArray:
    """The array shards of an iteration (:func:`iter_shards`), one array after the
    other, in path order."""

    def __init__(self, shards: Iterator[Shard]) -> None:
        self._shards = (shard for shard in shards if shard.kind == "array shard")
        self._next = next(self._shards, None)

    def of(self, path: str) -> Iterator[Shard]:
        """The shards of the array at ``path`` (the arrays asked for in path order).

        The iteration has passed every chunk index of the array when this ends, so
        the listing's ``unmade`` holds those of the array.
        """
        while self._next is not None and self._next.path == path:
            shard = self._next
            self._next = next(self._shards, None)
            yield shard


# --------------------------------------------------------------- zip writers


_Matcher = tuple[Callable[[str], bool], Callable[[str], ShardRef]]
"""Which zip names in a directory belong to the layout, and the shard each one is."""


def _template_matcher(path: str, leaf: str) -> _Matcher:
    """Zip names of the array shards of ``path`` from a template's last part."""

    head, _, tail = leaf.partition(CHUNK_PLACEHOLDER)

    def index_of(name: str) -> str | None:
        if len(name) <= len(head) + len(tail) or not name.startswith(head):
            return None
        if not name.endswith(tail):
            return None
        index = name[len(head) : len(name) - len(tail)]
        return index if is_chunk_index(index) else None

    return (
        lambda name: index_of(name) is not None,
        lambda name: ShardRef("array shard", path, index_of(name)),
    )


def _exact_matcher(name: str, ref: ShardRef) -> _Matcher:
    return (lambda found: found == name, lambda _found: ref)


def _zip_places(store: ShardedStore, existing: dict[str, list[str]]) -> dict[Path, list[_Matcher]]:
    """Directories where a layout's zips live (or will), with their matchers.

    A zip template whose last part holds ``{chunk}`` is matched by pattern, which finds
    new array shards being written too; other zip shards by their own names.
    """

    places: dict[Path, list[_Matcher]] = {}

    def add_zip(path: str, ref: ShardRef) -> None:
        real = Path(os.path.realpath(path))  # a writer locks a symlinked zip where it is
        places.setdefault(real.parent, []).append(_exact_matcher(real.name, ref))

    subs = [(ShardRef("base"), store.base)]
    subs += [(ShardRef("mount", path), mount) for path, mount in store.mounts.items()]
    for ref, sub in subs:
        if isinstance(sub, ZipStore):
            add_zip(os.fspath(sub.path), ref)
    for path, (_, factory) in sorted(store.array_shards.items()):
        if isinstance(factory, ArrayShardDirectoryFactory):  # its shards are directories
            continue
        by_name = existing.get(path, [])
        template = getattr(factory, "template", None)
        if isinstance(factory, ArrayShardTemplateFactory) and template is not None:
            parent, _, leaf = str(template.get("path", "")).rpartition("/")
            if template.get("type") != "zip":  # only the shards it names may be zips
                by_name = list(factory.shards)
            elif parent and CHUNK_PLACEHOLDER not in parent:
                real = Path(os.path.realpath(parent))
                places.setdefault(real, []).append(_template_matcher(path, leaf))
                by_name = list(factory.shards)  # the pattern covers the others
        for index in by_name:
            try:
                shard = factory(index)
            except Exception:  # reported by the shard's own check
                continue
            if isinstance(shard, ZipStore):
                add_zip(os.fspath(shard.path), ShardRef("array shard", path, index))
    return places


def _zip_writer_findings(
    store: ShardedStore, existing: dict[str, list[str]], validation: Validation
) -> None:
    """A warning for every zip of the layout being written, or left by a dead writer."""
    seen: set[Path] = set()
    for directory, matchers in _zip_places(store, existing).items():

        def wanted(name: str, matchers: list[_Matcher] = matchers) -> bool:
            return any(match(name) for match, _ in matchers)

        for writer in zip_writers(directory, wanted):
            if writer.zip_path in seen:
                continue
            seen.add(writer.zip_path)
            name = writer.zip_path.name
            ref = next(ref_of(name) for match, ref_of in matchers if match(name))
            _zip_writer_finding(writer, ref, validation)


def _zip_writer_finding(writer: ZipWriter, ref: ShardRef, validation: Validation) -> None:
    if writer.live:
        lock = writer.zip_path.parent / leftover_names(writer.zip_path.name)[0]
        new = "" if writer.zip_path.exists() else " (a new zip, not there until then)"
        validation.warning(
            ref,
            "zip-writer",
            f"being written by {writer.holder} (lock file {lock}): readers see "
            f"{writer.zip_path} as it was until the writer closes it{new}",
        )
        return
    state = (
        "the zip is as it was before that writer"
        if writer.zip_path.exists()
        else "that writer's zip was never written"
    )
    shown = ", ".join(writer.entries[:3]) + (" ..." if len(writer.entries) > 3 else "")
    validation.warning(
        ref,
        "zip-leftovers",
        f"leftovers of a writer that stopped without closing {writer.zip_path.name} "
        f"({shown} in {writer.zip_path.parent}): {state}; the next writer removes them, "
        "or remove them by hand",
    )


# ---------------------------------------------------------------- the layout


async def _check_base(store: ShardedStore, validation: Validation) -> None:
    """Keys in base that no reader reaches: under a mount, or chunks of sharded arrays."""
    hidden: dict[str, list[str]] = {}
    chunks: dict[str, list[str]] = {}
    router = store.router
    async for key in store.base.list():
        try:
            kind, node = router.route(key)[:2]
        except ValueError:
            hidden.setdefault("", []).append(key)
            continue
        if kind == MOUNT:
            hidden.setdefault(node, []).append(key)
        elif kind == CHUNK:
            chunks.setdefault(node, []).append(key)
    base = ShardRef("base")
    for mount, keys in sorted(hidden.items()):
        if not mount:
            detail = f"{len(keys)} key(s) that are not valid Zarr keys, e.g. {sorted(keys)[:3]}"
        else:
            detail = (
                f"{len(keys)} stray key(s) under mount {mount!r}, hidden by it, "
                f"e.g. {sorted(keys)[:3]}"
            )
        validation.problem(base, "stray-keys", detail)
    for path, keys in sorted(chunks.items()):
        validation.problem(
            base,
            "stray-keys",
            f"{len(keys)} stray chunk key(s) of array-sharded {path!r}, hidden by its array "
            f"shards, e.g. {sorted(keys)[:3]}",
        )


async def _validate(store: ShardedStore, timeout: float | None) -> Validation:

    validation = Validation()
    subs = [(ShardRef(shard.kind, shard.path), shard.store) for shard in base_and_mounts(store)]
    reached = await gather_bounded(reach(sub, timeout) for _, sub in subs)
    for (ref, sub), found in zip(subs, reached, strict=True):
        if found.state != "ok":
            _unreachable(validation, ref, facts_of(sub).url, found.state, found.error)
    base_ok = reached[0].state == "ok"
    if base_ok:
        try:
            await _check_base(store, validation)
        except Exception as error:  # base answered its probe, then failed listing
            validation.problem(
                ShardRef("base"),
                "unreadable",
                f"cannot be listed ({facts_of(store.base).url}): {error_text(error)}",
            )
            base_ok = False
    # Array metadata is read from base only when base answered.
    listing, shards = await iter_shards(store, strict=False, metadata=base_ok)
    per_array = _PerArray(shards)  # made as they are checked: 10^6 are never all held
    mismatched = set()
    for mismatch in await dims_mismatches(store, list_remote=True):
        if len(mismatch.at) == 3:  # an array of this layout
            mismatched.add(mismatch.path)
            validation.problem(ShardRef("array", mismatch.path), "dims", mismatch.detail)
        else:  # of a sharded store mounted in it
            where = ShardRef("mount", str(mismatch.at[1]))
            validation.problem(where, "dims", f"{json_path(mismatch.at)}: {mismatch.problem}")
    existing = {
        path: await _check_array(
            store,
            listing,
            per_array.of(path),
            path,
            validation,
            base_ok,
            timeout,
            path in mismatched,
        )
        for path in sorted(store.array_shards)
    }
    _zip_writer_findings(store, existing, validation)
    return validation


def validate_layout(store: ShardedStore, *, timeout: float | None = None) -> Validation:
    """Check every shard of ``store`` and report every problem and warning found.

    Parameters
    ----------
    store
        The layout (opened read-only is enough; nothing is written, no lock is taken).
    timeout
        Seconds each store may take to open and list its first key (None: the
        ``SHARDEDSTORE_TIMEOUT`` environment variable, else 30 s; ``math.inf``: no limit).

    Returns
    -------
    Validation
        ``valid`` when there is no problem; warnings never make a layout invalid.
    """

    limit = resolve_timeout(timeout)  # a bad setting fails here, not as a shard's error
    return sync(_validate(store, math.inf if limit is None else limit))
