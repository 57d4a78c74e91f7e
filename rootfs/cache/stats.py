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
