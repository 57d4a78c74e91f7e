"""Garbage collection: generations, store objects and attic entries nobody needs.

Kept: the last ``keep_generations`` generations of each base, the current one, and every generation
a host's last apply came from; every object any kept generation, host tree, hold or interrupted
apply refers to. Variants and nodes (hardlink mode) go when no tree links them any more. Attic
entries go when their host is known to have rebooted (a DHCP DISCOVER or BOOTP request after they
were made, not a lease renewal; or ``rootfs host rebooted``) or when they are older than
``attic_max_age_days``.

When a host last booted is the boot front end's knowledge (its trace), not the store's: the caller
passes it in as `last_boot`, so this layer need not know where boots are recorded.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rootfs.config.site import Site
from rootfs.errors import UserError
from rootfs.store import layout
from rootfs.store.state import Generation, State

LastBoot = Callable[[str], "float | None"]  # host name -> when it last booted, if known


@dataclass
class GcReport:
    """What was (or, in a dry run, would be) removed."""

    generations: list[Generation] = field(default_factory=list)
    objects: int = 0
    links: int = 0  # variants and nodes
    attic: list[Path] = field(default_factory=list)
    bytes_freed: int = 0


def _freed(path: str) -> int:
    st = os.lstat(path)
    return st.st_size if st.st_nlink == 1 else 0  # another name keeps the blocks alive


def attic_release(site: Site, last_boot: LastBoot, *, now: float, dry_run: bool) -> list[Path]:
    """Attic entries whose host rebooted since, or that are too old."""
    attic = layout.attic_root(site.config.export_root)
    released: list[Path] = []
    if not attic.is_dir():
        return released
    max_age = site.config.update.attic_max_age_days * 86400
    for host_dir in sorted(attic.iterdir()):
        booted = last_boot(host_dir.name)
        for stamp_dir in sorted(host_dir.iterdir()):
            made = layout.attic_made(stamp_dir)
            if now - made > max_age or (booted is not None and booted > made):
                released.append(stamp_dir)
                if not dry_run:
                    shutil.rmtree(stamp_dir)
    return released


def collect(
    site: Site, state: State, *, last_boot: LastBoot, dry_run: bool = False
) -> GcReport:
    """Remove what nothing needs; in a dry run, only report it."""
    report = GcReport()
    hosts_dir = state.root / "hosts"
    host_names = sorted(p.name for p in hosts_dir.iterdir()) if hosts_dir.is_dir() else []
    if any(state.read_journal(h) is not None for h in host_names):
        raise UserError("an apply was interrupted; run 'rootfs build --all' before 'rootfs gc'")
    in_use = {(r.base, r.generation) for h in host_names if (r := state.host_record(h))}
    referenced: set[str] = set()
    for base in state.bases():
        generations = state.generations(base)
        current = state.require_current(base)
        keep = {g.number for g in generations[-site.config.update.keep_generations :]}
        keep |= {current.number} | {n for b, n in in_use if b == base}
        for gen in generations:
            if gen.number in keep:
                referenced |= state.load_generation(gen).digests()
            else:
                report.generations.append(gen)
                if not dry_run:
                    state.delete_generation(gen)
    for host in host_names:
        applied = state.applied_manifest(host)
        if applied is not None:
            referenced |= applied.digests()
        referenced |= {h.base.data for h in state.holds(host).values() if h.base and h.base.data}
    store = state.store
    for digest in list(store.iter_digests()):
        if digest not in referenced:
            path = str(store.object_path(digest))
            report.objects += 1
            report.bytes_freed += _freed(path)
            if not dry_run:
                os.unlink(path)
    for directory in (store.variants, store.nodes):
        if not directory.is_dir():
            continue
        for prefix in os.listdir(directory):
            for name in os.listdir(directory / prefix):
                path = os.path.join(directory, prefix, name)
                st = os.lstat(path)
                if st.st_nlink == 1:  # no tree links it any more
                    report.links += 1
                    report.bytes_freed += st.st_size if not os.path.islink(path) else 0
                    if not dry_run:
                        os.unlink(path)
    report.attic = attic_release(site, last_boot, now=time.time(), dry_run=dry_run)
    if not dry_run:
        store.clean_tmp()
    return report
