"""``rootfs trace [HOST|MAC]``: where each client's network boot got to."""

from __future__ import annotations

import time

import click

from rootfs.cli.context import Context
from rootfs.errors import UserError
from rootfs.netboot.trace import TraceEvent, TraceLog
from rootfs.netboot.trace_report import describe, normalize_mac, summarize


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


@click.command()
@click.argument("client", required=False)
@click.option("-n", "--last", "limit", type=int, default=40, show_default=True,
              help="Events to show for one client.")  # fmt: skip
@click.pass_obj
def trace(ctx: Context, client: str | None, limit: int) -> None:
    """Show the boot trace: DHCP, TFTP and HTTP events per client.

    \b
    Without CLIENT: one line per client seen, most recent first, with its last event.
    With a host name or MAC: that client's events, oldest first, so the last line shows where
    its boot stopped (no DHCP reply, no TFTP or HTTP request after the ACK, a failed
    transfer, an HTTP 404 ...).
    """
    log = TraceLog(ctx.state.root / "trace")
    if client is None:
        summaries = summarize(log.events())
        if not summaries:
            click.echo(f"no boot events yet in {log.path}; is 'rootfs serve' running?")
            return
        click.echo(f"{'HOST':<12} {'MAC':<17} {'IP':<15} {'LAST BOOT':<19} LAST EVENT")
        for s in summaries:
            boot = _when(s.last_boot)[:19] if s.last_boot else "-"
            last = f"{_when(s.last.time)[11:19]} {s.last.source} {describe(s.last)}"
            click.echo(f"{s.host or '?':<12} {s.mac:<17} {s.ip or '-':<15} {boot:<19} {last}")
        return
    mac = normalize_mac(client)
    ip: str | None = None
    name: str | None = None
    if mac is None:
        host = ctx.site.host(client)  # a UserError listing known hosts if there is none
        mac, ip, name = host.mac, str(host.ip), host.name
    events: list[TraceEvent] = log.for_client(mac=mac, ip=ip, host=name)
    if not events:
        raise UserError(
            f"no boot events for {client} ({mac}) in {log.path}; check the MAC in hosts.toml, "
            "that 'rootfs serve' listens on the client's network, and that the client PXE-boots",
            exit_code=1,
        )
    for event in events[-limit:]:
        click.echo(
            f"{_when(event.time)}  {event.source:<4}  {event.ip or '-':<15}  {describe(event)}"
        )
