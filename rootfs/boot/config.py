"""The [boot] table of site.toml (every key optional)."""

from __future__ import annotations

from dataclasses import dataclass

from rootfs.tomlconf import ConfigTable


@dataclass(frozen=True)
class BootConfig:
    """Settings of the [boot] table; defaults apply when it is absent."""


def parse_boot_config(table: ConfigTable) -> BootConfig:
    """Read [boot]; unknown keys are an error (ConfigTable enforces it)."""
    del table  # no keys yet
    return BootConfig()


@dataclass(frozen=True)
class HostBoot:
    """A host's [hosts.NAME.boot] table: per-host boot overrides."""


def parse_host_boot(table: ConfigTable) -> HostBoot:
    """Read [hosts.NAME.boot]."""
    del table
    return HostBoot()
