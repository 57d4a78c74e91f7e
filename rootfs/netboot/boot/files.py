"""Which requested names are per-host boot configs, and their contents. Pure: no disk, no sockets.

The names are the ones the loaders ask for, in any directory (a loader asks relative to where it
was loaded from):

- PXELINUX: `pxelinux.cfg/01-<mac>`, then `pxelinux.cfg/<HEXIP>` and its prefixes, then
  `pxelinux.cfg/default`.
- GRUB (net boot): `grub.cfg-01-<mac>`, `grub.cfg-<HEXIP>` and prefixes, then `grub.cfg`.
- iPXE: whatever DHCP names as the script; by convention `boot.ipxe`, answered per client IP.

The MAC and HEXIP forms are answered for registered hosts only (a stranger falls through to the
disk, then "not found", and the loader tries its next name). The generic names (`default`,
`grub.cfg`, `boot.ipxe`) are answered per client IP for a registered host; for a stranger they come
from the disk if a file is there, else `unregistered_file` answers per the site's policy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address

from rootfs.config.boot import BootSpec, boot_spec
from rootfs.config.site import Host, Site
from rootfs.netboot.boot import render

_PXE_MAC = re.compile(r"01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})")  # ARP type 1 (Ethernet) + MAC
_HEXIP = re.compile(r"[0-9A-F]{8}")
IPXE_SCRIPT = "boot.ipxe"
GRUB_CFG = "grub.cfg"
PXELINUX_DIR = "pxelinux.cfg"


@dataclass(frozen=True)
class VirtualFile:
    """Generated content for one request, and whom it is for (for the log and the trace)."""

    content: bytes
    kind: str  # "pxelinux", "ipxe" or "grub"
    host: Host | None  # None: the unregistered-client config


def virtual_file(site: Site, name: bytes, client: IPv4Address) -> VirtualFile | None:
    """The generated file for `name` (a cleaned, relative name) asked by `client`, if it is one."""
    try:
        text = name.decode("ascii")
    except UnicodeDecodeError:
        return None
    parent, _, base = text.rpartition("/")
    parent_base = parent.rpartition("/")[2]
    if parent_base.lower() == PXELINUX_DIR:
        host = _match(site, base, client, generic="default")
        return _host_file(site, host, "pxelinux") if host else None
    if base.lower() == GRUB_CFG:
        host = _by_ip(site, client)
        return _host_file(site, host, "grub") if host else None
    if base.lower().startswith(GRUB_CFG + "-"):
        host = _match(site, base[len(GRUB_CFG) + 1 :], client, generic=None)
        return _host_file(site, host, "grub") if host else None
    if base.lower() == IPXE_SCRIPT:
        host = _by_ip(site, client)
        return _host_file(site, host, "ipxe") if host else None
    return None


def unregistered_file(name: bytes, client: IPv4Address) -> VirtualFile | None:
    """The "not registered" config for a generic config name, when nothing on disk answers."""
    text = name.decode("ascii", "replace")
    parent, _, base = text.rpartition("/")
    if parent.rpartition("/")[2].lower() == PXELINUX_DIR and base.lower() == "default":
        return VirtualFile(render.pxelinux_unknown(client).encode(), "pxelinux", None)
    if base.lower() == GRUB_CFG:
        return VirtualFile(render.grub_unknown(client).encode(), "grub", None)
    if base.lower() == IPXE_SCRIPT:
        return VirtualFile(render.ipxe_unknown(client).encode(), "ipxe", None)
    return None


def host_spec(site: Site, host: Host) -> BootSpec:
    """What `host` boots: the site's [boot], the host's own overrides, and its cache if cached."""
    return boot_spec(site.config.boot, host.boot, host.cache)


def host_configs(site: Site, host: Host) -> dict[str, str]:
    """Every config a host can be served, by loader: for `rootfs boot show` and the docs."""
    spec = host_spec(site, host)
    return {
        f"{PXELINUX_DIR}/01-{host.mac.replace(':', '-')}": render.pxelinux_host(host.name, spec),
        IPXE_SCRIPT: render.ipxe_host(host.name, spec),
        f"{GRUB_CFG}-01-{host.mac.replace(':', '-')}": render.grub_host(host.name, spec),
    }


def hex_ip(ip: IPv4Address) -> str:
    """PXELINUX's and GRUB's name for an address: eight uppercase hex digits."""
    return f"{int(ip):08X}"


def _match(site: Site, base: str, client: IPv4Address, *, generic: str | None) -> Host | None:
    if m := _PXE_MAC.fullmatch(base.lower()):
        mac = m[1].replace("-", ":")
        return next((h for h in site.hosts if h.mac == mac), None)
    if _HEXIP.fullmatch(base.upper()):
        return next((h for h in site.hosts if hex_ip(h.ip) == base.upper()), None)
    if generic is not None and base.lower() == generic:
        return _by_ip(site, client)
    return None


def _by_ip(site: Site, client: IPv4Address) -> Host | None:
    return next((h for h in site.hosts if h.ip == client), None)


def _host_file(site: Site, host: Host, kind: str) -> VirtualFile:
    spec = host_spec(site, host)
    make = {"pxelinux": render.pxelinux_host, "ipxe": render.ipxe_host, "grub": render.grub_host}
    return VirtualFile(make[kind](host.name, spec).encode(), kind, host)
