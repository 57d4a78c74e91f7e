"""Progress reporting for long work (imports, builds): files and bytes, on stderr.

Redraws one line at most ten times a second when stderr is a terminal and stays
silent otherwise, so logs and pipes get only the final summary the caller prints.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A files/bytes counter with an optional known total."""

    def __init__(
        self,
        label: str,
        *,
        total_files: int | None = None,
        total_bytes: int | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._last_draw = 0.0
        self._drawn = False

    def set_totals(self, *, files: int | None, bytes_: int | None) -> None:
        self.total_files, self.total_bytes = files, bytes_

    def advance(self, files: int = 1, bytes_: int = 0) -> None:
        """Count work done; redraw if enough time has passed."""
        self.files += files
        self.bytes += bytes_
        if self._enabled:
            now = time.monotonic()
            if now - self._last_draw >= 0.1:
                self._last_draw = now
                self._draw()

    def _draw(self) -> None:
        files = f"{self.files}" + (f"/{self.total_files}" if self.total_files else "")
        size = human_bytes(self.bytes) + (
            f"/{human_bytes(self.total_bytes)}" if self.total_bytes else ""
        )
        pct = ""
        if self.total_bytes:
            pct = f" {min(100, 100 * self.bytes // max(1, self.total_bytes)):3d}%"
        elif self.total_files:
            pct = f" {min(100, 100 * self.files // max(1, self.total_files)):3d}%"
        self._stream.write(f"\r\x1b[K{self.label}:{pct} {files} files, {size}")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the progress line so the caller's summary starts clean."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False
