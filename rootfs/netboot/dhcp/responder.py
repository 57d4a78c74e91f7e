"""The DHCP decisions: one request in, at most one reply out. Pure: inventory, lease table, the
link a packet came in on and the clock are all passed in, so every rule of RFC 2131 §4.3 can be
table-tested without a socket.

Clients are recognised by MAC (chaddr), never by client-id: PXE firmware changes its client-id
between boot stages (the ROM's DHCP and the loaded OS's differ), while the NIC's address is what
the inventory records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import Enum
from ipaddress import IPv4Address, IPv4Network

from rootfs.config.dhcp import BootFiles, DhcpConfig
from rootfs.config.site import Host, Site
from rootfs.errors import ConfigError
from rootfs.netboot.dhcp.leases import Lease, LeaseTable
from rootfs.netboot.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    DHCPACK,
    DHCPDECLINE,
    DHCPDISCOVER,
    DHCPINFORM,
    DHCPNAK,
    DHCPOFFER,
    DHCPRELEASE,
    DHCPREQUEST,
    FLAG_BROADCAST,
    MESSAGE_NAMES,
    OPT_BOOTFILE,
    OPT_BROADCAST,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_DOMAIN,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MESSAGE,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST,
    OPT_REBINDING_TIME,
    OPT_RELAY_AGENT,
    OPT_RENEWAL_TIME,
    OPT_REQUESTED_IP,
    OPT_ROOT_PATH,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_TFTP_SERVER,
    OPT_VENDOR,
    OPT_VENDOR_CLASS,
    ZERO,
    Packet,
)

ROOT_PATH_LIMIT = 255  # the kernel's nfsroot copies at most this much of option 17 (nfsroot.rst)
RELAY_INFO_LIMIT = 255  # RFC 3046 §2.1
LOG_INTERVAL = 60.0  # an ignored MAC is logged at most once a minute
PXE_DISCOVERY_CONTROL = bytes((6, 1, 8, 255))  # PXE 2.1 §2.4.3: sub-option 6 = 8, boot at once
PXE_CLIENT = b"PXEClient"  # PXE 2.1 §2.2: option 60 echoed to PXE firmware
# UEFI 2.9 §24.7.2: an offer is an HTTP Boot offer only if option 60 says "HTTPClient"; the firmware
# then takes the boot file (option 67 / file field) as a URI and ignores PXE's option 43.
HTTP_CLIENT = b"HTTPClient"
IPXE = b"iPXE"  # iPXE's user-class (option 77)
# Options boot needs, sent even when the parameter request list leaves them out: udhcpc does not
# ask for 17, and PXE ROMs ask for little, yet the boot fails without them.
_ALWAYS = (
    OPT_SUBNET_MASK,
    OPT_ROUTER,
    OPT_ROOT_PATH,
    OPT_TFTP_SERVER,
    OPT_BOOTFILE,
    OPT_VENDOR_CLASS,
    OPT_VENDOR,
)
# RFC 4578 §2.1 and IANA's processor architecture types: 0-11 boot over PXE/TFTP, 15/16/18/19 are
# the same UEFI machines booting over HTTP (UEFI 2.9 §24.7.2); x64 has a loader of its own for
# that (`http_efi64`), the others get their PXE loader as a URL.
_ARCH_FILES = {
    0: "bios", 6: "efi32", 7: "efi64", 9: "efi64", 10: "arm32", 11: "arm64",
    15: "efi32", 16: "http_efi64", 18: "arm32", 19: "arm64",
}  # fmt: skip
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class Send(Enum):
    """How a reply travels (RFC 2131 §4.1)."""

    RELAY = "relay"  # to giaddr, port 67
    UNICAST = "unicast"  # to ciaddr (or the PXE client's source), port 68 / source port
    BROADCAST = "broadcast"  # 255.255.255.255:68 on the link it came from


@dataclass(frozen=True)
class Link:
    """Where a request arrived: the interface and the server's address on it."""

    interface: str
    address: IPv4Address
    network: IPv4Network


@dataclass(frozen=True)
class Client:
    """A reserved host as DHCP serves it, with everything derived from the site precomputed."""

    name: str
    mac: str
    ip: IPv4Address
    root_path: bytes
    boot_file: str | None  # per-host override
    extra: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class Outcome:
    """What to do about one request: the reply (if any), where it goes, the lease records that must
    be durable before it is sent, and what to tell the trace and the log."""

    event: str  # the request: "discover", "request", ..., "bootp", "invalid"
    reply: Packet | None = None
    send: Send = Send.BROADCAST
    destination: IPv4Address = ZERO
    port: int = 68
    max_size: int = 548
    commit: tuple[Lease, ...] = ()
    host: str | None = None
    ip: IPv4Address | None = None
    reason: str = ""  # why nothing, or something unusual, happened
    trace: bool = True  # False for ignored clients already logged this minute
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def reply_name(self) -> str | None:
        if self.reply is None:
            return None
        mtype = self.reply.message_type
        return MESSAGE_NAMES.get(mtype, "bootreply") if mtype else "bootreply"


def root_path_option(site: Site, host: Host) -> bytes:
    """Option 17: `<server>:<export root>/<ip>[,<nfs options>]`, always the full path.

    The kernel's nfsroot falls back to `/tftpboot/%s` when it has no path, and `%s` is the
    hostname when option 12 was sent, the IP otherwise: sending the whole path means that default
    never decides which tree a client mounts."""
    options = site.config.nfs_options
    text = site.root_path(host) + (f",{options}" if options else "")
    data = text.encode()
    if len(data) > ROOT_PATH_LIMIT:
        raise ConfigError(
            f"host {host.name}: root path {text!r} is {len(data)} bytes, over the kernel's "
            f"{ROOT_PATH_LIMIT}; shorten [paths] export_root or [defaults] nfs_options"
        )
    return data


def _client_id_echo(packet: Packet) -> list[tuple[int, bytes]]:
    """RFC 6842 §3: a client's identifier (option 61) is returned unaltered in every OFFER, ACK
    and NAK, so a client can tell its replies apart; reservations stay keyed by MAC."""
    client_id = packet.get(OPT_CLIENT_ID)
    return [] if client_id is None else [(OPT_CLIENT_ID, client_id)]


def sanitize_hostname(raw: bytes) -> str | None:
    """A client-sent hostname (option 12) made safe for logs and traces: lowercase RFC 1123
    labels of at most 63 bytes; None when nothing usable is left."""
    text = raw.decode("ascii", "replace").lower()
    labels = []
    for part in text.split("."):
        label = re.sub(r"[^a-z0-9-]", "", part).strip("-")[:63].strip("-")
        if label and _LABEL.fullmatch(label):
            labels.append(label)
    name = ".".join(labels)[:253]
    return name or None


class Responder:
    """Decides replies for one site. Holds the lease table; the server makes records durable."""

    def __init__(self, site: Site, leases: LeaseTable) -> None:
        self.leases = leases
        self._ignored: dict[str, float] = {}
        self.reload(site)

    def reload(self, site: Site) -> None:
        """Take a new inventory; leases and offers stay."""
        self.site = site
        self.config: DhcpConfig = site.config.dhcp
        self.clients = {
            h.mac: Client(
                name=h.name,
                mac=h.mac,
                ip=h.ip,
                root_path=root_path_option(site, h),
                boot_file=h.dhcp.boot_file,
                extra=h.dhcp.options,
            )
            for h in site.hosts
        }
        self.reserved = frozenset(h.ip for h in site.hosts)
        self.http_base = http_base_url(site)
        self._bodies: dict[object, tuple[tuple[int, bytes], ...]] = {}
        for low, high in self.config.pool:
            if not any(low in s.network and high in s.network for s in site.config.subnets):
                raise ConfigError(
                    f"site.toml: dhcp.pool: {low}-{high} is not inside one [[subnet]]; "
                    "add the subnet or fix the range"
                )

    # ------------------------------------------------------------------ entry point

    def handle(
        self,
        packet: Packet,
        *,
        link: Link,
        now: float,
        source: tuple[IPv4Address, int] = (ZERO, 68),
        pxe_port: bool = False,
    ) -> Outcome:
        """The outcome of one decoded request that arrived on `link` from `source`."""
        mtype = packet.message_type
        event = "bootp" if mtype is None else MESSAGE_NAMES.get(mtype, f"type-{mtype}")
        if packet.op != BOOTREQUEST:
            return Outcome(event, reason="not a BOOTREQUEST", trace=False)
        client = self.clients.get(packet.mac)
        relay_info = packet.get(OPT_RELAY_AGENT)
        if relay_info is not None and len(relay_info) > RELAY_INFO_LIMIT:
            # RFC 3046 §2.1: one option, at most 255 bytes. Echoing more (RFC 2.2 demands the
            # echo) would crowd the boot options out of the reply.
            why = f"option 82 of {len(relay_info)} bytes exceeds {RELAY_INFO_LIMIT}; fix the relay"
            return self._ignore(event, packet, now, why, client)
        network = self._network(packet, link)
        if network is None:
            return self._ignore(
                event, packet, now, f"relay {packet.giaddr} is in no configured subnet"
            )
        if self.config.proxy or pxe_port:
            return self._proxy(event, packet, client, link, now, source, pxe_port)
        if client is not None and client.ip not in network:
            return self._ignore(
                event, packet, now, f"host {client.name} ({client.ip}) asked from {network}", client
            )
        if mtype is None:
            return self._bootp(packet, client, link, network, now)
        if mtype == DHCPDISCOVER:
            return self._discover(packet, client, link, network, now)
        if mtype == DHCPREQUEST:
            return self._request(packet, client, link, network, now)
        if mtype == DHCPDECLINE:
            return self._decline(packet, client, link, now)
        if mtype == DHCPRELEASE:
            return self._release(packet, client, link, now)
        if mtype == DHCPINFORM:
            return self._inform(packet, client, link, network, now)
        return Outcome(event, reason=f"message type {mtype} is not for a server", trace=False)

    # ------------------------------------------------------------------ messages

    def _discover(
        self,
        packet: Packet,
        client: Client | None,
        link: Link,
        network: IPv4Network,
        now: float,
    ) -> Outcome:
        ip = self._address_for(packet, client, network, now)
        if ip is None:
            why = "unknown MAC" if client is None or not self.config.pool else "pool exhausted"
            return self._ignore("discover", packet, now, why)
        self.leases.offer(ip, packet.mac, now)
        reply = self._reply(packet, DHCPOFFER, ip, client, link, network, lease=True)
        return self._outcome("discover", packet, reply, client, ip)

    def _request(
        self,
        packet: Packet,
        client: Client | None,
        link: Link,
        network: IPv4Network,
        now: float,
    ) -> Outcome:
        server_id = packet.address(OPT_SERVER_ID)
        requested = packet.address(OPT_REQUESTED_IP)
        if server_id is not None and server_id != link.address:
            # SELECTING, and the client chose another server (RFC 2131 §4.3.2).
            self.leases.withdraw(packet.mac)
            return Outcome("request", reason=f"client chose server {server_id}", trace=False)
        wanted = requested if requested is not None else packet.ciaddr
        if wanted == ZERO:
            return self._nak(packet, link, "request names no address", client)
        ours = self._address_for(packet, client, network, now, wanted=wanted)
        if ours is None:
            if client is None and not self.config.pool:
                return self._ignore("request", packet, now, "unknown MAC")
            if server_id is None and wanted in network:
                # INIT-REBOOT/RENEWING with no record of this client: stay silent (§4.3.2).
                return Outcome("request", reason=f"no binding for {wanted}", trace=False)
            return self._nak(packet, link, f"{wanted} is not available", client)
        if ours != wanted:
            return self._nak(packet, link, f"{wanted} is not this client's address", client)
        lease = self._bind(ours, packet.mac, now)
        reply = self._reply(packet, DHCPACK, ours, client, link, network, lease=True)
        return self._outcome("request", packet, reply, client, ours, commit=(lease,))

    def _bootp(
        self,
        packet: Packet,
        client: Client | None,
        link: Link,
        network: IPv4Network,
        now: float,
    ) -> Outcome:
        # RFC 1534 §2: BOOTP clients get permanent addresses, so only reserved hosts get an answer.
        if client is None:
            return self._ignore("bootp", packet, now, "unknown MAC (BOOTP is for reserved hosts)")
        lease = self._bind(client.ip, packet.mac, now)
        reply = self._reply(packet, None, client.ip, client, link, network, lease=False)
        return self._outcome("bootp", packet, reply, client, client.ip, commit=(lease,))

    def _decline(self, packet: Packet, client: Client | None, link: Link, now: float) -> Outcome:
        ip = packet.address(OPT_REQUESTED_IP)
        if ip is None:
            return Outcome("decline", reason="no requested address (option 50)", trace=False)
        if client is not None:
            # The reserved address is in use by someone else: an inventory or network problem
            # only an administrator can fix, so say so loudly and keep the reservation.
            return Outcome(
                "decline",
                host=client.name,
                ip=ip,
                reason=f"{ip} is in use by another machine; find it (arping) and remove it",
            )
        record = self.leases.decline(ip, packet.mac, now)
        if record is None:
            return self._ignore("decline", packet, now, f"stranger declined {ip}")
        self.leases.apply(record)
        return Outcome("decline", ip=ip, commit=(record,), reason="address parked")

    def _release(self, packet: Packet, client: Client | None, link: Link, now: float) -> Outcome:
        record = self.leases.release(packet.ciaddr, packet.mac, now)
        if record is None:
            return self._ignore("release", packet, now, f"{packet.ciaddr} is not leased to it")
        self.leases.apply(record)
        return Outcome(
            "release", host=client.name if client else None, ip=packet.ciaddr, commit=(record,)
        )

    def _inform(
        self,
        packet: Packet,
        client: Client | None,
        link: Link,
        network: IPv4Network,
        now: float,
    ) -> Outcome:
        # RFC 2131 §4.3.5: configuration only, no lease, reply to ciaddr.
        if packet.ciaddr == ZERO or packet.ciaddr not in network:
            return Outcome("inform", reason="ciaddr missing or off-link", trace=False)
        if client is None and not self.config.pool:
            return self._ignore("inform", packet, now, "unknown MAC")
        reply = self._reply(packet, DHCPACK, ZERO, client, link, network, lease=False)
        return self._outcome("inform", packet, reply, client, packet.ciaddr)

    def _proxy(
        self,
        event: str,
        packet: Packet,
        client: Client | None,
        link: Link,
        now: float,
        source: tuple[IPv4Address, int],
        pxe_port: bool,
    ) -> Outcome:
        """proxyDHCP (PXE 2.1 §2.2.2): boot information for PXE clients, no address; another
        server leases addresses. On port 4011 the client unicasts a REQUEST and expects an ACK."""
        if client is None:
            return self._ignore(event, packet, now, "unknown MAC")
        if not packet.pxe_client:
            return Outcome(event, host=client.name, reason="not a PXE client", trace=False)
        mtype = packet.message_type
        if pxe_port and mtype in (DHCPREQUEST, DHCPINFORM):
            reply = self._proxy_reply(packet, DHCPACK, client, link)
            to = packet.ciaddr if packet.ciaddr != ZERO else source[0]
            return self._outcome(
                event, packet, reply, client, client.ip, send=Send.UNICAST, to=to, port=source[1]
            )
        if not pxe_port and mtype == DHCPDISCOVER:
            reply = self._proxy_reply(packet, DHCPOFFER, client, link)
            return self._outcome(event, packet, reply, client, client.ip)
        return Outcome(event, host=client.name, reason="proxyDHCP answers DISCOVER only on 67")

    # ------------------------------------------------------------------ building replies

    def _bind(self, ip: IPv4Address, mac: str, now: float) -> Lease:
        """Bind at once in memory, so the next request (even in the same commit group) sees the
        address taken; the server sends the ACK only once the record is durable."""
        lease = self.leases.bind(ip, mac, lease_time=self.config.lease_time, now=now)
        self.leases.apply(lease)
        return lease

    def _address_for(
        self,
        packet: Packet,
        client: Client | None,
        network: IPv4Network,
        now: float,
        wanted: IPv4Address | None = None,
    ) -> IPv4Address | None:
        if client is not None:
            return client.ip
        pool = tuple((lo, hi) for lo, hi in self.config.pool if lo in network)
        if not pool:
            return None
        if wanted is None:
            wanted = packet.address(OPT_REQUESTED_IP)
        return self.leases.allocate(
            packet.mac, pool, now=now, reserved=self.reserved, wanted=wanted
        )

    def _reply(
        self,
        packet: Packet,
        mtype: int | None,
        ip: IPv4Address,
        client: Client | None,
        link: Link,
        network: IPv4Network,
        *,
        lease: bool,
    ) -> Packet:
        cfg = self.config
        server = self.site.config.server_address
        head: list[tuple[int, bytes]] = []
        if mtype is not None:
            head += [(OPT_MESSAGE_TYPE, bytes((mtype,))), (OPT_SERVER_ID, link.address.packed)]
            head += _client_id_echo(packet)
        if lease:
            t = cfg.lease_time
            head += [
                (OPT_LEASE_TIME, t.to_bytes(4, "big")),
                (OPT_RENEWAL_TIME, (t // 2).to_bytes(4, "big")),  # RFC 2131 §4.4.5
                (OPT_REBINDING_TIME, (t * 7 // 8).to_bytes(4, "big")),
            ]
        boot_file = self._boot_file(packet, client) if client is not None else None
        prl = packet.get(OPT_PARAM_REQUEST)
        key = (ip, packet.ciaddr, network, client, boot_file, prl, packet.pxe_client,
               packet.http_client)  # fmt: skip
        body = self._bodies.get(key)
        if body is None:
            # The same client asks the same way each boot stage: build its options once.
            body = self._body(packet, ip, client, network, boot_file, prl)
            if len(self._bodies) > 65536:
                self._bodies.clear()
            self._bodies[key] = body
        tail = [(OPT_RELAY_AGENT, v)] if (v := packet.get(OPT_RELAY_AGENT)) is not None else []
        return Packet(
            op=BOOTREPLY,
            htype=packet.htype,
            chaddr=packet.chaddr,
            xid=packet.xid,
            flags=packet.flags,
            ciaddr=packet.ciaddr if mtype in (DHCPACK, None) else ZERO,
            yiaddr=ip,
            siaddr=server if client is not None else ZERO,
            giaddr=packet.giaddr,
            file=_file_field(boot_file),
            options=(*head, *body, *tail),  # RFC 3046 §2.2: option 82 goes last
        )

    def _body(
        self,
        packet: Packet,
        ip: IPv4Address,
        client: Client | None,
        network: IPv4Network,
        boot_file: str | None,
        prl: bytes | None,
    ) -> tuple[tuple[int, bytes], ...]:
        subnet = self.site.subnet_for(ip if ip != ZERO else packet.ciaddr)
        offered: dict[int, bytes] = {OPT_SUBNET_MASK: network.netmask.packed}
        if subnet is not None and subnet.gateway is not None:
            offered[OPT_ROUTER] = subnet.gateway.packed
        if subnet is not None and subnet.dns:
            offered[OPT_DNS] = b"".join(a.packed for a in subnet.dns)
        if client is not None and self.config.hostname:
            offered[OPT_HOSTNAME] = client.name.encode()
        if subnet is not None and subnet.domain:
            offered[OPT_DOMAIN] = subnet.domain.encode()
        offered[OPT_BROADCAST] = network.broadcast_address.packed
        if client is not None and boot_file is not None:
            offered[OPT_ROOT_PATH] = client.root_path
            offered[OPT_TFTP_SERVER] = str(self.site.config.server_address).encode()
            offered[OPT_BOOTFILE] = boot_file.encode()
            if packet.http_client:
                offered[OPT_VENDOR_CLASS] = HTTP_CLIENT
            elif packet.pxe_client:
                offered[OPT_VENDOR_CLASS] = PXE_CLIENT
                offered[OPT_VENDOR] = PXE_DISCOVERY_CONTROL
            offered.update(client.extra)  # the inventory has the last word
        return tuple(_order(offered, prl, client))

    def _proxy_reply(self, packet: Packet, mtype: int, client: Client, link: Link) -> Packet:
        server = self.site.config.server_address
        boot_file = (self._boot_file(packet, client) or "").encode()
        return Packet(
            op=BOOTREPLY,
            htype=packet.htype,
            chaddr=packet.chaddr,
            xid=packet.xid,
            flags=packet.flags,
            ciaddr=packet.ciaddr,
            siaddr=server,
            giaddr=packet.giaddr,
            file=_file_field(boot_file.decode()),
            options=(
                (OPT_MESSAGE_TYPE, bytes((mtype,))),
                (OPT_SERVER_ID, link.address.packed),
                *_client_id_echo(packet),
                (OPT_VENDOR_CLASS, PXE_CLIENT),
                (OPT_VENDOR, PXE_DISCOVERY_CONTROL),
                (OPT_TFTP_SERVER, str(server).encode()),
                (OPT_BOOTFILE, boot_file),
                (OPT_ROOT_PATH, client.root_path),
            ),
        )

    def _boot_file(self, packet: Packet, client: Client) -> str | None:
        """The per-host override, else the iPXE script for iPXE (it would load iPXE again and
        loop), else by the firmware's first architecture (RFC 4578 §2.1), BIOS when absent.

        With the HTTP front end on, iPXE's script and everything an HTTP Boot client asks for
        are URLs on it (a name that is already a URL is left alone, so `tftp://...` keeps iPXE
        on TFTP); firmware that only speaks TFTP gets a plain name as before. An HTTP Boot
        client gets nothing to boot (None) while HTTP is off: a name would not be a URI to it.
        """
        files: BootFiles = self.config.boot_files
        if client.boot_file is not None:
            name, over_http = client.boot_file, packet.http_client
        elif IPXE in packet.user_classes:
            name, over_http = files.ipxe, True
        else:
            arches = packet.architectures
            name = getattr(files, _ARCH_FILES.get(arches[0] if arches else 0, "bios"))
            over_http = packet.http_client
        server = self.site.config.server_address
        name = name.format(name=client.name, ip=client.ip, mac=client.mac, server=server)
        if not over_http or _URL.match(name):
            return name
        if self.http_base is None:
            return None if packet.http_client else name
        return f"{self.http_base}/{name.lstrip('/')}"

    def _nak(self, packet: Packet, link: Link, reason: str, client: Client | None) -> Outcome:
        reply = Packet(
            op=BOOTREPLY,
            htype=packet.htype,
            chaddr=packet.chaddr,
            xid=packet.xid,
            flags=packet.flags,
            giaddr=packet.giaddr,
            options=(
                (OPT_MESSAGE_TYPE, bytes((DHCPNAK,))),
                (OPT_SERVER_ID, link.address.packed),
                *_client_id_echo(packet),
                (OPT_MESSAGE, reason.encode()),
            ),
        )
        # RFC 2131 §4.1: a NAK is broadcast (or goes to the relay, broadcast bit set).
        outcome = self._outcome("request", packet, reply, client, None, reason=reason)
        if outcome.send is Send.UNICAST:
            return replace(outcome, send=Send.BROADCAST, destination=ZERO)
        return outcome

    def _outcome(
        self,
        event: str,
        packet: Packet,
        reply: Packet,
        client: Client | None,
        ip: IPv4Address | None,
        *,
        commit: tuple[Lease, ...] = (),
        reason: str = "",
        send: Send | None = None,
        to: IPv4Address = ZERO,
        port: int = 68,
    ) -> Outcome:
        if send is None:
            # RFC 2131 §4.1: relay first, then a client that already has its address, then
            # broadcast. (Unicast to yiaddr would need an ARP entry forged for the client; the
            # clients here all accept broadcast, which RFC 2131 allows as the fallback.)
            if packet.giaddr != ZERO:
                send, to, port = Send.RELAY, packet.giaddr, 67
                if reply.message_type == DHCPNAK:
                    reply = _with_broadcast_flag(reply)
            elif packet.ciaddr != ZERO:
                send, to = Send.UNICAST, packet.ciaddr
            else:
                send = Send.BROADCAST
        return Outcome(
            event,
            reply=reply,
            send=send,
            destination=to,
            port=port,
            # One Ethernet frame: the kernel's DHCP client drops fragmented replies.
            max_size=min(packet.max_size, 1500 - 28),
            commit=commit,
            host=client.name if client else None,
            ip=ip,
            reason=reason,
            detail=_detail(packet, reply),
        )

    def _network(self, packet: Packet, link: Link) -> IPv4Network | None:
        """The client's network: the relay's subnet for relayed requests, else the link's."""
        if packet.giaddr != ZERO:
            subnet = self.site.subnet_for(packet.giaddr)
            return subnet.network if subnet else None
        subnet = self.site.subnet_for(link.address)
        return subnet.network if subnet else link.network

    def _ignore(
        self,
        event: str,
        packet: Packet,
        now: float,
        reason: str,
        client: Client | None = None,
    ) -> Outcome:
        """No reply. Traced and logged once a minute per MAC, so a chatty stranger cannot flood
        the trace or the log."""
        mac = packet.mac
        last = self._ignored.get(mac)
        fresh = last is None or now - last >= LOG_INTERVAL
        if fresh:
            if len(self._ignored) > 65536:
                self._ignored = {m: t for m, t in self._ignored.items() if now - t < LOG_INTERVAL}
            self._ignored[mac] = now
        return Outcome(
            event,
            host=client.name if client else None,
            reason=reason,
            trace=fresh,
            detail=_detail(packet, None),
        )


def http_base_url(site: Site) -> str | None:
    """Where clients reach the HTTP front end (`http://<server>[:port]`), None when it is off."""
    http = site.config.http
    if not http.enabled:
        return None
    port = "" if http.port == 80 else f":{http.port}"
    return f"http://{site.config.server_address}{port}"


def _file_field(boot_file: str | None) -> bytes:
    """The BOOTP file field holds 127 bytes and a NUL (RFC 2131 §2); a longer URL travels in
    option 67 alone, which every client that understands URLs reads."""
    data = (boot_file or "").encode()
    return data if len(data) <= 127 else b""


def _order(
    offered: dict[int, bytes], prl: bytes | None, client: Client | None
) -> list[tuple[int, bytes]]:
    """What boot cannot do without first, then the rest the client asked for in its order
    (RFC 2132 §9.8), then the inventory's extras; without a request list (BOOTP, some ROMs)
    everything. The encoder drops from the end when a reply would be too big, so the order is
    also the priority: a DNS server may be lost to a huge relay option, the root path may not."""
    order = [c for c in _ALWAYS if c in offered]
    order += [c for c in (prl if prl is not None else offered) if c in offered]
    if client is not None:
        order += [c for c, _ in client.extra]
    return [(c, offered[c]) for c in dict.fromkeys(order)]


def _with_broadcast_flag(packet: Packet) -> Packet:
    return replace(packet, flags=packet.flags | FLAG_BROADCAST)


def _detail(packet: Packet, reply: Packet | None) -> dict[str, object]:
    """What the trace shows about a request: enough to tell firmware stages apart."""
    detail: dict[str, object] = {"xid": f"{packet.xid:08x}"}
    if packet.giaddr != ZERO:
        detail["relay"] = str(packet.giaddr)
    if packet.architectures:
        detail["arch"] = packet.architectures[0]
    if packet.user_classes:
        detail["user_class"] = b",".join(packet.user_classes).decode("ascii", "replace")
    if reply is not None and reply.file:
        detail["file"] = reply.file.decode("ascii", "replace")
    return detail
