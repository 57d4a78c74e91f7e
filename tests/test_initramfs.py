"""The pure parts of the initramfs builder: module dependency order, modinfo parsing, cpio."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from rootfs.errors import UserError
from rootfs.netboot.boot.initramfs import Cpio, Kernel, build_initramfs, load_order, module_depends


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
