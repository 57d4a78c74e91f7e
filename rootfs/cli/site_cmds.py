"""``rootfs status`` and ``rootfs init``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rootfs.cache.stats import read_client_report
from rootfs.cli.context import Context
from rootfs.cli.render import cache_report_text
from rootfs.config import inventory
from rootfs.engine import disk
from rootfs.store.layout import CACHE_REPORT
from rootfs.tree.manifest import diff


@click.command()
@click.option("--no-drift", is_flag=True, help="Skip reading the trees (faster on big sites).")
@click.pass_obj
def status(ctx: Context, no_drift: bool) -> None:
    """One row per host: base and generation applied, overlays, mode, whether it boots cached
    (CACHE: "yes" when its root is served through a cache on its own disk, see 'rootfs boot
    show HOST'), last build, drift. Below the table, each cached host's cache as the client
    last reported it: objects, bytes, share of reads served from its disk."""
    site = ctx.site
    state = ctx.state
    click.echo(
        f"site {site.root}   state {site.config.state_dir}   exports {site.config.export_root}"
    )
    if not site.hosts:
        click.echo("no hosts yet; add one with 'rootfs host add'")
        return
    click.echo(
        f"{'HOST':<12} {'IP':<15} {'BASE@GEN':<14} {'OVERLAYS':<16} {'MODE':<8} {'CACHE':<5}"
        f" {'LAST BUILD':<16} DRIFT"
    )
    for h in site.hosts:
        record = state.host_record(h.name)
        cache = "yes" if h.cached else "-"
        if record is None:
            click.echo(
                f"{h.name:<12} {h.ip!s:<15} {'-':<14} {','.join(h.overlays):<16}"
                f" {'-':<8} {cache:<5} {'never':<16} -"
            )
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.built_at))
        drift = "-"
        if not no_drift:
            applied = state.applied_manifest(h.name)
            if applied is not None:
                found = disk.read_tree(str(site.host_root(h)), applied)
                drift = str(len(diff(applied, found, ignore_dir_mtime=True)))
        conflicts = sum(1 for hold in state.holds(h.name).values() if hold.open)
        if conflicts:
            drift += f", {conflicts} conflicts ('rootfs verify {h.name}')"
        if state.read_journal(h.name) is not None:
            drift += " (interrupted build: rerun 'rootfs build')"
        gen = f"{record.base}@{record.generation}"
        click.echo(
            f"{h.name:<12} {h.ip!s:<15} {gen:<14} {','.join(record.overlays):<16}"
            f" {record.mode:<8} {cache:<5} {when:<16} {drift}"
        )
    _cache_reports(ctx)


def _cache_reports(ctx: Context) -> None:
    """What each cached host's cache daemon last wrote into its tree (every 30 s while up)."""
    cached = [h for h in ctx.site.hosts if h.cached]
    if not cached:
        return
    click.echo("\ncached hosts, as their cache daemons last reported:")
    now = time.time()
    for h in cached:
        try:
            report = read_client_report(ctx.site.host_root(h) / CACHE_REPORT)
        except ValueError as exc:
            text = f"unreadable report: {exc}"
        else:
            text = (
                "no report yet (a client writes one a few seconds after it boots cached)"
                if report is None
                else cache_report_text(report, now)
            )
        click.echo(f"  {h.name:<12} {text}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create a new site skeleton in DIRECTORY, every setting explained in comments."""

    inventory.init_site(directory)
    click.echo(
        f"created site {directory}: edit site.toml, add overlays under overlays/,"
        f" then 'rootfs --site {directory} host add ...'"
    )
