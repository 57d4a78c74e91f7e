"""A manifest seen as a filesystem: inode numbers, directory children and link counts (pure).

Inode numbers are derived from what an entry *is*, not from where it sits in the manifest:
a 64-bit xxh3 of the entry's type and its hardlink group's first path. So every member of
a hardlink group shares one inode, and a path that keeps its type keeps its inode number
across a new manifest, which is what lets a live mount keep the kernel's cached pages of
every unchanged file when a base update arrives. A path that changes type gets a new
number, so the kernel never sees an inode change type under it.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import xxhash

from rootfs.tree.manifest import DIR, Entry, Manifest, parent_of

log = logging.getLogger(__name__)

ROOT_INO = 1  # FUSE_ROOT_ID
_INO_MASK = (1 << 63) - 1  # st_ino is unsigned, but some tools print it as signed


def fs_name(path: str) -> bytes:
    """The last component of a manifest path as the kernel names it (raw bytes)."""
    return path.rpartition("/")[2].encode("utf-8", "surrogateescape")


def child_path(parent: str, name: bytes) -> str:
    """The manifest path of *name* inside the directory at manifest path *parent*."""
    text = name.decode("utf-8", "surrogateescape")
    return "/" + text if parent == "/" else f"{parent}/{text}"


def ino_for(kind: str, key: str) -> int:
    """The inode number of an entry of *kind* whose hardlink group starts at *key*."""
    if key == "/":
        return ROOT_INO
    ino = xxhash.xxh3_64_intdigest(f"{kind}\0{key}".encode("utf-8", "surrogateescape")) & _INO_MASK
    return ino if ino > ROOT_INO else ino + 2


class Tree:
    """Lookup tables over one manifest, built once per manifest (a second for 100k entries)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.ino: dict[str, int] = {}
        self.children: dict[str, list[str]] = defaultdict(list)
        self.nlink: dict[str, int] = {}
        self.groups: dict[str, list[str]] = defaultdict(list)  # group leader -> member paths
        owner: dict[int, str] = {}
        subdirs: dict[str, int] = defaultdict(int)
        for entry in manifest:
            key = entry.link or entry.path
            ino = ino_for(entry.kind, key)
            if owner.setdefault(ino, key) != key:  # a 64-bit collision: astronomically rare
                log.warning("inode collision between %s and %s", owner[ino], key)
                ino = ino_for(entry.kind, key + "\0")
                owner[ino] = key
            self.ino[entry.path] = ino
            if entry.link:
                self.groups[entry.link].append(entry.path)
            if entry.path != "/":
                parent = parent_of(entry.path)
                self.children[parent].append(entry.path)
                if entry.kind == DIR:
                    subdirs[parent] += 1
        for entry in manifest:
            if entry.kind == DIR:
                self.nlink[entry.path] = 2 + subdirs.get(entry.path, 0)
            elif entry.link:
                self.nlink[entry.path] = len(self.groups[entry.link])

    def get(self, path: str) -> Entry | None:
        return self.manifest.entries.get(path)

    def links(self, path: str) -> int:
        """st_nlink of the entry at *path*."""
        return self.nlink.get(path, 1)

    def group_of(self, path: str) -> list[str]:
        """Every path sharing *path*'s inode (just *path* when it is not hardlinked)."""
        entry = self.get(path)
        if entry is None or not entry.link:
            return [path]
        return self.groups[entry.link]

    def file_paths(self) -> dict[str, tuple[str, int]]:
        """digest -> (a path holding it, size), for prefetching by digest."""
        return {e.data: (e.path, e.size) for e in self.manifest if e.kind == "f"}
