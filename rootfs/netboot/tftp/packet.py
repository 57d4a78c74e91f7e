"""TFTP packets as values: decode wire bytes, encode replies. Pure: no sockets, no files, no clock.

Everything a peer sends passes through :func:`decode_untrusted`, which may raise only
:class:`MalformedPacket`; the server turns that into "ignore" or an ERROR reply, never a crash.
Layouts follow RFC 1350 (the base protocol) and RFC 2347 (option extension, OACK).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from rootfs.errors import ProtocolError

OPCODE_RRQ = 1  # RFC 1350 §5
OPCODE_WRQ = 2  # RFC 1350 §5
OPCODE_DATA = 3  # RFC 1350 §5
OPCODE_ACK = 4  # RFC 1350 §5
OPCODE_ERROR = 5  # RFC 1350 §5
OPCODE_OACK = 6  # RFC 2347

ERR_UNDEFINED = 0  # RFC 1350 appendix: "Not defined, see error message"
ERR_NOT_FOUND = 1  # RFC 1350 appendix
ERR_ACCESS = 2  # RFC 1350 appendix: access violation
ERR_DISK_FULL = 3  # RFC 1350 appendix
ERR_ILLEGAL_OP = 4  # RFC 1350 appendix: illegal TFTP operation
ERR_UNKNOWN_TID = 5  # RFC 1350 appendix: unknown transfer ID
ERR_EXISTS = 6  # RFC 1350 appendix
ERR_NO_USER = 7  # RFC 1350 appendix
ERR_OPTIONS = 8  # RFC 2347: option negotiation refused, transfer terminated

MAX_REQUEST = 512  # RFC 2347: a request with its options "must not exceed 512 octets"
BLOCK_MODULUS = 1 << 16  # RFC 1350 §5: block numbers are 16 bits; they wrap (to 0) past 65535

_OPCODE = struct.Struct("!H")
_OPCODE_BLOCK = struct.Struct("!HH")  # DATA and ACK headers; ERROR's opcode + code has the same


class MalformedPacket(ProtocolError):
    """The bytes are not a TFTP packet this server can read; the reason is for the log only."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """RRQ: a client asks for `filename` (raw bytes: paths.py decides what they may name)."""

    filename: bytes
    mode: str  # lowercased; "octet" and "netascii" are served, anything else refused
    options: tuple[tuple[str, str], ...] = ()  # names lowercased, first occurrence wins

    def option(self, name: str) -> str | None:
        """The value of option `name` (lowercase), if the client sent it."""
        return next((v for k, v in self.options if k == name), None)

    def encode(self) -> bytes:
        return _request(OPCODE_RRQ, self.filename, self.mode, self.options)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """WRQ: decoded only so it can be refused precisely (this server is read-only)."""

    filename: bytes
    mode: str
    options: tuple[tuple[str, str], ...] = ()

    def encode(self) -> bytes:
        return _request(OPCODE_WRQ, self.filename, self.mode, self.options)


@dataclass(frozen=True, slots=True)
class Data:
    """DATA: block `block` (16-bit, wrapped) carrying `payload`; short payload ends the file."""

    block: int
    payload: bytes

    def encode(self) -> bytes:
        return _OPCODE_BLOCK.pack(OPCODE_DATA, self.block) + self.payload


@dataclass(frozen=True, slots=True)
class Ack:
    """ACK: the receiver has every block up to `block` (RFC 7440 §4: the last one in order)."""

    block: int

    def encode(self) -> bytes:
        return _OPCODE_BLOCK.pack(OPCODE_ACK, self.block)


@dataclass(frozen=True, slots=True)
class Error:
    """ERROR: ends the transfer (RFC 1350 §7); never acknowledged or answered."""

    code: int
    message: str

    def encode(self) -> bytes:
        text = self.message.encode("ascii", "replace").replace(b"\0", b" ")
        return _OPCODE_BLOCK.pack(OPCODE_ERROR, self.code) + text + b"\0"


@dataclass(frozen=True, slots=True)
class OptionAck:
    """OACK: the options the server accepted, with the values it will use (RFC 2347)."""

    options: tuple[tuple[str, str], ...]

    def encode(self) -> bytes:
        return _OPCODE.pack(OPCODE_OACK) + b"".join(
            k.encode("ascii") + b"\0" + v.encode("ascii") + b"\0" for k, v in self.options
        )


Packet = ReadRequest | WriteRequest | Data | Ack | Error | OptionAck


def decode_untrusted(data: bytes) -> Packet:
    """Parse one datagram. Raises only MalformedPacket, whatever the bytes."""
    if len(data) < 4:  # every packet has at least an opcode and two more bytes
        raise MalformedPacket(f"{len(data)}-byte datagram is shorter than any TFTP packet")
    opcode = (data[0] << 8) | data[1]
    if opcode == OPCODE_ACK:
        # Trailing bytes are tolerated: some PXE ROMs pad short frames to the Ethernet minimum.
        return Ack((data[2] << 8) | data[3])
    if opcode == OPCODE_DATA:
        return Data((data[2] << 8) | data[3], data[4:])
    if opcode in (OPCODE_RRQ, OPCODE_WRQ):
        filename, mode, options = _parse_request(data)
        if opcode == OPCODE_RRQ:
            return ReadRequest(filename, mode, options)
        return WriteRequest(filename, mode, options)
    if opcode == OPCODE_ERROR:
        code = (data[2] << 8) | data[3]
        text = data[4:].split(b"\0", 1)[0]  # a missing terminator is forgiven: it is the last field
        return Error(code, text.decode("ascii", "replace"))
    if opcode == OPCODE_OACK:
        fields = _strings(data[2:], "OACK")
        if len(fields) % 2:
            raise MalformedPacket("OACK has an option without a value")
        return OptionAck(_pairs(fields, "OACK"))
    raise MalformedPacket(f"unknown opcode {opcode}")


def _parse_request(data: bytes) -> tuple[bytes, str, tuple[tuple[str, str], ...]]:
    if len(data) > MAX_REQUEST:
        raise MalformedPacket(f"{len(data)}-byte request exceeds {MAX_REQUEST} (RFC 2347)")
    fields = _strings(data[2:], "request")
    if len(fields) < 2:
        raise MalformedPacket("request lacks a filename or mode")
    filename, raw_mode, *rest = fields
    if not filename:
        raise MalformedPacket("request has an empty filename")
    mode = _ascii(raw_mode, "mode").lower()
    # Some ROMs pad requests with NULs: an odd trailing empty field is padding, not an option.
    while rest and len(rest) % 2 and rest[-1] == b"":
        rest.pop()
    if len(rest) % 2:
        raise MalformedPacket("request has an option without a value")
    return filename, mode, _pairs(rest, "request")


def _strings(body: bytes, what: str) -> list[bytes]:
    """NUL-terminated strings (RFC 1350 §5: every string field ends in a zero byte)."""
    if not body.endswith(b"\0"):
        raise MalformedPacket(f"{what} does not end with a NUL terminator")
    return body[:-1].split(b"\0")


def _pairs(fields: list[bytes], what: str) -> tuple[tuple[str, str], ...]:
    seen: dict[str, str] = {}
    for i in range(0, len(fields), 2):
        name = _ascii(fields[i], f"{what} option name").lower()
        if name and name not in seen:  # RFC 2347: names are case-insensitive
            seen[name] = _ascii(fields[i + 1], f"{what} option {name!r}")
    return tuple(seen.items())


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not ASCII") from None


def _request(
    opcode: int, filename: bytes, mode: str, options: tuple[tuple[str, str], ...]
) -> bytes:
    parts = [filename, mode.encode("ascii")]
    for name, value in options:
        parts += [name.encode("ascii"), value.encode("ascii")]
    return _OPCODE.pack(opcode) + b"".join(p + b"\0" for p in parts)
