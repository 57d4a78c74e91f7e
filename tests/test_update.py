"""Base updates on real trees: incremental apply, host changes, rollback, attic, GC, crashes."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Run

from rootfs.config.site import Site, load_site
from rootfs.engine import disk
from rootfs.engine.build import Builder
from rootfs.netboot.trace import TraceLog
from rootfs.store.state import State
from rootfs.tree.manifest import Manifest, diff, manifest_digest, serialize

PC1 = "10.9.0.11"


def tree(tmp_path: Path, ip: str = PC1) -> Path:
    return tmp_path / "export" / ip


def make_v2(zoo: Path, tmp_path: Path, name: str = "v2") -> Path:
    """A copy of the zoo base, to be edited into the next generation."""
    v2 = tmp_path / name
    subprocess.run(["cp", "-a", str(zoo), str(v2)], check=True)
    return v2


def clean(run: Run, host: str = "pc1") -> None:
    proc = run("verify", host, "--checksum", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def built(run: Run, imported: Path) -> Path:
    run("build", "--all")
    return imported


def test_update_applies_every_kind_of_change(run: Run, built: Path, tmp_path: Path) -> None:
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"hello, again\n")  # modified
    (v2 / "empty").unlink()  # removed
    (v2 / "added.txt").write_bytes(b"new\n")  # added
    os.chmod(v2 / "private/secret", 0o640)  # metadata only
    os.chown(v2 / "hl/a", 1234, 0)  # owner only, on a hardlinked pair
    os.setxattr(v2 / "caps", "user.test", b"changed")  # xattr only
    (v2 / "tmp").rmdir()
    (v2 / "tmp").write_bytes(b"a file now\n")  # directory -> file
    (v2 / "future").unlink()
    (v2 / "future").mkdir()  # file -> directory
    (v2 / "future/inside").write_bytes(b"x\n")
    (v2 / "links/rel").unlink()
    (v2 / "links/rel").write_bytes(b"was a symlink\n")  # symlink -> file
    out = run("base", "update", "zoo", str(v2)).stdout
    assert "generation 2" in out and "modified" in out
    root = tree(tmp_path)
    assert (root / "small.txt").read_bytes() == b"hello, again\n"
    assert not (root / "empty").exists()
    assert (root / "added.txt").read_bytes() == b"new\n"
    assert os.stat(root / "private/secret").st_mode & 0o7777 == 0o640
    assert os.stat(root / "hl/a").st_uid == 1234 == os.stat(root / "hl/b").st_uid
    assert os.stat(root / "hl/a").st_ino == os.stat(root / "hl/b").st_ino
    assert os.getxattr(root / "caps", "user.test") == b"changed"
    assert (root / "tmp").read_bytes() == b"a file now\n"
    assert (root / "future/inside").read_bytes() == b"x\n"
    assert (root / "links/rel").read_bytes() == b"was a symlink\n"
    assert (root / "etc/hostname").read_text() == "pc1\n"  # overlays still on top
    clean(run, "pc1")
    clean(run, "pc2")
    # ... and back: the same changes reversed.
    out = run("base", "rollback", "zoo").stdout
    assert "generation 1" in out
    assert (root / "small.txt").read_bytes() == b"hello\n"
    assert (root / "future").read_bytes() == b"later\n"
    assert os.readlink(root / "links/rel") == "../small.txt"
    clean(run, "pc1")


def test_log_and_diff(run: Run, built: Path, tmp_path: Path) -> None:
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"changed\n")
    (v2 / "added.txt").write_bytes(b"new\n")
    run("base", "update", "zoo", str(v2), "--no-apply")
    assert (tree(tmp_path) / "small.txt").read_bytes() == b"hello\n"  # staged only
    log = run("base", "log", "zoo").stdout.splitlines()
    assert log[-1].startswith("*    2") and "1 added" in log[-1] and "1 modified" in log[-1]
    assert run("base", "diff", "zoo", "1", "2").stdout.splitlines() == [
        "metadata  /",
        "added     /added.txt",
        "modified  /small.txt",
    ]


def test_second_update_touches_only_what_changed(run: Run, built: Path, tmp_path: Path) -> None:
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"changed\n")
    root = tree(tmp_path)
    before = {p: os.lstat(p).st_ino for p in root.rglob("*") if ".rootfs" not in p.parts}
    out = run("base", "update", "zoo", str(v2)).stdout
    assert "pc1: 1 modified" in out
    after = {p: os.lstat(p).st_ino for p in root.rglob("*") if ".rootfs" not in p.parts}
    assert {p for p in before if before[p] != after.get(p)} == {root / "small.txt"}


def test_host_local_change_is_kept_and_reported(run: Run, built: Path, tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "small.txt").write_bytes(b"edited by the host\n")
    (root / "private/secret").unlink()  # the host removed a file the base will change
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"base v2\n")
    (v2 / "private/secret").write_bytes(b"secret v2\n")
    (v2 / "added.txt").write_bytes(b"new\n")
    proc = run("base", "update", "zoo", str(v2))
    assert "conflict /small.txt" in proc.stderr
    assert (root / "small.txt").read_bytes() == b"edited by the host\n"
    assert (root / "small.txt.rootfs-new").read_bytes() == b"base v2\n"
    assert not (root / "private/secret").exists()
    assert (root / "private/secret.rootfs-new").read_bytes() == b"secret v2\n"
    assert (root / "added.txt").exists()  # the rest of the update went in
    assert (tree(tmp_path, "10.9.0.12") / "small.txt").read_bytes() == b"base v2\n"
    assert "2 conflicts" in run("status").stdout
    verify = run("verify", "pc1", check=False)
    assert verify.returncode == 1 and "conflict  /small.txt" in verify.stdout
    # A rebuild does not undo the decision.
    assert "pc1: up to date" in run("build", "pc1").stdout
    assert (root / "small.txt").read_bytes() == b"edited by the host\n"
    run("resolve", "pc1", "/small.txt", "--take", "base")
    assert (root / "small.txt").read_bytes() == b"base v2\n"
    assert not (root / "small.txt.rootfs-new").exists()
    run("resolve", "pc1", "/private/secret", "--take", "host")
    assert not (root / "private/secret").exists()
    assert not (root / "private/secret.rootfs-new").exists()
    clean(run, "pc1")
    # The host's choice holds until the base changes the path again.
    v3 = make_v2(v2, tmp_path, "v3")
    (v3 / "added.txt").write_bytes(b"v3\n")
    run("base", "update", "zoo", str(v3))
    assert not (root / "private/secret").exists()
    (v3 / "private/secret").write_bytes(b"secret v3\n")
    proc = run("base", "update", "zoo", str(v3))
    assert "conflict /private/secret" in proc.stderr
    assert (root / "private/secret.rootfs-new").read_bytes() == b"secret v3\n"


@pytest.mark.parametrize("policy", ["base_wins", "host_wins"])
def test_policy_decides_without_asking(
    run: Run, site: Path, built: Path, tmp_path: Path, policy: str
) -> None:
    with open(site / "site.toml", "a") as f:
        f.write(f'[update]\n{policy} = ["/small*"]\n')
    root = tree(tmp_path)
    (root / "small.txt").write_bytes(b"host\n")
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"base\n")
    proc = run("base", "update", "zoo", str(v2))
    assert "conflict" not in proc.stderr
    assert not (root / "small.txt.rootfs-new").exists()
    wanted = b"base\n" if policy == "base_wins" else b"host\n"
    assert (root / "small.txt").read_bytes() == wanted


def test_replaced_files_stay_reachable_until_reboot(run: Run, built: Path, tmp_path: Path) -> None:
    root = tree(tmp_path)
    held = open(root / "big.bin", "rb")  # noqa: SIM115 - a running client's open file
    old_inode = os.fstat(held.fileno()).st_ino
    old_head = held.read(4096)
    v2 = make_v2(built, tmp_path)
    (v2 / "big.bin").write_bytes(b"new content")
    (v2 / "small.txt").unlink()
    run("base", "update", "zoo", str(v2))
    assert (root / "big.bin").read_bytes() == b"new content"
    held.seek(0)
    assert held.read(4096) == old_head  # an open descriptor reads the old bytes
    held.close()
    attic = tmp_path / "export/.attic/pc1"
    kept = {p.name for p in attic.rglob("*") if p.is_file()}
    assert kept == {"big.bin", "small.txt"}
    assert next(attic.rglob("big.bin")).stat().st_ino == old_inode  # the same inode, by name
    assert "released 1 attic entries" in run("host", "rebooted", "pc1").stdout
    assert not attic.exists()


def test_gc_releases_the_attic_once_the_host_boots_again_not_when_it_renews(
    run: Run, built: Path, tmp_path: Path
) -> None:
    v2 = make_v2(built, tmp_path)
    (v2 / "big.bin").write_bytes(b"new content")
    run("base", "update", "zoo", str(v2))
    attic = tmp_path / "export/.attic/pc1"
    assert any(attic.iterdir())
    trace = TraceLog(tmp_path / "state" / "trace")
    time.sleep(1.1)  # attic entries are stamped in whole seconds
    # A running client renewing its lease still holds the old inodes.
    trace.record("dhcp", "request", mac="52:54:00:00:00:11", host="pc1", reply="ack")
    assert "0 attic entries" in run("gc").stdout
    assert any(attic.iterdir())
    # A DISCOVER is a boot: nothing holds them any more.
    trace.record("dhcp", "discover", mac="52:54:00:00:00:11", host="pc1", reply="offer")
    out = run("gc").stdout
    assert "1 attic entries" in out and not any(attic.iterdir())


def test_gc_keeps_what_is_referenced(run: Run, site: Path, built: Path, tmp_path: Path) -> None:
    with open(site / "site.toml", "a") as f:
        f.write("[update]\nkeep_generations = 2\n")
    store = State(tmp_path / "state").store
    source = built
    for n in range(2, 5):
        nxt = make_v2(source, tmp_path, f"v{n}")
        (nxt / "big.bin").write_bytes(f"generation {n}\n".encode() * 1000)
        run("base", "update", "zoo", str(nxt))
        source = nxt
    objects = set(store.iter_digests())
    dry = run("gc", "--dry-run").stdout
    assert "would remove generation 1" in dry and "would remove generation 2" in dry
    assert set(store.iter_digests()) == objects
    out = run("gc").stdout
    assert "removed 2 generations" in out
    gone = objects - set(store.iter_digests())
    assert len(gone) == 2  # big.bin of generations 1 and 2: nothing else
    assert [line[2:].split()[0] for line in run("base", "log", "zoo").stdout.splitlines()[1:]] == [
        "3",
        "4",
    ]
    clean(run, "pc1")
    run("base", "rollback", "zoo", "3")
    clean(run, "pc1")
    assert "removed 0 generations, 0 objects" in run("gc").stdout


def test_failed_import_changes_nothing(run: Run, built: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage")
    proc = run("base", "update", "zoo", str(bad), check=False)
    assert proc.returncode == 2 and "not a readable tar archive" in proc.stderr
    assert len(run("base", "log", "zoo").stdout.splitlines()) == 2  # header + generation 1
    assert not any((tmp_path / "state/store/tmp").iterdir())
    clean(run, "pc1")


def _scenario(tmp_path: Path, zoo: Path, label: str) -> tuple[dict[str, str], Path]:
    """A fresh site with three hosts built from a base, one with a host-local edit."""
    base = tmp_path / f"{label}-base"
    subprocess.run(["cp", "-a", str(zoo), str(base)], check=True)
    rng = random.Random(5)
    for d in range(20):
        (base / f"d{d:02d}").mkdir()
        for f in range(100):
            (base / f"d{d:02d}" / f"f{f:03d}").write_bytes(rng.randbytes(rng.randint(0, 6000)))
    _pin_mtimes(base)
    site = tmp_path / f"{label}-site"
    shutil.copytree(Path(__file__).parent / "data" / "update-site", site)
    env = {
        **os.environ,
        "ROOTFS_SITE": str(site),
        "ROOTFS_STATE_DIR": str(tmp_path / f"{label}-state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / f"{label}-export"),
    }
    for args in (["base", "import", "zoo", str(base)], ["build", "--all"]):
        subprocess.run(
            [sys.executable, "-m", "rootfs", *args], env=env, check=True, capture_output=True
        )
    (tmp_path / f"{label}-export" / PC1 / "d03/f007").write_bytes(b"host-local\n")
    (tmp_path / f"{label}-export" / PC1 / "d03/f006").write_bytes(b"conflicting\n")
    v2 = tmp_path / f"{label}-v2"
    subprocess.run(["cp", "-a", str(base), str(v2)], check=True)
    rng = random.Random(9)
    for d in range(20):
        for f in range(0, 100, 3):
            path = v2 / f"d{d:02d}" / f"f{f:03d}"
            if rng.random() < 0.2:
                path.unlink()
            else:
                path.write_bytes(rng.randbytes(rng.randint(0, 6000)))
    _pin_mtimes(v2)
    return env, v2


def _pin_mtimes(root: Path) -> None:
    """Same mtimes in every run, so two scenarios' trees compare equal."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), ns=(10**18, 10**18), follow_symlinks=False)
    os.utime(root, ns=(10**18, 10**18))


@pytest.mark.slow
def _processes_using(state_dir: Path) -> list[int]:
    """Pids of processes whose environment points at *state_dir* (rootfs commands, workers)."""
    needle = f"ROOTFS_STATE_DIR={state_dir}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                pids.append(int(entry))
    return pids


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_kill_9_during_update_of_several_hosts_converges(
    tmp_path: Path, zoo_tree: Path, jobs: str
) -> None:
    clean_env, clean_v2 = _scenario(tmp_path, zoo_tree, "clean")
    subprocess.run(
        [sys.executable, "-m", "rootfs", "base", "update", "zoo", str(clean_v2)],
        env=clean_env,
        check=True,
        capture_output=True,
    )
    env, v2 = _scenario(tmp_path, zoo_tree, "killed")
    subprocess.run(
        [sys.executable, "-m", "rootfs", "base", "update", "zoo", str(v2), "--no-apply"],
        env=env,
        check=True,
        capture_output=True,
    )
    rng = random.Random(3)
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "rootfs", "build", "--all", "--jobs", jobs],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        journals = list((tmp_path / "killed-state/hosts").glob("*/journal"))
        deadline = time.monotonic() + 30
        while not journals and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
            journals = list((tmp_path / "killed-state/hosts").glob("*/journal"))
        time.sleep(rng.uniform(0, 0.15))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        deadline = time.monotonic() + 5
        while _processes_using(tmp_path / "killed-state") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _processes_using(tmp_path / "killed-state") == []  # no worker outlives it
    final = subprocess.run(
        [sys.executable, "-m", "rootfs", "build", "--all"], env=env, capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr
    assert kills >= 2
    for ip in ("10.9.0.11", "10.9.0.12", "10.9.0.13"):
        want_state = State(tmp_path / "clean-state").applied_manifest(
            {"10.9.0.11": "pc1", "10.9.0.12": "pc2", "10.9.0.13": "pc3"}[ip]
        )
        assert want_state is not None
        want = disk.read_tree(str(tmp_path / "clean-export" / ip), want_state, checksum=True)
        got = disk.read_tree(str(tmp_path / "killed-export" / ip), want_state, checksum=True)
        differing = [c for c in diff(want, got, ignore_dir_mtime=True)]
        # The host-local file was written at a different moment in each scenario.
        local = {"/d03/f007", "/d03/f006"}
        assert [c for c in differing if c.path not in local or c.kind != "metadata"] == []
    pc1 = tmp_path / "killed-export" / PC1
    assert (pc1 / "d03/f007").read_bytes() == b"host-local\n"
    assert (pc1 / "d03/f006").read_bytes() == b"conflicting\n"  # the base changed it too
    assert (pc1 / "d03/f006.rootfs-new").read_bytes() == (clean_v2 / "d03/f006").read_bytes()


def _builder(site: Path, tmp_path: Path, prefix: str = "") -> tuple[Builder, Site]:
    environ = {
        "ROOTFS_STATE_DIR": str(tmp_path / f"{prefix}state"),
        "ROOTFS_EXPORT_ROOT": str(tmp_path / f"{prefix}export"),
    }
    loaded = load_site(site, environ=environ)
    return Builder(loaded, State(loaded.config.state_dir)), loaded


def test_update_recomposes_what_was_applied_instead_of_reading_it(
    run: Run, site: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host whose overlays did not change is brought forward without reading its applied
    manifest back (the cost of that grows with the base), and ends exactly where reading it
    would have led: the same trees, manifests and records."""
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"changed\n")
    (v2 / "empty").unlink()
    (v2 / "added.txt").write_bytes(b"new\n")
    os.chown(v2 / "hl/a", 1234, 0)
    run("base", "update", "zoo", str(v2), "--no-apply")
    for name in ("state", "export"):
        subprocess.run(
            ["cp", "-a", str(tmp_path / name), str(tmp_path / f"slow-{name}")], check=True
        )

    slow, slow_site = _builder(site, tmp_path, "slow-")
    monkeypatch.setattr(Builder, "_recomposed", lambda *args: None)
    slow_results = slow.build(slow_site.hosts, jobs=1, progress=False)
    monkeypatch.undo()

    def unread(*args: object) -> None:
        raise AssertionError("the applied manifest was read back")

    fast, fast_site = _builder(site, tmp_path)
    monkeypatch.setattr(State, "applied_manifest", unread)
    results = fast.build(fast_site.hosts, jobs=1, progress=False)
    monkeypatch.undo()
    assert [r.plan for r in results] == [r.plan for r in slow_results]
    assert results[0].plan.counts()["modified"] == 1
    for host in ("pc1", "pc2"):
        want = State(tmp_path / "slow-state")
        got = State(tmp_path / "state")
        assert got.host_dir(host).joinpath("applied.manifest").read_bytes() == (
            want.host_dir(host).joinpath("applied.manifest").read_bytes()
        )
        got_record, want_record = got.host_record(host), want.host_record(host)
        assert got_record is not None and want_record is not None
        # The inputs digest covers the export root, which the two scenarios differ in.
        assert dataclasses.replace(got_record, built_at=0, inputs="") == dataclasses.replace(
            want_record, built_at=0, inputs=""
        )
    for ip in ("10.9.0.11", "10.9.0.12"):
        reference = State(tmp_path / "state").applied_manifest({"10.9.0.11": "pc1"}.get(ip, "pc2"))
        assert reference is not None
        assert disk.read_tree(str(tmp_path / "export" / ip), reference, checksum=True) == (
            disk.read_tree(str(tmp_path / "slow-export" / ip), reference, checksum=True)
        )
    clean(run)


def test_update_reads_the_applied_manifest_when_it_is_not_what_composing_gives(
    run: Run, site: Path, built: Path, tmp_path: Path
) -> None:
    """A recorded manifest that composing the old generation does not reproduce (here: one
    edited; an older rootfs's would do too) is read back, not trusted."""
    state = State(tmp_path / "state")
    applied = state.applied_manifest("pc1")
    record = state.host_record("pc1")
    assert applied is not None and record is not None
    secret = applied.entries["/private/secret"]
    edited = Manifest({**applied.entries, secret.path: secret._replace(mode=0o640)})
    data = serialize(edited)
    (state.host_dir("pc1") / "applied.manifest").write_bytes(data)
    state.update_record(dataclasses.replace(record, manifest_digest=manifest_digest(data)))
    os.chmod(tree(tmp_path) / "private/secret", 0o640)  # the tree agrees with the record
    v2 = make_v2(built, tmp_path)
    (v2 / "added.txt").write_bytes(b"new\n")
    lines = run("base", "update", "zoo", str(v2)).stdout.splitlines()
    # Only the manifest read back says 0640, so only pc1's plan puts 0600 back.
    assert sorted(line.split(";")[0] for line in lines if line.startswith(("pc1:", "pc2:"))) == [
        "pc1: 1 added, 2 metadata",
        "pc2: 1 added, 1 metadata",
    ]
    assert (tree(tmp_path) / "private/secret").stat().st_mode & 0o777 == 0o600


def test_update_works_when_the_old_generation_is_unreadable(
    run: Run, built: Path, tmp_path: Path
) -> None:
    """Recomposing needs the generation last applied; without it the recorded manifest is
    read back, as before."""
    v2 = make_v2(built, tmp_path)
    (v2 / "small.txt").write_bytes(b"changed\n")
    run("base", "update", "zoo", str(v2), "--no-apply")
    for path in (tmp_path / "state/bases/zoo").glob("1.manifest*"):
        path.write_bytes(b"not a manifest\n")
    run("build", "--all")
    assert (tree(tmp_path) / "small.txt").read_bytes() == b"changed\n"
    clean(run)


def test_a_damaged_generation_manifest_is_one_clear_error(
    run: Run, built: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "state/bases/zoo/1.manifest"
    manifest.write_bytes(b"not a manifest\n")
    (tmp_path / "state/bases/zoo/1.manifest.cache").unlink(missing_ok=True)
    proc = run("base", "update", "zoo", str(make_v2(built, tmp_path)), check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"rootfs: error: {manifest}: line 1: expected header")
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
