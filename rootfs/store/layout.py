"""Where rootfs keeps things inside the export root: the one owner of these names.

A host tree ``<export root>/<ip>/`` carries a private directory ``.rootfs/`` beside the client's
own files (never part of any manifest):

- ``.rootfs/manifest``: the manifest of what the last build applied, published for client caches;
- ``.rootfs/tmp/``: scratch space for files written before they are renamed into place (it must be
  on the tree's own filesystem for the rename to be atomic);
- ``.rootfs/orphans/<stamp>/``: directories a build had to remove that still held host-local files.

The attic ``<export root>/.attic/<host>/<stamp>/`` keeps the inodes a base update replaced or
removed, so NFS clients still holding them get no ESTALE until they reboot. It sits beside the
trees, outside every export. ``<stamp>`` is ``<unix time>-<base>-<generation>``: the time
decides when `rootfs gc` may release it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SCRATCH = ".rootfs"  # a tree's private directory
PUBLISHED_MANIFEST = f"{SCRATCH}/manifest"  # relative to the tree root: what client caches read
# Relative to the tree root: a cached client's cache daemon writes its cache's state here (its own
# host-state, in /var), so `rootfs status` on the server can show it. No build owns the file.
CACHE_REPORT = "var/lib/rootfs-cache/report.json"
ATTIC = ".attic"


def tree_path(root: Path | str, path: str) -> str:
    """The on-disk path of manifest *path* inside the tree at *root*."""
    return str(root) if path == "/" else str(root) + path


def scratch_dir(root: Path) -> Path:
    """Where an apply writes files before renaming them into the tree at *root*."""
    return root / SCRATCH / "tmp"


def orphans_dir(root: Path, stamp: str) -> Path:
    """Where one apply moves directories that still held host-local files."""
    return root / SCRATCH / "orphans" / stamp


def attic_name(path: str) -> str:
    """The flat attic name of a manifest path: ``/usr/bin/x`` -> ``usr%2Fbin%2Fx``."""
    return path.lstrip("/").replace("%", "%25").replace("/", "%2F")


def attic_root(export_root: Path) -> Path:
    """The attic of every host."""
    return export_root / ATTIC


def attic_host_dir(export_root: Path, host: str) -> Path:
    """Every attic entry kept for *host*."""
    return export_root / ATTIC / host


def attic_dir(export_root: Path, host: str, *, now: float, base: str, generation: int) -> Path:
    """Where one apply for *host* keeps the inodes it replaces."""
    return attic_host_dir(export_root, host) / f"{int(now)}-{base}-{generation}"


def attic_made(entry: Path) -> int:
    """When the attic entry *entry* (one apply's directory) was made; 0 if its name says nothing."""
    head = entry.name.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def release_host_attic(export_root: Path, host: str) -> int:
    """Delete everything kept for *host* (it has rebooted); the number of applies released."""
    attic = attic_host_dir(export_root, host)
    if not attic.is_dir():
        return 0
    count = sum(1 for _ in attic.iterdir())
    shutil.rmtree(attic)
    return count
