"""``rootfs base``: import, update, inspect and roll back shared bases."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rootfs.cli.context import Context
from rootfs.cli.options import jobs_option
from rootfs.cli.render import echo_result
from rootfs.engine.progress import Progress, human_bytes
from rootfs.engine.update import Imported, generation_diff, import_generation, rollback_target
from rootfs.store.state import Generation, State
from rootfs.tree.manifest import Change


@click.group()
def base() -> None:
    """Import, update and inspect shared bases (the common root every host starts from)."""


CHECKSUM_HELP = (
    "Read and hash every file of SOURCE; by default a file whose path, size and mtime match"
    " the current generation is taken to be unchanged (as rsync does)."
)


def _import(ctx: Context, name: str, source: Path, *, update: bool, checksum: bool) -> Imported:
    bar = Progress(f"importing {source}")
    try:
        result = import_generation(
            ctx.state, name, source, require_existing=update, checksum=checksum, progress=bar
        )
    finally:
        bar.close()
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    return result


def _stored(result: Imported) -> str:
    if not result.new_objects:
        return "nothing new stored (all content already in the store)"
    return f"{result.new_objects} new objects, {human_bytes(result.new_bytes)} stored"


def _summary(gen: Generation) -> str:
    c = gen.changes
    if not c:
        return "first generation"
    return (
        f"{c['added']} added, {c['removed']} removed, {c['modified']} modified,"
        f" {c['metadata']} metadata-only; {human_bytes(c['bytes'])} of new content"
    )


@base.command("import")
@click.argument("name")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--checksum", is_flag=True, help=CHECKSUM_HELP)
@click.pass_obj
def import_(ctx: Context, name: str, source: Path, checksum: bool) -> None:
    """Import SOURCE as the next generation of base NAME (hosts are not touched).

    SOURCE is a directory (e.g. made by debootstrap) or a tarball (.tar, .tar.gz,
    .tar.xz, .tar.zst). Every file's content is stored once, named by its
    xxh3-128 digest; importing content the store already has writes nothing.
    Use 'rootfs base update' to import and apply to every host in one step.
    """
    with ctx.state.lock(f"base import {name}"):
        result = _import(ctx, name, source, update=False, checksum=checksum)
    gen = result.generation
    if not result.new:
        click.echo(
            f"base {name}: unchanged, still generation {gen.number} ({gen.entries} entries);"
            f" {_stored(result)}"
        )
        return
    click.echo(
        f"base {name}: generation {gen.number} ({gen.digest[:12]}): {gen.entries} entries,"
        f" {result.files} files, {human_bytes(result.bytes)}; {_stored(result)}"
    )
    if gen.changes:
        click.echo(f"  changes: {_summary(gen)}; apply with 'rootfs build --all'")


@base.command("update")
@click.argument("name")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--no-apply", is_flag=True, help="Only import and stage the new generation.")
@click.option("--checksum", is_flag=True, help=CHECKSUM_HELP)
@jobs_option
@click.pass_obj
def update(
    ctx: Context, name: str, source: Path, no_apply: bool, checksum: bool, jobs: int | None
) -> None:
    """Import SOURCE as generation n+1 of NAME and apply it to every host using it.

    Each host gets only the paths that changed. A file a host changed itself is
    kept, with the new base version written beside it as <path>.rootfs-new
    (see 'rootfs resolve'); replaced files stay reachable for running clients.
    """
    state = ctx.state
    with state.lock(f"base update {name}"):
        result = _import(ctx, name, source, update=True, checksum=checksum)
        gen = result.generation
        if result.new:
            click.echo(f"base {name}: generation {gen.number} ({gen.digest[:12]}): {_summary(gen)}")
        else:
            click.echo(f"base {name}: unchanged, still generation {gen.number}")
        if not no_apply:
            _apply(ctx, state, name, jobs)


def _apply(ctx: Context, state: State, name: str, jobs: int | None) -> None:
    from rootfs.engine.build import Builder  # deferred: only commands that build need it

    hosts = [h for h in ctx.site.hosts if h.base == name]
    if not hosts:
        click.echo(f"no host uses base {name}")
        return
    Builder(ctx.site, state).build(hosts, on_result=echo_result, jobs=jobs)


@base.command("list")
@click.pass_obj
def list_(ctx: Context) -> None:
    """List imported bases and their current generation."""
    state = ctx.state
    names = state.bases()
    if not names:
        click.echo("no bases yet; import one with 'rootfs base import NAME SOURCE'")
        return
    click.echo(f"{'BASE':<16} {'GEN':>4} {'DIGEST':<12} {'ENTRIES':>8} {'SIZE':>10}  IMPORTED")
    for name in names:
        gen = state.require_current(name)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(gen.created))
        click.echo(
            f"{name:<16} {gen.number:>4} {gen.digest[:12]:<12} {gen.entries:>8}"
            f" {human_bytes(gen.bytes):>10}  {when}"
        )


@base.command("log")
@click.argument("name")
@click.pass_obj
def log(ctx: Context, name: str) -> None:
    """List the generations of base NAME (* marks the current one)."""
    state = ctx.state
    current = state.require_current(name)
    click.echo(f"  {'GEN':>4} {'DIGEST':<12} {'IMPORTED':<16} {'ENTRIES':>8} {'SIZE':>10}  CHANGES")
    for gen in state.generations(name):
        mark = "*" if gen.number == current.number else " "
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(gen.created))
        click.echo(
            f"{mark} {gen.number:>4} {gen.digest[:12]:<12} {when:<16} {gen.entries:>8}"
            f" {human_bytes(gen.bytes):>10}  {_summary(gen)}"
        )


@base.command("diff")
@click.argument("name")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.pass_obj
def diff_(ctx: Context, name: str, old: int, new: int) -> None:
    """Print the paths that differ between generations OLD and NEW of NAME."""
    changes: list[Change] = generation_diff(ctx.state, name, old, new)
    for change in changes:
        click.echo(f"{change.kind:<9} {change.path}")
    click.echo(f"{len(changes)} paths differ", err=True)


@base.command("rollback")
@click.argument("name")
@click.argument("generation", type=int, required=False)
@click.option("--no-apply", is_flag=True, help="Only make it current; build later.")
@jobs_option
@click.pass_obj
def rollback(
    ctx: Context, name: str, generation: int | None, no_apply: bool, jobs: int | None
) -> None:
    """Make an earlier GENERATION of NAME current (default: the one before) and apply it."""
    state = ctx.state
    with state.lock(f"base rollback {name}"):
        target = rollback_target(state, name, generation)
        state.set_current(name, target.number)
        click.echo(f"base {name}: generation {target.number} ({target.digest[:12]}) is current")
        if not no_apply:
            _apply(ctx, state, name, jobs)
