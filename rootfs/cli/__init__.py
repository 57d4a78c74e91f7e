"""The ``rootfs`` command line: parse, call a service, render. No logic lives here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from rootfs import __version__
from rootfs.cli.context import Context
from rootfs.errors import ManifestFormatError, RootfsError, UserError

# Each command's module is imported only when that command runs: the servers, FUSE and the
# tar scanner pull in trio, pyfuse3 and compression libraries that a `rootfs build` never needs,
# and start-up time is most of a no-op build.
COMMANDS = {
    "base": "rootfs.cli.base:base",
    "boot": "rootfs.cli.boot:boot",
    "build": "rootfs.cli.build:build",
    "cache": "rootfs.cli.cache:cache",
    "exports": "rootfs.cli.exports:exports",
    "gc": "rootfs.cli.maintain:gc",
    "host": "rootfs.cli.host:host",
    "init": "rootfs.cli.site_cmds:init",
    "resolve": "rootfs.cli.maintain:resolve",
    "serve": "rootfs.cli.serve:serve",
    "status": "rootfs.cli.site_cmds:status",
    "trace": "rootfs.cli.trace:trace",
    "verify": "rootfs.cli.build:verify",
}
# Subcommands that live in their own module, added to their group when it is loaded.
SUBCOMMANDS = {"boot": ("rootfs.cli.initramfs:initramfs",)}


def _load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        command = _load(target)
        if isinstance(command, click.Group):
            for sub in SUBCOMMANDS.get(cmd_name, ()):
                loaded = _load(sub)
                if loaded.name not in command.commands:
                    command.add_command(loaded)
        return command


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
    except ManifestFormatError as exc:  # a state file damaged on disk, not a bug to trace
        click.echo(
            f"rootfs: error: {exc}; the manifest is damaged: import its base again"
            " ('rootfs base import'), or for a host's, 'rootfs build HOST --repair'",
            err=True,
        )
        sys.exit(2)
    except RootfsError as exc:  # raised on purpose, so its message is meant to be read
        click.echo(f"rootfs: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted; run the command again to resume", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int):  # click returns a command's Exit code when not standalone
        sys.exit(code)
