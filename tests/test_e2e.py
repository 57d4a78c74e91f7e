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
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xxhash
from e2e_lab import Boot, BootLab, NfsCounter, missing_tools, open_boot_lab, rootfs_argv

REPO = Path(__file__).resolve().parent.parent
SERVER = "192.168.240.1"
MARKER_APPEND = "console=ttyS0 quiet panic=5 init=/usr/sbin/rootfs-marker"
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
    return make_e2e_site(tmp_path)


def make_e2e_site(tmp: Path, *, dhcp: str = "", append: str = MARKER_APPEND) -> Site:
    """A site under `tmp` for the lab's network: the marker overlays, state and exports under
    `tmp`, ganesha managed by rootfs. `dhcp` is extra TOML after [dhcp] (e.g. its boot_files)."""
    root = tmp / "site"
    (root / "hostcfg").mkdir(parents=True)
    (root / "hostcfg/hosts.toml").write_text("")
    (root / "ganesha").mkdir()
    for overlay in ("diskless", "e2e-marker"):
        shutil.copytree(REPO / "overlays" / overlay, root / "overlays" / overlay, symlinks=True)
    (root / "site.toml").write_text(
        f"""[server]
address = "{SERVER}"

[paths]
state_dir = "{tmp / "state"}"
export_root = "{tmp / "tftpboot"}"

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
{dhcp}
[boot]
append = "{append}"

[exports]
backend = "ganesha"
manage_ganesha = true
ganesha_file = "{root / "ganesha" / "rootfs-exports.conf"}"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTFS_")}
    return Site(root, env)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BootLab]:
    with open_boot_lab(SERVER) as lab:
        lab.answer_router_solicitations(tmp_path / "router-advert.log")  # iPXE: 16 s less a boot
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
    lab.wait_listening(80, what="rootfs serve (HTTP)", log=serve_log)


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


# -- a cached client: / served from its own disk through rootfs's cache ----------------------

PC3 = ("pc3", "52:54:00:e2:e0:03", "192.168.240.13")
CACHE_BOOT_TIMEOUT = 240.0  # the cached initramfs is larger and starts Python under TCG


def _debugfs(disk: Path, request: str) -> str:
    out = subprocess.run(["debugfs", "-R", request, str(disk)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _flip_cached_object(disk: Path, content: bytes) -> None:
    """Corrupt one byte of the cached object holding *content*, on the guest's disk image."""
    digest = xxhash.xxh3_128_hexdigest(content)
    path = f"/rootfs/objects/{digest[:2]}/{digest[2:]}"
    block = int(_debugfs(disk, f"bmap {path} 0").split()[-1])
    found = re.search(r"Block size:\s+(\d+)", _debugfs(disk, "stats"))
    assert found is not None
    block_size = int(found.group(1))
    with open(disk, "r+b") as f:
        f.seek(block * block_size)
        byte = f.read(1)
        f.seek(block * block_size)
        f.write(bytes([byte[0] ^ 0x01]))


def test_a_cached_client_boots_from_its_disk_and_survives_the_server(
    site: Site, lab: BootLab, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    release = b"cached generation\n"
    base = _make_base(tmp_path / "base", release.decode().strip())
    site.rootfs("base", "import", "e2e", str(base))
    name, mac, ip = PC3
    site.rootfs("host", "add", name, "--mac", mac, "--ip", ip, "--cached",
                "--cache-device", "/dev/vda")  # fmt: skip
    assert "boots cached" in site.rootfs("boot", "show", name)
    print(site.rootfs("boot", "initramfs", "--cache", str(CACHE)))
    _serve(site, lab, logs)
    nfs = NfsCounter(lab, ip)
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(128 << 20)  # empty: the client formats it
    print(f"setup: {time.monotonic() - t0:.0f}s")

    def boot(tag: str, boots: int, **kw: Any) -> tuple[Boot, int]:
        b = lab.boot(mac, timeout=CACHE_BOOT_TIMEOUT, log=logs / f"console-{tag}.log",
                     disk=disk, **kw)  # fmt: skip
        sent = nfs.take()
        print(f"--- {tag}: {b.seconds:.0f}s, NFS {sent} bytes, powered off: {b.powered_off}")
        lines = _assert_booted(b, PC3, logs)
        assert "rootfs-initramfs: root served through the cache" in b.console, b.console[-3000:]
        assert f"rootfs-marker: release={release.decode().strip()}" in lines
        # The boot counter lives in /var, the client's state: read from NFS, so it counts on.
        assert f"rootfs-marker: boots={boots}" in lines, lines
        return b, sent

    cold, cold_bytes = boot("cold", 1)
    assert "formatting the empty device /dev/vda" in cold.console
    # Between boots a bit of one cached object flips on the disk: it must never be served.
    _flip_cached_object(disk, release)
    warm, warm_bytes = boot("warm", 2)
    assert warm_bytes < cold_bytes * 0.10, (warm_bytes, cold_bytes)
    digest = xxhash.xxh3_128_hexdigest(release)
    assert f"cached object {digest} does not match its name; removed" in warm.console

    # With the client up, the base is updated: the client picks up the new manifest without a
    # reboot. Then the NFS server goes away: what it cached keeps working, the rest fails.
    hosts = site.root / "hostcfg/hosts.toml"
    append = "console=ttyS0 quiet panic=5 init=/usr/sbin/rootfs-marker rootfs.marker=live-check"
    hosts.write_text(hosts.read_text() + f'\n[hosts.{name}.boot]\nappend = "{append}"\n')
    time.sleep(3)  # rootfs serve notices the inventory change

    def stop_nfs() -> None:
        pid = int((tmp_path / "state/ganesha/ganesha.pid").read_text())
        os.kill(pid, signal.SIGKILL)

    update = _make_base(tmp_path / "base2", "cached generation two")

    def update_base() -> None:
        site.rootfs("base", "update", "e2e", str(update))

    offline, _ = boot("live", 3, on={"waiting for a base update": update_base,
                                     "waiting for the server to go away": stop_nfs})  # fmt: skip
    assert "rootfs-marker: live update: release=cached generation two" in offline.console, (
        offline.console[-3000:]
    )
    assert "rootfs-marker: offline: cached files work" in offline.console, offline.console[-3000:]
    assert "rootfs-marker: offline: uncached read failed" in offline.console
    # While it ran, the client's cache daemon reported its cache into its tree for `status`.
    status = site.rootfs("status", "--no-drift")
    assert re.search(rf"^  {name} +\d+ objects, .* of reads from its disk", status, re.M), status
    print(f"total: {time.monotonic() - t0:.0f}s")
