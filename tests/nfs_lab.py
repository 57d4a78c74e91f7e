"""A private network for NFS tests: a server namespace and client namespaces on one bridge.

Everything lives in 192.168.231.0/24 inside namespaces this module creates, so no packet
reaches a real network. The server side also gets a private mount namespace with its own /run,
because rpcbind binds /run/rpcbind.sock by path: sharing the host's /run would collide with (or
unlink) a system rpcbind's socket. Teardown kills every process in the namespaces it made
and deletes them, whatever happened in the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from netns import kill_lab

SUBNET_PREFIX = "192.168.231."
SERVER_IP = SUBNET_PREFIX + "1"
WAIT = 60.0  # generous: a loaded 2-core CI machine starts ganesha slowly


@dataclass
class Lab:
    """Namespace names and the command prefixes that run things inside them."""

    server_ns: str
    clients: dict[str, str]  # client IP -> namespace name
    holder: subprocess.Popen[bytes] | None = None
    _spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def in_server(self) -> list[str]:
        """Prefix running a command in the server's network and private-/run mount namespace."""
        assert self.holder is not None
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n"]

    def in_client(self, ip: str) -> list[str]:
        return ["ip", "netns", "exec", self.clients[ip]]

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a foreground daemon in the server namespaces; killed at teardown."""
        proc = subprocess.Popen(
            [*self.in_server, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._spawned.append(proc)
        return proc


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _listening(pid: int, port: int) -> bool:
    """Whether a TCP socket listens on `port` in the network namespace of `pid`
    (/proc/PID/net/tcp{,6} lists that namespace's sockets; state 0A is LISTEN)."""
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_listening(lab: Lab, port: int, *, what: str, log: str = "") -> None:
    assert lab.holder is not None
    deadline = time.monotonic() + WAIT
    while not _listening(lab.holder.pid, port):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not listen on port {port} within {WAIT}s\n{log}")
        time.sleep(0.1)


def _kill_all(lab: Lab) -> None:
    kill_lab(lab.holder, [lab.server_ns, *lab.clients.values()], lab._spawned)


@contextlib.contextmanager
def open_lab(client_ips: Sequence[str]) -> Iterator[Lab]:
    """Server at 192.168.231.1 and one namespace per client IP, all on one bridge."""
    tag = f"rfx{os.getpid() % 100000}"
    lab = Lab(server_ns=f"{tag}s", clients={ip: f"{tag}c{i}" for i, ip in enumerate(client_ips)})
    created: list[str] = []
    try:
        _ip("netns", "add", lab.server_ns)
        created.append(lab.server_ns)
        _ip("-n", lab.server_ns, "link", "set", "lo", "up")
        _ip("-n", lab.server_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", lab.server_ns, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        _ip("-n", lab.server_ns, "link", "set", "br0", "up")
        for i, (ip, ns) in enumerate(lab.clients.items()):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
                "netns", lab.server_ns)  # fmt: skip
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", lab.server_ns, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", lab.server_ns, "link", "set", f"p{i}", "up")
        lab.holder = subprocess.Popen(
            ["ip", "netns", "exec", lab.server_ns, "unshare", "--mount", "--propagation",
             "private", "sh", "-c",
             "mount -t tmpfs rootfs-test-run /run && mkdir -p /run/rpcbind && echo ready"
             " && exec sleep infinity"],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert lab.holder.stdout is not None
        if lab.holder.stdout.readline().strip() != b"ready":
            raise AssertionError("could not make a private /run in the server namespace")
        yield lab
    finally:
        _kill_all(lab)
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def nfs_cat(lab: Lab, client_ip: str, url: str) -> subprocess.CompletedProcess[str]:
    """`nfs-cat URL` from the client namespace whose address is `client_ip`."""
    return subprocess.run(
        [*lab.in_client(client_ip), "nfs-cat", url],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
