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

Remote stores made from a config get the same limit per request, and
``SHARDEDSTORE_RETRIES`` (default 3) retries of a failed request, unless the store's
own options in the config already say (:func:`fsspec_defaults`, :func:`obstore_defaults`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from shardedstore.errors import TIMEOUT_ENV_VAR, RemoteTimeoutError

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "ENV_VAR",
    "RETRIES_ENV_VAR",
    "call_within",
    "fsspec_call",
    "fsspec_defaults",
    "obstore_defaults",
    "resolve_retries",
    "resolve_timeout",
    "retrying",
    "within",
]

T = TypeVar("T")

ENV_VAR = TIMEOUT_ENV_VAR

DEFAULT_TIMEOUT = 30.0
"""Seconds a remote call may take when neither a keyword nor the environment says."""

RETRIES_ENV_VAR = "SHARDEDSTORE_RETRIES"
"""Environment variable holding how many times a failed remote request is retried."""

DEFAULT_RETRIES = 3
"""Retries of a failed remote request when neither the store's options nor the environment say."""

_NO_LIMIT = frozenset({"none", "inf", "infinity", "off"})


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


def resolve_retries(retries: int | None = None) -> int:
    """How many times a failed remote request is retried.

    Parameters
    ----------
    retries
        The caller's number; None takes ``SHARDEDSTORE_RETRIES`` from the environment,
        else :data:`DEFAULT_RETRIES`.

    Raises
    ------
    ValueError
        If it is not a whole number >= 0.
    """
    if retries is None:
        text = os.environ.get(RETRIES_ENV_VAR, "").strip()
        if not text:
            return DEFAULT_RETRIES
        try:
            retries = int(text)
        except ValueError:
            raise ValueError(
                f"{RETRIES_ENV_VAR}={text!r}: expected a whole number of retries >= 0"
            ) from None
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, got {retries!r}")
    return retries


_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


async def retrying(call: Callable[[], Awaitable[T]], what: str, retries: int | None = None) -> T:
    """``await call()``, again after a transient failure (a timeout, a dropped connection).

    A missing object or a refused permission is not retried. Waits 0.1 s, 0.2 s, 0.4 s
    ... (at most 2 s) between attempts; the last failure is raised.
    """
    attempts = resolve_retries(retries) + 1
    for attempt in range(attempts):
        try:
            return await call()
        except _PERMANENT:
            raise
        except (TimeoutError, ConnectionError, OSError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")  # pragma: no cover


def fsspec_defaults(url: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """fsspec options adding a per-request time limit and retries where not given.

    For S3 (s3fs) these are botocore's ``connect_timeout``, ``read_timeout`` and
    ``retries``, set in ``config_kwargs`` unless the options already have it; other
    protocols keep their own defaults. Returns only what was added.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("s3", "s3a") or "config_kwargs" in options:
        return {}
    retries = {"max_attempts": resolve_retries() + 1, "mode": "standard"}
    config: dict[str, Any] = {"retries": retries}
    limit = resolve_timeout()
    if limit is not None:
        config["connect_timeout"] = limit
        config["read_timeout"] = limit
    return {"config_kwargs": config}


def obstore_defaults(options: Mapping[str, Any]) -> dict[str, Any]:
    """obstore ``client_options`` / ``retry_config`` adding the same time limit and
    retries where the config does not set them. Returns only what was added."""
    added: dict[str, Any] = {}
    limit = resolve_timeout()
    if "client_options" not in options and limit is not None:
        added["client_options"] = {"timeout": f"{limit:g}s"}
    if "retry_config" not in options:
        added["retry_config"] = {"max_retries": resolve_retries()}
    return added
