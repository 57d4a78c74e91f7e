"""The least a pyfuse3 filesystem can do per request: a read-only passthrough of a tree.

A floor for bench/cache.py, not a feature. Everything the kernel may ask about is built
once at mount time (attributes, directory listings, symlink targets), so a handler is a
dict lookup and a reply; ``open`` opens the source file and ``read`` is an inline
``pread``. It runs under the same request loop as ``rootfs cache mount`` (`fuseloop`), with
the same options and timeouts, but with no cache, no hashing and no bookkeeping. What it
costs over bindfs is what pyfuse3 and trio cost, which no handler code can win back.

Usage: ``python -m bench.fusefloor SOURCE MOUNTPOINT`` (foreground; unmount to stop).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Sequence

import pyfuse3
import trio

from rootfs.cache.fuseloop import fuse_fds, install

TIMEOUT = 86400.0


def _attributes(st: os.stat_result, ino: int) -> pyfuse3.EntryAttributes:
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = ino
    attr.st_mode = st.st_mode
    attr.st_nlink = st.st_nlink
    attr.st_uid = st.st_uid
    attr.st_gid = st.st_gid
    attr.st_rdev = st.st_rdev
    attr.st_size = st.st_size
    attr.st_blksize = 4096
    attr.st_blocks = st.st_blocks
    attr.st_atime_ns = st.st_mtime_ns
    attr.st_mtime_ns = st.st_mtime_ns
    attr.st_ctime_ns = st.st_mtime_ns
    attr.entry_timeout = TIMEOUT
    attr.attr_timeout = TIMEOUT
    return attr


class FloorFS(pyfuse3.Operations):
    """A snapshot of SOURCE's metadata taken at mount; contents read from SOURCE."""

    def __init__(self, source: str) -> None:
        super().__init__()
        root_ino = os.lstat(source).st_ino
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.paths: dict[int, bytes] = {}
        self.children: dict[int, list[tuple[bytes, int]]] = {}
        self.links: dict[int, bytes] = {}

        def ino_of(st: os.stat_result) -> int:
            return pyfuse3.ROOT_INODE if st.st_ino == root_ino else st.st_ino

        pending = [os.fsencode(source)]
        while pending:
            directory = pending.pop()
            dir_ino = ino_of(os.lstat(directory))
            listing = []
            with os.scandir(directory) as it:
                for item in it:
                    st = item.stat(follow_symlinks=False)
                    ino = ino_of(st)
                    listing.append((item.name, ino))
                    self.attrs[ino] = _attributes(st, ino)
                    self.paths[ino] = item.path
                    if stat.S_ISDIR(st.st_mode):
                        pending.append(item.path)
                    elif stat.S_ISLNK(st.st_mode):
                        self.links[ino] = os.readlink(item.path)
            self.children[dir_ino] = sorted(listing)
        st = os.lstat(source)
        self.attrs[pyfuse3.ROOT_INODE] = _attributes(st, pyfuse3.ROOT_INODE)
        self.names = {
            (parent, name): ino for parent, kids in self.children.items() for name, ino in kids
        }

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        try:
            return self.attrs[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        ino = self.names.get((parent_inode, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        pass  # nothing is built per lookup, so nothing to release

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.links[inode]

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        kids = self.children.get(fh, [])
        for index in range(start_id, len(kids)):
            name, ino = kids[index]
            if not pyfuse3.readdir_reply(token, name, self.attrs[ino], index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        pass

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=os.open(self.paths[inode], os.O_RDONLY), keep_cache=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(fh, size, off)

    async def release(self, fh: int) -> None:
        os.close(fh)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return []


async def _serve(fs: FloorFS, mountpoint: str) -> None:
    options = set(pyfuse3.default_options) | {"fsname=rootfs-floor", "dev", "suid"}
    before = fuse_fds()
    pyfuse3.init(fs, mountpoint, options)
    session = fuse_fds() - before
    if len(session) == 1:
        install(session.pop())
    try:
        await pyfuse3.main(max_tasks=64)
    finally:
        pyfuse3.close(unmount=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    trio.run(_serve, FloorFS(argv[0]), argv[1])


if __name__ == "__main__":
    main(sys.argv[1:])
