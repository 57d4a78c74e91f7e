"""The apply executor on real trees: replaced and removed files keep their inode in the attic,
also when an interrupted apply is replayed and where the filesystem cannot swap names."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rootfs.engine import renames
from rootfs.engine.apply import Applier
from rootfs.store.layout import attic_name
from rootfs.store.objects import Store, hash_bytes
from rootfs.tree.manifest import DIR, FILE, Entry, Manifest
from rootfs.tree.plan import Plan, make_plan

MTIME = 1_700_000_000_123_456_789


def stored(store: Store, path: str, data: bytes, mode: int = 0o644) -> Entry:
    entry = Entry(path, FILE, mode, 0, 0, MTIME, len(data), hash_bytes(data))
    with store.batch() as batch:
        batch.add_bytes(data, entry)
    return entry


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    store.ensure()
    return store


class Scene:
    """A host tree holding /bin/tool and /etc/old, and an update replacing and removing them."""

    def __init__(self, tmp_path: Path, store: Store) -> None:
        self.root = tmp_path / "tree"
        self.attic = tmp_path / "attic"
        self.store = store
        root_dir = Entry("/", DIR, 0o755, 0, 0, MTIME, 0)
        dirs = [root_dir, root_dir._replace(path="/bin"), root_dir._replace(path="/etc")]
        self.old = Manifest.from_entries(
            [*dirs, stored(store, "/bin/tool", b"old tool\n"), stored(store, "/etc/old", b"x\n")]
        )
        self.new = Manifest.from_entries([*dirs, stored(store, "/bin/tool", b"new tool\n", 0o755)])
        first = Applier(self.root, store, "copy")
        first.prepare()
        first.run(make_plan(Manifest({}), self.old))
        self.plan = make_plan(self.old, self.new)

    def applier(self) -> Applier:
        applier = Applier(
            self.root,
            self.store,
            "copy",
            preserve=frozenset({"/bin/tool", "/etc/old"}),
            attic=self.attic,
        )
        applier.prepare()
        return applier

    def kept(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.attic.iterdir())}


def test_replaced_and_removed_files_keep_their_inodes(tmp_path: Path, store: Store) -> None:
    scene = Scene(tmp_path, store)
    tool = scene.root / "bin/tool"
    held = os.open(tool, os.O_RDONLY)  # a running client's open file
    old_ino = os.fstat(held).st_ino
    removed_ino = os.lstat(scene.root / "etc/old").st_ino
    stats = scene.applier().run(scene.plan)
    assert tool.read_bytes() == b"new tool\n"
    st = tool.stat()
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o755, MTIME)
    assert not (scene.root / "etc/old").exists()
    assert os.pread(held, 100, 0) == b"old tool\n"
    os.close(held)
    slot_tool, slot_old = (
        scene.attic / attic_name("/bin/tool"),
        scene.attic / attic_name("/etc/old"),
    )
    assert slot_tool.stat().st_ino == old_ino  # the very inode, not a copy
    assert slot_old.stat().st_ino == removed_ino
    assert stats.kept_in_attic == 2


def test_replay_after_the_swap_keeps_the_old_inode(tmp_path: Path, store: Store) -> None:
    scene = Scene(tmp_path, store)
    old_ino = (scene.root / "bin/tool").stat().st_ino
    scene.applier().run(scene.plan)
    new_ino = (scene.root / "bin/tool").stat().st_ino
    scene.applier().run(scene.plan)  # the journal replayed after a crash at its very end
    assert (scene.root / "bin/tool").stat().st_ino == new_ino  # nothing rewritten
    assert (scene.attic / attic_name("/bin/tool")).stat().st_ino == old_ino
    assert scene.kept() == {"bin%2Ftool": b"old tool\n", "etc%2Fold": b"x\n"}


def test_replay_before_the_swap_converges(tmp_path: Path, store: Store) -> None:
    scene = Scene(tmp_path, store)
    old_ino = (scene.root / "bin/tool").stat().st_ino
    scene.attic.mkdir()
    (scene.attic / attic_name("/bin/tool")).write_bytes(b"new t")  # killed while writing it
    scene.applier().run(scene.plan)
    assert (scene.root / "bin/tool").read_bytes() == b"new tool\n"
    assert (scene.attic / f"{attic_name('/bin/tool')}~1").stat().st_ino == old_ino
    assert scene.kept()[attic_name("/bin/tool")] == b"new t"  # left for the attic's release


def test_without_rename_exchange_inodes_are_kept_by_hardlink(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: str) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")  # what NFS, for one, answers

    monkeypatch.setattr(renames, "exchange", refuse)
    monkeypatch.setattr(renames, "rename_noreplace", refuse)
    scene = Scene(tmp_path, store)
    old_ino = (scene.root / "bin/tool").stat().st_ino
    scene.applier().run(scene.plan)
    assert (scene.root / "bin/tool").read_bytes() == b"new tool\n"
    assert not (scene.root / "etc/old").exists()
    assert (scene.attic / attic_name("/bin/tool")).stat().st_ino == old_ino
    assert scene.kept() == {"bin%2Ftool": b"old tool\n", "etc%2Fold": b"x\n"}


def test_a_directory_in_the_way_is_moved_aside_not_into_the_attic(
    tmp_path: Path, store: Store
) -> None:
    scene = Scene(tmp_path, store)
    tool = scene.root / "bin/tool"
    tool.unlink()
    tool.mkdir()
    (tool / "mine").write_bytes(b"host data\n")
    applier = scene.applier()
    applier.run(Plan(tuple(op for op in scene.plan.ops if op.path == "/bin/tool"), ()))
    assert tool.read_bytes() == b"new tool\n"
    assert [
        Path(p.split(" -> ")[1]).joinpath("mine").read_bytes() for p in applier.stats.moved_aside
    ] == [b"host data\n"]
    assert not scene.attic.exists() or not any(scene.attic.iterdir())
