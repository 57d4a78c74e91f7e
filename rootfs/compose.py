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
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from rootfs.errors import UserError
from rootfs.manifest import DIR, SYMLINK, Entry, Manifest, parent_of

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


def _subtree(paths: Iterable[str], top: str) -> list[str]:
    prefix = top.rstrip("/") + "/"
    return [p for p in paths if p == top or p.startswith(prefix)]


def _delete(tree: dict[str, Entry], layer: Layer) -> None:
    for pattern in layer.deletions:
        wildcards = [pattern.index(c) for c in "*?[" if c in pattern]
        if wildcards:
            match = re.compile(fnmatch.translate(pattern)).match  # once, not per path
            # Only paths starting with the part before the first wildcard can match, and
            # startswith is several times cheaper than the regex (this runs once per host).
            prefix = pattern[: min(wildcards)]
            matched = [p for p in tree if p.startswith(prefix) and match(p)]
        else:
            matched = [pattern] if pattern in tree else []
        for top in matched:
            if top == "/":
                raise UserError(f"overlay '{layer.name}': overlay.toml: delete: cannot delete '/'")
            for path in _subtree(list(tree), top):
                tree.pop(path, None)


def _lay(tree: dict[str, Entry], layer: Layer) -> None:
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
            for child in _subtree(list(tree), path):
                del tree[child]
        parent = tree.get(parent_of(path))
        if path != "/" and (parent is None or parent.kind != DIR):
            raise UserError(
                f"overlay '{layer.name}': {path}: its parent directory is missing or not a"
                " directory in the tree below"
            )
        tree[path] = entry


def _override(tree: dict[str, Entry], layer: Layer) -> None:
    for path, attrs in layer.attrs.items():
        entry = tree.get(path)
        if entry is None:
            raise UserError(
                f"overlay '{layer.name}': overlay.toml: attrs.\"{path}\": no such path in the"
                " composed tree; fix the path or remove the table"
            )
        tree[path] = entry._replace(
            mode=entry.mode if attrs.mode is None else attrs.mode,
            uid=entry.uid if attrs.uid is None else attrs.uid,
            gid=entry.gid if attrs.gid is None else attrs.gid,
        )


def normalise_hardlinks(tree: dict[str, Entry]) -> None:
    """Make every hardlink group consistent: equal members, named by its first path."""
    groups: dict[tuple[object, ...], list[str]] = {}
    for path, entry in tree.items():
        if entry.link:
            key = (
                entry.link,
                entry.data,
                entry.mode,
                entry.uid,
                entry.gid,
                entry.mtime_ns,
                entry.xattrs,
            )
            groups.setdefault(key, []).append(path)
    for members in groups.values():
        leader = min(members) if len(members) > 1 else ""
        for path in members:
            if tree[path].link != leader:
                tree[path] = tree[path]._replace(link=leader)


def compose(base: Manifest, layers: Sequence[Layer]) -> Manifest:
    """The desired host tree: *base* with *layers* applied in order."""
    tree = dict(base.entries)
    if "/" not in tree:
        raise UserError("the base has no root directory entry; re-import it")
    for layer in layers:
        _delete(tree, layer)
        _lay(tree, layer)
        _override(tree, layer)
    tree.pop(RESERVED, None)
    normalise_hardlinks(tree)
    return Manifest({path: tree[path] for path in sorted(tree)})
