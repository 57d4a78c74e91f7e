"""A DHCP load generator acting as a relay agent (giaddr set, hops 1), as Kea's perfdhcp does.

Each simulated client runs DISCOVER -> OFFER -> REQUEST -> ACK, resending after a timeout, with
`window` exchanges in flight. Acting as a relay means every reply comes back by unicast to our port
67, so any server (ours, dnsmasq) can be driven from one socket without raw packets. Used by
bench/dhcp.py and the crash test::

    python tests/dhcp_loadgen.py --server 192.168.232.1 --relay 192.168.232.2 --count 500
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import trio

from rootfs.netboot.dhcp.packet import (
    BOOTREQUEST,
    DHCPACK,
    DHCPDISCOVER,
    DHCPNAK,
    DHCPOFFER,
    DHCPREQUEST,
    OPT_MESSAGE_TYPE,
    OPT_PARAM_REQUEST,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    SERVER_PORT,
    MalformedPacket,
    Packet,
    decode_untrusted,
    encode,
)

PRL = bytes([1, 3, 6, 12, 15, 17, 28, 66, 67])  # what a network-booting client asks for


def mac_of(base: int, index: int) -> bytes:
    return (base + index).to_bytes(6, "big")


@dataclass
class Result:
    """What a run achieved; `acked` maps MAC to the address its last ACK gave."""

    done: int = 0
    failed: int = 0
    naks: int = 0
    resends: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acked: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "done": self.done,
            "failed": self.failed,
            "naks": self.naks,
            "resends": self.resends,
            "seconds": round(self.seconds, 4),
            "dora_per_s": round(self.done / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2),
            "acked": self.acked,
        }


@dataclass
class _Exchange:
    index: int
    mac: bytes
    started: float
    data: bytes  # the packet last sent, for resends
    sent: float
    tries: int = 1
    requesting: bool = False


class LoadGenerator:
    """Drive DORA exchanges against `server` from `relay`:67.

    Event-driven (one receive loop, one resend timer) rather than a task per client, so the
    generator stays cheaper than the servers it measures."""

    def __init__(
        self,
        *,
        server: IPv4Address,
        relay: IPv4Address,
        mac_base: int = 0x525400100000,
        timeout: float = 1.0,
        tries: int = 8,
        acks_fd: int | None = None,
    ) -> None:
        self.server = server
        self.relay = relay
        self.mac_base = mac_base
        self.timeout = timeout
        self.tries = tries
        self.acks_fd = acks_fd
        self._xid = int.from_bytes(os.urandom(4), "big")
        self._dest = (str(server), SERVER_PORT)

    async def run(self, count: int, *, window: int, repeat: int = 1) -> Result:
        """`count` clients, each DORA'd `repeat` times, `window` exchanges in flight."""
        result = Result()
        jobs = iter([i for _ in range(repeat) for i in range(count)])
        pending: dict[int, _Exchange] = {}
        all_done = trio.Event()
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        await sock.bind((str(self.relay), SERVER_PORT))

        async def start_next() -> None:
            index = next(jobs, None)
            if index is None:
                if not pending:
                    all_done.set()
                return
            self._xid = (self._xid + 1) & 0xFFFFFFFF
            mac = mac_of(self.mac_base, index)
            data = self._packet(self._xid, mac, (
                (OPT_MESSAGE_TYPE, bytes([DHCPDISCOVER])), (OPT_PARAM_REQUEST, PRL)
            ))  # fmt: skip
            now = time.perf_counter()
            pending[self._xid] = _Exchange(index, mac, now, data, now)
            await sock.sendto(data, self._dest)

        async def finish(xid: int, ex: _Exchange, yiaddr: IPv4Address | None) -> None:
            del pending[xid]
            if yiaddr is None:
                result.failed += 1
            else:
                result.done += 1
                result.latencies.append(time.perf_counter() - ex.started)
                mac = ex.mac.hex(":")
                result.acked[mac] = str(yiaddr)
                if self.acks_fd is not None:
                    os.write(self.acks_fd, f"{mac} {yiaddr}\n".encode())
            await start_next()

        async def receive() -> None:
            while True:
                data = await sock.recv(4096)
                try:
                    reply = decode_untrusted(data)
                except MalformedPacket:
                    continue
                ex = pending.get(reply.xid)
                if ex is None:
                    continue
                mtype = reply.message_type
                if mtype == DHCPNAK:
                    result.naks += 1
                    await finish(reply.xid, ex, None)
                elif mtype == DHCPACK and ex.requesting:
                    await finish(reply.xid, ex, reply.yiaddr)
                elif mtype == DHCPOFFER and not ex.requesting:
                    server_id = reply.get(OPT_SERVER_ID) or self.server.packed
                    ex.data = self._packet(reply.xid, ex.mac, (
                        (OPT_MESSAGE_TYPE, bytes([DHCPREQUEST])), (OPT_SERVER_ID, server_id),
                        (OPT_REQUESTED_IP, reply.yiaddr.packed), (OPT_PARAM_REQUEST, PRL),
                    ))  # fmt: skip
                    ex.requesting, ex.sent, ex.tries = True, time.perf_counter(), 1
                    await sock.sendto(ex.data, self._dest)

        async def resend() -> None:
            while True:
                await trio.sleep(self.timeout / 4)
                now = time.perf_counter()
                for xid, ex in list(pending.items()):
                    # RFC 2131 §4.1: back off, doubling, capped here at 4x.
                    if now - ex.sent < self.timeout * min(2 ** (ex.tries - 1), 4):
                        continue
                    if ex.tries >= self.tries:
                        await finish(xid, ex, None)
                        continue
                    ex.tries += 1
                    ex.sent = now
                    result.resends += 1
                    await sock.sendto(ex.data, self._dest)

        with sock:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                nursery.start_soon(resend)
                start = time.perf_counter()
                for _ in range(window):
                    await start_next()
                await all_done.wait()
                result.seconds = time.perf_counter() - start
                nursery.cancel_scope.cancel()
        return result

    def _packet(self, xid: int, mac: bytes, options: tuple[tuple[int, bytes], ...]) -> bytes:
        return encode(
            Packet(op=BOOTREQUEST, xid=xid, chaddr=mac, hops=1, giaddr=self.relay, options=options)
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="dhcp_loadgen.py", description=__doc__)
    parser.add_argument("--server", type=IPv4Address, required=True)
    parser.add_argument("--relay", type=IPv4Address, required=True)
    parser.add_argument("--count", type=int, default=100, help="distinct clients (MACs)")
    parser.add_argument("--repeat", type=int, default=1, help="DORAs per client")
    parser.add_argument("--window", type=int, default=64, help="exchanges in flight")
    parser.add_argument("--mac-base", type=lambda s: int(s.replace(":", ""), 16),
                        default=0x525400100000)  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--tries", type=int, default=8)
    parser.add_argument("--acks", help="append 'MAC IP' per ACK to this file, as they arrive")
    args = parser.parse_args()
    fd = None
    if args.acks:
        fd = os.open(args.acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    gen = LoadGenerator(
        server=args.server,
        relay=args.relay,
        mac_base=args.mac_base,
        timeout=args.timeout,
        tries=args.tries,
        acks_fd=fd,
    )
    result = trio.run(lambda: gen.run(args.count, window=args.window, repeat=args.repeat))
    print(json.dumps(result.summary()), flush=True)


if __name__ == "__main__":
    main()
