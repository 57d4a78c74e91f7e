"""The [exports] table of site.toml (every key optional).

Which NFS server publishes the host trees, where its managed file lives, and which extra read-only
trees (boot files, a shared /usr) every client may read. Per-host exports are not configurable on
purpose: each tree goes read-write to its own host only (see `rootfs.exports.model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import AddressValueError, IPv4Address, IPv4Network, NetmaskValueError
from pathlib import PurePosixPath

from rootfs.config.tomlconf import ConfigTable, Invalid, boolean, kind_name, string

BACKENDS = ("kernel", "ganesha")
DEFAULT_KERNEL_FILE = PurePosixPath("/etc/exports.d/rootfs.exports")
DEFAULT_GANESHA_FILE = PurePosixPath("/etc/ganesha/rootfs-exports.conf")
# Where Debian's nfs-ganesha.service (`ganesha.nfsd` default) writes its pid; reload signals it.
DEFAULT_GANESHA_PID_FILE = PurePosixPath("/run/ganesha/ganesha.pid")

Client = IPv4Address | IPv4Network | str
"""Who may mount: one address, a network, or the literal "*" (everybody)."""


@dataclass(frozen=True)
class SharedExport:
    """A `[[exports.shared]]` entry: a tree every listed client may read (root squashed)."""

    path: PurePosixPath  # relative paths are under the export root
    clients: tuple[Client, ...] | None  # None: every [[subnet]] of the site
    rw: bool = False
    key: str = "exports.shared"  # the TOML key, for error messages


@dataclass(frozen=True)
class ExportsConfig:
    """Settings of the [exports] table; defaults apply when it is absent."""

    backend: str = "kernel"
    auto: bool = False
    allow_wide_rw: bool = False
    kernel_file: PurePosixPath = DEFAULT_KERNEL_FILE
    ganesha_file: PurePosixPath = DEFAULT_GANESHA_FILE
    ganesha_pid_file: PurePosixPath = DEFAULT_GANESHA_PID_FILE
    manage_ganesha: bool = False
    shared: tuple[SharedExport, ...] = ()


def parse_exports_config(table: ConfigTable) -> ExportsConfig:
    """Read [exports]; unknown keys are an error (ConfigTable enforces it)."""
    shared: list[SharedExport] = []
    for t in table.tables("shared"):
        with t:
            shared.append(
                SharedExport(
                    path=t.require("path", _path, '"boot"'),
                    clients=t.get("clients", _clients, None),
                    rw=t.get("rw", boolean, False),
                    key=t.key,
                )
            )
    return ExportsConfig(
        backend=table.get("backend", _backend, "kernel"),
        auto=table.get("auto", boolean, False),
        allow_wide_rw=table.get("allow_wide_rw", boolean, False),
        kernel_file=table.get("kernel_file", _path, DEFAULT_KERNEL_FILE),
        ganesha_file=table.get("ganesha_file", _path, DEFAULT_GANESHA_FILE),
        ganesha_pid_file=table.get("ganesha_pid_file", _path, DEFAULT_GANESHA_PID_FILE),
        manage_ganesha=table.get("manage_ganesha", boolean, False),
        shared=tuple(shared),
    )


def parse_client(text: str) -> Client:
    """An address, a network in CIDR form, or "*"; hostnames and netgroups are not accepted
    because their meaning depends on DNS at export time, which defeats least privilege."""
    if text == "*":
        return text
    try:
        return IPv4Network(text) if "/" in text else IPv4Address(text)
    except (AddressValueError, NetmaskValueError, ValueError):
        raise Invalid(
            f"{text!r} is not an IPv4 address, a network like 10.0.0.0/24, or *; "
            "hostnames and netgroups are not supported"
        ) from None


def _backend(value: object) -> str:
    text = string(value)
    if text not in BACKENDS:
        raise Invalid(f"{text!r} is not a backend; use one of {', '.join(BACKENDS)}")
    return text


def _path(value: object) -> PurePosixPath:
    text = string(value)
    if not text:
        raise Invalid("empty path; give a file or directory path")
    return PurePosixPath(text)


def _clients(value: object) -> tuple[Client, ...]:
    if not isinstance(value, list) or not value:
        raise Invalid(
            f"expected a non-empty array of addresses or networks, got {kind_name(value)}; "
            'use ["10.0.0.0/24"]'
        )
    return tuple(parse_client(string(v)) for v in value)
