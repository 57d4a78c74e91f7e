"""The [tftp] table of site.toml (every key optional)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from rootfs.config.tomlconf import ConfigTable, Invalid, integer, ipv4, path_value, string

UNKNOWN_CLIENT_POLICIES = ("menu", "ignore")
ANY_ADDRESS = IPv4Address("0.0.0.0")
DEFAULT_PORT = 69  # RFC 1350 §4: the well-known port requests go to
# The ranges the protocol allows for the caps below (RFC 2348 blksize, RFC 7440 windowsize). The
# TFTP core owns the same numbers; the configuration sits below it and cannot import them, so
# tests/test_tftp_transfer.py checks that the two agree.
BLKSIZE_MIN, BLKSIZE_MAX = 8, 65464
WINDOWSIZE_MAX = 65535


@dataclass(frozen=True)
class TftpConfig:
    """Settings of the [tftp] table; defaults apply when it is absent.

    `root` None means `<export root>/boot` (see `boot_dir`): the boot directory follows the export
    root unless the site says otherwise, so tests and the demo need no [tftp] table at all.
    """

    root: Path | None = None  # relative paths are relative to the site directory
    address: IPv4Address = ANY_ADDRESS
    port: int = DEFAULT_PORT
    max_blksize: int = BLKSIZE_MAX
    max_windowsize: int = 32
    timeout: float = 1.0
    max_timeout: float = 8.0
    retries: int = 5
    max_transfers: int = 512
    # What an unregistered client gets when it asks for a per-host config: "menu" serves a config
    # that says "not registered" (and names its MAC), "ignore" answers "file not found".
    unknown_clients: str = "menu"


def parse_tftp_config(table: ConfigTable) -> TftpConfig:
    """Read [tftp]; unknown keys are an error (ConfigTable enforces it)."""
    d = TftpConfig()
    timeout = table.get("timeout", _seconds, d.timeout)
    return TftpConfig(
        root=table.get("root", path_value, None),
        address=table.get("address", ipv4, d.address),
        port=table.get("port", integer(1, 65535), d.port),
        max_blksize=table.get("max_blksize", integer(BLKSIZE_MIN, BLKSIZE_MAX), d.max_blksize),
        max_windowsize=table.get("max_windowsize", integer(1, WINDOWSIZE_MAX), d.max_windowsize),
        timeout=timeout,
        max_timeout=max(timeout, table.get("max_timeout", _seconds, d.max_timeout)),
        retries=table.get("retries", integer(0, 100), d.retries),
        max_transfers=table.get("max_transfers", integer(1, 100_000), d.max_transfers),
        unknown_clients=table.get("unknown_clients", _policy, d.unknown_clients),
    )


def boot_dir(config: TftpConfig, *, site_root: Path, export_root: Path) -> Path:
    """The directory TFTP serves: [tftp] root, else `<export root>/boot`."""
    if config.root is None:
        return export_root / "boot"
    return site_root / config.root


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("expected a number of seconds, like 1 or 0.5")
    if not 0.01 <= value <= 255:
        raise Invalid(f"{value} is out of range; use 0.01 to 255 seconds")
    return float(value)


def _policy(value: object) -> str:
    text = string(value)
    if text not in UNKNOWN_CLIENT_POLICIES:
        raise Invalid(f"{text!r} is not a policy; use one of {', '.join(UNKNOWN_CLIENT_POLICIES)}")
    return text
