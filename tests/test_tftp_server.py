"""The real TFTP server on loopback, against real clients (curl, atftp, tftp-hpa) and a raw one.

The raw client (a UDP socket in the test) does what real clients cannot be made to do on demand:
send traversal names verbatim, abort after the OACK like UEFI firmware, go silent, or send from the
wrong port.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from rootfs.config.site import Site, load_site
from rootfs.netboot.tftp import engine
from rootfs.netboot.tftp.packet import (
    ERR_ACCESS,
    ERR_ILLEGAL_OP,
    ERR_NOT_FOUND,
    ERR_OPTIONS,
    ERR_UNKNOWN_TID,
    Ack,
    Data,
    Error,
    OptionAck,
    Packet,
    ReadRequest,
    WriteRequest,
    decode_untrusted,
)
from rootfs.netboot.tftp.server import TftpService
from rootfs.netboot.trace import TraceLog

MAC = "52:54:00:12:34:11"
HOSTS = f'[hosts.pc1]\nmac = "{MAC}"\nip = "10.0.0.11"\n'
CLIENT_TIMEOUT = 120  # seconds: generous, for a loaded 2-core machine


def write_site(root: Path, *, tftp: str = "", hosts: str = HOSTS) -> Site:
    (root / "hostcfg").mkdir(parents=True, exist_ok=True)
    (root / "overlays" / "diskless").mkdir(parents=True, exist_ok=True)
    (root / "site.toml").write_text(
        '[server]\naddress = "10.0.0.1"\n'
        '[paths]\nstate_dir = "state"\nexport_root = "export"\n'
        f"[tftp]\n{tftp}\n"
        '[[subnet]]\nnetwork = "10.0.0.0/24"\n'
    )
    (root / "hostcfg" / "hosts.toml").write_text(hosts)
    site = load_site(root, environ={})
    (site.config.export_root / "boot").mkdir(parents=True, exist_ok=True)
    return site


@dataclass
class Server:
    service: TftpService
    port: int
    boot: Path
    trace: TraceLog
    site_root: Path

    def put(self, name: str, data: bytes) -> Path:
        path = self.boot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    async def events(self, event: str | None = None) -> list[dict[str, object]]:
        """The trace, once every transfer has been reported (the engine reports asynchronously)."""
        with trio.fail_after(5):
            while self.service.active_transfers:
                await trio.sleep(0.01)
        lines = self.trace.path.read_text().splitlines() if self.trace.path.exists() else []
        rows = [json.loads(line) for line in lines]
        return [r for r in rows if event is None or r["event"] == event]


async def start_server(nursery: trio.Nursery, root: Path, *, tftp: str = "") -> Server:
    site = write_site(root, tftp=tftp)
    trace = TraceLog(site.config.state_dir / "trace")
    service = TftpService(site, None, trace, port=0, address="127.0.0.1")
    port = await nursery.start(service.run)
    return Server(service, port, site.config.export_root / "boot", trace, root)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start_server(nursery, tmp_path / "site")


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def run_client(argv: Sequence[str], *, check: bool = True) -> trio.Process:
    """Run a client to completion; fail the test (not hang it) if it takes too long."""
    with trio.fail_after(CLIENT_TIMEOUT):
        proc = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc  # type: ignore[return-value]


def curl(port: int, name: str, out: Path, *extra: str) -> list[str]:
    return ["curl", "-sS", "--max-time", str(CLIENT_TIMEOUT), *extra, "-o", str(out),
            f"tftp://127.0.0.1:{port}/{name}"]  # fmt: skip


def atftp(port: int, name: str, out: Path, *options: str) -> list[str]:
    argv = ["atftp"]
    for option in options:
        argv += ["--option", option]
    return [*argv, "-g", "-r", name, "-l", str(out), "127.0.0.1", str(port)]


def tftp_hpa(port: int, name: str, out: Path) -> list[str]:
    return ["tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", name, str(out)]


class RawClient:
    """A TFTP client that sends exactly what the test says."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tid: tuple[str, int] | None = None

    async def __aenter__(self) -> RawClient:
        await self.sock.bind(("127.0.0.1", 0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()

    async def send_raw(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        await self.sock.sendto(data, to or ("127.0.0.1", self.port))

    async def send(self, packet: Packet) -> None:
        await self.send_raw(packet.encode(), self.tid)

    async def recv(self, timeout: float = 10.0) -> Packet:
        with trio.fail_after(timeout):
            data, peer = await self.sock.recvfrom(70000)
        if self.tid is None:
            self.tid = peer
        return decode_untrusted(data)

    async def expect_nothing(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            data = await self.sock.recv(70000)
            raise AssertionError(f"unexpected {decode_untrusted(data)}")

    async def download(self, name: bytes, *options: tuple[str, str]) -> bytes:
        """A whole lockstep (or windowed, by options) download; returns the bytes."""
        self.tid = None
        await self.send_raw(ReadRequest(name, "octet", options).encode())
        blksize = int(dict(options).get("blksize", 512))
        first = await self.recv()
        if isinstance(first, OptionAck):
            blksize = int(dict(first.options).get("blksize", 512))
            await self.send(Ack(0))
            first = await self.recv()
        got = bytearray()
        expected = 1
        packet = first
        while True:
            assert isinstance(packet, Data), packet
            if packet.block == expected % 65536:
                got += packet.payload
                expected += 1
                await self.send(Ack(packet.block))
                if len(packet.payload) < blksize:
                    return bytes(got)
            packet = await self.recv()


# -- real clients -----------------------------------------------------------------------------


@pytest.mark.parametrize("blksize", [None, "512", "1468", "65464"])
async def test_curl_downloads_byte_identical(server: Server, tmp_path: Path, blksize: str) -> None:
    src = server.put("kernels/vmlinuz", blob(3_000_001))
    out = tmp_path / "out"
    extra = ["--tftp-blksize", blksize] if blksize else []
    await run_client(curl(server.port, "kernels/vmlinuz", out, *extra))
    assert digest(out) == digest(src)
    (done,) = await server.events("transfer-done")
    assert done["detail"]["size"] == 3_000_001  # type: ignore[index]
    assert done["detail"]["blksize"] == int(blksize or 512)  # type: ignore[index]


@pytest.mark.parametrize("windowsize", ["1", "4", "16"])
async def test_atftp_windowsize_and_blksize(
    server: Server, tmp_path: Path, windowsize: str
) -> None:
    src = server.put("initrd.img", blob(2_500_000, 1))
    out = tmp_path / "out"
    await run_client(
        atftp(server.port, "initrd.img", out, "blksize 1468", f"windowsize {windowsize}")
    )
    assert digest(out) == digest(src)
    (done,) = await server.events("transfer-done")
    detail = done["detail"]
    assert isinstance(detail, dict)
    assert (detail["blksize"], detail["windowsize"]) == (1468, int(windowsize))


async def test_tftp_hpa_client_plain_rfc1350(server: Server, tmp_path: Path) -> None:
    src = server.put("pxelinux.0", blob(100_000, 2))
    out = tmp_path / "out"
    await run_client(tftp_hpa(server.port, "pxelinux.0", out))
    assert digest(out) == digest(src)
    (done,) = await server.events("transfer-done")
    assert done["detail"]["options"] == {}  # type: ignore[index]  # no OACK for a plain RRQ


SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module lacks the name


class CongestedSocket(socket.socket):
    """A real transfer socket whose every third send meets a full buffer (EAGAIN), as a busy
    NIC queue makes it; loopback itself never runs out of send buffer."""

    sends = 0

    def sendto(self, data: Any, *args: Any) -> int:
        CongestedSocket.sends += 1
        if CongestedSocket.sends % 3 == 0:
            raise BlockingIOError(errno.EAGAIN, "injected: send buffer full")
        return super().sendto(data, *args)


async def test_a_full_send_buffer_queues_the_window_instead_of_losing_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_job = TftpService._job

    def congested_job(self: TftpService, *args: Any) -> engine.Job:
        job = make_job(self, *args)
        job.sock = CongestedSocket(fileno=job.sock.detach())
        return job

    monkeypatch.setattr(TftpService, "_job", congested_job)
    data = blob(8192 * 40, 9)
    server.put("big", data)
    async with RawClient(server.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # we are root
        options = (("blksize", "8192"), ("windowsize", "16"))
        await client.send_raw(ReadRequest(b"big", "octet", options).encode())
        assert isinstance(await client.recv(), OptionAck)
        got = bytearray()
        for acked in (0, 16, 32):
            await client.send(Ack(acked))
            for block in range(acked + 1, min(acked + 16, 41) + 1):
                packet = await client.recv(timeout=0.5)  # well inside the 1 s retransmission
                assert isinstance(packet, Data) and packet.block == block
                got += packet.payload
        await client.send(Ack(41))
    assert bytes(got) == data
    (done,) = await server.events("transfer-done")
    assert done["detail"]["retransmits"] == 0  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.parametrize("client", ["curl", "tftp-hpa"])
async def test_over_32_mib_at_blksize_512_rolls_over(
    server: Server, tmp_path: Path, client: str
) -> None:
    size = (33 << 20) + 7  # 67_585 blocks of 512: block numbers wrap past 65535
    src = server.put("big.img", blob(size, 3))
    out = tmp_path / "out"
    argv = (
        curl(server.port, "big.img", out, "--tftp-blksize", "512")
        if client == "curl"
        else tftp_hpa(server.port, "big.img", out)
    )
    await run_client(argv)
    assert out.stat().st_size == size
    assert digest(out) == digest(src)


@pytest.mark.slow
async def test_fifty_concurrent_downloads(server: Server, tmp_path: Path) -> None:
    files = {f"f{i}.bin": server.put(f"f{i}.bin", blob(300_000 + i, i)) for i in range(5)}
    results: list[tuple[Path, Path]] = []

    async def one(i: int) -> None:
        name = f"f{i % 5}.bin"
        out = tmp_path / f"out{i}"
        blksize = ["512", "1468", "8192"][i % 3]
        await run_client(curl(server.port, name, out, "--tftp-blksize", blksize))
        results.append((files[name], out))

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(one, i)
    assert len(results) == 50
    assert all(digest(a) == digest(b) for a, b in results)
    assert len(await server.events("transfer-done")) == 50
    assert server.service.active_transfers == 0


# -- refusals ------------------------------------------------------------------------------------

TRAVERSALS = [
    b"../etc/passwd",
    b"..\\..\\etc\\passwd",
    b"kernels/../../secret",
    b"/etc/passwd",
    b"C:\\boot.ini",
    b"pxe\x01linux.0",
    b"pxelinux.0\x1b[2J",
    b"a" * 128,
    b"escape",  # a symlink leading out of the root
    b"escape-dir/secret",
]


async def test_each_traversal_is_refused_with_error_2(server: Server, tmp_path: Path) -> None:
    (server.site_root / "secret").write_bytes(b"secret")
    (server.boot / "escape").symlink_to("/etc/passwd")
    (server.boot / "escape-dir").symlink_to(server.site_root)
    async with RawClient(server.port) as client:
        for name in TRAVERSALS:
            await client.send_raw(ReadRequest(name, "octet").encode())
            reply = await client.recv()
            assert isinstance(reply, Error) and reply.code == ERR_ACCESS, (name, reply)
    refused = await server.events("rrq-refused")
    assert len(refused) == len(TRAVERSALS)
    assert all(r["detail"]["error"] == ERR_ACCESS for r in refused)  # type: ignore[index]


async def test_write_request_refused_and_nothing_written(server: Server) -> None:
    async with RawClient(server.port) as client:
        await client.send_raw(WriteRequest(b"evil", "octet").encode())
        reply = await client.recv()
    assert isinstance(reply, Error) and reply.code == ERR_ACCESS
    assert not (server.boot / "evil").exists()


async def test_missing_file_and_bad_mode(server: Server) -> None:
    server.put("f", b"x")
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"nope", "octet").encode())
        reply = await client.recv()
        assert isinstance(reply, Error) and reply.code == ERR_NOT_FOUND



@pytest.mark.parametrize("mode", [b"mail", b"netascii\x01", b"octet "])
async def test_a_request_in_an_unknown_mode_is_refused_before_any_transfer(
    server: Server, mode: bytes
) -> None:
    """RFC 1350 knows octet and netascii (mail is obsolete): anything else is ERROR 4 from the
    server's own port, with no transfer started (no new TID, nothing in flight, no DATA)."""
    server.put("f", b"x")
    async with RawClient(server.port) as client:
        await client.send_raw(b"\x00\x01f\x00" + mode + b"\x00")
        reply = await client.recv()
        assert isinstance(reply, Error) and reply.code == ERR_ILLEGAL_OP
        assert client.tid == ("127.0.0.1", server.port)
        assert server.service.active_transfers == 0
        await client.expect_nothing(0.3)
    refused = await server.events("rrq-refused")
    assert refused and "mode" in str(refused[-1]["detail"])
    assert await server.events("transfer-failed") == []


# -- protocol behaviour with a raw client -----------------------------------------------------


async def test_uefi_size_probe_then_real_download(server: Server) -> None:
    data = blob(50_000, 4)
    server.put("shimx64.efi", data)
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"shimx64.efi", "octet", (("tsize", "0"),)).encode())
        oack = await client.recv()
        assert oack == OptionAck((("tsize", "50000"),))
        await client.send(Error(ERR_OPTIONS, "tsize probe"))
        got = await client.download(b"shimx64.efi", ("tsize", "0"), ("blksize", "1432"))
    assert got == data
    await trio.sleep(0.1)
    events = [e for e in await server.events() if e["event"] != "rrq-refused"]
    outcomes = [e["detail"]["outcome"] for e in events]  # type: ignore[index]
    assert outcomes == ["client-abort", "done"]


async def test_wrong_tid_gets_error_5_and_the_transfer_continues(server: Server) -> None:
    data = blob(512 * 10 + 5, 5)
    server.put("f", data)
    async with RawClient(server.port) as client, RawClient(server.port) as stranger:
        await client.send_raw(ReadRequest(b"f", "octet").encode())
        first = await client.recv()
        assert first == Data(1, data[:512])
        assert client.tid is not None
        await stranger.send_raw(Ack(1).encode(), client.tid)
        reply = await stranger.recv()
        assert isinstance(reply, Error) and reply.code == ERR_UNKNOWN_TID
        await client.expect_nothing(0.2)  # the stranger's ACK moved nothing
        await client.send(Ack(1))
        assert await client.recv() == Data(2, data[512:1024])


async def test_duplicate_acks_from_a_real_socket_cause_no_duplicate_data(server: Server) -> None:
    data = blob(512 * 10, 6)
    server.put("f", data)
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"f", "octet", (("windowsize", "4"),)).encode())
        assert isinstance(await client.recv(), OptionAck)
        await client.send(Ack(0))
        window = [await client.recv() for _ in range(4)]
        assert [p.block for p in window if isinstance(p, Data)] == [1, 2, 3, 4]
        for _ in range(3):
            await client.send(Ack(4))
        burst = [await client.recv() for _ in range(4)]
        assert [p.block for p in burst if isinstance(p, Data)] == [5, 6, 7, 8]
        await client.expect_nothing(0.3)  # one burst, not three


async def test_silent_client_is_abandoned_after_bounded_retries(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(
        nursery, tmp_path / "site", tftp="timeout = 0.05\nmax_timeout = 0.1\nretries = 3\n"
    )
    server.put("f", blob(5000))
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"f", "octet").encode())
        copies = [await client.recv(timeout=5) for _ in range(4)]  # first + 3 retransmissions
        assert all(p == copies[0] for p in copies)
        await client.expect_nothing(0.5)
    (failed,) = await server.events("transfer-failed")
    assert failed["detail"]["outcome"] == "timed-out"  # type: ignore[index]
    assert server.service.active_transfers == 0


async def test_at_max_transfers_a_request_is_left_for_the_client_to_resend(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """An ERROR would end the boot of the client that asked (iPXE, PXE ROMs and atftp give up
    on one); no answer makes it send the request again, and that one is served."""
    server = await start_server(nursery, tmp_path / "site", tftp="max_transfers = 1\n")
    server.put("f", blob(5000))
    async with RawClient(server.port) as holder, RawClient(server.port) as waiter:
        await holder.send_raw(ReadRequest(b"f", "octet").encode())
        first = await holder.recv()  # the only slot is taken; its client does not ACK yet
        assert isinstance(first, Data)
        await waiter.send_raw(ReadRequest(b"f", "octet").encode())
        await waiter.expect_nothing(0.5)
        for block in range(1, 11):  # the holder finishes: 5000 bytes are 10 blocks of 512
            await holder.send(Ack(block))
            if block < 10:
                assert isinstance(await holder.recv(), Data)
        assert await waiter.download(b"f") == blob(5000)  # its resent request is served
    (busy,) = await server.events("rrq-busy")
    assert busy["detail"]["file"] == "f" and "max_transfers" in str(busy["detail"])  # type: ignore[index]


MALFORMED: list[bytes] = [
    b"",
    b"\x00",
    b"\x00\x05",
    b"\x00\x05\x00",  # ERROR of 3 bytes
    b"\x00\x01pxelinux.0",  # RRQ without terminators
    b"\x00\x01f\x00octet\x00blksize\x00",  # odd option count
    b"\x00\x01" + b"A" * 600 + b"\x00octet\x00",  # over 512 bytes
    b"\x00\x01f\x00unknownmode\x00",
    ReadRequest(b"f", "octet", (("blksize", "0"),)).encode(),
    ReadRequest(b"f", "octet", (("blksize", "7"),)).encode(),
    ReadRequest(b"f", "octet", (("blksize", "8"), ("timeout", "1"))).encode(),
    ReadRequest(b"f", "octet", (("blksize", "65465"),)).encode(),
    ReadRequest(b"f", "octet", (("blksize", "x"),)).encode(),
    ReadRequest(b"f", "octet", (("windowsize", "0"),)).encode(),
    ReadRequest(b"f", "octet", (("windowsize", "99999999"),)).encode(),
    Ack(3).encode(),
    Ack(65535).encode(),
    Data(1, b"x").encode(),
    OptionAck((("blksize", "8"),)).encode(),
    b"\x00\x07\x00\x00",
    b"\xff" * 70,
]


@pytest.mark.slow
async def test_malformed_barrage_during_a_real_download(server: Server, tmp_path: Path) -> None:
    src = server.put("big.bin", blob(8 << 20, 7))
    server.put("f", blob(4000, 8))
    out = tmp_path / "out"
    rng = random.Random(9)
    done = trio.Event()
    under_way = trio.Event()  # the barrage has begun: the download starts inside it
    sent = 0

    async def barrage() -> None:
        nonlocal sent
        async with RawClient(server.port) as noise:
            while not done.is_set():
                for packet in MALFORMED:
                    await noise.send_raw(packet)
                for _ in range(20):
                    await noise.send_raw(rng.randbytes(rng.randrange(0, 1400)))
                sent += len(MALFORMED) + 20
                if sent >= 200:
                    under_way.set()
                # Also aim at active transfer ports: they must answer ERROR 5, not break.
                for port in _udp_ports_of_this_process() - {server.port}:
                    await noise.send_raw(rng.randbytes(rng.randrange(0, 100)), ("127.0.0.1", port))
                await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(barrage)
        await under_way.wait()
        before = sent
        await run_client(curl(server.port, "big.bin", out, "--tftp-blksize", "512"))
        done.set()
    assert sent > before  # noise kept arriving while the download ran
    assert digest(out) == digest(src)
    async with RawClient(server.port) as client:  # still serving
        assert await client.download(b"f") == blob(4000, 8)


def _udp_ports_of_this_process() -> set[int]:
    """Local UDP ports of sockets this process holds (the server's transfer TIDs)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[9] in inodes and fields[1].startswith("0100007F:"):
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


async def test_same_client_port_asking_again_supersedes(server: Server) -> None:
    data = blob(2000, 10)
    server.put("f", data)
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"f", "octet").encode())
        await client.recv()
        got = await client.download(b"f")
    assert got == data
    await trio.sleep(0.1)
    assert server.service.active_transfers == 0


# -- generated per-host files -----------------------------------------------------------------


async def test_per_host_pxelinux_by_mac_and_hexip(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "cfg"
    await run_client(curl(server.port, "pxelinux.cfg/01-52-54-00-12-34-11", out))
    text = out.read_text()
    assert "KERNEL vmlinuz" in text and "APPEND root=/dev/nfs ip=dhcp" in text
    await run_client(curl(server.port, "pxelinux.cfg/0A00000B", out))  # 10.0.0.11
    assert out.read_text() == text
    assert not (server.boot / "pxelinux.cfg").exists()  # never written to disk
    (first, _) = await server.events("transfer-done")
    assert first["host"] == "pc1" and first["mac"] == MAC
    assert first["detail"]["origin"] == "generated pxelinux"  # type: ignore[index]


async def test_unknown_mac_is_not_found_and_default_says_unregistered(
    server: Server, tmp_path: Path
) -> None:
    out = tmp_path / "cfg"
    proc = await run_client(
        curl(server.port, "pxelinux.cfg/01-52-54-00-99-99-99", out), check=False
    )
    assert proc.returncode != 0  # pxelinux moves on to its next name
    await run_client(curl(server.port, "pxelinux.cfg/default", out))
    assert "not registered" in out.read_text()
    await run_client(curl(server.port, "boot.ipxe", out))
    assert out.read_text().startswith("#!ipxe") and "not registered" in out.read_text()


async def test_unknown_clients_ignore_policy(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "site", tftp='unknown_clients = "ignore"\n')
    async with RawClient(server.port) as client:
        await client.send_raw(ReadRequest(b"pxelinux.cfg/default", "octet").encode())
        reply = await client.recv()
    assert isinstance(reply, Error) and reply.code == ERR_NOT_FOUND


async def test_reload_serves_new_hosts_without_dropping_a_transfer(
    server: Server, tmp_path: Path
) -> None:
    data = blob(512 * 8, 11)
    server.put("f", data)
    async with RawClient(server.port) as slow:
        await slow.send_raw(ReadRequest(b"f", "octet").encode())
        first = await slow.recv()
        new = HOSTS + '[hosts.pc2]\nmac = "52:54:00:12:34:22"\nip = "10.0.0.22"\n'
        server.service.reload(write_site(server.site_root, hosts=new))
        out = tmp_path / "cfg"
        await run_client(curl(server.port, "pxelinux.cfg/01-52-54-00-12-34-22", out))
        assert "LABEL pc2" in out.read_text()
        got = bytearray(first.payload if isinstance(first, Data) else b"")
        block = 1
        while True:
            await slow.send(Ack(block))
            packet = await slow.recv()
            assert isinstance(packet, Data)
            got += packet.payload
            block += 1
            if len(packet.payload) < 512:
                await slow.send(Ack(block))
                break
    assert bytes(got) == data


def test_requests_decode_helper() -> None:
    # The raw client relies on the codec's encoders; make sure an RRQ is what curl would send.
    assert (
        ReadRequest(b"f", "octet", (("tsize", "0"),)).encode()
        == b"\x00\x01f\x00octet\x00tsize\x000\x00"
    )
    assert struct.unpack("!H", Ack(1).encode()[:2]) == (4,)
