"""The lease journal: durable, torn-tail tolerant, compacted; and kill -9 of a loaded server loses
no ACKed lease and hands no address out twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from netns import (
    CLIENT_ADDRESS,
    LOADGEN,
    SERVER_ADDRESS,
    needs_netns,
    netns_pair,
    start_serve,
    stop,
    write_site,
)

from rootfs.errors import UserError
from rootfs.netboot.dhcp.journal import HEADER, LeaseJournal, read_leases
from rootfs.netboot.dhcp.leases import Lease, LeaseTable


def lease(i: int, t: float = 1000.0) -> Lease:
    return Lease(IPv4Address("192.168.232.100") + i, f"52:54:00:00:00:{i:02x}", t + 86400, t)


def test_append_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "leases.journal"
    journal = LeaseJournal(path)
    assert journal.open() == []
    journal.append([lease(1), lease(2)])
    journal.append([lease(1, 2000.0)])  # a renewal: the later line wins when folded
    journal.close()
    again = LeaseJournal(path)
    records = again.open()
    assert records == [lease(1), lease(2), lease(1, 2000.0)]
    table = LeaseTable(records)
    assert table.by_mac(lease(1).mac) == lease(1, 2000.0) and len(table) == 2
    again.close()


def test_torn_tail_is_dropped_and_cleaned(tmp_path: Path) -> None:
    """A crash mid-write leaves a partial last line: it was never ACKed, so it is dropped, and
    the file is rewritten so the next append does not glue onto it."""
    path = tmp_path / "leases.journal"
    journal = LeaseJournal(path)
    journal.open()
    journal.append([lease(1), lease(2)])
    journal.close()
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    again = LeaseJournal(path)
    assert again.open() == [lease(1)] and again.damaged == 1
    again.append([lease(3)])
    again.close()
    assert read_leases(path) == ([lease(1), lease(3)], 0)


def test_damaged_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "leases.journal"
    journal = LeaseJournal(path)
    journal.open()
    journal.append([lease(1), lease(2), lease(3)])
    journal.close()
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"192.168", b"192.169")  # the CRC no longer matches
    path.write_bytes(b"\n".join(lines))
    assert read_leases(path) == ([lease(1), lease(3)], 1)


def test_compaction_keeps_live_leases_only(tmp_path: Path) -> None:
    path = tmp_path / "leases.journal"
    journal = LeaseJournal(path)
    table = LeaseTable(journal.open())
    for t in range(5000):
        record = lease(t % 3, float(t))
        table.apply(record)
        journal.append([record])
    assert journal.wants_compaction(len(table))
    journal.compact(table.live(5000.0, keep_expired=0))
    journal.close()
    assert path.read_bytes().count(b"\n") == 4  # header + 3 leases
    assert sorted(read_leases(path)[0], key=lambda x: x.ip) == sorted(table, key=lambda x: x.ip)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "leases.journal"
    path.write_text("lease 10.0.0.1 {\n")
    with pytest.raises(UserError, match="not a rootfs lease journal"):
        LeaseJournal(path).open()
    assert HEADER.startswith(b"rootfs-leases")


# -- kill -9 under load -------------------------------------------------------------------

POOL = 'pool = ["192.168.232.100-192.168.232.250"]'


def loadgen(mac_base: int, count: int, acks: Path, *, window: int, timeout: float) -> list[str]:
    return [
        sys.executable, LOADGEN, "--server", SERVER_ADDRESS,
        "--relay", CLIENT_ADDRESS, "--count", str(count), "--window", str(window),
        "--timeout", str(timeout), "--tries", "3", "--mac-base", f"{mac_base:012x}",
        "--acks", str(acks),
    ]  # fmt: skip


def read_acks(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines()]  # type: ignore[misc]


@needs_netns
@pytest.mark.slow
def test_kill_9_loses_no_acked_lease_and_duplicates_no_address(tmp_path: Path) -> None:
    with netns_pair(client_address=CLIENT_ADDRESS) as pair:
        site = write_site(tmp_path / "site", {}, interface=pair.server.interface, dhcp=POOL)
        journal = site / "state" / "dhcp" / "leases.journal"

        def start() -> subprocess.Popen[bytes]:
            return start_serve(pair.server, site, "--no-tftp")

        # Phase 1: 140 pool clients, 4 at a time; kill -9 the server once some have their ACK.
        server = start()
        acks1_path = tmp_path / "acks1"
        gen = pair.client.popen(
            loadgen(0x525400200000, 140, acks1_path, window=4, timeout=0.2),
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while len(read_acks(acks1_path)) < 30 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        time.sleep(0.3)  # ACKs already on the wire still reach the client
        stop(gen)  # the rest would only time out
        acks1 = dict(read_acks(acks1_path))
        assert 30 <= len(acks1) < 140, "the kill must land mid-load"

        # Every ACK a client saw is in the journal the dead server left behind.
        on_disk = {(x.mac, str(x.ip)) for x in read_leases(journal)[0]}
        assert set(acks1.items()) <= on_disk

        # Phase 2: restart; the same 140 clients come back and 10 new ones arrive.
        server = start()
        try:
            acks2_path, acks3_path = tmp_path / "acks2", tmp_path / "acks3"
            for base, path in ((0x525400200000, acks2_path), (0x525400300000, acks3_path)):
                out = pair.client.run(loadgen(base, 140 if path == acks2_path else 10, path,
                                              window=16, timeout=0.5))  # fmt: skip
                assert json.loads(out.stdout)["failed"] == 0
        finally:
            stop(server)
        acks2 = dict(read_acks(acks2_path))
        acks3 = dict(read_acks(acks3_path))
    # No lost lease: each client ACKed before the crash keeps its address.
    assert {mac: acks2[mac] for mac in acks1} == acks1
    # No duplicate: every client holds a different address.
    final = {**acks2, **acks3}
    assert len(final) == 150 and len(set(final.values())) == 150
