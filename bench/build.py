"""Benchmark: building a host tree with rootfs against copying the base with cp and rsync.

On a real Debian minbase, in one run and on one filesystem, each measured N times after a warm-up:

1. ``cp -al base dst``  vs  2. ``rootfs build`` of a fresh host with ``--mode hardlink``
3. ``cp -a base dst``   vs  4. ``rootfs build`` of a fresh host with ``--mode copy``
5. ``rsync -a --link-dest=base base/ dst/``, the usual incremental-snapshot peer
6. ``rootfs build HOST`` again, with nothing to do

rootfs does more than the peers (it renders the overlays, records a manifest, journals the apply),
so the targets are ratios: hardlink build at most 3x ``cp -al``, copy build at most 1.5x ``cp -a``,
and a no-op rebuild, CLI start-up included, under 0.3 s. The one-time base import (hashing every
file into the store) is reported on its own and is not part of any ratio.

Page caches are not dropped (that needs root and favours whoever runs second); instead every
contender gets one untimed warm-up run, and every run starts after a ``sync`` so that none pays for
another's writeback. Run from the repository root: ``python -m bench.build`` (or ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Row, Timing, format_table, measure, run, timed

DEFAULT_BASE = Path("/var/cache/rootfs-dev/base-bookworm")
MAKE_DEBIAN_BASE = REPO / "scripts" / "make-debian-base"

HARDLINK_TARGET = 3.0
COPY_TARGET = 1.5
NOOP_TARGET_S = 0.3

# Hosts of a mode get consecutive addresses from 10.0.0.<offset>, one per run (--runs <= 40).
IP_OFFSET = {"hardlink": 100, "copy": 150}


@dataclass(frozen=True)
class Options:
    """Command-line options."""

    base: Path
    runs: int
    workdir: Path | None
    rootfs: Path
    keep: bool
    check: bool


def parse_args(argv: list[str] | None = None) -> Options:
    """Options from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.build", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--base",
        type=Path,
        default=DEFAULT_BASE,
        help="base tree (built with scripts/make-debian-base if missing; default %(default)s)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where to make the temp dir; must be on the base's filesystem "
        "(default: the base's parent directory)",
    )
    parser.add_argument(
        "--rootfs",
        type=Path,
        default=REPO / ".venv" / "bin" / "rootfs",
        help="the rootfs executable (default %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir for inspection")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ns = parser.parse_args(argv)
    if not 1 <= ns.runs <= 40:
        parser.error("--runs must be between 1 and 40")
    return Options(
        base=ns.base.resolve(),
        runs=ns.runs,
        workdir=ns.workdir,
        rootfs=ns.rootfs.resolve(),
        keep=ns.keep,
        check=ns.check,
    )


def debian_complete(tree: Path) -> bool:
    """Whether *tree* is a finished debootstrap target (debootstrap removes its work dir last)."""
    return (tree / "etc" / "debian_version").is_file() and not (tree / "debootstrap").exists()


def ensure_base(base: Path) -> None:
    """Build a Debian minbase at *base* with scripts/make-debian-base unless one is there."""
    if debian_complete(base):
        return
    if base.exists():
        sys.exit(f"bench: {base} exists but is not a finished Debian tree; remove it or use --base")
    print(f"bench: building a Debian minbase at {base} ...", file=sys.stderr)
    partial = base.with_name(base.name + ".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(MAKE_DEBIAN_BASE), str(partial), "bookworm"], check=True)
    partial.rename(base)


def tree_stats(tree: Path) -> tuple[int, int]:
    """Entries and bytes of regular-file content under *tree*, not following symlinks."""
    entries = size = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                size += st.st_size
    return entries, size


class Bench:
    """One benchmark run: a temp dir holding a site, a state dir, an export root and peer copies."""

    def __init__(self, opts: Options, tmp: Path) -> None:
        self.opts = opts
        self.tmp = tmp
        self.site = tmp / "site"
        self.export_root = tmp / "export"
        self.env = {
            "ROOTFS_SITE": str(self.site),
            "ROOTFS_STATE_DIR": str(tmp / "state"),
            "ROOTFS_EXPORT_ROOT": str(self.export_root),
        }

    def rootfs(self, *args: str) -> None:
        """Run the rootfs CLI on the bench site."""
        run([self.opts.rootfs, *args], env=self.env)

    def host_name(self, mode: str, i: int) -> str:
        """The host built in run *i* (-1 is the warm-up) of a *mode* build."""
        return f"{mode}{i + 2}"

    def host_ip(self, mode: str, i: int) -> str:
        """The address of ``host_name(mode, i)``; its tree is ``<export root>/<ip>``."""
        return f"10.0.0.{IP_OFFSET[mode] + i + 1}"

    def add_hosts(self) -> None:
        """Declare one host per run and mode, unbuilt, so every timed build starts from nothing."""
        for mode in IP_OFFSET:
            for i in range(-1, self.opts.runs):
                mac = f"52:54:00:be:00:{IP_OFFSET[mode] + i + 1:02x}"
                self.rootfs("host", "add", self.host_name(mode, i), "--mac", mac,
                            "--ip", self.host_ip(mode, i), "--base", "debian",
                            "--mode", mode, "--no-build")  # fmt: skip

    def peer(self, label: str, argv: list[str]) -> Timing:
        """Time a peer command writing to a fresh ``dst`` each run; ``{base}``/``{dst}`` expand."""
        dst = self.tmp / "peer-dst"

        def once(_: int) -> None:
            run([a.format(base=self.opts.base, dst=dst) for a in argv])

        return measure(label, once, runs=self.opts.runs, teardown=lambda _: shutil.rmtree(dst))

    def build(self, mode: str) -> Timing:
        """Time ``rootfs build`` of a fresh host in *mode*, one new host per run."""
        return measure(
            f"rootfs build --mode {mode}",
            lambda i: self.rootfs("build", self.host_name(mode, i), "--mode", mode),
            runs=self.opts.runs,
        )

    def measure_all(self) -> list[Row]:
        """Run every measurement and return the table rows."""
        self.rootfs("init", str(self.site))
        import_s = timed(lambda: self.rootfs("base", "import", "debian", str(self.opts.base)))
        print(f"base import (once, not in any ratio): {import_s:.3f} s")
        self.add_hosts()

        cp_al = self.peer("cp -al", ["cp", "-al", "{base}", "{dst}"])
        hardlink = self.build("hardlink")
        cp_a = self.peer("cp -a", ["cp", "-a", "{base}", "{dst}"])
        copy = self.build("copy")
        rsync = self.peer("rsync -a --link-dest",
                          ["rsync", "-a", "--link-dest={base}", "{base}/", "{dst}/"])  # fmt: skip
        again = self.host_name("copy", 0)
        noop = measure(f"rootfs build (no-op, {again} again)",
                       lambda _: self.rootfs("build", again), runs=self.opts.runs)  # fmt: skip

        self.report_tree(self.export_root / self.host_ip("copy", 0))
        print(f"rootfs hardlink build vs rsync --link-dest: {hardlink.median / rsync.median:.2f}x")
        hardlink_ok = hardlink.median <= HARDLINK_TARGET * cp_al.median
        copy_ok = copy.median <= COPY_TARGET * cp_a.median
        return [
            Row(cp_al),
            Row(hardlink, cp_al, f"<= {HARDLINK_TARGET:g}x cp -al", hardlink_ok),
            Row(cp_a),
            Row(copy, cp_a, f"<= {COPY_TARGET:g}x cp -a", copy_ok),
            Row(rsync),
            Row(noop, None, f"< {NOOP_TARGET_S:g} s", noop.median < NOOP_TARGET_S),
        ]

    def report_tree(self, tree: Path) -> None:
        """Print the size of a built tree, as a sanity check on what was timed."""
        if not (tree / "etc").is_dir():
            sys.exit(f"bench: rootfs built nothing at {tree}")
        entries, size = tree_stats(tree)
        print(f"a built host tree: {entries} entries, {size / 2**20:.0f} MiB of file content")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the benchmark and print its table."""
    opts = parse_args(argv)
    if not opts.rootfs.exists():
        sys.exit(f"bench: {opts.rootfs} not found; run `make install` first")
    for tool in ("cp", "rsync"):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} not found")
    ensure_base(opts.base)
    workdir = opts.workdir or opts.base.parent
    tmp = Path(tempfile.mkdtemp(prefix="rootfs-bench-", dir=workdir))
    try:
        if os.stat(tmp).st_dev != os.stat(opts.base).st_dev:
            sys.exit(f"bench: {tmp} is not on the filesystem of {opts.base}; pass --workdir")
        entries, size = tree_stats(opts.base)
        print(f"base: {opts.base}: {entries} entries, {size / 2**20:.0f} MiB of file content")
        print(f"temp dir: {tmp}; {opts.runs} runs each after one warm-up")
        rows = Bench(opts, tmp).measure_all()
    finally:
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(format_table(rows))
    missed = [row.timing.label for row in rows if row.met is False]
    if missed:
        print(f"\nmissed targets: {', '.join(missed)}")
    return 1 if missed and opts.check else 0


if __name__ == "__main__":
    sys.exit(main())
