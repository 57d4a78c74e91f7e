"""The [dhcp] table of site.toml (every key optional)."""

from __future__ import annotations

from dataclasses import dataclass

from rootfs.tomlconf import ConfigTable


@dataclass(frozen=True)
class DhcpConfig:
    """Settings of the [dhcp] table; defaults apply when it is absent."""


def parse_dhcp_config(table: ConfigTable) -> DhcpConfig:
    """Read [dhcp]; unknown keys are an error (ConfigTable enforces it)."""
    del table  # no keys yet
    return DhcpConfig()


@dataclass(frozen=True)
class HostDhcp:
    """A host's [hosts.NAME.dhcp] table: per-host DHCP settings (extra options)."""


def parse_host_dhcp(table: ConfigTable) -> HostDhcp:
    """Read [hosts.NAME.dhcp]."""
    del table
    return HostDhcp()
