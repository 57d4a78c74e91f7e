"""`rootfs serve` as a real process: serves, reloads on change and SIGHUP without dropping a
transfer, survives a broken inventory edit, and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from rootfs.netboot.tftp.packet import Ack, Data, ReadRequest, decode_untrusted

HOSTS = '[hosts.pc1]\nmac = "52:54:00:12:34:11"\nip = "10.0.0.11"\n'
PC2 = '[hosts.pc2]\nmac = "52:54:00:12:34:22"\nip = "10.0.0.22"\n'


class ServeProcess:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.changed = trio.Event()

    async def collect(self) -> None:
        assert self.proc.stderr is not None
        buffer = b""
        async for chunk in self.proc.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self.lines += [line.decode(errors="replace") for line in lines]
            self.changed.set()
            self.changed = trio.Event()

    async def wait_for(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if m := re.search(pattern, line):
                        return m
                await self.changed.wait()

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.search(pattern, line))


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "hostcfg").mkdir(parents=True)
    (root / "overlays" / "diskless").mkdir(parents=True)
    (root / "site.toml").write_text('[[subnet]]\nnetwork = "10.0.0.0/24"\n')
    (root / "hostcfg" / "hosts.toml").write_text(HOSTS)
    (tmp_path / "export" / "boot").mkdir(parents=True)
    (tmp_path / "export" / "boot" / "f").write_bytes(bytes(range(256)) * 40)
    return root


async def fetch(port: int, name: bytes) -> bytes:
    """Download `name` with a raw lockstep client."""
    got = bytearray()
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(ReadRequest(name, "octet").encode(), ("127.0.0.1", port))
        with trio.fail_after(20):
            while True:
                data, tid = await sock.recvfrom(2000)
                packet = decode_untrusted(data)
                assert isinstance(packet, Data), packet
                got += packet.payload
                await sock.sendto(Ack(packet.block).encode(), tid)
                if len(packet.payload) < 512:
                    return bytes(got)


@pytest.mark.slow
async def test_serve_reloads_and_stops_cleanly(
    nursery: trio.Nursery, site_dir: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "ROOTFS_SITE": str(site_dir),
        "ROOTFS_STATE_DIR": str(tmp_path / "state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / "export"),
    }
    argv = [sys.executable, "-m", "rootfs", "serve", "--no-dhcp", "--no-http", "--tftp-port", "0",
            "--tftp-address", "127.0.0.1"]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, env=env, stderr=subprocess.PIPE)
    serve = ServeProcess(proc)
    nursery.start_soon(serve.collect)
    try:
        port = int((await serve.wait_for(r"tftp listening on 127\.0\.0\.1:(\d+)"))[1])
        await serve.wait_for("serve: ready")
        assert await fetch(port, b"f") == bytes(range(256)) * 40

        # A transfer held open across a reload (its client pauses after block 1).
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as slow:
            await slow.bind(("127.0.0.1", 0))
            await slow.sendto(ReadRequest(b"f", "octet").encode(), ("127.0.0.1", port))
            data, tid = await slow.recvfrom(2000)
            assert decode_untrusted(data) == Data(1, (bytes(range(256)) * 2)[:512])

            # The inventory changes on disk: picked up without a signal.
            (site_dir / "hostcfg" / "hosts.toml").write_text(HOSTS + PC2)
            await serve.wait_for(r"serve: reloaded: 2 hosts")
            pc2 = await fetch(port, b"pxelinux.cfg/01-52-54-00-12-34-22")
            assert b"LABEL pc2" in pc2

            # A broken edit, then SIGHUP: logged, and the previous site keeps serving.
            (site_dir / "hostcfg" / "hosts.toml").write_text(HOSTS + "[hosts.pc3]\nmac = 1\n")
            proc.send_signal(signal.SIGHUP)
            await serve.wait_for(r"reload failed, still serving the previous site: .*hosts\.toml")
            assert b"LABEL pc2" in await fetch(port, b"pxelinux.cfg/01-52-54-00-12-34-22")

            # The held transfer finishes intact (skipping the retransmissions of block 1 the
            # server sent while this client paused).
            got = bytearray(decode_untrusted(data).payload)  # type: ignore[union-attr]
            block = 1
            while True:
                await slow.sendto(Ack(block).encode(), tid)
                with trio.fail_after(10):
                    packet = decode_untrusted(await slow.recv(2000))
                    while isinstance(packet, Data) and packet.block == block:
                        packet = decode_untrusted(await slow.recv(2000))
                assert isinstance(packet, Data) and packet.block == block + 1
                got += packet.payload
                block = packet.block
                if len(packet.payload) < 512:
                    await slow.sendto(Ack(block).encode(), tid)
                    break
            assert bytes(got) == bytes(range(256)) * 40

        with trio.fail_after(10):  # both downloads of f logged as complete
            while serve.count(r"tftp done .* 'f' host=- 10240/10240") < 2:
                await serve.changed.wait()

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            code = await proc.wait()
        assert code == 0
        await serve.wait_for("serve: stopped")
        assert not any("Traceback" in line for line in serve.lines), serve.lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_serve_help_mentions_reload() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rootfs", "serve", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "SIGHUP" in out.stdout
