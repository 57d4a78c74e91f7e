"""Compose a host's desired tree: base manifest + overlay layers (pure).

Rules, in layer order (later layers win):

1. The layer's deletions remove matching paths (fnmatch on absolute paths)
   and their subtrees.
2. The layer's entries are laid over the result. A directory over an existing
   directory keeps the existing one's metadata (the overlay directory is only a
   container); anything else replaces the path, and a replaced directory takes
   its subtree with it. A layer may not put a directory where the tree has a
   symlink (``/lib -> usr/lib`` on merged-/usr systems): that would silently cut
   the link, so it is an error that names the real path to use.
3. The layer's attribute overrides set mode/owner on existing paths.

Hardlink groups are then renormalised: a group keeps only members that still
agree on content and metadata, and is named by its first path.

The result is an `Overlaid` manifest: the base's entries are shared, not copied, and only
what the layers change belongs to the host, so composing (and comparing and writing) a
host's tree costs what its overlays change, however large the base.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from rootfs.errors import UserError
from rootfs.tree.manifest import DIR, SYMLINK, Entry, Manifest, Overlaid, parent_of

RESERVED = "/.rootfs"  # published manifest and apply scratch space inside each tree


@dataclass(frozen=True)
class AttrOverride:
    """Mode/owner to force on a path; None keeps what the tree has."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True)
class Layer:
    """One overlay, rendered for one host: entries already named by digest."""

    name: str
    entries: Sequence[Entry]
    deletions: Sequence[str] = ()
    attrs: Mapping[str, AttrOverride] = field(default_factory=dict)


class _Tree:
    """The tree being composed: the base's entries and what the layers change so far.

    The base is never copied: a host's tree differs from its base in a few paths, and
    composing every host of a large base would otherwise copy and sort all of it each time.
    Subtrees and prefixes are found by bisecting the base's sorted paths.
    """

    def __init__(self, base: Manifest) -> None:
        self.manifest = base
        self.base = base.entries
        self.paths = base.paths
        self.changes: dict[str, Entry | None] = {}  # None: a base path removed
        self.added: list[str] = []  # paths not in the base, present now, in order

    def get(self, path: str) -> Entry | None:
        if path in self.changes:
            return self.changes[path]
        return self.base.get(path)

    def __contains__(self, path: str) -> bool:
        return self.get(path) is not None

    def put(self, entry: Entry) -> None:
        path = entry.path
        if path not in self.base and self.changes.get(path) is None:
            bisect.insort(self.added, path)
        self.changes[path] = entry

    def remove(self, path: str) -> None:
        if path in self.base:
            self.changes[path] = None
        elif self.changes.pop(path, None) is not None:
            del self.added[bisect.bisect_left(self.added, path)]

    def with_prefix(self, prefix: str) -> list[str]:
        """The paths present that start with *prefix*, in order."""
        found = []
        for paths in (self.paths, self.added):
            i = bisect.bisect_left(paths, prefix)
            while i < len(paths) and paths[i].startswith(prefix):
                found.append(paths[i])
                i += 1
        return sorted(p for p in found if p in self)

    def subtree(self, top: str) -> list[str]:
        """*top* and everything under it."""
        below = self.with_prefix(top.rstrip("/") + "/")  # for "/": everything, itself too
        return [top, *below] if top in self and top != "/" else below

    def result(self) -> Manifest:
        """The composed tree: the base with what was changed laid over it."""
        return Manifest(Overlaid(self.manifest, self.changes))


def _delete(tree: _Tree, layer: Layer) -> None:
    for pattern in layer.deletions:
        wildcards = [pattern.index(c) for c in "*?[" if c in pattern]
        if wildcards:
            match = re.compile(fnmatch.translate(pattern)).match  # once, not per path
            # Only paths starting with the part before the first wildcard can match.
            matched = [p for p in tree.with_prefix(pattern[: min(wildcards)]) if match(p)]
        else:
            matched = [pattern] if pattern in tree else []
        for top in matched:
            if top == "/":
                raise UserError(f"overlay '{layer.name}': overlay.toml: delete: cannot delete '/'")
            for path in tree.subtree(top):
                tree.remove(path)


def _lay(tree: _Tree, layer: Layer) -> None:
    for entry in sorted(layer.entries, key=lambda e: e.path):
        path = entry.path
        if path == RESERVED or path.startswith(RESERVED + "/"):
            raise UserError(
                f"overlay '{layer.name}': {path} is reserved for rootfs's own use; rename it"
            )
        existing = tree.get(path)
        if existing is not None and existing.kind == SYMLINK and entry.kind == DIR:
            raise UserError(
                f"overlay '{layer.name}': {path} is a symlink to {existing.target!r} in the tree"
                f" below it; put the overlay's files under the link's target instead"
            )
        if existing is not None and existing.kind == DIR:
            if entry.kind == DIR:
                continue
            for child in tree.subtree(path):
                tree.remove(child)
        parent = tree.get(parent_of(path))
        if path != "/" and (parent is None or parent.kind != DIR):
            raise UserError(
                f"overlay '{layer.name}': {path}: its parent directory is missing or not a"
                " directory in the tree below"
            )
        tree.put(entry)


def _override(tree: _Tree, layer: Layer) -> None:
    for path, attrs in layer.attrs.items():
        entry = tree.get(path)
        if entry is None:
            raise UserError(
                f"overlay '{layer.name}': overlay.toml: attrs.\"{path}\": no such path in the"
                " composed tree; fix the path or remove the table"
            )
        tree.put(
            entry._replace(
                mode=entry.mode if attrs.mode is None else attrs.mode,
                uid=entry.uid if attrs.uid is None else attrs.uid,
                gid=entry.gid if attrs.gid is None else attrs.gid,
            )
        )


def _link_key(entry: Entry) -> tuple[object, ...]:
    """What hardlink group members must agree on: one inode has one content and metadata."""
    return (entry.link, entry.data, entry.mode, entry.uid, entry.gid, entry.mtime_ns, entry.xattrs)


def _normalised(members: Iterable[Entry]) -> Iterator[Entry]:
    """The entries of *members* (sharing a ``link``) whose ``link`` must change: a group keeps
    only members that agree on content and metadata, and is named by its first path."""
    groups: dict[tuple[object, ...], list[Entry]] = {}
    for entry in members:
        groups.setdefault(_link_key(entry), []).append(entry)
    for group in groups.values():
        leader = min(e.path for e in group) if len(group) > 1 else ""
        for entry in group:
            if entry.link != leader:
                yield entry._replace(link=leader)


# Per base: the link fixes its own groups need (most bases need none), by the base's id (the
# manifest held, so the id stays its own).
_BASE_FIXES: dict[int, tuple[Manifest, dict[str, Entry]]] = {}


def _base_fixes(base: Manifest) -> dict[str, Entry]:
    known = _BASE_FIXES.get(id(base))
    if known is not None and known[0] is base:
        return known[1]
    if len(_BASE_FIXES) >= 4:
        _BASE_FIXES.clear()
    groups: dict[str, list[Entry]] = {}
    for entry in base:
        if entry.link:
            groups.setdefault(entry.link, []).append(entry)
    fixes = {e.path: e for members in groups.values() for e in _normalised(members)}
    _BASE_FIXES[id(base)] = (base, fixes)
    return fixes


def _normalise_hardlinks(tree: _Tree) -> None:
    """Make every hardlink group consistent (see `_normalised`), looking only at the groups
    the layers touched: the others are as in the base, whose fixes are worked out once."""
    touched = {e.link for e in tree.changes.values() if e is not None and e.link}
    touched.update(
        old.link for p in tree.changes if (old := tree.base.get(p)) is not None and old.link
    )
    for path, fixed in _base_fixes(tree.manifest).items():
        if tree.base[path].link not in touched:  # a group no layer touched
            tree.put(fixed)
    for link in touched:
        paths = set(tree.manifest.link_members(link))
        paths.update(p for p, e in tree.changes.items() if e is not None and e.link == link)
        members = [e for p in paths if (e := tree.get(p)) is not None and e.link == link]
        for fixed in _normalised(members):
            tree.put(fixed)


def compose(base: Manifest, layers: Sequence[Layer]) -> Manifest:
    """The desired host tree: *base* with *layers* applied in order.

    The result is an `Overlaid` on *base*: what it costs is what the layers change.
    """
    if isinstance(base.entries, Overlaid):
        base = Manifest(dict(base.entries))
    if "/" not in base:
        raise UserError("the base has no root directory entry; re-import it")
    tree = _Tree(base)
    for layer in layers:
        _delete(tree, layer)
        _lay(tree, layer)
        _override(tree, layer)
    tree.remove(RESERVED)
    _normalise_hardlinks(tree)
    return tree.result()
