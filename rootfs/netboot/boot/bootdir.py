"""The boot directory on disk: a cleaned name to an open file inside it, or to the per-host config
generated for the asking client. Shared by TFTP and HTTP, so both serve the same bytes under the
same names to the same client.

A leading `/` means the boot directory, not the filesystem root: GRUB asks for
`/grub/x86_64-efi/normal.mod` and many DHCP configs name `/pxelinux.0`, and tftp-hpa (`-s`) and
dnsmasq treat it the same way. An absolute name that does not exist under the boot directory is
refused as "access" rather than "not found", so TFTP logs `/etc/passwd` probes as what they are
(HTTP request paths are always relative to the boot directory and never marked absolute).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from rootfs.config.site import Site
from rootfs.config.tftp import boot_dir
from rootfs.netboot.boot.files import VirtualFile, unregistered_file, virtual_file
from rootfs.netboot.boot.paths import ACCESS, NOT_FOUND, CleanName, PathRefused


@dataclass
class OpenFile:
    """A regular file opened for reading, and its identity at open time. Close it when done."""

    fd: int
    size: int
    mtime_ns: int = 0
    inode: int = 0

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
        raise PathRefused(ACCESS, f"{shown!r} leads outside the boot directory")
    try:
        # O_NOFOLLOW: the path was resolved above; a symlink swapped in since is refused, not
        # followed. O_NONBLOCK: opening a FIFO must not hang the server.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        if name.absolute:
            raise PathRefused(ACCESS, "absolute path outside the boot directory") from None
        raise PathRefused(NOT_FOUND, "file not found") from None
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
            raise PathRefused(ACCESS, f"cannot open: {e.strerror}") from None
        raise PathRefused(NOT_FOUND, f"cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PathRefused(ACCESS, "not a regular file")
    return OpenFile(fd, st.st_size, st.st_mtime_ns, st.st_ino)


def lookup(site: Site, name: CleanName, client: IPv4Address) -> VirtualFile | OpenFile:
    """What `client` gets for `name`: its generated config, else the file on disk, else (for a
    generic config name and `unknown_clients = "menu"`) the "not registered" config.

    Raises PathRefused, or OSError when the disk fails us (the caller answers "server error").
    """
    generated = virtual_file(site, name.relative, client)
    if generated is not None:
        return generated
    root = boot_dir(site.config.tftp, site_root=site.root, export_root=site.config.export_root)
    try:
        return open_in_root(root, name)
    except PathRefused as e:
        if e.kind != NOT_FOUND or site.config.tftp.unknown_clients != "menu":
            raise
        generated = unregistered_file(name.relative, client)
        if generated is None:
            raise
        return generated
