"""The FUSE filesystem (pyfuse3 handlers): a manifest's tree, contents from the local cache.

What the kernel sees is the manifest: names, types, modes, owners, sizes, mtimes, symlink
targets, device numbers, xattrs and hardlinks, all answered from memory with long
entry/attr timeouts (attributes and directory listings are built once per manifest).
File contents come from the object cache (hit: an inline ``pread``,
or bytes read at open for small files); getting them there — fetching, verifying, reading
ahead — is `fetch.py`'s job, and the blocking calls on SOURCE live in `sourceops.py`.

Writes go through to SOURCE. A path written through this mount becomes *live*: until a
new manifest lists it, its metadata and contents are read from SOURCE (short timeouts,
``direct_io``), and so are those of a file whose source bytes no longer match the manifest.

pyfuse3 runs every handler as a trio task in one thread, so the rules are S3QL's: only
``FUSEError`` leaves a handler (``@handler`` logs anything else and answers EIO), lookup
counts are kept and dropped on ``forget``, directory listings are snapshotted at opendir
so offsets stay stable, and kernel cache invalidations are sent from a worker thread fed
by a channel, never from inside a handler.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import stat
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio

from rootfs.cache import sourceops
from rootfs.cache.fetch import Fetcher, Opened
from rootfs.cache.objects import ObjectCache
from rootfs.cache.source import Source, SourceUnavailable
from rootfs.cache.tree import ROOT_INO, Tree, child_path, fs_name, ino_for
from rootfs.errors import ManifestFormatError
from rootfs.tree.manifest import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Entry, parent_of

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

LONG_TIMEOUT = 86400.0  # manifest entries change only with a new manifest, which invalidates
LIVE_TIMEOUT = 1.0  # live paths may change on the server at any time
REFRESH_XATTR = b"user.rootfs.refresh"  # getxattr on the mount root: `rootfs cache refresh`

_IFMT = {
    FILE: stat.S_IFREG,
    DIR: stat.S_IFDIR,
    SYMLINK: stat.S_IFLNK,
    CHAR: stat.S_IFCHR,
    BLOCK: stat.S_IFBLK,
    FIFO: stat.S_IFIFO,
}


def handler(
    fn: Callable[Concatenate[CacheFS, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[CacheFS, P], Coroutine[Any, Any, R]]:
    """Let only FUSEError out of a handler: an escaping exception would kill the mount.

    OSErrors from SOURCE keep their errno (a write-through failed for a reason the caller
    should see); SourceUnavailable and anything unexpected become EIO.
    """

    async def wrapper(self: CacheFS, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except SourceUnavailable as exc:
            self.cache.counters.source_errors += 1
            log.debug("%s: source unavailable: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    functools.update_wrapper(wrapper, fn)
    return wrapper


@dataclass
class Node:
    """An inode the kernel holds (lookup count above zero), and the path it was reached by."""

    ino: int
    path: str
    entry: Entry | None  # the manifest entry, or None when only SOURCE knows the path
    lookups: int = 0
    page_digest: str = ""  # the content whose pages the kernel may have cached
    gone: bool = False  # removed through this mount while the kernel still held it


@dataclass
class Handle:
    """An open file: a cached object, or a SOURCE file (its fd, used in threads)."""

    node: Node
    opened: Opened | None = None  # the cached object (bytes or fd)
    fd: int = -1  # the SOURCE file, when not cached

    @property
    def source(self) -> bool:
        return self.opened is None


ListedName = tuple[bytes, str, Entry | None, pyfuse3.EntryAttributes]  # name, path, entry, attrs


@dataclass
class Listing:
    """A directory snapshot taken at opendir: readdir offsets index into it, so they stay
    valid even when a new manifest arrives while a listing is in progress."""

    names: list[ListedName]


@dataclass
class Options:
    """How a mount behaves (from the CLI)."""

    read_only: bool = False
    refresh_interval: float = 60.0
    boot_window: float = 120.0
    readahead: int = 4  # background fetches of a directory's files after its first miss
    # Subtrees the client writes its own state in (e.g. /var): always served from SOURCE, so
    # what a host writes there is seen again after it remounts, not hidden by the manifest.
    host_state: tuple[str, ...] = ()


@dataclass
class Invalidation:
    ino: int = 0
    attr_only: bool = False
    parent: int = 0
    name: bytes = b""


class CacheFS(pyfuse3.Operations):
    """pyfuse3 Operations over a manifest tree, an ObjectCache and a Source."""

    supports_dot_lookup = False

    def __init__(
        self, tree: Tree, digest: str, cache: ObjectCache, source: Source, options: Options
    ) -> None:
        super().__init__()
        self.tree = tree
        self.manifest_digest = digest
        self.cache = cache
        self.source = source
        self.options = options
        root = tree.get("/")
        if root is None:
            raise ManifestFormatError(f"manifest {digest}: it has no root entry '/'")
        self.nodes: dict[int, Node] = {ROOT_INO: Node(ROOT_INO, "/", root, lookups=1)}
        self.live: set[str] = set()
        self.live_trees: set[str] = set()
        self.state_trees = frozenset(options.host_state)
        self._live_ino: dict[str, int] = {}
        self._handles: dict[int, Handle] = {}
        self._listings: dict[int, Listing] = {}
        # Built from the manifest on first use and shared until the next one (`_switch`):
        # attributes by path, and each directory's listing.
        self._attr_cache: dict[str, pyfuse3.EntryAttributes] = {}
        self._dir_cache: dict[str, list[ListedName]] = {}
        self._next_fh = 1
        self._diverged_logged: set[str] = set()
        self._refresh_lock = trio.Lock()
        # Unbounded on purpose: a dropped invalidation would let the kernel serve stale pages for a
        # day (LONG_TIMEOUT). Each manifest switch queues at most one per inode the kernel knows,
        # so the backlog is bounded by the inode table, and the worker drains it at once.
        self._inval_send, self._inval_recv = trio.open_memory_channel[Invalidation | trio.Event](
            math.inf
        )
        self.fetcher = Fetcher(
            tree,
            cache,
            source,
            is_live=self.is_live,
            on_diverged=self._diverged,
            readahead=options.readahead,
            boot_window=options.boot_window,
        )

    # ------------------------------------------------------------ attributes

    def _entry_attrs(self, ino: int, entry: Entry, nlink: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.entry_timeout = LONG_TIMEOUT
        attr.attr_timeout = LONG_TIMEOUT
        attr.st_mode = _IFMT[entry.kind] | entry.mode
        attr.st_nlink = nlink
        attr.st_uid = entry.uid
        attr.st_gid = entry.gid
        if entry.kind in (CHAR, BLOCK):
            attr.st_rdev = os.makedev(*entry.rdev)
        attr.st_size = entry.size
        attr.st_blksize = 4096
        attr.st_blocks = -(-entry.size // 4096) * 8
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = entry.mtime_ns
        return attr

    def _manifest_attrs(self, path: str) -> pyfuse3.EntryAttributes:
        """The attributes of manifest entry *path*: built once per manifest, shared by every
        reply (pyfuse3 copies them out), so never to be modified."""
        attr = self._attr_cache.get(path)
        if attr is None:
            tree = self.tree
            attr = self._entry_attrs(tree.ino[path], tree.manifest.entries[path], tree.links(path))
            self._attr_cache[path] = attr
        return attr

    @staticmethod
    def _stat_attrs(ino: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.entry_timeout = LIVE_TIMEOUT
        attr.attr_timeout = LIVE_TIMEOUT
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
            setattr(attr, name, getattr(st, name))
        attr.st_blksize = st.st_blksize
        attr.st_blocks = st.st_blocks
        attr.st_atime_ns = st.st_atime_ns
        attr.st_mtime_ns = st.st_mtime_ns
        attr.st_ctime_ns = st.st_ctime_ns
        return attr

    def is_live(self, path: str) -> bool:
        """Whether SOURCE, not the manifest, says what *path* is."""
        if path in self.live:
            return True
        if self.live_trees or self.state_trees:
            probe = path
            while probe != "/":
                if probe in self.live_trees or probe in self.state_trees:
                    return True
                probe = parent_of(probe)
        return False

    def _resolves_live(self, path: str) -> bool:
        return self.is_live(path) or (
            path not in self.tree.manifest and self.is_live(parent_of(path))
        )

    def _ino_of_live(self, path: str, st: os.stat_result) -> int:
        existing = self._live_ino.get(path)
        if existing is not None and existing in self.nodes and not self.nodes[existing].gone:
            return existing
        entry = self.tree.get(path)
        kind = {v: k for k, v in _IFMT.items()}.get(stat.S_IFMT(st.st_mode), "s")
        if entry is not None and entry.kind == kind:
            ino = self.tree.ino[path]
        else:
            ino = ino_for("live:" + kind, f"{path}\0{st.st_ino}")
        self._live_ino[path] = ino
        return ino

    async def _resolve(self, path: str) -> tuple[int, pyfuse3.EntryAttributes, Entry | None]:
        """Inode, attributes and manifest entry (None when live) of *path*; ENOENT if none."""
        if self._resolves_live(path):
            st = await self._src(os.lstat, self.source.path(path))
            ino = self._ino_of_live(path, st)
            return ino, self._stat_attrs(ino, st), None
        entry = self.tree.get(path)
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attr = self._manifest_attrs(path)
        return attr.st_ino, attr, entry

    async def _attrs_of(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.gone or (node.entry is not None and not self.is_live(node.path)):
            if node.entry is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            if not node.gone and self.tree.get(node.path) is node.entry:
                attr = self._manifest_attrs(node.path)
                if attr.st_ino == node.ino:
                    return attr
            attr = self._entry_attrs(node.ino, node.entry, self.tree.links(node.path))
            if node.gone:
                attr.st_nlink = 0
            return attr
        st = await self._src(os.lstat, self.source.path(node.path))
        return self._stat_attrs(node.ino, st)

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def _remember(self, ino: int, path: str, entry: Entry | None) -> Node:
        """Count one more kernel reference to *ino* (every reply carrying an entry does)."""
        node = self.nodes.get(ino)
        if node is None:
            node = self.nodes[ino] = Node(ino, path, entry)
        elif node.gone or (node.path != path and node.entry is None):
            node.path, node.entry, node.gone = path, entry, False
        node.lookups += 1
        return node

    async def _src(self, fn: Callable[..., R], *args: object) -> R:
        """Call into SOURCE in a thread; errors meaning "source gone" become SourceUnavailable."""
        return await self.source.call_checked(fn, *args)

    # ------------------------------------------------------------ lookups and attributes

    @handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        path = child_path(parent.path, name)
        ino, attr, entry = await self._resolve(path)
        self._remember(ino, path, entry)
        return attr

    @handler
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is None:
                continue
            node.lookups -= count
            if node.lookups <= 0 and ino != ROOT_INO:
                del self.nodes[ino]

    @handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._attrs_of(self._node(inode))

    @handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if node.entry is not None and not self.is_live(node.path):
            if node.entry.kind != SYMLINK:
                raise pyfuse3.FUSEError(errno.EINVAL)
            return node.entry.target.encode("utf-8", "surrogateescape")
        return os.fsencode(await self._src(os.readlink, self.source.path(node.path)))

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if inode == ROOT_INO and name == REFRESH_XATTR:
            return (await self.refresh(wait=True)).encode()
        if node.entry is not None and not self.is_live(node.path):
            text = name.decode("utf-8", "surrogateescape")
            for key, value in node.entry.xattrs:
                if key == text:
                    return value
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return await self._src(sourceops.getxattr, self.source.path(node.path), name)

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._node(inode)
        if node.entry is not None and not self.is_live(node.path):
            return [k.encode("utf-8", "surrogateescape") for k, _ in node.entry.xattrs]
        names = await self._src(sourceops.listxattr, self.source.path(node.path))
        return [os.fsencode(n) for n in names]

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.cache.root)
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(data, name, getattr(st, name))
        data.f_files = len(self.tree.manifest)
        data.f_ffree = data.f_favail = st.f_ffree
        data.f_namemax = 255
        return data

    # ------------------------------------------------------------ directories

    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        names: list[ListedName]
        if node.entry is not None and not self.is_live(node.path):
            cached = self._dir_cache.get(node.path)
            if cached is None:
                entries = self.tree.manifest.entries
                cached = self._dir_cache[node.path] = [
                    (fs_name(path), path, entries[path], self._manifest_attrs(path))
                    for path in self.tree.children.get(node.path, ())
                ]
            names = cached
        else:
            names = []
            listing = await self._src(sourceops.list_dir, self.source.path(node.path))
            for name, st in listing:
                path = child_path(node.path, name)
                if self._resolves_live(path) or path not in self.tree.manifest:
                    ino = self._ino_of_live(path, st)
                    names.append((name, path, None, self._stat_attrs(ino, st)))
                else:
                    entry = self.tree.manifest.entries[path]
                    names.append((name, path, entry, self._manifest_attrs(path)))
        fh = self._new_fh()
        self._listings[fh] = Listing(names)
        return fh

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # pyfuse3 answers READDIRPLUS: every entry the kernel accepts counts as a lookup.
        names = self._listings[fh].names
        for index in range(start_id, len(names)):
            name, path, entry, attr = names[index]
            if not pyfuse3.readdir_reply(token, name, attr, index + 1):
                break
            self._remember(attr.st_ino, path, entry)

    @handler
    async def releasedir(self, fh: int) -> None:
        self._listings.pop(fh, None)

    # ------------------------------------------------------------ reading files

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        writing = flags & os.O_ACCMODE != os.O_RDONLY
        if writing:
            self._check_writable()
            self._make_live(node.path)
        fh = self._new_fh()
        entry = node.entry
        if not writing and entry is not None and entry.kind == FILE and not self.is_live(node.path):
            if entry.size == 0:
                self._handles[fh] = Handle(node, opened=Opened("", data=b""))
                return pyfuse3.FileInfo(fh=fh, keep_cache=True)
            opened = await self.fetcher.open_cached(node.path, entry)
            if opened is not None:
                self._handles[fh] = Handle(node, opened=opened)
                keep = node.page_digest == entry.digest
                node.page_digest = entry.digest
                return pyfuse3.FileInfo(fh=fh, keep_cache=keep)
        # SOURCE serves it: live, diverged from the manifest, or too big to cache.
        node.page_digest = ""
        open_flags = (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_CLOEXEC
        fd = await self._src(os.open, self.source.path(node.path), open_flags)
        self._handles[fh] = Handle(node, fd=fd)
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    def _diverged(self, path: str, why: str) -> None:
        """SOURCE holds something else than the manifest says: serve SOURCE as it is."""
        self.cache.counters.mismatches += 1
        if path not in self._diverged_logged:
            self._diverged_logged.add(path)
            log.warning("%s %s; serving it from the source, uncached", path, why)
        self._make_live(path)
        for member in self.tree.group_of(path):
            ino = self.tree.ino.get(member)
            if ino is not None:
                self._queue(Invalidation(ino=ino))

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handles[fh]
        if (opened := handle.opened) is not None:
            if opened.data is not None:
                return opened.data[off : off + size]
            return os.pread(opened.fd, size, off)
        return await self._src(os.pread, handle.fd, size, off)

    @handler
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.opened is not None:
            self.fetcher.close(handle.opened)
        elif handle.fd >= 0:
            await self._src(os.close, handle.fd)

    # No flush handler: the base class answers ENOSYS once and the kernel stops sending
    # FLUSH on every close(2), one request per file less. Writes go straight to SOURCE.

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        handle = self._handles[fh]
        if handle.source:
            await self._src(os.fdatasync if datasync else os.fsync, handle.fd)

    # ------------------------------------------------------------ writing through

    def _check_writable(self) -> None:
        if self.options.read_only:
            raise pyfuse3.FUSEError(errno.EROFS)
        if not self.source.online:
            raise pyfuse3.FUSEError(errno.EIO)

    def _make_live(self, *paths: str) -> None:
        for path in paths:
            for member in self.tree.group_of(path):
                self.live.add(member)

    def _child(self, parent_inode: int, name: bytes) -> tuple[Node, str]:
        parent = self._node(parent_inode)
        return parent, child_path(parent.path, name)

    async def _created(self, path: str) -> pyfuse3.EntryAttributes:
        st = await self._src(os.lstat, self.source.path(path))
        ino = self._ino_of_live(path, st)
        self._remember(ino, path, None)
        return self._stat_attrs(ino, st)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles[fh]
        if not handle.source:
            raise pyfuse3.FUSEError(errno.EBADF)
        return await self._src(os.pwrite, handle.fd, buf, off)

    @handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._check_writable()
        node = self._node(inode)
        self._make_live(node.path)
        handle = self._handles.get(fh) if fh is not None else None
        target: str | int = handle.fd if handle is not None and handle.source else ""
        await self._src(
            sourceops.apply_setattr, target or self.source.path(node.path), attr, fields
        )
        return await self._attrs_of(node)

    @handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._check_writable()
        parent, path = self._child(parent_inode, name)
        self._make_live(path, parent.path)
        fd = await self._src(
            sourceops.create,
            self.source.path(path),
            flags | os.O_CREAT | os.O_CLOEXEC,
            mode,
            ctx.uid,
            ctx.gid,
        )
        attr = await self._created(path)
        fh = self._new_fh()
        self._handles[fh] = Handle(self.nodes[attr.st_ino], fd=fd)
        return pyfuse3.FileInfo(fh=fh, direct_io=True), attr

    @handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._check_writable()
        parent, path = self._child(parent_inode, name)
        self._make_live(path, parent.path)
        await self._src(sourceops.make, "dir", self.source.path(path), mode, 0, ctx.uid, ctx.gid)
        return await self._created(path)

    @handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._check_writable()
        parent, path = self._child(parent_inode, name)
        self._make_live(path, parent.path)
        await self._src(
            sourceops.make, "node", self.source.path(path), mode, rdev, ctx.uid, ctx.gid
        )
        return await self._created(path)

    @handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._check_writable()
        parent, path = self._child(parent_inode, name)
        self._make_live(path, parent.path)
        await self._src(sourceops.make_symlink, self.source.path(path), target, ctx.uid, ctx.gid)
        return await self._created(path)

    @handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._check_writable()
        node = self._node(inode)
        parent, path = self._child(new_parent_inode, new_name)
        self._make_live(node.path, path, parent.path)
        await self._src(sourceops.link, self.source.path(node.path), self.source.path(path))
        attr = await self._attrs_of(node)
        node.lookups += 1
        return attr

    async def _remove(self, parent_inode: int, name: bytes, fn: Callable[[str], None]) -> None:
        self._check_writable()
        parent, path = self._child(parent_inode, name)
        self._make_live(path, parent.path)
        await self._src(fn, self.source.path(path))
        for node in self.nodes.values():
            if node.path == path:
                node.gone = True

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(parent_inode, name, os.unlink)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove(parent_inode, name, os.rmdir)

    @handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        self._check_writable()
        old_parent, old = self._child(parent_inode_old, name_old)
        new_parent, new = self._child(parent_inode_new, name_new)
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        self._make_live(old, new, old_parent.path, new_parent.path)
        self.live_trees.update((old, new))
        await self._src(
            sourceops.rename,
            self.source.path(old),
            self.source.path(new),
            bool(flags & pyfuse3.RENAME_NOREPLACE),
        )
        for node in self.nodes.values():
            if node.path == new:
                node.gone = True
        for node in self.nodes.values():
            if node.path == old or node.path.startswith(old + "/"):
                node.path = new + node.path[len(old) :]
                node.entry = None  # SOURCE says what it is now

    @handler
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._check_writable()
        node = self._node(inode)
        self._make_live(node.path)
        await self._src(sourceops.setxattr, self.source.path(node.path), name, value)

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self._check_writable()
        node = self._node(inode)
        self._make_live(node.path)
        await self._src(sourceops.removexattr, self.source.path(node.path), name)

    # ------------------------------------------------------------ new manifests

    async def refresh(self, *, wait: bool = False) -> str:
        """Read SOURCE's manifest; if it is new, switch to it and invalidate what changed.

        Invalidations are queued to the invalidation task (never sent from a handler);
        with *wait*, return once the kernel has processed them.
        """
        async with self._refresh_lock:
            manifest, data, digest = await self.source.read_manifest()
            if digest == self.manifest_digest:
                return f"unchanged {digest}"
            tree = await trio.to_thread.run_sync(Tree, manifest)
            if tree.get("/") is None:
                raise pyfuse3.FUSEError(errno.EIO)
            changed = self._switch(tree, digest)
            try:
                await trio.to_thread.run_sync(_save_manifest, self.cache.root, data)
            except OSError as exc:  # e.g. ENOSPC: the mount goes on; only offline mounts need it
                log.warning("could not keep a copy of the new manifest: %s", exc)
            log.info("new manifest %s: %d known inodes changed", digest, changed)
        if wait:
            done = trio.Event()
            await self._inval_send.send(done)
            with trio.move_on_after(10):
                await done.wait()
        return f"refreshed {digest} ({changed} changed)"

    def _switch(self, tree: Tree, digest: str) -> int:
        old_live = self.live | self.live_trees
        # A path written through stays live until the new manifest lists it.
        keep = {p for p in self.live if p not in tree.manifest}
        for path in list(keep):
            while path != "/":
                path = parent_of(path)
                keep.add(path)
        self.live = keep
        self.live_trees = {p for p in self.live_trees if p not in tree.manifest}
        self.tree, self.manifest_digest = tree, digest
        self._attr_cache, self._dir_cache = {}, {}
        self.fetcher.use_tree(tree)
        changed = 0
        for node in list(self.nodes.values()):
            if node.gone:
                continue
            entry = tree.get(node.path)
            was_live = node.entry is None or node.path in old_live
            if entry is None or tree.ino[node.path] != node.ino:
                if node.ino != ROOT_INO and not self.is_live(node.path):
                    parent = tree.ino.get(parent_of(node.path), 0)
                    if parent and parent in self.nodes:
                        self._queue(Invalidation(parent=parent, name=fs_name(node.path)))
                    changed += 1
                continue
            if was_live or entry != node.entry:
                same_data = (
                    not was_live and node.entry is not None and node.entry.same_content(entry)
                )
                self._queue(Invalidation(ino=node.ino, attr_only=same_data))
                if not same_data:
                    node.page_digest = ""
                node.entry = entry
                changed += 1
        return changed

    def _queue(self, item: Invalidation) -> None:
        self._inval_send.send_nowait(item)  # never blocks: the channel is unbounded

    async def run_invalidations(self) -> None:
        """Send queued invalidations to the kernel from a worker thread (the S3QL way)."""
        async for item in self._inval_recv:
            if isinstance(item, trio.Event):
                item.set()
                continue
            await trio.to_thread.run_sync(_invalidate, item)


def _invalidate(item: Invalidation) -> None:
    try:
        if item.ino:
            pyfuse3.invalidate_inode(item.ino, item.attr_only)
        else:
            pyfuse3.invalidate_entry(item.parent, item.name)
    except OSError as exc:  # ENOENT: the kernel had already forgotten it
        log.debug("invalidation %s: %s", item, exc)


def _save_manifest(root: os.PathLike[str] | str, data: bytes) -> None:
    from pathlib import Path

    from rootfs.durable import atomic_write_bytes

    atomic_write_bytes(Path(root) / "manifest", data, mode=0o600)
