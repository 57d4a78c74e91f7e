"""Benchmark tool: rootfs's DHCP service with its fdatasync turned off, nothing else running.

`bench.dhcp` runs it beside `rootfs serve --no-tftp` to show what making each ACK durable costs.
Never use it to serve clients: an ACK it sends may be lost in a crash. Prints ``ready`` once bound
and runs until SIGTERM.

    python -m bench.dhcp_nosync SITE
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from rootfs.config.site import load_site
from rootfs.netboot.dhcp.server import DhcpService
from rootfs.netboot.trace import TraceLog
from rootfs.store.state import State


async def serve_unsynced(site_dir: Path) -> None:
    """Run the DHCP service of the site at *site_dir* with sync off, until cancelled."""
    site = load_site(site_dir, environ=os.environ)
    state = State(site.config.state_dir)
    service = DhcpService(site, state, TraceLog(state.root / "trace"), sync=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        print("ready", flush=True)


if __name__ == "__main__":
    trio.run(serve_unsynced, Path(sys.argv[1]))
