"""From a requested filename to an open file inside the boot directory, or a TFTP refusal.

The checks themselves are protocol-neutral and shared with HTTP (`rootfs.netboot.boot.paths` for
the name, `rootfs.netboot.boot.bootdir` for the disk); this module maps their refusals to the TFTP
error codes: "access" is ERROR 2 (access violation), "not found" is ERROR 1.
"""

from __future__ import annotations

from pathlib import Path

from rootfs.errors import ProtocolError
from rootfs.netboot.boot import bootdir
from rootfs.netboot.boot import paths as neutral
from rootfs.netboot.boot.bootdir import OpenFile
from rootfs.netboot.boot.paths import MAX_NAME, CleanName, PathRefused
from rootfs.netboot.tftp.packet import ERR_ACCESS, ERR_NOT_FOUND

__all__ = ["MAX_NAME", "CleanName", "OpenFile", "Refused", "clean_untrusted", "open_in_root"]


class Refused(ProtocolError):
    """The request may not be served: `code` is the TFTP error to send, `reason` is for the log."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @classmethod
    def of(cls, refusal: PathRefused) -> Refused:
        """The TFTP answer to a protocol-neutral refusal."""
        return cls(ERR_ACCESS if refusal.kind == neutral.ACCESS else ERR_NOT_FOUND, refusal.reason)


def clean_untrusted(raw: bytes) -> CleanName:
    """Check a filename from an RRQ without touching the disk. Raises only Refused."""
    try:
        return neutral.clean_untrusted(raw)
    except PathRefused as e:
        raise Refused.of(e) from None


def open_in_root(root: Path, name: CleanName) -> OpenFile:
    """Open `name` under `root`, refusing anything whose real path leaves `root`."""
    try:
        return bootdir.open_in_root(root, name)
    except PathRefused as e:
        raise Refused.of(e) from None
