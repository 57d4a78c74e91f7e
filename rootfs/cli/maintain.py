"""``rootfs resolve`` and ``rootfs gc``: after-update housekeeping."""

from __future__ import annotations

import click

from rootfs.cli.context import Context
from rootfs.engine.progress import human_bytes


@click.command()
@click.argument("host")
@click.argument("path")
@click.option(
    "--take",
    type=click.Choice(["base", "host"]),
    required=True,
    help="base: install the base's version (from PATH.rootfs-new); host: keep the"
    " host's version for good (until the base changes PATH again).",
)
@click.pass_obj
def resolve(ctx: Context, host: str, path: str, take: str) -> None:
    """End a conflict a base update left at PATH on HOST."""
    from rootfs.engine.build import Builder

    h = ctx.site.host(host)
    state = ctx.state
    with state.lock(f"resolve {host} {path}"):
        Builder(ctx.site, state).resolve(h, path, take)
    kept = "the base's version is installed" if take == "base" else "the host's version stays"
    click.echo(f"{h.name}: {path}: {kept}; {path}.rootfs-new removed")


@click.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.pass_obj
def gc(ctx: Context, dry_run: bool) -> None:
    """Remove old generations, unreferenced store objects and released attic entries.

    Keeps the last [update] keep_generations generations of each base (default 3)
    and every generation a host still uses.
    """
    from rootfs.netboot.trace import TraceLog
    from rootfs.netboot.trace_report import last_boot_times
    from rootfs.store.gc import collect

    state = ctx.state
    with state.lock("gc"):
        boots = last_boot_times(TraceLog(state.root / "trace").events())
        report = collect(ctx.site, state, last_boot=boots.get, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for gen in report.generations:
        click.echo(f"{verb} generation {gen.number} of base {gen.base}")
    for path in report.attic:
        click.echo(f"{verb} attic {path}")
    click.echo(
        f"{verb} {len(report.generations)} generations, {report.objects} objects,"
        f" {report.links} unused hardlink-mode inodes, {len(report.attic)} attic entries;"
        f" {human_bytes(report.bytes_freed)} {'to free' if dry_run else 'freed'}"
    )
