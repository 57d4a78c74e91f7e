"""Network namespaces for tests with real clients and servers.

A `NetnsPair` is two namespaces joined by a veth pair: a server side (192.168.232.1/24 by default)
and a client side. Nothing leaves them: the addresses exist only inside, and deleting the namespaces
removes the veth pair with them. Every process started here is stopped by the same context manager.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVER_ADDRESS = "192.168.232.1"
CLIENT_ADDRESS = "192.168.232.2"
PREFIX = 24
_counter = itertools.count()


def netns_available() -> bool:
    """True when this process may create namespaces (root, iproute2 installed)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


needs_netns = pytest.mark.skipif(not netns_available(), reason="needs root and iproute2")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Namespace:
    """One namespace; `run`/`popen` execute commands inside it."""

    name: str
    interface: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(
        self, argv: Sequence[str | os.PathLike[str]], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self.argv(argv), capture_output=True, timeout=timeout, check=check)

    def popen(
        self, argv: Sequence[str | os.PathLike[str]], **kwargs: object
    ) -> subprocess.Popen[bytes]:
        """Start a process here; it is killed when the namespace is torn down, if still alive."""
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.argv(argv), start_new_session=True, **kwargs
        )
        self.processes.append(proc)
        return proc


@dataclass
class NetnsPair:
    server: Namespace
    client: Namespace


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 5) -> int:
    """Stop a process started by `Namespace.popen` (its whole session), escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    return proc.returncode


@contextlib.contextmanager
def netns_pair(
    *, client_mac: str | None = None, client_address: str | None = None, prefix: int = PREFIX
) -> Iterator[NetnsPair]:
    """Two fresh namespaces joined by veth; the server side has SERVER_ADDRESS/24, the client side
    `client_address` (none by default: DHCP clients configure it). Deleted on exit."""
    tag = f"{os.getpid() % 100000}x{next(_counter)}"
    pair = NetnsPair(
        Namespace(f"rfs-{tag}-s", f"rfs{tag}s"), Namespace(f"rfs-{tag}-c", f"rfs{tag}c")
    )
    created: list[str] = []
    try:
        for ns in (pair.server, pair.client):
            _ip("netns", "add", ns.name)
            created.append(ns.name)
        _ip(
            "link",
            "add",
            pair.server.interface,
            "type",
            "veth",
            "peer",
            "name",
            pair.client.interface,
        )
        for ns in (pair.server, pair.client):
            _ip("link", "set", ns.interface, "netns", ns.name)
            _ip("-n", ns.name, "link", "set", "lo", "up")
        if client_mac:
            _ip("-n", pair.client.name, "link", "set", pair.client.interface, "address", client_mac)
        _ip(
            "-n",
            pair.server.name,
            "addr",
            "add",
            f"{SERVER_ADDRESS}/{prefix}",
            "dev",
            pair.server.interface,
        )
        if client_address:
            _ip(
                "-n",
                pair.client.name,
                "addr",
                "add",
                f"{client_address}/{prefix}",
                "dev",
                pair.client.interface,
            )
        for ns in (pair.server, pair.client):
            _ip("-n", ns.name, "link", "set", ns.interface, "up")
        yield pair
    finally:
        for ns in (pair.client, pair.server):
            for proc in ns.processes:
                stop(proc, timeout=3)
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def wait_for_line(proc: subprocess.Popen[bytes], expected: bytes, *, timeout: float = 20) -> None:
    """Read the process's stdout until a line equals `expected`; fail with its stderr if it dies."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buffer += chunk
        if expected in buffer.split(b"\n"):
            return
    stop(proc)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    raise AssertionError(f"process did not print {expected!r}: {buffer!r} {err}")


LOADGEN = str(Path(__file__).with_name("dhcp_loadgen.py"))  # a relay-agent DHCP load generator


def start_serve(
    ns: Namespace, site: Path, *args: str, timeout: float = 20
) -> subprocess.Popen[bytes]:
    """`rootfs serve ARGS` for *site* in *ns*, logging to <site>/serve.log; returns once it says
    it is ready (its services are bound), or fails with the log if it stops first."""
    log_path = site / "serve.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = ns.popen(
            [sys.executable, "-m", "rootfs", "--site", site, "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(start)
            text = f.read()
        if b"serve: ready" in text:
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    stop(proc)
    raise AssertionError(f"rootfs serve did not get ready: {text.decode(errors='replace')}")


def write_script(path: Path, body: str) -> Path:
    """An executable shell script (client hook scripts)."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def write_site(
    root: Path,
    hosts: dict[str, tuple[str, str]],
    *,
    interface: str,
    dhcp: str = "",
    host_extra: dict[str, str] | None = None,
) -> Path:
    """A site directory on 192.168.232.0/24 with `hosts` (name -> (mac, ip)); `dhcp` is extra
    TOML for the [dhcp] table and `host_extra` extra TOML per host."""
    (root / "hostcfg").mkdir(parents=True, exist_ok=True)
    (root / "overlays" / "diskless").mkdir(parents=True, exist_ok=True)
    (root / "site.toml").write_text(
        f"""[server]
address = "{SERVER_ADDRESS}"

[paths]
state_dir = "{root / "state"}"
export_root = "/tftpboot"

[dhcp]
interfaces = ["{interface}"]
{dhcp}

[[subnet]]
network = "192.168.232.0/24"
gateway = "{SERVER_ADDRESS}"
dns = ["{SERVER_ADDRESS}"]
domain = "lab.test"
"""
    )
    lines = []
    for name, (mac, ip) in hosts.items():
        lines += [f"[hosts.{name}]", f'mac = "{mac}"', f'ip = "{ip}"']
        if host_extra and name in host_extra:
            lines.append(host_extra[name])
        lines.append("")
    (root / "hostcfg" / "hosts.toml").write_text("\n".join(lines))
    return root


def namespace_pids(holder: subprocess.Popen[bytes] | None, namespaces: Sequence[str]) -> set[int]:
    """Every process of a test lab: those sharing *holder*'s private mount namespace (rpcbind and
    ganesha.nfsd daemonize away from our children) and those in the network *namespaces*."""
    pids: set[int] = set()
    if holder is not None:
        with contextlib.suppress(OSError):
            ours = os.readlink(f"/proc/{holder.pid}/ns/mnt")
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        if os.readlink(f"/proc/{entry}/ns/mnt") == ours:
                            pids.add(int(entry))
    for ns in namespaces:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
        pids.update(int(p) for p in out.stdout.split())
    return pids


def kill_lab(
    holder: subprocess.Popen[bytes] | None,
    namespaces: Sequence[str],
    spawned: Sequence[subprocess.Popen[bytes]],
) -> None:
    """Stop every process of a lab: SIGTERM first (servers exit cleanly), then SIGKILL."""
    ours = [*spawned, *([holder] if holder else [])]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in namespace_pids(holder, namespaces):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while namespace_pids(holder, namespaces) and time.monotonic() < deadline:
            for proc in ours:
                proc.poll()  # reap our own children so they leave the process table
            time.sleep(0.1)
        if not namespace_pids(holder, namespaces):
            break
    for proc in ours:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
