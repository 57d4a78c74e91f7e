"""The ``rootfs`` command line: parse, call a service, render. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rootfs import __version__
from rootfs.cli import base, build, cache, exports, host, maintain, site_cmds, trace
from rootfs.cli import boot as boot_cmds
from rootfs.cli import serve as serve_cmds
from rootfs.cli.context import Context
from rootfs.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--site",
    "site_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Site directory (holds site.toml, hostcfg/, overlays/). Default: $ROOTFS_SITE, else the"
    " current directory if it holds site.toml or hostcfg/, else /etc/rootfs.",
)
@click.version_option(__version__, prog_name="rootfs")
@click.pass_context
def cli(ctx: click.Context, site_dir: Path | None) -> None:
    """Manage the root filesystems of network-booted Linux clients.

    Each host gets its own NFS root tree under <export root>/<ip>, built from a
    shared base (imported once, stored by content) plus layered overlays whose
    *.j2 files are rendered per host.

    \b
    Typical first steps:
      rootfs init /etc/rootfs                 # a new site (or use the repo's)
      rootfs base import debian ./rootdir     # or a .tar/.tar.gz/.tar.xz/.tar.zst
      rootfs host add pc1 --mac 52:54:00:12:34:56 --ip 10.0.0.11
      rootfs status
    """
    ctx.obj = Context(cli_site=site_dir)


for group in (base.base, host.host, exports.exports, cache.cache, boot_cmds.boot):
    cli.add_command(group)
for command in (
    build.build,
    build.verify,
    site_cmds.status,
    site_cmds.init,
    maintain.resolve,
    maintain.gc,
    trace.trace,
    serve_cmds.serve,
):
    cli.add_command(command)


def main() -> None:
    """Console entry point: user errors print one line and exit non-zero."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"rootfs: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; run the command again to resume", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int):  # click returns a command's Exit code when not standalone
        sys.exit(code)
