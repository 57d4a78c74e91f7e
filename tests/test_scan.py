"""Scanning real trees and real tarballs (GNU tar and Python tarfile) as root."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from rootfs.engine.progress import Progress
from rootfs.engine.scan import ScanResult, scan_directory, scan_source, scan_tarball
from rootfs.errors import UserError
from rootfs.store.objects import Store, hash_bytes
from rootfs.tree.manifest import Entry, Manifest, Xattrs

MTIME = 1_650_000_000 * 10**9
CAPABILITY = b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" + b"\x00" * 12
USER_TEST = b"hello\x00world\xff"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state" / "store")


def scan(store: Store, source: Path, progress: Progress | None = None) -> ScanResult:
    with store.batch() as batch:
        return scan_source(source, batch, progress=progress)


def f(
    path: str,
    data: bytes,
    mode: int = 0o644,
    *,
    uid: int = 0,
    gid: int = 0,
    mtime_ns: int = MTIME,
    link: str = "",
    xattrs: Xattrs = (),
) -> Entry:
    return Entry(path, "f", mode, uid, gid, mtime_ns, len(data), hash_bytes(data), link, xattrs)


def d(path: str, mode: int = 0o755, *, uid: int = 0, gid: int = 0, mtime_ns: int = MTIME) -> Entry:
    return Entry(path, "d", mode, uid, gid, mtime_ns, 0)


def sym(path: str, target: str) -> Entry:
    return Entry(path, "l", 0o777, 0, 0, MTIME, len(target.encode()), target)


def expected_zoo(zoo: Path) -> list[Entry]:
    big = (zoo / "big.bin").read_bytes()
    # the kernel may store the capability in another revision; the scan reports what is there
    caps = os.getxattr(zoo / "caps", "security.capability")
    return [
        d("/"),
        f("/empty", b""),
        f("/small.txt", b"hello\n", mtime_ns=1_000_000_000 * 10**9),
        f("/big.bin", big),
        f("/medium.bin", (zoo / "medium.bin").read_bytes()),
        d("/private", 0o700),
        f("/private/secret", b"secret\n", 0o600),
        d("/tmp", 0o1777),
        d("/setgid", 0o2755),
        d("/setgid/nested"),
        d("/setgid/nested/deeper"),
        f("/setgid/nested/deeper/leaf", b"leaf\n"),
        d("/bin"),
        f("/bin/su", b"#!/bin/su\n", 0o4755),
        d("/home"),
        d("/home/user", 0o750, uid=1234, gid=5678),
        f("/home/user/owned", b"mine\n", 0o640, uid=1234, gid=5678),
        d("/links"),
        sym("/links/rel", "../small.txt"),
        sym("/links/abs", "/etc/passwd"),
        sym("/links/dangling", "nowhere/at/all"),
        d("/hl"),
        f("/hl/a", b"pair\n", link="/hl/a"),
        f("/hl/b", b"pair\n", link="/hl/a"),
        f("/hl/t1", b"triple\n", 0o600, link="/hl/t1"),
        f("/t2", b"triple\n", 0o600, link="/hl/t1"),
        f("/links/t3", b"triple\n", 0o600, link="/hl/t1"),
        d("/dev"),
        Entry("/dev/null", "c", 0o666, 0, 0, MTIME, 0, "1:3"),
        Entry("/dev/loop0", "b", 0o660, 0, 6, MTIME, 0, "7:0"),
        Entry("/fifo", "p", 0o620, 0, 0, MTIME, 0),
        d("/run"),
        f(
            "/caps",
            b"\x7fELF",
            0o755,
            xattrs=(("security.capability", caps), ("user.test", USER_TEST)),
        ),
        f("/caf\udce9", b"latin-1\n"),
        f("/tab\tand\nnewline", b"odd\n"),
        d("/old", mtime_ns=86_400 * 10**9),
        f("/future", b"later\n", mtime_ns=4_102_444_800 * 10**9),
    ]


def test_directory_scan_records_every_entry_exactly(zoo_tree: Path, store: Store) -> None:
    result = scan(store, zoo_tree)
    expected = Manifest.from_entries(expected_zoo(zoo_tree))
    assert list(result.manifest) == list(expected)
    assert result.notes == ("skipped socket /run/sock",)
    files = [e for e in expected if e.kind == "f"]
    assert result.files == len(files)
    unique = {e.data: e.size for e in files}
    assert result.bytes == sum(unique.values())  # zoo contents differ except hardlinks
    assert result.new_objects == len(unique)
    assert result.new_bytes == sum(unique.values())


def test_security_capability_is_recorded(zoo_tree: Path, store: Store) -> None:
    entry = scan(store, zoo_tree).manifest.get("/caps")
    assert entry is not None
    xattrs = dict(entry.xattrs)
    assert xattrs["user.test"] == USER_TEST
    assert xattrs["security.capability"][4:8] == CAPABILITY[4:8]  # cap_net_raw permitted


def test_store_objects_hold_the_source_bytes(zoo_tree: Path, store: Store) -> None:
    manifest = scan(store, zoo_tree).manifest
    for entry in manifest:
        if entry.kind == "f":
            source = os.path.join(os.fsencode(zoo_tree), os.fsencode(entry.path[1:]))
            with open(source, "rb") as src:
                assert store.object_path(entry.digest).read_bytes() == src.read(), entry.path


def test_object_takes_the_first_entrys_metadata(zoo_tree: Path, store: Store) -> None:
    manifest = scan(store, zoo_tree).manifest
    su = manifest.get("/bin/su")
    assert su is not None
    st = os.lstat(store.object_path(su.digest))
    assert (st.st_mode & 0o7777, st.st_uid, st.st_mtime_ns) == (0o4755, 0, MTIME)


def test_rescan_stores_nothing_new(zoo_tree: Path, store: Store) -> None:
    first = scan(store, zoo_tree)
    again = scan(store, zoo_tree)
    assert again.manifest == first.manifest
    assert (again.new_objects, again.new_bytes) == (0, 0)
    assert again.bytes == first.bytes


def test_hardlink_with_its_other_name_outside_the_tree_is_no_group(
    zoo_tree: Path, store: Store
) -> None:
    os.link(zoo_tree / "future", zoo_tree.parent / "outside")
    entry = scan(store, zoo_tree).manifest.get("/future")
    assert entry is not None and entry.link == ""


def test_progress_counts_files_and_bytes(zoo_tree: Path, store: Store) -> None:
    progress = Progress("scan", enabled=False)
    result = scan(store, zoo_tree, progress)
    assert (progress.files, progress.bytes) == (result.files, result.bytes)
    assert (progress.total_files, progress.total_bytes) == (result.files, result.bytes)


def test_mount_point_contents_are_skipped(zoo_tree: Path, store: Store) -> None:
    proc = zoo_tree / "old"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0555", "tmpfs", proc], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (proc / "inside").write_bytes(b"not part of the tree")
        result = scan(store, zoo_tree)
    finally:
        subprocess.run(["umount", proc], check=True)
    assert "/old/inside" not in result.manifest
    old = result.manifest.get("/old")
    assert old is not None and old.kind == "d"
    assert "skipped contents of mount point /old" in result.notes


# ---------------------------------------------------------------- tarballs

COMPRESSORS = {
    "tar": [],
    "tar.gz": ["-z"],
    "tar.xz": ["-J"],
    "tar.zst": ["-I", "zstd"],
    "tar.bz2": ["-j"],
}


def gnu_tar(tree: Path, out: Path, *extra: str) -> Path:
    flags = ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-cpf", str(out), *extra]
    subprocess.run(["tar", *flags, "-C", str(tree), "."], check=True, capture_output=True)
    return out


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_gnu_tarball_matches_directory_scan(
    zoo_tree: Path, store: Store, tmp_path: Path, suffix: str
) -> None:
    tarball = gnu_tar(zoo_tree, tmp_path / f"zoo.{suffix}", *COMPRESSORS[suffix])
    from_dir = scan(store, zoo_tree)
    from_tar = scan(store, tarball)
    assert list(from_tar.manifest) == list(from_dir.manifest)
    assert (from_tar.files, from_tar.bytes, from_tar.new_objects) == (
        from_dir.files,
        from_dir.bytes,
        0,
    )


def test_gnu_posix_tarball_keeps_nanosecond_mtimes(
    zoo_tree: Path, store: Store, tmp_path: Path
) -> None:
    os.utime(zoo_tree / "small.txt", ns=(1, 1_234_567_890_123_456_789))
    tarball = gnu_tar(zoo_tree, tmp_path / "zoo.tar", "--format=posix")
    entry = scan(store, tarball).manifest.get("/small.txt")
    assert entry is not None and entry.mtime_ns == 1_234_567_890_123_456_789
    assert scan(store, tarball).manifest == scan(store, zoo_tree).manifest


def test_tarball_xattr_bytes_survive(zoo_tree: Path, store: Store, tmp_path: Path) -> None:
    entry = scan(store, gnu_tar(zoo_tree, tmp_path / "zoo.tar")).manifest.get("/caps")
    assert entry is not None
    assert dict(entry.xattrs) == {
        "security.capability": os.getxattr(zoo_tree / "caps", "security.capability"),
        "user.test": USER_TEST,
    }


def test_tar_suffix_is_optional(zoo_tree: Path, store: Store, tmp_path: Path) -> None:
    tarball = gnu_tar(zoo_tree, tmp_path / "zoo.tar.zst", "-I", "zstd")
    renamed = tarball.rename(tmp_path / "base-image")
    assert scan(store, renamed).manifest == scan(store, zoo_tree).manifest


def python_tar(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def info(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mtime = 1_700_000_000
    for key, value in kw.items():
        setattr(member, key, value)
    return member


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "./a/.."])
def test_tarball_escaping_the_root_is_refused(store: Store, tmp_path: Path, name: str) -> None:
    tarball = python_tar(tmp_path / "evil.tar", [(info(name), b"boom")])
    with pytest.raises(UserError) as caught:
        scan(store, tarball)
    assert str(tarball) in str(caught.value)
    assert name in str(caught.value)


def test_tarball_hardlink_escaping_the_root_is_refused(store: Store, tmp_path: Path) -> None:
    link = info("a", tarfile.LNKTYPE, linkname="../etc/shadow")
    with pytest.raises(UserError, match=r"\.\./etc/shadow"):
        scan(store, python_tar(tmp_path / "evil.tar", [(link, None)]))


def test_tarball_implies_missing_directories(store: Store, tmp_path: Path) -> None:
    tarball = python_tar(tmp_path / "t.tar", [(info("usr/lib/x", mode=0o600), b"x")])
    os.utime(tarball, ns=(5, 42 * 10**9))
    manifest = scan(store, tarball).manifest
    implied = Entry("/", "d", 0o755, 0, 0, 42 * 10**9, 0)
    assert list(manifest) == [
        implied,
        implied._replace(path="/usr"),
        implied._replace(path="/usr/lib"),
        Entry("/usr/lib/x", "f", 0o600, 0, 0, 1_700_000_000 * 10**9, 1, hash_bytes(b"x")),
    ]


def test_tarball_dot_member_is_the_root(store: Store, tmp_path: Path) -> None:
    members = [
        (info("./", tarfile.DIRTYPE, mode=0o700, uid=7, gid=8), None),
        (info("./etc/", tarfile.DIRTYPE, mode=0o750), None),
        (info("./etc/hosts", pax_headers={"mtime": "1700000000.123456789"}), b"h"),
    ]
    manifest = scan(store, python_tar(tmp_path / "t.tar", members)).manifest
    assert manifest.get("/") == Entry("/", "d", 0o700, 7, 8, 1_700_000_000 * 10**9, 0)
    assert manifest.get("/etc") == Entry("/etc", "d", 0o750, 0, 0, 1_700_000_000 * 10**9, 0)
    hosts = manifest.get("/etc/hosts")
    assert hosts is not None and hosts.mtime_ns == 1_700_000_000_123_456_789


def test_tarball_later_member_wins(store: Store, tmp_path: Path) -> None:
    members = [
        (info("a"), b"first"),
        (info("b", tarfile.LNKTYPE, linkname="a"), None),
        (info("a", mode=0o600), b"second"),
    ]
    manifest = scan(store, python_tar(tmp_path / "t.tar", members)).manifest
    when = 1_700_000_000 * 10**9
    assert list(manifest)[1:] == [
        Entry("/a", "f", 0o600, 0, 0, when, 6, hash_bytes(b"second")),
        Entry("/b", "f", 0o644, 0, 0, when, 5, hash_bytes(b"first")),
    ]


def test_tarball_hardlink_to_unknown_member_is_refused(store: Store, tmp_path: Path) -> None:
    members = [
        (info("dir", tarfile.DIRTYPE), None),
        (info("b", tarfile.LNKTYPE, linkname="dir"), None),
    ]
    tarball = python_tar(tmp_path / "t.tar", members)
    with pytest.raises(UserError, match="'b' is a hardlink to 'dir'"):
        scan(store, tarball)


def test_tarball_member_under_a_file_is_refused(store: Store, tmp_path: Path) -> None:
    members = [(info("a"), b"file"), (info("a/b"), b"child")]
    with pytest.raises(UserError, match="'/a/b' lies under '/a'"):
        scan(store, python_tar(tmp_path / "t.tar", members))


def truncations(tarball: Path) -> Iterator[int]:
    size = tarball.stat().st_size
    yield from (size // 2, size // 3, 100, 3)
    if tarball.suffix != ".tar":  # a plain tar cut in its zero padding is still whole
        yield size - 4


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_truncated_tarball_is_a_user_error(
    zoo_tree: Path, store: Store, tmp_path: Path, suffix: str
) -> None:
    whole = gnu_tar(zoo_tree, tmp_path / f"whole.{suffix}", *COMPRESSORS[suffix])
    data = whole.read_bytes()
    for cut in truncations(whole):
        broken = tmp_path / f"broken.{suffix}"
        broken.write_bytes(data[:cut])
        with pytest.raises(UserError, match="not a readable tar archive") as caught:
            scan(store, broken)
        assert str(broken) in str(caught.value)
    assert not any(store.tmp.iterdir())


def test_corrupt_compressed_tarball_is_a_user_error(
    zoo_tree: Path, store: Store, tmp_path: Path
) -> None:
    for suffix in ("tar.gz", "tar.xz", "tar.zst", "tar.bz2"):
        data = bytearray(gnu_tar(zoo_tree, tmp_path / "t", *COMPRESSORS[suffix]).read_bytes())
        data[len(data) // 3 : len(data) // 3 + 64] = bytes(64)
        broken = tmp_path / f"corrupt.{suffix}"
        broken.write_bytes(bytes(data))
        with pytest.raises(UserError, match="not a readable tar archive"):
            scan(store, broken)


def test_garbage_with_tar_suffix_is_a_user_error(store: Store, tmp_path: Path) -> None:
    garbage = tmp_path / "base.tar"
    garbage.write_bytes(b"this is no tarball\n" * 100)
    with pytest.raises(UserError, match="not a readable tar archive"):
        scan(store, garbage)


# ---------------------------------------------------------------- dispatch


def test_missing_source(store: Store, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"base source '.*/nope' does not exist"):
        scan(store, tmp_path / "nope")


def test_unrecognised_source(store: Store, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(UserError, match="neither a directory nor a tar archive"):
        scan(store, text)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="neither a directory nor a tar archive"):
        scan(store, fifo)


def test_direct_entry_points(zoo_tree: Path, store: Store, tmp_path: Path) -> None:
    tarball = gnu_tar(zoo_tree, tmp_path / "zoo.tar")
    with store.batch() as batch:
        by_dir = scan_directory(zoo_tree, batch)
        by_tar = scan_tarball(tarball, batch)
    assert by_dir.manifest == by_tar.manifest


def test_deep_tree(store: Store, tmp_path: Path) -> None:
    root = tmp_path / "deep"
    path = root
    for _ in range(200):
        path = path / "d"
    path.mkdir(parents=True)
    shutil.copy(__file__, path / "leaf.py")
    manifest = scan(store, root).manifest
    assert len(manifest) == 202


def test_plain_tarball_cut_between_members_is_a_user_error(
    zoo_tree: Path, store: Store, tmp_path: Path
) -> None:
    whole = gnu_tar(zoo_tree, tmp_path / "whole.tar")
    with tarfile.open(whole) as tar:
        offsets = [m.offset for m in tar.getmembers()]
    data = whole.read_bytes()
    broken = tmp_path / "broken.tar"
    broken.write_bytes(data[: offsets[len(offsets) // 2]])
    with pytest.raises(UserError, match="unexpected end of data"):
        scan(store, broken)
    # a header with a bad checksum mid-archive must not end the archive quietly
    corrupt = bytearray(data)
    corrupt[offsets[len(offsets) // 2] + 148] ^= 0x01
    broken.write_bytes(bytes(corrupt))
    with pytest.raises(UserError, match="not a readable tar archive"):
        scan(store, broken)
