"""The real HTTP server on loopback against real clients (curl, wget) and raw sockets.

The raw sockets do what real clients will not: traversal names sent verbatim, malformed request
lines, oversized heads, thousands of idle connections, a client that dribbles its headers and one
that stops reading. In every case the server keeps serving everyone else, and nothing outside the
boot directory is sent. Per-client configs (keyed by source address) run in a network namespace:
site.toml refuses loopback addresses for hosts.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from netns import SERVER_ADDRESS, needs_netns, netns_pair, start_serve, stop, write_site

from rootfs.config.site import Site, load_site
from rootfs.errors import ConfigError
from rootfs.netboot.boot.files import IPXE_SCRIPT, host_configs
from rootfs.netboot.http.server import HttpService
from rootfs.netboot.trace import TraceEvent, TraceLog
from rootfs.netboot.trace_report import describe

SECRET = b"TOP-SECRET-OUTSIDE-THE-BOOT-DIRECTORY"
BIG = 4 << 20
OLD = 1_600_000_000  # mtime of the served files: well in the past, so Last-Modified is strong
CLIENT_TIMEOUT = 60
QUICK = "header_timeout = 5\nidle_timeout = 5\nsend_timeout = 5\n"


def blob(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Server:
    service: HttpService
    port: int
    boot: Path
    trace: TraceLog
    site: Site

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def events(self) -> list[TraceEvent]:
        return list(self.trace.events())


def make_site(root: Path, http: str) -> Site:
    (root / "hostcfg").mkdir(parents=True, exist_ok=True)
    (root / "overlays" / "diskless").mkdir(parents=True, exist_ok=True)
    (root / "site.toml").write_text(
        '[paths]\nstate_dir = "state"\nexport_root = "export"\n'
        f"[http]\n{http}\n"
        '[[subnet]]\nnetwork = "10.0.0.0/24"\n'
    )
    (root / "hostcfg" / "hosts.toml").write_text('[hosts.pc1]\nmac = "52:54:00:12:34:11"\n'
                                                 'ip = "10.0.0.11"\n')  # fmt: skip
    site = load_site(root, environ={})
    boot = site.config.export_root / "boot"
    (boot / "grub" / "x86_64-efi").mkdir(parents=True)
    (boot / "big.bin").write_bytes(blob(BIG))
    (boot / "pxelinux.0").write_bytes(b"loader")
    (boot / "grub" / "x86_64-efi" / "normal.mod").write_bytes(b"module")
    (root / "secret").write_bytes(SECRET)
    (boot / "escape-link").symlink_to(root / "secret")
    (boot / "escape-dir").symlink_to(root)
    (boot / "inside-link").symlink_to("pxelinux.0")
    os.mkfifo(boot / "fifo")
    for path in (boot / "big.bin", boot / "pxelinux.0"):
        os.utime(path, (OLD, OLD))
    return site


async def start_server(nursery: trio.Nursery, root: Path, http: str = QUICK) -> Server:
    """The service in this test's trio run. One event loop unless `http` says otherwise: the
    tests read the log and the trace as soon as a client is done, and an extra loop reports a
    request on its own thread, a moment after its last byte went out."""
    if "loops" not in http:
        http += "loops = 1\n"
    site = make_site(root, http)
    trace = TraceLog(site.config.state_dir / "trace")
    service = HttpService(site, None, trace, port=0, address="127.0.0.1")
    port = await nursery.start(service.run)
    return Server(service, port, site.config.export_root / "boot", trace, site)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> Server:
    return await start_server(nursery, tmp_path / "site")


async def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a client to completion; fail the test (not hang it) if it takes too long."""
    with trio.fail_after(CLIENT_TIMEOUT):
        proc = await trio.run_process(
            list(argv), capture_stdout=True, capture_stderr=True, check=False
        )
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


def curl(*args: str) -> list[str]:
    return ["curl", "-sS", "--max-time", str(CLIENT_TIMEOUT), *args]


async def fetch(url: str, *args: str) -> tuple[int, bytes]:
    """curl's status code and body."""
    out = await run(curl("-o", "-", "-w", "\n%{http_code}", *args, url))
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code), body


async def connect(port: int) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.connect(("127.0.0.1", port))
    return sock


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]


async def read_until_close(sock: trio.socket.SocketType, timeout: float = 10) -> bytes:
    got = bytearray()
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    return bytes(got)


async def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send `request` verbatim and read the answer until the server closes."""
    with await connect(port) as sock:
        await send_all(sock, request)
        return await read_until_close(sock, timeout)


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def get(target: bytes, *extra: bytes) -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (
        target, b"".join(e + b"\r\n" for e in extra),
    )  # fmt: skip


# -- real clients ---------------------------------------------------------------------------


async def test_get_is_byte_exact_with_curl_and_wget(server: Server, tmp_path: Path) -> None:
    want = (server.boot / "big.bin").read_bytes()
    await run(curl("-o", str(tmp_path / "c"), server.url("big.bin")))
    assert (tmp_path / "c").read_bytes() == want
    await run(["wget", "-q", "-O", str(tmp_path / "w"), server.url("big.bin")])
    assert (tmp_path / "w").read_bytes() == want
    assert await fetch(server.url("grub/x86_64-efi/normal.mod")) == (200, b"module")
    assert await fetch(server.url("inside-link")) == (200, b"loader")  # a symlink kept inside
    assert await fetch(server.url("empty")) == (404, b"404 Not Found\n")
    (server.boot / "empty").write_bytes(b"")
    assert await fetch(server.url("empty")) == (200, b"")


async def test_head(server: Server) -> None:
    out = await run(curl("-I", server.url("big.bin")))
    head = out.stdout.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert f"Content-Length: {BIG}\r\n" in head and "Accept-Ranges: bytes\r\n" in head
    assert "Last-Modified: Sun, 13 Sep 2020 12:26:40 GMT\r\n" in head
    assert re.search(r'ETag: "[0-9a-f-]+"\r\n', head)
    # The head only: the connection stays open for the next request, with no body in between.
    with await connect(server.port) as sock:
        await send_all(sock, b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\n\r\n" + get(b"/pxelinux.0"))
        both = await read_until_close(sock)
    first, second = both.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and first.endswith(b"\r\n\r\n")
    assert second.startswith(b"200") and second.endswith(b"\r\n\r\nloader")


async def test_ranges(server: Server) -> None:
    want = (server.boot / "big.bin").read_bytes()
    url = server.url("big.bin")
    assert await fetch(url, "-r", "0-99") == (206, want[:100])
    assert await fetch(url, "-r", "-100") == (206, want[-100:])  # suffix range
    assert await fetch(url, "-r", f"{BIG - 10}-") == (206, want[-10:])
    assert await fetch(url, "-r", f"{BIG - 10}-{BIG + 1000}") == (206, want[-10:])
    code, body = await fetch(url, "-r", f"{BIG}-")  # past the end
    assert (code, body) == (416, b"416 Requested Range Not Satisfiable\n")
    out = await run(curl("-D", "-", "-o", "/dev/null", "-r", f"{BIG}-", url))
    assert f"Content-Range: bytes */{BIG}\r\n".encode() in out.stdout
    assert await fetch(url, "-r", "0-1,5-6") == (200, want)  # several ranges: the whole file
    assert await fetch(url, "-r", "0-10,5-20") == (206, want[:21])  # coalesced into one
    assert await fetch(server.url("boot.ipxe"), "-r", "0-6") == (206, b"#!ipxe\n")


async def test_resume_with_curl_and_wget(server: Server, tmp_path: Path) -> None:
    want = (server.boot / "big.bin").read_bytes()
    for tool, argv in (
        ("curl", curl("-C", "-", "-o", str(tmp_path / "curl"), server.url("big.bin"))),
        ("wget", ["wget", "-q", "-c", "-O", str(tmp_path / "wget"), server.url("big.bin")]),
    ):
        (tmp_path / tool).write_bytes(want[: 1 << 20])
        await run(argv)
        assert (tmp_path / tool).read_bytes() == want, tool
    ranges = [e.detail for e in server.events() if e.detail.get("status") == 206]
    assert len(ranges) == 2 and all(d["bytes"] == BIG - (1 << 20) for d in ranges)


async def test_conditional_requests(server: Server) -> None:
    url = server.url("big.bin")
    head = (await run(curl("-I", url))).stdout.decode()
    etag = re.search(r"ETag: (\S+)\r\n", head)[1]  # type: ignore[index]
    modified = re.search(r"Last-Modified: (.+)\r\n", head)[1]  # type: ignore[index]
    assert await fetch(url, "-H", f"If-None-Match: {etag}") == (304, b"")
    first = (server.boot / "big.bin").read_bytes()[:1]
    assert await fetch(url, "-H", 'If-None-Match: "other"', "-r", "0-0") == (206, first)
    assert await fetch(url, "-z", modified) == (304, b"")  # curl -z sends If-Modified-Since
    code, body = await fetch(url, "-z", "Sat, 01 Jan 2000 00:00:00 GMT")
    assert code == 200 and len(body) == BIG
    # If-Range: a stale validator gets the whole file, the current one the range.
    assert (await fetch(url, "-r", "0-9", "-H", 'If-Range: "stale"'))[0] == 200
    assert (await fetch(url, "-r", "0-9", "-H", f"If-Range: {etag}"))[0] == 206
    assert (await fetch(url, "-r", "0-9", "-H", f"If-Range: {modified}"))[0] == 206
    assert (await fetch(url, "-H", 'If-Match: "stale"'))[0] == 412
    # A file changed in place gets a new ETag, so the old one no longer matches.
    os.utime(server.boot / "big.bin", (OLD + 5, OLD + 5))
    code, body = await fetch(url, "-H", f"If-None-Match: {etag}")
    assert code == 200 and len(body) == BIG


async def test_keep_alive_serves_several_requests_on_one_connection(server: Server) -> None:
    names = ["pxelinux.0", "grub/x86_64-efi/normal.mod", "missing", "big.bin"]
    argv = curl("-w", "%{http_code} %{num_connects}\n")
    for name in names:
        argv += ["-o", "/dev/null", server.url(name)]
    out = await run(argv)
    assert out.stdout.decode().split("\n")[:-1] == ["200 1", "200 0", "404 0", "200 0"]
    assert server.service.stats["connections"] == 1
    assert server.service.stats["requests"] == 4


async def test_several_event_loops_share_the_work_and_the_counts(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """[http] loops = 3: connections land on the loops' threads, every answer is right, and
    `stats` adds up what each loop counted."""
    server = await start_server(nursery, tmp_path / "site", QUICK + "loops = 3\n")
    argv = curl("-w", "%{http_code}\n", "-o", "/dev/null", server.url("big.bin"))
    async with trio.open_nursery() as clients:
        for _ in range(24):
            clients.start_soon(run, argv)
    with trio.fail_after(5):  # a loop counts a chunk just after the kernel took it
        while server.service.stats["bytes"] < 24 * BIG:
            await trio.sleep(0.01)
    assert server.service.stats["bytes"] == 24 * BIG
    assert server.service.stats["requests"] == 24
    assert threading.active_count() >= 3  # the main thread and two loops, at least
    assert [t for t in threading.enumerate() if t.name == "rootfs-http"]


@pytest.mark.parametrize("value", ["-1", "65", "true"])
def test_loops_must_be_a_sane_count(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="loops"):
        make_site(tmp_path / "site", f"loops = {value}\n")


async def test_methods_and_logging(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rootfs.http")
    assert (await fetch(server.url("pxelinux.0"), "-X", "POST"))[0] == 405
    out = await run(curl("-D", "-", "-o", "/dev/null", "-X", "DELETE", server.url("x")))
    assert b"Allow: GET, HEAD\r\n" in out.stdout
    assert (await fetch(server.url("pxelinux.0"), "-X", "BREW"))[0] == 501
    assert (await fetch(server.url("pxelinux.0")))[0] == 200
    assert (await fetch(server.url("grub")))[0] == 403  # no directory listings
    assert (await fetch(server.url("grub/")))[0] == 403
    assert (await fetch(server.url("fifo")))[0] == 403
    assert (await fetch(server.url("missing")))[0] == 404
    levels = {
        re.search(r" (\d{3}) ", r.getMessage())[1]: r.levelno  # type: ignore[index]
        for r in caplog.records
        if r.name == "rootfs.http" and r.getMessage().startswith("http 127.0.0.1:")
    }
    assert levels == {"405": logging.INFO, "501": logging.INFO, "200": logging.DEBUG,
                      "403": logging.WARNING, "404": logging.INFO}  # fmt: skip


async def test_requests_go_into_the_trace(server: Server) -> None:
    await fetch(server.url("big.bin"))
    await fetch(server.url("boot.ipxe"))
    await fetch(server.url("nothing"))
    rows = server.events()
    assert [(e.source, e.event, e.ip) for e in rows] == [("http", "request", "127.0.0.1")] * 3
    lines = [describe(e) for e in rows]
    assert lines[0].startswith(f"GET /big.bin 200 {BIG} bytes  size={BIG} duration=")
    assert lines[1].startswith("GET /boot.ipxe 200 ") and "origin=generated ipxe" in lines[1]
    assert lines[2].startswith("GET /nothing 404 14 bytes") and lines[2].endswith(
        "(file not found)"
    )


# -- bad input from raw sockets -------------------------------------------------------------

TRAVERSALS = [
    b"/../secret", b"/%2e%2e/secret", b"/%2E%2E/secret", b"/grub/%2e%2e/%2e%2e/secret",
    b"/..%2fsecret", b"/.%2e/secret", b"/..\\secret", b"/%5c..%5csecret",
    b"/grub\\..\\..\\secret", b"/pxelinux.0%00.txt", b"/%00", b"/%0d%0aX:%20y",
    b"/grub\\x86_64-efi\\normal.mod", b"/grub%5cx86_64-efi%5cnormal.mod",  # no separator
    b"/escape-link", b"/escape-dir/secret",
]  # fmt: skip


@pytest.mark.parametrize("target", TRAVERSALS)
async def test_nothing_outside_the_boot_directory(server: Server, target: bytes) -> None:
    response = await raw(server.port, get(target))
    assert status(response) == 403, response
    assert SECRET not in response
    # With an absolute-form target too, and the server still serves the next client.
    response = await raw(server.port, get(b"http://x" + target))
    assert status(response) == 403 and SECRET not in response
    assert await fetch(server.url("pxelinux.0")) == (200, b"loader")


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /pxelinux.0\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /pxelinux.0 HTTP/1.1\r\n\r\n", 400),  # no Host (RFC 9112 §3.2)
        (b"GET /pxelinux.0 HTTP/1.1\r\nHost x\r\n\r\n", 400),
        (b"GET /pxe\x00linux.0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /pxe linux.0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (get(b"/%zz"), 400),
        (get(b"pxelinux.0"), 400),
        (get(b"/" + b"a" * 5000), 414),
        (get(b"/pxelinux.0", b"X-Big: " + b"a" * 20000), 431),
        (get(b"/" + b"a" * 20000), 431),
        (get(b"/pxelinux.0", b"Content-Length: 100000000"), 413),
        (get(b"/pxelinux.0", b"Content-Length: " + b"9" * 5000), 400),  # h11: bad length
        (get(b"/pxelinux.0", b"Content-Length: x"), 400),
        (get(b"/pxelinux.0", b"Transfer-Encoding: gzip"), 501),
        (get(b"/missing"), 404),
        (get(b"/etc/passwd"), 404),
        (get(b"//etc/passwd"), 404),
        (get(b"http://x/pxelinux.0"), 200),
    ],
)
async def test_bad_requests(server: Server, request_bytes: bytes, code: int) -> None:
    response = await raw(server.port, request_bytes)
    assert status(response) == code, response
    assert SECRET not in response
    assert await fetch(server.url("pxelinux.0")) == (200, b"loader")


async def test_a_request_body_is_read_and_ignored(server: Server) -> None:
    body = b"x" * 1000
    with await connect(server.port) as sock:
        await send_all(sock, b"GET /pxelinux.0 HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                       + body + get(b"/pxelinux.0"))  # fmt: skip
        both = await read_until_close(sock)
    assert both.count(b"HTTP/1.1 200 OK") == 2 and both.endswith(b"loader")


async def test_head_dribbled_in_pieces_past_the_limit(server: Server) -> None:
    with await connect(server.port) as sock:
        await send_all(sock, b"GET /pxelinux.0 HTTP/1.1\r\nHost: x\r\n")
        for _ in range(40):
            await send_all(sock, b"X-Pad: " + b"a" * 500 + b"\r\n")
            await trio.sleep(0.001)
        assert status(await read_until_close(sock)) == 431


async def test_thousands_of_idle_connections(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(
        nursery, tmp_path / "site", "max_connections = 4096\nheader_timeout = 60\n"
    )
    idle: list[trio.socket.SocketType] = []
    try:
        for i in range(2000):
            sock = await connect(server.port)
            idle.append(sock)
            if i % 2:  # half of them have started a request and stopped
                await send_all(sock, b"GET /big.bin HTTP/1.1\r\nHost:")
        with trio.fail_after(20):
            while server.service.connections < 2000:
                await trio.sleep(0.05)
        want = (server.boot / "big.bin").read_bytes()
        with trio.fail_after(30):
            assert await fetch(server.url("big.bin")) == (200, want)
            await run(["wget", "-q", "-O", str(tmp_path / "w"), server.url("big.bin")])
        assert (tmp_path / "w").read_bytes() == want
        assert server.service.connections >= 2000
    finally:
        for sock in idle:
            sock.close()
    with trio.fail_after(10):
        while server.service.connections:
            await trio.sleep(0.05)


async def test_connections_past_the_cap_get_503(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "site", "max_connections = 3\n")
    held = [await connect(server.port) for _ in range(3)]
    with trio.fail_after(10):
        while server.service.connections < 3:
            await trio.sleep(0.01)
    out = await run(curl("-D", "-", "-o", "/dev/null", server.url("pxelinux.0")))
    assert out.stdout.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Retry-After: 1\r\n" in out.stdout and b"Connection: close\r\n" in out.stdout
    for sock in held:
        sock.close()
    with trio.fail_after(10):
        while server.service.connections:
            await trio.sleep(0.01)
    assert await fetch(server.url("pxelinux.0")) == (200, b"loader")
    assert server.service.stats["rejected"] == 1


TIGHT = "header_timeout = 1\nidle_timeout = 1\nsend_timeout = 1\n"


async def test_slowloris_is_cut_off_at_the_header_deadline(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(nursery, tmp_path / "site", TIGHT)
    with await connect(server.port) as sock:
        start = trio.current_time()
        await send_all(sock, b"GET /pxelinux.0 HTTP/1.1\r\n")
        answer = b""
        with trio.fail_after(20):
            for byte in b"X-Slow: " + b"a" * 200:  # one byte every 50 ms: 10 s if let through
                try:
                    await send_all(sock, bytes((byte,)))
                except (BrokenPipeError, ConnectionResetError):
                    break
                # Meanwhile an honest client is served.
                await trio.sleep(0.05)
                with trio.move_on_after(0):
                    answer = await sock.recv(4096)
                if answer:
                    break
            answer += await read_until_close(sock)
        elapsed = trio.current_time() - start
    assert status(answer) == 408, answer
    assert 0.9 < elapsed < 5, elapsed  # the 1 s deadline, with room for a loaded machine
    assert await fetch(server.url("pxelinux.0")) == (200, b"loader")


async def test_idle_connections_are_closed(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "site", TIGHT)
    # A connection that never sends a byte: closed at the header deadline, without an answer.
    with await connect(server.port) as sock:
        start = trio.current_time()
        assert await read_until_close(sock) == b""
        assert 0.9 < trio.current_time() - start < 5
    # A kept-alive connection: its answer, then closed after idle_timeout.
    with await connect(server.port) as sock:
        await send_all(sock, b"GET /pxelinux.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        start = trio.current_time()
        answer = await read_until_close(sock)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"loader")
        assert 0.9 < trio.current_time() - start < 5


async def test_a_slow_reader_blocks_nobody_and_is_dropped(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(nursery, tmp_path / "site", TIGHT)
    want = (server.boot / "big.bin").read_bytes()
    slow = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with slow:
        await slow.connect(("127.0.0.1", server.port))
        await send_all(slow, get(b"/big.bin"))
        taken = 0
        with trio.fail_after(10):  # one byte every 100 ms: over a week for the whole file
            for _ in range(30):
                taken += len(await slow.recv(1))
                if taken == 1:  # the download has started; an honest client meanwhile
                    assert await fetch(server.url("big.bin")) == (200, want)
                await trio.sleep(0.1)
        rest = await read_until_close(slow)
    assert 0 < taken + len(rest) < BIG  # cut off, not served
    timeouts = [e.detail for e in server.events() if e.detail.get("outcome") == "timeout"]
    assert len(timeouts) == 1 and timeouts[0]["status"] == 200
    assert server.service.stats["timeouts"] == 1


async def test_reload_applies_new_limits(nursery: trio.Nursery, tmp_path: Path) -> None:
    server = await start_server(nursery, tmp_path / "site", "max_connections = 1\n")
    held = await connect(server.port)
    with trio.fail_after(10):
        while server.service.connections < 1:
            await trio.sleep(0.01)
    assert (await fetch(server.url("pxelinux.0")))[0] == 503
    site = server.site
    (site.site_toml).write_text(site.site_toml.read_text().replace("= 1\n", "= 10\n"))
    server.service.reload(load_site(site.root, environ={}))
    assert await fetch(server.url("pxelinux.0")) == (200, b"loader")
    held.close()


# -- per-client configs, as a real `rootfs serve` in a network namespace --------------------

PC1, PC2, STRANGER = "192.168.232.2", "192.168.232.3", "192.168.232.4"


@needs_netns
@pytest.mark.slow
def test_per_host_boot_ipxe_matches_tftp_and_is_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    (export / "boot").mkdir(parents=True)
    (export / "boot" / "vmlinuz").write_bytes(blob(1 << 20, 7))
    monkeypatch.setenv("ROOTFS_EXPORT_ROOT", str(export))
    site_root = tmp_path / "site"
    hosts = {"pc1": ("52:54:00:12:34:02", PC1), "pc2": ("52:54:00:12:34:03", PC2)}
    with netns_pair(client_address=PC1) as pair:
        for extra in (PC2, STRANGER):
            subprocess.run(["ip", "-n", pair.client.name, "addr", "add", f"{extra}/24", "dev",
                            pair.client.interface], check=True)  # fmt: skip
        write_site(site_root, {"pc1": hosts["pc1"]}, interface=pair.server.interface)
        serve = start_serve(
            pair.server, site_root, "--no-dhcp", "--http-port", "8080",
            "--http-address", SERVER_ADDRESS, "--tftp-address", SERVER_ADDRESS,
        )  # fmt: skip
        try:

            def http(source: str, name: str) -> bytes:
                url = f"http://{SERVER_ADDRESS}:8080/{name}"
                return pair.client.run(["curl", "-sS", "--fail", "--interface", source, url]).stdout

            def tftp(source: str, name: str) -> bytes:
                url = f"tftp://{SERVER_ADDRESS}/{name}"
                return pair.client.run(["curl", "-sS", "--interface", source, url]).stdout

            site = load_site(site_root, environ=os.environ)
            pc1_script = host_configs(site, site.host("pc1"))[IPXE_SCRIPT].encode()
            assert http(PC1, "boot.ipxe") == pc1_script == tftp(PC1, "boot.ipxe")
            assert b"pc1" in pc1_script
            stranger = http(STRANGER, "boot.ipxe")
            assert b"not registered" in stranger and stranger == tftp(STRANGER, "boot.ipxe")
            assert http(PC2, "boot.ipxe") == tftp(PC2, "boot.ipxe")  # not registered yet either
            wget = pair.client.run(["wget", "-q", "-O", "-", "--bind-address", PC1,
                                    f"http://{SERVER_ADDRESS}:8080/vmlinuz"])  # fmt: skip
            assert wget.stdout == (export / "boot" / "vmlinuz").read_bytes()

            # pc2 registered: the running server picks it up and answers pc2 as pc2.
            write_site(site_root, hosts, interface=pair.server.interface)
            log = site_root / "serve.log"
            deadline = time.monotonic() + 20
            while b"reloaded: 2 hosts" not in log.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.1)
            site = load_site(site_root, environ=os.environ)
            pc2_script = host_configs(site, site.host("pc2"))[IPXE_SCRIPT].encode()
            assert http(PC2, "boot.ipxe") == pc2_script == tftp(PC2, "boot.ipxe")
            assert b"pc2" in pc2_script and pc2_script != pc1_script
        finally:
            assert stop(serve) == 0
        trace = subprocess.run(
            [sys.executable, "-m", "rootfs", "--site", str(site_root), "trace", "pc1"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    lines = trace.stdout.splitlines()
    http_lines = [line for line in lines if "  http  " in line]
    assert any(f"{PC1}" in line and "tftp" in line for line in lines), lines
    assert any(f"GET /boot.ipxe 200 {len(pc1_script)} bytes" in line for line in http_lines)
    assert any("GET /vmlinuz 200 1048576 bytes" in line for line in http_lines), lines
    assert not any(STRANGER in line for line in lines)


# -- configuration and the command line -----------------------------------------------------


def test_http_table(tmp_path: Path) -> None:
    site = make_site(tmp_path / "a", "port = 8080\nmax_connections = 7\nidle_timeout = 0.5\n")
    http = site.config.http
    assert (http.enabled, http.port, http.max_connections, http.idle_timeout) == (
        True, 8080, 7, 0.5,
    )  # fmt: skip
    assert load_site(tmp_path / "nothing", environ={}).config.http.port == 80
    for bad, message in (
        ("prot = 80\n", "http.prot: unknown key"),
        ("port = 0\n", "http.port: 0 is out of range"),
        ("header_timeout = 0\n", "http.header_timeout: 0 is out of range"),
        ("enabled = 1\n", "http.enabled: expected true or false"),
    ):
        with pytest.raises(ConfigError, match=message):
            make_site(tmp_path / str(len(message)), bad)


def rootfs_serve(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ROOTFS_SITE": str(site), "ROOTFS_STATE_DIR": str(site / "state"),
           "ROOTFS_EXPORT_ROOT": str(site / "export")}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "rootfs", "serve", *args], env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def test_serve_says_in_one_line_why_http_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = rootfs_serve(tmp_path, "--no-dhcp", "--no-tftp", "--http-address", "127.0.0.1",
                           "--http-port", str(port))  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[-1] == (
        f"rootfs: error: http: cannot listen on 127.0.0.1:{port}: Address already in use; set"
        " [http] port or address in site.toml, or enabled = false (or --no-http)"
    )
    (tmp_path / "site.toml").write_text("[http]\nenabled = false\n")
    out = rootfs_serve(tmp_path, "--no-dhcp", "--no-tftp")
    assert out.returncode == 2 and "nothing to serve" in out.stderr
