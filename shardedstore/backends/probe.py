"""Reach one store for inspection: where it is, whether it is there, what went wrong.

``info`` and ``validate`` look at every shard of a layout; a shard that is missing,
unreachable or corrupt must be reported and the others still looked at. This module
turns any store into a URL for people (``s3://bucket/path``, not the store's repr),
reaches it once within the time limit of :mod:`shardedstore.backends.timeouts`, and turns any
backend error into one short line.

A store "is there" when it opens and, unless it is a local directory or zip, holds at
least one key: an object store has no directories, so an empty prefix, a path that
does not exist and ``memory://x`` in a new process all look the same, and a layout
pointing at one is pointing at nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from zarr.abc.store import Store

from shardedstore.backends.handles import opened
from shardedstore.backends.registry import facts_of
from shardedstore.backends.timeouts import ENV_VAR, within
from shardedstore.errors import RemoteTimeoutError

__all__ = ["Reach", "error_text", "reach"]

_MAX_ERROR = 300


_XML_ERROR = re.compile(r"<Code>(?P<code>[^<]*)</Code>\s*<Message>(?P<message>[^<]*)</Message>")


def error_text(error: BaseException) -> str:
    """``error`` in one short line: no tracebacks, debug dumps or XML bodies."""
    text = str(error).split("\n\nDebug source:", 1)[0]
    xml = _XML_ERROR.search(text)
    if xml is not None:
        head = text[: text.find("<?xml")] if "<?xml" in text else text[: xml.start()]
        text = f"{head.rstrip(': ')}: {xml['code']}: {xml['message']}"
    text = " ".join(text.split())
    if not text:
        text = type(error).__name__
    elif not isinstance(error, OSError | ValueError):
        # Name the kind of error unless the text does (obstore: "GenericError: Generic ...").
        stem = type(error).__name__.removesuffix("Error").lower()
        if stem not in text.lower():
            text = f"{type(error).__name__}: {text}"
    if len(text) > _MAX_ERROR:
        text = text[: _MAX_ERROR - 1] + "…"
    return text


@dataclass(frozen=True)
class Reach:
    """The outcome of reaching a store.

    Attributes
    ----------
    state
        ``"ok"``, ``"missing"`` (not there, or an object store prefix holding nothing)
        or ``"unreadable"`` (an error: corrupt zip, no bucket, refused connection,
        no answer within the time limit).
    error
        The error in one line, for ``"unreadable"``.
    """

    state: Literal["ok", "missing", "unreadable"]
    error: str | None = None


async def _reach(store: Store) -> Reach:
    if not await opened(store):
        return Reach("missing")
    local = facts_of(store).local_root
    if local is not None:  # a directory or zip file on disk: there or not
        return Reach("ok" if os.path.exists(local[1]) else "missing")
    async for _ in store.list():
        return Reach("ok")
    return Reach("missing")


async def reach(store: Store, timeout: float | None = None) -> Reach:
    """Open ``store`` (read-only) and see whether it is there; never raises an Exception.

    Parameters
    ----------
    store
        A read-only store.
    timeout
        Seconds to open it and list its first key, as for
        :func:`shardedstore.backends.timeouts.resolve_timeout` (None: ``SHARDEDSTORE_TIMEOUT``
        or the default).
    """
    try:
        return await within(_reach(store), "probing", facts_of(store).url, timeout)
    except RemoteTimeoutError as error:
        return Reach(
            "unreadable", f"no answer within {error.timeout:g} s ({ENV_VAR} allows longer)"
        )
    except Exception as error:  # any backend error: reported, the caller goes on
        return Reach("unreadable", error_text(error))
