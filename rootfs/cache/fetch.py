"""Getting file contents into the local cache: fetch on a miss, verify, read ahead, prefetch.

The filesystem (`fs.py`) asks `Fetcher.open_cached` for a file's object. A cached object is
served once it is known good: each is hashed on its first open in this mount (small ones as
they are read whole at open, larger ones in a thread above a MiB). A missing one is
fetched from SOURCE in a thread, hashed while copied, and admitted (renamed into
``objects/``) only if the hash matches the manifest; otherwise the path has diverged and
SOURCE serves it as it is. One task at a time works on a digest; others wait for it.

Background fetches fill the cache ahead of readers: read-ahead takes a directory's other files
after its first miss, prefetch takes the previous mount's boot set. Neither ever causes an
eviction, and their failures are only logged.

The quota holds at every moment (`ObjectCache`): a fetch reserves its charge first, evicting
least recently used objects if it must. When the objects open files hold (pinned) leave no room,
the miss is *read through*: copied from SOURCE into memory (a memfd) and hashed on the way,
served from there once the hash matched, and dropped at close without entering the cache. So
the disk never holds more than the quota; the price is memory for such files while they are
open. When pinned objects are released, the cache is brought back under the quota at once.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pyfuse3
import trio
import xxhash

from rootfs.cache.objects import ObjectCache, hash_file
from rootfs.cache.source import (
    Source,
    SourceUnavailable,
    fetch_into,
    fetch_into_fd,
    unlink_quietly,
)
from rootfs.cache.tree import Tree
from rootfs.tree.manifest import FILE, Entry, parent_of

log = logging.getLogger(__name__)

R = TypeVar("R")

SMALL = 128 << 10  # objects up to this size are read whole at open and served from memory
INLINE_VERIFY = 1 << 20  # hashed in the trio thread up to this size: about as long as the hop
# to a worker thread would take, and the reader waits for it either way
READAHEAD_MAX = 16 << 20  # larger files are fetched only when opened


@dataclass
class Opened:
    """A verified cached object, open: its bytes (small objects, read whole at open) or an fd
    (larger ones, pinned until `Fetcher.close` so eviction never takes one a reader holds).
    A read-through copy is an fd on memory, outside the cache (`cached` False)."""

    digest: str
    fd: int = -1
    data: bytes | None = None
    cached: bool = True


class Fetch(enum.Enum):
    """How a fetch ended."""

    ADMITTED = "admitted"  # the object is in the cache now
    UNCACHED = "uncached"  # SOURCE must serve the path (it differs from the manifest, ENOSPC)
    NO_ROOM = "no-room"  # the quota is held by pinned objects (or, speculative, past low water)


class Fetcher:
    """Fetches, verifies and reads ahead for one mount."""

    def __init__(
        self,
        tree: Tree,
        cache: ObjectCache,
        source: Source,
        *,
        is_live: Callable[[str], bool],
        on_diverged: Callable[[str, str], None],
        readahead: int,
        boot_window: float,
    ) -> None:
        self._tree = tree
        self.cache = cache
        self.source = source
        self._is_live = is_live  # SOURCE, not the manifest, says what the path is
        self._on_diverged = on_diverged  # SOURCE's bytes differ from the manifest's
        self._readahead = readahead
        self.boot_window = boot_window
        self.started = time.monotonic()
        self.boot_set: dict[str, None] = {}  # digests opened in the boot window, in order
        self._inflight: dict[str, trio.Event] = {}
        self._readahead_dirs: set[str] = set()
        self._readahead_send, self._readahead_recv = trio.open_memory_channel[tuple[str, str, int]](
            math.inf
        )

    def use_tree(self, tree: Tree) -> None:
        """A new manifest is in force: read ahead under it from now on."""
        self._tree = tree
        self._readahead_dirs.clear()

    def close(self, opened: Opened) -> None:
        """The reader is done with *opened*; if the cache was held over its quota only by what
        readers held, it goes back under it now, not at the next miss."""
        if opened.fd >= 0:
            os.close(opened.fd)
            if opened.cached:
                self.cache.unpin(opened.digest)
                if self.cache.over_quota():
                    self._evict(0)

    async def open_cached(self, path: str, entry: Entry) -> Opened | None:
        """The verified cached object of *entry* (at *path*), open, fetching it if needed.

        None when SOURCE must serve the file instead (its bytes differ from the manifest,
        or the object cannot be cached). One task at a time works on a given digest; the
        others wait for it and then find the object cached.
        """
        digest, size = entry.digest, entry.size
        fetched_here = False
        while True:
            event = self._inflight.get(digest)
            if event is not None:
                await event.wait()
                continue
            if self.cache.has(digest):
                if digest in self.cache.verified or size <= SMALL:
                    opened = self._open_object(digest, size)
                    if opened is not None:
                        if not fetched_here:
                            self.cache.counters.hits += 1
                        self._note_boot(digest)
                        return opened
                    continue
                await self._guarded(digest, self._verify(digest, size))
                continue
            self._read_ahead(path)
            outcome = await self._guarded(digest, self._fetch(path, digest, size))
            if outcome is Fetch.NO_ROOM:
                return await self._read_through(path, digest)
            if outcome is Fetch.UNCACHED:
                return None
            fetched_here = True

    async def _guarded(self, digest: str, work: Awaitable[R]) -> R:
        event = self._inflight[digest] = trio.Event()
        try:
            return await work
        finally:
            del self._inflight[digest]
            event.set()

    def _open_object(self, digest: str, size: int) -> Opened | None:
        """Open a cached object inline (a local file: cheap); None if it was bad or gone."""
        path = self.cache.object_path(digest)
        try:
            if size <= SMALL:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    data = os.read(fd, size + 1)  # one call; a longer object fails its hash
                finally:
                    os.close(fd)
                if digest not in self.cache.verified:
                    if xxhash.xxh3_128_hexdigest(data) != digest:
                        self._drop_bad(digest)
                        return None
                    self.cache.verified.add(digest)
                self.cache.touch(digest)
                return Opened(digest, data=data)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self.cache.discard(digest)
            return None
        self.cache.touch(digest)
        self.cache.pin(digest)
        return Opened(digest, fd=fd)

    async def _verify(self, digest: str, size: int) -> None:
        path = self.cache.object_path(digest)
        good = False
        try:
            # The object's own size, not the manifest's: a corrupted object may be longer.
            if size <= INLINE_VERIFY and os.stat(path).st_size <= INLINE_VERIFY:
                good = hash_file(path) == digest
            else:
                good = await trio.to_thread.run_sync(hash_file, path) == digest
        except FileNotFoundError:
            self.cache.discard(digest)
            return
        if good:
            self.cache.verified.add(digest)
        else:
            self._drop_bad(digest)

    def _drop_bad(self, digest: str) -> None:
        log.warning("cached object %s does not match its name; removed, fetching again", digest)
        self.cache.counters.bad_objects += 1
        self.cache.discard(digest)
        unlink_quietly(str(self.cache.object_path(digest)))

    def _evict(self, incoming: int, target: float | None = None) -> None:
        # Inline on purpose: an object chosen for eviction is out of the index at once, and
        # unlinking it here means a fetch admitting the same digest again cannot race a
        # late unlink. Eviction runs rarely and brings usage well under the quota.
        victims = self.cache.choose_victims(incoming, target=target)
        self.cache.unlink_objects(victims)
        if victims:
            log.info("evicted %d objects; %d bytes cached", len(victims), self.cache.used)

    async def _fetch(
        self, path: str, digest: str, size: int, *, speculative: bool = False
    ) -> Fetch:
        """Copy *path* from SOURCE into the cache, admitted under *digest* if its hash matches.

        The fetch's charge is reserved before a byte is written. A *speculative* fetch (read-ahead,
        prefetch) never evicts: it needs room under the low water mark.
        """
        if not self.cache.fits(size):
            return Fetch.UNCACHED
        if not self.source.online:
            raise SourceUnavailable(f"{path}: source offline")
        if speculative:
            if not self.cache.has_room(size):
                return Fetch.NO_ROOM
        elif not self.cache.room_for(size):
            self._evict(size)
            if not self.cache.room_for(size):
                return Fetch.NO_ROOM  # what is left is pinned by open files
        self.cache.reserve(size)
        try:
            tmp = await self._copy_verified(path, digest, size)
        finally:
            self.cache.unreserve(size)
        if tmp is None:
            return Fetch.UNCACHED
        # No checkpoint since the reservation ended: the object takes its place in one step.
        final = self.cache.object_path(digest)
        try:
            os.rename(tmp, final)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final), mode=0o700, exist_ok=True)
            os.rename(tmp, final)
        self.cache.admitted(digest, size)
        self.cache.counters.misses += 1
        self.cache.counters.fetched_bytes += size
        return Fetch.ADMITTED

    async def _copy_verified(self, path: str, digest: str, size: int) -> str | None:
        """A temp file holding *path*'s bytes from SOURCE, hashed as *digest*; None when SOURCE
        must serve the path instead (its bytes differ, it is gone, or the disk is full)."""
        for attempt in range(2):
            tmp = self.cache.new_tmp()
            try:
                fetched = await self.source.call_checked(fetch_into, self.source.path(path), tmp)
            except OSError as exc:
                unlink_quietly(tmp)
                if exc.errno == errno.ENOSPC and attempt == 0:
                    self._evict(size, target=self.cache.used * 0.7)
                    continue
                if exc.errno != errno.ENOSPC:
                    self._source_failed(path, exc)
                return None
            except BaseException:
                unlink_quietly(tmp)
                raise
            if fetched.digest != digest:
                unlink_quietly(tmp)
                self._on_diverged(path, "differs on the source from the manifest")
                return None
            return tmp
        return None

    def _source_failed(self, path: str, exc: OSError) -> None:
        """A read of SOURCE failed: the path is gone or changed type (it diverged), or the error
        is SOURCE's own (raised on)."""
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENOTDIR):
            self._on_diverged(path, "is no longer a file on the source")
            return
        raise exc

    async def _read_through(self, path: str, digest: str) -> Opened | None:
        """Serve a miss without caching it: a verified copy in memory, gone at close."""
        fd = os.memfd_create("rootfs-read-through", os.MFD_CLOEXEC)
        try:
            fetched = await self.source.call_checked(fetch_into_fd, self.source.path(path), fd)
        except OSError as exc:
            os.close(fd)
            self._source_failed(path, exc)
            return None
        except BaseException:
            os.close(fd)
            raise
        if fetched.digest != digest:
            os.close(fd)
            self._on_diverged(path, "differs on the source from the manifest")
            return None
        counters = self.cache.counters
        counters.misses += 1
        counters.read_through += 1
        counters.fetched_bytes += fetched.size
        if counters.read_through == 1 or counters.read_through % 1000 == 0:
            log.warning(
                "cache quota held by open files: %s read through, uncached (%d so far)",
                path,
                counters.read_through,
            )
        return Opened(digest, fd=fd, cached=False)

    def _note_boot(self, digest: str) -> None:
        if time.monotonic() - self.started < self.boot_window:
            self.boot_set[digest] = None

    async def prefetch(self, digests: list[str], *, parallel: int = 4) -> int:
        """Fetch the given objects into the cache, *parallel* at a time; returns how many."""
        wanted = self._tree.file_paths()
        jobs = [(d, *wanted[d]) for d in digests if d in wanted and not self.cache.has(d)]
        send, recv = trio.open_memory_channel[tuple[str, str, int]](len(jobs) or 1)
        for job in jobs:
            send.send_nowait(job)
        send.close()
        fetched = 0

        async def worker() -> None:
            nonlocal fetched
            async for digest, path, size in recv:
                if await self._fetch_quietly(digest, path, size, "prefetch"):
                    fetched += 1  # not `fetched += await ...`: that reads `fetched` too early

        async with trio.open_nursery() as nursery:
            for _ in range(parallel):
                nursery.start_soon(worker)
        return fetched

    def _read_ahead(self, path: str) -> None:
        """On the first miss in a directory, queue its other uncached files for fetching.

        Whatever walks a tree (tar, cp, a booting system) reads a directory's files one after
        another, each miss costing a round trip to SOURCE; fetching the siblings in parallel in
        the background turns most of those misses into hits. Large files stay on demand, and
        nothing is read ahead once the cache would have to evict to make room.
        """
        if self._readahead <= 0 or not self.source.online:
            return
        parent = parent_of(path)
        if parent in self._readahead_dirs:
            return
        self._readahead_dirs.add(parent)
        for sibling in self._tree.children.get(parent, ()):
            entry = self._tree.get(sibling)
            if (
                entry is None
                or entry.kind != FILE
                or not 0 < entry.size <= READAHEAD_MAX
                or sibling == path
                or self.cache.has(entry.digest)
                or entry.digest in self._inflight
                or self._is_live(sibling)
                or not self.cache.has_room(entry.size)
            ):
                continue
            self._readahead_send.send_nowait((entry.digest, sibling, entry.size))

    async def run_readahead(self) -> None:
        """Serve the read-ahead queue with the configured number of workers until cancelled."""

        async def worker() -> None:
            async for digest, path, size in self._readahead_recv:
                # Skipped without a fetch if the cache filled up since this was queued.
                await self._fetch_quietly(digest, path, size, "read-ahead")

        async with trio.open_nursery() as nursery:
            for _ in range(self._readahead):
                nursery.start_soon(worker)

    async def _fetch_quietly(self, digest: str, path: str, size: int, why: str) -> bool:
        """A background fetch: skipped when cached, under way or no longer in the manifest;
        failures are only logged."""
        entry = self._tree.get(path)
        if entry is None or entry.digest != digest or self._is_live(path):
            return False
        if not self.source.online:
            return False  # the refresher notices when it is back; no point queueing failures
        if self.cache.has(digest) or digest in self._inflight:
            return False
        try:
            outcome = await self._guarded(
                digest, self._fetch(path, digest, size, speculative=True)
            )
        except (OSError, SourceUnavailable, pyfuse3.FUSEError) as exc:
            log.info("%s of %s failed: %s", why, path, exc)
            return False
        return outcome is Fetch.ADMITTED
