"""Benchmark: a cached client's boot against a plain NFS-root boot, same lab, same run.

One host boots under QEMU (TCG, iPXE, `rootfs serve`, ganesha.nfsd, as tests/test_e2e.py does):
(a) as a plain NFS-root client, (b) the floor: a plain boot that loads the cached clients'
initramfs (the cost of carrying the Python runtime, before any cache work), (c) cached with an
empty disk (cold), (d) cached again (warm).
Each row: power-on to the marker's line on the console, and the bytes the NFS server sent the
client (counted by nftables at the server). The boots take turns `--rounds` times; medians.

Targets: warm NFS bytes <= 10% of the plain boot's; warm power-on-to-marker no slower than plain.

    python -m bench.cachedboot [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO

sys.path.insert(0, str(REPO / "tests"))
from e2e_lab import NfsCounter, open_boot_lab, rootfs_argv

SERVER = "192.168.241.1"
HOST = ("pc1", "52:54:00:e2:e1:01", "192.168.241.11")
MARKER = "rootfs-marker: hostname="
CACHE = Path(os.environ.get("ROOTFS_E2E_CACHE", "/var/cache/rootfs-e2e"))
TIMEOUT = 300.0
INITRD = "initrd-cached.img"


def write_site(root: Path, state: Path) -> None:
    (root / "hostcfg").mkdir(parents=True)
    (root / "hostcfg/hosts.toml").write_text("")
    (root / "overlays").mkdir()
    for overlay in ("diskless", "e2e-marker"):
        subprocess.run(["cp", "-a", str(REPO / "overlays" / overlay), str(root / "overlays")],
                       check=True)  # fmt: skip
    (root / "site.toml").write_text(
        f"""[server]
address = "{SERVER}"
[paths]
state_dir = "{state}"
export_root = "{state.parent / "tftpboot"}"
[defaults]
base = "bench"
overlays = ["diskless", "e2e-marker"]
mode = "copy"
nfs_options = "vers=3,nolock,tcp"
[[subnet]]
network = "192.168.241.0/24"
gateway = "{SERVER}"
[dhcp]
interfaces = ["br0"]
[boot]
append = "console=ttyS0 quiet panic=5 init=/usr/sbin/rootfs-marker"
[exports]
backend = "ganesha"
manage_ganesha = true
ganesha_file = "{root / "rootfs-exports.conf"}"
"""
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cachedboot", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rootfs-bench-cachedboot-") as tmp:
        work = Path(tmp)
        site = work / "site"
        write_site(site, work / "state")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTFS_")}

        def rootfs(*args: str) -> str:
            return subprocess.run([*rootfs_argv(), "--site", str(site), *args], env=env,
                                  check=True, capture_output=True, text=True).stdout  # fmt: skip

        base = work / "base"
        subprocess.run(["bash", str(REPO / "scripts/make-busybox-base"), str(base)], check=True,
                       capture_output=True)  # fmt: skip
        (base / "etc/rootfs-release").write_text("bench\n")
        rootfs("base", "import", "bench", str(base))
        name, mac, ip = HOST
        rootfs("host", "add", name, "--mac", mac, "--ip", ip, "--cached", "--cache-device",
               "/dev/vda")  # fmt: skip
        rootfs("boot", "initramfs", "--cached", "--cache", str(CACHE))
        kinds = ("plain", "floor", "cold", "warm")
        samples: dict[str, list[tuple[float, int]]] = {kind: [] for kind in kinds}
        hosts = site / "hostcfg/hosts.toml"
        with open_boot_lab(SERVER) as lab:
            logs = work / "logs"
            logs.mkdir()
            lab.spawn(["rpcbind", "-f"], log=logs / "rpcbind.log")
            lab.wait_listening(111, what="rpcbind")
            lab.run([*rootfs_argv(), "--site", str(site), "exports", "apply"], env=env)
            lab.wait_listening(2049, what="ganesha.nfsd")
            lab.spawn([*rootfs_argv(), "--site", str(site), "serve"], log=logs / "serve.log",
                      env=env)  # fmt: skip
            lab.wait_listening(67, what="rootfs serve", udp=True)
            lab.wait_listening(80, what="rootfs serve (HTTP: iPXE loads kernel and initrd over it)")
            # iPXE's 16 s wait for an IPv6 router is the same in every row; without it the rows
            # differ by what rootfs does.
            lab.answer_router_solicitations(logs / "router-advert.log")
            nfs = NfsCounter(lab, ip)
            for round_ in range(opts.rounds):
                disk = work / f"disk{round_}.img"
                with open(disk, "wb") as f:
                    f.truncate(128 << 20)
                for kind in kinds:
                    cached = kind in ("cold", "warm")
                    rootfs("host", "set", name, f"cached={str(cached).lower()}", "--no-build")
                    inventory = hosts.read_text()
                    if kind == "floor":
                        hosts.write_text(f'{inventory}\n[hosts.{name}.boot]\ninitrd = "{INITRD}"\n')
                    time.sleep(3)  # rootfs serve reloads the inventory
                    attached = disk if cached else None
                    # Until power-off: the marker syncs first, so the disk keeps what was cached.
                    boot = lab.boot(mac, timeout=TIMEOUT, log=logs / f"{kind}{round_}.log",
                                    on={MARKER: lambda: None}, disk=attached)  # fmt: skip
                    sent = nfs.take()
                    hosts.write_text(inventory)
                    failed = None
                    if MARKER not in boot.seen:
                        failed = f"{kind} boot did not reach the marker"
                    elif cached and "root served through the cache" not in boot.console:
                        failed = f"the {kind} boot was not cached"
                    if failed:
                        sys.exit(f"bench: {failed}:\n{boot.console[-3000:]}")
                    samples[kind].append((boot.seen[MARKER], sent))
                    print(f"  {kind} round {round_ + 1}: marker at {boot.seen[MARKER]:.1f} s,"
                          f" NFS {sent} bytes", file=sys.stderr)  # fmt: skip
        print(report(samples))


def report(samples: dict[str, list[tuple[float, int]]]) -> str:
    med = {k: (statistics.median(s for s, _ in v), statistics.median(b for _, b in v))
           for k, v in samples.items()}  # fmt: skip
    plain_s, plain_b = med["plain"]
    rows = ["boot            power-on to marker   NFS bytes sent    vs plain (time / bytes)"]
    for kind, (secs, sent) in med.items():
        rows.append(f"{kind:<15} {secs:>8.1f} s         {sent:>12,}    "
                    f"{secs / plain_s:.2f}x / {sent / plain_b:.3f}x")  # fmt: skip
    warm_s, warm_b = med["warm"]
    bytes_ok = "ok" if warm_b <= 0.1 * plain_b else "missed"
    time_ok = "ok" if warm_s <= plain_s else "missed"
    rows.append(f"targets: warm bytes <= 10% of plain: {bytes_ok}; warm time <= plain: {time_ok}")
    floor_s = med["floor"][0]
    rows.append(f"floor: loading the runtime's initramfs alone costs {floor_s - plain_s:.1f} s;"
                f" warm is {warm_s - floor_s:.1f} s above that floor")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    main()
