"""Read and write inode metadata (mode, owner, mtime, xattrs) the way manifests record it.

Order matters when writing: chown clears setuid/setgid bits and
``security.capability``, so ownership comes first, then mode, then xattrs, and
the mtime last (anything before it could bump it).
"""

from __future__ import annotations

import errno
import os
import stat

from rootfs.tree.manifest import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Entry, Xattrs

KIND_OF_MODE = {
    stat.S_IFREG: FILE,
    stat.S_IFDIR: DIR,
    stat.S_IFLNK: SYMLINK,
    stat.S_IFCHR: CHAR,
    stat.S_IFBLK: BLOCK,
    stat.S_IFIFO: FIFO,
}


def kind_of(st: os.stat_result) -> str | None:
    """Manifest type letter of a stat result, None for sockets and the unknown."""
    return KIND_OF_MODE.get(stat.S_IFMT(st.st_mode))


def read_xattrs(path: str | bytes | int) -> Xattrs:
    """All extended attributes of *path* (not following symlinks), sorted by name."""
    follow = isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EPERM):
            return ()
        raise
    if not names:
        return ()
    pairs = []
    for name in sorted(names):
        try:
            pairs.append((name, os.getxattr(path, name, follow_symlinks=follow)))
        except OSError as exc:
            if exc.errno != errno.ENODATA:  # removed while we looked
                raise
    return tuple(pairs)


def _sync_xattrs(path: str | int, wanted: Xattrs, *, fresh: bool) -> None:
    follow = isinstance(path, int)
    if not fresh:
        present = set(os.listxattr(path, follow_symlinks=follow))
        for name in present - {name for name, _ in wanted}:
            os.removexattr(path, name, follow_symlinks=follow)
    for name, value in wanted:
        os.setxattr(path, name, value, follow_symlinks=follow)


def set_fd_metadata(fd: int, entry: Entry, *, fresh: bool = True) -> None:
    """Give an open file the owner, mode, xattrs and mtime *entry* records."""
    os.fchown(fd, entry.uid, entry.gid)
    os.fchmod(fd, entry.mode)
    if entry.xattrs or not fresh:
        _sync_xattrs(fd, entry.xattrs, fresh=fresh)
    os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))


def set_path_metadata(path: str, entry: Entry, *, fresh: bool = True) -> None:
    """Like :func:`set_fd_metadata` for a path, never following a symlink."""
    os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
    if entry.kind != SYMLINK:  # Linux has no lchmod; a symlink's mode is always 0777
        os.chmod(path, entry.mode)
    if entry.xattrs or not fresh:
        _sync_xattrs(path, entry.xattrs, fresh=fresh)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def entry_from_stat(
    path: str, st: os.stat_result, *, data: str = "", link: str = "", xattrs: Xattrs = ()
) -> Entry:
    """The manifest entry for a stat result; the caller supplies what stat cannot."""
    kind = kind_of(st)
    if kind is None:
        raise ValueError(f"{path}: not a type a manifest records")
    if kind in (CHAR, BLOCK):
        data = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    size = st.st_size if kind in (FILE, SYMLINK) else 0
    return Entry(
        path,
        kind,
        stat.S_IMODE(st.st_mode),
        st.st_uid,
        st.st_gid,
        st.st_mtime_ns,
        size,
        data,
        link,
        xattrs,
    )
