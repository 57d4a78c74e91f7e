"""Scanning a base source (a directory tree or a tarball) into a manifest and the store.

A scan records every entry of the source with exact metadata and ingests each
regular file's content into the store, so the resulting manifest describes the
tree completely and every digest it names is present once the batch commits.

Directory scans never follow symlinks and never descend into other mounts (a
``/proc`` mounted in a chroot is recorded as an empty directory). Tarball scans
stream the archive once, so compressed archives need no temporary copy, and
refuse members that would land outside the root.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import tarfile
import zlib
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, BinaryIO, cast

import zstandard

from rootfs.engine.progress import Progress
from rootfs.errors import UserError
from rootfs.store.fsmeta import entry_from_stat, read_xattrs
from rootfs.store.objects import CHUNK, Batch, Stored
from rootfs.tree.manifest import BLOCK, CHAR, DIR, FIFO, FILE, SYMLINK, Entry, Manifest, parent_of

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tzst")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", ZSTD_MAGIC)
_IMPLIED_DIR_MODE = 0o755
_XATTR_PAX = "SCHILY.xattr."


@dataclass(frozen=True)
class ScanResult:
    """What a scan found and what it added to the store."""

    manifest: Manifest
    files: int  # regular-file entries, hardlink members included
    bytes: int  # content bytes read; hardlinked content counted once
    new_objects: int  # objects this scan added to the store
    new_bytes: int
    notes: tuple[str, ...]  # things skipped, e.g. "skipped socket /run/foo.sock"


def scan_source(
    source: Path,
    batch: Batch,
    *,
    progress: Progress | None = None,
    reference: Manifest | None = None,
) -> ScanResult:
    """Scan a base source: a directory, or a (possibly compressed) tar archive.

    *reference* enables the quick check of :func:`scan_directory` (directories only:
    a tarball has to be read through anyway).
    """
    if not os.path.lexists(source):
        raise UserError(f"base source '{source}' does not exist")
    if source.is_dir():
        return scan_directory(source, batch, progress=progress, reference=reference)
    if source.is_file() and (source.name.endswith(TAR_SUFFIXES) or _looks_like_tar(source)):
        return scan_tarball(source, batch, progress=progress)
    raise UserError(
        f"base source '{source}' is neither a directory nor a tar archive "
        f"({', '.join(TAR_SUFFIXES)}, optionally compressed with gzip, xz, bzip2 or zstd)"
    )


def _looks_like_tar(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return head.startswith(_COMPRESSED_MAGIC) or head[257:262] == b"ustar"


def _link_groups(entries: dict[str, Entry], groups: list[list[str]]) -> None:
    """Set ``link`` on every member of each multi-member group to its first path."""
    for members in groups:
        live = [p for p in members if p in entries]
        if len(live) < 2:
            continue
        first = min(live)
        for p in live:
            entries[p] = entries[p]._replace(link=first)


# ---------------------------------------------------------------- directories


def _mount_points(root: str) -> set[str] | None:
    """Manifest paths of the mount points strictly below *root*; None if unknown."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    prefix = os.fsencode(os.path.realpath(root)).rstrip(b"/") + b"/"
    found = set()
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        # mountinfo escapes space, tab, newline and backslash as \ooo
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
        if point.startswith(prefix) and len(point) > len(prefix):
            found.add(os.fsdecode(point[len(prefix) - 1 :].rstrip(b"/")))
    return found


def scan_directory(
    root: Path,
    batch: Batch,
    *,
    progress: Progress | None = None,
    reference: Manifest | None = None,
) -> ScanResult:
    """Scan the tree under *root* (its own metadata becomes ``/``) into a manifest.

    With a *reference* (the previous generation), a file whose path, size and
    mtime match it and whose object is stored is not read again (rsync's quick
    check): an update of a large base then costs a walk plus the changed bytes.
    """
    top = os.fspath(root)
    try:
        return _scan_directory(top, batch, progress, reference)
    except OSError as exc:
        raise UserError(f"cannot scan '{top}': {exc}") from None


def _scan_directory(
    top: str, batch: Batch, progress: Progress | None, reference: Manifest | None
) -> ScanResult:
    root_st = os.stat(top)
    if not stat.S_ISDIR(root_st.st_mode):
        raise UserError(f"base source '{top}' is not a directory")
    mounts = _mount_points(top)
    entries: dict[str, Entry] = {"/": entry_from_stat("/", root_st, xattrs=read_xattrs(top))}
    files: list[tuple[str, str, os.stat_result]] = []  # manifest path, fs path, stat
    notes: list[str] = []

    # Pass 1: lstat the whole tree (cheap), so progress has totals while content is read.
    stack = [(top, "")]
    while stack:
        fs_dir, m_dir = stack.pop()
        with os.scandir(fs_dir) as it:
            for de in it:
                path = f"{m_dir}/{de.name}"
                fs_path = de.path
                st = de.stat(follow_symlinks=False)
                fmt = stat.S_IFMT(st.st_mode)
                if mounts is None:
                    is_mount = fmt == stat.S_IFDIR and st.st_dev != root_st.st_dev
                else:
                    is_mount = path in mounts
                if is_mount:
                    if fmt != stat.S_IFDIR:
                        notes.append(f"skipped mount point {path}")
                        continue
                    notes.append(f"skipped contents of mount point {path}")
                    entries[path] = entry_from_stat(path, st)
                    continue
                if fmt == stat.S_IFREG:
                    entries[path] = entry_from_stat(path, st, xattrs=read_xattrs(fs_path))
                    files.append((path, fs_path, st))
                elif fmt == stat.S_IFDIR:
                    entries[path] = entry_from_stat(path, st, xattrs=read_xattrs(fs_path))
                    stack.append((fs_path, path))
                elif fmt == stat.S_IFLNK:
                    target = os.readlink(fs_path)
                    entries[path] = entry_from_stat(
                        path, st, data=target, xattrs=read_xattrs(fs_path)
                    )._replace(size=len(os.fsencode(target)))
                elif fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
                    entries[path] = entry_from_stat(path, st, xattrs=read_xattrs(fs_path))
                elif fmt == stat.S_IFSOCK:
                    notes.append(f"skipped socket {path}")
                else:
                    notes.append(f"skipped {path} of unknown type {fmt:o}")

    # Pass 2: ingest content, in inode order (close to on-disk order on ext4/xfs).
    files.sort(key=lambda f: f[2].st_ino)
    inodes: dict[tuple[int, int], tuple[Stored, list[str]]] = {}
    if progress is not None:
        seen: set[tuple[int, int]] = set()
        total = 0
        for _, _, st in files:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink == 1 or key not in seen:
                seen.add(key)
                total += st.st_size
        progress.set_totals(files=len(files), bytes_=total)
    read_bytes = new_objects = new_bytes = 0
    for path, fs_path, st in files:
        key = (st.st_dev, st.st_ino)
        known = inodes.get(key) if st.st_nlink > 1 else None
        ref = reference.get(path) if reference is not None else None
        if known is not None:
            stored = known[0]
            known[1].append(path)
            done = 0
        elif (
            ref is not None
            and ref.kind == "f"
            and ref.size == st.st_size
            and ref.mtime_ns == st.st_mtime_ns
            and batch.has(ref.data)
        ):
            stored = Stored(ref.data, st.st_size, False)
            read_bytes += st.st_size
            done = st.st_size
            if st.st_nlink > 1:
                inodes[key] = (stored, [path])
        else:
            stored = batch.add_file(fs_path, meta=entries[path])
            read_bytes += stored.size
            done = stored.size
            if stored.new:
                new_objects += 1
                new_bytes += stored.size
            if st.st_nlink > 1:
                inodes[key] = (stored, [path])
        entries[path] = entries[path]._replace(data=stored.digest, size=stored.size)
        if progress is not None:
            progress.advance(1, done)
    _link_groups(entries, [members for _, members in inodes.values()])
    return ScanResult(
        Manifest.from_entries(entries.values()),
        len(files),
        read_bytes,
        new_objects,
        new_bytes,
        tuple(notes),
    )


# ---------------------------------------------------------------- tarballs


def _member_path(tarball: Path, name: str) -> str:
    """The manifest path of a member name, refusing any that leave the root."""
    if name.startswith("/"):
        raise UserError(f"tarball '{tarball}': member '{name}' has an absolute path; refusing")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserError(f"tarball '{tarball}': member '{name}' contains '..'; refusing")
    return "/" + "/".join(parts)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text is not None:  # pax keeps sub-second precision a float would lose
        try:
            return int((Decimal(text) * 1_000_000_000).to_integral_value(ROUND_FLOOR))
        except InvalidOperation:
            pass
    return int(member.mtime) * 1_000_000_000


def _xattrs(member: tarfile.TarInfo) -> tuple[tuple[str, bytes], ...]:
    pairs = [
        # tarfile decoded the raw value as UTF-8 with surrogateescape; undo that
        (key[len(_XATTR_PAX) :], value.encode("utf-8", "surrogateescape"))
        for key, value in member.pax_headers.items()
        if key.startswith(_XATTR_PAX)
    ]
    return tuple(sorted(pairs))


@dataclass
class _TarState:
    entries: dict[str, Entry]
    group_of: dict[str, list[str]]  # path -> its hardlink group (shared list)
    notes: list[str]
    files: int = 0
    read_bytes: int = 0
    new_objects: int = 0
    new_bytes: int = 0


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """The tar stream inside *raw*, by the compressor's magic bytes."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return cast(BinaryIO, lzma.LZMAFile(raw))
    if magic.startswith(b"BZh"):
        return cast(BinaryIO, bz2.BZ2File(raw))
    if magic.startswith(ZSTD_MAGIC):
        reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=False
        )
        return reader
    return raw


def _check_end(tar: tarfile.TarFile, stream: BinaryIO) -> None:
    """Fail unless the archive ended with its end-of-archive marker.

    In stream mode tarfile stops quietly at a truncated or corrupt header past
    the first member, which would silently drop the rest of the archive.
    """
    fileobj: Any = tar.fileobj
    consumed = fileobj.tell() - tar.offset
    if consumed < tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"unexpected end of data at offset {tar.offset}")
    following = fileobj.read(tarfile.BLOCKSIZE)
    if following.strip(b"\0"):  # the block that stopped tarfile was no zero block
        raise tarfile.ReadError(f"invalid member header at offset {tar.offset}")
    while stream.read(CHUNK):  # reach the compressor's end-of-stream check
        pass


def scan_tarball(path: Path, batch: Batch, *, progress: Progress | None = None) -> ScanResult:
    """Scan a tar archive (plain, gzip, xz, bzip2 or zstd) in one streaming pass."""
    state = _TarState({}, {}, [])
    try:
        with open(path, "rb") as raw:
            tar_mtime_ns = os.fstat(raw.fileno()).st_mtime_ns
            with (
                _decompressed(raw) as stream,
                tarfile.open(
                    fileobj=stream,
                    mode="r|",
                    encoding="utf-8",
                    errors="surrogateescape",
                ) as tar,
            ):
                for member in tar:
                    _add_member(path, tar, member, batch, state, progress)
                _check_end(tar, stream)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise UserError(f"not a readable tar archive: '{path}': {exc}") from None
    except OSError as exc:
        if exc.errno is None:  # gzip/bz2 report corrupt data as OSError without errno
            raise UserError(f"not a readable tar archive: '{path}': {exc}") from None
        raise UserError(f"cannot read tarball '{path}': {exc}") from None
    entries = state.entries
    for p in list(entries):  # directories the archive implies but does not list
        while p != "/":
            p = parent_of(p)
            if p in entries:
                break
            entries[p] = Entry(p, DIR, _IMPLIED_DIR_MODE, 0, 0, tar_mtime_ns, 0)
    if "/" not in entries:
        entries["/"] = Entry("/", DIR, _IMPLIED_DIR_MODE, 0, 0, tar_mtime_ns, 0)
    for p in entries:
        parent = parent_of(p)
        if p != "/" and entries[parent].kind != DIR:
            raise UserError(f"tarball '{path}': '{p}' lies under '{parent}', not a directory")
    groups = {id(g): g for g in state.group_of.values()}
    _link_groups(entries, list(groups.values()))
    return ScanResult(
        Manifest.from_entries(entries.values()),
        state.files,
        state.read_bytes,
        state.new_objects,
        state.new_bytes,
        tuple(state.notes),
    )


def _add_member(
    tarball: Path,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    batch: Batch,
    state: _TarState,
    progress: Progress | None,
) -> None:
    path = _member_path(tarball, member.name)
    if not (member.isreg() or member.islnk() or member.isdir() or member.issym()) and not (
        member.ischr() or member.isblk() or member.isfifo()
    ):
        state.notes.append(f"skipped member {path} of unsupported tar type {member.type!r}")
        return
    if path == "/" and not member.isdir():
        raise UserError(f"tarball '{tarball}': member '{member.name}' is not a directory")
    entries = state.entries
    if member.islnk() and _member_path(tarball, member.linkname) == path:
        old_self = entries.get(path)
        if old_self is not None and old_self.kind == FILE:
            return  # a link to itself changes nothing
    old = entries.get(path)
    if old is not None and old.kind == FILE:  # later wins: the path leaves its group
        group = state.group_of.pop(path, None)
        if group is not None:
            group.remove(path)
        state.files -= 1
    entry = Entry(
        path,
        "",
        member.mode & 0o7777,
        member.uid,
        member.gid,
        _mtime_ns(member),
        0,
        xattrs=_xattrs(member),
    )
    if member.isreg():
        content = tar.extractfile(member)
        assert content is not None  # isreg() members always have content
        stored = batch.add_stream(content, meta=entry._replace(kind=FILE))  # type: ignore[arg-type]
        entries[path] = entry._replace(kind=FILE, size=stored.size, data=stored.digest)
        state.files += 1
        state.read_bytes += stored.size
        if stored.new:
            state.new_objects += 1
            state.new_bytes += stored.size
        if progress is not None:
            progress.advance(1, stored.size)
    elif member.islnk():
        target_path = _member_path(tarball, member.linkname)
        target = entries.get(target_path)
        if target is None or target.kind != FILE:
            raise UserError(
                f"tarball '{tarball}': member '{member.name}' is a hardlink to "
                f"'{member.linkname}', which is not a regular file earlier in the archive"
            )
        # A hardlink is the same inode: it shares the target's content and metadata.
        entries[path] = target._replace(path=path)
        group = state.group_of.setdefault(target_path, [target_path])
        group.append(path)
        state.group_of[path] = group
        state.files += 1
        if progress is not None:
            progress.advance(1, 0)
    elif member.isdir():
        entries[path] = entry._replace(kind=DIR)
    elif member.issym():
        target_bytes = member.linkname.encode("utf-8", "surrogateescape")
        entries[path] = entry._replace(kind=SYMLINK, data=member.linkname, size=len(target_bytes))
    elif member.ischr() or member.isblk():
        kind = CHAR if member.ischr() else BLOCK
        entries[path] = entry._replace(kind=kind, data=f"{member.devmajor}:{member.devminor}")
    else:
        entries[path] = entry._replace(kind=FIFO)
