"""Shared output formatting for commands that build."""

from __future__ import annotations

import click

from rootfs.cache.stats import ClientReport
from rootfs.engine.build import HostResult
from rootfs.engine.progress import human_bytes
from rootfs.tree.plan import Action


def echo_result(result: HostResult) -> None:
    """One summary line per host build (plus the plan for --dry-run)."""
    name = result.host.name
    counts = result.plan.counts()
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    if result.dry_run:
        click.echo(f"{name}: would apply {len(result.plan.ops)} operations ({summary or 'none'})")
        for op in result.plan.ops:
            if op.action is not Action.DIR_META:
                click.echo(f"  {op.action.value:<6} {op.path}")
        return
    if result.up_to_date and not result.recovered:
        click.echo(f"{name}: up to date")
        return
    note = " (resumed an interrupted build)" if result.recovered else ""
    click.echo(
        f"{name}: {summary or 'no path changes'}; {result.stats.ops} operations,"
        f" {human_bytes(result.stats.bytes_written)} written, mode {result.mode},"
        f" {result.seconds:.2f}s{note}"
    )
    for hold in result.conflicts:
        beside = f"{hold.path}.rootfs-new" if hold.base is not None else "nothing (removed in base)"
        click.echo(
            f"  conflict {hold.path}: changed on the host, kept; the base's version is in {beside}"
            f" ('rootfs resolve {name} {hold.path} --take base|host')",
            err=True,
        )
    for moved in result.stats.moved_aside:
        click.echo(f"  kept host-local files of a removed directory: {moved}", err=True)


def cache_device_text(device: str) -> str:
    """A host's cache_device and what the client does with it."""
    if device.startswith("LABEL="):
        return f"{device} (a filesystem with that label; never formatted)"
    return f"{device} (formatted by the client if empty, else left alone)"


def cache_quota_text(quota: int | None) -> str:
    """A host's cache_quota, or what the client uses without one."""
    if quota is None:
        return "the client's default (70% of the cache filesystem)"
    return f"{human_bytes(quota)} ({quota} bytes)"


def cache_report_text(report: ClientReport, now: float) -> str:
    """One line on what a cached client last said about its cache."""
    ratio = report.hit_ratio
    reads = "no reads yet" if ratio is None else f"{ratio:.1%} of reads from its disk"
    quota = f" of {human_bytes(report.quota)}" if report.quota is not None else ""
    return (
        f"{report.objects} objects, {human_bytes(report.bytes)}{quota}, {reads},"
        f" {human_bytes(report.fetched_bytes)} fetched; {_ago(now - report.reported)},"
        f" manifest {report.manifest[:12]}"
    )


def _ago(seconds: float) -> str:
    if seconds < -60:
        return "reported in the future (the client's clock is ahead)"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"reported {seconds / size:.0f} {unit} ago"
    return f"reported {seconds:.0f} s ago"
