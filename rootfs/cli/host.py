"""``rootfs host``: add, set, list, show and remove hosts of the inventory."""

from __future__ import annotations

import shutil
import time

import click

from rootfs.cli.context import Context
from rootfs.cli.render import cache_device_text, cache_quota_text, echo_result
from rootfs.config.site import DEFAULT_CACHE_DEVICE, Host, Site
from rootfs.engine.build import Builder
from rootfs.engine.progress import human_bytes
from rootfs.errors import UserError


def _parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--var {item!r}: expected KEY=VALUE, e.g. --var role=lab")
        result[key] = value
    return result


def _cache_summary(h: Host) -> str:
    """How a host boots, in a few words: 'cached on DEV, quota 4.0 GiB', or 'not cached'."""
    if not h.cached:
        return "not cached"
    quota = "" if h.cache_quota is None else f", quota {human_bytes(h.cache_quota)}"
    return f"cached on {h.cache_device}{quota}"


@click.group()
def host() -> None:
    """Add, change, list, show and remove the hosts of hostcfg/hosts.toml.

    \b
      rootfs host add pc7 --mac 52:54:00:12:34:57 --ip 10.0.0.17
      rootfs host set pc7 cached=true cache_quota=8G
      rootfs host list
      rootfs host show pc7
      rootfs host remove pc7
    """


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
@click.option(
    "--cached",
    is_flag=True,
    help="The client boots with its root served through a cache on its own disk (it boots"
    " [boot] initrd_cached; see 'rootfs boot show NAME').",
)
@click.option(
    "--cache-device",
    metavar="DEV",
    default=None,
    help=f"With --cached: where the cache lives. {DEFAULT_CACHE_DEVICE} (the default) is a"
    " filesystem with that label, never formatted; a device like /dev/vda is formatted by the"
    " client only if it is empty.",
)
@click.option(
    "--cache-quota",
    metavar="SIZE",
    default=None,
    help="With --cached: the most the cache may hold, e.g. 4G, 500M, 1.5G (binary units;"
    " default: 70% of the cache filesystem).",
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
    cached: bool,
    cache_device: str | None,
    cache_quota: str | None,
    no_build: bool,
) -> None:
    """Add host NAME to hostcfg/hosts.toml (comments kept) and build its tree.

    \b
    Examples:
      rootfs host add pc7 --mac 52:54:00:12:34:57 --ip 10.0.0.17 --var role=lab
      rootfs host add pc8 --mac 52:54:00:12:34:58 --ip 10.0.0.18 --cached --cache-quota 8G

    Change a host later with 'rootfs host set'.
    """
    from rootfs.config import inventory  # deferred: tomlkit is slow to load

    if not cached and (cache_device is not None or cache_quota is not None):
        raise UserError(
            "--cache-device and --cache-quota are for cached hosts; add --cached"
            " (or set them later: 'rootfs host set NAME cached=true ...')"
        )
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
            cached=cached,
            cache_device=cache_device,
            cache_quota=cache_quota,
        )
        click.echo(
            f"added {added.name}: {added.mac} {added.ip} (base {added.base},"
            f" overlays {', '.join(added.overlays) or 'none'}, {_cache_summary(added)})"
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


@host.command("set")
@click.argument("name")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--no-build", is_flag=True, help="Only change the inventory; build later.")
@click.pass_obj
def set_(ctx: Context, name: str, assignments: tuple[str, ...], no_build: bool) -> None:
    """Change keys of host NAME in hostcfg/hosts.toml (comments kept), then rebuild its tree.

    \b
    Keys:
      cached=true|false     root served through a cache on the client's own disk
      cache_device=DEV      LABEL=rootfs-cache (default: a filesystem with that
                            label, never formatted) or a device like /dev/vda
                            (formatted by the client only if it is empty)
      cache_quota=SIZE      e.g. 4G, 500M, 1.5G (default: 70% of the cache)
      base=NAME             an imported base (default: site.toml [defaults])
      mode=MODE             auto, copy, reflink or hardlink
      overlays=A,B          overlay directories, in order
    KEY= (nothing after =) removes the key: the default applies again.

    The changed file is loaded as every command loads it before it is written:
    a value that would not load is refused and nothing changes. mac and ip
    cannot be set (a new address is a new tree): remove the host, add it again.

    \b
    Examples:
      rootfs host set pc7 cached=true cache_quota=8G
      rootfs host set pc7 cache_device=/dev/vdb overlays=diskless,lab
      rootfs host set pc7 cached=false cache_quota=
    """
    from rootfs.config import inventory  # deferred: tomlkit is slow to load

    changes = inventory.parse_assignments(assignments)
    site = ctx.site
    state = ctx.state
    with state.lock(f"host set {name}"):
        edit = inventory.edit_host(site, name, changes)
        if not edit.changed:
            click.echo(f"{name}: nothing to change")
            return
        if "base" in changes or not no_build:
            state.require_current(edit.after.base)
        builder = desired = None
        if not no_build:  # compose before writing: a template error leaves the file as it was
            builder = Builder(edit.site, state)
            desired = builder.compose_hosts([edit.after])
        inventory.write_edit(site, edit)
        for key in changes:
            before, after = _shown(site, edit.before, key), _shown(edit.site, edit.after, key)
            click.echo(f"{name}: {key} {before} -> {after}")
        if builder is None or desired is None:
            return
        builder.apply_desired(desired, on_result=echo_result)
        from rootfs.cli.exports import auto_apply  # deferred: NFS backends load slowly

        auto_apply(ctx.reload())


def _shown(site: Site, h: Host, key: str) -> str:
    """The value a key has for a host once defaults apply, for 'host set' to report."""
    config = site.config
    if key == "cached":
        return "true" if h.cached else "false"
    if key == "cache_device":
        default = " (default)" if h.cache_device == DEFAULT_CACHE_DEVICE else ""
        return f"{h.cache_device}{default}"
    if key == "cache_quota":
        return "default" if h.cache_quota is None else cache_quota_text(h.cache_quota)
    if key == "base":
        return f"{h.base}{' (site default)' if h.base == config.default_base else ''}"
    if key == "mode":
        return f"{h.mode}{' (site default)' if h.mode == config.default_mode else ''}"
    assert key == "overlays"
    default = " (site default)" if h.overlays == config.default_overlays else ""
    return f"{','.join(h.overlays) or 'none'}{default}"


@host.command("list")
@click.pass_obj
def list_(ctx: Context) -> None:
    """One line per host: name, MAC, IP, base, whether it boots cached, overlays.

    CACHE is "yes" for a host whose root is served through a cache on its own disk
    ('rootfs host show NAME' gives its device and quota), else "-".
    """
    site = ctx.site
    if not site.hosts:
        click.echo(f"no hosts in {site.hosts_file}; add one with 'rootfs host add'")
        return
    click.echo(f"{'HOST':<16} {'MAC':<17} {'IP':<15} {'BASE':<12} {'CACHE':<5} OVERLAYS")
    for h in site.hosts:
        cache = "yes" if h.cached else "-"
        click.echo(
            f"{h.name:<16} {h.mac:<17} {h.ip!s:<15} {h.base:<12} {cache:<5} {','.join(h.overlays)}"
        )


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
    click.echo(f"cached:     {'yes' if h.cached else 'no'}")
    if h.cached:
        click.echo(f"cache dev:  {cache_device_text(h.cache_device)}")
        click.echo(f"quota:      {cache_quota_text(h.cache_quota)}")
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
