"""``rootfs host``: add, list, show and remove hosts of the inventory."""

from __future__ import annotations

import shutil
import time

import click

from rootfs.cli.context import Context
from rootfs.cli.render import echo_result
from rootfs.engine.build import Builder
from rootfs.errors import UserError


def _parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--var {item!r}: expected KEY=VALUE, e.g. --var role=lab")
        result[key] = value
    return result


@click.group()
def host() -> None:
    """Add, list, show and remove the hosts of hostcfg/hosts.toml."""


@host.command("add")
@click.argument("name")
@click.option("--mac", required=True, help="Hardware address, e.g. 52:54:00:12:34:56.")
@click.option(
    "--ip", required=True, help="The host's IPv4 address; its tree is <export root>/<ip>."
)
@click.option("--base", default=None, help="Base to build from (default: site's defaults.base).")
@click.option(
    "--overlay",
    "overlays",
    multiple=True,
    help="Overlay to layer, in order; repeat for several (default: site's defaults).",
)
@click.option(
    "--var",
    "vars_",
    multiple=True,
    metavar="KEY=VALUE",
    help="A template variable for this host; repeatable.",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "copy", "reflink", "hardlink"]),
    default=None,
    help="How files are materialised (default: site's defaults.mode).",
)
@click.option("--no-build", is_flag=True, help="Only add to the inventory; build later.")
@click.pass_obj
def add(
    ctx: Context,
    name: str,
    mac: str,
    ip: str,
    base: str | None,
    overlays: tuple[str, ...],
    vars_: tuple[str, ...],
    mode: str | None,
    no_build: bool,
) -> None:
    """Add host NAME to hostcfg/hosts.toml (comments kept) and build its tree.

    \b
    Example:
      rootfs host add pc7 --mac 52:54:00:12:34:57 --ip 10.0.0.17 --var role=lab
    """
    from rootfs.config import inventory  # deferred: tomlkit is slow to load

    site = ctx.site
    state = ctx.state
    with state.lock(f"host add {name}"):
        state.require_current(base if base is not None else site.config.default_base)
        added = inventory.add_host(
            site,
            name=name,
            mac=mac,
            ip=ip,
            base=base,
            overlays=list(overlays) if overlays else None,
            mode=mode,
            vars=_parse_vars(vars_),
        )
        click.echo(
            f"added {added.name}: {added.mac} {added.ip} (base {added.base},"
            f" overlays {', '.join(added.overlays) or 'none'})"
        )
        if no_build:
            return
        site = ctx.reload()
        builder = Builder(site, state)
        try:
            desired = builder.compose_hosts([added])
        except UserError:
            inventory.remove_host(site, name)
            click.echo(f"removed {name} again: its tree cannot be composed", err=True)
            raise
        builder.apply_desired(desired, on_result=echo_result)
        from rootfs.cli.exports import auto_apply  # deferred: NFS backends load slowly

        auto_apply(site)


@host.command("list")
@click.pass_obj
def list_(ctx: Context) -> None:
    """One line per host: name, MAC, IP, base, overlays."""
    site = ctx.site
    if not site.hosts:
        click.echo(f"no hosts in {site.hosts_file}; add one with 'rootfs host add'")
        return
    click.echo(f"{'HOST':<16} {'MAC':<17} {'IP':<15} {'BASE':<12} OVERLAYS")
    for h in site.hosts:
        click.echo(f"{h.name:<16} {h.mac:<17} {h.ip!s:<15} {h.base:<12} {','.join(h.overlays)}")


@host.command("show")
@click.argument("name")
@click.pass_obj
def show(ctx: Context, name: str) -> None:
    """Everything about host NAME: inventory, tree, last build."""
    site = ctx.site
    h = site.host(name)
    record = ctx.state.host_record(h.name)
    click.echo(f"name:       {h.name}\nmac:        {h.mac}\nip:         {h.ip}")
    click.echo(f"base:       {h.base}\noverlays:   {', '.join(h.overlays) or '-'}")
    click.echo(f"mode:       {h.mode}")
    for key, value in h.vars:
        click.echo(f"var:        {key}={value}")
    click.echo(f"tree:       {site.host_root(h)}")
    click.echo(f"root path:  {site.root_path(h)},{site.config.nfs_options}")
    if record is None:
        click.echo("last build: never; run 'rootfs build " + h.name + "'")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.built_at))
        click.echo(
            f"last build: {when}, {record.base} generation {record.generation}, mode {record.mode}"
        )


@host.command("remove")
@click.argument("name")
@click.option("--purge", is_flag=True, help="Also delete the host's tree and its build state.")
@click.pass_obj
def remove(ctx: Context, name: str, purge: bool) -> None:
    """Remove host NAME from the inventory (its tree is kept unless --purge)."""
    from rootfs.config import inventory  # deferred: tomlkit is slow to load

    site = ctx.site
    state = ctx.state
    with state.lock(f"host remove {name}"):
        h = inventory.remove_host(site, name)
        from rootfs.cli.exports import auto_apply

        auto_apply(ctx.reload())  # unexport before a purge deletes the tree
        root = site.host_root(h)
        if purge:
            if root.exists():
                shutil.rmtree(root)
            state.forget_host(h.name)
            click.echo(f"removed {h.name} and deleted its tree {root}")
        else:
            click.echo(f"removed {h.name}; its tree {root} is kept (use --purge to delete it)")


@host.command("rebooted")
@click.argument("name")
@click.pass_obj
def rebooted(ctx: Context, name: str) -> None:
    """Tell rootfs host NAME has rebooted: the old file versions kept for it can go.

    A base update keeps every file it replaces reachable (in <export root>/.attic)
    so running clients keep working; after a reboot nothing holds them. The DHCP
    server's boot trace tells rootfs the same automatically ('rootfs gc').
    """
    from rootfs.store.layout import release_host_attic

    h = ctx.site.host(name)
    with ctx.state.lock(f"host rebooted {name}"):
        count = release_host_attic(ctx.site.config.export_root, h.name)
    click.echo(f"{h.name}: released {count} attic entries")
