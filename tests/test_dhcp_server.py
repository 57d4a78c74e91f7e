"""The DHCP server with real clients (dhclient, busybox udhcpc) in network namespaces.

Each test builds a namespace pair (server side 192.168.232.1, client side on a veth), runs
`rootfs serve --no-tftp` in the server namespace and a real client in the other, and checks what
the client's hook script saw. Nothing leaves the namespaces; all are deleted afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from netns import (
    CLIENT_ADDRESS,
    SERVER_ADDRESS,
    NetnsPair,
    needs_netns,
    netns_pair,
    start_serve,
    stop,
    wait_for_line,
    write_script,
    write_site,
)

from rootfs.netboot.dhcp.packet import DHCPACK, DHCPOFFER, OPT_ROOT_PATH, Packet, decode_untrusted

pytestmark = [needs_netns, pytest.mark.slow]

CAPTURE = str(Path(__file__).with_name("dhcp_capture.py"))
PC1 = ("pc1", "52:54:00:e8:00:11", "192.168.232.11")
ROOT_PC1 = f"{SERVER_ADDRESS}:/tftpboot/192.168.232.11,vers=3,tcp"


@dataclass
class Running:
    pair: NetnsPair
    site: Path
    proc: subprocess.Popen[bytes]

    def trace(self) -> list[dict[str, object]]:
        path = self.site / "state" / "trace" / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


def start_server(pair: NetnsPair, site: Path) -> subprocess.Popen[bytes]:
    return start_serve(pair.server, site, "--no-tftp")


@contextmanager
def serving(
    tmp_path: Path,
    *,
    client_mac: str,
    client_address: str | None = None,
    hosts: dict[str, tuple[str, str]] | None = None,
    dhcp: str = "",
) -> Iterator[Running]:
    with netns_pair(client_mac=client_mac, client_address=client_address) as pair:
        site = write_site(
            tmp_path / "site",
            hosts if hosts is not None else {PC1[0]: (PC1[1], PC1[2])},
            interface=pair.server.interface,
            dhcp=dhcp,
        )
        proc = start_server(pair, site)
        try:
            yield Running(pair, site, proc)
        finally:
            stop(proc)


def run_dhclient(
    running: Running, tmp_path: Path, *, timeout: int = 10, conf_extra: str = ""
) -> dict[str, str]:
    """dhclient once, foreground; the variables its script saw at BOUND (empty if none)."""
    out = tmp_path / "dhclient.env"
    script = write_script(
        tmp_path / "dhclient-script",
        f'{{ echo "reason=$reason"; env | grep "^new_"; echo ---; }} >> {out}\n',
    )
    conf = tmp_path / "dhclient.conf"
    # No "request root-path": the server must send option 17 anyway (udhcpc never asks either).
    conf.write_text(
        f"timeout {timeout};\nretry 1;\n"
        "request subnet-mask, broadcast-address, routers, domain-name, host-name;\n"
        + conf_extra
    )
    iface = running.pair.client.interface
    proc = running.pair.client.popen(
        [
            "dhclient",
            "-1",
            "-d",
            "-sf",
            script,
            "-cf",
            conf,
            "-lf",
            tmp_path / "dhclient.leases",
            "-pf",
            tmp_path / "dhclient.pid",
            iface,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout + 5
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and "reason=BOUND" in out.read_text():
                break
            time.sleep(0.1)
    finally:
        stop(proc)
    if not out.exists():
        return {}
    for block in out.read_text().split("---\n"):
        env = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if env.get("reason") == "BOUND":
            return env
    return {}


def run_udhcpc(running: Running, tmp_path: Path, *, tries: int = 4) -> dict[str, str]:
    """busybox udhcpc -q -n -f; the variables its script saw on `bound` (empty if none)."""
    out = tmp_path / "udhcpc.env"
    script = write_script(
        tmp_path / "udhcpc-script",
        f'{{ echo "event=$1"; echo "ip=$ip"; echo "rootpath=$rootpath"; echo "hostname=$hostname";'
        f' echo "siaddr=$siaddr"; echo "boot_file=$boot_file"; echo "subnet=$subnet";'
        f' echo "router=$router"; echo ---; }} >> {out}\n',
    )
    running.pair.client.run(
        [
            "busybox",
            "udhcpc",
            "-i",
            running.pair.client.interface,
            "-s",
            script,
            "-q",
            "-n",
            "-f",
            "-t",
            str(tries),
            "-T",
            "1",
            "-A",
            "1",
        ],
        check=False,
        timeout=30,
    )
    if not out.exists():
        return {}
    for block in out.read_text().split("---\n"):
        env = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if env.get("event") == "bound":
            return env
    return {}


def test_client_identifier_is_echoed_and_reservations_stay_by_mac(tmp_path: Path) -> None:
    """RFC 6842: option 61 comes back unaltered in OFFER and ACK, on the wire, to a real dhclient
    sending its own identifier; the address is still the MAC's reservation."""
    with serving(tmp_path, client_mac=PC1[1]) as running:
        capture = running.pair.client.popen(
            [sys.executable, CAPTURE, running.pair.client.interface, "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for_line(capture, b"ready")
        env = run_dhclient(
            running, tmp_path, conf_extra='send dhcp-client-identifier "rootfs-test-id";\n'
        )
        stop(capture)
        assert capture.stdout is not None
        seen = [json.loads(line) for line in capture.stdout.read().splitlines() if line]
    assert env.get("new_ip_address") == PC1[2]
    sent = {r["client_id"] for r in seen if r["to"] == "server"}
    assert sent == {b"rootfs-test-id".hex()}, seen  # what dhclient put on the wire
    replies = {r["type"]: r["client_id"] for r in seen if r["to"] == "client"}
    assert replies.get(DHCPOFFER) == replies.get(DHCPACK) == b"rootfs-test-id".hex(), seen


def test_dhclient_gets_reserved_address_and_root_path(tmp_path: Path) -> None:
    with serving(tmp_path, client_mac=PC1[1]) as running:
        env = run_dhclient(running, tmp_path)
        assert env.get("new_ip_address") == PC1[2]
        assert env.get("new_root_path") == ROOT_PC1
        assert env.get("new_host_name") == "pc1"
        assert env.get("new_subnet_mask") == "255.255.255.0"
        assert env.get("new_routers") == SERVER_ADDRESS
        assert env.get("new_domain_name") == "lab.test"
        assert env.get("new_filename") == "pxelinux.0"
        assert env.get("new_next_server") == SERVER_ADDRESS
        events = [(e["event"], e["detail"]["reply"]) for e in running.trace()]  # type: ignore[index]
        assert ("discover", "offer") in events and ("request", "ack") in events
        assert all(e["host"] == "pc1" for e in running.trace())
    lines = (running.site / "state" / "dhcp" / "leases.journal").read_text().splitlines()
    assert any(line.startswith(f"{PC1[2]} {PC1[1]} ") for line in lines)


def test_udhcpc_sees_rootpath(tmp_path: Path) -> None:
    with serving(tmp_path, client_mac=PC1[1]) as running:
        env = run_udhcpc(running, tmp_path)
    assert env.get("ip") == PC1[2]
    assert env.get("rootpath") == ROOT_PC1
    assert env.get("hostname") == "pc1"
    assert env.get("siaddr") == SERVER_ADDRESS
    assert env.get("boot_file") == "pxelinux.0"


def test_unknown_mac_gets_nothing_and_is_traced_once(tmp_path: Path) -> None:
    with serving(tmp_path, client_mac="52:54:00:e8:00:99") as running:
        env = run_udhcpc(running, tmp_path, tries=3)
        assert env == {}
        ignored = [e for e in running.trace() if e["mac"] == "52:54:00:e8:00:99"]
    # udhcpc sent three DISCOVERs; the trace (and log) mention the stranger once a minute.
    assert len(ignored) == 1
    assert ignored[0]["detail"]["reason"] == "unknown MAC"  # type: ignore[index]


def test_unknown_mac_gets_pool_address_when_enabled(tmp_path: Path) -> None:
    with serving(
        tmp_path,
        client_mac="52:54:00:e8:00:99",
        dhcp='pool = ["192.168.232.100-192.168.232.101"]',
    ) as running:
        env = run_udhcpc(running, tmp_path)
    assert env.get("ip") == "192.168.232.100"
    assert env.get("rootpath", "") == ""  # no tree exists for a stranger
    assert env.get("router") == SERVER_ADDRESS


def relay_exchange(running: Running, mac: bytes) -> tuple[Packet, Packet]:
    """DISCOVER then REQUEST as a relay agent (giaddr set, from port 67) inside the client
    namespace; returns the OFFER and the ACK the server sent back to the relay."""
    code = f"""
import socket, sys
from ipaddress import IPv4Address
from rootfs.netboot.dhcp.packet import *
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("{CLIENT_ADDRESS}", 67))
s.settimeout(5)
relay = IPv4Address("{CLIENT_ADDRESS}")
def ask(options):
    p = Packet(op=BOOTREQUEST, xid=0x1234, chaddr={mac!r}, hops=1, giaddr=relay, options=options)
    s.sendto(encode(p), ("{SERVER_ADDRESS}", 67))
    data, addr = s.recvfrom(2048)
    assert addr == ("{SERVER_ADDRESS}", 67), addr
    sys.stdout.write(data.hex() + "\\n")
    return decode_untrusted(data)
offer = ask(((OPT_MESSAGE_TYPE, bytes([DHCPDISCOVER])), (82, b"\\x01\\x04eth0")))
ask(((OPT_MESSAGE_TYPE, bytes([DHCPREQUEST])), (OPT_SERVER_ID, offer.get(OPT_SERVER_ID)),
     (OPT_REQUESTED_IP, offer.yiaddr.packed)))
"""
    result = running.pair.client.run([sys.executable, "-c", code], timeout=20)
    offer, ack = (decode_untrusted(bytes.fromhex(h)) for h in result.stdout.decode().split())
    return offer, ack


def test_relayed_request_answered_to_relay_port_67(tmp_path: Path) -> None:
    with serving(tmp_path, client_mac="52:54:00:e8:00:01", client_address=CLIENT_ADDRESS) as r:
        offer, ack = relay_exchange(r, bytes.fromhex(PC1[1].replace(":", "")))
    assert offer.message_type == DHCPOFFER and ack.message_type == DHCPACK
    assert offer.yiaddr == ack.yiaddr == IPv4Address(PC1[2])
    assert offer.giaddr == IPv4Address(CLIENT_ADDRESS)
    assert offer.get(82) == b"\x01\x04eth0"  # RFC 3046: echoed to the relay
    assert ack.get(OPT_ROOT_PATH) == ROOT_PC1.encode()


def test_reload_picks_up_new_host_without_losing_leases(tmp_path: Path) -> None:
    """SIGHUP (DhcpService.reload) serves a host added after start."""
    mac = "52:54:00:e8:00:22"
    with serving(tmp_path, client_mac=mac) as running:
        assert run_udhcpc(running, tmp_path, tries=2) == {}
        hosts = running.site / "hostcfg" / "hosts.toml"
        hosts.write_text(hosts.read_text() + f'[hosts.pc2]\nmac = "{mac}"\nip = "192.168.232.12"\n')
        running.proc.send_signal(1)  # SIGHUP to `ip netns exec` is passed on by exec
        time.sleep(0.5)
        (tmp_path / "udhcpc.env").unlink(missing_ok=True)
        env = run_udhcpc(running, tmp_path)
    assert env.get("ip") == "192.168.232.12"


@pytest.mark.skipif(shutil.which("dhclient") is None, reason="isc-dhcp-client not installed")
def test_server_survives_garbage(tmp_path: Path) -> None:
    """Malformed packets from a peer are dropped and counted; the next client is still served."""
    with serving(tmp_path, client_mac=PC1[1], client_address=CLIENT_ADDRESS) as running:
        code = f"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
hlen0 = bytes([1, 6, 0]) + bytes(233) + bytes([99, 130, 83, 99, 53, 1, 1, 255])
# The first malformed packet from a source is logged (the rest that minute only counted).
bad_option = bytes(236) + bytes([99, 130, 83, 99, 53, 9])
for data in (hlen0, b"", b"x" * 100, b"\\x01" * 300, bad_option):
    s.sendto(data, ("{SERVER_ADDRESS}", 67))
"""
        running.pair.client.run([sys.executable, "-c", code])
        running.pair.client.run(["ip", "addr", "flush", "dev", running.pair.client.interface])
        env = run_dhclient(running, tmp_path)
        assert env.get("new_ip_address") == PC1[2]
        stop(running.proc)
        out = (running.site / "serve.log").read_text()
    assert "malformed=5" in out, out
    assert "hlen 0" in out  # said as what it is, not as a request from an empty MAC
