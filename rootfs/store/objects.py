"""The content store: every file content once, named by its xxh3-128 digest.

Layout under ``<state>/store``::

    objects/ab/<30 hex>          one inode per distinct content
    variants/ab/<digest>-<meta>  same content, other metadata (hardlink mode only)
    nodes/ab/<key>               symlinks, devices, fifos, keyed by all they are (hardlink mode)
    tmp/                         objects being written

An object's inode carries the metadata (mode, owner, mtime, xattrs) of the first
entry that stored it, so ``hardlink`` mode can link host files straight to it
(space 1x, like an OSTree "bare" repository). An entry with the same content but
other metadata must not share that inode, so it gets a variant: a copy keyed by
content plus metadata. Copy mode reads only an object's bytes.

Durability: a :class:`Batch` writes new objects into ``tmp/``, then one
``syncfs`` makes their data durable before any is renamed into place, so after a
power cut an object name never points at unwritten bytes; the caller records a
manifest only after the batch commits.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import xxhash

from rootfs.store.fsmeta import read_xattrs, set_fd_metadata, set_path_metadata
from rootfs.tree.manifest import BLOCK, CHAR, FIFO, SYMLINK, Entry

CHUNK = 1 << 20
SMALL_FILE = 1 << 20  # read whole, hash, and write only if new


def hash_bytes(data: bytes) -> str:
    """xxh3-128 hex digest of *data*: the name of an object with that content."""
    return xxhash.xxh3_128_hexdigest(data)


def hash_file(path: str) -> str:
    """xxh3-128 hex digest of the file at *path*: the name of an object with its content."""
    hasher = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return str(hasher.hexdigest())


def _libc_syncfs() -> Callable[[int], int] | None:
    # CDLL(None) sees the symbols the interpreter already links, libc among them;
    # ctypes.util.find_library would run ldconfig in a subprocess on every start.
    func: Callable[[int], int] | None = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    return func


_SYNCFS = _libc_syncfs()


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding *path* (falls back to sync)."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class Stored(NamedTuple):
    """Result of an ingest: the content's digest and size, and whether it was new."""

    digest: str
    size: int
    new: bool


def _meta_key(entry: Entry) -> tuple[int, int, int, int, tuple[tuple[str, bytes], ...]]:
    return (entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs)


class Store:
    """Content-addressed objects under *root* (``<state>/store``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.variants = root / "variants"
        self.nodes = root / "nodes"
        self.tmp = root / "tmp"
        self._inode_meta: dict[str, tuple[object, ...]] = {}

    def ensure(self) -> None:
        """Create the store's directories (private: objects may be setuid)."""
        for directory in (self.root, self.objects, self.variants, self.nodes, self.tmp):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        return os.path.lexists(f"{self.objects}/{digest[:2]}/{digest[2:]}")  # hot: no pathlib

    def iter_digests(self) -> Iterator[str]:
        """Every object in the store (for GC and verification)."""
        if not self.objects.is_dir():
            return
        for prefix in sorted(os.listdir(self.objects)):
            for rest in sorted(os.listdir(self.objects / prefix)):
                yield prefix + rest

    def clean_tmp(self) -> int:
        """Remove leftovers of interrupted ingests; returns how many."""
        removed = 0
        if self.tmp.is_dir():
            for name in os.listdir(self.tmp):
                os.unlink(self.tmp / name)
                removed += 1
        return removed

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """Ingest objects that become visible together, durably, when the block exits."""
        self.ensure()
        batch = Batch(self)
        try:
            yield batch
        except BaseException:
            batch.abort()
            raise
        batch.commit()

    # -------------------------------------------------------- hardlink mode

    def _inode_matches(self, path: str, entry: Entry) -> bool:
        meta = self._inode_meta.get(path)
        if meta is None:
            st = os.lstat(path)
            meta = (
                st.st_mode & 0o7777,
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                read_xattrs(path),
            )
            self._inode_meta[path] = meta
        return meta == _meta_key(entry)

    def link_source(self, entry: Entry) -> str:
        """An inode with *entry*'s content and metadata, for ``hardlink`` mode.

        The object itself when its metadata matches, else a variant made once.
        """
        digest = entry.digest
        obj = f"{self.objects}/{digest[:2]}/{digest[2:]}"  # hot path: no pathlib
        if self._inode_matches(obj, entry):
            return obj
        key = xxhash.xxh3_64_hexdigest(repr(_meta_key(entry)).encode())
        variant = self.variants / entry.digest[:2] / f"{entry.digest[2:]}-{key}"
        if not os.path.lexists(variant):
            variant.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.tmp / os.urandom(16).hex()
            with open(obj, "rb") as src, open(tmp, "xb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                dst.flush()
                set_fd_metadata(dst.fileno(), entry)
                os.fsync(dst.fileno())
            _publish(str(tmp), str(variant))
        return str(variant)

    def node_source(self, entry: Entry) -> str:
        """A shared inode for a symlink, device or fifo entry, for ``hardlink`` mode.

        Creating an inode costs far more than linking one (on ext4 here, 0.3 ms
        against 0.01 ms), so, like ``cp -al``, hosts in hardlink mode share them;
        each distinct node is created once per store.
        """
        key = xxhash.xxh3_128_hexdigest(repr((entry.kind, entry.data, _meta_key(entry))).encode())
        path = f"{self.nodes}/{key[:2]}/{key[2:]}"
        if not os.path.lexists(path):
            os.makedirs(f"{self.nodes}/{key[:2]}", mode=0o700, exist_ok=True)
            tmp = str(self.tmp / os.urandom(16).hex())
            make_node(tmp, entry)
            set_path_metadata(tmp, entry)
            _publish(tmp, path)
        return path


def _publish(tmp: str, final: str) -> None:
    """Put the inode at *tmp* in place at *final* unless another builder got there first.

    Workers apply hosts in parallel (`forked.py`) and may make the same variant or node at
    once; a rename would let the second replace the first after hosts already linked it,
    so they would no longer share one inode. link() refuses instead, and the first one stays.
    """
    with suppress(FileExistsError):
        os.link(tmp, final, follow_symlinks=False)
    os.unlink(tmp)


def make_node(path: str, entry: Entry) -> None:
    """Create the symlink, device node or fifo *entry* describes (metadata not yet set)."""
    if entry.kind == SYMLINK:
        os.symlink(entry.target, path)
    elif entry.kind in (CHAR, BLOCK):
        fmt = stat.S_IFCHR if entry.kind == CHAR else stat.S_IFBLK
        os.mknod(path, fmt | 0o600, os.makedev(*entry.rdev))
    elif entry.kind == FIFO:
        os.mkfifo(path, 0o600)
    else:
        raise ValueError(f"{entry.path}: a {entry.kind!r} entry is not a node")


@dataclass
class Batch:
    """New objects written to ``tmp/`` and renamed into place on commit."""

    store: Store
    pending: dict[str, Path] = field(default_factory=dict)
    stored_bytes: int = 0

    def has(self, digest: str) -> bool:
        return digest in self.pending or self.store.has(digest)

    def _new_tmp(self) -> tuple[Path, int]:
        path = self.store.tmp / os.urandom(16).hex()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return path, fd

    def _keep(self, digest: str, tmp: Path, fd: int, size: int, meta: Entry) -> Stored:
        try:
            if self.has(digest):
                os.unlink(tmp)
                return Stored(digest, size, False)
            set_fd_metadata(fd, meta)
        finally:
            os.close(fd)
        self.pending[digest] = tmp
        self.stored_bytes += size
        return Stored(digest, size, True)

    def add_bytes(self, data: bytes, meta: Entry) -> Stored:
        """Store *data*; *meta* gives the new object's inode metadata."""
        digest = hash_bytes(data)
        if self.has(digest):
            return Stored(digest, len(data), False)
        tmp, fd = self._new_tmp()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return self._keep(digest, tmp, fd, len(data), meta)

    def add_stream(self, stream: BinaryIO, meta: Entry) -> Stored:
        """Store everything *stream* yields, hashing while copying."""
        first = stream.read(SMALL_FILE)
        if len(first) < SMALL_FILE:
            return self.add_bytes(first, meta)
        hasher = xxhash.xxh3_128()
        tmp, fd = self._new_tmp()
        size = 0
        try:
            chunk = first
            while chunk:
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                size += len(chunk)
                chunk = stream.read(CHUNK)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        return self._keep(hasher.hexdigest(), tmp, fd, size, meta)

    def add_file(self, path: str, meta: Entry) -> Stored:
        """Store the content of the regular file at *path*."""
        with open(path, "rb", buffering=0) as stream:
            return self.add_stream(stream, meta)

    def commit(self) -> None:
        """Make every pending object durable, then visible under its name."""
        if not self.pending:
            return
        syncfs(self.store.root)
        parents = set()
        for digest, tmp in self.pending.items():
            final = self.store.object_path(digest)
            if final.parent not in parents:
                final.parent.mkdir(mode=0o700, exist_ok=True)
                parents.add(final.parent)
            _publish(str(tmp), str(final))  # a parallel worker may have stored it meanwhile
        self.pending.clear()
        syncfs(self.store.root)

    def abort(self) -> None:
        for tmp in self.pending.values():
            try:
                os.unlink(tmp)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        self.pending.clear()
