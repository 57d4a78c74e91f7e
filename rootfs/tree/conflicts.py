"""Reconcile a base update with what hosts changed themselves (pure).

Given the manifest last applied to a host (A), the newly composed one (D), the
disk's real state of the paths that differ, and the paths the host already
holds, decide per path whether the base's version is applied, the host's is
kept with the base's written beside it (a conflict), or the host's is kept
silently (policy). The result is the plan and the manifest the tree will hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rootfs.config.policy import UpdateConfig
from rootfs.tree.manifest import DIR, Change, Entry, Manifest, classify, diff
from rootfs.tree.plan import Plan, make_plan

NEW_SUFFIX = ".rootfs-new"


@dataclass(frozen=True)
class Hold:
    """A path whose host version is kept, and the base version it was kept against."""

    path: str
    base: Entry | None  # None: the base removed the path
    open: bool  # True: a conflict awaiting `rootfs resolve`; False: the host's version won


@dataclass(frozen=True)
class Reconciled:
    """The plan to run, the tree it leaves, and the holds afterwards."""

    plan: Plan
    applied: Manifest
    holds: Mapping[str, Hold]
    new_conflicts: tuple[Hold, ...]


def candidate_paths(changes: Sequence[Change]) -> set[str]:
    """Paths whose disk state the reconciliation needs to see."""
    return {c.path for c in changes}


def _host_changed(last: Entry | None, disk: Entry | None) -> bool:
    if last is not None and disk is not None and last.kind == DIR == disk.kind:
        return False  # directory metadata: the base's wins, nothing is lost
    return classify(last, disk, ignore_dir_mtime=True) is not None


def reconcile(
    applied: Manifest,
    desired: Manifest,
    disk: Mapping[str, Entry | None],
    holds: Mapping[str, Hold],
    policy: UpdateConfig,
    *,
    changes: Sequence[Change] | None = None,
) -> Reconciled:
    """Decide every differing path; *disk* must cover :func:`candidate_paths`.

    *changes* is ``diff(applied, desired)`` when the caller has it already.
    """
    if changes is None:
        changes = diff(applied, desired)
    if not holds and not any(
        _host_changed(c.old, disk.get(c.path, c.old)) and policy.decide(c.path) != "base"
        for c in changes
    ):
        # The common case: nothing the host did is in the way; the plan is the diff's.
        return Reconciled(make_plan(applied, desired, changes=changes), desired, {}, ())
    target = dict(desired.entries)
    start = dict(applied.entries)  # where the plan starts: reality, for kept paths
    kept: dict[str, Hold] = {}
    # Earlier decisions stand while the base still offers what they were made against.
    for path, hold in holds.items():
        if desired.get(path) == hold.base:
            _keep_host(target, path, hold, applied.get(path))
            kept[path] = hold
    new_conflicts: list[Hold] = []
    for change in diff(applied, Manifest.from_entries(target.values())):
        path = change.path
        if path in kept or (path.endswith(NEW_SUFFIX) and path[: -len(NEW_SUFFIX)] in kept):
            continue
        last, on_disk = applied.get(path), disk.get(path, applied.get(path))
        # A path the host decided on before, which the base has changed since, is a
        # host change again: the host's version (or absence) was its own choice.
        decided_before = path in holds
        if decided_before and on_disk == desired.get(path):
            continue
        if not decided_before and not _host_changed(last, on_disk):
            continue
        decision = policy.decide(path)
        if decision == "base":
            continue
        hold = Hold(path, desired.get(path), open=decision == "ask")
        _keep_host(target, path, hold, on_disk)
        if on_disk is None:
            start.pop(path, None)
        else:
            start[path] = on_disk
        kept[path] = hold
        if hold.open:
            new_conflicts.append(hold)
    wanted = Manifest.from_entries(target.values())
    plan = make_plan(Manifest.from_entries(start.values()), wanted)
    return Reconciled(plan, wanted, kept, tuple(new_conflicts))


def _keep_host(target: dict[str, Entry], path: str, hold: Hold, current: Entry | None) -> None:
    """Make *target* leave the host's *current* version at *path* (and the base's beside it)."""
    if current is None:
        target.pop(path, None)
    else:
        target[path] = current._replace(link="")
    beside = path + NEW_SUFFIX
    if hold.open and hold.base is not None and hold.base.kind != DIR:
        target[beside] = hold.base._replace(path=beside, link="")
    else:
        target.pop(beside, None)
