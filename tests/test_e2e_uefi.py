"""End to end under UEFI: OVMF (Debian's ovmf) network-boots rootfs-built roots, nothing simulated.

One lab and one site serve every boot of this module (each TCG boot costs half a minute):

- the NIC's iPXE ROM, EFI image: DHCP -> boot.ipxe -> kernel + initrd -> NFS root -> marker;
- no ROM, OVMF's own PXE: DHCP (option 93 = 7) -> grubnetx64.efi (Debian's signed GRUB) ->
  /grub/grub.cfg (its built-in prefix) -> /vmlinuz + /initrd.img over TFTP -> marker;
- Secure Boot (OVMF's secboot build, Microsoft's keys enrolled): shimx64.efi (signed by
  Microsoft) -> grubx64.efi (signed by Debian, checked by shim) -> Debian's signed kernel, locked
  down -> marker; and Debian's GRUB without shim is refused by the firmware;
- OVMF's own HTTP Boot (HttpBootDxe is in Debian's build; its PXE entries are switched off):
  DHCP (option 60 "HTTPClient", option 93 = 16) -> a URL on rootfs serve's HTTP front end.
  Debian 12's signed GRUB cannot go on from there (no http module, and no boot location from an
  HTTP Boot, so no $prefix and no grub.cfg: it stops at its prompt); iPXE (snponly.efi) can.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_lab import Boot, BootLab, missing_tools, missing_uefi, open_boot_lab
from test_e2e import (
    CACHE,
    MARKER_APPEND,
    SERVER,
    Site,
    _assert_booted,
    _make_base,
    _serve,
    _tail,
    make_e2e_site,
)

# How UEFI iPXE fetches boot.ipxe, and so the kernel and initrd it names (relative names):
# "tftp", or "http" for the HTTP front end of `rootfs serve`.
IPXE_OVER = "http"
IPXE = ("efi-ipxe", "52:54:00:e2:e1:01", "192.168.240.21")
GRUB = ("efi-grub", "52:54:00:e2:e1:02", "192.168.240.22")
SHIM = ("efi-shim", "52:54:00:e2:e1:03", "192.168.240.23")
HTTP = ("efi-http", "52:54:00:e2:e1:04", "192.168.240.24")
BOOT_TIMEOUT = 240.0  # seconds from power-on to power-off; 25 to 45 here under TCG
SIGNED_GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")
SIGNED_SHIM = Path("/usr/lib/shim/shimx64.efi.signed")
APPEND = MARKER_APPEND

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, taps, NFS server)"),
    pytest.mark.skipif(
        bool(missing_tools() + missing_uefi()),
        reason=f"missing: {', '.join(missing_tools() + missing_uefi())}",
    ),
]
needs_signed_grub = pytest.mark.skipif(
    not SIGNED_GRUB.exists(), reason="missing: grub-efi-amd64-signed"
)
needs_secure_boot = pytest.mark.skipif(
    bool(missing_uefi(secure_boot=True)) or not SIGNED_SHIM.exists() or not SIGNED_GRUB.exists(),
    reason="missing: ovmf (secboot build), shim-signed or grub-efi-amd64-signed",
)


@pytest.fixture(scope="module")
def uefi_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A site with the four hosts built, Debian's kernel and rootfs's initramfs, and the loaders
    of `rootfs boot install` (signed GRUB, shim) in the boot directory."""
    tmp = tmp_path_factory.mktemp("uefi")
    dhcp = f'\n[dhcp.boot_files]\nipxe = "{IPXE_OVER}://{SERVER}/boot.ipxe"\n'
    site = make_e2e_site(tmp, dhcp=dhcp, append=APPEND)
    root = site.root
    site.rootfs("base", "import", "e2e", str(_make_base(tmp / "base", "uefi generation")))
    for name, mac, ip in (IPXE, GRUB, SHIM, HTTP):
        site.rootfs("host", "add", name, "--mac", mac, "--ip", ip, "--no-build")
    # Secure Boot starts at shim, whatever the firmware's architecture says; without `quiet` the
    # kernel says that it saw Secure Boot on and locked itself down.
    hosts = root / "hostcfg/hosts.toml"
    hosts.write_text(
        hosts.read_text()
        + f'\n[hosts.{SHIM[0]}.dhcp]\nboot_file = "shimx64.efi"\n'
        + f'\n[hosts.{SHIM[0]}.boot]\nappend = "{APPEND.replace(" quiet", "")}"\n'
    )
    site.rootfs("build", "--all")
    print(site.rootfs("boot", "initramfs", "--cache", str(CACHE)))
    print(site.rootfs("boot", "install"))
    return site


@pytest.fixture(scope="module")
def uefi_lab(uefi_site: Site) -> Iterator[tuple[BootLab, Path]]:
    """The lab with rpcbind, ganesha and `rootfs serve` running; yields it and the log dir."""
    logs = uefi_site.root.parent / "logs"
    logs.mkdir()
    with open_boot_lab(SERVER) as lab:
        _serve(uefi_site, lab, logs)
        lab.answer_router_solicitations(logs / "router-advert.log")  # iPXE: 16 s less per boot
        yield lab, logs
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab.ns not in names
    assert lab.holder is not None and lab.holder.poll() is not None


def _boot(
    lab: BootLab,
    logs: Path,
    mac: str,
    tag: str,
    *,
    nic_rom: str,
    secure_boot: bool = False,
    until: str | None = None,
    http_boot: bool = False,
) -> Boot:
    boot = lab.boot(mac, timeout=BOOT_TIMEOUT, log=logs / f"console-{tag}.log", until=until,
                    firmware="uefi", nic_rom=nic_rom, secure_boot=secure_boot,
                    http_boot=http_boot)  # fmt: skip
    print(f"--- {tag}: {boot.seconds:.1f}s, powered off: {boot.powered_off}")
    return boot


def _trace_has(site: Site, host: str, steps: tuple[str, ...], logs: Path) -> None:
    trace = site.rootfs("trace", host)
    for step in steps:
        assert step in trace, (
            f"{step!r} missing from rootfs trace {host}:\n{trace}\n{_tail(logs / 'serve.log')}"
        )


def test_uefi_ipxe_rom(uefi_site: Site, uefi_lab: tuple[BootLab, Path]) -> None:
    """OVMF runs the EFI image of the NIC's iPXE ROM; iPXE says user-class iPXE and arch 7 and
    is sent to boot.ipxe, whose relative names it fetches over the same protocol."""
    lab, logs = uefi_lab
    name, mac, _ = IPXE
    boot = _boot(lab, logs, mac, "uefi-ipxe", nic_rom="ipxe")
    _assert_booted(boot, IPXE, logs)
    script = f"{IPXE_OVER}://{SERVER}/boot.ipxe... ok"
    assert script in boot.console, boot.console[-3000:]
    assert "iPXE" in boot.console and "Start PXE over IPv4" not in boot.console
    steps = ("arch=7 user_class=iPXE", f"file={IPXE_OVER}://{SERVER}/boot.ipxe")
    _trace_has(uefi_site, name, (*steps, "vmlinuz", "initrd.img"), logs)


@needs_signed_grub
def test_uefi_firmware_pxe_and_signed_grub(uefi_site: Site, uefi_lab: tuple[BootLab, Path]) -> None:
    """No ROM: OVMF's own PXE (option 93 = 7) loads grubnetx64.efi over TFTP; Debian's signed
    GRUB has the built-in prefix /grub and reads /grub/grub.cfg, which rootfs generates for the
    client's address; the kernel and initrd follow over GRUB's TFTP."""
    lab, logs = uefi_lab
    name, mac, _ = GRUB
    boot = _boot(lab, logs, mac, "uefi-pxe-grub", nic_rom="none")
    _assert_booted(boot, GRUB, logs)
    for text in ("Start PXE over IPv4", "NBP filename is grubnetx64.efi", "Welcome to GRUB!"):
        assert text in boot.console, boot.console[-3000:]
    assert "iPXE" not in boot.console
    steps = ("arch=7 file=grubnetx64.efi", "file=/grub/grub.cfg origin=generated grub")
    _trace_has(uefi_site, name, (*steps, "file=/vmlinuz", "file=/initrd.img"), logs)


@needs_secure_boot
def test_secure_boot_shim_signed_grub_signed_kernel(
    uefi_site: Site, uefi_lab: tuple[BootLab, Path]
) -> None:
    """Secure Boot on, Microsoft's keys only: the firmware checks shim against db, shim fetches
    grubx64.efi from the same TFTP server and checks it against Debian's CA built into shim,
    GRUB has shim check the kernel (Debian-signed), and the kernel locks itself down. The
    initramfs' modules are Debian's signed ones, so lockdown still loads them."""
    lab, logs = uefi_lab
    name, mac, _ = SHIM
    boot = _boot(lab, logs, mac, "secure-boot-shim", nic_rom="none", secure_boot=True)
    _assert_booted(boot, SHIM, logs)
    for text in (
        "NBP filename is shimx64.efi",
        "Fetching Netboot Image grubx64.efi",  # shim
        "EFI stub: UEFI Secure Boot is enabled.",
        "Kernel is locked down from EFI Secure Boot",
        "secureboot: Secure boot enabled",
    ):
        assert text in boot.console, f"{text!r} missing\n{boot.console[-3000:]}"
    steps = ("file=shimx64.efi", "file=grubx64.efi", "file=/grub/grub.cfg", "file=/vmlinuz")
    _trace_has(uefi_site, name, steps, logs)


@needs_secure_boot
def test_secure_boot_refuses_grub_without_shim(
    uefi_site: Site, uefi_lab: tuple[BootLab, Path]
) -> None:
    """Debian's GRUB is signed by Debian, whose CA is in shim, not in the firmware's db: under
    Secure Boot the default efi64 boot file (grubnetx64.efi) is refused, so a Secure Boot host
    needs `boot_file = "shimx64.efi"`."""
    lab, logs = uefi_lab
    boot = _boot(lab, logs, GRUB[1], "secure-boot-no-shim", nic_rom="none", secure_boot=True,
                 until="Access Denied")  # fmt: skip
    assert "NBP filename is grubnetx64.efi" in boot.console, boot.console[-3000:]
    assert "Access Denied" in boot.console, boot.console[-3000:]
    assert "Welcome to GRUB!" not in boot.console


def test_uefi_http_boot_of_debian_grub_stops_at_its_prompt(
    uefi_site: Site, uefi_lab: tuple[BootLab, Path]
) -> None:
    """OVMF's HTTP Boot gets grubnetx64.efi from rootfs serve's HTTP front end and starts it, but
    Debian 12's GRUB finds no boot location in an HTTP Boot (empty $prefix, $root, $cmdpath) and
    has no http module built in: it reads no config and waits at `grub>`. (Why rootfs gives HTTP
    Boot clients snponly.efi by default; this boot names GRUB on purpose.)"""
    lab, logs = uefi_lab
    name, mac, _ = HTTP
    with _site_boot_file(uefi_site, logs, "http_efi64", "grubnetx64.efi"):
        boot = _boot(lab, logs, mac, "http-boot-grub", nic_rom="none", http_boot=True,
                     until="grub>")  # fmt: skip
    for text in ("Start HTTP Boot over IPv4", f"URI: http://{SERVER}/grubnetx64.efi",
                 "Welcome to GRUB!", "grub>"):  # fmt: skip
        assert text in boot.console, f"{text!r} missing\n{boot.console[-3000:]}"
    assert "Start PXE" not in boot.console
    steps = (f"arch=16 file=http://{SERVER}/grubnetx64.efi", "GET /grubnetx64.efi 200")
    _trace_has(uefi_site, name, steps, logs)
    assert "grub.cfg" not in uefi_site.rootfs("trace", name)


def test_uefi_http_boot_to_ipxe(uefi_site: Site, uefi_lab: tuple[BootLab, Path]) -> None:
    """OVMF's HTTP Boot -> snponly.efi (iPXE on the firmware's network driver) over HTTP; iPXE
    asks DHCP again, as iPXE, and goes on as the iPXE ROM does: boot.ipxe -> ... -> marker.

    snponly.efi is what rootfs gives an x64 HTTP Boot client by default ([dhcp.boot_files]
    http_efi64), as a URL on its HTTP front end."""
    lab, logs = uefi_lab
    name, mac, _ = HTTP
    boot = _boot(lab, logs, mac, "http-boot-ipxe", nic_rom="none", http_boot=True)
    _assert_booted(boot, HTTP, logs)
    for text in (f"URI: http://{SERVER}/snponly.efi", f"{IPXE_OVER}://{SERVER}/boot.ipxe... ok"):
        assert text in boot.console, f"{text!r} missing\n{boot.console[-3000:]}"
    steps = (f"arch=16 file=http://{SERVER}/snponly.efi", "GET /snponly.efi 200", "user_class=iPXE")
    _trace_has(uefi_site, name, (*steps, "initrd.img"), logs)


@contextlib.contextmanager
def _site_boot_file(site: Site, logs: Path, kind: str, name: str) -> Iterator[None]:
    """[dhcp.boot_files] `kind` = `name` while inside, then as before; each time until
    `rootfs serve` says it reloaded."""
    toml = site.root / "site.toml"
    before = toml.read_text()
    table = "[dhcp.boot_files]\n"
    assert table in before
    _reload(toml, before.replace(table, f'{table}{kind} = "{name}"\n'), logs)
    try:
        yield
    finally:
        _reload(toml, before, logs)


def _reload(toml: Path, text: str, logs: Path) -> None:
    log = logs / "serve.log"
    count = log.read_text().count("serve: reloaded")
    toml.write_text(text)
    deadline = time.monotonic() + 60
    while log.read_text().count("serve: reloaded") == count:
        assert time.monotonic() < deadline, f"rootfs serve did not reload\n{_tail(log)}"
        time.sleep(0.2)
