"""The TFTP codec: bytes <-> packets both ways; malformed input raises only MalformedPacket."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rootfs.netboot.tftp.packet import (
    Ack,
    Data,
    Error,
    MalformedPacket,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    decode_untrusted,
)

WIRE: list[tuple[bytes, Packet]] = [
    (b"\x00\x01pxelinux.0\x00octet\x00", ReadRequest(b"pxelinux.0", "octet")),
    (
        b"\x00\x01a/b\x00NetASCII\x00BLKSIZE\x001468\x00tsize\x000\x00",
        ReadRequest(b"a/b", "netascii", (("blksize", "1468"), ("tsize", "0"))),
    ),
    (b"\x00\x02up\x00octet\x00", WriteRequest(b"up", "octet")),
    (b"\x00\x03\x00\x01hello", Data(1, b"hello")),
    (b"\x00\x03\xff\xff", Data(65535, b"")),
    (b"\x00\x04\x00\x00", Ack(0)),
    (b"\x00\x04\xff\xff", Ack(65535)),
    (b"\x00\x05\x00\x01File not found\x00", Error(1, "File not found")),
    (b"\x00\x06blksize\x001468\x00", OptionAck((("blksize", "1468"),))),
]


@pytest.mark.parametrize(("wire", "packet"), WIRE)
def test_decode_table(wire: bytes, packet: Packet) -> None:
    assert decode_untrusted(wire) == packet


@pytest.mark.parametrize(
    "packet",
    [p for _, p in WIRE if not isinstance(p, ReadRequest) or p.mode == "octet"],
)
def test_encode_round_trips(packet: Packet) -> None:
    assert decode_untrusted(packet.encode()) == packet


def test_lenient_where_real_clients_need_it() -> None:
    # ACKs padded to the Ethernet minimum by some PXE ROMs.
    assert decode_untrusted(b"\x00\x04\x00\x07" + b"\x00" * 42) == Ack(7)
    # An ERROR whose message lacks its terminator still reads.
    assert decode_untrusted(b"\x00\x05\x00\x08abort") == Error(8, "abort")
    # A request padded with an extra NUL.
    assert decode_untrusted(b"\x00\x01f\x00octet\x00tsize\x000\x00\x00") == ReadRequest(
        b"f", "octet", (("tsize", "0"),)
    )
    # Duplicate options: the first wins.
    req = decode_untrusted(b"\x00\x01f\x00octet\x00blksize\x00512\x00BLKSIZE\x009000\x00")
    assert isinstance(req, ReadRequest) and req.option("blksize") == "512"


MALFORMED = [
    b"",
    b"\x00",
    b"\x00\x04\x00",  # 3-byte ACK
    b"\x00\x05\x00",  # 3-byte ERROR (short ERRORs have crashed TFTP servers)
    b"\x00\x05",
    b"\x00\x01pxelinux.0",  # RRQ without NUL terminators
    b"\x00\x01pxelinux.0\x00octet",  # mode without terminator
    b"\x00\x01pxelinux.0\x00",  # no mode
    b"\x00\x01\x00octet\x00",  # empty filename
    b"\x00\x01f\x00octet\x00blksize\x00",  # odd option count
    b"\x00\x01f\x00octet\x00blksize\x001468\x00tsize\x00",  # odd again
    b"\x00\x01" + b"x" * 600 + b"\x00octet\x00",  # over 512 bytes (RFC 2347)
    b"\x00\x01f\x00oct\xe9t\x00",  # non-ASCII mode
    b"\x00\x01f\x00octet\x00bl\xffksize\x001\x00",  # non-ASCII option name
    b"\x00\x06blksize\x00",  # OACK without a value
    b"\x00\x06blksize\x001468",  # OACK without terminator
    b"\x00\x07\x00\x00",  # unknown opcode
    b"\xff\xff\xff\xff",
]


@pytest.mark.parametrize("wire", MALFORMED)
def test_malformed_raise_only_malformed(wire: bytes) -> None:
    with pytest.raises(MalformedPacket):
        decode_untrusted(wire)


@given(st.binary(max_size=700))
def test_any_bytes_decode_or_raise_malformed(wire: bytes) -> None:
    with contextlib.suppress(MalformedPacket):
        decode_untrusted(wire)


@given(
    st.binary(min_size=1, max_size=100).filter(lambda b: b"\0" not in b),
    st.sampled_from(["octet", "netascii"]),
    st.dictionaries(
        st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10),
        st.text("0123456789", max_size=6),
        max_size=4,
    ),
)
def test_request_round_trip(name: bytes, mode: str, options: dict[str, str]) -> None:
    packet = ReadRequest(name, mode, tuple(options.items()))
    assert decode_untrusted(packet.encode()) == packet


def test_error_message_cannot_smuggle_nul() -> None:
    assert decode_untrusted(Error(0, "a\0b").encode()) == Error(0, "a b")
