"""``rootfs boot install`` and ``rootfs boot show``."""

from __future__ import annotations

from pathlib import Path

import click

from rootfs.cli.context import Context
from rootfs.config.tftp import boot_dir
from rootfs.netboot.boot.files import host_configs
from rootfs.netboot.boot.install import install_loaders


@click.group()
def boot() -> None:
    """Network boot loaders and the per-host boot configs TFTP generates."""


def _boot_dir(ctx: Context) -> Path:
    site = ctx.site
    return boot_dir(site.config.tftp, site_root=site.root, export_root=site.config.export_root)


@boot.command()
@click.option(
    "--system-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Where to look for the Debian packages' files (for a chroot or a test).",
)
@click.pass_obj
def install(ctx: Context, system_root: Path) -> None:
    """Copy boot loaders from installed Debian packages into the TFTP boot directory.

    Looks for pxelinux, syslinux-common, ipxe, grub-efi-amd64-signed/-bin and shim-signed; copies
    what is present and names the packages to install for the rest. Kernels and initrds are yours
    to place (see [boot] kernel/initrd in site.toml).
    """
    target = _boot_dir(ctx)
    results = install_loaders(target, system_root=system_root)
    missing: set[str] = set()
    for r in results:
        if r.status == "missing":
            missing.add(r.loader.package)
            continue
        click.echo(f"{r.status:<9} {target / r.loader.target}  ({r.loader.why}, from {r.source})")
    if missing:
        click.echo(
            f"not installed (apt install them for more loaders): {', '.join(sorted(missing))}"
        )


@boot.command()
@click.argument("host")
@click.pass_obj
def show(ctx: Context, host: str) -> None:
    """Print the boot configs TFTP serves HOST (generated on request, never on disk)."""
    site = ctx.site
    for name, text in host_configs(site, site.host(host)).items():
        click.echo(f"==> {name} <==")
        click.echo(text)
