"""Shared fixtures: real trees on disk, built as root."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# Every zoo entry has this mtime (whole seconds, so tarballs record it exactly) ...
ZOO_MTIME_NS = 1_650_000_000 * 10**9
# ... except these.
ZOO_SPECIAL_MTIMES_NS = {
    "small.txt": 1_000_000_000 * 10**9,
    "old": 86_400 * 10**9,
    "future": 4_102_444_800 * 10**9,
}
ZOO_XATTR_USER = b"hello\x00world\xff"
# A VFS_CAP_REVISION_2 capability set granting cap_net_raw (bit 13), effective.
ZOO_CAPABILITY = b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" + b"\x00" * 12
ZOO_BIG_SIZE = 3 << 20


@pytest.fixture
def zoo_tree(tmp_path: Path) -> Path:
    """A tree holding every entry type, with unusual metadata; returns its root.

    Layout (modes octal, owner root:root unless said)::

        /                     d 0755
        /empty                f 0644  0 bytes
        /small.txt            f 0644  b"hello\\n"          mtime 1_000_000_000 s
        /big.bin              f 0644  3 MiB pseudo-random bytes (random.Random(3))
        /private              d 0700
        /private/secret       f 0600  b"secret\\n"
        /tmp                  d 1777
        /setgid               d 2755
        /setgid/nested/deeper/leaf  f 0644  b"leaf\\n"   (nested, deeper: d 0755)
        /bin                  d 0755
        /bin/su               f 4755  b"#!/bin/su\\n"
        /home/user            d 0750  1234:5678
        /home/user/owned      f 0640  1234:5678  b"mine\\n"
        /links/rel            l -> ../small.txt
        /links/abs            l -> /etc/passwd
        /links/dangling       l -> nowhere/at/all
        /hl/a, /hl/b          f 0644  one inode, b"pair\\n"
        /hl/t1, /t2, /links/t3  f 0600 one inode, b"triple\\n"
        /dev/null             c 0666  1:3
        /dev/loop0            b 0660  7:0  0:6 (disk group)
        /fifo                 p 0620
        /run/sock             socket (bound, then closed: stays on disk)
        /caps                 f 0755  b"\\x7fELF", xattrs user.test, security.capability
        /caf\\xe9              f 0644  (a non-UTF-8 name) b"latin-1\\n"
        /tab\\tand\\nnewline    f 0644  b"odd\\n"
        /old                  d 0755  mtime 86_400 s (empty)
        /future               f 0644  mtime 4_102_444_800 s, b"later\\n"

    Every mtime is ZOO_MTIME_NS unless listed in ZOO_SPECIAL_MTIMES_NS.
    """
    root = tmp_path / "zoo"
    root.mkdir()
    os.chmod(root, 0o755)

    def file(
        rel: str | bytes, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)
    ) -> str:
        path = os.path.join(os.fsencode(root), os.fsencode(rel))
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, *owner)
        os.chmod(path, mode)  # after chown, which clears setuid
        return os.fsdecode(path)

    def directory(rel: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> None:
        path = root / rel
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, *owner)
        os.chmod(path, mode)

    file("empty", b"")
    file("small.txt", b"hello\n")
    file("big.bin", random.Random(3).randbytes(ZOO_BIG_SIZE))
    file("medium.bin", random.Random(4).randbytes(512 << 10))  # the cache verifies it inline
    directory("private", 0o700)
    file("private/secret", b"secret\n", 0o600)
    directory("tmp", 0o1777)
    directory("setgid/nested/deeper")
    directory("setgid", 0o2755)
    file("setgid/nested/deeper/leaf", b"leaf\n")
    directory("bin")
    file("bin/su", b"#!/bin/su\n", 0o4755)
    directory("home")
    directory("home/user", 0o750, (1234, 5678))
    file("home/user/owned", b"mine\n", 0o640, (1234, 5678))
    directory("links")
    os.symlink("../small.txt", root / "links/rel")
    os.symlink("/etc/passwd", root / "links/abs")
    os.symlink("nowhere/at/all", root / "links/dangling")
    directory("hl")
    os.link(file("hl/a", b"pair\n"), root / "hl/b")
    triple = file("hl/t1", b"triple\n", 0o600)
    os.link(triple, root / "t2")
    os.link(triple, root / "links/t3")
    directory("dev")
    os.mknod(root / "dev/null", 0o020666, os.makedev(1, 3))
    os.chmod(root / "dev/null", 0o666)  # mknod applies the umask
    os.mknod(root / "dev/loop0", 0o060660, os.makedev(7, 0))
    os.chown(root / "dev/loop0", 0, 6)
    os.chmod(root / "dev/loop0", 0o660)
    os.mkfifo(root / "fifo")
    os.chmod(root / "fifo", 0o620)
    directory("run")
    cwd = os.getcwd()
    os.chdir(root / "run")  # a relative bind keeps clear of the 108-byte sun_path limit
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("sock")
    finally:
        os.chdir(cwd)
    caps = file("caps", b"\x7fELF", 0o755)
    os.setxattr(caps, "user.test", ZOO_XATTR_USER)
    os.setxattr(caps, "security.capability", ZOO_CAPABILITY)
    file(b"caf\xe9", b"latin-1\n")
    file("tab\tand\nnewline", b"odd\n")
    directory("old")
    file("future", b"later\n")

    # mtimes last, children before parents: creating an entry bumps its directory's mtime.
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root), topdown=False):
        for name in [*filenames, *dirnames, b""]:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.fsdecode(os.path.relpath(path, os.fsencode(root)))
            ns = ZOO_SPECIAL_MTIMES_NS.get(rel, ZOO_MTIME_NS)
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
    return root


# ---------------------------------------------------------------- a test site, driven by the CLI

HOSTS = """\
# lab hosts
[hosts.pc1]
mac = "52:54:00:00:00:01"
ip = "10.9.0.11"

[hosts.pc2]  # the second one
mac = "52:54:00:00:00:02"
ip = "10.9.0.12"
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site with one overlay ('lab': a template, a plain file, a deletion, an attr)."""
    root = tmp_path / "site"
    (root / "hostcfg").mkdir(parents=True)
    (root / "site.toml").write_text(
        '[server]\naddress = "10.9.0.1"\n[defaults]\noverlays = ["lab"]\nbase = "zoo"\n'
        '[[subnet]]\nnetwork = "10.9.0.0/24"\ngateway = "10.9.0.1"\n'
    )
    (root / "hostcfg/hosts.toml").write_text(HOSTS)
    lab = root / "overlays/lab"
    (lab / "etc").mkdir(parents=True)
    (lab / "etc/hostname.j2").write_text("{{ name }}\n")
    (lab / "etc/issue.j2").write_text("{{ name }} {{ ip }}/{{ prefixlen }} via {{ gateway }}\n")
    (lab / "etc/motd").write_text("welcome\n")
    (lab / "overlay.toml").write_text(
        'delete = ["/old"]\n[attrs."/etc/motd"]\nmode = "0600"\ngid = 4\n'
    )
    return root


@pytest.fixture
def run(site: Path, tmp_path: Path) -> Run:
    env = {
        **os.environ,
        "ROOTFS_SITE": str(site),
        "ROOTFS_STATE_DIR": str(tmp_path / "state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / "export"),
    }

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "rootfs", *args], env=env, capture_output=True, text=True
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"rootfs {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc

    return run


@pytest.fixture
def imported(run: Run, zoo_tree: Path) -> Path:
    run("base", "import", "zoo", str(zoo_tree))
    return zoo_tree
