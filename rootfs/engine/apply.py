"""Carry out a plan on a host tree: the only module of the build that writes to it.

Every path changes atomically: content is written to a temporary name inside the
tree's ``.rootfs/tmp`` (same filesystem) and renamed over the path, so a build
killed at any moment leaves each path with either its old or its new content.
The caller journals the plan's operations first and, after a crash, replays the
journal to its end (every operation is idempotent; see ``build.py``).

Materialisation modes: ``copy`` (bytes copied in the kernel with
copy_file_range), ``reflink`` (FICLONE: shared blocks, copy-on-write),
``hardlink`` (the store's inode itself, see ``rootfs/store/objects.py``), and ``auto``
(reflink where the filesystem supports it, else copy).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rootfs.engine import renames
from rootfs.errors import UserError
from rootfs.store.fsmeta import read_xattrs, set_fd_metadata, set_path_metadata
from rootfs.store.layout import attic_name, orphans_dir, scratch_dir, tree_path
from rootfs.store.objects import Store, hash_file, make_node
from rootfs.tree.manifest import DIR, FILE, Entry
from rootfs.tree.plan import Action, Op, Plan

MODES = ("auto", "copy", "reflink", "hardlink")
FICLONE = 0x40049409  # linux/fs.h _IOW(0x94, 9, int)
# renameat2 errors that mean "not here" (old C library, a filesystem without the flags),
# after which an apply keeps inodes by hardlink instead.
_NO_RENAMEAT2 = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


def reflink_supported(directory: Path) -> bool:
    """Whether FICLONE works between two files in *directory*."""
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f".reflink-probe-{os.urandom(16).hex()}"
    dst = directory / f".reflink-probe-{os.urandom(16).hex()}"
    try:
        with open(src, "wb") as s:
            s.write(b"probe")
        with open(src, "rb") as s, open(dst, "wb") as d:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        return True
    except OSError:
        return False
    finally:
        for p in (src, dst):
            p.unlink(missing_ok=True)


def resolve_mode(mode: str, tree_root: Path) -> str:
    """Turn ``auto`` into ``reflink`` or ``copy`` for the filesystem holding the tree."""
    if mode not in MODES:
        raise UserError(f"unknown materialisation mode '{mode}'; use one of {', '.join(MODES)}")
    if mode in ("auto", "reflink"):
        supported = reflink_supported(scratch_dir(tree_root))
        if mode == "reflink" and not supported:
            raise UserError(
                f"the filesystem holding {tree_root} cannot share blocks (no FICLONE reflinks);"
                " use --mode copy, or auto to pick what works"
            )
        return "reflink" if supported else "copy"
    return mode


def _copy_into(src_fd: int, dst_fd: int, size: int) -> None:
    remaining = size
    while remaining > 0:
        copied = os.copy_file_range(src_fd, dst_fd, min(remaining, 1 << 30))
        if copied == 0:
            raise UserError(
                "a store object is shorter than its manifest says (damaged store); import the"
                " base again with 'rootfs base import' to restore it"
            )
        remaining -= copied


def _holds(target: str, st: os.stat_result, entry: Entry) -> bool:
    """Whether the file at *target* (stat *st*) already is *entry*: metadata and content."""
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == entry.size
        and st.st_mtime_ns == entry.mtime_ns
        and stat.S_IMODE(st.st_mode) == entry.mode
        and (st.st_uid, st.st_gid) == (entry.uid, entry.gid)
        and read_xattrs(target) == entry.xattrs
        and hash_file(target) == entry.digest
    )


@dataclass
class ApplyStats:
    """What an apply did, for the build summary."""

    ops: int = 0
    bytes_written: int = 0
    kept_in_attic: int = 0
    moved_aside: list[str] = field(default_factory=list)


@dataclass
class Applier:
    """Runs plans against one host tree."""

    root: Path
    store: Store
    mode: str  # resolved: copy, reflink or hardlink
    stats: ApplyStats = field(default_factory=ApplyStats)
    # Paths whose current inode must stay reachable after it is replaced or removed,
    # and where: running NFS clients may hold it (no ESTALE, running binaries keep working).
    preserve: frozenset[str] = frozenset()
    attic: Path | None = None

    def __post_init__(self) -> None:
        self.scratch = scratch_dir(self.root)
        self._scratch_prefix = f"{self.scratch}/{os.getpid()}."
        self._counter = 0
        self._attic_ready = False
        self._exchange_ok = renames.supported()  # until a filesystem says otherwise

    def prepare(self) -> None:
        """Create the tree root and an empty scratch directory (leftovers are garbage)."""
        if self.scratch.exists():
            shutil.rmtree(self.scratch)
        self.scratch.mkdir(parents=True, mode=0o700)

    def _attic_slot(self, path: str) -> str | None:
        """Where the inode now at *path* goes when this apply replaces or removes it, or
        None when it need not be kept.

        The attic is flat (one directory per host and apply, names are the escaped
        paths): creating a directory tree per update cost more than the update.
        """
        if self.attic is None or path not in self.preserve:
            return None
        if not self._attic_ready:
            os.makedirs(self.attic, exist_ok=True)
            self._attic_ready = True
        return f"{self.attic}/{attic_name(path)}"

    def _keep_in_attic(self, path: str) -> None:
        """Hardlink the file at *path* into its attic slot before it goes away (the way
        for a filesystem without RENAME_EXCHANGE, and for LINK and node replacements)."""
        slot = self._attic_slot(path)
        if slot is None:
            return
        try:
            os.link(tree_path(self.root, path), slot, follow_symlinks=False)
        except FileExistsError:
            pass  # a replay after a crash: already kept
        except FileNotFoundError:
            pass  # the host removed it: nothing to keep
        else:
            self.stats.kept_in_attic += 1

    def run(self, plan: Plan, *, on_op: Callable[[Op], None] | None = None) -> ApplyStats:
        """Apply every operation of *plan* in order."""
        handlers = {
            Action.REMOVE: self._remove,
            Action.PUT: self._put,
            Action.LINK: self._link,
            Action.META: self._meta,
            Action.DIR_META: self._dir_meta,
        }
        for op in plan.ops:
            try:
                handlers[op.action](op)
            except OSError as exc:
                raise UserError(
                    f"{tree_path(self.root, op.path)}: {op.action.value} failed: {exc.strerror};"
                    " fix the cause and run 'rootfs build' again (it resumes)"
                ) from exc
            self.stats.ops += 1
            if on_op is not None:
                on_op(op)
        return self.stats

    # ------------------------------------------------------------ operations

    def _tmp(self) -> str:
        # The scratch directory is emptied by prepare(), so a counter is unique.
        self._counter += 1
        return f"{self._scratch_prefix}{self._counter}"

    def _create(self, make: Callable[[str], None], target: str) -> str:
        """Create an inode at *target* directly when nothing is there, else beside it.

        Creating a symlink, node or hardlink is atomic, so a fresh path needs no
        temporary name; an existing one is replaced by rename. Returns the name
        made, which the caller installs with _install() if it is not *target*.
        """
        try:
            make(target)
            return target
        except FileExistsError:
            tmp = self._tmp()
            make(tmp)
            return tmp

    def _remove(self, op: Op) -> None:
        target = tree_path(self.root, op.path)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            slot = self._attic_slot(op.path)
            if slot is None or not self._move_to_attic(target, slot):
                self._keep_in_attic(op.path)
                os.unlink(target)
            return
        try:
            os.rmdir(target)
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            self._move_aside(target, op.path)

    def _move_to_attic(self, target: str, slot: str) -> bool:
        """Keep the inode and remove the path in one rename; False where renameat2 cannot."""
        if not self._exchange_ok:
            return False
        try:
            self._into_free_slot(lambda name: renames.rename_noreplace(target, name), slot)
        except FileNotFoundError:
            return True  # removed meanwhile: nothing to keep
        except OSError as exc:
            if exc.errno not in _NO_RENAMEAT2:
                raise
            self._exchange_ok = False
            return False
        self.stats.kept_in_attic += 1
        return True

    @staticmethod
    def _into_free_slot(make: Callable[[str], None], slot: str) -> str:
        """Run *make* on the attic *slot*, or on ``slot~1``, ``slot~2``... while taken.

        A slot is taken only when an interrupted apply is replayed; whatever it holds
        stays there (it may be the inode a running client has open).
        """
        name, n = slot, 0
        while True:
            try:
                make(name)
                return name
            except FileExistsError:
                n += 1
                name = f"{slot}~{n}"

    def _move_aside(self, target: str, path: str) -> None:
        """A directory to remove still holds host-local files: keep them, out of the way."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = orphans_dir(self.root, stamp) / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, dest)
        self.stats.moved_aside.append(f"{path} -> {dest}")

    def _clear_dir_in_the_way(self, target: str) -> None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            try:
                os.rmdir(target)
            except OSError as exc:
                if exc.errno != errno.ENOTEMPTY:
                    raise
                self._move_aside(target, target[len(str(self.root)) :])

    def _install(self, tmp: str, target: str) -> None:
        if tmp == target:
            return
        try:
            os.rename(tmp, target)
        except IsADirectoryError:
            self._clear_dir_in_the_way(target)
            os.rename(tmp, target)

    def _put(self, op: Op) -> None:
        entry, target = op.entry, tree_path(self.root, op.path)
        if entry.kind == FILE:
            self._put_file(entry, target, op.path)  # keeps the old inode its own way
            return
        self._keep_in_attic(op.path)
        if entry.kind == DIR:
            self._ensure_dir(target)
            return
        if self.mode == "hardlink":
            source = self.store.node_source(entry)
            self._install(self._create(lambda p: os.link(source, p), target), target)
            return
        made = self._create(lambda p: make_node(p, entry), target)
        set_path_metadata(made, entry)
        self._install(made, target)

    def _ensure_dir(self, target: str) -> None:
        try:
            os.mkdir(target, 0o700)
        except FileExistsError:
            if not os.path.isdir(target) or os.path.islink(target):
                os.unlink(target)
                os.mkdir(target, 0o700)
        # Final mode, owner and mtime come with the DIR_META operation.

    def _put_file(self, entry: Entry, target: str, path: str) -> None:
        if self.mode == "hardlink":
            self._keep_in_attic(path)
            source = self.store.link_source(entry)
            self._install(self._create(lambda p: os.link(source, p), target), target)
            return
        slot = self._attic_slot(path)
        if slot is not None and self._exchange_ok:
            self._replace_keeping(entry, target, slot)
            return
        self._keep_in_attic(path)
        tmp = self._tmp()
        self._write_file(entry, tmp)
        self._install(tmp, target)

    def _write_file(self, entry: Entry, name: str) -> None:
        """Create *name* (which must not exist) with *entry*'s content and metadata."""
        src = os.open(self.store.object_path(entry.digest), os.O_RDONLY | os.O_CLOEXEC)
        try:
            dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                if self.mode == "reflink":
                    fcntl.ioctl(dst, FICLONE, src)
                else:
                    _copy_into(src, dst, entry.size)
                set_fd_metadata(dst, entry)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.stats.bytes_written += entry.size

    def _replace_keeping(self, entry: Entry, target: str, slot: str) -> None:
        """Write the new file at its attic slot and swap it with *target*: the path goes
        from the old inode to the new one atomically, and the old inode stays in the attic
        for clients that hold it. Cheaper than hardlinking the old inode there and renaming
        a new file over the path: a swap drops no link count (measured here: 70-115 us a
        file against 113-500 us, most of it the replacing rename)."""
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            # Not what the plan expected: a directory in the way, and no file to keep.
            tmp = self._tmp()
            self._write_file(entry, tmp)
            self._install(tmp, target)
            return
        name = slot
        try:
            self._write_file(entry, slot)
        except FileExistsError:  # only when an interrupted apply is replayed
            if st is not None and _holds(target, st, entry):
                return  # the swap was done before the crash
            name = self._into_free_slot(lambda n: self._write_file(entry, n), slot)
        if st is None:
            os.rename(name, target)  # nothing to keep: the host removed it
            return
        try:
            renames.exchange(name, target)
        except FileNotFoundError:
            os.rename(name, target)  # removed meanwhile
            return
        except OSError as exc:
            if exc.errno not in _NO_RENAMEAT2:
                raise
            # This filesystem cannot swap: move the new file to scratch, keep by hardlink.
            self._exchange_ok = False
            tmp = self._tmp()
            os.rename(name, tmp)
            self._keep_in_attic(entry.path)
            self._install(tmp, target)
            return
        self.stats.kept_in_attic += 1

    def _link(self, op: Op) -> None:
        self._keep_in_attic(op.path)
        leader, target = tree_path(self.root, op.entry.link), tree_path(self.root, op.path)
        self._install(self._create(lambda p: os.link(leader, p), target), target)

    def _meta(self, op: Op) -> None:
        if self.mode == "hardlink":
            # The inode is shared with the store and other hosts: link the right one.
            self._put(op)
            return
        set_path_metadata(tree_path(self.root, op.path), op.entry, fresh=False)

    def _dir_meta(self, op: Op) -> None:
        set_path_metadata(tree_path(self.root, op.path), op.entry, fresh=False)
