"""SOURCE: the host's tree as the client sees it (its NFS root), read without trusting it to answer.

Every call into SOURCE runs in a worker thread under a timeout, because an NFS server that
went away makes syscalls hang, and pyfuse3 runs every handler in one thread: one blocking
call would stall the whole mount. A call that times out is abandoned (its thread finishes
or stays stuck in the kernel; a capacity limiter keeps stuck threads from piling up) and
the source is marked offline. While offline, the mount serves what it has cached and
answers EIO for the rest; a probe task marks it online again when the manifest is
readable once more.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple, TypeVar

import trio
import xxhash

from rootfs.errors import RootfsError
from rootfs.store.layout import PUBLISHED_MANIFEST
from rootfs.tree.manifest import Manifest, manifest_digest, parse

log = logging.getLogger(__name__)

T = TypeVar("T")

CHUNK = 1 << 20


# trio 0.23 renamed `cancellable` to `abandon_on_cancel`. A cached client runs Debian 12's trio
# (0.22) from its initramfs, the server the newer one from PyPI: ask whichever this trio knows.
_ABANDON = {
    "abandon_on_cancel"
    if "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters
    else "cancellable": True
}


class SourceUnavailable(RootfsError):
    """SOURCE did not answer in time, failed with EIO, or is no longer the published tree."""


class Fetched(NamedTuple):
    """What a fetch copied into the cache's temp area."""

    digest: str  # of the bytes actually read
    size: int


class Source:
    """Blocking access to SOURCE, run in threads under *timeout*, with an online flag."""

    def __init__(self, root: Path, *, timeout: float, threads: int = 16) -> None:
        self.root = root
        self.timeout = timeout
        self.online = True
        self._limiter = trio.CapacityLimiter(threads)
        self.went_offline = trio.Event()  # wakes the refresher, which then probes often

    def path(self, rel: str) -> str:
        """Absolute source path of manifest path *rel* (``/etc/passwd``)."""
        return f"{self.root}{rel}" if rel != "/" else str(self.root)

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` in a thread; OSErrors pass through, hangs become SourceUnavailable."""
        with trio.move_on_after(self.timeout) as scope:
            run_sync: Callable[..., Awaitable[T]] = trio.to_thread.run_sync
            return await run_sync(fn, *args, limiter=self._limiter, **_ABANDON)
        assert scope.cancelled_caught
        self.mark_offline(f"no answer within {self.timeout:g} s")
        raise SourceUnavailable(f"{self.root}: no answer within {self.timeout:g} s")

    async def call_checked(self, fn: Callable[..., T], *args: object) -> T:
        """`call`, with OSErrors that mean "the source is gone" turned into SourceUnavailable."""
        try:
            return await self.call(fn, *args)
        except OSError as exc:
            await self.check_error(exc)
            raise

    def mark_offline(self, why: str) -> None:
        if self.online:
            log.warning("source %s is unreachable (%s); serving cached files only", self.root, why)
            self.online = False
            self.went_offline.set()

    def mark_online(self) -> None:
        if not self.online:
            log.warning("source %s is reachable again", self.root)
            self.online = True
            self.went_offline = trio.Event()

    async def check_error(self, exc: OSError) -> None:
        """Turn an error that means "the source is gone" into SourceUnavailable.

        EIO, ESTALE, ENOTCONN and friends say the transport failed. ENOENT is ambiguous:
        the file may have been removed on the host, or the whole tree may be unmounted;
        the published manifest tells them apart.
        """
        if exc.errno in (errno.EIO, errno.ESTALE, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTDOWN):
            self.mark_offline(os.strerror(exc.errno))
            raise SourceUnavailable(str(exc)) from exc
        if exc.errno == errno.ENOENT and not await self.call(
            os.path.exists, self.path("/" + PUBLISHED_MANIFEST)
        ):
            self.mark_offline("published manifest missing")
            raise SourceUnavailable(str(exc)) from exc

    async def read_manifest(self) -> tuple[Manifest, bytes, str]:
        """The published manifest, its bytes and digest (parsed in the thread: 100k lines)."""

        def load() -> tuple[Manifest, bytes, str]:
            with open(self.path("/" + PUBLISHED_MANIFEST), "rb") as f:
                data = f.read()
            manifest = parse(data, source=f"{self.root}/{PUBLISHED_MANIFEST}")
            return manifest, data, manifest_digest(data)

        return await self.call_checked(load)


def fetch_into(src: str, tmp: str) -> Fetched:
    """Copy the regular file *src* to the new file *tmp*, hashing what is read (blocking)."""
    dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        return fetch_into_fd(src, dfd)
    finally:
        os.close(dfd)


def fetch_into_fd(src: str, dfd: int) -> Fetched:
    """Copy the regular file *src* to the open file *dfd*, hashing what is read (blocking).

    O_NOFOLLOW: a path the manifest calls a file must not lead elsewhere through a
    symlink planted on the host; that reads as a mismatch, not as someone else's bytes.
    """
    hasher = xxhash.xxh3_128()
    size = 0
    sfd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while data := os.read(sfd, CHUNK):
            hasher.update(data)
            size += len(data)
            _write_all(dfd, data)
    finally:
        os.close(sfd)
    return Fetched(str(hasher.hexdigest()), size)


def unlink_quietly(path: str) -> None:
    """Remove *path* if it is there (a temp file being abandoned)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
