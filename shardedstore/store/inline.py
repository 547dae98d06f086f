"""Inline I/O: fast sub-stores are called in the event loop, slow ones through threads.

zarr's ``LocalStore`` hands every ``get``/``set`` to a thread (``asyncio.to_thread``).
For a small chunk read from the page cache the hop costs several times the read
itself. A sub-store that implements zarr's sync protocols (``get_sync``, ``set_sync``,
``delete_sync``: ``LocalStore``, ``MemoryStore``, :class:`CopyOnWriteZipStore`) can be
called inline instead, with no hop at all (see :func:`inline_capable` for which
ones qualify), as long as its calls are fast: a call that
blocks the event loop for long would serialize requests that zarr wants concurrent
(network filesystems such as NFS, Lustre or GPFS, a slow or cold disk).

So each group of sub-stores (the base, one mount, the shards of one array) keeps
running estimates, measured around the sync call itself in both modes, of the CPU time
a call uses (the kernel's work for it included) and of the time it waits: wall-clock
time minus CPU time, counted only when the thread blocked (a voluntary context switch:
I/O, a lock, a sleep). A thread preempted on a busy machine was not waiting for its
storage, and a thread would not have run sooner, so that time counts for neither. Their
sum is the estimate of a call's time. Calls run inline while

- the estimate is at most :data:`INLINE_THRESHOLD`, or
- most of them (by a running share) do not wait more than :data:`WAIT_THRESHOLD`, and
  they use at most :data:`BUSY_THRESHOLD` of CPU time: work on the CPU, such as
  replacing a file in the page cache (100-400 µs of kernel time for a 64 KiB chunk), is
  no faster in a thread, and the hop costs more than it hides.

Otherwise they go through a thread, where zarr's concurrency hides the wait. The
thread-side measurements, and an inline probe now and then (see
:attr:`Latency.inline`), bring them back inline once the storage is fast again (a page
cache warmed up, say). A group starts inline, and its estimates start from zero with
a first sample that counts for less than the next ones, so that one slow first call
(creating a shard's folders, say) does not decide alone, but two do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from zarr.abc.store import Store, SupportsSyncStore

from shardedstore.store.parts import Layered

_resource: ModuleType | None
try:
    import resource as _resource
except ImportError:  # Windows: no rusage; every off-CPU moment counts as waiting
    _resource = None

__all__ = [
    "BUSY_THRESHOLD",
    "INLINE_THRESHOLD",
    "LONG_WAIT",
    "WAIT_THRESHOLD",
    "Latency",
    "inline_capable",
]

INLINE_THRESHOLD = 250e-6
"""Seconds per call up to which a sub-store is called inline."""

BUSY_THRESHOLD = 500e-6
"""CPU seconds per call up to which a sub-store that does not wait is called inline."""

WAIT_THRESHOLD = 200e-6
"""Seconds of waiting above which a call counts as one that waited."""

LONG_WAIT = 1e-3
"""Seconds of waiting in a group's first read that send its reads to threads at once.

Not for writes: a first write that creates a shard's folders can wait that long on a
local disk that is otherwise fast.
"""

PROBE_FIRST = 128
"""Calls through threads before the first inline probe."""

PROBE_LAST = 1024
"""The longest run of calls through threads between two inline probes."""

PROBE_GAIN = 0.75
"""A probe runs early when calls in threads take less than this share of the last inline one."""

THREAD_SAMPLING = 8
"""One call in this many is measured in threads: measuring holds the GIL a little."""

_WEIGHT = 0.2
"""Weight of the newest sample in the running estimate, once it has a few."""

_FIRST_WEIGHT = 0.4
"""Weight of a group's first sample: one slow call is not enough to leave the loop, two are."""

T = TypeVar("T")


def _blocked() -> int:
    """How often the calling thread has blocked (voluntary context switches)."""
    if _resource is None:
        return 0
    return int(_resource.getrusage(_RUSAGE_THREAD).ru_nvcsw)


_RUSAGE_THREAD: int = getattr(_resource, "RUSAGE_THREAD", getattr(_resource, "RUSAGE_SELF", 0))


def _owner(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in vars(klass)), None)


def inline_capable(store: Store) -> bool:
    """Whether ``store``'s sync methods may be called inline from the event loop.

    Only when the class that defines ``get``/``set`` also defines ``get_sync``/
    ``set_sync``: a subclass that overrides ``get`` (to log, authenticate, count) and
    inherits ``get_sync`` must keep being called through its ``get``. A nested
    layout (a ShardedStore) is excluded: its sync writes can need its own async code.
    """
    if isinstance(store, Layered) or not isinstance(store, SupportsSyncStore):
        return False
    kind = type(store)
    return all(
        _owner(kind, name) is _owner(kind, f"{name}_sync") for name in ("get", "set", "delete")
    )


class Latency:
    """The running per-call time of one group of sub-stores, and what it implies."""

    __slots__ = (
        "_decisive",
        "_last_inline",
        "_since_probe",
        "cpu",
        "estimate",
        "long_wait",
        "probe_every",
        "samples",
        "waiting",
    )

    def __init__(self, *, long_wait: float | None = None) -> None:
        # A first call waiting longer than this decides alone (None: never). Writes
        # create folders, so only reads use it (:data:`LONG_WAIT`).
        self.long_wait = long_wait
        self.estimate = 0.0
        self.cpu = 0.0
        self.waiting = 0.0
        self.samples = 0
        self._decisive = False  # one slow first call (creating folders) is not enough
        self.probe_every = PROBE_FIRST
        self._since_probe = 0
        self._last_inline = 0.0  # the time of the last call measured inline

    @property
    def fast(self) -> bool:
        """Whether the estimates say that calls should run inline."""
        return self.estimate <= INLINE_THRESHOLD or (
            self.cpu <= BUSY_THRESHOLD and self.waiting < 0.5
        )

    @property
    def inline(self) -> bool:
        """Whether the next call should run inline; if not, use :meth:`run_off_loop`."""
        if self.fast:
            self.probe_every = PROBE_FIRST
            self._since_probe = 0
            return True
        return False

    async def run_off_loop(self, call: Callable[[], T]) -> T:
        """Run the blocking ``call`` in a thread, or as an inline probe now and then.

        Measured in a thread, a call also waits for the GIL whenever other threads
        hold it, so a fast store sent to threads once (by a slow start, a busy
        moment) would look slow there for good. So one call runs inline as a probe,
        and its measurement replaces the estimates: fast, and the group is back
        inline; slow, and the next probe comes twice as late. A probe is due after
        :attr:`probe_every` calls, and runs when the calls measured in threads have
        become faster than the last one measured inline (by :data:`PROBE_GAIN`), or
        at the latest after :data:`PROBE_LAST` calls: storage that is slow, and no
        faster in threads, blocks the loop for a probe once per :data:`PROBE_LAST` calls.
        """
        self._since_probe += 1
        due = self._since_probe >= self.probe_every and (
            self.estimate < PROBE_GAIN * self._last_inline or self._since_probe >= PROBE_LAST
        )
        if due:  # a probe
            self._since_probe = 0
            self.probe_every = min(2 * self.probe_every, PROBE_LAST)
            self.samples, self._decisive = 0, True  # the probe's measurement stands alone
            return self.timed(call)
        if self._since_probe % THREAD_SAMPLING:
            return await asyncio.to_thread(call)
        return await asyncio.to_thread(self.timed, call, True)

    def record(
        self,
        seconds: float,
        waited: float | None = None,
        cpu: float = 0.0,
        *,
        threaded: bool = False,
    ) -> None:
        """Add one measured call: its time, the part of it spent waiting, its CPU time.

        Without ``waited``, the whole call counts as waiting. A call measured in a
        thread (``threaded``) does not count towards the share of calls that wait: in
        a thread, waiting for the GIL looks like waiting for storage.
        """
        if threaded and self.samples == 0:
            return  # a probe is under way: its own sample must stand alone
        if waited is None:
            waited = seconds
        # Storage that makes calls wait does so on most calls; a lone wait (another
        # thread holding the GIL, say) moves this share of waiting calls only a little.
        waits = 1.0 if waited > WAIT_THRESHOLD else 0.0
        # A probe stands alone, and so does a first read that waited long: storage
        # that does should not block the loop for one more call.
        long_wait = self.long_wait is not None and not threaded and waited > self.long_wait
        if self.samples == 0 and (self._decisive or long_wait):
            self.estimate, self.waiting, self.cpu = seconds, waits, cpu
        else:
            # The first samples weigh more (a running mean, after a first sample that
            # counts less than fully): storage that makes every call wait leaves the
            # loop after its second call instead of blocking it for several more.
            weight = max(_WEIGHT, _FIRST_WEIGHT if self.samples == 0 else 1 / (self.samples + 2))
            self.estimate += weight * (seconds - self.estimate)
            if not threaded:
                self.waiting += weight * (waits - self.waiting)
            self.cpu += weight * (cpu - self.cpu)
        self.samples += 1
        if not threaded:
            self._last_inline = seconds

    def timed(self, call: Callable[[], T], threaded: bool = False) -> T:
        """Run ``call`` (blocking) and record its CPU time and how long it waited.

        ``threaded``: the call runs in a worker thread, not in the event loop.
        """
        blocked = _blocked()
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return call()
        finally:
            wall = time.perf_counter() - start
            used = time.thread_time() - cpu
            waited = 0.0
            if _resource is None or _blocked() > blocked:
                waited = max(0.0, wall - used)
            # Time the thread was preempted (a busy machine) is not the storage's.
            self.record(used + waited, waited, used, threaded=threaded)

    async def run(self, call: Callable[[], T]) -> T:
        """Run the blocking ``call`` inline or in a thread, whichever this group needs."""
        if self.inline:
            return self.timed(call)
        return await self.run_off_loop(call)
