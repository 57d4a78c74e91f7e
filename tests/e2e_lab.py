"""A private boot network for end-to-end tests and `make demo`: one network namespace with a bridge
holding the rootfs server address, tap devices for QEMU guests on that bridge, and a private /run
(rpcbind binds /run/rpcbind.sock by path, so sharing the host's would collide with a system
rpcbind). `rootfs serve`, rpcbind, ganesha.nfsd and QEMU all run inside it, so every DHCP, TFTP
and NFS packet stays on the bridge: nothing reaches a real network whatever addresses the site
uses. Teardown kills every process in the namespaces and deletes them, in all outcomes.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from netns import kill_lab

QEMU = "qemu-system-x86_64"
# QEMU's default ROM for virtio-net-pci: one PCI option ROM holding iPXE twice, a legacy image that
# SeaBIOS runs and an EFI x64 driver that OVMF loads (code type 3), so the same file serves both.
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
OVMF = Path("/usr/share/OVMF")
# Debian's ovmf: the plain 4 MiB build, and the Secure Boot build (it needs SMM: q35 with smm=on
# and a pflash only SMM code may write) with Microsoft's KEK and db enrolled and Secure Boot on
# in its variable store template.
OVMF_PLAIN = (OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd")
OVMF_SECURE = (OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.ms.fd")
FIRMWARES = ("bios", "uefi")
NIC_ROMS = ("ipxe", "none")
TOOLS = (QEMU, "ganesha.nfsd", "rpcbind", "ip", "nsenter", "unshare", "apt-get", "dpkg-deb", "nft")
WAIT = 60.0  # seconds for a daemon to listen on a loaded 2-core machine


def missing_tools() -> list[str]:
    """What this machine lacks for a real boot (the test skips and names them)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not IPXE_ROM.exists():
        missing.append("ipxe-qemu")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


def missing_uefi(*, secure_boot: bool = False) -> list[str]:
    """What a UEFI boot needs beyond `missing_tools` (Debian's ovmf package)."""
    files = OVMF_SECURE if secure_boot else OVMF_PLAIN
    return [] if all(p.exists() for p in files) else ["ovmf"]


def check_machine(firmware: str, nic_rom: str, secure_boot: bool, http_boot: bool) -> None:
    """Refuse a machine `BootLab.boot` cannot power on, before anything is started."""
    if firmware not in FIRMWARES or nic_rom not in NIC_ROMS:
        raise ValueError(f"firmware must be one of {FIRMWARES} and nic_rom one of {NIC_ROMS},"
                         f" not {firmware!r} and {nic_rom!r}")  # fmt: skip
    if firmware == "bios" and (nic_rom == "none" or secure_boot):
        raise ValueError("SeaBIOS boots through the iPXE ROM only, without Secure Boot")
    if http_boot and (firmware, nic_rom) != ("uefi", "none"):
        raise ValueError("HTTP Boot is the firmware's own: firmware='uefi', nic_rom='none'")
    if firmware == "uefi" and (gone := missing_uefi(secure_boot=secure_boot)):
        raise AssertionError(f"missing: {', '.join(gone)}")


def firmware_argv(vars_copy: Path | None, *, secure_boot: bool, http_boot: bool = False
                  ) -> list[str]:  # fmt: skip
    """QEMU arguments for the machine and its firmware: SeaBIOS (QEMU's default) when
    `vars_copy` is None, else OVMF from two pflash chips, its code read-only and `vars_copy` (a
    fresh copy of the variable store template, so no boot sees what an earlier one wrote: boot
    entries, shim's SbatLevel) writable.

    OVMF makes four boot entries per NIC, tried in this order: PXEv4, PXEv6, HTTPv4, HTTPv6.
    `http_boot` turns both PXE entries off (OVMF reads opt/org.tianocore/IPv4PXESupport and
    IPv6PXESupport from fw_cfg), so its HTTP Boot (HttpBootDxe) is what runs first."""
    if vars_copy is None:
        return ["-machine", "q35,accel=tcg"]
    http = []
    if http_boot:
        http = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
                "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]  # fmt: skip
    if secure_boot:
        # Only SMM code may write the variable store, or the OS could rewrite db and dbx itself.
        argv = ["-machine", "q35,accel=tcg,smm=on",
                "-global", "driver=cfi.pflash01,property=secure,value=on"]  # fmt: skip
    else:
        argv = ["-machine", "q35,accel=tcg"]
    code = (OVMF_SECURE if secure_boot else OVMF_PLAIN)[0]
    return [
        *argv, *http,
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
    ]  # fmt: skip


def nic_argv(mac: str, tap: str, *, firmware: str, nic_rom: str) -> list[str]:
    """The guest's virtio NIC. `nic_rom="ipxe"`: its option ROM is iPXE (QEMU's default file);
    `"none"`: no ROM, so OVMF's own drivers (VirtioNetDxe, SNP, PXE) boot it. Under OVMF the NIC
    gets bootindex=1: OVMF does not honour `-boot n`; it puts first the boot entries of the
    devices QEMU's bootorder names."""
    netdev = ["-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no"]
    device = f"virtio-net-pci,netdev=n0,mac={mac}"
    if firmware == "bios":
        return ["-boot", "n", *netdev, "-device", device]
    rom = IPXE_ROM if nic_rom == "ipxe" else ""
    return [*netdev, "-device", f"{device},romfile={rom},bootindex=1"]


@dataclass
class Boot:
    """One power-on of a guest: its serial console and how it ended."""

    console: str
    powered_off: bool  # QEMU exited by itself (the guest powered off), not killed at the deadline
    seconds: float
    seen: dict[str, float] = field(default_factory=dict)  # `on` text -> seconds from power-on


@dataclass
class BootLab:
    """The namespace, its holder process and everything started in it."""

    ns: str
    server_ip: str
    prefix: int
    holder: subprocess.Popen[bytes] | None = None
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    taps: int = 0

    @property
    def inside(self) -> list[str]:
        """Prefix running a command in the lab's network and private-/run mount namespaces."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n"]

    def run(self, argv: Sequence[str], *, timeout: float = 120, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run to completion inside the lab; raises with its output when it fails."""
        proc = subprocess.run(
            [*self.inside, *argv], capture_output=True, text=True, timeout=timeout, env=env
        )
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}"
                                 f"{proc.stderr}")  # fmt: skip
        return proc

    def spawn(self, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
              ) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start a daemon inside the lab, its output to `log`; stopped at teardown."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*self.inside, *argv], stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )
        self.spawned.append(proc)
        return proc

    def listening(self, port: int, *, udp: bool = False) -> bool:
        """Whether a socket listens on `port` in the lab (/proc/PID/net/* shows the namespace of
        PID; TCP state 0A is LISTEN, a bound UDP socket is state 07)."""
        assert self.holder is not None
        for name in ("udp", "udp6") if udp else ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                lines = Path(f"/proc/{self.holder.pid}/net/{name}").read_text().splitlines()[1:]
                for line in lines:
                    fields = line.split()
                    state_ok = fields[3] == ("07" if udp else "0A")
                    if state_ok and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        return False

    def wait_listening(self, port: int, *, what: str, udp: bool = False, log: Path | None = None
                       ) -> None:  # fmt: skip
        deadline = time.monotonic() + WAIT
        while not self.listening(port, udp=udp):
            if time.monotonic() > deadline:
                text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
                raise AssertionError(f"{what} did not listen on port {port} in {WAIT}s\n{text}")
            time.sleep(0.1)

    def answer_router_solicitations(self, log: Path) -> None:
        """Answer every IPv6 router solicitation on br0 with an advertisement that offers
        nothing (router lifetime 0, no prefix, no DHCPv6 flags).

        iPXE configures IPv6 beside DHCPv4 and waits for both before it goes on: with no router
        on the link its solicitations time out after about 16 s (0.25 + 0.5 + ... + 8 s) on
        every boot ("Configuring (net0 ...)......"). This answer ends that wait at once."""
        self.spawn([sys.executable, __file__, "advertise-nothing", "br0"], log=log)

    def add_tap(self) -> str:
        """A new tap device on the bridge, for one QEMU guest."""
        name = f"tap{self.taps}"
        self.taps += 1
        _ip("-n", self.ns, "tuntap", "add", "dev", name, "mode", "tap")
        _ip("-n", self.ns, "link", "set", name, "master", "br0")
        _ip("-n", self.ns, "link", "set", name, "up")
        return name

    def boot(
        self,
        mac: str,
        *,
        timeout: float,
        log: Path,
        echo: IO[str] | None = None,
        until: str | None = None,
        disk: Path | None = None,
        on: dict[str, Callable[[], None]] | None = None,
        firmware: str = "bios",
        nic_rom: str = "ipxe",
        secure_boot: bool = False,
        http_boot: bool = False,
    ) -> Boot:
        """Power on a QEMU guest that network-boots with `mac`, and wait until it powers off,
        prints `until`, or `timeout` passes; QEMU is killed in any case.

        TCG on purpose: the test must hold on machines without KVM (CI), and that is the slow
        case. `-no-reboot` turns a kernel panic or a reboot into an exit instead of a loop.
        `disk` is attached as the guest's virtio disk (/dev/vda); `on` maps console text to
        what to do, once, when it appears (e.g. stop a server under a running client).

        `firmware`: "bios" (SeaBIOS) or "uefi" (OVMF, with a fresh copy of its variable store
        for this boot). `nic_rom`: "ipxe" boots through the NIC's iPXE ROM, "none" through
        the firmware's own PXE (UEFI only). `secure_boot`: OVMF's Secure Boot build with
        Microsoft's keys enrolled, so only signed images run (shim, then what shim trusts).
        `http_boot`: OVMF boots by its own HTTP Boot instead of PXE (needs nic_rom="none").
        """
        check_machine(firmware, nic_rom, secure_boot, http_boot)
        with tempfile.TemporaryDirectory(prefix="rootfs-e2e-vars-") as tmp:
            vars_copy = None
            if firmware == "uefi":
                vars_copy = Path(tmp) / "OVMF_VARS.fd"
                shutil.copyfile((OVMF_SECURE if secure_boot else OVMF_PLAIN)[1], vars_copy)
            machine = [
                *firmware_argv(vars_copy, secure_boot=secure_boot, http_boot=http_boot),
                "-cpu", "max", "-m", "512", "-smp", "1", "-nographic", "-no-reboot",
            ]  # fmt: skip
            return self._power_on(
                machine, mac, firmware=firmware, nic_rom=nic_rom, timeout=timeout, log=log,
                echo=echo, until=until, disk=disk, on=on,
            )  # fmt: skip

    def _power_on(
        self,
        machine: list[str],
        mac: str,
        *,
        firmware: str,
        nic_rom: str,
        timeout: float,
        log: Path,
        echo: IO[str] | None,
        until: str | None,
        disk: Path | None,
        on: dict[str, Callable[[], None]] | None,
    ) -> Boot:
        tap = self.add_tap()
        argv = [QEMU, *machine, *nic_argv(mac, tap, firmware=firmware, nic_rom=nic_rom)]
        if disk is not None:
            argv += ["-drive", f"file={disk},if=virtio,format=raw"]
        pending = dict(on or {})
        seen: dict[str, float] = {}
        start = time.monotonic()
        proc = subprocess.Popen(
            [*self.inside, *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.spawned.append(proc)
        assert proc.stdout is not None
        chunks: list[bytes] = []
        tail = b""
        terminal = _Terminal()
        powered_off = False
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            with log.open("wb") as out:
                while (left := start + timeout - time.monotonic()) > 0:
                    if not sel.select(timeout=min(left, 1.0)):
                        continue
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        powered_off = proc.wait() == 0
                        break
                    chunks.append(chunk)
                    out.write(chunk)
                    out.flush()
                    if echo is not None:
                        echo.write(terminal.feed(chunk))
                        echo.flush()
                    tail = (tail + chunk)[-4096:]  # `until` may straddle several reads
                    for text in [t for t in pending if t.encode() in tail]:
                        seen[text] = time.monotonic() - start
                        pending.pop(text)()
                    if until is not None and until.encode() in tail:
                        break
        finally:
            sel.close()
            _stop(proc)
            proc.stdout.close()
            _ip("-n", self.ns, "link", "del", tap)
        console = b"".join(chunks).decode(errors="replace").replace("\r", "")
        return Boot(
            console=console,
            powered_off=powered_off,
            seconds=time.monotonic() - start,
            seen=seen,
        )


_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|[A-Za-z])")
_PARTIAL = re.compile(r"\x1b(\[[0-9;?]*)?$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _Terminal:
    """Console bytes for a terminal: the firmware's escape sequences (cursor moves, screen
    clears, colours) and backspaces are dropped so the demo's scrolling stays readable. A
    sequence split across two reads is held back until its end arrives."""

    def __init__(self) -> None:
        self._held = ""

    def feed(self, chunk: bytes) -> str:
        text = self._held + chunk.decode(errors="replace").replace("\r", "")
        partial = _PARTIAL.search(text)
        self._held = partial.group(0) if partial else ""
        if partial:
            text = text[: partial.start()]
        return _CONTROL.sub("", _ESCAPE.sub("", text))


class NfsCounter:
    """Bytes the lab's NFS server sends to one client (nftables counts them at the server's
    output hook: every reply, data and metadata, headers included)."""

    TABLE = "rootfs_e2e"

    def __init__(self, lab: BootLab, client_ip: str) -> None:
        self.lab = lab
        self.client_ip = client_ip
        script = (
            f"add table inet {self.TABLE}\n"
            f"add chain inet {self.TABLE} out {{ type filter hook output priority 0; }}\n"
            f"add counter inet {self.TABLE} nfs_{client_ip.replace('.', '_')}\n"
            f"add rule inet {self.TABLE} out ip daddr {client_ip} tcp sport 2049"
            f" counter name nfs_{client_ip.replace('.', '_')}\n"
        )
        subprocess.run([*lab.inside, "nft", "-f", "-"], input=script.encode(), check=True)

    def take(self) -> int:
        """Bytes sent since the last call (the counter is reset)."""
        name = f"nfs_{self.client_ip.replace('.', '_')}"
        out = subprocess.run(
            [*self.lab.inside, "nft", "reset", "counter", "inet", self.TABLE, name],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        match = re.search(r"bytes (\d+)", out)
        assert match is not None, out
        return int(match.group(1))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # QEMU's guest state is throwaway
        proc.wait(10)


def _kill_all(lab: BootLab) -> None:
    kill_lab(lab.holder, [lab.ns], lab.spawned)


@contextlib.contextmanager
def open_boot_lab(server_ip: str, prefix: int = 24) -> Iterator[BootLab]:
    """A namespace whose bridge br0 holds `server_ip/prefix`; deleted on exit."""
    lab = BootLab(ns=f"rfe2e{os.getpid() % 100000}", server_ip=server_ip, prefix=prefix)
    created = False
    try:
        _ip("netns", "add", lab.ns)
        created = True
        _ip("-n", lab.ns, "link", "set", "lo", "up")
        _ip("-n", lab.ns, "link", "add", "br0", "type", "bridge")
        # No STP delay: a guest's tap must forward as soon as it is attached, or iPXE's first
        # DHCP packets are dropped while the port is "learning".
        _ip("-n", lab.ns, "link", "set", "br0", "type", "bridge", "stp_state", "0",
            "forward_delay", "0")  # fmt: skip
        _ip("-n", lab.ns, "addr", "add", f"{server_ip}/{prefix}", "dev", "br0")
        _ip("-n", lab.ns, "link", "set", "br0", "up")
        lab.holder = subprocess.Popen(
            ["ip", "netns", "exec", lab.ns, "unshare", "--mount", "--propagation", "private",
             "sh", "-c", "mount -t tmpfs rootfs-e2e-run /run && mkdir -p /run/rpcbind"
             " && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert lab.holder.stdout is not None
        if lab.holder.stdout.readline().strip() != b"ready":
            raise AssertionError("could not make a private /run in the lab namespace")
        yield lab
    finally:
        _kill_all(lab)
        if created:
            subprocess.run(["ip", "netns", "del", lab.ns], capture_output=True)


def rootfs_argv() -> list[str]:
    """The rootfs CLI of this checkout's virtualenv (the tests run it as a real command)."""
    exe = Path(sys.executable).with_name("rootfs")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rootfs"]


def advertise_nothing(iface: str) -> None:
    """Reply to router solicitations (ICMPv6 133) on `iface` with an empty router advertisement
    (134) to all nodes; runs until killed. The kernel fills in the checksum and source."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    index = socket.if_nametoindex(iface)
    all_routers = socket.inet_pton(socket.AF_INET6, "ff02::2") + struct.pack("@I", index)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, all_routers)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)  # RFC 4861 §6.1.2
    # type, code, checksum, cur hop limit, flags, router lifetime, reachable time, retrans timer
    advert = struct.pack("!BBHBBHII", 134, 0, 0, 0, 0, 0, 0, 0)
    print("answering router solicitations on", iface, flush=True)
    while True:
        data = sock.recv(1500)
        if data[:1] == b"\x85":  # 133
            with contextlib.suppress(OSError):  # br0 may still lack its link-local address
                sock.sendto(advert, ("ff02::1", 0, 0, index))


if __name__ == "__main__" and sys.argv[1:2] == ["advertise-nothing"]:
    advertise_nothing(sys.argv[2])
