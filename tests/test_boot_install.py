"""`rootfs boot install`: loaders copied from package paths, unchanged ones left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rootfs.netboot.boot.install import install_loaders


def test_install_copies_present_loaders_and_reports_missing(tmp_path: Path) -> None:
    system = tmp_path / "sys"
    (system / "usr/lib/PXELINUX").mkdir(parents=True)
    (system / "usr/lib/PXELINUX/pxelinux.0").write_bytes(b"pxe")
    (system / "usr/lib/grub/x86_64-efi/monolithic").mkdir(parents=True)
    (system / "usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi").write_bytes(b"grub")
    boot = tmp_path / "boot"
    results = {r.loader.target: r.status for r in install_loaders(boot, system_root=system)}
    assert results["pxelinux.0"] == "copied"
    assert results["grubnetx64.efi"] == "copied" and results["grubx64.efi"] == "copied"
    assert results["ipxe.efi"] == "missing"
    assert (boot / "pxelinux.0").read_bytes() == b"pxe"
    inode = (boot / "pxelinux.0").stat().st_ino
    again = {r.loader.target: r.status for r in install_loaders(boot, system_root=system)}
    assert again["pxelinux.0"] == "unchanged"
    assert (boot / "pxelinux.0").stat().st_ino == inode  # not rewritten


def test_cli_installs_real_debian_loaders_into_the_boot_dir(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "hostcfg").mkdir(parents=True)
    env = {**os.environ, "ROOTFS_SITE": str(site), "ROOTFS_EXPORT_ROOT": str(tmp_path / "export"),
           "ROOTFS_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "rootfs", "boot", "install"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    boot = tmp_path / "export" / "boot"
    if Path("/usr/lib/PXELINUX/pxelinux.0").exists():
        assert (boot / "pxelinux.0").read_bytes() == Path(
            "/usr/lib/PXELINUX/pxelinux.0"
        ).read_bytes()
        assert "copied" in out.stdout
