"""Root enforcement: every way out of the boot directory is refused with ERROR 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootfs.netboot.tftp.packet import ERR_ACCESS, ERR_NOT_FOUND
from rootfs.netboot.tftp.paths import Refused, clean_untrusted, open_in_root


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    root = tmp_path / "boot"
    (root / "grub" / "x86_64-efi").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"loader")
    (root / "grub" / "x86_64-efi" / "normal.mod").write_bytes(b"mod")
    (root / "inside-link").symlink_to("pxelinux.0")
    (root / "escape-link").symlink_to("/etc/passwd")
    (root / "escape-dir").symlink_to(tmp_path)
    (tmp_path / "secret").write_bytes(b"secret")
    os.mkfifo(root / "fifo")
    return root


def read(root: Path, raw: bytes) -> bytes:
    f = open_in_root(root, clean_untrusted(raw))
    try:
        return f.read(0, f.size)
    finally:
        f.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"../secret",
        b"..\\secret",
        b"grub/../../secret",
        b"grub\\..\\..\\secret",
        b"a/./../../secret",
        b"..",
        b"/../secret",
        b"C:\\Windows\\win.ini",
        b"pxe\x01linux.0",
        b"pxelinux.0\n",
        b"\x7f",
        b"x" * 128,
        b"/",
        b"./",
    ],
)
def test_names_refused_before_touching_the_disk(raw: bytes) -> None:
    with pytest.raises(Refused) as e:
        clean_untrusted(raw)
    assert e.value.code == ERR_ACCESS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"pxelinux.0", b"loader"),
        (b"/pxelinux.0", b"loader"),  # root-relative, as DHCP filenames often are
        (b"grub/x86_64-efi/normal.mod", b"mod"),
        (b"/grub/x86_64-efi/normal.mod", b"mod"),  # what GRUB asks for
        (b"grub\\x86_64-efi\\normal.mod", b"mod"),  # Windows-style separators
        (b"grub//x86_64-efi/./normal.mod", b"mod"),
        (b"inside-link", b"loader"),  # symlinks that stay inside are fine
    ],
)
def test_names_served(boot: Path, raw: bytes, expected: bytes) -> None:
    assert read(boot, raw) == expected


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"escape-link", ERR_ACCESS),  # symlink to /etc/passwd
        (b"escape-dir/secret", ERR_ACCESS),  # directory symlink leading out
        (b"/etc/passwd", ERR_ACCESS),  # absolute, not under the boot directory
        (b"/etc/shadow", ERR_ACCESS),
        (b"grub", ERR_ACCESS),  # a directory
        (b"fifo", ERR_ACCESS),  # must not hang the server
        (b"missing", ERR_NOT_FOUND),
        (b"pxelinux.0/x", ERR_NOT_FOUND),
    ],
)
def test_refused_on_disk(boot: Path, raw: bytes, code: int) -> None:
    with pytest.raises(Refused) as e:
        read(boot, raw)
    assert e.value.code == code


def test_boot_dir_itself_through_a_symlink_is_fine(tmp_path: Path, boot: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(boot)
    assert read(alias, b"pxelinux.0") == b"loader"
