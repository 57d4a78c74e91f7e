"""The two renameat2(2) flags Python's ``os`` lacks: swap two names, or rename without replacing.

A base update uses them to keep a replaced inode for running NFS clients in one step:
the new file is written under its attic name and swapped with the tree's path
(``exchange``), so the path changes atomically from the old inode to the new one and
the old inode lands in the attic, without a hardlink and a replacing rename. Removed
files move into the attic with ``rename_noreplace``, which never overwrites a kept inode.
"""

from __future__ import annotations

import ctypes
import errno
import os

AT_FDCWD = -100  # linux/fcntl.h
RENAME_NOREPLACE = 1 << 0  # linux/fs.h
RENAME_EXCHANGE = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc 2.28 and later
if _renameat2 is not None:
    _renameat2.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    _renameat2.restype = ctypes.c_int


def supported() -> bool:
    """Whether this C library has renameat2 (the kernel's support shows per filesystem)."""
    return _renameat2 is not None


def _call(src: str, dst: str, flags: int) -> None:
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), src, None, dst)
    if _renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), src, None, dst)


def exchange(a: str, b: str) -> None:
    """Atomically swap the inodes that names *a* and *b* refer to (both must exist).

    Raises OSError: ENOENT when either is missing, EXDEV across filesystems, EINVAL or
    ENOSYS where the filesystem or C library cannot exchange.
    """
    _call(a, b, RENAME_EXCHANGE)


def rename_noreplace(src: str, dst: str) -> None:
    """Rename *src* to *dst*, failing with EEXIST instead of replacing what *dst* names."""
    _call(src, dst, RENAME_NOREPLACE)
