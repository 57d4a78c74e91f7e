"""The boot trace: every DHCP, TFTP and HTTP event per client, so a stalled boot can be located.

Events are appended as JSON lines to ``<state>/trace/events.jsonl``: one small
``write`` per event on a file opened with O_APPEND, so lines from the DHCP,
TFTP and HTTP servers never interleave mid-line, and a crash loses at most the event
being written. No fsync: the trace is a diagnostic, not a ledger (leases have
their own durable journal). ``rootfs trace`` reads it back, newest last.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TRACE_FILE = "events.jsonl"
ROTATE_BYTES = 64 << 20  # past this, the file is renamed to events.jsonl.1 (one kept)


@dataclass(frozen=True)
class TraceEvent:
    """One step of a client's boot."""

    time: float
    source: str  # "dhcp", "tftp" or "http"
    event: str  # e.g. "discover", "ack", "rrq-refused", "transfer-done", "request" (HTTP)
    mac: str | None = None  # lowercase colon form, when known
    ip: str | None = None
    host: str | None = None  # inventory name, when known
    detail: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "time": self.time,
                "source": self.source,
                "event": self.event,
                "mac": self.mac,
                "ip": self.ip,
                "host": self.host,
                "detail": self.detail,
            },
            separators=(",", ":"),
            default=str,
        )


class TraceLog:
    """Append and read boot trace events under a state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / TRACE_FILE
        self._fd: int | None = None
        self._lock = threading.Lock()  # HTTP's event loops record from their own threads

    def record(
        self,
        source: str,
        event: str,
        *,
        mac: str | None = None,
        ip: str | None = None,
        host: str | None = None,
        **detail: object,
    ) -> TraceEvent:
        """Append one event (and return it, for logging)."""
        entry = TraceEvent(time.time(), source, event, mac, ip, host, dict(detail))
        line = (entry.to_json() + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
                )
            os.write(self._fd, line)
            if os.fstat(self._fd).st_size > ROTATE_BYTES:
                os.replace(self.path, self.path.with_name(TRACE_FILE + ".1"))
                self.close()
        return entry

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def events(self) -> Iterator[TraceEvent]:
        """Every recorded event, oldest first (skipping lines a crash left torn)."""
        for path in (self.path.with_name(TRACE_FILE + ".1"), self.path):
            try:
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        try:
                            raw = json.loads(line)
                            yield TraceEvent(**raw)
                        except (ValueError, TypeError):
                            continue
            except FileNotFoundError:
                continue

    def for_client(
        self, *, mac: str | None = None, ip: str | None = None, host: str | None = None
    ) -> list[TraceEvent]:
        """Events matching any of the given identities of one client."""
        return [
            e
            for e in self.events()
            if (mac is not None and e.mac == mac)
            or (ip is not None and e.ip == ip)
            or (host is not None and e.host == host)
        ]

