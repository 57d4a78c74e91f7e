"""The [http] table of site.toml (every key optional).

HTTP serves the same boot directory and per-host configs as TFTP ([tftp] root and
unknown_clients apply to both). The limits bound what one client can hold: a connection slot
(`max_connections`), the time to send a request head (`header_timeout`, against slowloris
clients that dribble headers), the time a kept-alive connection may sit idle (`idle_timeout`), the
time a response may make no progress (`send_timeout`, against clients that stop reading), and
the size of a request head (`max_header_bytes`; boot loaders send a few hundred bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from rootfs.config.tomlconf import ConfigTable, Invalid, boolean, integer, ipv4

ANY_ADDRESS = IPv4Address("0.0.0.0")
DEFAULT_PORT = 80


@dataclass(frozen=True)
class HttpConfig:
    """Settings of the [http] table; defaults apply when it is absent.

    `enabled`, `address` and `port` are read when `rootfs serve` starts; the limits apply to
    connections and requests that start after a reload.
    """

    enabled: bool = True
    address: IPv4Address = ANY_ADDRESS
    port: int = DEFAULT_PORT
    # Open connections; one more is answered 503 and closed. A booting client holds one or two.
    max_connections: int = 1024
    # Seconds from a request's first byte (or a new connection) to the end of its head (nginx:
    # client_header_timeout, 60 s; boot loaders send their head in one packet).
    header_timeout: float = 10.0
    # Seconds a kept-alive connection may wait for its next request (nginx: 75 s).
    idle_timeout: float = 30.0
    # Seconds a response may go without the client taking a byte (nginx: send_timeout, 60 s).
    send_timeout: float = 30.0
    # Request line plus header fields; more is answered 431 (nginx: 1 KiB line + 4 x 8 KiB).
    max_header_bytes: int = 16384
    # Event loops serving HTTP, each in its own thread on the same listening socket (nginx:
    # worker_processes auto). One loop spends a boot storm on one core; see netboot/http/server.
    # 0: one per CPU core, at most 4 (decided by the server: this layer does no I/O).
    loops: int = 0


def parse_http_config(table: ConfigTable) -> HttpConfig:
    """Read [http]; unknown keys are an error (ConfigTable enforces it)."""
    d = HttpConfig()
    return HttpConfig(
        enabled=table.get("enabled", boolean, d.enabled),
        address=table.get("address", ipv4, d.address),
        port=table.get("port", integer(1, 65535), d.port),
        max_connections=table.get("max_connections", integer(1, 1_000_000), d.max_connections),
        header_timeout=table.get("header_timeout", _seconds, d.header_timeout),
        idle_timeout=table.get("idle_timeout", _seconds, d.idle_timeout),
        send_timeout=table.get("send_timeout", _seconds, d.send_timeout),
        max_header_bytes=table.get("max_header_bytes", integer(1024, 1 << 20), d.max_header_bytes),
        loops=table.get("loops", integer(0, 64), d.loops),
    )


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid("expected a number of seconds, like 10 or 0.5")
    if not 0.05 <= value <= 3600:
        raise Invalid(f"{value} is out of range; use 0.05 to 3600 seconds")
    return float(value)
