"""From an HTTP request target to a name in the boot directory. Pure.

The target is origin-form (`/path?query`, RFC 9112 §3.2.1) or absolute-form
(`http://host/path`, §3.2.2, which servers must accept). The query is dropped: nothing served
depends on it. The path is percent-decoded (RFC 3986 §2.1) once, and the decoded bytes go through
the same checks as a TFTP filename (`boot.paths.clean_untrusted`), so `%2e%2e` is `..` and
`%00` is NUL, both refused. A backslash, raw or `%5c`, is refused too: TFTP reads it as a
separator for Windows-style clients, but no HTTP client sends one on purpose, and a proxy or
logger in front would read it differently. Dot segments are never resolved here: a client
normalizes its URLs (RFC 3986 §5.2.4) before sending, so any left are refused, not followed.

h11 has already refused raw control characters, spaces and non-ASCII bytes in the target.
"""

from __future__ import annotations

import re

from rootfs.errors import ProtocolError
from rootfs.netboot.boot.paths import ACCESS, CleanName, PathRefused, clean_untrusted

MAX_TARGET = 4096  # bytes of request target; longer is 414 (nginx's large buffer: 8 KiB)
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")  # scheme "://" authority


class BadTarget(ProtocolError):
    """The target is not a path this server can read: `status` is 400 or 414."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def target_name_untrusted(target: bytes) -> CleanName:
    """The boot-directory name a request target asks for.

    Raises BadTarget (malformed: 400, too long: 414) or PathRefused (a name that may not be
    served; always kind "access" here, the disk decides "not found").
    """
    if len(target) > MAX_TARGET:
        raise BadTarget(414, f"request target of {len(target)} bytes exceeds {MAX_TARGET}")
    if m := _ABSOLUTE.match(target):
        target = target[m.end() :] or b"/"
    if not target.startswith(b"/"):
        raise BadTarget(400, "request target is not a path")
    path = target.partition(b"?")[0]
    if b"#" in path:
        raise BadTarget(400, "request target has a fragment")
    if _BAD_ESCAPE.search(path):
        raise BadTarget(400, "malformed percent-encoding")
    decoded = _ESCAPE.sub(lambda m: bytes((int(m[1], 16),)), path)
    if b"\\" in decoded:
        raise PathRefused(ACCESS, "name contains a backslash")
    # Relative to the boot directory: "/vmlinuz" is the file vmlinuz there, never "/" on disk.
    name = clean_untrusted(decoded, max_len=MAX_TARGET)
    return CleanName(name.relative, absolute=False)
