"""The [exports] table of site.toml (every key optional)."""

from __future__ import annotations

from dataclasses import dataclass

from rootfs.tomlconf import ConfigTable


@dataclass(frozen=True)
class ExportsConfig:
    """Settings of the [exports] table; defaults apply when it is absent."""


def parse_exports_config(table: ConfigTable) -> ExportsConfig:
    """Read [exports]; unknown keys are an error (ConfigTable enforces it)."""
    del table  # no keys yet
    return ExportsConfig()
