"""The pure parts of the initramfs builder: module dependency order, modinfo parsing, cpio."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rootfs.errors import UserError
from rootfs.netboot.boot.initramfs import Cpio, Kernel, build_initramfs, load_order, module_depends
from rootfs.netboot.boot.runtime import LOADER, build_runtime, python_argv, python_env


def test_dependencies_come_first_and_names_match_across_dash_and_underscore() -> None:
    deps = {
        "nfs": ("sunrpc", "lockd", "fscache"),
        "lockd": ("sunrpc", "grace"),
        "sunrpc": (),
        "grace": (),
        "fscache": ("netfs",),
        "netfs": (),
        "virtio-net": ("net_failover",),
        "net_failover": ("failover",),
        "failover": (),
    }
    order = load_order(["virtio_net", "nfs", "e1000"], deps)  # e1000: not in this kernel, skipped
    assert set(order) == set(deps)
    for name, needs in deps.items():
        assert all(order.index(n) < order.index(name) for n in needs)


def test_missing_dependency_and_cycles_are_errors() -> None:
    with pytest.raises(UserError, match="needs sunrpc"):
        load_order(["nfs"], {"nfs": ("sunrpc",)})
    with pytest.raises(UserError, match="cycle"):
        load_order(["a"], {"a": ("b",), "b": ("a",)})


def test_modinfo_depends_field(tmp_path: Path) -> None:
    ko = tmp_path / "m.ko"
    ko.write_bytes(b"\x7fELF junk\0license=GPL\0depends=sunrpc,grace\0vermagic=6.1\0")
    assert module_depends(ko) == ("sunrpc", "grace")
    ko.write_bytes(b"\x7fELF\0depends=\0name=m\0")
    assert module_depends(ko) == ()


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox to read it back")
def test_cpio_reads_back_with_busybox_cpio(tmp_path: Path) -> None:
    archive = Cpio()
    archive.directory("bin")
    archive.file("bin/hello", b"hi\n", 0o755)
    archive.symlink("bin/sh", "hello")
    data = archive.finish()
    out = subprocess.run(
        ["busybox", "cpio", "-i", "-d"], input=data, cwd=tmp_path, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "bin/hello").read_bytes() == b"hi\n"
    assert (tmp_path / "bin/hello").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/sh").readlink() == Path("hello")


def test_initramfs_is_cached_by_its_inputs_and_reproducible(tmp_path: Path) -> None:
    mods = tmp_path / "kernel" / "modules"
    mods.mkdir(parents=True)
    (mods / "a.ko").write_bytes(b"module a")
    (mods / "order").write_text("a\n")
    kernel = Kernel(version="6.1", vmlinuz=tmp_path / "vmlinuz", modules=mods, key="k1")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF static busybox")
    first = build_initramfs(kernel, tmp_path / "cache", busybox=busybox)
    content = first.read_bytes()
    assert b"TRAILER!!!" in gzip.decompress(content)
    first.unlink()
    assert build_initramfs(kernel, tmp_path / "cache", busybox=busybox).read_bytes() == content
    other = Kernel(version="6.1", vmlinuz=kernel.vmlinuz, modules=mods, key="k2")
    assert build_initramfs(other, tmp_path / "cache", busybox=busybox) != first


# -- the cached clients' runtime: Debian's Python and the cache daemon, really run --------------

RUNTIME_CACHE = Path(os.environ.get("ROOTFS_E2E_CACHE", "/var/cache/rootfs-e2e"))


@pytest.fixture(scope="module")
def runtime() -> Path:
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb (a Debian system)")
    return build_runtime(RUNTIME_CACHE)


def run_runtime(runtime: Path, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*python_argv(runtime, "@rootfs-cache"), *args],
        env={**python_env(runtime), "PATH": os.environ["PATH"]},
        cwd="/",  # not this checkout: the runtime's own copy of rootfs must be the one imported
        **kwargs,
    )


@pytest.mark.slow
def test_the_runtime_carries_what_the_daemon_imports_and_no_sources(runtime: Path) -> None:
    proc = run_runtime(
        runtime,
        "-c",
        "import sys, rootfs.cache.boot, rootfs.cache.mount, pyfuse3, trio, xxhash;"
        "print(sys.version_info[:2], rootfs.cache.boot.__file__)",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("(3, 11)") and out.decode().strip().endswith("boot.pyc")
    assert not list((runtime / "usr/lib/python3.11").glob("*.py"))  # sourceless: smaller image
    assert not (runtime / "usr/lib/python3.11/test").exists()
    assert (runtime / LOADER).is_file() and not (runtime / LOADER).is_symlink()
    links = [p for p in runtime.rglob("*") if p.is_symlink()]
    assert links and not [p for p in links if os.readlink(p).startswith("/")]  # relocatable


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_the_daemon_formats_an_empty_disk_and_serves_a_tree_with_debians_packages(
    runtime: Path, tmp_path: Path
) -> None:
    """What a cached client's /init starts, run here with the same runtime: an empty disk image
    is formatted, mounted, and the tree is served through the cache from it."""
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc/motd").write_text("cached\n")
    env = {**os.environ, "ROOTFS_STATE_DIR": str(tmp_path / "state"),
           "ROOTFS_EXPORT_ROOT": str(tmp_path / "export")}  # fmt: skip
    site = str(tmp_path / "site")
    for args in (["init", site], ["--site", site, "base", "import", "b", str(base)],
                 ["--site", site, "host", "add", "pc9", "--mac", "52:54:00:00:00:99",
                  "--ip", "10.9.0.99", "--base", "b", "--mode", "copy"]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "rootfs", *args], env=env, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
    tree = tmp_path / "export/10.9.0.99"  # the host tree, with its published manifest
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.truncate(32 << 20)
    mnt, cache_mount = tmp_path / "mnt", tmp_path / "cachefs"
    mnt.mkdir()
    daemon = run_runtime(
        runtime, "-m", "rootfs.cache.boot", "--source", str(tree), "--mountpoint", str(mnt),
        "--device", str(disk), "--cache-mount", str(cache_mount),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            assert daemon.poll() is None, daemon.communicate()[0].decode()
            assert time.monotonic() < deadline, "not mounted within 60 s"
            time.sleep(0.1)
        assert (mnt / "etc/motd").read_text() == "cached\n"
        cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
        assert cmdline.startswith(b"@rootfs-cache\0")  # spared by systemd's shutdown
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        daemon.wait(30)
        subprocess.run(["umount", "-l", str(cache_mount)], check=False)
    log = daemon.communicate()[0].decode()
    assert "formatting the empty device" in log, log
    assert daemon.returncode == 0, log



@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox to read it back")
def test_a_tree_goes_in_with_every_parent_directory(tmp_path: Path) -> None:
    """The kernel's unpacker makes no missing parents: opt/ must come before opt/rootfs-cache/."""
    src = tmp_path / "src"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/python").write_bytes(b"\x7fELF")
    (src / "usr/bin/python").chmod(0o755)
    (src / "lib64").symlink_to("usr/bin")
    archive = Cpio()
    archive.tree(src, "opt/rootfs-cache")
    data = archive.finish()
    names = [line for line in subprocess.run(
        ["busybox", "cpio", "-t"], input=data, capture_output=True, check=True
    ).stdout.decode().splitlines()]  # fmt: skip
    assert names[:2] == ["opt", "opt/rootfs-cache"]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["busybox", "cpio", "-i", "-d"], input=data, cwd=out, check=True,
                   capture_output=True)  # fmt: skip
    assert (out / "opt/rootfs-cache/usr/bin/python").stat().st_mode & 0o777 == 0o755
    assert (out / "opt/rootfs-cache/lib64").readlink() == Path("usr/bin")
