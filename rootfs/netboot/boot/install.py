"""`rootfs boot install`: copy network boot loaders from installed Debian packages into the TFTP
boot directory, under the names the DHCP side hands out.

Only what is installed is copied; the report names the packages to install for the rest. Each file
is replaced atomically (temp + rename), so a client downloading the old loader at that moment
finishes with the old bytes, and an unchanged file is not rewritten.
"""

from __future__ import annotations

import filecmp
from dataclasses import dataclass
from pathlib import Path

from rootfs.durable import atomic_write_bytes


@dataclass(frozen=True)
class Loader:
    """One file to install: candidate sources in order of preference, and its name when served."""

    target: str
    package: str
    sources: tuple[str, ...]
    why: str


LOADERS: tuple[Loader, ...] = (
    Loader("pxelinux.0", "pxelinux", ("/usr/lib/PXELINUX/pxelinux.0",), "BIOS PXE loader"),
    Loader("lpxelinux.0", "pxelinux", ("/usr/lib/PXELINUX/lpxelinux.0",), "PXELINUX with HTTP"),
    *(
        Loader(
            name, "syslinux-common", (f"/usr/lib/syslinux/modules/bios/{name}",), "PXELINUX module"
        )
        for name in ("ldlinux.c32", "libutil.c32", "libcom32.c32", "menu.c32", "vesamenu.c32")
    ),
    Loader("undionly.kpxe", "ipxe", ("/usr/lib/ipxe/undionly.kpxe",), "iPXE for BIOS (UNDI)"),
    Loader("ipxe.efi", "ipxe", ("/usr/lib/ipxe/ipxe.efi",), "iPXE for UEFI x64"),
    Loader("snponly.efi", "ipxe", ("/usr/lib/ipxe/snponly.efi",), "iPXE for UEFI x64 (SNP)"),
    Loader(
        "grubnetx64.efi",
        "grub-efi-amd64-signed or grub-efi-amd64-bin",
        (
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",  # Secure Boot capable
            "/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi",
        ),
        "GRUB for UEFI x64 network boot",
    ),
    Loader("shimx64.efi", "shim-signed", ("/usr/lib/shim/shimx64.efi.signed",), "Secure Boot shim"),
    Loader("mmx64.efi", "shim-signed", ("/usr/lib/shim/mmx64.efi.signed",), "shim's MOK manager"),
    # shim chain-loads grubx64.efi from its own directory.
    Loader(
        "grubx64.efi",
        "grub-efi-amd64-signed or grub-efi-amd64-bin",
        (
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
            "/usr/lib/grub/x86_64-efi/monolithic/grubnetx64.efi",
        ),
        "GRUB as loaded by shim",
    ),
)


@dataclass(frozen=True)
class Installed:
    """What happened to one loader."""

    loader: Loader
    source: Path | None  # None: no package provides it here
    status: str  # "copied", "unchanged" or "missing"


def install_loaders(boot_dir: Path, *, system_root: Path = Path("/")) -> list[Installed]:
    """Copy every available loader into `boot_dir`; `system_root` lets tests use a fake /usr."""
    boot_dir.mkdir(parents=True, exist_ok=True)
    results: list[Installed] = []
    for loader in LOADERS:
        source = next(
            (p for s in loader.sources if (p := system_root / s.lstrip("/")).is_file()), None
        )
        if source is None:
            results.append(Installed(loader, None, "missing"))
            continue
        target = boot_dir / loader.target
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            results.append(Installed(loader, source, "unchanged"))
            continue
        atomic_write_bytes(target, source.read_bytes())
        results.append(Installed(loader, source, "copied"))
    return results
