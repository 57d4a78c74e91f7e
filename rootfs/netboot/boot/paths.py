"""Requested names checked without touching the disk, for every protocol that serves the boot
directory (TFTP and HTTP). Pure: bytes in, a `CleanName` or a `PathRefused` out.

The boot directory is the whole security boundary of the boot front end: neither TFTP nor the
boot loaders' HTTP requests carry credentials. This module checks a name's syntax;
`bootdir.open_in_root` then checks where the name really leads on disk (symlinks included).
A refusal carries a protocol-neutral `kind` that each server maps to its own answer: TFTP to
ERROR 2 (access violation) or 1 (file not found), HTTP to 403 or 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from rootfs.errors import ProtocolError

MAX_NAME = 127  # TFTP's cap; no boot loader needs longer names, overflow probes do
ACCESS: Final = "access"
NOT_FOUND: Final = "not found"
RefusalKind = Literal["access", "not found"]
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_DRIVE = re.compile(rb"^[A-Za-z]:")  # C:\... from Windows-style clients: absolute, not relative


class PathRefused(ProtocolError):
    """A name may not be served: `kind` says why in protocol-neutral terms ("access": it is not
    allowed, and is logged as a probe; "not found": nothing by that name), `reason` is for the
    log."""

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind: RefusalKind = kind
        self.reason = reason


@dataclass(frozen=True)
class CleanName:
    """A requested name that passed the syntactic checks."""

    relative: bytes  # "a/b/c": no empty, "." or ".." parts, no leading "/"
    absolute: bool  # the client wrote it with a leading "/" (or "\")


def clean_untrusted(raw: bytes, *, max_len: int = MAX_NAME) -> CleanName:
    """Check a requested name. Raises only PathRefused (always of kind "access").

    Backslashes are separators (Windows-style TFTP clients), so `..\\` is caught like `../`;
    HTTP refuses backslashes before it gets here.
    """
    if len(raw) > max_len:
        raise PathRefused(ACCESS, f"name of {len(raw)} bytes exceeds {max_len}")
    if _CONTROL.search(raw):
        raise PathRefused(ACCESS, "name contains NUL or control characters")
    name = raw.replace(b"\\", b"/")
    if _DRIVE.match(name):
        raise PathRefused(ACCESS, "drive-letter path")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise PathRefused(ACCESS, "name contains '..'")
    if not parts:
        raise PathRefused(ACCESS, "name has no file part")
    return CleanName(b"/".join(parts), absolute=name.startswith(b"/"))
