"""``rootfs boot install`` and ``rootfs boot show``."""

from __future__ import annotations

from pathlib import Path

import click

from rootfs.cli.context import Context
from rootfs.config.tftp import boot_dir
from rootfs.netboot.boot.files import host_configs, host_spec
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
    """Print the boot configs TFTP serves HOST (generated on request, never on disk).

    A cached host (cached = true in hosts.toml) is said to be one first: its initrd
    ([boot] initrd_cached), its cache device and quota, and the kernel arguments saying so.
    """
    site = ctx.site
    h = site.host(host)
    spec = host_spec(site, h)
    if spec.cache is not None:
        from rootfs.cli.render import cache_device_text, cache_quota_text  # loads the engine

        source = "[boot] initrd_cached" if h.boot.initrd is None else "the host's [boot] initrd"
        click.echo(f"{h.name} boots cached: its root is served through a cache on its own disk")
        click.echo(f"  initrd:       {spec.initrd} (from {source})")
        click.echo(f"  cache device: {cache_device_text(spec.cache.device)}")
        click.echo(f"  cache quota:  {cache_quota_text(spec.cache.quota)}")
        click.echo(f"  kernel args:  {spec.cache.args}")
        click.echo()
    for name, text in host_configs(site, h).items():
        click.echo(f"==> {name} <==")
        click.echo(text)
