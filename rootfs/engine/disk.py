"""Read what a host tree really holds, as a manifest comparable with the applied one.

Used by ``verify`` (drift), ``status`` (drift count), ``build --repair``, and by a
base update to see which changed paths the host changed itself. Content is hashed only when
size or mtime differ from the reference entry (rsync's quick check), unless
``checksum`` asks for every file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rootfs.store.fsmeta import entry_from_stat, kind_of, read_xattrs
from rootfs.store.layout import SCRATCH, tree_path
from rootfs.store.objects import hash_file
from rootfs.tree.manifest import FILE, SYMLINK, Entry, Manifest


def read_entry(
    root: str, path: str, reference: Entry | None, *, checksum: bool = False
) -> tuple[Entry | None, tuple[int, int] | None]:
    """The entry at *path* on disk (None if absent or a socket) and its inode identity."""
    full = tree_path(root, path)
    try:
        st = os.lstat(full)
    except (FileNotFoundError, NotADirectoryError):  # absent, or a parent is now a file
        return None, None
    kind = kind_of(st)
    if kind is None:
        return None, None
    data = ""
    if kind == SYMLINK:
        data = os.readlink(full)
    xattrs = read_xattrs(full) if kind != SYMLINK else _symlink_xattrs(full)
    entry = entry_from_stat(path, st, data=data, xattrs=xattrs)
    if kind == SYMLINK:
        entry = entry._replace(size=len(os.fsencode(data)))
    if kind == FILE:
        quick = (
            not checksum
            and reference is not None
            and reference.kind == FILE
            and reference.size == st.st_size
            and reference.mtime_ns == st.st_mtime_ns
        )
        digest = reference.data if quick and reference is not None else hash_file(full)
        entry = entry._replace(data=digest)
    return entry, (st.st_dev, st.st_ino)


def _symlink_xattrs(full: str) -> tuple[tuple[str, bytes], ...]:
    try:
        return read_xattrs(full)
    except OSError:
        return ()


def read_paths(
    root: str, paths: Iterable[str], reference: Manifest, *, checksum: bool = False
) -> dict[str, Entry | None]:
    """The disk state of just *paths* (what an interrupted apply touched)."""
    found: dict[str, Entry | None] = {}
    inodes: dict[str, tuple[int, int] | None] = {}
    for path in paths:
        found[path], inodes[path] = read_entry(root, path, reference.get(path), checksum=checksum)
    _fill_links(root, found, inodes, reference)
    return found


def _fill_links(
    root: str,
    found: dict[str, Entry | None],
    inodes: dict[str, tuple[int, int] | None],
    reference: Manifest,
) -> None:
    """A path is in its reference hardlink group only if it is the leader's inode on disk."""
    for path, entry in found.items():
        ref = reference.get(path)
        if entry is None or entry.kind != FILE or ref is None or not ref.link:
            continue
        if ref.link == path:
            entry = entry._replace(link=path)
        else:
            leader = inodes.get(ref.link)
            if leader is None and ref.link not in inodes:
                try:
                    st = os.lstat(tree_path(root, ref.link))
                    leader = (st.st_dev, st.st_ino)
                except (FileNotFoundError, NotADirectoryError):
                    leader = None
            entry = entry._replace(link=ref.link if leader == inodes[path] else "")
        found[path] = entry


def read_tree(root: str, reference: Manifest, *, checksum: bool = False) -> Manifest:
    """The whole tree at *root* (minus rootfs's own ``.rootfs``) as a manifest."""
    found: dict[str, Entry | None] = {}
    inodes: dict[str, tuple[int, int] | None] = {}
    if not os.path.isdir(root):
        return Manifest({})
    stack = ["/"]
    while stack:
        path = stack.pop()
        entry, inode = read_entry(root, path, reference.get(path), checksum=checksum)
        if entry is None:
            continue
        found[path], inodes[path] = entry, inode
        if entry.kind == "d":
            prefix = "" if path == "/" else path
            with os.scandir(tree_path(root, path)) as it:
                names = [d.name for d in it]
            for name in names:
                if path == "/" and name == SCRATCH:
                    continue
                stack.append(f"{prefix}/{name}")
    _fill_links(root, found, inodes, reference)
    return Manifest.from_entries(e for e in found.values() if e is not None)
