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
@click.option(
    "--cached/--no-cached",
    default=None,
    help="Also build the cached clients' initramfs ([boot] initrd_cached; it carries Debian's"
    " Python and the cache daemon). Default: when any host is cached.",
)
@click.pass_obj
def initramfs(
    ctx: Context, package: str, deb: Path | None, cache: Path | None, cached: bool | None
) -> None:
    """Install a kernel and an NFS-root initramfs as [boot] kernel and initrd.

    The kernel comes from a Debian linux-image package (downloaded, never installed here); the
    initramfs is busybox plus the NIC and NFS modules, and mounts the root DHCP option 17 names.
    For cached hosts a second initramfs also carries Debian's Python runtime and rootfs's cache
    daemon, which serves / from the client's disk. All are cached by the digests of their
    inputs, so a rerun is quick.
    """
    site = ctx.site
    with_cached = cached if cached is not None else any(h.cached for h in site.hosts)
    target = boot_dir(site.config.tftp, site_root=site.root, export_root=site.config.export_root)
    images = prepare(
        target,
        cache or site.config.state_dir / "boot-cache",
        package=package,
        deb=deb,
        kernel_name=site.config.boot.kernel,
        initrd_name=site.config.boot.initrd or "initrd.img",
        cached_initrd_name=site.config.boot.initrd_cached if with_cached else None,
    )
    kernel = images.kernel
    click.echo(f"kernel   {kernel.version}: {images.installed[0]}")
    click.echo(f"initrd   {images.installed[1]} ({images.initrd.stat().st_size // 1024} KiB)")
    if with_cached:
        cached_img = images.installed[2]
        click.echo(f"cached   {cached_img} ({cached_img.stat().st_size // 1024} KiB)")
    click.echo(f"modules  {' '.join(iter_modules(kernel))}")
