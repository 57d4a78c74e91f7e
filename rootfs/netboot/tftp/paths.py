"""From a requested filename to an open file inside the boot directory, or a refusal.

TFTP has no authentication, so the boot directory is the whole security boundary. Two steps:
`clean_untrusted` checks the name itself (pure), `open_in_root` checks where the name really leads
on disk (symlinks included) and opens it. Every refusal is an `Refused` carrying the TFTP error code
and a reason for the log.

A leading `/` means the boot directory, not the filesystem root: GRUB asks for
`/grub/x86_64-efi/normal.mod` and many DHCP configs name `/pxelinux.0`, and tftp-hpa (`-s`) and
dnsmasq treat it the same way. An absolute name that does not exist under the boot directory is
refused as an access violation (ERROR 2) rather than "not found", so `/etc/passwd` probes are
logged as what they are.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from rootfs.errors import ProtocolError
from rootfs.netboot.tftp.packet import ERR_ACCESS, ERR_NOT_FOUND

MAX_NAME = 127  # longer names are refused: no boot loader needs them; overflow probes do
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DRIVE = re.compile(rb"^[A-Za-z]:")  # C:\... from Windows-style clients: absolute, not relative


class Refused(ProtocolError):
    """The request may not be served: `code` is the TFTP error to send, `reason` is for the log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class CleanName:
    """A requested name that passed the syntactic checks."""

    relative: bytes  # "a/b/c": no empty, "." or ".." parts, no leading "/"
    absolute: bool  # the client wrote it with a leading "/" (or "\")


def clean_untrusted(raw: bytes) -> CleanName:
    """Check a filename from an RRQ without touching the disk. Raises only Refused."""
    if len(raw) > MAX_NAME:
        raise Refused(ERR_ACCESS, f"name of {len(raw)} bytes exceeds {MAX_NAME}")
    if _CONTROL.search(raw):
        raise Refused(ERR_ACCESS, "name contains NUL or control characters")
    name = raw.replace(b"\\", b"/")  # Windows-style clients; makes "..\" a plain "../"
    if _DRIVE.match(name):
        raise Refused(ERR_ACCESS, "drive-letter path")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise Refused(ERR_ACCESS, "name contains '..'")
    if not parts:
        raise Refused(ERR_ACCESS, "name has no file part")
    return CleanName(b"/".join(parts), absolute=name.startswith(b"/"))


@dataclass
class OpenFile:
    """A regular file opened for reading, and its size at open time. Close it when done."""

    fd: int
    size: int

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


def open_in_root(root: Path, name: CleanName) -> OpenFile:
    """Open `name` under `root`, refusing anything whose real path leaves `root`."""
    real_root = os.path.realpath(root)
    candidate = os.path.join(os.fsencode(real_root), name.relative)
    real = os.path.realpath(candidate)
    inside = os.fsencode(real_root).rstrip(b"/") + b"/"
    if not real.startswith(inside):
        shown = os.fsdecode(name.relative)
        raise Refused(ERR_ACCESS, f"{shown!r} leads outside the boot directory")
    try:
        # O_NOFOLLOW: the path was resolved above; a symlink swapped in since is refused, not
        # followed. O_NONBLOCK: opening a FIFO must not hang the server.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if name.absolute:
            raise Refused(ERR_ACCESS, "absolute path outside the boot directory") from None
        raise Refused(ERR_NOT_FOUND, "file not found") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
            raise Refused(ERR_ACCESS, f"cannot open: {e.strerror}") from None
        raise Refused(ERR_NOT_FOUND, f"cannot open: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused(ERR_ACCESS, "not a regular file")
    return OpenFile(fd, st.st_size)
