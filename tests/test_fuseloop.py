"""FuseWaiter, driven the way pyfuse3's request loop drives it, over a real pipe.

Each worker below mirrors pyfuse3's ``_session_loop``: wait, read one request (a byte) from
the fd, run its handler. The FUSE fd is blocking; the pipe's read end is not, so a read the
waiter wrongly allowed fails the test (BlockingIOError) instead of hanging it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pyfuse3
import pytest
import trio

from rootfs.cache import fuseloop
from rootfs.cache.fuseloop import FuseWaiter

DEADLINE = 10


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # the test closed it already
            os.close(fd)


class Loop:
    """Workers sharing one FuseWaiter. A request byte b"y" makes its handler yield once, and
    b"s" makes it wait for `release_slow`; any other byte is answered at once."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.waiter = FuseWaiter(fd)
        self.served: list[bytes] = []
        self.waits: Callable[[], int] = lambda: 0  # a test's count of trio waits begun
        self.waits_at_serve: list[int] = []  # that count as each request was read
        self.served_at: list[float] = []
        self.release_slow = trio.Event()
        self.slow_started = trio.Event()
        self.exited = 0

    async def worker(self) -> None:
        try:
            while await self.waiter.wait():
                request = os.read(self.fd, 1)
                if not request:  # the writer went away: pyfuse3 ends on ENODEV the same way
                    return
                self.waits_at_serve.append(self.waits())
                if request == b"y":
                    await trio.sleep(0)
                if request == b"s":
                    self.slow_started.set()
                    await self.release_slow.wait()
                self.served.append(request)
                self.served_at.append(time.monotonic())
        finally:
            self.exited += 1

    async def start(self, nursery: trio.Nursery, workers: int) -> None:
        trio.lowlevel.add_instrument(self.waiter)
        for _ in range(workers):
            nursery.start_soon(self.worker)
        await wait_until(lambda: self.waiter._waiter is not None)


async def wait_until(condition: Callable[[], bool]) -> None:
    while not condition():
        await trio.sleep(0.001)


@asynccontextmanager
async def running(read_fd: int, workers: int) -> AsyncIterator[Loop]:
    """*workers* workers serving *read_fd*, all ended (and the test failed if that takes
    too long) when the block is left."""
    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            loop = Loop(read_fd)
            await loop.start(nursery, workers)
            yield loop


async def test_every_request_is_served_once_without_blocking(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    async with running(read_fd, workers=4) as loop:
        sent = 0
        for burst in range(300):  # handlers that yield race the waiter for new requests
            requests = b"yf"[burst % 2 :] * (burst % 5 + 1)
            os.write(write_fd, requests)
            sent += len(requests)
            await trio.sleep(0)
        await wait_until(lambda: len(loop.served) == sent)
        loop.waiter.close()
    assert loop.exited == 4


async def test_a_suspended_handler_hands_the_fd_to_another_worker(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    async with running(read_fd, workers=3) as loop:
        os.write(write_fd, b"s")  # its handler waits for release_slow
        await loop.slow_started.wait()
        os.write(write_fd, b"ff")
        await wait_until(lambda: loop.served == [b"f", b"f"])  # served while "s" waits
        loop.release_slow.set()
        await wait_until(lambda: len(loop.served) == 3)
        loop.waiter.close()
    assert loop.exited == 3


async def test_a_request_soon_after_an_answer_is_taken_outside_trio(
    pipe: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    read_fd, write_fd = pipe
    trio_waits = 0
    wait_readable = trio.lowlevel.wait_readable

    async def counting(fd: int) -> None:
        nonlocal trio_waits
        trio_waits += 1
        await wait_readable(fd)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counting)
    async with running(read_fd, workers=1) as loop:
        loop.waiter._linger = 0.5  # long, so that a slow machine still makes the window
        loop.waits = lambda: trio_waits
        waits_before = trio_waits
        # The next request comes from another thread 20 ms after the first: the worker, back
        # from answering, is lingering in select() (which blocks the trio thread) and takes it.
        later = threading.Timer(0.02, os.write, (write_fd, b"f"))
        os.write(write_fd, b"f")
        later.start()
        await wait_until(lambda: len(loop.served) == 2)
        later.join()
        assert loop.waits_at_serve == [waits_before, waits_before]
        loop.waiter.close()


async def test_no_lingering_while_a_handler_is_suspended(pipe: tuple[int, int]) -> None:
    """A suspended handler's result (a thread's) must not wait for another request."""
    read_fd, write_fd = pipe
    async with running(read_fd, workers=2) as loop:
        loop.waiter._linger = 1.0
        os.write(write_fd, b"s")
        await loop.slow_started.wait()
        start = time.monotonic()
        os.write(write_fd, b"f")  # served by the other worker, which must then not linger
        await wait_until(lambda: loop.served == [b"f"])
        loop.release_slow.set()
        await wait_until(lambda: len(loop.served) == 2)
        assert loop.served_at[1] - start < 0.5
        loop.waiter.close()


async def test_close_stops_every_worker_even_while_one_serves(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    async with running(read_fd, workers=3) as loop:
        os.write(write_fd, b"s")
        await loop.slow_started.wait()
        await wait_until(lambda: loop.waiter._waiter is not None)
        loop.waiter.close()  # what pyfuse3.terminate's caller does
        loop.release_slow.set()
    assert loop.exited == 3


async def test_the_end_of_the_fd_reaches_every_worker(pipe: tuple[int, int]) -> None:
    """After an unmount the FUSE fd reports an error; each worker in turn must see it."""
    read_fd, write_fd = pipe
    async with running(read_fd, workers=5) as loop:
        os.close(write_fd)
    assert loop.exited == 5


def test_install_keeps_pyfuse3_loop_on_an_unknown_version(
    monkeypatch: pytest.MonkeyPatch, pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    original = pyfuse3._wait_fuse_readable  # type: ignore[attr-defined]

    async def attempt() -> object:
        return fuseloop.install(pipe[0])

    monkeypatch.setattr(pyfuse3, "__version__", "4.0.0")
    assert trio.run(attempt) is None
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warned and "pyfuse3 4.0.0" in warned[0].getMessage()  # an administrator sees it
    monkeypatch.setattr(pyfuse3, "__version__", "3.5.0")
    monkeypatch.setenv("ROOTFS_FUSE_LOOP", "pyfuse3")
    assert trio.run(attempt) is None
    assert pyfuse3._wait_fuse_readable is original  # type: ignore[attr-defined]
