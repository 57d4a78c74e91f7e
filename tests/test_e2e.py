"""End to end (issue 7): a real PXE client boots its rootfs-built root, nothing simulated.

QEMU's iPXE ROM gets its lease and `boot.ipxe` from `rootfs serve`'s DHCP, loads a Debian kernel and
rootfs's initramfs over its TFTP; the initramfs takes the root path from DHCP option 17 and mounts
it over NFSv3 from a ganesha.nfsd that `rootfs exports apply` started; the host's tree runs the
e2e-marker overlay's /usr/sbin/rootfs-marker, which prints the name and address rendered for that
host and powers off. Then a base update reaches the next boot while a host-local file survives, a
second host boots its own tree, and an unregistered MAC gets nothing.

The whole run is bounded (every boot has a deadline, every process is killed and the namespace
deleted in `finally`) and fits in 10 minutes on 2 cores under TCG.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_lab import Boot, BootLab, missing_tools, open_boot_lab, rootfs_argv

REPO = Path(__file__).resolve().parent.parent
SERVER = "192.168.240.1"
PC1 = ("pc1", "52:54:00:e2:e0:01", "192.168.240.11")
PC2 = ("pc2", "52:54:00:e2:e0:02", "192.168.240.12")
STRANGER_MAC = "52:54:00:e2:e0:99"
BOOT_TIMEOUT = 150.0  # seconds from power-on to power-off; about 40 here under TCG
# Kept across runs (the kernel .deb and the built images): only the first run downloads.
CACHE = Path(os.environ.get("ROOTFS_E2E_CACHE", "/var/cache/rootfs-e2e"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, taps, NFS server)"),
    pytest.mark.skipif(bool(missing_tools()), reason=f"missing: {', '.join(missing_tools())}"),
]


@dataclass
class Site:
    """The test's site and how to run rootfs against it."""

    root: Path
    env: dict[str, str]

    def rootfs(self, *args: str, lab: BootLab | None = None, timeout: float = 300) -> str:
        argv = [*rootfs_argv(), "--site", str(self.root), *args]
        if lab is not None:
            return lab.run(argv, env=self.env, timeout=timeout).stdout
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"rootfs {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout


def _make_base(path: Path, release: str) -> Path:
    """A busybox root (scripts/make-busybox-base: no mirror needed) with a release file the
    marker prints, so a base update is visible on the console."""
    subprocess.run(["bash", str(REPO / "scripts/make-busybox-base"), str(path)], check=True,
                   capture_output=True)  # fmt: skip
    (path / "etc/rootfs-release").write_text(release + "\n")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    root = tmp_path / "site"
    (root / "hostcfg").mkdir(parents=True)
    (root / "hostcfg/hosts.toml").write_text("")
    (root / "ganesha").mkdir()
    for overlay in ("diskless", "e2e-marker"):
        shutil.copytree(REPO / "overlays" / overlay, root / "overlays" / overlay, symlinks=True)
    (root / "site.toml").write_text(
        f"""[server]
address = "{SERVER}"

[paths]
state_dir = "{tmp_path / "state"}"
export_root = "{tmp_path / "tftpboot"}"

[defaults]
base = "e2e"
overlays = ["diskless", "e2e-marker"]
mode = "copy"
nfs_options = "vers=3,nolock,tcp"

[[subnet]]
network = "192.168.240.0/24"
gateway = "{SERVER}"
dns = ["{SERVER}"]
domain = "e2e.test"

[dhcp]
interfaces = ["br0"]

[boot]
append = "console=ttyS0 quiet panic=5 init=/usr/sbin/rootfs-marker"

[exports]
backend = "ganesha"
manage_ganesha = true
ganesha_file = "{root / "ganesha" / "rootfs-exports.conf"}"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTFS_")}
    return Site(root, env)


@pytest.fixture
def lab() -> Iterator[BootLab]:
    with open_boot_lab(SERVER) as lab:
        yield lab
    # Teardown happened: nothing of the lab may be left running, mounted or configured.
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.ns not in names
    assert lab.holder is not None and lab.holder.poll() is not None


def _serve(site: Site, lab: BootLab, logs: Path) -> None:
    """rpcbind (NFSv3 clients find MOUNT and NFS through it), ganesha via `rootfs exports apply`,
    then `rootfs serve`, each inside the lab."""
    lab.spawn(["rpcbind", "-f"], log=logs / "rpcbind.log")
    lab.wait_listening(111, what="rpcbind")
    print(site.rootfs("exports", "apply", lab=lab))
    lab.wait_listening(
        2049, what="ganesha.nfsd", log=site.root.parent / "state/ganesha/ganesha.log"
    )
    serve_log = logs / "serve.log"
    lab.spawn(
        [*rootfs_argv(), "--site", str(site.root), "serve", "-v"], log=serve_log, env=site.env
    )
    lab.wait_listening(67, what="rootfs serve (DHCP)", udp=True, log=serve_log)
    lab.wait_listening(69, what="rootfs serve (TFTP)", udp=True, log=serve_log)


def _boot(lab: BootLab, mac: str, logs: Path, tag: str) -> Boot:
    boot = lab.boot(mac, timeout=BOOT_TIMEOUT, log=logs / f"console-{tag}.log")
    print(f"--- {tag}: {boot.seconds:.0f}s, powered off: {boot.powered_off}")
    return boot


def _marker_lines(boot: Boot) -> list[str]:
    return [line for line in boot.console.splitlines() if line.startswith("rootfs-marker:")]


def _assert_booted(boot: Boot, host: tuple[str, str, str], logs: Path) -> list[str]:
    name, _, ip = host
    lines = _marker_lines(boot)
    context = f"\n{boot.console[-4000:]}\n--- serve log:\n{_tail(logs / 'serve.log')}"
    assert f"rootfs-marker: hostname={name} ip={ip} lease={ip} root={SERVER}:" in "\n".join(
        lines
    ), context
    assert boot.powered_off, "the guest did not power off by itself" + context
    return lines


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def test_pxe_boot_over_rootfs_dhcp_tftp_and_ganesha_nfs(
    site: Site, lab: BootLab, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    site.rootfs("base", "import", "e2e", str(_make_base(tmp_path / "base1", "generation one")))
    for name, mac, ip in (PC1, PC2):
        site.rootfs("host", "add", name, "--mac", mac, "--ip", ip, "--no-build")
    site.rootfs("build", "--all")
    print(site.rootfs("boot", "initramfs", "--cache", str(CACHE)))
    _serve(site, lab, logs)
    print(f"setup: {time.monotonic() - t0:.0f}s")

    first = _boot(lab, PC1[1], logs, "pc1-first")
    lines = _assert_booted(first, PC1, logs)
    assert "rootfs-marker: release=generation one" in lines
    assert "rootfs-marker: boots=1" in lines
    # The root came from option 17, as the initramfs reports what DHCP gave it.
    assert f"root={SERVER}:{tmp_path / 'tftpboot'}/{PC1[2]} (vers=3,nolock,tcp)" in first.console
    trace = site.rootfs("trace", "pc1")
    for step in ("discover -> offer", "request -> ack", "boot.ipxe", "vmlinuz", "initrd.img"):
        assert step in trace, f"{step} missing from rootfs trace pc1:\n{trace}"

    # A new base generation changes the release file the marker prints; `base update` rebuilds
    # the hosts, and the file the first boot wrote (no build owns it) must survive.
    site.rootfs("base", "update", "e2e", str(_make_base(tmp_path / "base2", "generation two")))
    second = _boot(lab, PC1[1], logs, "pc1-second")
    lines = _assert_booted(second, PC1, logs)
    assert "rootfs-marker: release=generation two" in lines
    assert "rootfs-marker: boots=2" in lines
    history = tmp_path / "tftpboot" / PC1[2] / "var/lib/rootfs-marker/history"
    assert history.read_text() == "pc1 booted generation one\npc1 booted generation two\n"

    # The second host: another MAC, its own tree (its boot counter starts at one).
    other = _boot(lab, PC2[1], logs, "pc2")
    lines = _assert_booted(other, PC2, logs)
    assert "rootfs-marker: boots=1" in lines
    assert "discover -> offer" in site.rootfs("trace", "pc2")

    # A MAC that is not in the inventory gets no lease, so no boot file and no root.
    stranger = lab.boot(STRANGER_MAC, timeout=120, log=logs / "console-stranger.log",
                        until="No bootable device")  # fmt: skip
    assert "No bootable device" in stranger.console, stranger.console[-3000:]
    assert "rootfs-initramfs" not in stranger.console
    assert "rootfs-marker" not in stranger.console
    assert "(unknown MAC)" in site.rootfs("trace", STRANGER_MAC)
    print(site.rootfs("status"))
    print(f"total: {time.monotonic() - t0:.0f}s")
