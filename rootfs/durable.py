"""Crash-safe file replacement: a reader sees the old file or the new one, never a torn mix.

Config edits and published manifests must survive a power cut mid-write, so they are written to a
temporary file in the same directory, flushed to disk, renamed over the target, and the directory is
flushed so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries to disk, making earlier renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace `path` with `data` atomically and durably; `mode` is set exactly (umask ignored).

    With ``durable=False`` the write is still atomic (old or new content) but not
    flushed: for caches, and for files a later syncfs makes durable in one go.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            if durable:
                os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        # Clean up and re-raise: a stray temp file is the only thing a failed write may leave.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)
