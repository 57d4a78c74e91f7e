"""The build service: bring host trees to their composed state, resumably.

For each host: compose base + overlays into the desired manifest, reconcile it
with what was last applied and what the host changed itself (``conflicts.py``),
journal the resulting operations, apply them, publish the manifest in the tree,
and record what was applied. A build killed at any moment leaves its journal;
the next build first replays it to the end (every operation is idempotent), so it
converges to the same tree as an uninterrupted run and loses no host-local change.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

from rootfs.config.site import Host, Site
from rootfs.durable import atomic_write_bytes
from rootfs.engine import disk, forked
from rootfs.engine.apply import Applier, ApplyStats, resolve_mode
from rootfs.engine.overlay import LayerRenderer, Overlay, load_overlay
from rootfs.engine.progress import ItemsProgress, Progress
from rootfs.errors import ManifestFormatError, UserError
from rootfs.store import layout
from rootfs.store.objects import syncfs
from rootfs.store.state import Generation, HostRecord, Journal, State
from rootfs.tree.compose import Layer, compose
from rootfs.tree.conflicts import NEW_SUFFIX, Hold, Reconciled, candidate_paths, reconcile
from rootfs.tree.manifest import FILE, Manifest, diff, manifest_digest, serialize
from rootfs.tree.plan import Plan, make_plan

DEFAULT_MAX_JOBS = 8  # the workers share one filesystem; a cap until bigger machines measure more


@dataclass(frozen=True)
class Desired:
    """A host's composed tree and where it came from."""

    host: Host
    generation: Generation
    manifest: Manifest
    layers: tuple[Layer, ...] = ()  # the host's rendered overlays, in order


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
    conflicts: tuple[Hold, ...] = ()  # new conflicts: host's version kept, base's beside it

    @property
    def up_to_date(self) -> bool:
        return not self.plan


class Builder:
    """Composes and applies host trees for one site and state directory."""

    def __init__(self, site: Site, state: State) -> None:
        self.site = site
        self.state = state
        self._overlays: dict[str, Overlay] = {}
        self._bases: dict[tuple[str, int], Manifest] = {}
        self._fingerprints: dict[str, list[object]] = {}
        self._unfinished: list[tuple[Host, Journal]] = []

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

    def inputs_digest(self, host: Host, mode: str, gen: Generation | None = None) -> str:
        """A digest of everything *host*'s tree is composed from (with the current
        generation of its base, or *gen*).

        When it equals the one recorded at the last apply (and no apply was
        interrupted), the tree is up to date without reading any manifest.
        """
        if gen is None:
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
                layers = tuple(renderer.render(self._overlay(o), context) for o in host.overlays)
                result.append(Desired(host, gen, compose(self._base(gen), layers), layers))
            if not store_objects:
                batch.abort()
        return result

    def reconcile_host(
        self, desired: Desired, *, mode: str | None = None, repair: bool = False
    ) -> Reconciled:
        """The plan for one host: base changes, minus what the host changed itself.

        With *repair*, the disk's real state is the starting point and every
        difference is put right (the host's changes and holds included).
        """
        name = desired.host.name
        root = str(self.site.host_root(desired.host))
        if repair:
            applied = disk.read_tree(root, desired.manifest)
            return reconcile(applied, desired.manifest, {}, {}, self.site.config.update)
        holds = self.state.holds(name)
        recomposed = None if holds else self._recomposed(desired, mode or desired.host.mode)
        if recomposed is not None:
            applied = recomposed
        else:
            applied = self.state.applied_manifest(name) or Manifest({})
        changes = diff(applied, desired.manifest)
        on_disk = disk.read_paths(root, candidate_paths(changes), applied)
        return reconcile(
            applied, desired.manifest, on_disk, holds, self.site.config.update, changes=changes
        )

    def _recomposed(self, desired: Desired, mode: str) -> Manifest | None:
        """What the last apply left in the host's tree, composed again instead of read back.

        When only the generation changed since that apply (the same layers and mode; the
        caller checks that the host holds nothing of its own), the tree then applied is the
        old generation composed with this build's layers. That costs what the layers change,
        where reading the recorded manifest costs what the whole base does: the difference
        between a base update proportional to the change and one proportional to hosts times
        base size. The recorded manifest's digest must match, or None (read it instead).
        """
        record = self.state.host_record(desired.host.name)
        if record is None or record.base != desired.generation.base or not record.inputs:
            return None
        try:
            old = self.state.generation(record.base, record.generation)
            if record.inputs != self.inputs_digest(desired.host, mode, old):
                return None
            again = compose(self._base(old), desired.layers)
        except (UserError, ManifestFormatError, OSError):
            return None  # the old generation is gone or unreadable, or the layers don't fit it
        return again if manifest_digest(serialize(again)) == record.manifest_digest else None

    def build(
        self,
        hosts: Sequence[Host],
        *,
        mode: str | None = None,
        dry_run: bool = False,
        repair: bool = False,
        progress: bool | None = None,
        on_result: Callable[[HostResult], None] | None = None,
        jobs: int | None = None,
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
        # Composing every host first means bad input (a template error) stops the build
        # before any tree is touched.
        desired = self.compose_hosts(pending, store_objects=not dry_run)
        if jobs is None:
            jobs = min(forked.available_cpus(), DEFAULT_MAX_JOBS)
        if min(jobs, len(desired)) > 1 and not dry_run:
            results += self._apply_forked(
                desired, jobs, mode=mode, repair=repair, progress=progress, on_result=on_result
            )
            return results
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
        try:
            for one in desired:
                result = self._build_one(
                    one, mode=mode, dry_run=dry_run, repair=repair, progress=progress
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            self._finish()  # also when a later host fails: what was applied gets recorded
        return results

    def _apply_forked(
        self,
        desired: Sequence[Desired],
        jobs: int,
        *,
        mode: str | None,
        repair: bool,
        progress: bool | None,
        on_result: Callable[[HostResult], None] | None,
    ) -> list[HostResult]:
        """Apply composed hosts in *jobs* forked workers (see `forked.py`).

        Hosts are independent and their work is mostly Python, so each worker applies its
        share; every host is journaled and recorded exactly as in one process. The workers'
        progress comes back as text, drawn by the parent on one line for all hosts.
        """

        def work(indices: Sequence[int], outbox: forked.Outbox[HostResult]) -> None:
            try:
                for i in indices:
                    result = self._build_one(
                        desired[i],
                        mode=mode,
                        dry_run=False,
                        repair=repair,
                        progress=False,
                        report=functools.partial(outbox.progress, i),
                    )
                    outbox(i, result)
            finally:
                self._finish()

        results: dict[int, HostResult] = {}
        bar = ItemsProgress("hosts", len(desired), enabled=progress)

        def arrived(index: int, result: HostResult) -> None:
            results[index] = result
            bar.finished(index)
            if on_result is not None:
                on_result(result)

        try:
            forked.run(len(desired), work, jobs=jobs, on_result=arrived, on_progress=bar.update)
        finally:
            bar.close()
        return [results[i] for i in sorted(results)]

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
        report: Callable[[str], None] | None = None,
    ) -> HostResult:
        """Build one composed host; *report*, if given, receives its progress lines."""
        host = desired.host
        started = time.monotonic()
        recovered = False
        if not dry_run:
            journal = self.state.read_journal(host.name)
            if journal is not None:
                self._run(host, journal, progress=progress, report=report)
                self._finish()
                recovered = True
        chosen = mode if mode is not None else host.mode
        rec = self.reconcile_host(desired, mode=chosen, repair=repair)
        plan = rec.plan
        record = self.state.host_record(host.name)
        if dry_run:
            return HostResult(
                host, plan, chosen, recovered, dry_run=True, conflicts=rec.new_conflicts
            )
        if not plan and record is not None and self._record_current(record, desired):
            inputs = self.inputs_digest(host, chosen)
            if record.inputs != inputs:  # e.g. an overlay touched without changing content
                self.state.update_record(dataclasses.replace(record, inputs=inputs))
            return HostResult(
                host, plan, record.mode, recovered, seconds=time.monotonic() - started
            )
        root = self.site.host_root(host)
        resolved = resolve_mode(chosen, root)
        # Files a client may hold open keep their inode in the attic until it reboots.
        preserve = frozenset(
            c.path
            for c in plan.changes
            if c.old is not None and c.old.kind == FILE and c.kind in ("modified", "removed")
        )
        attic = self.attic_dir(host, desired.generation) if preserve and record else None
        journal = Journal(
            mode=resolved,
            ops=plan.ops,
            target=serialize(rec.applied),
            holds=rec.holds,
            record=HostRecord(
                host=host.name,
                ip=str(host.ip),
                base=desired.generation.base,
                generation=desired.generation.number,
                overlays=list(host.overlays),
                mode=resolved,
                manifest_digest="",
                built_at=time.time(),
                inputs=self.inputs_digest(host, chosen),
            ),
            preserve=preserve if attic else frozenset(),
            attic=str(attic) if attic else None,
        )
        self.state.write_journal(host.name, journal)
        stats = self._run(host, journal, progress=progress, report=report)
        return HostResult(
            host,
            plan,
            resolved,
            recovered,
            stats=stats,
            seconds=time.monotonic() - started,
            conflicts=rec.new_conflicts,
        )

    def resolve(self, host: Host, path: str, take: str) -> HostResult:
        """End the conflict at *path*: keep the base's version or the host's, for good."""
        holds = self.state.holds(host.name)
        hold = holds.get(path)
        if hold is None or not hold.open:
            raise UserError(
                f"host {host.name} has no open conflict at {path}; 'rootfs status' and"
                f" 'rootfs verify {host.name}' list them"
            )
        if self.state.read_journal(host.name) is not None:
            raise UserError(f"an apply of {host.name} was interrupted; run 'rootfs build' first")
        record = self.state.host_record(host.name)
        applied = self.state.applied_manifest(host.name)
        if record is None or applied is None:
            raise UserError(f"host {host.name} has never been built")
        before = dict(applied.entries)
        current, _ = disk.read_entry(str(self.site.host_root(host)), path, applied.get(path))
        if current is None:  # what the host holds now, whatever it was when the conflict arose
            before.pop(path, None)
        else:
            before[path] = current
        after = dict(before)
        after.pop(path + NEW_SUFFIX, None)
        remaining = dict(holds)
        if take == "base":
            del remaining[path]
            if hold.base is None:
                after.pop(path, None)
            else:
                after[path] = hold.base
        else:
            remaining[path] = dataclasses.replace(hold, open=False)
        start, wanted = (
            Manifest.from_entries(before.values()),
            Manifest.from_entries(after.values()),
        )
        plan = make_plan(start, wanted)
        attic = self.attic_dir(host, self.state.generation(record.base, record.generation))
        journal = Journal(
            mode=record.mode,
            ops=plan.ops,
            target=serialize(wanted),
            holds=remaining,
            record=dataclasses.replace(record, built_at=time.time()),
            preserve=frozenset({path})
            if current is not None and current.kind == FILE
            else frozenset(),
            attic=str(attic),
        )
        self.state.write_journal(host.name, journal)
        stats = self._run(host, journal, progress=False)
        self._finish()
        return HostResult(host, plan, record.mode, stats=stats)

    def attic_dir(self, host: Host, gen: Generation) -> Path:
        """Where this apply keeps the inodes it replaces: beside the trees, not exported."""
        return layout.attic_dir(
            self.site.config.export_root,
            host.name,
            now=time.time(),
            base=gen.base,
            generation=gen.number,
        )

    def _run(
        self,
        host: Host,
        journal: Journal,
        *,
        progress: bool | None,
        report: Callable[[str], None] | None = None,
    ) -> ApplyStats:
        """Carry out a journaled apply (also to resume one); _finish() records it."""
        root = self.site.host_root(host)
        applier = Applier(
            root,
            self.state.store,
            journal.mode,
            preserve=journal.preserve,
            attic=Path(journal.attic) if journal.attic else None,
        )
        applier.prepare()
        bar = Progress(f"{host.name}", total_files=len(journal.ops), enabled=progress, sink=report)
        try:
            stats = applier.run(
                Plan(journal.ops, ()),
                on_op=lambda op: bar.advance(1, op.entry.size if op.entry.kind == FILE else 0),
            )
        finally:
            bar.close()
        atomic_write_bytes(root / layout.PUBLISHED_MANIFEST, journal.target, durable=False)
        self._unfinished.append((host, journal))
        return stats

    def _finish(self) -> None:
        """Record every apply carried out since the last call, with two syncfs in all.

        Order for a power cut: the trees are durable before any record says they
        are applied, and the records before the journals go; a journal left over
        is replayed (idempotently) by the next build.
        """
        if not self._unfinished:
            return
        done, self._unfinished = self._unfinished, []
        filesystems: dict[int, Path] = {}
        for host, _ in done:
            root = self.site.host_root(host)
            filesystems.setdefault(os.stat(root).st_dev, root)
        for root in filesystems.values():
            syncfs(root)
        for host, journal in done:
            self.state.save_holds(host.name, journal.holds, durable=False)
            record = dataclasses.replace(
                journal.record, manifest_digest=manifest_digest(journal.target)
            )
            self.state.record_applied(record, journal.target, durable=False)
        syncfs(self.state.root)
        for host, _ in done:
            self.state.clear_journal(host.name)

    @staticmethod
    def _record_current(record: HostRecord, desired: Desired) -> bool:
        return (
            record.base == desired.generation.base
            and record.generation == desired.generation.number
            and record.overlays == list(desired.host.overlays)
            and record.ip == str(desired.host.ip)
        )
