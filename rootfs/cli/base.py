"""``rootfs base``: import and list shared bases."""

from __future__ import annotations

import time
from pathlib import Path

import click

from rootfs.cli.context import Context
from rootfs.progress import Progress, human_bytes


@click.group()
def base() -> None:
    """Import and inspect shared bases (the common root every host starts from)."""


@base.command("import")
@click.argument("name")
@click.argument("source", type=click.Path(path_type=Path))
@click.pass_obj
def import_(ctx: Context, name: str, source: Path) -> None:
    """Import SOURCE as the next generation of base NAME.

    SOURCE is a directory (e.g. made by debootstrap) or a tarball (.tar, .tar.gz,
    .tar.xz, .tar.zst). Every file's content is stored once, named by its
    xxh3-128 digest; importing content the store already has writes nothing.
    """
    from rootfs.scan import scan_source  # deferred: tar and compression modules are slow to load

    state = ctx.state
    with state.lock(f"base import {name}"):
        state.base_dir(name)  # validates the name before any work
        previous = state.current_generation(name)
        state.store.clean_tmp()  # what an import killed earlier left behind
        bar = Progress(f"importing {source}")
        try:
            with state.store.batch() as batch:
                result = scan_source(source, batch, progress=bar)
        finally:
            bar.close()
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        if previous is not None and state.load_generation(previous) == result.manifest:
            click.echo(
                f"base {name}: unchanged, still generation {previous.number}"
                f" ({len(result.manifest)} entries); nothing new stored"
            )
            return
        gen = state.add_generation(name, result.manifest, source=str(source.resolve()))
    stored = (
        f"{result.new_objects} new objects, {human_bytes(result.new_bytes)} stored"
        if result.new_objects
        else "nothing new stored (all content already in the store)"
    )
    click.echo(
        f"base {name}: generation {gen.number} ({gen.digest[:12]}): {gen.entries} entries,"
        f" {result.files} files, {human_bytes(result.bytes)}; {stored}"
    )


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
