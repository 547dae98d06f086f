"""Time limits on the remote calls shardedstore makes itself.

Reading or writing a layout config at a URL, listing where an array-shard template
points, and probing stores for ``validate`` and ``info`` each wait at most a time limit;
a server that accepts a connection and never answers then gives
:class:`RemoteTimeoutError` (a ``TimeoutError``) naming the URL, instead of a hang.

The limit, in seconds: the ``timeout=`` keyword where a function takes one
(``shardedstore.open``), else the environment variable ``SHARDEDSTORE_TIMEOUT``, else
30 s, the per-request limit obstore's clients use by default. ``inf`` (or
``SHARDEDSTORE_TIMEOUT=none``) waits forever. Reads of chunk data go through the
stores themselves (fsspec, obstore), whose own client options set their limits.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENV_VAR",
    "RemoteTimeoutError",
    "call_within",
    "fsspec_call",
    "resolve_timeout",
    "within",
]

T = TypeVar("T")

ENV_VAR = "SHARDEDSTORE_TIMEOUT"
"""Environment variable holding the default time limit in seconds (``none``: no limit)."""

DEFAULT_TIMEOUT = 30.0
"""Seconds a remote call may take when neither a keyword nor the environment says."""

_NO_LIMIT = frozenset({"none", "inf", "infinity", "off"})


class RemoteTimeoutError(TimeoutError):
    """A remote call got no answer within its time limit; nothing was changed.

    Attributes
    ----------
    url
        Where the call went.
    timeout
        The limit, in seconds.
    """

    def __init__(self, what: str, url: str, timeout: float) -> None:
        self.what = what
        self.url = url
        self.timeout = timeout
        super().__init__(
            f"{what} {url}: no answer within {timeout:g} s; check that the server is "
            f"reachable, or allow longer with timeout= (shardedstore.open) or the "
            f"environment variable {ENV_VAR} (seconds, 'none' for no limit)"
        )

    def __reduce__(self) -> tuple[type[RemoteTimeoutError], tuple[str, str, float]]:
        return (type(self), (self.what, self.url, self.timeout))


def _seconds(value: float) -> float | None:
    """A limit > 0 in seconds (None: infinity, no limit); ValueError if it is not one."""
    if math.isnan(value) or value <= 0:
        raise ValueError("not a number of seconds > 0")
    return None if math.isinf(value) else float(value)


def resolve_timeout(timeout: float | None = None) -> float | None:
    """The time limit in seconds for a remote call (None: no limit).

    Parameters
    ----------
    timeout
        The caller's limit; None takes ``SHARDEDSTORE_TIMEOUT`` from the environment,
        else :data:`DEFAULT_TIMEOUT`. ``math.inf`` means no limit.

    Raises
    ------
    ValueError
        If the limit is not a number of seconds > 0 (naming the variable if it came
        from the environment).
    """
    if timeout is not None:
        try:
            return _seconds(timeout)
        except ValueError:
            raise ValueError(
                f"timeout must be a number of seconds > 0 (math.inf: no limit), got {timeout!r}"
            ) from None
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    if text.lower() in _NO_LIMIT:
        return None
    try:
        return _seconds(float(text))
    except ValueError:
        raise ValueError(
            f"{ENV_VAR}={text!r}: expected a number of seconds > 0, or 'none' for no limit"
        ) from None


async def within(awaitable: Awaitable[T], what: str, url: str, timeout: float | None = None) -> T:
    """Await ``awaitable``, cancelling it after the time limit.

    Parameters
    ----------
    awaitable
        The remote call.
    what, url
        What it does and where, for the error (``"probing"``, ``"s3://bucket/ds"``).
    timeout
        As for :func:`resolve_timeout`.

    Raises
    ------
    RemoteTimeoutError
        If it has not finished in time (it is then cancelled).
    """
    limit = resolve_timeout(timeout)
    try:
        async with asyncio.timeout(limit) as deadline:
            return await awaitable
    except TimeoutError:
        if limit is None or not deadline.expired():
            raise  # the call's own TimeoutError, not our limit
        raise RemoteTimeoutError(what, url, limit) from None


def call_within(function: Callable[[], T], what: str, url: str, timeout: float | None = None) -> T:
    """Call blocking ``function`` in a daemon thread and wait at most the time limit.

    For clients that cannot be cancelled: after the limit the thread is abandoned
    (it ends when the client gives up) and will not keep the process alive.

    Raises
    ------
    RemoteTimeoutError
        If ``function`` has not returned in time.
    """
    limit = resolve_timeout(timeout)
    if limit is None:
        return function()
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, function()))
        except BaseException as error:  # handed to the waiting thread
            outcome.append((False, error))

    thread = threading.Thread(target=run, name=f"shardedstore {what} {url}", daemon=True)
    thread.start()
    thread.join(limit)
    if not outcome:
        raise RemoteTimeoutError(what, url, limit)
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def fsspec_call(
    fs: Any,
    method: str,
    *args: Any,
    what: str,
    url: str,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """``fs.<method>(*args, **kwargs)`` within the time limit.

    An async filesystem (http, s3fs, gcsfs) runs the coroutine ``fs._<method>`` on its
    own event loop and cancels it after the limit, which closes the connection; any
    other filesystem is called through :func:`call_within`.
    """
    coroutine = getattr(fs, f"_{method}", None) if getattr(fs, "async_impl", False) else None
    if coroutine is None:
        return call_within(lambda: getattr(fs, method)(*args, **kwargs), what, url, timeout)
    from fsspec.asyn import sync

    limit = resolve_timeout(timeout)

    async def call() -> tuple[bool, Any]:
        try:
            return True, await within(coroutine(*args, **kwargs), what, url, limit or math.inf)
        except RemoteTimeoutError as error:
            # Returned, not raised: fsspec's sync() turns any TimeoutError into its own.
            return False, error

    ok, value = sync(fs.loop, call)
    if not ok:
        raise value
    return value
