"""``rootfs exports``: show, apply and check the NFS exports the inventory implies."""

from __future__ import annotations

import click

from rootfs.cli.context import Context
from rootfs.config.site import Site
from rootfs.exports.apply import ApplyResult, apply_if_auto


def echo_apply(result: ApplyResult) -> None:
    """One line saying what changed and how the server was told; warnings to stderr."""
    for warning in result.warnings:
        click.echo(warning, err=True)
    written = "wrote" if result.changed else "unchanged:"
    click.echo(f"exports: {written} {result.path}; {result.action}")


def auto_apply(site: Site) -> None:
    """After `host add/remove` and `build`: apply the exports if `[exports] auto = true`."""
    result = apply_if_auto(site)
    if result is not None:
        echo_apply(result)


@click.group()
def exports() -> None:
    """NFS exports of the host trees (kernel nfsd or nfs-ganesha).

    Each host's tree is exported read-write to that host's IP only, root not
    squashed; [[exports.shared]] trees in site.toml are read-only, root squashed.
    """


@exports.command("show")
@click.option(
    "--backend",
    type=click.Choice(["kernel", "ganesha"]),
    default=None,
    help="Render for this server instead of site.toml's exports.backend.",
)
@click.pass_obj
def show(ctx: Context, backend: str | None) -> None:
    """Print the managed exports file the inventory implies (changes nothing)."""
    from rootfs.exports.apply import render

    rendered = render(ctx.site, backend)
    for warning in rendered.exports.warnings:
        click.echo(warning, err=True)
    click.echo(f"# {rendered.path}")
    click.echo(rendered.text, nl=False)


@exports.command("apply")
@click.pass_obj
def apply(ctx: Context) -> None:
    """Write the managed file and make the NFS server load it.

    kernel: the exports.d file, then 'exportfs -ra'. ganesha: the file of
    EXPORT blocks, then SIGHUP to ganesha.nfsd (or a start of it, with
    manage_ganesha = true).
    """
    from rootfs.exports.apply import apply as apply_exports

    echo_apply(apply_exports(ctx.site))


@exports.command("check")
@click.pass_obj
def check(ctx: Context) -> None:
    """Compare what the server exports with what it should; exit 1 on drift."""
    from rootfs.exports.apply import check as check_exports

    drift = check_exports(ctx.site)
    for line in drift:
        click.echo(line)
    if drift:
        click.echo(f"exports: {len(drift)} differences; run 'rootfs exports apply'", err=True)
        raise click.exceptions.Exit(1)
    click.echo("exports: in step with the inventory")
