"""Capture DHCP on one interface (run inside a test's network namespace): every BOOTP packet
seen, sent or received, as one JSON line: direction, message type and option 61 in hex.

    python tests/dhcp_capture.py IFACE SECONDS

Prints "ready" once the socket listens. Used to check on the wire what a real client sent and
what the server answered (RFC 6842's client-identifier echo).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

from rootfs.netboot.dhcp.packet import (
    OPT_CLIENT_ID,
    OPT_MESSAGE_TYPE,
    MalformedPacket,
    decode_untrusted,
)

ETH_P_ALL = 0x0003  # outgoing frames reach only ETH_P_ALL sockets
ETH_P_IP = 0x0800


def main() -> None:
    iface, seconds = sys.argv[1], float(sys.argv[2])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65536)
        except TimeoutError:
            continue
        if frame[12:14] != ETH_P_IP.to_bytes(2, "big"):
            continue
        ip = frame[14:]
        if len(ip) < 28 or ip[9] != socket.IPPROTO_UDP:
            continue
        header = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, header)
        if {sport, dport} != {67, 68}:
            continue
        try:
            packet = decode_untrusted(ip[header + 8 :])
        except MalformedPacket:
            continue
        mtype = packet.get(OPT_MESSAGE_TYPE)
        client_id = packet.get(OPT_CLIENT_ID)
        record = {
            "to": "server" if dport == 67 else "client",
            "type": mtype[0] if mtype else None,
            "client_id": client_id.hex() if client_id is not None else None,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
