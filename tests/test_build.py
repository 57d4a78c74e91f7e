"""Builds of real trees on disk, through the real CLI: modes, metadata, drift, crashes, errors."""

from __future__ import annotations

import os
import pty
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HOSTS, Run

from rootfs.engine import disk
from rootfs.store.state import State
from rootfs.tree.manifest import diff, parse


def tree_of(tmp_path: Path, ip: str) -> Path:
    return tmp_path / "export" / ip


def applied(tmp_path: Path, host: str):  # type: ignore[no-untyped-def]
    manifest = State(tmp_path / "state").applied_manifest(host)
    assert manifest is not None
    return manifest


@pytest.mark.parametrize("mode", ["copy", "hardlink", "auto"])
def test_build_reproduces_every_entry_exactly(
    run: Run, imported: Path, tmp_path: Path, mode: str
) -> None:
    run("build", "--all", "--mode", mode)
    root = tree_of(tmp_path, "10.9.0.11")
    wanted = applied(tmp_path, "pc1")
    found = disk.read_tree(str(root), wanted, checksum=True)
    assert diff(wanted, found, ignore_dir_mtime=False) == []
    assert (root / "etc/hostname").read_text() == "pc1\n"
    assert (root / "etc/issue").read_text() == "pc1 10.9.0.11/24 via 10.9.0.1\n"
    assert not (root / "old").exists()
    motd = os.stat(root / "etc/motd")
    assert (motd.st_mode & 0o7777, motd.st_gid) == (0o600, 4)
    caps = root / "caps"
    assert os.getxattr(caps, "security.capability") == os.getxattr(
        imported / "caps", "security.capability"
    )
    assert os.stat(root / "bin/su").st_mode & 0o7777 == 0o4755
    assert os.stat(root / "hl/a").st_ino == os.stat(root / "hl/b").st_ino
    assert os.stat(root / "hl/t1").st_ino == os.stat(root / "links/t3").st_ino
    assert os.stat(root / "hl/a").st_ino != os.stat(root / "hl/t1").st_ino
    assert os.major(os.lstat(root / "dev/loop0").st_rdev) == 7
    assert not (root / "run/sock").exists()
    assert (root / os.fsdecode(b"caf\xe9")).read_bytes() == b"latin-1\n"
    published = parse((root / ".rootfs/manifest").read_bytes(), source="published")
    assert published == wanted
    assert run("verify", "pc1").returncode == 0


def test_hardlink_mode_shares_store_inodes_only_when_metadata_agrees(
    run: Run, imported: Path, tmp_path: Path
) -> None:
    run("build", "--all", "--mode", "hardlink", "--jobs", "2")  # two workers race for nodes
    one, two = tree_of(tmp_path, "10.9.0.11"), tree_of(tmp_path, "10.9.0.12")
    assert os.stat(one / "big.bin").st_ino == os.stat(two / "big.bin").st_ino
    # Same content as the zoo's /small.txt? No: motd differs in metadata from its object.
    # /etc/motd's object was stored with the overlay file's metadata (0644 root),
    # but the host wants 0600 gid 4: it must get its own inode (a variant).
    store_motd = next(e for e in applied(tmp_path, "pc1") if e.path == "/etc/motd")
    obj = State(tmp_path / "state").store.object_path(store_motd.digest)
    assert os.stat(one / "etc/motd").st_ino != os.stat(obj).st_ino
    assert os.stat(one / "etc/motd").st_mode & 0o7777 == 0o600
    assert os.stat(obj).st_mode & 0o7777 == 0o644
    # Symlinks and device nodes are shared inodes too, made once in the store.
    assert os.lstat(one / "links/rel").st_ino == os.lstat(two / "links/rel").st_ino
    assert os.lstat(one / "dev/null").st_ino == os.lstat(two / "dev/null").st_ino
    assert os.readlink(two / "links/rel") == "../small.txt"


def test_second_build_touches_nothing(run: Run, imported: Path, tmp_path: Path) -> None:
    run("build", "--all")
    root = tree_of(tmp_path, "10.9.0.11")
    before = {p: os.lstat(p) for p in root.rglob("*")}
    out = run("build", "--all").stdout
    assert out.splitlines() == ["pc1: up to date", "pc2: up to date"]
    after = {p: os.lstat(p) for p in root.rglob("*")}
    assert {p: (s.st_ino, s.st_mtime_ns, s.st_ctime_ns) for p, s in before.items()} == {
        p: (s.st_ino, s.st_mtime_ns, s.st_ctime_ns) for p, s in after.items()
    }


def test_overlay_change_rewrites_only_that_path(
    run: Run, site: Path, imported: Path, tmp_path: Path
) -> None:
    run("build", "--all")
    (site / "overlays/lab/etc/motd").write_text("changed\n")
    out = run("build", "pc1").stdout
    assert out.startswith("pc1: 1 modified;")
    assert (tree_of(tmp_path, "10.9.0.11") / "etc/motd").read_text() == "changed\n"
    dry = run("build", "pc2", "--dry-run").stdout
    assert "put    /etc/motd" in dry
    assert (tree_of(tmp_path, "10.9.0.12") / "etc/motd").read_text() == "welcome\n"


def test_verify_reports_each_kind_of_drift(run: Run, imported: Path, tmp_path: Path) -> None:
    run("build", "pc1")
    root = tree_of(tmp_path, "10.9.0.11")
    (root / "small.txt").write_text("edited\n")
    (root / "new-file").write_text("x")
    (root / "empty").unlink()
    os.chmod(root / "private/secret", 0o644)
    proc = run("verify", "pc1", check=False)
    assert proc.returncode == 1
    # verify prints in path order
    assert proc.stdout.splitlines() == [
        "removed   /empty",
        "added     /new-file",
        "metadata  /private/secret",
        "modified  /small.txt",
    ]
    status = run("status").stdout
    assert "zoo@1" in status and status.splitlines()[-2].rstrip().endswith("4")


def test_repair_puts_drift_right(run: Run, imported: Path, tmp_path: Path) -> None:
    run("build", "pc1")
    root = tree_of(tmp_path, "10.9.0.11")
    (root / "small.txt").write_text("edited\n")
    run("build", "pc1", "--repair")
    assert (root / "small.txt").read_text() == "hello\n"
    assert run("verify", "pc1").returncode == 0


def _big_base(tmp_path: Path) -> Path:
    """A base large enough that a build takes a while: 3,000 files in 30 directories."""
    base = tmp_path / "bigbase"
    rng = random.Random(7)
    for d in range(30):
        (base / f"d{d:02d}").mkdir(parents=True)
        for f in range(100):
            (base / f"d{d:02d}" / f"f{f:03d}").write_bytes(rng.randbytes(rng.randint(0, 8192)))
    (base / "etc").mkdir()
    os.link(base / "d00/f000", base / "d29/hard")
    return base


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["copy", "hardlink"])
def test_kill_9_at_random_points_then_rebuild_converges(
    run: Run, site: Path, tmp_path: Path, mode: str
) -> None:
    base = _big_base(tmp_path)
    run("base", "import", "zoo", str(base))
    (site / "overlays/lab/overlay.toml").write_text("")
    # A clean reference build of pc2 (same content as pc1 apart from templates) tells how
    # long a full build takes, so the kills land inside one.
    started = time.monotonic()
    run("build", "pc2", "--mode", mode)
    full = time.monotonic() - started
    env = {
        **os.environ,
        "ROOTFS_SITE": str(site),
        "ROOTFS_STATE_DIR": str(tmp_path / "state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / "export"),
    }
    rng = random.Random(1)
    killed = 0
    for attempt in range(6):
        if attempt:  # an update of half the base: adds, rewrites and removes
            for d in rng.sample(range(30), 15):
                for f in range(0, 100, 2):
                    path = base / f"d{d:02d}" / f"f{f:03d}"
                    if rng.random() < 0.2:
                        path.unlink(missing_ok=True)
                    else:
                        path.write_bytes(rng.randbytes(rng.randint(0, 8192)))
            run("base", "import", "zoo", str(base))
        proc = subprocess.Popen(
            [sys.executable, "-m", "rootfs", "build", "pc1", "--mode", mode],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if attempt % 3 == 2:  # sometimes before the apply starts (compose, store commit)
            time.sleep(rng.uniform(0.1, 0.9) * full)
        else:  # mostly inside the apply: its journal appears first
            journal = tmp_path / "state/hosts/pc1/journal"
            deadline = time.monotonic() + 30
            while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.08))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        run("build", "pc1", "--mode", mode)
        run("build", "pc2", "--mode", mode)
        assert run("verify", "pc1", "--checksum").returncode == 0
        one = disk.read_tree(str(tree_of(tmp_path, "10.9.0.11")), applied(tmp_path, "pc1"))
        two = disk.read_tree(str(tree_of(tmp_path, "10.9.0.12")), applied(tmp_path, "pc2"))
        differing = {c.path for c in diff(one, two, ignore_dir_mtime=True)}
        assert differing <= {"/etc", "/etc/hostname", "/etc/issue"}
    assert killed >= 3, "the builds finished too fast for the kills to land mid-build"


def test_host_add_builds_and_remove_purges(
    run: Run, site: Path, imported: Path, tmp_path: Path
) -> None:
    out = run(
        "host", "add", "pc3", "--mac", "52-54-00-00-00-03", "--ip", "10.9.0.13", "--var", "role=lab"
    ).stdout
    assert "added pc3: 52:54:00:00:00:03 10.9.0.13" in out
    assert (tree_of(tmp_path, "10.9.0.13") / "etc/hostname").read_text() == "pc3\n"
    text = (site / "hostcfg/hosts.toml").read_text()
    assert text.startswith(HOSTS)  # comments and order kept
    assert "role" in run("host", "show", "pc3").stdout
    run("host", "remove", "pc3", "--purge")
    assert not tree_of(tmp_path, "10.9.0.13").exists()
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["host", "add", "pc3", "--mac", "52:54:00:00:00", "--ip", "10.9.0.13"], "mac"),
        (["host", "add", "pc3", "--mac", "52:54:00:00:00:01", "--ip", "10.9.0.13"], "pc1"),
        (["host", "add", "pc3", "--mac", "52:54:00:00:00:03", "--ip", "10.1.0.13"], "subnet"),
        (
            [
                "host",
                "add",
                "pc3",
                "--mac",
                "52:54:00:00:00:03",
                "--ip",
                "10.9.0.13",
                "--base",
                "nope",
            ],
            "unknown base 'nope'",
        ),
        (
            [
                "host",
                "add",
                "pc3",
                "--mac",
                "52:54:00:00:00:03",
                "--ip",
                "10.9.0.13",
                "--overlay",
                "nope",
            ],
            "nope",
        ),
        (["base", "import", "zoo", "/does/not/exist"], "does not exist"),
        (["build", "pc9"], "unknown host 'pc9'"),
    ],
)
def test_bad_input_is_one_clear_line_and_changes_nothing(
    run: Run, site: Path, imported: Path, args: list[str], message: str
) -> None:
    proc = run(*args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rootfs: error:") and proc.stderr.count("\n") == 1
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


def test_template_error_names_file_and_line_and_rolls_back(
    run: Run, site: Path, imported: Path
) -> None:
    (site / "overlays/lab/etc/broken.j2").write_text("ok\n{{ nosuchvar }}\n")
    proc = run("host", "add", "pc3", "--mac", "52:54:00:00:00:03", "--ip", "10.9.0.13", check=False)
    assert proc.returncode == 2
    assert "broken.j2:2" in proc.stderr and "nosuchvar" in proc.stderr
    assert (site / "hostcfg/hosts.toml").read_text() == HOSTS


def test_template_error_in_a_build_of_several_hosts_touches_no_tree(
    run: Run, site: Path, imported: Path, tmp_path: Path
) -> None:
    run("build", "--all")

    def snapshot() -> dict[str, tuple[int, int]]:
        found = {}
        for ip in ("10.9.0.11", "10.9.0.12"):
            for path in tree_of(tmp_path, ip).rglob("*"):
                st = path.lstat()
                found[str(path)] = (st.st_ino, st.st_mtime_ns)
        return found

    before = snapshot()
    broken = "{% if name == 'pc2' %}{{ nosuchvar }}{% endif %}\n"  # fails for pc2 only
    (site / "overlays/lab/etc/broken.j2").write_text(broken)
    proc = run("build", "--all", "--jobs", "2", check=False)
    assert proc.returncode == 2 and "broken.j2" in proc.stderr
    assert snapshot() == before  # pc1 was not built either: composing comes first


def test_malformed_inventory_names_file_and_line(run: Run, site: Path) -> None:
    (site / "hostcfg/hosts.toml").write_text("[hosts.pc1\n")
    proc = run("host", "list", check=False)
    assert proc.returncode == 2 and "hostcfg/hosts.toml: line 1" in proc.stderr


def test_lock_names_the_holder(run: Run, imported: Path, tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    with state.lock("build"):
        proc = run("build", "--all", check=False)
    assert proc.returncode == 2
    assert "another rootfs command holds the lock" in proc.stderr
    assert f"pid {os.getpid()}" in proc.stderr


def test_reimport_stores_nothing(run: Run, imported: Path) -> None:
    out = run("base", "import", "zoo", str(imported)).stdout
    assert "unchanged" in out and "nothing new stored" in out


def test_reflink_mode_works_or_says_why(run: Run, imported: Path, tmp_path: Path) -> None:
    from rootfs.engine.apply import reflink_supported

    proc = run("build", "pc1", "--mode", "reflink", check=False)
    if reflink_supported(tmp_path / "probe"):
        assert proc.returncode == 0, proc.stderr
        assert run("verify", "pc1", "--checksum").returncode == 0
    else:
        assert proc.returncode == 2
        assert "cannot share blocks" in proc.stderr and "--mode copy" in proc.stderr


def test_interrupted_import_leaves_nothing_behind(run: Run, zoo_tree: Path, tmp_path: Path) -> None:
    leftover = tmp_path / "state/store/tmp/deadbeef"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half an object")
    run("base", "import", "zoo", str(zoo_tree))
    assert not leftover.exists()


def test_a_forked_build_on_a_terminal_shows_every_host_progressing(
    site: Path, imported: Path, tmp_path: Path
) -> None:
    """Workers send their hosts' progress to the parent, which draws one line for all."""
    env = {
        **os.environ,
        "ROOTFS_SITE": str(site),
        "ROOTFS_STATE_DIR": str(tmp_path / "state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / "export"),
    }
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "rootfs", "build", "--all", "--jobs", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert proc.returncode == 0, proc.stdout
    text = drawn.decode()
    # A line drawn while the hosts were being applied, e.g. "hosts 0/2 done | pc1: 1% 1/53 files"
    assert re.search(r"hosts [01]/2 done \| pc[12]: +\d+% \d+/\d+ files", text), repr(text)
    assert text.endswith("\r\x1b[K")  # erased at the end: the summaries stand alone
    assert sorted(line.split(":")[0] for line in proc.stdout.splitlines()) == ["pc1", "pc2"]
