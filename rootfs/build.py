"""The build service: bring host trees to their composed state, resumably.

For each host: compose base + overlays into the desired manifest, plan against
what was last applied, journal the plan's paths, apply, publish the manifest in
the tree, and record what was applied. A build killed at any moment leaves a
journal; the next build re-reads those paths from the disk and plans them again,
so it converges to the same tree as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import xxhash

from rootfs import disk
from rootfs.apply import SCRATCH, Applier, ApplyStats, resolve_mode
from rootfs.compose import compose
from rootfs.durable import atomic_write_bytes
from rootfs.manifest import Entry, Manifest, manifest_digest, serialize
from rootfs.overlay import LayerRenderer, Overlay, load_overlay
from rootfs.plan import Plan, make_plan
from rootfs.progress import Progress
from rootfs.site import Host, Site
from rootfs.state import Generation, HostRecord, State
from rootfs.store import syncfs

PUBLISHED = "manifest"  # <tree>/.rootfs/manifest, read by client caches


@dataclass(frozen=True)
class Desired:
    """A host's composed tree and where it came from."""

    host: Host
    generation: Generation
    manifest: Manifest


@dataclass
class HostResult:
    """The outcome of building one host."""

    host: Host
    plan: Plan
    mode: str
    recovered: bool = False
    dry_run: bool = False
    stats: ApplyStats = field(default_factory=ApplyStats)
    seconds: float = 0.0

    @property
    def up_to_date(self) -> bool:
        return not self.plan


def patch_with_disk(applied: Manifest, found: dict[str, Entry | None]) -> Manifest:
    """*applied*, with the given paths replaced by what the disk really holds."""
    entries = dict(applied.entries)
    for path, entry in found.items():
        if entry is None:
            entries.pop(path, None)
        else:
            entries[path] = entry
    return Manifest.from_entries(entries.values())


class Builder:
    """Composes and applies host trees for one site and state directory."""

    def __init__(self, site: Site, state: State) -> None:
        self.site = site
        self.state = state
        self._overlays: dict[str, Overlay] = {}
        self._bases: dict[tuple[str, int], Manifest] = {}
        self._fingerprints: dict[str, list[object]] = {}

    def _overlay(self, name: str) -> Overlay:
        if name not in self._overlays:
            self._overlays[name] = load_overlay(self.site.overlays_dir, name)
        return self._overlays[name]

    def _base(self, gen: Generation) -> Manifest:
        key = (gen.base, gen.number)
        if key not in self._bases:
            self._bases[key] = self.state.load_generation(gen)
        return self._bases[key]

    def _overlay_fingerprint(self, name: str) -> list[object]:
        """Names, sizes and mtimes of an overlay's files: changes when the overlay does."""
        if name in self._fingerprints:
            return self._fingerprints[name]
        root = self.site.overlays_dir / name
        listing: list[object] = [name]
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fname in sorted(dirnames + filenames):
                st = os.lstat(os.path.join(dirpath, fname))
                listing.append(
                    (
                        os.path.relpath(os.path.join(dirpath, fname), root),
                        st.st_mode,
                        st.st_size,
                        st.st_mtime_ns,
                    )
                )
        self._fingerprints[name] = listing
        return listing

    def inputs_digest(self, host: Host, mode: str) -> str:
        """A digest of everything *host*'s tree is composed from.

        When it equals the one recorded at the last apply (and no apply was
        interrupted), the tree is up to date without reading any manifest.
        """
        gen = self.state.require_current(host.base)
        inputs = {
            "generation": gen.digest,
            "overlays": [self._overlay_fingerprint(o) for o in host.overlays],
            "context": self.site.template_context(host),
            "mode": mode,
        }
        return xxhash.xxh3_128_hexdigest(json.dumps(inputs, sort_keys=True, default=str).encode())

    def compose_hosts(self, hosts: Sequence[Host], *, store_objects: bool = True) -> list[Desired]:
        """Desired trees for *hosts*; rendered files enter the store unless told not to."""
        with self.state.store.batch() as batch:
            renderer = LayerRenderer(batch, template_cache=self.state.root / "cache" / "jinja")
            result = []
            for host in hosts:
                gen = self.state.require_current(host.base)
                context = self.site.template_context(host)
                layers = [renderer.render(self._overlay(o), context) for o in host.overlays]
                result.append(Desired(host, gen, compose(self._base(gen), layers)))
            if not store_objects:
                batch.abort()
        return result

    def plan_host(self, desired: Desired, *, repair: bool = False) -> tuple[Plan, bool]:
        """The plan for one host, and whether it resumes an interrupted apply."""
        name = desired.host.name
        applied = self.state.applied_manifest(name) or Manifest({})
        dirty = self.state.read_journal(name)
        root = str(self.site.host_root(desired.host))
        if repair:
            applied = disk.read_tree(root, desired.manifest)
        elif dirty:
            found = disk.read_paths(root, dirty, desired.manifest)
            applied = patch_with_disk(applied, found)
        return make_plan(applied, desired.manifest), dirty is not None

    def build(
        self,
        hosts: Sequence[Host],
        *,
        mode: str | None = None,
        dry_run: bool = False,
        repair: bool = False,
        progress: bool | None = None,
        on_result: Callable[[HostResult], None] | None = None,
    ) -> list[HostResult]:
        """Build *hosts*; *mode* overrides each host's configured mode."""
        results = []
        pending = []
        for host in hosts:
            if dry_run or repair or not self._unchanged(host, mode):
                pending.append(host)
                continue
            result = HostResult(host, Plan((), ()), mode if mode is not None else host.mode)
            results.append(result)
            if on_result is not None:
                on_result(result)
        desired = self.compose_hosts(pending, store_objects=not dry_run)
        results += self.apply_desired(
            desired,
            mode=mode,
            dry_run=dry_run,
            repair=repair,
            progress=progress,
            on_result=on_result,
        )
        return results

    def apply_desired(
        self,
        desired: Sequence[Desired],
        *,
        mode: str | None = None,
        dry_run: bool = False,
        repair: bool = False,
        progress: bool | None = None,
        on_result: Callable[[HostResult], None] | None = None,
    ) -> list[HostResult]:
        """Bring each host's tree to its already composed state."""
        results = []
        for one in desired:
            result = self._build_one(
                one, mode=mode, dry_run=dry_run, repair=repair, progress=progress
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
        return results

    def _unchanged(self, host: Host, mode: str | None) -> bool:
        record = self.state.host_record(host.name)
        if record is None or not record.inputs or self.state.read_journal(host.name) is not None:
            return False
        return record.inputs == self.inputs_digest(host, mode if mode is not None else host.mode)

    def _build_one(
        self,
        desired: Desired,
        *,
        mode: str | None,
        dry_run: bool,
        repair: bool,
        progress: bool | None,
    ) -> HostResult:
        host = desired.host
        started = time.monotonic()
        root = self.site.host_root(host)
        plan, recovered = self.plan_host(desired, repair=repair)
        chosen = mode if mode is not None else host.mode
        record = self.state.host_record(host.name)
        if dry_run:
            return HostResult(host, plan, chosen, recovered, dry_run=True)
        if (
            not plan
            and not recovered
            and record is not None
            and self._record_current(record, desired)
        ):
            inputs = self.inputs_digest(host, chosen)
            if record.inputs != inputs:  # e.g. an overlay touched without changing content
                self.state.update_record(dataclasses.replace(record, inputs=inputs))
            return HostResult(host, plan, record.mode, seconds=time.monotonic() - started)
        resolved = resolve_mode(chosen, root)
        applier = Applier(root, self.state.store, resolved)
        self.state.write_journal(host.name, plan.paths())
        applier.prepare()
        bar = Progress(f"{host.name}", total_files=len(plan.ops), enabled=progress)
        try:
            stats = applier.run(
                plan, on_op=lambda op: bar.advance(1, op.entry.size if op.entry.kind == "f" else 0)
            )
        finally:
            bar.close()
        data = serialize(desired.manifest)
        atomic_write_bytes(root / SCRATCH / PUBLISHED, data)
        syncfs(root)
        self.state.record_applied(
            HostRecord(
                host=host.name,
                ip=str(host.ip),
                base=desired.generation.base,
                generation=desired.generation.number,
                overlays=list(host.overlays),
                mode=resolved,
                manifest_digest=manifest_digest(data),
                built_at=time.time(),
                inputs=self.inputs_digest(host, chosen),
            ),
            data,
        )
        self.state.clear_journal(host.name)
        return HostResult(
            host, plan, resolved, recovered, stats=stats, seconds=time.monotonic() - started
        )

    @staticmethod
    def _record_current(record: HostRecord, desired: Desired) -> bool:
        return (
            record.base == desired.generation.base
            and record.generation == desired.generation.number
            and record.overlays == list(desired.host.overlays)
            and record.ip == str(desired.host.ip)
        )
