"""Shared helpers for the benchmarks: run commands, time them, print a table of results.

Every benchmark measures rootfs beside a peer in the same run, on the same data, so the ratio
means something even where absolute times do not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one operation, in seconds."""

    label: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """The median sample: the number a ratio is taken of."""
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        """The fastest sample: what the operation costs with the least interference."""
        return min(self.samples)


def run(
    cmd: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run *cmd*, capturing its output; on failure print that output and exit."""
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        env=None if env is None else {**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"bench: {' '.join(proc.args)} exited with {proc.returncode}")
    return proc


def timed(fn: Callable[[], object]) -> float:
    """Seconds *fn* takes, by the monotonic high-resolution clock."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Contender:
    """One operation to time: ``fn(i)`` for run *i*, with untimed *setup* and *teardown*."""

    label: str
    fn: Callable[[int], object]
    setup: Callable[[int], object] | None = None
    teardown: Callable[[int], object] | None = None


def measure(
    label: str,
    fn: Callable[[int], object],
    *,
    runs: int,
    warmup: bool = True,
    setup: Callable[[int], object] | None = None,
    teardown: Callable[[int], object] | None = None,
) -> Timing:
    """Time ``fn(i)`` for i in 0..runs-1, after one untimed warm-up call ``fn(-1)``.

    The warm-up brings the data into the page cache for every contender alike: dropping caches
    instead would need root and still favour whichever runs second. Each call starts after a
    sync, and what it leaves dirty is not waited for (as for any command run interactively).
    *setup* and *teardown* run around each call, untimed.
    """
    return measure_rounds([Contender(label, fn, setup, teardown)], runs=runs, warmup=warmup)[0]


def measure_rounds(
    contenders: Sequence[Contender], *, runs: int, warmup: bool = True
) -> list[Timing]:
    """Like `measure` for several contenders at once, taking turns: round i times each once.

    A machine drifts during a benchmark (its page cache fills, a filesystem that has just
    freed many inodes searches longer for a free one), so contenders measured one after the
    other would each meet a different machine; taking turns spreads the drift over all.
    """
    samples: list[list[float]] = [[] for _ in contenders]
    for i in range(-1 if warmup else 0, runs):
        for contender, taken in zip(contenders, samples, strict=True):
            if contender.setup is not None:
                contender.setup(i)
            # Flush what earlier runs (and teardown) left dirty: no one pays for another's
            # writeback.
            os.sync()
            start = time.perf_counter()
            contender.fn(i)
            elapsed = time.perf_counter() - start
            if contender.teardown is not None:
                contender.teardown(i)
            if i >= 0:
                taken.append(elapsed)
            run_name = "warm-up" if i < 0 else f"run {i + 1}/{runs}"
            print(f"  {contender.label}: {run_name} {elapsed:.3f} s", file=sys.stderr)
    return [Timing(c.label, tuple(t)) for c, t in zip(contenders, samples, strict=True)]


@dataclass(frozen=True)
class Row:
    """One line of a result table; *ratio* compares *timing* with *peer* by their medians."""

    timing: Timing
    peer: Timing | None = None
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """Median over the peer's median, or None without a peer."""
        if self.peer is None:
            return None
        return self.timing.median / self.peer.median


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table: median, min, ratio to the peer, target and verdict."""
    header = ("operation", "median", "min", "ratio", "target", "")
    lines: list[tuple[str, ...]] = [header]
    for row in rows:
        ratio = row.ratio
        verdict = {None: "", True: "ok", False: "MISSED"}[row.met]
        lines.append(
            (
                row.timing.label,
                f"{row.timing.median:.3f} s",
                f"{row.timing.best:.3f} s",
                "" if ratio is None or row.peer is None else f"{ratio:.2f}x {row.peer.label}",
                row.target,
                verdict,
            )
        )
    widths = [max(len(line[col]) for line in lines) for col in range(len(header))]
    right = {1, 2}
    out = []
    for line in lines:
        cells = [
            cell.rjust(width) if col in right else cell.ljust(width)
            for col, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)
