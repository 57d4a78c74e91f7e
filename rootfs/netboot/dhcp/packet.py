"""DHCP/BOOTP packets as values: decode wire bytes (untrusted) and encode replies.

Sans-IO (h11's lesson): no sockets, no clocks. `decode_untrusted` is the one door for peer bytes and
may raise only `MalformedPacket`, so nothing a client sends can crash the server loop. Everything
the responder reads from a packet (message type, client architecture, requested address ...) is
length-checked here, once, so later code can index option values without guarding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address

from rootfs.errors import ProtocolError

SERVER_PORT = 67  # RFC 2131 §4.1
CLIENT_PORT = 68  # RFC 2131 §4.1
PXE_PORT = 4011  # PXE 2.1 §2.2.1 (proxyDHCP boot-server requests)

BOOTREQUEST = 1  # RFC 951 op
BOOTREPLY = 2
HTYPE_ETHERNET = 1  # RFC 1700 hardware type
FLAG_BROADCAST = 0x8000  # RFC 2131 §2, fig. 2

MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3, RFC 1497
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # RFC 2131 §2, fig. 1: 236 bytes
HEADER_SIZE = HEADER.size
MIN_REPLY_SIZE = 300  # RFC 951 §3: 64-byte vendor area; some old BOOTP stacks drop shorter
DEFAULT_MAX_SIZE = 576 - 28  # RFC 2131 §2: 576-byte IP datagrams, less IP (20) and UDP (8) headers
MAX_INPUT_SIZE = 65507  # largest UDP payload over IPv4

# Option codes, RFC 2132 unless noted.
OPT_PAD = 0  # RFC 2132 §3.1
OPT_SUBNET_MASK = 1  # RFC 2132 §3.3
OPT_ROUTER = 3  # RFC 2132 §3.5
OPT_DNS = 6  # RFC 2132 §3.8
OPT_HOSTNAME = 12  # RFC 2132 §3.14
OPT_DOMAIN = 15  # RFC 2132 §3.17
OPT_ROOT_PATH = 17  # RFC 2132 §3.19
OPT_BROADCAST = 28  # RFC 2132 §5.3
OPT_VENDOR = 43  # RFC 2132 §8.4 (PXE 2.1 sub-options for PXE clients)
OPT_REQUESTED_IP = 50  # RFC 2132 §9.1
OPT_LEASE_TIME = 51  # RFC 2132 §9.2
OPT_OVERLOAD = 52  # RFC 2132 §9.3
OPT_MESSAGE_TYPE = 53  # RFC 2132 §9.6
OPT_SERVER_ID = 54  # RFC 2132 §9.7
OPT_PARAM_REQUEST = 55  # RFC 2132 §9.8
OPT_MESSAGE = 56  # RFC 2132 §9.9
OPT_MAX_SIZE = 57  # RFC 2132 §9.10
OPT_RENEWAL_TIME = 58  # RFC 2132 §9.11 (T1)
OPT_REBINDING_TIME = 59  # RFC 2132 §9.12 (T2)
OPT_VENDOR_CLASS = 60  # RFC 2132 §9.13
OPT_CLIENT_ID = 61  # RFC 2132 §9.14
OPT_TFTP_SERVER = 66  # RFC 2132 §9.4
OPT_BOOTFILE = 67  # RFC 2132 §9.5
OPT_USER_CLASS = 77  # RFC 3004 §4
OPT_RELAY_AGENT = 82  # RFC 3046 §2
OPT_CLIENT_ARCH = 93  # RFC 4578 §2.1
OPT_CLIENT_NDI = 94  # RFC 4578 §2.2
OPT_UUID = 97  # RFC 4578 §2.3
OPT_END = 255  # RFC 2132 §3.2

# Message types, RFC 2132 §9.6.
DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPDECLINE = 4
DHCPACK = 5
DHCPNAK = 6
DHCPRELEASE = 7
DHCPINFORM = 8
MESSAGE_NAMES = {
    DHCPDISCOVER: "discover",
    DHCPOFFER: "offer",
    DHCPREQUEST: "request",
    DHCPDECLINE: "decline",
    DHCPACK: "ack",
    DHCPNAK: "nak",
    DHCPRELEASE: "release",
    DHCPINFORM: "inform",
}

# Overload field values, RFC 2132 §9.3.
_OVERLOAD_FILE = 1
_OVERLOAD_SNAME = 2

# Options whose length the protocol fixes; checked on input so the responder can trust them.
_FIXED_LENGTH = {
    OPT_REQUESTED_IP: 4,
    OPT_SERVER_ID: 4,
    OPT_MESSAGE_TYPE: 1,
    OPT_MAX_SIZE: 2,
    OPT_LEASE_TIME: 4,
    OPT_OVERLOAD: 1,
}
# Options a reply may not lose to the size limit: without them the reply is meaningless.
# Never left off a reply for room: RFC 6842 makes echoing option 61 a MUST.
_NEVER_DROPPED = frozenset(
    {OPT_MESSAGE_TYPE, OPT_SERVER_ID, OPT_CLIENT_ID, OPT_LEASE_TIME, OPT_RELAY_AGENT}
)

ZERO = IPv4Address(0)


class MalformedPacket(ProtocolError):
    """Wire bytes that are not a usable DHCP/BOOTP message; the message says what is wrong."""


@dataclass(frozen=True)
class Packet:
    """A BOOTP/DHCP message (RFC 2131 §2). Options keep their order; an option split over several
    instances (RFC 3396) appears once, concatenated."""

    op: int
    xid: int
    chaddr: bytes  # hlen bytes of client hardware address
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""  # NUL-padded on the wire
    file: bytes = b""  # NUL-padded on the wire
    options: tuple[tuple[int, bytes], ...] = field(default=())

    def get(self, code: int) -> bytes | None:
        """The value of option `code`, or None if the packet does not carry it."""
        return self._index.get(code)

    @cached_property
    def _index(self) -> dict[int, bytes]:
        return dict(self.options)

    @property
    def message_type(self) -> int | None:
        """DHCP message type; None for a BOOTP request (RFC 1534 §2: no option 53)."""
        value = self.get(OPT_MESSAGE_TYPE)
        return value[0] if value is not None else None

    @property
    def mac(self) -> str:
        """chaddr as lowercase colon-separated hex (the inventory's form)."""
        return self.chaddr.hex(":")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    def address(self, code: int) -> IPv4Address | None:
        """A 4-byte address option (length checked by decode_untrusted)."""
        value = self.get(code)
        return IPv4Address(value) if value is not None and len(value) == 4 else None

    @property
    def max_size(self) -> int:
        """The largest DHCP message the client accepts (RFC 2132 §9.10): option 57 counts the IP
        and UDP headers, and values under 576 are illegal, so they fall back to the default."""
        value = self.get(OPT_MAX_SIZE)
        if value is None:
            return DEFAULT_MAX_SIZE
        return max(DEFAULT_MAX_SIZE, int.from_bytes(value, "big") - 28)

    @property
    def architectures(self) -> tuple[int, ...]:
        """Client system architectures (RFC 4578 §2.1), most preferred first."""
        value = self.get(OPT_CLIENT_ARCH) or b""
        return tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2))

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        """User classes (option 77), accepting both RFC 3004 length-prefixed lists and the plain
        string iPXE and some BIOS ROMs send: a value that does not parse as a list is one class."""
        value = self.get(OPT_USER_CLASS)
        if not value:
            return ()
        classes: list[bytes] = []
        i = 0
        while i < len(value):
            n = value[i]
            if n == 0 or i + 1 + n > len(value):
                return (value,)
            classes.append(value[i + 1 : i + 1 + n])
            i += 1 + n
        return tuple(classes)

    @property
    def pxe_client(self) -> bool:
        """PXE firmware says so in option 60 (PXE 2.1 §2.2)."""
        return (self.get(OPT_VENDOR_CLASS) or b"").startswith(b"PXEClient")

    @property
    def http_client(self) -> bool:
        """UEFI HTTP Boot firmware says so in option 60 (UEFI 2.9 §24.7.2: "HTTPClient:...")."""
        return (self.get(OPT_VENDOR_CLASS) or b"").startswith(b"HTTPClient")


def decode_untrusted(data: bytes) -> Packet:
    """Parse one UDP payload from the network. Raises only MalformedPacket."""
    if len(data) < HEADER_SIZE + len(MAGIC_COOKIE):
        raise MalformedPacket(
            f"{len(data)} bytes is shorter than the 240-byte BOOTP header and magic cookie"
        )
    if len(data) > MAX_INPUT_SIZE:
        raise MalformedPacket(f"{len(data)} bytes is larger than any UDP payload")
    (op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file) = (
        HEADER.unpack_from(data)
    )
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise MalformedPacket(f"op {op} is neither BOOTREQUEST (1) nor BOOTREPLY (2)")
    if hlen > 16:
        raise MalformedPacket(f"hlen {hlen} exceeds the 16-byte chaddr field (RFC 2131 §2)")
    if data[HEADER_SIZE : HEADER_SIZE + 4] != MAGIC_COOKIE:
        raise MalformedPacket("no DHCP magic cookie 99.130.83.99 after the header (RFC 2131 §3)")
    parts: dict[int, list[bytes]] = {}
    order: list[int] = []
    _parse_options(data, HEADER_SIZE + 4, len(data), parts, order, "options")
    ov = parts.get(OPT_OVERLOAD)
    if ov is not None:
        if len(ov) != 1 or len(ov[0]) != 1 or ov[0][0] not in (1, 2, 3):
            raise MalformedPacket("option 52 (overload) must be one byte of 1, 2 or 3")
        overload = ov[0][0]
        # RFC 3396 §7 / RFC 2132 §9.3: the file field is read before sname.
        file_at, sname_at = HEADER_SIZE - 128, HEADER_SIZE - 192
        if overload & _OVERLOAD_FILE:
            _parse_options(data, file_at, file_at + 128, parts, order, "file field")
            file = b""
        if overload & _OVERLOAD_SNAME:
            _parse_options(data, sname_at, sname_at + 64, parts, order, "sname field")
            sname = b""
    options = tuple((code, b"".join(parts[code])) for code in order)
    packet = Packet(
        op=op,
        htype=htype,
        hops=hops,
        xid=xid,
        secs=secs,
        flags=flags,
        ciaddr=IPv4Address(ci),
        yiaddr=IPv4Address(yi),
        siaddr=IPv4Address(si),
        giaddr=IPv4Address(gi),
        chaddr=chaddr[:hlen],
        sname=sname.rstrip(b"\0"),
        file=file.rstrip(b"\0"),
        options=options,
    )
    _check_options(packet)
    return packet


def _parse_options(
    data: bytes,
    start: int,
    end: int,
    parts: dict[int, list[bytes]],
    order: list[int],
    where: str,
) -> None:
    """Read code/length/value triples from data[start:end] up to END (RFC 2132 §2)."""
    i = start
    while i < end:
        code = data[i]
        if code == OPT_PAD:
            i += 1
            continue
        if code == OPT_END:
            return
        if i + 1 >= end:
            raise MalformedPacket(f"option {code} in the {where} has no length byte")
        n = data[i + 1]
        if i + 2 + n > end:
            raise MalformedPacket(
                f"option {code} in the {where} claims {n} bytes but only {end - i - 2} remain"
            )
        if code not in parts:
            parts[code] = []
            order.append(code)
        parts[code].append(data[i + 2 : i + 2 + n])
        i += 2 + n
    raise MalformedPacket(f"the {where} end without an END option (255); truncated packet?")


def _check_options(packet: Packet) -> None:
    """Validate options whose form the RFCs fix, naming the option at fault."""
    for code, value in packet.options:
        want = _FIXED_LENGTH.get(code)
        if want is not None and len(value) != want:
            raise MalformedPacket(f"option {code} must be {want} bytes, got {len(value)}")
    mtype = packet.message_type
    if mtype is not None and not 1 <= mtype <= 18:  # 9-18: RFC 3203, RFC 4388, RFC 6926
        raise MalformedPacket(f"option 53 message type {mtype} is not defined")
    client_id = packet.get(OPT_CLIENT_ID)
    if client_id is not None and len(client_id) < 2:
        raise MalformedPacket("option 61 (client-id) must be at least 2 bytes (RFC 2132 §9.14)")
    arch = packet.get(OPT_CLIENT_ARCH)
    if arch is not None and (not arch or len(arch) % 2):
        raise MalformedPacket(
            f"option 93 (client architecture) must be a list of 2-byte types, got {len(arch)} "
            "bytes (RFC 4578 §2.1)"
        )
    if packet.op == BOOTREQUEST and not packet.chaddr:
        # Every reply is addressed and every lease kept by chaddr (RFC 2131 §4.1).
        raise MalformedPacket("hlen 0: the request carries no client hardware address")
    if packet.op == BOOTREQUEST and packet.htype == HTYPE_ETHERNET and len(packet.chaddr) != 6:
        raise MalformedPacket(f"Ethernet chaddr must be 6 bytes, hlen is {len(packet.chaddr)}")


def encode(packet: Packet, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Wire bytes for `packet`, at most `max_size` bytes (RFC 2131 §2: 548 unless the client's
    option 57 allows more). Options go in the given order, so callers put the important ones first;
    options that do not fit are left off from the end, except those a reply cannot do without.
    Values over 255 bytes are split into consecutive instances (RFC 3396 §5)."""
    if len(packet.chaddr) > 16:
        raise ValueError(f"chaddr of {len(packet.chaddr)} bytes exceeds 16")
    if len(packet.sname) > 64 or len(packet.file) > 128:
        raise ValueError("sname is limited to 64 bytes and file to 128")
    header = HEADER.pack(
        packet.op,
        packet.htype,
        len(packet.chaddr),
        packet.hops,
        packet.xid,
        packet.secs,
        packet.flags,
        packet.ciaddr.packed,
        packet.yiaddr.packed,
        packet.siaddr.packed,
        packet.giaddr.packed,
        packet.chaddr,
        packet.sname,
        packet.file,
    )
    chunks = [_encode_option(code, value) for code, value in packet.options]
    budget = max_size - HEADER_SIZE - len(MAGIC_COOKIE) - 1  # END
    total = sum(len(c) for c in chunks)
    if total > budget:
        for i in reversed(range(len(chunks))):
            if packet.options[i][0] not in _NEVER_DROPPED:
                total -= len(chunks[i])
                chunks[i] = b""
                if total <= budget:
                    break
        if total > budget:
            raise ValueError(f"essential options need {total} bytes; the limit leaves {budget}")
    body = b"".join((header, MAGIC_COOKIE, *chunks, bytes([OPT_END])))
    if len(body) < MIN_REPLY_SIZE:
        body += bytes(MIN_REPLY_SIZE - len(body))
    return body


def _encode_option(code: int, value: bytes) -> bytes:
    if not 0 < code < 255:
        raise ValueError(f"option code {code} is PAD/END or out of range")
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    return b"".join(
        bytes((code, len(value[i : i + 255]))) + value[i : i + 255]
        for i in range(0, len(value), 255)
    )


def options_from(items: Iterable[tuple[int, bytes | None]]) -> tuple[tuple[int, bytes], ...]:
    """Options in order, skipping the ones with no value (None)."""
    return tuple((code, value) for code, value in items if value is not None)
