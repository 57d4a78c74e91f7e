"""The DHCP codec: bytes <-> packets both ways, round-trips, fuzzing, the malformed packets real
DHCP servers have crashed on, and a cross-check against an independent decoder (scapy)."""

from __future__ import annotations

import contextlib
import random
import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rootfs.netboot.dhcp.packet import (
    BOOTREPLY,
    BOOTREQUEST,
    DEFAULT_MAX_SIZE,
    DHCPDISCOVER,
    DHCPOFFER,
    HEADER,
    MAGIC_COOKIE,
    OPT_BOOTFILE,
    OPT_CLIENT_ARCH,
    OPT_CLIENT_ID,
    OPT_DNS,
    OPT_HOSTNAME,
    OPT_LEASE_TIME,
    OPT_MAX_SIZE,
    OPT_MESSAGE_TYPE,
    OPT_OVERLOAD,
    OPT_RELAY_AGENT,
    OPT_ROOT_PATH,
    OPT_ROUTER,
    OPT_SERVER_ID,
    OPT_SUBNET_MASK,
    OPT_USER_CLASS,
    OPT_VENDOR_CLASS,
    MalformedPacket,
    Packet,
    decode_untrusted,
    encode,
)

MAC = bytes.fromhex("525400e80011")


def raw(
    options: bytes,
    *,
    op: int = BOOTREQUEST,
    htype: int = 1,
    hlen: int = 6,
    sname: bytes = b"",
    file: bytes = b"",
    cookie: bytes = MAGIC_COOKIE,
) -> bytes:
    """A request built by hand, independent of `encode`."""
    header = HEADER.pack(
        op, htype, hlen, 0, 0xDEADBEEF, 3, 0x8000, bytes(4), bytes(4), bytes(4), bytes(4),
        MAC.ljust(16, b"\0"), sname.ljust(64, b"\0"), file.ljust(128, b"\0"),
    )  # fmt: skip
    return header + cookie + options


DISCOVER = raw(bytes([53, 1, 1, 55, 3, 1, 3, 17, 93, 2, 0, 7, 255]))


# -- table tests: bytes -> packet ----------------------------------------------------------


def test_decode_discover_fields() -> None:
    p = decode_untrusted(DISCOVER)
    assert (p.op, p.xid, p.secs, p.flags, p.broadcast) == (BOOTREQUEST, 0xDEADBEEF, 3, 0x8000, True)
    assert p.mac == "52:54:00:e8:00:11"
    assert p.message_type == DHCPDISCOVER
    assert p.get(55) == bytes([1, 3, 17])
    assert p.architectures == (7,)
    assert p.max_size == DEFAULT_MAX_SIZE


def test_decode_concatenates_split_options() -> None:
    """RFC 3396 §5: several instances of one option form one value."""
    p = decode_untrusted(raw(bytes([17, 2]) + b"ab" + bytes([12, 1]) + b"h" + bytes([17, 1]) + b"c"
                             + b"\xff"))  # fmt: skip
    assert p.get(OPT_ROOT_PATH) == b"abc"
    assert [c for c, _ in p.options] == [17, 12]


def test_decode_overload_reads_file_then_sname() -> None:
    """RFC 2132 §9.3: option 52 moves options into the file and sname fields."""
    data = raw(
        bytes([52, 1, 3, 53, 1, 1, 255]),
        file=bytes([12, 2]) + b"pc" + b"\xff",
        sname=bytes([17, 3]) + b"/rp" + b"\xff",
    )
    p = decode_untrusted(data)
    assert p.get(OPT_HOSTNAME) == b"pc" and p.get(OPT_ROOT_PATH) == b"/rp"
    assert p.file == b"" and p.sname == b""  # they held options, not names


def test_decode_max_size_counts_ip_and_udp_headers() -> None:
    big = decode_untrusted(raw(bytes([57, 2]) + struct.pack("!H", 1500) + b"\xff"))
    small = decode_untrusted(raw(bytes([57, 2]) + struct.pack("!H", 300) + b"\xff"))
    assert big.max_size == 1472
    assert small.max_size == DEFAULT_MAX_SIZE  # under 576 is illegal: the default stands


@pytest.mark.parametrize(
    ("value", "classes"),
    [
        (b"iPXE", (b"iPXE",)),  # iPXE's plain string
        (b"\x04iPXE", (b"iPXE",)),  # RFC 3004 list of one
        (b"\x03abc\x04iPXE", (b"abc", b"iPXE")),
        (b"\x09abc", (b"\x09abc",)),  # length past the end: a plain string after all
    ],
)
def test_user_class_both_forms(value: bytes, classes: tuple[bytes, ...]) -> None:
    p = decode_untrusted(raw(bytes([OPT_USER_CLASS, len(value)]) + value + b"\xff"))
    assert p.user_classes == classes


# -- bad input seen in DHCP server CVEs, each raising MalformedPacket saying what is wrong -----


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (DISCOVER[:235], "shorter than"),
        (b"", "shorter than"),
        (raw(b"\x35\x01\x01\xff", cookie=b"\0\0\0\0"), "magic cookie"),
        (raw(bytes([53, 1, 1])), "without an END"),
        (raw(bytes([53, 1, 1, 12])), "no length byte"),
        (raw(bytes([53, 1, 1, 12, 40]) + b"short" + b"\xff"), "claims 40 bytes"),
        (raw(bytes([53, 1, 1, 255]), hlen=17), "hlen 17"),
        (raw(bytes([53, 1, 1, 255]), hlen=200), "hlen 200"),
        (raw(bytes([53, 1, 1, 61, 0, 255])), "option 61"),
        (raw(bytes([53, 1, 1, 61, 1, 1, 255])), "option 61"),
        (raw(bytes([53, 1, 1, 93, 1, 0, 255])), "option 93"),
        (raw(bytes([53, 1, 1, 93, 3, 0, 7, 0, 255])), "option 93"),
        (raw(bytes([53, 1, 1, 93, 0, 255])), "option 93"),
        (raw(bytes([53, 2, 1, 1, 255])), "option 53 must be 1 bytes"),
        (raw(bytes([53, 1, 0, 255])), "message type 0"),
        (raw(bytes([53, 1, 1, 50, 3, 1, 2, 3, 255])), "option 50"),
        (raw(bytes([53, 1, 1, 52, 1, 4, 255])), "option 52"),
        (raw(bytes([52, 1, 1, 53, 1, 1, 255]), file=bytes([12, 5]) + b"pc"), "file field"),
        (raw(bytes([52, 1, 2, 53, 1, 1, 255]), sname=b"\x0c\x02pc"), "sname field"),
        (raw(bytes([53, 1, 1, 255]), op=3), "op 3"),
        (raw(bytes([53, 1, 1, 255]), hlen=4), "Ethernet chaddr"),
        (raw(bytes([53, 1, 1, 255]), hlen=0), "hlen 0"),
        (raw(bytes([53, 1, 1, 255]), htype=6, hlen=0), "hlen 0"),  # IEEE 802 networks
        (raw(bytes([53, 1, 1, 255]), htype=0, hlen=0), "hlen 0"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(MalformedPacket, match=message):
        decode_untrusted(data)


def test_zero_length_hostname_and_huge_relay_option_decode() -> None:
    """Legal but odd: the decoder keeps them; the responder decides (see test_dhcp_responder)."""
    relay = bytes([82, 255]) + bytes(255) + bytes([82, 200]) + bytes(200)
    p = decode_untrusted(raw(bytes([53, 1, 1, 12, 0]) + relay + b"\xff"))
    assert p.get(OPT_HOSTNAME) == b""
    assert p.get(OPT_RELAY_AGENT) == bytes(455)


# -- table tests: packet -> bytes ----------------------------------------------------------


def offer(**changes: object) -> Packet:
    fields: dict[str, object] = dict(
        op=BOOTREPLY,
        xid=0xDEADBEEF,
        chaddr=MAC,
        flags=0x8000,
        yiaddr=IPv4Address("192.168.232.11"),
        siaddr=IPv4Address("192.168.232.1"),
        file=b"pxelinux.0",
        options=(
            (OPT_MESSAGE_TYPE, bytes([DHCPOFFER])),
            (OPT_SERVER_ID, IPv4Address("192.168.232.1").packed),
            (OPT_LEASE_TIME, (86400).to_bytes(4, "big")),
            (OPT_SUBNET_MASK, IPv4Address("255.255.255.0").packed),
            (OPT_ROUTER, IPv4Address("192.168.232.1").packed),
            (OPT_DNS, IPv4Address("192.168.232.1").packed + IPv4Address("192.168.232.2").packed),
            (OPT_HOSTNAME, b"pc1"),
            (OPT_ROOT_PATH, b"192.168.232.1:/tftpboot/192.168.232.11,vers=3"),
            (OPT_BOOTFILE, b"pxelinux.0"),
            (OPT_VENDOR_CLASS, b"PXEClient"),
        ),
    )
    fields.update(changes)
    return Packet(**fields)  # type: ignore[arg-type]


def test_encode_exact_bytes() -> None:
    p = Packet(op=BOOTREPLY, xid=1, chaddr=MAC, options=((OPT_MESSAGE_TYPE, b"\x02"),))
    data = encode(p)
    assert len(data) == 300  # padded to the BOOTP minimum (RFC 951 §3)
    assert data[:4] == bytes([2, 1, 6, 0]) and data[4:8] == b"\0\0\0\x01"
    assert data[28:34] == MAC and data[236:240] == MAGIC_COOKIE
    assert data[240:244] == bytes([53, 1, 2, 255]) and data[244:] == bytes(56)


def test_encode_splits_long_options() -> None:
    """RFC 3396: a value over 255 bytes goes out as consecutive instances."""
    p = Packet(op=BOOTREPLY, xid=1, chaddr=MAC, options=((OPT_RELAY_AGENT, bytes(300)),))
    data = encode(p, 1000)
    assert data[240:242] == bytes([82, 255]) and data[497:499] == bytes([82, 45])
    assert decode_untrusted(data).get(OPT_RELAY_AGENT) == bytes(300)


def test_encode_respects_max_size_dropping_from_the_end() -> None:
    extras = tuple((200 + i, bytes(100)) for i in range(5))
    p = offer(options=(*offer().options, *extras))
    small, large = encode(p), encode(p, 1472)
    assert len(small) <= DEFAULT_MAX_SIZE < len(large)
    kept = decode_untrusted(small)
    assert kept.get(OPT_ROOT_PATH) is not None and kept.get(204) is None
    assert decode_untrusted(large).get(204) == bytes(100)


def test_encode_refuses_when_essentials_cannot_fit() -> None:
    p = Packet(op=BOOTREPLY, xid=1, chaddr=MAC, options=((OPT_RELAY_AGENT, bytes(400)),))
    with pytest.raises(ValueError, match="essential"):
        encode(p)


# -- round trips and fuzzing --------------------------------------------------------------

addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
free_codes = st.integers(1, 254).filter(
    lambda c: c not in (50, 51, 52, 53, 54, 57, 61, 93)  # fixed forms, generated below
)
option_lists = st.lists(
    st.tuples(free_codes, st.binary(max_size=300)), max_size=8, unique_by=lambda o: o[0]
)
packets = st.builds(
    Packet,
    op=st.sampled_from([BOOTREQUEST, BOOTREPLY]),
    xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=6, max_size=6),
    hops=st.integers(0, 255),
    secs=st.integers(0, 65535),
    flags=st.integers(0, 65535),
    ciaddr=addresses,
    yiaddr=addresses,
    siaddr=addresses,
    giaddr=addresses,
    sname=st.binary(max_size=64).map(lambda b: b.rstrip(b"\0")),
    file=st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")),
    options=st.tuples(
        st.tuples(st.just(OPT_MESSAGE_TYPE), st.integers(1, 8).map(lambda n: bytes([n]))),
        st.tuples(st.just(OPT_CLIENT_ARCH), st.sampled_from([b"\0\0", b"\0\x07", b"\0\x09\0\x07"])),
        st.tuples(st.just(OPT_CLIENT_ID), st.binary(min_size=2, max_size=20)),
    ).flatmap(lambda fixed: option_lists.map(lambda rest: (*fixed, *rest))),
)


@given(packets)
@settings(max_examples=300)
def test_round_trip(packet: Packet) -> None:
    assert decode_untrusted(encode(packet, 65000)) == packet


@given(st.binary(max_size=1500))
@settings(max_examples=2000)
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(MalformedPacket):  # anything else fails the test
        decode_untrusted(data)


def test_fuzz_mutations_of_valid_packets() -> None:
    """Flip, cut and splice bytes of real packets: only MalformedPacket may come out."""
    rng = random.Random(4)
    seeds = [DISCOVER, encode(offer(), 1472), raw(bytes([52, 1, 3, 255]), file=b"\x0c\x01x\xff")]
    outcomes = {"ok": 0, "malformed": 0}
    for _ in range(20000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            i = rng.randrange(len(data))
            if kind < 0.6:
                data[i] = rng.randrange(256)
            elif kind < 0.8:
                del data[i:]
            else:
                data[i:i] = rng.randbytes(rng.randint(1, 10))
            if not data:
                break
        try:
            decode_untrusted(bytes(data))
            outcomes["ok"] += 1
        except MalformedPacket:
            outcomes["malformed"] += 1
    assert outcomes["ok"] > 100 and outcomes["malformed"] > 100  # both paths were exercised


# -- cross-check with an independent decoder ----------------------------------------------


def test_scapy_reads_our_offer() -> None:
    scapy_dhcp = pytest.importorskip("scapy.layers.dhcp")
    data = encode(offer(options=(*offer().options, (OPT_RELAY_AGENT, bytes(40)))))
    bootp = scapy_dhcp.BOOTP(data)
    assert bootp.op == 2 and bootp.xid == 0xDEADBEEF and bootp.flags == 0x8000
    assert bootp.yiaddr == "192.168.232.11" and bootp.siaddr == "192.168.232.1"
    assert bootp.chaddr[:6] == MAC and bootp.file.rstrip(b"\0") == b"pxelinux.0"
    opts = {o[0]: o[1:] for o in bootp[scapy_dhcp.DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == (DHCPOFFER,)
    assert opts["server_id"] == ("192.168.232.1",)
    assert opts["lease_time"] == (86400,)
    assert opts["subnet_mask"] == ("255.255.255.0",)
    assert opts["name_server"] == ("192.168.232.1", "192.168.232.2")
    assert opts["hostname"] == (b"pc1",)
    assert opts["root_disk_path"] == (b"192.168.232.1:/tftpboot/192.168.232.11,vers=3",)
    assert opts["boot-file-name"] == (b"pxelinux.0",)
    assert opts["vendor_class_id"] == (b"PXEClient",)
    assert "end" in bootp[scapy_dhcp.DHCP].options


def test_we_read_scapys_discover() -> None:
    scapy_dhcp = pytest.importorskip("scapy.layers.dhcp")
    built = scapy_dhcp.BOOTP(op=1, xid=42, chaddr=MAC, flags=0x8000) / scapy_dhcp.DHCP(
        options=[
            ("message-type", "discover"),
            ("param_req_list", [1, 3, 17]),
            ("max_dhcp_size", 1500),
            ("client_id", b"\x01" + MAC),
            ("hostname", b"pc1"),
            "end",
        ]
    )
    p = decode_untrusted(bytes(built))
    assert (p.op, p.xid, p.mac, p.broadcast) == (1, 42, "52:54:00:e8:00:11", True)
    assert p.message_type == DHCPDISCOVER and p.get(55) == bytes([1, 3, 17])
    assert p.get(OPT_MAX_SIZE) == struct.pack("!H", 1500) and p.max_size == 1472
    assert p.get(OPT_CLIENT_ID) == b"\x01" + MAC and p.get(OPT_HOSTNAME) == b"pc1"
    assert p.get(OPT_OVERLOAD) is None
