"""Boot storm (issue 18): N clients power on within one second and each boots as a real one does.

Every client, in its own task: DHCP as the firmware (DISCOVER/OFFER/REQUEST/ACK, iPXE's
user-class, option 93), fetch `boot.ipxe` from its own address (the per-host script is chosen by
source IP), fetch the kernel and the initrd the script names, then DHCP again as the initramfs
(udhcpc: option 17 must name its tree). Client i starts at `spread * i / N`. The variants, in
the same run and taking turns run by run:

  rootfs TFTP      `rootfs serve` (DHCP + TFTP), clients ask windowsize 16, blksize 1468
  tftp-hpa         dnsmasq (DHCP) + in.tftpd (tftp-hpa 5.2), the same client requests; tftp-hpa
                   does not know RFC 7440, so its OACK leaves windowsize out and atftp falls back
                   to lockstep (as every client must, RFC 7440 §4)
  rootfs HTTP      `rootfs serve` (DHCP + HTTP)
  nginx            dnsmasq + nginx (sendfile)

Both servers know the same N hosts: rootfs from hosts.toml, dnsmasq from dhcp-host reservations
with each host's option 17 and 12 (as bench/dhcp.py's per-host dnsmasq). The peers' per-host
`boot.ipxe` is the very text rootfs generates, written to `ipxe/<ip>.ipxe` and chosen by source
address (tftp-hpa: a `-m` remap rule with `\\i`; nginx: `try_files /ipxe/$remote_addr.ipxe`).

Network: two namespaces joined by a veth pair (tests/netns.py), 192.168.232.0/22. The client
side carries all N addresses; DHCP goes through a relay address on the client side (giaddr, as
tests/dhcp_loadgen.py and perfdhcp do), so the servers answer by unicast and one socket serves
every simulated client. Kernel and initrd live on tmpfs, so no disk is measured; the servers'
state (lease journal, lease file, logs) is on the ordinary disk, as in a deployment.

The driver (this module with --client, run inside the client namespace) is a trio program that
sleeps until each client's start and does its DHCP with the rootfs packet codec. TFTP clients
are atftp processes, one per file (atftp speaks windowsize). atftp cannot choose its source
address, so a tiny LD_PRELOAD shim (built here with cc) turns its wildcard bind() into a bind to
the client's address. HTTP clients run in the driver by default: a GET per file whose body goes
socket -> pipe -> /dev/null by splice(2), so the clients cost little beside the servers (here
the clients share the servers' two cores; a curl process per file, `--http-client curl`, spends
about three times the server's CPU copying the bytes it throws away, and its process launches
delay the driver's DHCP into resends). Every fetch's launch is recorded, so the launch spread
is reported, and so is the CPU time of the clients beside the servers'.

Reported per variant: time until the last client is done (from the first scheduled start),
p50/p95 client time, failed clients (and why), retransmissions (DHCP resends; TFTP: atftp's
timeouts and, for rootfs, the server's own retransmits from its log; HTTP: connection retries
and TCP segments retransmitted), UDP receive-buffer drops in each namespace, CPU seconds.
Targets: no failed client; rootfs HTTP <= 1.25x dnsmasq+nginx; tftp-hpa >= 5x rootfs HTTP.

Run as root from the repository root; a full storm moves N x (kernel + initrd) per variant
(25 GB at the defaults) and the TFTP variants take minutes, so runs defaults to 1:

    python -m bench.storm [--clients 500] [--kernel-mb 10] [--initrd-mb 40] [--runs 1]
                          [--variants rootfs-tftp,tftp-hpa,rootfs-http,nginx] [--timeout 1200]
                          [--http-client splice|curl] [--keep DIR]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import TypedDict

import trio

from bench.common import REPO, Row, Timing, format_table
from bench.dhcp import MAC_BASE, PREFIX, dnsmasq_files, host_ip, make_site

sys.path.insert(0, str(REPO / "tests"))
from dhcp_loadgen import PRL
from netns import (
    CLIENT_ADDRESS,
    SERVER_ADDRESS,
    Namespace,
    NetnsPair,
    netns_pair,
    start_serve,
    stop,
)

from rootfs.netboot.dhcp.packet import (
    BOOTREQUEST,
    DHCPACK,
    DHCPDISCOVER,
    DHCPNAK,
    DHCPOFFER,
    DHCPREQUEST,
    OPT_BOOTFILE,
    OPT_CLIENT_ARCH,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST,
    OPT_REQUESTED_IP,
    OPT_ROOT_PATH,
    OPT_SERVER_ID,
    OPT_USER_CLASS,
    OPT_VENDOR_CLASS,
    SERVER_PORT,
    MalformedPacket,
    Packet,
    decode_untrusted,
    encode,
)

MiB = 1 << 20
MAX_CLIENTS = 1000  # the /22 holds 1,000 reservations (bench/dhcp.py's layout)
KERNEL, INITRD, SCRIPT = "vmlinuz", "initrd.img", "boot.ipxe"
TFTP_OPTIONS = ("blksize 1468", "windowsize 16")  # 1468: a full 1500-byte frame
HTTP_PORT = 80
TARGET_HTTP_VS_NGINX = 1.25  # rootfs HTTP time / dnsmasq+nginx time, at most
TARGET_HPA_VS_HTTP = 5.0  # tftp-hpa time / rootfs HTTP time, at least
DHCP_FIRST_TIMEOUT, DHCP_MAX_TIMEOUT, DHCP_TRIES = 1.0, 8.0, 6  # per message; 1+2+4+8+8+8 s
CURL_RETRIES = 5
Options = tuple[tuple[int, bytes], ...]
# What each boot stage says in its DHCP messages: iPXE in the firmware (BIOS), then busybox
# udhcpc in the initramfs; both ask for the root path (17).
FIRMWARE: Options = (
    (OPT_CLIENT_ARCH, b"\x00\x00"),  # RFC 4578 §2.1: x86 BIOS
    (OPT_VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"),
    (OPT_USER_CLASS, b"iPXE"),
    (OPT_PARAM_REQUEST, PRL),
)
INITRAMFS: Options = ((OPT_VENDOR_CLASS, b"udhcp 1.35.0"), (OPT_PARAM_REQUEST, PRL))
DRIVER_NICE = 10  # the driver runs at nice -10; the fetch processes it starts, at 0
NORMAL_PRIORITY = ("nice", "-n", str(DRIVER_NICE))
SPLICE_LOWAT = 256 << 10  # bytes the in-driver HTTP client waits for before it splices
STALL_SECONDS = 30  # curl gives up on a transfer that moved nothing for this long

# LD_PRELOAD shim: a wildcard bind() (atftp binds INADDR_ANY, with AF_UNSPEC) becomes a bind to
# $STORM_BIND, so each simulated client's TFTP requests come from its own address.
SHIM_C = r"""
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (!real) real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *ip = getenv("STORM_BIND");
    if (ip && addr && len >= sizeof(struct sockaddr_in)
        && (addr->sa_family == AF_UNSPEC || addr->sa_family == AF_INET)
        && ((const struct sockaddr_in *)addr)->sin_addr.s_addr == htonl(INADDR_ANY)) {
        struct sockaddr_in sin;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_port = ((const struct sockaddr_in *)addr)->sin_port;
        if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1)
            return real(fd, (const struct sockaddr *)&sin, sizeof sin);
    }
    return real(fd, addr, len);
}
"""

# Why the server's TCP retransmitted, when it did (/proc/net/netstat); on a veth pair nothing is
# lost on the wire, so these tell reordering (a sender moving between CPUs) from real drops.
TCP_LOSS = (
    "TcpExtTCPFastRetrans", "TcpExtTCPLossProbes", "TcpExtTCPTimeouts", "TcpExtTCPSACKReorder",
    "TcpExtTCPSpuriousRtxHostQueues", "TcpExtTCPSynRetrans", "TcpExtListenOverflows",
    "TcpExtListenDrops", "TcpExtTCPBacklogDrop",
)  # fmt: skip


# -- the client side: runs inside the client namespace (python -m bench.storm --client JSON) ------


@dataclass
class Client:
    """What one simulated client did; times in seconds from the storm's start (t0)."""

    index: int
    scheduled: float
    started: float | None = None  # its first DISCOVER left
    steps: dict[str, float] = field(default_factory=dict)  # step name -> time it ended
    failed: str | None = None
    dhcp_resends: int = 0
    fetch_retries: int = 0  # atftp "timeout: retrying", curl "Will retry", or HTTP reconnects
    spawned: list[tuple[str, float, float]] = field(default_factory=list)  # file, at, seconds


class StepFailed(Exception):
    """A client's boot step failed; the message says which and why."""


@dataclass(frozen=True)
class DriverConfig:
    """What the parent tells the driver (as JSON on its command line)."""

    server: str
    relay: str
    clients: int
    probe: int  # the reserve host's index: one boot before the storm, to prove the chain works
    protocol: str  # "tftp" or "http"
    spread: float
    timeout: float
    sizes: dict[str, int]  # the big files and their sizes
    scripts: str  # where clients write the boot.ipxe they fetched
    shim: str
    http_port: int
    http_client: str  # "splice" (in the driver) or "curl" (a process per file)


class ClientReport(TypedDict):
    """One client as the driver reports it; times in seconds from the storm's start."""

    i: int
    scheduled: float
    started: float | None
    steps: dict[str, float]
    failed: str | None
    dhcp_resends: int
    fetch_retries: int
    spawned: list[tuple[str, float, float]]  # file, launched at, seconds the launch took


class DriverReport(TypedDict):
    """The driver's whole answer: its clients, and what the client side spent."""

    timed_out: bool
    peak_processes: int
    cpu: dict[str, float]  # "driver" and "fetchers" (every atftp/curl), CPU seconds
    counters: dict[str, int]  # the client namespace's UDP and TCP counters, during the storm
    clients: list[ClientReport]


class RelayDhcp:
    """DHCP for every simulated client through one relay socket.

    Acting as a relay agent (giaddr set, hops 1, as tests/dhcp_loadgen.py and perfdhcp do), the
    driver gets every reply by unicast on its port 67, so one socket serves N clients without raw
    packets; replies are routed to their client's exchange by xid. Each message is resent with
    RFC 2131's doubling back-off, which is what the report counts as DHCP resends.
    """

    def __init__(self, sock: trio.socket.SocketType, server: str, relay: IPv4Address) -> None:
        self.sock = sock
        self.server = server
        self.relay = relay
        self.waiting: dict[int, trio.MemorySendChannel[Packet]] = {}
        self.xid = int.from_bytes(os.urandom(4), "big")

    async def receive(self) -> None:
        """Hand each reply to the exchange waiting for its xid, until cancelled."""
        while True:
            data = await self.sock.recv(4096)
            try:
                reply = decode_untrusted(data)
            except MalformedPacket:
                continue
            channel = self.waiting.get(reply.xid)
            if channel is not None:
                with contextlib.suppress(trio.WouldBlock):
                    channel.send_nowait(reply)

    async def dora(self, client: Client, mac: bytes, stage: Options) -> Packet:
        """DISCOVER, OFFER, REQUEST, ACK for `mac`, with the options of this boot `stage`."""
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        xid = self.xid
        send, receive = trio.open_memory_channel[Packet](16)
        self.waiting[xid] = send
        try:
            discover = self._packet(xid, mac, ((OPT_MESSAGE_TYPE, bytes([DHCPDISCOVER])), *stage))
            if client.started is None:
                client.started = trio.current_time()
            offer = await self._exchange(client, discover, receive, (DHCPOFFER,))
            server_id = offer.get(OPT_SERVER_ID) or IPv4Address(self.server).packed
            request = self._packet(xid, mac, (
                (OPT_MESSAGE_TYPE, bytes([DHCPREQUEST])), (OPT_SERVER_ID, server_id),
                (OPT_REQUESTED_IP, offer.yiaddr.packed), *stage,
            ))  # fmt: skip
            ack = await self._exchange(client, request, receive, (DHCPACK, DHCPNAK))
            if ack.message_type == DHCPNAK:
                raise StepFailed("DHCPNAK")
            return ack
        finally:
            del self.waiting[xid]

    async def _exchange(
        self,
        client: Client,
        data: bytes,
        replies: trio.MemoryReceiveChannel[Packet],
        wanted: tuple[int, ...],
    ) -> Packet:
        timeout = DHCP_FIRST_TIMEOUT
        for attempt in range(DHCP_TRIES):
            if attempt:
                client.dhcp_resends += 1
            await self.sock.sendto(data, (self.server, SERVER_PORT))
            with trio.move_on_after(timeout):
                while True:
                    reply = await replies.receive()
                    if reply.message_type in wanted:
                        return reply
            timeout = min(timeout * 2, DHCP_MAX_TIMEOUT)  # RFC 2131 §4.1: back off
        raise StepFailed(f"no DHCP reply after {DHCP_TRIES} tries")

    def _packet(self, xid: int, mac: bytes, options: Options) -> bytes:
        return encode(Packet(op=BOOTREQUEST, xid=xid, chaddr=mac, hops=1, giaddr=self.relay,
                             options=options))  # fmt: skip


class Driver:
    """The simulated clients of one storm, in one trio program inside the client namespace."""

    def __init__(self, config: DriverConfig) -> None:
        self.config = config
        self.running = 0  # fetch processes alive now
        self.peak = 0

    def fetch_argv(self, ip: str, name: str, out: str) -> tuple[list[str], dict[str, str] | None]:
        """The fetch command (and environment) of the client at `ip` for `name`."""
        server = self.config.server
        if self.config.protocol == "tftp":
            argv = ["atftp"]
            for option in TFTP_OPTIONS:
                argv += ["--option", option]
            env = {**os.environ, "LD_PRELOAD": self.config.shim, "STORM_BIND": ip}
            return [*NORMAL_PRIORITY, *argv, "-g", "-r", name, "-l", out, server, "69"], env
        return [
            *NORMAL_PRIORITY, "curl", "--no-progress-meter", "--fail", "--interface", ip,
            "--retry", str(CURL_RETRIES), "--retry-connrefused", "--retry-delay", "1",
            "--connect-timeout", "10", "--speed-limit", "1", "--speed-time", str(STALL_SECONDS),
            "-o", out, "-w", "storm: %{http_code} %{size_download}\\n",
            f"http://{server}:{self.config.http_port}/{name}",
        ], None  # fmt: skip

    async def fetch(self, client: Client, ip: str, name: str, out: str) -> None:
        """Run one fetch process to its end; a failed or short transfer fails the client."""
        if self.config.protocol == "http" and self.config.http_client == "splice":
            await self.fetch_http(client, ip, name, out)
            return
        argv, env = self.fetch_argv(ip, name, out)
        before = trio.current_time()
        proc = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
        launched = trio.current_time()
        client.spawned.append((name, launched, launched - before))
        self.running += 1
        self.peak = max(self.peak, self.running)
        output = bytearray()
        try:
            assert proc.stdout is not None
            async with proc.stdout:
                while chunk := await proc.stdout.receive_some(65536):
                    output += chunk
            await proc.wait()
        finally:
            self.running -= 1
            if proc.returncode is None:  # cancelled: the storm timed out
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
        text = output.decode(errors="replace")
        client.fetch_retries += text.count("timeout: retrying") + text.count("Will retry")
        if proc.returncode != 0:
            lines = [line for line in text.splitlines() if line.strip()] or ["no output"]
            said = next((line for line in lines if "error" in line.lower()), lines[-1])
            raise StepFailed(f"{name}: exit {proc.returncode}: {said[:120]}")
        if self.config.protocol == "http":  # atftp says nothing of sizes; its exit status must do
            got = re.findall(r"storm: (\d+) (\d+)", text)
            expected = self.config.sizes.get(name)
            if not got or (expected is not None and int(got[-1][1]) != expected):
                raise StepFailed(f"{name}: incomplete ({got[-1:] or text[:80]!r})")

    async def fetch_http(self, client: Client, ip: str, name: str, out: str) -> None:
        """GET `name` from `ip` in this process: the body goes socket -> pipe -> /dev/null by
        splice(2), so a client costs a few syscalls per socket buffer, not a copy of every byte
        (curl's cost on this machine would be the simulator's, not the server's). Connection
        errors are retried as curl --retry --retry-connrefused does; a short body fails."""
        for attempt in range(CURL_RETRIES + 1):
            sock = trio.socket.socket()
            try:
                await sock.bind((ip, 0))
                before = trio.current_time()
                with trio.fail_after(10):
                    await sock.connect((self.config.server, self.config.http_port))
            except (OSError, trio.TooSlowError) as e:
                sock.close()
                if attempt == CURL_RETRIES:
                    raise StepFailed(f"{name}: connect: {type(e).__name__}: {e}") from None
                client.fetch_retries += 1
                await trio.sleep(1)
                continue
            launched = trio.current_time()
            client.spawned.append((name, launched, launched - before))
            self.running += 1
            self.peak = max(self.peak, self.running)
            try:
                await self._get(sock, name, out)
            except (OSError, trio.TooSlowError) as e:
                raise StepFailed(f"{name}: {type(e).__name__}: {e}") from None
            finally:
                self.running -= 1
                sock.close()
            return

    async def _get(self, sock: trio.socket.SocketType, name: str, out: str) -> None:
        host = f"{self.config.server}:{self.config.http_port}"
        await sock.send(f"GET /{name} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: storm\r\n"
                        "Connection: close\r\n\r\n".encode())  # fmt: skip
        head = b""
        while b"\r\n\r\n" not in head:
            with trio.fail_after(STALL_SECONDS):
                chunk = await sock.recv(65536)
            if not chunk:
                raise StepFailed(f"{name}: connection closed in the response head")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if b" 200 " not in status + b" " or length is None:
            raise StepFailed(f"{name}: {status.decode(errors='replace')!r}")
        want = int(length[1])
        if out != "/dev/null":  # a script: small, kept
            while len(body) < want:
                with trio.fail_after(STALL_SECONDS):
                    chunk = await sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            Path(out).write_bytes(body)
            got = len(body)
        else:
            got = len(body) + await _splice_to_null(sock, want - len(body))
        if got != want:
            raise StepFailed(f"{name}: {got} of {want} bytes")

    async def boot(self, client: Client, dhcp: RelayDhcp, big: bool) -> None:
        """One client's boot, from its scheduled start; `big`: fetch the kernel and initrd."""
        i = client.index
        mac = (MAC_BASE + i).to_bytes(6, "big")
        ip = str(host_ip(i))
        try:
            await trio.sleep_until(client.scheduled)
            ack = await dhcp.dora(client, mac, FIRMWARE)
            if str(ack.yiaddr) != ip:
                raise StepFailed(f"firmware DHCP gave {ack.yiaddr}, not {ip}")
            bootfile = (ack.get(OPT_BOOTFILE) or ack.file).rstrip(b"\0").decode(errors="replace")
            if not bootfile.endswith(SCRIPT):
                raise StepFailed(f"boot file {bootfile!r}, not {SCRIPT}")
            client.steps["dhcp"] = trio.current_time()
            script = Path(self.config.scripts, f"{i}.ipxe")
            with contextlib.suppress(FileNotFoundError):
                script.unlink()
            await self.fetch(client, ip, SCRIPT, str(script))
            names = _script_files(script.read_text(errors="replace"), f"h{i}")
            client.steps["script"] = trio.current_time()
            for name in names if big else []:
                if name not in self.config.sizes:
                    raise StepFailed(f"the script names {name!r}, which is not served")
                await self.fetch(client, ip, name, "/dev/null")
                client.steps[name] = trio.current_time()
            ack = await dhcp.dora(client, mac, INITRAMFS)
            root = (ack.get(OPT_ROOT_PATH) or b"").decode(errors="replace")
            if str(ack.yiaddr) != ip or not root.split(",")[0].endswith(f"/{ip}"):
                raise StepFailed(f"initramfs DHCP gave {ack.yiaddr} root {root!r}")
            client.steps["done"] = trio.current_time()
        except StepFailed as e:
            client.failed = str(e)
        except OSError as e:  # no process or socket could be had: this client fails
            client.failed = f"{type(e).__name__}: {e}"
        client.steps["end"] = trio.current_time()

    async def run(self) -> DriverReport | dict[str, str]:
        """A probe boot, then the storm; the report of every client."""
        config = self.config
        sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 << 20)
        await sock.bind((config.relay, SERVER_PORT))
        dhcp = RelayDhcp(sock, config.server, IPv4Address(config.relay))
        clients = [Client(i, 0.0) for i in range(config.clients)]
        with sock:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(dhcp.receive)
                # The reserve host boots first (no big files): the chain works end to end, or
                # the storm is not worth starting.
                probe = Client(config.probe, trio.current_time())
                with trio.move_on_after(60):
                    await self.boot(probe, dhcp, False)
                if probe.failed or "done" not in probe.steps:
                    nursery.cancel_scope.cancel()
                    return {"probe_failed": probe.failed or "timed out"}
                await trio.sleep(0.5)
                counters_before, usage_before = read_counters(Path("/proc/self/net")), _usage()
                t0 = trio.current_time() + 0.2
                for c in clients:
                    c.scheduled = t0 + config.spread * c.index / config.clients
                with trio.move_on_after(config.timeout + 0.2) as scope:
                    async with trio.open_nursery() as storm:
                        for c in clients:
                            storm.start_soon(self.boot, c, dhcp, True)
                counters_after, usage_after = read_counters(Path("/proc/self/net")), _usage()
                nursery.cancel_scope.cancel()
        for c in clients:
            if c.failed is None and "done" not in c.steps:
                c.failed = "timed out"

        def rel(t: float) -> float:
            return round(t - t0, 4)

        return {
            "timed_out": scope.cancelled_caught,
            "peak_processes": self.peak,
            "cpu": {k: round(usage_after[k] - usage_before[k], 3) for k in usage_after},
            "counters": {k: v - counters_before.get(k, 0) for k, v in counters_after.items()},
            "clients": [
                {
                    "i": c.index,
                    "scheduled": rel(c.scheduled),
                    "started": None if c.started is None else rel(c.started),
                    "steps": {k: rel(v) for k, v in c.steps.items()},
                    "failed": c.failed,
                    "dhcp_resends": c.dhcp_resends,
                    "fetch_retries": c.fetch_retries,
                    "spawned": [(n, rel(at), round(took, 4)) for n, at, took in c.spawned],
                }
                for c in clients
            ],
        }


async def _splice_to_null(sock: trio.socket.SocketType, count: int) -> int:
    """Discard up to `count` bytes from `sock` without copying them; the bytes discarded."""
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    done = 0
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 1 << 20)
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        lowat = 0
        while done < count:
            # Wake for a good part of a socket buffer, not for every segment: the driver's cost
            # per byte is its wake-ups.
            if lowat != (want := min(count - done, SPLICE_LOWAT)):
                lowat = want
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVLOWAT, lowat)
            try:
                n = os.splice(sock.fileno(), write, min(count - done, 1 << 20), flags=flags)
            except BlockingIOError:
                with trio.fail_after(STALL_SECONDS):
                    await trio.lowlevel.wait_readable(sock)
                continue
            if n == 0:  # the server closed early
                break
            done += n
            while n:
                n -= os.splice(read, null, n)
        return done
    finally:
        for fd in (read, write, null):
            os.close(fd)


def _script_files(text: str, host: str) -> list[str]:
    """The files an iPXE script makes a client fetch (kernel, then initrd), once it is sure the
    script is this host's own (rootfs's header says `host NAME`)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#!ipxe":
        raise StepFailed(f"{SCRIPT} is not an iPXE script: {text[:60]!r}")
    if not any(re.search(rf"\bhost {re.escape(host)}$", line) for line in lines[1:3]):
        raise StepFailed(f"{SCRIPT} is not {host}'s: {lines[1:2]!r}")
    names = [line.split()[1] for line in lines if line.split()[:1] in (["kernel"], ["initrd"])]
    if not names:
        raise StepFailed(f"{SCRIPT} names no kernel")
    return names


def _usage() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"driver": own.ru_utime + own.ru_stime, "fetchers": kids.ru_utime + kids.ru_stime}


def read_counters(net: Path) -> dict[str, int]:
    """The UDP and TCP counters of the network namespace whose /proc/<pid>/net is `net`."""
    values: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        lines = (net / name).read_text().splitlines()
        for head, vals in zip(lines[::2], lines[1::2], strict=False):
            group, _, keys = head.partition(":")
            if group in ("Udp", "Tcp", "TcpExt"):
                for key, value in zip(keys.split(), vals.partition(":")[2].split(), strict=False):
                    values[f"{group}{key}"] = int(value)
    return values


# -- the servers ----------------------------------------------------------------------------------


@dataclass
class Lab:
    """Everything a variant needs: the namespaces, the site, both boot directories, the shim."""

    pair: NetnsPair
    work: Path  # on disk: site, state, logs
    boot: Path  # on tmpfs: rootfs's boot directory
    peer_boot: Path  # on tmpfs: the peers' (same kernel and initrd inodes, ipxe/<ip>.ipxe)
    scripts: Path  # on tmpfs: where clients write the boot.ipxe they fetched
    shim: Path
    site: Path
    clients: int
    serve_flags: frozenset[str]
    cpu: ServerCpu


@dataclass
class Running:
    """The servers of one variant while they run: their processes and where they log."""

    procs: list[subprocess.Popen[bytes]]
    log: Path | None = None  # rootfs's serve.log
    log_offset: int = 0


@dataclass(frozen=True)
class Variant:
    """One boot server set-up: how to start it, and which protocol its clients fetch with."""

    name: str
    label: str
    protocol: str  # "tftp" or "http"
    start: Callable[[Lab], contextlib.AbstractContextManager[Running]]


@contextlib.contextmanager
def _rootfs(lab: Lab, protocol: str) -> Iterator[Running]:
    if protocol == "http" and "--http-port" not in lab.serve_flags:
        raise _NotRun("rootfs serve has no --http-port (the HTTP front end has not landed)")
    args = ["--http-port", str(HTTP_PORT)] if protocol == "http" else []
    if protocol == "tftp" and "--no-http" in lab.serve_flags:
        args.append("--no-http")
    if protocol == "http" and "--no-tftp" in lab.serve_flags:
        args.append("--no-tftp")
    shutil.rmtree(lab.site / "state", ignore_errors=True)  # no leases from an earlier run
    log = lab.site / "serve.log"
    offset = log.stat().st_size if log.exists() else 0
    proc = start_serve(lab.pair.server, lab.site, *args)
    try:
        yield Running([proc], log, offset)
    finally:
        stop(proc, timeout=15)


@contextlib.contextmanager
def _dnsmasq(lab: Lab, bootfile: str) -> Iterator[subprocess.Popen[bytes]]:
    root = lab.work / "dnsmasq"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    argv = [
        f"--dhcp-boot={bootfile},,{SERVER_ADDRESS}" if a.startswith("--dhcp-boot=") else a
        for a in dnsmasq_files(root, lab.clients + 1)
    ]
    proc = _popen(lab.pair.server, ["dnsmasq", f"--interface={lab.pair.server.interface}", *argv],
                  lab.work / "dnsmasq.log")  # fmt: skip
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def _tftp_hpa(lab: Lab) -> Iterator[Running]:
    remap = lab.work / "tftpd.remap"
    remap.write_text("r ^boot\\.ipxe$ ipxe/\\i.ipxe\n")  # \i: the client's address
    with _dnsmasq(lab, SCRIPT) as dnsmasq:
        argv = ["in.tftpd", "-L", "-a", f"{SERVER_ADDRESS}:69", "-s", str(lab.peer_boot),
                "-m", str(remap)]  # fmt: skip
        tftpd = _popen(lab.pair.server, argv, lab.work / "tftpd.log")
        try:
            yield Running([dnsmasq, tftpd])
        finally:
            stop(tftpd, timeout=15)


@contextlib.contextmanager
def _nginx(lab: Lab) -> Iterator[Running]:
    prefix = lab.work / "nginx"
    shutil.rmtree(prefix, ignore_errors=True)
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""daemon off;
user root;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    log_format storm '$remote_addr "$request" $status $body_bytes_sent $request_time';
    access_log {prefix}/access.log storm;
    sendfile on;
    tcp_nopush on;
    server {{
        listen {SERVER_ADDRESS}:{HTTP_PORT};
        root {lab.peer_boot};
        location = /{SCRIPT} {{ try_files /ipxe/$remote_addr.ipxe =404; }}
    }}
}}
""")
    with _dnsmasq(lab, f"http://{SERVER_ADDRESS}/{SCRIPT}") as dnsmasq:
        argv = ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
        proc = _popen(lab.pair.server, argv, prefix / "stderr.log")
        try:
            yield Running([dnsmasq, proc])
        finally:
            stop(proc, timeout=15)


class _NotRun(Exception):
    """A variant this tree cannot run; the message says why."""


def _popen(ns: Namespace, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = ns.popen(argv, stdout=out, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # binds within this; the driver's probe client proves the rest
    if proc.poll() is not None:
        raise SystemExit(f"bench: {argv[0]} exited at once: {log.read_text()[-2000:]}")
    return proc


VARIANTS = (
    Variant("rootfs-tftp", "rootfs TFTP (windowsize 16)", "tftp",
            lambda lab: _rootfs(lab, "tftp")),
    Variant("tftp-hpa", "dnsmasq + tftp-hpa (lockstep)", "tftp", _tftp_hpa),
    Variant("rootfs-http", "rootfs HTTP", "http", lambda lab: _rootfs(lab, "http")),
    Variant("nginx", "dnsmasq + nginx", "http", _nginx),
)  # fmt: skip


# -- one storm ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One storm against one variant, as measured."""

    variant: str
    seconds: float  # first scheduled start to last client done (the timeout if not all were)
    complete: bool  # every client finished (done or failed) before the timeout
    driver: DriverReport
    server_cpu: float
    machine: dict[str, float]  # the whole machine's CPU seconds: busy, softirq, total
    server_counters: dict[str, int]
    server_retransmits: int | None  # rootfs TFTP's own count, from its log
    bytes_each: int  # kernel + initrd
    server_notes: str = ""

    @property
    def clients(self) -> list[ClientReport]:
        return self.driver["clients"]

    @property
    def failed(self) -> list[ClientReport]:
        return [c for c in self.clients if c["failed"]]


def run_storm(lab: Lab, variant: Variant, args: argparse.Namespace) -> Outcome:
    config = DriverConfig(
        server=SERVER_ADDRESS, relay=CLIENT_ADDRESS, clients=lab.clients, probe=lab.clients,
        protocol=variant.protocol, spread=args.spread, timeout=args.timeout,
        sizes={KERNEL: args.kernel_mb * MiB, INITRD: args.initrd_mb * MiB},
        scripts=str(lab.scripts), shim=str(lab.shim), http_port=HTTP_PORT,
        http_client=args.http_client,
    )  # fmt: skip
    with variant.start(lab) as running:
        server_net = Path(f"/proc/{running.procs[-1].pid}/net")
        before = read_counters(server_net)
        lab.cpu.join(lab.pair.server.name)
        cpu_before, machine_before = lab.cpu.seconds(lab.pair.server.name), _machine_cpu()
        errors = lab.work / f"driver-{variant.name}.log"
        with open(errors, "ab") as err:
            driver = lab.pair.client.popen(
                [sys.executable, "-m", "bench.storm", "--client", json.dumps(asdict(config))],
                cwd=REPO, stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        try:
            out, _ = driver.communicate(timeout=args.timeout + 180)
        except subprocess.TimeoutExpired:
            stop(driver)
            raise SystemExit(f"bench: the storm driver hung; see {errors}") from None
        after = read_counters(server_net)
        server_cpu = lab.cpu.seconds(lab.pair.server.name) - cpu_before
        machine = {k: v - machine_before[k] for k, v in _machine_cpu().items()}
    if driver.returncode != 0 or not out.strip():
        raise SystemExit(f"bench: the storm driver failed: {errors.read_text()[-3000:]}")
    answer = json.loads(out)
    if "probe_failed" in answer:
        raise _NotRun(f"the probe client did not boot: {answer['probe_failed']}")
    result: DriverReport = answer
    ends = [c["steps"]["end"] for c in result["clients"] if "end" in c["steps"]]
    seconds = float(args.timeout) if result["timed_out"] else max(ends)
    retransmits, notes = _rootfs_log(running)
    return Outcome(
        variant.name, seconds, not result["timed_out"], result, server_cpu, machine,
        {k: after[k] - before.get(k, 0) for k in after}, retransmits,
        sum(config.sizes.values()), notes,
    )  # fmt: skip


def _machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine by /proc/stat: network softirq work is charged to no
    process (nor cgroup), so this shows whether the machine, not just the processes, was full."""
    # user nice system idle iowait irq softirq steal, in clock ticks
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick, total, idle = os.sysconf("SC_CLK_TCK"), sum(fields), fields[3] + fields[4]
    return {"busy": (total - idle) / tick, "softirq": fields[6] / tick, "total": total / tick}


def _rootfs_log(running: Running) -> tuple[int | None, str]:
    """rootfs TFTP's retransmits and unfinished transfers, and its HTTP counters, from its log."""
    if running.log is None:
        return None, ""
    with open(running.log, "rb") as f:
        f.seek(running.log_offset)
        text = f.read().decode(errors="replace")
    retransmits = sum(int(n) for n in re.findall(r"\bretransmits=(\d+)", text))
    outcomes = collections.Counter(re.findall(r"\btftp (\S+) \d+\.\d+\.\d+\.\d+:\d+ ", text))
    notes = [f"tftp {k}={v}" for k, v in sorted(outcomes.items()) if k != "done"]
    notes += re.findall(r"serve: ((?:dhcp|tftp|http) \w+=.*)", text)
    errors = [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line]
    notes += [f"{len(errors)} tracebacks or ERROR lines in serve.log"] if errors else []
    return (retransmits if outcomes else None), "; ".join(notes)


def _namespace_pids(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


class ServerCpu:
    """CPU time of the servers and of every process they fork.

    tftp-hpa forks a process per transfer and ignores SIGCHLD, so the kernel adds its children's
    time to nobody's cutime: only a cgroup sees it. The servers join a cgroup v2 of our own once
    they run (its `cpu.stat` is there whatever controllers are enabled); without cgroup v2 the
    count falls back to the live processes' times, which misses tftp-hpa's children.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    @classmethod
    @contextlib.contextmanager
    def open(cls) -> Iterator[ServerCpu]:
        root = next(
            (Path(line.split()[1]) for line in Path("/proc/self/mounts").read_text().splitlines()
             if line.split()[2:3] == ["cgroup2"]),
            None,
        )  # fmt: skip
        path = None if root is None else root / f"rootfs-bench-storm-{os.getpid()}"
        try:
            if path is not None:
                path.mkdir()
        except OSError:
            path = None
        try:
            yield cls(path)
        finally:
            for _ in range(50):  # empty once the last server process has been reaped
                if path is None or not path.exists():
                    break
                try:
                    path.rmdir()
                except OSError:
                    time.sleep(0.1)

    def join(self, ns: str) -> None:
        """Move every process of namespace `ns` (the servers, started) into the cgroup."""
        if self.path is not None:
            for pid in _namespace_pids(ns):
                with contextlib.suppress(OSError):  # gone already
                    (self.path / "cgroup.procs").write_text(str(pid))

    def seconds(self, ns: str) -> float:
        if self.path is not None:
            stat = (self.path / "cpu.stat").read_text().split()
            return int(stat[stat.index("usage_usec") + 1]) / 1e6
        total = 0
        for pid in _namespace_pids(ns):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return total / os.sysconf("SC_CLK_TCK")


# -- the lab --------------------------------------------------------------------------------------


def build_shim(work: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("bench: no C compiler for the bind shim (Debian package gcc)")
    source, shim = work / "storm-bind.c", work / "storm-bind.so"
    source.write_text(SHIM_C)
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", shim, source, "-ldl"], check=True)
    return shim


def write_boot_files(boot: Path, peer_boot: Path, sizes: dict[str, int]) -> None:
    """Random kernel and initrd on tmpfs; the peers' directory holds the same inodes."""
    boot.mkdir()
    (peer_boot / "ipxe").mkdir(parents=True)
    for name, size in sizes.items():
        with open(boot / name, "wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
            f.write(os.urandom(size % MiB))
        os.link(boot / name, peer_boot / name)


def write_peer_scripts(site: Path, peer_boot: Path) -> None:
    """Each host's `boot.ipxe` exactly as rootfs generates it, as `ipxe/<ip>.ipxe`."""
    from rootfs.config.site import load_site
    from rootfs.netboot.boot.files import IPXE_SCRIPT, host_configs

    loaded = load_site(site, environ={})
    for host in loaded.hosts:
        text = host_configs(loaded, host)[IPXE_SCRIPT]
        (peer_boot / "ipxe" / f"{host.ip}.ipxe").write_text(text)


def add_client_addresses(pair: NetnsPair, count: int) -> None:
    """Every host's address on the client side, so each client fetches from its own."""
    batch = "".join(
        f"addr add {host_ip(i)}/{PREFIX} dev {pair.client.interface}\n" for i in range(count)
    )
    subprocess.run(["ip", "-n", pair.client.name, "-batch", "-"], input=batch.encode(),
                   check=True, capture_output=True)  # fmt: skip


def serve_flags() -> frozenset[str]:
    """The options this tree's `rootfs serve` knows (the HTTP ones arrive with its front end)."""
    out = subprocess.run([sys.executable, "-m", "rootfs", "serve", "--help"],
                         capture_output=True, text=True, cwd=REPO, check=True)  # fmt: skip
    return frozenset(re.findall(r"--[a-z][a-z-]+", out.stdout))


# -- the report -----------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}/{max(values):.2f}" if values else "-"


def _seconds(outcome: Outcome) -> str:
    return f"{outcome.seconds:.1f}" + ("" if outcome.complete else " TIMEOUT")


def details(outcome: Outcome, variant: Variant) -> tuple[dict[str, str], dict[str, str]]:
    """Two rows for the variant's last run: how the clients fared, and what the storm cost."""
    clients, counters = outcome.clients, outcome.driver["counters"]
    times = [
        c["steps"]["done"] - c["started"]
        for c in clients
        if "done" in c["steps"] and c["started"] is not None
    ]
    reasons = collections.Counter(str(c["failed"]).split(":")[0] for c in outcome.failed)
    retries = sum(c["fetch_retries"] for c in clients)
    # How long each DHCP stage took: first DISCOVER to ACK, and end of the initrd to ACK.
    fw = [c["steps"]["dhcp"] - c["started"] for c in clients
          if "dhcp" in c["steps"] and c["started"] is not None]  # fmt: skip
    late = [c["steps"]["done"] - c["steps"][INITRD] for c in clients
            if "done" in c["steps"] and INITRD in c["steps"]]  # fmt: skip
    if variant.protocol == "tftp":
        retrans = f"atftp timeouts {retries}"
        if outcome.server_retransmits is not None:
            retrans += f", server {outcome.server_retransmits}"
    else:
        retrans = (f"connect retries {retries}, TCP segs "
                   f"{outcome.server_counters.get('TcpRetransSegs', 0)}/"
                   f"{counters.get('TcpRetransSegs', 0)}")  # fmt: skip
    fared = {
        "variant": variant.label,
        "last done s": _seconds(outcome),
        "p50 s": f"{statistics.median(times):.1f}" if times else "-",
        "p95 s": f"{_pct(times, 0.95):.1f}" if times else "-",
        "failed": str(len(outcome.failed))
        + "".join(f" ({k}: {v})" for k, v in reasons.most_common(2)),
        "DHCP resends": str(sum(c["dhcp_resends"] for c in clients)),
        "DHCP s fw/initramfs p50/max": f"{_spread(fw)} / {_spread(late)}",
        "retransmissions (srv/cli)": retrans,
        "UDP rcvbuf drops srv/cli": f"{outcome.server_counters.get('UdpRcvbufErrors', 0)}/"
        f"{counters.get('UdpRcvbufErrors', 0)}",
    }
    starts = [c["started"] for c in clients if c["started"] is not None]
    lags = [c["started"] - c["scheduled"] for c in clients if c["started"] is not None]
    spawned = [s for c in clients for s in c["spawned"]]
    kernel = [at for name, at, _ in spawned if name == KERNEL]
    spawn_ms = sorted(took * 1000 for _, _, took in spawned)
    cpu = outcome.driver["cpu"]
    moved = outcome.bytes_each * sum(1 for c in clients if "done" in c["steps"])
    cost = {
        "variant": variant.label,
        "GiB/s": f"{moved / outcome.seconds / (1 << 30):.2f}",
        "CPU s server": f"{outcome.server_cpu:.1f}",
        "CPU s clients (driver+fetchers)": f"{cpu['driver'] + cpu['fetchers']:.1f} "
        f"({cpu['driver']:.1f}+{cpu['fetchers']:.1f})",
        "machine busy (softirq)": f"{outcome.machine['busy'] / outcome.machine['total']:.0%} "
        f"({outcome.machine['softirq']:.1f} s)",
        "DISCOVERs spread / worst lag": f"{max(starts) - min(starts):.2f} s / "
        f"{max(lags) * 1000:.0f} ms"
        if starts
        else "-",
        "kernel fetches started within": f"{max(kernel) - min(kernel):.2f} s" if kernel else "-",
        "launch p50/max": f"{statistics.median(spawn_ms):.1f}/{spawn_ms[-1]:.1f} ms"
        if spawn_ms
        else "-",
        "peak fetches": str(outcome.driver["peak_processes"]),
    }
    return fared, cost


def text_table(rows: Sequence[dict[str, str]]) -> str:
    header = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def report(
    outcomes: dict[str, list[Outcome]], not_run: dict[str, str], args: argparse.Namespace
) -> str:
    timings = {
        name: Timing(
            next(v.label for v in VARIANTS if v.name == name)
            + ("" if all(o.complete for o in runs) else " (TIMEOUT)"),
            tuple(o.seconds for o in runs),
        )
        for name, runs in outcomes.items()
        if runs
    }
    clean = {
        name: all(not o.failed and o.complete for o in runs) for name, runs in outcomes.items()
    }
    rows: list[Row] = []
    if "rootfs-http" in timings:
        peer = timings.get("nginx")
        met = None
        if peer is not None:
            met = timings["rootfs-http"].median / peer.median <= TARGET_HTTP_VS_NGINX
            met = met and clean["rootfs-http"]
        rows.append(Row(timings["rootfs-http"], peer, f"<= {TARGET_HTTP_VS_NGINX}x, 0 failed", met))
    if "nginx" in timings:
        rows.append(Row(timings["nginx"]))
    if "tftp-hpa" in timings:
        peer = timings.get("rootfs-http")
        met = (
            None if peer is None else timings["tftp-hpa"].median / peer.median >= TARGET_HPA_VS_HTTP
        )
        rows.append(
            Row(timings["tftp-hpa"], peer, f">= {TARGET_HPA_VS_HTTP}x" if peer else "", met)
        )
    if "rootfs-tftp" in timings:
        met = clean["rootfs-tftp"] if outcomes["rootfs-tftp"] else None
        rows.append(Row(timings["rootfs-tftp"], timings.get("tftp-hpa"), "0 failed", met))
    mb = args.kernel_mb + args.initrd_mb
    out = [
        f"Boot storm: {args.clients} clients starting within {args.spread:g} s, each DHCP, "
        f"{SCRIPT}, {args.kernel_mb} + {args.initrd_mb} MiB, DHCP again "
        f"({args.clients * mb / 1024:.1f} GiB per storm); {args.runs} run(s) per variant, "
        "taking turns; time from the first scheduled start to the last client done.",
        "",
        format_table(rows) if rows else "(no variant ran)",
        "",
        "Last run of each variant. Client time: its first DISCOVER to its second ACK. "
        "Retransmissions: TFTP, atftp's timeouts and rootfs's own count from its log (tftp-hpa "
        "keeps none); HTTP, connection retries (curl --retry, or the in-driver client's) and "
        "the TCP segments retransmitted in the server/client namespace. UDP rcvbuf drops: "
        "datagrams dropped on a full socket buffer.",
        "",
    ]
    detail_rows = [details(runs[-1], next(v for v in VARIANTS if v.name == name))
                   for name, runs in outcomes.items() if runs]  # fmt: skip
    if detail_rows:
        out += [text_table([fared for fared, _ in detail_rows]), ""]
        out += [
            "What it cost: CPU of the servers (a cgroup: with every process they forked) and "
            "of the clients (the driver, and the atftp or curl processes); how busy the whole "
            "machine was (network softirq work is charged to no process); when the first "
            "DISCOVERs left, against the schedule; when "
            "the kernel fetches started; launching one fetch (a process, or the in-driver HTTP "
            "client's TCP connect); the most fetches in flight at once.",
            "",
            text_table([cost for _, cost in detail_rows]),
        ]
    for name, runs in outcomes.items():
        for o in runs[-1:]:
            if o.server_notes:
                out.append(f"  {name}: {o.server_notes}")
            tcp = [f"{k.removeprefix('TcpExt')}={o.server_counters[k]}" for k in TCP_LOSS
                   if o.server_counters.get(k)]  # fmt: skip
            if tcp:
                out.append(f"  {name}: server TCP: {' '.join(tcp)}")
            for c in o.failed[:3]:
                out.append(f"  {name}: client h{c['i']} failed: {c['failed']}")
    for name, why in not_run.items():
        out.append(f"  {name}: not run: {why}")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--client"]:
        # The driver is every client's firmware at once: it must not queue behind the 500
        # fetch processes it starts (each a client's NIC, at normal priority), or its DHCP
        # timeouts would measure this machine's scheduler rather than the servers.
        os.nice(-DRIVER_NICE)
        driver = Driver(DriverConfig(**json.loads(argv[1])))
        print(json.dumps(trio.run(driver.run)), flush=True)
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.storm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--kernel-mb", type=int, default=10, help="MiB")
    parser.add_argument("--initrd-mb", type=int, default=40, help="MiB")
    parser.add_argument("--runs", type=int, default=1, help="storms per variant, taking turns")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds the starts span")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per storm")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                        help="comma list of " + ", ".join(v.name for v in VARIANTS))  # fmt: skip
    parser.add_argument("--http-client", choices=("splice", "curl"), default="splice",
                        help="HTTP clients: in the driver, splicing to /dev/null (default), "
                        "or a curl process per file")  # fmt: skip
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the site, logs and state here (a new directory)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 1 to {MAX_CLIENTS} (the lab's /22)")
    names = args.variants.split(",")
    if unknown := set(names) - {v.name for v in VARIANTS}:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    chosen = [v for v in VARIANTS if v.name in names]
    if args.keep is not None:
        args.keep.mkdir(parents=True)  # refuses an existing one: its logs would mix
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (network namespaces)")
    needed = {"atftp": "atftp", "curl": "curl", "dnsmasq": "dnsmasq-base",
              "in.tftpd": "tftpd-hpa", "nginx": "nginx-light", "ip": "iproute2"}  # fmt: skip
    missing = [pkg for tool, pkg in needed.items() if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)}; run 'make bench-packages'")
    # SIGTERM unwinds like Ctrl-C: every server and client is stopped, the namespaces deleted.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    outcomes: dict[str, list[Outcome]] = {v.name: [] for v in chosen}
    not_run: dict[str, str] = {}
    with (
        (
            contextlib.nullcontext(str(args.keep))
            if args.keep
            else tempfile.TemporaryDirectory(prefix="rootfs-bench-storm-")
        ) as disk,
        tempfile.TemporaryDirectory(prefix="rootfs-bench-storm-", dir="/dev/shm") as shm,
        ServerCpu.open() as cpu,  # removed after the namespaces, once no server is left
        netns_pair(client_address=CLIENT_ADDRESS, prefix=PREFIX) as pair,
    ):
        work, fast = Path(disk), Path(shm)
        os.chmod(fast, 0o755)  # in.tftpd and nginx's workers read as nobody
        hosts = args.clients + 1  # the last one is the driver's probe client
        add_client_addresses(pair, hosts)
        sizes = {KERNEL: args.kernel_mb * MiB, INITRD: args.initrd_mb * MiB}
        write_boot_files(fast / "boot", fast / "peer", sizes)
        site = make_site(work / "site", pair.server.interface, hosts)
        with open(site / "site.toml", "a") as f:
            f.write(f'\n[tftp]\nroot = "{fast / "boot"}"\n')
        write_peer_scripts(site, fast / "peer")
        (fast / "scripts").mkdir()
        lab = Lab(pair, work, fast / "boot", fast / "peer", fast / "scripts",
                  build_shim(work), site, args.clients, serve_flags(), cpu)  # fmt: skip
        for run in range(args.runs):
            for variant in chosen:
                if variant.name in not_run:
                    continue
                try:
                    outcome = run_storm(lab, variant, args)
                except _NotRun as e:
                    not_run[variant.name] = str(e)
                    print(f"  {variant.label}: not run: {e}", file=sys.stderr, flush=True)
                    continue
                outcomes[variant.name].append(outcome)
                print(f"  {variant.label}: run {run + 1}/{args.runs}: {_seconds(outcome)} s, "
                      f"{len(outcome.failed)} failed", file=sys.stderr, flush=True)  # fmt: skip
    print()
    print(report(outcomes, not_run, args))


if __name__ == "__main__":
    main()
