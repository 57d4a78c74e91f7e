"""``rootfs build`` and ``rootfs verify``."""

from __future__ import annotations

import click

from rootfs.cli.context import Context
from rootfs.cli.options import jobs_option
from rootfs.cli.render import echo_result
from rootfs.engine import disk
from rootfs.engine.build import Builder
from rootfs.errors import UserError
from rootfs.tree.manifest import diff


@click.command()
@click.argument("hosts", nargs=-1)
@click.option("--all", "all_hosts", is_flag=True, help="Build every host of the inventory.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "copy", "reflink", "hardlink"]),
    default=None,
    help="Override how files are materialised: copy, reflink (copy-on-write), hardlink"
    " (to the store's inodes: fastest, for clients that never write shared files), or"
    " auto (reflink where supported, else copy).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option(
    "--repair",
    is_flag=True,
    help="Compare with what is really on disk instead of the last build's record,"
    " and put every difference right (undoes host-local changes).",
)
@jobs_option
@click.pass_obj
def build(
    ctx: Context,
    hosts: tuple[str, ...],
    all_hosts: bool,
    mode: str | None,
    dry_run: bool,
    repair: bool,
    jobs: int | None,
) -> None:
    """Bring host trees to base + overlays + generated files.

    Only paths that differ from the last build are touched; a second run with
    nothing changed says "up to date". An interrupted build resumes where it stopped.
    """
    site = ctx.site
    if all_hosts == bool(hosts):
        raise UserError("name the hosts to build, or use --all (not both)")
    selected = list(site.hosts) if all_hosts else [site.host(h) for h in hosts]
    if not selected:
        click.echo(f"no hosts in {site.hosts_file}; add one with 'rootfs host add'")
        return
    state = ctx.state
    with state.lock("build"):
        Builder(site, state).build(
            selected, mode=mode, dry_run=dry_run, repair=repair, on_result=echo_result, jobs=jobs
        )
        if not dry_run:
            from rootfs.cli.exports import auto_apply  # deferred: NFS backends load slowly

            auto_apply(site)


@click.command()
@click.argument("host")
@click.option(
    "--checksum", is_flag=True, help="Hash every file instead of trusting matching size and mtime."
)
@click.pass_obj
def verify(ctx: Context, host: str, checksum: bool) -> None:
    """Report what differs on disk from what was last applied to HOST.

    Exit status 0 when the tree matches, 1 when anything differs.
    """
    site = ctx.site
    h = site.host(host)
    applied = ctx.state.applied_manifest(h.name)
    if applied is None:
        raise UserError(f"host {h.name} has never been built; run 'rootfs build {h.name}'")
    root = site.host_root(h)
    found = disk.read_tree(str(root), applied, checksum=checksum)
    changes = diff(applied, found, ignore_dir_mtime=True)
    for change in changes:
        click.echo(f"{change.kind:<9} {change.path}")
    conflicts = sorted(p for p, hold in ctx.state.holds(h.name).items() if hold.open)
    for path in conflicts:
        click.echo(
            f"conflict  {path} (host's version kept; base's in {path}.rootfs-new;"
            f" 'rootfs resolve {h.name} {path} --take base|host')"
        )
    if changes or conflicts:
        click.echo(
            f"{h.name}: {len(changes)} paths differ from the last build,"
            f" {len(conflicts)} conflicts open",
            err=True,
        )
        raise click.exceptions.Exit(1)
    click.echo(f"{h.name}: clean ({len(applied)} entries match {root})")
