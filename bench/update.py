"""Benchmark: one base update applied to many hosts, against an rsync of the new base into each.

On a Debian minbase, N hosts (default 50) are built in copy mode. A second generation simulates a
package upgrade: 200 files under /usr rewritten, 20 added, 20 removed. Each timed run moves every
host to the other generation (so runs alternate v1 -> v2 -> v1 ...), and the contenders take
turns, one run each per round (`bench.common.measure_rounds`):

- ``rootfs base update debian vX``: import plus an incremental apply to all N hosts;
- ``rsync -aHAX --delete vX/ tree/`` for each of N peer trees (plain copies of the base);
- the floor: only the file operations any copy-mode tool must do, given the list of changed
  paths for free (no scan, no manifests, no journal), on the peer trees, in as many processes
  as rootfs uses, the cheapest way known here: each changed or added file copied with
  ``copy_file_range`` into a new file in an attic, its mode and mtime set, then swapped with
  the tree's path (``RENAME_EXCHANGE``: the old inode stays in the attic, so running clients
  keep it, as rootfs does); each removed file renamed into the attic. Its ratio to the rsync
  loop is the most any implementation could reach here.

Targets: rootfs at least 20x faster than the rsync loop, and bytes written (``ru_oublock`` of the
rootfs process) within 2x of the changed bytes times the number of hosts.
Run from the repository root: ``python -m bench.update`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Contender, Row, Timing, format_table, measure_rounds, run
from rootfs.engine import renames

DEFAULT_BASE = Path("/var/cache/rootfs-dev/base-bookworm")
SPEED_TARGET = 20.0
BYTES_TARGET = 2.0


@dataclass(frozen=True)
class Options:
    base: Path
    hosts: int
    runs: int
    workdir: Path | None
    rootfs: Path
    bulk: int = 0


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, default=DEFAULT_BASE, help="a Debian minbase tree")
    parser.add_argument("--hosts", type=int, default=50, help="hosts to update (default 50)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument(
        "--bulk",
        type=int,
        default=0,
        metavar="N",
        help="add N small files to the base (a larger base, the same change: what grows?)",
    )
    args = parser.parse_args(argv)
    return Options(
        args.base, args.hosts, args.runs, args.workdir, REPO / ".venv/bin/rootfs", args.bulk
    )


def add_bulk(root: Path, count: int) -> None:
    """*count* small files under /usr/share/bulk, a thousand to a directory."""
    for n in range(count):
        directory = root / "usr/share/bulk" / f"d{n // 1000:03d}"
        if n % 1000 == 0:
            directory.mkdir(parents=True)
        (directory / f"f{n % 1000:03d}").write_bytes(b"%d\n" % n)


def make_upgrade(v1: Path, v2: Path) -> tuple[int, list[str]]:
    """Turn the copy *v2* of *v1* into a package upgrade.

    Returns the bytes of new content and the paths (relative) that differ between the two.
    """
    rng = random.Random(20)
    bulk = str(v2 / "usr/share/bulk")  # `--bulk` makes the base larger, not the change
    files = sorted(
        os.path.join(d, f)
        for d, _, names in os.walk(v2 / "usr")
        for f in names
        if os.path.isfile(os.path.join(d, f))
        and not os.path.islink(os.path.join(d, f))
        and not d.startswith(bulk)
    )
    chosen = rng.sample(files, 220)
    paths = [os.path.relpath(path, v2) for path in chosen]
    changed = 0
    for path in chosen[:200]:
        data = rng.randbytes(max(1, os.path.getsize(path)))
        with open(path, "wb") as f:
            f.write(data)
        changed += len(data)
    for path in chosen[200:]:
        os.unlink(path)
    for i in range(20):
        data = rng.randbytes(20_000)
        (v2 / "usr/share/doc" / f"bench-upgrade-{i}").write_bytes(data)
        paths.append(f"usr/share/doc/bench-upgrade-{i}")
        changed += len(data)
    return changed, paths


def floor_update(source: Path, trees: list[Path], paths: list[str], attic: Path) -> None:
    """The file operations of an incremental copy-mode update of *trees* to *source*."""
    for tree in trees:
        kept_dir = attic / tree.name  # one per tree, as rootfs keeps one per host
        kept_dir.mkdir()
        for n, rel in enumerate(paths):
            dst = str(tree / rel)
            kept = f"{kept_dir}/{n}"
            src = source / rel
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                with contextlib.suppress(FileNotFoundError):  # the old inode stays reachable
                    renames.rename_noreplace(dst, kept)
                continue
            with open(src, "rb") as fin, open(kept, "xb") as fout:
                left = st.st_size
                while left > 0:
                    done = os.copy_file_range(fin.fileno(), fout.fileno(), left)
                    if done == 0:
                        break
                    left -= done
                os.fchmod(fout.fileno(), stat.S_IMODE(st.st_mode))
                os.utime(fout.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
            try:
                renames.exchange(kept, dst)  # new inode in place, the old one in the attic
            except FileNotFoundError:
                os.rename(kept, dst)


def write_site(site: Path, hosts: int) -> None:
    """A site with *hosts* hosts on 10.0.0.0/16 using the repo's diskless overlay."""
    (site / "hostcfg").mkdir(parents=True)
    shutil.copytree(REPO / "overlays", site / "overlays")
    (site / "site.toml").write_text(
        '[server]\naddress = "10.0.0.1"\n[defaults]\nbase = "debian"\nmode = "copy"\n'
        '[[subnet]]\nnetwork = "10.0.0.0/16"\ngateway = "10.0.0.1"\n'
    )
    lines = []
    for i in range(hosts):
        lines.append(
            f'[hosts.h{i:03d}]\nmac = "52:54:00:aa:{i // 256:02x}:{i % 256:02x}"\n'
            f'ip = "10.0.{1 + i // 200}.{10 + i % 200}"\n'
        )
    (site / "hostcfg/hosts.toml").write_text("\n".join(lines))


class Bench:
    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.env = {
            "ROOTFS_SITE": str(tmp / "site"),
            "ROOTFS_STATE_DIR": str(tmp / "state"),
            "ROOTFS_EXPORT_ROOT": str(tmp / "export"),
        }
        self.gens = (tmp / "v1", tmp / "v2")
        self.peers = [tmp / "peer" / f"t{i:03d}" for i in range(opts.hosts)]
        self.written: list[int] = []
        self.paths: list[str] = []
        self.jobs = min(os.cpu_count() or 1, 8)  # as `rootfs base update` (its --jobs default)

    def prepare(self) -> int:
        v1, v2 = self.gens
        print(
            "preparing: two generations, a site, the hosts' trees and the peer trees",
            file=sys.stderr,
        )
        run(["cp", "-a", str(self.opts.base), str(v1)])
        add_bulk(v1, self.opts.bulk)
        run(["cp", "-a", str(v1), str(v2)])
        changed, self.paths = make_upgrade(v1, v2)
        write_site(self.tmp / "site", self.opts.hosts)
        run([str(self.opts.rootfs), "base", "import", "debian", str(v1)], env=self.env)
        run([str(self.opts.rootfs), "build", "--all"], env=self.env)
        for peer in self.peers:
            peer.parent.mkdir(exist_ok=True)
            run(["cp", "-a", str(v1), str(peer)])
        return changed

    def source(self, i: int) -> Path:
        """Run -1 (warm-up) goes to v2, run 0 back to v1, and so on."""
        return self.gens[i % 2]

    def rootfs_update(self, i: int) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
        run([str(self.opts.rootfs), "base", "update", "debian", str(self.source(i))], env=self.env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock
        if i >= 0:
            self.written.append((after - before) * 512)

    def rsync_loop(self, i: int) -> None:
        src = f"{self.source(i)}/"
        for peer in self.peers:
            run(["rsync", "-aHAX", "--delete", src, f"{peer}/"])

    def floor(self, i: int) -> None:
        """`floor_update` of the peer trees, split over `jobs` forked processes."""
        # A new attic each run, kept like rootfs's: freeing many inodes here would slow the
        # next creations on a filesystem without a journal (ext4 then skips inodes freed in
        # the last minute, reading each one's deletion time), and rootfs frees none either.
        attic = self.tmp / f"attic-{i}"
        attic.mkdir()
        children = []
        for k in range(self.jobs):
            pid = os.fork()
            if pid == 0:  # the child: its share of the trees, then out without cleanup
                code = 1
                try:
                    floor_update(self.source(i), self.peers[k :: self.jobs], self.paths, attic)
                    code = 0
                finally:
                    os._exit(code)
            children.append(pid)
        for pid in children:
            if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
                sys.exit("bench: the floor update failed")


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if not opts.base.is_dir():
        sys.exit(f"bench: no base at {opts.base}; build one with scripts/make-debian-base")
    tmp = Path(
        tempfile.mkdtemp(prefix="rootfs-bench-update-", dir=opts.workdir or opts.base.parent)
    )
    try:
        bench = Bench(opts, tmp)
        changed = bench.prepare()
        n = opts.hosts
        print(f"{n} hosts; each update changes {changed / 2**20:.1f} MiB per host", file=sys.stderr)
        # Round i: rootfs moves its hosts to source(i); rsync moves the peer trees to
        # source(2i), the floor moves them on to source(2i + 1).
        ours, peer, floor = measure_rounds(
            [
                Contender(f"rootfs base update ({n} hosts)", bench.rootfs_update),
                Contender(f"rsync -aHAX --delete x {n}", lambda i: bench.rsync_loop(2 * i)),
                Contender(
                    f"floor: file operations only x {n}",
                    lambda i: bench.floor(2 * i + 1),
                ),
            ],
            runs=opts.runs,
        )
        for k, peer_tree in enumerate(bench.peers):  # the floor really did the update
            for rel in bench.paths:
                want = bench.source(2 * (opts.runs - 1) + 1) / rel  # the floor's last run
                got = peer_tree / rel
                if want.exists() != got.exists() or (
                    want.exists() and want.read_bytes() != got.read_bytes()
                ):
                    sys.exit(f"bench: floor left {got} wrong (tree {k})")
        verify = subprocess.run(
            [str(opts.rootfs), "verify", "h000", "--checksum"],
            env={**os.environ, **bench.env},
            capture_output=True,
            text=True,
        )
        if verify.returncode != 0:
            print(
                f"bench: h000 does not verify after the updates:\n{verify.stdout}", file=sys.stderr
            )
            return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    speedup = peer.median / ours.median
    rows = [
        Row(peer),
        Row(floor, peer),
        Row(ours, peer, f">= {SPEED_TARGET:.0f}x faster", speedup >= SPEED_TARGET),
        Row(ours, floor),
    ]
    print()
    print(format_table(rows))
    written = sorted(bench.written)[len(bench.written) // 2]
    ratio = written / (changed * n)
    print(
        f"\nspeed-up: {speedup:.1f}x the rsync loop (target >= {SPEED_TARGET:.0f}x); the floor"
        f" reaches {peer.median / floor.median:.1f}x"
    )
    print(
        f"bytes written by rootfs: {written / 2**20:.0f} MiB (median) for"
        f" {changed * n / 2**20:.0f} MiB of changed content x hosts: {ratio:.2f}x"
        f" (target <= {BYTES_TARGET:.0f}x) {'ok' if ratio <= BYTES_TARGET else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Timing", "main"]
