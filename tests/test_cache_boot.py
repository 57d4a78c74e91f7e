"""The cache daemon's device rules at boot (rootfs/cache/boot.py): a disk is formatted only when
it is empty, used when it carries the rootfs cache label, and never touched otherwise."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from rootfs.cache.boot import LABEL, DeviceUnusable, find_device, prepare_device, probe


def ext_head(label: str) -> bytes:
    head = bytearray(1 << 20)
    head[1080:1082] = b"\x53\xef"
    head[1144 : 1144 + len(label)] = label.encode()
    return bytes(head)


def at(offset: int, data: bytes) -> bytes:
    head = bytearray(1 << 20)
    head[offset : offset + len(data)] = data
    return bytes(head)


@pytest.mark.parametrize(
    ("head", "state", "what"),
    [
        (bytes(1 << 20), "empty", ""),
        (ext_head(LABEL), "ours", ""),
        (ext_head("home"), "foreign", "an ext2/3/4 filesystem labelled 'home'"),
        (at(512, b"EFI PART"), "foreign", "a GPT partition table"),
        (at(510, b"\x55\xaa"), "foreign", "an MBR partition table or boot sector"),
        (at(0, b"XFSB"), "foreign", "an XFS filesystem"),
        (at(4086, b"SWAPSPACE2"), "foreign", "a swap area"),
        (at(0, b"LUKS\xba\xbe"), "foreign", "a LUKS encrypted volume"),
        (at(777_777, b"\x01"), "foreign", "data of an unknown kind"),  # one byte is enough
    ],
)
def test_probe(head: bytes, state: str, what: str) -> None:
    assert probe(head) == type(probe(head))(state, what)


def test_a_missing_device_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnusable, match=r"cache device .*/vdz does not exist"):
        find_device(str(tmp_path / "vdz"))


def test_a_device_holding_data_is_left_as_it_is(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    data = at(510, b"\x55\xaa") + os.urandom(4096)
    disk.write_bytes(data)
    with pytest.raises(DeviceUnusable, match=r"holds an MBR partition table .* left as it is"):
        prepare_device(str(disk), tmp_path / "cache")
    assert disk.read_bytes() == data
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_an_empty_device_is_formatted_once_then_kept(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    mnt = tmp_path / "cache"
    cache_dir = prepare_device(str(disk), mnt)
    try:
        assert cache_dir == mnt / "rootfs"
        (mnt / "kept").write_text("x")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert probe(disk.read_bytes()[: 1 << 20]).state == "ours"
    prepare_device(str(disk), mnt)  # ours now: mounted as it is, not formatted again
    try:
        assert (mnt / "kept").read_text() == "x"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
