"""HTTP throughput: `rootfs serve` (HTTP only) against nginx, in the same run.

Cases (one 64 MiB file from the page cache, on loopback):
  1 client downloading it, one download at a time
  32 clients downloading it at once, aggregate throughput

Peers: Debian's nginx-light with `sendfile on; tcp_nopush on`, access log off, its own config,
prefix and temp paths in a temporary directory, on another port, stopped at the end; once with
`worker_processes 1` (one event loop, like rootfs: the ratio the target is set on) and once with
`worker_processes auto` (one per CPU; for information). Clients are curl processes writing to
/dev/null: the same client for every server, so what it costs lands on each alike.

rootfs runs as `rootfs serve --no-dhcp --no-tftp` with its defaults (successful GETs logged at
DEBUG, so not at all; every request still goes into the boot trace). Each case alternates the
servers run by run and reports medians; the ratio is our throughput over the peer's.

    python -m bench.http [--runs N] [--size MiB] [--concurrent N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from bench.tftp import MiB, Result, alternate, table, timed, timed_many

LOOPBACK = "127.0.0.1"
PORT_OURS, PORT_NGINX, PORT_NGINX_AUTO = 18180, 18181, 18182

NGINX_CONF = """\
worker_processes {workers};
daemon off;
pid {work}/nginx-{port}.pid;
error_log {work}/nginx-{port}.err warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 30s;
    default_type application/octet-stream;
    client_body_temp_path {work}/nginx-tmp/body;
    proxy_temp_path {work}/nginx-tmp/proxy;
    fastcgi_temp_path {work}/nginx-tmp/fastcgi;
    uwsgi_temp_path {work}/nginx-tmp/uwsgi;
    scgi_temp_path {work}/nginx-tmp/scgi;
    server {{
        listen {address}:{port};
        root {root};
    }}
}}
"""


def logged(label: str, fn: Callable[[], float]) -> Callable[[], float]:
    """`fn`, printing each sample to stderr (as bench.common does), so outliers can be seen."""

    def run() -> float:
        seconds = fn()
        print(f"  {label}: {seconds:.3f} s", file=sys.stderr, flush=True)
        return seconds

    return run


def curl(port: int, name: str) -> list[str]:
    return ["curl", "-sS", "--fail", "-o", "/dev/null", f"http://{LOOPBACK}:{port}/{name}"]


def wait_until_serving(port: int, name: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/{name}", timeout=2) as r:
                r.read(1)
            return
        time.sleep(0.1)
    sys.exit(f"bench: nothing answers on port {port}")


@contextlib.contextmanager
def servers(work: Path) -> Iterator[None]:
    """rootfs serve (HTTP only) and two nginx instances on the same boot directory."""
    boot = work / "export" / "boot"
    site = work / "site"
    (site / "hostcfg").mkdir(parents=True, exist_ok=True)
    (work / "nginx-tmp").mkdir(exist_ok=True)
    env = {**os.environ, "ROOTFS_SITE": str(site), "ROOTFS_STATE_DIR": str(work / "state"),
           "ROOTFS_EXPORT_ROOT": str(work / "export")}  # fmt: skip
    ours = subprocess.Popen(
        [sys.executable, "-m", "rootfs", "serve", "--no-dhcp", "--no-tftp",
         "--http-address", LOOPBACK, "--http-port", str(PORT_OURS)],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    procs = [ours]
    for port, workers in ((PORT_NGINX, "1"), (PORT_NGINX_AUTO, "auto")):
        conf = work / f"nginx-{port}.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, work=work, port=port,
                                          address=LOOPBACK, root=boot))  # fmt: skip
        procs.append(
            subprocess.Popen(
                ["nginx", "-p", str(work), "-e", str(work / f"nginx-{port}.err"), "-c", str(conf)],
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for port, proc in zip((PORT_OURS, PORT_NGINX, PORT_NGINX_AUTO), procs, strict=True):
            wait_until_serving(port, "ready", proc)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per server and case")
    parser.add_argument("--size", type=int, default=64, help="MiB, the file downloaded")
    parser.add_argument("--concurrent", type=int, default=32)
    args = parser.parse_args(argv)
    for tool in ("curl", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found; run 'make bench-packages'")

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="rootfs-bench-http-") as tmp:
        work = Path(tmp)
        boot = work / "export" / "boot"
        boot.mkdir(parents=True)
        with open(boot / "big.bin", "wb") as f:
            for _ in range(args.size):
                f.write(os.urandom(MiB))
        (boot / "ready").write_bytes(b"ok")
        os.chmod(work, 0o755)  # nginx's worker runs as www-data and must read the files
        size = args.size * MiB
        n = args.concurrent
        with servers(work):
            for peer_port, peer in ((PORT_NGINX, "nginx, 1 worker"),
                                    (PORT_NGINX_AUTO, "nginx, auto workers")):  # fmt: skip
                target = 0.8 if peer_port == PORT_NGINX else None
                a, b = alternate(
                    args.runs,
                    logged("rootfs", functools.partial(timed, curl(PORT_OURS, "big.bin"))),
                    logged(peer, functools.partial(timed, curl(peer_port, "big.bin"))),
                )
                label = f"1 client x {args.size} MiB vs {peer}"
                results.append(Result(label, a, b, size, target, peer))
                print(table(results[-1:]).splitlines()[-1], flush=True)
                ours_many = [curl(PORT_OURS, "big.bin")] * n
                peer_many = [curl(peer_port, "big.bin")] * n
                a, b = alternate(
                    max(3, args.runs // 2),
                    logged("rootfs", functools.partial(timed_many, ours_many)),
                    logged(peer, functools.partial(timed_many, peer_many)),
                )
                label = f"{n} clients x {args.size} MiB vs {peer}"
                results.append(Result(label, a, b, n * size, target, peer))
                print(table(results[-1:]).splitlines()[-1], flush=True)

    print()
    print(f"rootfs serve (HTTP) vs nginx {nginx_version()} (sendfile on), loopback, curl clients,"
          f" {os.cpu_count()} CPUs; medians; speed ratio = peer time / rootfs time"
          " (higher is better)")  # fmt: skip
    print(table(results))


def nginx_version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return out.stderr.strip().rpartition("/")[2]


if __name__ == "__main__":
    main()
