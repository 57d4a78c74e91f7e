"""One read transfer as a state machine: packets in, packets out. No clock, socket or file.

The server feeds it every packet from the client's TID (`receive`) and tells it when the wait it
asked for (`wait`, seconds) has passed without progress (`timeout`). Bytes come from a `read`
callback, so tests drive every path — option negotiation, windows, rollover, loss, give-up — with
tables and a fake clock, and the server alone decides how files are opened.

Rules, with their sources:
- Options (RFC 2347): only the ones the client asked for and we accept go in the OACK; a value we
  cannot honour is ignored (the option is left out) or lowered, never an error, as tftp-hpa does.
- Windows (RFC 7440): send `windowsize` blocks, then wait for an ACK. An ACK for a block inside the
  window slides it there (the client saw a gap); an ACK for anything already acknowledged, or for a
  block never sent, is ignored. Only a timeout retransmits, so a duplicated ACK can never start a
  duplicate burst (the Sorcerer's Apprentice bug, RFC 1123 §4.2.3.1).
- Block numbers wrap from 65535 to 0 (what tftp-hpa, curl and iPXE expect), so files of any size
  work at any block size; inside the machine blocks are counted without wrapping.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from rootfs.netboot.tftp.packet import (
    BLOCK_MODULUS,
    ERR_ILLEGAL_OP,
    ERR_UNDEFINED,
    ERR_UNKNOWN_TID,
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    ReadRequest,
)

OPT_BLKSIZE = "blksize"  # RFC 2348
OPT_TSIZE = "tsize"  # RFC 2349 §4
OPT_TIMEOUT = "timeout"  # RFC 2349 §3
OPT_WINDOWSIZE = "windowsize"  # RFC 7440
BLKSIZE_DEFAULT = 512  # RFC 1350 §1
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464  # RFC 2348: valid range
TIMEOUT_MIN, TIMEOUT_MAX = 1, 255  # RFC 2349 §3: seconds
WINDOWSIZE_MIN, WINDOWSIZE_MAX = 1, 65535  # RFC 7440 §3
MODES = ("octet", "netascii")  # RFC 1350 §1; "mail" is obsolete and refused

ReadBlock = Callable[[int, int], bytes]
"""`read(offset, length)`: `length` bytes of the file at `offset` (fewer: the file shrank)."""


class Outcome(enum.Enum):
    """How a transfer ended; the server logs it and writes it to the boot trace."""

    DONE = "done"  # the last block was acknowledged
    CLIENT_ABORT = "client-abort"  # the client sent ERROR (UEFI's tsize probe: ERROR 8 after OACK)
    TIMED_OUT = "timed-out"  # no progress through every retransmission
    FAILED = "failed"  # we sent ERROR (the file changed under us, or the client misbehaved)


@dataclass(frozen=True)
class Limits:
    """Server-side caps and retransmission policy (from [tftp] in site.toml)."""

    max_blksize: int = BLKSIZE_MAX
    max_windowsize: int = 32  # dnsmasq's cap; more mostly overruns client socket buffers
    timeout: float = 1.0  # first retransmission wait when the client sends no timeout option
    max_timeout: float = 8.0  # backoff doubles the wait up to this
    retries: int = 5  # retransmissions without progress before the transfer is abandoned


@dataclass(frozen=True)
class Negotiated:
    """The parameters in force, and the OACK that announces them (None: plain RFC 1350)."""

    blksize: int
    windowsize: int
    timeout: float
    oack: OptionAck | None


def negotiate(request: ReadRequest, *, size: int, limits: Limits) -> Negotiated:
    """Answer the client's options (RFC 2347 §4): accepted ones echo back, possibly lowered."""
    accepted: list[tuple[str, str]] = []
    blksize, windowsize, timeout = BLKSIZE_DEFAULT, 1, limits.timeout
    for name, raw in request.options:
        value = _int(raw)
        if value is None:
            continue  # non-numeric values: ignore the option, as tftp-hpa does
        if name == OPT_BLKSIZE and value >= BLKSIZE_MIN:
            blksize = min(value, BLKSIZE_MAX, limits.max_blksize)  # RFC 2348: may reply smaller
            accepted.append((name, str(blksize)))
        elif name == OPT_TSIZE and value >= 0:
            accepted.append((name, str(size)))  # RFC 2349 §4: RRQ sends 0, OACK the real size
        elif name == OPT_TIMEOUT and TIMEOUT_MIN <= value <= TIMEOUT_MAX:
            timeout = float(value)  # RFC 2349 §3: accepted as given or not at all
            accepted.append((name, str(value)))
        elif name == OPT_WINDOWSIZE and value >= WINDOWSIZE_MIN:
            windowsize = min(value, WINDOWSIZE_MAX, limits.max_windowsize)
            accepted.append((name, str(windowsize)))
    oack = OptionAck(tuple(accepted)) if accepted else None
    return Negotiated(blksize, windowsize, timeout, oack)


def _int(raw: str) -> int | None:
    # str.isdigit accepts non-ASCII digits; the codec already guarantees ASCII. Bound the length
    # so a 500-digit number cannot cost a quadratic int() (CVE-2020-10735's lesson).
    if not raw.isdigit() or len(raw) > 10:
        return None
    return int(raw)


def stray_reply(packet: Packet) -> Packet | None:
    """What to send a packet that reached a transfer's port from some other TID (RFC 1350 §4):
    ERROR 5, unless it is itself an ERROR (answering those could start an endless exchange).
    The transfer itself is not told: a stranger must not disturb it."""
    if isinstance(packet, Error):
        return None
    return Error(ERR_UNKNOWN_TID, "unknown transfer ID")


def to_netascii(data: bytes) -> bytes:
    """RFC 1350 §1 / RFC 764: LF becomes CR LF and a bare CR becomes CR NUL."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class ReadTransfer:
    """Sends one file to one client. Call `start()` once, then `receive` and `timeout`.

    Every method returns the packets to send to the client, in order. When `finished` is true,
    `outcome` says why and nothing more is to be sent. `wait` is how long the server should wait
    for progress before calling `timeout()`; the server restarts that wait only when a call returned
    packets, so a peer sending junk or duplicate ACKs cannot keep a stalled transfer alive.
    """

    def __init__(
        self, request: ReadRequest, *, size: int, read: ReadBlock, limits: Limits = Limits()
    ) -> None:
        self.request = request
        self.size = size
        self.limits = limits
        self._read = read
        terms = negotiate(request, size=size, limits=limits)
        self.blksize = terms.blksize
        self.windowsize = terms.windowsize
        self._oack = terms.oack
        self._base_timeout = terms.timeout
        self.wait = terms.timeout
        self.last_block = size // self.blksize + 1  # a short (maybe empty) block ends the file
        self._acked = 0  # every block up to this one (absolute, unwrapped) is acknowledged
        self._sent = 0  # blocks up to this one have been sent at least once
        self._awaiting_oack_ack = False
        self._retries = 0
        self.retransmits = 0  # total, for the trace
        self.finished = False
        self.outcome: Outcome | None = None
        self.error: Error | None = None  # the ERROR that ended it, either side's

    @property
    def options(self) -> dict[str, str]:
        """The options in the OACK (empty when the transfer is plain RFC 1350)."""
        return dict(self._oack.options) if self._oack else {}

    @property
    def bytes_acked(self) -> int:
        """File bytes the client has confirmed."""
        return min(self._acked * self.blksize, self.size)

    def start(self) -> list[Packet]:
        """The first packets: the OACK (then wait for ACK 0), or the first window."""
        if self.request.mode not in MODES:
            return self._fail(Error(ERR_ILLEGAL_OP, f"unsupported mode {self.request.mode!r}"))
        if self._oack is not None:
            self._awaiting_oack_ack = True
            return [self._oack]
        return self._window()

    def receive(self, packet: Packet) -> list[Packet]:
        """A packet from the client's TID."""
        if self.finished:
            return []
        if isinstance(packet, Ack):
            return self.ack(packet.block)
        if isinstance(packet, Error):
            self.finished, self.outcome, self.error = True, Outcome.CLIENT_ABORT, packet
            return []  # RFC 1350 §7: an ERROR is not acknowledged
        # A duplicate RRQ, a DATA or an OACK from our client is confusion, not malice; ignoring it
        # keeps the transfer alive, and the timeout recovers if the client really gave up.
        return []

    def timeout(self) -> list[Packet]:
        """`wait` seconds passed without progress: resend what is unacknowledged, or give up."""
        if self.finished:
            return []
        if self._retries >= self.limits.retries:
            self.finished, self.outcome = True, Outcome.TIMED_OUT
            return []
        self._retries += 1
        self.retransmits += 1
        self.wait = min(self.wait * 2, max(self.limits.max_timeout, self._base_timeout))
        if self._awaiting_oack_ack:
            return [self._oack] if self._oack else []
        self._sent = self._acked  # go back to the first unacknowledged block
        return self._window()

    def ack(self, wrapped: int) -> list[Packet]:
        """Same as `receive(Ack(wrapped))`, without building the packet: the per-block path."""
        if self.finished:
            return []
        if self._awaiting_oack_ack:
            if wrapped != 0:
                return []  # RFC 2347: the OACK is acknowledged with block 0; anything else is stale
            self._awaiting_oack_ack = False
            self._retries = 0
            self.wait = self._base_timeout
            return self._window()
        # Map the 16-bit number onto the only absolute block it can mean: one of those in flight
        # (acked+1 .. sent). Windows are far below 32768 blocks, so the mapping is unique.
        delta = (wrapped - self._acked) % BLOCK_MODULUS
        if delta == 0 or delta > self._sent - self._acked:
            return []  # duplicate (already acked) or a block never sent: no reaction (see above)
        self._acked += delta
        self._retries = 0
        self.wait = self._base_timeout
        if self._acked >= self.last_block:
            self.finished, self.outcome = True, Outcome.DONE
            return []
        if self._acked < self._sent:
            self._sent = self._acked  # RFC 7440 §4: the client saw a gap; resend from there
        return self._window()

    # -- internals --------------------------------------------------------------------------

    def _window(self) -> list[Packet]:
        out: list[Packet] = []
        end = min(self._acked + self.windowsize, self.last_block)
        while self._sent < end:
            block = self._sent + 1
            offset = (block - 1) * self.blksize
            length = max(0, min(self.blksize, self.size - offset))
            payload = self._read(offset, length) if length else b""
            if len(payload) != length:
                return out + self._fail(Error(ERR_UNDEFINED, "file changed during transfer"))
            out.append(Data(block % BLOCK_MODULUS, payload))
            self._sent = block
        return out

    def _fail(self, error: Error) -> list[Packet]:
        self.finished, self.outcome, self.error = True, Outcome.FAILED, error
        return [error]
