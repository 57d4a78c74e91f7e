"""`rootfs serve`: the boot front end (DHCP, TFTP and HTTP) in one trio nursery, from one inventory.

The services read the same `Site` value; a reload (SIGHUP, or site.toml / hosts.toml changing on
disk) loads the site once and hands the new value to each. A site that fails to load is logged and
the old one kept: a typo in hosts.toml must not take the boot server down. Transfers and leases in
flight are untouched by a reload. SIGTERM and SIGINT cancel the nursery: sockets close, in-flight
transfers are recorded as interrupted, and the process exits 0.

Logging is one line per event on stderr, without timestamps when journald is the reader (it adds
its own), so `journalctl -u rootfs` reads like the boot trace.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from rootfs.config.site import Site
from rootfs.errors import UserError
from rootfs.netboot.http.server import HttpService
from rootfs.netboot.tftp.server import TftpService
from rootfs.netboot.trace import TraceLog
from rootfs.store.state import State

log = logging.getLogger("rootfs.serve")
WATCH_INTERVAL = 2.0  # seconds between checks of the inventory files for changes


class Service(Protocol):
    """What `serve` needs of a protocol server (TftpService, DhcpService, HttpService)."""

    def reload(self, site: Site) -> None: ...

    async def run(self, *, task_status: Any = ...) -> None: ...


@dataclass(frozen=True)
class ServeOptions:
    """Command-line choices; None means "as site.toml says"."""

    tftp: bool = True
    dhcp: bool = True
    tftp_port: int | None = None
    tftp_address: str | None = None
    http: bool = True  # and [http] enabled
    http_port: int | None = None
    http_address: str | None = None
    watch_interval: float = WATCH_INTERVAL


DEFAULT_OPTIONS = ServeOptions()


def configure_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr; journald adds its own timestamps."""
    fmt = "%(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)


def make_services(site: Site, options: ServeOptions) -> list[tuple[str, Service]]:
    """The services `options` asks for, sharing one state directory and one boot trace."""
    state = State(site.config.state_dir)
    trace = TraceLog(state.root / "trace")
    services: list[tuple[str, Service]] = []
    if options.dhcp:
        from rootfs.netboot.dhcp.server import (
            DhcpService,  # DHCP's own issue; imported only when used
        )

        services.append(("dhcp", DhcpService(site, state, trace)))
    if options.tftp:
        tftp = TftpService(site, state, trace, port=options.tftp_port, address=options.tftp_address)
        services.append(("tftp", tftp))
    if options.http and site.config.http.enabled:
        http = HttpService(site, state, trace, port=options.http_port, address=options.http_address)
        services.append(("http", http))
    return services


async def serve(
    load: Callable[[], Site],
    options: ServeOptions = DEFAULT_OPTIONS,
    *,
    task_status: trio.TaskStatus[list[tuple[str, Service]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the services until SIGTERM/SIGINT (or cancellation); reload on SIGHUP or file change.

    `load` reads the site afresh each time it is called (the CLI's loader, or a test's).
    """
    site = load()
    services = make_services(site, options)
    if not services:
        raise UserError(
            "nothing to serve: --no-dhcp, --no-tftp and --no-http (or [http] enabled = false)"
        )
    failed: UserError | None = None  # a service that could not start (a port in use ...)
    with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            try:
                for name, service in services:
                    await nursery.start(service.run)
                    log.info("serve: %s started", name)
            except UserError as e:  # raised below, outside the nursery: one line, no traceback
                failed = e
                nursery.cancel_scope.cancel()
            else:
                reloader = _Reloader(load, services, _watched(site))
                nursery.start_soon(reloader.watch, options.watch_interval)
                log.info("serve: ready (%s)", ", ".join(name for name, _ in services))
                task_status.started(services)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("serve: SIGHUP, reloading the site")
                        reloader.reload()
                        continue
                    log.info("serve: %s, stopping", signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    break
    if failed is not None:
        raise failed
    for name, service in services:  # what each server counted, for the journal
        counters: dict[str, int] = getattr(service, "stats", {})
        if counters:
            log.info("serve: %s %s", name, " ".join(f"{k}={v}" for k, v in counters.items()))
    log.info("serve: stopped")


class _Reloader:
    """Loads the site again and hands it to every service; keeps the old one on error."""

    def __init__(
        self, load: Callable[[], Site], services: list[tuple[str, Service]], files: list[Path]
    ) -> None:
        self._load = load
        self._services = services
        self._files = files
        self._seen = _stamps(files)

    def reload(self) -> None:
        self._seen = _stamps(self._files)
        try:
            site = self._load()
        except UserError as e:
            log.error("serve: reload failed, still serving the previous site: %s", e)
            return
        for name, service in self._services:
            try:
                service.reload(site)
            except UserError as e:
                log.error("serve: %s kept the previous site: %s", name, e)
        self._files = _watched(site)
        log.info("serve: reloaded: %d hosts", len(site.hosts))

    async def watch(self, interval: float) -> None:
        """Poll the inventory files: cheap, and needs no inotify (works on NFS-mounted sites)."""
        while True:
            await trio.sleep(interval)
            if _stamps(self._files) != self._seen:
                log.info("serve: inventory changed on disk, reloading")
                self.reload()


def _watched(site: Site) -> list[Path]:
    return [site.site_toml, site.hosts_file]


def _stamps(files: list[Path]) -> list[tuple[int, int, int] | None]:
    stamps: list[tuple[int, int, int] | None] = []
    for path in files:
        try:
            st = path.stat()
            stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append(None)
    return stamps
