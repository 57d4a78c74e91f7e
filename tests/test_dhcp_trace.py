"""`rootfs trace`: where a client's boot stopped, by host name or MAC."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result
from netns import write_site

from rootfs.cli import cli
from rootfs.netboot.trace import TraceLog
from rootfs.netboot.trace_report import last_boot_times, normalize_mac, summarize

PC1 = ("52:54:00:e8:00:11", "192.168.232.11")
PC2 = ("52:54:00:e8:00:12", "192.168.232.12")


def traced_site(tmp_path: Path) -> tuple[Path, TraceLog]:
    site = write_site(tmp_path / "site", {"pc1": PC1, "pc2": PC2}, interface="eth0")
    log = TraceLog(site / "state" / "trace")
    mac, ip = PC1
    log.record("dhcp", "discover", mac=mac, ip=ip, host="pc1", reply="offer", arch=7)
    log.record("dhcp", "request", mac=mac, ip=ip, host="pc1", reply="ack", file="grubnetx64.efi")
    log.record("tftp", "rrq", ip=ip, file="grubnetx64.efi")  # TFTP knows the client by IP
    log.record("dhcp", "discover", mac="52:54:00:e8:00:99", reply=None, reason="unknown MAC")
    log.close()
    return site, log


def run(site: Path, *args: str) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOTFS_")}
    return CliRunner().invoke(cli, ["--site", str(site), "trace", *args], env=env)


def test_trace_of_one_host_shows_where_boot_got_to(tmp_path: Path) -> None:
    site, _ = traced_site(tmp_path)
    result = run(site, "pc1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3
    assert "dhcp" in lines[0] and "discover -> offer" in lines[0] and "arch=7" in lines[0]
    assert "request -> ack" in lines[1] and "file=grubnetx64.efi" in lines[1]
    assert "tftp" in lines[2] and "rrq" in lines[2]  # the last step the client reached
    # The MAC, in any common spelling, finds the DHCP events.
    assert "request -> ack" in run(site, "52-54-00-E8-00-11").output


def test_trace_summary_lists_clients_most_recent_first(tmp_path: Path) -> None:
    site, _ = traced_site(tmp_path)
    result = run(site)
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()[1:]
    assert rows[0].startswith("?") and "unknown MAC" in rows[0]
    assert rows[1].startswith("pc1") and "tftp rrq" in rows[1]


def test_trace_errors_name_the_problem(tmp_path: Path) -> None:
    site, _ = traced_site(tmp_path)
    unknown = run(site, "pc9")
    assert unknown.exit_code != 0 and "unknown host 'pc9'" in str(unknown.exception)
    silent = run(site, "pc2")
    assert silent.exit_code == 1 and "no boot events for pc2" in str(silent.exception)


def test_last_boot_time_is_the_reboot_signal(tmp_path: Path) -> None:
    _, log = traced_site(tmp_path)
    events = list(log.events())
    boots = last_boot_times(events)
    assert set(boots) == {"pc1"} and boots["pc1"] == events[0].time
    summary = {s.mac: s for s in summarize(events)}
    assert summary[PC1[0]].events == 3 and summary[PC1[0]].last.source == "tftp"
    assert normalize_mac("525400E80011") == PC1[0] and normalize_mac("pc1") is None
