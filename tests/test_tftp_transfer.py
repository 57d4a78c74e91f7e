"""The read-transfer state machine, driven by tables and a fake clock (no sockets, no files)."""

from __future__ import annotations

import random

import pytest

from rootfs.netboot.tftp.packet import (
    ERR_ILLEGAL_OP,
    ERR_OPTIONS,
    ERR_UNDEFINED,
    ERR_UNKNOWN_TID,
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    ReadRequest,
)
from rootfs.netboot.tftp.transfer import Limits, Outcome, ReadTransfer, stray_reply, to_netascii


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


DEFAULT_LIMITS = Limits()


def machine(
    data: bytes, *options: tuple[str, str], mode: str = "octet", limits: Limits = DEFAULT_LIMITS
) -> ReadTransfer:
    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    request = ReadRequest(b"file", mode, tuple(options))
    return ReadTransfer(request, size=len(data), read=read, limits=limits)


def blocks(packets: list[Packet]) -> list[int]:
    assert all(isinstance(p, Data) for p in packets), packets
    return [p.block for p in packets if isinstance(p, Data)]


class FakeClock:
    """The server's timing rule without the server: the wait restarts only when the machine sent
    something; `advance` calls `timeout()` each time a wait runs out."""

    def __init__(self, m: ReadTransfer) -> None:
        self.m = m
        self.now = 0.0
        self.sent: list[tuple[float, list[Packet]]] = []
        self.deadline = self._sent(m.start())

    def _sent(self, packets: list[Packet]) -> float:
        if packets:
            self.sent.append((self.now, packets))
            self.deadline = self.now + self.m.wait
        return self.deadline

    def receive(self, packet: Packet) -> list[Packet]:
        out = self.m.receive(packet)
        self._sent(out)
        return out

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while not self.m.finished and self.deadline <= end:
            self.now = self.deadline
            if not self._sent(self.m.timeout()):
                break
        self.now = end


# -- lockstep and block boundaries ------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected_blocks", "last_len"),
    [(0, 1, 0), (1, 1, 1), (511, 1, 511), (512, 2, 0), (1000, 2, 488), (1024, 3, 0)],
)
def test_lockstep_sends_each_block_once_and_ends_with_a_short_one(
    size: int, expected_blocks: int, last_len: int
) -> None:
    data = blob(size)
    m = machine(data)
    out = m.start()
    received = b""
    for n in range(1, expected_blocks + 1):
        assert blocks(out) == [n]
        assert isinstance(out[0], Data)
        received += out[0].payload
        out = m.receive(Ack(n))
    assert out == [] and m.finished and m.outcome is Outcome.DONE
    assert received == data
    assert len(received) - (expected_blocks - 1) * 512 == last_len


def test_rollover_past_65535_wraps_to_zero_and_keeps_the_bytes() -> None:
    data = blob(8 * 70_000 + 3)  # 70_001 blocks of 8 bytes: wraps once
    m = machine(data, ("blksize", "8"))
    assert m.start() == [OptionAck((("blksize", "8"),))]
    out = m.receive(Ack(0))
    got = bytearray()
    seen: list[int] = []
    while out:
        (packet,) = out
        assert isinstance(packet, Data)
        seen.append(packet.block)
        got += packet.payload
        out = m.receive(Ack(packet.block))
    assert m.outcome is Outcome.DONE
    assert bytes(got) == data
    assert seen[65534:65538] == [65535, 0, 1, 2]
    assert len(seen) == 70_001


def test_rollover_with_windows_maps_acks_across_the_wrap() -> None:
    data = blob(8 * 65_540)
    m = machine(data, ("blksize", "8"), ("windowsize", "7"))
    m.start()
    out = m.receive(Ack(0))
    got = bytearray()
    while out:
        got += b"".join(p.payload for p in out if isinstance(p, Data))
        out = m.receive(Ack(blocks(out)[-1]))
    assert bytes(got) == data and m.outcome is Outcome.DONE


# -- option negotiation (RFC 2347/2348/2349/7440) -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "oack", "blksize", "windowsize"),
    [
        ((), None, 512, 1),
        ((("tsize", "0"),), (("tsize", "3000"),), 512, 1),
        ((("blksize", "1432"), ("tsize", "0")), (("blksize", "1432"), ("tsize", "3000")), 1432, 1),
        ((("blksize", "0"),), None, 512, 1),  # below 8: ignored, as tftp-hpa does
        ((("blksize", "7"),), None, 512, 1),
        ((("blksize", "8"),), (("blksize", "8"),), 8, 1),
        ((("blksize", "65464"),), (("blksize", "65464"),), 65464, 1),
        ((("blksize", "65465"),), (("blksize", "65464"),), 65464, 1),  # lowered, not refused
        ((("blksize", "big"),), None, 512, 1),  # non-numeric: ignored
        ((("blksize", "9" * 400),), None, 512, 1),  # absurdly long number: ignored
        ((("windowsize", "0"),), None, 512, 1),
        ((("windowsize", "16"),), (("windowsize", "16"),), 512, 16),
        ((("windowsize", "65535"),), (("windowsize", "32"),), 512, 32),  # capped by Limits
        ((("timeout", "0"),), None, 512, 1),
        ((("timeout", "256"),), None, 512, 1),
        ((("blksize", "8"), ("timeout", "1")), (("blksize", "8"), ("timeout", "1")), 8, 1),
        ((("multicast", ""), ("utimeout", "5")), None, 512, 1),  # unknown: never echoed
    ],
)
def test_oack_carries_only_requested_accepted_options(
    options: tuple[tuple[str, str], ...],
    oack: tuple[tuple[str, str], ...] | None,
    blksize: int,
    windowsize: int,
) -> None:
    m = machine(blob(3000), *options)
    first = m.start()
    if oack is None:
        assert blocks(first) == [1]
    else:
        assert first == [OptionAck(oack)]
    assert (m.blksize, m.windowsize) == (blksize, windowsize)


def test_server_blksize_cap_lowers_the_clients_value() -> None:
    m = machine(blob(10), ("blksize", "65464"), limits=Limits(max_blksize=1468))
    assert m.start() == [OptionAck((("blksize", "1468"),))]


def test_client_timeout_option_sets_the_retransmission_wait() -> None:
    m = machine(blob(10), ("timeout", "5"))
    m.start()
    assert m.wait == 5.0


def test_data_starts_only_after_ack_zero_of_the_oack() -> None:
    m = machine(blob(3000), ("tsize", "0"))
    m.start()
    assert m.receive(Ack(1)) == []  # not yet: block 1 was never sent
    assert blocks(m.receive(Ack(0))) == [1]


def test_uefi_size_probe_error_8_after_oack_ends_quietly() -> None:
    m = machine(blob(3000), ("tsize", "0"))
    m.start()
    assert m.receive(Error(ERR_OPTIONS, "")) == []
    assert m.finished and m.outcome is Outcome.CLIENT_ABORT
    assert m.error == Error(ERR_OPTIONS, "")
    assert m.timeout() == [] and m.receive(Ack(0)) == []


def test_unknown_mode_is_refused_with_error_4() -> None:
    m = machine(blob(10), mode="mail")
    (err,) = m.start()
    assert isinstance(err, Error) and err.code == ERR_ILLEGAL_OP
    assert m.outcome is Outcome.FAILED


# -- windows (RFC 7440) and the Sorcerer's Apprentice -----------------------------------------


def started(data: bytes, windowsize: int) -> tuple[ReadTransfer, list[Packet]]:
    m = machine(data, ("windowsize", str(windowsize)))
    m.start()
    return m, m.receive(Ack(0))


def test_window_sends_windowsize_blocks_then_waits() -> None:
    m, out = started(blob(512 * 20), 4)
    assert blocks(out) == [1, 2, 3, 4]
    assert blocks(m.receive(Ack(4))) == [5, 6, 7, 8]


def test_ack_inside_window_resends_from_the_gap() -> None:
    m, out = started(blob(512 * 20), 4)
    assert blocks(out) == [1, 2, 3, 4]
    # The client got 1 and 2, lost 3: it ACKs 2 and the window restarts at 3 (RFC 7440 §4).
    assert blocks(m.receive(Ack(2))) == [3, 4, 5, 6]


@pytest.mark.parametrize("windowsize", [1, 4])
def test_duplicate_ack_never_causes_a_duplicate_burst(windowsize: int) -> None:
    m, out = started(blob(512 * 20), windowsize)
    last = blocks(out)[-1]
    nxt = m.receive(Ack(last))
    assert nxt
    for _ in range(5):
        assert m.receive(Ack(last)) == []  # the same ACK again: nothing
    assert m.receive(Ack(0)) == []  # an old one: nothing


def test_future_ack_is_ignored() -> None:
    m, _out = started(blob(512 * 20), 4)
    assert m.receive(Ack(9)) == []
    assert m.receive(Ack(60000)) == []
    assert blocks(m.receive(Ack(4))) == [5, 6, 7, 8]


def test_last_window_is_short_and_final_ack_finishes() -> None:
    m, _out = started(blob(512 * 5 + 1), 4)
    assert blocks(m.receive(Ack(4))) == [5, 6]
    assert m.receive(Ack(6)) == [] and m.outcome is Outcome.DONE


def test_wrong_tid_gets_error_5_and_the_transfer_is_undisturbed() -> None:
    m, _out = started(blob(512 * 20), 4)
    reply = stray_reply(Ack(4))
    assert isinstance(reply, Error) and reply.code == ERR_UNKNOWN_TID
    assert stray_reply(Error(0, "x")) is None  # never answer an ERROR with an ERROR
    # The stranger's packet never reached the machine: the real client continues as before.
    assert blocks(m.receive(Ack(4))) == [5, 6, 7, 8]


# -- timeouts, with a fake clock --------------------------------------------------------------


def test_lost_oack_is_resent_on_timeout() -> None:
    m = machine(blob(3000), ("tsize", "0"))
    clock = FakeClock(m)
    clock.advance(1.0)
    assert clock.sent[-1] == (1.0, [OptionAck((("tsize", "3000"),))])


def test_timeouts_back_off_then_abandon_within_a_bounded_time() -> None:
    m, _ = started(blob(512 * 20), 4)
    clock = FakeClock.__new__(FakeClock)
    clock.m, clock.now, clock.sent, clock.deadline = m, 0.0, [], m.wait
    clock.advance(1000)
    times = [t for t, _ in clock.sent]
    assert times == [1, 3, 7, 15, 23]  # waits 1, 2, 4, 8, 8 (capped): backoff
    assert all(blocks(p) == [1, 2, 3, 4] for _, p in clock.sent)  # the window again each time
    assert m.finished and m.outcome is Outcome.TIMED_OUT
    assert m.retransmits == 5


def test_progress_resets_the_backoff() -> None:
    m, _ = started(blob(512 * 20), 1)
    clock = FakeClock.__new__(FakeClock)
    clock.m, clock.now, clock.sent, clock.deadline = m, 0.0, [], m.wait
    clock.advance(3.5)  # two timeouts: wait is now 4
    assert m.wait == 4.0
    clock.receive(Ack(1))
    assert m.wait == 1.0


def test_duplicate_acks_do_not_keep_a_stalled_transfer_alive() -> None:
    m, _ = started(blob(512 * 20), 1)
    m.receive(Ack(1))
    clock = FakeClock.__new__(FakeClock)
    clock.m, clock.now, clock.sent, clock.deadline = m, 0.0, [], m.wait
    for _ in range(100):  # a client stuck re-sending ACK 1 every 0.5 s
        clock.advance(0.5)
        clock.receive(Ack(1))
    assert m.finished and m.outcome is Outcome.TIMED_OUT


def test_lost_final_ack_retransmits_the_last_block() -> None:
    m = machine(blob(100))
    clock = FakeClock(m)
    clock.advance(1.0)
    assert blocks(clock.sent[-1][1]) == [1]
    clock.receive(Ack(1))
    assert m.outcome is Outcome.DONE


# -- the source ---------------------------------------------------------------------------------


def test_file_shrinking_mid_transfer_fails_with_error_0() -> None:
    data = blob(3000)
    m = ReadTransfer(
        ReadRequest(b"f", "octet"), size=4000, read=lambda o, n: data[o : o + n], limits=Limits()
    )
    out = m.start()
    for n in range(1, 6):
        out = m.receive(Ack(n))
        if m.finished:
            break
    assert m.outcome is Outcome.FAILED
    assert isinstance(out[-1], Error) and out[-1].code == ERR_UNDEFINED


def test_netascii_conversion() -> None:
    assert to_netascii(b"a\nb\r\nc\rd") == b"a\r\nb\r\0\r\nc\r\0d"


def test_site_config_accepts_exactly_the_ranges_the_protocol_allows() -> None:
    """[tftp] max_blksize / max_windowsize are validated by the config layer, which cannot import
    the TFTP core: both must keep the RFC 2348 / RFC 7440 numbers."""
    from rootfs.config import tftp as config
    from rootfs.netboot.tftp import transfer

    assert (config.BLKSIZE_MIN, config.BLKSIZE_MAX) == (transfer.BLKSIZE_MIN, transfer.BLKSIZE_MAX)
    assert config.WINDOWSIZE_MAX == transfer.WINDOWSIZE_MAX
