"""The [tftp] table of site.toml (every key optional)."""

from __future__ import annotations

from dataclasses import dataclass

from rootfs.tomlconf import ConfigTable


@dataclass(frozen=True)
class TftpConfig:
    """Settings of the [tftp] table; defaults apply when it is absent."""


def parse_tftp_config(table: ConfigTable) -> TftpConfig:
    """Read [tftp]; unknown keys are an error (ConfigTable enforces it)."""
    del table  # no keys yet
    return TftpConfig()
