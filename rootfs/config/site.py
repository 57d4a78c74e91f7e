"""The site: `site.toml` and `hostcfg/hosts.toml` loaded once into validated, frozen values.

Everything downstream (compose, exports, DHCP, boot configs) trusts these values, so every mistake a
user can make in the files is caught here, with a one-line error naming the file and the TOML key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import NewType, TypeVar

from rootfs.config.boot import (
    BootConfig,
    CacheBoot,
    HostBoot,
    parse_boot_config,
    parse_host_boot,
)
from rootfs.config.dhcp import DhcpConfig, HostDhcp, parse_dhcp_config, parse_host_dhcp
from rootfs.config.exports import ExportsConfig, parse_exports_config
from rootfs.config.http import HttpConfig, parse_http_config
from rootfs.config.policy import UpdateConfig, parse_update_config
from rootfs.config.tftp import TftpConfig, parse_tftp_config
from rootfs.config.tomlconf import (
    ConfigTable,
    Invalid,
    boolean,
    ipv4,
    ipv4_list,
    kind_name,
    load_toml,
    network_value,
    path_value,
    read_text,
    size,
    string,
    table_value,
)
from rootfs.errors import UserError

HostName = NewType("HostName", str)

SITE_TOML = "site.toml"
HOSTS_TOML = "hostcfg/hosts.toml"
DEFAULT_SITE_DIR = Path("/etc/rootfs")
MODES = ("auto", "copy", "reflink", "hardlink")
DEFAULT_SERVER_ADDRESS = IPv4Address("10.0.0.1")
DEFAULT_STATE_DIR = Path("/var/lib/rootfs")
DEFAULT_EXPORT_ROOT = Path("/tftpboot")
DEFAULT_BASE = "debian"
DEFAULT_OVERLAYS: tuple[str, ...] = ("diskless",)
DEFAULT_MODE = "auto"
DEFAULT_NFS_OPTIONS = "vers=3,tcp"
DEFAULT_CACHE_DEVICE = "LABEL=rootfs-cache"
"""A cached client's default cache: the filesystem labelled rootfs-cache (never formatted)."""
TEMPLATE_FIELDS = frozenset(
    {"name", "ip", "mac", "server", "netmask", "prefixlen", "network", "broadcast", "gateway"}
    | {"dns", "domain", "root_path", "nfs_options", "vars"}
)
"""Names `Site.template_context` defines; host vars may not use them, or they would be shadowed."""

_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 §2.1 label
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
_DIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LABEL = re.compile(r"[A-Za-z0-9._+:@-]{1,16}")  # an ext2/3/4 volume label holds 16 bytes
_DEV_PART = re.compile(r"[A-Za-z0-9._+:@=-]+")  # /dev/disk/by-id/..., /dev/mapper/vg-cache
_T = TypeVar("_T")


@dataclass(frozen=True)
class Subnet:
    """A `[[subnet]]`: where hosts live, and what DHCP tells them about the network."""

    network: IPv4Network
    gateway: IPv4Address | None
    dns: tuple[IPv4Address, ...]
    domain: str | None


@dataclass(frozen=True)
class Host:
    """One client from hosts.toml, with the site defaults already applied."""

    name: HostName
    mac: str  # lowercase, colon-separated
    ip: IPv4Address
    base: str
    overlays: tuple[str, ...]
    mode: str
    vars: tuple[tuple[str, str], ...]
    boot: HostBoot = field(default_factory=HostBoot)
    dhcp: HostDhcp = field(default_factory=HostDhcp)
    cached: bool = False  # its root is served through a FUSE cache on the client's own disk
    cache_device: str = DEFAULT_CACHE_DEVICE  # "LABEL=<label>" or a /dev path
    cache_quota: int | None = None  # bytes; None: the client's default (70% of the cache)

    @property
    def cache(self) -> CacheBoot | None:
        """What the boot configs tell a cached host about its cache; None if it is not cached."""
        return CacheBoot(self.cache_device, self.cache_quota) if self.cached else None


@dataclass(frozen=True)
class SiteConfig:
    """site.toml with defaults filled in and paths made absolute (or overridden by environment)."""

    server_address: IPv4Address
    state_dir: Path
    export_root: Path
    default_base: str
    default_overlays: tuple[str, ...]
    default_mode: str
    nfs_options: str
    subnets: tuple[Subnet, ...]
    exports: ExportsConfig = field(default_factory=ExportsConfig)
    dhcp: DhcpConfig = field(default_factory=DhcpConfig)
    tftp: TftpConfig = field(default_factory=TftpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    boot: BootConfig = field(default_factory=BootConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)


@dataclass(frozen=True)
class Site:
    """A site directory's validated configuration and inventory."""

    root: Path
    config: SiteConfig
    hosts: tuple[Host, ...]  # in file order

    @property
    def site_toml(self) -> Path:
        return self.root / SITE_TOML

    @property
    def hosts_file(self) -> Path:
        return self.root / HOSTS_TOML

    @property
    def overlays_dir(self) -> Path:
        return self.root / "overlays"

    def host(self, name: str) -> Host:
        """The host called `name`; a UserError listing the known names if there is none."""
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts) or "none"
        raise UserError(f"unknown host {name!r} (known: {known}); see 'rootfs host list'")

    def subnet_for(self, ip: IPv4Address) -> Subnet | None:
        """The first configured subnet containing `ip`, if any."""
        return next((s for s in self.config.subnets if ip in s.network), None)

    def host_root(self, host: Host) -> Path:
        """Where the host's root tree lives, and what is exported over NFS."""
        return self.config.export_root / str(host.ip)

    def root_path(self, host: Host) -> str:
        """The NFS root path handed to the client (DHCP option 17, kernel `nfsroot=`)."""
        return f"{self.config.server_address}:{self.host_root(host)}"

    def template_context(self, host: Host) -> dict[str, object]:
        """The variables overlay templates see: fixed fields, then the host's vars at top level."""
        subnet = self.subnet_for(host.ip)
        net = subnet.network if subnet else None
        context: dict[str, object] = {
            "name": host.name,
            "ip": str(host.ip),
            "mac": host.mac,
            "server": str(self.config.server_address),
            "netmask": str(net.netmask) if net else None,
            "prefixlen": net.prefixlen if net else None,
            "network": str(net.network_address) if net else None,
            "broadcast": str(net.broadcast_address) if net else None,
            "gateway": str(subnet.gateway) if subnet and subnet.gateway else None,
            "dns": [str(d) for d in subnet.dns] if subnet else [],
            "domain": subnet.domain if subnet else None,
            "root_path": self.root_path(host),
            "nfs_options": self.config.nfs_options,
            "vars": dict(host.vars),
        }
        context.update(host.vars)
        return context


def find_site_dir(*, cli_site: Path | None, environ: Mapping[str, str], cwd: Path) -> Path:
    """The site directory: --site, else $ROOTFS_SITE, else `cwd` if it looks like a site, else
    /etc/rootfs. Working in a checkout of the site repo should need no flags."""
    if cli_site is not None:
        return cwd / cli_site
    if environ.get("ROOTFS_SITE"):
        return cwd / environ["ROOTFS_SITE"]
    if (cwd / SITE_TOML).is_file() or (cwd / "hostcfg").is_dir():
        return cwd
    return DEFAULT_SITE_DIR


def load_site(site_dir: Path, *, environ: Mapping[str, str]) -> Site:
    """Load and validate a site. Missing files mean defaults and no hosts, so a fresh site works.

    $ROOTFS_STATE_DIR and $ROOTFS_EXPORT_ROOT override the paths, so tests never touch /var or /.
    """
    config = _parse_site(read_text(site_dir / SITE_TOML), root=site_dir, environ=environ)
    hosts = parse_hosts(read_text(site_dir / HOSTS_TOML), site_root=site_dir, config=config)
    return Site(root=site_dir, config=config, hosts=hosts)


def parse_hosts(text: str, *, site_root: Path, config: SiteConfig) -> tuple[Host, ...]:
    """Validate hosts.toml text against a site; inventory edits check their result with this
    before writing it."""
    with (
        ConfigTable(HOSTS_TOML, "", load_toml(text, HOSTS_TOML)) as doc,
        doc.table("hosts") as table,
    ):
        hosts = [_parse_host(table, name, config) for name in list(table.raw)]
    mac_owner: dict[str, HostName] = {}
    ip_owner: dict[IPv4Address, HostName] = {}
    for host in hosts:
        _check_host_in_site(host, table, site_root=site_root, config=config)
        if (other := mac_owner.setdefault(host.mac, host.name)) != host.name:
            raise table.error(
                (host.name, "mac"),
                f"{host.mac!r} is already used by host {other}; give each host its own MAC",
            )
        if (other := ip_owner.setdefault(host.ip, host.name)) != host.name:
            raise table.error(
                (host.name, "ip"),
                f"{host.ip} is already used by host {other}; give each its own IP",
            )
    return tuple(hosts)


# -- parsing ------------------------------------------------------------------------------------


def _parse_site(text: str, *, root: Path, environ: Mapping[str, str]) -> SiteConfig:
    with ConfigTable(SITE_TOML, "", load_toml(text, SITE_TOML)) as doc:
        with doc.table("server") as t:
            address = t.get("address", ipv4, DEFAULT_SERVER_ADDRESS)
        with doc.table("paths") as t:
            state_dir = root / t.get("state_dir", path_value, DEFAULT_STATE_DIR)
            export_root = root / t.get("export_root", path_value, DEFAULT_EXPORT_ROOT)
        with doc.table("defaults") as t:
            base = t.get("base", _dir_name, DEFAULT_BASE)
            overlays = t.get("overlays", _dir_names, DEFAULT_OVERLAYS)
            mode = t.get("mode", _mode, DEFAULT_MODE)
            nfs_options = t.get("nfs_options", string, DEFAULT_NFS_OPTIONS)
        # Each subsystem reads its own table, in its own config module.
        with doc.table("exports") as t:
            exports = parse_exports_config(t)
        with doc.table("dhcp") as t:
            dhcp = parse_dhcp_config(t)
        with doc.table("tftp") as t:
            tftp = parse_tftp_config(t)
        with doc.table("http") as t:
            http = parse_http_config(t)
        with doc.table("boot") as t:
            boot = parse_boot_config(t)
        with doc.table("update") as t:
            update = parse_update_config(t)
        subnets: list[Subnet] = []
        for t in doc.tables("subnet"):
            with t:
                subnets.append(_parse_subnet(t, subnets))
    return SiteConfig(
        server_address=address,
        state_dir=Path(environ["ROOTFS_STATE_DIR"])
        if environ.get("ROOTFS_STATE_DIR")
        else state_dir,
        export_root=(
            Path(environ["ROOTFS_EXPORT_ROOT"])
            if environ.get("ROOTFS_EXPORT_ROOT")
            else export_root
        ),
        default_base=base,
        default_overlays=overlays,
        default_mode=mode,
        nfs_options=nfs_options,
        subnets=tuple(subnets),
        exports=exports,
        dhcp=dhcp,
        tftp=tftp,
        http=http,
        boot=boot,
        update=update,
    )


def _parse_subnet(t: ConfigTable, earlier: list[Subnet]) -> Subnet:
    network = t.require("network", network_value, '"10.0.0.0/24"')
    for other in earlier:
        if network.overlaps(other.network):
            raise t.error("network", f"{network} overlaps {other.network}; merge or split them")
    gateway = t.get("gateway", ipv4, None)
    if gateway is not None and gateway not in network:
        raise t.error("gateway", f"{gateway} is outside {network}; use an address inside it")
    return Subnet(
        network=network,
        gateway=gateway,
        dns=t.get("dns", ipv4_list, ()),
        domain=t.get("domain", string, None),
    )


def _parse_host(hosts: ConfigTable, name: str, config: SiteConfig) -> Host:
    if not _HOST_NAME.fullmatch(name):
        raise hosts.error(
            name,
            f"{name!r} is not a valid host name; use 1-63 lowercase letters, digits and hyphens, "
            "not starting or ending with a hyphen (RFC 1123)",
        )
    with hosts.table(name) as t:
        host = Host(
            name=HostName(name),
            mac=t.require("mac", _mac, '"52:54:00:12:34:56"'),
            ip=t.require("ip", ipv4, '"10.0.0.11"'),
            base=t.get("base", _dir_name, config.default_base),
            overlays=t.get("overlays", _dir_names, config.default_overlays),
            mode=t.get("mode", _mode, config.default_mode),
            vars=t.get("vars", _vars, ()),
            boot=_subtable(t, "boot", parse_host_boot),
            dhcp=_subtable(t, "dhcp", parse_host_dhcp),
            cached=t.get("cached", boolean, False),
            cache_device=t.get("cache_device", _cache_device, DEFAULT_CACHE_DEVICE),
            cache_quota=t.get("cache_quota", size, None),
        )
    if host.cached and host.boot.initrd == "":
        raise hosts.error(
            (name, "boot", "initrd"),
            '"" boots a cached host without an initramfs, and only the initramfs can start its'
            " cache; remove the key (cached hosts boot [boot] initrd_cached) or name an initrd",
        )
    return host


def _subtable(parent: ConfigTable, key: str, parse: Callable[[ConfigTable], _T]) -> _T:
    with parent.table(key) as t:
        return parse(t)


def _check_host_in_site(
    host: Host, hosts: ConfigTable, *, site_root: Path, config: SiteConfig
) -> None:
    """Checks that need the rest of the site: the subnet the IP falls in and overlay directories."""
    ip, key = host.ip, (host.name, "ip")
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_reserved:
        raise hosts.error(key, f"{ip} is not a unicast host address; use the client's own address")
    subnet = next((s for s in config.subnets if ip in s.network), None)
    if config.subnets and subnet is None:
        nets = ", ".join(str(s.network) for s in config.subnets)
        raise hosts.error(
            key, f"{ip} is outside every subnet ({nets}); fix it or add a [[subnet]] to site.toml"
        )
    if subnet is not None and subnet.network.prefixlen <= 30:  # /31 and /32 have no such addresses
        for what, reserved in (
            ("network", subnet.network.network_address),
            ("broadcast", subnet.network.broadcast_address),
        ):
            if ip == reserved:
                raise hosts.error(
                    key, f"{ip} is the {what} address of {subnet.network}; pick a host address"
                )
    for overlay in host.overlays:
        if not (site_root / "overlays" / overlay).is_dir():
            raise hosts.error(
                (host.name, "overlays"),
                f"host {host.name} uses overlay {overlay!r} but overlays/{overlay}/ is missing; "
                "create the directory or drop the overlay",
            )


# -- value parsers: raw TOML value -> typed value, or Invalid("<problem>; <fix>") ---------------


def _mac(value: object) -> str:
    text = string(value)
    if not _MAC.fullmatch(text):
        raise Invalid(f"{text!r} is not a MAC address; write it like 52:54:00:12:34:56")
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:  # I/G bit: group address (IEEE 802 §8.2)
        what = "the broadcast" if mac == "ff:ff:ff:ff:ff:ff" else "a multicast"
        raise Invalid(f"{text!r} is {what} address; use the client's own NIC address")
    if mac == "00:00:00:00:00:00":
        raise Invalid(f"{text!r} is not a usable address; use the client's own NIC address")
    return mac


def _mode(value: object) -> str:
    text = string(value)
    if text not in MODES:
        raise Invalid(f"{text!r} is not a mode; use one of {', '.join(MODES)}")
    return text


def _cache_device(value: object) -> str:
    text = string(value)
    if "," in text or any(c.isspace() for c in text):
        raise Invalid(
            f"{text!r} contains whitespace or a comma, which would split the kernel command line;"
            " name the device without them"
        )
    if text.startswith("LABEL="):
        if not _LABEL.fullmatch(text.removeprefix("LABEL=")):
            raise Invalid(
                f"{text!r} is not a filesystem label; use 1-16 letters, digits and . _ + - : @"
                f" (clients look for {DEFAULT_CACHE_DEVICE})"
            )
        return text
    if text.startswith("/dev/"):
        parts = text.removeprefix("/dev/").split("/")
        if not all(_DEV_PART.fullmatch(p) and p not in (".", "..") for p in parts):
            raise Invalid(
                f"{text!r} is not a device path; write /dev/NAME (letters, digits and"
                " . _ + - : @ = between the slashes), like /dev/vda or /dev/disk/by-id/..."
            )
        return text
    raise Invalid(
        f"{text!r} is not a cache device; use {DEFAULT_CACHE_DEVICE} (a filesystem with that"
        " label) or a whole device like /dev/vda (formatted by the client only if empty)"
    )


def _dir_name(value: object) -> str:
    text = string(value)
    if not _DIR_NAME.fullmatch(text):
        raise Invalid(f"{text!r} is not a plain directory name; use letters, digits, . _ + -")
    return text


def _dir_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f'expected an array of names, got {kind_name(value)}; use ["diskless"]')
    return tuple(_dir_name(v) for v in value)


def _vars(value: object) -> tuple[tuple[str, str], ...]:
    result: list[tuple[str, str]] = []
    for name, raw in table_value(value).items():
        if not name.isidentifier():
            raise Invalid(f"{name!r} is not an identifier; use letters, digits, _", name)
        if name in TEMPLATE_FIELDS:
            raise Invalid(f"{name!r} is a reserved template field; rename the var", name)
        if isinstance(raw, bool):  # before int: bool is an int subclass
            result.append((name, "true" if raw else "false"))
        elif isinstance(raw, str | int):
            result.append((name, str(raw)))
        else:
            raise Invalid(
                f"expected a string, integer or boolean, got {kind_name(raw)}; quote it", name
            )
    return tuple(result)
