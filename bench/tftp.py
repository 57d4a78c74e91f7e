"""TFTP throughput: `rootfs serve` (TFTP only) against tftp-hpa's `in.tftpd`, in the same run.

Cases (issue 5):
  loopback, one 64 MiB download at blksize 512, 1468, 65464 (curl, lockstep: RFC 1350 + 2348)
  loopback, 32 concurrent downloads at 1468 (curl), aggregate throughput
  0.5 ms delay each way (a userspace relay: this kernel has no netem): one download at 1468,
  lockstep for both servers, and with windowsize 16 for ours (atftp, which speaks RFC 7440)

Each case alternates the servers run by run and reports medians; the ratio is our throughput over
tftp-hpa's (higher is better). Both servers serve the same directory from the page cache.

    python -m bench.tftp [--runs N] [--size MiB] [--concurrent-size MiB] [--delay-size MiB]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
LOOPBACK = "127.0.0.1"
PORT_OURS, PORT_HPA = 16969, 16970


@dataclass(frozen=True)
class Result:
    label: str
    ours: list[float]  # seconds per run
    peer: list[float]
    bytes_per_run: int
    target: float | None  # minimum speed ratio ours/peer, if the issue sets one
    peer_label: str = "tftp-hpa"

    def row(self) -> tuple[str, ...]:
        mine, theirs = statistics.median(self.ours), statistics.median(self.peer)
        ratio = theirs / mine
        verdict = "" if self.target is None else ("ok" if ratio >= self.target else "MISSED")
        return (
            self.label,
            f"{mine:.2f} s",
            f"{self.bytes_per_run / mine / MiB:.1f} MiB/s",
            f"{theirs:.2f} s",
            f"{self.bytes_per_run / theirs / MiB:.1f} MiB/s",
            f"{ratio:.2f}x",
            "" if self.target is None else f">= {self.target}x",
            verdict,
        )


def table(results: Sequence[Result]) -> str:
    header = ("case", "rootfs", "", "peer", "", "speed ratio", "target", "")
    rows = [header] + [r.row() for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def timed(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} failed: {proc.stderr.decode(errors='replace')}")
    return elapsed


def timed_many(argvs: Sequence[Sequence[str]]) -> float:
    start = time.perf_counter()
    procs = [
        subprocess.Popen(list(a), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"bench: {p.args!r} failed: {err.decode(errors='replace')}")
    return time.perf_counter() - start


def curl(host: str, port: int, name: str, blksize: int) -> list[str]:
    return ["curl", "-sS", "--tftp-blksize", str(blksize), "-o", "/dev/null",
            f"tftp://{host}:{port}/{name}"]  # fmt: skip


def atftp(host: str, port: int, name: str, *options: str) -> list[str]:
    argv = ["atftp"]
    for option in options:
        argv += ["--option", option]
    return [*argv, "-g", "-r", name, "-l", "/dev/null", host, str(port)]


def alternate(
    runs: int, ours: Callable[[], float], peer: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Warm up both, then alternate, so load drift on a shared machine hits both alike."""
    ours(), peer()
    a: list[float] = []
    b: list[float] = []
    for i in range(runs):
        if i % 2:
            b.append(peer())
            a.append(ours())
        else:
            a.append(ours())
            b.append(peer())
    return a, b


@contextlib.contextmanager
def servers(workdir: Path, address: str, netns: str | None) -> Iterator[None]:
    """`rootfs serve --no-dhcp` and `in.tftpd -L` on the same boot directory."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    site = workdir / "site"
    (site / "hostcfg").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ROOTFS_SITE": str(site), "ROOTFS_STATE_DIR": str(workdir / "state"),
           "ROOTFS_EXPORT_ROOT": str(workdir / "export")}  # fmt: skip
    boot = workdir / "export" / "boot"
    ours = subprocess.Popen(
        [*prefix, sys.executable, "-m", "rootfs", "serve", "--no-dhcp", "--no-http",
         "--tftp-address", address, "--tftp-port", str(PORT_OURS)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    hpa = subprocess.Popen(
        [*prefix, "in.tftpd", "-L", "-a", f"{address}:{PORT_HPA}", "-s", str(boot)],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)  # both bind within this on a quiet machine; a failed one shows below
        for proc in (ours, hpa):
            if proc.poll() is not None:
                sys.exit(f"bench: {proc.args!r} exited with {proc.returncode}")
        yield
    finally:
        for proc in (ours, hpa):
            proc.send_signal(signal.SIGTERM)
        for proc in (ours, hpa):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class DelayRelay:
    """A UDP relay that holds every datagram `delay` seconds each way: a stand-in for netem.

    This machine's kernel has no netem (nor fq/etf for BPF pacing), so the delay is added in
    userspace: the client talks to the relay's port, the relay talks to the server's port 69 and
    then to the transfer's TID, and replies come back from the relay's port (clients lock onto the
    first reply's port, RFC 1350 §4, so one port toward the client is enough). One transfer at a
    time. Its own overhead (tens of microseconds) lands on both servers alike.
    """

    def __init__(self, server: tuple[str, int], delay: float) -> None:
        self.server = server
        self.delay = delay
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind((LOOPBACK, 0))
        self.port = self.front.getsockname()[1]
        self.back: socket.socket | None = None
        self.client: tuple[str, int] | None = None
        self.tid: tuple[str, int] | None = None
        self.queue: list[tuple[float, int, socket.socket, bytes, tuple[str, int]]] = []
        self.seq = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def __enter__(self) -> DelayRelay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.front.close()
        if self.back:
            self.back.close()

    def _later(self, sock: socket.socket, data: bytes, dest: tuple[str, int]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (time.perf_counter() + self.delay, self.seq, sock, data, dest))

    def loop(self) -> None:
        while not self.stop.is_set():
            now = time.perf_counter()
            while self.queue and self.queue[0][0] <= now:
                _, _, sock, data, dest = heapq.heappop(self.queue)
                with contextlib.suppress(OSError):  # a socket of a finished transfer
                    sock.sendto(data, dest)
            wait = min(self.queue[0][0] - now, 0.05) if self.queue else 0.05
            socks = [self.front] + ([self.back] if self.back else [])
            ready, _, _ = select.select(socks, [], [], max(wait, 0))
            for sock in ready:
                data, source = sock.recvfrom(70000)
                if sock is self.front:
                    if source != self.client or data[:2] == b"\x00\x01":  # a new request
                        if self.back:
                            self.back.close()
                        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        self.back.bind((LOOPBACK, 0))
                        self.client, self.tid = source, None
                        self._later(self.back, data, self.server)
                    elif self.back and self.tid:
                        self._later(self.back, data, self.tid)
                else:
                    if self.tid is None:
                        self.tid = source
                    if self.client:
                        self._later(self.front, data, self.client)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tftp",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per server and case")
    parser.add_argument("--size", type=int, default=64, help="MiB, single downloads")
    parser.add_argument("--concurrent-size", type=int, default=8, help="MiB per concurrent client")
    parser.add_argument("--concurrent", type=int, default=32)
    parser.add_argument("--delay-size", type=int, default=16, help="MiB, the netem case")
    parser.add_argument("--delay-ms", type=float, default=0.5)
    parser.add_argument("--skip-delay", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("curl", "atftp", "in.tftpd"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found; run 'make install'")

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="rootfs-bench-tftp-") as tmp:
        work = Path(tmp)
        boot = work / "export" / "boot"
        boot.mkdir(parents=True)
        sizes = {
            "big.bin": args.size,
            "conc.bin": args.concurrent_size,
            "delay.bin": args.delay_size,
        }
        for name, mib in sizes.items():
            with open(boot / name, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MiB))
        os.chmod(work, 0o755)

        with servers(work, LOOPBACK, None):
            for blksize, target in ((512, None), (1468, 0.5), (65464, None)):
                a, b = alternate(
                    args.runs,
                    functools.partial(timed, curl(LOOPBACK, PORT_OURS, "big.bin", blksize)),
                    functools.partial(timed, curl(LOOPBACK, PORT_HPA, "big.bin", blksize)),
                )
                label = f"loopback {args.size} MiB, blksize {blksize}"
                results.append(Result(label, a, b, args.size * MiB, target))
                print(table(results[-1:]).splitlines()[-1], flush=True)
            n = args.concurrent
            a, b = alternate(
                max(3, args.runs // 2),
                lambda: timed_many([curl(LOOPBACK, PORT_OURS, "conc.bin", 1468)] * n),
                lambda: timed_many([curl(LOOPBACK, PORT_HPA, "conc.bin", 1468)] * n),
            )
            label = f"loopback {n} concurrent x {args.concurrent_size} MiB, 1468"
            results.append(Result(label, a, b, n * args.concurrent_size * MiB, 0.5))
            print(table(results[-1:]).splitlines()[-1], flush=True)

        if not args.skip_delay:
            delay = args.delay_ms / 1000
            size = args.delay_size * MiB
            with servers(work, LOOPBACK, None):
                relay_ours = DelayRelay((LOOPBACK, PORT_OURS), delay)
                relay_hpa = DelayRelay((LOOPBACK, PORT_HPA), delay)
                with relay_ours, relay_hpa:

                    def hpa_lockstep() -> float:
                        return timed(atftp(LOOPBACK, relay_hpa.port, "delay.bin", "blksize 1468"))

                    def ours_lockstep() -> float:
                        return timed(atftp(LOOPBACK, relay_ours.port, "delay.bin", "blksize 1468"))

                    def ours_window() -> float:
                        return timed(atftp(LOOPBACK, relay_ours.port, "delay.bin",
                                           "blksize 1468", "windowsize 16"))  # fmt: skip

                    runs = max(3, args.runs // 2)
                    what = f"{args.delay_ms} ms each way, {args.delay_size} MiB, 1468"
                    a, b = alternate(runs, ours_lockstep, hpa_lockstep)
                    results.append(Result(f"delay {what} lockstep", a, b, size, None))
                    print(table(results[-1:]).splitlines()[-1], flush=True)
                    a, b = alternate(runs, ours_window, hpa_lockstep)
                    label = f"delay {what} windowsize 16"
                    results.append(Result(label, a, b, size, 4.0, "tftp-hpa lockstep"))
                    print(table(results[-1:]).splitlines()[-1], flush=True)

    print()
    print(f"rootfs serve (TFTP) vs in.tftpd (tftp-hpa), medians of {args.runs} runs; "
          "speed ratio = peer time / rootfs time (higher is better)")  # fmt: skip
    print(table(results))


if __name__ == "__main__":
    main()
