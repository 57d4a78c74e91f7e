"""``rootfs cache``: mount a host's root through a local, hash-validated object cache."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from pathlib import Path

import click

from rootfs.engine.progress import human_bytes
from rootfs.errors import UserError
from rootfs.store.layout import CACHE_REPORT

REFRESH_XATTR = "user.rootfs.refresh"  # answered by the mount's root (rootfs.cache.fs)


@click.group()
def cache() -> None:
    """Serve a host's root from local disk, every object checked by its xxh3-128.

    \b
      rootfs cache mount /mnt/nfsroot /sysroot --cache /var/cache/rootfs --quota 4G
      rootfs cache refresh /sysroot       # pick up a new manifest now
      rootfs cache stats /var/cache/rootfs
      rootfs cache verify /var/cache/rootfs   # offline: re-hash, drop bad objects
    """


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from rootfs.config.tomlconf import parse_size  # the one size syntax: hosts.toml's cache_quota

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cache.command()
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--cache",
    "cache_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding the cached objects (created if missing).",
)
@click.option("--quota", callback=_size, help="Cache size limit, e.g. 2G (default: no limit).")
@click.option(
    "--read-only",
    is_flag=True,
    help="Refuse every write (EROFS). Also faster: the kernel then skips the attribute"
    " refresh it sends after each file's first read.",
)
@click.option(
    "--refresh-interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between checks for a new published manifest.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a SOURCE call may take before the source counts as unreachable.",
)
@click.option(
    "--prefetch",
    is_flag=True,
    help="Fetch, in the background, what the previous mount read during its first minutes.",
)
@click.option(
    "--boot-window",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds after mounting whose reads make up the boot set for --prefetch.",
)
@click.option(
    "--readahead",
    type=click.IntRange(min=0, max=64),
    default=4,
    show_default=True,
    help="Parallel background fetches of a directory's other files after its first miss "
    "(0: fetch only what is opened).",
)
@click.option(
    "--host-state",
    "host_state",
    multiple=True,
    metavar="PATH",
    help="A subtree the client writes its own state in (e.g. /var): always read from SOURCE,"
    " so what was written there is seen after a remount. Repeatable.",
)
@click.option(
    "--report",
    is_flag=True,
    help=f"Write the cache's state into SOURCE ({CACHE_REPORT}) every 30 s, for"
    " 'rootfs status' on the server. Cached clients do this at boot.",
)
@click.option("--debug", is_flag=True, help="Log every fetch and invalidation.")
def mount(
    source: Path,
    mountpoint: Path,
    cache_dir: Path,
    quota: int | None,
    read_only: bool,
    refresh_interval: float,
    timeout: float,
    prefetch: bool,
    boot_window: float,
    readahead: int,
    host_state: tuple[str, ...],
    report: bool,
    debug: bool,
) -> None:
    """Mount SOURCE (a host tree with .rootfs/manifest) at MOUNTPOINT; runs until unmounted.

    Files are read from the cache when present and verified, otherwise fetched from
    SOURCE and admitted only if their hash matches the manifest. Writes go to SOURCE.
    Unmount with `fusermount3 -u MOUNTPOINT` (or SIGTERM).
    """
    from rootfs.cache.mount import MountConfig
    from rootfs.cache.mount import mount as run_mount

    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="rootfs-cache: %(levelname)s: %(message)s",
    )
    run_mount(
        MountConfig(
            source=source.resolve(),
            mountpoint=mountpoint.resolve(),
            cache_dir=cache_dir.resolve(),
            quota=quota,
            read_only=read_only,
            refresh_interval=refresh_interval,
            timeout=timeout,
            prefetch=prefetch,
            boot_window=boot_window,
            readahead=readahead,
            host_state=_state_paths(host_state),
            allow_other=os.geteuid() == 0,
            report=source.resolve() / CACHE_REPORT if report else None,
        )
    )


@cache.command()
@click.argument("mountpoint", type=click.Path(file_okay=False, path_type=Path))
def refresh(mountpoint: Path) -> None:
    """Make the mount at MOUNTPOINT read SOURCE's manifest now, and wait until it has."""
    try:
        answer = os.getxattr(mountpoint, REFRESH_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            raise UserError(f"{mountpoint} is not a rootfs cache mount") from None
        if exc.errno == errno.EIO:
            raise UserError(
                f"{mountpoint}: the source is unreachable; try again later", 1
            ) from None
        raise UserError(f"{mountpoint}: {exc.strerror}") from None
    click.echo(answer.decode())


def _state_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        if not path.startswith("/") or path == "/" or "//" in path or path.endswith("/"):
            raise UserError(f"--host-state {path!r}: give an absolute path below /, like /var")
    return paths


@cache.command()
@click.argument("cache_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
def verify(cache_dir: Path) -> None:
    """Re-hash every object in CACHE_DIR (not mounted) and remove those that do not match.

    Exit status 1 when bad objects were found (they are removed; a mount fetches them again).
    """
    from rootfs.cache.objects import locked, verify_cache

    started = time.monotonic()
    with locked(cache_dir):
        report = verify_cache(cache_dir)
    seconds = time.monotonic() - started
    for digest in report.bad:
        click.echo(f"bad object {digest}: removed")
    rate = report.bytes / seconds / 1e9 if seconds > 0 else 0.0
    click.echo(
        f"{report.objects} objects, {human_bytes(report.bytes)} checked in {seconds:.2f} s"
        f" ({rate:.2f} GB/s): {len(report.bad)} bad, {report.temp_removed} temp files removed"
    )
    if report.bad:
        raise click.exceptions.Exit(1)


@cache.command()
@click.argument("cache_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def stats(cache_dir: Path, as_json: bool) -> None:
    """Show CACHE_DIR's objects, bytes, hits, misses, evictions and bad objects."""
    from rootfs.cache.stats import read_stats

    result = read_stats(cache_dir)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
        return
    c = result.counters
    quota = human_bytes(result.quota) if result.quota else "none"
    lookups = c.hits + c.misses
    rate = f" ({100 * c.hits / lookups:.1f}% hits)" if lookups else ""
    lines = [
        f"objects       {result.objects} ({human_bytes(result.bytes)}, charged"
        f" {human_bytes(result.charged)}, quota {quota})",
        f"hits          {c.hits}{rate}",
        f"misses        {c.misses} ({human_bytes(c.fetched_bytes)} fetched)",
        f"read through  {c.read_through} (uncached: open files held the quota)",
        f"evictions     {c.evictions} ({human_bytes(c.evicted_bytes)})",
        f"bad objects   {c.bad_objects}",
        f"mismatches    {c.mismatches} (source differs from its manifest)",
        f"source errors {c.source_errors}",
        f"boot set      {result.boot_set} objects",
    ]
    click.echo("\n".join(lines))
