"""Blocking calls on SOURCE that the filesystem runs in `Source` threads (never inline: an NFS
source that went away makes them hang). Paths are SOURCE paths; nothing here follows a
symlink at the last component, so a link on the host is handled as the link itself.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pyfuse3


def getxattr(path: str, name: bytes) -> bytes:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
        raise


def listxattr(path: str) -> list[str]:
    return os.listxattr(path, follow_symlinks=False)


def link(src: str, dst: str) -> None:
    os.link(src, dst, follow_symlinks=False)


def setxattr(path: str, name: bytes, value: bytes) -> None:
    os.setxattr(path, name, value, 0, follow_symlinks=False)


def removexattr(path: str, name: bytes) -> None:
    os.removexattr(path, name, follow_symlinks=False)


def list_dir(path: str) -> list[tuple[bytes, os.stat_result]]:
    result = []
    with os.scandir(os.fsencode(path)) as it:
        for item in it:
            try:
                result.append((item.name, item.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
    result.sort()
    return result


def apply_setattr(
    target: str | int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields
) -> None:
    is_fd = isinstance(target, int)
    follow: dict[str, Any] = {} if is_fd else {"follow_symlinks": False}
    if fields.update_uid or fields.update_gid:
        os.chown(
            target,
            attr.st_uid if fields.update_uid else -1,
            attr.st_gid if fields.update_gid else -1,
            **follow,
        )
    if fields.update_mode:
        st = os.stat(target) if isinstance(target, int) else os.lstat(target)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, stat.S_IMODE(attr.st_mode))
    if fields.update_size:
        os.truncate(target, attr.st_size)
    if fields.update_atime or fields.update_mtime:
        st = os.stat(target) if isinstance(target, int) else os.lstat(target)
        atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
        mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
        os.utime(target, ns=(atime, mtime), **follow)


def create(path: str, flags: int, mode: int, uid: int, gid: int) -> int:
    fd = os.open(path, flags, stat.S_IMODE(mode))
    os.fchown(fd, uid, gid)
    return fd


def make(what: str, path: str, mode: int, rdev: int, uid: int, gid: int) -> None:
    if what == "dir":
        os.mkdir(path, stat.S_IMODE(mode))
    else:
        os.mknod(path, mode, rdev)
    os.chown(path, uid, gid, follow_symlinks=False)


def make_symlink(path: str, target: bytes, uid: int, gid: int) -> None:
    os.symlink(target, os.fsencode(path))
    os.chown(path, uid, gid, follow_symlinks=False)


def rename(old: str, new: str, noreplace: bool) -> None:
    if noreplace and os.path.lexists(new):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new)
    os.rename(old, new)
