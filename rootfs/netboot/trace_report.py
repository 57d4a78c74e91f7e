"""What the boot trace says about each client: where its boot got to, and when it last asked
for an address (the "host rebooted" signal base updates use). Pure: events in, values out."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rootfs.netboot.trace import TraceEvent

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-]?)[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")
# Requests a client makes when it (re)starts, as opposed to renewing a lease it holds.
_BOOT_EVENTS = frozenset({"discover", "bootp"})


def normalize_mac(text: str) -> str | None:
    """`text` as a lowercase colon-separated MAC, or None if it is not one."""
    if not _MAC.fullmatch(text):
        return None
    digits = re.sub(r"[:-]", "", text).lower()
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


@dataclass(frozen=True)
class ClientSummary:
    """One client's latest state in the trace."""

    mac: str
    host: str | None
    ip: str | None
    last: TraceEvent  # the newest event of any source
    last_boot: float | None  # newest DISCOVER/BOOTP: the client (re)started
    events: int


def summarize(events: Iterable[TraceEvent]) -> list[ClientSummary]:
    """One summary per MAC, most recently active first. Events without a MAC (TFTP requests are
    known by IP) are attributed through the IP the DHCP server gave that MAC."""
    by_mac: dict[str, list[TraceEvent]] = {}
    mac_of_ip: dict[str, str] = {}
    for event in events:
        mac = event.mac or (mac_of_ip.get(event.ip) if event.ip else None)
        if mac is None:
            continue
        if event.mac and event.ip:
            mac_of_ip[event.ip] = event.mac
        by_mac.setdefault(mac, []).append(event)
    summaries = []
    for mac, evs in by_mac.items():
        boots = [e.time for e in evs if e.source == "dhcp" and e.event in _BOOT_EVENTS]
        summaries.append(
            ClientSummary(
                mac=mac,
                host=next((e.host for e in reversed(evs) if e.host), None),
                ip=next((e.ip for e in reversed(evs) if e.ip), None),
                last=evs[-1],
                last_boot=max(boots) if boots else None,
                events=len(evs),
            )
        )
    return sorted(summaries, key=lambda s: s.last.time, reverse=True)


def last_boot_times(events: Iterable[TraceEvent]) -> dict[str, float]:
    """Host name -> when it last started to boot (its newest DHCP DISCOVER or BOOTP request)."""
    result: dict[str, float] = {}
    for event in events:
        if event.source == "dhcp" and event.event in _BOOT_EVENTS and event.host:
            result[event.host] = max(result.get(event.host, 0.0), event.time)
    return result


def describe(event: TraceEvent) -> str:
    """One line for an event: what was asked, what was answered, and anything notable."""
    detail = dict(event.detail)
    if event.source == "http" and event.event == "request":
        # "GET /vmlinuz 200 10485760 bytes": what a web server's access log says first.
        text = "{} {} {} {} bytes".format(
            *(detail.pop(k, "-") for k in ("method", "path", "status", "bytes"))
        )
        reason = detail.pop("reason", None)
        extras = " ".join(f"{k}={v}" for k, v in detail.items())
        return text + (f"  {extras}" if extras else "") + (f"  ({reason})" if reason else "")
    reply = detail.pop("reply", None)
    reason = detail.pop("reason", None)
    detail.pop("xid", None)
    text = event.event + (
        f" -> {reply}" if reply else " -> (no reply)" if event.source == "dhcp" else ""
    )
    extras = " ".join(f"{k}={v}" for k, v in detail.items())
    if extras:
        text += f"  {extras}"
    if reason:
        text += f"  ({reason})"
    return text
