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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from netns import kill_lab

QEMU = "qemu-system-x86_64"
TOOLS = (QEMU, "ganesha.nfsd", "rpcbind", "ip", "nsenter", "unshare", "apt-get", "dpkg-deb", "nft")
WAIT = 60.0  # seconds for a daemon to listen on a loaded 2-core machine


def missing_tools() -> list[str]:
    """What this machine lacks for a real boot (the test skips and names them)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not Path("/usr/lib/ipxe/qemu/efi-virtio.rom").exists():
        missing.append("ipxe-qemu")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


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
    ) -> Boot:
        """Power on a QEMU guest that network-boots from its ROM (iPXE) with `mac`, and wait until
        it powers off, prints `until`, or `timeout` passes; QEMU is killed in any case.

        TCG on purpose: the test must hold on machines without KVM (CI), and that is the slow
        case. `-no-reboot` turns a kernel panic or a reboot into an exit instead of a loop.
        `disk` is attached as the guest's virtio disk (/dev/vda); `on` maps console text to
        what to do, once, when it appears (e.g. stop a server under a running client).
        """
        tap = self.add_tap()
        argv = [
            QEMU, "-machine", "q35,accel=tcg", "-cpu", "max", "-m", "512", "-smp", "1",
            "-nographic", "-no-reboot",
            "-boot", "n", "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={mac}",
        ]  # fmt: skip
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
