"""Manifests: the complete, immutable description of a root tree, and their diff.

A manifest lists every entry of a tree (files, directories, symlinks, hardlinks,
devices, fifos) with its metadata and, for files, the xxh3-128 digest naming its
content in the store. Base generations, composed host trees and the trees last
applied to hosts are all manifests; a generation is identified by the digest of
its manifest file.

File format, version 1 (UTF-8 text, one entry per line, sorted by path)::

    rootfs-manifest 1
    /	d	0755	0	0	1700000000000000000	0	-	-	-
    /bin	l	0777	0	0	1700000000000000000	7	usr/bin	-	-
    /dev/null	c	0666	0	0	1700000000000000000	0	1:3	-	-
    /usr/bin/ping	f	0755	0	0	0	90464	<digest>	-	security.capability=01...

Ten tab-separated fields: path, type, mode, uid, gid, mtime, size, data, link, xattrs.

- path: absolute, ``/`` for the root itself. Lines are in strictly ascending
  order of path (Python string order), so a parent precedes its children.
- type: ``f`` regular file, ``d`` directory, ``l`` symlink, ``c``/``b``
  character/block device, ``p`` fifo. Sockets are never recorded.
- mode: permission bits including setuid/setgid/sticky, four octal digits.
- uid, gid: numeric owner. mtime: nanoseconds since the epoch. size: bytes of
  content for files, length of the target for symlinks, else 0.
- data: the content digest (files), the target (symlinks), ``major:minor``
  (devices), else ``-``.
- link: hardlink group: ``-`` for none, else the first path (in sort order) of
  the group; every member of a group is the same inode.
- xattrs: ``-`` or ``name=hexvalue`` pairs joined by ``;``, sorted by name.

Text fields (path, symlink target, link, xattr names) escape ``\\`` as ``\\\\``
and control characters (and, in xattr names, ``=`` and ``;``) as ``\\xNN``;
bytes that are not valid UTF-8 are written as ``\\xNN`` with NN >= 80. Lines
starting with ``#`` are comments.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple, TypeVar, overload

import xxhash

from rootfs.errors import ManifestFormatError

FORMAT_HEADER = "rootfs-manifest 1"

FILE, DIR, SYMLINK, CHAR, BLOCK, FIFO = "f", "d", "l", "c", "b", "p"
KINDS = frozenset({FILE, DIR, SYMLINK, CHAR, BLOCK, FIFO})
_PLAIN_KINDS = KINDS - {SYMLINK}  # a symlink's data field is escaped text: the slow path
KIND_NAMES = {
    FILE: "file",
    DIR: "directory",
    SYMLINK: "symlink",
    CHAR: "character device",
    BLOCK: "block device",
    FIFO: "fifo",
}

Xattrs = tuple[tuple[str, bytes], ...]
_T = TypeVar("_T")


class Entry(NamedTuple):
    """One path of a tree. A NamedTuple because manifests hold 100k of them."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    data: str = ""
    link: str = ""
    xattrs: Xattrs = ()

    @property
    def digest(self) -> str:
        """Content digest of a regular file."""
        return self.data if self.kind == FILE else ""

    @property
    def target(self) -> str:
        """Target of a symlink."""
        return self.data if self.kind == SYMLINK else ""

    @property
    def rdev(self) -> tuple[int, int]:
        """(major, minor) of a device node."""
        major, _, minor = self.data.partition(":")
        return int(major), int(minor)

    def same_content(self, other: Entry) -> bool:
        """True when the two entries need no rewrite of the path's content."""
        return (
            self.kind == other.kind
            and self.data == other.data
            and self.size == other.size
            and self.link == other.link
        )

    def same_metadata(self, other: Entry, *, ignore_dir_mtime: bool = False) -> bool:
        """True when mode, owner, mtime and xattrs agree."""
        if (self.mode, self.uid, self.gid, self.xattrs) != (
            other.mode,
            other.uid,
            other.gid,
            other.xattrs,
        ):
            return False
        if ignore_dir_mtime and self.kind == DIR:
            return True
        return self.mtime_ns == other.mtime_ns


@dataclass(frozen=True)
class Manifest:
    """An immutable tree description: entries keyed by path, in path order."""

    entries: Mapping[str, Entry]

    @classmethod
    def from_entries(cls, entries: Iterable[Entry]) -> Manifest:
        """Build a manifest from entries in any order (later duplicates win)."""
        by_path = {e.path: e for e in entries}
        return cls({p: by_path[p] for p in sorted(by_path)})

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def __contains__(self, path: object) -> bool:
        return path in self.entries

    def get(self, path: str) -> Entry | None:
        return self.entries.get(path)

    @cached_property
    def paths(self) -> list[str]:
        """Every path, in order (for bisecting: what lies under a directory)."""
        return list(self.entries)

    def link_members(self, link: str) -> list[str]:
        """The paths of the hardlink group named *link* (its first path), in order."""
        entries = self.entries
        if isinstance(entries, Overlaid):
            candidates = set(entries.base.link_members(link))
            candidates.update(
                p for p, e in entries.changes.items() if e is not None and e.link == link
            )
            return sorted(
                p for p in candidates if (e := entries.get(p)) is not None and e.link == link
            )
        return self._links.get(link, [])

    @cached_property
    def _links(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for entry in self:
            if entry.link:
                groups.setdefault(entry.link, []).append(entry.path)
        return groups

    def total_file_bytes(self) -> int:
        """Bytes of file content, each hardlinked inode counted once."""
        return sum(e.size for e in self if e.kind == FILE and (not e.link or e.link == e.path))

    def digests(self) -> set[str]:
        """Every content digest the manifest refers to."""
        return {e.data for e in self if e.kind == FILE}


class Overlaid(Mapping[str, Entry]):
    """The entries of a *base* manifest with *changes* laid over them: how a composed host
    tree is held in memory.

    Every host composed from a generation shares its entries; only what the host's
    overlays change is the host's own (an entry, or None where the base's path is gone).
    Composing, comparing and writing such a manifest then costs what those changes cost,
    not what the base does (see `diff`, `serialize`). Lookups are a dict lookup or two;
    iteration merges both in path order.
    """

    __slots__ = ("_added", "_len", "base", "changes")

    def __init__(self, base: Manifest, changes: Mapping[str, Entry | None]) -> None:
        if isinstance(base.entries, Overlaid):
            raise TypeError("the base of an Overlaid must be a plain manifest")
        below = base.entries
        self.base = base
        # Only what really differs from the base: equal entries and removals of paths the
        # base does not have are dropped, so `changes` is exactly where the two differ.
        self.changes: dict[str, Entry | None] = {
            p: e
            for p, e in changes.items()
            if (e is None and p in below) or (e is not None and below.get(p) != e)
        }
        self._added = sorted(p for p, e in self.changes.items() if e is not None and p not in below)
        removed = sum(1 for e in self.changes.values() if e is None)
        self._len = len(below) + len(self._added) - removed

    def __getitem__(self, path: str) -> Entry:
        changes = self.changes
        if path in changes:
            entry = changes[path]
            if entry is None:
                raise KeyError(path)
            return entry
        return self.base.entries[path]

    @overload
    def get(self, path: str, /) -> Entry | None: ...
    @overload
    def get(self, path: str, default: Entry, /) -> Entry: ...
    @overload
    def get(self, path: str, default: _T, /) -> Entry | _T: ...
    def get(self, path: str, default: object = None, /) -> object:
        changes = self.changes
        if path in changes:
            entry = changes[path]
            return default if entry is None else entry
        return self.base.entries.get(path, default)

    def __contains__(self, path: object) -> bool:
        changes = self.changes
        if path in changes:
            return changes[path] is not None
        return path in self.base.entries

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[str]:
        changes, added = self.changes, self._added
        i, n = 0, len(added)
        for path in self.base.entries:
            while i < n and added[i] < path:
                yield added[i]
                i += 1
            if path not in changes or changes[path] is not None:
                yield path
        yield from added[i:]


# ---------------------------------------------------------------- escaping

_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f\\\udc80-\udcff]")
_NEEDS_ESCAPE_XATTR = re.compile(r"[\x00-\x1f\x7f\\\udc80-\udcff=;]")
_ESCAPE_SEQ = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a non-UTF-8 byte kept by surrogateescape
        code -= 0xDC00
    return f"\\x{code:02x}"


def escape(text: str) -> str:
    """Escape a path or symlink target for one tab-separated field."""
    return _NEEDS_ESCAPE.sub(_escape_char, text) if _NEEDS_ESCAPE.search(text) else text


def _escape_xattr_name(name: str) -> str:
    return _NEEDS_ESCAPE_XATTR.sub(_escape_char, name)


def _unescape_seq(match: re.Match[str]) -> str:
    seq = match.group(1)
    if seq == "\\":
        return "\\"
    code = int(seq[1:], 16)
    return chr(0xDC00 + code) if code >= 0x80 else chr(code)


def unescape(text: str) -> str:
    """Invert :func:`escape`."""
    return _ESCAPE_SEQ.sub(_unescape_seq, text) if "\\" in text else text


# ---------------------------------------------------------------- writing


def _format_xattrs(xattrs: Xattrs) -> str:
    if not xattrs:
        return "-"
    return ";".join(f"{_escape_xattr_name(name)}={value.hex()}" for name, value in xattrs)


# The trees of many hosts share almost all their entries, so both directions are memoised:
# a build of N hosts formats each shared line once, and reading N applied manifests parses
# each shared line once (the others are one dict lookup, and the same Entry object).
# Lines are found by the entry's id, not its value: hashing a ten-field tuple at every lookup
# was a good part of serialize()'s time. The memo holds each entry it names, so an id found
# there cannot have been reused by another object. A formatted line also enters the parse
# memo, so the applied manifests a base update reads back share the Entry objects of the
# generation it just wrote, and comparing them is mostly identity checks.
_LINES: dict[int, tuple[Entry, str]] = {}
_ENTRIES: dict[str, Entry] = {}
_MEMO_MAX = 1 << 18  # entries per memo, cleared when full: about 100 MB at worst


def format_entry(entry: Entry) -> str:
    """One manifest line (without the newline)."""
    known = _LINES.get(id(entry))
    if known is not None and known[0] is entry:
        return known[1]
    if len(_LINES) >= _MEMO_MAX:
        _LINES.clear()
    line = _format_entry(entry)
    _LINES[id(entry)] = (entry, line)
    if entry.path[:1] == "/":  # what parse() would accept, and then return
        if len(_ENTRIES) >= _MEMO_MAX:
            _ENTRIES.clear()
        _ENTRIES.setdefault(line, entry)
    return line


def _format_entry(entry: Entry) -> str:
    data = escape(entry.data) if entry.kind == SYMLINK else entry.data
    return "\t".join(
        (
            escape(entry.path),
            entry.kind,
            f"{entry.mode:04o}",
            str(entry.uid),
            str(entry.gid),
            str(entry.mtime_ns),
            str(entry.size),
            data or "-",
            escape(entry.link) if entry.link else "-",
            _format_xattrs(entry.xattrs),
        )
    )


def serialize(manifest: Manifest) -> bytes:
    """The manifest file's bytes; equal manifests give equal bytes."""
    if isinstance(manifest.entries, Overlaid):
        return _splice(manifest.entries)
    lines = [FORMAT_HEADER]
    lines.extend(format_entry(e) for e in manifest)
    lines.append("")
    return "\n".join(lines).encode("utf-8", "surrogateescape")


# The serialized bases that Overlaid manifests are spliced from: (manifest, bytes, line
# offsets or None until first needed), by id, the manifest held so that its id stays its
# own. A process works with one or two generations at a time.
_SPLICE_BASES: dict[int, tuple[Manifest, bytes, list[int] | None]] = {}


def remember_bytes(manifest: Manifest, data: bytes) -> None:
    """Tell `serialize` the bytes of *manifest* (a file just read or written), so manifests
    overlaid on it are spliced from them instead of formatting it all again first."""
    if isinstance(manifest.entries, Overlaid):
        return
    if len(_SPLICE_BASES) >= 4:
        _SPLICE_BASES.clear()
    _SPLICE_BASES[id(manifest)] = (manifest, data, None)


def _splice(overlaid: Overlaid) -> bytes:
    """`serialize` of an Overlaid: its base's bytes, with the changed lines cut in.

    Costs a bisect per change and one copy of the bytes, instead of a formatted line per
    entry: a base update writes every host's manifest, and hosts differ in a few paths.
    """
    base = overlaid.base
    known = _SPLICE_BASES.get(id(base))
    if known is None or known[0] is not base:
        remember_bytes(base, serialize(base))
        known = _SPLICE_BASES[id(base)]
    _, data, offsets = known
    if offsets is None:
        offsets = [0]  # where each line starts: the header's, then one per entry
        for line in data.split(b"\n")[:-1]:
            offsets.append(offsets[-1] + len(line) + 1)
        _SPLICE_BASES[id(base)] = (base, data, offsets)
    paths = base.paths
    view = memoryview(data)
    chunks: list[bytes | memoryview] = []
    cut = offsets[1]  # just after the header
    chunks.append(view[:cut])
    for path in sorted(overlaid.changes):
        k = bisect.bisect_left(paths, path)
        start = offsets[k + 1]  # the line of paths[k] (or the end, past the last)
        chunks.append(view[cut:start])
        cut = start
        if k < len(paths) and paths[k] == path:
            cut = offsets[k + 2]  # the base's own line for this path goes
        entry = overlaid.changes[path]
        if entry is not None:
            chunks.append((format_entry(entry) + "\n").encode("utf-8", "surrogateescape"))
    chunks.append(view[cut:])
    return b"".join(chunks)


def manifest_digest(data: bytes) -> str:
    """The identity of a manifest file: xxh3-128 of its bytes."""
    return xxhash.xxh3_128_hexdigest(data)


# ---------------------------------------------------------------- reading


def _parse_xattrs(field: str) -> Xattrs:
    if field == "-":
        return ()
    pairs = []
    for item in field.split(";"):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"xattr {item!r} is not name=hexvalue")
        pairs.append((unescape(name), bytes.fromhex(value)))
    return tuple(pairs)


def parse(data: bytes, *, source: str) -> Manifest:
    """Parse a manifest file's bytes; *source* names the file in errors."""
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if not lines or lines[0] != FORMAT_HEADER:
        found = lines[0][:40] if lines else ""
        raise ManifestFormatError(
            f"{source}: line 1: expected header {FORMAT_HEADER!r}, found {found!r}"
        )
    entries: dict[str, Entry] = {}
    previous = ""
    new, kinds = tuple.__new__, _PLAIN_KINDS  # skips NamedTuple's Python-level __new__
    known = _ENTRIES
    if len(known) >= _MEMO_MAX:
        known.clear()
    for number, line in enumerate(lines[1:], start=2):
        entry = known.get(line)
        if entry is not None:
            path = entry.path
            if path <= previous and entries:
                raise ManifestFormatError(
                    f"{source}: line {number}: path {path!r} is out of order or repeated"
                )
            previous = path
            entries[path] = entry
            continue
        if not line or line[0] == "#":
            continue
        f = line.split("\t")
        try:
            if len(f) == 10 and f[1] in kinds and "\\" not in line:
                # The common line, inlined: this loop runs 100k times for a large base.
                fdata, flink, fxattrs = f[7], f[8], f[9]
                entry = new(
                    Entry,
                    (
                        f[0],
                        f[1],
                        int(f[2], 8),
                        int(f[3]),
                        int(f[4]),
                        int(f[5]),
                        int(f[6]),
                        "" if fdata == "-" else fdata,
                        "" if flink == "-" else flink,
                        () if fxattrs == "-" else _parse_xattrs(fxattrs),
                    ),
                )
            else:
                entry = parse_entry(line)
        except ValueError as exc:
            raise ManifestFormatError(f"{source}: line {number}: {exc}") from None
        path = entry.path
        if path <= previous and entries:
            raise ManifestFormatError(
                f"{source}: line {number}: path {path!r} is out of order or repeated"
            )
        if not path.startswith("/"):
            raise ManifestFormatError(f"{source}: line {number}: path {path!r} is not absolute")
        previous = path
        entries[path] = entry
        known[line] = entry
    return Manifest(entries)


def parse_entry(line: str) -> Entry:
    """One manifest line (as :func:`format_entry` writes it) back into an entry."""
    fields = line.split("\t")
    if len(fields) != 10:
        raise ValueError(f"expected 10 tab-separated fields, found {len(fields)}")
    path, kind, mode, uid, gid, mtime, size, edata, link, xattrs = fields
    if "\\" in path:
        path = unescape(path)
    if kind not in KINDS:
        raise ValueError(f"unknown entry type {kind!r}")
    if edata == "-":
        edata = ""
    elif kind == SYMLINK:
        edata = unescape(edata)
    return Entry(
        path,
        kind,
        int(mode, 8),
        int(uid),
        int(gid),
        int(mtime),
        int(size),
        edata,
        "" if link == "-" else unescape(link),
        () if xattrs == "-" else _parse_xattrs(xattrs),
    )


# ---------------------------------------------------------------- diff

ChangeKind = Literal["added", "removed", "modified", "metadata"]


class Change(NamedTuple):
    """How one path differs between two manifests."""

    path: str
    kind: ChangeKind
    old: Entry | None
    new: Entry | None


def classify(
    old: Entry | None, new: Entry | None, *, ignore_dir_mtime: bool = False
) -> ChangeKind | None:
    """The kind of change from *old* to *new*, or None when they agree."""
    if old is None:
        return None if new is None else "added"
    if new is None:
        return "removed"
    if old == new:
        return None
    if not old.same_content(new):
        return "modified"
    if not old.same_metadata(new, ignore_dir_mtime=ignore_dir_mtime):
        return "metadata"
    return None


def diff(old: Manifest, new: Manifest, *, ignore_dir_mtime: bool = False) -> list[Change]:
    """Path-level differences from *old* to *new*, in path order.

    Only the differing paths are sorted, so comparing two large manifests that
    barely differ costs one pass of tuple comparisons.
    """
    old_entries, new_entries = old.entries, new.entries
    if isinstance(old_entries, Overlaid) and isinstance(new_entries, Overlaid):
        # Outside both manifests' changes each holds its base's entry: only where the bases
        # differ, or either has changes, can the two differ.
        candidates = _differing_paths(old_entries.base, new_entries.base)
        candidates = candidates.union(old_entries.changes, new_entries.changes)
        differing = [
            p
            for p in candidates
            if (o := old_entries.get(p)) is not (n := new_entries.get(p)) and o != n
        ]
    else:
        # Manifests of one process share Entry objects (see the memos above): identity first.
        differing = [
            p for p, e in new_entries.items() if (o := old_entries.get(p)) is not e and o != e
        ]
        differing += [p for p in old_entries if p not in new_entries]
    changes = []
    for path in sorted(differing):
        before, after = old_entries.get(path), new_entries.get(path)
        kind = classify(before, after, ignore_dir_mtime=ignore_dir_mtime)
        if kind is not None:
            changes.append(Change(path, kind, before, after))
    return changes


# Paths where two bases differ, by the pair's ids (the manifests held, so the ids stay
# theirs): a base update compares every host's old tree with its new one, and all of them
# stand on the same two generations.
_BASE_DIFFS: dict[tuple[int, int], tuple[Manifest, Manifest, frozenset[str]]] = {}


def _differing_paths(old: Manifest, new: Manifest) -> frozenset[str]:
    if old is new:
        return frozenset()
    known = _BASE_DIFFS.get((id(old), id(new)))
    if known is not None and known[0] is old and known[1] is new:
        return known[2]
    if len(_BASE_DIFFS) >= 4:
        _BASE_DIFFS.clear()
    found = frozenset(c.path for c in diff(old, new))
    _BASE_DIFFS[(id(old), id(new))] = (old, new, found)
    return found


def parent_of(path: str) -> str:
    """The parent directory of an absolute manifest path (``/`` for top level)."""
    head = path.rpartition("/")[0]
    return head or "/"
