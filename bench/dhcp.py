"""Benchmark: DORA exchanges per second, rootfs's DHCP server against dnsmasq, in one run.

Both servers run in turn in the same network namespace, on the same veth, with the same
reservations (N hosts, each with its own option 17 root path and a boot file), and are driven by the
same load generator (`tests/dhcp_loadgen.py`, a relay agent in the other namespace, as perfdhcp is).
rootfs runs with lease persistence on: every ACK waits for its journal record's fdatasync (group
commit); a run without the fdatasync shows what durability costs. dnsmasq rewrites its whole lease
file after lease changes, so its cost per ACK grows with the number of leases.

Then a boot storm: 500 clients DISCOVER at once (window 500); all must be ACKed within 2 s.

Run as root from the repository root: ``python -m bench.dhcp [--hosts 1000 --runs 5]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.common import REPO

sys.path.insert(0, str(REPO / "tests"))
from netns import (
    CLIENT_ADDRESS,
    LOADGEN,
    SERVER_ADDRESS,
    NetnsPair,
    netns_pair,
    start_serve,
    stop,
    wait_for_line,
    write_site,
)

PREFIX = 22  # 192.168.232.0/22: room for 1,000 reservations, only inside the namespaces
MAC_BASE = 0x525400100000
TARGET_RATE = 2000.0
TARGET_RATIO = 0.5
STORM = 500
STORM_TARGET_S = 2.0


def host_ip(i: int) -> IPv4Address:
    return IPv4Address("192.168.232.10") + i


def host_mac(i: int) -> str:
    return (MAC_BASE + i).to_bytes(6, "big").hex(":")


def make_site(root: Path, interface: str, hosts: int) -> Path:
    site: Path = write_site(root, {}, interface=interface)
    toml = (site / "site.toml").read_text().replace("192.168.232.0/24", f"192.168.232.0/{PREFIX}")
    (site / "site.toml").write_text(toml)
    lines = []
    for i in range(hosts):
        lines += [f"[hosts.h{i}]", f'mac = "{host_mac(i)}"', f'ip = "{host_ip(i)}"', ""]
    (site / "hostcfg" / "hosts.toml").write_text("\n".join(lines))
    return site


def dnsmasq_files(root: Path, hosts: int, *, per_host_options: bool = True) -> list[str]:
    """dnsmasq arguments serving the same reservations, root paths and boot file. dnsmasq can
    only give each host its own option 17 through a tag per host, which it scans linearly, so a
    second variant keeps the reservations but drops the per-host options: the faster peer."""
    (root / "hosts").write_text(
        "".join(f"{host_mac(i)},set:h{i},{host_ip(i)}\n" for i in range(hosts))
    )
    (root / "opts").write_text(
        "".join(
            f"tag:h{i},17,{SERVER_ADDRESS}:/tftpboot/{host_ip(i)},vers=3,tcp\ntag:h{i},12,h{i}\n"
            for i in range(hosts)
        )
    )
    return [
        "--keep-in-foreground",
        "--port=0",
        "--conf-file=/dev/null",
        "--bind-interfaces",
        "--dhcp-range=192.168.232.0,static,255.255.252.0,86400",
        f"--dhcp-hostsfile={root / 'hosts'}",
        *([f"--dhcp-optsfile={root / 'opts'}"] if per_host_options else []),
        f"--dhcp-leasefile={root / 'dnsmasq.leases'}",
        f"--dhcp-boot=pxelinux.0,,{SERVER_ADDRESS}",
        f"--dhcp-option=3,{SERVER_ADDRESS}",
        f"--dhcp-option=6,{SERVER_ADDRESS}",
        "--dhcp-option=15,lab.test",
        "--dhcp-authoritative",
        "--no-ping",
        "--quiet-dhcp",
        "--log-facility=/dev/null",
        f"--pid-file={root / 'dnsmasq.pid'}",
        "--user=root",
    ]


@contextmanager
def running(pair: NetnsPair, argv: list[str], ready: bytes | None) -> Iterator[None]:
    """*argv* running in the server namespace: "serve" means `rootfs serve --no-tftp`, ready
    when it says so; otherwise ready when it prints *ready* (None: half a second after start)."""
    if argv[0] == "serve":
        serving = start_serve(pair.server, Path(argv[1]), "--no-tftp")
        try:
            yield
        finally:
            stop(serving)
        return
    proc = pair.server.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if ready is not None:
            wait_for_line(proc, ready)
        else:
            time.sleep(0.5)
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else b""
                raise SystemExit(f"bench: {argv[0]} exited: {err!r}")
        yield
    finally:
        stop(proc)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def load(
    pair: NetnsPair, count: int, *, window: int, repeat: int = 1, timeout: float = 1.0
) -> dict[str, object]:
    argv = [sys.executable, LOADGEN, "--server", SERVER_ADDRESS,
            "--relay", CLIENT_ADDRESS, "--count", str(count), "--window", str(window),
            "--timeout", str(timeout), "--mac-base", f"{MAC_BASE:012x}",
            "--repeat", str(repeat)]  # fmt: skip
    out = pair.client.run(argv, timeout=300)
    result: dict[str, object] = json.loads(out.stdout)
    acked = result.pop("acked")
    assert isinstance(acked, dict)
    wrong = [
        m for m, ip in acked.items() if ip != str(host_ip(int(m.replace(":", ""), 16) - MAC_BASE))
    ]
    if wrong:
        raise SystemExit(f"bench: wrong addresses for {wrong[:3]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--window", type=int, default=256, help="exchanges in flight")
    parser.add_argument("--repeat", type=int, default=3, help="DORAs per host per run")
    args = parser.parse_args()
    if shutil.which("dnsmasq") is None:
        raise SystemExit("bench: dnsmasq is not installed (Debian package dnsmasq-base)")
    names = ("rootfs", "rootfs-nosync", "dnsmasq", "dnsmasq-plain")
    samples: dict[str, list[float]] = {name: [] for name in names}
    storms: dict[str, list[dict[str, object]]] = {"rootfs": [], "dnsmasq-plain": []}
    with (
        TemporaryDirectory() as tmp,
        netns_pair(client_address=CLIENT_ADDRESS, prefix=PREFIX) as pair,
    ):
        root = Path(tmp)
        site = make_site(root / "site", pair.server.interface, args.hosts)
        nosync = [sys.executable, "-m", "bench.dhcp_nosync", str(site)]
        theirs = ["dnsmasq", f"--interface={pair.server.interface}"]
        contenders: dict[str, tuple[list[str], bytes | None]] = {
            "rootfs": (["serve", str(site)], None),
            "rootfs-nosync": (nosync, b"ready"),
            "dnsmasq": ([*theirs, *dnsmasq_files(root, args.hosts)], None),
            "dnsmasq-plain": (
                [*theirs, *dnsmasq_files(root, args.hosts, per_host_options=False)],
                None,
            ),
        }
        for run in range(-1, args.runs):  # run 0 (shown as 0) warms caches and lease files up
            for name, (argv, ready) in contenders.items():
                with running(pair, argv, ready):
                    result = load(pair, args.hosts, window=args.window, repeat=args.repeat)
                rate = _float(result["dora_per_s"])
                print(f"  {name} run {run + 1}: {rate:.0f} DORA/s {result}", file=sys.stderr)
                if run >= 0:
                    samples[name].append(rate)
        for _ in range(3):
            for name in storms:
                argv, ready = contenders[name]
                with running(pair, argv, ready):
                    storms[name].append(load(pair, STORM, window=STORM))
                print(f"  {name} storm: {storms[name][-1]}", file=sys.stderr)
    print(report(samples, storms, runs=args.runs, hosts=args.hosts, window=args.window))


def _float(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def report(
    samples: dict[str, list[float]],
    storms: dict[str, list[dict[str, object]]],
    *,
    runs: int,
    hosts: int,
    window: int,
) -> str:
    med = {name: statistics.median(v) for name, v in samples.items()}
    storm_s = {n: statistics.median(_float(r["seconds"]) for r in v) for n, v in storms.items()}
    storm_ok = all(
        r["done"] == STORM and _float(r["seconds"]) <= STORM_TARGET_S for r in storms["rootfs"]
    )
    ok = med["rootfs"] >= TARGET_RATE and med["rootfs"] / med["dnsmasq-plain"] >= TARGET_RATIO
    target = f">= {TARGET_RATE:.0f}/s and >= {TARGET_RATIO}x"
    rows = [
        ("rootfs, journal + fdatasync", f"{med['rootfs']:.0f}",
         f"{med['rootfs'] / med['dnsmasq-plain']:.2f}x plain, "
         f"{med['rootfs'] / med['dnsmasq']:.2f}x per-host", target, "ok" if ok else "MISSED"),
        ("rootfs, no fdatasync", f"{med['rootfs-nosync']:.0f}",
         f"durability costs {1 - med['rootfs'] / med['rootfs-nosync']:.0%}", "", ""),
        ("dnsmasq, per-host 17/12 (tags)", f"{med['dnsmasq']:.0f}", "", "", ""),
        ("dnsmasq-plain, reservations only", f"{med['dnsmasq-plain']:.0f}", "", "", ""),
        (f"storm {STORM} clients, rootfs", f"{storm_s['rootfs']:.2f} s", "",
         f"all within {STORM_TARGET_S:.0f} s", "ok" if storm_ok else "MISSED"),
        (f"storm {STORM} clients, dnsmasq-plain", f"{storm_s['dnsmasq-plain']:.2f} s", "", "", ""),
    ]  # fmt: skip
    header = (
        "server",
        f"DORA/s (median of {runs}; {hosts} hosts, window {window})",
        "ratio",
        "target",
        "",
    )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


if __name__ == "__main__":
    main()
