"""Lease state: who holds which address until when. Pure: the clock is a number passed in.

Only *bound* leases (ACKed) are durable; they are the records the journal stores. Offers are
promises of a few seconds held in memory: losing them in a crash costs a client one retry, never a
duplicate address, because an address is handed out for real only by an ACK that the journal has
made durable first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

OFFER_HOLD = 60.0  # seconds an offered address stays set aside for the client (RFC 2131 §4.3.1)
DECLINE_HOLD = 600.0  # seconds a declined address is kept out of the pool (RFC 2131 §4.3.3)
DECLINED = ""  # the MAC of a lease that parks a declined address


@dataclass(frozen=True)
class Lease:
    """A binding of `ip` to `mac` until `expires` (seconds since the epoch). `acked` is when the
    client last got an ACK (renewals included: a reboot is a DISCOVER in the boot trace). A lease
    with an empty `mac` parks an address another client declined; a released lease simply expires at
    once."""

    ip: IPv4Address
    mac: str
    expires: float
    acked: float

    def active(self, now: float) -> bool:
        return self.expires > now


class LeaseTable:
    """Every lease by address and by MAC, plus in-memory offers."""

    def __init__(self, leases: Iterable[Lease] = ()) -> None:
        self._by_ip: dict[IPv4Address, Lease] = {}
        self._by_mac: dict[str, Lease] = {}
        self._offers: dict[IPv4Address, tuple[str, float]] = {}
        self._cursor = 0
        for lease in leases:
            self.apply(lease)

    def __len__(self) -> int:
        return len(self._by_ip)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._by_ip.values()))

    def apply(self, lease: Lease) -> None:
        """Make `lease` the current record for its address (journal replay and new bindings)."""
        old = self._by_ip.get(lease.ip)
        if old is not None and self._by_mac.get(old.mac) is old:
            del self._by_mac[old.mac]
        previous = self._by_mac.get(lease.mac)
        if lease.mac and previous is not None and previous.ip != lease.ip:
            # A client holds one address per link; its old one is free again.
            del self._by_ip[previous.ip]
        self._by_ip[lease.ip] = lease
        if lease.mac:
            self._by_mac[lease.mac] = lease
        self._offers.pop(lease.ip, None)

    def by_mac(self, mac: str) -> Lease | None:
        return self._by_mac.get(mac)

    def by_ip(self, ip: IPv4Address) -> Lease | None:
        return self._by_ip.get(ip)

    def holder(self, ip: IPv4Address, now: float) -> str | None:
        """The MAC an address is bound or offered to right now (DECLINED when parked), else None."""
        lease = self._by_ip.get(ip)
        if lease is not None and lease.active(now):
            return lease.mac
        offer = self._offers.get(ip)
        if offer is not None and offer[1] > now:
            return offer[0]
        return None

    def offer(self, ip: IPv4Address, mac: str, now: float) -> None:
        """Set `ip` aside for `mac` while it decides (RFC 2131 §4.3.1)."""
        self._offers[ip] = (mac, now + OFFER_HOLD)
        if len(self._offers) > 4096:
            self._offers = {k: v for k, v in self._offers.items() if v[1] > now}

    def withdraw(self, mac: str) -> None:
        """The client chose another server (RFC 2131 §4.3.2): free what we offered it."""
        for ip in [ip for ip, (m, _) in self._offers.items() if m == mac]:
            del self._offers[ip]

    def bind(self, ip: IPv4Address, mac: str, *, lease_time: float, now: float) -> Lease:
        """The lease an ACK grants; apply it only once it is durable."""
        return Lease(ip=ip, mac=mac, expires=now + lease_time, acked=now)

    def release(self, ip: IPv4Address, mac: str, now: float) -> Lease | None:
        """The record freeing `ip` if `mac` holds it (RFC 2131 §4.3.4); None for strangers, so a
        spoofed RELEASE cannot take another client's address away."""
        lease = self._by_ip.get(ip)
        if lease is None or lease.mac != mac or not lease.active(now):
            return None
        return Lease(ip=ip, mac=mac, expires=now, acked=lease.acked)

    def decline(self, ip: IPv4Address, mac: str, now: float) -> Lease | None:
        """The record parking `ip` after `mac` found it in use (RFC 2131 §4.3.3); None unless the
        address was offered or bound to that very client, so strangers cannot drain the pool."""
        if self.holder(ip, now) != mac:
            return None
        return Lease(ip=ip, mac=DECLINED, expires=now + DECLINE_HOLD, acked=now)

    def allocate(
        self,
        mac: str,
        pool: tuple[tuple[IPv4Address, IPv4Address], ...],
        *,
        now: float,
        reserved: frozenset[IPv4Address],
        wanted: IPv4Address | None = None,
    ) -> IPv4Address | None:
        """A pool address for an unknown client: its current one, else the one it asks for if
        free, else the next free one after the last handed out; None when the pool is full."""

        def usable(ip: IPv4Address) -> bool:
            return ip not in reserved and self.holder(ip, now) in (None, mac)

        def in_pool(ip: IPv4Address) -> bool:
            return any(low <= ip <= high for low, high in pool)

        current = self._by_mac.get(mac)
        if current is not None and in_pool(current.ip) and usable(current.ip):
            return current.ip
        for ip, (owner, until) in self._offers.items():
            if owner == mac and until > now and in_pool(ip):
                return ip
        if wanted is not None and in_pool(wanted) and usable(wanted):
            return wanted
        size = sum(int(high) - int(low) + 1 for low, high in pool)
        for step in range(size):
            index = (self._cursor + step) % size
            ip = _nth(pool, index)
            if usable(ip):
                self._cursor = index + 1
                return ip
        return None

    def live(self, now: float, *, keep_expired: float) -> list[Lease]:
        """Leases worth keeping at compaction: active ones, and expired ones younger than
        `keep_expired` seconds (so a returning client gets its old address back)."""
        return [lease for lease in self._by_ip.values() if lease.expires > now - keep_expired]


def _nth(pool: tuple[tuple[IPv4Address, IPv4Address], ...], index: int) -> IPv4Address:
    for low, high in pool:
        size = int(high) - int(low) + 1
        if index < size:
            return low + index
        index -= size
    raise IndexError(index)
