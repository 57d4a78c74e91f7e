"""The client cache through real FUSE mounts: `rootfs cache mount` in a subprocess over a tree
built by `rootfs build`, compared with that tree by find, stat, getfattr and cmp."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rootfs.cache.objects import charge
from rootfs.store.layout import CACHE_REPORT

HOST_IP = "10.9.0.11"
FIND_FORMAT = r"%P\t%y\t%m\t%U\t%G\t%T@\t%l\t%n\t%s\n"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None,
        reason="needs /dev/fuse and fusermount3",
    ),
]


# ------------------------------------------------------------------ helpers


class Site:
    """A throwaway rootfs site with one host, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        site = root / "site"
        (site / "hostcfg").mkdir(parents=True)
        (site / "overlays").mkdir()
        (site / "site.toml").write_text(
            '[server]\naddress = "10.9.0.1"\n[defaults]\noverlays = []\nbase = "zoo"\n'
            '[[subnet]]\nnetwork = "10.9.0.0/24"\ngateway = "10.9.0.1"\n'
        )
        (site / "hostcfg/hosts.toml").write_text(
            f'[hosts.pc1]\nmac = "52:54:00:00:00:01"\nip = "{HOST_IP}"\n'
        )
        self.env = {
            **os.environ,
            "ROOTFS_SITE": str(site),
            "ROOTFS_STATE_DIR": str(root / "state"),
            "ROOTFS_EXPORT_ROOT": str(root / "export"),
        }
        self.tree = root / "export" / HOST_IP

    def rootfs(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "rootfs", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"rootfs {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    def publish(self, base: Path) -> Path:
        """Import *base* as the next generation and build the host tree from it."""
        self.rootfs("base", "import", "zoo", str(base))
        self.rootfs("build", "--all")
        return self.tree


class Mount:
    """`rootfs cache mount` running in a subprocess; always unmounted by the fixture."""

    def __init__(self, site: Site, mountpoint: Path, cache: Path) -> None:
        self.site = site
        self.mountpoint = mountpoint
        self.cache = cache
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = site.root / "mount.log"
        mountpoint.mkdir(exist_ok=True)

    def start(self, *options: str, source: Path | None = None) -> Mount:
        """Mount; read-ahead is off unless *options* ask for it, so fetch counts are exact."""
        assert self.proc is None
        if "--readahead" not in options:
            options = (*options, "--readahead", "0")
        args = [sys.executable, "-m", "rootfs", "cache", "mount"]
        args += [str(source or self.site.tree), str(self.mountpoint), "--cache", str(self.cache)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*args, *options], env=self.site.env, stderr=log)
        deadline = time.monotonic() + 60
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise AssertionError(f"mount exited {self.proc.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted after 60 s:\n{self.log_text()}")
            time.sleep(0.05)
        os.stat(self.mountpoint)  # the first request: pyfuse3's loop is running
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """Unmount the way an administrator does, and wait for the process to finish."""
        if self.proc is None:
            return
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        # Lazily, as an administrator must while a program still holds a file open in it.
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=True)

    def stats(self) -> dict[str, object]:
        out = self.site.rootfs("cache", "stats", "--json", str(self.cache)).stdout
        result: dict[str, object] = json.loads(out)
        return result

    def counters(self) -> dict[str, int]:
        counters = self.stats()["counters"]
        assert isinstance(counters, dict)
        return counters


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


@pytest.fixture
def tree(site: Site, zoo_tree: Path) -> Path:
    """The zoo, imported and built into a host tree that carries .rootfs/manifest."""
    return site.publish(zoo_tree)


@pytest.fixture
def mount(site: Site, tmp_path: Path) -> Iterator[Mount]:
    m = Mount(site, tmp_path / "mnt", tmp_path / "cache")
    try:
        yield m
    finally:
        m.stop()


def listing(root: Path) -> list[str]:
    """Every entry's path, type, mode, owner, mtime, link target, link count and size."""
    out = subprocess.run(
        ["find", ".", "-path", "./.rootfs", "-prune", "-o", "-printf", FIND_FORMAT],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    rows = []
    for line in out.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        path, kind, *rest = line.split("\t")
        if kind == "d":
            rest[-1] = "-"  # a directory's size is the filesystem's business
            if path == "":
                rest[-2] = "-"  # the source root also holds .rootfs/
        rows.append("\t".join([path, kind, *rest]))
    return sorted(rows)


def devices(root: Path) -> str:
    return subprocess.run(
        ["stat", "-c", "%n %F %t:%T", "dev/null", "dev/loop0"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def xattrs(root: Path) -> str:
    proc = subprocess.run(
        ["getfattr", "-R", "-h", "-d", "-m", "-", "-e", "hex", "."],
        cwd=root,
        capture_output=True,
        check=False,
    )
    return "\n".join(
        block
        for block in proc.stdout.decode("utf-8", "surrogateescape").split("\n\n")
        if not block.startswith("# file: .rootfs")
    )


def inode_classes(root: Path) -> list[list[str]]:
    """Paths grouped by inode: the hardlink structure, independent of inode numbers."""
    groups: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".rootfs"]
        for name in filenames:
            path = os.path.join(dirpath, name)
            groups.setdefault(os.lstat(path).st_ino, []).append(os.path.relpath(path, root))
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def regular_files(root: Path) -> list[str]:
    out = subprocess.run(
        ["find", ".", "-path", "./.rootfs", "-prune", "-o", "-type", "f", "-print0"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    return sorted(os.fsdecode(p) for p in out.split(b"\0") if p)


def assert_same_tree(source: Path, mounted: Path) -> None:
    assert listing(mounted) == listing(source)
    assert devices(mounted) == devices(source)
    assert xattrs(mounted) == xattrs(source)
    assert inode_classes(mounted) == inode_classes(source)
    files = regular_files(source)
    assert files == regular_files(mounted)
    for rel in files:
        subprocess.run(["cmp", rel, mounted / rel], cwd=source, check=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.1)


def objects_in(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "objects").glob("*/*") if p.is_file())


# ------------------------------------------------------------------ tests


def test_mount_shows_every_entry_exactly_cold_then_warm(tree: Path, mount: Mount) -> None:
    """Names, types, modes, owners, mtimes, targets, devices, xattrs, hardlinks and bytes
    equal the built tree, from an empty cache and again from a warm one after a remount.
    The cold pass reads ahead, so background fetches race the reader's own."""
    mount.start("--readahead", "4")
    assert_same_tree(tree, mount.mountpoint)
    mount.stop()
    cold = mount.counters()
    assert cold["misses"] > 0 and cold["bad_objects"] == 0
    assert (mount.cache / "index.clean").exists()

    mount.start()
    assert_same_tree(tree, mount.mountpoint)
    mount.stop()
    warm = mount.counters()
    assert warm["misses"] == cold["misses"], "a warm cache fetched again"
    assert warm["hits"] > cold["hits"]


def test_read_only_mount_refuses_writes(tree: Path, mount: Mount) -> None:
    mount.start("--read-only")
    with pytest.raises(OSError) as info:
        (mount.mountpoint / "new").write_text("x")
    assert info.value.errno == errno.EROFS
    with pytest.raises(OSError) as info:
        os.chmod(mount.mountpoint / "small.txt", 0o600)
    assert info.value.errno == errno.EROFS
    assert not (tree / "new").exists()


def test_bit_flipped_in_cached_object_is_never_served(tree: Path, mount: Mount) -> None:
    """Objects are hashed on each mount's first use: a corrupted one is dropped and refetched."""
    mount.start()
    wanted = {rel: (tree / rel).read_bytes() for rel in ("big.bin", "medium.bin", "small.txt")}
    for rel in wanted:
        assert (mount.mountpoint / rel).read_bytes() == wanted[rel]
    mount.stop()
    for obj in objects_in(mount.cache):
        flipped = bytearray(obj.read_bytes())
        if flipped:
            flipped[len(flipped) // 2] ^= 0x01
            obj.write_bytes(bytes(flipped))
    mount.start()
    for rel, data in wanted.items():
        assert (mount.mountpoint / rel).read_bytes() == data
    mount.stop()
    assert mount.counters()["bad_objects"] >= 3


def test_verify_removes_bad_objects_offline(tree: Path, mount: Mount, site: Site) -> None:
    mount.start()
    assert (mount.mountpoint / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    mount.stop()
    assert site.rootfs("cache", "verify", str(mount.cache)).returncode == 0
    victim = max(objects_in(mount.cache), key=lambda p: p.stat().st_size)
    with open(victim, "r+b") as f:
        f.seek(12345)
        byte = f.read(1)
        f.seek(12345)
        f.write(bytes([byte[0] ^ 0x80]))
    (mount.cache / "tmp" / "leftover").write_bytes(b"x")
    proc = site.rootfs("cache", "verify", str(mount.cache), check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"bad object {victim.parent.name}{victim.name}: removed" in proc.stdout
    assert "1 temp files removed" in proc.stdout
    assert not victim.exists()
    mount.start()
    assert (mount.mountpoint / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()


def test_source_changed_behind_the_manifest_is_served_as_it_is(tree: Path, mount: Mount) -> None:
    (tree / "small.txt").write_bytes(b"changed on the host, longer than before\n")
    mount.start()
    got = (mount.mountpoint / "small.txt").read_bytes()
    assert got == b"changed on the host, longer than before\n"
    assert (mount.mountpoint / "small.txt").read_bytes() == got  # twice: not cached meanwhile
    mount.stop()
    assert mount.counters()["mismatches"] >= 1
    assert mount.log_text().count("/small.txt differs on the source") == 1
    assert len(objects_in(mount.cache)) == 0


def test_writes_go_through_to_the_source(tree: Path, mount: Mount) -> None:
    mount.start()
    mnt = mount.mountpoint
    assert (mnt / "small.txt").read_bytes() == b"hello\n"
    with open(mnt / "small.txt", "ab") as f:
        f.write(b"world\n")
    assert (tree / "small.txt").read_bytes() == b"hello\nworld\n"
    assert (mnt / "small.txt").read_bytes() == b"hello\nworld\n"
    assert os.stat(mnt / "small.txt").st_size == 12

    (mnt / "etc").mkdir()
    (mnt / "etc/new.conf").write_text("fresh\n")
    os.symlink("new.conf", mnt / "etc/link")
    os.chmod(mnt / "etc/new.conf", 0o600)
    os.rename(mnt / "future", mnt / "etc/future")
    os.unlink(mnt / "empty")
    os.setxattr(mnt / "caps", "user.extra", b"1")
    assert (tree / "etc/new.conf").read_text() == "fresh\n"
    assert os.readlink(tree / "etc/link") == "new.conf"
    assert os.stat(tree / "etc/new.conf").st_mode & 0o7777 == 0o600
    assert (tree / "etc/future").read_text() == "later\n"
    assert not (tree / "empty").exists()
    assert os.getxattr(tree / "caps", "user.extra") == b"1"
    assert sorted(os.listdir(mnt / "etc")) == ["future", "link", "new.conf"]
    assert "empty" not in os.listdir(mnt) and "future" not in os.listdir(mnt)
    assert (mnt / "etc/future").read_text() == "later\n"
    assert os.stat(mnt / "etc/new.conf").st_mode & 0o7777 == 0o600
    # a hardlink group written through one name shows the change through the others
    with open(mnt / "hl/a", "wb") as f:
        f.write(b"rewritten\n")
    assert (mnt / "hl/b").read_bytes() == b"rewritten\n"


def test_offline_source_serves_cached_files_and_recovers(tree: Path, mount: Mount) -> None:
    mount.start("--timeout", "2")
    mnt = mount.mountpoint
    assert (mnt / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    away = tree.with_name("away")
    tree.rename(away)
    try:
        assert (mnt / "big.bin").read_bytes() == (away / "big.bin").read_bytes()
        assert sorted(os.listdir(mnt / "hl")) == ["a", "b", "t1"]
        with pytest.raises(OSError) as info:
            (mnt / "bin/su").read_bytes()
        assert info.value.errno == errno.EIO
    finally:
        away.rename(tree)
    wait_for(lambda: _readable(mnt / "bin/su"), what="the mount to notice the source is back")
    assert (mnt / "bin/su").read_bytes() == b"#!/bin/su\n"


def _readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except OSError:
        return False
    return True


def test_offline_at_mount_time_uses_the_last_good_manifest(tree: Path, mount: Mount) -> None:
    mount.start()
    assert (mount.mountpoint / "small.txt").read_bytes() == b"hello\n"
    mount.stop()
    away = tree.with_name("away")
    tree.rename(away)
    try:
        tree.mkdir()  # an empty mountpoint: the NFS root is not mounted yet
        mount.start("--timeout", "2", source=tree)
        assert (mount.mountpoint / "small.txt").read_bytes() == b"hello\n"
        assert "big.bin" in os.listdir(mount.mountpoint)
        with pytest.raises(OSError) as info:
            (mount.mountpoint / "big.bin").read_bytes()
        assert info.value.errno == errno.EIO
    finally:
        mount.stop()
        tree.rmdir()
        away.rename(tree)


def test_new_manifest_is_picked_up_by_a_live_mount(
    tree: Path, mount: Mount, site: Site, zoo_tree: Path
) -> None:
    mount.start("--refresh-interval", "3600")
    mnt = mount.mountpoint
    assert (mnt / "small.txt").read_bytes() == b"hello\n"
    assert (mnt / "fifo").exists()
    assert "fifo" in os.listdir(mnt)  # listings and attributes are kept per manifest
    big_ino = os.stat(mnt / "big.bin").st_ino
    with open(mnt / "big.bin", "rb") as held:  # an open file keeps its object
        (zoo_tree / "small.txt").write_bytes(b"new base\n")
        (zoo_tree / "added").write_text("added\n")
        os.unlink(zoo_tree / "fifo")
        site.publish(zoo_tree)
        answer = site.rootfs("cache", "refresh", str(mnt)).stdout
        assert answer.startswith("refreshed")
        assert (mnt / "small.txt").read_bytes() == b"new base\n"
        assert (mnt / "added").read_text() == "added\n"
        assert not (mnt / "fifo").exists()
        listing = os.listdir(mnt)
        assert "added" in listing and "fifo" not in listing
        assert os.stat(mnt / "small.txt").st_size == len(b"new base\n")
        assert held.read() == (tree / "big.bin").read_bytes()
    assert os.stat(mnt / "big.bin").st_ino == big_ino  # unchanged paths keep their inode
    assert site.rootfs("cache", "refresh", str(mnt)).stdout.startswith("unchanged")


def test_a_new_manifest_changing_thousands_of_cached_files_leaves_none_stale(
    site: Site, mount: Mount, zoo_tree: Path
) -> None:
    """Every file the kernel holds in its page cache is invalidated on a switch, however many:
    one dropped invalidation would serve the old bytes for as long as the attributes live."""
    many = zoo_tree / "many"
    many.mkdir()
    count = 1500
    for i in range(count):
        (many / f"f{i}").write_bytes(b"old %d\n" % i)
    site.publish(zoo_tree)
    mount.start("--refresh-interval", "3600", "--read-only")  # attributes kept the longest
    cached = mount.mountpoint / "many"
    assert all((cached / f"f{i}").read_bytes() == b"old %d\n" % i for i in range(count))
    for i in range(count):
        (many / f"f{i}").write_bytes(b"longer, new %d\n" % i)
    site.publish(zoo_tree)
    assert site.rootfs("cache", "refresh", str(mount.mountpoint)).stdout.startswith("refreshed")
    stale = [i for i in range(count) if (cached / f"f{i}").read_bytes() != b"longer, new %d\n" % i]
    assert stale == []


@pytest.mark.parametrize("host_state", [True, False])
def test_what_a_client_writes_in_its_state_tree_is_seen_after_a_remount(
    tree: Path, mount: Mount, host_state: bool
) -> None:
    """A new file is written through to SOURCE either way; a later mount shows it only where
    the client keeps its state (--host-state), since elsewhere the manifest decides."""
    options = ("--host-state", "/home") if host_state else ()
    mount.start(*options)
    (mount.mountpoint / "home/user/written").write_text("kept\n")
    assert (tree / "home/user/written").read_text() == "kept\n"
    mount.stop()
    mount.start(*options)
    listing = os.listdir(mount.mountpoint / "home/user")
    if host_state:
        assert (mount.mountpoint / "home/user/written").read_text() == "kept\n"
        assert "written" in listing and "owned" in listing
    else:
        assert "written" not in listing
    assert (mount.mountpoint / "small.txt").read_bytes() == b"hello\n"  # elsewhere: the cache


def test_a_reporting_mount_shows_its_cache_in_rootfs_status(
    tree: Path, mount: Mount, site: Site
) -> None:
    """With --report (what a cached client's boot uses), the mount writes its cache's state into
    SOURCE, where the server's `rootfs status` reads it; a client-written mess is named, not
    trusted."""
    site.rootfs("host", "set", "pc1", "cached=true")
    assert "no report yet" in site.rootfs("status", "--no-drift").stdout
    mount.start("--report")
    assert (mount.mountpoint / "small.txt").read_bytes() == b"hello\n"
    report = tree / CACHE_REPORT
    wait_for(report.exists, what="the cache report", timeout=30)
    data = json.loads(report.read_text())
    assert data["objects"] >= 1 and data["counters"]["misses"] >= 1
    assert re.fullmatch(r"[0-9a-f]{32}", data["manifest"]), data
    status = site.rootfs("status", "--no-drift").stdout
    line = next(x for x in status.splitlines() if x.strip().startswith("pc1 ") and "objects" in x)
    assert f"{data['objects']} objects" in line and "of reads from its disk" in line, status
    assert "reported" in line and "s ago" in line
    report.write_text('{"reported": "yesterday"}')
    assert "unreadable report" in site.rootfs("status", "--no-drift").stdout


def test_new_manifest_is_picked_up_within_the_interval(
    tree: Path, mount: Mount, site: Site, zoo_tree: Path
) -> None:
    mount.start("--refresh-interval", "1")
    assert (mount.mountpoint / "small.txt").read_bytes() == b"hello\n"
    (zoo_tree / "small.txt").write_bytes(b"by interval\n")
    site.publish(zoo_tree)
    wait_for(
        lambda: (mount.mountpoint / "small.txt").read_bytes() == b"by interval\n",
        what="the new manifest",
    )


def test_eight_concurrent_readers_fetch_once(tree: Path, mount: Mount) -> None:
    mount.start()
    wanted = (tree / "big.bin").read_bytes()
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def reader() -> None:
        barrier.wait()
        results.append((mount.mountpoint / "big.bin").read_bytes())

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [wanted] * 8
    mount.stop()
    counters = mount.counters()
    assert counters["misses"] == 1
    assert counters["fetched_bytes"] == len(wanted)


@pytest.fixture
def many_files(tmp_path: Path) -> Path:
    """A base of 48 files of 256 KiB each (12 MiB of distinct content)."""
    root = tmp_path / "many"
    (root / "data").mkdir(parents=True)
    rng = random.Random(8)
    for i in range(48):
        (root / "data" / f"f{i:02}").write_bytes(rng.randbytes(256 << 10))
    return root


def test_quota_holds_under_concurrent_readers(site: Site, many_files: Path, mount: Mount) -> None:
    tree = site.publish(many_files)
    mount.start("--quota", "4M")
    names = sorted(os.listdir(tree / "data"))
    wanted = {n: (tree / "data" / n).read_bytes() for n in names}
    errors: list[str] = []

    def reader(seed: int) -> None:
        order = names[:]
        random.Random(seed).shuffle(order)
        for name in order:
            if (mount.mountpoint / "data" / name).read_bytes() != wanted[name]:
                errors.append(name)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    mount.stop()
    stats = mount.stats()
    assert isinstance(stats["charged"], int)
    assert stats["charged"] <= 4 << 20
    assert mount.counters()["evictions"] > 0


# Reads every file under the current directory, one every 20 ms: slow enough that a kill lands
# while it is still reading (tar -cf /dev/null would read no contents at all: GNU tar skips them).
SLOW_READER = """
import os, sys, time
for top, dirs, files in os.walk("."):
    for name in sorted(files):
        with open(os.path.join(top, name), "rb") as f:
            f.read()
        time.sleep(0.02)
"""


class DiskSampler:
    """Samples how much a filesystem holds (statvfs: one consistent figure, unlike a walk of
    its files) every few milliseconds from a thread; `peak` is the most it saw."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def used(self) -> int:
        st = os.statvfs(self.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.used())
            self.samples += 1
            time.sleep(0.001)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def cache_fs(mount: Mount) -> Iterator[Path]:
    """The cache directory on a tmpfs of its own, so its usage can be sampled exactly."""
    mount.cache.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "rootfs-test-cache", mount.cache],
                   check=True)  # fmt: skip
    try:
        yield mount.cache
    finally:
        mount.stop()
        subprocess.run(["umount", "-l", mount.cache], check=False)


def test_quota_holds_while_open_files_pin_most_of_it(
    site: Site, many_files: Path, mount: Mount, cache_fs: Path
) -> None:
    """Files held open pin their objects; a miss that finds no room left is read through
    (verified, uncached) instead of pushing the cache past its quota, at any moment."""
    rng = random.Random(16)
    for name, size in (("a", 4_700_000), ("b", 2_900_000), ("c", 1_400_000)):
        (many_files / name).write_bytes(rng.randbytes(size))
    tree = site.publish(many_files)
    quota = 8 << 20
    mount.start("--quota", "8M")
    stats = mount.stats()
    assert stats["quota"] == quota  # shown from the moment the mount starts
    mnt = mount.mountpoint
    wanted = {rel: (tree / rel).read_bytes() for rel in ("a", "b", "c")}
    names = sorted(os.listdir(tree / "data"))
    wanted |= {f"data/{n}": (tree / "data" / n).read_bytes() for n in names}
    errors: list[str] = []

    def reader(seed: int) -> None:
        order = [f"data/{n}" for n in names]
        random.Random(seed).shuffle(order)
        for rel in order:
            if (mnt / rel).read_bytes() != wanted[rel]:
                errors.append(rel)

    # Besides objects, the cache directory holds its bookkeeping: the manifest copy, and
    # stats.json and the boot set, each rewritten through a temp file (two pages at most).
    bookkeeping = charge((cache_fs / "manifest").stat().st_size) + 4 * 4096
    with DiskSampler(cache_fs) as sampler:
        with open(mnt / "a", "rb") as held_a, open(mnt / "b", "rb") as held_b:
            assert held_a.read() == wanted["a"] and held_b.read() == wanted["b"]
            assert (mnt / "c").read_bytes() == wanted["c"]  # 7.6 MiB pinned: no room for c
            threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            time.sleep(0.05)  # a few samples with everything still held
        assert (mnt / "c").read_bytes() == wanted["c"]  # room again: c is cached now
    assert errors == []
    assert sampler.samples > 100
    assert sampler.peak - bookkeeping <= quota, f"the cache held {sampler.peak} bytes"
    mount.stop()
    assert mount.counters()["read_through"] >= 1
    charged = mount.stats()["charged"]
    assert isinstance(charged, int) and charged <= quota


def test_a_cache_over_its_quota_is_brought_under_it_at_mount(
    site: Site, many_files: Path, mount: Mount
) -> None:
    tree = site.publish(many_files)
    mount.start()
    for name in sorted(os.listdir(tree / "data")):
        (mount.mountpoint / "data" / name).read_bytes()
    mount.stop()
    assert mount.stats()["charged"] == 48 * (256 << 10)
    mount.start("--quota", "4M")
    stats = mount.stats()
    assert stats["quota"] == 4 << 20
    assert isinstance(stats["charged"], int) and stats["charged"] <= 4 << 20
    mount.stop()
    assert mount.counters()["evictions"] > 0


def test_kill9_then_remount_reads_correctly(site: Site, many_files: Path, mount: Mount) -> None:
    tree = site.publish(many_files)
    mount.start()
    reader = subprocess.Popen(
        [sys.executable, "-c", SLOW_READER], cwd=mount.mountpoint, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: len(objects_in(mount.cache)) >= 4, what="the reader to fetch objects")
    assert reader.poll() is None, "the kill must land while the tree is being read"
    mount.kill9()
    assert reader.wait(timeout=30) != 0  # the reader saw its filesystem die under it
    (mount.cache / "tmp" / "half-written").write_bytes(b"partial")
    mount.start()
    assert "index rebuilt" in mount.log_text()
    assert os.listdir(mount.cache / "tmp") == []
    for name in sorted(os.listdir(tree / "data")):
        wanted = (tree / "data" / name).read_bytes()
        assert (mount.mountpoint / "data" / name).read_bytes() == wanted
    mount.stop()
    assert mount.counters()["hits"] >= 4  # what was admitted before the kill is used again


def test_a_miss_reads_the_rest_of_its_directory_ahead(
    site: Site, many_files: Path, mount: Mount
) -> None:
    tree = site.publish(many_files)
    mount.start("--readahead", "4")
    first = (mount.mountpoint / "data" / "f00").read_bytes()
    assert first == (tree / "data" / "f00").read_bytes()
    wait_for(lambda: len(objects_in(mount.cache)) == 48, what="the directory to be read ahead")
    for name in sorted(os.listdir(tree / "data")):  # every later read is a verified hit
        wanted = (tree / "data" / name).read_bytes()
        assert (mount.mountpoint / "data" / name).read_bytes() == wanted
    mount.stop()
    counters = mount.counters()
    assert counters["misses"] == 48 and counters["fetched_bytes"] == 48 * (256 << 10)
    assert counters["hits"] >= 47


def test_no_read_ahead_past_the_quota_low_water_mark(
    site: Site, many_files: Path, mount: Mount
) -> None:
    site.publish(many_files)
    mount.start("--readahead", "4", "--quota", "4M")
    (mount.mountpoint / "data" / "f00").read_bytes()
    # 70% of 4 MiB holds 11 of the 256 KiB files: read-ahead must get there, then stop.
    low_water = int(4 * 0.7 * 4)
    wait_for(lambda: len(objects_in(mount.cache)) >= low_water - 1, what="read-ahead to fill")
    for _ in range(10):  # and stay there, while the other 36 files of the directory wait
        assert len(objects_in(mount.cache)) <= low_water
        time.sleep(0.1)
    mount.stop()
    stats = mount.stats()
    assert isinstance(stats["charged"], int) and stats["charged"] <= 4 << 20
    assert mount.counters()["evictions"] == 0  # read-ahead never evicts to make room


def test_prefetch_fetches_the_previous_boot_set(tree: Path, mount: Mount) -> None:
    mount.start()
    for rel in ("big.bin", "bin/su", "small.txt"):
        (mount.mountpoint / rel).read_bytes()
    mount.stop()
    first = mount.counters()["misses"]
    boot = (mount.cache / "bootset").read_text().split()
    assert len(boot) == 3
    for obj in objects_in(mount.cache):
        obj.unlink()
    (mount.cache / "index.clean").unlink()
    mount.start("--prefetch")
    wait_for(lambda: len(objects_in(mount.cache)) == 3, what="the boot set to be fetched")
    assert (mount.mountpoint / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    mount.stop()
    assert "prefetched 3 of 3 boot-set objects" in mount.log_text()
    assert mount.counters()["misses"] == first + 3  # the read after prefetching was a hit


def test_stats_and_refresh_cli_errors(tmp_path: Path, site: Site) -> None:
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    out = site.rootfs("cache", "stats", str(empty)).stdout
    assert "objects       0" in out
    proc = site.rootfs("cache", "refresh", str(tmp_path), check=False)
    assert proc.returncode != 0
    assert "is not a rootfs cache mount" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a cache disk that fills up long before any quota would."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_cache_disk_evicts_instead_of_failing(
    site: Site, many_files: Path, small_disk: Path, tmp_path: Path
) -> None:
    tree = site.publish(many_files)
    mount = Mount(site, tmp_path / "mnt", small_disk / "cache")
    try:
        mount.start()
        for name in sorted(os.listdir(tree / "data")):
            wanted = (tree / "data" / name).read_bytes()
            assert (mount.mountpoint / "data" / name).read_bytes() == wanted
    finally:
        mount.stop()
    assert mount.counters()["evictions"] > 0


@pytest.fixture
def hanging_source(site: Site, tree: Path, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The tree behind bindfs, a FUSE passthrough: SIGSTOP it and every access hangs,
    the way a dead NFS server hangs its clients."""
    if shutil.which("bindfs") is None:
        pytest.skip("needs bindfs")
    view = tmp_path / "nfs"
    view.mkdir()
    proc = subprocess.Popen(["bindfs", "-f", "--no-allow-other", str(tree), str(view)])
    try:
        wait_for(lambda: os.path.ismount(view), what="bindfs")
        yield view, proc.pid
    finally:
        proc.send_signal(signal.SIGCONT)
        subprocess.run(["fusermount3", "-u", "-z", str(view)], check=False)
        proc.terminate()
        proc.wait(timeout=30)


def test_hanging_source_times_out_and_recovers(
    tree: Path, mount: Mount, hanging_source: tuple[Path, int]
) -> None:
    view, pid = hanging_source
    mount.start("--timeout", "1", source=view)
    mnt = mount.mountpoint
    assert (mnt / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(OSError) as info:
            (mnt / "bin/su").read_bytes()
        assert info.value.errno == errno.EIO
        assert time.monotonic() - started < 20
        assert (mnt / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
        assert (mnt / "hl/a").stat().st_nlink == 2  # metadata needs no source at all
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: _readable(mnt / "bin/su"), what="the mount to recover")


def test_a_read_stuck_on_the_source_does_not_hold_up_other_requests(
    tree: Path, mount: Mount, hanging_source: tuple[Path, int]
) -> None:
    """The handler waiting on SOURCE suspends; another worker must take the FUSE fd over
    (rootfs.cache.fuseloop), or every request would queue behind the stuck one."""
    view, pid = hanging_source
    mount.start("--timeout", "60", source=view)
    mnt = mount.mountpoint
    expected = (tree / "big.bin").read_bytes()
    for _ in range(50):  # enough requests for pyfuse3 to have grown its pool of workers
        assert (mnt / "big.bin").read_bytes() == expected  # cached after the first
    os.kill(pid, signal.SIGSTOP)
    stuck = threading.Thread(target=_readable, args=(mnt / "bin/su",))
    try:
        stuck.start()
        time.sleep(0.5)  # its read is inside the mount, waiting for the source
        started = time.monotonic()
        for _ in range(20):  # each open is a request the mount must answer
            assert (mnt / "big.bin").read_bytes() == expected
        assert sorted(os.listdir(mnt / "hl")) == sorted(os.listdir(tree / "hl"))
        assert time.monotonic() - started < 5
        assert stuck.is_alive()  # it really was stuck all along
    finally:
        os.kill(pid, signal.SIGCONT)
        stuck.join(timeout=90)
