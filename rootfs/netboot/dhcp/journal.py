"""The lease journal: every ACKed lease made durable before the ACK leaves the server.

Why a journal and not a rewritten lease file (dnsmasq rewrites its lease file in place, which a
crash can tear): appending one line is the cheapest durable write there is, and a crash can only
tear the last line, which was never acknowledged to anyone. Group commit: the server hands over
every lease decided while the previous flush ran, and one write + fdatasync covers them all, so a
storm of clients costs a few syncs, not one per ACK (ISC dhcpd's bottleneck). Compaction rewrites
the live leases to a temp file and renames it over the journal (fsync, rename, fsync of the
directory), so a crash there leaves the old journal or the new one, never neither.

Format, one lease per line, newest last, the last line for an address wins::

    rootfs-leases 1
    <ip> <mac or -> <expires> <acked> <crc32 of the preceding fields, 8 hex digits>
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from rootfs.durable import atomic_write_bytes
from rootfs.errors import UserError
from rootfs.netboot.dhcp.leases import Lease

HEADER = b"rootfs-leases 1\n"
COMPACT_MIN = 4096  # journal lines before compaction is considered at all


def format_lease(lease: Lease) -> bytes:
    body = f"{lease.ip} {lease.mac or '-'} {lease.expires:.3f} {lease.acked:.3f}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def parse_line(line: bytes) -> Lease | None:
    """A lease from one journal line, or None if the line is torn or damaged."""
    body, _, crc = line.rstrip(b"\n").rpartition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        ip, mac, expires, acked = body.decode().split(" ")
        return Lease(IPv4Address(ip), "" if mac == "-" else mac, float(expires), float(acked))
    except ValueError:
        return None


def read_leases(path: Path) -> tuple[list[Lease], int]:
    """Every valid record in order, and how many lines were damaged (a torn last line after a
    crash is normal: it was never acknowledged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    if not data.startswith(HEADER):
        raise UserError(
            f"{path}: not a rootfs lease journal; move it away (clients will ask again)"
        )
    leases: list[Lease] = []
    damaged = 0
    lines = data[len(HEADER) :].split(b"\n")
    for i, line in enumerate(lines):
        if not line:
            continue
        lease = parse_line(line) if i < len(lines) - 1 else None  # no newline: torn
        if lease is None:
            damaged += 1
        else:
            leases.append(lease)
    return leases, damaged


class LeaseJournal:
    """An append-only lease file with group commit and compaction. Blocking: the server calls it
    from a worker thread."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync  # False only to measure what durability costs (bench/dhcp.py)
        self._fd: int | None = None
        self.lines = 0  # records since the last compaction
        self.syncs = 0  # fdatasync calls, for the benchmark
        self.damaged = 0

    def open(self) -> list[Lease]:
        """Replay the journal; returns the records in order (the caller folds them)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        leases, self.damaged = read_leases(self.path)
        if self.damaged or not self.path.exists():
            # Start clean: a torn tail must not be glued to the next appended line.
            self._rewrite(leases)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.lines = len(leases)
        return leases

    def append(self, leases: Iterable[Lease]) -> None:
        """Make `leases` durable: one write and one fdatasync for the whole group."""
        if self._fd is None:
            raise RuntimeError("journal not open")
        data = b"".join(format_lease(lease) for lease in leases)
        if not data:
            return
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if self.sync:
            os.fdatasync(self._fd)
            self.syncs += 1
        self.lines += data.count(b"\n")

    def wants_compaction(self, live: int) -> bool:
        """True once superseded records outnumber live ones (keeps replay and disk bounded)."""
        return self.lines > max(COMPACT_MIN, 2 * live)

    def compact(self, live: Iterable[Lease]) -> None:
        """Replace the journal with just `live`, atomically."""
        leases = list(live)
        self._rewrite(leases)
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.lines = len(leases)

    def _rewrite(self, leases: list[Lease]) -> None:
        data = HEADER + b"".join(format_lease(lease) for lease in leases)
        atomic_write_bytes(self.path, data, durable=self.sync)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
