"""Per-host boot configs: which names map to which host, what they boot, and the [boot] tables."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from rootfs.config.site import Site, load_site
from rootfs.errors import ConfigError
from rootfs.netboot.boot.files import host_configs, unregistered_file, virtual_file

HOSTS = """
[hosts.pc1]
mac = "52:54:00:12:34:11"
ip = "10.0.0.11"

[hosts.pc2]
mac = "52:54:00:12:34:12"
ip = "10.0.0.12"
[hosts.pc2.boot]
kernel = "debian/vmlinuz-6.1"
initrd = ""
cmdline = "initramfs"
append = "console=ttyS0"
"""
PC1 = IPv4Address("10.0.0.11")
STRANGER = IPv4Address("10.0.0.99")


def make_site(tmp_path: Path, boot: str = "", hosts: str = HOSTS) -> Site:
    root = tmp_path / "site"
    (root / "hostcfg").mkdir(parents=True, exist_ok=True)
    (root / "overlays" / "diskless").mkdir(parents=True, exist_ok=True)
    (root / "site.toml").write_text(f'[boot]\n{boot}\n[[subnet]]\nnetwork = "10.0.0.0/24"\n')
    (root / "hostcfg" / "hosts.toml").write_text(hosts)
    return load_site(root, environ={})


@pytest.mark.parametrize(
    ("name", "client", "host", "kind"),
    [
        (b"pxelinux.cfg/01-52-54-00-12-34-11", STRANGER, "pc1", "pxelinux"),  # by MAC
        (b"PXELINUX.CFG/01-52-54-00-12-34-11", STRANGER, "pc1", "pxelinux"),
        (b"bios/pxelinux.cfg/01-52-54-00-12-34-12", STRANGER, "pc2", "pxelinux"),  # any dir
        (b"pxelinux.cfg/0A00000B", STRANGER, "pc1", "pxelinux"),  # by HEXIP
        (b"pxelinux.cfg/0a00000c", STRANGER, "pc2", "pxelinux"),
        (b"pxelinux.cfg/default", PC1, "pc1", "pxelinux"),  # by the asking IP
        (b"boot.ipxe", PC1, "pc1", "ipxe"),
        (b"ipxe/boot.ipxe", PC1, "pc1", "ipxe"),
        (b"grub/grub.cfg", PC1, "pc1", "grub"),
        (b"grub/grub.cfg-01-52-54-00-12-34-12", STRANGER, "pc2", "grub"),
        (b"grub/grub.cfg-0A00000C", STRANGER, "pc2", "grub"),
    ],
)
def test_names_map_to_hosts(
    tmp_path: Path, name: bytes, client: IPv4Address, host: str, kind: str
) -> None:
    found = virtual_file(make_site(tmp_path), name, client)
    assert found is not None and found.host is not None
    assert (found.host.name, found.kind) == (host, kind)


@pytest.mark.parametrize(
    ("name", "client"),
    [
        (b"pxelinux.cfg/01-52-54-00-99-99-99", PC1),  # unknown MAC: the loader tries its next name
        (b"pxelinux.cfg/0A00000", PC1),  # HEXIP prefixes: not ours
        (b"pxelinux.cfg/0A000063", PC1),
        (b"pxelinux.cfg/default", STRANGER),  # stranger: disk, then the unregistered menu
        (b"boot.ipxe", STRANGER),
        (b"grub.cfg", STRANGER),
        (b"vmlinuz", PC1),
        (b"pxelinux.0", PC1),
    ],
)
def test_names_that_are_not_generated(tmp_path: Path, name: bytes, client: IPv4Address) -> None:
    assert virtual_file(make_site(tmp_path), name, client) is None


def test_default_configs_boot_nfs_root_from_option_17(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    configs = host_configs(site, site.host("pc1"))
    pxe = configs["pxelinux.cfg/01-52-54-00-12-34-11"]
    assert "KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND root=/dev/nfs ip=dhcp\n" in pxe
    ipxe = configs["boot.ipxe"]
    assert ipxe.startswith("#!ipxe\n")
    assert "kernel vmlinuz initrd=initrd.img root=/dev/nfs ip=dhcp" in ipxe
    assert "\ninitrd initrd.img\nboot\n" in ipxe
    grub = configs["grub.cfg-01-52-54-00-12-34-11"]
    assert "linux /vmlinuz root=/dev/nfs ip=dhcp\n  initrd /initrd.img\n" in grub
    # No nfsroot= anywhere: the root path is said once, in DHCP option 17.
    assert all("nfsroot=/" not in text for text in configs.values())


def test_host_overrides_and_initramfs_form(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    pxe = host_configs(site, site.host("pc2"))["pxelinux.cfg/01-52-54-00-12-34-12"]
    assert "KERNEL debian/vmlinuz-6.1\n" in pxe
    assert "INITRD" not in pxe  # initrd = "" removes it
    assert "APPEND boot=nfs nfsroot=auto ip=dhcp console=ttyS0\n" in pxe


def test_site_boot_table(tmp_path: Path) -> None:
    site = make_site(tmp_path, boot='kernel = "k"\ninitrd = "i"\nappend = "quiet"\n')
    grub = host_configs(site, site.host("pc1"))["grub.cfg-01-52-54-00-12-34-11"]
    assert "linux /k root=/dev/nfs ip=dhcp quiet\n  initrd /i\n" in grub


@pytest.mark.parametrize(
    ("boot", "key"),
    [
        ('kernel = "../etc/passwd"', "boot.kernel"),
        ('cmdline = "iscsi"', "boot.cmdline"),
        ('append = "a\\nb"', "boot.append"),
        ("colour = 1", "boot.colour"),
    ],
)
def test_bad_boot_table_names_the_key(tmp_path: Path, boot: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        make_site(tmp_path, boot=boot)


def test_unregistered_configs(tmp_path: Path) -> None:
    for name, marker in [
        (b"pxelinux.cfg/default", "LOCALBOOT -1"),
        (b"boot.ipxe", "exit"),
        (b"grub/grub.cfg", "exit"),
    ]:
        found = unregistered_file(name, STRANGER)
        assert found is not None and found.host is None
        text = found.content.decode()
        assert "not registered" in text and "10.0.0.99" in text and marker in text
    assert unregistered_file(b"vmlinuz", STRANGER) is None
