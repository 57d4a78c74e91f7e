"""The DHCP server: sockets, the commit loop and the clock around the pure responder.

One UDP socket per interface, bound to 0.0.0.0:67 with SO_BINDTODEVICE, so every packet's link is
known without ancillary data and broadcast replies leave by the interface the request came in on
(multi-subnet servers answer right). An ACK goes out only after its lease is durable in the journal:
the commit loop gathers every lease decided while the previous fdatasync ran (group commit).
`rootfs serve` runs it (alone with ``--no-tftp``) and owns its reloads and signals.
"""

from __future__ import annotations

import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import trio

from rootfs.config.site import Site
from rootfs.errors import UserError
from rootfs.netboot.dhcp.journal import LeaseJournal
from rootfs.netboot.dhcp.leases import LeaseTable
from rootfs.netboot.dhcp.packet import (
    CLIENT_PORT,
    PXE_PORT,
    SERVER_PORT,
    MalformedPacket,
    decode_untrusted,
    encode,
)
from rootfs.netboot.dhcp.responder import Link, Outcome, Responder, Send
from rootfs.netboot.trace import TraceLog
from rootfs.store.state import State

log = logging.getLogger("rootfs.dhcp")

SIOCGIFADDR = 0x8915  # <linux/sockios.h>
SIOCGIFNETMASK = 0x891B
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
RECV_BUFFER = 4 << 20  # a 500-client boot storm arrives in well under a second
MALFORMED_LOG_INTERVAL = 60.0
BURST = 64  # packets handled per wake-up before yielding to other tasks


def interface_link(name: str) -> Link:
    """The interface's primary IPv4 address and network; a UserError if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("256s", name.encode()[:15])
        try:
            addr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24]
            mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24]
        except OSError as e:
            raise UserError(
                f"interface {name!r} has no IPv4 address ({e.strerror}); give it one or fix "
                "[dhcp] interfaces in site.toml"
            ) from None
    address = IPv4Address(addr)
    network = IPv4Network(f"{address}/{IPv4Address(mask)}", strict=False)
    return Link(interface=name, address=address, network=network)


def find_links(site: Site, interfaces: Sequence[str]) -> list[Link]:
    """The named interfaces, or every interface with an address inside a configured subnet."""
    if interfaces:
        return [interface_link(name) for name in interfaces]
    links = []
    for _, name in socket.if_nameindex():
        try:
            link = interface_link(name)
        except UserError:
            continue
        if site.subnet_for(link.address) is not None:
            links.append(link)
    if not links:
        raise UserError(
            "no interface has an address in a [[subnet]] of site.toml; "
            "name them in [dhcp] interfaces or add the subnet"
        )
    return links


class DhcpService:
    """DHCP (and proxyDHCP) for a site, run by `rootfs serve`."""

    def __init__(
        self,
        site: Site,
        state: State,
        trace: TraceLog,
        *,
        interfaces: Sequence[str] | None = None,
        port: int = SERVER_PORT,
        pxe_port: int = PXE_PORT,
        leases_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        sync: bool = True,
    ) -> None:
        cfg = site.config.dhcp
        self.site = site
        self.trace = trace
        self.interfaces = tuple(interfaces if interfaces is not None else cfg.interfaces)
        self.port = port
        self.pxe_port = pxe_port
        path = leases_file if leases_file is not None else cfg.leases_file
        self.journal = LeaseJournal(path or state.root / "dhcp" / "leases.journal", sync=sync)
        self.clock = clock
        self.leases = LeaseTable()
        self.responder: Responder | None = None
        self.links: list[Link] = []
        self._pending: list[tuple[Outcome, socket.socket]] = []
        self._wake = trio.Event()
        self._malformed_logged: dict[str, float] = {}
        self.stats = {"received": 0, "sent": 0, "dropped": 0, "malformed": 0, "commits": 0}

    def reload(self, site: Site) -> None:
        """Serve a new inventory; leases, offers and sockets stay."""
        if self.responder is not None:
            self.responder.reload(site)  # raises UserError and keeps the old one on a bad site
        self.site = site

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled."""
        records = await trio.to_thread.run_sync(self.journal.open)
        if self.journal.damaged:
            log.warning("%s: skipped %d damaged lines", self.journal.path, self.journal.damaged)
        self.leases = LeaseTable(records)
        self.responder = Responder(self.site, self.leases)
        self.links = find_links(self.site, self.interfaces)
        sockets: list[tuple[socket.socket, Link, bool]] = []
        try:
            for link in self.links:
                sockets.append((self._open(link, self.port), link, False))
                if self.site.config.dhcp.proxy:
                    sockets.append((self._open(link, self.pxe_port), link, True))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._commit_loop)
                for sock, link, pxe in sockets:
                    nursery.start_soon(self._serve_socket, sock, link, pxe)
                log.info(
                    "DHCP on %s", ", ".join(f"{x.interface} ({x.address})" for x in self.links)
                )
                task_status.started()
        finally:
            for sock, _, _ in sockets:
                sock.close()
            self.journal.close()

    def _open(self, link: Link, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, link.interface.encode())
            sock.bind(("0.0.0.0", port))
        except OSError as e:
            sock.close()
            raise UserError(
                f"cannot listen on {link.interface} port {port}: {e.strerror}; "
                "is another DHCP server running, and are we root?"
            ) from None
        return sock

    async def _serve_socket(self, sock: socket.socket, link: Link, pxe: bool) -> None:
        """Drain the socket after each wake-up (bounded, so the commit loop gets its turn):
        one trio round-trip per burst instead of one per packet."""
        buffer = bytearray(65536)
        responder = self.responder
        assert responder is not None
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(BURST):
                try:
                    size, addr = sock.recvfrom_into(buffer)
                except BlockingIOError:
                    break
                self.stats["received"] += 1
                try:
                    packet = decode_untrusted(bytes(buffer[:size]))
                except MalformedPacket as e:
                    self._log_malformed(addr[0], link, str(e))
                    continue
                responder = self.responder or responder
                outcome = responder.handle(
                    packet,
                    link=link,
                    now=self.clock(),
                    source=(IPv4Address(addr[0]), addr[1]),
                    pxe_port=pxe,
                )
                self._record(outcome, packet.mac, link)
                if outcome.reply is None:
                    continue
                if outcome.commit:
                    self._pending.append((outcome, sock))
                    self._wake.set()
                else:
                    self._send(sock, outcome)
            else:
                await trio.lowlevel.checkpoint()

    async def _commit_loop(self) -> None:
        """Group commit: one journal write + fdatasync for every lease decided meanwhile, then
        the ACKs. Compaction runs here too, so it never races an append."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            batch, self._pending = self._pending, []
            records = [lease for outcome, _ in batch for lease in outcome.commit]
            await trio.to_thread.run_sync(self.journal.append, records)
            self.stats["commits"] += 1
            for outcome, sock in batch:
                self._send(sock, outcome)
            if self.journal.wants_compaction(len(self.leases)):
                keep = self.site.config.dhcp.lease_time
                live = self.leases.live(self.clock(), keep_expired=keep)
                await trio.to_thread.run_sync(self.journal.compact, live)

    def _send(self, sock: socket.socket, outcome: Outcome) -> None:
        """Send without waiting: a UDP socket that cannot take a datagram now drops it, and the
        client's retransmission (RFC 2131 §4.1) covers that, as it covers any lost packet."""
        assert outcome.reply is not None
        try:
            data = encode(outcome.reply, outcome.max_size)
        except ValueError as e:
            log.warning("reply for %s does not fit: %s", outcome.reply.mac, e)
            return
        if outcome.send is Send.BROADCAST:
            dest = ("255.255.255.255", CLIENT_PORT)
        else:
            dest = (str(outcome.destination), outcome.port)
        try:
            sock.sendto(data, dest)
            self.stats["sent"] += 1
        except OSError as e:  # full buffer, unreachable relay: never stop the loop
            self.stats["dropped"] += 1
            log.warning("sending to %s:%d failed: %s", dest[0], dest[1], e.strerror or e)

    def _record(self, outcome: Outcome, mac: str, link: Link) -> None:
        if not outcome.trace:
            return
        detail = dict(outcome.detail)
        if outcome.reason:
            detail["reason"] = outcome.reason
        self.trace.record(
            "dhcp",
            outcome.event,
            mac=mac,
            ip=str(outcome.ip) if outcome.ip is not None else None,
            host=outcome.host,
            reply=outcome.reply_name,
            interface=link.interface,
            **detail,
        )
        if outcome.reply is None and outcome.reason:
            log.info(
                "%s %s from %s on %s: %s",
                outcome.event,
                "ignored",
                mac,
                link.interface,
                outcome.reason,
            )

    def _log_malformed(self, source: str, link: Link, why: str) -> None:
        self.stats["malformed"] += 1
        now = self.clock()
        last = self._malformed_logged.get(source)
        if last is not None and now - last < MALFORMED_LOG_INTERVAL:
            return
        if len(self._malformed_logged) > 4096:
            self._malformed_logged.clear()
        self._malformed_logged[source] = now
        log.info("malformed packet from %s on %s: %s", source, link.interface, why)
        self.trace.record("dhcp", "malformed", ip=source, interface=link.interface, reason=why)
