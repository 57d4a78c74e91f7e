"""``rootfs serve``: run DHCP, TFTP and HTTP for the site until stopped."""

from __future__ import annotations

import logging

import click
import trio

from rootfs.cli.context import Context
from rootfs.netboot.serve import ServeOptions, configure_logging
from rootfs.netboot.serve import serve as run_services


@click.command()
@click.option("--no-dhcp", is_flag=True, help="Do not serve DHCP (it comes from elsewhere).")
@click.option("--no-tftp", is_flag=True, help="Do not serve TFTP.")
@click.option("--no-http", is_flag=True, help="Do not serve HTTP (also: [http] enabled = false).")
@click.option("--tftp-port", type=click.IntRange(0, 65535), default=None,
              help="TFTP port (default: [tftp] port, 69).")  # fmt: skip
@click.option("--tftp-address", default=None,
              help="Address TFTP listens on (default: [tftp] address, all).")  # fmt: skip
@click.option("--http-port", type=click.IntRange(0, 65535), default=None,
              help="HTTP port (default: [http] port, 80).")  # fmt: skip
@click.option("--http-address", default=None,
              help="Address HTTP listens on (default: [http] address, all).")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True,
              help="Also log malformed packets, HTTP successes and other noise.")  # fmt: skip
@click.pass_obj
def serve(
    ctx: Context,
    no_dhcp: bool,
    no_tftp: bool,
    no_http: bool,
    tftp_port: int | None,
    tftp_address: str | None,
    http_port: int | None,
    http_address: str | None,
    verbose: bool,
) -> None:
    """Run the boot servers (DHCP, TFTP and HTTP) for the site until SIGTERM or Ctrl-C.

    Reloads the inventory on SIGHUP and when site.toml or hostcfg/hosts.toml change, without
    dropping transfers in flight. Logs one line per event on stderr; every client step also goes
    to the boot trace ('rootfs trace HOST').
    """
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    options = ServeOptions(
        tftp=not no_tftp,
        dhcp=not no_dhcp,
        http=not no_http,
        tftp_port=tftp_port,
        tftp_address=tftp_address,
        http_port=http_port,
        http_address=http_address,
    )
    ctx.site  # fail on a bad site before starting anything  # noqa: B018
    trio.run(run_services, ctx.reload, options)
