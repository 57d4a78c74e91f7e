"""Per-host boot configs: which names map to which host, what they boot, and the [boot] tables."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest
from conftest import Run

from rootfs.config.site import Site, load_site
from rootfs.errors import ConfigError
from rootfs.netboot.boot.files import host_configs, host_spec, unregistered_file, virtual_file

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


# -- cached hosts ---------------------------------------------------------------------------------

CACHED_HOSTS = (
    HOSTS
    + """
[hosts.pc3]
mac = "52:54:00:12:34:13"
ip = "10.0.0.13"
cached = true

[hosts.pc4]
mac = "52:54:00:12:34:14"
ip = "10.0.0.14"
cached = true
cache_device = "/dev/vdb"
cache_quota = "1.5G"

[hosts.pc5]
mac = "52:54:00:12:34:15"
ip = "10.0.0.15"
cached = true
[hosts.pc5.boot]
initrd = "own-initrd.img"
cmdline = "initramfs"
append = ""

[hosts.pc6]
mac = "52:54:00:12:34:16"
ip = "10.0.0.16"
cached = false
cache_device = "/dev/vdb"
cache_quota = "1G"
"""
)

# What the non-cached hosts of HOSTS were served before cached hosts existed, byte for byte
# (with [boot] append = "console=ttyS0").
UNCACHED = {
    "pc1": {
        "pxelinux.cfg/01-52-54-00-12-34-11": "# generated by rootfs on request; not stored on"
        " disk: host pc1\nDEFAULT pc1\nPROMPT 0\nTIMEOUT 0\nLABEL pc1\n  KERNEL vmlinuz\n"
        "  INITRD initrd.img\n  APPEND root=/dev/nfs ip=dhcp console=ttyS0\n  IPAPPEND 2\n",
        "boot.ipxe": "#!ipxe\n# generated by rootfs on request; not stored on disk: host pc1\n"
        "kernel vmlinuz initrd=initrd.img root=/dev/nfs ip=dhcp console=ttyS0"
        " BOOTIF=01-${netX/mac:hexhyp}\ninitrd initrd.img\nboot\n",
        "grub.cfg-01-52-54-00-12-34-11": "# generated by rootfs on request; not stored on disk:"
        ' host pc1\nset timeout=0\nmenuentry "pc1 (rootfs)" {\n'
        "  linux /vmlinuz root=/dev/nfs ip=dhcp console=ttyS0\n  initrd /initrd.img\n}\n",
    },
    "pc2": {
        "pxelinux.cfg/01-52-54-00-12-34-12": "# generated by rootfs on request; not stored on"
        " disk: host pc2\nDEFAULT pc2\nPROMPT 0\nTIMEOUT 0\nLABEL pc2\n"
        "  KERNEL debian/vmlinuz-6.1\n  APPEND boot=nfs nfsroot=auto ip=dhcp console=ttyS0\n"
        "  IPAPPEND 2\n",
        "boot.ipxe": "#!ipxe\n# generated by rootfs on request; not stored on disk: host pc2\n"
        "kernel debian/vmlinuz-6.1 boot=nfs nfsroot=auto ip=dhcp console=ttyS0"
        " BOOTIF=01-${netX/mac:hexhyp}\nboot\n",
        "grub.cfg-01-52-54-00-12-34-12": "# generated by rootfs on request; not stored on disk:"
        ' host pc2\nset timeout=0\nmenuentry "pc2 (rootfs)" {\n'
        "  linux /debian/vmlinuz-6.1 boot=nfs nfsroot=auto ip=dhcp console=ttyS0\n}\n",
    },
}


@pytest.mark.parametrize("hosts", [HOSTS, CACHED_HOSTS])
def test_uncached_hosts_are_served_what_they_were(tmp_path: Path, hosts: str) -> None:
    site = make_site(tmp_path, boot='append = "console=ttyS0"', hosts=hosts)
    for name, expected in UNCACHED.items():
        assert host_configs(site, site.host(name)) == expected


def test_cached_host_boots_initrd_cached_with_its_cache_on_the_command_line(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path, hosts=CACHED_HOSTS)
    configs = host_configs(site, site.host("pc3"))
    args = "root=/dev/nfs ip=dhcp rootfs.cache=LABEL=rootfs-cache"
    assert configs["pxelinux.cfg/01-52-54-00-12-34-13"] == (
        "# generated by rootfs on request; not stored on disk: host pc3\nDEFAULT pc3\nPROMPT 0\n"
        f"TIMEOUT 0\nLABEL pc3\n  KERNEL vmlinuz\n  INITRD initrd-cached.img\n  APPEND {args}\n"
        "  IPAPPEND 2\n"
    )
    assert configs["boot.ipxe"] == (
        "#!ipxe\n# generated by rootfs on request; not stored on disk: host pc3\n"
        f"kernel vmlinuz initrd=initrd-cached.img {args} BOOTIF=01-${{netX/mac:hexhyp}}\n"
        "initrd initrd-cached.img\nboot\n"
    )
    assert configs["grub.cfg-01-52-54-00-12-34-13"] == (
        "# generated by rootfs on request; not stored on disk: host pc3\nset timeout=0\n"
        f'menuentry "pc3 (rootfs)" {{\n  linux /vmlinuz {args}\n  initrd /initrd-cached.img\n}}\n'
    )


@pytest.mark.parametrize(
    ("boot", "host", "initrd", "args"),
    [
        (  # quota in bytes, after the form's own arguments and before [boot] append
            'append = "console=ttyS0"',
            "pc4",
            "initrd-cached.img",
            "root=/dev/nfs ip=dhcp rootfs.cache=/dev/vdb rootfs.cache_quota=1610612736"
            " console=ttyS0",
        ),
        (
            'initrd_cached = "cached/initrd.img"\ninitrd = ""',
            "pc4",
            "cached/initrd.img",
            "root=/dev/nfs ip=dhcp rootfs.cache=/dev/vdb rootfs.cache_quota=1610612736",
        ),
        (  # the host's own initrd and form win; its append = "" drops the site's
            'append = "quiet"',
            "pc5",
            "own-initrd.img",
            "boot=nfs nfsroot=auto ip=dhcp rootfs.cache=LABEL=rootfs-cache",
        ),
        (  # cache_device and cache_quota mean nothing until cached = true
            'append = "quiet"',
            "pc6",
            "initrd.img",
            "root=/dev/nfs ip=dhcp quiet",
        ),
    ],
)
def test_cached_boot_spec(tmp_path: Path, boot: str, host: str, initrd: str, args: str) -> None:
    site = make_site(tmp_path, boot=boot, hosts=CACHED_HOSTS)
    spec = host_spec(site, site.host(host))
    assert (spec.initrd, spec.args) == (initrd, args)
    assert (spec.cache is not None) == site.host(host).cached
    grub = host_configs(site, site.host(host))[
        f"grub.cfg-01-{site.host(host).mac.replace(':', '-')}"
    ]
    assert f"  linux /vmlinuz {args}\n  initrd /{initrd}\n" in grub


def test_tftp_serves_a_cached_host_its_cached_config(tmp_path: Path) -> None:
    site = make_site(tmp_path, hosts=CACHED_HOSTS)
    pc4 = IPv4Address("10.0.0.14")
    for name in (b"boot.ipxe", b"pxelinux.cfg/default", b"grub/grub.cfg", b"pxelinux.cfg/0A00000E"):
        found = virtual_file(site, name, pc4)
        assert found is not None and found.host == site.host("pc4")
        text = found.content.decode()
        assert "initrd-cached.img" in text
        assert "rootfs.cache=/dev/vdb rootfs.cache_quota=1610612736" in text


def test_bad_initrd_cached_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_site(tmp_path, boot='initrd_cached = ""')
    assert str(info.value) == (
        "site.toml: boot.initrd_cached: '' is not a file in the boot directory; use a relative"
        ' path like "vmlinuz" or "debian/vmlinuz" (letters, digits, . _ + - /)'
    )


def test_boot_show_says_a_host_boots_cached(run: Run, site: Path) -> None:
    hosts = site / "hostcfg/hosts.toml"
    hosts.write_text(
        hosts.read_text()
        + '\n[hosts.pc3]\nmac = "52:54:00:00:00:03"\nip = "10.9.0.13"\ncached = true\n'
        'cache_device = "/dev/vdb"\ncache_quota = "8G"\n'
    )
    out = run("boot", "show", "pc3").stdout
    assert out.startswith(
        "pc3 boots cached: its root is served through a cache on its own disk\n"
        "  initrd:       initrd-cached.img (from [boot] initrd_cached)\n"
        "  cache device: /dev/vdb (formatted by the client if empty, else left alone)\n"
        "  cache quota:  8.0 GiB (8589934592 bytes)\n"
        "  kernel args:  rootfs.cache=/dev/vdb rootfs.cache_quota=8589934592\n"
        "\n==> pxelinux.cfg/01-52-54-00-00-00-03 <==\n"
    )
    assert (
        "  APPEND root=/dev/nfs ip=dhcp rootfs.cache=/dev/vdb rootfs.cache_quota=8589934592\n"
        in out
    )
    plain = run("boot", "show", "pc1").stdout
    assert plain.startswith("==> pxelinux.cfg/01-52-54-00-00-00-01 <==\n")
    assert "cache" not in plain
