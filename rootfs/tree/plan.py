"""Plan the changes that take a tree from one manifest to another (pure).

A plan is an ordered tuple of operations that an executor (``apply.py``) runs
one by one; every operation is idempotent, so a plan interrupted at any point
and planned again from the tree's real state converges. Order:

1. removals, deepest path first (children before their directory), including
   paths whose type changes between a directory and anything else;
2. creations and replacements in path order (a directory before its
   children); a hardlink member is linked to its group's first path, which sorts
   (and so is written) first;
3. directory metadata last, deepest first, because creating or removing a
   child bumps its directory's mtime.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from rootfs.tree.manifest import DIR, Change, Entry, Manifest, diff, parent_of


class Action(Enum):
    REMOVE = "remove"  # delete the path (an emptied directory too)
    PUT = "put"  # create or replace the path's content, with metadata
    LINK = "link"  # make the path a hardlink of entry.link (the group's first path)
    META = "meta"  # set mode/owner/xattrs/mtime in place
    DIR_META = "dir-meta"  # final directory metadata


@dataclass(frozen=True)
class Op:
    """One step of a plan; *entry* is the desired entry (the old one for REMOVE)."""

    action: Action
    path: str
    entry: Entry


@dataclass(frozen=True)
class Plan:
    """The ordered operations and the path-level changes they come from."""

    ops: tuple[Op, ...]
    changes: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.ops)

    def counts(self) -> dict[str, int]:
        """Changes by kind: added / removed / modified / metadata."""
        result = {"added": 0, "removed": 0, "modified": 0, "metadata": 0}
        for change in self.changes:
            result[change.kind] += 1
        return result

    def paths(self) -> set[str]:
        """Every path an operation touches (what a journal must record)."""
        return {op.path for op in self.ops}


def _needs_removal(change: Change) -> bool:
    old, new = change.old, change.new
    if old is None:
        return False
    if new is None:
        return True
    # A directory can't be renamed over by a file (or vice versa): remove first.
    return (old.kind == DIR) != (new.kind == DIR)


def make_plan(old: Manifest, new: Manifest, *, changes: Iterable[Change] | None = None) -> Plan:
    """Operations that turn a tree described by *old* into one described by *new*."""
    all_changes = tuple(diff(old, new) if changes is None else changes)
    removals: list[Op] = []
    puts: list[Op] = []
    touched_dirs: set[str] = set()
    for change in all_changes:
        path, new_entry = change.path, change.new
        if _needs_removal(change):
            assert change.old is not None
            removals.append(Op(Action.REMOVE, path, change.old))
            touched_dirs.add(parent_of(path))
        if new_entry is None:
            continue
        if change.kind == "metadata":
            if new_entry.kind == DIR:
                touched_dirs.add(path)
            else:
                puts.append(Op(Action.META, path, new_entry))
            continue
        if new_entry.link and new_entry.link != path:
            puts.append(Op(Action.LINK, path, new_entry))
        else:
            puts.append(Op(Action.PUT, path, new_entry))
        touched_dirs.add(parent_of(path))
        if new_entry.kind == DIR:
            touched_dirs.add(path)
    _relink_members(old, new, puts)
    removals.sort(key=lambda op: op.path, reverse=True)
    dir_meta = [
        Op(Action.DIR_META, path, entry)
        for path in sorted(touched_dirs, reverse=True)
        if (entry := new.get(path)) is not None and entry.kind == DIR
    ]
    return Plan(tuple(removals) + tuple(puts) + tuple(dir_meta), all_changes)


def _relink_members(old: Manifest, new: Manifest, puts: list[Op]) -> None:
    """A rewritten group leader is a new inode: relink members that did not change.

    Without this, unchanged members would keep the old inode and the group would
    silently split on disk.
    """
    rewritten = {op.path for op in puts if op.action is Action.PUT and op.entry.link}
    if not rewritten:
        return
    planned = {op.path for op in puts}
    for leader in sorted(rewritten):
        for path in new.link_members(leader):
            entry = new.entries[path]
            if path != leader and path not in planned:
                old_entry = old.get(path)
                if old_entry is not None and old_entry.link == leader:
                    puts.append(Op(Action.LINK, path, entry))
    puts.sort(key=lambda op: op.path)
