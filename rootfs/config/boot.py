"""The [boot] table of site.toml and the per-host [hosts.NAME.boot] overrides (all optional).

A cached host (`cached = true` in hosts.toml) boots `[boot] initrd_cached` instead of `initrd`, and
its command line says where its cache is: ``rootfs.cache=<cache_device>`` and, when the inventory
gives one, ``rootfs.cache_quota=<bytes>`` (see `CacheBoot`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rootfs.config.tomlconf import ConfigTable, Invalid, string

CMDLINE_FORMS = ("nfs", "initramfs")
# Kernel arguments each form starts with. "nfs": the kernel (or an initramfs that honours
# root=/dev/nfs) mounts the root path DHCP option 17 gave it. "initramfs": Debian initramfs-tools'
# own NFS boot, which takes the server and path from option 17 too (nfsroot=auto).
CMDLINE_ARGS = {
    "nfs": "root=/dev/nfs ip=dhcp",
    "initramfs": "boot=nfs nfsroot=auto ip=dhcp",
}
_BOOT_FILE = re.compile(r"[A-Za-z0-9._+/-]{1,127}")
_ARGS = re.compile(r"[\x20-\x7e]*")  # printable ASCII: it goes verbatim into three config syntaxes


@dataclass(frozen=True)
class BootConfig:
    """Settings of the [boot] table; defaults apply when it is absent.

    Paths are relative to the TFTP boot directory.
    """

    kernel: str = "vmlinuz"
    initrd: str | None = "initrd.img"
    cmdline: str = "nfs"
    append: str = ""  # extra kernel arguments after the form's own (e.g. "console=ttyS0 quiet")
    initrd_cached: str = "initrd-cached.img"  # what cached hosts boot instead of `initrd`


@dataclass(frozen=True)
class HostBoot:
    """A host's [hosts.NAME.boot] table: per-host boot overrides (None: the site's setting)."""

    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    append: str | None = None


def parse_boot_config(table: ConfigTable) -> BootConfig:
    """Read [boot]; unknown keys are an error (ConfigTable enforces it)."""
    d = BootConfig()
    initrd = table.get("initrd", _boot_file_or_empty, d.initrd or "")
    return BootConfig(
        kernel=table.get("kernel", _boot_file, d.kernel),
        initrd=initrd or None,
        cmdline=table.get("cmdline", _form, d.cmdline),
        append=table.get("append", _args, d.append),
        initrd_cached=table.get("initrd_cached", _boot_file, d.initrd_cached),
    )


def parse_host_boot(table: ConfigTable) -> HostBoot:
    """Read [hosts.NAME.boot]."""
    return HostBoot(
        kernel=table.get("kernel", _boot_file, None),
        initrd=table.get("initrd", _boot_file_or_empty, None),
        cmdline=table.get("cmdline", _form, None),
        append=table.get("append", _args, None),
    )


@dataclass(frozen=True)
class CacheBoot:
    """Where a cached host's initramfs finds its cache: said on the kernel command line."""

    device: str  # "LABEL=<label>" or a /dev path (checked by the inventory)
    quota: int | None = None  # bytes; None: the client's default

    @property
    def args(self) -> str:
        """``rootfs.cache=<device>``, then ``rootfs.cache_quota=<bytes>`` if a quota is set."""
        args = f"rootfs.cache={self.device}"
        return args if self.quota is None else f"{args} rootfs.cache_quota={self.quota}"


@dataclass(frozen=True)
class BootSpec:
    """What one host boots: the site's [boot] with the host's overrides applied."""

    kernel: str
    initrd: str | None
    args: str  # the full kernel command line
    cache: CacheBoot | None = None  # set for a cached host: what `args` says about its cache


def boot_spec(site: BootConfig, host: HostBoot, cache: CacheBoot | None = None) -> BootSpec:
    """Merge the host's overrides over the site defaults.

    A cached host (`cache` given) boots `initrd_cached` unless it names its own initrd, and its
    cache arguments follow the form's own, before `append`.
    """
    default_initrd = site.initrd if cache is None else site.initrd_cached
    initrd = default_initrd if host.initrd is None else (host.initrd or None)
    form = host.cmdline or site.cmdline
    append = site.append if host.append is None else host.append
    cache_args = cache.args if cache is not None else ""
    args = " ".join(a for a in (CMDLINE_ARGS[form], cache_args, append) if a)
    return BootSpec(kernel=host.kernel or site.kernel, initrd=initrd, args=args, cache=cache)


def _boot_file(value: object) -> str:
    text = string(value).lstrip("/")
    if not _BOOT_FILE.fullmatch(text) or ".." in text.split("/"):
        raise Invalid(
            f"{value!r} is not a file in the boot directory; use a relative path like "
            '"vmlinuz" or "debian/vmlinuz" (letters, digits, . _ + - /)'
        )
    return text


def _boot_file_or_empty(value: object) -> str:
    return "" if value == "" else _boot_file(value)


def _form(value: object) -> str:
    text = string(value)
    if text not in CMDLINE_FORMS:
        raise Invalid(f"{text!r} is not a command-line form; use one of {', '.join(CMDLINE_FORMS)}")
    return text


def _args(value: object) -> str:
    text = string(value)
    if not _ARGS.fullmatch(text):
        raise Invalid("kernel arguments must be printable ASCII on one line")
    return text.strip()
