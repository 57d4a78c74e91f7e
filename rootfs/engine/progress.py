"""Progress reporting for long work (imports, builds): files and bytes, on stderr.

Redraws one line at most ten times a second when stderr is a terminal and stays
silent otherwise, so logs and pipes get only the final summary the caller prints.
A build spread over worker processes draws one line in the parent (`ItemsProgress`)
from the lines its workers' `Progress` objects hand to a sink instead of a terminal.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_INTERVAL = 0.1  # seconds


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class StatusLine:
    """One line of a terminal redrawn in place, at most ten times a second; silent unless
    *enabled* (by default: when the stream is a terminal)."""

    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._last_draw = 0.0
        self._drawn = False

    def due(self) -> bool:
        """Whether a redraw should happen now (and, if so, it counts as done)."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self._last_draw < REDRAW_INTERVAL:
            return False
        self._last_draw = now
        return True

    def show(self, text: str) -> None:
        width = shutil.get_terminal_size().columns - 1  # a wrapped line cannot be redrawn
        self._stream.write("\r\x1b[K" + text[:width])
        self._stream.flush()
        self._drawn = True

    def erase(self) -> None:
        """Erase the line so the caller's next output starts clean."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


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
        sink: Callable[[str], None] | None = None,
    ) -> None:
        """With a *sink*, each redraw's text goes there (always) instead of to *stream*."""
        self.label = label
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.files = 0
        self.bytes = 0
        self._sink = sink
        self._line = StatusLine(stream, True if sink is not None else enabled)

    def set_totals(self, *, files: int | None, bytes_: int | None) -> None:
        self.total_files, self.total_bytes = files, bytes_

    def advance(self, files: int = 1, bytes_: int = 0) -> None:
        """Count work done; redraw if enough time has passed."""
        self.files += files
        self.bytes += bytes_
        if self._line.due():
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
        text = f"{self.label}:{pct} {files} files, {size}"
        if self._sink is not None:
            self._sink(text)
        else:
            self._line.show(text)

    def close(self) -> None:
        """Erase the progress line so the caller's summary starts clean."""
        self._line.erase()


class ItemsProgress:
    """One line for items worked on elsewhere: how many are done, and the latest progress
    text of each one under way (``hosts 12/50 done | h013: 40% ... | h014: 75% ...``)."""

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.active: dict[int, str] = {}
        self._line = StatusLine(stream, enabled)

    def update(self, index: int, text: str) -> None:
        """Item *index* reports *text*; redraw if enough time has passed."""
        self.active[index] = text
        if self._line.due():
            parts = [f"{self.label} {self.done}/{self.total} done", *self.active.values()]
            self._line.show(" | ".join(parts))

    def finished(self, index: int) -> None:
        """Item *index* is done; erase the line, so the caller can print its summary."""
        self.active.pop(index, None)
        self.done += 1
        self.close()

    def close(self) -> None:
        """Erase the line."""
        self._line.erase()
