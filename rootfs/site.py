"""The site: `site.toml` and `hostcfg/hosts.toml` loaded once into validated, frozen values.

Everything downstream (compose, exports, DHCP, boot configs) trusts these values, so every mistake a
user can make in the files is caught here, with a one-line error naming the file and the TOML key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from pathlib import Path
from types import TracebackType
from typing import NewType, TypeVar

from rootfs.errors import ConfigError, UserError

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
TEMPLATE_FIELDS = frozenset(
    {"name", "ip", "mac", "server", "netmask", "prefixlen", "network", "broadcast", "gateway"}
    | {"dns", "domain", "root_path", "nfs_options", "vars"}
)
"""Names `Site.template_context` defines; host vars may not use them, or they would be shadowed."""

_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 §2.1 label
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
_DIR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
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
    config = _parse_site(_read(site_dir / SITE_TOML), root=site_dir, environ=environ)
    hosts = parse_hosts(_read(site_dir / HOSTS_TOML), site_root=site_dir, config=config)
    return Site(root=site_dir, config=config, hosts=hosts)


def parse_hosts(text: str, *, site_root: Path, config: SiteConfig) -> tuple[Host, ...]:
    """Validate hosts.toml text against a site; inventory edits check their result with this
    before writing it."""
    with _Table(HOSTS_TOML, "", _loads(text, HOSTS_TOML)) as doc, doc.table("hosts") as table:
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


class _Invalid(Exception):
    """A value is wrong; `_Table` prefixes file and key. `subkey` points inside the value."""

    def __init__(self, message: str, subkey: str | None = None) -> None:
        super().__init__(message)
        self.subkey = subkey


@dataclass
class _Table:
    """Reads one TOML table. Each key is named once, where it is read; on leaving the `with`
    block any key nobody read is an error, so unknown keys can never be silently ignored."""

    file: str
    key: str  # dotted key of this table; "" for the document
    raw: Mapping[str, object]
    _read: set[str] = field(default_factory=set)

    def __enter__(self) -> _Table:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        unknown = [k for k in self.raw if k not in self._read]
        if exc_type is None and unknown:
            expected = ", ".join(sorted(self._read)) or "nothing"
            raise self.error(unknown[0], f"unknown key; remove it (expected: {expected})")

    def error(self, key: str | tuple[str, ...], message: str) -> ConfigError:
        """A ConfigError in the house format: `<file>: <dotted key>: <problem>; <fix>`."""
        keys = (key,) if isinstance(key, str) else key
        dotted = ".".join(p if _BARE_KEY.fullmatch(p) else f'"{p}"' for p in keys)
        return ConfigError(f"{self.file}: {self.key}{'.' if self.key else ''}{dotted}: {message}")

    def get(self, key: str, parse: Callable[[object], _T], default: _T) -> _T:
        """The parsed value at `key`, or `default` when it is absent."""
        self._read.add(key)
        return self._parse(key, parse) if key in self.raw else default

    def require(self, key: str, parse: Callable[[object], _T], example: str) -> _T:
        """The parsed value at `key`; an error showing `example` when it is absent."""
        self._read.add(key)
        if key not in self.raw:
            raise self.error(key, f"missing; add {key} = {example}")
        return self._parse(key, parse)

    def _parse(self, key: str, parse: Callable[[object], _T]) -> _T:
        try:
            return parse(self.raw[key])
        except _Invalid as e:
            raise self.error((key, e.subkey) if e.subkey else key, str(e)) from None

    def table(self, key: str) -> _Table:
        value: dict[str, object] = self.get(key, _table, {})
        return _Table(self.file, self._child(key), value)

    def tables(self, key: str) -> Iterator[_Table]:
        """An array of tables (`[[key]]`), each item keyed `key[i]` in errors."""
        items: list[dict[str, object]] = self.get(key, _array_of_tables, [])
        for i, item in enumerate(items):
            yield _Table(self.file, f"{self._child(key)}[{i}]", item)

    def _child(self, key: str) -> str:
        quoted = key if _BARE_KEY.fullmatch(key) else f'"{key}"'
        return f"{self.key}.{quoted}" if self.key else quoted


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}; fix the file or its permissions") from None


def _loads(text: str, file: str) -> dict[str, object]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.fullmatch(r"(.*) \(at (.*)\)", str(e))
        where, what = (m[2], m[1]) if m else ("syntax", str(e))
        raise ConfigError(f"{file}: {where}: {what}; fix the TOML syntax there") from None


def _parse_site(text: str, *, root: Path, environ: Mapping[str, str]) -> SiteConfig:
    with _Table(SITE_TOML, "", _loads(text, SITE_TOML)) as doc:
        with doc.table("server") as t:
            address = t.get("address", _ipv4, DEFAULT_SERVER_ADDRESS)
        with doc.table("paths") as t:
            state_dir = root / t.get("state_dir", _path, DEFAULT_STATE_DIR)
            export_root = root / t.get("export_root", _path, DEFAULT_EXPORT_ROOT)
        with doc.table("defaults") as t:
            base = t.get("base", _dir_name, DEFAULT_BASE)
            overlays = t.get("overlays", _dir_names, DEFAULT_OVERLAYS)
            mode = t.get("mode", _mode, DEFAULT_MODE)
            nfs_options = t.get("nfs_options", _string, DEFAULT_NFS_OPTIONS)
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
    )


def _parse_subnet(t: _Table, earlier: list[Subnet]) -> Subnet:
    network = t.require("network", _network, '"10.0.0.0/24"')
    for other in earlier:
        if network.overlaps(other.network):
            raise t.error("network", f"{network} overlaps {other.network}; merge or split them")
    gateway = t.get("gateway", _ipv4, None)
    if gateway is not None and gateway not in network:
        raise t.error("gateway", f"{gateway} is outside {network}; use an address inside it")
    return Subnet(
        network=network,
        gateway=gateway,
        dns=t.get("dns", _ipv4_list, ()),
        domain=t.get("domain", _string, None),
    )


def _parse_host(hosts: _Table, name: str, config: SiteConfig) -> Host:
    if not _HOST_NAME.fullmatch(name):
        raise hosts.error(
            name,
            f"{name!r} is not a valid host name; use 1-63 lowercase letters, digits and hyphens, "
            "not starting or ending with a hyphen (RFC 1123)",
        )
    with hosts.table(name) as t:
        return Host(
            name=HostName(name),
            mac=t.require("mac", _mac, '"52:54:00:12:34:56"'),
            ip=t.require("ip", _ipv4, '"10.0.0.11"'),
            base=t.get("base", _dir_name, config.default_base),
            overlays=t.get("overlays", _dir_names, config.default_overlays),
            mode=t.get("mode", _mode, config.default_mode),
            vars=t.get("vars", _vars, ()),
        )


def _check_host_in_site(host: Host, hosts: _Table, *, site_root: Path, config: SiteConfig) -> None:
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


# -- value parsers: raw TOML value -> typed value, or _Invalid("<problem>; <fix>") ---------------


def _kind(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a float"}
    names |= {list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}; quote it")
    return value


def _table(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table, got {_kind(value)}; write it as a [table]")
    return value


def _array_of_tables(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _Invalid(f"expected an array of tables, got {_kind(value)}; write [[...]] tables")
    return value


def _path(value: object) -> Path:
    return Path(_string(value))


def _ipv4(value: object) -> IPv4Address:
    text = _string(value)
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise _Invalid(f"{text!r} is not an IPv4 address; write four dotted numbers") from None


def _ipv4_list(value: object) -> tuple[IPv4Address, ...]:
    if not isinstance(value, list):
        raise _Invalid(f'expected an array of addresses, got {_kind(value)}; use ["10.0.0.1"]')
    return tuple(_ipv4(v) for v in value)


def _network(value: object) -> IPv4Network:
    text = _string(value)
    try:
        return IPv4Network(text)
    except (AddressValueError, NetmaskValueError):
        raise _Invalid(f"{text!r} is not an IPv4 network; write it like 10.0.0.0/24") from None
    except ValueError:  # host bits set
        fixed = IPv4Network(text, strict=False)
        raise _Invalid(f"{text!r} has host bits set; did you mean {fixed}?") from None


def _mac(value: object) -> str:
    text = _string(value)
    if not _MAC.fullmatch(text):
        raise _Invalid(f"{text!r} is not a MAC address; write it like 52:54:00:12:34:56")
    mac = text.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:  # I/G bit: group address (IEEE 802 §8.2)
        what = "the broadcast" if mac == "ff:ff:ff:ff:ff:ff" else "a multicast"
        raise _Invalid(f"{text!r} is {what} address; use the client's own NIC address")
    if mac == "00:00:00:00:00:00":
        raise _Invalid(f"{text!r} is not a usable address; use the client's own NIC address")
    return mac


def _mode(value: object) -> str:
    text = _string(value)
    if text not in MODES:
        raise _Invalid(f"{text!r} is not a mode; use one of {', '.join(MODES)}")
    return text


def _dir_name(value: object) -> str:
    text = _string(value)
    if not _DIR_NAME.fullmatch(text):
        raise _Invalid(f"{text!r} is not a plain directory name; use letters, digits, . _ + -")
    return text


def _dir_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f'expected an array of names, got {_kind(value)}; use ["diskless"]')
    return tuple(_dir_name(v) for v in value)


def _vars(value: object) -> tuple[tuple[str, str], ...]:
    result: list[tuple[str, str]] = []
    for name, raw in _table(value).items():
        if not name.isidentifier():
            raise _Invalid(f"{name!r} is not an identifier; use letters, digits, _", name)
        if name in TEMPLATE_FIELDS:
            raise _Invalid(f"{name!r} is a reserved template field; rename the var", name)
        if isinstance(raw, bool):  # before int: bool is an int subclass
            result.append((name, "true" if raw else "false"))
        elif isinstance(raw, str | int):
            result.append((name, str(raw)))
        else:
            raise _Invalid(
                f"expected a string, integer or boolean, got {_kind(raw)}; quote it", name
            )
    return tuple(result)
