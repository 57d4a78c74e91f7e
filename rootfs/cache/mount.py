"""The cache mount service: one trio run holding pyfuse3's loop and the mount's background tasks.

Background tasks, each in the same nursery as ``pyfuse3.main``:

- invalidations: kernel cache invalidations, sent from a worker thread;
- refresher: reads SOURCE's manifest every ``refresh_interval`` (every second while the
  source is offline, which is also how the mount notices it is back);
- flusher: writes counters (and, during the boot window, the boot set) every few seconds,
  so `rootfs cache stats` and ``--prefetch`` work even after a kill -9;
- reporter (with ``report``): copies them into SOURCE every ``REPORT_INTERVAL`` while it is
  reachable, so the server sees a cached client's cache in `rootfs status`;
- signals: SIGTERM/SIGINT unmount cleanly, SIGHUP refreshes at once;
- read-ahead: fetches a directory's other files in parallel after its first miss;
- prefetch (with ``--prefetch``): fetches the previous mount's boot set in parallel.

The cache directory is locked (flock) for the mount's life, so two mounts never share it;
the kernel drops the lock when a killed mount's process dies.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from rootfs.cache.fs import CacheFS, Options
from rootfs.cache.fuseloop import FuseWaiter, fuse_fds, install
from rootfs.cache.objects import ObjectCache, locked
from rootfs.cache.source import Source, SourceUnavailable
from rootfs.cache.tree import Tree
from rootfs.durable import atomic_write_bytes
from rootfs.errors import ManifestFormatError, UserError
from rootfs.tree.manifest import Manifest, manifest_digest, parse

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 5.0
REPORT_INTERVAL = 30.0  # seconds between reports to the server: status, not monitoring
PROBE_INTERVAL = 1.0
READAHEAD_KB = 1024
# Handlers waiting on fetches hold a task each; more than this many idle tasks only add
# wake-ups on every request (pyfuse3's default is 99).
MAX_TASKS = 32


@dataclass(frozen=True)
class MountConfig:
    """Everything `rootfs cache mount` was told."""

    source: Path
    mountpoint: Path
    cache_dir: Path
    quota: int | None = None
    read_only: bool = False
    refresh_interval: float = 60.0
    timeout: float = 10.0
    prefetch: bool = False
    prefetch_parallel: int = 4
    readahead: int = 4
    boot_window: float = 120.0
    allow_other: bool = True
    host_state: tuple[str, ...] = ()  # subtrees always read from SOURCE (Options.host_state)
    report: Path | None = None  # where in SOURCE to report the cache's state (cached clients)


def mount(config: MountConfig) -> None:
    """Mount SOURCE's manifest tree at the mountpoint and serve it until unmounted."""
    if not config.mountpoint.is_dir():
        raise UserError(f"mountpoint {config.mountpoint} is not a directory")
    with locked(config.cache_dir):  # objects.locked: one mount per cache directory
        os.umask(0)  # modes from the kernel are already masked by the caller's umask
        cache = ObjectCache(config.cache_dir, quota=config.quota)
        cache.open()
        if cache.index_rebuilt:
            log.info("cache index rebuilt from %s: %d objects", cache.objects, len(cache))
        try:
            trio.run(_serve, config, cache)
        finally:
            try:
                cache.close()
            except OSError as exc:  # the next mount rebuilds the index from objects/
                log.warning("cache index not saved: %s", exc)


def _last_good(cache_dir: Path) -> tuple[Manifest, str] | None:
    try:
        data = (cache_dir / "manifest").read_bytes()
    except FileNotFoundError:
        return None
    return parse(data, source=str(cache_dir / "manifest")), manifest_digest(data)


async def _initial_manifest(config: MountConfig, source: Source) -> tuple[Manifest, str]:
    try:
        manifest, data, digest = await source.read_manifest()
    except (SourceUnavailable, OSError, ManifestFormatError) as exc:
        last = _last_good(config.cache_dir)
        if last is None:
            raise UserError(
                f"cannot read {config.source}/.rootfs/manifest ({exc}) and the cache holds no"
                " earlier manifest; is SOURCE a tree built by rootfs and reachable?"
            ) from None
        log.warning("source unreachable (%s); mounting the last good manifest", exc)
        source.mark_offline(str(exc))
        return last
    await trio.to_thread.run_sync(
        functools.partial(atomic_write_bytes, config.cache_dir / "manifest", data, mode=0o600)
    )
    return manifest, digest


async def _serve(config: MountConfig, cache: ObjectCache) -> None:
    source = Source(config.source, timeout=config.timeout)
    manifest, digest = await _initial_manifest(config, source)
    tree = Tree(manifest)
    options = Options(
        read_only=config.read_only,
        refresh_interval=config.refresh_interval,
        boot_window=config.boot_window,
        readahead=config.readahead,
        host_state=config.host_state,
    )
    fs = CacheFS(tree, digest, cache, source, options)
    boot_set = _read_boot_set(config.cache_dir) if config.prefetch else []
    fuse_options = set(pyfuse3.default_options) | {"fsname=rootfs-cache", "subtype=rootfs"}
    fuse_options |= {"dev", "suid"}  # a root filesystem needs its device nodes and setuid bits
    if config.allow_other:
        fuse_options.add("allow_other")
    if config.read_only:
        fuse_options.add("ro")
    fds_before = fuse_fds()
    pyfuse3.init(fs, str(config.mountpoint), fuse_options)
    session_fds = fuse_fds() - fds_before
    waiter = install(session_fds.pop()) if len(session_fds) == 1 else None
    log.info(
        "mounted %s (manifest %s, %d entries) at %s",
        config.source,
        digest,
        len(manifest),
        config.mountpoint,
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fs.run_invalidations)
            nursery.start_soon(fs.fetcher.run_readahead)
            nursery.start_soon(_refresher, fs, config)
            nursery.start_soon(_flusher, fs, config)
            if config.report is not None:
                nursery.start_soon(_reporter, fs, config.report)
            nursery.start_soon(_signals, fs, waiter)
            nursery.start_soon(_raise_readahead, config.mountpoint)
            if boot_set:
                nursery.start_soon(_prefetch, fs, boot_set, config.prefetch_parallel)
            await pyfuse3.main(max_tasks=MAX_TASKS)
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        try:
            _write_boot_set(config.cache_dir, fs)
        except OSError as exc:
            log.warning("boot set not saved: %s", exc)


async def _raise_readahead(mountpoint: Path) -> None:
    """Let the kernel read ahead 1 MiB per FUSE request instead of 128 KiB.

    Each request costs a trip through pyfuse3's loop, so sequential reads of large files
    go about twice as fast here with fewer, larger requests. The kernel caps the value at
    FUSE INIT, so it is raised after a first request (a stat from a thread) has gone
    through the loop. Needs root; without it the kernel default stays.
    """
    await trio.to_thread.run_sync(os.stat, mountpoint)
    target = str(mountpoint).replace(" ", "\\040")
    device = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4] == target:
                    device = fields[2]  # the last match: the mount just made
        if device is not None:
            with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
                f.write(str(READAHEAD_KB))
    except OSError as exc:
        log.debug("read-ahead left at the default: %s", exc)


async def _refresher(fs: CacheFS, config: MountConfig) -> None:
    while True:
        if fs.source.online:
            with trio.move_on_after(config.refresh_interval):
                await fs.source.went_offline.wait()
        await trio.sleep(PROBE_INTERVAL)
        try:
            await fs.refresh()
        except (SourceUnavailable, OSError, ManifestFormatError, pyfuse3.FUSEError) as exc:
            if isinstance(exc, ManifestFormatError):
                log.warning("ignoring the published manifest: %s", exc)
            else:
                fs.source.mark_offline(str(exc))
            continue
        fs.source.mark_online()


async def _flusher(fs: CacheFS, config: MountConfig) -> None:
    boot_saved = False
    while True:
        await trio.sleep(FLUSH_INTERVAL)
        try:
            await trio.to_thread.run_sync(fs.cache.save_stats)
            if not boot_saved and fs.fetcher.boot_set:
                await trio.to_thread.run_sync(_write_boot_set, config.cache_dir, fs)
                boot_saved = _boot_window_over(fs)
        except OSError as exc:  # a full cache disk must not take the mount down
            log.warning("could not save statistics: %s", exc)


async def _reporter(fs: CacheFS, report: Path) -> None:
    """Write the cache's state to *report* (in SOURCE) a second after the mount (so the server
    knows at once that the client boots cached), again once the boot's reads are done, then
    every REPORT_INTERVAL, skipping while SOURCE is offline. One write at a time, under the
    source's timeout like every other source call, so a hung NFS write never holds up the mount."""
    for delay in itertools.chain((1.0, 10.0), itertools.repeat(REPORT_INTERVAL)):
        await trio.sleep(delay)
        if not fs.source.online:
            continue
        data = {"reported": time.time(), "manifest": fs.manifest_digest, **fs.cache.stats()}
        try:
            await fs.source.call(_write_report, report, data)  # trio 0.22-safe, under its timeout
        except (OSError, SourceUnavailable) as exc:
            log.debug("cache report not written to %s: %s", report, exc)


def _write_report(report: Path, data: dict[str, object]) -> None:
    report.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(report, json.dumps(data, indent=1).encode(), mode=0o644)


def _boot_window_over(fs: CacheFS) -> bool:
    return time.monotonic() - fs.fetcher.started >= fs.options.boot_window


async def _signals(fs: CacheFS, waiter: FuseWaiter | None) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                try:
                    log.info("SIGHUP: %s", await fs.refresh())
                except (SourceUnavailable, OSError, ManifestFormatError, pyfuse3.FUSEError) as exc:
                    log.warning("refresh failed: %s", exc)
            else:
                log.info("signal %d: unmounting", signum)
                if waiter is not None:
                    waiter.close()
                pyfuse3.terminate()


async def _prefetch(fs: CacheFS, digests: list[str], parallel: int) -> None:
    fetched = await fs.fetcher.prefetch(digests, parallel=parallel)
    log.info("prefetched %d of %d boot-set objects", fetched, len(digests))


def _read_boot_set(cache_dir: Path) -> list[str]:
    try:
        text = (cache_dir / "bootset").read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n") if len(line) == 32]


def _write_boot_set(cache_dir: Path, fs: CacheFS) -> None:
    digests = list(fs.fetcher.boot_set)
    if digests:
        atomic_write_bytes(cache_dir / "bootset", ("\n".join(digests) + "\n").encode(), mode=0o600)
