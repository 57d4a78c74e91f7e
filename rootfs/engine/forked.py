"""Run independent pieces of work in forked worker processes and gather their results.

Updating many hosts is per-host work with nothing shared but read-only inputs (the composed
manifests, the store), and most of it is Python: one process keeps one core busy. `run`
forks `jobs` workers after the inputs are ready, so they inherit them instead of receiving
copies; each handles a share of the items and sends back one result per item as it goes.
The caller sees results as they arrive (in completion order) and, once every worker has
ended, the first error any of them raised.

A worker never outlives the command: it is killed if the parent dies (PR_SET_PDEATHSIG), so
a `kill -9` of the command leaves no process behind still writing (or holding the state
lock). Everything it did is journaled by the caller, as in a single-process run.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
import selectors
import signal
import struct
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

from rootfs.errors import RootfsError, UserError

log = logging.getLogger(__name__)

R = TypeVar("R")

_LENGTH = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Outbox(Generic[R]):
    """A worker's way to the parent: ``outbox(index, result)`` hands over one item's result,
    ``outbox.progress(index, text)`` a progress line for an item still under way."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __call__(self, index: int, result: R) -> None:
        _write(self._fd, ("result", index, result))

    def progress(self, index: int, text: str) -> None:
        _write(self._fd, ("progress", index, text))


class WorkerFailed(RootfsError):
    """A worker ended without saying why (killed by a signal, or it crashed)."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def run(
    count: int,
    work: Callable[[Sequence[int], Outbox[R]], None],
    *,
    jobs: int,
    on_result: Callable[[int, R], None],
    on_progress: Callable[[int, str], None] | None = None,
) -> None:
    """Do `work(indices, outbox)` for items 0..count-1 in `jobs` forked workers.

    Items are dealt round-robin, so each worker gets a similar share. `on_result(index,
    result)` runs in the parent for each result sent, `on_progress(index, text)` for each
    progress line. Raises the first error a worker reported (a `UserError` keeps its message
    and exit code) after all workers have ended.
    """
    sys.stdout.flush()  # a child must not inherit (and never write) half a line of ours
    sys.stderr.flush()
    workers: dict[int, _Worker[R]] = {}
    try:
        for k in range(min(jobs, count)):
            worker: _Worker[R] = _Worker.start(list(range(k, count, jobs)), work)
            workers[worker.fd] = worker
        _gather(workers, on_result, on_progress)
    finally:
        errors = [w.wait() for w in workers.values()]
    for error in errors:
        if error is not None:
            raise error


def _gather(
    workers: dict[int, _Worker[R]],
    on_result: Callable[[int, R], None],
    on_progress: Callable[[int, str], None] | None,
) -> None:
    with selectors.DefaultSelector() as selector:
        for fd in workers:
            selector.register(fd, selectors.EVENT_READ)
        open_fds = len(workers)
        while open_fds:
            for key, _ in selector.select():
                worker = workers[key.fd]
                for kind, index, payload in worker.read():
                    if kind == "result":
                        on_result(index, cast(R, payload))
                    elif kind == "progress":
                        if on_progress is not None:
                            on_progress(index, cast(str, payload))
                    else:
                        worker.error = cast(BaseException, payload)
                if worker.eof:
                    selector.unregister(key.fd)
                    open_fds -= 1


class _Worker(Generic[R]):
    """The parent's end of one worker: its pid and the pipe its messages come through."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self.buffer = b""
        self.eof = False
        self.error: BaseException | None = None

    @classmethod
    def start(
        cls, indices: list[int], work: Callable[[Sequence[int], Outbox[R]], None]
    ) -> _Worker[R]:
        parent = os.getpid()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the caller's stack
            os.close(read_end)
            _child(parent, indices, work, write_end)
        os.close(write_end)
        return cls(pid, read_end)

    def read(self) -> list[tuple[str, int, object]]:
        """Whole messages received so far."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.eof = True
            return []
        self.buffer += data
        messages = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            end = _LENGTH.size + length
            if len(self.buffer) < end:
                break
            messages.append(pickle.loads(self.buffer[_LENGTH.size : end]))
            self.buffer = self.buffer[end:]
        return messages

    def wait(self) -> BaseException | None:
        """Reap the worker; its error, if it reported or suffered one."""
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        if self.error is None and status != 0:
            if os.WIFSIGNALED(status):
                why = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            else:
                why = f"exit status {os.waitstatus_to_exitcode(status)}"
            self.error = WorkerFailed(f"a build worker (pid {self.pid}) ended: {why}")
        return self.error


def _child(
    parent: int,
    indices: list[int],
    work: Callable[[Sequence[int], Outbox[R]], None],
    fd: int,
) -> None:
    status = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

        work(indices, Outbox(fd))
        status = 0
    except BaseException as exc:  # reported to the parent, which re-raises it
        _write(fd, ("error", -1, _portable(exc)))
    finally:
        os._exit(status)  # no atexit handlers, no flushing of buffers inherited from the parent


def _portable(exc: BaseException) -> BaseException:
    """The exception as the parent can rebuild it: a UserError as itself (its message is the
    point), anything else as a RuntimeError carrying the worker's traceback."""
    if isinstance(exc, UserError):
        return UserError(exc.message, exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt()
    text = "".join(traceback.format_exception(exc)).rstrip()
    return RuntimeError(f"in a build worker (pid {os.getpid()}):\n{text}")


def _write(fd: int, message: tuple[str, int, object]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]
