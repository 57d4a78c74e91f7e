"""What `rootfs cache stats DIR` reports: the directory's objects plus the mounts' counters.

Objects and bytes are counted from ``objects/`` itself, so the numbers are right for a cache
that is not mounted, was killed, or was just verified; the counters come from
``stats.json``, which a running mount rewrites every few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rootfs.cache.objects import Counters, charge, iter_objects


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of one cache directory."""

    objects: int
    bytes: int
    charged: int
    quota: int | None
    manifest: bool
    boot_set: int
    counters: Counters

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def read_stats(cache_dir: Path) -> CacheStats:
    """Count the objects under *cache_dir* and load the counters saved by its mounts."""
    objects = cache_dir / "objects"
    count = total = charged = 0
    for digest in iter_objects(objects):
        try:
            size = os.stat(objects / digest[:2] / digest[2:]).st_size
        except FileNotFoundError:
            continue
        count += 1
        total += size
        charged += charge(size)
    quota = None
    with contextlib.suppress(OSError, ValueError):
        quota = json.loads((cache_dir / "stats.json").read_text()).get("quota")
    try:
        boot = sum(1 for line in (cache_dir / "bootset").read_text().split("\n") if line)
    except FileNotFoundError:
        boot = 0
    return CacheStats(
        objects=count,
        bytes=total,
        charged=charged,
        quota=quota,
        manifest=(cache_dir / "manifest").exists(),
        boot_set=boot,
        counters=Counters.load(cache_dir / "stats.json"),
    )


REPORT_LIMIT = 64 << 10  # a report is a few hundred bytes; the client writes it, so cap the read


@dataclass(frozen=True)
class ClientReport:
    """What a cached client's cache daemon last wrote into its host tree (`CACHE_REPORT`)."""

    reported: float  # the client's clock, seconds since the epoch
    manifest: str
    objects: int
    bytes: int
    quota: int | None
    hits: int
    misses: int
    fetched_bytes: int

    @property
    def hit_ratio(self) -> float | None:
        """Reads answered from the disk over all reads; None before the first read."""
        total = self.hits + self.misses
        return self.hits / total if total else None


def read_client_report(path: Path) -> ClientReport | None:
    """The report at *path*, None when the client never wrote one.

    The file lives in a tree the client writes, so anything may be there: whatever is not the
    report's shape raises ValueError naming what is wrong, for the caller to show.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read(REPORT_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    if len(raw) > REPORT_LIMIT:
        raise ValueError(f"{path}: over {REPORT_LIMIT} bytes, not a cache report")
    try:
        data = json.loads(raw)
        counters = data["counters"]
        quota = data.get("quota")
        return ClientReport(
            reported=float(data["reported"]),
            manifest=str(data["manifest"])[:64],
            objects=_count(data["objects"]),
            bytes=_count(data["bytes"]),
            quota=None if quota is None else _count(quota),
            hits=_count(counters["hits"]),
            misses=_count(counters["misses"]),
            fetched_bytes=_count(counters["fetched_bytes"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a cache report ({type(exc).__name__}: {exc})") from None


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value
