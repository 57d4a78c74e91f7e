"""A cheaper wait for FUSE requests under pyfuse3: one trio wake-up per request, not three.

pyfuse3's request loop runs in worker tasks that each wait for the FUSE fd to turn readable
(``_wait_fuse_readable``), read one request and run its handler. Only one task may wait on
an fd in trio, so pyfuse3 passes a ``trio.Lock`` around; each request then costs the lock's
checkpoint and its hand-over to the next worker on top of the fd's wake-up. With handlers
that answer from memory, as cache hits do, that machinery is most of a request's cost:
measured here with an empty filesystem, 35 us of CPU per request against 18 us without it
(bindfs, a C passthrough, takes about 22 us).

`FuseWaiter` replaces that function (pyfuse3 looks it up by name on each call). The task
that was woken keeps the fd: it serves the request and, if the handler answered without
suspending, goes straight back to waiting, with no other task involved. Only when a handler
suspends (it awaits a thread: a fetch, a SOURCE call) does a trio instrument see that task
step end while it is serving, and wake one parked worker to take over the fd, so a slow
request never holds up the others; pyfuse3 still grows the pool up to ``max_tasks``.

After serving a request, the task lingers up to `LINGER` seconds for the next one in a plain
``select`` on the fd before it falls back to trio's wait. A reader working through a tree
asks again within microseconds of each answer (stat, readdir, open, read, ...), and a request
caught that way skips trio's scheduler: a pass through its run loop, an epoll registration and
a task switch, about a third of what a request costs the process when handlers answer from
memory. The thread sleeps meanwhile (no spinning), nothing lingers while any handler is
suspended (its thread's result would wait), and `FAST_BUDGET` still bounds how long other
trio tasks can be kept waiting.

A task returns True only when a request is known to be waiting: the fd is blocking, and a
worker woken for a request another worker already took must not block the whole thread in
``read``. So a woken waiter returns at once only if no request was handed out since it began
to wait; otherwise, as on the path that skips waiting, a zero-timeout ``poll`` decides.

Termination: `FuseWaiter.close` goes with ``pyfuse3.terminate`` and tells every parked worker
to stop (a worker serving a request sees pyfuse3's own exit flag), and an unmount makes the fd
report an error, which each worker in turn reads as the end.

The worker count: pyfuse3 counts its idle workers (``active_readers``) inside the function
replaced here, starts another worker after each request read while that count is zero, and
retires a worker when more than ``min_tasks`` are idle. With `FuseWaiter` the count stays zero,
so the pool grows to ``max_tasks`` (`rootfs.cache.mount.MAX_TASKS`, 32) within the first
requests and never shrinks; the extra workers sleep in a parking lot and cost a trio task each,
nothing per request. With pyfuse3's own loop the pool grows only while handlers are suspended.

This relies on pyfuse3 internals, so `install` checks the version it was written against
(pyproject.toml pins pyfuse3 to those releases) and otherwise leaves pyfuse3's own loop in
place, with a warning: requests then cost about twice the CPU.
"""

from __future__ import annotations

import logging
import os
import select

import pyfuse3
import trio

log = logging.getLogger(__name__)

KNOWN_VERSIONS = ("3.5.",)  # pyfuse3 releases whose request loop this was checked against
FAST_BUDGET = 32  # requests taken without yielding to trio before a real wait (fairness)
LINGER = 200e-6  # seconds to wait for the next request outside trio, after answering one


def fuse_fds() -> set[int]:
    """The fds of this process open on /dev/fuse."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                found.add(int(name))
        except OSError:
            continue  # closed meanwhile (the listing's own fd, for one)
    return found


class FuseWaiter(trio.abc.Instrument):
    """Stands in for pyfuse3's ``_wait_fuse_readable``; also the instrument that hands the
    fd on when a request's handler suspends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._waiter: trio.lowlevel.Task | None = None  # the task in wait_readable
        self._serving: set[trio.lowlevel.Task] = set()  # took a request, not back yet
        self._suspended: set[trio.lowlevel.Task] = set()  # handlers awaiting something
        # select() gives microsecond timeouts but only takes fds below FD_SETSIZE.
        self._linger = LINGER if fd < 1024 else 0.0
        self._workers: set[trio.lowlevel.Task] = set()
        self._standby = trio.lowlevel.ParkingLot()
        self._closed = False
        self._budget = FAST_BUDGET
        self._taken = 0  # requests handed out: tells a woken waiter whether one was taken

    def _ready(self) -> bool:
        # Any event counts: after an unmount the fd reports POLLERR (select: readable), and
        # the read that follows is what tells pyfuse3's loop to end.
        if self._linger and not self._suspended:
            return bool(select.select((self.fd,), (), (), self._linger)[0])
        return bool(self._poll.poll(0))

    async def wait(self) -> bool:
        """True when a request can be read without blocking; False when the loop must end."""
        task = trio.lowlevel.current_task()
        self._serving.discard(task)
        self._suspended.discard(task)
        self._workers.add(task)
        while not self._closed:
            if self._budget > 0 and self._ready():
                self._budget -= 1
                return self._take(task)
            self._budget = FAST_BUDGET
            if self._waiter is not None:
                await self._standby.park()
                continue
            self._waiter = task
            taken = self._taken
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except trio.ClosedResourceError:  # pyfuse3.terminate()
                self.close()
                return False
            finally:
                self._waiter = None
            if self._taken == taken and not self._closed:
                # Readable since this task started waiting, and no other task has read
                # from the fd since then: the request is still there, no poll needed.
                return self._take(task)
        return False

    def _take(self, task: trio.lowlevel.Task) -> bool:
        self._taken += 1
        self._serving.add(task)
        return True

    def close(self) -> None:
        """End the loop: call with pyfuse3.terminate(). A worker that was serving sees
        pyfuse3's exit flag itself; the parked ones only learn it here."""
        self._closed = True
        self._standby.unpark_all()
        trio.lowlevel.notify_closing(self.fd)  # wakes the waiter, if any (pyfuse3 does too)

    # ------------------------------------------------------------ instrument hooks

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task in self._serving:  # its handler suspended: someone else must read the fd
            self._serving.discard(task)
            self._suspended.add(task)
            if self._waiter is None:
                self._standby.unpark()

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if task in self._workers:  # its loop ended (unmount): the next worker sees why
            self._workers.discard(task)
            self._serving.discard(task)
            self._suspended.discard(task)
            self._standby.unpark()


def install(fd: int) -> FuseWaiter | None:
    """Use `FuseWaiter` for pyfuse3's loop on *fd*; call inside trio, before pyfuse3.main.

    Returns None, leaving pyfuse3's own wait, on a pyfuse3 version it was not checked with.
    """
    version = getattr(pyfuse3, "__version__", "")
    if os.environ.get("ROOTFS_FUSE_LOOP") == "pyfuse3":  # for comparisons, and a way out
        log.info("ROOTFS_FUSE_LOOP=pyfuse3: using pyfuse3's own request loop")
        return None
    if not version.startswith(KNOWN_VERSIONS) or not hasattr(pyfuse3, "_wait_fuse_readable"):
        log.warning(
            "pyfuse3 %s is not a release rootfs's request loop was checked against (%s);"
            " using pyfuse3's own loop, which costs about twice the CPU per request",
            version,
            ", ".join(v + "x" for v in KNOWN_VERSIONS),
        )
        return None
    waiter = FuseWaiter(fd)
    trio.lowlevel.add_instrument(waiter)
    pyfuse3._wait_fuse_readable = waiter.wait
    return waiter
