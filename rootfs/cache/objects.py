"""The local object cache: verified file contents named by their xxh3-128, kept under a quota.

Layout under the cache directory (``--cache DIR``)::

    objects/ab/<30 hex>   one file per admitted content, named by its digest (as in the store)
    tmp/                  fetches in flight; anything here at start was left by a killed mount
    index                 LRU order and charged size of every object, oldest first
    index.clean           present only while ``index`` is known to match ``objects/``
    manifest              the last good manifest read from SOURCE (used when it is unreachable)
    bootset               digests the previous mount read during its first minutes (--prefetch)
    stats.json            counters, flushed by the running mount every few seconds

The index lives in memory while mounted. ``index.clean`` is removed when a mount starts and
written back when it stops cleanly, so after a kill -9 the index is rebuilt from ``objects/``
(LRU order then follows admission time): the directory, not the index, is the truth.

Objects are admitted by rename after their hash matched, without a per-object fsync: a mount
hashes every cached object the first time it opens it anyway (CernVM-FS checks while
downloading, we check on each mount's first use), so an object torn by a power cut is found,
removed and fetched again, and cold reads do not pay 0.8 ms of fsync per file (measured here).

Quota accounting charges each object its size rounded up to 4 KiB blocks (at least one), close
to what it costs on disk, so a cache of many small files does not overrun the disk. The quota
holds at every moment: a fetch reserves its charge before it writes a byte (so concurrent
fetches cannot overrun it together), eviction takes least recently used objects but never one an
open file holds (pinned), and when pinned objects leave no room the miss is read through without
entering the cache (see `rootfs.cache.fetch`). Deleted-but-open files therefore cannot push the
cache past its quota, the hole CernVM-FS users reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import uuid
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import xxhash

from rootfs.config.tomlconf import parse_size as parse_size  # the one size syntax
from rootfs.durable import atomic_write_bytes
from rootfs.errors import UserError

INDEX_HEADER = "rootfs-cache-index 1"
BLOCK = 4096
LOW_WATER = 0.7  # eviction brings usage down to this share of the quota (CernVM-FS cleans to 0.5)
MAP_THRESHOLD = 1 << 20
MAP_CHUNK = 16 << 20


def charge(size: int) -> int:
    """Bytes an object of *size* is charged against the quota: whole 4 KiB blocks, at least one."""
    return max(BLOCK, -(-size // BLOCK) * BLOCK)


def hash_file(path: str | bytes | os.PathLike[str]) -> str:
    """xxh3-128 hex digest of a file's bytes.

    Small files are read in one call and hashed in one shot. Large files are hashed through a
    read-only mapping: no copy into user space, which here makes hashing a page-cached GiB take
    0.12 s instead of 0.38 s with read().
    """
    return hash_and_size(path)[0]


def hash_and_size(path: str | bytes | os.PathLike[str]) -> tuple[str, int]:
    """The digest of a file and its size, from one open (what verifying thousands needs)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size < MAP_THRESHOLD:
            data = os.read(fd, size + 1)  # +1: a file grown since fstat still hashes whole
            while len(data) > size and (more := os.read(fd, 1 << 20)):
                data += more
            return xxhash.xxh3_128_hexdigest(data), len(data)
        hasher = xxhash.xxh3_128()
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mapped:
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapped)
            try:
                for offset in range(0, len(mapped), MAP_CHUNK):
                    hasher.update(view[offset : offset + MAP_CHUNK])
            finally:
                view.release()
            return str(hasher.hexdigest()), len(mapped)
    finally:
        os.close(fd)


@dataclass
class Counters:
    """What a user asks `rootfs cache stats` about; cumulative over every mount of the cache."""

    hits: int = 0
    misses: int = 0
    fetched_bytes: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    bad_objects: int = 0
    mismatches: int = 0
    source_errors: int = 0
    read_through: int = 0  # misses served without caching: open files pinned the whole quota

    @classmethod
    def load(cls, path: Path) -> Counters:
        """Counters saved at *path*; zeros when missing or unreadable (they are only statistics)."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.get("counters", {}).items() if k in known})


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of an offline verification of a cache directory."""

    objects: int
    bytes: int
    bad: tuple[str, ...]
    temp_removed: int


class ObjectCache:
    """Index, quota and LRU of the objects under a cache directory.

    All methods run on the mount's trio thread except where said: they only touch
    in-memory state or do single cheap syscalls, and the slow work (hashing, copying,
    unlinking many victims) is handed to threads by the caller.
    """

    def __init__(self, root: Path, *, quota: int | None) -> None:
        self.root = root
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.quota = quota
        self._lru: OrderedDict[str, int] = OrderedDict()
        self.used = 0  # charged to the objects in the index
        self.reserved = 0  # charged to fetches in flight (their temp files)
        self._pins: Counter[str] = Counter()
        self.verified: set[str] = set()  # hashed and found good during this mount
        self.counters = Counters()
        self.index_rebuilt = False

    # ------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Prepare the directory: clean temp files, load or rebuild the index, load counters."""
        for directory in (self.root, self.objects, self.tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name in os.listdir(self.tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp / name)
        clean = self.root / "index.clean"
        if not (clean.exists() and self._load_index()):
            self._rebuild_index()
            self.index_rebuilt = True
        with contextlib.suppress(FileNotFoundError):
            clean.unlink()
        self.counters = Counters.load(self.root / "stats.json")
        # A cache over its quota (the quota was lowered, or an older rootfs let it overrun) is
        # brought under it before anything is served; nothing is open yet, so nothing is pinned.
        self.unlink_objects(self.choose_victims())
        self.save_stats()  # `rootfs cache stats` shows this mount's quota from the start

    def close(self) -> None:
        """Write the index and counters back; the index is trusted by the next mount."""
        self.save_stats()
        lines = [INDEX_HEADER, *(f"{d}\t{c}" for d, c in self._lru.items()), ""]
        atomic_write_bytes(self.root / "index", "\n".join(lines).encode(), mode=0o600)
        atomic_write_bytes(self.root / "index.clean", b"", mode=0o600)

    def _load_index(self) -> bool:
        try:
            lines = (self.root / "index").read_text().split("\n")
        except OSError:
            return False
        if not lines or lines[0] != INDEX_HEADER:
            return False
        try:
            for line in lines[1:]:
                if line:
                    digest, charged = line.split("\t")
                    self._add(digest, int(charged))
        except ValueError:
            self._lru.clear()
            self.used = 0
            return False
        return True

    def _rebuild_index(self) -> None:
        found = []
        for digest in iter_objects(self.objects):
            try:
                st = os.stat(self.object_path(digest))
            except FileNotFoundError:
                continue
            found.append((st.st_mtime_ns, digest, charge(st.st_size)))
        self._lru.clear()
        self.used = 0
        for _, digest, charged in sorted(found):
            self._add(digest, charged)

    def stats(self) -> dict[str, object]:
        """Sizes and counters as they are now: what ``stats.json`` and a client's report hold."""
        return {
            "objects": len(self._lru),
            "bytes": self.used,
            "quota": self.quota,
            "pinned": sum(self._lru.get(d, 0) for d in self._pins),
            "counters": asdict(self.counters),
        }

    def save_stats(self) -> None:
        """Flush counters and sizes to ``stats.json`` for `rootfs cache stats`."""
        atomic_write_bytes(self.root / "stats.json", json.dumps(self.stats(), indent=1).encode())

    # ------------------------------------------------------------ lookups

    def object_path(self, digest: str) -> str:
        return f"{self.objects}/{digest[:2]}/{digest[2:]}"

    def has(self, digest: str) -> bool:
        return digest in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def touch(self, digest: str) -> None:
        """Mark *digest* most recently used."""
        if digest in self._lru:
            self._lru.move_to_end(digest)

    def pin(self, digest: str) -> None:
        """Keep *digest* from eviction while a file using it is open."""
        self._pins[digest] += 1

    def unpin(self, digest: str) -> None:
        self._pins[digest] -= 1
        if self._pins[digest] <= 0:
            del self._pins[digest]

    def new_tmp(self) -> str:
        """A fresh path in ``tmp/`` for a fetch (created by the caller)."""
        return f"{self.tmp}/{uuid.uuid4().hex}"

    # ------------------------------------------------------------ admission and eviction

    def _add(self, digest: str, charged: int) -> None:
        if digest in self._lru:
            self.used -= self._lru[digest]
        self._lru[digest] = charged
        self.used += charged

    def fits(self, size: int) -> bool:
        """Whether an object of *size* can be cached at all (it may not exceed the low water)."""
        return self.quota is None or charge(size) <= self.quota * LOW_WATER

    def admitted(self, digest: str, size: int) -> None:
        """Record an object a fetch renamed into ``objects/`` after its hash matched."""
        self._add(digest, charge(size))
        self.verified.add(digest)

    def discard(self, digest: str) -> None:
        """Forget a bad or vanished object (the caller unlinks the file)."""
        charged = self._lru.pop(digest, None)
        if charged is not None:
            self.used -= charged
        self.verified.discard(digest)

    def has_room(self, incoming: int) -> bool:
        """Whether *incoming* more bytes keep usage under the low water mark: the room for
        speculative fetches, which must never be the reason something is evicted."""
        return self.quota is None or self._charged() + charge(incoming) <= self.quota * LOW_WATER

    def room_for(self, incoming: int) -> bool:
        """Whether an object of *incoming* bytes can be fetched now without passing the quota."""
        return self.quota is None or self._charged() + charge(incoming) <= self.quota

    def reserve(self, incoming: int) -> None:
        """Charge a fetch's temp file against the quota before it is written (`room_for` first)."""
        self.reserved += charge(incoming)

    def unreserve(self, incoming: int) -> None:
        """The fetch is over: its object was admitted (and charged as such) or abandoned."""
        self.reserved -= charge(incoming)

    def over_quota(self) -> bool:
        return self.quota is not None and self._charged() > self.quota

    def _charged(self) -> int:
        return self.used + self.reserved

    def choose_victims(self, incoming: int = 0, *, target: float | None = None) -> list[str]:
        """Remove least-recently-used, unpinned objects from the index until usage plus
        *incoming* is at the low water mark (or *target* bytes); returns them for unlinking.
        """
        if target is None:
            if self.quota is None:
                return []
            target = self.quota * LOW_WATER
        goal = target - charge(incoming) if incoming else target
        victims = []
        for digest in list(self._lru):
            if self._charged() <= goal:
                break
            if digest in self._pins:
                continue
            victims.append(digest)
            self.counters.evicted_bytes += self._lru[digest]
            self.discard(digest)
        self.counters.evictions += len(victims)
        return victims

    def unlink_objects(self, digests: list[str]) -> None:
        """Delete object files (run in a thread: there may be thousands)."""
        for digest in digests:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.object_path(digest))


def iter_objects(objects: Path) -> Iterator[str]:
    """Digests of the object files under *objects* (``ab/<rest>``), skipping anything else."""
    try:
        prefixes = os.listdir(objects)
    except FileNotFoundError:
        return
    for prefix in prefixes:
        if len(prefix) != 2:
            continue
        with contextlib.suppress(NotADirectoryError, FileNotFoundError):
            for rest in os.listdir(objects / prefix):
                if len(rest) == 30:
                    yield prefix + rest


def verify_cache(root: Path) -> VerifyReport:
    """Re-hash every object of an unmounted cache, remove the bad ones and stale temp files.

    One thread, one open per object: most objects are small, and handing each to a thread
    pool cost three times the hashing itself. The index is marked unclean when anything was
    removed, so the next mount rebuilds it from the directory.
    """
    objects = root / "objects"
    temp_removed = 0
    tmp = root / "tmp"
    if tmp.is_dir():
        for name in os.listdir(tmp):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp / name)
                temp_removed += 1
    digests = list(iter_objects(objects))
    prefix = os.fsencode(objects) + b"/"
    bad = []
    total = 0
    for digest in digests:
        path = prefix + f"{digest[:2]}/{digest[2:]}".encode()
        try:
            actual, size = hash_and_size(path)
        except FileNotFoundError:
            continue  # removed meanwhile: nothing to serve, nothing to check
        except OSError:
            actual, size = "", 0  # unreadable: as good as corrupt
        total += size
        if actual != digest:
            bad.append(digest)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    if bad:
        with contextlib.suppress(FileNotFoundError):
            (root / "index.clean").unlink()
        counters = Counters.load(root / "stats.json")
        counters.bad_objects += len(bad)
        stats_path = root / "stats.json"
        try:
            data = json.loads(stats_path.read_text())
        except (OSError, ValueError):
            data = {}
        data["counters"] = asdict(counters)
        atomic_write_bytes(stats_path, json.dumps(data, indent=1).encode())
    return VerifyReport(len(digests), total, tuple(sorted(bad)), temp_removed)


@contextlib.contextmanager
def locked(cache_dir: Path) -> Iterator[None]:
    """Hold the cache directory's lock; a second mount of the same cache is a user error."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(cache_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"cache directory {cache_dir} is used by another running mount; unmount it first"
            ) from None
        yield
    finally:
        os.close(fd)
