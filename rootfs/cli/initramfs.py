"""``rootfs boot initramfs``: a Debian kernel and rootfs's NFS-root initramfs, into the boot dir."""

from __future__ import annotations

from pathlib import Path

import click

from rootfs.cli.context import Context
from rootfs.config.tftp import boot_dir
from rootfs.netboot.boot.initramfs import DEFAULT_PACKAGE, iter_modules, prepare


@click.command("initramfs")
@click.option(
    "--package",
    default=DEFAULT_PACKAGE,
    show_default=True,
    help="Kernel package to take the kernel and modules from (apt-get download).",
)
@click.option(
    "--deb",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Use this linux-image .deb instead of downloading one.",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where unpacked kernels and built images are kept (default: <state>/boot-cache).",
)
@click.pass_obj
def initramfs(ctx: Context, package: str, deb: Path | None, cache: Path | None) -> None:
    """Install a kernel and an NFS-root initramfs as [boot] kernel and initrd.

    The kernel comes from a Debian linux-image package (downloaded, never installed here); the
    initramfs is busybox plus the NIC and NFS modules, and mounts the root DHCP option 17 names.
    Both are cached by the digests of their inputs, so a rerun is quick.
    """
    site = ctx.site
    target = boot_dir(site.config.tftp, site_root=site.root, export_root=site.config.export_root)
    images = prepare(
        target,
        cache or site.config.state_dir / "boot-cache",
        package=package,
        deb=deb,
        kernel_name=site.config.boot.kernel,
        initrd_name=site.config.boot.initrd or "initrd.img",
    )
    kernel = images.kernel
    click.echo(f"kernel   {kernel.version}: {images.installed[0]}")
    click.echo(f"initrd   {images.installed[1]} ({images.initrd.stat().st_size // 1024} KiB)")
    click.echo(f"modules  {' '.join(iter_modules(kernel))}")
