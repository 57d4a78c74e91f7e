"""The [dhcp] table of site.toml and the per-host [hosts.NAME.dhcp] tables (every key optional).

```toml
[dhcp]
interfaces = ["eth1"]          # where to listen; empty: every interface with an address in a subnet
lease_time = 86400             # seconds (option 51); T1/T2 are 1/2 and 7/8 of it (RFC 2131 §4.4.5)
pool = ["10.0.0.100-10.0.0.199"]  # for unknown clients; absent: they get nothing
proxy = false                  # proxyDHCP: boot information only, another server assigns addresses
hostname = true                # send option 12 (option 17 always carries the full root path)
leases_file = "/var/lib/rootfs/dhcp/leases.journal"   # default: <state>/dhcp/leases.journal

[dhcp.boot_files]              # by option 93 / 77; {name} {ip} {mac} {server} filled in per host
bios = "pxelinux.0"
efi64 = "grubnetx64.efi"
ipxe = "boot.ipxe"             # a URL on the HTTP front end when that is on;
                               # "tftp://{server}/boot.ipxe" keeps iPXE on TFTP
http_efi64 = "snponly.efi"     # UEFI HTTP Boot (option 93 = 16), as a URL on the HTTP front end;
                               # other HTTP Boot machines get their PXE file (efi32, arm64, ...)

[hosts.pc1.dhcp]               # in hostcfg/hosts.toml
boot_file = "ipxe.efi"         # this host's boot file whatever its firmware says
options = { 42 = ["10.0.0.1"], 252 = "http://10.0.0.1/wpad.dat", 224 = "hex:0a0b" }
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import AddressValueError, IPv4Address
from pathlib import Path
from string import Formatter

from rootfs.config.tomlconf import (
    ConfigTable,
    Invalid,
    boolean,
    integer,
    kind_name,
    path_value,
    string,
    string_list,
    table_value,
)

DEFAULT_LEASE_TIME = 86400
# Options the server computes itself (or that make no sense in a reply); a per-host value would
# either be ignored or break the exchange, so the inventory may not set them.
RESERVED_OPTIONS = frozenset({0, 50, 51, 52, 53, 54, 55, 57, 58, 59, 61, 82, 255})
# What a boot file name may say in braces, filled in per host when DHCP answers.
BOOT_FILE_FIELDS = ("name", "ip", "mac", "server")


@dataclass(frozen=True)
class BootFiles:
    """Boot file per client firmware. Defaults follow Debian's `pxelinux`, `grub-efi-*-signed`
    and `ipxe` package names; the TFTP side serves whatever these name."""

    bios: str = "pxelinux.0"  # option 93 = 0 (or absent)
    efi32: str = "grubnetia32.efi"  # option 93 = 6
    efi64: str = "grubnetx64.efi"  # option 93 = 7 or 9 (firmware uses both for x64)
    arm32: str = "grubnetarm.efi"  # option 93 = 10
    arm64: str = "grubnetaa64.efi"  # option 93 = 11
    ipxe: str = "boot.ipxe"  # user-class "iPXE": a script, so iPXE does not chain itself forever
    # option 93 = 16, UEFI HTTP Boot on x64: iPXE on the firmware's own network driver, which
    # then boots as iPXE does. Debian 12's signed GRUB cannot: an HTTP Boot leaves its $prefix,
    # $root and $cmdpath empty and it has no http module, so it stops at its prompt.
    http_efi64: str = "snponly.efi"


@dataclass(frozen=True)
class DhcpConfig:
    """Settings of the [dhcp] table; defaults apply when it is absent."""

    interfaces: tuple[str, ...] = ()
    lease_time: int = DEFAULT_LEASE_TIME
    pool: tuple[tuple[IPv4Address, IPv4Address], ...] = ()
    proxy: bool = False
    hostname: bool = True
    leases_file: Path | None = None
    boot_files: BootFiles = field(default_factory=BootFiles)


def parse_dhcp_config(table: ConfigTable) -> DhcpConfig:
    """Read [dhcp]; unknown keys are an error (ConfigTable enforces it)."""
    defaults = BootFiles()
    with table.table("boot_files") as t:
        boot_files = BootFiles(
            **{
                name: t.get(name, _file_name, getattr(defaults, name))
                for name in ("bios", "efi32", "efi64", "arm32", "arm64", "ipxe", "http_efi64")
            }
        )
    return DhcpConfig(
        interfaces=table.get("interfaces", string_list, ()),
        lease_time=table.get("lease_time", integer(60, 2**31 - 1), DEFAULT_LEASE_TIME),
        pool=table.get("pool", _ranges, ()),
        proxy=table.get("proxy", boolean, False),
        hostname=table.get("hostname", boolean, True),
        leases_file=table.get("leases_file", path_value, None),
        boot_files=boot_files,
    )


@dataclass(frozen=True)
class HostDhcp:
    """A host's [hosts.NAME.dhcp] table: per-host DHCP settings."""

    boot_file: str | None = None
    options: tuple[tuple[int, bytes], ...] = ()


def parse_host_dhcp(table: ConfigTable) -> HostDhcp:
    """Read [hosts.NAME.dhcp]."""
    return HostDhcp(
        boot_file=table.get("boot_file", _file_name, None),
        options=table.get("options", _options, ()),
    )


def _file_name(value: object) -> str:
    text = string(value)
    if not text or len(text.encode()) > 127:  # 128-byte file field, NUL-terminated (RFC 2131 §2)
        raise Invalid(f"{text!r} must be 1 to 127 bytes to fit the BOOTP file field")
    try:
        fields = {f for _, f, _, _ in Formatter().parse(text) if f is not None}
    except ValueError as e:
        raise Invalid(f"{text!r}: {e}; write a literal brace as {{{{ or }}}}") from None
    if unknown := sorted(fields - set(BOOT_FILE_FIELDS)):
        raise Invalid(
            f"{text!r} names {{{unknown[0]}}}; the fields are "
            + ", ".join(f"{{{f}}}" for f in BOOT_FILE_FIELDS)
        )
    return text


def _ranges(value: object) -> tuple[tuple[IPv4Address, IPv4Address], ...]:
    ranges: list[tuple[IPv4Address, IPv4Address]] = []
    for text in string_list(value):
        first, sep, last = text.partition("-")
        try:
            low = IPv4Address(first.strip())
            high = IPv4Address(last.strip()) if sep else low
        except AddressValueError:
            raise Invalid(
                f"{text!r} is not an address range; write it like 10.0.0.100-10.0.0.199"
            ) from None
        if high < low:
            raise Invalid(f"{text!r} ends before it starts; put the lower address first")
        ranges.append((low, high))
    return tuple(ranges)


def _options(value: object) -> tuple[tuple[int, bytes], ...]:
    result: list[tuple[int, bytes]] = []
    for key, raw in table_value(value).items():
        if not key.isdigit() or not 1 <= int(key) <= 254:
            raise Invalid(f"{key!r} is not an option code; use a number from 1 to 254", key)
        code = int(key)
        if code in RESERVED_OPTIONS:
            raise Invalid(f"option {code} is set by the server itself; remove it", key)
        result.append((code, _option_value(raw, key)))
    return tuple(result)


def _option_value(raw: object, key: str) -> bytes:
    if isinstance(raw, str):
        if raw.startswith("hex:"):
            try:
                return bytes.fromhex(raw[4:])
            except ValueError:
                raise Invalid(f"{raw!r} is not hex; write it like hex:0a0b", key) from None
        return raw.encode()
    if isinstance(raw, list):
        try:
            return b"".join(IPv4Address(string(v)).packed for v in raw)
        except AddressValueError:
            raise Invalid(f"{raw!r} is not a list of IPv4 addresses", key) from None
    raise Invalid(
        f"expected a string or an array of addresses, got {kind_name(raw)}; "
        'write "text", "hex:0a0b" or ["10.0.0.1"]',
        key,
    )
